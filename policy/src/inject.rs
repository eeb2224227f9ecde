//! The injection plan (docs/operator.md): what a `PostgresTLSPolicy` adds to a Pod spec — one
//! ConfigMap volume (never `subPath`), a read-only mount and the root-certificate variable in
//! each PostgreSQL client (or every) container and init container, and in "fix" mode
//! `PGSSLMODE=verify-full` where that decides every libpq target. One pure function serves
//! the operator (server-side apply of workloads), the mutating webhook (JSON patches of
//! Pods) and the validating webhook (judging a workload as it will run).

use crate::crd::{Containers, InjectMode, Injection, PostgresTLSPolicy};
use crate::verdict::{ContainerList, Report};
use crate::workload::{Container, NameRef, PodSpec, Volume, VolumeMount, Workload};
use crate::{Context, judge};
use k8s_openapi::api::core::v1::EnvVar;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The volume verifyfull adds.
pub const VOLUME: &str = "verifyfull-ca";
/// On a Pod template when the policy rolls workloads on CA change: the bundle's hash.
pub const HASH_ANNOTATION: &str = "verifyfull.dev/ca-hash";
/// The sslmode variable the `Fix` mode sets.
pub const SSLMODE: &str = "PGSSLMODE";

/// What one policy wants for one Pod spec.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// The policy's injection settings.
    pub injection: &'a Injection,
    /// The CA copy's ConfigMap in the workload's namespace.
    pub config_map: &'a str,
    /// Set when the policy restarts workloads on CA change.
    pub restart_hash: Option<&'a str>,
}

/// One container's share of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    /// The container's name.
    pub name: String,
    /// In `initContainers`.
    pub init: bool,
    /// Variables to set: `(name, value)`.
    pub env: Vec<(String, String)>,
}

/// Something the user set that verifyfull will not override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The Pod already has a volume named `verifyfull-ca` that is not the CA copy.
    Volume,
    /// Something else is mounted where the CA goes.
    MountPath {
        /// The container.
        container: String,
    },
    /// The container sets the variable to another value.
    Variable {
        /// The container.
        container: String,
        /// The variable.
        variable: String,
    },
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::Volume => write!(f, "the Pod already has a volume named {VOLUME}"),
            Conflict::MountPath { container } => {
                write!(
                    f,
                    "container {container} mounts something else at the CA's mount path"
                )
            }
            Conflict::Variable {
                container,
                variable,
            } => {
                write!(f, "container {container} sets {variable} itself")
            }
        }
    }
}

/// Why a whole workload is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Server-side apply rejects lists with duplicate keys.
    DuplicateEnv {
        /// The container.
        container: String,
        /// The variable given twice.
        variable: String,
    },
    /// Something the user set that verifyfull will not override.
    Conflict(Conflict),
}

/// The plan for one Pod spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Containers that get the mount (and the variables listed).
    pub containers: Vec<ContainerPlan>,
    /// Conflicts in single containers (the rest is still injected).
    pub conflicts: Vec<Conflict>,
    /// Why the workload is left alone, if it is.
    pub skip: Option<Skip>,
    /// The CA bundle's hash for the Pod template's annotation (restart on change).
    pub restart_hash: Option<String>,
}

impl Plan {
    /// Nothing to add: no container qualifies, or the workload is skipped.
    pub fn is_empty(&self) -> bool {
        self.skip.is_some() || self.containers.is_empty()
    }
}

fn env_value<'a>(c: &'a Container, name: &str) -> Option<Option<&'a str>> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .map(|e| e.value.as_deref())
}

fn duplicate_env(c: &Container) -> Option<String> {
    let env = c.env.as_deref().unwrap_or_default();
    env.iter()
        .enumerate()
        .find(|(i, e)| env[..*i].iter().any(|x| x.name == e.name))
        .map(|(_, e)| e.name.clone())
}

/// Plans the injection into `spec`, whose engine report is `report`.
pub fn plan(spec: &PodSpec, report: &Report<'_>, want: &Want<'_>) -> Plan {
    let inj = want.injection;
    let mut out = Plan {
        restart_hash: want.restart_hash.map(str::to_string),
        ..Plan::default()
    };
    let ours =
        |v: &Volume| v.config_map.as_ref().and_then(|c| c.name.as_deref()) == Some(want.config_map);
    if spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == VOLUME && !ours(v))
    {
        out.skip = Some(Skip::Conflict(Conflict::Volume));
        return out;
    }
    let path = inj.path();
    let lists: [(bool, &[Container]); 2] = [
        (false, &spec.containers),
        (true, spec.init_containers.as_deref().unwrap_or_default()),
    ];
    for (init, list) in lists {
        for c in list {
            let list_kind = if init {
                ContainerList::Init
            } else {
                ContainerList::Main
            };
            let r = report
                .containers
                .iter()
                .find(|r| r.name == c.name && r.list == list_kind);
            let client = r.is_some_and(|r| r.client);
            if inj.containers == Containers::Clients && !client {
                continue;
            }
            if let Some(variable) = duplicate_env(c) {
                out.skip = Some(Skip::DuplicateEnv {
                    container: c.name.clone(),
                    variable,
                });
                out.containers.clear();
                return out;
            }
            let mounted_elsewhere = c.volume_mounts.iter().flatten().any(|m| {
                m.mount_path.trim_end_matches('/') == inj.mount_path.trim_end_matches('/')
                    && m.name != VOLUME
            });
            if mounted_elsewhere {
                out.conflicts.push(Conflict::MountPath {
                    container: c.name.clone(),
                });
                continue;
            }
            let mut env = Vec::new();
            let mut want_var = |name: &str, value: &str, out: &mut Plan| match env_value(c, name) {
                None => env.push((name.to_string(), value.to_string())),
                // Already there (ours, or the user's with the same value): keep it listed
                // so that the operator's apply configuration stays complete.
                Some(Some(v)) if v == value => env.push((name.to_string(), value.to_string())),
                Some(_) => out.conflicts.push(Conflict::Variable {
                    container: c.name.clone(),
                    variable: name.to_string(),
                }),
            };
            want_var(&inj.env, &path, &mut out);
            if inj.mode == InjectMode::Fix && r.is_some_and(|r| r.fixable) {
                want_var(SSLMODE, "verify-full", &mut out);
            }
            out.containers.push(ContainerPlan {
                name: c.name.clone(),
                init,
                env,
            });
        }
    }
    out
}

impl Plan {
    /// The Pod spec as it will run: for judging a workload before the operator gets to it.
    pub fn apply_to(&self, spec: &mut PodSpec, want: &Want<'_>) {
        if self.is_empty() {
            return;
        }
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        if !volumes.iter().any(|v| v.name == VOLUME) {
            volumes.push(Volume {
                name: VOLUME.into(),
                config_map: Some(NameRef {
                    name: Some(want.config_map.into()),
                }),
            });
        }
        for p in &self.containers {
            let list = if p.init {
                spec.init_containers.as_mut()
            } else {
                Some(&mut spec.containers)
            };
            let Some(c) = list.and_then(|l| l.iter_mut().find(|c| c.name == p.name)) else {
                continue;
            };
            let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
            if !mounts.iter().any(|m| m.name == VOLUME) {
                mounts.push(VolumeMount {
                    name: VOLUME.into(),
                    mount_path: want.injection.mount_path.clone(),
                });
            }
            let env = c.env.get_or_insert_with(Vec::new);
            for (name, value) in &p.env {
                if !env.iter().any(|e| &e.name == name) {
                    env.push(EnvVar {
                        name: name.clone(),
                        value: Some(value.clone()),
                        value_from: None,
                    });
                }
            }
        }
    }

    fn volume_json(want: &Want<'_>) -> Value {
        json!({"name": VOLUME, "configMap": {"name": want.config_map}})
    }

    fn mount_json(want: &Want<'_>) -> Value {
        json!({"name": VOLUME, "mountPath": want.injection.mount_path, "readOnly": true})
    }

    /// The Pod spec part of a server-side apply configuration: exactly the fields the
    /// operator owns (an empty plan owns nothing, which removes what it added).
    pub fn apply_spec(&self, want: &Want<'_>) -> Value {
        if self.is_empty() {
            return json!({});
        }
        let container = |p: &ContainerPlan| {
            let env: Vec<Value> = p
                .env
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect();
            let mut c = json!({"name": p.name, "volumeMounts": [Plan::mount_json(want)]});
            if !env.is_empty() {
                c["env"] = Value::Array(env);
            }
            c
        };
        let mut spec = json!({"volumes": [Plan::volume_json(want)]});
        let main: Vec<Value> = self
            .containers
            .iter()
            .filter(|p| !p.init)
            .map(container)
            .collect();
        let init: Vec<Value> = self
            .containers
            .iter()
            .filter(|p| p.init)
            .map(container)
            .collect();
        if !main.is_empty() {
            spec["containers"] = Value::Array(main);
        }
        if !init.is_empty() {
            spec["initContainers"] = Value::Array(init);
        }
        spec
    }

    /// JSON patch operations that add what a Pod (`pod`, the whole object) lacks. Empty
    /// when it has everything: re-invocation changes nothing.
    pub fn json_patch(&self, pod: &Value, want: &Want<'_>) -> Vec<Value> {
        let mut ops = Vec::new();
        if self.is_empty() {
            return ops;
        }
        let spec = &pod["spec"];
        append(
            &mut ops,
            "/spec/volumes",
            &spec["volumes"],
            Plan::volume_json(want),
            |v| v["name"] == VOLUME,
        );
        for p in &self.containers {
            let field = if p.init {
                "initContainers"
            } else {
                "containers"
            };
            let Some((i, c)) = spec[field].as_array().and_then(|l| {
                l.iter()
                    .enumerate()
                    .find(|(_, c)| c["name"] == p.name.as_str())
            }) else {
                continue;
            };
            let base = format!("/spec/{field}/{i}");
            append(
                &mut ops,
                &format!("{base}/volumeMounts"),
                &c["volumeMounts"],
                Plan::mount_json(want),
                |m| m["name"] == VOLUME,
            );
            // Appended variables come after the user's, so `$(VAR)` references still work.
            let mut env = c["env"].clone();
            for (n, v) in &p.env {
                let present = env
                    .as_array()
                    .is_some_and(|a| a.iter().any(|e| e["name"] == n.as_str()));
                if present {
                    continue;
                }
                let var = json!({"name": n, "value": v});
                append(&mut ops, &format!("{base}/env"), &env, var.clone(), |_| {
                    false
                });
                match env.as_array_mut() {
                    Some(a) => a.push(var),
                    None => env = json!([var]),
                }
            }
        }
        ops
    }
}

/// The one policy that selects `w` in a namespace with these labels: none when no policy
/// or several do (overlapping policies inject nothing, docs/operator.md). Selection reads the
/// object's own labels and its Pod template's `inject-ca` annotation.
pub fn selecting<'p>(
    policies: &'p [PostgresTLSPolicy],
    namespace_labels: Option<&BTreeMap<String, String>>,
    w: &Workload,
) -> Option<&'p PostgresTLSPolicy> {
    let pod = w.view().pod;
    let mut it = policies.iter().filter(|p| {
        p.selects(
            namespace_labels,
            w.metadata.labels.as_ref(),
            pod.annotations.as_ref(),
        )
    });
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// The plan of `p` for `w`, judged with `ctx`.
pub fn plan_for(p: &PostgresTLSPolicy, w: &Workload, ctx: &Context<'_>) -> (Plan, String) {
    let copy = p.copy_name();
    let report = judge(w.view(), ctx);
    let want = Want {
        injection: &p.spec.injection,
        config_map: &copy,
        restart_hash: None,
    };
    let plan = plan(&w.spec, &report, &want);
    (plan, copy)
}

/// `w` as it will run once the selecting policy's injection is in (by the operator for
/// workloads, at admission for Pods): what the validating webhook judges (docs/admission.md).
pub fn as_it_will_run(
    policies: &[PostgresTLSPolicy],
    namespace_labels: Option<&BTreeMap<String, String>>,
    w: &mut Workload,
    ctx: &Context<'_>,
) {
    let Some(p) = selecting(policies, namespace_labels, w) else {
        return;
    };
    let (plan, copy) = plan_for(p, w, ctx);
    let want = Want {
        injection: &p.spec.injection,
        config_map: &copy,
        restart_hash: None,
    };
    plan.apply_to(&mut w.spec, &want);
}

/// The JSON patch the mutating webhook returns for a Pod (`raw` is the Pod as sent).
pub fn pod_patch(
    policies: &[PostgresTLSPolicy],
    namespace_labels: Option<&BTreeMap<String, String>>,
    pod: &Workload,
    raw: &Value,
    ctx: &Context<'_>,
) -> Vec<Value> {
    let Some(p) = selecting(policies, namespace_labels, pod) else {
        return Vec::new();
    };
    let (plan, copy) = plan_for(p, pod, ctx);
    let want = Want {
        injection: &p.spec.injection,
        config_map: &copy,
        restart_hash: None,
    };
    plan.json_patch(raw, &want)
}

/// Adds `item` to the array at `path` unless an element matching `present` is there.
fn append(
    ops: &mut Vec<Value>,
    path: &str,
    current: &Value,
    item: Value,
    present: impl Fn(&Value) -> bool,
) {
    match current.as_array() {
        Some(a) if a.iter().any(present) => {}
        Some(_) => ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": item})),
        None => ops.push(json!({"op": "add", "path": path, "value": [item]})),
    }
}

#[cfg(test)]
mod tests;
