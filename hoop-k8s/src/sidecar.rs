//! Sidecar mode (`kubernetes.mode: sidecar`): hoop runs inside one pod and
//! governs only that pod, with no API access.
//!
//! - Identity comes from the Downward API environment
//!   ([`crate::workload::from_downward_api`]).
//! - The pod cgroup: when hoop's own cgroup path names this pod (a
//!   privileged container sees host paths, e.g.
//!   `/kubepods.slice/…-pod<uid>.slice/cri-containerd-<id>.scope`), its pod
//!   level; otherwise (a private cgroup namespace shows `0::/`) the pod UID
//!   resolved under the cgroup root, which the sidecar mounts from the host.
//! - [`run`] governs the pod, retrying with backoff until it succeeds, then
//!   re-asserts it every resync; the [`StatusBoard`] says governed once the
//!   programs are attached and the listener bound, which is what `/ready`
//!   (the native sidecar's startup probe) waits for.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tracing::{info, warn};

use crate::{
    Workload,
    cgroup_path::{ScanLimits, parse_pod_cgroup_path, resolve_pod_cgroup},
    reconcile::{FailureReason, GovernError, GovernRequest, PodGovernor, RetryPolicy},
    status::{PodState, StatusBoard},
};

/// The sidecar's pod cgroup: from `own_cgroup` (hoop's cgroup, relative to
/// the cgroup2 root as `/proc/self/cgroup` shows it) when it names this pod,
/// else by UID under `cgroup_root`.
pub fn pod_cgroup(cgroup_root: &Path, uid: &str, own_cgroup: Option<&str>) -> Option<PathBuf> {
    if let Some(own) = own_cgroup
        && let Some(parsed) = parse_pod_cgroup_path(Path::new(own))
        && parsed.pod_uid == uid
    {
        let rel = parsed.pod_dir.strip_prefix("/").unwrap_or(&parsed.pod_dir);
        let dir = cgroup_root.join(rel);
        if dir.is_dir() {
            return Some(dir);
        }
    }
    resolve_pod_cgroup(cgroup_root, uid, None, ScanLimits::default())
        .map(crate::cgroup_path::Found::into_path)
}

/// hoop's own cgroup v2 path from `/proc/self/cgroup` (`0::<path>`).
pub fn own_cgroup() -> Option<String> {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// What the sidecar governs.
#[derive(Debug, Clone)]
pub struct SidecarSettings {
    /// This pod.
    pub workload: Workload,
    /// Where the host's cgroup tree is mounted.
    pub cgroup_root: PathBuf,
    /// hoop's own cgroup path (see [`own_cgroup`]).
    pub own_cgroup: Option<String>,
    /// The intercepted ports.
    pub ports: Vec<u16>,
    /// Retry timing until the first success.
    pub retry: RetryPolicy,
    /// How often governance is re-asserted afterwards.
    pub resync_interval: Duration,
}

/// Governs this pod until `shutdown` completes.
pub async fn run<G: PodGovernor>(
    settings: &SidecarSettings,
    governor: Arc<G>,
    board: StatusBoard,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut attempt: u32 = 0;
    loop {
        let result = match pod_cgroup(
            &settings.cgroup_root,
            &settings.workload.uid,
            settings.own_cgroup.as_deref(),
        ) {
            None => Err(GovernError::new(
                FailureReason::CgroupNotFound,
                format!(
                    "no cgroup for this pod (UID {}) under {}: mount the host's cgroup2 filesystem \
                     into the sidecar (hostPath /sys/fs/cgroup) or run it privileged",
                    settings.workload.uid,
                    settings.cgroup_root.display()
                ),
            )),
            Some(cgroup) => {
                let request = GovernRequest {
                    workload: settings.workload.clone(),
                    cgroup,
                    ports: settings.ports.clone(),
                    require: false,
                    host_network: false,
                };
                governor.govern(&request).await
            }
        };
        let wait = match result {
            Ok(()) => {
                if !board.is_governed(&settings.workload.uid) {
                    info!(pod = %settings.workload, "this pod is governed");
                }
                board.set(&settings.workload, &settings.ports, PodState::Governed);
                attempt = 0;
                settings.resync_interval
            }
            Err(e) => {
                let pending = e.reason.is_pending();
                let delay = settings.retry.delay_for(attempt, pending);
                attempt = attempt.saturating_add(1);
                warn!(pod = %settings.workload, reason = e.reason.as_str(), error = %e.chain(), retry_in = ?delay, "cannot govern this pod yet");
                let state = if pending {
                    PodState::Pending {
                        reason: e.reason.as_str(),
                    }
                } else {
                    PodState::Failed {
                        reason: e.reason.as_str(),
                        message: e.chain(),
                    }
                };
                board.set(&settings.workload, &settings.ports, state);
                delay
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use std::{collections::HashSet, sync::Mutex};

    use super::*;

    const UID: &str = "8a1f5b2c-3d4e-4f60-8a9b-0c1d2e3f4a5b";

    #[test]
    fn pod_cgroup_from_own_path_or_by_uid() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            UID.replace('-', "_")
        ));
        std::fs::create_dir_all(pod.join("cri-containerd-abc.scope")).unwrap();
        let own = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
            UID.replace('-', "_"),
            "ab".repeat(32)
        );
        assert_eq!(pod_cgroup(root.path(), UID, Some(&own)), Some(pod.clone()));
        // A private cgroup namespace shows `/`: found by UID.
        assert_eq!(pod_cgroup(root.path(), UID, Some("/")), Some(pod.clone()));
        // Another pod's path is not trusted.
        let other = own.replace(
            &UID.replace('-', "_"),
            "11111111_2222_3333_4444_555555555555",
        );
        assert_eq!(pod_cgroup(root.path(), UID, Some(&other)), Some(pod));
        assert_eq!(
            pod_cgroup(root.path(), "99999999-2222-3333-4444-555555555555", None),
            None
        );
    }

    #[derive(Default)]
    struct Flaky {
        calls: Mutex<u32>,
    }

    impl PodGovernor for Flaky {
        async fn govern(&self, _: &GovernRequest) -> Result<(), GovernError> {
            let mut n = self.calls.lock().unwrap();
            *n += 1;
            if *n < 3 {
                Err(GovernError::new(FailureReason::NetnsNotFound, "not yet"))
            } else {
                Ok(())
            }
        }
        async fn release(&self, _: &str) -> Result<(), GovernError> {
            Ok(())
        }
        async fn retain(&self, _: &HashSet<String>) {}
    }

    #[tokio::test(start_paused = true)]
    async fn becomes_ready_once_governed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(format!("kubepods/pod{UID}"))).unwrap();
        let settings = SidecarSettings {
            workload: Workload {
                uid: UID.into(),
                pod: "p".into(),
                namespace: "n".into(),
                ..Workload::default()
            },
            cgroup_root: root.path().to_owned(),
            own_cgroup: Some("/".into()),
            ports: vec![5432],
            retry: RetryPolicy::default(),
            resync_interval: Duration::from_secs(30),
        };
        let board = StatusBoard::new();
        let governor = Arc::new(Flaky::default());
        let task = tokio::spawn({
            let (board, governor, settings) = (board.clone(), governor.clone(), settings.clone());
            async move { run(&settings, governor, board, std::future::pending()).await }
        });
        board.wait_for(|b| b.ready(Some(UID))).await;
        assert_eq!(*governor.calls.lock().unwrap(), 3);
        task.abort();
    }
}
