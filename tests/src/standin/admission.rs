//! Admission as kube-apiserver runs it: mutating webhooks in order (with re-invocation),
//! then validating webhooks, each matched by rules, namespace and object selectors and
//! `matchConditions`, called over HTTPS verified against the configuration's `caBundle`
//! for `<service>.<namespace>.svc`, with `failurePolicy`, `timeoutSeconds`, `sideEffects`.

use super::api::{ApiError, ApiResult, Server, Target, User, WriteOpts};
use super::resources::ResKey;
use super::schema::eval_bool;
use super::selector::Selector;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// One admission call's request side.
#[derive(Debug, Clone)]
pub struct Call {
    pub target: Target,
    pub operation: &'static str,
    pub user: User,
    pub dry_run: bool,
    pub field_manager: String,
}

impl Call {
    pub fn new(t: &Target, operation: &'static str, o: &WriteOpts) -> Call {
        Call {
            target: t.clone(),
            operation,
            user: o.user.clone(),
            dry_run: o.dry_run,
            field_manager: o.field_manager.clone(),
        }
    }

    fn request(&self, uid: &str, obj: Option<&Value>, old: Option<&Value>) -> Value {
        let d = &self.target.def;
        let options_kind = match self.operation {
            "CREATE" => "CreateOptions",
            "UPDATE" => "UpdateOptions",
            _ => "DeleteOptions",
        };
        let mut options = json!({"apiVersion": "meta.k8s.io/v1", "kind": options_kind});
        if !self.field_manager.is_empty() && self.operation != "DELETE" {
            options["fieldManager"] = json!(self.field_manager);
        }
        let mut r = json!({
            "uid": uid,
            "kind": {"group": d.group, "version": d.version, "kind": d.kind},
            "resource": {"group": d.group, "version": d.version, "resource": d.plural},
            "requestKind": {"group": d.group, "version": d.version, "kind": d.kind},
            "requestResource": {"group": d.group, "version": d.version, "resource": d.plural},
            "name": self.target.name,
            "operation": self.operation,
            "userInfo": {"username": self.user.name, "groups": self.user.groups},
            "object": obj,
            "oldObject": old,
            "dryRun": self.dry_run,
            "options": options,
        });
        if d.namespaced {
            r["namespace"] = json!(self.target.namespace);
        }
        if !self.target.subresource.is_empty() {
            r["subResource"] = json!(self.target.subresource);
            r["requestSubResource"] = json!(self.target.subresource);
        }
        r
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Mutating,
    Validating,
}

#[derive(Debug, Clone)]
struct Hook {
    webhook: Value,
    name: String,
}

fn hooks(server: &Server, phase: Phase) -> Vec<Hook> {
    let plural = match phase {
        Phase::Mutating => "mutatingwebhookconfigurations",
        Phase::Validating => "validatingwebhookconfigurations",
    };
    let key: ResKey = ("admissionregistration.k8s.io".into(), plural.into());
    let state = server.state();
    // Configurations in name order, webhooks in the order each lists them.
    state
        .range(&key, None, None)
        .flat_map(|(_, cfg)| {
            cfg.value["webhooks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|w| Hook {
            name: w["name"].as_str().unwrap_or_default().to_string(),
            webhook: w,
        })
        .collect()
}

fn listed(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|x| x == "*" || x == want))
}

fn rule_matches(rule: &Value, call: &Call) -> bool {
    let d = &call.target.def;
    let scope = rule["scope"].as_str().unwrap_or("*");
    let scope_ok = match scope {
        "Cluster" => !d.namespaced,
        "Namespaced" => d.namespaced,
        _ => true,
    };
    let sub = &call.target.subresource;
    let resource_ok = rule["resources"].as_array().is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|r| {
            let (rr, rs) = r.split_once('/').unwrap_or((r, ""));
            let res_ok = rr == "*" || rr == d.plural;
            let sub_ok = if sub.is_empty() {
                rs.is_empty()
            } else {
                rs == "*" || rs == sub
            };
            res_ok && sub_ok
        })
    });
    scope_ok
        && resource_ok
        && listed(&rule["operations"], call.operation)
        && listed(&rule["apiGroups"], &d.group)
        && listed(&rule["apiVersions"], &d.version)
}

/// Whether a webhook applies to this call; `Err` is a matchCondition error under `Fail`.
fn matches(
    server: &Server,
    hook: &Hook,
    call: &Call,
    request: &Value,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<bool> {
    let w = &hook.webhook;
    if !w["rules"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| rule_matches(r, call)))
    {
        return Ok(false);
    }
    let selector = |field: &str| -> ApiResult<Selector> {
        match w.get(field) {
            Some(s) if !s.is_null() => Selector::from_object(s).map_err(|e| {
                ApiError::new(
                    500,
                    "InternalError",
                    format!("webhook {:?}: {field}: {e}", hook.name),
                )
            }),
            _ => Ok(Selector::default()),
        }
    };
    let ns_sel = selector("namespaceSelector")?;
    if !ns_sel.is_empty() {
        let d = &call.target.def;
        let labels = if d.kind == "Namespace" && d.group.is_empty() {
            obj.or(old).map(|o| o["metadata"]["labels"].clone())
        } else if d.namespaced {
            let key: ResKey = (String::new(), "namespaces".into());
            server
                .state()
                .get(&key, "", &call.target.namespace)
                .map(|n| n.value["metadata"]["labels"].clone())
        } else {
            None
        };
        // Cluster-scoped objects other than namespaces are never skipped by it.
        if (d.namespaced || d.kind == "Namespace")
            && !ns_sel.matches_labels(&labels.unwrap_or(Value::Null))
        {
            return Ok(false);
        }
    }
    let obj_sel = selector("objectSelector")?;
    if !obj_sel.is_empty() {
        let m =
            |o: Option<&Value>| o.is_some_and(|o| obj_sel.matches_labels(&o["metadata"]["labels"]));
        if !m(obj) && !m(old) {
            return Ok(false);
        }
    }
    let null = Value::Null;
    for c in w["matchConditions"].as_array().into_iter().flatten() {
        let expr = c["expression"].as_str().unwrap_or_default();
        let vars = [
            ("object", obj.unwrap_or(&null)),
            ("oldObject", old.unwrap_or(&null)),
            ("request", request),
        ];
        match eval_bool(expr, &vars) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) if fails_closed(w) => {
                return Err(ApiError::new(
                    500,
                    "InternalError",
                    format!(
                        "Internal error occurred: failed calling webhook {:?}: matchCondition {:?} error: {e}",
                        hook.name,
                        c["name"].as_str().unwrap_or_default()
                    ),
                ));
            }
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

fn fails_closed(w: &Value) -> bool {
    w["failurePolicy"].as_str().unwrap_or("Fail") == "Fail"
}

/// A webhook's answer.
#[derive(Debug)]
struct Answer {
    allowed: bool,
    status: Value,
    patch: Option<Vec<u8>>,
    warnings: Vec<String>,
}

/// Runs one webhook; `Ok(None)` when it does not apply or failed open.
async fn run(
    server: &Server,
    hook: &Hook,
    call: &Call,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<Option<Answer>> {
    let uid = format!("{:032x}", rand_u128());
    let request = call.request(&uid, obj, old);
    if !matches(server, hook, call, &request, obj, old)? {
        return Ok(None);
    }
    let w = &hook.webhook;
    if call.dry_run && !matches!(w["sideEffects"].as_str(), Some("None" | "NoneOnDryRun")) {
        return Err(ApiError::bad_request(format!(
            "admission webhook {:?} does not support dry run",
            hook.name
        )));
    }
    let review =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    match post(server, w, &review, &uid).await {
        Ok(a) => Ok(Some(a)),
        Err(e) if fails_closed(w) => Err(ApiError::new(
            500,
            "InternalError",
            format!(
                "Internal error occurred: failed calling webhook {:?}: {e}",
                hook.name
            ),
        )),
        Err(_) => Ok(None),
    }
}

fn rand_u128() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = jiff::Timestamp::now().as_nanosecond() as u128;
    (t << 32) ^ u128::from(N.fetch_add(1, Ordering::Relaxed))
}

fn denied(hook: &Hook, status: &Value) -> ApiError {
    let by = format!("admission webhook {:?} denied the request", hook.name);
    let mut s = status.clone();
    if !s.is_object() {
        s = json!({});
    }
    let code = s["code"].as_u64().filter(|c| *c >= 400).unwrap_or(400);
    let message = match (s["message"].as_str(), s["reason"].as_str()) {
        (Some(m), _) if !m.is_empty() => format!("{by}: {m}"),
        (_, Some(r)) if !r.is_empty() => format!("{by}: {r}"),
        _ => format!("{by} without explanation"),
    };
    s["kind"] = json!("Status");
    s["apiVersion"] = json!("v1");
    s["metadata"] = json!({});
    s["status"] = json!("Failure");
    s["code"] = json!(code);
    s["message"] = json!(message);
    ApiError {
        code: code as u16,
        status: s,
    }
}

/// Mutating admission: patches `obj` in place; returns the warnings.
pub async fn mutate(
    server: &Server,
    call: &Call,
    obj: &mut Value,
    old: Option<&Value>,
) -> ApiResult<Vec<String>> {
    let all = hooks(server, Phase::Mutating);
    let mut warnings = Vec::new();
    // For each webhook that ran: the object as it left it, to see whether a later
    // webhook changed it (re-invocation policy IfNeeded).
    let mut ran: Vec<(usize, Value)> = Vec::new();
    for (i, hook) in all.iter().enumerate() {
        if let Some(a) = run(server, hook, call, Some(obj), old).await? {
            apply_answer(hook, a, obj, &mut warnings)?;
            ran.push((i, obj.clone()));
        }
    }
    let again: Vec<usize> = ran
        .iter()
        .filter(|(i, after)| all[*i].webhook["reinvocationPolicy"] == "IfNeeded" && after != obj)
        .map(|(i, _)| *i)
        .collect();
    for i in again {
        if let Some(a) = run(server, &all[i], call, Some(obj), old).await? {
            apply_answer(&all[i], a, obj, &mut warnings)?;
        }
    }
    Ok(warnings)
}

fn apply_answer(
    hook: &Hook,
    a: Answer,
    obj: &mut Value,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    warnings.extend(a.warnings);
    if !a.allowed {
        return Err(denied(hook, &a.status));
    }
    if let Some(p) = a.patch {
        let ops: json_patch::Patch = serde_json::from_slice(&p).map_err(|e| {
            ApiError::new(500, "InternalError", format!("Internal error occurred: admission webhook {:?} returned an invalid patch: {e}", hook.name))
        })?;
        json_patch::patch(obj, &ops).map_err(|e| {
            ApiError::new(
                500,
                "InternalError",
                format!(
                    "Internal error occurred: admission webhook {:?} patch failed: {e}",
                    hook.name
                ),
            )
        })?;
    }
    Ok(())
}

/// Validating admission; returns the warnings.
pub async fn validate(
    server: &Server,
    call: &Call,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<Vec<String>> {
    validating(server, call, Some(obj), old).await
}

pub async fn validate_delete(server: &Server, call: &Call, old: &Value) -> ApiResult<Vec<String>> {
    validating(server, call, None, Some(old)).await
}

async fn validating(
    server: &Server,
    call: &Call,
    obj: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<Vec<String>> {
    let mut warnings = Vec::new();
    for hook in hooks(server, Phase::Validating) {
        if let Some(a) = run(server, &hook, call, obj, old).await? {
            warnings.extend(a.warnings);
            if !a.allowed {
                return Err(denied(&hook, &a.status));
            }
        }
    }
    Ok(warnings)
}

/// POSTs a review to the webhook and reads its answer. Errors read like kube-apiserver's.
async fn post(server: &Server, w: &Value, review: &Value, uid: &str) -> Result<Answer, String> {
    let cc = &w["clientConfig"];
    let timeout = Duration::from_secs(w["timeoutSeconds"].as_u64().unwrap_or(10));
    let (host, port, path, addr) = match (cc.get("service"), cc["url"].as_str()) {
        (Some(svc), _) if svc.is_object() => {
            let ns = svc["namespace"].as_str().unwrap_or_default();
            let name = svc["name"].as_str().unwrap_or_default();
            let port = svc["port"].as_i64().unwrap_or(443) as i32;
            let path = svc["path"].as_str().unwrap_or("/").to_string();
            let route = server.endpoint(ns, name, port);
            (
                format!("{name}.{ns}.svc"),
                port,
                path,
                route.map(|a| a.to_string()),
            )
        }
        (_, Some(url)) => {
            let rest = url
                .strip_prefix("https://")
                .ok_or("webhook URL is not https")?;
            let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().unwrap_or(443)),
                None => (hostport.to_string(), 443),
            };
            let addr = format!("{host}:{port}");
            (host, port, format!("/{path}"), Some(addr))
        }
        _ => return Err("webhook has neither service nor url".into()),
    };
    let url = format!("https://{host}:{port}{path}?timeout={}s", timeout.as_secs());
    let fail = |e: String| format!("failed to call webhook: Post {url:?}: {e}");
    let addr = addr.ok_or_else(|| {
        fail(format!(
            "service {:?} not found",
            cc["service"]["name"].as_str().unwrap_or_default()
        ))
    })?;
    let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
    let ca = cc["caBundle"].as_str().unwrap_or_default();
    let key = (addr.clone(), host.clone(), ca.to_string());
    let exchange = async {
        let req = http::Request::post(format!("{path}?timeout={}s", timeout.as_secs()))
            .header("host", format!("{host}:{port}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        // An idle connection to the same endpoint, name and CA if one is open, as Go's
        // transport reuses them; a request it closed before taking is sent again on a new
        // connection, as Go retries a request that was never written.
        let unsent = match server.webhook_connections.take(&key).await {
            Some(mut idle) => match idle.try_send_request(req).await {
                Ok(resp) => Ok((idle, resp)),
                Err(mut e) => Err(e.take_message().ok_or_else(|| e.into_error().to_string())?),
            },
            None => Err(req),
        };
        let (sender, resp) = match unsent {
            Ok(sent) => sent,
            Err(req) => {
                let mut fresh = open(&addr, &host, ca).await?;
                let resp = fresh.send_request(req).await.map_err(|e| e.to_string())?;
                (fresh, resp)
            }
        };
        let status = resp.status();
        let close = resp
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !close {
            server.webhook_connections.put(key, sender);
        }
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail("context deadline exceeded".into()))?
        .map_err(fail)?;
    if !status.is_success() {
        return Err(format!("received invalid webhook response: HTTP {status}"));
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("received invalid webhook response: {e}"))?;
    let r = &v["response"];
    if r["uid"].as_str() != Some(uid) {
        return Err(format!(
            "expected response.uid={uid:?}, got {:?}",
            r["uid"].as_str().unwrap_or_default()
        ));
    }
    let patch = match r["patch"].as_str() {
        Some(p) if r["patchType"] == "JSONPatch" => Some(
            base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| format!("invalid patch encoding: {e}"))?,
        ),
        _ => None,
    };
    Ok(Answer {
        allowed: r["allowed"].as_bool().unwrap_or(false),
        status: r["status"].clone(),
        patch,
        warnings: super::resources::strings(&r["warnings"]),
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A new connection to a webhook.
async fn open(addr: &str, host: &str, ca: &str) -> Result<Sender, String> {
    let tls = connect(addr, host, ca).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Idle connections by (endpoint, server name, CA bundle).
#[derive(Default)]
pub struct Idle(std::sync::Mutex<std::collections::HashMap<(String, String, String), Vec<Sender>>>);

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Idle")
    }
}

impl Idle {
    /// At most this many idle connections per endpoint (Go's `MaxIdleConnsPerHost` is
    /// 100 in kube-apiserver's webhook transport).
    const PER_ENDPOINT: usize = 100;

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String, String), Vec<Sender>>>
    {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An open idle connection, ready for a request; closed ones are dropped.
    async fn take(&self, key: &(String, String, String)) -> Option<Sender> {
        loop {
            let mut s = self.lock().get_mut(key)?.pop()?;
            if s.is_closed() {
                continue;
            }
            // Its last response is read; the connection may not have said it is idle yet.
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), s.ready()).await {
                return Some(s);
            }
        }
    }

    fn put(&self, key: (String, String, String), s: Sender) {
        let mut idle = self.lock();
        let list = idle.entry(key).or_default();
        if list.len() < Idle::PER_ENDPOINT {
            list.push(s);
        }
    }

    /// Closes every idle connection (a restarted API server has none).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

async fn connect(
    addr: &str,
    host: &str,
    ca_bundle_b64: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_bundle_b64)
        .map_err(|e| format!("caBundle is not base64: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: failed to verify certificate: {e}"))
}
