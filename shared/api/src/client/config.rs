//! The proxies' config client: subscribe, validate, apply, ACK or NACK, reconnect.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::endpoint::{ControllerEndpoint, error_chain};
use super::token::{InvalidToken, TokenFileError, TokenSource};
use super::view::ConfigView;
use crate::proto::config_distribution_client::ConfigDistributionClient;
use crate::proto::{self, subscribe_request};
use crate::scope::ScopeKey;

/// Settings of a [`ConfigClient`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConfigClientOptions {
    /// This proxy instance, for the controller's logs (e.g. `ztunnel/node-a`).
    pub client_id: String,
    /// The proxy's build version.
    pub build_version: String,
    /// Time allowed for a TCP connect to the controller (5 s).
    pub connect_timeout: Duration,
    /// First delay before reconnecting (200 ms); doubles per failed attempt.
    pub backoff_initial: Duration,
    /// Longest delay between reconnects (15 s).
    pub backoff_max: Duration,
    /// The bearer token sent on every subscription (`None`: no `authorization` metadata).
    token: Option<TokenSource>,
}

/// Keeps a proxy's config in sync with the controller.
///
/// A background task holds one subscription open, applies each update to a copy of the last
/// good config, and publishes the result through a `watch` channel; invalid updates are NACKed
/// and change nothing. When the controller is unreachable the last good config stays in place
/// and the task reconnects with backoff, receiving a full resync. Dropping the client stops
/// the task.
#[derive(Debug)]
pub struct ConfigClient {
    config: watch::Receiver<Arc<ConfigView>>,
    stats: watch::Receiver<ClientStats>,
    task: JoinHandle<()>,
}

/// What a [`ConfigClient`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Whether a subscription is open now.
    pub connected: bool,
    /// Subscriptions opened.
    pub connects: u64,
    /// Updates applied and acknowledged.
    pub applied: u64,
    /// Updates rejected.
    pub nacks: u64,
}

/// Why one subscription ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {}", error_chain(.0))]
    Connect(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the server closed the stream")]
    Closed,
    #[error("no token to subscribe with: {0}")]
    Token(#[from] TokenFileError),
    #[error("the server broke the parts protocol: {0}")]
    Parts(#[from] PartsError),
}

/// A part of a push that does not continue the push being reassembled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "part of version {got_version} (nonce {got_nonce:?}, full {got_full}) arrived while \
     version {version} (nonce {nonce:?}, full {full}) was incomplete"
)]
pub(crate) struct PartsError {
    version: u64,
    nonce: String,
    full: bool,
    got_version: u64,
    got_nonce: String,
    got_full: bool,
}

/// Puts the parts of a push (`ConfigUpdate.more`) back together.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    pending: Option<proto::ConfigUpdate>,
}

impl Reassembly {
    /// Takes the next message of the stream: the whole push once its last part is in,
    /// `None` while parts are still missing.
    pub(crate) fn add(
        &mut self,
        part: proto::ConfigUpdate,
    ) -> Result<Option<proto::ConfigUpdate>, PartsError> {
        let more = part.more;
        let whole = match self.pending.take() {
            None => part,
            Some(mut pending) => {
                if (pending.version, &pending.nonce, pending.full)
                    != (part.version, &part.nonce, part.full)
                {
                    return Err(PartsError {
                        version: pending.version,
                        nonce: pending.nonce,
                        full: pending.full,
                        got_version: part.version,
                        got_nonce: part.nonce,
                        got_full: part.full,
                    });
                }
                pending.upserts.extend(part.upserts);
                pending.removals.extend(part.removals);
                pending
            }
        };
        if more {
            self.pending = Some(whole);
            return Ok(None);
        }
        Ok(Some(proto::ConfigUpdate {
            more: false,
            ..whole
        }))
    }
}

struct Task {
    controller: ControllerEndpoint,
    endpoint: Endpoint,
    scope: ScopeKey,
    options: ConfigClientOptions,
    config: watch::Sender<Arc<ConfigView>>,
    stats: watch::Sender<ClientStats>,
}

impl Default for ConfigClientOptions {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
            connect_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(15),
            token: None,
        }
    }
}

impl ConfigClientOptions {
    /// Default options for the client called `client_id`.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            ..Self::default()
        }
    }

    /// Options with this reconnect backoff range.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// Options sending `token` as `authorization: Bearer <token>` on every subscription.
    pub fn with_token(mut self, token: &str) -> Result<Self, InvalidToken> {
        self.token = Some(TokenSource::fixed(token)?);
        Ok(self)
    }

    /// Options reading the bearer token from `path` before every (re)subscription, so a
    /// rotated token (a projected service-account token) is used without a restart. A
    /// missing, empty or unusable file fails that attempt, which is retried with backoff.
    pub fn with_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token = Some(TokenSource::File(path.into()));
        self
    }
}

impl ConfigClient {
    /// Starts syncing `scope` from `controller`. Must be called inside a tokio runtime. The
    /// config starts empty and unsynced.
    pub fn start(
        controller: ControllerEndpoint,
        scope: ScopeKey,
        options: ConfigClientOptions,
    ) -> Self {
        let endpoint = controller
            .tonic_endpoint()
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            // Notice a vanished controller within seconds even when no updates flow.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let (config, config_rx) = watch::channel(Arc::new(ConfigView::default()));
        let (stats, stats_rx) = watch::channel(ClientStats::default());
        let task = Task {
            controller,
            endpoint,
            scope,
            options,
            config,
            stats,
        };
        Self {
            config: config_rx,
            stats: stats_rx,
            task: tokio::spawn(task.run()),
        }
    }

    /// A receiver of the current config; it changes on every accepted update.
    pub fn config(&self) -> watch::Receiver<Arc<ConfigView>> {
        self.config.clone()
    }

    /// The current config.
    pub fn current(&self) -> Arc<ConfigView> {
        self.config.borrow().clone()
    }

    /// A receiver of the client's counters.
    pub fn stats(&self) -> watch::Receiver<ClientStats> {
        self.stats.clone()
    }
}

impl Drop for ConfigClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Task {
    async fn run(self) {
        let mut backoff = self.options.backoff_initial;
        loop {
            let applied_before = self.stats.borrow().applied;
            let result = self.session().await;
            self.stats.send_modify(|s| s.connected = false);
            match result {
                Ok(()) => return,
                Err(err) => tracing::warn!(
                    scope = %self.scope,
                    error = %err,
                    retry_in = ?backoff,
                    "config subscription ended; serving the last good config"
                ),
            }
            // A session that delivered config was healthy: start the backoff over.
            if self.stats.borrow().applied > applied_before {
                backoff = self.options.backoff_initial;
            }
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(self.options.backoff_max);
        }
    }

    /// One subscription, until it fails. `Ok` only when the client is being dropped.
    async fn session(&self) -> Result<(), SessionError> {
        // Read first: a missing token should not cost a connection.
        let authorization = match &self.options.token {
            Some(token) => Some(token.authorization().await?),
            None => None,
        };
        let channel: Channel = self.controller.connect(&self.endpoint).await?;
        let mut client = ConfigDistributionClient::new(channel);
        let (requests, receiver) = mpsc::channel(4);
        let serving_version = self
            .config
            .borrow()
            .version()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let subscribe = proto::SubscribeRequest {
            message: Some(subscribe_request::Message::Subscribe(proto::Subscribe {
                scope: Some(self.scope.to_proto()),
                client: Some(proto::ClientInfo {
                    id: self.options.client_id.clone(),
                    build_version: self.options.build_version.clone(),
                    serving_version,
                    accepts_parts: true,
                }),
            })),
        };
        if requests.send(subscribe).await.is_err() {
            return Ok(());
        }
        let outbound = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        let mut request = tonic::Request::new(outbound);
        if let Some(authorization) = authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization);
        }
        let mut updates = client.subscribe(request).await?.into_inner();
        self.stats.send_modify(|s| {
            s.connected = true;
            s.connects += 1;
        });
        tracing::info!(scope = %self.scope, "subscribed to config");
        let mut first = true;
        let mut reassembly = Reassembly::default();
        while let Some(part) = updates.message().await? {
            let Some(update) = reassembly.add(part)? else {
                continue;
            };
            let current = self.config.borrow().clone();
            let error_detail = match current.apply(&update, first) {
                Ok(next) => {
                    tracing::debug!(
                        scope = %self.scope,
                        version = update.version,
                        full = update.full,
                        resources = next.len(),
                        "applied config update"
                    );
                    // Counted first: whoever sees the new config also sees it counted.
                    self.stats.send_modify(|s| s.applied += 1);
                    self.config.send_replace(Arc::new(next));
                    first = false;
                    None
                }
                Err(err) => {
                    tracing::warn!(scope = %self.scope, error = %err, "rejected config update");
                    self.stats.send_modify(|s| s.nacks += 1);
                    Some(err.detail())
                }
            };
            let ack = proto::SubscribeRequest {
                message: Some(subscribe_request::Message::Ack(proto::Ack {
                    version: update.version,
                    nonce: update.nonce,
                    error_detail,
                })),
            };
            if requests.send(ack).await.is_err() {
                return Err(SessionError::Closed);
            }
        }
        Err(SessionError::Closed)
    }
}

/// `delay` ± 20 %, so clients cut off together do not reconnect in lockstep.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(version: u64, nonce: &str, names: &[&str], more: bool) -> proto::ConfigUpdate {
        proto::ConfigUpdate {
            version,
            nonce: nonce.to_owned(),
            full: true,
            upserts: names
                .iter()
                .map(|name| proto::Resource {
                    key: Some(proto::ResourceKey {
                        kind: "Service".to_owned(),
                        namespace: "ns".to_owned(),
                        name: (*name).to_owned(),
                    }),
                    payload: Default::default(),
                })
                .collect(),
            removals: Vec::new(),
            more,
        }
    }

    fn upsert_names(update: &proto::ConfigUpdate) -> Vec<&str> {
        update
            .upserts
            .iter()
            .filter_map(|r| r.key.as_ref().map(|k| k.name.as_str()))
            .collect()
    }

    #[test]
    fn a_single_message_push_passes_through() {
        let mut reassembly = Reassembly::default();
        let whole = reassembly
            .add(part(1, "n", &["a"], false))
            .unwrap()
            .unwrap();
        assert_eq!(upsert_names(&whole), ["a"]);
    }

    #[test]
    fn parts_come_out_as_one_push_after_the_last() {
        let mut reassembly = Reassembly::default();
        assert_eq!(reassembly.add(part(2, "n", &["a", "b"], true)), Ok(None));
        assert_eq!(reassembly.add(part(2, "n", &["c"], true)), Ok(None));
        let whole = reassembly
            .add(part(2, "n", &["d"], false))
            .unwrap()
            .unwrap();
        assert_eq!(upsert_names(&whole), ["a", "b", "c", "d"]);
        assert!(!whole.more);
        // The next push starts afresh.
        let next = reassembly
            .add(part(3, "m", &["e"], false))
            .unwrap()
            .unwrap();
        assert_eq!(upsert_names(&next), ["e"]);
    }

    #[test]
    fn a_part_of_another_push_is_a_protocol_error() {
        let mut reassembly = Reassembly::default();
        assert_eq!(reassembly.add(part(2, "n", &["a"], true)), Ok(None));
        let err = reassembly.add(part(3, "m", &["b"], false)).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        let mut reassembly = Reassembly::default();
        assert_eq!(reassembly.add(part(2, "n", &["a"], true)), Ok(None));
        assert!(reassembly.add(part(2, "other", &["b"], false)).is_err());
    }
}
