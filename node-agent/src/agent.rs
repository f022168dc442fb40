//! The agent: the [`Core`] behind a lock, wired to its edges. CNI requests and watch events
//! go through [`Agent`]; every change is persisted to the state file before it is answered,
//! and the enrolled set is published to the ztunnel link. Pods the plugin never reported are
//! found by the netns scan ([`crate::discovery`]), which the agent asks for after watch
//! events that bring such pods.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ambit_cni::protocol::{PodInfo, PodReport};
use ambit_cni::server::{BoxFuture, HandlerError, PodEventHandler};
use tokio::sync::{Mutex, Notify, watch};
use tracing::{error, info, warn};

use crate::core::{Action, AddOutcome, Changes, ClusterEvent, Core, KnownPod, Pending};
use crate::discovery::{NetnsAddrs, Outcome};
use crate::state::StateFile;
use crate::ztunnel::{LinkStatus, PodMap};

/// How long CNI requests wait for the other parts.
#[derive(Clone, Debug)]
pub struct AgentTimeouts {
    /// How long an `add` waits for the pod to appear in the pod watch (a CNI ADD can arrive
    /// before the watch event).
    pub pod_wait: Duration,
    /// How long an `add` of an enrolled pod waits for ztunnel to confirm it serves the pod.
    pub enroll_wait: Duration,
}

/// The node agent's state and its outputs.
#[derive(Debug)]
pub struct Agent {
    core: Mutex<Core>,
    state: Option<StateFile>,
    /// Bumped after every watch event, to wake `add`s waiting for their pod.
    cluster_changes: watch::Sender<u64>,
    desired: watch::Sender<Arc<PodMap>>,
    link: watch::Receiver<LinkStatus>,
    timeouts: AgentTimeouts,
    /// Signalled when a watch event leaves pods for the netns scan to look for.
    scan_wanted: Notify,
}

impl Default for AgentTimeouts {
    fn default() -> Self {
        // Both fit in the plugin's default call deadline (10 s).
        Self {
            pod_wait: Duration::from_secs(3),
            enroll_wait: Duration::from_secs(6),
        }
    }
}

impl Agent {
    /// A new agent; `link` is the ztunnel link's status, `excluded_namespaces` those the
    /// plugin never reports (left out of the netns scan too). Returns the agent and the
    /// desired enrolled set for the link.
    pub fn new(
        timeouts: AgentTimeouts,
        state: Option<StateFile>,
        link: watch::Receiver<LinkStatus>,
        excluded_namespaces: BTreeSet<String>,
    ) -> (Arc<Self>, watch::Receiver<Arc<PodMap>>) {
        let (desired, desired_rx) = watch::channel(Arc::new(PodMap::new()));
        let agent = Arc::new(Self {
            core: Mutex::new(Core::with_excluded_namespaces(excluded_namespaces)),
            state,
            cluster_changes: watch::channel(0).0,
            desired,
            link,
            timeouts,
            scan_wanted: Notify::new(),
        });
        (agent, desired_rx)
    }

    /// Takes the pods a previous run persisted (see [`Core::restore`]) and rewrites the file
    /// without the ones dropped.
    pub async fn restore(&self, pods: Vec<KnownPod>, netns_exists: impl Fn(&str) -> bool) {
        let mut core = self.core.lock().await;
        let mut changes = core.restore(pods, netns_exists);
        changes.known_changed = true;
        self.commit(&core, changes).await;
    }

    /// Applies a watch event.
    pub async fn apply(&self, event: ClusterEvent) {
        let mut core = self.core.lock().await;
        let changes = core.apply(event);
        self.commit(&core, changes).await;
        if core.wants_scan() {
            self.scan_wanted.notify_one();
        }
        self.cluster_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves once a watch event has left pods for the netns scan to look for (at once if
    /// one did since the last call).
    pub async fn scan_wanted(&self) {
        self.scan_wanted.notified().await;
    }

    /// Whether a netns scan could find something now ([`Core::wants_scan`]).
    pub async fn wants_scan(&self) -> bool {
        self.core.lock().await.wants_scan()
    }

    /// Takes the result of a scan of `dir` ([`Core::discover`]): pods found join the known
    /// pods as if the plugin had reported them; the others are logged.
    pub async fn discover(&self, found: &NetnsAddrs, dir: &Path) {
        let mut core = self.core.lock().await;
        let (changes, outcomes) = core.discover(found);
        for (pod, outcome) in outcomes {
            let (namespace, name, uid) = (&pod.namespace, &pod.name, &pod.uid);
            let ips = format!("{:?}", pod.ips);
            match outcome {
                Outcome::Found(netns) => info!(
                    namespace,
                    name,
                    uid,
                    ips,
                    netns,
                    "found the network namespace of a pod the plugin never reported"
                ),
                Outcome::NotFound => warn!(
                    namespace, name, uid, ips, dir = %dir.display(),
                    "no network namespace holds the addresses of a running pod the plugin \
                     never reported; it stays unknown (outside the mesh) until recreated"
                ),
                Outcome::Ambiguous(why) => warn!(
                    namespace,
                    name,
                    uid,
                    ips,
                    reason = why,
                    "the network namespace of a pod the plugin never reported is ambiguous; \
                     it stays unknown (outside the mesh) until recreated"
                ),
            }
        }
        self.commit(&core, changes).await;
    }

    /// A scan failed; see [`Core::scan_failed`].
    pub async fn scan_failed(&self) {
        self.core.lock().await.scan_failed();
    }

    /// How many pods are known.
    pub async fn known_count(&self) -> usize {
        self.core.lock().await.known().count()
    }

    /// Logs, persists and publishes what an input changed. Called with the core locked, so
    /// state writes happen in the order of the changes.
    async fn commit(&self, core: &Core, changes: Changes) {
        for action in &changes.actions {
            match action {
                Action::Enroll(pod) => info!(
                    namespace = %pod.namespace, name = %pod.name, uid = %pod.uid,
                    netns = %pod.netns, "pod enrolled in the mesh"
                ),
                Action::Unenroll(uid) => info!(uid, "pod leaves the mesh"),
            }
        }
        if changes.known_changed
            && let Some(state) = &self.state
        {
            let state = state.clone();
            let pods: Vec<KnownPod> = core.known().cloned().collect();
            let saved = tokio::task::spawn_blocking(move || state.save(&pods)).await;
            match saved {
                Ok(Ok(())) => {}
                // The agent keeps working from memory; a restart would forget the change.
                Ok(Err(e)) => error!(error = %e, "cannot persist the known pods"),
                Err(e) => error!(error = %e, "persisting the known pods failed"),
            }
        }
        if !changes.actions.is_empty() {
            self.desired.send_replace(Arc::new(core.enrolled()));
        }
    }

    async fn add(&self, report: PodReport) -> Result<bool, HandlerError> {
        let pod_name = format!("{}/{}", report.namespace, report.name);
        let deadline = tokio::time::Instant::now() + self.timeouts.pod_wait;
        let mut cluster = self.cluster_changes.subscribe();
        loop {
            // Marked seen before looking, so an event after the look wakes the wait below.
            cluster.borrow_and_update();
            let pending = {
                let mut core = self.core.lock().await;
                let (outcome, changes) = core.add(&report);
                match outcome {
                    AddOutcome::Added { enrolled, pod } => {
                        self.commit(&core, changes).await;
                        drop(core);
                        info!(pod = pod_name, uid = %pod.uid, enrolled, "sandbox added");
                        if enrolled {
                            self.await_ztunnel(&pod).await?;
                        }
                        return Ok(enrolled);
                    }
                    AddOutcome::Rejected(message) => return Err(HandlerError::invalid(message)),
                    AddOutcome::Pending(pending) => pending,
                }
            };
            let woke = tokio::time::timeout_at(deadline, cluster.changed()).await;
            if !matches!(woke, Ok(Ok(()))) {
                let waited = self.timeouts.pod_wait;
                return Err(match pending {
                    Pending::NotSynced => HandlerError::unavailable(format!(
                        "the pod and namespace watches have not synced within {waited:?}"
                    )),
                    Pending::UnknownPod => HandlerError::unknown_pod(format!(
                        "{pod_name} is not among this node's pods (waited {waited:?})"
                    )),
                    Pending::UnknownNamespace => HandlerError::unavailable(format!(
                        "the namespace of {pod_name} is not in the namespace watch (waited {waited:?})"
                    )),
                });
            }
        }
    }

    /// Waits until ztunnel confirms it serves `pod`, so the pod never runs unprotected.
    async fn await_ztunnel(&self, pod: &PodInfo) -> Result<(), HandlerError> {
        let mut link = self.link.clone();
        let answered = tokio::time::timeout(
            self.timeouts.enroll_wait,
            link.wait_for(|status| {
                status.confirmed.get(&pod.uid) == Some(pod)
                    || status.refused.get(&pod.uid).is_some_and(|(p, _)| p == pod)
            }),
        )
        .await;
        let refused = match answered {
            Ok(Ok(status)) => status.refused.get(&pod.uid).map(|(_, m)| m.clone()),
            Ok(Err(_)) => Some("the ztunnel link has stopped".to_owned()),
            Err(_) => {
                let connected = self.link.borrow().connected;
                return Err(HandlerError::unavailable(format!(
                    "ztunnel has not confirmed the pod within {:?}{}",
                    self.timeouts.enroll_wait,
                    if connected {
                        ""
                    } else {
                        " (ztunnel is not connected)"
                    }
                )));
            }
        };
        match refused {
            None => Ok(()),
            Some(message) => Err(HandlerError::unavailable(format!(
                "ztunnel cannot serve the pod: {message}"
            ))),
        }
    }
}

impl PodEventHandler for Agent {
    fn add(&self, pod: PodReport) -> BoxFuture<'_, Result<bool, HandlerError>> {
        Box::pin(Agent::add(self, pod))
    }

    fn del(&self, pod: PodReport) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            let mut core = self.core.lock().await;
            let changes = core.del(&pod);
            if changes.known_changed {
                info!(namespace = %pod.namespace, name = %pod.name, "sandbox deleted");
            }
            self.commit(&core, changes).await;
            Ok(())
        })
    }

    fn check(&self, pod: PodReport) -> BoxFuture<'_, Result<bool, HandlerError>> {
        Box::pin(async move {
            self.core.lock().await.check(&pod).ok_or_else(|| {
                HandlerError::unknown_pod(format!(
                    "no sandbox {} of {}/{} is known",
                    pod.container_id, pod.namespace, pod.name
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use futures_util::FutureExt;

    use super::*;
    use crate::core::{ApiPod, Labels};

    const UID: &str = "6b1f0c2e-0000-4000-8000-000000000001";

    fn api_pod() -> ApiPod {
        ApiPod {
            uid: UID.into(),
            namespace: "plain".into(),
            name: "web-0".into(),
            service_account: "web".into(),
            labels: Labels::new(),
            host_network: false,
            has_sidecar: false,
            ips: Vec::new(),
            finished: false,
        }
    }

    fn report() -> PodReport {
        PodReport {
            container_id: "c1".into(),
            namespace: "plain".into(),
            name: "web-0".into(),
            uid: None,
            service_account: None,
            netns: Some("/var/run/netns/cni-1".into()),
        }
    }

    #[tokio::test]
    async fn an_add_waits_for_the_watch_event_of_its_pod() {
        let (_link, link_rx) = watch::channel(LinkStatus::default());
        let timeouts = AgentTimeouts {
            pod_wait: Duration::from_secs(20),
            enroll_wait: Duration::from_secs(20),
        };
        let (agent, desired) = Agent::new(timeouts, None, link_rx, BTreeSet::new());
        agent
            .apply(ClusterEvent::NamespacesListed(vec![(
                "plain".into(),
                Labels::new(),
            )]))
            .await;
        agent.apply(ClusterEvent::PodsListed(Vec::new())).await;

        let mut add = Box::pin(Agent::add(&agent, report()));
        assert!(
            (&mut add).now_or_never().is_none(),
            "answered before the pod was seen"
        );
        agent.apply(ClusterEvent::PodApplied(api_pod())).await;
        let enrolled = tokio::time::timeout(Duration::from_secs(20), add)
            .await
            .unwrap();
        assert!(!enrolled.unwrap(), "plain is not an ambient namespace");
        assert!(desired.borrow().is_empty());
        assert!(!PodEventHandler::check(&*agent, report()).await.unwrap());
    }

    #[tokio::test]
    async fn an_enrolled_add_is_answered_when_ztunnel_confirms_it() {
        let (link, link_rx) = watch::channel(LinkStatus::default());
        let (agent, mut desired) =
            Agent::new(AgentTimeouts::default(), None, link_rx, BTreeSet::new());
        let ambient: Labels = [(crate::core::DATAPLANE_MODE.to_owned(), "ambient".to_owned())]
            .into_iter()
            .collect();
        agent
            .apply(ClusterEvent::NamespacesListed(vec![(
                "plain".into(),
                ambient,
            )]))
            .await;
        agent.apply(ClusterEvent::PodsListed(vec![api_pod()])).await;

        let mut add = Box::pin(Agent::add(&agent, report()));
        assert!(
            (&mut add).now_or_never().is_none(),
            "answered before ztunnel confirmed"
        );
        // What the link would do: take the desired set, report it confirmed.
        desired.changed().await.unwrap();
        let wanted = desired.borrow_and_update().clone();
        assert_eq!(wanted.keys().collect::<Vec<_>>(), [UID]);
        link.send_replace(LinkStatus {
            connected: true,
            confirmed: wanted,
            refused: Arc::default(),
        });
        assert!(add.await.unwrap());
    }
}
