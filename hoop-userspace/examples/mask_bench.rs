//! Masking throughput: 1M synthetic DataRow bodies with 3 text columns.
//!
//! `cargo run --release -p hoop-userspace --example mask_bench [ROWS]`
//!
//! - "masking": two columns masked by column rules (partial, hash) and an
//!   email detector rule over the third; every row changes.
//! - "pass-through": the same rows under a plan that changes nothing
//!   (detector rule on, no hits): the zero-copy path.
//! - "no rules": a plan with nothing to do (`is_noop`).

use std::{hint::black_box, sync::Arc, time::Instant};

use hoop::mask::{
    BinaryUnmaskable, BuiltinDetector, ColumnDescription, ColumnRef, ColumnRule, DetectorKind,
    DetectorRule, MaskPlan, MaskRules, Strategy, lineage::analyze_sql, row::encode_data_row,
};

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

fn columns(names: [&str; 3]) -> Vec<ColumnDescription> {
    names
        .iter()
        .map(|n| ColumnDescription {
            name: (*n).into(),
            table_oid: 0,
            column_attnum: 0,
            type_oid: 25,
            format: 0,
        })
        .collect()
}

fn run(label: &str, plan: &mut MaskPlan, rows: &[Vec<u8>]) {
    let start = Instant::now();
    let mut changed = 0usize;
    let mut bytes = 0usize;
    for row in rows {
        if let Some(out) = plan.rewrite_row(black_box(row)).expect("row") {
            changed += 1;
            bytes += out.len();
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
    let masked_rows: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let ssn = format!("{:03}-{:02}-{:04}", 100 + i % 800, 1 + i % 98, 1 + i % 9998);
            let card = format!("4111 1111 1111 {:04}", i % 10_000);
            let note = format!("customer {i} prefers contact at user{i}@example.com after 5pm");
            encode_data_row(&[
                Some(ssn.as_bytes()),
                Some(card.as_bytes()),
                Some(note.as_bytes()),
            ])
        })
        .collect();
    let clean_rows: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let a = format!("Customer number {i}");
            let b = format!("Springfield, district {}", i % 97);
            let c = format!("customer {i} prefers contact by phone after 5pm, no email");
            encode_data_row(&[Some(a.as_bytes()), Some(b.as_bytes()), Some(c.as_bytes())])
        })
        .collect();
    let r = rules();
    let lineage = analyze_sql("SELECT ssn, card, note FROM customers", &r).statement(0);
    let mut plan = MaskPlan::new(r.clone(), &lineage, &columns(["ssn", "card", "note"]), &[]);
    let clean_lineage = analyze_sql("SELECT name, city, note FROM customers", &r).statement(0);
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
