//! Masking throughput: 1M synthetic rows of 3 text values.
//!
//! `cargo run --release -p hoop-mask --example mask_bench [ROWS]`
//!
//! - "masking": two columns masked by column rules (partial, hash) and an
//!   email detector rule over the third; every row changes.
//! - "pass-through": the same rows under a plan that changes nothing
//!   (detector rule on, no hits): the zero-copy path.
//! - "no rules": a plan with nothing to do (`is_noop`).

use std::{borrow::Cow, hint::black_box, sync::Arc, time::Instant};

use hoop_core::{ColumnSource, ResultColumn, ValueEncoding};
use hoop_mask::{
    BinaryUnmaskable, BuiltinDetector, ColumnRef, ColumnRule, DetectorKind, DetectorRule, MaskPlan,
    MaskRules, Strategy, lineage::analyze,
};
use hoop_sql::{ParsedSql, pg::Postgres};

type Row = [Option<Vec<u8>>; 3];

fn rules() -> Arc<MaskRules> {
    Arc::new(
        MaskRules::new(
            vec![
                ColumnRule {
                    name: "ssn".into(),
                    columns: vec![ColumnRef::parse("customers.ssn").expect("ref")],
                    strategy: Strategy::Partial,
                    keep_last: 4,
                },
                ColumnRule {
                    name: "card".into(),
                    columns: vec![ColumnRef::parse("customers.card").expect("ref")],
                    strategy: Strategy::Hash,
                    keep_last: 0,
                },
            ],
            vec![DetectorRule {
                name: "pii".into(),
                detectors: vec![DetectorKind::Builtin(BuiltinDetector::Email)],
                strategy: Strategy::Redact,
                keep_last: 0,
            }],
            b"bench-key".to_vec(),
            BinaryUnmaskable::Refuse,
        )
        .expect("rules"),
    )
}

fn columns(names: [&str; 3]) -> Vec<ResultColumn> {
    names
        .iter()
        .map(|n| ResultColumn {
            name: (*n).into(),
            source: ColumnSource::None,
            encoding: ValueEncoding::Text,
            type_name: Cow::Borrowed("text"),
            content: hoop_core::ValueContent::Any,
        })
        .collect()
}

fn run(label: &str, plan: &mut MaskPlan, rows: &[Row]) {
    let start = Instant::now();
    let mut changed = 0usize;
    let mut bytes = 0usize;
    let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(3);
    for row in rows {
        let values: [Option<&[u8]>; 3] = [row[0].as_deref(), row[1].as_deref(), row[2].as_deref()];
        out.clear();
        if plan
            .rewrite_row(black_box(&&values[..]), &mut out)
            .expect("row")
        {
            changed += 1;
            bytes += out.iter().flatten().map(Vec::len).sum::<usize>();
        }
    }
    let elapsed = start.elapsed();
    let ns = elapsed.as_nanos() as f64 / rows.len() as f64;
    println!(
        "{label:<14} {:>8} rows  {:>8.1} ns/row  {:>6.2} M rows/s  changed {changed} ({bytes} bytes out)",
        rows.len(),
        ns,
        1e3 / ns
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let masked_rows: Vec<Row> = (0..n)
        .map(|i| {
            let ssn = format!("{:03}-{:02}-{:04}", 100 + i % 800, 1 + i % 98, 1 + i % 9998);
            let card = format!("4111 1111 1111 {:04}", i % 10_000);
            let note = format!("customer {i} prefers contact at user{i}@example.com after 5pm");
            [
                Some(ssn.into_bytes()),
                Some(card.into_bytes()),
                Some(note.into_bytes()),
            ]
        })
        .collect();
    let clean_rows: Vec<Row> = (0..n)
        .map(|i| {
            let a = format!("Customer number {i}");
            let b = format!("Springfield, district {}", i % 97);
            let c = format!("customer {i} prefers contact by phone after 5pm, no email");
            [
                Some(a.into_bytes()),
                Some(b.into_bytes()),
                Some(c.into_bytes()),
            ]
        })
        .collect();
    let r = rules();
    let lineage = analyze(
        &ParsedSql::parse(&Postgres, "SELECT ssn, card, note FROM customers"),
        &r,
    )
    .statement(0);
    let mut plan = MaskPlan::new(r.clone(), &lineage, &columns(["ssn", "card", "note"]), &[]);
    let clean_lineage = analyze(
        &ParsedSql::parse(&Postgres, "SELECT name, city, note FROM customers"),
        &r,
    )
    .statement(0);
    let mut clean_plan = MaskPlan::new(
        r.clone(),
        &clean_lineage,
        &columns(["name", "city", "note"]),
        &[],
    );
    let none = Arc::new(
        MaskRules::new(Vec::new(), Vec::new(), Vec::new(), BinaryUnmaskable::Refuse)
            .expect("rules"),
    );
    let mut noop = MaskPlan::new(
        none,
        &clean_lineage,
        &columns(["name", "city", "note"]),
        &[],
    );
    // Warm up once, then measure.
    run("warm-up", &mut plan, &masked_rows[..n.min(10_000)]);
    run("masking", &mut plan, &masked_rows);
    run("pass-through", &mut clean_plan, &clean_rows);
    run("no rules", &mut noop, &clean_rows);
    let counts = plan.take_counts();
    println!("counts: {counts:?}");
}
