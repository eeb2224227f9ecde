//! The webhook under attack: each attack runs for a few seconds against the real binary
//! while a well-behaved client sends reviews at a fixed rate (open loop) and probes
//! `/readyz`; the table gives the client's latency and failures and the server's peak
//! memory per attack. The server's stdout is a pipe nobody reads for the whole run (a
//! stalled log pipe), so every phase also runs with logging stalled.
//!
//! Run: `cargo bench -p verifyfull-webhook --bench attack` (results in BENCHMARKS.md).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod support;
use support::*;

const PHASE: Duration = Duration::from_secs(6);
/// Reviews per second from the well-behaved client.
const RATE: u64 = 200;
const CLIENT_CONNECTIONS: usize = 8;

/// What the attackers share.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    admin: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

impl Target {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Posts `body` in a loop on fresh or kept connections until stopped.
    async fn flood(self, body: Bytes) {
        while self.running() {
            let Ok(Ok(mut s)) = tokio::time::timeout(
                Duration::from_secs(2),
                try_connect(self.addr, &self.connector),
            )
            .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            while self.running() {
                self.sent.fetch_add(1, Ordering::Relaxed);
                if try_post(&mut s, &body).await.is_none() {
                    break;
                }
            }
        }
    }
}

async fn try_connect(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("webhook.verifyfull.svc")
        .map_err(std::io::Error::other)?;
    let tls = connector.connect(name, tcp).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn try_post(sender: &mut Sender, body: &Bytes) -> Option<u16> {
    use http_body_util::{BodyExt, Full};
    let req = hyper::Request::post("/validate/enforce")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.ok()?;
    Some(status)
}

/// A Pod review whose env is `env` (with `kind` after `spec` when `out_of_order`).
fn pod_review_text(env: &str, out_of_order: bool) -> Bytes {
    let spec = format!(r#""spec":{{"containers":[{{"name":"app","image":"x","env":[{env}]}}]}}"#);
    let head = r#""apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"shop"}"#;
    let object = if out_of_order {
        format!("{{{spec},{head}}}")
    } else {
        format!("{{{head},{spec}}}")
    };
    Bytes::from(format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"namespace":"shop","operation":"CREATE","userInfo":{{"username":"attacker"}},"object":{object}}}}}"#
    ))
}

/// A doubling `$(VAR)` chain, at the cap on variables.
fn bomb() -> Bytes {
    let mut env = vec![r#"{"name":"V0","value":"xxxxxxxxxxxxxxxx"}"#.to_string()];
    env.extend(
        (1..policy::MAX_ENV_PER_POD)
            .map(|i| format!(r#"{{"name":"V{i}","value":"$(V{p})$(V{p})"}}"#, p = i - 1)),
    );
    pod_review_text(&env.join(","), false)
}

/// 100,000 variables (ten times the cap).
fn hundred_thousand() -> Bytes {
    let env: Vec<String> = (0..100_000)
        .map(|i| format!(r#"{{"name":"V{i}","value":"v"}}"#))
        .collect();
    pod_review_text(&env.join(","), false)
}

/// An 8 MiB review with `spec` before `kind`, within the caps (so it is read and judged).
fn out_of_order_8mib() -> Bytes {
    let value = "y".repeat(800);
    let n = (8 * 1024 * 1024 - 4096) / (value.len() + 24);
    let env: Vec<String> = (0..n.min(policy::MAX_ENV_PER_POD))
        .map(|i| format!(r#"{{"name":"V{i}","value":"{value}"}}"#))
        .collect();
    pod_review_text(&env.join(","), true)
}

/// Sends all of an 8 MiB body but its last byte, then holds the connection.
async fn hold_upload(t: Target) {
    let Ok(mut tls) = tls(t.addr, &t.connector).await else {
        return;
    };
    let len = webhook::MAX_BODY;
    let head = format!(
        "POST /validate/enforce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    if tls.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent + chunk.len() < len && t.running() {
        if tls.write_all(&chunk).await.is_err() {
            return;
        }
        sent += chunk.len();
        t.sent.fetch_add(1, Ordering::Relaxed);
    }
    while t.running() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tls(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("webhook.verifyfull.svc")
        .map_err(std::io::Error::other)?;
    connector.connect(name, tcp).await
}

/// A connection that completes one review, then stays open and idle.
async fn idle(t: Target) {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(5), try_connect(t.addr, &t.connector)).await
    else {
        return;
    };
    t.sent.fetch_add(1, Ordering::Relaxed);
    let _ = try_post(&mut s, &review(pod(true))).await;
    while t.running() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Headers (or a body) one byte at a time, on the HTTPS or the admin port.
async fn slow(t: Target, admin: bool, body: bool) {
    let addr = if admin { t.admin } else { t.addr };
    let text: &[u8] = if body {
        b"POST /validate/enforce HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"apiVersion\""
    } else {
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nUser-Agent: slow-loris-slow-loris-slow-loris\r\n\r\n"
    };
    while t.running() {
        t.sent.fetch_add(1, Ordering::Relaxed);
        let result: std::io::Result<()> = async {
            if admin {
                let mut tcp = TcpStream::connect(addr).await?;
                drip(&mut tcp, text, &t).await
            } else {
                let mut s = tls(addr, &t.connector).await?;
                drip(&mut s, text, &t).await
            }
        }
        .await;
        if result.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn drip<S: AsyncWriteExt + Unpin>(s: &mut S, text: &[u8], t: &Target) -> std::io::Result<()> {
    for b in text {
        if !t.running() {
            return Ok(());
        }
        s.write_all(&[*b]).await?;
        s.flush().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

type Pool = (
    tokio::sync::mpsc::Sender<Option<Sender>>,
    tokio::sync::mpsc::Receiver<Option<Sender>>,
);

/// The client's keep-alive connections, opened before an attack starts (as the API
/// server's are); one that breaks is reopened during the phase.
async fn pool(t: &Target) -> Pool {
    let (tx, rx) = tokio::sync::mpsc::channel::<Option<Sender>>(CLIENT_CONNECTIONS);
    let warm = review(deployment(true));
    for _ in 0..CLIENT_CONNECTIONS {
        let mut s = try_connect(t.addr, &t.connector).await.ok();
        if let Some(s) = &mut s {
            let _ = try_post(s, &warm).await;
        }
        let _ = tx.send(s).await;
    }
    (tx, rx)
}

/// The well-behaved client for one phase: latencies (ms) and failures; readiness probes
/// and how many failed.
async fn good_client(t: &Target, body: &Bytes, (tx, rx): Pool) -> (Vec<f64>, u64, u64, u64) {
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let total = RATE * PHASE.as_secs();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..total {
        let at = start + Duration::from_micros(i * 1_000_000 / RATE);
        let (tx, rx, body, t, failures) = (
            tx.clone(),
            rx.clone(),
            body.clone(),
            t.clone(),
            failures.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let woke = Instant::now();
            let held = rx.lock().await.recv().await.flatten();
            let mut sender = match held {
                Some(s) => Some(s),
                None => try_connect(t.addr, &t.connector).await.ok(),
            };
            let ok = match &mut sender {
                Some(s) => matches!(try_post(s, &body).await, Some(200)),
                None => false,
            };
            if !ok {
                failures.fetch_add(1, Ordering::Relaxed);
                sender = None;
            }
            let took = woke.elapsed().as_secs_f64() * 1e3;
            let _ = tx.send(sender).await;
            took
        }));
    }
    let probes = async {
        let (mut n, mut bad) = (0u64, 0u64);
        while start.elapsed() < PHASE {
            n += 1;
            let ok = tokio::time::timeout(Duration::from_secs(1), readyz(t.admin)).await;
            if !matches!(ok, Ok(true)) {
                bad += 1;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (n, bad)
    };
    let ((probes, bad_probes), lat) = tokio::join!(probes, async {
        let mut lat = Vec::with_capacity(tasks.len());
        for task in tasks {
            lat.push(task.await.unwrap_or(f64::INFINITY));
        }
        lat
    });
    (lat, failures.load(Ordering::Relaxed), probes, bad_probes)
}

async fn readyz(admin: SocketAddr) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut tcp) = TcpStream::connect(admin).await else {
        return false;
    };
    if tcp
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    out.starts_with(b"HTTP/1.1 200")
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() {
    raise_fd_limit();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("verifyfull-attack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key, ca) = certificate(&dir);
    let (addr, admin) = (free_port(), free_port());
    // `VERIFYFULL_ATTACK_SERVER_CPU=0` pins the server to core 0 (run the benchmark itself
    // under `taskset -c 1`), so that the attackers' own CPU does not count against it.
    let mut command = match std::env::var("VERIFYFULL_ATTACK_SERVER_CPU") {
        Ok(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu, env!("CARGO_BIN_EXE_verifyfull-webhook")]);
            c
        }
        Err(_) => Command::new(env!("CARGO_BIN_EXE_verifyfull-webhook")),
    };
    let mut child = command
        .args(["--standalone", "--listen", &addr.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        // Nobody reads this pipe: logging is stalled for the whole run.
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    for _ in 0..400 {
        if std::net::TcpStream::connect(admin).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let good = review(deployment(true));
    let (bomb, many, big) = (bomb(), hundred_thousand(), out_of_order_8mib());
    println!(
        "attacks against verifyfull-webhook (default limits; stdout never read), each {PHASE:?}, while a client sends {RATE} reviews/s (10 KB Deployment, {CLIENT_CONNECTIONS} keep-alive connections, open loop) and probes /readyz every 0.5 s"
    );
    println!(
        "payloads: bomb {} KB ({} variables, doubling), 100,000 variables {} KB, out-of-order {} KB",
        bomb.len() / 1024,
        policy::MAX_ENV_PER_POD,
        many.len() / 1024,
        big.len() / 1024
    );
    println!();
    println!(
        "| attack | client reviews | failed | p50 ms | p99 ms | max ms | /readyz failed | attacker requests | server RSS now MiB | server peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    type Attack = Box<dyn Fn(&Target) -> Vec<tokio::task::JoinHandle<()>>>;
    let phases: Vec<(&str, Attack)> = vec![
        ("none (baseline)", Box::new(|_| Vec::new())),
        (
            "expansion bombs, 4 clients",
            Box::new(move |t| {
                (0..4)
                    .map(|_| tokio::spawn(t.clone().flood(bomb.clone())))
                    .collect()
            }),
        ),
        (
            "100,000 variables, 4 clients",
            Box::new(move |t| {
                (0..4)
                    .map(|_| tokio::spawn(t.clone().flood(many.clone())))
                    .collect()
            }),
        ),
        (
            "out-of-order 8 MiB reviews, 32 clients",
            Box::new(move |t| {
                (0..32)
                    .map(|_| tokio::spawn(t.clone().flood(big.clone())))
                    .collect()
            }),
        ),
        (
            "8 MiB uploads held open, 32 clients",
            Box::new(|t| {
                (0..32)
                    .map(|_| tokio::spawn(hold_upload(t.clone())))
                    .collect()
            }),
        ),
        (
            "10,000 idle kept-alive connections",
            Box::new(|t| (0..10_000).map(|_| tokio::spawn(idle(t.clone()))).collect()),
        ),
        (
            "slow headers and bodies: 300 HTTPS, 100 bodies, 50 admin",
            Box::new(|t| {
                let mut v: Vec<_> = (0..300)
                    .map(|_| tokio::spawn(slow(t.clone(), false, false)))
                    .collect();
                v.extend((0..100).map(|_| tokio::spawn(slow(t.clone(), false, true))));
                v.extend((0..50).map(|_| tokio::spawn(slow(t.clone(), true, false))));
                v
            }),
        ),
    ];
    let connector = connector(ca);
    let mut worst_p99: f64 = 0.0;
    // `VERIFYFULL_ATTACK_ONLY=bombs,idle` runs only the attacks whose names contain one of
    // the words (and the baseline).
    let only: Vec<String> = std::env::var("VERIFYFULL_ATTACK_ONLY")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    rt.block_on(async {
        for (name, attack) in &phases {
            if !only.is_empty()
                && !name.starts_with("none")
                && !only.iter().any(|w| name.contains(w.as_str()))
            {
                continue;
            }
            let t = Target {
                addr,
                admin,
                connector: connector.clone(),
                stop: Arc::new(AtomicBool::new(false)),
                sent: Arc::new(AtomicU64::new(0)),
            };
            let connections = pool(&t).await;
            let attackers = attack(&t);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (mut lat, failed, _probes, bad_probes) = good_client(&t, &good, connections).await;
            let now = support::status_kib(pid, "VmRSS:") as f64 / 1024.0;
            t.stop.store(true, Ordering::Relaxed);
            for a in attackers {
                a.abort();
            }
            lat.sort_by(f64::total_cmp);
            let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            worst_p99 = worst_p99.max(q(0.99));
            let peak = support::status_kib(pid, "VmHWM:") as f64 / 1024.0;
            println!(
                "| {name} | {} | {failed} | {:.2} | {:.2} | {:.2} | {bad_probes} | {} | {now:.1} | {peak:.1} |",
                lat.len(),
                q(0.5),
                q(0.99),
                lat.last().copied().unwrap_or(0.0),
                t.sent.load(Ordering::Relaxed),
            );
            // Let the server settle (idle connections time out) before the next attack.
            tokio::time::sleep(Duration::from_secs(11)).await;
        }
        let metrics = metrics_text(admin).await;
        println!();
        for line in metrics.lines().filter(|l| {
            l.starts_with("verifyfull_webhook_refused_total")
                || l.starts_with("verifyfull_webhook_log_lines_dropped_total")
        }) {
            println!("{line}");
        }
        let verdict: Value = json!({"worst_p99_ms": worst_p99});
        println!("{verdict}");
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn metrics_text(admin: SocketAddr) -> String {
    use tokio::io::AsyncReadExt;
    let Ok(mut tcp) = TcpStream::connect(admin).await else {
        return String::new();
    };
    let _ = tcp
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out).await;
    out
}
