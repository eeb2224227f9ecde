//! Prometheus metrics, bounded labels only (kinds from a fixed set, never object names or
//! namespaces).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use runtime::metrics::register;

use crate::review::Reviewed;
use policy::admission::Mode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    kind: &'static str,
    operation: &'static str,
    result: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

pub fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Warn => "warn",
        Mode::Audit => "audit",
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    latency: Family<ModeLabel, Histogram>,
    exemptions: Counter,
    pub ready: Gauge,
    pub certificate_not_after: Gauge,
    cache_synced: Family<KindLabel, Gauge>,
    cache_objects: Family<KindLabel, Gauge>,
    refused: Family<ReasonLabel, Counter>,
    log_lines_dropped: Counter,
    certificate_reload_failures: Counter,
    certificate_reload_failing: Gauge,
    pub profiles: runtime::profiles::Metrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Why a request was refused at a limit: the `reason` label of `refused`.
pub const IN_FLIGHT: &str = "in_flight";
pub const BODY_BUDGET: &str = "body_budget";
pub const BODY_TOO_LARGE: &str = "body_too_large";

/// The refusals counter, with every reason from the start at 0: an alert's `rate()` needs
/// the series to exist.
fn refusals() -> Family<ReasonLabel, Counter> {
    let family = Family::<ReasonLabel, Counter>::default();
    for reason in [IN_FLIGHT, BODY_BUDGET, BODY_TOO_LARGE] {
        drop(family.get_or_create(&ReasonLabel { reason }));
    }
    family
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("verifyfull_webhook");
        let r = &mut registry;
        Metrics {
            reviews: register(
                r,
                "reviews",
                "Admission reviews by kind, operation, result and mode",
                Family::<ReviewLabels, Counter>::default(),
            ),
            latency: register(
                r,
                "review_duration_seconds",
                "Time to decide a review (decoding included)",
                Family::<ModeLabel, Histogram>::new_with_constructor(|| {
                    Histogram::new(exponential_buckets(0.000_05, 2.0, 14))
                }),
            ),
            exemptions: register(
                r,
                "exemptions",
                "Admissions allowed through an exemption",
                Counter::default(),
            ),
            ready: register(
                r,
                "ready",
                "1 when the webhook is ready to serve",
                Gauge::default(),
            ),
            certificate_not_after: register(
                r,
                "certificate_not_after_seconds",
                "notAfter of the serving certificate, seconds since the epoch",
                Gauge::default(),
            ),
            cache_synced: register(
                r,
                "cache_synced",
                "1 when the cache of a kind has listed everything",
                Family::<KindLabel, Gauge>::default(),
            ),
            cache_objects: register(
                r,
                "cache_objects",
                "Objects in the cache of a kind",
                Family::<KindLabel, Gauge>::default(),
            ),
            refused: register(
                r,
                "refused",
                "Requests refused by a limit (in_flight, body_budget, body_too_large), answered 503 or 413 at once",
                refusals(),
            ),
            log_lines_dropped: register(
                r,
                "log_lines_dropped",
                "Log lines dropped because stdout could not take them",
                Counter::default(),
            ),
            certificate_reload_failures: register(
                r,
                "certificate_reload_failures",
                "Re-reads of the serving certificate that found a pair not whole or not valid now (the current one stays)",
                Counter::default(),
            ),
            certificate_reload_failing: register(
                r,
                "certificate_reload_failing",
                "1 when the last re-read of the serving certificate was refused",
                Gauge::default(),
            ),
            profiles: runtime::profiles::Metrics::register(r),
            registry,
        }
    }

    /// A request refused by a limit.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Brings counters kept elsewhere up to date, at scrape time.
    pub fn observe_counts(&self, log_dropped: u64, cert: &crate::tls::Reloading) {
        runtime::metrics::catch_up(&self.log_lines_dropped, log_dropped);
        runtime::metrics::catch_up(
            &self.certificate_reload_failures,
            cert.failures.load(std::sync::atomic::Ordering::SeqCst),
        );
        self.certificate_reload_failing.set(i64::from(
            cert.failing.load(std::sync::atomic::Ordering::SeqCst),
        ));
        self.certificate_not_after.set(cert.not_after());
    }

    /// One review on a route: `enforce`, `warn`, `audit` ([`mode_label`]) or `mutate`.
    pub fn record(&self, r: &Reviewed, mode: &'static str, took: Duration) {
        self.reviews
            .get_or_create(&ReviewLabels {
                kind: r.kind,
                operation: r.operation,
                result: r.result,
                mode,
            })
            .inc();
        self.latency
            .get_or_create(&ModeLabel { mode })
            .observe(took.as_secs_f64());
        if r.exempted {
            self.exemptions.inc();
        }
    }

    pub fn observe_caches(&self, caches: &crate::cache::Caches) {
        let stores = [
            ("ConfigMap", Some(&caches.config_maps)),
            ("Secret", caches.secrets.as_ref()),
        ];
        for (kind, store) in stores {
            let Some(store) = store else { continue };
            let label = KindLabel { kind };
            self.cache_synced
                .get_or_create(&label)
                .set(i64::from(store.synced()));
            self.cache_objects
                .get_or_create(&label)
                .set(store.len() as i64);
        }
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
