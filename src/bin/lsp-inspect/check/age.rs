//! [`AgeMap`]: a map with a fixed capacity that forgets its least recently
//! active entry to make room, the one way `lsp-inspect` bounds what it keeps
//! about traffic it does not control.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A hash map of at most `cap` entries, each stamped with when it was last
/// inserted or [touched](AgeMap::touch). Inserting a new key into a full map
/// evicts the entry touched longest ago and returns it. Every operation is a
/// hash look-up plus at most two ordered-map steps: O(log n), no scans.
#[derive(Debug)]
pub struct AgeMap<K, V> {
    map: HashMap<K, (u64, V)>,
    /// Keys by stamp, oldest first.
    order: BTreeMap<u64, K>,
    next: u64,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> AgeMap<K, V> {
    /// An empty map holding at most `cap` entries (at least one).
    pub fn new(cap: usize) -> AgeMap<K, V> {
        AgeMap {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn stamp(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Whether `k` is held (does not count as activity).
    pub fn contains_key(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// The value of `k` (does not count as activity).
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(_, v)| v)
    }

    /// The value of `k`, to change (does not count as activity).
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(_, v)| v)
    }

    /// When `k` was last active, as a number that grows with each activity.
    pub fn age_of(&self, k: &K) -> Option<u64> {
        self.map.get(k).map(|(s, _)| *s)
    }

    /// Marks `k` as the most recently active entry; returns its value.
    pub fn touch(&mut self, k: &K) -> Option<&mut V> {
        let s = self.stamp();
        let (stamp, v) = self.map.get_mut(k)?;
        let key = self.order.remove(stamp).unwrap_or_else(|| k.clone());
        self.order.insert(s, key);
        *stamp = s;
        Some(v)
    }

    /// Inserts (or replaces) `k` as the most recently active entry; returns
    /// the entry evicted to make room, if one was.
    pub fn insert(&mut self, k: K, v: V) -> Option<(K, V)> {
        let s = self.stamp();
        match self.map.entry(k.clone()) {
            Entry::Occupied(mut e) => {
                let old = e.get().0;
                self.order.remove(&old);
                e.insert((s, v));
                self.order.insert(s, k);
                None
            }
            Entry::Vacant(e) => {
                e.insert((s, v));
                self.order.insert(s, k);
                if self.map.len() > self.cap {
                    self.pop_oldest()
                } else {
                    None
                }
            }
        }
    }

    /// The value of `k`, inserted with `make` (as the most recently active
    /// entry, evicting the oldest when full, which goes to `evicted`) if it
    /// is missing. An existing entry is touched.
    pub fn touch_or_insert_with(
        &mut self,
        k: &K,
        make: impl FnOnce() -> V,
        evicted: impl FnOnce(K, V),
    ) -> &mut V {
        if self.touch(k).is_none() {
            if let Some((ek, ev)) = self.insert(k.clone(), make()) {
                evicted(ek, ev);
            }
        }
        // Just touched or inserted, and the newest is never the one evicted.
        self.get_mut(k).expect("present")
    }

    /// Removes `k`; returns its value.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (s, v) = self.map.remove(k)?;
        self.order.remove(&s);
        Some(v)
    }

    /// The least recently active key.
    pub fn oldest(&self) -> Option<&K> {
        self.order.values().next()
    }

    /// Removes and returns the least recently active entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        let (_, k) = self.order.pop_first()?;
        let (_, v) = self.map.remove(&k)?;
        Some((k, v))
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, (_, v))| (k, v))
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(_, v)| v)
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::AgeMap;

    #[test]
    fn evicts_the_least_recently_active() {
        let mut m = AgeMap::new(3);
        for k in 0..3 {
            assert!(m.insert(k, k * 10).is_none());
        }
        m.touch(&0); // 1 is now the oldest
        assert_eq!(m.insert(3, 30), Some((1, 10)));
        assert_eq!(m.insert(0, 1), None); // a replacement evicts nothing
        assert_eq!(m.len(), 3);
        assert_eq!(m.oldest(), Some(&2));
        assert_eq!(m.remove(&2), Some(20));
        assert_eq!(m.pop_oldest(), Some((3, 30)));
        let mut gone = Vec::new();
        *m.touch_or_insert_with(&5, || 50, |k, v| gone.push((k, v))) += 1;
        assert_eq!(m.get(&5), Some(&51));
        assert!(gone.is_empty());
        assert!(m.age_of(&5) > m.age_of(&0));
    }
}
