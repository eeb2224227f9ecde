//! Selection, the apply configuration and the status counts, over in-memory stores: no API
//! server (the client refuses every call, and none is made).

use super::status::Counts;
use super::*;
use kube::runtime::watcher;
use serde_json::json;

/// A client whose every request fails: these functions only read the stores (a client
/// needs a runtime, hence the async tests).
fn offline_client() -> kube::Client {
    let service = tower::service_fn(|_: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("no API server"))
    });
    kube::Client::new(service, "default")
}

/// A store holding `objects`, as after a watch's first list.
fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    listed(kube::runtime::reflector::store::Writer::default(), objects)
}

/// What `writer` holds after a first list of `objects`.
fn listed<K>(mut writer: kube::runtime::reflector::store::Writer<K>, objects: Vec<K>) -> Store<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let reader = writer.as_reader();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

fn policy(name: &str, selector: serde_json::Value) -> PostgresTLSPolicy {
    serde_json::from_value(
        json!({"apiVersion": "verifyfull.dev/v1alpha1", "kind": "PostgresTLSPolicy",
        "metadata": {"name": name},
        "spec": {"caSource": {"configMap": {"namespace": "verifyfull", "name": "corp-ca"}},
                 "namespaceSelector": selector}}),
    )
    .expect("policy")
}

fn namespace(name: &str, labels: serde_json::Value) -> PartialObjectMeta<Namespace> {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels}}))
    .expect("namespace")
}

/// The CA copy in `ns`, as the policy reconciler leaves it.
fn copy(ns: &str, policy: &str, hash: &str) -> PartialObjectMeta<ConfigMap> {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("verifyfull-ca-{policy}"), "namespace": ns,
                     "annotations": {HASH_ANNOTATION: hash}}}))
    .expect("copy")
}

/// A Deployment whose one container talks to `db.example.net` with `sslmode` (and a root
/// certificate of its own when `root`).
fn deployment_with(ns: &str, name: &str, sslmode: &str, root: bool) -> Workload {
    serde_json::from_value(deployment_value(ns, name, sslmode, root)).expect("deployment")
}

fn deployment_value(ns: &str, name: &str, sslmode: &str, root: bool) -> serde_json::Value {
    let mut env = vec![
        json!({"name": "PGHOST", "value": "db.example.net"}),
        json!({"name": "PGSSLMODE", "value": sslmode}),
    ];
    if root {
        env.push(json!({"name": "PGSSLROOTCERT", "value": "/etc/ca/ca.crt"}));
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
            {"name": "app", "image": "x", "env": env}]}}}})
}

fn deployment(ns: &str, name: &str, sslmode: &str) -> Workload {
    deployment_with(ns, name, sslmode, false)
}

fn ctx(
    policies: Vec<PostgresTLSPolicy>,
    namespaces: Vec<PartialObjectMeta<Namespace>>,
    copies: Vec<PartialObjectMeta<ConfigMap>>,
    deployments: Vec<Workload>,
) -> Ctx {
    let client = offline_client();
    let settings = Settings {
        excluded_namespaces: vec!["kube-system".into(), "verifyfull".into()],
        engine: policy::Settings::default(),
        resync: Duration::from_secs(300),
    };
    let workloads = Kind::ALL
        .into_iter()
        .map(|k| {
            let objects = if k == Kind::Deployment {
                deployments.clone()
            } else {
                Vec::new()
            };
            let writer = kube::runtime::reflector::store::Writer::new(k.resource());
            (k, listed(writer, objects))
        })
        .collect();
    let recorder = Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: MANAGER.into(),
            instance: None,
        },
    );
    Ctx::new(
        client,
        settings,
        (store(policies), store(namespaces), store(copies)),
        workloads,
        (
            RateLimit::new(10.0, 10),
            Rollouts::new(2, Duration::from_secs(60)),
        ),
        recorder,
        Metrics::default(),
    )
}

fn on() -> serde_json::Value {
    json!({"matchLabels": {"db-tls": "on"}})
}

#[tokio::test]
async fn a_policy_selects_by_namespace_and_two_overlapping_select_nothing() {
    let team = namespace("team", json!({"db-tls": "on"}));
    let other = namespace("other", json!({}));
    // kube-system carries the label too: only the exclusion keeps it out.
    let system = namespace("kube-system", json!({"db-tls": "on"}));
    let c = ctx(
        vec![policy("corp", on())],
        vec![team.clone(), other, system],
        vec![
            copy("team", "corp", "h1"),
            copy("kube-system", "corp", "h1"),
        ],
        vec![],
    );
    let d = c.decide(Kind::Deployment, &deployment("team", "api", "require"));
    assert_eq!(d.policy.as_ref().map(|p| p.name_any()), Some("corp".into()));
    assert!(!d.waiting);
    let plan = d.plan.as_ref().expect("a plan");
    assert_eq!(plan.containers.len(), 1, "{plan:?}");
    assert!(d.denied, "sslmode=require is a violation as it runs now");
    assert!(
        c.decide(Kind::Deployment, &deployment("other", "api", "require"))
            .policy
            .is_none()
    );
    assert!(
        c.decide(
            Kind::Deployment,
            &deployment("kube-system", "api", "require")
        )
        .policy
        .is_none(),
        "excluded namespaces are never selected"
    );

    // Two policies selecting one workload: neither applies, and both are named.
    let c = ctx(
        vec![policy("a", on()), policy("b", on())],
        vec![team],
        vec![copy("team", "a", "h1")],
        vec![],
    );
    let d = c.decide(Kind::Deployment, &deployment("team", "api", "verify-full"));
    assert!(d.policy.is_none());
    assert_eq!(d.overlap, ["a", "b"]);
}

#[tokio::test]
async fn without_the_ca_copy_a_workload_waits() {
    let c = ctx(
        vec![policy("corp", on())],
        vec![namespace("team", json!({"db-tls": "on"}))],
        vec![],
        vec![],
    );
    let d = c.decide(Kind::Deployment, &deployment("team", "api", "verify-full"));
    assert!(d.waiting && d.plan.is_none(), "{d:?}");
    assert_eq!(d.copy, "verifyfull-ca-corp");
}

#[tokio::test]
async fn the_apply_configuration_owns_only_the_injection_and_is_stamped() {
    let c = ctx(
        vec![policy("corp", on())],
        vec![namespace("team", json!({"db-tls": "on"}))],
        vec![copy("team", "corp", "h1")],
        vec![],
    );
    let w = deployment("team", "api", "verify-full");
    let d = c.decide(Kind::Deployment, &w);
    let config = c.apply_config(Kind::Deployment, &w, &d);
    assert_eq!(config["kind"], "Deployment");
    assert_eq!(config["metadata"]["name"], "api");
    let stamp = config["metadata"]["annotations"][INJECTED_ANNOTATION]
        .as_str()
        .expect("stamped");
    assert!(stamp.starts_with("corp/"), "{stamp}");
    let containers = config["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "app");
    assert!(
        containers[0].get("image").is_none(),
        "only what the operator owns: {config:#}"
    );
    // Not yet written: not converged. Written (the stamp and the injected template, as the
    // API server returns them): converged, so nothing is written again.
    assert!(!c.converged(Kind::Deployment, &w, &d, &config));
    let mut written = deployment_value("team", "api", "verify-full", false);
    written["metadata"]["annotations"] = config["metadata"]["annotations"].clone();
    let app = &config["spec"]["template"]["spec"]["containers"][0];
    let have = &mut written["spec"]["template"]["spec"];
    have["volumes"] = config["spec"]["template"]["spec"]["volumes"].clone();
    let container = &mut have["containers"][0];
    container["volumeMounts"] = app["volumeMounts"].clone();
    for e in app["env"].as_array().into_iter().flatten() {
        container["env"]
            .as_array_mut()
            .expect("env")
            .push(e.clone());
    }
    let written: Workload = serde_json::from_value(written).expect("workload");
    assert!(
        c.converged(Kind::Deployment, &written, &d, &config),
        "{config:#}"
    );
    // Not selected: a configuration that owns nothing.
    let none = c.apply_config(Kind::Deployment, &w, &WorkloadDecision::default());
    assert!(none.get("spec").is_none() && none["metadata"].get("annotations").is_none());
}

#[tokio::test]
async fn the_status_counts_what_each_policy_selects() {
    let team = namespace("team", json!({"db-tls": "on"}));
    // As it runs now: without a root certificate of its own, verify-full is a violation
    // (the CA the operator adds is not there yet).
    let mut stamped = deployment_with("team", "old", "verify-full", true);
    stamped.metadata.annotations =
        Some([(INJECTED_ANNOTATION.to_string(), "corp/x".to_string())].into());
    let c = ctx(
        vec![policy("corp", on())],
        vec![team, namespace("other", json!({}))],
        vec![copy("team", "corp", "h1")],
        vec![
            deployment("team", "weak", "require"),
            deployment_with("team", "fine", "verify-full", true),
            deployment("team", "no-root", "verify-full"),
            stamped,
            deployment("other", "elsewhere", "require"),
        ],
    );
    let counts = c.counts("corp");
    assert_eq!(counts.matched, 4);
    assert_eq!(
        counts.injected, 1,
        "only the stamped one is injected so far"
    );
    assert_eq!(counts.still_injected, 1);
    assert_eq!(counts.violations, 2);
    assert_eq!(
        counts.violating,
        ["Deployment team/no-root", "Deployment team/weak"]
    );
    assert!(counts.overlaps.is_empty());
    assert_eq!(c.counts("nobody").matched, 0);
}

fn counts(overlaps: &[&str], conflicts: i64) -> Counts {
    Counts {
        matched: 5,
        injected: 3,
        conflicts,
        violations: 1,
        violating: vec!["Deployment team/weak".into()],
        overlaps: overlaps.iter().map(|s| s.to_string()).collect(),
        still_injected: 3,
    }
}

fn conditions(s: &PostgresTlsPolicyStatus) -> Vec<(&str, &str, &str)> {
    s.conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect()
}

#[test]
fn the_status_says_ready_and_why_it_is_degraded() {
    let none = PostgresTlsPolicyStatus::default();
    let fine = distributed_status(&none, Some(2), 4, "h1".into(), counts(&[], 0));
    assert_eq!(
        conditions(&fine),
        [
            ("Ready", "True", "CADistributed"),
            ("Degraded", "False", "AsExpected")
        ]
    );
    assert_eq!((fine.matched, fine.injected, fine.namespaces), (5, 3, 4));
    assert_eq!(fine.ca_hash.as_deref(), Some("h1"));
    assert_eq!(fine.observed_generation, Some(2));
    assert_eq!(
        fine.conditions[0].message,
        "CA copied into 4 namespaces; 3 of 5 selected workloads carry it"
    );

    let overlap = distributed_status(&none, Some(2), 4, "h1".into(), counts(&["other"], 2));
    assert_eq!(
        conditions(&overlap)[1],
        ("Degraded", "True", "OverlappingPolicies")
    );
    assert!(
        overlap.conditions[1]
            .message
            .contains("also selected by other")
    );
    let conflicts = distributed_status(&none, Some(2), 4, "h1".into(), counts(&[], 2));
    assert_eq!(conditions(&conflicts)[1], ("Degraded", "True", "Conflicts"));

    // Unchanged conditions keep the time of their last transition: a resync writes nothing.
    let again = distributed_status(&fine, Some(2), 4, "h1".into(), counts(&[], 0));
    assert_eq!(again, fine);
}

#[test]
fn an_unreadable_ca_keeps_the_copies_it_had() {
    let before = distributed_status(
        &PostgresTlsPolicyStatus::default(),
        Some(1),
        4,
        "h1".into(),
        counts(&[], 0),
    );
    let s = unavailable_status(
        &before,
        Some(2),
        "SourceNotFound",
        "Secret corp-ca is gone".into(),
    );
    assert_eq!(
        conditions(&s),
        [
            ("Ready", "False", "SourceNotFound"),
            ("Degraded", "True", "SourceNotFound")
        ]
    );
    assert_eq!(s.ca_hash.as_deref(), Some("h1"));
    assert_eq!(s.namespaces, 4);
    assert_eq!(s.conditions[0].message, "Secret corp-ca is gone");
}
