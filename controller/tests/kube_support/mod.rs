//! The recording mock of the Kubernetes API server (`ambit-kube-mock`), plus what only the
//! controller's tests need: the check of every recorded request against the controller's
//! declared RBAC list, and its JSON fixtures.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use ambit_controller::kube::{ApiPermission, is_permitted, required_permissions};
pub use ambit_kube_mock::*;
use serde_json::Value;

/// The RBAC check of a [`MockApi`]'s requests.
pub trait Permitted {
    /// Asserts that `API_PERMISSIONS` covers every request made so far.
    fn assert_all_permitted(&self) {
        self.assert_all_permitted_with(&[]);
    }

    /// Asserts that `API_PERMISSIONS` and `extra` cover every request made so far.
    fn assert_all_permitted_with(&self, extra: &[ApiPermission]);
}

impl Permitted for MockApi {
    fn assert_all_permitted_with(&self, extra: &[ApiPermission]) {
        let log = self.log();
        assert!(!log.is_empty(), "no requests were made");
        for request in log {
            let needed = required_permissions(
                &request.method,
                &request.uri,
                request.content_type.as_deref(),
            )
            .unwrap_or_else(|err| panic!("{err}"));
            for permission in needed {
                assert!(
                    is_permitted(&permission) || extra.iter().any(|p| p.allows(&permission)),
                    "{} needs `{permission}`, which API_PERMISSIONS lacks",
                    request.line()
                );
            }
        }
    }
}

/// A JSON fixture from `tests/fixtures/kube/`.
pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kube")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path:?}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path:?}: {err}"))
}

/// `(type, status, observedGeneration)` of each condition in a written status.
pub fn condition_summary(conditions: &Value) -> Vec<(String, String, i64)> {
    conditions
        .as_array()
        .expect("conditions is a list")
        .iter()
        .map(|c| {
            (
                c["type"].as_str().expect("type").to_owned(),
                c["status"].as_str().expect("status").to_owned(),
                c["observedGeneration"]
                    .as_i64()
                    .expect("observedGeneration"),
            )
        })
        .collect()
}
