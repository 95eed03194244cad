//! The snapshot executor: its own DataTree replica, fed the committed stream,
//! so a snapshot is an exact image at a zxid and taking one never stalls the
//! write path (the stream queues up behind it, bounded). It also runs
//! autopurge: keep `autopurge.snapRetainCount` snapshots and the logs they need.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
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
    use glommio::channels::shared_channel;
    use glommio::{LocalExecutorBuilder, Placement};

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

    /// The executor applies what it is sent, lowers the backlog by what each
    /// batch counted (the feeder waits on it, so a backlog never lowered
    /// would stop every write), and writes the snapshot asked for.
    #[test]
    fn the_executor_drains_its_backlog_and_snapshots() {
        let root = std::env::temp_dir().join(format!("warden-snapshots-test-{}", std::process::id()));
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
        let txns: Vec<Arc<Txn>> = (1..=3).map(create).collect();
        let bytes: usize = txns.iter().map(|txn| txn.memory_bytes()).sum();
        assert!(bytes > 3 * std::mem::size_of::<Txn>(), "the estimate counts paths and data: {bytes}");
        progress.backlog_bytes.store(bytes, Ordering::Release);
        progress.busy.store(true, Ordering::Release);
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let sender = sender.connect().await;
                assert!(sender.send(Input::Txns { txns, bytes }).await.is_ok());
                assert!(sender.send(Input::Snapshot(3)).await.is_ok());
            })
            .unwrap()
            .join()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while progress.busy.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        shutdown.store(true, Ordering::Release);
        executor.join().unwrap().unwrap();
        assert_eq!(progress.backlog_bytes.load(Ordering::Acquire), 0);
        assert!(!progress.busy.load(Ordering::Acquire), "no snapshot within 10 s");
        let snapshot = std::fs::read(dirs.snapshot_dir.join(crate::storage::snapshot::snapshot_file_name(3))).unwrap();
        let tree = crate::storage::snapshot::decode_snapshot(snapshot.into()).unwrap();
        assert!(tree.get("/n3").is_some());
        let _ = std::fs::remove_dir_all(&root);
    }
}
