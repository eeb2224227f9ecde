//! The webhook's certificates and configurations. The chart renders the
//! Validating/MutatingWebhookConfigurations into a ConfigMap; the operator creates them
//! only once their `caBundle` is known, so no `failurePolicy: Fail` entry ever exists
//! without a CA to verify the webhook (docs/admission.md). The CA comes from:
//! - `self-managed`: the operator's own CA (a Secret), which signs the serving certificate
//!   (renewed at two thirds of its life); the CA is rotated by publishing old and new in
//!   `caBundle` for an overlap before the serving certificate moves to the new one;
//! - `cert-manager` / `secret`: the `ca.crt` key of the serving Secret.
//!
//! The configurations are owned by the chart's ClusterRole, so that uninstalling the
//! release garbage-collects them even if the pre-delete hook did not run.
//!
//! The chart's mutating configuration holds one template entry; the operator writes one
//! entry per `PostgresTLSPolicy` from it, with that policy's namespaces, so that an outage
//! blocks only Pods some policy selects (docs/admission.md, "Reach").

use crate::reconcile::MANAGER;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::reflector;
use policy::crd::PostgresTLSPolicy;
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where the certificates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertMode {
    SelfManaged,
    CertManager,
    Secret,
}

/// What the operator needs to manage the webhook's certificates and configurations.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: CertMode,
    /// verifyfull's namespace: the Secrets and the ConfigMap live there.
    pub namespace: String,
    /// The ConfigMap holding `validating.json` and `mutating.json`.
    pub configurations: String,
    /// The serving Secret (`tls.crt`, `tls.key`, `ca.crt`) the webhook mounts.
    pub tls_secret: String,
    /// Self-managed: the CA Secret (`ca.crt`, `ca.key`, and `next.crt`/`next.key` during a
    /// rotation). Never mounted by the webhook.
    pub ca_secret: String,
    /// The webhook Service's DNS name, `<service>.<namespace>.svc`.
    pub service_host: String,
    /// The ClusterRole that owns the configurations.
    pub owner: String,
    pub server_validity: Duration,
    pub ca_validity: Duration,
    pub ca_overlap: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

const CA_NAME: &str = "verifyfull webhook CA";

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn time(secs: i64) -> Result<time::OffsetDateTime, Error> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| Error::Invalid(e.to_string()))
}

/// A CA: certificate and key, PEM, with its validity.
#[derive(Debug, Clone, PartialEq)]
pub struct Ca {
    pub cert: String,
    pub key: String,
    pub not_before: i64,
    pub not_after: i64,
}

fn ca_params(not_before: i64, not_after: i64) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.not_before = time(not_before)?;
    p.not_after = time(not_after)?;
    Ok(p)
}

impl Ca {
    pub fn generate(validity: Duration) -> Result<Ca, Error> {
        let key = KeyPair::generate()?;
        let (nb, na) = (now() - 300, now() + validity.as_secs() as i64);
        let cert = ca_params(nb, na)?.self_signed(&key)?;
        Ok(Ca {
            cert: cert.pem(),
            key: key.serialize_pem(),
            not_before: nb,
            not_after: na,
        })
    }

    /// Issues a serving certificate for `host`; returns (certificate, key, notBefore, notAfter).
    pub fn issue(&self, host: &str, validity: Duration) -> Result<Serving, Error> {
        let ca_key = KeyPair::from_pem(&self.key)?;
        let issuer = Issuer::new(ca_params(self.not_before, self.not_after)?, ca_key);
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![host.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, host);
        let (nb, na) = (
            now() - 300,
            (now() + validity.as_secs() as i64).min(self.not_after),
        );
        p.not_before = time(nb)?;
        p.not_after = time(na)?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok(Serving {
            cert: cert.pem(),
            key: key.serialize_pem(),
            not_before: nb,
            not_after: na,
        })
    }

    /// Time to start the next CA: two thirds of the way, or earlier if the overlap needs it.
    pub fn due(&self, overlap: Duration) -> bool {
        let life = self.not_after - self.not_before;
        let t = now();
        t >= self.not_before + life * 2 / 3 || t + overlap.as_secs() as i64 >= self.not_after
    }
}

/// A serving certificate and key, PEM.
#[derive(Debug, Clone, PartialEq)]
pub struct Serving {
    pub cert: String,
    pub key: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl Serving {
    /// Renewed at two thirds of its life.
    pub fn due(&self) -> bool {
        now() >= self.not_before + (self.not_after - self.not_before) * 2 / 3
    }
}

fn data(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

fn annotation(s: &Secret, key: &str) -> Option<i64> {
    s.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

const NOT_BEFORE: &str = "verifyfull.dev/not-before";
const NOT_AFTER: &str = "verifyfull.dev/not-after";
const NEXT_SINCE: &str = "verifyfull.dev/next-ca-since";
const NEXT_NOT_BEFORE: &str = "verifyfull.dev/next-not-before";
const NEXT_NOT_AFTER: &str = "verifyfull.dev/next-not-after";
const PREVIOUS_SINCE: &str = "verifyfull.dev/previous-ca-since";

/// The self-managed CA state. A rotation goes: the next CA is published beside the current
/// one (trusted, not yet signing); after the overlap it signs, the old one still trusted;
/// after another overlap the old one goes. The webhook never serves a certificate the
/// `caBundle` does not trust.
#[derive(Debug, Clone, PartialEq)]
pub struct CaState {
    /// Signs serving certificates.
    pub current: Ca,
    /// Published, not signing yet; since when.
    pub next: Option<(Ca, i64)>,
    /// Retired from signing, still trusted; since when (certificate only).
    pub previous: Option<(String, i64)>,
}

impl CaState {
    fn read(s: &Secret) -> Option<CaState> {
        let current = Ca {
            cert: data(s, "ca.crt")?,
            key: data(s, "ca.key")?,
            not_before: annotation(s, NOT_BEFORE)?,
            not_after: annotation(s, NOT_AFTER)?,
        };
        let next = match (data(s, "next.crt"), data(s, "next.key")) {
            (Some(cert), Some(key)) => Some((
                Ca {
                    cert,
                    key,
                    not_before: annotation(s, NEXT_NOT_BEFORE)?,
                    not_after: annotation(s, NEXT_NOT_AFTER)?,
                },
                annotation(s, NEXT_SINCE)?,
            )),
            _ => None,
        };
        let previous = match (data(s, "previous.crt"), annotation(s, PREVIOUS_SINCE)) {
            (Some(cert), Some(since)) => Some((cert, since)),
            _ => None,
        };
        Some(CaState {
            current,
            next,
            previous,
        })
    }

    fn secret(&self, name: &str, namespace: &str) -> Value {
        let b64 = |s: &str| json!(ByteString(s.as_bytes().to_vec()));
        let mut data = json!({"ca.crt": b64(&self.current.cert), "ca.key": b64(&self.current.key)});
        let mut ann = json!({NOT_BEFORE: self.current.not_before.to_string(), NOT_AFTER: self.current.not_after.to_string()});
        if let Some((n, since)) = &self.next {
            data["next.crt"] = b64(&n.cert);
            data["next.key"] = b64(&n.key);
            ann[NEXT_SINCE] = json!(since.to_string());
            ann[NEXT_NOT_BEFORE] = json!(n.not_before.to_string());
            ann[NEXT_NOT_AFTER] = json!(n.not_after.to_string());
        }
        if let Some((cert, since)) = &self.previous {
            data["previous.crt"] = b64(cert);
            ann[PREVIOUS_SINCE] = json!(since.to_string());
        }
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": name, "namespace": namespace, "annotations": ann}, "data": data})
    }

    /// One step of the rotation, when its time has come.
    pub fn advance(mut self, validity: Duration, overlap: Duration) -> Result<CaState, Error> {
        let overlap = overlap.as_secs() as i64;
        if let Some((_, since)) = &self.previous
            && now() >= since + overlap
        {
            self.previous = None;
        }
        match self.next.take() {
            Some((next, since)) if now() >= since + overlap => {
                let old = std::mem::replace(&mut self.current, next);
                self.previous = Some((old.cert, now()));
            }
            Some(n) => self.next = Some(n),
            None if self.previous.is_none()
                && self.current.due(Duration::from_secs(overlap as u64 * 2)) =>
            {
                self.next = Some((Ca::generate(validity)?, now()));
            }
            None => {}
        }
        Ok(self)
    }

    /// Every CA a client must trust now.
    pub fn bundle(&self) -> String {
        let mut b = self.current.cert.clone();
        if let Some((n, _)) = &self.next {
            b.push_str(&n.cert);
        }
        if let Some((p, _)) = &self.previous {
            b.push_str(p);
        }
        b
    }
}

/// One pass: certificates (self-managed), then the configurations with their `caBundle`,
/// the mutating one with an entry per policy in `policies`. Writes only what changed.
pub async fn reconcile(
    client: &kube::Client,
    s: &Settings,
    policies: &[Arc<PostgresTLSPolicy>],
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &s.namespace);
    let bundle = match s.mode {
        CertMode::SelfManaged => self_managed(&secrets, s).await?,
        CertMode::CertManager | CertMode::Secret => match secrets.get_opt(&s.tls_secret).await? {
            Some(sec) => match data(&sec, "ca.crt") {
                Some(ca) if ca.contains("BEGIN CERTIFICATE") => ca,
                _ => {
                    return Err(Error::Invalid(format!(
                        "Secret {}/{} has no ca.crt yet",
                        s.namespace, s.tls_secret
                    )));
                }
            },
            None => {
                return Err(Error::Invalid(format!(
                    "Secret {}/{} does not exist yet",
                    s.namespace, s.tls_secret
                )));
            }
        },
    };
    apply_configurations(client, s, &bundle, policies).await
}

async fn self_managed(secrets: &Api<Secret>, s: &Settings) -> Result<String, Error> {
    let stored = secrets.get_opt(&s.ca_secret).await?;
    let state = match stored.as_ref().and_then(CaState::read) {
        Some(st) => st,
        None => CaState {
            current: Ca::generate(s.ca_validity)?,
            next: None,
            previous: None,
        },
    };
    let advanced = state.clone().advance(s.ca_validity, s.ca_overlap)?;
    if stored.is_none() || advanced != state {
        let body = advanced.secret(&s.ca_secret, &s.namespace);
        secrets
            .patch(
                &s.ca_secret,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
    }
    // The serving certificate: issued by the current CA, renewed when due or when the CA
    // it was issued by is no longer current.
    let serving = secrets.get_opt(&s.tls_secret).await?;
    let fresh = serving.as_ref().is_some_and(|sec| {
        let (Some(nb), Some(na)) = (annotation(sec, NOT_BEFORE), annotation(sec, NOT_AFTER)) else {
            return false;
        };
        let by_current = data(sec, "ca.crt").is_some_and(|c| c.starts_with(&advanced.current.cert));
        let cert = Serving {
            cert: String::new(),
            key: String::new(),
            not_before: nb,
            not_after: na,
        };
        by_current
            && !cert.due()
            && data(sec, "ca.crt").as_deref() == Some(advanced.bundle().as_str())
    });
    if !fresh {
        let leaf = advanced.current.issue(&s.service_host, s.server_validity)?;
        let b64 = |v: &str| json!(ByteString(v.as_bytes().to_vec()));
        let body = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": s.tls_secret, "namespace": s.namespace,
                         "annotations": {NOT_BEFORE: leaf.not_before.to_string(), NOT_AFTER: leaf.not_after.to_string()}},
            "data": {"tls.crt": b64(&leaf.cert), "tls.key": b64(&leaf.key), "ca.crt": b64(&advanced.bundle())}});
        secrets
            .patch(
                &s.tls_secret,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        tracing::info!(secret = %s.tls_secret, "serving certificate issued");
    }
    Ok(advanced.bundle())
}

fn configuration_api(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
        &plural,
    );
    Api::all_with(client.clone(), &ar)
}

/// A webhook name for a policy's entry: `<policy>.<template>`, or, past the 253
/// characters a name may have, a prefix of the policy's name and its hash.
fn entry_name(policy: &str, template: &str) -> String {
    let name = format!("{policy}.{template}");
    if name.len() <= 253 {
        return name;
    }
    let hash = crate::ca::hash(policy);
    let keep = 253 - template.len() - hash.len() - 2;
    let prefix: String = policy.chars().take(keep).collect();
    format!("{}-{hash}.{template}", prefix.trim_end_matches(['.', '-']))
}

/// A CEL string literal.
fn cel_string(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('\'', "\\'")
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    format!("'{escaped}'")
}

/// True unless every container and init container already has the policy's mount and
/// variable: only then may the API server skip the call (a container a later webhook adds
/// still gets them, through reinvocation).
fn missing_ca(p: &PostgresTLSPolicy) -> String {
    let inj = &p.spec.injection;
    let has = format!(
        "has(c.volumeMounts) && c.volumeMounts.exists(m, m.mountPath == {}) \
         && has(c.env) && c.env.exists(e, e.name == {})",
        cel_string(&inj.mount_path),
        cel_string(&inj.env)
    );
    format!(
        "!(object.spec.containers.all(c, {has}) \
         && (!has(object.spec.initContainers) || object.spec.initContainers.all(c, {has})))"
    )
}

/// The mutating entries: the chart's template entry once per policy (by name), with the
/// policy's `namespaceSelector` added to the template's exclusions. No policy, no entry.
pub fn mutating_entries(template: &Value, policies: &[Arc<PostgresTLSPolicy>]) -> Vec<Value> {
    let base = template["name"].as_str().unwrap_or("inject.verifyfull.dev");
    let mut live: Vec<&PostgresTLSPolicy> = policies
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    live.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    live.iter()
        .map(|p| {
            let mut w = template.clone();
            w["name"] = json!(entry_name(
                p.metadata.name.as_deref().unwrap_or_default(),
                base
            ));
            let sel = p.spec.namespace_selector.clone().unwrap_or_default();
            let mut exprs = w["namespaceSelector"]["matchExpressions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            exprs.extend(
                sel.match_expressions
                    .iter()
                    .flatten()
                    .filter_map(|e| serde_json::to_value(e).ok()),
            );
            w["namespaceSelector"]["matchExpressions"] = json!(exprs);
            if let Some(labels) = sel.match_labels.filter(|l| !l.is_empty()) {
                w["namespaceSelector"]["matchLabels"] = json!(labels);
            }
            let mut conditions = w["matchConditions"].as_array().cloned().unwrap_or_default();
            conditions.push(json!({"name": "missing-ca", "expression": missing_ca(p)}));
            w["matchConditions"] = json!(conditions);
            w
        })
        .collect()
}

/// Creates or updates the configurations from the chart's ConfigMap, each webhook's
/// `caBundle` set, owned by the chart's ClusterRole; the mutating template entry becomes
/// one entry per policy.
async fn apply_configurations(
    client: &kube::Client,
    s: &Settings,
    bundle: &str,
    policies: &[Arc<PostgresTLSPolicy>],
) -> Result<(), Error> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &s.namespace);
    let Some(cm) = cms.get_opt(&s.configurations).await? else {
        return Err(Error::Invalid(format!(
            "ConfigMap {}/{} does not exist",
            s.namespace, s.configurations
        )));
    };
    let owner = Api::<ClusterRole>::all(client.clone())
        .get_opt(&s.owner)
        .await?;
    let owner_ref = owner.map(|o| {
        json!([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "name": o.metadata.name, "uid": o.metadata.uid}])
    });
    let b64 = ByteString(bundle.as_bytes().to_vec());
    let data: BTreeMap<String, String> = cm.data.unwrap_or_default();
    for (key, kind) in [
        ("validating.json", "ValidatingWebhookConfiguration"),
        ("mutating.json", "MutatingWebhookConfiguration"),
    ] {
        let Some(text) = data.get(key) else { continue };
        let mut config: Value =
            serde_json::from_str(text).map_err(|e| Error::Invalid(format!("{key}: {e}")))?;
        if kind == "MutatingWebhookConfiguration" {
            let Some(template) = config["webhooks"].get(0).cloned() else {
                return Err(Error::Invalid(format!("{key}: no template entry")));
            };
            config["webhooks"] = json!(mutating_entries(&template, policies));
        }
        for w in config["webhooks"].as_array_mut().into_iter().flatten() {
            w["clientConfig"]["caBundle"] = json!(b64);
        }
        if let Some(o) = &owner_ref {
            config["metadata"]["ownerReferences"] = o.clone();
        }
        let name = config["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let api = configuration_api(client, kind);
        let current = api.get_opt(&name).await?;
        let same = current.as_ref().is_some_and(|c| {
            c.data["webhooks"] == config["webhooks"]
                && c.metadata.owner_references.as_ref().map(|r| r.len())
                    == owner_ref.as_ref().map(|_| 1)
        });
        if !same {
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&config),
            )
            .await?;
            tracing::info!(kind, name, "webhook configuration applied");
        }
    }
    Ok(())
}

/// What the chart's pre-delete hook stops before it cleans up.
#[derive(Debug, Clone)]
pub struct Uninstall {
    pub namespace: String,
    /// The operator's Deployment, scaled to zero first.
    pub operator: Option<String>,
    /// The operator's Lease: taken over, so that no operator still running can lead (and
    /// put its finalizer back) while the hook cleans up.
    pub lease: Option<String>,
}

/// The chart's pre-delete hook: stops the operator, takes its finalizer off every policy
/// (they stay, with their copies and injections, so no workload restarts and nothing is
/// stuck), then deletes the named configurations, so nothing is left that could block the
/// cluster once verifyfull is gone.
pub async fn remove(client: &kube::Client, names: &[String], u: &Uninstall) -> Result<(), Error> {
    if let Some(d) = &u.operator {
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(client.clone(), &u.namespace);
        let scale = json!({"spec": {"replicas": 0}});
        match deployments
            .patch(d, &PatchParams::default(), &Patch::Merge(&scale))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // No Lease: no operator ever led, and with its Deployment at zero none will.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &u.namespace);
    let lease = match &u.lease {
        Some(l) if leases.get_opt(l).await?.is_some() => Some(l),
        _ => None,
    };
    if let Some(lease) = lease {
        let election = crate::leader::Election {
            api: leases,
            name: lease.clone(),
            identity: "verifyfull-uninstall".into(),
            duration: Duration::from_secs(15),
        };
        // A running leader renews; its lease lapses once it is gone.
        if tokio::time::timeout(Duration::from_secs(90), election.acquire())
            .await
            .is_err()
        {
            tracing::warn!(
                lease,
                "the operator still holds its lease; cleaning up anyway"
            );
        }
    }
    let policies: Api<policy::crd::PostgresTLSPolicy> = Api::all(client.clone());
    // No CRD (already gone, or never installed): no finalizers either.
    if let Ok(list) = policies.list(&Default::default()).await {
        for p in list.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let rest: Vec<String> = p
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| f.as_str() != crate::reconcile::FINALIZER)
                .cloned()
                .collect();
            if rest.len() != p.metadata.finalizers.as_ref().map_or(0, Vec::len) {
                let patch = json!({"metadata": {"finalizers": rest}});
                policies
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                tracing::info!(policy = %name, "finalizer removed");
            }
        }
    }
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let api = configuration_api(client, kind);
        for name in names {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(kind, name, "webhook configuration removed"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The policies, as the operator's watch keeps them.
#[derive(Debug)]
pub struct PolicyCache {
    pub store: reflector::Store<PostgresTLSPolicy>,
    /// Set once the first list is in the store.
    pub listed: Arc<std::sync::atomic::AtomicBool>,
    /// Notified after every change the watch delivers.
    pub changed: Arc<tokio::sync::Notify>,
}

/// Keeps the certificates and configurations right, every `every` and whenever a policy
/// changes, until dropped. Nothing is written before the policies are listed: an empty
/// cache would remove every mutating entry.
pub async fn run(client: kube::Client, s: Settings, every: Duration, policies: PolicyCache) {
    use std::sync::atomic::Ordering;
    while !policies.listed.load(Ordering::SeqCst) {
        let _ = tokio::time::timeout(Duration::from_secs(1), policies.changed.notified()).await;
    }
    loop {
        if let Err(e) = reconcile(&client, &s, &policies.store.state()).await {
            tracing::warn!(error = %e, "webhook certificates and configurations");
        }
        let _ = tokio::time::timeout(every, policies.changed.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, spec: Value) -> Arc<PostgresTLSPolicy> {
        let mut p: PostgresTLSPolicy = serde_json::from_value(json!({
            "apiVersion": "verifyfull.dev/v1alpha1", "kind": "PostgresTLSPolicy",
            "metadata": {"name": name}, "spec": spec}))
        .unwrap();
        p.metadata.name = Some(name.into());
        Arc::new(p)
    }

    #[test]
    fn one_mutating_entry_per_live_policy_with_its_namespaces() {
        let template = json!({"name": "inject.verifyfull.dev", "failurePolicy": "Fail",
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "verifyfull"]}]}});
        let source = json!({"configMap": {"namespace": "certs", "name": "ca"}});
        assert!(
            mutating_entries(&template, &[]).is_empty(),
            "no policy, no entry"
        );
        let selected = policy(
            "b-db",
            json!({"caSource": source, "namespaceSelector": {
            "matchLabels": {"db-tls": "on"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]},
            "injection": {"mountPath": "/etc/it's", "env": "MY_CA"}}),
        );
        let everywhere = policy("a-all", json!({"caSource": source}));
        let mut going = (*policy("c-gone", json!({"caSource": source}))).clone();
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let entries = mutating_entries(&template, &[selected, everywhere, Arc::new(going)]);
        let names: Vec<&str> = entries.iter().filter_map(|e| e["name"].as_str()).collect();
        assert_eq!(
            names,
            ["a-all.inject.verifyfull.dev", "b-db.inject.verifyfull.dev"]
        );
        // Everywhere but the exclusions; the other one only where its selector says.
        assert_eq!(
            entries[0]["namespaceSelector"],
            template["namespaceSelector"]
        );
        assert_eq!(
            entries[1]["namespaceSelector"]["matchLabels"],
            json!({"db-tls": "on"})
        );
        let exprs = entries[1]["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        assert_eq!(exprs.len(), 2);
        assert_eq!(exprs[1]["key"], "tier");
        assert!(entries.iter().all(|e| e["failurePolicy"] == "Fail"));
        let cel = entries[1]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap();
        assert!(cel.contains(r"m.mountPath == '/etc/it\'s'"), "{cel}");
        assert!(
            cel.contains("e.name == 'MY_CA'") && cel.contains("initContainers"),
            "{cel}"
        );
        // A name too long for a webhook name keeps its start and gains its hash.
        let long = "x".repeat(250);
        let name = entry_name(&long, "inject.verifyfull.dev");
        assert!(
            name.len() <= 253 && name.ends_with(".inject.verifyfull.dev"),
            "{name}"
        );
        assert_ne!(name, entry_name(&"x".repeat(249), "inject.verifyfull.dev"));
    }

    #[test]
    fn a_rotation_trusts_both_before_and_after_it_switches() {
        let day = Duration::from_secs(86_400);
        let fresh = CaState {
            current: Ca::generate(day * 1825).unwrap(),
            next: None,
            previous: None,
        };
        let same = fresh.clone().advance(day * 1825, day * 7).unwrap();
        assert_eq!(same, fresh, "a young CA stays");
        // A CA near the end of its life: the next one is published beside it.
        let mut old = fresh.clone();
        old.current.not_before = now() - 1000;
        old.current.not_after = now() + 100;
        let started = old.clone().advance(day * 1825, day * 7).unwrap();
        let (next, _) = started.next.clone().expect("next CA");
        assert_eq!(started.current, old.current, "the old CA still signs");
        assert!(
            started.bundle().contains(&old.current.cert) && started.bundle().contains(&next.cert)
        );
        // After the overlap the next one signs; the old one is still trusted.
        let mut waited = started.clone();
        if let Some((_, since)) = waited.next.as_mut() {
            *since -= 8 * 86_400;
        }
        let switched = waited.advance(day * 1825, day * 7).unwrap();
        assert_eq!(switched.current, next);
        assert!(switched.bundle().contains(&old.current.cert));
        // After another overlap the old one goes.
        let mut later = switched.clone();
        if let Some((_, since)) = later.previous.as_mut() {
            *since -= 8 * 86_400;
        }
        let done = later.advance(day * 1825, day * 7).unwrap();
        assert_eq!(done.bundle(), next.cert);
        // Serving certificates renew at two thirds of their life.
        let leaf = done
            .current
            .issue("verifyfull-webhook.verifyfull.svc", day * 90)
            .unwrap();
        assert!(!leaf.due());
        let old_leaf = Serving {
            not_before: now() - 61 * 86_400,
            not_after: now() + 29 * 86_400,
            ..leaf
        };
        assert!(old_leaf.due());
    }
}
