#![allow(clippy::unwrap_used)] // A test that cannot set up should fail loudly, right there.

use std::io::Cursor;

use super::*;
use hoop_hold::HoldSession;

#[test]
fn the_type_is_read_from_the_head_of_a_line() {
    let line =
        br#"{"seq":3,"mono_ns":12,"ts":"2025-01-01T00:00:00Z","type":"statement","sql":"x"}"#;
    assert_eq!(line_type(line), Some("statement"));
    assert_eq!(line_type(br#"{"seq":3,"sql":"\"type\":\"x"}"#), None);
    assert_eq!(line_type(b"not json"), None);
}

#[test]
fn long_lines_are_consumed_without_being_kept() {
    let mut text = Vec::new();
    text.extend_from_slice(b"short\n");
    text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
    text.extend_from_slice(b"\nnext\ntorn");
    let mut reader = std::io::BufReader::with_capacity(4096, Cursor::new(text));
    let mut line = Vec::new();
    assert_eq!(read_line(&mut reader, &mut line).unwrap(), Some(true));
    assert_eq!(line, b"short\n");
    line.clear();
    assert_eq!(read_line(&mut reader, &mut line).unwrap(), Some(false));
    assert!(line.len() <= MAX_LINE_BYTES + 1, "{}", line.len());
    line.clear();
    assert_eq!(read_line(&mut reader, &mut line).unwrap(), Some(true));
    assert_eq!(line, b"next\n");
    line.clear();
    assert_eq!(
        read_line(&mut reader, &mut line).unwrap(),
        Some(false),
        "a line still being written is not complete"
    );
    line.clear();
    assert_eq!(read_line(&mut reader, &mut line).unwrap(), None);
}

fn hold() -> HoldView {
    let now = time::OffsetDateTime::now_utc();
    HoldView {
        id: "h-aaaaaaaaaa".to_owned(),
        state: hoop_hold::HoldState::Pending,
        statement: "DELETE FROM t".to_owned(),
        rule: "r".to_owned(),
        message: String::new(),
        session: HoldSession {
            id: "1-2-3".to_owned(),
            ..HoldSession::default()
        },
        workload: None,
        created_at: now,
        expires_at: now,
        decided_at: None,
        decisions: Vec::new(),
        approvers: Vec::new(),
        min_approvals: 1,
        approvals_needed: 1,
        reason: None,
    }
}

fn line(seq: u64, body: &str) -> String {
    format!(
        r#"{{"seq":{seq},"mono_ns":0,"ts":"2025-01-01T00:00:0{seq}Z",{body},"hash":"{}"}}"#,
        "0".repeat(64)
    ) + "\n"
}

#[test]
fn a_tail_window_skips_its_first_partial_line_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let text = [
        line(1, r#""type":"statement","sql":"SELECT 'first'","form":"simple","kinds":["select"],"tables":[]"#),
        line(2, r#""type":"statement","sql":"SELECT 'second'","form":"simple","kinds":["select"],"tables":[]"#),
        line(3, r#""type":"verdict","verdict":"allow","rule":null,"message":null"#),
        line(4, r#""type":"statement","sql":"DELETE FROM t","form":"simple","kinds":["delete"],"tables":["t"]"#),
        line(5, r#""type":"verdict","verdict":"hold","rule":"r","message":"m""#),
    ]
    .concat();
    std::fs::write(&path, &text).unwrap();
    let all = scan(&path, &hold(), 1 << 20).unwrap();
    assert!(!all.skipped_head);
    assert_eq!(all.statements.len(), 3);
    assert!(all.statements[2].held);

    // A window starting inside the second line: the first and second are not read.
    let window = text.len() as u64 - text.find("SELECT 'second'").unwrap() as u64;
    let tail = scan(&path, &hold(), window).unwrap();
    assert!(tail.skipped_head);
    let sql: Vec<&str> = tail.statements.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(sql, ["DELETE FROM t"]);
}

#[test]
fn only_the_last_statements_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let mut text = String::new();
    for n in 0..(MAX_STATEMENTS + 7) {
        text += &line(
            1,
            &format!(
                r#""type":"statement","sql":"SELECT {n}","form":"simple","kinds":["select"],"tables":[]"#
            ),
        );
    }
    std::fs::write(&path, &text).unwrap();
    let scanned = scan(&path, &hold(), 1 << 20).unwrap();
    assert_eq!(scanned.statements.len(), MAX_STATEMENTS);
    assert_eq!(scanned.dropped, 7);
    assert_eq!(scanned.statements[0].sql, "SELECT 7");
    assert!(
        scanned.statements.iter().all(|s| !s.held),
        "no held statement recorded yet"
    );
}

#[test]
fn recordings_are_matched_by_their_whole_session_id() {
    assert!(records_session("20250101T120000Z-1-2-3", "1-2-3"));
    assert!(
        records_session("20250101T120000Z-1-2-3-2", "1-2-3"),
        "a taken name"
    );
    assert!(!records_session("20250101T120000Z-11-2-3", "1-2-3"));
    assert!(!records_session("20250101T120000Z-0-1-2-3", "1-2-3"));
    assert!(!records_session("20250101T120000Z-1-2-3-x", "1-2-3"));
    assert_eq!(safe_session_id("pod/a b"), "pod_a_b");
}
