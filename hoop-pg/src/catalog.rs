//! PostgreSQL's catalog as a [`ColumnResolver`]: RowDescription sources
//! (table OID, attribute number) resolved to `schema.table.column`, views
//! to the columns they read, tables to their columns and types in order
//! (for `COPY table TO STDOUT`), and queries to their result types (for
//! `COPY (query) TO STDOUT` in binary, which names no types).
//!
//! hoop asks the same server, on a side connection of its own (marked like
//! every upstream socket, so it is never redirected), as the session's user
//! by default or as `proxy.catalog_user`. A session hoop logged in with an
//! injected credential is looked up as its injected role, with the same
//! secret, and the side connection refuses to send that secret in
//! cleartext unless the entry allows it (see [`cleartext_guard`]). Answers are cached per server and
//! database, and a RowDescription naming a table the cache has not seen
//! triggers a lookup of just those tables (refresh on miss).
//!
//! When the lookup fails, nothing is resolved and the mask plan treats the
//! columns as unknown: masked wherever lineage cannot prove them clean.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

mod cleartext_guard;

use hoop_core::{
    ColumnResolver, CredentialSource, NoCredentials, Preparation, RelationName, ResolvedColumn,
    Secret, SessionIdentity, SourceKey, ViewDependency,
};
use hoop_relay::dial::{DialError, Dialer};
use tokio_postgres::{NoTls, SimpleQueryMessage};
use tracing::{debug, warn};

/// Every column of the tables whose OIDs replace `$1` (an `oid[]`).
const COLUMNS_QUERY: &str = "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, c.relkind \
FROM pg_catalog.pg_attribute a \
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.oid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped";

/// Which columns every view and materialized view reads (the last column is
/// NULL for a whole-row reference). Without it, a view over a masked column
/// is only caught by bare-column rules and detectors.
const VIEW_DEPENDENCIES_QUERY: &str = "SELECT DISTINCT vn.nspname, v.relname, tn.nspname, t.relname, a.attname \
FROM pg_catalog.pg_rewrite r \
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') \
JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
 AND d.refclassid = 'pg_catalog.pg_class'::regclass \
JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND t.oid <> v.oid \
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace \
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid AND d.refobjsubid > 0";

/// Column names and types of a table in attnum order. `$1` is the table
/// name as text, cast to `regclass` so the search path resolves it as the
/// COPY did.
const TABLE_COLUMNS_QUERY: &str = "SELECT a.attname, a.atttypid, \
pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// Query descriptions kept per server and database.
const DESCRIBED_MAX: usize = 256;

/// After a failed lookup, how long before the server is asked again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// How long the views' dependencies are trusted before the next result
/// that needs them reloads them. Another session may create or replace a
/// view at any time (a migration, a DBA): a view hoop has not seen yet is
/// loaded as soon as a result names it (its OID is new), but a view
/// *replaced* under a known OID is only seen at the next reload, so this
/// bounds how long a replaced view's new reads go unseen.
const VIEWS_MAX_AGE: Duration = Duration::from_secs(10);

/// When something was last loaded, read without a lock: an atomic and the
/// TSC clock, not a mutex and the system clock, because every result of
/// every session asks whether the views are fresh.
struct LoadedAt {
    /// Nanoseconds after `epoch`, plus one; 0: never.
    at: AtomicU64,
    epoch: quanta::Instant,
}

impl LoadedAt {
    fn new() -> Self {
        Self {
            at: AtomicU64::new(0),
            epoch: quanta::Instant::now(),
        }
    }

    fn since_epoch(&self) -> u64 {
        nanos(quanta::Instant::now().saturating_duration_since(self.epoch))
    }

    /// Loaded now.
    fn mark(&self) {
        self.at
            .store(self.since_epoch().saturating_add(1), Ordering::Release);
    }

    /// Loaded less than `age` ago.
    fn within(&self, age: Duration) -> bool {
        match self.at.load(Ordering::Acquire) {
            0 => false,
            at => self.since_epoch().saturating_sub(at - 1) < nanos(age),
        }
    }
}

/// A duration in whole nanoseconds (saturating: 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Text rows of a catalog query (`None` is NULL).
type Rows = Vec<Vec<Option<String>>>;

/// A column of a table or a described query: its name, type OID and type
/// name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedColumn {
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type name (`text`, `character varying(20)`).
    pub type_name: String,
}

/// Catalog caches for every server and database hoop has proxied.
pub struct CatalogStore {
    dialer: Dialer,
    user: Option<String>,
    password: Option<Secret>,
    credentials: Arc<dyn CredentialSource>,
    /// Server → database → its catalog.
    servers: Mutex<HashMap<SocketAddr, HashMap<String, Arc<ServerCatalog>>>>,
}

/// Who the side connection logs in as.
#[derive(Debug, Clone)]
struct Login {
    user: String,
    password: Option<Secret>,
    /// Fail the login rather than answer a request for the password in
    /// cleartext (the side connection has no TLS).
    refuse_cleartext: bool,
}

/// (table OID, attnum) → column names.
#[derive(Debug, Default)]
struct ColumnCache {
    columns: HashMap<(u32, i16), ResolvedColumn>,
    /// Tables looked up (so one that vanished is not asked for again).
    tables: HashSet<u32>,
    /// Bumped whenever `columns` changes.
    generation: u64,
}

/// One server+database's cache, and hoop's connection to it.
struct ServerCatalog {
    addr: SocketAddr,
    database: String,
    cache: Mutex<ColumnCache>,
    /// `regclass text` → columns in order (for `COPY table TO`).
    table_columns: Mutex<HashMap<String, Vec<TypedColumn>>>,
    /// Query text → its result columns as the server describes them (`None`:
    /// the server could not describe it), for `COPY (query) TO`.
    described: Mutex<HashMap<String, Option<Vec<TypedColumn>>>>,
    /// View dependencies, with a version bumped on each load.
    views: Mutex<(u64, Arc<[ViewDependency]>)>,
    /// When `views` was last loaded.
    views_loaded_at: LoadedAt,
    /// Bumped after every change of `cache` or `views`
    /// ([`ColumnResolver::change_counter`]).
    changes: Arc<AtomicU64>,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    failed_at: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a catalog lookup failed.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("cannot connect: {0}")]
    Dial(#[from] DialError),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("cannot connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("catalog row field {0} is not valid")]
    BadField(usize),
    #[error("the catalog connection is not open")]
    NotConnected,
}

impl CatalogStore {
    /// A store dialing with `dialer`; `user`/`password` override the
    /// session's own user for catalog lookups.
    pub fn new(dialer: Dialer, user: Option<String>, password: Option<String>) -> Self {
        Self {
            dialer,
            user,
            password: password.map(|p| Secret::new(p.into_bytes())),
            credentials: Arc::new(NoCredentials),
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// Looks up sessions hoop logged in with an injected credential as
    /// their injected role, with the credential's current secret (unless
    /// `proxy.catalog_user` is set).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Arc<dyn CredentialSource>) -> Self {
        self.credentials = credentials;
        self
    }

    /// An empty store that logs in the same way but dials with `dialer`:
    /// a Kubernetes pod's catalog lookups leave from the pod's network
    /// namespace, like its sessions (and under its NetworkPolicy).
    #[must_use]
    pub fn with_dialer(&self, dialer: Dialer) -> Self {
        Self {
            dialer,
            user: self.user.clone(),
            password: self.password.clone(),
            credentials: self.credentials.clone(),
            servers: Mutex::new(HashMap::new()),
        }
    }

    fn server(&self, identity: &SessionIdentity) -> Option<Arc<ServerCatalog>> {
        let addr = identity.original_destination?;
        let database = identity.database.as_deref().or(identity.user.as_deref())?;
        // Asked several times per statement: found without allocating.
        let mut servers = lock(&self.servers);
        let databases = servers.entry(addr).or_default();
        if let Some(server) = databases.get(database) {
            return Some(server.clone());
        }
        let server = Arc::new(ServerCatalog {
            addr,
            database: database.to_owned(),
            cache: Mutex::new(ColumnCache::default()),
            table_columns: Mutex::new(HashMap::new()),
            described: Mutex::new(HashMap::new()),
            views: Mutex::new((0, Arc::from(Vec::new()))),
            views_loaded_at: LoadedAt::new(),
            changes: Arc::default(),
            client: tokio::sync::Mutex::new(None),
            failed_at: Mutex::new(None),
        });
        databases.insert(database.to_owned(), server.clone());
        Some(server)
    }

    fn login(&self, identity: &SessionIdentity) -> Login {
        if let Some(user) = &self.user {
            return Login {
                user: user.clone(),
                password: self.password.clone(),
                refuse_cleartext: false,
            };
        }
        if let Some(credential) = identity
            .credential
            .as_deref()
            .and_then(|entry| self.credentials.credential_named(entry))
            .filter(|c| identity.injected_role.as_ref() == Some(&c.role))
        {
            return Login {
                user: credential.role,
                password: Some(credential.secret),
                refuse_cleartext: !credential.allow_cleartext_without_tls,
            };
        }
        Login {
            user: identity.database_user().unwrap_or("postgres").to_owned(),
            password: self.password.clone(),
            refuse_cleartext: false,
        }
    }

    /// A lookup of a table's column order (for `COPY table TO STDOUT`);
    /// `regclass` is the table as text, quoted.
    pub fn table_columns_resolution(
        &self,
        identity: &SessionIdentity,
        regclass: String,
    ) -> Option<Preparation> {
        let server = self.server(identity)?;
        if lock(&server.table_columns).contains_key(&regclass) || server.recently_failed() {
            return None;
        }
        let login = self.login(identity);
        let dialer = self.dialer.clone();
        let server = server.clone();
        Some(Box::pin(async move {
            if let Err(e) = server.load_table_columns(&dialer, &login, &regclass).await {
                warn!(server = %server.addr, error = %e, "catalog lookup of COPY columns failed; every COPY column that may be masked is");
                *lock(&server.failed_at) = Some(Instant::now());
            }
        }))
    }

    /// A table's columns in order, when known.
    pub fn table_columns(
        &self,
        identity: &SessionIdentity,
        regclass: &str,
    ) -> Option<Vec<TypedColumn>> {
        lock(&self.server(identity)?.table_columns)
            .get(regclass)
            .cloned()
    }

    /// A description of `query`'s result columns (for `COPY (query) TO
    /// STDOUT` in binary, which names no types): the server prepares it on
    /// hoop's side connection, which runs nothing.
    pub fn describe_resolution(
        &self,
        identity: &SessionIdentity,
        query: &str,
    ) -> Option<Preparation> {
        let server = self.server(identity)?;
        if lock(&server.described).contains_key(query) {
            return None;
        }
        let login = self.login(identity);
        let dialer = self.dialer.clone();
        let query = query.to_owned();
        Some(Box::pin(async move {
            let described = match server.describe(&dialer, &login, &query).await {
                Ok(columns) => Some(columns),
                Err(e) => {
                    warn!(server = %server.addr, error = %e, "the server could not describe a COPY query on hoop's side connection; its masked binary fields are refused");
                    None
                }
            };
            let mut cache = lock(&server.described);
            if cache.len() >= DESCRIBED_MAX {
                cache.clear();
            }
            cache.insert(query, described);
        }))
    }

    /// `query`'s result columns, when the server described them.
    pub fn described(&self, identity: &SessionIdentity, query: &str) -> Option<Vec<TypedColumn>> {
        lock(&self.server(identity)?.described)
            .get(query)
            .cloned()
            .flatten()
    }
}

impl CatalogStore {
    /// What `keys` need from `server` before they can be resolved.
    fn prepare_on(
        &self,
        server: &Arc<ServerCatalog>,
        identity: &SessionIdentity,
        keys: &[SourceKey],
    ) -> Option<Preparation> {
        match self.readiness(server, identity, keys) {
            Readiness::Loaded | Readiness::RecentlyFailed => None,
            Readiness::Load(preparation) => Some(preparation),
        }
    }

    /// [`CatalogStore::prepare_on`], saying why nothing is to be done.
    fn readiness(
        &self,
        server: &Arc<ServerCatalog>,
        identity: &SessionIdentity,
        keys: &[SourceKey],
    ) -> Readiness {
        let mut missing: Vec<u32> = {
            let cache = lock(&server.cache);
            keys.iter()
                .map(|k| k.relation)
                .filter(|oid| *oid != 0 && !cache.tables.contains(oid))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        let views_fresh = server.views_fresh();
        if missing.is_empty() && views_fresh {
            return Readiness::Loaded;
        }
        if server.recently_failed() {
            return Readiness::RecentlyFailed;
        }
        let login = self.login(identity);
        let dialer = self.dialer.clone();
        let server = server.clone();
        Readiness::Load(Box::pin(async move {
            if let Err(e) = server.load(&dialer, &login, &missing, !views_fresh).await {
                warn!(server = %server.addr, database = %server.database, error = %e,
                    "catalog lookup failed; unresolved columns are masked");
                *lock(&server.failed_at) = Some(Instant::now());
            }
        }))
    }
}

/// What a server catalog needs before some keys can be resolved.
enum Readiness {
    /// Every table is loaded, and the views are fresh (a server catalog
    /// never forgets a table; its views are reloaded when a new one shows
    /// up and when they are older than [`VIEWS_MAX_AGE`]).
    Loaded,
    /// Something is missing, but the last lookup failed too recently to
    /// try again (the unresolved columns are masked meanwhile).
    RecentlyFailed,
    /// The lookup to await.
    Load(Preparation),
}

impl ServerCatalog {
    /// Whether the views were loaded less than [`VIEWS_MAX_AGE`] ago.
    fn views_fresh(&self) -> bool {
        self.views_loaded_at.within(VIEWS_MAX_AGE)
    }

    fn resolve(&self, key: SourceKey) -> Option<ResolvedColumn> {
        if key.relation == 0 || key.column <= 0 {
            return None;
        }
        lock(&self.cache)
            .columns
            .get(&(key.relation, key.column))
            .cloned()
    }

    fn views(&self) -> (u64, Arc<[ViewDependency]>) {
        lock(&self.views).clone()
    }

    fn views_version(&self) -> u64 {
        lock(&self.views).0
    }

    fn generation(&self) -> u64 {
        lock(&self.cache).generation
    }
}

impl ColumnResolver for CatalogStore {
    fn prepare(&self, identity: &SessionIdentity, keys: &[SourceKey]) -> Option<Preparation> {
        self.prepare_on(&self.server(identity)?, identity, keys)
    }

    fn resolve(&self, identity: &SessionIdentity, key: SourceKey) -> Option<ResolvedColumn> {
        self.server(identity)?.resolve(key)
    }

    fn views(&self, identity: &SessionIdentity) -> (u64, Arc<[ViewDependency]>) {
        self.server(identity)
            .map_or_else(|| (0, Arc::from(Vec::new())), |s| s.views())
    }

    fn views_version(&self, identity: &SessionIdentity) -> u64 {
        self.server(identity).map_or(0, |s| s.views_version())
    }

    fn change_counter(&self, identity: &SessionIdentity) -> Option<Arc<AtomicU64>> {
        Some(self.server(identity)?.changes.clone())
    }

    fn generation(&self, identity: &SessionIdentity) -> Option<u64> {
        Some(self.server(identity)?.generation())
    }
}

/// One session's window on the [`CatalogStore`]: the server catalog its
/// identity names is looked up once, not on every call (a statement asks
/// several times), and again only if the identity's destination or
/// database changes.
pub struct SessionCatalog {
    store: Arc<CatalogStore>,
    last: Mutex<Option<(SocketAddr, String, Arc<ServerCatalog>)>>,
    /// The relations of the last keys that server catalog had everything
    /// for ([`Readiness::Loaded`], which stays true): the same relations
    /// again (a statement run again) need no look at its caches.
    loaded: Mutex<Option<(Arc<ServerCatalog>, Vec<u32>)>>,
}

impl SessionCatalog {
    /// A session's catalog, backed by `store`.
    pub fn new(store: Arc<CatalogStore>) -> Self {
        Self {
            store,
            last: Mutex::new(None),
            loaded: Mutex::new(None),
        }
    }

    /// Calls `f` with the server catalog `identity` names, looked up in the
    /// store only when the identity's destination or database changed (no
    /// reference taken in the usual case).
    fn with_server<R>(
        &self,
        identity: &SessionIdentity,
        f: impl FnOnce(&Arc<ServerCatalog>) -> R,
    ) -> Option<R> {
        let addr = identity.original_destination?;
        let database = identity.database.as_deref().or(identity.user.as_deref())?;
        let mut last = lock(&self.last);
        if let Some((a, d, server)) = &*last
            && *a == addr
            && d == database
        {
            return Some(f(server));
        }
        let server = self.store.server(identity)?;
        let answer = f(&server);
        *last = Some((addr, database.to_owned(), server));
        Some(answer)
    }
}

impl ColumnResolver for SessionCatalog {
    fn prepare(&self, identity: &SessionIdentity, keys: &[SourceKey]) -> Option<Preparation> {
        self.with_server(identity, |server| {
            let relations = || keys.iter().map(|k| k.relation);
            let mut loaded = lock(&self.loaded);
            if let Some((s, known)) = &*loaded
                && Arc::ptr_eq(s, server)
                && relations().eq(known.iter().copied())
                && server.views_fresh()
            {
                return None;
            }
            match self.store.readiness(server, identity, keys) {
                Readiness::Loaded => {
                    *loaded = Some((server.clone(), relations().collect()));
                    None
                }
                Readiness::RecentlyFailed => None,
                Readiness::Load(preparation) => Some(preparation),
            }
        })?
    }

    fn resolve(&self, identity: &SessionIdentity, key: SourceKey) -> Option<ResolvedColumn> {
        self.with_server(identity, |server| server.resolve(key))?
    }

    fn views(&self, identity: &SessionIdentity) -> (u64, Arc<[ViewDependency]>) {
        self.with_server(identity, |server| server.views())
            .unwrap_or_else(|| (0, Arc::from(Vec::new())))
    }

    fn views_version(&self, identity: &SessionIdentity) -> u64 {
        self.with_server(identity, |server| server.views_version())
            .unwrap_or(0)
    }

    fn change_counter(&self, identity: &SessionIdentity) -> Option<Arc<AtomicU64>> {
        self.with_server(identity, |server| server.changes.clone())
    }

    fn generation(&self, identity: &SessionIdentity) -> Option<u64> {
        self.with_server(identity, |server| server.generation())
    }
}

fn field(row: &[Option<String>], i: usize) -> Result<&str, LookupError> {
    row.get(i)
        .and_then(Option::as_deref)
        .ok_or(LookupError::BadField(i))
}

impl ServerCatalog {
    fn recently_failed(&self) -> bool {
        lock(&self.failed_at).is_some_and(|t| t.elapsed() < RETRY_AFTER)
    }

    /// hoop's connection to this server, connected on first use (and again
    /// after it closed), as `login`.
    async fn connection(
        &self,
        dialer: &Dialer,
        login: &Login,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, tokio_postgres::Client>, LookupError> {
        let mut client = self.client.lock().await;
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            let stream = dialer.connect(self.addr).await?;
            let mut config = tokio_postgres::Config::new();
            config
                .user(&login.user)
                .dbname(&self.database)
                .application_name("hoop-catalog");
            if let Some(password) = &login.password {
                config.password(password.expose());
            }
            let stream = cleartext_guard::GuardedStream::new(stream, login.refuse_cleartext);
            let (c, connection) = config.connect_raw(stream, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    debug!(error = %e, "catalog connection ended");
                }
            });
            *client = Some(c);
        }
        tokio::sync::MutexGuard::try_map(client, Option::as_mut)
            .map_err(|_| LookupError::NotConnected)
    }

    /// The result columns of `query` (prepared, never executed).
    async fn describe(
        &self,
        dialer: &Dialer,
        login: &Login,
        query: &str,
    ) -> Result<Vec<TypedColumn>, LookupError> {
        let client = self.connection(dialer, login).await?;
        let statement = client.prepare(query).await?;
        let columns = statement
            .columns()
            .iter()
            .map(|c| TypedColumn {
                name: c.name().to_owned(),
                type_oid: c.type_().oid(),
                type_name: c.type_().name().to_owned(),
            })
            .collect();
        // The description is all hoop wanted: do not keep the statement.
        drop(statement);
        Ok(columns)
    }

    async fn query(&self, dialer: &Dialer, login: &Login, sql: &str) -> Result<Rows, LookupError> {
        let c = self.connection(dialer, login).await?;
        let rows = c
            .simple_query(sql)
            .await?
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect();
        Ok(rows)
    }

    async fn load(
        &self,
        dialer: &Dialer,
        login: &Login,
        oids: &[u32],
        mut views: bool,
    ) -> Result<(), LookupError> {
        if !oids.is_empty() {
            // OIDs are integers: inlining them is safe, and the simple
            // protocol gives text rows.
            let list: Vec<String> = oids.iter().map(ToString::to_string).collect();
            let sql =
                COLUMNS_QUERY.replace("$1::oid[]", &format!("'{{{}}}'::oid[]", list.join(",")));
            let rows = self.query(dialer, login, &sql).await?;
            let mut resolved = Vec::with_capacity(rows.len());
            // A view (or materialized view) hoop had not seen: another
            // session created it since the views were loaded. Its reads are
            // in the dependencies only once they are loaded again.
            let new_view = rows
                .iter()
                .any(|row| matches!(row.get(5).cloned().flatten().as_deref(), Some("v" | "m")));
            views |= new_view;
            for row in &rows {
                let oid: u32 = field(row, 0)?
                    .parse()
                    .map_err(|_| LookupError::BadField(0))?;
                let attnum: i16 = field(row, 3)?
                    .parse()
                    .map_err(|_| LookupError::BadField(3))?;
                resolved.push((
                    (oid, attnum),
                    ResolvedColumn {
                        schema: Some(field(row, 1)?.to_owned()),
                        table: field(row, 2)?.to_owned(),
                        column: field(row, 4)?.to_owned(),
                    },
                ));
            }
            let mut cache = lock(&self.cache);
            cache.columns.extend(resolved);
            cache.tables.extend(oids.iter().copied());
            cache.generation += 1;
            drop(cache);
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        if views {
            let rows = self.query(dialer, login, VIEW_DEPENDENCIES_QUERY).await?;
            let relation =
                |row: &[Option<String>], at: usize| -> Result<RelationName, LookupError> {
                    Ok(RelationName {
                        schema: Some(field(row, at)?.to_owned()),
                        name: field(row, at + 1)?.to_owned(),
                    })
                };
            let deps = rows
                .iter()
                .map(|row| {
                    Ok(ViewDependency {
                        view: relation(row, 0)?,
                        table: relation(row, 2)?,
                        column: row.get(4).cloned().flatten(),
                    })
                })
                .collect::<Result<Vec<_>, LookupError>>()?;
            let mut v = lock(&self.views);
            *v = (v.0 + 1, Arc::from(deps));
            drop(v);
            self.views_loaded_at.mark();
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn load_table_columns(
        &self,
        dialer: &Dialer,
        login: &Login,
        regclass: &str,
    ) -> Result<(), LookupError> {
        let literal = format!("'{}'", regclass.replace('\'', "''"));
        let sql = TABLE_COLUMNS_QUERY.replace("$1::regclass", &format!("{literal}::regclass"));
        let rows = self.query(dialer, login, &sql).await?;
        let columns = rows
            .iter()
            .map(|row| {
                Ok(TypedColumn {
                    name: field(row, 0)?.to_owned(),
                    type_oid: field(row, 1)?
                        .parse()
                        .map_err(|_| LookupError::BadField(1))?,
                    type_name: field(row, 2)?.to_owned(),
                })
            })
            .collect::<Result<_, LookupError>>()?;
        lock(&self.table_columns).insert(regclass.to_owned(), columns);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn loaded_at_is_fresh_only_within_its_age() {
        let loaded = LoadedAt::new();
        assert!(!loaded.within(VIEWS_MAX_AGE), "never loaded");
        loaded.mark();
        assert!(loaded.within(VIEWS_MAX_AGE));
        assert!(!loaded.within(Duration::ZERO));
        // Loaded at an epoch 11 s ago.
        let epoch = quanta::Instant::now()
            .checked_sub(Duration::from_secs(11))
            .expect("the clock has run for more than 11 s");
        let old = LoadedAt {
            at: AtomicU64::new(1),
            epoch,
        };
        assert!(!old.within(VIEWS_MAX_AGE));
        assert!(old.within(Duration::from_secs(12)));
        old.mark();
        assert!(old.within(VIEWS_MAX_AGE), "marked again: fresh");
    }
}
