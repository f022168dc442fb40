//! `ambit-node-agent`: the process between the CNI plugin and ztunnel on each node.
//!
//! ```text
//!  ambit-cni --add/del/check--> node agent --enroll/unenroll/snapshot--> ztunnel
//!                 (cni.sock)        ^                 (ztunnel.sock)
//!                                   | watch: pods (spec.nodeName=<node>), namespaces
//!                              Kubernetes API
//! ```
//!
//! - [`core`]: the decisions, pure: watch events and CNI reports in, enrollment actions out.
//!   Istio's ambient rules: namespace label `istio.io/dataplane-mode=ambient` enrolls, the
//!   pod's label (`ambient`/`none`) wins, host-network pods and pods with a sidecar never.
//! - [`agent`]: the core behind a lock, answering the plugin ([`ambit_cni::server`]'s
//!   `PodEventHandler`), persisting and publishing the enrolled set.
//! - [`kube`]: the two watches; [`ztunnel`]: the link that keeps ztunnel in sync and
//!   resends a snapshot after every reconnect; [`state`]: the state file.
//! - [`discovery`]: pods the plugin never reported, matched by address to the network
//!   namespaces [`netns`] reads under `--netns-dir`.
//! - [`app`]: flags and the wiring.
//!
//! Every sandbox the plugin reports is remembered, enrolled or not, with its netns: a label
//! change later enrolls or unenrolls it live, and a pod deleted from the API is unenrolled.
//! The remembered pods survive an agent restart through the state file (pods whose netns is
//! gone are dropped on reload).
//!
//! **Fail closed.** An ADD for an enrolled pod is answered only once ztunnel confirms it
//! serves the pod; until then (ztunnel down, pod not yet in the watch) the answer is an error
//! the plugin turns into "try again later", so an ambient pod never starts outside the mesh.
//!
//! **Pods older than the agent.** The plugin reports each sandbox once, so pods that ran
//! before the agent first ran on the node (Ambit installed into a running cluster, or the
//! state file lost) are never reported. Once the pod and namespace watches have listed, and
//! whenever a pod of the node shows up with IPs but unknown, the agent scans the network
//! namespaces the runtime bind-mounts under `--netns-dir` (default `/var/run/netns`),
//! reads each one's addresses (entering it on a thread of its own: `CAP_SYS_ADMIN`) and
//! takes a pod whose `status.podIPs` are in exactly one namespace as if the plugin had
//! reported it. Ambiguous matches are refused and logged; a pod found nowhere stays unknown
//! (logged) until recreated. Istio scans `/proc` instead, which needs the host PID namespace.
//!
//! # Why a crate of its own
//! The agent needs kube-rs, k8s-openapi and clap. In the `ambit-cni` crate they would be
//! compiled into ztunnel (which embeds the protocol's server from that crate) and sit in the
//! dependency tree of the short-lived plugin binary; here they stay with the one process
//! that uses them.
#![forbid(unsafe_code)]

pub mod agent;
pub mod app;
pub mod core;
pub mod discovery;
pub mod kube;
pub mod netns;
pub mod state;
pub mod ztunnel;
