//! The DataTree: znodes by path, their Stat, data and ACLs, plus the indexes
//! ZooKeeper keeps beside them (ephemerals by session, containers, TTL nodes).
//! It applies committed txns and reports which watches they trigger; it never
//! decides anything (validation is the Prep stage's job) and never does I/O.
//! Every replica applies the same txns in zxid order and reaches the same state.

pub mod path;
pub mod table;

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashMap;

use crate::proto::codes::{event, op, perms};
use crate::proto::{Acl, ErrorCode, Id, Stat};
use crate::txn::{ephemeral_owner, CreateTxn, Txn, TxnBody};
pub use table::{SplitMap, TableKey};

/// A znode's persisted metadata (ZooKeeper's StatPersisted: Stat without the
/// derived dataLength and numChildren).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatPersisted {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub pzxid: i64,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub data: Option<Bytes>,
    pub acl: Arc<[Acl]>,
    pub stat: StatPersisted,
    pub children: Children,
}

/// A node's children. Most znodes are leaves, so the set is allocated only
/// while a node has children: 8 bytes per leaf instead of 32.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Children(Option<Box<SplitMap<ChildName, ()>>>);

/// A child, held as its full path (the allocation its own key in the tree
/// uses, which every replica shares), standing for its name: its set hashes,
/// compares and looks it up by the last component (`TableKey`).
#[derive(Debug, Clone)]
pub struct ChildName(Arc<str>);

impl ChildName {
    pub fn name(&self) -> &str {
        // A plain backward scan: names are short, and memrchr's set-up cost
        // showed in profiles of creates (every hash and compare calls this).
        let start = self.0.bytes().rposition(|byte| byte == b'/').map_or(0, |slash| slash + 1);
        &self.0[start..]
    }

    pub fn path(&self) -> &str {
        &self.0
    }
}

impl TableKey for ChildName {
    fn key(&self) -> &str {
        self.name()
    }
}

impl std::ops::Deref for ChildName {
    type Target = str;

    fn deref(&self) -> &str {
        self.name()
    }
}

impl std::fmt::Display for ChildName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Children {
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |names| names.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &ChildName> {
        self.0.iter().flat_map(|names| names.keys())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.as_ref().is_some_and(|names| names.contains_key(name))
    }

    /// Adds the child whose full path is `path`.
    pub fn insert(&mut self, path: Arc<str>) -> bool {
        self.0.get_or_insert_with(Default::default).insert(ChildName(path), ()).is_none()
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let Some(names) = self.0.as_mut() else { return false };
        let removed = names.remove(name).is_some();
        if names.is_empty() {
            self.0 = None;
        }
        removed
    }
}

impl Node {
    /// The Stat clients see. ZooKeeper stores cversion as a count of child
    /// creates (the sequential suffix uses it) and reports creates plus deletes,
    /// `2 * creates - children` (DataNode.copyStat); it reports ephemeralOwner
    /// only for session ephemerals, 0 for containers and TTL nodes.
    pub fn full_stat(&self) -> Stat {
        let stat = &self.stat;
        let num_children = self.children.len() as i32;
        let ephemeral_owner =
            if ephemeral_owner::is_session(stat.ephemeral_owner) { stat.ephemeral_owner } else { 0 };
        Stat {
            czxid: stat.czxid,
            mzxid: stat.mzxid,
            ctime: stat.ctime,
            mtime: stat.mtime,
            version: stat.version,
            cversion: stat.cversion.wrapping_mul(2).wrapping_sub(num_children),
            aversion: stat.aversion,
            ephemeral_owner,
            data_length: self.data.as_ref().map_or(0, |data| data.len() as i32),
            num_children,
            pzxid: stat.pzxid,
        }
    }
}

/// A watch trigger produced by applying a txn. Which watch tables it reaches
/// follows from the event type, as in ZooKeeper's DataTree: NodeCreated and
/// NodeDataChanged reach data watches, NodeChildrenChanged child watches, and
/// NodeDeleted both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub path: String,
    pub event_type: i32,
}

/// What applying one txn (or one op of a multi) produced, for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    pub err: ErrorCode,
    /// The created path, for creates.
    pub path: String,
    pub stat: Option<Stat>,
    /// The opcode this result answers (a multi's per-op results need it).
    pub opcode: i32,
    pub multi: Vec<ApplyResult>,
}

impl ApplyResult {
    fn ok(opcode: i32) -> ApplyResult {
        ApplyResult { err: ErrorCode::Ok, path: String::new(), stat: None, opcode, multi: Vec::new() }
    }

    fn error(err: ErrorCode) -> ApplyResult {
        ApplyResult { err, path: String::new(), stat: None, opcode: op::ERROR, multi: Vec::new() }
    }
}

/// ZooKeeper's ACL constants.
pub fn open_acl_unsafe() -> Vec<Acl> {
    vec![Acl { perms: perms::ALL, id: Id { scheme: "world".into(), id: "anyone".into() } }]
}

/// OPEN_ACL_UNSAFE, the list nearly every znode has, allocated once per
/// process: a create txn made or decoded with it shares this one.
pub fn shared_open_acl() -> Arc<[Acl]> {
    static OPEN: std::sync::LazyLock<Arc<[Acl]>> = std::sync::LazyLock::new(|| open_acl_unsafe().into());
    OPEN.clone()
}

pub fn read_acl_unsafe() -> Vec<Acl> {
    vec![Acl { perms: perms::READ, id: Id { scheme: "world".into(), id: "anyone".into() } }]
}

pub const ZOOKEEPER_PATH: &str = "/zookeeper";
pub const QUOTA_PATH: &str = "/zookeeper/quota";
pub const CONFIG_PATH: &str = "/zookeeper/config";

/// Moves a replica's last applied zxid to `zxid`: txns apply in zxid order.
pub fn advance_zxid(last_processed: &mut i64, zxid: i64) {
    assert!(zxid >= *last_processed, "txn zxid {zxid:#x} below last processed {:#x}", *last_processed);
    *last_processed = zxid;
}

/// The znodes ZooKeeper indexes by owner: session ephemerals by session (what
/// closing a session deletes), containers and TTL nodes (what the container
/// manager checks). `K` is the tree's own path type.
#[derive(Clone, Debug)]
pub struct OwnerIndex<K> {
    ephemerals: HashMap<i64, BTreeSet<K>>,
    containers: BTreeSet<K>,
    ttls: BTreeSet<K>,
}

impl<K> Default for OwnerIndex<K> {
    fn default() -> Self {
        OwnerIndex { ephemerals: HashMap::new(), containers: BTreeSet::new(), ttls: BTreeSet::new() }
    }
}

impl<K: Ord + std::borrow::Borrow<str>> OwnerIndex<K> {
    /// Lists a new node in the index its owner calls for, if any.
    pub fn add(&mut self, node_path: K, owner: i64) {
        if ephemeral_owner::is_container(owner) {
            self.containers.insert(node_path);
        } else if ephemeral_owner::ttl_ms(owner).is_some() {
            self.ttls.insert(node_path);
        } else if owner != 0 {
            self.ephemerals.entry(owner).or_default().insert(node_path);
        }
    }

    /// Unlists a deleted node.
    pub fn remove(&mut self, node_path: &str, owner: i64) {
        if ephemeral_owner::is_container(owner) {
            self.containers.remove(node_path);
        } else if ephemeral_owner::ttl_ms(owner).is_some() {
            self.ttls.remove(node_path);
        } else if owner != 0 {
            if let Some(paths) = self.ephemerals.get_mut(&owner) {
                paths.remove(node_path);
                if paths.is_empty() {
                    self.ephemerals.remove(&owner);
                }
            }
        }
    }

    /// A closing session's ephemerals, sorted, unlisted.
    pub fn take_session(&mut self, session_id: i64) -> BTreeSet<K> {
        self.ephemerals.remove(&session_id).unwrap_or_default()
    }

    pub fn ephemerals(&self, session_id: i64) -> impl Iterator<Item = &K> {
        self.ephemerals.get(&session_id).into_iter().flatten()
    }

    pub fn sessions(&self) -> impl Iterator<Item = (i64, &BTreeSet<K>)> {
        self.ephemerals.iter().map(|(session, paths)| (*session, paths))
    }

    pub fn containers(&self) -> &BTreeSet<K> {
        &self.containers
    }

    pub fn ttls(&self) -> &BTreeSet<K> {
        &self.ttls
    }

    /// ZooKeeper's ContainerManager rule, for a tree that answers `facts`
    /// for a listed node: containers with no children that have had one
    /// (cversion > 0), then TTL nodes with no children whose TTL has passed
    /// since their last change (mtime, a wall-clock time, against `now_ms`).
    pub fn container_candidates(&self, now_ms: i64, limit: usize, facts: impl Fn(&str) -> Option<NodeFacts>) -> Vec<String> {
        let containers = self.containers.iter().filter(|path| {
            facts(path.borrow()).is_some_and(|node| node.child_count == 0 && node.cversion > 0)
        });
        let ttls = self.ttls.iter().filter(|path| {
            facts(path.borrow()).is_some_and(|node| {
                let ttl_ms = ephemeral_owner::ttl_ms(node.ephemeral_owner).unwrap_or(i64::MAX);
                node.child_count == 0 && now_ms.saturating_sub(node.mtime) > ttl_ms
            })
        });
        containers.chain(ttls).take(limit).map(|path| path.borrow().to_owned()).collect()
    }
}

/// What the container manager's rule reads of a node.
pub struct NodeFacts {
    pub child_count: usize,
    pub cversion: i32,
    pub ephemeral_owner: i64,
    pub mtime: i64,
}

/// Interned ACL lists: most znodes share a handful of lists, so a node holds
/// a reference to its list rather than a copy.
#[derive(Clone, Default)]
pub struct AclCache(HashMap<Vec<Acl>, Arc<[Acl]>>);

impl AclCache {
    pub fn intern(&mut self, acl: &[Acl]) -> Arc<[Acl]> {
        if let Some(shared) = self.0.get(acl) {
            return shared.clone();
        }
        let shared: Arc<[Acl]> = acl.to_vec().into();
        self.0.insert(acl.to_vec(), shared.clone());
        shared
    }

    /// Drops an interned list once no node uses it, so distinct ACLs sent by
    /// clients cannot accumulate. `acl` is a node's reference, given up.
    pub fn release(&mut self, acl: Arc<[Acl]>) {
        // One reference in the cache and the one we were handed.
        if Arc::strong_count(&acl) == 2 {
            self.0.remove(&acl[..]);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone)]
pub struct DataTree {
    /// Boxed: a table entry is 24 bytes instead of 168, so the empty slots
    /// a hash table keeps cost little (the node table was most of a replica's
    /// memory).
    /// Keyed by the path the creating txn allocated, shared by every replica.
    nodes: SplitMap<Arc<str>, Box<Node>>,
    acl_cache: AclCache,
    /// Keyed by the same shared path allocations as `nodes`.
    owned: OwnerIndex<Arc<str>>,
    /// Live sessions and their timeouts, as created and closed by txns.
    sessions: HashMap<i64, i32>,
    last_processed_zxid: i64,
    data_bytes: u64,
}

impl std::fmt::Debug for DataTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataTree {{ zxid: {:#x}, nodes: {} }}", self.last_processed_zxid(), self.node_count())
    }
}

impl Default for DataTree {
    fn default() -> Self {
        DataTree::new()
    }
}

impl DataTree {
    /// A tree holding what a fresh ZooKeeper holds: `/`, `/zookeeper`,
    /// `/zookeeper/quota`, and `/zookeeper/config` (world-readable only, with
    /// aversion -1, as ZooKeeper's addConfigNode leaves it).
    pub fn new() -> DataTree {
        let mut tree = DataTree::empty(0, HashMap::new());
        let open = tree.acl_cache.intern(&open_acl_unsafe());
        let system_node = |acl: Arc<[Acl]>, data: Option<Bytes>| Node {
            data,
            acl,
            stat: StatPersisted::default(),
            children: Children::default(),
        };
        for node_path in ["/", ZOOKEEPER_PATH, QUOTA_PATH] {
            tree.nodes.insert(node_path.into(), Box::new(system_node(open.clone(), Some(Bytes::new()))));
        }
        let read_only = tree.acl_cache.intern(&read_acl_unsafe());
        let mut config = system_node(read_only, Some(Bytes::new()));
        config.stat.aversion = -1;
        tree.nodes.insert(CONFIG_PATH.into(), Box::new(config));
        for node_path in [ZOOKEEPER_PATH, QUOTA_PATH, CONFIG_PATH] {
            tree.link_child(node_path.into());
        }
        tree
    }

    /// No znodes at all: the start of `new` and of `restore`.
    fn empty(zxid: i64, sessions: HashMap<i64, i32>) -> DataTree {
        DataTree {
            nodes: SplitMap::default(),
            acl_cache: AclCache::default(),
            owned: OwnerIndex::default(),
            sessions,
            last_processed_zxid: zxid,
            data_bytes: 0,
        }
    }

    /// Lists `node_path` among its parent's children; false if there is no parent.
    fn link_child(&mut self, node_path: Arc<str>) -> bool {
        let (parent, _) = path::split(&node_path);
        match self.nodes.get_mut(parent) {
            Some(parent) => {
                parent.children.insert(node_path);
                true
            }
            None => false,
        }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path).map(|node| &**node)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub fn last_processed_zxid(&self) -> i64 {
        self.last_processed_zxid
    }

    pub fn sessions(&self) -> &HashMap<i64, i32> {
        &self.sessions
    }

    pub fn ephemerals(&self, session_id: i64) -> impl Iterator<Item = &str> {
        self.owned.ephemerals(session_id).map(|path| &**path)
    }

    /// Every session's ephemerals, for `dump`.
    pub fn ephemerals_by_session(&self) -> Vec<(i64, Vec<String>)> {
        let mut out: Vec<(i64, Vec<String>)> =
            self.owned.sessions().map(|(session, paths)| (session, paths.iter().map(|path| path.to_string()).collect())).collect();
        out.sort();
        out
    }

    /// Path bytes plus data bytes of every znode (ZooKeeper's approximateDataSize).
    pub fn approximate_data_size(&self) -> u64 {
        self.nodes.keys().map(|path| path.len() as u64).sum::<u64>() + self.data_bytes
    }

    pub fn ephemeral_count(&self) -> usize {
        self.owned.sessions().map(|(_, paths)| paths.len()).sum()
    }

    pub fn acl_count(&self) -> usize {
        self.acl_cache.len()
    }

    /// All descendants of `path` (ZooKeeper's getAllChildrenNumber; for `/`
    /// every node but the root).
    pub fn all_children_number(&self, path: &str) -> usize {
        if path == "/" {
            return self.nodes.len() - 1;
        }
        let mut count = 0;
        let mut pending = vec![path];
        while let Some(parent) = pending.pop() {
            if let Some(node) = self.nodes.get(parent) {
                for child in node.children.iter() {
                    count += 1;
                    pending.push(child.path());
                }
            }
        }
        count
    }

    /// Containers with no children that have had one (cversion > 0), and TTL
    /// nodes with no children whose TTL has passed since their last change:
    /// what ZooKeeper's ContainerManager deletes.
    pub fn container_candidates(&self, now_ms: i64, limit: usize) -> Vec<String> {
        self.owned.container_candidates(now_ms, limit, |path| {
            self.nodes.get(path).map(|node| NodeFacts {
                child_count: node.children.len(),
                cversion: node.stat.cversion,
                ephemeral_owner: node.stat.ephemeral_owner,
                mtime: node.stat.mtime,
            })
        })
    }

    /// Applies a committed txn. Appends the watch triggers it causes, in the
    /// order ZooKeeper fires them, to `triggers`.
    pub fn apply(&mut self, txn: &Txn, triggers: &mut Vec<Trigger>) -> ApplyResult {
        self.apply_reporting(txn, Some(triggers))
    }

    /// Applies a committed txn for a replica that only keeps the state (Prep's
    /// latest state, the snapshot executor, recovery): it reports no watch
    /// triggers and no reply, and so allocates nothing for them.
    pub fn apply_quietly(&mut self, txn: &Txn) {
        self.apply_reporting(txn, None);
    }

    /// `apply`; with `triggers` None the result carries only error codes.
    fn apply_reporting(&mut self, txn: &Txn, mut triggers: Option<&mut Vec<Trigger>>) -> ApplyResult {
        advance_zxid(&mut self.last_processed_zxid, txn.zxid);
        match &txn.body {
            TxnBody::CreateSession { timeout_ms } => {
                self.sessions.insert(txn.session_id, *timeout_ms);
                ApplyResult::ok(op::CREATE_SESSION)
            }
            TxnBody::CloseSession => {
                self.kill_session(txn.session_id, txn.zxid, triggers);
                ApplyResult::ok(op::CLOSE_SESSION)
            }
            TxnBody::Multi(ops) => {
                let failed = ops.iter().any(|body| matches!(body, TxnBody::Error { .. }));
                let mut result = ApplyResult::ok(op::MULTI);
                for body in ops {
                    let sub = if failed {
                        match body {
                            TxnBody::Error { err } => ApplyResult::error(*err),
                            _ => ApplyResult::error(ErrorCode::Ok),
                        }
                    } else {
                        self.apply_op(txn, body, triggers.as_deref_mut())
                    };
                    result.multi.push(sub);
                }
                result
            }
            body => self.apply_op(txn, body, triggers),
        }
    }

    fn apply_op(&mut self, txn: &Txn, body: &TxnBody, triggers: Option<&mut Vec<Trigger>>) -> ApplyResult {
        match body {
            TxnBody::Create(create) => self.create_node(create, txn.zxid, txn.time_ms, triggers),
            TxnBody::Delete { path } => {
                let opcode = op::DELETE;
                match self.delete_node(path, txn.zxid, triggers) {
                    Ok(()) => ApplyResult::ok(opcode),
                    Err(err) => ApplyResult::error(err),
                }
            }
            TxnBody::SetData { path, data, version } => {
                let Some(node) = self.nodes.get_mut(path.as_str()) else {
                    return ApplyResult::error(ErrorCode::NoNode);
                };
                let old_length = node.data.as_ref().map_or(0, Bytes::len) as u64;
                let new_length = data.as_ref().map_or(0, Bytes::len) as u64;
                node.data = data.clone();
                node.stat.version = *version;
                node.stat.mtime = txn.time_ms;
                node.stat.mzxid = txn.zxid;
                self.data_bytes = self.data_bytes - old_length + new_length;
                let Some(triggers) = triggers else { return ApplyResult::ok(op::SET_DATA) };
                let stat = node.full_stat();
                triggers.push(Trigger { path: path.clone(), event_type: event::NODE_DATA_CHANGED });
                ApplyResult { stat: Some(stat), ..ApplyResult::ok(op::SET_DATA) }
            }
            TxnBody::SetAcl { path, acl, version } => {
                if !self.nodes.contains_key(path.as_str()) {
                    return ApplyResult::error(ErrorCode::NoNode);
                }
                let interned = self.acl_cache.intern(acl);
                let node = self.nodes.get_mut(path.as_str()).expect("checked above");
                let previous = std::mem::replace(&mut node.acl, interned);
                node.stat.aversion = *version;
                let stat = node.full_stat();
                self.acl_cache.release(previous);
                ApplyResult { stat: Some(stat), ..ApplyResult::ok(op::SET_ACL) }
            }
            TxnBody::Check { path } => {
                let stat = self.get(path.as_str()).map(Node::full_stat);
                ApplyResult { stat, ..ApplyResult::ok(op::CHECK) }
            }
            TxnBody::Error { err } => ApplyResult::error(*err),
            TxnBody::CreateSession { .. } | TxnBody::CloseSession | TxnBody::Multi(_) => {
                // Prep never nests these inside a multi.
                ApplyResult::error(ErrorCode::MarshallingError)
            }
        }
    }

    fn create_node(&mut self, create: &CreateTxn, zxid: i64, time_ms: i64, triggers: Option<&mut Vec<Trigger>>) -> ApplyResult {
        let (parent_path, _) = path::split(&create.path);
        let Some(parent) = self.nodes.get_mut(parent_path) else {
            return ApplyResult::error(ErrorCode::NoNode);
        };
        // A znode is among its parent's children exactly while it exists, so
        // the child set answers whether it does: one lookup in the (large)
        // node table per create instead of two.
        if !parent.children.insert(create.path.clone()) {
            return ApplyResult::error(ErrorCode::NodeExists);
        }
        // Only move cversion forward, as ZooKeeper does for replayed creates.
        if create.parent_cversion > parent.stat.cversion {
            parent.stat.cversion = create.parent_cversion;
            parent.stat.pzxid = zxid;
        }
        let acl = self.acl_cache.intern(&create.acl);
        let stat = StatPersisted {
            czxid: zxid,
            mzxid: zxid,
            ctime: time_ms,
            mtime: time_ms,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: create.ephemeral_owner,
            pzxid: zxid,
        };
        let node = Node { data: create.data.clone(), acl, stat, children: Children::default() };
        self.data_bytes += create.data.as_ref().map_or(0, Bytes::len) as u64;
        let full_stat = triggers.is_some().then(|| node.full_stat());
        let replaced = self.nodes.insert(create.path.clone(), Box::new(node));
        debug_assert!(replaced.is_none(), "{} existed but was not among its parent's children", create.path);
        if create.ephemeral_owner != 0 {
            self.owned.add(create.path.clone(), create.ephemeral_owner);
        }
        let opcode = if create.opcode == op::CREATE { op::CREATE } else { op::CREATE2 };
        let Some(triggers) = triggers else { return ApplyResult::ok(opcode) };
        triggers.push(Trigger { path: create.path.to_string(), event_type: event::NODE_CREATED });
        triggers.push(Trigger { path: parent_path.to_owned(), event_type: event::NODE_CHILDREN_CHANGED });
        ApplyResult { path: create.path.to_string(), stat: full_stat, ..ApplyResult::ok(opcode) }
    }

    fn delete_node(&mut self, node_path: &str, zxid: i64, triggers: Option<&mut Vec<Trigger>>) -> Result<(), ErrorCode> {
        let (parent_path, child_name) = path::split(node_path);
        let Some(node) = self.nodes.remove(node_path) else {
            return Err(ErrorCode::NoNode);
        };
        if let Some(parent) = self.nodes.get_mut(parent_path) {
            parent.children.remove(child_name);
            // A delete moves pzxid but not cversion (ZooKeeper's DataTree.deleteNode).
            if zxid > parent.stat.pzxid {
                parent.stat.pzxid = zxid;
            }
        }
        self.data_bytes -= node.data.as_ref().map_or(0, Bytes::len) as u64;
        self.owned.remove(node_path, node.stat.ephemeral_owner);
        self.acl_cache.release(node.acl);
        if let Some(triggers) = triggers {
            triggers.push(Trigger { path: node_path.to_owned(), event_type: event::NODE_DELETED });
            triggers.push(Trigger { path: parent_path.to_owned(), event_type: event::NODE_CHILDREN_CHANGED });
        }
        Ok(())
    }

    /// Removes a closed or expired session and its ephemerals. Ephemerals have
    /// no children, so any order works; sorted order keeps replicas' watch
    /// events identical.
    fn kill_session(&mut self, session_id: i64, zxid: i64, mut triggers: Option<&mut Vec<Trigger>>) {
        self.sessions.remove(&session_id);
        for node_path in self.owned.take_session(session_id) {
            let _ = self.delete_node(&node_path, zxid, triggers.as_deref_mut());
        }
    }

    /// Every znode, in no particular order (for snapshots).
    pub fn iter_nodes(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(path, node)| (&**path, &**node))
    }

    /// Rebuilds a tree from a snapshot's contents: every znode (the root and
    /// the system nodes included) with its data, ACL and persisted Stat, the
    /// live sessions, and the zxid the snapshot was taken at. Children and
    /// the ephemeral, container and TTL indexes are derived. Fails on a
    /// snapshot that is not a tree (no root, a node without its parent, a
    /// duplicate path).
    ///
    /// Nodes that share an ACL list should pass clones of one `Arc` (a
    /// snapshot stores each list once): each list is then interned once, and
    /// restoring costs O(1) per node rather than O(list length). Interning
    /// every node's list by content made a snapshot of many nodes sharing a
    /// long list load in quadratic time (found by fuzz/'s snapshot target).
    pub fn restore(
        zxid: i64,
        nodes: impl IntoIterator<Item = (String, Option<Bytes>, Arc<[Acl]>, StatPersisted)>,
        sessions: impl IntoIterator<Item = (i64, i32)>,
    ) -> Result<DataTree, String> {
        let mut tree = DataTree::empty(zxid, sessions.into_iter().collect());
        // By the address of the list passed in; `lists_seen` keeps each such
        // list alive, so that its address cannot be reused by another meanwhile.
        let mut interned_by_address: HashMap<*const Acl, Arc<[Acl]>> = HashMap::new();
        let mut lists_seen: Vec<Arc<[Acl]>> = Vec::new();
        for (node_path, data, acl, stat) in nodes {
            if node_path != "/" && path::validate(&node_path).is_err() {
                return Err(format!("invalid path {node_path:?}"));
            }
            let acl = match interned_by_address.get(&acl.as_ptr()) {
                Some(interned) => interned.clone(),
                None => {
                    let interned = tree.acl_cache.intern(&acl);
                    interned_by_address.insert(acl.as_ptr(), interned.clone());
                    lists_seen.push(acl);
                    interned
                }
            };
            tree.data_bytes += data.as_ref().map_or(0, Bytes::len) as u64;
            let key: Arc<str> = node_path.as_str().into();
            if stat.ephemeral_owner != 0 {
                tree.owned.add(key.clone(), stat.ephemeral_owner);
            }
            let node = Node { data, acl, stat, children: Children::default() };
            if tree.nodes.insert(key, Box::new(node)).is_some() {
                return Err(format!("duplicate path {node_path:?}"));
            }
        }
        if !tree.nodes.contains_key("/") {
            return Err("no root node".into());
        }
        let paths: Vec<Arc<str>> = tree.nodes.keys().filter(|node_path| &***node_path != "/").cloned().collect();
        for node_path in paths {
            if !tree.link_child(node_path.clone()) {
                return Err(format!("node {node_path:?} has no parent"));
            }
        }
        Ok(tree)
    }

    /// A digest of the whole tree (paths, data and Stat), equal on replicas
    /// that applied the same txns. Order-independent.
    pub fn digest(&self) -> u64 {
        let mut digest = 0u64;
        for (node_path, node) in self.nodes.iter() {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(node_path.as_bytes());
            hasher.update(node.data.as_deref().unwrap_or(&[]));
            let stat = node.full_stat();
            for value in [stat.czxid, stat.mzxid, stat.ctime, stat.mtime, node.stat.ephemeral_owner, stat.pzxid] {
                hasher.update(&value.to_be_bytes());
            }
            for value in [stat.version, stat.cversion, stat.aversion, stat.num_children] {
                hasher.update(&value.to_be_bytes());
            }
            let low = hasher.clone().finalize() as u64;
            hasher.update(b"high");
            let high = hasher.finalize() as u64;
            digest = digest.wrapping_add((high << 32) | low);
        }
        digest
    }
}

#[cfg(test)]
mod tests;
