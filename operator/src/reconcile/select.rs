//! Selection (docs/operator.md): which policy, if any, injects a workload, and the
//! injection plan for it. Pure: it reads the in-memory stores only.

use super::*;

/// What selection and the plan say about one workload.
#[derive(Debug, Default)]
pub struct WorkloadDecision {
    pub policy: Option<Arc<PostgresTLSPolicy>>,
    pub plan: Option<Plan>,
    /// More than one policy selects it: the names.
    pub overlap: Vec<String>,
    /// The CA copy is not in the namespace yet.
    pub waiting: bool,
    pub copy: String,
    /// With a policy: the engine denies the workload as it runs now (the status audit).
    pub denied: bool,
}

impl WorkloadDecision {
    /// A problem to report on the workload, if any.
    pub(super) fn problem(&self) -> Option<String> {
        if !self.overlap.is_empty() {
            return Some(format!(
                "selected by more than one PostgresTLSPolicy ({}): not injected",
                self.overlap.join(", ")
            ));
        }
        let plan = self.plan.as_ref()?;
        let mut parts: Vec<String> = Vec::new();
        match &plan.skip {
            Some(Skip::DuplicateEnv { container, variable }) => parts.push(format!(
                "container {container} defines {variable} twice (server-side apply rejects duplicate keys): not injected"
            )),
            Some(Skip::Conflict(c)) => parts.push(format!("{c}: not injected")),
            None => {}
        }
        parts.extend(plan.conflicts.iter().map(|c| format!("{c}: left as it is")));
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

pub(super) fn slim_meta(m: &kube::api::ObjectMeta) -> policy::Meta {
    policy::Meta {
        name: m.name.clone(),
        generate_name: m.generate_name.clone(),
        namespace: m.namespace.clone(),
        labels: m.labels.clone(),
        annotations: m.annotations.clone(),
    }
}

impl Ctx {
    pub(super) fn excluded(&self, ns: &str) -> bool {
        self.settings.excluded_namespaces.iter().any(|n| n == ns)
    }

    pub(super) fn namespace_labels(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(ns))
            .and_then(|n| n.metadata.labels.clone())
    }

    /// The copy of `policy`'s CA in `ns`, if it is there: its hash.
    pub(super) fn copy_hash(&self, ns: &str, copy: &str) -> Option<String> {
        self.copies
            .get(&ObjectRef::new(copy).within(ns))
            .and_then(|c| {
                c.metadata
                    .annotations
                    .as_ref()?
                    .get(HASH_ANNOTATION)
                    .cloned()
            })
    }

    /// Selection (docs/operator.md) and the injection plan for one workload.
    pub fn decide(&self, kind: Kind, w: &Workload) -> WorkloadDecision {
        let ns = w.metadata.namespace.as_deref().unwrap_or_default();
        if self.excluded(ns) || w.metadata.deletion_timestamp.is_some() {
            return WorkloadDecision::default();
        }
        let ns_labels = self.namespace_labels(ns);
        let (pod_meta, spec) = w.pod(kind);
        let mut matching: Vec<Arc<PostgresTLSPolicy>> = self
            .policies
            .state()
            .into_iter()
            .filter(|p| {
                p.selects(
                    ns_labels.as_ref(),
                    w.metadata.labels.as_ref(),
                    pod_meta.annotations.as_ref(),
                )
            })
            .collect();
        if matching.len() > 1 {
            let mut names: Vec<String> = matching.iter().map(|p| p.name_any()).collect();
            names.sort();
            return WorkloadDecision {
                overlap: names,
                ..WorkloadDecision::default()
            };
        }
        let Some(p) = matching.pop() else {
            return WorkloadDecision::default();
        };
        let object = slim_meta(&w.metadata);
        let ctx = policy::Context {
            settings: &self.settings.engine,
            sources: &policy::NoSources,
            now: jiff::Timestamp::now(),
        };
        let view = policy::PodView {
            kind: kind.workload_kind(),
            object: &object,
            pod: &pod_meta,
            spec: &spec,
        };
        let report = policy::judge(view, &ctx);
        let denied = report.denied();
        let copy = p.copy_name();
        let Some(copy_hash) = self.copy_hash(ns, &copy) else {
            return WorkloadDecision {
                policy: Some(p),
                waiting: true,
                copy,
                denied,
                ..WorkloadDecision::default()
            };
        };
        let restart = p.spec.rotation.restart.then_some(copy_hash.as_str());
        let want = Want {
            injection: &p.spec.injection,
            config_map: &copy,
            restart_hash: restart,
        };
        let plan = inject::plan(&spec, &report, &want);
        WorkloadDecision {
            policy: Some(p),
            plan: Some(plan),
            copy,
            denied,
            ..WorkloadDecision::default()
        }
    }
}
