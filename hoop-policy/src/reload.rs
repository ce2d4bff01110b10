//! Hot reload: the live policy behind an `ArcSwap`, and a watcher that
//! reloads it when the file changes (a polling thread) or on SIGHUP.
//!
//! The file is polled (the path it resolves to, modification time, size,
//! inode) rather than watched with inotify: Kubernetes updates a mounted
//! ConfigMap by an atomic swap — it writes the new files into a new
//! timestamped directory, points the `..data` symlink at it, and the file
//! is a symlink through `..data` — which inotify on the file path misses but
//! a poll that resolves the symlinks again each time sees. A change is reloaded once the file has been stable for the
//! debounce interval, so a half-written file is not picked up. A reload that
//! fails keeps the last good policy, logs every diagnostic and counts
//! `hoop_policy_reload_errors_total`; a success counts `hoop_policy_reloads_total`.
//! Only `policy:` (and, in the binary, `credentials:`, reloaded with it
//! through [`Reload`]) is hot: other sections take effect on restart.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntGaugeVec};
use tracing::{error, info, warn};

use super::{Policy, policy_metrics};
use hoop_config::{ConfigError, Diagnostic};

/// See [`PolicyHandle::cache`].
pub type PolicyCache = arc_swap::Cache<Arc<ArcSwap<Policy>>, Arc<Policy>>;

/// The live policy. Clones share it. Judge each statement against one
/// [`PolicyHandle::snapshot`], never across two.
#[derive(Clone)]
pub struct PolicyHandle {
    current: Arc<ArcSwap<Policy>>,
    /// The SHA-256 of the file the live policy came from ("" until known).
    source: Arc<ArcSwap<String>>,
    counters: ReloadCounters,
}

/// The counters a handle bumps on reload.
#[derive(Clone)]
pub struct ReloadCounters {
    /// Successful reloads.
    pub reloads: IntCounter,
    /// Rejected reloads.
    pub errors: IntCounter,
    /// `hoop_policy_info{sha256}`, set to the live policy's file hash.
    pub info: Option<IntGaugeVec>,
}

impl Default for ReloadCounters {
    /// The process-wide `hoop_policy_reloads_total` / `hoop_policy_reload_errors_total`.
    fn default() -> Self {
        let metrics = policy_metrics();
        Self {
            reloads: metrics.reloads_total.clone(),
            errors: metrics.reload_errors_total.clone(),
            info: Some(metrics.info.clone()),
        }
    }
}

impl PolicyHandle {
    /// A handle serving `policy`, counting on the process metrics.
    pub fn new(policy: Policy) -> Self {
        Self::with_counters(policy, ReloadCounters::default())
    }

    /// A handle counting reloads on the given counters.
    pub fn with_counters(policy: Policy, counters: ReloadCounters) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(policy)),
            source: Arc::new(ArcSwap::from_pointee(String::new())),
            counters,
        }
    }

    /// Notes the SHA-256 of the file the live policy came from: reported by
    /// `hoop_policy_info{sha256}` and `/healthz`.
    pub fn set_source_sha256(&self, sha256: String) {
        if let Some(info) = &self.counters.info {
            info.reset();
            info.with_label_values(&[sha256.as_str()]).set(1);
        }
        self.source.store(Arc::new(sha256));
    }

    /// The SHA-256 of the file the live policy came from ("" when unknown).
    pub fn source_sha256(&self) -> Arc<String> {
        self.source.load_full()
    }

    /// The current policy; it stays valid (and unchanged) however long it is held.
    pub fn snapshot(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// A per-holder view of the live policy whose `load` costs one pointer
    /// comparison while the policy is unchanged (no reference counting):
    /// for a session, which looks at it once per statement.
    pub fn cache(&self) -> PolicyCache {
        arc_swap::Cache::new(self.current.clone())
    }

    /// Replaces the policy.
    pub fn store(&self, policy: Policy) {
        self.current.store(Arc::new(policy));
    }

    /// Reloads the policy from `path`. On success the new policy is live and its
    /// warnings are returned; on failure the old one stays, every diagnostic is
    /// logged, the error counter goes up, and the error is returned.
    pub fn reload_from(&self, path: &Path) -> Result<Vec<Diagnostic>, ConfigError> {
        self.reload_with(
            path,
            |path| crate::load_checked(path).map(|l| (l.policy, l.warnings, l.sha256, ())),
            |()| {},
        )
    }

    /// Reloads from `path` with `load`, which reads the whole file and
    /// compiles its policy and whatever else is hot (`R`, such as the
    /// credentials), with the SHA-256 of the text it read. All or nothing: on success the policy goes live and
    /// `install` gets the rest, at once; on failure nothing changes, every
    /// diagnostic is logged, the error counter goes up, and the error is
    /// returned.
    pub fn reload_with<R>(
        &self,
        path: &Path,
        load: impl FnOnce(&Path) -> Result<(Policy, Vec<Diagnostic>, String, R), ConfigError>,
        install: impl FnOnce(R),
    ) -> Result<Vec<Diagnostic>, ConfigError> {
        match load(path) {
            Ok((policy, warnings, sha256, rest)) => {
                self.store(policy);
                install(rest);
                self.counters.reloads.inc();
                for warning in &warnings {
                    warn!(diagnostic = %warning, "policy warning");
                }
                info!(path = %path.display(), %sha256, "policy reloaded");
                self.set_source_sha256(sha256);
                Ok(warnings)
            }
            Err(e) => {
                self.counters.errors.inc();
                match &e {
                    ConfigError::Invalid { diagnostics, .. } => {
                        for diagnostic in diagnostics {
                            error!(diagnostic = %diagnostic, "policy reload rejected");
                        }
                    }
                    ConfigError::Read { .. } => error!(error = %e, "policy reload rejected"),
                }
                warn!(path = %path.display(), sha256 = %self.source_sha256(), "keeping the last good policy");
                Err(e)
            }
        }
    }
}

/// What [`spawn_watcher`] reloads when the file changes or on SIGHUP.
pub trait Reload: Clone + Send + Sync + 'static {
    /// Reloads everything hot from `path`, all or nothing; on failure what
    /// was live stays (and the failure is logged and counted).
    fn reload(&self, path: &Path);
}

impl Reload for PolicyHandle {
    fn reload(&self, path: &Path) {
        let _ = self.reload_from(path);
    }
}

/// How the watcher polls.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// How often the file is checked (default 500ms).
    pub poll_interval: Duration,
    /// How long a change must be stable before it is loaded (default 250ms).
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            debounce: Duration::from_millis(250),
        }
    }
}

/// What identifies one version of the file (through symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    /// Where the path leads after every symlink: a ConfigMap update swaps
    /// `..data` to a new directory, so this changes even if the new file
    /// happened to match the old one's size, time and inode number.
    resolved: Option<PathBuf>,
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        resolved: std::fs::canonicalize(path).ok(),
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
        device: meta.dev(),
    })
}

/// The running watcher: a thread that polls the file and a task that waits
/// for SIGHUP. Both stop on [`PolicyWatcher::stop`] or drop.
pub struct PolicyWatcher {
    /// Dropping it wakes the polling thread, which then exits.
    stop: Option<std::sync::mpsc::Sender<()>>,
    poller: Option<std::thread::JoinHandle<()>>,
    hangup: tokio::task::JoinHandle<()>,
}

impl PolicyWatcher {
    /// Stops watching; returns once the polling thread has exited (it is
    /// woken at once, unless a reload is under way).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.hangup.abort();
        self.stop.take();
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts reloading `path` into `handle` when the file changes (polled by a
/// thread of its own) and on SIGHUP (a task on the current tokio runtime).
///
/// The poll runs off the runtime on purpose: a timer that is always pending
/// makes every turn of the runtime's event loop (two per proxied query)
/// compute the next timer expiry, which costs more than the poll.
///
/// The file's current version is noted before this returns, so call it right
/// after loading the policy the handle starts with: any later change is seen.
pub fn spawn_watcher<R: Reload>(handle: R, path: PathBuf, options: WatchOptions) -> PolicyWatcher {
    // The version last loaded (or found at start), shared by both triggers;
    // each holds the lock while it reloads.
    let seen = Arc::new(std::sync::Mutex::new(fingerprint(&path)));
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let poller = {
        let (handle, path, seen) = (handle.clone(), path.clone(), seen.clone());
        std::thread::Builder::new()
            .name("hoop-policy".into())
            .spawn(move || poll_file(&handle, &path, &seen, options, &stopped))
            .map_err(|e| warn!(error = %e, "cannot start the policy file watcher; policy reloads on SIGHUP only"))
            .ok()
    };
    let hangup = tokio::spawn(async move {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => signal,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; policy reloads on file change only");
                return;
            }
        };
        while hangup.recv().await.is_some() {
            info!(path = %path.display(), "SIGHUP: reloading policy");
            // Held across the reload: the two triggers reload one at a time,
            // so an older read of the file never replaces a newer one.
            let mut seen = lock(&seen);
            *seen = fingerprint(&path);
            handle.reload(&path);
        }
    });
    PolicyWatcher {
        stop: Some(stop),
        poller,
        hangup,
    }
}

fn lock(
    seen: &std::sync::Mutex<Option<Fingerprint>>,
) -> std::sync::MutexGuard<'_, Option<Fingerprint>> {
    // A panic while holding it leaves a plain value behind: still usable.
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The polling thread: checks every `poll_interval`, reloads once a change
/// has been stable for `debounce`, and returns when `stopped` is signalled
/// or its sender dropped.
fn poll_file<R: Reload>(
    handle: &R,
    path: &Path,
    seen: &std::sync::Mutex<Option<Fingerprint>>,
    options: WatchOptions,
    stopped: &std::sync::mpsc::Receiver<()>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    // Sleeps for `d`; false once the watcher is stopped.
    let wait = |d: Duration| matches!(stopped.recv_timeout(d), Err(RecvTimeoutError::Timeout));
    while wait(options.poll_interval) {
        let now = fingerprint(path);
        if now == *lock(seen) {
            continue;
        }
        // Wait until the file stops changing.
        let mut settled = now;
        loop {
            if !wait(options.debounce) {
                return;
            }
            let again = fingerprint(path);
            if again == settled {
                break;
            }
            settled = again;
        }
        let mut seen = lock(seen);
        *seen = settled;
        handle.reload(path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hoop_core::{SessionIdentity, Submission, Verdict};
    use hoop_sql::pg::Postgres;

    fn counters() -> ReloadCounters {
        ReloadCounters {
            reloads: IntCounter::new("test_reloads", "test").unwrap(),
            errors: IntCounter::new("test_reload_errors", "test").unwrap(),
            info: None,
        }
    }

    fn denies_drop(handle: &PolicyHandle) -> bool {
        let snapshot = handle.snapshot();
        matches!(
            snapshot
                .judge(
                    &Postgres,
                    "drop table t",
                    Submission::Text,
                    &SessionIdentity::default()
                )
                .verdict,
            Verdict::Deny(_)
        )
    }

    /// Replaces the file the way a ConfigMap update does: write aside, rename over.
    fn replace(path: &Path, text: &str) {
        let aside = path.with_extension("tmp");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, path).unwrap();
    }

    const ALLOW_ALL: &str = "policy: {}\n";
    const DENY_DROP: &str = "policy:\n  deny:\n    - statements: [drop]\n";
    const BROKEN: &str = "policy:\n  deny:\n    - statements: [dorp]\n";

    #[test]
    fn a_failed_reload_keeps_the_last_good_policy_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoop.yaml");
        std::fs::write(&path, DENY_DROP).unwrap();
        let counters = counters();
        let handle = PolicyHandle::with_counters(
            crate::load_checked(&path).unwrap().policy,
            counters.clone(),
        );
        assert!(denies_drop(&handle));

        let held = handle.snapshot();
        replace(&path, ALLOW_ALL);
        handle.reload_from(&path).unwrap();
        assert!(!denies_drop(&handle));
        assert_eq!(counters.reloads.get(), 1);
        // A snapshot taken before the swap still judges with the old policy.
        assert!(matches!(
            held.judge(
                &Postgres,
                "drop table t",
                Submission::Text,
                &SessionIdentity::default()
            )
            .verdict,
            Verdict::Deny(_)
        ));

        replace(&path, DENY_DROP);
        handle.reload_from(&path).unwrap();
        replace(&path, BROKEN);
        let err = handle.reload_from(&path).unwrap_err();
        assert!(
            err.to_string().contains("unknown statement kind `dorp`"),
            "{err}"
        );
        assert!(denies_drop(&handle), "the last good policy stays");
        assert_eq!(counters.errors.get(), 1);
        assert_eq!(counters.reloads.get(), 2);

        std::fs::remove_file(&path).unwrap();
        assert!(handle.reload_from(&path).is_err());
        assert!(denies_drop(&handle));
        assert_eq!(counters.errors.get(), 2);
    }

    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        for _ in 0..250 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// A policy file holding `text` and a handle loaded from it.
    fn policy_file(text: &str) -> (tempfile::TempDir, PathBuf, PolicyHandle, ReloadCounters) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoop.yaml");
        std::fs::write(&path, text).unwrap();
        let counters = counters();
        let handle = PolicyHandle::with_counters(
            crate::load_checked(&path).unwrap().policy,
            counters.clone(),
        );
        (dir, path, handle, counters)
    }

    #[tokio::test]
    async fn the_watcher_reloads_on_change_and_survives_a_broken_file() {
        let (_dir, path, handle, counters) = policy_file(ALLOW_ALL);
        let options = WatchOptions {
            poll_interval: Duration::from_millis(20),
            debounce: Duration::from_millis(20),
        };
        let watcher = spawn_watcher(handle.clone(), path.clone(), options);

        replace(&path, DENY_DROP);
        until("the new policy", || denies_drop(&handle)).await;
        assert_eq!(counters.reloads.get(), 1);

        replace(&path, BROKEN);
        until("the reload error", || counters.errors.get() == 1).await;
        assert!(denies_drop(&handle));

        replace(&path, ALLOW_ALL);
        until("recovery", || !denies_drop(&handle)).await;
        assert_eq!(counters.reloads.get(), 2);
        watcher.stop();
    }

    /// A ConfigMap volume as the kubelet writes it: `..<timestamp>/` holds
    /// the files, `..data` points at it, `hoop.yaml` -> `..data/hoop.yaml`.
    struct ConfigMapVolume {
        dir: PathBuf,
        generation: u32,
    }

    impl ConfigMapVolume {
        fn new(dir: &Path, text: &str) -> Self {
            let mut volume = Self {
                dir: dir.to_path_buf(),
                generation: 0,
            };
            volume.update(text);
            std::os::unix::fs::symlink("..data/hoop.yaml", dir.join("hoop.yaml")).unwrap();
            volume
        }

        /// The kubelet's atomic update: a new timestamped directory, a
        /// `..data_tmp` symlink to it renamed over `..data`, the old
        /// directory removed. The file is never written in place.
        fn update(&mut self, text: &str) {
            self.generation += 1;
            let old = std::fs::read_link(self.dir.join("..data")).ok();
            let name = format!(
                "..2026_12_04_21_00_{:02}.{}",
                self.generation,
                100 + self.generation
            );
            let new = self.dir.join(&name);
            std::fs::create_dir(&new).unwrap();
            std::fs::write(new.join("hoop.yaml"), text).unwrap();
            let tmp = self.dir.join("..data_tmp");
            std::os::unix::fs::symlink(&name, &tmp).unwrap();
            std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
            if let Some(old) = old {
                std::fs::remove_dir_all(self.dir.join(old)).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_configmap_symlink_swap_is_reloaded_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let mut volume = ConfigMapVolume::new(dir.path(), ALLOW_ALL);
        let path = dir.path().join("hoop.yaml");
        let counters = counters();
        let loaded = crate::load_checked(&path).unwrap();
        let handle = PolicyHandle::with_counters(loaded.policy, counters.clone());
        handle.set_source_sha256(loaded.sha256.clone());
        let options = WatchOptions {
            poll_interval: Duration::from_millis(20),
            debounce: Duration::from_millis(20),
        };
        let watcher = spawn_watcher(handle.clone(), path.clone(), options);

        volume.update(DENY_DROP);
        until("the swapped-in policy", || denies_drop(&handle)).await;
        assert_eq!(counters.reloads.get(), 1);
        assert_eq!(*handle.source_sha256(), hoop_config::sha256_hex(DENY_DROP));
        assert_ne!(*handle.source_sha256(), loaded.sha256);

        volume.update(BROKEN);
        until("the reload error", || counters.errors.get() == 1).await;
        assert!(
            denies_drop(&handle),
            "a broken ConfigMap keeps the last good policy"
        );
        assert_eq!(*handle.source_sha256(), hoop_config::sha256_hex(DENY_DROP));

        volume.update(ALLOW_ALL);
        until("recovery", || !denies_drop(&handle)).await;
        assert_eq!(*handle.source_sha256(), loaded.sha256);
        watcher.stop();
    }

    #[tokio::test]
    async fn sighup_reloads_without_waiting_for_the_poll() {
        // Installed first, process-wide: a SIGHUP that arrives before the
        // watcher's own handler can never terminate the test binary.
        let _keep_alive =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
        let (_dir, path, handle, counters) = policy_file(ALLOW_ALL);
        // The file poll would take an hour: only SIGHUP can reload.
        let options = WatchOptions {
            poll_interval: Duration::from_hours(1),
            debounce: Duration::from_hours(1),
        };
        let watcher = spawn_watcher(handle.clone(), path.clone(), options);
        replace(&path, DENY_DROP);
        // Signalled until seen: the watcher's task may not have installed
        // its handler yet when the first one arrives.
        for _ in 0..250 {
            if denies_drop(&handle) {
                break;
            }
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(denies_drop(&handle), "SIGHUP did not reload the policy");
        assert!(counters.reloads.get() >= 1);
        watcher.stop();
    }

    #[tokio::test]
    async fn stopping_the_watcher_ends_its_thread_without_waiting_for_a_poll() {
        let (_dir, path, handle, _) = policy_file(ALLOW_ALL);
        let options = WatchOptions {
            poll_interval: Duration::from_hours(1),
            debounce: Duration::from_hours(1),
        };
        let watcher = spawn_watcher(handle, path, options);
        let thread = watcher.poller.as_ref().unwrap().thread().clone();
        assert_eq!(thread.name(), Some("hoop-policy"));
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            watcher.stop();
            let _ = done.send(());
        });
        // stop() joins the thread: it returns only once the thread is gone.
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("stop() waited for the hour-long poll instead of waking the thread");
    }

    #[test]
    fn process_counters_are_registered() {
        let _ = policy_metrics();
        let names: Vec<String> = hoop_core::metrics::metrics()
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(
            names.contains(&"hoop_policy_reloads_total".to_owned()),
            "{names:?}"
        );
        assert!(names.contains(&"hoop_policy_reload_errors_total".to_owned()));
    }
}
