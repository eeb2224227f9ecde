//! What the TLS tests share: a test PKI, TLS clients, the server under test, real review
//! envelopes.
#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use policy::admission::{Policy, Subjects};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;
use tokio::net::TcpStream;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub struct Pki {
    pub dir: PathBuf,
    pub ca: rustls::pki_types::CertificateDer<'static>,
    pub issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("verifyfull-webhook-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "verifyfull test CA");
        let cert = params.self_signed(&key).expect("CA");
        let ca = cert.der().clone();
        Pki {
            dir,
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes a fresh serving certificate for `webhook.verifyfull.svc` and 127.0.0.1.
    pub fn issue(&self, cn: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![
            "webhook.verifyfull.svc".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        let (c, k) = (self.dir.join("tls.crt"), self.dir.join("tls.key"));
        // Written to temporary names and renamed, as the kubelet swaps `..data`.
        std::fs::write(self.dir.join("tls.crt.new"), cert.pem()).expect("write cert");
        std::fs::write(self.dir.join("tls.key.new"), key.serialize_pem()).expect("write key");
        std::fs::rename(self.dir.join("tls.key.new"), &k).expect("rename key");
        std::fs::rename(self.dir.join("tls.crt.new"), &c).expect("rename cert");
        (c, k)
    }

    pub fn client(&self) -> tokio_rustls::TlsConnector {
        trusting(self.ca.clone())
    }
}

/// A TLS client that trusts `ca` only.
pub fn trusting(ca: rustls::pki_types::CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub fn config(cert: &Path, key: &Path) -> webhook::Config {
    webhook::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        tls_cert_file: cert.to_path_buf(),
        tls_key_file: key.to_path_buf(),
        cert_reload_interval: Duration::from_millis(50),
        shutdown_delay: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(2),
        settings: policy::Settings::default(),
        profiles: None,
        policy: Policy {
            own_service_accounts: vec!["system:serviceaccount:verifyfull:operator".to_string()],
            ..Policy::default()
        },
        mode_label_subjects: Subjects::default(),
        caches: None,
        policies: None,
        limits: webhook::ServerLimits::default(),
        log_dropped: None,
    }
}

/// One keep-alive connection.
pub struct Conn {
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub subject: String,
}

/// A TLS connection to the webhook as `webhook.verifyfull.svc`.
pub async fn tls_stream(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("webhook.verifyfull.svc").expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// HTTP/1.1 over a new TLS connection, with request bodies of type `B`; also returns the
/// serving certificate the handshake saw.
pub async fn open<B>(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> (hyper::client::conn::http1::SendRequest<B>, String)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = tls_stream(connector, addr).await;
    let subject = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| format!("{:?}", c.as_ref()))
        .unwrap_or_default();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    (sender, subject)
}

pub async fn connect(pki: &Pki, addr: std::net::SocketAddr) -> Conn {
    let (sender, subject) = open(&pki.client(), addr).await;
    Conn { sender, subject }
}

impl Conn {
    /// Posts a review to `/validate/<mode>` and returns its `response`.
    pub async fn review(&mut self, mode: &str, review: &Value) -> Value {
        let (status, body) = self
            .post(
                &format!("/validate/{mode}"),
                review.to_string().into_bytes(),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        response(&body)
    }

    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let req = hyper::Request::post(path)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let resp = self.sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, body)
    }
}

pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

/// A real review envelope with a Pod whose first container carries `env`.
pub fn pod_review(env: Value) -> Value {
    let mut review = fixture("kwctl__tests_data_unprivileged-pod-admission-review.json");
    review["request"]["object"]["spec"]["containers"][0]["env"] = env;
    review
}

pub fn response(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).expect("review JSON");
    v["response"].clone()
}

pub async fn start(pki: &Pki) -> webhook::Running {
    let (c, k) = pki.issue("first");
    webhook::start(config(&c, &k), provider())
        .await
        .expect("start")
}

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> u16 {
    let tcp = TcpStream::connect(addr).await.expect("admin connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .body(Full::new(Bytes::new()))
        .expect("request");
    sender
        .send_request(req)
        .await
        .expect("response")
        .status()
        .as_u16()
}

/// A decider with the default policy and settings, no caches, and `policies`.
pub fn with_decider<T>(
    policies: Option<webhook::policies::Snapshot>,
    f: impl FnOnce(&webhook::review::Decider<'_>) -> T,
) -> T {
    let settings = policy::Settings::default();
    let decider = webhook::review::Decider {
        policy: &Policy::default(),
        mode_label_subjects: &Subjects::default(),
        context: policy::Context {
            settings: &settings,
            sources: &policy::NoSources,
            now: jiff::Timestamp::UNIX_EPOCH,
        },
        policies,
    };
    f(&decider)
}
