//! The REST surface: discovery, resource paths, query parameters, authentication,
//! impersonation, watch streams, and `Status` errors.

use super::api::{ApiError, ApiResult, PatchType, Reply, Server, Target, User, WriteOpts};
use super::rbac;
use super::resources::ResourceDef;
use super::selector::Selector;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Bearer tokens and the users they stand for.
#[derive(Debug, Default)]
pub struct Auth {
    pub tokens: Mutex<HashMap<String, User>>,
}

const MAX_BODY: usize = 8 << 20;

fn full(code: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(body.into()).boxed_unsync())
        .unwrap_or_default()
}

fn error(e: &ApiError) -> Response<Body> {
    full(e.code, serde_json::to_vec(&e.status).unwrap_or_default())
}

fn reply(code: u16, r: Reply) -> Response<Body> {
    let mut resp = full(code, serde_json::to_vec(&r.object).unwrap_or_default());
    for w in r.warnings {
        let text = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(h) = http::HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            resp.headers_mut().append("warning", h);
        }
    }
    resp
}

fn query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(x) => {
                        out.push(x);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves one request.
pub async fn handle(
    server: Arc<Server>,
    auth: Arc<Auth>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let user = match authenticate(&auth, &req) {
        Ok(u) => u,
        Err(e) => return error(&e),
    };
    let path = req.uri().path().to_string();
    let q = query(req.uri().query());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match segs.as_slice() {
        ["version"] => Ok(full(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-verifyfull-standin",
            "platform": "linux/amd64", "goVersion": "go1.24", "compiler": "gc"})
            .to_string(),
        )),
        ["healthz" | "livez" | "readyz"] => Ok(full(200, "ok")),
        ["api"] => {
            let addr = server.address.lock().map(|a| a.clone()).unwrap_or_default();
            Ok(full(
                200,
                json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}]})
                .to_string(),
            ))
        }
        ["apis"] => Ok(full(200, group_list(&server).to_string())),
        ["apis", g] => group_list(&server)["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|x| x["name"] == *g).cloned())
            .map(|mut x| {
                x["kind"] = json!("APIGroup");
                x["apiVersion"] = json!("v1");
                full(200, x.to_string())
            })
            .ok_or_else(|| not_found(&path)),
        ["api", "v1"] => resource_list(&server, "", "v1"),
        ["apis", g, v] => resource_list(&server, g, v),
        ["api", "v1", rest @ ..] => resource(server.clone(), "", "v1", rest, q, user, req).await,
        ["apis", g, v, rest @ ..] => {
            let (g, v) = (g.to_string(), v.to_string());
            resource(server.clone(), &g, &v, rest, q, user, req).await
        }
        _ => Err(not_found(&path)),
    };
    result.unwrap_or_else(|e| error(&e))
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

fn authenticate(auth: &Auth, req: &Request<hyper::body::Incoming>) -> ApiResult<User> {
    let h = req.headers();
    let token = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let user = auth
        .tokens
        .lock()
        .ok()
        .and_then(|t| t.get(token).cloned())
        .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized".into()))?;
    let Some(as_user) = h.get("impersonate-user").and_then(|v| v.to_str().ok()) else {
        return Ok(user);
    };
    if !user.groups.iter().any(|g| g == "system:masters") {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "users {as_user:?} is forbidden: User {:?} cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
                user.name
            ),
        ));
    }
    let groups: Vec<&str> = h
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Ok(User::new(as_user, &groups))
}

fn group_list(server: &Server) -> Value {
    let state = server.state();
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for d in state.defs.iter().filter(|d| !d.group.is_empty()) {
        let vs = groups.entry(&d.group).or_default();
        if !vs.contains(&d.version.as_str()) {
            vs.push(&d.version);
        }
    }
    let groups: Vec<Value> = groups
        .iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(server: &Server, group: &str, version: &str) -> ApiResult<Response<Body>> {
    let state = server.state();
    let defs: Vec<&ResourceDef> = state
        .defs
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return Err(not_found(&format!("{group}/{version}")));
    }
    let verbs = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    let mut resources = Vec::new();
    for d in defs {
        resources.push(
            json!({"name": d.plural, "singularName": d.singular, "namespaced": d.namespaced,
            "kind": d.kind, "verbs": verbs, "shortNames": d.short_names}),
        );
        for s in &d.subresources {
            resources.push(
                json!({"name": format!("{}/{s}", d.plural), "singularName": "",
                "namespaced": d.namespaced, "kind": d.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(full(
        200,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
        "resources": resources})
        .to_string(),
    ))
}

/// `[namespaces/{ns}/]{plural}[/{name}[/{sub}]]`
fn target(
    server: &Server,
    group: &str,
    version: &str,
    rest: &[&str],
) -> ApiResult<(ResourceDef, Option<String>, String, String)> {
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, "", ""),
        [p, n] => (*p, *n, ""),
        [p, n, s] => (*p, *n, *s),
        _ => return Err(not_found(&rest.join("/"))),
    };
    let def = server
        .state()
        .def(group, version, plural)
        .cloned()
        .ok_or_else(|| not_found(&format!("{group}/{version}/{plural}")))?;
    if !sub.is_empty() && !def.subresources.iter().any(|s| s == sub) {
        return Err(not_found(&format!("{plural}/{sub}")));
    }
    if ns.is_some() && !def.namespaced {
        return Err(not_found(&format!(
            "namespaces/{}/{plural}",
            ns.unwrap_or_default()
        )));
    }
    Ok((def, ns, name.to_string(), sub.to_string()))
}

async fn body(req: Request<hyper::body::Incoming>) -> ApiResult<(Bytes, String)> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                "the request body is too large".into(),
            )
        })?
        .to_bytes();
    Ok((bytes, ct))
}

fn parse_object(bytes: &[u8], ct: &str) -> ApiResult<Value> {
    if ct.contains("protobuf") || ct.contains("cbor") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the stand-in reads JSON and YAML only, not {ct}"),
        ));
    }
    if ct.contains("yaml") {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::bad_request("the body is not UTF-8".into()))?;
        let opts = serde_saphyr::options! { with_snippet: false };
        return serde_saphyr::from_str_with_options(text, opts)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    server: Arc<Server>,
    group: &str,
    version: &str,
    rest: &[&str],
    q: HashMap<String, String>,
    user: User,
    req: Request<hyper::body::Incoming>,
) -> ApiResult<Response<Body>> {
    let (def, ns, name, sub) = target(&server, group, version, rest)?;
    let agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .split('/')
        .next()
        .unwrap_or("unknown")
        .to_string();
    let mut opts = WriteOpts {
        user,
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        field_manager: q.get("fieldManager").cloned().unwrap_or(agent),
        force: q.get("force").is_some_and(|f| f == "true"),
    };
    let t = Target {
        def: def.clone(),
        namespace: ns.clone().unwrap_or_default(),
        name: name.clone(),
        subresource: sub,
    };
    let method = req.method().clone();
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    // A list or watch whose field selector names one object is authorized for that name.
    let selected_name = q
        .get("fieldSelector")
        .and_then(|f| f.split(',').find_map(|t| t.strip_prefix("metadata.name=")))
        .unwrap_or_default();
    let verb = match (&method, name.is_empty()) {
        (&Method::GET, true) if watching => "watch",
        (&Method::GET, true) => "list",
        (&Method::GET, false) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "delete",
        (&Method::DELETE, true) => "deletecollection",
        _ => "",
    };
    let attributes = |verb| rbac::Attributes {
        verb,
        group: &def.group,
        resource: &def.plural,
        subresource: &t.subresource,
        namespace: &t.namespace,
        name: if name.is_empty() {
            selected_name
        } else {
            &name
        },
    };
    server.authorize(&opts.user, &attributes(verb))?;
    let labels = Selector::labels(q.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = Selector::fields(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    match (method, name.is_empty()) {
        (Method::GET, true) if watching => {
            server.counters.watch.fetch_add(1, Ordering::Relaxed);
            watch(server, &def, ns.as_deref(), labels, fields, &q)
        }
        (Method::GET, true) => {
            server.counters.list.fetch_add(1, Ordering::Relaxed);
            let limit = q
                .get("limit")
                .and_then(|l| l.parse().ok())
                .filter(|l| *l > 0);
            let list = server.list(
                &def,
                ns.as_deref(),
                &labels,
                &fields,
                limit,
                q.get("continue").map(String::as_str),
            )?;
            Ok(full(200, list))
        }
        (Method::GET, false) => {
            server.counters.get.fetch_add(1, Ordering::Relaxed);
            let o = server.get(&t)?;
            Ok(full(200, o.json.clone()))
        }
        (Method::POST, true) => {
            let (b, ct) = body(req).await?;
            let obj = parse_object(&b, &ct)?;
            let mut t = t;
            if !def.namespaced {
                t.namespace.clear();
            }
            Ok(reply(201, server.create(&t, obj, &opts).await?))
        }
        (Method::PUT, false) => {
            let (b, ct) = body(req).await?;
            let obj = parse_object(&b, &ct)?;
            Ok(reply(200, server.update(&t, obj, &opts).await?))
        }
        (Method::PATCH, false) => {
            let (b, ct) = body(req).await?;
            let ty = PatchType::from_content_type(&ct).ok_or_else(|| {
                ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})"))
            })?;
            let existed = server.get(&t).is_ok();
            // A patch that creates (server-side apply) needs `create` too.
            if !existed {
                server.authorize(&opts.user, &attributes("create"))?;
            }
            let r = server.patch(&t, ty, &b, &opts).await?;
            Ok(reply(if existed { 200 } else { 201 }, r))
        }
        (Method::DELETE, false) => {
            let (b, _) = body(req).await?;
            let delete_opts: Value = if b.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&b).unwrap_or(json!({}))
            };
            if delete_opts["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "All"))
            {
                opts.dry_run = true;
            }
            let r = server
                .delete(&t, &opts, &delete_opts["preconditions"])
                .await?;
            let code = if r.object["metadata"]["deletionTimestamp"].is_string()
                && server.get(&t).is_ok()
            {
                202
            } else {
                200
            };
            Ok(reply(code, r))
        }
        (m, _) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{m} is not supported here"),
        )),
    }
}

fn watch(
    server: Arc<Server>,
    def: &ResourceDef,
    ns: Option<&str>,
    labels: Selector,
    fields: Selector,
    q: &HashMap<String, String>,
) -> ApiResult<Response<Body>> {
    let since = q
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
        .map(|rv| {
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))
        })
        .transpose()?;
    let initial = q.get("sendInitialEvents").is_some_and(|s| s == "true");
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|s| s == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if let Err(e) = server.watch(def, ns, labels, fields, since, initial, tx.clone()) {
        // As the API server does: 200, then one ERROR event.
        let line = super::store::watch_line("ERROR", e.status.to_string().as_bytes());
        return Ok(full(200, line));
    }
    if bookmarks {
        let server = server.clone();
        let def = def.clone();
        let every = server.bookmark_every;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if !server.send_bookmark(&def, &tx) {
                    break;
                }
            }
        });
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures::stream::unfold(rx, move |mut rx| async move {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(b)) => Some((Ok::<_, Infallible>(hyper::body::Frame::data(b)), rx)),
            _ => None,
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .unwrap_or_default())
}
