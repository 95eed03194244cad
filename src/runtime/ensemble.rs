//! Core 0 in an ensemble: the thin driver around `zab::peer::Peer`. It turns
//! peer-network events, log completions, timer ticks and client requests into
//! the peer's inputs and carries out its effects — sockets, epoch files, the
//! txn log (group commit, as standalone), truncation and snapshot install,
//! and the committed stream to the shards. Every decision is the peer's; on
//! the leader, the sequencer (Prep, sessions, zxids) feeds its proposals.
//! The peer times everything on the elapsed clock (`runtime::elapsed_ms`);
//! the sequencer gets both clocks (`pipeline::Now`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use hashbrown::HashMap;

use super::durability::{DataDirs, LogWriter, PendingSync};
use super::incoming_snapshot::IncomingSnapshot;
use super::notify::Notify;
use super::peer_net::{LinkId, NetEvent, PeerNet};
use super::sequencer::Outlet;
use super::shard::SharedState;
use super::{elapsed_ms, snapshots, wall_clock_ms, SequencerParts, ServerOptions};
use crate::limits;
use crate::pipeline::sequencer::Effect as SequencerEffect;
use crate::pipeline::{Committed, Entry, Now, Origin, Sequencer, SequencerConfig, ToSequencer};
use crate::storage::log::BatchEncoder;
use crate::tree::DataTree;
use crate::txn::Txn;
use crate::zab::election::ServerState;
use crate::zab::peer::{Effect, Msg, Peer, PeerConfig};
use crate::zab::wire::PeerMessage;
use crate::zab::{make_zxid, ServerId};

type PeerEffect = Effect<Entry, Committed>;

/// How often the driver looks at the clock while electing.
const ELECTION_TICK_MS: u64 = 25;
/// Connecting to the leader's quorum port may take this long.
const LEADER_CONNECT_TIMEOUT_MS: u64 = 2_000;

enum Internal {
    Tick,
    Logged(i64),
    Synced,
    LogFailed(String),
}

#[derive(Default)]
struct LogBatch {
    encoder: BatchEncoder,
    /// Report `Synced` once this batch (and all before it) is durable.
    sync_marker: bool,
    sealed: bool,
}

#[derive(Default)]
struct Log {
    batches: RefCell<VecDeque<LogBatch>>,
    pending_bytes: Cell<usize>,
    writing: Cell<bool>,
    /// Batches written whose sync is not yet reported.
    unconfirmed: Cell<usize>,
    writer: RefCell<Option<LogWriter>>,
    writer_wake: Notify,
    idle_wake: Notify,
}

impl Log {
    fn open_batch<T>(&self, action: impl FnOnce(&mut LogBatch) -> T) -> T {
        let mut batches = self.batches.borrow_mut();
        if batches.back().is_none_or(|batch| batch.sealed) {
            batches.push_back(LogBatch::default());
        }
        action(batches.back_mut().expect("just ensured"))
    }

    fn append(&self, txn: &Txn) {
        let added = self.open_batch(|batch| {
            let before = batch.encoder.len_bytes();
            batch.encoder.push(txn);
            if batch.encoder.is_full() {
                batch.sealed = true;
            }
            batch.encoder.len_bytes() - before
        });
        self.pending_bytes.set(self.pending_bytes.get() + added);
        self.writer_wake.notify();
    }

    fn sync_marker(&self) {
        self.open_batch(|batch| {
            batch.sync_marker = true;
            batch.sealed = true;
        });
        self.writer_wake.notify();
    }

    async fn idle(&self) {
        while self.writing.get() || self.unconfirmed.get() > 0 || !self.batches.borrow().is_empty() {
            self.idle_wake.notified().await;
        }
        // Callers truncate, replace or reopen the segments next: no zeros
        // may land in one afterwards.
        let zero_fill = self.writer.borrow_mut().as_mut().and_then(LogWriter::take_zero_fill);
        if let Some(zero_fill) = zero_fill {
            zero_fill.await;
        }
    }
}

/// A batch written (or failed), on its way to being confirmed.
struct WrittenBatch {
    /// The batch's last zxid and the sync covering it; None: nothing written.
    logged: Option<(i64, PendingSync)>,
    failed: Option<String>,
    sync_marker: bool,
}

/// Writes batches in order; the confirm task reports each (Logged, then
/// Synced if marked) once its fdatasync completed, in batch order, with up to
/// `LOG_SYNCS_IN_FLIGHT_MAX` syncs overlapping (see `LogWriter::write`).
async fn log_task(log: Rc<Log>, internal: Rc<LocalSender<Internal>>) {
    let (to_confirm, written) = local_channel::new_bounded(limits::LOG_SYNCS_IN_FLIGHT_MAX);
    glommio::spawn_local(confirm_task(log.clone(), written, internal)).detach();
    loop {
        let Some(mut batch) = log.batches.borrow_mut().pop_front() else {
            log.idle_wake.notify();
            log.writer_wake.notified().await;
            continue;
        };
        log.writing.set(true);
        let bytes = batch.encoder.len_bytes();
        let last_zxid = batch.encoder.last_zxid();
        let mut written = WrittenBatch { logged: None, failed: None, sync_marker: batch.sync_marker };
        if !batch.encoder.is_empty() {
            let mut writer = log.writer.borrow_mut().take().expect("a log writer");
            let result = writer.write(batch.encoder.finish()).await;
            *log.writer.borrow_mut() = Some(writer);
            log.pending_bytes.set(log.pending_bytes.get().saturating_sub(bytes));
            match result {
                Ok(sync) => written.logged = Some((last_zxid, sync)),
                Err(error) => written.failed = Some(error.to_string()),
            }
        }
        log.unconfirmed.set(log.unconfirmed.get() + 1);
        log.writing.set(false);
        if to_confirm.send(written).await.is_err() {
            return;
        }
    }
}

async fn confirm_task(log: Rc<Log>, written: local_channel::LocalReceiver<WrittenBatch>, internal: Rc<LocalSender<Internal>>) {
    while let Some(batch) = written.recv().await {
        let mut failed = batch.failed;
        if let Some((last_zxid, sync)) = batch.logged {
            match sync.await {
                Ok(()) => {
                    let _ = internal.send(Internal::Logged(last_zxid)).await;
                }
                Err(error) => failed = Some(error.to_string()),
            }
        }
        if let Some(error) = failed {
            let _ = internal.send(Internal::LogFailed(error)).await;
        }
        if batch.sync_marker {
            let _ = internal.send(Internal::Synced).await;
        }
        log.unconfirmed.set(log.unconfirmed.get() - 1);
        log.idle_wake.notify();
    }
}

struct Driver {
    my_id: ServerId,
    options: ServerOptions,
    secret: u64,
    dirs: DataDirs,
    peer: Peer<Entry, Committed>,
    net: Rc<PeerNet>,
    log: Rc<Log>,
    outlet: Outlet,
    shared: Arc<SharedState>,
    /// The data tree rebuilt from the log at the last reload or SNAP
    /// install, held only until this server serves: a leader's sequencer
    /// takes it, a learner drops it (its shards hold the state). Kept while
    /// serving, it was one more full replica of the tree.
    reloaded: Option<DataTree>,
    /// Its last zxid: the log resumes after it and the election starts from it.
    reloaded_zxid: i64,
    sequencer: Option<Sequencer>,
    /// Leader: learners' links by server id, and links not yet identified.
    learners: HashMap<ServerId, LinkId>,
    links: HashMap<LinkId, Option<ServerId>>,
    /// Learner: the link to the leader.
    leader_link: Option<(LinkId, ServerId)>,
    /// A SNAP being received.
    incoming_snapshot: Option<IncomingSnapshot>,
    received_snapshot: Option<Bytes>,
    /// Leader: learners' forwarded requests waiting for `can_propose`.
    held_forwards: VecDeque<ToSequencer>,
    /// Learner: txns applied since the last snapshot point.
    applied_since_snapshot: u64,
    /// Elapsed-clock time of the last tick that stepped the peer in full.
    last_full_tick_ms: i64,
}

pub async fn run(options: ServerOptions, secret: u64, mut parts: SequencerParts, shared: Arc<SharedState>) -> std::io::Result<()> {
    let replayed_tail = std::mem::take(&mut parts.replayed_tail);
    let (connected_receivers, outlet, start, dirs) = super::sequencer::connect(parts, shared.clone()).await;
    let super::SequencerStart::Ensemble(tree) = start else {
        return Err(std::io::Error::other("an ensemble member was given the standalone sequencer's start"));
    };
    let config = &options.config;
    let my_id = config.server_id;

    let (net_sender, net_events) = local_channel::new_bounded(limits::SEQUENCER_BATCH_MAX);
    let net = PeerNet::start(my_id, &config.servers, net_sender)?;
    let (internal_sender, internal) = local_channel::new_bounded(limits::SEQUENCER_BATCH_MAX);
    let internal_sender = Rc::new(internal_sender);
    let (request_sender, requests) = local_channel::new_bounded(limits::SEQUENCER_BATCH_MAX);
    let request_sender = Rc::new(request_sender);
    for receiver in connected_receivers {
        let request_sender = request_sender.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                if request_sender.send(message).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    {
        let internal_sender = internal_sender.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(ELECTION_TICK_MS)).await;
                if internal_sender.send(Internal::Tick).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    let log = Rc::new(Log::default());
    glommio::spawn_local(log_task(log.clone(), internal_sender.clone())).detach();

    let voters: Vec<ServerId> = config.servers.iter().filter(|s| s.peer_type == crate::config::PeerType::Participant).map(|s| s.id).collect();
    let observers: Vec<ServerId> = config.servers.iter().filter(|s| s.peer_type != crate::config::PeerType::Participant).map(|s| s.id).collect();
    let tick_ms = config.tick_time_ms as u64;
    let peer = Peer::new(PeerConfig {
        my_id,
        voters,
        observers,
        init_limit_ms: tick_ms * config.init_limit_ticks as u64,
        sync_limit_ms: tick_ms * config.sync_limit_ticks as u64,
        finalize_wait_ms: 200,
        committed_log_max: limits::COMMITTED_LOG_MAX,
        planted: crate::zab::peer::PlantedBugs::default(),
        epoch_counter_start: 0,
    });
    let mut driver = Driver {
        my_id,
        options: options.clone(),
        secret,
        dirs,
        peer,
        net,
        log,
        outlet,
        shared,
        reloaded_zxid: tree.last_processed_zxid(),
        reloaded: Some(tree),
        sequencer: None,
        learners: HashMap::new(),
        links: HashMap::new(),
        leader_link: None,
        incoming_snapshot: None,
        received_snapshot: None,
        held_forwards: VecDeque::new(),
        applied_since_snapshot: 0,
        last_full_tick_ms: 0,
    };
    driver.open_log().await?;
    driver.start_looking(replayed_tail).await?;
    driver.main_loop(net_events, internal, requests).await
}

enum Input {
    Net(NetEvent),
    Internal(Internal),
    Request(ToSequencer),
}

impl Driver {
    async fn main_loop(
        &mut self,
        net_events: LocalReceiver<NetEvent>,
        internal: LocalReceiver<Internal>,
        requests: LocalReceiver<ToSequencer>,
    ) -> std::io::Result<()> {
        loop {
            let accept_requests = self.accepts_requests();
            let events = futures_lite::future::or(
                async { net_events.recv().await.map(Input::Net) },
                async { internal.recv().await.map(Input::Internal) },
            );
            let input = if accept_requests {
                futures_lite::future::or(events, async { requests.recv().await.map(Input::Request) }).await
            } else {
                events.await
            };
            let Some(input) = input else { return Ok(()) };
            let now = super::now();
            let mut effects = Vec::new();
            match input {
                Input::Net(event) => self.on_net(now, event, &mut effects),
                Input::Internal(Internal::Tick) => self.on_tick(now, &mut effects),
                Input::Internal(Internal::Logged(zxid)) => self.peer.on_logged(now.elapsed_u64(), zxid, &mut effects),
                Input::Internal(Internal::Synced) => self.peer.on_synced(now.elapsed_u64(), &mut effects),
                Input::Internal(Internal::LogFailed(error)) => {
                    tracing::error!(%error, "transaction log write failed: this server cannot take part in the ensemble; stopping");
                    return Err(std::io::Error::other(format!("transaction log write failed: {error}")));
                }
                Input::Request(request) => self.on_request(now, request, &mut effects),
            }
            self.perform(effects).await?;
            if !self.held_forwards.is_empty() && self.peer.can_propose() {
                let mut effects = Vec::new();
                self.release_held_forwards(super::now(), &mut effects);
                self.perform(effects).await?;
            }
        }
    }

    fn accepts_requests(&self) -> bool {
        if self.log.pending_bytes.get() > limits::LOG_PENDING_BYTES_MAX {
            return false;
        }
        match self.peer.state() {
            ServerState::Leading if self.peer.is_serving() => self.peer.can_propose(),
            _ => true,
        }
    }

    fn on_tick(&mut self, now: Now, effects: &mut Vec<PeerEffect>) {
        let half_tick = (self.options.config.tick_time_ms as i64 / 2).max(1);
        // Until it serves, a server steps its peer every election tick (leader
        // retries and handshakes are timed in tens of milliseconds).
        if self.peer.is_serving() && now.elapsed_ms - self.last_full_tick_ms < half_tick {
            return;
        }
        self.last_full_tick_ms = now.elapsed_ms;
        self.peer.on_tick(now.elapsed_u64(), effects);
        if let Some(sequencer) = self.sequencer.as_mut() {
            let mut out = Vec::new();
            sequencer.tick(now, &mut out);
            if let Ok(mut published) = self.shared.sequencer.lock() {
                published.session_count = sequencer.session_count();
                published.zxid = sequencer.zxid_last();
                published.sessions = sequencer.session_expiries(now);
            }
            self.sequenced(now, out, effects);
        }
        self.publish();
    }

    fn publish(&self) {
        if let Ok(mut role) = self.shared.role.lock() {
            role.state = self.peer.state();
            role.serving = self.peer.is_serving();
            role.stats = self.peer.stats();
            role.epochs = self.peer.epochs();
            role.leader = self.peer.leader();
        }
    }

    /// The sequencer's output on the leader: txns become proposals; replies
    /// wait for the proposals before them.
    fn sequenced(&mut self, now: Now, out: Vec<SequencerEffect>, effects: &mut Vec<PeerEffect>) {
        for effect in out {
            match effect {
                SequencerEffect::Append(Committed::Txn { txn, origin }) => {
                    let zxid = txn.zxid;
                    match self.peer.propose(now.elapsed_u64(), Entry { txn, origin }, effects) {
                        Ok(proposed) => assert_eq!(proposed, zxid, "the sequencer and the leader disagree on zxids"),
                        Err(error) => {
                            tracing::warn!(?error, zxid = format_args!("{zxid:#x}"), "proposal refused");
                            if let Some(origin) = origin_of_failed(origin) {
                                self.peer_reply(origin, crate::proto::ErrorCode::ConnectionLoss, effects);
                            }
                        }
                    }
                }
                SequencerEffect::Append(other) | SequencerEffect::Deliver(other) => {
                    let server = other.reply_server().unwrap_or(self.my_id);
                    self.peer.reply(server, other, effects);
                }
                SequencerEffect::Snapshot { zxid } => self.outlet.request_snapshot(zxid),
            }
        }
    }

    fn peer_reply(&mut self, origin: Origin, err: crate::proto::ErrorCode, effects: &mut Vec<PeerEffect>) {
        self.peer.reply(origin.server, Committed::Failed { origin, err }, effects);
    }

    fn on_request(&mut self, now: Now, request: ToSequencer, effects: &mut Vec<PeerEffect>) {
        if !self.peer.is_serving() {
            // Our connections are being closed (Reset); the client retries elsewhere.
            return;
        }
        match self.peer.state() {
            ServerState::Leading => {
                let Some(sequencer) = self.sequencer.as_mut() else { return };
                let mut out = Vec::new();
                sequencer.step(now, request, &mut out);
                self.sequenced(now, out, effects);
            }
            _ => {
                let Some((link, _)) = self.leader_link else { return };
                if let Err(error) = self.net.send(link, PeerMessage::Forward(request)) {
                    // Dropping one request silently would break its
                    // connection's FIFO order: drop the link instead. This
                    // server re-syncs and closes its client connections, so
                    // every request in flight ends in a connection loss the
                    // clients retry, as ZooKeeper's learners do when their
                    // leader is unreachable.
                    tracing::warn!(?error, "cannot forward a request to the leader; leaving it");
                    self.net.close(link);
                }
            }
        }
    }

    fn on_net(&mut self, now: Now, event: NetEvent, effects: &mut Vec<PeerEffect>) {
        let now_ms = now.elapsed_u64();
        match event {
            NetEvent::Notification { notification, .. } => self.peer.on_notification(now_ms, notification, effects),
            NetEvent::QuorumAccepted { link } => {
                self.links.insert(link, None);
            }
            NetEvent::QuorumConnected { link, leader } => {
                if self.peer.leader() == Some(leader) && self.peer.state() != ServerState::Leading && self.leader_link.is_none() {
                    self.leader_link = Some((link, leader));
                    self.peer.on_leader_connected(now_ms, effects);
                } else {
                    self.net.close(link);
                }
            }
            NetEvent::QuorumConnectFailed { leader } => {
                if self.peer.leader() == Some(leader) && self.leader_link.is_none() {
                    self.peer.on_leader_unreachable(effects);
                }
            }
            NetEvent::QuorumClosed { link } => {
                if let Some((leader_link, leader)) = self.leader_link {
                    if leader_link == link {
                        self.leader_link = None;
                        self.peer.on_link_closed(now_ms, leader, effects);
                        return;
                    }
                }
                if let Some(Some(sid)) = self.links.remove(&link) {
                    if self.learners.get(&sid) == Some(&link) {
                        self.learners.remove(&sid);
                        self.peer.on_link_closed(now_ms, sid, effects);
                    }
                }
            }
            NetEvent::QuorumMessage { link, msg } => self.on_quorum_message(now, link, msg, effects),
        }
    }

    fn on_quorum_message(&mut self, now: Now, link: LinkId, msg: PeerMessage, effects: &mut Vec<PeerEffect>) {
        let now_ms = now.elapsed_u64();
        // From our leader?
        if let Some((leader_link, leader)) = self.leader_link {
            if leader_link == link {
                let msg = match msg {
                    PeerMessage::LeaderInfo { zxid, secret } => {
                        self.adopt_secret(secret);
                        Msg::LeaderInfo { zxid }
                    }
                    PeerMessage::Snap { zxid, bytes } => {
                        self.incoming_snapshot = None;
                        match IncomingSnapshot::begin(zxid, bytes) {
                            Ok(incoming) => self.incoming_snapshot = Some(incoming),
                            Err(error) => {
                                tracing::error!(%error, "cannot take the leader's snapshot; closing the link");
                                self.net.close(link);
                            }
                        }
                        return;
                    }
                    PeerMessage::SnapChunk { bytes } => {
                        let result = match self.incoming_snapshot.as_mut() {
                            Some(incoming) => incoming.chunk(&bytes),
                            None => Err("a snapshot chunk without a SNAP".to_string()),
                        };
                        if let Err(error) = result {
                            tracing::warn!(%error, "bad snapshot stream from the leader; closing the link");
                            self.incoming_snapshot = None;
                            self.net.close(link);
                        }
                        return;
                    }
                    PeerMessage::SnapEnd => {
                        let Some(incoming) = self.incoming_snapshot.take() else { return };
                        match incoming.end() {
                            Ok((zxid, bytes)) => {
                                self.received_snapshot = Some(bytes);
                                Msg::Snap { zxid }
                            }
                            Err(error) => {
                                tracing::warn!(%error, "bad snapshot stream from the leader; closing the link");
                                self.net.close(link);
                                return;
                            }
                        }
                    }
                    other => match to_msg(other) {
                        Some(msg) => msg,
                        None => {
                            tracing::warn!("unexpected message from the leader; closing the link");
                            self.net.close(link);
                            return;
                        }
                    },
                };
                return self.peer.on_message(now_ms, leader, msg, effects);
            }
        }
        // From a learner.
        let Some(known) = self.links.get(&link).copied() else { return };
        if self.peer.state() != ServerState::Leading {
            // Not leading (yet, or any more): the learner reconnects.
            self.net.close(link);
            return;
        }
        let sid = match (known, &msg) {
            (Some(sid), _) => sid,
            (None, PeerMessage::FollowerInfo { sid, .. } | PeerMessage::ObserverInfo { sid, .. }) => {
                let sid = *sid;
                if sid == self.my_id || !self.options.config.servers.iter().any(|s| s.id == sid) {
                    tracing::warn!(sid, "a learner with an unknown id connected; closing");
                    self.net.close(link);
                    return;
                }
                if let Some(old) = self.learners.insert(sid, link) {
                    self.net.close(old);
                    self.links.remove(&old);
                }
                self.links.insert(link, Some(sid));
                sid
            }
            (None, _) => {
                tracing::warn!("a learner spoke before FOLLOWERINFO; closing");
                self.net.close(link);
                return;
            }
        };
        match msg {
            PeerMessage::Forward(request) => {
                if self.sequencer.is_none() || !self.peer.is_serving() {
                    return;
                }
                // Like local requests, a learner's wait while the leader cannot
                // propose (too many proposals outstanding): the sequencer must
                // not number a txn the leader would then refuse.
                if !self.held_forwards.is_empty() || !self.peer.can_propose() {
                    if self.held_forwards.len() >= limits::LEADER_HELD_FORWARDS_MAX {
                        tracing::warn!(sid, limit = limits::LEADER_HELD_FORWARDS_MAX, "too many forwarded requests waiting; dropping the learner (it re-syncs, its clients reconnect)");
                        self.net.close(link);
                        return;
                    }
                    self.held_forwards.push_back(request.from_server(sid));
                    return;
                }
                if let Some(sequencer) = self.sequencer.as_mut() {
                    let mut out = Vec::new();
                    sequencer.step(now, request.from_server(sid), &mut out);
                    self.sequenced(now, out, effects);
                }
            }
            other => match to_msg(other) {
                Some(msg) => self.peer.on_message(now_ms, sid, msg, effects),
                None => {
                    tracing::warn!(sid, "unexpected message from a learner; closing");
                    self.net.close(link);
                }
            },
        }
    }

    fn adopt_secret(&mut self, secret: u64) {
        if secret != self.secret {
            // An ensemble shares one secret so sessions move between servers.
            self.secret = secret;
            if let Err(error) = self.dirs.store_password_secret(secret) {
                tracing::warn!(%error, "cannot store the leader's session secret");
            }
        }
    }

    async fn perform(&mut self, effects: Vec<PeerEffect>) -> std::io::Result<()> {
        let mut queue: VecDeque<PeerEffect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            // The clock is read only by the effects that use it: a create's
            // half dozen effects each reading it was 2-3 % of the leader's
            // core 0 under create-heavy load.
            let now = || elapsed_ms() as u64;
            let mut more = Vec::new();
            match effect {
                Effect::Notify { to, notification } => self.net.send_notification(to, notification),
                Effect::ConnectToLeader { leader } => {
                    self.leader_link = None;
                    self.net.connect_leader(leader, LEADER_CONNECT_TIMEOUT_MS);
                }
                Effect::Send { to, msg } => self.send(to, msg, &mut more),
                Effect::SendSnapshot { to } => self.send_snapshot(now(), to, &mut more).await,
                Effect::Disconnect { sid } => {
                    if let Some(link) = self.learners.remove(&sid) {
                        self.links.remove(&link);
                        self.net.close(link);
                    } else if let Some((link, leader)) = self.leader_link {
                        if leader == sid {
                            self.net.close(link);
                        }
                    }
                }
                Effect::PersistAcceptedEpoch { epoch } => {
                    self.dirs.write_accepted_epoch(epoch)?;
                    self.peer.on_persisted_accepted_epoch(now(), &mut more);
                }
                Effect::PersistCurrentEpoch { epoch } => {
                    self.dirs.write_current_epoch(epoch)?;
                    self.peer.on_persisted_current_epoch(now(), &mut more);
                }
                Effect::LogAppend { txn, .. } => self.log.append(&txn.txn),
                Effect::SyncLog => self.log.sync_marker(),
                Effect::Truncate { to } => {
                    self.log.idle().await;
                    let report = match self.dirs.truncate_after(to) {
                        Ok(report) => report,
                        Err(error) => {
                            tracing::warn!(%error, "TRUNC refused; nothing changed on disk");
                            self.peer.on_truncate_failed(error, &mut more);
                            queue.extend(more);
                            continue;
                        }
                    };
                    tracing::info!(
                        to = format_args!("{to:#x}"),
                        last_zxid = format_args!("{:#x}", report.last_zxid),
                        removed_segments = report.removed_segments.len(),
                        removed_snapshots = report.removed_snapshots.len(),
                        "truncated the log (TRUNC)"
                    );
                    // The peer cut its committed log at `to` itself.
                    self.reload().await?;
                }
                Effect::InstallSnapshot { zxid } => {
                    self.log.idle().await;
                    let bytes = self.received_snapshot.take().unwrap_or_default();
                    let tree = self.dirs.install_snapshot(bytes).map_err(std::io::Error::other)?;
                    assert_eq!(tree.last_processed_zxid(), zxid, "SNAP header and snapshot disagree");
                    tracing::info!(zxid = format_args!("{zxid:#x}"), nodes = tree.node_count(), "installed the leader's snapshot (SNAP)");
                    self.outlet.reset(&tree).await;
                    self.set_reloaded(tree);
                    self.open_log().await?;
                }
                Effect::Apply { zxid, txn } => {
                    let origin = txn.origin.filter(|origin| origin.server == self.my_id);
                    self.outlet.deliver(Committed::Txn { txn: txn.txn, origin }, false).await;
                    if self.peer.state() != ServerState::Leading {
                        self.learner_snapshot_point(zxid);
                    }
                }
                Effect::Deliver(item) => self.outlet.deliver(item, false).await,
                Effect::Serve { state, epoch, leader } => self.serve(state, epoch, leader).await?,
                Effect::Look { reason } => {
                    tracing::warn!(%reason, "going back to LOOKING");
                    self.stop_serving();
                    let replayed_tail = self.reload().await?;
                    self.start_looking(replayed_tail).await?;
                }
            }
            queue.extend(more);
        }
        self.publish();
        Ok(())
    }

    fn send(&mut self, to: ServerId, msg: Msg<Entry, Committed>, more: &mut Vec<PeerEffect>) {
        let link = match self.leader_link {
            Some((link, leader)) if leader == to => Some(link),
            _ => self.learners.get(&to).copied(),
        };
        let Some(link) = link else { return };
        let message = match msg {
            Msg::LeaderInfo { zxid } => PeerMessage::LeaderInfo { zxid, secret: self.secret },
            other => match from_msg(other) {
                Some(message) => message,
                None => {
                    tracing::error!(to, "a SNAP header without its snapshot; not sent");
                    return;
                }
            },
        };
        if let Err(error) = self.net.send(link, message) {
            tracing::warn!(to, ?error, "peer link queue full or closed");
            if self.learners.get(&to) == Some(&link) {
                self.peer.on_learner_queue_full(elapsed_ms() as u64, to, more);
            }
        }
    }

    /// SNAP: the snapshot executor encodes its replica at the zxid of every
    /// commit delivered so far, on its own thread, so core 0 goes on
    /// sequencing and shard 0 goes on serving meanwhile (encoding a big tree
    /// takes a second per million znodes). The stream starts now: everything
    /// queued for the learner from here on — the committed txns after that
    /// zxid, NEWLEADER, live proposals — is held behind the SNAP, whose
    /// header and chunks a task of its own (`stream_snapshot`) feeds to the
    /// link once the bytes are there, at most `SNAP_STREAM_AHEAD_BYTES`
    /// ahead of the socket, so a snapshot of any size fits the link's queue
    /// bound.
    async fn send_snapshot(&mut self, now: u64, to: ServerId, more: &mut Vec<PeerEffect>) {
        let Some(link) = self.learners.get(&to).copied() else { return };
        if self.net.begin_stream(link).is_err() {
            self.peer.on_learner_queue_full(now, to, more);
            return;
        }
        let Some((zxid, slot)) = self.outlet.encode_snapshot() else {
            tracing::warn!(to, "nothing delivered yet to snapshot; dropping the learner");
            self.net.close(link);
            return;
        };
        glommio::spawn_local(stream_snapshot(self.net.clone(), link, to, zxid, slot)).detach();
        self.peer.on_snapshot_sent(now, to, zxid, more);
    }

    fn learner_snapshot_point(&mut self, zxid: i64) {
        self.applied_since_snapshot += 1;
        if self.applied_since_snapshot >= self.options.config.snap_count as u64 / 2 + (self.secret % (self.options.config.snap_count as u64 / 2 + 1)) {
            self.applied_since_snapshot = 0;
            self.outlet.request_snapshot(zxid);
        }
    }

    async fn serve(&mut self, state: ServerState, epoch: u32, leader: ServerId) -> std::io::Result<()> {
        tracing::info!(?state, epoch, leader, "serving clients");
        let reloaded = self.reloaded.take();
        if state == ServerState::Leading {
            // Every election starts from a reload, so the tree is there; were
            // it not, the log rebuilds the same state.
            let tree = match reloaded {
                Some(tree) => tree,
                None => {
                    tracing::warn!("no reloaded tree to lead from; rebuilding it from the log");
                    self.log.idle().await;
                    self.dirs.recover_for_start(limits::COMMITTED_LOG_MAX).map_err(std::io::Error::other)?.tree
                }
            };
            let config = &self.options.config;
            let sequencer_config = SequencerConfig {
                tick_ms: config.tick_time_ms as i64,
                extended_types_enabled: config.extended_types_enabled,
                server_id: self.my_id as u8,
                password_secret: self.secret,
                container_check_interval_ms: self.options.container_check_interval_ms,
                container_deletes_per_check_max: limits::CONTAINER_DELETES_PER_CHECK_MAX,
                snap_count: config.snap_count,
                random_seed: self.secret ^ wall_clock_ms() as u64,
            };
            let mut sequencer = Sequencer::new(&tree, sequencer_config, super::now());
            let base = self.peer.last_proposed().unwrap_or(make_zxid(epoch, 0));
            sequencer.set_zxid_last(base);
            self.sequencer = Some(sequencer);
        } else {
            drop(reloaded);
        }
        self.outlet.deliver(Committed::Secret(self.secret), false).await;
        self.shared.serving.store(true, Ordering::Release);
        super::trim_heap();
        Ok(())
    }

    fn set_reloaded(&mut self, tree: DataTree) {
        self.reloaded_zxid = tree.last_processed_zxid();
        self.reloaded = Some(tree);
    }

    /// Forwarded requests held while the leader could not propose, in order,
    /// for as long as it can.
    fn release_held_forwards(&mut self, now: Now, effects: &mut Vec<PeerEffect>) {
        while self.peer.can_propose() {
            let Some(request) = self.held_forwards.pop_front() else { break };
            let Some(sequencer) = self.sequencer.as_mut() else { break };
            let mut out = Vec::new();
            sequencer.step(now, request, &mut out);
            self.sequenced(now, out, effects);
        }
    }

    fn stop_serving(&mut self) {
        self.shared.serving.store(false, Ordering::Release);
        self.sequencer = None;
        self.held_forwards.clear();
        for (_, link) in self.learners.drain() {
            self.net.close(link);
        }
        for (link, _) in self.links.drain() {
            self.net.close(link);
        }
        if let Some((link, _)) = self.leader_link.take() {
            self.net.close(link);
        }
        self.incoming_snapshot = None;
        self.received_snapshot = None;
    }

    /// Rebuild the state from the log: a server's history is what it logged.
    /// Returns the last txns replayed (the committed log for DIFF).
    async fn reload(&mut self) -> std::io::Result<VecDeque<Txn>> {
        self.log.idle().await;
        let recovered = self.dirs.recover_for_start(limits::COMMITTED_LOG_MAX).map_err(std::io::Error::other)?;
        self.outlet.reset(&recovered.tree).await;
        self.set_reloaded(recovered.tree);
        self.open_log().await?;
        Ok(recovered.replayed_tail)
    }

    async fn open_log(&mut self) -> std::io::Result<()> {
        self.log.idle().await;
        let config = &self.options.config;
        let first_zxid = self.reloaded_zxid + 1;
        let old = self.log.writer.borrow_mut().take();
        drop(old);
        let writer = LogWriter::create(&self.dirs.log_dir, first_zxid, config.pre_alloc_size_kib * 1024, config.force_sync).await?;
        *self.log.writer.borrow_mut() = Some(writer);
        Ok(())
    }

    /// Elect with the state just rebuilt: the tree, the epochs, and as the
    /// committed log for DIFF the last txns replayed into the tree (what
    /// ZooKeeper's loadDataBase puts in its committedLog). Everything this
    /// server logged counts as its history, as in ZooKeeper; a txn of it
    /// that no quorum holds is cut by the next leader's TRUNC or SNAP, or,
    /// should this server lead, becomes the new epoch's history with the rest.
    async fn start_looking(&mut self, replayed_tail: VecDeque<Txn>) -> std::io::Result<()> {
        let last = self.reloaded_zxid;
        let (accepted, current) = self.dirs.read_epochs(last)?;
        tracing::info!(
            zxid = format_args!("{last:#x}"),
            accepted_epoch = accepted,
            current_epoch = current,
            "LOOKING"
        );
        let history = crate::pipeline::replayed_history(replayed_tail);
        let mut effects = Vec::new();
        self.peer.start_looking(elapsed_ms() as u64, last, accepted, current, history, &mut effects);
        Box::pin(self.perform(effects)).await
    }
}

fn origin_of_failed(origin: Option<Origin>) -> Option<Origin> {
    origin
}

/// Waits for the snapshot the executor encodes into `slot`, then feeds the
/// SNAP header, its chunks and its end to `link` (after `begin_stream`), at
/// most `SNAP_STREAM_AHEAD_BYTES` ahead of the socket, and releases what was
/// held behind it. If the link closes the learner reconnects and syncs
/// again; if its queue overflows (the learner fell too far behind while the
/// snapshot was in flight) it is closed for the same effect.
async fn stream_snapshot(net: Rc<PeerNet>, link: LinkId, to: ServerId, zxid: i64, slot: Arc<snapshots::EncodeSlot>) {
    let bytes = loop {
        if let Some(result) = slot.take() {
            break result;
        }
        // Dropping the slot tells the executor nobody waits any more.
        if !net.is_open(link) {
            return;
        }
        glommio::timer::sleep(limits::SNAP_ENCODE_POLL).await;
    };
    let bytes = match bytes {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => {
            tracing::warn!(to, %error, "no snapshot for the learner; closing its link");
            net.close(link);
            return;
        }
    };
    let header = PeerMessage::Snap { zxid, bytes: bytes.len() as u64 };
    let chunk = |start: usize| bytes.slice(start..bytes.len().min(start + limits::SNAP_CHUNK_BYTES));
    let chunks = (0..bytes.len()).step_by(limits::SNAP_CHUNK_BYTES).map(|start| PeerMessage::SnapChunk { bytes: chunk(start) });
    for message in std::iter::once(header).chain(chunks).chain(std::iter::once(PeerMessage::SnapEnd)) {
        if net.wait_stream_room(link, limits::SNAP_STREAM_AHEAD_BYTES).await.is_err() {
            return;
        }
        if let Err(error) = net.send_streamed(link, &message) {
            tracing::warn!(to, %error, "cannot queue the snapshot for the learner; closing its link");
            net.close(link);
            return;
        }
    }
    net.end_stream(link);
    tracing::info!(to, zxid = format_args!("{zxid:#x}"), bytes = bytes.len(), "sent a snapshot");
}

fn to_msg(message: PeerMessage) -> Option<Msg<Entry, Committed>> {
    Some(match message {
        PeerMessage::FollowerInfo { sid, zxid } => Msg::FollowerInfo { sid, zxid },
        PeerMessage::ObserverInfo { sid, zxid } => Msg::ObserverInfo { sid, zxid },
        PeerMessage::AckEpoch { last_logged_zxid, current_epoch } => Msg::AckEpoch { last_logged_zxid, current_epoch },
        PeerMessage::Ack { zxid } => Msg::Ack { zxid },
        PeerMessage::Diff { zxid } => Msg::Diff { zxid },
        PeerMessage::Trunc { zxid } => Msg::Trunc { zxid },
        PeerMessage::Proposal { zxid, txn, origin } => Msg::Proposal { zxid, txn: Entry { txn, origin } },
        PeerMessage::Commit { zxid } => Msg::Commit { zxid },
        PeerMessage::Inform { zxid, txn, origin } => Msg::Inform { zxid, txn: Entry { txn, origin } },
        PeerMessage::NewLeader { zxid } => Msg::NewLeader { zxid },
        PeerMessage::UpToDate => Msg::UpToDate,
        PeerMessage::Ping { zxid } => Msg::Ping { zxid },
        PeerMessage::Reply(item) => Msg::Reply(item),
        _ => return None,
    })
}

/// The message for `msg`; None for a SNAP, which goes out with its
/// snapshot's length ahead of the chunks (`send_snapshot`), never alone.
fn from_msg(msg: Msg<Entry, Committed>) -> Option<PeerMessage> {
    Some(match msg {
        Msg::FollowerInfo { sid, zxid } => PeerMessage::FollowerInfo { sid, zxid },
        Msg::ObserverInfo { sid, zxid } => PeerMessage::ObserverInfo { sid, zxid },
        Msg::LeaderInfo { zxid } => PeerMessage::LeaderInfo { zxid, secret: 0 },
        Msg::AckEpoch { last_logged_zxid, current_epoch } => PeerMessage::AckEpoch { last_logged_zxid, current_epoch },
        Msg::Diff { zxid } => PeerMessage::Diff { zxid },
        Msg::Trunc { zxid } => PeerMessage::Trunc { zxid },
        Msg::Snap { .. } => return None,
        Msg::NewLeader { zxid } => PeerMessage::NewLeader { zxid },
        Msg::UpToDate => PeerMessage::UpToDate,
        Msg::Proposal { zxid, txn } => PeerMessage::Proposal { zxid, txn: txn.txn, origin: txn.origin },
        Msg::Ack { zxid } => PeerMessage::Ack { zxid },
        Msg::Commit { zxid } => PeerMessage::Commit { zxid },
        Msg::Inform { zxid, txn } => PeerMessage::Inform { zxid, txn: txn.txn, origin: txn.origin },
        Msg::Ping { zxid } => PeerMessage::Ping { zxid },
        Msg::Reply(item) => PeerMessage::Reply(item),
    })
}
