//! The Helm chart: `helm lint` and `helm template` with Helm 4 and Helm 3 for every
//! certificate mode and mode setting; the rendered objects parse into `k8s-openapi` types
//! and keep the restricted Pod Security profile; the schema refuses bad values; the
//! rendered CRD and webhook configuration are the ones the code and scenarios use; and
//! the rendered chart, applied to the stand-in the way `helm install` does, runs.
#![allow(clippy::unwrap_used)] // test helpers too: a panic is the failure report

use e2e::harness::{self, Kubectl, Process, free_port};
use e2e::standin::api::User;
use e2e::standin::{Options, StandIn, rbac};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "chart/schemas.rs"]
mod schemas;

/// The Kubernetes releases the rendered objects are checked against.
const KUBERNETES: &[&str] = &["1.33", "1.37"];

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
    let mut args = Vec::new();
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    render_args(version, &args)
}

/// [`render`] with a values file holding `values`.
fn render_values(version: u8, values: &Value) -> Vec<Value> {
    let file = std::env::temp_dir().join(format!(
        "verifyfull-values-{}-{version}.json",
        std::process::id()
    ));
    std::fs::write(&file, values.to_string()).unwrap();
    let docs = render_args(version, &["-f", &file.display().to_string()]);
    std::fs::remove_file(file).unwrap();
    docs
}

fn render_args(version: u8, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "verifyfull",
        &chart_path(),
        "--namespace",
        "verifyfull",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = run_helm(version, &args);
    assert!(ok, "helm {version} template {extra:?}: {err}");
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
        "monitoring.dashboard.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "reports.api=auto",
        "reports.readSecrets=true",
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
        "Certificate" | "Issuer" | "ServiceMonitor" | "PrometheusRule" => {}
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

/// Every value set's objects, and the configurations the operator will apply from its
/// ConfigMap, pass the API's own schemas strictly (an unknown or misspelled field fails);
/// the custom resources, which have no schema there, are named.
#[test]
fn rendered_objects_pass_the_strict_schemas_of_1_33_and_1_37() {
    for sets in CASES {
        let mut docs = render(4, sets);
        if !sets.contains(&"operator.enabled=false") {
            docs.push(data_json(&docs, "validating.json"));
            docs.push(data_json(&docs, "mutating.json"));
        }
        let skipped = schemas::validate_strict(&format!("{sets:?}"), &docs, KUBERNETES)
            .unwrap_or_else(|e| panic!("{e}"));
        for s in &skipped {
            assert!(
                [
                    "PostgresTLSPolicy/",
                    "Certificate/",
                    "Issuer/",
                    "ServiceMonitor/",
                    "PrometheusRule/"
                ]
                .iter()
                .any(|k| s.starts_with(k)),
                "{sets:?}: not validated: {s}"
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
/// bring). The stand-in authorizes with RBAC: the components run as the chart's
/// ServiceAccounts, bound by the chart's own roles.
struct Installed {
    standin: StandIn,
    kubectl: Kubectl,
    install: Vec<Value>,
    hooks: Vec<Value>,
    dir: PathBuf,
    /// Set over the rendered environment of both binaries (what a mount would provide).
    env: Vec<(String, String)>,
}

/// A ServiceAccount of the release, as the API server authenticates its token.
fn service_account(name: &str) -> User {
    User::new(
        &format!("system:serviceaccount:verifyfull:{name}"),
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:verifyfull",
        ],
    )
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
            let out = create(&kubectl, &o).await;
            assert!(out.ok, "{}", out.stderr);
        }
        apply_all(&kubectl, &install).await;
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
            env: Vec::new(),
        }
    }

    /// The rendered environment of `container`, with [`Installed::env`] over it.
    fn env_of(&self, container_name: &str, pod: &str) -> Vec<(String, String)> {
        let mut env = env_of(&container(&self.install, container_name), pod);
        env.extend(self.env.iter().cloned());
        env
    }

    /// The operator, as its ServiceAccount, with the environment its rendered Deployment
    /// gives it.
    async fn operator(&self) -> Process {
        let p = self.launch_operator();
        p.wait_ready(Duration::from_secs(30)).await.unwrap();
        p
    }

    /// [`Installed::operator`], not waited for.
    fn launch_operator(&self) -> Process {
        let kc = self
            .standin
            .kubeconfig(&service_account("verifyfull-operator"))
            .unwrap();
        let env = self.env_of("verifyfull-operator", "verifyfull-operator-0");
        let dir = self.dir.join("operator");
        std::fs::create_dir_all(&dir).unwrap();
        Process::launch(
            "verifyfull-operator",
            &dir,
            Some(&kc),
            ([127, 0, 0, 1], 0).into(),
            &[],
            &env,
        )
        .unwrap()
    }

    /// A webhook replica, as its ServiceAccount, serving the certificate the operator put
    /// in the serving Secret (what the kubelet would mount), routed as the Service; not
    /// waited for.
    async fn launch_webhook(&self, replica: &str) -> Process {
        use k8s_openapi::api::core::v1::Secret;
        let client = self.standin.client(&User::admin()).await.unwrap();
        let secrets: kube::Api<Secret> = kube::Api::namespaced(client, "verifyfull");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let data = loop {
            if let Some(d) = secrets
                .get_opt("verifyfull-webhook-tls")
                .await
                .unwrap()
                .and_then(|s| s.data)
            {
                break d;
            }
            assert!(tokio::time::Instant::now() < deadline, "no serving Secret");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let dir = self.dir.join(replica);
        std::fs::create_dir_all(&dir).unwrap();
        for k in ["tls.crt", "tls.key"] {
            std::fs::write(dir.join(k), &data[k].0).unwrap();
        }
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
        let kc = self
            .standin
            .kubeconfig(&service_account("verifyfull-webhook"))
            .unwrap();
        let env = self.env_of("verifyfull-webhook", replica);
        let args = vec![
            format!("--listen={addr}"),
            format!("--tls-cert-file={}", dir.join("tls.crt").display()),
            format!("--tls-key-file={}", dir.join("tls.key").display()),
        ];
        let p = Process::launch("verifyfull-webhook", &dir, Some(&kc), addr, &args, &env).unwrap();
        self.standin
            .route_service("verifyfull", "verifyfull-webhook", 443, addr);
        p
    }

    /// A webhook replica ([`Installed::launch_webhook`]), ready.
    async fn webhook(&self, replica: &str) -> Process {
        let p = self.launch_webhook(replica).await;
        p.wait_ready(Duration::from_secs(30)).await.unwrap();
        p
    }

    /// Replaces rule `index` of the chart's `kind` `name` with nothing, as if the chart
    /// had not rendered it.
    async fn remove_rule(&self, kind: &str, name: &str, index: usize) {
        let mut role = self
            .install
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap()
            .clone();
        role["rules"].as_array_mut().unwrap().remove(index);
        apply_all(&self.kubectl, [role]).await;
    }

    /// Waits for a webhook configuration the operator writes.
    async fn configuration(&self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .kubectl
                .run(&["get", kind, "verifyfull", "-o", "json"], None)
                .await
                .unwrap();
            if out.ok {
                return serde_json::from_str(&out.stdout).unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operator never created the {kind}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates `o` (in the namespace it names) as the admin; the output.
    async fn create(&self, o: &Value) -> harness::Out {
        create(&self.kubectl, o).await
    }
}

/// `kubectl label namespace <ns> <change>`, which must succeed.
async fn label(kubectl: &Kubectl, ns: &str, change: &str) {
    let out = kubectl
        .run(&["label", "namespace", ns, change], None)
        .await
        .unwrap();
    assert!(out.ok, "{}", out.stderr);
}

/// Whether the CA copy `name` is in `ns`.
async fn copied(kubectl: &Kubectl, ns: &str, name: &str) -> bool {
    get_json(kubectl, &["configmap", "-n", ns, name])
        .await
        .is_some()
}

/// One server-side apply of `objects`, as `helm install` sends them; must succeed.
async fn apply_all(kubectl: &Kubectl, objects: impl serde::Serialize) {
    on_list(
        kubectl,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        objects,
    )
    .await;
}

/// `kubectl ARGS` with `objects` as one List on stdin; must succeed.
async fn on_list(kubectl: &Kubectl, args: &[&str], objects: impl serde::Serialize) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let out = kubectl.run(args, Some(&list.to_string())).await.unwrap();
    assert!(out.ok, "{}", out.stderr);
}

/// `kubectl create` of `o`, in the namespace it names.
async fn create(kubectl: &Kubectl, o: &Value) -> harness::Out {
    kubectl
        .run(
            &["create", "--validate=false", "-f", "-"],
            Some(&o.to_string()),
        )
        .await
        .unwrap()
}

/// Polls `check` until it holds; fails naming `what` after 30 s.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    harness::eventually(what, Duration::from_secs(30), check).await
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

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A Pod template whose client asks for verify-full and needs the policy's CA to pass.
fn client_template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "app", "image": "x",
        "env": [{"name": "PGHOST", "value": "db.example.net"}, {"name": "PGSSLMODE", "value": "verify-full"}]}]}})
}

fn workload(kind: &str, name: &str, ns: &str) -> Value {
    let template = client_template(name);
    let selector = json!({"matchLabels": {"app": name}});
    let (api, spec) = match kind {
        "Deployment" | "DaemonSet" => (
            "apps/v1",
            json!({"selector": selector, "template": template}),
        ),
        "StatefulSet" => (
            "apps/v1",
            json!({"selector": selector, "serviceName": name, "template": template}),
        ),
        "CronJob" => (
            "batch/v1",
            json!({"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
                "metadata": template["metadata"], "spec": {"restartPolicy": "OnFailure",
                "containers": template["spec"]["containers"]}}}}}),
        ),
        "Pod" => ("v1", template["spec"].clone()),
        _ => unreachable!("{kind}"),
    };
    let mut o = json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec});
    if kind == "Pod" {
        o["metadata"]["labels"] = json!({"app": name});
    }
    o
}

/// The Pod template of any workload kind (a Pod's own spec for a Pod).
fn template_spec(o: &Value) -> &Value {
    match o["kind"].as_str() {
        Some("Pod") => &o["spec"],
        Some("CronJob") => &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &o["spec"]["template"]["spec"],
    }
}

/// Whether a template has the CA volume and its client (the first container) the variable.
fn injected(o: &Value) -> bool {
    let spec = template_spec(o);
    let volume = spec["volumes"]
        .as_array()
        .is_some_and(|v| v.iter().any(|v| v["name"] == "verifyfull-ca"));
    volume
        && spec["containers"][0]["env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["name"] == "PGSSLROOTCERT"))
}

async fn get_json(kubectl: &Kubectl, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = kubectl.run(&a, None).await.unwrap();
    out.ok.then(|| serde_json::from_str(&out.stdout).unwrap())
}

/// Which CA source the lifecycle's default policy reads.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    ConfigMap,
    Secret,
}

/// One whole life of a release on the stand-in, every component as the chart's
/// ServiceAccounts: install, the configurations, a denial, the default policy's CA copied
/// and injected into every workload kind, a namespace and its Pod created together, a CA
/// rotation, a namespace that stops matching, uninstall through the pre-delete hook. Returns
/// the chart's documents and the rules that allowed the requests.
async fn lifecycle(sets: &[&str], source: Source) -> (Vec<Value>, Vec<rbac::Grant>) {
    let kind = match source {
        Source::ConfigMap => "configMap",
        Source::Secret => "secret",
    };
    let mut all: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    all.extend([
        format!("defaultPolicy.spec.caSource.{kind}.namespace=verifyfull"),
        format!("defaultPolicy.spec.caSource.{kind}.name=corp-ca"),
        "defaultPolicy.spec.namespaceSelector.matchLabels.db-tls=on".into(),
    ]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let docs = render(4, &refs);
    let reports = sets.iter().any(|s| s.starts_with("reports.api="));
    let installed = Installed::new(docs.clone(), |_| {
        // The report API the operator writes, served before it starts.
        (reports.then(report_crd)).into_iter().collect()
    })
    .await;
    let (s, kubectl) = (&installed.standin, &installed.kubectl);
    assert!(
        get_json(kubectl, &["validatingwebhookconfiguration", "verifyfull"])
            .await
            .is_none(),
        "no webhook configuration before its caBundle"
    );
    let op = installed.operator().await;
    let wh = installed.webhook("verifyfull-webhook-0").await;
    let vwc = installed
        .configuration("validatingwebhookconfiguration")
        .await;
    assert!(vwc["webhooks"].as_array().unwrap().iter().all(|w| {
        w["clientConfig"]["caBundle"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
    }));
    // One mutating entry: the default policy's, reaching only the namespaces it selects.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mwc = loop {
        let m = installed
            .configuration("mutatingwebhookconfiguration")
            .await;
        if m["webhooks"].as_array().is_some_and(|w| w.len() == 1) {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // What the operator applied passes the API's schemas too.
    schemas::validate_strict("operator-applied", &[vwc.clone(), mwc.clone()], KUBERNETES)
        .unwrap_or_else(|e| panic!("{e}"));
    let entry = &mwc["webhooks"][0];
    assert_eq!(entry["name"], "default.inject.verifyfull.dev");
    assert_eq!(entry["failurePolicy"], "Fail");
    assert_eq!(
        entry["namespaceSelector"]["matchLabels"],
        json!({"db-tls": "on"})
    );
    assert_eq!(entry["matchConditions"][0]["name"], "missing-ca");

    // A violating Deployment is denied (no policy selects its namespace yet).
    assert!(installed.create(&namespace("team", json!({}))).await.ok);
    let bad = workload("Deployment", "api", "team");
    let denied = installed.create(&bad).await;
    assert!(
        denied
            .stderr
            .contains("admission webhook \"enforce.verifyfull.dev\" denied the request"),
        "{}",
        denied.stderr
    );
    // The default policy's CA appears; the namespace is labelled; the Deployment passes
    // (judged as it will run) and every workload kind is injected by the operator.
    let ca = e2e::pki::Ca::new("corp").unwrap();
    let source_object = |pem: &str| match source {
        Source::ConfigMap => json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "corp-ca", "namespace": "verifyfull"}, "data": {"ca.crt": pem}}),
        Source::Secret => json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "corp-ca", "namespace": "verifyfull"},
            "data": {"ca.crt": harness::ca_bundle(pem)}}),
    };
    assert!(installed.create(&source_object(ca.pem())).await.ok);
    label(kubectl, "team", "db-tls=on").await;
    eventually("the CA copy in team", || async {
        copied(kubectl, "team", "verifyfull-ca-default").await
    })
    .await;
    eventually(
        "the Deployment admitted once the policy selects team",
        || async { installed.create(&bad).await.ok },
    )
    .await;
    for (kind, name) in [
        ("StatefulSet", "db-client"),
        ("DaemonSet", "agent"),
        ("CronJob", "report"),
    ] {
        let out = installed.create(&workload(kind, name, "team")).await;
        assert!(out.ok, "{kind}: {}", out.stderr);
    }
    for (kind, name) in [
        ("deployment", "api"),
        ("statefulset", "db-client"),
        ("daemonset", "agent"),
        ("cronjob", "report"),
    ] {
        eventually(&format!("{kind} {name} injected"), || async {
            get_json(kubectl, &[kind, "-n", "team", name])
                .await
                .is_some_and(|o| injected(&o))
        })
        .await;
    }
    // A namespace and a Pod created together: the Pod gets the CA at admission.
    let together = [
        namespace("fresh", json!({"db-tls": "on"})),
        workload("Pod", "job-runner", "fresh"),
    ];
    on_list(
        kubectl,
        &["create", "--validate=false", "-f", "-"],
        together,
    )
    .await;
    let pod = get_json(kubectl, &["pod", "-n", "fresh", "job-runner"])
        .await
        .unwrap();
    assert!(injected(&pod), "{pod}");
    // Reviews answered and a policy's status written: every series the dashboard and the
    // alerts read exists now.
    assert_monitoring_reads_exported_metrics(&[&op, &wh]).await;
    // The CA rotates at its source: the copies follow.
    let next = e2e::pki::Ca::new("corp, next").unwrap();
    let replaced = kubectl
        .run(
            &["replace", "--validate=false", "-f", "-"],
            Some(&source_object(next.pem()).to_string()),
        )
        .await
        .unwrap();
    assert!(replaced.ok, "{}", replaced.stderr);
    for ns in ["team", "fresh"] {
        eventually(&format!("the rotated CA in {ns}"), || async {
            get_json(kubectl, &["configmap", "-n", ns, "verifyfull-ca-default"])
                .await
                .is_some_and(|c| c["data"]["ca.crt"] == next.pem())
        })
        .await;
    }
    // A namespace that stops matching loses its copy and its injections.
    label(kubectl, "team", "db-tls-").await;
    eventually("team's copy removed", || async {
        !copied(kubectl, "team", "verifyfull-ca-default").await
    })
    .await;
    eventually("team's workloads no longer injected", || async {
        get_json(kubectl, &["statefulset", "-n", "team", "db-client"])
            .await
            .is_some_and(|o| !injected(&o))
    })
    .await;

    // Selected again: injected again (the operator's Event repeats, as a series).
    label(kubectl, "team", "db-tls=on").await;
    eventually("team's workloads injected again", || async {
        get_json(kubectl, &["statefulset", "-n", "team", "db-client"])
            .await
            .is_some_and(|o| injected(&o))
    })
    .await;
    // A second policy comes and goes: its mutating entry and its copy with it.
    assert!(
        installed
            .create(&namespace("side", json!({"extra": "on"})))
            .await
            .ok
    );
    let mut extra_spec = json!({"namespaceSelector": {"matchLabels": {"extra": "on"}}});
    extra_spec["caSource"][kind] = json!({"namespace": "verifyfull", "name": "corp-ca"});
    let extra = json!({"apiVersion": "verifyfull.dev/v1alpha1", "kind": "PostgresTLSPolicy",
        "metadata": {"name": "extra"}, "spec": extra_spec});
    assert!(installed.create(&extra).await.ok);
    let entries = || async {
        let m = get_json(kubectl, &["mutatingwebhookconfiguration", "verifyfull"])
            .await
            .unwrap();
        m["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    eventually("the second policy's entry", || async {
        entries().await
            == [
                "default.inject.verifyfull.dev",
                "extra.inject.verifyfull.dev",
            ]
    })
    .await;
    eventually("the second policy's copy", || async {
        copied(kubectl, "side", "verifyfull-ca-extra").await
    })
    .await;
    let out = kubectl
        .run(&["delete", "pgtls", "extra", "--timeout=30s"], None)
        .await
        .unwrap();
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    eventually("the second policy's entry gone", || async {
        entries().await == ["default.inject.verifyfull.dev"]
    })
    .await;
    assert!(!copied(kubectl, "side", "verifyfull-ca-extra").await);
    if reports {
        // A report for the team's workloads, written and rewritten as the operator injects
        // them; the namespace turns off and its report goes.
        let report = || {
            get_json(
                kubectl,
                &["reports.openreports.io", "-n", "team", "verifyfull"],
            )
        };
        eventually("the team's report", || async { report().await.is_some() }).await;
        label(kubectl, "team", "verifyfull.dev/mode=off").await;
        eventually("the team's report deleted", || async {
            report().await.is_none()
        })
        .await;
    }
    // The leader renews its lease every third of its 15 s: however fast this machine runs
    // the rest, the lifecycle lasts until that rule is used.
    eventually("the lease renewed", || async {
        get_json(
            kubectl,
            &["lease", "-n", "verifyfull", "verifyfull-operator"],
        )
        .await
        .is_some_and(|l| l["spec"]["renewTime"] != l["spec"]["acquireTime"])
    })
    .await;

    uninstall(&installed, op).await;
    let grants = s.server.grants().into_iter().collect();
    (docs, grants)
}

/// `helm uninstall`: the pre-delete hook's objects, its command as its ServiceAccount,
/// then every object but what `helm.sh/resource-policy: keep` keeps.
async fn uninstall(installed: &Installed, op: Process) {
    let (s, kubectl, install, hooks) = (
        &installed.standin,
        &installed.kubectl,
        &installed.install,
        &installed.hooks,
    );
    let (jobs, objects): (Vec<&Value>, Vec<&Value>) =
        hooks.iter().partition(|d| d["kind"] == "Job");
    apply_all(kubectl, objects).await;
    let hook = jobs[0];
    let pod = &hook["spec"]["template"]["spec"];
    let cmd: Vec<String> = serde_json::from_value(pod["containers"][0]["command"].clone()).unwrap();
    assert_eq!(cmd[0], "/verifyfull-operator");
    let sa = pod["serviceAccountName"].as_str().unwrap();
    let kc = s.kubeconfig(&service_account(sa)).unwrap();
    let hook_run =
        tokio::process::Command::new(e2e::harness::binary("verifyfull-operator").unwrap())
            .args(&cmd[1..])
            .env_remove("KUBECONFIG")
            .env("KUBECONFIG", &kc)
            .kill_on_drop(true)
            .output();
    let hook_run = tokio::spawn(hook_run);
    // The hook scales the operator to zero; the kubelet would stop its Pod: so do we.
    eventually("the hook scaled the operator down", || async {
        get_json(
            kubectl,
            &["deployment", "-n", "verifyfull", "verifyfull-operator"],
        )
        .await
        .is_some_and(|d| d["spec"]["replicas"] == 0)
    })
    .await;
    op.stop().await;
    let hook_run = hook_run.await.unwrap().unwrap();
    assert!(
        hook_run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&hook_run.stdout),
        String::from_utf8_lossy(&hook_run.stderr)
    );
    let removed: Vec<&Value> = install
        .iter()
        .filter(|d| d["metadata"]["annotations"]["helm.sh/resource-policy"] != "keep")
        .collect();
    on_list(
        kubectl,
        &["delete", "--wait=false", "--ignore-not-found", "-f", "-"],
        removed,
    )
    .await;
    for kind in [
        "validatingwebhookconfiguration",
        "mutatingwebhookconfiguration",
    ] {
        assert!(get_json(kubectl, &[kind, "verifyfull"]).await.is_none());
    }
    // The policy stayed, without the operator's finalizer: deleting it now is not stuck.
    let out = kubectl
        .run(&["delete", "pgtls", "default", "--timeout=10s"], None)
        .await
        .unwrap();
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    // Nothing blocks the cluster now.
    let after = installed
        .create(&workload("Deployment", "after", "team"))
        .await;
    assert!(after.ok, "{}", after.stderr);
}

/// Every (role, rule, verb, resource) the chart renders, as `Role ns/name #i verb group/resource`.
fn rendered_rules(docs: &[Value]) -> Vec<(String, rbac::Grant)> {
    let mut out = Vec::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        let kind = d["kind"].as_str().unwrap();
        let ns = if kind == "Role" {
            d["metadata"]["namespace"].as_str().unwrap_or("verifyfull")
        } else {
            ""
        };
        let name = d["metadata"]["name"].as_str().unwrap();
        for (i, rule) in d["rules"].as_array().unwrap().iter().enumerate() {
            let list = |f: &str| -> Vec<String> {
                rule[f]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            for verb in list("verbs") {
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        let g = rbac::Grant {
                            user: String::new(),
                            role_kind: kind.into(),
                            role_namespace: ns.into(),
                            role: name.into(),
                            rule: i,
                            verb: verb.clone(),
                            group: group.clone(),
                            resource,
                            namespace: String::new(),
                            name: String::new(),
                        };
                        out.push((
                            format!("{kind} {ns}/{name} rule {i}: {verb} {group}/{}", g.resource),
                            g,
                        ));
                    }
                }
            }
        }
    }
    out
}

fn same_rule(a: &rbac::Grant, b: &rbac::Grant) -> bool {
    (
        &a.role_kind,
        &a.role_namespace,
        &a.role,
        a.rule,
        &a.verb,
        &a.group,
        &a.resource,
    ) == (
        &b.role_kind,
        &b.role_namespace,
        &b.role,
        b.rule,
        &b.verb,
        &b.group,
        &b.resource,
    )
}

/// Least privilege, both ways: every rendered (rule, verb, resource) allowed some request
/// of the lifecycle; and without each rule, a request it allowed is refused — replayed
/// through the same authorizer over the chart's RBAC with that one rule taken out.
fn assert_least_privilege(label: &str, docs: &[Value], grants: &[rbac::Grant]) {
    let rules = rendered_rules(docs);
    let unused: Vec<&String> = rules
        .iter()
        .filter(|(_, r)| !grants.iter().any(|g| same_rule(g, r)))
        .map(|(d, _)| d)
        .collect();
    assert!(
        unused.is_empty(),
        "{label}: rules the chart renders that no request used:\n  {}",
        unused
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let rbac_docs: Vec<&Value> = docs
        .iter()
        .filter(|d| d["apiVersion"] == "rbac.authorization.k8s.io/v1")
        .collect();
    let mut needless = Vec::new();
    for role in rbac_docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        for i in 0..role["rules"].as_array().unwrap().len() {
            let state = rbac::state_with(rbac_docs.iter().map(|d| {
                let mut d = (*d).clone();
                if d == **role {
                    d["rules"].as_array_mut().unwrap().remove(i);
                }
                d
            }));
            let kind = role["kind"].as_str().unwrap();
            let name = role["metadata"]["name"].as_str().unwrap();
            let used: Vec<&rbac::Grant> = grants
                .iter()
                .filter(|g| g.role_kind == kind && g.role == name && g.rule == i)
                .collect();
            let refused = used.iter().any(|g| {
                let user = service_account(g.user.rsplit(':').next().unwrap());
                rbac::authorize(&state, &user, &g.attributes()).is_err()
            });
            if !refused {
                needless.push(format!("{kind} {name} rule {i}"));
            }
        }
    }
    assert!(
        needless.is_empty(),
        "{label}: rules whose requests other rules allow as well:\n  {}",
        needless.join("\n  ")
    );
}

/// Pods of `app` in `ns`, by name, with whether each has the CA.
async fn pods(kubectl: &Kubectl, ns: &str, app: &str) -> Vec<(String, bool)> {
    let list = get_json(kubectl, &["pods", "-n", ns, "-l", &format!("app={app}")])
        .await
        .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                injected(p),
            )
        })
        .collect()
}

/// Deletes the first Pod of `app` in `ns` (as a node drain would); its name.
async fn delete_pod(kubectl: &Kubectl, ns: &str, app: &str) -> String {
    let (name, _) = pods(kubectl, ns, app).await.remove(0);
    let out = kubectl
        .run(&["delete", "pod", "-n", ns, &name, "--wait=false"], None)
        .await
        .unwrap();
    assert!(out.ok, "{}", out.stderr);
    name
}

/// Every webhook replica down: only Pods a policy selects wait (and start by themselves
/// once a replica is back); rollouts and CronJob runs elsewhere go on; a user's change is
/// refused in an `enforce` namespace and admitted in a `warn` one.
#[tokio::test]
async fn an_outage_holds_back_only_what_a_policy_selects() {
    let docs = render(
        4,
        &[
            "defaultPolicy.spec.caSource.configMap.namespace=verifyfull",
            "defaultPolicy.spec.caSource.configMap.name=corp-ca",
            "defaultPolicy.spec.namespaceSelector.matchLabels.db-tls=on",
        ],
    );
    let ca = e2e::pki::Ca::new("corp").unwrap();
    let source = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "corp-ca", "namespace": "verifyfull"}, "data": {"ca.crt": ca.pem()}});
    let installed = Installed::new(docs, |_| vec![source.clone()]).await;
    let kubectl = &installed.kubectl;
    let _op = installed.operator().await;
    let wh = installed.webhook("verifyfull-webhook-0").await;
    eventually("the policy's mutating entry", || async {
        get_json(kubectl, &["mutatingwebhookconfiguration", "verifyfull"])
            .await
            .is_some_and(|m| m["webhooks"].as_array().is_some_and(|w| w.len() == 1))
    })
    .await;
    for (name, labels) in [
        ("free", json!({})),
        ("warned", json!({"verifyfull.dev/mode": "warn"})),
        ("selected", json!({"db-tls": "on"})),
    ] {
        assert!(installed.create(&namespace(name, labels)).await.ok);
    }
    // Before the outage: a web server and a nightly CronJob where no policy reaches; a
    // database client with a sidecar where one does (the sidecar is no client: the
    // operator leaves it, so its Pods still go through the mutating entry).
    let plain = json!([{"name": "web", "image": "x"}]);
    let mut web = workload("Deployment", "web", "free");
    web["spec"]["template"]["spec"]["containers"] = plain.clone();
    let mut nightly = workload("CronJob", "nightly", "free");
    nightly["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"] = plain.clone();
    let mut api = workload("Deployment", "api", "selected");
    api["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "proxy", "image": "envoy"}));
    // A client alone: the operator injects its only container, so its Pods skip the entry.
    let worker = workload("Deployment", "worker", "selected");
    for o in [&web, &nightly, &api, &worker] {
        let out = installed.create(o).await;
        assert!(out.ok, "{}", out.stderr);
    }
    eventually("web's Pod", || async {
        pods(kubectl, "free", "web").await.len() == 1
    })
    .await;
    for app in ["api", "worker"] {
        eventually(&format!("{app}'s Pod, with the CA"), || async {
            pods(kubectl, "selected", app)
                .await
                .iter()
                .any(|(_, ca)| *ca)
        })
        .await;
    }

    wh.stop().await;
    // Where no policy reaches, a replaced Pod and a scheduled run go on.
    let old_web = delete_pod(kubectl, "free", "web").await;
    eventually("web's replacement Pod during the outage", || async {
        pods(kubectl, "free", "web")
            .await
            .iter()
            .any(|(n, _)| *n != old_web)
    })
    .await;
    installed
        .standin
        .trigger_cronjob("free", "nightly")
        .await
        .unwrap();
    eventually("nightly's Job Pod during the outage", || async {
        !pods(kubectl, "free", "nightly").await.is_empty()
    })
    .await;
    // A user's new Deployment: the API server's webhook error where enforce fails closed,
    // admitted where warn is ignored.
    let refused = kubectl
        .apply("free", &workload("Deployment", "new", "free"))
        .await
        .unwrap();
    assert!(
        !refused.ok
            && refused
                .stderr
                .contains("failed calling webhook \"enforce.verifyfull.dev\""),
        "{}",
        refused.stderr
    );
    let warned = kubectl
        .apply("warned", &workload("Deployment", "new", "warned"))
        .await
        .unwrap();
    assert!(warned.ok, "{}", warned.stderr);
    // Where the policy reaches, a Pod whose every container has the CA already (from its
    // injected template) is not even sent to the webhook: it starts.
    let old_worker = delete_pod(kubectl, "selected", "worker").await;
    eventually("worker's replacement Pod during the outage", || async {
        pods(kubectl, "selected", "worker")
            .await
            .iter()
            .any(|(n, ca)| *n != old_worker && *ca)
    })
    .await;
    // A Pod with a container that lacks it waits for the webhook: no Pod a policy selects
    // starts without its CA.
    delete_pod(kubectl, "selected", "api").await;
    eventually("the ReplicaSet's FailedCreate for api", || async {
        get_json(kubectl, &["events", "-n", "selected"])
            .await
            .is_some_and(|l| {
                l["items"].as_array().unwrap().iter().any(|e| {
                    e["reason"] == "FailedCreate"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("default.inject.verifyfull.dev"))
                })
            })
    })
    .await;
    assert!(pods(kubectl, "selected", "api").await.is_empty());
    // A replica is back: the Pod starts by itself, with the CA.
    let _back = installed.webhook("verifyfull-webhook-1").await;
    eventually("api's Pod once the webhook is back", || async {
        pods(kubectl, "selected", "api")
            .await
            .iter()
            .any(|(_, ca)| *ca)
    })
    .await;
}

/// What a missing rule does, end to end: without list/watch of ConfigMaps the webhook never
/// becomes ready (and says why); without `create` on its configurations the operator never
/// registers the webhook (and says why). The least-privilege test shows the same for every
/// rule by replaying the requests it allowed.
#[tokio::test]
async fn without_its_rules_a_component_fails_and_says_so() {
    let installed = Installed::new(render(4, &[]), |_| Vec::new()).await;
    let operator_rules = installed
        .install
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "verifyfull-operator")
        .unwrap()["rules"]
        .clone();
    let create = operator_rules
        .as_array()
        .unwrap()
        .iter()
        .position(|r| {
            r["resources"][0] == "validatingwebhookconfigurations"
                && r["verbs"] == json!(["create"])
        })
        .unwrap();
    installed
        .remove_rule("ClusterRole", "verifyfull-operator", create)
        .await;
    installed
        .remove_rule("ClusterRole", "verifyfull-webhook", 0)
        .await;
    let op = installed.operator().await;
    let wh = installed.launch_webhook("verifyfull-webhook-0").await;
    eventually("the webhook says it may not list ConfigMaps", || async {
        let log = wh.log();
        log.contains("is forbidden")
            && log.contains("cannot list resource")
            && log.contains("configmaps")
    })
    .await;
    assert!(wh.wait_ready(Duration::from_secs(2)).await.is_err());
    eventually(
        "the operator says it may not create its configurations",
        || async {
            let log = op.log();
            log.contains("cannot create resource")
                && log.contains("validatingwebhookconfigurations")
        },
    )
    .await;
    assert!(
        get_json(
            &installed.kubectl,
            &["validatingwebhookconfiguration", "verifyfull"]
        )
        .await
        .is_none()
    );
}

#[tokio::test]
async fn the_chart_runs_its_whole_life_with_its_own_rbac_and_no_more() {
    let (docs, grants) = lifecycle(&[], Source::ConfigMap).await;
    assert_least_privilege("default values", &docs, &grants);
}

/// The `openreports.io` Report CRD, reduced to what the stand-in needs.
fn report_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "reports.openreports.io"},
        "spec": {"group": "openreports.io", "scope": "Namespaced",
            "names": {"kind": "Report", "plural": "reports", "singular": "report", "listKind": "ReportList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

#[tokio::test]
async fn the_report_values_add_only_rules_their_lifecycle_uses() {
    let (docs, grants) = lifecycle(&["reports.api=openreports"], Source::ConfigMap).await;
    assert_least_privilege("reports", &docs, &grants);
}

#[tokio::test]
async fn the_secret_values_add_only_rules_their_lifecycle_uses() {
    let (docs, grants) = lifecycle(
        &["webhook.readSecrets=true", "operator.secretSources=true"],
        Source::Secret,
    )
    .await;
    assert_least_privilege("readSecrets + secretSources", &docs, &grants);
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
    // No policy, no mutating entry: nothing is held back by an outage.
    assert!(mwc.webhooks.unwrap_or_default().is_empty());
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

/// [`runtime::profiles::mount_config_map`] with a rendered ConfigMap's `data`.
fn mount_config_map(dir: &Path, v: &str, data: &serde_json::Map<String, Value>) {
    let files: Vec<(&str, &str)> = data
        .iter()
        .map(|(k, text)| (k.as_str(), text.as_str().unwrap()))
        .collect();
    runtime::profiles::mount_config_map(dir, v, &files).unwrap();
}

#[tokio::test]
async fn profiles_from_the_values_are_mounted_checked_and_reloaded() {
    let example = std::fs::read_to_string(root().join("docs/profile-example.yaml")).unwrap();
    let profile: Value = serde_saphyr::from_str(&example).unwrap();
    let docs = render_values(4, &json!({"profiles": {"billing.yaml": profile}}));
    let data = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "verifyfull-profiles")
        .and_then(|d| d["data"].as_object())
        .expect("the profiles ConfigMap")
        .clone();
    for name in ["verifyfull-webhook", "verifyfull-operator"] {
        let d = docs
            .iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
            .unwrap();
        let spec = &d["spec"]["template"]["spec"];
        assert!(
            spec["volumes"].as_array().unwrap().contains(
                &json!({"name": "profiles", "configMap": {"name": "verifyfull-profiles"}})
            ),
            "{name}"
        );
        let c = container(&docs, name);
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "profiles"
                    && m.mount_path == "/etc/verifyfull/profiles"
                    && m.read_only == Some(true))
        );
        assert!(env_of(&c, "p").contains(&(
            "VERIFYFULL_PROFILES_DIR".into(),
            "/etc/verifyfull/profiles".into()
        )));
    }

    // What the kubelet would mount, starting with a profile that lacks its driver.
    let mut installed = Installed::new(docs, |_| Vec::new()).await;
    let mount = installed.dir.join("profiles");
    std::fs::create_dir_all(&mount).unwrap();
    let mut broken = data.clone();
    broken["billing.yaml"] = json!(example.replace("driver: \"lib/pq (Go)\"\n", ""));
    mount_config_map(&mount, "1", &broken);
    installed.env = vec![
        (
            "VERIFYFULL_PROFILES_DIR".into(),
            mount.display().to_string(),
        ),
        ("VERIFYFULL_PROFILES_RELOAD_SECONDS".into(), "1".into()),
    ];
    // A replica without a valid set is not ready and says why (file and field); the
    // operator does not lead, so no serving certificate is made yet.
    let not_ready = |p: &Process| {
        let log = p.log();
        assert!(
            log.contains("application profiles cannot be loaded; not ready")
                && log.contains("billing.yaml")
                && log.contains("driver"),
            "{log}"
        );
    };
    let op = installed.launch_operator();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(harness::http_get(op.admin, "/readyz").await.unwrap().0, 503);
    not_ready(&op);
    assert!(!op.log().contains("leading"));

    // Mended: the operator leads and issues the certificate. Broken again before the
    // webhook starts: the operator keeps its set, the webhook has none and is not ready.
    mount_config_map(&mount, "2", &data);
    op.wait_ready(Duration::from_secs(30)).await.unwrap();
    mount_config_map(&mount, "3", &broken);
    let wh = installed.launch_webhook("verifyfull-webhook-0").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(harness::http_get(wh.admin, "/readyz").await.unwrap().0, 503);
    not_ready(&wh);
    assert_eq!(harness::http_get(op.admin, "/readyz").await.unwrap().0, 200);

    // Mended again: the webhook judges the in-house application.
    mount_config_map(&mount, "4", &data);
    wh.wait_ready(Duration::from_secs(30)).await.unwrap();
    assert!(installed.create(&namespace("team", json!({}))).await.ok);
    let mut billing = workload("Deployment", "billing", "team");
    billing["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
        {"name": "BILLING_DB_HOST", "value": "db.example.net"},
        {"name": "BILLING_DB_SSLMODE", "value": "require"}]);
    let denied = installed.create(&billing).await;
    assert!(
        !denied.ok
            && denied
                .stderr
                .contains("Billing: BILLING_DB_SSLMODE=require"),
        "{}",
        denied.stderr
    );
    assert_eq!(wh.metric("verifyfull_webhook_profiles_user", "").await, 1.0);
    assert_eq!(
        op.metric("verifyfull_operator_profiles_user", "").await,
        1.0
    );

    // A bad change: the set in use stays, the log and the metrics say so.
    let mut bad = data.clone();
    bad["billing.yaml"] = json!("id: [");
    mount_config_map(&mount, "5", &bad);
    for (p, prefix) in [(&wh, "verifyfull_webhook"), (&op, "verifyfull_operator")] {
        harness::eventually(
            "the bad change noticed",
            Duration::from_secs(30),
            || async {
                p.metric(&format!("{prefix}_profiles_reload_failing"), "")
                    .await
                    == 1.0
            },
        )
        .await;
        assert_eq!(harness::http_get(p.admin, "/readyz").await.unwrap().0, 200);
        assert!(
            p.log()
                .contains("application profiles not reloaded; keeping the set in use")
        );
    }
    // Read again and again, the refusal stands, counted once.
    let replicas = [(&wh, "verifyfull_webhook"), (&op, "verifyfull_operator")];
    let mut counted = Vec::new();
    for (p, prefix) in replicas {
        counted.push(
            p.metric(&format!("{prefix}_profiles_reload_failures_total"), "")
                .await,
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for ((p, prefix), before) in replicas.into_iter().zip(counted) {
        let failing = format!("{prefix}_profiles_reload_failing");
        assert_eq!(p.metric(&failing, "").await, 1.0, "{failing}");
        let total = format!("{prefix}_profiles_reload_failures_total");
        assert_eq!(p.metric(&total, "").await, before, "{total}");
    }
    let still = installed.create(&billing).await;
    assert!(
        still.stderr.contains("Billing: BILLING_DB_SSLMODE=require"),
        "{}",
        still.stderr
    );

    // A valid change is used without a restart.
    let mut renamed = data.clone();
    renamed["billing.yaml"] = json!(example.replace("application: Billing", "application: Ledger"));
    mount_config_map(&mount, "6", &renamed);
    harness::eventually("the new set in use", Duration::from_secs(30), || async {
        installed
            .create(&billing)
            .await
            .stderr
            .contains("Ledger: BILLING_DB_SSLMODE=require")
    })
    .await;
    assert_eq!(
        wh.metric("verifyfull_webhook_profiles_reload_failing", "")
            .await,
        0.0
    );
}

/// The chart's dashboard and alerts, rendered.
fn monitoring(sets: &[&str]) -> (Value, Value) {
    let mut all = vec![
        "monitoring.dashboard.enabled=true",
        "monitoring.prometheusRule.enabled=true",
    ];
    all.extend(sets);
    let docs = render(4, &all);
    let find = |what: &str, f: &dyn Fn(&Value) -> bool| {
        (docs.iter().find(|d| f(d)))
            .unwrap_or_else(|| panic!("no {what}"))
            .clone()
    };
    let dashboard = find("dashboard", &|d| {
        d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"].is_string()
    });
    (
        dashboard,
        find("PrometheusRule", &|d| d["kind"] == "PrometheusRule"),
    )
}

/// Every PromQL expression of the dashboard's panels and of the alerts.
fn expressions(dashboard: &Value, rule: &Value) -> Vec<String> {
    let board: Value =
        serde_json::from_str(dashboard["data"]["verifyfull.json"].as_str().unwrap()).unwrap();
    let panels = board["panels"].as_array().unwrap();
    let from_panels = (panels.iter())
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap().to_string());
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let from_rules = rules
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string());
    from_panels.chain(from_rules).collect()
}

/// The metric names a PromQL expression reads; it must parse.
fn metric_names(expr: &str) -> Vec<String> {
    use promql_parser::parser::Expr;
    struct Names(Vec<String>);
    impl promql_parser::util::ExprVisitor for Names {
        type Error = ();
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
            let selector = match e {
                Expr::VectorSelector(v) => Some(v),
                Expr::MatrixSelector(m) => Some(&m.vs),
                _ => None,
            };
            self.0.extend(selector.and_then(|v| v.name.clone()));
            Ok(true)
        }
    }
    let parsed =
        promql_parser::parser::parse(expr).unwrap_or_else(|e| panic!("not PromQL: {expr}: {e}"));
    let mut names = Names(Vec::new());
    promql_parser::util::walk_expr(&mut names, &parsed).unwrap();
    names.0
}

/// The sample names a `/metrics` text exports (counters as `_total`, histograms as
/// `_bucket`, `_sum` and `_count`).
fn exported(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let Some((name, kind)) = rest.split_once(' ') else {
            continue;
        };
        match kind {
            "counter" => names.insert(format!("{name}_total")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
                true
            }
            _ => names.insert(name.to_string()),
        };
    }
    names
}

/// Every metric the dashboard and the alerts read is one the running binaries export.
async fn assert_monitoring_reads_exported_metrics(processes: &[&Process]) {
    let mut names = std::collections::BTreeSet::new();
    for p in processes {
        let (status, text) = harness::http_get(p.admin, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        names.extend(exported(&text));
    }
    let (dashboard, rule) = monitoring(&[]);
    for expr in expressions(&dashboard, &rule) {
        for name in metric_names(&expr) {
            assert!(
                names.contains(&name),
                "{expr} reads {name}, which no binary exports: {names:?}"
            );
        }
    }
}

#[test]
fn dashboard_and_alerts_are_opt_in_labelled_and_parse() {
    let off = render(4, &[]);
    assert!(
        !(off.iter()).any(|d| d["kind"] == "PrometheusRule"
            || d["metadata"]["labels"]["grafana_dashboard"].is_string()),
        "off by default"
    );
    let (dashboard, rule) = monitoring(&["monitoring.prometheusRule.certificateExpiryDays=7"]);
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let alerts: Vec<&str> = (rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter())
    .map(|r| r["alert"].as_str().unwrap())
    .collect();
    assert_eq!(
        alerts,
        [
            "VerifyfullWebhookUnavailable",
            "VerifyfullWebhookErrors",
            "VerifyfullCertificateExpiring",
            "VerifyfullOperatorNoLeader",
            "VerifyfullOperatorNotReady",
            "VerifyfullViolationsRising",
        ]
    );
    let certificate = &rule["spec"]["groups"][0]["rules"][2]["expr"];
    assert!(
        certificate.as_str().unwrap().ends_with("< 604800"),
        "{certificate}"
    );
    let exprs = expressions(&dashboard, &rule);
    assert!(exprs.len() >= 20, "{exprs:?}");
    for expr in &exprs {
        assert!(!metric_names(expr).is_empty(), "{expr} reads no metric");
    }
}
