//! The certificate store: one current certificate per workload identity, kept fresh.
//!
//! A single actor task owns the renewal schedule (a priority queue of timers) and all requests
//! to the issuer. Callers read certificates lock-free from per-identity slots (`ArcSwap`), so a
//! renewal swaps the certificate in for the next handshake and never touches open connections.
//! All timing uses tokio's clock, so tests drive it with `tokio::time::pause`/`advance`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::{mpsc, watch};
use tokio::task::{Id as TaskId, JoinSet};
use tokio::time::Instant;

use crate::SpiffeId;
use crate::cert::{CertificateError, WorkloadCertificate, WorkloadKey};
use crate::issuer::{CertificateIssuer, IssueError};
use crate::tls::CertificateSource;

/// How the store renews certificates.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CertStoreOptions {
    /// Renew at this fraction of a certificate's lifetime (0.5).
    pub renew_at: f64,
    /// Spread renewals uniformly within ± this fraction of the lifetime (0.05), so certificates
    /// issued together are not all renewed in the same instant.
    pub renew_jitter: f64,
    /// First retry delay after a failed request (1 s); doubles per failure.
    pub retry_initial: Duration,
    /// Longest retry delay (1 min).
    pub retry_max: Duration,
}

/// Keeps the current certificate of each identity it was asked for, renewing in the background.
///
/// Cloning is cheap and shares the store; the background task stops when the last clone is
/// dropped. Must be created inside a tokio runtime.
#[derive(Clone)]
pub struct CertStore {
    shared: Arc<Shared>,
}

/// A [`CertificateSource`] for one identity of a [`CertStore`]: always the latest certificate.
/// After [`CertStore::forget`] it presents nothing.
#[derive(Clone)]
pub struct CertHandle {
    slot: Arc<Slot>,
}

/// Why the store has no certificate to give. Cheap to clone (shared by all waiters).
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct CertStoreError {
    inner: Arc<StoreFailure>,
}

#[derive(Debug, thiserror::Error)]
enum StoreFailure {
    #[error("issuing a certificate failed: {0}")]
    Issue(#[from] IssueError),
    #[error("issued certificate is unusable: {0}")]
    Certificate(#[from] CertificateError),
    #[error("certificate expired and could not be renewed yet")]
    Expired,
    #[error("identity was forgotten by the certificate store")]
    Forgotten,
    #[error("certificate store is shut down")]
    Closed,
}

struct Shared {
    slots: Mutex<HashMap<SpiffeId, Arc<Slot>>>,
    commands: mpsc::UnboundedSender<Command>,
}

/// What callers see of one identity; written only by the actor (and by `forget`).
struct Slot {
    id: SpiffeId,
    current: ArcSwapOption<WorkloadCertificate>,
    status: watch::Sender<Status>,
}

#[derive(Debug, Clone)]
enum Status {
    Pending,
    Ready,
    Failed(CertStoreError),
    Forgotten,
}

enum Command {
    Track(Arc<Slot>),
    Forget(Arc<Slot>),
}

struct Actor {
    issuer: Arc<dyn CertificateIssuer>,
    options: CertStoreOptions,
    commands: mpsc::UnboundedReceiver<Command>,
    tracked: HashMap<SpiffeId, Tracked>,
    timers: BinaryHeap<Reverse<Timer>>,
    requests: JoinSet<Result<WorkloadCertificate, CertStoreError>>,
    request_ids: HashMap<TaskId, Arc<Slot>>,
    next_seq: u64,
}

struct Tracked {
    slot: Arc<Slot>,
    in_flight: bool,
    failures: u32,
    /// The timer that may start the next request; older timers for this identity are stale.
    renew_seq: Option<u64>,
    /// The timer that expires the current certificate.
    expiry_seq: Option<u64>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    seq: u64,
    kind: TimerKind,
    id: SpiffeId,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Renew,
    Expire,
}

impl Default for CertStoreOptions {
    fn default() -> Self {
        Self {
            renew_at: 0.5,
            renew_jitter: 0.05,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

impl CertStore {
    /// A store fetching certificates from `issuer`; spawns the renewal task on the current runtime.
    pub fn new(issuer: Arc<dyn CertificateIssuer>, options: CertStoreOptions) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let actor = Actor {
            issuer,
            options,
            commands: receiver,
            tracked: HashMap::new(),
            timers: BinaryHeap::new(),
            requests: JoinSet::new(),
            request_ids: HashMap::new(),
            next_seq: 0,
        };
        tokio::spawn(actor.run());
        Self {
            shared: Arc::new(Shared {
                slots: Mutex::new(HashMap::new()),
                commands,
            }),
        }
    }

    /// The current certificate for `id`, fetching it on first use. Concurrent first callers
    /// share one request. Fails if the latest request failed and no valid certificate is held.
    pub async fn certificate(
        &self,
        id: &SpiffeId,
    ) -> Result<Arc<WorkloadCertificate>, CertStoreError> {
        let slot = self.slot(id)?;
        let mut status = slot.status.subscribe();
        let settled = status
            .wait_for(|s| !matches!(s, Status::Pending))
            .await
            .map(|s| s.clone())
            // The slot (and so the sender) is alive while we hold it.
            .unwrap_or(Status::Forgotten);
        match settled {
            Status::Ready => slot
                .current
                .load_full()
                .ok_or_else(|| StoreFailure::Expired.into()),
            Status::Failed(err) => Err(err),
            Status::Pending | Status::Forgotten => Err(StoreFailure::Forgotten.into()),
        }
    }

    /// A handle presenting the latest certificate for `id`; starts fetching it if needed.
    pub fn source(&self, id: &SpiffeId) -> Result<CertHandle, CertStoreError> {
        Ok(CertHandle {
            slot: self.slot(id)?,
        })
    }

    /// Stops renewing `id` and drops its certificate; its handles present nothing from now on.
    pub fn forget(&self, id: &SpiffeId) {
        let removed = self.slots().remove(id);
        if let Some(slot) = removed {
            slot.current.store(None);
            slot.status.send_replace(Status::Forgotten);
            // Fails only if the actor is gone, and then nothing is renewed anyway.
            let _ = self.shared.commands.send(Command::Forget(slot));
            tracing::debug!(%id, "forgot certificate");
        }
    }

    /// The identities the store currently keeps certificates for.
    pub fn identities(&self) -> Vec<SpiffeId> {
        self.slots().keys().cloned().collect()
    }

    fn slot(&self, id: &SpiffeId) -> Result<Arc<Slot>, CertStoreError> {
        let mut slots = self.slots();
        if let Some(slot) = slots.get(id) {
            return Ok(slot.clone());
        }
        let slot = Arc::new(Slot {
            id: id.clone(),
            current: ArcSwapOption::empty(),
            status: watch::Sender::new(Status::Pending),
        });
        self.shared
            .commands
            .send(Command::Track(slot.clone()))
            .map_err(|_| CertStoreError::from(StoreFailure::Closed))?;
        slots.insert(id.clone(), slot.clone());
        Ok(slot)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, Arc<Slot>>> {
        // The map stays consistent even if a holder panicked: every update is one insert/remove.
        self.shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("identities", &self.slots().len())
            .finish()
    }
}

impl CertHandle {
    /// The identity this handle presents.
    pub fn id(&self) -> &SpiffeId {
        &self.slot.id
    }
}

impl CertificateSource for CertHandle {
    fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        self.slot.current.load_full()
    }
}

impl fmt::Debug for CertHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CertHandle").field(&self.slot.id).finish()
    }
}

impl CertStoreError {
    /// The issuer failed or refused; see [`CertStoreError::issue_error`].
    pub fn is_issue_failure(&self) -> bool {
        matches!(*self.inner, StoreFailure::Issue(_))
    }

    /// The issuer's error, if that is why there is no certificate.
    pub fn issue_error(&self) -> Option<&IssueError> {
        match &*self.inner {
            StoreFailure::Issue(err) => Some(err),
            _ => None,
        }
    }

    /// The last certificate expired before a renewal succeeded.
    pub fn is_expired(&self) -> bool {
        matches!(*self.inner, StoreFailure::Expired)
    }

    /// The identity was forgotten while waiting.
    pub fn is_forgotten(&self) -> bool {
        matches!(*self.inner, StoreFailure::Forgotten)
    }
}

impl From<StoreFailure> for CertStoreError {
    fn from(failure: StoreFailure) -> Self {
        Self {
            inner: Arc::new(failure),
        }
    }
}

impl From<IssueError> for CertStoreError {
    fn from(err: IssueError) -> Self {
        StoreFailure::Issue(err).into()
    }
}

impl From<CertificateError> for CertStoreError {
    fn from(err: CertificateError) -> Self {
        StoreFailure::Certificate(err).into()
    }
}

impl Actor {
    async fn run(mut self) {
        loop {
            let next_timer = self.timers.peek().map(|Reverse(t)| t.at);
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command),
                    // Every store handle is gone: stop, aborting requests in flight.
                    None => break,
                },
                Some(done) = self.requests.join_next_with_id(), if !self.requests.is_empty() => {
                    match done {
                        Ok((task, result)) => self.finish(task, result),
                        Err(err) => {
                            let failure = IssueError::unavailable(format!("certificate request task failed: {err}"));
                            self.finish(err.id(), Err(failure.into()));
                        }
                    }
                }
                () = sleep_until(next_timer) => self.fire_due_timers(),
            }
        }
        tracing::debug!("certificate store stopped");
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Track(slot) => {
                let id = slot.id.clone();
                self.tracked.insert(
                    id.clone(),
                    Tracked {
                        slot,
                        in_flight: false,
                        failures: 0,
                        renew_seq: None,
                        expiry_seq: None,
                    },
                );
                self.start_request(&id);
            }
            Command::Forget(slot) => {
                let same = self
                    .tracked
                    .get(&slot.id)
                    .is_some_and(|t| Arc::ptr_eq(&t.slot, &slot));
                if same {
                    self.tracked.remove(&slot.id);
                }
            }
        }
    }

    fn start_request(&mut self, id: &SpiffeId) {
        let Some(tracked) = self.tracked.get_mut(id) else {
            return;
        };
        if tracked.in_flight {
            return;
        }
        tracked.in_flight = true;
        tracked.renew_seq = None;
        let issuer = self.issuer.clone();
        let id = id.clone();
        let task = self
            .requests
            .spawn(async move { request(issuer, id).await });
        self.request_ids.insert(task.id(), tracked.slot.clone());
    }

    fn finish(&mut self, task: TaskId, result: Result<WorkloadCertificate, CertStoreError>) {
        let Some(slot) = self.request_ids.remove(&task) else {
            return;
        };
        let id = slot.id.clone();
        let Some(tracked) = self.tracked.get_mut(&id) else {
            return;
        };
        if !Arc::ptr_eq(&tracked.slot, &slot) {
            // Forgotten (and maybe asked for again) while the request was in flight.
            return;
        }
        tracked.in_flight = false;
        let now = Instant::now();
        match result {
            Ok(cert) => {
                tracked.failures = 0;
                let wall_now = SystemTime::now();
                let renew_in = renew_delay(&cert, &self.options, wall_now);
                let expire_in = cert
                    .not_after()
                    .duration_since(wall_now)
                    .unwrap_or_default();
                tracing::info!(%id, not_after = ?cert.not_after(), ?renew_in, "certificate issued");
                slot.current.store(Some(Arc::new(cert)));
                slot.status.send_replace(Status::Ready);
                let renew_seq = self.add_timer(now + renew_in, TimerKind::Renew, &id);
                let expiry_seq = self.add_timer(now + expire_in, TimerKind::Expire, &id);
                if let Some(tracked) = self.tracked.get_mut(&id) {
                    tracked.renew_seq = Some(renew_seq);
                    tracked.expiry_seq = Some(expiry_seq);
                }
            }
            Err(err) => {
                tracked.failures = tracked.failures.saturating_add(1);
                let retry_in = backoff(&self.options, tracked.failures);
                let keeps_old = slot.current.load().is_some();
                tracing::warn!(%id, error = %err, ?retry_in, keeps_old, "certificate request failed");
                if !keeps_old {
                    slot.status.send_replace(Status::Failed(err));
                }
                let seq = self.add_timer(now + retry_in, TimerKind::Renew, &id);
                if let Some(tracked) = self.tracked.get_mut(&id) {
                    tracked.renew_seq = Some(seq);
                }
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse(timer)) = self.timers.peek() {
            if timer.at > now {
                break;
            }
            let Some(Reverse(timer)) = self.timers.pop() else {
                break;
            };
            let Some(tracked) = self.tracked.get_mut(&timer.id) else {
                continue;
            };
            match timer.kind {
                TimerKind::Renew if tracked.renew_seq == Some(timer.seq) => {
                    tracing::debug!(id = %timer.id, "renewing certificate");
                    self.start_request(&timer.id);
                }
                TimerKind::Expire if tracked.expiry_seq == Some(timer.seq) => {
                    tracked.expiry_seq = None;
                    tracing::warn!(id = %timer.id, "certificate expired before it could be renewed");
                    tracked.slot.current.store(None);
                    tracked
                        .slot
                        .status
                        .send_replace(Status::Failed(StoreFailure::Expired.into()));
                }
                _ => {}
            }
        }
    }

    fn add_timer(&mut self, at: Instant, kind: TimerKind, id: &SpiffeId) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.timers.push(Reverse(Timer {
            at,
            seq,
            kind,
            id: id.clone(),
        }));
        seq
    }
}

/// Makes a key and a CSR on this node and asks the issuer to sign it.
async fn request(
    issuer: Arc<dyn CertificateIssuer>,
    id: SpiffeId,
) -> Result<WorkloadCertificate, CertStoreError> {
    let key = WorkloadKey::generate()?;
    let csr = key.csr_der(&id)?;
    let chain = issuer.issue(&id, csr).await?;
    let cert = WorkloadCertificate::for_identity(&id, chain, key.private_key_der())?;
    if cert.not_after() <= SystemTime::now() {
        return Err(StoreFailure::Expired.into());
    }
    Ok(cert)
}

/// Time from `now` until the certificate should be renewed: the configured fraction of its
/// lifetime, jittered, counted from `not_before`.
fn renew_delay(
    cert: &WorkloadCertificate,
    options: &CertStoreOptions,
    now: SystemTime,
) -> Duration {
    let jitter = options.renew_jitter.abs();
    let fraction = (options.renew_at + rand::random_range(-jitter..=jitter)).clamp(0.0, 1.0);
    let renew_at = cert.not_before() + cert.lifetime().mul_f64(fraction);
    renew_at.duration_since(now).unwrap_or_default()
}

/// `retry_initial * 2^(failures - 1)`, at most `retry_max`.
fn backoff(options: &CertStoreOptions, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    options
        .retry_initial
        .saturating_mul(1 << exponent)
        .min(options.retry_max)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
