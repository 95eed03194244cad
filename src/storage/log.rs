//! The transaction log's on-disk format. A log is a sequence of segment files
//! `log.<first zxid in hex>` (ZooKeeper's naming). Each segment starts with a
//! header block, then holds batches. A batch is one group commit: a header
//! (magic, payload length, record count, CRC32 of the payload, first and last
//! zxid) followed by records, padded with zeros to the block size. Each batch
//! starts on a fresh block, so a write never rewrites a block holding
//! acknowledged data: a torn write can only damage the batch being written.
//! Each record carries its length, a CRC32 and its zxid.
//!
//! Preallocated space reads as zeros, so a zero batch magic is the end of the
//! log. Recovery distinguishes a torn tail (the last batch is damaged and no
//! valid batch follows it) from corruption (damage with a valid batch after
//! it), which must stop the server rather than silently drop data
//! (ZOOKEEPER-2325).

use bytes::Bytes;

use super::txn_codec::{decode_txn, encode_txn};
use crate::proto::jute::{Reader, Writer};
use crate::txn::Txn;

/// Direct I/O alignment and the unit batches are padded to.
pub const BLOCK_BYTES: usize = 4096;
/// The largest batch (one write, one fdatasync); a bigger txn cannot exist
/// because a frame is bounded by jute.maxbuffer, far below this.
pub const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Txns in one batch.
pub const BATCH_RECORDS_MAX: usize = 16 * 1024;

// The layout constants are visible to the crate so that `crate::fuzzing`
// can repair checksums in mutated segments and reach the record decoder.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"WARDENLG";
const SEGMENT_VERSION: u32 = 1;
pub(crate) const BATCH_MAGIC: u32 = 0x5742_4154; // "WBAT"
pub(crate) const BATCH_HEADER_BYTES: usize = 32;
pub(crate) const RECORD_HEADER_BYTES: usize = 16;

const _: () = assert!(BATCH_BYTES_MAX.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(BATCH_HEADER_BYTES + RECORD_HEADER_BYTES < BLOCK_BYTES);

pub fn segment_file_name(first_zxid: i64) -> String {
    format!("log.{first_zxid:x}")
}

pub fn parse_segment_file_name(name: &str) -> Option<i64> {
    i64::from_str_radix(name.strip_prefix("log.")?, 16).ok()
}

/// The header block of a segment.
pub fn encode_segment_header(first_zxid: i64) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_BYTES];
    block[..8].copy_from_slice(SEGMENT_MAGIC);
    block[8..12].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
    block[12..20].copy_from_slice(&first_zxid.to_be_bytes());
    let crc = crc32fast::hash(&block[..20]);
    block[20..24].copy_from_slice(&crc.to_be_bytes());
    block
}

/// Whether `zxid` may come right after `previous` in a log: the next counter
/// of the same epoch, or the first txn of a later epoch (a new leader's
/// first proposal is (epoch, 1); epochs may skip numbers).
pub fn follows(previous: i64, zxid: i64) -> bool {
    let (epoch, counter) = ((zxid as u64) >> 32, zxid as u64 as u32);
    zxid == previous + 1 || (epoch > (previous as u64) >> 32 && counter == 1)
}

/// Builds one batch: records appended in zxid order, then `finish` pads it.
/// A batch may cross an epoch boundary: a learner synced by DIFF logs the
/// old epoch's tail and the new leader's first proposals together.
pub struct BatchEncoder {
    buffer: Vec<u8>,
    records: u32,
    first_zxid: i64,
    last_zxid: i64,
    scratch: Writer,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        BatchEncoder::new()
    }
}

impl BatchEncoder {
    pub fn new() -> BatchEncoder {
        let mut buffer = Vec::with_capacity(64 * 1024);
        buffer.resize(BATCH_HEADER_BYTES, 0);
        BatchEncoder { buffer, records: 0, first_zxid: 0, last_zxid: 0, scratch: Writer::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn record_count(&self) -> usize {
        self.records as usize
    }

    /// Bytes the batch takes so far, before padding.
    pub fn len_bytes(&self) -> usize {
        self.buffer.len()
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// Whether `push` of a txn of about `bytes` would pass a batch limit.
    pub fn is_full(&self) -> bool {
        self.records as usize >= BATCH_RECORDS_MAX || self.buffer.len() >= BATCH_BYTES_MAX / 2
    }

    pub fn push(&mut self, txn: &Txn) {
        assert!(self.records == 0 || follows(self.last_zxid, txn.zxid), "zxid {:#x} does not follow {:#x}", txn.zxid, self.last_zxid);
        self.scratch.buffer.clear();
        encode_txn(txn, &mut self.scratch);
        let payload = &self.scratch.buffer;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&txn.zxid.to_be_bytes());
        hasher.update(payload);
        self.buffer.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.buffer.extend_from_slice(&hasher.finalize().to_be_bytes());
        self.buffer.extend_from_slice(&txn.zxid.to_be_bytes());
        self.buffer.extend_from_slice(payload);
        if self.records == 0 {
            self.first_zxid = txn.zxid;
        }
        self.last_zxid = txn.zxid;
        self.records += 1;
    }

    /// Fills in the header and pads to the block size; the slice is what to write.
    pub fn finish(&mut self) -> &[u8] {
        let payload_bytes = self.buffer.len() - BATCH_HEADER_BYTES;
        let crc = crc32fast::hash(&self.buffer[BATCH_HEADER_BYTES..]);
        let mut header = [0u8; BATCH_HEADER_BYTES];
        header[0..4].copy_from_slice(&BATCH_MAGIC.to_be_bytes());
        header[4..8].copy_from_slice(&(payload_bytes as u32).to_be_bytes());
        header[8..12].copy_from_slice(&self.records.to_be_bytes());
        header[12..16].copy_from_slice(&crc.to_be_bytes());
        header[16..24].copy_from_slice(&self.first_zxid.to_be_bytes());
        header[24..32].copy_from_slice(&self.last_zxid.to_be_bytes());
        self.buffer[..BATCH_HEADER_BYTES].copy_from_slice(&header);
        let padded = self.buffer.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        self.buffer.resize(padded, 0);
        &self.buffer
    }

    pub fn clear(&mut self) {
        self.buffer.clear();
        self.buffer.resize(BATCH_HEADER_BYTES, 0);
        self.records = 0;
    }
}

/// A txn read back from the log, with where it was.
#[derive(Debug, Clone)]
pub struct LoggedTxn {
    pub txn: Txn,
    pub offset: u64,
}

/// How a segment's readable part ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Zeros (preallocated space) or the end of the file after the last batch.
    Clean { offset: u64 },
    /// The last batch is damaged and nothing follows it: cut the log here.
    TornTail { offset: u64, reason: String },
    /// Damage followed by more data: never drop it silently.
    Corrupt { offset: u64, reason: String },
}

#[derive(Debug, Clone)]
pub struct SegmentScan {
    pub first_zxid: i64,
    pub txns: Vec<LoggedTxn>,
    pub end: SegmentEnd,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(array)
}

/// Reads a whole segment. Err if the header itself is not a segment header.
pub fn scan_segment(bytes: &Bytes) -> Result<SegmentScan, String> {
    if bytes.len() < BLOCK_BYTES || &bytes[..8] != SEGMENT_MAGIC {
        return Err("not a warden log segment (bad header magic)".into());
    }
    if read_u32(bytes, 8) != SEGMENT_VERSION {
        return Err(format!("unsupported log version {}", read_u32(bytes, 8)));
    }
    if read_u32(bytes, 20) != crc32fast::hash(&bytes[..20]) {
        return Err("segment header checksum mismatch".into());
    }
    let first_zxid = read_i64(bytes, 12);
    let mut txns = Vec::new();
    let mut offset = BLOCK_BYTES;
    let end = loop {
        if offset + BATCH_HEADER_BYTES > bytes.len() {
            break SegmentEnd::Clean { offset: offset as u64 };
        }
        let magic = read_u32(bytes, offset);
        if magic == 0 {
            // The end of the written log, unless a damaged batch header hides
            // a batch that was (partly) written after it.
            break match first_nonzero(bytes, offset) {
                None => SegmentEnd::Clean { offset: offset as u64 },
                Some(at) => damaged(bytes, offset, format!("zero batch header but data at offset {at}")),
            };
        }
        let payload_bytes = read_u32(bytes, offset + 4) as usize;
        let record_count = read_u32(bytes, offset + 8) as usize;
        let crc = read_u32(bytes, offset + 12);
        let batch_end = offset + BATCH_HEADER_BYTES + payload_bytes;
        if magic != BATCH_MAGIC || payload_bytes > BATCH_BYTES_MAX || batch_end > bytes.len() {
            break damaged(bytes, offset, "bad batch header".into());
        }
        let payload = &bytes[offset + BATCH_HEADER_BYTES..batch_end];
        if crc32fast::hash(payload) != crc {
            break damaged(bytes, offset, "batch checksum mismatch".into());
        }
        // The batch checksum passed: any inconsistency inside is corruption
        // written by us, not a torn write.
        match decode_records(bytes, offset + BATCH_HEADER_BYTES, batch_end, record_count) {
            Ok(mut batch) => txns.append(&mut batch),
            Err(reason) => break SegmentEnd::Corrupt { offset: offset as u64, reason },
        }
        offset = batch_end.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    };
    Ok(SegmentScan { first_zxid, txns, end })
}

/// A damaged batch at `offset` is a torn tail only if no valid batch follows
/// it. Group commit writes the next batch only after the previous one is
/// synced, so a crash can leave at most one batch partly written: the last.
/// Valid data after the damage means the damage is not a torn write.
fn damaged(bytes: &[u8], offset: usize, reason: String) -> SegmentEnd {
    match valid_batch_after(bytes, offset) {
        None => SegmentEnd::TornTail { offset: offset as u64, reason },
        Some(at) => SegmentEnd::Corrupt { offset: offset as u64, reason: format!("{reason}; a valid batch follows at offset {at}") },
    }
}

/// The first block-aligned offset after `offset` holding a batch whose
/// header and checksum are valid.
fn valid_batch_after(bytes: &[u8], offset: usize) -> Option<usize> {
    let mut at = (offset / BLOCK_BYTES + 1) * BLOCK_BYTES;
    while at + BATCH_HEADER_BYTES <= bytes.len() {
        if read_u32(bytes, at) == BATCH_MAGIC {
            let payload_bytes = read_u32(bytes, at + 4) as usize;
            let end = at + BATCH_HEADER_BYTES + payload_bytes;
            if payload_bytes <= BATCH_BYTES_MAX
                && end <= bytes.len()
                && crc32fast::hash(&bytes[at + BATCH_HEADER_BYTES..end]) == read_u32(bytes, at + 12)
            {
                return Some(at);
            }
        }
        at += BLOCK_BYTES;
    }
    None
}

fn first_nonzero(bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from.min(bytes.len())..].iter().position(|byte| *byte != 0).map(|index| from + index)
}

fn decode_records(bytes: &Bytes, mut at: usize, end: usize, record_count: usize) -> Result<Vec<LoggedTxn>, String> {
    let mut txns = Vec::with_capacity(record_count.min((end - at) / RECORD_HEADER_BYTES + 1));
    for _ in 0..record_count {
        if at + RECORD_HEADER_BYTES > end {
            return Err(format!("record header past batch end at offset {at}"));
        }
        let length = read_u32(bytes, at) as usize;
        let crc = read_u32(bytes, at + 4);
        let zxid = read_i64(bytes, at + 8);
        let payload_start = at + RECORD_HEADER_BYTES;
        if payload_start + length > end {
            return Err(format!("record length {length} past batch end at offset {at}"));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&zxid.to_be_bytes());
        hasher.update(&bytes[payload_start..payload_start + length]);
        if hasher.finalize() != crc {
            return Err(format!("record checksum mismatch at offset {at}"));
        }
        let mut reader = Reader::new(bytes.slice(payload_start..payload_start + length));
        let txn = decode_txn(&mut reader).map_err(|error| format!("undecodable record at offset {at}: {error}"))?;
        if txn.zxid != zxid {
            return Err(format!("record zxid {zxid:#x} disagrees with its txn {:#x} at offset {at}", txn.zxid));
        }
        txns.push(LoggedTxn { txn, offset: at as u64 });
        at = payload_start + length;
    }
    if at != end {
        return Err(format!("{} bytes after the last record of the batch", end - at));
    }
    Ok(txns)
}

/// What cutting a segment after zxid `to` does to its bytes (ZAB's TRUNC,
/// and the log cut before a snapshot from the leader is installed). The
/// runtime carries it out; the decision is made here, without files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatePlan {
    /// Where the file is cut: the start of the first batch holding a zxid
    /// above `to`, or, when there is none, where the valid data ends.
    pub cut_offset: u64,
    /// The records at or below `to` of the batch that straddles `to`,
    /// re-encoded as one new batch to write at `cut_offset`.
    pub rewrite: Option<Vec<u8>>,
    /// Records the segment keeps, and the zxid of the last of them.
    pub records_kept: usize,
    pub last_zxid_kept: Option<i64>,
    pub records_removed: usize,
    /// Damage the cut removes: a torn tail, or corruption after the record
    /// at `to` (which can only have held zxids above `to`).
    pub damage_removed: Option<String>,
}

impl TruncatePlan {
    /// Whether the plan leaves the file as it is.
    pub fn is_noop(&self) -> bool {
        self.records_removed == 0 && self.damage_removed.is_none()
    }

    /// The segment's length once the plan is carried out.
    pub fn length_after(&self) -> u64 {
        self.cut_offset + self.rewrite.as_ref().map_or(0, |batch| batch.len() as u64)
    }

    /// The segment's bytes once the plan is carried out.
    pub fn apply(&self, bytes: &Bytes) -> Bytes {
        let cut = (self.cut_offset as usize).min(bytes.len());
        match &self.rewrite {
            None => bytes.slice(..cut),
            Some(batch) => {
                let mut after = Vec::with_capacity(cut + batch.len());
                after.extend_from_slice(&bytes[..cut]);
                after.extend_from_slice(batch);
                Bytes::from(after)
            }
        }
    }
}

/// Plans removing every record above `to` from one segment. A batch is
/// never edited in place: the file is cut at the start of the first batch
/// holding a zxid above `to`, and that batch's records at or below `to` are
/// written again after the cut as a new batch. Damage after the last record
/// kept is removed with it: a torn tail always (it was never acknowledged),
/// corruption only when a record at or above `to` precedes it, because
/// otherwise the damaged bytes may have held records the state at `to` needs.
pub fn plan_truncate(bytes: &Bytes, to: i64) -> Result<TruncatePlan, String> {
    let scan = scan_segment(bytes)?;
    if let Some(pair) = scan.txns.windows(2).find(|pair| pair[1].txn.zxid <= pair[0].txn.zxid) {
        return Err(format!("zxid {:#x} does not follow {:#x} at offset {}", pair[1].txn.zxid, pair[0].txn.zxid, pair[1].offset));
    }
    let (data_end, damage, corrupt) = match &scan.end {
        SegmentEnd::Clean { offset } => (*offset, None, false),
        SegmentEnd::TornTail { offset, reason } => (*offset, Some(format!("torn tail at offset {offset}: {reason}")), false),
        SegmentEnd::Corrupt { offset, reason } => (*offset, Some(format!("corruption at offset {offset}: {reason}")), true),
    };
    let total = scan.txns.len();
    let mut next_txn = 0;
    let mut offset = BLOCK_BYTES;
    while (offset as u64) < data_end && offset < bytes.len() {
        let batch_end = padded_batch_end(bytes, offset)?;
        let batch_first_txn = next_txn;
        while next_txn < total && scan.txns[next_txn].offset < batch_end as u64 {
            next_txn += 1;
        }
        let batch = &scan.txns[batch_first_txn..next_txn];
        if batch.iter().all(|logged| logged.txn.zxid <= to) {
            offset = batch_end;
            continue;
        }
        // The first batch reaching above `to`: cut at its start, keep its head.
        let kept = batch.iter().take_while(|logged| logged.txn.zxid <= to).count();
        let rewrite = if kept == 0 {
            None
        } else {
            let mut encoder = BatchEncoder::new();
            for pair in batch[..kept].windows(2) {
                if !follows(pair[0].txn.zxid, pair[1].txn.zxid) {
                    return Err(format!("zxid gap inside the batch at offset {offset}: {:#x} after {:#x}", pair[1].txn.zxid, pair[0].txn.zxid));
                }
            }
            for logged in &batch[..kept] {
                encoder.push(&logged.txn);
            }
            Some(encoder.finish().to_vec())
        };
        let records_kept = batch_first_txn + kept;
        return Ok(TruncatePlan {
            cut_offset: offset as u64,
            rewrite,
            records_kept,
            last_zxid_kept: records_kept.checked_sub(1).map(|index| scan.txns[index].txn.zxid),
            records_removed: total - records_kept,
            damage_removed: damage,
        });
    }
    if next_txn != total {
        return Err(format!("record at offset {} lies outside every batch", scan.txns[next_txn].offset));
    }
    // No record above `to`: only damage after the data can go.
    let last_zxid_kept = scan.txns.last().map(|logged| logged.txn.zxid);
    if corrupt && last_zxid_kept != Some(to) {
        let last = last_zxid_kept.map_or("no record".to_owned(), |zxid| format!("the last valid record is {zxid:#x}"));
        return Err(format!("{} before zxid {to:#x} ({last}): records the state at {to:#x} needs may be lost", damage.unwrap_or_default()));
    }
    Ok(TruncatePlan { cut_offset: data_end, rewrite: None, records_kept: total, last_zxid_kept, records_removed: 0, damage_removed: damage })
}

/// Where the batch at `offset` ends, padded to the block size. Only called
/// on batches `scan_segment` validated; the bounds are checked anyway.
fn padded_batch_end(bytes: &[u8], offset: usize) -> Result<usize, String> {
    if offset + BATCH_HEADER_BYTES > bytes.len() || read_u32(bytes, offset) != BATCH_MAGIC {
        return Err(format!("no batch header at offset {offset}"));
    }
    let end = offset + BATCH_HEADER_BYTES + read_u32(bytes, offset + 4) as usize;
    if end > bytes.len() {
        return Err(format!("batch at offset {offset} runs past the end of the file"));
    }
    Ok(end.div_ceil(BLOCK_BYTES) * BLOCK_BYTES)
}

/// One txn as a readable line (ZooKeeper's LogFormatter prints the same facts).
pub fn describe_txn(txn: &Txn) -> String {
    use crate::txn::TxnBody;
    fn describe_body(body: &TxnBody) -> String {
        let data = |data: &Option<Bytes>| match data {
            None => "null".to_owned(),
            Some(bytes) => format!("#{}", bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>()),
        };
        match body {
            TxnBody::CreateSession { timeout_ms } => format!("createSession timeout={timeout_ms}"),
            TxnBody::CloseSession => "closeSession".into(),
            TxnBody::Create(create) => format!(
                "create path={} data={} acl={:?} ephemeralOwner={:#x} parentCVersion={}",
                create.path,
                data(&create.data),
                create.acl.iter().map(|acl| format!("{}:{}:{}", acl.id.scheme, acl.id.id, acl.perms)).collect::<Vec<_>>(),
                create.ephemeral_owner,
                create.parent_cversion
            ),
            TxnBody::Delete { path } => format!("delete path={path}"),
            TxnBody::SetData { path, data: value, version } => format!("setData path={path} data={} version={version}", data(value)),
            TxnBody::SetAcl { path, acl, version } => format!("setACL path={path} acl={} version={version}", acl.len()),
            TxnBody::Check { path } => format!("check path={path}"),
            TxnBody::Multi(bodies) => format!("multi [{}]", bodies.iter().map(describe_body).collect::<Vec<_>>().join("; ")),
            TxnBody::Error { err } => format!("error {err:?} ({})", err.code()),
        }
    }
    format!(
        "zxid {:#x} time {} session {:#x} cxid {:#x} {}",
        txn.zxid,
        txn.time_ms,
        txn.session_id,
        txn.cxid,
        describe_body(&txn.body)
    )
}

/// A whole segment as text: header, one line per txn, how it ends.
pub fn describe_segment(bytes: &Bytes) -> Result<String, String> {
    let scan = scan_segment(bytes)?;
    let mut out = format!("warden transaction log segment, format version {SEGMENT_VERSION}, first zxid {:#x}\n", scan.first_zxid);
    for logged in &scan.txns {
        out.push_str(&format!("@{} {}\n", logged.offset, describe_txn(&logged.txn)));
    }
    out.push_str(&format!("{} txns; end: {:?}\n", scan.txns.len(), scan.end));
    Ok(out)
}

#[cfg(test)]
mod tests;
