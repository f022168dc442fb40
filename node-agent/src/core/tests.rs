use super::*;
use crate::discovery::Outcome;

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

fn with_ips(pod: ApiPod, ips: &[&str]) -> ApiPod {
    ApiPod {
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ..pod
    }
}

fn scan(entries: &[(&str, &str)]) -> NetnsAddrs {
    entries
        .iter()
        .map(|(netns, ip)| ((*netns).to_owned(), vec![ip.parse().unwrap()]))
        .collect()
}

fn candidate_names(core: &Core) -> Vec<String> {
    core.candidates().into_iter().map(|c| c.name).collect()
}

#[test]
fn scan_candidates_are_unknown_running_pods_with_ips() {
    let finished = ApiPod {
        finished: true,
        ..with_ips(api_pod("u-done", "shop", "job-0"), &["10.0.0.5"])
    };
    let host = ApiPod {
        host_network: true,
        ..with_ips(api_pod("u-host", "shop", "agent-0"), &["192.0.2.1"])
    };
    let pods = vec![
        with_ips(api_pod(UID_A, "shop", "web-0"), &["10.0.0.1"]),
        with_ips(api_pod(UID_B, "shop", "web-1"), &["10.0.0.2"]),
        api_pod("u-new", "shop", "web-2"),
        with_ips(api_pod("u-dns", "kube-system", "dns-0"), &["10.0.0.3"]),
        finished,
        host,
    ];
    let mut core = Core::with_excluded_namespaces(["kube-system".to_owned()].into());
    core.apply(ClusterEvent::PodsListed(pods.clone()));
    assert!(core.candidates().is_empty(), "namespaces not listed yet");
    core.apply(ClusterEvent::NamespacesListed(vec![namespace(
        "shop",
        Some("ambient"),
    )]));
    assert_eq!(candidate_names(&core), ["web-0", "web-1"]);
    // A reported pod is known; a pod whose sandbox the plugin deleted is being torn down.
    added(&mut core, &report("shop", "web-0", None, "c1"));
    core.del(&report("shop", "web-1", None, "c2"));
    assert!(core.candidates().is_empty());
    // A new sandbox of it is reported again, and then it is known.
    added(&mut core, &report("shop", "web-1", None, "c3"));
    assert!(core.candidates().is_empty());
}

#[test]
fn discovered_pods_are_decided_and_deleted_like_reported_ones() {
    let mut core = synced(vec![
        with_ips(api_pod(UID_A, "shop", "web-0"), &["10.0.0.1"]),
        with_ips(api_pod(UID_B, "plain", "db-0"), &["10.0.0.2"]),
    ]);
    assert!(core.wants_scan());
    let (changes, outcomes) =
        core.discover(&scan(&[("/n/cni-a", "10.0.0.1"), ("/n/cni-b", "10.0.0.2")]));
    assert_eq!(uids(&changes.actions), [format!("+{UID_A}")]);
    assert!(changes.known_changed);
    assert_eq!(outcomes.len(), 2);
    assert!(!core.wants_scan());
    let web = core.known().find(|k| k.uid == UID_A).unwrap();
    assert_eq!(
        (web.netns.as_str(), web.container_id.as_str()),
        ("/n/cni-a", "")
    );
    assert_eq!(web.service_account, "web");
    let db = PodReport {
        netns: Some("/n/cni-b".into()),
        ..report("plain", "db-0", None, "any")
    };
    assert_eq!(core.check(&db), Some(false));

    // No sandbox ID is known: a DEL naming another netns is another sandbox's...
    let elsewhere = PodReport {
        netns: Some("/n/cni-other".into()),
        ..report("shop", "web-0", None, "c9")
    };
    assert_eq!(core.del(&elsewhere), Changes::default());
    // ...one with the same netns, or none, is this one.
    let teardown = PodReport {
        netns: None,
        ..report("shop", "web-0", None, "c9")
    };
    let changes = core.del(&teardown);
    assert_eq!(uids(&changes.actions), [format!("-{UID_A}")]);
    assert!(!core.wants_scan(), "a deleted sandbox is not looked for");
}

#[test]
fn an_unmatched_pod_is_looked_for_again_only_when_its_ips_change() {
    let mut core = synced(vec![api_pod(UID_A, "shop", "web-0")]);
    assert!(
        !core.wants_scan(),
        "no IPs yet: wait for the event that brings them"
    );
    core.apply(ClusterEvent::PodApplied(with_ips(
        api_pod(UID_A, "shop", "web-0"),
        &["10.0.0.1"],
    )));
    assert!(core.wants_scan());
    let (changes, outcomes) = core.discover(&scan(&[("/n/cni-x", "10.0.0.9")]));
    assert_eq!(changes, Changes::default());
    assert_eq!(outcomes[0].1, Outcome::NotFound);
    assert!(!core.wants_scan());
    // Another event of the pod with the same IPs: nothing new to look for.
    core.apply(ClusterEvent::PodApplied(ApiPod {
        labels: labels(&[("version", "2")]),
        ..with_ips(api_pod(UID_A, "shop", "web-0"), &["10.0.0.1"])
    }));
    assert!(!core.wants_scan());
    core.apply(ClusterEvent::PodApplied(with_ips(
        api_pod(UID_A, "shop", "web-0"),
        &["10.0.0.1", "fd00::1"],
    )));
    assert!(core.wants_scan());
    core.scan_failed();
    assert!(!core.wants_scan());
}

#[test]
fn a_netns_of_a_known_pod_is_not_discovered_for_another() {
    let mut core = synced(vec![
        api_pod(UID_A, "shop", "web-0"),
        // A stale status claiming web-0's address.
        with_ips(api_pod(UID_B, "shop", "web-1"), &["10.0.0.1"]),
    ]);
    added(&mut core, &report("shop", "web-0", None, "c1"));
    let (changes, outcomes) = core.discover(&scan(&[("/var/run/netns/cni-c1", "10.0.0.1")]));
    assert_eq!(changes, Changes::default());
    assert!(
        matches!(outcomes[0].1, Outcome::Ambiguous(_)),
        "{outcomes:?}"
    );
    assert_eq!(core.known().count(), 1);
}
