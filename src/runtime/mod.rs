//! The glommio runtime: the only layer that touches sockets, threads, signals
//! and the clock. It starts one executor per core; core 0 also runs the
//! sequencer. Shards bind the client port with SO_REUSEPORT so the kernel
//! spreads connections across cores. Between cores there are only bounded
//! SPSC queues: shard -> sequencer (requests) and sequencer -> shard (the
//! committed stream). A full queue makes the sender wait, which pauses the
//! connections feeding it: backpressure, never growth.

mod connection;
pub mod durability;
mod ensemble;
mod incoming_snapshot;
mod listener;
mod notify;
pub mod peer_net;
mod shard;
mod sequencer;
mod signals;
mod snapshots;
#[doc(hidden)]
pub mod testkit;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};
use hashbrown::HashMap;

use crate::config::Config;
use crate::limits;
use crate::pipeline::sequencer::StartState;
use crate::pipeline::{Committed, Now, ToSequencer};
use crate::tree::DataTree;

pub use shard::SharedState;

/// What the runtime needs beyond zoo.cfg's keys.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub config: Config,
    /// ZooKeeper's znode.container.checkIntervalMs.
    pub container_check_interval_ms: i64,
    /// Tests only: the log fails (ENOSPC) after this many bytes.
    pub test_fail_log_after_bytes: Option<u64>,
}

/// The wall clock, ms since the Unix epoch. NTP may step it either way, so it
/// is read only for values users see (txn times, znode ctime/mtime and what
/// is compared with them, four-letter-word timestamps) and to seed session
/// ids; everything that times something uses [`elapsed_ms`].
pub fn wall_clock_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Where [`elapsed_ms`] starts. Far from 0, so that a time kept as 0 ("never",
/// as an initial `last_full_tick_ms`) reads as long ago, as it did when the
/// runtime timed on the wall clock; far below where i64 ms would overflow.
const ELAPSED_ORIGIN_MS: i64 = 1_000_000_000_000;

/// The elapsed clock, ms: monotonic (an `Instant`, CLOCK_MONOTONIC), never
/// stepped by NTP, so a timeout measured on it is the time that passed. Its
/// origin is arbitrary (the first call in the process, plus
/// `ELAPSED_ORIGIN_MS`): only differences mean anything, and it starts over
/// with the process, so it is never stored.
pub fn elapsed_ms() -> i64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    ELAPSED_ORIGIN_MS + origin.elapsed().as_millis() as i64
}

/// Both clocks, for the sequencer (see `pipeline::Now`).
pub fn now() -> Now {
    Now { elapsed_ms: elapsed_ms(), wall_ms: wall_clock_ms() }
}

/// A fresh random secret: the kernel's randomness, or clock and pid if that fails.
fn random_secret() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr() as *mut libc::c_void, bytes.len(), 0) };
    if filled == 8 {
        return u64::from_be_bytes(bytes);
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ ((std::process::id() as u64) << 32)
}

/// Runs the server until SIGINT or SIGTERM. Returns once every executor stopped.
pub fn run(options: ServerOptions) -> std::io::Result<()> {
    let mut options = options;
    // An ensemble: server.N lines, and this server's id in dataDir/myid.
    let ensemble = !options.config.servers.is_empty();
    if ensemble {
        options.config.server_id = read_myid(&options.config.data_dir)?;
        if !options.config.servers.iter().any(|server| server.id == options.config.server_id) {
            return Err(std::io::Error::other(format!("myid {} has no server.{} line", options.config.server_id, options.config.server_id)));
        }
    }
    let config = &options.config;
    let allowed = allowed_cpus();
    // The CPUs this process may use: its mask, fewer under a cgroup CPU
    // quota (a container's --cpus), which available_parallelism reads.
    let usable = std::thread::available_parallelism().map_or(allowed.len(), |count| count.get()).min(allowed.len());
    let cores = if config.cores == 0 { usable } else { config.cores }.clamp(1, limits::SHARDS_MAX);
    let placements = shard_placements(cores, &allowed);
    let address = SocketAddr::new(config.client_port_address, config.client_port);

    // Recovery before anything serves: newest valid snapshot plus the log.
    let dirs = durability::DataDirs::new(&config.data_dir, &config.data_log_dir);
    let started = std::time::Instant::now();
    // An ensemble member also keeps the last txns replayed: its committed
    // log for DIFF, as ZooKeeper's loadDataBase fills committedLog.
    let replayed_tail_max = if ensemble { limits::COMMITTED_LOG_MAX } else { 0 };
    let recovered = dirs.recover_for_start(replayed_tail_max).map_err(|error| {
        std::io::Error::other(format!("refusing to start: {error}"))
    })?;
    let mut tree = recovered.tree;
    tracing::info!(
        snapshot_zxid = format_args!("{:#x}", recovered.snapshot_zxid),
        replayed = recovered.replayed,
        zxid = format_args!("{:#x}", tree.last_processed_zxid()),
        nodes = tree.node_count(),
        sessions = tree.sessions().len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered"
    );

    let shutdown = Arc::new(AtomicBool::new(false));
    signals::install(shutdown.clone())?;

    // Bind once up front, without sharing the port, so a port in use fails
    // loudly before any thread starts and port 0 resolves to one port that
    // every shard then shares.
    let probe = listener::bind_only(address, false).map_err(|error| std::io::Error::new(error.kind(), format!("cannot bind {address}: {error}")))?;
    let address = SocketAddr::new(address.ip(), listener::local_port(&probe)?);
    drop(probe);

    let mut to_sequencer_senders = Vec::new();
    let mut to_sequencer_receivers = Vec::new();
    let mut commit_senders = Vec::new();
    let mut commit_receivers = Vec::new();
    for _ in 0..cores {
        let (sender, receiver) = shared_channel::new_bounded(limits::SHARD_TO_SEQUENCER_QUEUE_MAX);
        to_sequencer_senders.push(Some(sender));
        to_sequencer_receivers.push(receiver);
        let (sender, receiver) = shared_channel::new_bounded(limits::COMMIT_QUEUE_MAX);
        commit_senders.push(sender);
        commit_receivers.push(Some(receiver));
    }
    let (snapshotter_sender, snapshotter_receiver) = shared_channel::new_bounded(limits::SNAPSHOTTER_QUEUE_MAX);
    // Session passwords derive from this secret; it lives in the data
    // directory so sessions can be resumed across restarts.
    let secret = dirs.password_secret(random_secret).map_err(|error| std::io::Error::other(format!("session secret: {error}")))?;
    let shared = Arc::new(SharedState {
        connections_by_ip: Mutex::new(HashMap::new()),
        commits_sent: (0..cores).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
        shards: (0..cores).map(|_| Mutex::new(shard::ShardPublished::default())).collect(),
        sequencer: Mutex::new(shard::SequencerPublished::default()),
        cores,
        options: options.clone(),
        started_ms: elapsed_ms(),
        serving: AtomicBool::new(!ensemble),
        role: Mutex::new(shard::RolePublished { ensemble, ..Default::default() }),
    });

    if ensemble {
        tracing::info!(%address, cores, myid = config.server_id, servers = config.servers.len(), "warden starting (ensemble)");
    } else {
        tracing::info!(%address, cores, "warden serving (standalone)");
    }
    let mut handles = Vec::new();
    // Each executor's result, sent when its work is done and before it
    // frees its state (see the end of this function).
    let (done_sender, done) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let snapshot_progress = Arc::new(snapshots::Progress::default());
    {
        let shutdown = shutdown.clone();
        let snapshot_progress = snapshot_progress.clone();
        let dirs = dirs.clone();
        let tree = tree.clone();
        let options = options.clone();
        let done_sender = done_sender.clone();
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name("warden-snapshots")
            .spawn(move || async move {
                glommio::spawn_local(keep_awake(shutdown.clone())).detach();
                let mut tree = tree;
                let result = snapshots::run(snapshotter_receiver, &mut tree, dirs, options, snapshot_progress, shutdown).await;
                let _ = done_sender.send(result);
            })
            .map_err(|error| std::io::Error::other(format!("cannot start the snapshot executor: {error}")))?;
        handles.push(handle);
    }
    let mut sequencer_parts = Some(SequencerParts {
        receivers: to_sequencer_receivers,
        senders: commit_senders,
        snapshotter: snapshotter_sender,
        snapshot_progress,
        start: if ensemble { SequencerStart::Ensemble(tree.clone()) } else { SequencerStart::Standalone(StartState::of(&tree)) },
        replayed_tail: recovered.replayed_tail,
        dirs,
    });
    for (shard_index, placement) in placements.into_iter().enumerate() {
        let to_sequencer = to_sequencer_senders[shard_index].take().expect("one sender per shard");
        let commits = commit_receivers[shard_index].take().expect("one receiver per shard");
        let sequencer = if shard_index == 0 { sequencer_parts.take() } else { None };
        let shutdown = shutdown.clone();
        let shared = shared.clone();
        let options = options.clone();
        // The last shard takes the recovered tree itself: one clone fewer.
        let tree = if shard_index + 1 == cores { std::mem::take(&mut tree) } else { tree.clone() };
        let done_sender = done_sender.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("warden-core-{shard_index}"))
            .spawn(move || async move {
                glommio::spawn_local(keep_awake(shutdown.clone())).detach();
                // The replica stays with the executor's tasks until it is torn down.
                let result = run_core(shard_index, address, options, secret, tree, to_sequencer, commits, sequencer, shared, shutdown).await;
                let _ = done_sender.send(result);
            })
            .map_err(|error| std::io::Error::other(format!("cannot start executor {shard_index}: {error}")))?;
        handles.push(handle);
    }
    drop(tree);
    // Recovery's buffers and its tree were allocated here and are free now;
    // glibc keeps such memory mapped unless asked to give it back (a server
    // restarted on 300,000 znodes held about 10 % more than before it).
    trim_heap();
    drop(done_sender);
    // Each executor reports once it has stopped: its connections and log
    // writes are done with, an abandoned snapshot's file is removed. Freeing
    // its replicas is left to the process's exit: with 2.2M znodes, freeing
    // them made stopping take 1.6-1.9 s instead of 0.3 s (three threads
    // freeing values and paths they share). An executor that panicked
    // reports nothing; then every thread is joined.
    let mut result = Ok(());
    let mut reported = 0;
    while reported < handles.len() {
        match done.recv() {
            Ok(Ok(())) => reported += 1,
            Ok(Err(error)) => {
                reported += 1;
                result = Err(error);
            }
            Err(_) => break,
        }
    }
    if reported < handles.len() {
        for handle in handles {
            if let Err(error) = handle.join() {
                result = Err(std::io::Error::other(format!("executor failed: {error}")));
            }
        }
    }
    tracing::info!("warden stopped");
    result
}

/// The CPUs this process may run on, lowest first: its affinity mask, as
/// `taskset`, `numactl` or a container's cpuset left it. Falls back to CPUs
/// 0..available_parallelism if the mask cannot be read.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain bits, valid when zeroed; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let read = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    let cpus: Vec<usize> = if read {
        // SAFETY: CPU_ISSET only reads the set, at an index below CPU_SETSIZE.
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        let available = std::thread::available_parallelism().map_or(1, |count| count.get());
        return (0..available).collect();
    }
    cpus
}

/// Where each shard's executor runs: shard i pinned to the i-th allowed CPU
/// while there are enough of them, else every shard unpinned (within the
/// process's mask). Pinning to CPU i itself would escape `taskset -c 4-7`,
/// and would stack every server of a one-machine ensemble on CPU 0.
fn shard_placements(cores: usize, allowed: &[usize]) -> Vec<Placement> {
    if cores <= allowed.len() {
        allowed[..cores].iter().map(|&cpu| Placement::Fixed(cpu)).collect()
    } else {
        (0..cores).map(|_| Placement::Unbound).collect()
    }
}

/// Returns the heap's free pages to the kernel, after start-up or a reload
/// freed a whole tree and the buffers that rebuilt it.
pub(crate) fn trim_heap() {
    // SAFETY: malloc_trim only releases memory no allocation uses.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often every executor wakes up even with nothing to do.
const EXECUTOR_WAKE_MS: u64 = 10;

/// Wakes the executor every `EXECUTOR_WAKE_MS` until shutdown. Each wake-up
/// makes glommio's reactor re-check every shared channel (connections being
/// made and queues with room or data), so a cross-executor wake-up that is
/// lost costs at most that long instead of hanging: under heavy load a
/// server was seen, rarely, to stop at start-up with core 0 asleep in its
/// io_uring wait while the other executors spun in `shared_channel`'s
/// connect (cf. DataDog/glommio#261, #547).
async fn keep_awake(shutdown: Arc<AtomicBool>) {
    while !shutdown.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(EXECUTOR_WAKE_MS)).await;
    }
}

/// ZooKeeper's `myid` file: this server's id, alone in `dataDir/myid`.
fn read_myid(data_dir: &std::path::Path) -> std::io::Result<u64> {
    let path = data_dir.join("myid");
    let text = std::fs::read_to_string(&path)
        .map_err(|error| std::io::Error::new(error.kind(), format!("{}: {error} (an ensemble member needs its id there)", path.display())))?;
    text.trim().parse().map_err(|error| std::io::Error::other(format!("{}: not a server id: {error}", path.display())))
}

/// What core 0 needs to run the sequencer and the log.
struct SequencerParts {
    receivers: Vec<SharedReceiver<ToSequencer>>,
    senders: Vec<SharedSender<Committed>>,
    snapshotter: SharedSender<snapshots::Input>,
    snapshot_progress: Arc<snapshots::Progress>,
    start: SequencerStart,
    /// The last txns recovery replayed into the tree (ensemble members only).
    replayed_tail: std::collections::VecDeque<crate::txn::Txn>,
    dirs: durability::DataDirs,
}

/// What core 0 starts from.
enum SequencerStart {
    /// The sequencer's start state, taken here from the recovered tree so
    /// that core 0 never holds a copy of the whole tree.
    Standalone(StartState),
    /// The recovered tree: the member leads from it, if elected, until a
    /// reload replaces it.
    Ensemble(DataTree),
}

#[allow(clippy::too_many_arguments)]
async fn run_core(
    shard_index: usize,
    address: SocketAddr,
    options: ServerOptions,
    secret: u64,
    tree: DataTree,
    to_sequencer: SharedSender<ToSequencer>,
    commits: SharedReceiver<Committed>,
    sequencer: Option<SequencerParts>,
    shared: Arc<SharedState>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    if let Some(parts) = sequencer {
        // Its own task: connecting waits for the other ends, and one of them is
        // this core's own shard, connected below.
        let options = options.clone();
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        glommio::spawn_local(async move {
            let result = if options.config.servers.is_empty() {
                sequencer::run(options, secret, parts, shared).await
            } else {
                ensemble::run(options, secret, parts, shared).await
            };
            if let Err(error) = result {
                // The write path is gone (the log could not be opened or
                // written, an epoch file could not be persisted, the peer
                // ports could not be bound): nothing can be acknowledged any
                // more, so stop, and say so in the exit status.
                tracing::error!("the write path failed: {error}; stopping");
                eprintln!("warden: the write path failed: {error}");
                shutdown.store(true, Ordering::Relaxed);
                std::process::exit(1);
            }
        })
        .detach();
    }
    let to_sequencer = to_sequencer.connect().await;
    let commits = commits.connect().await;
    let serve = shard::serve(shard_index, address, options, secret, tree, to_sequencer, commits, shared);
    let stop = async {
        while !shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    };
    futures_lite::future::or(serve, stop).await
}

/// Answers a four-letter word from this shard's replica and what the other
/// cores last published (at most half a tick old).
fn four_letter_word(runtime: &shard::ShardRuntime, word: &str) -> String {
    if !runtime.options.config.four_letter_words.allows(word) {
        return crate::fourlw::not_whitelisted(word);
    }
    runtime.publish_now();
    let now_ms = elapsed_ms();
    let config = &runtime.options.config;
    let shared = &runtime.shared;
    let role = shared.role.lock().unwrap_or_else(|poison| poison.into_inner()).clone();
    if role.ensemble && !role.serving && word != "ruok" && word != "conf" && word != "envi" {
        return "This ZooKeeper instance is not currently serving requests\n".to_owned();
    }
    let core = runtime.core.borrow();
    let tree = core.tree();
    let mut snapshot = crate::fourlw::ServerSnapshot {
        version: format!("3.8.0-warden-{}", env!("CARGO_PKG_VERSION")),
        server_state: "standalone".into(),
        zxid: tree.last_processed_zxid(),
        node_count: tree.node_count(),
        ephemerals: tree.ephemerals_by_session(),
        approximate_data_size: tree.approximate_data_size(),
        started_ms: shared.started_ms,
        cores: shared.cores,
        ..Default::default()
    };
    if role.ensemble {
        use crate::zab::election::ServerState;
        snapshot.server_state = match role.state {
            ServerState::Leading => "leader",
            ServerState::Following => "follower",
            ServerState::Observing => "observer",
            ServerState::Looking => "looking",
        }
        .into();
        if role.state == ServerState::Leading {
            snapshot.metrics.push(("learners".into(), role.stats.learners.to_string()));
            snapshot.metrics.push(("followers".into(), role.stats.learners.to_string()));
            snapshot.metrics.push(("synced_followers".into(), role.stats.synced_followers.to_string()));
            snapshot.metrics.push(("synced_non_voting_followers".into(), (role.stats.learners - role.stats.synced_followers).to_string()));
            snapshot.metrics.push(("pending_syncs".into(), role.stats.pending_syncs.to_string()));
        }
        snapshot.metrics.push(("peer_state".into(), snapshot.server_state.clone()));
        snapshot.metrics.push(("accepted_epoch".into(), role.epochs.0.to_string()));
        snapshot.metrics.push(("current_epoch".into(), role.epochs.1.to_string()));
        snapshot.metrics.push(("last_zxid".into(), format!("0x{:x}", tree.last_processed_zxid())));
    }
    let (mut latency_total, mut latency_count, mut latency_min) = (0u64, 0u64, u64::MAX);
    for slot in &shared.shards {
        let published = slot.lock().unwrap_or_else(|poison| poison.into_inner()).clone();
        snapshot.packets_received += published.packets_received;
        snapshot.packets_sent += published.packets_sent;
        snapshot.outstanding_requests += published.outstanding_requests;
        snapshot.watch_count += published.watch_count as u64;
        snapshot.watches.extend(published.watches_by_session);
        snapshot.latency_ms_max = snapshot.latency_ms_max.max(published.latency_ms_max);
        if published.latency_count > 0 {
            latency_min = latency_min.min(published.latency_ms_min);
        }
        latency_total += published.latency_ms_total;
        latency_count += published.latency_count;
        for connection in published.connections {
            let average = connection.latency_ms_total.checked_div(connection.latency_count).unwrap_or(0);
            snapshot.connections.push(crate::fourlw::ConnectionSnapshot {
                remote: connection.remote,
                interest_ops: 1,
                queued: connection.queued as u64,
                received: connection.received,
                sent: connection.sent,
                session_id: connection.session_id,
                last_operation: if connection.last_operation.is_empty() { "NA".into() } else { connection.last_operation },
                established_ms: connection.established_ms,
                timeout_ms: connection.timeout_ms,
                last_cxid: connection.last_cxid as i64,
                last_zxid: connection.last_zxid,
                last_response_ms: connection.last_response_ms,
                last_latency_ms: connection.last_latency_ms,
                latency_ms_min: if connection.latency_count > 0 { connection.latency_ms_min } else { 0 },
                latency_ms_avg: average,
                latency_ms_max: connection.latency_ms_max,
                expires_at_ms: 0,
            });
        }
    }
    snapshot.latency_ms_min = if latency_count > 0 { latency_min } else { 0 };
    snapshot.latency_ms_avg = if latency_count > 0 { latency_total as f64 / latency_count as f64 } else { 0.0 };
    snapshot.sessions = shared.sequencer.lock().unwrap_or_else(|poison| poison.into_inner()).sessions.clone();
    for connection in &mut snapshot.connections {
        if let Some((_, expiry_ms)) = snapshot.sessions.iter().find(|(session_id, _)| *session_id == connection.session_id) {
            connection.expires_at_ms = *expiry_ms;
        }
    }
    snapshot.config = crate::fourlw::ConfigSnapshot {
        client_port: config.client_port as i32,
        secure_client_port: -1,
        data_dir: format!("{}/version-2", config.data_dir.display()),
        data_log_dir: format!("{}/version-2", config.data_log_dir.display()),
        tick_time: config.tick_time_ms as i32,
        max_client_cnxns: config.max_client_cnxns as i32,
        min_session_timeout: config.session_timeout_ms_min as i32,
        max_session_timeout: config.session_timeout_ms_max as i32,
        client_port_listen_backlog: -1,
        server_id: config.server_id as i64,
    };
    snapshot.data_dir_size = directory_bytes(&config.data_dir);
    snapshot.data_log_dir_size = directory_bytes(&config.data_log_dir);
    snapshot.open_file_descriptors = std::fs::read_dir("/proc/self/fd").ok().map(|entries| entries.count() as u64);
    snapshot.max_file_descriptors = max_file_descriptors();
    snapshot.env = host_environment();
    crate::fourlw::render(word, &snapshot, now_ms)
}

fn directory_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .filter(|metadata| metadata.is_file())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

fn max_file_descriptors() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    let result = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (result == 0).then_some(limit.rlim_cur)
}

fn host_environment() -> crate::fourlw::EnvSnapshot {
    // SAFETY: uname fills the zeroed struct; the fields are NUL-terminated.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::uname(&mut name) } == 0;
    let field = |raw: &[libc::c_char]| -> String {
        let bytes: Vec<u8> = raw.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let env = |key: &str| std::env::var(key).unwrap_or_else(|_| "<NA>".into());
    crate::fourlw::EnvSnapshot {
        host_name: if ok { field(&name.nodename) } else { "<NA>".into() },
        os_name: if ok { field(&name.sysname) } else { "<NA>".into() },
        os_arch: if ok { field(&name.machine).replace("x86_64", "amd64") } else { "<NA>".into() },
        os_version: if ok { field(&name.release) } else { "<NA>".into() },
        user_name: env("USER"),
        user_home: env("HOME"),
        user_dir: std::env::current_dir().map_or_else(|_| "<NA>".into(), |dir| dir.display().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_pinned_to_the_allowed_cpus_in_order() {
        assert_eq!(shard_placements(2, &[4, 5, 6, 7]), [Placement::Fixed(4), Placement::Fixed(5)]);
        assert_eq!(shard_placements(3, &[1, 3, 8]), [Placement::Fixed(1), Placement::Fixed(3), Placement::Fixed(8)]);
    }

    #[test]
    fn more_shards_than_allowed_cpus_run_unpinned() {
        assert_eq!(shard_placements(3, &[2, 3]), [Placement::Unbound, Placement::Unbound, Placement::Unbound]);
    }
}
