//! Framing: packets, sequence ids, and payloads of 16 MiB and more.
//!
//! Every packet is `len:u24le seq:u8 payload`. A payload of 0xFFFFFF bytes
//! or more is split into chunks of exactly 0xFFFFFF bytes followed by a
//! shorter one; a payload that is an exact multiple of 0xFFFFFF ends with
//! an empty chunk. Each chunk takes the next sequence id (wrapping at 255).
//! A logical packet is the concatenation of its chunks' payloads.
//!
//! Two decoders work on a growing read buffer (a `BytesMut` that lives
//! across reads, so a cancelled read loses nothing; partial packets stay in
//! the buffer until the rest arrives):
//! - [`PacketDecoder`] returns whole logical packets, reassembled when they
//!   span chunks. The logical length is checked against the configured
//!   maximum as each chunk header is seen, *before* any memory is reserved.
//! - [`ChunkDecoder`] returns physical packets one at a time, for a driver
//!   that streams large rows through without reassembling them; it checks
//!   the same maximum and the sequence order across chunks.
//!
//! Sequence ids: the greeting is 0, and every command restarts at 0; a
//! reply continues from the last id of what it answers. Wherever hoop
//! changes the number of packets on one leg (TLS on one leg only, a
//! rewritten row that needs another chunk, an injected progress or error
//! packet) it renumbers the packets that follow with [`renumber`] or
//! [`LogicalPacket::with_first_seq`], tracking each leg with a [`Sequence`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::put_u24;

/// Bytes in a packet header (3-byte length, 1-byte sequence id).
pub const HEADER_LEN: usize = 4;
/// The largest chunk payload; a chunk this long means "more follows".
pub const MAX_CHUNK: usize = 0xFF_FFFF;
/// The largest logical packet MySQL and MariaDB accept (`max_allowed_packet`
/// is capped at 1 GiB), a sensible upper bound for a configured maximum.
pub const MAX_ALLOWED_PACKET: usize = 1 << 30;

/// Which way a packet travels. The same first byte means different things
/// each way (0x03 is COM_QUERY from the client and a 3-column result from
/// the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    ClientToServer,
    /// Server to client.
    ServerToClient,
}

impl Direction {
    /// `client` or `server`: who sent it.
    pub fn sender(self) -> &'static str {
        match self {
            Self::ClientToServer => "client",
            Self::ServerToClient => "server",
        }
    }
}

/// A framing violation; the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The logical payload (the sum of its chunks so far) exceeds the maximum.
    #[error("packet from the {sender} of at least {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// `client` or `server`.
        sender: &'static str,
        /// The logical length declared so far.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// A chunk of a multi-chunk packet does not carry the next sequence id.
    #[error("packet from the {sender} out of order: sequence id {got}, expected {expected}")]
    OutOfOrder {
        /// `client` or `server`.
        sender: &'static str,
        /// The id the chunk should carry.
        expected: u8,
        /// The id it carries.
        got: u8,
    },
    /// Bytes given to [`renumber`] are not whole packets.
    #[error("not a sequence of whole packets: {detail}")]
    Malformed {
        /// What is wrong.
        detail: &'static str,
    },
}

/// The number of chunks a payload of `len` bytes is sent in.
pub fn chunk_count(len: usize) -> usize {
    len / MAX_CHUNK + 1
}

/// The sequence id after a packet of `len` payload bytes that starts at `seq`.
pub fn seq_after(seq: u8, len: usize) -> u8 {
    // Chunk counts wrap like the ids themselves.
    seq.wrapping_add((chunk_count(len) % 256) as u8)
}

fn header(buf: &[u8], at: usize) -> Option<(usize, u8)> {
    let h = buf.get(at..at + HEADER_LEN)?;
    Some((u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize, h[3]))
}

/// One physical packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Who sent it.
    pub direction: Direction,
    /// Its sequence id.
    pub seq: u8,
    /// The packet as received: header and payload.
    pub raw: Bytes,
    /// Whether it starts a logical packet.
    pub first: bool,
    /// Whether it ends one (its payload is shorter than [`MAX_CHUNK`]).
    pub last: bool,
}

impl Chunk {
    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        self.raw.get(HEADER_LEN..).unwrap_or_default()
    }
}

/// One logical packet: one chunk, or several reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalPacket {
    /// Who sent it.
    pub direction: Direction,
    /// The sequence id of its first chunk.
    pub seq: u8,
    /// How many chunks it came in.
    pub chunks: usize,
    /// Every chunk as received, headers included (what a relay forwards).
    pub raw: Bytes,
    /// The logical payload: a slice of `raw` for a single chunk, a copy
    /// when chunks were joined.
    pub payload: Bytes,
}

impl LogicalPacket {
    /// The sequence id of the last chunk.
    pub fn last_seq(&self) -> u8 {
        self.seq.wrapping_add(((self.chunks - 1) % 256) as u8)
    }

    /// The sequence id the next packet in this exchange carries.
    pub fn next_seq(&self) -> u8 {
        self.seq.wrapping_add((self.chunks % 256) as u8)
    }

    /// The raw bytes with the chunks renumbered from `first_seq` (shared,
    /// not copied, when the ids already match).
    pub fn with_first_seq(&self, first_seq: u8) -> Bytes {
        if first_seq == self.seq {
            return self.raw.clone();
        }
        let mut raw = BytesMut::from(&self.raw[..]);
        // `raw` is whole chunks by construction.
        let _ = renumber(&mut raw, first_seq);
        raw.freeze()
    }
}

/// Decoder of whole logical packets for one direction of one connection.
#[derive(Debug, Clone, Copy)]
pub struct PacketDecoder {
    direction: Direction,
    max_payload: usize,
}

impl PacketDecoder {
    /// A decoder for packets sent in `direction`, rejecting any logical
    /// payload longer than `max_payload`.
    pub fn new(direction: Direction, max_payload: usize) -> Self {
        Self {
            direction,
            max_payload,
        }
    }

    /// The configured maximum.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Splits one whole logical packet off the front of `buf`, if there is
    /// one. When there is not, `buf` is left as it was (with room reserved
    /// for the chunk being waited for) and `None` is returned.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<LogicalPacket>, FrameError> {
        let sender = self.direction.sender();
        let mut at = 0;
        let mut total: u64 = 0;
        let mut chunks = 0usize;
        let mut first_seq = 0u8;
        loop {
            let Some((len, seq)) = header(buf, at) else {
                buf.reserve(at + HEADER_LEN - buf.len());
                return Ok(None);
            };
            if chunks == 0 {
                first_seq = seq;
            } else {
                let expected = first_seq.wrapping_add((chunks % 256) as u8);
                if seq != expected {
                    return Err(FrameError::OutOfOrder {
                        sender,
                        expected,
                        got: seq,
                    });
                }
            }
            total += len as u64;
            if total > self.max_payload as u64 {
                return Err(FrameError::TooLarge {
                    sender,
                    len: total,
                    max: self.max_payload,
                });
            }
            let end = at + HEADER_LEN + len;
            if buf.len() < end {
                // Bounded: `len` was checked against the maximum above.
                buf.reserve(end - buf.len());
                return Ok(None);
            }
            chunks += 1;
            at = end;
            if len < MAX_CHUNK {
                break;
            }
        }
        let raw = buf.split_to(at).freeze();
        let payload = if chunks == 1 {
            raw.slice(HEADER_LEN..)
        } else {
            // Checked against the maximum above.
            let mut joined = BytesMut::with_capacity(total as usize);
            let mut at = 0;
            while let Some((len, _)) = header(&raw, at) {
                joined.put_slice(&raw[at + HEADER_LEN..at + HEADER_LEN + len]);
                at += HEADER_LEN + len;
            }
            joined.freeze()
        };
        Ok(Some(LogicalPacket {
            direction: self.direction,
            seq: first_seq,
            chunks,
            raw,
            payload,
        }))
    }
}

/// Decoder of physical packets for one direction, keeping track of where a
/// multi-chunk logical packet is, so a driver can stream chunks through
/// without reassembling them.
#[derive(Debug, Clone)]
pub struct ChunkDecoder {
    direction: Direction,
    max_payload: usize,
    /// Within a logical packet: the next chunk's id and the length so far.
    continuing: Option<(u8, u64)>,
}

impl ChunkDecoder {
    /// A decoder for packets sent in `direction`, rejecting any logical
    /// payload longer than `max_payload`.
    pub fn new(direction: Direction, max_payload: usize) -> Self {
        Self {
            direction,
            max_payload,
            continuing: None,
        }
    }

    /// Whether the last chunk returned did not end its logical packet.
    pub fn in_logical_packet(&self) -> bool {
        self.continuing.is_some()
    }

    /// Splits one physical packet off the front of `buf`, if it is whole.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, FrameError> {
        let sender = self.direction.sender();
        let Some((len, seq)) = header(buf, 0) else {
            buf.reserve(HEADER_LEN - buf.len());
            return Ok(None);
        };
        let (first, so_far) = match self.continuing {
            Some((expected, so_far)) => {
                if seq != expected {
                    return Err(FrameError::OutOfOrder {
                        sender,
                        expected,
                        got: seq,
                    });
                }
                (false, so_far)
            }
            None => (true, 0),
        };
        let total = so_far + len as u64;
        if total > self.max_payload as u64 {
            return Err(FrameError::TooLarge {
                sender,
                len: total,
                max: self.max_payload,
            });
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        let last = len < MAX_CHUNK;
        self.continuing = (!last).then(|| (seq.wrapping_add(1), total));
        Ok(Some(Chunk {
            direction: self.direction,
            seq,
            raw: buf.split_to(HEADER_LEN + len).freeze(),
            first,
            last,
        }))
    }
}

/// Appends `payload` as packets starting at sequence id `seq`, split into
/// chunks as the protocol requires; returns the next sequence id.
pub fn encode_packet(out: &mut BytesMut, seq: u8, payload: &[u8]) -> u8 {
    out.reserve(payload.len() + HEADER_LEN * chunk_count(payload.len()));
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        put_u24(out, n as u32);
        out.put_u8(seq);
        out.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_CHUNK {
            return seq;
        }
    }
}

/// `payload` as packets starting at `seq`.
pub fn packet(seq: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode_packet(&mut out, seq, payload);
    out.freeze()
}

/// Rewrites the sequence ids of the whole packets in `raw` to count up from
/// `first_seq`; returns the id after the last one. Errors (leaving `raw`
/// partly rewritten) if `raw` does not end on a packet boundary.
pub fn renumber(raw: &mut [u8], first_seq: u8) -> Result<u8, FrameError> {
    let mut at = 0;
    let mut seq = first_seq;
    while at < raw.len() {
        let (len, _) = header(raw, at).ok_or(FrameError::Malformed {
            detail: "a truncated header",
        })?;
        if raw.len() < at + HEADER_LEN + len {
            return Err(FrameError::Malformed {
                detail: "a truncated payload",
            });
        }
        raw[at + 3] = seq;
        seq = seq.wrapping_add(1);
        at += HEADER_LEN + len;
    }
    Ok(seq)
}

/// The sequence-id counter of one leg of one exchange (a command and its
/// reply, or the connection phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sequence {
    next: u8,
}

impl Sequence {
    /// A counter whose next id is `next`.
    pub fn starting_at(next: u8) -> Self {
        Self { next }
    }

    /// The id the next packet must carry.
    pub fn next(&self) -> u8 {
        self.next
    }

    /// Back to 0, as at the start of every command.
    pub fn reset(&mut self) {
        self.next = 0;
    }

    /// Accounts for a packet of `len` payload bytes starting at the next id
    /// (its chunks take consecutive ids); returns the id it starts at.
    pub fn take(&mut self, len: usize) -> u8 {
        let seq = self.next;
        self.next = seq_after(seq, len);
        seq
    }

    /// Checks that a received packet starts at the expected id, then
    /// accounts for it.
    pub fn expect(&mut self, seq: u8, len: usize, direction: Direction) -> Result<(), FrameError> {
        if seq != self.next {
            return Err(FrameError::OutOfOrder {
                sender: direction.sender(),
                expected: self.next,
                got: seq,
            });
        }
        self.take(len);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SERVER: Direction = Direction::ServerToClient;

    #[test]
    fn decodes_whole_packets_and_waits_for_partial_ones() {
        let d = PacketDecoder::new(SERVER, 1 << 20);
        let mut buf = BytesMut::from(&b"\x01\0\0\x01\x03\x05\0\0\x02hello\x07\0"[..]);
        let p = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!((p.seq, &p.payload[..], p.chunks), (1, &b"\x03"[..], 1));
        assert_eq!(p.next_seq(), 2);
        let p = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!((p.seq, &p.payload[..]), (2, &b"hello"[..]));
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b"\x07\0", "a partial header stays in the buffer");
        buf.extend_from_slice(b"\0\x03abc");
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"defg");
        let p = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&p.payload[..], b"abcdefg");
        assert!(buf.is_empty());
    }

    fn big(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn payloads_of_16_mib_and_more_round_trip_through_chunks() {
        for len in [MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, 2 * MAX_CHUNK] {
            let payload = big(len);
            let mut out = BytesMut::new();
            let next = encode_packet(&mut out, 254, &payload);
            let chunks = chunk_count(len);
            assert_eq!(out.len(), len + HEADER_LEN * chunks);
            assert_eq!(next, 254u8.wrapping_add(chunks as u8), "ids wrap at 255");
            assert_eq!(seq_after(254, len), next);
            let wire = out.clone().freeze();

            let d = PacketDecoder::new(SERVER, 3 * MAX_CHUNK);
            // Fed in pieces, it waits and then returns the whole payload.
            let mut buf = BytesMut::new();
            for piece in wire.chunks(5_000_000) {
                assert_eq!(d.decode(&mut buf).unwrap(), None);
                buf.extend_from_slice(piece);
            }
            let p = d.decode(&mut buf).unwrap().unwrap();
            assert_eq!((p.chunks, p.seq, p.next_seq()), (chunks, 254, next));
            assert!(p.payload == payload, "length {len}");
            assert_eq!(p.raw, wire);

            let mut cd = ChunkDecoder::new(SERVER, 3 * MAX_CHUNK);
            let mut buf = BytesMut::from(&wire[..]);
            let mut joined = Vec::new();
            let mut n = 0;
            while let Some(c) = cd.decode(&mut buf).unwrap() {
                assert_eq!((c.first, c.last), (n == 0, n == chunks - 1));
                joined.extend_from_slice(c.payload());
                n += 1;
            }
            assert_eq!((n, joined == payload), (chunks, true));
            assert!(!cd.in_logical_packet());
        }
    }

    #[test]
    fn oversized_packets_are_refused_before_anything_is_reserved() {
        let d = PacketDecoder::new(SERVER, 1000);
        let mut buf = BytesMut::from(&b"\xff\xff\xff\0"[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge { len: 0xFF_FFFF, .. })
        ));
        assert!(buf.capacity() < 1000);
        let mut cd = ChunkDecoder::new(SERVER, 1000);
        assert!(cd.decode(&mut buf).is_err());
        // Chunks are summed: two chunks under the cap each, over it together.
        let d = PacketDecoder::new(SERVER, MAX_CHUNK + 10);
        let mut buf = BytesMut::from(&b"\xff\xff\xff\0"[..]);
        buf.resize(HEADER_LEN + MAX_CHUNK, 0);
        buf.extend_from_slice(b"\x20\0\0\x01");
        assert!(matches!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn chunks_out_of_order_are_errors() {
        let mut wire = BytesMut::new();
        encode_packet(&mut wire, 3, &big(MAX_CHUNK + 3));
        wire[HEADER_LEN + MAX_CHUNK + 3] = 9;
        let d = PacketDecoder::new(SERVER, 1 << 25);
        assert_eq!(
            d.decode(&mut wire.clone()),
            Err(FrameError::OutOfOrder {
                sender: "server",
                expected: 4,
                got: 9
            })
        );
        let mut cd = ChunkDecoder::new(SERVER, 1 << 25);
        assert!(cd.decode(&mut wire).unwrap().is_some());
        assert!(cd.decode(&mut wire).is_err());
    }

    #[test]
    fn renumbering_rewrites_every_chunk() {
        let mut wire = BytesMut::new();
        encode_packet(&mut wire, 0, &big(MAX_CHUNK));
        encode_packet(&mut wire, 2, b"x");
        assert_eq!(renumber(&mut wire, 255).unwrap(), 2);
        let d = PacketDecoder::new(SERVER, 1 << 25);
        let mut buf = wire.clone();
        let a = d.decode(&mut buf).unwrap().unwrap();
        let b = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!((a.seq, a.last_seq(), b.seq), (255, 0, 1));
        let moved = b.with_first_seq(7);
        assert_eq!(&moved[..], b"\x01\0\0\x07x");
        assert!(renumber(&mut wire[..10], 0).is_err());
    }

    #[test]
    fn sequence_counter() {
        let mut s = Sequence::starting_at(1);
        s.expect(1, 10, SERVER).unwrap();
        assert_eq!(s.next(), 2);
        assert!(s.expect(5, 1, SERVER).is_err());
        assert_eq!(s.take(MAX_CHUNK), 2);
        assert_eq!(s.next(), 4);
        s.reset();
        assert_eq!(s.next(), 0);
    }
}
