//! Objects, resource versions, the change log watches replay from, and watch fan-out.

use super::resources::{ResKey, ResourceDef};
use super::selector::Selector;
use bytes::Bytes;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;

/// An object as stored: the value and its serialization, made once per write.
#[derive(Debug)]
pub struct Stored {
    pub value: Value,
    pub json: Bytes,
    pub rv: u64,
}

impl Stored {
    pub fn new(value: Value, rv: u64) -> Arc<Stored> {
        let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Arc::new(Stored { value, json, rv })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Change {
    pub key: ResKey,
    pub namespace: String,
    pub typ: EventType,
    pub obj: Arc<Stored>,
    pub old: Option<Arc<Stored>>,
}

/// A watch's filter.
#[derive(Debug, Clone)]
pub struct Filter {
    pub key: ResKey,
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Selector,
}

impl Filter {
    fn matches(&self, namespace: &str, obj: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    /// The event this watcher sees for a change, if any: an object that stops matching
    /// is DELETED for it, one that starts matching is ADDED.
    pub fn event(&self, c: &Change) -> Option<EventType> {
        if c.key != self.key {
            return None;
        }
        let now = self.matches(&c.namespace, &c.obj.value);
        let before = c
            .old
            .as_ref()
            .is_some_and(|o| self.matches(&c.namespace, &o.value));
        match (c.typ, before, now) {
            (EventType::Deleted, _, true) => Some(EventType::Deleted),
            (EventType::Deleted, _, false) => None,
            (_, true, true) => Some(EventType::Modified),
            (_, false, true) => Some(EventType::Added),
            (_, true, false) => Some(EventType::Deleted),
            (_, false, false) => None,
        }
    }
}

/// A line of a watch stream.
pub fn watch_line(typ: &str, obj: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(obj.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(typ.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(obj);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

#[derive(Debug)]
struct Watcher {
    filter: Filter,
    tx: mpsc::UnboundedSender<Bytes>,
}

type Table = BTreeMap<(String, String), Arc<Stored>>;

/// Everything the stand-in stores, behind one lock.
#[derive(Debug)]
pub struct State {
    pub rv: u64,
    tables: HashMap<ResKey, Table>,
    log: VecDeque<Arc<Change>>,
    log_cap: usize,
    /// Watches from at or below this resource version get `410 Gone`.
    pub compacted: u64,
    watchers: Vec<Watcher>,
    /// Controllers see every change.
    internal: Vec<mpsc::UnboundedSender<Arc<Change>>>,
    pub defs: Vec<ResourceDef>,
}

impl State {
    pub fn new(defs: Vec<ResourceDef>, log_cap: usize) -> State {
        State {
            rv: 1,
            tables: HashMap::new(),
            log: VecDeque::new(),
            log_cap,
            compacted: 0,
            watchers: Vec::new(),
            internal: Vec::new(),
            defs,
        }
    }

    pub fn get(&self, key: &ResKey, ns: &str, name: &str) -> Option<Arc<Stored>> {
        self.tables
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a resource in key order, optionally in one namespace, starting after
    /// `after` (a `continue` position).
    pub fn range<'a>(
        &'a self,
        key: &ResKey,
        ns: Option<&'a str>,
        after: Option<(String, String)>,
    ) -> impl Iterator<Item = (&'a (String, String), &'a Arc<Stored>)> + 'a {
        use std::ops::Bound;
        let table = self.tables.get(key);
        let start = match (&after, ns) {
            (Some(a), _) => Bound::Excluded(a.clone()),
            (None, Some(n)) => Bound::Included((n.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        table
            .into_iter()
            .flat_map(move |t| t.range((start.clone(), Bound::Unbounded)))
            .take_while(move |((n, _), _)| ns.is_none_or(|want| n == want))
    }

    pub fn count(&self, key: &ResKey) -> usize {
        self.tables.get(key).map_or(0, BTreeMap::len)
    }

    /// Commits a new state of an object (or its deletion) and tells the watchers.
    pub fn commit(
        &mut self,
        key: &ResKey,
        ns: &str,
        name: &str,
        typ: EventType,
        mut value: Value,
    ) -> Arc<Stored> {
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let stored = Stored::new(value, rv);
        let table = self.tables.entry(key.clone()).or_default();
        let id = (ns.to_string(), name.to_string());
        let old = if typ == EventType::Deleted {
            table.remove(&id)
        } else {
            table.insert(id, stored.clone())
        };
        let change = Arc::new(Change {
            key: key.clone(),
            namespace: ns.to_string(),
            typ,
            obj: stored.clone(),
            old,
        });
        self.watchers.retain(|w| match w.filter.event(&change) {
            Some(t) => w.tx.send(watch_line(t.as_str(), &change.obj.json)).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.internal.retain(|tx| tx.send(change.clone()).is_ok());
        self.log.push_back(change);
        while self.log.len() > self.log_cap {
            if let Some(c) = self.log.pop_front() {
                self.compacted = c.obj.rv;
            }
        }
        stored
    }

    /// Starts a watch from `since`: replays newer changes, then follows. `Err` carries the
    /// oldest resource version still retained when `since` is older (the client must list
    /// again).
    pub fn watch(
        &mut self,
        filter: Filter,
        since: Option<u64>,
        tx: mpsc::UnboundedSender<Bytes>,
    ) -> Result<(), u64> {
        match since {
            Some(rv) if rv < self.compacted => return Err(self.compacted + 1),
            Some(rv) => {
                for c in self.log.iter().filter(|c| c.obj.rv > rv) {
                    if let Some(t) = filter.event(c) {
                        let _ = tx.send(watch_line(t.as_str(), &c.obj.json));
                    }
                }
            }
            None => {
                // No resource version: start with every existing object as ADDED.
                let ns = filter.namespace.clone();
                for (_, o) in self.range(&filter.key, ns.as_deref(), None) {
                    if filter.labels.matches(&o.value) && filter.fields.matches(&o.value) {
                        let _ = tx.send(watch_line("ADDED", &o.json));
                    }
                }
            }
        }
        self.watchers.push(Watcher { filter, tx });
        Ok(())
    }

    /// What an API server restart does to watches: every one ends, and the change log is
    /// gone (a watch from any earlier resource version gets `410 Gone`; clients list again).
    pub fn restart(&mut self) {
        self.watchers.clear();
        self.log.clear();
        self.compacted = self.rv;
    }

    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<Arc<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.internal.push(tx);
        rx
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    pub fn def(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// The definition objects of a resource are stored under (its storage version).
    pub fn storage_def(&self, key: &ResKey) -> Option<&ResourceDef> {
        let mut of_key = self
            .defs
            .iter()
            .filter(|d| d.group == key.0 && d.plural == key.1);
        let first = of_key.next()?;
        Some(
            std::iter::once(first)
                .chain(of_key)
                .find(|d| d.storage)
                .unwrap_or(first),
        )
    }
}
