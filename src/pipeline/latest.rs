//! Prep's latest state: every prepped txn applied, as ZooKeeper's
//! PrepRequestProcessor sees its tree plus outstanding changes. Prep checks
//! writes against versions, child counts, owners and ACLs, never against
//! data or the rest of the Stat, so each znode here is only what it reads:
//! no data, no child set (a count), no zxids. It applies the txns the
//! shards' DataTrees apply, by the same rules for the fields it keeps
//! (tests: `latest_tests.rs` checks it against a DataTree on random
//! workloads), at a fraction of a DataTree replica's memory and work.

use std::sync::Arc;

use crate::proto::Acl;
use crate::tree::{advance_zxid, path, AclCache, DataTree, NodeFacts, OwnerIndex, SplitMap};
use crate::txn::{CreateTxn, Txn, TxnBody};

/// A znode as Prep checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestNode {
    pub version: i32,
    /// Child creates so far (the sequential suffix), as the Stat stores it.
    pub cversion: i32,
    pub aversion: i32,
    pub child_count: u32,
    pub ephemeral_owner: i64,
    /// Wall-clock time of the last change (TTL expiry).
    pub mtime: i64,
    pub acl: Arc<[Acl]>,
}

pub struct LatestTree {
    /// Keyed by the path the creating txn allocated, as the DataTrees are.
    nodes: SplitMap<Arc<str>, LatestNode>,
    acl_cache: AclCache,
    owned: OwnerIndex<Arc<str>>,
    last_processed_zxid: i64,
}

impl LatestNode {
    /// A node a create just made.
    pub fn created(ephemeral_owner: i64, mtime: i64, acl: Arc<[Acl]>) -> LatestNode {
        LatestNode { version: 0, cversion: 0, aversion: 0, child_count: 0, ephemeral_owner, mtime, acl }
    }
}

impl LatestTree {
    /// The latest state of a committed tree (start-up, or a new leader).
    pub fn from_tree(tree: &DataTree) -> LatestTree {
        let mut latest = LatestTree {
            nodes: SplitMap::with_capacity(tree.node_count()),
            acl_cache: AclCache::default(),
            owned: OwnerIndex::default(),
            last_processed_zxid: tree.last_processed_zxid(),
        };
        for (node_path, node) in tree.iter_nodes() {
            let node_path: Arc<str> = node_path.into();
            let stat = &node.stat;
            if stat.ephemeral_owner != 0 {
                latest.owned.add(node_path.clone(), stat.ephemeral_owner);
            }
            let acl = latest.acl_cache.intern(&node.acl);
            let record = LatestNode {
                version: stat.version,
                cversion: stat.cversion,
                aversion: stat.aversion,
                child_count: node.children.len() as u32,
                ephemeral_owner: stat.ephemeral_owner,
                mtime: stat.mtime,
                acl,
            };
            latest.nodes.insert(node_path, record);
        }
        latest
    }

    /// Every znode, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &LatestNode)> {
        self.nodes.iter().map(|(path, node)| (&**path, node))
    }

    pub fn get(&self, node_path: &str) -> Option<&LatestNode> {
        self.nodes.get(node_path)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn last_processed_zxid(&self) -> i64 {
        self.last_processed_zxid
    }

    /// What the DataTree's `container_candidates` answers: the same rule.
    pub fn container_candidates(&self, now_ms: i64, limit: usize) -> Vec<String> {
        self.owned.container_candidates(now_ms, limit, |path| {
            self.nodes.get(path).map(|node| NodeFacts {
                child_count: node.child_count as usize,
                cversion: node.cversion,
                ephemeral_owner: node.ephemeral_owner,
                mtime: node.mtime,
            })
        })
    }

    /// Applies a txn as the DataTree does (`DataTree::apply`).
    pub fn apply(&mut self, txn: &Txn) {
        advance_zxid(&mut self.last_processed_zxid, txn.zxid);
        match &txn.body {
            TxnBody::CloseSession => {
                for node_path in self.owned.take_session(txn.session_id) {
                    self.delete(&node_path);
                }
            }
            TxnBody::Multi(ops) => {
                if !ops.iter().any(|body| matches!(body, TxnBody::Error { .. })) {
                    for body in ops {
                        self.apply_op(txn, body);
                    }
                }
            }
            body => self.apply_op(txn, body),
        }
    }

    fn apply_op(&mut self, txn: &Txn, body: &TxnBody) {
        match body {
            TxnBody::Create(create) => self.create(create, txn.time_ms),
            TxnBody::Delete { path } => self.delete(path),
            TxnBody::SetData { path, version, .. } => {
                if let Some(node) = self.nodes.get_mut(path.as_str()) {
                    node.version = *version;
                    node.mtime = txn.time_ms;
                }
            }
            TxnBody::SetAcl { path, acl, version } => {
                if self.nodes.contains_key(path.as_str()) {
                    let interned = self.acl_cache.intern(acl);
                    let node = self.nodes.get_mut(path.as_str()).expect("checked above");
                    let previous = std::mem::replace(&mut node.acl, interned);
                    node.aversion = *version;
                    self.acl_cache.release(previous);
                }
            }
            TxnBody::Check { .. }
            | TxnBody::Error { .. }
            | TxnBody::CreateSession { .. }
            | TxnBody::CloseSession
            | TxnBody::Multi(_) => {}
        }
    }

    fn create(&mut self, create: &CreateTxn, time_ms: i64) {
        let (parent_path, _) = path::split(&create.path);
        if !self.nodes.contains_key(parent_path) {
            return;
        }
        let acl = self.acl_cache.intern(&create.acl);
        let node = LatestNode::created(create.ephemeral_owner, time_ms, acl);
        if let Err((_, node)) = self.nodes.try_insert(create.path.clone(), node) {
            self.acl_cache.release(node.acl);
            return;
        }
        let parent = self.nodes.get_mut(parent_path).expect("checked above");
        // Only forward, as the DataTree moves it for replayed creates.
        if create.parent_cversion > parent.cversion {
            parent.cversion = create.parent_cversion;
        }
        parent.child_count += 1;
        if create.ephemeral_owner != 0 {
            self.owned.add(create.path.clone(), create.ephemeral_owner);
        }
    }

    fn delete(&mut self, node_path: &str) {
        let Some(node) = self.nodes.remove(node_path) else { return };
        let (parent_path, _) = path::split(node_path);
        if let Some(parent) = self.nodes.get_mut(parent_path) {
            parent.child_count = parent.child_count.saturating_sub(1);
        }
        self.owned.remove(node_path, node.ephemeral_owner);
        self.acl_cache.release(node.acl);
    }

    /// Paths of a session's ephemerals, sorted (tests).
    pub fn ephemerals(&self, session_id: i64) -> Vec<String> {
        self.owned.ephemerals(session_id).map(|path| path.to_string()).collect()
    }

    pub fn acl_count(&self) -> usize {
        self.acl_cache.len()
    }
}

#[cfg(test)]
#[path = "latest_tests.rs"]
mod tests;
