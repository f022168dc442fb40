//! The connection to ztunnel: keeps ztunnel serving exactly the pods the agent wants.
//!
//! The link is level-triggered: it watches the *desired* enrolled set and tells ztunnel the
//! difference from what ztunnel *confirmed*. After every (re)connect it sends the whole set as
//! a `snapshot`, so a restarted ztunnel serves every pod again and pods removed while it was
//! away are dropped. Losing the connection (ztunnel restarting) is noticed while idle too,
//! since ztunnel never writes unprompted: end of stream means it is gone.
//!
//! A pod ztunnel refuses (`error` reply to `enroll`) is recorded with ztunnel's message, so
//! a waiting CNI ADD can fail at once, and retried with backoff. A refused snapshot means
//! some pods failed: each pod is then enrolled on its own to find out which.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ambit_cni::protocol::{self, MAX_MESSAGE_BYTES, PodInfo, Reply, Request, ZtunnelRequest};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Pods by UID.
pub type PodMap = BTreeMap<String, PodInfo>;

/// Timing of the link.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// ztunnel's node-agent socket.
    pub socket: PathBuf,
    /// First delay before reconnecting or retrying a refused pod; doubles up to the maximum.
    pub retry_min: Duration,
    /// Longest delay between attempts.
    pub retry_max: Duration,
    /// Deadline of one request and its reply. ztunnel answers an `enroll` after setting the
    /// pod up, certificate included, and a snapshot after all of them.
    pub call_timeout: Duration,
}

/// What the link reports to the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// Whether ztunnel is connected (and was sent its snapshot).
    pub connected: bool,
    /// Pods ztunnel acknowledged, exactly as sent.
    pub confirmed: Arc<PodMap>,
    /// Pods ztunnel refused, with its message.
    pub refused: Arc<BTreeMap<String, (PodInfo, String)>>,
}

/// Why the connection ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("ztunnel closed the connection")]
    Closed,
    #[error("{0}")]
    Protocol(String),
    #[error("ztunnel refused hello: {0}")]
    Refused(String),
}

/// One connection to ztunnel.
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    call_timeout: Duration,
}

/// The link's bookkeeping while connected.
struct Session {
    confirmed: PodMap,
    refused: BTreeMap<String, (PodInfo, String)>,
    retry_delay: Duration,
    /// When refused pods are tried again.
    retry_at: Option<Instant>,
}

impl LinkConfig {
    /// The link to ztunnel's socket with production timing.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            call_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs the link until the future is dropped or `desired`'s sender is.
pub async fn run(
    config: LinkConfig,
    mut desired: watch::Receiver<Arc<PodMap>>,
    status: watch::Sender<LinkStatus>,
) {
    let mut delay = config.retry_min;
    let mut warned = false;
    loop {
        match Connection::open(&config).await {
            Ok(connection) => {
                info!(socket = %config.socket.display(), "connected to ztunnel");
                warned = false;
                delay = config.retry_min;
                match serve(connection, &config, &mut desired, &status).await {
                    Ok(()) => return,
                    Err(e) => warn!(error = %e, "ztunnel connection lost; reconnecting"),
                }
                status.send_replace(LinkStatus::default());
            }
            // ztunnel not started yet is normal on a fresh node: warn once per outage.
            Err(e) if !warned => {
                warn!(socket = %config.socket.display(), error = %e, "cannot reach ztunnel; retrying");
                warned = true;
            }
            Err(e) => debug!(error = %e, "cannot reach ztunnel"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(config.retry_max);
    }
}

/// Serves one connection: snapshot, then changes. `Ok` when the agent is shutting down.
async fn serve(
    mut connection: Connection,
    config: &LinkConfig,
    desired: &mut watch::Receiver<Arc<PodMap>>,
    status: &watch::Sender<LinkStatus>,
) -> Result<(), LinkError> {
    let mut session = Session {
        confirmed: PodMap::new(),
        refused: BTreeMap::new(),
        retry_delay: config.retry_min,
        retry_at: None,
    };
    let wanted = desired.borrow_and_update().clone();
    let pods: Vec<PodInfo> = wanted.values().cloned().collect();
    let count = pods.len();
    match connection.call(&ZtunnelRequest::Snapshot { pods }).await? {
        Reply::Ack { .. } => {
            info!(pods = count, "snapshot sent to ztunnel");
            session.confirmed = (*wanted).clone();
        }
        // Some pods failed; ztunnel kept the others. Enrolling each pod on its own (below)
        // finds out which, and is a no-op in ztunnel for the ones it serves.
        Reply::Error { kind, message } => {
            warn!(%kind, message, "ztunnel refused part of the snapshot");
        }
    }
    session.publish(status, true);
    loop {
        session.sync(&mut connection, desired, config).await?;
        session.publish(status, true);
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            closed = connection.closed() => return Err(closed),
            () = sleep_until_or_pending(session.retry_at) => {
                // Refused pods get another chance.
                session.refused.clear();
                session.retry_at = None;
                session.retry_delay = (session.retry_delay * 2).min(config.retry_max);
            }
        }
    }
}

async fn sleep_until_or_pending(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// Sends what differs between the desired set and what ztunnel confirmed.
    async fn sync(
        &mut self,
        connection: &mut Connection,
        desired: &mut watch::Receiver<Arc<PodMap>>,
        config: &LinkConfig,
    ) -> Result<(), LinkError> {
        let wanted = desired.borrow_and_update().clone();
        let gone: Vec<String> = self
            .confirmed
            .keys()
            .chain(self.refused.keys())
            .filter(|uid| !wanted.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            let request = ZtunnelRequest::Unenroll { uid: uid.clone() };
            match connection.call(&request).await? {
                Reply::Ack { .. } => info!(uid, "ztunnel unenrolled the pod"),
                Reply::Error { kind, message } => {
                    warn!(uid, %kind, message, "ztunnel refused to unenroll the pod");
                }
            }
            self.confirmed.remove(&uid);
            self.refused.remove(&uid);
        }
        for pod in wanted.values() {
            let done = self.confirmed.get(&pod.uid) == Some(pod)
                || self.refused.get(&pod.uid).is_some_and(|(p, _)| p == pod);
            if done {
                continue;
            }
            let request = ZtunnelRequest::Enroll { pod: pod.clone() };
            match connection.call(&request).await? {
                Reply::Ack { .. } => {
                    info!(namespace = %pod.namespace, name = %pod.name, uid = %pod.uid, "ztunnel enrolled the pod");
                    self.refused.remove(&pod.uid);
                    self.confirmed.insert(pod.uid.clone(), pod.clone());
                    self.retry_delay = config.retry_min;
                }
                Reply::Error { kind, message } => {
                    warn!(namespace = %pod.namespace, name = %pod.name, %kind, message, "ztunnel refused the pod");
                    self.confirmed.remove(&pod.uid);
                    self.refused
                        .insert(pod.uid.clone(), (pod.clone(), format!("{kind}: {message}")));
                    let delay = self.retry_delay;
                    self.retry_at.get_or_insert_with(|| Instant::now() + delay);
                }
            }
        }
        Ok(())
    }

    fn publish(&self, status: &watch::Sender<LinkStatus>, connected: bool) {
        status.send_replace(LinkStatus {
            connected,
            confirmed: Arc::new(self.confirmed.clone()),
            refused: Arc::new(self.refused.clone()),
        });
    }
}

impl Connection {
    async fn open(config: &LinkConfig) -> Result<Self, LinkError> {
        let stream = with_timeout(config.call_timeout, async {
            Ok(UnixStream::connect(&config.socket).await?)
        })
        .await?;
        let (read, writer) = stream.into_split();
        let mut connection = Self {
            reader: BufReader::new(read),
            writer,
            call_timeout: config.call_timeout,
        };
        match connection.call(&ZtunnelRequest::hello()).await? {
            Reply::Ack { .. } => Ok(connection),
            Reply::Error { message, .. } => Err(LinkError::Refused(message)),
        }
    }

    async fn call(&mut self, request: &ZtunnelRequest) -> Result<Reply, LinkError> {
        let line = protocol::encode(request).map_err(|e| LinkError::Protocol(e.to_string()))?;
        with_timeout(self.call_timeout, async {
            self.writer.write_all(&line).await?;
            let mut frame = Vec::new();
            let limit = MAX_MESSAGE_BYTES as u64;
            (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut frame)
                .await?;
            match frame.pop() {
                Some(b'\n') => {
                    protocol::decode(&frame).map_err(|e| LinkError::Protocol(e.to_string()))
                }
                None => Err(LinkError::Closed),
                Some(_) if frame.len() + 1 >= MAX_MESSAGE_BYTES => {
                    Err(LinkError::Protocol("reply exceeds the size limit".into()))
                }
                Some(_) => Err(LinkError::Closed),
            }
        })
        .await
    }

    /// Resolves when ztunnel closes the connection (or writes without being asked).
    /// Cancel-safe: bytes read stay in the buffer.
    async fn closed(&mut self) -> LinkError {
        match self.reader.fill_buf().await {
            Ok([]) => LinkError::Closed,
            Ok(_) => LinkError::Protocol("ztunnel sent data without a request".into()),
            Err(e) => LinkError::Io(e),
        }
    }
}

async fn with_timeout<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(LinkError::Timeout(limit)))
}
