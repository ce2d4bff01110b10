//! `cargo xtask floor`: the least a TCP proxy can do, as a benchmark
//! baseline.
//!
//! One thread, one `epoll` (through mio, edge-triggered), and per relayed
//! chunk exactly the system calls a relay cannot avoid: a `recv` and a
//! `send`. Like hoop's relay loop, a short read is taken to mean that the
//! socket is drained, so no read ends in `EWOULDBLOCK` in the request and
//! reply pattern of a query. It parses nothing, judges nothing and counts
//! nothing: its CPU time per query is what the kernel charges any proxy
//! for the two loopback legs, plus the thinnest user space there is. The
//! benchmark reports it beside hoop, pgbouncer and haproxy.
//!
//! Not for anything but the benchmark: it forwards every connection to one
//! address, keeps no limits, and closes both legs at the first end of
//! stream or error on either.

use std::{io, net::SocketAddr};

use anyhow::Context as _;
use mio::{
    Events, Interest, Poll, Token,
    net::{TcpListener, TcpStream},
};

const LISTENER: Token = Token(usize::MAX);
const CHUNK: usize = 64 * 1024;

/// One relayed connection: `legs[0]` is the client's, `legs[1]` the
/// server's; `pending[i]` holds bytes read from the other leg that `legs[i]`
/// has not taken yet.
struct Pair {
    legs: [TcpStream; 2],
    pending: [Vec<u8>; 2],
    /// Whether leg `i` may have unread data (edge-triggered: set by an
    /// event, cleared by a short read).
    readable: [bool; 2],
}

/// Forwards every connection accepted on `listen` to `upstream`, until
/// killed.
pub fn run(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    serve(listener, upstream)
}

fn serve(mut listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut pairs: slab::Slab<Pair> = slab::Slab::new();
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; CHUNK];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in &events {
            if event.token() == LISTENER {
                accept(&poll, &mut listener, &mut pairs, upstream)?;
                continue;
            }
            let key = event.token().0 / 2;
            let leg = event.token().0 % 2;
            let Some(pair) = pairs.get_mut(key) else {
                continue;
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                pair.readable[leg] = true;
            }
            if pump(pair, &mut buf).is_err() {
                let mut pair = pairs.remove(key);
                for leg in &mut pair.legs {
                    let _ = poll.registry().deregister(leg);
                }
            }
        }
    }
}

fn accept(
    poll: &Poll,
    listener: &mut TcpListener,
    pairs: &mut slab::Slab<Pair>,
    upstream: SocketAddr,
) -> anyhow::Result<()> {
    loop {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // A blocking connect keeps this short; the benchmark's clients
        // connect once, before their timed run.
        let server = std::net::TcpStream::connect(upstream)
            .with_context(|| format!("connecting to {upstream}"))?;
        server.set_nonblocking(true)?;
        let server = TcpStream::from_std(server);
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let entry = pairs.vacant_entry();
        let key = entry.key();
        let pair = entry.insert(Pair {
            legs: [client, server],
            pending: [Vec::new(), Vec::new()],
            readable: [true, true],
        });
        for (i, leg) in pair.legs.iter_mut().enumerate() {
            poll.registry().register(
                leg,
                Token(key * 2 + i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
    }
}

/// Moves what can move in both directions; `Err` ends the pair (end of
/// stream or an error on either leg).
fn pump(pair: &mut Pair, buf: &mut [u8]) -> io::Result<()> {
    for from in 0..2 {
        let to = 1 - from;
        if !flush(&pair.legs[to], &mut pair.pending[to])? {
            continue; // the reader waits until the writer takes the backlog
        }
        while pair.readable[from] {
            let n = match recv(&pair.legs[from], buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pair.readable[from] = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n < buf.len() {
                pair.readable[from] = false;
            }
            // Written from `buf`; only what the socket does not take is copied.
            let written = write_some(&pair.legs[to], &buf[..n])?;
            if written < n {
                pair.pending[to].extend_from_slice(&buf[written..n]);
                break;
            }
        }
    }
    Ok(())
}

/// `recv` as a raw system call, as hoop's relay loop makes it (glibc's
/// wrapper is a thread cancellation point, with two atomic operations).
fn recv(leg: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    rustix::net::recv(leg, buf, rustix::net::RecvFlags::empty())
        .map(|(n, _)| n)
        .map_err(io::Error::from)
}

/// Writes as much of `bytes` as `leg` takes now (raw `send`): how much.
fn write_some(leg: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match rustix::net::send(leg, &bytes[written..], rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}

/// Writes `pending` to `leg`: whether all of it was taken.
fn flush(leg: &TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
    let written = write_some(leg, pending)?;
    pending.drain(..written);
    Ok(pending.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// 4 MiB through the forwarder to an echo server and back, in order,
    /// with a client that waits before it reads: more than the sockets
    /// hold, so the forwarder's writes come up short and wait.
    #[test]
    fn forwards_both_ways_in_order() {
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut r = s.try_clone().unwrap();
            let _ = std::io::copy(&mut r, &mut s);
        });
        let listener = super::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || super::serve(listener, upstream));

        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut writer = client.try_clone().unwrap();
        let sent = data.clone();
        let w = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        // Not reading yet: the echo fills the client's socket, the
        // forwarder's writes come up short and its backlog waits.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut got = vec![0u8; data.len()];
        client.read_exact(&mut got).unwrap();
        w.join().unwrap();
        assert!(got == data, "bytes changed or reordered");
    }
}
