//! The config distribution server: the controller publishes one snapshot per scope; every
//! connected client receives what changed since the last update it acknowledged.
//!
//! Publishing only replaces the scope's latest snapshot in a `watch` channel, so it never waits
//! for any client. Each client stream has its own task ([`super::connection`]) that wakes on a
//! change, waits the debounce window (coalescing bursts of publishes into one push), diffs the
//! latest snapshot against what the client acknowledged, and keeps at most one push in flight.
//!
//! With an authenticator ([`ConfigServer::with_authenticator`]) a stream must carry
//! `authorization: Bearer <token>` metadata, the token's [`Caller`] must be accepted, and
//! [`ScopeAccess`] must allow the caller the scope it subscribes to. Without one, any client
//! may subscribe to any scope (tests that do not care about authentication).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Authenticator, Caller, ScopeAccess};
use super::ca::bearer_token;
use super::connection::{self, Connection};
use crate::proto::config_distribution_server::{ConfigDistribution, ConfigDistributionServer};
use crate::proto::{self, subscribe_request};
use crate::scope::ScopeKey;
use crate::snapshot::Snapshot;

/// How long a new stream may take to send its `Subscribe`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages buffered towards one client; at most one push is in flight, so this never fills
/// unless something is wrong, and then the client is dropped rather than waited for.
const SEND_BUFFER: usize = 4;

/// Settings of a [`ConfigServer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConfigServerOptions {
    /// How long a client's task waits after a change before pushing, so publishes in a burst
    /// become one push (100 ms).
    pub debounce: Duration,
    /// How long a pushed update may stay unacknowledged before the stream is closed; the
    /// client then reconnects and gets a full resync (30 s).
    pub ack_timeout: Duration,
}

/// The config distribution service and the controller's handle to publish into it.
///
/// Cheap to clone; every clone shares the same scopes and clients.
#[derive(Clone, Debug)]
pub struct ConfigServer {
    shared: Arc<Shared>,
}

/// The tonic service of a [`ConfigServer`]; add it to a tonic `Server` (see [`super::serve`]).
#[derive(Clone, Debug)]
pub struct ConfigService {
    shared: Arc<Shared>,
}

/// Counters of a [`ConfigServer`] since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DistributionStats {
    /// Streams open now.
    pub connected: u64,
    /// Snapshots published that changed their scope.
    pub publishes: u64,
    /// Updates sent (full and incremental).
    pub pushes: u64,
    /// Updates acknowledged.
    pub acks: u64,
    /// Updates rejected by a client.
    pub nacks: u64,
    /// Streams closed because an update stayed unacknowledged too long.
    pub ack_timeouts: u64,
    /// Streams refused because the first message was not a valid `Subscribe`.
    pub bad_subscriptions: u64,
    /// Streams refused for a missing or unaccepted token.
    pub unauthenticated: u64,
    /// Streams refused because the caller may not have the scope it asked for.
    pub denied: u64,
    /// Streams refused because the token could not be checked (e.g. the API server is down).
    pub auth_unavailable: u64,
}

/// What the server knows of one connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStatus {
    /// The client's self-declared id.
    pub id: String,
    /// The client's build version.
    pub build_version: String,
    /// The scope it subscribed to.
    pub scope: ScopeKey,
    /// The version it last acknowledged on this stream.
    pub acked_version: Option<u64>,
    /// How many updates it rejected on this stream.
    pub nacks: u64,
    /// The last rejection: the version and the client's reason.
    pub last_nack: Option<(u64, String)>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) options: ConfigServerOptions,
    scopes: Mutex<HashMap<ScopeKey, watch::Sender<Option<Published>>>>,
    clients: Mutex<HashMap<u64, ClientStatus>>,
    /// Bumped whenever a client connects, disconnects, ACKs or NACKs, or a subscription is
    /// refused, so tests and the admin page can wait for a change instead of polling.
    status_changes: watch::Sender<u64>,
    next_version: AtomicU64,
    next_connection: AtomicU64,
    /// Random per server instance, so nonces of a restarted server never match old ones.
    instance: u64,
    pub(super) stats: Counters,
    pub(super) shutdown: CancellationToken,
    /// Who may subscribe to what; `None`: anyone to anything.
    auth: ArcSwapOption<SubscriberAuth>,
}

/// How subscribers are authenticated and which scopes they get.
#[derive(Debug)]
struct SubscriberAuth {
    authenticator: Arc<dyn Authenticator>,
    access: ScopeAccess,
}

/// A snapshot as published: the version it was given.
#[derive(Debug, Clone)]
pub(super) struct Published {
    pub(super) version: u64,
    pub(super) snapshot: Arc<Snapshot>,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connected: AtomicU64,
    pub(super) publishes: AtomicU64,
    pub(super) pushes: AtomicU64,
    pub(super) acks: AtomicU64,
    pub(super) nacks: AtomicU64,
    pub(super) ack_timeouts: AtomicU64,
    pub(super) bad_subscriptions: AtomicU64,
    unauthenticated: AtomicU64,
    denied: AtomicU64,
    auth_unavailable: AtomicU64,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<proto::ConfigUpdate, Status>> + Send>>;

impl Default for ConfigServerOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            ack_timeout: Duration::from_secs(30),
        }
    }
}

impl ConfigServerOptions {
    /// Options with this debounce window.
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Options with this acknowledgement timeout.
    pub fn with_ack_timeout(mut self, ack_timeout: Duration) -> Self {
        self.ack_timeout = ack_timeout;
        self
    }
}

impl ConfigServer {
    /// A server with no scopes published yet.
    pub fn new(options: ConfigServerOptions) -> Self {
        // Versions start at the wall clock in microseconds, so a restarted controller keeps
        // counting upwards instead of repeating versions clients have already seen.
        let first_version = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(1)
            .max(1);
        Self {
            shared: Arc::new(Shared {
                options,
                scopes: Mutex::new(HashMap::new()),
                clients: Mutex::new(HashMap::new()),
                status_changes: watch::Sender::new(0),
                next_version: AtomicU64::new(first_version),
                next_connection: AtomicU64::new(0),
                instance: rand::random(),
                stats: Counters::default(),
                shutdown: CancellationToken::new(),
                auth: ArcSwapOption::empty(),
            }),
        }
    }

    /// Requires every subscriber to present `authorization: Bearer <token>` metadata that
    /// `authenticator` accepts, and to subscribe only to a scope `access` allows its caller.
    /// Applies to this server and all its clones (they are one server), to streams opened
    /// from now on; call it before serving.
    pub fn with_authenticator(
        self,
        authenticator: Arc<dyn Authenticator>,
        access: ScopeAccess,
    ) -> Self {
        self.shared.auth.store(Some(Arc::new(SubscriberAuth {
            authenticator,
            access,
        })));
        self
    }

    /// Makes `snapshot` the complete resource set of `scope` and returns its version; clients
    /// of the scope receive the difference. Publishing the same content again is a no-op that
    /// returns the current version. Never waits for clients.
    pub fn publish(&self, scope: ScopeKey, snapshot: Snapshot) -> u64 {
        let sender = self.shared.scope(&scope);
        let mut version = 0;
        let changed = sender.send_if_modified(|current| {
            if let Some(current) = current
                && *current.snapshot == snapshot
            {
                version = current.version;
                return false;
            }
            version = self.shared.next_version.fetch_add(1, Ordering::Relaxed);
            *current = Some(Published {
                version,
                snapshot: Arc::new(snapshot),
            });
            true
        });
        if changed {
            self.shared.stats.publishes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%scope, version, "published");
        }
        version
    }

    /// The version last published for `scope`.
    pub fn published_version(&self, scope: &ScopeKey) -> Option<u64> {
        lock(&self.shared.scopes)
            .get(scope)
            .and_then(|sender| sender.borrow().as_ref().map(|p| p.version))
    }

    /// The tonic service to serve.
    pub fn service(&self) -> ConfigDistributionServer<ConfigService> {
        ConfigDistributionServer::new(ConfigService {
            shared: self.shared.clone(),
        })
    }

    /// Counters since start.
    pub fn stats(&self) -> DistributionStats {
        let c = &self.shared.stats;
        DistributionStats {
            connected: c.connected.load(Ordering::Relaxed),
            publishes: c.publishes.load(Ordering::Relaxed),
            pushes: c.pushes.load(Ordering::Relaxed),
            acks: c.acks.load(Ordering::Relaxed),
            nacks: c.nacks.load(Ordering::Relaxed),
            ack_timeouts: c.ack_timeouts.load(Ordering::Relaxed),
            bad_subscriptions: c.bad_subscriptions.load(Ordering::Relaxed),
            unauthenticated: c.unauthenticated.load(Ordering::Relaxed),
            denied: c.denied.load(Ordering::Relaxed),
            auth_unavailable: c.auth_unavailable.load(Ordering::Relaxed),
        }
    }

    /// The clients connected now.
    pub fn clients(&self) -> Vec<ClientStatus> {
        let mut clients: Vec<_> = lock(&self.shared.clients).values().cloned().collect();
        clients.sort_by(|a, b| a.id.cmp(&b.id));
        clients
    }

    /// A receiver that changes whenever a client connects, disconnects, ACKs or NACKs, or a
    /// subscription is refused.
    pub fn status_changes(&self) -> watch::Receiver<u64> {
        self.shared.status_changes.subscribe()
    }

    /// Ends every open stream with `UNAVAILABLE` (clients reconnect elsewhere or later), so a
    /// graceful tonic shutdown does not wait for them. New streams are refused.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }
}

impl Shared {
    fn scope(&self, scope: &ScopeKey) -> watch::Sender<Option<Published>> {
        lock(&self.scopes)
            .entry(scope.clone())
            .or_insert_with(|| watch::Sender::new(None))
            .clone()
    }

    pub(super) fn nonce(&self, version: u64) -> String {
        format!("{:016x}-{version}", self.instance)
    }

    pub(super) fn update_client(&self, connection: u64, update: impl FnOnce(&mut ClientStatus)) {
        if let Some(status) = lock(&self.clients).get_mut(&connection) {
            update(status);
        }
        self.status_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(super) fn remove_client(&self, connection: u64) {
        lock(&self.clients).remove(&connection);
        self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        self.status_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Counts a refused subscription in `counter` and tells status watchers.
    fn refused(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.status_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn add_client(&self, status: ClientStatus) -> u64 {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        lock(&self.clients).insert(id, status);
        self.stats.connected.fetch_add(1, Ordering::Relaxed);
        self.status_changes.send_modify(|n| *n = n.wrapping_add(1));
        id
    }
}

#[tonic::async_trait]
impl ConfigDistribution for ConfigService {
    type SubscribeStream = UpdateStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<proto::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Status::unavailable("config server is shutting down"));
        }
        let peer = request.remote_addr();
        // The token is checked before waiting for the Subscribe: a stranger's stream is
        // refused at once, without holding a task for it.
        let subscriber = self.authenticate(request.metadata(), peer).await?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, inbound.message()).await;
        let subscribe = match first {
            Ok(Ok(Some(proto::SubscribeRequest {
                message: Some(subscribe_request::Message::Subscribe(subscribe)),
            }))) => subscribe,
            Ok(Err(status)) => return Err(status),
            Err(_) => {
                return Err(self.bad_subscription("no Subscribe within 10 s"));
            }
            Ok(Ok(_)) => {
                return Err(self.bad_subscription("the first message must be a Subscribe"));
            }
        };
        let Some(scope) = ScopeKey::from_proto(subscribe.scope.as_ref()) else {
            return Err(self.bad_subscription(
                "Subscribe needs a scope: a node name or a waypoint namespace and name",
            ));
        };
        let info = subscribe.client.unwrap_or_default();
        let accepts_parts = info.accepts_parts;
        let mut published = self.shared.scope(&scope).subscribe();
        if let Some((auth, caller)) = &subscriber {
            self.authorize(auth, caller, &scope, &mut published, peer)
                .await?;
        }
        tracing::info!(
            client = %info.id,
            %scope,
            ?peer,
            caller = subscriber.as_ref().map(|(_, caller)| tracing::field::display(caller)),
            serving = %info.serving_version,
            "config client subscribed"
        );
        let connection = self.shared.add_client(ClientStatus {
            id: info.id,
            build_version: info.build_version,
            scope: scope.clone(),
            acked_version: None,
            nacks: 0,
            last_nack: None,
        });
        let (outbound, receiver) = mpsc::channel(SEND_BUFFER);
        tokio::spawn(
            Connection::new(
                self.shared.clone(),
                connection,
                scope,
                published,
                inbound,
                outbound,
                accepts_parts,
            )
            .run(),
        );
        Ok(Response::new(connection::stream(receiver)))
    }
}

impl ConfigService {
    /// The server's subscriber checks and the caller of this stream's token; `None` when the
    /// server checks no tokens.
    async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        peer: Option<SocketAddr>,
    ) -> Result<Option<(Arc<SubscriberAuth>, Caller)>, Status> {
        let Some(auth) = self.shared.auth.load_full() else {
            return Ok(None);
        };
        let Some(token) = bearer_token(metadata) else {
            return Err(self.unauthenticated(
                peer,
                "missing `authorization: Bearer <token>` metadata".to_owned(),
            ));
        };
        match auth.authenticator.authenticate(token).await {
            Ok(caller) => Ok(Some((auth, caller))),
            Err(err) if err.is_unavailable() => {
                self.shared.refused(&self.shared.stats.auth_unavailable);
                tracing::warn!(?peer, error = %err, "cannot check a config subscriber's token");
                Err(Status::unavailable(format!(
                    "cannot check the token: {err}"
                )))
            }
            Err(err) => Err(self.unauthenticated(peer, format!("token not accepted: {err}"))),
        }
    }

    /// Whether `caller` may receive `scope`. A waypoint scope never published may be a Gateway
    /// the controller has not translated yet (it has just started): the answer waits for the
    /// scope's first publish, up to [`SUBSCRIBE_TIMEOUT`], rather than refusing a waypoint that
    /// would then back off for seconds.
    async fn authorize(
        &self,
        auth: &SubscriberAuth,
        caller: &Caller,
        scope: &ScopeKey,
        published: &mut watch::Receiver<Option<Published>>,
        peer: Option<SocketAddr>,
    ) -> Result<(), Status> {
        let mut checked = auth.access.check(caller, scope);
        let unpublished = published.borrow().is_none();
        let waypoint = matches!(
            (caller, scope),
            (Caller::Waypoint(_), ScopeKey::Waypoint { .. })
        );
        if checked.is_err() && unpublished && waypoint {
            tokio::select! {
                _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT, published.wait_for(Option::is_some)) => {}
                () = self.shared.shutdown.cancelled() => {}
            }
            checked = auth.access.check(caller, scope);
        }
        checked.map_err(|denied| {
            self.shared.refused(&self.shared.stats.denied);
            let message = format!("{caller} may not subscribe to {scope}: {denied}");
            tracing::warn!(?peer, reason = %message, "refused config subscription");
            Status::permission_denied(message)
        })
    }

    fn unauthenticated(&self, peer: Option<SocketAddr>, reason: String) -> Status {
        self.shared.refused(&self.shared.stats.unauthenticated);
        tracing::warn!(?peer, %reason, "refused config subscription");
        Status::unauthenticated(reason)
    }

    fn bad_subscription(&self, reason: &str) -> Status {
        self.shared.refused(&self.shared.stats.bad_subscriptions);
        tracing::warn!(reason, "refused config subscription");
        Status::invalid_argument(reason)
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single insert/remove/assignment, so the data stays
    // consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
