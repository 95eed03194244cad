//! ZAB's broadcast phase as pure state machines: the leader proposes, counts
//! ACKs and commits in zxid order; followers log, ACK after their fsync and
//! apply what is committed; observers log and apply what they are INFORMed of.
//!
//! Nothing here does I/O or reads a clock. Each input returns `Effect`s for the
//! runtime to carry out, in order: send a message (on a FIFO link — ZAB assumes
//! FIFO channels), append to the txn log, apply a committed txn, drop a learner
//! or step down. The runtime reports the results back: `on_logged` after an
//! fsync, `on_ack`/`on_ping` for what arrives, `on_tick` for the passage of time.
//!
//! Learners are added by the runtime after the sync phase
//! (`sync::plan_sync`), at which point `Leader::add_learner` forwards the
//! proposals still in flight — ZooKeeper's `Leader.startForwarding`.
//!
//! Invariants are checked with `assert!`, which stays on in release builds: a
//! violation means the protocol is broken and continuing could lose or reorder
//! committed data.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use super::{counter_of, epoch_of, is_quorum, make_zxid, ServerId};

/// Proposals the leader keeps in flight (proposed, not yet committed) before
/// `propose` pushes back with `ProposeError::Backpressure`.
pub const OUTSTANDING_PROPOSALS_MAX: usize = 1000;

/// Messages the runtime may queue to one learner before it gives up on it.
/// The leader does not count queued messages itself: the runtime owns the
/// queues and calls `Leader::on_learner_queue_full` when one reaches this
/// bound; the leader then drops that learner (`Effect::DropLearner`), which
/// must reconnect and re-sync (DIFF/TRUNC/SNAP). Dropping is safe — the
/// learner's ACKs stop counting — whereas an unbounded queue would let one slow
/// learner exhaust the leader's memory. ZooKeeper's `queuedPackets` is
/// unbounded; this bound is warden's. Memory is bounded by bytes
/// (`limits::PEER_QUEUE_BYTES_MAX`); this count is large because a learner
/// that syncs by SNAP has every txn committed while the snapshot is encoded,
/// sent and installed (seconds, for a million znodes) queued behind it, two
/// messages each. With a bound of 10,000, a leader taking 4,000 writes a
/// second dropped such a learner once per sync, and one taking 10,000 every
/// 0.7 s (`perf/snap_sync.sh`).
pub const LEARNER_QUEUE_MAX: usize = 1 << 22;

/// The last counter a leader may assign in an epoch. ZooKeeper refuses a zxid
/// whose low 32 bits are all ones (ZOOKEEPER-1277): the leader must step down
/// so a new epoch starts.
pub const LAST_COUNTER: u32 = 0xffff_fffe;

/// Peer-to-peer messages of the broadcast phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<T> {
    /// Leader → follower.
    Proposal { zxid: i64, txn: T },
    /// Follower → leader, after the proposal is durable in its log.
    Ack { zxid: i64 },
    /// Leader → follower: everything up to `zxid` is committed.
    Commit { zxid: i64 },
    /// Leader → observer: a committed txn.
    Inform { zxid: i64, txn: T },
    /// Leader → learner with the last proposed zxid; learner → leader with its
    /// last logged zxid. Keeps the link in touch within the sync limit.
    Ping { zxid: i64 },
}

/// What the runtime must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<T> {
    Send {
        to: ServerId,
        msg: Message<T>,
    },
    /// Append to the local txn log; report `on_logged` once it is durable.
    LogAppend {
        zxid: i64,
        txn: T,
    },
    /// Leader: a quorum has logged `zxid` and every earlier zxid is committed.
    /// Apply it locally (the commit point).
    Commit {
        zxid: i64,
        txn: T,
    },
    /// Learner: apply a committed txn to the data tree.
    Apply {
        zxid: i64,
        txn: T,
    },
    /// Leader: close the connection to this learner; it must re-sync.
    DropLearner {
        sid: ServerId,
        reason: &'static str,
    },
    /// Leader: stop leading and go back to election. Logged with the reason.
    StepDown {
        reason: String,
    },
}

/// Why `Leader::propose` refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposeError {
    /// `OUTSTANDING_PROPOSALS_MAX` proposals are in flight; retry after commits.
    Backpressure,
    /// The epoch's counter is used up (ZOOKEEPER-1277): the leader has stopped
    /// leading and the runtime must step down so a new epoch is elected.
    EpochExhausted,
    /// This leader has stepped down.
    NotLeading,
}

struct Proposal<T> {
    txn: T,
    /// Voting followers that ACKed (the leader is `self_logged`).
    acks: BTreeSet<ServerId>,
    self_logged: bool,
}

struct LearnerState {
    observer: bool,
    last_heard_ms: u64,
    /// While the learner syncs (until its NEWLEADER ACK), when it must be
    /// done: it is held to initLimit, not syncLimit, as ZooKeeper's
    /// LearnerHandler is until that ACK. A SNAP's learner sends nothing
    /// while the snapshot streams and installs.
    sync_deadline_ms: Option<u64>,
    /// The highest zxid this follower ACKed (or was synced to).
    last_ack: i64,
    /// The oldest proposal this follower has not ACKed and since when the
    /// leader has seen it waiting (ZooKeeper's SyncLimitCheck).
    waiting: Option<(i64, u64)>,
}

/// The leader of one epoch.
pub struct Leader<T> {
    my_id: ServerId,
    voters: BTreeSet<ServerId>,
    observers: BTreeSet<ServerId>,
    epoch: u32,
    sync_limit_ms: u64,
    last_proposed: i64,
    last_logged: i64,
    last_committed: i64,
    outstanding: BTreeMap<i64, Proposal<T>>,
    learners: BTreeMap<ServerId, LearnerState>,
    leading: bool,
    /// Planted bug (simulator only): commit on any single ACK.
    commit_on_minority: bool,
}

impl<T: Clone> Leader<T> {
    /// A leader for `epoch`, whose history ends at `last_committed_zxid`.
    /// `voters` is the voting membership and must include `my_id`; `observers`
    /// the configured observers. No learner is connected yet: add the synced
    /// ones with `add_learner` before the first `on_tick`, or the leader finds
    /// itself without a quorum and steps down. `sync_limit_ms` is
    /// `syncLimit * tickTime`.
    pub fn new(
        my_id: ServerId,
        voters: Vec<ServerId>,
        observers: Vec<ServerId>,
        epoch: u32,
        last_committed_zxid: i64,
        sync_limit_ms: u64,
    ) -> Self {
        let voters: BTreeSet<ServerId> = voters.into_iter().collect();
        let observers: BTreeSet<ServerId> = observers.into_iter().collect();
        assert!(voters.contains(&my_id), "leader {my_id} is not a voter");
        assert!(
            voters.is_disjoint(&observers),
            "a server is both voter and observer"
        );
        assert!(
            epoch >= epoch_of(last_committed_zxid),
            "epoch went backward: leading epoch {epoch} after zxid 0x{last_committed_zxid:x}"
        );
        // The first proposal of a new epoch is (epoch, 1); ZooKeeper's
        // NEWLEADER zxid is (epoch, 0).
        let last_proposed = if epoch_of(last_committed_zxid) == epoch {
            last_committed_zxid
        } else {
            make_zxid(epoch, 0)
        };
        Leader {
            my_id,
            voters,
            observers,
            epoch,
            sync_limit_ms,
            last_proposed,
            last_logged: last_proposed,
            last_committed: last_committed_zxid,
            outstanding: BTreeMap::new(),
            learners: BTreeMap::new(),
            leading: true,
            commit_on_minority: false,
        }
    }

    /// Starts this epoch's counter after `counter` instead of 0, before
    /// anything is proposed (`PeerConfig::epoch_counter_start`): the
    /// simulator's way to reach the counter's end (ZOOKEEPER-1277) quickly.
    pub fn start_counter_after(&mut self, counter: u32) {
        assert!(
            self.outstanding.is_empty() && self.last_proposed == make_zxid(self.epoch, 0),
            "the counter of epoch {} can only start over before its first proposal",
            self.epoch
        );
        assert!(counter < LAST_COUNTER, "counter 0x{counter:x} leaves no zxid to propose");
        self.last_proposed = make_zxid(self.epoch, counter);
        self.last_logged = self.last_proposed;
    }

    /// Plants a known bug for the simulator's checkers to catch: commit a
    /// proposal once any one server (the leader itself) has logged it.
    pub fn plant_commit_on_minority(&mut self) {
        self.commit_on_minority = true;
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    pub fn last_proposed(&self) -> i64 {
        self.last_proposed
    }
    pub fn last_committed(&self) -> i64 {
        self.last_committed
    }
    pub fn is_leading(&self) -> bool {
        self.leading
    }
    /// Proposed, not yet committed, oldest first.
    pub fn outstanding_zxids(&self) -> Vec<i64> {
        self.outstanding.keys().copied().collect()
    }
    /// Learners being forwarded to (followers and observers).
    pub fn learner_count(&self) -> usize {
        self.learners.len()
    }
    /// Followers (voters) being forwarded to.
    pub fn follower_count(&self) -> usize {
        self.learners.values().filter(|l| !l.observer).count()
    }
    /// Whether any proposal is in flight (proposed, not committed).
    pub fn has_outstanding(&self) -> bool {
        !self.outstanding.is_empty()
    }
    /// Whether `propose` would take a txn now.
    pub fn can_propose(&self) -> bool {
        self.leading && self.outstanding.len() < OUTSTANDING_PROPOSALS_MAX
    }
    pub fn is_observer_configured(&self, sid: ServerId) -> bool {
        self.observers.contains(&sid)
    }

    /// Propose `txn` with the next zxid of the epoch: PROPOSAL to every
    /// connected follower (not observers), then append to the leader's log.
    pub fn propose(&mut self, txn: T) -> Result<(i64, Vec<Effect<T>>), ProposeError> {
        if !self.leading {
            return Err(ProposeError::NotLeading);
        }
        if self.outstanding.len() >= OUTSTANDING_PROPOSALS_MAX {
            return Err(ProposeError::Backpressure);
        }
        let counter = counter_of(self.last_proposed);
        if counter >= LAST_COUNTER {
            self.leading = false;
            return Err(ProposeError::EpochExhausted);
        }
        let zxid = make_zxid(self.epoch, counter + 1);
        assert!(
            zxid > self.last_proposed,
            "zxid 0x{zxid:x} not above 0x{:x}",
            self.last_proposed
        );
        self.last_proposed = zxid;
        let mut effects = Vec::with_capacity(self.learners.len() + 1);
        for (&sid, l) in &self.learners {
            if !l.observer {
                effects.push(Effect::Send {
                    to: sid,
                    msg: Message::Proposal {
                        zxid,
                        txn: txn.clone(),
                    },
                });
            }
        }
        effects.push(Effect::LogAppend {
            zxid,
            txn: txn.clone(),
        });
        self.outstanding.insert(
            zxid,
            Proposal {
                txn,
                acks: BTreeSet::new(),
                self_logged: false,
            },
        );
        Ok((zxid, effects))
    }

    /// The leader's own log is durable through `zxid`: its own ACK for every
    /// proposal up to it.
    pub fn on_logged(&mut self, zxid: i64) -> Vec<Effect<T>> {
        assert!(
            zxid <= self.last_proposed,
            "logged 0x{zxid:x} was never proposed"
        );
        if zxid <= self.last_logged {
            return Vec::new();
        }
        self.last_logged = zxid;
        for (_, p) in self.outstanding.range_mut(..=zxid) {
            p.self_logged = true;
        }
        self.commit_ready()
    }

    /// An ACK from `sid`. Ignored from observers and unknown learners, for the
    /// NEWLEADER zxid `(epoch, 0)`, and for committed or unknown zxids. Only
    /// voters count toward the quorum; any packet keeps the learner in touch.
    pub fn on_ack(&mut self, sid: ServerId, zxid: i64, now_ms: u64) -> Vec<Effect<T>> {
        if !self.leading {
            return Vec::new();
        }
        let Some(l) = self.learners.get_mut(&sid) else {
            return Vec::new();
        };
        l.last_heard_ms = l.last_heard_ms.max(now_ms);
        if l.observer {
            return Vec::new();
        }
        l.last_ack = l.last_ack.max(zxid);
        if counter_of(zxid) == 0 || zxid <= self.last_committed {
            return Vec::new();
        }
        let Some(p) = self.outstanding.get_mut(&zxid) else {
            return Vec::new();
        };
        if self.voters.contains(&sid) {
            p.acks.insert(sid);
        }
        self.commit_ready()
    }

    /// `sid`, added, has yet to finish its sync (ACK NEWLEADER): until then
    /// only `deadline_ms` (initLimit from the sync's start) can drop it.
    pub fn mark_syncing(&mut self, sid: ServerId, deadline_ms: u64) {
        if let Some(l) = self.learners.get_mut(&sid) {
            l.sync_deadline_ms = Some(deadline_ms);
        }
    }

    /// `sid` finished its sync: from now on it is held to syncLimit.
    pub fn mark_synced(&mut self, sid: ServerId, now_ms: u64) {
        if let Some(l) = self.learners.get_mut(&sid) {
            if l.sync_deadline_ms.take().is_some() {
                l.last_heard_ms = l.last_heard_ms.max(now_ms);
            }
        }
    }

    /// Any packet from `sid` (a PING reply) keeps it in touch.
    pub fn on_ping(&mut self, sid: ServerId, now_ms: u64) {
        if let Some(l) = self.learners.get_mut(&sid) {
            l.last_heard_ms = l.last_heard_ms.max(now_ms);
        }
    }

    /// Start forwarding to a learner that finished syncing through
    /// `forward_from` (`SyncPlan::forward_from`): a follower gets every
    /// outstanding proposal above it now, then the live stream; an observer gets
    /// INFORMs as proposals commit. The sync must cover everything this leader
    /// has committed. A learner already connected is replaced (its ACKs are
    /// forgotten).
    pub fn add_learner(
        &mut self,
        sid: ServerId,
        is_observer: bool,
        forward_from: i64,
        now_ms: u64,
    ) -> Vec<Effect<T>> {
        assert_ne!(sid, self.my_id, "the leader cannot be its own learner");
        self.remove_learner(sid);
        if !self.leading {
            return Vec::new();
        }
        let mut effects = Vec::new();
        if !is_observer {
            for (&zxid, p) in self.outstanding.range(forward_from.saturating_add(1)..) {
                effects.push(Effect::Send {
                    to: sid,
                    msg: Message::Proposal {
                        zxid,
                        txn: p.txn.clone(),
                    },
                });
            }
        }
        self.learners.insert(
            sid,
            LearnerState {
                observer: is_observer,
                last_heard_ms: now_ms,
                sync_deadline_ms: None,
                last_ack: forward_from,
                waiting: None,
            },
        );
        effects
    }

    /// The learner is gone. Its ACKs on outstanding proposals stop counting
    /// (it may be TRUNCated when it re-syncs), so removing never commits.
    pub fn remove_learner(&mut self, sid: ServerId) {
        if self.learners.remove(&sid).is_some() {
            for p in self.outstanding.values_mut() {
                p.acks.remove(&sid);
            }
        }
    }

    /// The runtime's queue to `sid` reached `LEARNER_QUEUE_MAX`: drop it so it
    /// re-syncs.
    pub fn on_learner_queue_full(&mut self, sid: ServerId) -> Vec<Effect<T>> {
        if !self.learners.contains_key(&sid) {
            return Vec::new();
        }
        self.remove_learner(sid);
        vec![Effect::DropLearner {
            sid,
            reason: "learner queue full",
        }]
    }

    /// Call every half tick. Drops learners not heard from within the sync
    /// limit, and followers that left a proposal un-ACKed for longer than it
    /// (ZooKeeper's "transaction timeout"), and learners still syncing past
    /// their initLimit deadline; steps down if fewer than a quorum
    /// of voters, the leader included, are still in touch ("Not sufficient
    /// followers synced"); otherwise pings every learner.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Effect<T>> {
        if !self.leading {
            return Vec::new();
        }
        let mut effects = Vec::new();
        let mut drop = Vec::new();
        for (&sid, l) in self.learners.iter_mut() {
            if let Some(deadline_ms) = l.sync_deadline_ms {
                if now_ms > deadline_ms {
                    drop.push((sid, "not synced within initLimit"));
                }
                continue;
            }
            if now_ms.saturating_sub(l.last_heard_ms) > self.sync_limit_ms {
                drop.push((sid, "no packet within syncLimit"));
                continue;
            }
            if l.observer {
                continue;
            }
            let oldest = self
                .outstanding
                .range(l.last_ack.saturating_add(1)..)
                .next()
                .map(|(&z, _)| z);
            match (oldest, l.waiting) {
                (None, _) => l.waiting = None,
                (Some(z), Some((w, since))) if z == w => {
                    if now_ms.saturating_sub(since) > self.sync_limit_ms {
                        drop.push((sid, "transaction timeout: no ACK within syncLimit"));
                    }
                }
                (Some(z), _) => l.waiting = Some((z, now_ms)),
            }
        }
        for (sid, reason) in drop {
            self.remove_learner(sid);
            effects.push(Effect::DropLearner { sid, reason });
        }
        let in_touch: Vec<ServerId> = std::iter::once(self.my_id)
            .chain(
                self.learners
                    .keys()
                    .copied()
                    .filter(|sid| self.voters.contains(sid)),
            )
            .collect();
        if !is_quorum(in_touch.len(), self.voters.len()) {
            self.leading = false;
            let mut reason =
                String::from("Not sufficient followers synced, only synced with sids: [ ");
            for (i, sid) in in_touch.iter().enumerate() {
                let _ = write!(reason, "{}{sid}", if i > 0 { ", " } else { "" });
            }
            reason.push_str(" ]");
            effects.push(Effect::StepDown { reason });
            return effects;
        }
        for &sid in self.learners.keys() {
            effects.push(Effect::Send {
                to: sid,
                msg: Message::Ping {
                    zxid: self.last_proposed,
                },
            });
        }
        effects
    }

    /// Commit, strictly in zxid order, every proposal at the head of the
    /// outstanding queue that a quorum has logged.
    fn commit_ready(&mut self) -> Vec<Effect<T>> {
        let mut effects = Vec::new();
        while let Some(entry) = self.outstanding.first_entry() {
            let p = entry.get();
            let count = p.acks.len() + usize::from(p.self_logged);
            let enough = if self.commit_on_minority { count >= 1 } else { is_quorum(count, self.voters.len()) };
            if !enough {
                break;
            }
            let zxid = *entry.key();
            let p = entry.remove();
            assert!(
                zxid > self.last_committed,
                "commit 0x{zxid:x} not above 0x{:x}",
                self.last_committed
            );
            self.last_committed = zxid;
            effects.push(Effect::Commit {
                zxid,
                txn: p.txn.clone(),
            });
            for (&sid, l) in &self.learners {
                let msg = if l.observer {
                    Message::Inform {
                        zxid,
                        txn: p.txn.clone(),
                    }
                } else {
                    Message::Commit { zxid }
                };
                effects.push(Effect::Send { to: sid, msg });
            }
        }
        effects
    }
}

/// A follower in the broadcast phase, after it synced with `leader`.
pub struct Follower<T> {
    my_id: ServerId,
    leader: ServerId,
    last_received: i64,
    last_logged: i64,
    last_committed: i64,
    /// The highest COMMIT received; applying waits for the local fsync.
    commit_target: i64,
    /// Received, not yet applied, in zxid order.
    pending: VecDeque<(i64, T)>,
}

impl<T: Clone> Follower<T> {
    pub fn new(
        my_id: ServerId,
        leader: ServerId,
        last_logged_zxid: i64,
        last_committed_zxid: i64,
    ) -> Self {
        assert!(
            last_committed_zxid <= last_logged_zxid,
            "committed beyond the log"
        );
        Follower {
            my_id,
            leader,
            last_received: last_logged_zxid,
            last_logged: last_logged_zxid,
            last_committed: last_committed_zxid,
            commit_target: last_committed_zxid,
            pending: VecDeque::new(),
        }
    }

    pub fn id(&self) -> ServerId {
        self.my_id
    }
    pub fn leader(&self) -> ServerId {
        self.leader
    }
    pub fn last_logged(&self) -> i64 {
        self.last_logged
    }
    pub fn last_committed(&self) -> i64 {
        self.last_committed
    }
    pub fn last_received(&self) -> i64 {
        self.last_received
    }
    /// Whether `zxid` was received and not applied yet.
    pub fn has_pending(&self, zxid: i64) -> bool {
        self.pending.iter().any(|&(z, _)| z == zxid)
    }

    /// A PROPOSAL: append it to the log. Zxids must strictly increase and the
    /// epoch never goes backward.
    pub fn on_proposal(&mut self, zxid: i64, txn: T) -> Vec<Effect<T>> {
        assert!(
            epoch_of(zxid) >= epoch_of(self.last_received),
            "epoch went backward: proposal 0x{zxid:x} after 0x{:x}",
            self.last_received
        );
        assert!(
            zxid > self.last_received,
            "proposal 0x{zxid:x} not above 0x{:x}",
            self.last_received
        );
        self.last_received = zxid;
        self.pending.push_back((zxid, txn.clone()));
        vec![Effect::LogAppend { zxid, txn }]
    }

    /// The log is durable through `zxid`: ACK each proposal that just became
    /// durable (never before), then apply what is committed and now logged.
    pub fn on_logged(&mut self, zxid: i64) -> Vec<Effect<T>> {
        assert!(
            zxid <= self.last_received,
            "logged 0x{zxid:x} was never received"
        );
        if zxid <= self.last_logged {
            return Vec::new();
        }
        let mut effects = Vec::new();
        for &(z, _) in &self.pending {
            if z > self.last_logged && z <= zxid {
                effects.push(Effect::Send {
                    to: self.leader,
                    msg: Message::Ack { zxid: z },
                });
            }
        }
        self.last_logged = zxid;
        self.apply_ready(&mut effects);
        effects
    }

    /// A COMMIT: everything through `zxid` is committed. Applies, in order,
    /// each received proposal up to it that is logged; the rest applies as its
    /// fsync completes.
    pub fn on_commit(&mut self, zxid: i64) -> Vec<Effect<T>> {
        assert!(
            zxid > self.commit_target,
            "commit 0x{zxid:x} went backward (0x{:x})",
            self.commit_target
        );
        assert!(
            self.pending.iter().any(|&(z, _)| z == zxid),
            "commit 0x{zxid:x} for a proposal never received"
        );
        self.commit_target = zxid;
        let mut effects = Vec::new();
        self.apply_ready(&mut effects);
        effects
    }

    /// The leader's PING: answer it so the leader knows this follower is alive.
    pub fn on_ping(&self) -> Vec<Effect<T>> {
        vec![Effect::Send {
            to: self.leader,
            msg: Message::Ping {
                zxid: self.last_logged,
            },
        }]
    }

    fn apply_ready(&mut self, effects: &mut Vec<Effect<T>>) {
        while let Some(&(z, _)) = self.pending.front() {
            if z > self.commit_target || z > self.last_logged {
                break;
            }
            let (zxid, txn) = self.pending.pop_front().expect("front exists");
            assert!(
                zxid > self.last_committed,
                "apply 0x{zxid:x} not above 0x{:x}",
                self.last_committed
            );
            self.last_committed = zxid;
            effects.push(Effect::Apply { zxid, txn });
        }
    }
}

/// An observer in the broadcast phase: it never votes and only hears of
/// committed txns.
pub struct Observer<T> {
    my_id: ServerId,
    leader: ServerId,
    last_zxid: i64,
    _txn: std::marker::PhantomData<T>,
}

impl<T: Clone> Observer<T> {
    pub fn new(my_id: ServerId, leader: ServerId, last_zxid: i64) -> Self {
        Observer {
            my_id,
            leader,
            last_zxid,
            _txn: std::marker::PhantomData,
        }
    }

    pub fn id(&self) -> ServerId {
        self.my_id
    }
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// An INFORM: log and apply it, in order.
    pub fn on_inform(&mut self, zxid: i64, txn: T) -> Vec<Effect<T>> {
        assert!(
            epoch_of(zxid) >= epoch_of(self.last_zxid),
            "epoch went backward: inform 0x{zxid:x} after 0x{:x}",
            self.last_zxid
        );
        assert!(
            zxid > self.last_zxid,
            "inform 0x{zxid:x} not above 0x{:x}",
            self.last_zxid
        );
        self.last_zxid = zxid;
        vec![
            Effect::LogAppend {
                zxid,
                txn: txn.clone(),
            },
            Effect::Apply { zxid, txn },
        ]
    }

    pub fn on_ping(&self) -> Vec<Effect<T>> {
        vec![Effect::Send {
            to: self.leader,
            msg: Message::Ping {
                zxid: self.last_zxid,
            },
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const SYNC: u64 = 10_000;

    fn z(c: u32) -> i64 {
        make_zxid(1, c)
    }

    /// A leader (id 1) of epoch 1 with followers `2..=voters` connected.
    fn leader(voters: u64, observers: &[u64]) -> Leader<&'static str> {
        let mut l = Leader::new(
            1,
            (1..=voters).collect(),
            observers.to_vec(),
            1,
            make_zxid(0, 5),
            SYNC,
        );
        for sid in 2..=voters {
            assert!(l.add_learner(sid, false, make_zxid(0, 5), 0).is_empty());
        }
        for &sid in observers {
            l.add_learner(sid, true, make_zxid(0, 5), 0);
        }
        l
    }

    fn commits<T>(effects: &[Effect<T>]) -> Vec<i64> {
        effects
            .iter()
            .filter_map(|e| {
                if let Effect::Commit { zxid, .. } = e {
                    Some(*zxid)
                } else {
                    None
                }
            })
            .collect()
    }

    fn sends<T: Clone>(effects: &[Effect<T>]) -> Vec<(ServerId, Message<T>)> {
        effects
            .iter()
            .filter_map(|e| {
                if let Effect::Send { to, msg } = e {
                    Some((*to, msg.clone()))
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn propose_sends_to_followers_and_logs() {
        let mut l = leader(3, &[9]);
        let (zxid, effects) = l.propose("a").unwrap();
        assert_eq!(zxid, make_zxid(1, 1));
        assert_eq!(
            effects,
            vec![
                Effect::Send {
                    to: 2,
                    msg: Message::Proposal { zxid, txn: "a" }
                },
                Effect::Send {
                    to: 3,
                    msg: Message::Proposal { zxid, txn: "a" }
                },
                Effect::LogAppend { zxid, txn: "a" },
            ]
        );
        assert_eq!(l.propose("b").unwrap().0, make_zxid(1, 2));
    }

    #[test]
    fn quorum_of_three_counts_leader_only_after_logged() {
        let mut l = leader(3, &[]);
        let (zxid, _) = l.propose("a").unwrap();
        // One follower ACK without the leader's fsync is 1 of 3.
        assert!(l.on_ack(2, zxid, 1).is_empty());
        let effects = l.on_logged(zxid);
        assert_eq!(
            effects,
            vec![
                Effect::Commit { zxid, txn: "a" },
                Effect::Send {
                    to: 2,
                    msg: Message::Commit { zxid }
                },
                Effect::Send {
                    to: 3,
                    msg: Message::Commit { zxid }
                },
            ]
        );
        assert_eq!(l.last_committed(), zxid);
        // Late ACK for a committed zxid is ignored.
        assert!(l.on_ack(3, zxid, 2).is_empty());
    }

    #[test]
    fn quorum_of_three_two_followers_without_leader_fsync() {
        // Two of three voters is a quorum even before the leader's own fsync.
        let mut l = leader(3, &[]);
        let (zxid, _) = l.propose("a").unwrap();
        assert!(l.on_ack(2, zxid, 1).is_empty());
        assert_eq!(commits(&l.on_ack(3, zxid, 1)), vec![zxid]);
        assert!(l.on_logged(zxid).is_empty());
    }

    #[test]
    fn quorum_of_five() {
        let mut l = leader(5, &[]);
        let (zxid, _) = l.propose("a").unwrap();
        assert!(l.on_ack(2, zxid, 1).is_empty());
        assert!(l.on_ack(3, zxid, 1).is_empty());
        // Duplicate ACKs do not count twice.
        assert!(l.on_ack(3, zxid, 1).is_empty());
        // 2 followers + leader (after fsync) = 3 of 5.
        assert_eq!(commits(&l.on_logged(zxid)), vec![zxid]);

        let (zxid, _) = l.propose("b").unwrap();
        l.on_logged(zxid);
        assert!(l.on_ack(4, zxid, 1).is_empty());
        assert_eq!(commits(&l.on_ack(5, zxid, 1)), vec![zxid]);
    }

    #[test]
    fn minority_acks_never_commit() {
        let mut l = leader(5, &[]);
        let (zxid, _) = l.propose("a").unwrap();
        l.on_logged(zxid);
        assert!(l.on_ack(2, zxid, 1).is_empty());
        // Unknown learners, observers and zxids do not help.
        assert!(l.on_ack(42, zxid, 1).is_empty());
        assert!(l.on_ack(2, z(7), 1).is_empty());
        assert_eq!(l.last_committed(), make_zxid(0, 5));
        assert_eq!(l.outstanding_zxids(), vec![zxid]);
    }

    #[test]
    fn out_of_order_acks_commit_in_order() {
        let mut l = leader(3, &[]);
        let (a, _) = l.propose("a").unwrap();
        let (b, _) = l.propose("b").unwrap();
        let (c, _) = l.propose("c").unwrap();
        // b and c reach a quorum first: nothing commits while a is open.
        assert!(l.on_ack(2, c, 1).is_empty());
        assert!(l.on_ack(3, c, 1).is_empty());
        assert!(l.on_ack(2, b, 1).is_empty());
        assert!(l.on_ack(3, b, 1).is_empty());
        let effects = l.on_ack(2, a, 1);
        assert!(effects.is_empty());
        let effects = l.on_ack(3, a, 1);
        assert_eq!(commits(&effects), vec![a, b, c]);
        let to2: Vec<_> = sends(&effects)
            .into_iter()
            .filter(|(to, _)| *to == 2)
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            to2,
            vec![
                Message::Commit { zxid: a },
                Message::Commit { zxid: b },
                Message::Commit { zxid: c }
            ]
        );
    }

    #[test]
    fn slow_follower_does_not_block_quorum() {
        let mut l = leader(5, &[]);
        for i in 0..10 {
            let (zxid, _) = l.propose(if i % 2 == 0 { "x" } else { "y" }).unwrap();
            l.on_logged(zxid);
            l.on_ack(2, zxid, 1);
            assert_eq!(commits(&l.on_ack(3, zxid, 1)), vec![zxid]);
        }
        // 4 and 5 never ACKed; their late ACKs are ignored.
        assert!(l.on_ack(4, z(1), 2).is_empty());
        assert_eq!(l.last_committed(), z(10));
    }

    #[test]
    fn removed_followers_acks_stop_counting() {
        let mut l = leader(5, &[]);
        let (zxid, _) = l.propose("a").unwrap();
        l.on_logged(zxid);
        l.on_ack(2, zxid, 1);
        l.remove_learner(2);
        assert!(
            l.on_ack(3, zxid, 1).is_empty(),
            "2's ACK must not count after removal"
        );
        assert!(l.on_ack(2, zxid, 1).is_empty(), "2 is not connected");
        assert_eq!(commits(&l.on_ack(4, zxid, 1)), vec![zxid]);
    }

    #[test]
    fn observers_get_inform_after_commit_and_never_count() {
        let mut l = leader(3, &[8, 9]);
        let (zxid, effects) = l.propose("a").unwrap();
        assert!(sends(&effects).iter().all(|(to, _)| *to == 2 || *to == 3));
        l.on_logged(zxid);
        assert!(l.on_ack(8, zxid, 1).is_empty());
        assert!(l.on_ack(9, zxid, 1).is_empty());
        let effects = l.on_ack(2, zxid, 1);
        assert_eq!(commits(&effects), vec![zxid]);
        let s = sends(&effects);
        assert!(s.contains(&(8, Message::Inform { zxid, txn: "a" })));
        assert!(s.contains(&(9, Message::Inform { zxid, txn: "a" })));
        assert!(s.contains(&(2, Message::Commit { zxid })));
        // The commit effect comes before the INFORMs.
        assert!(matches!(effects[0], Effect::Commit { .. }));

        let mut o = Observer::new(9, 1, make_zxid(0, 5));
        assert_eq!(
            o.on_inform(zxid, "a"),
            vec![
                Effect::LogAppend { zxid, txn: "a" },
                Effect::Apply { zxid, txn: "a" }
            ]
        );
        assert_eq!(o.last_zxid(), zxid);
    }

    #[test]
    #[should_panic(expected = "not above")]
    fn observer_rejects_old_inform() {
        let mut o: Observer<&str> = Observer::new(9, 1, z(5));
        o.on_inform(z(5), "a");
    }

    #[test]
    fn epoch_exhaustion_refuses_and_stops_leading() {
        let mut l: Leader<&str> =
            Leader::new(1, vec![1, 2, 3], vec![], 7, make_zxid(7, 0xffff_fffd), SYNC);
        l.add_learner(2, false, make_zxid(7, 0xffff_fffd), 0);
        let (zxid, _) = l.propose("last").unwrap();
        assert_eq!(zxid, make_zxid(7, 0xffff_fffe));
        assert_eq!(l.propose("one too many"), Err(ProposeError::EpochExhausted));
        assert!(!l.is_leading());
        assert_eq!(l.propose("again"), Err(ProposeError::NotLeading));
    }

    #[test]
    fn a_new_epoch_can_start_its_counter_near_the_end() {
        // The simulator's ZOOKEEPER-1277 knob: (7, 0) is the NEWLEADER zxid;
        // proposals continue from the counter given, up to LAST_COUNTER.
        let mut l: Leader<&str> = Leader::new(1, vec![1, 2, 3], vec![], 7, make_zxid(6, 40), SYNC);
        l.start_counter_after(LAST_COUNTER - 2);
        l.add_learner(2, false, make_zxid(6, 40), 0);
        let (first, _) = l.propose("a").unwrap();
        let (last, _) = l.propose("b").unwrap();
        assert_eq!((first, last), (make_zxid(7, LAST_COUNTER - 1), make_zxid(7, LAST_COUNTER)));
        assert!(l.on_logged(last).is_empty(), "nothing commits on the leader's log alone");
        assert_eq!(l.on_ack(2, first, 0).len(), 2, "a commit and its COMMIT to 2");
        assert_eq!(l.last_committed(), first);
        assert_eq!(l.propose("one too many"), Err(ProposeError::EpochExhausted));
    }

    #[test]
    #[should_panic(expected = "before its first proposal")]
    fn the_counter_cannot_start_over_after_a_proposal() {
        let mut l = leader(3, &[]);
        l.propose("a").unwrap();
        l.start_counter_after(1_000);
    }

    #[test]
    fn backpressure_beyond_outstanding_max() {
        let mut l = leader(3, &[]);
        for _ in 0..OUTSTANDING_PROPOSALS_MAX {
            l.propose("a").unwrap();
        }
        assert_eq!(l.propose("b").unwrap_err(), ProposeError::Backpressure);
        l.on_logged(z(1));
        l.on_ack(2, z(1), 1);
        assert!(l.propose("b").is_ok());
    }

    #[test]
    fn a_syncing_learner_has_init_limit_not_sync_limit() {
        const INIT: u64 = 3 * SYNC;
        let mut l = leader(3, &[]);
        // 3 re-syncs at 100 (a SNAP, say): it sends nothing until it has
        // installed the snapshot and ACKs NEWLEADER.
        l.add_learner(3, false, make_zxid(1, 0), 100);
        l.mark_syncing(3, 100 + INIT);
        l.on_ping(2, 100 + INIT);
        let effects = l.on_tick(100 + INIT);
        assert!(!effects.iter().any(|e| matches!(e, Effect::DropLearner { .. })), "{effects:?}");
        // Synced (UPTODATE) at 100 + INIT: syncLimit counts from then.
        l.mark_synced(3, 100 + INIT);
        l.on_ping(2, 100 + INIT + SYNC);
        assert!(!l.on_tick(100 + INIT + SYNC).iter().any(|e| matches!(e, Effect::DropLearner { .. })));
        let effects = l.on_tick(100 + INIT + SYNC + 1);
        assert!(effects.contains(&Effect::DropLearner { sid: 3, reason: "no packet within syncLimit" }), "{effects:?}");

        // One that does not finish its sync within initLimit is dropped.
        l.add_learner(3, false, make_zxid(1, 0), 200_000);
        l.mark_syncing(3, 200_000 + INIT);
        l.on_ping(2, 200_000 + INIT + 1);
        let effects = l.on_tick(200_000 + INIT + 1);
        assert!(effects.contains(&Effect::DropLearner { sid: 3, reason: "not synced within initLimit" }), "{effects:?}");
    }

    #[test]
    fn step_down_when_followers_silent_for_sync_limit() {
        let mut l = leader(5, &[]);
        // Everyone was heard at 0; at exactly the limit all are in touch and get pinged.
        let effects = l.on_tick(SYNC);
        assert_eq!(
            sends(&effects),
            (2..=5)
                .map(|sid| (
                    sid,
                    Message::Ping {
                        zxid: make_zxid(1, 0)
                    }
                ))
                .collect::<Vec<_>>()
        );
        // 2 answers a ping, 3 sends an ACK (of NEWLEADER, which only counts as
        // a sign of life); 4 and 5 stay silent.
        l.on_ping(2, SYNC);
        l.on_ack(3, make_zxid(1, 0), SYNC);
        let effects = l.on_tick(SYNC + 1);
        assert!(effects.contains(&Effect::DropLearner {
            sid: 4,
            reason: "no packet within syncLimit"
        }));
        assert!(effects.contains(&Effect::DropLearner {
            sid: 5,
            reason: "no packet within syncLimit"
        }));
        // 1, 2, 3 are still a quorum of 5.
        assert!(!effects.iter().any(|e| matches!(e, Effect::StepDown { .. })));
        assert!(l.is_leading());
        // Then 3 falls silent too: 2 of 5.
        l.on_ping(2, 2 * SYNC + 1);
        let effects = l.on_tick(2 * SYNC + 1);
        assert!(effects.contains(&Effect::DropLearner {
            sid: 3,
            reason: "no packet within syncLimit"
        }));
        let Some(Effect::StepDown { reason }) = effects.last() else {
            panic!("{effects:?}")
        };
        assert_eq!(
            reason,
            "Not sufficient followers synced, only synced with sids: [ 1, 2 ]"
        );
        assert!(!l.is_leading());
        assert!(l.on_tick(3 * SYNC).is_empty());
        assert_eq!(l.propose("late"), Err(ProposeError::NotLeading));
    }

    #[test]
    fn follower_that_pings_but_never_acks_is_dropped() {
        let mut l = leader(3, &[]);
        let (a, _) = l.propose("a").unwrap();
        // Both followers owe an ACK for a from the tick at 0.
        l.on_tick(0);
        // 2 ACKs (1 of 3: the leader has not fsynced), 3 never does; both ping.
        assert!(l.on_ack(2, a, 5).is_empty());
        l.on_ping(2, SYNC);
        l.on_ping(3, SYNC);
        assert!(l
            .on_tick(SYNC)
            .iter()
            .all(|e| !matches!(e, Effect::DropLearner { .. })));
        let effects = l.on_tick(SYNC + 1);
        assert_eq!(
            effects
                .iter()
                .filter(|e| matches!(e, Effect::DropLearner { .. }))
                .collect::<Vec<_>>(),
            vec![&Effect::DropLearner {
                sid: 3,
                reason: "transaction timeout: no ACK within syncLimit"
            }]
        );
        assert!(l.is_leading());
        assert_eq!(commits(&l.on_logged(a)), vec![a]);
    }

    #[test]
    fn add_learner_forwards_outstanding_proposals() {
        let mut l = leader(3, &[]);
        l.remove_learner(3);
        let (a, _) = l.propose("a").unwrap();
        let (b, _) = l.propose("b").unwrap();
        let effects = l.add_learner(3, false, make_zxid(0, 5), 0);
        assert_eq!(
            sends(&effects),
            vec![
                (3, Message::Proposal { zxid: a, txn: "a" }),
                (3, Message::Proposal { zxid: b, txn: "b" })
            ]
        );
        assert!(l.add_learner(9, true, make_zxid(0, 5), 0).is_empty());
        let effects = l.on_learner_queue_full(3);
        assert_eq!(
            effects,
            vec![Effect::DropLearner {
                sid: 3,
                reason: "learner queue full"
            }]
        );
    }

    #[test]
    fn follower_acks_only_after_logged() {
        let mut f = Follower::new(2, 1, make_zxid(0, 5), make_zxid(0, 5));
        assert_eq!(
            f.on_proposal(z(1), "a"),
            vec![Effect::LogAppend {
                zxid: z(1),
                txn: "a"
            }]
        );
        assert_eq!(
            f.on_proposal(z(2), "b"),
            vec![Effect::LogAppend {
                zxid: z(2),
                txn: "b"
            }]
        );
        // One fsync covering both ACKs each, in order.
        assert_eq!(
            f.on_logged(z(2)),
            vec![
                Effect::Send {
                    to: 1,
                    msg: Message::Ack { zxid: z(1) }
                },
                Effect::Send {
                    to: 1,
                    msg: Message::Ack { zxid: z(2) }
                },
            ]
        );
        assert!(f.on_logged(z(2)).is_empty());
        assert_eq!(
            f.on_commit(z(2)),
            vec![
                Effect::Apply {
                    zxid: z(1),
                    txn: "a"
                },
                Effect::Apply {
                    zxid: z(2),
                    txn: "b"
                }
            ]
        );
        assert_eq!(f.last_committed(), z(2));
    }

    #[test]
    fn commit_before_logged_applies_after() {
        let mut f = Follower::new(2, 1, make_zxid(0, 5), make_zxid(0, 5));
        f.on_proposal(z(1), "a");
        f.on_proposal(z(2), "b");
        f.on_proposal(z(3), "c");
        assert!(f.on_commit(z(1)).is_empty());
        assert!(f.on_commit(z(2)).is_empty());
        // Logged through 1: ACK 1, apply 1.
        assert_eq!(
            f.on_logged(z(1)),
            vec![
                Effect::Send {
                    to: 1,
                    msg: Message::Ack { zxid: z(1) }
                },
                Effect::Apply {
                    zxid: z(1),
                    txn: "a"
                }
            ]
        );
        // Logged through 3: ACK 2, 3, apply only 2 (3 is not committed).
        assert_eq!(
            f.on_logged(z(3)),
            vec![
                Effect::Send {
                    to: 1,
                    msg: Message::Ack { zxid: z(2) }
                },
                Effect::Send {
                    to: 1,
                    msg: Message::Ack { zxid: z(3) }
                },
                Effect::Apply {
                    zxid: z(2),
                    txn: "b"
                },
            ]
        );
        assert_eq!(
            f.on_commit(z(3)),
            vec![Effect::Apply {
                zxid: z(3),
                txn: "c"
            }]
        );
    }

    #[test]
    #[should_panic(expected = "went backward")]
    fn follower_commit_never_goes_backward() {
        let mut f = Follower::new(2, 1, make_zxid(0, 5), make_zxid(0, 5));
        f.on_proposal(z(1), "a");
        f.on_proposal(z(2), "b");
        f.on_commit(z(2));
        f.on_commit(z(1));
    }

    #[test]
    #[should_panic(expected = "not above")]
    fn follower_rejects_non_increasing_proposal() {
        let mut f = Follower::new(2, 1, z(3), z(3));
        f.on_proposal(z(3), "a");
    }

    #[test]
    #[should_panic(expected = "epoch went backward")]
    fn follower_rejects_older_epoch() {
        let mut f = Follower::new(2, 1, make_zxid(2, 1), make_zxid(2, 1));
        f.on_proposal(make_zxid(1, 9), "a");
    }

    #[test]
    #[should_panic(expected = "epoch went backward")]
    fn leader_epoch_never_goes_backward() {
        let _: Leader<()> = Leader::new(1, vec![1], vec![], 2, make_zxid(3, 1), SYNC);
    }

    #[test]
    fn leader_continues_counter_in_same_epoch() {
        let mut l: Leader<()> = Leader::new(1, vec![1], vec![], 3, make_zxid(3, 4), SYNC);
        let (zxid, _) = l.propose(()).unwrap();
        assert_eq!(zxid, make_zxid(3, 5));
        // A single-voter ensemble commits on its own fsync.
        assert_eq!(commits(&l.on_logged(zxid)), vec![zxid]);
    }

    /// A leader and 2–4 followers over FIFO links that deliver with random
    /// delays (random interleaving across links), with fsyncs completing at
    /// random times. Checks that the leader commits only what a quorum has made
    /// durable, in proposal order, and that every follower applies exactly the
    /// committed prefix, in order.
    fn run_random(seed: u64) {
        println!("zab broadcast random seed {seed}");
        let mut rng = Rng::new(seed);
        let n_followers = 2 + rng.below(3);
        let ids: Vec<ServerId> = (1..=n_followers + 1).collect();
        let start = make_zxid(0, 3);
        let mut leader: Leader<u64> = Leader::new(1, ids.clone(), vec![], 1, start, u64::MAX / 4);
        let mut followers: BTreeMap<ServerId, Follower<u64>> = BTreeMap::new();
        for &sid in &ids[1..] {
            assert!(leader.add_learner(sid, false, start, 0).is_empty());
            followers.insert(sid, Follower::new(sid, 1, start, start));
        }
        // links[(from, to)], FIFO.
        let mut links: BTreeMap<(ServerId, ServerId), VecDeque<Message<u64>>> = BTreeMap::new();
        // Appended but not yet durable, per node; durable zxids per node.
        let mut unsynced: BTreeMap<ServerId, Vec<i64>> =
            ids.iter().map(|&i| (i, Vec::new())).collect();
        let mut durable: BTreeMap<ServerId, BTreeSet<i64>> =
            ids.iter().map(|&i| (i, BTreeSet::new())).collect();
        let mut proposed: Vec<(i64, u64)> = Vec::new();
        let mut committed: Vec<(i64, u64)> = Vec::new();
        let mut applied: BTreeMap<ServerId, Vec<(i64, u64)>> = BTreeMap::new();
        let total = 50 + rng.below(150);

        let mut run_effects = |from: ServerId,
                               effects: Vec<Effect<u64>>,
                               links: &mut BTreeMap<
            (ServerId, ServerId),
            VecDeque<Message<u64>>,
        >,
                               unsynced: &mut BTreeMap<ServerId, Vec<i64>>,
                               durable: &BTreeMap<ServerId, BTreeSet<i64>>,
                               committed: &mut Vec<(i64, u64)>,
                               proposed: &[(i64, u64)]| {
            for e in effects {
                match e {
                    Effect::Send { to, msg } => {
                        if let Message::Ack { zxid } = msg {
                            assert!(
                                durable[&from].contains(&zxid),
                                "seed {seed}: {from} ACKed 0x{zxid:x} before logging it"
                            );
                        }
                        links.entry((from, to)).or_default().push_back(msg)
                    }
                    Effect::LogAppend { zxid, .. } => unsynced.get_mut(&from).unwrap().push(zxid),
                    Effect::Commit { zxid, txn } => {
                        assert_eq!(from, 1, "seed {seed}");
                        let holders = durable.values().filter(|d| d.contains(&zxid)).count();
                        assert!(
                            is_quorum(holders, ids.len()),
                            "seed {seed}: 0x{zxid:x} committed on {holders} logs"
                        );
                        assert_eq!(
                            proposed.get(committed.len()),
                            Some(&(zxid, txn)),
                            "seed {seed}: commit order"
                        );
                        committed.push((zxid, txn));
                    }
                    Effect::Apply { zxid, txn } => {
                        let a = applied.entry(from).or_default();
                        assert_eq!(
                            committed.get(a.len()),
                            Some(&(zxid, txn)),
                            "seed {seed}: {from} applied out of order"
                        );
                        assert!(
                            durable[&from].contains(&zxid),
                            "seed {seed}: applied before logged"
                        );
                        a.push((zxid, txn));
                    }
                    other => panic!("seed {seed}: unexpected {other:?}"),
                }
            }
        };

        loop {
            let pending_links: Vec<(ServerId, ServerId)> = links
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(&k, _)| k)
                .collect();
            let pending_logs: Vec<ServerId> = unsynced
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(&k, _)| k)
                .collect();
            let can_propose = (proposed.len() as u64) < total;
            if pending_links.is_empty() && pending_logs.is_empty() && !can_propose {
                break;
            }
            let choice = rng.below(10);
            if can_propose && (choice < 2 || (pending_links.is_empty() && pending_logs.is_empty()))
            {
                let txn = rng.next_u64();
                match leader.propose(txn) {
                    Ok((zxid, effects)) => {
                        proposed.push((zxid, txn));
                        run_effects(
                            1,
                            effects,
                            &mut links,
                            &mut unsynced,
                            &durable,
                            &mut committed,
                            &proposed,
                        );
                    }
                    Err(e) => assert_eq!(e, ProposeError::Backpressure, "seed {seed}"),
                }
            } else if !pending_logs.is_empty() && (choice < 5 || pending_links.is_empty()) {
                // Some prefix of a node's appends becomes durable.
                let node = *rng.pick(&pending_logs);
                let list = unsynced.get_mut(&node).unwrap();
                let upto = 1 + rng.index(list.len());
                let done: Vec<i64> = list.drain(..upto).collect();
                let last = *done.last().unwrap();
                durable.get_mut(&node).unwrap().extend(done);
                let effects = if node == 1 {
                    leader.on_logged(last)
                } else {
                    followers.get_mut(&node).unwrap().on_logged(last)
                };
                run_effects(
                    node,
                    effects,
                    &mut links,
                    &mut unsynced,
                    &durable,
                    &mut committed,
                    &proposed,
                );
            } else {
                let (from, to) = *rng.pick(&pending_links);
                let msg = links.get_mut(&(from, to)).unwrap().pop_front().unwrap();
                let effects = match (to, msg) {
                    (1, Message::Ack { zxid }) => leader.on_ack(from, zxid, 0),
                    (f, Message::Proposal { zxid, txn }) => {
                        followers.get_mut(&f).unwrap().on_proposal(zxid, txn)
                    }
                    (f, Message::Commit { zxid }) => followers.get_mut(&f).unwrap().on_commit(zxid),
                    (_, m) => panic!("seed {seed}: unexpected {m:?}"),
                };
                run_effects(
                    to,
                    effects,
                    &mut links,
                    &mut unsynced,
                    &durable,
                    &mut committed,
                    &proposed,
                );
            }
        }
        assert_eq!(
            committed, proposed,
            "seed {seed}: everything commits once all links drain"
        );
        for &sid in &ids[1..] {
            assert_eq!(
                applied.get(&sid).map(Vec::as_slice).unwrap_or(&[]),
                &committed[..],
                "seed {seed}: follower {sid}"
            );
        }
    }

    #[test]
    fn randomized_fifo_links_apply_committed_prefix() {
        let base = std::env::var("WARDEN_ZAB_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_u64);
        println!("zab broadcast random base seed {base} (set WARDEN_ZAB_SEED to change)");
        for i in 0..300 {
            run_random(base.wrapping_add(i));
        }
    }
}
