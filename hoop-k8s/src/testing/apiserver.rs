//! A Kubernetes API server stand-in: pods and namespaces over the real list
//! and watch HTTP+JSON protocol, driven by the test.
//!
//! What it speaks, as kube-rs's watcher uses it:
//! - `GET /api/v1/pods?fieldSelector=spec.nodeName%3D<node>&limit=…` →
//!   a `PodList` with `metadata.resourceVersion`;
//! - `GET /api/v1/pods?watch=true&resourceVersion=<rv>&…` → a chunked
//!   stream of `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}`
//!   lines: the history after `<rv>`, then live changes, bookmarks every
//!   half second, closed after `timeoutSeconds`;
//! - the same for `/api/v1/namespaces`, where `Accept: …;as=PartialObjectMetadataList…`
//!   (metadata-only) gets a `PartialObjectMetadataList` of
//!   `PartialObjectMetadata` items and metadata-only watch events;
//! - a watch from a resource version older than the kept history gets an
//!   `ERROR` event with a 410 `Expired` status, as a real server does after
//!   compaction, and the client re-lists.
//!
//! - custom resources `holdrequests.hoop.dev/v1` under
//!   `/apis/hoop.dev/v1/namespaces/<ns>/holdrequests`: create (`POST`,
//!   409 `AlreadyExists`), get, delete, list and watch (with a
//!   `labelSelector` of `key=value` terms), and `PUT …/<name>/status`,
//!   which replaces only the status and answers 409 `Conflict` when the
//!   body's `metadata.resourceVersion` is not the object's current one
//!   (optimistic concurrency, as a real server does); see [`holds`].
//!
//! The test drives it: add, modify and delete objects, make the server
//! unreachable (the port refuses connections and live watches are cut) and
//! reachable again, expire the history, or inject a malformed watch event.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{Request, Response, StatusCode, body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Which collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/api/v1/pods`.
    Pods,
    /// `/api/v1/namespaces`.
    Namespaces,
    /// `/apis/hoop.dev/v1/namespaces/<ns>/holdrequests`.
    HoldRequests,
}

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    event: &'static str,
    object: Value,
}

struct Watch {
    kind: Kind,
    node: Option<String>,
    metadata_only: bool,
    /// Custom resources: the namespace watched.
    namespace: Option<String>,
    /// Custom resources: `key=value` label terms, all required.
    labels: Vec<(String, String)>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Pods by (namespace, name).
    pods: BTreeMap<(String, String), Value>,
    namespaces: BTreeMap<String, Value>,
    history: Vec<Change>,
    /// Watches from a resource version below this get 410 Gone.
    oldest_rv: u64,
    watches: Vec<Watch>,
    requests: Vec<String>,
    /// Events created through `events.k8s.io/v1`.
    events: Vec<Value>,
    /// `HoldRequest`s by (namespace, name).
    holds: BTreeMap<(String, String), Value>,
    /// Status writes refused with 409 for a stale `resourceVersion`.
    conflicts: u64,
    /// Whether `HoldRequest` creation is refused (503), to test fail-closed.
    refuse_hold_creation: bool,
}

struct Shared {
    state: Mutex<State>,
    addr: SocketAddr,
    /// Accept loop and connections, aborted to make the server unreachable.
    tasks: Mutex<JoinSet<()>>,
}

/// The running stand-in. Dropping it stops it.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    bookmarks: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.bookmarks.abort();
        lock(&self.shared.tasks).abort_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeApiServer {
    /// Starts serving on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1,
                ..State::default()
            }),
            addr,
            tasks: Mutex::new(JoinSet::new()),
        });
        spawn_accept_loop(&shared, listener);
        let weak = Arc::downgrade(&shared);
        let bookmarks = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                let mut state = lock(&shared.state);
                let rv = state.rv.to_string();
                state.watches.retain(|w| {
                    let (api_version, kind) = match (w.kind, w.metadata_only) {
                        (_, true) => ("meta.k8s.io/v1", "PartialObjectMetadata"),
                        (Kind::Pods, false) => ("v1", "Pod"),
                        (Kind::Namespaces, false) => ("v1", "Namespace"),
                        (Kind::HoldRequests, false) => ("hoop.dev/v1", "HoldRequest"),
                    };
                    let line = json!({"type": "BOOKMARK", "object": {
                        "apiVersion": api_version, "kind": kind,
                        "metadata": {"resourceVersion": rv}}});
                    w.tx.send(line_bytes(&line)).is_ok()
                });
            }
        });
        Ok(Self { shared, bookmarks })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Writes a kubeconfig pointing at this server into `dir` and returns
    /// its path (for `KUBECONFIG`).
    pub fn write_kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n",
            self.url()
        );
        std::fs::write(&path, yaml)?;
        Ok(path)
    }

    /// A kube client for this server, without going through `KUBECONFIG`.
    pub fn client(&self) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
        let url: hyper::Uri = self.url().parse()?;
        Ok(kube::Client::try_from(kube::Config::new(url))?)
    }

    /// Every request line seen (`GET /api/v1/pods?…`, with ` [metadata]`
    /// appended when the client asked for the metadata-only form), oldest
    /// first.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.state).requests.clone()
    }

    /// Events created so far (`events.k8s.io/v1` objects), oldest first.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared.state).events.clone()
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.state).rv
    }

    /// Creates or replaces a pod (any JSON: a malformed one is served as
    /// is). Its `metadata.resourceVersion` is set.
    pub fn apply_pod(&self, mut pod: Value) {
        let key = (
            str_at(&pod, "/metadata/namespace"),
            str_at(&pod, "/metadata/name"),
        );
        let mut state = lock(&self.shared.state);
        state.rv += 1;
        set_rv(&mut pod, state.rv);
        let event = if state.pods.insert(key, pod.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        publish(&mut state, Kind::Pods, event, pod);
    }

    /// Deletes a pod; `false` if there was none.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> bool {
        let mut state = lock(&self.shared.state);
        let Some(mut pod) = state.pods.remove(&(namespace.to_owned(), name.to_owned())) else {
            return false;
        };
        state.rv += 1;
        set_rv(&mut pod, state.rv);
        publish(&mut state, Kind::Pods, "DELETED", pod);
        true
    }

    /// Creates or replaces a namespace.
    pub fn apply_namespace(&self, mut ns: Value) {
        let name = str_at(&ns, "/metadata/name");
        let mut state = lock(&self.shared.state);
        state.rv += 1;
        set_rv(&mut ns, state.rv);
        let event = if state.namespaces.insert(name, ns.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        publish(&mut state, Kind::Namespaces, event, ns);
    }

    /// Deletes a namespace; `false` if there was none.
    pub fn delete_namespace(&self, name: &str) -> bool {
        let mut state = lock(&self.shared.state);
        let Some(mut ns) = state.namespaces.remove(name) else {
            return false;
        };
        state.rv += 1;
        set_rv(&mut ns, state.rv);
        publish(&mut state, Kind::Namespaces, "DELETED", ns);
        true
    }

    /// Sends `line` as is (plus a newline) to every live watch of `kind`:
    /// a malformed event, for instance.
    pub fn inject_raw_event(&self, kind: Kind, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        let bytes = Bytes::from(bytes);
        lock(&self.shared.state)
            .watches
            .retain(|w| w.kind != kind || w.tx.send(bytes.clone()).is_ok());
    }

    /// Number of live watches of `kind`.
    pub fn watch_count(&self, kind: Kind) -> usize {
        let mut state = lock(&self.shared.state);
        state.watches.retain(|w| !w.tx.is_closed());
        state.watches.iter().filter(|w| w.kind == kind).count()
    }

    /// Forgets the change history and cuts live watches: every client's
    /// resource version is now too old, so resuming gets 410 Gone and the
    /// client must re-list (what compaction does to a client that fell
    /// behind).
    pub fn expire_history(&self) {
        let mut state = lock(&self.shared.state);
        state.rv += 1;
        state.history.clear();
        state.oldest_rv = state.rv;
        state.watches.clear();
    }

    /// Unreachable (`false`): the port stops accepting and live watches are
    /// cut. Reachable (`true`): serving again on the same port.
    pub async fn set_reachable(&self, reachable: bool) -> std::io::Result<()> {
        if reachable {
            let listener = bind_again(self.shared.addr).await?;
            spawn_accept_loop(&self.shared, listener);
        } else {
            lock(&self.shared.tasks).abort_all();
            lock(&self.shared.state).watches.clear();
        }
        Ok(())
    }
}

/// Binds `addr` again, retrying briefly while the old socket goes away.
async fn bind_again(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn line_bytes(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn node_of(pod: &Value) -> String {
    str_at(pod, "/spec/nodeName")
}

/// The metadata-only view of an object.
fn partial(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn event_line(change: &Change, metadata_only: bool) -> Bytes {
    let object = if metadata_only {
        partial(&change.object)
    } else {
        change.object.clone()
    };
    line_bytes(&json!({"type": change.event, "object": object}))
}

fn watch_wants(w: &Watch, change: &Change) -> bool {
    w.kind == change.kind
        && w.node
            .as_ref()
            .is_none_or(|n| change.kind != Kind::Pods || node_of(&change.object) == *n)
        && w.namespace
            .as_ref()
            .is_none_or(|ns| str_at(&change.object, "/metadata/namespace") == *ns)
        && holds::labels_match(&w.labels, &change.object)
}

fn publish(state: &mut State, kind: Kind, event: &'static str, object: Value) {
    let change = Change {
        rv: state.rv,
        kind,
        event,
        object,
    };
    state.watches.retain(|w| {
        !watch_wants(w, &change) || w.tx.send(event_line(&change, w.metadata_only)).is_ok()
    });
    state.history.push(change);
}

fn spawn_accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    let weak = Arc::downgrade(shared);
    lock(&shared.tasks).spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Some(shared) = weak.upgrade() else { return };
            let conn_shared = shared.clone();
            lock(&shared.tasks).spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let shared = conn_shared.clone();
                    async move {
                        if req.uri().path().starts_with(holds::PREFIX) {
                            return Ok::<_, Infallible>(holds::handle(&shared, req).await);
                        }
                        if req.method() == hyper::Method::POST {
                            return Ok::<_, Infallible>(create_event(&shared, req).await);
                        }
                        Ok::<_, Infallible>(handle(&shared, &req))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// `POST /apis/events.k8s.io/v1/namespaces/<ns>/events`: stores the event.
async fn create_event(shared: &Shared, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    lock(&shared.state).requests.push(format!("POST {path}"));
    let namespace = path
        .strip_prefix("/apis/events.k8s.io/v1/namespaces/")
        .and_then(|rest| rest.strip_suffix("/events"));
    let Some(namespace) = namespace.map(str::to_owned) else {
        return full(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                &format!("the stand-in accepts no POST to {path}"),
            ),
        );
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return full(
                StatusCode::BAD_REQUEST,
                &status(400, "BadRequest", &e.to_string()),
            );
        }
    };
    let mut event: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return full(
                StatusCode::BAD_REQUEST,
                &status(400, "BadRequest", &e.to_string()),
            );
        }
    };
    if str_at(&event, "/metadata/namespace") != namespace {
        return full(
            StatusCode::BAD_REQUEST,
            &status(
                400,
                "BadRequest",
                "metadata.namespace does not match the path",
            ),
        );
    }
    let mut state = lock(&shared.state);
    state.rv += 1;
    set_rv(&mut event, state.rv);
    state.events.push(event.clone());
    full(StatusCode::CREATED, &event)
}

fn full(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn handle<B>(shared: &Shared, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let params = query_params(req.uri().query().unwrap_or_default());
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    lock(&shared.state).requests.push(format!(
        "{} {}{}",
        req.method(),
        req.uri(),
        if metadata_only { " [metadata]" } else { "" }
    ));
    let kind = match path.as_str() {
        "/api/v1/pods" => Kind::Pods,
        "/api/v1/namespaces" => Kind::Namespaces,
        _ => {
            return full(
                StatusCode::NOT_FOUND,
                &status(404, "NotFound", &format!("the stand-in serves no {path}")),
            );
        }
    };
    let node = match params.get("fieldSelector").map(String::as_str) {
        None | Some("") => None,
        Some(sel) => match (kind, sel.strip_prefix("spec.nodeName=")) {
            (Kind::Pods, Some(node)) => Some(node.to_owned()),
            _ => {
                return full(
                    StatusCode::BAD_REQUEST,
                    &status(
                        400,
                        "BadRequest",
                        &format!("unsupported field selector {sel:?}"),
                    ),
                );
            }
        },
    };
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        watch(shared, kind, node, metadata_only, &params)
    } else {
        list(shared, kind, node.as_deref(), metadata_only)
    }
}

fn list(shared: &Shared, kind: Kind, node: Option<&str>, metadata_only: bool) -> Response<Body> {
    let state = lock(&shared.state);
    let objects: Vec<Value> = match kind {
        Kind::Pods => state
            .pods
            .values()
            .filter(|p| node.is_none_or(|n| node_of(p) == n))
            .cloned()
            .collect(),
        Kind::Namespaces => state.namespaces.values().cloned().collect(),
        Kind::HoldRequests => Vec::new(),
    };
    let metadata = json!({"resourceVersion": state.rv.to_string()});
    let body = if metadata_only {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
               "metadata": metadata, "items": objects.iter().map(partial).collect::<Vec<_>>()})
    } else {
        let list_kind = match kind {
            Kind::Pods => "PodList",
            Kind::Namespaces => "NamespaceList",
            Kind::HoldRequests => "HoldRequestList",
        };
        json!({"apiVersion": "v1", "kind": list_kind, "metadata": metadata, "items": objects})
    };
    full(StatusCode::OK, &body)
}

fn watch(
    shared: &Shared,
    kind: Kind,
    node: Option<String>,
    metadata_only: bool,
    params: &BTreeMap<String, String>,
) -> Response<Body> {
    watch_filtered(
        shared,
        kind,
        node,
        metadata_only,
        (None, Vec::new()),
        params,
    )
}

/// A watch of `kind`; `scope` narrows custom resources to a namespace and
/// label terms.
fn watch_filtered(
    shared: &Shared,
    kind: Kind,
    node: Option<String>,
    metadata_only: bool,
    scope: (Option<String>, Vec<(String, String)>),
    params: &BTreeMap<String, String>,
) -> Response<Body> {
    let (namespace, labels) = scope;
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    {
        let mut state = lock(&shared.state);
        if from < state.oldest_rv {
            let gone = json!({"type": "ERROR", "object": status(
                410, "Expired",
                &format!("too old resource version: {from} ({})", state.oldest_rv))});
            let _ = tx.send(line_bytes(&gone));
            drop(tx);
        } else {
            let watch = Watch {
                kind,
                node,
                metadata_only,
                namespace,
                labels,
                tx,
            };
            for change in state.history.iter().filter(|c| c.rv > from) {
                if watch_wants(&watch, change) {
                    let _ = watch.tx.send(event_line(change, metadata_only));
                }
            }
            state.watches.push(watch);
        }
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let stream = futures::stream::unfold((rx, deadline), |(mut rx, deadline)| async move {
        let next = match deadline {
            Some(at) => tokio::time::timeout_at(at, rx.recv()).await.ok().flatten(),
            None => rx.recv().await,
        };
        next.map(|b| (Ok::<_, Infallible>(Frame::data(b)), (rx, deadline)))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

mod holds;

/// Builders for the objects tests serve.
pub mod objects {
    use serde_json::{Value, json};

    /// A running pod on `node` with the given UID, annotations and labels.
    pub fn pod(
        namespace: &str,
        name: &str,
        uid: &str,
        node: &str,
        annotations: &[(&str, &str)],
        labels: &[(&str, &str)],
    ) -> Value {
        let map = |kv: &[(&str, &str)]| -> Value {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid,
                         "annotations": map(annotations), "labels": map(labels)},
            "spec": {"nodeName": node, "serviceAccountName": format!("{name}-sa"),
                     "containers": [{"name": "app", "image": "app:1"}]},
            "status": {"phase": "Running", "qosClass": "Burstable"}
        })
    }

    /// A namespace with the given labels and annotations.
    pub fn namespace(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Value {
        let map = |kv: &[(&str, &str)]| -> Value {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": map(labels), "annotations": map(annotations)}
        })
    }
}
