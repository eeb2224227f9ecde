//! Managed fields and server-side apply, after `structured-merge-diff`: field sets in the
//! `FieldsV1` encoding, list merging by key, ownership per field manager, conflicts.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// How a list merges: by key fields, as a set of scalars, or replaced whole.
#[derive(Debug, Clone, PartialEq)]
pub enum ListKind {
    Map(Vec<String>),
    Set,
    Atomic,
}

/// Where list and map types come from: built-in field names, or a CRD's schema.
pub trait Shape: std::fmt::Debug + Send + Sync {
    fn list(&self, path: &[&str]) -> ListKind;
    fn atomic_map(&self, path: &[&str]) -> bool;
}

/// The built-in kinds' list types (the `patchMergeKey`/`listType` markers of k8s.io/api).
#[derive(Debug)]
pub struct Builtin;

impl Shape for Builtin {
    fn list(&self, path: &[&str]) -> ListKind {
        let keys = |k: &[&str]| ListKind::Map(k.iter().map(|s| s.to_string()).collect());
        let parent = path.len().checked_sub(2).map(|i| path[i]);
        match path.last().copied().unwrap_or_default() {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "env"
            | "volumes"
            | "imagePullSecrets"
            | "webhooks"
            | "resourceClaims" => keys(&["name"]),
            "volumeMounts" => keys(&["mountPath"]),
            "volumeDevices" => keys(&["devicePath"]),
            "conditions" => keys(&["type"]),
            "ownerReferences" => keys(&["uid"]),
            "ports"
                if matches!(
                    parent,
                    Some("containers" | "initContainers" | "ephemeralContainers")
                ) =>
            {
                keys(&["containerPort", "protocol"])
            }
            "ports" if parent == Some("spec") => keys(&["port", "protocol"]),
            "finalizers" => ListKind::Set,
            _ => ListKind::Atomic,
        }
    }

    fn atomic_map(&self, path: &[&str]) -> bool {
        matches!(
            path,
            [.., "spec", "selector"] | [.., "namespaceSelector"] | [.., "objectSelector"]
        ) && path.first() != Some(&"metadata")
    }
}

/// A CRD's `openAPIV3Schema`, walked by field names.
#[derive(Debug)]
pub struct Schema<'a>(pub &'a Value);

impl Schema<'_> {
    fn at(&self, path: &[&str]) -> Option<&Value> {
        let mut s = self.0;
        for f in path {
            // Step through list items and map values to the named field.
            while s["type"] == "array" {
                s = &s["items"];
            }
            s = match s["properties"].get(*f) {
                Some(p) => p,
                None => s.get("additionalProperties").filter(|a| a.is_object())?,
            };
        }
        Some(s)
    }
}

impl Shape for Schema<'_> {
    fn list(&self, path: &[&str]) -> ListKind {
        if path == ["metadata", "finalizers"] || path == ["metadata", "ownerReferences"] {
            return Builtin.list(path);
        }
        let Some(s) = self.at(path) else {
            return ListKind::Atomic;
        };
        match s["x-kubernetes-list-type"].as_str() {
            Some("map") => {
                ListKind::Map(super::resources::strings(&s["x-kubernetes-list-map-keys"]))
            }
            Some("set") => ListKind::Set,
            _ => ListKind::Atomic,
        }
    }

    fn atomic_map(&self, path: &[&str]) -> bool {
        self.at(path)
            .is_some_and(|s| s["x-kubernetes-map-type"] == "atomic")
    }
}

/// A set of field paths, as a tree whose keys are `FieldsV1` path elements
/// (`f:name`, `k:{"name":"app"}`, `v:"x"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    /// The path of this node itself is in the set (`"."`, or a leaf `{}`).
    pub member: bool,
    pub children: BTreeMap<String, FieldSet>,
}

/// Metadata the server owns; never tracked.
const SERVER_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

impl FieldSet {
    /// The fields of `obj` (a whole object or an apply configuration).
    pub fn of(obj: &Value, shape: &dyn Shape) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(m) = obj.as_object() {
            for (k, v) in m {
                if k == "apiVersion" || k == "kind" {
                    continue;
                }
                if k == "metadata" {
                    let mut meta = FieldSet::default();
                    if let Some(mm) = v.as_object() {
                        for (mk, mv) in mm {
                            if !SERVER_FIELDS.contains(&mk.as_str()) {
                                meta.children.insert(
                                    format!("f:{mk}"),
                                    of_value(mv, &["metadata", mk], shape),
                                );
                            }
                        }
                    }
                    if !meta.children.is_empty() {
                        set.children.insert("f:metadata".into(), meta);
                    }
                    continue;
                }
                set.children
                    .insert(format!("f:{k}"), of_value(v, &[k], shape));
            }
        }
        set
    }

    pub fn from_json(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(m) = v.as_object() {
            if m.is_empty() {
                set.member = true;
            }
            for (k, child) in m {
                if k == "." {
                    set.member = true;
                } else {
                    set.children.insert(k.clone(), FieldSet::from_json(child));
                }
            }
        }
        set
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_json());
        }
        Value::Object(m)
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Every path in the set, as element lists.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out);
        out
    }

    fn walk(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.walk(prefix, out);
            prefix.pop();
        }
    }

    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((h, rest)) => self.children.get(h).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Whether any path of the set lies at or under `path`.
    pub fn touches(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => !self.is_empty(),
            Some((h, rest)) => self.children.get(h).is_some_and(|c| c.touches(rest)),
        }
    }

    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((h, rest)) => self.children.entry(h.clone()).or_default().insert(rest),
        }
    }

    pub fn remove(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = false,
            Some((h, rest)) => {
                if let Some(c) = self.children.get_mut(h) {
                    c.remove(rest);
                    if c.is_empty() {
                        self.children.remove(h);
                    }
                }
            }
        }
    }
}

fn of_value(v: &Value, path: &[&str], shape: &dyn Shape) -> FieldSet {
    let mut set = FieldSet::default();
    match v {
        Value::Object(m) if !m.is_empty() && !shape.atomic_map(path) => {
            for (k, c) in m {
                let mut p = path.to_vec();
                p.push(k);
                set.children
                    .insert(format!("f:{k}"), of_value(c, &p, shape));
            }
            // Maps and structs alike: the node itself is a member, so that removing the
            // last owned child can remove the map a manager created.
            set.member = true;
        }
        Value::Array(items) => match shape.list(path) {
            ListKind::Map(keys) => {
                for item in items {
                    let mut child = of_value(item, path, shape);
                    child.member = true;
                    set.children.insert(key_element(item, &keys), child);
                }
                set.member = true;
            }
            ListKind::Set => {
                for item in items {
                    set.children.insert(
                        format!("v:{item}"),
                        FieldSet {
                            member: true,
                            children: BTreeMap::new(),
                        },
                    );
                }
                set.member = true;
            }
            ListKind::Atomic => set.member = true,
        },
        _ => set.member = true,
    }
    set
}

fn key_element(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

/// The value at a path of elements, if present.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = obj;
    for e in path {
        v = step(v, e)?;
    }
    Some(v)
}

fn step<'a>(v: &'a Value, e: &str) -> Option<&'a Value> {
    if let Some(f) = e.strip_prefix("f:") {
        return v.get(f);
    }
    let items = v.as_array()?;
    items.iter().find(|i| element_matches(i, e))
}

fn element_matches(item: &Value, e: &str) -> bool {
    if let Some(k) = e.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) else {
            return false;
        };
        keys.iter().all(|(k, v)| item.get(k) == Some(v))
    } else if let Some(val) = e.strip_prefix("v:") {
        serde_json::from_str::<Value>(val).is_ok_and(|x| &x == item)
    } else {
        false
    }
}

/// Removes the value at `path`: a field from its object, an item from its list.
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut v = obj;
    for e in parent {
        let next = if let Some(f) = e.strip_prefix("f:") {
            v.get_mut(f)
        } else {
            v.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| element_matches(i, e)))
        };
        match next {
            Some(n) => v = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = v.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(a) = v.as_array_mut() {
        a.retain(|i| !element_matches(i, last));
    }
}

/// A path as the API server prints it: `.spec.containers[name="app"].image`.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// Merges an apply configuration into the live object: fields replace, keyed lists merge
/// item by item, sets union, everything else is replaced whole.
pub fn merge(live: &mut Value, applied: &Value, path: &mut Vec<String>, shape: &dyn Shape) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a))
            if !shape.atomic_map(&names(path)) || path.is_empty() =>
        {
            for (k, av) in a {
                path.push(k.clone());
                match l.get_mut(k) {
                    Some(lv) => merge(lv, av, path, shape),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
                path.pop();
            }
        }
        (Value::Array(l), Value::Array(a)) => match shape.list(&names(path)) {
            ListKind::Map(keys) => {
                for item in a {
                    let e = key_element(item, &keys);
                    match l.iter_mut().find(|i| element_matches(i, &e)) {
                        Some(li) => merge(li, item, path, shape),
                        None => l.push(item.clone()),
                    }
                }
            }
            ListKind::Set => {
                for item in a {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListKind::Atomic => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

/// Whether `path` is in the set with nothing under it: a value, not a map or an item.
fn is_leaf(set: &FieldSet, path: &[String]) -> bool {
    let mut s = set;
    for e in path {
        match s.children.get(e) {
            Some(c) => s = c,
            None => return false,
        }
    }
    s.member && s.children.is_empty()
}

/// Field names along a path of object keys (list items are not on it).
fn names(path: &[String]) -> Vec<&str> {
    path.iter().map(String::as_str).collect()
}

/// One manager's entry in `metadata.managedFields`.
#[derive(Debug, Clone)]
pub struct Managed {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: String,
    pub time: String,
    pub set: FieldSet,
}

pub fn read_managed(obj: &Value) -> Vec<Managed> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| Managed {
                    manager: m["manager"].as_str().unwrap_or_default().into(),
                    operation: m["operation"].as_str().unwrap_or_default().into(),
                    api_version: m["apiVersion"].as_str().unwrap_or_default().into(),
                    subresource: m["subresource"].as_str().unwrap_or_default().into(),
                    time: m["time"].as_str().unwrap_or_default().into(),
                    set: FieldSet::from_json(&m["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write_managed(obj: &mut Value, managed: &[Managed]) {
    let list: Vec<Value> = managed
        .iter()
        .filter(|m| !m.set.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": m.set.to_json(),
            });
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// A conflict: a field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: String,
}

/// One apply request, already parsed.
#[derive(Debug)]
pub struct Apply<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: &'a str,
    pub force: bool,
    pub now: &'a str,
    pub shape: &'a dyn Shape,
}

/// Applies `config` to `live` (its managed fields included). Returns the conflicts when
/// not forced; otherwise the new object.
pub fn apply(live: &Value, config: &Value, req: &Apply<'_>) -> Result<Value, Vec<Conflict>> {
    let mut managed = read_managed(live);
    let new_set = FieldSet::of(config, req.shape);
    let mine = |m: &Managed| {
        m.manager == req.manager && m.operation == "Apply" && m.subresource == req.subresource
    };
    let mut conflicts = Vec::new();
    for m in managed.iter_mut().filter(|m| !mine(m)) {
        for p in m.set.paths() {
            if is_leaf(&new_set, &p) {
                let differs = get(live, &p) != get(config, &p);
                if differs && !req.force {
                    conflicts.push(Conflict {
                        manager: m.manager.clone(),
                        api_version: m.api_version.clone(),
                        field: display(&p),
                    });
                } else if differs {
                    m.set.remove(&p);
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let old_set = managed
        .iter()
        .find(|m| mine(m))
        .map(|m| m.set.clone())
        .unwrap_or_default();
    let mut out = live.clone();
    let mut body = config.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in SERVER_FIELDS {
                meta.remove(*f);
            }
        }
    }
    merge(&mut out, &body, &mut Vec::new(), req.shape);
    // What this manager applied before and no longer does goes, unless someone else owns
    // something at or under it. Shallowest first: a removed node takes its subtree along.
    let mut dropped = old_set.paths();
    dropped.retain(|p| !new_set.touches(p));
    dropped.sort_by_key(Vec::len);
    let mut removed: Vec<Vec<String>> = Vec::new();
    for p in dropped {
        if removed.iter().any(|r| p.starts_with(r))
            || managed.iter().any(|m| !mine(m) && m.set.touches(&p))
        {
            continue;
        }
        remove(&mut out, &p);
        removed.push(p);
    }
    managed.retain(|m| !mine(m));
    managed.push(Managed {
        manager: req.manager.into(),
        operation: "Apply".into(),
        api_version: req.api_version.into(),
        subresource: req.subresource.into(),
        time: req.now.into(),
        set: new_set,
    });
    write_managed(&mut out, &managed);
    Ok(out)
}

/// Records a non-apply write: fields `updater` changed become its own, taken from others;
/// fields that disappeared leave every set.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    updater: &str,
    api_version: &str,
    subresource: &str,
    now: &str,
    shape: &dyn Shape,
) {
    let mut managed = old.map(read_managed).unwrap_or_default();
    let new_set = FieldSet::of(new, shape);
    let old_set = old.map(|o| FieldSet::of(o, shape)).unwrap_or_default();
    let mut changed = FieldSet::default();
    for p in new_set.paths() {
        let leaf = !p.last().is_some_and(|e| e.starts_with("k:"));
        let is_new = !old_set.contains(&p);
        if is_new || (leaf && old.and_then(|o| get(o, &p)) != get(new, &p)) {
            changed.insert(&p);
        }
    }
    let gone: Vec<Vec<String>> = old_set
        .paths()
        .into_iter()
        .filter(|p| !new_set.contains(p))
        .collect();
    for m in &mut managed {
        for p in changed.paths().iter().chain(&gone) {
            // An item's membership stays with whoever created it; its fields move.
            if changed.contains(p) && p.last().is_some_and(|e| e.starts_with("k:")) {
                continue;
            }
            m.set.remove(p);
        }
    }
    if !changed.is_empty() {
        let pos = managed.iter().position(|m| {
            m.manager == updater && m.operation == "Update" && m.subresource == subresource
        });
        let entry = match pos {
            Some(i) => &mut managed[i],
            None => {
                managed.push(Managed {
                    manager: updater.into(),
                    operation: "Update".into(),
                    api_version: api_version.into(),
                    subresource: subresource.into(),
                    time: now.into(),
                    set: FieldSet::default(),
                });
                let last = managed.len() - 1;
                &mut managed[last]
            }
        };
        for p in changed.paths() {
            entry.set.insert(&p);
        }
        entry.time = now.into();
    }
    write_managed(new, &managed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(manager: &'a str, force: bool) -> Apply<'a> {
        Apply {
            manager,
            api_version: "apps/v1",
            subresource: "",
            force,
            now: "2026-01-01T00:00:00Z",
            shape: &Builtin,
        }
    }

    fn deploy(env: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 1, "template": {"spec": {"containers": [
                   {"name": "app", "image": "app:1", "env": env}]}}}})
    }

    #[test]
    fn fieldsv1_round_trip_and_shape() {
        let set = FieldSet::of(&deploy(json!([{"name": "A", "value": "1"}])), &Builtin);
        let j = set.to_json();
        let item = &j["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"];
        assert_eq!(item["."], json!({}));
        assert_eq!(item["f:env"]["k:{\"name\":\"A\"}"]["f:value"], json!({}));
        assert_eq!(FieldSet::from_json(&j), set);
    }

    #[test]
    fn two_managers_merge_env_by_name_and_removal_is_exact() {
        let user = apply(
            &json!({"metadata": {"name": "d"}}),
            &deploy(json!([{"name": "A", "value": "1"}])),
            &req("user", false),
        )
        .unwrap();
        let injector_cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}]}}}});
        let both = apply(&user, &injector_cfg, &req("injector", false)).unwrap();
        let env = &both["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env.as_array().unwrap().len(), 2);
        // The injector withdraws: only its variable goes, the user's container stays.
        let empty =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
        let after = apply(&both, &empty, &req("injector", false)).unwrap();
        assert_eq!(
            after["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(
            after["spec"]["template"]["spec"]["containers"][0]["image"],
            "app:1"
        );
        let managers: Vec<String> = read_managed(&after)
            .into_iter()
            .map(|m| m.manager)
            .collect();
        assert_eq!(managers, ["user"]);
    }

    #[test]
    fn conflicting_value_is_reported_then_forced() {
        let user = apply(
            &json!({"metadata": {"name": "d"}}),
            &deploy(json!([])),
            &req("user", false),
        )
        .unwrap();
        let mut other = deploy(json!([]));
        other["spec"]["replicas"] = json!(3);
        let err = apply(&user, &other, &req("other", false)).unwrap_err();
        assert_eq!(
            err,
            [Conflict {
                manager: "user".into(),
                api_version: "apps/v1".into(),
                field: ".spec.replicas".into()
            }]
        );
        let forced = apply(&user, &other, &req("other", true)).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let m = read_managed(&forced);
        let user_set = &m.iter().find(|m| m.manager == "user").unwrap().set;
        assert!(!user_set.contains(&["f:spec".into(), "f:replicas".into()]));
        // Same value: shared ownership, no conflict.
        assert!(apply(&user, &deploy(json!([])), &req("third", false)).is_ok());
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let user = apply(
            &json!({"metadata": {"name": "d"}}),
            &deploy(json!([])),
            &req("user", false),
        )
        .unwrap();
        let mut new = user.clone();
        new["spec"]["replicas"] = json!(5);
        record_update(
            Some(&user),
            &mut new,
            "kubectl-edit",
            "apps/v1",
            "",
            "t",
            &Builtin,
        );
        let m = read_managed(&new);
        let path: Vec<String> = vec!["f:spec".into(), "f:replicas".into()];
        assert!(
            m.iter()
                .find(|m| m.manager == "kubectl-edit")
                .unwrap()
                .set
                .contains(&path)
        );
        assert!(
            !m.iter()
                .find(|m| m.manager == "user")
                .unwrap()
                .set
                .contains(&path)
        );
    }

    #[test]
    fn display_matches_the_api_server() {
        let p: Vec<String> = ["f:spec", "k:{\"name\":\"app\"}", "f:image"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(display(&p), ".spec[name=\"app\"].image");
    }
}
