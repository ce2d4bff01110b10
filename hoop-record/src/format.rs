//! The recording file format, version 1: JSON lines, hash-chained, with a
//! MAC'd trailer. Pure: values in, bytes out; no I/O.
//!
//! One line per entry. Every line is a JSON object that starts with `seq`,
//! `mono_ns`, `ts` and `type`, carries the payload of its type, and ends with
//! `"hash":"<64 hex>"}` followed by `\n`. The spec, with every field, is in
//! `docs/recording.md`; this module is its executable form.
//!
//! **Canonical bytes.** The hash of a line covers the exact bytes on disk: the
//! line without its trailing `,"hash":"…"}` suffix, closed again with `}`.
//! So a verifier never re-serializes JSON (no canonicalization ambiguity): it
//! cuts the fixed-length suffix off the line, puts the `}` back and hashes.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use hoop_core::{PodIdentity, Protocol, SessionIdentity, StatementKind, Submission};

use crate::Rfc3339Stamper;

/// `"format"` in the header line.
pub const FORMAT_NAME: &str = "hoop-recording";
/// `"version"` in the header line. Bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// Domain separation for the chain seed, so a recording's chain cannot be
/// confused with any other SHA-256 use. The seed is
/// `SHA-256(CHAIN_DOMAIN ‖ session id)`.
pub const CHAIN_DOMAIN: &[u8] = b"hoop-recording/v1 chain\0";
/// Domain separation for the trailer MAC.
pub const MAC_DOMAIN: &[u8] = b"hoop-recording/v1 mac\0";

/// What precedes the 64 hex digits at the end of every line.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// What follows them.
const HASH_END: &[u8] = b"\"}";
/// Length of `,"hash":"<64 hex>"}`.
pub const HASH_SUFFIX_LEN: usize = HASH_KEY.len() + 64 + HASH_END.len();

/// A SHA-256 chain value (raw bytes; lines carry it as lowercase hex).
pub type ChainHash = [u8; 32];

/// The hash the header line chains from.
pub fn chain_seed(session_id: &str) -> ChainHash {
    let mut h = Sha256::new();
    h.update(CHAIN_DOMAIN);
    h.update(session_id.as_bytes());
    h.finalize().into()
}

/// `SHA-256(previous hash (32 raw bytes) ‖ canonical line bytes)`.
pub fn chain_hash(previous: &ChainHash, canonical: &[u8]) -> ChainHash {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(canonical);
    h.finalize().into()
}

/// The trailer MAC: `HMAC-SHA256(key, MAC_DOMAIN ‖ last_hash (64 hex) ‖ "\n" ‖
/// events (decimal) ‖ "\n" ‖ session id)`, as lowercase hex.
///
/// `last_hash` has a fixed length and `events` ends at the newline, so the
/// concatenation is unambiguous.
pub fn trailer_mac(key: &[u8], last_hash_hex: &str, events: u64, session_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(MAC_DOMAIN);
    mac.update(last_hash_hex.as_bytes());
    mac.update(b"\n");
    mac.update(events.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(session_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a trailer MAC in constant time.
pub fn trailer_mac_matches(
    key: &[u8],
    last_hash_hex: &str,
    events: u64,
    session_id: &str,
    mac_hex: &str,
) -> bool {
    let Ok(claimed) = hex::decode(mac_hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(MAC_DOMAIN);
    mac.update(last_hash_hex.as_bytes());
    mac.update(b"\n");
    mac.update(events.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(session_id.as_bytes());
    mac.verify_slice(&claimed).is_ok()
}

/// One line of a recording: the common fields, then the typed payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// 0 for the header, then 1, 2, … without gaps; the trailer is last.
    pub seq: u64,
    /// Nanoseconds since the session started (monotonic clock; replay paces by it).
    pub mono_ns: u64,
    /// Wall clock, RFC 3339, UTC.
    pub ts: String,
    /// `type` and the payload.
    #[serde(flatten)]
    pub body: Body,
}

/// The payload of a line, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// Line 0: what this file is, and the settings it was written with.
    Header(Header),
    /// Who the session is.
    SessionStart(SessionStart),
    /// A statement as the client sent it (literals already masked if policy says so).
    Statement(StatementEvent),
    /// The decision for the preceding statement.
    Verdict(VerdictEvent),
    /// A hold's state change.
    Hold(HoldEvent),
    /// How a statement ended (CommandComplete or ErrorResponse).
    Result(ResultEvent),
    /// Result rows, after masking (only with `rows: full`).
    Rows(RowsEvent),
    /// One CopyData message, after masking (only with `rows: full`).
    CopyData(CopyDataEvent),
    /// An error reported to the client.
    Error(ErrorEvent),
    /// A detector found values in a table column, which is masked as a
    /// column rule from then on.
    Promotion(PromotionEvent),
    /// Row recording stopped early in the current result.
    RowsLimit(RowsLimitEvent),
    /// The session ended.
    SessionEnd(SessionEndEvent),
    /// The last line: closes and (with a key) authenticates the chain.
    Trailer(Trailer),
}

impl Body {
    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Body::Header(_) => "header",
            Body::SessionStart(_) => "session_start",
            Body::Statement(_) => "statement",
            Body::Verdict(_) => "verdict",
            Body::Hold(_) => "hold",
            Body::Result(_) => "result",
            Body::Rows(_) => "rows",
            Body::CopyData(_) => "copy_data",
            Body::Error(_) => "error",
            Body::Promotion(_) => "promotion",
            Body::RowsLimit(_) => "rows_limit",
            Body::SessionEnd(_) => "session_end",
            Body::Trailer(_) => "trailer",
        }
    }
}

/// `type: header`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always `hoop-recording`.
    pub format: String,
    /// Always 1 for this layout.
    pub version: u32,
    /// The session id; also seeds the hash chain.
    pub session_id: String,
    /// The hoop version that wrote the file.
    pub writer: String,
    /// `recording.rows` at the time: `none | summary | full`.
    pub rows: RowsMode,
    /// `recording.max_row_bytes` at the time.
    pub max_row_bytes: u64,
}

/// `recording.rows`, as written into headers (the config type only deserializes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowsMode {
    /// No row data, no row counts.
    None,
    /// Row counts and command tags.
    Summary,
    /// Every row, after masking.
    Full,
}

impl From<hoop_config::RecordRows> for RowsMode {
    fn from(rows: hoop_config::RecordRows) -> Self {
        match rows {
            hoop_config::RecordRows::None => RowsMode::None,
            hoop_config::RecordRows::Summary => RowsMode::Summary,
            hoop_config::RecordRows::Full => RowsMode::Full,
        }
    }
}

/// `type: session_start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStart {
    /// The session's identity when the recording opened.
    pub identity: RecordedIdentity,
}

/// [`SessionIdentity`] as the recording stores it. A separate type so the
/// file format stays stable when the in-memory identity grows, and so readers
/// can deserialize it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedIdentity {
    /// Session id.
    pub id: String,
    /// The wire protocol (absent in recordings made before hoop knew more
    /// than one: those are PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The workload's cgroup path.
    pub workload: Option<String>,
    /// Client address as the proxy saw it.
    pub client: Option<String>,
    /// Where the client meant to connect.
    pub original_destination: Option<String>,
    /// Database user.
    pub user: Option<String>,
    /// Database name.
    pub database: Option<String>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// The server's id for the session: PostgreSQL's backend pid, MySQL's
    /// connection id. (The key keeps its first name, for old files.)
    pub backend_pid: Option<u32>,
    /// Whether the client leg was TLS.
    pub client_tls: bool,
    /// Whether the upstream leg was TLS.
    pub upstream_tls: bool,
    /// The role hoop logged in as on the workload's behalf (absent when
    /// the client authenticated itself, and in recordings made before
    /// credential injection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_role: Option<String>,
    /// The `credentials:` entry whose secret hoop injected (never the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The Kubernetes pod the session came from: namespace, name, UID,
    /// service account, node and labels (absent outside Kubernetes and in
    /// recordings made before hoop knew pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Box<PodIdentity>>,
}

impl From<&SessionIdentity> for RecordedIdentity {
    fn from(identity: &SessionIdentity) -> Self {
        Self {
            id: identity.id.clone(),
            protocol: Some(identity.protocol),
            workload: identity.workload.clone(),
            client: identity.client.map(|a| a.to_string()),
            original_destination: identity.original_destination.map(|a| a.to_string()),
            user: identity.user.clone(),
            database: identity.database.clone(),
            application_name: identity.application_name.clone(),
            backend_pid: identity.server_session_id,
            client_tls: identity.client_tls,
            upstream_tls: identity.upstream_tls,
            injected_role: identity.injected_role.clone(),
            credential: identity.credential.clone(),
            pod: identity.pod.as_deref().cloned().map(Box::new),
        }
    }
}

/// `type: statement`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementEvent {
    /// SQL text as the caller passed it (literal-masked when policy says so).
    /// Shared (`Arc`): a prepared statement's executions all record the text
    /// masked once at Parse, without copying it per execution.
    pub sql: Arc<str>,
    /// `simple | extended | function_call`.
    pub form: Submission,
    /// Statement kinds the classifier found (one per statement in a multi-statement Query).
    pub kinds: Arc<[StatementKind]>,
    /// Tables the statement touches, as the classifier names them.
    pub tables: Arc<[String]>,
}

/// `type: verdict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictEvent {
    /// `allow | deny | hold`.
    pub verdict: VerdictKind,
    /// The deciding rule, for deny and hold.
    pub rule: Option<String>,
    /// The message shown to the client, for deny and hold.
    pub message: Option<String>,
}

/// The three verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// Sent upstream.
    Allow,
    /// Answered with an error; never reached the server.
    Deny,
    /// Paused for an approver.
    Hold,
}

impl From<&hoop_core::Verdict> for VerdictEvent {
    fn from(verdict: &hoop_core::Verdict) -> Self {
        use hoop_core::Verdict;
        match verdict {
            Verdict::Allow => Self {
                verdict: VerdictKind::Allow,
                rule: None,
                message: None,
            },
            Verdict::Deny(d) => Self {
                verdict: VerdictKind::Deny,
                rule: Some(d.rule.clone()),
                message: Some(d.message.clone()),
            },
            Verdict::Hold(h) => Self {
                verdict: VerdictKind::Hold,
                rule: Some(h.rule.clone()),
                message: Some(h.message.clone()),
            },
        }
    }
}

/// `type: hold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldEvent {
    /// The hold's id (as `hoop holds list` shows it).
    pub hold_id: String,
    /// What happened to it.
    pub state: HoldState,
    /// Who decided (approved/denied), when someone did.
    pub decider: Option<String>,
    /// The decider's or the system's reason.
    pub reason: Option<String>,
}

/// The life of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// The statement was paused and the hold published.
    Created,
    /// An approver let it run.
    Approved,
    /// An approver refused it.
    Denied,
    /// Nobody decided in time; it was denied.
    Timeout,
    /// The client went away (or cancelled) before a decision.
    Withdrawn,
}

impl HoldState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Created => "created",
            HoldState::Approved => "approved",
            HoldState::Denied => "denied",
            HoldState::Timeout => "timeout",
            HoldState::Withdrawn => "withdrawn",
        }
    }
}

/// `type: result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultEvent {
    /// CommandComplete tag (`SELECT 5`, `UPDATE 2`), when there was one.
    pub tag: Option<String>,
    /// Rows returned or affected; absent with `rows: none`.
    pub rows: Option<u64>,
    /// SQLSTATE when the statement failed.
    pub sqlstate: Option<String>,
}

/// One recorded value: text when it is UTF-8, else `{"base64": "…"}`.
/// SQL NULL is JSON `null` (an absent `Cell`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cell {
    /// A UTF-8 value (text format, the common case).
    Text(String),
    /// Bytes that are not UTF-8 (binary format values).
    Binary {
        /// Standard base64 with padding.
        base64: String,
    },
}

impl Cell {
    /// Encodes bytes: text when valid UTF-8, base64 otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Cell {
        if let Ok(text) = std::str::from_utf8(bytes) {
            Cell::Text(text.to_owned())
        } else {
            use base64::Engine as _;
            Cell::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            }
        }
    }
}

/// `type: rows`: a batch of consecutive rows of one result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowsEvent {
    /// Rows, each an array of cells (`null` for SQL NULL).
    pub rows: Vec<Vec<Option<Cell>>>,
    /// Rows that were cut at `max_row_bytes` (index into `rows`). A cut row
    /// keeps its values in order up to the limit (the value crossing it cut
    /// short) and omits the rest, so it may have fewer cells than columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<TruncatedRow>,
}

/// A row cut at `max_row_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncatedRow {
    /// Index into the event's `rows`.
    pub row: u32,
    /// Total value bytes of the row before cutting.
    pub original_bytes: u64,
}

/// `type: copy_data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyDataEvent {
    /// `to_server` (COPY FROM STDIN) or `to_client` (COPY TO STDOUT).
    pub direction: CopyDirection,
    /// The chunk (after masking when it flows to the client).
    pub data: Cell,
    /// Set when the chunk was cut at `max_row_bytes`: its size before cutting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated_from_bytes: Option<u64>,
}

/// Which way a CopyData message flowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyDirection {
    /// Client to server (`COPY … FROM STDIN`).
    ToServer,
    /// Server to client (`COPY … TO STDOUT`).
    ToClient,
}

/// `type: error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    /// SQLSTATE.
    pub sqlstate: String,
    /// The message (masked by the caller where needed).
    pub message: String,
}

/// `type: promotion`: a detector rule found values in a table column, which
/// every session the rule applies to masks as a column rule of that rule
/// from then on (until the policy is reloaded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionEvent {
    /// The detector rule.
    pub rule: String,
    /// The column, `[schema.]table.column`.
    pub column: String,
}

/// `type: rows_limit`: written just before the `result` (or next non-row
/// event) of a result whose rows were not all recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowsLimitEvent {
    /// Why recording stopped.
    pub reason: RowsLimitReason,
    /// Rows (and copy chunks) of this result that were recorded before it stopped.
    pub recorded_rows: u64,
    /// Rows (and copy chunks) that were not recorded.
    pub dropped_rows: u64,
}

/// Why row recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowsLimitReason {
    /// The writer fell behind: its queue of row data was over its limit.
    Backpressure,
}

/// `type: session_end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEndEvent {
    /// Why the session ended (`client_closed`, `server_closed`, `recording_failed`, …).
    pub reason: String,
    /// Counters over the session.
    pub totals: SessionTotals,
}

/// Counters in `session_end`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTotals {
    /// `statement` events.
    pub statements: u64,
    /// Deny verdicts.
    pub denied: u64,
    /// Hold verdicts.
    pub held: u64,
    /// Errors reported.
    pub errors: u64,
    /// Rows (and copy chunks) recorded.
    pub rows_recorded: u64,
    /// Rows (and copy chunks) not recorded because of a limit.
    pub rows_dropped: u64,
}

/// `type: trailer`: the last line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trailer {
    /// Lines between header and trailer (so the trailer's `seq` is `events + 1`).
    pub events: u64,
    /// The `hash` of the line before the trailer.
    pub last_hash: String,
    /// [`trailer_mac`] as hex, or `null` when no key was configured.
    pub mac: Option<String>,
}

/// Appends `entry` as one line to `out`, chained from `previous`, and returns
/// the line's hash (the next line's `previous`).
pub fn append_line(out: &mut Vec<u8>, entry: &Entry, previous: &ChainHash) -> ChainHash {
    let body = serialize_body(&entry.body);
    append_serialized_line(out, entry.seq, entry.mono_ns, &entry.ts, &body, previous)
}

/// A body as JSON (`{"type":…}`), for [`append_serialized_line`]: a body
/// recorded many times (a prepared statement's executions) is serialized once.
pub fn serialize_body(body: &Body) -> Vec<u8> {
    // Serializing these types cannot fail: every map key is a string and no
    // Serialize impl returns an error.
    serde_json::to_vec(body).expect("recording entries always serialize")
}

/// The body of an `allow` verdict, as [`serialize_body`] writes it (a test
/// checks that they agree).
pub const ALLOW_VERDICT_BODY: &[u8] =
    b"{\"type\":\"verdict\",\"verdict\":\"allow\",\"rule\":null,\"message\":null}";

/// `{"type":"statement","sql":…,"form":…,"kinds":[…],"tables":[…]}` into
/// `out`: the bytes [`serialize_body`] writes for a [`StatementEvent`],
/// without serde (one line in three of a busy recording is a statement).
pub fn serialize_statement_body(event: &StatementEvent, out: &mut Vec<u8>) {
    serialize_statement_head(event, out);
    serialize_statement_tail(&event.kinds, &event.tables, out);
}

/// [`serialize_statement_body`], with the kinds and tables copied from
/// `tail` when they are the same `Arc`s as the statement before (a
/// statement judged from the same cached judgement): they are serialized
/// once, not per execution. `tail` keeps the `Arc`s it was serialized from,
/// so their addresses cannot be reused while it compares them.
pub(crate) fn serialize_statement_body_reusing(
    event: &StatementEvent,
    tail: &mut Option<StatementTail>,
    out: &mut Vec<u8>,
) {
    serialize_statement_head(event, out);
    serialize_statement_tail_reusing(&event.kinds, &event.tables, tail, out);
}

/// [`serialize_statement_body_reusing`] for a statement whose text the
/// writer holds as the bytes of a `str` (see [`serialize_statement_head_utf8`]).
pub(crate) fn serialize_statement_text_reusing(
    sql: &[u8],
    form: Submission,
    (kinds, tables): (&Arc<[StatementKind]>, &Arc<[String]>),
    tail: &mut Option<StatementTail>,
    out: &mut Vec<u8>,
) {
    serialize_statement_head_utf8(sql, form, out);
    serialize_statement_tail_reusing(kinds, tables, tail, out);
}

/// The kinds and tables after `"kinds":[`, from `tail` when it holds
/// these very `Arc`s, serialized (and kept in `tail`) otherwise.
fn serialize_statement_tail_reusing(
    kinds: &Arc<[StatementKind]>,
    tables: &Arc<[String]>,
    tail: &mut Option<StatementTail>,
    out: &mut Vec<u8>,
) {
    match tail {
        Some(t) if Arc::ptr_eq(&t.kinds, kinds) && Arc::ptr_eq(&t.tables, tables) => {
            out.extend_from_slice(&t.bytes);
        }
        _ => {
            let mut bytes = Vec::new();
            serialize_statement_tail(kinds, tables, &mut bytes);
            out.extend_from_slice(&bytes);
            *tail = Some(StatementTail {
                kinds: kinds.clone(),
                tables: tables.clone(),
                bytes,
            });
        }
    }
}

/// The serialized kinds and tables of a statement (everything after
/// `"kinds":[`), kept with the `Arc`s they were serialized from.
pub(crate) struct StatementTail {
    kinds: Arc<[StatementKind]>,
    tables: Arc<[String]>,
    bytes: Vec<u8>,
}

/// A statement body up to and including `"kinds":[`.
fn serialize_statement_head(event: &StatementEvent, out: &mut Vec<u8>) {
    serialize_statement_head_utf8(event.sql.as_bytes(), event.form, out);
}

/// [`serialize_statement_head`] for a text the writer holds as the bytes
/// of a `str` (a session's statement texts, copied into its queue).
fn serialize_statement_head_utf8(sql: &[u8], form: Submission, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"statement\",\"sql\":");
    json_string_utf8(out, sql);
    out.extend_from_slice(match form {
        Submission::Text => b",\"form\":\"simple\",\"kinds\":[".as_slice(),
        Submission::Prepared => b",\"form\":\"extended\",\"kinds\":[",
        Submission::FunctionCall => b",\"form\":\"function_call\",\"kinds\":[",
    });
}

fn serialize_statement_tail(kinds: &[StatementKind], tables: &[String], out: &mut Vec<u8>) {
    for (i, kind) in kinds.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, kind.as_str());
    }
    out.extend_from_slice(b"],\"tables\":[");
    for (i, table) in tables.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, table);
    }
    out.extend_from_slice(b"]}");
}

/// `{"type":"result","tag":…,"rows":…,"sqlstate":null}` into `out`: the
/// bytes [`serialize_body`] writes for a [`ResultEvent`] without an error,
/// without serde (two lines in three of a busy recording are results).
pub fn serialize_result_body(tag: &str, rows: Option<u64>, out: &mut Vec<u8>) {
    serialize_result_body_utf8(tag.as_bytes(), rows, out);
}

/// [`serialize_result_body`] for a tag the writer holds as the bytes of a
/// `str` (the queue's short tags), without checking them as UTF-8 again
/// unless they need escaping.
pub(crate) fn serialize_result_body_utf8(tag: &[u8], rows: Option<u64>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"result\",\"tag\":");
    json_string_utf8(out, tag);
    out.extend_from_slice(b",\"rows\":");
    match rows {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"sqlstate\":null}");
}

/// [`json_string`] for the bytes of a `str` (held as bytes by the writer's
/// queues), without checking them as UTF-8 again unless they need escaping.
fn json_string_utf8(out: &mut Vec<u8>, s: &[u8]) {
    if needs_escape(s) {
        // Bytes of a `str`: the lossy conversion never replaces anything.
        json_string(out, &String::from_utf8_lossy(s));
    } else {
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
    }
}

/// `s` as a JSON string, as serde_json writes it: copied as is when nothing
/// in it needs escaping (timestamps and tags never do).
fn json_string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("a string always serializes");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether `b` holds a byte serde_json escapes in a string (a control
/// character, `"`, `\\`) or DEL, which [`json_string`] leaves to serde.
/// Sixteen bytes at a time, written so that the compiler checks a chunk with
/// a few vector compares; a string's last partial chunk is checked as the
/// sixteen bytes that end it (overlapping the chunk before), a string shorter
/// than sixteen bytes padded with spaces. No per-byte loop: every line's
/// timestamp and most statement texts are checked.
fn needs_escape(b: &[u8]) -> bool {
    const CHUNK: usize = 16;
    // Three call sites, each a handful of vector instructions once inlined
    // (a call costs as much as the check).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn chunk_needs_escape(chunk: &[u8; CHUNK]) -> bool {
        chunk.iter().fold(0u8, |found, &b| {
            found
                | u8::from(b < 0x20)
                | u8::from(b == b'"')
                | u8::from(b == b'\\')
                | u8::from(b == 0x7f)
        }) != 0
    }
    if b.len() < CHUNK {
        let mut padded = [b' '; CHUNK];
        padded[..b.len()].copy_from_slice(b);
        return chunk_needs_escape(&padded);
    }
    let mut chunks = b.chunks_exact(CHUNK);
    for chunk in &mut chunks {
        if chunk_needs_escape(chunk.try_into().expect("a whole chunk")) {
            return true;
        }
    }
    !chunks.remainder().is_empty()
        && chunk_needs_escape(b[b.len() - CHUNK..].try_into().expect("a whole chunk"))
}

/// [`append_line`] with the body already serialized by [`serialize_body`].
/// The bytes are those of the [`Entry`] serialized whole (its `body` is
/// flattened into it), without serde's slow flattening.
pub fn append_serialized_line(
    out: &mut Vec<u8>,
    seq: u64,
    mono_ns: u64,
    ts: &str,
    body: &[u8],
    previous: &ChainHash,
) -> ChainHash {
    append_timed_line(out, seq, mono_ns, Time::Checked(ts), body, previous)
}

/// A line's `ts`, and whether it still needs the escape check.
enum Time<'a> {
    /// Any text: escaped as serde_json would.
    Checked(&'a str),
    /// An RFC 3339 time from the writer's own formatter: digits, `-`, `:`,
    /// `T`, `.` and `Z`, which JSON never escapes.
    Rfc3339(&'a str),
    /// Seconds and nanoseconds since the Unix epoch, formatted by the
    /// stamper straight into the line (as [`Time::Rfc3339`]'s text).
    SinceEpoch(&'a mut Rfc3339Stamper, (u64, u32)),
}

fn append_timed_line(
    out: &mut Vec<u8>,
    seq: u64,
    mono_ns: u64,
    time: Time<'_>,
    body: &[u8],
    previous: &ChainHash,
) -> ChainHash {
    let ts_len = match &time {
        Time::Checked(ts) | Time::Rfc3339(ts) => ts.len(),
        // A year of up to six digits with its sign, the fraction and `Z`.
        Time::SinceEpoch(..) => 40,
    };
    let start = out.len();
    // Room for the whole line at once: `{"seq":`, two numbers of up to 20
    // digits, the keys, the time (escaped, at most six bytes per byte), the
    // body and the hash suffix.
    out.reserve(64 + 6 * ts_len + body.len() + HASH_SUFFIX_LEN + 1);
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(n.format(seq).as_bytes());
    out.extend_from_slice(b",\"mono_ns\":");
    out.extend_from_slice(n.format(mono_ns).as_bytes());
    out.extend_from_slice(b",\"ts\":");
    match time {
        Time::Checked(ts) => json_string(out, ts),
        Time::Rfc3339(ts) => {
            debug_assert!(!needs_escape(ts.as_bytes()), "{ts}");
            out.push(b'"');
            out.extend_from_slice(ts.as_bytes());
            out.push(b'"');
        }
        Time::SinceEpoch(stamper, (secs, nanos)) => {
            out.push(b'"');
            stamper.write(secs, nanos, out);
            out.push(b'"');
        }
    }
    debug_assert_eq!(body.first(), Some(&b'{'));
    if body.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(body.get(1..).unwrap_or(b"}"));
    let hash = chain_hash(previous, &out[start..]);
    debug_assert_eq!(out.last(), Some(&b'}'));
    out.pop();
    out.extend_from_slice(HASH_KEY);
    let mut hex = [0u8; 64];
    hex::encode_to_slice(hash, &mut hex).expect("64 hex digits for 32 bytes");
    out.extend_from_slice(&hex);
    out.extend_from_slice(HASH_END);
    out.push(b'\n');
    hash
}

/// The chain state of a recording being written: the next `seq` and the
/// previous hash. Pure; the writer owns one per open file.
#[derive(Debug, Clone)]
pub struct ChainWriter {
    session_id: String,
    previous: ChainHash,
    next_seq: u64,
}

impl ChainWriter {
    /// A chain seeded for `session_id`; the first line appended must be the header.
    pub fn new(session_id: &str) -> Self {
        Self {
            session_id: session_id.to_owned(),
            previous: chain_seed(session_id),
            next_seq: 0,
        }
    }

    /// The `seq` the next line gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one line to `out`.
    pub fn append(&mut self, out: &mut Vec<u8>, mono_ns: u64, ts: &str, body: &Body) {
        self.append_serialized(out, mono_ns, ts, &serialize_body(body));
    }

    /// [`append`](Self::append) with the body already serialized by
    /// [`serialize_body`].
    pub fn append_serialized(&mut self, out: &mut Vec<u8>, mono_ns: u64, ts: &str, body: &[u8]) {
        self.previous =
            append_serialized_line(out, self.next_seq, mono_ns, ts, body, &self.previous);
        self.next_seq += 1;
    }

    /// [`append_serialized`](Self::append_serialized) for a `ts` the
    /// recorder formatted itself as RFC 3339 (`rfc3339_since_epoch_into`),
    /// copied without the escape check every other string gets.
    pub(crate) fn append_serialized_rfc3339(
        &mut self,
        out: &mut Vec<u8>,
        mono_ns: u64,
        ts: &str,
        body: &[u8],
    ) {
        self.previous = append_timed_line(
            out,
            self.next_seq,
            mono_ns,
            Time::Rfc3339(ts),
            body,
            &self.previous,
        );
        self.next_seq += 1;
    }

    /// [`append_serialized_rfc3339`](Self::append_serialized_rfc3339) for
    /// a time given as seconds and nanoseconds since the Unix epoch, which
    /// `stamper` formats straight into the line.
    pub(crate) fn append_serialized_since_epoch(
        &mut self,
        out: &mut Vec<u8>,
        mono_ns: u64,
        stamper: &mut Rfc3339Stamper,
        since_epoch: (u64, u32),
        body: &[u8],
    ) {
        self.previous = append_timed_line(
            out,
            self.next_seq,
            mono_ns,
            Time::SinceEpoch(stamper, since_epoch),
            body,
            &self.previous,
        );
        self.next_seq += 1;
    }

    /// Appends the trailer, with a MAC when `key` is given.
    pub fn append_trailer(
        &mut self,
        out: &mut Vec<u8>,
        mono_ns: u64,
        ts: &str,
        key: Option<&[u8]>,
    ) {
        let events = self.next_seq.saturating_sub(1);
        let last_hash = hex::encode(self.previous);
        let mac = key.map(|key| trailer_mac(key, &last_hash, events, &self.session_id));
        self.append(
            out,
            mono_ns,
            ts,
            &Body::Trailer(Trailer {
                events,
                last_hash,
                mac,
            }),
        );
    }
}

/// A line split into what its hash covers and the hash it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitLine {
    /// The canonical bytes: the line without the hash suffix, closed with `}`.
    pub canonical: Vec<u8>,
    /// The hash the line claims.
    pub claimed: ChainHash,
}

/// Why a line is not a well-formed recording line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    /// The line does not end with `,"hash":"<64 lowercase hex>"}`.
    #[error("line does not end with a \"hash\" field")]
    NoHashSuffix,
    /// The hash field is not 64 lowercase hex digits.
    #[error("the \"hash\" field is not 64 lowercase hex digits")]
    BadHashHex,
}

/// Splits one line (without its `\n`) into canonical bytes and claimed hash.
pub fn split_line(line: &[u8]) -> Result<SplitLine, LineError> {
    // `{` + at least `"seq":0` would be longer, but only the suffix matters here.
    if line.len() < HASH_SUFFIX_LEN + 1 {
        return Err(LineError::NoHashSuffix);
    }
    let (head, suffix) = line.split_at(line.len() - HASH_SUFFIX_LEN);
    let hex_part = suffix
        .strip_prefix(HASH_KEY)
        .and_then(|s| s.strip_suffix(HASH_END))
        .ok_or(LineError::NoHashSuffix)?;
    // Lowercase only, so a line has exactly one valid spelling of its hash.
    if !hex_part
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(LineError::BadHashHex);
    }
    let mut claimed = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut claimed).map_err(|_| LineError::BadHashHex)?;
    let mut canonical = Vec::with_capacity(head.len() + 1);
    canonical.extend_from_slice(head);
    canonical.push(b'}');
    Ok(SplitLine { canonical, claimed })
}

/// Cuts a row's values to at most `max_bytes` value bytes in total.
///
/// Returns the kept values and, when anything was cut, the original total.
/// Values are kept in order; the value crossing the limit is cut (at a UTF-8
/// boundary when it is text) and later values are omitted.
pub fn cut_row(columns: &[Option<&[u8]>], max_bytes: usize) -> (Vec<Option<Vec<u8>>>, Option<u64>) {
    let total: usize = columns.iter().map(|c| c.map_or(0, <[u8]>::len)).sum();
    if total <= max_bytes {
        return (
            columns.iter().map(|c| c.map(<[u8]>::to_vec)).collect(),
            None,
        );
    }
    let mut budget = max_bytes;
    let mut kept = Vec::with_capacity(columns.len());
    for column in columns {
        match column {
            None => kept.push(None),
            Some(value) if value.len() <= budget => {
                budget -= value.len();
                kept.push(Some(value.to_vec()));
            }
            Some(value) => {
                kept.push(Some(cut_value(value, budget).to_vec()));
                break;
            }
        }
    }
    (kept, Some(total as u64))
}

/// The longest prefix of `value` of at most `max_bytes` that does not split a
/// UTF-8 character (when `value` is UTF-8; otherwise a plain byte prefix).
pub fn cut_value(value: &[u8], max_bytes: usize) -> &[u8] {
    if value.len() <= max_bytes {
        return value;
    }
    if std::str::from_utf8(value).is_ok() {
        let mut end = max_bytes;
        // A continuation byte is 0b10xx_xxxx; back up to a char start.
        while end > 0 && (value[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        &value[..end]
    } else {
        &value[..max_bytes]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_at_a_time_escape_check_agrees_with_a_byte_loop() {
        let naive = |b: &[u8]| {
            b.iter()
                .any(|&b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
        };
        // Every byte value at every position (word and tail paths), in
        // plain text and next to non-ASCII bytes and borrows' neighbours.
        for base in [
            &b"selectabalancefromxy"[..],
            &[0x80u8; 20],
            &[0x20u8; 20],
            &[0xffu8; 20],
        ] {
            for value in 0..=255u8 {
                for at in 0..base.len() {
                    let mut text = base.to_vec();
                    text[at] = value;
                    for start in 0..text.len() {
                        assert_eq!(
                            needs_escape(&text[start..]),
                            naive(&text[start..]),
                            "byte {value:#x} at {at} from {start} in {base:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_chunked_escape_check_agrees_with_a_byte_loop_on_long_texts() {
        let naive = |b: &[u8]| {
            b.iter()
                .any(|&b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
        };
        let base = b"SELECT abalance FROM pgbench_accounts WHERE aid = 1";
        for value in [0u8, 0x1f, b'"', b'\\', 0x7f, b' ', b'a', 0x80, 0xff] {
            for at in 0..base.len() {
                let mut text = base.to_vec();
                text[at] = value;
                for start in 0..text.len() {
                    for end in start..=text.len() {
                        assert_eq!(
                            needs_escape(&text[start..end]),
                            naive(&text[start..end]),
                            "byte {value:#x} at {at} in {start}..{end}"
                        );
                    }
                }
            }
        }
    }

    fn entry(seq: u64, body: Body) -> Entry {
        Entry {
            seq,
            mono_ns: seq * 1000,
            ts: "2025-01-01T00:00:00Z".into(),
            body,
        }
    }

    #[test]
    fn line_hash_covers_the_bytes_on_disk() {
        let mut out = Vec::new();
        let seed = chain_seed("s-1");
        let e = entry(
            1,
            Body::Error(ErrorEvent {
                sqlstate: "42501".into(),
                message: "no".into(),
            }),
        );
        let hash = append_line(&mut out, &e, &seed);
        assert_eq!(out.last(), Some(&b'\n'));
        let line = &out[..out.len() - 1];
        let split = split_line(line).expect("well-formed");
        assert_eq!(split.claimed, hash);
        assert_eq!(chain_hash(&seed, &split.canonical), hash);
        // The canonical bytes are exactly what serde_json wrote.
        assert_eq!(split.canonical, serde_json::to_vec(&e).expect("serializes"));
        let text = std::str::from_utf8(line).expect("utf8");
        assert!(
            text.starts_with(
                r#"{"seq":1,"mono_ns":1000,"ts":"2025-01-01T00:00:00Z","type":"error","#
            ),
            "{text}"
        );
        assert!(text.ends_with(&format!(r#","hash":"{}"}}"#, hex::encode(hash))));
        let parsed: Entry = serde_json::from_slice(line).expect("parses back");
        assert_eq!(parsed, e);
    }

    #[test]
    fn serialized_lines_are_the_entry_serialized_whole() {
        let bodies = [
            Body::Header(Header {
                format: FORMAT_NAME.into(),
                version: FORMAT_VERSION,
                session_id: "s \"1\"".into(),
                writer: "hoop".into(),
                rows: RowsMode::Full,
                max_row_bytes: 7,
            }),
            Body::Statement(StatementEvent {
                sql: "SELECT '\"é\n\t\u{1}' FROM t -- \\".into(),
                form: Submission::Prepared,
                kinds: Arc::from([StatementKind::Select]),
                tables: Arc::from(["t".to_owned()]),
            }),
            Body::Result(ResultEvent {
                tag: None,
                rows: None,
                sqlstate: Some("42P01".into()),
            }),
            Body::SessionEnd(SessionEndEvent {
                reason: "client_closed".into(),
                totals: SessionTotals::default(),
            }),
            Body::Trailer(Trailer {
                events: 3,
                last_hash: "ab".into(),
                mac: None,
            }),
        ];
        let mut previous = chain_seed("s");
        for (seq, body) in bodies.into_iter().enumerate() {
            let mut e = entry(seq as u64, body);
            e.ts = "2025-01-01T00:00:00.5Z\u{7f}\"".into();
            let mut out = Vec::new();
            previous = append_line(&mut out, &e, &previous);
            let split = split_line(&out[..out.len() - 1]).expect("well-formed");
            assert_eq!(
                String::from_utf8(split.canonical).expect("utf8"),
                serde_json::to_string(&e).expect("serializes"),
            );
            assert_eq!(split.claimed, previous);
        }
    }

    #[test]
    fn the_allow_verdict_written_by_hand_is_what_serde_writes() {
        let body = Body::Verdict(VerdictEvent {
            verdict: VerdictKind::Allow,
            rule: None,
            message: None,
        });
        assert_eq!(
            String::from_utf8(ALLOW_VERDICT_BODY.to_vec()).expect("utf8"),
            String::from_utf8(serialize_body(&body)).expect("utf8"),
        );
    }

    #[test]
    fn statements_serialized_by_hand_are_what_serde_writes() {
        let all_kinds: Vec<StatementKind> = [
            "select", "insert", "update", "delete", "merge", "copy", "drop", "truncate",
        ]
        .iter()
        .filter_map(|k| serde_json::from_value(serde_json::json!(k)).ok())
        .collect();
        assert!(all_kinds.len() >= 6, "{all_kinds:?}");
        for (sql, form, kinds, tables) in [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 5",
                Submission::Text,
                vec![StatementKind::Select],
                vec!["pgbench_accounts".to_owned()],
            ),
            ("", Submission::Prepared, Vec::new(), Vec::new()),
            (
                "SELECT '[REDACTED:literal]', E'\\x', \"q\"\n\t\u{7f}é\u{1}",
                Submission::FunctionCall,
                all_kinds.clone(),
                vec!["s.\"odd\"".to_owned(), "t\n".to_owned()],
            ),
        ] {
            let event = StatementEvent {
                sql: sql.into(),
                form,
                kinds: kinds.into(),
                tables: tables.into(),
            };
            let mut by_hand = Vec::new();
            serialize_statement_body(&event, &mut by_hand);
            assert_eq!(
                String::from_utf8(by_hand).expect("utf8"),
                String::from_utf8(serialize_body(&Body::Statement(event))).expect("utf8"),
            );
        }
    }

    #[test]
    fn statements_reusing_their_tail_are_what_serde_writes() {
        let kinds: Arc<[StatementKind]> = vec![StatementKind::Select].into();
        let tables: Arc<[String]> = vec!["pgbench_accounts".to_owned()].into();
        // Equal contents in other `Arc`s, then other contents.
        let same_kinds: Arc<[StatementKind]> = vec![StatementKind::Select].into();
        let other_tables: Arc<[String]> = vec!["t\n".to_owned(), "u".to_owned()].into();
        let none: Arc<[String]> = Vec::new().into();
        let (mut tail, mut text_tail) = (None, None);
        for (sql, kinds, tables) in [
            ("SELECT 1", &kinds, &tables),
            ("SELECT '\"\\é\u{1}\u{7f}'\n", &kinds, &tables),
            ("SELECT 2", &kinds, &tables),
            ("SELECT 3", &same_kinds, &tables),
            ("SELECT 4", &same_kinds, &other_tables),
            ("SELECT 5", &kinds, &other_tables),
            ("SELECT 6", &kinds, &none),
            ("SELECT 7", &kinds, &none),
            ("SELECT 8", &kinds, &tables),
        ] {
            let event = StatementEvent {
                sql: sql.into(),
                form: Submission::Text,
                kinds: kinds.clone(),
                tables: tables.clone(),
            };
            let mut reused = Vec::new();
            serialize_statement_body_reusing(&event, &mut tail, &mut reused);
            let mut from_text = Vec::new();
            serialize_statement_text_reusing(
                sql.as_bytes(),
                event.form,
                (kinds, tables),
                &mut text_tail,
                &mut from_text,
            );
            let serde = String::from_utf8(serialize_body(&Body::Statement(event))).expect("utf8");
            assert_eq!(String::from_utf8(reused).expect("utf8"), serde, "{sql}");
            assert_eq!(String::from_utf8(from_text).expect("utf8"), serde, "{sql}");
        }
    }

    #[test]
    fn results_serialized_by_hand_are_what_serde_writes() {
        for (tag, rows) in [
            ("SELECT 1", Some(1)),
            ("INSERT 0 18446744073709551615", Some(u64::MAX)),
            ("", None),
            ("odd \"tag\"\n\u{7f}é", Some(0)),
        ] {
            let mut by_hand = Vec::new();
            serialize_result_body(tag, rows, &mut by_hand);
            let mut from_bytes = Vec::new();
            serialize_result_body_utf8(tag.as_bytes(), rows, &mut from_bytes);
            assert_eq!(from_bytes, by_hand);
            let body = Body::Result(ResultEvent {
                tag: Some(tag.into()),
                rows,
                sqlstate: None,
            });
            assert_eq!(
                String::from_utf8(by_hand).expect("utf8"),
                String::from_utf8(serialize_body(&body)).expect("utf8"),
            );
        }
    }

    #[test]
    fn split_line_rejects_bad_suffixes() {
        assert_eq!(split_line(b"{}"), Err(LineError::NoHashSuffix));
        let upper = format!(r#"{{"seq":0,"hash":"{}"}}"#, "A".repeat(64));
        assert_eq!(split_line(upper.as_bytes()), Err(LineError::BadHashHex));
    }

    #[test]
    fn cells_are_text_or_base64_and_null_is_null() {
        let rows = RowsEvent {
            rows: vec![vec![
                Some(Cell::from_bytes(b"ab")),
                None,
                Some(Cell::from_bytes(&[0xff, 0x00])),
            ]],
            truncated: vec![],
        };
        let json = serde_json::to_string(&rows).expect("serializes");
        assert_eq!(json, r#"{"rows":[["ab",null,{"base64":"/wA="}]]}"#);
        assert_eq!(
            serde_json::from_str::<RowsEvent>(&json).expect("parses"),
            rows
        );
    }

    #[test]
    fn rows_are_cut_at_the_limit_on_char_boundaries() {
        let a: &[u8] = b"abc";
        let b = "é€x".as_bytes(); // 2 + 3 + 1 bytes
        let (kept, original) = cut_row(&[Some(a), None, Some(b), Some(b"tail")], 7);
        assert_eq!(original, Some(3 + 6 + 4));
        // 3 bytes of "abc", then 4 bytes left: "é" (2) fits, "€" (3) would not.
        assert_eq!(
            kept,
            vec![Some(b"abc".to_vec()), None, Some("é".as_bytes().to_vec())]
        );
        let (kept, original) = cut_row(&[Some(a)], 3);
        assert_eq!((kept.len(), original), (1, None));
    }

    #[test]
    fn mac_binds_hash_count_and_session() {
        let mac = trailer_mac(b"k", &"0".repeat(64), 3, "s-1");
        assert!(trailer_mac_matches(b"k", &"0".repeat(64), 3, "s-1", &mac));
        assert!(!trailer_mac_matches(b"k", &"0".repeat(64), 4, "s-1", &mac));
        assert!(!trailer_mac_matches(b"k", &"0".repeat(64), 3, "s-2", &mac));
        assert!(!trailer_mac_matches(
            b"other",
            &"0".repeat(64),
            3,
            "s-1",
            &mac
        ));
    }
}
