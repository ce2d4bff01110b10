//! Transparent interception: loading and attaching hoop's eBPF programs, and
//! recovering where a redirected connection was originally going.
//!
//! The kernel side (`hoop-ebpf`) rewrites TCP connects from a governed cgroup
//! to an intercepted port so they land on **hoop's listener in the
//! connecting socket's own network namespace** (a redirect target per netns,
//! [`Interceptor::set_target`]), and records the original destination.
//! `hoop exec` and static `intercept.cgroups` use the target of the netns
//! hoop itself runs in, written at [`Interceptor::load`]; on Kubernetes each
//! governed pod gets listeners in its own netns (see [`netns`]) and a target
//! of its own. A governed connect from a netns without a target is refused
//! (fail closed).
//!
//! **The proxy recovers the original destination with a map lookup**
//! ([`Interceptor::original_destination_in`], keyed by the listener's netns
//! cookie and the accepted socket's peer address), not with
//! `getsockopt(SO_ORIGINAL_DST)`: the map works wherever the proxy runs,
//! whereas a `cgroup/getsockopt` program would have to be attached to the
//! cgroup of whoever created the listening socket.
//!
//! IPv4-mapped destinations (`::ffff:a.b.c.d` on an `AF_INET6` socket) are
//! rewritten to `::ffff:<proxy v4 address>`; the kernel completes such a
//! connect through its IPv4 path, so it arrives on the proxy's **IPv4**
//! listener, and the original destination is reported as dialled (an IPv6
//! `SocketAddr` holding the mapped address).
//!
//! The proxy's own upstream connections must not be redirected: mark its
//! sockets with [`mark_socket`] (`SO_MARK` = [`InterceptSettings::skip_mark`])
//! and/or pass its pid as [`InterceptSettings::skip_tgid`]. The mark counts
//! only for sockets in the namespace hoop was loaded in: a pod with
//! `CAP_NET_ADMIN` can set any mark in its own namespace. (The node agent's
//! upstream sockets for a pod are created by the agent, outside the pod's
//! cgroup, so they are never intercepted in the first place.)
//!
//! **Attachments** are bpf links, one per program and cgroup, created and
//! owned by hoop ([`bpf_link`]). [`Interceptor::attach`] and
//! [`Interceptor::detach`] are idempotent and only lock the attachment
//! table, never the maps a connection looks up. Link-based cgroup
//! attachments stack, so other tools' programs on the same cgroup are no
//! conflict.
//!
//! **Restarts.** Without pinning ([`LoadOptions::pin_root`] unset, what
//! `hoop exec` wants), dropping the [`Interceptor`] detaches everything. With
//! a pin root on a bpffs, maps and links are pinned under
//! `<pin_root>/hoop-v<LAYOUT_VERSION>/`: they outlive the process, so a
//! governed cgroup is never left ungoverned while the agent restarts, and
//! the next agent adopts them at load (its programs replace the old ones in
//! the same links, atomically). Until it has bound new listeners, connects
//! are refused, not let through: see `docs/kubernetes.md` for the measured
//! window. Targets carry the writing agent's generation (its start time), so
//! an old agent draining during a rolling update never overwrites a newer
//! agent's target.
// Raw system calls live in `bpf_link` and `netns`, which allow them locally;
// one more `unsafe` here registers the log fd with tokio.
#![deny(unsafe_code)]

pub mod bpf_link;
pub mod cgroup;
pub mod netns;
pub mod pins;
pub mod pods;

use std::{
    fmt,
    fs::File,
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsFd as _, BorrowedFd},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::{CgroupSockAddr, ProgramError, SockOps},
};
use bpf_link::{CgroupAttachPoint, CgroupLink};
use hoop_common::{
    COUNTER_COUNT, ClientKey, Counter, MAP_COUNTERS, MAP_ORIGINAL_BY_CLIENT, MAP_PORTS,
    MAP_SETTINGS, MAP_SKIP_TGIDS, MAP_TARGETS, MAX_PORTS, OriginalDst, PROG_CONNECT4,
    PROG_CONNECT6, PROG_SOCKOPS, PortKey, RedirectTarget, Settings, TARGET_OWN_PORTS, TARGET_V4,
    TARGET_V6, ipv4_to_word, ipv6_to_words,
};
use pins::Pins;

/// The eBPF object built by `build.rs` (empty when built with `AYA_BUILD_SKIP`).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hoop"));

/// Default `SO_MARK` for the proxy's own sockets: ASCII "HOOP".
pub const DEFAULT_SKIP_MARK: u32 = 0x484F_4F50;

/// What to intercept, and where connects from hoop's own network namespace go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptSettings {
    /// Destination TCP ports whose connects are redirected (1..=64 entries, none zero).
    pub ports: Vec<u16>,
    /// The proxy's IPv4 listener; receives IPv4 and IPv4-mapped connects.
    pub proxy_v4: SocketAddrV4,
    /// The proxy's IPv6 listener; receives other IPv6 connects. `[::]:0`
    /// means there is none: IPv6 connects to intercepted ports are refused.
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
    /// Intercepted connects refused (`EPERM`) because their network
    /// namespace had no hoop listener of their family (fail closed).
    pub no_listener: u64,
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
    /// A bpf link operation (create, pin, adopt, detach) failed.
    #[error("{action} ({})", path.display())]
    Link {
        /// What hoop was doing.
        action: &'static str,
        /// The cgroup directory or pin path involved.
        path: PathBuf,
        /// The system call's error.
        #[source]
        source: std::io::Error,
    },
    /// The pin root cannot be used.
    #[error("pin directory {}: {problem}", path.display())]
    Pins {
        /// The directory.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A redirect target cannot be used.
    #[error("invalid redirect target for network namespace {netns_cookie}: {problem}")]
    InvalidTarget {
        /// The namespace's cookie.
        netns_cookie: u64,
        /// What is wrong.
        problem: String,
    },
    /// The cookie of hoop's own network namespace could not be read
    /// (`SO_NETNS_COOKIE` needs Linux 5.14).
    #[error("reading the network namespace cookie (SO_NETNS_COOKIE, Linux 5.14+)")]
    NetnsCookie(#[source] std::io::Error),
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

/// A cgroup the programs are attached to, with its links.
struct AttachedCgroup {
    /// `None` for a cgroup adopted from a previous agent's pins and not yet
    /// claimed by [`Interceptor::attach`].
    path: Option<PathBuf>,
    cgroup_id: u64,
    links: Vec<(CgroupAttachPoint, CgroupLink)>,
}

/// How to load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Pin maps and links under this bpffs directory so they outlive the
    /// process, and adopt what a previous agent pinned there. `None`: links
    /// die with the [`Interceptor`] (what `hoop exec` wants).
    pub pin_root: Option<PathBuf>,
}

/// What [`Interceptor::attach`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// The programs were attached now.
    Attached,
    /// They already were, by this interceptor.
    AlreadyAttached,
    /// They were, by a previous agent's pinned links, now claimed.
    Adopted,
}

/// Where one network namespace's intercepted connects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTarget {
    /// hoop's IPv4 listener in that namespace (also receives IPv4-mapped
    /// connects). `None`: such connects are refused.
    pub v4: Option<SocketAddrV4>,
    /// hoop's IPv6 listener in that namespace. `None`: refused.
    pub v6: Option<SocketAddrV6>,
    /// The namespace's own intercepted ports (`hoop.dev/ports`); `None`: the
    /// default set (`intercept.ports`).
    pub ports: Option<Vec<u16>>,
}

/// What [`Interceptor::set_target`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetUpdate {
    /// The target is ours now.
    Written,
    /// A newer agent owns this namespace's target; it was left alone.
    OwnedByNewer,
}

/// hoop's loaded eBPF programs and maps. All methods take `&self`: share it
/// in an `Arc`. Lookups on the connection path lock only the map they read.
pub struct Interceptor {
    ebpf: Mutex<Ebpf>,
    by_client: Mutex<HashMap<MapData, ClientKey, OriginalDst>>,
    skip_tgids: Mutex<HashMap<MapData, u32, u8>>,
    targets: Mutex<HashMap<MapData, u64, RedirectTarget>>,
    ports: Mutex<HashMap<MapData, PortKey, u8>>,
    counters: PerCpuArray<MapData, u64>,
    attached: Mutex<Vec<AttachedCgroup>>,
    own_netns: u64,
    generation: u64,
    pins: Option<Pins>,
    log_task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interceptor")
            .field("attached", &self.attached_cgroups())
            .field("own_netns", &self.own_netns)
            .field("pinned", &self.pins.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> InterceptError {
    move |source| InterceptError::Map { map, source }
}

/// This process's generation: its start time since boot (clock ticks) with
/// its pid in the low 22 bits. A later agent has a larger one.
fn own_generation() -> u64 {
    let pid = u64::from(std::process::id());
    let start = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().nth(19)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    (start << 22) | (pid & 0x3f_ffff)
}

impl InterceptSettings {
    /// Checks the settings and converts them to the kernel's settings and
    /// the target of hoop's own network namespace.
    fn to_kernel(&self, own_netns: u64) -> Result<(Settings, ListenerTarget), InterceptError> {
        let mut errors = Vec::new();
        if let Err(e) = check_ports(&self.ports) {
            errors.push(e);
        }
        if self.proxy_v4.port() == 0 {
            errors.push("the proxy listener ports must be the bound ports, not 0".to_owned());
        }
        if self.proxy_v4.ip().is_unspecified() {
            errors.push(
                "the proxy addresses must be concrete addresses, not 0.0.0.0 or ::".to_owned(),
            );
        }
        let v6_unset = self.proxy_v6.ip().is_unspecified() && self.proxy_v6.port() == 0;
        if !v6_unset && (self.proxy_v6.ip().is_unspecified() || self.proxy_v6.port() == 0) {
            errors.push(
                "the IPv6 proxy listener must be a concrete, bound address (or [::]:0 for none)"
                    .to_owned(),
            );
        }
        if !errors.is_empty() {
            return Err(InterceptError::InvalidSettings(errors.join("; ")));
        }
        Ok((
            Settings {
                skip_mark: self.skip_mark,
                enabled: 1,
                skip_mark_netns: own_netns,
            },
            ListenerTarget {
                v4: Some(self.proxy_v4),
                v6: (!v6_unset).then_some(self.proxy_v6),
                ports: None,
            },
        ))
    }
}

fn check_ports(ports: &[u16]) -> Result<(), String> {
    if ports.is_empty() {
        return Err("no intercepted ports".to_owned());
    }
    if ports.len() > MAX_PORTS as usize {
        return Err(format!(
            "{} intercepted ports (at most {MAX_PORTS})",
            ports.len()
        ));
    }
    if ports.contains(&0) {
        return Err("port 0 cannot be intercepted".to_owned());
    }
    Ok(())
}

impl ListenerTarget {
    fn to_kernel(
        &self,
        netns_cookie: u64,
        generation: u64,
    ) -> Result<RedirectTarget, InterceptError> {
        let invalid = |problem: String| InterceptError::InvalidTarget {
            netns_cookie,
            problem,
        };
        if self.v4.is_none() && self.v6.is_none() {
            return Err(invalid("neither an IPv4 nor an IPv6 listener".into()));
        }
        if let Some(v4) = self.v4
            && (v4.ip().is_unspecified() || v4.port() == 0)
        {
            return Err(invalid(format!(
                "IPv4 listener {v4} is not a bound, concrete address"
            )));
        }
        if let Some(v6) = self.v6
            && (v6.ip().is_unspecified() || v6.port() == 0)
        {
            return Err(invalid(format!(
                "IPv6 listener {v6} is not a bound, concrete address"
            )));
        }
        if let Some(ports) = &self.ports {
            check_ports(ports).map_err(invalid)?;
        }
        let mut flags = 0;
        let mut t = RedirectTarget {
            generation,
            ..RedirectTarget::default()
        };
        if let Some(v4) = self.v4 {
            flags |= TARGET_V4;
            t.v4_addr = ipv4_to_word(*v4.ip());
            t.v4_port = v4.port();
        }
        if let Some(v6) = self.v6 {
            flags |= TARGET_V6;
            t.v6_addr = ipv6_to_words(*v6.ip());
            t.v6_port = v6.port();
        }
        if self.ports.is_some() {
            flags |= TARGET_OWN_PORTS;
        }
        t.flags = flags;
        Ok(t)
    }

    fn from_kernel(t: &RedirectTarget, own_ports: Option<Vec<u16>>) -> Self {
        Self {
            v4: t.v4(),
            v6: t.v6(),
            ports: if t.flags & TARGET_OWN_PORTS != 0 {
                own_ports
            } else {
                None
            },
        }
    }
}

const CONNECT_PROGRAMS: [&str; 2] = [PROG_CONNECT4, PROG_CONNECT6];

fn program_name(point: CgroupAttachPoint) -> &'static str {
    match point {
        CgroupAttachPoint::Connect4 => PROG_CONNECT4,
        CgroupAttachPoint::Connect6 => PROG_CONNECT6,
        CgroupAttachPoint::SockOps => PROG_SOCKOPS,
    }
}

/// The loaded program for an attach point, as a borrowed fd.
fn program_fd(ebpf: &mut Ebpf, point: CgroupAttachPoint) -> Result<BorrowedFd<'_>, InterceptError> {
    let name = program_name(point);
    let fd = match point {
        CgroupAttachPoint::SockOps => program_mut::<SockOps>(ebpf, name)?.fd(),
        CgroupAttachPoint::Connect4 | CgroupAttachPoint::Connect6 => {
            program_mut::<CgroupSockAddr>(ebpf, name)?.fd()
        }
    };
    fd.map(aya::programs::ProgramFd::as_fd)
        .map_err(|source| InterceptError::Program {
            program: name,
            source,
        })
}

impl Interceptor {
    /// Loads the programs into the kernel, writes the settings and the
    /// target of hoop's own network namespace (`proxy_v4`/`proxy_v6`).
    /// Nothing is redirected until [`Interceptor::attach`]. Links die with
    /// the interceptor.
    ///
    /// When called inside a tokio runtime, the programs' `aya-log` output is
    /// forwarded to the `log` facade by a spawned task (debug level only;
    /// the kernel-side level is fixed from `log::max_level()` at load time).
    pub fn load(settings: &InterceptSettings) -> Result<Self, InterceptError> {
        Self::load_with(settings, &LoadOptions::default())
    }

    /// [`Interceptor::load`] with options: with a pin root, maps and links
    /// are pinned there, and links a previous agent pinned are adopted (see
    /// [`Interceptor::adopted_cgroups`]).
    pub fn load_with(
        settings: &InterceptSettings,
        options: &LoadOptions,
    ) -> Result<Self, InterceptError> {
        let own_netns = netns::current_netns_cookie().map_err(InterceptError::NetnsCookie)?;
        let (kernel_settings, own_target) = settings.to_kernel(own_netns)?;
        if EBPF_OBJECT.is_empty() {
            return Err(InterceptError::EmptyObject);
        }
        let pins = options.pin_root.as_deref().map(Pins::open).transpose()?;
        // Levels line up with aya-log-common's (Error = 1 … Trace = 5).
        let log_level = log::max_level() as u8;
        let mut loader = EbpfLoader::new();
        loader.override_global("AYA_LOG_LEVEL", &log_level, false);
        if let Some(pins) = &pins {
            for name in Pins::MAPS {
                loader.map_pin_path(name, pins.map_path(name));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| {
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
            .map_err(map_err(MAP_SETTINGS))?;
        let mut skip_tgids: HashMap<MapData, u32, u8> = take_map(&mut ebpf, MAP_SKIP_TGIDS)?;
        if pins.is_some() {
            prune_dead_tgids(&mut skip_tgids)?;
        }
        if settings.skip_tgid != 0 {
            skip_tgids
                .insert(settings.skip_tgid, 1, 0)
                .map_err(map_err(MAP_SKIP_TGIDS))?;
        }
        let by_client = take_map(&mut ebpf, MAP_ORIGINAL_BY_CLIENT)?;
        let counters = take_map(&mut ebpf, MAP_COUNTERS)?;
        let ports = take_map(&mut ebpf, MAP_PORTS)?;
        let targets = take_map(&mut ebpf, MAP_TARGETS)?;
        let log_task = spawn_log_forwarder(&mut ebpf);

        let interceptor = Self {
            ebpf: Mutex::new(ebpf),
            by_client: Mutex::new(by_client),
            skip_tgids: Mutex::new(skip_tgids),
            targets: Mutex::new(targets),
            ports: Mutex::new(ports),
            counters,
            attached: Mutex::new(Vec::new()),
            own_netns,
            generation: own_generation(),
            pins,
            log_task,
        };
        interceptor.set_default_ports(&settings.ports)?;
        interceptor.set_target(own_netns, &own_target)?;
        if interceptor.pins.is_some() {
            interceptor.adopt_pinned_links();
        }
        Ok(interceptor)
    }

    /// The cookie of the network namespace hoop was loaded in.
    pub fn own_netns_cookie(&self) -> u64 {
        self.own_netns
    }

    /// This interceptor's generation (see [`RedirectTarget::generation`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Replaces the default set of intercepted ports (`intercept.ports`),
    /// used by every netns without its own set.
    pub fn set_default_ports(&self, ports: &[u16]) -> Result<(), InterceptError> {
        check_ports(ports).map_err(InterceptError::InvalidSettings)?;
        let mut map = lock(&self.ports);
        replace_port_set(&mut map, 0, ports)
    }

    /// Attaches `connect4`, `connect6` and `sockops` to a cgroup v2 directory.
    /// Sockets created by processes in it (or its descendants) from now on are
    /// intercepted. Idempotent: attaching again is [`AttachOutcome::AlreadyAttached`],
    /// and a cgroup a previous agent's pinned links cover is claimed
    /// ([`AttachOutcome::Adopted`]). On error nothing this call created
    /// stays attached.
    pub fn attach(&self, cgroup_dir: &Path) -> Result<AttachOutcome, InterceptError> {
        let cgroup_id = cgroup::cgroup_id(cgroup_dir)?;
        let mut attached = lock(&self.attached);
        let (outcome, existing) = match attached.iter().position(|a| a.cgroup_id == cgroup_id) {
            Some(i) if attached[i].path.is_none() => (AttachOutcome::Adopted, Some(i)),
            Some(i) => (AttachOutcome::AlreadyAttached, Some(i)),
            None => (AttachOutcome::Attached, None),
        };
        let have: Vec<CgroupAttachPoint> = existing
            .map(|i| attached[i].links.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        let missing: Vec<CgroupAttachPoint> = CgroupAttachPoint::ALL
            .into_iter()
            .filter(|p| !have.contains(p))
            .collect();
        let mut new_links = Vec::new();
        if !missing.is_empty() {
            let dir = File::open(cgroup_dir).map_err(|source| InterceptError::Cgroup {
                action: "opening the cgroup directory",
                path: cgroup_dir.to_owned(),
                source,
            })?;
            for point in missing {
                match self.link_cgroup(&dir, cgroup_dir, cgroup_id, point) {
                    Ok(link) => new_links.push((point, link)),
                    Err(e) => {
                        for (p, link) in new_links {
                            self.destroy_link(cgroup_id, p, &link);
                        }
                        return Err(e);
                    }
                }
            }
        }
        match existing {
            Some(i) => {
                attached[i].path = Some(cgroup_dir.to_owned());
                attached[i].links.extend(new_links);
            }
            None => attached.push(AttachedCgroup {
                path: Some(cgroup_dir.to_owned()),
                cgroup_id,
                links: new_links,
            }),
        }
        drop(attached);
        if outcome != AttachOutcome::AlreadyAttached {
            log::debug!(
                "hoop: interception {} cgroup {} (id {cgroup_id})",
                if outcome == AttachOutcome::Adopted {
                    "adopted on"
                } else {
                    "attached to"
                },
                cgroup_dir.display()
            );
        }
        Ok(outcome)
    }

    /// One link for one program on one cgroup: a pinned link of ours for
    /// this cgroup (left by a concurrent agent) is adopted; otherwise a new
    /// link is created, and pinned when pinning is on.
    fn link_cgroup(
        &self,
        dir: &File,
        cgroup_dir: &Path,
        cgroup_id: u64,
        point: CgroupAttachPoint,
    ) -> Result<CgroupLink, InterceptError> {
        let program = program_name(point);
        let mut ebpf = lock(&self.ebpf);
        let prog_fd = program_fd(&mut ebpf, point)?;
        if let Some(pins) = &self.pins {
            let pin = pins.link_path(cgroup_id, point);
            if let Some(link) = adopt_link(&pin, cgroup_id, point, prog_fd) {
                return Ok(link);
            }
        }
        let link = CgroupLink::create(prog_fd, dir.as_fd(), point).map_err(|source| {
            if source.raw_os_error() == Some(nix::libc::EPERM) {
                not_permitted(
                    format!("attach `{program}` to {}", cgroup_dir.display()),
                    source,
                )
            } else {
                InterceptError::Link {
                    action: "attaching a program to the cgroup",
                    path: cgroup_dir.to_owned(),
                    source,
                }
            }
        })?;
        if let Some(pins) = &self.pins {
            let pin = pins.link_path(cgroup_id, point);
            if let Err(source) = link.pin(&pin) {
                // Dropping the unpinned link detaches it again.
                return Err(InterceptError::Link {
                    action: "pinning the link",
                    path: pin,
                    source,
                });
            }
        }
        Ok(link)
    }

    /// Detaches a link now and removes its pin.
    fn destroy_link(&self, cgroup_id: u64, point: CgroupAttachPoint, link: &CgroupLink) {
        if let Err(e) = link.detach() {
            log::warn!(
                "hoop: detaching {} from cgroup id {cgroup_id}: {e}",
                point.name()
            );
        }
        if let Some(pins) = &self.pins {
            let pin = pins.link_path(cgroup_id, point);
            match std::fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("hoop: removing pin {}: {e}", pin.display()),
            }
        }
    }

    /// Re-opens the links a previous agent pinned, points them at this
    /// agent's programs, and records them as adopted (unclaimed until
    /// [`Interceptor::attach`]). Links whose cgroup is gone are removed.
    fn adopt_pinned_links(&self) {
        let Some(pins) = &self.pins else { return };
        let mut adopted: Vec<AttachedCgroup> = Vec::new();
        for (cgroup_id, point, path) in pins.pinned_links() {
            let mut ebpf = lock(&self.ebpf);
            let Ok(prog_fd) = program_fd(&mut ebpf, point) else {
                continue;
            };
            let Some(link) = adopt_link(&path, cgroup_id, point, prog_fd) else {
                continue;
            };
            drop(ebpf);
            match adopted.iter_mut().find(|a| a.cgroup_id == cgroup_id) {
                Some(a) => a.links.push((point, link)),
                None => adopted.push(AttachedCgroup {
                    path: None,
                    cgroup_id,
                    links: vec![(point, link)],
                }),
            }
        }
        if !adopted.is_empty() {
            log::info!(
                "hoop: adopted pinned links on {} cgroup(s) from a previous agent",
                adopted.len()
            );
        }
        lock(&self.attached).extend(adopted);
    }

    /// Cgroup ids adopted from a previous agent and not claimed yet.
    pub fn adopted_cgroups(&self) -> Vec<u64> {
        lock(&self.attached)
            .iter()
            .filter(|a| a.path.is_none())
            .map(|a| a.cgroup_id)
            .collect()
    }

    /// Detaches every adopted cgroup nobody claimed (their pods are gone, or
    /// no longer opted in). Call once the first full reconcile is done.
    /// Returns the cgroup ids released.
    pub fn release_unclaimed(&self) -> Vec<u64> {
        let ids = self.adopted_cgroups();
        for id in &ids {
            if let Err(e) = self.detach_id(*id) {
                log::warn!("hoop: releasing adopted cgroup id {id}: {e}");
            }
        }
        ids
    }

    /// Detaches the programs from a cgroup. Returns whether they were
    /// attached (idempotent: `Ok(false)` the second time). With pinning, the
    /// pins are removed and the links detached even if another process
    /// still holds them.
    pub fn detach(&self, cgroup_dir: &Path) -> Result<bool, InterceptError> {
        let found = {
            let attached = lock(&self.attached);
            attached
                .iter()
                .find(|a| a.path.as_deref() == Some(cgroup_dir))
                .map(|a| a.cgroup_id)
        };
        // The directory may be gone already (the pod was deleted): then
        // only the recorded path identifies it.
        let id = match found {
            Some(id) => id,
            None => match cgroup::cgroup_id(cgroup_dir) {
                Ok(id) => id,
                Err(_) => return Ok(false),
            },
        };
        self.detach_id(id)
    }

    /// [`Interceptor::detach`] by cgroup id.
    pub fn detach_id(&self, cgroup_id: u64) -> Result<bool, InterceptError> {
        let entry = {
            let mut attached = lock(&self.attached);
            let Some(pos) = attached.iter().position(|a| a.cgroup_id == cgroup_id) else {
                return Ok(false);
            };
            attached.swap_remove(pos)
        };
        let mut first_err = None;
        for (point, link) in &entry.links {
            if let Err(source) = link.detach() {
                first_err.get_or_insert(InterceptError::Link {
                    action: "detaching a program",
                    path: entry
                        .path
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(format!("cgroup id {cgroup_id}"))),
                    source,
                });
            }
            if let Some(pins) = &self.pins {
                let pin = pins.link_path(cgroup_id, *point);
                match std::fs::remove_file(&pin) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        first_err.get_or_insert(InterceptError::Link {
                            action: "removing a link pin",
                            path: pin,
                            source,
                        });
                    }
                }
            }
        }
        log::debug!("hoop: interception detached from cgroup id {cgroup_id}");
        first_err.map_or(Ok(true), Err)
    }

    /// Removes pinned maps and links of other layout versions (an agent
    /// before an upgrade that changed the layout). Their links are detached.
    /// Call after this agent has attached everything it governs, so no
    /// governed cgroup goes without programs in between. Returns the
    /// directories removed.
    pub fn retire_other_versions(&self) -> Vec<PathBuf> {
        self.pins
            .as_ref()
            .map(Pins::retire_other_versions)
            .unwrap_or_default()
    }

    /// Points the intercepted connects of network namespace `netns_cookie`
    /// at `target` (hoop's listeners in that namespace). Idempotent. A
    /// target written by a newer agent is left alone. With its own ports,
    /// the new set is in place before the old one is removed, so no port of
    /// either set is ever un-intercepted in between.
    pub fn set_target(
        &self,
        netns_cookie: u64,
        target: &ListenerTarget,
    ) -> Result<TargetUpdate, InterceptError> {
        let kernel = target.to_kernel(netns_cookie, self.generation)?;
        let mut targets = lock(&self.targets);
        let existing = match targets.get(&netns_cookie, 0) {
            Ok(t) => Some(t),
            Err(MapError::KeyNotFound) => None,
            Err(source) => {
                return Err(InterceptError::Map {
                    map: MAP_TARGETS,
                    source,
                });
            }
        };
        if existing.is_some_and(|t| t.generation > self.generation) {
            return Ok(TargetUpdate::OwnedByNewer);
        }
        let mut ports = lock(&self.ports);
        if let Some(own) = &target.ports {
            for p in own {
                ports
                    .insert(PortKey::new(netns_cookie, *p), 1, 0)
                    .map_err(map_err(MAP_PORTS))?;
            }
        }
        targets
            .insert(netns_cookie, kernel, 0)
            .map_err(map_err(MAP_TARGETS))?;
        replace_port_set(
            &mut ports,
            netns_cookie,
            target.ports.as_deref().unwrap_or(&[]),
        )?;
        Ok(TargetUpdate::Written)
    }

    /// Removes a namespace's target (its intercepted connects are refused
    /// from now on, if the programs are still attached). Returns whether it
    /// was removed; a newer agent's target is left alone (`Ok(false)`).
    pub fn remove_target(&self, netns_cookie: u64) -> Result<bool, InterceptError> {
        let mut targets = lock(&self.targets);
        match targets.get(&netns_cookie, 0) {
            Ok(t) if t.generation > self.generation => return Ok(false),
            Ok(_) => {}
            Err(MapError::KeyNotFound) => return Ok(false),
            Err(source) => {
                return Err(InterceptError::Map {
                    map: MAP_TARGETS,
                    source,
                });
            }
        }
        match targets.remove(&netns_cookie) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(InterceptError::Map {
                    map: MAP_TARGETS,
                    source,
                });
            }
        }
        let mut ports = lock(&self.ports);
        replace_port_set(&mut ports, netns_cookie, &[])?;
        Ok(true)
    }

    /// The target of a network namespace, with its generation.
    pub fn target(
        &self,
        netns_cookie: u64,
    ) -> Result<Option<(ListenerTarget, u64)>, InterceptError> {
        let t = match lock(&self.targets).get(&netns_cookie, 0) {
            Ok(t) => t,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(source) => {
                return Err(InterceptError::Map {
                    map: MAP_TARGETS,
                    source,
                });
            }
        };
        let own_ports = (t.flags & TARGET_OWN_PORTS != 0).then(|| {
            let ports = lock(&self.ports);
            let mut own: Vec<u16> = ports
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.netns_cookie == netns_cookie)
                .map(|k| k.port)
                .collect();
            own.sort_unstable();
            own
        });
        Ok(Some((
            ListenerTarget::from_kernel(&t, own_ports),
            t.generation,
        )))
    }

    /// The original destination of the redirected connection whose client
    /// address is `client`, accepted on a listener in hoop's own network
    /// namespace. See [`Interceptor::original_destination_in`].
    pub fn original_destination(
        &self,
        client: SocketAddr,
    ) -> Result<Option<OriginalDestination>, InterceptError> {
        self.original_destination_in(self.own_netns, client)
    }

    /// The original destination of the redirected connection whose client
    /// address is `client` (the accepted socket's peer address), accepted on
    /// a listener in network namespace `netns_cookie` (see
    /// [`netns::netns_cookie`]). The entry is removed: each connection is
    /// resolved once. `None` means the connection was not redirected by
    /// hoop (or was already resolved).
    pub fn original_destination_in(
        &self,
        netns_cookie: u64,
        client: SocketAddr,
    ) -> Result<Option<OriginalDestination>, InterceptError> {
        let key = ClientKey::from_socket_addr(netns_cookie, client);
        let mut map = lock(&self.by_client);
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
            let values = self
                .counters
                .get(&(counter as u32), 0)
                .map_err(map_err(MAP_COUNTERS))?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        debug_assert_eq!(COUNTER_COUNT, 6);
        Ok(RedirectCounters {
            v4: read(Counter::RedirectedV4)?,
            v6: read(Counter::RedirectedV6)?,
            v4_mapped: read(Counter::RedirectedV4Mapped)?,
            skipped_self: read(Counter::SkippedSelf)?,
            refused: read(Counter::StoreFailed)?,
            no_listener: read(Counter::NoTarget)?,
        })
    }

    /// Never redirect connects from `tgid` (e.g. a helper process of the proxy).
    pub fn add_skip_tgid(&self, tgid: u32) -> Result<(), InterceptError> {
        lock(&self.skip_tgids)
            .insert(tgid, 1, 0)
            .map_err(map_err(MAP_SKIP_TGIDS))
    }

    /// Undoes [`Interceptor::add_skip_tgid`].
    pub fn remove_skip_tgid(&self, tgid: u32) -> Result<(), InterceptError> {
        match lock(&self.skip_tgids).remove(&tgid) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(InterceptError::Map {
                map: MAP_SKIP_TGIDS,
                source,
            }),
        }
    }

    /// The cgroup directories the programs are attached to (claimed ones;
    /// see [`Interceptor::adopted_cgroups`] for the others).
    pub fn attached_cgroups(&self) -> Vec<PathBuf> {
        lock(&self.attached)
            .iter()
            .filter_map(|a| a.path.clone())
            .collect()
    }

    /// Resolves a cgroup id (as in [`OriginalDestination::cgroup_id`]) to its
    /// directory, among the attached cgroups and their descendants.
    pub fn cgroup_path(&self, cgroup_id: u64) -> Option<PathBuf> {
        let roots: Vec<PathBuf> = {
            let attached = lock(&self.attached);
            if let Some(path) = attached
                .iter()
                .find(|a| a.cgroup_id == cgroup_id)
                .and_then(|a| a.path.clone())
            {
                return Some(path);
            }
            attached.iter().filter_map(|a| a.path.clone()).collect()
        };
        let roots: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
        cgroup::find_cgroup_by_id(&roots, cgroup_id)
    }

    /// Kernel ids of the loaded programs (for diagnostics, and for checking
    /// that nothing is left behind after drop).
    pub fn program_ids(&self) -> Result<Vec<u32>, InterceptError> {
        let ebpf = lock(&self.ebpf);
        let mut ids = Vec::new();
        for name in [PROG_CONNECT4, PROG_CONNECT6, PROG_SOCKOPS] {
            let program = ebpf
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

/// Opens the pinned link at `pin` if it is a live link of this cgroup and
/// attach point, and points it at `program`. A pin of a link whose cgroup
/// is gone is removed. `None`: nothing usable there.
fn adopt_link(
    pin: &Path,
    cgroup_id: u64,
    point: CgroupAttachPoint,
    program: BorrowedFd<'_>,
) -> Option<CgroupLink> {
    let link = match CgroupLink::from_pin(pin) {
        Ok(link) => link,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("hoop: cannot open pinned link {}: {e}", pin.display());
            return None;
        }
    };
    let info = match link.info() {
        Ok(info) => info,
        Err(e) => {
            log::warn!("hoop: cannot read pinned link {}: {e}", pin.display());
            return None;
        }
    };
    if info.cgroup_id != cgroup_id || !info.is(point) {
        // The cgroup was removed (the kernel detached the link) or the pin
        // is not what its name says: drop the pin.
        let _ = link.detach();
        if let Err(e) = std::fs::remove_file(pin) {
            log::warn!("hoop: removing stale pin {}: {e}", pin.display());
        }
        return None;
    }
    if let Err(e) = link.update_program(program) {
        // Still attached with the previous agent's program, which reads the
        // same pinned maps: keep it rather than leave a gap.
        log::warn!(
            "hoop: pinned link {} keeps its previous program (update failed: {e})",
            pin.display()
        );
    }
    Some(link)
}

/// Makes the port set of `scope` (0: the default set; else a netns cookie)
/// exactly `ports`: adds first, then removes the rest.
fn replace_port_set(
    map: &mut HashMap<MapData, PortKey, u8>,
    scope: u64,
    ports: &[u16],
) -> Result<(), InterceptError> {
    for p in ports {
        map.insert(PortKey::new(scope, *p), 1, 0)
            .map_err(map_err(MAP_PORTS))?;
    }
    let stale: Vec<PortKey> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.netns_cookie == scope && !ports.contains(&k.port))
        .collect();
    for k in stale {
        match map.remove(&k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(InterceptError::Map {
                    map: MAP_PORTS,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Drops skip-map entries of processes that no longer exist (a pinned map
/// outlives the agent that wrote them, and pids are reused).
fn prune_dead_tgids(map: &mut HashMap<MapData, u32, u8>) -> Result<(), InterceptError> {
    let dead: Vec<u32> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|tgid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(*tgid as i32), None)
                == Err(nix::errno::Errno::ESRCH)
        })
        .collect();
    for tgid in dead {
        match map.remove(&tgid) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(InterceptError::Map {
                    map: MAP_SKIP_TGIDS,
                    source,
                });
            }
        }
    }
    Ok(())
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
        let (k, target) = settings().to_kernel(7).unwrap();
        assert_eq!(k.skip_mark_netns, 7, "the mark counts only in hoop's netns");
        assert_eq!(k.enabled, 1);
        assert_eq!(k.skip_mark, DEFAULT_SKIP_MARK);
        assert_eq!(target.v4, Some("127.0.0.1:15432".parse().unwrap()));
        assert_eq!(target.v6, Some("[::1]:15432".parse().unwrap()));
        assert_eq!(target.ports, None, "the own netns uses the default set");
    }

    #[test]
    fn an_unset_ipv6_listener_means_none() {
        let mut s = settings();
        s.proxy_v6 = "[::]:0".parse().unwrap();
        let (_, target) = s.to_kernel(7).unwrap();
        assert_eq!(target.v6, None);
    }

    #[test]
    fn targets_are_validated_and_encoded() {
        let t = ListenerTarget {
            v4: Some("127.0.0.1:1000".parse().unwrap()),
            v6: None,
            ports: Some(vec![6432]),
        };
        let k = t.to_kernel(9, 77).unwrap();
        assert_eq!(k.generation, 77);
        assert_eq!(k.flags, TARGET_V4 | TARGET_OWN_PORTS);
        assert_eq!(ListenerTarget::from_kernel(&k, Some(vec![6432])), t);
        let v4 = |s: &str| Some(s.parse().unwrap());
        for bad in [
            ListenerTarget {
                v4: None,
                v6: None,
                ports: None,
            },
            ListenerTarget {
                v4: v4("0.0.0.0:1000"),
                v6: None,
                ports: None,
            },
            ListenerTarget {
                v4: v4("127.0.0.1:0"),
                v6: None,
                ports: None,
            },
            ListenerTarget {
                v4: v4("127.0.0.1:1"),
                v6: None,
                ports: Some(vec![]),
            },
            ListenerTarget {
                v4: v4("127.0.0.1:1"),
                v6: None,
                ports: Some(vec![0]),
            },
        ] {
            assert!(
                matches!(
                    bad.to_kernel(9, 1),
                    Err(InterceptError::InvalidTarget { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generations_grow_with_start_time() {
        let g = own_generation();
        assert!(g >> 22 > 0, "a start time");
        assert_eq!(g & 0x3f_ffff, u64::from(std::process::id()) & 0x3f_ffff);
    }

    #[test]
    fn invalid_settings_report_every_problem() {
        let mut s = settings();
        s.ports = vec![0];
        s.proxy_v4 = "0.0.0.0:0".parse().unwrap();
        let InterceptError::InvalidSettings(msg) = s.to_kernel(7).unwrap_err() else {
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
            no_listener: 0,
        };
        assert_eq!(c.redirects_total(), 6);
    }
}
