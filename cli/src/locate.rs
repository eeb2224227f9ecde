//! Where things are in a manifest's text, for SARIF: the line and column of each
//! container, `env` entry, `envFrom` list, `command`/`args` element and the annotations.
//! Found only when asked, by reading each document again into a small model whose names
//! carry their positions (serde-saphyr's `Spanned`), with the same budgets as the first
//! read. A document that does not fit the model keeps only its first line.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

/// A 1-based line and column in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// The positions of one object (a document, or an item of a `List`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans {
    /// Where the object starts.
    pub object: Option<Position>,
    /// The Pod's annotations (the template's, for workloads), where exemptions live.
    pub annotations: Option<Position>,
    pub containers: Vec<ContainerSpans>,
}

/// The positions in one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpans {
    pub name: String,
    pub at: Option<Position>,
    /// `env` entries: the variable's name and where its `name:` value is.
    pub env: Vec<(String, Position)>,
    pub env_from: Option<Position>,
    pub command: Vec<Position>,
    pub args: Vec<Position>,
}

impl Spans {
    /// Where a finding about `variable` in `container` points: the variable's `env` entry
    /// (the last, which wins), its `command`/`args` element, the container's `envFrom` (a
    /// variable from a ConfigMap or Secret), the container, or the object; for a finding
    /// about the object itself, its annotations.
    pub fn find(&self, container: Option<&str>, variable: Option<&str>) -> Option<Position> {
        let Some(c) = container.and_then(|n| self.containers.iter().find(|c| c.name == n)) else {
            return self.annotations.or(self.object);
        };
        let element = |list: &[Position], prefix: &str| {
            let i: usize = variable?
                .strip_prefix(prefix)?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            list.get(i).copied()
        };
        if variable.is_some_and(|v| v.starts_with("command[") || v.starts_with("args[")) {
            return (element(&c.command, "command["))
                .or_else(|| element(&c.args, "args["))
                .or(c.at)
                .or(self.object);
        }
        let entry = variable.and_then(|v| c.env.iter().rev().find(|(n, _)| n == v));
        (entry.map(|(_, p)| *p))
            .or(c.env_from)
            .or(c.at)
            .or(self.object)
    }
}

/// The positions of a document's objects: one, or one per item of a `List`. Lines count
/// from `first_line` (0-based), where the document starts in its file. A document that
/// does not fit the model gets one entry with only its first line.
pub fn document(text: &str, first_line: usize, mut options: serde_saphyr::Options) -> Vec<Spans> {
    // As the first read: the last of duplicate keys wins.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
    let Ok(root) = serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options) else {
        let start = text
            .lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        return vec![Spans {
            object: start.map(|n| Position {
                line: (first_line + n + 1) as u64,
                column: 1,
            }),
            ..Spans::default()
        }];
    };
    let at = |s: &serde_saphyr::Location| {
        (s.line() > 0).then(|| Position {
            line: s.line() + first_line as u64,
            column: s.column(),
        })
    };
    let spans = |node: &Spanned<Node>| node.value.spans(at(&node.referenced), &at);
    match &root.value.items {
        Some(items) => items.iter().map(spans).collect(),
        None => vec![spans(&root)],
    }
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    metadata: Option<Meta>,
    #[serde(default)]
    spec: Option<Box<Spec>>,
    /// A PodTemplate's.
    #[serde(default)]
    template: Option<Box<Template>>,
    /// A `List`'s.
    #[serde(default)]
    items: Option<Vec<Spanned<Node>>>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    annotations: Option<Spanned<IgnoredAny>>,
}

/// A Pod spec, or a spec that holds a Pod template (workloads) or a Job template (CronJob).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    containers: Option<Vec<ContainerNode>>,
    #[serde(default)]
    init_containers: Option<Vec<ContainerNode>>,
    #[serde(default)]
    ephemeral_containers: Option<Vec<ContainerNode>>,
    #[serde(default)]
    template: Option<Box<Template>>,
    #[serde(default)]
    job_template: Option<Box<Template>>,
}

#[derive(Deserialize)]
struct Template {
    #[serde(default)]
    metadata: Option<Meta>,
    #[serde(default)]
    spec: Option<Box<Spec>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerNode {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    env: Option<Vec<EnvNode>>,
    #[serde(default)]
    env_from: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    command: Option<Vec<Spanned<IgnoredAny>>>,
    #[serde(default)]
    args: Option<Vec<Spanned<IgnoredAny>>>,
}

#[derive(Deserialize)]
struct EnvNode {
    name: Spanned<String>,
}

type At<'f> = &'f dyn Fn(&serde_saphyr::Location) -> Option<Position>;

impl Node {
    fn spans(&self, object: Option<Position>, at: At<'_>) -> Spans {
        // The Pod spec: the object's own (a Pod), its template's, or its Job template's.
        let mut pod_meta = self.metadata.as_ref();
        let mut spec = self.spec.as_deref();
        let mut template = self.template.as_deref();
        loop {
            let next = template.or_else(|| spec.and_then(|s| s.template.as_deref()));
            let next = next.or_else(|| spec.and_then(|s| s.job_template.as_deref()));
            let Some(t) = next else { break };
            pod_meta = t.metadata.as_ref().or(pod_meta);
            spec = t.spec.as_deref();
            template = None;
        }
        let annotations = pod_meta
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| at(&a.referenced));
        let containers = spec.map_or_else(Vec::new, |s| {
            [&s.init_containers, &s.containers, &s.ephemeral_containers]
                .into_iter()
                .flatten()
                .flatten()
                .map(|c| c.spans(at))
                .collect()
        });
        Spans {
            object,
            annotations,
            containers,
        }
    }
}

impl ContainerNode {
    fn spans(&self, at: At<'_>) -> ContainerSpans {
        let positions = |list: &Option<Vec<Spanned<IgnoredAny>>>| {
            (list.iter().flatten())
                .filter_map(|s| at(&s.referenced))
                .collect()
        };
        ContainerSpans {
            name: self
                .name
                .as_ref()
                .map_or_else(String::new, |n| n.value.clone()),
            at: self.name.as_ref().and_then(|n| at(&n.referenced)),
            env: (self.env.iter().flatten())
                .filter_map(|e| Some((e.name.value.clone(), at(&e.name.referenced)?)))
                .collect(),
            env_from: self.env_from.as_ref().and_then(|e| at(&e.referenced)),
            command: positions(&self.command),
            args: positions(&self.args),
        }
    }
}
