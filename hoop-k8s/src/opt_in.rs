//! Which pods hoop governs: the `hoop.dev/govern` opt-in, as a pure function.
//!
//! The rules (issue 19):
//! - the key `hoop.dev/govern`, as a **label** or an **annotation**, on the
//!   **pod** or on its **namespace**; values `true|enabled` (govern) and
//!   `false|disabled` (do not), compared case-insensitively;
//! - the pod beats its namespace, and at one level the label beats the
//!   annotation: the first of pod label, pod annotation, namespace label,
//!   namespace annotation that is present decides;
//! - a value that is present but none of those **governs** (fail closed) and
//!   is reported as an [`InvalidValue`] (the caller logs a warning and counts
//!   it): a typo must not silently turn governance off;
//! - never the agent's own pods (its namespace and its pod UID), never an
//!   excluded namespace (`kube-system` by default), never a pod that has
//!   finished (phase `Succeeded` or `Failed`);
//! - the pod annotation `hoop.dev/ports` replaces `intercept.ports` for that
//!   pod; an invalid list governs the default ports plus every valid entry
//!   (fail closed) and is reported;
//! - the pod annotation `hoop.dev/require: "true"` asks for the start-up gate
//!   (`hoop await`); an invalid value requires it (fail closed).
//!
//! `hostNetwork` pods are not special here: the decision says so
//! ([`Governed::host_network`]) and the governor decides what it can do.

use std::collections::BTreeMap;

use serde::Serialize;

/// The opt-in key, as a label or annotation on a pod or namespace.
pub const GOVERN_KEY: &str = "hoop.dev/govern";
/// Pod annotation: the intercepted ports for this pod (`"5432,6432"`).
pub const PORTS_KEY: &str = "hoop.dev/ports";
/// Pod annotation: the pod waits for governance before its containers start.
pub const REQUIRE_KEY: &str = "hoop.dev/require";
/// The most ports one pod may intercept (the kernel's port map size).
pub const MAX_PORTS: usize = 64;

/// What the decision reads from a pod.
#[derive(Debug, Clone, Copy)]
pub struct PodFacts<'a> {
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// `metadata.uid`.
    pub uid: &'a str,
    /// `metadata.labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: &'a BTreeMap<String, String>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `status.phase`, when known.
    pub phase: Option<&'a str>,
}

/// What the decision reads from the pod's namespace (`None` when the
/// namespace has not been seen yet: then only the pod's own keys count).
#[derive(Debug, Clone, Copy)]
pub struct NamespaceFacts<'a> {
    /// The namespace's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The namespace's annotations.
    pub annotations: &'a BTreeMap<String, String>,
}

/// The agent-wide inputs of the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptInRules {
    /// `kubernetes.exclude_namespaces`.
    pub exclude_namespaces: Vec<String>,
    /// The agent's own namespace (Downward API `POD_NAMESPACE`): never governed.
    pub agent_namespace: Option<String>,
    /// The agent's own pod UID (Downward API `POD_UID`): never governed.
    pub agent_pod_uid: Option<String>,
    /// `intercept.ports`: the ports of a pod without `hoop.dev/ports`.
    pub default_ports: Vec<u16>,
}

/// Where the deciding `hoop.dev/govern` value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A label on the pod.
    PodLabel,
    /// An annotation on the pod.
    PodAnnotation,
    /// A label on the namespace.
    NamespaceLabel,
    /// An annotation on the namespace.
    NamespaceAnnotation,
}

impl Source {
    /// `pod` or `namespace`: the bounded metric label.
    pub fn level(self) -> &'static str {
        match self {
            Self::PodLabel | Self::PodAnnotation => "pod",
            Self::NamespaceLabel | Self::NamespaceAnnotation => "namespace",
        }
    }

    /// For log lines: `pod label`, `namespace annotation`, …
    pub fn describe(self) -> &'static str {
        match self {
            Self::PodLabel => "pod label",
            Self::PodAnnotation => "pod annotation",
            Self::NamespaceLabel => "namespace label",
            Self::NamespaceAnnotation => "namespace annotation",
        }
    }
}

/// A pod hoop governs, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governed {
    /// The intercepted destination ports (sorted, deduplicated, non-empty).
    pub ports: Vec<u16>,
    /// `hoop.dev/require`: the pod's start-up gate waits for governance.
    pub require: bool,
    /// Where the opt-in came from.
    pub source: Source,
    /// The pod shares the node's network namespace.
    pub host_network: bool,
}

/// Why a pod is not governed. Bounded: used as a metric/log label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// No `hoop.dev/govern` on the pod or its namespace.
    NotOptedIn,
    /// `false|disabled` at the given place.
    OptedOut(Source),
    /// The namespace is in `kubernetes.exclude_namespaces`.
    ExcludedNamespace,
    /// One of the agent's own pods.
    AgentPod,
    /// The pod has finished (phase `Succeeded`/`Failed`).
    Finished,
}

impl SkipReason {
    /// A short snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOptedIn => "not_opted_in",
            Self::OptedOut(_) => "opted_out",
            Self::ExcludedNamespace => "excluded_namespace",
            Self::AgentPod => "agent_pod",
            Self::Finished => "finished",
        }
    }
}

/// The decision for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Govern it.
    Govern(Governed),
    /// Leave it alone.
    Skip(SkipReason),
}

/// A `hoop.dev/*` value hoop could not read; the decision failed closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// The key (`hoop.dev/govern`, `hoop.dev/ports`, `hoop.dev/require`).
    pub key: &'static str,
    /// Where it was.
    pub source: Source,
    /// The value as written.
    pub value: String,
    /// What hoop did instead.
    pub fallback: &'static str,
}

impl std::fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}={:?} is not valid; {}",
            self.source.describe(),
            self.key,
            self.value,
            self.fallback
        )
    }
}

/// A decision and the invalid values met on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Govern or skip.
    pub decision: Decision,
    /// Invalid values (each worth a warning and a metric increment).
    pub invalid: Vec<InvalidValue>,
}

/// A parsed `hoop.dev/govern` (or `hoop.dev/require`) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    On,
    Off,
    Invalid,
}

fn parse_switch(value: &str) -> Switch {
    let v = value.trim();
    if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("enabled") {
        Switch::On
    } else if v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("disabled") {
        Switch::Off
    } else {
        Switch::Invalid
    }
}

/// Decides whether `pod` is governed. Pure: the same facts give the same
/// answer, so the reconciler can re-evaluate on every event.
pub fn evaluate(
    pod: &PodFacts<'_>,
    namespace: Option<&NamespaceFacts<'_>>,
    rules: &OptInRules,
) -> Evaluation {
    let skip = |reason| Evaluation {
        decision: Decision::Skip(reason),
        invalid: Vec::new(),
    };
    if rules.agent_namespace.as_deref() == Some(pod.namespace)
        || rules.agent_pod_uid.as_deref() == Some(pod.uid)
    {
        return skip(SkipReason::AgentPod);
    }
    if rules.exclude_namespaces.iter().any(|n| n == pod.namespace) {
        return skip(SkipReason::ExcludedNamespace);
    }
    if matches!(pod.phase, Some("Succeeded" | "Failed")) {
        return skip(SkipReason::Finished);
    }

    let places = [
        (Source::PodLabel, Some(pod.labels)),
        (Source::PodAnnotation, Some(pod.annotations)),
        (Source::NamespaceLabel, namespace.map(|n| n.labels)),
        (
            Source::NamespaceAnnotation,
            namespace.map(|n| n.annotations),
        ),
    ];
    let deciding = places
        .into_iter()
        .find_map(|(source, map)| map?.get(GOVERN_KEY).map(|v| (source, v)));
    let Some((source, value)) = deciding else {
        return skip(SkipReason::NotOptedIn);
    };
    let mut invalid = Vec::new();
    match parse_switch(value) {
        Switch::Off => return skip(SkipReason::OptedOut(source)),
        Switch::On => {}
        Switch::Invalid => invalid.push(InvalidValue {
            key: GOVERN_KEY,
            source,
            value: value.clone(),
            fallback: "governing the pod (fail closed); use true|enabled or false|disabled",
        }),
    }

    let ports = match pod.annotations.get(PORTS_KEY) {
        None => rules.default_ports.clone(),
        Some(value) => match parse_ports(value) {
            Ok(ports) => ports,
            Err(valid) => {
                invalid.push(InvalidValue {
                    key: PORTS_KEY,
                    source: Source::PodAnnotation,
                    value: value.clone(),
                    fallback: "intercepting intercept.ports plus the valid entries (fail closed); \
                               use a comma-separated list of 1..65535, at most 64",
                });
                let mut all = rules.default_ports.clone();
                all.extend(valid);
                normalize(all)
            }
        },
    };
    let require = match pod.annotations.get(REQUIRE_KEY) {
        None => false,
        Some(value) => match parse_switch(value) {
            Switch::On => true,
            Switch::Off => false,
            Switch::Invalid => {
                invalid.push(InvalidValue {
                    key: REQUIRE_KEY,
                    source: Source::PodAnnotation,
                    value: value.clone(),
                    fallback: "requiring governance before start (fail closed); use true or false",
                });
                true
            }
        },
    };
    Evaluation {
        decision: Decision::Govern(Governed {
            ports: normalize(ports),
            require,
            source,
            host_network: pod.host_network,
        }),
        invalid,
    }
}

/// Parses `hoop.dev/ports`: ports separated by commas and/or whitespace.
/// `Err` carries the entries that were valid, so the caller can fail closed.
pub fn parse_ports(value: &str) -> Result<Vec<u16>, Vec<u16>> {
    let mut ports = Vec::new();
    let mut ok = true;
    for item in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        match item.parse::<u16>() {
            Ok(p) if p != 0 => ports.push(p),
            _ => ok = false,
        }
    }
    let ports = normalize(ports);
    if ok && !ports.is_empty() && ports.len() <= MAX_PORTS {
        Ok(ports)
    } else {
        // Too many entries keeps the first MAX_PORTS, so a governor can
        // still load them all.
        Err(ports.into_iter().take(MAX_PORTS).collect())
    }
}

fn normalize(mut ports: Vec<u16>) -> Vec<u16> {
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests;
