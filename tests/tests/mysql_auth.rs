//! Issue 21: caching_sha2_password full authentication through `hoop exec`
//! in the four TLS combinations of the two legs, against a test double of a
//! MySQL 8 server (`mysql-sha2-server`: MariaDB has no caching_sha2) whose
//! cache is always cold, so every login is a full authentication. The
//! client is PyMySQL with `cryptography` (RSA-OAEP). Where only one leg is
//! TLS hoop translates the exchange as MySQL Router does: the client's
//! cleartext becomes an RSA ciphertext under the server's key, or the
//! client's ciphertext under hoop's own key becomes the cleartext sent
//! inside TLS. The double checks the password for real: a wrong one gets
//! its ERR 1045, a right one logs in and runs `SELECT 1`.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use hoop_tests::{TestConfig, hoop_exec, require_privileged, text};
use serde_json::Value;

const T: Duration = Duration::from_mins(2);
const PYTHON: &str = "/usr/bin/python3";
const PASSWORD: &str = "right pw: s3cret, longer than the 20-byte scramble";

/// A running `mysql-sha2-server`, killed on drop.
struct Sha2Server {
    child: Child,
    port: u16,
}

impl Sha2Server {
    fn start(tls: Option<&Certs>) -> Self {
        Self::switching(tls, None)
    }

    /// A server that switches every login to `plugin`.
    fn switching(tls: Option<&Certs>, plugin: Option<&str>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mysql-sha2-server"));
        cmd.args(["--user", "app", "--password", PASSWORD]);
        if let Some(p) = plugin {
            cmd.args(["--switch-to", p]);
        }
        if let Some(c) = tls {
            cmd.arg("--tls").arg(&c.cert).arg(&c.key);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mysql-sha2-server");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("mysql-sha2-server did not start: {line:?}"));
        Self { child, port }
    }
}

impl Drop for Sha2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed RSA certificate (hoop's and the double's), and its public
/// key alone (what a client may cache).
struct Certs {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    public: PathBuf,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let public = dir.path().join("public.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "{made:?}");
    let made = Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .expect("openssl rsa");
    assert!(made.status.success(), "{made:?}");
    Certs {
        _dir: dir,
        cert,
        key,
        public,
    }
}

impl Certs {
    /// The `tls` section with this certificate for clients and `upstream`.
    fn tls(&self, upstream: &str) -> String {
        format!(
            "tls:\n  cert: {}\n  key: {}\n  upstream: {upstream}\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A config intercepting the double's port as MySQL, with `tls` (YAML).
fn config(port: u16, tls: &str) -> TestConfig {
    let cfg = TestConfig::new(&[port], tls);
    let yaml = std::fs::read_to_string(&cfg.path).expect("config").replace(
        "intercept:\n",
        &format!("intercept:\n  protocols: {{{port}: mysql}}\n"),
    );
    std::fs::write(&cfg.path, yaml).expect("config");
    cfg
}

/// Runs the PyMySQL script through hoop (with `options`: `--cached PEM`,
/// `--change-user`); returns its JSON and hoop's log.
fn client(
    cfg: &TestConfig,
    port: u16,
    client_tls: bool,
    ca: &Path,
    options: &[&str],
) -> (Value, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mysql_sha2_client.py");
    let port = port.to_string();
    let ca = ca.display().to_string();
    let mut args = vec![
        PYTHON,
        script,
        &port,
        if client_tls { "tls" } else { "plain" },
        &ca,
    ];
    args.extend_from_slice(options);
    let out = hoop_exec(&cfg.path, &args, T);
    let (stdout, stderr) = text(&out);
    let v = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("no JSON from the client ({e}):\n{stdout}\n--- stderr\n{stderr}")
    });
    (v, format!("{stdout}\n--- hoop's log\n{stderr}"))
}

/// The right password logs in (on the client's own TLS state) and runs a
/// query; the wrong one is refused by the server itself (its 1045); the
/// password appears nowhere in hoop's log.
fn assert_real_login(v: &Value, client_tls: bool, all: &str) {
    let right = &v["right"];
    assert_eq!(right["login"], "ok", "{all}");
    assert_eq!(
        right["tls"], client_tls,
        "the client leg's TLS state: {all}"
    );
    assert_eq!(right["rows"].to_string(), "[[1]]", "{all}");
    let wrong = &v["wrong"];
    assert_eq!(wrong["login"], "error", "{all}");
    assert_eq!(wrong["code"], 1045, "{all}");
    let message = wrong["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Access denied for user 'app'"),
        "the server's own refusal, not hoop's: {all}"
    );
    assert!(
        !all.contains("s3cret"),
        "the password leaked into the output: {all}"
    );
}

#[test]
fn both_legs_plain_the_key_request_is_relayed() {
    require_privileged();
    let c = certs();
    let server = Sha2Server::start(None);
    let cfg = config(server.port, "tls:\n  upstream: disable\n");
    let (v, all) = client(&cfg, server.port, false, &c.cert, &[]);
    assert_real_login(&v, false, &all);
}

#[test]
fn both_legs_tls_the_cleartext_is_relayed_inside_tls() {
    require_privileged();
    let c = certs();
    let server = Sha2Server::start(Some(&c));
    let cfg = config(server.port, &c.tls("require"));
    let (v, all) = client(&cfg, server.port, true, &c.cert, &[]);
    assert_real_login(&v, true, &all);
}

/// Before the translation hoop refused this login ("the server asks for
/// the password itself").
#[test]
fn client_tls_server_plain_the_cleartext_is_rsa_encrypted_for_the_server() {
    require_privileged();
    let c = certs();
    let server = Sha2Server::start(None);
    let cfg = config(server.port, &c.tls("disable"));
    let (v, all) = client(&cfg, server.port, true, &c.cert, &[]);
    assert_real_login(&v, true, &all);
}

/// Before the translation the client's key request reached the TLS server
/// as a (wrong) password.
#[test]
fn client_plain_server_tls_hoop_gives_its_own_key_and_sends_the_cleartext_inside_tls() {
    require_privileged();
    let c = certs();
    let server = Sha2Server::start(Some(&c));
    // hoop has no key of its own here: it generates one.
    let cfg = config(server.port, "tls:\n  upstream: require\n");
    let (v, all) = client(&cfg, server.port, false, &c.cert, &[]);
    assert_real_login(&v, false, &all);

    // A client that encrypts under a key it cached (not hoop's) gets a
    // clear error from hoop, not a wrong-password guess at the server.
    let (v, all) = client(
        &cfg,
        server.port,
        false,
        &c.cert,
        &["--cached", &c.public.display().to_string()],
    );
    assert_eq!(v["right"]["login"], "error", "{all}");
    assert_eq!(v["right"]["code"], 1045, "{all}");
    let message = v["right"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("hoop") && message.contains("cannot be decrypted with hoop's public key"),
        "{all}"
    );

    // With an RSA TLS key, hoop's key is that key (as MySQL Router does):
    // a client that cached the certificate's public key logs in without
    // asking for one.
    let cfg = config(server.port, &c.tls("require"));
    let (v, all) = client(
        &cfg,
        server.port,
        false,
        &c.cert,
        &["--cached", &c.public.display().to_string()],
    );
    assert_eq!(v["right"]["login"], "ok", "{all}");
    assert_eq!(v["right"]["tls"], false, "{all}");
    assert_eq!(v["right"]["rows"].to_string(), "[[1]]", "{all}");
}

/// sha256_password (switched to by the server) is the same exchange without
/// the fast path; its key request is `0x01`. Before the translation the
/// first case was refused and the second reached the server as a wrong
/// password.
#[test]
fn sha256_password_is_translated_both_ways() {
    require_privileged();
    let c = certs();
    let server = Sha2Server::switching(None, Some("sha256_password"));
    let cfg = config(server.port, &c.tls("disable"));
    let (v, all) = client(&cfg, server.port, true, &c.cert, &[]);
    assert_real_login(&v, true, &all);
    drop(server);

    let server = Sha2Server::switching(Some(&c), Some("sha256_password"));
    let cfg = config(server.port, "tls:\n  upstream: require\n");
    let (v, all) = client(&cfg, server.port, false, &c.cert, &[]);
    assert_real_login(&v, false, &all);
}

/// A cleartext plugin cannot be translated: from a TLS client to a
/// plaintext server hoop refuses it with a clear error (in sequence: the
/// client reads hoop's message, not a packet-order error).
#[test]
fn a_cleartext_plugin_from_a_tls_client_to_a_plaintext_server_is_refused() {
    require_privileged();
    let c = certs();
    let server = Sha2Server::switching(None, Some("mysql_clear_password"));
    let cfg = config(server.port, &c.tls("disable"));
    let (v, all) = client(&cfg, server.port, true, &c.cert, &[]);
    for attempt in ["right", "wrong"] {
        assert_eq!(v[attempt]["login"], "error", "{all}");
        assert_eq!(v[attempt]["code"], 1235, "{all}");
        let message = v[attempt]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(
                "hoop does not send a password from a TLS client leg over a plaintext server leg"
            ),
            "{all}"
        );
    }
    // Through a TLS server leg the same plugin logs in.
    drop(server);
    let server = Sha2Server::switching(Some(&c), Some("mysql_clear_password"));
    let cfg = config(server.port, &c.tls("require"));
    let (v, all) = client(&cfg, server.port, true, &c.cert, &[]);
    assert_real_login(&v, true, &all);
}

/// COM_CHANGE_USER reruns authentication mid-session against the
/// greeting's scramble; its caching_sha2 full authentication is translated
/// like the login's, and the session goes on in sequence (a query after
/// it). Before, a TLS client's cleartext answer went to the plaintext
/// server.
#[test]
fn change_user_full_authentication_is_translated_too() {
    require_privileged();
    let c = certs();
    let hoop_cert = format!(
        "tls:\n  cert: {}\n  key: {}\n",
        c.cert.display(),
        c.key.display()
    );
    for (server_tls, client_tls, upstream) in [
        (false, true, "disable"),
        (true, false, "require"),
        (false, false, "disable"),
    ] {
        let server = Sha2Server::start(server_tls.then_some(&c));
        let cfg = config(server.port, &format!("{hoop_cert}  upstream: {upstream}\n"));
        let (v, all) = client(&cfg, server.port, client_tls, &c.cert, &["--change-user"]);
        assert_eq!(v["right"]["login"], "ok", "{all}");
        assert_eq!(v["right"]["tls"], client_tls, "{all}");
        let changed = &v["right"]["change_user"];
        assert_eq!(
            changed["changed"], "ok",
            "server TLS {server_tls}, client TLS {client_tls}: {all}"
        );
        assert_eq!(changed["rows"].to_string(), "[[1]]", "{all}");
        assert!(!all.contains("s3cret"), "{all}");
    }
}

/// A second client with its own caching_sha2 code: the `mariadb` CLI
/// (Connector/C's caching_sha2_password plugin, which asks for the key
/// itself on a plaintext leg), through both translations.
#[test]
fn the_mariadb_cli_logs_in_through_both_translations() {
    require_privileged();
    let c = certs();
    let run = |cfg: &TestConfig, port: u16, ssl: &str| {
        let script = format!(
            "for pw in '{PASSWORD}' 'wrong pw'; do \
             mariadb -h 127.0.0.1 -P {port} --protocol=TCP -uapp -p\"$pw\" {ssl} -N -B -e 'SELECT 1' 2>&1; \
             echo \"exit=$?\"; done"
        );
        let out = hoop_exec(&cfg.path, &["sh", "-c", &script], T);
        let (stdout, stderr) = text(&out);
        (
            stdout.clone(),
            format!("{stdout}\n--- hoop's log\n{stderr}"),
        )
    };
    let expect = |stdout: &str, all: &str| {
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.first(), Some(&"1"), "{all}");
        assert_eq!(lines.get(1), Some(&"exit=0"), "{all}");
        assert!(
            lines.get(2).is_some_and(
                |l| l.starts_with("ERROR 1045") && l.contains("Access denied for user 'app'")
            ),
            "the server's own refusal: {all}"
        );
        assert!(!all.contains("s3cret"), "{all}");
    };

    // Client TLS, server plaintext.
    let server = Sha2Server::start(None);
    let cfg = config(server.port, &c.tls("disable"));
    let (stdout, all) = run(&cfg, server.port, "--ssl");
    expect(&stdout, &all);
    drop(server);

    // Client plaintext, server TLS.
    let server = Sha2Server::start(Some(&c));
    let cfg = config(server.port, "tls:\n  upstream: require\n");
    let (stdout, all) = run(&cfg, server.port, "--skip-ssl");
    expect(&stdout, &all);
}
