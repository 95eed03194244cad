//! A hash map keyed by strings that never grows all at once.
//!
//! A hash table grows by moving every entry into a table twice the size, and
//! needs each entry's hash to place it. Recomputing it means reading the key
//! from wherever it was allocated, a cache miss per entry: the node table of
//! a 1.8M-znode tree took 240 ms to grow, a parent's 1.8M-name child set
//! 310 ms, and the replica answered nothing meanwhile (each replica, and the
//! sequencer's `LatestTree`, in turn).
//!
//! So a map reaching `SPLIT_AT` entries is split into `SHARDS` tables, chosen by
//! bits of the hash that hashbrown uses for neither the bucket nor the tag,
//! and each grows on its own: no growth moves more than about 1/`SHARDS` of
//! the entries (splitting itself moves `SPLIT_AT`, once). Keeping each
//! entry's hash instead would cost 8 bytes per entry in every replica and
//! still move them all.

use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

/// Tables of a split map.
pub const SHARDS: usize = 256;
/// Entries past which a map splits.
pub const SPLIT_AT: usize = 1 << 15;
/// Where the shard index sits in the hash: above any bucket index a table
/// of under 2^40 buckets uses (the low bits), below the 7-bit tag (the top
/// bits), so entries of one shard still differ in both.
const SHARD_SHIFT: u32 = 40;
const _: () = assert!(SHARDS.is_power_of_two() && SHARDS <= 1 << (64 - 7 - SHARD_SHIFT));

/// A key hashed and compared by a string it stands for (a path, or a
/// child's name within its full path).
pub trait TableKey {
    fn key(&self) -> &str;
}

impl TableKey for std::sync::Arc<str> {
    fn key(&self) -> &str {
        self
    }
}

#[derive(Clone)]
pub struct SplitMap<K, V> {
    tables: Tables<K, V>,
    hasher: DefaultHashBuilder,
    len: usize,
}

#[derive(Clone)]
enum Tables<K, V> {
    One(HashTable<(K, V)>),
    Split(Box<[HashTable<(K, V)>]>),
}

impl<K, V> Default for SplitMap<K, V> {
    fn default() -> Self {
        SplitMap { tables: Tables::One(HashTable::new()), hasher: DefaultHashBuilder::default(), len: 0 }
    }
}

impl<K: TableKey, V> SplitMap<K, V> {
    pub fn with_capacity(capacity: usize) -> Self {
        let tables = if capacity > SPLIT_AT {
            Tables::Split((0..SHARDS).map(|_| HashTable::with_capacity(capacity / SHARDS + 1)).collect())
        } else {
            Tables::One(HashTable::with_capacity(capacity))
        };
        SplitMap { tables, hasher: DefaultHashBuilder::default(), len: 0 }
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn table(&self, hash: u64) -> &HashTable<(K, V)> {
        match &self.tables {
            Tables::One(table) => table,
            Tables::Split(tables) => &tables[shard(hash)],
        }
    }

    fn table_mut(&mut self, hash: u64) -> &mut HashTable<(K, V)> {
        match &mut self.tables {
            Tables::One(table) => table,
            Tables::Split(tables) => &mut tables[shard(hash)],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        let hash = self.hash(key);
        self.table(hash).find(hash, |(k, _)| k.key() == key).map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let hash = self.hash(key);
        self.table_mut(hash).find_mut(hash, |(k, _)| k.key() == key).map(|(_, value)| value)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Inserts `key`; if it was there, its value is replaced (the key kept)
    /// and the old value returned.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.try_insert(key, value) {
            Ok(()) => None,
            Err((present, value)) => Some(std::mem::replace(present, value)),
        }
    }

    /// Inserts `key` if it is not there: one lookup where `contains_key`
    /// then `insert` take two. If it is, nothing changes and the value
    /// present comes back with the one not inserted.
    pub fn try_insert(&mut self, key: K, value: V) -> Result<(), (&mut V, V)> {
        // Split before the insert that could take it past `SPLIT_AT` (the
        // borrow of an entry found cannot outlive a split after it).
        if self.len >= SPLIT_AT {
            self.split();
        }
        let hash = self.hash(key.key());
        let SplitMap { tables, hasher, len } = self;
        let table = match tables {
            Tables::One(table) => table,
            Tables::Split(tables) => &mut tables[shard(hash)],
        };
        match table.entry(hash, |(k, _)| k.key() == key.key(), |(k, _)| hasher.hash_one(k.key())) {
            Entry::Occupied(entry) => return Err((&mut entry.into_mut().1, value)),
            Entry::Vacant(entry) => {
                entry.insert((key, value));
                *len += 1;
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let hash = self.hash(key);
        let removed = match self.table_mut(hash).find_entry(hash, |(k, _)| k.key() == key) {
            Ok(entry) => Some(entry.remove().0 .1),
            Err(_) => None,
        };
        self.len -= removed.is_some() as usize;
        removed
    }

    /// Moves a single table's entries into `SHARDS` tables (once per map).
    fn split(&mut self) {
        let Tables::One(table) = &mut self.tables else { return };
        let one = std::mem::take(table);
        let mut tables: Box<[HashTable<(K, V)>]> =
            (0..SHARDS).map(|_| HashTable::with_capacity(2 * SPLIT_AT / SHARDS)).collect();
        for (key, value) in one {
            let hash = self.hasher.hash_one(key.key());
            tables[shard(hash)].insert_unique(hash, (key, value), |(k, _)| self.hasher.hash_one(k.key()));
        }
        self.tables = Tables::Split(tables);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let tables = match &self.tables {
            Tables::One(table) => std::slice::from_ref(table),
            Tables::Split(tables) => &tables[..],
        };
        tables.iter().flat_map(|table| table.iter()).map(|(key, value)| (key, value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(key, _)| key)
    }
}

fn shard(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize & (SHARDS - 1)
}

impl<K: TableKey, V: PartialEq> PartialEq for SplitMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(key, value)| other.get(key.key()) == Some(value))
    }
}

impl<K: TableKey, V: Eq> Eq for SplitMap<K, V> {}

impl<K: TableKey, V: std::fmt::Debug> std::fmt::Debug for SplitMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter().map(|(key, value)| (key.key(), value))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The map against hashbrown's own HashMap through random inserts,
    /// replacements, removals and lookups, across the split and the shards'
    /// own growth.
    #[test]
    fn behaves_as_a_hash_map() {
        let mut rng = crate::rng::Rng::new(7);
        let mut map: SplitMap<Arc<str>, u64> = SplitMap::default();
        let mut model: hashbrown::HashMap<String, u64> = hashbrown::HashMap::new();
        let keys = 4 * SPLIT_AT as u64;
        for step in 0..(12 * keys) {
            let key = format!("/k{}", rng.below(keys));
            match rng.below(6) {
                0..=2 => assert_eq!(map.insert(key.as_str().into(), step), model.insert(key, step)),
                3 => {
                    let present = model.get(&key).copied();
                    match map.try_insert(key.as_str().into(), step) {
                        Ok(()) => assert_eq!((present, model.insert(key, step)), (None, None)),
                        Err((value, refused)) => assert_eq!((Some(*value), refused), (present, step)),
                    }
                }
                4 => assert_eq!(map.remove(&key), model.remove(&key)),
                _ => assert_eq!(map.get(&key), model.get(&key)),
            }
            assert_eq!(map.len(), model.len());
        }
        assert!(matches!(map.tables, Tables::Split(_)), "{} entries and not split", map.len());
        for (key, value) in map.iter() {
            assert_eq!(model.get(&**key), Some(value));
        }
        assert_eq!(map.keys().count(), model.len());
        let copy = map.clone();
        assert_eq!(copy, map);
        let some_key = map.keys().next().unwrap().to_string();
        *map.get_mut(&some_key).unwrap() += 1;
        assert_ne!(copy, map);
    }

    /// Past the split, entries spread over every shard and no shard holds
    /// much more than its share: a growth moves only a small part.
    #[test]
    fn a_split_map_spreads_its_entries() {
        let mut map: SplitMap<Arc<str>, ()> = SplitMap::default();
        let count = 16 * SPLIT_AT;
        for index in 0..count {
            map.insert(format!("/parent/node-{index:010}").into(), ());
        }
        let Tables::Split(tables) = &map.tables else { panic!("not split") };
        let largest = tables.iter().map(HashTable::len).max().unwrap();
        let smallest = tables.iter().map(HashTable::len).min().unwrap();
        let share = count / SHARDS;
        assert!(smallest > share / 2 && largest < 2 * share, "shards hold {smallest}..{largest}, share {share}");
        let presized: SplitMap<Arc<str>, ()> = SplitMap::with_capacity(count);
        assert!(matches!(presized.tables, Tables::Split(_)));
    }
}
