//! The glommio runtime: the only layer that touches sockets, threads, signals
//! and the clock. It starts one executor per core; core 0 also runs the
//! sequencer. Shards bind the client port with SO_REUSEPORT so the kernel
//! spreads connections across cores. Between cores there are only bounded
//! SPSC queues: shard -> sequencer (requests) and sequencer -> shard (the
//! committed stream). A full queue makes the sender wait, which pauses the
//! connections feeding it: backpressure, never growth.

mod connection;
mod notify;
mod shard;
mod signals;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};
use hashbrown::HashMap;

use crate::config::Config;
use crate::limits;
use crate::pipeline::sequencer::Effect;
use crate::pipeline::{Committed, Sequencer, SequencerConfig, ToSequencer};
use crate::tree::DataTree;

pub use shard::SharedState;

/// What the runtime needs beyond zoo.cfg's keys.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub config: Config,
    /// ZooKeeper's znode.container.checkIntervalMs.
    pub container_check_interval_ms: i64,
}

pub fn wall_clock_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A per-process secret for session passwords: unpredictable enough that a
/// client cannot guess another session's password from its id.
fn password_secret() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mut secret = nanos ^ ((std::process::id() as u64) << 32);
    let stack_address = &secret as *const u64 as u64;
    secret ^= stack_address.rotate_left(17);
    crate::session::session_password(secret as i64, 0x5eed)[..8].iter().fold(0u64, |acc, byte| acc << 8 | *byte as u64)
}

/// Runs the server until SIGINT or SIGTERM. Returns once every executor stopped.
pub fn run(options: ServerOptions) -> std::io::Result<()> {
    let config = &options.config;
    let available = std::thread::available_parallelism().map_or(1, |count| count.get());
    let cores = if config.cores == 0 { available } else { config.cores }.clamp(1, limits::SHARDS_MAX);
    let address = SocketAddr::new(config.client_port_address, config.client_port);
    let shutdown = Arc::new(AtomicBool::new(false));
    signals::install(shutdown.clone())?;

    // Bind once up front so a taken port fails loudly before any thread starts,
    // and so port 0 resolves to one port that every shard then shares.
    let probe = std::net::TcpListener::bind(address)?;
    let address = probe.local_addr()?;
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
    let secret = password_secret();
    let shared = Arc::new(SharedState {
        connections_by_ip: Mutex::new(HashMap::new()),
        shards: (0..cores).map(|_| Mutex::new(shard::ShardPublished::default())).collect(),
        sequencer: Mutex::new(shard::SequencerPublished::default()),
        cores,
        options: options.clone(),
    });

    tracing::info!(%address, cores, "warden starting (standalone)");
    let mut handles = Vec::new();
    let mut sequencer_parts = Some((to_sequencer_receivers, commit_senders));
    for shard_index in 0..cores {
        let placement = if cores <= available { Placement::Fixed(shard_index) } else { Placement::Unbound };
        let to_sequencer = to_sequencer_senders[shard_index].take().expect("one sender per shard");
        let commits = commit_receivers[shard_index].take().expect("one receiver per shard");
        let sequencer = if shard_index == 0 { sequencer_parts.take() } else { None };
        let shutdown = shutdown.clone();
        let shared = shared.clone();
        let options = options.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("warden-core-{shard_index}"))
            .spawn(move || async move {
                run_core(shard_index, address, options, secret, to_sequencer, commits, sequencer, shared, shutdown).await
            })
            .map_err(|error| std::io::Error::other(format!("cannot start executor {shard_index}: {error}")))?;
        handles.push(handle);
    }
    let mut result = Ok(());
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => result = Err(error),
            Err(error) => result = Err(std::io::Error::other(format!("executor failed: {error}"))),
        }
    }
    tracing::info!("warden stopped");
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_core(
    shard_index: usize,
    address: SocketAddr,
    options: ServerOptions,
    secret: u64,
    to_sequencer: SharedSender<ToSequencer>,
    commits: SharedReceiver<Committed>,
    sequencer: Option<(Vec<SharedReceiver<ToSequencer>>, Vec<SharedSender<Committed>>)>,
    shared: Arc<SharedState>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    if let Some((receivers, senders)) = sequencer {
        // Its own task: connecting waits for the other ends, and one of them is
        // this core's own shard, connected below.
        let options = options.clone();
        let shared = shared.clone();
        glommio::spawn_local(async move {
            let mut connected_receivers = Vec::new();
            for receiver in receivers {
                connected_receivers.push(receiver.connect().await);
            }
            let mut connected_senders = Vec::new();
            for sender in senders {
                connected_senders.push(sender.connect().await);
            }
            run_sequencer(options, secret, connected_receivers, connected_senders, shared).await
        })
        .detach();
    }
    let to_sequencer = to_sequencer.connect().await;
    let commits = commits.connect().await;
    let serve = shard::serve(shard_index, address, options, secret, to_sequencer, commits, shared);
    let stop = async {
        while !shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    };
    futures_lite::future::or(serve, stop).await
}

enum SequencerInput {
    Message(ToSequencer),
    Tick,
}

async fn run_sequencer(
    options: ServerOptions,
    secret: u64,
    receivers: Vec<ConnectedReceiver<ToSequencer>>,
    senders: Vec<ConnectedSender<Committed>>,
    shared: Arc<SharedState>,
) {
    let config = &options.config;
    let tick_ms = config.tick_time_ms as i64;
    let sequencer_config = SequencerConfig {
        tick_ms,
        extended_types_enabled: config.extended_types_enabled,
        server_id: 0,
        password_secret: secret,
        container_check_interval_ms: options.container_check_interval_ms,
        container_deletes_per_check_max: limits::CONTAINER_DELETES_PER_CHECK_MAX,
    };
    let mut sequencer = Sequencer::new(DataTree::new(), sequencer_config, wall_clock_ms());
    let (inbox_sender, inbox) = glommio::channels::local_channel::new_bounded(limits::SEQUENCER_BATCH_MAX);
    let inbox_sender = std::rc::Rc::new(inbox_sender);
    for receiver in receivers {
        let inbox_sender = inbox_sender.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                if inbox_sender.send(SequencerInput::Message(message)).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    {
        let inbox_sender = inbox_sender.clone();
        // Half a tick, so expiry lags a session's deadline by at most that.
        let period = Duration::from_millis((tick_ms / 2).max(1) as u64);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(period).await;
                if inbox_sender.send(SequencerInput::Tick).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    let mut effects = Vec::new();
    while let Some(input) = inbox.recv().await {
        let now_ms = wall_clock_ms();
        match input {
            SequencerInput::Message(message) => sequencer.step(now_ms, message, &mut effects),
            SequencerInput::Tick => {
                sequencer.tick(now_ms, &mut effects);
                if let Ok(mut published) = shared.sequencer.lock() {
                    published.session_count = sequencer.session_count();
                    published.zxid = sequencer.zxid_last();
                }
            }
        }
        for effect in effects.drain(..) {
            // Standalone has no log yet: an Append is committed at once. The
            // durable log (and, in an ensemble, the quorum of ACKs) goes here,
            // between sequencing and delivery.
            let item = match effect {
                Effect::Append(item) | Effect::Deliver(item) => item,
            };
            match item.only_for_shard() {
                Some(shard_index) => {
                    let _ = senders[shard_index].send(item).await;
                }
                None => {
                    for sender in &senders {
                        let _ = sender.send(item.clone()).await;
                    }
                }
            }
        }
    }
}

/// Answers a four-letter word from what the cores last published.
fn four_letter_word(runtime: &shard::ShardRuntime, word: &str) -> String {
    if !runtime.options.config.four_letter_words.allows(word) {
        return crate::fourlw::not_whitelisted(word);
    }
    match word {
        "ruok" => "imok".to_owned(),
        _ => crate::fourlw::not_whitelisted(word),
    }
}
