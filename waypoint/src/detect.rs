//! Protocol detection on a freshly accepted tunnel: HTTP/2 prior knowledge (the connection
//! preface), an HTTP/1.x request line, or anything else (opaque TCP).
//!
//! Used for ports whose protocol is not declared, and — with [`Detected::Opaque`] mapped to
//! HTTP/1.1 — on declared HTTP ports to choose between h1 and h2c. The bytes read are handed
//! back so they can be replayed with [`PrefixedIo`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface a client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A request line longer than this is not worth waiting for: treat the stream as opaque.
const MAX_REQUEST_LINE: usize = 8192;

/// What the first bytes of a stream look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.0 or HTTP/1.1 request line.
    Http1,
    /// The HTTP/2 preface.
    Http2,
    /// Anything else, including silence until the timeout (server-first protocols) and EOF.
    Opaque,
}

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct PrefixedIo<T> {
    prefix: Bytes,
    inner: T,
}

/// Classifies what a buffer holds so far; `None` means more bytes are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    let preface_len = buf.len().min(H2_PREFACE.len());
    if buf[..preface_len] == H2_PREFACE[..preface_len] {
        return (buf.len() >= H2_PREFACE.len()).then_some(Detected::Http2);
    }
    // method SP request-target SP HTTP/1.x CRLF
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len == buf.len() {
        return (buf.len() > 16).then_some(Detected::Opaque);
    }
    if method_len == 0 || buf[method_len] != b' ' {
        return Some(Detected::Opaque);
    }
    let Some(line_end) = buf.iter().position(|&b| b == b'\n') else {
        let has_control = buf.iter().any(|&b| b < 0x20 && b != b'\r');
        return (has_control || buf.len() > MAX_REQUEST_LINE).then_some(Detected::Opaque);
    };
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Some(Detected::Http1)
    } else {
        Some(Detected::Opaque)
    }
}

/// Reads from `io` until the protocol is clear, for at most `timeout`; returns the verdict
/// and every byte read.
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    timeout: Duration,
) -> io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !buf.is_empty()
            && let Some(detected) = classify(&buf)
        {
            return Ok((detected, buf.freeze()));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) | Ok(Ok(0)) => return Ok((Detected::Opaque, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(err),
        }
    }
}

impl<T> PrefixedIo<T> {
    /// `inner`, whose reads return `prefix` first.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(&[u8], Option<Detected>)] = &[
            (b"GET / HTTP/1.1\r\n", Some(Detected::Http1)),
            (b"POST /a?b=c HTTP/1.0\n", Some(Detected::Http1)),
            (b"GET / HTTP/1.1", None),
            (b"GE", None),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Detected::Http2)),
            (b"PRI * HTTP/2.0\r\n", None),
            (b"GET / HTTP/2.0\r\n", Some(Detected::Opaque)),
            (b"\x16\x03\x01\x02\x00", Some(Detected::Opaque)),
            (b"get / HTTP/1.1\r\n", Some(Detected::Opaque)),
            (b"GET\t/", Some(Detected::Opaque)),
            (b"SSH-2.0-OpenSSH\r\n", Some(Detected::Opaque)),
            (b"GET /\x00", Some(Detected::Opaque)),
        ];
        for (input, expected) in cases {
            assert_eq!(
                classify(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[tokio::test]
    async fn detects_and_replays() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut server = server;
        let (detected, prefix) = detect(&mut server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(detected, Detected::Http1);
        let mut replay = PrefixedIo::new(prefix, server);
        let mut all = vec![0; 27];
        replay.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[tokio::test]
    async fn silence_is_opaque_after_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (detected, prefix) = detect(&mut server, Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!(detected, Detected::Opaque);
        assert!(prefix.is_empty());
    }
}
