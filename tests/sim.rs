//! The deterministic simulator's seed budget: whole ensembles of the real
//! core under every fault, checked after every step (src/sim). A failure
//! prints the seed, what was violated and the command that replays it.
//!
//! Environment: `SIM_SEEDS` (default 500) and `SIM_FIRST_SEED` (default 0).

use warden::sim::{self, Faults, Planted, SimConfig};

fn env_u64(name: &str, default: u64) -> u64 {
    warden::fuzzing::env_u64(name).unwrap_or(default)
}

fn failure(config: &SimConfig, report: &sim::Report) -> String {
    format!("{}\n  {}\n  replay: {}", report.summary(), report.violations.join("\n  "), report.replay_command(config))
}

#[test]
fn seed_budget_passes_with_every_fault() {
    let first = env_u64("SIM_FIRST_SEED", 0);
    let seeds = env_u64("SIM_SEEDS", 500);
    let mut totals = (0u64, 0u64, 0u64, 0u64);
    let mut faults = std::collections::BTreeMap::new();
    let mut ops = std::collections::BTreeMap::new();
    for seed in first..first + seeds {
        let config = SimConfig::new(seed);
        let report = sim::run(config.clone());
        assert!(report.ok(), "{}", failure(&config, &report));
        totals.0 += report.steps;
        totals.1 += report.simulated_ms;
        totals.2 += report.client_ops;
        totals.3 += report.acked_writes;
        for (kind, count) in &report.faults {
            *faults.entry(*kind).or_insert(0u64) += count;
        }
        for (kind, (sent, answered)) in &report.ops {
            let total: &mut (u64, u64) = ops.entry(*kind).or_default();
            total.0 += sent;
            total.1 += answered;
        }
    }
    println!("{seeds} seeds: client operations (sent, answered) {ops:?}");
    // Every kind of operation is issued and answered, and the outcomes
    // that exercise ACLs, failed multis and session expiry are reached.
    for kind in [
        "create",
        "create ephemeral",
        "create sequential",
        "delete",
        "setData",
        "getData",
        "exists",
        "getChildren",
        "setACL",
        "getACL",
        "sync",
        "multi",
        "closeSession",
        "NOAUTH answer",
        "multi done",
        "multi failed",
        "session expired",
    ] {
        assert!(ops.get(kind).is_some_and(|&(_, answered)| answered > 0), "no {kind} answered: {ops:?}");
    }
    println!(
        "{seeds} seeds: {} steps, {} simulated s, {} client ops, {} acked writes; faults {faults:?}",
        totals.0,
        totals.1 / 1000,
        totals.2,
        totals.3
    );
    assert!(totals.3 > seeds * 100, "the clients must get writes through: {totals:?}");
    for kind in [
        "crash",
        "restart",
        "partition",
        "heal",
        "clog",
        "link break",
        // A monotonic clock jumped ahead (a paused process), and NTP
        // stepped a wall clock back or forward.
        "clock jump",
        "wall clock step",
        "fsync failure",
        "targeted crash",
        // A crash tore the append after the surviving prefix, and a later
        // recovery cut it as a torn tail.
        "torn write",
        "torn tail cut",
        // A durable record or snapshot was corrupted on one server; its
        // recovery refused, and the operator wiped it so that it rejoined
        // empty. (Falling back from an invalid snapshot to an older one is
        // allowed only when the log passes through the invalid one's zxid;
        // the simulated servers' snapshots all come from SNAP, whose txns
        // their logs rarely hold, so such falls back are rare here and not
        // required: storage::recovery's tests cover both outcomes.)
        "corruption",
        "refused start",
        "operator wipe",
    ] {
        assert!(faults.get(kind).copied().unwrap_or(0) > 0, "no {kind} injected: {faults:?}");
    }
}

#[test]
fn a_seed_replays_identically() {
    for seed in [3, 11] {
        let mut config = SimConfig::new(seed);
        config.trace = true;
        let first = sim::run(config.clone());
        let second = sim::run(config);
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.steps, second.steps, "seed {seed}");
        assert_eq!(first.trace, second.trace, "seed {seed}");
        assert!(first.trace.len() > 1000, "seed {seed}: {} trace lines", first.trace.len());
    }
    // Different seeds take different paths.
    assert_ne!(sim::run(SimConfig::new(1)).trace_hash, sim::run(SimConfig::new(2)).trace_hash);
}

#[test]
fn without_faults_everything_commits() {
    for seed in 0..20 {
        let mut config = SimConfig::new(seed);
        config.faults = Faults::NONE;
        let report = sim::run(config.clone());
        assert!(report.ok(), "{}", failure(&config, &report));
        assert!(report.acked_writes > 500, "{}", report.summary());
    }
}

/// Each planted bug must be caught within the seed budget: a checker that
/// cannot catch a known bug is not done.
fn caught_within(planted: Planted, budget: u64) -> (u64, Vec<String>) {
    for seed in 0..budget {
        let mut config = SimConfig::new(seed);
        config.planted = planted;
        let report = sim::run(config);
        if !report.ok() {
            return (seed, report.violations);
        }
    }
    panic!("planted bug {} not caught in {budget} seeds", planted.name());
}

#[test]
fn planted_commit_on_minority_is_caught() {
    let (seed, violations) = caught_within(Planted::CommitOnMinority, 200);
    println!("caught at seed {seed}: {violations:?}");
}

#[test]
fn planted_ack_before_fsync_is_caught() {
    let (seed, violations) = caught_within(Planted::AckBeforeFsync, 500);
    println!("caught at seed {seed}: {violations:?}");
}

#[test]
fn planted_skip_trunc_is_caught() {
    let (seed, violations) = caught_within(Planted::SkipTrunc, 200);
    println!("caught at seed {seed}: {violations:?}");
}

/// Corruption on a minority is survivable only because recovery refuses a
/// corrupt record and the operator wipes the server: if recovery skipped the
/// record and started, the server's tree would silently differ from the
/// others', and the checkers must say so.
#[test]
fn planted_ignore_corruption_is_caught() {
    let (seed, violations) = caught_within(Planted::IgnoreCorruption, 200);
    println!("caught at seed {seed}: {violations:?}");
}

/// The session checks (`sim::session_order`): a watch event reaches its
/// session before any reply that reveals the change that fired it, and a
/// reconnect's setWatches reports what changed while the session was away.
fn caught_by_session_order(planted: Planted) {
    let (seed, violations) = caught_within(planted, 20);
    assert!(
        violations.iter().any(|violation| violation.starts_with("SessionOrder:") && violation.contains("WatchBeforeData")),
        "seed {seed} failed, but not by the session checker: {violations:?}"
    );
    println!("caught at seed {seed}: {violations:?}");
}

#[test]
fn planted_watch_event_after_reply_is_caught() {
    caught_by_session_order(Planted::WatchEventAfterReply);
}

#[test]
fn planted_set_watches_from_server_zxid_is_caught() {
    caught_by_session_order(Planted::SetWatchesFromServerZxid);
}

/// A learner answers a forwarded sync (or failure) when the leader's reply
/// reaches it, after applying what came before it; a leader that sends the
/// reply ahead of the COMMIT it waited for lets the sync overtake the
/// client's write sent before it (found by this simulator in warden).
#[test]
fn planted_reply_before_commit_is_caught() {
    let (seed, violations) = caught_within(Planted::ReplyBeforeCommit, 20);
    assert!(
        violations.iter().any(|violation| violation.contains("FifoOrder")),
        "seed {seed} failed, but not on FIFO order: {violations:?}"
    );
    println!("caught at seed {seed}: {violations:?}");
}

/// ZOOKEEPER-3911 / 4646: a learner must make the txns of its sync durable
/// before it moves its currentEpoch and ACKs NEWLEADER. Schedule: 1 falls
/// behind (crashed) while 3 and 2 commit; 2 goes down; 1 returns and syncs
/// from 3 by DIFF and crashes the moment its currentEpoch is on disk, 3
/// right after (the epoch never establishes); 1 and 2 return. 1's newer
/// currentEpoch wins the election, so 1 must still hold everything 3 and 2
/// committed. With the planted bug it does not, and PrimaryIntegrity says so.
fn zookeeper_3911(seed: u64, planted: Planted) -> (SimConfig, sim::Report) {
    use warden::sim::Action;
    let mut config = SimConfig::new(seed);
    config.voters = 3;
    config.observers = 0;
    config.clients = 3;
    config.faults = Faults::NONE;
    config.planted = planted;
    config.duration_ms = 12_000;
    config.script = vec![
        (2_000, Action::Crash(1)),
        (4_000, Action::Crash(2)),
        (4_200, Action::CrashAfterEpoch { learner: 1, leader_after_ms: Some(20) }),
        (4_300, Action::Restart(1)),
        (6_000, Action::Restart(2)),
        (6_000, Action::Restart(1)),
        (9_000, Action::Restart(3)),
    ];
    let report = sim::run(config.clone());
    (config, report)
}

#[test]
fn regression_zookeeper_3911_sync_durable_before_newleader_ack() {
    for seed in 0..10 {
        let (config, report) = zookeeper_3911(seed, Planted::None);
        assert!(report.ok(), "{}", failure(&config, &report));
        assert!(report.faults.get("targeted crash").copied().unwrap_or(0) >= 1, "the schedule must hit its window: {}", report.summary());
    }
}

#[test]
fn planted_newleader_before_persist_is_caught() {
    let caught: Vec<u64> = (0..10).filter(|&seed| !zookeeper_3911(seed, Planted::NewLeaderBeforePersist).1.ok()).collect();
    assert!(!caught.is_empty(), "the planted bug survived every seed of the ZOOKEEPER-3911 schedule");
    println!("caught at seeds {caught:?}");
}

/// How the leader's first sync packet answered a learner (from the trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncPacket {
    Diff(i64),
    Trunc(i64),
    Snap(i64),
}

/// One sync of `learner` seen in a trace: its last logged zxid (from its
/// ACKEPOCH, 0 if the trace lost it), the leader, and the leader's answer.
#[derive(Debug, Clone, Copy)]
struct Synced {
    leader: u64,
    learner_last: i64,
    packet: SyncPacket,
}

/// The zxid written after `key` in a trace line: `0x` hex (as the trace
/// prints a SNAP) or decimal (a message's `Debug` form).
fn zxid_after(line: &str, key: &str) -> Option<i64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits = |text: &str, radix: u32| text.find(|c: char| !c.is_digit(radix)).unwrap_or(text.len());
    match rest.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(&hex[..digits(hex, 16)], 16).ok(),
        None => rest[..digits(rest, 10)].parse().ok(),
    }
}

/// Every sync of `learner` in the trace from `after_ms` on, in order. Trace
/// lines: "link L open A -> B", "wire L -> B: AckEpoch { last_logged_zxid:
/// N, .. }", "wire L -> A: DIFF 0x..", "TRUNC 0x.." or "SNAP 0x..".
fn syncs_of(trace: &[String], learner: u64, after_ms: u64) -> Vec<Synced> {
    let mut links = std::collections::BTreeMap::new();
    let mut last_logged = std::collections::BTreeMap::new();
    let mut syncs = Vec::new();
    for line in trace {
        let line = line.trim_start();
        let Some((at, text)) = line.split_once(' ') else { continue };
        let Ok(at_ms) = at.parse::<u64>() else { continue };
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["link", link, "open", from, "->", to, ..] if from.parse() == Ok(learner) => {
                links.insert(link.to_string(), to.parse::<u64>().expect("leader id"));
            }
            ["wire", link, "->", _, "AckEpoch", ..] if links.contains_key(*link) => {
                last_logged.insert(link.to_string(), zxid_after(text, "last_logged_zxid: ").expect("zxid"));
            }
            ["wire", link, "->", to, kind, ..] if links.contains_key(*link) && *to == format!("{learner}:") && at_ms >= after_ms => {
                let packet = match *kind {
                    "DIFF" => SyncPacket::Diff(zxid_after(text, "DIFF ").expect("zxid")),
                    "TRUNC" => SyncPacket::Trunc(zxid_after(text, "TRUNC ").expect("zxid")),
                    "SNAP" => SyncPacket::Snap(zxid_after(text, "SNAP ").expect("zxid")),
                    _ => continue,
                };
                let learner_last = last_logged.get(*link).copied().unwrap_or(0);
                syncs.push(Synced { leader: links[*link], learner_last, packet });
            }
            _ => {}
        }
    }
    syncs
}

/// ZOOKEEPER-1154 / 1156: the server with the highest zxid is absent when
/// the others elect. Leader 3 is cut off and keeps logging its clients'
/// writes (never committed), crashes, and returns after 1 and 2 moved to a
/// new epoch. The clients pause while it is away, so nothing commits in the
/// new epoch before 3 syncs: as ZooKeeper's LearnerHandler.syncFollower
/// does, the new leader TRUNCs 3 to the end of its own history ("newer than
/// committedLog, send trunc"), or sends an empty DIFF if 3 kept nothing
/// extra; never a SNAP, and never a DIFF that would keep 3's extra txns.
/// (With new-epoch commits in between, ZooKeeper cannot TRUNC across the
/// epoch boundary and SNAPs: `regression_zookeeper_1154_after_new_epoch_commits`.)
/// The new leader rebuilt its committed log from its own log when it went
/// back to LOOKING, so the other follower, if it lags (it missed the last
/// proposals 3 sent), is synced by DIFF from it, not by SNAP.
#[test]
fn regression_zookeeper_1154_highest_zxid_joins_late() {
    use warden::sim::Action;
    let mut lagging_follower_diffs = 0;
    for seed in 0..10 {
        let script = vec![
            (2_000, Action::Isolate(3)),
            (2_300, Action::Crash(3)),
            (2_300, Action::PauseClients),
            (3_000, Action::Heal),
            (3_100, Action::Restart(3)),
            (4_000, Action::ResumeClients),
        ];
        let config = schedule(seed, 4, 10_000, script);
        let report = sim::run(config.clone());
        assert!(report.ok(), "{}", failure(&config, &report));
        assert!(report.trace.iter().any(|line| line.contains("serving 3 Leading epoch 1")), "seed {seed}: 3 leads epoch 1");
        let returned = syncs_of(&report.trace, 3, 3_100);
        let first = returned.first().unwrap_or_else(|| panic!("seed {seed}: 3 was never synced"));
        match first.packet {
            SyncPacket::Trunc(to) => assert!(
                to < first.learner_last && warden::zab::epoch_of(to) == 1,
                "seed {seed}: TRUNC to {to:#x} for 3 at {:#x}",
                first.learner_last
            ),
            SyncPacket::Diff(zxid) => {
                assert_eq!(zxid, first.learner_last, "seed {seed}: only an empty DIFF may answer 3 (it kept nothing extra)")
            }
            SyncPacket::Snap(_) => panic!("seed {seed}: nothing committed in the new epoch, so 3 must get TRUNC, not {first:?}"),
        }
        // The other follower, synced when the new epoch began.
        let leader = first.leader;
        let other = [1, 2].into_iter().find(|&id| id != leader).expect("a follower");
        let joined = syncs_of(&report.trace, other, 2_000);
        let sync = joined.iter().find(|sync| sync.leader == leader).unwrap_or_else(|| panic!("seed {seed}: {other} never synced"));
        let SyncPacket::Diff(zxid) = sync.packet else {
            panic!("seed {seed}: follower {other} must be synced by DIFF from the leader's reloaded committed log: {sync:?}")
        };
        if zxid > sync.learner_last {
            lagging_follower_diffs += 1;
        }
        println!("seed {seed}: leader {leader}; 3 by {:?} at {:#x}; {other} by {:?} at {:#x}", first.packet, first.learner_last, sync.packet, sync.learner_last);
    }
    assert!(lagging_follower_diffs > 0, "no seed had the other follower lag behind the new leader");
}

/// The same absence, but the majority commits in its new epoch before 3
/// returns: its last zxid is in an epoch the new leader's history skips, and
/// ZooKeeper cannot TRUNC across that boundary ("Cannot send TRUNC to peer
/// sid: 3 peer zxid is from different epoch", then "fall back to use
/// snapshot"): SNAP, never a DIFF that would keep 3's extra txns.
#[test]
fn regression_zookeeper_1154_after_new_epoch_commits() {
    use warden::sim::Action;
    for seed in 0..10 {
        let script = vec![(2_000, Action::Isolate(3)), (2_300, Action::Crash(3)), (5_000, Action::Heal), (5_200, Action::Restart(3))];
        let config = schedule(seed, 4, 10_000, script);
        let report = sim::run(config.clone());
        assert!(report.ok(), "{}", failure(&config, &report));
        let returned = syncs_of(&report.trace, 3, 5_200);
        let first = returned.first().unwrap_or_else(|| panic!("seed {seed}: 3 was never synced"));
        let committed_in_epoch_2 = report.trace.iter().any(|line| line.contains(&format!("deliver {} 0x2", first.leader)));
        assert!(committed_in_epoch_2, "seed {seed}: the schedule must commit in epoch 2 before 3 returns");
        assert!(matches!(first.packet, SyncPacket::Snap(_)), "seed {seed}: 3 must get SNAP, got {first:?}");
        println!("seed {seed}: 3 at {:#x} by {:?}", first.learner_last, first.packet);
    }
}

/// DIFF after a leader restart: ZooKeeper's leader fills its committed log
/// from its txn log when it loads its database (ZKDatabase.loadDataBase), so
/// a restarted leader DIFFs a lagging follower instead of sending a SNAP.
/// Follower 1 crashes and falls behind while 2 and 3 commit; then the whole
/// ensemble goes down and comes back. Whoever leads, every learner of the new
/// epoch is synced by DIFF, 1 with the txns it missed.
#[test]
fn leader_restart_diffs_a_lagging_follower() {
    use warden::sim::Action;
    for seed in 0..10 {
        let script = vec![
            (2_000, Action::Crash(1)),
            (2_200, Action::Crash(2)),
            (2_200, Action::Crash(3)),
            (3_000, Action::Restart(1)),
            (3_000, Action::Restart(2)),
            (3_000, Action::Restart(3)),
        ];
        let config = schedule(seed, 4, 8_000, script);
        let report = sim::run(config.clone());
        assert!(report.ok(), "{}", failure(&config, &report));
        let lagging = syncs_of(&report.trace, 1, 3_000);
        let first = lagging.first().unwrap_or_else(|| panic!("seed {seed}: 1 was never synced after the restart"));
        let SyncPacket::Diff(zxid) = first.packet else { panic!("seed {seed}: 1 must be synced by DIFF, got {first:?}") };
        assert!(zxid > first.learner_last, "seed {seed}: 1 must have missed txns: {first:?}");
        for id in [2, 3].into_iter().filter(|&id| id != first.leader) {
            let other = syncs_of(&report.trace, id, 3_000);
            assert!(
                other.first().is_some_and(|sync| matches!(sync.packet, SyncPacket::Diff(_))),
                "seed {seed}: {id} must be synced by DIFF: {other:?}"
            );
        }
        println!("seed {seed}: leader {} DIFFed 1 from {:#x} to {zxid:#x}", first.leader, first.learner_last);
    }
}


// ---- named regression schedules ---------------------------------------------
//
// Each rebuilds the schedule of a ZooKeeper bug on three voters (server 3,
// with the highest id, leads the first epoch), with the clients' load and no
// random faults. Each runs over several seeds and checks two things: the run
// passes every checker, and the trace shows that the schedule really
// happened (the targeted fault fired at its message, the sync took the
// expected path, the victim came back and served), so that a schedule that
// silently stopped reaching its window fails instead of passing vacuously.
//
// Each server rebuilds its committed-log window from its own log when it
// reloads (as ZooKeeper's ZKDatabase does), so a newly elected leader picks
// DIFF, TRUNC or SNAP as ZooKeeper would; each schedule asserts the sync it
// exercises.

use warden::sim::{Action, MsgKind, SendFault};

/// Seeds each schedule runs over.
const SCHEDULE_SEEDS: std::ops::Range<u64> = 0..10;

/// A schedule run for one seed with a planted bug: a note on what happened,
/// or why the seed fails.
type PlantableSchedule = fn(u64, Planted) -> Result<String, String>;

/// Three voters, `clients` clients, no random faults, `script`, traced.
fn schedule(seed: u64, clients: u32, duration_ms: u64, script: Vec<(u64, Action)>) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.voters = 3;
    config.observers = 0;
    config.clients = clients;
    config.faults = Faults::NONE;
    config.duration_ms = duration_ms;
    config.trace = true;
    config.script = script;
    // Schedules count what commits in an epoch: no session ends or starts
    // on its own.
    config.session_churn = false;
    config
}

/// Runs a schedule; a checker's finding is an error.
fn run_schedule(config: &SimConfig) -> Result<sim::Report, String> {
    let report = sim::run(config.clone());
    if !report.ok() {
        return Err(format!("{}\n  (the replay command runs no script; rerun this test)\n  script: {:?}", failure(config, &report), config.script));
    }
    Ok(report)
}

/// Runs `check` for every schedule seed; the first seed that fails fails
/// the test with its reason.
fn over_seeds(name: &str, check: impl Fn(u64) -> Result<String, String>) {
    for seed in SCHEDULE_SEEDS {
        match check(seed) {
            Ok(note) => println!("{name} seed {seed}: {note}"),
            Err(reason) => panic!("{name} seed {seed}: {reason}"),
        }
    }
}

macro_rules! ensure {
    ($condition:expr, $($why:tt)+) => {
        if !$condition {
            return Err(format!($($why)+));
        }
    };
}

/// `Action::OnSend` whose fault strikes as the message is sent (a crashed
/// end takes the message with it).
fn on_send(from: u64, to: Option<u64>, kind: MsgKind, fault: SendFault) -> Action {
    Action::OnSend { from, to, kind, fault, delivered: false, after_ms: 0 }
}

/// `Action::OnSend` whose fault strikes `after_ms` after the receiver handled the message.
fn on_delivery(from: u64, to: Option<u64>, kind: MsgKind, fault: SendFault, after_ms: u64) -> Action {
    Action::OnSend { from, to, kind, fault, delivered: true, after_ms }
}

/// Queries over a run's trace ("<ms> <event>" lines).
struct Trace<'a>(&'a [String]);

impl<'a> Trace<'a> {
    fn of(report: &'a sim::Report) -> Trace<'a> {
        assert!(!report.trace.is_empty(), "the run kept no trace");
        Trace(&report.trace)
    }

    /// Every event at or after `from_ms`, with its time.
    fn since(&self, from_ms: u64) -> impl Iterator<Item = (u64, &'a str)> + 'a {
        self.0.iter().filter_map(move |line| {
            let (ms, event) = line.trim_start().split_once(' ')?;
            let ms: u64 = ms.parse().ok()?;
            (ms >= from_ms).then_some((ms, event))
        })
    }

    /// The first event at or after `from_ms` that contains `needle`.
    fn first(&self, from_ms: u64, needle: &str) -> Option<(u64, &'a str)> {
        self.since(from_ms).find(|(_, event)| event.contains(needle))
    }

    /// Events in `[from_ms, until_ms)` that contain `needle`.
    fn count(&self, from_ms: u64, until_ms: u64, needle: &str) -> usize {
        self.since(from_ms).take_while(|(ms, _)| *ms < until_ms).filter(|(_, event)| event.contains(needle)).count()
    }

    /// When an armed `Action::OnSend` fired at or after `from_ms` ("<kind>
    /// <from> -> <to>"), and the message it fired on.
    fn fired(&self, from_ms: u64, what: &str) -> Option<(u64, &'a str)> {
        self.first(from_ms, &format!("script: on {what} ("))
    }

    /// The zxid `server` recovered from its disk when it booted at or after `from_ms`.
    fn boot_zxid(&self, server: u64, from_ms: u64) -> Option<i64> {
        hex_after(self.first(from_ms, &format!("boot {server} at "))?.1, " at ")
    }

    /// The zxid `server` rebuilt itself at when it next went back to LOOKING.
    fn looking_zxid(&self, server: u64, from_ms: u64) -> Option<(u64, i64)> {
        let (ms, event) = self.first(from_ms, &format!("looking {server} at "))?;
        Some((ms, hex_after(event, " at ")?))
    }

    /// The highest zxid `server` delivered in `[from_ms, until_ms)`.
    fn delivered_max(&self, server: u64, from_ms: u64, until_ms: u64) -> Option<i64> {
        let prefix = format!("deliver {server} ");
        self.since(from_ms)
            .take_while(|(ms, _)| *ms < until_ms)
            .filter_map(|(_, event)| event.strip_prefix(&prefix))
            .filter_map(|rest| hex_after(rest, ""))
            .max()
    }

    /// Messages delivered to `server` from `from_ms` on.
    fn received(&self, server: u64, from_ms: u64) -> Vec<(u64, &'a str)> {
        let marker = format!(" -> {server}: ");
        self.since(from_ms)
            .filter(|(_, event)| event.starts_with("wire "))
            .filter_map(|(ms, event)| event.split_once(&marker).map(|(_, message)| (ms, message)))
            .collect()
    }

    /// Messages delivered to `to` on quorum link `link` from `from_ms` on.
    fn on_link(&self, link: u64, to: u64, from_ms: u64) -> Vec<(u64, &'a str)> {
        let prefix = format!("wire {link} -> {to}: ");
        self.since(from_ms).filter_map(|(ms, event)| event.strip_prefix(&prefix).map(|message| (ms, message))).collect()
    }

    /// Quorum links learners opened to `leader` from `from_ms` on: (link, learner).
    fn links_to(&self, leader: u64, from_ms: u64) -> Vec<(u64, u64)> {
        let suffix = format!(" -> {leader}");
        self.since(from_ms)
            .filter_map(|(_, event)| event.strip_prefix("link ")?.strip_suffix(&suffix)?.split_once(" open "))
            .filter_map(|(link, learner)| Some((link.parse().ok()?, learner.parse().ok()?)))
            .collect()
    }
}

/// The hex number right after `marker` in `text`.
fn hex_after(text: &str, marker: &str) -> Option<i64> {
    let rest = text.split_once(marker)?.1.trim_start().trim_start_matches("0x");
    let digits: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    i64::from_str_radix(&digits, 16).ok()
}

/// The zxid of a traced message such as "COMMIT 0x100000012".
fn message_zxid(message: &str) -> Option<i64> {
    hex_after(message, " ")
}

fn epoch_of(zxid: i64) -> u32 {
    (zxid as u64 >> 32) as u32
}

fn is_sync_start(message: &str) -> bool {
    message.starts_with("DIFF") || message.starts_with("TRUNC") || message.starts_with("SNAP")
}

/// What `learner` received in its first sync that starts at or after
/// `from_ms`: from DIFF/TRUNC/SNAP through UPTODATE, or until the stream
/// stops (the next sync, or nothing more).
fn sync_stream<'a>(trace: &Trace<'a>, learner: u64, from_ms: u64) -> Vec<(u64, &'a str)> {
    let received = trace.received(learner, from_ms);
    let Some(start) = received.iter().position(|(_, message)| is_sync_start(message)) else { return Vec::new() };
    let mut stream = vec![received[start]];
    for &(ms, message) in &received[start + 1..] {
        if is_sync_start(message) || message.starts_with("LeaderInfo") {
            break;
        }
        stream.push((ms, message));
        if message.starts_with("UpToDate") {
            break;
        }
    }
    stream
}

fn position(stream: &[(u64, &str)], prefix: &str) -> Option<usize> {
    stream.iter().position(|(_, message)| message.starts_with(prefix))
}

/// The zxids of `prefix` messages (PROPOSAL, COMMIT) in a stream.
fn zxids(stream: &[(u64, &str)], prefix: &str) -> Vec<i64> {
    stream.iter().filter(|(_, message)| message.starts_with(prefix)).filter_map(|(_, message)| message_zxid(message)).collect()
}

/// ZOOKEEPER-3023 (with ZOOKEEPER-2678): a follower DIFF-synced by an
/// established leader logged and applied the committed txns of the DIFF
/// asynchronously, after it had ACKed NEWLEADER, so that right after the
/// ACK it was indeterminate whether they were on disk or applied
/// (Zab1_0Test#testNormalFollowerRunWithDiff was flaky). The fix logs,
/// fsyncs and applies them before the ACK.
///
/// Schedule: leader 3 and follower 2 go on committing the clients' writes
/// while follower 1 is down for 400 ms (well inside the leader's
/// 50-proposal committed log); 1 restarts and 3 DIFF-syncs it with the
/// PROPOSAL/COMMIT pairs it missed; 1 crashes the moment it sends its
/// NEWLEADER ACK (the ACK dies with it); 1 restarts once more.
///
/// Asserts: the sync was a DIFF that committed txns; the crash fired on the
/// ACK; 1 recovered from its own disk at or beyond the last txn the DIFF
/// committed, then served again; every checker passes. With the planted
/// `NewLeaderBeforePersist` (ACK before the fsync) the recovery assertion
/// fails (`planted_newleader_before_persist_fails_the_3023_schedule`).
fn zookeeper_3023(seed: u64, planted: Planted) -> Result<String, String> {
    let mut config = schedule(
        seed,
        3,
        8_000,
        vec![
            (2_000, Action::Crash(1)),
            (2_300, on_send(1, None, MsgKind::NewLeaderAck, SendFault::CrashSender)),
            (2_400, Action::Restart(1)),
            (3_500, Action::Restart(1)),
        ],
    );
    config.planted = planted;
    let report = run_schedule(&config)?;
    let trace = Trace::of(&report);
    let stream = sync_stream(&trace, 1, 2_400);
    ensure!(stream.first().is_some_and(|(_, m)| m.starts_with("DIFF")), "1 was not DIFF-synced: {stream:?}");
    let new_leader = position(&stream, "NEWLEADER").ok_or("no NEWLEADER in the sync")?;
    let committed = zxids(&stream[..new_leader], "COMMIT").into_iter().max().ok_or("the DIFF committed nothing")?;
    let (fired, _) = trace.fired(2_400, "NewLeaderAck 1 -> 3").ok_or("no crash on the NEWLEADER ACK")?;
    ensure!(trace.first(fired, "crash 1").is_some(), "1 did not crash on its NEWLEADER ACK");
    let recovered = trace.boot_zxid(1, 3_500).ok_or("1 did not restart")?;
    ensure!(recovered >= committed, "1 ACKed NEWLEADER, yet recovered at {recovered:#x}, below the DIFF's {committed:#x}");
    ensure!(trace.first(3_500, "serving 1 Following").is_some(), "1 did not serve again");
    Ok(format!("DIFF committed through {committed:#x}, 1 recovered at {recovered:#x}"))
}

#[test]
fn regression_zookeeper_3023_diff_txns_durable_and_applied_before_newleader_ack() {
    over_seeds("ZOOKEEPER-3023", |seed| zookeeper_3023(seed, Planted::None));
}

#[test]
fn planted_newleader_before_persist_fails_the_3023_schedule() {
    let caught: Vec<u64> = SCHEDULE_SEEDS.filter(|&seed| zookeeper_3023(seed, Planted::NewLeaderBeforePersist).is_err()).collect();
    assert!(!caught.is_empty(), "the ZOOKEEPER-3023 schedule did not notice NEWLEADER ACKed before the fsync");
    println!("caught at seeds {caught:?}");
}

/// ZOOKEEPER-4394: NullPointerException in Learner.syncWithLeader when a
/// follower receives a COMMIT after replying to NEWLEADER. A DIFF sync with
/// a leader that keeps committing can arrive as DIFF, PROPOSAL, COMMIT,
/// PROPOSAL(p), NEWLEADER, COMMIT(p), UPTODATE: p is still in flight when
/// the sync is cut; the follower had already moved p out of
/// packetsNotCommitted at NEWLEADER, so the COMMIT found nothing. The fix
/// applies only committed txns at NEWLEADER and keeps the outstanding
/// proposals for the COMMITs that follow.
///
/// Schedule: under the clients' load, follower 1 crashes and restarts four
/// times, 300 ms down each time, so that leader 3 (committing with 2)
/// DIFF-syncs it four times while proposals are in flight.
///
/// Asserts: every resync is a DIFF that reaches UPTODATE; at least one of
/// them has the interleaving above (a PROPOSAL before NEWLEADER whose
/// COMMIT arrives between NEWLEADER and UPTODATE); 1 delivers each such p,
/// and not before UPTODATE (no txn applied before it commits); 1 never
/// abandons a sync (no LOOKING of its own); every checker passes.
#[test]
fn regression_zookeeper_4394_commit_after_newleader_ack() {
    over_seeds("ZOOKEEPER-4394", |seed| {
        let restarts = [2_300, 3_300, 4_300, 5_300];
        let mut script = Vec::new();
        for at in restarts {
            script.push((at - 300, Action::Crash(1)));
            script.push((at, Action::Restart(1)));
        }
        let report = run_schedule(&schedule(seed, 4, 7_000, script))?;
        let trace = Trace::of(&report);
        let mut interleaved = Vec::new();
        for at in restarts {
            let stream = sync_stream(&trace, 1, at);
            ensure!(stream.first().is_some_and(|(_, m)| m.starts_with("DIFF")), "the sync after {at} ms is not a DIFF: {stream:?}");
            let new_leader = position(&stream, "NEWLEADER").ok_or(format!("no NEWLEADER in the sync after {at} ms"))?;
            let up_to_date = position(&stream, "UpToDate").ok_or(format!("no UPTODATE in the sync after {at} ms"))?;
            let before = &stream[..new_leader];
            let committed_before = zxids(before, "COMMIT");
            let outstanding: Vec<i64> = zxids(before, "PROPOSAL").into_iter().filter(|z| !committed_before.contains(z)).collect();
            for p in zxids(&stream[new_leader..up_to_date], "COMMIT").into_iter().filter(|z| outstanding.contains(z)) {
                let (delivered, _) = trace.first(at, &format!("deliver 1 {p:#x} ")).ok_or(format!("1 never delivered {p:#x}"))?;
                ensure!(delivered >= stream[up_to_date].0, "1 delivered {p:#x} at {delivered} ms, before UPTODATE");
                interleaved.push(p);
            }
        }
        ensure!(!interleaved.is_empty(), "no sync had a COMMIT between NEWLEADER and UPTODATE");
        ensure!(trace.first(0, "looking 1 ").is_none(), "1 abandoned a sync: {:?}", trace.first(0, "looking 1 "));
        ensure!(trace.count(2_300, u64::MAX, "serving 1 Following") >= restarts.len(), "1 did not serve after every restart");
        Ok(format!("COMMIT after NEWLEADER for {interleaved:x?}"))
    });
}

/// ZOOKEEPER-4643: committed txns may be improperly truncated if a follower
/// crashes right after updating its currentEpoch, before the synced txns
/// are on disk. Its newer currentEpoch then wins the election although its
/// log is shorter, and as leader it TRUNCates the others' committed txns.
/// The fix persists the synced txns before currentEpoch.
///
/// Schedule: follower 1 falls behind (crashed) while 3 and 2 commit; 2 goes
/// down, so 3 steps down; 1 restarts and is synced by 3 in epoch 2 (a SNAP:
/// 3 was newly elected), and crashes the moment its currentEpoch 2 is
/// durable; 3 never gets the ACK and gives up; later 3 crashes, and 1 and 2
/// return together, 1 with currentEpoch 2, 2 with currentEpoch 1 and every
/// txn of epoch 1 that 3 committed.
///
/// Asserts: 1 crashed at its epoch write; 1 came back with currentEpoch 2
/// and 2 with 1; 1 won (leads epoch 3) while holding at least everything 2
/// holds, so that 2 is not TRUNCated below its own log; 3 rejoins and
/// serves; every checker (PrimaryIntegrity above all) passes. With the
/// planted `NewLeaderBeforePersist` it fails
/// (`planted_newleader_before_persist_fails_the_sync_schedules`).
fn zookeeper_4643(seed: u64, planted: Planted) -> Result<String, String> {
    let mut config = schedule(
        seed,
        3,
        9_000,
        vec![
            (2_000, Action::Crash(1)),
            (2_300, Action::Crash(2)),
            (2_400, Action::CrashAfterEpoch { learner: 1, leader_after_ms: None }),
            (2_500, Action::Restart(1)),
            (4_500, Action::Crash(3)),
            (5_000, Action::Restart(1)),
            (5_000, Action::Restart(2)),
            (7_000, Action::Restart(3)),
        ],
    );
    config.planted = planted;
    let report = run_schedule(&config)?;
    ensure!(report.faults.get("targeted crash") == Some(&1), "1 did not crash at its epoch write: {}", report.summary());
    let trace = Trace::of(&report);
    ensure!(trace.count(2_500, 5_000, "serving 1 ") == 0, "1 served before its crash");
    ensure!(trace.first(5_000, "boot 1 at ").is_some_and(|(_, e)| e.ends_with("currentEpoch 2")), "1 came back without currentEpoch 2");
    ensure!(trace.first(5_000, "boot 2 at ").is_some_and(|(_, e)| e.ends_with("currentEpoch 1")), "2 came back without currentEpoch 1");
    let (one, two) = (trace.boot_zxid(1, 5_000).ok_or("1 did not boot")?, trace.boot_zxid(2, 5_000).ok_or("2 did not boot")?);
    ensure!(trace.first(5_000, "serving 1 Leading epoch 3").is_some(), "1's newer currentEpoch did not win");
    ensure!(one >= two, "1 leads at {one:#x} with a shorter log than 2's {two:#x}");
    if let Some((_, trunc)) = trace.first(5_000, "-> 2: TRUNC") {
        let to = hex_after(trunc, "TRUNC").ok_or("unreadable TRUNC")?;
        ensure!(to >= two, "2 was TRUNCated to {to:#x}, below its log's {two:#x}");
    }
    ensure!(trace.first(7_000, "serving 3 Following").is_some(), "3 did not rejoin");
    Ok(format!("1 leads epoch 3 at {one:#x}; 2 was at {two:#x}"))
}

#[test]
fn regression_zookeeper_4643_current_epoch_after_synced_txns() {
    over_seeds("ZOOKEEPER-4643", |seed| zookeeper_4643(seed, Planted::None));
}

/// ZOOKEEPER-4646: committed txns may still be lost if a follower crashes
/// after replying to NEWLEADER but before writing the synced txns to disk
/// (ZOOKEEPER-3911's fix logged them asynchronously). The leader counts
/// the ACK, the epoch is established and the sync's txns count as
/// committed, yet the follower restarts without them, and its newer
/// currentEpoch can win the next election.
///
/// Schedule: as for 4643 (1 behind, 2 down, 1 synced by 3 in epoch 2 by
/// SNAP), but 1 crashes right after 3 has handled its NEWLEADER ACK, and 3
/// crashes 20 ms later, after establishing epoch 2 on that ACK. 1 and 2
/// return; 3 later.
///
/// Asserts: both crashes fired on the ACK; 3 established epoch 2; 1 came
/// back with currentEpoch 2 and at least the snapshot it ACKed; 1 leads
/// epoch 3; 3 rejoins; every checker passes.
fn zookeeper_4646(seed: u64, planted: Planted) -> Result<String, String> {
    let mut config = schedule(
        seed,
        3,
        9_000,
        vec![
            (2_000, Action::Crash(1)),
            (2_300, Action::Crash(2)),
            (2_400, on_delivery(1, None, MsgKind::NewLeaderAck, SendFault::CrashSender, 0)),
            (2_400, on_delivery(1, None, MsgKind::NewLeaderAck, SendFault::CrashReceiver, 20)),
            (2_500, Action::Restart(1)),
            (5_000, Action::Restart(1)),
            (5_000, Action::Restart(2)),
            (7_000, Action::Restart(3)),
        ],
    );
    config.planted = planted;
    let report = run_schedule(&config)?;
    let trace = Trace::of(&report);
    let (fired, _) = trace.fired(2_500, "NewLeaderAck 1 -> 3").ok_or("no crash on the NEWLEADER ACK")?;
    ensure!(report.faults.get("targeted crash") == Some(&2), "1 and 3 did not both crash: {}", report.summary());
    ensure!(trace.count(fired, 5_000, "serving 3 Leading epoch 2") == 1, "3 did not establish epoch 2 on 1's ACK");
    let stream = sync_stream(&trace, 1, 2_500);
    let synced = stream.first().and_then(|(_, m)| message_zxid(m)).ok_or("1 was not synced")?;
    ensure!(trace.first(5_000, "boot 1 at ").is_some_and(|(_, e)| e.ends_with("currentEpoch 2")), "1 came back without currentEpoch 2");
    let recovered = trace.boot_zxid(1, 5_000).ok_or("1 did not restart")?;
    ensure!(recovered >= synced, "1 ACKed NEWLEADER after a sync to {synced:#x}, yet recovered at {recovered:#x}");
    ensure!(trace.first(5_000, "serving 1 Leading epoch 3").is_some(), "1 did not lead epoch 3");
    ensure!(trace.first(7_000, "serving 3 Following").is_some(), "3 did not rejoin");
    Ok(format!("synced by {}, recovered at {recovered:#x}", stream[0].1))
}

#[test]
fn regression_zookeeper_4646_synced_txns_durable_before_newleader_ack() {
    over_seeds("ZOOKEEPER-4646", |seed| zookeeper_4646(seed, Planted::None));
}

/// ZOOKEEPER-4785: txn loss by a race in Learner.syncWithLeader during a
/// DIFF sync. The follower wrote currentEpoch and ACKed NEWLEADER while
/// the synced txns were still queued for its SyncRequestProcessor; the
/// leader then died, the follower (still running) fell back to LOOKING and
/// reloaded its database from disk without them, and its newer epoch made
/// it the next leader (DIFFSyncTest#testTxnLoss_FailToPersistAndCommitTxns).
///
/// Schedule: 1 behind, 2 down, 1 synced by 3 in epoch 2 (SNAP here) and
/// serving; 3 crashes 300 ms after 1 got UPTODATE, having committed writes
/// in epoch 2 with 1; 1 stays up, goes back to LOOKING and rebuilds itself
/// from its own disk; 2 returns and 1 (currentEpoch 2) leads epoch 3; 3
/// returns.
///
/// Asserts: the crash fired on UPTODATE; 1 never crashed; after the
/// leader's death 1 rebuilt itself at or beyond everything it had applied,
/// including the epoch-2 writes; 1 leads epoch 3; 3 rejoins; every checker
/// passes.
fn zookeeper_4785(seed: u64) -> Result<String, String> {
    let config = schedule(
        seed,
        3,
        9_000,
        vec![
            (2_000, Action::Crash(1)),
            (2_300, Action::Crash(2)),
            (2_400, on_delivery(3, Some(1), MsgKind::UpToDate, SendFault::CrashSender, 300)),
            (2_500, Action::Restart(1)),
            (4_000, Action::Restart(2)),
            (6_000, Action::Restart(3)),
        ],
    );
    let report = run_schedule(&config)?;
    let trace = Trace::of(&report);
    trace.fired(2_500, "UpToDate 3 -> 1").ok_or("no crash on UPTODATE")?;
    let (crashed, _) = trace.first(2_500, "crash 3").ok_or("3 did not crash")?;
    ensure!(trace.count(2_500, crashed, "serving 1 Following epoch 2") == 1, "1 did not serve in epoch 2");
    ensure!(trace.first(2_500, "crash 1").is_none(), "1 crashed");
    let snapshot = sync_stream(&trace, 1, 2_500).first().and_then(|(_, m)| message_zxid(m)).ok_or("1 was not synced")?;
    let applied = trace.delivered_max(1, 2_500, crashed + 1).unwrap_or(snapshot).max(snapshot);
    let (_, rebuilt) = trace.looking_zxid(1, crashed).ok_or("1 did not go back to LOOKING")?;
    ensure!(rebuilt >= applied, "1 had applied {applied:#x} but rebuilt itself at {rebuilt:#x}");
    ensure!(trace.first(4_000, "serving 1 Leading epoch 3").is_some(), "1 did not lead epoch 3");
    ensure!(trace.first(6_000, "serving 3 Following").is_some(), "3 did not rejoin");
    Ok(format!("1 applied {applied:#x} (epoch {}), rebuilt at {rebuilt:#x}", epoch_of(applied)))
}

#[test]
fn regression_zookeeper_4785_learner_keeps_synced_txns_across_looking() {
    over_seeds("ZOOKEEPER-4785", zookeeper_4785);
}

/// ZOOKEEPER-4685: a leader shut down, and the ensemble went through an
/// unnecessary election, because a follower in the sync phase sent the ACK
/// of a PROPOSAL from the DIFF before its ACK of NEWLEADER: the leader,
/// waiting for a quorum of NEWLEADER ACKs, took the other ACK as a protocol
/// error (DIFFSyncTest#testLeaderShutdown_AckProposalBeforeAckNewLeader).
///
/// Schedule: DIFFSyncTest's: 1 behind, 2 down, 1 restarts and 3 leads
/// epoch 2 with it; the clients write in epoch 2; 2 returns and joins the
/// established epoch; 2 crashes and returns again 300 ms later, to be
/// DIFF-synced under load with proposals in flight.
///
/// Asserts: 3 establishes epoch 2 once and never leaves it; on every
/// learner's link the first ACK 3 receives is the ACK of NEWLEADER; writes
/// commit in epoch 2; 2's last sync is a DIFF; every checker passes.
#[test]
fn regression_zookeeper_4685_newleader_ack_before_proposal_acks() {
    over_seeds("ZOOKEEPER-4685", |seed| {
        let config = schedule(
            seed,
            3,
            7_000,
            vec![
                (2_000, Action::Crash(1)),
                (2_300, Action::Crash(2)),
                (2_500, Action::Restart(1)),
                (3_500, Action::Restart(2)),
                (5_000, Action::Crash(2)),
                (5_300, Action::Restart(2)),
            ],
        );
        let report = run_schedule(&config)?;
        let trace = Trace::of(&report);
        let (established, event) = trace.first(2_500, "serving 3 Leading").ok_or("3 did not lead again")?;
        ensure!(event.ends_with("epoch 2"), "3 did not lead epoch 2: {event}");
        ensure!(trace.count(2_500, u64::MAX, "serving 3 Leading") == 1, "3 established more than once");
        ensure!(trace.first(established, "looking 3 ").is_none(), "3 left its epoch: {:?}", trace.first(established, "looking 3 "));
        let links = trace.links_to(3, 2_500);
        ensure!(links.len() >= 3, "expected the syncs of 1, 2 and 2 again: {links:?}");
        for (link, learner) in links {
            let first_ack = trace.on_link(link, 3, 2_500).into_iter().find(|(_, m)| m.starts_with("ACK"));
            let first_ack = first_ack.ok_or(format!("{learner} never ACKed on link {link}"))?;
            ensure!(first_ack.1 == "ACK 0x200000000", "{learner}'s first ACK on link {link} is {} before its NEWLEADER ACK", first_ack.1);
        }
        ensure!(trace.delivered_max(3, established, u64::MAX).is_some_and(|z| epoch_of(z) == 2), "nothing committed in epoch 2");
        let last = sync_stream(&trace, 2, 5_300);
        ensure!(last.first().is_some_and(|(_, m)| m.starts_with("DIFF")), "2's last sync is not a DIFF: {last:?}");
        Ok(format!("2 DIFF-synced with {} PROPOSALs", zxids(&last, "PROPOSAL").len()))
    });
}

/// ZOOKEEPER-2845: data inconsistency from retaining the database across
/// elections (ZOOKEEPER-2678). Leader C logs txn T1, but followers A and B
/// restart before its PROPOSAL reaches them; A and B form a new epoch
/// without T1; C, still up, falls back to LOOKING with T1 applied nowhere
/// but its log, rejoins with its in-memory zxid (below T1) and gets an
/// empty DIFF; when C later restarts it replays T1 from its log: only C has
/// it. The fix replays the txn log into a retained database.
///
/// Schedule: when leader 3 next sends a PROPOSAL (T1), 1 and 2 crash before
/// it arrives; 3 is cut off; 1 and 2 restart 200 ms later and elect each
/// other; the partition heals and 3 (never restarted) rejoins; later 3
/// crashes and restarts from its disk.
///
/// Asserts: both crashes fired on the same PROPOSAL; 3 went back to LOOKING
/// without restarting, rebuilt from its log with T1; no server ever
/// delivers T1; 3's resync after the heal is a TRUNC or a SNAP; 3 serves,
/// and after its restart it recovers in the new epoch and serves again;
/// every checker (digests at equal zxids above all) passes.
#[test]
fn regression_zookeeper_2845_old_leader_rejoins_without_its_uncommitted_txn() {
    over_seeds("ZOOKEEPER-2845", |seed| {
        let config = schedule(
            seed,
            3,
            9_000,
            vec![
                (3_000, on_send(3, Some(1), MsgKind::Proposal, SendFault::CrashReceiver)),
                (3_000, on_send(3, Some(2), MsgKind::Proposal, SendFault::CrashReceiver)),
                (3_100, Action::Isolate(3)),
                (3_200, Action::Restart(1)),
                (3_200, Action::Restart(2)),
                (5_000, Action::Heal),
                (7_000, Action::Crash(3)),
                (7_200, Action::Restart(3)),
            ],
        );
        let report = run_schedule(&config)?;
        let trace = Trace::of(&report);
        let (_, to_1) = trace.fired(3_000, "Proposal 3 -> 1").ok_or("no crash on the PROPOSAL to 1")?;
        let (_, to_2) = trace.fired(3_000, "Proposal 3 -> 2").ok_or("no crash on the PROPOSAL to 2")?;
        let t1 = hex_after(to_1, "PROPOSAL").ok_or("unreadable PROPOSAL")?;
        ensure!(hex_after(to_2, "PROPOSAL") == Some(t1), "1 and 2 crashed on different PROPOSALs: {to_1} / {to_2}");
        ensure!(report.faults.get("targeted crash") == Some(&2), "1 and 2 did not both crash: {}", report.summary());
        ensure!(trace.first(3_000, "crash 3").is_some_and(|(ms, _)| ms >= 7_000), "3 crashed before the schedule's end");
        let (_, rebuilt) = trace.looking_zxid(3, 3_000).ok_or("3 did not go back to LOOKING")?;
        ensure!(rebuilt >= t1, "3 rebuilt itself at {rebuilt:#x}, without its logged {t1:#x}");
        ensure!(trace.first(0, &format!("{t1:#x} after")).is_none(), "{t1:#x} was delivered, but never committed");
        let resync = sync_stream(&trace, 3, 5_000);
        ensure!(resync.first().is_some_and(|(_, m)| m.starts_with("TRUNC") || m.starts_with("SNAP")), "3's resync kept its log: {resync:?}");
        ensure!(trace.count(5_000, 7_000, "serving 3 Following") == 1, "3 did not rejoin before its restart");
        let recovered = trace.boot_zxid(3, 7_200).ok_or("3 did not restart")?;
        ensure!(epoch_of(recovered) >= 2, "3 recovered at {recovered:#x}, in the old epoch");
        ensure!(trace.first(7_200, "serving 3 Following").is_some(), "3 did not serve after its restart");
        Ok(format!("T1 {t1:#x}; 3 resynced by {}; recovered at {recovered:#x}", resync[0].1))
    });
}

/// ZOOKEEPER-3642: data inconsistency when a SNAP sync is cut short. The
/// learner loaded the leader's snapshot into memory but writes it to disk
/// only while handling NEWLEADER; when the sync failed before that (the
/// leader crashed right after sending the SNAP, or the learner left at
/// NEWLEADER), it kept the in-memory database, was DIFF-synced from its
/// in-memory zxid, and after a restart replayed its old log under the new
/// txns: a gap. The fix ("DIFF sync after partial SNAP sync") drops the
/// partial state so that the learner rejoins with what is on its disk.
///
/// Schedule, twice over: follower 1 is down for two seconds while 3 and 2
/// commit (beyond the 50-proposal committed log), so 3 SNAPs it when it
/// returns. First, as in QuorumPeerMainTest#testDiffSyncAfterSnap, the link
/// breaks the moment NEWLEADER arrives; 3, still leading, DIFF-syncs 1 from
/// whatever 1 then says it has; 1 later restarts from its disk. Then, after
/// another two seconds down, 3 crashes right after its SNAP arrives (the
/// JIRA's case), 2 leads the next epoch, and 1 later restarts.
///
/// Asserts: each fault fired on its message and the sync stopped there (no
/// UPTODATE); each time 1 rebuilt itself at the SNAP's zxid (the snapshot
/// is on its disk when it goes back to LOOKING); after the link break 1 was
/// DIFF-synced from there, and its restart recovers at least what that
/// DIFF committed; after the leader's crash 1 serves under 2; every
/// checker passes.
#[test]
fn regression_zookeeper_3642_diff_after_partial_snap() {
    over_seeds("ZOOKEEPER-3642", |seed| {
        let config = schedule(
            seed,
            3,
            12_500,
            vec![
                (2_000, Action::Crash(1)),
                (3_900, on_delivery(3, Some(1), MsgKind::NewLeader, SendFault::BreakLink, 0)),
                (4_000, Action::Restart(1)),
                (5_000, Action::Crash(1)),
                (5_300, Action::Restart(1)),
                (6_000, Action::Crash(1)),
                (7_900, on_delivery(3, Some(1), MsgKind::Snap, SendFault::CrashSender, 0)),
                (8_000, Action::Restart(1)),
                (10_000, Action::Restart(3)),
                (11_000, Action::Crash(1)),
                (11_300, Action::Restart(1)),
            ],
        );
        let report = run_schedule(&config)?;
        let trace = Trace::of(&report);
        let mut notes = Vec::new();
        for (restart, on, fault, next) in [(4_000, "NewLeader", "BreakLink", 5_000), (8_000, "Snap", "CrashSender", 11_000)] {
            let stream = sync_stream(&trace, 1, restart);
            let snap = stream.first().filter(|(_, m)| m.starts_with("SNAP")).ok_or(format!("1 was not SNAP-synced after {restart} ms: {stream:?}"))?;
            let snapshot = message_zxid(snap.1).ok_or("unreadable SNAP")?;
            let (_, fired) = trace.fired(restart, &format!("{on} 3 -> 1")).ok_or(format!("no fault on the {on} after {restart} ms"))?;
            ensure!(fired.contains(fault), "the fault on the {on} after {restart} ms was not {fault}: {fired}");
            ensure!(position(&stream, "NEWLEADER").is_some() == (on == "NewLeader"), "the sync after {restart} ms did not stop at the {on}: {stream:?}");
            ensure!(position(&stream, "UpToDate").is_none(), "1 finished the sync after {restart} ms: {stream:?}");
            let (looked, rebuilt) = trace.looking_zxid(1, snap.0).ok_or("1 did not go back to LOOKING")?;
            ensure!(rebuilt == snapshot, "1 got a SNAP at {snapshot:#x} but rebuilt itself at {rebuilt:#x}");
            let resync = sync_stream(&trace, 1, looked);
            let new_leader = position(&resync, "NEWLEADER").ok_or(format!("1's resync after {restart} ms did not finish: {resync:?}"))?;
            ensure!(position(&resync, "UpToDate").is_some(), "1's resync after {restart} ms did not finish: {resync:?}");
            ensure!(resync[0].0 < next, "1's resync after {restart} ms came too late");
            if fault == "BreakLink" {
                ensure!(resync[0].1.starts_with("DIFF"), "after the link break 1 was not DIFF-synced: {resync:?}");
                let committed = zxids(&resync[..new_leader], "COMMIT").into_iter().max().unwrap_or(snapshot);
                let recovered = trace.boot_zxid(1, next + 300).ok_or("1 did not restart")?;
                ensure!(recovered >= committed, "1 recovered at {recovered:#x}, below the {committed:#x} its DIFF committed");
            } else {
                ensure!(trace.first(restart, "crash 3").is_some(), "3 did not crash");
                ensure!(trace.first(looked, "serving 2 Leading").is_some(), "2 did not lead after 3's crash");
            }
            ensure!(trace.first(next + 300, "serving 1 Following").is_some(), "1 did not serve after its restart at {} ms", next + 300);
            notes.push(format!("{fault} on {on}: SNAP {snapshot:#x}, then {}", resync[0].1));
        }
        Ok(notes.join("; "))
    });
}

/// The schedules of ZOOKEEPER-4643 and 4646 must notice the bug they are
/// about: with the planted `NewLeaderBeforePersist` (a learner moves its
/// currentEpoch and ACKs NEWLEADER without waiting for the synced state to
/// be durable) each fails for some seed. (ZOOKEEPER-4785's does not: its
/// learner never crashes, and going back to LOOKING waits for the log to go
/// idle, which is the property that schedule checks.)
#[test]
fn planted_newleader_before_persist_fails_the_sync_schedules() {
    let schedules: [(&str, PlantableSchedule); 2] = [("ZOOKEEPER-4643", zookeeper_4643), ("ZOOKEEPER-4646", zookeeper_4646)];
    for (name, schedule) in schedules {
        let caught: Vec<(u64, String)> =
            SCHEDULE_SEEDS.filter_map(|seed| schedule(seed, Planted::NewLeaderBeforePersist).err().map(|why| (seed, why))).collect();
        assert!(!caught.is_empty(), "the {name} schedule did not notice the planted bug");
        println!("{name}: caught at seeds {:?}; first: {}", caught.iter().map(|(seed, _)| seed).collect::<Vec<_>>(), caught[0].1.lines().next().unwrap_or(""));
    }
}

/// ZOOKEEPER-1277: servers stopped serving when the low 32 bits of the zxid
/// rolled over: the counter carried into the epoch bits, giving zxids of an
/// epoch no quorum had established. The fix: a leader never proposes
/// (epoch, 0xffffffff); it steps down and forces an election, and the next
/// epoch's counter starts over (`broadcast::LAST_COUNTER`).
///
/// Schedule: every epoch's counter starts 100 short of its end
/// (`SimConfig::epoch_counter_start`, as ZooKeeper's test-only
/// `zookeeper.testingonly.initialZxid` does), so that under the clients' load
/// leaders run out of zxids every couple of seconds: ten seeds with no
/// faults, then twenty with every fault.
///
/// Asserts: without faults, leaders ran out at least twice per run, each at
/// (epoch, 0xfffffffe) with that zxid logged; every later epoch started
/// afresh and served; with faults, leaders still ran out; no zxid with a
/// counter of 0xffffffff was ever proposed or delivered; and the client
/// checks (every acknowledged write committed as sent, per-session order,
/// linearizability) with every other checker pass, so no write was lost or
/// reordered across a rollover.
#[test]
fn regression_zookeeper_1277_zxid_counter_rollover_forces_a_new_epoch() {
    const EXHAUSTED: &str = "zxid counter exhausted";
    let counter_start = 0xffff_fffe - 100;
    let mut rollovers_with_faults = 0;
    for (seed, faults) in (0..10).map(|seed| (seed, false)).chain((0..20).map(|seed| (seed, true))) {
        let mut config = SimConfig::new(seed);
        if !faults {
            config.voters = 3;
            config.observers = 0;
            config.clients = 3;
            config.faults = Faults::NONE;
            config.duration_ms = 10_000;
        }
        config.trace = true;
        config.epoch_counter_start = counter_start;
        let report = sim::run(config.clone());
        assert!(report.ok(), "{}", failure(&config, &report));
        let trace = Trace::of(&report);
        for (_, event) in trace.since(0) {
            let zxid = match event.strip_prefix("deliver ") {
                Some(delivered) => delivered.split(' ').nth(1).and_then(|zxid| hex_after(zxid, "")),
                None => event.split_once(": PROPOSAL ").and_then(|(_, zxid)| hex_after(zxid, "")),
            };
            if let Some(zxid) = zxid {
                assert_ne!(zxid as u64 as u32, u32::MAX, "seed {seed}: {zxid:#x} used the counter's last value: {event}");
            }
        }
        let rollovers: Vec<(u64, &str)> = trace.since(0).filter(|(_, event)| event.contains(EXHAUSTED)).collect();
        for &(ms, event) in &rollovers {
            // A reload the disk refused (a corruption found) rebuilt nothing:
            // the line then shows the tree from before it, which had not yet
            // applied the last proposals.
            let server = event.strip_prefix("looking ").and_then(|rest| rest.split(' ').next()).unwrap_or_default();
            if trace.count(ms, ms + 1, &format!("{server} refuses to start")) > 0 {
                continue;
            }
            let zxid = hex_after(event, " at ").expect("a LOOKING zxid");
            // Its last logged zxid: the last proposal, 0x...fffffffe, or
            // one just below it whose write had not completed.
            let counter = zxid as u64 as u32;
            assert!((0xffff_fff0..=0xffff_fffe).contains(&counter), "seed {seed}: a leader ran out at {zxid:#x} ({ms} ms)");
            let next_epoch = epoch_of(zxid) + 1;
            if !faults {
                // The next epoch, or a later one: a server may refuse the
                // first leader as ZooKeeper's does ("Follower is ahead of
                // the leader") when the exhausted leader logged a proposal
                // the new one had not.
                let served = trace.first(ms, "serving ").map(|(_, e)| e.to_owned()).unwrap_or_default();
                let epoch = served.rsplit(' ').next().and_then(|epoch| epoch.parse::<u32>().ok());
                assert!(epoch.is_some_and(|epoch| epoch >= next_epoch), "seed {seed}: after running out at {zxid:#x}, {served:?}");
            }
        }
        if faults {
            rollovers_with_faults += rollovers.len();
        } else {
            assert!(rollovers.len() >= 2, "seed {seed}: leaders ran out of zxids {} times: {}", rollovers.len(), report.summary());
            assert!(report.acked_writes > 200, "seed {seed}: {}", report.summary());
        }
        println!("seed {seed} faults {faults}: {} rollovers; {}", rollovers.len(), report.summary());
    }
    assert!(rollovers_with_faults >= 20, "leaders ran out of zxids only {rollovers_with_faults} times under faults");
}

/// Time that a session's expiry may take beyond its timeout: the leader's
/// expiry buckets are a tick wide (`TICK_MS` 100), its sequencer ticks every
/// 25 ms, and the last touch may be in flight from a follower (1-8 ms).
const EXPIRY_SLACK_MS: u64 = 100 + 25 + 25;
/// The simulated clients' session timeout (`sim::client`).
const SESSION_TIMEOUT_MS: u64 = 1_500;
/// When client 0 goes silent in the wall-clock schedule.
const SILENT_MS: u64 = 2_500;

/// Timing follows the elapsed clock, never the wall clock (ZooKeeper's
/// Time.currentElapsedTime): an NTP step neither delays nor hastens a
/// session's expiry.
///
/// Schedule: under the clients' load, client 0 goes silent (its process
/// hangs: no heartbeat, no reconnect); 100 ms later NTP steps leader 3's wall
/// clock back 60 s, and soon after follower 1's forward 45 s; later leader
/// 3's wall clock steps forward 120 s while the other three clients' sessions
/// live on; client 0 comes back after its session expired.
///
/// Asserts: 3 led throughout and the trace shows the three steps; client
/// 0's session, and no other, expired: within its timeout plus a tick of
/// when its client fell silent; every checker passes. On the wall clock
/// (the planted `SessionsOnWallClock`) the session would expire 60 s late,
/// and the forward step would expire every session at once
/// (`planted_sessions_on_wall_clock_fail_the_wall_clock_schedule`).
fn wall_clock_steps(seed: u64, planted: Planted) -> Result<String, String> {
    let script = vec![
        (SILENT_MS, Action::StopClient(0)),
        (SILENT_MS + 100, Action::StepWallClock { server: 3, by_ms: -60_000 }),
        (SILENT_MS + 300, Action::StepWallClock { server: 1, by_ms: 45_000 }),
        (5_000, Action::StepWallClock { server: 3, by_ms: 120_000 }),
        (6_500, Action::StartClient(0)),
    ];
    let mut config = schedule(seed, 4, 9_000, script);
    config.planted = planted;
    let report = run_schedule(&config)?;
    let trace = Trace::of(&report);
    let (led, _) = trace.first(0, "serving 3 Leading").ok_or("3 never led")?;
    ensure!(led < SILENT_MS, "3 led only from {led} ms, after client 0 fell silent");
    ensure!(trace.first(0, "looking 3 ").is_none(), "3 stopped leading: {:?}", trace.first(0, "looking 3 "));
    let steps = ["wall clock of 3 steps back 60000 ms", "wall clock of 1 steps forward 45000 ms", "wall clock of 3 steps forward 120000 ms"];
    for step in steps {
        ensure!(trace.first(0, step).is_some(), "no {step:?} in the trace");
    }
    let (_, stopped) = trace.first(SILENT_MS, "client 0 stops (session ").ok_or("client 0 did not stop")?;
    let session = hex_after(stopped, "(session ").filter(|session| *session != 0).ok_or("client 0 had no session when it stopped")?;
    let expiries: Vec<(u64, i64)> =
        trace.since(0).filter_map(|(ms, event)| Some((ms, hex_after(event.strip_prefix("leader 3 expires session ")?, "")?))).collect();
    let (expired_at, _) =
        *expiries.iter().find(|(_, expired)| *expired == session).ok_or(format!("client 0's session {session:#x} never expired"))?;
    let after = expired_at - SILENT_MS;
    ensure!(
        (SESSION_TIMEOUT_MS - 50..=SESSION_TIMEOUT_MS + EXPIRY_SLACK_MS).contains(&after),
        "client 0's session {session:#x} expired {after} ms after its client fell silent (timeout {SESSION_TIMEOUT_MS} ms)"
    );
    let others: Vec<String> =
        expiries.iter().filter(|(_, expired)| *expired != session).map(|(ms, expired)| format!("{expired:#x} at {ms} ms")).collect();
    ensure!(others.is_empty(), "only client 0's session {session:#x} may expire, yet: {}", others.join(", "));
    Ok(format!("session {session:#x} expired {after} ms after its client fell silent"))
}

#[test]
fn wall_clock_steps_neither_delay_nor_hasten_session_expiry() {
    over_seeds("wall clock steps", |seed| wall_clock_steps(seed, Planted::None));
}

#[test]
fn planted_sessions_on_wall_clock_fail_the_wall_clock_schedule() {
    let caught: Vec<(u64, String)> =
        SCHEDULE_SEEDS.filter_map(|seed| wall_clock_steps(seed, Planted::SessionsOnWallClock).err().map(|why| (seed, why))).collect();
    assert_eq!(caught.len(), SCHEDULE_SEEDS.count(), "the wall-clock schedule missed sessions timed on the wall clock: {caught:?}");
    println!("caught at every seed; first: {}", caught[0].1.lines().next().unwrap_or(""));
}
