//! From a pod to its cgroup v2 directory, the way the kubelet names it.
//!
//! The kubelet names the pod cgroup `pod<UID>` under its QoS parent
//! (`pkg/kubelet/cm/pod_container_manager_linux.go`); Guaranteed pods sit
//! directly under `kubepods`. With the **systemd** driver every level is a
//! slice whose name joins all the levels above it with `-`, and a `-` inside
//! a level (the UID's dashes) becomes `_`. With **cgroupfs** the levels are
//! plain directories. The kubelet's `--cgroup-root` adds levels in front
//! (kind's nested nodes use `kubelet`).
//!
//! | driver | Burstable / BestEffort | Guaranteed |
//! |---|---|---|
//! | systemd | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice` | `kubepods.slice/kubepods-pod<uid_>.slice` |
//! | cgroupfs | `kubepods/burstable/pod<uid>` | `kubepods/pod<uid>` |
//! | systemd, `--cgroup-root=/kubelet.slice` | `kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/…` | … |
//! | cgroupfs, `--cgroup-root=/kubelet` | `kubelet/kubepods/burstable/pod<uid>` | … |
//!
//! Container cgroups sit below the pod directory (`cri-containerd-<id>.scope`,
//! `crio-<id>.scope` with its `crio-conmon-<id>.scope` sibling,
//! `docker-<id>.scope`, or a bare `<id>` under cgroupfs); hoop attaches at the
//! pod level, so container restarts need nothing.
//!
//! [`resolve_pod_cgroup`] first stats the candidates built from the layouts
//! above; if none exists it scans the tree under the root for a directory
//! named after the pod UID (either spelling), which covers other
//! `--cgroup-root` prefixes. `--cgroups-per-qos=false` creates no pod cgroup
//! at all and is not supported.

use std::{
    collections::VecDeque,
    fs,
    path::{Path, PathBuf},
};

/// The kubelet's QoS class (`status.qosClass`), fixed for the pod's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Requests equal limits for every container: directly under `kubepods`.
    Guaranteed,
    /// `kubepods/burstable`.
    Burstable,
    /// `kubepods/besteffort`.
    BestEffort,
}

impl QosClass {
    /// All three, in the order candidates are tried when the class is unknown.
    pub const ALL: [Self; 3] = [Self::Burstable, Self::BestEffort, Self::Guaranteed];

    /// From `status.qosClass`.
    pub fn from_status(value: &str) -> Option<Self> {
        match value {
            "Guaranteed" => Some(Self::Guaranteed),
            "Burstable" => Some(Self::Burstable),
            "BestEffort" => Some(Self::BestEffort),
            _ => None,
        }
    }

    /// The QoS level's name, `None` for Guaranteed (no level of its own).
    fn level(self) -> Option<&'static str> {
        match self {
            Self::Guaranteed => None,
            Self::Burstable => Some("burstable"),
            Self::BestEffort => Some("besteffort"),
        }
    }
}

/// The kubelet's cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupDriver {
    /// `--cgroup-driver=systemd`: slices.
    Systemd,
    /// `--cgroup-driver=cgroupfs`: plain directories.
    Cgroupfs,
}

/// The `--cgroup-root` prefixes tried before scanning: none (the default),
/// and `kubelet` (kind and other nested nodes).
pub const KNOWN_ROOT_PREFIXES: [&[&str]; 2] = [&[], &["kubelet"]];

/// The pod's cgroup path relative to the cgroup root, for one driver, QoS
/// class and `--cgroup-root` prefix (given as levels, e.g. `["kubelet"]`).
pub fn pod_cgroup_relative(
    driver: CgroupDriver,
    prefix: &[&str],
    qos: QosClass,
    uid: &str,
) -> PathBuf {
    let pod = format!("pod{uid}");
    let mut levels: Vec<&str> = prefix.to_vec();
    levels.push("kubepods");
    if let Some(level) = qos.level() {
        levels.push(level);
    }
    levels.push(&pod);
    match driver {
        CgroupDriver::Cgroupfs => levels.iter().collect(),
        CgroupDriver::Systemd => systemd_slices(&levels),
    }
}

/// The systemd slice path for nested cgroup levels: level `i` is the slice
/// named by levels `0..=i` joined with `-`, each with `-` escaped to `_`
/// (the kubelet's `escapeSystemdCgroupName`).
fn systemd_slices(levels: &[&str]) -> PathBuf {
    let mut path = PathBuf::new();
    let mut name = String::new();
    for level in levels {
        if !name.is_empty() {
            name.push('-');
        }
        name.push_str(&level.replace('-', "_"));
        path.push(format!("{name}.slice"));
    }
    path
}

/// Every candidate directory for the pod under `root`, most likely first:
/// for each known prefix, both drivers, and the given QoS class (or all
/// three when unknown).
pub fn pod_cgroup_candidates(root: &Path, uid: &str, qos: Option<QosClass>) -> Vec<PathBuf> {
    let classes: Vec<QosClass> = qos.map_or_else(|| QosClass::ALL.to_vec(), |q| vec![q]);
    let mut out = Vec::new();
    for prefix in KNOWN_ROOT_PREFIXES {
        for driver in [CgroupDriver::Systemd, CgroupDriver::Cgroupfs] {
            for &q in &classes {
                out.push(root.join(pod_cgroup_relative(driver, prefix, q, uid)));
            }
        }
    }
    out
}

/// Limits of the fallback scan, so a huge or looping tree cannot stall the
/// reconciler.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Deepest level below the root that is read.
    pub max_depth: usize,
    /// Most directories read in one scan.
    pub max_dirs: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_depth: 8,
            max_dirs: 20_000,
        }
    }
}

/// How the pod's directory was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// One of the built candidates.
    Candidate(PathBuf),
    /// The fallback scan.
    Scanned(PathBuf),
}

impl Found {
    /// The directory.
    pub fn path(&self) -> &Path {
        match self {
            Self::Candidate(p) | Self::Scanned(p) => p,
        }
    }

    /// The directory, owned.
    pub fn into_path(self) -> PathBuf {
        match self {
            Self::Candidate(p) | Self::Scanned(p) => p,
        }
    }
}

/// Finds the pod's cgroup directory under `root`: the candidates first,
/// then a bounded scan for a directory named after the UID. `None` when the
/// cgroup does not exist (yet): the kubelet creates it just before the
/// sandbox, and the API event may come first.
pub fn resolve_pod_cgroup(
    root: &Path,
    uid: &str,
    qos: Option<QosClass>,
    limits: ScanLimits,
) -> Option<Found> {
    if !is_plausible_uid(uid) {
        return None;
    }
    if let Some(p) = pod_cgroup_candidates(root, uid, qos)
        .into_iter()
        .find(|p| p.is_dir())
    {
        return Some(Found::Candidate(p));
    }
    scan_for_pod(root, uid, limits).map(Found::Scanned)
}

/// A UID as the kubelet would put in a path: hex digits and dashes. Anything
/// else (a malformed object) must not become a path component.
fn is_plausible_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// True when a directory name is this pod's cgroup under either driver.
fn names_pod(name: &str, uid_dashes: &str, uid_underscores: &str) -> bool {
    let stem = name.strip_suffix(".slice").unwrap_or(name);
    let Some(idx) = stem.rfind("pod") else {
        return false;
    };
    let (before, tail) = stem.split_at(idx);
    let uid = &tail[3..];
    (before.is_empty() || before.ends_with('-')) && (uid == uid_dashes || uid == uid_underscores)
}

/// Breadth-first scan under `root` for the pod's directory. It does not
/// descend into container scopes or other pods.
fn scan_for_pod(root: &Path, uid: &str, limits: ScanLimits) -> Option<PathBuf> {
    let uid_underscores = uid.replace('-', "_");
    let mut queue = VecDeque::from([(root.to_path_buf(), 0usize)]);
    let mut visited = 0usize;
    while let Some((dir, depth)) = queue.pop_front() {
        visited += 1;
        if visited > limits.max_dirs {
            tracing::warn!(root = %root.display(), limit = limits.max_dirs, "pod cgroup scan stopped at its directory limit");
            return None;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if names_pod(name, uid, &uid_underscores) {
                return Some(entry.path());
            }
            let is_other_pod =
                name.contains("pod") && (name.starts_with("pod") || name.contains("-pod"));
            // systemd names are case-sensitive: `.scope` is exact.
            let is_container = Path::new(name).extension().is_some_and(|e| e == "scope");
            if depth + 1 < limits.max_depth && !is_other_pod && !is_container {
                queue.push_back((entry.path(), depth + 1));
            }
        }
    }
    None
}

/// What a cgroup path (a `/proc/PID/cgroup` `0::` line, or a directory
/// below the root) says about the pod and container it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroupPath {
    /// The pod UID, with dashes (canonical form).
    pub pod_uid: String,
    /// The container id, when the path goes below the pod level.
    pub container_id: Option<String>,
    /// The pod directory: the path up to and including the pod level.
    pub pod_dir: PathBuf,
}

/// Parses a cgroup path for the pod UID and container id, whatever the
/// driver and runtime (the reverse mapping, as Istio/SPIRE do it). The
/// UID's `_` (systemd) are turned back into `-`.
pub fn parse_pod_cgroup_path(path: &Path) -> Option<PodCgroupPath> {
    let mut pod_dir = PathBuf::new();
    let mut components = path.components();
    let mut uid = None;
    for c in components.by_ref() {
        pod_dir.push(c);
        let Some(name) = c.as_os_str().to_str() else {
            continue;
        };
        if let Some(found) = pod_uid_in(name) {
            uid = Some(found);
            break;
        }
    }
    let pod_uid = uid?;
    let container_id = components
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .and_then(container_id_in);
    Some(PodCgroupPath {
        pod_uid,
        container_id,
        pod_dir,
    })
}

/// `pod<uid>` or `…-pod<uid_>.slice` → the UID with dashes.
fn pod_uid_in(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".slice").unwrap_or(name);
    let idx = stem.rfind("pod")?;
    let (before, tail) = stem.split_at(idx);
    if !(before.is_empty() || before.ends_with('-')) {
        return None;
    }
    let uid = tail[3..].replace('_', "-");
    // A canonical UID: 8-4-4-4-12 hex digits.
    let groups: Vec<&str> = uid.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    (groups.len() == 5
        && groups
            .iter()
            .zip(shape)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit())))
    .then_some(uid)
}

/// The container id in a container cgroup's name, for every runtime's
/// naming; `None` for CRI-O's `crio-conmon-<id>.scope` (the monitor, not
/// the container) and for names that are no container at all.
fn container_id_in(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    if stem.starts_with("crio-conmon-") {
        return None;
    }
    let id = ["cri-containerd-", "crio-", "docker-", "containerd-"]
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .unwrap_or(stem);
    (id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

#[cfg(test)]
mod tests;
