//! Dialing the original destination.
//!
//! Upstream sockets get `SO_MARK` before `connect`, so the eBPF programs can
//! recognise the proxy's own connections and never redirect them back to it.

use std::{
    future::Future, io, net::SocketAddr, os::fd::OwnedFd, pin::Pin, sync::Arc, time::Duration,
};

use tokio::net::{TcpSocket, TcpStream};

/// Where upstream sockets come from when they must not be made in hoop's
/// own network namespace: a Kubernetes pod's sessions are dialed from
/// inside the pod's namespace, so they leave with the pod's address, through
/// its routes, under its NetworkPolicy.
pub trait SocketFactory: Send + Sync + std::fmt::Debug {
    /// A new non-blocking TCP socket, IPv6 when `v6`.
    fn socket(&self, v6: bool) -> Pin<Box<dyn Future<Output = io::Result<OwnedFd>> + Send + '_>>;
}

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The socket could not be created or configured.
    #[error("could not create a socket for {addr}")]
    Socket {
        /// The destination.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting `SO_MARK` failed (it needs CAP_NET_ADMIN).
    #[error("could not set SO_MARK {mark:#x} on the socket for {addr}")]
    Mark {
        /// The destination.
        addr: SocketAddr,
        /// The mark.
        mark: u32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The destination refused or the network failed.
    #[error("could not connect to {addr}")]
    Connect {
        /// The destination.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No answer within the connect timeout.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The destination.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
}

/// Opens upstream connections.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// `SO_MARK` for upstream sockets (`None` leaves it unset, e.g. in tests).
    pub mark: Option<u32>,
    /// How long to wait for `connect`.
    pub connect_timeout: Duration,
    /// Makes the sockets (`None`: in hoop's own network namespace).
    pub sockets: Option<Arc<dyn SocketFactory>>,
}

impl Default for Dialer {
    fn default() -> Self {
        Self {
            mark: None,
            connect_timeout: Duration::from_secs(5),
            sockets: None,
        }
    }
}

impl Dialer {
    /// Upstream connections as `proxy:` configures them (its connect
    /// timeout), with `mark` and in hoop's own network namespace.
    pub fn from_config(proxy: &hoop_config::ProxyConfig, mark: Option<u32>) -> Self {
        Self {
            mark,
            connect_timeout: proxy.connect_timeout,
            sockets: None,
        }
    }

    /// Connects to `addr` with the mark set and `TCP_NODELAY` on.
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, DialError> {
        let socket = match &self.sockets {
            None => if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(|source| DialError::Socket { addr, source })?,
            Some(factory) => {
                let fd = factory
                    .socket(addr.is_ipv6())
                    .await
                    .map_err(|source| DialError::Socket { addr, source })?;
                TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
            }
        };
        if let Some(mark) = self.mark {
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &mark)
                .map_err(|source| DialError::Mark { addr, mark, source })?;
        }
        socket
            .set_nodelay(true)
            .map_err(|source| DialError::Socket { addr, source })?;
        match tokio::time::timeout(self.connect_timeout, socket.connect(addr)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(DialError::Connect { addr, source }),
            Err(_) => Err(DialError::Timeout {
                addr,
                timeout: self.connect_timeout,
            }),
        }
    }
}
