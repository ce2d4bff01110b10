//! A stream that refuses a request for the password in cleartext.
//!
//! The catalog's side connection logs in through `tokio-postgres`, which
//! answers AuthenticationCleartextPassword with the password whatever the
//! transport. For a session's injected credential that would undo the
//! injected login's rule (no cleartext over a leg without TLS unless the
//! entry allows it), so the side connection's reads are watched until the
//! login ends: a cleartext request fails the read, before `tokio-postgres`
//! could answer it.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Server bytes kept while the login is watched: its messages are short.
const MAX_WATCHED: usize = 64 * 1024;

/// A stream whose server messages are watched until the login ends.
pub struct GuardedStream<S> {
    inner: S,
    /// Server bytes not yet split into messages; `None` once done watching.
    watched: Option<Vec<u8>>,
}

impl<S> GuardedStream<S> {
    /// Wraps `inner`; with `refuse_cleartext` false nothing is watched.
    pub fn new(inner: S, refuse_cleartext: bool) -> Self {
        Self {
            inner,
            watched: refuse_cleartext.then(Vec::new),
        }
    }
}

/// What the messages seen so far say.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Still logging in.
    Pending,
    /// AuthenticationOk or an ErrorResponse: the login is over.
    Done,
    /// AuthenticationCleartextPassword.
    Cleartext,
}

/// Reads whole messages off the front of `buf`.
fn inspect(buf: &mut Vec<u8>) -> Seen {
    loop {
        if buf.len() < 5 {
            return Seen::Pending;
        }
        let tag = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if tag == b'R' && buf.len() >= 9 {
            match i32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) {
                0 => return Seen::Done,
                3 => return Seen::Cleartext,
                _ => {}
            }
        }
        if tag == b'E' {
            return Seen::Done;
        }
        if len < 4 || buf.len() < len + 1 {
            return Seen::Pending;
        }
        buf.drain(..=len);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(watched)) = (&result, this.watched.as_mut()) {
            watched.extend_from_slice(&buf.filled()[before..]);
            match inspect(watched) {
                Seen::Pending if watched.len() > MAX_WATCHED => {
                    return Poll::Ready(Err(io::Error::other(
                        "the server's login messages are too long",
                    )));
                }
                Seen::Pending => {}
                Seen::Done => this.watched = None,
                Seen::Cleartext => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "the server asked for the injected credential's password in cleartext \
                         over a connection without TLS; hoop refused to send it",
                    )));
                }
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&(8 + extra.len() as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    #[test]
    fn messages_are_read_across_reads() {
        let mut buf = Vec::new();
        let md5 = auth(5, &[1, 2, 3, 4]);
        buf.extend_from_slice(&md5[..3]);
        assert_eq!(inspect(&mut buf), Seen::Pending);
        buf.extend_from_slice(&md5[3..]);
        assert_eq!(inspect(&mut buf), Seen::Pending);
        assert!(buf.is_empty());
        buf.extend_from_slice(&auth(0, &[]));
        assert_eq!(inspect(&mut buf), Seen::Done);
        let mut buf = auth(3, &[]);
        assert_eq!(inspect(&mut buf), Seen::Cleartext);
    }

    #[tokio::test]
    async fn a_cleartext_request_fails_the_read_only_when_refused() {
        for refuse in [true, false] {
            let (mut server, client) = tokio::io::duplex(1024);
            let mut guarded = GuardedStream::new(client, refuse);
            server.write_all(&auth(3, &[])).await.unwrap();
            let mut got = [0u8; 9];
            let read = guarded.read_exact(&mut got).await;
            assert_eq!(read.is_err(), refuse);
        }
        // After AuthenticationOk, nothing is watched any more.
        let (mut server, client) = tokio::io::duplex(1024);
        let mut guarded = GuardedStream::new(client, true);
        server.write_all(&auth(0, &[])).await.unwrap();
        server.write_all(&auth(3, &[])).await.unwrap();
        let mut got = [0u8; 18];
        guarded.read_exact(&mut got).await.unwrap();
        assert!(guarded.watched.is_none());
    }
}
