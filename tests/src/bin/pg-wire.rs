//! A raw PostgreSQL wire client for tests that need messages no driver
//! sends: a protocol Bind or Execute naming a statement or cursor the
//! client made with SQL (`PREPARE`, `DECLARE`), and names the server
//! rejected. Run *under* `hoop exec` to be governed, or directly for the
//! bare database.
//!
//! Usage: `pg-wire STEP...`, each step one round trip ending at
//! ReadyForQuery:
//! - `Q:<sql>`: a simple Query;
//! - `P:<name>:<sql>`: Parse, Sync;
//! - `B:<portal>:<statement>`: Bind (no parameters, text results), Sync;
//! - `X:<statement>[|<param>...]`: Bind to the unnamed portal (text
//!   parameters), Execute it, Sync;
//! - `E:<portal>`: Execute (all rows), Sync.
//!
//! Connection settings from `PGHOST` (127.0.0.1), `PGPORT` (5432), `PGUSER`
//! (postgres) and `PGDATABASE` (test); trust authentication only. Every
//! server message of interest is printed as one JSON line: `{"row": [...]}`,
//! `{"tag": "..."}`, `{"error": {"code", "message"}}`, `{"notice": "..."}`.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

/// A message: tag, then its length (including itself) and body.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    let len = u32::try_from(body.len() + 4).expect("message length");
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0u16.to_be_bytes());
    message(b'P', &b)
}

fn bind(portal: &str, statement: &str, params: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.extend_from_slice(&0u16.to_be_bytes()); // parameter formats: all text
    let count = u16::try_from(params.len()).expect("parameter count");
    b.extend_from_slice(&count.to_be_bytes());
    for p in params {
        let len = u32::try_from(p.len()).expect("parameter length");
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&0u16.to_be_bytes()); // result formats: all text
    message(b'B', &b)
}

fn execute(portal: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend_from_slice(&0u32.to_be_bytes());
    message(b'E', &b)
}

fn sync() -> Vec<u8> {
    message(b'S', &[])
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    message(b'Q', &b)
}

struct Conn {
    stream: TcpStream,
}

impl Conn {
    fn connect() -> Result<Self, String> {
        let addr = format!("{}:{}", env("PGHOST", "127.0.0.1"), env("PGPORT", "5432"));
        let mut stream = TcpStream::connect(&addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in [
            ("user", env("PGUSER", "postgres")),
            ("database", env("PGDATABASE", "test")),
            ("application_name", "hoop-pg-wire".to_owned()),
        ] {
            cstr(&mut body, k);
            cstr(&mut body, &v);
        }
        body.push(0);
        let len = u32::try_from(body.len() + 4).expect("startup length");
        let mut startup = len.to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        stream
            .write_all(&startup)
            .map_err(|e| format!("startup: {e}"))?;
        let mut conn = Self { stream };
        loop {
            let (tag, body) = conn.read()?;
            match tag {
                b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => {}
                b'R' => return Err("only trust authentication is supported".into()),
                b'E' => return Err(format!("startup refused: {}", fields(&body))),
                b'Z' => return Ok(conn),
                _ => {}
            }
        }
    }

    fn read(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 5];
        self.stream
            .read_exact(&mut head)
            .map_err(|e| format!("read: {e}"))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| format!("read: {e}"))?;
        Ok((head[0], body))
    }

    /// Sends `bytes`, prints what comes back up to ReadyForQuery.
    fn round_trip(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write: {e}"))?;
        loop {
            let (tag, body) = self.read()?;
            match tag {
                b'D' => println!("{}", json!({ "row": data_row(&body) })),
                b'C' => println!(
                    "{}",
                    json!({ "tag": String::from_utf8_lossy(body.split(|b| *b == 0).next().unwrap_or_default()) })
                ),
                b'E' => println!("{}", fields(&body)),
                b'N' => println!("{}", json!({ "notice": fields(&body)["error"]["message"] })),
                b'Z' => return Ok(()),
                _ => {}
            }
        }
    }
}

/// An ErrorResponse's (or NoticeResponse's) code and message.
fn fields(body: &[u8]) -> Value {
    let mut code = String::new();
    let mut text = String::new();
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => text = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    json!({ "error": { "code": code, "message": text } })
}

fn data_row(body: &[u8]) -> Value {
    let mut cells = Vec::new();
    let count = body
        .get(..2)
        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    let mut at = 2;
    for _ in 0..count {
        let Some(len) = body.get(at..at + 4) else {
            break;
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len < 0 {
            cells.push(Value::Null);
            continue;
        }
        let end = at + usize::try_from(len).unwrap_or(0);
        cells.push(json!(String::from_utf8_lossy(
            body.get(at..end).unwrap_or_default()
        )));
        at = end;
    }
    Value::Array(cells)
}

fn main() {
    let mut conn = match Conn::connect() {
        Ok(c) => c,
        Err(e) => {
            println!("{}", json!({ "error": { "code": null, "message": e } }));
            std::process::exit(1);
        }
    };
    for step in std::env::args().skip(1) {
        let (kind, rest) = step.split_once(':').unwrap_or((step.as_str(), ""));
        let bytes = match kind {
            "Q" => query(rest),
            "P" => {
                let (name, sql) = rest.split_once(':').unwrap_or((rest, ""));
                [parse(name, sql), sync()].concat()
            }
            "B" => {
                let (portal, statement) = rest.split_once(':').unwrap_or((rest, ""));
                [bind(portal, statement, &[]), sync()].concat()
            }
            "X" => {
                let mut parts = rest.split('|');
                let statement = parts.next().unwrap_or_default();
                let params: Vec<&str> = parts.collect();
                [bind("", statement, &params), execute(""), sync()].concat()
            }
            "E" => [execute(rest), sync()].concat(),
            other => {
                eprintln!("pg-wire: unknown step {other:?}");
                std::process::exit(2);
            }
        };
        if let Err(e) = conn.round_trip(&bytes) {
            println!("{}", json!({ "error": { "code": null, "message": e } }));
            std::process::exit(1);
        }
    }
    let _ = conn.stream.write_all(&message(b'X', &[]));
}
