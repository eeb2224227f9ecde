//! `verifyfull audit` on the stand-in: it reads the cluster with GET and LIST only, judges
//! the workloads that run on their own (not the ReplicaSets and Pods their controllers
//! make), resolves references as the webhook does, says once what it could not read
//! (a 403 is not an error), and gives the verdicts `verifyfull check` gives for the same
//! objects exported as YAML.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use e2e::harness::{Kubectl, binary, eventually};
use e2e::standin::api::User;
use e2e::standin::{Options, StandIn};
use serde_json::{Value, json};

fn env(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn deployment(name: &str, env: Value, env_from: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "x", "env": env, "envFrom": env_from}]}
            }
        }
    })
}

/// The objects of the audit: a weak Deployment whose sslmode is in a ConfigMap, a
/// compliant one whose URL is in a Secret, a CronJob with a weak URL, a bare Pod that
/// passes, and in a `warn` namespace a StatefulSet with a plaintext setting.
fn objects() -> Vec<(&'static str, Value)> {
    let ca = "/etc/verifyfull/ca/ca.crt";
    vec![
        (
            "shop",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db"},
            "data": {"PGSSLMODE": "require", "PGHOST": "orders-db.shop.svc"}}),
        ),
        (
            "shop",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "url"},
            "stringData": {"url": format!("postgres://app:s3cr3t@orders-db.shop.svc/app?sslmode=verify-full&sslrootcert={ca}")}}),
        ),
        (
            "shop",
            deployment("weak", json!([]), json!([{"configMapRef": {"name": "db"}}])),
        ),
        (
            "shop",
            deployment(
                "good",
                json!([{"name": "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": "url", "key": "url"}}}]),
                json!([]),
            ),
        ),
        (
            "shop",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "export"},
            "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "export", "image": "x",
                    "env": [env("DATABASE_URL", "postgres://ledger-db.shop.svc/ledger?sslmode=prefer")]}]}}}}}}),
        ),
        (
            "shop",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psql"},
            "spec": {"containers": [{"name": "psql", "image": "x",
                "env": [env("PGHOST", "orders-db.shop.svc"), env("PGSSLMODE", "verify-full"), env("PGSSLROOTCERT", ca)]}]}}),
        ),
        (
            "lab",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "etl"},
            "spec": {"serviceName": "etl", "selector": {"matchLabels": {"app": "etl"}},
                "template": {"metadata": {"labels": {"app": "etl"}}, "spec": {"containers": [{"name": "etl", "image": "x",
                    "env": [env("PGHOST", "lab-db.lab.svc"), env("PGSSLMODE", "disable")]}]}}}}),
        ),
    ]
}

/// A ClusterRole allowing get and list of `resources` (core and apps/batch), bound to `user`.
fn reader(user: &str, resources: &[&str]) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": user},
         "rules": [{"apiGroups": ["", "apps", "batch"], "resources": resources, "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": user},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
    ]})
}

const WORKLOADS: &[&str] = &[
    "deployments",
    "statefulsets",
    "daemonsets",
    "cronjobs",
    "replicationcontrollers",
    "replicasets",
    "jobs",
    "pods",
];

/// Runs `verifyfull ARGS` with `kubeconfig`: exit code, stdout, stderr.
async fn verifyfull(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(binary("verifyfull").unwrap())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each judged object as `Kind namespace/name verdict [codes]`.
fn verdicts(report: &Value) -> BTreeSet<String> {
    (report["objects"].as_array().unwrap().iter())
        .map(|o| {
            let codes: Vec<&str> = (o["containers"].as_array().unwrap().iter())
                .flat_map(|c| c["findings"].as_array().unwrap())
                .map(|f| f["code"].as_str().unwrap())
                .collect();
            format!(
                "{} {}/{} {} {codes:?}",
                o["kind"].as_str().unwrap(),
                o["namespace"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap(),
                o["verdict"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn audit_reads_only_and_agrees_with_check() {
    let s = StandIn::start(Options::default()).await.unwrap();
    let admin = s.kubeconfig(&User::admin()).unwrap();
    let kubectl = Kubectl::new(&admin);
    for (ns, mode) in [("shop", "enforce"), ("lab", "warn"), ("verifyfull", "off")] {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"verifyfull.dev/mode": mode}}});
        assert!(kubectl.create("default", &namespace).await.unwrap().ok);
    }
    for (ns, object) in objects() {
        let out = kubectl.create(ns, &object).await.unwrap();
        assert!(out.ok, "{}", out.stderr);
    }
    // The controllers make the Deployments' ReplicaSets and Pods: the audit must skip them.
    eventually("the Deployments' Pods", Duration::from_secs(20), || async {
        let out = kubectl
            .run(&["get", "pods", "-n", "shop", "-o", "name"], None)
            .await
            .unwrap();
        out.stdout.lines().count() >= 3
    })
    .await;
    let mut everything: Vec<&str> = WORKLOADS.to_vec();
    everything.extend(["configmaps", "secrets", "namespaces"]);
    assert!(
        kubectl
            .create("default", &reader("auditor", &everything))
            .await
            .unwrap()
            .ok
    );
    let auditor = s.kubeconfig(&User::new("auditor", &[])).unwrap();

    let (code, stdout, stderr) = verifyfull(&auditor, &["audit", "-o", "json"]).await;
    assert_eq!(code, 1, "violations are exit 1: {stderr} {stdout}");
    let audit: Value = serde_json::from_str(&stdout).unwrap();
    let expected: BTreeSet<String> = [
        r#"CronJob shop/export violation ["SslModeTooWeak"]"#,
        r#"Deployment shop/good pass []"#,
        r#"Deployment shop/weak violation ["SslModeTooWeak"]"#,
        r#"Pod shop/psql pass []"#,
        r#"StatefulSet lab/etl violation ["SslModeTooWeak"]"#,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(verdicts(&audit), expected, "{stdout}");
    assert_eq!(audit["modes"]["shop"], "enforce");
    assert_eq!(audit["modes"]["lab"], "warn");
    assert!(!stdout.contains("s3cr3t"), "no password in the output");
    let verbs: BTreeSet<String> = (s.server.grants().into_iter())
        .filter(|g| g.user == "auditor")
        .map(|g| g.verb)
        .collect();
    assert!(
        verbs.iter().all(|v| v == "get" || v == "list") && verbs.contains("list"),
        "the audit only reads: {verbs:?}"
    );

    // The human report: by namespace, with its mode; enforce says what the next change meets.
    let (_, human, _) = verifyfull(&auditor, &["audit"]).await;
    assert!(human.contains("namespace shop (mode enforce)"), "{human}");
    assert!(
        human.contains("Deployment weak (would be denied on its next change): DENY"),
        "{human}"
    );
    assert!(human.contains("namespace lab (mode warn)"), "{human}");
    assert!(
        !human.contains("StatefulSet etl (would be denied"),
        "{human}"
    );
    assert!(
        human.contains("| shop | enforce | 4 | 2 | 0 | 0 | 2 |"),
        "{human}"
    );

    // The same as policy reports, one per namespace.
    let args = ["audit", "-o", "report", "--report-api", "wgpolicyk8s"];
    let (code, stdout, _) = verifyfull(&auditor, &args).await;
    assert_eq!(code, 1);
    assert!(!stdout.contains("s3cr3t"), "no password in the reports");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let reports = list["items"].as_array().unwrap();
    let shop = (reports.iter())
        .find(|r| r["metadata"]["namespace"] == "shop")
        .unwrap();
    assert_eq!(shop["kind"], "PolicyReport");
    assert_eq!(
        shop["summary"],
        json!({"pass": 2, "fail": 2, "warn": 0, "error": 0, "skip": 0})
    );
    let rules: BTreeSet<(&str, &str, &str)> = (shop["results"].as_array().unwrap().iter())
        .map(|r| {
            let name = r["resources"][0]["name"].as_str().unwrap();
            (
                name,
                r["rule"].as_str().unwrap(),
                r["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        rules.contains(&("weak", "SslModeTooWeak", "fail")),
        "{rules:?}"
    );
    assert!(rules.contains(&("good", "VerifyFull", "pass")), "{rules:?}");
    assert_eq!(shop["results"][0]["properties"]["mode"], "enforce");

    // The same objects exported as YAML, and `verifyfull check` on them.
    let export = kubectl
        .run(
            &[
                "get",
                "deployments,statefulsets,cronjobs,configmaps,secrets",
                "-A",
                "-o",
                "yaml",
            ],
            None,
        )
        .await
        .unwrap();
    assert!(export.ok, "{}", export.stderr);
    let pod = kubectl
        .run(&["get", "pod", "psql", "-n", "shop", "-o", "yaml"], None)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("verifyfull-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("export.yaml"),
        format!("{}---\n{}", export.stdout, pod.stdout),
    )
    .unwrap();
    let (code, stdout, stderr) = verifyfull(
        &auditor,
        &[
            "check",
            "-o",
            "json",
            dir.join("export.yaml").to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let check: Value = serde_json::from_str(&stdout).unwrap();
    let judged_by_check: BTreeSet<String> = (verdicts(&check).into_iter())
        .filter(|v| !v.contains(" verifyfull/"))
        .collect();
    assert_eq!(judged_by_check, verdicts(&audit), "audit and check agree");
    std::fs::remove_dir_all(&dir).unwrap();

    // Without Secrets: references to them are Unresolved, said once, and not an error.
    assert!(
        kubectl
            .create(
                "default",
                &reader(
                    "no-secrets",
                    &WORKLOADS
                        .iter()
                        .copied()
                        .chain(["configmaps"])
                        .collect::<Vec<_>>()
                )
            )
            .await
            .unwrap()
            .ok
    );
    let partial = s.kubeconfig(&User::new("no-secrets", &[])).unwrap();
    let (code, stdout, stderr) = verifyfull(&partial, &["audit", "-n", "shop", "-o", "json"]).await;
    assert_eq!(code, 1, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        verdicts(&report).contains(r#"Deployment shop/good warning ["Unresolved"]"#),
        "{stdout}"
    );
    let notes: Vec<&str> = (report["notes"].as_array().unwrap().iter())
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("Secrets are not readable")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("Namespaces are not readable")),
        "{notes:?}"
    );
}
