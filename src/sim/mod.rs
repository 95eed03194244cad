//! A deterministic simulator of whole ensembles (issue 5).
//!
//! One thread, one seeded random stream, one queue of timed events. Each
//! simulated server runs the real core (`sim::server`): the ZAB peer, the
//! leader's sequencer (Prep and sessions), a shard with its tree and watches.
//! The simulator is their network (per-link FIFO with delay, links that
//! break, partitions of any shape, clogged nodes), their disks (fsync
//! latency, un-fsynced appends lost on a crash except for a prefix that made
//! it, fsync failures that kill the process), their clocks (a monotonic clock
//! with drift that jumps ahead when the process pauses, and a wall clock
//! that NTP steps back or forward)
//! and their clients (sessions issuing every kind of data operation on a few
//! znodes, with watches, reconnecting elsewhere on connection loss).
//!
//! After every step the checkers in `invariants` look at what happened; at
//! the end the client histories go through the linearizability and session
//! checkers, and the healed ensemble must commit a write within a bounded
//! simulated time. One seed fully determines a run: `warden sim --seed S`
//! replays it.

pub mod client;
pub mod invariants;
pub mod linearizable;
pub mod server;
pub mod session_order;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::Bytes;

use self::client::{Client, ClientOut};
use self::invariants::Invariants;
use self::server::{ClientMsg, Disk, LinkId, Out, Server, ServerBugs, SimServerConfig, Wire};
use crate::pipeline::{ConnectionId, Now};
use crate::rng::Rng;
use crate::zab::election::Notification;
use crate::zab::peer::PeerConfig;
use crate::zab::ServerId;

/// Which faults a run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    pub crash: bool,
    pub partition: bool,
    pub clog: bool,
    pub link_break: bool,
    pub disk: bool,
    pub clock: bool,
    /// A crash may leave the last un-fsynced append that survives half
    /// written: a torn record, which recovery cuts.
    pub torn: bool,
    /// A durable log record or the newest snapshot of one server (at most
    /// one at a time) is corrupted; see `Sim::corrupt`.
    pub corruption: bool,
}

impl Faults {
    pub const ALL: Faults =
        Faults { crash: true, partition: true, clog: true, link_break: true, disk: true, clock: true, torn: true, corruption: true };
    pub const NONE: Faults = Faults {
        crash: false,
        partition: false,
        clog: false,
        link_break: false,
        disk: false,
        clock: false,
        torn: false,
        corruption: false,
    };

    pub fn names(&self) -> String {
        if *self == Faults::ALL {
            return "all".into();
        }
        if *self == Faults::NONE {
            return "none".into();
        }
        let mut names = Vec::new();
        for (on, name) in [
            (self.crash, "crash"),
            (self.partition, "partition"),
            (self.clog, "clog"),
            (self.link_break, "link"),
            (self.disk, "disk"),
            (self.clock, "clock"),
            (self.torn, "torn"),
            (self.corruption, "corrupt"),
        ] {
            if on {
                names.push(name);
            }
        }
        names.join(",")
    }

    /// Parses "all", "none" or a comma list of crash,partition,clog,link,disk,clock,torn,corrupt.
    pub fn parse(text: &str) -> Result<Faults, String> {
        match text {
            "all" => return Ok(Faults::ALL),
            "none" => return Ok(Faults::NONE),
            _ => {}
        }
        let mut faults = Faults::NONE;
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "crash" => faults.crash = true,
                "partition" => faults.partition = true,
                "clog" => faults.clog = true,
                "link" => faults.link_break = true,
                "disk" => faults.disk = true,
                "clock" => faults.clock = true,
                "torn" => faults.torn = true,
                "corrupt" => faults.corruption = true,
                other => {
                    return Err(format!("unknown fault {other:?} (crash, partition, clog, link, disk, clock, torn, corrupt, all, none)"))
                }
            }
        }
        Ok(faults)
    }
}

/// Known bugs the simulator can plant, to prove the checkers catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Planted {
    #[default]
    None,
    /// The leader commits once any single ACK (its own) arrives.
    CommitOnMinority,
    /// Followers ACK a proposal before it is fsynced.
    AckBeforeFsync,
    /// Learners ignore TRUNC.
    SkipTrunc,
    /// Learners ACK NEWLEADER before the synced txns are persisted.
    NewLeaderBeforePersist,
    /// A committed txn's watch events go out after the replies it releases
    /// (a session reads the change before its watch fires).
    WatchEventAfterReply,
    /// setWatches takes the server's zxid for the client's: a watch whose
    /// node changed while its session was away is re-registered silently.
    SetWatchesFromServerZxid,
    /// Recovery silently skips a corrupt log record (or an invalid snapshot
    /// with no older one) and starts, and no operator wipes the server.
    IgnoreCorruption,
    /// The leader's sequencer times sessions on the wall clock (as the
    /// runtime once did): a backward step delays expiry by the step, a
    /// forward one expires live sessions early. No checker looks at when a
    /// session expires; `tests/sim.rs`'s wall-clock schedule does.
    SessionsOnWallClock,
    /// The leader sends a reply a commit releases ahead of that COMMIT, so
    /// a learner answers a sync before the client's write sent before it.
    ReplyBeforeCommit,
}

impl Planted {
    pub const ALL: [Planted; 9] = [
        Planted::CommitOnMinority,
        Planted::AckBeforeFsync,
        Planted::SkipTrunc,
        Planted::NewLeaderBeforePersist,
        Planted::WatchEventAfterReply,
        Planted::SetWatchesFromServerZxid,
        Planted::IgnoreCorruption,
        Planted::SessionsOnWallClock,
        Planted::ReplyBeforeCommit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Planted::None => "none",
            Planted::CommitOnMinority => "commit-on-minority",
            Planted::AckBeforeFsync => "ack-before-fsync",
            Planted::SkipTrunc => "skip-trunc",
            Planted::NewLeaderBeforePersist => "newleader-before-persist",
            Planted::WatchEventAfterReply => "watch-event-after-reply",
            Planted::SetWatchesFromServerZxid => "set-watches-from-server-zxid",
            Planted::IgnoreCorruption => "ignore-corruption",
            Planted::SessionsOnWallClock => "sessions-on-wall-clock",
            Planted::ReplyBeforeCommit => "reply-before-commit",
        }
    }

    pub fn parse(text: &str) -> Result<Planted, String> {
        Ok(match text {
            "none" => Planted::None,
            "commit-on-minority" => Planted::CommitOnMinority,
            "ack-before-fsync" => Planted::AckBeforeFsync,
            "skip-trunc" => Planted::SkipTrunc,
            "newleader-before-persist" => Planted::NewLeaderBeforePersist,
            "watch-event-after-reply" => Planted::WatchEventAfterReply,
            "set-watches-from-server-zxid" => Planted::SetWatchesFromServerZxid,
            "ignore-corruption" => Planted::IgnoreCorruption,
            "sessions-on-wall-clock" => Planted::SessionsOnWallClock,
            "reply-before-commit" => Planted::ReplyBeforeCommit,
            other => return Err(format!("unknown planted bug {other:?}")),
        })
    }
}

/// A step of a scripted scenario (a regression schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Crash(ServerId),
    Restart(ServerId),
    /// Partition one server from all the others.
    Isolate(ServerId),
    Heal,
    /// The next time `learner` writes its currentEpoch, crash it the moment
    /// that write is durable, and its leader `leader_after_ms` later.
    CrashAfterEpoch { learner: ServerId, leader_after_ms: Option<u64> },
    /// The next time `from` sends a `kind` message (to `to`, or to anyone),
    /// do `fault` `after_ms` after the message is sent (`delivered: false`:
    /// a crash of either end at 0 ms loses the message with the link) or
    /// after it is delivered (`delivered: true`: the receiver has handled
    /// it). One-shot; several may be armed at once. It fires only for a
    /// message that goes on the wire (a live link across no partition).
    OnSend { from: ServerId, to: Option<ServerId>, kind: MsgKind, fault: SendFault, delivered: bool, after_ms: u64 },
    /// Clients stop issuing operations (they keep their sessions and
    /// connections, and reconnect as usual), until `ResumeClients`.
    PauseClients,
    ResumeClients,
    /// NTP steps `server`'s wall clock by `by_ms` (negative: back); its
    /// monotonic clock does not move.
    StepWallClock { server: ServerId, by_ms: i64 },
    /// A client goes silent (its process hangs): its connection closes and
    /// it neither reconnects nor sends anything until `StartClient`, so its
    /// session gets no heartbeat and must expire. The faults' end starts it
    /// again too.
    StopClient(u32),
    StartClient(u32),
}

/// The quorum messages an `Action::OnSend` can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgKind {
    Diff,
    Trunc,
    Snap,
    NewLeader,
    UpToDate,
    Proposal,
    Commit,
    /// A learner's ACK of NEWLEADER (sent before it serves).
    NewLeaderAck,
    /// A follower's ACK of a proposal.
    ProposalAck,
}

/// What an `Action::OnSend` does to the message's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFault {
    CrashSender,
    CrashReceiver,
    /// Reset the link: both ends are told (a broken TCP connection).
    BreakLink,
}

/// An armed `Action::OnSend`.
#[derive(Debug, Clone, Copy)]
struct SendTrigger {
    from: ServerId,
    to: Option<ServerId>,
    kind: MsgKind,
    fault: SendFault,
    delivered: bool,
    after_ms: u64,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub voters: u64,
    pub observers: u64,
    pub clients: u32,
    /// Simulated milliseconds of faults and load before the final heal.
    pub duration_ms: u64,
    /// Upper bound on events processed (a run stops early at it).
    pub steps_max: u64,
    pub faults: Faults,
    pub planted: Planted,
    /// Keep a readable trace of every event.
    pub trace: bool,
    /// Scripted actions at simulated times (usually with `Faults::NONE`).
    pub script: Vec<(u64, Action)>,
    /// Where each new epoch's zxid counter starts (`PeerConfig::
    /// epoch_counter_start`): 0, or near 2^32 to make leaders run out of
    /// zxids and roll over to a new epoch (ZOOKEEPER-1277).
    pub epoch_counter_start: u32,
    /// Clients now and then close or abandon their sessions and start new
    /// ones (each a txn). Schedules that count the txns of an epoch turn it
    /// off.
    pub session_churn: bool,
}

impl SimConfig {
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            voters: 3,
            observers: 1,
            clients: 4,
            duration_ms: 20_000,
            steps_max: 2_000_000,
            faults: Faults::ALL,
            planted: Planted::None,
            trace: false,
            script: Vec::new(),
            epoch_counter_start: 0,
            session_churn: true,
        }
    }
}

/// What one run did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub simulated_ms: u64,
    /// Hash of every event in order: equal for two runs of one seed.
    pub trace_hash: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub client_ops: u64,
    pub acked_writes: u64,
    /// Per kind of client operation (and a few outcomes): how many were
    /// sent, and how many got a definite answer (`client::op_counts`).
    pub ops: BTreeMap<&'static str, (u64, u64)>,
    pub elections: u64,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run, printing its trace.
    pub fn replay_command(&self, config: &SimConfig) -> String {
        let mut command = format!(
            "cargo run --release -- sim --seed {} --duration-ms {} --voters {} --observers {} --clients {} --faults {}",
            self.seed,
            config.duration_ms,
            config.voters,
            config.observers,
            config.clients,
            config.faults.names()
        );
        if config.planted != Planted::None {
            let _ = write!(command, " --plant {}", config.planted.name());
        }
        if config.epoch_counter_start != 0 {
            let _ = write!(command, " --epoch-counter-start {}", config.epoch_counter_start);
        }
        command.push_str(" --trace");
        command
    }

    /// One line: what ran and what it found.
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(|(kind, count)| format!("{kind}={count}")).collect();
        format!(
            "seed {}: {} after {} steps, {} simulated ms, {} client ops ({} acked writes), {} elections/syncs, faults [{}], trace {:016x}",
            self.seed,
            if self.ok() { "ok" } else { "FAILED" },
            self.steps,
            self.simulated_ms,
            self.client_ops,
            self.acked_writes,
            self.elections,
            faults.join(" "),
            self.trace_hash
        )
    }
}

// ---- simulated time and network -------------------------------------------

/// ZooKeeper's tickTime in the simulation, and the limits in ticks.
const TICK_MS: u64 = 100;
const INIT_LIMIT_TICKS: u64 = 10;
const SYNC_LIMIT_TICKS: u64 = 5;
/// How often a server's driver steps its peer.
const SERVER_TICK_MS: u64 = 25;
/// One-way network delay on a healthy link.
const NET_DELAY_MS: (u64, u64) = (1, 8);
/// How long an fsync takes.
const FSYNC_MS: (u64, u64) = (1, 12);
/// Between two fault decisions.
const FAULT_GAP_MS: (u64, u64) = (150, 900);
/// After the faults stop, everything healed, the ensemble has this long to
/// serve on every server and commit a write (the liveness bound). A server
/// isolated for long has backed its notification timeout off to FLE's
/// maxNotificationInterval (60 s) and rejoins when it next fires, as
/// ZooKeeper's does.
const LIVENESS_MS: u64 = 75_000;
/// How often a crash tears the append after the prefix that survives.
const TORN_PER_MILLE: u64 = 300;
/// How often a corruption hits the newest snapshot rather than a log record.
const SNAPSHOT_CORRUPTION_PER_MILLE: u64 = 250;
/// Before the operator first looks at a server that refused to start, and
/// between looks while wiping it is not yet safe.
const OPERATOR_DELAY_MS: (u64, u64) = (500, 2_000);
const OPERATOR_RETRY_MS: (u64, u64) = (200, 800);
/// Where the simulated wall clocks start: ms since the Unix epoch (late 2023).
const WALL_CLOCK_START_MS: i64 = 1_700_000_000_000;
/// An NTP step of a wall clock, either way; and, now and then, a large one
/// back (a server that booted with a bad clock and was corrected).
const WALL_STEP_MS: (u64, u64) = (100, 3_000);
const WALL_STEP_BACK_LARGE_MS: (u64, u64) = (3_000, 60_000);
const WALL_STEP_BACK_LARGE_PER_MILLE: u64 = 200;
/// Trace lines kept (the hash covers all of them).
const TRACE_LINES_MAX: usize = 200_000;

#[derive(Debug)]
enum Event {
    Tick { server: ServerId },
    Notify { to: ServerId, notification: Notification },
    /// A learner's connection attempt reaches the leader's host.
    Dial { learner: ServerId, leader: ServerId },
    LinkOpen { link: LinkId },
    Wire { link: LinkId, to: ServerId, wire: Wire },
    LinkClosed { link: LinkId, to: ServerId },
    Flushed { server: ServerId },
    EpochWritten { server: ServerId, accepted: bool },
    /// A client connection's message reaches its server.
    ToServer { conn: u64, msg: ClientMsg },
    ToClient { conn: u64, frame: Bytes },
    ClientConnClosed { conn: u64 },
    ClientConnOpened { conn: u64 },
    ClientWake { client: u32 },
    Fault,
    /// The operator looks at a server whose recovery refused its disk.
    Operator { server: ServerId },
    Scripted(Action),
    /// A crash aimed at a window the protocol must survive.
    Crash { server: ServerId, incarnation: u64 },
    /// A scripted reset of one quorum link.
    BreakLink { link: LinkId },
    EndFaults,
}

/// A quorum link between a learner and a leader.
struct Link {
    learner: ServerId,
    leader: ServerId,
    incarnations: (u64, u64),
    alive: bool,
    /// FIFO: the last delivery time scheduled in each direction (to learner, to leader).
    last: (u64, u64),
}

/// A client connection.
struct ClientConn {
    client: u32,
    server: ServerId,
    incarnation: u64,
    connection: Option<ConnectionId>,
    alive: bool,
    last: (u64, u64),
}

struct Node {
    server: Server,
    up: bool,
    incarnation: u64,
    /// Monotonic (elapsed) clock: global time × (1 + drift) + offset. It
    /// only goes forward; a "clock jump" moves the offset ahead (the
    /// process or its VM was paused).
    drift_ppm: i64,
    offset_ms: u64,
    clogged_until: u64,
    last_local: u64,
    /// Wall clock: the monotonic clock plus this. NTP steps it either way
    /// ("wall clock step"); the core must time nothing on it.
    wall_offset_ms: i64,
    disk_state: DiskState,
}

/// Where a server stands with disk corruption (`Sim::corrupt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskState {
    Healthy,
    /// Its disk holds a corrupted record; it runs on what it has in memory
    /// until its next recovery finds the damage.
    Damaged,
    /// Recovery refused its disk; it is down until the operator wipes it.
    Refused,
    /// Wiped and restarted empty: it holds no history until it syncs and
    /// serves.
    Rejoining,
}

pub struct Sim {
    config: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<ServerId, Node>,
    links: BTreeMap<LinkId, Link>,
    next_link: LinkId,
    conns: BTreeMap<u64, ClientConn>,
    next_conn: u64,
    clients: Vec<Client>,
    /// Groups that can talk; empty means no partition.
    partition: Vec<BTreeSet<ServerId>>,
    faults_on: bool,
    /// A scripted crash waiting for a learner's currentEpoch write.
    armed_epoch_crash: Option<(ServerId, Option<u64>)>,
    /// Scripted faults waiting for a message to be sent.
    armed_sends: Vec<SendTrigger>,
    /// Scripted: clients issue no operations.
    clients_paused: bool,
    /// Scripted: clients that are silent (`Action::StopClient`).
    stopped_clients: BTreeSet<u32>,
    invariants: Invariants,
    /// Per receiver: the simulated second and the election notifications
    /// it received in it (`NOTIFICATIONS_PER_SECOND_MAX`).
    notifications: BTreeMap<ServerId, (u64, u32)>,
    report: Report,
}

/// Election notifications one server may receive in a simulated second.
/// Elections send a few dozen (a round to every voter, answers, re-sends
/// backing off from 200 ms); two servers answering each other without end
/// send hundreds, 1-8 ms apart, and time passing hides such a loop from the
/// other checks.
const NOTIFICATIONS_PER_SECOND_MAX: u32 = 500;

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let mut rng = Rng::new(config.seed);
        let voters: Vec<ServerId> = (1..=config.voters).collect();
        let observers: Vec<ServerId> = (config.voters + 1..=config.voters + config.observers).collect();
        let secret = rng.next_u64();
        let mut nodes = BTreeMap::new();
        for &id in voters.iter().chain(&observers) {
            let server_config = SimServerConfig {
                peer: PeerConfig {
                    my_id: id,
                    voters: voters.clone(),
                    observers: observers.clone(),
                    init_limit_ms: TICK_MS * INIT_LIMIT_TICKS,
                    sync_limit_ms: TICK_MS * SYNC_LIMIT_TICKS,
                    finalize_wait_ms: 200,
                    committed_log_max: 50,
                    planted: planted_peer_bugs(config.planted),
                    epoch_counter_start: config.epoch_counter_start,
                },
                tick_ms: TICK_MS as i64,
                session_timeout_min_ms: (2 * TICK_MS) as i32,
                session_timeout_max_ms: (20 * TICK_MS) as i32,
            };
            let bugs = ServerBugs {
                skip_trunc: config.planted == Planted::SkipTrunc,
                watch_event_after_reply: config.planted == Planted::WatchEventAfterReply,
                set_watches_from_server_zxid: config.planted == Planted::SetWatchesFromServerZxid,
                ignore_corruption: config.planted == Planted::IgnoreCorruption,
                sessions_on_wall_clock: config.planted == Planted::SessionsOnWallClock,
            };
            let drift_ppm = if config.faults.clock { rng.between(0, 40_000) as i64 - 20_000 } else { 0 };
            let offset_ms = rng.between(0, 10_000);
            let node = Node {
                server: Server::new(id, server_config, Disk::new(), secret, bugs),
                up: true,
                incarnation: 1,
                drift_ppm,
                offset_ms,
                clogged_until: 0,
                last_local: 0,
                // The wall clocks start in agreement (NTP-synchronised),
                // whatever the monotonic clocks' origins.
                wall_offset_ms: WALL_CLOCK_START_MS - offset_ms as i64,
                disk_state: DiskState::Healthy,
            };
            nodes.insert(id, node);
        }
        let servers: Vec<ServerId> = nodes.keys().copied().collect();
        let clients = (0..config.clients).map(|id| Client::new(id, servers.clone(), rng.next_u64(), config.session_churn)).collect();
        let report = Report { seed: config.seed, ..Report::default() };
        Sim {
            config,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            links: BTreeMap::new(),
            next_link: 1,
            conns: BTreeMap::new(),
            next_conn: 1,
            clients,
            partition: Vec::new(),
            faults_on: true,
            armed_epoch_crash: None,
            armed_sends: Vec::new(),
            clients_paused: false,
            stopped_clients: BTreeSet::new(),
            invariants: Invariants::default(),
            notifications: BTreeMap::new(),
            report,
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        let line = line();
        let mut hash = self.report.trace_hash ^ self.now;
        for byte in line.bytes() {
            hash = (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3);
        }
        self.report.trace_hash = hash;
        if self.config.trace && self.report.trace.len() < TRACE_LINES_MAX {
            self.report.trace.push(format!("{:>8} {line}", self.now));
        }
    }

    /// `id`'s clocks now: its monotonic clock (for all timing) and its wall clock.
    fn local_now(&mut self, id: ServerId) -> Now {
        let node = self.nodes.get_mut(&id).expect("known server");
        let scaled = (self.now as i128 * (1_000_000 + node.drift_ppm as i128) / 1_000_000) as u64;
        // The elapsed clock never runs backwards (the runtime's is monotonic).
        node.last_local = node.last_local.max(scaled + node.offset_ms);
        Now { elapsed_ms: node.last_local as i64, wall_ms: node.last_local as i64 + node.wall_offset_ms }
    }

    /// NTP steps `id`'s wall clock by `by_ms` (negative: back).
    fn step_wall_clock(&mut self, id: ServerId, by_ms: i64) {
        let direction = if by_ms < 0 { "back" } else { "forward" };
        self.trace(|| format!("wall clock of {id} steps {direction} {} ms", by_ms.unsigned_abs()));
        self.nodes.get_mut(&id).expect("known").wall_offset_ms += by_ms;
    }

    /// A client goes silent: its connections close, and it sleeps until started.
    fn stop_client(&mut self, client: u32) {
        let session = self.clients[client as usize].session();
        self.trace(|| format!("client {client} stops (session {:#x})", session.unwrap_or(0)));
        self.stopped_clients.insert(client);
        let conns: Vec<u64> = self.conns.iter().filter(|(_, c)| c.client == client && c.alive).map(|(k, _)| *k).collect();
        for conn in conns {
            self.close_client_conn(conn, true);
        }
    }

    fn start_client(&mut self, client: u32) {
        if self.stopped_clients.remove(&client) {
            self.trace(|| format!("client {client} starts"));
            self.schedule(self.now + 1, Event::ClientWake { client });
        }
    }

    fn can_talk(&self, a: ServerId, b: ServerId) -> bool {
        self.partition.is_empty() || self.partition.iter().any(|group| group.contains(&a) && group.contains(&b))
    }

    fn delay(&mut self, a: ServerId, b: ServerId) -> u64 {
        let base = self.rng.between(NET_DELAY_MS.0, NET_DELAY_MS.1);
        let clogged = self.nodes[&a].clogged_until.max(self.nodes[&b].clogged_until);
        (self.now + base).max(clogged)
    }

    // ---- the run ------------------------------------------------------------

    pub fn run(mut self) -> Report {
        let ids: Vec<ServerId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.boot(id);
        }
        for client in 0..self.config.clients {
            let at = self.rng.between(100, 1_500);
            self.schedule(at, Event::ClientWake { client });
        }
        if self.config.faults != Faults::NONE {
            let at = self.rng.between(FAULT_GAP_MS.0, FAULT_GAP_MS.1) + 1_000;
            self.schedule(at, Event::Fault);
        }
        for (at, action) in self.config.script.clone() {
            self.schedule(at, Event::Scripted(action));
        }
        self.schedule(self.config.duration_ms, Event::EndFaults);
        let end = self.config.duration_ms + LIVENESS_MS;
        while let Some((&(at, seq), _)) = self.queue.first_key_value() {
            if at > end || self.report.steps >= self.config.steps_max {
                break;
            }
            let event = self.queue.remove(&(at, seq)).expect("first exists");
            self.now = at;
            self.report.steps += 1;
            self.invariants.step = self.report.steps;
            self.step(event);
            if !self.report.violations.is_empty() {
                break;
            }
            if !self.faults_on && self.quiet_and_live() {
                break;
            }
        }
        self.report.simulated_ms = self.now;
        self.finish();
        self.report
    }

    /// After the faults stopped: every server serves, and every client's
    /// probe write committed.
    fn quiet_and_live(&self) -> bool {
        self.nodes.values().all(|node| node.up && node.server.is_serving())
            && self.clients.iter().all(|client| client.probe_done())
    }

    fn finish(&mut self) {
        let violations = self.invariants.take_violations();
        self.report.violations.extend(violations);
        if !self.report.violations.is_empty() {
            return;
        }
        if !self.quiet_and_live() {
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|(id, node)| {
                    let election = node.server.peer.election();
                    format!(
                        "{id}: up={} {:?} serving={} zxid={:#x} election looking={} round={} vote={:?}",
                        node.up,
                        node.server.peer.state(),
                        node.server.is_serving(),
                        node.server.tree().last_processed_zxid(),
                        election.is_looking(),
                        election.logical_clock(),
                        election.proposal()
                    )
                })
                .collect();
            let probes: Vec<String> = self.clients.iter().filter(|c| !c.probe_done()).map(|c| c.describe()).collect();
            self.report.violations.push(format!(
                "Liveness: {} ms after healing, the ensemble did not serve and commit every probe: servers [{}]; clients waiting [{}]",
                LIVENESS_MS,
                states.join(", "),
                probes.join(", ")
            ));
            return;
        }
        // Every replica at the same state.
        let digests: BTreeSet<(i64, u64)> =
            self.nodes.values().map(|node| (node.server.tree().last_processed_zxid(), node.server.tree().digest())).collect();
        let zxids: BTreeSet<i64> = digests.iter().map(|(zxid, _)| *zxid).collect();
        if zxids.len() == 1 && digests.len() > 1 {
            self.report.violations.push(format!("Replicas: same zxid, different trees: {digests:?}"));
        }
        let histories: Vec<&client::History> = self.clients.iter().map(|client| client.history()).collect();
        self.report.client_ops = histories.iter().map(|h| h.ops.len() as u64).sum();
        self.report.acked_writes = histories.iter().map(|h| h.acked_writes()).sum();
        self.report.ops = client::op_counts(&histories, &self.invariants.logged_closes());
        for violation in client::check_histories(&histories, &self.invariants) {
            self.report.violations.push(violation);
        }
    }

    fn boot(&mut self, id: ServerId) {
        let now = self.local_now(id);
        let mut out = Vec::new();
        self.nodes.get_mut(&id).expect("known").server.boot(now, &mut out);
        let refused = out.iter().any(|item| matches!(item, Out::Refused(_)));
        let node = self.nodes.get_mut(&id).expect("known");
        if node.disk_state == DiskState::Damaged && !refused {
            node.disk_state = DiskState::Healthy;
        }
        let server = &self.nodes[&id].server;
        let (zxid, accepted, current) = (server.tree().last_processed_zxid(), server.disk.accepted_epoch, server.disk.current_epoch);
        self.trace(|| format!("boot {id} at {zxid:#x}, acceptedEpoch {accepted}, currentEpoch {current}"));
        self.carry(id, out);
        let at = self.now + SERVER_TICK_MS;
        self.schedule(at, Event::Tick { server: id });
    }

    fn count_notification(&mut self, to: ServerId) {
        let second = self.now / 1000;
        let (at, count) = self.notifications.entry(to).or_insert((second, 0));
        if *at != second {
            (*at, *count) = (second, 0);
        }
        *count += 1;
        if *count == NOTIFICATIONS_PER_SECOND_MAX + 1 {
            self.report.violations.push(format!(
                "Election: server {to} received more than {NOTIFICATIONS_PER_SECOND_MAX} notifications in simulated second {second} (a message storm)"
            ));
        }
    }

    fn up(&self, id: ServerId) -> bool {
        self.nodes.get(&id).is_some_and(|node| node.up)
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Tick { server } => {
                if !self.up(server) {
                    return;
                }
                let now = self.local_now(server);
                let mut out = Vec::new();
                self.nodes.get_mut(&server).expect("up").server.on_tick(now, &mut out);
                self.carry(server, out);
                let at = self.now + SERVER_TICK_MS;
                self.schedule(at, Event::Tick { server });
            }
            Event::Notify { to, notification } => {
                if !self.up(to) {
                    return;
                }
                self.trace(|| format!("notify {} -> {to}: {:?}", notification.sid, notification.vote));
                self.count_notification(to);
                let now = self.local_now(to);
                let mut out = Vec::new();
                self.nodes.get_mut(&to).expect("up").server.on_notification(now, notification, &mut out);
                self.carry(to, out);
            }
            Event::Dial { learner, leader } => {
                if !self.up(learner) {
                    return;
                }
                if !self.up(leader) || !self.can_talk(learner, leader) {
                    self.trace(|| format!("dial {learner} -> {leader} refused"));
                    let now = self.local_now(learner);
                    let mut out = Vec::new();
                    self.nodes.get_mut(&learner).expect("up").server.on_connect_failed(now, leader, &mut out);
                    return self.carry(learner, out);
                }
                let link = self.next_link;
                self.next_link += 1;
                let incarnations = (self.nodes[&learner].incarnation, self.nodes[&leader].incarnation);
                self.links.insert(link, Link { learner, leader, incarnations, alive: true, last: (0, 0) });
                self.nodes.get_mut(&leader).expect("up").server.on_link_accepted(link);
                self.trace(|| format!("link {link} open {learner} -> {leader}"));
                let at = self.delay(learner, leader);
                self.schedule(at, Event::LinkOpen { link });
            }
            Event::LinkOpen { link } => {
                let Some(l) = self.links.get(&link) else { return };
                let (learner, leader, alive) = (l.learner, l.leader, l.alive);
                if !alive || !self.link_ends_current(link) {
                    return;
                }
                let now = self.local_now(learner);
                let mut out = Vec::new();
                self.nodes.get_mut(&learner).expect("up").server.on_link_connected(now, link, leader, &mut out);
                self.carry(learner, out);
            }
            Event::Wire { link, to, wire } => {
                if !self.links.get(&link).is_some_and(|l| l.alive) || !self.link_ends_current(link) {
                    return;
                }
                self.trace(|| format!("wire {link} -> {to}: {}", describe_wire(&wire)));
                let now = self.local_now(to);
                let mut out = Vec::new();
                self.nodes.get_mut(&to).expect("up").server.on_wire(now, link, wire, &mut out);
                self.carry(to, out);
            }
            Event::LinkClosed { link, to } => {
                if !self.up(to) {
                    return;
                }
                let Some(l) = self.links.get(&link) else { return };
                let current = if to == l.learner { l.incarnations.0 } else { l.incarnations.1 };
                if self.nodes[&to].incarnation != current {
                    return;
                }
                self.trace(|| format!("link {link} closed at {to}"));
                let now = self.local_now(to);
                let mut out = Vec::new();
                self.nodes.get_mut(&to).expect("up").server.on_link_closed(now, link, &mut out);
                self.carry(to, out);
            }
            Event::Flushed { server } => {
                if !self.up(server) {
                    return;
                }
                if self.config.faults.disk && self.faults_on && self.rng.chance(2) {
                    // fsync failed: the runtime exits; what was pending is lost
                    // except for a prefix that reached the disk.
                    *self.report.faults.entry("fsync failure").or_default() += 1;
                    self.trace(|| format!("fsync failure on {server}"));
                    return self.crash(server);
                }
                let now = self.local_now(server);
                let mut out = Vec::new();
                self.nodes.get_mut(&server).expect("up").server.on_flushed(now, &mut out);
                self.carry(server, out);
            }
            Event::EpochWritten { server, accepted } => {
                if !self.up(server) {
                    return;
                }
                let now = self.local_now(server);
                let mut out = Vec::new();
                self.nodes.get_mut(&server).expect("up").server.on_epoch_written(now, accepted, &mut out);
                self.carry(server, out);
            }
            Event::ClientConnOpened { conn } => {
                let Some(c) = self.conns.get(&conn) else { return };
                let (client, server, incarnation) = (c.client, c.server, c.incarnation);
                let accepted = if self.up(server) && self.nodes[&server].incarnation == incarnation && c.alive {
                    self.nodes.get_mut(&server).expect("up").server.accept_client()
                } else {
                    None
                };
                match accepted {
                    Some(connection) => {
                        self.conns.get_mut(&conn).expect("exists").connection = Some(connection);
                        let now = self.now;
                        self.clients[client as usize].step = self.report.steps;
                        let out = self.clients[client as usize].on_connected(now, conn);
                        self.client_out(client, out);
                    }
                    None => {
                        self.trace(|| format!("client {client} refused by {server}"));
                        self.close_client_conn(conn, true)
                    }
                }
            }
            Event::ToServer { conn, msg } => {
                let Some(c) = self.conns.get(&conn) else { return };
                let (server, incarnation, connection, alive) = (c.server, c.incarnation, c.connection, c.alive);
                let Some(connection) = connection else { return };
                if !alive || !self.up(server) || self.nodes[&server].incarnation != incarnation {
                    return;
                }
                let now = self.local_now(server);
                let mut out = Vec::new();
                self.nodes.get_mut(&server).expect("up").server.on_client(now, connection, msg, &mut out);
                self.carry(server, out);
            }
            Event::ToClient { conn, frame } => {
                // Frames sent before a close still arrive (the FIN follows them).
                let Some(c) = self.conns.get(&conn) else { return };
                let client = c.client;
                let now = self.now;
                self.trace(|| describe_reply(client, conn, &frame));
                self.clients[client as usize].step = self.report.steps;
                let out = self.clients[client as usize].on_frame(now, conn, frame);
                self.client_out(client, out);
            }
            Event::ClientConnClosed { conn } => {
                let Some(c) = self.conns.remove(&conn) else { return };
                self.trace(|| format!("client {} connection {conn} to {} closed", c.client, c.server));
                self.clients[c.client as usize].step = self.report.steps;
                let out = self.clients[c.client as usize].on_closed(conn);
                self.client_out(c.client, out);
            }
            Event::ClientWake { client } => {
                if self.stopped_clients.contains(&client) {
                    // Silent: `start_client` wakes it again.
                    return;
                }
                let now = self.now;
                self.clients[client as usize].step = self.report.steps;
                let out = self.clients[client as usize].on_wake(now, self.faults_on && !self.clients_paused);
                self.client_out(client, out);
            }
            Event::Fault => {
                if !self.faults_on {
                    return;
                }
                self.inject_fault();
                let at = self.now + self.rng.between(FAULT_GAP_MS.0, FAULT_GAP_MS.1);
                self.schedule(at, Event::Fault);
            }
            Event::Operator { server } => self.operator(server),
            Event::Scripted(action) => {
                self.trace(|| format!("script: {action:?}"));
                match action {
                    Action::Crash(id) if self.up(id) => self.crash(id),
                    Action::Restart(id) if !self.up(id) => self.restart(id),
                    Action::Isolate(id) => {
                        let others: BTreeSet<ServerId> = self.nodes.keys().copied().filter(|other| *other != id).collect();
                        self.set_partition(vec![BTreeSet::from([id]), others]);
                    }
                    Action::Heal => self.partition.clear(),
                    Action::CrashAfterEpoch { learner, leader_after_ms } => self.armed_epoch_crash = Some((learner, leader_after_ms)),
                    Action::OnSend { from, to, kind, fault, delivered, after_ms } => {
                        self.armed_sends.push(SendTrigger { from, to, kind, fault, delivered, after_ms })
                    }
                    Action::PauseClients => self.clients_paused = true,
                    Action::ResumeClients => self.clients_paused = false,
                    Action::StepWallClock { server, by_ms } => self.step_wall_clock(server, by_ms),
                    Action::StopClient(client) => self.stop_client(client),
                    Action::StartClient(client) => self.start_client(client),
                    _ => {}
                }
            }
            Event::Crash { server, incarnation } => {
                if self.faults_on && self.up(server) && self.nodes[&server].incarnation == incarnation {
                    *self.report.faults.entry("targeted crash").or_default() += 1;
                    self.crash(server);
                }
            }
            Event::BreakLink { link } => {
                if self.faults_on && self.links.get(&link).is_some_and(|l| l.alive) {
                    *self.report.faults.entry("targeted link break").or_default() += 1;
                    self.break_link(link);
                }
            }
            Event::EndFaults => {
                self.faults_on = false;
                self.trace(|| "faults end; healing".to_string());
                self.partition.clear();
                let ids: Vec<ServerId> = self.nodes.keys().copied().collect();
                for id in ids {
                    self.nodes.get_mut(&id).expect("known").clogged_until = 0;
                    if !self.up(id) && self.nodes[&id].disk_state != DiskState::Refused {
                        self.restart(id);
                    }
                }
                for client in std::mem::take(&mut self.stopped_clients) {
                    self.trace(|| format!("client {client} starts"));
                }
                for client in 0..self.config.clients {
                    self.clients[client as usize].start_probe(self.now);
                    self.schedule(self.now + 1, Event::ClientWake { client });
                }
            }
        }
        let violations = self.invariants.take_violations();
        self.report.violations.extend(violations);
    }

    fn link_ends_current(&self, link: LinkId) -> bool {
        let Some(l) = self.links.get(&link) else { return false };
        self.up(l.learner)
            && self.up(l.leader)
            && self.nodes[&l.learner].incarnation == l.incarnations.0
            && self.nodes[&l.leader].incarnation == l.incarnations.1
    }

    /// Carries out a server's outputs.
    fn carry(&mut self, id: ServerId, out: Vec<Out>) {
        let refused = out.iter().any(|item| matches!(item, Out::Refused(_)));
        for item in out {
            match item {
                Out::Notify { to, notification } => {
                    if self.can_talk(id, to) {
                        let at = self.delay(id, to);
                        self.schedule(at, Event::Notify { to, notification });
                    }
                }
                Out::Connect { leader } => {
                    let at = self.delay(id, leader);
                    self.schedule(at, Event::Dial { learner: id, leader });
                }
                Out::Send { link, wire } => {
                    self.maybe_target_crash(id, &wire);
                    let kind = if self.armed_sends.is_empty() { None } else { self.kind_of(id, &wire) };
                    let described = kind.map(|_| describe_wire(&wire));
                    let delivery = self.send(id, link, wire);
                    if let (Some(kind), Some(described), Some(at)) = (kind, described, delivery) {
                        self.fire_send_trigger(id, link, kind, &described, at);
                    }
                }
                Out::CloseLink { link } => self.close_link(link, id),
                Out::Flush => {
                    let at = self.now + self.rng.between(FSYNC_MS.0, FSYNC_MS.1);
                    self.schedule(at, Event::Flushed { server: id });
                }
                Out::EpochWritten { accepted } => {
                    let at = self.now + self.rng.between(FSYNC_MS.0, FSYNC_MS.1);
                    self.schedule(at, Event::EpochWritten { server: id, accepted });
                    if !accepted {
                        self.maybe_target_crash_after_epoch(id, at);
                        if let Some((learner, leader_after_ms)) = self.armed_epoch_crash.filter(|(learner, _)| *learner == id) {
                            self.armed_epoch_crash = None;
                            let incarnation = self.nodes[&learner].incarnation;
                            self.schedule(at, Event::Crash { server: learner, incarnation });
                            let leader = self.nodes[&learner].server.peer.leader();
                            if let (Some(after), Some(leader)) = (leader_after_ms, leader) {
                                let incarnation = self.nodes[&leader].incarnation;
                                self.schedule(at + after, Event::Crash { server: leader, incarnation });
                            }
                        }
                    }
                }
                Out::ToClient { connection, frame } => {
                    let Some(conn) = self.conn_of(id, connection) else { continue };
                    let at = self.client_delay(conn, false);
                    self.schedule(at, Event::ToClient { conn, frame });
                }
                Out::CloseClient { connection } => {
                    if let Some(conn) = self.conn_of(id, connection) {
                        self.close_client_conn(conn, true);
                    }
                }
                Out::Logged { prev, txn } => self.invariants.on_logged(prev, txn),
                Out::Delivered { zxid, prev, digest, txn } => {
                    self.trace(|| format!("deliver {id} {zxid:#x} after {prev:#x}"));
                    self.invariants.on_delivered(id, zxid, prev, digest, &txn);
                }
                Out::Serving { state, epoch } => {
                    self.report.elections += 1;
                    let node = self.nodes.get_mut(&id).expect("known");
                    if node.disk_state == DiskState::Rejoining {
                        node.disk_state = DiskState::Healthy;
                    }
                    self.trace(|| format!("serving {id} {state:?} epoch {epoch}"));
                    let server = &self.nodes[&id].server;
                    self.invariants.on_serving(id, state, epoch, &server.disk, server.tree());
                }
                Out::Looking { reason } => {
                    // It reloaded from its disk, unless a refusal follows.
                    let node = self.nodes.get_mut(&id).expect("known");
                    if node.disk_state == DiskState::Damaged && !refused {
                        node.disk_state = DiskState::Healthy;
                    }
                    // The server has rebuilt itself from its own disk by now.
                    let zxid = self.nodes[&id].server.tree().last_processed_zxid();
                    self.trace(|| format!("looking {id} at {zxid:#x}: {reason}"))
                }
                Out::SessionExpired { session_id } => self.trace(|| format!("leader {id} expires session {session_id:#x}")),
                Out::Fatal(message) => self.report.violations.push(format!("Server {id}: {message}")),
                Out::RecoveryWarning { kind, text } => {
                    *self.report.faults.entry(kind).or_default() += 1;
                    self.trace(|| format!("recovery of {id}: {text}"));
                }
                Out::Refused(reason) => {
                    *self.report.faults.entry("refused start").or_default() += 1;
                    self.trace(|| format!("{id} refuses to start: {reason}"));
                    if !self.nodes[&id].server.disk.is_damaged() {
                        self.report.violations.push(format!("Disk: recovery refuses server {id}'s undamaged disk: {reason}"));
                    }
                    self.crash(id);
                    self.nodes.get_mut(&id).expect("known").disk_state = DiskState::Refused;
                    let at = self.now + self.rng.between(OPERATOR_DELAY_MS.0, OPERATOR_DELAY_MS.1);
                    self.schedule(at, Event::Operator { server: id });
                }
            }
        }
    }

    /// FoundationDB's "buggify" idea: crash a server right after it makes a
    /// promise the protocol depends on — a learner ACKing NEWLEADER — so that
    /// the window between the promise and its fsync gets exercised.
    fn maybe_target_crash(&mut self, id: ServerId, wire: &Wire) {
        if !self.config.faults.crash || !self.faults_on {
            return;
        }
        let Wire::Peer(crate::zab::peer::Msg::Ack { zxid }) = wire else { return };
        if crate::zab::counter_of(*zxid) != 0 {
            return;
        }
        // The learner, before its fsyncs land; or its leader, before the
        // epoch is established.
        let leader = self.nodes[&id].server.peer.leader();
        for (victim, per_mille) in [(Some(id), 100), (leader, 50)] {
            let Some(victim) = victim.filter(|v| self.up(*v)) else { continue };
            if self.rng.chance(per_mille) {
                let at = self.now + self.rng.between(0, 3);
                let incarnation = self.nodes[&victim].incarnation;
                self.schedule(at, Event::Crash { server: victim, incarnation });
            }
        }
    }

    /// A learner's currentEpoch write is durable at `at`: crash it right
    /// then, before anything else of its reaches the disk — the window in
    /// which a learner that moved its epoch before making the synced txns
    /// durable (ZOOKEEPER-3911, 4646) would lose them — and sometimes its
    /// leader soon after, so that the epoch fails and the learner's newer
    /// epoch can win the next election.
    fn maybe_target_crash_after_epoch(&mut self, id: ServerId, at: u64) {
        if !self.config.faults.crash || !self.faults_on {
            return;
        }
        let peer = &self.nodes[&id].server.peer;
        if peer.state() == crate::zab::election::ServerState::Leading || !self.rng.chance(100) {
            return;
        }
        let leader = peer.leader();
        let incarnation = self.nodes[&id].incarnation;
        self.schedule(at, Event::Crash { server: id, incarnation });
        if let Some(leader) = leader.filter(|leader| self.up(*leader)) {
            if self.rng.chance(500) {
                let later = at + self.rng.between(5, 50);
                let incarnation = self.nodes[&leader].incarnation;
                self.schedule(later, Event::Crash { server: leader, incarnation });
            }
        }
    }

    /// Puts `wire` on `link`: when it will be delivered, if it goes out.
    fn send(&mut self, from: ServerId, link: LinkId, wire: Wire) -> Option<u64> {
        let l = self.links.get(&link)?;
        if !l.alive {
            return None;
        }
        let (learner, leader) = (l.learner, l.leader);
        let to = if from == learner { leader } else { learner };
        if !self.can_talk(from, to) {
            // A partition: the connection silently stops delivering (no FIN
            // crosses it); both ends find out by their own timeouts.
            self.links.get_mut(&link).expect("exists").alive = false;
            return None;
        }
        let at = self.delay(from, to);
        let l = self.links.get_mut(&link).expect("exists");
        let slot = if to == learner { &mut l.last.0 } else { &mut l.last.1 };
        let at = at.max(*slot);
        *slot = at;
        self.schedule(at, Event::Wire { link, to, wire });
        Some(at)
    }

    /// The kind of a quorum message, as `Action::OnSend` names them.
    fn kind_of(&self, from: ServerId, wire: &Wire) -> Option<MsgKind> {
        use crate::zab::peer::Msg;
        let Wire::Peer(msg) = wire else {
            return matches!(wire, Wire::Snap { .. }).then_some(MsgKind::Snap);
        };
        Some(match msg {
            Msg::Diff { .. } => MsgKind::Diff,
            Msg::Trunc { .. } => MsgKind::Trunc,
            Msg::NewLeader { .. } => MsgKind::NewLeader,
            Msg::UpToDate => MsgKind::UpToDate,
            Msg::Proposal { .. } => MsgKind::Proposal,
            Msg::Commit { .. } => MsgKind::Commit,
            // A learner ACKs NEWLEADER before it serves, and UPTODATE with
            // the same zxid as it starts serving.
            Msg::Ack { zxid } if crate::zab::counter_of(*zxid) == 0 => {
                if self.nodes[&from].server.is_serving() {
                    return None;
                }
                MsgKind::NewLeaderAck
            }
            Msg::Ack { .. } => MsgKind::ProposalAck,
            _ => return None,
        })
    }

    /// `from` put a `kind` message on `link`, to be delivered at
    /// `delivery`: schedule the fault of every armed `Action::OnSend` it
    /// matches, and disarm them.
    fn fire_send_trigger(&mut self, from: ServerId, link: LinkId, kind: MsgKind, described: &str, delivery: u64) {
        let Some(l) = self.links.get(&link) else { return };
        let to = if from == l.learner { l.leader } else { l.learner };
        let matches = |t: &SendTrigger| t.from == from && t.kind == kind && t.to.is_none_or(|want| want == to);
        let (fired, armed): (Vec<SendTrigger>, Vec<SendTrigger>) = self.armed_sends.iter().partition(|t| matches(t));
        self.armed_sends = armed;
        for trigger in fired {
            let at = if trigger.delivered { delivery } else { self.now } + trigger.after_ms;
            self.trace(|| format!("script: on {kind:?} {from} -> {to} ({described}): {:?} at {at}", trigger.fault));
            match trigger.fault {
                SendFault::CrashSender | SendFault::CrashReceiver => {
                    let victim = if trigger.fault == SendFault::CrashSender { from } else { to };
                    let incarnation = self.nodes[&victim].incarnation;
                    self.schedule(at, Event::Crash { server: victim, incarnation });
                }
                SendFault::BreakLink => self.schedule(at, Event::BreakLink { link }),
            }
        }
    }

    /// `by` closed the link: the other end hears of it if the network lets
    /// the FIN through.
    fn close_link(&mut self, link: LinkId, by: ServerId) {
        let Some(l) = self.links.get_mut(&link) else { return };
        let was_alive = l.alive;
        l.alive = false;
        let other = if by == l.learner { l.leader } else { l.learner };
        let last = l.last.0.max(l.last.1);
        if was_alive && self.can_talk(by, other) {
            let at = self.delay(by, other).max(last);
            self.schedule(at, Event::LinkClosed { link, to: other });
        }
    }

    fn conn_of(&self, server: ServerId, connection: ConnectionId) -> Option<u64> {
        self.conns.iter().find(|(_, c)| c.server == server && c.connection == Some(connection) && c.alive).map(|(key, _)| *key)
    }

    fn client_delay(&mut self, conn: u64, to_server: bool) -> u64 {
        let base = self.now + self.rng.between(NET_DELAY_MS.0, NET_DELAY_MS.1);
        let Some(c) = self.conns.get_mut(&conn) else { return base };
        let slot = if to_server { &mut c.last.1 } else { &mut c.last.0 };
        let at = base.max(*slot);
        *slot = at;
        at
    }

    /// Closes a client connection; `tell_client` when the server (or the
    /// network) closed it: the client hears after every frame already sent.
    fn close_client_conn(&mut self, conn: u64, tell_client: bool) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !c.alive {
            return;
        }
        c.alive = false;
        let (server, connection, incarnation) = (c.server, c.connection, c.incarnation);
        if let Some(connection) = connection {
            if self.up(server) && self.nodes[&server].incarnation == incarnation {
                self.nodes.get_mut(&server).expect("up").server.client_closed(connection);
            }
        }
        if tell_client {
            let at = self.client_delay(conn, false);
            self.schedule(at, Event::ClientConnClosed { conn });
        } else {
            self.conns.remove(&conn);
        }
    }

    fn client_out(&mut self, client: u32, out: Vec<ClientOut>) {
        for item in out {
            match item {
                ClientOut::Open { server } => {
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    let incarnation = self.nodes[&server].incarnation;
                    self.conns.insert(conn, ClientConn { client, server, incarnation, connection: None, alive: true, last: (0, 0) });
                    self.trace(|| format!("client {client} connection {conn} to {server}"));
                    let at = self.now + self.rng.between(NET_DELAY_MS.0, NET_DELAY_MS.1);
                    self.schedule(at, Event::ClientConnOpened { conn });
                }
                ClientOut::Send { conn, msg } => {
                    if let ClientMsg::Request { xid, request } = &msg {
                        self.trace(|| format!("client {client} connection {conn} sends xid {xid} {}", crate::proto::op::name(request.opcode())));
                    }
                    if self.conns.get(&conn).is_some_and(|c| c.alive) {
                        let at = self.client_delay(conn, true);
                        self.schedule(at, Event::ToServer { conn, msg });
                    }
                }
                ClientOut::Close { conn } => self.close_client_conn(conn, false),
                ClientOut::WakeAt(at) => self.schedule(at.max(self.now + 1), Event::ClientWake { client }),
            }
        }
    }

    // ---- faults -------------------------------------------------------------

    fn crash(&mut self, id: ServerId) {
        let pending = self.nodes[&id].server.disk.pending.len();
        let kept = self.rng.index(pending + 1);
        // The append after the surviving prefix may have reached the disk in
        // part: a torn record (never an fsynced one).
        let tear = self.config.faults.torn && self.faults_on && kept < pending && self.rng.chance(TORN_PER_MILLE);
        let links = self.nodes[&id].server.links();
        let node = self.nodes.get_mut(&id).expect("known");
        node.up = false;
        let torn = node.server.disk.crash(kept, tear);
        if torn {
            *self.report.faults.entry("torn write").or_default() += 1;
        }
        // The kernel closes a dead process's sockets: peers see FIN/RST.
        for link in links {
            self.close_link(link, id);
        }
        let conns: Vec<u64> = self.conns.iter().filter(|(_, c)| c.server == id && c.alive).map(|(k, _)| *k).collect();
        for conn in conns {
            self.close_client_conn(conn, true);
        }
        self.trace(|| format!("crash {id} (kept {kept} un-fsynced appends{})", if torn { ", the next one torn" } else { "" }));
    }

    fn restart(&mut self, id: ServerId) {
        let node = self.nodes.get_mut(&id).expect("known");
        let disk = node.server.disk.clone();
        let config = node.server.config.clone();
        let (secret, bugs) = (node.server.secret, node.server.bugs);
        node.server = Server::new(id, config, disk, secret, bugs);
        node.up = true;
        node.incarnation += 1;
        self.boot(id);
    }

    /// Corruption on a minority: one server's durable data gets a damaged
    /// record — a log record above its snapshot with a valid record after
    /// it (mid-log: recovery refuses, as a damaged last record would pass
    /// for a torn write and be cut), or its newest snapshot (recovery falls
    /// back to an older snapshot and the log, or refuses). The rule that
    /// keeps it a minority: at most one server's disk is damaged, refused or
    /// rejoining empty at a time, and the operator brings a wiped server
    /// back only once every other voter serves and holds every committed
    /// txn (`Sim::operator`), so that every quorum keeps a copy of all that
    /// was committed. A running server goes on from memory; its next
    /// recovery (restart, or the reload when it goes back to LOOKING) finds
    /// the damage. Returns whether a record was damaged.
    fn corrupt(&mut self) -> bool {
        if self.nodes.values().any(|node| node.disk_state != DiskState::Healthy) {
            return false;
        }
        let ids: Vec<ServerId> = self.nodes.keys().copied().collect();
        let Some(&id) = self.rng.choose(&ids) else { return false };
        let disk = &self.nodes[&id].server.disk;
        let base = disk.base.last_processed_zxid();
        let mid_log: Vec<i64> = match disk.log.split_last() {
            Some((_, before_last)) => before_last.iter().map(|(zxid, _)| *zxid).filter(|zxid| *zxid > base).collect(),
            None => Vec::new(),
        };
        let snapshot = mid_log.is_empty() || self.rng.chance(SNAPSHOT_CORRUPTION_PER_MILLE);
        let zxid = if snapshot { None } else { self.rng.choose(&mid_log).copied() };
        let node = self.nodes.get_mut(&id).expect("known");
        match zxid {
            Some(zxid) => {
                node.server.disk.damaged.insert(zxid);
            }
            None => node.server.disk.snapshot_damaged = true,
        }
        node.disk_state = DiskState::Damaged;
        let up = node.up;
        self.trace(|| match zxid {
            Some(zxid) => format!("corrupt {id}'s log record {zxid:#x} (up {up})"),
            None => format!("corrupt {id}'s newest snapshot {base:#x} (up {up})"),
        });
        true
    }

    /// The operator's procedure for a server whose recovery refused its
    /// disk: wipe its data directories and start it empty, so that it
    /// rejoins by SNAP — but only once every other voter is up, serving and
    /// holds every committed txn (what `srvr` on each shows), since until
    /// the wiped server has synced, the other voters' copies are the only
    /// ones a quorum that includes it has. Otherwise look again later.
    fn operator(&mut self, id: ServerId) {
        if self.nodes[&id].disk_state != DiskState::Refused {
            return;
        }
        let committed = self.invariants.committed_max();
        let voters = 1..=self.config.voters;
        let safe = voters.filter(|voter| *voter != id).all(|voter| {
            let node = &self.nodes[&voter];
            node.up
                && node.server.is_serving()
                && node.server.tree().last_processed_zxid() >= committed
                && node.server.disk.last_logged().max(node.server.disk.base.last_processed_zxid()) >= committed
        });
        if !safe {
            self.trace(|| format!("operator waits to wipe {id}: not every other voter serves with {committed:#x}"));
            let at = self.now + self.rng.between(OPERATOR_RETRY_MS.0, OPERATOR_RETRY_MS.1);
            self.schedule(at, Event::Operator { server: id });
            return;
        }
        *self.report.faults.entry("operator wipe").or_default() += 1;
        self.trace(|| format!("operator wipes {id} and restarts it"));
        let node = self.nodes.get_mut(&id).expect("known");
        node.server.disk = Disk::new();
        node.disk_state = DiskState::Rejoining;
        self.restart(id);
    }

    /// A reset of `link`: it stops delivering, and both ends hear of it.
    fn break_link(&mut self, link: LinkId) {
        let (learner, leader) = (self.links[&link].learner, self.links[&link].leader);
        self.trace(|| format!("break link {link}"));
        self.links.get_mut(&link).expect("exists").alive = false;
        for to in [learner, leader] {
            let at = self.now + self.rng.between(1, 20);
            self.schedule(at, Event::LinkClosed { link, to });
        }
    }

    /// Only servers in one group talk; links crossing groups stop delivering.
    fn set_partition(&mut self, groups: Vec<BTreeSet<ServerId>>) {
        self.partition = groups;
        for link in self.links.values_mut() {
            if !self.partition.iter().any(|g| g.contains(&link.learner) && g.contains(&link.leader)) {
                link.alive = false;
            }
        }
    }

    fn inject_fault(&mut self) {
        let f = self.config.faults;
        let ids: Vec<ServerId> = self.nodes.keys().copied().collect();
        // A server whose recovery refused its disk waits for the operator.
        let down: Vec<ServerId> =
            ids.iter().copied().filter(|id| !self.up(*id) && self.nodes[id].disk_state != DiskState::Refused).collect();
        let mut kinds: Vec<&'static str> = Vec::new();
        if f.crash {
            kinds.extend(["crash", "restart", "restart"]);
        }
        if f.partition {
            kinds.extend(["partition", "heal"]);
        }
        if f.clog {
            kinds.push("clog");
        }
        if f.link_break {
            kinds.push("link break");
        }
        if f.clock {
            kinds.extend(["clock jump", "wall clock step"]);
        }
        if f.corruption {
            kinds.push("corruption");
        }
        let Some(&kind) = self.rng.choose(&kinds) else { return };
        match kind {
            "crash" => {
                let up: Vec<ServerId> = ids.iter().copied().filter(|id| self.up(*id)).collect();
                // Keep at most two servers down at once.
                if down.len() >= 2 {
                    return;
                }
                let Some(&victim) = self.rng.choose(&up) else { return };
                self.crash(victim);
            }
            "restart" => {
                let Some(&id) = self.rng.choose(&down) else { return };
                self.trace(|| format!("restart {id}"));
                self.restart(id);
            }
            "partition" => {
                let mut a = BTreeSet::new();
                let mut b = BTreeSet::new();
                for &id in &ids {
                    if self.rng.chance(500) {
                        a.insert(id);
                    } else {
                        b.insert(id);
                    }
                }
                self.trace(|| format!("partition {a:?} | {b:?}"));
                self.set_partition(vec![a, b]);
            }
            "heal" => {
                self.trace(|| "heal".to_string());
                self.partition.clear();
            }
            "clog" => {
                let Some(&id) = self.rng.choose(&ids) else { return };
                let until = self.now + self.rng.between(100, 2_000);
                self.trace(|| format!("clog {id} until {until}"));
                self.nodes.get_mut(&id).expect("known").clogged_until = until;
            }
            "link break" => {
                let alive: Vec<LinkId> = self.links.iter().filter(|(_, l)| l.alive).map(|(k, _)| *k).collect();
                let Some(&link) = self.rng.choose(&alive) else { return };
                self.break_link(link);
            }
            "clock jump" => {
                // The process (or its VM) was paused: its monotonic clock,
                // and the wall clock with it, is ahead from now on.
                let Some(&id) = self.rng.choose(&ids) else { return };
                let jump = self.rng.between(100, 3_000);
                self.trace(|| format!("monotonic clock of {id} jumps ahead {jump} ms (paused)"));
                self.nodes.get_mut(&id).expect("known").offset_ms += jump;
            }
            "wall clock step" => {
                let Some(&id) = self.rng.choose(&ids) else { return };
                let by_ms = if self.rng.chance(WALL_STEP_BACK_LARGE_PER_MILLE) {
                    -(self.rng.between(WALL_STEP_BACK_LARGE_MS.0, WALL_STEP_BACK_LARGE_MS.1) as i64)
                } else {
                    let step = self.rng.between(WALL_STEP_MS.0, WALL_STEP_MS.1) as i64;
                    if self.rng.chance(500) { -step } else { step }
                };
                self.step_wall_clock(id, by_ms);
            }
            "corruption" => {
                if !self.corrupt() {
                    return;
                }
            }
            _ => return,
        }
        *self.report.faults.entry(kind).or_default() += 1;
    }
}

/// "client 2 connection 7 gets xid 12 zxid 0x100000004 err 0" (a reply
/// header; a handshake's answer has none).
fn describe_reply(client: u32, conn: u64, frame: &Bytes) -> String {
    let mut reader = crate::proto::Reader::new(frame.slice(4.min(frame.len())..));
    match <crate::proto::ReplyHeader as crate::proto::Jute>::decode(&mut reader) {
        Ok(header) => format!("client {client} connection {conn} gets xid {} zxid {:#x} err {}", header.xid, header.zxid, header.err),
        Err(_) => format!("client {client} connection {conn} gets a frame"),
    }
}

fn describe_wire(wire: &Wire) -> String {
    match wire {
        Wire::Peer(msg) => match msg {
            crate::zab::peer::Msg::Proposal { zxid, .. } => format!("PROPOSAL {zxid:#x}"),
            crate::zab::peer::Msg::Inform { zxid, .. } => format!("INFORM {zxid:#x}"),
            crate::zab::peer::Msg::Diff { zxid } => format!("DIFF {zxid:#x}"),
            crate::zab::peer::Msg::Trunc { zxid } => format!("TRUNC {zxid:#x}"),
            crate::zab::peer::Msg::NewLeader { zxid } => format!("NEWLEADER {zxid:#x}"),
            crate::zab::peer::Msg::Commit { zxid } => format!("COMMIT {zxid:#x}"),
            crate::zab::peer::Msg::Ack { zxid } => format!("ACK {zxid:#x}"),
            crate::zab::peer::Msg::Reply(_) => "REPLY".into(),
            other => format!("{other:?}"),
        },
        Wire::Forward(_) => "FORWARD".into(),
        Wire::Snap { zxid, .. } => format!("SNAP {zxid:#x}"),
    }
}

fn planted_peer_bugs(planted: Planted) -> crate::zab::peer::PlantedBugs {
    crate::zab::peer::PlantedBugs {
        commit_on_minority: planted == Planted::CommitOnMinority,
        ack_before_fsync: planted == Planted::AckBeforeFsync,
        newleader_before_persist: planted == Planted::NewLeaderBeforePersist,
        reply_before_commit: planted == Planted::ReplyBeforeCommit,
    }
}

/// Runs one seed. A panic in the core is a finding like any other.
pub fn run(config: SimConfig) -> Report {
    let seed = config.seed;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Sim::new(config).run())) {
        Ok(report) => report,
        Err(panic) => {
            let message = crate::fuzzing::panic_message(&*panic);
            Report { seed, violations: vec![format!("Panic: {message}")], ..Report::default() }
        }
    }
}
