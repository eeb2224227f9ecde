//! Prometheus metrics with bounded labels (kinds and results from fixed sets).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reconciled {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Written {
    kind: &'static str,
}

/// Reported results of a namespace: namespaces × four results.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reported {
    namespace: String,
    result: &'static str,
}

/// One label set per policy: as many as there are policies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    reconciles: Family<Reconciled, Counter>,
    writes: Family<Written, Counter>,
    leader: Gauge,
    ready: Gauge,
    violations: Family<PolicyLabel, Gauge>,
    reported: Family<Reported, Gauge>,
    log_lines_dropped: Counter,
    log_dropped: std::sync::OnceLock<runtime::logging::Dropped>,
    profiles: runtime::profiles::Metrics,
    profiles_read: std::sync::OnceLock<Arc<runtime::profiles::Reloading>>,
}

/// Cheap to clone; all clones count into one registry.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("verifyfull_operator");
        let reconciles = Family::<Reconciled, Counter>::default();
        let writes = Family::<Written, Counter>::default();
        let leader = Gauge::default();
        let ready = Gauge::default();
        registry.register(
            "reconciles",
            "Workload reconciles by kind and result",
            reconciles.clone(),
        );
        registry.register("writes", "Writes to the API by kind", writes.clone());
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        registry.register(
            "ready",
            "1 once the CRD is served and caches are synced",
            ready.clone(),
        );
        let violations = runtime::metrics::register(
            &mut registry,
            "policy_violations",
            "Workloads a policy selects that the engine would deny as they run now (the status's violations)",
            Family::<PolicyLabel, Gauge>::default(),
        );
        let reported = runtime::metrics::register(
            &mut registry,
            "report_results",
            "Results in the policy reports, by namespace and result (fail, warn, pass, skip)",
            Family::<Reported, Gauge>::default(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stdout could not take them",
            log_lines_dropped.clone(),
        );
        let profiles = runtime::profiles::Metrics::register(&mut registry);
        Metrics(Arc::new(Inner {
            registry,
            reconciles,
            writes,
            leader,
            ready,
            violations,
            reported,
            log_lines_dropped,
            log_dropped: std::sync::OnceLock::new(),
            profiles,
            profiles_read: std::sync::OnceLock::new(),
        }))
    }
}

impl Metrics {
    pub fn reconciled(&self, kind: &'static str, result: &'static str) {
        self.0
            .reconciles
            .get_or_create(&Reconciled { kind, result })
            .inc();
    }

    pub fn write(&self, kind: &'static str) {
        self.0.writes.get_or_create(&Written { kind }).inc();
    }

    pub fn set_leader(&self, on: bool) {
        self.0.leader.set(i64::from(on));
    }

    pub fn set_ready(&self, on: bool) {
        self.0.ready.set(i64::from(on));
    }

    /// A policy's violating workloads; `None` when the policy is gone.
    pub fn set_violations(&self, policy: &str, count: Option<i64>) {
        let label = PolicyLabel {
            policy: policy.to_string(),
        };
        match count {
            Some(n) => {
                self.0.violations.get_or_create(&label).set(n);
            }
            None => {
                self.0.violations.remove(&label);
            }
        }
    }

    /// A namespace's reported results by result; a namespace without results has no series.
    pub fn set_report_results(
        &self,
        namespace: &str,
        counts: &std::collections::BTreeMap<&'static str, i64>,
    ) {
        for result in ["fail", "warn", "pass", "skip"] {
            let label = Reported {
                namespace: namespace.to_string(),
                result,
            };
            match counts.get(result) {
                Some(n) => self.0.reported.get_or_create(&label).set(*n),
                None => {
                    self.0.reported.remove(&label);
                    0
                }
            };
        }
    }

    pub fn ready(&self) -> bool {
        self.0.ready.get() == 1
    }

    /// Counts the log lines the writer drops.
    pub fn count_dropped_logs(&self, dropped: runtime::logging::Dropped) {
        let _ = self.0.log_dropped.set(dropped);
    }

    /// Reports the reads of the user's application profiles.
    pub fn count_profiles(&self, read: Arc<runtime::profiles::Reloading>) {
        let _ = self.0.profiles_read.set(read);
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        if let Some(d) = self.0.log_dropped.get() {
            runtime::metrics::catch_up(&self.0.log_lines_dropped, d.lines());
        }
        if let Some(r) = self.0.profiles_read.get() {
            self.0.profiles.observe(r);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)?;
        Ok(out)
    }
}
