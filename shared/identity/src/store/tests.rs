//! The store under tokio's paused clock: every renewal, retry and expiry happens at a known instant.

use std::sync::atomic::{AtomicBool, Ordering};

use rustls_pki_types::CertificateSigningRequestDer;
use tokio::sync::Semaphore;
use tokio::time::{sleep, sleep_until};

use super::*;
use crate::issuer::IssueFuture;
use crate::{CaOptions, CertificateAuthority};

const HOUR: Duration = Duration::from_secs(3600);
/// Slack for the wall clock moving while a test runs (tokio's clock is paused, the wall clock is not).
const SLACK: Duration = Duration::from_secs(1);

/// An in-process CA that records when it was asked, and can be made to fail or to wait.
#[derive(Debug)]
struct TestIssuer {
    ca: CertificateAuthority,
    ttl: Duration,
    calls: Mutex<Vec<(SpiffeId, Instant)>>,
    failing: AtomicBool,
    gate: Option<Semaphore>,
}

impl TestIssuer {
    fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self::build(ttl, None))
    }

    fn gated(ttl: Duration) -> Arc<Self> {
        Arc::new(Self::build(ttl, Some(Semaphore::new(0))))
    }

    fn build(ttl: Duration, gate: Option<Semaphore>) -> Self {
        Self {
            ca: CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap(),
            ttl,
            calls: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
            gate,
        }
    }

    fn calls_for(&self, id: &SpiffeId) -> Vec<Instant> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, at)| *at)
            .collect()
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl CertificateIssuer for TestIssuer {
    fn issue<'a>(
        &'a self,
        id: &'a SpiffeId,
        csr: CertificateSigningRequestDer<'static>,
    ) -> IssueFuture<'a> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push((id.clone(), Instant::now()));
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(IssueError::unavailable("CA is down"));
            }
            self.ca
                .sign_csr(&csr, id, self.ttl)
                .map_err(IssueError::refused)
        })
    }
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "default", sa).unwrap()
}

/// The tokio instants between which a certificate received at `received` must be renewed.
fn renewal_window(cert: &WorkloadCertificate, received: Instant) -> (Instant, Instant) {
    let at = |fraction: f64| {
        let wall = cert.not_before() + cert.lifetime().mul_f64(fraction);
        received + wall.duration_since(SystemTime::now()).unwrap()
    };
    (at(0.45) - SLACK, at(0.55) + SLACK)
}

#[tokio::test(start_paused = true)]
async fn renews_around_half_life_and_swaps_the_new_certificate_in() {
    let issuer = TestIssuer::new(HOUR);
    let store = CertStore::new(issuer.clone(), CertStoreOptions::default());
    let me = id("a");
    let first = store.certificate(&me).await.unwrap();
    let handle = store.source(&me).unwrap();
    let (earliest, latest) = renewal_window(&first, Instant::now());

    sleep_until(earliest).await;
    assert_eq!(issuer.calls_for(&me).len(), 1, "renewed too early");
    assert!(Arc::ptr_eq(&handle.current().unwrap(), &first));

    sleep_until(latest).await;
    let calls = issuer.calls_for(&me);
    assert_eq!(calls.len(), 2, "not renewed within the window");
    assert!(calls[1] >= earliest && calls[1] <= latest);
    let second = handle.current().unwrap();
    assert_ne!(second.leaf(), first.leaf());
    assert!(Arc::ptr_eq(&store.certificate(&me).await.unwrap(), &second));
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_renewals_within_the_window() {
    let issuer = TestIssuer::new(HOUR);
    let store = CertStore::new(issuer.clone(), CertStoreOptions::default());
    let ids: Vec<SpiffeId> = (0..20).map(|n| id(&format!("sa-{n}"))).collect();
    let mut windows = Vec::new();
    for id in &ids {
        let cert = store.certificate(id).await.unwrap();
        windows.push(renewal_window(&cert, Instant::now()));
    }
    let end = windows.iter().map(|w| w.1).max().unwrap();
    sleep_until(end).await;

    let renewals: Vec<Instant> = ids.iter().map(|id| issuer.calls_for(id)[1]).collect();
    for (at, (earliest, latest)) in renewals.iter().zip(&windows) {
        assert!(at >= earliest && at <= latest);
    }
    let spread = *renewals.iter().max().unwrap() - *renewals.iter().min().unwrap();
    // Uniform over ±5 % of an hour: 20 draws within 2 % of each other would be a broken jitter.
    assert!(
        spread > HOUR.mul_f64(0.02),
        "renewals not spread: {spread:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_renewals_back_off_and_keep_the_old_certificate_until_it_expires() {
    let issuer = TestIssuer::new(HOUR);
    let store = CertStore::new(issuer.clone(), CertStoreOptions::default());
    let me = id("a");
    let first = store.certificate(&me).await.unwrap();
    let handle = store.source(&me).unwrap();
    let received = Instant::now();
    let (_, latest) = renewal_window(&first, received);
    issuer.fail(true);

    sleep_until(latest + Duration::from_secs(200)).await;
    let calls = issuer.calls_for(&me);
    let gaps: Vec<u64> = calls
        .windows(2)
        .skip(1)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    assert_eq!(
        gaps[..8],
        [1, 2, 4, 8, 16, 32, 60, 60],
        "backoff doubles up to the cap"
    );
    assert!(
        Arc::ptr_eq(&handle.current().unwrap(), &first),
        "old certificate kept"
    );
    assert!(Arc::ptr_eq(&store.certificate(&me).await.unwrap(), &first));

    let expiry = received + first.not_after().duration_since(SystemTime::now()).unwrap();
    sleep_until(expiry + SLACK).await;
    assert!(
        handle.current().is_none(),
        "expired certificate still presented"
    );
    let err = store.certificate(&me).await.unwrap_err();
    assert!(err.is_expired() || err.is_issue_failure(), "{err}");

    issuer.fail(false);
    sleep(CertStoreOptions::default().retry_max + SLACK).await;
    let renewed = store.certificate(&me).await.unwrap();
    assert!(renewed.is_valid_at(SystemTime::now()));
    assert!(Arc::ptr_eq(&handle.current().unwrap(), &renewed));
}

#[tokio::test(start_paused = true)]
async fn first_fetch_failure_reaches_the_caller_and_is_retried() {
    let issuer = TestIssuer::new(HOUR);
    issuer.fail(true);
    let store = CertStore::new(issuer.clone(), CertStoreOptions::default());
    let me = id("a");
    let err = store.certificate(&me).await.unwrap_err();
    assert!(
        err.is_issue_failure() && !err.issue_error().unwrap().is_refused(),
        "{err}"
    );
    issuer.fail(false);
    sleep(Duration::from_millis(1500)).await;
    store.certificate(&me).await.unwrap();
    assert_eq!(issuer.calls_for(&me).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_first_fetches_share_one_request() {
    let issuer = TestIssuer::gated(HOUR);
    let store = CertStore::new(issuer.clone(), CertStoreOptions::default());
    let me = id("a");
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (store, me) = (store.clone(), me.clone());
            tokio::spawn(async move { store.certificate(&me).await })
        })
        .collect();
    while issuer.calls_for(&me).is_empty() {
        tokio::task::yield_now().await;
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    issuer.gate.as_ref().unwrap().add_permits(1);
    let mut certs = Vec::new();
    for waiter in waiters {
        certs.push(waiter.await.unwrap().unwrap());
    }
    assert!(certs.iter().all(|c| Arc::ptr_eq(c, &certs[0])));
    assert_eq!(issuer.calls_for(&me).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn forget_stops_renewal_and_drops_the_certificate() {
    let issuer = TestIssuer::new(HOUR);
    let store = CertStore::new(issuer.clone(), CertStoreOptions::default());
    let (me, other) = (id("a"), id("b"));
    store.certificate(&me).await.unwrap();
    store.certificate(&other).await.unwrap();
    let handle = store.source(&me).unwrap();
    store.forget(&me);
    assert!(handle.current().is_none());
    assert_eq!(store.identities(), std::slice::from_ref(&other));

    sleep(2 * HOUR).await;
    assert_eq!(
        issuer.calls_for(&me).len(),
        1,
        "a forgotten identity was renewed"
    );
    assert!(
        issuer.calls_for(&other).len() >= 3,
        "the other identity kept renewing"
    );

    // Asking again starts afresh.
    store.certificate(&me).await.unwrap();
    assert_eq!(issuer.calls_for(&me).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_store_stops_its_task() {
    let issuer = TestIssuer::new(HOUR);
    let store = CertStore::new(issuer.clone(), CertStoreOptions::default());
    let me = id("a");
    let cert = store.certificate(&me).await.unwrap();
    let handle = store.source(&me).unwrap();
    drop(store);
    // The actor holds the only other reference to the issuer.
    for _ in 0..100 {
        if Arc::strong_count(&issuer) == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(Arc::strong_count(&issuer), 1, "store task still running");
    sleep(HOUR).await;
    assert_eq!(issuer.calls_for(&me).len(), 1);
    // Handles keep the last certificate.
    assert!(Arc::ptr_eq(&handle.current().unwrap(), &cert));
}

#[test]
fn backoff_doubles_and_is_capped() {
    let options = CertStoreOptions::default();
    let secs: Vec<u64> = (1..=9).map(|n| backoff(&options, n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(backoff(&options, u32::MAX), options.retry_max);
}
