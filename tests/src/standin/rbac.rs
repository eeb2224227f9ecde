//! Authorization as kube-apiserver's RBAC authorizer does it, over the stored Roles,
//! ClusterRoles, RoleBindings and ClusterRoleBindings: verbs, API groups, resources and
//! `*/subresource`, `resourceNames`, namespaced versus cluster scope. `system:masters` is
//! the privileged group, as in kube-apiserver. Every allowed request records the rule that
//! allowed it, so that a test can tell which rules a component used.

use super::api::{ApiError, User};
use super::store::State;
use serde_json::{Value, json};

/// What a resource request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    /// Empty for a cluster-scoped object or a request across all namespaces.
    pub namespace: &'a str,
    /// Empty for list, watch and create (unless a field selector names one object).
    pub name: &'a str,
}

/// The rule that allowed a request: the role, the rule's index in it, and what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    pub user: String,
    /// `Role` or `ClusterRole`.
    pub role_kind: String,
    /// The Role's namespace; empty for a ClusterRole.
    pub role_namespace: String,
    pub role: String,
    pub rule: usize,
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// The request's namespace and object name (either may be empty).
    pub namespace: String,
    pub name: String,
}

impl Grant {
    /// The request this grant allowed, to ask again.
    pub fn attributes(&self) -> Attributes<'_> {
        let (resource, subresource) = self
            .resource
            .split_once('/')
            .unwrap_or((&self.resource, ""));
        Attributes {
            verb: &self.verb,
            group: &self.group,
            resource,
            subresource,
            namespace: &self.namespace,
            name: &self.name,
        }
    }
}

/// A store holding only these RBAC objects: to authorize against a changed set of rules.
pub fn state_with(objects: impl IntoIterator<Item = Value>) -> State {
    let mut state = State::new(super::resources::builtins(), 1_000);
    for o in objects {
        let plural = match o["kind"].as_str() {
            Some("Role") => "roles",
            Some("ClusterRole") => "clusterroles",
            Some("RoleBinding") => "rolebindings",
            Some("ClusterRoleBinding") => "clusterrolebindings",
            _ => continue,
        };
        let cluster = plural.starts_with("cluster");
        let ns = if cluster {
            ""
        } else {
            o["metadata"]["namespace"].as_str().unwrap_or("default")
        }
        .to_string();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        state.commit(&key(plural), &ns, &name, super::store::EventType::Added, o);
    }
    state
}

const GROUP: &str = "rbac.authorization.k8s.io";

fn key(plural: &str) -> (String, String) {
    (GROUP.to_string(), plural.to_string())
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn subject_matches(s: &Value, user: &User, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or_default();
    match s["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = s["namespace"].as_str().unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rule_matches(rule: &Value, a: &Attributes<'_>, combined: &str) -> bool {
    let any = |field: &str, want: &str| strings(&rule[field]).any(|x| x == "*" || x == want);
    let resource = strings(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource))
    });
    let names: Vec<&str> = strings(&rule["resourceNames"]).collect();
    any("verbs", a.verb)
        && any("apiGroups", a.group)
        && resource
        && (names.is_empty() || (!a.name.is_empty() && names.contains(&a.name)))
}

/// Authorizes `a` for `user`: `Ok(None)` for the privileged group, `Ok(Some(rule))` for
/// the first rule that allows it, else the 403 kube-apiserver answers.
pub fn authorize(
    state: &State,
    user: &User,
    a: &Attributes<'_>,
) -> Result<Option<Grant>, ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(None);
    }
    let combined = if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    // ClusterRoleBindings apply everywhere; RoleBindings only in their own namespace.
    let (cluster, local) = (key("clusterrolebindings"), key("rolebindings"));
    let mut bindings: Vec<_> = state
        .range(&cluster, None, None)
        .map(|(_, b)| (b.clone(), String::new()))
        .collect();
    if !a.namespace.is_empty() {
        bindings.extend(
            state
                .range(&local, Some(a.namespace), None)
                .map(|(_, b)| (b.clone(), a.namespace.to_string())),
        );
    }
    for (binding, ns) in bindings {
        let b = &binding.value;
        if !b["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| subject_matches(s, user, &ns))
        {
            continue;
        }
        let role_name = b["roleRef"]["name"].as_str().unwrap_or_default();
        let (role_kind, role_ns) = match b["roleRef"]["kind"].as_str() {
            Some("Role") if !ns.is_empty() => ("Role", ns.as_str()),
            Some("ClusterRole") => ("ClusterRole", ""),
            _ => continue,
        };
        let plural = if role_kind == "Role" {
            "roles"
        } else {
            "clusterroles"
        };
        let Some(role) = state.get(&key(plural), role_ns, role_name) else {
            continue;
        };
        let rules = role.value["rules"].as_array().cloned().unwrap_or_default();
        if let Some(i) = rules.iter().position(|r| rule_matches(r, a, &combined)) {
            return Ok(Some(Grant {
                user: user.name.clone(),
                role_kind: role_kind.into(),
                role_namespace: role_ns.into(),
                role: role_name.into(),
                rule: i,
                verb: a.verb.into(),
                group: a.group.into(),
                resource: combined,
                namespace: a.namespace.into(),
                name: a.name.into(),
            }));
        }
    }
    Err(forbidden(user, a, &combined))
}

/// `<resource>[.<group>] ["<name>"] is forbidden: User "<user>" cannot <verb> resource …`,
/// word for word as kube-apiserver says it.
fn forbidden(user: &User, a: &Attributes<'_>, combined: &str) -> ApiError {
    let qualified = if a.group.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let what = if a.name.is_empty() {
        qualified
    } else {
        format!("{qualified} {:?}", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", a.namespace)
    };
    let message = format!(
        "{what} is forbidden: User {:?} cannot {} resource {combined:?} in API group {:?} {scope}",
        user.name, a.verb, a.group
    );
    ApiError::new(403, "Forbidden", message)
        .with_details(json!({"name": a.name, "group": a.group, "kind": a.resource}))
}

/// The bootstrap `cluster-admin` ClusterRole (everything), as every cluster has it; tests
/// bind their own users to it where a real cluster would give them some role.
pub fn cluster_admin() -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                  {"nonResourceURLs": ["*"], "verbs": ["*"]}]})
}
