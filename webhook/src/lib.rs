//! verifyfull's validating admission webhook: HTTPS (rustls, TLS 1.2/1.3) for the API
//! server, one path per mode (`/validate/enforce`, `/validate/warn`, `/validate/audit`),
//! and a plain-HTTP admin port (`/livez`, `/readyz`, `/metrics`).
//!
//! The decision is `policy::admission::decide`; this crate decodes, times, records and
//! encodes. References to ConfigMaps (and, when allowed, Secrets) resolve from watch-fed
//! caches ([`cache`]); `--standalone` runs without a cluster (references stay unresolved,
//! never guessed).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use policy::admission::{Mode, Policy, Subjects};
use policy::{Context, NoSources, Settings};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub mod cache;
pub mod metrics;
pub mod policies;
pub mod review;
pub mod tls;

/// An UPDATE carries `object` and `oldObject`, each up to the API server's ~3 MiB.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub cert_reload_interval: Duration,
    /// How long to keep serving, not ready, after a shutdown signal (so endpoints update).
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish once draining starts.
    pub drain_timeout: Duration,
    /// Reading a request (headers and body) must finish within this.
    pub request_timeout: Duration,
    pub settings: Settings,
    pub policy: Policy,
    pub mode_label_subjects: Subjects,
    /// `None`: standalone. The server is not ready until the caches have synced.
    pub caches: Option<Arc<cache::Caches>>,
    /// `Some` with `--watch-policies`: not ready until policies and namespaces have synced.
    pub policies: Option<Arc<policies::Policies>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("serving certificate: {0}")]
    Cert(#[from] tls::CertError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct App {
    settings: Settings,
    policy: Policy,
    mode_label_subjects: Subjects,
    request_timeout: Duration,
    metrics: metrics::Metrics,
    /// Listening and not shutting down.
    ready: AtomicBool,
    caches: Option<Arc<cache::Caches>>,
    policies: Option<Arc<policies::Policies>>,
    cert: Arc<tls::Reloading>,
}

impl App {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && self.caches.as_ref().is_none_or(|c| c.synced())
            && self.policies.as_ref().is_none_or(|p| p.synced())
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Graceful shutdown: not ready at once, serve for the delay, stop accepting, drain
    /// in-flight requests (idle keep-alive connections are closed), then return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Loads the certificate, binds both ports and serves until shut down.
pub async fn start(
    config: Config,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Running, StartError> {
    let resolver = Arc::new(tls::Reloading::load(
        &config.tls_cert_file,
        &config.tls_key_file,
        provider.clone(),
    )?);
    let tls_config = tls::server_config(resolver.clone(), provider)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
    let listener = bind(config.listen).await?;
    let admin = bind(config.admin_listen).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        addr: config.admin_listen,
        source,
    })?;

    let app = Arc::new(App {
        settings: config.settings,
        policy: config.policy,
        mode_label_subjects: config.mode_label_subjects,
        request_timeout: config.request_timeout,
        metrics: metrics::Metrics::new(),
        ready: AtomicBool::new(false),
        caches: config.caches,
        policies: config.policies,
        cert: resolver.clone(),
    });
    let (shutdown, stop) = watch::channel(false);
    let reload = tokio::spawn(resolver.watch(config.cert_reload_interval));

    let router = Router::new()
        .route("/validate/{mode}", post(validate))
        .route("/mutate", post(mutate))
        .with_state(app.clone());
    let admin_router = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(app.clone());

    // The admin port outlives the drain, so probes see "not ready" during it.
    let (admin_stop, mut admin_stopped) = watch::channel(false);
    let admin_task = tokio::spawn(async move {
        let _ = axum::serve(admin, admin_router)
            .with_graceful_shutdown(async move {
                let _ = admin_stopped.wait_for(|s| *s).await;
            })
            .await;
    });

    let timeouts = Timeouts {
        request: config.request_timeout,
        delay: config.shutdown_delay,
        drain: config.drain_timeout,
    };
    app.ready.store(true, Ordering::SeqCst);
    let ready_app = app.clone();
    let done = tokio::spawn(async move {
        serve_https(listener, acceptor, router, timeouts, stop, || {
            // Not ready at once; serving goes on for the delay so endpoints drop this Pod first.
            ready_app.ready.store(false, Ordering::SeqCst);
        })
        .await;
        reload.abort();
        let _ = admin_stop.send(true);
        let _ = admin_task.await;
    });
    Ok(Running {
        addr,
        admin_addr,
        shutdown,
        done,
    })
}

/// Timeouts of the HTTPS server.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TLS handshake, request headers and body must arrive within this.
    pub request: Duration,
    /// How long to keep accepting after the stop signal.
    pub delay: Duration,
    /// How long in-flight requests may take to finish after that.
    pub drain: Duration,
}

/// Serves `router` over TLS, HTTP/1.1 with keep-alive and `TCP_NODELAY`, until `stop`;
/// then calls `on_stop`, keeps accepting for the delay, stops accepting, closes idle
/// connections and lets in-flight requests finish.
pub async fn serve_https(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
    on_stop: impl FnOnce(),
) {
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(router);
    let mut on_stop = Some(on_stop);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let delay_over = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let service = service.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(timeouts.request, acceptor.accept(tcp)).await else {
                        return;
                    };
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(timeouts.request)
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn).await;
                });
            }
            _ = stop.wait_for(|s| *s), if deadline.is_none() => {
                if let Some(f) = on_stop.take() {
                    f();
                }
                deadline = Some(tokio::time::Instant::now() + timeouts.delay);
            }
            _ = delay_over => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(timeouts.drain, graceful.shutdown()).await;
}

/// The log line of one review: names of kinds and results only, never an env value.
pub fn log_review(reviewed: &review::Reviewed, route: &'static str) {
    tracing::info!(
        kind = reviewed.kind,
        operation = reviewed.operation,
        result = reviewed.result,
        mode = route,
        "review"
    );
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    app.metrics.ready.set(i64::from(app.ready()));
    app.metrics.certificate_not_after.set(app.cert.not_after());
    if let Some(caches) = &app.caches {
        app.metrics.observe_caches(caches);
    }
    match app.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The request body, within the size and time limits.
async fn read_body(app: &App, body: Body) -> Result<axum::body::Bytes, Response> {
    match tokio::time::timeout(app.request_timeout, Limited::new(body, MAX_BODY).collect()).await {
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )
            .into_response()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {MAX_BODY} bytes"),
        )
            .into_response()),
        Ok(Err(_)) => Err((
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )
            .into_response()),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Decides one review on `route` (a mode, or `mutate`) and answers it.
fn answer(app: &App, bytes: &[u8], route: Option<Mode>) -> Response {
    let start = Instant::now();
    let snapshot = app.caches.as_ref().map(|c| c.snapshot());
    let sources: &dyn policy::ValueSource = match &snapshot {
        Some(s) => s,
        None => &NoSources,
    };
    let decider = review::Decider {
        policy: &app.policy,
        mode_label_subjects: &app.mode_label_subjects,
        context: Context {
            settings: &app.settings,
            sources,
            now: jiff::Timestamp::now(),
        },
        policies: app.policies.as_ref().map(|p| p.snapshot()),
    };
    let (reviewed, label) = match route {
        Some(mode) => (
            review::review(bytes, mode, &decider),
            metrics::mode_label(mode),
        ),
        None => (review::mutate(bytes, &decider), "mutate"),
    };
    app.metrics.record(&reviewed, label, start.elapsed());
    log_review(&reviewed, label);
    let content_type = if reviewed.status == 200 {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let status = StatusCode::from_u16(reviewed.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, content_type)],
        reviewed.body,
    )
        .into_response()
}

async fn validate(State(app): State<Arc<App>>, Path(mode): Path<String>, body: Body) -> Response {
    let mode = match mode.as_str() {
        "enforce" => Mode::Enforce,
        "warn" => Mode::Warn,
        "audit" => Mode::Audit,
        _ => return (StatusCode::NOT_FOUND, "modes: enforce, warn, audit").into_response(),
    };
    match read_body(&app, body).await {
        Ok(bytes) => answer(&app, &bytes, Some(mode)),
        Err(r) => r,
    }
}

/// Admission-time injection into Pods (`--watch-policies`).
async fn mutate(State(app): State<Arc<App>>, body: Body) -> Response {
    match read_body(&app, body).await {
        Ok(bytes) => answer(&app, &bytes, None),
        Err(r) => r,
    }
}
