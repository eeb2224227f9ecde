//! Policy reports of every workload (docs/reports.md): the leader judges every workload
//! that runs on its own, in every namespace that is not excluded and not labelled `off`,
//! as it will run (a policy's injection applied), with references resolved from a cache
//! of ConfigMaps (and Secrets, when allowed) reduced as the webhook reduces them, and
//! keeps one report per namespace (`policy::reports`). A change marks its namespace; a
//! marked namespace is judged again and its report written only when it differs from
//! the one stored, so resyncs and restarts write nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use policy::crd::PostgresTLSPolicy;
use policy::redact::Listed;
use policy::reports::{ReportApi, Resource, Row, namespace_reports, rows};
use policy::{Context, Object, SourceKind, Workload};
use serde_json::Value;

use crate::metrics::Metrics;

/// Which report API to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// No reports.
    Off,
    /// `openreports.io` when served, else `wgpolicyk8s.io`, else none.
    Auto,
    /// `openreports.io/v1alpha1` `Report`.
    #[value(name = "openreports")]
    OpenReports,
    /// `wgpolicyk8s.io/v1alpha2` `PolicyReport`.
    Wgpolicyk8s,
}

/// The field manager of the reports.
const MANAGER: &str = "verifyfull-reports";
/// The label selecting the reports verifyfull owns.
const OWNED: &str = "app.kubernetes.io/managed-by=verifyfull";
/// The mode label whose `off` turns reports off in a namespace.
const MODE_LABEL: &str = "verifyfull.dev/mode";
/// How long changes gather before the namespaces they mark are judged.
const SETTLE: Duration = Duration::from_millis(500);

/// What the reporting loop reads, kept as little as judging needs.
struct State {
    /// (kind, namespace, name) → the workload, reduced to the engine's model.
    workloads: BTreeMap<(String, String, String), Workload>,
    sources: Listed,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    policies: BTreeMap<String, PostgresTLSPolicy>,
    /// (namespace, name) → the report as stored.
    reports: BTreeMap<(String, String), Value>,
    dirty: BTreeSet<String>,
    /// Every namespace needs judging (a policy changed).
    all_dirty: bool,
    /// Watches that have listed once; nothing is written before all have.
    listed: BTreeSet<&'static str>,
}

impl State {
    /// Empty; Secrets readable or hidden.
    fn new(read_secrets: bool) -> State {
        State {
            workloads: BTreeMap::new(),
            sources: Listed::new(true, read_secrets),
            namespaces: HashMap::new(),
            policies: BTreeMap::new(),
            reports: BTreeMap::new(),
            dirty: BTreeSet::new(),
            all_dirty: false,
            listed: BTreeSet::new(),
        }
    }
}

/// The reporting loop's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub choice: Choice,
    pub read_secrets: bool,
    pub excluded: Vec<String>,
    pub engine: policy::Settings,
}

/// The workload kinds judged, and the controllers whose objects of that kind are judged
/// through their owner instead.
const KINDS: [(&str, &str, &str, &str, &[&str]); 8] = [
    ("apps", "Deployment", "deployments", "apps/v1", &[]),
    ("apps", "StatefulSet", "statefulsets", "apps/v1", &[]),
    ("apps", "DaemonSet", "daemonsets", "apps/v1", &[]),
    ("batch", "CronJob", "cronjobs", "batch/v1", &[]),
    (
        "",
        "ReplicationController",
        "replicationcontrollers",
        "v1",
        &[],
    ),
    (
        "apps",
        "ReplicaSet",
        "replicasets",
        "apps/v1",
        &["Deployment"],
    ),
    ("batch", "Job", "jobs", "batch/v1", &["CronJob"]),
    (
        "",
        "Pod",
        "pods",
        "v1",
        &[
            "ReplicaSet",
            "ReplicationController",
            "StatefulSet",
            "DaemonSet",
            "Job",
        ],
    ),
];

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn report_resource(api: ReportApi) -> ApiResource {
    match api {
        ReportApi::OpenReports => resource("openreports.io", "v1alpha1", "Report", "reports"),
        ReportApi::Wgpolicyk8s => resource(
            "wgpolicyk8s.io",
            "v1alpha2",
            "PolicyReport",
            "policyreports",
        ),
    }
}

/// The API to write: the one chosen, or the first served.
async fn api_to_use(client: &kube::Client, choice: Choice) -> Option<ReportApi> {
    let candidates = match choice {
        Choice::Off => return None,
        Choice::Auto => vec![ReportApi::OpenReports, ReportApi::Wgpolicyk8s],
        Choice::OpenReports => vec![ReportApi::OpenReports],
        Choice::Wgpolicyk8s => vec![ReportApi::Wgpolicyk8s],
    };
    for api in candidates {
        let reports: Api<DynamicObject> = Api::all_with(client.clone(), &report_resource(api));
        match reports.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Some(api),
            Err(e) => tracing::info!(error = %e, api = ?api.type_meta(), "report API not usable"),
        }
    }
    None
}

/// Runs the reporting loop until the task is dropped (the lease is lost).
pub async fn run(client: kube::Client, settings: Settings, metrics: Metrics) {
    let Some(api) = api_to_use(&client, settings.choice).await else {
        tracing::warn!("no policy report API is served: no reports are written");
        return;
    };
    tracing::info!(kind = api.type_meta().1, "writing policy reports");
    let state = Arc::new(Mutex::new(State::new(settings.read_secrets)));
    let tasks = watch_all(&client, &settings, api, &state).await;
    // Every watch, the reports' own included, lists before anything is judged.
    let expected = tasks.len();
    loop {
        tokio::time::sleep(SETTLE).await;
        let ready = state
            .lock()
            .map(|s| s.listed.len() >= expected)
            .unwrap_or(false);
        if !ready {
            continue;
        }
        // Judging a namespace of thousands of workloads is CPU work: off the async workers.
        let (shared, judging) = (state.clone(), settings.clone());
        let judged = tokio::task::spawn_blocking(move || judge_dirty(&shared, &judging, api));
        let work = match judged.await {
            Ok(work) => work,
            Err(e) => {
                tracing::error!(error = %e, "judging for the policy reports failed");
                continue;
            }
        };
        for (ns, wanted, stored) in work {
            write(&client, api, &ns, wanted, stored, &metrics).await;
        }
    }
}

/// Starts every watch the loop reads; each folds its events into `state`.
async fn watch_all(
    client: &kube::Client,
    settings: &Settings,
    api: ReportApi,
    state: &Arc<Mutex<State>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (group, kind, plural, api_version, owners) in KINDS {
        let version = api_version.rsplit('/').next().unwrap_or("v1");
        let ar = resource(group, version, kind, plural);
        let objects = Api::<DynamicObject>::all_with(client.clone(), &ar);
        // A kind the API does not serve (some clusters drop ReplicationControllers) has
        // nothing to report, and its watch would never list.
        if let Err(kube::Error::Api(e)) = objects.list(&ListParams::default().limit(1)).await
            && e.code == 404
        {
            continue;
        }
        let state = state.clone();
        tasks.push(tokio::spawn(watch(
            objects,
            kind,
            move |s: &mut State, o, live| workload_event(s, kind, api_version, owners, o, live),
            state,
        )));
    }
    let cms = Api::<DynamicObject>::all_with(
        client.clone(),
        &resource("", "v1", "ConfigMap", "configmaps"),
    );
    tasks.push(tokio::spawn(watch(
        cms,
        "ConfigMap",
        |s: &mut State, o, live| source_event(s, SourceKind::ConfigMap, o, live),
        state.clone(),
    )));
    if settings.read_secrets {
        let secrets = Api::<DynamicObject>::all_with(
            client.clone(),
            &resource("", "v1", "Secret", "secrets"),
        );
        tasks.push(tokio::spawn(watch(
            secrets,
            "Secret",
            |s: &mut State, o, live| source_event(s, SourceKind::Secret, o, live),
            state.clone(),
        )));
    }
    let namespaces = Api::<DynamicObject>::all_with(
        client.clone(),
        &resource("", "v1", "Namespace", "namespaces"),
    );
    tasks.push(tokio::spawn(watch(
        namespaces,
        "Namespace",
        namespace_event,
        state.clone(),
    )));
    let policies = Api::<DynamicObject>::all_with(
        client.clone(),
        &resource(
            "verifyfull.dev",
            "v1alpha1",
            "PostgresTLSPolicy",
            "postgrestlspolicies",
        ),
    );
    tasks.push(tokio::spawn(watch(
        policies,
        "PostgresTLSPolicy",
        policy_event,
        state.clone(),
    )));
    let reports = Api::<DynamicObject>::all_with(client.clone(), &report_resource(api));
    tasks.push(tokio::spawn(watch_owned(reports, state.clone())));
    tasks
}

/// Follows one kind, folding each object into the state with `fold` (`live`: false when
/// it was deleted).
async fn watch<F>(api: Api<DynamicObject>, what: &'static str, fold: F, state: Arc<Mutex<State>>)
where
    F: Fn(&mut State, &DynamicObject, bool) + Send + 'static,
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue };
        let Ok(mut s) = state.lock() else { return };
        match event {
            Event::Apply(o) | Event::InitApply(o) => fold(&mut s, &o, true),
            Event::Delete(o) => fold(&mut s, &o, false),
            Event::Init => {}
            Event::InitDone => {
                s.listed.insert(what);
                s.all_dirty = true;
            }
        }
    }
}

/// The reports verifyfull owns, as stored.
async fn watch_owned(api: Api<DynamicObject>, state: Arc<Mutex<State>>) {
    let config = watcher::Config::default().labels(OWNED);
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue };
        let Ok(mut s) = state.lock() else { return };
        let key = |o: &DynamicObject| {
            (
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
            )
        };
        match event {
            Event::Apply(o) | Event::InitApply(o) => {
                let k = key(&o);
                s.reports
                    .insert(k, serde_json::to_value(&o).unwrap_or_default());
            }
            Event::Delete(o) => {
                s.reports.remove(&key(&o));
            }
            Event::Init => {}
            Event::InitDone => {
                s.listed.insert("reports");
            }
        }
    }
}

fn ns_of(o: &DynamicObject) -> String {
    o.metadata.namespace.clone().unwrap_or_default()
}

fn workload_event(
    s: &mut State,
    kind: &'static str,
    api_version: &str,
    owners: &[&str],
    o: &DynamicObject,
    live: bool,
) {
    let ns = ns_of(o);
    let key = (
        kind.to_string(),
        ns.clone(),
        o.metadata.name.clone().unwrap_or_default(),
    );
    let owned = (o.metadata.owner_references.iter().flatten())
        .any(|r| r.controller == Some(true) && owners.contains(&r.kind.as_str()));
    s.dirty.insert(ns);
    if !live || owned {
        s.workloads.remove(&key);
        return;
    }
    let mut v = serde_json::to_value(o).unwrap_or_default();
    v["apiVersion"] = Value::from(api_version);
    v["kind"] = Value::from(kind);
    match serde_json::from_value::<Object>(v) {
        Ok(Object::Workload(w)) => {
            s.workloads.insert(key, *w);
        }
        _ => {
            s.workloads.remove(&key);
        }
    }
}

fn source_event(s: &mut State, kind: SourceKind, o: &DynamicObject, live: bool) {
    let (ns, name) = (ns_of(o), o.metadata.name.clone().unwrap_or_default());
    s.dirty.insert(ns.clone());
    if !live {
        s.sources.remove(kind, &ns, &name);
        return;
    }
    let data = o.data.get("data").and_then(Value::as_object);
    let pairs = (data.into_iter().flatten()).filter_map(|(k, v)| {
        let text = v.as_str()?;
        let text = match kind {
            SourceKind::Secret => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            SourceKind::ConfigMap => text.to_string(),
        };
        Some((k.clone(), text))
    });
    s.sources.insert(kind, &ns, &name, pairs);
}

fn namespace_event(s: &mut State, o: &DynamicObject, live: bool) {
    let name = o.metadata.name.clone().unwrap_or_default();
    s.dirty.insert(name.clone());
    if live {
        s.namespaces
            .insert(name, o.metadata.labels.clone().unwrap_or_default());
    } else {
        s.namespaces.remove(&name);
    }
}

fn policy_event(s: &mut State, o: &DynamicObject, live: bool) {
    let name = o.metadata.name.clone().unwrap_or_default();
    s.all_dirty = true;
    let parsed = serde_json::to_value(o).and_then(serde_json::from_value::<PostgresTLSPolicy>);
    match parsed {
        Ok(p) if live => {
            s.policies.insert(name, p);
        }
        _ => {
            s.policies.remove(&name);
        }
    }
}

type Work = Vec<(String, Vec<Value>, Vec<Value>)>;

/// Judges every marked namespace: (namespace, the reports it should have, those stored).
fn judge_dirty(state: &Mutex<State>, settings: &Settings, api: ReportApi) -> Work {
    let Ok(mut s) = state.lock() else {
        return Vec::new();
    };
    let mut dirty = std::mem::take(&mut s.dirty);
    if std::mem::take(&mut s.all_dirty) {
        dirty.extend(s.namespaces.keys().cloned());
        dirty.extend(s.reports.keys().map(|(ns, _)| ns.clone()));
    }
    let policies: Vec<PostgresTLSPolicy> = s.policies.values().cloned().collect();
    let now = jiff::Timestamp::now();
    let mut work = Vec::new();
    for ns in dirty {
        let stored: Vec<Value> = (s.reports.iter())
            .filter(|((n, _), _)| *n == ns)
            .map(|(_, r)| r.clone())
            .collect();
        let labels = s.namespaces.get(&ns);
        let mode = labels.and_then(|l| l.get(MODE_LABEL)).map(String::as_str);
        let covered = labels.is_some() && mode != Some("off") && !settings.excluded.contains(&ns);
        let ctx = Context {
            settings: &settings.engine,
            sources: &s.sources,
            now,
        };
        let mut found: Vec<Row> = Vec::new();
        if covered {
            let range = s.workloads.iter().filter(|((_, n, _), _)| *n == ns);
            for ((kind, _, name), w) in range {
                let mut w = w.clone();
                policy::inject::as_it_will_run(&policies, labels, &mut w, &ctx);
                let report = policy::judge(w.view(), &ctx);
                let resource = Resource {
                    api_version: w.kind.api_version().to_string(),
                    kind: kind.clone(),
                    namespace: ns.clone(),
                    name: name.clone(),
                    uid: None,
                };
                found.extend(rows(&resource, &report, Some(mode.unwrap_or("enforce"))));
            }
        }
        let wanted = if found.is_empty() {
            Vec::new()
        } else {
            namespace_reports(api, &ns, found, now, &stored)
        };
        work.push((ns, wanted, stored));
    }
    work
}

/// Writes the reports of a namespace that differ from the stored ones, and deletes
/// stored parts no longer wanted.
async fn write(
    client: &kube::Client,
    api: ReportApi,
    ns: &str,
    wanted: Vec<Value>,
    stored: Vec<Value>,
    metrics: &Metrics,
) {
    let reports: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &report_resource(api));
    let same = |w: &Value, s: &Value| {
        w["metadata"]["name"] == s["metadata"]["name"]
            && w["results"] == s["results"]
            && w["summary"] == s["summary"]
    };
    let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
    for w in &wanted {
        for r in w["results"].as_array().into_iter().flatten() {
            let result = match r["result"].as_str() {
                Some("fail") => "fail",
                Some("warn") => "warn",
                Some("skip") => "skip",
                _ => "pass",
            };
            *counts.entry(result).or_default() += 1;
        }
        if stored.iter().any(|s| same(w, s)) {
            continue;
        }
        let name = w["metadata"]["name"].as_str().unwrap_or("verifyfull");
        metrics.write(api.type_meta().1);
        let params = PatchParams::apply(MANAGER).force();
        if let Err(e) = reports.patch(name, &params, &Patch::Apply(w)).await {
            tracing::warn!(error = %e, namespace = ns, report = name, "writing a policy report");
        }
    }
    for s in &stored {
        let name = s["metadata"]["name"].as_str().unwrap_or_default();
        if wanted.iter().any(|w| w["metadata"]["name"] == name) {
            continue;
        }
        metrics.write(api.type_meta().1);
        if let Err(e) = reports.delete(name, &DeleteParams::default()).await {
            tracing::warn!(error = %e, namespace = ns, report = name, "deleting a policy report");
        }
    }
    metrics.set_report_results(ns, &counts);
}
