//! The operator end to end: `verifyfull-operator` as a process against the stand-in.
#![allow(clippy::unwrap_used)] // test helpers too: a panic is the failure report

use e2e::harness::{Process, create_dyn, eventually};
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
/// In a workload's connection string: must never reach status, Events or logs.
const PASSWORD: &str = "op3rator-s3cret-Passw0rd";

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
        let crd = e2e::scenario::crd();
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
        // The operator tests are about behaviour; the chart tests prove its RBAC.
        self.standin.grant_cluster_admin(&sa);
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

    /// The webhook with `--watch-policies`, registered as validating and mutating webhook.
    async fn webhook(&self) -> Process {
        let serving_ca = Ca::new("webhook CA").unwrap();
        let pair = serving_ca
            .issue(&["verifyfull-webhook.verifyfull.svc"])
            .unwrap();
        let sa = User::new(
            "system:serviceaccount:verifyfull:verifyfull-webhook",
            &["system:serviceaccounts"],
        );
        self.standin.grant_cluster_admin(&sa);
        let kubeconfig = self.standin.kubeconfig(&sa).unwrap();
        let own = format!("--own-service-accounts={OPERATOR}");
        let p = Process::start(
            &self.dir.join("webhook"),
            Some(&kubeconfig),
            &pair,
            &["--watch-policies", &own],
        )
        .await
        .unwrap();
        self.standin
            .route_service("verifyfull", "verifyfull-webhook", 443, p.addr);
        create_dyn(
            &self.client,
            None,
            e2e::scenario::webhook_configuration(serving_ca.pem()),
        )
        .await
        .unwrap();
        create_dyn(
            &self.client,
            None,
            e2e::scenario::mutating_configuration(serving_ca.pem()),
        )
        .await
        .unwrap();
        p
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

    /// Creates `n` libpq clients `api-0`… in `team`; their API.
    async fn apps(&self, n: usize) -> Api<Deployment> {
        let team = self.deployments("team");
        for i in 0..n {
            team.create(
                &PostParams::default(),
                &app(&format!("api-{i}"), libpq_env()),
            )
            .await
            .unwrap();
        }
        team
    }

    /// Waits for team's copy of the `corp` policy's CA to hold `pem`.
    async fn copy_holds(&self, what: &str, pem: &str) {
        let copies: Api<ConfigMap> = Api::namespaced(self.client.clone(), "team");
        eventually(what, Duration::from_secs(20), || async {
            copies
                .get("verifyfull-ca-corp")
                .await
                .unwrap()
                .data
                .unwrap()["ca.crt"]
                == pem
        })
        .await;
    }

    /// Replaces the CA at the policy's source (the Secret `corp-ca`).
    async fn rotate_source(&self, pem: &str) {
        Api::<Secret>::namespaced(self.client.clone(), "verifyfull")
            .patch(
                "corp-ca",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"ca.crt": base64(pem)}})),
            )
            .await
            .unwrap();
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

/// Creates libpq client `name` and waits for the operator to inject it.
async fn create_injected(team: &Api<Deployment>, name: &str, what: &str) {
    team.create(&PostParams::default(), &app(name, libpq_env()))
        .await
        .unwrap();
    eventually(what, Duration::from_secs(20), || async {
        injected(&team.get(name).await.unwrap())
    })
    .await;
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

fn pod_has_ca(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    let spec = p.spec.as_ref().unwrap();
    spec.volumes
        .iter()
        .flatten()
        .any(|v| v.name == "verifyfull-ca")
        && spec.containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "PGSSLROOTCERT")
}

#[tokio::test]
async fn a_policy_makes_workloads_compliant_and_pods_get_the_ca_at_admission() {
    use k8s_openapi::api::core::v1::Pod;
    let s = Setup::new("together").await;
    let _webhook = s.webhook().await;
    let team = s.deployments("team");
    // No policy yet: a client without a root certificate is denied.
    let e = team
        .create(&PostParams::default(), &app("api", libpq_env()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("denied the request"), "{e}");

    let _op = s.operator("op-1", &[]).await;
    s.policy("corp", corp_policy()).await.unwrap();
    let copies: Api<ConfigMap> = Api::namespaced(s.client.clone(), "team");
    eventually("the CA copy in team", Duration::from_secs(20), || async {
        copies
            .get_opt("verifyfull-ca-corp")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    // Now the same Deployment is judged as it will run: with the CA the operator adds.
    let webhook_sees_policy = || async {
        team.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &app("api", libpq_env()),
        )
        .await
        .is_ok()
    };
    eventually(
        "the webhook judges with the policy",
        Duration::from_secs(20),
        webhook_sees_policy,
    )
    .await;
    create_injected(&team, "api", "the operator injects it").await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "team");
    eventually(
        "its Pods run with the CA",
        Duration::from_secs(20),
        || async {
            let list = pods
                .list(&kube::api::ListParams::default().labels("app=api"))
                .await
                .unwrap();
            !list.items.is_empty() && list.items.iter().all(pod_has_ca)
        },
    )
    .await;

    // A CronJob's Jobs, and a bare Pod, get the CA at admission (the mutating webhook).
    let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "app", "image": "example.com/job:1", "env": libpq_env()}]}}}}}});
    create_dyn(&s.client, Some("team"), cj).await.unwrap();
    let job = s.standin.trigger_cronjob("team", "nightly").await.unwrap();
    eventually(
        "the Job's Pod carries the CA",
        Duration::from_secs(20),
        || async {
            let list = pods
                .list(&kube::api::ListParams::default().labels(&format!("job-name={job}")))
                .await
                .unwrap();
            list.items.len() == 1 && pod_has_ca(&list.items[0])
        },
    )
    .await;
    let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1", "env": libpq_env()}]}})).unwrap();
    let created = pods.create(&PostParams::default(), &bare).await.unwrap();
    assert!(pod_has_ca(&created));
    // A namespace no policy selects: untouched (and denied, having no root certificate).
    let other: Api<Pod> = Api::namespaced(s.client.clone(), "other");
    assert!(other.create(&PostParams::default(), &bare).await.is_err());
}

#[tokio::test]
async fn a_rotated_ca_reaches_copies_and_rolls_workloads_that_ask_for_it() {
    let s = Setup::new("rotation").await;
    let _op = s
        .operator(
            "op-1",
            &["--writes-per-second=0", "--max-concurrent-rollouts=0"],
        )
        .await;
    let mut spec = corp_policy();
    spec["rotation"] = json!({"restart": true});
    s.policy("corp", spec).await.unwrap();
    let team = s.deployments("team");
    team.create(&PostParams::default(), &app("api", libpq_env()))
        .await
        .unwrap();
    eventually("injected", Duration::from_secs(20), || async {
        injected(&team.get("api").await.unwrap())
    })
    .await;
    let hash_of = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("verifyfull.dev/ca-hash").cloned())
    };
    let before = team.get("api").await.unwrap();
    let old_hash = hash_of(&before).expect("the template carries the CA hash");

    let next = Ca::new("corp database CA, 2027").unwrap();
    let bundle = format!("{}{}", s.ca.pem(), next.pem());
    s.rotate_source(&bundle).await;
    s.copy_holds("the copy holds both CAs", &bundle).await;
    eventually("the workload rolled", Duration::from_secs(20), || async {
        let d = team.get("api").await.unwrap();
        hash_of(&d).is_some_and(|h| h != old_hash)
            && d.metadata.generation > before.metadata.generation
    })
    .await;
}

#[tokio::test]
async fn two_replicas_do_not_fight_and_the_standby_takes_over() {
    let s = Setup::new("replicas").await;
    let mut a = s
        .operator(
            "op-a",
            &["--writes-per-second=0", "--max-concurrent-rollouts=0"],
        )
        .await;
    let b = s
        .operator(
            "op-b",
            &["--writes-per-second=0", "--max-concurrent-rollouts=0"],
        )
        .await;
    s.policy("corp", corp_policy()).await.unwrap();
    let team = s.apps(5).await;
    eventually("all five injected", Duration::from_secs(20), || async {
        let mut all = true;
        for i in 0..5 {
            all &= injected(&team.get(&format!("api-{i}")).await.unwrap());
        }
        all
    })
    .await;
    let leaders = a.metric("verifyfull_operator_leader", "").await
        + b.metric("verifyfull_operator_leader", "").await;
    assert_eq!(leaders, 1.0, "exactly one leader");
    assert_eq!(
        s.operator_writes().get("deployments").copied(),
        Some(5),
        "one write per workload: {:?}",
        s.operator_writes()
    );
    // The leader dies; the standby takes the lease and carries on.
    let (leader, standby) = if a.metric("verifyfull_operator_leader", "").await == 1.0 {
        (&mut a, &b)
    } else {
        panic!("op-a started first and should lead")
    };
    leader.kill_now();
    eventually("the standby leads", Duration::from_secs(15), || async {
        standby.metric("verifyfull_operator_leader", "").await == 1.0
    })
    .await;
    create_injected(&team, "late", "a new workload injected by the new leader").await;
}

#[tokio::test]
async fn an_operator_restarted_mid_reconcile_converges() {
    let s = Setup::new("restart").await;
    let team = s.apps(30).await;
    s.policy("corp", corp_policy()).await.unwrap();
    s.standin.set_write_latency(Duration::from_millis(30));
    let mut first = s
        .operator(
            "op-1",
            &[
                "--writes-per-second=0",
                "--max-concurrent-rollouts=0",
                "--concurrency=2",
            ],
        )
        .await;
    eventually("some injected", Duration::from_secs(20), || async {
        s.operator_writes().get("deployments").copied().unwrap_or(0) >= 3
    })
    .await;
    first.kill_now();
    let _second = s
        .operator(
            "op-2",
            &["--writes-per-second=0", "--max-concurrent-rollouts=0"],
        )
        .await;
    eventually("all thirty injected", Duration::from_secs(30), || async {
        let list = team.list(&kube::api::ListParams::default()).await.unwrap();
        list.items.len() == 30 && list.items.iter().all(injected)
    })
    .await;
    for d in team
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
    {
        let env = d.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert_eq!(env.iter().filter(|e| e.name == "PGSSLROOTCERT").count(), 1);
    }
}

#[tokio::test]
async fn conflicts_overlaps_violations_and_fix_mode_are_reported() {
    let s = Setup::new("reports").await;
    let op = s
        .operator(
            "op-1",
            &["--writes-per-second=0", "--max-concurrent-rollouts=0"],
        )
        .await;
    let team = s.deployments("team");
    // The user points libpq at their own file: left alone, reported.
    let own = json!([{"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLMODE", "value": "verify-full"},
                     {"name": "PGSSLROOTCERT", "value": "/mine/ca.pem"}]);
    team.create(&PostParams::default(), &app("own-root", own))
        .await
        .unwrap();
    // A connection string with its own weak sslmode: the CA goes in, the violation stays.
    let weak = json!([{"name": "DATABASE_URL", "value": format!("postgresql://app:{PASSWORD}@db.example.net/app?sslmode=require")}]);
    team.create(&PostParams::default(), &app("legacy", weak))
        .await
        .unwrap();
    // Fix mode: PGSSLMODE only where it decides every libpq target.
    team.create(
        &PostParams::default(),
        &app(
            "env-only",
            json!([{"name": "PGHOST", "value": "db.example.net"}]),
        ),
    )
    .await
    .unwrap();
    let mut spec = corp_policy();
    spec["injection"] = json!({"mode": "Fix"});
    s.policy("corp", spec).await.unwrap();
    let policies = policy_api(&s.client);
    eventually("status counts", Duration::from_secs(20), || async {
        let st = policies.get("corp").await.unwrap().data["status"].clone();
        st["matched"] == 3
            && st["conflicts"] == 1
            && st["violations"] == 1
            && st["violating"] == json!(["Deployment team/legacy"])
            && st["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Degraded" && c["reason"] == "Conflicts")
            })
    })
    .await;
    let env_of = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap()
    };
    eventually(
        "fix mode sets PGSSLMODE where it decides",
        Duration::from_secs(20),
        || async {
            let d = team.get("env-only").await.unwrap();
            env_of(&d)
                .iter()
                .any(|e| e.name == "PGSSLMODE" && e.value.as_deref() == Some("verify-full"))
        },
    )
    .await;
    let legacy = team.get("legacy").await.unwrap();
    assert!(injected(&legacy));
    assert!(
        !env_of(&legacy).iter().any(|e| e.name == "PGSSLMODE"),
        "its string sets sslmode: never overridden"
    );
    let own = team.get("own-root").await.unwrap();
    assert_eq!(
        env_of(&own)
            .iter()
            .find(|e| e.name == "PGSSLROOTCERT")
            .unwrap()
            .value
            .as_deref(),
        Some("/mine/ca.pem")
    );
    let events: Api<DynamicObject> = Api::namespaced_with(
        s.client.clone(),
        "team",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        ),
    );
    eventually(
        "a conflict Event on the workload",
        Duration::from_secs(20),
        || async {
            events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| {
                    e.data["reason"] == "CAInjectionConflict"
                        && e.data["regarding"]["name"] == "own-root"
                        && e.data["note"]
                            .as_str()
                            .is_some_and(|n| n.contains("sets PGSSLROOTCERT itself"))
                })
        },
    )
    .await;

    // The password in legacy's URL reached no status, Event or log line.
    let everything = format!(
        "{}{}{}",
        serde_json::to_string(&policies.list(&Default::default()).await.unwrap()).unwrap(),
        serde_json::to_string(&events.list(&Default::default()).await.unwrap()).unwrap(),
        op.log()
    );
    assert!(
        everything.contains("Deployment team/legacy"),
        "the violation is reported"
    );
    assert!(!everything.contains(PASSWORD), "the password leaked");

    // A second policy selecting the same workloads: neither injects, both say why.
    s.policy("second", corp_policy()).await.unwrap();
    eventually(
        "overlap reported on both",
        Duration::from_secs(20),
        || async {
            let mut both = true;
            for name in ["corp", "second"] {
                let st = policies.get(name).await.unwrap().data["status"].clone();
                both &= st["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["reason"] == "OverlappingPolicies"));
            }
            both
        },
    )
    .await;
    eventually(
        "the overlapped workloads lose the injection",
        Duration::from_secs(20),
        || async { !injected(&team.get("legacy").await.unwrap()) },
    )
    .await;
}

#[tokio::test]
async fn the_webhook_watching_policies_is_ready_without_the_crd() {
    let standin = StandIn::start(Options::default()).await.unwrap();
    let ca = Ca::new("webhook CA").unwrap();
    let pair = ca.issue(&["verifyfull-webhook.verifyfull.svc"]).unwrap();
    let sa = User::new(
        "system:serviceaccount:verifyfull:verifyfull-webhook",
        &["system:serviceaccounts"],
    );
    standin.grant_cluster_admin(&sa);
    let kubeconfig = standin.kubeconfig(&sa).unwrap();
    let dir = std::env::temp_dir().join(format!("verifyfull-nocrd-{}", std::process::id()));
    // Ready (Process::start waits for /readyz) although no PostgresTLSPolicy CRD is served.
    let p = Process::start(&dir, Some(&kubeconfig), &pair, &["--watch-policies"])
        .await
        .unwrap();
    assert!(p.log().contains("CRD is not installed"), "{}", p.log());
    p.stop().await;
}

#[tokio::test]
async fn a_leader_stopped_gracefully_hands_over_at_once() {
    let s = Setup::new("handover").await;
    let a = s.operator("op-a", &[]).await;
    eventually("op-a leads", Duration::from_secs(10), || async {
        a.metric("verifyfull_operator_leader", "").await == 1.0
    })
    .await;
    let b = s.operator("op-b", &[]).await;
    let start = std::time::Instant::now();
    a.terminate().await;
    // Leases here last 3 s; a released one is taken at the standby's next try (≤ 1 s).
    eventually("op-b leads", Duration::from_secs(10), || async {
        b.metric("verifyfull_operator_leader", "").await == 1.0
    })
    .await;
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "took {:?}: the lease was not released",
        start.elapsed()
    );
}

#[tokio::test]
async fn the_operator_waits_not_ready_while_its_crd_is_absent() {
    let standin = StandIn::start(Options::default()).await.unwrap();
    let client = standin.client(&User::admin()).await.unwrap();
    create_dyn(
        &client,
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "verifyfull"}}),
    )
    .await
    .unwrap();
    let sa = User::new(OPERATOR, &["system:serviceaccounts"]);
    standin.grant_cluster_admin(&sa);
    let kubeconfig = standin.kubeconfig(&sa).unwrap();
    let dir =
        std::env::temp_dir().join(format!("verifyfull-operator-nocrd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args = vec!["--namespace=verifyfull".to_string(), "--identity=op".into()];
    let op = Process::launch(
        "verifyfull-operator",
        &dir,
        Some(&kubeconfig),
        ([127, 0, 0, 1], 0).into(),
        &args,
        &[],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, _) = e2e::harness::http_get(op.admin, "/readyz").await.unwrap();
    assert_eq!(code, 503, "ready without its CRD");
    assert!(
        op.log().contains("waiting for the PostgresTLSPolicy CRD"),
        "{}",
        op.log()
    );
    let crd = e2e::scenario::crd();
    create_dyn(&client, None, crd).await.unwrap();
    op.wait_ready(Duration::from_secs(10)).await.unwrap();
    op.stop().await;
}

/// The API server restarts: every watch ends and the change log is gone. The operator and
/// the webhook's caches list again; nothing converged is written twice, and what changes
/// after the restart (a rotation, a new workload, a new namespace) is not missed.
#[tokio::test]
async fn an_api_server_restart_misses_nothing_and_writes_nothing_twice() {
    use k8s_openapi::api::core::v1::Pod;
    let s = Setup::new("apirestart").await;
    let _op = s
        .operator(
            "op-1",
            &["--writes-per-second=0", "--max-concurrent-rollouts=0"],
        )
        .await;
    let _webhook = s.webhook().await;
    s.policy("corp", corp_policy()).await.unwrap();
    let team = s.apps(5).await;
    let all_injected = || async {
        let list = team.list(&kube::api::ListParams::default()).await.unwrap();
        list.items.iter().all(injected)
    };
    eventually("all injected", Duration::from_secs(20), all_injected).await;
    // Converged (the last status and Events written): resyncs, every second, write nothing.
    let mut converged = s.writes();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if s.writes() == converged {
            break;
        }
        converged = s.writes();
    }
    assert_eq!(s.writes(), converged, "resyncs keep writing");

    s.standin.restart();
    // Several resyncs and the relists after the restart: still nothing written.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.writes(),
        converged,
        "the restart made the operator write again: {:?}",
        s.operator_writes()
    );
    // A rotation after the restart reaches the copy.
    let next = Ca::new("corp database CA, after the restart").unwrap();
    s.rotate_source(next.pem()).await;
    s.copy_holds("the rotated CA in the copy", next.pem()).await;
    // A new workload is injected; a namespace made after the restart reaches the webhook's
    // cache, so a Pod there gets the CA at admission.
    create_injected(&team, "api-late", "the late workload injected").await;
    create_dyn(
        &s.client,
        None,
        json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "late", "labels": {"db-tls": "on"}}}),
    )
    .await
    .unwrap();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "one-off"},
        "spec": {"containers": [{"name": "psql", "image": "postgres", "env": libpq_env()}]}}))
    .unwrap();
    let pod = Api::<Pod>::namespaced(s.client.clone(), "late")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    assert!(pod_has_ca(&pod), "{pod:?}");
}

/// Every write takes 200 ms: the operator keeps to its write rate and burst, and converges.
#[tokio::test]
async fn a_slow_api_keeps_the_write_limits_and_converges() {
    let s = Setup::new("slowapi").await;
    let team = s.apps(16).await;
    s.policy("corp", corp_policy()).await.unwrap();
    s.standin.set_write_latency(Duration::from_millis(200));
    let (rate, burst) = (4.0, 4.0);
    let _op = s
        .operator(
            "op-1",
            &[
                "--writes-per-second=4",
                "--write-burst=4",
                "--max-concurrent-rollouts=0",
                "--concurrency=8",
            ],
        )
        .await;
    let started = tokio::time::Instant::now();
    let deployments = || s.operator_writes().get("deployments").copied().unwrap_or(0);
    loop {
        let (written, elapsed) = (deployments(), started.elapsed().as_secs_f64());
        assert!(
            written as f64 <= burst + rate * elapsed + 1.0,
            "{written} workload writes after {elapsed:.1} s: over {rate}/s with a burst of {burst}"
        );
        let list = team.list(&kube::api::ListParams::default()).await.unwrap();
        if list.items.iter().all(injected) {
            break;
        }
        assert!(elapsed < 30.0, "not converged: {written} writes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
