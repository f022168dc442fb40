use super::*;

const UID_A: &str = "6b1f0c2e-0000-4000-8000-00000000000a";
const UID_B: &str = "6b1f0c2e-0000-4000-8000-00000000000b";

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn api_pod(uid: &str, namespace: &str, name: &str) -> ApiPod {
    ApiPod {
        uid: uid.into(),
        namespace: namespace.into(),
        name: name.into(),
        service_account: "web".into(),
        labels: Labels::new(),
        host_network: false,
        has_sidecar: false,
        ips: Vec::new(),
        finished: false,
    }
}

fn report(namespace: &str, name: &str, uid: Option<&str>, container: &str) -> PodReport {
    PodReport {
        container_id: container.into(),
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.map(str::to_owned),
        service_account: None,
        netns: Some(format!("/var/run/netns/cni-{container}")),
    }
}

fn namespace(name: &str, mode: Option<&str>) -> (String, Labels) {
    let labels = match mode {
        Some(mode) => labels(&[(DATAPLANE_MODE, mode)]),
        None => Labels::new(),
    };
    (name.to_owned(), labels)
}

/// A synced core with `shop` ambient, `plain` unlabelled and the given pods.
fn synced(pods: Vec<ApiPod>) -> Core {
    let mut core = Core::new();
    core.apply(ClusterEvent::NamespacesListed(vec![
        namespace("shop", Some("ambient")),
        namespace("plain", None),
    ]));
    core.apply(ClusterEvent::PodsListed(pods));
    core
}

fn added(core: &mut Core, report: &PodReport) -> (bool, Changes) {
    match core.add(report) {
        (AddOutcome::Added { enrolled, pod }, changes) => {
            assert_eq!(Some(&pod.netns), report.netns.as_ref());
            (enrolled, changes)
        }
        (other, _) => panic!("not added: {other:?}"),
    }
}

fn uids(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Enroll(pod) => format!("+{}", pod.uid),
            Action::Unenroll(uid) => format!("-{uid}"),
        })
        .collect()
}

#[test]
fn dataplane_mode_precedence() {
    let ambient = labels(&[(DATAPLANE_MODE, "ambient")]);
    let none = labels(&[(DATAPLANE_MODE, "none")]);
    let odd = labels(&[(DATAPLANE_MODE, "sidecar")]);
    let empty = Labels::new();
    let with = |pod_labels: &Labels| ApiPod {
        labels: pod_labels.clone(),
        ..api_pod(UID_A, "shop", "web-0")
    };
    // (namespace, pod, enrolled)
    let cases = [
        (&empty, &empty, false),
        (&ambient, &empty, true),
        (&ambient, &none, false),
        (&empty, &ambient, true),
        (&none, &ambient, true),
        (&none, &empty, false),
        // An unknown pod value is ignored: the namespace decides.
        (&ambient, &odd, true),
        (&empty, &odd, false),
        (&odd, &empty, false),
    ];
    for (ns, pod, want) in cases {
        assert_eq!(
            decide(ns, &with(pod)),
            want,
            "namespace {ns:?}, pod {pod:?}"
        );
    }
}

#[test]
fn host_network_and_sidecar_pods_are_never_enrolled() {
    let ambient = labels(&[(DATAPLANE_MODE, "ambient")]);
    let host = ApiPod {
        host_network: true,
        labels: ambient.clone(),
        ..api_pod(UID_A, "shop", "web-0")
    };
    assert!(!decide(&ambient, &host));
    let sidecar = ApiPod {
        has_sidecar: true,
        labels: ambient.clone(),
        ..api_pod(UID_A, "shop", "web-0")
    };
    assert!(!decide(&ambient, &sidecar));

    let mut core = synced(vec![host]);
    let (enrolled, changes) = added(&mut core, &report("shop", "web-0", None, "c1"));
    assert!(!enrolled);
    assert!(changes.actions.is_empty());
    assert!(changes.known_changed, "unenrolled pods are remembered too");
    assert_eq!(
        core.check(&report("shop", "web-0", None, "c1")),
        Some(false)
    );
}

#[test]
fn add_resolves_uid_and_service_account_and_enrolls() {
    let mut core = synced(vec![api_pod(UID_A, "shop", "web-0")]);
    let (outcome, changes) = core.add(&report("shop", "web-0", None, "c1"));
    let AddOutcome::Added { enrolled, pod } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(enrolled);
    assert_eq!(pod.uid, UID_A);
    assert_eq!(pod.service_account, "web");
    assert_eq!(changes.actions, [Action::Enroll(pod.clone())]);
    assert_eq!(core.enrolled().into_values().collect::<Vec<_>>(), [pod]);
}

#[test]
fn add_waits_for_sync_and_for_the_pod() {
    let mut core = Core::new();
    let web = report("shop", "web-0", Some(UID_A), "c1");
    assert_eq!(core.add(&web).0, AddOutcome::Pending(Pending::NotSynced));
    core.apply(ClusterEvent::PodsListed(vec![]));
    assert_eq!(core.add(&web).0, AddOutcome::Pending(Pending::NotSynced));
    core.apply(ClusterEvent::NamespacesListed(vec![namespace(
        "shop",
        Some("ambient"),
    )]));
    assert_eq!(core.add(&web).0, AddOutcome::Pending(Pending::UnknownPod));
    // A pod of the same name with another UID (the previous incarnation) is not it.
    core.apply(ClusterEvent::PodApplied(api_pod(UID_B, "shop", "web-0")));
    assert_eq!(core.add(&web).0, AddOutcome::Pending(Pending::UnknownPod));
    core.apply(ClusterEvent::PodApplied(api_pod(UID_A, "shop", "web-0")));
    let (enrolled, _) = added(&mut core, &web);
    assert!(enrolled);

    // A pod of a namespace the namespace watch has not shown yet waits for its labels.
    let fresh = report("fresh", "web-1", Some(UID_B), "c2");
    core.apply(ClusterEvent::PodApplied(api_pod(UID_B, "fresh", "web-1")));
    assert_eq!(
        core.add(&fresh).0,
        AddOutcome::Pending(Pending::UnknownNamespace)
    );
    let (name, labels) = namespace("fresh", Some("ambient"));
    core.apply(ClusterEvent::NamespaceApplied { name, labels });
    assert!(added(&mut core, &fresh).0);
}

#[test]
fn a_uid_of_another_pod_is_rejected() {
    let mut core = synced(vec![api_pod(UID_A, "shop", "web-0")]);
    let (outcome, changes) = core.add(&report("shop", "web-1", Some(UID_A), "c1"));
    assert!(matches!(outcome, AddOutcome::Rejected(_)), "{outcome:?}");
    assert_eq!(changes, Changes::default());
    assert!(core.enrolled().is_empty());
}

#[test]
fn namespace_label_flip_enrolls_and_unenrolls_live() {
    let mut core = synced(vec![
        api_pod(UID_A, "plain", "web-0"),
        api_pod(UID_B, "plain", "web-1"),
    ]);
    let (enrolled, _) = added(&mut core, &report("plain", "web-0", None, "c1"));
    assert!(!enrolled);
    added(&mut core, &report("plain", "web-1", None, "c2"));

    let (name, ambient) = namespace("plain", Some("ambient"));
    let changes = core.apply(ClusterEvent::NamespaceApplied {
        name,
        labels: ambient,
    });
    assert_eq!(
        uids(&changes.actions),
        [format!("+{UID_A}"), format!("+{UID_B}")]
    );
    assert_eq!(
        core.check(&report("plain", "web-0", None, "c1")),
        Some(true)
    );

    let changes = core.apply(ClusterEvent::NamespaceDeleted("plain".into()));
    assert_eq!(
        uids(&changes.actions),
        [format!("-{UID_A}"), format!("-{UID_B}")]
    );
    assert!(core.enrolled().is_empty());
}

#[test]
fn pod_label_flip_overrides_the_namespace_live() {
    let mut core = synced(vec![api_pod(UID_A, "shop", "web-0")]);
    added(&mut core, &report("shop", "web-0", None, "c1"));
    let opt_out = ApiPod {
        labels: labels(&[(DATAPLANE_MODE, "none")]),
        ..api_pod(UID_A, "shop", "web-0")
    };
    let changes = core.apply(ClusterEvent::PodApplied(opt_out));
    assert_eq!(uids(&changes.actions), [format!("-{UID_A}")]);
    // The pod is still known, so removing the label brings it back.
    let changes = core.apply(ClusterEvent::PodApplied(api_pod(UID_A, "shop", "web-0")));
    assert_eq!(uids(&changes.actions), [format!("+{UID_A}")]);
    // An unrelated change (another label) sends nothing.
    let relabelled = ApiPod {
        labels: labels(&[("version", "v2")]),
        ..api_pod(UID_A, "shop", "web-0")
    };
    let changes = core.apply(ClusterEvent::PodApplied(relabelled));
    assert!(changes.actions.is_empty());
    assert!(!changes.known_changed);
}

#[test]
fn a_pod_deleted_from_the_api_is_unenrolled_and_forgotten() {
    let mut core = synced(vec![api_pod(UID_A, "shop", "web-0")]);
    added(&mut core, &report("shop", "web-0", None, "c1"));
    let changes = core.apply(ClusterEvent::PodDeleted(UID_A.into()));
    assert_eq!(uids(&changes.actions), [format!("-{UID_A}")]);
    assert!(changes.known_changed);
    assert_eq!(core.known().count(), 0);
    assert_eq!(core.check(&report("shop", "web-0", None, "c1")), None);
}

#[test]
fn a_relist_without_the_pod_counts_as_a_delete() {
    let mut core = synced(vec![
        api_pod(UID_A, "shop", "web-0"),
        api_pod(UID_B, "shop", "web-1"),
    ]);
    added(&mut core, &report("shop", "web-0", None, "c1"));
    added(&mut core, &report("shop", "web-1", None, "c2"));
    let changes = core.apply(ClusterEvent::PodsListed(vec![api_pod(
        UID_B, "shop", "web-1",
    )]));
    assert_eq!(uids(&changes.actions), [format!("-{UID_A}")]);
    assert_eq!(core.enrolled().keys().collect::<Vec<_>>(), [UID_B]);
}

#[test]
fn del_forgets_only_the_reported_sandbox() {
    let mut core = synced(vec![api_pod(UID_A, "shop", "web-0")]);
    added(&mut core, &report("shop", "web-0", None, "c1"));
    // The runtime retried the sandbox: the new one replaces the old (new netns).
    let (_, changes) = added(&mut core, &report("shop", "web-0", Some(UID_A), "c2"));
    let Action::Enroll(pod) = &changes.actions[0] else {
        panic!("{changes:?}")
    };
    assert_eq!(pod.netns, "/var/run/netns/cni-c2");
    // The DEL of the failed first sandbox must not unenroll the new one.
    let changes = core.del(&report("shop", "web-0", Some(UID_A), "c1"));
    assert_eq!(changes, Changes::default());
    assert_eq!(core.check(&report("shop", "web-0", None, "c2")), Some(true));
    assert_eq!(core.check(&report("shop", "web-0", None, "c1")), None);

    let changes = core.del(&report("shop", "web-0", None, "c2"));
    assert_eq!(uids(&changes.actions), [format!("-{UID_A}")]);
    // DEL is idempotent, and fine for pods never seen.
    assert_eq!(
        core.del(&report("shop", "web-0", None, "c2")),
        Changes::default()
    );
    assert_eq!(
        core.del(&report("plain", "other", None, "c9")),
        Changes::default()
    );
}

#[test]
fn a_new_pod_with_the_same_name_replaces_the_old_one() {
    let mut core = synced(vec![api_pod(UID_A, "shop", "web-0")]);
    added(&mut core, &report("shop", "web-0", None, "c1"));
    // StatefulSet pod recreated: the watch has the new UID before the old delete arrives.
    core.apply(ClusterEvent::PodApplied(api_pod(UID_B, "shop", "web-0")));
    let (_, changes) = added(&mut core, &report("shop", "web-0", Some(UID_B), "c2"));
    assert_eq!(
        uids(&changes.actions),
        [format!("-{UID_A}"), format!("+{UID_B}")]
    );
    assert_eq!(core.known().count(), 1);
}

#[test]
fn restart_reload_keeps_decisions_until_the_first_list() {
    let mut first = synced(vec![
        api_pod(UID_A, "shop", "web-0"),
        api_pod(UID_B, "plain", "db-0"),
    ]);
    added(&mut first, &report("shop", "web-0", None, "c1"));
    added(&mut first, &report("plain", "db-0", None, "c2"));
    let persisted: Vec<KnownPod> = first.known().cloned().collect();
    let gone = KnownPod {
        uid: "6b1f0c2e-0000-4000-8000-00000000000c".into(),
        netns: "/var/run/netns/cni-gone".into(),
        ..persisted[0].clone()
    };

    let mut restarted = Core::new();
    let mut all = persisted.clone();
    all.push(gone);
    let changes = restarted.restore(all, |netns| netns != "/var/run/netns/cni-gone");
    // Enrolled before the restart: in the snapshot at once, before the API answers.
    assert_eq!(uids(&changes.actions), [format!("+{UID_A}")]);
    assert_eq!(restarted.known().cloned().collect::<Vec<_>>(), persisted);
    assert_eq!(
        restarted.check(&report("plain", "db-0", None, "c2")),
        Some(false)
    );

    // The first list: db-0's namespace became ambient meanwhile, web-0 was deleted.
    restarted.apply(ClusterEvent::NamespacesListed(vec![namespace(
        "plain",
        Some("ambient"),
    )]));
    let changes = restarted.apply(ClusterEvent::PodsListed(vec![api_pod(
        UID_B, "plain", "db-0",
    )]));
    assert_eq!(
        uids(&changes.actions),
        [format!("-{UID_A}"), format!("+{UID_B}")]
    );
    assert!(changes.known_changed);
}

#[test]
fn a_pod_ztunnel_would_refuse_is_not_enrolled() {
    let bad = ApiPod {
        service_account: "Not_Valid".into(),
        ..api_pod(UID_A, "shop", "web-0")
    };
    let mut core = synced(vec![bad]);
    let (enrolled, changes) = added(&mut core, &report("shop", "web-0", None, "c1"));
    assert!(!enrolled);
    assert!(changes.actions.is_empty());
}
