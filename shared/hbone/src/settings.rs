//! HTTP/2 settings shared by the HBONE server and client, and the PING keepalive.

use std::time::Duration;

use h2::{Ping, PingPong};

/// Initial per-stream flow-control window.
pub(crate) const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Connection-wide flow-control window.
pub(crate) const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest DATA frame either side accepts.
pub(crate) const MAX_FRAME_SIZE: u32 = 1024 * 1024;
/// HBONE requests carry a handful of short headers; anything bigger is abuse.
pub(crate) const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Bytes h2 may buffer per stream before a writer has to wait for the socket.
pub(crate) const MAX_SEND_BUFFER: usize = MAX_FRAME_SIZE as usize;

/// HTTP/2 PING keepalive: a PING every `interval`, the connection dropped when a PONG takes
/// longer than `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between PINGs.
    pub interval: Duration,
    /// How long a PONG may take before the connection is considered dead.
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
        }
    }
}

/// Why a keepalive loop ended.
#[derive(Debug)]
pub(crate) enum KeepaliveEnd {
    /// The peer did not answer a PING in time.
    Timeout,
    /// The connection failed or closed under the PING.
    Closed,
}

impl Keepalive {
    /// PINGs forever; returns only when the connection should be (or already is) gone.
    /// The connection future must be polled concurrently for PONGs to arrive.
    pub(crate) async fn run(self, mut ping_pong: PingPong) -> KeepaliveEnd {
        loop {
            tokio::time::sleep(self.interval).await;
            match tokio::time::timeout(self.timeout, ping_pong.ping(Ping::opaque())).await {
                Ok(Ok(_pong)) => {}
                Ok(Err(err)) => {
                    tracing::debug!(%err, "keepalive PING failed");
                    return KeepaliveEnd::Closed;
                }
                Err(_) => return KeepaliveEnd::Timeout,
            }
        }
    }
}
