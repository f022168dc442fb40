use ambit_model::{ServiceSpec, WorkloadSpec};

use super::*;

fn workload(name: &str) -> MeshResource {
    Workload::new(WorkloadSpec {
        uid: format!("uid-{name}"),
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        service_account: "default".to_owned(),
        node: "node-a".to_owned(),
        ips: vec!["10.0.0.1".parse().unwrap()],
        ..WorkloadSpec::default()
    })
    .unwrap()
    .into()
}

fn service(name: &str) -> MeshResource {
    Service::new(ServiceSpec {
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        ..ServiceSpec::default()
    })
    .unwrap()
    .into()
}

fn upsert(resource: &MeshResource) -> proto::Resource {
    proto::Resource {
        key: Some(resource.key().to_proto()),
        payload: resource.encode().unwrap(),
    }
}

fn update(version: u64, full: bool, upserts: &[MeshResource]) -> proto::ConfigUpdate {
    proto::ConfigUpdate {
        version,
        nonce: format!("n{version}"),
        full,
        upserts: upserts.iter().map(upsert).collect(),
        removals: Vec::new(),
        more: false,
    }
}

#[test]
fn full_then_incremental() {
    let view = ConfigView::default();
    assert!(!view.is_synced());
    let view = view
        .apply(&update(1, true, &[workload("a"), service("cart")]), true)
        .unwrap();
    assert_eq!(view.version(), Some(1));
    assert_eq!(view.workloads().count(), 1);
    assert_eq!(view.services().count(), 1);

    let mut next = update(2, false, &[workload("b")]);
    next.removals.push(service("cart").key().to_proto());
    let view = view.apply(&next, false).unwrap();
    let names: Vec<_> = view.workloads().map(Workload::name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(view.services().count(), 0);

    // A full resync replaces everything.
    let view = view
        .apply(&update(3, true, &[service("pay")]), false)
        .unwrap();
    assert_eq!(view.len(), 1);
    assert!(view.get(&service("pay").key()).is_some());
}

#[test]
fn first_update_must_be_full() {
    let err = ConfigView::default()
        .apply(&update(1, false, &[workload("a")]), true)
        .unwrap_err();
    assert!(err.detail().contains("full resync"), "{err}");
}

#[test]
fn invalid_payload_rejects_whole_update() {
    let mut bad = update(2, false, &[workload("a")]);
    bad.upserts.push(proto::Resource {
        key: Some(ResourceKey::new(ResourceKind::Service, "shop", "BAD").to_proto()),
        payload: br#"{"name":"BAD","namespace":"shop"}"#.to_vec().into(),
    });
    let err = ConfigView::default().apply(&bad, false).unwrap_err();
    assert!(err.detail().contains("Service shop/BAD"), "{err}");
}

#[test]
fn key_must_match_payload_and_kind_must_be_known() {
    let mut mismatched = upsert(&workload("a"));
    mismatched.key = Some(ResourceKey::new(ResourceKind::Workload, "shop", "other").to_proto());
    let mut up = update(1, true, &[]);
    up.upserts.push(mismatched);
    assert!(ConfigView::default().apply(&up, true).is_err());

    let mut unknown = update(1, true, &[]);
    unknown.upserts.push(proto::Resource {
        key: Some(proto::ResourceKey {
            kind: "Gadget".to_owned(),
            namespace: "shop".to_owned(),
            name: "x".to_owned(),
        }),
        payload: b"{}".to_vec().into(),
    });
    let err = ConfigView::default().apply(&unknown, true).unwrap_err();
    assert!(err.detail().contains("unknown resource kind"), "{err}");
}

#[test]
fn duplicates_and_removals_in_full_are_rejected() {
    let dup = update(1, true, &[workload("a"), workload("a")]);
    assert!(ConfigView::default().apply(&dup, true).is_err());
    let mut full_with_removal = update(1, true, &[]);
    full_with_removal
        .removals
        .push(workload("a").key().to_proto());
    assert!(
        ConfigView::default()
            .apply(&full_with_removal, true)
            .is_err()
    );
}

#[test]
fn from_resources_equals_the_full_resync_and_refuses_duplicates() {
    let resources = [workload("a"), service("cart")];
    let built = ConfigView::from_resources(7, resources.clone()).unwrap();
    let applied = ConfigView::default()
        .apply(&update(7, true, &resources), true)
        .unwrap();
    assert_eq!(built, applied);
    assert_eq!(built.services().count(), 1);

    let err = ConfigView::from_resources(1, [service("cart"), service("cart")]).unwrap_err();
    assert!(err.to_string().contains("cart"), "{err}");
}
