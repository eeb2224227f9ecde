//! The workloads the operator injects, held in memory as little as reconciling needs:
//! metadata (without managed fields), the Pod template reduced to what the engine and the
//! injection plan read, and the rollout status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, DynamicResourceScope, GroupVersionKind, Resource};
use serde::Deserialize;
use std::borrow::Cow;

/// The kinds whose Pod templates the operator patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::CronJob,
    ];

    pub fn resource(self) -> ApiResource {
        let (group, kind, plural) = match self {
            Kind::Deployment => ("apps", "Deployment", "deployments"),
            Kind::StatefulSet => ("apps", "StatefulSet", "statefulsets"),
            Kind::DaemonSet => ("apps", "DaemonSet", "daemonsets"),
            Kind::CronJob => ("batch", "CronJob", "cronjobs"),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::CronJob => "CronJob",
        }
    }

    /// Whether patching the template restarts running Pods.
    pub fn rolls(self) -> bool {
        self != Kind::CronJob
    }

    pub fn workload_kind(self) -> policy::WorkloadKind {
        match self {
            Kind::Deployment => policy::WorkloadKind::Deployment,
            Kind::StatefulSet => policy::WorkloadKind::StatefulSet,
            Kind::DaemonSet => policy::WorkloadKind::DaemonSet,
            Kind::CronJob => policy::WorkloadKind::CronJob,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub replicas: Option<i32>,
    pub template: Option<policy::PodTemplate>,
    pub job_template: Option<JobTemplate>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobTemplate {
    pub spec: Option<JobSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobSpec {
    pub template: Option<policy::PodTemplate>,
}

/// Rollout progress, as Deployments, StatefulSets and DaemonSets report it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub observed_generation: Option<i64>,
    pub replicas: Option<i32>,
    pub updated_replicas: Option<i32>,
    pub desired_number_scheduled: Option<i32>,
    pub updated_number_scheduled: Option<i32>,
}

/// A workload as the operator keeps it. Its kind is known from the watch it came from.
#[derive(Debug, Clone, Deserialize)]
pub struct Workload {
    #[serde(deserialize_with = "without_managed_fields")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Spec,
    #[serde(default)]
    pub status: Option<Status>,
}

/// Managed fields, and `kubectl apply`'s copy of the whole object in an annotation, are most
/// of a workload's metadata; the operator reads neither.
fn without_managed_fields<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let mut m = ObjectMeta::deserialize(d)?;
    m.managed_fields = None;
    if let Some(a) = m.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    Ok(m)
}

impl Workload {
    pub fn template(&self, kind: Kind) -> Option<&policy::PodTemplate> {
        match kind {
            Kind::CronJob => self
                .spec
                .job_template
                .as_ref()?
                .spec
                .as_ref()?
                .template
                .as_ref(),
            _ => self.spec.template.as_ref(),
        }
    }

    /// The template's metadata, spec: what the engine and the plan read.
    pub fn pod(&self, kind: Kind) -> (policy::Meta, policy::PodSpec) {
        let t = self.template(kind);
        (
            t.and_then(|t| t.metadata.clone()).unwrap_or_default(),
            t.and_then(|t| t.spec.clone()).unwrap_or_default(),
        )
    }

    /// Whether the rollout of `generation` is complete (or nothing runs).
    pub fn rolled_out(&self, kind: Kind, generation: i64) -> bool {
        let Some(s) = &self.status else {
            return false;
        };
        if s.observed_generation.unwrap_or(0) < generation {
            return false;
        }
        match kind {
            Kind::DaemonSet => {
                s.updated_number_scheduled.unwrap_or(0) >= s.desired_number_scheduled.unwrap_or(0)
            }
            Kind::CronJob => true,
            _ => {
                let want = self.spec.replicas.unwrap_or(1);
                want == 0 || s.updated_replicas.unwrap_or(0) >= want
            }
        }
    }

    /// `Kind namespace/name`, as status and logs name it.
    pub fn label(&self, kind: Kind) -> String {
        format!(
            "{} {}/{}",
            kind.as_str(),
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

impl Resource for Workload {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
