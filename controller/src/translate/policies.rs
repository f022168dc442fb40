//! AuthorizationPolicy and PeerAuthentication → model policies (the model validates and parses
//! them; attachment — selector for ztunnel, targetRefs for waypoints — is the model's scope),
//! and the counted report of kinds not translated yet.

use ambit_model::{AuthorizationPolicy, PeerAuthentication};

use super::error::Errors;
use crate::objects::Resources;

pub(crate) fn translate(
    resources: &Resources,
    errors: &mut Errors,
) -> (Vec<AuthorizationPolicy>, Vec<PeerAuthentication>) {
    let mut authorization = Vec::new();
    for policy in resources.authorization_policies() {
        match policy.to_model() {
            Ok(model) => authorization.push(model),
            Err(err) => errors.model("AuthorizationPolicy", err.namespace(), err.name(), &err),
        }
    }
    let mut peer = Vec::new();
    for policy in resources.peer_authentications() {
        match policy.to_model() {
            Ok(model) => peer.push(model),
            Err(err) => errors.model("PeerAuthentication", err.namespace(), err.name(), &err),
        }
    }
    (authorization, peer)
}

/// One warning per object of a recognised kind whose translation is not written yet.
pub(crate) fn report_untranslated(resources: &Resources, errors: &mut Errors) {
    for (kind, object) in resources
        .untranslated()
        .filter(|(kind, _)| !super::l7::translates(*kind))
    {
        errors.not_translated(
            kind.as_str(),
            object.metadata.namespace.as_deref().unwrap_or_default(),
            object.metadata.name.as_deref().unwrap_or_default(),
            "this kind is recognised but not applied yet",
        );
    }
}
