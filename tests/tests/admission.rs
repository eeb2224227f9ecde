//! The stand-in's admission chain and controllers, with in-process webhooks over TLS.
#![allow(clippy::unwrap_used)] // test helpers too: a panic is the failure report

use e2e::harness::{Handler, Kubectl, TestWebhook, ca_bundle, patch_response};
use e2e::pki::Ca;
use e2e::standin::api::User;
use e2e::standin::{Options, StandIn};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn pod(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}}))
    .unwrap()
}

fn status_of(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A webhook entry reaching service `ns/name` on port 443 at `path`.
fn entry(name: &str, svc: &str, ca: &str, extra: Value) -> Value {
    let mut w = json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"service": {"namespace": "hooks", "name": svc, "path": "/"}, "caBundle": ca_bundle(ca)},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]});
    for (k, v) in extra.as_object().unwrap() {
        w[k] = v.clone();
    }
    w
}

async fn register(s: &StandIn, kind: &str, name: &str, webhooks: Vec<Value>) {
    let client = s.client(&User::admin()).await.unwrap();
    let plural = if kind == "Mutating" {
        "mutatingwebhookconfigurations"
    } else {
        "validatingwebhookconfigurations"
    };
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            &format!("{kind}WebhookConfiguration"),
        ),
        plural,
    );
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": format!("{kind}WebhookConfiguration"), "metadata": {"name": name}, "webhooks": webhooks})).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

type Seen = Arc<Mutex<Vec<Value>>>;

fn recording(seen: &Seen, answer: impl Fn(&Value) -> Value + Send + Sync + 'static) -> Handler {
    let seen = seen.clone();
    Arc::new(move |req: &Value| {
        seen.lock().unwrap().push(req.clone());
        answer(req)
    })
}

/// An allow-all webhook behind service `hooks/w`, recording what it is asked.
async fn allow_all(s: &StandIn, ca: &Ca) -> (TestWebhook, Seen) {
    let seen: Seen = Default::default();
    let pair = ca.issue(&["w.hooks.svc"]).unwrap();
    let handler = recording(&seen, |_| json!({"allowed": true}));
    let hook = TestWebhook::start(&pair, Duration::ZERO, handler)
        .await
        .unwrap();
    s.route_service("hooks", "w", 443, hook.addr);
    (hook, seen)
}

#[tokio::test]
async fn mutating_then_validating_with_reinvocation_selectors_and_warnings() {
    let s = StandIn::start(Options::default()).await.unwrap();
    let ca = Ca::new("hooks").unwrap();
    let pair = ca
        .issue(&["m.hooks.svc", "v.hooks.svc", "m2.hooks.svc"])
        .unwrap();
    let (m_seen, v_seen): (Seen, Seen) = Default::default();
    // m1 adds a label; m2 (later) adds an annotation, so m1 is re-invoked once.
    let m1 = TestWebhook::start(
        &pair,
        Duration::ZERO,
        recording(&m_seen, |req| {
            let labels = &req["object"]["metadata"]["labels"];
            if labels.is_null() {
                patch_response(
                    &json!([{"op": "add", "path": "/metadata/labels", "value": {"m1": "yes"}}]),
                )
            } else if labels["m1"].is_null() {
                patch_response(
                    &json!([{"op": "add", "path": "/metadata/labels/m1", "value": "yes"}]),
                )
            } else {
                json!({"allowed": true})
            }
        }),
    )
    .await
    .unwrap();
    let v = TestWebhook::start(&pair, Duration::ZERO, recording(&v_seen, |req| {
        if req["object"]["metadata"]["labels"]["deny"] == "yes" {
            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "pods labelled deny=yes are refused"}})
        } else {
            json!({"allowed": true, "warnings": ["looked at it"]})
        }
    })).await.unwrap();
    s.route_service("hooks", "m", 443, m1.addr);
    s.route_service("hooks", "v", 443, v.addr);
    let m2 = TestWebhook::start(&pair, Duration::ZERO, Arc::new(|req: &Value| {
        if req["object"]["metadata"]["annotations"].is_null() {
            patch_response(&json!([{"op": "add", "path": "/metadata/annotations", "value": {"m2": "yes"}}]))
        } else {
            json!({"allowed": true})
        }
    })).await.unwrap();
    s.route_service("hooks", "m2", 443, m2.addr);
    register(
        &s,
        "Mutating",
        "a-m1",
        vec![entry(
            "m1.test",
            "m",
            ca.pem(),
            json!({"reinvocationPolicy": "IfNeeded"}),
        )],
    )
    .await;
    register(&s, "Validating", "v", vec![entry("v.test", "v", ca.pem(), json!({
        "objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
        "matchConditions": [{"name": "not-ignored", "expression": "object.metadata.name != 'ignored'"}],
    }))]).await;
    let client = s.client(&User::admin()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let created = pods
        .create(&PostParams::default(), &pod("ok", json!({})))
        .await
        .unwrap();
    assert_eq!(created.metadata.labels.unwrap()["m1"], "yes");
    // The validating webhook saw the mutated object, as the API server orders them.
    assert_eq!(
        v_seen.lock().unwrap()[0]["object"]["metadata"]["labels"]["m1"],
        "yes"
    );
    let req = m_seen.lock().unwrap()[0].clone();
    assert_eq!(req["userInfo"]["username"], "kubernetes-admin");
    assert_eq!(
        (
            req["operation"].as_str(),
            req["namespace"].as_str(),
            req["kind"]["kind"].as_str()
        ),
        (Some("CREATE"), Some("default"), Some("Pod"))
    );
    assert_eq!(req["options"]["kind"], "CreateOptions");
    let e = status_of(
        pods.create(&PostParams::default(), &pod("bad", json!({"deny": "yes"})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "admission webhook \"v.test\" denied the request: pods labelled deny=yes are refused"
    );
    // objectSelector and matchConditions skip the webhook.
    pods.create(
        &PostParams::default(),
        &pod("skipped", json!({"deny": "yes", "skip": "1"})),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("ignored", json!({"deny": "yes"})),
    )
    .await
    .unwrap();
    // A second mutating configuration after m1 changes the object: m1 runs again once.
    register(
        &s,
        "Mutating",
        "b-m2",
        vec![entry("m2.test", "m2", ca.pem(), json!({}))],
    )
    .await;
    m_seen.lock().unwrap().clear();
    let p = pods
        .create(&PostParams::default(), &pod("twice", json!({})))
        .await
        .unwrap();
    assert_eq!(p.metadata.annotations.unwrap()["m2"], "yes");
    assert_eq!(
        m_seen.lock().unwrap().len(),
        2,
        "m1 re-invoked once after m2 changed the object"
    );
    // Warnings reach kubectl.
    let kubectl = Kubectl::new(&s.kubeconfig(&User::admin()).unwrap());
    let out = kubectl
        .run(
            &["create", "--validate=false", "-f", "-"],
            Some(
                &serde_json::to_string(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "warned"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}}))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("Warning: looked at it"),
        "{}",
        out.stderr
    );
    let out = kubectl.run(&["create", "--validate=false", "-f", "-"], Some(&serde_json::to_string(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "refused", "labels": {"deny": "yes"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}})).unwrap())).await.unwrap();
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "admission webhook \"v.test\" denied the request: pods labelled deny=yes are refused"
        ),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn failure_policy_timeouts_ca_and_host_checks_and_dry_run() {
    let s = StandIn::start(Options::default()).await.unwrap();
    let ca = Ca::new("hooks").unwrap();
    let other_ca = Ca::new("someone else").unwrap();
    let allow: Handler = Arc::new(|_: &Value| json!({"allowed": true}));
    let slow = TestWebhook::start(
        &ca.issue(&["slow.hooks.svc"]).unwrap(),
        Duration::from_secs(3),
        allow.clone(),
    )
    .await
    .unwrap();
    let wrong_name = TestWebhook::start(
        &ca.issue(&["elsewhere.hooks.svc"]).unwrap(),
        Duration::ZERO,
        allow.clone(),
    )
    .await
    .unwrap();
    s.route_service("hooks", "slow", 443, slow.addr);
    s.route_service("hooks", "wrongname", 443, wrong_name.addr);
    let closed = e2e::harness::free_port().unwrap();
    s.route_service("hooks", "down", 443, ([127, 0, 0, 1], closed).into());
    let client = s.client(&User::admin()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let selector = |v: &str| json!({"objectSelector": {"matchLabels": {"case": v}}});
    let mut hooks = Vec::new();
    for (case, svc, ca_pem, extra) in [
        (
            "down-fail",
            "down",
            ca.pem(),
            json!({"failurePolicy": "Fail"}),
        ),
        (
            "down-ignore",
            "down",
            ca.pem(),
            json!({"failurePolicy": "Ignore"}),
        ),
        (
            "slow",
            "slow",
            ca.pem(),
            json!({"failurePolicy": "Fail", "timeoutSeconds": 1}),
        ),
        (
            "untrusted",
            "slow",
            other_ca.pem(),
            json!({"failurePolicy": "Fail"}),
        ),
        (
            "wrongname",
            "wrongname",
            ca.pem(),
            json!({"failurePolicy": "Fail"}),
        ),
        (
            "sideeffects",
            "wrongname",
            ca.pem(),
            json!({"failurePolicy": "Ignore", "sideEffects": "Some"}),
        ),
    ] {
        let mut extra = extra;
        extra["objectSelector"] = selector(case)["objectSelector"].clone();
        hooks.push(entry(&format!("{case}.test"), svc, ca_pem, extra));
    }
    register(&s, "Validating", "cases", hooks).await;
    let e = status_of(
        pods.create(
            &PostParams::default(),
            &pod("a", json!({"case": "down-fail"})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    assert!(e.message.starts_with("Internal error occurred: failed calling webhook \"down-fail.test\": failed to call webhook: Post \"https://down.hooks.svc:443/?timeout=10s\": dial tcp"), "{}", e.message);
    pods.create(
        &PostParams::default(),
        &pod("b", json!({"case": "down-ignore"})),
    )
    .await
    .unwrap();
    for (case, why) in [
        ("slow", "context deadline exceeded"),
        ("untrusted", "failed to verify certificate"),
        ("wrongname", "failed to verify certificate"),
    ] {
        let p = pod(case, json!({"case": case}));
        let e = status_of(pods.create(&PostParams::default(), &p).await.unwrap_err());
        assert_eq!(e.code, 500);
        assert!(e.message.contains(why), "{case}: {}", e.message);
    }
    let e = status_of(
        pods.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod("f", json!({"case": "sideeffects"})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            400,
            "admission webhook \"sideeffects.test\" does not support dry run"
        )
    );
}

#[tokio::test]
async fn namespace_selector_and_subresource_rules() {
    let s = StandIn::start(Options::default()).await.unwrap();
    let ca = Ca::new("hooks").unwrap();
    let (_hook, seen) = allow_all(&s, &ca).await;
    register(&s, "Validating", "ns", vec![entry("ns.test", "w", ca.pem(), json!({
        "namespaceSelector": {"matchLabels": {"watched": "yes"}},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods", "pods/ephemeralcontainers"]}],
    }))]).await;
    let client = s.client(&User::admin()).await.unwrap();
    let nss: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
    );
    for (name, labels) in [("watched", json!({"watched": "yes"})), ("quiet", json!({}))] {
        let ns: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})).unwrap();
        nss.create(&PostParams::default(), &ns).await.unwrap();
    }
    for ns in ["watched", "quiet"] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        pods.create(&PostParams::default(), &pod("p", json!({})))
            .await
            .unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(seen.lock().unwrap()[0]["namespace"], "watched");
    // Adding an ephemeral container is an UPDATE of pods/ephemeralcontainers.
    let pods: Api<Pod> = Api::namespaced(client, "watched");
    let debug =
        json!({"spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}});
    pods.patch_subresource(
        "ephemeralcontainers",
        "p",
        &PatchParams::default(),
        &Patch::Strategic(debug),
    )
    .await
    .unwrap();
    let req = seen.lock().unwrap()[1].clone();
    assert_eq!(
        (req["operation"].as_str(), req["subResource"].as_str()),
        (Some("UPDATE"), Some("ephemeralcontainers"))
    );
    assert_eq!(
        req["object"]["spec"]["ephemeralContainers"][0]["name"],
        "debugger"
    );
    assert!(req["oldObject"]["spec"]["ephemeralContainers"].is_null());
}

#[tokio::test]
async fn controllers_create_pods_as_themselves() {
    let s = StandIn::start(Options::default()).await.unwrap();
    let ca = Ca::new("hooks").unwrap();
    let (_hook, seen) = allow_all(&s, &ca).await;
    register(
        &s,
        "Validating",
        "pods",
        vec![entry("pods.test", "w", ca.pem(), json!({}))],
    )
    .await;
    let client = s.client(&User::admin()).await.unwrap();
    let deploys: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
    );
    let d: DynamicObject = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "web:1"}]}}}})).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let cjs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::erase::<k8s_openapi::api::batch::v1::CronJob>(&()),
    );
    let cj: DynamicObject = serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "job", "image": "job:1"}]}}}}}})).unwrap();
    cjs.create(&PostParams::default(), &cj).await.unwrap();
    let job = s.trigger_cronjob("default", "nightly").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = pods.list(&ListParams::default()).await.unwrap().items.len();
        if n == 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} pods");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job_pods = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap();
    assert_eq!(job_pods.items.len(), 1);
    let users: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["userInfo"]["username"].as_str().unwrap().to_string())
        .collect();
    let count = |u: &str| users.iter().filter(|x| x.as_str() == u).count();
    assert_eq!(
        count("system:serviceaccount:kube-system:replicaset-controller"),
        2,
        "{users:?}"
    );
    assert_eq!(
        count("system:serviceaccount:kube-system:job-controller"),
        1,
        "{users:?}"
    );
}

#[tokio::test]
async fn custom_resources_follow_their_crd() {
    let s = StandIn::start(Options::default()).await.unwrap();
    let client = s.client(&User::admin()).await.unwrap();
    let crd_ar = ApiResource::erase::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(&());
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_ar);
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.dev"},
        "spec": {"group": "example.dev", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "required": ["size"],
                                 "x-kubernetes-validations": [{"rule": "self.size <= self.max", "message": "size may not exceed max"}],
                                 "properties": {"size": {"type": "integer"}, "max": {"type": "integer", "default": 10}}},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}})).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = crds.get("widgets.example.dev").await.unwrap();
    assert_eq!(
        established.data["status"]["conditions"][1]["type"],
        "Established"
    );
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.dev", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let w = |name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let ok = widgets
        .create(
            &PostParams::default(),
            &w("ok", json!({"size": 3, "extra": true})),
        )
        .await
        .unwrap();
    assert_eq!(
        ok.data["spec"],
        json!({"size": 3, "max": 10}),
        "defaulted and pruned"
    );
    let e = status_of(
        widgets
            .create(&PostParams::default(), &w("big", json!({"size": 30})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            422,
            "Widget.example.dev \"big\" is invalid: spec: Invalid value: \"object\": size may not exceed max"
        )
    );
    let e = status_of(
        widgets
            .create(&PostParams::default(), &w("none", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "Widget.example.dev \"none\" is invalid: spec.size: Required value"
    );
    let st = widgets
        .patch_status(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["ready"], true);
}
