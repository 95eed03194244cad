//! The snapshot executor: its own DataTree replica, fed the committed stream,
//! so a snapshot is an exact image at a zxid and taking one never stalls the
//! write path (the stream queues up behind it, bounded). It also runs
//! autopurge: keep `autopurge.snapRetainCount` snapshots and the logs they need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::SharedReceiver;

use super::durability::DataDirs;
use super::ServerOptions;
use crate::tree::DataTree;
use crate::txn::Txn;

pub enum Input {
    /// Committed txns, in order.
    Txns(Vec<Arc<Txn>>),
    /// Snapshot once the replica reaches this zxid (standalone: it already
    /// has; in an ensemble the txn may still be waiting for its quorum).
    Snapshot(i64),
    /// The server rebuilt its state (ensemble role change): continue from
    /// this tree; a pending snapshot is dropped.
    Reset(Arc<DataTree>),
}

/// Raised by the log task when it asks for a snapshot, lowered here when the
/// snapshot is written. While it is up, further snapshot points are skipped
/// ("Too busy to snap", as ZooKeeper's SyncRequestProcessor says), so slow
/// snapshots of a big tree cannot queue up behind each other.
pub type Busy = Arc<AtomicBool>;

pub async fn run(
    receiver: SharedReceiver<Input>,
    mut tree: DataTree,
    dirs: DataDirs,
    options: ServerOptions,
    busy: Busy,
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
                Input::Txns(txns) => {
                    for txn in &txns {
                        tree.apply_quietly(txn);
                    }
                }
                Input::Snapshot(zxid) => pending = Some(zxid),
                Input::Reset(new_tree) => {
                    tree = DataTree::clone(&new_tree);
                    if pending.take().is_some() {
                        busy.store(false, Ordering::Release);
                    }
                }
            }
            match pending {
                Some(zxid) if tree.last_processed_zxid() >= zxid => {
                    pending = None;
                    let zxid = tree.last_processed_zxid();
                    let started = Instant::now();
                    match dirs.write_snapshot(&tree) {
                        Ok((path, bytes)) => tracing::info!(
                            file = %path.display(),
                            zxid = format_args!("{zxid:#x}"),
                            nodes = tree.node_count(),
                            bytes,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "snapshot taken"
                        ),
                        // The log still holds everything: a failed snapshot loses nothing.
                        Err(error) => tracing::error!(%error, zxid = format_args!("{zxid:#x}"), "snapshot failed"),
                    }
                    busy.store(false, Ordering::Release);
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
