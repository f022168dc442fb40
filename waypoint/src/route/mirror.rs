//! Request mirroring (VirtualService `mirror`/`mirrors`, Gateway API `RequestMirror`): the
//! pieces that make a copy without touching the main request.
//!
//! The main request body streams upstream unchanged through a [`TeeBody`], which keeps a
//! bounded copy of the bytes and hands it over when the body ends; the copy is then sent to the
//! mirror in a task of its own, so the main request is never delayed or failed by a mirror.
//! A body larger than the bound is not mirrored at all (a truncated copy would be a
//! different request). [`MirrorLimiter`] caps the mirrors in flight, so a slow mirror cannot
//! pile up work: beyond the cap, copies are skipped. As Envoy and Istio do, the copy's
//! `Host`/`:authority` gets a `-shadow` suffix on its host part.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::debug;

use crate::route::filters::split_host_port;

/// Mirrored requests in flight at once, across the waypoint. With the default 64 KiB body
/// bound this caps the memory copies can hold at 16 MiB.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;

/// A body that passes every frame through and keeps a copy of the data, up to a limit.
#[derive(Debug)]
pub struct TeeBody<B> {
    inner: B,
    copy: BytesMut,
    limit: usize,
    /// Gone once the copy was delivered, or abandoned (too large, body error).
    sender: Option<oneshot::Sender<Bytes>>,
}

/// Caps the mirrored requests in flight.
#[derive(Debug, Clone)]
pub struct MirrorLimiter {
    permits: Arc<Semaphore>,
}

impl<B> TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Wraps `inner`; the receiver gets the whole body once it has streamed, or an error if
    /// the body is longer than `limit` bytes or fails.
    pub fn new(inner: B, limit: usize) -> (Self, oneshot::Receiver<Bytes>) {
        let (sender, receiver) = oneshot::channel();
        let mut tee = Self {
            inner,
            copy: BytesMut::new(),
            limit,
            sender: Some(sender),
        };
        // An empty body may never be polled at all.
        if tee.inner.is_end_stream() {
            tee.finish();
        }
        (tee, receiver)
    }

    fn finish(&mut self) {
        if let Some(sender) = self.sender.take() {
            // The mirror task may be gone (timed out); nothing to do then.
            let _ = sender.send(std::mem::take(&mut self.copy).freeze());
        }
    }

    fn abandon(&mut self, why: &str) {
        if self.sender.take().is_some() {
            debug!(why, "request not mirrored");
        }
        self.copy = BytesMut::new();
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && this.sender.is_some()
                {
                    if this.copy.len() + data.len() > this.limit {
                        this.abandon("request body larger than the mirror limit");
                    } else {
                        this.copy.extend_from_slice(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.abandon("request body failed"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl MirrorLimiter {
    /// A limiter allowing `max` mirrors in flight.
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// A permit for one mirrored request, or `None` when too many are in flight.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

impl Default for MirrorLimiter {
    fn default() -> Self {
        Self::new(MAX_MIRRORS_IN_FLIGHT)
    }
}

/// The mirror's `Host`: `-shadow` appended to the host part, the port kept.
pub fn shadow_host(authority: &str) -> String {
    if authority.starts_with('[') {
        // An IPv6 literal cannot take a suffix; keep it as it is.
        return authority.to_owned();
    }
    match split_host_port(authority) {
        (host, Some(port)) => format!("{host}-shadow:{port}"),
        (host, None) => format!("{host}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[test]
    fn shadow_hosts() {
        assert_eq!(shadow_host("cart.test"), "cart.test-shadow");
        assert_eq!(shadow_host("cart.test:8080"), "cart.test-shadow:8080");
        assert_eq!(shadow_host("[fd00::1]:80"), "[fd00::1]:80");
    }

    #[tokio::test]
    async fn tee_copies_whole_bodies() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
        ];
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let (tee, copy) = TeeBody::new(body, 64);
        let main = tee.collect().await.unwrap().to_bytes();
        assert_eq!(main, "hello world");
        assert_eq!(copy.await.unwrap(), "hello world");
    }

    #[tokio::test]
    async fn tee_gives_up_beyond_the_limit_but_passes_everything() {
        let body = Full::new(Bytes::from(vec![7u8; 100]));
        let (tee, copy) = TeeBody::new(body, 99);
        let main = tee.collect().await.unwrap().to_bytes();
        assert_eq!(main.len(), 100);
        assert!(copy.await.is_err());
    }

    #[tokio::test]
    async fn empty_bodies_are_ready_at_once() {
        let (_tee, copy) = TeeBody::new(Full::new(Bytes::new()), 10);
        assert_eq!(copy.await.unwrap(), "");
    }

    #[test]
    fn limiter_caps_in_flight() {
        let limiter = MirrorLimiter::new(2);
        let a = limiter.try_acquire().unwrap();
        let _b = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        drop(a);
        assert!(limiter.try_acquire().is_some());
    }
}
