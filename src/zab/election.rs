//! ZooKeeper's Fast Leader Election (`FastLeaderElection.lookForLeader` and
//! the answering half of its `WorkerReceiver`) as a pure, deterministic state
//! machine: events in (`start`, `on_notification`, `on_tick`), effects out
//! (`Effect::Send`, `Effect::Decided`). No I/O, no clock reads, no threads, no
//! randomness; the caller owns the transport and the clock and calls
//! `on_tick` at (or after) `next_wakeup_ms()`.
//!
//! How ZooKeeper's blocking loop maps onto events:
//! * `recvqueue.poll(notTimeout)` timing out is `on_tick` at `now >= resend_at`;
//!   every notification from a voter restarts that wait, exactly as a poll
//!   returning does. The timeout re-sends our proposal and doubles `notTimeout`
//!   up to `max_notification_interval_ms` (the minimum, as in ZooKeeper's
//!   default, is `finalize_wait_ms`).
//! * The finalize loop (`while ((n = recvqueue.poll(finalizeWait)) != null)`)
//!   is the `Finalizing` phase: every notification that does not beat our
//!   proposal is consumed and restarts the `finalize_wait_ms` wait; one that
//!   beats it ends the phase and is processed as a fresh notification (the
//!   "put back"); `on_tick` after the wait decides.
//! * A voter's notifications to itself (ZooKeeper's `sendNotifications` includes
//!   self, delivered through the local queue) are not emitted: the vote is
//!   recorded in our own `recvset` when it is sent.
//!
//! One deliberate deviation: when joining an established ensemble through the
//! out-of-election path ZooKeeper sets `logicalclock = n.electionEpoch`, which
//! can move it backwards; here it becomes `max(logicalclock, n.electionEpoch)`
//! so that the logical clock never decreases (the decided vote still carries
//! the leader's election epoch). A later election then simply starts from the
//! higher round, which the others adopt.

use std::collections::BTreeMap;

use super::{is_quorum, ServerId};

/// The leader an observer proposes: nobody. ZooKeeper uses `Long.MIN_VALUE`
/// for id, zxid and epoch; a vote for a non-voter never wins
/// `total_order_predicate` and is never counted, so any value outside the
/// voters serves.
pub const NO_LEADER: ServerId = ServerId::MAX;

/// ZooKeeper's `QuorumPeer.ServerState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerState {
    Looking,
    Following,
    Leading,
    Observing,
}

/// ZooKeeper's `Vote` (without the state, which travels in `Notification`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vote {
    pub leader: ServerId,
    pub zxid: i64,
    /// The election round (`logicalclock`) the vote was cast in.
    pub election_epoch: u64,
    /// The proposed leader's accepted epoch.
    pub peer_epoch: u32,
}

impl Vote {
    /// `Vote.equals` between a vote held in state `my_state` and `other` held
    /// in `other_state` (both sides on message version > 0): if either is
    /// LOOKING all four fields must match, otherwise (two votes from outside
    /// an election) only leader and peer epoch (ZOOKEEPER-1805).
    fn matches(&self, my_state: ServerState, other: &Vote, other_state: ServerState) -> bool {
        if my_state == ServerState::Looking || other_state == ServerState::Looking {
            self == other
        } else {
            self.leader == other.leader && self.peer_epoch == other.peer_epoch
        }
    }
}

/// What peers exchange: the sender's vote, its state and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    pub vote: Vote,
    pub state: ServerState,
    pub sid: ServerId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    pub my_id: ServerId,
    /// Participants (`server.N` without `:observer`); only they vote and only
    /// they can be elected.
    pub voters: Vec<ServerId>,
    pub observers: Vec<ServerId>,
    /// ZooKeeper's `finalizeWait` (200 ms), also the initial notification
    /// timeout (`minNotificationInterval`'s default).
    pub finalize_wait_ms: i64,
    /// Cap of the notification timeout's exponential backoff (60000 ms).
    pub max_notification_interval_ms: i64,
}

impl ElectionConfig {
    /// A configuration with ZooKeeper's default timings.
    pub fn new(my_id: ServerId, voters: Vec<ServerId>, observers: Vec<ServerId>) -> Self {
        ElectionConfig {
            my_id,
            voters,
            observers,
            finalize_wait_ms: 200,
            max_notification_interval_ms: 60_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send `notification` to server `to` (never to ourselves).
    Send {
        to: ServerId,
        notification: Notification,
    },
    /// The election is over: become `state` (Leading, Following or Observing)
    /// with `leader`; `vote` is the new current vote.
    Decided {
        leader: ServerId,
        state: ServerState,
        vote: Vote,
    },
}

/// The outcome of an election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub leader: ServerId,
    pub state: ServerState,
    pub vote: Vote,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `start` not called yet.
    Idle,
    /// Exchanging notifications; re-send if nothing arrives by `resend_at`.
    Looking {
        resend_at: i64,
    },
    /// A quorum agrees with our proposal; decide at `deadline` unless a better
    /// vote arrives first.
    Finalizing {
        deadline: i64,
    },
    Decided(Decision),
}

/// One server's side of Fast Leader Election. Like ZooKeeper's
/// `FastLeaderElection` object it outlives a single election: `start` again
/// (after `set_last_logged` if the log moved) to look for a new leader; the
/// logical clock carries over.
#[derive(Clone, Debug)]
pub struct Election {
    config: ElectionConfig,
    /// A voter (`LearnerType.PARTICIPANT`), as opposed to an observer.
    participant: bool,
    last_zxid: i64,
    current_epoch: u32,
    logical_clock: u64,
    proposed_leader: ServerId,
    proposed_zxid: i64,
    proposed_epoch: u32,
    /// Votes of the current round (`electionEpoch == logicalclock`), by sender.
    recv_set: BTreeMap<ServerId, (Vote, ServerState)>,
    /// FOLLOWING/LEADING votes of any round, by sender.
    out_of_election: BTreeMap<ServerId, (Vote, ServerState)>,
    not_timeout_ms: i64,
    phase: Phase,
    /// `QuorumPeer.currentVote`: the last decision, or our own initial vote
    /// before the first one. Answered to non-voters while we are looking.
    current_vote: Vote,
}

impl Election {
    pub fn new(config: ElectionConfig, my_last_zxid: i64, my_current_epoch: u32) -> Self {
        assert!(!config.voters.is_empty(), "an ensemble needs voters");
        assert!(
            !config.voters.contains(&NO_LEADER),
            "server id {NO_LEADER} is reserved"
        );
        assert!(
            config.observers.iter().all(|o| !config.voters.contains(o)),
            "a server is either a voter or an observer"
        );
        let participant = config.voters.contains(&config.my_id);
        assert!(
            participant || config.observers.contains(&config.my_id),
            "my id {} is neither a voter nor an observer",
            config.my_id
        );
        assert!(config.finalize_wait_ms > 0 && config.max_notification_interval_ms > 0);
        let current_vote = Vote {
            leader: config.my_id,
            zxid: my_last_zxid,
            election_epoch: 0,
            peer_epoch: my_current_epoch,
        };
        Election {
            not_timeout_ms: config.finalize_wait_ms,
            config,
            participant,
            last_zxid: my_last_zxid,
            current_epoch: my_current_epoch,
            logical_clock: 0,
            proposed_leader: NO_LEADER,
            proposed_zxid: i64::MIN,
            proposed_epoch: 0,
            recv_set: BTreeMap::new(),
            out_of_election: BTreeMap::new(),
            phase: Phase::Idle,
            current_vote,
        }
    }

    /// Update the last logged zxid and current epoch before a new election.
    pub fn set_last_logged(&mut self, last_zxid: i64, current_epoch: u32) {
        self.last_zxid = last_zxid;
        self.current_epoch = current_epoch;
        if self.current_vote.election_epoch == 0 {
            // Never decided: like QuorumPeer.startLeaderElection, the vote
            // we report to observers is (me, last logged zxid, epoch).
            self.current_vote.zxid = last_zxid;
            self.current_vote.peer_epoch = current_epoch;
        }
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    pub fn logical_clock(&self) -> u64 {
        self.logical_clock
    }

    /// Our current proposal, stamped with the current round.
    pub fn proposal(&self) -> Vote {
        Vote {
            leader: self.proposed_leader,
            zxid: self.proposed_zxid,
            election_epoch: self.logical_clock,
            peer_epoch: self.proposed_epoch,
        }
    }

    /// `QuorumPeer.currentVote`: the last decided vote (or our initial one).
    pub fn current_vote(&self) -> Vote {
        self.current_vote
    }

    /// Once it serves, a server reports the epoch it serves in as its vote's
    /// peer epoch (ZooKeeper's `updateElectionVote`, ZOOKEEPER-1732): a
    /// server that joins late counts the votes of FOLLOWING/LEADING servers
    /// by (leader, peer epoch), and would never see a quorum if a follower
    /// still reported the epoch it voted in before the leader moved on.
    pub fn update_vote_epoch(&mut self, epoch: u32) {
        self.current_vote.peer_epoch = epoch;
    }

    /// The current notification timeout (ZooKeeper's `notTimeout`).
    pub fn notification_timeout_ms(&self) -> i64 {
        self.not_timeout_ms
    }

    /// Started and not decided yet.
    pub fn is_looking(&self) -> bool {
        matches!(self.phase, Phase::Looking { .. } | Phase::Finalizing { .. })
    }

    /// In the finalize wait: a quorum agrees with our proposal.
    pub fn is_finalizing(&self) -> bool {
        matches!(self.phase, Phase::Finalizing { .. })
    }

    pub fn decision(&self) -> Option<Decision> {
        match self.phase {
            Phase::Decided(d) => Some(d),
            _ => None,
        }
    }

    /// When `on_tick` next has something to do, if ever.
    pub fn next_wakeup_ms(&self) -> Option<i64> {
        match self.phase {
            Phase::Looking { resend_at } => Some(resend_at),
            Phase::Finalizing { deadline } => Some(deadline),
            Phase::Idle | Phase::Decided(_) => None,
        }
    }

    /// `totalOrderPredicate`: does `new` beat `cur`? Higher peer epoch wins,
    /// then higher zxid, then higher server id; a vote for a non-voter never
    /// wins (weight 0), and any voter's vote beats a vote for nobody (an
    /// observer's `Long.MIN_VALUE` proposal). Election epochs are ignored.
    pub fn total_order_predicate(&self, new: &Vote, cur: &Vote) -> bool {
        if !self.is_voter(new.leader) {
            return false;
        }
        if !self.is_voter(cur.leader) {
            return true;
        }
        (new.peer_epoch, new.zxid, new.leader) > (cur.peer_epoch, cur.zxid, cur.leader)
    }

    /// A new election (`lookForLeader`'s prologue): bump the logical clock,
    /// propose ourselves (an observer proposes nobody), tell all voters.
    pub fn start(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        self.recv_set.clear();
        self.out_of_election.clear();
        self.not_timeout_ms = self.config.finalize_wait_ms;
        self.set_clock(self.logical_clock + 1);
        let init = self.init_vote();
        self.update_proposal(&init);
        self.phase = Phase::Looking {
            resend_at: now_ms + self.not_timeout_ms,
        };
        self.send_notifications(effects);
        // Our own notification "arrives": with a single voter that already is
        // a quorum.
        if self.participant
            && self.has_quorum(&self.recv_set, &self.proposal(), ServerState::Looking)
        {
            self.phase = Phase::Finalizing {
                deadline: now_ms + self.config.finalize_wait_ms,
            };
        }
    }

    /// A notification from a peer while we are looking (`WorkerReceiver` with
    /// `LOOKING` state, then `lookForLeader`'s loop body). Ignored before
    /// `start` and after the decision: then answer with `reply_when_settled`.
    pub fn on_notification(&mut self, now_ms: i64, n: Notification, effects: &mut Vec<Effect>) {
        if !self.is_looking() || n.sid == self.config.my_id {
            return;
        }
        // WorkerReceiver: a non-voter (observer) is answered right away with
        // our current vote and never reaches the election loop.
        if !self.is_voter(n.sid) {
            let vote = Vote {
                election_epoch: self.logical_clock,
                ..self.current_vote
            };
            effects.push(self.message(n.sid, vote, ServerState::Looking));
            return;
        }
        // WorkerReceiver: a LOOKING peer lagging behind our round gets our
        // proposal so that it catches up. Not from an observer: a voter
        // answers every observer's notification with its own round's vote
        // and never joins an observer's round, so the two answered each
        // other without end, 1-8 ms apart (found by the simulator's
        // message-storm check).
        if self.participant && n.state == ServerState::Looking && n.vote.election_epoch < self.logical_clock {
            effects.push(self.message(n.sid, self.proposal(), ServerState::Looking));
        }
        if let Phase::Finalizing { .. } = self.phase {
            if !self.total_order_predicate(&n.vote, &self.proposal()) {
                // Consumed by the finalize loop; its poll starts over.
                self.phase = Phase::Finalizing {
                    deadline: now_ms + self.config.finalize_wait_ms,
                };
                return;
            }
            // A better vote: put it back and keep looking.
        }
        self.process(now_ms, n, effects);
        self.check_invariants();
    }

    /// Timers: the notification timeout (re-send our proposal, back off) and
    /// the end of the finalize wait (decide).
    pub fn on_tick(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        match self.phase {
            Phase::Finalizing { deadline } if now_ms >= deadline => {
                let vote = self.proposal();
                self.decide(vote.leader, vote, effects);
            }
            Phase::Looking { resend_at } if now_ms >= resend_at => {
                self.send_notifications(effects);
                self.not_timeout_ms =
                    (self.not_timeout_ms * 2).min(self.config.max_notification_interval_ms);
                self.phase = Phase::Looking {
                    resend_at: now_ms + self.not_timeout_ms,
                };
            }
            _ => {}
        }
        self.check_invariants();
    }

    /// Answer to a notification while NOT looking (we are following, leading
    /// or observing), as ZooKeeper's `WorkerReceiver` does: a non-voter always
    /// gets our current vote (stamped with our logical clock), a LOOKING voter
    /// gets our current vote as is, so that late joiners find the leader.
    /// `None` when there is nothing to answer, or when `my_state` is Looking
    /// (then `on_notification` handles it).
    pub fn reply_when_settled(
        &self,
        my_state: ServerState,
        current_vote: &Vote,
        n: &Notification,
    ) -> Option<Effect> {
        if my_state == ServerState::Looking || n.sid == self.config.my_id {
            return None;
        }
        if !self.is_voter(n.sid) {
            let vote = Vote {
                election_epoch: self.logical_clock,
                ..*current_vote
            };
            Some(self.message(n.sid, vote, my_state))
        } else if n.state == ServerState::Looking {
            Some(self.message(n.sid, *current_vote, my_state))
        } else {
            None
        }
    }

    // ---- the election loop -------------------------------------------------

    /// `lookForLeader`'s loop body for a notification from a voter.
    fn process(&mut self, now_ms: i64, n: Notification, effects: &mut Vec<Effect>) {
        // The poll returned: the notification timeout starts over.
        self.phase = Phase::Looking {
            resend_at: now_ms + self.not_timeout_ms,
        };
        if !self.is_voter(n.vote.leader) {
            return;
        }
        match n.state {
            ServerState::Looking => self.received_looking(now_ms, n, effects),
            // Observers never vote.
            ServerState::Observing => {}
            ServerState::Following | ServerState::Leading => self.received_settled(n, effects),
        }
    }

    fn received_looking(&mut self, now_ms: i64, n: Notification, effects: &mut Vec<Effect>) {
        if self.init_vote().zxid == -1 || n.vote.zxid == -1 {
            return;
        }
        if n.vote.election_epoch > self.logical_clock {
            // A newer round: join it, forgetting this round's votes.
            self.set_clock(n.vote.election_epoch);
            self.recv_set.clear();
            let init = self.init_vote();
            if self.total_order_predicate(&n.vote, &init) {
                self.update_proposal(&n.vote);
            } else {
                self.update_proposal(&init);
            }
            self.send_notifications(effects);
        } else if n.vote.election_epoch < self.logical_clock {
            return;
        } else if self.total_order_predicate(&n.vote, &self.proposal()) {
            self.update_proposal(&n.vote);
            self.send_notifications(effects);
        } else if self.participant && self.total_order_predicate(&self.proposal(), &n.vote) {
            // Not in ZooKeeper, which leaves this to our next notification
            // timeout: the sender backs a worse leader in our round, so tell
            // it ours now. Otherwise each of its re-sends restarts our
            // timeout, both back off, and a pair of voters that could form a
            // quorum waited up to a minute (found by the simulator). The
            // sender adopts the better vote, so this answer is not repeated.
            // Voters only: a voter answers an observer's notification at
            // once, so an observer answering back would never stop.
            effects.push(self.message(n.sid, self.proposal(), ServerState::Looking));
        }
        self.recv_set.insert(n.sid, (n.vote, ServerState::Looking));
        if self.has_quorum(&self.recv_set, &self.proposal(), ServerState::Looking) {
            self.phase = Phase::Finalizing {
                deadline: now_ms + self.config.finalize_wait_ms,
            };
        }
    }

    /// `receivedFollowingNotification` (LEADING adds only the oracle, which
    /// majority quorums do not use).
    fn received_settled(&mut self, n: Notification, effects: &mut Vec<Effect>) {
        if n.vote.election_epoch == self.logical_clock {
            self.recv_set.insert(n.sid, (n.vote, n.state));
            if self.has_quorum(&self.recv_set, &n.vote, n.state)
                && self.check_leader(&self.recv_set, n.vote.leader, n.vote.election_epoch)
            {
                self.decide(n.vote.leader, n.vote, effects);
                return;
            }
        }
        // Before joining an established ensemble, verify that a quorum
        // follows the same leader and that the leader says it leads.
        self.out_of_election.insert(n.sid, (n.vote, n.state));
        if self.has_quorum(&self.out_of_election, &n.vote, n.state)
            && self.check_leader(&self.out_of_election, n.vote.leader, n.vote.election_epoch)
        {
            // ZooKeeper: logicalclock = n.electionEpoch (see module docs).
            self.set_clock(self.logical_clock.max(n.vote.election_epoch));
            self.decide(n.vote.leader, n.vote, effects);
        }
    }

    /// `checkLeader`: if someone else is the leader, it must have told us it
    /// is LEADING; if we are, the votes must be of our round.
    fn check_leader(
        &self,
        votes: &BTreeMap<ServerId, (Vote, ServerState)>,
        leader: ServerId,
        election_epoch: u64,
    ) -> bool {
        if leader != self.config.my_id {
            matches!(votes.get(&leader), Some((_, ServerState::Leading)))
        } else {
            self.logical_clock == election_epoch
        }
    }

    /// `getVoteTracker(...).hasAllQuorums()`: do the voters among `votes`
    /// that match `target` form a majority of the voters?
    fn has_quorum(
        &self,
        votes: &BTreeMap<ServerId, (Vote, ServerState)>,
        target: &Vote,
        target_state: ServerState,
    ) -> bool {
        let acks = votes
            .iter()
            .filter(|(sid, (vote, state))| {
                self.is_voter(**sid) && vote.matches(*state, target, target_state)
            })
            .count();
        is_quorum(acks, self.config.voters.len())
    }

    fn decide(&mut self, leader: ServerId, vote: Vote, effects: &mut Vec<Effect>) {
        assert!(
            self.is_voter(leader),
            "decided for {leader}, which is not a voter"
        );
        let state = if leader == self.config.my_id {
            ServerState::Leading
        } else if self.participant {
            ServerState::Following
        } else {
            ServerState::Observing
        };
        self.current_vote = vote;
        self.phase = Phase::Decided(Decision {
            leader,
            state,
            vote,
        });
        effects.push(Effect::Decided {
            leader,
            state,
            vote,
        });
    }

    // ---- helpers -----------------------------------------------------------

    fn is_voter(&self, sid: ServerId) -> bool {
        self.config.voters.contains(&sid)
    }

    /// `getInitId`, `getInitLastLoggedZxid`, `getPeerEpoch`.
    fn init_vote(&self) -> Vote {
        if self.participant {
            Vote {
                leader: self.config.my_id,
                zxid: self.last_zxid,
                election_epoch: self.logical_clock,
                peer_epoch: self.current_epoch,
            }
        } else {
            Vote {
                leader: NO_LEADER,
                zxid: i64::MIN,
                election_epoch: self.logical_clock,
                peer_epoch: 0,
            }
        }
    }

    fn update_proposal(&mut self, vote: &Vote) {
        self.proposed_leader = vote.leader;
        self.proposed_zxid = vote.zxid;
        self.proposed_epoch = vote.peer_epoch;
    }

    fn set_clock(&mut self, clock: u64) {
        assert!(
            clock >= self.logical_clock,
            "logical clock would go back from {} to {clock}",
            self.logical_clock
        );
        self.logical_clock = clock;
    }

    fn message(&self, to: ServerId, vote: Vote, state: ServerState) -> Effect {
        Effect::Send {
            to,
            notification: Notification {
                vote,
                state,
                sid: self.config.my_id,
            },
        }
    }

    /// `sendNotifications`: our proposal to every voter. Our own copy is
    /// recorded directly instead of travelling through the network.
    fn send_notifications(&mut self, effects: &mut Vec<Effect>) {
        let vote = self.proposal();
        for &to in &self.config.voters {
            if to != self.config.my_id {
                effects.push(self.message(to, vote, ServerState::Looking));
            }
        }
        if self.participant {
            self.recv_set
                .insert(self.config.my_id, (vote, ServerState::Looking));
        }
    }

    fn check_invariants(&self) {
        if self.is_looking() {
            assert!(self
                .recv_set
                .values()
                .all(|(v, _)| v.election_epoch == self.logical_clock));
        }
        assert!(self.recv_set.keys().all(|sid| self.is_voter(*sid)));
        assert!(self.out_of_election.keys().all(|sid| self.is_voter(*sid)));
        if let Phase::Decided(d) = self.phase {
            assert!(self.is_voter(d.leader));
            assert!(self.participant || d.state == ServerState::Observing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::zab::make_zxid;
    use std::collections::{BTreeSet, VecDeque};

    // ---- a tiny deterministic network --------------------------------------

    struct Node {
        el: Election,
        /// None: down for the whole run (messages to and from it are lost).
        start_at: Option<i64>,
        started: bool,
        state: ServerState,
        vote: Vote,
        decisions: Vec<(i64, Decision)>,
        next_check: Option<i64>,
    }

    #[derive(Clone, Copy, Debug)]
    enum Ev {
        Start(ServerId),
        Deliver(ServerId, ServerId),
        Tick(ServerId),
        Check(ServerId),
    }

    /// Servers exchanging notifications over per-link FIFO queues (like
    /// ZooKeeper's TCP connections) with random delays; among events due at
    /// the same time one is picked at random. Messages to a server that has
    /// not started yet wait for it (QuorumCnxManager keeps them queued).
    struct Sim {
        seed: u64,
        rng: Rng,
        now: i64,
        nodes: BTreeMap<ServerId, Node>,
        links: BTreeMap<(ServerId, ServerId), VecDeque<(i64, Notification)>>,
        delay: (u64, u64),
        loss_pct: u64,
        /// Directed links that lose everything.
        cut: BTreeSet<(ServerId, ServerId)>,
        /// Extra delay on everything a server sends.
        slow: BTreeMap<ServerId, i64>,
        /// Model the rest of ZooKeeper: a follower whose leader is not leading,
        /// or a leader without a quorum of followers, goes back to looking
        /// after this long (ZooKeeper's initLimit/syncLimit).
        supervise_ms: Option<i64>,
        sends: Vec<(i64, ServerId, ServerId)>,
    }

    /// (id, last zxid, current epoch) of each voter.
    type Servers<'a> = &'a [(ServerId, i64, u32)];

    impl Sim {
        fn new(seed: u64, voters: Servers, observers: &[ServerId]) -> Self {
            let voter_ids: Vec<ServerId> = voters.iter().map(|v| v.0).collect();
            let mut nodes = BTreeMap::new();
            let all = voters
                .iter()
                .copied()
                .chain(observers.iter().map(|&o| (o, 0, 0)));
            for (id, zxid, epoch) in all {
                let el = Election::new(
                    ElectionConfig::new(id, voter_ids.clone(), observers.to_vec()),
                    zxid,
                    epoch,
                );
                let vote = el.current_vote();
                nodes.insert(
                    id,
                    Node {
                        el,
                        start_at: Some(0),
                        started: false,
                        state: ServerState::Looking,
                        vote,
                        decisions: Vec::new(),
                        next_check: None,
                    },
                );
            }
            Sim {
                seed,
                rng: Rng::new(seed),
                now: 0,
                nodes,
                links: BTreeMap::new(),
                delay: (1, 50),
                loss_pct: 0,
                cut: BTreeSet::new(),
                slow: BTreeMap::new(),
                supervise_ms: None,
                sends: Vec::new(),
            }
        }

        fn node(&self, id: ServerId) -> &Node {
            &self.nodes[&id]
        }

        fn pending(&self) -> Vec<(i64, Ev)> {
            let mut evs = Vec::new();
            for (&id, n) in &self.nodes {
                if !n.started {
                    if let Some(at) = n.start_at {
                        evs.push((at, Ev::Start(id)));
                    }
                    continue;
                }
                if n.state == ServerState::Looking {
                    if let Some(at) = n.el.next_wakeup_ms() {
                        evs.push((at, Ev::Tick(id)));
                    }
                }
                if let (Some(at), Some(_)) = (n.next_check, self.supervise_ms) {
                    evs.push((at, Ev::Check(id)));
                }
            }
            for (&(from, to), q) in &self.links {
                if let Some(&(at, _)) = q.front() {
                    if self.nodes[&to].started {
                        evs.push((at, Ev::Deliver(from, to)));
                    }
                }
            }
            evs
        }

        /// Run one event; false when there is none left before `until`.
        fn step(&mut self, until: i64) -> bool {
            let evs = self.pending();
            let Some(next) = evs.iter().map(|e| e.0).min() else {
                return false;
            };
            if next > until {
                return false;
            }
            self.now = self.now.max(next);
            let ready: Vec<Ev> = evs
                .iter()
                .filter(|e| e.0 <= self.now)
                .map(|e| e.1)
                .collect();
            let ev = *self.rng.pick(&ready);
            self.exec(ev);
            true
        }

        fn run_until(&mut self, until: i64, stop: impl Fn(&Sim) -> bool) -> bool {
            loop {
                if stop(self) {
                    return true;
                }
                if !self.step(until) {
                    self.now = self.now.max(until);
                    return stop(self);
                }
            }
        }

        fn exec(&mut self, ev: Ev) {
            let now = self.now;
            let mut effects = Vec::new();
            let from = match ev {
                Ev::Start(id) => {
                    let n = self.nodes.get_mut(&id).unwrap();
                    n.started = true;
                    n.state = ServerState::Looking;
                    n.el.start(now, &mut effects);
                    id
                }
                Ev::Tick(id) => {
                    self.nodes
                        .get_mut(&id)
                        .unwrap()
                        .el
                        .on_tick(now, &mut effects);
                    id
                }
                Ev::Deliver(from, to) => {
                    let (_, msg) = self
                        .links
                        .get_mut(&(from, to))
                        .unwrap()
                        .pop_front()
                        .unwrap();
                    assert_eq!(msg.sid, from);
                    let n = self.nodes.get_mut(&to).unwrap();
                    if n.state == ServerState::Looking {
                        n.el.on_notification(now, msg, &mut effects);
                    } else if let Some(e) = n.el.reply_when_settled(n.state, &n.vote, &msg) {
                        effects.push(e);
                    }
                    to
                }
                Ev::Check(id) => {
                    if !self.supervisor_ok(id) {
                        let n = self.nodes.get_mut(&id).unwrap();
                        n.state = ServerState::Looking;
                        n.next_check = None;
                        n.el.start(now, &mut effects);
                    } else {
                        let period = self.supervise_ms.unwrap();
                        self.nodes.get_mut(&id).unwrap().next_check = Some(now + period);
                    }
                    id
                }
            };
            self.dispatch(from, effects);
        }

        fn supervisor_ok(&self, id: ServerId) -> bool {
            let n = self.node(id);
            let voters = n.el.config().voters.len();
            match n.state {
                ServerState::Looking => true,
                ServerState::Leading => {
                    let followers = self
                        .nodes
                        .iter()
                        .filter(|(_, m)| m.state == ServerState::Following && m.vote.leader == id)
                        .count();
                    is_quorum(followers + 1, voters)
                }
                ServerState::Following | ServerState::Observing => {
                    self.node(n.vote.leader).state == ServerState::Leading
                }
            }
        }

        fn dispatch(&mut self, from: ServerId, effects: Vec<Effect>) {
            for e in effects {
                match e {
                    Effect::Send { to, notification } => {
                        assert_ne!(to, from, "seed {}: sent to itself", self.seed);
                        assert_eq!(notification.sid, from);
                        self.sends.push((self.now, from, to));
                        let lost = self.nodes[&to].start_at.is_none()
                            || self.cut.contains(&(from, to))
                            || self.rng.chance(10 * self.loss_pct);
                        if lost {
                            continue;
                        }
                        let delay = self.rng.between(self.delay.0, self.delay.1) as i64
                            + self.slow.get(&from).copied().unwrap_or(0);
                        let q = self.links.entry((from, to)).or_default();
                        let at = q
                            .back()
                            .map_or(self.now + delay, |b| b.0.max(self.now + delay));
                        q.push_back((at, notification));
                    }
                    Effect::Decided {
                        leader,
                        state,
                        vote,
                    } => {
                        let now = self.now;
                        let check = self.supervise_ms.map(|s| now + s);
                        let n = self.nodes.get_mut(&from).unwrap();
                        assert_eq!(
                            n.el.decision(),
                            Some(Decision {
                                leader,
                                state,
                                vote
                            })
                        );
                        assert!(!n.el.is_looking());
                        n.state = state;
                        n.vote = vote;
                        n.decisions.push((
                            now,
                            Decision {
                                leader,
                                state,
                                vote,
                            },
                        ));
                        n.next_check = check;
                    }
                }
            }
        }

        /// Every server that runs has decided.
        fn all_decided(&self) -> bool {
            self.nodes
                .values()
                .filter(|n| n.start_at.is_some())
                .all(|n| n.state != ServerState::Looking)
        }

        fn any_decided(&self) -> bool {
            self.nodes.values().any(|n| !n.decisions.is_empty())
        }

        /// One leader, which leads, and every running server follows or
        /// observes it.
        fn settled_leader(&self) -> Option<ServerId> {
            let leaders: Vec<ServerId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.state == ServerState::Leading)
                .map(|(&id, _)| id)
                .collect();
            let [leader] = leaders[..] else { return None };
            let ok = self
                .nodes
                .iter()
                .filter(|(_, n)| n.start_at.is_some())
                .all(|(&id, n)| {
                    let voter = n.el.config().voters.contains(&id);
                    n.vote.leader == leader
                        && match n.state {
                            ServerState::Leading => id == leader,
                            ServerState::Following => voter,
                            ServerState::Observing => !voter,
                            ServerState::Looking => false,
                        }
                });
            ok.then_some(leader)
        }
    }

    fn expected_leader(voters: Servers) -> ServerId {
        voters
            .iter()
            .max_by_key(|&&(id, zxid, epoch)| (epoch, zxid, id))
            .unwrap()
            .0
    }

    fn random_servers(rng: &mut Rng, count: u64) -> Vec<(ServerId, i64, u32)> {
        (1..=count)
            .map(|id| {
                let epoch = rng.below(3) as u32;
                let zxid_epoch = rng.below(epoch as u64 + 1) as u32;
                (id, make_zxid(zxid_epoch, rng.below(4) as u32), epoch)
            })
            .collect()
    }

    /// Every server decides once, for the leader with the max (epoch, zxid,
    /// id), in the right state.
    fn check_elects_max(seed: u64, voters: Servers, observers: &[ServerId], start_spread: u64) {
        let mut sim = Sim::new(seed, voters, observers);
        for id in sim.nodes.keys().copied().collect::<Vec<_>>() {
            let at = sim.rng.between(0, start_spread) as i64;
            sim.nodes.get_mut(&id).unwrap().start_at = Some(at);
        }
        assert!(
            sim.run_until(600_000, Sim::all_decided),
            "seed {seed}: not all decided: {voters:?}"
        );
        let want = expected_leader(voters);
        for (&id, n) in &sim.nodes {
            assert_eq!(
                n.decisions.len(),
                1,
                "seed {seed}: server {id} decided {:?}",
                n.decisions
            );
            let d = n.decisions[0].1;
            let state = if id == want {
                ServerState::Leading
            } else if observers.contains(&id) {
                ServerState::Observing
            } else {
                ServerState::Following
            };
            assert_eq!(
                (d.leader, d.state),
                (want, state),
                "seed {seed}: server {id} in {voters:?}"
            );
            let (_, zxid, epoch) = voters.iter().find(|v| v.0 == want).copied().unwrap();
            assert_eq!(
                (d.vote.zxid, d.vote.peer_epoch),
                (zxid, epoch),
                "seed {seed}"
            );
        }
        assert_eq!(sim.settled_leader(), Some(want), "seed {seed}");
    }

    // ---- unit tests of the rules -------------------------------------------

    fn vote(leader: ServerId, zxid: i64, election_epoch: u64, peer_epoch: u32) -> Vote {
        Vote {
            leader,
            zxid,
            election_epoch,
            peer_epoch,
        }
    }

    fn looking(sid: ServerId, v: Vote) -> Notification {
        Notification {
            vote: v,
            state: ServerState::Looking,
            sid,
        }
    }

    fn sends(effects: &[Effect]) -> Vec<(ServerId, Notification)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { to, notification } => Some((*to, *notification)),
                _ => None,
            })
            .collect()
    }

    fn decided(effects: &[Effect]) -> Option<(ServerId, ServerState)> {
        effects.iter().find_map(|e| match e {
            Effect::Decided { leader, state, .. } => Some((*leader, *state)),
            _ => None,
        })
    }

    fn election(
        my_id: ServerId,
        voters: &[ServerId],
        observers: &[ServerId],
        zxid: i64,
        epoch: u32,
    ) -> Election {
        Election::new(
            ElectionConfig::new(my_id, voters.to_vec(), observers.to_vec()),
            zxid,
            epoch,
        )
    }

    /// A voter backing a worse leader in our round is told ours at once;
    /// one backing our leader, or a better one, is not answered by name.
    /// An observer answers a voter's looking notification never: voters
    /// answer every observer's, so any answer back would loop.
    #[test]
    fn a_worse_vote_in_our_round_is_answered_with_ours() {
        let mut el = election(3, &[1, 2, 3], &[], 0, 1);
        let mut fx = Vec::new();
        el.start(0, &mut fx);
        let ours = el.proposal();
        assert_eq!(ours.leader, 3);
        let mut fx = Vec::new();
        el.on_notification(10, looking(2, vote(2, 0, ours.election_epoch, 1)), &mut fx);
        assert_eq!(sends(&fx), vec![(2, Notification { vote: ours, state: ServerState::Looking, sid: 3 })]);
        // The sender comes round: nothing more to say to it.
        let mut fx = Vec::new();
        el.on_notification(20, looking(2, ours), &mut fx);
        assert!(sends(&fx).is_empty(), "{fx:?}");
        // An observer never answers a voter's worse vote: the voter answers
        // every observer's notification, so the two would never stop.
        let mut observer = election(4, &[1, 2, 3], &[4], 0, 1);
        observer.start(0, &mut Vec::new());
        observer.on_notification(10, looking(3, vote(3, 0, observer.proposal().election_epoch, 1)), &mut Vec::new());
        let mut fx = Vec::new();
        observer.on_notification(20, looking(2, vote(2, 0, observer.proposal().election_epoch, 1)), &mut fx);
        assert!(sends(&fx).is_empty(), "{fx:?}");
        // Nor a voter's vote from an older round (a voter does join a
        // newer round it hears of, an observer's never).
        let older = observer.proposal().election_epoch - 1;
        let mut fx = Vec::new();
        observer.on_notification(30, looking(2, vote(2, 0, older, 1)), &mut fx);
        assert!(sends(&fx).is_empty(), "{fx:?}");
    }

    #[test]
    fn total_order_predicate_rules() {
        let el = election(1, &[1, 2, 3], &[4], 0, 0);
        // Peer epoch first, even against a higher zxid and id.
        assert!(el.total_order_predicate(&vote(1, 5, 1, 2), &vote(3, make_zxid(1, 9), 1, 1)));
        assert!(!el.total_order_predicate(&vote(3, make_zxid(1, 9), 1, 1), &vote(1, 5, 1, 2)));
        // Then zxid, even against a higher id.
        assert!(el.total_order_predicate(&vote(1, 6, 1, 0), &vote(3, 5, 1, 0)));
        assert!(!el.total_order_predicate(&vote(3, 5, 1, 0), &vote(1, 6, 1, 0)));
        // Then the id.
        assert!(el.total_order_predicate(&vote(3, 5, 1, 0), &vote(2, 5, 1, 0)));
        assert!(!el.total_order_predicate(&vote(2, 5, 1, 0), &vote(3, 5, 1, 0)));
        // Equal is not better; the election epoch plays no part.
        assert!(!el.total_order_predicate(&vote(2, 5, 9, 0), &vote(2, 5, 1, 0)));
        // A vote for a non-voter never wins; any voter beats a vote for nobody.
        assert!(!el.total_order_predicate(&vote(4, i64::MAX, 1, u32::MAX), &vote(1, 0, 1, 0)));
        assert!(
            !el.total_order_predicate(&vote(NO_LEADER, i64::MAX, 1, u32::MAX), &vote(1, 0, 1, 0))
        );
        assert!(el.total_order_predicate(&vote(1, 0, 1, 0), &vote(NO_LEADER, i64::MIN, 1, 0)));
    }

    #[test]
    fn start_votes_for_self_and_broadcasts_to_voters_only() {
        let mut el = election(2, &[1, 2, 3], &[4], 77, 3);
        let mut fx = Vec::new();
        el.start(0, &mut fx);
        assert_eq!(el.logical_clock(), 1);
        let s = sends(&fx);
        assert_eq!(s.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!(s.iter().all(|(_, n)| *n == looking(2, vote(2, 77, 1, 3))));
        el.start(10, &mut fx);
        assert_eq!(el.logical_clock(), 2, "every start is a new round");

        // An observer votes for nobody but still tells the voters.
        let mut ob = election(4, &[1, 2, 3], &[4], 77, 3);
        let mut fx = Vec::new();
        ob.start(0, &mut fx);
        let s = sends(&fx);
        assert_eq!(s.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(s.iter().all(|(_, n)| n.vote.leader == NO_LEADER));
    }

    #[test]
    fn single_voter_elects_itself_after_finalize_wait() {
        let mut el = election(1, &[1], &[], 5, 1);
        let mut fx = Vec::new();
        el.start(0, &mut fx);
        assert!(el.is_finalizing());
        el.on_tick(199, &mut fx);
        assert_eq!(decided(&fx), None);
        el.on_tick(200, &mut fx);
        assert_eq!(decided(&fx), Some((1, ServerState::Leading)));
    }

    #[test]
    fn logical_clock_rules() {
        let mut el = election(1, &[1, 2, 3, 4, 5], &[], 10, 1);
        let mut fx = Vec::new();
        el.start(0, &mut fx);
        // Same round, server 2 agrees with our proposal: 2 of 5, no quorum yet.
        el.on_notification(1, looking(2, vote(1, 10, 1, 1)), &mut fx);
        assert!(!el.is_finalizing());

        // A newer round: adopt it, forget round 1's votes, re-broadcast. The
        // sender's vote (for 3, zxid 5) loses to our own (zxid 10).
        fx.clear();
        el.on_notification(2, looking(3, vote(3, 5, 7, 1)), &mut fx);
        assert_eq!(el.logical_clock(), 7);
        assert_eq!(el.proposal(), vote(1, 10, 7, 1));
        assert_eq!(sends(&fx).len(), 4);
        assert!(sends(&fx).iter().all(|(_, n)| n.vote == vote(1, 10, 7, 1)));
        // Server 2's round-1 vote no longer counts: 2 (round 7) + us is not 3.
        fx.clear();
        el.on_notification(3, looking(4, vote(1, 10, 7, 1)), &mut fx);
        assert!(!el.is_finalizing(), "a vote from the old round was kept");
        el.on_notification(4, looking(5, vote(1, 10, 7, 1)), &mut fx);
        assert!(el.is_finalizing());

        // An older round from a LOOKING peer is not counted, but the peer gets
        // our vote; from a FOLLOWING peer it gets nothing.
        let mut el = election(1, &[1, 2, 3], &[], 10, 1);
        el.on_notification(0, looking(2, vote(2, 99, 1, 1)), &mut fx);
        assert!(fx.is_empty(), "notifications before start are ignored");
        el.start(0, &mut fx);
        el.on_notification(1, looking(2, vote(3, 1, 5, 1)), &mut fx);
        fx.clear();
        el.on_notification(2, looking(3, vote(3, 99, 2, 9)), &mut fx);
        assert_eq!(sends(&fx), vec![(3, looking(1, vote(1, 10, 5, 1)))]);
        assert_eq!(
            el.proposal(),
            vote(1, 10, 5, 1),
            "an old round's vote was adopted"
        );
        assert_eq!(el.logical_clock(), 5);
        fx.clear();
        el.on_notification(
            3,
            Notification {
                vote: vote(2, 5, 2, 1),
                state: ServerState::Following,
                sid: 3,
            },
            &mut fx,
        );
        assert!(fx.is_empty());
    }

    #[test]
    fn notifications_from_non_voters_and_observers_never_count() {
        // Two voters and an observer. Voter 1 alone, even with the observer
        // (or a stranger) voting for it, is not a quorum.
        let mut el = election(1, &[1, 2], &[3], 10, 1);
        let mut fx = Vec::new();
        el.start(0, &mut fx);
        for sid in [3, 9] {
            for state in [
                ServerState::Looking,
                ServerState::Following,
                ServerState::Leading,
            ] {
                fx.clear();
                el.on_notification(
                    1,
                    Notification {
                        vote: vote(1, 10, 1, 1),
                        state,
                        sid,
                    },
                    &mut fx,
                );
                // WorkerReceiver answers a non-voter right away with the current vote.
                assert_eq!(sends(&fx).len(), 1);
                assert_eq!(sends(&fx)[0].0, sid);
                assert_eq!(sends(&fx)[0].1.state, ServerState::Looking);
                assert!(!el.is_finalizing());
            }
        }
        // A voter saying it is OBSERVING is not counted either.
        el.on_notification(
            2,
            Notification {
                vote: vote(1, 10, 1, 1),
                state: ServerState::Observing,
                sid: 2,
            },
            &mut fx,
        );
        assert!(!el.is_finalizing());
        for t in 0..100 {
            el.on_tick(t * 10_000, &mut fx);
        }
        assert_eq!(decided(&fx), None);
        // A vote for a non-voter is ignored, however good.
        el.on_notification(1, looking(2, vote(3, i64::MAX, 1, u32::MAX)), &mut fx);
        assert_eq!(el.proposal().leader, 1);
        assert!(!el.is_finalizing());
        // The real voter 2 completes the quorum.
        el.on_notification(2, looking(2, vote(1, 10, 1, 1)), &mut fx);
        assert!(el.is_finalizing());
    }

    #[test]
    fn out_of_election_needs_quorum_and_a_leader_that_leads() {
        // A late joiner (round 1) hears from an ensemble elected in round 4.
        let mut el = election(1, &[1, 2, 3, 4, 5], &[], 100, 9);
        let mut fx = Vec::new();
        el.start(0, &mut fx);
        let v = vote(5, 50, 4, 2);
        let following = |sid| Notification {
            vote: v,
            state: ServerState::Following,
            sid,
        };
        for sid in [2, 3, 4] {
            el.on_notification(sid as i64, following(sid), &mut fx);
        }
        // A quorum follows 5, but 5 has not said it leads: keep looking.
        assert_eq!(decided(&fx), None);
        assert!(el.is_looking());
        // Same leader and peer epoch is enough for settled votes (zxid and
        // round may differ); the leader says it leads.
        let leading = Notification {
            vote: vote(5, 77, 3, 2),
            state: ServerState::Leading,
            sid: 5,
        };
        el.on_notification(10, leading, &mut fx);
        assert_eq!(
            decided(&fx),
            Some((5, ServerState::Following)),
            "joins although its zxid is higher"
        );
        assert_eq!(el.decision().unwrap().vote, leading.vote);
        assert!(el.logical_clock() >= 3);

        // Followers of different peer epochs do not agree.
        let mut el = election(1, &[1, 2, 3], &[], 100, 9);
        el.start(0, &mut fx);
        fx.clear();
        el.on_notification(
            1,
            Notification {
                vote: vote(3, 5, 4, 1),
                state: ServerState::Following,
                sid: 2,
            },
            &mut fx,
        );
        el.on_notification(
            2,
            Notification {
                vote: vote(3, 5, 4, 2),
                state: ServerState::Leading,
                sid: 3,
            },
            &mut fx,
        );
        assert_eq!(decided(&fx), None);
        el.on_notification(
            3,
            Notification {
                vote: vote(3, 5, 4, 2),
                state: ServerState::Following,
                sid: 2,
            },
            &mut fx,
        );
        assert_eq!(decided(&fx), Some((3, ServerState::Following)));
    }

    #[test]
    fn settled_votes_of_our_round_count_with_looking_ones() {
        // Same round: LOOKING votes equal in every field count toward a
        // settled vote, but the quorum is still needed.
        let mut el = election(1, &[1, 2, 3, 4, 5], &[], 100, 2);
        let mut fx = Vec::new();
        el.start(0, &mut fx);
        let v = vote(5, 50, 1, 2);
        el.on_notification(1, looking(2, v), &mut fx);
        assert_eq!(el.proposal().leader, 1, "a worse vote was adopted");
        el.on_notification(
            2,
            Notification {
                vote: v,
                state: ServerState::Leading,
                sid: 5,
            },
            &mut fx,
        );
        assert_eq!(decided(&fx), None, "decided on the leader's word alone");
        // 2 (LOOKING), 5 (LEADING), 3 (FOLLOWING): a quorum of our round; the
        // out-of-election set alone ({5, 3}) would not be.
        el.on_notification(
            3,
            Notification {
                vote: v,
                state: ServerState::Following,
                sid: 3,
            },
            &mut fx,
        );
        assert_eq!(decided(&fx), Some((5, ServerState::Following)));
        assert_eq!(el.logical_clock(), 1);
    }

    #[test]
    fn reply_when_settled_answers_looking_voters_and_all_non_voters() {
        let mut el = election(2, &[1, 2, 3], &[4], 10, 1);
        let mut fx = Vec::new();
        el.start(0, &mut fx);
        let cur = vote(3, 40, 1, 2);
        let r = el.reply_when_settled(ServerState::Following, &cur, &looking(1, vote(1, 1, 1, 0)));
        let want = Notification {
            vote: cur,
            state: ServerState::Following,
            sid: 2,
        };
        assert_eq!(
            r,
            Some(Effect::Send {
                to: 1,
                notification: want
            })
        );
        let settled = Notification {
            vote: cur,
            state: ServerState::Following,
            sid: 1,
        };
        assert_eq!(
            el.reply_when_settled(ServerState::Following, &cur, &settled),
            None
        );
        assert_eq!(
            el.reply_when_settled(ServerState::Looking, &cur, &looking(1, cur)),
            None
        );
        // An observer always gets the current vote, stamped with our clock.
        let r = el.reply_when_settled(
            ServerState::Leading,
            &cur,
            &Notification { sid: 4, ..settled },
        );
        let want = Notification {
            vote: Vote {
                election_epoch: 1,
                ..cur
            },
            state: ServerState::Leading,
            sid: 2,
        };
        assert_eq!(
            r,
            Some(Effect::Send {
                to: 4,
                notification: want
            })
        );
    }

    // ---- timers ------------------------------------------------------------

    #[test]
    fn notification_timeout_backs_off_doubling_up_to_the_cap() {
        let mut el = election(1, &[1, 2, 3], &[], 10, 1);
        el.config.max_notification_interval_ms = 2_000;
        let mut fx = Vec::new();
        el.start(0, &mut fx);
        assert_eq!(el.notification_timeout_ms(), 200);
        let mut resends = Vec::new();
        let mut timeouts = Vec::new();
        for t in 0..=12_000 {
            fx.clear();
            el.on_tick(t, &mut fx);
            if !fx.is_empty() {
                assert_eq!(sends(&fx).len(), 2);
                assert!(sends(&fx).iter().all(|(_, n)| n.vote == vote(1, 10, 1, 1)));
                resends.push(t);
                timeouts.push(el.notification_timeout_ms());
            }
        }
        assert_eq!(
            resends,
            vec![200, 600, 1_400, 3_000, 5_000, 7_000, 9_000, 11_000]
        );
        assert_eq!(
            timeouts,
            vec![400, 800, 1_600, 2_000, 2_000, 2_000, 2_000, 2_000]
        );
        // Any notification from a voter restarts the wait (the poll returned),
        // but the interval does not shrink.
        el.on_notification(11_500, looking(2, vote(2, 1, 1, 1)), &mut fx);
        fx.clear();
        el.on_tick(13_000, &mut fx);
        assert!(fx.is_empty());
        el.on_tick(13_500, &mut fx);
        assert_eq!(sends(&fx).len(), 2);
        assert_eq!(el.notification_timeout_ms(), 2_000);
        // A new election starts from the minimum again.
        el.start(20_000, &mut fx);
        assert_eq!(el.notification_timeout_ms(), 200);
    }

    #[test]
    fn finalize_wait_lets_a_better_vote_change_the_outcome() {
        // Without the late vote: 1 adopts 2's vote, quorum {1, 2}, and
        // finalizeWait later decides 2.
        let start = |fx: &mut Vec<Effect>| {
            let mut el = election(1, &[1, 2, 3], &[], 5, 1);
            el.start(0, fx);
            el.on_notification(10, looking(2, vote(2, 10, 1, 1)), fx);
            assert!(el.is_finalizing());
            assert_eq!(el.next_wakeup_ms(), Some(210));
            el
        };
        let mut fx = Vec::new();
        let mut el = start(&mut fx);
        el.on_tick(209, &mut fx);
        assert_eq!(decided(&fx), None);
        el.on_tick(210, &mut fx);
        assert_eq!(decided(&fx), Some((2, ServerState::Following)));
        // After the decision a better vote changes nothing.
        fx.clear();
        el.on_notification(300, looking(3, vote(3, 20, 1, 1)), &mut fx);
        el.on_tick(10_000, &mut fx);
        assert!(fx.is_empty());
        assert_eq!(el.decision().unwrap().leader, 2);

        // A vote that is not better is consumed and restarts the wait
        // (ZooKeeper polls finalizeWait afresh) without changing the outcome.
        let mut fx = Vec::new();
        let mut el = start(&mut fx);
        el.on_notification(150, looking(3, vote(3, 1, 1, 1)), &mut fx);
        assert!(el.is_finalizing());
        el.on_tick(300, &mut fx);
        assert_eq!(decided(&fx), None);
        el.on_tick(350, &mut fx);
        assert_eq!(decided(&fx), Some((2, ServerState::Following)));

        // A better vote inside finalize_wait: put back, adopted, broadcast, and
        // the election goes on to elect 3.
        let mut fx = Vec::new();
        let mut el = start(&mut fx);
        fx.clear();
        el.on_notification(150, looking(3, vote(3, 20, 1, 1)), &mut fx);
        assert_eq!(el.proposal().leader, 3);
        assert_eq!(sends(&fx).len(), 2);
        // {1, 3} now vote 3: a new finalize wait from 150.
        assert!(el.is_finalizing());
        el.on_tick(349, &mut fx);
        assert_eq!(decided(&fx), None);
        el.on_tick(350, &mut fx);
        assert_eq!(decided(&fx), Some((3, ServerState::Following)));
    }

    #[test]
    fn finalize_wait_over_the_network() {
        // Server 3 (the best) is slow. Within finalize_wait its vote still
        // wins; far beyond it, 1 and 2 settle on 2 and 3 joins them.
        let voters = [(1, 5, 1), (2, 5, 1), (3, 5, 1)];
        for seed in 0..50 {
            let mut sim = Sim::new(seed, &voters, &[]);
            sim.delay = (1, 10);
            sim.slow.insert(3, 60);
            assert!(sim.run_until(60_000, Sim::all_decided), "seed {seed}");
            assert_eq!(sim.settled_leader(), Some(3), "seed {seed}");

            let mut sim = Sim::new(seed, &voters, &[]);
            sim.delay = (1, 10);
            sim.slow.insert(3, 1_000);
            assert!(sim.run_until(60_000, Sim::all_decided), "seed {seed}");
            assert_eq!(sim.settled_leader(), Some(2), "seed {seed}");
            let joined = sim.node(3).decisions[0].1;
            assert_eq!(
                (joined.leader, joined.state),
                (2, ServerState::Following),
                "seed {seed}"
            );
        }
    }

    // ---- whole elections ---------------------------------------------------

    #[test]
    fn three_voters_elect_the_max_for_200_seeds() {
        for seed in 0..200 {
            let mut rng = Rng::new(seed ^ 0x3333);
            let voters = random_servers(&mut rng, 3);
            check_elects_max(seed, &voters, &[], 20);
        }
    }

    #[test]
    fn five_voters_elect_the_max_for_200_seeds() {
        for seed in 0..200 {
            let mut rng = Rng::new(seed ^ 0x5555);
            let voters = random_servers(&mut rng, 5);
            check_elects_max(seed, &voters, &[], 20);
        }
    }

    #[test]
    fn equal_zxids_highest_id_wins() {
        for seed in 0..100 {
            check_elects_max(seed, &[(1, 42, 2), (2, 42, 2), (3, 42, 2)], &[], 20);
            check_elects_max(
                seed,
                &[(4, 42, 2), (9, 42, 2), (2, 42, 2), (7, 42, 2), (5, 42, 2)],
                &[],
                20,
            );
            let sim_leader = {
                let mut sim = Sim::new(seed, &[(1, 42, 2), (2, 42, 2), (3, 42, 2)], &[]);
                sim.run_until(60_000, Sim::all_decided);
                sim.settled_leader()
            };
            assert_eq!(sim_leader, Some(3), "seed {seed}");
        }
    }

    #[test]
    fn late_server_joins_the_established_leader() {
        for seed in 0..100 {
            // 3 has the highest id (and, in the second case, zxid) but starts
            // after 1 and 2 elected 2.
            // Its logical clock is behind, equal to or ahead of theirs.
            for (late_zxid, their_rounds, my_rounds) in [(7, 0, 0), (8, 0, 0), (7, 3, 0), (8, 0, 3)]
            {
                let voters = [(1, 7, 1), (2, 7, 1), (3, late_zxid, 1)];
                let mut sim = Sim::new(seed, &voters, &[]);
                sim.nodes.get_mut(&3).unwrap().start_at = Some(5_000);
                for (id, rounds) in [(1, their_rounds), (2, their_rounds), (3, my_rounds)] {
                    for _ in 0..rounds {
                        sim.nodes.get_mut(&id).unwrap().el.start(0, &mut Vec::new());
                    }
                }
                assert!(sim.run_until(60_000, Sim::all_decided), "seed {seed}");
                assert_eq!(sim.settled_leader(), Some(2), "seed {seed}");
                let d3 = sim.node(3).decisions[0];
                assert_eq!(
                    (d3.1.leader, d3.1.state),
                    (2, ServerState::Following),
                    "seed {seed}"
                );
                assert!(d3.0 >= 5_000);
                for id in [1, 2] {
                    assert_eq!(
                        sim.node(id).decisions.len(),
                        1,
                        "seed {seed}: {id} re-elected"
                    );
                    assert!(sim.node(id).decisions[0].0 < 5_000);
                }
            }
        }
    }

    #[test]
    fn observer_learns_the_leader_and_never_counts() {
        for seed in 0..100 {
            // All up: the voters elect 2, the observer observes 2.
            check_elects_max(seed, &[(1, 9, 1), (2, 3, 1)], &[3], 20);
            check_elects_max(seed, &[(1, 9, 1), (2, 3, 1), (4, 3, 2)], &[3, 5], 20);

            // Voter 2 down: voter 1 plus the observer cannot elect.
            let mut sim = Sim::new(seed, &[(1, 9, 1), (2, 3, 1)], &[3]);
            sim.nodes.get_mut(&2).unwrap().start_at = None;
            sim.run_until(3_600_000, Sim::any_decided);
            assert!(
                !sim.any_decided(),
                "seed {seed}: decided without a quorum of voters"
            );
            assert!(sim.node(3).el.is_looking() && sim.node(1).el.is_looking());

            // An observer that starts late joins too.
            let mut sim = Sim::new(seed, &[(1, 9, 1), (2, 3, 1), (4, 3, 2)], &[3]);
            sim.nodes.get_mut(&3).unwrap().start_at = Some(2_000);
            assert!(sim.run_until(600_000, Sim::all_decided), "seed {seed}");
            assert_eq!(sim.settled_leader(), Some(4), "seed {seed}");
            let d = sim.node(3).decisions[0].1;
            assert_eq!(
                (d.leader, d.state),
                (4, ServerState::Observing),
                "seed {seed}"
            );
            assert!(sim.node(3).decisions[0].0 >= 2_000);
        }
    }

    #[test]
    fn message_loss_is_survived_by_retransmission() {
        for seed in 0..100 {
            let mut rng = Rng::new(seed ^ 0x1055);
            let voters = random_servers(&mut rng, 5);
            let mut sim = Sim::new(seed, &voters, &[6]);
            sim.loss_pct = 30;
            sim.supervise_ms = Some(10_000);
            let ok = sim.run_until(24 * 3_600_000, |s| s.settled_leader().is_some());
            assert!(ok, "seed {seed}: no stable leader under loss");
            // Without retransmission nothing would have been sent after the
            // first round of broadcasts and answers.
            assert!(sim.sends.iter().any(|&(t, _, _)| t >= 200), "seed {seed}");
        }
        // With every notification of the first 1.5 s lost, only the re-sends
        // on timeout elect; they come 200, 400, 800 ms apart.
        for seed in 0..50 {
            let voters = [(1, 5, 1), (2, 6, 1), (3, 7, 1)];
            let mut sim = Sim::new(seed, &voters, &[]);
            sim.loss_pct = 100;
            sim.run_until(1_500, |_| false);
            assert!(!sim.any_decided());
            let from1: Vec<i64> = sim
                .sends
                .iter()
                .filter(|s| s.1 == 1 && s.2 == 2)
                .map(|s| s.0)
                .collect();
            assert_eq!(from1, vec![0, 200, 600, 1_400], "seed {seed}");
            sim.loss_pct = 0;
            assert!(sim.run_until(60_000, Sim::all_decided), "seed {seed}");
            assert_eq!(sim.settled_leader(), Some(3), "seed {seed}");
        }
    }

    #[test]
    fn a_minority_never_decides() {
        for seed in 0..50 {
            // 1 of 3 up.
            let mut sim = Sim::new(seed, &[(1, 9, 1), (2, 3, 1), (3, 3, 1)], &[]);
            sim.nodes.get_mut(&2).unwrap().start_at = None;
            sim.nodes.get_mut(&3).unwrap().start_at = None;
            sim.run_until(3_600_000, Sim::any_decided);
            assert!(!sim.any_decided(), "seed {seed}");
            // It kept re-sending, with the interval capped at 60 s.
            let gaps: Vec<i64> = sim
                .sends
                .iter()
                .filter(|s| s.2 == 2)
                .map(|s| s.0)
                .collect::<Vec<_>>()
                .windows(2)
                .map(|w| w[1] - w[0])
                .collect();
            assert_eq!(gaps[..4], [200, 400, 800, 1_600]);
            assert_eq!(*gaps.iter().max().unwrap(), 60_000);

            // 1 partitioned from a working majority: 2 and 3 elect, 1 never
            // decides.
            let mut sim = Sim::new(seed, &[(1, 9, 1), (2, 3, 1), (3, 3, 1)], &[]);
            for other in [2, 3] {
                sim.cut.insert((1, other));
                sim.cut.insert((other, 1));
            }
            sim.run_until(3_600_000, |_| false);
            assert!(sim.node(1).decisions.is_empty(), "seed {seed}");
            assert_eq!(sim.node(3).state, ServerState::Leading, "seed {seed}");
            assert_eq!(sim.node(2).state, ServerState::Following, "seed {seed}");

            // 2 of 5 up.
            let mut sim = Sim::new(
                seed,
                &[(1, 9, 1), (2, 3, 1), (3, 3, 1), (4, 1, 1), (5, 1, 1)],
                &[],
            );
            for id in [3, 4, 5] {
                sim.nodes.get_mut(&id).unwrap().start_at = None;
            }
            sim.run_until(3_600_000, Sim::any_decided);
            assert!(!sim.any_decided(), "seed {seed}");
        }
    }
}
