//! Logs that never block or fail a request. Each line is written with one `write(2)` to a
//! non-blocking stdout, from the thread that logs it (no writer thread to wake for every
//! line): when stdout stalls (a full pipe) or is closed, the line is dropped and counted
//! ([`Logging::dropped`], exported as a metric) — a review never waits for, or panics on,
//! its log line. A pipe takes a line of up to 4 KiB whole or not at all.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// Counts lines dropped because stdout could not take them.
#[derive(Debug, Clone, Default)]
pub struct Dropped(Arc<AtomicU64>);

impl Dropped {
    pub fn lines(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The installed logging.
#[derive(Debug)]
pub struct Logging {
    dropped: Dropped,
}

impl Logging {
    pub fn dropped(&self) -> Dropped {
        self.dropped.clone()
    }
}

/// The default filter; `RUST_LOG` replaces it.
pub const DEFAULT_FILTER: &str = "info";

/// Never logged, whatever `RUST_LOG` says: rustls's handshake warnings quote what a client
/// sent (the server name it asked for, for one).
const ALWAYS_OFF: &str = "rustls=off";

/// Writes whole lines to a non-blocking file; what it cannot write now is dropped.
#[derive(Debug, Clone)]
struct Lines {
    /// `None`: there is no stdout to write to; every line is dropped.
    out: Option<Arc<File>>,
    dropped: Dropped,
}

impl Write for &Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.out.as_deref().map(|mut f| f.write(buf)) {
            Some(Ok(n)) if n == buf.len() => {}
            // A partial line (over the pipe's atomic size) or none: counted as dropped.
            _ => {
                self.dropped.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = &'a Lines;
    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Installs the global subscriber writing to stdout, made non-blocking.
pub fn init(format: Format) -> Logging {
    let out = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .ok();
    init_with(format, out)
}

/// Installs the global subscriber writing to `out`, made non-blocking.
pub fn init_with(format: Format, out: Option<File>) -> Logging {
    if let Some(out) = &out
        && let Ok(flags) = fcntl(out, FcntlArg::F_GETFL)
    {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(out, FcntlArg::F_SETFL(flags));
    }
    let dropped = Dropped::default();
    let writer = Lines {
        out: out.map(Arc::new),
        dropped: dropped.clone(),
    };
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
    Logging { dropped }
}
