//! Who may ask the CA for what (and subscribe to which config), in Kubernetes mode.
//!
//! [`TokenReviewAuthenticator`]: the caller's projected ServiceAccount token goes to the API
//! server in a TokenReview (with the configured audiences). The token must be bound to a pod
//! (`authentication.kubernetes.io/pod-name` and `pod-uid` in the review's extra fields); that
//! pod is looked up, must still be the same pod (uid) running as the token's ServiceAccount,
//! and must be scheduled. A ztunnel (ServiceAccount `ztunnel` of the install namespace, both
//! configurable) becomes [`Caller::Node`] of the pod's node; a waypoint pod (labelled with its
//! Gateway's name) becomes [`Caller::Waypoint`] of its own identity; anyone else is refused.
//!
//! [`PodIdentities`]: the authorizer. A node may hold exactly the identities of the pods
//! scheduled on it, taken from each snapshot; a waypoint only its own identity.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use ambit_api::server::{AuthError, AuthFuture, Authenticator, Authorizer, Caller, Denied};
use ambit_identity::SpiffeId;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::objects::Resources;

/// The extra field of a bound token naming its pod.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The extra field of a bound token carrying its pod's uid.
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// The label on waypoint pods (set by the deployer, as by Istio).
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// What the authenticator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The audiences the token must be valid for; empty means the API server's default.
    pub audiences: Vec<String>,
    /// The namespace ztunnel is installed in.
    pub ztunnel_namespace: String,
    /// ztunnel's ServiceAccount.
    pub ztunnel_service_account: String,
    /// The trust domain of waypoint identities.
    pub trust_domain: String,
}

/// Checks CA and config callers' tokens with the TokenReview API.
pub struct TokenReviewAuthenticator {
    client: Client,
    settings: AuthSettings,
}

/// The identities of the pods on each node, refreshed from every snapshot; the CA's authorizer
/// in Kubernetes mode. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct PodIdentities {
    trust_domain: String,
    by_node: Arc<RwLock<BTreeMap<String, BTreeSet<SpiffeId>>>>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            // What the charts give: ztunnel in the release namespace, tokens for `ambit`.
            audiences: vec![crate::app::DEFAULT_TOKEN_AUDIENCE.to_owned()],
            ztunnel_namespace: crate::app::DEFAULT_ZTUNNEL_NAMESPACE.to_owned(),
            ztunnel_service_account: "ztunnel".to_owned(),
            trust_domain: ambit_identity::DEFAULT_TRUST_DOMAIN.to_owned(),
        }
    }
}

impl TokenReviewAuthenticator {
    /// An authenticator calling the API through `client`.
    pub fn new(client: Client, settings: AuthSettings) -> Self {
        Self { client, settings }
    }

    async fn check(&self, token: &str) -> Result<Caller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::invalid("no token"));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.settings.audiences.is_empty())
                    .then(|| self.settings.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|err| AuthError::unavailable(format!("TokenReview failed: {err}")))?;
        let status = reviewed
            .status
            .ok_or_else(|| AuthError::unavailable("TokenReview returned no status"))?;
        let bound = self.accepted_token(&status)?;
        let pod = Api::<Pod>::namespaced(self.client.clone(), &bound.namespace)
            .get_opt(&bound.pod_name)
            .await
            .map_err(|err| AuthError::unavailable(format!("looking up the caller's pod: {err}")))?
            .ok_or_else(|| {
                AuthError::invalid(format!(
                    "pod {}/{} of the token no longer exists",
                    bound.namespace, bound.pod_name
                ))
            })?;
        self.caller_of(&bound, &pod)
    }

    /// The ServiceAccount and pod of an authenticated, pod-bound token.
    fn accepted_token(&self, status: &TokenReviewStatus) -> Result<BoundToken, AuthError> {
        if status.authenticated != Some(true) {
            let reason = status.error.as_deref().unwrap_or("token not authenticated");
            return Err(AuthError::invalid(format!("token refused: {reason}")));
        }
        if !self.settings.audiences.is_empty() {
            let granted = status.audiences.as_deref().unwrap_or_default();
            if !granted.iter().any(|a| self.settings.audiences.contains(a)) {
                return Err(AuthError::invalid(format!(
                    "token is not valid for audiences {:?}",
                    self.settings.audiences
                )));
            }
        }
        let user = status
            .user
            .as_ref()
            .ok_or_else(|| AuthError::invalid("TokenReview names no user"))?;
        let username = user.username.as_deref().unwrap_or_default();
        let (namespace, service_account) = username
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| AuthError::invalid(format!("{username:?} is not a ServiceAccount")))?;
        let extra = |key: &str| {
            user.extra
                .as_ref()
                .and_then(|extra| extra.get(key))
                .and_then(|values| values.first())
                .cloned()
        };
        let pod_name = extra(POD_NAME_EXTRA).ok_or_else(|| {
            AuthError::invalid("the token is not bound to a pod (use a projected token)")
        })?;
        Ok(BoundToken {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            pod_name,
            pod_uid: extra(POD_UID_EXTRA),
        })
    }

    fn caller_of(&self, bound: &BoundToken, pod: &Pod) -> Result<Caller, AuthError> {
        let pod_ref = format!("{}/{}", bound.namespace, bound.pod_name);
        if let Some(uid) = &bound.pod_uid
            && pod.metadata.uid.as_ref() != Some(uid)
        {
            return Err(AuthError::invalid(format!(
                "pod {pod_ref} was replaced since the token was issued"
            )));
        }
        let spec = pod.spec.as_ref();
        let pod_account = spec
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default");
        if pod_account != bound.service_account {
            return Err(AuthError::invalid(format!(
                "pod {pod_ref} runs as {pod_account}, not {}",
                bound.service_account
            )));
        }
        let is_ztunnel = bound.namespace == self.settings.ztunnel_namespace
            && bound.service_account == self.settings.ztunnel_service_account;
        if is_ztunnel {
            let node = spec
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
                .ok_or_else(|| AuthError::invalid(format!("pod {pod_ref} is not scheduled")))?;
            return Ok(Caller::Node(node));
        }
        let is_waypoint = pod
            .metadata
            .labels
            .as_ref()
            .is_some_and(|labels| labels.contains_key(GATEWAY_NAME_LABEL));
        if is_waypoint {
            let identity = SpiffeId::new(
                &self.settings.trust_domain,
                &bound.namespace,
                &bound.service_account,
            )
            .map_err(|err| AuthError::invalid(format!("no identity for the caller: {err}")))?;
            return Ok(Caller::Waypoint(identity));
        }
        Err(AuthError::invalid(format!(
            "{}{}:{} is neither ztunnel ({}/{}) nor a waypoint",
            SERVICE_ACCOUNT_PREFIX,
            bound.namespace,
            bound.service_account,
            self.settings.ztunnel_namespace,
            self.settings.ztunnel_service_account
        )))
    }
}

/// What an accepted token says about its holder.
struct BoundToken {
    namespace: String,
    service_account: String,
    pod_name: String,
    pod_uid: Option<String>,
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let result = self.check(token).await;
            match &result {
                Ok(caller) => tracing::debug!(%caller, "caller authenticated"),
                Err(err) => tracing::info!(error = %err, "caller refused"),
            }
            result
        })
    }
}

impl fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PodIdentities {
    /// An empty index for identities in `trust_domain`.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            by_node: Arc::default(),
        }
    }

    /// Rebuilds the index from the pods of a snapshot: every scheduled pod that has not
    /// finished gives its node its identity.
    pub fn update(&self, resources: &Resources) {
        let mut by_node: BTreeMap<String, BTreeSet<SpiffeId>> = BTreeMap::new();
        for pod in resources.pods() {
            let finished = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
            let Some(spec) = pod.spec.as_ref().filter(|_| !finished) else {
                continue;
            };
            let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            let account = spec.service_account_name.as_deref().unwrap_or("default");
            if let Ok(id) = SpiffeId::new(&self.trust_domain, namespace, account) {
                by_node.entry(node.to_owned()).or_default().insert(id);
            }
        }
        *self.by_node.write().unwrap_or_else(|e| e.into_inner()) = by_node;
    }

    /// Whether a pod on `node` runs as `identity`.
    pub fn hosts(&self, node: &str, identity: &SpiffeId) -> bool {
        self.by_node
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .is_some_and(|ids| ids.contains(identity))
    }
}

impl Authorizer for PodIdentities {
    fn authorize(&self, caller: &Caller, requested: &SpiffeId) -> Result<(), Denied> {
        match caller {
            Caller::Node(node) if self.hosts(node, requested) => Ok(()),
            Caller::Node(node) => Err(Denied::new(format!(
                "no pod on node {node} runs as {requested}"
            ))),
            Caller::Waypoint(own) if own == requested => Ok(()),
            Caller::Waypoint(own) => Err(Denied::new(format!(
                "waypoint {own} may only request its own identity, not {requested}"
            ))),
            other => Err(Denied::new(format!("unknown caller {other}"))),
        }
    }
}

impl fmt::Debug for PodIdentities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = self.by_node.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("PodIdentities")
            .field("trust_domain", &self.trust_domain)
            .field("nodes", &nodes)
            .finish()
    }
}
