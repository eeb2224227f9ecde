//! `verifyfull check`: parse every input, resolve references against the ConfigMaps and
//! Secrets found in the input, judge every Pod-carrying object, report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use policy::Lookup;
use policy::{ContainerReport, Finding, Note};
use policy::{
    Context, Object, Report, Settings, Severity, SourceData, SourceKind, ValueSource, Verdict,
};
use serde::Serialize;

use crate::input::{self, Document, InputError, Source};

#[derive(Debug, Clone)]
pub struct Options {
    pub settings: Settings,
    pub now: jiff::Timestamp,
    /// Worker threads for parsing and judging.
    pub jobs: usize,
    /// Find where each finding's variable is in its file (for SARIF): a second read of
    /// every document, so only when asked.
    pub locate: bool,
}

/// ConfigMaps and Secrets of the input, by kind and name. A reference matches an object
/// in the same namespace, or one without a namespace, or — when the workload names no
/// namespace — the only object of that name.
#[derive(Debug, Default)]
pub struct Index {
    /// ConfigMaps, then Secrets: name → (namespace, data) of each object with that name.
    objects: [HashMap<String, Vec<Scoped>>; 2],
}

type Scoped = (Option<String>, SourceData);

fn slot(kind: SourceKind) -> usize {
    match kind {
        SourceKind::ConfigMap => 0,
        SourceKind::Secret => 1,
    }
}

impl Index {
    pub fn add(&mut self, object: &Object) {
        let (kind, metadata, data) = match object {
            Object::ConfigMap { metadata, data } => (SourceKind::ConfigMap, metadata, data),
            Object::Secret { metadata, data } => (SourceKind::Secret, metadata, data),
            _ => return,
        };
        let Some(name) = &metadata.name else { return };
        self.objects[slot(kind)]
            .entry(name.clone())
            .or_default()
            .push((metadata.namespace.clone(), data.clone()));
    }
}

impl ValueSource for Index {
    fn lookup(&self, kind: SourceKind, namespace: Option<&str>, name: &str) -> Lookup<'_> {
        let Some(candidates) = self.objects[slot(kind)].get(name) else {
            return Lookup::Unknown;
        };
        let exact = candidates.iter().find(|(ns, _)| ns.as_deref() == namespace);
        let unscoped = || candidates.iter().find(|(ns, _)| ns.is_none());
        let only = || (namespace.is_none() && candidates.len() == 1).then(|| &candidates[0]);
        match exact.or_else(unscoped).or_else(only) {
            Some((_, data)) => Lookup::Found(data),
            // The CLI only sees its input: anything else is unknown, never missing.
            None => Lookup::Unknown,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FindingOut {
    pub code: policy::Code,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// Where the variable's value came from: `literal value`, `ConfigMap name/key`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The application a profile recognised (docs/applications.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<&'static str>,
    pub message: String,
    pub fix: String,
}

#[derive(Debug, Serialize)]
pub struct ContainerOut {
    pub name: String,
    pub list: policy::ContainerList,
    pub client: bool,
    pub verdict: Verdict,
    pub findings: Vec<FindingOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ExemptionOut {
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ObjectOut {
    pub source: String,
    pub document: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub verdict: Verdict,
    pub containers: Vec<ContainerOut>,
    pub findings: Vec<FindingOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<ExemptionOut>,
    /// Where things are in the source, when asked for (`Options::locate`).
    #[serde(skip)]
    pub spans: Option<crate::locate::Spans>,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub objects: Vec<ObjectOut>,
    pub errors: Vec<InputError>,
    #[serde(skip)]
    pub denied: bool,
}

impl Outcome {
    /// 0: nothing denied; 1: a finding is denied; 2: some input was unusable.
    pub fn exit_code(&self) -> i32 {
        if !self.errors.is_empty() {
            2
        } else if self.denied {
            1
        } else {
            0
        }
    }
}

/// Runs `f` over `items` on `jobs` threads, keeping the order of `items`.
pub fn parallel<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.clamp(1, items.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Parses every input (stdin at most once).
pub fn load(paths: &[PathBuf], jobs: usize, locate: bool) -> (Vec<Document>, Vec<InputError>) {
    let (sources, mut errors) = input::collect(paths);
    let mut stdin_text: Option<Result<String, InputError>> = None;
    if sources.contains(&Source::Stdin) {
        stdin_text = Some(input::read(&Source::Stdin));
    }
    let parsed = parallel(&sources, jobs, |source| {
        let text = match source {
            Source::Stdin => stdin_text.clone().unwrap_or_else(|| input::read(source)),
            Source::File(_) => input::read(source),
        };
        match text {
            Ok(text) => {
                let (mut docs, errors) = input::parse(source, &text);
                if locate {
                    input::locate(source, &text, &mut docs);
                }
                (docs, errors)
            }
            Err(e) => (Vec::new(), vec![e]),
        }
    });
    let mut docs = Vec::new();
    for (d, e) in parsed {
        docs.extend(d);
        errors.extend(e);
    }
    (docs, errors)
}

/// Judges loaded documents, references resolved among them.
pub fn judge(docs: &[Document], load_errors: &[InputError], opts: &Options) -> Outcome {
    let mut index = Index::default();
    for d in docs {
        index.add(&d.object);
    }
    judge_with(docs, &index, load_errors.to_vec(), opts)
}

/// Judges the workloads of `docs`, references resolved from `sources`.
pub fn judge_with(
    docs: &[Document],
    sources: &dyn ValueSource,
    errors: Vec<InputError>,
    opts: &Options,
) -> Outcome {
    let ctx = Context {
        settings: &opts.settings,
        sources,
        now: opts.now,
    };
    let workloads: Vec<(&Document, &policy::Workload)> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::Workload(w) => Some((d, &**w)),
            _ => None,
        })
        .collect();
    let objects: Vec<ObjectOut> = parallel(&workloads, opts.jobs, |(d, w)| {
        let report = policy::judge(w.view(), &ctx);
        object_out(d, w, &report)
    });
    let denied = objects.iter().any(|o| o.verdict == Verdict::Violation);
    Outcome {
        objects,
        errors,
        denied,
    }
}

pub fn check(paths: &[PathBuf], opts: &Options) -> Outcome {
    let (docs, errors) = load(paths, opts.jobs, opts.locate);
    judge(&docs, &errors, opts)
}

fn finding_out(f: &Finding<'_>, container: Option<&str>) -> FindingOut {
    FindingOut {
        code: f.code,
        severity: f.severity,
        variable: f.variable.as_ref().map(|v| v.to_string()),
        source: f.origin.map(|o| o.to_string()),
        application: f.application,
        message: f.message(container),
        fix: f.fix(),
    }
}

fn notes_out(notes: &[Note<'_>]) -> Vec<String> {
    notes.iter().map(Note::message).collect()
}

fn container_out(c: &ContainerReport<'_>) -> ContainerOut {
    ContainerOut {
        name: c.name.to_string(),
        list: c.list,
        client: c.client,
        verdict: c.verdict(),
        findings: c
            .findings
            .iter()
            .map(|f| finding_out(f, Some(c.name)))
            .collect(),
        notes: notes_out(&c.notes),
    }
}

fn object_out(d: &Document, w: &policy::Workload, report: &Report<'_>) -> ObjectOut {
    let containers: Vec<ContainerOut> = report.containers.iter().map(container_out).collect();
    let verdict = match report.worst() {
        Some(Severity::Deny) => Verdict::Violation,
        Some(Severity::Warn) => Verdict::Warning,
        _ if containers.iter().any(|c| c.verdict == Verdict::Exempt) => Verdict::Exempt,
        _ => Verdict::Pass,
    };
    ObjectOut {
        source: d.source.clone(),
        document: d.document,
        item: d.item,
        kind: w.kind.to_string(),
        namespace: w.metadata.namespace.clone(),
        name: w
            .metadata
            .name
            .clone()
            .or_else(|| w.metadata.generate_name.clone()),
        verdict,
        containers,
        findings: report
            .findings
            .iter()
            .map(|f| finding_out(f, None))
            .collect(),
        notes: notes_out(&report.notes),
        exemption: report.exemption.as_ref().map(|e| ExemptionOut {
            reason: e.reason.to_string(),
            containers: e
                .containers
                .as_ref()
                .map(|c| c.iter().map(|s| s.to_string()).collect()),
            until: e.until.map(|u| u.to_string()),
        }),
        spans: d.spans.clone(),
    }
}

fn mark(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "ok",
        Verdict::Violation => "DENY",
        Verdict::Warning => "warn",
        Verdict::Exempt => "exempt",
    }
}

/// Verdicts counted over containers, for the summary line.
#[derive(Debug, Default)]
pub struct Tally {
    pub objects: usize,
    /// Containers by verdict (`Verdict as usize`).
    pub containers: [usize; 4],
    pub clients: usize,
}

impl Tally {
    /// Containers with this verdict.
    pub fn count(&self, v: Verdict) -> usize {
        self.containers[v as usize]
    }

    /// `N objects, N containers (N PostgreSQL clients): N denied, …`.
    pub fn summary(&self) -> String {
        format!(
            "{} objects, {} containers ({} PostgreSQL clients): {} denied, {} warned, {} exempt, {} passed",
            self.objects,
            self.containers.iter().sum::<usize>(),
            self.clients,
            self.count(Verdict::Violation),
            self.count(Verdict::Warning),
            self.count(Verdict::Exempt),
            self.count(Verdict::Pass),
        )
    }
}

/// `namespace/name`, or the name alone, or `(unnamed)`.
pub fn object_id(o: &ObjectOut) -> String {
    match (&o.namespace, &o.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        _ => "(unnamed)".to_string(),
    }
}

/// One object's lines under `heading`, each indented by `indent` more than the details
/// of a top-level object, counted into `tally`.
pub fn render_object(
    s: &mut String,
    o: &ObjectOut,
    heading: &str,
    indent: &str,
    tally: &mut Tally,
) {
    use std::fmt::Write;
    tally.objects += 1;
    let _ = writeln!(s, "{indent}{heading}: {}", mark(o.verdict));
    for f in &o.findings {
        let _ = writeln!(s, "{indent}  {} {}", mark_severity(f.severity), f.message);
    }
    for n in &o.notes {
        let _ = writeln!(s, "{indent}  note: {n}");
    }
    if let Some(e) = &o.exemption {
        let _ = writeln!(s, "{indent}  exemption: {}", e.reason);
    }
    for c in &o.containers {
        tally.clients += usize::from(c.client);
        tally.containers[c.verdict as usize] += 1;
        if !c.client && c.findings.is_empty() {
            continue;
        }
        if c.findings.is_empty() {
            let why = if c.notes.is_empty() {
                "every target verifies the server (verify-full with a root certificate)"
            } else {
                "allowed, see the notes"
            };
            let _ = writeln!(s, "{indent}  ok container {}: {why}", c.name);
        }
        for f in &c.findings {
            let m = if c.verdict == Verdict::Exempt {
                "exempt"
            } else {
                mark_severity(f.severity)
            };
            let _ = writeln!(s, "{indent}  {m} {}", f.message);
        }
        for n in &c.notes {
            let _ = writeln!(s, "{indent}  note: container {}: {n}", c.name);
        }
    }
}

/// Human-readable report.
pub fn render_human(outcome: &Outcome) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let mut tally = Tally::default();
    for o in &outcome.objects {
        let place = match o.item {
            Some(i) => format!("{}: document {}, item {i}", o.source, o.document),
            None => format!("{}: document {}", o.source, o.document),
        };
        let heading = format!("{place}: {} {}", o.kind, object_id(o));
        render_object(&mut s, o, &heading, "", &mut tally);
    }
    for e in &outcome.errors {
        let _ = writeln!(s, "error: {e}");
    }
    let _ = writeln!(
        s,
        "{}; {} input errors",
        tally.summary(),
        outcome.errors.len()
    );
    s
}

fn mark_severity(s: Severity) -> &'static str {
    match s {
        Severity::Deny => "DENY",
        Severity::Warn => "warn",
        Severity::Allow => "allow",
    }
}
