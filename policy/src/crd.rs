//! `PostgresTLSPolicy` (docs/operator.md): which workloads get the CA bundle, from where, and how.
//! The CRD in `crds/` is generated from these types (`cargo run -p verifyfull-operator
//! --bin crdgen`); a test fails when the committed file differs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Pod template annotation: `"true"` opts in (when the policy asks for opt-in), `"false"`
/// always opts out.
pub const INJECT_ANNOTATION: &str = "verifyfull.dev/inject-ca";

/// Distributes a CA certificate into matching namespaces and injects it into matching
/// workloads, so that their PostgreSQL clients can use `sslmode=verify-full`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "verifyfull.dev",
    version = "v1alpha1",
    kind = "PostgresTLSPolicy",
    plural = "postgrestlspolicies",
    shortname = "pgtls",
    status = "PostgresTlsPolicyStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Matched","type":"integer","jsonPath":".status.matched"}"#,
    printcolumn = r#"{"name":"Injected","type":"integer","jsonPath":".status.injected"}"#,
    printcolumn = r#"{"name":"Violations","type":"integer","jsonPath":".status.violations"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresTlsPolicySpec {
    /// Where the CA certificate comes from.
    pub ca_source: CaSource,
    /// Namespaces the CA is copied into and whose workloads are injected; empty: all
    /// (never `kube-system` or verifyfull's own namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Workloads (by their own labels) to inject; empty: all in the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Inject only Pod templates annotated `verifyfull.dev/inject-ca: "true"`.
    #[serde(default)]
    pub opt_in: bool,
    /// Where and how the CA lands in containers.
    #[serde(default)]
    pub injection: Injection,
    /// What happens when the CA changes.
    #[serde(default)]
    pub rotation: Rotation,
}

/// Exactly one of a Secret or a ConfigMap key; only that key is ever distributed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.secret) != has(self.configMap)", "message": "set exactly one of secret or configMap"}
]))]
pub struct CaSource {
    /// A Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<KeyRef>,
    /// A ConfigMap, e.g. a cert-manager trust-manager Bundle target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<KeyRef>,
}

/// One key of a namespaced object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// The object's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the PEM certificate(s).
    #[serde(default = "default_key")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(max = 253))]
    pub key: String,
}

fn default_key() -> String {
    "ca.crt".into()
}

/// Where and how the CA lands in containers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Injection {
    /// Directory the CA volume is mounted at (never with `subPath`, so rotation reaches
    /// running Pods).
    #[serde(default = "default_mount_path")]
    #[schemars(
        regex(pattern = r"^/[^:]*$"),
        length(max = 1024),
        extend("x-kubernetes-validations" = [
            {"rule": "!self.contains('/../') && !self.endsWith('/..')", "message": "mountPath may not contain '..'"},
            {"rule": "self != '/'", "message": "mountPath may not be /"}
        ])
    )]
    pub mount_path: String,
    /// File name of the certificate inside the mount.
    #[serde(default = "default_file_name")]
    #[schemars(
        regex(pattern = r"^[-._a-zA-Z0-9]+$"),
        length(max = 253),
        extend("x-kubernetes-validations" = [
            {"rule": "self != '.' && self != '..'", "message": "fileName may not be . or .."}
        ])
    )]
    pub file_name: String,
    /// The variable pointing libpq at the file.
    #[serde(default = "default_env")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), length(max = 253))]
    pub env: String,
    /// Which containers get the CA: PostgreSQL clients (default) or all.
    #[serde(default)]
    pub containers: Containers,
    /// `Fix` also sets `PGSSLMODE=verify-full` where that decides every libpq target.
    #[serde(default)]
    pub mode: InjectMode,
}

impl Default for Injection {
    fn default() -> Self {
        Injection {
            mount_path: default_mount_path(),
            file_name: default_file_name(),
            env: default_env(),
            containers: Containers::default(),
            mode: InjectMode::default(),
        }
    }
}

impl Injection {
    /// The certificate's path inside containers.
    pub fn path(&self) -> String {
        format!(
            "{}/{}",
            self.mount_path.trim_end_matches('/'),
            self.file_name
        )
    }
}

fn default_mount_path() -> String {
    "/etc/verifyfull/ca".into()
}

fn default_file_name() -> String {
    "ca.crt".into()
}

fn default_env() -> String {
    "PGSSLROOTCERT".into()
}

/// Which containers get the CA.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Containers {
    /// Containers the engine finds to be PostgreSQL clients.
    #[default]
    Clients,
    /// Every container.
    All,
}

/// What injection adds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum InjectMode {
    /// The CA's mount and its variable.
    #[default]
    Inject,
    /// Also `PGSSLMODE=verify-full`, where that variable decides.
    Fix,
}

/// What happens when the CA changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Roll the workloads when the CA changes (for clients that load it once, e.g. JVM
    /// trust stores). Default: no restart — the mounted file updates in place and libpq
    /// reads it on every new connection.
    #[serde(default)]
    pub restart: bool,
}

/// Every field is always written (a merge patch of the status removes what is gone).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresTlsPolicyStatus {
    /// The generation this status describes.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Degraded`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Workloads this policy selects.
    #[serde(default)]
    pub matched: i64,
    /// Selected workloads that carry the injection.
    #[serde(default)]
    pub injected: i64,
    /// Selected workloads left alone because of a conflict.
    #[serde(default)]
    pub conflicts: i64,
    /// Selected workloads the engine still finds in violation.
    #[serde(default)]
    pub violations: i64,
    /// The first 20 violating workloads, `Kind namespace/name`.
    #[serde(default)]
    pub violating: Vec<String>,
    /// Namespaces holding a copy of the CA.
    #[serde(default)]
    pub namespaces: i64,
    /// Hash of the CA bundle in force.
    #[serde(default)]
    pub ca_hash: Option<String>,
}

/// Label selector semantics (matchLabels AND matchExpressions); `None` matches everything.
pub fn selector_matches(
    sel: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = sel else {
        return true;
    };
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

impl PostgresTLSPolicy {
    /// Selection (docs/operator.md): namespace selector AND workload selector AND (no opt-in required
    /// OR the template opts in); an explicit opt-out always wins; a policy being deleted
    /// selects nothing (its injections are on their way out).
    pub fn selects(
        &self,
        namespace_labels: Option<&BTreeMap<String, String>>,
        workload_labels: Option<&BTreeMap<String, String>>,
        template_annotations: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let opt = template_annotations
            .and_then(|a| a.get(INJECT_ANNOTATION))
            .map(String::as_str);
        if opt == Some("false") || self.metadata.deletion_timestamp.is_some() {
            return false;
        }
        selector_matches(self.spec.namespace_selector.as_ref(), namespace_labels)
            && selector_matches(self.spec.selector.as_ref(), workload_labels)
            && (!self.spec.opt_in || opt == Some("true"))
    }

    /// The name of the CA copy in each namespace.
    pub fn copy_name(&self) -> String {
        format!(
            "verifyfull-ca-{}",
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> PostgresTLSPolicy {
        serde_json::from_value(
            json!({"apiVersion": "verifyfull.dev/v1alpha1", "kind": "PostgresTLSPolicy",
            "metadata": {"name": "p"}, "spec": spec}),
        )
        .expect("policy")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selection_is_namespace_and_workload_and_opt_in_with_opt_out_winning() {
        let src = json!({"secret": {"namespace": "v", "name": "ca"}});
        let p = policy(json!({"caSource": src,
            "namespaceSelector": {"matchLabels": {"db-tls": "on"}},
            "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["api", "worker"]}]}}));
        let ns = map(&[("db-tls", "on")]);
        let api = map(&[("tier", "api")]);
        assert!(p.selects(Some(&ns), Some(&api), None));
        assert!(
            !p.selects(Some(&map(&[])), Some(&api), None),
            "namespace not selected"
        );
        assert!(
            !p.selects(Some(&ns), Some(&map(&[("tier", "web")])), None),
            "workload not selected"
        );
        assert!(
            !p.selects(
                Some(&ns),
                Some(&api),
                Some(&map(&[(INJECT_ANNOTATION, "false")]))
            ),
            "opt-out wins"
        );
        let opt_in = policy(json!({"caSource": src, "optIn": true}));
        assert!(!opt_in.selects(None, None, None));
        assert!(opt_in.selects(None, None, Some(&map(&[(INJECT_ANNOTATION, "true")]))));
        assert!(!opt_in.selects(None, None, Some(&map(&[(INJECT_ANNOTATION, "yes")]))));
        let mut deleting = policy(json!({"caSource": src}));
        assert!(deleting.selects(None, None, None));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(
            !deleting.selects(None, None, None),
            "a policy being deleted selects nothing"
        );
        // Defaults fill in what a minimal policy leaves out.
        assert_eq!(opt_in.spec.injection.path(), "/etc/verifyfull/ca/ca.crt");
        assert_eq!(
            opt_in
                .spec
                .ca_source
                .secret
                .as_ref()
                .map(|s| s.key.as_str()),
            Some("ca.crt")
        );
        assert_eq!(opt_in.copy_name(), "verifyfull-ca-p");
    }

    #[test]
    fn selector_operators() {
        let sel: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
            {"key": "a", "operator": "NotIn", "values": ["x"]},
            {"key": "b", "operator": "Exists"},
            {"key": "c", "operator": "DoesNotExist"}]}))
        .expect("selector");
        assert!(selector_matches(Some(&sel), Some(&map(&[("b", "1")]))));
        assert!(!selector_matches(
            Some(&sel),
            Some(&map(&[("a", "x"), ("b", "1")]))
        ));
        assert!(!selector_matches(
            Some(&sel),
            Some(&map(&[("b", "1"), ("c", "1")]))
        ));
        assert!(!selector_matches(Some(&sel), None));
        assert!(selector_matches(None, None));
        let bogus: LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "a", "operator": "Like"}]}))
                .expect("selector");
        assert!(
            !selector_matches(Some(&bogus), Some(&map(&[("a", "1")]))),
            "an unknown operator never matches"
        );
    }
}
