//! The webhook under load over TLS with keep-alive connections, next to a baseline webhook
//! in the typical kube-rs example shape (`AdmissionReview<DynamicObject>`, one log line per
//! request, always allow) on the same TLS setup, in the same run.
//!
//! Run: `taskset -c 1 cargo bench -p verifyfull-webhook --bench load` — the servers are
//! started on core 0 (`taskset -c 0`), the load generator stays on core 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;

mod support;
use support::*;

const SATURATION: Duration = Duration::from_secs(2);
/// Saturation runs per row; the median is reported.
const RUNS: usize = 3;
const OPEN_LOOP: Duration = Duration::from_secs(5);
const RATE: u64 = 1000;
const CONNECTIONS: usize = 16;

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
        new_connections_per_second: webhook::ServerLimits::default().new_connections_per_second,
    };
    let shutdown = runtime::serve::Shutdown {
        delay: Duration::ZERO,
        drain: Duration::ZERO,
    };
    runtime::serve::serve(listener, acceptor, router, limits, shutdown, stop, || {}).await;
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

    let connector = connector(ca);
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
