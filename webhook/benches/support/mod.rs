//! What the webhook benchmarks share: the certificate, the TLS client, servers as
//! processes, and review payloads shaped as the API server sends them.
#![allow(dead_code)] // each benchmark uses part of it

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// A TLS client trusting `ca`.
pub fn connector(ca: rustls::pki_types::CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(client))
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr")
}

pub struct Server {
    pub name: &'static str,
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `Name:   value kB` line of `/proc/<pid>/status`.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // stat fields 14 (utime) and 15 (stime), counted after the command name.
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub async fn connect(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> Sender {
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

pub async fn post(sender: &mut Sender, body: &Bytes) -> (u16, Bytes) {
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

/// A CREATE review of `object` as the API server sends it.
pub fn review(object: Value) -> Bytes {
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

pub fn container(good: bool) -> Value {
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

pub fn pod_spec(good: bool) -> Value {
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
pub fn pod(good: bool) -> Value {
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
pub fn deployment(good: bool) -> Value {
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

pub fn start_server(name: &'static str, cmd: &mut Command, addr: SocketAddr) -> Server {
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

pub fn certificate(dir: &Path) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
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
pub async fn cached(cert: PathBuf, key: PathBuf, addr: SocketAddr) {
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
        profiles: None,
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
