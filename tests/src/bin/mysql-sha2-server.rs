//! A test double of a MySQL 8 server that authenticates with
//! `caching_sha2_password` the way mysql-server's `sql/auth/sha2_password.cc`
//! does when its cache misses: the client's scramble answer is followed by
//! `0x01 0x04` (perform full authentication); on a TLS connection the next
//! packet is the password in clear, on a plaintext one `0x02` gets the
//! server's RSA public key (PEM) and the next packet is
//! `RSA-OAEP-SHA1(password || NUL XOR scramble)`. The password is checked
//! for real (wrong: ERR 1045). MariaDB, the test server here, has no
//! caching_sha2.
//!
//! After the login it answers `SELECT 1`, `SELECT CURRENT_USER()`, `SET …`,
//! COM_PING, COM_QUIT and COM_CHANGE_USER (full authentication again), and ERR 1064 to any other query. Sequence ids are
//! checked strictly (ERR 1156, "packets out of order", otherwise).
//!
//! `--switch-to sha256_password` switches every login to sha256_password
//! (full authentication only: TLS cleartext, or `0x01` -> PEM -> RSA);
//! `--switch-to mysql_clear_password` to the cleartext plugin.
//!
//! `mysql-sha2-server --user U --password P [--tls CERT KEY] [--switch-to
//! PLUGIN]`: listens on 127.0.0.1 on a free port, prints `port N` on
//! stdout, serves until killed.

use std::{io, path::PathBuf, sync::Arc};

use rsa::{
    Oaep, RsaPrivateKey,
    pkcs8::{EncodePublicKey, LineEnding},
    rand_core::{OsRng, RngCore},
    traits::PublicKeyParts,
};
use sha1::Sha1;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

const CLIENT_LONG_PASSWORD: u32 = 0x1;
const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;
const PLUGIN: &[u8] = b"caching_sha2_password";
const SERVER_STATUS_AUTOCOMMIT: u16 = 0x2;

struct Options {
    user: Vec<u8>,
    password: Vec<u8>,
    tls: Option<(PathBuf, PathBuf)>,
    switch_to: Option<Vec<u8>>,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut user, mut password, mut tls, mut switch_to) = (None, None, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--user" => user = args.next(),
            "--password" => password = args.next(),
            "--switch-to" => switch_to = args.next().map(String::into_bytes),
            "--tls" => {
                let cert = args.next().ok_or("--tls CERT KEY")?;
                let key = args.next().ok_or("--tls CERT KEY")?;
                tls = Some((cert.into(), key.into()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Options {
        user: user.ok_or("--user is required")?.into_bytes(),
        password: password.ok_or("--password is required")?.into_bytes(),
        tls,
        switch_to,
    })
}

fn acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

struct Server {
    options: Options,
    tls: Option<TlsAcceptor>,
    key: RsaPrivateKey,
    public_pem: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mysql-sha2-server: {e}");
            std::process::exit(2);
        }
    };
    let tls = match &options.tls {
        Some((cert, key)) => match acceptor(cert, key) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("mysql-sha2-server: TLS: {e}");
                std::process::exit(2);
            }
        },
        None => None,
    };
    let key = RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key");
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM");
    let server = Arc::new(Server {
        options,
        tls,
        key,
        public_pem,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("port {}", listener.local_addr().expect("address").port());
    let mut thread_id = 0u32;
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        thread_id += 1;
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            if let Err(e) = server.serve(socket, thread_id).await {
                eprintln!("mysql-sha2-server: connection {thread_id}: {e}");
            }
        });
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection: a stream and the sequence id expected next.
struct Conn {
    io: Box<dyn Io>,
    seq: u8,
}

impl Conn {
    async fn read(&mut self) -> io::Result<Vec<u8>> {
        let mut head = [0u8; 4];
        self.io.read_exact(&mut head).await?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        if head[3] != self.seq {
            let expected = self.seq;
            self.seq = head[3].wrapping_add(1);
            let _ = self.err(1156, b"08S01", "Got packets out of order").await;
            return Err(io::Error::other(format!(
                "packet with sequence id {} where {expected} was due",
                head[3]
            )));
        }
        self.seq = self.seq.wrapping_add(1);
        let mut payload = vec![0; len];
        self.io.read_exact(&mut payload).await?;
        Ok(payload)
    }

    async fn write(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
        let mut out = len.to_le_bytes()[..3].to_vec();
        out.push(self.seq);
        out.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    async fn ok(&mut self) -> io::Result<()> {
        let mut p = vec![0, 0, 0];
        p.extend_from_slice(&SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        self.write(&p).await
    }

    async fn err(&mut self, code: u16, state: &[u8; 5], message: &str) -> io::Result<()> {
        let mut p = vec![0xff];
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(state);
        p.extend_from_slice(message.as_bytes());
        self.write(&p).await
    }

    async fn eof(&mut self) -> io::Result<()> {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
        self.write(&p).await
    }

    /// A one-column, one-row text result set (no DEPRECATE_EOF).
    async fn single_value(&mut self, name: &str, value: &[u8], numeric: bool) -> io::Result<()> {
        self.write(&[1]).await?;
        let mut def = Vec::new();
        for s in [&b"def"[..], b"", b"", b"", name.as_bytes(), b""] {
            lenenc(&mut def, s);
        }
        def.push(0x0c);
        let (charset, kind): (u16, u8) = if numeric { (63, 0x08) } else { (255, 0xfd) };
        def.extend_from_slice(&charset.to_le_bytes());
        def.extend_from_slice(&64u32.to_le_bytes());
        def.push(kind);
        def.extend_from_slice(&[0x01, 0x00, 0, 0, 0]);
        self.write(&def).await?;
        self.eof().await?;
        let mut row = Vec::new();
        lenenc(&mut row, value);
        self.write(&row).await?;
        self.eof().await
    }
}

fn lenenc(out: &mut Vec<u8>, s: &[u8]) {
    // Test values are short.
    out.push(u8::try_from(s.len()).expect("short string"));
    out.extend_from_slice(s);
}

/// 20 printable bytes (no NUL, no `$`), as mysql-server makes them.
fn scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    OsRng.fill_bytes(&mut s);
    for b in &mut s {
        *b = 0x21 + (*b % 0x5e);
        if *b == b'$' {
            *b = b'%';
        }
    }
    s
}

fn xor(data: &mut [u8], scramble: &[u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= scramble[i % scramble.len()];
    }
}

/// The parts of HandshakeResponse41 the double needs.
struct Response {
    caps: u32,
    user: Vec<u8>,
    plugin: Option<Vec<u8>>,
}

fn parse_response(p: &[u8]) -> Option<Response> {
    let caps = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    let mut rest = p.get(32..)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let user = rest[..nul].to_vec();
    rest = &rest[nul + 1..];
    let auth_len = if caps & (CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_SECURE_CONNECTION) != 0
    {
        // One-byte lengths (< 251) either way for these answers.
        let n = usize::from(*rest.first()?);
        rest = &rest[1..];
        n
    } else {
        rest.iter().position(|&b| b == 0)? + 1
    };
    rest = rest.get(auth_len..)?;
    if caps & CLIENT_CONNECT_WITH_DB != 0 {
        let nul = rest.iter().position(|&b| b == 0)?;
        rest = &rest[nul + 1..];
    }
    let plugin = if caps & CLIENT_PLUGIN_AUTH != 0 {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Some(rest[..end].to_vec())
    } else {
        None
    };
    Some(Response { caps, user, plugin })
}

impl Server {
    async fn serve(&self, socket: TcpStream, thread_id: u32) -> io::Result<()> {
        let mut conn = Conn {
            io: Box::new(socket),
            seq: 0,
        };
        let nonce = scramble();
        let mut caps = CLIENT_LONG_PASSWORD
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        if self.tls.is_some() {
            caps |= CLIENT_SSL;
        }
        let mut greeting = vec![10];
        greeting.extend_from_slice(b"8.0.99-hoop-sha2-double\0");
        greeting.extend_from_slice(&thread_id.to_le_bytes());
        greeting.extend_from_slice(&nonce[..8]);
        greeting.push(0);
        greeting.extend_from_slice(&caps.to_le_bytes()[..2]);
        greeting.push(255);
        greeting.extend_from_slice(&SERVER_STATUS_AUTOCOMMIT.to_le_bytes());
        greeting.extend_from_slice(&caps.to_le_bytes()[2..]);
        greeting.push(21);
        greeting.extend_from_slice(&[0; 10]);
        greeting.extend_from_slice(&nonce[8..]);
        greeting.push(0);
        greeting.extend_from_slice(PLUGIN);
        greeting.push(0);
        conn.write(&greeting).await?;

        let mut first = conn.read().await?;
        let mut secure = false;
        if first.len() == 32
            && u32::from_le_bytes(first[..4].try_into().unwrap_or_default()) & CLIENT_SSL != 0
        {
            let Some(acceptor) = &self.tls else {
                return Err(io::Error::other("SSLRequest without TLS configured"));
            };
            let Conn { io, seq } = conn;
            // The stream is the TCP socket until now.
            let socket = io;
            let tls = acceptor.accept(socket).await?;
            conn = Conn {
                io: Box::new(tls),
                seq,
            };
            secure = true;
            first = conn.read().await?;
        }
        let Some(response) = parse_response(&first) else {
            conn.err(1043, b"08S01", "Bad handshake").await?;
            return Ok(());
        };
        if response.caps & CLIENT_PROTOCOL_41 == 0 {
            conn.err(1043, b"08S01", "Bad handshake").await?;
            return Ok(());
        }
        let plugin = self.options.switch_to.as_deref().unwrap_or(PLUGIN);
        if response.plugin.as_deref() != Some(PLUGIN) || plugin != PLUGIN {
            let mut switch = vec![0xfe];
            switch.extend_from_slice(plugin);
            switch.push(0);
            switch.extend_from_slice(&nonce);
            switch.push(0);
            conn.write(&switch).await?;
            if plugin == PLUGIN {
                // The client's scramble answer under caching_sha2.
                conn.read().await?;
            }
        }
        let denied = format!(
            "Access denied for user '{}'@'127.0.0.1' (using password: YES)",
            String::from_utf8_lossy(&response.user)
        );
        if response.user != self.options.user {
            conn.err(1045, b"28000", &denied).await?;
            return Ok(());
        }
        if self
            .full_authentication(&mut conn, secure, &nonce, plugin, &denied)
            .await?
        {
            self.commands(&mut conn, secure, &nonce, &response.user)
                .await
        } else {
            Ok(())
        }
    }

    /// Full authentication under `plugin`; answers OK (`true`) or ERR 1045.
    async fn full_authentication(
        &self,
        conn: &mut Conn,
        secure: bool,
        nonce: &[u8; 20],
        plugin: &[u8],
        denied: &str,
    ) -> io::Result<bool> {
        // caching_sha2's cache is always cold: full authentication.
        // sha256_password and the cleartext plugin have nothing else.
        let key_request = if plugin == PLUGIN {
            conn.write(&[0x01, 0x04]).await?;
            0x02
        } else {
            0x01
        };
        let mut packet = conn.read().await?;
        let password = if secure || plugin == b"mysql_clear_password" {
            packet.strip_suffix(&[0]).unwrap_or(&packet).to_vec()
        } else {
            if packet == [key_request] {
                let mut more = vec![0x01];
                more.extend_from_slice(self.public_pem.as_bytes());
                conn.write(&more).await?;
                packet = conn.read().await?;
            }
            let plain = if packet.len() == self.key.size() {
                self.key.decrypt(Oaep::new::<Sha1>(), &packet).ok()
            } else {
                None
            };
            let Some(mut p) = plain else {
                conn.err(1045, b"28000", denied).await?;
                return Ok(false);
            };
            xor(&mut p, nonce);
            if p.pop() != Some(0) {
                conn.err(1045, b"28000", denied).await?;
                return Ok(false);
            }
            p
        };
        if password != self.options.password {
            conn.err(1045, b"28000", denied).await?;
            return Ok(false);
        }
        conn.ok().await?;
        Ok(true)
    }

    async fn commands(
        &self,
        conn: &mut Conn,
        secure: bool,
        nonce: &[u8; 20],
        user: &[u8],
    ) -> io::Result<()> {
        loop {
            conn.seq = 0;
            let packet = match conn.read().await {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            };
            match packet.first() {
                Some(0x01) | None => return Ok(()),
                Some(0x0e | 0x02) => conn.ok().await?,
                // COM_CHANGE_USER (to the same user, caching_sha2, the
                // greeting's scramble): full authentication again.
                Some(0x11) => {
                    let changed_to = packet[1..].split(|&b| b == 0).next().unwrap_or_default();
                    let denied = format!(
                        "Access denied for user '{}'@'127.0.0.1' (using password: YES)",
                        String::from_utf8_lossy(changed_to)
                    );
                    if changed_to != self.options.user {
                        conn.err(1045, b"28000", &denied).await?;
                        return Ok(());
                    }
                    if !self
                        .full_authentication(conn, secure, nonce, PLUGIN, &denied)
                        .await?
                    {
                        return Ok(());
                    }
                }
                Some(0x03) => {
                    let sql = String::from_utf8_lossy(&packet[1..])
                        .trim()
                        .to_ascii_uppercase();
                    if sql == "SELECT 1" {
                        conn.single_value("1", b"1", true).await?;
                    } else if sql == "SELECT CURRENT_USER()" {
                        let mut u = user.to_vec();
                        u.extend_from_slice(b"@%");
                        conn.single_value("CURRENT_USER()", &u, false).await?;
                    } else if sql.starts_with("SET ") {
                        conn.ok().await?;
                    } else {
                        conn.err(
                            1064,
                            b"42000",
                            "the test double knows SELECT 1, SELECT CURRENT_USER() and SET only",
                        )
                        .await?;
                    }
                }
                Some(_) => conn.err(1047, b"08S01", "Unknown command").await?,
            }
        }
    }
}
