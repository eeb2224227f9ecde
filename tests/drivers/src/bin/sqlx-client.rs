//! The lab's sqlx client: reads attempts as JSON lines on stdin, connects with sqlx-postgres
//! (rustls, ring) exactly as an application would, and answers one JSON line per attempt.
//! The protocol is the same for every driver client (docs/drivers.md, "How the lab works").

use std::io::{BufRead, Write};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

#[derive(Deserialize)]
struct Attempt {
    id: String,
    target: String,
    env: std::collections::BTreeMap<String, String>,
    timeout_ms: u64,
}

/// Variables an attempt may set; each attempt starts from none of them.
fn is_attempt_variable(name: &str) -> bool {
    name.starts_with("PG")
        || matches!(
            name,
            "NODE_TLS_REJECT_UNAUTHORIZED"
                | "NODE_EXTRA_CA_CERTS"
                | "SSL_CERT_FILE"
                | "SSL_CERT_DIR"
        )
}

#[allow(unsafe_code)]
fn set_environment(env: &std::collections::BTreeMap<String, String>) {
    let stale: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| is_attempt_variable(k))
        .collect();
    // SAFETY: called between attempts, when no other thread of this process reads the
    // environment (the runtime is current-thread and no connection is in progress).
    unsafe {
        for k in stale {
            std::env::remove_var(k);
        }
        for (k, v) in env {
            std::env::set_var(k, v);
        }
    }
}

async fn connect(target: &str) -> Result<(), sqlx::Error> {
    // An empty target: the options come from the environment alone, as `PgConnectOptions::new`.
    let options = if target.is_empty() {
        PgConnectOptions::new()
    } else {
        PgConnectOptions::from_str(target)?
    };
    PgConnection::connect_with(&options).await?.close().await
}

fn main() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        json!({"ready": true, "driver": "sqlx", "version": "sqlx 0.8.6 (rustls, ring, webpki roots)"})
    )?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let answer = match serde_json::from_str::<Attempt>(&line) {
            Ok(a) => {
                set_environment(&a.env);
                let limit = Duration::from_millis(a.timeout_ms);
                let result = runtime
                    .block_on(async { tokio::time::timeout(limit, connect(&a.target)).await });
                let error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("timed out".to_string()),
                };
                let error: String = error.unwrap_or_default().chars().take(300).collect();
                json!({"id": a.id, "ok": error.is_empty(), "error": error.replace('\n', " ")})
            }
            Err(e) => json!({"id": "", "ok": false, "error": format!("bad request: {e}")}),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}
