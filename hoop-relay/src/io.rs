//! The I/O half of a relay, shared by every protocol driver: both legs
//! of a session in one task, queues towards each leg written with
//! vectored writes, per-leg wakers so a wake-up says which stream is ready,
//! and backpressure (a leg is read only while the queue towards the other
//! is below a high-water mark: a slow client slows the server).
//!
//! Bulk transfers coalesce their reads: once [`COALESCE_AFTER`] bytes have
//! come from one leg with none from the other (a large result, a COPY), that
//! leg's reads wait for [`COALESCE_BYTES`] or for the event loop's short
//! deadline (see `event_loop`), so the relay makes one read, one write and
//! one `epoll_wait` per 64 KiB instead of per 8 KiB send of the server. A
//! request and its reply, the traffic of a query, never reach the
//! threshold and are read at once.

use std::{
    collections::VecDeque,
    future::poll_fn,
    io::IoSlice,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::{Stream, event_loop::ReadBytes};

/// Read granularity.
pub const READ_CHUNK: usize = 64 * 1024;
/// Stop reading a leg while this much is queued towards the other.
pub const HIGH_WATER: usize = 256 * 1024;
/// Bytes from one leg, with none from the other, after which that leg's
/// reads coalesce.
pub const COALESCE_AFTER: usize = 1 << 20;
/// The low-water mark of a coalescing leg.
pub const COALESCE_BYTES: usize = READ_CHUNK;
/// Chunks per vectored write.
const MAX_IOVECS: usize = 32;
/// How long to keep delivering queued bytes once a session ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes room for a read of about [`READ_CHUNK`] bytes.
pub fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// Bytes queued for one leg, written with vectored writes.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
    unflushed: bool,
}

impl OutQueue {
    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl OutQueue {
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push_back(b);
        }
    }

    /// Writes what is queued; `Ready` once all of it was written (and
    /// flushed, for TLS).
    #[inline]
    pub fn poll_drain(
        &mut self,
        w: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Most calls find nothing to do: skip the call into the writer.
        if self.chunks.is_empty() && !self.unflushed {
            return Poll::Ready(Ok(()));
        }
        self.poll_write_queued(w, cx)
    }

    /// Forwards the first `run` bytes of `buf`. With nothing queued ahead
    /// of them they are written straight from `buf` (the usual case: one
    /// request, one reply), sparing the split into a `Bytes`, its queueing
    /// and its reference counts; what the socket does not take now is
    /// queued. `waker` is the leg's, so a write that fills the socket
    /// registers it as `poll_drain` would.
    pub fn forward(
        &mut self,
        w: &mut Stream,
        waker: &Waker,
        buf: &mut BytesMut,
        mut run: usize,
    ) -> std::io::Result<()> {
        if run == 0 {
            return Ok(());
        }
        if self.chunks.is_empty() && !w.buffers_writes() {
            let mut cx = Context::from_waker(waker);
            if let Poll::Ready(n) = Pin::new(&mut *w).poll_write(&mut cx, &buf[..run]) {
                // A write of 0 bytes leaves them queued; the queue's next
                // write reports it.
                let n = n?;
                buf.advance(n);
                run -= n;
            }
        }
        if run > 0 {
            self.push(buf.split_to(run).freeze());
        }
        Ok(())
    }

    fn poll_write_queued(
        &mut self,
        w: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        while let Some(front) = self.chunks.front() {
            let mut n = if self.chunks.len() == 1 {
                // The usual case (one reply, one request): a plain write.
                ready!(Pin::new(&mut *w).poll_write(cx, front))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut k = 0;
                for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()) {
                    *slot = IoSlice::new(chunk);
                    k += 1;
                }
                ready!(Pin::new(&mut *w).poll_write_vectored(cx, &slices[..k]))?
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.len -= n;
            self.unflushed = true;
            while n > 0 {
                let Some(front) = self.chunks.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    self.chunks.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
        }
        if self.unflushed {
            if w.buffers_writes() {
                ready!(Pin::new(&mut *w).poll_flush(cx))?;
            }
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

/// The task's waker, shared by both streams' wakers.
type TaskWaker = Arc<AtomicWaker>;

/// One stream's waker. Every registration made while polling the stream
/// (its reads and its writes) uses this waker instead of the task's, so a
/// wake-up says which stream's readiness changed: a read that returned
/// Pending stays registered and is not polled again until its stream is
/// woken. Polling an idle stream on every wake-up would only repeat the
/// registration.
struct LegSignal {
    woken: AtomicBool,
    task: TaskWaker,
}

impl std::task::Wake for LegSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One stream of a relay, with the waker its readiness is registered with.
pub struct Leg {
    signal: Arc<LegSignal>,
    /// The waker the stream is polled with.
    pub waker: Waker,
    /// The last read returned Pending and the stream has not been woken
    /// since: its registration stands.
    pub parked: bool,
    /// Whether this leg's reads coalesce.
    bulk: BulkReads,
}

impl Leg {
    fn new(task: &TaskWaker) -> Self {
        let signal = Arc::new(LegSignal {
            woken: AtomicBool::new(false),
            task: task.clone(),
        });
        Self {
            waker: Waker::from(signal.clone()),
            signal,
            parked: false,
            bulk: BulkReads::new(true),
        }
    }

    /// Whether the stream's read should be polled now.
    fn poll_read_now(&mut self) -> bool {
        // The plain load spares the locked swap on the leg that was not
        // woken (usually one of the two). Only the swap clears the flag: a
        // wake-up that lands between the two is then consumed here, before
        // the stream is polled, never lost.
        if self.woken() && self.signal.woken.swap(false, Ordering::AcqRel) {
            self.parked = false;
        }
        !self.parked
    }

    fn woken(&self) -> bool {
        self.signal.woken.load(Ordering::Acquire)
    }
}

/// When one leg's reads coalesce (see the module's documentation): the
/// bytes read from it since the other leg last sent any, and whether it
/// coalesces now. Kept by every relay for each leg it reads.
#[derive(Debug)]
pub struct BulkReads {
    enabled: bool,
    run: usize,
    coalescing: bool,
}

impl BulkReads {
    /// A leg that has read nothing yet; `enabled: false` never coalesces.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            run: 0,
            coalescing: false,
        }
    }

    /// Turns coalescing on or off (`proxy.coalesce_bulk_reads`). A leg that
    /// coalesces now is left to the event loop's deadline.
    pub fn enable(&mut self, on: bool) {
        self.enabled = on;
    }

    /// The other leg sent bytes (a request): the run starts again.
    pub fn other_leg_sent(&mut self) {
        self.run = 0;
    }

    /// Whether the leg's reads were last made to coalesce.
    pub fn coalescing(&self) -> bool {
        self.coalescing
    }

    /// Counts a read of `n` bytes from `stream`, the leg, and makes its
    /// reads coalesce once its run is long enough. A read below an eighth of
    /// the mark after the event loop ended the coalescing (its deadline
    /// passed) means the flow slowed or stopped, and the run starts again; a
    /// larger one means the flow goes on at its pace, and coalescing
    /// resumes at once.
    pub fn read(&mut self, stream: &mut Stream, n: usize) {
        if !self.enabled {
            return;
        }
        self.run = self.run.saturating_add(n);
        if self.coalescing && !stream.is_coalescing() {
            self.coalescing = false;
            if n < COALESCE_BYTES / 8 {
                self.run = n;
            }
        }
        if !self.coalescing && self.run >= COALESCE_AFTER {
            self.coalescing = stream.coalesce_reads(COALESCE_BYTES);
            if self.coalescing {
                hoop_core::metrics::metrics().coalesced_reads_total.inc();
            }
        }
    }
}

/// Which leg failed.
#[derive(Debug, thiserror::Error)]
pub enum DuplexError {
    /// Reading from or writing to the client failed.
    #[error("client: {0}")]
    Client(#[source] std::io::Error),
    /// Reading from or writing to the server failed.
    #[error("server: {0}")]
    Server(#[source] std::io::Error),
}

/// What a [`Duplex::poll_legs`] call found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Readiness {
    /// New client bytes (or its end of stream).
    pub client: bool,
    /// New server bytes (or its end of stream).
    pub server: bool,
}

/// Both legs of a session: streams, read buffers (kept across reads, so a
/// cancelled poll loses nothing), queues and wakers.
pub struct Duplex {
    /// The client's stream.
    pub client: Stream,
    /// The server's stream.
    pub server: Stream,
    /// Client bytes read and not yet processed.
    pub client_buf: BytesMut,
    /// Server bytes read and not yet processed.
    pub server_buf: BytesMut,
    /// Bytes queued towards the client.
    pub to_client: OutQueue,
    /// Bytes queued towards the server.
    pub to_server: OutQueue,
    /// The client stream's waker.
    pub client_leg: Leg,
    /// The server stream's waker.
    pub server_leg: Leg,
    /// The client closed its side.
    pub client_eof: bool,
    /// The server closed its side.
    pub server_eof: bool,
    /// The task's waker as the streams' wakers reach it.
    task_waker: TaskWaker,
    from_client: prometheus::IntCounter,
    from_server: prometheus::IntCounter,
}

impl Duplex {
    /// Both legs, with `client_buf` holding what the client sent before the
    /// relay started.
    pub fn new(client: Stream, server: Stream, client_buf: BytesMut) -> Self {
        let task_waker = TaskWaker::default();
        let m = hoop_core::metrics::metrics();
        Self {
            client,
            server,
            client_buf,
            server_buf: BytesMut::with_capacity(READ_CHUNK),
            to_client: OutQueue::default(),
            to_server: OutQueue::default(),
            client_leg: Leg::new(&task_waker),
            server_leg: Leg::new(&task_waker),
            client_eof: false,
            server_eof: false,
            task_waker,
            from_client: m
                .proxied_bytes_total
                .with_label_values(&["client_to_server"]),
            from_server: m
                .proxied_bytes_total
                .with_label_values(&["server_to_client"]),
        }
    }

    /// Whether bulk transfers coalesce their reads (`proxy.coalesce_bulk_reads`;
    /// on by default). Turning it off leaves a leg that coalesces now to
    /// the event loop's deadline, after which it is read as before.
    pub fn coalesce_bulk_reads(&mut self, on: bool) {
        self.client_leg.bulk.enable(on);
        self.server_leg.bulk.enable(on);
    }

    /// Writes what is queued towards both legs, then reads each leg that
    /// may have bytes, while the queue towards the other leg is below
    /// [`HIGH_WATER`] (and, for the client, while `client_buf` is below
    /// `client_limit`). Registers nothing with the task's own waker: call
    /// [`Duplex::park`] when nothing at all is ready.
    pub fn poll_legs(&mut self, client_limit: usize) -> Result<Readiness, DuplexError> {
        let poll_server = self.server_leg.poll_read_now();
        let poll_client = self.client_leg.poll_read_now();
        let mut server_cx = Context::from_waker(&self.server_leg.waker);
        let mut client_cx = Context::from_waker(&self.client_leg.waker);
        if let Poll::Ready(Err(e)) = self.to_server.poll_drain(&mut self.server, &mut server_cx) {
            return Err(DuplexError::Server(e));
        }
        if let Poll::Ready(Err(e)) = self.to_client.poll_drain(&mut self.client, &mut client_cx) {
            return Err(DuplexError::Client(e));
        }
        let mut ready = Readiness::default();
        if poll_server && !self.server_eof && self.to_client.len < HIGH_WATER {
            reserve(&mut self.server_buf);
            match self
                .server
                .poll_read_buf(&mut server_cx, &mut self.server_buf)
            {
                Poll::Ready(Ok(ReadBytes { n: 0, .. })) => {
                    self.server_eof = true;
                    ready.server = true;
                }
                Poll::Ready(Ok(ReadBytes { n, parked })) => {
                    self.from_server.inc_by(n as u64);
                    self.server_leg.parked = parked;
                    self.client_leg.bulk.other_leg_sent();
                    self.server_leg.bulk.read(&mut self.server, n);
                    ready.server = true;
                }
                Poll::Ready(Err(e)) => return Err(DuplexError::Server(e)),
                Poll::Pending => self.server_leg.parked = true,
            }
        }
        if poll_client
            && !self.client_eof
            && self.to_server.len < HIGH_WATER
            && self.client_buf.len() < client_limit
        {
            reserve(&mut self.client_buf);
            match self
                .client
                .poll_read_buf(&mut client_cx, &mut self.client_buf)
            {
                Poll::Ready(Ok(ReadBytes { n: 0, .. })) => {
                    self.client_eof = true;
                    ready.client = true;
                }
                Poll::Ready(Ok(ReadBytes { n, parked })) => {
                    self.from_client.inc_by(n as u64);
                    self.client_leg.parked = parked;
                    self.server_leg.bulk.other_leg_sent();
                    self.client_leg.bulk.read(&mut self.client, n);
                    ready.client = true;
                }
                Poll::Ready(Err(e)) => return Err(DuplexError::Client(e)),
                Poll::Pending => self.client_leg.parked = true,
            }
        }
        Ok(ready)
    }

    /// Registers the task to be woken when either stream is, when a poll
    /// found nothing ready. A stream woken before the registration wakes
    /// the task at once, so no wake-up is missed.
    pub fn park(&self, cx: &Context<'_>) {
        self.task_waker.register(cx.waker());
        if self.client_leg.woken() || self.server_leg.woken() {
            cx.waker().wake_by_ref();
        }
    }

    /// Forwards the first `run` bytes of the client buffer to the server
    /// (see [`OutQueue::forward`]).
    pub fn forward_to_server(&mut self, buf: &mut BytesMut, run: usize) -> Result<(), DuplexError> {
        self.to_server
            .forward(&mut self.server, &self.server_leg.waker, buf, run)
            .map_err(DuplexError::Server)
    }

    /// Forwards the first `run` bytes of the server buffer to the client
    /// (see [`OutQueue::forward`]).
    pub fn forward_to_client(&mut self, buf: &mut BytesMut, run: usize) -> Result<(), DuplexError> {
        self.to_client
            .forward(&mut self.client, &self.client_leg.waker, buf, run)
            .map_err(DuplexError::Client)
    }

    /// Delivers what is queued (bounded in time), then closes both legs.
    pub async fn finish(&mut self) {
        let drain = async {
            poll_fn(|cx| {
                let a = self.to_server.poll_drain(&mut self.server, cx);
                let b = self.to_client.poll_drain(&mut self.client, cx);
                if a.is_ready() && b.is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            let _ = self.client.shutdown().await;
            let _ = self.server.shutdown().await;
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::event_loop::{
        LoopStream, spawn,
        tests::{pair, within},
    };

    /// A bulk reply (8 MiB after a one-line request) crosses a duplex
    /// byte for byte, its last bytes (below the mark) arrive, and the next
    /// request and its short reply are relayed as before. Whether the server
    /// leg's reads coalesced on the way.
    async fn bulk_reply_through_a_duplex(coalesce: bool) -> bool {
        let (client_side, mut client) = pair().await;
        let (server_side, mut server) = pair().await;
        let client_side = Stream::Loop(LoopStream::from_tokio(client_side).expect("loop"));
        let server_side = Stream::Loop(LoopStream::from_tokio(server_side).expect("loop"));
        // The relay: everything from each leg to the other, until the client
        // closes; notes whether the server leg ever coalesced.
        let relay = spawn(async move {
            let mut io = Duplex::new(client_side, server_side, BytesMut::new());
            io.coalesce_bulk_reads(coalesce);
            let mut coalesced = false;
            poll_fn(|cx| {
                loop {
                    let ready = match io.poll_legs(usize::MAX) {
                        Ok(ready) => ready,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    coalesced |= io.server_leg.bulk.coalescing();
                    if io.client_eof {
                        return Poll::Ready(Ok(coalesced));
                    }
                    if ready.server {
                        let mut buf = std::mem::take(&mut io.server_buf);
                        let run = buf.len();
                        io.forward_to_client(&mut buf, run)?;
                        io.server_buf = buf;
                    }
                    if ready.client {
                        let mut buf = std::mem::take(&mut io.client_buf);
                        let run = buf.len();
                        io.forward_to_server(&mut buf, run)?;
                        io.client_buf = buf;
                    }
                    if !ready.server && !ready.client {
                        io.park(cx);
                        return Poll::Pending;
                    }
                }
            })
            .await
        });
        let reply: Vec<u8> = (0..8 * 1024 * 1024 + 777u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let served = reply.clone();
        let upstream = tokio::spawn(async move {
            let mut request = [0u8; 5];
            server.read_exact(&mut request).await?;
            assert_eq!(&request, b"query");
            // In 8 KiB sends, as PostgreSQL sends a result.
            for chunk in served.chunks(8192) {
                server.write_all(chunk).await?;
            }
            server.read_exact(&mut request).await?;
            assert_eq!(&request, b"again");
            server.write_all(b"short").await?;
            Ok::<_, std::io::Error>(server)
        });
        client.write_all(b"query").await.expect("write");
        let mut got = vec![0u8; reply.len()];
        within(client.read_exact(&mut got))
            .await
            .expect("the whole reply in time")
            .expect("read");
        assert!(got == reply, "the reply changed on the way");
        let started = Instant::now();
        client.write_all(b"again").await.expect("write");
        let mut short = [0u8; 5];
        within(client.read_exact(&mut short))
            .await
            .expect("the short reply in time")
            .expect("read");
        assert_eq!(&short, b"short");
        let waited = started.elapsed();
        let server = within(upstream).await.expect("in time").expect("task");
        drop(server);
        drop(client);
        let coalesced = within(relay)
            .await
            .expect("relay ended")
            .expect("relay ran")
            .expect("relay io");
        // The request reset the run: its reply was read at once, not at a
        // deadline (generous: only a stuck deadline takes seconds).
        assert!(
            waited < Duration::from_secs(1),
            "short reply took {waited:?}"
        );
        coalesced
    }

    #[tokio::test]
    async fn a_bulk_reply_coalesces_and_its_tail_and_the_next_reply_arrive() {
        let counted = || hoop_core::metrics::metrics().coalesced_reads_total.get();
        let before = counted();
        assert!(
            bulk_reply_through_a_duplex(true).await,
            "the server leg never coalesced its reads"
        );
        assert!(
            counted() > before,
            "hoop_coalesced_reads_total did not count it"
        );
    }

    #[tokio::test]
    async fn with_coalescing_off_a_bulk_reply_is_read_as_it_comes() {
        assert!(
            !bulk_reply_through_a_duplex(false).await,
            "the server leg coalesced with coalescing off"
        );
    }
}
