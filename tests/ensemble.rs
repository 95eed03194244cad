//! ZAB replication, proven on real multi-process ensembles on loopback
//! (issue 4, "How it is proven"): an ensemble forms and replicates; a leader
//! SIGKILLed under write load is replaced without losing an acknowledged
//! write or a live session; a restarted follower catches up by DIFF (also
//! when the leader restarted too), a wiped one by SNAP; a deposed leader's
//! uncommitted txn is truncated; a minority cannot commit; an observer serves
//! without being part of the quorum. Every test ends by comparing every
//! replica's tree through a client-side digest.
//!
//! The ensembles start from the example files in config/ (see
//! tests/common/ensemble.rs for the harness: processes, fault-injecting
//! proxies, sessions, digests). `ENSEMBLE_TARGET=apache` runs the very same
//! tests against Apache ZooKeeper 3.8's QuorumPeerMain, which proves that the
//! expectations are ZooKeeper's:
//!
//! ```sh
//! ENSEMBLE_TARGET=apache cargo test --release --test ensemble -- --test-threads=1 --nocapture
//! ```
//!
//! Each test starts 3 or 4 servers of its own; `--test-threads=1` keeps the
//! reported timings (kill to first committed write) free of the other tests'
//! load, but the tests also pass in parallel. Every wait is bounded; the
//! output of every server is in its directory (kept with
//! `ENSEMBLE_KEEP_DATA=1` when a test fails).

use std::collections::HashSet;
use std::thread::sleep;
use std::time::{Duration, Instant};

mod common;
use common::ensemble::{
    create_body, load_data, path_body, set_data_body, ClientError, Ensemble, LoadReport, LoadWriter, Mode, Session, SessionKeeper,
    SyncMode, Target, EPHEMERAL, OK, OP_CREATE, OP_SET_DATA, OP_SYNC, PERSISTENT, SESSION_TIMEOUT_MS,
};

/// Election plus sync, JVM start included.
const STABLE_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
const SYNC_LOG_TIMEOUT: Duration = Duration::from_secs(10);

fn started_ensemble(name: &str, voters: u32, observers: u32) -> (Ensemble, u32) {
    let mut ensemble = Ensemble::new(name, voters, observers);
    println!("[{name}] target {:?}, directory {}", ensemble.target, ensemble.dir().display());
    ensemble.start_all();
    let leader = ensemble.wait_stable(STABLE_TIMEOUT);
    println!("[{name}] stable; leader is node {leader}");
    (ensemble, leader)
}

fn session(ensemble: &Ensemble, id: u32) -> Session {
    Session::connect(ensemble.client_port(id)).unwrap_or_else(|e| panic!("session on node {id}: {e:?}"))
}

fn create_ok(session: &mut Session, path: &str, data: &[u8], flags: i32) {
    let err = session.create(path, data, flags).unwrap_or_else(|e| panic!("create {path}: {e:?}"));
    assert_eq!(err, OK, "create {path}");
}

/// Creates `count` nodes `{parent}/{prefix}{i}` with data `{prefix}{i}`,
/// pipelined; all must succeed.
fn write_many(session: &mut Session, parent: &str, prefix: &str, count: usize, window: usize) -> Vec<String> {
    let nodes: Vec<(String, Vec<u8>)> =
        (0..count).map(|i| (format!("{parent}/{prefix}{i}"), format!("{prefix}{i}").into_bytes())).collect();
    let errors = session.create_many(&nodes, window).unwrap_or_else(|e| panic!("writes under {parent}: {e:?}"));
    for ((path, _), err) in nodes.iter().zip(&errors) {
        assert_eq!(*err, OK, "create {path}");
    }
    nodes.into_iter().map(|(path, _)| path).collect()
}

/// Pipelines setData and sync alternately on `path`: every reply must come
/// in request order. A learner answers a sync when the leader's reply
/// reaches it, and the leader must send that reply after the COMMIT (or
/// INFORM) of the setData before it, or the sync overtakes the write.
fn setdata_and_sync_answered_in_order(session: &mut Session, path: &str) {
    let mut requests = Vec::new();
    for i in 0..100 {
        requests.push((OP_SET_DATA, set_data_body(path, format!("{i}").as_bytes(), -1)));
        requests.push((OP_SYNC, path_body(path)));
    }
    let mut sent = std::collections::VecDeque::new();
    let mut next = requests.iter();
    loop {
        while sent.len() < 8 {
            let Some((opcode, body)) = next.next() else { break };
            let xid = session.send(*opcode, body).unwrap_or_else(|e| panic!("send on {path}: {e:?}"));
            sent.push_back((xid, *opcode));
        }
        let Some((xid, opcode)) = sent.pop_front() else { break };
        let reply = session.recv(Duration::from_secs(10)).unwrap_or_else(|e| panic!("reply on {path}: {e:?}"));
        assert_eq!(
            (reply.xid, reply.err),
            (xid, OK),
            "{path}: the reply to xid {xid} (opcode {opcode}) was next; in flight after it: {sent:?}"
        );
    }
}

/// On every node: after `sync`, each path holds the data its last segment
/// names.
fn assert_readable_everywhere(ensemble: &Ensemble, ids: &[u32], paths: &[String]) {
    for &id in ids {
        let mut reader = session(ensemble, id);
        reader.sync("/").unwrap_or_else(|e| panic!("sync on node {id}: {e:?}"));
        let found = reader.get_data_many(paths).unwrap_or_else(|e| panic!("reads on node {id}: {e:?}"));
        for (path, found) in paths.iter().zip(found) {
            let expected = path.rsplit('/').next().unwrap().as_bytes();
            match found {
                Some((data, _)) => assert_eq!(data, expected, "{path} on node {id}"),
                None => panic!("{path} missing on node {id}"),
            }
        }
        let _ = reader.close();
    }
}

/// Nowhere in the ensemble (each node read after `sync`).
fn assert_absent_everywhere(ensemble: &Ensemble, ids: &[u32], path: &str) {
    for &id in ids {
        let mut reader = session(ensemble, id);
        reader.sync("/").unwrap_or_else(|e| panic!("sync on node {id}: {e:?}"));
        let stat = reader.exists(path).unwrap_or_else(|e| panic!("exists {path} on node {id}: {e:?}"));
        assert!(stat.is_none(), "{path} exists on node {id}: {stat:?} (it was never committed)");
        let _ = reader.close();
    }
}

fn modes_named(modes: &[(SyncMode, String)]) -> Vec<SyncMode> {
    modes.iter().map(|(mode, _)| *mode).collect()
}

/// The leader chose `expected` for the peer and none of `excluded`.
fn assert_sync_mode(modes: &[(SyncMode, String)], expected: SyncMode, excluded: &[SyncMode], why: &str) {
    let named = modes_named(modes);
    assert!(
        named.contains(&expected) && !named.iter().any(|mode| excluded.contains(mode)),
        "{why}: expected {expected:?} (and none of {excluded:?}); the leader logged {modes:#?}"
    );
}

fn followers_of(ensemble: &Ensemble, leader: u32) -> Vec<u32> {
    ensemble.voters().into_iter().filter(|&id| id != leader).collect()
}

// ---------------------------------------------------------------------------

#[test]
fn forms_and_replicates() {
    let started = Instant::now();
    let (mut ensemble, leader) = started_ensemble("forms", 3, 0);
    let ids = ensemble.ids();
    for &id in &ids {
        let expected = if id == leader { Mode::Leader } else { Mode::Follower };
        assert_eq!(ensemble.mode(id), Some(expected), "srvr of node {id}");
        let mntr = ensemble.mntr(id);
        let state = if id == leader { "leader" } else { "follower" };
        assert_eq!(mntr.get("zk_server_state").map(String::as_str), Some(state), "mntr of node {id}");
    }
    // The leader counts both followers as synced (ZooKeeper 3.8's mntr has
    // zk_synced_followers and zk_learners; it has no zk_followers).
    let mntr = ensemble.mntr(leader);
    assert_eq!(mntr.get("zk_synced_followers").map(String::as_str), Some("2"), "leader mntr: {mntr:?}");

    let mut setup = session(&ensemble, leader);
    create_ok(&mut setup, "/replicate", b"", PERSISTENT);
    let _ = setup.close();
    // Writes through every node, each read back on every node.
    let mut paths = Vec::new();
    for &id in &ids {
        let mut writer = session(&ensemble, id);
        for i in 0..20 {
            let path = format!("/replicate/n{id}-{i}");
            create_ok(&mut writer, &path, b"first", PERSISTENT);
            let data = format!("n{id}-{i}");
            assert_eq!(writer.set_data(&path, data.as_bytes(), 0), Ok(OK), "setData {path} via node {id}");
            paths.push(path);
        }
        paths.extend(write_many(&mut writer, "/replicate", &format!("p{id}-"), 30, 10));
        let _ = writer.close();
    }
    assert_readable_everywhere(&ensemble, &ids, &paths);
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    println!("[forms] {} writes through 3 nodes, read on all; took {:?}", paths.len() * 2, started.elapsed());
}

#[test]
fn leader_sigkill_under_load() {
    let started = Instant::now();
    let (mut ensemble, leader) = started_ensemble("sigkill", 3, 0);
    let ids = ensemble.ids();
    let survivors = followers_of(&ensemble, leader);
    let all_ports = ensemble.client_ports(&ids);

    let mut setup = session(&ensemble, leader);
    for path in ["/load", "/sessions"] {
        create_ok(&mut setup, path, b"", PERSISTENT);
    }
    for &id in &ids {
        create_ok(&mut setup, &format!("/load/n{id}"), b"", PERSISTENT);
    }
    let _ = setup.close();

    // A session on a follower and one on the leader, each with an ephemeral,
    // kept alive (and moved when their server goes) in the background.
    let mut on_follower = session(&ensemble, survivors[0]);
    create_ok(&mut on_follower, "/sessions/on-follower", b"a", EPHEMERAL);
    let mut on_leader = session(&ensemble, leader);
    create_ok(&mut on_leader, "/sessions/on-leader", b"b", EPHEMERAL);
    let (follower_session_id, leader_session_id) = (on_follower.id, on_leader.id);
    let keeper_follower = SessionKeeper::start(on_follower, all_ports.clone());
    let keeper_leader = SessionKeeper::start(on_leader, all_ports.clone());

    // Pipelined writers on every node.
    let writers: Vec<LoadWriter> = ids
        .iter()
        .map(|&id| {
            LoadWriter::start(ensemble.client_port(id), &format!("/load/n{id}"), 150, Duration::from_millis(10), 16)
        })
        .collect();
    sleep(Duration::from_millis(1000));

    let killed_at = Instant::now();
    ensemble.kill(leader);
    // The first write committed after the kill, tried on the survivors.
    let survivor_ports = ensemble.client_ports(&survivors);
    let mut first_commit = None;
    for attempt in 0..100_000u32 {
        let port = survivor_ports[attempt as usize % survivor_ports.len()];
        if let Ok(mut probe) = Session::connect(port) {
            if probe.create(&format!("/probe-{attempt}"), b"p", PERSISTENT) == Ok(OK) {
                first_commit = Some((killed_at.elapsed(), port));
                let _ = probe.close();
                break;
            }
        }
        assert!(
            killed_at.elapsed() < STABLE_TIMEOUT,
            "no write committed within {STABLE_TIMEOUT:?} of the leader's SIGKILL"
        );
        sleep(Duration::from_millis(5));
    }
    let (to_first_commit, port) = first_commit.expect("a committed write");
    println!("[sigkill] leader {leader} SIGKILLed; first committed write {to_first_commit:?} later (via port {port})");

    let reports: Vec<LoadReport> = writers.into_iter().map(LoadWriter::stop).collect();
    let new_leader = ensemble.wait_stable(STABLE_TIMEOUT);
    assert_ne!(new_leader, leader, "the killed node cannot lead");
    println!("[sigkill] node {new_leader} leads after {:?}", killed_at.elapsed());

    // No acknowledged write lost, on any survivor.
    let mut acknowledged = 0;
    for report in &reports {
        assert!(report.failures.is_empty(), "writer on port {} got errors: {:?}", report.port, report.failures);
        acknowledged += report.created.len() + report.set.len();
        println!(
            "[sigkill] writer {} on port {}: {} pairs sent, {} creates and {} sets acknowledged; ended: {}",
            report.prefix,
            report.port,
            report.sent_pairs,
            report.created.len(),
            report.set.len(),
            report.ended
        );
    }
    assert!(acknowledged > 0, "the writers got nothing acknowledged before the kill");
    for &id in &survivors {
        let mut reader = session(&ensemble, id);
        reader.sync("/").expect("sync");
        for report in &reports {
            let found = reader.get_data_many(&report.created).expect("reads");
            for (path, found) in report.created.iter().zip(found) {
                let i: usize = path.rsplit("/k").next().unwrap().parse().unwrap();
                let (created, set) = load_data(i);
                let (data, stat) = found.unwrap_or_else(|| panic!("acknowledged create {path} lost on node {id}"));
                if report.set.contains(path) {
                    assert_eq!((data, stat.version), (set, 1), "acknowledged setData of {path} lost on node {id}");
                } else {
                    assert!(data == created || data == set, "{path} on node {id}: {data:?}");
                }
            }
            for path in &report.set {
                assert!(report.created.contains(path), "setData of {path} acknowledged without its create");
            }
        }
        let _ = reader.close();
    }
    println!("[sigkill] all {acknowledged} acknowledged writes present on nodes {survivors:?}");

    // Both sessions survived with their ephemerals, and still work.
    for (keeper, id, ephemeral, was_on) in [
        (keeper_follower, follower_session_id, "/sessions/on-follower", survivors[0]),
        (keeper_leader, leader_session_id, "/sessions/on-leader", leader),
    ] {
        let report = keeper.stop();
        assert!(!report.expired, "session {id:#x} (on node {was_on}) expired: {:?}", report.events);
        let mut session =
            report.session.unwrap_or_else(|| panic!("session {id:#x} not reconnected: {:?}", report.events));
        println!(
            "[sigkill] session {id:#x} (was on node {was_on}) reconnections: {:?}; along the way: {:?}",
            report.reconnects.iter().map(|r| (r.port, r.after)).collect::<Vec<_>>(),
            report.events
        );
        if was_on == leader {
            assert!(!report.reconnects.is_empty(), "the session on the killed leader never reconnected");
            assert_ne!(session.port, ensemble.client_port(leader));
        }
        for reconnect in &report.reconnects {
            assert!(
                reconnect.after < Duration::from_millis(session.timeout_ms as u64),
                "session {id:#x} reconnected after {:?}, beyond its {} ms timeout",
                reconnect.after,
                session.timeout_ms
            );
        }
        let stat = session.exists(ephemeral).expect("exists").unwrap_or_else(|| panic!("{ephemeral} is gone"));
        assert_eq!(stat.ephemeral_owner, id, "{ephemeral} owner");
        assert_eq!(session.create(&format!("{ephemeral}-after"), b"", PERSISTENT), Ok(OK), "session {id:#x} works");
        session.close().expect("close");
    }

    // The old leader comes back as a follower of the new one.
    ensemble.start(leader);
    let leader_now = ensemble.wait_stable(STABLE_TIMEOUT);
    assert_eq!(leader_now, new_leader, "a rejoining node must not depose the established leader");
    assert_eq!(ensemble.mode(leader), Some(Mode::Follower));
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    println!("[sigkill] took {:?}", started.elapsed());
}

#[test]
fn follower_restart_catches_up_by_diff() {
    let started = Instant::now();
    let (mut ensemble, leader) = started_ensemble("diff", 3, 0);
    let ids = ensemble.ids();
    let followers = followers_of(&ensemble, leader);
    let (stopped, other) = (followers[0], followers[1]);
    let mut setup = session(&ensemble, leader);
    create_ok(&mut setup, "/diff", b"", PERSISTENT);
    let mut paths = write_many(&mut setup, "/diff", "before-", 10, 10);
    let _ = setup.close();

    ensemble.stop(stopped);
    let mark = ensemble.output_mark(leader);
    let mut through_leader = session(&ensemble, leader);
    paths.extend(write_many(&mut through_leader, "/diff", "leader-", 25, 10));
    let _ = through_leader.close();
    let mut through_other = session(&ensemble, other);
    paths.extend(write_many(&mut through_other, "/diff", "other-", 25, 10));
    let _ = through_other.close();

    ensemble.start(stopped);
    assert_eq!(ensemble.wait_stable(STABLE_TIMEOUT), leader);
    let modes = ensemble.wait_sync_modes(&mark, stopped, SYNC_LOG_TIMEOUT);
    println!("[diff] leader {leader} synced node {stopped}: {modes:?}");
    assert_sync_mode(&modes, SyncMode::Diff, &[SyncMode::Snap, SyncMode::Trunc], "a follower 50 txns behind catches up by DIFF");
    assert_readable_everywhere(&ensemble, &ids, &paths);
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    println!("[diff] took {:?}", started.elapsed());
}

/// ZooKeeper's leader refills its committed log from its txn log when it
/// loads its database (ZKDatabase.loadDataBase: every txn replayed after the
/// snapshot, up to commitLogCount), so after the whole ensemble restarts —
/// the leader too, with nothing left in memory — a follower that fell
/// behind still catches up by DIFF, not SNAP.
/// Creates `parent` with `before` children, stops a follower, and writes
/// `missed` more past it. Returns (the stopped follower, the other one,
/// every path written).
fn write_past_a_stopped_follower(
    ensemble: &mut Ensemble,
    leader: u32,
    parent: &str,
    before: usize,
    missed: usize,
) -> (u32, u32, Vec<String>) {
    let followers = followers_of(ensemble, leader);
    let (lagging, other) = (followers[0], followers[1]);
    let mut setup = session(ensemble, leader);
    create_ok(&mut setup, parent, b"", PERSISTENT);
    let mut paths = write_many(&mut setup, parent, "before-", before, 10);
    let _ = setup.close();
    ensemble.stop(lagging);
    let mut writer = session(ensemble, leader);
    paths.extend(write_many(&mut writer, parent, "missed-", missed, 10));
    let _ = writer.close();
    (lagging, other, paths)
}

#[test]
fn lagging_follower_catches_up_by_diff_after_the_whole_ensemble_restarts() {
    let started = Instant::now();
    let (mut ensemble, leader) = started_ensemble("restart-diff", 3, 0);
    let ids = ensemble.ids();
    let (lagging, other, paths) = write_past_a_stopped_follower(&mut ensemble, leader, "/restart", 10, 50);
    // Then the other two go down as well, and all three come back.
    let marks: Vec<_> = [leader, other].iter().map(|&id| (id, ensemble.output_mark(id))).collect();
    ensemble.stop(leader);
    ensemble.stop(other);
    ensemble.start_all();
    let new_leader = ensemble.wait_stable(STABLE_TIMEOUT);
    assert_ne!(new_leader, lagging, "the follower that fell behind has the lowest zxid and cannot lead");
    let mark = &marks.iter().find(|(id, _)| *id == new_leader).unwrap().1;
    let modes = ensemble.wait_sync_modes(mark, lagging, SYNC_LOG_TIMEOUT);
    println!("[restart-diff] restarted leader {new_leader} (leader before: {leader}) synced node {lagging}: {modes:?}");
    assert_sync_mode(
        &modes,
        SyncMode::Diff,
        &[SyncMode::Snap, SyncMode::Trunc],
        "after a restart the leader's committed log comes from its txn log: a follower 50 txns behind catches up by DIFF",
    );
    assert_readable_everywhere(&ensemble, &ids, &paths);
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    println!("[restart-diff] took {:?}", started.elapsed());
}

/// A follower that missed the end of one epoch and the start of the next
/// gets both in one DIFF, and logs them together: the log batch crosses the
/// epoch boundary ((1, n) then (2, 1)). CI once lost a node to an encoder
/// that took every record for the next counter of one epoch.
#[test]
fn lagging_follower_catches_up_by_a_diff_across_epochs() {
    let (mut ensemble, leader) = started_ensemble("epoch-diff", 3, 0);
    let ids = ensemble.ids();
    let (lagging, other, mut paths) = write_past_a_stopped_follower(&mut ensemble, leader, "/epochs", 5, 20);
    // A new epoch without the lagging follower, with writes of its own.
    ensemble.stop(leader);
    ensemble.stop(other);
    ensemble.start(leader);
    ensemble.start(other);
    let new_leader = ensemble.wait_stable_among(&[leader, other], STABLE_TIMEOUT);
    let mut writer = session(&ensemble, new_leader);
    paths.extend(write_many(&mut writer, "/epochs", "new-epoch-", 20, 10));
    let _ = writer.close();

    let mark = ensemble.output_mark(new_leader);
    ensemble.start(lagging);
    let modes = ensemble.wait_sync_modes(&mark, lagging, SYNC_LOG_TIMEOUT);
    assert_sync_mode(&modes, SyncMode::Diff, &[SyncMode::Snap, SyncMode::Trunc], "both epochs' txns are in the leader's committed log");
    ensemble.wait_stable(STABLE_TIMEOUT);
    assert_readable_everywhere(&ensemble, &ids, &paths);
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    // And what it logged across the boundary reads back after a restart.
    ensemble.restart(lagging);
    ensemble.wait_stable(STABLE_TIMEOUT);
    assert_readable_everywhere(&ensemble, &[lagging], &paths);
}

/// Every member, the leader included, takes snapshots at its snapshot
/// points when writes come one at a time. A leader's snapshot point comes
/// when it proposes, before the txn commits; with the snapshot executor fed
/// in batches, the leader once asked for a snapshot and then waited for a
/// batch that a slow trickle of writes never filled (it took none).
#[test]
fn every_member_snapshots_at_a_low_write_rate() {
    let name = "lowratesnap";
    let mut ensemble = Ensemble::new(name, 3, 0);
    ensemble.append_config("snapCount=10");
    ensemble.start_all();
    let leader = ensemble.wait_stable(STABLE_TIMEOUT);
    let before: Vec<usize> = ensemble.voters().iter().map(|&id| ensemble.snapshot_files(id).len()).collect();
    let mut writer = session(&ensemble, leader);
    create_ok(&mut writer, "/snap", b"", 0);
    for _ in 0..40 {
        let err = writer.set_data("/snap", b"x", -1).expect("setData");
        assert_eq!(err, OK, "setData");
    }
    // 41 txns and a snapshot point every 6 to 10 of them: at least 4 points
    // each. A point reached while the previous snapshot is still being
    // written is skipped, as in ZooKeeper ("Too busy to snap"): with fsyncs
    // of ~10 ms on a loaded machine, two points in a row can meet one
    // snapshot. So: at least 3 points reached, and at least 1 snapshot taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let taken: Vec<usize> =
            ensemble.voters().iter().zip(&before).map(|(&id, before)| ensemble.snapshot_files(id).len() - before).collect();
        let skipped: Vec<usize> =
            ensemble.voters().iter().map(|&id| ensemble.output(id).matches("Too busy to snap").count()).collect();
        if taken.iter().zip(&skipped).all(|(taken, skipped)| *taken >= 1 && taken + skipped >= 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "[{name}] snapshots per node (leader {leader}): taken {taken:?}, skipped as busy {skipped:?}"
        );
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn wiped_follower_gets_snap() {
    let started = Instant::now();
    let (mut ensemble, leader) = started_ensemble("snap", 3, 0);
    let ids = ensemble.ids();
    let wiped = followers_of(&ensemble, leader)[0];
    let mut setup = session(&ensemble, leader);
    create_ok(&mut setup, "/snap", b"", PERSISTENT);
    let _ = setup.close();

    ensemble.stop(wiped);
    ensemble.wipe(wiped);
    let mark = ensemble.output_mark(leader);
    // More than ZooKeeper's commitLogCount (500): the leader's in-memory
    // committed log no longer reaches back to zxid 0.
    let mut writer = session(&ensemble, leader);
    let paths = write_many(&mut writer, "/snap", "k", 600, 100);
    let _ = writer.close();

    ensemble.start(wiped);
    assert_eq!(ensemble.wait_stable(STABLE_TIMEOUT), leader);
    let modes = ensemble.wait_sync_modes(&mark, wiped, SYNC_LOG_TIMEOUT);
    println!("[snap] leader {leader} synced wiped node {wiped}: {modes:?}");
    assert_sync_mode(&modes, SyncMode::Snap, &[SyncMode::Diff, SyncMode::Trunc], "a wiped follower gets a SNAP");
    assert_readable_everywhere(&ensemble, &[wiped], &paths);
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    println!("[snap] took {:?}", started.elapsed());
}

/// A SNAP many times the leader's stream window (`SNAP_STREAM_AHEAD_BYTES`,
/// 4 MiB: the snapshot is fed to the link a few chunks at a time) while a
/// client keeps writing: what commits during the transfer is held behind
/// the snapshot and follows it, so the synced follower ends up with all of
/// it.
#[test]
fn a_large_snap_streams_while_writes_commit() {
    let started = Instant::now();
    let (mut ensemble, leader) = started_ensemble("bigsnap", 3, 0);
    let ids = ensemble.ids();
    let wiped = followers_of(&ensemble, leader)[0];
    let mut setup = session(&ensemble, leader);
    create_ok(&mut setup, "/big", b"", PERSISTENT);
    create_ok(&mut setup, "/during", b"", PERSISTENT);
    let _ = setup.close();

    ensemble.stop(wiped);
    ensemble.wipe(wiped);
    let mark = ensemble.output_mark(leader);
    // 24 MiB of values.
    let nodes: Vec<(String, Vec<u8>)> = (0..384).map(|i| (format!("/big/n{i}"), vec![b'v'; 64 * 1024])).collect();
    let mut writer = session(&ensemble, leader);
    let errors = writer.create_many(&nodes, 32).unwrap_or_else(|e| panic!("large writes: {e:?}"));
    assert!(errors.iter().all(|&err| err == OK), "large writes: {errors:?}");
    let _ = writer.close();

    let port = ensemble.client_port(leader);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let during = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut client = Session::connect(port).expect("session on the leader");
            let mut paths = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && paths.len() < 20_000 {
                let path = format!("/during/k{}", paths.len());
                let name = path.rsplit('/').next().unwrap().as_bytes().to_vec();
                assert_eq!(client.create(&path, &name, PERSISTENT).expect("create during the sync"), OK, "{path}");
                paths.push(path);
            }
            let _ = client.close();
            paths
        })
    };
    ensemble.start(wiped);
    assert_eq!(ensemble.wait_stable(STABLE_TIMEOUT), leader);
    let modes = ensemble.wait_sync_modes(&mark, wiped, SYNC_LOG_TIMEOUT);
    // Let some writes follow the sync too.
    sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let during_paths = during.join().expect("writer thread");
    println!("[bigsnap] leader {leader} synced wiped node {wiped}: {modes:?}; {} writes meanwhile", during_paths.len());
    assert_sync_mode(&modes, SyncMode::Snap, &[SyncMode::Diff, SyncMode::Trunc], "a wiped follower gets a SNAP");
    if ensemble.target == Target::Warden {
        // Off the write path: the snapshot executor encoded it, not core 0.
        let leader_output = ensemble.output_since(&mark);
        assert!(leader_output.contains("encoded a snapshot for a learner"), "the leader's output:\n{leader_output}");
    }
    assert!(!during_paths.is_empty(), "no writes while the follower synced");
    assert_readable_everywhere(&ensemble, &[wiped], &during_paths);
    let mut reader = session(&ensemble, wiped);
    reader.sync("/").expect("sync");
    let paths: Vec<String> = nodes.iter().map(|(path, _)| path.clone()).collect();
    for (path, found) in paths.iter().zip(reader.get_data_many(&paths).expect("reads")) {
        let (data, _) = found.unwrap_or_else(|| panic!("{path} missing on node {wiped}"));
        assert_eq!(data.len(), 64 * 1024, "{path} on node {wiped}");
    }
    let _ = reader.close();
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    println!("[bigsnap] took {:?}", started.elapsed());
}

/// Cuts the leader off from both followers and at once writes through it:
/// the leader logs the proposal but can never commit it. Returns the path of
/// that write and its session (its connection is gone or going).
fn write_on_deposed_leader(ensemble: &Ensemble, leader: u32, followers: &[u32], name: &str) -> (String, Session) {
    let mut doomed = session(ensemble, leader);
    let path = format!("/deposed/uncommitted-{name}");
    ensemble.partition(&[&[leader], followers]);
    let outcome = doomed
        .send(OP_CREATE, &create_body(&path, b"never", PERSISTENT))
        .and_then(|_| doomed.recv(Duration::from_secs(3)));
    match &outcome {
        Ok(reply) => assert_ne!(reply.err, OK, "a write on a leader without a quorum was acknowledged"),
        Err(ClientError::Closed(_)) | Err(ClientError::Timeout(_)) => {}
        Err(other) => panic!("write on the deposed leader: {other:?}"),
    }
    println!("[{name}] write on the cut-off leader {leader}: {outcome:?}");
    (path, doomed)
}

#[test]
fn deposed_leader_is_truncated() {
    let started = Instant::now();
    let (mut ensemble, old_leader) = started_ensemble("trunc", 3, 0);
    let ids = ensemble.ids();
    let followers = followers_of(&ensemble, old_leader);
    let mut setup = session(&ensemble, old_leader);
    create_ok(&mut setup, "/deposed", b"", PERSISTENT);
    let mut paths = write_many(&mut setup, "/deposed", "before-", 10, 10);
    let _ = setup.close();
    let marks: Vec<_> = followers.iter().map(|&id| (id, ensemble.output_mark(id))).collect();

    let (uncommitted, doomed) = write_on_deposed_leader(&ensemble, old_leader, &followers, "trunc");
    let new_leader = ensemble.wait_stable_among(&followers, STABLE_TIMEOUT);
    println!("[trunc] majority {followers:?} elected node {new_leader} after {:?}", started.elapsed());
    // Keep the client's session alive on the majority (as its client would),
    // so that nothing (not even its expiry) is committed in the new epoch
    // before the old leader rejoins: then its extra txn sits above
    // everything the new leader has, and TRUNC is the answer.
    let (id, password, last_zxid) = (doomed.id, doomed.password.clone(), doomed.last_zxid);
    drop(doomed);
    let resumed = connect_resumed(&ensemble.client_ports(&followers), id, &password, last_zxid);
    let keeper = SessionKeeper::start(resumed, ensemble.client_ports(&followers));

    ensemble.heal();
    assert_eq!(ensemble.wait_stable(STABLE_TIMEOUT), new_leader, "the deposed leader rejoins as a follower");
    assert_eq!(ensemble.mode(old_leader), Some(Mode::Follower));
    let mark = &marks.iter().find(|(id, _)| *id == new_leader).unwrap().1;
    let modes = ensemble.wait_sync_modes(mark, old_leader, SYNC_LOG_TIMEOUT);
    println!("[trunc] new leader {new_leader} synced the deposed leader {old_leader}: {modes:?}");
    assert_sync_mode(&modes, SyncMode::Trunc, &[SyncMode::Snap], "the deposed leader's uncommitted txn is truncated");

    let report = keeper.stop();
    assert!(!report.expired, "{:?}", report.events);
    if let Some(session) = report.session {
        let _ = session.close();
    }
    // The ensemble goes on committing through every node, the old leader too.
    for &id in &ids {
        let mut writer = session(&ensemble, id);
        paths.extend(write_many(&mut writer, "/deposed", &format!("after-{id}-"), 10, 10));
        let _ = writer.close();
    }
    assert_absent_everywhere(&ensemble, &ids, &uncommitted);
    assert_readable_everywhere(&ensemble, &ids, &paths);
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    println!("[trunc] took {:?}", started.elapsed());
}

#[test]
fn deposed_leader_rejoins_after_new_epoch_commits() {
    let started = Instant::now();
    let (mut ensemble, old_leader) = started_ensemble("deposed", 3, 0);
    let ids = ensemble.ids();
    let followers = followers_of(&ensemble, old_leader);
    let mut setup = session(&ensemble, old_leader);
    create_ok(&mut setup, "/deposed", b"", PERSISTENT);
    let mut paths = write_many(&mut setup, "/deposed", "before-", 10, 10);
    let _ = setup.close();
    let marks: Vec<_> = followers.iter().map(|&id| (id, ensemble.output_mark(id))).collect();

    let (uncommitted, doomed) = write_on_deposed_leader(&ensemble, old_leader, &followers, "deposed");
    drop(doomed);
    let new_leader = ensemble.wait_stable_among(&followers, STABLE_TIMEOUT);
    // The majority commits in its new epoch while the old leader is cut off.
    for &id in &followers {
        let mut writer = session(&ensemble, id);
        paths.extend(write_many(&mut writer, "/deposed", &format!("majority-{id}-"), 25, 10));
        let _ = writer.close();
    }
    ensemble.heal();
    assert_eq!(ensemble.wait_stable(STABLE_TIMEOUT), new_leader, "the deposed leader rejoins as a follower");
    let mark = &marks.iter().find(|(id, _)| *id == new_leader).unwrap().1;
    let modes = modes_named(&ensemble.wait_sync_modes(mark, old_leader, SYNC_LOG_TIMEOUT));
    // Its log now ends in a txn of an epoch the new leader's history skips.
    // ZooKeeper 3.8 cannot TRUNC across that epoch boundary and sends a SNAP
    // (LearnerHandler: "Cannot send TRUNC to peer sid: N peer zxid is from
    // different epoch", then "fall back to use snapshot"); TRUNC followed by
    // DIFF is as correct. A DIFF alone would keep the uncommitted txn.
    println!("[deposed] new leader {new_leader} synced the deposed leader {old_leader} by {modes:?}");
    assert!(
        modes.contains(&SyncMode::Snap) || modes.contains(&SyncMode::Trunc),
        "the deposed leader must be truncated or sent a snapshot; the leader logged {modes:?}"
    );
    assert_absent_everywhere(&ensemble, &ids, &uncommitted);
    assert_readable_everywhere(&ensemble, &ids, &paths);
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    println!("[deposed] took {:?}", started.elapsed());
}

/// Resumes a session on the first of `ports` that takes it (bounded).
fn connect_resumed(ports: &[u16], id: i64, password: &[u8], last_zxid: i64) -> Session {
    let started = Instant::now();
    let mut errors = Vec::new();
    for attempt in 0..10_000usize {
        let port = ports[attempt % ports.len()];
        match Session::resume(port, id, password, last_zxid, SESSION_TIMEOUT_MS) {
            Ok(session) => return session,
            Err(error) => errors.push(error),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "session {id:#x} not resumed on {ports:?}: {errors:?}");
        sleep(Duration::from_millis(20));
    }
    panic!("session {id:#x} not resumed");
}

#[test]
fn minority_partition_cannot_commit() {
    let started = Instant::now();
    let (mut ensemble, leader) = started_ensemble("minority", 3, 0);
    let ids = ensemble.ids();
    let followers = followers_of(&ensemble, leader);
    let (isolated, other) = (followers[0], followers[1]);
    let mut setup = session(&ensemble, leader);
    create_ok(&mut setup, "/minority", b"", PERSISTENT);
    let mut paths = write_many(&mut setup, "/minority", "before-", 10, 10);
    let _ = setup.close();
    let mut on_isolated = session(&ensemble, isolated);

    ensemble.partition(&[&[isolated], &[leader, other]]);
    let lost = "/minority/lost";
    let outcome = on_isolated
        .send(OP_CREATE, &create_body(lost, b"never", PERSISTENT))
        .and_then(|_| on_isolated.recv(Duration::from_secs(5)));
    println!("[minority] write through the isolated node {isolated}: {outcome:?}");
    match outcome {
        Ok(reply) => assert_ne!(reply.err, OK, "a write through a minority was acknowledged"),
        Err(ClientError::Closed(_)) | Err(ClientError::Timeout(_)) => {}
        Err(other) => panic!("write through the minority: {other:?}"),
    }
    // The minority stops serving; a new session there is refused.
    ensemble.wait_not_serving(isolated, Duration::from_secs(5));
    let attempt = Session::connect(ensemble.client_port(isolated));
    assert!(attempt.is_err(), "the isolated node accepted a session");

    // The majority keeps its leader and commits.
    let majority = [leader, other];
    assert_eq!(ensemble.wait_stable_among(&majority, STABLE_TIMEOUT), leader);
    for &id in &majority {
        let mut writer = session(&ensemble, id);
        paths.extend(write_many(&mut writer, "/minority", &format!("majority-{id}-"), 25, 10));
        let _ = writer.close();
    }
    assert!(ensemble.mode(isolated).is_none(), "the isolated node serves again while cut off");

    ensemble.heal();
    assert_eq!(ensemble.wait_stable(STABLE_TIMEOUT), leader);
    assert_absent_everywhere(&ensemble, &ids, lost);
    assert_readable_everywhere(&ensemble, &ids, &paths);
    ensemble.assert_converged(&ids, CONVERGE_TIMEOUT);
    println!("[minority] took {:?}", started.elapsed());
}

#[test]
fn observer_serves_and_is_not_in_quorum() {
    let started = Instant::now();
    let (mut ensemble, leader) = started_ensemble("observer", 3, 1);
    let ids = ensemble.ids();
    let observer = 4;
    assert!(ensemble.is_observer(observer));
    assert_eq!(ensemble.mode(observer), Some(Mode::Observer));
    assert_eq!(ensemble.mntr(observer).get("zk_server_state").map(String::as_str), Some("observer"));
    let mntr = ensemble.mntr(leader);
    assert_eq!(mntr.get("zk_synced_followers").map(String::as_str), Some("2"), "observers are not followers: {mntr:?}");

    // Reads and forwarded writes through the observer.
    let mut through_observer = session(&ensemble, observer);
    create_ok(&mut through_observer, "/observed", b"", PERSISTENT);
    let mut paths = write_many(&mut through_observer, "/observed", "via-observer-", 20, 10);
    create_ok(&mut through_observer, "/observed-syncs", b"", PERSISTENT);
    let follower = followers_of(&ensemble, leader)[0];
    setdata_and_sync_answered_in_order(&mut session(&ensemble, follower), "/observed-syncs");
    setdata_and_sync_answered_in_order(&mut session(&ensemble, leader), "/observed-syncs");
    setdata_and_sync_answered_in_order(&mut through_observer, "/observed-syncs");
    through_observer.sync("/").expect("sync");
    let (data, _) = through_observer.get_data(&paths[0]).expect("read").expect("present");
    assert_eq!(data, b"via-observer-0");
    let mut via_leader = session(&ensemble, leader);
    paths.extend(write_many(&mut via_leader, "/observed", "via-leader-", 20, 10));
    let _ = via_leader.close();
    through_observer.sync("/").expect("sync");
    let children = through_observer.children("/observed").expect("children").expect("present");
    assert_eq!(children.len(), 40);
    let _ = through_observer.close();
    assert_readable_everywhere(&ensemble, &ids, &paths);

    // Its loss does not touch the quorum.
    ensemble.kill(observer);
    let mut writer = session(&ensemble, leader);
    paths.extend(write_many(&mut writer, "/observed", "no-observer-", 20, 10));
    let _ = writer.close();
    // Nor does the loss of one voter besides: 2 of 3 still commit.
    let follower = followers_of(&ensemble, leader)[0];
    ensemble.kill(follower);
    let remaining = followers_of(&ensemble, leader).into_iter().find(|&id| id != follower).unwrap();
    assert_eq!(ensemble.wait_stable_among(&[leader, remaining], STABLE_TIMEOUT), leader);
    for id in [leader, remaining] {
        let mut writer = session(&ensemble, id);
        paths.extend(write_many(&mut writer, "/observed", &format!("two-voters-{id}-"), 20, 10));
        let _ = writer.close();
    }
    // The observer comes back and catches up.
    ensemble.start(observer);
    assert_eq!(ensemble.wait_stable(STABLE_TIMEOUT), leader);
    let live = ensemble.running();
    assert_readable_everywhere(&ensemble, &live, &paths);
    ensemble.assert_converged(&live, CONVERGE_TIMEOUT);
    println!("[observer] took {:?}", started.elapsed());
}

/// The examples in config/ are what the ensembles run: every rendered file
/// keeps the example's settings and differs only in ports, directories and
/// tickTime.
#[test]
fn ensembles_start_from_the_shipped_examples() {
    for (voters, observers) in [(3, 0), (3, 1)] {
        let ensemble = Ensemble::new("examples", voters, observers);
        for id in ensemble.ids() {
            let text = ensemble.config_text(id);
            let settings: HashSet<&str> = text
                .lines()
                .filter(|line| !line.trim_start().starts_with('#') && line.contains('='))
                .map(|line| line.split('=').next().unwrap())
                .collect();
            for key in ["initLimit", "syncLimit", "tickTime", "dataDir", "clientPort", "4lw.commands.whitelist"] {
                assert!(settings.contains(key), "node {id}: no {key} in\n{text}");
            }
            let servers = text.lines().filter(|line| line.starts_with("server.")).count();
            assert_eq!(servers as u32, voters + observers, "node {id}:\n{text}");
            assert_eq!(text.contains("peerType=observer"), ensemble.is_observer(id), "node {id}:\n{text}");
        }
    }
}
