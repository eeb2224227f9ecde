//! Every Pod-carrying kind, and one code path that finds its Pod spec.
//!
//! [`Object`] deserializes a Kubernetes object in one pass from any serde format (YAML,
//! JSON, an AdmissionReview's `object`): once `kind` is known, `spec` is read straight
//! into the one shape that kind needs, and everything else is skipped. Only when `spec`
//! comes before `kind` is it buffered — as compact JSON text, never as a tree of values
//! (which costs many times the input).
//!
//! What one object may hold is capped ([`MAX_CONTAINERS`], [`MAX_ENV_FROM`],
//! [`MAX_ENV_PER_POD`]): beyond a cap the object is refused with an error that names it,
//! before the work or the memory is spent (docs/limits.md).
//!
//! The shapes keep only what the engine reads ([`PodSpec`], [`Container`], [`Meta`]):
//! parsing skips resources, probes, volumes and `managedFields`, and a caller holding many
//! workloads keeps a fraction of the memory full `k8s-openapi` types take. The values
//! inside (`EnvVar`, `EnvFromSource`) are `k8s-openapi`'s own.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar};
use serde::Deserialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess,
    Visitor,
};

/// The kinds that carry a Pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// `v1` Pod.
    Pod,
    /// `v1` PodTemplate.
    PodTemplate,
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `apps/v1` ReplicaSet.
    ReplicaSet,
    /// `v1` ReplicationController.
    ReplicationController,
    /// `batch/v1` Job.
    Job,
    /// `batch/v1` CronJob.
    CronJob,
}

impl WorkloadKind {
    /// Every kind.
    pub const ALL: [WorkloadKind; 9] = [
        WorkloadKind::Pod,
        WorkloadKind::PodTemplate,
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::ReplicaSet,
        WorkloadKind::ReplicationController,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
    ];

    /// The kind's `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            WorkloadKind::Pod | WorkloadKind::PodTemplate | WorkloadKind::ReplicationController => {
                "v1"
            }
            WorkloadKind::Deployment
            | WorkloadKind::StatefulSet
            | WorkloadKind::DaemonSet
            | WorkloadKind::ReplicaSet => "apps/v1",
            WorkloadKind::Job | WorkloadKind::CronJob => "batch/v1",
        }
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "Pod",
            WorkloadKind::PodTemplate => "PodTemplate",
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::ReplicationController => "ReplicationController",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
        }
    }

    /// The API group the kind belongs to (`""` is the core group).
    fn groups(self) -> &'static [&'static str] {
        match self {
            WorkloadKind::Pod | WorkloadKind::PodTemplate | WorkloadKind::ReplicationController => {
                &[""]
            }
            WorkloadKind::Deployment
            | WorkloadKind::StatefulSet
            | WorkloadKind::DaemonSet
            | WorkloadKind::ReplicaSet => &["apps", "extensions"],
            WorkloadKind::Job | WorkloadKind::CronJob => &["batch"],
        }
    }

    /// The workload kind of `apiVersion`/`kind`, if it carries a Pod spec.
    pub fn of(api_version: &str, kind: &str) -> Option<WorkloadKind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        WorkloadKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && k.groups().contains(&group))
    }

    /// Where exemption annotations belong: the annotations of the Pods it creates.
    pub fn pod_annotations_path(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "metadata.annotations",
            WorkloadKind::PodTemplate => "template.metadata.annotations",
            WorkloadKind::CronJob => "spec.jobTemplate.spec.template.metadata.annotations",
            _ => "spec.template.metadata.annotations",
        }
    }

    /// Where the Pod spec is.
    pub fn pod_spec_path(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "spec",
            WorkloadKind::PodTemplate => "template.spec",
            WorkloadKind::CronJob => "spec.jobTemplate.spec.template.spec",
            _ => "spec.template.spec",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Pod-carrying object reduced to what the engine reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Its kind.
    pub kind: WorkloadKind,
    /// The object's metadata.
    pub metadata: Meta,
    /// The Pod template's metadata (unused for a Pod, whose metadata is its own).
    pub template_metadata: Meta,
    /// The Pod spec (the template's, for all but a Pod).
    pub spec: PodSpec,
}

impl Workload {
    /// The Pod spec with its metadata, as the engine reads it.
    pub fn view(&self) -> PodView<'_> {
        PodView {
            kind: self.kind,
            object: &self.metadata,
            pod: match self.kind {
                WorkloadKind::Pod => &self.metadata,
                _ => &self.template_metadata,
            },
            spec: &self.spec,
        }
    }
}

/// Object metadata: what the engine and its reports read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.generateName`.
    pub generate_name: Option<String>,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.labels`.
    pub labels: Option<BTreeMap<String, String>>,
    /// `metadata.annotations`.
    pub annotations: Option<BTreeMap<String, String>>,
}

/// At most this many containers in each of a Pod spec's three lists.
pub const MAX_CONTAINERS: usize = 100;
/// At most this many `envFrom` sources in one container.
pub(crate) const MAX_ENV_FROM: usize = 100;
/// At most this many `env` entries in one object's Pod spec, all containers together.
pub const MAX_ENV_PER_POD: usize = 10_000;

thread_local! {
    /// `env` entries the object being read may still have; `None` outside [`Object`]'s
    /// deserializer (deserialization runs on one thread, and [`EnvAllowance`] restores it).
    static ENV_LEFT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Gives one object [`MAX_ENV_PER_POD`] `env` entries while it is read.
struct EnvAllowance(Option<usize>);

impl EnvAllowance {
    fn enter() -> EnvAllowance {
        EnvAllowance(ENV_LEFT.replace(Some(MAX_ENV_PER_POD)))
    }
}

impl Drop for EnvAllowance {
    fn drop(&mut self) {
        ENV_LEFT.set(self.0);
    }
}

/// A list with a cap on its length.
trait Cap {
    const MAX: usize;
    /// What the list holds, for the error.
    const WHAT: &'static str;
    /// Each entry also takes one of the object's [`MAX_ENV_PER_POD`].
    const POD_ENV: bool = false;
}

struct ContainersCap;
impl Cap for ContainersCap {
    const MAX: usize = MAX_CONTAINERS;
    const WHAT: &'static str = "containers in one list";
}

struct EnvFromCap;
impl Cap for EnvFromCap {
    const MAX: usize = MAX_ENV_FROM;
    const WHAT: &'static str = "envFrom sources in one container";
}

struct EnvCap;
impl Cap for EnvCap {
    const MAX: usize = MAX_ENV_PER_POD;
    const WHAT: &'static str = "env entries in one Pod spec";
    const POD_ENV: bool = true;
}

struct Capped<T, C>(PhantomData<(T, C)>);

impl<'de, T: Deserialize<'de>, C: Cap> Visitor<'de> for Capped<T, C> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {} {}", C::MAX, C::WHAT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let over = || {
            de::Error::custom(format_args!(
                "more than {} {} (verifyfull's limit)",
                C::MAX,
                C::WHAT
            ))
        };
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(C::MAX).min(64));
        while let Some(item) = seq.next_element()? {
            if out.len() == C::MAX {
                return Err(over());
            }
            if C::POD_ENV {
                match ENV_LEFT.get() {
                    Some(0) => return Err(over()),
                    Some(n) => ENV_LEFT.set(Some(n - 1)),
                    None => {}
                }
            }
            out.push(item);
        }
        Ok(out)
    }
}

impl<'de, T: Deserialize<'de>, C: Cap> DeserializeSeed<'de> for Capped<T, C> {
    type Value = Vec<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

struct OptionalCapped<T, C>(PhantomData<(T, C)>);

impl<'de, T: Deserialize<'de>, C: Cap> Visitor<'de> for OptionalCapped<T, C> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "null or a list of at most {} {}", C::MAX, C::WHAT)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Capped::<T, C>(PhantomData).deserialize(d).map(Some)
    }
}

fn capped<'de, D: Deserializer<'de>, T: Deserialize<'de>, C: Cap>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    d.deserialize_option(OptionalCapped::<T, C>(PhantomData))
}

fn capped_required<'de, D: Deserializer<'de>, T: Deserialize<'de>, C: Cap>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    capped::<D, T, C>(d).map(Option::unwrap_or_default)
}

/// The parts of a Pod spec the engine reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// `containers`.
    #[serde(default, deserialize_with = "capped_required::<_, _, ContainersCap>")]
    pub containers: Vec<Container>,
    /// `initContainers`.
    #[serde(default, deserialize_with = "capped::<_, _, ContainersCap>")]
    pub init_containers: Option<Vec<Container>>,
    /// `ephemeralContainers`.
    #[serde(default, deserialize_with = "capped::<_, _, ContainersCap>")]
    pub ephemeral_containers: Option<Vec<Container>>,
    /// `hostNetwork`.
    pub host_network: Option<bool>,
    /// `serviceAccountName`.
    pub service_account_name: Option<String>,
    /// The deprecated alias of `serviceAccountName`.
    pub service_account: Option<String>,
    /// `enableServiceLinks` (default on): the service variables the kubelet adds.
    pub enable_service_links: Option<bool>,
    /// Volume names (and a ConfigMap volume's source), for the injection plan.
    pub volumes: Option<Vec<Volume>>,
}

/// A volume, reduced to what the injection plan reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub config_map: Option<NameRef>,
}

/// `{name: …}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NameRef {
    pub name: Option<String>,
}

/// A volume mount, reduced to what the injection plan reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
}

/// The parts of a container (of any of the three lists) the engine reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// The container's name.
    pub name: String,
    /// `env`, at most [`MAX_ENV_PER_POD`] in the Pod.
    #[serde(default, deserialize_with = "capped::<_, _, EnvCap>")]
    pub env: Option<Vec<EnvVar>>,
    /// `envFrom`.
    #[serde(default, deserialize_with = "capped::<_, _, EnvFromCap>")]
    pub env_from: Option<Vec<EnvFromSource>>,
    /// `volumeMounts`.
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// Connection strings may be passed here too (docs/drivers.md, "Commands").
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `args`.
    #[serde(default)]
    pub args: Option<Vec<String>>,
}

fn mounts(m: &Option<Vec<k8s_openapi::api::core::v1::VolumeMount>>) -> Option<Vec<VolumeMount>> {
    m.as_ref().map(|v| {
        v.iter()
            .map(|m| VolumeMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
            })
            .collect()
    })
}

impl From<&k8s_openapi::api::core::v1::Container> for Container {
    fn from(c: &k8s_openapi::api::core::v1::Container) -> Self {
        Container {
            name: c.name.clone(),
            env: c.env.clone(),
            env_from: c.env_from.clone(),
            volume_mounts: mounts(&c.volume_mounts),
            command: c.command.clone(),
            args: c.args.clone(),
        }
    }
}

impl From<&k8s_openapi::api::core::v1::PodSpec> for PodSpec {
    /// For callers that hold full `k8s-openapi` objects (the operator).
    fn from(s: &k8s_openapi::api::core::v1::PodSpec) -> Self {
        PodSpec {
            containers: s.containers.iter().map(Container::from).collect(),
            init_containers: s
                .init_containers
                .as_ref()
                .map(|v| v.iter().map(Container::from).collect()),
            ephemeral_containers: s.ephemeral_containers.as_ref().map(|v| {
                v.iter()
                    .map(|c| Container {
                        name: c.name.clone(),
                        env: c.env.clone(),
                        env_from: c.env_from.clone(),
                        volume_mounts: mounts(&c.volume_mounts),
                        command: c.command.clone(),
                        args: c.args.clone(),
                    })
                    .collect()
            }),
            host_network: s.host_network,
            service_account_name: s.service_account_name.clone(),
            service_account: s.service_account.clone(),
            enable_service_links: s.enable_service_links,
            volumes: s.volumes.as_ref().map(|v| {
                v.iter()
                    .map(|v| Volume {
                        name: v.name.clone(),
                        config_map: v.config_map.as_ref().map(|c| NameRef {
                            name: Some(c.name.clone()),
                        }),
                    })
                    .collect()
            }),
        }
    }
}

/// A Pod template: its metadata and spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodTemplate {
    /// The template's metadata.
    pub metadata: Option<Meta>,
    /// The template's Pod spec.
    pub spec: Option<PodSpec>,
}

/// A Kubernetes object as verifyfull sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A Pod-carrying object.
    Workload(Box<Workload>),
    /// A ConfigMap.
    ConfigMap {
        /// Its metadata.
        metadata: Meta,
        /// `data`.
        data: BTreeMap<String, String>,
    },
    /// `data` decoded, `stringData` merged over it (as the API server does).
    Secret {
        /// Its metadata.
        metadata: Meta,
        /// `data` decoded, with `stringData` over it.
        data: BTreeMap<String, String>,
    },
    /// A `List` (or `<Kind>List`); each item deserialized on its own so that one bad item
    /// does not hide the others.
    List(Vec<Result<Object, String>>),
    /// Any other kind: never judged.
    Other {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// Its metadata.
        metadata: Meta,
    },
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> &str {
        match self {
            Object::Workload(w) => w.kind.as_str(),
            Object::ConfigMap { .. } => "ConfigMap",
            Object::Secret { .. } => "Secret",
            Object::List(_) => "List",
            Object::Other { kind, .. } => kind,
        }
    }

    /// The object's metadata (`None` for a list).
    pub fn metadata(&self) -> Option<&Meta> {
        match self {
            Object::Workload(w) => Some(&w.metadata),
            Object::ConfigMap { metadata, .. }
            | Object::Secret { metadata, .. }
            | Object::Other { metadata, .. } => Some(metadata),
            Object::List(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct TemplateSpec {
    template: Option<PodTemplate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronJobSpec {
    job_template: Option<JobTemplate>,
}

#[derive(Deserialize)]
struct JobTemplate {
    spec: Option<TemplateSpec>,
}

/// The shape of the fields a kind needs, chosen before they are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Workload(WorkloadKind),
    ConfigMap,
    Secret,
    List,
    Other,
}

impl Shape {
    fn of(api_version: Option<&str>, kind: Option<&str>) -> Shape {
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return Shape::Other;
        };
        let core = !api_version.contains('/');
        if let Some(w) = WorkloadKind::of(api_version, kind) {
            Shape::Workload(w)
        } else if core && kind == "ConfigMap" {
            Shape::ConfigMap
        } else if core && kind == "Secret" {
            Shape::Secret
        } else if kind == "List" || kind.ends_with("List") {
            Shape::List
        } else {
            Shape::Other
        }
    }
}

/// A field read before `kind` was known, as compact JSON text.
type Buffered = String;

/// Reads a field's value, whatever its format, into JSON text.
struct ToJson;

impl<'de> DeserializeSeed<'de> for ToJson {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let mut out = Vec::new();
        serde_transcode::transcode(d, &mut serde_json::Serializer::new(&mut out))
            .map_err(de::Error::custom)?;
        String::from_utf8(out).map_err(de::Error::custom)
    }
}

/// Reads a buffered field; an error names the path inside it.
fn from_buffer<T: DeserializeOwned, E: de::Error>(v: &str, field: &str) -> Result<T, E> {
    let mut de = serde_json::Deserializer::from_str(v);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match path.as_str() {
            "" | "." => E::custom(format_args!("{field}: {inner}")),
            _ => E::custom(format_args!("{field}.{path}: {inner}")),
        }
    })
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
        let _allowance = EnvAllowance::enter();
        let mut api_version: Option<String> = None;
        let mut kind: Option<String> = None;
        let mut metadata: Option<Meta> = None;
        // The Pod template found (for a Pod: its spec, without template metadata).
        let mut carried: Option<Option<PodTemplate>> = None;
        let mut data: Option<BTreeMap<String, String>> = None;
        let mut binary: Option<BTreeMap<String, ByteString>> = None;
        let mut string_data: Option<BTreeMap<String, String>> = None;
        let mut items: Option<Vec<Result<Object, String>>> = None;
        // Fields met before `kind`, read once it is known.
        let mut early: Vec<(String, Buffered)> = Vec::new();

        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let shape = Shape::of(api_version.as_deref(), kind.as_deref());
            let known = api_version.is_some() && kind.is_some();
            match key.as_ref() {
                "apiVersion" => api_version = map.next_value()?,
                "kind" => kind = map.next_value()?,
                "metadata" => metadata = map.next_value()?,
                "spec" | "template" | "data" | "stringData" | "items" if !known => {
                    early.push((key.into_owned(), map.next_value_seed(ToJson)?));
                }
                "spec" => match shape {
                    Shape::Workload(WorkloadKind::Pod) => {
                        carried = Some(map.next_value::<Option<PodSpec>>()?.map(pod_template))
                    }
                    Shape::Workload(WorkloadKind::CronJob) => {
                        let spec: Option<CronJobSpec> = map.next_value()?;
                        carried = Some(
                            spec.and_then(|s| s.job_template)
                                .and_then(|j| j.spec)
                                .and_then(|s| s.template),
                        );
                    }
                    Shape::Workload(WorkloadKind::PodTemplate) => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    Shape::Workload(_) => {
                        let spec: Option<TemplateSpec> = map.next_value()?;
                        carried = Some(spec.and_then(|s| s.template));
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
                "template" if shape == Shape::Workload(WorkloadKind::PodTemplate) => {
                    carried = Some(map.next_value()?);
                }
                "data" if shape == Shape::ConfigMap => data = map.next_value()?,
                "data" if shape == Shape::Secret => binary = map.next_value()?,
                "stringData" if shape == Shape::Secret => string_data = map.next_value()?,
                "items" if shape == Shape::List => {
                    let raw: Option<Vec<serde_json::Value>> = map.next_value()?;
                    items = Some(raw.unwrap_or_default().into_iter().map(item).collect());
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }

        let shape = Shape::of(api_version.as_deref(), kind.as_deref());
        for (key, value) in early {
            if value == "null" {
                continue;
            }
            let value = value.as_str();
            match (key.as_str(), shape) {
                ("spec", Shape::Workload(WorkloadKind::Pod)) => {
                    carried = Some(Some(pod_template(from_buffer(value, "spec")?)))
                }
                ("spec", Shape::Workload(WorkloadKind::CronJob)) => {
                    let spec: CronJobSpec = from_buffer(value, "spec")?;
                    carried = Some(
                        spec.job_template
                            .and_then(|j| j.spec)
                            .and_then(|s| s.template),
                    );
                }
                ("spec", Shape::Workload(k)) if k != WorkloadKind::PodTemplate => {
                    let spec: TemplateSpec = from_buffer(value, "spec")?;
                    carried = Some(spec.template);
                }
                ("template", Shape::Workload(WorkloadKind::PodTemplate)) => {
                    carried = Some(from_buffer(value, "template")?);
                }
                ("data", Shape::ConfigMap) => data = from_buffer(value, "data")?,
                ("data", Shape::Secret) => binary = from_buffer(value, "data")?,
                ("stringData", Shape::Secret) => string_data = from_buffer(value, "stringData")?,
                ("items", Shape::List) => {
                    let raw: Vec<serde_json::Value> = from_buffer(value, "items")?;
                    items = Some(raw.into_iter().map(item).collect());
                }
                _ => {}
            }
        }

        let metadata = metadata.unwrap_or_default();
        let Some(kind_name) = kind else {
            return Err(de::Error::missing_field("kind"));
        };
        let Some(api_version) = api_version else {
            return Err(de::Error::missing_field("apiVersion"));
        };
        Ok(match shape {
            Shape::Workload(kind) => {
                let (template_metadata, spec) = match carried.flatten() {
                    Some(t) => (t.metadata.unwrap_or_default(), t.spec.unwrap_or_default()),
                    None => {
                        return Err(de::Error::custom(format_args!(
                            "{kind} has no Pod spec at {}",
                            kind.pod_spec_path()
                        )));
                    }
                };
                Object::Workload(Box::new(Workload {
                    kind,
                    metadata,
                    template_metadata,
                    spec,
                }))
            }
            Shape::ConfigMap => Object::ConfigMap {
                metadata,
                data: data.unwrap_or_default(),
            },
            Shape::Secret => {
                let mut data: BTreeMap<String, String> = binary
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                data.extend(string_data.unwrap_or_default());
                Object::Secret { metadata, data }
            }
            Shape::List => Object::List(items.unwrap_or_default()),
            Shape::Other => Object::Other {
                api_version,
                kind: kind_name,
                metadata,
            },
        })
    }
}

fn pod_template(spec: PodSpec) -> PodTemplate {
    PodTemplate {
        metadata: None,
        spec: Some(spec),
    }
}

/// One item of a List: its own result, its error message tagged with its path.
fn item(v: serde_json::Value) -> Result<Object, String> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(v, &mut track);
    Object::deserialize(de).map_err(|e| {
        let path = track.path().to_string();
        if path == "." || path.is_empty() {
            e.to_string()
        } else {
            format!("{path}: {e}")
        }
    })
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object, D::Error> {
        d.deserialize_map(ObjectVisitor)
    }
}

/// A Pod spec and the metadata around it, as found in any Pod-carrying kind.
#[derive(Debug, Clone, Copy)]
pub struct PodView<'a> {
    /// The object's kind.
    pub kind: WorkloadKind,
    /// The object's own metadata.
    pub object: &'a Meta,
    /// The Pod's metadata: the object's for a Pod, the template's otherwise.
    pub pod: &'a Meta,
    /// The Pod spec.
    pub spec: &'a PodSpec,
}

/// One container of any of the three lists.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContainerRef<'a> {
    pub name: &'a str,
    pub list: crate::verdict::ContainerList,
    pub env: &'a [EnvVar],
    pub env_from: &'a [EnvFromSource],
    pub command: &'a [String],
    pub args: &'a [String],
}

/// Every container of a Pod spec: init containers (native sidecars included), containers,
/// ephemeral containers.
pub(crate) fn containers(spec: &PodSpec) -> impl Iterator<Item = ContainerRef<'_>> {
    fn list(
        containers: Option<&Vec<Container>>,
        list: crate::verdict::ContainerList,
    ) -> impl Iterator<Item = ContainerRef<'_>> {
        containers.into_iter().flatten().map(move |c| ContainerRef {
            name: &c.name,
            list,
            env: c.env.as_deref().unwrap_or_default(),
            env_from: c.env_from.as_deref().unwrap_or_default(),
            command: c.command.as_deref().unwrap_or_default(),
            args: c.args.as_deref().unwrap_or_default(),
        })
    }
    use crate::verdict::ContainerList;
    list(spec.init_containers.as_ref(), ContainerList::Init)
        .chain(list(Some(&spec.containers), ContainerList::Main))
        .chain(list(
            spec.ephemeral_containers.as_ref(),
            ContainerList::Ephemeral,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(json: &str) -> Object {
        serde_json::from_str(json).expect("object")
    }

    #[test]
    fn kinds_and_groups() {
        assert_eq!(
            WorkloadKind::of("apps/v1", "Deployment"),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(
            WorkloadKind::of("extensions/v1beta1", "Deployment"),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(WorkloadKind::of("v1", "Pod"), Some(WorkloadKind::Pod));
        assert_eq!(
            WorkloadKind::of("batch/v1", "CronJob"),
            Some(WorkloadKind::CronJob)
        );
        assert_eq!(WorkloadKind::of("example.com/v1", "Deployment"), None);
        assert_eq!(WorkloadKind::of("v1", "Service"), None);
    }

    #[test]
    fn every_kind_finds_its_pod_spec() {
        let spec = r#"{"containers":[{"name":"c"}]}"#;
        let tmpl = format!(r#"{{"metadata":{{"annotations":{{"a":"b"}}}},"spec":{spec}}}"#);
        let templated = format!(r#""spec":{{"template":{tmpl}}}"#);
        let cron = format!(
            r#""spec":{{"schedule":"* * * * *","jobTemplate":{{"spec":{{"template":{tmpl}}}}}}}"#
        );
        let cases = [
            ("v1", "Pod", format!(r#""spec":{spec}"#)),
            ("v1", "PodTemplate", format!(r#""template":{tmpl}"#)),
            (
                "apps/v1",
                "Deployment",
                format!(r#""spec":{{"replicas":1,"template":{tmpl}}}"#),
            ),
            ("apps/v1", "StatefulSet", templated.clone()),
            ("apps/v1", "DaemonSet", templated.clone()),
            ("apps/v1", "ReplicaSet", templated.clone()),
            ("v1", "ReplicationController", templated.clone()),
            ("batch/v1", "Job", templated),
            ("batch/v1", "CronJob", cron),
        ];
        for (api, kind, body) in cases {
            // Both orders: kind first, and kind last (buffered).
            for json in [
                format!(
                    r#"{{"apiVersion":"{api}","kind":"{kind}","metadata":{{"name":"x"}},{body}}}"#
                ),
                format!(
                    r#"{{{body},"metadata":{{"name":"x"}},"apiVersion":"{api}","kind":"{kind}"}}"#
                ),
            ] {
                let Object::Workload(w) = obj(&json) else {
                    panic!("{kind}: not a workload");
                };
                assert_eq!(w.kind.as_str(), kind);
                assert_eq!(w.spec.containers[0].name, "c", "{kind}");
                let view = w.view();
                let a = view.pod.annotations.as_ref().map(|a| a.len());
                assert_eq!(a, if kind == "Pod" { None } else { Some(1) }, "{kind}");
            }
        }
    }

    #[test]
    fn config_maps_secrets_lists_others() {
        let Object::Secret { data, .. } = obj(
            r#"{"apiVersion":"v1","kind":"Secret","data":{"a":"aGk=","b":"eA=="},"stringData":{"b":"y"}}"#,
        ) else {
            panic!("secret");
        };
        assert_eq!(data.get("a").map(String::as_str), Some("hi"));
        assert_eq!(data.get("b").map(String::as_str), Some("y"));
        let Object::List(items) = obj(
            r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","data":{"k":"v"}},{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"c","env":[{"name":"A","value":5}]}]}}]}"#,
        ) else {
            panic!("list");
        };
        assert!(matches!(&items[0], Ok(Object::ConfigMap { data, .. }) if data["k"] == "v"));
        let err = items[1].as_ref().expect_err("bad item");
        assert!(err.starts_with("spec.containers[0].env[0].value:"), "{err}");
        assert!(matches!(
            obj(r#"{"apiVersion":"v1","kind":"Service","spec":{"x":[1]}}"#),
            Object::Other { .. }
        ));
    }

    #[test]
    fn errors() {
        for (json, want) in [
            (r#"{"kind":"Pod","spec":{}}"#, "apiVersion"),
            (r#"{"apiVersion":"v1"}"#, "kind"),
            (
                r#"{"apiVersion":"apps/v1","kind":"Deployment","spec":{}}"#,
                "no Pod spec at spec.template.spec",
            ),
            (
                r#"{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"c","env":[{"name":"A","value":true}]}]}}"#,
                "expected a string",
            ),
        ] {
            let err = serde_json::from_str::<Object>(json)
                .expect_err(json)
                .to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    fn pod_json(
        containers: usize,
        env_each: usize,
        env_from_each: usize,
        kind_last: bool,
    ) -> String {
        let container = |i: usize| {
            let env: Vec<String> = (0..env_each)
                .map(|j| format!(r#"{{"name":"V{j}","value":"x"}}"#))
                .collect();
            let env_from: Vec<String> = (0..env_from_each)
                .map(|j| format!(r#"{{"configMapRef":{{"name":"cm{j}"}}}}"#))
                .collect();
            format!(
                r#"{{"name":"c{i}","env":[{}],"envFrom":[{}]}}"#,
                env.join(","),
                env_from.join(",")
            )
        };
        let list: Vec<String> = (0..containers).map(container).collect();
        let spec = format!(r#""spec":{{"containers":[{}]}}"#, list.join(","));
        let head = r#""apiVersion":"v1","kind":"Pod""#;
        if kind_last {
            format!("{{{spec},{head}}}")
        } else {
            format!("{{{head},{spec}}}")
        }
    }

    /// What one object may hold is capped, in either field order, and the error names the
    /// cap; an object within the caps (the next one read on the same thread too) is fine.
    #[test]
    fn caps_on_what_an_object_holds() {
        for kind_last in [false, true] {
            for (json, want) in [
                (
                    pod_json(MAX_CONTAINERS + 1, 0, 0, kind_last),
                    "more than 100 containers in one list",
                ),
                (
                    pod_json(1, 0, MAX_ENV_FROM + 1, kind_last),
                    "more than 100 envFrom sources in one container",
                ),
                (
                    pod_json(1, MAX_ENV_PER_POD + 1, 0, kind_last),
                    "more than 10000 env entries in one Pod spec",
                ),
                // The cap is for the whole Pod spec, not each container.
                (
                    pod_json(11, 1_000, 0, kind_last),
                    "more than 10000 env entries in one Pod spec",
                ),
            ] {
                let err = serde_json::from_str::<Object>(&json)
                    .expect_err(want)
                    .to_string();
                assert!(err.contains(want), "{err}");
            }
            for _ in 0..3 {
                let ok = pod_json(10, 1_000, MAX_ENV_FROM, kind_last);
                let Object::Workload(w) = obj(&ok) else {
                    panic!("not a workload")
                };
                assert_eq!(w.spec.containers.len(), 10);
            }
        }
        // Outside an object (a bare Pod spec) only the per-list caps apply.
        let env = vec![r#"{"name":"A"}"#; MAX_ENV_PER_POD / 2 + 1].join(",");
        let spec = format!(
            r#"{{"containers":[{{"name":"a","env":[{env}]}},{{"name":"b","env":[{env}]}}]}}"#
        );
        assert!(serde_json::from_str::<PodSpec>(&spec).is_ok());
    }

    /// `spec` before `kind` reads the same as after it.
    #[test]
    fn field_order_does_not_matter() {
        let a = obj(&pod_json(2, 3, 1, false));
        let b = obj(&pod_json(2, 3, 1, true));
        assert_eq!(a, b);
    }
}
