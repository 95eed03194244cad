//! Disk I/O for durability: recovery at start-up, the direct-I/O log writer
//! (group commit), snapshot files and retention. The formats and every
//! decision about them are in `storage`; this file only moves bytes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use glommio::io::DmaFile;

use crate::storage::log::{encode_segment_header, parse_segment_file_name, plan_truncate, segment_file_name, TruncatePlan, BLOCK_BYTES};
use crate::storage::recovery::{recover, Listing, Recovered};
use crate::storage::snapshot::{decode_snapshot, parse_snapshot_file_name, snapshot_file_name, stream_snapshot};
use crate::tree::DataTree;

/// Where snapshots and log segments live: `<dir>/version-2`, as ZooKeeper lays them out.
#[derive(Debug, Clone)]
pub struct DataDirs {
    pub snapshot_dir: PathBuf,
    pub log_dir: PathBuf,
}

impl DataDirs {
    pub fn new(data_dir: &Path, data_log_dir: &Path) -> DataDirs {
        DataDirs { snapshot_dir: data_dir.join("version-2"), log_dir: data_log_dir.join("version-2") }
    }

    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.snapshot_dir)?;
        std::fs::create_dir_all(&self.log_dir)
    }

    fn path_of(&self, name: &str) -> PathBuf {
        if name.starts_with("log.") {
            self.log_dir.join(name)
        } else {
            self.snapshot_dir.join(name)
        }
    }

    pub fn list(&self) -> std::io::Result<Listing> {
        let mut listing = Listing::default();
        for entry in std::fs::read_dir(&self.snapshot_dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(zxid) = parse_snapshot_file_name(&name) {
                listing.snapshots.push((zxid, name));
            }
        }
        for entry in std::fs::read_dir(&self.log_dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(zxid) = parse_segment_file_name(&name) {
                listing.segments.push((zxid, name));
            }
        }
        listing.snapshots.sort();
        listing.segments.sort();
        Ok(listing)
    }

    /// Runs recovery over the files on disk without changing anything.
    pub fn recover(&self) -> Result<Recovered, String> {
        self.recover_keeping(0)
    }

    /// Recovery that also keeps the last `replayed_tail_max` txns it
    /// replayed (`Recovered::replayed_tail`). Segments are read one at a
    /// time; only that many txns outlive their segment.
    fn recover_keeping(&self, replayed_tail_max: usize) -> Result<Recovered, String> {
        let listing = self.list().map_err(|error| format!("cannot list the data directories: {error}"))?;
        recover(
            &listing,
            |name| std::fs::read(self.path_of(name)).map(Bytes::from).map_err(|error| error.to_string()),
            |bytes| decode_snapshot(bytes).map_err(|error| error.to_string()),
            replayed_tail_max,
        )
        .map_err(|error| {
            let path = self.path_of(&error.file);
            format!("{}: offset {}: {}", path.display(), error.offset, error.reason)
        })
    }

    /// Recovery at start-up (and an ensemble member's reload): also cuts a
    /// torn tail and writes the first snapshot of a fresh directory, so a log
    /// always has a snapshot to follow. Keeps the last `replayed_tail_max`
    /// txns replayed: an ensemble member's committed log for DIFF.
    pub fn recover_for_start(&self, replayed_tail_max: usize) -> Result<Recovered, String> {
        self.create().map_err(|error| format!("cannot create the data directories: {error}"))?;
        let recovered = self.recover_keeping(replayed_tail_max)?;
        for warning in &recovered.warnings {
            tracing::warn!("{warning}");
        }
        if let Some(torn) = &recovered.torn_tail {
            let path = self.path_of(&torn.file);
            tracing::warn!(file = %path.display(), offset = torn.offset, reason = %torn.reason, "cutting a torn log tail (a write the crash interrupted; it was never acknowledged)");
            let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(|error| format!("{}: {error}", path.display()))?;
            file.set_len(torn.offset).and_then(|()| file.sync_all()).map_err(|error| format!("{}: {error}", path.display()))?;
        }
        if let Some((name, end)) = &recovered.log_end {
            // Give back the unused preallocation: the next write goes to a new segment.
            let path = self.path_of(name);
            let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(|error| format!("{}: {error}", path.display()))?;
            let length = file.metadata().map_err(|error| format!("{}: {error}", path.display()))?.len();
            if length > *end {
                file.set_len(*end).and_then(|()| file.sync_all()).map_err(|error| format!("{}: {error}", path.display()))?;
            }
        }
        if recovered.fresh {
            self.write_snapshot(&recovered.tree, &AtomicBool::new(false)).map_err(|error| format!("cannot write the first snapshot: {error}"))?;
        }
        Ok(recovered)
    }

    /// The secret session passwords derive from: read from `secret` in the
    /// snapshot directory, or made with `generate` and stored (atomically,
    /// fsynced) on the first start, so sessions survive restarts.
    pub fn password_secret(&self, generate: impl FnOnce() -> u64) -> std::io::Result<u64> {
        let path = self.snapshot_dir.join("secret");
        match std::fs::read_to_string(&path) {
            Ok(text) => u64::from_str_radix(text.trim(), 16)
                .map_err(|error| std::io::Error::other(format!("{}: not a secret: {error}", path.display()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let secret = generate();
                self.store_password_secret(secret)?;
                Ok(secret)
            }
            Err(error) => Err(error),
        }
    }

    /// Replaces the stored session secret (an ensemble member adopts its
    /// leader's, so sessions move between servers).
    pub fn store_password_secret(&self, secret: u64) -> std::io::Result<()> {
        write_file_durably(&self.snapshot_dir, "secret", format!("{secret:016x}\n").as_bytes()).map(|_| ())
    }

    /// Writes `snapshot.<zxid>` atomically: a temporary file, fsync, rename, fsync the directory.
    /// Raising `stop` abandons it within a chunk: the error is
    /// `StopRequested` and no file is left (a snapshot of millions of znodes
    /// takes seconds, which a stopping server should not wait for; the log
    /// holds everything it has).
    pub fn write_snapshot(&self, tree: &DataTree, stop: &AtomicBool) -> std::io::Result<(PathBuf, usize)> {
        // Streamed to the file as it is encoded, never held whole in memory
        // (about 200 MB per 1M znodes), and on the disk a chunk at a time.
        let name = snapshot_file_name(tree.last_processed_zxid());
        let mut length = 0;
        let written = write_durably(&self.snapshot_dir, &name, |file| {
            let (sink, header) = stream_snapshot(tree, ChunkedWriter::new(file).stopped_by(stop))?;
            length = sink.finish(&header)?;
            Ok(())
        });
        match written {
            Ok(path) => Ok((path, length as usize)),
            // The encoder does not carry its writer's error through (rancor
            // without `alloc`), so a failure while stopping is the stop's.
            Err(_) if stop.load(Ordering::Relaxed) => Err(std::io::Error::other(StopRequested)),
            Err(error) => Err(error),
        }
    }

    /// Keeps the newest `retain` snapshots and the log segments they need;
    /// removes the rest (ZooKeeper's PurgeTxnLog). Returns the removed files.
    pub fn purge(&self, retain: usize) -> std::io::Result<Vec<PathBuf>> {
        let listing = self.list()?;
        let mut removed = Vec::new();
        if listing.snapshots.len() <= retain || retain == 0 {
            return Ok(removed);
        }
        let keep_from = listing.snapshots.len() - retain;
        let oldest_kept_zxid = listing.snapshots[keep_from].0;
        for (_, name) in &listing.snapshots[..keep_from] {
            let path = self.snapshot_dir.join(name);
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
        // A segment is needed if it may hold zxids above the oldest kept
        // snapshot: it is the last one starting at or before that zxid + 1, or later.
        let first_needed = listing.segments.iter().rposition(|(first_zxid, _)| *first_zxid <= oldest_kept_zxid + 1).unwrap_or(0);
        for (_, name) in &listing.segments[..first_needed] {
            let path = self.log_dir.join(name);
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
        Ok(removed)
    }
}

/// ZooKeeper's epoch files, in the snapshot directory (QuorumPeer's
/// ACCEPTED_EPOCH_FILENAME and CURRENT_EPOCH_FILENAME): a decimal number.
pub const ACCEPTED_EPOCH_FILE: &str = "acceptedEpoch";
pub const CURRENT_EPOCH_FILE: &str = "currentEpoch";

/// What `truncate_after` did, and the state recovery now reaches.
pub struct TruncateReport {
    /// min(to, the last logged zxid): where recovery now ends.
    pub last_zxid: i64,
    /// The state at `last_zxid`, from the recovery that checked the
    /// truncated layout before anything was changed.
    pub tree: DataTree,
    /// The snapshot that recovery starts from.
    pub snapshot_zxid: i64,
    pub removed_snapshots: Vec<PathBuf>,
    pub removed_segments: Vec<PathBuf>,
    /// The segment cut and its new length.
    pub cut_segment: Option<(PathBuf, u64)>,
}

/// Removing the log records above a zxid: segments to delete, newest
/// first, and at most one segment to cut.
struct LogCut {
    delete: Vec<String>,
    cut: Option<SegmentCut>,
}

/// What carrying out a `LogCut` changed: the segments deleted, and the
/// segment cut with its new length.
struct LogCutDone {
    removed_segments: Vec<PathBuf>,
    cut_segment: Option<(PathBuf, u64)>,
}

struct SegmentCut {
    name: String,
    plan: TruncatePlan,
    /// The segment as the plan leaves it.
    bytes_after: Bytes,
}

impl DataDirs {
    /// The accepted and current epochs (ZooKeeper's QuorumPeer.loadDataBase).
    /// A missing file means an upgrade from a server without them: the epoch
    /// defaults to that of `last_zxid`, except that a missing acceptedEpoch
    /// next to a currentEpoch takes the current one. An unreadable file, or a
    /// current epoch above the accepted one, is an error: the server must
    /// not start with epochs it cannot trust.
    pub fn read_epochs(&self, last_zxid: i64) -> std::io::Result<(u32, u32)> {
        let accepted_file = self.read_epoch_file(ACCEPTED_EPOCH_FILE)?;
        let current_file = self.read_epoch_file(CURRENT_EPOCH_FILE)?;
        let of_last_zxid = crate::zab::epoch_of(last_zxid);
        let current = current_file.unwrap_or(of_last_zxid);
        let accepted = accepted_file.or(current_file).unwrap_or(of_last_zxid);
        if current > accepted {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: the current epoch {current} is above the accepted epoch {accepted} (last zxid {last_zxid:#x}); refusing to start",
                    self.snapshot_dir.display()
                ),
            ));
        }
        Ok((accepted, current))
    }

    fn read_epoch_file(&self, name: &str) -> std::io::Result<Option<u32>> {
        let path = self.snapshot_dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u32>().map(Some).map_err(|error| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: not an epoch ({error}): {text:?}", path.display()))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))),
        }
    }

    /// Stores the accepted epoch (ZAB discovery: the epoch a learner promised
    /// a leader) durably: temporary file, fsync, rename, fsync the directory.
    pub fn write_accepted_epoch(&self, epoch: u32) -> std::io::Result<()> {
        self.write_epoch_file(ACCEPTED_EPOCH_FILE, epoch)
    }

    /// Stores the current epoch (ZAB synchronization: the epoch whose history
    /// this server holds) durably, as `write_accepted_epoch`.
    pub fn write_current_epoch(&self, epoch: u32) -> std::io::Result<()> {
        self.write_epoch_file(CURRENT_EPOCH_FILE, epoch)
    }

    fn write_epoch_file(&self, name: &str, epoch: u32) -> std::io::Result<()> {
        write_file_durably(&self.snapshot_dir, name, format!("{epoch}\n").as_bytes())
            .map(|_| ())
            .map_err(|error| std::io::Error::new(error.kind(), format!("{}: {error}", self.snapshot_dir.join(name).display())))
    }

    /// Removes every log record and every snapshot above zxid `to` (ZAB's
    /// TRUNC), so that `recover` then yields exactly the state at
    /// min(to, the last logged zxid). No `LogWriter` may be open on these
    /// directories; afterwards the runtime opens a new segment at
    /// `last_zxid + 1`.
    ///
    /// Checked first, changed after: the truncated layout is planned and
    /// recovered in memory (so a missing snapshot at or below `to`, a gap or
    /// damage is reported before any file is touched), then carried out in
    /// an order where every crash point leaves a layout recovery accepts:
    /// 1. snapshots above `to` are deleted (directory fsynced): recovery
    ///    starts from an older snapshot and replays the still-whole log;
    /// 2. segments starting above `to` (and the newest ones left without any
    ///    record) are deleted newest first, fsyncing the directory after
    ///    each, so the log never has a hole;
    /// 3. the segment holding the batch that straddles `to` is cut at that
    ///    batch's start and fsynced, then the batch's records at or below
    ///    `to` are written after the cut as a new batch and fsynced. A crash
    ///    between the two, or a torn rewrite (a torn tail recovery cuts),
    ///    loses only that batch's records at or below `to`: recovery stops
    ///    just before the batch, and the leader re-sends them in the next
    ///    synchronization. Batches before it are never rewritten.
    pub fn truncate_after(&self, to: i64) -> Result<TruncateReport, String> {
        let listing = self.list().map_err(|error| format!("cannot list the data directories: {error}"))?;
        let log_cut = self.plan_log_cut(&listing, to)?;
        let planned = Listing {
            snapshots: listing.snapshots.iter().filter(|(zxid, _)| *zxid <= to).cloned().collect(),
            segments: listing.segments.iter().filter(|(_, name)| !log_cut.delete.contains(name)).cloned().collect(),
        };
        if planned.snapshots.is_empty() {
            return Err(format!(
                "cannot truncate the log after zxid {to:#x}: no snapshot at or below it to recover from in {} (a snapshot from the leader is needed)",
                self.snapshot_dir.display()
            ));
        }
        let recovered = recover(
            &planned,
            |name| match &log_cut.cut {
                Some(cut) if cut.name == name => Ok(cut.bytes_after.clone()),
                _ => std::fs::read(self.path_of(name)).map(Bytes::from).map_err(|error| error.to_string()),
            },
            |bytes| decode_snapshot(bytes).map_err(|error| error.to_string()),
            0,
        )
        .map_err(|error| {
            format!(
                "cannot truncate the log after zxid {to:#x}: the result would not recover: {}: offset {}: {}",
                self.path_of(&error.file).display(),
                error.offset,
                error.reason
            )
        })?;
        let last_zxid = recovered.tree.last_processed_zxid();
        // Removing a snapshot above `to` must leave exactly `to`: ending
        // below it (the log under a snapshot received from an earlier leader
        // is gone) would drop txns the leader counts on this server having;
        // the learner asks for a SNAP instead.
        let cuts_snapshot = listing.snapshots.iter().any(|(zxid, _)| *zxid > to);
        if last_zxid > to || (cuts_snapshot && last_zxid < to) || recovered.fresh || recovered.torn_tail.is_some() {
            return Err(format!(
                "cannot truncate the log after zxid {to:#x}: the planned layout recovers to {last_zxid:#x} (fresh {}, torn tail {:?})",
                recovered.fresh, recovered.torn_tail
            ));
        }
        for warning in &recovered.warnings {
            tracing::warn!("{warning}");
        }

        let mut removed_snapshots = Vec::new();
        for (_, name) in listing.snapshots.iter().rev().filter(|(zxid, _)| *zxid > to) {
            let path = self.snapshot_dir.join(name);
            std::fs::remove_file(&path).map_err(|error| format!("{}: {error}", path.display()))?;
            removed_snapshots.push(path);
        }
        if !removed_snapshots.is_empty() {
            sync_directory(&self.snapshot_dir).map_err(|error| format!("{}: {error}", self.snapshot_dir.display()))?;
        }
        let LogCutDone { removed_segments, cut_segment } = self.apply_log_cut(&log_cut)?;
        tracing::info!(
            to = format_args!("{to:#x}"),
            last_zxid = format_args!("{last_zxid:#x}"),
            snapshots = removed_snapshots.len(),
            segments = removed_segments.len(),
            "truncated the log"
        );
        Ok(TruncateReport {
            last_zxid,
            tree: recovered.tree,
            snapshot_zxid: recovered.snapshot_zxid,
            removed_snapshots,
            removed_segments,
            cut_segment,
        })
    }

    /// Installs a snapshot received from the leader (ZAB's SNAP) and returns
    /// its tree. The snapshot is validated first; then (a) log records above
    /// its zxid Z are removed as `truncate_after` removes them, (b) its bytes
    /// are written as `snapshot.<Z>` (temporary file, fsync, rename, fsync
    /// the directory; not re-encoded), (c) snapshots above Z are deleted.
    /// No `LogWriter` may be open; the runtime then opens a segment at Z + 1.
    ///
    /// Every crash point leaves a layout recovery accepts: after (a) the
    /// learner holds its own history up to min(Z, its last zxid); between
    /// (b) and (c) a newer snapshot of its own may still win at recovery
    /// (its old state at that zxid); in both cases the next synchronization
    /// with the leader brings it to the leader's history again. Log records
    /// at or below Z stay: recovery from `snapshot.<Z>` never reads them, and
    /// a later TRUNC cannot go below Z, which the leader committed.
    pub fn install_snapshot(&self, bytes: Bytes) -> Result<DataTree, String> {
        let tree = decode_snapshot(bytes.clone()).map_err(|error| format!("the snapshot from the leader is invalid: {error}"))?;
        let zxid = tree.last_processed_zxid();
        self.create().map_err(|error| format!("cannot create the data directories: {error}"))?;
        let listing = self.list().map_err(|error| format!("cannot list the data directories: {error}"))?;
        let log_cut = self.plan_log_cut(&listing, zxid)?;
        self.apply_log_cut(&log_cut)?;
        let name = snapshot_file_name(zxid);
        write_file_durably(&self.snapshot_dir, &name, &bytes)
            .map_err(|error| format!("{}: {error}", self.snapshot_dir.join(&name).display()))?;
        let mut removed = 0;
        for (_, name) in listing.snapshots.iter().rev().filter(|(snapshot_zxid, _)| *snapshot_zxid > zxid) {
            let path = self.snapshot_dir.join(name);
            std::fs::remove_file(&path).map_err(|error| format!("{}: {error}", path.display()))?;
            removed += 1;
        }
        if removed > 0 {
            sync_directory(&self.snapshot_dir).map_err(|error| format!("{}: {error}", self.snapshot_dir.display()))?;
        }
        tracing::info!(zxid = format_args!("{zxid:#x}"), bytes = bytes.len(), newer_snapshots_removed = removed, "installed the leader's snapshot");
        Ok(tree)
    }

    /// Plans removing every log record above `to`: segments starting above
    /// it go, the newest remaining segment is cut (storage::log::plan_truncate),
    /// and a newest segment left with no record (header only, or never
    /// written) goes too, so no segment starts after the new last zxid and
    /// the runtime can open the next one.
    fn plan_log_cut(&self, listing: &Listing, to: i64) -> Result<LogCut, String> {
        let mut delete = Vec::new();
        let mut cut = None;
        for (first_zxid, name) in listing.segments.iter().rev() {
            if *first_zxid > to {
                delete.push(name.clone());
                continue;
            }
            let path = self.log_dir.join(name);
            let bytes = std::fs::read(&path).map(Bytes::from).map_err(|error| format!("{}: {error}", path.display()))?;
            // A segment created just before a crash may not have its header yet.
            if bytes.iter().all(|byte| *byte == 0) {
                delete.push(name.clone());
                continue;
            }
            let plan = plan_truncate(&bytes, to)
                .map_err(|reason| format!("cannot truncate {} after zxid {to:#x}: {reason}", path.display()))?;
            if plan.records_kept == 0 {
                delete.push(name.clone());
                continue;
            }
            if !plan.is_noop() {
                let bytes_after = plan.apply(&bytes);
                cut = Some(SegmentCut { name: name.clone(), plan, bytes_after });
            }
            break;
        }
        Ok(LogCut { delete, cut })
    }

    /// Carries out a `LogCut`: deletions newest first, each made durable
    /// before the next, then the cut (see `truncate_after` for why this order).
    fn apply_log_cut(&self, log_cut: &LogCut) -> Result<LogCutDone, String> {
        use std::os::unix::fs::FileExt;
        let mut removed = Vec::new();
        for name in &log_cut.delete {
            let path = self.log_dir.join(name);
            std::fs::remove_file(&path)
                .and_then(|()| sync_directory(&self.log_dir))
                .map_err(|error| format!("{}: {error}", path.display()))?;
            removed.push(path);
        }
        let Some(cut) = &log_cut.cut else {
            return Ok(LogCutDone { removed_segments: removed, cut_segment: None });
        };
        let path = self.log_dir.join(&cut.name);
        let plan = &cut.plan;
        if let Some(damage) = &plan.damage_removed {
            tracing::warn!(file = %path.display(), "truncation removes damage after the records kept: {damage}");
        }
        let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        file.set_len(plan.cut_offset).and_then(|()| file.sync_all()).map_err(|error| format!("{}: {error}", path.display()))?;
        if let Some(batch) = &plan.rewrite {
            file.write_all_at(batch, plan.cut_offset)
                .and_then(|()| file.sync_all())
                .map_err(|error| format!("{}: {error}", path.display()))?;
        }
        let length = plan.length_after();
        Ok(LogCutDone { removed_segments: removed, cut_segment: Some((path, length)) })
    }
}

/// Writes `dir/name` atomically: a temporary file written and flushed a
/// chunk at a time, fsync, rename, fsync the directory.
fn write_file_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    write_durably(dir, name, |file| {
        let mut sink = ChunkedWriter::new(file);
        sink.write_all(bytes)?;
        sink.finish(&[]).map(|_| ())
    })
}

/// Creates `dir/name` durably: `fill` writes it as `name.tmp`, which is then
/// synced and renamed over `name`, and the directory synced.
fn write_durably(dir: &Path, name: &str, fill: impl FnOnce(&std::fs::File) -> std::io::Result<()>) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let file = std::fs::File::create(&temporary)?;
    if let Err(error) = fill(&file) {
        // Not left behind: a failed or abandoned snapshot can be hundreds of MB.
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    sync_directory(dir)?;
    Ok(path)
}

/// Writes a new file from its start, `SNAPSHOT_WRITE_CHUNK_BYTES` at a time,
/// each chunk on the disk before the next is filled: a 200 MB snapshot
/// written at once and flushed at the end would stall the log's fdatasync
/// behind it. With direct I/O (`O_DIRECT`), which skips the page cache's
/// copy and writeback (half the snapshot thread's CPU was the kernel's);
/// where the file system refuses it (tmpfs), buffered, each chunk flushed
/// with `flush_range`. A header given to `finish` is written over the
/// file's first bytes, last.
struct ChunkedWriter<'a> {
    file: &'a std::fs::File,
    direct: bool,
    /// `SNAPSHOT_WRITE_CHUNK_BYTES` plus room to start the chunk on a block.
    memory: Vec<u8>,
    /// Where the block-aligned chunk starts in `memory`.
    start: usize,
    filled: usize,
    /// File offset of the chunk (block-aligned).
    offset: u64,
    /// The file's first block as written.
    first_block: Vec<u8>,
    /// Raised: the next chunk fails with `StopRequested` instead.
    stop: Option<&'a AtomicBool>,
}

/// Why a snapshot write was abandoned: the server is stopping.
#[derive(Debug)]
pub struct StopRequested;

impl std::fmt::Display for StopRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("abandoned: the server is stopping")
    }
}

impl std::error::Error for StopRequested {}

/// Whether `error` is a write abandoned by `StopRequested`.
pub fn is_stop_requested(error: &std::io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<StopRequested>())
}

/// What direct I/O needs offsets, lengths and buffers aligned to (any
/// logical block size up to it).
const DIRECT_BLOCK_BYTES: usize = 4096;
const _: () = assert!(crate::limits::SNAPSHOT_WRITE_CHUNK_BYTES % DIRECT_BLOCK_BYTES == 0);

impl<'a> ChunkedWriter<'a> {
    /// Writes `file`, which must be new and empty.
    fn new(file: &'a std::fs::File) -> Self {
        ChunkedWriter::with(file, set_direct(file, true))
    }

    /// The buffered way only, as where direct I/O is refused.
    #[cfg(test)]
    fn buffered(file: &'a std::fs::File) -> Self {
        ChunkedWriter::with(file, false)
    }

    /// Direct I/O from a buffer off the block alignment, which the kernel
    /// refuses (EINVAL) as it would a device's larger block size.
    #[cfg(test)]
    fn misaligned(file: &'a std::fs::File) -> Self {
        let mut writer = ChunkedWriter::new(file);
        writer.start += 1;
        writer
    }

    fn with(file: &'a std::fs::File, direct: bool) -> Self {
        let memory = vec![0u8; crate::limits::SNAPSHOT_WRITE_CHUNK_BYTES + DIRECT_BLOCK_BYTES];
        let start = memory.as_ptr().align_offset(DIRECT_BLOCK_BYTES);
        ChunkedWriter { file, direct, memory, start, filled: 0, offset: 0, first_block: Vec::new(), stop: None }
    }

    fn stopped_by(self, stop: &'a AtomicBool) -> Self {
        ChunkedWriter { stop: Some(stop), ..self }
    }

    fn chunk(&mut self) -> &mut [u8] {
        &mut self.memory[self.start..self.start + crate::limits::SNAPSHOT_WRITE_CHUNK_BYTES]
    }

    /// Writes the chunk's first `filled` bytes (direct: zero-padded to
    /// whole blocks, the padding cut off by `finish`).
    fn write_chunk(&mut self) -> std::io::Result<()> {
        // Not ErrorKind::Interrupted, which write_all retries.
        if self.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            return Err(std::io::Error::other(StopRequested));
        }
        let (filled, offset) = (self.filled, self.offset);
        let length = if self.direct { filled.next_multiple_of(DIRECT_BLOCK_BYTES) } else { filled };
        self.chunk()[filled..length].fill(0);
        if offset == 0 {
            self.first_block = self.chunk()[..DIRECT_BLOCK_BYTES].to_vec();
        }
        self.write_at(length, offset)?;
        self.offset += filled as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes the chunk's first `length` bytes at `offset`, and waits for
    /// them to reach the disk. Direct I/O refused here (EINVAL: alignment
    /// the device needs beyond `DIRECT_BLOCK_BYTES`) is given up for the
    /// rest of the file, and the write made buffered.
    fn write_at(&mut self, length: usize, offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let bytes = &self.memory[self.start..self.start + length];
        if self.direct {
            match self.file.write_all_at(bytes, offset) {
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(%error, "direct I/O refused; writing this file buffered");
                    set_direct(self.file, false);
                    self.direct = false;
                }
                result => return result,
            }
        }
        self.file.write_all_at(bytes, offset)?;
        flush_range(self.file, offset as usize, length)
    }

    /// Writes what is buffered, then `header` (if any) over the file's
    /// first bytes; returns the file's length.
    fn finish(mut self, header: &[u8]) -> std::io::Result<u64> {
        if self.filled > 0 {
            self.write_chunk()?;
        }
        let length = self.offset;
        if header.len() > length as usize {
            return Err(std::io::Error::other("a header longer than the file"));
        }
        if !header.is_empty() {
            let mut block = std::mem::take(&mut self.first_block);
            block[..header.len()].copy_from_slice(header);
            self.chunk()[..DIRECT_BLOCK_BYTES].copy_from_slice(&block);
            let written = if self.direct { DIRECT_BLOCK_BYTES } else { header.len() };
            self.write_at(written, 0)?;
        }
        // Cut the last block's padding (direct writes are whole blocks).
        self.file.set_len(length)?;
        Ok(length)
    }
}

/// Turns direct I/O on or off for `file`; false if refused (tmpfs).
fn set_direct(file: &std::fs::File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own, changing only its O_DIRECT status flag.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        flags >= 0 && libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags) == 0
    }
}

impl std::io::Write for ChunkedWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let filled = self.filled;
        let room = crate::limits::SNAPSHOT_WRITE_CHUNK_BYTES - filled;
        let taken = room.min(bytes.len());
        self.chunk()[filled..filled + taken].copy_from_slice(&bytes[..taken]);
        self.filled += taken;
        if self.filled == crate::limits::SNAPSHOT_WRITE_CHUNK_BYTES {
            self.write_chunk()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts writeback of a byte range and waits for it (sync_file_range), so a
/// large file reaches the disk steadily instead of in one burst.
fn flush_range(file: &std::fs::File, offset: usize, length: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain syscall on an open file descriptor we own.
    let result = unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, length as i64, flags) };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn sync_directory(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Appends batches to the current segment with direct I/O. Each batch is a
/// whole number of blocks written at a block-aligned offset, then fdatasync'd
/// (unless forceSync=no). Segments are preallocated in `prealloc_bytes` steps,
/// and kept written with zeros `LOG_ZERO_AHEAD_BYTES` ahead of the last
/// batch (see there), one chunk at a time in a task of its own.
pub struct LogWriter {
    dir: PathBuf,
    /// Shared with the fdatasyncs in flight (`write`) and the zero fill.
    file: std::rc::Rc<DmaFile>,
    path: PathBuf,
    offset: u64,
    allocated: u64,
    /// Everything below this is written (batches or zeros).
    zeroed: u64,
    /// The chunk being zeroed, never below `offset`: a batch reaching into
    /// it waits for it, and the segment is not rolled or closed under it.
    zero_fill: Option<ZeroFill>,
    prealloc_bytes: u64,
    force_sync: bool,
    /// Fault injection for tests: appends fail once this many batch bytes
    /// were written, as a full or failing disk would make them fail.
    fail_after_bytes: Option<u64>,
    appended_bytes: u64,
    /// For tests: each zero fill waits this long before it writes, so that
    /// batches are written while it is pending.
    zero_fill_delay: Option<std::time::Duration>,
}

/// Zeros being written to `start..end` of the segment.
struct ZeroFill {
    start: u64,
    end: u64,
    /// Raised by the task when it is done (a failure it logs itself).
    done: std::rc::Rc<std::cell::Cell<bool>>,
    task: glommio::Task<()>,
}

impl LogWriter {
    pub async fn create(dir: &Path, first_zxid: i64, prealloc_bytes: u64, force_sync: bool) -> std::io::Result<LogWriter> {
        let path = dir.join(segment_file_name(first_zxid));
        let file = DmaFile::create(&path).await.map_err(|error| std::io::Error::other(format!("{}: {error}", path.display())))?;
        let prealloc_bytes = prealloc_bytes.max(BLOCK_BYTES as u64).div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64;
        let mut writer = LogWriter {
            dir: dir.to_owned(),
            file: std::rc::Rc::new(file),
            path,
            offset: 0,
            allocated: 0,
            zeroed: 0,
            zero_fill: None,
            prealloc_bytes,
            force_sync,
            fail_after_bytes: None,
            appended_bytes: 0,
            zero_fill_delay: None,
        };
        writer.ensure_allocated(BLOCK_BYTES as u64).await?;
        writer.write_blocks(&encode_segment_header(first_zxid)).await?;
        writer.file.fdatasync().await.map_err(io_error)?;
        // The new name must survive a crash too.
        sync_directory(&writer.dir)?;
        tracing::info!(file = %writer.path.display(), "new log segment");
        Ok(writer)
    }

    async fn ensure_allocated(&mut self, end: u64) -> std::io::Result<()> {
        while end > self.allocated {
            let target = self.allocated + self.prealloc_bytes;
            self.file.pre_allocate(target, false).await.map_err(io_error)?;
            self.allocated = target;
        }
        Ok(())
    }

    async fn write_blocks(&mut self, blocks: &[u8]) -> std::io::Result<()> {
        assert_eq!(blocks.len() % BLOCK_BYTES, 0, "log writes are whole blocks");
        let end = self.offset + blocks.len() as u64;
        self.ensure_allocated(end).await?;
        // Zeros landing after the batch would erase it: wait for a fill
        // that reaches into the batch's blocks.
        if self.zero_fill.as_ref().is_some_and(|fill| end > fill.start) {
            self.finish_zero_fill().await;
        }
        let mut buffer = self.file.alloc_dma_buffer(blocks.len());
        buffer.as_bytes_mut().copy_from_slice(blocks);
        let written = self.file.write_at(buffer, self.offset).await.map_err(io_error)?;
        if written != blocks.len() {
            return Err(std::io::Error::other(format!("short log write: {written} of {} bytes", blocks.len())));
        }
        self.offset = end;
        self.zeroed = self.zeroed.max(end);
        if blocks.len() as u64 > crate::limits::LOG_ZERO_FILL_BATCH_MAX_BYTES {
            // A log this busy syncs many txns at once: each sync's journal
            // commit is spread over them, and zeros would only add writes.
            return Ok(());
        }
        self.zero_ahead().await
    }

    /// Starts zeroing the next chunk if the last fill is done and less than
    /// `LOG_ZERO_AHEAD_BYTES` past the last batch is zeroed.
    async fn zero_ahead(&mut self) -> std::io::Result<()> {
        if self.zero_fill.as_ref().is_some_and(|fill| fill.done.get()) {
            self.finish_zero_fill().await;
        }
        let target = self.offset + crate::limits::LOG_ZERO_AHEAD_BYTES;
        if self.zero_fill.is_some() || self.zeroed >= target {
            return Ok(());
        }
        let (start, end) = (self.zeroed, (self.zeroed + crate::limits::LOG_ZERO_FILL_CHUNK_BYTES).min(target));
        self.ensure_allocated(end).await?;
        let file = self.file.clone();
        let delay = self.zero_fill_delay;
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let finished = done.clone();
        let task = glommio::spawn_local(async move {
            if let Some(delay) = delay {
                glommio::timer::sleep(delay).await;
            }
            let length = (end - start) as usize;
            let mut zeros = file.alloc_dma_buffer(length);
            zeros.as_bytes_mut().fill(0);
            let result = match file.write_at(zeros, start).await {
                Ok(written) if written == length => Ok(()),
                Ok(written) => Err(glommio::GlommioError::IoError(std::io::Error::other(format!("short write: {written} of {length} bytes")))),
                Err(error) => Err(error),
            };
            if let Err(error) = &result {
                // Only speed is lost: batches go on into unwritten blocks.
                tracing::warn!(%error, start, end, "cannot write zeros ahead in the log segment");
            }
            finished.set(true);
        });
        self.zero_fill = Some(ZeroFill { start, end, done, task });
        Ok(())
    }

    /// Waits for the zero fill in flight, if any.
    async fn finish_zero_fill(&mut self) {
        if let Some(fill) = self.zero_fill.take() {
            fill.task.await;
            // A chunk that failed is not retried: batches write into it
            // unzeroed, as into any preallocated space.
            self.zeroed = self.zeroed.max(fill.end);
        }
    }

    /// The zero fill in flight, for the caller to await before it truncates,
    /// replaces or reopens this segment's file, so that no zeros land in it
    /// afterwards. The writer forgets the fill (it may zero that chunk again).
    pub fn take_zero_fill(&mut self) -> Option<glommio::Task<()>> {
        self.zero_fill.take().map(|fill| fill.task)
    }

    pub fn set_fail_after_bytes(&mut self, limit: Option<u64>) {
        self.fail_after_bytes = limit;
    }

    /// Writes one finished batch and makes it durable.
    pub async fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        self.write(batch).await?.await
    }

    /// Writes one finished batch and starts the fdatasync that makes it, and
    /// every batch written before it, durable; the next batch may be written
    /// while that sync runs. Await the returned sync before treating the
    /// batch as durable; completions come in any order, so a caller that
    /// acknowledges in order awaits them in order. Overlapping syncs let the
    /// kernel fold a sync into one already flushing (on the 2-core test VM,
    /// four writers' fdatasyncs on one file complete several times faster
    /// than one writer's back to back), so a batch no longer waits for the
    /// previous one's sync before its own write.
    pub async fn write(&mut self, batch: &[u8]) -> std::io::Result<PendingSync> {
        if self.fail_after_bytes.is_some_and(|limit| self.appended_bytes + batch.len() as u64 > limit) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.appended_bytes += batch.len() as u64;
        self.write_blocks(batch).await?;
        if !self.force_sync {
            return Ok(PendingSync(None));
        }
        let file = self.file.clone();
        Ok(PendingSync(Some(glommio::spawn_local(async move { file.fdatasync().await.map_err(io_error) }))))
    }

    /// Closes this segment and starts `log.<first_zxid>`.
    pub async fn roll(mut self, first_zxid: i64) -> std::io::Result<LogWriter> {
        // Zeros written after the truncation would grow the file again.
        self.finish_zero_fill().await;
        // Give back this segment's unused preallocation: every snapshot rolls
        // the log, and a segment kept at its preallocated size costs up to
        // preAllocSize of disk for every snapshot interval (at snapCount 2
        // the crash tests held tens of GB). What is left reads as zeros
        // either way, so this needs no sync of its own.
        self.file.truncate(self.offset).await.map_err(io_error)?;
        let LogWriter { dir, file, prealloc_bytes, force_sync, fail_after_bytes, appended_bytes, zero_fill_delay, .. } = self;
        // Callers roll only once every sync of this segment completed; a
        // finished sync task may still hold its clone until it is dropped.
        if let Ok(file) = std::rc::Rc::try_unwrap(file) {
            file.close().await.map_err(io_error)?;
        }
        let mut next = LogWriter::create(&dir, first_zxid, prealloc_bytes, force_sync).await?;
        next.fail_after_bytes = fail_after_bytes;
        next.appended_bytes = appended_bytes;
        next.zero_fill_delay = zero_fill_delay;
        Ok(next)
    }
}

/// An fdatasync in flight (`LogWriter::write`); awaiting it gives its result.
pub struct PendingSync(Option<glommio::Task<std::io::Result<()>>>);

impl std::future::Future for PendingSync {
    type Output = std::io::Result<()>;
    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.0.as_mut() {
            None => std::task::Poll::Ready(Ok(())),
            Some(task) => std::pin::Pin::new(task).poll(context),
        }
    }
}

fn io_error(error: glommio::GlommioError<()>) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

#[cfg(test)]
mod tests;
