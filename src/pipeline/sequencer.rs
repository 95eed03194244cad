//! The sequencer: the one place in a process that orders writes. It owns the
//! SessionTracker and the Prep stage, assigns zxids, expires sessions and
//! removes empty containers and expired TTL nodes. Each txn leaves as
//! `Effect::Append`: the runtime logs it (issue: durability) and only then
//! hands it to the shards, together with the `Deliver` effects behind it,
//! strictly in order. Standalone is an ensemble of one: the leader's own
//! persisted append is its quorum.

use std::sync::Arc;

use super::prep::{Prep, PrepConfig};
use super::{Committed, ToSequencer};
use crate::proto::Request;
use crate::rng::Rng;
use crate::session::SessionTracker;
use crate::tree::DataTree;
use crate::txn::{Txn, TxnBody};

#[derive(Debug, Clone)]
pub struct SequencerConfig {
    pub tick_ms: i64,
    pub extended_types_enabled: bool,
    pub server_id: u8,
    pub password_secret: u64,
    /// How often the container manager looks for empty containers and expired
    /// TTL nodes (ZooKeeper's znode.container.checkIntervalMs).
    pub container_check_interval_ms: i64,
    /// Most container deletions per check (znode.container.maxPerMinute, scaled).
    pub container_deletes_per_check_max: usize,
    /// ZooKeeper's snapCount: a snapshot after about this many txns.
    pub snap_count: u32,
    /// Seeds the snapshot-interval randomisation.
    pub random_seed: u64,
}

#[derive(Debug)]
pub enum Effect {
    /// Log this txn, then send it (as `Committed::Txn`) to every shard.
    Append(Committed),
    /// Send to the shards after every earlier Append is committed.
    Deliver(Committed),
    /// Take a snapshot at this zxid (the last Append before it), and start a
    /// new log segment after it, as ZooKeeper rolls its log at a snapshot.
    Snapshot { zxid: i64 },
}

pub struct Sequencer {
    prep: Prep,
    sessions: SessionTracker,
    config: SequencerConfig,
    container_check_last_ms: i64,
    txns_since_snapshot: u64,
    /// snapCount/2 plus a random part, as ZooKeeper's SyncRequestProcessor
    /// picks it, so servers do not all snapshot at once.
    snapshot_threshold: u64,
    rng: Rng,
    /// Set once the log failed: no write is accepted any more.
    writes_failed: bool,
}

impl Sequencer {
    pub fn new(tree: DataTree, config: SequencerConfig, now_ms: i64) -> Sequencer {
        let sessions = SessionTracker::new(config.tick_ms, config.server_id, now_ms, config.password_secret);
        let mut sessions = sessions;
        // Sessions recovered from disk get their full timeout again from now.
        for (session_id, timeout_ms) in tree.sessions().iter().map(|(id, timeout)| (*id, *timeout)).collect::<Vec<_>>() {
            sessions.track(session_id, timeout_ms, now_ms);
        }
        let prep = Prep::new(tree, PrepConfig { extended_types_enabled: config.extended_types_enabled });
        let rng = Rng::new(config.random_seed);
        let mut sequencer = Sequencer {
            prep,
            sessions,
            config,
            container_check_last_ms: now_ms,
            txns_since_snapshot: 0,
            snapshot_threshold: 0,
            rng,
            writes_failed: false,
        };
        sequencer.snapshot_threshold = sequencer.next_snapshot_threshold();
        sequencer
    }

    fn next_snapshot_threshold(&mut self) -> u64 {
        let half = (self.config.snap_count as u64 / 2).max(1);
        half + self.rng.below(half)
    }

    /// The log failed: from now on every write is answered with an error.
    pub fn fail_writes(&mut self) {
        self.writes_failed = true;
    }

    pub fn writes_failed(&self) -> bool {
        self.writes_failed
    }

    /// Ensemble leader: the next txn takes the zxid after `zxid` (the new
    /// epoch's first counter).
    pub fn set_zxid_last(&mut self, zxid: i64) {
        self.prep.set_zxid_last(zxid);
    }

    pub fn zxid_last(&self) -> i64 {
        self.prep.zxid_last()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Live sessions with the wall-clock time their expiry bucket closes.
    pub fn session_expiries(&self) -> Vec<(i64, i64)> {
        self.sessions.expiries()
    }

    pub fn tree(&self) -> &DataTree {
        self.prep.tree()
    }

    fn append(&mut self, txn: Txn, origin: Option<super::Origin>, effects: &mut Vec<Effect>) {
        let zxid = txn.zxid;
        effects.push(Effect::Append(Committed::Txn { txn: Arc::new(txn), origin }));
        self.txns_since_snapshot += 1;
        if self.txns_since_snapshot >= self.snapshot_threshold {
            self.txns_since_snapshot = 0;
            self.snapshot_threshold = self.next_snapshot_threshold();
            effects.push(Effect::Snapshot { zxid });
        }
    }

    pub fn step(&mut self, now_ms: i64, input: ToSequencer, effects: &mut Vec<Effect>) {
        if self.writes_failed {
            match input {
                ToSequencer::Write { origin, .. } | ToSequencer::CreateSession { origin, .. } => {
                    let err = crate::proto::ErrorCode::SystemError;
                    effects.push(Effect::Deliver(Committed::Failed { origin, err }));
                    return;
                }
                _ => {}
            }
        }
        match input {
            ToSequencer::Write { origin, session_id, request, auth } => {
                let live = self.sessions.touch(session_id, now_ms);
                if let Request::CloseSession = request {
                    self.sessions.set_closing(session_id);
                }
                let txn = self.prep.prep(now_ms, session_id, origin.xid, &request, &auth, live);
                if let TxnBody::CloseSession = txn.body {
                    self.sessions.remove(session_id);
                }
                self.append(txn, Some(origin), effects);
            }
            ToSequencer::Sync { origin, path } => {
                effects.push(Effect::Deliver(Committed::SyncDone { origin, path }));
            }
            ToSequencer::CreateSession { origin, timeout_ms } => {
                let session_id = self.sessions.create(timeout_ms, now_ms);
                let txn = self.prep.create_session(session_id, timeout_ms, now_ms);
                self.append(txn, Some(origin), effects);
            }
            ToSequencer::Revalidate { origin, session_id, timeout_ms } => {
                // ZooKeeper's revalidateSession: touch with the new timeout.
                let valid = self.sessions.get(session_id).is_some_and(|state| !state.closing);
                if valid {
                    self.sessions.track(session_id, timeout_ms, now_ms);
                }
                effects.push(Effect::Deliver(Committed::Revalidated { origin, session_id, timeout_ms, valid }));
            }
            ToSequencer::Touch { session_ids } => {
                for session_id in session_ids {
                    self.sessions.touch(session_id, now_ms);
                }
            }
        }
    }

    /// Periodic work: expire sessions, then remove empty containers and expired TTL nodes.
    pub fn tick(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.writes_failed {
            return;
        }
        for session_id in self.sessions.expire(now_ms) {
            tracing::info!(session = format_args!("{session_id:#x}"), "session expired");
            let txn = self.prep.close_session(session_id, 0, now_ms);
            self.sessions.remove(session_id);
            self.append(txn, None, effects);
        }
        if now_ms - self.container_check_last_ms >= self.config.container_check_interval_ms {
            self.container_check_last_ms = now_ms;
            let candidates =
                self.prep.tree().container_candidates(now_ms, self.config.container_deletes_per_check_max);
            for path in candidates {
                let txn = self.prep.delete_container(&path, now_ms);
                self.append(txn, None, effects);
            }
        }
    }

    pub fn password(&self, session_id: i64) -> [u8; 16] {
        self.sessions.password(session_id)
    }
}
