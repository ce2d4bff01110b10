//! A Rust MySQL client for the MySQL end-to-end tests: `mysql_async` (the
//! pure-Rust driver, its own handshake, text and binary protocol), run
//! directly or through `hoop exec`. Prints one JSON document.
//!
//! Usage: `mysql-rust-client DATABASE` (127.0.0.1:3306, user root, no
//! password). `prefer_socket` is off: by default `mysql_async` asks the
//! server for `@@socket` after connecting over TCP and reconnects over the
//! unix socket, which no proxy on the TCP path ever sees.

use mysql_async::{Conn, OptsBuilder, prelude::Queryable};
use serde_json::{Value, json};

/// A query's rows, or the server's error (code and message) as JSON.
fn outcome(r: Result<Value, mysql_async::Error>) -> Value {
    match r {
        Ok(rows) => json!({ "rows": rows }),
        Err(mysql_async::Error::Server(e)) => json!({ "error": e.code, "message": e.message }),
        Err(e) => json!({ "error": -1, "message": e.to_string() }),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let db = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: mysql-rust-client DATABASE"))?;
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some("root"))
        .db_name(Some(db))
        .prefer_socket(false);
    let mut conn = Conn::new(opts).await?;
    let mut out = serde_json::Map::new();
    // Text protocol.
    let text = conn
        .query::<(i32, String, String), _>("SELECT id, ssn, email FROM cust ORDER BY id")
        .await;
    out.insert("text".into(), outcome(text.map(|r| json!(r))));
    // Binary protocol: one prepared statement with a parameter, executed
    // twice (the second execution reuses the server's statement).
    let stmt = conn
        .prep("SELECT id, ssn FROM cust WHERE id >= ? ORDER BY id")
        .await?;
    let first = conn.exec::<(i32, String), _, _>(&stmt, (1,)).await;
    out.insert("binary".into(), outcome(first.map(|r| json!(r))));
    let again = conn.exec::<(i32, String), _, _>(&stmt, (2,)).await;
    out.insert("binary_again".into(), outcome(again.map(|r| json!(r))));
    // A value derived from the masked column (lineage, not the column's name).
    let derived = conn
        .query::<String, _>("SELECT CONCAT(ssn, '') FROM cust ORDER BY id")
        .await;
    out.insert("derived".into(), outcome(derived.map(|r| json!(r))));
    // An unfiltered delete (the policy denies it), then the session goes on.
    let denied = conn.query_drop("DELETE FROM other").await;
    out.insert("denied".into(), outcome(denied.map(|()| json!([]))));
    let after = conn
        .query::<String, _>("SELECT note FROM other ORDER BY id")
        .await;
    out.insert("after".into(), outcome(after.map(|r| json!(r))));
    conn.disconnect().await?;
    println!("{}", Value::Object(out));
    Ok(())
}
