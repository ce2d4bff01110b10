//! CancelRequest routing.
//!
//! hoop passes the server's BackendKeyData to the client unchanged, so the
//! client's cancel key is the server's. A cancel arrives on a new
//! connection; the registry maps the key to the session's upstream address
//! and a handle on the session. If that session is holding a statement, the
//! cancel withdraws the hold (nothing is running upstream); otherwise it is
//! forwarded on a fresh upstream connection. Unknown keys are ignored, as
//! PostgreSQL does.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, sync::mpsc};

use hoop_relay::dial::Dialer;

type Key = (i32, Box<[u8]>);

/// Where a cancel for one session goes.
#[derive(Debug, Clone)]
pub(super) struct CancelTarget {
    upstream: SocketAddr,
    held: Arc<AtomicBool>,
    withdraw: mpsc::UnboundedSender<()>,
}

/// All live sessions' cancel keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<Key, CancelTarget>>,
}

/// A session's side of its registry entry: removes it when dropped.
#[derive(Debug)]
pub(super) struct CancelRegistration {
    registry: Arc<CancelRegistry>,
    key: Key,
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.sessions.lock() {
            map.remove(&self.key);
        }
    }
}

/// What a session listens to: whether it is held, and withdrawals.
#[derive(Debug)]
pub(super) struct CancelSignals {
    pub(super) held: Arc<AtomicBool>,
    pub(super) withdraw: mpsc::UnboundedReceiver<()>,
    withdraw_tx: mpsc::UnboundedSender<()>,
}

impl CancelSignals {
    pub(super) fn new() -> Self {
        let (withdraw_tx, withdraw) = mpsc::unbounded_channel();
        Self {
            held: Arc::new(AtomicBool::new(false)),
            withdraw,
            withdraw_tx,
        }
    }

    pub(super) fn set_held(&mut self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
        if held {
            // Forget withdrawals that raced with the end of an earlier hold.
            while self.withdraw.try_recv().is_ok() {}
        }
    }
}

/// What became of a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// No session has this key.
    Unknown,
    /// The session was holding a statement; the hold was withdrawn.
    WithdrewHold,
    /// Forwarded to the server.
    Forwarded,
}

impl CancelRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(super) fn register(
        self: &Arc<Self>,
        pid: i32,
        secret: &[u8],
        upstream: SocketAddr,
        signals: &CancelSignals,
    ) -> CancelRegistration {
        let key: Key = (pid, secret.into());
        let target = CancelTarget {
            upstream,
            held: signals.held.clone(),
            withdraw: signals.withdraw_tx.clone(),
        };
        if let Ok(mut map) = self.sessions.lock() {
            map.insert(key.clone(), target);
        }
        CancelRegistration {
            registry: self.clone(),
            key,
        }
    }

    /// Number of registered sessions.
    pub fn len(&self) -> usize {
        self.sessions.lock().map_or(0, |m| m.len())
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles a CancelRequest (`raw` is the whole message as received).
    pub(super) async fn cancel(
        &self,
        pid: i32,
        secret: &[u8],
        raw: Bytes,
        dialer: &Dialer,
    ) -> Result<CancelOutcome, hoop_relay::dial::DialError> {
        let key: Key = (pid, secret.into());
        let target = self.sessions.lock().ok().and_then(|m| m.get(&key).cloned());
        let Some(target) = target else {
            return Ok(CancelOutcome::Unknown);
        };
        if target.held.load(Ordering::SeqCst) && target.withdraw.send(()).is_ok() {
            return Ok(CancelOutcome::WithdrewHold);
        }
        let mut upstream = dialer.connect(target.upstream).await?;
        // The server closes the connection without replying; wait briefly
        // for that so the cancel has been delivered before we close.
        if upstream.write_all(&raw).await.is_ok() {
            let mut sink = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(5), upstream.read(&mut sink)).await;
        }
        Ok(CancelOutcome::Forwarded)
    }
}
