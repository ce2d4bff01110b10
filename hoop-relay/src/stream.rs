//! A connection leg that is plaintext or TLS (terminated on the client leg,
//! originated on the upstream leg), without dynamic dispatch.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::event_loop::{LoopStream, ReadBytes};

/// One leg of a proxied connection.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP, driven by tokio.
    Plain(TcpStream),
    /// Plain TCP, driven by hoop's relay loop.
    Loop(LoopStream),
    /// TLS terminated by hoop (client leg).
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS originated by hoop (upstream leg).
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Reads into `buf`'s spare capacity: the number of bytes read, `0` at
    /// end of stream (see `tokio_util::io::poll_read_buf`). Only the relay
    /// loop's streams report a parked read; tokio's and TLS streams keep a
    /// waker only until it is woken, so they must be polled to `Pending`.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<ReadBytes>> {
        match self {
            Self::Loop(s) => s.poll_read_buf(cx, buf),
            other => tokio_util::io::poll_read_buf(Pin::new(other), cx, buf)
                .map_ok(|n| ReadBytes { n, parked: false }),
        }
    }

    /// Makes reads coalesce up to `lowat` bytes (see
    /// [`LoopStream::coalesce_reads`]); only the relay loop's streams can,
    /// the others return false and read as before.
    pub fn coalesce_reads(&mut self, lowat: usize) -> bool {
        match self {
            Self::Loop(s) => s.coalesce_reads(lowat),
            _ => false,
        }
    }

    /// Whether reads coalesce now.
    pub fn is_coalescing(&mut self) -> bool {
        match self {
            Self::Loop(s) => s.is_coalescing(),
            _ => false,
        }
    }

    /// Whether written bytes can wait in the stream (TLS records); plain
    /// TCP sends them as it writes them.
    pub fn buffers_writes(&self) -> bool {
        matches!(self, Self::ServerTls(_) | Self::ClientTls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Loop(s) => Pin::new(s).poll_read(cx, buf),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Loop(s) => Pin::new(s).poll_write(cx, buf),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Loop(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Loop(s) => s.is_write_vectored(),
            Self::ServerTls(s) => s.is_write_vectored(),
            Self::ClientTls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Loop(s) => Pin::new(s).poll_flush(cx),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Loop(s) => Pin::new(s).poll_shutdown(cx),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
