//! The `ambit` command.
//!
//! | verb | state |
//! |---|---|
//! | `ambit check` | done: pre-flight checks for local mode |
//! | `ambit ztunnel-config …` | done: reads a ztunnel's admin port (`--admin`), or on a cluster the admin port of a node's ztunnel pod through the API server (`--node`/`--pod`) |
//! | `ambit local …` | done: a daemon holding the local mesh (`ambit-localmesh`), verbs over its socket |
//! | `ambit demo` | done: the sample app through every step, in-process local mesh, a report |
//! | `ambit waypoint …` | done: the Gateway sent to the local mesh daemon, or server-side applied to a cluster |
//! | `ambit install --dry-run` | done: the charts rendered by `ambit-install`; applying to a cluster is not built (exit 2) |
//!
//! `waypoint` and `ztunnel-config` choose their target with [`target`]: local mode when its
//! daemon runs, else the kubeconfig's cluster; `--local`/`--cluster`/`--kubeconfig`/`--context`
//! decide explicitly.
//!
//! Exit codes: 0 success, 1 failure (a check failed, a proxy could not be read), 2 usage
//! error or a verb that is not implemented yet.
#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod check;
pub mod cluster;
pub mod demo;
pub mod install;
pub mod local;
pub mod table;
pub mod target;
pub mod waypoint;
pub mod ztunnel_config;

/// A verb that is declared but not built yet.
#[derive(Debug, thiserror::Error)]
#[error("`ambit {verb}` is not implemented yet (tracked in issue 6); nothing was done")]
pub struct NotImplemented {
    /// The verb, as typed (`local up`, `demo`…).
    pub verb: &'static str,
}
