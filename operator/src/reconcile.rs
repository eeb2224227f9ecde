//! The two reconcilers, thin: a policy's CA copies and status, and each workload's
//! injection. What they decide is in pure submodules over the in-memory stores —
//! selection (`select`), the apply configuration (`apply`), the status (`status`) — and
//! the CA copies' writes in `copies`.

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

use copies::{clean_up, copy_ca, set_finalizers};
pub use select::WorkloadDecision;
use status::{distributed_status, unavailable_status};

/// The field manager of every write: server-side apply removes exactly what it owns.
pub const MANAGER: &str = "verifyfull-operator";
/// On a workload's metadata (no rollout): which policy injected it, and a hash of what.
pub const INJECTED_ANNOTATION: &str = "verifyfull.dev/injected";
pub const POLICY_LABEL: &str = "verifyfull.dev/policy";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "verifyfull-operator");
pub const FINALIZER: &str = "verifyfull.dev/cleanup";

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
            ctx.metrics.set_violations(&name, None);
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
            ctx.metrics.set_violations(&name, Some(counts.violations));
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

mod apply;
mod copies;
mod select;
mod status;

#[cfg(test)]
mod tests;
