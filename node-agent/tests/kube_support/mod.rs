//! The recording mock of the Kubernetes API server, shared with the controller's and the
//! CLI's tests.

pub(crate) use ambit_kube_mock::*;
