//! End-to-end scenarios: the real `verifyfull-webhook` registered with a
//! ValidatingWebhookConfiguration, exercised through the API with `kube` and `kubectl`.
//! On the stand-in by default; on a real cluster when `VERIFYFULL_E2E_KUBECONFIG` is set
//! (scenarios that start or stop local processes run on the stand-in only).
#![allow(clippy::unwrap_used)] // test helpers too: a panic is the failure report

use e2e::scenario::Env;
use e2e::standin::api::User;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use policy::admission::{Mode, Operation, Policy, Request, decide};
use serde_json::{Value, json};
use std::time::Duration;

const PASSWORD: &str = "s3cr3t-Pa55word-e2e";

async fn env(name: &str) -> Env {
    match Env::start(name).await {
        Ok(e) => e,
        Err(e) => panic!("environment for {name}: {e}"),
    }
}

fn pod(name: &str, env: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "app", "image": "example.com/app:1", "env": env}]}})
}

fn compliant_env() -> Value {
    json!([{"name": "DATABASE_URL", "value": format!("postgresql://app:{PASSWORD}@db.example.net:5432/app?sslmode=verify-full&sslrootcert=/etc/ca/ca.crt")}])
}

fn weak_env() -> Value {
    json!([{"name": "DATABASE_URL", "value": format!("postgresql://app:{PASSWORD}@db.example.net:5432/app?sslmode=require")}])
}

fn deployment(name: &str, env: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "app", "image": "example.com/app:1", "env": env}]}}}})
}

/// What the engine says about `manifest`, as the enforce entry's denial carries it.
fn expected_denial(manifest: &Value) -> String {
    let policy::Object::Workload(w) = serde_json::from_value(manifest.clone()).unwrap() else {
        panic!("not a workload")
    };
    let groups = vec![
        "system:masters".to_string(),
        "system:authenticated".to_string(),
    ];
    let req = Request {
        operation: Operation::Create,
        subresource: None,
        user: policy::admission::User {
            username: "kubernetes-admin",
            groups: &groups,
        },
        object: &w,
        old_object: None,
    };
    let settings = policy::Settings::default();
    let ctx = policy::Context {
        settings: &settings,
        sources: &policy::NoSources,
        now: jiff::Timestamp::now(),
    };
    let answer = decide(&req, Mode::Enforce, &Policy::default(), &ctx);
    format!(
        "admission webhook \"enforce.verifyfull.dev\" denied the request: {}",
        answer.message.unwrap()
    )
}

fn api(env: &Env, ns: &str, manifest: &Value) -> Api<DynamicObject> {
    let (group, version) = match manifest["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            manifest["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let kind = manifest["kind"].as_str().unwrap();
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let ar = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(&group, &version, kind),
        &plural,
    );
    Api::namespaced_with(env.client.clone(), ns, &ar)
}

async fn create(
    env: &Env,
    ns: &str,
    manifest: &Value,
) -> Result<DynamicObject, kube::core::Status> {
    let obj: DynamicObject = serde_json::from_value(manifest.clone()).unwrap();
    api(env, ns, manifest)
        .create(&PostParams::default(), &obj)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => *s,
            other => panic!("expected an API answer, got {other:?}"),
        })
}

#[tokio::test]
async fn compliant_pod_is_created_and_violations_are_denied_with_the_engine_message() {
    let mut env = env("enforce").await;
    let ns = env.namespace("enforce", None).await.unwrap();
    create(&env, &ns, &pod("good", compliant_env()))
        .await
        .unwrap();

    let bad = pod("bad", weak_env());
    let e = create(&env, &ns, &bad).await.unwrap_err();
    assert_eq!(e.code, 403);
    assert_eq!(e.message, expected_denial(&bad));
    assert!(
        !e.message.contains(PASSWORD),
        "the denial leaks the password"
    );

    let bad_deploy = deployment("bad", weak_env());
    let e = create(&env, &ns, &bad_deploy).await.unwrap_err();
    assert_eq!(e.message, expected_denial(&bad_deploy));

    // The same through kubectl: the denial is what the user reads.
    let out = env.kubectl.apply(&ns, &bad_deploy).await.unwrap();
    assert!(!out.ok);
    assert!(out.stderr.contains("admission webhook \"enforce.verifyfull.dev\" denied the request: verifyfull denied Deployment bad"), "{}", out.stderr);
    assert!(!out.stderr.contains(PASSWORD));
    let good_deploy = deployment("good", compliant_env());
    let out = env.kubectl.apply(&ns, &good_deploy).await.unwrap();
    assert!(out.ok, "{}", out.stderr);
    // Its Pods come from the ReplicaSet controller, through the webhook.
    wait_for_pods(&env, &ns, "app=good", 1).await;
    env.finish().await;
}

async fn wait_for_pods(env: &Env, ns: &str, selector: &str, n: usize) {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let have = pods
            .list(&kube::api::ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
            .len();
        if have >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{have} of {n} pods for {selector}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn warn_and_audit_namespaces_allow_and_say_so() {
    let mut env = env("modes").await;
    let warn = env.namespace("warn", Some("warn")).await.unwrap();
    let audit = env.namespace("audit", Some("audit")).await.unwrap();
    let off = env.namespace("off", Some("off")).await.unwrap();
    let bad = pod("bad", weak_env());
    let out = env.kubectl.create(&warn, &bad).await.unwrap();
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("Warning: "), "{}", out.stderr);
    assert!(out.stderr.contains("verify-full"), "{}", out.stderr);
    assert!(!out.stderr.contains(PASSWORD));
    let out = env.kubectl.create(&audit, &bad).await.unwrap();
    assert!(out.ok, "{}", out.stderr);
    assert!(
        !out.stderr.contains("Warning"),
        "audit mode records, it does not warn: {}",
        out.stderr
    );
    create(&env, &off, &bad).await.unwrap();
    if let Some(w) = &env.webhook {
        // The audit review was recorded: the webhook's metrics count it.
        let (_, metrics) = e2e::harness::http_get(w.admin, "/metrics").await.unwrap();
        let line = metrics.lines().find(|l| {
            l.starts_with("verifyfull_webhook_reviews_total")
                && l.contains("mode=\"audit\"")
                && l.contains("result=\"audited\"")
        });
        assert!(line.is_some(), "{metrics}");
    }
    env.finish().await;
}

#[tokio::test]
async fn exemptions_need_an_allowed_author() {
    let mut env = env("exempt").await;
    let ns = env.namespace("exempt", None).await.unwrap();
    let mut exempt = pod("legacy", weak_env());
    exempt["metadata"]["annotations"] = json!({
        "verifyfull.dev/exempt": "true",
        "verifyfull.dev/exempt-reason": "vendor DB has no TLS until INC-4211",
    });
    // A developer may not exempt their own Pod…
    let dev = env
        .client_as(&User::new("dev@example.com", &["developers"]))
        .await
        .unwrap();
    let obj: DynamicObject = serde_json::from_value(exempt.clone()).unwrap();
    let pods: Api<DynamicObject> = Api::namespaced_with(dev, &ns, &ApiResource::erase::<Pod>(&()));
    let e = match pods.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected a denial, got {other:?}"),
    };
    assert!(e.message.contains("exempt"), "{}", e.message);
    // …a cluster admin may, and the warning names the reason.
    let out = env.kubectl.create(&ns, &exempt).await.unwrap();
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("INC-4211"), "{}", out.stderr);
    env.finish().await;
}

#[tokio::test]
async fn config_map_references_resolve_from_the_cluster() {
    let mut env = env("refs").await;
    let ns = env.namespace("refs", None).await.unwrap();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db"},
                    "data": {"PGHOST": "db.example.net", "PGSSLMODE": "require"}});
    create(&env, &ns, &cm).await.unwrap();
    let mut p = pod("from-cm", json!([]));
    p["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "db"}}]);
    // The webhook's cache follows the API by watch; dry runs until it has seen the ConfigMap.
    let obj: DynamicObject = serde_json::from_value(p.clone()).unwrap();
    let pods = api(&env, &ns, &p);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let message = loop {
        match pods
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &obj,
            )
            .await
        {
            Err(kube::Error::Api(s)) if s.message.contains("ConfigMap db") => break s.message,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "never denied from the ConfigMap: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        message.contains("PGSSLMODE=require (ConfigMap db/PGSSLMODE via envFrom)"),
        "{message}"
    );
    env.finish().await;
}

#[tokio::test]
async fn a_webhook_that_is_down_fails_closed_in_enforce_and_open_in_warn() {
    let mut env = env("down").await;
    if !env.is_standin() {
        eprintln!("stand-in only: this scenario stops the webhook process");
        return env.finish().await;
    }
    let enforce = env.namespace("down-enforce", None).await.unwrap();
    let warn = env.namespace("down-warn", Some("warn")).await.unwrap();
    env.stop_webhook().await;
    let good = pod("good", compliant_env());
    let e = create(&env, &enforce, &good).await.unwrap_err();
    assert_eq!(e.code, 500);
    assert!(e.message.starts_with("Internal error occurred: failed calling webhook \"enforce.verifyfull.dev\": failed to call webhook: Post \"https://verifyfull-webhook.verifyfull.svc:443/validate/enforce?timeout=5s\""), "{}", e.message);
    create(&env, &warn, &pod("bad", weak_env())).await.unwrap();
    // Back up: enforce works again.
    env.start_webhook().await.unwrap();
    create(&env, &enforce, &good).await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn certificate_rotation_while_pods_are_created() {
    let mut env = env("rotate").await;
    if !env.is_standin() {
        eprintln!("stand-in only: this scenario rewrites the webhook's certificate files");
        return env.finish().await;
    }
    let ns = env.namespace("rotate", None).await.unwrap();
    let old_ca = env.ca.take().unwrap();
    let new_ca = e2e::pki::Ca::new("verifyfull e2e CA, next").unwrap();
    let creator = {
        let client = env.client.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client, &ns);
            let mut failures = Vec::new();
            for i in 0..60 {
                let p: Pod =
                    serde_json::from_value(pod(&format!("p{i}"), compliant_env())).unwrap();
                if let Err(e) = pods.create(&PostParams::default(), &p).await {
                    failures.push(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            failures
        })
    };
    let webhook = env.webhook.as_ref().unwrap();
    // A new serving certificate from the same CA, then a CA rotation: both CAs published,
    // the webhook switched to the new one, the old one withdrawn.
    tokio::time::sleep(Duration::from_millis(400)).await;
    webhook.rotate(&env.serving_pair(&old_ca).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    env.set_ca_bundle(&format!("{}{}", old_ca.pem(), new_ca.pem()))
        .await
        .unwrap();
    webhook.rotate(&env.serving_pair(&new_ca).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    env.set_ca_bundle(new_ca.pem()).await.unwrap();
    let failures = creator.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of 60 creates failed: {failures:?}",
        failures.len()
    );
    // The old CA is no longer trusted, and the webhook no longer serves it.
    let e = create(&env, &ns, &pod("bad", weak_env()))
        .await
        .unwrap_err();
    assert_eq!(e.code, 403);
    env.finish().await;
}

#[tokio::test]
async fn only_allowed_subjects_change_a_namespace_mode() {
    let mut env = env("modelabel").await;
    let ns = env.namespace("modelabel", None).await.unwrap();
    let label = |mode: &str| {
        kube::api::Patch::Merge(json!({"metadata": {"labels": {"verifyfull.dev/mode": mode}}}))
    };
    let dev = env
        .client_as(&User::new("dev@example.com", &["developers"]))
        .await
        .unwrap();
    let as_dev: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(dev);
    let e = match as_dev
        .patch(&ns, &kube::api::PatchParams::default(), &label("off"))
        .await
    {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected a denial, got {other:?}"),
    };
    assert!(
        e.message
            .starts_with("admission webhook \"mode-label.verifyfull.dev\" denied the request"),
        "{}",
        e.message
    );
    // Other label changes by the same user are not the webhook's business.
    let other = kube::api::Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}}));
    as_dev
        .patch(&ns, &kube::api::PatchParams::default(), &other)
        .await
        .unwrap();
    // A cluster admin may switch the namespace to warn; then a weak Pod is admitted.
    let admin: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    admin
        .patch(&ns, &kube::api::PatchParams::default(), &label("warn"))
        .await
        .unwrap();
    create(&env, &ns, &pod("weak", weak_env())).await.unwrap();
    env.finish().await;
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Deployment's ReplicaSet for its current template, once it exists and has a Pod:
/// the rollout completed.
async fn rolled_out(env: &Env, ns: &str, name: &str, image: &str) -> String {
    let rss: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(env.client.clone(), ns);
    let what = format!("deployment {name} rolled out to {image}");
    let restarts = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        t.metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt").cloned())
    };
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), ns);
    let want = deployments.get(name).await.unwrap();
    let want = want.spec.unwrap().template;
    let hash = eventually(Duration::from_secs(60), &what, || async {
        let list = rss
            .list(&kube::api::ListParams::default().labels(&format!("app={name}")))
            .await
            .ok()?;
        let current = list.items.into_iter().find(|rs| {
            let t = rs.spec.as_ref().and_then(|s| s.template.clone());
            t.as_ref().is_some_and(|t| {
                restarts(t) == restarts(&want)
                    && t.spec.as_ref().map(|s| s.containers[0].image.clone())
                        == Some(Some(image.to_string()))
            })
        })?;
        current.metadata.labels?.get("pod-template-hash").cloned()
    })
    .await;
    wait_for_pods(env, ns, &format!("pod-template-hash={hash}"), 1).await;
    hash
}

/// No controller reported a creation it could not make.
async fn nothing_stalled(env: &Env, ns: &str) {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(env.client.clone(), ns);
    let stalls: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            matches!(
                e.reason.as_deref(),
                Some("FailedCreate" | "ReplicaSetCreateError")
            )
        })
        .map(|e| e.message.unwrap_or_default())
        .collect();
    assert!(stalls.is_empty(), "{stalls:?}");
}

/// In an enforce namespace, workloads that violated before verifyfull was registered keep
/// working: a rollout restart and an image bump complete with new Pods, a CronJob's
/// scheduled run produces its Job and Pod — while a new violating Deployment is still
/// denied at its own CREATE.
async fn preexisting_violators_keep_rolling(name: &str, setup: e2e::scenario::Setup) {
    let mut env = match Env::start_with(name, setup).await {
        Ok(e) => e,
        Err(e) => panic!("environment for {name}: {e}"),
    };
    let stand_in_only = setup.without_controller_skip
        || setup.controller_identity != e2e::standin::ControllerIdentity::PerController;
    if stand_in_only && !env.is_standin() {
        eprintln!(
            "stand-in only: a real cluster's controller identity and configuration are its own"
        );
        return env.finish().await;
    }
    let ns = env.namespace("rollouts", None).await.unwrap();
    let legacy = deployment("legacy", weak_env());
    let mut nightly = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "* * * * *", "suspend": true, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "app", "image": "example.com/app:1", "env": weak_env()}]}}}}}});
    env.suspend(&ns).await.unwrap();
    create(&env, &ns, &legacy).await.unwrap();
    create(&env, &ns, &nightly).await.unwrap();
    rolled_out(&env, &ns, "legacy", "example.com/app:1").await;
    env.resume(&ns).await.unwrap();
    // The webhook is back in the path: the same Deployment, new, is denied.
    let e = create(&env, &ns, &deployment("newcomer", weak_env()))
        .await
        .unwrap_err();
    assert_eq!(e.code, 403, "{}", e.message);

    let kubectl = |args: Vec<String>| {
        let k = env.kubectl.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = k.run(&args, None).await.unwrap();
            assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
            out
        }
    };
    let first = rolled_out(&env, &ns, "legacy", "example.com/app:1").await;
    let out = kubectl(vec![
        "rollout".into(),
        "restart".into(),
        "deployment/legacy".into(),
        "-n".into(),
        ns.clone(),
    ])
    .await;
    // The Deployment's own UPDATE is ratcheted: admitted, with its warning.
    assert!(out.stderr.contains("SslModeTooWeak"), "{}", out.stderr);
    let restarted = rolled_out(&env, &ns, "legacy", "example.com/app:1").await;
    assert_ne!(first, restarted);
    kubectl(vec![
        "set".into(),
        "image".into(),
        "deployment/legacy".into(),
        "app=example.com/app:2".into(),
        "-n".into(),
        ns.clone(),
    ])
    .await;
    let bumped = rolled_out(&env, &ns, "legacy", "example.com/app:2").await;
    assert_ne!(restarted, bumped);

    let job = match &env.standin {
        Some(s) => s.trigger_cronjob(&ns, "nightly").await.unwrap(),
        None => {
            // A real cluster runs it on its schedule, within a minute of resuming it (the
            // CronJob's UPDATE is ratcheted).
            let cronjobs: Api<k8s_openapi::api::batch::v1::CronJob> =
                Api::namespaced(env.client.clone(), &ns);
            let resume = kube::api::Patch::Merge(json!({"spec": {"suspend": false}}));
            cronjobs
                .patch("nightly", &Default::default(), &resume)
                .await
                .unwrap();
            let jobs: Api<k8s_openapi::api::batch::v1::Job> =
                Api::namespaced(env.client.clone(), &ns);
            eventually(Duration::from_secs(150), "the CronJob's run", || async {
                jobs.list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find_map(|j| j.metadata.name)
            })
            .await
        }
    };
    wait_for_pods(&env, &ns, &format!("job-name={job}"), 1).await;
    nothing_stalled(&env, &ns).await;
    nightly["metadata"]["name"] = json!("nightly-new");
    let e = create(&env, &ns, &nightly).await.unwrap_err();
    assert_eq!(e.code, 403, "{}", e.message);
    env.finish().await;
}

#[tokio::test]
async fn preexisting_violators_roll_out_and_run_on_schedule() {
    preexisting_violators_keep_rolling("rollouts", Default::default()).await;
}

#[tokio::test]
async fn preexisting_violators_roll_out_under_the_controller_managers_identity() {
    let setup = e2e::scenario::Setup {
        controller_identity: e2e::standin::ControllerIdentity::Manager,
        ..Default::default()
    };
    preexisting_violators_keep_rolling("rollouts-kcm", setup).await;
}

/// A configuration registered before it skipped controller-made objects: the webhook's own
/// relief admits them, under both identity styles.
#[tokio::test]
async fn preexisting_violators_roll_out_through_the_webhook_itself() {
    for controller_identity in [
        e2e::standin::ControllerIdentity::PerController,
        e2e::standin::ControllerIdentity::Manager,
    ] {
        let setup = e2e::scenario::Setup {
            controller_identity,
            without_controller_skip: true,
        };
        preexisting_violators_keep_rolling("rollouts-legacy", setup).await;
    }
}

/// One review through the API server (a dry-run Pod create, which runs admission and
/// stores nothing): when it started, when it ended, and its error.
type Outcome = (std::time::Instant, std::time::Instant, Option<String>);

/// `workers` clients creating compliant Pods back to back until `stop` is set.
fn load(
    env: &Env,
    ns: &str,
    workers: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    (0..workers)
        .map(|w| {
            let (pods, stop) = (Api::<Pod>::namespaced(env.client.clone(), ns), stop.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                let dry = PostParams {
                    dry_run: true,
                    ..Default::default()
                };
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let p: Pod =
                        serde_json::from_value(pod(&format!("w{w}-{i}"), compliant_env())).unwrap();
                    let start = std::time::Instant::now();
                    let r = pods.create(&dry, &p).await;
                    out.push((
                        start,
                        std::time::Instant::now(),
                        r.err().map(|e| e.to_string()),
                    ));
                    i += 1;
                }
                out
            })
        })
        .collect()
}

async fn outcomes(tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>) -> Vec<Outcome> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Two replicas under load. SIGTERM to one, taken out of the Service's endpoints a moment
/// later (as the endpoints controller does): it keeps serving while not ready, drains, and
/// no review fails. SIGKILL to one: the reviews it had (in flight, or sent before its
/// endpoint went) fail, as kube-apiserver does not retry a webhook call; every later review
/// succeeds on the other replica.
#[tokio::test]
async fn a_replica_stopped_under_load_drains_and_a_killed_one_fails_only_its_own() {
    use e2e::scenario::{NAMESPACE, SERVICE};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut env = env("replicas").await;
    if !env.is_standin() {
        eprintln!("stand-in only: this scenario signals webhook processes");
        return env.finish().await;
    }
    let ns = env.namespace("replicas", None).await.unwrap();
    let delay = ["--shutdown-delay-seconds=2"];
    let a = env.replica("replica-a", &delay).await.unwrap();
    let b = env.replica("replica-b", &delay).await.unwrap();
    let route = |ready: &[std::net::SocketAddr]| {
        env.standin
            .as_ref()
            .unwrap()
            .set_endpoints(NAMESPACE, SERVICE, 443, ready)
    };
    route(&[a.addr, b.addr]);

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&env, &ns, 4, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let terminated = tokio::spawn(a.terminate());
    tokio::time::sleep(Duration::from_millis(300)).await;
    route(&[b.addr]);
    terminated.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let run = outcomes(tasks).await;
    let failed: Vec<&String> = run.iter().filter_map(|(_, _, e)| e.as_ref()).collect();
    assert!(run.len() > 20, "too little load: {} reviews", run.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        run.len()
    );

    let mut c = env.replica("replica-c", &delay).await.unwrap();
    route(&[c.addr, b.addr]);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&env, &ns, 4, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.kill_now();
    route(&[b.addr]);
    let gone = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let run = outcomes(tasks).await;
    let after: Vec<&Outcome> = run.iter().filter(|(start, _, _)| *start > gone).collect();
    assert!(after.len() > 10, "too little load after the kill");
    assert!(
        after.iter().all(|(_, _, e)| e.is_none()),
        "a review sent after the endpoint went failed: {:?}",
        after.iter().find_map(|(_, _, e)| e.as_ref())
    );
    for (_, _, e) in &run {
        if let Some(e) = e {
            assert!(e.contains("failed calling webhook"), "{e}");
        }
    }
    b.stop().await;
    env.finish().await;
}
