//! The admin port both servers have, on plain HTTP: `/livez` (the process answers),
//! `/readyz` (what the server says of itself) and `/metrics` (OpenMetrics text).

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::serve::{Limits, Plain, Shutdown};

/// What the admin port asks its server.
#[derive(Clone)]
pub struct Probes {
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The metrics, brought up to date and encoded.
    pub metrics: Arc<dyn Fn() -> Result<String, std::fmt::Error> + Send + Sync>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probes")
    }
}

fn router(probes: Probes) -> Router {
    let (ready, metrics) = (probes.ready, probes.metrics);
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                match metrics() {
                    Ok(text) => text_response(text),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }),
        )
}

fn text_response(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Serves the admin port until `stop` is true; probes and scrapes need few connections,
/// and slow or idle clients are cut off (`limits`). Stops at once: nothing on it needs
/// draining.
pub async fn serve(
    listener: TcpListener,
    probes: Probes,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let immediate = Shutdown {
        delay: std::time::Duration::ZERO,
        drain: std::time::Duration::from_secs(1),
    };
    crate::serve::serve(
        listener,
        Plain,
        router(probes),
        limits,
        immediate,
        stop,
        || {},
    )
    .await;
}
