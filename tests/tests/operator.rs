//! The operator end to end: `verifyfull-operator` as a process against the stand-in.
#![allow(clippy::unwrap_used)] // test helpers too: a panic is the failure report

use e2e::harness::Process;
use e2e::pki::Ca;
use e2e::standin::api::User;
use e2e::standin::{Options, StandIn};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const OPERATOR: &str = "system:serviceaccount:verifyfull:verifyfull-operator";

struct Setup {
    standin: StandIn,
    client: kube::Client,
    ca: Ca,
    dir: PathBuf,
}

fn policy_api(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("verifyfull.dev", "v1alpha1", "PostgresTLSPolicy"),
        "postgrestlspolicies",
    );
    Api::all_with(client.clone(), &ar)
}

async fn create_dyn(
    client: &kube::Client,
    ns: Option<&str>,
    v: Value,
) -> Result<DynamicObject, kube::Error> {
    let (group, version) = match v["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), v["apiVersion"].as_str().unwrap().to_string()),
    };
    let kind = v["kind"].as_str().unwrap();
    let plural = match kind {
        "PostgresTLSPolicy" => "postgrestlspolicies".to_string(),
        "CustomResourceDefinition" => "customresourcedefinitions".to_string(),
        k => format!("{}s", k.to_ascii_lowercase()),
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), &plural);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
}

impl Setup {
    async fn new(name: &str) -> Setup {
        let standin = StandIn::start(Options::default()).await.unwrap();
        let client = standin.client(&User::admin()).await.unwrap();
        let ca = Ca::new("corp database CA").unwrap();
        for (ns, labels) in [
            ("verifyfull", json!({})),
            ("team", json!({"db-tls": "on"})),
            ("other", json!({})),
        ] {
            create_dyn(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})).await.unwrap();
        }
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "corp-ca"},
            "stringData": {}, "data": {"ca.crt": base64(ca.pem())}}))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), "verifyfull")
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let crd_text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/postgrestlspolicies.verifyfull.dev.yaml"
        ))
        .unwrap();
        let crd: Value = serde_saphyr::from_str(&crd_text).unwrap();
        create_dyn(&client, None, crd).await.unwrap();
        let dir =
            std::env::temp_dir().join(format!("verifyfull-operator-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Setup {
            standin,
            client,
            ca,
            dir,
        }
    }

    async fn operator(&self, id: &str, extra: &[&str]) -> Process {
        let sa = User::new(OPERATOR, &["system:serviceaccounts"]);
        let kubeconfig = self.standin.kubeconfig(&sa).unwrap();
        let mut args = vec![
            "--namespace=verifyfull".to_string(),
            format!("--identity={id}"),
            "--resync-seconds=1".into(),
            "--lease-seconds=3".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::operator(&self.dir.join(id), &kubeconfig, &refs)
            .await
            .unwrap()
    }

    async fn policy(&self, name: &str, spec: Value) -> Result<DynamicObject, kube::Error> {
        create_dyn(
            &self.client,
            None,
            json!({"apiVersion": "verifyfull.dev/v1alpha1", "kind": "PostgresTLSPolicy",
            "metadata": {"name": name}, "spec": spec}),
        )
        .await
    }

    fn deployments(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// The operator's writes so far, except Lease renewals.
    fn writes(&self) -> u64 {
        self.operator_writes()
            .iter()
            .filter(|(r, _)| !r.starts_with("leases"))
            .map(|(_, n)| n)
            .sum()
    }

    fn operator_writes(&self) -> std::collections::HashMap<String, u64> {
        self.standin.server.counters.writes_of(OPERATOR)
    }
}

fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn corp_policy() -> Value {
    json!({"caSource": {"secret": {"namespace": "verifyfull", "name": "corp-ca"}},
           "namespaceSelector": {"matchLabels": {"db-tls": "on"}}})
}

fn app(name: &str, env: Value) -> Deployment {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "example.com/app:1", "env": env}]}}}})).unwrap()
}

fn libpq_env() -> Value {
    json!([{"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLMODE", "value": "verify-full"}])
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn injected(d: &Deployment) -> bool {
    let spec = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let has_volume = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == "verifyfull-ca");
    let c = &spec.containers[0];
    let has_env = c.env.iter().flatten().any(|e| {
        e.name == "PGSSLROOTCERT" && e.value.as_deref() == Some("/etc/verifyfull/ca/ca.crt")
    });
    let has_mount = c
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == "verifyfull-ca" && m.sub_path.is_none());
    has_volume && has_env && has_mount
}

#[tokio::test]
async fn a_policy_copies_the_ca_injects_reports_and_cleans_up() {
    let s = Setup::new("lifecycle").await;
    let op = s
        .operator(
            "op-1",
            &["--writes-per-second=0", "--max-concurrent-rollouts=0"],
        )
        .await;
    s.deployments("team")
        .create(&PostParams::default(), &app("api", libpq_env()))
        .await
        .unwrap();
    s.deployments("other")
        .create(&PostParams::default(), &app("api", libpq_env()))
        .await
        .unwrap();
    s.policy("corp", corp_policy()).await.unwrap();

    let copies: Api<ConfigMap> = Api::namespaced(s.client.clone(), "team");
    eventually("the CA copy in team", Duration::from_secs(20), || async {
        copies
            .get_opt("verifyfull-ca-corp")
            .await
            .unwrap()
            .is_some_and(|c| c.data.unwrap()["ca.crt"] == s.ca.pem())
    })
    .await;
    assert!(
        Api::<ConfigMap>::namespaced(s.client.clone(), "other")
            .get_opt("verifyfull-ca-corp")
            .await
            .unwrap()
            .is_none()
    );
    let team = s.deployments("team");
    eventually(
        "the Deployment in team injected",
        Duration::from_secs(20),
        || async { injected(&team.get("api").await.unwrap()) },
    )
    .await;
    assert!(
        !injected(&s.deployments("other").get("api").await.unwrap()),
        "a namespace the policy does not select"
    );
    let d = team.get("api").await.unwrap();
    let managers: Vec<String> = d
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"verifyfull-operator".to_string()),
        "{managers:?}"
    );

    let policies = policy_api(&s.client);
    eventually(
        "status: ready, 1 matched, 1 injected, 0 violations",
        Duration::from_secs(20),
        || async {
            let p = policies.get("corp").await.unwrap();
            let st = &p.data["status"];
            st["matched"] == 1
                && st["injected"] == 1
                && st["violations"] == 0
                && st["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        },
    )
    .await;

    // Converged: resyncs (every second here) write nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = s.writes();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.writes() - before,
        0,
        "writes during resync of converged workloads: {:?}",
        s.operator_writes()
    );

    // Opting out removes exactly what was added.
    let opt_out = json!({"spec": {"template": {"metadata": {"annotations": {"verifyfull.dev/inject-ca": "false"}}}}});
    team.patch("api", &PatchParams::default(), &Patch::Merge(&opt_out))
        .await
        .unwrap();
    eventually("the injection removed", Duration::from_secs(20), || async {
        !injected(&team.get("api").await.unwrap())
    })
    .await;
    let d = team.get("api").await.unwrap();
    let c = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(
        c.env.as_ref().unwrap().len(),
        2,
        "the user's variables stay"
    );
    assert!(
        !d.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("verifyfull.dev/injected")
    );

    // Deleting the policy removes its copies and lets it go.
    policies
        .delete("corp", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "policy and copies gone",
        Duration::from_secs(20),
        || async {
            policies.get_opt("corp").await.unwrap().is_none()
                && copies
                    .get_opt("verifyfull-ca-corp")
                    .await
                    .unwrap()
                    .is_none()
        },
    )
    .await;
    op.stop().await;
}

#[tokio::test]
async fn bad_policies_are_refused_at_apply_time() {
    let s = Setup::new("invalid").await;
    let cases = [
        (
            json!({"caSource": {}}),
            "set exactly one of secret or configMap",
        ),
        (
            json!({"caSource": {"secret": {"namespace": "a", "name": "b"}, "configMap": {"namespace": "a", "name": "b"}}}),
            "set exactly one of secret or configMap",
        ),
        (
            json!({"caSource": {"secret": {"namespace": "a", "name": "b"}}, "injection": {"mountPath": "relative"}}),
            "spec.injection.mountPath",
        ),
        (
            json!({"caSource": {"secret": {"namespace": "a", "name": "b"}}, "injection": {"mountPath": "/etc/../root"}}),
            "mountPath may not contain '..'",
        ),
        (
            json!({"caSource": {"secret": {"namespace": "a", "name": "b"}}, "injection": {"fileName": "a/b"}}),
            "spec.injection.fileName",
        ),
        (
            json!({"caSource": {"secret": {"namespace": "a", "name": "b"}}, "injection": {"mode": "Sometimes"}}),
            "Unsupported value: \"Sometimes\"",
        ),
        (
            json!({"caSource": {"secret": {"namespace": "", "name": "b"}}}),
            "spec.caSource.secret.namespace",
        ),
    ];
    for (i, (spec, why)) in cases.into_iter().enumerate() {
        match s.policy(&format!("bad-{i}"), spec).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{}", e.message);
                assert!(e.message.contains(why), "case {i}: {}", e.message);
            }
            other => panic!("case {i} accepted: {other:?}"),
        }
    }
}
