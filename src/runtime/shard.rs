//! One shard's executor: accepts connections, runs the applier that feeds the
//! committed stream into the pure `Shard`, reports session activity to the
//! sequencer, and routes the shard's outputs to connections.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use hashbrown::{HashMap, HashSet};

use super::notify::Notify;
use super::ServerOptions;
use crate::limits;
use crate::pipeline::{Committed, ConnectionId, Shard, ShardConfig, ShardOutput, ToSequencer};
use crate::tree::DataTree;

/// State every core can read: per-IP connection counts (maxClientCnxns) and
/// what each shard and the sequencer last published for the 4lw commands.
pub struct SharedState {
    pub connections_by_ip: Mutex<HashMap<IpAddr, u32>>,
    /// Committed items sent to each shard so far. The log task raises every
    /// target shard's count before it sends an item to any of them, so once a
    /// client has a reply from one shard, a read on any other shard waits for
    /// that write: reads across shards are as fresh as standalone ZooKeeper's.
    pub commits_sent: Vec<std::sync::atomic::AtomicU64>,
    pub shards: Vec<Mutex<ShardPublished>>,
    pub sequencer: Mutex<SequencerPublished>,
    pub cores: usize,
    pub options: ServerOptions,
    /// Elapsed-clock ms when the server started (`mntr`'s uptime).
    pub started_ms: i64,
    /// Whether clients are served: always standalone; in an ensemble only
    /// after the server synced with its leader (UPTODATE).
    pub serving: std::sync::atomic::AtomicBool,
    /// The ensemble role, for the four-letter words.
    pub role: Mutex<RolePublished>,
}

#[derive(Clone, Debug)]
pub struct RolePublished {
    pub ensemble: bool,
    pub state: crate::zab::election::ServerState,
    pub serving: bool,
    pub stats: crate::zab::peer::PeerStats,
    pub epochs: (u32, u32),
    pub leader: Option<u64>,
}

impl Default for RolePublished {
    fn default() -> Self {
        RolePublished {
            ensemble: false,
            state: crate::zab::election::ServerState::Looking,
            serving: false,
            stats: Default::default(),
            epochs: (0, 0),
            leader: None,
        }
    }
}

#[derive(Default, Clone)]
pub struct ShardPublished {
    pub connections: Vec<ConnectionPublished>,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    pub latency_ms_total: u64,
    pub latency_count: u64,
    pub watch_count: usize,
    /// The data-watch table by session, as ZooKeeper's wchc/wchp/wchs show it.
    pub watches_by_session: Vec<(i64, Vec<String>)>,
    pub outstanding_requests: u64,
}

#[derive(Default, Clone)]
pub struct ConnectionPublished {
    pub remote: String,
    pub queued: usize,
    pub received: u64,
    pub sent: u64,
    pub session_id: i64,
    pub timeout_ms: i32,
    pub last_operation: String,
    pub last_cxid: i32,
    pub last_zxid: i64,
    pub last_latency_ms: u64,
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    pub latency_ms_total: u64,
    pub latency_count: u64,
    pub established_ms: i64,
    pub last_response_ms: i64,
}

#[derive(Default, Clone)]
pub struct SequencerPublished {
    pub session_count: usize,
    pub zxid: i64,
    /// Sessions and the time their expiry bucket closes.
    pub sessions: Vec<(i64, i64)>,
}

/// A request of one connection still waiting for its answer, in the order
/// the client sent them.
pub enum Pending {
    /// A write (or sync) sent to the sequencer; its WriteDone pops it.
    Write,
    /// A read parked behind the writes ahead of it: it is answered from the
    /// replica right after the last of them applies, before anything later.
    Read(ParkedRead),
}

pub struct ParkedRead {
    pub xid: i32,
    pub request: crate::proto::Request,
    /// Elapsed-clock ms when it arrived (for its latency).
    pub started_ms: i64,
    /// Items sent to this shard when the read arrived: it must see them all
    /// (writes other clients were already answered for, on any shard).
    pub applied_at_least: u64,
}

/// A live connection as the runtime tracks it.
pub struct ConnectionHandle {
    pub remote: SocketAddr,
    pub outbound: RefCell<VecDeque<Bytes>>,
    pub outbound_bytes: Cell<usize>,
    pub closing: Cell<bool>,
    pub writes_in_flight: Cell<usize>,
    /// Writes and parked reads not answered yet, oldest first.
    pub pending: RefCell<VecDeque<Pending>>,
    pub parked_reads: Cell<usize>,
    pub session_id: Cell<i64>,
    pub timeout_ms: Cell<i32>,
    /// Wakes the writer: frames queued or closing.
    pub writer_wake: Notify,
    /// Wakes the reader: a write answered, the queue drained, or closing.
    pub reader_wake: Notify,
    pub stats: RefCell<ConnectionPublished>,
    /// When each in-flight write was received (elapsed-clock ms), oldest first
    /// (replies come in order).
    pub write_started_ms: RefCell<VecDeque<i64>>,
}

impl ConnectionHandle {
    /// `wall_ms`: when it was accepted, as `cons` shows it (`est=`).
    pub fn new(remote: SocketAddr, wall_ms: i64) -> ConnectionHandle {
        ConnectionHandle {
            remote,
            outbound: RefCell::new(VecDeque::new()),
            outbound_bytes: Cell::new(0),
            closing: Cell::new(false),
            writes_in_flight: Cell::new(0),
            pending: RefCell::new(VecDeque::new()),
            parked_reads: Cell::new(0),
            session_id: Cell::new(0),
            timeout_ms: Cell::new(0),
            writer_wake: Notify::default(),
            reader_wake: Notify::default(),
            stats: RefCell::new(ConnectionPublished {
                remote: format!("/{remote}"),
                established_ms: wall_ms,
                latency_ms_min: u64::MAX,
                ..Default::default()
            }),
            write_started_ms: RefCell::new(VecDeque::new()),
        }
    }

    /// Records a reply sent for a request received at `started_ms`, both on
    /// the elapsed clock: a latency must not change with an NTP step (and
    /// `lresp` is elapsed-clock ms, as ZooKeeper's is nanoTime's).
    pub fn record_response(&self, started_ms: i64, zxid: i64) {
        let now_ms = super::elapsed_ms();
        let latency = (now_ms - started_ms).max(0) as u64;
        let mut stats = self.stats.borrow_mut();
        stats.last_latency_ms = latency;
        stats.latency_ms_min = stats.latency_ms_min.min(latency);
        stats.latency_ms_max = stats.latency_ms_max.max(latency);
        stats.latency_ms_total += latency;
        stats.latency_count += 1;
        stats.last_response_ms = now_ms;
        stats.last_zxid = zxid;
    }

    /// Queues a frame; a client whose backlog passes the limit is dropped.
    pub fn push(&self, frame: Bytes) {
        if self.closing.get() {
            return;
        }
        let queued = self.outbound_bytes.get() + frame.len();
        if queued > limits::CONNECTION_OUTBOUND_BYTES_MAX {
            tracing::warn!(remote = %self.remote, queued, "client reads too slowly; closing its connection");
            self.close();
            return;
        }
        self.outbound_bytes.set(queued);
        self.outbound.borrow_mut().push_back(frame);
        self.writer_wake.notify();
    }

    pub fn close(&self) {
        self.closing.set(true);
        self.writer_wake.notify();
        self.reader_wake.notify();
    }
}

pub struct ShardRuntime {
    pub index: usize,
    /// Committed items this shard has applied (compare `SharedState::commits_sent`).
    pub commits_applied: Cell<u64>,
    pub applied_event: super::notify::NotifyAll,
    pub core: RefCell<Shard>,
    pub handles: RefCell<HashMap<ConnectionId, Rc<ConnectionHandle>>>,
    /// Connections whose oldest pending request is a parked read, due once
    /// the item being applied is (its writes ahead were just answered).
    pub parked_due: RefCell<Vec<ConnectionId>>,
    /// Connections whose oldest pending request is a parked read waiting for
    /// this shard to apply `applied_at_least` items, by that count. A
    /// connection closed meanwhile is skipped when its entry comes up.
    pub parked_awaiting: RefCell<std::collections::BTreeSet<(u64, ConnectionId)>>,
    pub to_sequencer: ConnectedSender<ToSequencer>,
    pub touched_sessions: RefCell<HashSet<i64>>,
    pub next_connection: Cell<u64>,
    pub options: ServerOptions,
    pub shared: Arc<SharedState>,
    pub packets_received: Cell<u64>,
    pub packets_sent: Cell<u64>,
}

impl ShardRuntime {
    pub fn dispatch(&self, outputs: &mut Vec<ShardOutput>) {
        let handles = self.handles.borrow();
        for output in outputs.drain(..) {
            match output {
                ShardOutput::Frame { connection, frame } => {
                    if let Some(handle) = handles.get(&connection) {
                        self.packets_sent.set(self.packets_sent.get() + 1);
                        handle.stats.borrow_mut().sent += 1;
                        handle.push(frame);
                    }
                }
                ShardOutput::WriteDone { connection } => {
                    if let Some(handle) = handles.get(&connection) {
                        if let Some(started_ms) = handle.write_started_ms.borrow_mut().pop_front() {
                            handle.record_response(started_ms, self.core.borrow().tree().last_processed_zxid());
                        }
                        handle.writes_in_flight.set(handle.writes_in_flight.get().saturating_sub(1));
                        let mut pending = handle.pending.borrow_mut();
                        if matches!(pending.front(), Some(Pending::Write)) {
                            pending.pop_front();
                        }
                        if matches!(pending.front(), Some(Pending::Read(_))) {
                            // Answered by `serve_parked_reads` once this item is applied.
                            self.parked_due.borrow_mut().push(connection);
                        }
                        handle.reader_wake.notify();
                    }
                }
                ShardOutput::Established { connection, session_id, timeout_ms } => {
                    if let Some(handle) = handles.get(&connection) {
                        handle.session_id.set(session_id);
                        handle.timeout_ms.set(timeout_ms);
                        handle.writes_in_flight.set(handle.writes_in_flight.get().saturating_sub(1));
                        handle.reader_wake.notify();
                        tracing::debug!(session = format_args!("{session_id:#x}"), timeout_ms, remote = %handle.remote, "session established");
                    }
                }
                ShardOutput::Close { connection } => {
                    if let Some(handle) = handles.get(&connection) {
                        handle.close();
                    }
                }
            }
        }
    }

    /// Answers a read from this shard's replica as it is now.
    pub fn serve_read(&self, connection: ConnectionId, handle: &ConnectionHandle, xid: i32, request: &crate::proto::Request, started_ms: i64) {
        let mut outputs = Vec::new();
        self.core.borrow_mut().read(connection, xid, request, &mut outputs);
        self.dispatch(&mut outputs);
        handle.record_response(started_ms, self.core.borrow().tree().last_processed_zxid());
    }

    /// Parks a read until the writes ahead of it are answered and this shard
    /// has applied `applied_at_least` items.
    pub fn park_read(&self, connection: ConnectionId, handle: &ConnectionHandle, read: ParkedRead) {
        let mut pending = handle.pending.borrow_mut();
        if pending.is_empty() {
            self.parked_awaiting.borrow_mut().insert((read.applied_at_least, connection));
        }
        pending.push_back(Pending::Read(read));
        handle.parked_reads.set(handle.parked_reads.get() + 1);
    }

    /// Called by the applier after each item: answers every parked read now
    /// due, so a read sees exactly the writes its client sent before it.
    /// Costs only the connections it serves (plus one look at the earliest
    /// awaiting count), however many connections have reads parked.
    pub fn serve_parked_reads(&self) {
        let applied = self.commits_applied.get();
        let mut ready = std::mem::take(&mut *self.parked_due.borrow_mut());
        {
            let mut awaiting = self.parked_awaiting.borrow_mut();
            while awaiting.first().is_some_and(|&(at_least, _)| at_least <= applied) {
                if let Some((_, connection)) = awaiting.pop_first() {
                    ready.push(connection);
                }
            }
        }
        for connection in ready {
            let handle = self.handles.borrow().get(&connection).cloned();
            let Some(handle) = handle else { continue };
            loop {
                let due = {
                    let mut pending = handle.pending.borrow_mut();
                    match pending.front() {
                        Some(Pending::Read(read)) if read.applied_at_least > applied => {
                            self.parked_awaiting.borrow_mut().insert((read.applied_at_least, connection));
                            None
                        }
                        Some(Pending::Read(_)) => match pending.pop_front() {
                            Some(Pending::Read(read)) => Some(read),
                            _ => None,
                        },
                        _ => None,
                    }
                };
                let Some(read) = due else { break };
                handle.parked_reads.set(handle.parked_reads.get() - 1);
                self.serve_read(connection, &handle, read.xid, &read.request, read.started_ms);
            }
            handle.reader_wake.notify();
        }
    }

    /// Waits until this shard has applied every item sent to it so far.
    pub async fn catch_up(&self) {
        let sent = self.shared.commits_sent[self.index].load(std::sync::atomic::Ordering::Acquire);
        while self.commits_applied.get() < sent {
            self.applied_event.notified().await;
        }
    }

    /// Refreshes this shard's published view now (a 4lw asked on this shard).
    pub fn publish_now(&self) {
        self.publish();
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        let counter = self.next_connection.get() + 1;
        self.next_connection.set(counter);
        ((self.index as u64) << 48) | (counter & 0xffff_ffff_ffff)
    }

    /// Publishes this shard's view for the four-letter words of any core.
    fn publish(&self) {
        let core = self.core.borrow();
        let handles = self.handles.borrow();
        let mut published = ShardPublished {
            packets_received: self.packets_received.get(),
            packets_sent: self.packets_sent.get(),
            ..Default::default()
        };
        let session_of = |connection: ConnectionId| handles.get(&connection).map_or(0, |handle| handle.session_id.get());
        published.watches_by_session = core
            .watches()
            .data_paths_by_watcher()
            .into_iter()
            .map(|(watcher, paths)| (session_of(watcher), paths))
            .collect();
        published.watch_count = core.watches().watch_count();
        for handle in handles.values() {
            let mut stats = handle.stats.borrow().clone();
            stats.queued = handle.outbound.borrow().len();
            stats.session_id = handle.session_id.get();
            stats.timeout_ms = handle.timeout_ms.get();
            published.outstanding_requests += (handle.writes_in_flight.get() + handle.parked_reads.get()) as u64;
            if stats.latency_count > 0 {
                published.latency_ms_min = if published.latency_count == 0 {
                    stats.latency_ms_min
                } else {
                    published.latency_ms_min.min(stats.latency_ms_min)
                };
                published.latency_ms_max = published.latency_ms_max.max(stats.latency_ms_max);
                published.latency_ms_total += stats.latency_ms_total;
                published.latency_count += stats.latency_count;
            }
            published.connections.push(stats);
        }
        if let Ok(mut slot) = self.shared.shards[self.index].lock() {
            *slot = published;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn serve(
    index: usize,
    address: SocketAddr,
    options: ServerOptions,
    secret: u64,
    tree: DataTree,
    to_sequencer: ConnectedSender<ToSequencer>,
    commits: ConnectedReceiver<Committed>,
    shared: Arc<SharedState>,
) -> std::io::Result<()> {
    let listener = super::listener::glommio_listener(address)?;
    let tick_ms = options.config.tick_time_ms as u64;
    let runtime = Rc::new(ShardRuntime {
        index,
        commits_applied: Cell::new(0),
        applied_event: super::notify::NotifyAll::default(),
        core: RefCell::new(Shard::new(tree, ShardConfig { password_secret: secret })),
        handles: RefCell::new(HashMap::new()),
        parked_due: RefCell::new(Vec::new()),
        parked_awaiting: RefCell::new(std::collections::BTreeSet::new()),
        to_sequencer,
        touched_sessions: RefCell::new(HashSet::new()),
        next_connection: Cell::new(0),
        options,
        shared,
        packets_received: Cell::new(0),
        packets_sent: Cell::new(0),
    });

    // The applier: the committed stream, in order, into this shard's replica.
    {
        let runtime = runtime.clone();
        glommio::spawn_local(async move {
            let mut outputs = Vec::new();
            while let Some(item) = commits.recv().await {
                runtime.core.borrow_mut().apply(&item, &mut outputs);
                runtime.dispatch(&mut outputs);
                runtime.commits_applied.set(runtime.commits_applied.get() + 1);
                runtime.serve_parked_reads();
                runtime.applied_event.notify_all();
            }
        })
        .detach();
    }
    // Session activity goes to the sequencer every half tick (ZooKeeper's learners
    // report it in their PINGs), and the 4lw view is refreshed.
    {
        let runtime = runtime.clone();
        glommio::spawn_local(async move {
            let period = Duration::from_millis((tick_ms / 2).max(1));
            loop {
                glommio::timer::sleep(period).await;
                let touched: Vec<i64> = runtime.touched_sessions.borrow_mut().drain().collect();
                for chunk in touched.chunks(limits::SESSION_TOUCH_BATCH_MAX) {
                    let message = ToSequencer::Touch { session_ids: chunk.to_vec() };
                    if runtime.to_sequencer.send(message).await.is_err() {
                        return;
                    }
                }
                runtime.publish();
            }
        })
        .detach();
    }
    tracing::debug!(shard = index, %address, "shard accepting connections");
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let runtime = runtime.clone();
        glommio::spawn_local(async move { super::connection::serve_connection(runtime, stream).await }).detach();
    }
}
