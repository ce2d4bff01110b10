//! A tokio-postgres client for end-to-end tests, run *under* `hoop exec` so
//! its connections are governed. Extended protocol throughout (tokio-postgres
//! prepares every statement and asks for binary results).
//!
//! Usage: `pg-client SCENARIO [ARGS...]`; connection settings from `PGHOST`
//! (default 127.0.0.1), `PGPORT` (5432), `PGUSER` (postgres), `PGDATABASE`
//! (test), `PGPASSWORD`. Every outcome is printed as one JSON line:
//! `{"rows": [[...], ...]}`, `{"affected": N}` or `{"error": {"code", "message", "detail"}}`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls, Row, SimpleQueryMessage, types::Type};

fn config() -> tokio_postgres::Config {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let mut c = tokio_postgres::Config::new();
    c.host(env("PGHOST", "127.0.0.1"))
        .port(env("PGPORT", "5432").parse().expect("PGPORT"))
        .user(env("PGUSER", "postgres"))
        .dbname(env("PGDATABASE", "test"))
        .application_name("hoop-pg-client");
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        c.password(pw);
    }
    c
}

async fn connect() -> Client {
    let (client, connection) = config().connect(NoTls).await.expect("connect");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection ended: {e}");
        }
    });
    client
}

fn cell(row: &Row, i: usize) -> Value {
    let ty = row.columns()[i].type_().clone();
    match ty {
        Type::INT2 => json!(row.get::<_, Option<i16>>(i)),
        Type::INT4 => json!(row.get::<_, Option<i32>>(i)),
        Type::INT8 => json!(row.get::<_, Option<i64>>(i)),
        Type::BOOL => json!(row.get::<_, Option<bool>>(i)),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            json!(row.get::<_, Option<String>>(i))
        }
        Type::JSON | Type::JSONB => json!(row.get::<_, Option<Value>>(i)),
        other => json!(format!("<{other}>")),
    }
}

fn rows_json(rows: &[Row]) -> Value {
    json!({ "rows": rows.iter().map(|r| (0..r.len()).map(|i| cell(r, i)).collect::<Vec<_>>()).collect::<Vec<_>>() })
}

fn error_json(e: &tokio_postgres::Error) -> Value {
    match e.as_db_error() {
        Some(db) => {
            json!({ "error": { "code": db.code().code(), "message": db.message(), "detail": db.detail() } })
        }
        None => json!({ "error": { "code": null, "message": e.to_string(), "detail": null } }),
    }
}

fn print(v: &Value) {
    println!("{v}");
}

async fn query(client: &Client, sql: &str) {
    match client.query(sql, &[]).await {
        Ok(rows) => print(&rows_json(&rows)),
        Err(e) => print(&error_json(&e)),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().map(String::as_str).unwrap_or_default();
    match scenario {
        // Each SQL argument as a prepared statement with binary results.
        "query" => {
            let client = connect().await;
            for sql in &args[1..] {
                query(&client, sql).await;
            }
        }
        // Each SQL argument through execute (extended protocol): affected rows.
        "execute" => {
            let client = connect().await;
            for sql in &args[1..] {
                match client.execute(sql.as_str(), &[]).await {
                    Ok(n) => print(&json!({ "affected": n })),
                    Err(e) => print(&error_json(&e)),
                }
            }
        }
        // Each SQL argument through execute inside one transaction, then COMMIT.
        "tx" => {
            let mut client = connect().await;
            let tx = client.transaction().await.expect("begin");
            for sql in &args[1..] {
                match tx.execute(sql.as_str(), &[]).await {
                    Ok(n) => print(&json!({ "affected": n })),
                    Err(e) => print(&error_json(&e)),
                }
            }
            match tx.commit().await {
                Ok(()) => print(&json!({ "commit": "ok" })),
                Err(e) => print(&error_json(&e)),
            }
        }
        // A prepared statement with one int parameter: execute PARAM.
        "execute-param" => {
            let client = connect().await;
            let param: i32 = args[2].parse().expect("int parameter");
            match client.execute(args[1].as_str(), &[&param]).await {
                Ok(n) => print(&json!({ "affected": n })),
                Err(e) => print(&error_json(&e)),
            }
        }
        // Simple-protocol query (text results), printing rows and completions.
        "simple" => {
            let client = connect().await;
            match client.simple_query(&args[1]).await {
                Ok(msgs) => {
                    let mut rows = Vec::new();
                    for m in msgs {
                        if let SimpleQueryMessage::Row(r) = m {
                            rows.push((0..r.len()).map(|i| json!(r.get(i))).collect::<Vec<_>>());
                        }
                    }
                    print(&json!({ "rows": rows }));
                }
                Err(e) => print(&error_json(&e)),
            }
        }
        // SQL, then wait until FILE exists, then the same SQL again, on one connection.
        "again-after" => {
            let client = connect().await;
            let (sql, file) = (&args[1], &args[2]);
            query(&client, sql).await;
            println!("{}", json!({ "waiting": file }));
            let deadline = Instant::now() + Duration::from_secs(30);
            while !std::path::Path::new(file).exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            query(&client, sql).await;
        }
        // N queries pipelined on one connection.
        "pipeline" => {
            let client = connect().await;
            let n: i32 = args[1].parse().expect("count");
            let stmt = client
                .prepare("SELECT $1::int4 * 2")
                .await
                .expect("prepare");
            let futures = (0..n).map(|i| {
                let client = &client;
                let stmt = &stmt;
                async move {
                    client
                        .query_one(stmt, &[&i])
                        .await
                        .map(|r| r.get::<_, i32>(0))
                }
            });
            let results = futures_join_all(futures).await;
            let ok = results
                .iter()
                .enumerate()
                .all(|(i, r)| r.as_ref().is_ok_and(|v| *v == i as i32 * 2));
            print(&json!({ "pipeline": n, "all_correct": ok }));
        }
        // A portal read in chunks of N rows (Execute with a row limit → PortalSuspended).
        "portal" => {
            let mut client = connect().await;
            let chunk: i32 = args[2].parse().expect("chunk");
            let tx = client.transaction().await.expect("begin");
            let stmt = tx.prepare(&args[1]).await.expect("prepare");
            let portal = tx.bind(&stmt, &[]).await.expect("bind");
            let mut chunks = 0;
            let mut all = Vec::new();
            loop {
                let rows = tx.query_portal(&portal, chunk).await.expect("fetch");
                if rows.is_empty() {
                    break;
                }
                chunks += 1;
                all.extend(rows);
            }
            tx.commit().await.expect("commit");
            let mut v = rows_json(&all);
            v["chunks"] = json!(chunks);
            print(&v);
        }
        // pg_sleep(30) cancelled after 500 ms through the cancel token.
        "cancel" => {
            let client = connect().await;
            let token = client.cancel_token();
            let started = Instant::now();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = token.cancel_query(NoTls).await;
            });
            let r = client.simple_query("SELECT pg_sleep(30)").await;
            let code = r
                .err()
                .and_then(|e| e.as_db_error().map(|d| d.code().code().to_owned()));
            print(&json!({ "cancelled_code": code, "elapsed_ms": started.elapsed().as_millis() }));
        }
        other => {
            eprintln!("pg-client: unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    // Poll them together so their messages are pipelined on the connection.
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::with_capacity(handles.len());
    let mut pinned: Vec<_> = handles.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(done.into_iter().map(|d| d.expect("completed")));
    out
}
