//! `destination:`: which connections an entry is for.
//!
//! A connection is for an entry when its original destination (where the
//! client meant to connect, before interception) is the entry's host and
//! port, and it asks for the entry's database (and user, when the entry
//! names one). A host is an IP address or a name: hoop resolves a name
//! itself when the configuration is loaded, and again in the background
//! once the answer is older than [`RESOLVE_EVERY`], so a database that
//! moves is followed; until a name resolves, nothing matches it (its
//! connections pass through and authenticate themselves).

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{debug, warn};

/// How long a host name's addresses are used before they are looked up again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// Where an entry's connections go.
#[derive(Debug)]
pub struct Destination {
    /// The server's host.
    pub host: Host,
    /// The server's port.
    pub port: u16,
    /// The database the client asks for (and the session opens).
    pub database: String,
    /// The user the client must ask for, when given.
    pub user: Option<String>,
}

impl Destination {
    /// Whether a connection to `original`, asking for `database` as `user`,
    /// is for this destination.
    pub fn matches(
        &self,
        original: SocketAddr,
        database: Option<&str>,
        user: Option<&str>,
    ) -> bool {
        original.port() == self.port
            && database == Some(self.database.as_str())
            && self.user.as_deref().is_none_or(|u| user == Some(u))
            && self.host.matches(original.ip())
    }
}

impl Destination {
    /// Whether both name the same host (as written, or the same address)
    /// and port.
    pub fn same_place(&self, other: &Self) -> bool {
        self.port == other.port
            && match (&self.host, &other.host) {
                (Host::Ip(a), Host::Ip(b)) => a == b,
                (Host::Name(a), Host::Name(b)) => a.name.eq_ignore_ascii_case(&b.name),
                _ => false,
            }
    }
}

/// An entry's `destination.host`.
#[derive(Debug)]
pub enum Host {
    /// An address, compared as is (IPv4-mapped IPv6 addresses as IPv4).
    Ip(IpAddr),
    /// A name and its latest addresses.
    Name(Arc<HostName>),
}

impl Host {
    /// Parses `host`: an address, or a name resolved now (a name that does
    /// not resolve yet is kept: `Err` carries it, for a warning).
    pub fn new(host: &str) -> Result<Self, (Self, std::io::Error)> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self::Ip(ip.to_canonical()));
        }
        let name = Arc::new(HostName {
            name: host.to_owned(),
            resolved: Mutex::new(Resolved {
                addresses: Vec::new(),
                at: Instant::now(),
            }),
            refreshing: AtomicBool::new(false),
        });
        match name.resolve() {
            Ok(()) => Ok(Self::Name(name)),
            Err(e) => Err((Self::Name(name), e)),
        }
    }

    fn matches(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self {
            Self::Ip(host) => *host == ip,
            Self::Name(name) => name.matches(ip),
        }
    }
}

/// Whether `host` can be a host name (letters, digits, `-`, `.`, `_`).
pub fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !host.starts_with(['-', '.'])
}

/// A host name with the addresses it resolved to last.
#[derive(Debug)]
pub struct HostName {
    name: String,
    resolved: Mutex<Resolved>,
    refreshing: AtomicBool,
}

#[derive(Debug)]
struct Resolved {
    addresses: Vec<IpAddr>,
    at: Instant,
}

impl HostName {
    /// Looks the name up now (blocking), keeping the old addresses on failure.
    fn resolve(&self) -> std::io::Result<()> {
        let found = (self.name.as_str(), 0).to_socket_addrs();
        let mut resolved = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        resolved.at = Instant::now();
        let mut addresses: Vec<IpAddr> = found?.map(|a| a.ip().to_canonical()).collect();
        addresses.sort_unstable();
        addresses.dedup();
        if addresses != resolved.addresses {
            debug!(host = %self.name, ?addresses, "credential destination resolved");
        }
        resolved.addresses = addresses;
        Ok(())
    }

    /// Whether `ip` is one of the name's addresses. Answers from the last
    /// lookup at once; a stale answer starts a new lookup on a thread of
    /// its own, so a session start never waits on DNS.
    fn matches(self: &Arc<Self>, ip: IpAddr) -> bool {
        let (found, stale) = {
            let resolved = self
                .resolved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                resolved.addresses.contains(&ip),
                resolved.at.elapsed() >= RESOLVE_EVERY,
            )
        };
        if stale && !self.refreshing.swap(true, Ordering::AcqRel) {
            let name = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("hoop-resolve".into())
                .spawn(move || {
                    if let Err(e) = name.resolve() {
                        warn!(host = %name.name, error = %e, "cannot resolve a credential destination; its last addresses stay in use");
                    }
                    name.refreshing.store(false, Ordering::Release);
                });
            if spawned.is_err() {
                self.refreshing.store(false, Ordering::Release);
            }
        }
        found
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn destination(host: &str, user: Option<&str>) -> Destination {
        Destination {
            host: Host::new(host).unwrap(),
            port: 5432,
            database: "reports".into(),
            user: user.map(str::to_owned),
        }
    }

    #[test]
    fn host_port_database_and_user_must_all_match() {
        let d = destination("127.0.0.1", None);
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert!(d.matches(at("127.0.0.1:5432"), Some("reports"), Some("anyone")));
        assert!(d.matches(at("127.0.0.1:5432"), Some("reports"), None));
        assert!(!d.matches(at("127.0.0.1:5433"), Some("reports"), None));
        assert!(!d.matches(at("127.0.0.2:5432"), Some("reports"), None));
        assert!(!d.matches(at("127.0.0.1:5432"), Some("test"), None));
        assert!(!d.matches(at("127.0.0.1:5432"), None, None));
        // An IPv4-mapped IPv6 original destination is the IPv4 address.
        assert!(d.matches(at("[::ffff:127.0.0.1]:5432"), Some("reports"), None));
        assert!(!d.matches(at("[::1]:5432"), Some("reports"), None));

        let d = destination("127.0.0.1", Some("analyst"));
        assert!(d.matches(at("127.0.0.1:5432"), Some("reports"), Some("analyst")));
        assert!(!d.matches(at("127.0.0.1:5432"), Some("reports"), Some("root")));
        assert!(!d.matches(at("127.0.0.1:5432"), Some("reports"), None));
    }

    #[test]
    fn a_name_matches_the_addresses_it_resolves_to() {
        let d = destination("localhost", None);
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert!(d.matches(at("127.0.0.1:5432"), Some("reports"), None));
        assert!(!d.matches(at("10.1.2.3:5432"), Some("reports"), None));
        let Err((Host::Name(_), _)) = Host::new("no-such-host.invalid") else {
            panic!("an unresolvable name is kept, with its error");
        };
    }

    #[test]
    fn host_names_are_checked_for_shape() {
        assert!(is_host_name("db.prod"));
        assert!(is_host_name("pg-0.pg.default.svc.cluster.local"));
        assert!(!is_host_name(""));
        assert!(!is_host_name("two words"));
        assert!(!is_host_name("-x"));
        assert!(!is_host_name("db:5432"));
    }
}
