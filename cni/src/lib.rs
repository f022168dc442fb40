//! Ambit's CNI plugin, and the node-agent protocol that tells ztunnel about pods.
//!
//! ```text
//!  kubelet/runtime --exec--> ambit-cni --add/del/check--> node agent --enroll/unenroll/snapshot--> ztunnel
//!                  (env+stdin)      (unix socket, AgentRequest)     (unix socket, ZtunnelRequest)
//! ```
//!
//! - [`protocol`]: both conversations: newline-delimited, versioned, strictly validated JSON.
//! - [`server`]: the tokio server that ztunnel (and the node agent) embed.
//! - [`client`]: a blocking client with connect and call deadlines.
//! - [`snapshot`]: the enrolled-pod set and what a snapshot changes in it.
//! - [`plugin`]: the chained CNI plugin as a pure function; `src/bin/ambit-cni.rs` runs it.
//!
//! # Who decides which pods join the mesh
//!
//! The plugin does not. Putting the ambient namespaces in the CNI configuration would go stale
//! the moment someone labels a namespace, and would need a Kubernetes client in a process that
//! lives for one call. Instead the plugin reports *every* ADD and DEL to the node agent, which
//! watches the labels (`istio.io/dataplane-mode`, namespace and pod) through the Kubernetes API
//! (`ambit-node-agent`, crate `node-agent/`) and answers `ack` with `enrolled: true|false`. Pods outside the mesh are left alone.
//! The only static input is `excludeNamespaces`, for pods the mesh itself needs to start.
//!
//! **Fail closed:** if the agent cannot be reached or is not ready on ADD, the plugin returns
//! CNI error 11 (try again later). The kubelet retries sandbox creation, so a pod that belongs
//! to the mesh never starts outside it. DEL never fails because of the agent: the agent
//! reconciles against its pod watch anyway, and a failing DEL would wedge pod teardown.
//!
//! **Identity:** the runtime passes namespace, name and (with containerd and CRI-O) the pod
//! UID in `CNI_ARGS`, but never the service account. So the plugin's [`protocol::PodReport`]
//! has optional `uid` and `service_account`; the agent resolves both from the pod object and
//! only then sends ztunnel a [`protocol::PodInfo`], in which every field is required.
#![forbid(unsafe_code)]

pub mod client;
pub mod plugin;
pub mod protocol;
pub mod server;
pub mod snapshot;
mod validate;
