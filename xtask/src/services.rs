//! The databases the tests talk to: PostgreSQL on 127.0.0.1:5432 (and [::1]),
//! MariaDB on 127.0.0.1:3306. Started if down, and configured for the tests:
//!
//! - PostgreSQL also listens on `::1`, with trust for `::1/128`, so the IPv6
//!   interception test has a real server there;
//! - the roles `hoop_scram` and `hoop_md5` authenticate with SCRAM-SHA-256 and
//!   md5 over TCP, so the authentication pass-through is exercised for real
//!   (everything else stays trust, as the machine ships it);
//! - the roles the credential injection tests create and drop
//!   (`hoop_cred_scram`, `hoop_cred_md5`, `hoop_cred_clear`) authenticate
//!   with SCRAM-SHA-256, md5 and cleartext `password` over TCP.
//!
//! The changes live in files of their own (`conf.d/95-hoop-tests.conf` and
//! marked blocks at the top of `pg_hba.conf`, each added once), are
//! idempotent, and are only applied by `cargo xtask test|bench|demo`. A
//! `pg_hba.conf` change alone is applied with a reload.

use std::{
    fs,
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::setup::{output, run};

const HBA_BEGIN: &str = "# BEGIN hoop tests (managed by cargo xtask)";
const HBA_END: &str = "# END hoop tests";
const HBA_BLOCK: &str = "host all hoop_scram 127.0.0.1/32 scram-sha-256
host all hoop_scram ::1/128 scram-sha-256
host all hoop_md5 127.0.0.1/32 md5
host all hoop_md5 ::1/128 md5
host all all ::1/128 trust";
const CRED_HBA_BEGIN: &str = "# BEGIN hoop credential injection tests (managed by cargo xtask)";
const CRED_HBA_END: &str = "# END hoop credential injection tests";
const CRED_HBA_BLOCK: &str =
    "host all hoop_cred_scram,hoop_cred_e2e_scram 127.0.0.1/32 scram-sha-256
host all hoop_cred_scram,hoop_cred_e2e_scram ::1/128 scram-sha-256
host all hoop_cred_md5,hoop_cred_e2e_md5 127.0.0.1/32 md5
host all hoop_cred_md5,hoop_cred_e2e_md5 ::1/128 md5
host all hoop_cred_clear 127.0.0.1/32 password
host all hoop_cred_clear ::1/128 password";
const CONF: &str = "# Managed by hoop's cargo xtask: the tests need PostgreSQL on ::1 too.\nlisten_addresses = '127.0.0.1,::1'\n";

fn port_open(addr: &str) -> bool {
    addr.parse()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

fn wait_for(addr: &str, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if port_open(addr) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!("{what} did not start listening on {addr} within 30 s")
}

fn cluster() -> anyhow::Result<(String, PathBuf)> {
    let etc = Path::new("/etc/postgresql");
    let version = fs::read_dir(etc)
        .with_context(|| format!("PostgreSQL is not installed ({} is missing)", etc.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .max()
        .context("no PostgreSQL cluster under /etc/postgresql")?;
    let dir = etc.join(&version).join("main");
    Ok((version, dir))
}

/// Starts PostgreSQL if needed and applies the test configuration.
pub fn ensure_postgres() -> anyhow::Result<()> {
    let (version, dir) = cluster()?;
    let mut changed = false;

    let conf = dir.join("conf.d/95-hoop-tests.conf");
    if fs::read_to_string(&conf).ok().as_deref() != Some(CONF) {
        fs::create_dir_all(conf.parent().expect("has a parent"))?;
        fs::write(&conf, CONF).with_context(|| format!("writing {}", conf.display()))?;
        changed = true;
    }
    let hba_path = dir.join("pg_hba.conf");
    let mut hba_changed = false;
    let hba =
        fs::read_to_string(&hba_path).with_context(|| format!("reading {}", hba_path.display()))?;
    if !hba.contains(HBA_BEGIN) {
        // At the top: pg_hba.conf's first matching line wins.
        fs::write(
            &hba_path,
            format!("{HBA_BEGIN}\n{HBA_BLOCK}\n{HBA_END}\n{hba}"),
        )
        .with_context(|| format!("writing {}", hba_path.display()))?;
        hba_changed = true;
    }
    let hba =
        fs::read_to_string(&hba_path).with_context(|| format!("reading {}", hba_path.display()))?;
    if let Some(updated) = with_block(&hba, CRED_HBA_BEGIN, CRED_HBA_BLOCK, CRED_HBA_END) {
        fs::write(&hba_path, updated).with_context(|| format!("writing {}", hba_path.display()))?;
        hba_changed = true;
    }

    let running = port_open("127.0.0.1:5432");
    if running && hba_changed && !changed {
        eprintln!("xtask: PostgreSQL {version}: reload (pg_hba.conf)");
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            "reload",
        ]))?;
    } else if !running || changed {
        let action = if running { "restart" } else { "start" };
        eprintln!("xtask: PostgreSQL {version}: {action}");
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            action,
        ]))?;
    }
    wait_for("127.0.0.1:5432", "PostgreSQL")?;
    wait_for("[::1]:5432", "PostgreSQL (IPv6)")?;

    // Roles for the authentication pass-through tests.
    let psql = |sql: &str| {
        output(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-Atqc",
            sql,
        ]))
    };
    psql(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hoop_scram') THEN CREATE ROLE hoop_scram LOGIN; END IF;
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hoop_md5') THEN CREATE ROLE hoop_md5 LOGIN; END IF;
         END $$;
         SET password_encryption = 'scram-sha-256'; ALTER ROLE hoop_scram PASSWORD 'hoop-scram-pw';
         SET password_encryption = 'md5'; ALTER ROLE hoop_md5 PASSWORD 'hoop-md5-pw';
         GRANT ALL ON SCHEMA public TO hoop_scram, hoop_md5;",
    )
    .context("creating the test roles")?;
    Ok(())
}

/// `text` with the marked block `begin … end` holding exactly `block`:
/// added at the top when missing (pg_hba.conf's first matching line wins),
/// replaced where it is when it differs; `None` when it is already there.
fn with_block(text: &str, begin: &str, block: &str, end: &str) -> Option<String> {
    let wanted = format!("{begin}\n{block}\n{end}\n");
    let Some(start) = text.find(begin) else {
        return Some(format!("{wanted}{text}"));
    };
    let stop = text[start..].find(end).map_or(text.len(), |i| {
        let after = start + i + end.len();
        after + usize::from(text[after..].starts_with('\n'))
    });
    (text[start..stop] != wanted).then(|| format!("{}{wanted}{}", &text[..start], &text[stop..]))
}

/// Starts MariaDB if it is down (hoop's MySQL side will test against it).
pub fn ensure_mariadb() -> anyhow::Result<()> {
    if port_open("127.0.0.1:3306") {
        return Ok(());
    }
    eprintln!("xtask: MariaDB: start");
    run(Command::new("start-stop-daemon").args([
        "--start",
        "--oknodo",
        "--background",
        "--exec",
        "/usr/sbin/mariadbd",
    ]))?;
    wait_for("127.0.0.1:3306", "MariaDB")
}

#[cfg(test)]
mod tests {
    use super::with_block;

    #[test]
    fn a_marked_block_is_added_once_and_replaced_when_it_changes() {
        let hba = "local all all trust\n";
        let added = with_block(hba, "# B", "one", "# E").expect("added");
        assert_eq!(added, "# B\none\n# E\nlocal all all trust\n");
        assert_eq!(with_block(&added, "# B", "one", "# E"), None);
        let changed = with_block(&added, "# B", "two\nthree", "# E").expect("replaced");
        assert_eq!(changed, "# B\ntwo\nthree\n# E\nlocal all all trust\n");
        let other = format!("# X\nx\n# Y\n{added}");
        assert_eq!(
            with_block(&other, "# B", "two", "# E").expect("replaced in place"),
            "# X\nx\n# Y\n# B\ntwo\n# E\nlocal all all trust\n"
        );
    }
}
