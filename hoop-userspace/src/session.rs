//! Who a proxied session is: the identity every log line, policy decision,
//! hold and recording refers to.

use std::{fmt, net::SocketAddr};

use serde::Serialize;

/// The identity of one proxied client session.
///
/// Filled in stages: the network part when the connection is accepted, the
/// database part from the StartupMessage, the backend pid from BackendKeyData.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SessionIdentity {
    /// A process-unique session id (also the recording id).
    pub id: String,
    /// The governed workload: the cgroup path the client's socket belongs to.
    pub workload: Option<String>,
    /// The client's address as the proxy sees it (its local address).
    pub client: Option<SocketAddr>,
    /// Where the client meant to connect before redirection.
    pub original_destination: Option<SocketAddr>,
    /// Database user from the StartupMessage.
    pub user: Option<String>,
    /// Database name from the StartupMessage (defaults to the user, as libpq does).
    pub database: Option<String>,
    /// `application_name` from the StartupMessage or a later ParameterStatus.
    pub application_name: Option<String>,
    /// The server backend's process id, from BackendKeyData.
    pub backend_pid: Option<i32>,
    /// Whether the client leg is TLS (terminated by hoop).
    pub client_tls: bool,
    /// Whether the upstream leg is TLS.
    pub upstream_tls: bool,
}

impl fmt::Display for SessionIdentity {
    // Compact, log-friendly: `s-12 user@db app=psql client=127.0.0.1:5000 dst=10.0.0.5:5432`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        if let Some(user) = &self.user {
            write!(f, " {user}@{}", self.database.as_deref().unwrap_or("?"))?;
        }
        if let Some(app) = &self.application_name {
            write!(f, " app={app}")?;
        }
        if let Some(client) = &self.client {
            write!(f, " client={client}")?;
        }
        if let Some(dst) = &self.original_destination {
            write!(f, " dst={dst}")?;
        }
        if let Some(workload) = &self.workload {
            write!(f, " workload={workload}")?;
        }
        Ok(())
    }
}
