//! One server's whole ZAB life as a single pure state machine: LOOKING (fast
//! leader election), then LEADING (discovery handshake, per-learner sync,
//! broadcast) or FOLLOWING/OBSERVING (handshake, sync, broadcast), and back to
//! LOOKING when anything fails. It composes `election`, `discovery`, `sync`
//! and `broadcast`; it does no I/O, reads no clock and spawns nothing. The
//! runtime (or the simulator) feeds it events and carries out its effects in
//! the order given.
//!
//! `T` is a proposal's payload (the runtime's txn plus where it came from);
//! `R` is a reply to a forwarded request (`sync`, revalidation, a failure),
//! which must reach its server after every commit that preceded it.
//!
//! Leaving a role is always `Effect::Look`: the runtime stops serving, drops
//! its peer links, rebuilds its state from its own log (a server's history
//! is exactly what it logged, as ZooKeeper reloads its database), and calls
//! `start_looking` with what it found.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::broadcast::{self, Follower, Leader, Observer, ProposeError};
use super::discovery::{self, LeaderEffect, LeaderHandshake, LearnerEffect, LearnerHandshake, Replay};
use super::election::{self, Election, ElectionConfig, Notification, ServerState};
use super::sync::{plan_sync, SyncInput, SyncMode};
use super::{epoch_of, ServerId};

/// A learner whose leader closed the connection before answering tries again
/// after this long (ZooKeeper's leaderConnectDelayDuringRetryMs).
pub const LEADER_RETRY_DELAY_MS: u64 = 100;

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub my_id: ServerId,
    pub voters: Vec<ServerId>,
    pub observers: Vec<ServerId>,
    /// initLimit × tickTime: how long discovery and sync may take.
    pub init_limit_ms: u64,
    /// syncLimit × tickTime: how long a leader or learner may go unheard.
    pub sync_limit_ms: u64,
    /// FLE's finalizeWait.
    pub finalize_wait_ms: i64,
    /// Committed proposals kept in memory for DIFF (ZooKeeper's
    /// commitLogCount, 500 by default).
    pub committed_log_max: usize,
    /// Known bugs planted on purpose; all off outside the simulator.
    pub planted: PlantedBugs,
    /// The counter each new epoch's proposals start after: 0, as in
    /// ZooKeeper, except in the simulator, which starts it near 2^32 to reach
    /// the counter's end (ZOOKEEPER-1277) within a few hundred writes, as
    /// ZooKeeper's test-only `zookeeper.testingonly.initialZxid` does.
    pub epoch_counter_start: u32,
}

/// Known ZAB bugs the simulator plants to prove its checkers catch them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// The leader commits on any single ACK.
    pub commit_on_minority: bool,
    /// A follower ACKs a proposal as soon as it arrives, before its fsync.
    pub ack_before_fsync: bool,
    /// A learner ACKs NEWLEADER without waiting for the synced txns to be
    /// durable (the ZOOKEEPER-3911 / 4646 class).
    pub newleader_before_persist: bool,
    /// The leader sends the replies a commit releases before the COMMIT
    /// itself (a learner answers a sync ahead of the write before it).
    pub reply_before_commit: bool,
}

/// Messages on a quorum link (leader <-> one learner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg<T, R> {
    FollowerInfo { sid: ServerId, zxid: i64 },
    ObserverInfo { sid: ServerId, zxid: i64 },
    LeaderInfo { zxid: i64 },
    AckEpoch { last_logged_zxid: i64, current_epoch: Option<u32> },
    Diff { zxid: i64 },
    Trunc { zxid: i64 },
    /// The whole snapshot at `zxid` has arrived (the runtime carries its bytes).
    Snap { zxid: i64 },
    NewLeader { zxid: i64 },
    UpToDate,
    Proposal { zxid: i64, txn: T },
    Ack { zxid: i64 },
    Commit { zxid: i64 },
    Inform { zxid: i64, txn: T },
    Ping { zxid: i64 },
    Reply(R),
}

/// What the runtime must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<T, R> {
    /// An election notification.
    Notify { to: ServerId, notification: Notification },
    /// Learner: open the quorum link to `leader`; report `on_leader_connected`
    /// or `on_leader_unreachable`.
    ConnectToLeader { leader: ServerId },
    /// On the quorum link to `to` (the leader, or one learner).
    Send { to: ServerId, msg: Msg<T, R> },
    /// Leader: send `to` a SNAP of the committed data tree, at whatever zxid
    /// `S` the runtime's committed replica is, then call `on_snapshot_sent(to,
    /// S)` before anything else (the sync continues from S).
    SendSnapshot { to: ServerId },
    /// Close the quorum link to `sid`.
    Disconnect { sid: ServerId },
    /// Write `acceptedEpoch` durably; report `on_persisted_accepted_epoch`.
    PersistAcceptedEpoch { epoch: u32 },
    /// Write `currentEpoch` durably; report `on_persisted_current_epoch`.
    PersistCurrentEpoch { epoch: u32 },
    /// Append to the txn log; report `on_logged` once durable.
    LogAppend { zxid: i64, txn: T },
    /// Make every append so far durable; report `on_synced`.
    SyncLog,
    /// Cut the log after `to` and rebuild the data tree from what remains.
    Truncate { to: i64 },
    /// Replace the data tree and log with the snapshot just received.
    InstallSnapshot { zxid: i64 },
    /// A committed txn: apply it to every replica.
    Apply { zxid: i64, txn: T },
    /// A reply for one of this server's clients, now in order.
    Deliver(R),
    /// Serve clients in this role.
    Serve { state: ServerState, epoch: u32, leader: ServerId },
    /// Back to LOOKING (logged with the reason): stop serving, close every
    /// quorum link, rebuild from the log, then `start_looking`.
    Look { reason: String },
}

/// Counters for `srvr`/`mntr`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub learners: usize,
    pub synced_followers: usize,
    pub pending_syncs: usize,
}

struct Leading<T, R> {
    handshake: LeaderHandshake,
    broadcast: Option<Leader<T>>,
    /// Learners that registered as observers.
    observers: BTreeSet<ServerId>,
    /// Where live forwarding starts for learners synced before the epoch was
    /// established.
    forward_from: BTreeMap<ServerId, i64>,
    /// SNAPs waiting for `on_snapshot_sent`: the learner's last zxid.
    snapping: BTreeSet<ServerId>,
    /// Learners between StartSync and UPTODATE.
    syncing: BTreeSet<ServerId>,
    /// Learners sent TRUNC in their current sync (see `Peer::snap_next`).
    truncating: BTreeSet<ServerId>,
    /// Replies waiting until everything proposed before them commits.
    replies: VecDeque<(i64, ServerId, R)>,
}

struct Learning<T, R> {
    leader: ServerId,
    observer: bool,
    connected: bool,
    handshake: LearnerHandshake<T>,
    follower: Option<Follower<T>>,
    observing: Option<Observer<T>>,
    /// Sync must be done by then (initLimit).
    deadline_ms: u64,
    last_heard_ms: u64,
    /// Whether the leader has sent anything on the current link.
    heard: bool,
    /// When to try the leader again after a connection it refused or closed
    /// before answering (it may not have finished its own election yet).
    reconnect_at_ms: Option<u64>,
    /// The highest COMMIT (or INFORM) received, and the highest applied.
    commit_target: i64,
    applied: i64,
    replies: VecDeque<(i64, R)>,
}

enum Role<T, R> {
    Looking,
    Leading(Box<Leading<T, R>>),
    Learning(Box<Learning<T, R>>),
}

pub struct Peer<T, R> {
    config: PeerConfig,
    election: Election,
    accepted_epoch: u32,
    current_epoch: u32,
    last_logged: i64,
    /// Committed proposals, oldest first, at most `committed_log_max`.
    history: VecDeque<(i64, T)>,
    role: Role<T, R>,
    serving: bool,
    /// Learners whose TRUNC sync ended with the link closing (they could
    /// not truncate exactly, their log being cut by a snapshot): they get
    /// SNAP the next time this server leads them. Kept across elections:
    /// such a learner's leaving costs the leader its quorum when it was
    /// needed for one, and a leader that forgot re-elected itself and sent
    /// TRUNC again, round after round (found by the simulator).
    snap_next: BTreeSet<ServerId>,
}

impl<T: Clone, R> Peer<T, R> {
    pub fn new(config: PeerConfig) -> Self {
        let mut election_config = ElectionConfig::new(config.my_id, config.voters.clone(), config.observers.clone());
        election_config.finalize_wait_ms = config.finalize_wait_ms;
        Peer {
            election: Election::new(election_config, 0, 0),
            config,
            accepted_epoch: 0,
            current_epoch: 0,
            last_logged: 0,
            history: VecDeque::new(),
            role: Role::Looking,
            serving: false,
            snap_next: BTreeSet::new(),
        }
    }

    pub fn my_id(&self) -> ServerId {
        self.config.my_id
    }

    pub fn state(&self) -> ServerState {
        match &self.role {
            Role::Looking => ServerState::Looking,
            Role::Leading(_) => ServerState::Leading,
            Role::Learning(l) if l.observer => ServerState::Observing,
            Role::Learning(_) => ServerState::Following,
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving
    }

    pub fn leader(&self) -> Option<ServerId> {
        match &self.role {
            Role::Looking => None,
            Role::Leading(_) => Some(self.config.my_id),
            Role::Learning(l) => Some(l.leader),
        }
    }

    pub fn election(&self) -> &Election {
        &self.election
    }

    pub fn epochs(&self) -> (u32, u32) {
        (self.accepted_epoch, self.current_epoch)
    }

    pub fn stats(&self) -> PeerStats {
        match &self.role {
            Role::Leading(l) => {
                let learners = l.broadcast.as_ref().map_or(0, |b| b.learner_count());
                let synced = l.broadcast.as_ref().map_or(0, |b| b.follower_count());
                PeerStats { learners, synced_followers: synced, pending_syncs: l.syncing.len() }
            }
            _ => PeerStats::default(),
        }
    }

    /// Whether a proposal would be taken now (leading, established, not at
    /// the in-flight bound).
    pub fn can_propose(&self) -> bool {
        match &self.role {
            Role::Leading(l) => l.broadcast.as_ref().is_some_and(|b| b.can_propose()),
            _ => false,
        }
    }

    /// Start an election with the state rebuilt from the log. `history` is
    /// the tail of what that rebuild replayed (oldest first; ZooKeeper's
    /// committedLog as loadDataBase fills it), for DIFF should we lead: only
    /// the newest `committed_log_max` are kept. It must end at `last_logged`,
    /// so that a leader's DIFF only ever sends txns of its own history,
    /// which is the history a new epoch starts from. A txn in it that no
    /// quorum holds is the same as in ZooKeeper: should this server lead, it
    /// is part of the new epoch's history; otherwise the leader's TRUNC or
    /// SNAP removes it here (and `Truncate` and `InstallSnapshot` trim the
    /// window with it).
    pub fn start_looking(
        &mut self,
        now_ms: u64,
        last_logged: i64,
        accepted_epoch: u32,
        current_epoch: u32,
        history: Vec<(i64, T)>,
        effects: &mut Vec<Effect<T, R>>,
    ) {
        assert!(accepted_epoch >= current_epoch, "acceptedEpoch {accepted_epoch} < currentEpoch {current_epoch}");
        assert!(
            history.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "the committed log must be in strictly increasing zxid order"
        );
        assert!(
            history.last().is_none_or(|(zxid, _)| *zxid == last_logged),
            "the committed log must end at the last logged zxid {last_logged:#x}, not {:#x}",
            history.last().map_or(0, |(zxid, _)| *zxid)
        );
        self.role = Role::Looking;
        self.serving = false;
        self.last_logged = last_logged;
        self.accepted_epoch = accepted_epoch;
        self.current_epoch = current_epoch;
        self.history = history.into_iter().collect();
        self.trim_history();
        self.election.set_last_logged(last_logged, current_epoch);
        let mut out = Vec::new();
        self.election.start(now_ms as i64, &mut out);
        self.election_effects(now_ms, out, effects);
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.config.committed_log_max {
            self.history.pop_front();
        }
    }

    fn look(&mut self, reason: String, effects: &mut Vec<Effect<T, R>>) {
        if matches!(self.role, Role::Looking) {
            return;
        }
        tracing::warn!(%reason, "leaving {:?}", self.state());
        self.role = Role::Looking;
        self.serving = false;
        effects.push(Effect::Look { reason });
    }

    // ---- election ------------------------------------------------------

    pub fn on_notification(&mut self, now_ms: u64, n: Notification, effects: &mut Vec<Effect<T, R>>) {
        if matches!(self.role, Role::Looking) {
            let mut out = Vec::new();
            self.election.on_notification(now_ms as i64, n, &mut out);
            self.election_effects(now_ms, out, effects);
        } else if let Some(election::Effect::Send { to, notification }) =
            self.election.reply_when_settled(self.state(), &self.election.current_vote(), &n)
        {
            effects.push(Effect::Notify { to, notification });
        }
    }

    fn election_effects(&mut self, now_ms: u64, out: Vec<election::Effect>, effects: &mut Vec<Effect<T, R>>) {
        for effect in out {
            match effect {
                election::Effect::Send { to, notification } => effects.push(Effect::Notify { to, notification }),
                election::Effect::Decided { leader, state, .. } => self.decided(now_ms, leader, state, effects),
            }
        }
    }

    fn decided(&mut self, now_ms: u64, leader: ServerId, state: ServerState, effects: &mut Vec<Effect<T, R>>) {
        tracing::info!(leader, state = ?state, zxid = format_args!("{:#x}", self.last_logged), "election decided");
        match state {
            ServerState::Leading => {
                let mut handshake = LeaderHandshake::new(
                    self.config.my_id,
                    &self.config.voters,
                    self.accepted_epoch,
                    self.current_epoch,
                    self.last_logged,
                    self.config.init_limit_ms,
                );
                let out = handshake.start(now_ms);
                self.role = Role::Leading(Box::new(Leading {
                    handshake,
                    broadcast: None,
                    observers: BTreeSet::new(),
                    forward_from: BTreeMap::new(),
                    snapping: BTreeSet::new(),
                    syncing: BTreeSet::new(),
                    truncating: BTreeSet::new(),
                    replies: VecDeque::new(),
                }));
                self.leader_effects(now_ms, out, effects);
            }
            ServerState::Following | ServerState::Observing => {
                let observer = state == ServerState::Observing;
                self.role = Role::Learning(Box::new(Learning {
                    leader,
                    observer,
                    connected: false,
                    handshake: LearnerHandshake::new(
                        self.config.my_id,
                        observer,
                        self.accepted_epoch,
                        self.current_epoch,
                        self.last_logged,
                    ),
                    follower: None,
                    observing: None,
                    deadline_ms: now_ms + self.config.init_limit_ms,
                    last_heard_ms: now_ms,
                    heard: false,
                    reconnect_at_ms: None,
                    commit_target: self.last_logged,
                    applied: self.last_logged,
                    replies: VecDeque::new(),
                }));
                effects.push(Effect::ConnectToLeader { leader });
            }
            ServerState::Looking => {}
        }
    }

    // ---- time ----------------------------------------------------------

    /// Call every half tick or so (and at `Election::next_wakeup_ms`).
    pub fn on_tick(&mut self, now_ms: u64, effects: &mut Vec<Effect<T, R>>) {
        match &mut self.role {
            Role::Looking => {
                let mut out = Vec::new();
                self.election.on_tick(now_ms as i64, &mut out);
                self.election_effects(now_ms, out, effects);
            }
            Role::Leading(l) => {
                let out = l.handshake.on_tick(now_ms);
                let mut bout = Vec::new();
                if let Some(b) = l.broadcast.as_mut() {
                    bout = b.on_tick(now_ms);
                }
                self.leader_effects(now_ms, out, effects);
                self.broadcast_effects(now_ms, bout, effects);
            }
            Role::Learning(l) => {
                if l.reconnect_at_ms.is_some_and(|at| now_ms >= at) {
                    l.reconnect_at_ms = None;
                    effects.push(Effect::ConnectToLeader { leader: l.leader });
                }
                if !self.serving && now_ms > l.deadline_ms {
                    let reason = format!("not synced with leader {} within initLimit", l.leader);
                    self.look(reason, effects);
                } else if l.connected && now_ms.saturating_sub(l.last_heard_ms) > self.config.sync_limit_ms {
                    let reason = format!("leader {} not heard from within syncLimit", l.leader);
                    self.look(reason, effects);
                }
            }
        }
    }

    // ---- links ---------------------------------------------------------

    pub fn on_leader_connected(&mut self, now_ms: u64, effects: &mut Vec<Effect<T, R>>) {
        let Role::Learning(l) = &mut self.role else { return };
        if l.connected {
            return;
        }
        l.connected = true;
        l.heard = false;
        l.reconnect_at_ms = None;
        l.last_heard_ms = now_ms;
        let out = l.handshake.start();
        self.learner_effects(now_ms, out, effects);
    }

    /// The connection to the leader failed (refused: a live server always
    /// listens on its quorum port, so the leader is gone): elect again.
    pub fn on_leader_unreachable(&mut self, effects: &mut Vec<Effect<T, R>>) {
        if let Role::Learning(l) = &self.role {
            let reason = format!("cannot connect to leader {}", l.leader);
            self.look(reason, effects);
        }
    }

    /// The leader closed our connection before saying anything: it is alive
    /// but not leading yet (another peer's election named it while it is
    /// still finishing its own). Like ZooKeeper's learner, try again every
    /// `LEADER_RETRY_DELAY_MS` until initLimit runs out. Whether a retry is
    /// scheduled.
    fn retry_leader(&mut self, now_ms: u64) -> bool {
        let Role::Learning(l) = &mut self.role else { return false };
        if l.heard || self.serving || now_ms + LEADER_RETRY_DELAY_MS >= l.deadline_ms {
            return false;
        }
        l.connected = false;
        l.reconnect_at_ms = Some(now_ms + LEADER_RETRY_DELAY_MS);
        l.handshake =
            LearnerHandshake::new(self.config.my_id, l.observer, self.accepted_epoch, self.current_epoch, self.last_logged);
        tracing::debug!(leader = l.leader, "leader not ready; retrying the connection");
        true
    }

    /// A TRUNC could not be carried out exactly (the log below a snapshot
    /// received earlier is gone): nothing changed on disk; leave the sync.
    /// The leader answers the next attempt with SNAP. Truncating to less than
    /// the leader asked would lose committed txns.
    pub fn on_truncate_failed(&mut self, reason: String, effects: &mut Vec<Effect<T, R>>) {
        if let Role::Learning(_) = &self.role {
            self.look(format!("cannot truncate as the leader asked: {reason}"), effects);
        }
    }

    /// The quorum link to `sid` closed.
    pub fn on_link_closed(&mut self, now_ms: u64, sid: ServerId, effects: &mut Vec<Effect<T, R>>) {
        match &mut self.role {
            Role::Leading(l) => {
                if l.syncing.remove(&sid) && l.truncating.contains(&sid) {
                    self.snap_next.insert(sid);
                }
                l.truncating.remove(&sid);
                l.snapping.remove(&sid);
                if let Some(b) = l.broadcast.as_mut() {
                    b.remove_learner(sid);
                }
            }
            Role::Learning(l) if l.leader == sid => {
                if self.retry_leader(now_ms) {
                    return;
                }
                let reason = format!("connection to leader {sid} closed");
                self.look(reason, effects);
            }
            _ => {}
        }
    }

    /// The runtime's queue to learner `sid` is full.
    pub fn on_learner_queue_full(&mut self, now_ms: u64, sid: ServerId, effects: &mut Vec<Effect<T, R>>) {
        if let Role::Leading(l) = &mut self.role {
            l.syncing.remove(&sid);
            let out = match l.broadcast.as_mut() {
                Some(b) => b.on_learner_queue_full(sid),
                None => Vec::new(),
            };
            effects.push(Effect::Disconnect { sid });
            self.broadcast_effects(now_ms, out, effects);
        }
    }

    // ---- persistence completions -----------------------------------------

    pub fn on_persisted_accepted_epoch(&mut self, now_ms: u64, effects: &mut Vec<Effect<T, R>>) {
        match &mut self.role {
            Role::Leading(l) => {
                let out = l.handshake.on_persisted_accepted_epoch(now_ms);
                self.accepted_epoch = l.handshake.accepted_epoch();
                self.leader_effects(now_ms, out, effects);
            }
            Role::Learning(l) => {
                let out = l.handshake.on_persisted_accepted_epoch();
                self.accepted_epoch = l.handshake.accepted_epoch();
                self.learner_effects(now_ms, out, effects);
            }
            Role::Looking => {}
        }
    }

    pub fn on_persisted_current_epoch(&mut self, now_ms: u64, effects: &mut Vec<Effect<T, R>>) {
        match &mut self.role {
            Role::Leading(l) => {
                let out = l.handshake.on_persisted_current_epoch();
                self.current_epoch = l.handshake.current_epoch();
                self.leader_effects(now_ms, out, effects);
            }
            Role::Learning(l) => {
                let out = l.handshake.on_persisted_current_epoch();
                self.current_epoch = l.handshake.current_epoch();
                self.learner_effects(now_ms, out, effects);
            }
            Role::Looking => {}
        }
    }

    /// Everything appended before the last `SyncLog` is durable.
    pub fn on_synced(&mut self, now_ms: u64, effects: &mut Vec<Effect<T, R>>) {
        if let Role::Learning(l) = &mut self.role {
            if l.follower.is_none() && l.observing.is_none() {
                let out = l.handshake.on_synced();
                self.learner_effects(now_ms, out, effects);
            }
        }
    }

    /// The log is durable through `zxid`.
    pub fn on_logged(&mut self, now_ms: u64, zxid: i64, effects: &mut Vec<Effect<T, R>>) {
        self.last_logged = self.last_logged.max(zxid);
        match &mut self.role {
            Role::Leading(l) => {
                if let Some(b) = l.broadcast.as_mut() {
                    if zxid <= b.last_proposed() {
                        let out = b.on_logged(zxid);
                        self.broadcast_effects(now_ms, out, effects);
                    }
                }
            }
            Role::Learning(l) => {
                if let Some(f) = l.follower.as_mut() {
                    if zxid > f.last_logged() && zxid <= f.last_received() {
                        let out = f.on_logged(zxid);
                        self.broadcast_effects(now_ms, out, effects);
                    }
                }
            }
            Role::Looking => {}
        }
    }

    // ---- the leader's work -----------------------------------------------

    /// Propose a txn (leading, established). Returns its zxid.
    pub fn propose(&mut self, now_ms: u64, txn: T, effects: &mut Vec<Effect<T, R>>) -> Result<i64, ProposeError> {
        let Role::Leading(l) = &mut self.role else { return Err(ProposeError::NotLeading) };
        let Some(b) = l.broadcast.as_mut() else { return Err(ProposeError::NotLeading) };
        match b.propose(txn) {
            Ok((zxid, out)) => {
                self.broadcast_effects(now_ms, out, effects);
                Ok(zxid)
            }
            Err(ProposeError::EpochExhausted) => {
                // ZOOKEEPER-1277: a new epoch must be elected.
                self.look("zxid counter exhausted: a new epoch is needed".into(), effects);
                Err(ProposeError::EpochExhausted)
            }
            Err(error) => Err(error),
        }
    }

    /// The last zxid proposed in this epoch (the next proposal takes the one
    /// after it), when leading and established.
    pub fn last_proposed(&self) -> Option<i64> {
        match &self.role {
            Role::Leading(l) => l.broadcast.as_ref().map(|b| b.last_proposed()),
            _ => None,
        }
    }

    /// Leader: a reply for a client of `server`, to leave once everything
    /// proposed so far has committed.
    pub fn reply(&mut self, server: ServerId, item: R, effects: &mut Vec<Effect<T, R>>) {
        let Role::Leading(l) = &mut self.role else { return };
        let Some(b) = l.broadcast.as_ref() else { return };
        // After the last proposal in flight, if any. (A new epoch's
        // last_proposed is (epoch, 0), which nothing ever commits.)
        let after = if b.has_outstanding() { b.last_proposed() } else { i64::MIN };
        l.replies.push_back((after, server, item));
        let committed = b.last_committed();
        Self::release_leader_replies(self.config.my_id, l, committed, effects);
    }

    /// Sends (or delivers) the replies waiting for commits up to `committed`,
    /// whose COMMITs must already be on their way.
    fn release_leader_replies(my_id: ServerId, l: &mut Leading<T, R>, committed: i64, effects: &mut Vec<Effect<T, R>>) {
        while l.replies.front().is_some_and(|(after, _, _)| *after <= committed) {
            let (_, server, item) = l.replies.pop_front().expect("front exists");
            if server == my_id {
                effects.push(Effect::Deliver(item));
            } else {
                effects.push(Effect::Send { to: server, msg: Msg::Reply(item) });
            }
        }
    }

    /// The SNAP for `sid` went out at `zxid`: finish its sync from there.
    pub fn on_snapshot_sent(&mut self, now_ms: u64, sid: ServerId, zxid: i64, effects: &mut Vec<Effect<T, R>>) {
        let Role::Leading(l) = &mut self.role else { return };
        if !l.snapping.remove(&sid) {
            return;
        }
        let last_committed = l.broadcast.as_ref().map_or(self.last_logged, |b| b.last_committed());
        // Catch up from the snapshot's zxid through the committed log.
        let covered = zxid >= last_committed || self.history.front().is_some_and(|(first, _)| *first <= zxid + 1);
        if !covered {
            tracing::warn!(sid, zxid = format_args!("{zxid:#x}"), "snapshot too old for the committed log; dropping the learner to retry");
            l.syncing.remove(&sid);
            effects.push(Effect::Disconnect { sid });
            return;
        }
        let observer = l.observers.contains(&sid);
        for (z, txn) in self.history.iter().filter(|(z, _)| *z > zxid && *z <= last_committed) {
            Self::push_committed(effects, sid, observer, *z, txn.clone());
        }
        Self::finish_sync(now_ms, self.config.init_limit_ms, sid, observer, last_committed, l, effects);
    }

    fn push_committed(effects: &mut Vec<Effect<T, R>>, sid: ServerId, observer: bool, zxid: i64, txn: T) {
        if observer {
            effects.push(Effect::Send { to: sid, msg: Msg::Inform { zxid, txn } });
        } else {
            effects.push(Effect::Send { to: sid, msg: Msg::Proposal { zxid, txn } });
            effects.push(Effect::Send { to: sid, msg: Msg::Commit { zxid } });
        }
    }

    /// After the history part of a sync: start forwarding, then NEWLEADER.
    /// A learner forwarded to before it ACKs NEWLEADER has initLimit from
    /// now to do so.
    fn finish_sync(
        now_ms: u64,
        init_limit_ms: u64,
        sid: ServerId,
        observer: bool,
        forward_from: i64,
        l: &mut Leading<T, R>,
        effects: &mut Vec<Effect<T, R>>,
    ) {
        let mut forwarded = Vec::new();
        match l.broadcast.as_mut() {
            Some(b) => {
                forwarded = b.add_learner(sid, observer, forward_from, now_ms);
                b.mark_syncing(sid, now_ms.saturating_add(init_limit_ms));
            }
            None => {
                l.forward_from.insert(sid, forward_from);
            }
        }
        for effect in forwarded {
            if let broadcast::Effect::Send { to, msg } = effect {
                effects.push(Effect::Send { to, msg: from_broadcast(msg) });
            }
        }
        effects.push(Effect::Send { to: sid, msg: Msg::NewLeader { zxid: l.handshake.new_leader_zxid() } });
    }

    fn start_sync(&mut self, now_ms: u64, sid: ServerId, learner_last_zxid: i64, effects: &mut Vec<Effect<T, R>>) {
        let Role::Leading(l) = &mut self.role else { return };
        let observer = l.observers.contains(&sid);
        let last_processed = l.broadcast.as_ref().map_or(self.last_logged, |b| b.last_committed());
        let zxids: Vec<i64> = self.history.iter().map(|(z, _)| *z).collect();
        let plan = plan_sync(&SyncInput {
            learner_last_zxid,
            last_processed_zxid: last_processed,
            committed_log: &zxids,
            on_disk_log: None,
            force_snap: self.snap_next.remove(&sid),
        });
        let name = match plan.mode {
            SyncMode::Diff { .. } => "DIFF",
            SyncMode::Trunc { .. } => "TRUNC",
            SyncMode::TruncDiff { .. } => "TRUNC",
            SyncMode::Snap => "SNAP",
        };
        tracing::info!(
            "Sending {name} zxid=0x{:x} for peer sid: {sid} ({}; {})",
            plan.packet_zxid,
            if matches!(plan.mode, SyncMode::TruncDiff { .. }) { "TRUNC+DIFF" } else { name },
            plan.reason
        );
        l.syncing.insert(sid);
        l.truncating.remove(&sid);
        if matches!(plan.mode, SyncMode::Trunc { .. } | SyncMode::TruncDiff { .. }) {
            l.truncating.insert(sid);
        }
        match plan.mode {
            SyncMode::Snap => {
                l.snapping.insert(sid);
                effects.push(Effect::SendSnapshot { to: sid });
                return;
            }
            SyncMode::Diff { .. } => effects.push(Effect::Send { to: sid, msg: Msg::Diff { zxid: plan.packet_zxid } }),
            SyncMode::Trunc { to } | SyncMode::TruncDiff { to, .. } => {
                effects.push(Effect::Send { to: sid, msg: Msg::Trunc { zxid: to } })
            }
        }
        for zxid in &plan.send {
            let Some((_, txn)) = self.history.iter().find(|(z, _)| z == zxid) else { continue };
            Self::push_committed(effects, sid, observer, *zxid, txn.clone());
        }
        Self::finish_sync(now_ms, self.config.init_limit_ms, sid, observer, plan.forward_from, l, effects);
    }

    fn leader_effects(&mut self, now_ms: u64, out: Vec<LeaderEffect>, effects: &mut Vec<Effect<T, R>>) {
        for effect in out {
            match effect {
                LeaderEffect::Send { to, msg } => {
                    if msg == discovery::Message::UpToDate {
                        self.up_to_date(now_ms, to, effects);
                    }
                    effects.push(Effect::Send { to, msg: from_discovery(msg) });
                }
                LeaderEffect::PersistAcceptedEpoch { epoch } => effects.push(Effect::PersistAcceptedEpoch { epoch }),
                LeaderEffect::PersistCurrentEpoch { epoch } => effects.push(Effect::PersistCurrentEpoch { epoch }),
                LeaderEffect::StartSync { sid, learner_last_zxid } => self.start_sync(now_ms, sid, learner_last_zxid, effects),
                LeaderEffect::Established { epoch } => self.established(now_ms, epoch, effects),
                LeaderEffect::Abort { reason } => self.look(reason, effects),
            }
        }
    }

    /// UPTODATE is going to `sid`: it is synced.
    fn up_to_date(&mut self, now_ms: u64, sid: ServerId, effects: &mut Vec<Effect<T, R>>) {
        let Role::Leading(l) = &mut self.role else { return };
        l.syncing.remove(&sid);
        l.truncating.remove(&sid);
        let observer = l.observers.contains(&sid);
        let Some(b) = l.broadcast.as_mut() else { return };
        if let Some(from) = l.forward_from.remove(&sid) {
            for effect in b.add_learner(sid, observer, from, now_ms) {
                if let broadcast::Effect::Send { to, msg } = effect {
                    effects.push(Effect::Send { to, msg: from_broadcast(msg) });
                }
            }
        }
        b.mark_synced(sid, now_ms);
    }

    fn established(&mut self, now_ms: u64, epoch: u32, effects: &mut Vec<Effect<T, R>>) {
        let Role::Leading(l) = &mut self.role else { return };
        tracing::info!(epoch, zxid = format_args!("{:#x}", self.last_logged), "leading: epoch established");
        let mut leader = Leader::new(
            self.config.my_id,
            self.config.voters.clone(),
            self.config.observers.clone(),
            epoch,
            self.last_logged,
            self.config.sync_limit_ms,
        );
        if self.config.planted.commit_on_minority {
            leader.plant_commit_on_minority();
        }
        if self.config.epoch_counter_start > 0 {
            leader.start_counter_after(self.config.epoch_counter_start);
        }
        // Learners synced before the epoch was established (NEWLEADER sent,
        // UPTODATE not yet) get every proposal, commit and inform from now
        // on, queued behind their NEWLEADER, as ZooKeeper's learner handlers
        // forward from the moment they sync: adding them only at UPTODATE
        // would skip whatever committed in between.
        for (sid, from) in std::mem::take(&mut l.forward_from) {
            let observer = l.observers.contains(&sid);
            for effect in leader.add_learner(sid, observer, from, now_ms) {
                if let broadcast::Effect::Send { to, msg } = effect {
                    effects.push(Effect::Send { to, msg: from_broadcast(msg) });
                }
            }
            // It has not ACKed NEWLEADER yet (UPTODATE would have taken it
            // out of forward_from).
            leader.mark_syncing(sid, now_ms.saturating_add(self.config.init_limit_ms));
        }
        l.broadcast = Some(leader);
        self.election.update_vote_epoch(epoch);
        self.serving = true;
        effects.push(Effect::Serve { state: ServerState::Leading, epoch, leader: self.config.my_id });
    }

    fn broadcast_effects(&mut self, now_ms: u64, out: Vec<broadcast::Effect<T>>, effects: &mut Vec<Effect<T, R>>) {
        // Replies waiting for a commit leave right after what the commit
        // sends, before the next commit's: a learner holds a reply until it
        // applied the COMMIT last before it on the link, so a reply sent
        // ahead of its COMMIT would pass the client's write it must follow,
        // and one sent after a later COMMIT would wait for (and come after)
        // a later write of the same client (ZooKeeper's leader too sends a
        // COMMIT, then the syncs pending on it).
        let mut committed: Option<i64> = None;
        for effect in out {
            match effect {
                broadcast::Effect::Send { to, msg } => effects.push(Effect::Send { to, msg: from_broadcast(msg) }),
                broadcast::Effect::LogAppend { zxid, txn } => effects.push(Effect::LogAppend { zxid, txn }),
                broadcast::Effect::Commit { zxid, txn } => {
                    if let (Some(previous), Role::Leading(l)) = (committed, &mut self.role) {
                        Self::release_leader_replies(self.config.my_id, l, previous, effects);
                    }
                    if let (true, Role::Leading(l)) = (self.config.planted.reply_before_commit, &mut self.role) {
                        Self::release_leader_replies(self.config.my_id, l, zxid, effects);
                    }
                    self.history.push_back((zxid, txn.clone()));
                    self.trim_history();
                    effects.push(Effect::Apply { zxid, txn });
                    committed = Some(zxid);
                }
                broadcast::Effect::Apply { zxid, txn } => {
                    if let Role::Learning(l) = &mut self.role {
                        l.applied = zxid;
                    }
                    self.history.push_back((zxid, txn.clone()));
                    self.trim_history();
                    effects.push(Effect::Apply { zxid, txn });
                    self.release_learner_replies(effects);
                }
                broadcast::Effect::DropLearner { sid, reason } => {
                    tracing::warn!(sid, reason, "dropping learner");
                    if let Role::Leading(l) = &mut self.role {
                        l.syncing.remove(&sid);
                    }
                    effects.push(Effect::Disconnect { sid });
                }
                broadcast::Effect::StepDown { reason } => self.look(reason, effects),
            }
        }
        if let (Some(last), Role::Leading(l)) = (committed, &mut self.role) {
            Self::release_leader_replies(self.config.my_id, l, last, effects);
        }
        let _ = now_ms;
    }

    fn release_learner_replies(&mut self, effects: &mut Vec<Effect<T, R>>) {
        let Role::Learning(l) = &mut self.role else { return };
        while l.replies.front().is_some_and(|(after, _)| *after <= l.applied) {
            let (_, item) = l.replies.pop_front().expect("front exists");
            effects.push(Effect::Deliver(item));
        }
    }

    // ---- the learner's work ----------------------------------------------

    fn learner_effects(&mut self, now_ms: u64, out: Vec<LearnerEffect<T>>, effects: &mut Vec<Effect<T, R>>) {
        for effect in out {
            let Role::Learning(l) = &mut self.role else { return };
            let leader = l.leader;
            match effect {
                LearnerEffect::Send(msg) => effects.push(Effect::Send { to: leader, msg: from_discovery(msg) }),
                LearnerEffect::PersistAcceptedEpoch { epoch } => effects.push(Effect::PersistAcceptedEpoch { epoch }),
                LearnerEffect::PersistCurrentEpoch { epoch } => effects.push(Effect::PersistCurrentEpoch { epoch }),
                LearnerEffect::InstallSnapshot { zxid } => {
                    self.history.clear();
                    l.applied = zxid;
                    l.commit_target = zxid;
                    effects.push(Effect::InstallSnapshot { zxid });
                }
                LearnerEffect::Truncate { to } => {
                    self.history.retain(|(z, _)| *z <= to);
                    l.applied = to;
                    l.commit_target = to;
                    effects.push(Effect::Truncate { to });
                }
                LearnerEffect::LogAppend { zxid, txn } => effects.push(Effect::LogAppend { zxid, txn }),
                LearnerEffect::Apply { zxid, txn } => {
                    l.applied = zxid;
                    l.commit_target = l.commit_target.max(zxid);
                    self.history.push_back((zxid, txn.clone()));
                    self.trim_history();
                    effects.push(Effect::Apply { zxid, txn });
                }
                LearnerEffect::SyncLog { .. } => effects.push(Effect::SyncLog),
                LearnerEffect::ServeClients { epoch, last_logged, last_committed, replay } => {
                    self.serve_as_learner(now_ms, epoch, last_logged, last_committed, replay, effects);
                }
                LearnerEffect::Abort { reason } => self.look(reason, effects),
            }
        }
    }

    fn serve_as_learner(
        &mut self,
        now_ms: u64,
        epoch: u32,
        last_logged: i64,
        last_committed: i64,
        replay: Vec<Replay<T>>,
        effects: &mut Vec<Effect<T, R>>,
    ) {
        let Role::Learning(l) = &mut self.role else { return };
        let (me, leader) = (self.config.my_id, l.leader);
        self.election.update_vote_epoch(epoch);
        if l.observer {
            l.observing = Some(Observer::new(me, leader, last_committed));
        } else {
            l.follower = Some(Follower::new(me, leader, last_logged, last_committed));
        }
        self.serving = true;
        let state = if l.observer { ServerState::Observing } else { ServerState::Following };
        tracing::info!(leader, epoch, zxid = format_args!("{last_committed:#x}"), "synced with the leader: serving as {state:?}");
        effects.push(Effect::Serve { state, epoch, leader });
        for item in replay {
            let msg = match item {
                Replay::Proposal { zxid, txn } => Msg::Proposal { zxid, txn },
                Replay::Commit { zxid } => Msg::Commit { zxid },
                Replay::Inform { zxid, txn } => Msg::Inform { zxid, txn },
            };
            self.learner_broadcast_message(now_ms, msg, effects);
            if matches!(self.role, Role::Looking) {
                return;
            }
        }
    }

    /// A broadcast-phase message at a serving learner, checked so that a
    /// misbehaving leader sends us back to LOOKING instead of tripping the
    /// broadcast state machine's assertions.
    fn learner_broadcast_message(&mut self, now_ms: u64, msg: Msg<T, R>, effects: &mut Vec<Effect<T, R>>) {
        let Role::Learning(l) = &mut self.role else { return };
        let out = match (msg, l.follower.as_mut(), l.observing.as_mut()) {
            (Msg::Proposal { zxid, txn }, Some(f), _) => {
                if zxid <= f.last_received() || epoch_of(zxid) < epoch_of(f.last_received()) {
                    let reason = format!("proposal 0x{zxid:x} out of order after 0x{:x}", f.last_received());
                    return self.look(reason, effects);
                }
                let mut out = f.on_proposal(zxid, txn);
                if self.config.planted.ack_before_fsync {
                    // Planted bug: treat the append as durable at once.
                    out.extend(f.on_logged(zxid));
                }
                out
            }
            (Msg::Commit { zxid }, Some(f), _) => {
                if zxid <= l.commit_target || !f.has_pending(zxid) {
                    let reason = format!("commit 0x{zxid:x} for no pending proposal");
                    return self.look(reason, effects);
                }
                l.commit_target = zxid;
                f.on_commit(zxid)
            }
            (Msg::Inform { zxid, txn }, _, Some(o)) => {
                if zxid <= o.last_zxid() || epoch_of(zxid) < epoch_of(o.last_zxid()) {
                    let reason = format!("inform 0x{zxid:x} out of order after 0x{:x}", o.last_zxid());
                    return self.look(reason, effects);
                }
                l.commit_target = zxid;
                o.on_inform(zxid, txn)
            }
            (Msg::Ping { .. }, Some(f), _) => f.on_ping(),
            (Msg::Ping { .. }, _, Some(o)) => o.on_ping(),
            (Msg::Reply(item), _, _) => {
                l.replies.push_back((l.commit_target, item));
                self.release_learner_replies(effects);
                return;
            }
            (other, _, _) => {
                let reason = format!("unexpected message from the leader while serving: {}", msg_name(&other));
                return self.look(reason, effects);
            }
        };
        self.broadcast_effects(now_ms, out, effects);
    }

    // ---- messages --------------------------------------------------------

    /// A message on the quorum link from `from`.
    pub fn on_message(&mut self, now_ms: u64, from: ServerId, msg: Msg<T, R>, effects: &mut Vec<Effect<T, R>>) {
        match &mut self.role {
            Role::Looking => {}
            Role::Leading(l) => {
                let out = match msg {
                    Msg::FollowerInfo { sid, zxid } | Msg::ObserverInfo { sid, zxid } if sid == from => {
                        let observer = matches!(msg, Msg::ObserverInfo { .. });
                        let configured_observer = self.config.observers.contains(&sid);
                        if observer != configured_observer || !(self.config.voters.contains(&sid) || configured_observer) {
                            tracing::warn!(sid, observer, "learner's role does not match the configuration; dropping it");
                            effects.push(Effect::Disconnect { sid });
                            return;
                        }
                        if observer {
                            l.observers.insert(sid);
                        }
                        if let Some(b) = l.broadcast.as_mut() {
                            b.remove_learner(sid);
                        }
                        l.handshake.on_learner_info(sid, epoch_of(zxid), now_ms)
                    }
                    Msg::AckEpoch { last_logged_zxid, current_epoch } => {
                        l.handshake.on_ack_epoch(from, last_logged_zxid, current_epoch, now_ms)
                    }
                    Msg::Ack { zxid } if zxid == l.handshake.new_leader_zxid() => {
                        if let Some(b) = l.broadcast.as_mut() {
                            b.on_ping(from, now_ms);
                        }
                        l.handshake.on_new_leader_ack(from, zxid)
                    }
                    Msg::Ack { zxid } => {
                        let out = match l.broadcast.as_mut() {
                            Some(b) => b.on_ack(from, zxid, now_ms),
                            None => Vec::new(),
                        };
                        return self.broadcast_effects(now_ms, out, effects);
                    }
                    Msg::Ping { .. } => {
                        if let Some(b) = l.broadcast.as_mut() {
                            b.on_ping(from, now_ms);
                        }
                        return;
                    }
                    other => {
                        tracing::warn!(from, "unexpected {} from a learner; dropping it", msg_name(&other));
                        effects.push(Effect::Disconnect { sid: from });
                        return;
                    }
                };
                self.leader_effects(now_ms, out, effects);
            }
            Role::Learning(l) => {
                if from != l.leader {
                    return;
                }
                l.last_heard_ms = now_ms;
                l.heard = true;
                if self.serving {
                    return self.learner_broadcast_message(now_ms, msg, effects);
                }
                let out = match msg {
                    Msg::LeaderInfo { zxid } => l.handshake.on_leader_info(epoch_of(zxid)),
                    Msg::Diff { zxid } => l.handshake.on_diff(zxid),
                    Msg::Trunc { zxid } => l.handshake.on_trunc(zxid),
                    Msg::Snap { zxid } => l.handshake.on_snap(zxid),
                    Msg::Proposal { zxid, txn } => l.handshake.on_proposal(zxid, txn),
                    Msg::Commit { zxid } => l.handshake.on_commit(zxid),
                    Msg::Inform { zxid, txn } => l.handshake.on_inform(zxid, txn),
                    Msg::NewLeader { zxid } if self.config.planted.newleader_before_persist => {
                        // Planted bug: go on as if the synced txns were durable.
                        let mut out = l.handshake.on_new_leader(zxid);
                        out.retain(|effect| !matches!(effect, LearnerEffect::SyncLog { .. }));
                        out.extend(l.handshake.on_synced());
                        out
                    }
                    Msg::NewLeader { zxid } => l.handshake.on_new_leader(zxid),
                    Msg::UpToDate => l.handshake.on_up_to_date(),
                    Msg::Ping { .. } => return,
                    Msg::Reply(item) => {
                        // Cannot be: nothing was forwarded before serving.
                        drop(item);
                        return;
                    }
                    other => {
                        let reason = format!("unexpected {} from the leader during sync", msg_name(&other));
                        return self.look(reason, effects);
                    }
                };
                self.learner_effects(now_ms, out, effects);
            }
        }
    }
}

fn from_discovery<T, R>(msg: discovery::Message) -> Msg<T, R> {
    match msg {
        discovery::Message::FollowerInfo { sid, zxid } => Msg::FollowerInfo { sid, zxid },
        discovery::Message::ObserverInfo { sid, zxid } => Msg::ObserverInfo { sid, zxid },
        discovery::Message::LeaderInfo { zxid } => Msg::LeaderInfo { zxid },
        discovery::Message::AckEpoch { last_logged_zxid, current_epoch } => Msg::AckEpoch { last_logged_zxid, current_epoch },
        discovery::Message::Ack { zxid } => Msg::Ack { zxid },
        discovery::Message::UpToDate => Msg::UpToDate,
    }
}

fn from_broadcast<T, R>(msg: broadcast::Message<T>) -> Msg<T, R> {
    match msg {
        broadcast::Message::Proposal { zxid, txn } => Msg::Proposal { zxid, txn },
        broadcast::Message::Ack { zxid } => Msg::Ack { zxid },
        broadcast::Message::Commit { zxid } => Msg::Commit { zxid },
        broadcast::Message::Inform { zxid, txn } => Msg::Inform { zxid, txn },
        broadcast::Message::Ping { zxid } => Msg::Ping { zxid },
    }
}

pub fn msg_name<T, R>(msg: &Msg<T, R>) -> &'static str {
    match msg {
        Msg::FollowerInfo { .. } => "FOLLOWERINFO",
        Msg::ObserverInfo { .. } => "OBSERVERINFO",
        Msg::LeaderInfo { .. } => "LEADERINFO",
        Msg::AckEpoch { .. } => "ACKEPOCH",
        Msg::Diff { .. } => "DIFF",
        Msg::Trunc { .. } => "TRUNC",
        Msg::Snap { .. } => "SNAP",
        Msg::NewLeader { .. } => "NEWLEADER",
        Msg::UpToDate => "UPTODATE",
        Msg::Proposal { .. } => "PROPOSAL",
        Msg::Ack { .. } => "ACK",
        Msg::Commit { .. } => "COMMIT",
        Msg::Inform { .. } => "INFORM",
        Msg::Ping { .. } => "PING",
        Msg::Reply(_) => "REPLY",
    }
}

#[cfg(test)]
mod tests {
    //! A tiny in-memory ensemble: every effect is carried out through one
    //! FIFO event queue, so whole elections, syncs and broadcasts run here.
    use super::*;
    use crate::zab::make_zxid;

    type P = Peer<u64, u64>;
    type E = Effect<u64, u64>;

    enum Event {
        Notification { to: ServerId, n: Notification },
        Message { to: ServerId, from: ServerId, msg: Msg<u64, u64> },
        Connected { to: ServerId },
        PersistedAccepted { to: ServerId },
        PersistedCurrent { to: ServerId },
        Logged { to: ServerId, zxid: i64 },
        Synced { to: ServerId },
        LinkClosed { to: ServerId, sid: ServerId },
    }

    struct Node {
        peer: P,
        log: Vec<(i64, u64)>,
        applied: Vec<(i64, u64)>,
        accepted: u32,
        current: u32,
        delivered: Vec<u64>,
        /// How many txns it had applied at each delivery.
        delivered_after: Vec<usize>,
        up: bool,
    }

    struct Sim {
        nodes: BTreeMap<ServerId, Node>,
        events: VecDeque<Event>,
        now: u64,
        /// Pairs that cannot talk.
        cut: BTreeSet<(ServerId, ServerId)>,
        /// Every sync mode a leader chose: (learner, "DIFF" / "TRUNC" / "SNAP").
        syncs: Vec<(ServerId, &'static str)>,
        /// Learners whose TRUNC fails (their log is cut by a snapshot): they
        /// leave the sync, closing the link to the leader.
        truncate_fails: BTreeSet<ServerId>,
    }

    impl Sim {
        fn new(voters: &[ServerId], observers: &[ServerId]) -> Sim {
            let mut nodes = BTreeMap::new();
            for &id in voters.iter().chain(observers) {
                let config = PeerConfig {
                    my_id: id,
                    voters: voters.to_vec(),
                    observers: observers.to_vec(),
                    init_limit_ms: 10_000,
                    sync_limit_ms: 5_000,
                    finalize_wait_ms: 200,
                    committed_log_max: 500,
                    planted: PlantedBugs::default(),
                    epoch_counter_start: 0,
                };
                let node = Node {
                    peer: P::new(config),
                    log: Vec::new(),
                    applied: Vec::new(),
                    accepted: 0,
                    current: 0,
                    delivered: Vec::new(),
                    delivered_after: Vec::new(),
                    up: true,
                };
                nodes.insert(id, node);
            }
            let mut sim = Sim {
                nodes,
                events: VecDeque::new(),
                now: 1_000,
                cut: BTreeSet::new(),
                syncs: Vec::new(),
                truncate_fails: BTreeSet::new(),
            };
            let ids: Vec<ServerId> = sim.nodes.keys().copied().collect();
            for id in ids {
                sim.restart_looking(id);
            }
            sim
        }

        fn restart_looking(&mut self, id: ServerId) {
            let node = self.nodes.get_mut(&id).unwrap();
            // Rebuild from the log, as the runtime does.
            node.applied = node.log.clone();
            let last = node.log.last().map_or(0, |(z, _)| *z);
            let history = node.log.clone();
            let mut effects = Vec::new();
            node.peer.start_looking(self.now, last, node.accepted, node.current, history, &mut effects);
            self.carry(id, effects);
        }

        fn linked(&self, a: ServerId, b: ServerId) -> bool {
            self.nodes[&a].up && self.nodes[&b].up && !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
        }

        fn carry(&mut self, id: ServerId, effects: Vec<E>) {
            for effect in effects {
                match effect {
                    Effect::Notify { to, notification } => {
                        if self.linked(id, to) {
                            self.events.push_back(Event::Notification { to, n: notification });
                        }
                    }
                    Effect::ConnectToLeader { leader } => {
                        if self.linked(id, leader) {
                            self.events.push_back(Event::Connected { to: id });
                        } else {
                            let mut out = Vec::new();
                            self.nodes.get_mut(&id).unwrap().peer.on_leader_unreachable(&mut out);
                            self.carry(id, out);
                        }
                    }
                    Effect::Send { to, msg } => {
                        if matches!(msg, Msg::Diff { .. } | Msg::Trunc { .. }) {
                            self.syncs.push((to, msg_name(&msg)));
                        }
                        if self.linked(id, to) {
                            self.events.push_back(Event::Message { to, from: id, msg });
                        }
                    }
                    Effect::SendSnapshot { to } => {
                        self.syncs.push((to, "SNAP"));
                        let node = self.nodes.get_mut(&id).unwrap();
                        let zxid = node.applied.last().map_or(0, |(z, _)| *z);
                        self.events.push_back(Event::Message { to, from: id, msg: Msg::Snap { zxid } });
                        let mut out = Vec::new();
                        node.peer.on_snapshot_sent(self.now, to, zxid, &mut out);
                        self.carry(id, out);
                    }
                    Effect::Disconnect { .. } => {}
                    Effect::PersistAcceptedEpoch { epoch } => {
                        self.nodes.get_mut(&id).unwrap().accepted = epoch;
                        self.events.push_back(Event::PersistedAccepted { to: id });
                    }
                    Effect::PersistCurrentEpoch { epoch } => {
                        self.nodes.get_mut(&id).unwrap().current = epoch;
                        self.events.push_back(Event::PersistedCurrent { to: id });
                    }
                    Effect::LogAppend { zxid, txn } => {
                        let node = self.nodes.get_mut(&id).unwrap();
                        assert!(node.log.last().is_none_or(|(z, _)| *z < zxid), "log out of order");
                        node.log.push((zxid, txn));
                        self.events.push_back(Event::Logged { to: id, zxid });
                    }
                    Effect::SyncLog => self.events.push_back(Event::Synced { to: id }),
                    Effect::Truncate { .. } if self.truncate_fails.contains(&id) => {
                        let node = self.nodes.get_mut(&id).unwrap();
                        let leader = node.peer.leader().expect("truncating for a leader");
                        let mut out = Vec::new();
                        node.peer.on_truncate_failed("the log is cut by a snapshot".into(), &mut out);
                        self.events.push_back(Event::LinkClosed { to: leader, sid: id });
                        self.carry(id, out);
                    }
                    Effect::Truncate { to } => {
                        let node = self.nodes.get_mut(&id).unwrap();
                        node.log.retain(|(z, _)| *z <= to);
                        node.applied = node.log.clone();
                    }
                    Effect::InstallSnapshot { zxid } => {
                        // The leader's applied state at zxid stands in for the file.
                        let leader = self.nodes[&id].peer.leader().unwrap();
                        let image: Vec<(i64, u64)> =
                            self.nodes[&leader].applied.iter().filter(|(z, _)| *z <= zxid).copied().collect();
                        let node = self.nodes.get_mut(&id).unwrap();
                        node.log = image.clone();
                        node.applied = image;
                    }
                    Effect::Apply { zxid, txn } => {
                        let node = self.nodes.get_mut(&id).unwrap();
                        assert!(node.applied.last().is_none_or(|(z, _)| *z < zxid), "applied out of order");
                        node.applied.push((zxid, txn));
                    }
                    Effect::Deliver(item) => {
                        let node = self.nodes.get_mut(&id).unwrap();
                        node.delivered.push(item);
                        node.delivered_after.push(node.applied.len());
                    }
                    Effect::Serve { .. } => {}
                    Effect::Look { .. } => self.restart_looking(id),
                }
            }
        }

        fn step(&mut self) -> bool {
            let Some(event) = self.events.pop_front() else { return false };
            let now = self.now;
            let (id, effects) = match event {
                Event::Notification { to, n } => {
                    let mut out = Vec::new();
                    if self.nodes[&to].up {
                        self.nodes.get_mut(&to).unwrap().peer.on_notification(now, n, &mut out);
                    }
                    (to, out)
                }
                Event::Message { to, from, msg } => {
                    let mut out = Vec::new();
                    if self.linked(to, from) {
                        self.nodes.get_mut(&to).unwrap().peer.on_message(now, from, msg, &mut out);
                    }
                    (to, out)
                }
                Event::Connected { to } => {
                    let mut out = Vec::new();
                    self.nodes.get_mut(&to).unwrap().peer.on_leader_connected(now, &mut out);
                    (to, out)
                }
                Event::PersistedAccepted { to } => {
                    let mut out = Vec::new();
                    self.nodes.get_mut(&to).unwrap().peer.on_persisted_accepted_epoch(now, &mut out);
                    (to, out)
                }
                Event::PersistedCurrent { to } => {
                    let mut out = Vec::new();
                    self.nodes.get_mut(&to).unwrap().peer.on_persisted_current_epoch(now, &mut out);
                    (to, out)
                }
                Event::Logged { to, zxid } => {
                    let mut out = Vec::new();
                    self.nodes.get_mut(&to).unwrap().peer.on_logged(now, zxid, &mut out);
                    (to, out)
                }
                Event::Synced { to } => {
                    let mut out = Vec::new();
                    self.nodes.get_mut(&to).unwrap().peer.on_synced(now, &mut out);
                    (to, out)
                }
                Event::LinkClosed { to, sid } => {
                    let mut out = Vec::new();
                    self.nodes.get_mut(&to).unwrap().peer.on_link_closed(now, sid, &mut out);
                    (to, out)
                }
            };
            if self.nodes[&id].up {
                self.carry(id, effects);
            }
            true
        }

        /// Run events, advancing time by `dt` when the queue is empty.
        fn run(&mut self, ms: u64) {
            let end = self.now + ms;
            while self.now < end {
                let mut count = 0;
                while self.step() {
                    count += 1;
                    assert!(count < 1_000_000, "livelock");
                }
                self.now += 50;
                let ids: Vec<ServerId> = self.nodes.keys().copied().collect();
                for id in ids {
                    if self.nodes[&id].up {
                        let mut out = Vec::new();
                        self.nodes.get_mut(&id).unwrap().peer.on_tick(self.now, &mut out);
                        self.carry(id, out);
                    }
                }
            }
        }

        fn leader(&self) -> Option<ServerId> {
            let leaders: Vec<ServerId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.up && n.peer.state() == ServerState::Leading && n.peer.is_serving())
                .map(|(id, _)| *id)
                .collect();
            (leaders.len() == 1).then(|| leaders[0])
        }

        fn propose(&mut self, value: u64) -> i64 {
            let leader = self.leader().expect("a leader");
            let mut out = Vec::new();
            let zxid = self.nodes.get_mut(&leader).unwrap().peer.propose(self.now, value, &mut out).expect("proposed");
            self.carry(leader, out);
            zxid
        }

        fn serving_all(&self) -> bool {
            self.nodes.values().filter(|n| n.up).all(|n| n.peer.is_serving())
        }
    }

    /// Node 1 following leader 2, decided from the notifications of 2
    /// (LEADING) and 3 (FOLLOWING 2), connected at `t`.
    fn follower_of_2(t: u64) -> (P, Vec<E>) {
        let config = PeerConfig {
            my_id: 1,
            voters: vec![1, 2, 3],
            observers: vec![],
            init_limit_ms: 10_000,
            sync_limit_ms: 5_000,
            finalize_wait_ms: 200,
            committed_log_max: 500,
            planted: PlantedBugs::default(),
            epoch_counter_start: 0,
        };
        let mut peer = P::new(config);
        let mut effects = Vec::new();
        peer.start_looking(t, 0, 0, 0, Vec::new(), &mut effects);
        let vote = election::Vote { leader: 2, zxid: 0, election_epoch: 1, peer_epoch: 0 };
        peer.on_notification(t, Notification { vote, state: ServerState::Leading, sid: 2 }, &mut effects);
        peer.on_notification(t, Notification { vote, state: ServerState::Following, sid: 3 }, &mut effects);
        assert_eq!(peer.state(), ServerState::Following);
        assert!(effects.contains(&Effect::ConnectToLeader { leader: 2 }), "{effects:?}");
        effects.clear();
        peer.on_leader_connected(t, &mut effects);
        (peer, effects)
    }

    fn looked(effects: &[E]) -> bool {
        effects.iter().any(|e| matches!(e, Effect::Look { .. }))
    }

    #[test]
    fn leader_that_closes_before_answering_is_retried_until_init_limit() {
        let (mut peer, effects) = follower_of_2(1_000);
        assert!(matches!(effects[..], [Effect::Send { to: 2, msg: Msg::FollowerInfo { sid: 1, .. } }]), "{effects:?}");
        // 2 accepted the connection while still finishing its own election,
        // and closed it: 1 stays a follower of 2 and connects again.
        let mut effects = Vec::new();
        peer.on_link_closed(1_010, 2, &mut effects);
        assert!(!looked(&effects), "{effects:?}");
        peer.on_tick(1_050, &mut effects);
        assert!(effects.is_empty(), "not before the retry delay: {effects:?}");
        peer.on_tick(1_010 + LEADER_RETRY_DELAY_MS, &mut effects);
        assert_eq!(effects, vec![Effect::ConnectToLeader { leader: 2 }]);
        effects.clear();
        peer.on_leader_connected(1_200, &mut effects);
        assert!(matches!(effects[..], [Effect::Send { to: 2, msg: Msg::FollowerInfo { sid: 1, .. } }]), "registers again: {effects:?}");
        // Past initLimit it gives up and elects again.
        effects.clear();
        peer.on_link_closed(10_950, 2, &mut effects);
        assert!(looked(&effects), "{effects:?}");
    }

    #[test]
    fn leader_that_answered_then_closed_is_not_retried() {
        let (mut peer, _) = follower_of_2(1_000);
        let mut effects = Vec::new();
        peer.on_message(1_005, 2, Msg::LeaderInfo { zxid: make_zxid(1, 0) }, &mut effects);
        effects.clear();
        peer.on_link_closed(1_010, 2, &mut effects);
        assert!(looked(&effects), "{effects:?}");
        let (mut peer, _) = follower_of_2(1_000);
        let mut effects = Vec::new();
        peer.on_leader_unreachable(&mut effects);
        assert!(looked(&effects), "a refused connection means the leader is gone: {effects:?}");
    }

    #[test]
    fn three_voters_elect_sync_and_commit() {
        let mut sim = Sim::new(&[1, 2, 3], &[]);
        sim.run(2_000);
        assert_eq!(sim.leader(), Some(3), "highest id wins an empty ensemble");
        assert!(sim.serving_all());
        for value in 1..=10 {
            sim.propose(value);
        }
        sim.run(500);
        for node in sim.nodes.values() {
            let values: Vec<u64> = node.applied.iter().map(|(_, v)| *v).collect();
            assert_eq!(values, (1..=10).collect::<Vec<_>>());
            assert_eq!(node.applied[0].0, make_zxid(1, 1));
            assert_eq!((node.accepted, node.current), (1, 1));
        }
    }

    #[test]
    fn leader_loss_elects_a_new_leader_and_keeps_commits() {
        let mut sim = Sim::new(&[1, 2, 3], &[4]);
        sim.run(2_000);
        for value in 1..=5 {
            sim.propose(value);
        }
        sim.run(500);
        sim.nodes.get_mut(&3).unwrap().up = false;
        sim.run(15_000);
        let leader = sim.leader().expect("new leader");
        assert_ne!(leader, 3);
        assert!(sim.serving_all(), "all live servers serve");
        sim.propose(6);
        sim.run(500);
        for (id, node) in &sim.nodes {
            if *id == 3 {
                continue;
            }
            let values: Vec<u64> = node.applied.iter().map(|(_, v)| *v).collect();
            assert_eq!(values, vec![1, 2, 3, 4, 5, 6], "node {id}");
            assert_eq!(epoch_of(node.applied.last().unwrap().0), 2);
        }
        // The old leader comes back and catches up by DIFF.
        sim.nodes.get_mut(&3).unwrap().up = true;
        sim.restart_looking(3);
        sim.run(3_000);
        assert!(sim.serving_all());
        let values: Vec<u64> = sim.nodes[&3].applied.iter().map(|(_, v)| *v).collect();
        assert_eq!(values, vec![1, 2, 3, 4, 5, 6]);
    }

    /// Three voters commit 1; then the leader is cut off and logs 99, which
    /// nobody else sees, while the other two elect a new leader. Returns the
    /// ensemble, the old leader and the new one (still cut off from each
    /// other).
    fn deposed_leader_logs_alone() -> (Sim, ServerId, ServerId) {
        let mut sim = Sim::new(&[1, 2, 3], &[]);
        sim.run(2_000);
        sim.propose(1);
        sim.run(500);
        let old = sim.leader().unwrap();
        for other in [1, 2, 3] {
            if other != old {
                sim.cut.insert((old, other));
            }
        }
        sim.propose(99);
        sim.run(15_000);
        let new = sim.leader().expect("new leader among the majority");
        assert_ne!(new, old);
        (sim, old, new)
    }

    #[test]
    fn deposed_leader_is_truncated() {
        let (mut sim, _, _) = deposed_leader_logs_alone();
        sim.propose(2);
        sim.run(500);
        sim.cut.clear();
        sim.run(15_000);
        assert!(sim.serving_all());
        for (id, node) in &sim.nodes {
            let values: Vec<u64> = node.applied.iter().map(|(_, v)| *v).collect();
            assert_eq!(values, vec![1, 2], "node {id}: the uncommitted 99 is gone");
            let logged: Vec<u64> = node.log.iter().map(|(_, v)| *v).collect();
            assert_eq!(logged, vec![1, 2], "node {id} log");
        }
    }

    /// A learner that cannot TRUNC (its log is cut by a snapshot it
    /// received) leaves the sync, and its leader sends it SNAP next time,
    /// even when its leaving cost the leader the quorum and the leader
    /// elected itself again: the simulator once found a leader and such a
    /// learner going through 58 elections, TRUNC each time.
    #[test]
    fn a_learner_that_cannot_truncate_gets_snap_from_its_reelected_leader() {
        let (mut sim, old, new) = deposed_leader_logs_alone();
        // Now the third server goes away, so the new leader needs the old
        // one, which is ahead of its committed log in the same epoch (99):
        // TRUNC, which it cannot carry out.
        let third = [1, 2, 3].into_iter().find(|id| *id != old && *id != new).unwrap();
        sim.nodes.get_mut(&third).unwrap().up = false;
        sim.truncate_fails.insert(old);
        sim.cut.clear();
        sim.run(30_000);
        let synced_old: Vec<&str> = sim.syncs.iter().filter(|(to, _)| *to == old).map(|(_, mode)| *mode).collect();
        assert_eq!(synced_old, ["TRUNC", "SNAP"], "old leader {old}'s syncs");
        assert_eq!(sim.leader(), Some(new));
        assert!(sim.serving_all(), "the leader and the old one serve");
        sim.propose(2);
        sim.run(500);
        let values: Vec<u64> = sim.nodes[&old].applied.iter().map(|(_, v)| *v).collect();
        assert_eq!(values, vec![1, 2], "the uncommitted 99 is gone");
    }

    /// ZooKeeper's ZKDatabase.loadDataBase refills the committed log from the
    /// txn log, so a leader that was restarted DIFFs a lagging follower
    /// instead of sending a SNAP. Here every server is restarted, each with
    /// its log as the committed log (`restart_looking`, as the drivers do).
    #[test]
    fn restarted_leader_diffs_a_lagging_follower_from_its_log() {
        let mut sim = Sim::new(&[1, 2, 3], &[]);
        sim.run(2_000);
        for value in 1..=5 {
            sim.propose(value);
        }
        sim.run(500);
        let lagging = *sim.nodes.keys().find(|id| Some(**id) != sim.leader()).unwrap();
        sim.nodes.get_mut(&lagging).unwrap().up = false;
        for value in 6..=10 {
            sim.propose(value);
        }
        sim.run(500);
        for id in [1, 2, 3] {
            sim.nodes.get_mut(&id).unwrap().up = true;
            sim.restart_looking(id);
        }
        sim.syncs.clear();
        sim.run(5_000);
        assert!(sim.serving_all());
        assert!(sim.syncs.contains(&(lagging, "DIFF")), "{:?}", sim.syncs);
        assert!(sim.syncs.iter().all(|(_, mode)| *mode == "DIFF"), "{:?}", sim.syncs);
        let values: Vec<u64> = sim.nodes[&lagging].applied.iter().map(|(_, v)| *v).collect();
        assert_eq!(values, (1..=10).collect::<Vec<_>>());
    }

    /// The committed log a reload hands over must end at the last logged
    /// zxid: a window from anywhere else could DIFF txns outside this
    /// server's history.
    #[test]
    #[should_panic(expected = "must end at the last logged zxid")]
    fn committed_log_not_ending_at_the_last_logged_zxid_is_refused() {
        let (mut peer, _) = follower_of_2(1_000);
        let mut effects = Vec::new();
        peer.start_looking(2_000, make_zxid(1, 5), 1, 1, vec![(make_zxid(1, 3), 3), (make_zxid(1, 4), 4)], &mut effects);
    }

    #[test]
    #[should_panic(expected = "strictly increasing zxid order")]
    fn committed_log_out_of_order_is_refused() {
        let (mut peer, _) = follower_of_2(1_000);
        let mut effects = Vec::new();
        peer.start_looking(2_000, make_zxid(1, 4), 1, 1, vec![(make_zxid(1, 4), 4), (make_zxid(1, 4), 4)], &mut effects);
    }

    #[test]
    fn wiped_learner_beyond_the_committed_log_gets_a_snapshot() {
        let mut sim = Sim::new(&[1, 2, 3], &[]);
        for node in sim.nodes.values_mut() {
            node.peer.config.committed_log_max = 5;
        }
        sim.run(2_000);
        for value in 1..=20 {
            sim.propose(value);
        }
        sim.run(500);
        let follower = *sim.nodes.keys().find(|id| Some(**id) != sim.leader()).unwrap();
        let node = sim.nodes.get_mut(&follower).unwrap();
        node.log.clear();
        node.accepted = 0;
        node.current = 0;
        sim.restart_looking(follower);
        sim.run(3_000);
        assert!(sim.serving_all());
        let values: Vec<u64> = sim.nodes[&follower].applied.iter().map(|(_, v)| *v).collect();
        assert_eq!(values, (1..=20).collect::<Vec<_>>());
        sim.propose(21);
        sim.run(500);
        assert_eq!(sim.nodes[&follower].applied.last().unwrap().1, 21);
    }

    #[test]
    fn a_reply_with_nothing_in_flight_leaves_at_once_in_a_new_epoch() {
        let mut sim = Sim::new(&[1, 2, 3], &[]);
        sim.run(2_000);
        let leader = sim.leader().unwrap();
        let mut out = Vec::new();
        sim.nodes.get_mut(&leader).unwrap().peer.reply(leader, 5, &mut out);
        assert_eq!(out, vec![Effect::Deliver(5)]);
    }

    #[test]
    fn replies_wait_for_earlier_commits() {
        let mut sim = Sim::new(&[1, 2, 3], &[]);
        sim.run(2_000);
        let leader = sim.leader().unwrap();
        let follower = if leader == 1 { 2 } else { 1 };
        sim.propose(1);
        let mut out = Vec::new();
        sim.nodes.get_mut(&leader).unwrap().peer.reply(follower, 77, &mut out);
        assert!(out.is_empty(), "the reply waits for proposal 1 to commit");
        sim.run(500);
        assert_eq!(sim.nodes[&follower].delivered, vec![77]);
        // The leader sends the reply after the COMMIT, so the follower
        // holds it until it applied proposal 1 (found by the simulator as a
        // sync answered before the client's setData ahead of it).
        assert_eq!(sim.nodes[&follower].delivered_after, vec![1], "applied before the reply");
    }

    #[test]
    fn a_reply_goes_between_the_commits_it_falls_between() {
        // Proposals 1 and 2 commit together (the leader logs both in one
        // write); the reply waits for 1 only, so the follower must get it
        // after applying 1 and before applying 2: sent after COMMIT 2, it
        // would wait for 2 and pass a later write of the same client.
        let mut sim = Sim::new(&[1, 2, 3], &[]);
        sim.run(2_000);
        let leader = sim.leader().unwrap();
        let follower = if leader == 1 { 2 } else { 1 };
        // The other follower is down: the leader's own log write is needed
        // for a quorum, and one write (reported once, at 2) logs both.
        let other = [1, 2, 3].into_iter().find(|&id| id != leader && id != follower).unwrap();
        sim.nodes.get_mut(&other).unwrap().up = false;
        sim.propose(1);
        let mut out = Vec::new();
        sim.nodes.get_mut(&leader).unwrap().peer.reply(follower, 77, &mut out);
        assert!(out.is_empty(), "the reply waits for proposal 1 to commit");
        let second = sim.propose(2);
        let before = sim.events.len();
        sim.events.retain(|event| !matches!(event, Event::Logged { to, .. } if *to == leader));
        assert_eq!(sim.events.len(), before - 2, "the leader's reports of logging 1 and 2 are held back");
        sim.run(200);
        assert!(sim.nodes[&follower].applied.len() < 2, "nothing commits before the leader logs");
        sim.events.push_back(Event::Logged { to: leader, zxid: second });
        sim.run(500);
        assert_eq!(sim.nodes[&follower].applied.len(), 2);
        assert_eq!(sim.nodes[&follower].delivered_after, vec![1], "delivered between applying 1 and 2");
    }
}
