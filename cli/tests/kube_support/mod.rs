//! The recording mock of the Kubernetes API server (`ambit-kube-mock`, shared with the
//! controller's and the node agent's tests), and a real fake API server for port-forwards,
//! which need an HTTP upgrade the mock cannot do: [`portforward`].

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub use ambit_kube_mock::*;

pub mod portforward;
