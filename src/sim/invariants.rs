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

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::sim::server::Disk;
use crate::tree::DataTree;
use crate::txn::Txn;
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
    violations: Vec<String>,
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

    /// The committed txn at `zxid`, if any server delivered or established it.
    pub fn committed(&self, zxid: i64) -> Option<&Arc<Txn>> {
        self.committed.get(&zxid)
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
