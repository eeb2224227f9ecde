//! An in-process stand-in for the parts of the Kubernetes API verifyfull uses, served over
//! HTTPS on 127.0.0.1 and reached through generated kubeconfigs. What it does not do is
//! listed in `tests/STANDIN.md`.

pub mod admission;
pub mod api;
pub mod controllers;
pub mod fields;
pub mod http;
pub mod rbac;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod store;

use crate::pki::Ca;
use api::{Server, User};
use base64::Engine;
use hyper_util::rt::TokioIo;
use resources::ResKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How to run the stand-in.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run the Deployment/ReplicaSet/Job/namespace controllers.
    pub controllers: bool,
    /// Changes kept for watches to resume from; older resource versions get 410.
    pub log_cap: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_every: Duration,
    /// Whose credentials the built-in controllers write with.
    pub controller_identity: ControllerIdentity,
    /// Authorize every request with RBAC ([`rbac`]); off, every user may do everything.
    pub rbac: bool,
}

/// How the controller manager authenticates its controllers' writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControllerIdentity {
    /// Each controller as its own service account,
    /// `system:serviceaccount:kube-system:<controller>` (`--use-service-account-credentials`).
    #[default]
    PerController,
    /// Every controller as `system:kube-controller-manager`.
    Manager,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            controllers: true,
            log_cap: 100_000,
            bookmark_every: Duration::from_secs(1),
            controller_identity: ControllerIdentity::default(),
            rbac: true,
        }
    }
}

/// A running stand-in. Dropping it stops the server.
#[derive(Debug)]
pub struct StandIn {
    pub addr: SocketAddr,
    pub server: Arc<Server>,
    auth: Arc<http::Auth>,
    ca: String,
    dir: PathBuf,
    controller_identity: ControllerIdentity,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl StandIn {
    pub async fn start(opts: Options) -> Result<StandIn, StartError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "verifyfull-standin-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let ca = Ca::new("verifyfull stand-in CA")?;
        let pair = ca.issue(&["127.0.0.1", "localhost"])?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let state = store::State::new(resources::builtins(), opts.log_cap);
        let server = Arc::new(Server::new(state, opts.bookmark_every));
        let auth = Arc::new(http::Auth::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        if let Ok(mut a) = server.address.lock() {
            *a = addr.to_string();
        }
        for ns in ["default", "kube-system", "kube-public"] {
            seed_namespace(&server, ns);
        }
        server.rbac.store(opts.rbac, Ordering::Relaxed);
        server.commit_raw(
            &(rbac_group(), "clusterroles".into()),
            "",
            "cluster-admin",
            store::EventType::Added,
            rbac::cluster_admin(),
        );
        if opts.controllers {
            controllers::Controllers::start(server.clone(), opts.controller_identity);
        }
        let (srv, au) = (server.clone(), auth.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, srv, au) = (acceptor.clone(), srv.clone(), au.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let restarts = srv.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let (srv, au) = (srv.clone(), au.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(http::handle(srv, au, req).await)
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(tls), service);
                    // A restart cuts every open connection, watches and requests alike.
                    tokio::select! {
                        _ = conn => {}
                        _ = restarts.restarted.notified() => {}
                    }
                });
            }
        });
        Ok(StandIn {
            addr,
            server,
            auth,
            ca: ca.pem().to_string(),
            dir,
            controller_identity: opts.controller_identity,
            accept,
        })
    }

    /// The stand-in's CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca
    }

    /// Writes a kubeconfig that authenticates as `user` (a bearer token) and returns its path.
    pub fn kubeconfig(&self, user: &User) -> std::io::Result<PathBuf> {
        static N: AtomicU64 = AtomicU64::new(1);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let token = format!(
            "{:016x}{n:08x}",
            jiff::Timestamp::now().as_nanosecond() as u64
        );
        if let Ok(mut t) = self.auth.tokens.lock() {
            t.insert(token.clone(), user.clone());
        }
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca);
        let doc = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": format!("https://{}", self.addr),
                          "certificate-authority-data": ca}}],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "user", "namespace": "default"}}],
            "current-context": "standin",
        });
        let path = self.dir.join(format!("kubeconfig-{n}"));
        std::fs::write(&path, doc.to_string())?;
        Ok(path)
    }

    /// A `kube` client for `user`.
    pub async fn client(&self, user: &User) -> Result<kube::Client, kube::Error> {
        let path = self
            .kubeconfig(user)
            .map_err(|e| kube::Error::Service(Box::new(e)))?;
        client_from(&path).await
    }

    /// Binds `user` to `cluster-admin`, as a test cluster gives its test users some role
    /// (the chart's components never are: they run with the chart's own RBAC).
    pub fn grant_cluster_admin(&self, user: &User) {
        let name = format!("test:{}", user.name.replace(':', "-"));
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "uid": format!("rbac-{name}"), "creationTimestamp": api::now()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user.name}]});
        self.server.commit_raw(
            &(rbac_group(), "clusterrolebindings".into()),
            "",
            &name,
            store::EventType::Added,
            binding,
        );
    }

    /// Makes `<name>.<namespace>.svc:<port>` reach `addr` (the stand-in's kube-proxy).
    pub fn route_service(&self, namespace: &str, name: &str, port: i32, addr: SocketAddr) {
        self.set_endpoints(namespace, name, port, &[addr]);
    }

    /// The ready endpoints of `<name>.<namespace>.svc:<port>`, each call to the Service
    /// taking the next (none: the Service has no endpoints).
    pub fn set_endpoints(&self, namespace: &str, name: &str, port: i32, ready: &[SocketAddr]) {
        if let Ok(mut r) = self.server.routes.lock() {
            r.insert((namespace.into(), name.into(), port), ready.to_vec());
        }
    }

    /// Restarts the API server, as far as clients can tell: every watch ends, the change
    /// log is lost (resuming from an earlier resource version gets `410 Gone`), and every
    /// open connection is cut; the stored objects stay, as they do in etcd.
    pub fn restart(&self) {
        self.server.state().restart();
        self.server.restarted.notify_waiters();
        self.server.webhook_connections.clear();
    }

    /// Latency added to every write before it commits.
    pub fn set_write_latency(&self, d: Duration) {
        self.server
            .write_latency_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Runs a CronJob now, as its schedule would; returns the Job's name.
    pub async fn trigger_cronjob(&self, namespace: &str, name: &str) -> Result<String, String> {
        controllers::Controllers::trigger(&self.server, self.controller_identity, namespace, name)
            .await
    }
}

/// A `kube` client from a kubeconfig file.
pub async fn client_from(path: &std::path::Path) -> Result<kube::Client, kube::Error> {
    let kc =
        kube::config::Kubeconfig::read_from(path).map_err(|e| kube::Error::Service(Box::new(e)))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| kube::Error::Service(Box::new(e)))?;
    kube::Client::try_from(config)
}

fn rbac_group() -> String {
    "rbac.authorization.k8s.io".into()
}

fn seed_namespace(server: &Server, name: &str) {
    let key: ResKey = (String::new(), "namespaces".into());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": format!("00000000-0000-4000-8000-{:012x}", name.len()),
                     "creationTimestamp": api::now(), "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
    server.commit_raw(&key, "", name, store::EventType::Added, ns);
}
