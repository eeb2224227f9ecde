//! A soak: the webhook binary (optimized) at 1,000 reviews/s for 10 minutes, its serving
//! certificate rotated every minute and the ConfigMaps its reviews read changed 50 times a
//! second through the stand-in's watch. Every review must be answered and allowed without a
//! warning (each Pod passes whatever value its ConfigMap holds; a value missing from the
//! cache would be a warning), and the tables show latency and resident memory minute by
//! minute. Baseline in the same run: a first minute without rotation or
//! churn, whose end is the warm RSS the growth is measured from.
//!
//! `taskset -c 1 cargo bench -p verifyfull-e2e --bench soak` — the webhook is moved to
//! core 0; `VERIFYFULL_SOAK_MINUTES` shortens the soak (default 10).
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the failure report

use bytes::Bytes;
use e2e::harness::Process;
use e2e::pki::Ca;
use e2e::standin::api::User;
use e2e::standin::{Options, StandIn};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RATE: u64 = 1_000;
const CONNECTIONS: usize = 16;
/// A connection is replaced after this many reviews, so that handshakes keep meeting the
/// rotated certificates (the API server's pool also reconnects).
const REQUESTS_PER_CONNECTION: u64 = 2_000;
const CONFIG_MAPS: usize = 100;
const CHURN_PER_SECOND: u64 = 50;
const MINUTE: Duration = Duration::from_secs(60);
const HOST: &str = "verifyfull-webhook.verifyfull.svc";

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr, tls: &tokio_rustls::TlsConnector) -> Option<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.set_nodelay(true).ok()?;
    let name = ServerName::try_from(HOST).ok()?;
    let stream = tls.connect(name, tcp).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// A Pod CREATE review whose connection string comes from ConfigMap `db-<i>`.
fn review(i: usize) -> Bytes {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("orders-{i}"), "namespace": "shop", "labels": {"app": "orders"}},
        "spec": {"containers": [{"name": "orders", "image": "registry.example.com/shop/orders:1.42.0",
            "env": [{"name": "DATABASE_URL", "valueFrom": {"configMapKeyRef": {"name": format!("db-{i}"), "key": "url"}}},
                    {"name": "LOG_LEVEL", "value": "info"}]}]}});
    Bytes::from(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": format!("00000000-0000-4000-8000-{i:012}"),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop", "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                    "groups": ["system:serviceaccounts", "system:authenticated"]},
                "object": pod, "oldObject": null, "dryRun": false}})
        .to_string(),
    )
}

/// A passing connection string; `n` changes the host, so every change is a real one.
fn url(i: usize, n: u64) -> String {
    format!(
        "postgresql://orders@db-{i}-{n}.shop.svc/orders?sslmode=verify-full&sslrootcert=/etc/ca/ca.crt"
    )
}

/// One review: its latency, or why it failed.
async fn post(sender: &mut Sender, body: &Bytes) -> Result<(), String> {
    let req = hyper::Request::post("/validate/enforce")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    // Allowed without a warning: the value was read from the cache (an unresolved one
    // would be allowed with a warning) and passed.
    let warned = v["response"]["warnings"]
        .as_array()
        .is_some_and(|w| !w.is_empty());
    if status != 200 || v["response"]["allowed"] != true || warned {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One phase of open-loop load at RATE/s for `length`: latencies (ms) and failures.
/// A review waiting for a free connection counts that wait.
async fn phase(
    addr: std::net::SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    bodies: &Arc<Vec<Bytes>>,
    length: Duration,
) -> (Vec<f64>, Vec<String>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<(Option<Sender>, u64)>(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        tx.send((connect(addr, tls).await, 0)).await.unwrap();
    }
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let total = RATE * length.as_secs();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + Duration::from_micros(i * 1_000_000 / RATE);
        let (tx, rx, bodies, tls) = (tx.clone(), rx.clone(), bodies.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(scheduled).await;
            let woke = Instant::now();
            let (sender, used) = rx.lock().await.recv().await.unwrap();
            let fresh = used >= REQUESTS_PER_CONNECTION || sender.is_none();
            let mut sender = match sender {
                Some(s) if !fresh => Some(s),
                _ => connect(addr, &tls).await,
            };
            let used = if fresh { 0 } else { used };
            let body = &bodies[i as usize % bodies.len()];
            let result = match sender.as_mut() {
                Some(s) => post(s, body).await,
                None => Err("could not connect".to_string()),
            };
            let took = woke.elapsed().as_secs_f64() * 1e3;
            let keep = result.is_ok().then_some(sender).flatten();
            tx.send((keep, used + 1)).await.unwrap();
            result.map(|()| took)
        }));
    }
    let (mut lat, mut failed) = (Vec::with_capacity(tasks.len()), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(ms) => lat.push(ms),
            Err(e) => failed.push(e),
        }
    }
    lat.sort_by(f64::total_cmp);
    (lat, failed)
}

/// The webhook's own histogram of decision times (`le` bound in seconds, cumulative count).
async fn decision_buckets(admin: std::net::SocketAddr) -> Vec<(f64, u64)> {
    let (_, text) = e2e::harness::http_get(admin, "/metrics").await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("verifyfull_webhook_review_duration_seconds_bucket"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The bucket bound (ms) under which 99 % of the decisions between two readings fell.
fn decision_p99(before: &[(f64, u64)], after: &[(f64, u64)]) -> f64 {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(b, _)| b == le).map_or(0, |(_, c)| *c);
            (*le, n - was)
        })
        .collect();
    let total = delta.last().map_or(0, |(_, n)| *n);
    delta
        .iter()
        .find(|(_, n)| *n as f64 >= total as f64 * 0.99)
        .map_or(f64::NAN, |(le, _)| le * 1e3)
}

/// One minute's row: latency seen by the client (from the scheduled send to the answer:
/// TLS and both processes' scheduling included), and the webhook's decision alone.
struct Minute {
    lat: Vec<f64>,
    failed: usize,
    own_p99: f64,
    rss: u64,
    rotations: u64,
    changes: u64,
}

impl Minute {
    fn print(&self, m: u64, phase: &str) {
        let lat = &self.lat;
        println!(
            "| {m} | {phase} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} | {} | {} |",
            lat.len() + self.failed,
            self.failed,
            quantile(lat, 0.5),
            quantile(lat, 0.99),
            quantile(lat, 0.999),
            lat.last().copied().unwrap_or(f64::NAN),
            self.own_p99,
            self.rss as f64 / 1024.0,
            self.rotations,
            self.changes
        );
    }
}

fn quantile(lat: &[f64], p: f64) -> f64 {
    lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let minutes: u64 = std::env::var("VERIFYFULL_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(soak(minutes));
}

async fn soak(minutes: u64) {
    let standin = StandIn::start(Options::default()).await.unwrap();
    let admin = standin.client(&User::admin()).await.unwrap();
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    Api::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "shop");
    for i in 0..CONFIG_MAPS {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("db-{i}")}, "data": {"url": url(i, 0)}}),
        )
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let sa = User::new(
        "system:serviceaccount:verifyfull:verifyfull-webhook",
        &["system:serviceaccounts"],
    );
    standin.grant_cluster_admin(&sa);
    let kubeconfig = standin.kubeconfig(&sa).unwrap();
    let ca = Ca::new("soak CA").unwrap();
    let dir = std::env::temp_dir().join(format!("verifyfull-soak-{}", std::process::id()));
    let webhook = Process::start(
        &dir,
        Some(&kubeconfig),
        &ca.issue(&[HOST]).unwrap(),
        &["--log-format=json"],
    )
    .await
    .unwrap();
    let pid = webhook.pid().unwrap();
    let _ = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid.to_string()])
        .output();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let bodies = Arc::new((0..CONFIG_MAPS).map(review).collect::<Vec<_>>());
    let addr = webhook.addr;

    println!(
        "webhook soak: {RATE} reviews/s open loop over {CONNECTIONS} keep-alive TLS connections (each replaced after {REQUESTS_PER_CONNECTION} reviews); Pods read their DATABASE_URL from {CONFIG_MAPS} ConfigMaps; webhook on core 0"
    );
    println!();
    println!(
        "| minute | phase | reviews | failed | p50 ms | p99 ms | p99.9 ms | max ms | webhook's own p99 ≤ ms | RSS MiB | rotations | ConfigMap changes |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut buckets = decision_buckets(webhook.admin).await;
    let (lat, failed) = phase(addr, &tls, &bodies, MINUTE).await;
    let warm = rss_kib(pid);
    let now = decision_buckets(webhook.admin).await;
    let minute = Minute {
        lat,
        failed: failed.len(),
        own_p99: decision_p99(&buckets, &now),
        rss: warm,
        rotations: 0,
        changes: 0,
    };
    buckets = now;
    minute.print(0, "baseline: no rotation, no churn");
    let mut all_failed = failed;

    // Churn: CHURN_PER_SECOND merge patches a second, round robin over the ConfigMaps.
    let changes = Arc::new(AtomicU64::new(0));
    let churn = {
        let (cms, changes) = (cms.clone(), changes.clone());
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 / CHURN_PER_SECOND));
            loop {
                tick.tick().await;
                let n = changes.fetch_add(1, Ordering::Relaxed) + 1;
                let i = (n as usize) % CONFIG_MAPS;
                let patch = Patch::Merge(json!({"data": {"url": url(i, n)}}));
                let _ = cms
                    .patch(&format!("db-{i}"), &PatchParams::default(), &patch)
                    .await;
            }
        })
    };
    let (mut peak, mut p99s, mut rotations) = (warm, Vec::new(), 0);
    for m in 1..=minutes {
        webhook.rotate(&ca.issue(&[HOST]).unwrap()).unwrap();
        rotations += 1;
        let before = changes.load(Ordering::Relaxed);
        let (lat, failed) = phase(addr, &tls, &bodies, MINUTE).await;
        let rss = rss_kib(pid);
        peak = peak.max(rss);
        p99s.push(quantile(&lat, 0.99));
        let now = decision_buckets(webhook.admin).await;
        let minute = Minute {
            lat,
            failed: failed.len(),
            own_p99: decision_p99(&buckets, &now),
            rss,
            rotations,
            changes: changes.load(Ordering::Relaxed) - before,
        };
        buckets = now;
        minute.print(m, "soak");
        all_failed.extend(failed);
    }
    churn.abort();
    println!();
    let growth = (peak as f64 / warm as f64 - 1.0) * 100.0;
    let worst = p99s.iter().copied().fold(0.0f64, f64::max);
    println!(
        "failed reviews: {}; RSS after warm-up {:.1} MiB, peak {:.1} MiB ({growth:+.1} %); worst minute's p99 {worst:.2} ms",
        all_failed.len(),
        warm as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "targets: 0 failed reviews {}, RSS growth <= 10 % {}, p99 <= 2 ms {}",
        verdict(all_failed.is_empty()),
        verdict(growth <= 10.0),
        verdict(worst <= 2.0)
    );
    for f in all_failed.iter().take(5) {
        println!("failure: {f}");
    }
    webhook.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
