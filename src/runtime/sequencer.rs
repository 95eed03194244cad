//! Core 0's write path: the sequencer task turns requests into txns and
//! appends them to the open log batch; the log task writes whole batches with
//! one write and one fdatasync each (group commit: a batch closes when the
//! log task takes it, at a size limit, or at a snapshot point). Up to
//! `LOG_SYNCS_IN_FLIGHT_MAX` syncs overlap; the delivery task hands each
//! batch's txns, in batch order, to the shards and the snapshot executor once
//! its sync completed. Nothing is acknowledged before the sync that covers
//! it. A failed write or sync fails that batch's requests and every write
//! after.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};

use super::durability::{LogWriter, PendingSync};
use super::notify::Notify;
use super::shard::SharedState;
use super::{snapshots, wall_clock_ms, SequencerParts, SequencerStart, ServerOptions};
use crate::limits;
use crate::pipeline::sequencer::Effect;
use crate::pipeline::{Committed, Sequencer, SequencerConfig, ToSequencer};
use crate::proto::ErrorCode;
use crate::storage::log::BatchEncoder;

enum Input {
    Message(ToSequencer),
    Tick,
}

/// One group commit: the txns' encoded records and everything to deliver
/// after they are durable, in order.
#[derive(Default)]
struct Batch {
    encoder: BatchEncoder,
    items: Vec<Committed>,
    /// Roll the log and snapshot at this zxid once the batch is durable.
    snapshot_at: Option<i64>,
    /// No more appends: full, or a snapshot point.
    sealed: bool,
}

#[derive(Default)]
struct LogQueue {
    /// Oldest first; the sequencer appends to the back batch unless it is sealed.
    batches: RefCell<VecDeque<Batch>>,
    pending_bytes: Cell<usize>,
    writer_wake: Notify,
    space_wake: Notify,
}

impl LogQueue {
    fn with_open_batch<T>(&self, action: impl FnOnce(&mut Batch) -> T) -> T {
        let mut batches = self.batches.borrow_mut();
        if batches.back().is_none_or(|batch| batch.sealed) {
            batches.push_back(Batch::default());
        }
        action(batches.back_mut().expect("just ensured"))
    }

    fn push(&self, effect: Effect) {
        match effect {
            Effect::Append(item) => {
                let added = self.with_open_batch(|batch| {
                    let before = batch.encoder.len_bytes();
                    if let Committed::Txn { txn, .. } = &item {
                        batch.encoder.push(txn);
                    }
                    batch.items.push(item);
                    if batch.encoder.is_full() {
                        batch.sealed = true;
                    }
                    batch.encoder.len_bytes() - before
                });
                self.pending_bytes.set(self.pending_bytes.get() + added);
            }
            Effect::Deliver(item) => self.with_open_batch(|batch| batch.items.push(item)),
            Effect::Snapshot { zxid } => self.with_open_batch(|batch| {
                batch.snapshot_at = Some(zxid);
                batch.sealed = true;
            }),
        }
    }

    fn take_front(&self) -> Option<Batch> {
        self.batches.borrow_mut().pop_front()
    }
}

pub async fn run(options: ServerOptions, secret: u64, parts: SequencerParts, shared: Arc<SharedState>) -> std::io::Result<()> {
    let (connected_receivers, outlet, start, dirs) = connect(parts, shared.clone()).await;
    let SequencerStart::Standalone(start) = start else {
        return Err(std::io::Error::other("the standalone sequencer was given an ensemble member's start"));
    };
    let config = &options.config;
    let tick_ms = config.tick_time_ms as i64;
    let first_zxid = start.zxid() + 1;
    let mut log = LogWriter::create(&dirs.log_dir, first_zxid, config.pre_alloc_size_kib * 1024, config.force_sync).await?;
    log.set_fail_after_bytes(options.test_fail_log_after_bytes);
    if !config.force_sync {
        tracing::warn!("forceSync=no: writes are acknowledged before they are durable; for tests only");
    }
    let sequencer_config = SequencerConfig {
        tick_ms,
        extended_types_enabled: config.extended_types_enabled,
        server_id: 0,
        password_secret: secret,
        container_check_interval_ms: options.container_check_interval_ms,
        container_deletes_per_check_max: limits::CONTAINER_DELETES_PER_CHECK_MAX,
        snap_count: config.snap_count,
        random_seed: secret ^ wall_clock_ms() as u64,
    };
    let sequencer = Rc::new(RefCell::new(Sequencer::start(start, sequencer_config, super::now())));
    let queue = Rc::new(LogQueue::default());
    glommio::spawn_local(log_task(log, queue.clone(), sequencer.clone(), outlet)).detach();

    let (inbox_sender, inbox) = glommio::channels::local_channel::new_bounded(limits::SEQUENCER_BATCH_MAX);
    let inbox_sender = Rc::new(inbox_sender);
    for receiver in connected_receivers {
        let inbox_sender = inbox_sender.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                if inbox_sender.send(Input::Message(message)).await.is_err() {
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
                if inbox_sender.send(Input::Tick).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    let mut effects = Vec::new();
    while let Some(input) = inbox.recv().await {
        // Backpressure: while the log is this far behind, take no more requests.
        while queue.pending_bytes.get() > limits::LOG_PENDING_BYTES_MAX {
            queue.space_wake.notified().await;
        }
        let now = super::now();
        {
            let mut sequencer = sequencer.borrow_mut();
            match input {
                Input::Message(message) => sequencer.step(now, message, &mut effects),
                Input::Tick => {
                    sequencer.tick(now, &mut effects);
                    if let Ok(mut published) = shared.sequencer.lock() {
                        published.session_count = sequencer.session_count();
                        published.zxid = sequencer.zxid_last();
                        published.sessions = sequencer.session_expiries(now);
                    }
                }
            }
        }
        for effect in effects.drain(..) {
            queue.push(effect);
        }
        queue.writer_wake.notify();
    }
    Ok(())
}

/// Where durable items go: every shard (or one), and the snapshot executor.
pub(super) struct Outlet {
    pub(super) shards: Vec<ConnectedSender<Committed>>,
    snapshot_feed: Rc<SnapshotFeed>,
    pub(super) snapshot_progress: Arc<snapshots::Progress>,
    pub(super) shared: Arc<SharedState>,
}

/// The committed stream on its way to the snapshot executor's replica, sent
/// `SNAPSHOTTER_TXNS_PER_SEND` txns at a time by one feeder task: a send per
/// txn woke the executor's thread for every group commit, and on a small
/// machine those wake-ups cost the write path more than the applying did
/// (create-heavy ran 1.28x faster with the executor fed nothing). The
/// replica only has to be current when a snapshot is asked for, and the
/// feeder sends what is pending before that request.
#[derive(Default)]
struct SnapshotFeed {
    /// Txns not yet sent, in order (at most `SNAPSHOTTER_TXNS_PENDING_MAX`).
    pending: RefCell<Vec<Arc<crate::txn::Txn>>>,
    /// A snapshot asked for at this zxid, to request after the pending txns.
    wanted: Cell<Option<i64>>,
    /// The zxid of a snapshot requested from the executor whose txn it may
    /// not have yet (in an ensemble a snapshot point can come before its
    /// commit): until a batch reaches it, txns go out as they come, so the
    /// snapshot does not wait for a full batch.
    awaited: Cell<Option<i64>>,
    /// A new tree for the replica (an ensemble member rebuilt its state),
    /// to send before the txns that follow it.
    reset: RefCell<Option<Arc<crate::tree::DataTree>>>,
    /// Snapshots for learners' SNAPs, each to be encoded at its zxid: the
    /// feeder asks for each right after the txn with that zxid.
    encodes: RefCell<Vec<(i64, Arc<snapshots::EncodeSlot>)>>,
    /// The zxid of the last txn delivered (or of the last reset's tree): what
    /// every shard and the executor's replica reach once they applied what
    /// they were sent. None until the first.
    delivered_zxid: Cell<Option<i64>>,
    /// Wakes the feeder.
    work: Notify,
    /// Wakes a delivery waiting for room in `pending`.
    room: Notify,
}

impl SnapshotFeed {
    fn has_work(&self) -> bool {
        let pending = self.pending.borrow();
        self.reset.borrow().is_some()
            || self.wanted.get().is_some()
            || !self.encodes.borrow().is_empty()
            || pending.len() >= limits::SNAPSHOTTER_TXNS_PER_SEND
            || (self.awaited.get().is_some() && !pending.is_empty())
    }
}

/// The one task that sends to the snapshot executor, so that resets, txns
/// and snapshot requests arrive in the order they were made.
async fn feed_snapshots(feed: Rc<SnapshotFeed>, snapshotter: ConnectedSender<snapshots::Input>, progress: Arc<snapshots::Progress>) {
    let mut last_sent_zxid = i64::MIN;
    loop {
        while !feed.has_work() {
            feed.work.notified().await;
        }
        let reset = feed.reset.borrow_mut().take();
        if let Some(tree) = reset {
            last_sent_zxid = tree.last_processed_zxid();
            if snapshotter.send(snapshots::Input::Reset(tree)).await.is_err() {
                return;
            }
        }
        let mut txns = std::mem::take(&mut *feed.pending.borrow_mut());
        feed.room.notify();
        if let Some(last) = txns.last() {
            last_sent_zxid = last.zxid;
            if feed.awaited.get().is_some_and(|awaited| last.zxid >= awaited) {
                feed.awaited.set(None);
            }
        }
        // Each SNAP's encoding goes right after the txn at its zxid.
        let encodes = std::mem::take(&mut *feed.encodes.borrow_mut());
        for (zxid, slot) in encodes {
            let rest = txns.split_off(txns.partition_point(|txn| txn.zxid <= zxid));
            if send_txns(&snapshotter, &progress, txns).await.is_err() {
                return;
            }
            txns = rest;
            // A reset that came in meanwhile replaces the replica the
            // encoding was for (the learner's link goes with the old role).
            if feed.reset.borrow().is_some() {
                slot.fill(Err("the server rebuilt its state".to_string()));
            } else if snapshotter.send(snapshots::Input::Encode { zxid, slot }).await.is_err() {
                return;
            }
        }
        if send_txns(&snapshotter, &progress, txns).await.is_err() {
            return;
        }
        // A reset that came in while the txns were sent drops this request.
        if feed.reset.borrow().is_some() {
            continue;
        }
        if let Some(zxid) = feed.wanted.take() {
            if last_sent_zxid < zxid {
                feed.awaited.set(Some(zxid));
            }
            if snapshotter.send(snapshots::Input::Snapshot(zxid)).await.is_err() {
                progress.busy.store(false, std::sync::atomic::Ordering::Release);
                return;
            }
        }
    }
}

/// Sends `txns` (if any) to the executor once its backlog has room.
async fn send_txns(
    snapshotter: &ConnectedSender<snapshots::Input>,
    progress: &snapshots::Progress,
    txns: Vec<Arc<crate::txn::Txn>>,
) -> Result<(), ()> {
    if txns.is_empty() {
        return Ok(());
    }
    let bytes = txns.iter().map(|txn| txn.memory_bytes()).sum();
    wait_for_backlog_room(progress, bytes).await;
    progress.backlog_bytes.fetch_add(bytes, std::sync::atomic::Ordering::AcqRel);
    snapshotter.send(snapshots::Input::Txns { txns, bytes }).await.map_err(|_| ())
}

/// Waits until the executor's backlog has room for `bytes` more (or is
/// empty: one batch is always let through). Polls: the executor is on
/// another thread, and the backlog only fills while a big snapshot is
/// written, so a millisecond's delay here is far below what the backlog
/// absorbed before it.
async fn wait_for_backlog_room(progress: &snapshots::Progress, bytes: usize) {
    use std::sync::atomic::Ordering;
    loop {
        let queued = progress.backlog_bytes.load(Ordering::Acquire);
        if queued == 0 || queued + bytes <= limits::SNAPSHOTTER_BACKLOG_BYTES_MAX {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// A batch written to the log, on its way to being delivered.
struct Written {
    items: Vec<Committed>,
    /// The fdatasync covering it; None if nothing was written.
    sync: Option<PendingSync>,
    /// Its write failed, or an earlier one did: deliver it as failed.
    write_failed: bool,
    sequence: u64,
}

/// Writes batches in order and hands each, with its fdatasync still in
/// flight, to the delivery task (at most `LOG_SYNCS_IN_FLIGHT_MAX` at once),
/// which delivers them in order once durable. At a snapshot point it waits
/// until that batch is delivered, then rolls the log.
async fn log_task(mut log: LogWriter, queue: Rc<LogQueue>, sequencer: Rc<RefCell<Sequencer>>, outlet: Outlet) {
    let outlet = Rc::new(outlet);
    let (to_delivery, written) = glommio::channels::local_channel::new_bounded(limits::LOG_SYNCS_IN_FLIGHT_MAX);
    let delivered = Rc::new(Cell::new(0u64));
    let delivered_wake = Rc::new(Notify::default());
    let delivery_failed = Rc::new(Cell::new(false));
    glommio::spawn_local(deliver_task(
        written,
        outlet.clone(),
        sequencer.clone(),
        delivered.clone(),
        delivered_wake.clone(),
        delivery_failed.clone(),
    ))
    .detach();
    let mut write_failed = false;
    let mut sequence = 0;
    loop {
        let Some(mut batch) = queue.take_front() else {
            queue.writer_wake.notified().await;
            continue;
        };
        let batch_bytes = batch.encoder.len_bytes();
        let mut sync = None;
        if !batch.encoder.is_empty() && !write_failed {
            match log.write(batch.encoder.finish()).await {
                Ok(pending) => sync = Some(pending),
                Err(error) => {
                    tracing::error!(%error, "transaction log write failed: failing these writes and refusing all further writes");
                    write_failed = true;
                    sequencer.borrow_mut().fail_writes();
                }
            }
        }
        if !batch.encoder.is_empty() {
            queue.pending_bytes.set(queue.pending_bytes.get().saturating_sub(batch_bytes));
            queue.space_wake.notify();
        }
        sequence += 1;
        let written = Written { items: std::mem::take(&mut batch.items), sync, write_failed, sequence };
        if to_delivery.send(written).await.is_err() {
            return;
        }
        if let (Some(zxid), false) = (batch.snapshot_at, write_failed) {
            // Everything up to the snapshot point is durable and delivered
            // before the next segment starts at zxid + 1.
            while delivered.get() < sequence {
                delivered_wake.notified().await;
            }
            if delivery_failed.get() {
                continue;
            }
            log = match log.roll(zxid + 1).await {
                Ok(log) => log,
                Err(error) => {
                    tracing::error!(%error, "cannot start a new log segment: refusing all further writes");
                    sequencer.borrow_mut().fail_writes();
                    // Nothing more can be appended; answer everything that comes.
                    return fail_forever(queue, to_delivery, sequence).await;
                }
            };
            outlet.request_snapshot(zxid);
        }
    }
}

/// Delivers written batches in order, each once its sync completed. A failed
/// write or sync fails that batch and every later one.
async fn deliver_task(
    written: glommio::channels::local_channel::LocalReceiver<Written>,
    outlet: Rc<Outlet>,
    sequencer: Rc<RefCell<Sequencer>>,
    delivered: Rc<Cell<u64>>,
    delivered_wake: Rc<Notify>,
    failed: Rc<Cell<bool>>,
) {
    while let Some(batch) = written.recv().await {
        if let Some(sync) = batch.sync {
            if let Err(error) = sync.await {
                if !failed.get() {
                    tracing::error!(%error, "transaction log sync failed: failing these writes and refusing all further writes");
                    sequencer.borrow_mut().fail_writes();
                }
                failed.set(true);
            }
        }
        if batch.write_failed {
            failed.set(true);
        }
        for item in batch.items {
            outlet.deliver(item, failed.get()).await;
        }
        delivered.set(batch.sequence);
        delivered_wake.notify();
    }
}

/// After the log is lost: every txn still queued is answered with an error.
async fn fail_forever(queue: Rc<LogQueue>, to_delivery: glommio::channels::local_channel::LocalSender<Written>, mut sequence: u64) {
    loop {
        while let Some(batch) = queue.take_front() {
            queue.pending_bytes.set(queue.pending_bytes.get().saturating_sub(batch.encoder.len_bytes()));
            sequence += 1;
            let written = Written { items: batch.items, sync: None, write_failed: true, sequence };
            if to_delivery.send(written).await.is_err() {
                return;
            }
        }
        queue.space_wake.notify();
        queue.writer_wake.notified().await;
    }
}

/// Connects core 0's ends of the queues: requests from every shard, the
/// committed stream to every shard and to the snapshot executor.
pub(super) async fn connect(
    parts: SequencerParts,
    shared: Arc<SharedState>,
) -> (Vec<ConnectedReceiver<ToSequencer>>, Outlet, SequencerStart, super::durability::DataDirs) {
    let SequencerParts { receivers, senders, snapshotter, snapshot_progress, start, replayed_tail: _, dirs } = parts;
    let mut connected_receivers = Vec::new();
    for receiver in receivers {
        connected_receivers.push(receiver.connect().await);
    }
    let mut shards = Vec::new();
    for sender in senders {
        shards.push(sender.connect().await);
    }
    let snapshotter = snapshotter.connect().await;
    let snapshot_feed = Rc::new(SnapshotFeed::default());
    glommio::spawn_local(feed_snapshots(snapshot_feed.clone(), snapshotter, snapshot_progress.clone())).detach();
    (connected_receivers, Outlet { shards, snapshot_feed, snapshot_progress, shared }, start, dirs)
}

impl Outlet {
    /// Asks the snapshot executor for a snapshot at `zxid`, unless it is
    /// still writing the previous one ("Too busy to snap", as ZooKeeper's
    /// SyncRequestProcessor says). The feeder sends it after the txns
    /// delivered so far.
    pub(super) fn request_snapshot(&self, zxid: i64) {
        use std::sync::atomic::Ordering;
        if self.snapshot_progress.busy.swap(true, Ordering::AcqRel) {
            tracing::warn!(zxid = format_args!("{zxid:#x}"), "Too busy to snap, skipping: the previous snapshot is still being written");
        } else {
            self.snapshot_feed.wanted.set(Some(zxid));
            self.snapshot_feed.work.notify();
        }
    }

    /// Asks the snapshot executor to encode its replica for a learner's
    /// SNAP at the zxid of everything delivered so far, which it returns:
    /// core 0 goes on while the executor encodes on its own thread, and
    /// takes the bytes from the slot. None before anything was delivered.
    pub(super) fn encode_snapshot(&self) -> Option<(i64, Arc<snapshots::EncodeSlot>)> {
        let feed = &self.snapshot_feed;
        let zxid = feed.delivered_zxid.get()?;
        let slot = Arc::new(snapshots::EncodeSlot::default());
        feed.encodes.borrow_mut().push((zxid, slot.clone()));
        feed.work.notify();
        Some((zxid, slot))
    }

    /// Every shard and the snapshot executor continue from `tree`
    /// (an ensemble member rebuilt its state). Txns not yet sent to the
    /// executor came before the reset, so they go; so does a snapshot not
    /// yet asked for.
    pub(super) async fn reset(&self, tree: &crate::tree::DataTree) {
        let tree = Arc::new(tree.clone());
        let feed = &self.snapshot_feed;
        feed.pending.borrow_mut().clear();
        feed.room.notify();
        if feed.wanted.take().is_some() {
            self.snapshot_progress.busy.store(false, std::sync::atomic::Ordering::Release);
        }
        feed.awaited.set(None);
        for (_, slot) in feed.encodes.borrow_mut().drain(..) {
            slot.fill(Err("the server rebuilt its state".to_string()));
        }
        feed.delivered_zxid.set(Some(tree.last_processed_zxid()));
        *feed.reset.borrow_mut() = Some(tree.clone());
        feed.work.notify();
        self.deliver(Committed::Reset { tree }, false).await;
    }

    /// Queues a committed txn for the snapshot executor, waiting while the
    /// feeder is `SNAPSHOTTER_TXNS_PENDING_MAX` behind (backpressure, as a
    /// full queue to a shard is).
    async fn feed_snapshot_executor(&self, txn: &Arc<crate::txn::Txn>) {
        let feed = &self.snapshot_feed;
        while feed.pending.borrow().len() >= limits::SNAPSHOTTER_TXNS_PENDING_MAX {
            feed.work.notify();
            feed.room.notified().await;
        }
        feed.pending.borrow_mut().push(txn.clone());
        if feed.has_work() {
            feed.work.notify();
        }
    }

    pub(super) async fn deliver(&self, item: Committed, failed: bool) {
        let item = match item {
            Committed::Txn { origin, .. } if failed => match origin {
                Some(origin) => Committed::Failed { origin, err: ErrorCode::SystemError },
                None => return,
            },
            Committed::Txn { txn, origin } => {
                self.feed_snapshot_executor(&txn).await;
                self.snapshot_feed.delivered_zxid.set(Some(txn.zxid));
                Committed::Txn { txn, origin }
            }
            other => other,
        };
        let sent = |shard_index: usize| {
            self.shared.commits_sent[shard_index].fetch_add(1, std::sync::atomic::Ordering::Release);
        };
        match item.only_for_shard() {
            Some(shard_index) => {
                sent(shard_index);
                let _ = self.shards[shard_index].send(item).await;
            }
            None => {
                // Every count first: no shard can answer before all know the item is coming.
                (0..self.shards.len()).for_each(sent);
                for sender in &self.shards {
                    let _ = sender.send(item.clone()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    /// A SNAP is encoded at exactly its zxid: the feeder asks for it right
    /// after that txn, even when txns after it are already waiting, so the
    /// executor's replica is neither short of it nor past it.
    #[test]
    fn the_feeder_asks_for_each_encoding_right_after_its_txn() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let (sender, receiver) = glommio::channels::shared_channel::new_bounded(16);
                let (sender, receiver) = futures_lite::future::zip(sender.connect(), receiver.connect()).await;
                let feed = Rc::new(SnapshotFeed::default());
                let progress = Arc::new(snapshots::Progress::default());
                let txn = |zxid| {
                    let body = crate::txn::TxnBody::Check { path: "/".to_string() };
                    Arc::new(crate::txn::Txn { session_id: 1, cxid: 1, zxid, time_ms: 0, body })
                };
                feed.pending.borrow_mut().extend((1..=5).map(txn));
                let slots = [Arc::new(snapshots::EncodeSlot::default()), Arc::new(snapshots::EncodeSlot::default())];
                feed.encodes.borrow_mut().extend([(3, slots[0].clone()), (5, slots[1].clone())]);
                let feeder = glommio::spawn_local(feed_snapshots(feed.clone(), sender, progress));
                feed.work.notify();
                let mut order = Vec::new();
                while order.len() < 4 {
                    let input = glommio::timer::timeout(Duration::from_secs(5), async { Ok(receiver.recv().await) }).await;
                    order.push(match input.expect("the feeder sent nothing within 5 s").expect("the feeder is gone") {
                        snapshots::Input::Txns { txns, .. } => format!("txns {:?}", txns.iter().map(|txn| txn.zxid).collect::<Vec<_>>()),
                        snapshots::Input::Encode { zxid, .. } => format!("encode at {zxid}"),
                        _ => "something else".to_string(),
                    });
                }
                assert_eq!(order, ["txns [1, 2, 3]", "encode at 3", "txns [4, 5]", "encode at 5"]);
                drop(feeder.cancel());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// The feeder goes on while the backlog has room, or is empty (one batch
    /// always goes, however big), and waits while a batch would take it over
    /// `SNAPSHOTTER_BACKLOG_BYTES_MAX` until the executor lowers it.
    #[test]
    fn the_feeder_waits_only_while_the_backlog_is_full() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let max = limits::SNAPSHOTTER_BACKLOG_BYTES_MAX;
                let progress = Arc::new(snapshots::Progress::default());
                let quick = Duration::from_secs(5);
                glommio::timer::timeout(quick, async { Ok(wait_for_backlog_room(&progress, 2 * max).await) }).await.unwrap();
                progress.backlog_bytes.store(max - 10, Ordering::Release);
                glommio::timer::timeout(quick, async { Ok(wait_for_backlog_room(&progress, 10).await) }).await.unwrap();

                let lowered_at = Rc::new(Cell::new(None));
                let executor = {
                    let (progress, lowered_at) = (progress.clone(), lowered_at.clone());
                    glommio::spawn_local(async move {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                        lowered_at.set(Some(Instant::now()));
                        progress.backlog_bytes.fetch_sub(100, Ordering::AcqRel);
                    })
                };
                glommio::timer::timeout(quick, async { Ok(wait_for_backlog_room(&progress, 11).await) }).await.unwrap();
                let waited_until = Instant::now();
                executor.await;
                let lowered_at = lowered_at.get().expect("the feeder went on before the backlog was lowered");
                assert!(waited_until >= lowered_at);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
