//! The server-side apply configuration of a workload — what the operator should own — and
//! whether the workload already is that. Pure: it reads the in-memory stores only.

use super::*;

impl Ctx {
    /// The server-side apply configuration for the workload: what the operator should own.
    pub fn apply_config(&self, kind: Kind, w: &Workload, d: &WorkloadDecision) -> Value {
        let ar = kind.resource();
        let mut config = json!({"apiVersion": ar.api_version, "kind": ar.kind,
            "metadata": {"name": w.metadata.name, "namespace": w.metadata.namespace}});
        let (Some(p), Some(plan)) = (&d.policy, &d.plan) else {
            return config;
        };
        if plan.is_empty() {
            return config;
        }
        let want = Want {
            injection: &p.spec.injection,
            config_map: &d.copy,
            restart_hash: plan.restart_hash.as_deref(),
        };
        let mut template = json!({"spec": plan.apply_spec(&want)});
        if let Some(h) = &plan.restart_hash {
            template["metadata"] = json!({"annotations": {HASH_ANNOTATION: h}});
        }
        let spec = match kind {
            Kind::CronJob => json!({"jobTemplate": {"spec": {"template": template}}}),
            _ => json!({"template": template}),
        };
        let stamp = format!("{}/{}", p.name_any(), ca::hash(&spec.to_string()));
        config["metadata"]["annotations"] = json!({INJECTED_ANNOTATION: stamp});
        config["spec"] = spec;
        config
    }

    /// Whether the workload already is what `config` asks for: then nothing is written.
    pub(super) fn converged(
        &self,
        kind: Kind,
        w: &Workload,
        d: &WorkloadDecision,
        config: &Value,
    ) -> bool {
        let have = w
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INJECTED_ANNOTATION));
        let Some(want) = config["metadata"]["annotations"][INJECTED_ANNOTATION].as_str() else {
            return have.is_none();
        };
        if have.map(String::as_str) != Some(want) {
            return false;
        }
        let (Some(p), Some(plan)) = (&d.policy, &d.plan) else {
            return false;
        };
        let (pod_meta, spec) = w.pod(kind);
        let mut after = spec.clone();
        let w_ = Want {
            injection: &p.spec.injection,
            config_map: &d.copy,
            restart_hash: None,
        };
        plan.apply_to(&mut after, &w_);
        let hash_ok = plan.restart_hash.as_ref().is_none_or(|h| {
            pod_meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(HASH_ANNOTATION))
                == Some(h)
        });
        after == spec && hash_ok
    }
}
