//! The start-up gate: `hoop await` in an init container exits 0 once this
//! pod's connections to the intercepted ports are governed, non-zero after
//! its timeout.
//!
//! How it knows: it dials a canary address, `0.0.0.2`, on an intercepted
//! port. `0.0.0.0/8` is "this network": nothing answers there. A governed
//! pod's connect is redirected by hoop's programs to hoop's listener in the
//! pod's network namespace, which sees the canary as the original
//! destination and answers [`BANNER`] (see [`answer`]) instead of dialling
//! it. An ungoverned pod's connect fails or times out. Only hoop's answer
//! counts, so nothing else can pass the gate by accident. (Kmesh uses the
//! same address for its in-kernel handshake.)

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The canary address.
pub const CANARY_IP: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 2);
/// What hoop answers on a canary connection (followed by the pod's
/// `namespace/name` and a newline).
pub const BANNER: &str = "hoop: governed";

/// True when a redirected connection's original destination is the canary
/// (IPv4 or IPv4-mapped).
pub fn is_canary(dst: &SocketAddr) -> bool {
    match dst.ip() {
        IpAddr::V4(v4) => v4 == CANARY_IP,
        IpAddr::V6(v6) => v6.to_ipv4_mapped() == Some(CANARY_IP),
    }
}

/// Answers a canary connection (the proxy calls this instead of dialling
/// upstream when [`is_canary`] holds).
pub async fn answer<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    pod: &str,
) -> std::io::Result<()> {
    stream
        .write_all(format!("{BANNER} {pod}\n").as_bytes())
        .await?;
    stream.shutdown().await
}

/// Why the gate did not open.
#[derive(Debug, thiserror::Error)]
#[error(
    "this pod's connections to port {port} are not governed by hoop after {waited:?} \
     (last attempt: {last}); is the pod annotated hoop.dev/govern=true and the hoop agent running on this node?"
)]
pub struct NotGoverned {
    /// The port probed.
    pub port: u16,
    /// How long it waited.
    pub waited: Duration,
    /// What the last attempt saw.
    pub last: String,
}

/// One probe: `Ok(pod)` when hoop answered (with the pod name it governs
/// this connection as).
pub async fn probe(port: u16, attempt_timeout: Duration) -> Result<String, String> {
    let dial = async {
        let mut s = tokio::net::TcpStream::connect((CANARY_IP, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut buf = Vec::new();
        (&mut s)
            .take(256)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        text.trim()
            .strip_prefix(BANNER)
            .map(|rest| rest.trim().to_owned())
            .ok_or_else(|| format!("unexpected answer {text:?}"))
    };
    match tokio::time::timeout(attempt_timeout, dial).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {attempt_timeout:?}")),
    }
}

/// Probes until hoop answers or `timeout` passes. Returns the pod name hoop
/// reported.
pub async fn await_governed(port: u16, timeout: Duration) -> Result<String, NotGoverned> {
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let last = match probe(port, left.min(Duration::from_secs(2))).await {
            Ok(pod) => return Ok(pod),
            Err(e) => e,
        };
        if start.elapsed() + pause >= timeout {
            return Err(NotGoverned {
                port,
                waited: start.elapsed(),
                last,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_canary_in_both_families() {
        assert!(is_canary(&"0.0.0.2:5432".parse().expect("addr")));
        assert!(is_canary(&"[::ffff:0.0.0.2]:5432".parse().expect("addr")));
        assert!(!is_canary(&"10.0.0.2:5432".parse().expect("addr")));
        assert!(!is_canary(&"[::2]:5432".parse().expect("addr")));
    }

    #[tokio::test]
    async fn an_ungoverned_process_times_out_with_a_clear_error() {
        let e = await_governed(5432, Duration::from_millis(300))
            .await
            .expect_err("nothing answers the canary here");
        assert_eq!(e.port, 5432);
        assert!(e.to_string().contains("hoop.dev/govern=true"), "{e}");
    }
}
