//! The configuration file as the binary loads it: every section checked,
//! and the hot ones compiled — `policy:` (hoop-policy) and `credentials:`
//! (hoop-credentials, whose `when:` selectors are the policy's) — with all
//! their findings reported at once; and the live pair, reloaded together
//! when the file changes (all or nothing: a file that fails keeps both).

use std::{path::Path, sync::Arc};

use hoop_config::{Config, ConfigError, Diagnostics, KeyPath, Loaded};
use hoop_credentials::{CredentialHandle, CredentialSet};
use hoop_policy::{
    CheckReport, Policy,
    reload::{PolicyHandle, Reload},
};

/// What the configuration file's hot sections compile to.
#[derive(Debug)]
pub struct Compiled {
    /// `policy:`.
    pub policy: Policy,
    /// `credentials:`.
    pub credentials: CredentialSet,
    /// `kubernetes:` (read at start; a reload does not change it).
    pub kubernetes: hoop_k8s::KubernetesConfig,
}

/// A configuration file with its hot sections compiled.
pub type LoadedConfig = Loaded<Compiled>;

fn compile(document: &serde_yaml_ng::Value, diags: &mut Diagnostics<'_>) -> Option<Compiled> {
    let empty = serde_yaml_ng::Value::Null;
    let section = |name: &str| document.get(name).unwrap_or(&empty);
    let root = KeyPath::root();
    let policy = hoop_policy::compile_into(section("policy"), &root.key("policy"), diags);
    let credentials =
        hoop_credentials::compile_into(section("credentials"), &root.key("credentials"), diags);
    let kubernetes = compile_kubernetes(section("kubernetes"), &root.key("kubernetes"), diags);
    Some(Compiled {
        policy: policy?,
        credentials: credentials?,
        kubernetes: kubernetes?,
    })
}

/// `kubernetes:`: parsed strictly, then every problem `validate` finds
/// reported at its key.
fn compile_kubernetes(
    value: &serde_yaml_ng::Value,
    path: &KeyPath,
    diags: &mut Diagnostics<'_>,
) -> Option<hoop_k8s::KubernetesConfig> {
    let config: hoop_k8s::KubernetesConfig =
        hoop_config::checked::deserialize_checked(value, path, diags, &[])?;
    let problems = config.validate();
    for problem in &problems {
        diags.error(&path.key(problem.key), problem.message.clone(), None);
    }
    problems.is_empty().then_some(config)
}

/// Reads a configuration file and compiles its policy and credentials,
/// reporting every problem in the file at once.
pub fn load_checked(path: &Path) -> Result<LoadedConfig, ConfigError> {
    Config::load_document_with(path, &compile)
}

/// Checks a file the way `hoop policy check FILE` reports it: every
/// section, the policy and the credentials (whose secrets are read, and
/// never printed).
pub fn check_file(path: &Path) -> CheckReport {
    hoop_policy::check_with(path, |path| load_checked(path).map(|l| l.warnings))
}

/// The live policy and credentials.
#[derive(Clone)]
pub struct LiveConfig {
    /// The policy every statement is judged by.
    pub policy: PolicyHandle,
    /// The credentials injected at session start.
    pub credentials: CredentialHandle,
}

impl LiveConfig {
    /// Serves what `compiled` holds.
    pub fn new(compiled: Compiled) -> Self {
        Self {
            policy: PolicyHandle::new(compiled.policy),
            credentials: CredentialHandle::new(compiled.credentials),
        }
    }

    /// Serves what `loaded` holds, and reports its file's SHA-256.
    pub fn from_loaded(compiled: Compiled, sha256: String) -> Self {
        let live = Self::new(compiled);
        live.policy.set_source_sha256(sha256);
        live
    }

    /// The credentials as a driver asks for them.
    pub fn credential_source(&self) -> Arc<dyn hoop_core::CredentialSource> {
        Arc::new(self.credentials.clone())
    }
}

impl Reload for LiveConfig {
    /// Reloads both sections from `path`; a file that fails (a policy
    /// error, a secret file left readable by others…) keeps both as they
    /// were, and says why.
    fn reload(&self, path: &Path) {
        let _ = self.policy.reload_with(
            path,
            |path| {
                load_checked(path)
                    .map(|l| (l.policy.policy, l.warnings, l.sha256, l.policy.credentials))
            },
            |credentials| self.credentials.store(credentials),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use hoop_core::{CredentialSource as _, SessionIdentity};

    use super::*;

    fn config(dir: &Path, secret: &Path, role: &str) -> String {
        format!(
            "policy:\n  deny:\n    - statements: [drop]\ncredentials:\n  entries:\n    - name: reporting\n      when: {{workload: [/w]}}\n      destination: {{host: 127.0.0.1, port: 5432, database: reports}}\n      role: {role}\n      password_file: {}\nrecording: {{dir: {}}}\n",
            secret.display(),
            dir.display()
        )
    }

    fn session() -> SessionIdentity {
        SessionIdentity {
            workload: Some("/w".into()),
            original_destination: Some("127.0.0.1:5432".parse().unwrap()),
            database: Some("reports".into()),
            user: Some("x".into()),
            ..SessionIdentity::default()
        }
    }

    #[test]
    fn the_kubernetes_section_is_checked_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoop.yaml");
        std::fs::write(
            &path,
            "kubernetes:\n  enabled: true\n  mode: sidecar\n  pin_dir: /sys/fs/bpf/hoop\n",
        )
        .unwrap();
        let k8s = load_checked(&path).unwrap().policy.kubernetes;
        assert!(k8s.enabled);
        assert_eq!(k8s.mode, hoop_k8s::Mode::Sidecar);
        assert_eq!(k8s.pin_dir, Path::new("/sys/fs/bpf/hoop"));
        // Every problem, with its place, together with the policy's.
        std::fs::write(
            &path,
            "kubernetes:\n  enabled: true\n  pin_dir: relative\n  resync_interval: 10ms\n\
             policy:\n  deny:\n    - statements: [delete]\n      when: {pod: []}\n",
        )
        .unwrap();
        let text = check_file(&path).to_string();
        for expected in [
            "kubernetes.pin_dir: relative is relative",
            "kubernetes.resync_interval: 10ms is too short",
            "policy.deny[0].when.pod: an empty list",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // Absent: disabled, and the rest of the file loads as before.
        std::fs::write(&path, "policy: {}\n").unwrap();
        assert!(!load_checked(&path).unwrap().policy.kubernetes.enabled);
    }

    #[test]
    fn a_reload_swaps_policy_and_credentials_together_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "hunter2-good").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = dir.path().join("open");
        std::fs::write(&open, "hunter2-open").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().join("hoop.yaml");
        std::fs::write(&path, config(dir.path(), &good, "first")).unwrap();

        let live = LiveConfig::new(load_checked(&path).unwrap().policy);
        let role = || {
            live.credentials
                .credential_for(&session())
                .unwrap()
                .map(|c| c.role)
        };
        assert_eq!(role().as_deref(), Some("first"));

        std::fs::write(&path, config(dir.path(), &good, "second")).unwrap();
        live.reload(&path);
        assert_eq!(role().as_deref(), Some("second"));

        // A secret file readable by others: the whole reload is refused.
        std::fs::write(&path, config(dir.path(), &open, "third")).unwrap();
        let report = check_file(&path);
        assert!(!report.is_ok());
        let text = report.to_string();
        assert!(
            text.contains("credentials.entries[0].password_file"),
            "{text}"
        );
        assert!(text.contains("mode 644"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        live.reload(&path);
        assert_eq!(
            role().as_deref(),
            Some("second"),
            "the last good credentials stay"
        );
    }
}
