//! Where pinned maps and links live in bpffs, so they outlive the agent.
//!
//! ```text
//! <pin_root>/hoop-v<LAYOUT_VERSION>/maps/<MAP NAME>
//! <pin_root>/hoop-v<LAYOUT_VERSION>/links/cg<cgroup id>-<connect4|connect6|sockops>
//! ```
//!
//! The layout version is in the path: an agent only ever adopts maps of the
//! layout it was built for. Pinned maps that exist are checked against the
//! expected key, value and size before they are reused.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::maps::MapInfo;
use hoop_common::{
    COUNTER_COUNT, ClientKey, LAYOUT_VERSION, MAP_COUNTERS, MAP_ORIGINAL_BY_CLIENT,
    MAP_ORIGINAL_BY_COOKIE, MAP_PORTS, MAP_SETTINGS, MAP_SKIP_TGIDS, MAP_TARGETS, MAX_PORT_ENTRIES,
    MAX_SKIP_TGIDS, MAX_TARGETS, MAX_TRACKED_CONNECTIONS, OriginalDst, PortKey, RedirectTarget,
    Settings,
};

use super::{
    InterceptError,
    bpf_link::{CgroupAttachPoint, CgroupLink},
};

/// The pin directory of one layout version.
#[derive(Debug, Clone)]
pub struct Pins {
    root: PathBuf,
    dir: PathBuf,
}

/// (name, key size, value size, max entries) of every pinned map.
fn expected_maps() -> [(&'static str, usize, usize, u32); 7] {
    use std::mem::size_of;
    [
        (MAP_SETTINGS, size_of::<u32>(), size_of::<Settings>(), 1),
        (MAP_PORTS, size_of::<PortKey>(), 1, MAX_PORT_ENTRIES),
        (
            MAP_TARGETS,
            size_of::<u64>(),
            size_of::<RedirectTarget>(),
            MAX_TARGETS,
        ),
        (MAP_SKIP_TGIDS, size_of::<u32>(), 1, MAX_SKIP_TGIDS),
        (
            MAP_ORIGINAL_BY_COOKIE,
            size_of::<u64>(),
            size_of::<OriginalDst>(),
            MAX_TRACKED_CONNECTIONS,
        ),
        (
            MAP_ORIGINAL_BY_CLIENT,
            size_of::<ClientKey>(),
            size_of::<OriginalDst>(),
            MAX_TRACKED_CONNECTIONS,
        ),
        (
            MAP_COUNTERS,
            size_of::<u32>(),
            size_of::<u64>(),
            COUNTER_COUNT,
        ),
    ]
}

impl Pins {
    /// The maps that are pinned (all of hoop's shared maps).
    pub const MAPS: [&'static str; 7] = [
        MAP_SETTINGS,
        MAP_PORTS,
        MAP_TARGETS,
        MAP_SKIP_TGIDS,
        MAP_ORIGINAL_BY_COOKIE,
        MAP_ORIGINAL_BY_CLIENT,
        MAP_COUNTERS,
    ];

    /// Opens (creating it if needed) the pin directory of this layout
    /// version under `root`, which must be on a bpffs, and checks any maps
    /// already pinned there.
    pub fn open(root: &Path) -> Result<Self, InterceptError> {
        let problem = |problem: String| InterceptError::Pins {
            path: root.to_owned(),
            problem,
        };
        fs::create_dir_all(root).map_err(|e| problem(format!("cannot create it: {e}")))?;
        let fs_type = nix::sys::statfs::statfs(root)
            .map_err(|e| problem(format!("statfs: {e}")))?
            .filesystem_type();
        if fs_type != nix::sys::statfs::BPF_FS_MAGIC {
            return Err(problem(
                "not on a bpf filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`, or a hostPath \
                 /sys/fs/bpf in the DaemonSet) or leave pinning off"
                    .into(),
            ));
        }
        let dir = root.join(format!("hoop-v{LAYOUT_VERSION}"));
        for sub in ["maps", "links"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| problem(format!("cannot create {sub}/: {e}")))?;
        }
        let pins = Self {
            root: root.to_owned(),
            dir,
        };
        pins.check_maps()?;
        Ok(pins)
    }

    fn check_maps(&self) -> Result<(), InterceptError> {
        for (name, key, value, max) in expected_maps() {
            let path = self.map_path(name);
            if !path.exists() {
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(|e| InterceptError::Pins {
                path: path.clone(),
                problem: format!("cannot open the pinned map: {e}"),
            })?;
            let got = (
                info.key_size() as usize,
                info.value_size() as usize,
                info.max_entries(),
            );
            if got != (key, value, max) {
                return Err(InterceptError::Pins {
                    path,
                    problem: format!(
                        "pinned map has key/value/size {got:?}, this hoop expects {:?}; \
                         it was pinned by an incompatible build: remove {} and restart",
                        (key, value, max),
                        self.dir.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Where a map is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    /// Where a link is pinned.
    pub fn link_path(&self, cgroup_id: u64, point: CgroupAttachPoint) -> PathBuf {
        self.dir
            .join("links")
            .join(format!("cg{cgroup_id}-{}", point.name()))
    }

    /// Every pinned link, by cgroup id and attach point (unparsable names
    /// are ignored).
    pub fn pinned_links(&self) -> Vec<(u64, CgroupAttachPoint, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.dir.join("links")) else {
            return Vec::new();
        };
        let mut out: Vec<_> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let (id, point) = name.to_str()?.strip_prefix("cg")?.split_once('-')?;
                Some((
                    id.parse().ok()?,
                    CgroupAttachPoint::from_name(point)?,
                    e.path(),
                ))
            })
            .collect();
        out.sort_by_key(|(id, point, _)| (*id, point.name()));
        out
    }

    /// Detaches the links and removes the pins of every other layout
    /// version under the root. Returns the directories removed.
    pub fn retire_other_versions(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_other = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("hoop-v"))
                && path != self.dir;
            if !is_other {
                continue;
            }
            if let Ok(links) = fs::read_dir(path.join("links")) {
                for link in links.flatten() {
                    if let Ok(l) = CgroupLink::from_pin(&link.path()) {
                        let _ = l.detach();
                    }
                }
            }
            match fs::remove_dir_all(&path) {
                Ok(()) => removed.push(path),
                Err(e) => log::warn!("hoop: removing old pins {}: {e}", path.display()),
            }
        }
        removed
    }
}
