//! Small helpers for registering metrics, and for metrics whose counts are kept elsewhere.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::{Metric, Registry};

/// Registers `metric` under `name` and hands it back, to be kept where it is updated.
pub fn register<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Raises a counter to a total counted elsewhere (read at scrape time).
pub fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}
