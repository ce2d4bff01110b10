//! A real S3 API for the recording-store tests: moto's server mode
//! (PyPI `moto[server]`, installed by `cargo xtask setup`) on a free
//! loopback port, and a TCP relay in front of it that a test can cut and
//! restore to take the store away and bring it back.
//!
//! The outage is a cut relay rather than a restarted moto because moto's
//! server keeps its objects in memory: a restarted moto would be a new,
//! empty store, not the same store come back.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::free_port;

/// The moto server the tests use: `HOOP_MOTO_SERVER`, else the one
/// `cargo xtask setup` installs, else `moto_server` on `PATH`.
pub fn moto_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HOOP_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let installed = PathBuf::from(home).join(".local/share/hoop/moto/bin/moto_server");
        if installed.exists() {
            return installed;
        }
    }
    PathBuf::from("moto_server")
}

/// A running moto server with one bucket. Killed on drop.
pub struct Moto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The bucket the tests use.
    pub bucket: String,
}

impl Moto {
    /// Starts moto on a free loopback port and creates `bucket`. Fails the
    /// test (never skips) when moto is missing: `cargo xtask setup` installs it.
    pub fn start(bucket: &str) -> Moto {
        let port = free_port();
        let bin = moto_server_bin();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): the recording-store tests need moto's server (`cargo xtask setup` installs PyPI moto[server])",
                    bin.display()
                )
            });
        let moto = Moto {
            child,
            port,
            bucket: bucket.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(status) = http(port, "PUT", &format!("/{bucket}"), b"") {
                assert_eq!(status, 200, "creating bucket {bucket} in moto");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `AWS_*` environment that points the standard S3 client at `endpoint`
/// (moto accepts any credentials).
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT", endpoint.to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
}

impl Moto {
    /// A signed S3 client for the bucket (moto takes any credentials).
    fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(&self.bucket)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .expect("S3 client")
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    /// The keys under `prefix` in the bucket, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt as _;
        use object_store::ObjectStore as _;
        let client = self.client();
        let prefix = object_store::path::Path::from(prefix);
        let mut keys: Vec<String> =
            Self::block_on(client.list(Some(&prefix)).try_collect::<Vec<_>>())
                .expect("list objects")
                .into_iter()
                .map(|m| m.location.to_string())
                .collect();
        keys.sort();
        keys
    }

    /// An object's bytes.
    pub fn get(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStore as _;
        let client = self.client();
        let location = object_store::path::Path::from(key);
        Self::block_on(async { client.get(&location).await?.bytes().await })
            .expect("get object")
            .to_vec()
    }

    /// Replaces an object.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        use object_store::ObjectStore as _;
        let client = self.client();
        let location = object_store::path::Path::from(key);
        Self::block_on(client.put(&location, bytes.to_vec().into())).expect("put object");
    }

    /// Every object under `prefix`, concatenated in key order.
    pub fn concatenated(&self, prefix: &str) -> Vec<u8> {
        self.keys(prefix).iter().flat_map(|k| self.get(k)).collect()
    }
}

/// One plain HTTP/1.1 request (to create the bucket); the status code.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {head:.80}")))
}

/// A TCP relay on a fixed loopback port to `target`. [`Relay::cut`] closes
/// the listener and every relayed connection (clients then get connection
/// refused); [`Relay::restore`] listens again on the same port.
pub struct Relay {
    /// Its port on 127.0.0.1.
    pub port: u16,
    target: u16,
    state: Arc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    stop: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
    acceptor: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Relay {
    /// Starts relaying a free port to `target`.
    pub fn start(target: u16) -> Relay {
        let relay = Relay {
            port: free_port(),
            target,
            state: Arc::new(RelayState::default()),
        };
        relay.restore();
        relay
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Listens (again).
    pub fn restore(&self) {
        self.state.stop.store(false, Ordering::SeqCst);
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind the relay port");
        listener.set_nonblocking(true).expect("nonblocking");
        let (state, target) = (Arc::clone(&self.state), self.target);
        let acceptor = std::thread::spawn(move || {
            while !state.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        let mut conns = state.connections.lock().expect("lock");
                        for s in [&client, &server] {
                            if let Ok(c) = s.try_clone() {
                                conns.push(c);
                            }
                        }
                        pipe(&client, &server);
                        pipe(&server, &client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        *self.state.acceptor.lock().expect("lock") = Some(acceptor);
    }

    /// Stops listening and resets every relayed connection.
    pub fn cut(&self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.state.acceptor.lock().expect("lock").take() {
            let _ = acceptor.join();
        }
        for conn in self.state.connections.lock().expect("lock").drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}
