//! The operator at scale, against the API stand-in with 1 ms added to every write:
//! convergence of 1,000 and 10,000 Deployments (write limit off), the default limit held,
//! writes of a full resync after convergence, new-Deployment-to-patch latency, a CA
//! rotation reaching 10,000 workloads, and the operator's RSS. Baseline in the same run:
//! the same server-side apply patches sent straight from a client, 32 in flight.
//!
//! `cargo build --release -p verifyfull-operator && cargo bench -p verifyfull-e2e --bench operator`
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the failure report

use e2e::harness::Process;
use e2e::pki::Ca;
use e2e::standin::api::User;
use e2e::standin::{Options, StandIn};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const OPERATOR: &str = "system:serviceaccount:verifyfull:verifyfull-operator";
const CONCURRENCY: usize = 32;

fn deployment(i: usize, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": format!("app-{i:05}"), "labels": {"app": format!("app-{i:05}")}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": format!("app-{i:05}")}},
                 "template": {"metadata": {"labels": {"app": format!("app-{i:05}")}},
                              "spec": {"containers": [{"name": "app", "image": "example.com/app:1.2.3",
                                  "env": [{"name": "PGHOST", "value": "db.example.net"},
                                          {"name": "PGSSLMODE", "value": "verify-full"},
                                          {"name": "LOG_LEVEL", "value": "info"}],
                                  "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}}}))
    .unwrap()
}

fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn create(client: &kube::Client, ns: Option<&str>, v: Value) {
    let (g, ver) = v["apiVersion"]
        .as_str()
        .unwrap()
        .split_once('/')
        .map(|(g, v)| (g.to_string(), v.to_string()))
        .unwrap_or((String::new(), v["apiVersion"].as_str().unwrap().to_string()));
    let kind = v["kind"].as_str().unwrap();
    let plural = match kind {
        "PostgresTLSPolicy" => "postgrestlspolicies".to_string(),
        k => format!("{}s", k.to_ascii_lowercase()),
    };
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&g, &ver, kind), &plural);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap();
}

struct World {
    standin: StandIn,
    client: kube::Client,
    dir: std::path::PathBuf,
}

impl World {
    async fn new(n: usize, controllers: bool, replicas: i32) -> World {
        let standin = StandIn::start(Options {
            controllers,
            ..Options::default()
        })
        .await
        .unwrap();
        let client = standin.client(&User::admin()).await.unwrap();
        for ns in ["verifyfull", "team"] {
            create(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"db-tls": "on"}}})).await;
        }
        let ca = Ca::new("bench CA").unwrap();
        let secret: Secret = serde_json::from_value(
            json!({"metadata": {"name": "corp-ca"}, "data": {"ca.crt": base64(ca.pem())}}),
        )
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), "verifyfull")
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let crd: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../crds/postgrestlspolicies.verifyfull.dev.yaml"
            ))
            .unwrap(),
        )
        .unwrap();
        create(&client, None, crd).await;
        let api: Api<Deployment> = Api::namespaced(client.clone(), "team");
        stream::iter(0..n)
            .map(|i| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &deployment(i, replicas))
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .unwrap();
        let dir =
            std::env::temp_dir().join(format!("verifyfull-operator-bench-{}", std::process::id()));
        standin.set_write_latency(Duration::from_millis(1));
        World {
            standin,
            client,
            dir,
        }
    }

    async fn operator(&self, id: &str, extra: &[&str]) -> Process {
        let kubeconfig = self
            .standin
            .kubeconfig(&User::new(OPERATOR, &["system:serviceaccounts"]))
            .unwrap();
        let mut args = vec![
            "--namespace=verifyfull".to_string(),
            format!("--identity={id}"),
            "--resync-seconds=2".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::operator(&self.dir.join(id), &kubeconfig, &refs)
            .await
            .unwrap()
    }

    async fn policy(&self, restart: bool) {
        create(&self.client, None, json!({"apiVersion": "verifyfull.dev/v1alpha1", "kind": "PostgresTLSPolicy",
            "metadata": {"name": "corp"},
            "spec": {"caSource": {"secret": {"namespace": "verifyfull", "name": "corp-ca"}},
                     "namespaceSelector": {"matchLabels": {"db-tls": "on"}}, "rotation": {"restart": restart}}})).await;
    }

    fn writes(&self, kind: &str) -> u64 {
        self.standin
            .server
            .counters
            .writes_of(OPERATOR)
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    fn all_writes(&self) -> u64 {
        self.standin
            .server
            .counters
            .writes_of(OPERATOR)
            .iter()
            .filter(|(k, _)| !k.starts_with("leases"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Waits until the operator has written `n` Deployments; returns the time taken.
    async fn until_written(&self, n: u64, start: Instant, within: Duration) -> Duration {
        while self.writes("deployments") < n {
            assert!(
                start.elapsed() < within,
                "{} of {n} written after {within:?}",
                self.writes("deployments")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }
}

fn rss_mib(pid_of: &Process) -> f64 {
    let Some(pid) = pid_of.pid() else { return 0.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    println!(
        "operator benchmark: stand-in with 1 ms per write, operator (release) as a process; both on this 2-vCPU VM\n"
    );
    println!("| measurement | result | target |");
    println!("|---|---|---|");
    let unlimited = [
        "--writes-per-second=0",
        "--max-concurrent-rollouts=0",
        "--concurrency=64",
    ];

    // Baseline: the same apply patches straight from a client.
    {
        let w = World::new(10_000, false, 2).await;
        let api: Api<DynamicObject> = Api::namespaced_with(
            w.client.clone(),
            "team",
            &ApiResource::erase::<Deployment>(&()),
        );
        let t = Instant::now();
        stream::iter(0..10_000usize).map(|i| {
            let api = api.clone();
            async move {
                let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("app-{i:05}"), "namespace": "team"},
                    "spec": {"template": {"spec": {"volumes": [{"name": "verifyfull-ca", "configMap": {"name": "verifyfull-ca-corp"}}],
                        "containers": [{"name": "app", "volumeMounts": [{"name": "verifyfull-ca", "mountPath": "/etc/verifyfull/ca", "readOnly": true}],
                                        "env": [{"name": "PGSSLROOTCERT", "value": "/etc/verifyfull/ca/ca.crt"}]}]}}}});
                api.patch(&format!("app-{i:05}"), &PatchParams::apply("baseline"), &Patch::Apply(&cfg)).await.map(|_| ())
            }
        }).buffer_unordered(CONCURRENCY).try_collect::<Vec<()>>().await.unwrap();
        println!(
            "| baseline: 10,000 SSA patches from a client, 32 in flight | {:.2} s | — |",
            t.elapsed().as_secs_f64()
        );
    }

    for n in [1_000usize, 10_000] {
        let w = World::new(n, false, 2).await;
        let op = w.operator("op", &unlimited).await;
        let t = Instant::now();
        w.policy(n == 10_000).await;
        let took = w.until_written(n as u64, t, Duration::from_secs(120)).await;
        let target = if n == 1_000 { "≤ 2 s" } else { "≤ 15 s" };
        println!(
            "| converge {n} Deployments, limit off | {:.2} s ({:.0} writes/s) | {target} |",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        if n < 10_000 {
            op.stop().await;
            continue;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "| operator peak RSS, {n} Deployments watched | {:.0} MiB | ≤ 150 MiB |",
            rss_mib(&op)
        );

        // Resync after convergence: a policy resync (every 2 s) and a restarted operator
        // that reconciles every workload from scratch.
        let before = w.all_writes();
        tokio::time::sleep(Duration::from_secs(5)).await;
        op.stop().await;
        let op = w.operator("op2", &unlimited).await;
        let start = Instant::now();
        loop {
            let converged = op
                .metric(
                    "verifyfull_operator_reconciles_total",
                    "result=\"converged\"",
                )
                .await;
            if converged >= n as f64 || start.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "| writes by policy resyncs and a full restart resync after convergence | {} (of {n} reconciled in {:.2} s) | 0 |",
            w.all_writes() - before,
            start.elapsed().as_secs_f64()
        );

        // New Deployment → patch, one at a time.
        let api: Api<Deployment> = Api::namespaced(w.client.clone(), "team");
        let mut watch = api
            .watch(&WatchParams::default().labels("bench=late"), "0")
            .await
            .unwrap()
            .boxed();
        let mut lat = Vec::new();
        for i in 0..200 {
            let mut d = deployment(100_000 + i, 2);
            d.metadata
                .labels
                .as_mut()
                .unwrap()
                .insert("bench".into(), "late".into());
            let t = Instant::now();
            api.create(&PostParams::default(), &d).await.unwrap();
            loop {
                match watch.try_next().await.unwrap() {
                    Some(WatchEvent::Modified(d))
                        if d.metadata
                            .annotations
                            .as_ref()
                            .is_some_and(|a| a.contains_key("verifyfull.dev/injected")) =>
                    {
                        break;
                    }
                    _ => {}
                }
            }
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "| new Deployment → its patch (200, one at a time) | p50 {:.1} ms, p99 {:.1} ms | — |",
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3
        );

        // CA rotation with restart: every workload re-patched with the new hash.
        let base = w.writes("deployments");
        let total = (n + 200) as u64;
        let next = Ca::new("bench CA 2").unwrap();
        let t = Instant::now();
        let secrets: Api<Secret> = Api::namespaced(w.client.clone(), "verifyfull");
        secrets
            .patch(
                "corp-ca",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"ca.crt": base64(next.pem())}})),
            )
            .await
            .unwrap();
        let took = w
            .until_written(base + total, t, Duration::from_secs(120))
            .await;
        println!(
            "| CA rotation reaching all {total} (copy updated, every template re-stamped) | {:.2} s | — |",
            took.as_secs_f64()
        );
        println!(
            "| operator peak RSS after all of it | {:.0} MiB | ≤ 150 MiB |",
            rss_mib(&op)
        );
        op.stop().await;
    }

    // The default limits hold: 600 Deployments (replicas 0, the stand-in's controllers on
    // so that rollouts complete), first with the rollout cap off (the token bucket alone),
    // then with every default.
    for (label, args) in [
        (
            "50/s, burst 100; rollout cap off",
            &["--max-concurrent-rollouts=0"][..],
        ),
        ("all defaults: 50/s, burst 100, 10 rollouts", &[][..]),
    ] {
        let n = 600u64;
        let w = World::new(n as usize, true, 0).await;
        let op = w.operator("op", args).await;
        let t = Instant::now();
        w.policy(false).await;
        let first = w.until_written(100, t, Duration::from_secs(120)).await;
        let took = w.until_written(n, t, Duration::from_secs(120)).await;
        let rate = (n - 100) as f64 / (took - first).as_secs_f64().max(0.001);
        println!(
            "| {n} Deployments at {label} | {:.1} s; {:.1} writes/s after the burst | ≤ 50/s |",
            took.as_secs_f64(),
            rate
        );
        op.stop().await;
    }
    println!(
        "\nFor reference: controller-runtime's default client limit (20 QPS) needs ≈ 500 s for 10,000 writes."
    );
}
