//! Logs that never block or fail a request. Lines go to a bounded in-memory queue that a
//! dedicated thread writes to stdout; when stdout stalls (a full pipe) or is closed, lines
//! that do not fit are dropped and counted ([`Logging::dropped_lines`], exported as a
//! metric) — a review never waits for, or panics on, its log line.

use std::io::Write;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines queued for the writer thread at most (about a megabyte of JSON lines).
pub const QUEUED_LINES: usize = 4096;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// Keeps the writer thread alive; dropping it flushes what is queued.
#[derive(Debug)]
pub struct Logging {
    _guard: WorkerGuard,
    dropped: ErrorCounter,
}

/// Counts lines dropped because the writer could not keep up.
#[derive(Debug, Clone)]
pub struct Dropped(ErrorCounter);

impl Dropped {
    pub fn lines(&self) -> u64 {
        self.0.dropped_lines() as u64
    }
}

impl Logging {
    pub fn dropped(&self) -> Dropped {
        Dropped(self.dropped.clone())
    }
}

/// The default filter; `RUST_LOG` replaces it.
pub const DEFAULT_FILTER: &str = "info";

/// Never logged, whatever `RUST_LOG` says: rustls's handshake warnings quote what a client
/// sent (the server name it asked for, for one).
const ALWAYS_OFF: &str = "rustls=off";

/// Installs the global subscriber writing to stdout.
pub fn init(format: Format) -> Logging {
    init_with(format, std::io::stdout())
}

/// Installs the global subscriber writing to `writer` (tests use a pipe).
pub fn init_with<W: Write + Send + 'static>(format: Format, writer: W) -> Logging {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("verifyfull-log")
        .finish(writer);
    let dropped = writer.error_counter();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_FILTER.into());
    let filter = match ALWAYS_OFF.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        Format::Json => subscriber.json().try_init(),
        Format::Text => subscriber.try_init(),
    };
    Logging {
        _guard: guard,
        dropped,
    }
}
