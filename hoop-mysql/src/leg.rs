//! One side of a session: its socket, the bytes read and not yet decoded
//! (kept across reads, so a cancelled read loses nothing), and the bytes
//! waiting to be written.

use std::{pin::Pin, task::Poll};

use bytes::{Buf, BufMut, BytesMut};
use hoop_proto_mysql::frame::{
    Direction, FrameError, HEADER_LEN, LogicalPacket, MAX_CHUNK, PacketDecoder,
};
use hoop_relay::{Stream, io::BulkReads};
use tokio::io::AsyncWrite;

/// Write what is queued once this much is.
const FLUSH_AT: usize = 64 * 1024;
/// The write queue keeps its buffer from one flush to the next (no
/// allocation per reply) unless a large packet grew it past this.
const KEEP_OUT: usize = 1024 * 1024;

/// Why reading a packet failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    Frame(FrameError),
}

/// One side of a session.
pub(crate) struct Leg {
    /// `None` only while its socket is being upgraded to TLS.
    stream: Option<Stream>,
    buf: BytesMut,
    decoder: PacketDecoder,
    out: BytesMut,
    /// Whether this leg's reads coalesce (on the relay loop only, when the
    /// session is moved there).
    bulk: BulkReads,
}

impl Leg {
    pub fn new(stream: Stream, direction: Direction, max_packet: usize) -> Self {
        Self {
            stream: Some(stream),
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: PacketDecoder::new(direction, max_packet),
            out: BytesMut::new(),
            bulk: BulkReads::new(false),
        }
    }

    /// A whole logical packet already read, if there is one.
    pub fn decoded(&mut self) -> Result<Option<LogicalPacket>, ReadError> {
        self.decoder.decode(&mut self.buf).map_err(ReadError::Frame)
    }

    /// The next packet when it is already read whole as a single chunk
    /// within the size limit: its sequence id and its payload, left in the
    /// buffer (see [`Self::relay_single`]). `None` for anything else, which
    /// [`Self::decoded`] then decodes (and refuses) as usual.
    pub fn peek_single(&self) -> Option<(u8, &[u8])> {
        let b = &self.buf[..];
        let header = b.get(..HEADER_LEN)?;
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        if len >= MAX_CHUNK || len > self.decoder.max_payload() {
            return None;
        }
        Some((header[3], b.get(HEADER_LEN..HEADER_LEN + len)?))
    }

    /// Moves the packet of `payload_len` bytes that [`Self::peek_single`]
    /// returned to `to`'s write queue, numbered `seq` (one copy of its raw
    /// bytes when its id already is `seq`); returns the id after it.
    pub fn relay_single(&mut self, to: &mut Leg, seq: u8, payload_len: usize) -> u8 {
        let end = HEADER_LEN + payload_len;
        let raw = &self.buf[..end];
        if raw[3] == seq {
            to.out.extend_from_slice(raw);
        } else {
            to.out.reserve(end);
            to.out.extend_from_slice(&raw[..3]);
            to.out.put_u8(seq);
            to.out.extend_from_slice(&raw[HEADER_LEN..]);
        }
        self.buf.advance(end);
        seq.wrapping_add(1)
    }

    /// The bytes read and not decoded yet, and the largest payload the
    /// leg takes (for `Session::plain_run`).
    pub fn buffered(&self) -> (&[u8], usize) {
        (&self.buf[..], self.decoder.max_payload())
    }

    /// Moves the first `bytes` of the read buffer, `packets` whole packets
    /// that `Session::plain_run` accounted for, to `to`'s write queue,
    /// numbered from `seq` (one copy when the first already is `seq`, as
    /// the rest then are); returns the id after them.
    pub fn relay_run(&mut self, to: &mut Leg, seq: u8, bytes: usize, packets: usize) -> u8 {
        let raw = &self.buf[..bytes];
        let start = to.out.len();
        to.out.extend_from_slice(raw);
        let shift = seq.wrapping_sub(raw[3]);
        if shift != 0 {
            let out = &mut to.out[start..];
            let mut at = 0;
            while at + HEADER_LEN <= out.len() {
                out[at + 3] = out[at + 3].wrapping_add(shift);
                let len = usize::from(out[at])
                    | usize::from(out[at + 1]) << 8
                    | usize::from(out[at + 2]) << 16;
                at += HEADER_LEN + len;
            }
        }
        self.buf.advance(bytes);
        seq.wrapping_add((packets % 256) as u8)
    }

    /// Takes the stream out (to upgrade it to TLS).
    pub fn take_stream(&mut self) -> Option<Stream> {
        self.stream.take()
    }

    /// Puts a stream in.
    pub fn set_stream(&mut self, stream: Stream) {
        self.stream = Some(stream);
    }

    /// Whether a bulk transfer from this leg coalesces its reads
    /// (`proxy.coalesce_bulk_reads`; see `hoop_relay::io`).
    pub fn coalesce_bulk_reads(&mut self, on: bool) {
        self.bulk.enable(on);
    }

    /// Takes the bytes read and not decoded yet (the start of a TLS
    /// handshake that followed an SSLRequest in the same read).
    pub fn take_buffered(&mut self) -> BytesMut {
        self.buf.split()
    }

    /// Whether bytes were read that are not decoded yet.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next logical packet; `None` at end of stream. Cancel-safe.
    pub async fn read(&mut self) -> Result<Option<LogicalPacket>, ReadError> {
        loop {
            if let Some(p) = self.decoded()? {
                return Ok(Some(p));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes into the buffer without decoding them; `false` at
    /// end of stream. Cancel-safe.
    pub async fn fill(&mut self) -> Result<bool, ReadError> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| ReadError::Io(std::io::ErrorKind::NotConnected.into()))?;
        // Straight into the buffer's spare capacity (on the relay loop, one
        // `recv`), without tokio's `ReadBuf` in between.
        let read = std::future::poll_fn(|cx| stream.poll_read_buf(cx, &mut self.buf))
            .await
            .map_err(ReadError::Io)?;
        self.bulk.read(stream, read.n);
        Ok(read.n > 0)
    }

    /// Queues raw bytes (whole packets) to write.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Queues one packet with sequence id `seq`; returns the id after it.
    pub fn queue_packet(&mut self, seq: u8, payload: &[u8]) -> u8 {
        hoop_proto_mysql::frame::encode_packet(&mut self.out, seq, payload)
    }

    /// How many bytes are queued.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Drops what was queued after the first `len` bytes.
    pub fn unqueue_after(&mut self, len: usize) {
        self.out.truncate(len);
    }

    /// Whether enough is queued to write it now.
    pub fn should_flush(&self) -> bool {
        self.out.len() >= FLUSH_AT
    }

    /// Writes what is queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
            // `write_all`, without its future in between.
            let out = &self.out[..];
            let mut at = 0;
            let written = std::future::poll_fn(|cx| {
                while at < out.len() {
                    match std::task::ready!(Pin::new(&mut *stream).poll_write(cx, &out[at..])) {
                        Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                        Ok(n) => at += n,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Poll::Ready(Ok(()))
            })
            .await;
            // What was sent to this leg (a command, or rows) starts the run
            // of its reads again.
            self.bulk.other_leg_sent();
            if written.is_err() || self.out.capacity() > KEEP_OUT {
                self.out = BytesMut::new();
            } else {
                self.out.clear();
            }
            // After an error nothing of a half-written queue is sent again.
            written?;
        }
        Ok(())
    }
}
