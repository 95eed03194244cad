//! WatchManager: which watcher (a connection, within one shard) watches which
//! path, in which mode, and which watchers a tree change notifies. Follows
//! ZooKeeper's split into a data-watch table (getData, exists, and all
//! persistent modes) and a child-watch table (getChildren and PERSISTENT), and
//! its modes: STANDARD watches fire once, PERSISTENT ones stay, and
//! PERSISTENT_RECURSIVE ones (data table only) also fire for every descendant,
//! never for NodeChildrenChanged. Pure bookkeeping: events are returned.

use hashbrown::{HashMap, HashSet};
use smallvec::SmallVec;

use crate::proto::codes::{event, watcher_type};
use crate::tree::{path, Trigger};

pub type WatcherId = u64;

const MODE_STANDARD: u8 = 1;
const MODE_PERSISTENT: u8 = 2;
const MODE_PERSISTENT_RECURSIVE: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Data,
    Child,
}

#[derive(Default)]
struct WatchTable {
    /// path -> watcher -> mode bits.
    by_path: HashMap<String, HashMap<WatcherId, u8>>,
}

impl WatchTable {
    fn add(&mut self, path: &str, watcher: WatcherId, mode: u8) -> bool {
        let modes = self.by_path.entry_ref(path).or_default().entry(watcher).or_insert(0);
        let added = *modes & mode == 0;
        *modes |= mode;
        added
    }

    /// Clears `mode` bits (all bits when `mode` is 0xff); true if any were set.
    fn remove(&mut self, path: &str, watcher: WatcherId, mode: u8) -> bool {
        let Some(watchers) = self.by_path.get_mut(path) else { return false };
        let Some(modes) = watchers.get_mut(&watcher) else { return false };
        let removed = *modes & mode != 0;
        *modes &= !mode;
        if *modes == 0 {
            watchers.remove(&watcher);
            if watchers.is_empty() {
                self.by_path.remove(path);
            }
        }
        removed
    }

    fn contains(&self, path: &str, watcher: WatcherId, mode: u8) -> bool {
        self.by_path.get(path).and_then(|watchers| watchers.get(&watcher)).is_some_and(|modes| modes & mode != 0)
    }

    /// Collects the watchers a change at `changed_path` notifies into `out`,
    /// skipping those in `suppress`, and drops the one-shot watches it fires.
    /// Watchers whose last watch on the path fired are appended to `dropped`.
    fn trigger(
        &mut self,
        changed_path: &str,
        walk_ancestors: bool,
        suppress: &HashSet<WatcherId>,
        out: &mut Vec<WatcherId>,
        dropped: &mut Vec<WatcherId>,
    ) {
        if let Some(watchers) = self.by_path.get_mut(changed_path) {
            watchers.retain(|watcher, modes| {
                if !suppress.contains(watcher) && !out.contains(watcher) {
                    out.push(*watcher);
                }
                *modes &= !MODE_STANDARD;
                if *modes == 0 {
                    dropped.push(*watcher);
                }
                *modes != 0
            });
            if watchers.is_empty() {
                self.by_path.remove(changed_path);
            }
        }
        if walk_ancestors {
            for ancestor in path::ancestors(changed_path).skip(1) {
                if let Some(watchers) = self.by_path.get(ancestor) {
                    for (watcher, modes) in watchers {
                        if modes & MODE_PERSISTENT_RECURSIVE != 0 && !suppress.contains(watcher) && !out.contains(watcher) {
                            out.push(*watcher);
                        }
                    }
                }
            }
        }
    }
}

/// One notification to deliver: a WatcherEvent for one watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub watcher: WatcherId,
    pub event_type: i32,
    pub path: String,
}

#[derive(Default)]
pub struct WatchManager {
    data: WatchTable,
    child: WatchTable,
    /// Which paths each watcher has entries under, so a closed connection's
    /// watches are dropped without scanning every path.
    paths_by_watcher: HashMap<WatcherId, HashSet<(String, Table)>>,
    recursive_watch_count: usize,
}

impl WatchManager {
    pub fn new() -> WatchManager {
        WatchManager::default()
    }

    fn table(&mut self, table: Table) -> &mut WatchTable {
        match table {
            Table::Data => &mut self.data,
            Table::Child => &mut self.child,
        }
    }

    fn add(&mut self, path: &str, watcher: WatcherId, table: Table, mode: u8) {
        if self.table(table).add(path, watcher, mode) && mode == MODE_PERSISTENT_RECURSIVE {
            self.recursive_watch_count += 1;
        }
        self.paths_by_watcher.entry(watcher).or_default().insert((path.to_owned(), table));
    }

    /// getData and exists register here (exists on a missing node too).
    pub fn add_data_watch(&mut self, path: &str, watcher: WatcherId) {
        self.add(path, watcher, Table::Data, MODE_STANDARD);
    }

    pub fn add_child_watch(&mut self, path: &str, watcher: WatcherId) {
        self.add(path, watcher, Table::Child, MODE_STANDARD);
    }

    /// addWatch: PERSISTENT goes in both tables, PERSISTENT_RECURSIVE in the data table only.
    pub fn add_persistent_watch(&mut self, path: &str, watcher: WatcherId, recursive: bool) {
        if recursive {
            self.add(path, watcher, Table::Data, MODE_PERSISTENT_RECURSIVE);
        } else {
            self.add(path, watcher, Table::Data, MODE_PERSISTENT);
            self.add(path, watcher, Table::Child, MODE_PERSISTENT);
        }
    }

    /// The watchers notified by the triggers of one applied txn, in order.
    pub fn trigger(&mut self, triggers: &[Trigger], out: &mut Vec<Notification>) {
        let mut notified = Vec::new();
        let mut dropped_data = Vec::new();
        let mut dropped_child = Vec::new();
        let empty = HashSet::new();
        for trigger in triggers {
            notified.clear();
            dropped_data.clear();
            dropped_child.clear();
            let walk = self.recursive_watch_count > 0;
            match trigger.event_type {
                event::NODE_CREATED | event::NODE_DATA_CHANGED => {
                    self.data.trigger(&trigger.path, walk, &empty, &mut notified, &mut dropped_data);
                }
                event::NODE_CHILDREN_CHANGED => {
                    self.child.trigger(&trigger.path, false, &empty, &mut notified, &mut dropped_child);
                }
                event::NODE_DELETED => {
                    self.data.trigger(&trigger.path, walk, &empty, &mut notified, &mut dropped_data);
                    let suppress: HashSet<WatcherId> = notified.iter().copied().collect();
                    self.child.trigger(&trigger.path, false, &suppress, &mut notified, &mut dropped_child);
                }
                _ => {}
            }
            for (dropped, table) in [(&dropped_data, Table::Data), (&dropped_child, Table::Child)] {
                for watcher in dropped.iter() {
                    self.forget(*watcher, &trigger.path, table);
                }
            }
            // In watcher order, not the tables' hash order, which differs from
            // one map to the next: ZooKeeper's order is its HashSet's, so any
            // order will do, and a fixed one keeps a simulated run reproducible.
            notified.sort_unstable();
            for watcher in &notified {
                out.push(Notification { watcher: *watcher, event_type: trigger.event_type, path: trigger.path.clone() });
            }
        }
    }

    fn mode_bits(watcher_kind: i32) -> SmallVec<[(Table, u8); 2]> {
        let mut bits = SmallVec::new();
        match watcher_kind {
            watcher_type::CHILDREN => bits.push((Table::Child, MODE_STANDARD)),
            watcher_type::DATA => bits.push((Table::Data, MODE_STANDARD)),
            watcher_type::PERSISTENT => {
                bits.push((Table::Child, MODE_PERSISTENT));
                bits.push((Table::Data, MODE_PERSISTENT));
            }
            watcher_type::PERSISTENT_RECURSIVE => bits.push((Table::Data, MODE_PERSISTENT_RECURSIVE)),
            // ANY: every mode in both tables, as ZooKeeper's removeWatch(…, null).
            _ => {
                bits.push((Table::Child, 0xff));
                bits.push((Table::Data, 0xff));
            }
        }
        bits
    }

    /// checkWatches: whether `watcher` has a watch of that kind on `path`.
    pub fn contains(&self, path: &str, watcher: WatcherId, watcher_kind: i32) -> bool {
        Self::mode_bits(watcher_kind).iter().any(|(table, mode)| match table {
            Table::Data => self.data.contains(path, watcher, *mode),
            Table::Child => self.child.contains(path, watcher, *mode),
        })
    }

    /// Drops the index entry once `watcher` has no watch left on `path` in `table`.
    fn forget(&mut self, watcher: WatcherId, path: &str, table: Table) {
        if let Some(entries) = self.paths_by_watcher.get_mut(&watcher) {
            entries.remove(&(path.to_owned(), table));
            if entries.is_empty() {
                self.paths_by_watcher.remove(&watcher);
            }
        }
    }

    /// removeWatches: false (NOWATCHER) if there was nothing to remove.
    pub fn remove(&mut self, path: &str, watcher: WatcherId, watcher_kind: i32) -> bool {
        let mut removed = false;
        for (table, mode) in Self::mode_bits(watcher_kind) {
            let had_recursive = table == Table::Data && self.data.contains(path, watcher, MODE_PERSISTENT_RECURSIVE);
            removed |= self.table(table).remove(path, watcher, mode);
            if had_recursive && !self.data.contains(path, watcher, MODE_PERSISTENT_RECURSIVE) {
                self.recursive_watch_count -= 1;
            }
            if !self.table(table).contains(path, watcher, 0xff) {
                self.forget(watcher, path, table);
            }
        }
        removed
    }

    /// Drops every watch of a closed connection.
    pub fn remove_watcher(&mut self, watcher: WatcherId) {
        let Some(entries) = self.paths_by_watcher.remove(&watcher) else { return };
        for (path, table) in entries {
            if table == Table::Data && self.data.contains(&path, watcher, MODE_PERSISTENT_RECURSIVE) {
                self.recursive_watch_count -= 1;
            }
            self.table(table).remove(&path, watcher, 0xff);
        }
    }

    /// For `wchs`: (watching connections, watched paths, total watches).
    pub fn summary(&self) -> (usize, usize, usize) {
        let paths: HashSet<&String> = self.data.by_path.keys().chain(self.child.by_path.keys()).collect();
        let total = self.data.by_path.values().map(HashMap::len).sum::<usize>()
            + self.child.by_path.values().map(HashMap::len).sum::<usize>();
        let watchers = self.paths_by_watcher.values().filter(|entries| !entries.is_empty()).count();
        (watchers, paths.len(), total)
    }

    /// The paths each watcher watches in the data table; ZooKeeper's `wchc`,
    /// `wchp` and `wchs` list the data-watch table only.
    pub fn data_paths_by_watcher(&self) -> Vec<(WatcherId, Vec<String>)> {
        let mut out: Vec<(WatcherId, Vec<String>)> = Vec::new();
        for (watcher, entries) in &self.paths_by_watcher {
            let mut paths: Vec<String> = entries
                .iter()
                .filter(|(path, table)| {
                    *table == Table::Data && self.data.by_path.get(path).is_some_and(|w| w.contains_key(watcher))
                })
                .map(|(path, _)| path.clone())
                .collect();
            paths.sort();
            paths.dedup();
            if !paths.is_empty() {
                out.push((*watcher, paths));
            }
        }
        out.sort();
        out
    }

    /// Every watch, data and child tables together (`zk_watch_count`).
    pub fn watch_count(&self) -> usize {
        self.summary().2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trig(path: &str, event_type: i32) -> Trigger {
        Trigger { path: path.into(), event_type }
    }

    fn fire(manager: &mut WatchManager, triggers: &[Trigger]) -> Vec<(WatcherId, i32, String)> {
        let mut out = Vec::new();
        manager.trigger(triggers, &mut out);
        out.into_iter().map(|n| (n.watcher, n.event_type, n.path)).collect()
    }

    #[test]
    fn standard_watches_fire_once() {
        let mut manager = WatchManager::new();
        manager.add_data_watch("/a", 1);
        assert_eq!(fire(&mut manager, &[trig("/a", event::NODE_DATA_CHANGED)]), vec![(1, 3, "/a".into())]);
        assert!(fire(&mut manager, &[trig("/a", event::NODE_DATA_CHANGED)]).is_empty());
        assert_eq!(manager.summary(), (0, 0, 0));
    }

    #[test]
    fn delete_notifies_each_watcher_once_and_parent_child_watchers() {
        let mut manager = WatchManager::new();
        manager.add_data_watch("/a", 1);
        manager.add_child_watch("/a", 1);
        manager.add_child_watch("/", 2);
        let events = fire(&mut manager, &[trig("/a", event::NODE_DELETED), trig("/", event::NODE_CHILDREN_CHANGED)]);
        assert_eq!(events, vec![(1, 2, "/a".into()), (2, 4, "/".into())]);
    }

    #[test]
    fn persistent_watches_stay_and_recursive_skip_children_changed() {
        let mut manager = WatchManager::new();
        manager.add_persistent_watch("/a", 1, false);
        manager.add_persistent_watch("/a", 2, true);
        for _ in 0..2 {
            let events = fire(&mut manager, &[trig("/a/b", event::NODE_CREATED), trig("/a", event::NODE_CHILDREN_CHANGED)]);
            assert_eq!(events, vec![(2, 1, "/a/b".into()), (1, 4, "/a".into())]);
        }
        assert!(manager.remove("/a", 2, watcher_type::PERSISTENT_RECURSIVE));
        assert!(!manager.remove("/a", 2, watcher_type::PERSISTENT_RECURSIVE));
        assert_eq!(fire(&mut manager, &[trig("/a/b", event::NODE_DATA_CHANGED)]), vec![]);
        assert!(manager.contains("/a", 1, watcher_type::PERSISTENT));
        assert!(!manager.contains("/a", 1, watcher_type::DATA));
    }

    #[test]
    fn closed_connection_loses_all_watches() {
        let mut manager = WatchManager::new();
        manager.add_data_watch("/a", 9);
        manager.add_child_watch("/b", 9);
        manager.add_persistent_watch("/c", 9, true);
        manager.remove_watcher(9);
        assert_eq!(manager.summary(), (0, 0, 0));
        assert!(fire(&mut manager, &[trig("/c/d", event::NODE_CREATED)]).is_empty());
    }
}
