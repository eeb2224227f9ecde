//! `/mutate` and policy-aware validation, through `review` (the HTTP layer is the same as
//! for the validating paths, tested in tls.rs; end to end in tests/tests/operator.rs).

use base64::Engine;
use policy::admission::Mode;
use policy::crd::PostgresTLSPolicy;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use webhook::policies::Snapshot;
use webhook::review::{Decider, mutate, review};

mod common;

fn policies() -> Snapshot {
    let p: PostgresTLSPolicy = serde_json::from_value(json!({
        "apiVersion": "verifyfull.dev/v1alpha1", "kind": "PostgresTLSPolicy", "metadata": {"name": "corp"},
        "spec": {"caSource": {"secret": {"namespace": "verifyfull", "name": "ca"}},
                 "namespaceSelector": {"matchLabels": {"db-tls": "on"}}}}))
    .expect("policy");
    let namespaces = HashMap::from([
        (
            "team".to_string(),
            [("db-tls".to_string(), "on".to_string())].into(),
        ),
        ("other".to_string(), Default::default()),
    ]);
    Snapshot {
        policies: Arc::new(vec![p]),
        namespaces: Arc::new(namespaces),
    }
}

fn review_of(ns: &str, kind: &str, object: Value) -> Vec<u8> {
    let group = if kind == "Pod" { "" } else { "apps" };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": group, "version": "v1", "kind": kind}, "namespace": ns,
        "operation": "CREATE", "userInfo": {"username": "dev", "groups": ["devs"]}, "object": object}})
    .to_string()
    .into_bytes()
}

fn pod(env: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "app", "image": "x", "env": env}]}})
}

fn libpq() -> Value {
    json!([{"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLMODE", "value": "verify-full"}])
}

fn with_decider<T>(f: impl FnOnce(&Decider<'_>) -> T) -> T {
    common::with_decider(Some(policies()), f)
}

fn response(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body).expect("JSON")["response"].clone()
}

#[test]
fn pods_a_policy_selects_get_a_patch_once() {
    with_decider(|d| {
        let r = mutate(&review_of("team", "Pod", pod(libpq())), d);
        assert_eq!((r.status, r.result), (200, "patched"));
        let resp = response(&r.body);
        assert_eq!(
            (
                resp["uid"].as_str(),
                resp["allowed"].as_bool(),
                resp["patchType"].as_str()
            ),
            (Some("u-1"), Some(true), Some("JSONPatch"))
        );
        let ops: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(resp["patch"].as_str().expect("patch"))
                .expect("base64"),
        )
        .expect("ops");
        let paths: Vec<&str> = ops
            .as_array()
            .expect("ops")
            .iter()
            .map(|o| o["path"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            paths,
            [
                "/spec/volumes",
                "/spec/containers/0/volumeMounts",
                "/spec/containers/0/env/-"
            ]
        );
        // Applied, then sent again (re-invocation): nothing more.
        let mut injected = pod(libpq());
        let doc = json_patch::Patch(serde_json::from_value(ops).expect("typed"));
        json_patch::patch(&mut injected, &doc).expect("applies");
        let again = mutate(&review_of("team", "Pod", injected), d);
        assert_eq!(again.result, "unchanged");
        assert!(response(&again.body)["patch"].is_null());
        // Not selected: untouched.
        assert_eq!(
            mutate(&review_of("other", "Pod", pod(libpq())), d).result,
            "unchanged"
        );
        assert_eq!(
            mutate(&review_of("team", "Deployment", json!({})), d).result,
            "unchanged"
        );
        assert_eq!(mutate(b"{", d).status, 400);
    });
}

#[test]
fn selected_workloads_are_judged_as_they_will_run() {
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
        "spec": {"selector": {}, "template": {"metadata": {}, "spec": {"containers": [{"name": "app", "image": "x", "env": libpq()}]}}}});
    with_decider(|d| {
        let selected = review(
            &review_of("team", "Deployment", deployment.clone()),
            Mode::Enforce,
            d,
        );
        assert_eq!(
            response(&selected.body)["allowed"],
            true,
            "the operator will add the CA"
        );
        let not = review(
            &review_of("other", "Deployment", deployment.clone()),
            Mode::Enforce,
            d,
        );
        assert_eq!(response(&not.body)["allowed"], false);
    });
}

/// A recognised application whose driver reads `PGSSLROOTCERT` (Sentry: psycopg2, libpq)
/// is judged with the CA the operator adds; one whose driver does not (Grafana: lib/pq
/// through its own setting, written into the DSN) is not helped by it.
#[test]
fn injection_helps_an_application_whose_driver_reads_pgsslrootcert() {
    let sentry = pod(json!([
        {"name": "SENTRY_POSTGRES_HOST", "value": "db.example.net"},
        {"name": "PGSSLMODE", "value": "verify-full"}]));
    let grafana = pod(json!([
        {"name": "GF_DATABASE_TYPE", "value": "postgres"},
        {"name": "GF_DATABASE_HOST", "value": "db.example.net"},
        {"name": "GF_DATABASE_SSL_MODE", "value": "require"}]));
    with_decider(|d| {
        let verdict = |ns: &str, p: &Value| {
            response(&review(&review_of(ns, "Pod", p.clone()), Mode::Enforce, d).body)
        };
        assert_eq!(verdict("team", &sentry)["allowed"], true);
        let other = verdict("other", &sentry);
        assert_eq!(other["allowed"], false);
        assert!(
            other["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Sentry") && m.contains("PGSSLROOTCERT")),
            "{other}"
        );
        let g = verdict("team", &grafana);
        assert_eq!(g["allowed"], false, "{g}");
        assert!(
            g["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Grafana: GF_DATABASE_SSL_MODE=require")),
            "{g}"
        );
    });
}

/// A namespace the watch has not delivered yet (created with its Pod): a review that might
/// depend on it says so, for the server to wait for it; its answer if the namespace never
/// comes fails closed. A review that passes anyway, or no policy at all, needs no wait.
#[test]
fn a_namespace_not_yet_seen_is_worth_waiting_for_only_when_it_could_matter() {
    with_decider(|d| {
        let r = mutate(&review_of("brand-new", "Pod", pod(libpq())), d);
        assert!(r.namespace_unknown);
        let resp = response(&r.body);
        assert_eq!(resp["allowed"], false);
        assert_eq!(resp["status"]["code"], 503);
        assert!(
            resp["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("\"brand-new\"")),
            "{resp}"
        );
        // The validating path: a denial might turn into a pass with the policy's CA.
        let denied = review(
            &review_of("brand-new", "Pod", pod(libpq())),
            Mode::Enforce,
            d,
        );
        assert!(denied.namespace_unknown && denied.result == "denied");
        let fine = json!([{"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLMODE", "value": "verify-full"},
                          {"name": "PGSSLROOTCERT", "value": "/etc/ca.crt"}]);
        let allowed = review(&review_of("brand-new", "Pod", pod(fine)), Mode::Enforce, d);
        assert!(!allowed.namespace_unknown && allowed.result == "allowed");
    });
    // No policy: nothing to wait for.
    common::with_decider(Some(Snapshot::default()), |d| {
        let r = mutate(&review_of("brand-new", "Pod", pod(libpq())), d);
        assert!(!r.namespace_unknown);
        assert_eq!(r.result, "unchanged");
    });
}
