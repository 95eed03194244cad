//! One simulated server: the real core (the ZAB `Peer`, the leader's
//! `Sequencer`, a `Shard` with its replica of the tree and its watches) glued
//! the way `runtime::ensemble` and `runtime::connection` glue them, over a
//! simulated disk. Everything here is synchronous: what the runtime would do
//! with sockets, files and timers comes back as `Out` for the simulator to
//! schedule.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::pipeline::sequencer::Effect as SequencerEffect;
use crate::pipeline::{Committed, ConnectionId, Entry, Now, Origin, Sequencer, SequencerConfig, Shard, ShardConfig, ShardOutput, ToSequencer};
use crate::proto::{op, ConnectRequest, ErrorCode, Request};
use crate::tree::DataTree;
use crate::zab::election::{Notification, ServerState};
use crate::zab::peer::{Effect, Msg, Peer, PeerConfig};
use crate::zab::{make_zxid, ServerId};

pub type PeerMsg = Msg<Entry, Committed>;
type PeerEffect = Effect<Entry, Committed>;

/// A quorum link, named by the simulator.
pub type LinkId = u64;

/// What travels on a quorum link.
#[derive(Debug, Clone)]
pub enum Wire {
    Peer(PeerMsg),
    /// A learner's client request for the leader's sequencer.
    Forward(Arc<ForwardedRequest>),
    /// A SNAP: the leader's committed tree (the runtime streams its bytes).
    Snap { zxid: i64, tree: Arc<DataTree> },
}

/// `ToSequencer` is not `Clone`; a forwarded request is taken once.
#[derive(Debug)]
pub struct ForwardedRequest(pub std::cell::RefCell<Option<ToSequencer>>);

/// A client's message on its connection.
#[derive(Debug, Clone)]
pub enum ClientMsg {
    Connect(ConnectRequest),
    Request { xid: i32, request: Request },
}

/// What the simulator must carry out for a server.
#[derive(Debug)]
pub enum Out {
    Notify { to: ServerId, notification: Notification },
    /// Open a quorum link to the leader.
    Connect { leader: ServerId },
    Send { link: LinkId, wire: Wire },
    CloseLink { link: LinkId },
    /// Start a flush of the pending log appends (one fsync).
    Flush,
    /// An epoch file was written durably; report back later.
    EpochWritten { accepted: bool },
    ToClient { connection: ConnectionId, frame: Bytes },
    CloseClient { connection: ConnectionId },
    /// A txn was appended to the log after `prev`, the last txn of the
    /// server's history (committed or not: a log's txns reach trees by
    /// recovery and snapshots too, not only by delivery).
    Logged { prev: i64, txn: Arc<crate::txn::Txn> },
    /// A txn was delivered (applied in commit order) at `zxid`, after
    /// `prev`; `digest` is the tree's after it.
    Delivered { zxid: i64, prev: i64, digest: u64, txn: Arc<crate::txn::Txn> },
    /// This server now serves in `state` for `epoch`.
    Serving { state: ServerState, epoch: u32 },
    /// The peer decided to rebuild: it went back to LOOKING.
    Looking { reason: String },
    /// This server's sequencer (it leads) expired a session: it proposes
    /// the closeSession.
    SessionExpired { session_id: i64 },
    /// The simulated core broke a rule the runtime would crash on.
    Fatal(String),
    /// Recovery refused the disk: the process stops (a fatal storage error,
    /// naming the damaged record) and stays down until an operator acts.
    Refused(String),
    /// Recovery went on past damage, with this warning (a torn tail cut, an
    /// invalid snapshot skipped).
    RecoveryWarning { kind: &'static str, text: String },
}

/// The simulated disk, laid out as `runtime::durability` lays out files: the
/// newest snapshot (`base`: the empty tree, or a SNAP received) and older
/// ones, the durable log (a SNAP cuts it above the snapshot and keeps what is
/// below), appends not yet fsynced, and the epoch files.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    pub base: Arc<DataTree>,
    pub older: Vec<Arc<DataTree>>,
    /// A SNAP received but not yet durable: the peer's contract only asks
    /// for it by the next `SyncLog` (the NEWLEADER sync); a crash before
    /// that loses it.
    pub pending_install: Option<Arc<DataTree>>,
    pub log: Vec<(i64, Entry)>,
    pub pending: Vec<(i64, Entry)>,
    pub sync_markers: usize,
    pub accepted_epoch: u32,
    pub current_epoch: u32,
    pub flushing: bool,
    /// Log records (by zxid) whose bytes on disk are damaged: a torn write
    /// (the last un-fsynced append that a crash left half written) or a
    /// corrupted record. The entry itself stays in `log` so that the
    /// checkers see what was written; `load` decides what recovery makes
    /// of it, by its position, as `storage::recovery` does.
    pub damaged: BTreeSet<i64>,
    /// The newest snapshot (`base`) fails validation.
    pub snapshot_damaged: bool,
}

/// What recovery found on a disk (`Disk::load`).
#[derive(Debug)]
pub struct Loaded {
    pub tree: DataTree,
    /// The snapshot recovery started from, when it is not `base` (an invalid
    /// newest snapshot was skipped): an index into `older`.
    pub fell_back_to: Option<usize>,
    /// A damaged last record with no record after it: a torn write, cut.
    pub torn_tail: Option<i64>,
    /// Damaged records recovery skipped (only with `ignore_corruption`).
    pub skipped: Vec<i64>,
}

/// Whether `zxid` may follow `previous` in a log (`storage::recovery::
/// follows`), where each new epoch's counter starts after `counter_start`
/// (`PeerConfig::epoch_counter_start`, 0 outside the ZOOKEEPER-1277 runs).
fn follows(previous: i64, zxid: i64, counter_start: u32) -> bool {
    let (epoch, counter) = ((zxid as u64) >> 32, zxid as u64 as u32);
    zxid == previous + 1 || (epoch > (previous as u64) >> 32 && counter == counter_start.wrapping_add(1))
}

/// Passes one flush's appends through the runtime's log format (batches of
/// `storage::log::BatchEncoder`, sealed when full, as `runtime::ensemble`
/// writes them) and reads them back: the model keeps entries, but what the
/// runtime would write of them must encode and decode to the same txns. A
/// flush may cross an epoch boundary (a DIFF's old and new epochs).
fn encode_as_the_runtime_logs(flushed: &[(i64, Entry)]) {
    use crate::storage::log::{encode_segment_header, scan_segment, BatchEncoder};
    let Some((first, _)) = flushed.first() else { return };
    let mut segment = encode_segment_header(*first);
    let mut encoder = BatchEncoder::new();
    for (_, entry) in flushed {
        encoder.push(&entry.txn);
        if encoder.is_full() {
            segment.extend_from_slice(encoder.finish());
            encoder.clear();
        }
    }
    if !encoder.is_empty() {
        segment.extend_from_slice(encoder.finish());
    }
    let scan = scan_segment(&bytes::Bytes::from(segment)).expect("a segment the runtime would write");
    assert_eq!(scan.txns.len(), flushed.len(), "records read back from one flush");
    for (logged, (zxid, entry)) in scan.txns.iter().zip(flushed) {
        assert_eq!((logged.txn.zxid, &logged.txn), (*zxid, &*entry.txn), "a txn read back from the log");
    }
}

impl Disk {
    pub fn new() -> Disk {
        Disk { base: Arc::new(DataTree::new()), ..Disk::default() }
    }

    /// What survives a crash: the durable part, plus a prefix of the
    /// pending appends (`kept` of them) that happened to reach the platter.
    /// With `torn`, the append right after that prefix reached the disk
    /// only in part: it is written, damaged, as the last record (never an
    /// fsynced one: only pending appends can tear). Returns whether a torn
    /// record was written.
    pub fn crash(&mut self, kept: usize, torn: bool) -> bool {
        // Appends after a snapshot that never became durable have nothing
        // to follow on disk: they go with it.
        let install_lost = self.pending_install.take().is_some();
        let kept = if install_lost { 0 } else { kept.min(self.pending.len()) };
        let torn = torn && !install_lost && kept < self.pending.len();
        let survivors: Vec<(i64, Entry)> = self.pending.drain(..kept + usize::from(torn)).collect();
        if torn {
            let (zxid, _) = survivors.last().expect("a torn append");
            self.damaged.insert(*zxid);
        }
        self.log.extend(survivors);
        self.pending.clear();
        self.sync_markers = 0;
        self.flushing = false;
        torn
    }

    /// `DataDirs::install_snapshot`: cut the log above the snapshot, drop
    /// newer snapshots, keep older ones.
    pub fn install(&mut self, tree: Arc<DataTree>) {
        let zxid = tree.last_processed_zxid();
        self.log.retain(|(logged, _)| *logged <= zxid);
        let mut snapshots = std::mem::take(&mut self.older);
        let replaced = std::mem::replace(&mut self.base, tree);
        // An invalid snapshot, now an older one, is one recovery would skip:
        // the model drops it.
        if !std::mem::take(&mut self.snapshot_damaged) {
            snapshots.push(replaced);
        }
        self.older = snapshots.into_iter().filter(|s| s.last_processed_zxid() <= zxid).collect();
        self.prune_damage();
    }

    /// Forgets damage on records no longer in the log (a later record at
    /// the same zxid is another write).
    fn prune_damage(&mut self) {
        if !self.damaged.is_empty() {
            let logged: BTreeSet<i64> = self.log.iter().map(|(zxid, _)| *zxid).collect();
            self.damaged.retain(|zxid| logged.contains(zxid));
        }
    }

    /// Whether any damage is on disk.
    pub fn is_damaged(&self) -> bool {
        self.snapshot_damaged || !self.damaged.is_empty()
    }

    /// `DataDirs::truncate_after`: drop snapshots and log records above
    /// `to`, if what remains recovers to exactly `to`; otherwise change
    /// nothing and say why.
    pub fn truncate(&mut self, to: i64, counter_start: u32, ignore_corruption: bool) -> Result<(), String> {
        let mut planned = self.clone();
        let mut snapshots = std::mem::take(&mut planned.older);
        snapshots.push(planned.base.clone());
        if planned.base.last_processed_zxid() > to {
            planned.snapshot_damaged = false;
        }
        snapshots.retain(|s| s.last_processed_zxid() <= to);
        let Some(base) = snapshots.pop() else {
            return Err(format!("cannot truncate after {to:#x}: no snapshot at or below it"));
        };
        planned.base = base;
        planned.older = snapshots;
        planned.log.retain(|(zxid, _)| *zxid <= to);
        planned.prune_damage();
        let reached = planned.load(counter_start, ignore_corruption)?.tree.last_processed_zxid();
        if reached != to {
            return Err(format!("cannot truncate after {to:#x}: what remains recovers to {reached:#x}"));
        }
        *self = planned;
        Ok(())
    }

    /// Recovery, by `storage::recovery`'s rules: the newest snapshot that
    /// validates (an invalid one is skipped for the next older; none left is
    /// a refusal), then every later logged txn in strict zxid order. A
    /// damaged last record with no record after it is a torn write, cut; a
    /// damaged record anywhere else, a gap or a record out of order refuses
    /// to start, naming the record, as the runtime names file and offset.
    /// Records at or below the snapshot started from are not read (they
    /// live in older segments). `ignore_corruption` is the planted bug: a
    /// damaged record is silently skipped, order is not checked, and with
    /// no valid snapshot left recovery starts from the empty tree.
    pub fn load(&self, counter_start: u32, ignore_corruption: bool) -> Result<Loaded, String> {
        let mut fell_back_to = None;
        let mut tree = if !self.snapshot_damaged {
            DataTree::clone(&self.base)
        } else {
            let invalid = format!("snapshot.{:x}", self.base.last_processed_zxid());
            match self.older.len().checked_sub(1) {
                Some(index) => {
                    fell_back_to = Some(index);
                    DataTree::clone(&self.older[index])
                }
                None if ignore_corruption => DataTree::new(),
                None => return Err(format!("{invalid}: no snapshot validates")),
            }
        };
        let snapshot_zxid = tree.last_processed_zxid();
        // As storage::recovery: a replay over an older snapshot must pass
        // exactly through the skipped snapshot's zxid.
        let must_pass = (fell_back_to.is_some() && !ignore_corruption).then(|| self.base.last_processed_zxid());
        let mut zxid_last = snapshot_zxid;
        let mut torn_tail = None;
        let mut skipped = Vec::new();
        for (index, (zxid, entry)) in self.log.iter().enumerate() {
            let zxid = *zxid;
            if zxid <= snapshot_zxid && zxid_last == snapshot_zxid {
                continue;
            }
            if self.damaged.contains(&zxid) {
                if index + 1 == self.log.len() {
                    torn_tail = Some(zxid);
                    break;
                }
                if ignore_corruption {
                    skipped.push(zxid);
                    continue;
                }
                return Err(format!("log record {index} ({zxid:#x}): corrupt, and valid records follow"));
            }
            if !ignore_corruption {
                if zxid <= zxid_last {
                    return Err(format!("log record {index}: zxid {zxid:#x} does not follow {zxid_last:#x}"));
                }
                if !follows(zxid_last, zxid, counter_start) {
                    return Err(format!("log record {index}: zxid gap: {zxid:#x} after {zxid_last:#x}"));
                }
                if must_pass.is_some_and(|over| zxid_last < over && over < zxid) {
                    return Err(format!("log record {index}: {zxid:#x} after {zxid_last:#x} skips the invalid snapshot's txns"));
                }
            } else if zxid <= zxid_last {
                continue;
            }
            tree.apply_quietly(&entry.txn);
            zxid_last = zxid;
        }
        if let Some(over) = must_pass.filter(|over| *over > zxid_last) {
            return Err(format!("snapshot.{over:x}: invalid, and the log ends at {zxid_last:#x}, below it"));
        }
        Ok(Loaded { tree, fell_back_to, torn_tail, skipped })
    }

    /// Makes the disk what a recovery that found `loaded` leaves: a torn
    /// tail is truncated away; an invalid newest snapshot, skipped, stays
    /// out of the model (recovery would skip it every time).
    pub fn settle(&mut self, loaded: &Loaded) {
        if let Some(zxid) = loaded.torn_tail {
            let (last, _) = self.log.pop().expect("a torn tail is in the log");
            assert_eq!(last, zxid, "the torn tail is the last record");
            self.damaged.remove(&zxid);
        }
        if let Some(index) = loaded.fell_back_to {
            self.base = self.older.remove(index);
            self.snapshot_damaged = false;
        }
    }

    /// The last txn of the history the disk holds, pending appends and a
    /// pending snapshot included (what a new append follows).
    pub fn last_in_history(&self) -> i64 {
        let pending = self.pending.last().map(|(zxid, _)| *zxid);
        let install = self.pending_install.as_ref().map(|tree| tree.last_processed_zxid());
        let logged = self.log.last().map(|(zxid, _)| *zxid);
        [pending, install, logged].into_iter().flatten().fold(self.base.last_processed_zxid(), i64::max)
    }

    pub fn last_logged(&self) -> i64 {
        self.log.last().map_or(self.base.last_processed_zxid(), |(zxid, _)| *zxid)
    }

    /// The last `max` txns `recover` replays (those past the snapshot), oldest
    /// first, as `storage::recovery` keeps them for the committed log: read
    /// from the end of the log, never more than `max` of them. Records at or
    /// below the snapshot stay out: below a SNAP they may be another history's.
    /// Origins are dropped, as the runtime's log does not keep them.
    pub fn replayed_tail(&self, max: usize) -> Vec<(i64, Entry)> {
        let base = self.base.last_processed_zxid();
        let mut tail: Vec<(i64, Entry)> = Vec::with_capacity(max.min(self.log.len()));
        for (zxid, entry) in self.log.iter().rev() {
            if *zxid <= base || tail.len() == max {
                break;
            }
            assert!(tail.last().is_none_or(|(newer, _)| zxid < newer), "log out of order at {zxid:#x}");
            tail.push((*zxid, Entry { txn: entry.txn.clone(), origin: None }));
        }
        tail.reverse();
        tail
    }
}

/// A client connection as the server sees it (`runtime::connection`).
#[derive(Debug, Default)]
struct Conn {
    session_id: i64,
    established: bool,
    writes_in_flight: u32,
    /// Requests waiting behind a write (a read sees every earlier write).
    queued: VecDeque<(i32, Request)>,
}

/// Test-only switches that break the glue on purpose (see `sim::Planted`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerBugs {
    /// Ignore TRUNC: keep the log as it is.
    pub skip_trunc: bool,
    /// Send the watch events a committed txn fires after the replies it
    /// releases, instead of before.
    pub watch_event_after_reply: bool,
    /// Answer setWatches as if the client had seen everything this server
    /// has: what changed while it was away goes unreported.
    pub set_watches_from_server_zxid: bool,
    /// Recovery skips a corrupt record (or an invalid snapshot with no
    /// older one) and goes on, instead of refusing to start.
    pub ignore_corruption: bool,
    /// Give the leader's sequencer the wall clock as its elapsed clock, as
    /// the runtime once did: its sessions then expire by the wall clock, late
    /// after a backward step and early after a forward one.
    pub sessions_on_wall_clock: bool,
}

impl ServerBugs {
    /// The clocks the leader's sequencer gets.
    fn sequencer_clock(&self, now: Now) -> Now {
        if self.sessions_on_wall_clock {
            Now { elapsed_ms: now.wall_ms, wall_ms: now.wall_ms }
        } else {
            now
        }
    }
}

pub struct Server {
    pub id: ServerId,
    pub peer: Peer<Entry, Committed>,
    pub shard: Shard,
    pub sequencer: Option<Sequencer>,
    pub disk: Disk,
    pub secret: u64,
    pub config: SimServerConfig,
    pub bugs: ServerBugs,
    leader_link: Option<(LinkId, ServerId)>,
    learners: BTreeMap<ServerId, LinkId>,
    links: BTreeMap<LinkId, Option<ServerId>>,
    received_snapshot: Option<Arc<DataTree>>,
    conns: BTreeMap<ConnectionId, Conn>,
    next_connection: ConnectionId,
    /// Connections whose queued requests may run now.
    pending_drains: Vec<ConnectionId>,
    /// Requests the leader cannot propose yet.
    held: VecDeque<ToSequencer>,
}

/// Watch event frames carry zxid -1, as ZooKeeper 3.8's do (3.9 sends the
/// zxid, ZOOKEEPER-4655). The simulator's session checker needs the change
/// that fired each: the simulator (only) writes `zxid` into the header of
/// every watch event in `outputs`. A frame is length, xid, zxid, err, body.
fn tag_watch_events(outputs: &mut [ShardOutput], zxid: i64) {
    for output in outputs {
        let ShardOutput::Frame { frame, .. } = output else { continue };
        if is_watch_event(frame) {
            let mut tagged = bytes::BytesMut::from(&frame[..]);
            tagged[8..16].copy_from_slice(&zxid.to_be_bytes());
            *frame = tagged.freeze();
        }
    }
}

fn is_watch_event(frame: &Bytes) -> bool {
    frame.len() >= 16 && frame[4..8] == crate::proto::codes::xid::WATCH_EVENT.to_be_bytes()
}

/// Requests a simulated leader holds while it cannot propose.
const HELD_REQUESTS_MAX: usize = 1024;

#[derive(Debug, Clone)]
pub struct SimServerConfig {
    pub peer: PeerConfig,
    pub tick_ms: i64,
    pub session_timeout_min_ms: i32,
    pub session_timeout_max_ms: i32,
}

impl Server {
    pub fn new(id: ServerId, config: SimServerConfig, disk: Disk, secret: u64, bugs: ServerBugs) -> Server {
        Server {
            id,
            peer: Peer::new(config.peer.clone()),
            shard: Shard::new(DataTree::new(), ShardConfig { password_secret: secret }),
            sequencer: None,
            disk,
            secret,
            config,
            bugs,
            leader_link: None,
            learners: BTreeMap::new(),
            links: BTreeMap::new(),
            received_snapshot: None,
            conns: BTreeMap::new(),
            next_connection: 1,
            pending_drains: Vec::new(),
            held: VecDeque::new(),
        }
    }

    /// Start (or restart after a crash): recover from disk and elect.
    /// A disk recovery refuses leaves the server down (`Out::Refused`).
    pub fn boot(&mut self, now: Now, out: &mut Vec<Out>) {
        match self.reload(out) {
            Ok(history) => self.start_looking(now, history, out),
            Err(error) => out.push(Out::Refused(error)),
        }
    }

    /// Elect with the state `reload` rebuilt and its committed log for DIFF
    /// (`runtime::ensemble::Driver::start_looking`).
    fn start_looking(&mut self, now: Now, history: Vec<(i64, Entry)>, out: &mut Vec<Out>) {
        let last = self.shard.tree().last_processed_zxid();
        let (accepted, current) = (self.disk.accepted_epoch, self.disk.current_epoch);
        let mut effects = Vec::new();
        self.peer.start_looking(now.elapsed_u64(), last, accepted.max(current), current, history, &mut effects);
        self.perform(now, effects, out);
    }

    pub fn is_serving(&self) -> bool {
        self.peer.is_serving()
    }

    pub fn tree(&self) -> &DataTree {
        self.shard.tree()
    }

    // ---- inputs ----------------------------------------------------------

    pub fn on_tick(&mut self, now: Now, out: &mut Vec<Out>) {
        let mut effects = Vec::new();
        self.peer.on_tick(now.elapsed_u64(), &mut effects);
        while self.peer.can_propose() {
            let Some(request) = self.held.pop_front() else { break };
            let Some(sequencer) = self.sequencer.as_mut() else { break };
            let mut seq_out = Vec::new();
            sequencer.step(self.bugs.sequencer_clock(now), request, &mut seq_out);
            self.sequenced(now, seq_out, &mut effects, out);
        }
        if let Some(sequencer) = self.sequencer.as_mut() {
            let mut seq_out = Vec::new();
            sequencer.tick(self.bugs.sequencer_clock(now), &mut seq_out);
            self.sequenced(now, seq_out, &mut effects, out);
        }
        // Session activity, as a learner's PING carries it.
        let sessions: Vec<i64> = self.conns.values().filter(|c| c.established).map(|c| c.session_id).collect();
        if !sessions.is_empty() && self.peer.is_serving() {
            self.on_request(now, ToSequencer::Touch { session_ids: sessions }, &mut effects, out);
        }
        self.perform(now, effects, out);
    }

    pub fn on_notification(&mut self, now: Now, notification: Notification, out: &mut Vec<Out>) {
        let mut effects = Vec::new();
        self.peer.on_notification(now.elapsed_u64(), notification, &mut effects);
        self.perform(now, effects, out);
    }

    /// A learner's connection to `leader` opened.
    pub fn on_link_connected(&mut self, now: Now, link: LinkId, leader: ServerId, out: &mut Vec<Out>) {
        let mut effects = Vec::new();
        if self.peer.leader() == Some(leader) && self.peer.state() != ServerState::Leading && self.leader_link.is_none() {
            self.leader_link = Some((link, leader));
            self.peer.on_leader_connected(now.elapsed_u64(), &mut effects);
        } else {
            out.push(Out::CloseLink { link });
        }
        self.perform(now, effects, out);
    }

    pub fn on_link_accepted(&mut self, link: LinkId) {
        self.links.insert(link, None);
    }

    pub fn on_connect_failed(&mut self, now: Now, leader: ServerId, out: &mut Vec<Out>) {
        let mut effects = Vec::new();
        if self.peer.leader() == Some(leader) && self.leader_link.is_none() {
            self.peer.on_leader_unreachable(&mut effects);
        }
        self.perform(now, effects, out);
    }

    pub fn on_link_closed(&mut self, now: Now, link: LinkId, out: &mut Vec<Out>) {
        let mut effects = Vec::new();
        if let Some((leader_link, leader)) = self.leader_link {
            if leader_link == link {
                self.leader_link = None;
                self.peer.on_link_closed(now.elapsed_u64(), leader, &mut effects);
                return self.perform(now, effects, out);
            }
        }
        if let Some(Some(sid)) = self.links.remove(&link) {
            if self.learners.get(&sid) == Some(&link) {
                self.learners.remove(&sid);
                self.peer.on_link_closed(now.elapsed_u64(), sid, &mut effects);
            }
        }
        self.perform(now, effects, out);
    }

    pub fn on_wire(&mut self, now: Now, link: LinkId, wire: Wire, out: &mut Vec<Out>) {
        let mut effects = Vec::new();
        self.on_wire_inner(now, link, wire, &mut effects, out);
        self.perform(now, effects, out);
    }

    fn on_wire_inner(&mut self, now: Now, link: LinkId, wire: Wire, effects: &mut Vec<PeerEffect>, out: &mut Vec<Out>) {
        if let Some((leader_link, leader)) = self.leader_link {
            if leader_link == link {
                let msg = match wire {
                    Wire::Peer(Msg::LeaderInfo { zxid }) => {
                        // Learners adopt the leader's session secret.
                        Msg::LeaderInfo { zxid }
                    }
                    Wire::Peer(msg) => msg,
                    Wire::Snap { zxid, tree } => {
                        self.received_snapshot = Some(tree);
                        Msg::Snap { zxid }
                    }
                    Wire::Forward(_) => {
                        out.push(Out::CloseLink { link });
                        return;
                    }
                };
                return self.peer.on_message(now.elapsed_u64(), leader, msg, effects);
            }
        }
        let Some(known) = self.links.get(&link).copied() else { return };
        if self.peer.state() != ServerState::Leading {
            // Not leading (yet, or any more): the learner reconnects.
            self.links.remove(&link);
            out.push(Out::CloseLink { link });
            return;
        }
        let sid = match (known, &wire) {
            (Some(sid), _) => sid,
            (None, Wire::Peer(Msg::FollowerInfo { sid, .. } | Msg::ObserverInfo { sid, .. })) => {
                let sid = *sid;
                if let Some(old) = self.learners.insert(sid, link) {
                    self.links.remove(&old);
                    out.push(Out::CloseLink { link: old });
                }
                self.links.insert(link, Some(sid));
                sid
            }
            (None, _) => {
                self.links.remove(&link);
                out.push(Out::CloseLink { link });
                return;
            }
        };
        match wire {
            Wire::Forward(request) => {
                // As local requests: held while the leader cannot propose.
                let Some(request) = request.0.borrow_mut().take() else { return };
                self.on_request(now, request.from_server(sid), effects, out);
            }
            Wire::Peer(msg) => self.peer.on_message(now.elapsed_u64(), sid, msg, effects),
            Wire::Snap { .. } => {
                self.links.remove(&link);
                out.push(Out::CloseLink { link });
            }
        }
    }

    /// The pending appends reached the disk (one fsync).
    pub fn on_flushed(&mut self, now: Now, out: &mut Vec<Out>) {
        self.disk.flushing = false;
        if let Some(tree) = self.disk.pending_install.take() {
            self.disk.install(tree);
        }
        let flushed: Vec<(i64, Entry)> = self.disk.pending.drain(..).collect();
        if self.config.peer.epoch_counter_start == 0 {
            encode_as_the_runtime_logs(&flushed);
        }
        let last = flushed.last().map(|(zxid, _)| *zxid);
        self.disk.log.extend(flushed);
        let markers = std::mem::take(&mut self.disk.sync_markers);
        let mut effects = Vec::new();
        if let Some(zxid) = last {
            self.peer.on_logged(now.elapsed_u64(), zxid, &mut effects);
        }
        for _ in 0..markers {
            self.peer.on_synced(now.elapsed_u64(), &mut effects);
        }
        self.perform(now, effects, out);
    }

    pub fn on_epoch_written(&mut self, now: Now, accepted: bool, out: &mut Vec<Out>) {
        let mut effects = Vec::new();
        if accepted {
            self.peer.on_persisted_accepted_epoch(now.elapsed_u64(), &mut effects);
        } else {
            self.peer.on_persisted_current_epoch(now.elapsed_u64(), &mut effects);
        }
        self.perform(now, effects, out);
    }

    // ---- clients (runtime::connection) -------------------------------------

    /// A client opened a connection: its id, or None when not serving
    /// (ZooKeeper closes connections while it is not running).
    pub fn accept_client(&mut self) -> Option<ConnectionId> {
        if !self.peer.is_serving() {
            return None;
        }
        let connection = self.next_connection;
        self.next_connection += 1;
        self.conns.insert(connection, Conn::default());
        Some(connection)
    }

    pub fn client_closed(&mut self, connection: ConnectionId) {
        if self.conns.remove(&connection).is_some() {
            self.shard.close(connection);
        }
    }

    pub fn on_client(&mut self, now: Now, connection: ConnectionId, msg: ClientMsg, out: &mut Vec<Out>) {
        if !self.conns.contains_key(&connection) {
            return;
        }
        let mut effects = Vec::new();
        match msg {
            ClientMsg::Connect(request) => self.handshake(now, connection, request, &mut effects, out),
            ClientMsg::Request { xid, mut request } => {
                if let (true, Request::SetWatches(set_watches)) = (self.bugs.set_watches_from_server_zxid, &mut request) {
                    set_watches.relative_zxid = self.shard.tree().last_processed_zxid();
                }
                let conn = self.conns.get_mut(&connection).expect("checked");
                conn.queued.push_back((xid, request));
                self.drain_connection(now, connection, &mut effects, out);
            }
        }
        self.perform(now, effects, out);
    }

    fn handshake(&mut self, now: Now, connection: ConnectionId, request: ConnectRequest, effects: &mut Vec<PeerEffect>, out: &mut Vec<Out>) {
        if !self.peer.is_serving() || request.last_zxid_seen > self.shard.tree().last_processed_zxid() {
            // Not serving, or the client has seen a newer state: it tries another server.
            self.drop_client(connection, out);
            return;
        }
        let timeout_ms = request.timeout_ms.clamp(self.config.session_timeout_min_ms, self.config.session_timeout_max_ms);
        self.shard.open(connection, "127.0.0.1".into(), false);
        let origin = Origin { server: self.id, connection, xid: 0, opcode: op::CREATE_SESSION };
        let message = if request.session_id == 0 {
            ToSequencer::CreateSession { origin, timeout_ms }
        } else if !self.shard.check_password(request.session_id, &request.password) {
            out.push(Out::ToClient { connection, frame: crate::pipeline::shard::expired_connect_response(false) });
            self.drop_client(connection, out);
            return;
        } else {
            ToSequencer::Revalidate { origin, session_id: request.session_id, timeout_ms }
        };
        if let Some(conn) = self.conns.get_mut(&connection) {
            conn.writes_in_flight += 1;
        }
        self.on_request(now, message, effects, out);
    }

    fn drop_client(&mut self, connection: ConnectionId, out: &mut Vec<Out>) {
        self.client_closed(connection);
        out.push(Out::CloseClient { connection });
    }

    /// Runs a connection's queued requests: writes go to the sequencer, a
    /// read waits until this connection's writes are answered.
    fn drain_connection(&mut self, now: Now, connection: ConnectionId, effects: &mut Vec<PeerEffect>, out: &mut Vec<Out>) {
        loop {
            let Some(conn) = self.conns.get_mut(&connection) else { return };
            if !conn.established {
                return;
            }
            let Some((xid, request)) = conn.queued.front() else { return };
            let is_write = request.is_write() || matches!(request, Request::Sync(_));
            if !is_write && conn.writes_in_flight > 0 {
                return;
            }
            let (xid, request) = (*xid, request.clone());
            conn.queued.pop_front();
            let session_id = conn.session_id;
            if is_write {
                conn.writes_in_flight += 1;
                let origin = Origin { server: self.id, connection, xid, opcode: request.opcode() };
                let message = match request {
                    Request::Sync(request) => ToSequencer::Sync { origin, path: request.path },
                    request => {
                        let auth = self.shard.connection(connection).map(|info| info.auth.clone()).unwrap_or_default();
                        ToSequencer::Write { origin, session_id, request, auth }
                    }
                };
                self.on_request(now, message, effects, out);
            } else {
                let mut outputs = Vec::new();
                let reply_xid = if let Request::Ping = request { crate::proto::codes::xid::PING } else { xid };
                self.shard.read(connection, reply_xid, &request, &mut outputs);
                // Events a read fires are setWatches': tagged with the zxid
                // the server is at, as no single change fired them.
                tag_watch_events(&mut outputs, self.shard.tree().last_processed_zxid());
                self.shard_outputs(outputs, out);
            }
        }
    }

    fn shard_outputs(&mut self, outputs: Vec<ShardOutput>, out: &mut Vec<Out>) {
        let mut drained = Vec::new();
        for output in outputs {
            match output {
                ShardOutput::Frame { connection, frame } => out.push(Out::ToClient { connection, frame }),
                ShardOutput::WriteDone { connection } => {
                    if let Some(conn) = self.conns.get_mut(&connection) {
                        conn.writes_in_flight = conn.writes_in_flight.saturating_sub(1);
                        drained.push(connection);
                    }
                }
                ShardOutput::Established { connection, session_id, .. } => {
                    if let Some(conn) = self.conns.get_mut(&connection) {
                        conn.session_id = session_id;
                        conn.established = true;
                        conn.writes_in_flight = conn.writes_in_flight.saturating_sub(1);
                        drained.push(connection);
                    }
                }
                ShardOutput::Close { connection } => {
                    if self.conns.remove(&connection).is_some() {
                        self.shard.close(connection);
                        out.push(Out::CloseClient { connection });
                    }
                }
            }
        }
        self.pending_drains.extend(drained);
    }

    // ---- the leader's sequencer (runtime::ensemble) ------------------------

    fn on_request(&mut self, now: Now, request: ToSequencer, effects: &mut Vec<PeerEffect>, out: &mut Vec<Out>) {
        if !self.peer.is_serving() {
            return;
        }
        match self.peer.state() {
            ServerState::Leading => {
                let Some(sequencer) = self.sequencer.as_mut() else { return };
                if !self.held.is_empty() || !self.peer.can_propose() {
                    // The runtime stops reading requests until it can
                    // propose again; they wait here, bounded.
                    if self.held.len() < HELD_REQUESTS_MAX {
                        self.held.push_back(request);
                    }
                    return;
                }
                let mut seq_out = Vec::new();
                sequencer.step(self.bugs.sequencer_clock(now), request, &mut seq_out);
                self.sequenced(now, seq_out, effects, out);
            }
            _ => {
                let Some((link, _)) = self.leader_link else { return };
                let wire = Wire::Forward(Arc::new(ForwardedRequest(std::cell::RefCell::new(Some(request)))));
                out.push(Out::Send { link, wire });
            }
        }
    }

    fn sequenced(&mut self, now: Now, seq_out: Vec<SequencerEffect>, effects: &mut Vec<PeerEffect>, out: &mut Vec<Out>) {
        for effect in seq_out {
            match effect {
                SequencerEffect::Append(Committed::Txn { txn, origin }) => {
                    let zxid = txn.zxid;
                    // No client asked for a closeSession: the sequencer expired it.
                    if origin.is_none() && matches!(txn.body, crate::txn::TxnBody::CloseSession) {
                        out.push(Out::SessionExpired { session_id: txn.session_id });
                    }
                    match self.peer.propose(now.elapsed_u64(), Entry { txn, origin }, effects) {
                        Ok(proposed) => assert_eq!(proposed, zxid, "the sequencer and the leader disagree on zxids"),
                        Err(_) => {
                            if let Some(origin) = origin {
                                self.peer.reply(origin.server, Committed::Failed { origin, err: ErrorCode::ConnectionLoss }, effects);
                            }
                        }
                    }
                }
                SequencerEffect::Append(other) | SequencerEffect::Deliver(other) => {
                    let server = other.reply_server().unwrap_or(self.id);
                    self.peer.reply(server, other, effects);
                }
                SequencerEffect::Snapshot { .. } => {}
            }
        }
    }

    // ---- effects ------------------------------------------------------------

    fn perform(&mut self, now: Now, effects: Vec<PeerEffect>, out: &mut Vec<Out>) {
        let mut queue: VecDeque<PeerEffect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            let mut more = Vec::new();
            match effect {
                Effect::Notify { to, notification } => out.push(Out::Notify { to, notification }),
                Effect::ConnectToLeader { leader } => {
                    self.leader_link = None;
                    out.push(Out::Connect { leader });
                }
                Effect::Send { to, msg } => {
                    let link = match self.leader_link {
                        Some((link, leader)) if leader == to => Some(link),
                        _ => self.learners.get(&to).copied(),
                    };
                    if let Some(link) = link {
                        out.push(Out::Send { link, wire: Wire::Peer(msg) });
                    }
                }
                Effect::SendSnapshot { to } => {
                    if let Some(link) = self.learners.get(&to).copied() {
                        let tree = Arc::new(self.shard.tree().clone());
                        let zxid = tree.last_processed_zxid();
                        out.push(Out::Send { link, wire: Wire::Snap { zxid, tree } });
                        self.peer.on_snapshot_sent(now.elapsed_u64(), to, zxid, &mut more);
                    }
                }
                Effect::Disconnect { sid } => {
                    if let Some(link) = self.learners.remove(&sid) {
                        self.links.remove(&link);
                        out.push(Out::CloseLink { link });
                    } else if let Some((link, leader)) = self.leader_link {
                        if leader == sid {
                            out.push(Out::CloseLink { link });
                        }
                    }
                }
                Effect::PersistAcceptedEpoch { epoch } => {
                    self.disk.accepted_epoch = epoch;
                    out.push(Out::EpochWritten { accepted: true });
                }
                Effect::PersistCurrentEpoch { epoch } => {
                    self.disk.current_epoch = epoch;
                    out.push(Out::EpochWritten { accepted: false });
                }
                Effect::LogAppend { zxid, txn } => {
                    out.push(Out::Logged { prev: self.disk.last_in_history(), txn: txn.txn.clone() });
                    self.disk.pending.push((zxid, txn));
                    self.request_flush(out);
                }
                Effect::SyncLog => {
                    self.disk.sync_markers += 1;
                    self.request_flush(out);
                }
                Effect::Truncate { to } => {
                    self.flush_now();
                    if !self.bugs.skip_trunc {
                        let counter_start = self.config.peer.epoch_counter_start;
                        if let Err(error) = self.disk.truncate(to, counter_start, self.bugs.ignore_corruption) {
                            self.peer.on_truncate_failed(error, &mut more);
                            queue.extend(more);
                            continue;
                        }
                    }
                    // The peer cut its committed log at `to` itself.
                    if let Err(error) = self.reload(out) {
                        return out.push(Out::Refused(error));
                    }
                }
                Effect::InstallSnapshot { zxid } => {
                    self.flush_now();
                    let Some(tree) = self.received_snapshot.take() else {
                        out.push(Out::Fatal("InstallSnapshot without a snapshot".into()));
                        continue;
                    };
                    if tree.last_processed_zxid() != zxid {
                        out.push(Out::Fatal(format!("SNAP header {zxid:#x} and snapshot {:#x} disagree", tree.last_processed_zxid())));
                    }
                    self.disk.pending_install = Some(tree.clone());
                    self.request_flush(out);
                    self.shard_reset(DataTree::clone(&tree), out);
                }
                Effect::Apply { zxid, txn } => {
                    let prev = self.shard.tree().last_processed_zxid();
                    let origin = txn.origin.filter(|origin| origin.server == self.id);
                    let mut outputs = Vec::new();
                    self.shard.apply(&Committed::Txn { txn: txn.txn.clone(), origin }, &mut outputs);
                    tag_watch_events(&mut outputs, zxid);
                    if self.bugs.watch_event_after_reply {
                        // A stable sort: events last, everything else in order.
                        outputs.sort_by_key(|output| matches!(output, ShardOutput::Frame { frame, .. } if is_watch_event(frame)));
                    }
                    out.push(Out::Delivered { zxid, prev, digest: self.shard.tree().digest(), txn: txn.txn });
                    self.shard_outputs(outputs, out);
                }
                Effect::Deliver(item) => {
                    if let Committed::Secret(secret) = item {
                        self.secret = secret;
                    }
                    let mut outputs = Vec::new();
                    self.shard.apply(&item, &mut outputs);
                    self.shard_outputs(outputs, out);
                }
                Effect::Serve { state, epoch, .. } => {
                    if state == ServerState::Leading {
                        let config = SequencerConfig {
                            tick_ms: self.config.tick_ms,
                            extended_types_enabled: true,
                            server_id: self.id as u8,
                            password_secret: self.secret,
                            container_check_interval_ms: 60_000,
                            container_deletes_per_check_max: 100,
                            snap_count: 100_000,
                            random_seed: self.secret,
                        };
                        let mut sequencer = Sequencer::new(self.shard.tree(), config, self.bugs.sequencer_clock(now));
                        sequencer.set_zxid_last(self.peer.last_proposed().unwrap_or(make_zxid(epoch, 0)));
                        self.sequencer = Some(sequencer);
                    }
                    let mut outputs = Vec::new();
                    self.shard.apply(&Committed::Secret(self.secret), &mut outputs);
                    out.push(Out::Serving { state, epoch });
                }
                Effect::Look { reason } => {
                    out.push(Out::Looking { reason });
                    self.stop_serving(out);
                    self.flush_now();
                    let history = match self.reload(out) {
                        Ok(history) => history,
                        Err(error) => return out.push(Out::Refused(error)),
                    };
                    let tree = self.shard.tree().clone();
                    self.shard_reset(tree, out);
                    self.start_looking(now, history, out);
                }
            }
            queue.extend(more);
            let drains = std::mem::take(&mut self.pending_drains);
            if !drains.is_empty() {
                let mut effects = Vec::new();
                for connection in drains {
                    self.drain_connection(now, connection, &mut effects, out);
                }
                queue.extend(effects);
            }
        }
    }

    fn request_flush(&mut self, out: &mut Vec<Out>) {
        if !self.disk.flushing {
            self.disk.flushing = true;
            out.push(Out::Flush);
        }
    }

    /// The runtime waits for its log to go idle before truncating or
    /// installing: every pending append becomes durable (its `Logged`
    /// report is superseded by the reload that follows).
    fn flush_now(&mut self) {
        if let Some(tree) = self.disk.pending_install.take() {
            self.disk.install(tree);
        }
        let pending: Vec<(i64, Entry)> = self.disk.pending.drain(..).collect();
        self.disk.log.extend(pending);
        self.disk.sync_markers = 0;
    }

    /// Rebuild from the disk, as `runtime::ensemble::Driver::reload`; returns
    /// the committed log for DIFF, the last txns replayed, or why recovery
    /// refuses the disk (the runtime stops: a fatal storage error).
    fn reload(&mut self, out: &mut Vec<Out>) -> Result<Vec<(i64, Entry)>, String> {
        let loaded = self.disk.load(self.config.peer.epoch_counter_start, self.bugs.ignore_corruption)?;
        if let Some(zxid) = loaded.torn_tail {
            out.push(Out::RecoveryWarning { kind: "torn tail cut", text: format!("log record {zxid:#x}: torn write; cut") });
        }
        if loaded.fell_back_to.is_some() {
            let text = format!("snapshot.{:x}: invalid snapshot; skipped", self.disk.base.last_processed_zxid());
            out.push(Out::RecoveryWarning { kind: "snapshot fallback", text });
        }
        for zxid in &loaded.skipped {
            let text = format!("log record {zxid:#x}: corrupt; skipped (planted ignore-corruption)");
            out.push(Out::RecoveryWarning { kind: "corrupt record skipped", text });
        }
        self.disk.settle(&loaded);
        let tree = loaded.tree;
        let history = self.disk.replayed_tail(self.config.peer.committed_log_max);
        assert!(
            history.last().is_none_or(|(zxid, _)| *zxid == tree.last_processed_zxid()),
            "the replayed tail must end where recovery ends"
        );
        self.shard = Shard::new(tree, ShardConfig { password_secret: self.secret });
        Ok(history)
    }

    fn shard_reset(&mut self, tree: DataTree, out: &mut Vec<Out>) {
        let mut outputs = Vec::new();
        self.shard.apply(&Committed::Reset { tree: Arc::new(tree) }, &mut outputs);
        for connection in std::mem::take(&mut self.conns).into_keys() {
            out.push(Out::CloseClient { connection });
        }
    }

    fn stop_serving(&mut self, out: &mut Vec<Out>) {
        self.sequencer = None;
        self.held.clear();
        for (_, link) in std::mem::take(&mut self.learners) {
            out.push(Out::CloseLink { link });
        }
        for (link, _) in std::mem::take(&mut self.links) {
            out.push(Out::CloseLink { link });
        }
        if let Some((link, _)) = self.leader_link.take() {
            out.push(Out::CloseLink { link });
        }
        self.received_snapshot = None;
        for connection in std::mem::take(&mut self.conns).into_keys() {
            self.shard.close(connection);
            out.push(Out::CloseClient { connection });
        }
    }

    /// Every open quorum link this server holds (for the simulator's crash).
    pub fn links(&self) -> Vec<LinkId> {
        let mut links: Vec<LinkId> = self.links.keys().copied().collect();
        links.extend(self.learners.values().copied());
        links.extend(self.leader_link.map(|(link, _)| link));
        links.sort_unstable();
        links.dedup();
        links
    }

    pub fn client_connections(&self) -> Vec<ConnectionId> {
        self.conns.keys().copied().collect()
    }
}
