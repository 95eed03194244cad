//! Recovery's decisions: which snapshot to start from, which log records to
//! replay, where a torn tail is cut, and which damage must stop the server.
//! Pure: files are read through the `read` callback the runtime passes.
//!
//! Rules, after ZooKeeper's FileTxnSnapLog and the bugs it fixed:
//! - start from the newest snapshot that validates; an invalid one is skipped
//!   with a warning, but if snapshots exist and none validates, refuse;
//! - the log replayed over an older snapshot must pass exactly through the
//!   zxid of every newer snapshot skipped: a snapshot received from a leader
//!   (SNAP) or taken before a log segment was lost may hold txns the log
//!   does not, and a new epoch's first txn would hide that gap (found by the
//!   simulator); refuse rather than start from an older state than the one
//!   acknowledged;
//! - log segments without any snapshot to follow are refused (ZOOKEEPER-2325),
//!   as is a first needed segment that starts after the snapshot's zxid + 1;
//! - records after the snapshot must be consecutive zxids (a new epoch
//!   starts again at counter 1);
//! - a damaged last batch of the newest segment is a torn write: cut it;
//!   damage anywhere else is corruption: refuse, naming the file and offset.
//!
//! Recovery also keeps the last few txns it replayed (`replayed_tail`): an
//! ensemble member's committed log for DIFF, as ZooKeeper's
//! ZKDatabase.loadDataBase fills its committedLog from the txns it replays
//! after the snapshot.

use std::collections::VecDeque;

use bytes::Bytes;

use super::log::{follows, scan_segment, SegmentEnd};
use crate::tree::DataTree;
use crate::txn::Txn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryError {
    pub file: String,
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}: {}", self.file, self.offset, self.reason)
    }
}

impl std::error::Error for RecoveryError {}

/// The files found in the data directories: (zxid in the name, file name).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub snapshots: Vec<(i64, String)>,
    pub segments: Vec<(i64, String)>,
}

/// A torn tail to cut: the file is truncated at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: String,
    pub offset: u64,
    pub reason: String,
}

pub struct Recovered {
    pub tree: DataTree,
    /// The zxid of the snapshot started from (0 for a fresh directory).
    pub snapshot_zxid: i64,
    /// Whether there was no snapshot at all: the caller writes the first one.
    pub fresh: bool,
    pub replayed: usize,
    pub torn_tail: Option<TornTail>,
    /// Where the newest segment's data ends, when it ended cleanly: the
    /// preallocated space after it is unused (a new segment starts on every
    /// start-up) and can be given back.
    pub log_end: Option<(String, u64)>,
    /// Snapshots skipped because they did not validate.
    pub warnings: Vec<String>,
    /// The last txns replayed into `tree` (at most the `replayed_tail_max`
    /// asked for), oldest first: only txns past the snapshot, never log
    /// records the snapshot already covers (those below a snapshot received
    /// from a leader may be another history's). Their buffers are copied out
    /// of the segment, so keeping them holds no segment in memory.
    pub replayed_tail: VecDeque<Txn>,
}

/// Recovers the state the files hold, keeping the last `replayed_tail_max`
/// txns replayed (0 keeps none).
pub fn recover(
    listing: &Listing,
    mut read: impl FnMut(&str) -> Result<Bytes, String>,
    decode_snapshot: impl Fn(Bytes) -> Result<DataTree, String>,
    replayed_tail_max: usize,
) -> Result<Recovered, RecoveryError> {
    let error = |file: &str, offset: u64, reason: String| RecoveryError { file: file.to_owned(), offset, reason };
    let mut snapshots = listing.snapshots.clone();
    snapshots.sort_by_key(|(zxid, _)| std::cmp::Reverse(*zxid));
    let mut segments = listing.segments.clone();
    segments.sort();
    let mut warnings = Vec::new();

    let mut start = None;
    // Snapshots skipped for an older one, oldest first: the replay must pass
    // through each one's zxid.
    let mut skipped: Vec<(i64, String)> = Vec::new();
    for (zxid, name) in &snapshots {
        let bytes = read(name).map_err(|reason| error(name, 0, reason))?;
        match decode_snapshot(bytes) {
            Ok(tree) if tree.last_processed_zxid() == *zxid => {
                start = Some((tree, *zxid));
                break;
            }
            Ok(tree) => warnings.push(format!(
                "{name}: holds zxid {:#x}, not the {zxid:#x} its name says; skipped",
                tree.last_processed_zxid()
            )),
            Err(reason) => warnings.push(format!("{name}: invalid snapshot ({reason}); skipped")),
        }
        skipped.insert(0, (*zxid, name.clone()));
    }
    let (mut tree, snapshot_zxid, fresh) = match start {
        Some((tree, zxid)) => (tree, zxid, false),
        None if !snapshots.is_empty() => {
            let (_, newest) = &snapshots[0];
            return Err(error(newest, 0, format!("no snapshot validates: {}", warnings.join("; "))));
        }
        None if !segments.is_empty() => {
            let (_, first) = &segments[0];
            return Err(error(first, 0, "transaction log present but no snapshot it can follow (ZOOKEEPER-2325)".into()));
        }
        None => (DataTree::new(), 0, true),
    };

    // The first segment needed: the last one starting at or before snapshot_zxid + 1.
    let first_needed = segments.iter().rposition(|(first_zxid, _)| *first_zxid <= snapshot_zxid + 1);
    let first_needed = match (first_needed, segments.first()) {
        (Some(index), _) => index,
        (None, None) => segments.len(),
        (None, Some((first_zxid, name))) => {
            return Err(error(
                name,
                0,
                format!("log starts at zxid {first_zxid:#x}, after the snapshot's {snapshot_zxid:#x} + 1: txns are missing"),
            ));
        }
    };

    let mut zxid_last = snapshot_zxid;
    let mut replayed = 0;
    let mut torn_tail = None;
    let mut log_end = None;
    let mut replayed_tail = VecDeque::new();
    let needed = &segments[first_needed..];
    for (index, (first_zxid, name)) in needed.iter().enumerate() {
        let is_last = index + 1 == needed.len();
        let bytes = read(name).map_err(|reason| error(name, 0, reason))?;
        let scan = match scan_segment(&bytes) {
            Ok(scan) => scan,
            // A segment created just before a crash may not have its header yet.
            Err(_) if is_last && bytes.iter().all(|byte| *byte == 0) => {
                torn_tail = Some(TornTail { file: name.clone(), offset: 0, reason: "empty segment".into() });
                break;
            }
            Err(reason) => return Err(error(name, 0, reason)),
        };
        if scan.first_zxid != *first_zxid {
            return Err(error(name, 0, format!("header says first zxid {:#x}", scan.first_zxid)));
        }
        for logged in &scan.txns {
            let zxid = logged.txn.zxid;
            if zxid <= zxid_last {
                if zxid_last > snapshot_zxid {
                    return Err(error(name, logged.offset, format!("zxid {zxid:#x} does not follow {zxid_last:#x}")));
                }
                continue; // already in the snapshot
            }
            if !follows(zxid_last, zxid) {
                return Err(error(name, logged.offset, format!("zxid gap: {zxid:#x} after {zxid_last:#x}")));
            }
            if let Some((over, snapshot)) = skipped.iter().find(|(over, _)| zxid_last < *over && *over < zxid) {
                return Err(error(
                    name,
                    logged.offset,
                    format!(
                        "the log goes from {zxid_last:#x} to {zxid:#x}, past the skipped snapshot {snapshot} at {over:#x}: \
                         the txns up to it are only in that snapshot"
                    ),
                ));
            }
            tree.apply_quietly(&logged.txn);
            zxid_last = zxid;
            replayed += 1;
            if replayed_tail_max > 0 {
                if replayed_tail.len() == replayed_tail_max {
                    replayed_tail.pop_front();
                }
                replayed_tail.push_back(logged.txn.detached());
            }
        }
        match scan.end {
            SegmentEnd::Clean { offset } => {
                if is_last {
                    log_end = Some((name.clone(), offset));
                }
            }
            SegmentEnd::TornTail { offset, reason } if is_last => {
                torn_tail = Some(TornTail { file: name.clone(), offset, reason });
            }
            SegmentEnd::TornTail { offset, reason } => {
                return Err(error(name, offset, format!("{reason}, and newer segments follow")));
            }
            SegmentEnd::Corrupt { offset, reason } => return Err(error(name, offset, reason)),
        }
    }
    if let Some((over, snapshot)) = skipped.iter().find(|(over, _)| *over > zxid_last) {
        return Err(error(
            snapshot,
            0,
            format!(
                "invalid, and the log ends at {zxid_last:#x}, below its {over:#x}: starting from an older snapshot would \
                 lose txns this server had"
            ),
        ));
    }
    assert!(replayed_tail.len() <= replayed_tail_max, "the replayed tail outgrew its bound");
    assert!(
        replayed_tail.back().is_none_or(|txn| txn.zxid == zxid_last),
        "the replayed tail must end at the last txn replayed"
    );
    Ok(Recovered { tree, snapshot_zxid, fresh, replayed, torn_tail, log_end, warnings, replayed_tail })
}

#[cfg(test)]
mod tests;
