//! The parts of pods and namespaces hoop reads, as plain data.
//!
//! Converting once at the edge keeps kube types out of the reconciler and
//! gives malformed objects one place to be rejected.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::PartialObjectMeta;

use crate::{
    Workload,
    cgroup_path::QosClass,
    opt_in::{NamespaceFacts, PodFacts},
};

/// A pod as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Identity (namespace, name, UID, service account, node, labels).
    pub workload: Workload,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.qosClass`, when reported.
    pub qos: Option<QosClass>,
}

/// A namespace's labels and annotations (from a metadata-only watch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// An object from the API server that hoop cannot use.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("malformed {kind} {name:?}: {problem}")]
pub struct Malformed {
    /// `Pod` or `Namespace`.
    pub kind: &'static str,
    /// Whatever name it had (`namespace/name` for pods), possibly empty.
    pub name: String,
    /// What is missing or wrong.
    pub problem: &'static str,
}

impl PodInfo {
    /// Reads a pod. Pods without a UID, name or namespace are rejected: the
    /// UID is the reconcile key and becomes part of a cgroup path.
    pub fn from_pod(pod: &Pod) -> Result<Self, Malformed> {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let malformed = |problem| Malformed {
            kind: "Pod",
            name: format!("{namespace}/{name}"),
            problem,
        };
        let uid = meta.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            return Err(malformed("no metadata.uid"));
        }
        if uid.len() > 64 || !uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(malformed("metadata.uid is not a UID"));
        }
        if namespace.is_empty() {
            return Err(malformed("no metadata.namespace"));
        }
        if name.is_empty() {
            return Err(malformed("no metadata.name"));
        }
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        Ok(Self {
            workload: Workload {
                namespace,
                pod: name,
                uid,
                service_account: spec
                    .and_then(|s| s.service_account_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".to_owned()),
                node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
                labels: meta.labels.clone().unwrap_or_default(),
            },
            annotations: meta.annotations.clone().unwrap_or_default(),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            phase: status.and_then(|s| s.phase.clone()),
            qos: status
                .and_then(|s| s.qos_class.as_deref())
                .and_then(QosClass::from_status),
        })
    }

    /// The pod's UID.
    pub fn uid(&self) -> &str {
        &self.workload.uid
    }

    /// The opt-in decision's view of this pod.
    pub fn facts(&self) -> PodFacts<'_> {
        PodFacts {
            namespace: &self.workload.namespace,
            uid: &self.workload.uid,
            labels: &self.workload.labels,
            annotations: &self.annotations,
            host_network: self.host_network,
            phase: self.phase.as_deref(),
        }
    }
}

impl NamespaceInfo {
    /// Reads a namespace's metadata.
    pub fn from_meta(ns: &PartialObjectMeta<Namespace>) -> Result<Self, Malformed> {
        let meta = &ns.metadata;
        let name = meta.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(Malformed {
                kind: "Namespace",
                name,
                problem: "no metadata.name",
            });
        }
        Ok(Self {
            name,
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
        })
    }

    /// The opt-in decision's view of this namespace.
    pub fn facts(&self) -> NamespaceFacts<'_> {
        NamespaceFacts {
            labels: &self.labels,
            annotations: &self.annotations,
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn reads_identity_and_the_fields_the_decision_needs() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "api-1", "namespace": "shop", "uid": "8a1f5b2c-3d4e-4f60-8a9b-0c1d2e3f4a5b",
                         "labels": {"app": "api"}, "annotations": {"hoop.dev/govern": "true"}},
            "spec": {"containers": [], "serviceAccountName": "api-sa", "nodeName": "n1", "hostNetwork": true},
            "status": {"phase": "Running", "qosClass": "BestEffort"}
        }));
        let info = PodInfo::from_pod(&p).unwrap();
        assert_eq!(info.workload.to_string(), "shop/api-1");
        assert_eq!(info.workload.service_account, "api-sa");
        assert_eq!(info.workload.node, "n1");
        assert_eq!(info.workload.labels["app"], "api");
        assert_eq!(info.annotations["hoop.dev/govern"], "true");
        assert!(info.host_network);
        assert_eq!(info.phase.as_deref(), Some("Running"));
        assert_eq!(info.qos, Some(QosClass::BestEffort));
    }

    #[test]
    fn defaults_for_a_fresh_pod() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "a", "namespace": "b", "uid": "0a0a0a0a-0000-0000-0000-000000000000"}
        }));
        let info = PodInfo::from_pod(&p).unwrap();
        assert_eq!(info.workload.service_account, "default");
        assert_eq!(info.qos, None);
        assert!(!info.host_network);
    }

    #[test]
    fn rejects_pods_without_a_usable_key() {
        for (meta, problem) in [
            (
                serde_json::json!({"name": "a", "namespace": "b"}),
                "no metadata.uid",
            ),
            (
                serde_json::json!({"name": "a", "namespace": "b", "uid": "../../x"}),
                "metadata.uid is not a UID",
            ),
            (
                serde_json::json!({"name": "a", "uid": "abc"}),
                "no metadata.namespace",
            ),
            (
                serde_json::json!({"namespace": "b", "uid": "abc"}),
                "no metadata.name",
            ),
        ] {
            let e = PodInfo::from_pod(&pod(serde_json::json!({ "metadata": meta }))).unwrap_err();
            assert_eq!(e.problem, problem);
        }
    }
}
