//! An HTTP/1.1 server with limits on everything a client controls: how many connections
//! it may hold open, how long a handshake, a request's headers or an idle keep-alive may
//! take, and what happens to each connection at shutdown.
//!
//! - At [`Limits::max_connections`] a new connection takes the place of the connection
//!   that has been idle longest (between requests, still in its handshake, or still
//!   sending headers): holding connections open costs an attacker nothing, so idle ones
//!   must not lock out the API server. Only when every connection is busy with a request
//!   is a new one closed at once (refused fast, never queued).
//! - New connections are taken at most [`Limits::new_connections_per_second`] (a burst of
//!   four times that); past it a connection is closed before its handshake, the costly part of
//!   a connection flood. The API server keeps its connections, so it opens few.
//! - A TLS handshake and every request's headers must arrive within
//!   [`Limits::header_timeout`]; an idle keep-alive connection is closed after it too.
//! - When `accept` fails (out of file descriptors), the loop backs off instead of spinning
//!   and answers again as soon as descriptors are free.
//! - Shutdown: `on_stop` runs at once (readiness off); for [`Shutdown::delay`] new
//!   connections are still served but every response carries `Connection: close`; then
//!   accepting stops, idle connections close, in-flight requests get [`Shutdown::drain`];
//!   whatever is left (a half-sent request, a handshake) is dropped. The server returns
//!   within delay + drain.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// What one server allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (including ones still in their TLS handshake).
    pub max_connections: usize,
    /// A TLS handshake, each request's headers, and an idle keep-alive gap, at most.
    pub header_timeout: Duration,
    /// New connections taken per second (a burst of four times as many, for the API
    /// server's own bursts of connections under a heavy rollout).
    pub new_connections_per_second: u32,
}

/// A token bucket for new connections.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            tokens: 4.0 * rate,
            rate,
            burst: 4.0 * rate,
            at: tokio::time::Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How a server stops.
#[derive(Debug, Clone, Copy)]
pub struct Shutdown {
    /// How long to keep serving (not ready) after the stop signal, so that endpoints
    /// drop this Pod before it stops accepting.
    pub delay: Duration,
    /// How long in-flight requests may take to finish after that.
    pub drain: Duration,
}

/// Turns an accepted TCP connection into the stream HTTP is spoken on.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// Plain HTTP (the admin port).
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;
    async fn handshake(&self, tcp: TcpStream) -> io::Result<TcpStream> {
        Ok(tcp)
    }
}

impl Handshake for tokio_rustls::TlsAcceptor {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Io>> + Send {
        self.accept(tcp)
    }
}

/// Backoff after a failed `accept`: from 5 ms, doubling, to 1 s; reset by a success.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    failures: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> Backoff {
        Backoff {
            next: Backoff::FIRST,
            failures: 0,
        }
    }

    /// The pause after one more failure; logs the first of a run and every 100th.
    fn failed(&mut self, e: &io::Error) -> Duration {
        if self.failures.is_multiple_of(100) {
            tracing::warn!(error = %e, failures = self.failures + 1, "accept failed; backing off");
        }
        self.failures += 1;
        let pause = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        pause
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "accepting again");
        }
        *self = Backoff::new();
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One open connection, as the eviction sees it.
#[derive(Debug, Default)]
struct Conn {
    /// Requests being answered on it.
    busy: AtomicUsize,
    /// When it last finished a request (or opened), in ms since the server started.
    last: AtomicU64,
    /// Requests it has been answered.
    served: AtomicU64,
    /// Asked to close (evicted, or the server stops).
    close: Notify,
    closing: AtomicBool,
}

impl Conn {
    fn ask_to_close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.close.notify_one();
    }
}

/// The open connections.
#[derive(Debug, Default)]
struct Table {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    started: std::sync::OnceLock<tokio::time::Instant>,
}

impl Table {
    fn now_ms(&self) -> u64 {
        let started = self.started.get_or_init(tokio::time::Instant::now);
        started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Room for one more: a place under the cap, or the place of an idle connection (asked
    /// to close; it leaves at once, having nothing in flight) — first one that never
    /// completed a request (a slow handshake or headers, or a connection opened and left),
    /// oldest first; else the one idle longest. `None`: every connection is busy.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.lock();
        let open = conns
            .values()
            .filter(|c| !c.closing.load(Ordering::Relaxed))
            .count();
        if open >= max {
            let idlest = conns
                .values()
                .filter(|c| {
                    !c.closing.load(Ordering::Relaxed) && c.busy.load(Ordering::Relaxed) == 0
                })
                .min_by_key(|c| {
                    (
                        c.served.load(Ordering::Relaxed) > 0,
                        c.last.load(Ordering::Relaxed),
                    )
                })?;
            idlest.ask_to_close();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        conn.last.store(self.now_ms(), Ordering::Relaxed);
        conns.insert(id, conn.clone());
        Some((id, conn))
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn close_all(&self) {
        for c in self.lock().values() {
            c.ask_to_close();
        }
    }
}

/// The router as one connection's service: counts the requests in flight on it, so the
/// connection is known idle or busy.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    conn: Arc<Conn>,
    table: Arc<Table>,
}

type Answer = Result<axum::response::Response, std::convert::Infallible>;

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.conn.busy.fetch_add(1, Ordering::Relaxed);
        let answer = self.inner.call(req);
        let (conn, table) = (self.conn.clone(), self.table.clone());
        Box::pin(async move {
            let response = answer.await;
            conn.last.store(table.now_ms(), Ordering::Relaxed);
            conn.served.fetch_add(1, Ordering::Relaxed);
            conn.busy.fetch_sub(1, Ordering::Relaxed);
            response
        })
    }
}

/// Serves `router` on `listener` until `stop` turns true, then shuts down as the module
/// says. `on_stop` runs once, when the stop signal arrives.
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    router: Router,
    limits: Limits,
    shutdown: Shutdown,
    mut stop: watch::Receiver<bool>,
    on_stop: impl FnOnce(),
) {
    let closing = Arc::new(AtomicBool::new(false));
    let service = TowerToHyperService::new(close_when(router, closing.clone()));
    let table = Arc::new(Table::default());
    let mut connections = JoinSet::new();
    let mut on_stop = Some(on_stop);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut backoff = Backoff::new();
    let mut bucket = Bucket::new(limits.new_connections_per_second);
    loop {
        while connections.try_join_next().is_some() {}
        let delay_over = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => {
                        backoff.succeeded();
                        tcp
                    }
                    Err(e) => {
                        tokio::time::sleep(backoff.failed(&e)).await;
                        continue;
                    }
                };
                // Too many new connections, or every connection busy: refuse at once
                // (dropping closes the socket).
                if !bucket.take() {
                    drop(tcp);
                    continue;
                }
                let Some((id, conn)) = table.admit(limits.max_connections) else {
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let handshake = handshake.clone();
                let tracked = Tracked { inner: service.clone(), conn: conn.clone(), table: table.clone() };
                let table = table.clone();
                connections.spawn(async move {
                    serve_connection(tcp, handshake, tracked, limits).await;
                    table.remove(id);
                });
            }
            () = stopped(&mut stop), if deadline.is_none() => {
                if let Some(f) = on_stop.take() {
                    f();
                }
                closing.store(true, Ordering::Relaxed);
                deadline = Some(tokio::time::Instant::now() + shutdown.delay);
            }
            _ = delay_over => break,
        }
    }
    drop(listener);
    drain(&table, connections, shutdown).await;
}

/// During the shutdown delay every response asks the client to close the connection, so
/// that a busy keep-alive connection does not lose a request when accepting stops.
fn close_when(router: Router, closing: Arc<AtomicBool>) -> Router {
    router.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| {
            let closing = closing.load(Ordering::Relaxed);
            async move {
                if closing {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        },
    ))
}

/// Idle connections close now, busy ones after their request; the drain bounds it, and
/// whatever is left (handshakes, half-sent requests) is dropped.
async fn drain(table: &Table, mut connections: JoinSet<()>, shutdown: Shutdown) {
    table.close_all();
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(shutdown.drain, drained).await;
    connections.shutdown().await;
}

/// One connection: handshake, then HTTP/1.1 until the client leaves or the connection is
/// asked to close (evicted, or the server stops) — then it closes as soon as it is idle.
async fn serve_connection<H: Handshake>(
    tcp: TcpStream,
    handshake: H,
    tracked: Tracked,
    limits: Limits,
) {
    let conn = tracked.conn.clone();
    let io = tokio::select! {
        io = tokio::time::timeout(limits.header_timeout, handshake.handshake(tcp)) => match io {
            Ok(Ok(io)) => io,
            _ => return,
        },
        () = conn.close.notified() => return,
    };
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Bounds the read buffer of each connection (hyper's default is 400 KiB).
        .max_buf_size(64 * 1024)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), tracked);
    tokio::pin!(http);
    tokio::select! {
        _ = http.as_mut() => return,
        () = conn.close.notified() => {}
    }
    http.as_mut().graceful_shutdown();
    let _ = http.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::new(10);
        assert_eq!((0..60).filter(|_| b.take()).count(), 40);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!((0..60).filter(|_| b.take()).count(), 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..60).filter(|_| b.take()).count(), 40);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::new();
        let e = io::Error::other("EMFILE");
        let pauses: Vec<u64> = (0..10).map(|_| b.failed(&e).as_millis() as u64).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(&e), Duration::from_millis(5));
    }
}
