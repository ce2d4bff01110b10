//! The stand-in's custom resources: `holdrequests.hoop.dev/v1`, as the API
//! server serves a CRD with a status subresource.
//!
//! - `POST …/holdrequests`: create (409 `AlreadyExists` for a taken name);
//!   `status` in the body is dropped, as a real server does for a resource
//!   with a status subresource (hoop reads an absent status as pending).
//! - `GET …/holdrequests[?labelSelector=k=v,…][&watch=true]`: list / watch.
//! - `GET|DELETE …/holdrequests/<name>`.
//! - `PUT …/holdrequests/<name>/status`: replaces the status only; 409
//!   `Conflict` unless `metadata.resourceVersion` is the current one.

use http_body_util::BodyExt as _;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{
    Body, FakeApiServer, Kind, Shared, full, lock, publish, query_params, set_rv, status, str_at,
    watch_filtered,
};

/// Every path served here starts with this.
pub(super) const PREFIX: &str = "/apis/hoop.dev/v1/namespaces/";

/// Whether `object`'s labels carry every `key=value` term.
pub(super) fn labels_match(terms: &[(String, String)], object: &Value) -> bool {
    terms.iter().all(|(k, v)| {
        object
            .pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            == Some(v.as_str())
    })
}

fn parse_selector(selector: &str) -> Result<Vec<(String, String)>, String> {
    selector
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|term| {
            term.split_once('=')
                .map(|(k, v)| {
                    (
                        k.trim_end_matches('=').to_owned(),
                        v.trim_start_matches('=').to_owned(),
                    )
                })
                .filter(|(k, _)| !k.contains('!'))
                .ok_or_else(|| format!("unsupported label selector term {term:?}"))
        })
        .collect()
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status(code, reason, message),
    )
}

pub(super) async fn handle(shared: &Shared, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    lock(&shared.state).requests.push(format!("{method} {uri}"));
    let rest = uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').collect();
    let (namespace, name, subresource) = match parts.as_slice() {
        [ns, "holdrequests"] => ((*ns).to_owned(), None, None),
        [ns, "holdrequests", name] => ((*ns).to_owned(), Some((*name).to_owned()), None),
        [ns, "holdrequests", name, "status"] => {
            ((*ns).to_owned(), Some((*name).to_owned()), Some("status"))
        }
        _ => {
            return error(
                404,
                "NotFound",
                &format!("the stand-in serves no {}", uri.path()),
            );
        }
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(400, "BadRequest", &e.to_string()),
    };
    let parsed = || -> Result<Value, Box<Response<Body>>> {
        serde_json::from_slice(&body)
            .map_err(|e| Box::new(error(400, "BadRequest", &e.to_string())))
    };
    match (method, name, subresource) {
        (Method::GET, None, None) => {
            let params = query_params(uri.query().unwrap_or_default());
            let labels = match parse_selector(params.get("labelSelector").map_or("", |s| s)) {
                Ok(l) => l,
                Err(e) => return error(400, "BadRequest", &e),
            };
            if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch_filtered(
                    shared,
                    Kind::HoldRequests,
                    None,
                    false,
                    (Some(namespace), labels),
                    &params,
                );
            }
            let state = lock(&shared.state);
            let items: Vec<Value> = state
                .holds
                .iter()
                .filter(|((ns, _), o)| *ns == namespace && labels_match(&labels, o))
                .map(|(_, o)| o.clone())
                .collect();
            full(
                StatusCode::OK,
                &json!({"apiVersion": "hoop.dev/v1", "kind": "HoldRequestList",
                        "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
            )
        }
        (Method::POST, None, None) => {
            let mut object = match parsed() {
                Ok(o) => o,
                Err(r) => return *r,
            };
            let name = str_at(&object, "/metadata/name");
            if name.is_empty() {
                return error(422, "Invalid", "metadata.name is required");
            }
            let mut state = lock(&shared.state);
            if state.refuse_hold_creation {
                return error(
                    403,
                    "Forbidden",
                    "holdrequests.hoop.dev is forbidden: the stand-in refuses HoldRequests",
                );
            }
            let key = (namespace.clone(), name.clone());
            if state.holds.contains_key(&key) {
                return error(
                    409,
                    "AlreadyExists",
                    &format!("holdrequests.hoop.dev \"{name}\" already exists"),
                );
            }
            if let Some(fields) = object.as_object_mut() {
                fields.remove("status");
            }
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("namespace".into(), Value::String(namespace));
                meta.insert("uid".into(), Value::String(format!("uid-{name}")));
            }
            state.rv += 1;
            let rv = state.rv;
            set_rv(&mut object, rv);
            state.holds.insert(key, object.clone());
            publish(&mut state, Kind::HoldRequests, "ADDED", object.clone());
            full(StatusCode::CREATED, &object)
        }
        (Method::GET, Some(name), None) => {
            match lock(&shared.state).holds.get(&(namespace, name.clone())) {
                Some(o) => full(StatusCode::OK, o),
                None => error(
                    404,
                    "NotFound",
                    &format!("holdrequests.hoop.dev \"{name}\" not found"),
                ),
            }
        }
        (Method::DELETE, Some(name), None) => {
            let mut state = lock(&shared.state);
            let Some(mut object) = state.holds.remove(&(namespace, name.clone())) else {
                return error(
                    404,
                    "NotFound",
                    &format!("holdrequests.hoop.dev \"{name}\" not found"),
                );
            };
            state.rv += 1;
            let rv = state.rv;
            set_rv(&mut object, rv);
            publish(&mut state, Kind::HoldRequests, "DELETED", object.clone());
            full(StatusCode::OK, &object)
        }
        (Method::PUT, Some(name), Some("status")) => {
            let update = match parsed() {
                Ok(o) => o,
                Err(r) => return *r,
            };
            let mut state = lock(&shared.state);
            let key = (namespace, name.clone());
            let Some(current) = state.holds.get(&key).cloned() else {
                return error(
                    404,
                    "NotFound",
                    &format!("holdrequests.hoop.dev \"{name}\" not found"),
                );
            };
            let sent = str_at(&update, "/metadata/resourceVersion");
            let have = str_at(&current, "/metadata/resourceVersion");
            if sent != have {
                state.conflicts += 1;
                return error(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on holdrequests.hoop.dev \"{name}\": \
                         the object has been modified; please apply your changes to the latest \
                         version and try again"
                    ),
                );
            }
            let mut object = current;
            object["status"] = update.get("status").cloned().unwrap_or(Value::Null);
            state.rv += 1;
            let rv = state.rv;
            set_rv(&mut object, rv);
            state.holds.insert(key, object.clone());
            publish(&mut state, Kind::HoldRequests, "MODIFIED", object.clone());
            full(StatusCode::OK, &object)
        }
        (method, _, _) => error(
            405,
            "MethodNotAllowed",
            &format!("the stand-in does not serve {method} {}", uri.path()),
        ),
    }
}

impl FakeApiServer {
    /// Every `HoldRequest`, in (namespace, name) order.
    pub fn hold_requests(&self) -> Vec<Value> {
        lock(&self.shared.state).holds.values().cloned().collect()
    }

    /// Status writes refused with 409 for a stale `resourceVersion` so far.
    pub fn hold_conflicts(&self) -> u64 {
        lock(&self.shared.state).conflicts
    }

    /// While `true`, creating a `HoldRequest` gets 403 (the API server
    /// refusing it, as for a service account RBAC does not allow).
    pub fn refuse_hold_creation(&self, refuse: bool) {
        lock(&self.shared.state).refuse_hold_creation = refuse;
    }

    /// Creates a `HoldRequest` directly (as another agent would have).
    pub fn apply_hold_request(&self, mut object: Value) {
        let key = (
            str_at(&object, "/metadata/namespace"),
            str_at(&object, "/metadata/name"),
        );
        let mut state = lock(&self.shared.state);
        state.rv += 1;
        let rv = state.rv;
        set_rv(&mut object, rv);
        let event = if state.holds.insert(key, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        publish(&mut state, Kind::HoldRequests, event, object);
    }
}
