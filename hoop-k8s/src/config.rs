//! The `kubernetes:` configuration section.
//!
//! These names are the operator-facing contract of issue 19 (and
//! `../shared/DESIGN.md`): extend them, never rename them.
//!
//! ```yaml
//! kubernetes:
//!   enabled: true
//!   mode: node                 # node (DaemonSet) | sidecar
//!   node_name: ""              # default: the NODE_NAME environment variable
//!   cgroup_root: ""            # default: the cgroup2 mount
//!   exclude_namespaces: [kube-system]
//!   resync_interval: 30s
//!   holds:                     # node mode: holds are HoldRequests in the API
//!     namespace: ""            # default: POD_NAMESPACE, else hoop-system
//!     retention: 24h           # ended holds are deleted this long after
//! ```
//!
//! Parsing is strict (`deny_unknown_fields`); [`KubernetesConfig::validate`]
//! reports every problem at once, and [`KubernetesConfig::resolve`] fills in
//! the environment-dependent defaults.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Environment variable naming this node (Downward API `spec.nodeName`).
pub const NODE_NAME_ENV: &str = "NODE_NAME";
/// The smallest accepted `resync_interval`: a resync lists nothing from the
/// API server (it replays the watchers' cache), but it stats every governed
/// pod's cgroup, so sub-second intervals only burn CPU.
pub const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// `kubernetes:`: discover pods on this node and govern those that opt in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Turns Kubernetes discovery on (default `false`: only `intercept.cgroups`
    /// and `hoop exec` are governed).
    #[serde(default)]
    pub enabled: bool,
    /// `node`: one agent per node (DaemonSet) governing every opted-in pod on
    /// it. `sidecar`: hoop runs inside one pod and governs only that pod.
    #[serde(default)]
    pub mode: Mode,
    /// The node whose pods are governed (watch field selector
    /// `spec.nodeName=<node>`). Empty: the `NODE_NAME` environment variable,
    /// which the DaemonSet sets from the Downward API. Never the hostname:
    /// kubelets run with `--hostname-override`.
    #[serde(default)]
    pub node_name: String,
    /// The cgroup v2 directory under which the kubelet's `kubepods` tree
    /// lives. Empty: the cgroup2 mount point (from `/proc/self/mountinfo`).
    /// Tests point it at a private kubepods tree.
    #[serde(default)]
    pub cgroup_root: PathBuf,
    /// Namespaces whose pods are never governed, whatever their opt-in says
    /// (default `[kube-system]`). The agent's own namespace is always excluded.
    #[serde(default = "default_exclude_namespaces")]
    pub exclude_namespaces: Vec<String>,
    /// How often every pod is re-checked against what is attached, on top of
    /// the watch events (default `30s`): catches cgroups that appeared without
    /// an event and repairs attachments removed behind hoop's back.
    #[serde(default = "default_resync_interval", with = "humantime_serde")]
    pub resync_interval: Duration,
    /// A directory on a bpffs where the node agent pins its maps and links
    /// (the DaemonSet uses `/sys/fs/bpf/hoop`), so governed pods stay
    /// governed across agent restarts and the next agent adopts them.
    /// Empty (the default): nothing is pinned, and the programs leave with
    /// the process.
    #[serde(default)]
    pub pin_dir: PathBuf,
    /// Holds in the Kubernetes API (node mode): where they live and how
    /// long ended ones are kept.
    #[serde(default)]
    pub holds: HoldsConfig,
}

/// `kubernetes.holds`: in node mode every agent files its holds as
/// `HoldRequest`s (`holdrequests.hoop.dev`) in hoop's namespace, and any
/// agent lists and decides any of them. Sidecar mode (no API access) keeps
/// holds in process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldsConfig {
    /// hoop's namespace, where the `HoldRequest`s live. Empty (the default):
    /// the `POD_NAMESPACE` environment variable (the DaemonSet sets it from
    /// the Downward API), else `hoop-system`.
    #[serde(default)]
    pub namespace: String,
    /// How long a hold stays in the API after it ended (approved, denied,
    /// timed out, withdrawn) before it is deleted (default `24h`; at least
    /// `1s`). The session recording keeps the decision for good.
    #[serde(default = "default_hold_retention", with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for HoldsConfig {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            retention: default_hold_retention(),
        }
    }
}

fn default_hold_retention() -> Duration {
    Duration::from_hours(24)
}

/// hoop's namespace when neither `kubernetes.holds.namespace` nor
/// `POD_NAMESPACE` names one.
pub const DEFAULT_HOLD_NAMESPACE: &str = "hoop-system";

impl HoldsConfig {
    /// The namespace, given the value of `POD_NAMESPACE`.
    pub fn namespace_or(&self, pod_namespace: Option<&str>) -> String {
        if !self.namespace.is_empty() {
            return self.namespace.clone();
        }
        pod_namespace
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_HOLD_NAMESPACE)
            .to_owned()
    }
}

/// Where hoop runs relative to the pods it governs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A node agent (DaemonSet) governing the opted-in pods of its node.
    #[default]
    Node,
    /// A sidecar governing its own pod; identity from the Downward API.
    Sidecar,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: Mode::default(),
            node_name: String::new(),
            cgroup_root: PathBuf::new(),
            exclude_namespaces: default_exclude_namespaces(),
            resync_interval: default_resync_interval(),
            pin_dir: PathBuf::new(),
            holds: HoldsConfig::default(),
        }
    }
}

fn default_exclude_namespaces() -> Vec<String> {
    vec!["kube-system".to_owned()]
}

fn default_resync_interval() -> Duration {
    Duration::from_secs(30)
}

/// One problem with a `kubernetes:` section, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key under `kubernetes.`, e.g. `resync_interval`.
    pub key: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kubernetes.{}: {}", self.key, self.message)
    }
}

/// The section with its environment-dependent defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKubernetes {
    /// Node or sidecar.
    pub mode: Mode,
    /// The node name (node mode; may be empty in sidecar mode).
    pub node_name: String,
    /// The cgroup directory the kubepods tree is searched under.
    pub cgroup_root: PathBuf,
    /// Namespaces never governed.
    pub exclude_namespaces: Vec<String>,
    /// The periodic resync.
    pub resync_interval: Duration,
}

/// Why the section could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// Node mode without a node name anywhere.
    #[error(
        "kubernetes.node_name is empty and the NODE_NAME environment variable is not set: \
         set NODE_NAME from the Downward API (fieldRef spec.nodeName) in the DaemonSet"
    )]
    NoNodeName,
    /// `cgroup_root` is empty and no cgroup2 mount was found.
    #[error(
        "kubernetes.cgroup_root is empty and no cgroup2 mount was found: mount the host's \
         cgroup2 filesystem (hostPath /sys/fs/cgroup) or set kubernetes.cgroup_root"
    )]
    NoCgroupRoot,
}

impl KubernetesConfig {
    /// Every problem with the section, in key order; empty when valid.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if !self.cgroup_root.as_os_str().is_empty() && !self.cgroup_root.is_absolute() {
            problems.push(ConfigProblem {
                key: "cgroup_root",
                message: format!(
                    "{} is relative: give an absolute cgroup v2 directory, or leave it empty for the cgroup2 mount",
                    self.cgroup_root.display()
                ),
            });
        }
        for ns in &self.exclude_namespaces {
            if !is_dns_label(ns) {
                problems.push(ConfigProblem {
                    key: "exclude_namespaces",
                    message: format!(
                        "{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63 characters)"
                    ),
                });
            }
        }
        if !self.pin_dir.as_os_str().is_empty() && !self.pin_dir.is_absolute() {
            problems.push(ConfigProblem {
                key: "pin_dir",
                message: format!(
                    "{} is relative: give a directory on a bpffs, e.g. /sys/fs/bpf/hoop",
                    self.pin_dir.display()
                ),
            });
        }
        if !self.node_name.is_empty() && !is_dns_subdomain(&self.node_name) {
            problems.push(ConfigProblem {
                key: "node_name",
                message: format!("{:?} is not a node name (a DNS subdomain)", self.node_name),
            });
        }
        if !self.holds.namespace.is_empty() && !is_dns_label(&self.holds.namespace) {
            problems.push(ConfigProblem {
                key: "holds.namespace",
                message: format!(
                    "{:?} is not a namespace name (lowercase letters, digits and '-', at most 63 characters)",
                    self.holds.namespace
                ),
            });
        }
        if self.holds.retention < Duration::from_secs(1) {
            problems.push(ConfigProblem {
                key: "holds.retention",
                message: format!(
                    "{} is too short: use at least 1s",
                    humantime::format_duration(self.holds.retention)
                ),
            });
        }
        if self.resync_interval < MIN_RESYNC_INTERVAL {
            problems.push(ConfigProblem {
                key: "resync_interval",
                message: format!(
                    "{} is too short: use at least {}",
                    humantime::format_duration(self.resync_interval),
                    humantime::format_duration(MIN_RESYNC_INTERVAL)
                ),
            });
        }
        problems
    }

    /// Fills in the defaults that come from the environment: `node_name` from
    /// `node_name_env` (the value of `NODE_NAME`), `cgroup_root` from
    /// `cgroup2_mount` (the agent passes the cgroup2 mount point it found).
    pub fn resolve(
        &self,
        node_name_env: Option<&str>,
        cgroup2_mount: Option<&Path>,
    ) -> Result<ResolvedKubernetes, ResolveError> {
        let node_name = if self.node_name.is_empty() {
            node_name_env.map(str::trim).unwrap_or_default().to_owned()
        } else {
            self.node_name.clone()
        };
        if node_name.is_empty() && self.mode == Mode::Node {
            return Err(ResolveError::NoNodeName);
        }
        let cgroup_root = if self.cgroup_root.as_os_str().is_empty() {
            cgroup2_mount
                .map(Path::to_path_buf)
                .ok_or(ResolveError::NoCgroupRoot)?
        } else {
            self.cgroup_root.clone()
        };
        Ok(ResolvedKubernetes {
            mode: self.mode,
            node_name,
            cgroup_root,
            exclude_namespaces: self.exclude_namespaces.clone(),
            resync_interval: self.resync_interval,
        })
    }
}

/// RFC 1123 label: what a namespace name must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: what a node name must be.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<KubernetesConfig, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(yaml)
    }

    #[test]
    fn the_issue_example_parses_to_the_documented_values() {
        let c = parse(
            "enabled: true\nmode: node\nnode_name: \"\"\ncgroup_root: \"\"\n\
             exclude_namespaces: [kube-system]\nresync_interval: 30s\n",
        )
        .unwrap();
        assert_eq!(
            c,
            KubernetesConfig {
                enabled: true,
                ..KubernetesConfig::default()
            }
        );
        assert!(c.validate().is_empty());
    }

    #[test]
    fn defaults_when_keys_are_absent() {
        let c = parse("{}").unwrap();
        assert!(!c.enabled);
        assert_eq!(c.mode, Mode::Node);
        assert_eq!(c.exclude_namespaces, ["kube-system"]);
        assert_eq!(c.resync_interval, Duration::from_secs(30));
        let c = parse("mode: sidecar\nresync_interval: 2m\nexclude_namespaces: []").unwrap();
        assert_eq!(c.mode, Mode::Sidecar);
        assert_eq!(c.resync_interval, Duration::from_mins(2));
        assert!(c.exclude_namespaces.is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = parse("enabled: true\nnodename: n1\n").unwrap_err();
        assert!(e.to_string().contains("nodename"), "{e}");
        let e = parse("mode: daemonset\n").unwrap_err();
        assert!(e.to_string().contains("daemonset"), "{e}");
        let e = parse("resync_interval: soon\n").unwrap_err();
        assert!(e.to_string().contains("resync_interval"), "{e}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let c = KubernetesConfig {
            cgroup_root: PathBuf::from("sys/fs/cgroup"),
            exclude_namespaces: vec!["Kube_System".into(), "ok".into(), "-bad".into()],
            node_name: "node_1".into(),
            resync_interval: Duration::from_millis(10),
            ..KubernetesConfig::default()
        };
        let keys: Vec<&str> = c.validate().iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "cgroup_root",
                "exclude_namespaces",
                "exclude_namespaces",
                "node_name",
                "resync_interval"
            ]
        );
        assert!(
            c.validate()[4]
                .to_string()
                .starts_with("kubernetes.resync_interval: 10ms is too short")
        );
    }

    #[test]
    fn holds_namespace_and_retention_parse_default_and_validate() {
        let c = parse("enabled: true\n").unwrap();
        assert_eq!(c.holds.retention, Duration::from_hours(24));
        assert_eq!(c.holds.namespace_or(None), DEFAULT_HOLD_NAMESPACE);
        assert_eq!(c.holds.namespace_or(Some("hoop")), "hoop");
        let c = parse("holds: {namespace: governance, retention: 10m}\n").unwrap();
        assert_eq!(c.holds.namespace_or(Some("hoop")), "governance");
        assert_eq!(c.holds.retention, Duration::from_mins(10));
        let e = parse("holds: {retain: 1h}\n").unwrap_err();
        assert!(e.to_string().contains("retain"), "{e}");
        let c = parse("holds: {namespace: Not_A_Namespace, retention: 10ms}\n").unwrap();
        let keys: Vec<&str> = c.validate().iter().map(|p| p.key).collect();
        assert_eq!(keys, ["holds.namespace", "holds.retention"]);
    }

    #[test]
    fn resolve_fills_node_name_and_cgroup_root() {
        let c = KubernetesConfig::default();
        let r = c
            .resolve(Some("node-a"), Some(Path::new("/sys/fs/cgroup")))
            .unwrap();
        assert_eq!(r.node_name, "node-a");
        assert_eq!(r.cgroup_root, Path::new("/sys/fs/cgroup"));
        // An explicit value beats the environment.
        let c = KubernetesConfig {
            node_name: "node-b".into(),
            cgroup_root: "/tmp/kubepods-test".into(),
            ..KubernetesConfig::default()
        };
        let r = c.resolve(Some("node-a"), None).unwrap();
        assert_eq!(r.node_name, "node-b");
        assert_eq!(r.cgroup_root, Path::new("/tmp/kubepods-test"));
    }

    #[test]
    fn resolve_errors_name_the_fix() {
        let c = KubernetesConfig::default();
        assert_eq!(
            c.resolve(None, Some(Path::new("/sys/fs/cgroup"))),
            Err(ResolveError::NoNodeName)
        );
        assert_eq!(c.resolve(Some("  "), None), Err(ResolveError::NoNodeName));
        assert_eq!(c.resolve(Some("n"), None), Err(ResolveError::NoCgroupRoot));
        // Sidecar mode needs no node name.
        let c = KubernetesConfig {
            mode: Mode::Sidecar,
            ..KubernetesConfig::default()
        };
        assert!(c.resolve(None, Some(Path::new("/x"))).is_ok());
        assert!(
            ResolveError::NoNodeName
                .to_string()
                .contains("fieldRef spec.nodeName")
        );
    }
}
