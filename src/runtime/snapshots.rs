//! The snapshot executor: its own DataTree replica, fed the committed stream,
//! so a snapshot is an exact image at a zxid and taking one never stalls the
//! write path (the stream queues up behind it, bounded). It writes the
//! periodic snapshots, and encodes the snapshot a leader sends a learner in a
//! SNAP. It also runs autopurge: keep `autopurge.snapRetainCount` snapshots
//! and the logs they need.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::SharedReceiver;

use super::durability::{is_stop_requested, DataDirs};
use super::ServerOptions;
use crate::tree::DataTree;
use crate::txn::Txn;

pub enum Input {
    /// Committed txns, in order, and their `Txn::memory_bytes`.
    Txns { txns: Vec<Arc<Txn>>, bytes: usize },
    /// Snapshot once the replica reaches this zxid (standalone: it already
    /// has; in an ensemble the txn may still be waiting for its quorum).
    Snapshot(i64),
    /// The server rebuilt its state (ensemble role change): continue from
    /// this tree; a pending snapshot is dropped.
    Reset(Arc<DataTree>),
    /// Encode the replica for a learner's SNAP, which must be at exactly
    /// this zxid: the feeder sends this right after the txn with that zxid
    /// (or after the reset that ends at it), so the replica is there.
    Encode { zxid: i64, slot: Arc<EncodeSlot> },
}

/// Where the executor leaves a SNAP's encoded snapshot for core 0, which
/// polls it (`take`) while the executor encodes on its own thread.
#[derive(Default)]
pub struct EncodeSlot(Mutex<Option<Result<Vec<u8>, String>>>);

impl EncodeSlot {
    pub fn fill(&self, result: Result<Vec<u8>, String>) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(result);
    }

    /// The encoded snapshot or why there is none, once the executor is done.
    pub fn take(&self) -> Option<Result<Vec<u8>, String>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

/// The snapshot of `tree` for a SNAP asked for at `zxid`, or why not.
fn encode_for_learner(tree: &DataTree, zxid: i64) -> Result<Vec<u8>, String> {
    let at = tree.last_processed_zxid();
    if at != zxid {
        return Err(format!("the replica is at {at:#x}, not at the SNAP's {zxid:#x}"));
    }
    Ok(crate::storage::snapshot::encode_snapshot(tree))
}

/// What the log task and the feeder on core 0 share with the executor.
#[derive(Default)]
pub struct Progress {
    /// Raised by the log task when it asks for a snapshot, lowered here when
    /// the snapshot is written. While it is up, further snapshot points are
    /// skipped ("Too busy to snap", as ZooKeeper's SyncRequestProcessor
    /// says), so slow snapshots of a big tree cannot queue up behind each
    /// other.
    pub busy: AtomicBool,
    /// `Txn::memory_bytes` of the txns sent here and not applied yet. While a
    /// snapshot is written nothing is applied and this grows; the feeder
    /// waits while it is over `SNAPSHOTTER_BACKLOG_BYTES_MAX`.
    pub backlog_bytes: AtomicUsize,
}

/// Runs until shutdown. The replica is the caller's, so that a stopping
/// server need not wait for it to be freed (seconds for millions of znodes).
pub async fn run(
    receiver: SharedReceiver<Input>,
    tree: &mut DataTree,
    dirs: DataDirs,
    options: ServerOptions,
    progress: Arc<Progress>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let receiver = receiver.connect().await;
    // Snapshots yield the CPU to the write path: on a small machine this
    // thread shares cores with the sequencer and the shards.
    // SAFETY: setpriority on this thread's own id; failure only means no change.
    unsafe {
        let thread_id = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread_id, 10);
    }
    let retain = options.config.autopurge_snap_retain_count as usize;
    if let Some(interval) = options.config.autopurge_purge_interval {
        let dirs = dirs.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(interval).await;
                purge(&dirs, retain);
            }
        })
        .detach();
    }
    let work = async {
        let mut pending: Option<i64> = None;
        while let Some(input) = receiver.recv().await {
            // A long queue never makes recv wait, so look for shutdown here too.
            if shutdown.load(Ordering::Relaxed) {
                break;
            }
            match input {
                Input::Txns { txns, bytes } => {
                    for txn in &txns {
                        tree.apply_quietly(txn);
                    }
                    drop(txns);
                    progress.backlog_bytes.fetch_sub(bytes, Ordering::AcqRel);
                }
                Input::Snapshot(zxid) => pending = Some(zxid),
                Input::Reset(new_tree) => {
                    *tree = DataTree::clone(&new_tree);
                    if pending.take().is_some() {
                        progress.busy.store(false, Ordering::Release);
                    }
                }
                // Nobody waits for it any more when core 0 dropped its end
                // (the learner's link closed): skip the work.
                Input::Encode { zxid, slot } if Arc::strong_count(&slot) > 1 => {
                    let started = Instant::now();
                    let result = encode_for_learner(tree, zxid);
                    tracing::info!(
                        zxid = format_args!("{zxid:#x}"),
                        bytes = result.as_ref().map_or(0, |bytes| bytes.len()),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "encoded a snapshot for a learner"
                    );
                    slot.fill(result);
                }
                Input::Encode { .. } => {}
            }
            match pending {
                Some(zxid) if tree.last_processed_zxid() >= zxid => {
                    pending = None;
                    let zxid = tree.last_processed_zxid();
                    let started = Instant::now();
                    match dirs.write_snapshot(tree, &shutdown) {
                        Ok((path, bytes)) => tracing::info!(
                            file = %path.display(),
                            zxid = format_args!("{zxid:#x}"),
                            nodes = tree.node_count(),
                            bytes,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "snapshot taken"
                        ),
                        Err(error) if is_stop_requested(&error) => {
                            tracing::info!(zxid = format_args!("{zxid:#x}"), "snapshot abandoned: stopping");
                        }
                        // The log still holds everything: a failed snapshot loses nothing.
                        Err(error) => tracing::error!(%error, zxid = format_args!("{zxid:#x}"), "snapshot failed"),
                    }
                    progress.busy.store(false, Ordering::Release);
                }
                _ => {}
            }
        }
        Ok(())
    };
    let stop = async {
        while !shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    };
    futures_lite::future::or(work, stop).await
}

fn purge(dirs: &DataDirs, retain: usize) {
    match dirs.purge(retain) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(files = removed.len(), "autopurge removed old snapshots and logs");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "autopurge failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codes::op;
    use crate::txn::{CreateTxn, TxnBody};
    use glommio::channels::shared_channel::{self, ConnectedSender};
    use glommio::{LocalExecutorBuilder, Placement};
    use std::future::Future;
    use std::pin::Pin;

    fn create(zxid: i64) -> Arc<Txn> {
        let body = TxnBody::Create(CreateTxn {
            opcode: op::CREATE,
            path: format!("/n{zxid}").into(),
            data: Some(bytes::Bytes::from_static(b"value")),
            acl: crate::tree::open_acl_unsafe().into(),
            ephemeral_owner: 0,
            parent_cversion: zxid as i32,
        });
        Arc::new(Txn { session_id: 1, cxid: zxid as i32, zxid, time_ms: 1000, body })
    }

    type Driven = Pin<Box<dyn Future<Output = ()>>>;

    /// An executor on a thread of its own, with its data dirs under a fresh
    /// directory; `drive` runs on another executor with the executor's input.
    fn with_executor(name: &str, drive: impl FnOnce(ConnectedSender<Input>, Arc<Progress>) -> Driven + Send + 'static) -> DataDirs {
        let root = std::env::temp_dir().join(format!("warden-snapshots-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dirs = DataDirs::new(&root, &root);
        dirs.create().unwrap();
        let options = ServerOptions { config: Default::default(), container_check_interval_ms: 60_000, test_fail_log_after_bytes: None };
        let progress = Arc::new(Progress::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = shared_channel::new_bounded(4);
        let executor = {
            let (progress, shutdown, dirs) = (progress.clone(), shutdown.clone(), dirs.clone());
            LocalExecutorBuilder::new(Placement::Unbound)
                .spawn(move || async move { run(receiver, &mut DataTree::new(), dirs, options, progress, shutdown).await })
                .unwrap()
        };
        {
            let progress = progress.clone();
            LocalExecutorBuilder::new(Placement::Unbound)
                .spawn(move || async move { drive(sender.connect().await, progress).await })
                .unwrap()
                .join()
                .unwrap();
        }
        shutdown.store(true, Ordering::Release);
        executor.join().unwrap().unwrap();
        dirs
    }

    /// Waits (10 s at most) until `done` holds.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "not within 10 s: {what}");
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The executor applies what it is sent, lowers the backlog by what each
    /// batch counted (the feeder waits on it, so a backlog never lowered
    /// would stop every write), and writes the snapshot asked for.
    #[test]
    fn the_executor_drains_its_backlog_and_snapshots() {
        let dirs = with_executor("drain", |sender, progress| {
            Box::pin(async move {
                let txns: Vec<Arc<Txn>> = (1..=3).map(create).collect();
                let bytes: usize = txns.iter().map(|txn| txn.memory_bytes()).sum();
                assert!(bytes > 3 * std::mem::size_of::<Txn>(), "the estimate counts paths and data: {bytes}");
                progress.backlog_bytes.store(bytes, Ordering::Release);
                progress.busy.store(true, Ordering::Release);
                assert!(sender.send(Input::Txns { txns, bytes }).await.is_ok());
                assert!(sender.send(Input::Snapshot(3)).await.is_ok());
                eventually("the snapshot is written", || !progress.busy.load(Ordering::Acquire)).await;
                assert_eq!(progress.backlog_bytes.load(Ordering::Acquire), 0);
            })
        });
        let snapshot = std::fs::read(dirs.snapshot_dir.join(crate::storage::snapshot::snapshot_file_name(3))).unwrap();
        let tree = crate::storage::snapshot::decode_snapshot(snapshot.into()).unwrap();
        assert!(tree.get("/n3").is_some());
        let _ = std::fs::remove_dir_all(dirs.snapshot_dir.parent().unwrap());
    }

    /// A SNAP's snapshot is the replica at exactly the zxid asked for, and
    /// nothing else: a replica anywhere else answers with an error (the link
    /// closes and the learner syncs again), never with a snapshot whose
    /// zxid the leader did not announce.
    #[test]
    fn the_executor_encodes_a_snap_only_at_its_zxid() {
        let dirs = with_executor("encode", |sender, _| {
            Box::pin(async move {
                let txns: Vec<Arc<Txn>> = (1..=3).map(create).collect();
                let bytes = txns.iter().map(|txn| txn.memory_bytes()).sum();
                assert!(sender.send(Input::Txns { txns, bytes }).await.is_ok());
                let at_3 = Arc::new(EncodeSlot::default());
                let at_2 = Arc::new(EncodeSlot::default());
                assert!(sender.send(Input::Encode { zxid: 3, slot: at_3.clone() }).await.is_ok());
                assert!(sender.send(Input::Encode { zxid: 2, slot: at_2.clone() }).await.is_ok());
                let taken = std::cell::RefCell::new((None, None));
                eventually("both encodings are answered", || {
                    let mut taken = taken.borrow_mut();
                    taken.0 = taken.0.take().or_else(|| at_3.take());
                    taken.1 = taken.1.take().or_else(|| at_2.take());
                    taken.0.is_some() && taken.1.is_some()
                })
                .await;
                let (at_3, at_2) = taken.into_inner();
                let bytes = at_3.unwrap().expect("a snapshot at the replica's zxid");
                let tree = crate::storage::snapshot::decode_snapshot(bytes.into()).unwrap();
                assert_eq!(tree.last_processed_zxid(), 3);
                assert!(tree.get("/n3").is_some());
                let error = at_2.unwrap().expect_err("the replica is past zxid 2");
                assert!(error.contains("0x3") && error.contains("0x2"), "{error}");
            })
        });
        let _ = std::fs::remove_dir_all(dirs.snapshot_dir.parent().unwrap());
    }
}
