//! Minimal built-in controllers, so that Pods exist as they do in a cluster: Deployment →
//! ReplicaSet → Pod, CronJob (on demand) → Job → Pod, namespace termination. Each writes
//! through the API with its real controller identity (per controller, or the controller
//! manager's single one), so what it makes goes through admission: ReplicaSets as
//! `deployment-controller`, Jobs as `cronjob-controller`, Pods as `replicaset-controller` /
//! `job-controller`.

use super::ControllerIdentity;
use super::api::{Server, Target, User, WriteOpts};
use super::resources::{ResKey, ResourceDef};
use super::store::{Change, EventType};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn encode(mut n: u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize];
            n /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

fn suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    encode(
        fnv(&n.to_le_bytes()) ^ jiff::Timestamp::now().as_nanosecond() as u64,
        5,
    )
}

/// The reason the Deployment controller gives when it cannot create a ReplicaSet.
const RS_CREATE_ERROR: &str = "ReplicaSetCreateError";

/// A Warning Event about `obj`, from `component`.
fn event(obj: &Value, reason: &str, message: &str, component: &str) -> Value {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}.")},
        "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": name,
                           "namespace": obj["metadata"]["namespace"], "uid": obj["metadata"]["uid"]},
        "reason": reason, "type": "Warning", "message": message,
        "source": {"component": component}, "count": 1,
    })
}

#[derive(Debug)]
pub struct Controllers {
    server: Arc<Server>,
    identity: ControllerIdentity,
}

fn def(server: &Server, group: &str, plural: &str) -> Option<ResourceDef> {
    let key: ResKey = (group.into(), plural.into());
    server.state().storage_def(&key).cloned()
}

fn opts(identity: ControllerIdentity, controller: &str) -> WriteOpts {
    WriteOpts {
        user: match identity {
            ControllerIdentity::PerController => User::controller(controller),
            ControllerIdentity::Manager => User::controller_manager(),
        },
        dry_run: false,
        field_manager: controller.into(),
        force: false,
    }
}

fn owner_ref(obj: &Value) -> Value {
    json!({
        "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    })
}

fn owned_by(obj: &Value, owner_uid: &Value) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|r| {
            r.iter()
                .any(|o| &o["uid"] == owner_uid && o["controller"] == true)
        })
}

fn target(def: &ResourceDef, ns: &str, name: &str) -> Target {
    Target {
        def: def.clone(),
        namespace: ns.into(),
        name: name.into(),
        subresource: String::new(),
    }
}

impl Controllers {
    /// Starts the controllers; they run until the server is dropped.
    pub fn start(server: Arc<Server>, identity: ControllerIdentity) {
        let mut rx = server.state().subscribe();
        let c = Controllers { server, identity };
        tokio::spawn(async move {
            let mut resync = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    change = rx.recv() => match change {
                        Some(change) => c.on_change(&change).await,
                        None => break,
                    },
                    _ = resync.tick() => c.resync().await,
                }
            }
        });
    }

    async fn on_change(&self, c: &Change) {
        let obj = &c.obj.value;
        match (c.key.0.as_str(), c.key.1.as_str()) {
            ("apps", "deployments") if c.typ != EventType::Deleted => self.deployment(obj).await,
            ("apps", "replicasets") if c.typ != EventType::Deleted => {
                self.replicas(obj, "replicaset-controller").await
            }
            ("batch", "jobs") if c.typ != EventType::Deleted => {
                self.replicas(obj, "job-controller").await
            }
            ("", "pods") if c.typ == EventType::Deleted => self.pod_gone(obj).await,
            ("", "namespaces") if obj["metadata"]["deletionTimestamp"].is_string() => {
                self.terminate(&c.namespace_or_name()).await
            }
            _ => {}
        }
        if !c.namespace.is_empty() && c.typ == EventType::Deleted {
            self.maybe_finish_namespace(&c.namespace).await;
        }
    }

    fn opts(&self, controller: &str) -> WriteOpts {
        opts(self.identity, controller)
    }

    /// Retries failed creations, as the controllers' work queues do.
    async fn resync(&self) {
        let key: ResKey = ("apps".into(), "deployments".into());
        let stalled: Vec<Value> = self
            .server
            .state()
            .range(&key, None, None)
            .filter(|(_, o)| {
                o.value["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["reason"] == RS_CREATE_ERROR))
            })
            .map(|(_, o)| o.value.clone())
            .collect();
        for d in stalled {
            self.deployment(&d).await;
        }
        for (group, plural, who) in [
            ("apps", "replicasets", "replicaset-controller"),
            ("batch", "jobs", "job-controller"),
        ] {
            let key: ResKey = (group.into(), plural.into());
            let pending: Vec<Value> = self
                .server
                .state()
                .range(&key, None, None)
                .filter(|(_, o)| {
                    o.value["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "ReplicaFailure" || c["type"] == "FailedCreate")
                    })
                })
                .map(|(_, o)| o.value.clone())
                .collect();
            for o in pending {
                self.replicas(&o, who).await;
            }
        }
    }

    async fn deployment(&self, d: &Value) {
        let (Some(rs_def), Some(d_def)) = (
            def(&self.server, "apps", "replicasets"),
            def(&self.server, "apps", "deployments"),
        ) else {
            return;
        };
        if d["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        let ns = d["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        let template = &d["spec"]["template"];
        let hash = encode(fnv(template.to_string().as_bytes()), 10);
        let rs_name = format!("{name}-{hash}");
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let uid = &d["metadata"]["uid"];
        let key = rs_def.key();
        let existing: Vec<Value> = self
            .server
            .state()
            .range(&key, Some(ns), None)
            .filter(|(_, o)| owned_by(&o.value, uid))
            .map(|(_, o)| o.value.clone())
            .collect();
        let o = self.opts("deployment-controller");
        let mut failure = None;
        for old in existing
            .iter()
            .filter(|r| r["metadata"]["name"] != rs_name.as_str())
        {
            if old["spec"]["replicas"] != 0 {
                let mut scaled = old.clone();
                scaled["spec"]["replicas"] = json!(0);
                let n = old["metadata"]["name"].as_str().unwrap_or_default();
                let _ = self
                    .server
                    .update(&target(&rs_def, ns, n), scaled, &o)
                    .await;
            }
        }
        match existing
            .iter()
            .find(|r| r["metadata"]["name"] == rs_name.as_str())
        {
            Some(cur) if cur["spec"]["replicas"] == replicas => {}
            Some(cur) => {
                let mut scaled = cur.clone();
                scaled["spec"]["replicas"] = json!(replicas);
                let _ = self
                    .server
                    .update(&target(&rs_def, ns, &rs_name), scaled, &o)
                    .await;
            }
            None => {
                let mut labels = template["metadata"]["labels"].clone();
                if !labels.is_object() {
                    labels = json!({});
                }
                labels["pod-template-hash"] = json!(hash);
                let mut tpl = template.clone();
                tpl["metadata"]["labels"] = labels.clone();
                let mut selector = d["spec"]["selector"].clone();
                if !selector.is_object() {
                    selector = json!({});
                }
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                                 "ownerReferences": [owner_ref(d)]},
                    "spec": {"replicas": replicas, "selector": selector, "template": tpl},
                });
                if let Err(e) = self.server.create(&target(&rs_def, ns, ""), rs, &o).await {
                    let msg = e.status["message"].as_str().unwrap_or_default();
                    failure = Some(format!(
                        "Failed to create new replica set \"{rs_name}\": {msg}"
                    ));
                }
            }
        }
        let mut status =
            json!({"observedGeneration": d["metadata"]["generation"], "replicas": replicas});
        // A ReplicaSet that cannot be created stalls the rollout, as the real controller
        // reports it: a Warning Event and `Progressing=False`, retried on resync.
        if let Some(msg) = &failure {
            status["conditions"] = json!([{"type": "Progressing", "status": "False",
                                          "reason": RS_CREATE_ERROR, "message": msg}]);
            let reported = d["status"]["conditions"] == status["conditions"];
            if let (false, Some(ev_def)) = (reported, def(&self.server, "", "events")) {
                let ev = event(d, RS_CREATE_ERROR, msg, "deployment-controller");
                let _ = self.server.create(&target(&ev_def, ns, ""), ev, &o).await;
            }
        }
        if d["status"]["observedGeneration"] != status["observedGeneration"]
            || d["status"]["conditions"] != status["conditions"]
        {
            let mut t = target(&d_def, ns, name);
            t.subresource = "status".into();
            let _ = self.server.update(&t, json!({"status": status}), &o).await;
        }
    }

    /// ReplicaSets and Jobs: keep `replicas` (`parallelism`) Pods, created as the controller.
    async fn replicas(&self, owner: &Value, who: &str) {
        let Some(pod_def) = def(&self.server, "", "pods") else {
            return;
        };
        if owner["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        let is_job = owner["kind"] == "Job";
        let want = if is_job {
            let done = owner["status"]["succeeded"].as_i64().unwrap_or(0);
            if done > 0 {
                0
            } else {
                owner["spec"]["parallelism"].as_i64().unwrap_or(1)
            }
        } else {
            owner["spec"]["replicas"].as_i64().unwrap_or(1)
        };
        let ns = owner["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = owner["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let uid = owner["metadata"]["uid"].clone();
        let pods: Vec<String> = self
            .server
            .state()
            .range(&pod_def.key(), Some(&ns), None)
            .filter(|(_, p)| {
                owned_by(&p.value, &uid) && !p.value["metadata"]["deletionTimestamp"].is_string()
            })
            .map(|((_, n), _)| n.clone())
            .collect();
        let have = pods.len() as i64;
        let o = self.opts(who);
        let mut failure: Option<String> = None;
        for _ in have..want {
            let mut tpl = owner["spec"]["template"].clone();
            let mut meta = tpl["metadata"].take();
            if !meta.is_object() {
                meta = json!({});
            }
            meta["generateName"] = json!(format!("{name}-"));
            meta["name"] = json!(format!("{name}-{}", suffix()));
            meta["ownerReferences"] = json!([owner_ref(owner)]);
            if is_job {
                meta["labels"]["job-name"] = json!(name);
                meta["labels"]["batch.kubernetes.io/job-name"] = json!(name);
                meta["labels"]["controller-uid"] = uid.clone();
            }
            let pod =
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tpl["spec"]});
            if let Err(e) = self
                .server
                .create(&target(&pod_def, &ns, ""), pod, &o)
                .await
            {
                failure = Some(e.status["message"].as_str().unwrap_or_default().to_string());
                break;
            }
        }
        for extra in pods.iter().skip(want.max(0) as usize) {
            let _ = self
                .server
                .delete(&target(&pod_def, &ns, extra), &o, &Value::Null)
                .await;
        }
        self.record_failure(owner, who, failure).await;
    }

    /// A failed Pod creation: a `FailedCreate` Event and a `ReplicaFailure` condition, as
    /// the real controllers report it; cleared once creation succeeds.
    async fn record_failure(&self, owner: &Value, who: &str, failure: Option<String>) {
        let Some(owner_def) = owner["apiVersion"].as_str().and_then(|av| {
            let group = av.split_once('/').map_or("", |(g, _)| g);
            let plural = if owner["kind"] == "Job" {
                "jobs"
            } else {
                "replicasets"
            };
            def(&self.server, group, plural)
        }) else {
            return;
        };
        let ns = owner["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = owner["metadata"]["name"].as_str().unwrap_or_default();
        let had = owner["status"]["conditions"]
            .as_array()
            .is_some_and(|c| !c.is_empty());
        let o = self.opts(who);
        let mut t = target(&owner_def, ns, name);
        t.subresource = "status".into();
        match failure {
            Some(msg) => {
                if let Some(ev_def) = def(&self.server, "", "events") {
                    let ev = event(
                        owner,
                        "FailedCreate",
                        &format!("Error creating: {msg}"),
                        who,
                    );
                    let _ = self.server.create(&target(&ev_def, ns, ""), ev, &o).await;
                }
                if !had {
                    let cond = json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": msg});
                    let _ = self
                        .server
                        .update(&t, json!({"status": {"conditions": [cond]}}), &o)
                        .await;
                }
            }
            None if had => {
                let _ = self
                    .server
                    .update(&t, json!({"status": {"conditions": []}}), &o)
                    .await;
            }
            None => {}
        }
    }

    async fn pod_gone(&self, pod: &Value) {
        let Some(owner) = pod["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|r| r.iter().find(|o| o["controller"] == true))
        else {
            return;
        };
        let (group, plural, who) = match owner["kind"].as_str() {
            Some("ReplicaSet") => ("apps", "replicasets", "replicaset-controller"),
            Some("Job") => ("batch", "jobs", "job-controller"),
            _ => return,
        };
        let Some(d) = def(&self.server, group, plural) else {
            return;
        };
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = owner["name"].as_str().unwrap_or_default();
        if let Ok(o) = self.server.get(&target(&d, ns, name))
            && !(owner["kind"] == "Job")
        {
            let v = o.value.clone();
            self.replicas(&v, who).await;
        }
    }

    /// Creates a Job from a CronJob's template, as the CronJob controller does on schedule;
    /// a refused Job is a `FailedCreate` Event on the CronJob, as the real controller says.
    pub async fn trigger(
        server: &Server,
        identity: ControllerIdentity,
        ns: &str,
        cronjob: &str,
    ) -> Result<String, String> {
        let cj_def = def(server, "batch", "cronjobs").ok_or("no cronjobs")?;
        let job_def = def(server, "batch", "jobs").ok_or("no jobs")?;
        let cj = server
            .get(&target(&cj_def, ns, cronjob))
            .map_err(|e| e.status["message"].to_string())?;
        let cj = &cj.value;
        let tpl = &cj["spec"]["jobTemplate"];
        let minute = jiff::Timestamp::now().as_second() / 60;
        let name = format!("{cronjob}-{minute}");
        let mut meta = tpl["metadata"].clone();
        if !meta.is_object() {
            meta = json!({});
        }
        meta["name"] = json!(name);
        meta["ownerReferences"] = json!([owner_ref(cj)]);
        let job =
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": tpl["spec"]});
        let o = opts(identity, "cronjob-controller");
        match server.create(&target(&job_def, ns, ""), job, &o).await {
            Ok(_) => Ok(name),
            Err(e) => {
                let msg = e.status["message"].as_str().unwrap_or_default().to_string();
                if let Some(ev_def) = def(server, "", "events") {
                    let text = format!("Error creating job: {msg}");
                    let ev = event(cj, "FailedCreate", &text, "cronjob-controller");
                    let _ = server.create(&target(&ev_def, ns, ""), ev, &o).await;
                }
                Err(msg)
            }
        }
    }

    /// Namespace termination: delete everything in it, then the namespace.
    async fn terminate(&self, ns: &str) {
        let defs: Vec<ResourceDef> = {
            let state = self.server.state();
            let mut seen: Vec<ResKey> = Vec::new();
            state
                .defs
                .iter()
                .filter(|d| {
                    d.namespaced && {
                        let fresh = !seen.contains(&d.key());
                        seen.push(d.key());
                        fresh
                    }
                })
                .cloned()
                .collect()
        };
        let o = self.opts("namespace-controller");
        for d in defs {
            let names: Vec<String> = self
                .server
                .state()
                .range(&d.key(), Some(ns), None)
                .map(|((_, n), _)| n.clone())
                .collect();
            for n in names {
                let _ = self
                    .server
                    .delete(&target(&d, ns, &n), &o, &Value::Null)
                    .await;
            }
        }
        self.maybe_finish_namespace(ns).await;
    }

    async fn maybe_finish_namespace(&self, ns: &str) {
        let key: ResKey = (String::new(), "namespaces".into());
        let state_ns = self.server.state().get(&key, "", ns);
        let Some(nso) = state_ns else { return };
        if !nso.value["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        let empty = {
            let state = self.server.state();
            state
                .defs
                .iter()
                .filter(|d| d.namespaced)
                .all(|d| state.range(&d.key(), Some(ns), None).next().is_none())
        };
        if empty {
            let v = nso.value.clone();
            self.server.commit_raw(&key, "", ns, EventType::Deleted, v);
        }
    }
}

impl Change {
    fn namespace_or_name(&self) -> String {
        if self.namespace.is_empty() {
            self.obj.value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        } else {
            self.namespace.clone()
        }
    }
}
