//! The output cache: node outputs keyed by class + literal inputs + upstream keys.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use abi_stable::std_types::RVec;
use odelt_contract::Value;
use serde_json::Value as Json;

use crate::validate::{Plan, PlanInput};

/// A cache key (128-bit hash of the node's class, literal inputs and upstream keys).
pub type CacheKey = u128;

/// A node's outputs as stored in the cache and returned to callers.
#[derive(Debug)]
pub struct CacheEntry {
    /// One value per declared output.
    pub values: RVec<Value>,
    /// The UI payload of an output node.
    pub ui: Option<Json>,
}

struct Slot {
    entry: Arc<CacheEntry>,
    last_used: u64,
}

/// Cached outputs. Entries not used by one of the last `keep_runs` runs are evicted when a
/// run ends (entries of runs still in progress are kept); `keep_runs == 0` disables caching.
pub(crate) struct OutputCache {
    map: HashMap<CacheKey, Slot>,
    keep_runs: u64,
    active: BTreeSet<u64>,
}

impl OutputCache {
    pub(crate) fn new(keep_runs: u32) -> Self {
        OutputCache {
            map: HashMap::new(),
            keep_runs: keep_runs as u64,
            active: BTreeSet::new(),
        }
    }

    pub(crate) fn begin_run(&mut self, run: u64) {
        self.active.insert(run);
    }

    pub(crate) fn get(&mut self, key: CacheKey, run: u64) -> Option<Arc<CacheEntry>> {
        let slot = self.map.get_mut(&key)?;
        slot.last_used = slot.last_used.max(run);
        Some(slot.entry.clone())
    }

    pub(crate) fn insert(&mut self, key: CacheKey, entry: Arc<CacheEntry>, run: u64) {
        if self.keep_runs > 0 {
            self.map.insert(
                key,
                Slot {
                    entry,
                    last_used: run,
                },
            );
        }
    }

    pub(crate) fn end_run(&mut self, run: u64) {
        self.active.remove(&run);
        let keep_from = run.saturating_sub(self.keep_runs.saturating_sub(1));
        let active = &self.active;
        self.map
            .retain(|_, s| s.last_used >= keep_from || active.contains(&s.last_used));
    }

    /// Drops every entry (their handles are released); returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.map.len();
        self.map.clear();
        n
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

struct KeyHasher(
    std::collections::hash_map::DefaultHasher,
    std::collections::hash_map::DefaultHasher,
);

impl KeyHasher {
    fn new() -> Self {
        let a = std::collections::hash_map::DefaultHasher::new();
        let mut b = std::collections::hash_map::DefaultHasher::new();
        0x6f_6465_6c74_u64.hash(&mut b);
        KeyHasher(a, b)
    }
    fn add<T: Hash + ?Sized>(&mut self, v: &T) {
        v.hash(&mut self.0);
        v.hash(&mut self.1);
    }
    fn finish(&self) -> CacheKey {
        ((self.0.finish() as u128) << 64) | self.1.finish() as u128
    }
}

/// Computes the cache key of every plan node (plan order is topological). Nodes marked
/// `always_run` get a key unique to this run, so they and everything downstream re-run.
pub(crate) fn compute_keys(plan: &Plan, run: u64) -> Vec<CacheKey> {
    let mut keys: Vec<CacheKey> = Vec::with_capacity(plan.nodes.len());
    for (i, node) in plan.nodes.iter().enumerate() {
        let mut h = KeyHasher::new();
        h.add(node.class_type.as_str());
        let mut inputs: Vec<&(String, PlanInput)> = node.inputs.iter().collect();
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, input) in inputs {
            h.add(name.as_str());
            match input {
                PlanInput::Literal(_, canon) => {
                    h.add(&0u8);
                    h.add(canon.to_string().as_str());
                }
                PlanInput::Link { node, output, .. } => {
                    h.add(&1u8);
                    h.add(&keys[*node]);
                    h.add(output);
                }
            }
        }
        if node.info.odelt.always_run {
            h.add(&run);
            h.add(&i);
            h.add(&u64::MAX);
        }
        keys.push(h.finish());
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Arc<CacheEntry> {
        Arc::new(CacheEntry {
            values: RVec::new(),
            ui: None,
        })
    }

    #[test]
    fn keeps_entries_of_recent_and_active_runs() {
        let mut c = OutputCache::new(1);
        c.begin_run(1);
        c.insert(1, entry(), 1);
        c.end_run(1);
        assert_eq!(c.len(), 1);
        c.begin_run(2);
        c.begin_run(3);
        c.insert(2, entry(), 2);
        assert!(c.get(1, 3).is_some());
        c.end_run(3);
        assert_eq!(c.len(), 2, "key 2 belongs to run 2, still active");
        c.end_run(2);
        assert_eq!(c.len(), 2);
        c.begin_run(4);
        assert!(c.get(2, 4).is_some());
        c.end_run(4);
        assert_eq!(c.len(), 1, "key 1 was last used by run 3 and is evicted");
        assert!(c.get(1, 5).is_none());
        assert_eq!(c.clear(), 1);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn zero_keep_disables_caching() {
        let mut c = OutputCache::new(0);
        c.insert(1, entry(), 1);
        assert_eq!(c.len(), 0);
    }
}
