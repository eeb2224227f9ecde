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
    /// Folds one watch event in: `key` names an object, `value` is what is kept of it.
    pub fn apply<T>(&self, event: Event<T>, key: impl Fn(&T) -> K, value: impl Fn(T) -> V) {
        self.apply_then(event, key, value, |_| {});
    }

    /// [`Folded::apply`], and `then` with each new map requests will see, before they see
    /// it or the cache is called synced (what is made from the map is never behind it).
    pub fn apply_then<T>(
        &self,
        event: Event<T>,
        key: impl Fn(&T) -> K,
        value: impl Fn(T) -> V,
        then: impl FnOnce(&HashMap<K, V>),
    ) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let listed = matches!(event, Event::InitDone);
        let next = match event {
            Event::Init => {
                *pending = Some(HashMap::new());
                return;
            }
            Event::InitApply(t) => {
                let k = key(&t);
                pending.get_or_insert_with(HashMap::new).insert(k, value(t));
                return;
            }
            Event::InitDone => pending.take().unwrap_or_default(),
            Event::Apply(t) => {
                let mut next = HashMap::clone(&self.current.load());
                next.insert(key(&t), value(t));
                next
            }
            // A deleted object's value is not made.
            Event::Delete(t) => {
                let mut next = HashMap::clone(&self.current.load());
                next.remove(&key(&t));
                next
            }
        };
        then(&next);
        self.current.store(Arc::new(next));
        if listed {
            self.synced.store(true, Ordering::SeqCst);
        }
    }

    /// Empty, and synced: the watched kind does not exist. `then` as for
    /// [`Folded::apply_then`].
    pub fn clear_synced(&self, then: impl FnOnce(&HashMap<K, V>)) {
        let empty = HashMap::new();
        then(&empty);
        self.current.store(Arc::new(empty));
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

    /// Folds `e` in; whether requests now see another map.
    fn fold(f: &Folded<String, u32>, e: Event<(&str, u32)>) -> bool {
        let mut seen = false;
        f.apply_then(e, |(k, _)| k.to_string(), |(_, v)| v, |_| seen = true);
        seen
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
    }

    #[test]
    fn what_is_made_from_the_map_is_made_before_it_is_synced() {
        let f: Folded<String, u32> = Folded::default();
        fold(&f, Event::Init);
        fold(&f, Event::InitApply(("a", 1)));
        let mut made = None;
        f.apply_then(
            Event::InitDone,
            |(k, _): &(&str, u32)| k.to_string(),
            |(_, v)| v,
            |m| made = Some((m.len(), f.synced())),
        );
        assert_eq!(
            made,
            Some((1, false)),
            "made from the whole list, before synced"
        );
        assert!(f.synced());
        // No such kind: empty and synced, the map made first.
        let g: Folded<String, u32> = Folded::default();
        fold(&g, Event::Init);
        fold(&g, Event::InitApply(("a", 1)));
        let mut made = None;
        g.clear_synced(|m| made = Some((m.len(), g.synced())));
        assert_eq!(made, Some((0, false)));
        assert!(g.synced() && g.is_empty());
    }
}
