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

use crate::fold::Folded;

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
    policies: Folded<String, PostgresTLSPolicy>,
    /// The policies by name, as requests read them: made again at every change of one
    /// (they are few and change rarely).
    list: ArcSwap<Vec<PostgresTLSPolicy>>,
    namespaces: Folded<String, Labels>,
    /// Woken whenever the namespace labels change (a Pod in a namespace created a moment
    /// ago waits for it).
    namespaces_changed: tokio::sync::Notify,
}

impl Policies {
    pub fn synced(&self) -> bool {
        self.policies.synced() && self.namespaces.synced()
    }

    /// Resolves at the next change of namespace labels (registered when called).
    pub fn namespaces_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.namespaces_changed.notified()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            policies: self.list.load_full(),
            namespaces: self.namespaces.snapshot(),
        }
    }

    pub fn apply_policy(&self, event: Event<PostgresTLSPolicy>) {
        self.policies.apply_then(
            event,
            |p| p.metadata.name.clone().unwrap_or_default(),
            |p| p,
            |all| self.publish(all),
        );
    }

    /// The policies in name order, as requests read them.
    fn publish(&self, all: &HashMap<String, PostgresTLSPolicy>) {
        let mut list: Vec<PostgresTLSPolicy> = all.values().cloned().collect();
        list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        self.list.store(Arc::new(list));
    }

    /// The CRD is not served: an empty, synced set.
    pub fn no_policies(&self) {
        if !self.policies.synced() {
            tracing::warn!(
                "the PostgresTLSPolicy CRD is not installed; judging workloads without policies"
            );
        }
        self.policies.clear_synced(|all| self.publish(all));
    }

    pub fn apply_namespace(&self, event: Event<PartialObjectMeta<Namespace>>) {
        self.namespaces.apply(
            event,
            |n| n.metadata.name.clone().unwrap_or_default(),
            |n| n.metadata.labels.unwrap_or_default(),
        );
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
