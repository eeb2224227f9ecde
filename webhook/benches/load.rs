//! The webhook under load over TLS with keep-alive connections, next to a baseline webhook
//! in the typical kube-rs example shape (`AdmissionReview<DynamicObject>`, one log line per
//! request, always allow) on the same TLS setup, in the same run.
//!
//! Run: `taskset -c 1 cargo bench -p verifyfull-webhook --bench load` — the servers are
//! started on core 0 (`taskset -c 0`), the load generator stays on core 1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

const SATURATION: Duration = Duration::from_secs(2);
/// Saturation runs per row; the median is reported.
const RUNS: usize = 3;
const OPEN_LOOP: Duration = Duration::from_secs(5);
const RATE: u64 = 1000;
const CONNECTIONS: usize = 16;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The baseline server: what a kube-rs example webhook does, on our TLS setup.
async fn baseline(cert: PathBuf, key: PathBuf, addr: SocketAddr) {
    use axum::routing::post;
    use kube::core::DynamicObject;
    use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
    async fn handle(body: Bytes) -> axum::Json<AdmissionReview<DynamicObject>> {
        let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return axum::Json(AdmissionResponse::invalid(e.to_string()).into_review()),
        };
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(r) => r,
            Err(e) => return axum::Json(AdmissionResponse::invalid(e.to_string()).into_review()),
        };
        tracing::info!(kind = %request.kind.kind, operation = ?request.operation, "review");
        axum::Json(AdmissionResponse::from(&request).into_review())
    }
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .init();
    let resolver = Arc::new(webhook::tls::Reloading::load(&cert, &key, provider()).expect("cert"));
    let config = webhook::tls::server_config(resolver, provider()).expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr).await.expect("bind");
    let router = axum::Router::new().route("/validate/{mode}", post(handle));
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let limits = runtime::serve::Limits {
        max_connections: webhook::ServerLimits::default().max_connections,
        header_timeout: Duration::from_secs(10),
    };
    let shutdown = runtime::serve::Shutdown {
        delay: Duration::ZERO,
        drain: Duration::ZERO,
    };
    runtime::serve::serve(listener, acceptor, router, limits, shutdown, stop, || {}).await;
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr")
}

struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `Name:   value kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // stat fields 14 (utime) and 15 (stime), counted after the command name.
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> Sender {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("webhook.verifyfull.svc").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP");
    tokio::spawn(conn);
    sender
}

async fn post(sender: &mut Sender, body: &Bytes) -> (u16, Bytes) {
    let req = hyper::Request::post("/validate/enforce")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().collect().await.expect("body").to_bytes(),
    )
}

/// The median of RUNS closed-loop runs: reviews/s and server CPU µs per review.
async fn saturate(
    server: &Server,
    connector: &tokio_rustls::TlsConnector,
    body: &Bytes,
) -> (f64, f64) {
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        runs.push(saturate_once(server, connector, body).await);
    }
    runs.sort_by(|a, b| a.1.total_cmp(&b.1));
    runs[RUNS / 2]
}

/// Closed loop on every connection for the duration: reviews/s and server CPU per review.
async fn saturate_once(
    server: &Server,
    connector: &tokio_rustls::TlsConnector,
    body: &Bytes,
) -> (f64, f64) {
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(connect(server.addr, connector).await);
    }
    let pid = server.child.id();
    let cpu0 = cpu_ticks(pid);
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            let body = body.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < SATURATION {
                    post(&mut s, &body).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0;
    (total as f64 / secs, cpu / total as f64 * 1e6)
}

/// Open loop at RATE/s: requests are sent on schedule whatever the server does, and a
/// request waiting for a free connection counts that wait (latency correction).
async fn open_loop(
    server: &Server,
    connector: &tokio_rustls::TlsConnector,
    body: &Bytes,
) -> (f64, f64, f64) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Sender>(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        tx.send(connect(server.addr, connector).await)
            .await
            .expect("pool");
    }
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let total = RATE * OPEN_LOOP.as_secs();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + Duration::from_micros(i * 1_000_000 / RATE);
        let (tx, rx, body) = (tx.clone(), rx.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(scheduled).await;
            // Timed from the wake-up (tokio's timer ticks in milliseconds, a client
            // artifact), but before taking a connection: waiting for a busy one counts.
            let woke = Instant::now();
            let mut sender = rx.lock().await.recv().await.expect("a connection");
            post(&mut sender, &body).await;
            let took = woke.elapsed();
            tx.send(sender).await.expect("return");
            took
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    for t in tasks {
        lat.push(t.await.expect("task").as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (q(0.50), q(0.99), q(0.999))
}

/// A CREATE review of `object` as the API server sends it.
fn review(object: Value) -> Bytes {
    let kind = object["kind"].clone();
    let group = if kind == "Pod" { "" } else { "apps" };
    Bytes::from(
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "b7c0ad6f-0000-4000-8000-000000000001",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "resource": {"group": group, "version": "v1", "resource": "pods"},
                "namespace": "shop", "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:argocd:argocd-application-controller",
                    "groups": ["system:serviceaccounts", "system:authenticated"]},
                "object": object, "oldObject": null, "dryRun": false,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
            }
        })
        .to_string(),
    )
}

fn container(good: bool) -> Value {
    let mode = if good { "verify-full" } else { "require" };
    json!({"name": "orders", "image": "registry.example.com/shop/orders:1.42.0",
        "env": [
            {"name": "DATABASE_URL", "value": format!("postgres://orders@orders-db.shop.svc:5432/orders?sslmode={mode}&sslrootcert=/etc/verifyfull/ca/ca.crt")},
            {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "orders-db", "key": "password"}}},
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4317"}],
        "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
        "volumeMounts": [{"name": "verifyfull-ca", "mountPath": "/etc/verifyfull/ca", "readOnly": true}],
        "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}})
}

fn pod_spec(good: bool) -> Value {
    json!({"containers": [container(good),
            {"name": "proxy", "image": "envoyproxy/envoy:v1.31", "args": ["-c", "/etc/envoy/envoy.yaml"],
             "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}],
        "volumes": [{"name": "verifyfull-ca", "configMap": {"name": "verifyfull-ca"}}],
        "serviceAccountName": "orders", "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]})
}

/// A Pod of about 3 KB.
fn pod(good: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-7d9f8b6c5-x2x4k", "generateName": "orders-7d9f8b6c5-", "namespace": "shop",
            "labels": {"app": "orders", "pod-template-hash": "7d9f8b6c5"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z",
                "prometheus.io/scrape": "true", "prometheus.io/port": "9090",
                "checksum/config": "5f2b9c0e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0",
                "description": "orders service: takes orders from the storefront and writes them to the orders database; owned by the shop team, on call #shop-oncall"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-7d9f8b6c5",
                "uid": "1d6c2c8e-8f5a-4b8e-9a59-2a2f5c1d7e10", "controller": true, "blockOwnerDeletion": true}]},
        "spec": pod_spec(good)})
}

/// A Deployment of about 10 KB with managedFields, as the API server sends it.
fn deployment(good: bool) -> Value {
    let fields = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:replicas": {}, "f:selector": {},
        "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"orders\"}": {
            ".": {}, "f:env": {".": {}, "k:{\"name\":\"DATABASE_URL\"}": {".": {}, "f:name": {}, "f:value": {}},
            "k:{\"name\":\"PGPASSWORD\"}": {".": {}, "f:name": {}, "f:valueFrom": {}}}, "f:image": {}, "f:name": {},
            "f:ports": {}, "f:resources": {}}}}}}});
    let managed: Vec<Value> = (0..14)
        .map(|i| json!({"manager": format!("argocd-controller-{i}"), "operation": "Apply", "apiVersion": "apps/v1",
            "time": "2026-11-20T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields}))
        .collect();
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "orders", "namespace": "shop", "labels": {"app": "orders"}, "managedFields": managed,
            "annotations": {"deployment.kubernetes.io/revision": "42"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "orders"}},
            "template": {"metadata": {"labels": {"app": "orders"}}, "spec": pod_spec(good)}}})
}

fn start_server(name: &'static str, cmd: &mut Command, addr: SocketAddr) -> Server {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let server = Server { name, child, addr };
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{name} did not start");
}

fn certificate(dir: &Path) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["webhook.verifyfull.svc".to_string()]).expect("params");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, cert.pem()).expect("cert");
    std::fs::write(&k, key.serialize_pem()).expect("key");
    (c, k, ca_cert.der().clone())
}

/// The webhook library with its ConfigMap cache holding 10,000 ConfigMaps, fed through the
/// same path the watch uses (no API server here).
async fn cached(cert: PathBuf, key: PathBuf, addr: SocketAddr) {
    use kube::runtime::watcher::Event;
    use webhook::cache::{Caches, Entry};
    let caches = Arc::new(Caches::new(false));
    let store = &caches.config_maps;
    store.apply(policy::SourceKind::ConfigMap, Event::Init);
    for i in 0..10_000 {
        let data = [
            ("PGHOST", format!("db-{i}.shop.svc")),
            ("PGSSLMODE", "verify-full".to_string()),
            ("PGSSLROOTCERT", "/etc/verifyfull/ca/ca.crt".to_string()),
            ("LOG_LEVEL", "info".to_string()),
            ("FEATURE_FLAGS", format!("checkout-v2,search-{i}")),
        ];
        let entry = Entry {
            namespace: format!("team-{}", i % 100),
            name: format!("app-{i}-env"),
            data: data.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        store.apply(policy::SourceKind::ConfigMap, Event::InitApply(entry));
    }
    store.apply(policy::SourceKind::ConfigMap, Event::InitDone);
    let config = webhook::Config {
        listen: addr,
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        tls_cert_file: cert,
        tls_key_file: key,
        cert_reload_interval: Duration::from_secs(10),
        shutdown_delay: Duration::ZERO,
        drain_timeout: Duration::ZERO,
        request_timeout: Duration::from_secs(10),
        settings: policy::Settings::default(),
        policy: policy::admission::Policy::default(),
        mode_label_subjects: policy::admission::Subjects::default(),
        caches: Some(caches),
        policies: None,
        limits: webhook::ServerLimits::default(),
        log_dropped: None,
    };
    webhook::start(config, provider())
        .await
        .expect("start")
        .wait()
        .await;
}

fn main() {
    if let Ok(role) = std::env::var("VERIFYFULL_BENCH_CACHED") {
        let parts: Vec<&str> = role.split('|').collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(cached(
            parts[0].into(),
            parts[1].into(),
            parts[2].parse().expect("addr"),
        ));
        return;
    }
    if let Ok(role) = std::env::var("VERIFYFULL_BENCH_BASELINE") {
        let parts: Vec<&str> = role.split('|').collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(baseline(
            parts[0].into(),
            parts[1].into(),
            parts[2].parse().expect("addr"),
        ));
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("verifyfull-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key, ca) = certificate(&dir);
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());

    let ours_addr = free_port();
    let admin = free_port().to_string();
    let ours = start_server(
        "verifyfull-webhook",
        Command::new("taskset").args([
            "-c",
            "0",
            env!("CARGO_BIN_EXE_verifyfull-webhook"),
            "--standalone",
            "--log-format",
            "json",
            "--listen",
            &ours_addr.to_string(),
            "--admin-listen",
            &admin,
            "--tls-cert-file",
            &cert_s,
            "--tls-key-file",
            &key_s,
        ]),
        ours_addr,
    );
    let base_addr = free_port();
    let base = start_server(
        "baseline (kube-rs example shape)",
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(std::env::current_exe().expect("exe"))
            .env(
                "VERIFYFULL_BENCH_BASELINE",
                format!("{cert_s}|{key_s}|{base_addr}"),
            ),
        base_addr,
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let payloads = [
        ("Pod, allowed", review(pod(true)), true),
        ("Pod, denied", review(pod(false)), false),
        ("Deployment, allowed", review(deployment(true)), true),
        ("Deployment, denied", review(deployment(false)), false),
    ];
    rt.block_on(async {
        // Verdicts first: a fast wrong answer fails the benchmark.
        let mut s = connect(ours.addr, &connector).await;
        for (name, body, allowed) in &payloads {
            let (status, resp) = post(&mut s, body).await;
            let v: Value = serde_json::from_slice(&resp).expect("review");
            assert_eq!((status, v["response"]["allowed"].as_bool()), (200, Some(*allowed)), "{name}");
        }
        println!(
            "webhook load benchmark: {CONNECTIONS} keep-alive TLS 1.3 connections, ECDSA P-256; servers on core 0, client on core 1; saturation: median of {RUNS} runs of {SATURATION:?}"
        );
        for (name, body, _) in &payloads {
            println!("payload {name}: {} bytes", body.len());
        }
        println!();
        println!(
            "| server | payload | reviews/s (saturation) | server CPU µs/review | p50 ms | p99 ms | p99.9 ms |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|");
        for server in [&ours, &base] {
            for (name, body, _) in &payloads {
                let (rps, cpu) = saturate(server, &connector, body).await;
                let (p50, p99, p999) = open_loop(server, &connector, body).await;
                println!(
                    "| {} | {name} | {rps:.0} | {cpu:.1} | {p50:.2} | {p99:.2} | {p999:.2} |",
                    server.name
                );
            }
        }
        println!();
        println!("latency: open loop at {RATE} reviews/s for {OPEN_LOOP:?} over {CONNECTIONS} connections; a wait for a free connection counts");
        for server in [&ours, &base] {
            let rss = status_kib(server.child.id(), "VmHWM:");
            println!("peak RSS of {}: {:.1} MiB", server.name, rss as f64 / 1024.0);
        }
        // The same server with 10,000 ConfigMaps in its cache, under the same load.
        let cached_addr = free_port();
        let cached = start_server(
            "verifyfull-webhook, 10,000 ConfigMaps cached",
            Command::new("taskset")
                .args(["-c", "0"])
                .arg(std::env::current_exe().expect("exe"))
                .env("VERIFYFULL_BENCH_CACHED", format!("{cert_s}|{key_s}|{cached_addr}")),
            cached_addr,
        );
        let (_, body, _) = &payloads[2];
        let (rps, cpu) = saturate(&cached, &connector, body).await;
        let rss = status_kib(cached.child.id(), "VmHWM:");
        println!(
            "{}: Deployment, allowed: {rps:.0} reviews/s, {cpu:.1} µs/review, peak RSS {:.1} MiB",
            cached.name,
            rss as f64 / 1024.0
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
