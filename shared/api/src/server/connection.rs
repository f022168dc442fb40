//! One client stream: waits for changes of its scope, pushes diffs, tracks ACK and NACK.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Status, Streaming};

use super::config::{Published, Shared};
use crate::proto::{self, subscribe_request};
use crate::scope::ScopeKey;
use crate::snapshot::{Parts, Snapshot};

/// Size of one part of a push to a client that accepts parts. tonic keeps each stream's
/// encode buffer (and each client its decode buffer) at the size of the largest message it
/// saw, for as long as the stream lives: whole full resyncs of megabytes, times every
/// connected ztunnel, were most of the controller's memory.
pub const PART_BYTES: usize = 256 * 1024;

/// What one push sends: its messages, in order, each built when the stream takes it.
pub(super) type Push = Parts;

/// The state of one client stream, owned by its task.
pub(super) struct Connection {
    shared: Arc<Shared>,
    id: u64,
    scope: ScopeKey,
    published: watch::Receiver<Option<Published>>,
    inbound: Streaming<proto::SubscribeRequest>,
    outbound: mpsc::Sender<Result<Push, Status>>,
    /// Whether the client reassembles pushes sent in parts.
    accepts_parts: bool,
    /// What the client acknowledged last on this stream; `None` until its first ACK, and while
    /// it is `None` every push is a full resync.
    acked: Option<Arc<Snapshot>>,
    in_flight: Option<InFlight>,
    /// When to push the latest snapshot (a change was seen and the debounce window runs).
    push_at: Option<Instant>,
}

struct InFlight {
    version: u64,
    nonce: String,
    snapshot: Arc<Snapshot>,
    deadline: Instant,
}

/// Why a stream ended.
enum End {
    /// The client closed its side or the connection went away.
    ClientGone,
    /// The server ends it, telling the client why.
    Close(Status),
}

impl Connection {
    pub(super) fn new(
        shared: Arc<Shared>,
        id: u64,
        scope: ScopeKey,
        published: watch::Receiver<Option<Published>>,
        inbound: Streaming<proto::SubscribeRequest>,
        outbound: mpsc::Sender<Result<Push, Status>>,
        accepts_parts: bool,
    ) -> Self {
        Self {
            shared,
            id,
            scope,
            published,
            inbound,
            outbound,
            accepts_parts,
            acked: None,
            in_flight: None,
            push_at: None,
        }
    }

    pub(super) async fn run(mut self) {
        let end = self.serve().await;
        if let End::Close(status) = end {
            tracing::info!(scope = %self.scope, reason = status.message(), "closing config stream");
            // The client may already be gone; nothing more to do then.
            let _ = self.outbound.try_send(Err(status));
        } else {
            tracing::info!(scope = %self.scope, "config client disconnected");
        }
        self.shared.remove_client(self.id);
    }

    async fn serve(&mut self) -> End {
        // Whatever is published already goes out at once: a new stream always starts with a
        // full resync, and nothing is gained by waiting.
        if self.published.borrow_and_update().is_some() {
            self.push_at = Some(Instant::now());
        }
        let shutdown = self.shared.shutdown.clone();
        loop {
            let ack_deadline = self.in_flight.as_ref().map(|f| f.deadline);
            let push_at = self.push_at.filter(|_| self.in_flight.is_none());
            tokio::select! {
                () = shutdown.cancelled() => {
                    return End::Close(Status::unavailable("config server is shutting down"));
                }
                () = self.outbound.closed() => return End::ClientGone,
                message = self.inbound.message() => match message {
                    Ok(Some(request)) => {
                        if let Some(end) = self.handle(request) {
                            return end;
                        }
                    }
                    Ok(None) => return End::ClientGone,
                    Err(status) => {
                        tracing::debug!(scope = %self.scope, %status, "config stream failed");
                        return End::ClientGone;
                    }
                },
                changed = self.published.changed(), if self.push_at.is_none() => {
                    if changed.is_err() {
                        return End::Close(Status::unavailable("scope removed"));
                    }
                    self.push_at = Some(Instant::now() + self.shared.options.debounce);
                }
                () = sleep_until(push_at), if push_at.is_some() => {
                    self.push_at = None;
                    if let Some(end) = self.push() {
                        return end;
                    }
                }
                () = sleep_until(ack_deadline), if ack_deadline.is_some() => {
                    self.shared.stats.ack_timeouts.fetch_add(1, Ordering::Relaxed);
                    return End::Close(Status::deadline_exceeded(
                        "update not acknowledged in time; reconnect for a full resync",
                    ));
                }
            }
        }
    }

    /// Sends the latest snapshot as a diff against what the client acknowledged.
    fn push(&mut self) -> Option<End> {
        // Nothing published (yet): nothing to push, the stream goes on.
        let latest = self.published.borrow_and_update().clone()?;
        let (diff, full) = match &self.acked {
            None => (latest.snapshot.as_full(), true),
            Some(acked) => (acked.diff(&latest.snapshot), false),
        };
        if !full && diff.is_empty() {
            return None;
        }
        let nonce = self.shared.nonce(latest.version);
        let (upserts, removals) = (diff.upserts.len(), diff.removals.len());
        let part_bytes = self.accepts_parts.then_some(PART_BYTES);
        let push = diff.into_parts(latest.version, &nonce, full, part_bytes);
        // At most one push is in flight, so the buffer only fills if the client is broken.
        if self.outbound.try_send(Ok(push)).is_err() {
            return Some(End::ClientGone);
        }
        self.shared.stats.pushes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            scope = %self.scope,
            version = latest.version,
            full,
            upserts,
            removals,
            "pushed config"
        );
        self.in_flight = Some(InFlight {
            version: latest.version,
            nonce,
            snapshot: latest.snapshot,
            deadline: Instant::now() + self.shared.options.ack_timeout,
        });
        None
    }

    fn handle(&mut self, request: proto::SubscribeRequest) -> Option<End> {
        let ack = match request.message {
            Some(subscribe_request::Message::Ack(ack)) => ack,
            Some(subscribe_request::Message::Subscribe(_)) => {
                return Some(End::Close(Status::invalid_argument(
                    "Subscribe may only be sent once, first",
                )));
            }
            None => return Some(End::Close(Status::invalid_argument("empty message"))),
        };
        let Some(in_flight) = self
            .in_flight
            .take_if(|f| f.nonce == ack.nonce && f.version == ack.version)
        else {
            tracing::debug!(scope = %self.scope, nonce = %ack.nonce, "ignoring stale acknowledgement");
            return None;
        };
        match ack.error_detail {
            None => {
                self.shared.stats.acks.fetch_add(1, Ordering::Relaxed);
                self.shared.update_client(self.id, |status| {
                    status.acked_version = Some(in_flight.version);
                });
                self.acked = Some(in_flight.snapshot);
            }
            Some(detail) => {
                // The client keeps its last good config, which is what `acked` describes; the
                // rejected snapshot is not resent, the next publish is diffed against `acked`.
                self.shared.stats.nacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    scope = %self.scope,
                    version = in_flight.version,
                    reason = %detail,
                    "config update rejected by client"
                );
                self.shared.update_client(self.id, |status| {
                    status.nacks += 1;
                    status.last_nack = Some((in_flight.version, detail));
                });
            }
        }
        None
    }
}

/// The response stream of a client: every message of every push its task sends, in order,
/// until the task ends.
pub(super) fn stream(
    receiver: mpsc::Receiver<Result<Push, Status>>,
) -> Pin<Box<dyn Stream<Item = Result<proto::ConfigUpdate, Status>> + Send>> {
    Box::pin(futures_util::stream::unfold(
        (receiver, None::<Push>),
        |(mut receiver, mut current)| async move {
            loop {
                if let Some(part) = current.as_mut().and_then(Iterator::next) {
                    return Some((Ok(part), (receiver, current)));
                }
                match receiver.recv().await? {
                    Ok(push) => current = Some(push),
                    Err(status) => return Some((Err(status), (receiver, None))),
                }
            }
        },
    ))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
