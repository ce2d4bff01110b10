//! The workspace's architecture, checked from `cargo metadata`: the crates
//! that hold governance (policy, masking, holds, recording, and the glue and
//! vocabulary they share) depend on no wire-protocol crate, so a new
//! protocol adds a crate and reuses them unchanged.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use serde_json::Value;

/// Crates that must stay protocol-neutral.
const NEUTRAL: &[&str] = &[
    "hoop-core",
    "hoop-config",
    "hoop-sql",
    "hoop-policy",
    "hoop-mask",
    "hoop-hold",
    "hoop-record",
    "hoop-govern",
    "hoop-relay",
    "hoop-credentials",
];

/// Workspace package → the workspace packages it depends on directly
/// (normal, dev and build dependencies alike).
fn workspace_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|d| names.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// Everything `package` depends on, transitively.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, package: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![package.to_owned()];
    while let Some(p) = todo.pop() {
        for d in graph.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

/// Wire-protocol crates: codecs (`hoop-proto-*`) and every crate that
/// depends on one (the drivers, and the binary that wires them).
fn protocol_crates(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    graph
        .keys()
        .filter(|p| {
            p.starts_with("hoop-proto-")
                || closure(graph, p)
                    .iter()
                    .any(|d| d.starts_with("hoop-proto-"))
        })
        .cloned()
        .collect()
}

/// Each neutral crate that reaches a protocol crate, with what it reaches.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, Vec<String>)> {
    let protocols = protocol_crates(graph);
    NEUTRAL
        .iter()
        .filter_map(|neutral| {
            let reached: Vec<String> = closure(graph, neutral)
                .into_iter()
                .filter(|d| protocols.contains(d))
                .collect();
            (!reached.is_empty() || protocols.contains(*neutral))
                .then(|| ((*neutral).to_owned(), reached))
        })
        .collect()
}

#[test]
fn governance_crates_depend_on_no_protocol_crate() {
    let graph = workspace_graph();
    let protocols = protocol_crates(&graph);
    assert!(
        protocols.contains("hoop-proto-pg") && protocols.contains("hoop-pg"),
        "the PostgreSQL codec and driver are protocol crates: {protocols:?}"
    );
    for neutral in NEUTRAL {
        assert!(
            graph.contains_key(*neutral),
            "{neutral} is in the workspace"
        );
    }
    assert_eq!(violations(&graph), Vec::new());
}

#[test]
fn the_core_depends_on_no_other_hoop_crate() {
    let graph = workspace_graph();
    let core = &graph["hoop-core"];
    assert!(core.is_empty(), "hoop-core depends on {core:?}");
}

#[test]
fn the_check_catches_a_protocol_crate_reached_through_another_crate() {
    // SQL dialects depending on the PostgreSQL codec would drag it into
    // policy and masking: the check must say so.
    let mut graph = workspace_graph();
    graph
        .get_mut("hoop-sql")
        .unwrap()
        .insert("hoop-proto-pg".to_owned());
    let found = violations(&graph);
    assert!(
        found
            .iter()
            .any(|(c, reached)| c == "hoop-mask" && reached.contains(&"hoop-proto-pg".to_owned())),
        "{found:?}"
    );
}
