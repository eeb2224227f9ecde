//! The API operations: create, get, list, update, patch (merge, JSON, strategic, apply),
//! delete — each through admission, with resource versions, generation, managed fields,
//! finalizers and dry-run as the API server has them.

use super::admission::{self, Call};
use super::fields::{self, Builtin, Schema, Shape};
use super::resources::{ResKey, ResourceDef};
use super::schema;
use super::selector::Selector;
use super::store::{EventType, Filter, State, Stored};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// An authenticated user, as admission reviews carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn new(name: &str, groups: &[&str]) -> User {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        User {
            name: name.into(),
            groups,
        }
    }

    pub fn admin() -> User {
        User::new("kubernetes-admin", &["system:masters"])
    }

    /// The controller manager's own identity, which every built-in controller uses when
    /// it runs without per-controller credentials.
    pub fn controller_manager() -> User {
        User::new("system:kube-controller-manager", &[])
    }

    /// A built-in controller's identity, e.g. `replicaset-controller`.
    pub fn controller(name: &str) -> User {
        User::new(
            &format!("system:serviceaccount:kube-system:{name}"),
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
            ],
        )
    }
}

/// A failed request: the HTTP code and a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub status: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: String) -> ApiError {
        ApiError {
            code,
            status: json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message, "reason": reason, "code": code}),
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.status["details"] = details;
        self
    }

    pub fn bad_request(message: String) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn not_found(def: &ResourceDef, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", def.qualified()),
        )
        .with_details(json!({"name": name, "group": def.group, "kind": def.plural}))
    }

    pub fn conflict(def: &ResourceDef, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again",
                def.qualified()
            ),
        )
        .with_details(json!({"name": name, "group": def.group, "kind": def.plural}))
    }

    pub fn invalid(def: &ResourceDef, name: &str, errs: &[schema::FieldError]) -> ApiError {
        let parts: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        let joined = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let kind_group = if def.group.is_empty() {
            def.kind.clone()
        } else {
            format!("{}.{}", def.kind, def.group)
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
            .collect();
        ApiError::new(
            422,
            "Invalid",
            format!("{kind_group} {name:?} is invalid: {joined}"),
        )
        .with_details(json!({"name": name, "group": def.group, "kind": def.kind, "causes": causes}))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A write's result: the object, and the admission warnings for the client.
#[derive(Debug, Clone)]
pub struct Reply {
    pub object: Value,
    pub warnings: Vec<String>,
}

impl Reply {
    fn of(object: Value) -> Reply {
        Reply {
            object,
            warnings: Vec::new(),
        }
    }
}

/// What a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: ResourceDef,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
}

/// Options every write carries.
#[derive(Debug, Clone)]
pub struct WriteOpts {
    pub user: User,
    pub dry_run: bool,
    pub field_manager: String,
    pub force: bool,
}

/// Counts of requests by verb, for benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    pub get: AtomicU64,
    pub list: AtomicU64,
    pub watch: AtomicU64,
    pub create: AtomicU64,
    pub update: AtomicU64,
    pub patch: AtomicU64,
    pub delete: AtomicU64,
    /// Writes by resource plural (subresources as `plural/sub`), and by user.
    by_resource: Mutex<HashMap<String, u64>>,
    by_user: Mutex<HashMap<(String, String), u64>>,
}

impl Counters {
    pub fn snapshot(&self) -> [(&'static str, u64); 7] {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("get", l(&self.get)),
            ("list", l(&self.list)),
            ("watch", l(&self.watch)),
            ("create", l(&self.create)),
            ("update", l(&self.update)),
            ("patch", l(&self.patch)),
            ("delete", l(&self.delete)),
        ]
    }

    pub fn writes(&self) -> u64 {
        self.snapshot()[3..].iter().map(|(_, n)| n).sum()
    }

    fn write(&self, verb: &AtomicU64, t: &Target, user: &User) {
        verb.fetch_add(1, Ordering::Relaxed);
        let key = if t.subresource.is_empty() {
            t.def.plural.clone()
        } else {
            format!("{}/{}", t.def.plural, t.subresource)
        };
        *self
            .by_user
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((user.name.clone(), key.clone()))
            .or_default() += 1;
        *self
            .by_resource
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Writes by one user so far, by resource.
    pub fn writes_of(&self, user: &str) -> HashMap<String, u64> {
        let by_user = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        by_user
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|((_, r), n)| (r.clone(), *n))
            .collect()
    }

    /// Writes by resource so far, e.g. `deployments`, `postgrestlspolicies/status`.
    pub fn writes_by_resource(&self) -> HashMap<String, u64> {
        self.by_resource
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The stand-in's state and configuration, shared by the HTTP layer and controllers.
#[derive(Debug)]
pub struct Server {
    state: Mutex<State>,
    /// Where `<service>.<namespace>.svc:<port>` is served: the stand-in's kube-proxy.
    /// A Service's ready endpoints, taken in turn.
    pub routes: Mutex<HashMap<(String, String, i32), Vec<SocketAddr>>>,
    route_turn: AtomicU64,
    /// Notified by a restart: every open connection is cut.
    pub restarted: tokio::sync::Notify,
    pub write_latency_us: AtomicU64,
    pub counters: Counters,
    pub bookmark_every: Duration,
    pub address: Mutex<String>,
    uids: AtomicU64,
    /// Authorize requests with RBAC (`Options::rbac`); off, every user may do everything.
    pub rbac: std::sync::atomic::AtomicBool,
    /// The rules that allowed requests, with who asked and what.
    pub grants: Mutex<std::collections::BTreeSet<super::rbac::Grant>>,
    /// Idle keep-alive connections to webhooks, as kube-apiserver's webhook clients keep them.
    pub webhook_connections: super::admission::Idle,
}

/// A patch body and how to read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Server {
    pub fn new(state: State, bookmark_every: Duration) -> Server {
        Server {
            state: Mutex::new(state),
            routes: Mutex::new(HashMap::new()),
            route_turn: AtomicU64::new(0),
            restarted: tokio::sync::Notify::new(),
            write_latency_us: AtomicU64::new(0),
            counters: Counters::default(),
            bookmark_every,
            address: Mutex::new(String::new()),
            uids: AtomicU64::new(1),
            rbac: std::sync::atomic::AtomicBool::new(true),
            grants: Mutex::new(Default::default()),
            webhook_connections: Default::default(),
        }
    }

    /// Authorizes a request (see [`super::rbac`]) and records the rule that allowed it.
    pub fn authorize(&self, user: &User, a: &super::rbac::Attributes<'_>) -> ApiResult<()> {
        if !self.rbac.load(Ordering::Relaxed) {
            return Ok(());
        }
        let grant = super::rbac::authorize(&self.state(), user, a)?;
        if let Some(g) = grant {
            self.grants
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(g);
        }
        Ok(())
    }

    /// The rules that allowed requests so far.
    pub fn grants(&self) -> std::collections::BTreeSet<super::rbac::Grant> {
        self.grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next endpoint of a Service, round robin as kube-proxy spreads connections.
    pub fn endpoint(&self, ns: &str, name: &str, port: i32) -> Option<SocketAddr> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let ready = routes.get(&(ns.to_string(), name.to_string(), port))?;
        let turn = self.route_turn.fetch_add(1, Ordering::Relaxed) as usize;
        ready.get(turn % ready.len().max(1)).copied()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn uid(&self) -> String {
        let n = self.uids.fetch_add(1, Ordering::Relaxed);
        let t = jiff::Timestamp::now().as_nanosecond() as u64;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (t >> 32) as u32,
            (t >> 16) as u16,
            (t & 0xfff) as u16,
            (n >> 48) as u16 & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }

    pub fn get(&self, t: &Target) -> ApiResult<Arc<Stored>> {
        self.state()
            .get(&t.def.key(), &t.namespace, &t.name)
            .ok_or_else(|| ApiError::not_found(&t.def, &t.name))
    }

    /// A list response body; `limit`/`continue` page through key order.
    pub fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        labels: &Selector,
        fields_sel: &Selector,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> ApiResult<Bytes> {
        let after = match cont {
            Some(c) => Some(decode_continue(c)?),
            None => None,
        };
        let state = self.state();
        let mut out = Vec::with_capacity(4096);
        let mut n = 0;
        let mut next = None;
        out.extend_from_slice(b"{\"items\":[");
        let mut last = None;
        for (id, o) in state.range(&def.key(), ns, after) {
            if !labels.matches(&o.value) || !fields_sel.matches(&o.value) {
                continue;
            }
            if limit.is_some_and(|l| n >= l) {
                next = last.take();
                break;
            }
            last = Some(id.clone());
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&o.json);
            n += 1;
        }
        let mut meta = json!({"resourceVersion": state.rv.to_string()});
        if let Some((a, b)) = next {
            meta["continue"] = json!(encode_continue(&a, &b));
        }
        out.extend_from_slice(b"],");
        let tail = json!({"apiVersion": def.api_version(), "kind": format!("{}List", def.kind), "metadata": meta});
        let tail = serde_json::to_vec(&tail).unwrap_or_default();
        out.extend_from_slice(&tail[1..]);
        Ok(Bytes::from(out))
    }

    /// Starts a watch. With `initial_events`, the current objects come first as ADDED,
    /// then a bookmark marking their end, as `sendInitialEvents=true` asks.
    #[allow(clippy::too_many_arguments)]
    pub fn watch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        labels: Selector,
        fields_sel: Selector,
        since: Option<u64>,
        initial_events: bool,
        tx: tokio::sync::mpsc::UnboundedSender<Bytes>,
    ) -> ApiResult<()> {
        let filter = Filter {
            key: def.key(),
            namespace: ns.map(str::to_string),
            labels,
            fields: fields_sel,
        };
        let mut state = self.state();
        let since = if initial_events { None } else { since };
        state.watch(filter, since, tx.clone()).map_err(|oldest| {
            ApiError::new(
                410,
                "Expired",
                format!(
                    "too old resource version: {} ({oldest})",
                    since.unwrap_or_default()
                ),
            )
        })?;
        if initial_events {
            let _ = tx.send(bookmark(def, state.rv, true));
        }
        Ok(())
    }

    /// Sends a bookmark into a watch stream, in order with its events.
    pub fn send_bookmark(
        &self,
        def: &ResourceDef,
        tx: &tokio::sync::mpsc::UnboundedSender<Bytes>,
    ) -> bool {
        let state = self.state();
        tx.send(bookmark(def, state.rv, false)).is_ok()
    }

    fn shape<'a>(def: &'a ResourceDef) -> Box<dyn Shape + 'a> {
        match &def.schema {
            Some(s) => Box::new(Schema(s)),
            None => Box::new(Builtin),
        }
    }

    async fn write_delay(&self) {
        let us = self.write_latency_us.load(Ordering::Relaxed);
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }

    fn namespace_check(&self, t: &Target, creating: bool) -> ApiResult<()> {
        if !t.def.namespaced {
            return Ok(());
        }
        let ns_key: ResKey = (String::new(), "namespaces".into());
        match self.state().get(&ns_key, "", &t.namespace) {
            None => Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces {:?} not found", t.namespace),
            )
            .with_details(json!({"name": t.namespace, "kind": "namespaces"}))),
            Some(ns) if creating && ns.value["metadata"]["deletionTimestamp"].is_string() => {
                Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} {:?} is forbidden: unable to create new content in namespace {} because it is being terminated",
                        t.def.qualified(),
                        t.name,
                        t.namespace
                    ),
                ))
            }
            Some(_) => Ok(()),
        }
    }

    /// Creates an object.
    pub async fn create(&self, t: &Target, obj: Value, o: &WriteOpts) -> ApiResult<Reply> {
        self.counters.write(&self.counters.create, t, &o.user);
        self.create_with(t, obj, o, None).await
    }

    /// Creates an object; `managed` replaces the managed fields a create records (an
    /// apply that creates owns its fields as `Apply`).
    async fn create_with(
        &self,
        t: &Target,
        mut obj: Value,
        o: &WriteOpts,
        managed: Option<Value>,
    ) -> ApiResult<Reply> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body is not a JSON object".into(),
            ));
        }
        let mut t = t.clone();
        let meta = obj
            .as_object_mut()
            .map(|m| m.entry("metadata").or_insert_with(|| json!({})))
            .filter(|m| m.is_object())
            .ok_or_else(|| ApiError::bad_request("metadata must be an object".into()))?;
        let body_ns = meta["namespace"].as_str().unwrap_or_default().to_string();
        if t.def.namespaced {
            if !body_ns.is_empty() && body_ns != t.namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            meta["namespace"] = json!(t.namespace);
        }
        let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) => format!("{g}{}", &self.uid()[19..24]),
            _ => {
                return Err(ApiError::invalid(
                    &t.def,
                    "",
                    &[schema::FieldError {
                        field: "metadata.name".into(),
                        reason: "FieldValueRequired",
                        message: "Required value: name or generateName is required".into(),
                    }],
                ));
            }
        };
        meta["name"] = json!(name);
        t.name = name.clone();
        self.namespace_check(&t, true)?;
        if let Some(m) = meta.as_object_mut() {
            m.insert("uid".into(), json!(self.uid()));
            m.insert("creationTimestamp".into(), json!(now()));
            m.insert("generation".into(), json!(1));
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "selfLink",
                "managedFields",
            ] {
                m.remove(f);
            }
        }
        obj["apiVersion"] = json!(t.def.api_version());
        obj["kind"] = json!(t.def.kind);
        if t.def.has_status() && t.def.schema.is_some() {
            // A custom resource's status is written through its subresource only.
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        self.decode(&t.def, &mut obj);
        if t.def.kind == "Namespace" {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        match managed {
            Some(m) => obj["metadata"]["managedFields"] = m,
            None => {
                let shape = Self::shape(&t.def);
                let av = t.def.api_version();
                fields::record_update(None, &mut obj, &o.field_manager, &av, "", &now(), &*shape);
            }
        }
        let call = Call::new(&t, "CREATE", o);
        let (obj, warnings) = self.admit(call, obj, None).await?;
        if o.dry_run {
            return Ok(Reply {
                object: obj,
                warnings,
            });
        }
        self.write_delay().await;
        let stored = {
            let mut state = self.state();
            if state.get(&t.def.key(), &t.namespace, &name).is_some() {
                return Err(ApiError::new(
                    409,
                    "AlreadyExists",
                    format!("{} {name:?} already exists", t.def.qualified()),
                )
                .with_details(json!({"name": name, "group": t.def.group, "kind": t.def.plural})));
            }
            state.commit(&t.def.key(), &t.namespace, &name, EventType::Added, obj)
        };
        self.after_commit(&t, &stored);
        Ok(Reply {
            object: stored.value.clone(),
            warnings,
        })
    }

    /// Defaulting and pruning on decode (custom resources).
    fn decode(&self, def: &ResourceDef, obj: &mut Value) {
        if let Some(s) = &def.schema {
            schema::default_and_prune(s, obj, true);
        }
        // A Secret's `stringData` is write-only: merged into `data` (base64), over it.
        if def.group.is_empty()
            && def.kind == "Secret"
            && let Some(Value::Object(strings)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            use base64::Engine;
            if !obj["data"].is_object() {
                obj["data"] = json!({});
            }
            for (k, v) in strings {
                let text = v.as_str().unwrap_or_default();
                obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
            }
        }
    }

    /// Mutating admission, validation, validating admission.
    async fn admit(
        &self,
        call: Call,
        mut obj: Value,
        old: Option<&Value>,
    ) -> ApiResult<(Value, Vec<String>)> {
        let def = call.target.def.clone();
        let mut warnings = admission::mutate(self, &call, &mut obj, old).await?;
        if let Some(s) = &def.schema {
            let errs = schema::validate(s, &obj, old);
            if !errs.is_empty() {
                return Err(ApiError::invalid(&def, &call.target.name, &errs));
            }
        }
        warnings.extend(admission::validate(self, &call, &obj, old).await?);
        Ok((obj, warnings))
    }

    /// Replaces an object (PUT), or its status or ephemeral containers.
    pub async fn update(&self, t: &Target, body: Value, o: &WriteOpts) -> ApiResult<Reply> {
        self.counters.write(&self.counters.update, t, &o.user);
        let current = self.get(t)?;
        let precondition = body["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        self.write(t, current, body, precondition, o, PatchType::Merge)
            .await
    }

    /// Patches an object; an apply patch creates it when absent.
    pub async fn patch(
        &self,
        t: &Target,
        ty: PatchType,
        body: &[u8],
        o: &WriteOpts,
    ) -> ApiResult<Reply> {
        self.counters.write(&self.counters.patch, t, &o.user);
        let patch: Value = match ty {
            PatchType::Apply => parse_apply(body)?,
            _ => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        };
        if ty == PatchType::Apply && o.field_manager.is_empty() {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            ));
        }
        // The API server retries a patch on a conflicting concurrent write.
        for _ in 0..5 {
            let current = match self.get(t) {
                Ok(c) => c,
                Err(e) if ty == PatchType::Apply && e.code == 404 && t.subresource.is_empty() => {
                    return self.apply_create(t, patch, o).await;
                }
                Err(e) => return Err(e),
            };
            let precondition = patch["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string);
            let new = self.patched(t, &current.value, ty, &patch, o)?;
            match self
                .write(t, current, new, precondition.clone(), o, ty)
                .await
            {
                Err(e)
                    if e.code == 409
                        && precondition.is_none()
                        && e.status["reason"] == "Conflict"
                        && e.status["details"]["causes"].is_null() =>
                {
                    continue;
                }
                other => return other,
            }
        }
        Err(ApiError::conflict(&t.def, &t.name))
    }

    fn patched(
        &self,
        t: &Target,
        cur: &Value,
        ty: PatchType,
        patch: &Value,
        o: &WriteOpts,
    ) -> ApiResult<Value> {
        let mut new = cur.clone();
        match ty {
            PatchType::Merge => json_patch::merge(&mut new, patch),
            PatchType::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                json_patch::patch(&mut new, &ops).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the JSON patch could not be applied: {e}"),
                    )
                })?;
            }
            PatchType::Strategic => strategic(&mut new, patch, &mut Vec::new()),
            PatchType::Apply => new = apply(t, cur, patch, o)?,
        }
        Ok(new)
    }

    async fn apply_create(&self, t: &Target, patch: Value, o: &WriteOpts) -> ApiResult<Reply> {
        let mut skeleton = json!({"metadata": {"name": t.name}});
        if t.def.namespaced {
            skeleton["metadata"]["namespace"] = json!(t.namespace);
        }
        let obj = apply(t, &skeleton, &patch, o)?;
        let managed = obj["metadata"]["managedFields"].clone();
        self.create_with(t, obj, o, Some(managed)).await
    }

    /// The common end of update and patch: subresource scoping, immutable metadata,
    /// generation, managed fields, admission, then a commit guarded by resource version.
    async fn write(
        &self,
        t: &Target,
        current: Arc<Stored>,
        body: Value,
        precondition: Option<String>,
        o: &WriteOpts,
        ty: PatchType,
    ) -> ApiResult<Reply> {
        let cur = &current.value;
        if let Some(rv) = &precondition
            && *rv != current.rv.to_string()
        {
            return Err(ApiError::conflict(&t.def, &t.name));
        }
        let mut new = match t.subresource.as_str() {
            "" => {
                let mut n = body;
                if t.def.has_status() && t.def.kind != "Namespace" {
                    set_or_remove(&mut n, "status", cur.get("status"));
                }
                n
            }
            "status" => {
                let mut n = cur.clone();
                set_or_remove(&mut n, "status", body.get("status"));
                n
            }
            "ephemeralcontainers" => {
                let mut n = cur.clone();
                n["spec"]["ephemeralContainers"] = body["spec"]["ephemeralContainers"].clone();
                n
            }
            other => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource ({other})"),
                ));
            }
        };
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body is not a JSON object".into(),
            ));
        }
        if let Some(bm) = new["metadata"]["name"].as_str()
            && bm != t.name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bm}) does not match the name on the URL ({})",
                t.name
            )));
        }
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            set_or_remove(&mut new["metadata"], f, cur["metadata"].get(f));
        }
        new["apiVersion"] = json!(t.def.api_version());
        new["kind"] = json!(t.def.kind);
        if t.subresource.is_empty() {
            self.decode(&t.def, &mut new);
        }
        let spec_changed = strip(cur) != strip(&new);
        if spec_changed {
            let g = cur["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if ty != PatchType::Apply {
            let shape = Self::shape(&t.def);
            let mut old_with_managed = cur.clone();
            if !new["metadata"]["managedFields"].is_null()
                && new["metadata"]["managedFields"] != cur["metadata"]["managedFields"]
            {
                // A client that sends managedFields replaces them.
                old_with_managed["metadata"]["managedFields"] =
                    new["metadata"]["managedFields"].clone();
            }
            fields::record_update(
                Some(&old_with_managed),
                &mut new,
                &o.field_manager,
                &t.def.api_version(),
                &t.subresource,
                &now(),
                &*shape,
            );
        }
        if same_ignoring_times(cur, &new) {
            // A write that changes nothing is not a write: no new resource version, no event.
            return Ok(Reply::of(cur.clone()));
        }
        let call = Call::new(t, "UPDATE", o);
        let (new, warnings) = self.admit(call, new, Some(cur)).await?;
        if o.dry_run {
            return Ok(Reply {
                object: new,
                warnings,
            });
        }
        self.write_delay().await;
        let finalized = new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            && t.def.kind != "Namespace";
        let typ = if finalized {
            EventType::Deleted
        } else {
            EventType::Modified
        };
        let stored = self.commit_if_unchanged(t, current.rv, typ, new)?;
        if finalized {
            self.after_delete(t, &stored);
        }
        self.after_commit(t, &stored);
        Ok(Reply {
            object: stored.value.clone(),
            warnings,
        })
    }

    /// Deletes an object; with finalizers it is only marked.
    pub async fn delete(
        &self,
        t: &Target,
        o: &WriteOpts,
        preconditions: &Value,
    ) -> ApiResult<Reply> {
        self.counters.write(&self.counters.delete, t, &o.user);
        let current = self.get(t)?;
        if let Some(uid) = preconditions["uid"].as_str()
            && current.value["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict(&t.def, &t.name));
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str()
            && rv != current.rv.to_string()
        {
            return Err(ApiError::conflict(&t.def, &t.name));
        }
        let call = Call::new(t, "DELETE", o);
        admission::validate_delete(self, &call, &current.value).await?;
        if o.dry_run {
            return Ok(Reply::of(current.value.clone()));
        }
        let has_finalizers = current.value["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
            || t.def.kind == "Namespace";
        let mut marked = current.value.clone();
        if has_finalizers {
            if marked["metadata"]["deletionTimestamp"].is_string() {
                return Ok(Reply::of(marked));
            }
            marked["metadata"]["deletionTimestamp"] = json!(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if t.def.kind == "Namespace" {
                marked["status"]["phase"] = json!("Terminating");
            }
        }
        self.write_delay().await;
        let typ = if has_finalizers {
            EventType::Modified
        } else {
            EventType::Deleted
        };
        let stored = self.commit_if_unchanged(t, current.rv, typ, marked)?;
        if !has_finalizers {
            self.after_delete(t, &stored);
        }
        self.after_commit(t, &stored);
        Ok(Reply::of(stored.value.clone()))
    }

    /// Commits only if the object is still at resource version `rv` (the API server's
    /// guaranteed update): a concurrent write in between is a conflict.
    fn commit_if_unchanged(
        &self,
        t: &Target,
        rv: u64,
        typ: EventType,
        value: Value,
    ) -> ApiResult<Arc<Stored>> {
        let mut state = self.state();
        match state.get(&t.def.key(), &t.namespace, &t.name) {
            Some(now) if now.rv == rv => {}
            Some(_) => return Err(ApiError::conflict(&t.def, &t.name)),
            None => return Err(ApiError::not_found(&t.def, &t.name)),
        }
        Ok(state.commit(&t.def.key(), &t.namespace, &t.name, typ, value))
    }

    /// CRDs become served resources once stored.
    fn after_commit(&self, t: &Target, stored: &Arc<Stored>) {
        if t.def.kind != "CustomResourceDefinition" {
            return;
        }
        let crd = &stored.value;
        let gone = crd["metadata"]["deletionTimestamp"].is_string();
        let new_defs = super::resources::from_crd(crd);
        let mut state = self.state();
        let group = crd["spec"]["group"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let plural = crd["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        state
            .defs
            .retain(|d| !(d.group == group && d.plural == plural && d.schema.is_some()));
        if gone || state.get(&t.def.key(), "", &t.name).is_none() {
            return;
        }
        state.defs.extend(new_defs);
        if crd["status"]["conditions"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            let mut established = crd.clone();
            let now = now();
            established["status"] = json!({
                "acceptedNames": crd["spec"]["names"],
                "storedVersions": crd["spec"]["versions"].as_array().map(|vs| vs.iter()
                    .filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": now},
                ]
            });
            state.commit(&t.def.key(), "", &t.name, EventType::Modified, established);
        }
    }

    /// Background cascading deletion of dependents, and a CRD's objects with it.
    fn after_delete(&self, t: &Target, stored: &Arc<Stored>) {
        let uid = stored.value["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut state = self.state();
        let keys: Vec<ResKey> = state.defs.iter().map(ResourceDef::key).collect();
        let mut doomed = Vec::new();
        for key in keys {
            for ((ns, name), o) in state.range(&key, None, None) {
                let owned = o.value["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid.as_str()));
                if owned
                    && !doomed.iter().any(|(k, n, m): &(ResKey, String, String)| {
                        k == &key && n == ns && m == name
                    })
                {
                    doomed.push((key.clone(), ns.clone(), name.clone()));
                }
            }
        }
        if t.def.kind == "CustomResourceDefinition" {
            let key: ResKey = (
                stored.value["spec"]["group"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                stored.value["spec"]["names"]["plural"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            );
            for ((ns, name), _) in state.range(&key, None, None) {
                doomed.push((key.clone(), ns.clone(), name.clone()));
            }
            state
                .defs
                .retain(|d| !(d.group == key.0 && d.plural == key.1 && d.schema.is_some()));
        }
        for (key, ns, name) in doomed {
            if let Some(o) = state.get(&key, &ns, &name) {
                let v = o.value.clone();
                state.commit(&key, &ns, &name, EventType::Deleted, v);
            }
        }
    }

    /// Direct access for controllers and tests: commit without admission (the API
    /// server's own writes, such as a namespace's finalization).
    pub fn commit_raw(
        &self,
        key: &ResKey,
        ns: &str,
        name: &str,
        typ: EventType,
        v: Value,
    ) -> Arc<Stored> {
        self.state().commit(key, ns, name, typ, v)
    }
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta});
    super::store::watch_line("BOOKMARK", obj.to_string().as_bytes())
}

fn set_or_remove(obj: &mut Value, field: &str, v: Option<&Value>) {
    if let Some(m) = obj.as_object_mut() {
        match v {
            Some(v) => {
                m.insert(field.into(), v.clone());
            }
            None => {
                m.remove(field);
            }
        }
    }
}

/// The object without metadata and status: what `generation` counts changes of.
fn strip(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    c
}

fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    let clean = |v: &Value| {
        let mut c = v.clone();
        if let Some(mf) = c["metadata"]["managedFields"].as_array_mut() {
            for e in mf {
                if let Some(m) = e.as_object_mut() {
                    m.remove("time");
                }
            }
        }
        if let Some(m) = c["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        c
    };
    clean(a) == clean(b)
}

fn parse_apply(body: &[u8]) -> ApiResult<Value> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(_) => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the apply patch is not UTF-8".into()))?;
            let opts = serde_saphyr::options! { with_snippet: false };
            serde_saphyr::from_str_with_options(text, opts)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
    }
}

/// Server-side apply of `patch` onto `cur` by the request's field manager.
fn apply(t: &Target, cur: &Value, patch: &Value, o: &WriteOpts) -> ApiResult<Value> {
    let shape = Server::shape(&t.def);
    let av = t.def.api_version();
    let now = now();
    let req = fields::Apply {
        manager: &o.field_manager,
        api_version: &av,
        subresource: &t.subresource,
        force: o.force,
        now: &now,
        shape: &*shape,
    };
    fields::apply(cur, patch, &req).map_err(|c| apply_conflict(&c))
}

fn apply_conflict(c: &[fields::Conflict]) -> ApiError {
    let n = c.len();
    let first = &c[0];
    let message = if n == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with {:?} using {}: {}",
            first.manager, first.api_version, first.field
        )
    } else {
        let lines: Vec<String> = c.iter().map(|x| format!("- {}", x.field)).collect();
        format!(
            "Apply failed with {n} conflicts: conflicts with {:?} using {}:\n{}",
            first.manager,
            first.api_version,
            lines.join("\n")
        )
    };
    let causes: Vec<Value> = c
        .iter()
        .map(|x| {
            json!({"reason": "FieldManagerConflict",
                        "message": format!("conflict with {:?} using {}", x.manager, x.api_version),
                        "field": x.field})
        })
        .collect();
    ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
}

/// Strategic merge patch for the keyed lists the stand-in knows (see `fields::Builtin`);
/// `null` deletes a field; other lists are replaced. `$patch` directives are not read.
fn strategic(target: &mut Value, patch: &Value, path: &mut Vec<String>) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, pv) in p {
                if pv.is_null() {
                    t.remove(k);
                    continue;
                }
                path.push(k.clone());
                match t.get_mut(k) {
                    Some(tv) => strategic(tv, pv, path),
                    None => {
                        t.insert(k.clone(), pv.clone());
                    }
                }
                path.pop();
            }
        }
        (Value::Array(t), Value::Array(p)) => {
            let names: Vec<&str> = path.iter().map(String::as_str).collect();
            match Builtin.list(&names) {
                fields::ListKind::Map(keys) => {
                    for item in p {
                        let found = t
                            .iter_mut()
                            .find(|x| keys.iter().all(|k| x.get(k) == item.get(k)));
                        match found {
                            Some(x) => strategic(x, item, path),
                            None => t.push(item.clone()),
                        }
                    }
                }
                _ => *t = p.clone(),
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn encode_continue(ns: &str, name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(json!([ns, name]).to_string())
}

fn decode_continue(c: &str) -> ApiResult<(String, String)> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid".into());
    let raw = base64::engine::general_purpose::STANDARD
        .decode(c)
        .map_err(|_| bad())?;
    let v: (String, String) = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok(v)
}
