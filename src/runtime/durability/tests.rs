//! Epoch files, truncation (ZAB's TRUNC) and snapshot install (ZAB's SNAP)
//! on real files. Segments are written with the pure encoders; the new
//! segment the runtime opens after a truncation is written by `LogWriter`.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::storage::log::BatchEncoder;
use crate::storage::snapshot::encode_snapshot;
use crate::txn::{CreateTxn, Txn, TxnBody};

/// A pair of data directories under the system temp dir, removed on drop.
struct TempDirs {
    root: PathBuf,
    dirs: DataDirs,
}

impl TempDirs {
    fn new(name: &str) -> TempDirs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("warden-durability-{name}-{}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dirs = DataDirs::new(&root.join("data"), &root.join("log"));
        dirs.create().unwrap();
        TempDirs { root, dirs }
    }
}

impl Drop for TempDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl std::ops::Deref for TempDirs {
    type Target = DataDirs;
    fn deref(&self) -> &DataDirs {
        &self.dirs
    }
}

/// Creates `/<prefix><zxid>`: two histories differ by prefix.
fn create(prefix: &str, zxid: i64) -> Txn {
    Txn {
        session_id: 1,
        cxid: zxid as i32,
        zxid,
        time_ms: 0,
        body: TxnBody::Create(CreateTxn {
            opcode: 1,
            path: format!("/{prefix}{zxid}").into(),
            data: None,
            acl: crate::tree::open_acl_unsafe().into(),
            ephemeral_owner: 0,
            parent_cversion: 0,
        }),
    }
}

fn history(prefix: &str, zxids: std::ops::RangeInclusive<i64>) -> Vec<Txn> {
    zxids.map(|zxid| create(prefix, zxid)).collect()
}

fn tree_of(txns: &[Txn]) -> DataTree {
    let mut tree = DataTree::new();
    for txn in txns {
        tree.apply(txn, &mut Vec::new());
    }
    tree
}

/// Writes `log.<first>`: the header, one batch per range of `/n` creates,
/// two blocks of preallocated zeros. Returns each batch's offset.
fn write_segment(dirs: &DataDirs, first: i64, batches: &[std::ops::RangeInclusive<i64>]) -> Vec<usize> {
    let mut bytes = encode_segment_header(first);
    let mut offsets = Vec::new();
    let mut encoder = BatchEncoder::new();
    for range in batches {
        encoder.clear();
        for txn in history("n", range.clone()) {
            encoder.push(&txn);
        }
        offsets.push(bytes.len());
        bytes.extend_from_slice(encoder.finish());
    }
    bytes.resize(bytes.len() + 2 * BLOCK_BYTES, 0);
    std::fs::write(dirs.log_dir.join(segment_file_name(first)), bytes).unwrap();
    offsets
}

/// `snapshot.<zxid>` of the `/n` history 1..=zxid.
fn write_snapshot_at(dirs: &DataDirs, zxid: i64) {
    dirs.write_snapshot(&tree_of(&history("n", 1..=zxid)), &AtomicBool::new(false)).unwrap();
}

/// The runtime's next step after a truncation: a new segment at `first`,
/// written by the real `LogWriter`.
fn append_with_log_writer(dirs: &DataDirs, first: i64, txns: Vec<Txn>) {
    with_log_writer(dirs, first, 64 * 1024, move |mut writer| async move {
        append_batch(&mut writer, &txns).await;
    });
}

/// Runs `body` on a glommio executor with a new `LogWriter` for a segment
/// at `first` in `dirs`' log directory; returns what `body` returns.
fn with_log_writer<T, F, Fut>(dirs: &DataDirs, first: i64, prealloc_bytes: u64, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(LogWriter) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let log_dir = dirs.log_dir.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move { body(LogWriter::create(&log_dir, first, prealloc_bytes, true).await.unwrap()).await })
        .unwrap()
        .join()
        .unwrap()
}

/// Appends `txns` as one batch and waits for it to be durable.
async fn append_batch(writer: &mut LogWriter, txns: &[Txn]) {
    let mut encoder = BatchEncoder::new();
    for txn in txns {
        encoder.push(txn);
    }
    writer.append(encoder.finish()).await.unwrap();
}

/// Every file in both directories with its bytes, to show nothing changed.
fn contents(dirs: &DataDirs) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in [&dirs.snapshot_dir, &dirs.log_dir] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    files.sort();
    files
}

fn names(listing: &[(i64, String)]) -> Vec<&str> {
    listing.iter().map(|(_, name)| name.as_str()).collect()
}

fn assert_recovers_to(dirs: &DataDirs, zxid: i64) -> Recovered {
    let recovered = dirs.recover().unwrap();
    assert_eq!(recovered.tree.last_processed_zxid(), zxid);
    assert!(recovered.torn_tail.is_none());
    // Each zxid created one node, in one of the histories.
    for present in 1..=zxid {
        let created = ["n", "m", "leader"].iter().any(|prefix| recovered.tree.get(&format!("/{prefix}{present}")).is_some());
        assert!(created, "the node of zxid {present:#x} is missing");
    }
    for absent in zxid + 1..=zxid + 20 {
        assert!(recovered.tree.get(&format!("/n{absent}")).is_none(), "/n{absent} survived");
    }
    recovered
}

// Epoch files (ZooKeeper's QuorumPeer acceptedEpoch / currentEpoch).

#[test]
fn missing_epoch_files_default_to_the_epoch_of_the_last_zxid() {
    let dirs = TempDirs::new("epochs-missing");
    assert_eq!(dirs.read_epochs(0x5_0000_0003).unwrap(), (5, 5));
    assert_eq!(dirs.read_epochs(0).unwrap(), (0, 0));
    assert!(!dirs.snapshot_dir.join(ACCEPTED_EPOCH_FILE).exists(), "reading writes nothing");
}

#[test]
fn epochs_round_trip_as_decimal_text() {
    let dirs = TempDirs::new("epochs-round-trip");
    dirs.write_accepted_epoch(7).unwrap();
    dirs.write_current_epoch(6).unwrap();
    assert_eq!(dirs.read_epochs(0x2_0000_0001).unwrap(), (7, 6));
    assert_eq!(std::fs::read_to_string(dirs.snapshot_dir.join("acceptedEpoch")).unwrap(), "7\n");
    assert_eq!(std::fs::read_to_string(dirs.snapshot_dir.join("currentEpoch")).unwrap(), "6\n");
    dirs.write_current_epoch(7).unwrap();
    assert_eq!(dirs.read_epochs(0).unwrap(), (7, 7));
    assert_eq!(dirs.read_epochs(0x9_0000_0000).unwrap(), (7, 7), "files win over the last zxid");
    assert!(!dirs.snapshot_dir.join("currentEpoch.tmp").exists());
    // ZooKeeper writes no newline; both read.
    std::fs::write(dirs.snapshot_dir.join("acceptedEpoch"), "8").unwrap();
    assert_eq!(dirs.read_epochs(0).unwrap(), (8, 7));
    // The snapshot directory's other files do not mistake them for snapshots.
    assert!(dirs.list().unwrap().snapshots.is_empty());
}

#[test]
fn missing_accepted_epoch_takes_the_current_one() {
    let dirs = TempDirs::new("epochs-accepted-missing");
    dirs.write_current_epoch(4).unwrap();
    assert_eq!(dirs.read_epochs(0x3_0000_0009).unwrap(), (4, 4));
    // And a missing current epoch takes the last zxid's.
    let dirs = TempDirs::new("epochs-current-missing");
    dirs.write_accepted_epoch(9).unwrap();
    assert_eq!(dirs.read_epochs(0x2_0000_0009).unwrap(), (9, 2));
}

#[test]
fn unparsable_epoch_file_is_an_error_naming_it() {
    for text in ["", "x\n", "-1\n", "4294967296\n", "3 4\n"] {
        let dirs = TempDirs::new("epochs-unparsable");
        std::fs::write(dirs.snapshot_dir.join(CURRENT_EPOCH_FILE), text).unwrap();
        let error = dirs.read_epochs(0).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{text:?}");
        assert!(error.to_string().contains("currentEpoch"), "{error}");
    }
}

#[test]
fn current_epoch_above_the_accepted_one_is_refused() {
    let dirs = TempDirs::new("epochs-current-above");
    dirs.write_accepted_epoch(3).unwrap();
    dirs.write_current_epoch(4).unwrap();
    let error = dirs.read_epochs(0).unwrap_err();
    assert!(error.to_string().contains("above the accepted epoch"), "{error}");
    // Also when the current epoch comes from the last zxid.
    let dirs = TempDirs::new("epochs-current-above-zxid");
    dirs.write_accepted_epoch(3).unwrap();
    assert!(dirs.read_epochs(0x5_0000_0001).is_err());
}

// Truncation. The usual layout: snapshot.0, log.1 holding 1-3 | 4-6 | 7-9.

fn usual_layout(name: &str) -> (TempDirs, Vec<usize>) {
    let dirs = TempDirs::new(name);
    write_snapshot_at(&dirs, 0);
    let offsets = write_segment(&dirs, 1, &[1..=3, 4..=6, 7..=9]);
    (dirs, offsets)
}

#[test]
fn truncate_inside_a_batch_keeps_its_head_then_a_new_segment_follows() {
    let (dirs, offsets) = usual_layout("truncate-inside");
    let report = dirs.truncate_after(5).unwrap();
    assert_eq!((report.last_zxid, report.snapshot_zxid), (5, 0));
    assert_eq!(report.tree.last_processed_zxid(), 5);
    let (path, length) = report.cut_segment.unwrap();
    assert_eq!(path, dirs.log_dir.join("log.1"));
    assert_eq!(length, (offsets[1] + BLOCK_BYTES) as u64);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), length);
    assert!(report.removed_segments.is_empty() && report.removed_snapshots.is_empty());
    assert_recovers_to(&dirs, 5);

    append_with_log_writer(&dirs, 6, history("m", 6..=7));
    let recovered = assert_recovers_to(&dirs, 7);
    assert!(recovered.tree.get("/m6").is_some() && recovered.tree.get("/n6").is_none());
    // And a restart accepts it too.
    dirs.recover_for_start(0).unwrap();
    assert_recovers_to(&dirs, 7);
}

#[test]
fn truncate_at_a_batch_boundary_only_cuts() {
    let (dirs, offsets) = usual_layout("truncate-boundary");
    let report = dirs.truncate_after(6).unwrap();
    assert_eq!(report.cut_segment.unwrap().1, offsets[2] as u64);
    assert_recovers_to(&dirs, 6);
    append_with_log_writer(&dirs, 7, history("m", 7..=7));
    assert_recovers_to(&dirs, 7);
}

#[test]
fn truncate_at_or_after_the_end_changes_nothing() {
    let (dirs, _) = usual_layout("truncate-end");
    let before = contents(&dirs);
    for to in [9, 10, 0x7_0000_0000] {
        let report = dirs.truncate_after(to).unwrap();
        assert_eq!(report.last_zxid, 9);
        assert!(report.cut_segment.is_none() && report.removed_segments.is_empty() && report.removed_snapshots.is_empty());
        assert_eq!(contents(&dirs), before, "to {to:#x}");
    }
}

#[test]
fn truncate_before_every_record_of_a_segment_removes_it() {
    let dirs = TempDirs::new("truncate-segment");
    write_snapshot_at(&dirs, 0);
    write_segment(&dirs, 1, &[1..=3]);
    write_segment(&dirs, 4, &[4..=6, 7..=8]);
    let log_1 = std::fs::read(dirs.log_dir.join("log.1")).unwrap();
    let report = dirs.truncate_after(3).unwrap();
    assert_eq!(report.removed_segments, vec![dirs.log_dir.join("log.4")]);
    assert!(report.cut_segment.is_none());
    assert_eq!(std::fs::read(dirs.log_dir.join("log.1")).unwrap(), log_1);
    assert_recovers_to(&dirs, 3);
    append_with_log_writer(&dirs, 4, history("m", 4..=4));
    assert_recovers_to(&dirs, 4);

    // Down to the first snapshot: no segment is left.
    let report = dirs.truncate_after(0).unwrap();
    assert_eq!(report.removed_segments.len(), 2);
    assert!(dirs.list().unwrap().segments.is_empty());
    let recovered = assert_recovers_to(&dirs, 0);
    assert!(recovered.tree.get("/n1").is_none());
}

#[test]
fn truncate_removes_a_newest_segment_left_without_records() {
    // A start-up opened log.4 and crashed before writing to it; another
    // opened log.5 and crashed before its header reached the disk.
    let dirs = TempDirs::new("truncate-header-only");
    write_snapshot_at(&dirs, 0);
    write_segment(&dirs, 1, &[1..=3]);
    std::fs::write(dirs.log_dir.join("log.4"), encode_segment_header(4)).unwrap();
    std::fs::write(dirs.log_dir.join("log.5"), vec![0; BLOCK_BYTES]).unwrap();
    let report = dirs.truncate_after(5).unwrap();
    assert_eq!(report.removed_segments, vec![dirs.log_dir.join("log.5"), dirs.log_dir.join("log.4")]);
    assert_eq!(report.last_zxid, 3);
    assert_eq!(names(&dirs.list().unwrap().segments), vec!["log.1"]);
    // So the runtime can open log.4 again.
    append_with_log_writer(&dirs, 4, history("m", 4..=5));
    assert_recovers_to(&dirs, 5);
}

#[test]
fn truncate_across_segments_and_snapshots() {
    let dirs = TempDirs::new("truncate-across");
    write_snapshot_at(&dirs, 0);
    write_segment(&dirs, 1, &[1..=4]);
    write_snapshot_at(&dirs, 4);
    write_segment(&dirs, 5, &[5..=8]);
    write_snapshot_at(&dirs, 8);
    write_segment(&dirs, 9, &[9..=10, 11..=12]);
    let report = dirs.truncate_after(6).unwrap();
    assert_eq!((report.last_zxid, report.snapshot_zxid), (6, 4));
    assert_eq!(report.removed_snapshots, vec![dirs.snapshot_dir.join("snapshot.8")]);
    assert_eq!(report.removed_segments, vec![dirs.log_dir.join("log.9")]);
    assert_eq!(report.cut_segment.unwrap().0, dirs.log_dir.join("log.5"));
    let listing = dirs.list().unwrap();
    assert_eq!(names(&listing.snapshots), vec!["snapshot.0", "snapshot.4"]);
    assert_eq!(names(&listing.segments), vec!["log.1", "log.5"]);
    let recovered = assert_recovers_to(&dirs, 6);
    assert_eq!((recovered.snapshot_zxid, recovered.replayed), (4, 2));
    append_with_log_writer(&dirs, 7, history("m", 7..=9));
    assert_recovers_to(&dirs, 9);
}

#[test]
fn truncate_below_every_snapshot_is_refused_and_changes_nothing() {
    let dirs = TempDirs::new("truncate-no-snapshot");
    write_snapshot_at(&dirs, 4);
    write_segment(&dirs, 5, &[5..=8]);
    let before = contents(&dirs);
    let error = dirs.truncate_after(3).err().unwrap();
    assert!(error.contains("no snapshot at or below"), "{error}");
    assert_eq!(contents(&dirs), before);
    // At the snapshot itself it works.
    assert_eq!(dirs.truncate_after(4).unwrap().last_zxid, 4);
}

#[test]
fn truncate_refuses_damage_below_to_and_changes_nothing() {
    let (dirs, offsets) = usual_layout("truncate-corrupt");
    let path = dirs.log_dir.join("log.1");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offsets[1] + 40] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let before = contents(&dirs);
    let error = dirs.truncate_after(8).err().unwrap();
    assert!(error.contains("log.1") && error.contains("corruption"), "{error}");
    assert_eq!(contents(&dirs), before);
    // Cutting below the damage removes it (with a warning).
    assert_eq!(dirs.truncate_after(2).unwrap().last_zxid, 2);
    assert_recovers_to(&dirs, 2);
}

#[test]
fn truncate_refuses_a_gap_the_newer_snapshot_hid() {
    // snapshot.8 hides the missing 4-6; truncating below it removes it, and
    // recovery from snapshot.0 would meet the gap.
    let dirs = TempDirs::new("truncate-gap");
    write_snapshot_at(&dirs, 0);
    write_segment(&dirs, 1, &[1..=3]);
    write_segment(&dirs, 7, &[7..=9]);
    write_snapshot_at(&dirs, 8);
    assert_eq!(dirs.recover().unwrap().tree.last_processed_zxid(), 9);
    let before = contents(&dirs);
    let error = dirs.truncate_after(7).err().unwrap();
    assert!(error.contains("would not recover") && error.contains("gap"), "{error}");
    assert_eq!(contents(&dirs), before);
}

#[test]
fn truncate_cuts_a_torn_tail() {
    let (dirs, offsets) = usual_layout("truncate-torn");
    let path = dirs.log_dir.join("log.1");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offsets[2] + 40] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    assert!(dirs.recover().unwrap().torn_tail.is_some());
    let report = dirs.truncate_after(100).unwrap();
    assert_eq!(report.last_zxid, 6);
    assert_eq!(report.cut_segment.unwrap().1, offsets[2] as u64);
    assert_recovers_to(&dirs, 6);
    append_with_log_writer(&dirs, 7, history("m", 7..=7));
    assert_recovers_to(&dirs, 7);
}

#[test]
fn torn_rewrite_of_the_straddling_batch_loses_only_that_batch() {
    // The crash window truncate_after documents: the rewrite of 4-5 after
    // the cut is torn. Recovery cuts it and reaches 3; nothing older is lost.
    let (dirs, offsets) = usual_layout("truncate-torn-rewrite");
    dirs.truncate_after(5).unwrap();
    let path = dirs.log_dir.join("log.1");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(offsets[1] + 40);
    std::fs::write(&path, bytes).unwrap();
    let recovered = dirs.recover().unwrap();
    assert_eq!(recovered.tree.last_processed_zxid(), 3);
    assert_eq!(recovered.torn_tail.unwrap().offset, offsets[1] as u64);
    dirs.recover_for_start(0).unwrap();
    assert_recovers_to(&dirs, 3);
}

// Snapshot install: the learner's history diverged after 3; the leader's
// has `/leader` creates from 4 on.

fn leader_snapshot(zxid: i64) -> Bytes {
    let mut txns = history("n", 1..=3.min(zxid));
    txns.extend(history("leader", 4..=zxid));
    Bytes::from(encode_snapshot(&tree_of(&txns)))
}

#[test]
fn install_snapshot_cuts_the_log_and_replaces_newer_snapshots() {
    let (dirs, offsets) = usual_layout("install");
    write_snapshot_at(&dirs, 8);
    let bytes = leader_snapshot(5);
    let tree = dirs.install_snapshot(bytes.clone()).unwrap();
    assert_eq!(tree.last_processed_zxid(), 5);
    assert!(tree.get("/leader5").is_some() && tree.get("/n5").is_none());
    assert_eq!(std::fs::read(dirs.snapshot_dir.join("snapshot.5")).unwrap(), bytes.to_vec(), "written as received");
    assert_eq!(names(&dirs.list().unwrap().snapshots), vec!["snapshot.0", "snapshot.5"]);
    // The log was cut inside 4-6: 4 and 5 stay, under the snapshot.
    assert_eq!(std::fs::metadata(dirs.log_dir.join("log.1")).unwrap().len(), (offsets[1] + BLOCK_BYTES) as u64);
    let recovered = assert_recovers_to(&dirs, 5);
    assert_eq!((recovered.snapshot_zxid, recovered.replayed), (5, 0));
    assert!(recovered.tree.get("/leader4").is_some() && recovered.tree.get("/n4").is_none());
    append_with_log_writer(&dirs, 6, history("m", 6..=7));
    assert_recovers_to(&dirs, 7);
    assert!(dirs.recover().unwrap().tree.get("/leader5").is_some());
}

#[test]
fn install_snapshot_ahead_of_the_learner_keeps_its_log() {
    let dirs = TempDirs::new("install-ahead");
    write_snapshot_at(&dirs, 0);
    write_segment(&dirs, 1, &[1..=3]);
    let before = std::fs::read(dirs.log_dir.join("log.1")).unwrap();
    let tree = dirs.install_snapshot(leader_snapshot(10)).unwrap();
    assert_eq!(tree.last_processed_zxid(), 10);
    assert_eq!(std::fs::read(dirs.log_dir.join("log.1")).unwrap(), before);
    let recovered = assert_recovers_to(&dirs, 10);
    assert_eq!((recovered.snapshot_zxid, recovered.replayed), (10, 0));
    append_with_log_writer(&dirs, 11, history("m", 11..=11));
    assert_recovers_to(&dirs, 11);
}

#[test]
fn truncate_that_would_end_short_of_its_point_under_a_received_snapshot_is_refused() {
    // A learner at 3 got a SNAP at 10 from a leader that then failed; the
    // next leader TRUNCs it to 6. Snapshot 0 and the log reach only 3:
    // ending there would silently drop 4-6, which the leader counts on.
    let dirs = TempDirs::new("truncate-short");
    write_snapshot_at(&dirs, 0);
    write_segment(&dirs, 1, &[1..=3]);
    dirs.install_snapshot(leader_snapshot(10)).unwrap();
    let before = contents(&dirs);
    let error = dirs.truncate_after(6).err().unwrap();
    assert!(error.contains("recovers to 0x3"), "{error}");
    assert_eq!(contents(&dirs), before, "nothing changes");
    assert_recovers_to(&dirs, 10);
    // To a point the remaining log does reach, it works.
    assert_eq!(dirs.truncate_after(3).unwrap().last_zxid, 3);
}

#[test]
fn install_snapshot_below_every_snapshot_of_the_learner() {
    // Its only snapshot is above the leader's: no snapshot at or below Z is
    // needed, the installed one is it.
    let dirs = TempDirs::new("install-below");
    write_snapshot_at(&dirs, 8);
    write_segment(&dirs, 5, &[5..=9]);
    write_segment(&dirs, 10, &[10..=12]);
    dirs.install_snapshot(leader_snapshot(6)).unwrap();
    let listing = dirs.list().unwrap();
    assert_eq!(names(&listing.snapshots), vec!["snapshot.6"]);
    assert_eq!(names(&listing.segments), vec!["log.5"]);
    let recovered = assert_recovers_to(&dirs, 6);
    assert!(recovered.tree.get("/leader6").is_some());
}

#[test]
fn install_of_an_invalid_snapshot_is_refused_and_changes_nothing() {
    let (dirs, _) = usual_layout("install-invalid");
    let before = contents(&dirs);
    let mut bytes = leader_snapshot(5).to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let error = dirs.install_snapshot(Bytes::from(bytes)).err().unwrap();
    assert!(error.contains("invalid"), "{error}");
    assert!(dirs.install_snapshot(Bytes::from_static(b"nonsense")).is_err());
    assert_eq!(contents(&dirs), before);
}

// The committed log for DIFF an ensemble member rebuilds at a reload: the
// last txns recovery replays, as ZooKeeper's loadDataBase fills committedLog.

fn replayed_tail_zxids(dirs: &DataDirs, max: usize) -> Vec<i64> {
    let recovered = dirs.recover_for_start(max).unwrap();
    let zxids: Vec<i64> = recovered.replayed_tail.iter().map(|txn| txn.zxid).collect();
    if let Some(last) = zxids.last() {
        assert_eq!(*last, recovered.tree.last_processed_zxid(), "the tail ends where recovery ends");
    }
    zxids
}

#[test]
fn replayed_tail_spans_segments_past_the_newest_snapshot() {
    let dirs = TempDirs::new("tail-segments");
    write_snapshot_at(&dirs, 0);
    write_segment(&dirs, 1, &[1..=4]);
    write_snapshot_at(&dirs, 4);
    write_segment(&dirs, 5, &[5..=6, 7..=8]);
    write_segment(&dirs, 9, &[9..=12]);
    assert_eq!(replayed_tail_zxids(&dirs, 5), vec![8, 9, 10, 11, 12], "the newest, bounded");
    assert_eq!(replayed_tail_zxids(&dirs, 100), (5..=12).collect::<Vec<_>>(), "never below the snapshot");
    assert!(replayed_tail_zxids(&dirs, 0).is_empty());
    assert!(dirs.recover().unwrap().replayed_tail.is_empty(), "tools keep none");
}

#[test]
fn replayed_tail_after_a_truncation_ends_at_its_point() {
    let (dirs, _) = usual_layout("tail-truncate");
    dirs.truncate_after(5).unwrap();
    assert_eq!(replayed_tail_zxids(&dirs, 3), vec![3, 4, 5]);
    // The runtime's new segment after it, with the new leader's txns.
    append_with_log_writer(&dirs, 6, history("m", 6..=7));
    let recovered = dirs.recover_for_start(3).unwrap();
    let tail: Vec<(i64, String)> = recovered
        .replayed_tail
        .iter()
        .map(|txn| match &txn.body {
            TxnBody::Create(create) => (txn.zxid, create.path.to_string()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(tail, vec![(5, "/n5".into()), (6, "/m6".into()), (7, "/m7".into())], "the cut txns are gone");
}

#[test]
fn replayed_tail_after_a_snapshot_install_skips_the_log_under_it() {
    // The learner's log holds 1-9 of its own history; the leader's snapshot
    // at 5 diverged after 3. Records 4 and 5 stay in the log, under the
    // snapshot: they are another history's and must not be DIFFed.
    let (dirs, _) = usual_layout("tail-install");
    dirs.install_snapshot(leader_snapshot(5)).unwrap();
    assert!(replayed_tail_zxids(&dirs, 10).is_empty());
    append_with_log_writer(&dirs, 6, history("leader", 6..=8));
    assert_eq!(replayed_tail_zxids(&dirs, 10), vec![6, 7, 8]);
}

/// A roll (every snapshot rolls the log) gives back the segment's unused
/// preallocation: disk use follows what was written, not preAllocSize per
/// snapshot interval. The rolled segment still recovers.
#[test]
fn a_rolled_segment_gives_back_its_preallocation() {
    let dirs = TempDirs::new("roll");
    const PREALLOC: u64 = 4 * 1024 * 1024;
    with_log_writer(&dirs, 1, PREALLOC, |mut writer| async move {
        append_batch(&mut writer, &history("n", 1..=3)).await;
        let next = writer.roll(4).await.unwrap();
        drop(next);
    });
    write_snapshot_at(&dirs, 0);
    let rolled = std::fs::metadata(dirs.log_dir.join(segment_file_name(1))).unwrap();
    assert!(rolled.len() < PREALLOC, "the rolled segment kept its preallocation: {} bytes", rolled.len());
    use std::os::unix::fs::MetadataExt;
    assert!(rolled.blocks() * 512 < PREALLOC, "the rolled segment still holds {} bytes of disk", rolled.blocks() * 512);
    assert_recovers_to(&dirs, 3);
}

/// A snapshot is streamed to its file as it is encoded, a chunk at a time,
/// its header written last over the placeholder: the file must hold exactly
/// the bytes `encode_snapshot` makes in memory, whatever the chunking.
#[test]
fn a_streamed_snapshot_is_byte_for_byte_the_encoded_one() {
    let dirs = TempDirs::new("snapshot-streamed");
    // Large enough to span many write chunks.
    let tree = tree_of(&history("n", 1..=10_000));
    let (path, length) = dirs.write_snapshot(&tree, &AtomicBool::new(false)).unwrap();
    let written = std::fs::read(&path).unwrap();
    let encoded = encode_snapshot(&tree);
    assert!(encoded.len() > 2 * crate::limits::SNAPSHOT_WRITE_CHUNK_BYTES, "{} bytes", encoded.len());
    assert_eq!(length, written.len());
    assert!(written == encoded, "streamed {} bytes, encoded {}", written.len(), encoded.len());
    let decoded = decode_snapshot(Bytes::from(written)).unwrap();
    assert_eq!(decoded.digest(), tree.digest());
}

/// A snapshot write the server's stop interrupts ends at the next chunk with
/// `StopRequested` and leaves no file, finished or temporary, behind.
#[test]
fn a_stopped_snapshot_write_is_abandoned_and_leaves_no_file() {
    let dirs = TempDirs::new("snapshot-stopped");
    let tree = tree_of(&history("n", 1..=10_000));
    let error = dirs.write_snapshot(&tree, &AtomicBool::new(true)).unwrap_err();
    assert!(is_stop_requested(&error), "{error}");
    let left: Vec<_> = std::fs::read_dir(&dirs.snapshot_dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert!(left.iter().all(|name| !name.to_string_lossy().starts_with("snapshot.")), "left behind: {left:?}");
    // Not stopped, the same tree is written.
    dirs.write_snapshot(&tree, &AtomicBool::new(false)).unwrap();
}

/// Files written a chunk at a time hold exactly what was written, with a
/// header over their first bytes when one is given, at every length around
/// the block and chunk boundaries: with direct I/O, without, and with direct
/// I/O refused part way.
#[test]
fn chunked_files_hold_exactly_what_was_written() {
    use std::io::Write;
    let dirs = TempDirs::new("chunked");
    let chunk = crate::limits::SNAPSHOT_WRITE_CHUNK_BYTES;
    let mut rng = crate::rng::Rng::new(11);
    for way in ["direct", "buffered", "refused"] {
        for length in [0, 1, 100, 4095, 4096, 4097, chunk - 1, chunk, chunk + 1, 3 * chunk + 17] {
            let bytes: Vec<u8> = (0..length).map(|_| rng.below(256) as u8).collect();
            let header: &[u8] = if length >= 40 { b"a header of forty bytes, written last..." } else { &[] };
            let path = dirs.snapshot_dir.join(format!("chunked-{way}-{length}"));
            let file = std::fs::File::create(&path).unwrap();
            let mut writer = match way {
                "direct" => ChunkedWriter::new(&file),
                "buffered" => ChunkedWriter::buffered(&file),
                _ => ChunkedWriter::misaligned(&file),
            };
            assert_eq!(writer.direct, way != "buffered", "this file system refuses direct I/O");
            // Odd-sized writes, so they straddle chunks.
            for piece in bytes.chunks(7919) {
                writer.write_all(piece).unwrap();
            }
            // A refused write gives direct I/O up (a file of nothing writes nothing).
            assert_eq!(writer.direct, way == "direct" || (way == "refused" && length < chunk), "{way} {length}");
            assert_eq!(writer.finish(header).unwrap(), length as u64);
            let mut expected = bytes.clone();
            expected[..header.len()].copy_from_slice(header);
            let written = std::fs::read(&path).unwrap();
            assert!(written == expected, "{way}, length {length}: read back {} bytes", written.len());
        }
    }
    let file = std::fs::File::create(dirs.snapshot_dir.join("short")).unwrap();
    let mut writer = ChunkedWriter::new(&file);
    writer.write_all(b"abc").unwrap();
    assert!(writer.finish(b"abcd").is_err(), "a header longer than the file");
}

/// Batches written one after another, each a block, while the writer zeros
/// its segment ahead of them: a fill starts right where the next batch
/// goes once the batches catch up with the zeroing, and zeros landing after
/// a batch would erase it. Each fill is held back long enough that the
/// batches catch up with it again and again. Every batch must recover.
#[test]
fn every_batch_survives_the_zeros_written_ahead_of_it() {
    let dirs = TempDirs::new("zero-ahead");
    const TXNS: i64 = 4_500;
    // A small preallocation step: allocation and zeroing interleave.
    with_log_writer(&dirs, 1, 64 * 1024, |mut writer| async move {
        writer.zero_fill_delay = Some(std::time::Duration::from_millis(30));
        let txns = history("n", 1..=TXNS);
        // As the log task writes: the next batch while earlier ones sync.
        let mut syncs = std::collections::VecDeque::new();
        for batch in txns.chunks(3) {
            let mut encoder = BatchEncoder::new();
            for txn in batch {
                encoder.push(txn);
            }
            syncs.push_back(writer.write(encoder.finish()).await.unwrap());
            if syncs.len() == crate::limits::LOG_SYNCS_IN_FLIGHT_MAX {
                syncs.pop_front().unwrap().await.unwrap();
            }
        }
        for sync in syncs {
            sync.await.unwrap();
        }
        assert!(
            writer.offset > 2 * crate::limits::LOG_ZERO_AHEAD_BYTES,
            "the batches span {} bytes, too few to pass several fills",
            writer.offset
        );
        let next = writer.roll(TXNS + 1).await.unwrap();
        drop(next);
    });
    write_snapshot_at(&dirs, 0);
    assert_recovers_to(&dirs, TXNS);
}

/// The point of the zeros: the blocks after the last batch are written
/// blocks, not preallocated (unwritten) ones, whose conversion on first
/// write makes each fdatasync commit the filesystem journal. Read with
/// FIEMAP; the same file's preallocation past the zeroed part shows the
/// kernel reports unwritten extents here at all.
#[test]
fn the_log_writer_zeros_its_segment_ahead_of_the_last_batch() {
    let dirs = TempDirs::new("zero-extents");
    const PREALLOC: u64 = 16 * 1024 * 1024;
    let offset = with_log_writer(&dirs, 1, PREALLOC, |mut writer| async move {
        append_batch(&mut writer, &history("n", 1..=3)).await;
        // Each batch zeros at most a chunk more; one-txn batches, one per
        // chunk, let the fills reach the full distance ahead.
        let chunks = crate::limits::LOG_ZERO_AHEAD_BYTES / crate::limits::LOG_ZERO_FILL_CHUNK_BYTES;
        for zxid in 4..4 + chunks as i64 {
            writer.finish_zero_fill().await;
            append_batch(&mut writer, &history("n", zxid..=zxid)).await;
        }
        writer.finish_zero_fill().await;
        writer.offset
    });
    let file = std::fs::File::open(dirs.log_dir.join(segment_file_name(1))).unwrap();
    let unwritten = unwritten_ranges(&file, PREALLOC);
    let ahead = offset + crate::limits::LOG_ZERO_AHEAD_BYTES - crate::limits::LOG_ZERO_FILL_CHUNK_BYTES;
    assert!(
        unwritten.iter().all(|&(start, end)| end <= offset || start >= ahead),
        "unwritten extents {unwritten:?} within {offset}..{ahead}, after the last batch"
    );
    assert!(
        unwritten.iter().any(|&(_, end)| end == PREALLOC),
        "no unwritten extent reported at the end of the preallocation ({unwritten:?}): cannot tell written from unwritten on this filesystem"
    );
}

/// The byte ranges of `file` below `length` that FIEMAP reports unwritten
/// (preallocated, reading as zeros without having been written).
fn unwritten_ranges(file: &std::fs::File, length: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Map {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; 512],
    }
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 1;
    const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
    let mut map = Map { start: 0, length, flags: FIEMAP_FLAG_SYNC, mapped_extents: 0, extent_count: 512, reserved: 0, extents: [Extent::default(); 512] };
    // SAFETY: FS_IOC_FIEMAP reads the header and writes at most extent_count
    // extents into the array that follows it, all inside `map`.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Map) };
    assert_eq!(result, 0, "FIEMAP: {}", std::io::Error::last_os_error());
    map.extents[..map.mapped_extents as usize]
        .iter()
        .filter(|extent| extent.flags & FIEMAP_EXTENT_UNWRITTEN != 0)
        .map(|extent| (extent.logical, extent.logical + extent.length))
        .collect()
}
