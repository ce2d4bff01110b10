//! hoop's kernel programs.
//!
//! - `hoop_connect4` / `hoop_connect6` (`cgroup/connect4|6`): a TCP connect
//!   from the governed cgroup to an intercepted port has its original
//!   destination stored under the socket cookie, and its destination
//!   rewritten to **hoop's listener in the socket's own network namespace**
//!   ([`HOOP_TARGETS`], keyed by the netns cookie). A rewritten connect is
//!   completed in the connecting socket's netns, so that is the only place a
//!   listener can be: on Kubernetes every governed pod has its own listeners
//!   on its own loopback; `hoop exec` registers the target of its own netns.
//!   `::ffff:a.b.c.d` destinations are rewritten to `::ffff:<v4 listener>`:
//!   the kernel then completes the connect through its IPv4 path, so the
//!   IPv4 listener accepts it.
//! - The intercepted ports are the default set ([`PortKey`] with cookie 0),
//!   or the netns's own set when its target says so (`hoop.dev/ports`).
//! - **Fail closed**: an intercepted connect from a netns without a target
//!   (or without a listener of its family) is refused with `EPERM`, as is one
//!   whose original destination cannot be stored. A governed pod is never
//!   redirected to a port nobody in its netns owns.
//! - `hoop_sockops` (`sockops`, `ACTIVE_ESTABLISHED`): moves the stored entry
//!   from the cookie to the client's (netns, local address, local port),
//!   which is what the proxy sees as the accepted socket's peer in that
//!   netns. This callback runs on the client before it sends the final ACK,
//!   so the entry exists before the proxy's `accept()` returns.
//!
//! The proxy recovers the original destination by looking up **and deleting**
//! the [`HOOP_ORIG_BY_CLIENT`] entry (no `SO_ORIGINAL_DST` program: that one
//! would have to be attached to the cgroup of the process that created the
//! *listening* socket, and the map lookup works wherever the proxy runs).
//!
//! Loop avoidance: sockets carrying the configured `SO_MARK` in hoop's own
//! network namespace, and connects from a tgid in [`HOOP_SKIP_TGIDS`], are
//! never redirected, so the proxy's own upstream connections go straight out
//! even when it runs inside the cgroup. The mark counts only in hoop's own
//! namespace: a pod with `CAP_NET_ADMIN` could set it in its own.
#![no_std]
#![no_main]
// Every helper call and context read is unsafe: allowed per function below,
// each block with its SAFETY comment, denied everywhere else.
#![deny(unsafe_code)]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_NO_PREALLOC, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, bpf_sock_addr},
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_netns_cookie,
        bpf_get_socket_cookie,
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{SockAddrContext, SockOpsContext},
};
use aya_log_ebpf::debug;
use hoop_common::{
    AF_INET, AF_INET6, COUNTER_COUNT, ClientKey, Counter, IPPROTO_TCP, MAX_PORT_ENTRIES,
    MAX_SKIP_TGIDS, MAX_TARGETS, MAX_TRACKED_CONNECTIONS, OriginalDst, PortKey, RedirectKind,
    RedirectTarget, Settings, TARGET_OWN_PORTS, TARGET_V4, TARGET_V6, V4_MAPPED_PREFIX_WORD,
    is_v4_mapped,
};

#[map]
static HOOP_SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

// Userspace-written, read on every governed connect; sized for many pods
// but allocated per entry (no preallocation).
#[map]
static HOOP_PORTS: HashMap<PortKey, u8> =
    HashMap::with_max_entries(MAX_PORT_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
static HOOP_TARGETS: HashMap<u64, RedirectTarget> =
    HashMap::with_max_entries(MAX_TARGETS, BPF_F_NO_PREALLOC);

#[map]
static HOOP_SKIP_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_SKIP_TGIDS, 0);

#[map]
static HOOP_ORIG_BY_COOKIE: LruHashMap<u64, OriginalDst> =
    LruHashMap::with_max_entries(MAX_TRACKED_CONNECTIONS, 0);

#[map]
static HOOP_ORIG_BY_CLIENT: LruHashMap<ClientKey, OriginalDst> =
    LruHashMap::with_max_entries(MAX_TRACKED_CONNECTIONS, 0);

#[map]
static HOOP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// `cgroup/connect*` return value that lets the connect proceed.
const CONNECT_ALLOW: i32 = 1;
/// `cgroup/connect*` return value that fails the connect with `EPERM`.
const CONNECT_REJECT: i32 = 0;

/// What a connect program decided, before it is turned into a return code.
enum Outcome {
    /// Not ours (other port, protocol, skipped socket…): connect untouched.
    Untouched,
    /// Destination rewritten to the proxy.
    Redirected,
}

/// Why a connect that should have been redirected was not; all of these fail
/// the connect rather than letting it bypass the proxy.
#[derive(Clone, Copy)]
enum ConnectError {
    /// The original destination could not be stored.
    Store,
    /// The socket's netns has no hoop listener for this family.
    NoTarget,
}

/// An intercepted connect that must be redirected.
struct Intercepted {
    /// Destination port, host order.
    port: u16,
    /// The connecting socket's netns cookie.
    netns_cookie: u64,
    /// The netns's listeners.
    target: RedirectTarget,
    /// The connecting process.
    tgid: u32,
}

#[cgroup_sock_addr(connect4)]
pub fn hoop_connect4(ctx: SockAddrContext) -> i32 {
    verdict(try_connect4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn hoop_connect6(ctx: SockAddrContext) -> i32 {
    verdict(try_connect6(&ctx))
}

#[sock_ops]
pub fn hoop_sockops(ctx: SockOpsContext) -> u32 {
    // sockops return values are ignored for the callbacks we use; 1 = ok.
    let _ = try_sockops(&ctx);
    1
}

#[inline(always)]
fn verdict(result: Result<Outcome, ConnectError>) -> i32 {
    match result {
        Ok(Outcome::Untouched | Outcome::Redirected) => CONNECT_ALLOW,
        Err(ConnectError::Store) => {
            count(Counter::StoreFailed);
            CONNECT_REJECT
        }
        Err(ConnectError::NoTarget) => {
            count(Counter::NoTarget);
            CONNECT_REJECT
        }
    }
}

#[inline(always)]
#[allow(unsafe_code)]
fn count(counter: Counter) {
    if let Some(slot) = HOOP_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so
        // it is valid and only this CPU touches this slot (preemption is off).
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn settings() -> Option<&'static Settings> {
    HOOP_SETTINGS.get(0).filter(|s| s.enabled != 0)
}

/// Decides whether this connect is intercepted: TCP, settings written, the
/// destination port in the netns's port set, not the proxy itself. `Ok(None)`
/// leaves it alone; `Err(NoTarget)` refuses an intercepted connect from a
/// netns without hoop listeners. Reads context fields with `read_volatile` on
/// the field itself, which is the access pattern the verifier accepts.
#[inline(always)]
#[allow(unsafe_code)]
fn intercept(ctx: &SockAddrContext) -> Result<Option<Intercepted>, ConnectError> {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the program context; reading its scalar fields is allowed.
    let (protocol, port) = unsafe {
        (
            read_volatile(addr_of!((*sa).protocol)),
            read_volatile(addr_of!((*sa).user_port)),
        )
    };
    if protocol != IPPROTO_TCP {
        return Ok(None);
    }
    let Some(settings) = settings() else {
        return Ok(None);
    };
    // user_port holds the port in network order in its low 16 bits.
    let port = u16::from_be(port as u16);
    // SAFETY: helper allowed in cgroup sock_addr programs; takes the context
    // and returns the cookie of the socket's network namespace.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once; userspace replaces entries
    // whole (a racing update is seen as the old or the new target).
    let target = unsafe { HOOP_TARGETS.get(netns_cookie) }.copied();
    let scope = match &target {
        Some(t) if t.flags & TARGET_OWN_PORTS != 0 => netns_cookie,
        _ => 0,
    };
    // SAFETY: a shared lookup of a plain `u8`; userspace only inserts/deletes.
    if unsafe { HOOP_PORTS.get(PortKey::new(scope, port)) }.is_none() {
        return Ok(None);
    }
    let tgid = current_tgid();
    if is_self(sa, settings, tgid, netns_cookie) {
        count(Counter::SkippedSelf);
        return Ok(None);
    }
    let Some(target) = target else {
        return Err(ConnectError::NoTarget);
    };
    Ok(Some(Intercepted {
        port,
        netns_cookie,
        target,
        tgid,
    }))
}

/// True when this connect belongs to the proxy itself: its tgid, or the skip
/// mark on a socket in hoop's own network namespace (a pod with
/// `CAP_NET_ADMIN` could set the mark in its own namespace).
#[inline(always)]
#[allow(unsafe_code)]
fn is_self(sa: *const bpf_sock_addr, settings: &Settings, tgid: u32, netns_cookie: u64) -> bool {
    if settings.skip_mark != 0
        && (settings.skip_mark_netns == 0 || settings.skip_mark_netns == netns_cookie)
    {
        // SAFETY: `sk` in a sock_addr context is always a valid full socket.
        let mark = unsafe {
            let sk = read_volatile(addr_of!((*sa).__bindgen_anon_1.sk));
            read_volatile(addr_of!((*sk).mark))
        };
        if mark == settings.skip_mark {
            return true;
        }
    }
    // SAFETY: shared lookup of a plain `u8`.
    unsafe { HOOP_SKIP_TGIDS.get(tgid) }.is_some()
}

/// Stores the original destination under the socket cookie.
#[inline(always)]
#[allow(unsafe_code)]
fn remember(
    ctx: &SockAddrContext,
    hit: &Intercepted,
    family: u32,
    addr: [u32; 4],
    kind: RedirectKind,
) -> Result<(), ConnectError> {
    // SAFETY: both helpers are allowed in cgroup sock_addr programs and take
    // the program context (or nothing).
    let (cookie, cgroup_id) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_current_cgroup_id(),
        )
    };
    let dst = OriginalDst {
        cgroup_id,
        netns_cookie: hit.netns_cookie,
        family,
        addr,
        port: hit.port,
        kind: kind as u16,
        tgid: hit.tgid,
        reserved: 0,
    };
    HOOP_ORIG_BY_COOKIE
        .insert(cookie, dst, 0)
        .map_err(|_| ConnectError::Store)
}

#[inline(always)]
#[allow(unsafe_code)]
fn current_tgid() -> u32 {
    // SAFETY: helper without arguments, allowed in cgroup sock_addr programs.
    (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32
}

#[allow(unsafe_code)]
fn try_connect4(ctx: &SockAddrContext) -> Result<Outcome, ConnectError> {
    let sa = ctx.sock_addr;
    let Some(hit) = intercept(ctx)? else {
        return Ok(Outcome::Untouched);
    };
    if hit.target.flags & TARGET_V4 == 0 {
        return Err(ConnectError::NoTarget);
    }
    // SAFETY: scalar context field read.
    let ip = unsafe { read_volatile(addr_of!((*sa).user_ip4)) };
    if ip == hit.target.v4_addr && hit.port == hit.target.v4_port {
        // Already going to the proxy.
        return Ok(Outcome::Untouched);
    }
    remember(ctx, &hit, AF_INET, [ip, 0, 0, 0], RedirectKind::V4)?;
    // SAFETY: user_ip4/user_port are writable in connect4.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip4), hit.target.v4_addr);
        write_volatile(
            addr_of_mut!((*sa).user_port),
            u32::from(hit.target.v4_port.to_be()),
        );
    }
    count(Counter::RedirectedV4);
    debug!(
        ctx,
        "hoop: redirected v4 connect to port {} (tgid {})", hit.port, hit.tgid
    );
    Ok(Outcome::Redirected)
}

#[allow(unsafe_code)]
fn try_connect6(ctx: &SockAddrContext) -> Result<Outcome, ConnectError> {
    let sa = ctx.sock_addr;
    let Some(hit) = intercept(ctx)? else {
        return Ok(Outcome::Untouched);
    };
    // SAFETY: scalar context field reads, word by word (the verifier rejects
    // wider or computed accesses to user_ip6).
    let ip = unsafe {
        [
            read_volatile(addr_of!((*sa).user_ip6[0])),
            read_volatile(addr_of!((*sa).user_ip6[1])),
            read_volatile(addr_of!((*sa).user_ip6[2])),
            read_volatile(addr_of!((*sa).user_ip6[3])),
        ]
    };
    let mapped = is_v4_mapped(&ip);
    let (needed, target, target_port, kind, counter) = if mapped {
        (
            TARGET_V4,
            [0, 0, V4_MAPPED_PREFIX_WORD, hit.target.v4_addr],
            hit.target.v4_port,
            RedirectKind::V4Mapped,
            Counter::RedirectedV4Mapped,
        )
    } else {
        (
            TARGET_V6,
            hit.target.v6_addr,
            hit.target.v6_port,
            RedirectKind::V6,
            Counter::RedirectedV6,
        )
    };
    if hit.target.flags & needed == 0 {
        return Err(ConnectError::NoTarget);
    }
    if ip == target && hit.port == target_port {
        return Ok(Outcome::Untouched);
    }
    remember(ctx, &hit, AF_INET6, ip, kind)?;
    // SAFETY: user_ip6 words and user_port are writable in connect6.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip6[0]), target[0]);
        write_volatile(addr_of_mut!((*sa).user_ip6[1]), target[1]);
        write_volatile(addr_of_mut!((*sa).user_ip6[2]), target[2]);
        write_volatile(addr_of_mut!((*sa).user_ip6[3]), target[3]);
        write_volatile(
            addr_of_mut!((*sa).user_port),
            u32::from(target_port.to_be()),
        );
    }
    count(counter);
    debug!(
        ctx,
        "hoop: redirected v6 connect to port {} (mapped {}, tgid {})",
        hit.port,
        u8::from(mapped),
        hit.tgid
    );
    Ok(Outcome::Redirected)
}

#[allow(unsafe_code)]
fn try_sockops(ctx: &SockOpsContext) -> Result<(), i64> {
    let ops = ctx.ops;
    // SAFETY: scalar context field read.
    if unsafe { read_volatile(addr_of!((*ops).op)) } != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return Ok(());
    }
    // SAFETY: helper allowed in sockops programs, takes the context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out immediately; a concurrent delete of the
    // same cookie cannot happen (only this socket's callback deletes it).
    let Some(dst) = (unsafe { HOOP_ORIG_BY_COOKIE.get(cookie) }).copied() else {
        return Ok(());
    };
    // SAFETY: scalar context field reads, word by word.
    let (family, port, ip4, ip6) = unsafe {
        (
            read_volatile(addr_of!((*ops).family)),
            read_volatile(addr_of!((*ops).local_port)),
            read_volatile(addr_of!((*ops).local_ip4)),
            [
                read_volatile(addr_of!((*ops).local_ip6[0])),
                read_volatile(addr_of!((*ops).local_ip6[1])),
                read_volatile(addr_of!((*ops).local_ip6[2])),
                read_volatile(addr_of!((*ops).local_ip6[3])),
            ],
        )
    };
    // local_port is in host order (unlike remote_port).
    let port = port as u16;
    let netns_cookie = dst.netns_cookie;
    let key = if family == AF_INET6 && !is_v4_mapped(&ip6) {
        ClientKey {
            netns_cookie,
            family: AF_INET6,
            addr: ip6,
            port,
            reserved: 0,
        }
    } else if family == AF_INET6 {
        // An IPv4-mapped client reaches the proxy's IPv4 listener as an IPv4 peer.
        ClientKey {
            netns_cookie,
            family: AF_INET,
            addr: [ip6[3], 0, 0, 0],
            port,
            reserved: 0,
        }
    } else {
        ClientKey {
            netns_cookie,
            family: AF_INET,
            addr: [ip4, 0, 0, 0],
            port,
            reserved: 0,
        }
    };
    HOOP_ORIG_BY_CLIENT.insert(key, dst, 0)?;
    HOOP_ORIG_BY_COOKIE.remove(cookie)?;
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The kernel only accepts a fixed set of license strings as GPL-compatible
// ("Dual MIT/GPL" is aya-template's). None of the helpers used here is
// GPL-only; the lead should confirm this string against the project license.
#[allow(unsafe_code)]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
