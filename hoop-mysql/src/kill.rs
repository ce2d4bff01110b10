//! `KILL [QUERY] n` and held statements.
//!
//! hoop forwards the server's own greeting, so `n` is the server's thread
//! id and `KILL` needs no mapping. But a statement held in hoop never
//! reached the server, so the server's KILL cannot interrupt it: each held
//! session registers its (server, thread id) here, and a session that sends
//! `KILL … n` (or COM_PROCESS_KILL) for it withdraws the hold, whose client
//! then gets the server's own "Query execution was interrupted" error. The
//! KILL is forwarded anyway.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;

/// The held sessions, by server and thread id.
#[derive(Debug, Default)]
pub struct KillRegistry {
    held: Mutex<HashMap<(SocketAddr, u32), Arc<Notify>>>,
}

/// A registration that ends when dropped.
pub struct HeldEntry {
    registry: Arc<KillRegistry>,
    key: (SocketAddr, u32),
    /// Notified when another session kills this one's query.
    pub killed: Arc<Notify>,
}

impl Drop for HeldEntry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

impl KillRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SocketAddr, u32), Arc<Notify>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers thread `thread` on `server` as holding a statement.
    pub fn hold(self: &Arc<Self>, server: SocketAddr, thread: u32) -> HeldEntry {
        let killed = Arc::new(Notify::new());
        self.lock().insert((server, thread), killed.clone());
        HeldEntry {
            registry: self.clone(),
            key: (server, thread),
            killed,
        }
    }

    /// A KILL of `thread` on `server`: withdraws its hold, if it has one.
    /// Whether it had.
    pub fn kill(&self, server: SocketAddr, thread: u32) -> bool {
        match self.lock().get(&(server, thread)) {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The thread id a `KILL` statement names (`KILL [HARD|SOFT]
/// [CONNECTION|QUERY] n`), from its canonical text.
pub fn killed_thread(sql: &str) -> Option<u32> {
    let mut words = sql
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty());
    if !words.next()?.eq_ignore_ascii_case("kill") {
        return None;
    }
    for w in words {
        match w.to_ascii_lowercase().as_str() {
            "hard" | "soft" | "connection" | "query" => {}
            n => return n.parse().ok(),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_statements_name_their_thread() {
        assert_eq!(killed_thread("KILL 12"), Some(12));
        assert_eq!(killed_thread("kill query 7"), Some(7));
        assert_eq!(killed_thread("KILL HARD CONNECTION 9"), Some(9));
        assert_eq!(killed_thread("KILL QUERY ID 9"), None);
        assert_eq!(killed_thread("SELECT 1"), None);
    }

    #[test]
    fn a_kill_reaches_only_a_registered_hold() {
        let r = KillRegistry::new();
        let server: SocketAddr = "127.0.0.1:3306".parse().unwrap_or_else(|_| unreachable!());
        assert!(!r.kill(server, 5));
        let entry = r.hold(server, 5);
        assert!(r.kill(server, 5));
        drop(entry);
        assert!(!r.kill(server, 5));
    }
}
