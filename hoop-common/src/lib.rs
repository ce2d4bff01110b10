//! Types shared by hoop's kernel programs and its userspace loader.
//!
//! Everything here is `#[repr(C)]` plain data: it crosses the user/kernel
//! boundary through BPF maps, so layout must match on both sides. Every struct
//! is laid out without implicit padding (explicit `reserved` fields instead),
//! so the kernel's byte-wise key hashing never sees uninitialised bytes.
//!
//! Address conventions, chosen to match the kernel's context structs so the
//! eBPF side copies words without swapping:
//! - IPv4 addresses are one `u32` whose *in-memory bytes* are the address in
//!   network order (as `bpf_sock_addr.user_ip4`); see [`ipv4_to_word`].
//! - IPv6 addresses are four such words (as `bpf_sock_addr.user_ip6`).
//! - Ports are in **host** byte order everywhere in these types.
//!
//! Redirect targets are per **network namespace** (keyed by the netns
//! cookie, `bpf_get_netns_cookie()` in the kernel, `SO_NETNS_COOKIE` in
//! userspace): a rewritten connect is completed in the connecting socket's
//! own netns, so the only listener it can reach is one in that netns. On
//! Kubernetes each governed pod has its own listener in its own netns;
//! `hoop exec` registers the target of the netns it runs in.
#![no_std]
#![deny(unsafe_code)]

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `AF_INET`, as the kernel reports socket families.
pub const AF_INET: u32 = 2;
/// `AF_INET6`, as the kernel reports socket families.
pub const AF_INET6: u32 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u32 = 6;

/// Version of the map layout. Pinned maps are kept under a directory named
/// after it, so an agent never adopts maps whose layout it does not know.
pub const LAYOUT_VERSION: u32 = 2;

/// Name of the [`Settings`] array map (one entry, index 0).
pub const MAP_SETTINGS: &str = "HOOP_SETTINGS";
/// Name of the intercepted-ports hash map: [`PortKey`] → `u8` (1).
pub const MAP_PORTS: &str = "HOOP_PORTS";
/// Name of the redirect-target hash map: netns cookie (`u64`) →
/// [`RedirectTarget`].
pub const MAP_TARGETS: &str = "HOOP_TARGETS";
/// Name of the skipped-tgid hash map: `u32` tgid → `u8` (1).
pub const MAP_SKIP_TGIDS: &str = "HOOP_SKIP_TGIDS";
/// Name of the LRU map socket cookie (`u64`) → [`OriginalDst`], written by
/// `connect4`/`connect6` and consumed by `sockops`.
pub const MAP_ORIGINAL_BY_COOKIE: &str = "HOOP_ORIG_BY_COOKIE";
/// Name of the LRU map [`ClientKey`] → [`OriginalDst`], written by `sockops`
/// and consumed (looked up and deleted) by the proxy.
pub const MAP_ORIGINAL_BY_CLIENT: &str = "HOOP_ORIG_BY_CLIENT";
/// Name of the per-CPU `u64` counter array, indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "HOOP_COUNTERS";

/// Maximum number of intercepted destination ports in one set (the default
/// set, or one network namespace's own set).
pub const MAX_PORTS: u32 = 64;
/// Capacity of [`MAP_PORTS`]: the default set plus per-netns sets.
pub const MAX_PORT_ENTRIES: u32 = 16_384;
/// Capacity of [`MAP_TARGETS`]: network namespaces with a hoop listener.
pub const MAX_TARGETS: u32 = 4_096;
/// Maximum number of skipped tgids.
pub const MAX_SKIP_TGIDS: u32 = 256;
/// Capacity of the two original-destination LRU maps.
pub const MAX_TRACKED_CONNECTIONS: u32 = 65_536;

/// Program names as they appear in the object (function names).
pub const PROG_CONNECT4: &str = "hoop_connect4";
/// See [`PROG_CONNECT4`].
pub const PROG_CONNECT6: &str = "hoop_connect6";
/// See [`PROG_CONNECT4`].
pub const PROG_SOCKOPS: &str = "hoop_sockops";

/// Loader-written settings, one entry at index 0 of [`MAP_SETTINGS`].
///
/// A zeroed entry (the state before userspace writes it) has `enabled == 0`
/// and the programs redirect nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Sockets carrying this `SO_MARK` are never redirected (0 disables).
    pub skip_mark: u32,
    /// Non-zero once userspace has written valid settings.
    pub enabled: u32,
    /// The skip mark only counts for sockets in this network namespace
    /// (the loader's own; 0: any). A pod with `CAP_NET_ADMIN` in its own
    /// namespace can set any mark, so outside hoop's namespace the mark
    /// must not be a way around governance.
    pub skip_mark_netns: u64,
}

/// [`RedirectTarget::flags`]: the IPv4 listener is set.
pub const TARGET_V4: u32 = 1;
/// [`RedirectTarget::flags`]: the IPv6 listener is set.
pub const TARGET_V6: u32 = 2;
/// [`RedirectTarget::flags`]: this netns has its own intercepted ports
/// (entries of [`MAP_PORTS`] keyed by its cookie) instead of the default set.
pub const TARGET_OWN_PORTS: u32 = 4;

/// Where intercepted connects from one network namespace go: hoop's
/// listeners *in that namespace*. Value of [`MAP_TARGETS`].
///
/// A governed socket whose netns has no target, or whose family's listener
/// is unset, is refused (`EPERM`): fail closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectTarget {
    /// Who wrote the entry: the writing agent's start time (ns since boot).
    /// An agent never overwrites an entry written by a newer agent, so an
    /// old agent still draining during a rolling update cannot redirect a
    /// pod back to a listener that is about to close.
    pub generation: u64,
    /// IPv6 listener address (word convention).
    pub v6_addr: [u32; 4],
    /// IPv4 listener address (word convention).
    pub v4_addr: u32,
    /// IPv4 listener port, host order.
    pub v4_port: u16,
    /// IPv6 listener port, host order.
    pub v6_port: u16,
    /// [`TARGET_V4`] | [`TARGET_V6`] | [`TARGET_OWN_PORTS`].
    pub flags: u32,
    /// Always zero; keeps the layout free of implicit padding.
    pub reserved: u32,
}

/// Key of [`MAP_PORTS`]: a destination port in one port set. `netns_cookie`
/// 0 is the default set; a netns whose target has [`TARGET_OWN_PORTS`] uses
/// the entries keyed by its own cookie instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// 0, or the netns cookie owning this set.
    pub netns_cookie: u64,
    /// Destination port, host order.
    pub port: u16,
    /// Always zero; keeps the layout free of implicit padding.
    pub reserved: [u16; 3],
}

impl PortKey {
    /// The key of `port` in the set of `netns_cookie` (0 = default set).
    #[inline]
    pub const fn new(netns_cookie: u64, port: u16) -> Self {
        Self {
            netns_cookie,
            port,
            reserved: [0; 3],
        }
    }
}

/// Which rewrite a connect received; stored in [`OriginalDst::kind`].
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectKind {
    /// `connect4` rewrote an `AF_INET` connect to the proxy's IPv4 listener.
    V4 = 0,
    /// `connect6` rewrote an IPv6 connect to the proxy's IPv6 listener.
    V6 = 1,
    /// `connect6` rewrote a connect to `::ffff:a.b.c.d` to the IPv4-mapped
    /// form of the proxy's IPv4 listener.
    V4Mapped = 2,
}

/// The destination a redirected socket originally asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginalDst {
    /// `bpf_get_current_cgroup_id()` of the connecting task (cgroup v2 id,
    /// i.e. the inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// Cookie of the connecting socket's network namespace.
    pub netns_cookie: u64,
    /// [`AF_INET`] or [`AF_INET6`]: the family of the address as dialled.
    pub family: u32,
    /// The address as dialled; IPv4 uses `addr[0]` (word convention).
    pub addr: [u32; 4],
    /// Destination port, host order.
    pub port: u16,
    /// A [`RedirectKind`] discriminant.
    pub kind: u16,
    /// Thread-group id (userspace "pid") of the connecting process.
    pub tgid: u32,
    /// Always zero; keeps the layout free of implicit padding.
    pub reserved: u32,
}

/// Key of [`MAP_ORIGINAL_BY_CLIENT`]: the client's network namespace, local
/// address and port. The proxy sees the latter two as the accepted socket's
/// peer address; the namespace tells apart pods whose clients share
/// `127.0.0.1:<port>` in their own loopbacks.
///
/// IPv4-mapped IPv6 client addresses are stored as [`AF_INET`], because the
/// proxy's IPv4 listener sees such a client as a plain IPv4 peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// Cookie of the client's (and the listener's) network namespace.
    pub netns_cookie: u64,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u32,
    /// Client address; IPv4 uses `addr[0]`, other words zero.
    pub addr: [u32; 4],
    /// Client port, host order.
    pub port: u16,
    /// Always zero; keeps the layout free of implicit padding.
    pub reserved: u16,
}

/// Indices into the per-CPU [`MAP_COUNTERS`] array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// IPv4 connects redirected to the proxy.
    RedirectedV4 = 0,
    /// IPv6 connects redirected to the proxy.
    RedirectedV6 = 1,
    /// IPv4-mapped IPv6 connects redirected to the proxy.
    RedirectedV4Mapped = 2,
    /// Intercepted-port connects left alone because of the skip mark or tgid.
    SkippedSelf = 3,
    /// Connects refused because the original destination could not be stored
    /// (fail closed: a redirect the proxy cannot resolve is worse than none).
    StoreFailed = 4,
    /// Intercepted connects refused because the socket's network namespace
    /// has no hoop listener for its family (fail closed).
    NoTarget = 5,
}

/// Number of entries in [`MAP_COUNTERS`].
pub const COUNTER_COUNT: u32 = 6;

/// Converts an IPv4 address to the kernel's word convention.
#[inline]
pub const fn ipv4_to_word(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// Converts a kernel IPv4 word back to an address.
#[inline]
pub const fn ipv4_from_word(word: u32) -> Ipv4Addr {
    let [a, b, c, d] = word.to_ne_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Converts an IPv6 address to the kernel's four-word convention.
#[inline]
pub fn ipv6_to_words(ip: Ipv6Addr) -> [u32; 4] {
    let o = ip.octets();
    core::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// Converts four kernel words back to an IPv6 address.
#[inline]
pub fn ipv6_from_words(words: [u32; 4]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for (chunk, word) in o.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Ipv6Addr::from(o)
}

/// Word 2 of an IPv4-mapped IPv6 address (`::ffff:0:0/96`) in the word
/// convention: bytes `00 00 ff ff`.
pub const V4_MAPPED_PREFIX_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// True when `words` is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[inline]
pub const fn is_v4_mapped(words: &[u32; 4]) -> bool {
    words[0] == 0 && words[1] == 0 && words[2] == V4_MAPPED_PREFIX_WORD
}

impl ClientKey {
    /// The key for a peer address as the proxy sees it on a listener in the
    /// network namespace `netns_cookie`. IPv4-mapped IPv6 addresses are
    /// folded to IPv4, matching what `sockops` stores.
    pub fn from_socket_addr(netns_cookie: u64, addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(v4) => Self::v4(netns_cookie, *v4.ip(), v4.port()),
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => Self::v4(netns_cookie, v4, v6.port()),
                None => Self {
                    netns_cookie,
                    family: AF_INET6,
                    addr: ipv6_to_words(*v6.ip()),
                    port: v6.port(),
                    reserved: 0,
                },
            },
        }
    }

    fn v4(netns_cookie: u64, ip: Ipv4Addr, port: u16) -> Self {
        Self {
            netns_cookie,
            family: AF_INET,
            addr: [ipv4_to_word(ip), 0, 0, 0],
            port,
            reserved: 0,
        }
    }
}

impl RedirectTarget {
    /// The IPv4 listener, when set.
    pub fn v4(&self) -> Option<SocketAddrV4> {
        (self.flags & TARGET_V4 != 0)
            .then(|| SocketAddrV4::new(ipv4_from_word(self.v4_addr), self.v4_port))
    }

    /// The IPv6 listener, when set.
    pub fn v6(&self) -> Option<SocketAddrV6> {
        (self.flags & TARGET_V6 != 0)
            .then(|| SocketAddrV6::new(ipv6_from_words(self.v6_addr), self.v6_port, 0, 0))
    }
}

impl OriginalDst {
    /// The destination as the application dialled it, or `None` for an
    /// unknown family (a corrupted entry).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.family {
            AF_INET => Some(SocketAddr::V4(SocketAddrV4::new(
                ipv4_from_word(self.addr[0]),
                self.port,
            ))),
            AF_INET6 => Some(SocketAddr::V6(SocketAddrV6::new(
                ipv6_from_words(self.addr),
                self.port,
                0,
                0,
            ))),
            _ => None,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all of them): `#[repr(C)]`, only integer fields, no implicit
    // padding (sizes asserted below), so every bit pattern is valid and the
    // whole value may be copied as bytes.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::Settings {}
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::OriginalDst {}
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::ClientKey {}
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::RedirectTarget {}
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for super::PortKey {}
}

// Layout guards: a field change that introduces padding fails the build.
const _: () = assert!(core::mem::size_of::<Settings>() == 16);
const _: () = assert!(core::mem::size_of::<OriginalDst>() == 48);
const _: () = assert!(core::mem::size_of::<ClientKey>() == 32);
const _: () = assert!(core::mem::size_of::<RedirectTarget>() == 40);
const _: () = assert!(core::mem::size_of::<PortKey>() == 16);

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    extern crate std;
    use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use super::*;

    #[test]
    fn ipv4_word_has_network_order_bytes() {
        let w = ipv4_to_word(Ipv4Addr::LOCALHOST);
        assert_eq!(w.to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(ipv4_from_word(w), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn ipv6_words_round_trip() {
        let ip: Ipv6Addr = "2001:db8::1:2".parse().unwrap();
        assert_eq!(ipv6_from_words(ipv6_to_words(ip)), ip);
    }

    #[test]
    fn v4_mapped_detection() {
        let mapped = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped();
        assert!(is_v4_mapped(&ipv6_to_words(mapped)));
        assert!(!is_v4_mapped(&ipv6_to_words(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn client_key_folds_v4_mapped_peers() {
        let v4: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        assert_eq!(
            ClientKey::from_socket_addr(7, v4),
            ClientKey::from_socket_addr(7, mapped)
        );
        assert_ne!(
            ClientKey::from_socket_addr(7, v4),
            ClientKey::from_socket_addr(8, v4),
            "the same address in two namespaces is two clients"
        );
        let v6: SocketAddr = "[::1]:4000".parse().unwrap();
        assert_eq!(ClientKey::from_socket_addr(7, v6).family, AF_INET6);
        assert_eq!(ClientKey::from_socket_addr(7, v6).netns_cookie, 7);
    }

    #[test]
    fn redirect_target_families() {
        let t = RedirectTarget {
            v4_addr: ipv4_to_word(Ipv4Addr::LOCALHOST),
            v4_port: 15001,
            v6_addr: ipv6_to_words(Ipv6Addr::LOCALHOST),
            v6_port: 15002,
            flags: TARGET_V4,
            ..RedirectTarget::default()
        };
        assert_eq!(t.v4(), Some("127.0.0.1:15001".parse().unwrap()));
        assert_eq!(t.v6(), None, "unset without its flag");
        let t = RedirectTarget {
            flags: TARGET_V4 | TARGET_V6,
            ..t
        };
        assert_eq!(t.v6(), Some("[::1]:15002".parse().unwrap()));
    }

    #[test]
    fn original_dst_to_socket_addr() {
        let dst = OriginalDst {
            family: AF_INET,
            addr: [ipv4_to_word(Ipv4Addr::new(10, 0, 0, 5)), 0, 0, 0],
            port: 5432,
            ..OriginalDst::default()
        };
        assert_eq!(dst.socket_addr(), Some("10.0.0.5:5432".parse().unwrap()));
    }
}
