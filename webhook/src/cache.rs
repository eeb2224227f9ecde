//! ConfigMaps (and, when allowed, Secrets) for resolving `valueFrom`/`envFrom`, kept as
//! the engine needs them: ConfigMap values as they are (up to a size), Secret values
//! reduced by `policy::redact::reduce` (never a raw Secret value). Fed by watch
//! events; answers lookups from an immutable snapshot, so the request path takes no lock
//! and makes no API call.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::runtime::watcher::Event;
use policy::{Lookup, SourceData, SourceKind, ValueSource};

use crate::fold::Folded;

type Key = (String, String);
type Objects = HashMap<Key, Arc<SourceData>>;

/// One kind's objects, reduced to what the engine needs.
#[derive(Debug, Default)]
pub struct Store(Folded<Key, Arc<SourceData>>);

/// What the cache needs of an object: its key and data.
#[derive(Debug, Clone)]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    pub data: BTreeMap<String, String>,
}

impl From<k8s_openapi::api::core::v1::ConfigMap> for Entry {
    fn from(cm: k8s_openapi::api::core::v1::ConfigMap) -> Self {
        Entry {
            namespace: cm.metadata.namespace.unwrap_or_default(),
            name: cm.metadata.name.unwrap_or_default(),
            data: cm.data.unwrap_or_default(),
        }
    }
}

impl From<k8s_openapi::api::core::v1::Secret> for Entry {
    fn from(s: k8s_openapi::api::core::v1::Secret) -> Self {
        let mut data: BTreeMap<String, String> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        data.extend(s.string_data.unwrap_or_default());
        Entry {
            namespace: s.metadata.namespace.unwrap_or_default(),
            name: s.metadata.name.unwrap_or_default(),
            data,
        }
    }
}

impl Store {
    /// Folds one watch event in.
    pub fn apply(&self, kind: SourceKind, event: Event<Entry>) {
        self.0.apply(
            event,
            |e| (e.namespace.clone(), e.name.clone()),
            |e| Arc::new(policy::redact::reduce(kind, e.data)),
        );
    }

    pub fn synced(&self) -> bool {
        self.0.synced()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Keeps `store` in step with the cluster until the task is dropped. Watch errors are
/// retried with backoff; the store stays as it was meanwhile.
pub async fn watch<K>(api: kube::Api<K>, store: Arc<Caches>, kind: SourceKind)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    Entry: From<K>,
{
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let stream =
        kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let target = match kind {
        SourceKind::ConfigMap => Some(&store.config_maps),
        SourceKind::Secret => store.secrets.as_ref(),
    };
    let Some(target) = target else { return };
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => target.apply(kind, entry_event(event)),
            Err(e) => tracing::warn!(kind = kind.as_str(), error = %e, "watch failed; retrying"),
        }
    }
}

fn entry_event<K>(event: Event<K>) -> Event<Entry>
where
    Entry: From<K>,
{
    match event {
        Event::Apply(k) => Event::Apply(k.into()),
        Event::Delete(k) => Event::Delete(k.into()),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(k.into()),
        Event::InitDone => Event::InitDone,
    }
}

/// The caches of a webhook in cluster mode.
#[derive(Debug, Default)]
pub struct Caches {
    pub config_maps: Store,
    /// `None` unless reading Secrets is turned on.
    pub secrets: Option<Store>,
}

impl Caches {
    pub fn new(secrets: bool) -> Caches {
        Caches {
            config_maps: Store::default(),
            secrets: secrets.then(Store::default),
        }
    }

    pub fn synced(&self) -> bool {
        self.config_maps.synced() && self.secrets.as_ref().is_none_or(Store::synced)
    }

    /// An immutable view for one request.
    pub fn snapshot(&self) -> Snapshot {
        let view = |s: &Store| s.synced().then(|| s.0.snapshot());
        Snapshot {
            config_maps: view(&self.config_maps),
            secrets: self.secrets.as_ref().and_then(view),
        }
    }
}

/// The caches as one request sees them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    config_maps: Option<Arc<Objects>>,
    secrets: Option<Arc<Objects>>,
}

impl ValueSource for Snapshot {
    fn lookup(&self, kind: SourceKind, namespace: Option<&str>, name: &str) -> Lookup<'_> {
        let objects = match kind {
            SourceKind::ConfigMap => &self.config_maps,
            SourceKind::Secret => &self.secrets,
        };
        // Not watched, or not synced: unknown, never "missing".
        let Some(objects) = objects else {
            return Lookup::Unknown;
        };
        let key = (namespace.unwrap_or_default().to_string(), name.to_string());
        match objects.get(&key) {
            Some(data) => Lookup::Found(data),
            None => Lookup::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ns: &str, name: &str, data: &[(&str, &str)]) -> Entry {
        Entry {
            namespace: ns.into(),
            name: name.into(),
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn folds_watch_events_and_hides_secret_values() {
        let caches = Caches::new(true);
        let cm = SourceKind::ConfigMap;
        let snap = caches.snapshot();
        assert!(
            matches!(snap.lookup(cm, Some("a"), "db"), Lookup::Unknown),
            "not synced yet"
        );
        caches.config_maps.apply(cm, Event::Init);
        caches.config_maps.apply(
            cm,
            Event::InitApply(entry("a", "db", &[("PGSSLMODE", "disable")])),
        );
        assert!(!caches.synced());
        caches.config_maps.apply(cm, Event::InitDone);
        let s = SourceKind::Secret;
        let secrets = caches.secrets.as_ref().expect("secrets watched");
        secrets.apply(s, Event::Init);
        secrets.apply(
            s,
            Event::InitApply(entry(
                "a",
                "creds",
                &[
                    ("uri", "postgres://u:hunter2hunter2@db/app?sslmode=require"),
                    ("password", "hunter2hunter2"),
                ],
            )),
        );
        secrets.apply(s, Event::InitDone);
        assert!(caches.synced());
        let snap = caches.snapshot();
        match snap.lookup(cm, Some("a"), "db") {
            Lookup::Found(d) => assert_eq!(d["PGSSLMODE"], "disable"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(snap.lookup(cm, Some("b"), "db"), Lookup::Missing));
        match snap.lookup(s, Some("a"), "creds") {
            Lookup::Found(d) => {
                assert_eq!(d["uri"], "postgres://u@db/app?sslmode=require");
                assert!(!d.values().any(|v| v.contains("hunter2")));
            }
            other => panic!("{other:?}"),
        }
        // Later changes; an old snapshot stays as it was.
        caches.config_maps.apply(
            cm,
            Event::Apply(entry("a", "db", &[("PGSSLMODE", "verify-full")])),
        );
        caches
            .config_maps
            .apply(cm, Event::Delete(entry("a", "gone", &[])));
        assert!(
            matches!(snap.lookup(cm, Some("a"), "db"), Lookup::Found(d) if d["PGSSLMODE"] == "disable")
        );
        assert!(
            matches!(caches.snapshot().lookup(cm, Some("a"), "db"), Lookup::Found(d) if d["PGSSLMODE"] == "verify-full")
        );
        // Secrets not watched: unknown.
        let no_secrets = Caches::new(false);
        assert!(matches!(
            no_secrets.snapshot().lookup(s, Some("a"), "creds"),
            Lookup::Unknown
        ));
    }
}
