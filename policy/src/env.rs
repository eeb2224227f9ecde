//! A container's effective environment, computed as the kubelet computes it
//! (`makeEnvironmentVariables`, `third_party/forked/golang/expansion`).
//!
//! `envFrom` sources apply first, in order (later sources win, `prefix` prepended); then
//! `env` entries in order (`env` overrides `envFrom`, a later duplicate wins). Only literal,
//! non-empty `env[].value`s are expanded. Values the engine cannot see are never guessed:
//! they become [`HIDDEN`] spans, and an unresolved `envFrom` source is kept as an
//! [`OpenSource`] that may define any name with its prefix.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar};

use crate::hosts::{HIDDEN, HIDDEN_STR, NON_LOOPBACK_IP, NON_LOOPBACK_IP_STR};

/// At most this many bytes of one value come from `$(VAR)` references. The kubelet expands
/// a reference to the *expanded* value of an earlier variable, so a chain of variables
/// that each reference the previous one twice doubles at every step: a 4 KB Pod spec can
/// ask for gigabytes. Beyond the limit a reference becomes a hidden span, judged as a value
/// that cannot be seen (docs/limits.md).
pub(crate) const MAX_EXPANDED_VALUE: usize = 64 * 1024;

/// At most this many bytes come from `$(VAR)` references in one whole Pod spec.
pub(crate) const MAX_EXPANDED_POD: usize = 1024 * 1024;

/// What is left of a Pod's `$(VAR)` expansion allowance ([`MAX_EXPANDED_POD`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    left: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            left: MAX_EXPANDED_POD,
        }
    }
}

/// The kind of object a reference points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

impl SourceKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        }
    }
}

/// Key/value data of a ConfigMap or Secret as a source exposes it. A source may hand out
/// sanitized values (passwords dropped): the engine only needs TLS settings and hosts.
pub type SourceData = BTreeMap<String, String>;

/// The answer of a [`ValueSource`].
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'s> {
    /// The object's data.
    Found(&'s SourceData),
    /// Known not to exist (a synced cache): an optional reference sets nothing, a required
    /// one keeps the container from starting.
    Missing,
    /// Cannot be seen: the value stays hidden.
    Unknown,
}

/// Where referenced ConfigMaps and Secrets come from: the CLI's input, the webhook's
/// caches, the operator's. Implementations must not guess.
pub trait ValueSource: Sync {
    /// The data of `kind` `name` in `namespace` (`None`: the Pod's own).
    fn lookup(&self, kind: SourceKind, namespace: Option<&str>, name: &str) -> Lookup<'_>;
}

/// A source that can see nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSources;

impl ValueSource for NoSources {
    fn lookup(&self, _: SourceKind, _: Option<&str>, _: &str) -> Lookup<'_> {
        Lookup::Unknown
    }
}

/// Where a variable's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    Literal,
    /// `valueFrom.configMapKeyRef` / `secretKeyRef`.
    KeyRef {
        kind: SourceKind,
        name: &'a str,
        key: &'a str,
    },
    /// `envFrom.configMapRef` / `secretRef` (the key without the prefix).
    EnvFrom {
        kind: SourceKind,
        name: &'a str,
        key: &'a str,
    },
    FieldRef {
        path: &'a str,
    },
    ResourceFieldRef,
}

impl Origin<'_> {
    pub fn is_secret(&self) -> bool {
        matches!(
            self,
            Origin::KeyRef {
                kind: SourceKind::Secret,
                ..
            } | Origin::EnvFrom {
                kind: SourceKind::Secret,
                ..
            }
        )
    }
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Literal => f.write_str("literal value"),
            Origin::KeyRef { kind, name, key } => write!(f, "{} {name}/{key}", kind.as_str()),
            Origin::EnvFrom { kind, name, key } => {
                write!(f, "{} {name}/{key} via envFrom", kind.as_str())
            }
            Origin::FieldRef { path } => write!(f, "fieldRef {path}"),
            Origin::ResourceFieldRef => f.write_str("resourceFieldRef"),
        }
    }
}

/// Whether a variable's value can be seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visibility {
    /// Known text (possibly with hidden spans from `$(VAR)` references).
    Visible,
    /// Its ConfigMap/Secret could not be read; `not_found` when it is known to be absent.
    Unresolved { not_found: bool },
    /// Known at run time only (`spec.nodeName`, `resourceFieldRef`).
    Opaque,
}

#[derive(Debug, Clone)]
pub(crate) struct Var<'a> {
    pub name: Cow<'a, str>,
    /// The value, with [`HIDDEN`]/[`NON_LOOPBACK_IP`] spans for what cannot be seen.
    pub value: Cow<'a, str>,
    pub origin: Origin<'a>,
    pub visibility: Visibility,
    /// Index of the `envFrom` source that set it; `None` for `env`.
    pub env_from: Option<usize>,
    /// Defined more than once in `env` (the last wins).
    pub redefined: bool,
}

impl Var<'_> {
    /// Visible, with no hidden span: the engine reads the value as it is.
    pub(crate) fn is_readable(&self) -> bool {
        self.visibility == Visibility::Visible && !crate::hosts::has_hidden(&self.value)
    }

    /// The whole value is hidden.
    pub(crate) fn is_hidden(&self) -> bool {
        self.visibility != Visibility::Visible
            || (!self.value.is_empty() && self.value.chars().all(|c| c == HIDDEN))
    }
}

/// An `envFrom` source that could not be read: it may define any name with its prefix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenSource<'a> {
    pub index: usize,
    pub prefix: &'a str,
    pub kind: SourceKind,
    pub name: &'a str,
    pub not_found: bool,
}

/// The answer to "what is `NAME` in this container?".
#[derive(Debug, Clone, Copy)]
pub(crate) enum Get<'e, 'a> {
    Unset,
    Set(&'e Var<'a>),
    /// An unresolved `envFrom` source may define it (over any visible value).
    MaybeSet(&'e OpenSource<'a>),
}

/// What the kubelet knows about the Pod when it resolves `fieldRef`s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PodInfo<'a> {
    pub namespace: Option<&'a str>,
    /// Only set for Pods: a template's Pods get generated names.
    pub name: Option<&'a str>,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub annotations: Option<&'a BTreeMap<String, String>>,
    pub service_account: Option<&'a str>,
    pub service_links: bool,
}

/// The effective environment of one container.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env<'a> {
    pub vars: Vec<Var<'a>>,
    pub open: Vec<OpenSource<'a>>,
    /// Variables whose `$(VAR)` expansion went over a limit (in part hidden).
    pub over_limit: Vec<Cow<'a, str>>,
    /// Where each name is in `vars`, once there are [`INDEXED`] of them: building stays
    /// linear in the number of variables, and the few variables of most containers are
    /// found by a scan without hashing.
    index: Option<HashMap<Cow<'a, str>, usize>>,
}

/// From this many variables on, names are looked up through an index.
const INDEXED: usize = 32;

/// A Secret value a cache kept no text of (`redact::secret_value`) is hidden, not the
/// visible text its marker would be scrubbed into.
fn kept_visibility(value: &str) -> Visibility {
    if value == HIDDEN_STR {
        Visibility::Unresolved { not_found: false }
    } else {
        Visibility::Visible
    }
}

/// Replaces the engine's own marker characters in user text, so no input can forge a
/// hidden span.
fn scrub(v: &str) -> Cow<'_, str> {
    // ASCII text (nearly every value) cannot hold the markers; the check is word-wide.
    if v.is_ascii() || !v.contains([HIDDEN, NON_LOOPBACK_IP]) {
        Cow::Borrowed(v)
    } else {
        Cow::Owned(v.replace([HIDDEN, NON_LOOPBACK_IP], "\u{FFFD}"))
    }
}

impl<'a> Env<'a> {
    /// Computes the effective environment of a container.
    pub(crate) fn build(
        env_from: &'a [EnvFromSource],
        env: &'a [EnvVar],
        pod: &PodInfo<'a>,
        sources: &'a dyn ValueSource,
        budget: &mut Budget,
    ) -> Env<'a> {
        let mut out = Env {
            vars: Vec::with_capacity(env.len()),
            ..Env::default()
        };
        for (index, source) in env_from.iter().enumerate() {
            let (kind, name, optional) = if let Some(r) = &source.config_map_ref {
                (SourceKind::ConfigMap, r.name.as_str(), r.optional)
            } else if let Some(r) = &source.secret_ref {
                (SourceKind::Secret, r.name.as_str(), r.optional)
            } else {
                continue;
            };
            let prefix = source.prefix.as_deref().unwrap_or("");
            match sources.lookup(kind, pod.namespace, name) {
                Lookup::Found(data) => {
                    for (key, value) in data {
                        let var_name = if prefix.is_empty() {
                            Cow::Borrowed(key.as_str())
                        } else {
                            Cow::Owned(format!("{prefix}{key}"))
                        };
                        out.insert(Var {
                            name: var_name,
                            value: scrub(value),
                            origin: Origin::EnvFrom { kind, name, key },
                            visibility: kept_visibility(value),
                            env_from: Some(index),
                            redefined: false,
                        });
                    }
                }
                Lookup::Missing if optional == Some(true) => {}
                found => out.open.push(OpenSource {
                    index,
                    prefix,
                    kind,
                    name,
                    not_found: matches!(found, Lookup::Missing),
                }),
            }
        }
        for var in env {
            let resolved = match (&var.value, &var.value_from) {
                (Some(v), _) if !v.is_empty() => {
                    let (value, over) = out.expand(&scrub(v), pod, budget);
                    if over {
                        out.over_limit.push(Cow::Borrowed(var.name.as_str()));
                    }
                    Some((value, Origin::Literal, Visibility::Visible))
                }
                (_, Some(from)) => resolve_value_from(from, pod, sources),
                _ => Some((Cow::Borrowed(""), Origin::Literal, Visibility::Visible)),
            };
            if let Some((value, origin, visibility)) = resolved {
                out.insert(Var {
                    name: Cow::Borrowed(var.name.as_str()),
                    value,
                    origin,
                    visibility,
                    env_from: None,
                    redefined: false,
                });
            }
        }
        out
    }

    fn position(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.vars.iter().position(|v| v.name == name),
        }
    }

    fn insert(&mut self, var: Var<'a>) {
        match self.position(&var.name) {
            Some(i) => {
                let existing = &mut self.vars[i];
                let redefined =
                    existing.redefined || (existing.env_from.is_none() && var.env_from.is_none());
                *existing = Var { redefined, ..var };
            }
            None => {
                if let Some(index) = &mut self.index {
                    index.insert(var.name.clone(), self.vars.len());
                }
                self.vars.push(var);
                if self.index.is_none() && self.vars.len() == INDEXED {
                    let index = self
                        .vars
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v.name.clone(), i))
                        .collect();
                    self.index = Some(index);
                }
            }
        }
    }

    /// Looks a name up, taking unresolved `envFrom` sources into account.
    pub(crate) fn get(&self, name: &str) -> Get<'_, 'a> {
        let var = self.position(name).map(|i| &self.vars[i]);
        let after = match var {
            Some(v) => match v.env_from {
                None => return Get::Set(v),
                Some(i) => Some(i),
            },
            None => None,
        };
        let open = self
            .open
            .iter()
            .rev()
            .find(|o| after.is_none_or(|i| o.index > i) && name.starts_with(o.prefix));
        match (open, var) {
            (Some(o), _) => Get::MaybeSet(o),
            (None, Some(v)) => Get::Set(v),
            (None, None) => Get::Unset,
        }
    }

    /// `$(VAR)` expansion exactly as the kubelet's `expansion.Expand`: `$$` is `$`, an
    /// unclosed `$(` stays literal, an undefined name stays literal as `$(NAME)`. A
    /// reference that would take the value over [`MAX_EXPANDED_VALUE`] or the Pod over its
    /// budget becomes a hidden span instead (the second result says so).
    #[inline]
    pub(crate) fn expand<'v>(
        &self,
        input: &Cow<'v, str>,
        pod: &PodInfo<'_>,
        budget: &mut Budget,
    ) -> (Cow<'v, str>, bool) {
        if !input.contains('$') {
            return (input.clone(), false);
        }
        let mut over = false;
        let b = input.as_bytes();
        let mut out = String::with_capacity(b.len());
        let mut checkpoint = 0;
        let mut cursor = 0;
        while cursor < b.len() {
            if b[cursor] == b'$' && cursor + 1 < b.len() {
                out.push_str(&input[checkpoint..cursor]);
                let rest = &input[cursor + 1..];
                let advance = match rest.as_bytes()[0] {
                    b'$' => {
                        out.push('$');
                        1
                    }
                    b'(' => match rest[1..].find(')') {
                        Some(close) => {
                            let name = &rest[1..1 + close];
                            match self.reference(name, pod) {
                                Some(v) => {
                                    let room = MAX_EXPANDED_VALUE
                                        .saturating_sub(out.len())
                                        .min(budget.left);
                                    if v.len() <= room {
                                        out.push_str(&v);
                                        budget.left -= v.len();
                                    } else {
                                        out.push(HIDDEN);
                                        over = true;
                                    }
                                }
                                None => {
                                    out.push_str("$(");
                                    out.push_str(name);
                                    out.push(')');
                                }
                            }
                            close + 2
                        }
                        None => {
                            out.push_str("$(");
                            1
                        }
                    },
                    _ => {
                        // `$` and the next byte are copied as they are.
                        out.push('$');
                        0
                    }
                };
                cursor += advance;
                checkpoint = cursor + 1;
            }
            cursor += 1;
        }
        out.push_str(&input[checkpoint.min(b.len())..]);
        (Cow::Owned(out), over)
    }

    /// The value a `$(NAME)` reference expands to, or `None` to leave it literal.
    fn reference(&self, name: &str, pod: &PodInfo<'_>) -> Option<Cow<'_, str>> {
        match self.get(name) {
            Get::Set(v) if v.visibility == Visibility::Visible => Some(Cow::Borrowed(&v.value)),
            Get::Set(_) | Get::MaybeSet(_) => Some(Cow::Borrowed(HIDDEN_STR)),
            Get::Unset => service_link(name, pod).map(Cow::Borrowed),
        }
    }
}

/// Service link variables (`<SVC>_SERVICE_HOST`, `<SVC>_PORT…`) the kubelet may define:
/// their values are unknown, but a host is a cluster IP, never loopback.
fn service_link(name: &str, pod: &PodInfo<'_>) -> Option<&'static str> {
    if !(pod.service_links || name.starts_with("KUBERNETES_")) {
        return None;
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
    {
        return None;
    }
    if name.ends_with("_SERVICE_HOST") || (name.contains("_PORT_") && name.ends_with("_ADDR")) {
        Some(NON_LOOPBACK_IP_STR)
    } else if name.ends_with("_SERVICE_PORT")
        || name.contains("_SERVICE_PORT_")
        || name.ends_with("_PORT")
        || name.contains("_PORT_")
    {
        Some(HIDDEN_STR)
    } else {
        None
    }
}

type Resolved<'a> = (Cow<'a, str>, Origin<'a>, Visibility);

fn resolve_value_from<'a>(
    from: &'a k8s_openapi::api::core::v1::EnvVarSource,
    pod: &PodInfo<'a>,
    sources: &'a dyn ValueSource,
) -> Option<Resolved<'a>> {
    let key_ref = |kind, name: &'a str, key: &'a str, optional: Option<bool>| {
        let origin = Origin::KeyRef { kind, name, key };
        let hidden = |not_found| {
            Some((
                Cow::Borrowed(HIDDEN_STR),
                origin,
                Visibility::Unresolved { not_found },
            ))
        };
        match sources.lookup(kind, pod.namespace, name) {
            Lookup::Found(data) => match data.get(key) {
                Some(v) => Some((scrub(v), origin, kept_visibility(v))),
                None if optional == Some(true) => None,
                None => hidden(true),
            },
            Lookup::Missing if optional == Some(true) => None,
            Lookup::Missing => hidden(true),
            Lookup::Unknown => hidden(false),
        }
    };
    if let Some(r) = &from.config_map_key_ref {
        return key_ref(SourceKind::ConfigMap, &r.name, &r.key, r.optional);
    }
    if let Some(r) = &from.secret_key_ref {
        return key_ref(SourceKind::Secret, &r.name, &r.key, r.optional);
    }
    if let Some(r) = &from.field_ref {
        let path = r.field_path.as_str();
        let origin = Origin::FieldRef { path };
        let known = |v: Option<&'a str>| match v {
            Some(v) => (scrub(v), origin, Visibility::Visible),
            None => (Cow::Borrowed(HIDDEN_STR), origin, Visibility::Opaque),
        };
        let subscript = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|s| s.strip_prefix("['").or_else(|| s.strip_prefix("[\"")))
                .and_then(|s| s.strip_suffix("']").or_else(|| s.strip_suffix("\"]")))
        };
        return Some(match path {
            "metadata.namespace" => known(pod.namespace),
            "metadata.name" => known(pod.name),
            "spec.serviceAccountName" => known(Some(pod.service_account.unwrap_or("default"))),
            "status.podIP" | "status.hostIP" | "status.podIPs" | "status.hostIPs" => (
                Cow::Borrowed(NON_LOOPBACK_IP_STR),
                origin,
                Visibility::Visible,
            ),
            _ => {
                if let Some(k) = subscript("metadata.labels") {
                    known(Some(
                        pod.labels.and_then(|m| m.get(k)).map_or("", String::as_str),
                    ))
                } else if let Some(k) = subscript("metadata.annotations") {
                    known(Some(
                        pod.annotations
                            .and_then(|m| m.get(k))
                            .map_or("", String::as_str),
                    ))
                } else {
                    known(None)
                }
            }
        });
    }
    if from.resource_field_ref.is_some() {
        return Some((
            Cow::Borrowed(HIDDEN_STR),
            Origin::ResourceFieldRef,
            Visibility::Opaque,
        ));
    }
    Some((Cow::Borrowed(""), Origin::Literal, Visibility::Visible))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvVarSource, ObjectFieldSelector,
        SecretEnvSource, SecretKeySelector,
    };

    #[derive(Default)]
    struct Map(BTreeMap<(SourceKind, String), SourceData>, bool);
    impl ValueSource for Map {
        fn lookup(&self, kind: SourceKind, _: Option<&str>, name: &str) -> Lookup<'_> {
            match self.0.get(&(kind, name.to_string())) {
                Some(d) => Lookup::Found(d),
                None if self.1 => Lookup::Missing,
                None => Lookup::Unknown,
            }
        }
    }
    fn data(kv: &[(&str, &str)]) -> SourceData {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    fn lit(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }
    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(src),
        }
    }
    fn secret_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        }
    }
    fn cm_from(name: &str, prefix: Option<&str>) -> EnvFromSource {
        EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: name.into(),
                optional: None,
            }),
            prefix: prefix.map(Into::into),
            secret_ref: None,
        }
    }
    fn secret_from(name: &str, prefix: Option<&str>) -> EnvFromSource {
        EnvFromSource {
            config_map_ref: None,
            prefix: prefix.map(Into::into),
            secret_ref: Some(SecretEnvSource {
                name: name.into(),
                optional: None,
            }),
        }
    }
    /// The environment of `env` alone (no sources, no Pod facts, a fresh budget).
    fn plain(env: &[EnvVar]) -> Env<'_> {
        Env::build(
            &[],
            env,
            &PodInfo::default(),
            &NoSources,
            &mut Budget::default(),
        )
    }

    fn value<'a>(env: &'a Env<'_>, name: &str) -> Option<&'a str> {
        match env.get(name) {
            Get::Set(v) => Some(v.value.as_ref()),
            _ => None,
        }
    }

    #[test]
    fn env_from_order_prefix_and_env_override() {
        let mut m = Map::default();
        m.0.insert(
            (SourceKind::ConfigMap, "a".into()),
            data(&[("PGSSLMODE", "disable"), ("HOST", "a")]),
        );
        m.0.insert(
            (SourceKind::ConfigMap, "b".into()),
            data(&[("PGSSLMODE", "require")]),
        );
        m.0.insert((SourceKind::ConfigMap, "c".into()), data(&[("HOST", "c")]));
        let ef = vec![
            cm_from("a", None),
            cm_from("b", None),
            cm_from("c", Some("DB_")),
        ];
        let env = vec![lit("X", "1"), lit("X", "2"), lit("HOST", "env")];
        let pod = PodInfo::default();
        let e = Env::build(&ef, &env, &pod, &m, &mut Budget::default());
        assert_eq!(value(&e, "PGSSLMODE"), Some("require"));
        assert_eq!(value(&e, "DB_HOST"), Some("c"));
        assert_eq!(value(&e, "HOST"), Some("env"));
        assert_eq!(value(&e, "X"), Some("2"));
        let x = e.vars.iter().find(|v| v.name == "X").expect("X");
        assert!(x.redefined);
        let host = e.vars.iter().find(|v| v.name == "HOST").expect("HOST");
        assert!(
            !host.redefined,
            "env over envFrom is layering, not a duplicate"
        );
        assert_eq!(
            e.vars
                .iter()
                .find(|v| v.name == "PGSSLMODE")
                .map(|v| v.origin),
            Some(Origin::EnvFrom {
                kind: SourceKind::ConfigMap,
                name: "b",
                key: "PGSSLMODE"
            })
        );
    }

    /// A chain where each variable references the previous one twice doubles at every
    /// step (the kubelet expands against expanded values): 64 steps would be 2^64 bytes.
    #[test]
    fn an_expansion_bomb_stops_at_the_limits_and_is_hidden_not_guessed() {
        let mut env = vec![lit("V0", "xxxxxxxxxxxxxxxx")];
        for i in 1..64 {
            env.push(lit(
                &format!("V{i}"),
                &format!("$(V{})$(V{})", i - 1, i - 1),
            ));
        }
        env.push(lit("DATABASE_URL", "postgres://$(V63)/db?sslmode=disable"));
        let mut budget = Budget::default();
        let e = Env::build(&[], &env, &PodInfo::default(), &NoSources, &mut budget);
        let total: usize = e.vars.iter().map(|v| v.value.len()).sum();
        assert!(
            total <= MAX_EXPANDED_POD + 64 * 32,
            "{total} bytes expanded"
        );
        // (A hidden marker may follow a value that is at its limit.)
        for v in &e.vars {
            assert!(v.value.len() <= MAX_EXPANDED_VALUE + 64, "{}", v.name);
        }
        // Every step past the limit is (partly) hidden and named; the literal text stays.
        assert_eq!(value(&e, "V1"), Some("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
        let url = value(&e, "DATABASE_URL").expect("set");
        assert!(url.starts_with("postgres://\u{E000}"), "{url:?}");
        assert!(url.ends_with("/db?sslmode=disable"), "{url:?}");
        // The variables where expansion stopped are named; later ones carry the hidden span.
        assert!(e.over_limit.iter().any(|n| n == "V13"));
        assert!(!e.over_limit.iter().any(|n| n == "V12"));
    }

    /// The Pod's budget is shared by its containers: the second container gets what the
    /// first left.
    #[test]
    fn the_expansion_budget_is_per_pod() {
        let big = "y".repeat(MAX_EXPANDED_VALUE / 2);
        let mut env = vec![lit("BIG", &big)];
        for i in 0..40 {
            env.push(lit(&format!("COPY{i}"), "$(BIG)"));
        }
        let mut budget = Budget::default();
        let first = Env::build(&[], &env, &PodInfo::default(), &NoSources, &mut budget);
        let second = Env::build(&[], &env, &PodInfo::default(), &NoSources, &mut budget);
        let copied = |e: &Env<'_>| {
            (0..40)
                .filter(|i| value(e, &format!("COPY{i}")) == Some(big.as_str()))
                .count()
        };
        // 1 MiB holds 32 copies of 32 KiB.
        assert_eq!(copied(&first), 32);
        assert_eq!(copied(&second), 0);
        assert_eq!(second.over_limit.len(), 40);
    }

    /// Names are looked up through an index: a later duplicate replaces the earlier entry,
    /// and 100,000 distinct names are all there, in order.
    #[test]
    fn many_variables_keep_their_order_and_last_duplicate_wins() {
        let env: Vec<EnvVar> = (0..100_000)
            .map(|i| lit(&format!("V{}", i % 50_000), &format!("{i}")))
            .collect();
        let e = plain(&env);
        assert_eq!(e.vars.len(), 50_000);
        assert_eq!(e.vars[7].name, "V7");
        assert_eq!(value(&e, "V7"), Some("50007"));
        assert!(e.vars.iter().all(|v| v.redefined));
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        let mut m = Map::default();
        m.0.insert(
            (SourceKind::ConfigMap, "cm".into()),
            data(&[("HOST", "db")]),
        );
        let ef = vec![cm_from("cm", None)];
        let env = vec![
            lit("A", "a"),
            lit("URL", "postgres://$(HOST)/$(A)?x=$$(A)&y=$(B)&z=$(A"),
            lit("B", "late"),
            lit("DOLLAR", "$$ $x $"),
            lit("SVC", "$(PG_SERVICE_HOST):$(PG_SERVICE_PORT)"),
        ];
        let pod = PodInfo {
            service_links: true,
            ..PodInfo::default()
        };
        let e = Env::build(&ef, &env, &pod, &m, &mut Budget::default());
        assert_eq!(
            value(&e, "URL"),
            Some("postgres://db/a?x=$(A)&y=$(B)&z=$(A")
        );
        assert_eq!(value(&e, "DOLLAR"), Some("$ $x $"));
        assert_eq!(value(&e, "SVC"), Some("\u{E001}:\u{E000}"));
        let no_links = PodInfo::default();
        let e = Env::build(&ef, &env, &no_links, &m, &mut Budget::default());
        assert_eq!(
            value(&e, "SVC"),
            Some("$(PG_SERVICE_HOST):$(PG_SERVICE_PORT)")
        );
    }

    #[test]
    fn hidden_values_and_open_sources() {
        let m = Map::default();
        let ef = vec![secret_from("s", Some("PG"))];
        let env = vec![
            from("PASS", secret_key("s", "p", None)),
            lit("URL", "postgres://u:$(PASS)@$(PGHOST)/db"),
            from("OPT", secret_key("gone", "k", Some(true))),
        ];
        let pod = PodInfo::default();
        let e = Env::build(&ef, &env, &pod, &m, &mut Budget::default());
        assert_eq!(value(&e, "URL"), Some("postgres://u:\u{E000}@\u{E000}/db"));
        assert!(matches!(e.get("PGSSLMODE"), Get::MaybeSet(o) if o.name == "s"));
        assert!(
            matches!(e.get("SSL"), Get::Unset),
            "prefix limits what the source can define"
        );
        let pass = e.vars.iter().find(|v| v.name == "PASS").expect("PASS");
        assert!(pass.is_hidden());
        assert_eq!(pass.visibility, Visibility::Unresolved { not_found: false });
        // CLI semantics: unknown even when optional.
        assert!(e.vars.iter().any(|v| v.name == "OPT" && v.is_hidden()));

        // With a synced cache, a missing optional reference sets nothing.
        let synced = Map(BTreeMap::new(), true);
        let e = Env::build(&ef, &env, &pod, &synced, &mut Budget::default());
        assert!(matches!(e.get("OPT"), Get::Unset));
        let pass = e.vars.iter().find(|v| v.name == "PASS").expect("PASS");
        assert_eq!(pass.visibility, Visibility::Unresolved { not_found: true });
    }

    #[test]
    fn later_resolved_source_overrides_open_one() {
        let mut m = Map::default();
        m.0.insert(
            (SourceKind::ConfigMap, "late".into()),
            data(&[("PGSSLMODE", "verify-full")]),
        );
        let ef = vec![secret_from("s", None), cm_from("late", None)];
        let pod = PodInfo::default();
        let e = Env::build(&ef, &[], &pod, &m, &mut Budget::default());
        assert_eq!(value(&e, "PGSSLMODE"), Some("verify-full"));
        let ef = vec![cm_from("late", None), secret_from("s", None)];
        let e = Env::build(&ef, &[], &pod, &m, &mut Budget::default());
        assert!(matches!(e.get("PGSSLMODE"), Get::MaybeSet(_)));
    }

    #[test]
    fn field_refs() {
        let field = |p: &str| EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: p.into(),
            }),
            ..Default::default()
        };
        let labels: BTreeMap<String, String> = [("app".to_string(), "shop".to_string())].into();
        let pod = PodInfo {
            namespace: Some("prod"),
            labels: Some(&labels),
            ..PodInfo::default()
        };
        let env = vec![
            from("NS", field("metadata.namespace")),
            from("NAME", field("metadata.name")),
            from("APP", field("metadata.labels['app']")),
            from("IP", field("status.podIP")),
            from("SA", field("spec.serviceAccountName")),
            from(
                "CM",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "x".into(),
                        key: "y".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            ),
        ];
        let e = Env::build(&[], &env, &pod, &NoSources, &mut Budget::default());
        assert_eq!(value(&e, "NS"), Some("prod"));
        assert_eq!(value(&e, "APP"), Some("shop"));
        assert_eq!(value(&e, "IP"), Some("\u{E001}"));
        assert_eq!(value(&e, "SA"), Some("default"));
        assert!(
            e.vars
                .iter()
                .any(|v| v.name == "NAME" && v.visibility == Visibility::Opaque)
        );
        assert!(e.vars.iter().any(|v| v.name == "CM" && v.is_hidden()));
    }

    #[test]
    fn forged_markers_are_scrubbed() {
        let env = vec![lit("PGHOST", "\u{E000}")];
        let e = plain(&env);
        assert_eq!(value(&e, "PGHOST"), Some("\u{FFFD}"));
    }
}
