//! Who a proxied session is: the identity every log line, policy decision,
//! hold and recording refers to.

use std::{collections::BTreeMap, fmt, net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};

/// The wire protocol a session speaks. Connections are routed to a driver
/// by their original destination port (`intercept.protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// PostgreSQL's frontend/backend protocol (version 3).
    #[default]
    Postgres,
    /// The MySQL/MariaDB client/server protocol.
    Mysql,
}

impl Protocol {
    /// The configuration's and recordings' name (`postgres`, `mysql`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Kubernetes pod's identity: who a connection belongs to when it came
/// through the listener hoop keeps in that pod's network namespace (never
/// derived from a source address). Plain data: policy `when:` selectors
/// (`namespace`, `service_account`, `pod`, `labels`), log lines, recordings
/// and holds read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodIdentity {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's UID (`metadata.uid`).
    pub uid: String,
    /// The pod's service account (`spec.serviceAccountName`; `default` when unset).
    pub service_account: String,
    /// The node the pod runs on (`spec.nodeName`; may be empty in sidecar mode).
    pub node: String,
    /// The pod's labels (empty in sidecar mode: the Downward API
    /// environment does not carry them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl fmt::Display for PodIdentity {
    /// `namespace/pod`, the form log lines use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.pod)
    }
}

/// The identity of one proxied client session.
///
/// Filled in stages: the network part when the connection is accepted, the
/// database part from the protocol's start-up (PostgreSQL's StartupMessage,
/// MySQL's handshake response), the server's session id once the server
/// names it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SessionIdentity {
    /// A process-unique session id (also the recording id).
    pub id: String,
    /// The wire protocol.
    pub protocol: Protocol,
    /// The governed workload: the cgroup path the client's socket belongs to.
    pub workload: Option<String>,
    /// The client's address as the proxy sees it (its local address).
    pub client: Option<SocketAddr>,
    /// Where the client meant to connect before redirection.
    pub original_destination: Option<SocketAddr>,
    /// Database user the client asked for in its start-up message. On a
    /// session hoop injects credentials into, this is the workload's own
    /// (unauthenticated) claim; the server knows the session as
    /// [`SessionIdentity::injected_role`] (see [`SessionIdentity::database_user`]).
    pub user: Option<String>,
    /// Database (PostgreSQL: defaults to the user, as libpq does; MySQL:
    /// the current schema, which `USE` changes).
    pub database: Option<String>,
    /// The client's application name (PostgreSQL `application_name`, MySQL
    /// connect attribute `program_name`).
    pub application_name: Option<String>,
    /// The server's id for this session: PostgreSQL's backend process id,
    /// MySQL's connection (thread) id.
    pub server_session_id: Option<u32>,
    /// Whether the client leg is TLS (terminated by hoop).
    pub client_tls: bool,
    /// Whether the upstream leg is TLS.
    pub upstream_tls: bool,
    /// The role hoop logged in as on the workload's behalf, when a
    /// `credentials:` entry matched (`None`: the client authenticated itself).
    pub injected_role: Option<String>,
    /// The name of the `credentials:` entry whose secret was injected.
    pub credential: Option<String>,
    /// The Kubernetes pod the session came from (the pod whose listener
    /// accepted it); `None` outside Kubernetes. Shared: every session of a
    /// pod points at the same identity.
    pub pod: Option<Arc<PodIdentity>>,
}

impl SessionIdentity {
    /// The database user the server knows this session as: the injected
    /// role when hoop logged in on the workload's behalf, otherwise the
    /// user the client asked for. What `when: {user: …}` selectors match.
    pub fn database_user(&self) -> Option<&str> {
        self.injected_role.as_deref().or(self.user.as_deref())
    }
}

impl fmt::Display for SessionIdentity {
    // Compact, log-friendly: `s-12 user@db app=psql client=127.0.0.1:5000 dst=10.0.0.5:5432`,
    // with `role=… credential=…` when hoop injected a credential, and
    // `pod=namespace/name sa=…` for a Kubernetes pod's session.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        if let Some(user) = &self.user {
            write!(f, " {user}@{}", self.database.as_deref().unwrap_or("?"))?;
        }
        if let Some(role) = &self.injected_role {
            write!(f, " role={role}")?;
        }
        if let Some(credential) = &self.credential {
            write!(f, " credential={credential}")?;
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
        if let Some(pod) = &self.pod {
            write!(f, " pod={pod} sa={}", pod.service_account)?;
        }
        Ok(())
    }
}
