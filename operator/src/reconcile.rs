//! The two reconcilers: a policy's CA copies and status, and each workload's injection.

use crate::ca;
use crate::limits::{RateLimit, Rollouts};
use crate::metrics::Metrics;
use crate::workload::{Kind, Workload};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use policy::crd::{PostgresTLSPolicy, PostgresTlsPolicyStatus, selector_matches};
use policy::inject::{self, HASH_ANNOTATION, Plan, Skip, Want};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The field manager of every write: server-side apply removes exactly what it owns.
pub const MANAGER: &str = "verifyfull-operator";
/// On a workload's metadata (no rollout): which policy injected it, and a hash of what.
pub const INJECTED_ANNOTATION: &str = "verifyfull.dev/injected";
pub const POLICY_LABEL: &str = "verifyfull.dev/policy";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "verifyfull-operator");
pub const FINALIZER: &str = "verifyfull.dev/cleanup";

/// How many violating workloads a policy's status names.
const VIOLATING_LISTED: usize = 20;

/// What failed, in which step, for which object: the log line of a failed reconcile says
/// all three.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying the CA injection to {object}: {source}")]
    Inject {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("copying the CA of PostgresTLSPolicy {policy} into namespace {namespace}: {source}")]
    CopyCa {
        policy: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting CA copy {namespace}/{copy}: {source}")]
    DeleteCopy {
        namespace: String,
        copy: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the finalizer of PostgresTLSPolicy {policy}: {source}")]
    Finalizer {
        policy: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of PostgresTLSPolicy {policy}: {source}")]
    Status {
        policy: String,
        #[source]
        source: kube::Error,
    },
}

/// Operator settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces never touched: `kube-system` and verifyfull's own, plus any listed.
    pub excluded_namespaces: Vec<String>,
    pub engine: policy::Settings,
    pub resync: Duration,
}

/// What reconcilers share.
pub struct Ctx {
    pub client: kube::Client,
    pub settings: Settings,
    pub policies: Store<PostgresTLSPolicy>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub copies: Store<PartialObjectMeta<ConfigMap>>,
    pub workloads: Vec<(Kind, Store<Workload>)>,
    pub rate: RateLimit,
    pub rollouts: Rollouts,
    pub recorder: Recorder,
    /// Bumped to make every workload reconcile (a policy's selection or CA changed).
    pub trigger: tokio::sync::watch::Sender<u64>,
    pub metrics: Metrics,
    /// Per policy: the fingerprint of what its workloads were last reconciled against.
    seen: Mutex<HashMap<String, String>>,
    /// Per workload: the last problem reported in an Event, so each is reported once.
    reported: Mutex<HashMap<String, String>>,
    /// One flag per cache, set when its first list is complete.
    pub caches_listed: Vec<Arc<std::sync::atomic::AtomicBool>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

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
    fn problem(&self) -> Option<String> {
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

fn slim_meta(m: &kube::api::ObjectMeta) -> policy::Meta {
    policy::Meta {
        name: m.name.clone(),
        generate_name: m.generate_name.clone(),
        namespace: m.namespace.clone(),
        labels: m.labels.clone(),
        annotations: m.annotations.clone(),
    }
}

impl Ctx {
    pub fn new(
        client: kube::Client,
        settings: Settings,
        stores: (
            Store<PostgresTLSPolicy>,
            Store<PartialObjectMeta<Namespace>>,
            Store<PartialObjectMeta<ConfigMap>>,
        ),
        workloads: Vec<(Kind, Store<Workload>)>,
        pacing: (RateLimit, Rollouts),
        recorder: Recorder,
        metrics: Metrics,
    ) -> Ctx {
        Ctx {
            client,
            settings,
            policies: stores.0,
            namespaces: stores.1,
            copies: stores.2,
            workloads,
            rate: pacing.0,
            rollouts: pacing.1,
            recorder,
            trigger: tokio::sync::watch::channel(0).0,
            metrics,
            seen: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashMap::new()),
            caches_listed: Vec::new(),
        }
    }

    /// Whether every cache has listed once: deciding on a partial cache could remove an
    /// injection that a policy not yet seen asks for.
    pub fn synced(&self) -> bool {
        self.caches_listed
            .iter()
            .all(|f| f.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn excluded(&self, ns: &str) -> bool {
        self.settings.excluded_namespaces.iter().any(|n| n == ns)
    }

    fn namespace_labels(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(ns))
            .and_then(|n| n.metadata.labels.clone())
    }

    /// The copy of `policy`'s CA in `ns`, if it is there: its hash.
    fn copy_hash(&self, ns: &str, copy: &str) -> Option<String> {
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
    fn converged(&self, kind: Kind, w: &Workload, d: &WorkloadDecision, config: &Value) -> bool {
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

    fn reference(kind: Kind, w: &Workload) -> ObjectReference {
        let ar = kind.resource();
        ObjectReference {
            api_version: Some(ar.api_version),
            kind: Some(ar.kind),
            name: w.metadata.name.clone(),
            namespace: w.metadata.namespace.clone(),
            uid: w.metadata.uid.clone(),
            ..ObjectReference::default()
        }
    }

    async fn event(&self, reference: &ObjectReference, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "InjectCA".into(),
            secondary: None,
        };
        self.metrics.write("Event");
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            tracing::warn!(error = %e, "publishing an event");
        }
    }

    /// Reports a workload's problem once per change of it.
    async fn report(&self, key: &str, kind: Kind, w: &Workload, problem: Option<String>) {
        let changed = {
            let mut r = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            match &problem {
                Some(p) if r.get(key) != Some(p) => {
                    r.insert(key.to_string(), p.clone());
                    true
                }
                Some(_) => false,
                None => {
                    r.remove(key);
                    false
                }
            }
        };
        if let (true, Some(p)) = (changed, problem) {
            self.event(&Ctx::reference(kind, w), true, "CAInjectionConflict", p)
                .await;
        }
    }
}

/// Reconciles one workload: inject, keep, or remove what the operator owns.
#[tracing::instrument(skip_all, fields(object = %w.label(kind)))]
pub async fn workload(kind: Kind, w: Arc<Workload>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.synced() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let ns = w.metadata.namespace.clone().unwrap_or_default();
    let name = w.name_any();
    let key = format!("{}/{ns}/{name}", kind.as_str());
    if let Some(g) = ctx.rollouts.waiting_for(&key)
        && w.rolled_out(kind, g)
    {
        ctx.rollouts.finished(&key);
    }
    let d = ctx.decide(kind, &w);
    ctx.report(&key, kind, &w, d.problem()).await;
    if d.waiting {
        // The policy reconciler is copying the CA here; an injection before would point
        // Pods at a ConfigMap that does not exist yet.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let config = ctx.apply_config(kind, &w, &d);
    if ctx.converged(kind, &w, &d, &config) {
        ctx.metrics.reconciled(kind.as_str(), "converged");
        return Ok(Action::await_change());
    }
    if kind.rolls() && !ctx.rollouts.has_room(&key) {
        ctx.metrics.reconciled(kind.as_str(), "paced");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    ctx.rate.acquire().await;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &kind.resource());
    let injecting = config.get("spec").is_some();
    ctx.metrics.write(kind.as_str());
    match api
        .patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(&config))
        .await
    {
        Ok(obj) => {
            if kind.rolls() {
                ctx.rollouts
                    .started(key, obj.metadata.generation.unwrap_or_default());
            }
            let (reason, note) = match &d.policy {
                Some(p) if injecting => (
                    "CAInjected",
                    format!("CA bundle of PostgresTLSPolicy {} mounted", p.name_any()),
                ),
                _ => (
                    "CARemoved",
                    "the CA bundle verifyfull had added is removed".to_string(),
                ),
            };
            ctx.event(&Ctx::reference(kind, &w), false, reason, note)
                .await;
            ctx.metrics.reconciled(kind.as_str(), "written");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Someone else owns a field with another value: never forced.
            ctx.report(
                &key,
                kind,
                &w,
                Some(format!("server-side apply conflict: {}", s.message)),
            )
            .await;
            ctx.metrics.reconciled(kind.as_str(), "conflict");
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Err(source) => Err(Error::Inject {
            object: w.label(kind),
            source,
        }),
    }
}

/// A failed reconcile is logged (the error names the step and the object) and retried.
pub fn error_policy<K>(_: Arc<K>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Counts over the workloads, for a policy's status.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    matched: i64,
    injected: i64,
    conflicts: i64,
    violations: i64,
    violating: Vec<String>,
    overlaps: Vec<String>,
    still_injected: i64,
}

impl Ctx {
    fn counts(&self, policy: &str) -> Counts {
        let mut c = Counts::default();
        for (kind, store) in &self.workloads {
            for w in store.state() {
                let stamped = w
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(INJECTED_ANNOTATION))
                    .is_some_and(|s| s.split_once('/').is_some_and(|(p, _)| p == policy));
                c.still_injected += i64::from(stamped);
                let d = self.decide(*kind, &w);
                let ours = d.policy.as_ref().is_some_and(|p| p.name_any() == policy);
                if d.overlap.iter().any(|n| n == policy) {
                    c.matched += 1;
                    for other in d.overlap.iter().filter(|n| n.as_str() != policy) {
                        if !c.overlaps.contains(other) {
                            c.overlaps.push(other.clone());
                        }
                    }
                }
                if !ours {
                    continue;
                }
                c.matched += 1;
                if d.plan
                    .as_ref()
                    .is_some_and(|p| p.skip.is_some() || !p.conflicts.is_empty())
                {
                    c.conflicts += 1;
                }
                if stamped && !d.plan.as_ref().is_some_and(Plan::is_empty) {
                    c.injected += 1;
                }
                // The engine's verdict on what runs now, from the decision's own report.
                if d.denied {
                    c.violations += 1;
                    if c.violating.len() < VIOLATING_LISTED {
                        c.violating.push(w.label(*kind));
                    }
                }
            }
        }
        c.violating.sort();
        c.overlaps.sort();
        c
    }

    /// Makes every workload reconcile once more.
    pub fn trigger_workloads(&self) {
        self.trigger.send_modify(|n| *n += 1);
    }
}

/// A deleted policy: workloads drop the injection first (the policy no longer selects
/// them), then the copies go, so that a Pod never points at a CA copy that is gone; then
/// the finalizer.
///
/// The finalizer is kept by hand, not with kube-runtime's `finalizer()`: its cleanup
/// removes the finalizer as soon as the cleanup returns `Ok`, and this one must wait,
/// without an error, until every workload has dropped the injection (requeued until then).
async fn clean_up(
    ctx: &Ctx,
    api: &Api<PostgresTLSPolicy>,
    p: &PostgresTLSPolicy,
) -> Result<Action, Error> {
    let name = p.name_any();
    let left = ctx.counts(&name).still_injected;
    if left > 0 {
        ctx.trigger_workloads();
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    delete_copies(ctx, &name, |_| true).await?;
    let rest: Vec<String> = p
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(ctx, api, p, rest).await?;
    Ok(Action::await_change())
}

/// Writes a policy's finalizers, at the resourceVersion they were computed from.
async fn set_finalizers(
    ctx: &Ctx,
    api: &Api<PostgresTLSPolicy>,
    p: &PostgresTLSPolicy,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": p.resource_version()}});
    ctx.metrics.write("PostgresTLSPolicy");
    api.patch(
        &p.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::Finalizer {
        policy: p.name_any(),
        source,
    })?;
    Ok(())
}

/// The status while the CA source cannot be read: the last copies stay as they were.
fn unavailable_status(
    old: &PostgresTlsPolicyStatus,
    generation: Option<i64>,
    reason: &str,
    msg: String,
) -> PostgresTlsPolicyStatus {
    PostgresTlsPolicyStatus {
        observed_generation: generation,
        ca_hash: old.ca_hash.clone(),
        namespaces: old.namespaces,
        conditions: vec![
            condition(
                "Ready",
                false,
                reason,
                msg.clone(),
                generation,
                &old.conditions,
            ),
            condition("Degraded", true, reason, msg, generation, &old.conditions),
        ],
        ..Default::default()
    }
}

/// The status once the CA is copied into `namespaces` namespaces: the counts, Ready, and
/// Degraded when policies overlap or workloads set the mount themselves.
fn distributed_status(
    old: &PostgresTlsPolicyStatus,
    generation: Option<i64>,
    namespaces: usize,
    ca_hash: String,
    c: Counts,
) -> PostgresTlsPolicyStatus {
    let ready_msg = format!(
        "CA copied into {namespaces} namespaces; {} of {} selected workloads carry it",
        c.injected, c.matched
    );
    let (degraded, reason, msg) = if !c.overlaps.is_empty() {
        (
            true,
            "OverlappingPolicies",
            format!(
                "workloads are also selected by {}; they are injected by none",
                c.overlaps.join(", ")
            ),
        )
    } else if c.conflicts > 0 {
        (
            true,
            "Conflicts",
            format!(
                "{} selected workloads set the CA mount or variables themselves; see their Events",
                c.conflicts
            ),
        )
    } else {
        (false, "AsExpected", "no conflicts".to_string())
    };
    PostgresTlsPolicyStatus {
        observed_generation: generation,
        matched: c.matched,
        injected: c.injected,
        conflicts: c.conflicts,
        violations: c.violations,
        violating: c.violating,
        namespaces: namespaces as i64,
        ca_hash: Some(ca_hash),
        conditions: vec![
            condition(
                "Ready",
                true,
                "CADistributed",
                ready_msg,
                generation,
                &old.conditions,
            ),
            condition(
                "Degraded",
                degraded,
                reason,
                msg,
                generation,
                &old.conditions,
            ),
        ],
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    old: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let prev = old.iter().find(|c| c.type_ == type_);
    let since = match prev {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(jiff::Timestamp::now()),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Reconciles one policy: finalizer, CA copies, status.
#[tracing::instrument(skip_all, fields(policy = %p.name_any()))]
pub async fn policy(p: Arc<PostgresTLSPolicy>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !ctx.synced() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let name = p.name_any();
    let api: Api<PostgresTLSPolicy> = Api::all(ctx.client.clone());
    let has_finalizer = p.finalizers().iter().any(|f| f == FINALIZER);
    if p.metadata.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        return clean_up(&ctx, &api, &p).await;
    }
    if !has_finalizer {
        let mut all: Vec<String> = p.finalizers().to_vec();
        all.push(FINALIZER.into());
        set_finalizers(&ctx, &api, &p, all).await?;
    }
    let generation = p.metadata.generation;
    let old = p.status.clone().unwrap_or_default();
    let status = match ca::read(&ctx.client, &p.spec.ca_source).await {
        Err(e) => unavailable_status(&old, generation, e.reason(), e.to_string()),
        Ok(bundle) => {
            let namespaces = copy_ca(&ctx, &p, &bundle).await?;
            let fingerprint = format!("{}/{:?}/{}", bundle.hash, generation, namespaces.join(","));
            let changed = {
                let mut seen = ctx.seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.insert(name.clone(), fingerprint.clone()).as_ref() != Some(&fingerprint)
            };
            if changed {
                ctx.trigger_workloads();
            }
            let counts = ctx.counts(&name);
            distributed_status(&old, generation, namespaces.len(), bundle.hash, counts)
        }
    };
    if status != old {
        ctx.metrics.write("PostgresTLSPolicy/status");
        let patch = json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Status {
                policy: name.clone(),
                source,
            })?;
    }
    Ok(Action::requeue(ctx.settings.resync))
}

/// Puts the CA copy into every selected namespace (only where missing or stale) and
/// removes copies from namespaces no longer selected. Returns the selected namespaces.
async fn copy_ca(
    ctx: &Ctx,
    p: &PostgresTLSPolicy,
    bundle: &ca::Bundle,
) -> Result<Vec<String>, Error> {
    let copy = p.copy_name();
    let mut wanted: Vec<String> = ctx
        .namespaces
        .state()
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .map(|n| (n.name_any(), n.metadata.labels.clone()))
        .filter(|(n, labels)| {
            !ctx.excluded(n)
                && selector_matches(p.spec.namespace_selector.as_ref(), labels.as_ref())
        })
        .map(|(n, _)| n)
        .collect();
    wanted.sort();
    let owner = p
        .controller_owner_ref(&())
        .map(|o| vec![o])
        .unwrap_or_default();
    for ns in &wanted {
        if ctx.copy_hash(ns, &copy).as_deref() == Some(bundle.hash.as_str()) {
            continue;
        }
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": copy, "namespace": ns,
                         "labels": {MANAGED_BY.0: MANAGED_BY.1, POLICY_LABEL: p.name_any()},
                         "annotations": {HASH_ANNOTATION: bundle.hash},
                         "ownerReferences": owner},
            "data": {p.spec.injection.file_name.clone(): bundle.pem},
        });
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        ctx.metrics.write("ConfigMap");
        api.patch(
            &copy,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .map_err(|source| Error::CopyCa {
            policy: p.name_any(),
            namespace: ns.clone(),
            source,
        })?;
    }
    delete_copies(ctx, &p.name_any(), |ns| !wanted.iter().any(|w| w == ns)).await?;
    Ok(wanted)
}

async fn delete_copies(
    ctx: &Ctx,
    policy: &str,
    doomed: impl Fn(&str) -> bool,
) -> Result<(), Error> {
    for c in ctx.copies.state() {
        let ns = c.namespace().unwrap_or_default();
        let ours = c.labels().get(POLICY_LABEL).map(String::as_str) == Some(policy);
        if ours && doomed(&ns) {
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
            ctx.metrics.write("ConfigMap");
            match api.delete(&c.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(Error::DeleteCopy {
                        namespace: ns,
                        copy: c.name_any(),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
