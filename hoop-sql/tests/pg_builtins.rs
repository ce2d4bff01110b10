//! The committed list of PostgreSQL's built-in routines and operators
//! (`hoop-sql/src/pg/builtins/generated.rs`) against the live server's
//! `pg_catalog`, read with the generator's own query. A difference means the
//! list is stale for this server: regenerate it with `cargo xtask
//! pg-builtins`. Needs PostgreSQL on 127.0.0.1:5432; with CI=true a missing
//! server fails the test instead of skipping it.

use std::{collections::BTreeSet, process::Command};

use hoop_sql::pg::builtins::{Catalog, catalog};

const CATALOG_SQL: &str = include_str!("../src/pg/builtins/catalog.sql");

/// `psql -XAt` output of the catalog query, or why there is none.
fn live_listing() -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-XAt",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            CATALOG_SQL,
        ])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

#[test]
fn the_committed_builtins_are_the_live_servers() {
    let listing = match live_listing() {
        Ok(listing) => listing,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PostgreSQL on 127.0.0.1:5432 is needed to check the built-in list: {e}")
        }
        Err(e) => {
            eprintln!("skipped (set CI=true to make this fatal): {e}");
            return;
        }
    };
    let mut live_routines = BTreeSet::new();
    let mut live_operators = BTreeSet::new();
    for line in listing.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["F", name, kinds, volatility] => {
                live_routines.insert(format!("{name} {kinds} {volatility}"));
            }
            ["O", symbol] => {
                live_operators.insert((*symbol).to_owned());
            }
            _ => panic!("unexpected catalog line {line:?}"),
        }
    }
    let committed = catalog();
    let committed_routines: BTreeSet<String> = committed
        .routines
        .iter()
        .map(|(name, volatility, kinds)| {
            let v = match volatility {
                hoop_sql::Volatility::Immutable => "i",
                hoop_sql::Volatility::Stable => "s",
                hoop_sql::Volatility::Volatile => "v",
            };
            format!("{name} {} {v}", Catalog::kind_letters(*kinds))
        })
        .collect();
    let committed_operators: BTreeSet<String> = committed
        .operators
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let missing: Vec<_> = live_routines.difference(&committed_routines).collect();
    let extra: Vec<_> = committed_routines.difference(&live_routines).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the built-in routine list (from PostgreSQL {}) differs from this server's: \
         missing {missing:?}, not on this server {extra:?}; run `cargo xtask pg-builtins`",
        committed.server_version
    );
    assert_eq!(
        live_operators, committed_operators,
        "the built-in operator list differs from this server's; run `cargo xtask pg-builtins`"
    );
}
