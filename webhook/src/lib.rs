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
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use policy::admission::{Mode, Policy, Subjects};
use policy::{Context, NoSources, Settings};
use runtime::serve::{Limits, Shutdown};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

pub mod cache;
pub mod fold;
pub mod metrics;
pub mod policies;
pub mod review;
pub mod tls;

/// An UPDATE carries `object` and `oldObject`, each up to the API server's ~3 MiB.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The first this many bytes of every body need no share of the body budget: with at most
/// [`ServerLimits::max_connections`] requests they are bounded anyway, and an ordinary
/// review (a 10 KB Deployment, twice for an UPDATE) never waits for large ones.
pub const SMALL_BODY: usize = 64 * 1024;

/// How long a review waits for a namespace the watch has not delivered yet (one created
/// with its Pod) when a policy might select it: well inside the API server's timeout.
pub const NAMESPACE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reviews that may wait for a namespace at once (a quarter of the default in-flight cap).
pub const NAMESPACE_WAITERS: usize = 16;

/// What the admission server allows, all together (docs/operations.md says why each
/// number is what it is; the chart's memory limit is sized from them).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// HTTPS connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Admin-port connections open at once (probes and scrapes need few).
    pub max_admin_connections: usize,
    /// New HTTPS connections taken per second (a burst of twice as many); the API server
    /// keeps its connections, so only a flood meets this.
    pub new_connections_per_second: u32,
    /// Requests whose body has arrived, waiting for or in a decision; more get 503.
    pub max_in_flight: usize,
    /// Decisions of reviews larger than [`SMALL_BODY`] running at once, on blocking
    /// threads (ordinary reviews are decided where they arrive).
    pub large_decisions: usize,
    /// Bytes of bodies beyond [`SMALL_BODY`] each, buffered at once by all requests
    /// together; a request that would go over gets 503.
    pub body_budget: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 512,
            max_admin_connections: 16,
            new_connections_per_second: 50,
            max_in_flight: 64,
            large_decisions: (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2)
                .max(1),
            body_budget: 16 * 1024 * 1024,
        }
    }
}

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
    /// The user's application profiles, when a directory is given (`settings` reads them):
    /// not ready until a valid set is in use.
    pub profiles: Option<Arc<runtime::profiles::Reloading>>,
    pub policy: Policy,
    pub mode_label_subjects: Subjects,
    /// `None`: standalone. The server is not ready until the caches have synced.
    pub caches: Option<Arc<cache::Caches>>,
    /// `Some` with `--watch-policies`: not ready until policies and namespaces have synced.
    pub policies: Option<Arc<policies::Policies>>,
    pub limits: ServerLimits,
    /// Log lines the writer dropped, for the metric (`None`: logging is not ours).
    pub log_dropped: Option<runtime::logging::Dropped>,
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
    profiles: Option<Arc<runtime::profiles::Reloading>>,
    cert: Arc<tls::Reloading>,
    in_flight: Arc<Semaphore>,
    /// Decisions of reviews larger than [`SMALL_BODY`], on blocking threads: a lane of
    /// their own, so a flood of large reviews cannot make ordinary ones wait behind it.
    large_decisions: Arc<Semaphore>,
    /// [`ServerLimits::body_budget`], in KiB.
    body_budget: Arc<Semaphore>,
    /// Reviews waiting for an unseen namespace ([`NAMESPACE_WAIT`]): at most
    /// [`NAMESPACE_WAITERS`], so that reviews naming namespaces that do not exist can hold
    /// only that many in-flight places; the others are answered at once.
    namespace_waits: Arc<Semaphore>,
    log_dropped: Option<runtime::logging::Dropped>,
}

impl App {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && self.cert.valid_now()
            && self.caches.as_ref().is_none_or(|c| c.synced())
            && self.policies.as_ref().is_none_or(|p| p.synced())
            && self.profiles.as_ref().is_none_or(|p| p.is_loaded())
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

    let limits = config.limits;
    let (timeout, shutdown_delay, drain) = (
        config.request_timeout,
        config.shutdown_delay,
        config.drain_timeout,
    );
    let reload = tokio::spawn(resolver.clone().watch(config.cert_reload_interval));
    let app = App::new(config, resolver);
    let (shutdown, stop) = watch::channel(false);

    let router = Router::new()
        .route("/validate/{mode}", post(validate))
        .route("/mutate", post(mutate))
        .with_state(app.clone());
    // The admin port outlives the drain, so probes see "not ready" during it.
    let (admin_stop, admin_stopped) = watch::channel(false);
    let admin_limits = Limits {
        max_connections: limits.max_admin_connections,
        header_timeout: timeout,
        new_connections_per_second: 50,
    };
    let admin_task = tokio::spawn(serve_admin(app.clone(), admin, admin_limits, admin_stopped));

    let https_limits = Limits {
        max_connections: limits.max_connections,
        header_timeout: timeout,
        new_connections_per_second: limits.new_connections_per_second,
    };
    let stopping = Shutdown {
        delay: shutdown_delay,
        drain,
    };
    app.ready.store(true, Ordering::SeqCst);
    let ready_app = app.clone();
    let done = tokio::spawn(async move {
        runtime::serve::serve(
            listener,
            acceptor,
            router,
            https_limits,
            stopping,
            stop,
            // Not ready at once; serving goes on for the delay so endpoints drop this Pod.
            || ready_app.ready.store(false, Ordering::SeqCst),
        )
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

impl App {
    fn new(config: Config, cert: Arc<tls::Reloading>) -> Arc<App> {
        let limits = config.limits;
        Arc::new(App {
            settings: config.settings,
            policy: config.policy,
            mode_label_subjects: config.mode_label_subjects,
            request_timeout: config.request_timeout,
            metrics: metrics::Metrics::new(),
            ready: AtomicBool::new(false),
            caches: config.caches,
            policies: config.policies,
            profiles: config.profiles,
            cert,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            large_decisions: Arc::new(Semaphore::new(limits.large_decisions.max(1))),
            namespace_waits: Arc::new(Semaphore::new(NAMESPACE_WAITERS)),
            body_budget: Arc::new(Semaphore::new(limits.body_budget / 1024)),
            log_dropped: config.log_dropped,
        })
    }
}

/// The admin port (`/livez`, `/readyz`, `/metrics`) until `stop`.
async fn serve_admin(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let (ready_app, metrics_app) = (app.clone(), app);
    let probes = runtime::admin::Probes {
        ready: Arc::new(move || ready_app.ready()),
        metrics: Arc::new(move || metrics_text(&metrics_app)),
    };
    runtime::admin::serve(listener, probes, limits, stop).await;
}

/// The metrics, brought up to date with what is counted elsewhere.
fn metrics_text(app: &App) -> Result<String, std::fmt::Error> {
    app.metrics.ready.set(i64::from(app.ready()));
    let dropped = app.log_dropped.as_ref().map_or(0, |d| d.lines());
    app.metrics.observe_counts(dropped, &app.cert);
    if let Some(p) = &app.profiles {
        app.metrics.profiles.observe(p);
    }
    if let Some(caches) = &app.caches {
        app.metrics.observe_caches(caches);
    }
    app.metrics.encode()
}

/// A request refused by a limit: answered at once, counted, and the connection closed so
/// that the rest of a body is not read.
fn refuse(app: &App, status: StatusCode, reason: &'static str, text: &'static str) -> Response {
    app.metrics.refused(reason);
    (status, [(header::CONNECTION, "close")], text).into_response()
}

/// Why a body could not be taken.
enum BodyError {
    TooLarge,
    Budget,
    Unreadable,
    Late,
}

/// The request body, within the size, time and memory limits: an oversized
/// `Content-Length` is refused before anything is read; beyond [`SMALL_BODY`] every KiB
/// needs a share of the body budget, held (the returned permit) until the answer is sent.
async fn read_body(
    app: &App,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(BodyError::TooLarge);
    }
    // A declared large body takes its whole share of the budget before anything is read:
    // refusing it then costs nothing, and the buffer is allocated once, at its size.
    let share = |len: usize| len.saturating_sub(SMALL_BODY).div_ceil(1024);
    let mut budget: Option<OwnedSemaphorePermit> = None;
    if let Some(n) = declared.filter(|n| *n > SMALL_BODY) {
        let permits = u32::try_from(share(n)).map_err(|_| BodyError::TooLarge)?;
        let permit = app
            .body_budget
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| BodyError::Budget)?;
        budget = Some(permit);
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(MAX_BODY));
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Unreadable)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = bytes.len() + data.len();
            if len > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
            let want = share(len);
            let held = budget.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
            if want > held {
                let more = u32::try_from(want - held).map_err(|_| BodyError::TooLarge)?;
                let permit = app
                    .body_budget
                    .clone()
                    .try_acquire_many_owned(more)
                    .map_err(|_| BodyError::Budget)?;
                match &mut budget {
                    Some(b) => b.merge(permit),
                    None => budget = Some(permit),
                }
            }
            bytes.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(app.request_timeout, read).await {
        Err(_) => Err(BodyError::Late),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok((bytes, budget)),
    }
}

impl BodyError {
    fn response(self, app: &App) -> Response {
        match self {
            BodyError::TooLarge => refuse(
                app,
                StatusCode::PAYLOAD_TOO_LARGE,
                metrics::BODY_TOO_LARGE,
                "the request body is over 8 MiB (8388608 bytes)",
            ),
            BodyError::Budget => refuse(
                app,
                StatusCode::SERVICE_UNAVAILABLE,
                metrics::BODY_BUDGET,
                "verifyfull is busy: too many large request bodies at once",
            ),
            BodyError::Unreadable => (
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )
                .into_response(),
            BodyError::Late => (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            )
                .into_response(),
        }
    }
}

/// Which decision a request asks for: a validating mode, or the mutating path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Validate(Mode),
    Mutate,
}

impl Route {
    /// The metric and log label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Validate(mode) => metrics::mode_label(mode),
            Route::Mutate => "mutate",
        }
    }
}

/// Decides one review on `route` (synchronous: may run on a blocking thread).
fn decide(app: &App, bytes: &[u8], route: Route) -> review::Reviewed {
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
    match route {
        Route::Validate(mode) => review::review(bytes, mode, &decider),
        Route::Mutate => review::mutate(bytes, &decider),
    }
}

/// Records a decision and turns it into the HTTP answer.
fn respond(app: &App, reviewed: review::Reviewed, route: Route, start: Instant) -> Response {
    let label = route.label();
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

/// Reads the body, then decides. At most [`ServerLimits::max_in_flight`] requests wait or
/// are decided at once; more are refused at once. A review up to [`SMALL_BODY`] is
/// decided on the async worker: its work is a bounded slice (the caps of docs/limits.md
/// hold a 64 KiB object to a few milliseconds at worst), and handing it to another thread
/// would cost more than deciding it. A larger review waits for one of the blocking threads
/// of its own lane. A request dropped while it waits gives its place back; a decision
/// already running finishes.
async fn handle(app: Arc<App>, route: Route, headers: HeaderMap, body: Body) -> Response {
    let (bytes, budget) = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(e) => return e.response(&app),
    };
    let Ok(place) = app.in_flight.clone().try_acquire_owned() else {
        return refuse(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            metrics::IN_FLIGHT,
            "verifyfull is busy: too many reviews in flight",
        );
    };
    let start = Instant::now();
    let bytes = Arc::new(bytes);
    // Held until the answer is sent, or a decision already running finishes.
    let held = Arc::new((budget, place));
    let deadline = tokio::time::Instant::now() + NAMESPACE_WAIT;
    let mut waiting_place = None;
    loop {
        // Registered before deciding, so that a namespace arriving meanwhile is not missed.
        let changed = app.policies.as_ref().map(|p| p.namespaces_changed());
        let reviewed = if bytes.len() <= SMALL_BODY {
            decide(&app, &bytes, route)
        } else {
            let Ok(turn) = app.large_decisions.clone().acquire_owned().await else {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            let (app, bytes, held) = (app.clone(), bytes.clone(), held.clone());
            let decided = tokio::task::spawn_blocking(move || {
                let reviewed = decide(&app, &bytes, route);
                drop((turn, held));
                reviewed
            })
            .await;
            match decided {
                Ok(r) => r,
                Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        };
        if reviewed.namespace_unknown && waiting_place.is_none() {
            waiting_place = app.namespace_waits.clone().try_acquire_owned().ok();
        }
        let waiting = reviewed.namespace_unknown
            && waiting_place.is_some()
            && tokio::time::Instant::now() < deadline;
        match changed {
            Some(changed) if waiting => {
                let _ = tokio::time::timeout_at(deadline, changed).await;
            }
            _ => {
                let response = respond(&app, reviewed, route, start);
                drop((bytes, held));
                return response;
            }
        }
    }
}

async fn validate(
    State(app): State<Arc<App>>,
    Path(mode): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mode = match mode.as_str() {
        "enforce" => Mode::Enforce,
        "warn" => Mode::Warn,
        "audit" => Mode::Audit,
        _ => return (StatusCode::NOT_FOUND, "modes: enforce, warn, audit").into_response(),
    };
    handle(app, Route::Validate(mode), headers, body).await
}

/// Admission-time injection into Pods (`--watch-policies`).
async fn mutate(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    handle(app, Route::Mutate, headers, body).await
}
