//! A map kept in step with a watch and read from immutable snapshots, for every cache the
//! webhook keeps (ConfigMaps, Secrets, policies, namespace labels): a request takes a
//! snapshot without a lock and never sees half a change; a relist is built aside and
//! swapped in whole when its last object has arrived.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use kube::runtime::watcher::Event;

#[derive(Debug)]
pub struct Folded<K, V> {
    current: ArcSwap<HashMap<K, V>>,
    /// A relist in progress.
    pending: std::sync::Mutex<Option<HashMap<K, V>>>,
    synced: AtomicBool,
}

impl<K, V> Default for Folded<K, V> {
    fn default() -> Self {
        Folded {
            current: ArcSwap::from_pointee(HashMap::new()),
            pending: std::sync::Mutex::new(None),
            synced: AtomicBool::new(false),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Folded<K, V> {
    /// Folds one watch event in; `entry` makes an object's key and value (a deleted
    /// object's value is not kept). `true` when requests now see another map.
    pub fn apply<T>(&self, event: Event<T>, entry: impl Fn(T) -> (K, V)) -> bool {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Event::Init => {
                *pending = Some(HashMap::new());
                return false;
            }
            Event::InitApply(t) => {
                let (k, v) = entry(t);
                pending.get_or_insert_with(HashMap::new).insert(k, v);
                return false;
            }
            Event::InitDone => {
                self.current
                    .store(Arc::new(pending.take().unwrap_or_default()));
                self.synced.store(true, Ordering::SeqCst);
            }
            Event::Apply(t) => {
                let (k, v) = entry(t);
                let mut next = HashMap::clone(&self.current.load());
                next.insert(k, v);
                self.current.store(Arc::new(next));
            }
            Event::Delete(t) => {
                let (k, _) = entry(t);
                let mut next = HashMap::clone(&self.current.load());
                next.remove(&k);
                self.current.store(Arc::new(next));
            }
        }
        true
    }

    /// Empty, and synced: the watched kind does not exist.
    pub fn clear_synced(&self) {
        self.current.store(Arc::new(HashMap::new()));
        self.synced.store(true, Ordering::SeqCst);
    }

    pub fn snapshot(&self) -> Arc<HashMap<K, V>> {
        self.current.load_full()
    }

    /// Whether the first list has completed.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(f: &Folded<String, u32>, e: Event<(&str, u32)>) -> bool {
        f.apply(e, |(k, v)| (k.to_string(), v))
    }

    #[test]
    fn a_relist_is_seen_whole_and_changes_one_at_a_time() {
        let f = Folded::default();
        assert!(!f.synced());
        assert!(!fold(&f, Event::Init));
        assert!(!fold(&f, Event::InitApply(("a", 1))));
        assert!(f.is_empty(), "nothing before the list is whole");
        assert!(fold(&f, Event::InitDone));
        assert!(f.synced());
        let before = f.snapshot();
        assert!(fold(&f, Event::Apply(("b", 2))));
        assert!(fold(&f, Event::Apply(("a", 3))));
        assert_eq!(before.len(), 1, "a snapshot taken earlier does not change");
        assert_eq!(f.snapshot().get("a"), Some(&3));
        // A relist replaces everything when it completes: "b" is gone.
        fold(&f, Event::Init);
        fold(&f, Event::InitApply(("a", 4)));
        assert_eq!(
            f.len(),
            2,
            "the old map is served until the relist is whole"
        );
        fold(&f, Event::InitDone);
        assert_eq!(*f.snapshot(), HashMap::from([("a".to_string(), 4)]));
        assert!(fold(&f, Event::Delete(("a", 0))));
        assert!(f.is_empty());
        f.clear_synced();
        assert!(f.synced() && f.is_empty());
    }
}
