//! ZAB's discovery and synchronization handshake (phases 1 and 2), between an
//! elected leader and its learners, as pure state machines: events in, effects
//! out, no I/O, no clock reads, no threads. The runtime carries the effects out
//! in the order given and reports completions back (`on_persisted_*`,
//! `on_synced`).
//!
//! ZooKeeper's blocking code this mirrors:
//! * learner: `Learner.registerWithLeader` (FOLLOWERINFO/OBSERVERINFO →
//!   LEADERINFO → ACKEPOCH) and `Learner.syncWithLeader` (DIFF/TRUNC/SNAP, the
//!   synced PROPOSAL/COMMIT stream, NEWLEADER, UPTODATE);
//! * leader: `Leader.getEpochToPropose`, `Leader.waitForEpochAck` and
//!   `Leader.waitForNewLeaderAck`, with `LearnerHandler`'s per-learner steps.
//!
//! The learner's persistence order is the heart of it; ZooKeeper got it wrong
//! several times, each time losing committed txns:
//! * ZOOKEEPER-3911: a follower ACKed NEWLEADER before the txns it got by DIFF
//!   were in its log; the leader counted it, a crash lost them.
//! * ZOOKEEPER-4646: the same after the first fix — the txns were appended but
//!   not flushed before the NEWLEADER ACK.
//! * ZOOKEEPER-4643 (and ZOOKEEPER-4785): a follower updated `currentEpoch`
//!   before the synced txns were durable; after a crash its (new epoch, old
//!   zxid) made it look up to date and it won an election, truncating
//!   committed txns elsewhere.
//! * ZOOKEEPER-2845: after a TRUNC, txns the log no longer holds stayed in the
//!   in-memory data tree; a truncate must rebuild the tree from what remains.
//!
//! So here: the synced txns are appended (`LogAppend`) as they are committed;
//! at NEWLEADER the learner asks for `SyncLog` (log and any snapshot durable),
//! only after `on_synced` does it `PersistCurrentEpoch`, and only after
//! `on_persisted_current_epoch` does it send the ACK of NEWLEADER. It applies
//! the synced txns (`Apply`) and serves clients only at UPTODATE, once the
//! leader's epoch is established: a reloaded leader's history may hold txns
//! no quorum had acknowledged before. Likewise a new accepted epoch is persisted
//! (`PersistAcceptedEpoch`) before ACKEPOCH promises it to the leader.
//!
//! Invariants (`assert!`, on in release builds): epochs never go backward and
//! `acceptedEpoch >= currentEpoch` at all times. Misbehaving peers never trip
//! an assertion: they produce `Abort` (back to LOOKING) or are ignored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{counter_of, epoch_of, is_quorum, make_zxid, ServerId};

/// Handshake messages between a learner and the leader (the sync stream itself
/// — DIFF/TRUNC/SNAP, PROPOSAL, COMMIT, INFORM, NEWLEADER — is produced by the
/// runtime from `sync::plan_sync` and delivered to the learner's `on_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Learner → leader. `zxid` is `make_zxid(accepted_epoch, 0)`, as ZooKeeper
    /// encodes it.
    FollowerInfo { sid: ServerId, zxid: i64 },
    /// Like `FollowerInfo`, from an observer.
    ObserverInfo { sid: ServerId, zxid: i64 },
    /// Leader → learner: the new epoch, as `make_zxid(new_epoch, 0)`.
    LeaderInfo { zxid: i64 },
    /// Learner → leader. `current_epoch` is `None` when the learner had
    /// already accepted the proposed epoch (ZooKeeper sends -1): the reply
    /// then does not count as an ACK of the new epoch.
    AckEpoch {
        last_logged_zxid: i64,
        current_epoch: Option<u32>,
    },
    /// Learner → leader: ACK of NEWLEADER (`zxid` = the NEWLEADER zxid), or,
    /// after UPTODATE, `make_zxid(new_epoch, 0)` again.
    Ack { zxid: i64 },
    /// Leader → learner: the quorum has synced; start serving.
    UpToDate,
}

/// A message that arrived after NEWLEADER and before UPTODATE. The learner
/// hands these to the broadcast phase (`ServeClients::replay`), which logs,
/// ACKs and applies them through the normal path — as ZooKeeper logs its
/// `packetsNotLogged` after UPTODATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay<T> {
    /// Feed to `broadcast::Follower::on_proposal`.
    Proposal { zxid: i64, txn: T },
    /// Feed to `broadcast::Follower::on_commit`.
    Commit { zxid: i64 },
    /// Feed to `broadcast::Observer::on_inform`.
    Inform { zxid: i64, txn: T },
}

/// What the learner's runtime must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LearnerEffect<T> {
    /// Send to the leader.
    Send(Message),
    /// Write `acceptedEpoch` durably; report `on_persisted_accepted_epoch`.
    PersistAcceptedEpoch { epoch: u32 },
    /// SNAP: replace the data tree with the leader's snapshot at `zxid` (the
    /// runtime reads it from the stream). It must be durable by `on_synced`.
    InstallSnapshot { zxid: i64 },
    /// TRUNC: truncate the txn log after `to` and rebuild the data tree from
    /// what remains on disk — keeping the in-memory tree would keep the
    /// truncated txns (ZOOKEEPER-2845).
    Truncate { to: i64 },
    /// Append a synced, committed txn to the log (not yet flushed).
    LogAppend { zxid: i64, txn: T },
    /// Apply a committed txn to the data tree. The txns of the sync are
    /// applied at UPTODATE, once the leader has established its epoch.
    Apply { zxid: i64, txn: T },
    /// Make everything appended durable (fsync), and the installed snapshot
    /// too when `snapshot`; report `on_synced`.
    SyncLog { snapshot: bool },
    /// Write `currentEpoch` durably; report `on_persisted_current_epoch`.
    PersistCurrentEpoch { epoch: u32 },
    /// UPTODATE: start the broadcast phase (`broadcast::Follower::new(me,
    /// leader, last_logged, last_committed)` or `broadcast::Observer`), feed it
    /// `replay` in order, and serve clients.
    ServeClients {
        epoch: u32,
        last_logged: i64,
        last_committed: i64,
        replay: Vec<Replay<T>>,
    },
    /// Give up on this leader and go back to LOOKING.
    Abort { reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LearnerPhase {
    Idle,
    AwaitLeaderInfo,
    PersistingAcceptedEpoch,
    AwaitSyncMode,
    Syncing,
    Flushing,
    PersistingCurrentEpoch,
    AwaitUpToDate,
    Serving,
    Aborted,
}

/// A follower's or observer's side of the handshake with one leader.
pub struct LearnerHandshake<T> {
    my_id: ServerId,
    is_observer: bool,
    accepted_epoch: u32,
    current_epoch: u32,
    last_logged: i64,
    last_committed: i64,
    /// The highest zxid received or synced to (ordering check).
    last_received: i64,
    new_epoch: u32,
    snapshot: bool,
    phase: LearnerPhase,
    /// Proposals received before NEWLEADER and not yet committed.
    pending: VecDeque<(i64, T)>,
    /// Txns of the sync, logged and waiting for UPTODATE to be applied: at
    /// most the leader's committed log and its proposals in flight.
    synced: Vec<(i64, T)>,
    /// What arrived after NEWLEADER.
    replay: Vec<Replay<T>>,
}

impl<T: Clone> LearnerHandshake<T> {
    pub fn new(
        my_id: ServerId,
        is_observer: bool,
        accepted_epoch: u32,
        current_epoch: u32,
        last_logged_zxid: i64,
    ) -> Self {
        assert!(
            accepted_epoch >= current_epoch,
            "acceptedEpoch {accepted_epoch} < currentEpoch {current_epoch}"
        );
        LearnerHandshake {
            my_id,
            is_observer,
            accepted_epoch,
            current_epoch,
            last_logged: last_logged_zxid,
            last_committed: last_logged_zxid,
            last_received: last_logged_zxid,
            new_epoch: 0,
            snapshot: false,
            phase: LearnerPhase::Idle,
            pending: VecDeque::new(),
            synced: Vec::new(),
            replay: Vec::new(),
        }
    }

    pub fn accepted_epoch(&self) -> u32 {
        self.accepted_epoch
    }
    pub fn current_epoch(&self) -> u32 {
        self.current_epoch
    }
    pub fn is_serving(&self) -> bool {
        self.phase == LearnerPhase::Serving
    }
    pub fn is_aborted(&self) -> bool {
        self.phase == LearnerPhase::Aborted
    }

    /// Connected to the leader: register (FOLLOWERINFO or OBSERVERINFO).
    pub fn start(&mut self) -> Vec<LearnerEffect<T>> {
        if self.phase != LearnerPhase::Idle {
            return Vec::new();
        }
        self.phase = LearnerPhase::AwaitLeaderInfo;
        let (sid, zxid) = (self.my_id, make_zxid(self.accepted_epoch, 0));
        let msg = if self.is_observer {
            Message::ObserverInfo { sid, zxid }
        } else {
            Message::FollowerInfo { sid, zxid }
        };
        vec![LearnerEffect::Send(msg)]
    }

    fn abort(&mut self, reason: String) -> Vec<LearnerEffect<T>> {
        self.phase = LearnerPhase::Aborted;
        vec![LearnerEffect::Abort { reason }]
    }

    fn unexpected(&mut self, what: &str) -> Vec<LearnerEffect<T>> {
        if self.phase == LearnerPhase::Aborted {
            return Vec::new();
        }
        let reason = format!("unexpected {what} in phase {:?}", self.phase);
        self.abort(reason)
    }

    /// LEADERINFO with the leader's new epoch. Observers answer with ACKEPOCH
    /// too (ZooKeeper's `Observer` registers through the same
    /// `registerWithLeader`); the leader just does not count them.
    pub fn on_leader_info(&mut self, new_epoch: u32) -> Vec<LearnerEffect<T>> {
        if self.phase != LearnerPhase::AwaitLeaderInfo {
            return self.unexpected("LEADERINFO");
        }
        self.new_epoch = new_epoch;
        if new_epoch < self.accepted_epoch {
            let reason = format!(
                "Leaders epoch, {new_epoch} is less than accepted epoch, {}",
                self.accepted_epoch
            );
            return self.abort(reason);
        }
        if new_epoch == self.accepted_epoch {
            // Already acked this epoch: cannot ack again, but the leader needs
            // our last zxid to sync us.
            self.phase = LearnerPhase::AwaitSyncMode;
            return vec![LearnerEffect::Send(Message::AckEpoch {
                last_logged_zxid: self.last_logged,
                current_epoch: None,
            })];
        }
        self.phase = LearnerPhase::PersistingAcceptedEpoch;
        vec![LearnerEffect::PersistAcceptedEpoch { epoch: new_epoch }]
    }

    /// `acceptedEpoch` is durable: promise it to the leader.
    pub fn on_persisted_accepted_epoch(&mut self) -> Vec<LearnerEffect<T>> {
        if self.phase != LearnerPhase::PersistingAcceptedEpoch {
            return self.unexpected("accepted-epoch persistence");
        }
        assert!(
            self.new_epoch > self.accepted_epoch,
            "accepted epoch went backward"
        );
        self.accepted_epoch = self.new_epoch;
        self.phase = LearnerPhase::AwaitSyncMode;
        vec![LearnerEffect::Send(Message::AckEpoch {
            last_logged_zxid: self.last_logged,
            current_epoch: Some(self.current_epoch),
        })]
    }

    fn begin_sync(&mut self, what: &str) -> Option<Vec<LearnerEffect<T>>> {
        if self.phase != LearnerPhase::AwaitSyncMode {
            return Some(self.unexpected(what));
        }
        self.phase = LearnerPhase::Syncing;
        None
    }

    /// DIFF: the leader's history continues from our last zxid.
    pub fn on_diff(&mut self, _zxid: i64) -> Vec<LearnerEffect<T>> {
        self.begin_sync("DIFF").unwrap_or_default()
    }

    /// TRUNC: drop our log after `to`.
    pub fn on_trunc(&mut self, to: i64) -> Vec<LearnerEffect<T>> {
        if let Some(e) = self.begin_sync("TRUNC") {
            return e;
        }
        self.snapshot = true;
        self.last_logged = to;
        self.last_committed = to;
        self.last_received = to;
        vec![LearnerEffect::Truncate { to }]
    }

    /// SNAP: the leader's snapshot at `zxid` follows.
    pub fn on_snap(&mut self, zxid: i64) -> Vec<LearnerEffect<T>> {
        if let Some(e) = self.begin_sync("SNAP") {
            return e;
        }
        self.snapshot = true;
        self.last_logged = zxid;
        self.last_committed = zxid;
        self.last_received = zxid;
        vec![LearnerEffect::InstallSnapshot { zxid }]
    }

    fn check_incoming(&mut self, zxid: i64, what: &str) -> Option<Vec<LearnerEffect<T>>> {
        if zxid <= self.last_received || epoch_of(zxid) > self.new_epoch {
            let reason = format!(
                "{what} 0x{zxid:x} out of order (after 0x{:x}, epoch {})",
                self.last_received, self.new_epoch
            );
            return Some(self.abort(reason));
        }
        self.last_received = zxid;
        None
    }

    fn after_new_leader(&self) -> bool {
        matches!(
            self.phase,
            LearnerPhase::Flushing
                | LearnerPhase::PersistingCurrentEpoch
                | LearnerPhase::AwaitUpToDate
        )
    }

    /// A PROPOSAL in the sync stream (or forwarded before UPTODATE).
    pub fn on_proposal(&mut self, zxid: i64, txn: T) -> Vec<LearnerEffect<T>> {
        if self.phase != LearnerPhase::Syncing && !self.after_new_leader() {
            return self.unexpected("PROPOSAL");
        }
        if let Some(e) = self.check_incoming(zxid, "PROPOSAL") {
            return e;
        }
        if self.after_new_leader() {
            self.replay.push(Replay::Proposal { zxid, txn });
        } else {
            self.pending.push_back((zxid, txn));
        }
        Vec::new()
    }

    /// A COMMIT in the sync stream: the oldest pending proposal is committed;
    /// append it to the log now (it is durable before NEWLEADER is ACKed)
    /// and apply it at UPTODATE.
    pub fn on_commit(&mut self, zxid: i64) -> Vec<LearnerEffect<T>> {
        if self.after_new_leader() {
            self.replay.push(Replay::Commit { zxid });
            return Vec::new();
        }
        if self.phase != LearnerPhase::Syncing {
            return self.unexpected("COMMIT");
        }
        match self.pending.front() {
            Some(&(z, _)) if z == zxid => {}
            _ => {
                let reason = format!("COMMIT 0x{zxid:x} is not for the next proposal");
                return self.abort(reason);
            }
        }
        let (zxid, txn) = self.pending.pop_front().expect("front exists");
        self.commit_synced(zxid, txn)
    }

    /// A txn of the sync: logged at once, applied at UPTODATE. A new
    /// leader's history may hold txns it logged in an earlier epoch that no
    /// quorum acknowledged then (ZooKeeper's leader DIFFs from its committed
    /// log, which its txn log refilled at start-up): they are committed only
    /// once a quorum has ACKed NEWLEADER, which UPTODATE tells. Until then
    /// they are this learner's log and nothing more (should the epoch fail,
    /// the next leader keeps or truncates them); the ZAB specification
    /// delivers the initial history at that commit too.
    fn commit_synced(&mut self, zxid: i64, txn: T) -> Vec<LearnerEffect<T>> {
        assert!(zxid > self.last_committed, "sync applied out of order");
        self.last_logged = zxid;
        self.last_committed = zxid;
        self.synced.push((zxid, txn.clone()));
        vec![LearnerEffect::LogAppend { zxid, txn }]
    }

    /// An INFORM (a committed txn, to an observer) in the sync stream.
    pub fn on_inform(&mut self, zxid: i64, txn: T) -> Vec<LearnerEffect<T>> {
        if self.phase != LearnerPhase::Syncing && !self.after_new_leader() {
            return self.unexpected("INFORM");
        }
        if let Some(e) = self.check_incoming(zxid, "INFORM") {
            return e;
        }
        if self.after_new_leader() {
            self.replay.push(Replay::Inform { zxid, txn });
            return Vec::new();
        }
        if !self.pending.is_empty() {
            return self.abort(format!("INFORM 0x{zxid:x} behind uncommitted proposals"));
        }
        self.commit_synced(zxid, txn)
    }

    /// NEWLEADER: the sync is complete. Make it durable first (ZOOKEEPER-3911,
    /// ZOOKEEPER-4646); the epoch and the ACK follow in `on_synced` and
    /// `on_persisted_current_epoch`.
    pub fn on_new_leader(&mut self, zxid: i64) -> Vec<LearnerEffect<T>> {
        if self.phase != LearnerPhase::Syncing {
            return self.unexpected("NEWLEADER");
        }
        if zxid != make_zxid(self.new_epoch, 0) {
            let reason = format!(
                "NEWLEADER 0x{zxid:x} is not for epoch {} (epoch {}, counter {})",
                self.new_epoch,
                epoch_of(zxid),
                counter_of(zxid)
            );
            return self.abort(reason);
        }
        // Uncommitted proposals go to the broadcast phase, which logs and ACKs
        // them (ZooKeeper keeps them in packetsNotLogged, ZOOKEEPER-4394).
        for (zxid, txn) in self.pending.drain(..) {
            self.replay.push(Replay::Proposal { zxid, txn });
        }
        self.phase = LearnerPhase::Flushing;
        vec![LearnerEffect::SyncLog {
            snapshot: self.snapshot,
        }]
    }

    /// Everything synced is durable: now, and not before, the current epoch
    /// may move (ZOOKEEPER-4643).
    pub fn on_synced(&mut self) -> Vec<LearnerEffect<T>> {
        if self.phase != LearnerPhase::Flushing {
            return self.unexpected("log sync");
        }
        self.phase = LearnerPhase::PersistingCurrentEpoch;
        vec![LearnerEffect::PersistCurrentEpoch {
            epoch: self.new_epoch,
        }]
    }

    /// `currentEpoch` is durable: ACK NEWLEADER.
    pub fn on_persisted_current_epoch(&mut self) -> Vec<LearnerEffect<T>> {
        if self.phase != LearnerPhase::PersistingCurrentEpoch {
            return self.unexpected("current-epoch persistence");
        }
        assert!(
            self.new_epoch >= self.current_epoch,
            "current epoch went backward"
        );
        self.current_epoch = self.new_epoch;
        assert!(
            self.accepted_epoch >= self.current_epoch,
            "acceptedEpoch {} < currentEpoch {}",
            self.accepted_epoch,
            self.current_epoch
        );
        self.phase = LearnerPhase::AwaitUpToDate;
        vec![LearnerEffect::Send(Message::Ack {
            zxid: make_zxid(self.new_epoch, 0),
        })]
    }

    /// UPTODATE: the epoch is established. Apply the txns of the sync, then
    /// serve clients (only now).
    pub fn on_up_to_date(&mut self) -> Vec<LearnerEffect<T>> {
        if self.phase != LearnerPhase::AwaitUpToDate {
            return self.unexpected("UPTODATE");
        }
        self.phase = LearnerPhase::Serving;
        let mut effects: Vec<LearnerEffect<T>> = self
            .synced
            .drain(..)
            .map(|(zxid, txn)| LearnerEffect::Apply { zxid, txn })
            .collect();
        effects.push(LearnerEffect::Send(Message::Ack {
            zxid: make_zxid(self.new_epoch, 0),
        }));
        effects.push(LearnerEffect::ServeClients {
            epoch: self.new_epoch,
            last_logged: self.last_logged,
            last_committed: self.last_committed,
            replay: std::mem::take(&mut self.replay),
        });
        effects
    }
}

/// What the leader's runtime must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderEffect {
    Send {
        to: ServerId,
        msg: Message,
    },
    /// Write `acceptedEpoch` durably; report `on_persisted_accepted_epoch`.
    PersistAcceptedEpoch {
        epoch: u32,
    },
    /// Sync this learner: `sync::plan_sync` with `learner_last_zxid`, stream
    /// the plan, then NEWLEADER (`new_leader_zxid()`).
    StartSync {
        sid: ServerId,
        learner_last_zxid: i64,
    },
    /// Write `currentEpoch` durably; report `on_persisted_current_epoch`.
    PersistCurrentEpoch {
        epoch: u32,
    },
    /// The epoch is established: start `broadcast::Leader` for `epoch`. The
    /// `Send(UpToDate)`s that follow go to learners already synced; add each
    /// to the broadcast leader as its UPTODATE is sent.
    Established {
        epoch: u32,
    },
    /// Stop leading; back to LOOKING.
    Abort {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaderPhase {
    Idle,
    GatherEpochs,
    PersistingAcceptedEpoch,
    AwaitEpochAcks,
    AwaitNewLeaderAcks,
    PersistingCurrentEpoch,
    Established,
    Aborted,
}

/// The elected leader's side of the handshake.
pub struct LeaderHandshake {
    my_id: ServerId,
    voters: BTreeSet<ServerId>,
    accepted_epoch: u32,
    current_epoch: u32,
    last_zxid: i64,
    init_limit_ms: u64,
    deadline_ms: u64,
    phase: LeaderPhase,
    /// The epoch to propose: max accepted epoch seen + 1.
    epoch: u32,
    /// Voters (self included) that registered before the epoch was decided.
    connecting: BTreeSet<ServerId>,
    /// Learners that registered, and whether LEADERINFO went out.
    learners: BTreeMap<ServerId, bool>,
    /// ACKEPOCHs received, with the learner's last zxid, not yet told to sync.
    epoch_acks: BTreeMap<ServerId, i64>,
    /// Voters (self included) whose ACKEPOCH counts.
    electing: BTreeSet<ServerId>,
    synced: BTreeSet<ServerId>,
    /// Learners (any) that ACKed NEWLEADER, waiting for UPTODATE.
    newleader_acked: BTreeSet<ServerId>,
    /// Voters (self included) whose NEWLEADER ACK counts.
    newleader_quorum: BTreeSet<ServerId>,
    /// Learners sent UPTODATE; their next ACK (of UPTODATE) is not a
    /// NEWLEADER ACK.
    up_to_date: BTreeSet<ServerId>,
}

impl LeaderHandshake {
    /// `voters` must include `my_id`. `last_zxid` is the leader's last
    /// processed zxid; `init_limit_ms` is tickTime × initLimit.
    pub fn new(
        my_id: ServerId,
        voters: &[ServerId],
        accepted_epoch: u32,
        current_epoch: u32,
        last_zxid: i64,
        init_limit_ms: u64,
    ) -> Self {
        let voters: BTreeSet<ServerId> = voters.iter().copied().collect();
        assert!(voters.contains(&my_id), "the leader must be a voter");
        assert!(
            accepted_epoch >= current_epoch,
            "acceptedEpoch {accepted_epoch} < currentEpoch {current_epoch}"
        );
        LeaderHandshake {
            my_id,
            voters,
            accepted_epoch,
            current_epoch,
            last_zxid,
            init_limit_ms,
            deadline_ms: 0,
            phase: LeaderPhase::Idle,
            epoch: 0,
            connecting: BTreeSet::new(),
            learners: BTreeMap::new(),
            epoch_acks: BTreeMap::new(),
            electing: BTreeSet::new(),
            synced: BTreeSet::new(),
            newleader_acked: BTreeSet::new(),
            newleader_quorum: BTreeSet::new(),
            up_to_date: BTreeSet::new(),
        }
    }

    /// The proposed epoch (final once decided).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    pub fn accepted_epoch(&self) -> u32 {
        self.accepted_epoch
    }
    pub fn current_epoch(&self) -> u32 {
        self.current_epoch
    }
    /// The zxid NEWLEADER carries.
    pub fn new_leader_zxid(&self) -> i64 {
        make_zxid(self.epoch, 0)
    }
    pub fn is_established(&self) -> bool {
        self.phase == LeaderPhase::Established
    }
    pub fn is_aborted(&self) -> bool {
        self.phase == LeaderPhase::Aborted
    }
    fn epoch_decided(&self) -> bool {
        !matches!(self.phase, LeaderPhase::Idle | LeaderPhase::GatherEpochs)
    }
    fn quorum(&self, set: &BTreeSet<ServerId>) -> bool {
        set.contains(&self.my_id) && is_quorum(set.len(), self.voters.len())
    }
    fn enter(&mut self, phase: LeaderPhase, now_ms: u64) {
        self.phase = phase;
        self.deadline_ms = now_ms.saturating_add(self.init_limit_ms);
    }
    fn abort(&mut self, reason: String) -> Vec<LeaderEffect> {
        self.phase = LeaderPhase::Aborted;
        vec![LeaderEffect::Abort { reason }]
    }

    /// Start leading at `now_ms`: register our own accepted epoch.
    pub fn start(&mut self, now_ms: u64) -> Vec<LeaderEffect> {
        if self.phase != LeaderPhase::Idle {
            return Vec::new();
        }
        self.enter(LeaderPhase::GatherEpochs, now_ms);
        self.epoch = self.accepted_epoch + 1;
        self.connecting.insert(self.my_id);
        self.maybe_decide_epoch(now_ms)
    }

    fn maybe_decide_epoch(&mut self, now_ms: u64) -> Vec<LeaderEffect> {
        if self.phase == LeaderPhase::GatherEpochs && self.quorum(&self.connecting) {
            self.enter(LeaderPhase::PersistingAcceptedEpoch, now_ms);
            return vec![LeaderEffect::PersistAcceptedEpoch { epoch: self.epoch }];
        }
        Vec::new()
    }

    /// FOLLOWERINFO/OBSERVERINFO from `sid` with its accepted epoch (the epoch
    /// of the message's zxid). Every learner registered before the decision
    /// raises the epoch (ZooKeeper does so for observers too, so that they can
    /// accept it); only voters count towards the quorum.
    pub fn on_learner_info(
        &mut self,
        sid: ServerId,
        learner_accepted_epoch: u32,
        now_ms: u64,
    ) -> Vec<LeaderEffect> {
        if matches!(self.phase, LeaderPhase::Idle | LeaderPhase::Aborted) || sid == self.my_id {
            return Vec::new();
        }
        // A re-registration starts that learner over.
        self.learners.insert(sid, false);
        self.epoch_acks.remove(&sid);
        self.synced.remove(&sid);
        self.newleader_acked.remove(&sid);
        self.up_to_date.remove(&sid);
        if !self.epoch_decided() {
            if learner_accepted_epoch >= self.epoch {
                self.epoch = learner_accepted_epoch + 1;
            }
            if self.voters.contains(&sid) {
                self.connecting.insert(sid);
            }
            return self.maybe_decide_epoch(now_ms);
        }
        if self.phase == LeaderPhase::PersistingAcceptedEpoch {
            return Vec::new(); // LEADERINFO goes out once persisted
        }
        self.learners.insert(sid, true);
        vec![LeaderEffect::Send {
            to: sid,
            msg: Message::LeaderInfo {
                zxid: self.new_leader_zxid(),
            },
        }]
    }

    /// Our `acceptedEpoch` is durable: send LEADERINFO to everyone registered
    /// and count our own ACKEPOCH.
    pub fn on_persisted_accepted_epoch(&mut self, now_ms: u64) -> Vec<LeaderEffect> {
        if self.phase != LeaderPhase::PersistingAcceptedEpoch {
            return Vec::new();
        }
        assert!(
            self.epoch > self.accepted_epoch,
            "accepted epoch went backward"
        );
        self.accepted_epoch = self.epoch;
        assert!(self.accepted_epoch >= self.current_epoch);
        self.enter(LeaderPhase::AwaitEpochAcks, now_ms);
        let zxid = self.new_leader_zxid();
        let mut effects = Vec::new();
        for (&sid, sent) in self.learners.iter_mut() {
            *sent = true;
            effects.push(LeaderEffect::Send {
                to: sid,
                msg: Message::LeaderInfo { zxid },
            });
        }
        self.electing.insert(self.my_id);
        effects.extend(self.maybe_finish_epoch_acks(now_ms));
        effects
    }

    fn maybe_finish_epoch_acks(&mut self, now_ms: u64) -> Vec<LeaderEffect> {
        if self.phase != LeaderPhase::AwaitEpochAcks || !self.quorum(&self.electing) {
            return Vec::new();
        }
        self.enter(LeaderPhase::AwaitNewLeaderAcks, now_ms);
        self.newleader_quorum.insert(self.my_id);
        let mut effects = self.start_syncs();
        effects.extend(self.maybe_finish_new_leader_acks());
        effects
    }

    fn start_syncs(&mut self) -> Vec<LeaderEffect> {
        let acks = std::mem::take(&mut self.epoch_acks);
        acks.into_iter()
            .map(|(sid, learner_last_zxid)| {
                self.synced.insert(sid);
                LeaderEffect::StartSync {
                    sid,
                    learner_last_zxid,
                }
            })
            .collect()
    }

    /// ACKEPOCH from `sid` (`current_epoch` `None` for ZooKeeper's -1).
    pub fn on_ack_epoch(
        &mut self,
        sid: ServerId,
        learner_last_zxid: i64,
        learner_current_epoch: Option<u32>,
        now_ms: u64,
    ) -> Vec<LeaderEffect> {
        if self.learners.get(&sid) != Some(&true) || self.phase == LeaderPhase::Aborted {
            return Vec::new(); // no LEADERINFO was sent to it
        }
        if self.synced.contains(&sid) || self.epoch_acks.contains_key(&sid) {
            return Vec::new();
        }
        self.epoch_acks.insert(sid, learner_last_zxid);
        if self.phase != LeaderPhase::AwaitEpochAcks {
            // The epoch is already acked by a quorum (ZooKeeper returns at
            // `electionFinished`): just sync it.
            return self.start_syncs();
        }
        if let Some(ce) = learner_current_epoch {
            if (ce, learner_last_zxid) > (self.current_epoch, self.last_zxid) {
                let reason = format!(
                    "Follower is ahead of the leader, leader summary: {} (current epoch), \
                     0x{:x} (last zxid); follower {sid}: {ce}, 0x{learner_last_zxid:x}",
                    self.current_epoch, self.last_zxid
                );
                return self.abort(reason);
            }
            if learner_last_zxid != -1 && self.voters.contains(&sid) {
                self.electing.insert(sid);
            }
        }
        self.maybe_finish_epoch_acks(now_ms)
    }

    /// ACK of NEWLEADER (`zxid` must be `new_leader_zxid()`).
    pub fn on_new_leader_ack(&mut self, sid: ServerId, zxid: i64) -> Vec<LeaderEffect> {
        if zxid != self.new_leader_zxid()
            || !self.synced.contains(&sid)
            || self.up_to_date.contains(&sid)
        {
            // A stale epoch, an unsynced learner, or the ACK of UPTODATE.
            return Vec::new();
        }
        if !self.newleader_acked.insert(sid) {
            return Vec::new();
        }
        match self.phase {
            LeaderPhase::Established => {
                self.newleader_acked.remove(&sid);
                self.up_to_date.insert(sid);
                vec![LeaderEffect::Send {
                    to: sid,
                    msg: Message::UpToDate,
                }]
            }
            LeaderPhase::AwaitNewLeaderAcks => {
                if self.voters.contains(&sid) {
                    self.newleader_quorum.insert(sid);
                }
                self.maybe_finish_new_leader_acks()
            }
            _ => Vec::new(),
        }
    }

    fn maybe_finish_new_leader_acks(&mut self) -> Vec<LeaderEffect> {
        if self.phase != LeaderPhase::AwaitNewLeaderAcks || !self.quorum(&self.newleader_quorum) {
            return Vec::new();
        }
        self.phase = LeaderPhase::PersistingCurrentEpoch;
        vec![LeaderEffect::PersistCurrentEpoch { epoch: self.epoch }]
    }

    /// Our `currentEpoch` is durable: the epoch is established.
    pub fn on_persisted_current_epoch(&mut self) -> Vec<LeaderEffect> {
        if self.phase != LeaderPhase::PersistingCurrentEpoch {
            return Vec::new();
        }
        assert!(
            self.epoch >= self.current_epoch,
            "current epoch went backward"
        );
        self.current_epoch = self.epoch;
        assert!(self.accepted_epoch >= self.current_epoch);
        self.phase = LeaderPhase::Established;
        let mut effects = vec![LeaderEffect::Established { epoch: self.epoch }];
        for sid in std::mem::take(&mut self.newleader_acked) {
            self.up_to_date.insert(sid);
            effects.push(LeaderEffect::Send {
                to: sid,
                msg: Message::UpToDate,
            });
        }
        effects
    }

    /// The passage of time: each waiting phase (for epochs, for ACKEPOCHs, for
    /// NEWLEADER ACKs) must finish within initLimit of its start, as each of
    /// ZooKeeper's waits does; otherwise stop leading.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<LeaderEffect> {
        let waiting = match self.phase {
            LeaderPhase::GatherEpochs => "epoch from quorum",
            LeaderPhase::AwaitEpochAcks => "epoch to be acked by quorum",
            LeaderPhase::AwaitNewLeaderAcks => "NEWLEADER to be acked by quorum",
            _ => return Vec::new(),
        };
        if now_ms < self.deadline_ms {
            return Vec::new();
        }
        self.abort(format!("timeout while waiting for {waiting}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    type L = LearnerHandshake<u32>;
    type LE = LearnerEffect<u32>;

    fn z(e: u32, c: u32) -> i64 {
        make_zxid(e, c)
    }

    /// Drives a learner through registration with LEADERINFO `epoch`, with a
    /// new accepted epoch, up to the sync mode.
    fn learner_at_sync(accepted: u32, current: u32, last: i64, epoch: u32) -> L {
        let mut l = L::new(2, false, accepted, current, last);
        assert_eq!(
            l.start(),
            vec![LE::Send(Message::FollowerInfo {
                sid: 2,
                zxid: z(accepted, 0)
            })]
        );
        assert_eq!(
            l.on_leader_info(epoch),
            vec![LE::PersistAcceptedEpoch { epoch }]
        );
        assert_eq!(
            l.on_persisted_accepted_epoch(),
            vec![LE::Send(Message::AckEpoch {
                last_logged_zxid: last,
                current_epoch: Some(current)
            })]
        );
        l
    }

    #[test]
    fn learner_persists_accepted_epoch_before_ackepoch() {
        let mut l = L::new(2, false, 3, 3, z(3, 9));
        l.start();
        // Nothing is sent until acceptedEpoch is durable.
        let e = l.on_leader_info(4);
        assert_eq!(e, vec![LE::PersistAcceptedEpoch { epoch: 4 }]);
        assert_eq!(l.accepted_epoch(), 3, "in memory only once durable");
        let e = l.on_persisted_accepted_epoch();
        assert_eq!(
            e,
            vec![LE::Send(Message::AckEpoch {
                last_logged_zxid: z(3, 9),
                current_epoch: Some(3)
            })]
        );
        assert_eq!((l.accepted_epoch(), l.current_epoch()), (4, 3));
    }

    #[test]
    fn learner_with_higher_accepted_epoch_aborts() {
        let mut l = L::new(2, false, 7, 5, z(5, 1));
        l.start();
        let e = l.on_leader_info(6);
        assert!(
            matches!(&e[..], [LE::Abort { reason }] if reason.contains("is less than accepted epoch")),
            "{e:?}"
        );
        assert!(l.is_aborted());
        assert!(
            l.on_diff(z(5, 1)).is_empty(),
            "an aborted learner stays aborted"
        );
        assert_eq!(
            l.accepted_epoch(),
            7,
            "the accepted epoch never goes backward"
        );
    }

    #[test]
    fn learner_with_equal_accepted_epoch_acks_without_counting() {
        let mut l = L::new(2, true, 6, 5, z(5, 1));
        assert_eq!(
            l.start(),
            vec![LE::Send(Message::ObserverInfo {
                sid: 2,
                zxid: z(6, 0)
            })]
        );
        assert_eq!(
            l.on_leader_info(6),
            vec![LE::Send(Message::AckEpoch {
                last_logged_zxid: z(5, 1),
                current_epoch: None
            })]
        );
        assert!(l.on_diff(z(5, 1)).is_empty());
    }

    /// ZOOKEEPER-3911 / ZOOKEEPER-4646 / ZOOKEEPER-4643: step by step, the
    /// learner never ACKs NEWLEADER before its currentEpoch is durable, and
    /// never persists currentEpoch before the synced txns are flushed.
    #[test]
    fn learner_persistence_order_before_newleader_ack() {
        let mut l = learner_at_sync(3, 3, z(3, 2), 4);
        assert!(l.on_diff(z(3, 2)).is_empty());
        assert!(
            l.on_proposal(z(3, 3), 33).is_empty(),
            "nothing logged before COMMIT"
        );
        assert_eq!(
            l.on_commit(z(3, 3)),
            vec![LE::LogAppend {
                zxid: z(3, 3),
                txn: 33
            }],
            "logged now, applied once the epoch is established (UPTODATE)"
        );
        l.on_proposal(z(3, 4), 34);
        assert_eq!(l.on_commit(z(3, 4)).len(), 1);
        // An outstanding (uncommitted) proposal before NEWLEADER.
        l.on_proposal(z(3, 5), 35);

        // NEWLEADER: only a flush. No epoch, no ACK (ZOOKEEPER-3911, -4646).
        let e = l.on_new_leader(z(4, 0));
        assert_eq!(e, vec![LE::SyncLog { snapshot: false }]);
        assert_eq!(l.current_epoch(), 3);
        // Traffic while flushing is kept for the broadcast phase.
        assert!(l.on_commit(z(3, 5)).is_empty());
        assert!(l.on_proposal(z(4, 1), 41).is_empty());
        // UPTODATE cannot come now; a premature one aborts rather than serve.
        {
            let mut early = learner_at_sync(3, 3, z(3, 2), 4);
            early.on_diff(z(3, 2));
            early.on_new_leader(z(4, 0));
            assert!(matches!(&early.on_up_to_date()[..], [LE::Abort { .. }]));
            assert!(!early.is_serving());
        }

        // Flushed: now (and only now) the epoch (ZOOKEEPER-4643).
        assert_eq!(l.on_synced(), vec![LE::PersistCurrentEpoch { epoch: 4 }]);
        assert_eq!(l.current_epoch(), 3, "currentEpoch moves once durable");
        // Epoch durable: now the ACK of NEWLEADER.
        assert_eq!(
            l.on_persisted_current_epoch(),
            vec![LE::Send(Message::Ack { zxid: z(4, 0) })]
        );
        assert_eq!(l.current_epoch(), 4);
        assert!(!l.is_serving(), "no clients before UPTODATE");

        let e = l.on_up_to_date();
        assert_eq!(
            e,
            vec![
                LE::Apply {
                    zxid: z(3, 3),
                    txn: 33
                },
                LE::Apply {
                    zxid: z(3, 4),
                    txn: 34
                },
                LE::Send(Message::Ack { zxid: z(4, 0) }),
                LE::ServeClients {
                    epoch: 4,
                    last_logged: z(3, 4),
                    last_committed: z(3, 4),
                    replay: vec![
                        Replay::Proposal {
                            zxid: z(3, 5),
                            txn: 35
                        },
                        Replay::Commit { zxid: z(3, 5) },
                        Replay::Proposal {
                            zxid: z(4, 1),
                            txn: 41
                        },
                    ],
                },
            ]
        );
        assert!(l.is_serving());
    }

    #[test]
    fn learner_completions_out_of_order_abort() {
        // ACK-before-flush is impossible: persisting the epoch or acking
        // without the preceding completion is a protocol error.
        let mut l = learner_at_sync(3, 3, z(3, 2), 4);
        l.on_diff(z(3, 2));
        l.on_new_leader(z(4, 0));
        assert!(matches!(
            &l.on_persisted_current_epoch()[..],
            [LE::Abort { .. }]
        ));
        assert_eq!(l.current_epoch(), 3);
    }

    #[test]
    fn learner_trunc_and_snap() {
        // TRUNC (ZOOKEEPER-2845): truncate and rebuild; snapshot at NEWLEADER.
        let mut l = learner_at_sync(3, 3, z(3, 9), 4);
        assert_eq!(l.on_trunc(z(3, 7)), vec![LE::Truncate { to: z(3, 7) }]);
        l.on_proposal(z(3, 8), 38);
        l.on_commit(z(3, 8));
        assert_eq!(
            l.on_new_leader(z(4, 0)),
            vec![LE::SyncLog { snapshot: true }]
        );

        let mut l = learner_at_sync(1, 1, z(1, 1), 4);
        assert_eq!(
            l.on_snap(z(3, 20)),
            vec![LE::InstallSnapshot { zxid: z(3, 20) }]
        );
        // Out-of-order sync data aborts.
        assert!(matches!(
            &l.on_proposal(z(3, 20), 1)[..],
            [LE::Abort { .. }]
        ));

        let mut l = learner_at_sync(1, 1, z(1, 1), 4);
        l.on_diff(z(1, 1));
        assert!(
            matches!(&l.on_new_leader(z(5, 0))[..], [LE::Abort { .. }]),
            "wrong epoch"
        );
    }

    type LdE = LeaderEffect;

    fn sends(e: &[LdE]) -> Vec<(ServerId, Message)> {
        e.iter()
            .filter_map(|x| match x {
                LdE::Send { to, msg } => Some((*to, *msg)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn new_epoch_is_max_of_quorum_plus_one() {
        let mut ld = LeaderHandshake::new(1, &[1, 2, 3, 4, 5], 3, 3, z(3, 5), 10_000);
        assert!(ld.start(0).is_empty());
        assert!(ld.on_learner_info(2, 7, 1).is_empty());
        // Quorum {1, 2, 3}: max(3, 7, 5) + 1.
        assert_eq!(
            ld.on_learner_info(3, 5, 2),
            vec![LdE::PersistAcceptedEpoch { epoch: 8 }]
        );
        // A late joiner with a higher accepted epoch does not change it.
        assert!(ld.on_learner_info(4, 11, 3).is_empty());
        assert_eq!(ld.epoch(), 8);
        let e = ld.on_persisted_accepted_epoch(4);
        assert_eq!(
            sends(&e),
            vec![
                (2, Message::LeaderInfo { zxid: z(8, 0) }),
                (3, Message::LeaderInfo { zxid: z(8, 0) }),
                (4, Message::LeaderInfo { zxid: z(8, 0) }),
            ]
        );
        assert_eq!(ld.accepted_epoch(), 8);
        // Server 4 rejects it.
        let mut l4 = L::new(4, false, 11, 9, z(9, 1));
        l4.start();
        assert!(matches!(&l4.on_leader_info(8)[..], [LE::Abort { .. }]));
        // A joiner after the decision gets LEADERINFO at once.
        assert_eq!(
            sends(&ld.on_learner_info(5, 0, 5)),
            vec![(5, Message::LeaderInfo { zxid: z(8, 0) })]
        );
    }

    #[test]
    fn follower_ahead_of_leader_aborts_leader() {
        for (ce, last) in [(4, z(3, 1)), (3, z(3, 6))] {
            let mut ld = LeaderHandshake::new(1, &[1, 2, 3], 3, 3, z(3, 5), 10_000);
            ld.start(0);
            ld.on_learner_info(2, 4, 0);
            ld.on_persisted_accepted_epoch(0);
            let e = ld.on_ack_epoch(2, last, Some(ce), 1);
            assert!(
                matches!(&e[..], [LdE::Abort { reason }] if reason.contains("Follower is ahead of the leader")),
                "{e:?}"
            );
            assert!(ld.is_aborted());
        }
        // Equal is fine.
        let mut ld = LeaderHandshake::new(1, &[1, 2, 3], 3, 3, z(3, 5), 10_000);
        ld.start(0);
        ld.on_learner_info(2, 3, 0);
        ld.on_persisted_accepted_epoch(0);
        assert_eq!(
            ld.on_ack_epoch(2, z(3, 5), Some(3), 1),
            vec![LdE::StartSync {
                sid: 2,
                learner_last_zxid: z(3, 5)
            }]
        );
    }

    #[test]
    fn observers_never_count() {
        // Voters 1, 2, 3; observers 10, 11.
        let mut ld = LeaderHandshake::new(1, &[1, 2, 3], 2, 2, z(2, 5), 10_000);
        ld.start(0);
        assert!(
            ld.on_learner_info(10, 6, 0).is_empty(),
            "observer: no epoch quorum"
        );
        assert!(ld.on_learner_info(11, 1, 0).is_empty());
        // The observer's accepted epoch still raises the epoch (as in ZooKeeper).
        assert_eq!(
            ld.on_learner_info(2, 2, 0),
            vec![LdE::PersistAcceptedEpoch { epoch: 7 }]
        );
        ld.on_persisted_accepted_epoch(0);
        assert!(ld.on_ack_epoch(10, z(2, 5), Some(2), 0).is_empty());
        assert!(ld.on_ack_epoch(11, z(2, 5), Some(2), 0).is_empty());
        // ACKEPOCH with -1 (already accepted) does not count either.
        ld.on_learner_info(3, 7, 0);
        assert!(ld.on_ack_epoch(3, z(2, 5), None, 0).is_empty());
        let e = ld.on_ack_epoch(2, z(2, 4), Some(2), 0);
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e.iter().all(|x| matches!(x, LdE::StartSync { .. })));
        // NEWLEADER ACKs: observers don't count.
        assert!(ld.on_new_leader_ack(10, z(7, 0)).is_empty());
        assert!(ld.on_new_leader_ack(11, z(7, 0)).is_empty());
        assert!(
            ld.on_new_leader_ack(3, z(6, 0)).is_empty(),
            "stale epoch ignored"
        );
        assert_eq!(
            ld.on_new_leader_ack(3, z(7, 0)),
            vec![LdE::PersistCurrentEpoch { epoch: 7 }]
        );
        assert_eq!(ld.current_epoch(), 2);
        let e = ld.on_persisted_current_epoch();
        assert_eq!(e[0], LdE::Established { epoch: 7 });
        assert_eq!(
            sends(&e),
            vec![
                (3, Message::UpToDate),
                (10, Message::UpToDate),
                (11, Message::UpToDate)
            ]
        );
        assert_eq!(ld.current_epoch(), 7);
        // A learner that ACKs later gets UPTODATE at once.
        assert_eq!(
            sends(&ld.on_new_leader_ack(2, z(7, 0))),
            vec![(2, Message::UpToDate)]
        );
    }

    #[test]
    fn init_limit_timeouts() {
        // No epoch quorum.
        let mut ld = LeaderHandshake::new(1, &[1, 2, 3], 2, 2, z(2, 5), 1000);
        ld.start(100);
        ld.on_learner_info(10, 1, 200); // an observer doesn't help
        assert!(ld.on_tick(1099).is_empty());
        let e = ld.on_tick(1100);
        assert!(
            matches!(&e[..], [LdE::Abort { reason }] if reason.contains("timeout")),
            "{e:?}"
        );
        assert!(ld.on_tick(5000).is_empty() && ld.on_learner_info(2, 1, 5000).is_empty());

        // No ACKEPOCH quorum: each wait gets its own initLimit, as in ZooKeeper.
        let mut ld = LeaderHandshake::new(1, &[1, 2, 3], 2, 2, z(2, 5), 1000);
        ld.start(0);
        ld.on_learner_info(2, 1, 900);
        ld.on_persisted_accepted_epoch(950);
        assert!(ld.on_tick(1900).is_empty());
        assert!(matches!(&ld.on_tick(1950)[..], [LdE::Abort { .. }]));

        // No NEWLEADER quorum.
        let mut ld = LeaderHandshake::new(1, &[1, 2, 3], 2, 2, z(2, 5), 1000);
        ld.start(0);
        ld.on_learner_info(2, 1, 0);
        ld.on_persisted_accepted_epoch(0);
        ld.on_ack_epoch(2, z(2, 5), Some(2), 500);
        assert!(ld.on_tick(1499).is_empty());
        assert!(matches!(&ld.on_tick(1500)[..], [LdE::Abort { .. }]));
        assert!(!ld.is_established());

        // Established: time no longer matters.
        let mut ld = LeaderHandshake::new(1, &[1], 2, 2, z(2, 5), 1000);
        assert_eq!(ld.start(0), vec![LdE::PersistAcceptedEpoch { epoch: 3 }]);
        ld.on_persisted_accepted_epoch(0);
        assert_eq!(
            ld.on_persisted_current_epoch(),
            vec![LdE::Established { epoch: 3 }]
        );
        assert!(ld.on_tick(1_000_000).is_empty());
    }

    // ---- a tiny seeded network: a leader and its learners end to end ----

    #[derive(Debug, Clone)]
    enum Wire {
        Hs(Message),
        Diff(i64),
        Proposal(i64, u32),
        Commit(i64),
        NewLeader(i64),
    }

    #[derive(Debug, Clone, Copy)]
    enum Done {
        Accepted,
        Synced,
        Current,
    }

    struct Node {
        hs: L,
        log: Vec<i64>,
        durable: usize,
        durable_current: u32,
        pending: VecDeque<Done>,
        acked_newleader: bool,
        serving: bool,
    }

    fn run_handshake(seed: u64, voters: usize, observers: usize) {
        let mut rng = Rng::new(seed);
        // The leader (1) has the longest history of epoch 3: (3, 1..=6).
        let history: Vec<i64> = (1..=6).map(|c| z(3, c)).collect();
        let ids: Vec<ServerId> = (1..=voters as u64).collect();
        let mut ld = LeaderHandshake::new(1, &ids, 3, 3, z(3, 6), 10_000);
        let mut nodes: BTreeMap<ServerId, Node> = BTreeMap::new();
        let learner_ids: Vec<ServerId> = (2..=voters as u64)
            .chain((1..=observers as u64).map(|o| 100 + o))
            .collect();
        for &sid in &learner_ids {
            let have = rng.index(history.len() + 1);
            let accepted = 3 + rng.below(2) as u32; // some took part in a failed round
            let last = if have == 0 { 0 } else { history[have - 1] };
            nodes.insert(
                sid,
                Node {
                    hs: L::new(sid, sid > 100, accepted, 3, last),
                    log: history[..have].to_vec(),
                    durable: have,
                    durable_current: 3,
                    pending: VecDeque::new(),
                    acked_newleader: false,
                    serving: false,
                },
            );
        }
        // FIFO links, keyed (from, to); 1 is the leader.
        let mut links: BTreeMap<(ServerId, ServerId), VecDeque<Wire>> = BTreeMap::new();
        let mut leader_pending: VecDeque<&str> = VecDeque::new();
        let mut established = None;
        let mut now = 0u64;

        let mut out = ld.start(now);
        for &sid in &learner_ids {
            for e in nodes.get_mut(&sid).unwrap().hs.start() {
                let LE::Send(m) = e else { panic!() };
                links.entry((sid, 1)).or_default().push_back(Wire::Hs(m));
            }
        }
        loop {
            // Leader effects.
            for e in std::mem::take(&mut out) {
                match e {
                    LdE::Send { to, msg } => {
                        links.entry((1, to)).or_default().push_back(Wire::Hs(msg))
                    }
                    LdE::PersistAcceptedEpoch { .. } => leader_pending.push_back("accepted"),
                    LdE::PersistCurrentEpoch { .. } => leader_pending.push_back("current"),
                    LdE::StartSync {
                        sid,
                        learner_last_zxid,
                    } => {
                        let q = links.entry((1, sid)).or_default();
                        q.push_back(Wire::Diff(learner_last_zxid));
                        for &h in history.iter().filter(|&&h| h > learner_last_zxid) {
                            q.push_back(Wire::Proposal(h, counter_of(h)));
                            q.push_back(Wire::Commit(h));
                        }
                        q.push_back(Wire::NewLeader(ld.new_leader_zxid()));
                    }
                    LdE::Established { epoch } => established = Some(epoch),
                    LdE::Abort { reason } => panic!("seed {seed}: leader aborted: {reason}"),
                }
            }
            // Pick something to happen.
            let mut choices: Vec<(u8, ServerId, ServerId)> = links
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(&(f, t), _)| (0, f, t))
                .collect();
            if !leader_pending.is_empty() {
                choices.push((1, 1, 1));
            }
            for (&sid, n) in &nodes {
                if !n.pending.is_empty() {
                    choices.push((2, sid, sid));
                }
            }
            if choices.is_empty() {
                break;
            }
            now += 1;
            let (kind, from, to) = *rng.pick(&choices);
            match kind {
                1 => {
                    out = match leader_pending.pop_front().unwrap() {
                        "accepted" => ld.on_persisted_accepted_epoch(now),
                        _ => ld.on_persisted_current_epoch(),
                    }
                }
                2 => {
                    let n = nodes.get_mut(&from).unwrap();
                    let effs = match n.pending.pop_front().unwrap() {
                        Done::Accepted => n.hs.on_persisted_accepted_epoch(),
                        Done::Synced => {
                            n.durable = n.log.len();
                            n.hs.on_synced()
                        }
                        Done::Current => {
                            n.durable_current = ld.epoch();
                            n.hs.on_persisted_current_epoch()
                        }
                    };
                    learner_effects(seed, from, n, effs, &mut links, &history);
                }
                _ if to == 1 => {
                    let Wire::Hs(m) = links.get_mut(&(from, to)).unwrap().pop_front().unwrap()
                    else {
                        panic!()
                    };
                    out = match m {
                        Message::FollowerInfo { sid, zxid }
                        | Message::ObserverInfo { sid, zxid } => {
                            ld.on_learner_info(sid, epoch_of(zxid), now)
                        }
                        Message::AckEpoch {
                            last_logged_zxid,
                            current_epoch,
                        } => ld.on_ack_epoch(from, last_logged_zxid, current_epoch, now),
                        Message::Ack { zxid } => ld.on_new_leader_ack(from, zxid),
                        m => panic!("seed {seed}: leader got {m:?}"),
                    };
                }
                _ => {
                    let w = links.get_mut(&(from, to)).unwrap().pop_front().unwrap();
                    let n = nodes.get_mut(&to).unwrap();
                    let effs = match w {
                        Wire::Hs(Message::LeaderInfo { zxid }) => {
                            n.hs.on_leader_info(epoch_of(zxid))
                        }
                        Wire::Hs(Message::UpToDate) => {
                            assert!(
                                established.is_some(),
                                "seed {seed}: UPTODATE before established"
                            );
                            n.hs.on_up_to_date()
                        }
                        Wire::Hs(m) => panic!("seed {seed}: learner got {m:?}"),
                        Wire::Diff(x) => n.hs.on_diff(x),
                        Wire::Proposal(x, t) => n.hs.on_proposal(x, t),
                        Wire::Commit(x) => n.hs.on_commit(x),
                        Wire::NewLeader(x) => n.hs.on_new_leader(x),
                    };
                    learner_effects(seed, to, n, effs, &mut links, &history);
                }
            }
        }
        let epoch = ld.epoch();
        assert_eq!(established, Some(epoch), "seed {seed}: established");
        // max + 1 over whoever registered before the quorum: 4 or 5 here, and
        // never below a registered learner's accepted epoch (none aborted).
        assert!((4..=5).contains(&epoch), "seed {seed}: epoch {epoch}");
        assert!(ld.is_established() && ld.current_epoch() == epoch && ld.accepted_epoch() == epoch);
        for (sid, n) in &nodes {
            assert!(n.serving && n.hs.is_serving(), "seed {seed}: {sid} serving");
            assert_eq!(n.log, history, "seed {seed}: {sid} synced");
            assert_eq!(n.durable, history.len(), "seed {seed}: {sid} durable");
            assert_eq!(
                (
                    n.hs.accepted_epoch(),
                    n.hs.current_epoch(),
                    n.durable_current
                ),
                (epoch, epoch, epoch)
            );
        }
    }

    fn learner_effects(
        seed: u64,
        sid: ServerId,
        n: &mut Node,
        effs: Vec<LE>,
        links: &mut BTreeMap<(ServerId, ServerId), VecDeque<Wire>>,
        history: &[i64],
    ) {
        for e in effs {
            match e {
                LE::Send(m) => {
                    if let Message::Ack { .. } = m {
                        if !n.acked_newleader {
                            // The ACK of NEWLEADER: all synced txns and the
                            // new current epoch are durable (ZOOKEEPER-3911,
                            // -4646, -4643).
                            assert_eq!(
                                n.durable,
                                history.len(),
                                "seed {seed}: {sid} ACK before flush"
                            );
                            assert_eq!(
                                n.durable_current,
                                n.hs.current_epoch(),
                                "seed {seed}: {sid}"
                            );
                            n.acked_newleader = true;
                        }
                    }
                    links.entry((sid, 1)).or_default().push_back(Wire::Hs(m));
                }
                LE::PersistAcceptedEpoch { .. } => n.pending.push_back(Done::Accepted),
                LE::LogAppend { zxid, .. } => {
                    assert!(
                        n.log.last().is_none_or(|&l| l < zxid),
                        "seed {seed}: log order"
                    );
                    n.log.push(zxid);
                }
                LE::Apply { .. } => {}
                LE::SyncLog { snapshot } => {
                    assert!(!snapshot);
                    n.pending.push_back(Done::Synced)
                }
                LE::PersistCurrentEpoch { .. } => {
                    assert_eq!(
                        n.durable,
                        n.log.len(),
                        "seed {seed}: {sid} epoch before flush"
                    );
                    n.pending.push_back(Done::Current)
                }
                LE::ServeClients {
                    replay,
                    last_logged,
                    ..
                } => {
                    assert!(
                        n.acked_newleader,
                        "seed {seed}: {sid} serving before NEWLEADER ACK"
                    );
                    assert!(replay.is_empty());
                    assert_eq!(last_logged, *history.last().unwrap());
                    n.serving = true;
                }
                e => panic!("seed {seed}: {sid} unexpected {e:?}"),
            }
        }
    }

    #[test]
    fn happy_path_three_voters() {
        for seed in 0..200 {
            run_handshake(seed, 3, 0);
        }
    }

    #[test]
    fn happy_path_five_voters_and_observers() {
        for seed in 0..200 {
            run_handshake(seed, 5, 0);
            run_handshake(seed, 5, 2);
        }
    }
}
