//! How the leader brings a joining learner up to date: ZooKeeper's
//! `LearnerHandler.syncFollower` and `queueCommittedProposals`, as a pure
//! function over zxid lists.
//!
//! The leader keeps an in-memory window of recently committed proposals (the
//! *committed log*) and may also read older proposals back from its on-disk txn
//! log when the snapshot-size factor allows it. Given the learner's last zxid it
//! picks one of:
//!
//! * **DIFF** — the learner's zxid is in the leader's history; send the committed
//!   proposals after it (possibly none: the learner is already in sync).
//! * **TRUNC** — the learner has txns the leader never committed (it may be an
//!   old leader). It drops everything after `to`; if the leader has committed
//!   txns after that point they follow the TRUNC (TRUNC+DIFF).
//! * **SNAP** — nothing else works: send a snapshot of the data tree.
//!
//! The plan also says from which zxid the leader then starts forwarding live
//! traffic (`forward_from`, ZooKeeper's `currentZxid` passed to
//! `startForwarding`): outstanding proposals above it go to the learner next
//! (see `broadcast::Leader::add_learner`). Proposals in flight never change the
//! choice itself — ZooKeeper only ever syncs committed history and forwards the
//! rest — so they are not an input here.
//!
//! The decision is logged by the caller with `SyncPlan::reason`.

use std::fmt::Write as _;

use super::{counter_of, epoch_of};

/// What the learner is told first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Send the committed proposals after `from_exclusive` (the learner's own
    /// last zxid); `SyncPlan::send` lists them and may be empty.
    Diff { from_exclusive: i64 },
    /// The learner truncates its log to `to` and gets nothing else from the
    /// history; forwarding starts at `to`.
    Trunc { to: i64 },
    /// The learner truncates its log to `to`, then gets the committed proposals
    /// after `from_exclusive` (== `to`).
    TruncDiff { to: i64, from_exclusive: i64 },
    /// Send a snapshot taken at the leader's last processed zxid.
    Snap,
}

/// What the leader knows when a learner connects.
#[derive(Debug, Clone, Copy)]
pub struct SyncInput<'a> {
    /// The learner's last logged zxid (from its FOLLOWERINFO/ACKEPOCH).
    pub learner_last_zxid: i64,
    /// The leader's data tree's last processed zxid. After an election it is
    /// `(new_epoch, 0)`, which has no txn behind it.
    pub last_processed_zxid: i64,
    /// Zxids of the in-memory committed log, oldest first. Its first and last
    /// entries are `minCommittedLog` / `maxCommittedLog`. Like ZooKeeper this
    /// only iterates it, so a duplicated run of txns (which "should never
    /// happen") is sent once.
    pub committed_log: &'a [i64],
    /// The on-disk txn log the leader may read from, oldest first, or `None`
    /// when syncing from the txn log is disabled (`snapshotSizeFactor` < 0) or
    /// the log needed is larger than the size limit. ZooKeeper's reader starts
    /// at the log file holding the learner's zxid and gives up when the oldest
    /// txn on disk is already newer than it; here that is
    /// `on_disk_log[0] > learner_last_zxid`.
    pub on_disk_log: Option<&'a [i64]>,
    /// `forceSnapSync` (tests only in ZooKeeper).
    pub force_snap: bool,
}

/// The leader's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    pub mode: SyncMode,
    /// The zxid carried by the first packet: for DIFF the leader's
    /// `maxCommittedLog` (or the learner's own zxid for an in-sync learner),
    /// for TRUNC the truncation point, for SNAP the snapshot's zxid.
    pub packet_zxid: i64,
    /// Committed proposals to send, in order, each as PROPOSAL then COMMIT.
    pub send: Vec<i64>,
    /// Start forwarding live traffic after this zxid.
    pub forward_from: i64,
    /// Why, for the log.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Diff(i64),
    Trunc(i64),
}

/// The mutable part of `LearnerHandler` that `queueCommittedProposals` uses.
struct Queue {
    need_op: bool,
    op: Option<Op>,
    send: Vec<i64>,
}

impl Queue {
    fn op(&mut self, op: Op) {
        self.op = Some(op);
        self.need_op = false;
    }

    /// ZooKeeper's `queueCommittedProposals`: queue the proposals in
    /// `(peer, max]` from `log`, deciding DIFF or TRUNC on the first one.
    /// Returns the last zxid queued (`peer` if none, or if a TRUNC would cross
    /// an epoch boundary, in which case the caller falls back to SNAP).
    fn committed_proposals(
        &mut self,
        log: &[i64],
        peer: i64,
        max: Option<i64>,
        last_committed: i64,
        why: &mut String,
    ) -> i64 {
        let peer_new_epoch = counter_of(peer) == 0;
        let mut queued = peer;
        let mut prev = -1i64;
        for &zxid in log {
            if max.is_some_and(|m| zxid > m) {
                break;
            }
            if zxid < peer {
                prev = zxid;
                continue;
            }
            if self.need_op {
                if zxid == peer {
                    self.op(Op::Diff(last_committed));
                    continue;
                }
                if peer_new_epoch {
                    // The learner's (epoch, 0) is never in a log; DIFF and
                    // fall through to queue this proposal.
                    self.op(Op::Diff(last_committed));
                } else if zxid > peer {
                    if epoch_of(zxid) != epoch_of(peer) {
                        let _ = write!(
                            why,
                            "; cannot TRUNC 0x{peer:x} across the epoch boundary to 0x{zxid:x}"
                        );
                        return queued;
                    }
                    let _ = write!(why, "; learner has 0x{peer:x}, which the leader never committed: TRUNC to 0x{prev:x}");
                    self.op(Op::Trunc(prev));
                }
            }
            if zxid <= queued {
                // Nothing queued yet for an in-sync learner, or a duplicate.
                continue;
            }
            self.send.push(zxid);
            queued = zxid;
        }
        if self.need_op && peer_new_epoch {
            // Our history is older than the learner's new-epoch zxid and nothing
            // happened since: an empty DIFF.
            self.op(Op::Diff(last_committed));
        }
        queued
    }
}

/// ZooKeeper's `LearnerHandler.syncFollower`: choose DIFF, TRUNC, TRUNC+DIFF or
/// SNAP for a learner whose last zxid is `input.learner_last_zxid`.
pub fn plan_sync(input: &SyncInput<'_>) -> SyncPlan {
    let peer = input.learner_last_zxid;
    let last_processed = input.last_processed_zxid;
    // An empty committed log is treated as the one-point window at the leader's
    // last processed zxid, which folds its cases into the ones below.
    let (min, max) = match (input.committed_log.first(), input.committed_log.last()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => (last_processed, last_processed),
    };
    let peer_new_epoch = counter_of(peer) == 0;
    let mut why = format!(
        "learner 0x{peer:x}, leader lastProcessedZxid 0x{last_processed:x}, committedLog [0x{min:x}, 0x{max:x}]"
    );
    let mut q = Queue {
        need_op: true,
        op: None,
        send: Vec::new(),
    };
    let mut current = peer;
    let mut need_snap = true;

    if input.force_snap {
        why.push_str("; forceSnapSync is set");
    } else if last_processed == peer {
        why.push_str("; learner is already in sync: empty DIFF");
        q.op(Op::Diff(peer));
        need_snap = false;
    } else if peer > max && !peer_new_epoch {
        why.push_str("; learner is ahead of the committed log: TRUNC to its end");
        q.op(Op::Trunc(max));
        current = max;
        need_snap = false;
    } else if min <= peer && peer <= max {
        why.push_str("; learner is within the committed log");
        current = q.committed_proposals(input.committed_log, peer, None, max, &mut why);
        need_snap = false;
    } else if let (true, Some(disk)) = (peer < min, input.on_disk_log) {
        if disk.first().is_some_and(|&first| first <= peer) {
            why.push_str("; learner is behind the committed log: using the on-disk txn log and the committed log");
            current = q.committed_proposals(disk, peer, Some(min), max, &mut why);
            if current < min {
                let _ = write!(why, "; gap between the end of the txn log 0x{current:x} and the committed log 0x{min:x}");
                q = Queue {
                    need_op: true,
                    op: None,
                    send: Vec::new(),
                };
            } else {
                current = q.committed_proposals(input.committed_log, current, None, max, &mut why);
                need_snap = false;
            }
        } else {
            why.push_str("; learner is older than the on-disk txn log");
        }
    } else if peer < min {
        why.push_str(
            "; learner is behind the committed log and txn-log sync is off or over its size limit",
        );
    } else {
        why.push_str("; unhandled case (new-epoch zxid ahead of the committed log)");
    }

    if !need_snap && q.need_op {
        // ZooKeeper: "This should never happen" — no DIFF or TRUNC was decided
        // (a TRUNC would have crossed an epoch).
        why.push_str("; no DIFF or TRUNC possible");
        need_snap = true;
    }
    if need_snap {
        why.push_str(": SNAP");
        return SyncPlan {
            mode: SyncMode::Snap,
            packet_zxid: last_processed,
            send: Vec::new(),
            forward_from: last_processed,
            reason: why,
        };
    }
    let (mode, packet_zxid) = match q.op.expect("an op packet was chosen") {
        Op::Diff(z) => (
            SyncMode::Diff {
                from_exclusive: peer,
            },
            z,
        ),
        Op::Trunc(to) if q.send.is_empty() => (SyncMode::Trunc { to }, to),
        Op::Trunc(to) => (
            SyncMode::TruncDiff {
                to,
                from_exclusive: to,
            },
            to,
        ),
    };
    let _ = write!(
        why,
        "; sending {} txns, forwarding from 0x{current:x}",
        q.send.len()
    );
    SyncPlan {
        mode,
        packet_zxid,
        send: q.send,
        forward_from: current,
        reason: why,
    }
}

#[cfg(test)]
mod tests {
    //! Cases and zxids from ZooKeeper's `LearnerHandlerTest`.
    use super::*;
    use crate::zab::make_zxid as z;

    fn plan(peer: i64, last_processed: i64, committed: &[i64], disk: Option<&[i64]>) -> SyncPlan {
        let p = plan_sync(&SyncInput {
            learner_last_zxid: peer,
            last_processed_zxid: last_processed,
            committed_log: committed,
            on_disk_log: disk,
            force_snap: false,
        });
        assert!(!p.reason.is_empty());
        p
    }

    fn assert_snap(p: &SyncPlan, last_processed: i64) {
        assert_eq!(p.mode, SyncMode::Snap, "{}", p.reason);
        assert!(p.send.is_empty());
        assert_eq!(p.forward_from, last_processed);
        assert!(p.reason.ends_with("SNAP"), "{}", p.reason);
    }

    #[test]
    fn empty_committed_log_peer_ahead_truncs_to_last_processed() {
        let p = plan(3, 1, &[], None);
        assert_eq!(p.mode, SyncMode::Trunc { to: 1 });
        assert_eq!((p.packet_zxid, p.forward_from), (1, 1));
        assert!(p.send.is_empty());
    }

    #[test]
    fn empty_committed_log_peer_in_sync_gets_empty_diff() {
        let p = plan(1, 1, &[], None);
        assert_eq!(p.mode, SyncMode::Diff { from_exclusive: 1 });
        assert_eq!((p.packet_zxid, p.forward_from), (1, 1));
        assert!(p.send.is_empty());
    }

    #[test]
    fn new_peer_with_zero_zxid_gets_snap() {
        // testEmptyCommittedLog: peer 0, txn-log sync disabled.
        assert_snap(&plan(0, 1, &[], None), 1);
        // Even with txn-log sync on, no log starts at or before zxid 0.
        assert_snap(&plan(0, 1, &[], Some(&[1])), 1);
        // ...unless the leader is empty too: both at 0, empty DIFF.
        assert_eq!(
            plan(0, 0, &[], None).mode,
            SyncMode::Diff { from_exclusive: 0 }
        );
    }

    #[test]
    fn committed_log_peer_not_in_log_truncs_then_diffs() {
        // testCommittedLog: peer 4, log {2,3,5}: TRUNC 3, then 5.
        let p = plan(4, 6, &[2, 3, 5], None);
        assert_eq!(
            p.mode,
            SyncMode::TruncDiff {
                to: 3,
                from_exclusive: 3
            }
        );
        assert_eq!((p.packet_zxid, p.forward_from), (3, 5));
        assert_eq!(p.send, vec![5]);
    }

    #[test]
    fn committed_log_peer_in_range_diffs() {
        let p = plan(2, 6, &[2, 3, 5], None);
        assert_eq!(p.mode, SyncMode::Diff { from_exclusive: 2 });
        assert_eq!((p.packet_zxid, p.forward_from), (5, 5));
        assert_eq!(p.send, vec![3, 5]);
    }

    #[test]
    fn committed_log_peer_below_min_without_txnlog_snaps() {
        assert_snap(&plan(1, 6, &[2, 3, 5], None), 6);
    }

    const DISK: &[i64] = &[2, 3, 5, 6, 7, 8, 9];

    #[test]
    fn txnlog_peer_not_in_log_truncs_then_diffs() {
        // testTxnLog: TRUNC 3, then 5..8, forwarding from maxCommittedLog 8.
        let p = plan(4, 9, &[6, 7, 8], Some(DISK));
        assert_eq!(
            p.mode,
            SyncMode::TruncDiff {
                to: 3,
                from_exclusive: 3
            }
        );
        assert_eq!((p.packet_zxid, p.forward_from), (3, 8));
        assert_eq!(p.send, vec![5, 6, 7, 8]);
    }

    #[test]
    fn txnlog_peer_in_txnlog_diffs() {
        let p = plan(3, 9, &[6, 7, 8], Some(DISK));
        assert_eq!(p.mode, SyncMode::Diff { from_exclusive: 3 });
        assert_eq!((p.packet_zxid, p.forward_from), (8, 8));
        assert_eq!(p.send, vec![5, 6, 7, 8]);
    }

    #[test]
    fn txnlog_unreadable_snaps() {
        // testTxnLogProposalIteratorClosure: the txn log yields nothing.
        assert_snap(&plan(4, 7, &[], Some(&[])), 7);
        assert_snap(&plan(4, 7, &[], None), 7);
    }

    #[test]
    fn txnlog_only_with_empty_committed_log() {
        // testTxnLogOnly: committed log empty, window is lastProcessedZxid 7.
        let disk = &[2, 3, 5, 6, 7, 8];
        let p = plan(4, 7, &[], Some(disk));
        assert_eq!(
            p.mode,
            SyncMode::TruncDiff {
                to: 3,
                from_exclusive: 3
            }
        );
        assert_eq!((p.packet_zxid, p.forward_from), (3, 7));
        assert_eq!(p.send, vec![5, 6, 7]);

        let p = plan(2, 7, &[], Some(disk));
        assert_eq!(p.mode, SyncMode::Diff { from_exclusive: 2 });
        assert_eq!((p.packet_zxid, p.forward_from), (7, 7));
        assert_eq!(p.send, vec![3, 5, 6, 7]);

        assert_snap(&plan(1, 7, &[], Some(disk)), 7);
    }

    #[test]
    fn txnlog_with_negative_zxids() {
        // testTxnLogWithNegativeZxid uses epoch 0xf (which is not actually
        // negative); run it with a really negative i64 epoch as well.
        for e in [0xf, 0x8000_000f] {
            let disk: Vec<i64> = [2, 3, 5, 6, 7, 8, 9].iter().map(|&c| z(e, c)).collect();
            let committed = [z(e, 6), z(e, 7), z(e, 8)];
            let p = plan(z(e, 4), z(e, 9), &committed, Some(&disk));
            assert_eq!(
                p.mode,
                SyncMode::TruncDiff {
                    to: z(e, 3),
                    from_exclusive: z(e, 3)
                }
            );
            assert_eq!(p.forward_from, z(e, 8));
            assert_eq!(p.send, vec![z(e, 5), z(e, 6), z(e, 7), z(e, 8)]);

            let p = plan(z(e, 3), z(e, 9), &committed, Some(&disk));
            assert_eq!(
                p.mode,
                SyncMode::Diff {
                    from_exclusive: z(e, 3)
                }
            );
            assert_eq!((p.packet_zxid, p.forward_from), (z(e, 8), z(e, 8)));
            assert_eq!(p.send, vec![z(e, 5), z(e, 6), z(e, 7), z(e, 8)]);
        }
        assert!(z(0x8000_000f, 9) < 0);
    }

    #[test]
    fn new_epoch_zxid() {
        // testNewEpochZxid.
        let disk = [z(0, 1), z(1, 1), z(1, 2)];
        let committed = [z(1, 1), z(1, 2)];
        let lp = z(2, 0);
        // (0,0): never DIFF when we have not seen anything older than the peer.
        assert_snap(&plan(z(0, 0), lp, &committed, Some(&disk)), lp);
        // (1,0): DIFF (1,1), (1,2).
        let p = plan(z(1, 0), lp, &committed, Some(&disk));
        assert_eq!(
            p.mode,
            SyncMode::Diff {
                from_exclusive: z(1, 0)
            }
        );
        assert_eq!((p.packet_zxid, p.forward_from), (z(1, 2), z(1, 2)));
        assert_eq!(p.send, vec![z(1, 1), z(1, 2)]);
        // (2,0): already in sync.
        let p = plan(z(2, 0), lp, &committed, Some(&disk));
        assert_eq!(
            p.mode,
            SyncMode::Diff {
                from_exclusive: z(2, 0)
            }
        );
        assert_eq!((p.packet_zxid, p.forward_from), (z(2, 0), z(2, 0)));
        assert!(p.send.is_empty());
    }

    #[test]
    fn duplicated_txn_is_sent_once() {
        // testDuplicatedTxn.
        let disk = [z(0, 1), z(1, 1), z(1, 2), z(1, 1), z(1, 2)];
        let committed = [z(1, 1), z(1, 2), z(1, 1), z(1, 2)];
        let p = plan(z(1, 0), z(2, 0), &committed, Some(&disk));
        assert_eq!(
            p.mode,
            SyncMode::Diff {
                from_exclusive: z(1, 0)
            }
        );
        assert_eq!((p.packet_zxid, p.forward_from), (z(1, 2), z(1, 2)));
        assert_eq!(p.send, vec![z(1, 1), z(1, 2)]);
    }

    #[test]
    fn cross_epoch_trunc_snaps() {
        // testCrossEpochTrunc: committed log empty, peer (3,1) would need a
        // TRUNC to (2,2) across epochs.
        let disk = [z(1, 1), z(2, 1), z(2, 2), z(4, 1)];
        let p = plan(z(3, 1), z(6, 0), &[], Some(&disk));
        assert_snap(&p, z(6, 0));
        assert!(p.reason.contains("epoch boundary"), "{}", p.reason);
    }

    #[test]
    fn txnlog_gap_snaps() {
        // testTxnLogGap: the txn log ends at 4, the committed log starts at 7.
        let p = plan(3, 8, &[7, 8], Some(&[2, 3, 4]));
        assert_snap(&p, 8);
        assert!(p.reason.contains("gap"), "{}", p.reason);
    }

    #[test]
    fn peer_ahead_of_committed_log_in_other_epoch_truncs_to_max() {
        // Not in LearnerHandlerTest: a former leader with txns of its epoch 3
        // that never committed, the new leader's log ends at (2,5).
        let p = plan(z(3, 7), z(4, 0), &[z(2, 4), z(2, 5)], None);
        assert_eq!(p.mode, SyncMode::Trunc { to: z(2, 5) });
        assert_eq!(p.forward_from, z(2, 5));
    }

    #[test]
    fn new_epoch_peer_ahead_of_committed_log_snaps() {
        // A new-epoch zxid is never TRUNCed (the learner has no txn log for it).
        assert_snap(&plan(z(3, 0), z(4, 0), &[z(2, 4), z(2, 5)], None), z(4, 0));
    }

    #[test]
    fn force_snap() {
        let p = plan_sync(&SyncInput {
            learner_last_zxid: 2,
            last_processed_zxid: 6,
            committed_log: &[2, 3, 5],
            on_disk_log: None,
            force_snap: true,
        });
        assert_snap(&p, 6);
    }
}
