//! Disk I/O for durability: recovery at start-up, the direct-I/O log writer
//! (group commit), snapshot files and retention. The formats and every
//! decision about them are in `storage`; this file only moves bytes.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::io::DmaFile;

use crate::storage::log::{encode_segment_header, parse_segment_file_name, segment_file_name, BLOCK_BYTES};
use crate::storage::recovery::{recover, Listing, Recovered};
use crate::storage::snapshot::{decode_snapshot, encode_snapshot, parse_snapshot_file_name, snapshot_file_name};
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
        let listing = self.list().map_err(|error| format!("cannot list the data directories: {error}"))?;
        recover(
            &listing,
            |name| std::fs::read(self.path_of(name)).map(Bytes::from).map_err(|error| error.to_string()),
            |bytes| decode_snapshot(bytes).map_err(|error| error.to_string()),
        )
        .map_err(|error| {
            let path = self.path_of(&error.file);
            format!("{}: offset {}: {}", path.display(), error.offset, error.reason)
        })
    }

    /// Recovery at start-up: also cuts a torn tail and writes the first
    /// snapshot of a fresh directory, so a log always has a snapshot to follow.
    pub fn recover_for_start(&self) -> Result<Recovered, String> {
        self.create().map_err(|error| format!("cannot create the data directories: {error}"))?;
        let recovered = self.recover()?;
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
            self.write_snapshot(&recovered.tree).map_err(|error| format!("cannot write the first snapshot: {error}"))?;
        }
        Ok(recovered)
    }

    /// The secret session passwords derive from: read from `secret` in the
    /// snapshot directory, or made with `generate` and stored (atomically,
    /// fsynced) on the first start, so sessions survive restarts.
    pub fn password_secret(&self, generate: impl FnOnce() -> u64) -> std::io::Result<u64> {
        use std::io::Write;
        let path = self.snapshot_dir.join("secret");
        match std::fs::read_to_string(&path) {
            Ok(text) => u64::from_str_radix(text.trim(), 16)
                .map_err(|error| std::io::Error::other(format!("{}: not a secret: {error}", path.display()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let secret = generate();
                let temporary = self.snapshot_dir.join("secret.tmp");
                let mut file = std::fs::File::create(&temporary)?;
                writeln!(file, "{secret:016x}")?;
                file.sync_all()?;
                std::fs::rename(&temporary, &path)?;
                sync_directory(&self.snapshot_dir)?;
                Ok(secret)
            }
            Err(error) => Err(error),
        }
    }

    /// Writes `snapshot.<zxid>` atomically: a temporary file, fsync, rename, fsync the directory.
    pub fn write_snapshot(&self, tree: &DataTree) -> std::io::Result<(PathBuf, usize)> {
        use std::io::Write;
        let bytes = encode_snapshot(tree);
        let name = snapshot_file_name(tree.last_processed_zxid());
        let path = self.snapshot_dir.join(&name);
        let temporary = self.snapshot_dir.join(format!("{name}.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        // Written and flushed a chunk at a time: one 200 MB burst of dirty
        // pages flushed at the end would stall the log's fdatasync behind it.
        let mut offset = 0;
        for chunk in bytes.chunks(crate::limits::SNAPSHOT_WRITE_CHUNK_BYTES) {
            file.write_all(chunk)?;
            flush_range(&file, offset, chunk.len())?;
            offset += chunk.len();
        }
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        sync_directory(&self.snapshot_dir)?;
        Ok((path, bytes.len()))
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
/// (unless forceSync=no). Segments are preallocated in `prealloc_bytes` steps.
pub struct LogWriter {
    dir: PathBuf,
    file: DmaFile,
    path: PathBuf,
    offset: u64,
    allocated: u64,
    prealloc_bytes: u64,
    force_sync: bool,
    /// Fault injection for tests: appends fail once this many batch bytes
    /// were written, as a full or failing disk would make them fail.
    fail_after_bytes: Option<u64>,
    appended_bytes: u64,
}

impl LogWriter {
    pub async fn create(dir: &Path, first_zxid: i64, prealloc_bytes: u64, force_sync: bool) -> std::io::Result<LogWriter> {
        let path = dir.join(segment_file_name(first_zxid));
        let file = DmaFile::create(&path).await.map_err(|error| std::io::Error::other(format!("{}: {error}", path.display())))?;
        let prealloc_bytes = prealloc_bytes.max(BLOCK_BYTES as u64).div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64;
        let mut writer = LogWriter {
            dir: dir.to_owned(),
            file,
            path,
            offset: 0,
            allocated: 0,
            prealloc_bytes,
            force_sync,
            fail_after_bytes: None,
            appended_bytes: 0,
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
        self.ensure_allocated(self.offset + blocks.len() as u64).await?;
        let mut buffer = self.file.alloc_dma_buffer(blocks.len());
        buffer.as_bytes_mut().copy_from_slice(blocks);
        let written = self.file.write_at(buffer, self.offset).await.map_err(io_error)?;
        if written != blocks.len() {
            return Err(std::io::Error::other(format!("short log write: {written} of {} bytes", blocks.len())));
        }
        self.offset += blocks.len() as u64;
        Ok(())
    }

    pub fn set_fail_after_bytes(&mut self, limit: Option<u64>) {
        self.fail_after_bytes = limit;
    }

    /// Writes one finished batch and makes it durable.
    pub async fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        if self.fail_after_bytes.is_some_and(|limit| self.appended_bytes + batch.len() as u64 > limit) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.appended_bytes += batch.len() as u64;
        self.write_blocks(batch).await?;
        if self.force_sync {
            self.file.fdatasync().await.map_err(io_error)?;
        }
        Ok(())
    }

    /// Closes this segment and starts `log.<first_zxid>`.
    pub async fn roll(self, first_zxid: i64) -> std::io::Result<LogWriter> {
        let LogWriter { dir, file, prealloc_bytes, force_sync, fail_after_bytes, appended_bytes, .. } = self;
        file.close().await.map_err(io_error)?;
        let mut next = LogWriter::create(&dir, first_zxid, prealloc_bytes, force_sync).await?;
        next.fail_after_bytes = fail_after_bytes;
        next.appended_bytes = appended_bytes;
        Ok(next)
    }
}

fn io_error(error: glommio::GlommioError<()>) -> std::io::Error {
    std::io::Error::other(error.to_string())
}
