//! AdmissionReview in, AdmissionReview out: decoding, the decision, encoding. Synchronous
//! and free of I/O, so tests call it directly; the HTTP handler only adds timing.

use std::collections::BTreeMap;

use policy::admission::{self, Answer, Mode, Operation, Policy, User};
use policy::{Context, Object};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

const API_VERSION: &str = "admission.k8s.io/v1";

/// What the handler needs besides the review.
#[derive(Debug)]
pub struct Decider<'a> {
    pub policy: &'a Policy,
    pub mode_label_subjects: &'a admission::Subjects,
    pub context: Context<'a>,
    /// With `--watch-policies`: workloads are judged as they will run after injection,
    /// and `/mutate` injects Pods.
    pub policies: Option<crate::policies::Snapshot>,
}

/// A review whose objects are read as `O`: straight into [`Object`] (one pass, the
/// common case), or kept raw to tell exactly what is wrong with them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(bound(deserialize = "O: Deserialize<'de>"))]
struct ReviewIn<'a, O> {
    api_version: Option<&'a str>,
    kind: Option<&'a str>,
    #[serde(borrow)]
    request: Option<RequestIn<'a, O>>,
}

#[derive(Deserialize, Default)]
struct Gvk<'a> {
    #[serde(borrow, default)]
    kind: &'a str,
}

#[derive(Deserialize, Default)]
struct UserInfoIn {
    #[serde(default)]
    username: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(bound(deserialize = "O: Deserialize<'de>"))]
struct RequestIn<'a, O> {
    uid: String,
    #[serde(borrow, default)]
    kind: Gvk<'a>,
    sub_resource: Option<&'a str>,
    namespace: Option<&'a str>,
    operation: Option<&'a str>,
    #[serde(default)]
    user_info: UserInfoIn,
    object: Option<O>,
    old_object: Option<O>,
}

/// An object as the review carried it.
trait IntoObject {
    fn into_object(self) -> Result<Object, String>;
}

impl IntoObject for Object {
    fn into_object(self) -> Result<Object, String> {
        Ok(self)
    }
}

impl IntoObject for &RawValue {
    fn into_object(self) -> Result<Object, String> {
        parse_object(self)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// Base64 of a JSON patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

impl<'a> ResponseOut<'a> {
    fn new(uid: &'a str, allowed: bool) -> ResponseOut<'a> {
        ResponseOut {
            uid,
            allowed,
            status: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
            patch_type: None,
            patch: None,
        }
    }
}

#[derive(Serialize)]
struct StatusOut {
    code: u16,
    reason: &'static str,
    message: String,
}

/// The outcome of one review, for the HTTP layer and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    /// HTTP status: 200 for every AdmissionReview answer (a denial too), 400 when no
    /// review could be formed.
    pub status: u16,
    pub body: Vec<u8>,
    /// Bounded metric labels.
    pub kind: &'static str,
    pub operation: &'static str,
    pub result: &'static str,
    pub exempted: bool,
    /// Decided without the labels of the request's namespace, which the watch has not
    /// delivered yet while some policy might select it: worth asking again once it has.
    pub namespace_unknown: bool,
}

/// Keeps metric labels bounded: the kinds verifyfull judges, or `other`.
fn kind_label(kind: &str) -> &'static str {
    policy::WorkloadKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .map(|k| k.as_str())
        .unwrap_or(if kind == "Namespace" {
            "Namespace"
        } else {
            "other"
        })
}

fn operation_label(op: Option<&str>) -> &'static str {
    match op {
        Some("CREATE") => "CREATE",
        Some("UPDATE") => "UPDATE",
        Some("DELETE") => "DELETE",
        Some("CONNECT") => "CONNECT",
        _ => "other",
    }
}

/// Audit annotations carry at most this much text.
const AUDIT_LIMIT: usize = 8 * 1024;

/// Handles one request body for one mode.
pub fn review(body: &[u8], mode: Mode, decider: &Decider<'_>) -> Reviewed {
    // One pass into typed objects; only a review that fails is read again, objects kept
    // raw, to say exactly what is wrong.
    if let Ok(parsed) = serde_json::from_slice::<ReviewIn<'_, Object>>(body) {
        return decide_review(parsed, mode, decider);
    }
    match serde_json::from_slice::<ReviewIn<'_, &RawValue>>(body) {
        Ok(parsed) => decide_review(parsed, mode, decider),
        Err(e) => plain(format!(
            "malformed AdmissionReview at line {}, column {}: {}",
            e.line(),
            e.column(),
            message_without_values(&e)
        )),
    }
}

/// Handles one `/mutate` request: a Pod CREATE that exactly one policy selects gets the
/// injection as a JSON patch; anything else is allowed unchanged. Re-invocation finds
/// nothing left to add.
pub fn mutate(body: &[u8], decider: &Decider<'_>) -> Reviewed {
    let parsed = match serde_json::from_slice::<ReviewIn<'_, &RawValue>>(body) {
        Ok(p) => p,
        Err(e) => {
            return plain(format!(
                "malformed AdmissionReview at line {}, column {}: {}",
                e.line(),
                e.column(),
                message_without_values(&e)
            ));
        }
    };
    let Some(req) = parsed.request else {
        return plain("the AdmissionReview has no request".to_string());
    };
    let answer = Reply {
        uid: &req.uid,
        kind: kind_label(req.kind.kind),
        operation: operation_label(req.operation),
    };
    let unchanged = || answer.respond(ResponseOut::new(&req.uid, true), "unchanged", false);
    let (Some(p), Some("CREATE"), "Pod", None) = (
        &decider.policies,
        req.operation,
        req.kind.kind,
        req.sub_resource,
    ) else {
        return unchanged();
    };
    let Some(raw) = req.object else {
        return unchanged();
    };
    let pod = match serde_json::from_str::<Object>(raw.get()).or_else(|_| parse_object(raw)) {
        Ok(Object::Workload(w)) if w.kind == policy::WorkloadKind::Pod => w,
        Ok(_) => return answer.invalid("the object is not a Pod".to_string()),
        Err(e) => return answer.invalid(format!("object: {e}")),
    };
    let Ok(value) = serde_json::from_str::<PatchView>(raw.get()).and_then(serde_json::to_value)
    else {
        return answer.invalid("the object is not JSON".to_string());
    };
    let namespace = req.namespace.unwrap_or_default();
    let labels = p.namespace_labels(namespace);
    if labels.is_none() && !p.policies.is_empty() {
        // A namespace created a moment ago, not yet seen: whether a policy selects it is
        // unknown, and a Pod must not start without the CA it may need. The caller waits
        // for the namespace and asks again; this is the answer if it never comes.
        let message = format!(
            "verifyfull has not seen namespace {namespace:?} yet and cannot tell whether a PostgresTLSPolicy selects it; retry"
        );
        return Reviewed {
            namespace_unknown: true,
            ..answer.refuse(503, "ServiceUnavailable", message, "denied")
        };
    }
    let ops = policy::inject::pod_patch(&p.policies, labels, &pod, &value, &decider.context);
    if ops.is_empty() {
        return unchanged();
    }
    use base64::Engine;
    let patch =
        base64::engine::general_purpose::STANDARD.encode(serde_json::Value::Array(ops).to_string());
    let response = ResponseOut {
        patch_type: Some("JSONPatch"),
        patch: Some(patch),
        ..ResponseOut::new(&req.uid, true)
    };
    answer.respond(response, "patched", false)
}

/// What the injection's JSON patch reads of a Pod (names of volumes, containers, mounts and
/// variables, at their indices) — never the whole object as a tree of values.
#[derive(Deserialize, Serialize)]
struct PatchView {
    spec: PatchSpec,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct PatchSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<Vec<Named>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    containers: Option<Vec<PatchContainer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_containers: Option<Vec<PatchContainer>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct PatchContainer {
    #[serde(default)]
    name: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<Vec<Named>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_mounts: Option<Vec<Named>>,
}

#[derive(Deserialize, Serialize)]
struct Named {
    #[serde(default)]
    name: serde_json::Value,
}

/// An AdmissionReview answer (HTTP 200, a denial too).
fn answered(
    response: ResponseOut<'_>,
    kind: &'static str,
    operation: &'static str,
    result: &'static str,
    exempted: bool,
) -> Reviewed {
    Reviewed {
        status: 200,
        body: serde_json::to_vec(&ReviewOut {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response,
        })
        .unwrap_or_default(),
        kind,
        operation,
        result,
        exempted,
        namespace_unknown: false,
    }
}

/// A 400: no AdmissionReview answer can be formed.
fn plain(message: String) -> Reviewed {
    Reviewed {
        status: 400,
        body: message.into_bytes(),
        kind: "other",
        operation: "other",
        result: "invalid",
        exempted: false,
        namespace_unknown: false,
    }
}

/// How one request is answered: its uid, and the labels of its log line and metrics.
#[derive(Clone, Copy)]
struct Reply<'r> {
    uid: &'r str,
    kind: &'static str,
    operation: &'static str,
}

impl<'r> Reply<'r> {
    fn respond(self, response: ResponseOut<'_>, result: &'static str, exempted: bool) -> Reviewed {
        answered(response, self.kind, self.operation, result, exempted)
    }

    fn allow(self) -> Reviewed {
        self.respond(ResponseOut::new(self.uid, true), "allowed", false)
    }

    /// A refusal with its HTTP-like status code.
    fn refuse(
        self,
        code: u16,
        reason: &'static str,
        message: String,
        result: &'static str,
    ) -> Reviewed {
        let response = ResponseOut {
            status: Some(StatusOut {
                code,
                reason,
                message,
            }),
            ..ResponseOut::new(self.uid, false)
        };
        self.respond(response, result, false)
    }

    fn invalid(self, message: String) -> Reviewed {
        self.refuse(400, "BadRequest", message, "invalid")
    }
}

fn decide_review<O: IntoObject>(
    parsed: ReviewIn<'_, O>,
    mode: Mode,
    decider: &Decider<'_>,
) -> Reviewed {
    let Some(req) = parsed.request else {
        return plain("the AdmissionReview has no request".to_string());
    };
    let answer = Reply {
        uid: &req.uid,
        kind: kind_label(req.kind.kind),
        operation: operation_label(req.operation),
    };
    if parsed.api_version != Some(API_VERSION) || parsed.kind != Some("AdmissionReview") {
        return answer.invalid(format!(
            "expected apiVersion {API_VERSION}, kind AdmissionReview"
        ));
    }
    let operation = match req.operation {
        Some("CREATE") => Operation::Create,
        Some("UPDATE") => Operation::Update,
        // DELETE and CONNECT change no client settings.
        Some("DELETE" | "CONNECT") => return answer.allow(),
        _ => {
            return answer
                .invalid("operation must be CREATE, UPDATE, DELETE or CONNECT".to_string());
        }
    };
    let user = User {
        username: &req.user_info.username,
        groups: &req.user_info.groups,
    };
    let Some(object) = req.object else {
        return answer.invalid("the request has no object".to_string());
    };
    let object = match object.into_object() {
        Ok(o) => o,
        Err(e) => return answer.invalid(format!("object: {e}")),
    };
    let old = match req.old_object.map(IntoObject::into_object).transpose() {
        Ok(o) => o,
        Err(e) => return answer.invalid(format!("oldObject: {e}")),
    };
    if req.kind.kind == "Namespace" {
        let Some(new) = object.metadata() else {
            return answer.invalid("the object is not a Namespace".to_string());
        };
        let old = old.as_ref().and_then(Object::metadata);
        return match admission::namespace_mode_change(old, new, &user, decider.mode_label_subjects)
        {
            None => answer.allow(),
            Some(message) => answer.refuse(403, "Forbidden", message, "denied"),
        };
    }
    let Object::Workload(workload) = object else {
        // Not a kind verifyfull judges: nothing to say.
        return answer.allow();
    };
    if workload.kind.as_str() != req.kind.kind {
        return answer.invalid(format!(
            "the object is a {}, but the request says {}",
            workload.kind, req.kind.kind
        ));
    }
    let old = match old {
        None => None,
        Some(Object::Workload(w)) => Some(w),
        Some(_) => return answer.invalid("oldObject is not the same kind as object".to_string()),
    };
    let namespace = req.namespace.unwrap_or_default();
    let judged = (operation, req.sub_resource, user);
    workload_review(answer, judged, namespace, (workload, old), mode, decider)
}

/// A workload's review, judged as it will run: a workload a policy selects is judged with
/// the CA the operator (or, for Pods, the mutating webhook) puts in, the same plan applied
/// here.
fn workload_review(
    answer: Reply<'_>,
    (operation, subresource, user): (Operation, Option<&str>, User<'_>),
    namespace: &str,
    (mut workload, mut old): (Box<policy::Workload>, Option<Box<policy::Workload>>),
    mode: Mode,
    decider: &Decider<'_>,
) -> Reviewed {
    let mut namespace_unknown = false;
    if let Some(p) = &decider.policies {
        let labels = p.namespace_labels(namespace);
        namespace_unknown = labels.is_none() && !p.policies.is_empty();
        policy::inject::as_it_will_run(&p.policies, labels, &mut workload, &decider.context);
        if let Some(o) = old.as_deref_mut() {
            policy::inject::as_it_will_run(&p.policies, labels, o, &decider.context);
        }
    }
    let request = admission::Request {
        operation,
        subresource,
        user,
        object: &workload,
        old_object: old.as_deref(),
    };
    let decided = admission::decide(&request, mode, decider.policy, &decider.context);
    let result = if !decided.allowed {
        "denied"
    } else if !decided.warnings.is_empty() {
        "warned"
    } else if mode == Mode::Audit && !decided.audit.is_empty() {
        "audited"
    } else {
        "allowed"
    };
    let exempted = decided.exempted;
    Reviewed {
        // Only a denial is worth a second look: the CA a policy would add may pass it.
        namespace_unknown: namespace_unknown && !decided.allowed,
        ..answer.respond(response(answer.uid, decided, mode), result, exempted)
    }
}

fn response(uid: &str, answer: Answer, mode: Mode) -> ResponseOut<'_> {
    let mut audit_annotations = BTreeMap::new();
    if mode == Mode::Audit && !answer.audit.is_empty() {
        audit_annotations.insert(
            "findings",
            policy::message::truncate(answer.audit.join("\n"), AUDIT_LIMIT),
        );
    }
    ResponseOut {
        status: answer.message.map(|message| StatusOut {
            code: 403,
            reason: "Forbidden",
            message,
        }),
        warnings: answer.warnings,
        audit_annotations,
        ..ResponseOut::new(uid, answer.allowed)
    }
}

/// Reads an object that failed a plain read, to say why: the field path, the position
/// inside the object, and the type found, never the value.
fn parse_object(raw: &RawValue) -> Result<Object, String> {
    let mut track = serde_path_to_error::Track::new();
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let result = <Object as serde::Deserialize>::deserialize(
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
    );
    match result {
        Ok(o) => Ok(o),
        Err(e) => {
            let path = track.path().to_string();
            let at = format!("line {}, column {} of the object", e.line(), e.column());
            Err(match path.as_str() {
                "" | "." => format!("{} ({at})", message_without_values(&e)),
                _ => format!("{path}: {} ({at})", message_without_values(&e)),
            })
        }
    }
}

/// The parser's message without its position (the caller names it) and without any quoted
/// value, which may be a password.
fn message_without_values(e: &serde_json::Error) -> String {
    policy::message::parser_error(&e.to_string())
}
