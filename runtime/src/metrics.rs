//! Small helpers for metrics whose counts are kept elsewhere.

use prometheus_client::metrics::counter::Counter;

/// Raises a counter to a total counted elsewhere (read at scrape time).
pub fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}
