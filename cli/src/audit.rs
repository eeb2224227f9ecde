//! `verifyfull audit`: the live cluster, read-only. It lists every Pod-carrying workload
//! that runs on its own (Deployments, StatefulSets, DaemonSets, CronJobs,
//! ReplicationControllers, ReplicaSets no Deployment owns, Jobs no CronJob owns, Pods no
//! controller owns), the ConfigMaps and — when RBAC allows — the Secrets they reference,
//! the namespaces' mode labels and the `PostgresTLSPolicy` objects, and judges each
//! workload as the webhook would: references resolved from the same reduction
//! (`policy::redact::reduce`), a policy's injection applied (as it will run). It only
//! ever GETs and LISTs.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ReplicationController, Secret};
use kube::api::{Api, ListParams};
use kube::core::NamespaceResourceScope;
use policy::crd::PostgresTLSPolicy;
use policy::redact::Listed;
use policy::{Context, Object, SourceKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::check::{self, Options, Outcome};
use crate::input::{Document, InputError};

/// The label that chooses a namespace's admission mode.
pub const MODE_LABEL: &str = "verifyfull.dev/mode";
/// Objects per LIST page.
const PAGE: u32 = 500;

/// What the audit read.
#[derive(Debug)]
pub struct Cluster {
    /// Workloads as documents (`source` is `cluster`), in kind, namespace, name order.
    pub docs: Vec<Document>,
    /// ConfigMaps, and Secrets when readable, reduced to what the engine needs.
    sources: Listed,
    /// Each namespace's labels (`None` when namespaces are unreadable): its mode, and what
    /// a policy's namespace selector reads.
    pub namespaces: Option<BTreeMap<String, BTreeMap<String, String>>>,
    pub policies: Vec<PostgresTLSPolicy>,
    /// What could not be read, said once each: a 403 on what references point to is not
    /// an error.
    pub notes: Vec<String>,
    /// Workloads that could not be listed or read: the audit is incomplete (exit 2).
    pub errors: Vec<InputError>,
}

/// A LIST that failed for a reason other than a missing permission or a missing API.
#[derive(Debug, thiserror::Error)]
#[error("listing {what}: {source}")]
pub struct Error {
    what: &'static str,
    #[source]
    source: kube::Error,
}

/// What became of one LIST.
enum ListResult<T> {
    All(Vec<T>),
    /// 403: RBAC does not allow it.
    Forbidden,
    /// 404: the API is not served (the CRD is not installed).
    NotServed,
}

/// Shows progress on stderr when it is a terminal and the scan takes more than a moment.
struct Progress {
    start: Instant,
    shown: bool,
    tty: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            start: Instant::now(),
            shown: false,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn listing(&mut self, what: &str, so_far: usize) {
        if self.tty && self.start.elapsed() > Duration::from_millis(500) {
            eprint!("\r\x1b[Kreading {what}: {so_far} objects");
            self.shown = true;
        }
    }

    fn done(&self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}

/// Lists every object of a kind, page by page, keeping what `keep` makes of each as its
/// page arrives (so that whole Secrets are never all held at once). A continue token that
/// expired mid-list (410) starts the list again.
async fn list<K, T>(
    api: Api<K>,
    what: &'static str,
    progress: &mut Progress,
    mut keep: impl FnMut(K) -> Option<T>,
) -> Result<ListResult<T>, Error>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut all = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    let mut restarts = 0;
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(s)) if s.code == 403 => return Ok(ListResult::Forbidden),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(ListResult::NotServed),
            Err(kube::Error::Api(s)) if s.code == 410 && restarts < 3 => {
                restarts += 1;
                all.clear();
                params = ListParams::default().limit(PAGE);
                continue;
            }
            Err(source) => return Err(Error { what, source }),
        };
        all.extend(page.items.into_iter().filter_map(&mut keep));
        progress.listing(what, all.len());
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(ListResult::All(all)),
        }
    }
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The built-in controllers' kinds that make Pods from an admitted template.
const BUILT_IN_POD_OWNERS: [&str; 5] = [
    "ReplicaSet",
    "ReplicationController",
    "StatefulSet",
    "DaemonSet",
    "Job",
];

/// Whether a controller of one of `kinds` owns the object.
fn owned_by(meta: &kube::api::ObjectMeta, kinds: &[&str]) -> bool {
    (meta.owner_references.iter().flatten())
        .any(|o| o.controller == Some(true) && kinds.contains(&o.kind.as_str()))
}

/// Reads the cluster (`namespace`: one, or all).
pub async fn read(client: &kube::Client, namespace: Option<&str>) -> Result<Cluster, Error> {
    let mut progress = Progress::new();
    let mut notes = Vec::new();
    let (docs, errors) = read_workloads(client, namespace, &mut progress).await?;
    let sources = read_sources(client, namespace, &mut progress, &mut notes).await?;
    let namespaces = read_namespaces(client, namespace, &mut progress, &mut notes).await?;
    let policies = read_policies(client, &mut progress, &mut notes).await?;
    progress.done();
    if namespaces.is_none() && policies.iter().any(|p| p.spec.namespace_selector.is_some()) {
        notes.push(
            "Namespaces are not readable: policies that select namespaces are not applied".into(),
        );
    }
    Ok(Cluster {
        docs,
        sources,
        namespaces,
        policies,
        notes,
        errors,
    })
}

/// The workloads that run on their own, as documents; the kinds that could not be read.
async fn read_workloads(
    client: &kube::Client,
    namespace: Option<&str>,
    progress: &mut Progress,
) -> Result<(Vec<Document>, Vec<InputError>), Error> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    macro_rules! workloads {
        ($kind:ty, $what:literal, $skip:expr) => {
            let keep = |w: $kind| (!$skip(&w.metadata)).then_some(w);
            match list(api::<$kind>(client, namespace), $what, progress, keep).await? {
                ListResult::All(items) => {
                    for w in items {
                        push(&mut docs, &mut errors, w);
                    }
                }
                // A kind the API does not serve has nothing to judge.
                ListResult::NotServed => {}
                ListResult::Forbidden => errors.push(unreadable($what)),
            }
        };
    }
    let none = |_: &kube::api::ObjectMeta| false;
    workloads!(Deployment, "Deployments", none);
    workloads!(StatefulSet, "StatefulSets", none);
    workloads!(DaemonSet, "DaemonSets", none);
    workloads!(CronJob, "CronJobs", none);
    workloads!(ReplicationController, "ReplicationControllers", none);
    workloads!(ReplicaSet, "ReplicaSets", |m| owned_by(m, &["Deployment"]));
    workloads!(Job, "Jobs", |m| owned_by(m, &["CronJob"]));
    // Pods the built-in controllers make are judged through their owners; other operators'
    // Pods are judged, as the webhook judges them.
    workloads!(Pod, "Pods", |m| owned_by(m, &BUILT_IN_POD_OWNERS));
    Ok((docs, errors))
}

/// ConfigMaps, and Secrets when readable, reduced as the webhook reduces them (each as its
/// page arrives: no Secret value is kept).
async fn read_sources(
    client: &kube::Client,
    namespace: Option<&str>,
    progress: &mut Progress,
    notes: &mut Vec<String>,
) -> Result<Listed, Error> {
    let mut sources = Listed::new(true, true);
    let read = list(
        api::<ConfigMap>(client, namespace),
        "ConfigMaps",
        progress,
        |c| {
            let (ns, name) = names(&c.metadata);
            sources.insert(
                SourceKind::ConfigMap,
                &ns,
                &name,
                c.data.unwrap_or_default(),
            );
            Some(())
        },
    )
    .await?;
    readable(&mut sources, SourceKind::ConfigMap, read, notes);
    let read = list(api::<Secret>(client, namespace), "Secrets", progress, |s| {
        let (ns, name) = names(&s.metadata);
        let data = (s.data.unwrap_or_default().into_iter())
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()));
        sources.insert(SourceKind::Secret, &ns, &name, data);
        Some(())
    })
    .await?;
    readable(&mut sources, SourceKind::Secret, read, notes);
    Ok(sources)
}

fn names(meta: &kube::api::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A kind that could not be read: its references are hidden, said once.
fn readable(sources: &mut Listed, kind: SourceKind, read: ListResult<()>, notes: &mut Vec<String>) {
    if !matches!(read, ListResult::All(_)) {
        let what = kind.as_str();
        notes.push(format!(
            "{what}s are not readable (RBAC): references to them are Unresolved"
        ));
        sources.set_readable(kind, false);
    }
}

/// Each namespace's labels (`None` when they cannot be read).
async fn read_namespaces(
    client: &kube::Client,
    namespace: Option<&str>,
    progress: &mut Progress,
    notes: &mut Vec<String>,
) -> Result<Option<BTreeMap<String, BTreeMap<String, String>>>, Error> {
    let labels = |n: Namespace| {
        let name = n.metadata.name.unwrap_or_default();
        (name, n.metadata.labels.unwrap_or_default())
    };
    let namespaces = match namespace {
        Some(ns) => match Api::<Namespace>::all(client.clone()).get_opt(ns).await {
            Ok(n) => Some(n.into_iter().map(labels).collect()),
            Err(_) => None,
        },
        None => match list(
            Api::<Namespace>::all(client.clone()),
            "Namespaces",
            progress,
            |n| Some(labels(n)),
        )
        .await?
        {
            ListResult::All(items) => Some(items.into_iter().collect()),
            _ => None,
        },
    };
    if namespaces.is_none() {
        notes.push("Namespaces are not readable: their modes are unknown".into());
    }
    Ok(namespaces)
}

/// The `PostgresTLSPolicy` objects (none when the CRD is not installed).
async fn read_policies(
    client: &kube::Client,
    progress: &mut Progress,
    notes: &mut Vec<String>,
) -> Result<Vec<PostgresTLSPolicy>, Error> {
    let policies = match list(
        Api::<PostgresTLSPolicy>::all(client.clone()),
        "PostgresTLSPolicies",
        progress,
        Some,
    )
    .await?
    {
        ListResult::All(items) => items,
        ListResult::NotServed => Vec::new(),
        ListResult::Forbidden => {
            notes.push(
                "PostgresTLSPolicies are not readable: judged without their injection".into(),
            );
            Vec::new()
        }
    };
    Ok(policies)
}

/// A kind of workload the audit may not list: it cannot say what would be denied.
fn unreadable(what: &str) -> InputError {
    InputError {
        source: "cluster".to_string(),
        document: None,
        item: None,
        line: None,
        column: None,
        message: format!("{what} are not readable (RBAC): they are not judged"),
    }
}

/// One listed object as the document `verifyfull check` would read from its YAML.
fn push<K: Serialize>(docs: &mut Vec<Document>, errors: &mut Vec<InputError>, object: K) {
    let n = docs.len() + 1;
    let parsed = serde_json::to_value(&object).and_then(serde_json::from_value::<Object>);
    match parsed {
        Ok(object) => docs.push(Document {
            source: "cluster".to_string(),
            document: n,
            item: None,
            object,
            spans: None,
        }),
        Err(e) => errors.push(InputError {
            source: "cluster".to_string(),
            document: Some(n),
            item: None,
            line: None,
            column: None,
            message: policy::message::parser_error(&e.to_string()),
        }),
    }
}

/// Judges what was read, as the webhook would (a policy's injection applied), except in
/// the `excluded` namespaces, which the webhook never judges.
pub fn judge(cluster: &mut Cluster, opts: &Options, excluded: &[String]) -> Outcome {
    cluster.docs.retain(|d| {
        let ns = d.object.metadata().and_then(|m| m.namespace.as_deref());
        !ns.is_some_and(|ns| excluded.iter().any(|e| e == ns))
    });
    let ctx = Context {
        settings: &opts.settings,
        sources: &cluster.sources,
        now: opts.now,
    };
    for d in &mut cluster.docs {
        if let Object::Workload(w) = &mut d.object {
            let ns = w.metadata.namespace.as_deref().unwrap_or_default();
            let labels = cluster.namespaces.as_ref().and_then(|n| n.get(ns));
            policy::inject::as_it_will_run(&cluster.policies, labels, w, &ctx);
        }
    }
    check::judge_with(
        &cluster.docs,
        &cluster.sources,
        cluster.errors.clone(),
        opts,
    )
}

impl Cluster {
    /// A namespace's mode: its label, else `default` (the chart's `mode`); `None` when
    /// namespaces are unreadable.
    pub fn mode<'c>(&'c self, namespace: &str, default: &'c str) -> Option<&'c str> {
        let labels = self.namespaces.as_ref()?.get(namespace);
        Some(
            labels
                .and_then(|l| l.get(MODE_LABEL))
                .map_or(default, String::as_str),
        )
    }
}

/// The audit as JSON: `verifyfull check`'s shape, with each namespace's mode and what
/// could not be read.
#[derive(Debug, Serialize)]
pub struct Report<'o> {
    #[serde(flatten)]
    pub outcome: &'o Outcome,
    /// Namespace → mode, for the namespaces of the objects (absent: namespaces unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modes: Option<BTreeMap<String, String>>,
    pub notes: &'o [String],
}

impl Cluster {
    /// The modes of the namespaces `outcome` names.
    pub fn modes(&self, outcome: &Outcome, default: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.as_ref()?;
        let names = outcome
            .objects
            .iter()
            .filter_map(|o| o.namespace.as_deref());
        Some(
            names
                .filter_map(|ns| Some((ns.to_string(), self.mode(ns, default)?.to_string())))
                .collect(),
        )
    }
}

/// Human-readable: by namespace, with its mode; in `enforce`, a violation is what the
/// next change of the workload will be denied for. Then a table per namespace.
pub fn render_human(outcome: &Outcome, cluster: &Cluster, default_mode: &str) -> String {
    use std::fmt::Write;
    let mut by_ns: BTreeMap<&str, Vec<&check::ObjectOut>> = BTreeMap::new();
    for o in &outcome.objects {
        by_ns
            .entry(o.namespace.as_deref().unwrap_or_default())
            .or_default()
            .push(o);
    }
    let mut s = String::new();
    let mut total = check::Tally::default();
    let mut rows = Vec::new();
    for (ns, objects) in &by_ns {
        let mode = cluster.mode(ns, default_mode).unwrap_or("unknown");
        let _ = writeln!(s, "namespace {ns} (mode {mode})");
        let mut tally = check::Tally::default();
        for o in objects {
            let mut heading = format!("{} {}", o.kind, o.name.as_deref().unwrap_or("(unnamed)"));
            if o.verdict == policy::Verdict::Violation && mode == "enforce" {
                heading.push_str(" (would be denied on its next change)");
            }
            check::render_object(&mut s, o, &heading, "  ", &mut tally);
        }
        rows.push((
            ns.to_string(),
            mode.to_string(),
            tally.objects,
            tally.count(policy::Verdict::Violation),
            tally.count(policy::Verdict::Warning),
            tally.count(policy::Verdict::Exempt),
            tally.count(policy::Verdict::Pass),
        ));
        total.objects += tally.objects;
        total.clients += tally.clients;
        for (t, c) in total.containers.iter_mut().zip(tally.containers) {
            *t += c;
        }
    }
    for n in &cluster.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let _ = writeln!(
        s,
        "\n| namespace | mode | workloads | containers denied | warned | exempt | passed |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for (ns, mode, objects, denied, warned, exempt, passed) in rows {
        let _ = writeln!(
            s,
            "| {ns} | {mode} | {objects} | {denied} | {warned} | {exempt} | {passed} |"
        );
    }
    let _ = writeln!(s, "{}", total.summary());
    s
}

/// The audit as policy reports, one set per namespace (docs/reports.md), for Policy
/// Reporter and dashboards. Call after [`judge`], which applied the policies' injection.
pub fn reports(
    cluster: &Cluster,
    opts: &Options,
    api: policy::reports::ReportApi,
    default_mode: &str,
) -> Vec<serde_json::Value> {
    use policy::reports::{Resource, Row, namespace_reports, rows};
    let ctx = Context {
        settings: &opts.settings,
        sources: &cluster.sources,
        now: opts.now,
    };
    let mut by_ns: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for d in &cluster.docs {
        let Object::Workload(w) = &d.object else {
            continue;
        };
        let ns = w.metadata.namespace.clone().unwrap_or_default();
        let report = policy::judge(w.view(), &ctx);
        let resource = Resource {
            api_version: w.kind.api_version().to_string(),
            kind: w.kind.as_str().to_string(),
            namespace: ns.clone(),
            name: w.metadata.name.clone().unwrap_or_default(),
            uid: None,
        };
        let mode = cluster.mode(&ns, default_mode);
        by_ns
            .entry(ns)
            .or_default()
            .extend(rows(&resource, &report, mode));
    }
    (by_ns.into_iter())
        .flat_map(|(ns, rows)| namespace_reports(api, &ns, rows, opts.now, &[]))
        .collect()
}
