//! In-pod redirection: capture an enrolled pod's traffic inside its own network namespace.
//!
//! Ztunnel runs in the node's namespace but serves each enrolled pod from *inside* that pod's
//! network namespace, the way Istio's ambient mode does:
//!
//! 1. [`rules`] renders an nftables table (`inet ambit`) with the semantics of Istio's in-pod
//!    iptables rules: outbound TCP → 15001, inbound TCP (except to 15008) → 15006, DNS → 15053,
//!    ztunnel's own sockets (mark `0x539`) never captured, the kubelet probe source
//!    `169.254.7.127` exempt, loopback untouched.
//! 2. [`apply`] installs that table in a pod's namespace in one `nft` transaction, together with
//!    the policy route that sends replies of ztunnel's connections back to ztunnel; [`remove`]
//!    takes both away again.
//! 3. [`bind_listeners`], [`connect_marked`] and friends create ztunnel's sockets inside the pod
//!    namespace ([`PodNetns::run_in`]), marked so the rules let them through.
//!
//! Because the rules redirect to ports on which only ztunnel listens, an enrolled pod whose
//! ztunnel is gone gets "connection refused": traffic fails closed, it never bypasses the mesh.

mod error;
mod netns;
mod netns_rules;
pub mod rules;
mod sockets;

pub use error::{Error, Result};
pub use netns::PodNetns;
pub use netns_rules::{apply, remove};
pub use rules::RedirectConfig;
pub use sockets::{
    InPodListeners, bind_listeners, bind_tcp, bind_udp, connect_marked, connect_marked_from,
    original_destination,
};

/// Port of the outbound capture listener (the pod's own connections).
pub const OUTBOUND_PORT: u16 = 15001;
/// Port of the inbound plaintext listener (connections into the pod that are not HBONE).
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// Port of the inbound HBONE (mTLS) listener; never redirected.
pub const HBONE_PORT: u16 = 15008;
/// Port of the DNS proxy, UDP and TCP.
pub const DNS_PORT: u16 = 15053;
/// Mark carried by every socket ztunnel opens in a pod (`SO_MARK`), matched under [`MARK_MASK`].
pub const ZTUNNEL_MARK: u32 = 0x539;
/// Connection mark given to connections ztunnel's sockets make, restored on their replies.
pub const CONNECTION_MARK: u32 = 0x111;
/// The bits of the packet and connection marks that the rules own.
pub const MARK_MASK: u32 = 0xfff;
/// Routing table holding the local route that brings marked replies back to ztunnel.
pub const ROUTE_TABLE: u32 = 100;
/// Priority of the `ip rule` that selects [`ROUTE_TABLE`] for marked packets.
pub const ROUTE_RULE_PRIORITY: u32 = 32764;
