//! The webhook over real TLS on 127.0.0.1 with a rustls client: the AdmissionReview
//! fixtures in `tests/fixtures` (from Kubewarden's repositories, see SOURCES.tsv) with Pod
//! specs from the real corpus spliced in, every mode, bad input, certificate rotation under
//! load, graceful shutdown with requests in flight, the admin port.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::net::TcpStream;

mod common;
use common::*;

#[tokio::test]
async fn fixtures_modes_and_keep_alive() {
    let pki = Pki::new("modes");
    let server = start(&pki).await;
    let mut conn = connect(&pki, server.addr).await;
    // Every real envelope: allowed (none has Postgres settings), uid echoed, on one connection.
    for name in [
        "kwctl__tests_data_unprivileged-pod-admission-review.json",
        "policies__image-cve-policy_test_data_deployment.json",
        "policy-server__tests_data_pod_with_privileged_containers.json",
        "policy-server__tests_data_pod_without_privileged_containers.json",
        "rego-policies-library__ControllerImageName_dep.json",
    ] {
        let review = fixture(name);
        let (status, body) = conn
            .post("/validate/enforce", review.to_string().into_bytes())
            .await;
        assert_eq!(status, 200, "{name}");
        let r = response(&body);
        assert_eq!(r["uid"], review["request"]["uid"], "{name}");
        assert_eq!(r["allowed"], true, "{name}: {r}");
    }
    // This one's Pod has an annotation whose value is a number, which the API server
    // rejects: an `invalid` answer naming the problem, not a verdict.
    let review = fixture("policy-server__tests_data_pod_sleep_100ms.json");
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["status"]["code"], 400);
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expected a string")),
        "{r}"
    );
    // The bare AdmissionRequest (no envelope): no review can be formed.
    let bare = fixture("environment-variable-policy__test_data_deployment_containsAnyOf.json");
    let (status, _) = conn
        .post("/validate/enforce", bare.to_string().into_bytes())
        .await;
    assert_eq!(status, 400);

    // A Pod spec from the real corpus (litellm: DATABASE_URL with sslmode=require).
    let corpus = policy_corpus_env();
    let review = pod_review(corpus);
    let body = review.to_string().into_bytes();
    let (status, enforce) = conn.post("/validate/enforce", body.clone()).await;
    assert_eq!(status, 200);
    let r = response(&enforce);
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("SslModeTooWeak")),
        "{r}"
    );
    let r = response(&conn.post("/validate/warn", body.clone()).await.1);
    assert_eq!(r["allowed"], true);
    assert!(
        r["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("SslModeTooWeak") && w.len() <= 120 * 4)
    );
    let r = response(&conn.post("/validate/audit", body).await.1);
    assert_eq!(r["allowed"], true);
    assert!(r["warnings"].is_null(), "audit does not warn: {r}");
    assert!(
        r["auditAnnotations"]["findings"]
            .as_str()
            .is_some_and(|a| a.contains("DATABASE_URL"))
    );
    let (status, _) = conn.post("/validate/sometimes", b"{}".to_vec()).await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

/// The env of the litellm Deployment in the real corpus.
fn policy_corpus_env() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cli/tests/corpus/litellm__deploy_kubernetes_kub.yaml");
    let text = std::fs::read_to_string(path).expect("corpus file");
    let url = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("value: ")
                .filter(|v| v.contains("postgresql://") || v.contains("postgres://"))
        })
        .expect("a DATABASE_URL in the corpus file")
        .trim_matches('"')
        .to_string();
    json!([{"name": "DATABASE_URL", "value": url}])
}

#[tokio::test]
async fn updates_ratchet_and_controllers_get_their_pods() {
    let pki = Pki::new("ratchet");
    let server = start(&pki).await;
    let mut conn = connect(&pki, server.addr).await;
    let bad = json!([{"name": "PGHOST", "value": "db.prod.svc"}]);
    // An UPDATE of an already-violating Pod (image bump): allowed with a warning.
    let mut review = pod_review(bad.clone());
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = review["request"]["object"].clone();
    review["request"]["object"]["spec"]["containers"][0]["image"] = json!("busybox:1.37");
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        r["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("SslModeUnset"))
    );
    // The ReplicaSet controller creating a Pod of an already-admitted template.
    let mut review = pod_review(bad);
    review["request"]["userInfo"] = json!({"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]});
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["allowed"], true, "{r}");
    // A user who is not an exemption subject cannot exempt a Pod.
    let mut review = pod_review(json!([]));
    review["request"]["userInfo"] =
        json!({"username": "alice", "groups": ["system:authenticated"]});
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"verifyfull.dev/exempt": "true", "verifyfull.dev/exempt-reason": "because"});
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["allowed"], false, "{r}");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_answer_and_the_server_keeps_serving() {
    let pki = Pki::new("bad");
    let server = start(&pki).await;
    let mut conn = connect(&pki, server.addr).await;
    let (status, body) = conn.post("/validate/enforce", b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("malformed AdmissionReview"));
    let (status, _) = conn
        .post(
            "/validate/enforce",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    // A review that can be answered, but wrongly formed: an `invalid` response with the uid.
    let mut review = pod_review(json!([]));
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let r = conn.review("enforce", &review).await;
    assert_eq!(
        (r["allowed"].clone(), r["status"]["code"].clone()),
        (json!(false), json!(400))
    );
    let mut review = pod_review(json!([]));
    review["request"]["kind"]["kind"] = json!("Deployment");
    let r = conn.review("enforce", &review).await;
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is a Pod, but the request says Deployment")),
        "{r}"
    );
    let mut review = pod_review(json!([{"name": "PGHOST", "value": 5432}]));
    review["request"]["uid"] = json!("u-1");
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["uid"], "u-1");
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("object:")),
        "{r}"
    );
    // Over 8 MiB: 413. Then a fresh connection still works.
    let (status, _) = conn
        .post("/validate/enforce", vec![b' '; webhook::MAX_BODY + 1])
        .await;
    assert_eq!(status, 413);
    let mut conn = connect(&pki, server.addr).await;
    // An UPDATE of a 1.4 MiB object (object and oldObject: 2.8 MiB): decided.
    let big = "x".repeat(1_400_000);
    let mut review = pod_review(json!([{"name": "PGHOST", "value": "db"}]));
    review["request"]["object"]["metadata"]["annotations"] = json!({"big": big});
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = review["request"]["object"].clone();
    let body = review.to_string().into_bytes();
    assert!(body.len() > 2_800_000);
    let (status, body) = conn.post("/validate/enforce", body).await;
    assert_eq!(status, 200);
    assert_eq!(response(&body)["allowed"], true);
    server.shutdown().await;
}

#[tokio::test]
async fn certificate_rotation_under_load_and_graceful_shutdown() {
    let pki = Pki::new("rotate");
    let server = start(&pki).await;
    let addr = server.addr;
    let before = connect(&pki, addr).await.subject;
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let body = pod_review(json!([])).to_string().into_bytes();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (failures, done, body) = (failures.clone(), done.clone(), body.clone());
        let connector = pki.client();
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                // A new connection each time: every request makes a handshake.
                let ok = async {
                    let tcp = TcpStream::connect(addr).await.ok()?;
                    let name =
                        rustls::pki_types::ServerName::try_from("webhook.verifyfull.svc").ok()?;
                    let tls = connector.connect(name, tcp).await.ok()?;
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tls))
                            .await
                            .ok()?;
                    tokio::spawn(conn);
                    let req = hyper::Request::post("/validate/enforce")
                        .body(Full::new(Bytes::from(body.clone())))
                        .ok()?;
                    let resp = sender.send_request(req).await.ok()?;
                    (resp.status() == 200).then_some(())
                }
                .await;
                if ok.is_none() {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Rotate twice while the requests run.
    for cn in ["second", "third"] {
        tokio::time::sleep(Duration::from_millis(40)).await;
        pki.issue(cn);
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert_eq!(done.load(Ordering::SeqCst), 160);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after = connect(&pki, addr).await.subject;
    assert_ne!(before, after, "new handshakes see the new certificate");

    // Graceful shutdown with requests in flight: a request whose body is still arriving
    // when shutdown begins completes; readiness goes off at once; then no more accepts.
    let (mut sender, _) = open::<Channel<Bytes>>(&pki.client(), addr).await;
    let (mut body_tx, body) = Channel::<Bytes>::new(4);
    let req = hyper::Request::post("/validate/enforce")
        .body(body)
        .expect("request");
    let in_flight =
        tokio::spawn(async move { sender.send_request(req).await.map(|r| r.status().as_u16()) });
    let review = pod_review(json!([])).to_string().into_bytes();
    let (first, rest) = review.split_at(review.len() / 2);
    body_tx
        .send_data(Bytes::copy_from_slice(first))
        .await
        .expect("first half");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let admin = server.admin_addr;
    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(http_get(admin, "/readyz").await, 503);
    // During the delay new connections are still served (endpoints may lag).
    let mut late = connect(&pki, addr).await;
    let review = pod_review(json!([])).to_string().into_bytes();
    assert_eq!(late.post("/validate/enforce", review).await.0, 200);
    body_tx
        .send_data(Bytes::copy_from_slice(rest))
        .await
        .expect("second half");
    drop(body_tx);
    assert_eq!(in_flight.await.expect("task").expect("response"), 200);
    server.wait().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn admin_port() {
    let pki = Pki::new("admin");
    let server = start(&pki).await;
    assert_eq!(http_get(server.admin_addr, "/livez").await, 200);
    assert_eq!(http_get(server.admin_addr, "/readyz").await, 200);
    let mut conn = connect(&pki, server.addr).await;
    conn.post(
        "/validate/warn",
        pod_review(json!([])).to_string().into_bytes(),
    )
    .await;
    let tcp = TcpStream::connect(server.admin_addr).await.expect("admin");
    let (mut sender, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(c);
    let resp = sender
        .send_request(
            hyper::Request::get("/metrics")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("metrics");
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    assert!(text.contains(r#"verifyfull_webhook_reviews_total{kind="Pod",operation="CREATE",result="allowed",mode="warn"} 1"#), "{text}");
    assert!(text.contains("verifyfull_webhook_review_duration_seconds_bucket"));
    let not_after: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("verifyfull_webhook_certificate_not_after_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("certificate not-after metric");
    // rcgen's default validity ends in 4096.
    assert!(not_after > 4_000_000_000, "{not_after}");
    server.shutdown().await;
}

#[tokio::test]
async fn rsa_keys_serve_too() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rsa");
    let server = webhook::start(
        config(&dir.join("tls.crt"), &dir.join("tls.key")),
        provider(),
    )
    .await
    .expect("start with an RSA key");
    let ca = rustls::pki_types::CertificateDer::from_pem_file(dir.join("ca.crt")).expect("CA");
    let (mut sender, _) = open::<Full<Bytes>>(&trusting(ca), server.addr).await;
    let body = pod_review(json!([])).to_string();
    let req = hyper::Request::post("/validate/enforce")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    assert_eq!(
        sender.send_request(req).await.expect("response").status(),
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_client_is_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("slow");
    let server = start(&pki).await;
    // Headers that never finish.
    let mut slow = tls_stream(&pki.client(), server.addr).await;
    slow.write_all(b"POST /validate/enforce HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("partial headers");
    // A body that never finishes.
    let mut conn = connect(&pki, server.addr).await;
    let (mut stalled_tx, stalled) = Channel::<Bytes>::new(1);
    let (mut sender, _) = open::<Channel<Bytes>>(&pki.client(), server.addr).await;
    stalled_tx
        .send_data(Bytes::from_static(b"{\"apiVersion\""))
        .await
        .expect("a little");
    let req = hyper::Request::post("/validate/enforce")
        .body(stalled)
        .expect("request");
    let stalled_status =
        tokio::spawn(async move { sender.send_request(req).await.map(|r| r.status().as_u16()) });
    // Meanwhile others are served.
    let (status, _) = conn
        .post(
            "/validate/enforce",
            pod_review(json!([])).to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, 200);
    // Within the request timeout (2 s here) both slow ones get an answer or a close.
    let status = tokio::time::timeout(Duration::from_secs(5), stalled_status)
        .await
        .expect("answered within the timeout")
        .expect("task")
        .expect("response");
    assert_eq!(status, 408);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the half-sent request is closed within the timeout"
    );
    drop(stalled_tx);
    server.shutdown().await;
}

/// Pod specs from the real corpus, each spliced into a review: the webhook (enforce,
/// standalone) allows exactly what the engine passes.
#[tokio::test]
async fn corpus_pod_specs_spliced_into_reviews() {
    let pki = Pki::new("corpus");
    let server = start(&pki).await;
    let mut conn = connect(&pki, server.addr).await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/corpus");
    let mut judged = 0;
    let mut denied = 0;
    for file in [
        "deploy-sourcegraph__configure_migrator_migrator.Job.yaml",
        "crunchy-pgo__testing_kuttl_e2e_pgbouncer_01-psql-connect.yaml",
        "cloudnative-pg__tests_e2e_fixtures_fastfailover_webtest.yaml",
        "bank-of-anthos__extras_cloudsql_populate-jobs_populate-ledger-db.yaml",
        "okta-jhipster-k8s-eks__kubernetes_store-k8s_store-deployment.yaml",
        "n8n-kubernetes-hosting__n8n-deployment.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("corpus file");
        for doc in text.split("\n---") {
            let Ok(v) = serde_saphyr::from_str::<Value>(doc) else {
                continue;
            };
            let template = &v["spec"]["template"];
            if template.is_null() {
                continue;
            }
            let mut review = pod_review(json!([]));
            review["request"]["object"]["spec"] = template["spec"].clone();
            let pod: policy::Object =
                serde_json::from_value(review["request"]["object"].clone()).expect("a Pod");
            let policy::Object::Workload(w) = pod else {
                panic!("a Pod")
            };
            let settings = policy::Settings::default();
            let ctx = policy::Context {
                settings: &settings,
                sources: &policy::NoSources,
                now: jiff::Timestamp::now(),
            };
            let expect_denied = policy::judge(w.view(), &ctx).denied();
            let r = conn.review("enforce", &review).await;
            assert_eq!(r["allowed"], json!(!expect_denied), "{file}: {r}");
            judged += 1;
            denied += usize::from(expect_denied);
        }
    }
    // Denied: sourcegraph migrator (PGSSLMODE=disable), cnpg webtest (require), jhipster
    // (JDBC without sslmode), n8n (its profile: DB_POSTGRESDB_SSL_ENABLED unset, no TLS);
    // allowed: crunchy (verify-full), bank-of-anthos (loopback proxy).
    assert_eq!((judged, denied), (6, 4));
    server.shutdown().await;
}

#[tokio::test]
async fn kubectl_debug_and_namespace_mode_label() {
    let pki = Pki::new("debug");
    let server = start(&pki).await;
    let mut conn = connect(&pki, server.addr).await;
    // `kubectl debug`: UPDATE of pods/ephemeralcontainers adding a violating container.
    let mut review = pod_review(json!([]));
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["subResource"] = json!("ephemeralcontainers");
    review["request"]["oldObject"] = review["request"]["object"].clone();
    review["request"]["object"]["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "postgres:17", "env": [{"name": "PGHOST", "value": "db.prod.svc"}]}]);
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("container debugger"))
    );
    // dryRun is judged the same.
    review["request"]["dryRun"] = json!(true);
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["allowed"], false);
    // Turning a namespace's mode off takes an allowed subject (none configured here).
    let ns = |mode: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"verifyfull.dev/mode": mode}}});
    let mut review = pod_review(json!([]));
    review["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Namespace"});
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["object"] = ns("off");
    review["request"]["oldObject"] = ns("enforce");
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["allowed"], false, "{r}");
    review["request"]["object"] = ns("enforce");
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["allowed"], true, "{r}");
    server.shutdown().await;
}

#[tokio::test]
async fn not_ready_until_the_caches_sync_then_references_resolve() {
    use kube::runtime::watcher::Event;
    use policy::SourceKind;
    use webhook::cache::{Caches, Entry};
    let pki = Pki::new("caches");
    let (c, k) = pki.issue("first");
    let caches = Arc::new(Caches::new(false));
    let server = webhook::start(
        webhook::Config {
            caches: Some(caches.clone()),
            ..config(&c, &k)
        },
        provider(),
    )
    .await
    .expect("start");
    assert_eq!(http_get(server.admin_addr, "/readyz").await, 503);
    let entry = |data: &[(&str, &str)]| Entry {
        namespace: "default".into(),
        name: "db-env".into(),
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    caches.config_maps.apply(SourceKind::ConfigMap, Event::Init);
    caches.config_maps.apply(
        SourceKind::ConfigMap,
        Event::InitApply(entry(&[
            ("PGHOST", "db.prod.svc"),
            ("PGSSLMODE", "disable"),
        ])),
    );
    caches
        .config_maps
        .apply(SourceKind::ConfigMap, Event::InitDone);
    assert_eq!(http_get(server.admin_addr, "/readyz").await, 200);
    // envFrom the cached ConfigMap: PGSSLMODE=disable is seen and denied.
    let mut review = pod_review(json!([]));
    review["request"]["object"]["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "db-env"}}]);
    let mut conn = connect(&pki, server.addr).await;
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ConfigMap db-env/PGSSLMODE")),
        "{r}"
    );
    // The ConfigMap changes: the next review sees it.
    caches.config_maps.apply(
        SourceKind::ConfigMap,
        Event::Apply(entry(&[
            ("PGHOST", "db.prod.svc"),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/ca.crt"),
        ])),
    );
    let r = conn.review("enforce", &review).await;
    assert_eq!(r["allowed"], true, "{r}");
    server.shutdown().await;
}

/// The kubelet updates a Secret volume by pointing the `..data` symlink at a new
/// directory; `tls.crt` and `tls.key` are symlinks through it. Re-reading by path sees it.
#[tokio::test]
async fn kubelet_data_symlink_swap() {
    use std::os::unix::fs::symlink;
    let pki = Pki::new("symlink");
    let volume = pki.dir.join("volume");
    std::fs::create_dir_all(&volume).expect("volume");
    let publish = |version: &str| {
        let (c, k) = pki.issue(version);
        let dir = volume.join(format!("..{version}"));
        std::fs::create_dir_all(&dir).expect("version dir");
        std::fs::copy(&c, dir.join("tls.crt")).expect("cert");
        std::fs::copy(&k, dir.join("tls.key")).expect("key");
        let tmp = volume.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(format!("..{version}"), &tmp).expect("symlink");
        std::fs::rename(&tmp, volume.join("..data")).expect("swap ..data");
    };
    publish("v1");
    for name in ["tls.crt", "tls.key"] {
        symlink(format!("..data/{name}"), volume.join(name)).expect("file link");
    }
    let server = webhook::start(
        config(&volume.join("tls.crt"), &volume.join("tls.key")),
        provider(),
    )
    .await
    .expect("start");
    let before = connect(&pki, server.addr).await.subject;
    publish("v2");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = connect(&pki, server.addr).await;
    assert_ne!(before, conn.subject, "the swapped certificate is served");
    let (status, _) = conn
        .post(
            "/validate/enforce",
            pod_review(json!([])).to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, 200);
    server.shutdown().await;
}
