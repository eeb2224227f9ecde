//! Where scenarios run: the stand-in with the real `verifyfull-webhook` process, or — only
//! when `VERIFYFULL_E2E_KUBECONFIG` names one — a real cluster with the chart installed.

use crate::harness::{Kubectl, WebhookProcess, ca_bundle};
use crate::pki::{Ca, Pair};
use crate::standin::api::User;
use crate::standin::{ControllerIdentity, Options, StandIn, client_from};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// verifyfull's namespace and webhook Service, as the chart names them.
pub const NAMESPACE: &str = "verifyfull";
pub const SERVICE: &str = "verifyfull-webhook";
pub const CONFIGURATION: &str = "verifyfull";

/// The only variable that points scenarios at a real cluster.
pub const KUBECONFIG_VAR: &str = "VERIFYFULL_E2E_KUBECONFIG";
pub const IMAGE_VAR: &str = "VERIFYFULL_E2E_IMAGE";

/// Workload kinds verifyfull judges, by API group.
const RULES: &[(&str, &[&str])] = &[
    (
        "",
        &["pods", "pods/ephemeralcontainers", "replicationcontrollers"],
    ),
    (
        "apps",
        &["deployments", "statefulsets", "daemonsets", "replicasets"],
    ),
    ("batch", &["jobs", "cronjobs"]),
];

/// UPDATEs that change neither the spec nor the annotations need no review.
const SKIP_UNCHANGED: &str = "request.operation != 'UPDATE' || object.spec != oldObject.spec || (has(object.metadata.annotations) ? object.metadata.annotations : {}) != (has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {})";

/// Requests in which a built-in controller makes an object from its owner's template are
/// never denied, so the API server need not call the webhook for them (and an outage of
/// verifyfull cannot block a rollout, a scheduled run or a scale-up). Built from the same
/// table the decision uses.
pub fn skip_controller_made() -> String {
    let quoted = |items: Vec<String>| {
        items
            .iter()
            .map(|i| format!("'{i}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let clauses: Vec<String> = policy::admission::CONTROLLER_MADE
        .iter()
        .map(|m| {
            format!(
                "(request.resource.group == '{}' && request.resource.resource == '{}' && request.operation in [{}] && request.userInfo.username in [{}])",
                m.group,
                m.resource,
                quoted(m.operations.iter().map(|o| o.as_str().to_string()).collect()),
                quoted(m.usernames().collect()),
            )
        })
        .collect();
    format!("!({})", clauses.join(" || "))
}

/// The ValidatingWebhookConfiguration: one entry per mode, routed by the namespace label
/// (docs/admission.md), plus one for changes of that label.
pub fn webhook_configuration(ca_pem: &str) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|(g, r)| json!({"operations": ["CREATE", "UPDATE"], "apiGroups": [g], "apiVersions": ["*"], "resources": r, "scope": "Namespaced"}))
        .collect();
    let not_ours = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]});
    let entry = |mode: &str, selector: Value, failure: &str| {
        json!({
            "name": format!("{mode}.verifyfull.dev"),
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "timeoutSeconds": 5,
            "failurePolicy": failure, "matchPolicy": "Equivalent",
            "clientConfig": {"service": {"namespace": NAMESPACE, "name": SERVICE, "port": 443,
                                         "path": format!("/validate/{mode}")},
                             "caBundle": ca_bundle(ca_pem)},
            "rules": rules,
            "namespaceSelector": {"matchExpressions": [selector, not_ours.clone()]},
            "matchConditions": [
                {"name": "skip-unchanged-updates", "expression": SKIP_UNCHANGED},
                {"name": "skip-controller-made", "expression": skip_controller_made()},
            ],
        })
    };
    let mode_key = "verifyfull.dev/mode";
    let label = |o: &str| {
        format!(
            "(has({o}.metadata.labels) && '{mode_key}' in {o}.metadata.labels ? {o}.metadata.labels['{mode_key}'] : '')"
        )
    };
    let mut label_entry = entry(
        "mode-label",
        json!({"key": "kubernetes.io/metadata.name", "operator": "Exists"}),
        "Fail",
    );
    label_entry["clientConfig"]["service"]["path"] = json!("/validate/enforce");
    label_entry["namespaceSelector"] = json!({"matchExpressions": [not_ours]});
    label_entry["rules"] = json!([{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["namespaces"], "scope": "Cluster"}]);
    label_entry["matchConditions"] = json!([{"name": "mode-label-changes", "expression": format!("{} != {}", label("object"), label("oldObject"))}]);
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [
            entry("enforce", json!({"key": mode_key, "operator": "NotIn", "values": ["warn", "audit", "off"]}), "Fail"),
            entry("warn", json!({"key": mode_key, "operator": "In", "values": ["warn"]}), "Ignore"),
            entry("audit", json!({"key": mode_key, "operator": "In", "values": ["audit"]}), "Ignore"),
            label_entry,
        ],
    })
}

/// The PostgresTLSPolicy CRD, as `crds/` holds it.
pub fn crd() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/postgrestlspolicies.verifyfull.dev.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The MutatingWebhookConfiguration that injects the CA into Pods at admission (docs/operator.md):
/// Pods only, `failurePolicy: Fail`, re-invoked when later webhooks add containers.
pub fn mutating_configuration(ca_pem: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [{
            "name": "inject.verifyfull.dev",
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "timeoutSeconds": 5,
            "failurePolicy": "Fail", "reinvocationPolicy": "IfNeeded", "matchPolicy": "Equivalent",
            "clientConfig": {"service": {"namespace": NAMESPACE, "name": SERVICE, "port": 443, "path": "/mutate"},
                             "caBundle": ca_bundle(ca_pem)},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]},
                {"key": "verifyfull.dev/mode", "operator": "NotIn", "values": ["off"]}]},
        }],
    })
}

/// How a scenario's stand-in is set up (a real cluster is what it is).
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    /// Whose credentials the built-in controllers write with.
    pub controller_identity: ControllerIdentity,
    /// Register the validating configuration as it was before it skipped controller-made
    /// objects, so that only the webhook's own relief admits them.
    pub without_controller_skip: bool,
}

/// A scenario's environment.
pub struct Env {
    /// An admin client.
    pub client: kube::Client,
    pub kubectl: Kubectl,
    pub standin: Option<StandIn>,
    pub webhook: Option<WebhookProcess>,
    pub ca: Option<Ca>,
    kubeconfig: PathBuf,
    dir: PathBuf,
    namespaces: Vec<String>,
    /// The validating configuration registered on the stand-in.
    configuration: Value,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("standin", &self.standin.as_ref().map(|s| s.addr))
            .field("webhook", &self.webhook)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

static N: AtomicU64 = AtomicU64::new(0);

fn vwc_api(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
        ),
        "validatingwebhookconfigurations",
    );
    Api::all_with(client.clone(), &ar)
}

impl Env {
    /// The stand-in with the webhook running, or the real cluster named by
    /// `VERIFYFULL_E2E_KUBECONFIG` with the chart installed.
    pub async fn start(name: &str) -> Result<Env, String> {
        Env::start_with(name, Setup::default()).await
    }

    /// [`Env::start`] with a stand-in set up as `setup` says.
    pub async fn start_with(name: &str, setup: Setup) -> Result<Env, String> {
        let dir = std::env::temp_dir().join(format!(
            "verifyfull-e2e-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        match std::env::var_os(KUBECONFIG_VAR) {
            Some(k) => Env::real(PathBuf::from(k), dir).await,
            None => Env::on_standin(dir, setup).await,
        }
    }

    async fn on_standin(dir: PathBuf, setup: Setup) -> Result<Env, String> {
        let standin = StandIn::start(Options {
            controller_identity: setup.controller_identity,
            ..Options::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        let admin = standin
            .kubeconfig(&User::admin())
            .map_err(|e| e.to_string())?;
        let client = client_from(&admin).await.map_err(|e| e.to_string())?;
        let ca = Ca::new("verifyfull e2e webhook CA").map_err(|e| e.to_string())?;
        let mut env = Env {
            client,
            kubectl: Kubectl::new(&admin),
            standin: Some(standin),
            webhook: None,
            ca: Some(ca),
            kubeconfig: admin,
            dir,
            namespaces: Vec::new(),
            configuration: Value::Null,
        };
        env.create_namespace(NAMESPACE, json!({})).await?;
        env.start_webhook().await?;
        let ca_pem = env
            .ca
            .as_ref()
            .map(|c| c.pem().to_string())
            .unwrap_or_default();
        env.configuration = webhook_configuration(&ca_pem);
        if setup.without_controller_skip {
            for w in env.configuration["webhooks"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if let Some(conditions) = w["matchConditions"].as_array_mut() {
                    conditions.retain(|c| c["name"] != "skip-controller-made");
                }
            }
        }
        env.register().await?;
        Ok(env)
    }

    async fn register(&self) -> Result<(), String> {
        let vwc: DynamicObject =
            serde_json::from_value(self.configuration.clone()).map_err(|e| e.to_string())?;
        vwc_api(&self.client)
            .create(&PostParams::default(), &vwc)
            .await
            .map_err(|e| format!("registering the webhook: {e}"))?;
        Ok(())
    }

    /// Takes verifyfull out of `ns`'s admission, as if it were not installed yet: the
    /// stand-in's configuration is removed; on a real cluster the namespace is labelled
    /// `off`. [`Env::resume`] puts it back.
    pub async fn suspend(&self, ns: &str) -> Result<(), String> {
        match self.standin {
            Some(_) => vwc_api(&self.client)
                .delete(CONFIGURATION, &Default::default())
                .await
                .map(drop)
                .map_err(|e| format!("removing the webhook: {e}")),
            None => self.label_mode(ns, json!("off")).await,
        }
    }

    /// Registers verifyfull again after [`Env::suspend`].
    pub async fn resume(&self, ns: &str) -> Result<(), String> {
        match self.standin {
            Some(_) => self.register().await,
            None => self.label_mode(ns, Value::Null).await,
        }
    }

    async fn label_mode(&self, ns: &str, mode: Value) -> Result<(), String> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let patch = json!({"metadata": {"labels": {"verifyfull.dev/mode": mode}}});
        api.patch(ns, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(drop)
            .map_err(|e| format!("labelling {ns}: {e}"))
    }

    async fn real(kubeconfig: PathBuf, dir: PathBuf) -> Result<Env, String> {
        let client = client_from(&kubeconfig).await.map_err(|e| e.to_string())?;
        let env = Env {
            client,
            kubectl: Kubectl::new(&kubeconfig),
            standin: None,
            webhook: None,
            ca: None,
            kubeconfig,
            dir,
            namespaces: Vec::new(),
            configuration: Value::Null,
        };
        env.install_chart().await?;
        Ok(env)
    }

    /// `helm upgrade --install` of `charts/verifyfull` with `VERIFYFULL_E2E_IMAGE`.
    async fn install_chart(&self) -> Result<(), String> {
        let image = std::env::var(IMAGE_VAR)
            .map_err(|_| format!("{IMAGE_VAR} must name the image to install"))?;
        let (repo, tag) = image.rsplit_once(':').unwrap_or((&image, "latest"));
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/verifyfull");
        if !chart.exists() {
            return Err(format!("{} does not exist yet", chart.display()));
        }
        let out =
            tokio::process::Command::new(std::env::var("HELM").unwrap_or_else(|_| "helm".into()))
                .arg("upgrade")
                .arg("--install")
                .arg("verifyfull")
                .arg(&chart)
                .args([
                    "--namespace",
                    NAMESPACE,
                    "--create-namespace",
                    "--wait",
                    "--timeout",
                    "5m",
                ])
                .arg("--set")
                .arg(format!("image.repository={repo},image.tag={tag}"))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .env_remove("KUBECONFIG")
                .output()
                .await
                .map_err(|e| format!("helm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "helm install failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    pub fn is_standin(&self) -> bool {
        self.standin.is_some()
    }

    /// Serving certificate for the webhook Service's name.
    pub fn serving_pair(&self, ca: &Ca) -> Result<Pair, String> {
        ca.issue(&[&format!("{SERVICE}.{NAMESPACE}.svc")])
            .map_err(|e| e.to_string())
    }

    /// Starts (or restarts) the webhook process and routes the Service to it.
    pub async fn start_webhook(&mut self) -> Result<(), String> {
        let p = self.replica("webhook", &[]).await?;
        if let Some(standin) = &self.standin {
            standin.route_service(NAMESPACE, SERVICE, 443, p.addr);
        }
        self.webhook = Some(p);
        Ok(())
    }

    /// Starts one more webhook replica named `name` (its own directory), with `extra`
    /// arguments; routing the Service to it is the caller's.
    pub async fn replica(&self, name: &str, extra: &[&str]) -> Result<WebhookProcess, String> {
        let (Some(standin), Some(ca)) = (&self.standin, &self.ca) else {
            return Err("only on the stand-in".into());
        };
        let sa = User::new(
            &format!("system:serviceaccount:{NAMESPACE}:{SERVICE}"),
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:verifyfull",
            ],
        );
        // Scenarios are about admission; the chart tests prove the webhook's RBAC.
        standin.grant_cluster_admin(&sa);
        let kubeconfig = standin.kubeconfig(&sa).map_err(|e| e.to_string())?;
        let pair = self.serving_pair(ca)?;
        let own =
            format!("--own-service-accounts=system:serviceaccount:{NAMESPACE}:verifyfull-operator");
        let mut args = vec![own.as_str()];
        args.extend_from_slice(extra);
        WebhookProcess::start(&self.dir.join(name), Some(&kubeconfig), &pair, &args).await
    }

    pub async fn stop_webhook(&mut self) {
        if let Some(p) = self.webhook.take() {
            p.stop().await;
        }
    }

    /// Replaces the `caBundle` of every entry.
    pub async fn set_ca_bundle(&self, pem: &str) -> Result<(), String> {
        let api = vwc_api(&self.client);
        let cur = api.get(CONFIGURATION).await.map_err(|e| e.to_string())?;
        let mut webhooks = cur.data["webhooks"].clone();
        for w in webhooks.as_array_mut().into_iter().flatten() {
            w["clientConfig"]["caBundle"] = json!(ca_bundle(pem));
        }
        api.patch(
            CONFIGURATION,
            &PatchParams::default(),
            &Patch::Merge(json!({"webhooks": webhooks})),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn create_namespace(&mut self, name: &str, labels: Value) -> Result<(), String> {
        let api: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
        );
        let ns: DynamicObject =
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}}))
            .map_err(|e| e.to_string())?;
        api.create(&PostParams::default(), &ns)
            .await
            .map_err(|e| format!("namespace {name}: {e}"))?;
        self.namespaces.push(name.to_string());
        Ok(())
    }

    /// A fresh namespace for a scenario, in `mode` (`None`: unlabelled, so enforce).
    pub async fn namespace(&mut self, base: &str, mode: Option<&str>) -> Result<String, String> {
        let name = format!(
            "e2e-{base}-{}-{}",
            std::process::id() % 10_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let labels = match mode {
            Some(m) => json!({"verifyfull.dev/mode": m}),
            None => json!({}),
        };
        self.create_namespace(&name, labels).await?;
        Ok(name)
    }

    /// A client acting as `user` (a kubeconfig of its own on the stand-in; impersonation
    /// on a real cluster).
    pub async fn client_as(&self, user: &User) -> Result<kube::Client, String> {
        match &self.standin {
            Some(s) => {
                // A test cluster's developers hold some role; here, all of them.
                s.grant_cluster_admin(user);
                s.client(user).await.map_err(|e| e.to_string())
            }
            None => {
                let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)
                    .map_err(|e| e.to_string())?;
                let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| e.to_string())?;
                config.auth_info.impersonate = Some(user.name.clone());
                config.auth_info.impersonate_groups = Some(user.groups.clone());
                kube::Client::try_from(config).map_err(|e| e.to_string())
            }
        }
    }

    /// Removes what the scenario created (namespaces on a real cluster; the stand-in
    /// simply goes away).
    pub async fn finish(mut self) {
        self.stop_webhook().await;
        if !self.is_standin() {
            for ns in &self.namespaces {
                let _ = self
                    .kubectl
                    .run(&["delete", "namespace", ns, "--wait=false"], None)
                    .await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
