//! The Helm chart: `helm lint` and `helm template` with Helm 4 and Helm 3 for every
//! certificate mode and mode setting; the rendered objects parse into `k8s-openapi` types
//! and keep the restricted Pod Security profile; the schema refuses bad values; the
//! rendered CRD and webhook configuration are the ones the code and scenarios use; and
//! the rendered chart, applied to the stand-in the way `helm install` does, runs.
#![allow(clippy::unwrap_used)] // test helpers too: a panic is the failure report

use e2e::harness::{Kubectl, Process, free_port};
use e2e::standin::api::User;
use e2e::standin::{Options, StandIn};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `HELM4`/`HELM3`, else `.ci/bin/helm4`/`helm3` (what `.ci/tools` installs).
fn helm(version: u8) -> PathBuf {
    let var = format!("HELM{version}");
    std::env::var_os(&var)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let p = root().join(format!(".ci/bin/helm{version}"));
            assert!(
                p.exists(),
                "{} is missing: run .ci/tools (or set {var})",
                p.display()
            );
            p
        })
}

fn run_helm(version: u8, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(helm(version))
        .args(args)
        .env_remove("KUBECONFIG")
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("verifyfull-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("verifyfull-helm-config"),
        )
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chart() -> String {
    root().join("charts/verifyfull").display().to_string()
}

/// `helm template verifyfull -n verifyfull` with `--set` values: the documents.
fn render(version: u8, sets: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "verifyfull",
        &chart_path(),
        "--namespace",
        "verifyfull",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let (ok, out, err) = run_helm(version, &args);
    assert!(ok, "helm {version} template {sets:?}: {err}");
    serde_saphyr::from_multiple::<Value>(&out)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn chart_path() -> &'static str {
    Box::leak(chart().into_boxed_str())
}

/// The value sets every test runs: the default, each certificate mode, each mode.
const CASES: &[&[&str]] = &[
    &[],
    &["certificates.mode=cert-manager"],
    &[
        "certificates.mode=cert-manager",
        "certificates.certManager.issuerRef.name=corp",
        "certificates.certManager.issuerRef.kind=ClusterIssuer",
    ],
    &[
        "certificates.mode=secret",
        "certificates.secret.name=my-tls",
    ],
    &[
        "operator.enabled=false",
        "certificates.mode=secret",
        "certificates.secret.name=my-tls",
        "certificates.secret.caBundle=-----BEGIN CERTIFICATE-----",
    ],
    &["mode=warn"],
    &["mode=audit", "excludedNamespaces={legacy}"],
    &[
        "webhook.readSecrets=true",
        "operator.secretSources=true",
        "networkPolicy.enabled=true",
        "serviceMonitor.enabled=true",
        "crds.enabled=false",
    ],
];

fn typed<T: serde::de::DeserializeOwned>(d: &Value) -> T {
    serde_json::from_value(d.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", d["kind"], d["metadata"]["name"]))
}

/// Each rendered object read as its `k8s-openapi` type; custom kinds stay JSON.
fn check_types(d: &Value) {
    use k8s_openapi::api::{
        admissionregistration::v1 as adm, batch::v1 as batch, core::v1 as core,
        networking::v1 as net, policy::v1 as pol, rbac::v1 as rbac,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    match d["kind"].as_str().unwrap() {
        "Deployment" => drop(typed::<Deployment>(d)),
        "Service" => drop(typed::<core::Service>(d)),
        "ServiceAccount" => drop(typed::<core::ServiceAccount>(d)),
        "ConfigMap" => drop(typed::<core::ConfigMap>(d)),
        "ClusterRole" => drop(typed::<rbac::ClusterRole>(d)),
        "ClusterRoleBinding" => drop(typed::<rbac::ClusterRoleBinding>(d)),
        "Role" => drop(typed::<rbac::Role>(d)),
        "RoleBinding" => drop(typed::<rbac::RoleBinding>(d)),
        "PodDisruptionBudget" => drop(typed::<pol::PodDisruptionBudget>(d)),
        "Job" => drop(typed::<batch::Job>(d)),
        "NetworkPolicy" => drop(typed::<net::NetworkPolicy>(d)),
        "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(d)),
        "ValidatingWebhookConfiguration" => drop(typed::<adm::ValidatingWebhookConfiguration>(d)),
        "Certificate" | "Issuer" | "ServiceMonitor" => {}
        other => panic!("unexpected kind {other}"),
    }
}

fn pod_spec(d: &Value) -> Option<PodSpec> {
    match d["kind"].as_str()? {
        "Deployment" | "Job" => Some(typed(&d["spec"]["template"]["spec"])),
        _ => None,
    }
}

/// Restricted Pod Security, requests and limits: for every Pod the chart makes.
fn check_restricted(name: &str, spec: &PodSpec) {
    let pod = spec
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: no pod securityContext"));
    assert_eq!(pod.run_as_non_root, Some(true), "{name}");
    assert_eq!(
        pod.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{name}"
    );
    for c in &spec.containers {
        let c: &Container = c;
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{name}/{}",
            c.name
        );
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "{name}/{}",
            c.name
        );
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()]),
            "{name}/{}",
            c.name
        );
        let r = c.resources.as_ref().unwrap();
        assert!(
            r.requests.is_some() && r.limits.is_some(),
            "{name}/{}: requests and limits",
            c.name
        );
    }
}

#[test]
fn lint_and_template_with_helm_4_and_3_for_every_mode() {
    for version in [4u8, 3] {
        for sets in CASES {
            let mut args = vec!["lint", "--strict", chart_path()];
            for s in sets.iter() {
                args.push("--set");
                args.push(s);
            }
            let (ok, out, err) = run_helm(version, &args);
            assert!(ok, "helm {version} lint {sets:?}: {out}{err}");
            let docs = render(version, sets);
            for d in &docs {
                check_types(d);
                if let Some(spec) = pod_spec(d) {
                    check_restricted(d["metadata"]["name"].as_str().unwrap(), &spec);
                }
            }
            let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
            let webhook = docs
                .iter()
                .find(|d| {
                    d["kind"] == "Deployment" && d["metadata"]["name"] == "verifyfull-webhook"
                })
                .unwrap();
            assert!(webhook["spec"]["replicas"].as_i64().unwrap() >= 2);
            assert!(kinds.contains(&"PodDisruptionBudget"));
            let operator_on = !sets.contains(&"operator.enabled=false");
            assert_eq!(
                kinds.contains(&"ValidatingWebhookConfiguration"),
                !operator_on,
                "{sets:?}: rendered directly only without the operator"
            );
            let secrets_rule = docs
                .iter()
                .filter(|d| d["kind"] == "ClusterRole")
                .any(|r| r.to_string().contains("\"secrets\""));
            let wants_secrets = sets.iter().any(|s| {
                s.starts_with("webhook.readSecrets=true")
                    || s.starts_with("operator.secretSources=true")
            });
            assert_eq!(
                secrets_rule, wants_secrets,
                "{sets:?}: cluster-wide Secrets access only when a value asks for it"
            );
        }
    }
}

#[test]
fn bad_values_fail_with_a_message_naming_them() {
    for version in [4u8, 3] {
        for (set, names) in [
            ("mode=sometimes", "mode"),
            ("webhook.replicas=1", "replicas"),
            ("certificates.mode=vault", "mode"),
            ("operator.writesPerSecond=-1", "writesPerSecond"),
            ("typo=1", "typo"),
        ] {
            let (ok, _, err) = run_helm(version, &["template", "v", chart_path(), "--set", set]);
            assert!(!ok, "helm {version} accepted {set}");
            assert!(err.contains(names), "helm {version} {set}: {err}");
        }
    }
}

fn data_json(docs: &[Value], key: &str) -> Value {
    let cm = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap" && d["metadata"]["name"] == "verifyfull-webhook-configurations"
        })
        .unwrap();
    serde_json::from_str(cm["data"][key].as_str().unwrap()).unwrap()
}

#[test]
fn rendered_crd_and_configurations_are_the_ones_in_use() {
    let docs = render(4, &[]);
    let crd = docs
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .unwrap();
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let file: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("crds/postgrestlspolicies.verifyfull.dev.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(crd["spec"], file["spec"], "the chart's CRD is crds/'s");
    // The scenarios register exactly what the chart renders (the caBundle aside).
    let rendered = data_json(&docs, "validating.json");
    let ours = e2e::scenario::webhook_configuration("");
    let strip = |v: &Value| {
        let mut w = v["webhooks"].clone();
        for e in w.as_array_mut().unwrap() {
            e["clientConfig"]
                .as_object_mut()
                .unwrap()
                .remove("caBundle");
        }
        w
    };
    assert_eq!(strip(&rendered), strip(&ours));
    // Every mode's entry lets the API server skip what built-in controllers make from an
    // admitted template, with the decision's own list of controllers.
    for entry in rendered["webhooks"].as_array().unwrap().iter().take(3) {
        let skip = entry["matchConditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "skip-controller-made")
            .unwrap_or_else(|| panic!("{}: no skip-controller-made", entry["name"]));
        let expression = skip["expression"].as_str().unwrap();
        for m in policy::admission::CONTROLLER_MADE {
            for user in m.usernames() {
                assert!(expression.contains(&format!("'{user}'")), "{user}");
            }
        }
    }
    assert_eq!(
        strip(&data_json(&docs, "mutating.json")),
        strip(&e2e::scenario::mutating_configuration(""))
    );
    // Default mode warn: the warn entry takes unlabelled namespaces, enforce only labelled ones.
    let warn = data_json(&render(4, &["mode=warn"]), "validating.json");
    assert_eq!(
        warn["webhooks"][0]["namespaceSelector"]["matchExpressions"][0],
        json!({"key": "verifyfull.dev/mode", "operator": "In", "values": ["enforce"]})
    );
    assert_eq!(
        warn["webhooks"][1]["namespaceSelector"]["matchExpressions"][0],
        json!({"key": "verifyfull.dev/mode", "operator": "NotIn", "values": ["enforce", "audit", "off"]})
    );
}

/// A rendered chart applied to a fresh stand-in in one server-side apply, hooks kept
/// aside, as `helm install` does; `before` lists objects to create first (a Secret you
/// bring).
struct Installed {
    standin: StandIn,
    kubectl: Kubectl,
    install: Vec<Value>,
    hooks: Vec<Value>,
    dir: PathBuf,
}

impl Installed {
    async fn new(docs: Vec<Value>, before: impl Fn(&StandIn) -> Vec<Value>) -> Installed {
        let (hooks, install): (Vec<Value>, Vec<Value>) = docs
            .into_iter()
            .partition(|d| !d["metadata"]["annotations"]["helm.sh/hook"].is_null());
        let standin = StandIn::start(Options::default()).await.unwrap();
        let kubectl = Kubectl::new(&standin.kubeconfig(&User::admin()).unwrap());
        let ns =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "verifyfull"}});
        let mut first = vec![ns];
        first.extend(before(&standin));
        for o in first {
            let out = kubectl
                .run(
                    &["create", "--validate=false", "-f", "-"],
                    Some(&o.to_string()),
                )
                .await
                .unwrap();
            assert!(out.ok, "{}", out.stderr);
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": install});
        let out = kubectl
            .run(
                &["apply", "--server-side", "--validate=false", "-f", "-"],
                Some(&list.to_string()),
            )
            .await
            .unwrap();
        assert!(out.ok, "{}", out.stderr);
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "verifyfull-chart-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Installed {
            standin,
            kubectl,
            install,
            hooks,
            dir,
        }
    }

    /// The operator, with the environment its rendered Deployment gives it.
    async fn operator(&self) -> Process {
        let kc = self
            .standin
            .kubeconfig(&User::new(
                "system:serviceaccount:verifyfull:verifyfull-operator",
                &["system:serviceaccounts"],
            ))
            .unwrap();
        let env = env_of(
            &container(&self.install, "verifyfull-operator"),
            "verifyfull-operator-0",
        );
        Process::spawn(
            "verifyfull-operator",
            &self.dir,
            Some(&kc),
            ([127, 0, 0, 1], 0).into(),
            &[],
            &env,
        )
        .await
        .unwrap()
    }
}

/// The environment a rendered container gives its process (field references filled in).
fn env_of(c: &Container, pod: &str) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(_)) => pod.to_string(),
                _ => String::new(),
            };
            (e.name.clone(), v)
        })
        .collect()
}

fn container(docs: &[Value], name: &str) -> Container {
    let d = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
        .unwrap();
    typed::<PodSpec>(&d["spec"]["template"]["spec"]).containers[0].clone()
}

#[tokio::test]
async fn the_rendered_chart_installs_runs_and_uninstalls_cleanly_on_the_standin() {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    // The default policy comes from the values: a ConfigMap source in the release namespace.
    let docs = render(
        4,
        &[
            "defaultPolicy.spec.caSource.configMap.namespace=verifyfull",
            "defaultPolicy.spec.caSource.configMap.name=corp-ca",
            "defaultPolicy.spec.namespaceSelector.matchLabels.db-tls=on",
        ],
    );
    let installed = Installed::new(docs, |_| Vec::new()).await;
    let (s, kubectl, install, hooks) = (
        &installed.standin,
        &installed.kubectl,
        &installed.install,
        &installed.hooks,
    );
    let client = s.client(&User::admin()).await.unwrap();
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    assert!(
        vwcs.get_opt("verifyfull").await.unwrap().is_none(),
        "no webhook configuration before its caBundle"
    );
    let dir = installed.dir.clone();
    let op = installed.operator().await;
    // Self-managed certificates: the serving Secret, then the configurations with caBundle.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "verifyfull");
    let tls = loop {
        if let Some(sec) = secrets.get_opt("verifyfull-webhook-tls").await.unwrap() {
            break sec;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let data = tls.data.unwrap();
    // What the kubelet would mount: the Secret's files.
    let webhook_dir = dir.join("webhook");
    std::fs::create_dir_all(&webhook_dir).unwrap();
    for k in ["tls.crt", "tls.key"] {
        std::fs::write(webhook_dir.join(k), &data[k].0).unwrap();
    }
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let wh_kc = s
        .kubeconfig(&User::new(
            "system:serviceaccount:verifyfull:verifyfull-webhook",
            &["system:serviceaccounts"],
        ))
        .unwrap();
    let wh_env = env_of(
        &container(install, "verifyfull-webhook"),
        "verifyfull-webhook-0",
    );
    let args = vec![
        format!("--listen={addr}"),
        format!("--tls-cert-file={}", webhook_dir.join("tls.crt").display()),
        format!("--tls-key-file={}", webhook_dir.join("tls.key").display()),
    ];
    let _wh = Process::spawn(
        "verifyfull-webhook",
        &webhook_dir,
        Some(&wh_kc),
        addr,
        &args,
        &wh_env,
    )
    .await
    .unwrap();
    s.route_service("verifyfull", "verifyfull-webhook", 443, addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while vwcs.get_opt("verifyfull").await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator never created the configurations"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let vwc = vwcs.get("verifyfull").await.unwrap();
    assert!(vwc.webhooks.unwrap().iter().all(|w| {
        w.client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|b| !b.0.is_empty())
    }));

    // A violating Deployment is denied.
    // (Not yet selected by the default policy: no db-tls label.)
    let team = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    assert!(
        kubectl
            .run(
                &["create", "--validate=false", "-f", "-"],
                Some(&team.to_string())
            )
            .await
            .unwrap()
            .ok
    );
    let bad: Deployment = serde_json::from_value(json!({"metadata": {"name": "api"}, "spec": {"selector": {"matchLabels": {"app": "api"}},
        "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "app", "image": "x",
            "env": [{"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLMODE", "value": "verify-full"}]}]}}}})).unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "team");
    let e = deploys
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("admission webhook \"enforce.verifyfull.dev\" denied the request"),
        "{e}"
    );
    // The default policy (a ConfigMap source: Secret sources are off by default), kept by
    // the operator, makes it compliant once its CA is there.
    let ca = e2e::pki::Ca::new("corp").unwrap();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "corp-ca", "namespace": "verifyfull"}, "data": {"ca.crt": ca.pem()}});
    assert!(
        kubectl
            .run(
                &["create", "--validate=false", "-f", "-"],
                Some(&cm.to_string())
            )
            .await
            .unwrap()
            .ok
    );
    let labelled = kubectl
        .run(&["label", "namespace", "team", "db-tls=on"], None)
        .await
        .unwrap();
    assert!(labelled.ok, "{}", labelled.stderr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let copy = kubectl
            .run(
                &["get", "configmap", "-n", "team", "verifyfull-ca-default"],
                None,
            )
            .await
            .unwrap()
            .ok;
        if copy && deploys.create(&PostParams::default(), &bad).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the policy never made the Deployment admissible"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Uninstall as helm does: the pre-delete hook's command first, then every object.
    let hook = hooks.iter().find(|d| d["kind"] == "Job").unwrap();
    let cmd: Vec<String> = serde_json::from_value(
        hook["spec"]["template"]["spec"]["containers"][0]["command"].clone(),
    )
    .unwrap();
    assert_eq!(cmd[0], "/verifyfull-operator");
    let admin_kc = s.kubeconfig(&User::admin()).unwrap();
    let hook_run =
        tokio::process::Command::new(e2e::harness::binary("verifyfull-operator").unwrap())
            .args(&cmd[1..])
            .env_remove("KUBECONFIG")
            .env("KUBECONFIG", &admin_kc)
            .kill_on_drop(true)
            .output();
    let hook_run = tokio::spawn(hook_run);
    // The hook scales the operator to zero; the kubelet would stop its Pod: so do we.
    let operators: Api<Deployment> = Api::namespaced(client.clone(), "verifyfull");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while operators
        .get("verifyfull-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
        != Some(0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hook did not scale the operator down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    op.stop().await;
    let hook_run = hook_run.await.unwrap().unwrap();
    assert!(
        hook_run.status.success(),
        "{}",
        String::from_utf8_lossy(&hook_run.stdout)
    );
    // helm leaves what carries `helm.sh/resource-policy: keep` (the CRD, with the policies).
    let removed: Vec<&Value> = install
        .iter()
        .filter(|d| d["metadata"]["annotations"]["helm.sh/resource-policy"] != "keep")
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": removed});
    let out = kubectl
        .run(
            &["delete", "--wait=false", "--ignore-not-found", "-f", "-"],
            Some(&list.to_string()),
        )
        .await
        .unwrap();
    assert!(out.ok, "{}", out.stderr);
    assert!(vwcs.get_opt("verifyfull").await.unwrap().is_none());
    assert!(
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get_opt("verifyfull")
            .await
            .unwrap()
            .is_none()
    );
    // The policy stayed, without the operator's finalizer: deleting it now is not stuck.
    let out = kubectl
        .run(&["delete", "pgtls", "default", "--timeout=10s"], None)
        .await
        .unwrap();
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    // Nothing blocks the cluster now, and the CRD stayed.
    deploys.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "after"},
        "spec": {"selector": {"matchLabels": {"app": "after"}}, "template": {"metadata": {"labels": {"app": "after"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]}}}})).unwrap()).await.unwrap();
}

#[tokio::test]
async fn a_secret_you_bring_is_the_ca_bundle() {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    use kube::api::Api;
    let ca = e2e::pki::Ca::new("my own CA").unwrap();
    let pair = ca.issue(&["verifyfull-webhook.verifyfull.svc"]).unwrap();
    let b64 = |t: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(t)
    };
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "my-tls", "namespace": "verifyfull"},
        "data": {"tls.crt": b64(&pair.cert), "tls.key": b64(&pair.key), "ca.crt": b64(ca.pem())}});
    let docs = render(
        4,
        &[
            "certificates.mode=secret",
            "certificates.secret.name=my-tls",
        ],
    );
    let installed = Installed::new(docs, |_| vec![secret.clone()]).await;
    let _op = installed.operator().await;
    let client = installed.standin.client(&User::admin()).await.unwrap();
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let vwc = loop {
        if let Some(v) = vwcs.get_opt("verifyfull").await.unwrap() {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no configuration from the Secret's CA"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(vwc.webhooks.unwrap().iter().all(|w| {
        w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(ca.pem().as_bytes())
    }));
    // The operator writes the two configurations one after the other.
    let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let mwc = loop {
        if let Some(m) = mwcs.get_opt("verifyfull").await.unwrap() {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mutating configuration from the Secret's CA"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        mwc.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone()),
        Some(ca.pem().as_bytes().to_vec())
    );
    // The operator runs no CA of its own in this mode.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "verifyfull");
    assert!(
        secrets
            .get_opt("verifyfull-webhook-ca")
            .await
            .unwrap()
            .is_none()
    );
}
