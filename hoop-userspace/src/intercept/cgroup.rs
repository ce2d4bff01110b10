//! cgroup v2 helpers: finding the hierarchy, short-lived child cgroups for
//! `hoop exec`, and mapping processes and cgroup ids to paths.
#![forbid(unsafe_code)]

use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::InterceptError;

/// How long removal waits for killed processes to leave a cgroup.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`
/// (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid
/// ones).
pub fn cgroup2_root() -> Result<PathBuf, InterceptError> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(|source| InterceptError::Cgroup {
            action: "reading mount table",
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        })?;
    parse_cgroup2_mount(&mountinfo).ok_or(InterceptError::NoCgroup2)
}

/// Finds the first cgroup2 mount whose root is the hierarchy root.
fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // id parent maj:min root mountpoint options [optional…] - fstype source superopts
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (root == "/").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path of a process (relative to the cgroup2 root, starting
/// with `/`), from the `0::` line of `/proc/PID/cgroup`.
pub fn cgroup_path_of_pid(pid: u32) -> Option<String> {
    let content = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    content
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The cgroup v2 id of a cgroup directory: its inode number, which is what
/// `bpf_get_current_cgroup_id()` returns.
pub fn cgroup_id(dir: &Path) -> Result<u64, InterceptError> {
    fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| InterceptError::Cgroup {
            action: "reading the cgroup id",
            path: dir.to_owned(),
            source,
        })
}

/// Finds the directory with cgroup id `id` under any of `roots` (inclusive),
/// walking their subtrees.
pub fn find_cgroup_by_id(roots: &[&Path], id: u64) -> Option<PathBuf> {
    let mut stack: Vec<PathBuf> = roots.iter().map(|r| r.to_path_buf()).collect();
    while let Some(dir) = stack.pop() {
        let Ok(meta) = fs::metadata(&dir) else {
            continue;
        };
        if meta.ino() == id {
            return Some(dir);
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        stack.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    None
}

/// A child cgroup that exists for as long as this value: on drop (or
/// [`ScopedCgroup::remove`]) every process left in it is killed and the
/// directory removed.
#[derive(Debug)]
pub struct ScopedCgroup {
    path: PathBuf,
    id: u64,
    removed: bool,
}

static NEXT_SCOPE: AtomicU64 = AtomicU64::new(0);

impl ScopedCgroup {
    /// Creates `PARENT/hoop-exec-<pid>-<n>`, unique within this process.
    pub fn create(parent: &Path) -> Result<Self, InterceptError> {
        Self::create_with_prefix(parent, "hoop-exec")
    }

    /// Creates `PARENT/<prefix>-<pid>-<n>`.
    pub fn create_with_prefix(parent: &Path, prefix: &str) -> Result<Self, InterceptError> {
        loop {
            let n = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{prefix}-{}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let id = cgroup_id(&path)?;
                    return Ok(Self {
                        path,
                        id,
                        removed: false,
                    });
                }
                // Left over from an earlier process with our pid: try the next name.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(InterceptError::Cgroup {
                        action: "creating a cgroup",
                        path,
                        source,
                    });
                }
            }
        }
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id (inode number), as `bpf_get_current_cgroup_id()` reports it.
    pub fn cgroup_id(&self) -> u64 {
        self.id
    }

    /// `cgroup.procs`: write a pid here to move that process in (`0` moves the
    /// writer, which is what a `pre_exec` hook wants).
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Moves a process into the cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), InterceptError> {
        fs::write(self.procs_file(), pid.to_string()).map_err(|source| InterceptError::Cgroup {
            action: "moving a process into the cgroup",
            path: self.procs_file(),
            source,
        })
    }

    /// Pids in this cgroup and its descendants.
    pub fn pids(&self) -> Result<Vec<u32>, InterceptError> {
        pids_recursive(&self.path).map_err(|source| InterceptError::Cgroup {
            action: "listing the cgroup's processes",
            path: self.path.clone(),
            source,
        })
    }

    /// Kills what is left in the cgroup and removes it (and any child cgroups).
    pub fn remove(mut self) -> Result<(), InterceptError> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Result<(), InterceptError> {
        if self.removed {
            return Ok(());
        }
        let pids = self.pids()?;
        if pids.contains(&std::process::id()) {
            return Err(InterceptError::ContainsSelf(self.path.clone()));
        }
        let cgroup_kill = self.path.join("cgroup.kill");
        if !pids.is_empty() {
            // cgroup.kill (5.14+) kills the whole subtree atomically, including
            // processes forked while we look; otherwise signal each pid.
            if fs::write(&cgroup_kill, "1").is_err() {
                for pid in &pids {
                    let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                }
            }
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            match remove_tree(&self.path) {
                Ok(()) => {
                    self.removed = true;
                    return Ok(());
                }
                // EBUSY: killed processes have not exited yet.
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline =>
                {
                    for pid in self.pids().unwrap_or_default() {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.removed = true;
                    return Ok(());
                }
                Err(source) => {
                    return Err(InterceptError::Cgroup {
                        action: "removing the cgroup",
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
    }
}

/// Removes `PARENT/<prefix>-<pid>-<n>` cgroups whose creating process is
/// gone (a hoop that was `kill -9`ed cannot clean up after itself), killing
/// whatever is still inside. Returns the directories removed.
pub fn sweep_stale(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else {
        return removed;
    };
    let marker = format!("{prefix}-");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&marker)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // Signal 0 probes for existence; ESRCH means the owner is gone.
        if kill(Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH) {
            continue;
        }
        let path = entry.path();
        let Ok(id) = cgroup_id(&path) else { continue };
        let stale = ScopedCgroup {
            path: path.clone(),
            id,
            removed: false,
        };
        if stale.remove().is_ok() {
            removed.push(path);
        }
    }
    removed
}

impl Drop for ScopedCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove_inner() {
            log::warn!("hoop: could not remove cgroup {}: {e}", self.path.display());
        }
    }
}

fn pids_recursive(dir: &Path) -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        match fs::read_to_string(d.join("cgroup.procs")) {
            Ok(s) => pids.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        for entry in fs::read_dir(&d)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    Ok(pids)
}

/// Removes a cgroup directory and its child cgroups, deepest first. (cgroupfs
/// directories hold only interface files, which `rmdir` ignores.)
fn remove_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn finds_hybrid_cgroup2_mount() {
        assert_eq!(
            parse_cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn skips_bind_mounted_subtrees_and_unescapes() {
        let info = "\
40 1 0:27 /some/sub /mnt/sub rw - cgroup2 cgroup2 rw
41 1 0:27 / /mnt/with\\040space rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_cgroup2_mount(info),
            Some(PathBuf::from("/mnt/with space"))
        );
    }

    #[test]
    fn no_cgroup2_mount() {
        assert_eq!(
            parse_cgroup2_mount("25 1 0:23 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }
}
