//! The ZAB invariants of ZooKeeper's TLA+ protocol specification, checked
//! after every simulator step, plus replica digests.
//!
//! "Delivered" is what a server applies in commit order (`Effect::Apply`);
//! a leader's own history becomes committed when it is established (a
//! quorum acked NEWLEADER), without being delivered again.
//!
//! - **Leadership**: at most one established leader per epoch.
//! - **Integrity** and **Agreement**: a zxid is committed with one txn only,
//!   wherever and however it is delivered.
//! - **TotalOrder**, **LocalPrimaryOrder**, **GlobalPrimaryOrder**: a server
//!   delivers in strictly increasing zxid order (zxids order epochs, then
//!   each leader's proposals).
//! - **PrefixConsistency**: a server delivers a txn only right after a
//!   committed one, and every server agrees on what follows each committed
//!   txn: delivered sequences are prefixes of one another.
//! - **PrimaryIntegrity**: a new leader's history holds every txn committed
//!   before it.
//! - **Replicas**: two servers at the same zxid have the same tree digest.
//!
//! The committed txns also give the session checker (`session_order`) its
//! committed changes, replayed through a `DataTree` as a replica applies them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::proto::codes::event;
use crate::sim::server::Disk;
use crate::sim::session_order::{Change, ChangeKind};
use crate::tree::DataTree;
use crate::txn::{Txn, TxnBody};
use crate::zab::election::ServerState;
use crate::zab::ServerId;

/// Violations kept (the first one matters; the rest are context).
const VIOLATIONS_MAX: usize = 20;

#[derive(Default)]
pub struct Invariants {
    leaders: BTreeMap<u32, ServerId>,
    committed: BTreeMap<i64, Arc<Txn>>,
    /// Zxids an established leader's history reached through a snapshot
    /// (its txns are committed, their contents checked by digest only).
    committed_snapshots: std::collections::BTreeSet<i64>,
    next: BTreeMap<i64, i64>,
    digests: BTreeMap<i64, u64>,
    /// Every txn any server logged, by zxid (one leader per epoch makes a
    /// zxid name one txn), with the txn it followed and when it was first
    /// logged (by its leader, right after proposing it): the contents of the
    /// txns a committed snapshot holds, which may never have been delivered.
    logged: BTreeMap<i64, Logged>,
    /// The simulator's event number, set before each event: when things
    /// happened, in the clients' time.
    pub step: u64,
    /// When each zxid was first committed (delivered, or established by a
    /// leader).
    first_committed: BTreeMap<i64, u64>,
    violations: Vec<String>,
}

/// A logged txn, the zxid it followed, and the step it was first logged at.
struct Logged {
    prev: i64,
    txn: Arc<Txn>,
    step: u64,
}

/// A closeSession some server logged (an expiry, or a client's request),
/// with the window in which it took effect: in the order that places every
/// committed write at its commit, between its first log and its first
/// commit; `committed` is `None` if no server was seen committing it (it
/// may still be, inside a committed snapshot, or never be).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedClose {
    pub session_id: i64,
    pub zxid: i64,
    pub logged: u64,
    pub committed: Option<u64>,
}

impl Invariants {
    fn violation(&mut self, text: String) {
        if self.violations.len() < VIOLATIONS_MAX {
            self.violations.push(text);
        }
    }

    pub fn take_violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }

    /// A server appended `txn` to its log, after `prev`.
    pub fn on_logged(&mut self, prev: i64, txn: Arc<Txn>) {
        let step = self.step;
        self.logged.entry(txn.zxid).or_insert(Logged { prev, txn, step });
    }

    /// Every closeSession any server logged, in zxid order.
    pub fn logged_closes(&self) -> Vec<LoggedClose> {
        self.logged
            .iter()
            .filter(|(_, logged)| matches!(logged.txn.body, TxnBody::CloseSession))
            .map(|(&zxid, logged)| LoggedClose {
                session_id: logged.txn.session_id,
                zxid,
                logged: logged.step,
                committed: self.first_committed.get(&zxid).copied(),
            })
            .collect()
    }

    /// The highest committed zxid: a txn delivered or established, or a
    /// committed snapshot's (0 before anything committed).
    pub fn committed_max(&self) -> i64 {
        let txn = self.committed.last_key_value().map_or(0, |(zxid, _)| *zxid);
        let snapshot = self.committed_snapshots.last().copied().unwrap_or(0);
        txn.max(snapshot)
    }

    /// The committed txn at `zxid`, if any server delivered or established it.
    pub fn committed(&self, zxid: i64) -> Option<&Arc<Txn>> {
        self.committed.get(&zxid)
    }

    /// Every create, delete and setData the committed txns made, in zxid
    /// order and, within a txn (a multi, or a closeSession deleting the
    /// session's ephemerals), in the order it applied them: the committed
    /// history replayed from the empty tree, so each change is exactly the
    /// watch trigger a replica's apply produces. A committed snapshot's txns
    /// that no server delivered (it recovered them from its log, then sent
    /// its tree as a SNAP) come from the txns logged below it. Fails if the
    /// replay disagrees with a digest a server reported.
    pub fn committed_changes(&self) -> Result<Vec<Change>, String> {
        let mut tree = DataTree::new();
        let mut triggers = Vec::new();
        let mut changes = Vec::new();
        let mut snapshots = self.committed_snapshots.iter().copied().peekable();
        let mut apply = |tree: &mut DataTree, txn: &Txn| -> Result<(), String> {
            triggers.clear();
            tree.apply(txn, &mut triggers);
            for trigger in triggers.drain(..) {
                let kind = match trigger.event_type {
                    event::NODE_CREATED => ChangeKind::Created,
                    event::NODE_DELETED => ChangeKind::Deleted,
                    event::NODE_DATA_CHANGED => ChangeKind::DataChanged,
                    // The parent's NodeChildrenChanged follows from its
                    // child's create or delete.
                    _ => continue,
                };
                changes.push(Change { zxid: txn.zxid, path: trigger.path, kind });
            }
            match self.digests.get(&txn.zxid) {
                Some(&digest) if tree.digest() != digest => Err(format!(
                    "the committed txns replay to digest {:#x} at {:#x}, a server had {digest:#x}",
                    tree.digest(),
                    txn.zxid
                )),
                _ => Ok(()),
            }
        };
        let mut committed = self.committed.values().peekable();
        loop {
            let next = committed.peek().map_or(i64::MAX, |txn| txn.zxid);
            // A committed snapshot below the next committed txn, above the
            // replay: its txns are the ones logged between.
            if let Some(snapshot) = snapshots.next_if(|&snapshot| snapshot < next) {
                let from = tree.last_processed_zxid();
                if snapshot <= from {
                    continue;
                }
                // Back from the snapshot along the logs to the replay.
                let mut chain = Vec::new();
                let mut at = snapshot;
                while at > from {
                    let Some(logged) = self.logged.get(&at) else {
                        return Err(format!("the committed snapshot at {snapshot:#x} holds {at:#x}, which no server logged"));
                    };
                    chain.push(&logged.txn);
                    at = logged.prev;
                }
                if at != from {
                    return Err(format!("the committed snapshot at {snapshot:#x} does not follow the committed {from:#x}"));
                }
                for txn in chain.into_iter().rev() {
                    apply(&mut tree, txn)?;
                }
                continue;
            }
            let Some(txn) = committed.next() else { break };
            apply(&mut tree, txn)?;
        }
        Ok(changes)
    }

    fn commit(&mut self, server: ServerId, zxid: i64, txn: &Arc<Txn>, how: &str) {
        match self.committed.get(&zxid) {
            Some(existing) if **existing != **txn => {
                let text = format!(
                    "Agreement: server {server} {how} {zxid:#x} as {:?}, but it was committed as {:?}",
                    txn.body, existing.body
                );
                self.violation(text);
            }
            Some(_) => {}
            None => {
                self.committed.insert(zxid, txn.clone());
                self.first_committed.insert(zxid, self.step);
            }
        }
    }

    pub fn on_delivered(&mut self, server: ServerId, zxid: i64, prev: i64, digest: u64, txn: &Arc<Txn>) {
        if txn.zxid != zxid {
            self.violation(format!("Integrity: server {server} delivered {zxid:#x} carrying a txn for {:#x}", txn.zxid));
        }
        if zxid <= prev {
            self.violation(format!("TotalOrder: server {server} delivered {zxid:#x} after {prev:#x}"));
        }
        if prev != 0 && !self.committed.contains_key(&prev) && !self.committed_snapshots.contains(&prev) {
            self.violation(format!(
                "PrefixConsistency: server {server} delivered {zxid:#x} on top of {prev:#x}, which was never committed"
            ));
        }
        match self.next.get(&prev) {
            Some(&after) if after != zxid => {
                self.violation(format!(
                    "PrefixConsistency: server {server} delivered {zxid:#x} after {prev:#x}, where another server delivered {after:#x}"
                ));
            }
            Some(_) => {}
            None => {
                self.next.insert(prev, zxid);
            }
        }
        self.commit(server, zxid, txn, "delivered");
        self.check_digest(server, zxid, digest);
    }

    fn check_digest(&mut self, server: ServerId, zxid: i64, digest: u64) {
        match self.digests.get(&zxid) {
            Some(&known) if known != digest => {
                self.violation(format!("Replicas: server {server} at {zxid:#x} has digest {digest:#x}, another had {known:#x}"));
            }
            Some(_) => {}
            None => {
                self.digests.insert(zxid, digest);
            }
        }
    }

    /// A server began serving. A leader's history is committed from now on.
    pub fn on_serving(&mut self, server: ServerId, state: ServerState, epoch: u32, disk: &Disk, tree: &DataTree) {
        if state == ServerState::Leading {
            if let Some(&other) = self.leaders.get(&epoch) {
                if other != server {
                    self.violation(format!("Leadership: servers {other} and {server} both lead epoch {epoch}"));
                }
            }
            self.leaders.insert(epoch, server);
            let base = disk.base.last_processed_zxid();
            if base != 0 {
                self.committed_snapshots.insert(base);
            }
            // Its history: what it logged after its snapshot, before this epoch.
            let epoch_start = crate::zab::make_zxid(epoch, 0);
            let logged: BTreeMap<i64, &Arc<Txn>> = disk
                .log
                .iter()
                .chain(&disk.pending)
                .filter(|(zxid, _)| *zxid > base && *zxid < epoch_start)
                .map(|(zxid, entry)| (*zxid, &entry.txn))
                .collect();
            let missing: Vec<i64> =
                self.committed.range(base + 1..epoch_start).map(|(zxid, _)| *zxid).filter(|zxid| !logged.contains_key(zxid)).collect();
            if let Some(first) = missing.first() {
                self.violation(format!(
                    "PrimaryIntegrity: server {server} leads epoch {epoch} without committed {first:#x} ({} committed txns missing; its history ends at {:#x})",
                    missing.len(),
                    disk.last_logged()
                ));
            }
            let history: Vec<(i64, Arc<Txn>)> = logged.into_iter().map(|(zxid, txn)| (zxid, txn.clone())).collect();
            let mut prev = base;
            for (zxid, txn) in history {
                self.commit(server, zxid, &txn, "leads with");
                if let Some(&after) = self.next.get(&prev) {
                    if after != zxid {
                        self.violation(format!(
                            "PrefixConsistency: leader {server} has {zxid:#x} after {prev:#x}, where {after:#x} was delivered"
                        ));
                    }
                } else {
                    self.next.insert(prev, zxid);
                }
                prev = zxid;
            }
        }
        self.check_digest(server, tree.last_processed_zxid(), tree.digest());
    }
}
