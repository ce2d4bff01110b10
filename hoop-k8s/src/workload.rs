//! Who a governed connection belongs to: the pod's identity.
//!
//! [`Workload`] is hoop-core's [`hoop_core::PodIdentity`]: plain data that
//! sessions carry into policy `when:` selectors, recordings, holds and log
//! lines.

use std::collections::BTreeMap;

/// A pod's identity as hoop reports it.
pub type Workload = hoop_core::PodIdentity;

/// The Downward API environment variables a sidecar reads its identity from.
pub mod env {
    /// `metadata.name`.
    pub const POD_NAME: &str = "POD_NAME";
    /// `metadata.namespace`.
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// `metadata.uid`.
    pub const POD_UID: &str = "POD_UID";
    /// `spec.serviceAccountName`.
    pub const POD_SERVICE_ACCOUNT: &str = "POD_SERVICE_ACCOUNT";
    /// `spec.nodeName` (optional for a sidecar).
    pub const NODE_NAME: &str = "NODE_NAME";
}

/// A Downward API variable the sidecar needs is missing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "sidecar mode needs the Downward API environment variable{} {}: add them to the hoop container \
     (env[].valueFrom.fieldRef: metadata.name, metadata.namespace, metadata.uid, spec.serviceAccountName)",
    if .0.len() == 1 { "" } else { "s" },
    .0.join(", ")
)]
pub struct MissingEnv(pub Vec<&'static str>);

/// The sidecar's own identity from the Downward API variables, read
/// through `lookup` (`std::env::var` in the agent). Labels are not in
/// the environment; they stay empty.
pub fn from_downward_api(lookup: impl Fn(&str) -> Option<String>) -> Result<Workload, MissingEnv> {
    let mut missing = Vec::new();
    let mut get = |name: &'static str| {
        let v = lookup(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        if v.is_empty() {
            missing.push(name);
        }
        v
    };
    let workload = Workload {
        pod: get(env::POD_NAME),
        namespace: get(env::POD_NAMESPACE),
        uid: get(env::POD_UID),
        service_account: get(env::POD_SERVICE_ACCOUNT),
        node: lookup(env::NODE_NAME).unwrap_or_default(),
        labels: BTreeMap::new(),
    };
    if missing.is_empty() {
        Ok(workload)
    } else {
        Err(MissingEnv(missing))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_a_plain_object() {
        let w = Workload {
            namespace: "shop".into(),
            pod: "api-7d9".into(),
            uid: "0d3c3e4e-1111-2222-3333-444455556666".into(),
            service_account: "api".into(),
            node: "node-1".into(),
            labels: BTreeMap::from([("app".into(), "api".into())]),
        };
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "namespace": "shop", "pod": "api-7d9",
                "uid": "0d3c3e4e-1111-2222-3333-444455556666",
                "service_account": "api", "node": "node-1", "labels": {"app": "api"}
            })
        );
        assert_eq!(serde_json::from_value::<Workload>(json).unwrap(), w);
        assert_eq!(w.to_string(), "shop/api-7d9");
    }

    #[test]
    fn sidecar_identity_from_the_downward_api() {
        let env = |k: &str| {
            match k {
                "POD_NAME" => Some("p"),
                "POD_NAMESPACE" => Some("ns"),
                "POD_UID" => Some("u-1"),
                "POD_SERVICE_ACCOUNT" => Some("sa"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let w = from_downward_api(env).unwrap();
        assert_eq!((w.namespace.as_str(), w.pod.as_str()), ("ns", "p"));
        assert_eq!((w.uid.as_str(), w.service_account.as_str()), ("u-1", "sa"));
        assert_eq!(w.node, "");

        let e = from_downward_api(|k| (k == "POD_NAME").then(|| "p".to_owned())).unwrap_err();
        assert_eq!(e.0, ["POD_NAMESPACE", "POD_UID", "POD_SERVICE_ACCOUNT"]);
        assert!(
            e.to_string().contains("variables POD_NAMESPACE, POD_UID"),
            "{e}"
        );
    }
}
