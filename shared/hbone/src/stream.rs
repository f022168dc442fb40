//! [`HboneStream`]: one HTTP/2 CONNECT stream seen as a bidirectional byte stream.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The tunnelled bytes of one CONNECT stream, on either the client or the server side.
///
/// Reads return the peer's DATA frames and end (EOF) at the peer's END_STREAM; writes become
/// DATA frames within the peer's flow-control window; [`AsyncWrite::poll_shutdown`] sends an
/// empty DATA frame with END_STREAM, half-closing the stream. A reset stream surfaces as an
/// I/O error (`ConnectionReset`; on reads, a reset with NO_ERROR — the peer is done and
/// wants nothing more — reads as EOF, and on writes it is `BrokenPipe`). Dropping the stream
/// before both directions ended resets it.
pub struct HboneStream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received bytes not yet handed to the reader; their window is released once consumed.
    pending: Bytes,
    recv_done: bool,
    send_done: bool,
    max_write_chunk: usize,
    /// The headers of the peer's `200` (client side); empty on the server side.
    peer_headers: HeaderMap,
    /// Kept alive for as long as the stream: lets a pool count the streams on a connection.
    _slot: Option<Box<dyn Send + Sync>>,
}

impl HboneStream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream, max_write_chunk: usize) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            recv_done: false,
            send_done: false,
            max_write_chunk: max_write_chunk.max(1),
            peer_headers: HeaderMap::new(),
            _slot: None,
        }
    }

    pub(crate) fn with_peer_headers(mut self, headers: HeaderMap) -> Self {
        self.peer_headers = headers;
        self
    }

    /// On the client side, the headers of the server's `200` (e.g. `baggage` describing the
    /// destination); empty on the server side.
    pub fn peer_headers(&self) -> &HeaderMap {
        &self.peer_headers
    }

    pub(crate) fn with_slot(mut self, slot: impl Send + Sync + 'static) -> Self {
        self._slot = Some(Box::new(slot));
        self
    }

    /// Waits for the peer's RST_STREAM and turns it (or the connection's failure) into an error.
    fn poll_reset_error(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match ready!(self.send.poll_reset(cx)) {
            Ok(reason) => Poll::Ready(reset_error(reason)),
            Err(err) => Poll::Ready(h2_to_io(err)),
        }
    }
}

impl fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HboneStream")
            .field("stream_id", &self.send.stream_id())
            .field("recv_done", &self.recv_done)
            .field("send_done", &self.send_done)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for HboneStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            if this.recv_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                None => this.recv_done = true,
                // The peer closed with NO_ERROR: it has nothing more to say, like END_STREAM.
                Some(Err(err)) if err.reason() == Some(Reason::NO_ERROR) => this.recv_done = true,
                Some(Err(err)) => return Poll::Ready(Err(h2_to_io(err))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        // Window is given back only for what the reader took, so a slow reader slows the peer.
        this.recv
            .flow_control()
            .release_capacity(n)
            .map_err(h2_to_io)?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.send_done {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "HBONE stream already shut down for writing",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let wanted = buf.len().min(this.max_write_chunk);
        this.send.reserve_capacity(wanted);
        let mut available = this.send.capacity();
        if available == 0 {
            available = match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(n)) => n,
                // No capacity will ever come: the stream was reset or the connection failed.
                Some(Err(_)) | None => return this.poll_reset_error(cx).map(Err),
            };
        }
        let n = available.min(wanted);
        match this
            .send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
        {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => this.poll_reset_error(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 queues DATA frames and its connection task writes them out; nothing to do here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.send_done {
            return Poll::Ready(Ok(()));
        }
        match this.send.send_data(Bytes::new(), true) {
            Ok(()) => {
                this.send_done = true;
                Poll::Ready(Ok(()))
            }
            Err(_) => this.poll_reset_error(cx).map(Err),
        }
    }
}

/// The I/O error for a stream the peer reset.
fn reset_error(reason: Reason) -> io::Error {
    let kind = if reason == Reason::NO_ERROR {
        io::ErrorKind::BrokenPipe
    } else {
        io::ErrorKind::ConnectionReset
    };
    io::Error::new(kind, format!("HBONE stream reset by peer: {reason}"))
}

pub(crate) fn h2_to_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        return err
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    match err.reason() {
        Some(reason) if err.is_reset() => reset_error(reason),
        _ => io::Error::other(err),
    }
}
