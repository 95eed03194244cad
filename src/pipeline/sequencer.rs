//! The sequencer: the one place in a process that orders writes. It owns the
//! SessionTracker and the Prep stage, assigns zxids, expires sessions and
//! removes empty containers and expired TTL nodes. Each txn leaves as
//! `Effect::Append`: the runtime logs it (issue: durability) and only then
//! hands it to the shards, together with the `Deliver` effects behind it,
//! strictly in order. Standalone is an ensemble of one: the leader's own
//! persisted append is its quorum.

use std::sync::Arc;

use super::latest::LatestTree;
use super::prep::{Prep, PrepConfig};
use super::{Committed, Now, ToSequencer};
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
    /// Elapsed-clock time of the last container check.
    container_check_last_ms: i64,
    txns_since_snapshot: u64,
    /// snapCount/2 plus a random part, as ZooKeeper's SyncRequestProcessor
    /// picks it, so servers do not all snapshot at once.
    snapshot_threshold: u64,
    rng: Rng,
    /// Set once the log failed: no write is accepted any more.
    writes_failed: bool,
}

/// What a sequencer needs of a committed tree: Prep's latest state and the
/// live sessions. A fraction of the tree, and `Send`: standalone start-up
/// builds it where the tree was recovered, so core 0 never holds a copy of
/// the whole tree.
pub struct StartState {
    latest: LatestTree,
    /// Live sessions and their timeouts.
    sessions: Vec<(i64, i32)>,
}

impl StartState {
    pub fn of(tree: &DataTree) -> StartState {
        let sessions = tree.sessions().iter().map(|(&id, &timeout)| (id, timeout)).collect();
        StartState { latest: LatestTree::from_tree(tree), sessions }
    }

    /// The zxid of the tree it was taken from.
    pub fn zxid(&self) -> i64 {
        self.latest.last_processed_zxid()
    }
}

impl Sequencer {
    /// A sequencer continuing from the committed state `tree`.
    pub fn new(tree: &DataTree, config: SequencerConfig, now: Now) -> Sequencer {
        Sequencer::start(StartState::of(tree), config, now)
    }

    /// A sequencer continuing from the committed state `start` was taken from.
    pub fn start(start: StartState, config: SequencerConfig, now: Now) -> Sequencer {
        // Session ids are seeded from the wall clock, which (unlike the
        // elapsed clock) goes on across restarts, so that a restarted server
        // does not hand out its earlier ids again.
        let mut sessions = SessionTracker::new(config.tick_ms, config.server_id, now.wall_ms, config.password_secret);
        // Sessions recovered from disk get their full timeout again from now.
        for (session_id, timeout_ms) in start.sessions {
            sessions.track(session_id, timeout_ms, now.elapsed_ms);
        }
        let prep = Prep::from_latest(start.latest, PrepConfig { extended_types_enabled: config.extended_types_enabled });
        let rng = Rng::new(config.random_seed);
        let mut sequencer = Sequencer {
            prep,
            sessions,
            config,
            container_check_last_ms: now.elapsed_ms,
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

    /// Live sessions with the time their expiry bucket closes, for `dump`:
    /// buckets are on the elapsed clock, shown on the wall clock as read `now`.
    pub fn session_expiries(&self, now: Now) -> Vec<(i64, i64)> {
        let wall_minus_elapsed = now.wall_ms - now.elapsed_ms;
        self.sessions.expiries().into_iter().map(|(session_id, at)| (session_id, at + wall_minus_elapsed)).collect()
    }

    pub fn tree(&self) -> &super::latest::LatestTree {
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

    /// Sessions are touched on `now`'s elapsed clock; the txn is stamped with
    /// its wall clock.
    pub fn step(&mut self, now: Now, input: ToSequencer, effects: &mut Vec<Effect>) {
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
                let live = self.sessions.touch(session_id, now.elapsed_ms);
                if let Request::CloseSession = request {
                    self.sessions.set_closing(session_id);
                }
                let txn = self.prep.prep(now.wall_ms, session_id, origin.xid, &request, &auth, live);
                if let TxnBody::CloseSession = txn.body {
                    self.sessions.remove(session_id);
                }
                self.append(txn, Some(origin), effects);
            }
            ToSequencer::Sync { origin, path } => {
                effects.push(Effect::Deliver(Committed::SyncDone { origin, path }));
            }
            ToSequencer::CreateSession { origin, timeout_ms } => {
                let session_id = self.sessions.create(timeout_ms, now.elapsed_ms);
                let txn = self.prep.create_session(session_id, timeout_ms, now.wall_ms);
                self.append(txn, Some(origin), effects);
            }
            ToSequencer::Revalidate { origin, session_id, timeout_ms } => {
                // ZooKeeper's revalidateSession: touch with the new timeout.
                let valid = self.sessions.get(session_id).is_some_and(|state| !state.closing);
                if valid {
                    self.sessions.track(session_id, timeout_ms, now.elapsed_ms);
                }
                effects.push(Effect::Deliver(Committed::Revalidated { origin, session_id, timeout_ms, valid }));
            }
            ToSequencer::Touch { session_ids } => {
                for session_id in session_ids {
                    self.sessions.touch(session_id, now.elapsed_ms);
                }
            }
        }
    }

    /// Periodic work: expire sessions, then remove empty containers and expired TTL nodes.
    /// Expiry and the check interval follow the elapsed clock; a TTL node's
    /// age is the wall clock minus its mtime, as ZooKeeper's ContainerManager
    /// computes it (mtime is a wall-clock time).
    pub fn tick(&mut self, now: Now, effects: &mut Vec<Effect>) {
        if self.writes_failed {
            return;
        }
        for session_id in self.sessions.expire(now.elapsed_ms) {
            tracing::info!(session = format_args!("{session_id:#x}"), "session expired");
            let txn = self.prep.close_session(session_id, 0, now.wall_ms);
            self.sessions.remove(session_id);
            self.append(txn, None, effects);
        }
        if now.elapsed_ms - self.container_check_last_ms >= self.config.container_check_interval_ms {
            self.container_check_last_ms = now.elapsed_ms;
            let candidates =
                self.prep.tree().container_candidates(now.wall_ms, self.config.container_deletes_per_check_max);
            for path in candidates {
                let txn = self.prep.delete_container(&path, now.wall_ms);
                self.append(txn, None, effects);
            }
        }
    }

    pub fn password(&self, session_id: i64) -> [u8; 16] {
        self.sessions.password(session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Origin;
    use crate::proto::{op, CreateRequest, CreateTtlRequest, SetDataRequest};

    const TICK_MS: i64 = 2_000;
    const TIMEOUT_MS: i32 = 4_000;
    const CONTAINER_CHECK_INTERVAL_MS: i64 = 60_000;
    /// A wall-clock reading, far from every elapsed-clock reading used here.
    const WALL_MS: i64 = 1_700_000_000_000;
    const HOUR_MS: i64 = 3_600_000;
    const DAY_MS: i64 = 24 * HOUR_MS;

    fn now(elapsed_ms: i64, wall_ms: i64) -> Now {
        Now { elapsed_ms, wall_ms }
    }

    fn sequencer(at: Now) -> Sequencer {
        let config = SequencerConfig {
            tick_ms: TICK_MS,
            extended_types_enabled: true,
            server_id: 1,
            password_secret: 7,
            container_check_interval_ms: CONTAINER_CHECK_INTERVAL_MS,
            container_deletes_per_check_max: 100,
            snap_count: 100_000,
            random_seed: 1,
        };
        Sequencer::new(&DataTree::new(), config, at)
    }

    fn origin(opcode: i32) -> Origin {
        Origin { server: 1, connection: 1, xid: 1, opcode }
    }

    /// Steps `input` at `at`; the one txn it appends.
    fn step(sequencer: &mut Sequencer, at: Now, input: ToSequencer) -> Arc<Txn> {
        let mut effects = Vec::new();
        sequencer.step(at, input, &mut effects);
        match effects.as_slice() {
            [Effect::Append(Committed::Txn { txn, .. })] => txn.clone(),
            other => panic!("expected one txn, got {other:?}"),
        }
    }

    fn create_session(sequencer: &mut Sequencer, at: Now) -> i64 {
        step(sequencer, at, ToSequencer::CreateSession { origin: origin(op::CREATE_SESSION), timeout_ms: TIMEOUT_MS }).session_id
    }

    fn write(session_id: i64, request: Request) -> ToSequencer {
        ToSequencer::Write { origin: origin(request.opcode()), session_id, request, auth: Arc::from([]) }
    }

    fn touch(sequencer: &mut Sequencer, at: Now, session_id: i64) {
        let mut effects = Vec::new();
        sequencer.step(at, ToSequencer::Touch { session_ids: vec![session_id] }, &mut effects);
        assert!(effects.is_empty());
    }

    /// What a tick at `at` does: the sessions it expires with their
    /// closeSession's time, and the nodes it deletes.
    fn tick(sequencer: &mut Sequencer, at: Now) -> (Vec<(i64, i64)>, Vec<String>) {
        let mut effects = Vec::new();
        sequencer.tick(at, &mut effects);
        let (mut expired, mut deleted) = (Vec::new(), Vec::new());
        for effect in effects {
            let Effect::Append(Committed::Txn { txn, origin: None }) = effect else { continue };
            match &txn.body {
                TxnBody::CloseSession => expired.push((txn.session_id, txn.time_ms)),
                TxnBody::Delete { path } => deleted.push(path.clone()),
                other => panic!("unexpected txn from a tick: {other:?}"),
            }
        }
        (expired, deleted)
    }

    #[test]
    fn a_backward_wall_step_does_not_delay_expiry() {
        let mut sequencer = sequencer(now(10_000, WALL_MS));
        let session = create_session(&mut sequencer, now(10_000, WALL_MS));
        touch(&mut sequencer, now(11_000, WALL_MS + 1_000), session);
        // Its client falls silent; then NTP steps the wall clock back an hour.
        // The session's time runs out 4 s (rounded up to a tick) after the
        // last touch on the elapsed clock: at 16 000. On the wall clock it
        // would only run out an hour later.
        assert_eq!(tick(&mut sequencer, now(15_999, WALL_MS + 5_999 - HOUR_MS)).0, vec![]);
        let closed_at_wall = WALL_MS + 6_000 - HOUR_MS;
        assert_eq!(tick(&mut sequencer, now(16_000, closed_at_wall)).0, vec![(session, closed_at_wall)]);
        assert_eq!(sequencer.session_count(), 0);
    }

    #[test]
    fn a_forward_wall_step_does_not_expire_a_session_early() {
        let mut sequencer = sequencer(now(10_000, WALL_MS));
        let session = create_session(&mut sequencer, now(10_000, WALL_MS));
        // A day forward: on the wall clock the session would be long dead.
        assert_eq!(tick(&mut sequencer, now(11_000, WALL_MS + 1_000 + DAY_MS)).0, vec![]);
        touch(&mut sequencer, now(12_000, WALL_MS + 2_000 + DAY_MS), session);
        assert_eq!(tick(&mut sequencer, now(17_999, WALL_MS + 7_999 + DAY_MS)).0, vec![]);
        assert_eq!(tick(&mut sequencer, now(18_000, WALL_MS + 8_000 + DAY_MS)).0, vec![(session, WALL_MS + 8_000 + DAY_MS)]);
    }

    #[test]
    fn txn_times_and_znode_times_follow_the_wall_clock_even_backwards() {
        let mut sequencer = sequencer(now(10_000, WALL_MS));
        let session = create_session(&mut sequencer, now(10_000, WALL_MS));
        let create = CreateRequest { path: "/a".into(), data: None, acl: crate::tree::open_acl_unsafe(), flags: 0 };
        let request = Request::Create { opcode: op::CREATE, request: create };
        let txn = step(&mut sequencer, now(10_500, WALL_MS + 500), write(session, request));
        assert_eq!(txn.time_ms, WALL_MS + 500);
        // NTP steps the wall clock back an hour: the next change's mtime is
        // earlier than the node's ctime, as in ZooKeeper.
        let request = Request::SetData(SetDataRequest { path: "/a".into(), data: None, version: -1 });
        let stepped_back = WALL_MS + 1_000 - HOUR_MS;
        let txn = step(&mut sequencer, now(11_000, stepped_back), write(session, request));
        assert_eq!(txn.time_ms, stepped_back);
        assert_eq!(sequencer.tree().get("/a").expect("created").mtime, stepped_back);
    }

    #[test]
    fn session_ids_are_seeded_from_the_wall_clock() {
        // ZooKeeper's initializeNextSessionId: server id in the top byte, the
        // wall clock's ms below it, so a restart (whose elapsed clock starts
        // over) does not hand out the ids of the run before.
        for elapsed_ms in [0, 10_000] {
            let at = now(elapsed_ms, WALL_MS);
            let session = create_session(&mut sequencer(at), at);
            assert_eq!(session, ((WALL_MS << 24) as u64 >> 8) as i64 | (1 << 56));
        }
    }

    #[test]
    fn ttl_age_is_on_the_wall_clock_and_the_check_interval_on_the_elapsed_clock() {
        let mut sequencer = sequencer(now(10_000, WALL_MS));
        let session = create_session(&mut sequencer, now(10_000, WALL_MS));
        let create = CreateTtlRequest { path: "/t".into(), data: None, acl: crate::tree::open_acl_unsafe(), flags: 5, ttl: 1_000 };
        step(&mut sequencer, now(10_000, WALL_MS), write(session, Request::CreateTtl(create)));
        // A minute passed on the elapsed clock but only 500 ms on the wall
        // clock since its mtime: not expired (ContainerManager compares the
        // wall clock with mtime).
        assert_eq!(tick(&mut sequencer, now(70_000, WALL_MS + 500)).1, Vec::<String>::new());
        // The wall clock steps an hour forward: the node's TTL has passed,
        // but the next check is a minute of elapsed time after the last.
        assert_eq!(tick(&mut sequencer, now(70_001, WALL_MS + HOUR_MS)).1, Vec::<String>::new());
        assert_eq!(tick(&mut sequencer, now(130_000, WALL_MS + HOUR_MS)).1, vec!["/t".to_string()]);
    }
}
