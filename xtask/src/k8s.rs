//! `cargo xtask k8s-validate`: render every kustomization under `k8s/` and
//! validate the result offline against the Kubernetes schemas, with the
//! PyPI `kubernetes-validate` package, installed in a venv under
//! `~/.local/share/hoop/`. Also checks the Grafana dashboard against the
//! metrics the code registers. Called by `cargo xtask test`.

use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::setup::{output, run, workspace_root};

/// The pinned validator (its schemas cover Kubernetes up to 1.37).
const VALIDATOR: &str = "kubernetes-validate==1.37.0";
/// The oldest Kubernetes the manifests must be valid for (native sidecars
/// GA; kube-rs 5's minimum) and the newest the validator knows.
const VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];
/// Kinds outside the core schemas, checked by hand below.
const CUSTOM_KINDS: [&str; 1] = ["PodMonitor"];

/// Renders and validates every manifest.
pub fn validate() -> anyhow::Result<()> {
    let root = workspace_root();
    let validator = ensure_validator()?;
    ensure_kubectl()?;
    let out_dir = root.join("target/k8s-validate");
    fs::create_dir_all(&out_dir)?;
    // A monitoring overlay (base + both components) built outside k8s/, as
    // a user's overlay would be (an overlay inside the base is a cycle).
    let overlay = out_dir.join("monitoring");
    fs::create_dir_all(&overlay)?;
    fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n  - ../../../k8s\n\
         components:\n  - ../../../k8s/components/podmonitor\n  - ../../../k8s/components/grafana-dashboard\n",
    )?;
    let targets: [(&str, PathBuf); 4] = [
        ("base", root.join("k8s")),
        ("sidecar", root.join("k8s/examples/sidecar")),
        ("await", root.join("k8s/examples/await")),
        ("monitoring", overlay),
    ];
    for (name, dir) in &targets {
        let rendered = output(Command::new("kubectl").arg("kustomize").arg(dir))
            .with_context(|| format!("kubectl kustomize {}", dir.display()))?;
        let file = out_dir.join(format!("{name}.yaml"));
        fs::write(&file, &rendered)?;
        for version in VERSIONS {
            let out = Command::new(&validator)
                .args(["--strict", "--quiet", "-k", version])
                .arg(&file)
                .output()
                .with_context(|| format!("running {}", validator.display()))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let unknown: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("Couldn't find schema"))
                .filter(|l| {
                    !CUSTOM_KINDS
                        .iter()
                        .any(|k| l.contains(&format!("kind {k} ")))
                })
                .collect();
            if !out.status.success() || !unknown.is_empty() {
                bail!(
                    "{name} ({}) is not valid for Kubernetes {version}:\n{text}",
                    dir.display()
                );
            }
        }
        if rendered.contains("kind: PodMonitor") {
            check_podmonitor(&rendered)?;
        }
        eprintln!(
            "xtask: k8s {name}: valid for Kubernetes {}",
            VERSIONS.join(" and ")
        );
    }
    check_dashboard(&root)?;
    Ok(())
}

/// The venv's `kubernetes-validate`, installed on first use.
fn ensure_validator() -> anyhow::Result<PathBuf> {
    let home = PathBuf::from(env::var_os("HOME").context("HOME is not set")?);
    let venv = home.join(".local/share/hoop/k8s-validate-venv");
    let bin = venv.join("bin/kubernetes-validate");
    let stamp = venv.join("hoop.stamp");
    let works = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == VALIDATOR) {
        return Ok(bin);
    }
    eprintln!("xtask: installing {VALIDATOR} into {}", venv.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("python3 -m venv (Debian: apt-get install python3-venv)")?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", VALIDATOR]))?;
    fs::write(&stamp, VALIDATOR)?;
    Ok(bin)
}

/// `kubectl` (for its built-in kustomize), from Debian's
/// `kubernetes-client` when missing.
fn ensure_kubectl() -> anyhow::Result<()> {
    let works = || {
        Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works() {
        return Ok(());
    }
    eprintln!("xtask: installing kubectl (Debian package kubernetes-client)");
    run(Command::new("apt-get").args(["install", "-y", "kubernetes-client"]))?;
    if works() {
        Ok(())
    } else {
        bail!("kubectl is still missing after apt-get install kubernetes-client")
    }
}

/// The PodMonitor has no schema here: check that it selects the agent's
/// pods and scrapes a port the agent's container names.
fn check_podmonitor(rendered: &str) -> anyhow::Result<()> {
    let docs: Vec<&str> = rendered.split("\n---\n").collect();
    let monitor = docs
        .iter()
        .find(|d| d.contains("kind: PodMonitor"))
        .context("no PodMonitor document")?;
    let daemonset = docs
        .iter()
        .find(|d| d.contains("kind: DaemonSet"))
        .context("the PodMonitor has no DaemonSet to scrape")?;
    let port = monitor
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("- port: ")
                .or_else(|| l.trim().strip_prefix("port: "))
        })
        .context("the PodMonitor names no port")?
        .trim();
    if !daemonset
        .lines()
        .any(|l| l.trim() == format!("name: {port}") || l.trim() == format!("- name: {port}"))
    {
        bail!("the PodMonitor scrapes port {port:?}, which the agent's container does not name");
    }
    for label in [
        "app.kubernetes.io/name: hoop",
        "app.kubernetes.io/component: agent",
    ] {
        if !monitor.contains(label) || !daemonset.contains(label) {
            bail!("the PodMonitor and the DaemonSet's pods must both carry {label}");
        }
    }
    Ok(())
}

/// Every metric the dashboard queries is registered by the code, and every
/// metric the code registers is on the dashboard.
fn check_dashboard(root: &Path) -> anyhow::Result<()> {
    let path = root.join("k8s/components/grafana-dashboard/dashboards/hoop.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let used: BTreeSet<String> = metric_names(&text)
        .into_iter()
        .map(|m| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| m.strip_suffix(s))
                .map_or_else(|| m.clone(), str::to_owned)
        })
        .collect();
    // Every crate of the workspace may register metrics on the process
    // registry (hoop-core, hoop-policy, hoop-hold, hoop-record, hoop-k8s…).
    let mut registered = BTreeSet::new();
    let mut crates: Vec<_> = fs::read_dir(root)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hoop-"))
                && p.join("src").is_dir()
        })
        .collect();
    crates.sort();
    for dir in crates {
        collect_registered(&dir.join("src"), &mut registered)?;
    }
    let unknown: Vec<&String> = used.difference(&registered).collect();
    let missing: Vec<&String> = registered.difference(&used).collect();
    if !unknown.is_empty() || !missing.is_empty() {
        bail!(
            "{}: queries metrics no code registers: {unknown:?}; misses registered metrics: {missing:?}",
            path.display()
        );
    }
    eprintln!(
        "xtask: k8s dashboard: {} metrics, all registered",
        used.len()
    );
    Ok(())
}

/// `hoop_…` identifiers in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("hoop_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        if boundary && end > start + 5 {
            names.insert(text[start..end].to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

/// Metric names registered in non-test Rust sources: every complete string
/// literal `"hoop_…"` (metric names are the only such literals).
fn collect_registered(dir: &Path, out: &mut BTreeSet<String>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if name != "tests" && name != "testing" {
                collect_registered(&path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "rs") && name != "tests.rs" {
            let text = fs::read_to_string(&path)?;
            // Only the part before the unit-test module counts.
            let code = text
                .find("\nmod tests {")
                .map_or(text.as_str(), |end| &text[..end]);
            // A metric's name is the first argument of a `…::new(` call
            // (`IntCounter::new`, `Opts::new`, `HistogramOpts::new`, …);
            // other `hoop_…` strings (program names, Slack block ids) are not.
            let parts: Vec<&str> = code.split('"').collect();
            for (k, quoted) in parts.iter().enumerate().skip(1).step_by(2) {
                let before = parts[k - 1].trim_end();
                if before.ends_with("new(")
                    && quoted.starts_with("hoop_")
                    && quoted
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    out.insert((*quoted).to_owned());
                }
            }
        }
    }
    Ok(())
}
