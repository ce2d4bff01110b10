//! Issue 27, class 8: content detectors see fragments. A card number split
//! into pieces (substrings, per-character codes, a reversed or translated
//! copy) no longer looks like a card to a detector. Once a detector rule
//! has found a card in a table column (each case reads the column whole
//! first, which the detector masks), hoop promotes that column to a column
//! rule, and lineage masks every fragment. Each attack shows the card's
//! pieces on the bare database; through hoop they are masked. The
//! look-alikes read other columns, and literals, which promote nothing.

use hoop_tests::{
    TestConfig,
    failclosed::{Case, Db, attacks, errored, lookalikes, report},
    hoop_exec, require_privileged, scrape_snippet, scraped, text,
};

const POLICY: &str = "policy:
  mask:
    - name: cards
      detect: [credit_card]
      strategy: redact
";

/// A Luhn-valid test card number.
const CARD: &str = "4539578763621486";

const FIXTURE: &str = "CREATE TABLE {t}.pay (id int, card text, note text);
INSERT INTO {t}.pay VALUES (1, '4539578763621486', 'hello world');";

/// Reads the column whole first: the detector masks it and promotes it.
const PRIME: &str = "SELECT card FROM {t}.pay;\n";

/// Pieces of the card an output may show.
const FRAGMENTS: [&str; 6] = [
    "45395787",
    "63621486",
    "4539",
    "6841263678759354", // reversed
    "52,53,51,57",      // character codes of 4, 5, 3, 9
    "efdj",             // translated digits
];

fn leaked(out: &str) -> bool {
    FRAGMENTS.iter().any(|f| out.contains(f))
}

fn attack_corpus() -> Vec<Case> {
    let leak = |_: &Db, _: &str, out: &str| leaked(out);
    let cases: [(&'static str, &str); 7] = [
        (
            "two halves",
            "SELECT substr(card, 1, 8) AS a, substr(card, 9) AS b FROM {t}.pay;",
        ),
        (
            "per-character codes",
            "SELECT string_agg(ascii(substr(card, g, 1))::text, ',' ORDER BY g) FROM {t}.pay, generate_series(1, 16) g;",
        ),
        ("reversed", "SELECT reverse(card) FROM {t}.pay;"),
        (
            "digits translated to letters",
            "SELECT translate(card, '0123456789', 'abcdefghij') FROM {t}.pay;",
        ),
        (
            "the first four",
            "SELECT left(card, 4) AS bin FROM {t}.pay;",
        ),
        (
            "one character per row",
            "SELECT substr(card, g, 4) FROM {t}.pay, generate_series(1, 13, 4) g;",
        ),
        (
            "through a CTE and an alias",
            "WITH c AS (SELECT card AS x FROM {t}.pay) SELECT overlay(x placing '' from 9) FROM c;",
        ),
    ];
    cases
        .into_iter()
        .map(|(name, sql)| Case::new(name, FIXTURE, format!("{PRIME}{sql}"), leak))
        .collect()
}

fn lookalike_corpus() -> Vec<Case> {
    vec![
        Case::new(
            "another column of the promoted table",
            FIXTURE,
            format!("{PRIME}SELECT substr(note, 1, 5) FROM {{t}}.pay;"),
            |_: &Db, _: &str, out: &str| out.contains("hello") && !errored(out),
        ),
        Case::new(
            "a card typed as a literal promotes nothing",
            "CREATE TABLE {t}.pay (id int, card text);",
            format!("SELECT '{CARD}'::text AS lit;\nSELECT substr('{CARD}', 1, 8) AS piece;"),
            |_: &Db, _: &str, out: &str| out.contains("45395787") && !errored(out),
        ),
        Case::new(
            "a column the detector found nothing in is not promoted",
            "CREATE TABLE {t}.items (code text); INSERT INTO {t}.items VALUES ('AB-1234');",
            "SELECT code FROM {t}.items;\nSELECT substr(code, 1, 2) FROM {t}.items;",
            |_: &Db, _: &str, out: &str| out.contains("AB-1234") && out.contains("AB\n"),
        ),
    ]
}

#[test]
fn fragments_of_a_column_a_detector_found_values_in_are_masked() {
    require_privileged();
    let db = Db::create("fc2_fragments");
    let cfg = TestConfig::new(&[5432], POLICY);
    let held = attacks("class 8 fragments", &db, &cfg, &attack_corpus());
    let passed = lookalikes("class 8 fragments", &db, &cfg, &lookalike_corpus());
    report("class 8 (fragments)", &held, &passed);
}

/// A promotion is visible: in the log, in `/metrics`, in the recording,
/// and it lasts into the next session.
#[test]
fn a_promotion_is_logged_counted_recorded_and_outlives_its_session() {
    require_privileged();
    let db = Db::create("fc2_fragments_seen");
    db.sql(&FIXTURE.replace("{t}", "public"));
    let cfg = TestConfig::new(&[5432], POLICY);
    let psql = |sql: &str| {
        format!(
            "psql -X -At -h 127.0.0.1 -U postgres -d {} -c \"{sql}\"",
            db.name
        )
    };
    let script = format!(
        "{}; echo '--- next session'; {}; {}",
        psql("SELECT card FROM pay"),
        psql("SELECT left(card, 8) FROM pay"),
        scrape_snippet(&cfg.admin_url())
    );
    let out = hoop_exec(
        &cfg.path,
        &["sh", "-c", &script],
        std::time::Duration::from_mins(2),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (first, next) = stdout
        .split_once("--- next session")
        .expect("both sessions ran");
    assert!(first.contains("[REDACTED:credit_card]"), "{first}");
    assert!(
        next.contains("[REDACTED:cards]") && !next.contains("45395787"),
        "the next session masks the fragment by the promoted column rule: {next}"
    );
    assert!(
        stderr.contains("masked as a column rule from now on")
            && stderr.contains("public.pay.card"),
        "{stderr}"
    );
    let metrics = scraped(&stdout);
    assert!(
        metrics.contains("hoop_detector_promotions_total{rule=\"cards\"} 1"),
        "{metrics}"
    );
    let recorded = std::fs::read_dir(cfg.dir.path().join("recordings"))
        .expect("recordings")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        recorded.contains("\"type\":\"promotion\"") && recorded.contains("public.pay.card"),
        "the session that found it records the promotion"
    );
}
