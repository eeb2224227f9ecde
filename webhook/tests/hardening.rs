//! No single request, client or fault takes the webhook down: connection and request caps,
//! the body budget, an oversized `Content-Length`, slow clients on both ports, shutdown
//! with busy, idle and half-sent connections, certificates that must not be loaded, and —
//! against the real binary — signals, a stalled or closed stdout, running out of file
//! descriptors, and hostile TLS handshakes that must not reach the log.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webhook::ServerLimits;

mod common;
use common::*;

async fn start_with(pki: &Pki, limits: ServerLimits) -> webhook::Running {
    let (c, k) = pki.issue("first");
    webhook::start(
        webhook::Config {
            limits,
            ..config(&c, &k)
        },
        provider(),
    )
    .await
    .expect("start")
}

fn small_review() -> Vec<u8> {
    pod_review(json!([{"name": "PGHOST", "value": "db.example.net"}]))
        .to_string()
        .into_bytes()
}

async fn metrics(admin: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(admin).await.expect("admin");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    out
}

/// Reads until the peer closes; true when it did within `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A review whose body is still being sent: its connection is busy until it completes.
async fn busy_review(
    pki: &Pki,
    addr: SocketAddr,
) -> (
    http_body_util::channel::Sender<Bytes, std::convert::Infallible>,
    tokio::task::JoinHandle<u16>,
) {
    let (mut tx, body) = Channel::<Bytes, std::convert::Infallible>::new(4);
    let (mut sender, _) =
        open::<Channel<Bytes, std::convert::Infallible>>(&pki.client(), addr).await;
    let text = small_review();
    let req = hyper::Request::post("/validate/enforce")
        .header("content-length", text.len())
        .body(body)
        .expect("request");
    let answer = tokio::spawn(async move {
        match sender.send_request(req).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    });
    tx.send_data(Bytes::copy_from_slice(&text[..10]))
        .await
        .expect("send");
    // Let the server see the request start.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (tx, answer)
}

async fn finish_busy(
    mut tx: http_body_util::channel::Sender<Bytes, std::convert::Infallible>,
    answer: tokio::task::JoinHandle<u16>,
) -> u16 {
    let text = small_review();
    tx.send_data(Bytes::copy_from_slice(&text[10..]))
        .await
        .expect("send");
    drop(tx);
    answer.await.expect("answer")
}

async fn handshake_ok(pki: &Pki, addr: SocketAddr) -> bool {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("webhook.verifyfull.svc").expect("name");
    match pki.client().connect(name, tcp).await {
        // A refused connection may still finish the handshake from the client's side:
        // a request tells.
        Ok(tls) => {
            let Ok((mut s, conn)) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls)).await
            else {
                return false;
            };
            tokio::spawn(conn);
            let req = hyper::Request::post("/validate/enforce")
                .body(Full::new(Bytes::from(small_review())))
                .expect("request");
            matches!(s.send_request(req).await, Ok(r) if r.status() == 200)
        }
        Err(_) => false,
    }
}

/// At the cap, idle connections make room (those that never completed a request first);
/// connections busy with a request are never closed, and when all are busy a new one is
/// refused at once.
#[tokio::test]
async fn at_the_cap_idle_connections_make_room_and_busy_ones_are_kept() {
    let pki = Pki::new("conn-cap");
    let limits = ServerLimits {
        max_connections: 4,
        ..ServerLimits::default()
    };
    let server = start_with(&pki, limits).await;
    // Two connections that served a review, two that never sent anything.
    let mut served = vec![
        connect(&pki, server.addr).await,
        connect(&pki, server.addr).await,
    ];
    for c in &mut served {
        assert_eq!(c.post("/validate/enforce", small_review()).await.0, 200);
    }
    let mut silent = vec![
        TcpStream::connect(server.addr).await.expect("connect"),
        TcpStream::connect(server.addr).await.expect("connect"),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Two newcomers take the silent ones' places; the served ones keep theirs.
    assert!(handshake_ok(&pki, server.addr).await);
    assert!(handshake_ok(&pki, server.addr).await);
    for s in &mut silent {
        assert!(closed_within(s, Duration::from_secs(2)).await);
    }
    for c in &mut served {
        assert_eq!(c.post("/validate/enforce", small_review()).await.0, 200);
    }
    drop(served);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Four reviews in flight: every place is busy, so a fifth connection is refused.
    let mut busy = Vec::new();
    for _ in 0..4 {
        busy.push(busy_review(&pki, server.addr).await);
    }
    assert!(!handshake_ok(&pki, server.addr).await);
    // The busy ones complete.
    for (tx, answer) in busy {
        assert_eq!(finish_busy(tx, answer).await, 200);
    }
}

#[tokio::test]
async fn reviews_past_the_in_flight_cap_get_503_at_once() {
    let pki = Pki::new("in-flight");
    let limits = ServerLimits {
        max_in_flight: 0,
        ..ServerLimits::default()
    };
    let server = start_with(&pki, limits).await;
    let mut conn = connect(&pki, server.addr).await;
    let (status, body) = conn.post("/validate/enforce", small_review()).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("too many reviews in flight"));
    let m = metrics(server.admin_addr).await;
    assert!(
        m.contains(r#"verifyfull_webhook_refused_total{reason="in_flight"} 1"#),
        "{m}"
    );
}

/// Large bodies share a budget; a small review never waits for them.
#[tokio::test]
async fn large_bodies_share_a_budget_and_small_reviews_pass() {
    let pki = Pki::new("body-budget");
    let limits = ServerLimits {
        body_budget: 128 * 1024,
        ..ServerLimits::default()
    };
    let server = start_with(&pki, limits).await;
    let chunk = |kib: usize| Bytes::from(vec![b' '; kib * 1024]);
    // A holds 100 KiB of the budget and stalls.
    let (mut a_tx, a_body) = Channel::<Bytes, std::convert::Infallible>::new(4);
    let (mut a, _) =
        open::<Channel<Bytes, std::convert::Infallible>>(&pki.client(), server.addr).await;
    let a_req = hyper::Request::post("/validate/enforce")
        .body(a_body)
        .expect("request");
    let a_resp = tokio::spawn(async move { a.send_request(a_req).await });
    a_tx.send_data(chunk(64)).await.expect("send");
    a_tx.send_data(chunk(100)).await.expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B needs 60 KiB more than its first 64: refused before it finishes.
    let (mut b, _) = open::<Full<Bytes>>(&pki.client(), server.addr).await;
    let resp = b
        .send_request(
            hyper::Request::post("/validate/enforce")
                .body(Full::new(chunk(124)))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 503);
    // A small review passes meanwhile.
    let mut c = connect(&pki, server.addr).await;
    assert_eq!(c.post("/validate/enforce", small_review()).await.0, 200);
    let m = metrics(server.admin_addr).await;
    assert!(
        m.contains(r#"verifyfull_webhook_refused_total{reason="body_budget"} 1"#),
        "{m}"
    );
    drop(a_tx);
    let _ = a_resp.await;
}

#[tokio::test]
async fn an_oversized_content_length_gets_413_before_any_body() {
    let pki = Pki::new("too-large");
    let server = start_with(&pki, ServerLimits::default()).await;
    let mut tls = tls_stream(&pki.client(), server.addr).await;
    tls.write_all(
        b"POST /validate/enforce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9000000\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = vec![0u8; 64];
    let n = tls.read(&mut head).await.expect("read");
    let text = String::from_utf8_lossy(&head[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

/// Slow clients on the admin port: each gives its place to the next probe, and the header
/// timeout cuts off the rest.
#[tokio::test]
async fn the_admin_port_cuts_off_slow_clients_and_probes_get_through() {
    let pki = Pki::new("admin-slow");
    let limits = ServerLimits {
        max_admin_connections: 3,
        ..ServerLimits::default()
    };
    let server = start_with(&pki, limits).await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(server.admin_addr).await.expect("admin");
        s.write_all(b"GET /livez HTTP/1.1\r\nHo")
            .await
            .expect("write");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The cap is full of slow clients, and probes still get through.
    for _ in 0..3 {
        assert_eq!(http_get(server.admin_addr, "/readyz").await, 200);
    }
    // Each probe took the place of a slow client; all are closed (by the probes or, at the
    // latest, the header timeout of 2 s in these tests).
    for s in &mut slow {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
}

#[tokio::test]
async fn during_the_delay_responses_ask_to_close_and_the_server_stops_within_delay_and_drain() {
    let pki = Pki::new("close");
    let (c, k) = pki.issue("first");
    let server = webhook::start(
        webhook::Config {
            shutdown_delay: Duration::from_millis(800),
            drain_timeout: Duration::from_secs(1),
            ..config(&c, &k)
        },
        provider(),
    )
    .await
    .expect("start");
    let mut busy = connect(&pki, server.addr).await;
    let _idle = connect(&pki, server.addr).await;
    // A request whose body never completes, and a TCP connection that never handshakes.
    let mut half = tls_stream(&pki.client(), server.addr).await;
    half.write_all(b"POST /validate/enforce HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("write");
    let _raw = TcpStream::connect(server.addr).await.expect("connect");
    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let req = hyper::Request::post("/validate/enforce")
        .body(Full::new(Bytes::from(small_review())))
        .expect("request");
    let resp = busy.sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let _ = resp.into_body().collect().await;
    let started = Instant::now();
    server.shutdown().await;
    // Delay (0.8 s, 0.1 already spent) plus drain (1 s), with room for a slow machine.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// A pair signed by the test CA, valid from `days_from`..`days_to` relative to now.
fn pair_valid(pki: &Pki, days_from: i64, days_to: i64) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(vec!["webhook.verifyfull.svc".to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "dated");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days_from);
    params.not_after = now + time::Duration::days(days_to);
    let cert = params.signed_by(&key, &pki.issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

fn write_pair(pki: &Pki, cert: &str, key: &str) {
    std::fs::write(pki.dir.join("tls.key"), key).expect("key");
    std::fs::write(pki.dir.join("tls.crt"), cert).expect("cert");
}

async fn metric_value(admin: SocketAddr, line: &str) -> Option<f64> {
    metrics(admin)
        .await
        .lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_broken_chain_or_an_out_of_date_pair_is_not_loaded() {
    let pki = Pki::new("bad-reload");
    let server = start_with(&pki, ServerLimits::default()).await;
    let failures = "verifyfull_webhook_certificate_reload_failures_total";
    let (good_cert, good_key) = pair_valid(&pki, -1, 30);
    for (what, cert, key) in [
        (
            "a corrupt extra block",
            format!(
                "{good_cert}-----BEGIN CERTIFICATE-----\nnot base64 !!!\n-----END CERTIFICATE-----\n"
            ),
            good_key.clone(),
        ),
        (
            "an expired pair",
            pair_valid(&pki, -30, -1).0,
            pair_valid(&pki, -30, -1).1,
        ),
        (
            "a pair not yet valid",
            pair_valid(&pki, 1, 30).0,
            pair_valid(&pki, 1, 30).1,
        ),
    ] {
        let before = metric_value(server.admin_addr, failures)
            .await
            .unwrap_or(0.0);
        write_pair(&pki, &cert, &key);
        let deadline = Instant::now() + Duration::from_secs(5);
        while metric_value(server.admin_addr, failures)
            .await
            .unwrap_or(0.0)
            <= before
        {
            assert!(Instant::now() < deadline, "{what}: no failure counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The old pair is still served and handshakes work.
        let mut c = connect(&pki, server.addr).await;
        assert_eq!(
            c.post("/validate/enforce", small_review()).await.0,
            200,
            "{what}"
        );
        assert_eq!(http_get(server.admin_addr, "/readyz").await, 200, "{what}");
        assert_eq!(
            metric_value(
                server.admin_addr,
                "verifyfull_webhook_certificate_reload_failing"
            )
            .await,
            Some(1.0),
            "{what}"
        );
    }
}

#[tokio::test]
async fn an_expired_serving_certificate_is_not_ready() {
    let pki = Pki::new("expired-start");
    let (cert, key) = pair_valid(&pki, -30, -1);
    write_pair(&pki, &cert, &key);
    let server = webhook::start(
        config(&pki.dir.join("tls.crt"), &pki.dir.join("tls.key")),
        provider(),
    )
    .await
    .expect("start");
    assert_eq!(http_get(server.admin_addr, "/readyz").await, 503);
    // A valid pair arrives: ready.
    let (cert, key) = pair_valid(&pki, -1, 30);
    write_pair(&pki, &cert, &key);
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(server.admin_addr, "/readyz").await != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- The binary ----

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr")
}

/// `verifyfull-webhook --standalone` with its stdout piped to the test.
struct Binary {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Binary {
    /// Starts it, through `sh -c` with `prefix` (e.g. `ulimit -n 64;`), and waits for /livez.
    fn start(pki: &Pki, prefix: &str) -> Binary {
        let (cert, key) = pki.issue("binary");
        let (addr, admin) = (free_addr(), free_addr());
        let script = format!(
            "{prefix} exec \"$0\" --standalone --listen {addr} --admin-listen {admin} --tls-cert-file {} --tls-key-file {} --shutdown-delay-seconds 0 --drain-seconds 1",
            cert.display(),
            key.display()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_verifyfull-webhook"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let b = Binary { child, addr, admin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(b.admin).is_err() {
            assert!(Instant::now() < deadline, "the webhook did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU seconds used so far (utime + stime).
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("stat");
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 =
            fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
        ticks / 100.0
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` reviews on one keep-alive connection; their statuses.
async fn reviews(pki: &Pki, addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut conn = connect(pki, addr).await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(conn.post("/validate/enforce", small_review()).await.0);
    }
    out
}

#[tokio::test]
async fn hangup_and_user_signals_are_ignored_and_sigterm_drains() {
    let pki = Pki::new("signals");
    let mut b = Binary::start(&pki, "");
    for s in ["HUP", "USR1", "USR2"] {
        b.signal(s);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(b.alive(), "SIGTERM-less death on SIG{s}");
        assert_eq!(http_get(b.admin, "/livez").await, 200);
    }
    assert!(reviews(&pki, b.addr, 3).await.iter().all(|s| *s == 200));
    b.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(s)) = b.child.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// Nobody reads stdout: the pipe fills up, reviews go on, the dropped lines are counted.
#[tokio::test]
async fn a_stalled_stdout_drops_log_lines_and_never_a_review() {
    let pki = Pki::new("stalled-log");
    let b = Binary::start(&pki, "");
    // Far more lines than the pipe (64 KiB) and the queue together hold.
    let batches: Vec<_> = (0..4).map(|_| reviews(&pki, b.addr, 2500)).collect();
    for statuses in futures::future::join_all(batches).await {
        assert!(statuses.iter().all(|s| *s == 200));
    }
    let dropped = metric_value(b.admin, "verifyfull_webhook_log_lines_dropped_total")
        .await
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "no line dropped: {dropped}");
    assert_eq!(http_get(b.admin, "/livez").await, 200);
}

#[tokio::test]
async fn a_closed_stdout_fails_no_review() {
    let pki = Pki::new("closed-log");
    let mut b = Binary::start(&pki, "");
    drop(b.child.stdout.take());
    let statuses = reviews(&pki, b.addr, 300).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(b.alive());
    assert_eq!(http_get(b.admin, "/readyz").await, 200);
}

/// Out of file descriptors: the accept loop backs off instead of spinning, and serves again
/// once descriptors are free.
#[tokio::test]
async fn out_of_file_descriptors_it_backs_off_then_serves_again() {
    let pki = Pki::new("emfile");
    let b = Binary::start(&pki, "ulimit -n 64;");
    let mut hogs = Vec::new();
    for _ in 0..80 {
        if let Ok(s) = std::net::TcpStream::connect(b.addr) {
            hogs.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = b.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = b.cpu_seconds() - before;
    assert!(
        used < 0.5,
        "{used} CPU seconds in 2 s while out of descriptors"
    );
    drop(hogs);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(3), reviews(&pki, b.addr, 1)).await;
        if matches!(ok.as_deref(), Ok([200])) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A ClientHello whose server name is not a valid host name: rustls would log it; the
/// webhook's log never carries what a client sent.
#[tokio::test]
async fn a_hostile_handshake_never_reaches_the_log() {
    let pki = Pki::new("sni");
    let mut b = Binary::start(&pki, "");
    let marker = "hostile-name-marker.example";
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(marker).expect("name");
    let mut client =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("hello");
    // Same length, now not a host name (a control character in it).
    let at = hello
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("SNI in the hello");
    hello[at + 12] = 0x01;
    for _ in 0..3 {
        let mut tcp = std::net::TcpStream::connect(b.addr).expect("connect");
        tcp.write_all(&hello).expect("write");
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = tcp.read(&mut [0u8; 64]);
    }
    assert!(reviews(&pki, b.addr, 1).await == [200]);
    b.signal("TERM");
    let mut log = String::new();
    let mut stdout = b.child.stdout.take().expect("stdout");
    let _ = stdout.read_to_string(&mut log);
    assert!(log.contains("\"review\""), "{log}");
    assert!(!log.contains("hostile-name"), "{log}");
    assert!(!log.contains("SNI"), "{log}");
}

/// Reviews naming a namespace the watch has not delivered wait for it — a namespace that
/// arrives releases its review at once, with the CA patch — but only
/// `NAMESPACE_WAITERS` wait at a time (a flood of reviews naming namespaces that do not
/// exist holds no more places than that); the others get the fail-closed answer at once.
#[tokio::test]
async fn reviews_wait_for_an_unseen_namespace_but_only_so_many() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::core::PartialObjectMetaExt;
    use kube::runtime::watcher::Event;
    use std::time::Instant;
    let policies = std::sync::Arc::new(webhook::policies::Policies::default());
    let policy: policy::crd::PostgresTLSPolicy = serde_json::from_value(json!({
        "apiVersion": "verifyfull.dev/v1alpha1", "kind": "PostgresTLSPolicy", "metadata": {"name": "corp"},
        "spec": {"caSource": {"secret": {"namespace": "verifyfull", "name": "ca"}},
                 "namespaceSelector": {"matchLabels": {"db-tls": "on"}}}}))
    .expect("policy");
    for e in [Event::Init, Event::InitApply(policy), Event::InitDone] {
        policies.apply_policy(e);
    }
    for e in [Event::Init, Event::InitDone] {
        policies.apply_namespace(e);
    }
    let pki = Pki::new("namespace-wait");
    let (c, k) = pki.issue("first");
    let server = webhook::start(
        webhook::Config {
            policies: Some(policies.clone()),
            ..config(&c, &k)
        },
        provider(),
    )
    .await
    .expect("start");
    let review = |ns: &str| {
        let mut r = pod_review(json!([{"name": "PGHOST", "value": "db.example.net"}]));
        r["request"]["namespace"] = json!(ns);
        r.to_string().into_bytes()
    };
    let flood = webhook::NAMESPACE_WAITERS + 4;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..flood {
        let mut conn = connect(&pki, server.addr).await;
        let body = review("nowhere");
        tasks.push(tokio::spawn(async move {
            let (status, body) = conn.post("/mutate", body).await;
            (status, response(&body), started.elapsed())
        }));
    }
    let mut at_once = 0;
    for t in tasks {
        let (status, resp, took) = t.await.expect("task");
        assert_eq!(
            (status, resp["allowed"].as_bool()),
            (200, Some(false)),
            "{resp}"
        );
        assert_eq!(resp["status"]["code"], 503, "{resp}");
        if took < webhook::NAMESPACE_WAIT / 2 {
            at_once += 1;
        }
    }
    assert_eq!(
        at_once, 4,
        "only the waiters beyond the cap are answered at once"
    );
    // A namespace that arrives while its review waits: the review goes on, patched.
    let mut conn = connect(&pki, server.addr).await;
    let waiting = tokio::spawn(async move { conn.post("/mutate", review("late")).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ns = ObjectMeta {
        name: Some("late".into()),
        labels: Some([("db-tls".to_string(), "on".to_string())].into()),
        ..Default::default()
    };
    policies.apply_namespace(Event::Apply(
        ns.into_response_partial::<k8s_openapi::api::core::v1::Namespace>(),
    ));
    let (status, body) = waiting.await.expect("task");
    let resp = response(&body);
    assert_eq!(
        (status, resp["patchType"].as_str()),
        (200, Some("JSONPatch")),
        "{resp}"
    );
}
