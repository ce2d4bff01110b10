//! Credential injection in the PostgreSQL driver: `hoop_pg::serve` on a
//! local listener in front of the local PostgreSQL, with real roles that
//! the server checks with SCRAM-SHA-256, md5 and cleartext `password`
//! (`cargo xtask services` adds their `pg_hba.conf` lines), driven by real
//! clients that hold no password.
//!
//! The roles and the database are created here and dropped at the end.

#![allow(clippy::unwrap_used)]
#![allow(clippy::float_cmp)] // metric deltas are small integers, exact in f64

use std::{
    net::SocketAddr, os::unix::fs::PermissionsExt as _, path::Path, process::Command, sync::Arc,
};

use hoop_config::SourceMap;
use hoop_core::SessionIdentity;
use hoop_credentials::CredentialHandle;
use hoop_pg::{PgProxyContext, serve};
use hoop_relay::dial::Dialer;
use tokio::net::TcpListener;

const PG: &str = "127.0.0.1:5432";
const DATABASE: &str = "hoop_cred_driver";
const WORKLOAD: &str = "/hoop-cred-driver-test";

/// The tests share roles: one at a time.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn admin(sql: &str) -> String {
    admin_in("test", sql)
}

fn admin_in(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-Atqc",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Roles and a database of the tests' own, with fresh passwords; dropped
/// on drop.
struct Fixture {
    scram: String,
    md5: String,
    clear: String,
    dir: tempfile::TempDir,
}

fn random_secret(what: &str) -> String {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!("hoop-cred-{what}-{n:x}")
}

impl Fixture {
    fn new() -> Self {
        let fixture = Self {
            scram: random_secret("scram"),
            md5: random_secret("md5"),
            clear: random_secret("clear"),
            dir: tempfile::tempdir().unwrap(),
        };
        Self::drop_all();
        admin(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE hoop_cred_scram LOGIN PASSWORD '{}';
             CREATE ROLE hoop_cred_clear LOGIN PASSWORD '{}';
             SET password_encryption = 'md5';
             CREATE ROLE hoop_cred_md5 LOGIN PASSWORD '{}';",
            fixture.scram, fixture.clear, fixture.md5
        ));
        admin(&format!("CREATE DATABASE {DATABASE}"));
        admin_in(
            DATABASE,
            "GRANT ALL ON SCHEMA public TO hoop_cred_scram, hoop_cred_md5, hoop_cred_clear",
        );
        fixture
    }

    fn drop_all() {
        admin(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"));
        admin(
            "DROP ROLE IF EXISTS hoop_cred_scram; DROP ROLE IF EXISTS hoop_cred_md5;
             DROP ROLE IF EXISTS hoop_cred_clear;",
        );
    }

    fn secret_file(&self, name: &str, content: &str) -> String {
        let path = self.dir.path().join(name);
        let aside = path.with_extension("new");
        std::fs::write(&aside, content).unwrap();
        std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&aside, &path).unwrap();
        path.display().to_string()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        Self::drop_all();
    }
}

fn credentials(yaml: &str) -> CredentialHandle {
    let source = SourceMap::new(Path::new("hoop.yaml"), yaml);
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let (set, _) = hoop_credentials::compile(&document["credentials"], &source)
        .unwrap_or_else(|e| panic!("{e:?}"));
    CredentialHandle::new(set)
}

fn entry(name: &str, role: &str, file: &str, extra: &str) -> String {
    format!(
        "    - name: {name}
      when: {{workload: [\"{WORKLOAD}\"]}}
      destination: {{host: 127.0.0.1, port: 5432, database: {DATABASE}, user: {name}}}
      role: {role}
      password_file: {file}
{extra}"
    )
}

/// A proxy whose sessions come from workload `workload` and meant to reach
/// the local PostgreSQL.
async fn start(credentials: CredentialHandle, workload: &str) -> SocketAddr {
    let mut ctx = PgProxyContext::new(Dialer::default());
    ctx.credentials = Arc::new(credentials);
    let ctx = Arc::new(ctx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let workload = workload.to_owned();
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let Ok((sock, peer)) = listener.accept().await else {
                return;
            };
            n += 1;
            let identity = SessionIdentity {
                id: format!("cred-{n}"),
                client: Some(peer),
                workload: Some(workload.clone()),
                original_destination: Some(PG.parse().unwrap()),
                ..SessionIdentity::default()
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _ = serve(ctx, sock, identity, PG.parse().unwrap()).await;
            });
        }
    });
    addr
}

/// psql as `user` with no password anywhere (no PGPASSWORD, no .pgpass,
/// no terminal to prompt on).
async fn psql(addr: SocketAddr, user: &str, sql: &str) -> (bool, String, String) {
    let (port, user, sql) = (addr.port().to_string(), user.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || {
        let out = Command::new("psql")
            .args([
                "-X",
                "-w",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                &user,
            ])
            .args(["-d", DATABASE, "-c", &sql])
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", "/nonexistent")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn metric(name: &str) -> f64 {
    let text = hoop_core::metrics::encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn scram_md5_and_cleartext_roles_are_logged_in_without_the_client_knowing_a_password() {
    let _serial = serial().await;
    let f = Fixture::new();
    let yaml = format!(
        "credentials:\n  client_auth: any\n  entries:\n{}{}{}",
        entry(
            "scram",
            "hoop_cred_scram",
            &f.secret_file("scram", &f.scram),
            ""
        ),
        entry("md5", "hoop_cred_md5", &f.secret_file("md5", &f.md5), ""),
        entry(
            "clear",
            "hoop_cred_clear",
            &f.secret_file("clear", &format!("{}\n", f.clear)),
            "      allow_cleartext_without_tls: true\n"
        ),
    );
    let addr = start(credentials(&yaml), WORKLOAD).await;
    for (user, role) in [
        ("scram", "hoop_cred_scram"),
        ("md5", "hoop_cred_md5"),
        ("clear", "hoop_cred_clear"),
    ] {
        let before = metric(&format!(
            "hoop_credential_injections_total{{credential=\"{user}\"}}"
        ));
        let (ok, out, err) = psql(
            addr,
            user,
            "SELECT current_user, session_user, current_database(); \
             CREATE TABLE t_inject (x int); INSERT INTO t_inject VALUES (1); \
             SELECT count(*) FROM t_inject; DROP TABLE t_inject",
        )
        .await;
        assert!(ok, "{user}: {err}");
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                format!("{role}|{role}|{DATABASE}").as_str(),
                "CREATE TABLE",
                "INSERT 0 1",
                "1",
                "DROP TABLE"
            ],
            "{user}"
        );
        assert_eq!(
            metric(&format!(
                "hoop_credential_injections_total{{credential=\"{user}\"}}"
            )),
            before + 1.0
        );
    }
    // The extended protocol (tokio-postgres), with no password either.
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=scram dbname={DATABASE}",
            addr.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT current_user::text, $1::int + 1", &[&41])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("hoop_cred_scram".to_owned(), 42)
    );
}

#[tokio::test]
async fn failures_name_the_entry_count_and_never_show_the_secret() {
    let _serial = serial().await;
    let f = Fixture::new();
    let wrong = random_secret("wrong");
    let yaml = format!(
        "credentials:\n  entries:\n{}{}",
        entry(
            "scram",
            "hoop_cred_scram",
            &f.secret_file("scram", &wrong),
            ""
        ),
        entry(
            "clear",
            "hoop_cred_clear",
            &f.secret_file("clear", &f.clear),
            ""
        ),
    );
    let addr = start(credentials(&yaml), WORKLOAD).await;

    let rejected = "hoop_credential_errors_total{reason=\"upstream_rejected\"}";
    let before = metric(rejected);
    let (ok, out, err) = psql(addr, "scram", "SELECT 1").await;
    assert!(!ok, "{out}");
    assert!(
        err.contains(
            "hoop could not log in to the database server as role \"hoop_cred_scram\" with credential entry \"scram\": password authentication failed for user \"hoop_cred_scram\""
        ),
        "{err}"
    );
    assert!(!err.contains(&wrong) && !err.contains(&f.scram), "{err}");
    assert_eq!(metric(rejected), before + 1.0);

    // Cleartext over a plaintext leg is refused before the secret is sent.
    let refused = "hoop_credential_errors_total{reason=\"cleartext_refused\"}";
    let before = metric(refused);
    let (ok, _, err) = psql(addr, "clear", "SELECT 1").await;
    assert!(!ok);
    assert!(
        err.contains("credential entry \"clear\": the server asked for the password in cleartext and the connection to it is not TLS, so hoop refused to send it"),
        "{err}"
    );
    assert!(err.contains("allow_cleartext_without_tls"), "{err}");
    assert_eq!(metric(refused), before + 1.0);
}

#[tokio::test]
async fn sessions_no_entry_matches_authenticate_themselves() {
    let _serial = serial().await;
    let f = Fixture::new();
    let yaml = format!(
        "credentials:\n  entries:\n{}",
        entry(
            "hoop_cred_scram",
            "hoop_cred_scram",
            &f.secret_file("scram", &f.scram),
            ""
        ),
    );
    // Another workload: the entry's `when:` does not select it.
    let addr = start(credentials(&yaml), "/some-other-workload").await;
    let (ok, _, err) = psql(addr, "hoop_cred_scram", "SELECT 1").await;
    assert!(!ok);
    assert!(err.contains("no password supplied"), "{err}");
    // The server still asks, and the client's own password works as before.
    let (port, secret) = (addr.port().to_string(), f.scram.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args([
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "hoop_cred_scram",
            ])
            .args(["-d", DATABASE, "-c", "SELECT current_user"])
            .env("PGPASSWORD", secret)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hoop_cred_scram"
    );

    // The matching workload, but another database: pass-through too.
    let addr = start(credentials(&yaml), WORKLOAD).await;
    let port = addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args([
                "-X",
                "-w",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "hoop_cred_scram",
            ])
            .args(["-d", "test", "-c", "SELECT 1"])
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", "/nonexistent")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password supplied"));
}

#[tokio::test]
async fn a_rotated_secret_is_used_by_the_next_session_and_open_ones_continue() {
    let _serial = serial().await;
    let f = Fixture::new();
    let file = f.secret_file("scram", &f.scram);
    let yaml = format!(
        "credentials:\n  entries:\n{}",
        entry("scram", "hoop_cred_scram", &file, "")
    );
    let addr = start(credentials(&yaml), WORKLOAD).await;
    let (open, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=scram dbname={DATABASE}",
            addr.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    open.simple_query("SELECT 1").await.unwrap();

    let rotated = random_secret("rotated");
    admin(&format!(
        "SET password_encryption = 'scram-sha-256'; ALTER ROLE hoop_cred_scram PASSWORD '{rotated}'"
    ));
    // The server has the new password, hoop the old: refused, clearly.
    let (ok, _, err) = psql(addr, "scram", "SELECT 1").await;
    assert!(!ok && err.contains("credential entry \"scram\""), "{err}");
    f.secret_file("scram", &rotated);
    let (ok, out, err) = psql(addr, "scram", "SELECT current_user").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "hoop_cred_scram");
    // The session opened with the old secret goes on.
    let rows = open
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(rows.get::<_, String>(0), "hoop_cred_scram");
}
