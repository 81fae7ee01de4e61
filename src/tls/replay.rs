//! A stream that first yields bytes already read from it (a prefix), then
//! reads on from the stream itself. Used after sniffing a connection's first
//! bytes and after abandoning a login-only TLS session, so no byte is lost.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Prefix bytes, then the inner stream. Writes go straight to the stream.
#[derive(Debug)]
pub struct Replay<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Replay<S> {
    /// A stream that yields `prefix` before reading from `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Replay {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The prefix bytes not yet read.
    pub fn pending(&self) -> &[u8] {
        self.prefix.get(self.pos..).unwrap_or_default()
    }

    /// Puts `bytes` in front of whatever is still to be read.
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut prefix = Vec::with_capacity(bytes.len() + self.pending().len());
        prefix.extend_from_slice(bytes);
        prefix.extend_from_slice(self.pending());

        self.prefix = prefix;
        self.pos = 0;
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The unread prefix and the stream.
    pub fn into_parts(mut self) -> (Vec<u8>, S) {
        self.prefix.drain(..self.pos);
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let pending = this.pending();
        if pending.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }

        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
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
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn prefix_then_stream() {
        let mut replay = Replay::new(b"abc".to_vec(), &b"def"[..]);

        let mut one = [0u8; 2];
        replay.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"ab");

        replay.unread(b"xy");
        assert_eq!(replay.pending(), b"xyc");

        let mut rest = Vec::new();
        replay.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"xycdef");
        assert!(replay.pending().is_empty());
    }

    #[test]
    fn into_parts_returns_only_unread_bytes() {
        let mut replay = Replay::new(b"abc".to_vec(), ());
        replay.pos = 1;

        let (prefix, ()) = replay.into_parts();
        assert_eq!(prefix, b"bc");
    }
}
