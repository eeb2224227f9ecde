//! `PostgresTLSPolicy` objects and Namespace labels, for judging workloads as they will run
//! and for injecting the CA into Pods (`--watch-policies`). Watch-fed, read from immutable
//! snapshots like the value caches.

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use policy::crd::PostgresTLSPolicy;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

type Labels = BTreeMap<String, String>;

/// Policies and namespace labels as one request sees them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub policies: Arc<Vec<PostgresTLSPolicy>>,
    pub namespaces: Arc<HashMap<String, Labels>>,
}

impl Snapshot {
    pub fn namespace_labels(&self, ns: &str) -> Option<&Labels> {
        self.namespaces.get(ns)
    }
}

/// The watched state.
#[derive(Debug, Default)]
pub struct Policies {
    policies: ArcSwap<Vec<PostgresTLSPolicy>>,
    namespaces: ArcSwap<HashMap<String, Labels>>,
    pending_policies: std::sync::Mutex<Option<Vec<PostgresTLSPolicy>>>,
    pending_namespaces: std::sync::Mutex<Option<HashMap<String, Labels>>>,
    policies_synced: AtomicBool,
    namespaces_synced: AtomicBool,
    /// Woken whenever the namespace labels change (a Pod in a namespace created a moment
    /// ago waits for it).
    namespaces_changed: tokio::sync::Notify,
}

fn name(p: &PostgresTLSPolicy) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

impl Policies {
    pub fn synced(&self) -> bool {
        self.policies_synced.load(Ordering::SeqCst) && self.namespaces_synced.load(Ordering::SeqCst)
    }

    /// Resolves at the next change of namespace labels (registered when called).
    pub fn namespaces_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.namespaces_changed.notified()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            policies: self.policies.load_full(),
            namespaces: self.namespaces.load_full(),
        }
    }

    pub fn apply_policy(&self, event: Event<PostgresTLSPolicy>) {
        let mut pending = self
            .pending_policies
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Init => *pending = Some(Vec::new()),
            Event::InitApply(p) => pending.get_or_insert_with(Vec::new).push(p),
            Event::InitDone => {
                self.policies
                    .store(Arc::new(pending.take().unwrap_or_default()));
                self.policies_synced.store(true, Ordering::SeqCst);
            }
            Event::Apply(p) => {
                let mut next: Vec<PostgresTLSPolicy> = self
                    .policies
                    .load()
                    .iter()
                    .filter(|q| name(q) != name(&p))
                    .cloned()
                    .collect();
                next.push(p);
                self.policies.store(Arc::new(next));
            }
            Event::Delete(p) => {
                let next: Vec<PostgresTLSPolicy> = self
                    .policies
                    .load()
                    .iter()
                    .filter(|q| name(q) != name(&p))
                    .cloned()
                    .collect();
                self.policies.store(Arc::new(next));
            }
        }
    }

    /// The CRD is not served: an empty, synced set.
    pub fn no_policies(&self) {
        if !self.policies_synced.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "the PostgresTLSPolicy CRD is not installed; judging workloads without policies"
            );
        }
        self.policies.store(Arc::new(Vec::new()));
    }

    pub fn apply_namespace(&self, event: Event<PartialObjectMeta<Namespace>>) {
        let entry = |n: PartialObjectMeta<Namespace>| {
            (
                n.metadata.name.unwrap_or_default(),
                n.metadata.labels.unwrap_or_default(),
            )
        };
        let mut pending = self
            .pending_namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Init => *pending = Some(HashMap::new()),
            Event::InitApply(n) => {
                let (k, v) = entry(n);
                pending.get_or_insert_with(HashMap::new).insert(k, v);
            }
            Event::InitDone => {
                self.namespaces
                    .store(Arc::new(pending.take().unwrap_or_default()));
                self.namespaces_synced.store(true, Ordering::SeqCst);
            }
            Event::Apply(n) => {
                let (k, v) = entry(n);
                let mut next = HashMap::clone(&self.namespaces.load());
                next.insert(k, v);
                self.namespaces.store(Arc::new(next));
            }
            Event::Delete(n) => {
                let mut next = HashMap::clone(&self.namespaces.load());
                next.remove(n.metadata.name.as_deref().unwrap_or_default());
                self.namespaces.store(Arc::new(next));
            }
        }
        self.namespaces_changed.notify_waiters();
    }
}

/// Keeps `store` in step with the cluster's policies and namespaces until dropped.
pub async fn watch(client: kube::Client, store: Arc<Policies>) {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let policies = watcher::watcher(
        kube::Api::<PostgresTLSPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let namespaces = watcher::watcher(
        kube::Api::<PartialObjectMeta<Namespace>>::all(client),
        watcher::Config::default(),
    )
    .default_backoff();
    let (s1, s2) = (store.clone(), store);
    let p = policies.for_each(move |e| {
        match e {
            Ok(e) => s1.apply_policy(e),
            // No CRD (yet): no policies. The webhook stays ready and judges workloads as
            // they are; the watch retries and picks the CRD up once it is installed.
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {
                s1.no_policies();
            }
            Err(e) => tracing::warn!(error = %e, "watching PostgresTLSPolicies failed; retrying"),
        }
        futures::future::ready(())
    });
    let n = namespaces.for_each(move |e| {
        match e {
            Ok(e) => s2.apply_namespace(e),
            Err(e) => tracing::warn!(error = %e, "watching Namespaces failed; retrying"),
        }
        futures::future::ready(())
    });
    futures::join!(p, n);
}
