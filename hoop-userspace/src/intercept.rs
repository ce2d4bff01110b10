//! Transparent interception: loading and attaching hoop's eBPF programs, and
//! recovering where a redirected connection was originally going.
//!
//! The kernel side (`hoop-ebpf`) rewrites TCP connects from a governed cgroup
//! to an intercepted port so they land on the proxy's listener, and records
//! the original destination. **The proxy recovers it with a map lookup**
//! ([`Interceptor::original_destination`], keyed by the accepted socket's peer
//! address), not with `getsockopt(SO_ORIGINAL_DST)`: the map works wherever
//! the proxy runs, whereas a `cgroup/getsockopt` program would have to be
//! attached to the proxy's own cgroup.
//!
//! IPv4-mapped destinations (`::ffff:a.b.c.d` on an `AF_INET6` socket) are
//! rewritten to `::ffff:<proxy v4 address>`; the kernel completes such a
//! connect through its IPv4 path, so it arrives on the proxy's **IPv4**
//! listener, and the original destination is reported as dialled (an IPv6
//! `SocketAddr` holding the mapped address).
//!
//! The proxy's own upstream connections must not be redirected: mark its
//! sockets with [`mark_socket`] (`SO_MARK` = [`InterceptSettings::skip_mark`])
//! and/or pass its pid as [`InterceptSettings::skip_tgid`].
//!
//! Dropping the [`Interceptor`] detaches every program (links are owned by
//! the loaded object).
// One `unsafe` remains (registering the log fd with tokio), allowed locally.
#![deny(unsafe_code)]

pub mod cgroup;

use std::{
    fmt,
    fs::File,
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SockOps,
        cgroup_sock_addr::CgroupSockAddrLinkId, sock_ops::SockOpsLinkId,
    },
};
use hoop_common::{
    COUNTER_COUNT, ClientKey, Counter, MAP_COUNTERS, MAP_ORIGINAL_BY_CLIENT, MAP_PORTS,
    MAP_SETTINGS, MAP_SKIP_TGIDS, MAX_PORTS, OriginalDst, PROG_CONNECT4, PROG_CONNECT6,
    PROG_SOCKOPS, Settings, ipv4_to_word, ipv6_to_words,
};

/// The eBPF object built by `build.rs` (empty when built with `AYA_BUILD_SKIP`).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hoop"));

/// Default `SO_MARK` for the proxy's own sockets: ASCII "HOOP".
pub const DEFAULT_SKIP_MARK: u32 = 0x484F_4F50;

/// What to intercept and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptSettings {
    /// Destination TCP ports whose connects are redirected (1..=64 entries, none zero).
    pub ports: Vec<u16>,
    /// The proxy's IPv4 listener; receives IPv4 and IPv4-mapped connects.
    pub proxy_v4: SocketAddrV4,
    /// The proxy's IPv6 listener; receives other IPv6 connects.
    pub proxy_v6: SocketAddrV6,
    /// Sockets with this `SO_MARK` are never redirected (0 disables the check).
    pub skip_mark: u32,
    /// Connects from this process (tgid) are never redirected (0 disables it).
    pub skip_tgid: u32,
}

/// Where a redirected connection was originally going, and who dialled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalDestination {
    /// The destination as the application dialled it. A connect to
    /// `::ffff:a.b.c.d` is reported as that IPv6 (mapped) address.
    pub addr: SocketAddr,
    /// The connecting process's tgid (its pid in userspace terms).
    pub tgid: u32,
    /// The connecting task's cgroup v2 id (inode of its cgroup directory).
    pub cgroup_id: u64,
}

/// Redirect counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedirectCounters {
    /// IPv4 connects redirected.
    pub v4: u64,
    /// IPv6 connects redirected.
    pub v6: u64,
    /// IPv4-mapped IPv6 connects redirected.
    pub v4_mapped: u64,
    /// Intercepted-port connects skipped because of the skip mark or tgid.
    pub skipped_self: u64,
    /// Connects refused (`EPERM`) because the original destination could not
    /// be recorded: hoop fails closed rather than let them bypass the proxy.
    pub refused: u64,
}

impl RedirectCounters {
    /// All redirected connects, whatever their family.
    pub fn redirects_total(&self) -> u64 {
        self.v4 + self.v6 + self.v4_mapped
    }
}

/// Why interception could not be set up or queried.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The binary carries no eBPF object: it was built with `AYA_BUILD_SKIP`.
    #[error(
        "this hoop binary was built without its eBPF programs (AYA_BUILD_SKIP was set at build time); \
         rebuild without AYA_BUILD_SKIP, with nightly rust-src and bpf-linker installed (`cargo xtask setup`)"
    )]
    EmptyObject,
    /// The kernel refused a BPF operation for lack of privileges.
    #[error(
        "not permitted to {action}: hoop's interception needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON \
         ({privileges})"
    )]
    NotPermitted {
        /// What hoop was doing.
        action: String,
        /// The uid and which of the needed capabilities this process lacks.
        privileges: String,
        /// The refused operation's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The embedded object could not be loaded (parsing, BTF, map creation).
    #[error("loading hoop's eBPF object failed")]
    Load(#[source] EbpfError),
    /// The kernel verifier rejected one of the programs.
    #[error("the kernel refused eBPF program `{program}`; verifier log:\n{verifier_log}")]
    KernelRefused {
        /// The program's name.
        program: &'static str,
        /// The verifier's output.
        verifier_log: String,
        /// The `BPF_PROG_LOAD` error.
        #[source]
        source: std::io::Error,
    },
    /// A program expected in the object is absent (object and loader out of sync).
    #[error("eBPF program `{0}` is missing from hoop's object (stale build?)")]
    ProgramMissing(&'static str),
    /// A map expected in the object is absent (object and loader out of sync).
    #[error("eBPF map `{0}` is missing from hoop's object (stale build?)")]
    MapMissing(&'static str),
    /// Any other failure handling a program.
    #[error("eBPF program `{program}`")]
    Program {
        /// The program's name.
        program: &'static str,
        /// What failed.
        #[source]
        source: ProgramError,
    },
    /// Attaching a program to a cgroup failed.
    #[error("attaching `{program}` to cgroup {}", cgroup.display())]
    Attach {
        /// The program's name.
        program: &'static str,
        /// The cgroup directory.
        cgroup: PathBuf,
        /// What failed.
        #[source]
        source: ProgramError,
    },
    /// The programs are already attached to this cgroup by this interceptor.
    #[error("hoop is already attached to cgroup {}", .0.display())]
    AlreadyAttached(PathBuf),
    /// Reading or writing a BPF map failed.
    #[error("eBPF map `{map}`")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What failed.
        #[source]
        source: MapError,
    },
    /// The settings cannot be used.
    #[error("invalid interception settings: {0}")]
    InvalidSettings(String),
    /// No cgroup v2 hierarchy is mounted.
    #[error(
        "no cgroup v2 (cgroup2) mount found in /proc/self/mountinfo; hoop attaches to cgroup v2 only \
         (mount one with `mount -t cgroup2 none /sys/fs/cgroup`)"
    )]
    NoCgroup2,
    /// A cgroup file operation failed.
    #[error("cgroup {}: {action}", path.display())]
    Cgroup {
        /// What hoop was doing.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A scoped cgroup still holds the current process, so killing its
    /// members would kill hoop itself.
    #[error("cgroup {} contains this process; move it out before removing the cgroup", .0.display())]
    ContainsSelf(PathBuf),
    /// Setting `SO_MARK` on a socket failed (needs CAP_NET_ADMIN).
    #[error("setting SO_MARK on a socket (needs CAP_NET_ADMIN)")]
    SocketMark(#[source] nix::Error),
    /// A map entry had an unknown address family.
    #[error("corrupt original-destination entry (address family {0})")]
    CorruptEntry(u32),
}

/// Which of the capabilities interception needs this process has; used in
/// [`InterceptError::NotPermitted`] messages.
fn privilege_summary() -> String {
    const NEEDED: [(u32, &str); 4] = [
        (39, "CAP_BPF"),
        (12, "CAP_NET_ADMIN"),
        (38, "CAP_PERFMON"),
        (21, "CAP_SYS_ADMIN"),
    ];
    let uid = nix::unistd::geteuid();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    let Some(cap_eff) = cap_eff else {
        return format!("euid {uid}, effective capabilities unknown");
    };
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, _)| cap_eff & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        format!("euid {uid}, all of CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN present")
    } else {
        format!("euid {uid}, missing {}", missing.join(", "))
    }
}

/// True when `err` (or a cause) is `EPERM`: the kernel's "not privileged".
fn is_eperm(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(nix::libc::EPERM)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

fn not_permitted(
    action: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> InterceptError {
    InterceptError::NotPermitted {
        action: action.into(),
        privileges: privilege_summary(),
        source: Box::new(source),
    }
}

/// A cgroup the programs are attached to, with the links to undo.
struct AttachedCgroup {
    path: PathBuf,
    cgroup_id: u64,
    connect4: CgroupSockAddrLinkId,
    connect6: CgroupSockAddrLinkId,
    sockops: SockOpsLinkId,
}

/// hoop's loaded eBPF programs and maps. Dropping it detaches everything.
pub struct Interceptor {
    // Declared first so it drops first: links and programs go before the maps.
    ebpf: Ebpf,
    by_client: Mutex<HashMap<MapData, ClientKey, OriginalDst>>,
    skip_tgids: Mutex<HashMap<MapData, u32, u8>>,
    counters: PerCpuArray<MapData, u64>,
    attached: Vec<AttachedCgroup>,
    log_task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interceptor")
            .field(
                "attached",
                &self.attached.iter().map(|a| &a.path).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl InterceptSettings {
    /// Checks the settings and converts them to the kernel's layout.
    fn to_kernel(&self) -> Result<Settings, InterceptError> {
        let mut errors = Vec::new();
        if self.ports.is_empty() {
            errors.push("no intercepted ports".to_owned());
        }
        if self.ports.len() > MAX_PORTS as usize {
            errors.push(format!(
                "{} intercepted ports (at most {MAX_PORTS})",
                self.ports.len()
            ));
        }
        if self.ports.contains(&0) {
            errors.push("port 0 cannot be intercepted".to_owned());
        }
        if self.proxy_v4.port() == 0 || self.proxy_v6.port() == 0 {
            errors.push("the proxy listener ports must be the bound ports, not 0".to_owned());
        }
        if self.proxy_v4.ip().is_unspecified() || self.proxy_v6.ip().is_unspecified() {
            errors.push(
                "the proxy addresses must be concrete addresses, not 0.0.0.0 or ::".to_owned(),
            );
        }
        if !errors.is_empty() {
            return Err(InterceptError::InvalidSettings(errors.join("; ")));
        }
        Ok(Settings {
            proxy_v4_addr: ipv4_to_word(*self.proxy_v4.ip()),
            proxy_v6_addr: ipv6_to_words(*self.proxy_v6.ip()),
            proxy_v4_port: self.proxy_v4.port(),
            proxy_v6_port: self.proxy_v6.port(),
            skip_mark: self.skip_mark,
            enabled: 1,
        })
    }
}

const CONNECT_PROGRAMS: [&str; 2] = [PROG_CONNECT4, PROG_CONNECT6];

impl Interceptor {
    /// Loads the programs into the kernel and writes the settings. Nothing is
    /// redirected until [`Interceptor::attach`].
    ///
    /// When called inside a tokio runtime, the programs' `aya-log` output is
    /// forwarded to the `log` facade by a spawned task (debug level only;
    /// the kernel-side level is fixed from `log::max_level()` at load time).
    pub fn load(settings: &InterceptSettings) -> Result<Self, InterceptError> {
        let kernel_settings = settings.to_kernel()?;
        if EBPF_OBJECT.is_empty() {
            return Err(InterceptError::EmptyObject);
        }
        // Levels line up with aya-log-common's (Error = 1 … Trace = 5).
        let log_level = log::max_level() as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .load(EBPF_OBJECT)
            .map_err(|e| {
                if is_eperm(&e) {
                    not_permitted("create hoop's eBPF maps", e)
                } else {
                    InterceptError::Load(e)
                }
            })?;

        for name in CONNECT_PROGRAMS {
            let program: &mut CgroupSockAddr = program_mut(&mut ebpf, name)?;
            load_program(name, program.load())?;
        }
        let sockops: &mut SockOps = program_mut(&mut ebpf, PROG_SOCKOPS)?;
        load_program(PROG_SOCKOPS, sockops.load())?;

        let mut settings_map: Array<MapData, Settings> = take_map(&mut ebpf, MAP_SETTINGS)?;
        settings_map
            .set(0, kernel_settings, 0)
            .map_err(|source| InterceptError::Map {
                map: MAP_SETTINGS,
                source,
            })?;
        let mut ports: HashMap<MapData, u16, u8> = take_map(&mut ebpf, MAP_PORTS)?;
        for port in &settings.ports {
            ports
                .insert(port, 1, 0)
                .map_err(|source| InterceptError::Map {
                    map: MAP_PORTS,
                    source,
                })?;
        }
        let mut skip_tgids: HashMap<MapData, u32, u8> = take_map(&mut ebpf, MAP_SKIP_TGIDS)?;
        if settings.skip_tgid != 0 {
            skip_tgids
                .insert(settings.skip_tgid, 1, 0)
                .map_err(|source| InterceptError::Map {
                    map: MAP_SKIP_TGIDS,
                    source,
                })?;
        }
        let by_client = take_map(&mut ebpf, MAP_ORIGINAL_BY_CLIENT)?;
        let counters = take_map(&mut ebpf, MAP_COUNTERS)?;
        let log_task = spawn_log_forwarder(&mut ebpf);

        Ok(Self {
            ebpf,
            by_client: Mutex::new(by_client),
            skip_tgids: Mutex::new(skip_tgids),
            counters,
            attached: Vec::new(),
            log_task,
        })
    }

    /// Attaches `connect4`, `connect6` and `sockops` to a cgroup v2 directory.
    /// Sockets created by processes in it (or its descendants) from now on are
    /// intercepted. On error nothing stays attached to this cgroup.
    pub fn attach(&mut self, cgroup_dir: &Path) -> Result<(), InterceptError> {
        if self.attached.iter().any(|a| a.path == cgroup_dir) {
            return Err(InterceptError::AlreadyAttached(cgroup_dir.to_owned()));
        }
        let cgroup_id = cgroup::cgroup_id(cgroup_dir)?;
        let dir = File::open(cgroup_dir).map_err(|source| InterceptError::Cgroup {
            action: "opening the cgroup directory",
            path: cgroup_dir.to_owned(),
            source,
        })?;
        let attach_err = |program: &'static str, source: ProgramError| {
            if is_eperm(&source) {
                not_permitted(
                    format!("attach `{program}` to {}", cgroup_dir.display()),
                    source,
                )
            } else {
                InterceptError::Attach {
                    program,
                    cgroup: cgroup_dir.to_owned(),
                    source,
                }
            }
        };

        let connect4 = program_mut::<CgroupSockAddr>(&mut self.ebpf, PROG_CONNECT4)?
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(|e| attach_err(PROG_CONNECT4, e))?;
        let connect6 =
            match program_mut::<CgroupSockAddr>(&mut self.ebpf, PROG_CONNECT6).and_then(|p| {
                p.attach(&dir, CgroupAttachMode::Single)
                    .map_err(|e| attach_err(PROG_CONNECT6, e))
            }) {
                Ok(id) => id,
                Err(e) => {
                    self.detach_sock_addr(PROG_CONNECT4, connect4);
                    return Err(e);
                }
            };
        let sockops = match program_mut::<SockOps>(&mut self.ebpf, PROG_SOCKOPS).and_then(|p| {
            p.attach(&dir, CgroupAttachMode::Single)
                .map_err(|e| attach_err(PROG_SOCKOPS, e))
        }) {
            Ok(id) => id,
            Err(e) => {
                self.detach_sock_addr(PROG_CONNECT4, connect4);
                self.detach_sock_addr(PROG_CONNECT6, connect6);
                return Err(e);
            }
        };
        log::debug!(
            "hoop: interception attached to cgroup {} (id {cgroup_id})",
            cgroup_dir.display()
        );
        self.attached.push(AttachedCgroup {
            path: cgroup_dir.to_owned(),
            cgroup_id,
            connect4,
            connect6,
            sockops,
        });
        Ok(())
    }

    /// Detaches the programs from one cgroup attached earlier. Returns whether
    /// it was attached.
    pub fn detach(&mut self, cgroup_dir: &Path) -> Result<bool, InterceptError> {
        let Some(pos) = self.attached.iter().position(|a| a.path == cgroup_dir) else {
            return Ok(false);
        };
        let a = self.attached.swap_remove(pos);
        let mut first_err = None;
        for (name, id) in [(PROG_CONNECT4, a.connect4), (PROG_CONNECT6, a.connect6)] {
            let r = program_mut::<CgroupSockAddr>(&mut self.ebpf, name).and_then(|p| {
                p.detach(id).map_err(|source| InterceptError::Program {
                    program: name,
                    source,
                })
            });
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        let r = program_mut::<SockOps>(&mut self.ebpf, PROG_SOCKOPS).and_then(|p| {
            p.detach(a.sockops)
                .map_err(|source| InterceptError::Program {
                    program: PROG_SOCKOPS,
                    source,
                })
        });
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(true), Err)
    }

    fn detach_sock_addr(&mut self, name: &'static str, id: CgroupSockAddrLinkId) {
        if let Err(e) = program_mut::<CgroupSockAddr>(&mut self.ebpf, name).and_then(|p| {
            p.detach(id).map_err(|source| InterceptError::Program {
                program: name,
                source,
            })
        }) {
            log::warn!("hoop: rolling back a partial attach failed: {e}");
        }
    }

    /// The original destination of the redirected connection whose client
    /// address is `client` (the accepted socket's peer address). The entry is
    /// removed: each connection is resolved once. `None` means the connection
    /// was not redirected by hoop (or was already resolved).
    pub fn original_destination(
        &self,
        client: SocketAddr,
    ) -> Result<Option<OriginalDestination>, InterceptError> {
        let key = ClientKey::from_socket_addr(client);
        let mut map = self
            .by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = match map.get(&key, 0) {
            Ok(entry) => entry,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(source) => {
                return Err(InterceptError::Map {
                    map: MAP_ORIGINAL_BY_CLIENT,
                    source,
                });
            }
        };
        match map.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(InterceptError::Map {
                    map: MAP_ORIGINAL_BY_CLIENT,
                    source,
                });
            }
        }
        drop(map);
        let addr = entry
            .socket_addr()
            .ok_or(InterceptError::CorruptEntry(entry.family))?;
        Ok(Some(OriginalDestination {
            addr,
            tgid: entry.tgid,
            cgroup_id: entry.cgroup_id,
        }))
    }

    /// Redirect counters, summed over CPUs.
    pub fn counters(&self) -> Result<RedirectCounters, InterceptError> {
        let read = |counter: Counter| -> Result<u64, InterceptError> {
            let values =
                self.counters
                    .get(&(counter as u32), 0)
                    .map_err(|source| InterceptError::Map {
                        map: MAP_COUNTERS,
                        source,
                    })?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        debug_assert_eq!(COUNTER_COUNT, 5);
        Ok(RedirectCounters {
            v4: read(Counter::RedirectedV4)?,
            v6: read(Counter::RedirectedV6)?,
            v4_mapped: read(Counter::RedirectedV4Mapped)?,
            skipped_self: read(Counter::SkippedSelf)?,
            refused: read(Counter::StoreFailed)?,
        })
    }

    /// Never redirect connects from `tgid` (e.g. a helper process of the proxy).
    pub fn add_skip_tgid(&self, tgid: u32) -> Result<(), InterceptError> {
        let mut map = self
            .skip_tgids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(tgid, 1, 0)
            .map_err(|source| InterceptError::Map {
                map: MAP_SKIP_TGIDS,
                source,
            })
    }

    /// Undoes [`Interceptor::add_skip_tgid`].
    pub fn remove_skip_tgid(&self, tgid: u32) -> Result<(), InterceptError> {
        let mut map = self
            .skip_tgids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.remove(&tgid) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(InterceptError::Map {
                map: MAP_SKIP_TGIDS,
                source,
            }),
        }
    }

    /// The cgroup directories the programs are attached to.
    pub fn attached_cgroups(&self) -> impl Iterator<Item = &Path> {
        self.attached.iter().map(|a| a.path.as_path())
    }

    /// Resolves a cgroup id (as in [`OriginalDestination::cgroup_id`]) to its
    /// directory, among the attached cgroups and their descendants.
    pub fn cgroup_path(&self, cgroup_id: u64) -> Option<PathBuf> {
        if let Some(a) = self.attached.iter().find(|a| a.cgroup_id == cgroup_id) {
            return Some(a.path.clone());
        }
        let roots: Vec<&Path> = self.attached.iter().map(|a| a.path.as_path()).collect();
        cgroup::find_cgroup_by_id(&roots, cgroup_id)
    }

    /// Kernel ids of the loaded programs (for diagnostics, and for checking
    /// that nothing is left behind after drop).
    pub fn program_ids(&self) -> Result<Vec<u32>, InterceptError> {
        let mut ids = Vec::new();
        for name in [PROG_CONNECT4, PROG_CONNECT6, PROG_SOCKOPS] {
            let program = self
                .ebpf
                .program(name)
                .ok_or(InterceptError::ProgramMissing(name))?;
            let info = program.info().map_err(|source| InterceptError::Program {
                program: name,
                source,
            })?;
            ids.push(info.id());
        }
        Ok(ids)
    }
}

impl Drop for Interceptor {
    fn drop(&mut self) {
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
    }
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, InterceptError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(InterceptError::ProgramMissing(name))?;
    program
        .try_into()
        .map_err(|source| InterceptError::Program {
            program: name,
            source,
        })
}

fn load_program(
    name: &'static str,
    result: Result<(), ProgramError>,
) -> Result<(), InterceptError> {
    match result {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            if io_error.raw_os_error() == Some(nix::libc::EPERM) {
                Err(not_permitted(
                    format!("load eBPF program `{name}`"),
                    io_error,
                ))
            } else {
                Err(InterceptError::KernelRefused {
                    program: name,
                    verifier_log: verifier_log.to_string(),
                    source: io_error,
                })
            }
        }
        Err(e) if is_eperm(&e) => Err(not_permitted(format!("load eBPF program `{name}`"), e)),
        Err(source) => Err(InterceptError::Program {
            program: name,
            source,
        }),
    }
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, InterceptError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(InterceptError::MapMissing(name))?;
    M::try_from(map).map_err(|source| InterceptError::Map { map: name, source })
}

/// Forwards the programs' `aya-log` records to the `log` facade from a tokio
/// task. Without a runtime (or without a log map) logs stay in the kernel's
/// ring buffer, which only costs the programs a failed reservation.
fn spawn_log_forwarder(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    if log::max_level() < log::LevelFilter::Debug {
        // Every kernel-side log statement is debug level and was disabled at load.
        return None;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        log::debug!("hoop: no tokio runtime; eBPF debug logs are not forwarded");
        return None;
    };
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => {
            log::warn!("hoop: eBPF log forwarding unavailable: {e}");
            return None;
        }
    };
    let _guard = runtime.enter();
    #[allow(unsafe_code)]
    // SAFETY: the fd is the log ring buffer's, owned by `logger` itself: it
    // stays open and unchanged for as long as the `AsyncFd` owns `logger`.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut logger = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("hoop: eBPF log forwarding unavailable: {e}");
            return None;
        }
    };
    Some(runtime.spawn(async move {
        loop {
            match logger.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    log::warn!("hoop: eBPF log forwarding stopped: {e}");
                    return;
                }
            }
        }
    }))
}

/// Sets `SO_MARK` on a socket, typically [`DEFAULT_SKIP_MARK`] on the proxy's
/// upstream sockets before `connect`, so hoop never redirects them.
pub fn mark_socket(fd: BorrowedFd<'_>, mark: u32) -> Result<(), InterceptError> {
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Mark, &mark)
        .map_err(InterceptError::SocketMark)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;

    fn settings() -> InterceptSettings {
        InterceptSettings {
            ports: vec![5432],
            proxy_v4: "127.0.0.1:15432".parse().unwrap(),
            proxy_v6: "[::1]:15432".parse().unwrap(),
            skip_mark: DEFAULT_SKIP_MARK,
            skip_tgid: 0,
        }
    }

    #[test]
    fn valid_settings_convert() {
        let k = settings().to_kernel().unwrap();
        assert_eq!(k.proxy_v4_port, 15432);
        assert_eq!(k.enabled, 1);
        assert_eq!(k.skip_mark, DEFAULT_SKIP_MARK);
    }

    #[test]
    fn invalid_settings_report_every_problem() {
        let mut s = settings();
        s.ports = vec![0];
        s.proxy_v4 = "0.0.0.0:0".parse().unwrap();
        let InterceptError::InvalidSettings(msg) = s.to_kernel().unwrap_err() else {
            panic!("wrong error")
        };
        assert!(msg.contains("port 0"), "{msg}");
        assert!(msg.contains("bound ports"), "{msg}");
        assert!(msg.contains("concrete"), "{msg}");
    }

    #[test]
    fn interceptor_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Interceptor>();
    }

    #[test]
    fn counters_total_sums_families() {
        let c = RedirectCounters {
            v4: 1,
            v6: 2,
            v4_mapped: 3,
            skipped_self: 10,
            refused: 0,
        };
        assert_eq!(c.redirects_total(), 6);
    }
}
