#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use super::*;
use crate::{
    format::Entry,
    verify::{MacCheck, VerifyStatus, verify_file},
};

fn config(dir: &Path) -> RecordingConfig {
    RecordingConfig {
        dir: dir.to_path_buf(),
        flush_interval: Duration::from_millis(50),
        ..RecordingConfig::default()
    }
}

fn identity(id: &str) -> SessionIdentity {
    SessionIdentity {
        id: id.into(),
        workload: Some("/sys/fs/cgroup/app".into()),
        client: Some(SocketAddr::from(([127, 0, 0, 1], 40000))),
        original_destination: Some(SocketAddr::from(([10, 0, 0, 5], 5432))),
        user: Some("alice".into()),
        database: Some("shop".into()),
        application_name: Some("psql".into()),
        server_session_id: Some(4242),
        client_tls: true,
        upstream_tls: false,
        ..SessionIdentity::default()
    }
}

fn only_recording(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// [`only_recording`], checked to verify intact.
fn only_intact_recording(dir: &Path) -> PathBuf {
    let path = only_recording(dir);
    assert_eq!(
        verify_file(&path, None).expect("reads").status,
        VerifyStatus::Intact
    );
    path
}

/// The kinds and tables of a `SELECT … FROM t`.
fn select_from_t() -> (Arc<[StatementKind]>, Arc<[String]>) {
    ([StatementKind::Select].into(), ["t".to_owned()].into())
}

fn entries(path: &Path) -> Vec<Entry> {
    std::fs::read(path)
        .expect("read")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("entry"))
        .collect()
}

fn types(path: &Path) -> Vec<&'static str> {
    entries(path).iter().map(|e| e.body.type_name()).collect()
}

fn select(session: &mut SessionRecorder, sql: &str) -> Result<(), RecordError> {
    session.statement(
        &sql.into(),
        Submission::Text,
        &[StatementKind::Select].into(),
        &["customers".to_owned()].into(),
    )
}

#[tokio::test]
async fn a_finished_session_is_intact_with_identity_and_trailer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "k3y\n").expect("key");
    let records = dir.path().join("rec");
    let cfg = RecordingConfig {
        hmac_key_file: Some(key_file),
        ..config(&records)
    };
    let recorder = Recorder::start(&cfg).expect("starts");
    let mut session = recorder.open_session(&identity("s-1")).expect("opens");
    select(&mut session, "SELECT name FROM customers").expect("recorded");
    session.verdict(&Verdict::Allow).expect("recorded");
    session.result(Some("SELECT 2"), 2, None);
    session.end("client_closed");
    recorder.flush().await;

    let path = only_recording(&records);
    assert!(
        path.file_name()
            .expect("name")
            .to_string_lossy()
            .ends_with("-s-1.jsonl")
    );
    let report = verify_file(&path, Some(b"k3y")).expect("reads");
    assert_eq!(
        (report.status, report.mac),
        (VerifyStatus::Intact, MacCheck::Verified)
    );
    assert_eq!(
        types(&path),
        [
            "header",
            "session_start",
            "statement",
            "verdict",
            "result",
            "session_end",
            "trailer"
        ]
    );
    let all = entries(&path);
    let Body::SessionStart(start) = &all[1].body else {
        panic!("session_start")
    };
    assert_eq!(start.identity, RecordedIdentity::from(&identity("s-1")));
    let Body::SessionEnd(end) = &all[5].body else {
        panic!("session_end")
    };
    assert_eq!(
        (end.reason.as_str(), end.totals.statements),
        ("client_closed", 1)
    );
    assert!(all.windows(2).all(|w| w[0].mono_ns <= w[1].mono_ns));
}

#[tokio::test]
async fn prepared_executions_record_the_full_statement_each_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = Recorder::start(&config(dir.path())).expect("starts");
    let mut session = recorder.open_session(&identity("s-p")).expect("opens");
    let (kinds, tables) = select_from_t();
    let small: Arc<str> = "SELECT a FROM t WHERE id = $1".into();
    // Two statements of 3/4 of SENT_STATEMENT_BYTES_MAX each: the second
    // makes both sides forget, and the small one is sent again.
    let big: Arc<str> = format!("SELECT '{}'", "x".repeat(SENT_STATEMENT_BYTES_MAX * 3 / 4)).into();
    let big2: Arc<str> =
        format!("SELECT '{}'", "y".repeat(SENT_STATEMENT_BYTES_MAX * 3 / 4)).into();
    let mut expected = Vec::new();
    for sql in [&small, &small, &big, &small, &big2, &small, &big2] {
        session
            .prepared_statement(sql, Submission::Prepared, &kinds, &tables)
            .expect("recorded");
        session.result(Some("SELECT 1"), 1, None);
        expected.push(sql.to_string());
    }
    // A long tag travels boxed; an error result too.
    let long_tag = format!("SELECT {}", "9".repeat(40));
    session.result(Some(&long_tag), 1, None);
    session.result(None, 0, Some("42P01"));
    session.end("client_closed");
    recorder.flush().await;

    let path = only_intact_recording(dir.path());
    let all = entries(&path);
    let statements: Vec<String> = all
        .iter()
        .filter_map(|e| match &e.body {
            Body::Statement(s) => {
                assert_eq!(s.form, Submission::Prepared);
                assert_eq!((&*s.kinds, &*s.tables), (&*kinds, &*tables));
                Some(s.sql.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(statements, expected);
    let results: Vec<(Option<String>, Option<String>)> = all
        .iter()
        .filter_map(|e| match &e.body {
            Body::Result(r) => Some((r.tag.clone(), r.sqlstate.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 9);
    assert_eq!(results[0], (Some("SELECT 1".into()), None));
    assert_eq!(results[7], (Some(long_tag), None));
    assert_eq!(results[8], (None, Some("42P01".into())));
    let Some(Body::SessionEnd(end)) = all.iter().rev().nth(1).map(|e| &e.body) else {
        panic!("session_end")
    };
    assert_eq!(end.totals.statements, 7);
    assert!(all.windows(2).all(|w| w[0].mono_ns <= w[1].mono_ns));
}

#[tokio::test]
async fn events_reach_the_disk_within_the_flush_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = Recorder::start(&config(dir.path())).expect("starts");
    let mut session = recorder.open_session(&identity("s-2")).expect("opens");
    select(&mut session, "SELECT 1").expect("recorded");
    // No end, no explicit flush: only the 50ms interval can put it on disk.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let path = only_recording(dir.path());
    assert_eq!(types(&path), ["header", "session_start", "statement"]);
    // What a kill -9 now would leave: truncated but intact.
    assert_eq!(
        verify_file(&path, None).expect("reads").status,
        VerifyStatus::TruncatedIntact { torn_tail: false }
    );
    drop(session);
    recorder.flush().await;
    assert_eq!(types(&path).last(), Some(&"trailer"));
    let Body::SessionEnd(end) = &entries(&path)[3].body else {
        panic!("session_end")
    };
    assert_eq!(end.reason, "connection_task_ended");
}

#[test]
fn an_uncreatable_directory_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    let err = Recorder::start(&config(&file.join("recordings"))).expect_err("parent is a file");
    assert!(matches!(err, RecordError::CreateDir { .. }), "{err}");
}

fn dev_full(_: &Path) -> std::io::Result<File> {
    File::options().write(true).open("/dev/full")
}

#[tokio::test]
async fn a_full_disk_fails_the_session_and_blocks_statements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = Recorder::start_with(&config(dir.path()), dev_full).expect("starts");
    let mut session = recorder.open_session(&identity("s-3")).expect("opens");
    let mut watch = session.failure_watch();
    select(&mut session, "SELECT 1").expect("queued before the failure is known");
    recorder.flush().await;
    assert!(session.failed());
    let failure = session.failure().expect("failure");
    assert_eq!(failure.kind, FailureKind::Write);
    assert!(watch.has_changed().expect("sender alive"));
    assert!(watch.borrow_and_update().is_some());
    let err = select(&mut session, "DELETE FROM customers").expect_err("fail closed");
    assert!(matches!(
        err,
        RecordError::SessionFailed(RecordingFailure {
            kind: FailureKind::Write,
            ..
        })
    ));
    assert_eq!(recorder.on_error(), RecordingOnError::CloseSession);
}

#[tokio::test]
async fn a_directory_that_vanishes_fails_new_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = dir.path().join("rec");
    let recorder = Recorder::start(&config(&records)).expect("starts");
    std::fs::remove_dir(&records).expect("rmdir");
    std::fs::write(&records, b"now a file").expect("write");
    let session = recorder.open_session(&identity("s-4")).expect("queued");
    recorder.flush().await;
    assert_eq!(session.failure().map(|f| f.kind), Some(FailureKind::Create));
}

#[tokio::test]
async fn summary_mode_never_writes_row_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = Recorder::start(&config(dir.path())).expect("starts");
    let mut session = recorder.open_session(&identity("s-5")).expect("opens");
    select(&mut session, "SELECT ssn FROM customers").expect("recorded");
    let columns = [Some(&b"***-**-6789"[..]), None];
    session.masked_row(MaskedRow::after_masking(&columns));
    session.copy_data(MaskedCopyChunk::after_masking(
        CopyDirection::ToClient,
        b"***-**-6789\n",
    ));
    session.result(Some("SELECT 1"), 1, None);
    session.end("client_closed");
    recorder.flush().await;
    let path = only_recording(dir.path());
    let text = std::fs::read_to_string(&path).expect("read");
    // `**-6789`, not `6789`: four digits can occur in a hash, a time or
    // `mono_ns`; the dash and stars cannot.
    assert!(!text.contains("**-6789"), "{text}");
    assert!(!types(&path).contains(&"rows"));
    let Body::Result(result) = &entries(&path)[3].body else {
        panic!("result")
    };
    assert_eq!(result.rows, Some(1));
}

#[tokio::test]
async fn full_mode_records_masked_rows_batched_and_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = RecordingConfig {
        rows: RecordRows::Full,
        max_row_bytes: 8,
        ..config(dir.path())
    };
    let recorder = Recorder::start(&cfg).expect("starts");
    let mut session = recorder.open_session(&identity("s-6")).expect("opens");
    select(&mut session, "SELECT id, ssn FROM customers").expect("recorded");
    for (id, ssn) in [(&b"1"[..], &b"***-1234"[..]), (b"2", b"***-5678")] {
        let columns = [Some(id), Some(ssn), None];
        session.masked_row(MaskedRow::after_masking(&columns));
    }
    session.result(Some("SELECT 2"), 2, None);
    session.copy_data(MaskedCopyChunk::after_masking(
        CopyDirection::ToClient,
        b"1\t***-1234\n",
    ));
    session.end("client_closed");
    recorder.flush().await;
    let path = only_recording(dir.path());
    assert_eq!(
        types(&path),
        [
            "header",
            "session_start",
            "statement",
            "rows",
            "result",
            "copy_data",
            "session_end",
            "trailer"
        ]
    );
    let all = entries(&path);
    let Body::Rows(rows) = &all[3].body else {
        panic!("rows")
    };
    // "1" + "***-123" = 8 bytes: the ssn is cut and the NULL after it omitted.
    assert_eq!(
        rows.rows[0],
        vec![
            Some(Cell::Text("1".into())),
            Some(Cell::Text("***-123".into()))
        ]
    );
    assert_eq!(
        rows.truncated,
        vec![
            TruncatedRow {
                row: 0,
                original_bytes: 9
            },
            TruncatedRow {
                row: 1,
                original_bytes: 9
            }
        ]
    );
    let Body::CopyData(copy) = &all[5].body else {
        panic!("copy_data")
    };
    assert_eq!(
        (copy.data.clone(), copy.truncated_from_bytes),
        (Cell::Text("1\t***-12".into()), Some(11))
    );
    let Body::SessionEnd(end) = &all[6].body else {
        panic!("session_end")
    };
    assert_eq!(end.totals.rows_recorded, 3);
    assert_eq!(
        verify_file(&path, None).expect("reads").status,
        VerifyStatus::Intact
    );
}

#[tokio::test]
async fn backpressure_drops_rows_and_says_so_but_keeps_statements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = RecordingConfig {
        rows: RecordRows::Full,
        ..config(dir.path())
    };
    let recorder = Recorder::start(&cfg).expect("starts");
    let shared = Arc::clone(recorder.shared.as_ref().expect("enabled"));
    let mut session = recorder.open_session(&identity("s-7")).expect("opens");
    select(&mut session, "SELECT id FROM customers").expect("recorded");
    let row = [Some(&b"1"[..])];
    session.masked_row(MaskedRow::after_masking(&row));
    session.masked_row(MaskedRow::after_masking(&row));
    // The writer is (pretend) far behind on row data.
    shared
        .backlog
        .fetch_add(ROW_BACKLOG_LIMIT_BYTES, Ordering::AcqRel);
    session.masked_row(MaskedRow::after_masking(&row)); // flushes a batch of 3 → dropped
    // Statements still go through under the hard limit.
    session.result(Some("SELECT 3"), 3, None);
    shared
        .backlog
        .fetch_sub(ROW_BACKLOG_LIMIT_BYTES, Ordering::AcqRel);
    session.end("client_closed");
    recorder.flush().await;
    let path = only_recording(dir.path());
    assert_eq!(
        types(&path),
        [
            "header",
            "session_start",
            "statement",
            "rows_limit",
            "result",
            "session_end",
            "trailer"
        ]
    );
    let all = entries(&path);
    let Body::RowsLimit(limit) = &all[3].body else {
        panic!("rows_limit")
    };
    assert_eq!((limit.recorded_rows, limit.dropped_rows), (0, 3));
    let Body::SessionEnd(end) = &all[5].body else {
        panic!("session_end")
    };
    assert_eq!(end.totals.rows_dropped, 3);

    // Past the hard limit a statement is refused and the recording stops without a trailer.
    let mut session = recorder.open_session(&identity("s-8")).expect("opens");
    shared
        .backlog
        .fetch_add(BACKLOG_HARD_LIMIT_BYTES, Ordering::AcqRel);
    let err = select(&mut session, "DELETE FROM customers").expect_err("fail closed");
    shared
        .backlog
        .fetch_sub(BACKLOG_HARD_LIMIT_BYTES, Ordering::AcqRel);
    assert!(matches!(
        err,
        RecordError::SessionFailed(RecordingFailure {
            kind: FailureKind::Backlog,
            ..
        })
    ));
    session.end("client_closed");
    recorder.flush().await;
    let s8 = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().ends_with("-s-8.jsonl"))
        .expect("s-8 recording");
    assert_eq!(types(&s8), ["header", "session_start"]);
    assert_eq!(
        verify_file(&s8, None).expect("reads").status,
        VerifyStatus::TruncatedIntact { torn_tail: false }
    );
}

#[tokio::test]
async fn retention_deletes_the_oldest_but_never_an_open_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = SystemTime::now() - Duration::from_hours(30 * 24);
    let stale = dir.path().join("20200101T000000Z-old.jsonl");
    std::fs::write(&stale, vec![b'x'; 100]).expect("write");
    File::options()
        .write(true)
        .open(&stale)
        .expect("open")
        .set_modified(old)
        .expect("mtime");
    let cfg = RecordingConfig {
        retain_days: Some(7),
        max_total_bytes: Some(1),
        ..config(dir.path())
    };
    // At start: the 30-day-old file goes.
    let recorder = Recorder::start(&cfg).expect("starts");
    assert!(!stale.exists());

    let mut live = recorder.open_session(&identity("live")).expect("opens");
    select(&mut live, "SELECT 1").expect("recorded");
    recorder.flush().await;
    let live_path = only_recording(dir.path());
    // Make the open recording look ancient and the directory over budget.
    File::options()
        .write(true)
        .open(&live_path)
        .expect("open")
        .set_modified(old)
        .expect("mtime");
    let closed = dir.path().join("20200102T000000Z-closed.jsonl");
    std::fs::write(&closed, vec![b'x'; 100]).expect("write");
    recorder.enforce_retention().await;
    assert!(!closed.exists(), "over budget: deleted");
    assert!(live_path.exists(), "open: kept");
    live.end("client_closed");
    recorder.enforce_retention().await;
    assert!(!live_path.exists(), "closed and over budget: deleted");
}

#[tokio::test]
async fn shutdown_closes_open_recordings_and_later_events_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = Recorder::start(&config(dir.path())).expect("starts");
    let mut session = recorder.open_session(&identity("s-9")).expect("opens");
    select(&mut session, "SELECT 1").expect("recorded");
    recorder.shutdown().await;
    let path = only_intact_recording(dir.path());
    let Body::SessionEnd(end) = &entries(&path)[3].body else {
        panic!("session_end")
    };
    assert_eq!(end.reason, "recorder_shutdown");
    // The writer is gone: a statement cannot be recorded.
    std::thread::sleep(Duration::from_millis(20));
    assert!(select(&mut session, "SELECT 2").is_err());
    assert!(matches!(
        recorder.open_session(&identity("s-10")),
        Err(RecordError::Closed)
    ));
}

#[test]
fn handles_can_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Recorder>();
    send::<SessionRecorder>();
}

#[test]
fn a_disabled_recorder_records_nothing_and_never_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = RecordingConfig {
        enabled: false,
        ..config(&dir.path().join("rec"))
    };
    let recorder = Recorder::start(&cfg).expect("starts");
    assert!(!recorder.is_enabled());
    let mut session = recorder.open_session(&identity("s")).expect("opens");
    select(&mut session, "SELECT 1").expect("no-op");
    session.masked_row(MaskedRow::after_masking(&[Some(b"x")]));
    assert!(!session.failed());
    session.end("client_closed");
    assert!(!dir.path().join("rec").exists());
}

fn spooled(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect()
}

#[tokio::test]
async fn a_store_gets_the_live_session_in_segments_and_the_whole_recording_at_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let url = format!("file://{}", dir.path().join("store").display());
    let cfg = RecordingConfig {
        store: Some(url.clone()),
        ship_interval: Duration::from_millis(100),
        hmac_key_env: None,
        ..config(&spool)
    };
    let recorder = Recorder::start(&cfg).expect("starts");
    let mut session = recorder.open_session(&identity("s-ship")).expect("opens");
    select(&mut session, "SELECT 1 FROM customers").expect("recorded");
    session.verdict(&Verdict::Allow).expect("recorded");
    let store = crate::store::RecordingStore::open(&url).expect("store");
    // While the session runs, its lines so far reach the store.
    let mut shipped = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        shipped = store
            .list()
            .await
            .expect("list")
            .values()
            .map(crate::store::StoredObjects::bytes)
            .sum();
        if shipped > 0 {
            break;
        }
    }
    assert!(shipped > 0, "nothing shipped from a live session");
    assert_eq!(spooled(&spool).len(), 1, "the live session stays spooled");
    session.result(Some("SELECT 1"), 1, None);
    session.end("client_closed");
    recorder.shutdown().await;

    assert!(
        spooled(&spool).is_empty(),
        "a shipped, closed recording leaves the spool"
    );
    let all = store.list().await.expect("list");
    assert_eq!(all.len(), 1);
    let stored = all.values().next().expect("one");
    assert!(stored.segments.len() >= 2, "{:?}", stored.segments);
    let bytes = store.read(stored).await.expect("read");
    let report = crate::verify::verify_bytes(&bytes, None);
    assert_eq!(report.status, VerifyStatus::Intact, "{report:?}");
}

#[tokio::test]
async fn a_full_spool_fails_the_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A store that refuses every write: a regular file where the directory should be.
    let blocked = dir.path().join("store");
    let url = format!("file://{}", blocked.display());
    let cfg = RecordingConfig {
        store: Some(url),
        ship_interval: Duration::from_millis(20),
        spool_max_bytes: 2048,
        ..config(&dir.path().join("spool"))
    };
    let recorder = Recorder::start(&cfg).expect("starts");
    std::fs::remove_dir(&blocked).expect("rmdir");
    std::fs::write(&blocked, b"not a directory").expect("file");
    let mut session = recorder.open_session(&identity("s-full")).expect("opens");
    let mut failed = None;
    for i in 0..200 {
        if let Err(e) = select(
            &mut session,
            &format!("SELECT {i} /* {} */", "x".repeat(200)),
        ) {
            failed = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let failure = session.failure().expect("the session's recording failed");
    assert_eq!(failure.kind, FailureKind::Spool, "{failure}");
    assert!(failed.is_some());
    recorder.shutdown().await;
}

/// The bodies of a recording's lines, without `seq`, times and hashes.
fn bodies(path: &Path) -> Vec<Body> {
    entries(path).into_iter().map(|e| e.body).collect()
}

#[tokio::test]
async fn a_statement_and_its_verdict_handed_over_together_record_the_same_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (apart, together, copied) = (
        dir.path().join("apart"),
        dir.path().join("together"),
        dir.path().join("copied"),
    );
    let sql: Arc<str> = "SELECT name FROM customers WHERE id = 7".into();
    let kinds: Arc<[StatementKind]> = [StatementKind::Select].into();
    let tables: Arc<[String]> = ["customers".to_owned()].into();
    let deny = Verdict::Deny(hoop_core::Denial::new("no-reads", "no reads here"));
    // `copied`: the texts handed over as `&str`, copied into the queue.
    for (records, combined, copy) in [
        (&apart, false, false),
        (&together, true, false),
        (&copied, true, true),
    ] {
        let recorder = Recorder::start(&config(records)).expect("starts");
        let mut session = recorder.open_session(&identity("s-pair")).expect("opens");
        for (i, verdict) in [Verdict::Allow, deny.clone(), Verdict::Allow]
            .iter()
            .enumerate()
        {
            let form = Submission::Prepared;
            if combined && i == 1 {
                session
                    .prepared_statement_and_verdict(&sql, form, &kinds, &tables, verdict)
                    .expect("recorded");
            } else if copy {
                session
                    .statement_text_and_verdict(&sql, form, &kinds, &tables, verdict)
                    .expect("recorded");
            } else if combined {
                session
                    .statement_and_verdict(&sql, form, &kinds, &tables, verdict)
                    .expect("recorded");
            } else if i == 1 {
                session
                    .prepared_statement(&sql, form, &kinds, &tables)
                    .expect("recorded");
                session.verdict(verdict).expect("recorded");
            } else {
                session
                    .statement(&sql, form, &kinds, &tables)
                    .expect("recorded");
                session.verdict(verdict).expect("recorded");
            }
            session.result(Some("SELECT 1"), 1, None);
        }
        session.end("client_closed");
        recorder.flush().await;
        let path = only_recording(records);
        let report = verify_file(&path, None).expect("reads");
        assert_eq!(report.status, VerifyStatus::Intact);
        let all = entries(&path);
        assert!(all.windows(2).all(|w| w[0].mono_ns <= w[1].mono_ns));
        recorder.shutdown().await;
    }
    let (apart, together, copied) = (
        bodies(&only_recording(&apart)),
        bodies(&only_recording(&together)),
        bodies(&only_recording(&copied)),
    );
    // Every body but the trailer's (whose last hash covers the times) is
    // the same.
    assert_eq!(apart.last().map(Body::type_name), Some("trailer"));
    assert_eq!(apart[..apart.len() - 1], together[..together.len() - 1]);
    assert_eq!(apart[..apart.len() - 1], copied[..copied.len() - 1]);
    assert_eq!(
        together
            .iter()
            .filter(|b| matches!(b, Body::Verdict(v) if v.verdict == VerdictKind::Deny))
            .count(),
        1
    );
}

#[test]
fn an_events_time_since_the_epoch_is_the_start_plus_its_offset() {
    let start = SystemTime::UNIX_EPOCH + Duration::new(1_795_978_550, 999_999_999);
    let since = start.duration_since(SystemTime::UNIX_EPOCH).expect("after");
    for mono_ns in [0, 1, 2, 999_999_999, 1_000_000_000, 86_400_000_000_123] {
        let expected = (start + Duration::from_nanos(mono_ns))
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after");
        assert_eq!(
            since_epoch_after((since.as_secs(), since.subsec_nanos()), mono_ns),
            Some((expected.as_secs(), expected.subsec_nanos())),
            "{mono_ns}"
        );
    }
    assert_eq!(since_epoch_after((u64::MAX, 5), 1_000_000_000), None);
}

#[tokio::test]
async fn statement_texts_copied_into_the_queue_are_recorded_whole_and_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = Recorder::start(&config(dir.path())).expect("starts");
    let mut session = recorder.open_session(&identity("s-texts")).expect("opens");
    let (kinds, tables) = select_from_t();
    // Lengths from 0 up, characters that need escaping and several bytes,
    // and the writer collecting the queue (swapping its text out) between
    // statements now and then.
    let texts: Vec<String> = (0..300)
        .map(|i| match i % 4 {
            0 => String::new(),
            1 => format!("SELECT {i} /* é\"\n\\ */ {}", "x".repeat(i % 70)),
            2 => "y".repeat(i * 7),
            _ => format!("SELECT '{}'", "€".repeat(i % 13)),
        })
        .collect();
    for (i, text) in texts.iter().enumerate() {
        session
            .statement_text_and_verdict(text, Submission::Text, &kinds, &tables, &Verdict::Allow)
            .expect("recorded");
        session.result(Some("SELECT 1"), 1, None);
        if i % 37 == 0 {
            recorder.flush().await;
        }
    }
    session.end("client_closed");
    recorder.flush().await;
    let path = only_intact_recording(dir.path());
    let recorded: Vec<String> = bodies(&path)
        .into_iter()
        .filter_map(|b| match b {
            Body::Statement(s) => Some(s.sql.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(recorded, texts);
    recorder.shutdown().await;
}
