//! The kinds the stand-in serves: built-ins as data, custom resources from their CRDs.

use serde_json::Value;
use std::sync::Arc;

/// A resource is stored under its group and plural; versions are views of it.
pub type ResKey = (String, String);

/// One served resource in one version.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Subresources served, e.g. `status`, `ephemeralcontainers`.
    pub subresources: Vec<String>,
    /// A custom resource's `openAPIV3Schema`.
    pub schema: Option<Arc<Value>>,
    /// Whether the version is the one objects are stored in (CRDs: `storage: true`).
    pub storage: bool,
}

impl ResourceDef {
    pub fn key(&self) -> ResKey {
        (self.group.clone(), self.plural.clone())
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }

    /// `deployments.apps` as in error messages; core kinds have no suffix.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn def(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    sub: &[&str],
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_ascii_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        subresources: sub.iter().map(|s| s.to_string()).collect(),
        schema: None,
        storage: true,
    }
}

const NS: bool = true;
const CLUSTER: bool = false;

/// The built-in resources verifyfull, its chart and its tests use:
/// group, version, kind, plural, namespaced, short names, subresources.
#[rustfmt::skip]
#[allow(clippy::type_complexity)]
const BUILTINS: &[(&str, &str, &str, &str, bool, &[&str], &[&str])] = &[
    ("", "v1", "Namespace", "namespaces", CLUSTER, &["ns"], &["status"]),
    ("", "v1", "Pod", "pods", NS, &["po"], &["status", "ephemeralcontainers"]),
    ("", "v1", "ConfigMap", "configmaps", NS, &["cm"], &[]),
    ("", "v1", "Secret", "secrets", NS, &[], &[]),
    ("", "v1", "Service", "services", NS, &["svc"], &["status"]),
    ("", "v1", "ReplicationController", "replicationcontrollers", NS, &["rc"], &["status"]),
    ("", "v1", "ServiceAccount", "serviceaccounts", NS, &["sa"], &[]),
    ("", "v1", "Event", "events", NS, &["ev"], &[]),
    ("events.k8s.io", "v1", "Event", "events", NS, &["ev"], &[]),
    ("apps", "v1", "Deployment", "deployments", NS, &["deploy"], &["status"]),
    ("apps", "v1", "StatefulSet", "statefulsets", NS, &["sts"], &["status"]),
    ("apps", "v1", "DaemonSet", "daemonsets", NS, &["ds"], &["status"]),
    ("apps", "v1", "ReplicaSet", "replicasets", NS, &["rs"], &["status"]),
    ("batch", "v1", "Job", "jobs", NS, &[], &["status"]),
    ("batch", "v1", "CronJob", "cronjobs", NS, &["cj"], &["status"]),
    ("coordination.k8s.io", "v1", "Lease", "leases", NS, &[], &[]),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", NS, &["pdb"], &["status"]),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", NS, &["netpol"], &[]),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", NS, &[], &[]),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", NS, &[], &[]),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", CLUSTER, &[], &[]),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", CLUSTER, &[], &[]),
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", CLUSTER, &[], &[]),
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", CLUSTER, &[], &[]),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", CLUSTER, &["crd", "crds"], &["status"]),
];

pub fn builtins() -> Vec<ResourceDef> {
    BUILTINS
        .iter()
        .map(|(g, v, k, p, ns, short, sub)| def(g, v, k, p, *ns, short, sub))
        .collect()
}

/// The resource definitions a CRD object declares, one per served version.
pub fn from_crd(crd: &Value) -> Vec<ResourceDef> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let kind = names["kind"].as_str().unwrap_or_default();
    let plural = names["plural"].as_str().unwrap_or_default();
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let short_names = strings(&names["shortNames"]);
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let Some(versions) = spec["versions"].as_array() else {
        return Vec::new();
    };
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(false))
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let mut subresources = Vec::new();
            if v["subresources"].get("status").is_some() {
                subresources.push("status".to_string());
            }
            if v["subresources"].get("scale").is_some() {
                subresources.push("scale".to_string());
            }
            Some(ResourceDef {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                plural: plural.into(),
                singular: singular.clone(),
                namespaced,
                short_names: short_names.clone(),
                subresources,
                schema: v["schema"]
                    .get("openAPIV3Schema")
                    .map(|s| Arc::new(s.clone())),
                storage: v["storage"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
