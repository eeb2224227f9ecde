//! The signals a verifyfull server answers. SIGTERM and SIGINT start a graceful shutdown
//! (a second one exits at once, in the binaries). SIGHUP, SIGUSR1 and SIGUSR2 would kill
//! the process without draining by default; they are caught and ignored, with a log line.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The shutdown signals, listened to from creation on.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Starts listening; from now on SIGHUP, SIGUSR1 and SIGUSR2 are ignored.
    pub fn new() -> std::io::Result<Signals> {
        for (kind, name) in [
            (SignalKind::hangup(), "SIGHUP"),
            (SignalKind::user_defined1(), "SIGUSR1"),
            (SignalKind::user_defined2(), "SIGUSR2"),
        ] {
            let mut s = signal(kind)?;
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    tracing::info!(signal = name, "ignored");
                }
            });
        }
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT.
    pub async fn shutdown(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
