//! The operator's policy reports on the stand-in: one report per covered namespace, that
//! follows a referenced ConfigMap and the namespace's mode label, keeps an unchanged
//! result's timestamp, writes nothing on a restart, and uses whichever report API is
//! served.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::time::Duration;

use e2e::harness::{Process, eventually};
use e2e::standin::api::User;
use e2e::standin::{Options, StandIn};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

const OPERATOR: &str = "system:serviceaccount:verifyfull:verifyfull-operator";

fn crd(group: &str, version: &str, kind: &str, plural: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

fn deployment(name: &str, env_from: Value, env: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "x", "envFrom": env_from, "env": env}]}}}})
}

async fn create(client: &kube::Client, ns: Option<&str>, v: Value) {
    e2e::harness::create_dyn(client, ns, v).await.unwrap();
}

struct World {
    standin: StandIn,
    client: kube::Client,
    dir: std::path::PathBuf,
}

impl World {
    async fn new(name: &str, crds: &[Value]) -> World {
        let standin = StandIn::start(Options::default()).await.unwrap();
        let client = standin.client(&User::admin()).await.unwrap();
        for (ns, labels) in [
            ("verifyfull", json!({})),
            ("shop", json!({"verifyfull.dev/mode": "warn"})),
            ("quiet", json!({"verifyfull.dev/mode": "off"})),
        ] {
            create(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})).await;
        }
        create(&client, None, e2e::scenario::crd()).await;
        for c in crds {
            create(&client, None, c.clone()).await;
        }
        create(&client, Some("shop"), json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "db"}, "data": {"PGHOST": "orders-db.shop.svc", "PGSSLMODE": "require"}})).await;
        create(
            &client,
            Some("shop"),
            deployment("weak", json!([{"configMapRef": {"name": "db"}}]), json!([])),
        )
        .await;
        let good = json!([{"name": "PGHOST", "value": "orders-db.shop.svc"},
            {"name": "PGSSLMODE", "value": "verify-full"}, {"name": "PGSSLROOTCERT", "value": "/ca.crt"}]);
        create(&client, Some("shop"), deployment("good", json!([]), good)).await;
        create(
            &client,
            Some("quiet"),
            deployment(
                "legacy",
                json!([]),
                json!([{"name": "PGHOST", "value": "x.example.net"}]),
            ),
        )
        .await;
        let dir =
            std::env::temp_dir().join(format!("verifyfull-reports-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        World {
            standin,
            client,
            dir,
        }
    }

    async fn operator(&self, id: &str, reports: &str) -> Process {
        let sa = User::new(OPERATOR, &["system:serviceaccounts"]);
        self.standin.grant_cluster_admin(&sa);
        let kubeconfig = self.standin.kubeconfig(&sa).unwrap();
        let args = [
            "--namespace=verifyfull",
            "--resync-seconds=1",
            &format!("--identity={id}"),
            "--lease-seconds=3",
            &format!("--reports={reports}"),
        ];
        let p = Process::operator(&self.dir.join(id), &kubeconfig, &args)
            .await
            .unwrap();
        p.wait_ready(Duration::from_secs(30)).await.unwrap();
        p
    }

    fn reports_written(&self, plural: &str) -> u64 {
        let writes = self.standin.server.counters.writes_of(OPERATOR);
        writes.get(plural).copied().unwrap_or(0)
    }

    async fn report(&self, ar: &ApiResource, ns: &str) -> Option<Value> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, ar);
        let r = api.get_opt("verifyfull").await.unwrap()?;
        Some(serde_json::to_value(r).unwrap())
    }
}

fn results(report: &Value) -> Vec<(String, String, String)> {
    (report["results"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["resources"][0]["name"].as_str().unwrap().to_string(),
                r["rule"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn reports_follow_references_and_modes_and_cost_nothing_when_unchanged() {
    let w = World::new(
        "open",
        &[crd("openreports.io", "v1alpha1", "Report", "reports")],
    )
    .await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report"),
        "reports",
    );
    let op = w.operator("a", "auto").await;
    eventually("the shop report", Duration::from_secs(30), || async {
        w.report(&ar, "shop").await.is_some()
    })
    .await;
    let report = w.report(&ar, "shop").await.unwrap();
    assert_eq!(
        results(&report),
        [
            (
                "good".to_string(),
                "VerifyFull".to_string(),
                "pass".to_string()
            ),
            (
                "weak".to_string(),
                "SslModeTooWeak".to_string(),
                "fail".to_string()
            ),
        ]
    );
    assert_eq!(report["results"][1]["properties"]["mode"], "warn");
    assert_eq!(
        report["results"][1]["properties"]["source"],
        "ConfigMap db/PGHOST via envFrom"
    );
    assert!(
        w.report(&ar, "quiet").await.is_none(),
        "a namespace labelled off has none"
    );
    assert!(
        w.report(&ar, "verifyfull").await.is_none(),
        "verifyfull's own namespace has none"
    );

    // Nothing changes: nothing is written, even by a new leader after a restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = w.reports_written("reports");
    op.stop().await;
    let op = w.operator("b", "auto").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        w.reports_written("reports"),
        written,
        "a restart rewrites nothing"
    );
    // A new policy (selecting no namespace here) re-judges every namespace; its status is
    // resynced every second; the reports stay as they are.
    let policy = json!({"apiVersion": "verifyfull.dev/v1alpha1", "kind": "PostgresTLSPolicy",
        "metadata": {"name": "corp"},
        "spec": {"caSource": {"configMap": {"namespace": "verifyfull", "name": "corp-ca"}},
            "namespaceSelector": {"matchLabels": {"db-tls": "on"}}}});
    create(&w.client, None, policy).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        w.reports_written("reports"),
        written,
        "a policy and its resyncs change no result: nothing written"
    );

    // The referenced ConfigMap is fixed: the result follows; the unchanged one keeps its time.
    let before = w.report(&ar, "shop").await.unwrap();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(w.client.clone(), "shop");
    let fix = json!({"data": {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/ca.crt"}});
    cms.patch("db", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    eventually(
        "the weak Deployment passes",
        Duration::from_secs(30),
        || async {
            w.report(&ar, "shop")
                .await
                .is_some_and(|r| r["summary"]["fail"] == 0)
        },
    )
    .await;
    let after = w.report(&ar, "shop").await.unwrap();
    assert_eq!(
        after["results"][0]["timestamp"], before["results"][0]["timestamp"],
        "good: unchanged"
    );

    // A workload deleted: its result goes.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(w.client.clone(), "shop");
    deployments
        .delete("good", &Default::default())
        .await
        .unwrap();
    eventually(
        "the deleted Deployment's result gone",
        Duration::from_secs(30),
        || async {
            w.report(&ar, "shop")
                .await
                .is_some_and(|r| results(&r).iter().all(|(name, _, _)| name != "good"))
        },
    )
    .await;

    // The namespace turns off: its report goes.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(w.client.clone());
    let off = json!({"metadata": {"labels": {"verifyfull.dev/mode": "off"}}});
    namespaces
        .patch("shop", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    eventually(
        "the shop report deleted",
        Duration::from_secs(30),
        || async { w.report(&ar, "shop").await.is_none() },
    )
    .await;
    let (_, metrics) = e2e::harness::http_get(op.admin, "/metrics").await.unwrap();
    assert!(
        !metrics.contains("namespace=\"shop\""),
        "no series for a namespace without a report"
    );
    op.stop().await;
}

#[tokio::test]
async fn the_older_report_api_when_only_it_is_served() {
    let w = World::new(
        "wg",
        &[crd(
            "wgpolicyk8s.io",
            "v1alpha2",
            "PolicyReport",
            "policyreports",
        )],
    )
    .await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    );
    let op = w.operator("a", "auto").await;
    eventually("the shop PolicyReport", Duration::from_secs(30), || async {
        w.report(&ar, "shop").await.is_some()
    })
    .await;
    let report = w.report(&ar, "shop").await.unwrap();
    assert_eq!(report["kind"], "PolicyReport");
    assert_eq!(report["summary"]["fail"], 1);
    let (_, metrics) = e2e::harness::http_get(op.admin, "/metrics").await.unwrap();
    assert!(
        metrics
            .contains("verifyfull_operator_report_results{namespace=\"shop\",result=\"fail\"} 1"),
        "{metrics}"
    );
    op.stop().await;
}
