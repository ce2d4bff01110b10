//! Resolving RowDescription sources (table OID, column number) to
//! `schema.table.column`, and views to the masked columns they read.
//!
//! hoop asks the same server, on a side connection of its own (marked like
//! every upstream socket, so it is never redirected), as the session's user
//! by default or as `proxy.catalog_user`. Answers are cached per server and
//! database, and a RowDescription naming a table the cache has not seen
//! triggers a lookup of just those tables (refresh on miss).
//!
//! When the lookup fails, nothing is resolved and the mask plan treats the
//! columns as unknown: masked wherever lineage cannot prove them clean.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_postgres::{NoTls, SimpleQueryMessage};
use tracing::{debug, warn};

use crate::{
    mask::{
        self, CatalogCache, ColumnDescription, ResolvedColumn,
        copy::TABLE_COLUMNS_QUERY,
        plan::{COLUMNS_QUERY, VIEW_DEPENDENCIES_QUERY},
    },
    proxy::dial::Dialer,
    session::SessionIdentity,
};

/// Work the driver awaits before building a mask plan.
pub type Resolution = crate::hooks::Preparation;

/// After a failed lookup, how long before the server is asked again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Text rows of the view-dependency query.
pub type ViewRows = Arc<Vec<Vec<Option<String>>>>;

/// Catalog caches for every server and database hoop has proxied.
pub struct CatalogStore {
    dialer: Dialer,
    user: Option<String>,
    password: Option<String>,
    servers: Mutex<HashMap<(SocketAddr, String), Arc<ServerCatalog>>>,
}

/// One server+database's cache, and hoop's connection to it.
struct ServerCatalog {
    addr: SocketAddr,
    database: String,
    cache: Mutex<CatalogCache>,
    /// `regclass text` → column names in order (for `COPY table TO`).
    table_columns: Mutex<HashMap<String, Vec<String>>>,
    /// Rows of VIEW_DEPENDENCIES_QUERY, with a version bumped on each load.
    views: Mutex<(u64, ViewRows)>,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    failed_at: Mutex<Option<Instant>>,
}

impl CatalogStore {
    /// A store dialing with `dialer`; `user`/`password` override the
    /// session's own user for catalog lookups.
    pub fn new(dialer: Dialer, user: Option<String>, password: Option<String>) -> Self {
        Self {
            dialer,
            user,
            password,
            servers: Mutex::new(HashMap::new()),
        }
    }

    fn server(&self, identity: &SessionIdentity) -> Option<Arc<ServerCatalog>> {
        let addr = identity.original_destination?;
        let database = identity
            .database
            .clone()
            .or_else(|| identity.user.clone())?;
        let mut servers = self
            .servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(
            servers
                .entry((addr, database.clone()))
                .or_insert_with(|| {
                    Arc::new(ServerCatalog {
                        addr,
                        database,
                        cache: Mutex::new(CatalogCache::new()),
                        table_columns: Mutex::new(HashMap::new()),
                        views: Mutex::new((0, Arc::new(Vec::new()))),
                        client: tokio::sync::Mutex::new(None),
                        failed_at: Mutex::new(None),
                    })
                })
                .clone(),
        )
    }

    fn login(&self, identity: &SessionIdentity) -> (String, Option<String>) {
        match &self.user {
            Some(u) => (u.clone(), self.password.clone()),
            None => (
                identity.user.clone().unwrap_or_else(|| "postgres".into()),
                self.password.clone(),
            ),
        }
    }

    /// A lookup to await when `columns` name tables the cache has not seen
    /// (and, the first time, the views reading masked columns).
    pub fn resolution(
        &self,
        identity: &SessionIdentity,
        columns: &[ColumnDescription],
    ) -> Option<Resolution> {
        let server = self.server(identity)?;
        let missing = lock(&server.cache).missing_oids(columns);
        let views_loaded = lock(&server.views).0 > 0;
        if (missing.is_empty() && views_loaded) || server.recently_failed() {
            return None;
        }
        let (user, password) = self.login(identity);
        let dialer = self.dialer.clone();
        Some(Box::pin(async move {
            if let Err(e) = server
                .load(&dialer, &user, password.as_deref(), &missing, !views_loaded)
                .await
            {
                warn!(server = %server.addr, database = %server.database, error = %e,
                    "catalog lookup failed; unresolved columns are masked");
                *lock(&server.failed_at) = Some(Instant::now());
            }
        }))
    }

    /// Sources of `columns`, as far as the cache knows them.
    pub fn resolve(
        &self,
        identity: &SessionIdentity,
        columns: &[ColumnDescription],
    ) -> Vec<Option<ResolvedColumn>> {
        self.server(identity).map_or_else(
            || vec![None; columns.len()],
            |s| lock(&s.cache).resolve_all(columns),
        )
    }

    /// View dependency rows for [`mask::masked_views`], with their version.
    pub fn views(&self, identity: &SessionIdentity) -> (u64, ViewRows) {
        self.server(identity)
            .map_or_else(|| (0, Arc::new(Vec::new())), |s| lock(&s.views).clone())
    }

    /// A lookup of a table's column order (for `COPY table TO STDOUT`).
    pub fn table_columns_resolution(
        &self,
        identity: &SessionIdentity,
        regclass: String,
    ) -> Option<Resolution> {
        let server = self.server(identity)?;
        if lock(&server.table_columns).contains_key(&regclass) || server.recently_failed() {
            return None;
        }
        let (user, password) = self.login(identity);
        let dialer = self.dialer.clone();
        Some(Box::pin(async move {
            if let Err(e) = server
                .load_table_columns(&dialer, &user, password.as_deref(), &regclass)
                .await
            {
                warn!(server = %server.addr, error = %e, "catalog lookup of COPY columns failed; COPY is refused");
                *lock(&server.failed_at) = Some(Instant::now());
            }
        }))
    }

    /// A table's columns in order, when known.
    pub fn table_columns(&self, identity: &SessionIdentity, regclass: &str) -> Option<Vec<String>> {
        lock(&self.server(identity)?.table_columns)
            .get(regclass)
            .cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a catalog lookup failed.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("cannot connect: {0}")]
    Dial(#[from] crate::proxy::dial::DialError),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("unexpected catalog row: {0}")]
    Row(#[from] mask::plan::CatalogError),
}

impl ServerCatalog {
    fn recently_failed(&self) -> bool {
        lock(&self.failed_at).is_some_and(|t| t.elapsed() < RETRY_AFTER)
    }

    async fn query(
        &self,
        dialer: &Dialer,
        user: &str,
        password: Option<&str>,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, LookupError> {
        let mut client = self.client.lock().await;
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            let stream = dialer.connect(self.addr).await?;
            let mut config = tokio_postgres::Config::new();
            config
                .user(user)
                .dbname(&self.database)
                .application_name("hoop-catalog");
            if let Some(pw) = password {
                config.password(pw);
            }
            let (c, connection) = config.connect_raw(stream, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    debug!(error = %e, "catalog connection ended");
                }
            });
            *client = Some(c);
        }
        let c = client.as_ref().expect("connected above");
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
        user: &str,
        password: Option<&str>,
        oids: &[u32],
        views: bool,
    ) -> Result<(), LookupError> {
        if !oids.is_empty() {
            // OIDs are integers: inlining them is safe, and the simple
            // protocol gives text rows, which is what the cache parses.
            let list: Vec<String> = oids.iter().map(ToString::to_string).collect();
            let sql =
                COLUMNS_QUERY.replace("$1::oid[]", &format!("'{{{}}}'::oid[]", list.join(",")));
            let rows = self.query(dialer, user, password, &sql).await?;
            let mut cache = lock(&self.cache);
            for row in &rows {
                let cells: Vec<Option<&[u8]>> = row
                    .iter()
                    .map(|c| c.as_deref().map(str::as_bytes))
                    .collect();
                cache.insert_row(&cells)?;
            }
            cache.mark_loaded(oids);
        }
        if views {
            let rows = self
                .query(dialer, user, password, VIEW_DEPENDENCIES_QUERY)
                .await?;
            let mut v = lock(&self.views);
            *v = (v.0 + 1, Arc::new(rows));
        }
        Ok(())
    }

    async fn load_table_columns(
        &self,
        dialer: &Dialer,
        user: &str,
        password: Option<&str>,
        regclass: &str,
    ) -> Result<(), LookupError> {
        let literal = format!("'{}'", regclass.replace('\'', "''"));
        let sql = TABLE_COLUMNS_QUERY.replace("$1::regclass", &format!("{literal}::regclass"));
        let rows = self.query(dialer, user, password, &sql).await?;
        let names = rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        lock(&self.table_columns).insert(regclass.to_owned(), names);
        Ok(())
    }
}
