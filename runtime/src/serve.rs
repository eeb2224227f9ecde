//! An HTTP/1.1 server with limits on everything a client controls: how many connections
//! it may hold open, how long a handshake, a request's headers or an idle keep-alive may
//! take, and what happens to each connection at shutdown.
//!
//! - Past [`Limits::max_connections`] a new connection is closed at once (refused fast,
//!   never queued); the ones already open keep working.
//! - A TLS handshake and every request's headers must arrive within
//!   [`Limits::header_timeout`]; an idle keep-alive connection is closed after it too.
//! - When `accept` fails (out of file descriptors), the loop backs off instead of spinning
//!   and answers again as soon as descriptors are free.
//! - Shutdown: `on_stop` runs at once (readiness off); for [`Shutdown::delay`] new
//!   connections are still served but every response carries `Connection: close`; then
//!   accepting stops, idle connections close, in-flight requests get [`Shutdown::drain`];
//!   whatever is left (a half-sent request, a handshake) is dropped. The server returns
//!   within delay + drain.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// What one server allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (including ones still in their TLS handshake).
    pub max_connections: usize,
    /// A TLS handshake, each request's headers, and an idle keep-alive gap, at most.
    pub header_timeout: Duration,
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
    let flag = closing.clone();
    // During the delay every response asks the client to close the connection, so that a
    // busy keep-alive connection does not lose a request when accepting stops.
    let router = router.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| {
            let closing = flag.load(Ordering::Relaxed);
            async move {
                if closing {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        },
    ));
    let service = TowerToHyperService::new(router);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut on_stop = Some(on_stop);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut backoff = Backoff::new();
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
                // Full: refuse at once (dropping closes the socket).
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let handshake = handshake.clone();
                let service = service.clone();
                let watcher = graceful.watcher();
                connections.spawn(async move {
                    let _slot = slot;
                    let Ok(Ok(io)) =
                        tokio::time::timeout(limits.header_timeout, handshake.handshake(tcp)).await
                    else {
                        return;
                    };
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_timeout)
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(io), service);
                    let _ = watcher.watch(conn).await;
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
    let _ = tokio::time::timeout(shutdown.drain, graceful.shutdown()).await;
    // Handshakes and half-sent requests that are still open: dropped.
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
