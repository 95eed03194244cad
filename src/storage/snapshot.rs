//! Snapshots: the whole DataTree at one zxid, as a zero-copy rkyv archive.
//! Pure: the runtime reads and writes files, this module only turns a tree
//! into bytes and bytes back into a tree.
//!
//! A snapshot file `snapshot.<zxid in hex>` (ZooKeeper's naming) is a fixed
//! 64-byte header followed by the rkyv payload:
//!
//! | offset | size | field                                         |
//! |--------|------|-----------------------------------------------|
//! | 0      | 8    | magic `WARDSNAP`                              |
//! | 8      | 4    | format version (big-endian u32)               |
//! | 12     | 8    | zxid the snapshot was taken at (BE i64)       |
//! | 20     | 8    | payload length (BE u64)                       |
//! | 28     | 4    | CRC32 of the payload (BE u32)                 |
//! | 32     | 4    | CRC32 of bytes 0..32 (BE u32)                 |
//! | 36     | 28   | zeros, so the payload starts 64-byte aligned  |
//!
//! The payload holds a de-duplicated ACL table (ZooKeeper's ACL cache: most
//! znodes share a handful of lists, each node stores an index), every znode's
//! path, data (null kept distinct from empty), ACL index and persisted Stat,
//! and the live sessions. Nodes are in no particular order (the tree's hash
//! order): restore derives children itself and needs none.
//!
//! Decoding checks everything before using anything: magic, version, header
//! CRC, length, payload CRC, then rkyv's validation (bytecheck), then the
//! tree's own invariants in `DataTree::restore`. The archive is read in place:
//! each node's data is a `Bytes` slice of the input buffer, not a copy (so the
//! snapshot buffer lives as long as any node still holds restored data).

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashMap;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::with::{InlineAsBox, Map};
use rkyv::{Archive, Serialize};

use crate::proto::{Acl, Id};
use crate::tree::{DataTree, StatPersisted};
use crate::txn::ephemeral_owner;

const MAGIC: &[u8; 8] = b"WARDSNAP";
const FORMAT_VERSION: u32 = 1;
/// Header size; also the payload's offset, a multiple of the payload alignment.
pub const HEADER_BYTES: usize = 64;
/// The alignment the payload needs in memory: rkyv's archived i64s need 8,
/// rkyv's `AlignedVec` gives 16; we ask for 16 like `AlignedVec`.
const PAYLOAD_ALIGN: usize = 16;
const HEADER_CRC_AT: usize = 32;
/// What `stream_snapshot` gathers before checksumming and passing it on.
const STREAM_BUFFER_BYTES: usize = 64 * 1024;
const FILE_PREFIX: &str = "snapshot.";

const _: () = assert!(HEADER_BYTES.is_multiple_of(PAYLOAD_ALIGN));
const _: () = assert!(PAYLOAD_ALIGN == AlignedVec::<PAYLOAD_ALIGN>::ALIGNMENT);

/// Why a snapshot could not be read: where (a byte offset in the file) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotError {
    pub offset: u64,
    pub reason: String,
}

impl SnapshotError {
    fn new(offset: usize, reason: impl Into<String>) -> SnapshotError {
        SnapshotError { offset: offset as u64, reason: reason.into() }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad snapshot at offset {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for SnapshotError {}

pub fn snapshot_file_name(zxid: i64) -> String {
    format!("{FILE_PREFIX}{zxid:x}")
}

pub fn parse_snapshot_file_name(name: &str) -> Option<i64> {
    let hex = name.strip_prefix(FILE_PREFIX)?;
    // from_str_radix accepts a sign; a file name never has one.
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|zxid| zxid as i64)
}

// The archive. The same types serialize (borrowing from the live tree, so
// encoding copies nothing but into the output) and are read in place
// (`Archived*`); nothing is ever deserialized into these structs.

#[derive(Archive, Serialize)]
struct AclRecord<'a> {
    perms: i32,
    #[rkyv(with = InlineAsBox)]
    scheme: &'a str,
    #[rkyv(with = InlineAsBox)]
    id: &'a str,
}

#[derive(Archive, Serialize)]
struct StatRecord {
    czxid: i64,
    mzxid: i64,
    ctime: i64,
    mtime: i64,
    ephemeral_owner: i64,
    pzxid: i64,
    version: i32,
    cversion: i32,
    aversion: i32,
}

#[derive(Archive, Serialize)]
struct NodeRecord<'a> {
    #[rkyv(with = InlineAsBox)]
    path: &'a str,
    /// None is ZooKeeper's null data, distinct from empty.
    #[rkyv(with = Map<InlineAsBox>)]
    data: Option<&'a [u8]>,
    /// An index into `SnapshotPayload::acls`.
    acl: u32,
    stat: StatRecord,
}

#[derive(Archive, Serialize)]
struct SessionRecord {
    session_id: i64,
    timeout_ms: i32,
}

#[derive(Archive, Serialize)]
struct SnapshotPayload<'a> {
    acls: Vec<Vec<AclRecord<'a>>>,
    nodes: Vec<NodeRecord<'a>>,
    sessions: Vec<SessionRecord>,
}

impl From<&StatPersisted> for StatRecord {
    fn from(stat: &StatPersisted) -> StatRecord {
        StatRecord {
            czxid: stat.czxid,
            mzxid: stat.mzxid,
            ctime: stat.ctime,
            mtime: stat.mtime,
            ephemeral_owner: stat.ephemeral_owner,
            pzxid: stat.pzxid,
            version: stat.version,
            cversion: stat.cversion,
            aversion: stat.aversion,
        }
    }
}

impl ArchivedStatRecord {
    fn to_stat(&self) -> StatPersisted {
        StatPersisted {
            czxid: self.czxid.to_native(),
            mzxid: self.mzxid.to_native(),
            ctime: self.ctime.to_native(),
            mtime: self.mtime.to_native(),
            version: self.version.to_native(),
            cversion: self.cversion.to_native(),
            aversion: self.aversion.to_native(),
            ephemeral_owner: self.ephemeral_owner.to_native(),
            pzxid: self.pzxid.to_native(),
        }
    }
}

/// The snapshot of `tree` at `tree.last_processed_zxid()`: header + payload,
/// ready to write.
pub fn encode_snapshot(tree: &DataTree) -> Vec<u8> {
    // Serialize straight after a placeholder header: rkyv aligns relative to
    // the writer's position, and HEADER_BYTES is a multiple of the payload
    // alignment, so the payload is laid out as if it started at 0.
    let mut out = Vec::with_capacity(HEADER_BYTES + tree.data_bytes() as usize + tree.node_count() * 128);
    out.resize(HEADER_BYTES, 0);
    let mut out = serialize_payload::<_, rancor::Error>(tree, out).expect("serializing into a Vec cannot fail");
    fill_header(&mut out, tree.last_processed_zxid());
    out
}

/// The same bytes as `encode_snapshot`, written to `sink` as they are
/// serialized instead of held in memory whole (a 1M-znode snapshot is about
/// 200 MB with 100-byte values). The header comes first in the file but depends on the whole
/// payload, so `sink` gets zeros in its place, and the header to write over
/// the file's first `HEADER_BYTES` is returned.
pub fn stream_snapshot<S: std::io::Write>(tree: &DataTree, mut sink: S) -> std::io::Result<(S, [u8; HEADER_BYTES])> {
    sink.write_all(&[0u8; HEADER_BYTES])?;
    // rkyv writes each path, value and record on its own: checksummed and
    // passed on one by one, the small writes cost more than the encoding.
    let buffered = std::io::BufWriter::with_capacity(STREAM_BUFFER_BYTES, ChecksummedWriter::new(sink));
    let writer = rkyv::ser::writer::IoWriter::with_pos(buffered, HEADER_BYTES);
    let writer = serialize_payload::<_, rancor::Error>(tree, writer).map_err(std::io::Error::other)?;
    let ChecksummedWriter { inner, crc, bytes } = writer.into_inner().into_inner().map_err(|error| error.into_error())?;
    Ok((inner, header(tree.last_processed_zxid(), bytes, crc.finalize())))
}

/// Passes bytes on, keeping their CRC-32 and count.
struct ChecksummedWriter<S> {
    inner: S,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<S> ChecksummedWriter<S> {
    fn new(inner: S) -> Self {
        ChecksummedWriter { inner, crc: crc32fast::Hasher::new(), bytes: 0 }
    }
}

impl<S: std::io::Write> std::io::Write for ChecksummedWriter<S> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.crc.update(&bytes[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Serializes the snapshot payload of `tree` into `writer`.
fn serialize_payload<W, E>(tree: &DataTree, writer: W) -> Result<W, E>
where
    W: rkyv::ser::Writer<E>,
    E: rancor::Source,
{
    // Nodes go in the tree's (hash) order: restore needs no order, and
    // sorting 1M paths would add ~0.3 s to the encode (describe sorts).
    let nodes = tree.iter_nodes();

    // The tree interns ACL lists, so the Arc's address identifies a list; the
    // content map catches equal lists that are not shared.
    let mut acls: Vec<Vec<AclRecord<'_>>> = Vec::new();
    let mut by_address: HashMap<*const Acl, u32> = HashMap::new();
    let mut by_content: HashMap<&[Acl], u32> = HashMap::new();
    let mut records = Vec::with_capacity(tree.node_count());
    for (path, node) in nodes {
        let address = node.acl.as_ptr();
        let acl = match by_address.get(&address) {
            Some(&index) => index,
            None => {
                let index = *by_content.entry(&node.acl[..]).or_insert_with(|| {
                    acls.push(
                        node.acl
                            .iter()
                            .map(|acl| AclRecord { perms: acl.perms, scheme: &acl.id.scheme, id: &acl.id.id })
                            .collect(),
                    );
                    (acls.len() - 1) as u32
                });
                by_address.insert(address, index);
                index
            }
        };
        records.push(NodeRecord { path, data: node.data.as_deref(), acl, stat: StatRecord::from(&node.stat) });
    }
    let mut sessions: Vec<SessionRecord> = tree
        .sessions()
        .iter()
        .map(|(&session_id, &timeout_ms)| SessionRecord { session_id, timeout_ms })
        .collect();
    sessions.sort_unstable_by_key(|session| session.session_id);
    let payload = SnapshotPayload { acls, nodes: records, sessions };
    rkyv::api::high::to_bytes_in::<_, E>(&payload, writer)
}

/// Writes the header into the first `HEADER_BYTES` of `file`, describing the
/// payload that follows it.
fn fill_header(file: &mut [u8], zxid: i64) {
    let payload = &file[HEADER_BYTES..];
    let header = header(zxid, payload.len() as u64, crc32fast::hash(payload));
    file[..HEADER_BYTES].copy_from_slice(&header);
}

/// The header of a snapshot at `zxid` whose payload has this length and CRC.
fn header(zxid: i64, payload_bytes: u64, payload_crc: u32) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    header[12..20].copy_from_slice(&zxid.to_be_bytes());
    header[20..28].copy_from_slice(&payload_bytes.to_be_bytes());
    header[28..32].copy_from_slice(&payload_crc.to_be_bytes());
    let header_crc = crc32fast::hash(&header[..HEADER_CRC_AT]);
    header[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&header_crc.to_be_bytes());
    header
}

/// A snapshot file around an arbitrary payload, with a valid header: lets
/// `crate::fuzzing` reach rkyv's validation and the tree's restore without
/// the fuzzer having to forge checksums.
pub(crate) fn with_header(zxid: i64, payload: &[u8]) -> Vec<u8> {
    let mut file = vec![0u8; HEADER_BYTES + payload.len()];
    file[HEADER_BYTES..].copy_from_slice(payload);
    fill_header(&mut file, zxid);
    file
}

struct Header {
    zxid: i64,
    payload_bytes: u64,
    payload_crc: u32,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn read_header(bytes: &[u8]) -> Result<Header, SnapshotError> {
    if bytes.len() < HEADER_BYTES {
        return Err(SnapshotError::new(
            bytes.len(),
            format!("truncated header: {} of {HEADER_BYTES} bytes", bytes.len()),
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err(SnapshotError::new(0, "not a warden snapshot (bad magic)"));
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::new(8, format!("unsupported snapshot format version {version}")));
    }
    let stored = read_u32(bytes, HEADER_CRC_AT);
    let computed = crc32fast::hash(&bytes[..HEADER_CRC_AT]);
    if stored != computed {
        return Err(SnapshotError::new(
            HEADER_CRC_AT,
            format!("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        ));
    }
    if let Some(at) = bytes[HEADER_CRC_AT + 4..HEADER_BYTES].iter().position(|&b| b != 0) {
        return Err(SnapshotError::new(HEADER_CRC_AT + 4 + at, "nonzero header padding"));
    }
    Ok(Header { zxid: read_u64(bytes, 12) as i64, payload_bytes: read_u64(bytes, 20), payload_crc: read_u32(bytes, 28) })
}

/// The zxid a snapshot was taken at, from its header alone (the payload is
/// not checked: `decode_snapshot` does that).
pub fn snapshot_zxid(bytes: &[u8]) -> Result<i64, SnapshotError> {
    read_header(bytes).map(|header| header.zxid)
}

/// A snapshot whose header, length and payload CRC are checked, in an
/// aligned buffer; `archive` validates and reads the payload in place.
struct Validated {
    zxid: i64,
    payload_bytes: usize,
    bytes: Bytes,
}

impl Validated {
    fn check(bytes: Bytes) -> Result<Validated, SnapshotError> {
        let header = read_header(&bytes)?;
        let end = (HEADER_BYTES as u64).checked_add(header.payload_bytes).filter(|&end| end <= usize::MAX as u64);
        let file_bytes = bytes.len() as u64;
        match end {
            Some(end) if end > file_bytes => {
                return Err(SnapshotError::new(
                    bytes.len(),
                    format!("truncated: the payload ends at offset {end} but the file ends at {file_bytes}"),
                ))
            }
            Some(end) if end < file_bytes => {
                return Err(SnapshotError::new(
                    end as usize,
                    format!("{} bytes of trailing data after the payload", file_bytes - end),
                ))
            }
            Some(_) => {}
            None => {
                return Err(SnapshotError::new(20, format!("impossible payload length {}", header.payload_bytes)))
            }
        }
        let computed = crc32fast::hash(&bytes[HEADER_BYTES..]);
        if computed != header.payload_crc {
            return Err(SnapshotError::new(
                HEADER_BYTES,
                format!("payload checksum mismatch (stored {:#010x}, computed {computed:#010x})", header.payload_crc),
            ));
        }
        // rkyv reads the archive in place and needs it aligned. A buffer read
        // from a file into a Vec (malloc) already is; any other is copied once
        // into an AlignedVec, whose Bytes then backs the restored nodes' data.
        let bytes = if (bytes.as_ptr() as usize).is_multiple_of(PAYLOAD_ALIGN) {
            bytes
        } else {
            let mut aligned = AlignedVec::<PAYLOAD_ALIGN>::with_capacity(bytes.len());
            aligned.extend_from_slice(&bytes);
            Bytes::from_owner(aligned)
        };
        Ok(Validated { zxid: header.zxid, payload_bytes: header.payload_bytes as usize, bytes })
    }

    fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_BYTES..HEADER_BYTES + self.payload_bytes]
    }

    /// The archive, checked by bytecheck (every pointer, length and string in
    /// bounds and well-formed) and for ACL indexes in range.
    fn archive(&self) -> Result<&ArchivedSnapshotPayload<'static>, SnapshotError> {
        let archive = rkyv::access::<ArchivedSnapshotPayload<'static>, rancor::Error>(self.payload())
            .map_err(|err| SnapshotError::new(HEADER_BYTES, format!("invalid archive: {err}")))?;
        let acl_lists = archive.acls.len();
        if let Some(node) = archive.nodes.iter().find(|node| node.acl.to_native() as usize >= acl_lists) {
            return Err(SnapshotError::new(
                self.offset_of(node.path.as_ptr()),
                format!("node {:?} names ACL list {} of {acl_lists}", &*node.path, node.acl.to_native()),
            ));
        }
        Ok(archive)
    }

    /// Where in the file a part of the archive is.
    fn offset_of(&self, ptr: *const u8) -> usize {
        (ptr as usize).wrapping_sub(self.bytes.as_ptr() as usize)
    }
}

fn acl_list(records: &[ArchivedAclRecord<'static>]) -> Vec<Acl> {
    records
        .iter()
        .map(|acl| Acl {
            perms: acl.perms.to_native(),
            id: Id { scheme: acl.scheme.get().to_owned(), id: acl.id.get().to_owned() },
        })
        .collect()
}

/// Validates `bytes` as a snapshot and rebuilds its tree. Node data are
/// slices of `bytes`, not copies.
pub fn decode_snapshot(bytes: Bytes) -> Result<DataTree, SnapshotError> {
    let validated = Validated::check(bytes)?;
    let archive = validated.archive()?;
    // Each list once, shared by every node naming it (see DataTree::restore).
    let acls: Vec<Arc<[Acl]>> = archive.acls.iter().map(|list| acl_list(list).into()).collect();
    let nodes = archive.nodes.iter().map(|node| {
        let data = node.data.as_ref().map(|data| validated.bytes.slice_ref(data.get()));
        let acl = acls[node.acl.to_native() as usize].clone();
        (node.path.get().to_owned(), data, acl, node.stat.to_stat())
    });
    let sessions = archive.sessions.iter().map(|session| (session.session_id.to_native(), session.timeout_ms.to_native()));
    DataTree::restore(validated.zxid, nodes, sessions)
        .map_err(|reason| SnapshotError::new(HEADER_BYTES, format!("not a valid tree: {reason}")))
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
fn format_time(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = crate::calendar::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// A human-readable dump, after ZooKeeper's SnapshotFormatter: a header line,
/// each znode sorted by path with its Stat, then the sessions with their
/// ephemeral counts. Validates like `decode_snapshot`, reads the archive in
/// place.
pub fn describe_snapshot(bytes: Bytes) -> Result<String, SnapshotError> {
    let validated = Validated::check(bytes)?;
    let archive = validated.archive()?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Snapshot: format version {FORMAT_VERSION}, zxid 0x{:x}, {} payload bytes, {} znodes, {} ACL lists, {} sessions",
        validated.zxid,
        validated.payload_bytes,
        archive.nodes.len(),
        archive.acls.len(),
        archive.sessions.len()
    );
    let _ = writeln!(out, "ZNode Details (count={}):", archive.nodes.len());
    // Encoded sorted already; sort anyway so any valid archive prints sorted.
    let mut nodes: Vec<&ArchivedNodeRecord<'static>> = archive.nodes.iter().collect();
    nodes.sort_by(|a, b| a.path.get().cmp(b.path.get()));
    let mut ephemeral_counts: HashMap<i64, usize> = HashMap::new();
    for node in nodes {
        let stat = node.stat.to_stat();
        if ephemeral_owner::is_session(stat.ephemeral_owner) {
            *ephemeral_counts.entry(stat.ephemeral_owner).or_default() += 1;
        }
        let data_length = node.data.as_ref().map_or(0, |data| data.get().len());
        let _ = write!(
            out,
            "----\n{}\n  cZxid = 0x{:x}\n  ctime = {}\n  mZxid = 0x{:x}\n  mtime = {}\n  pZxid = 0x{:x}\n  \
             cversion = {}\n  dataVersion = {}\n  aclVersion = {}\n  ephemeralOwner = 0x{:x}\n  dataLength = {}\n",
            node.path.get(),
            stat.czxid,
            format_time(stat.ctime),
            stat.mzxid,
            format_time(stat.mtime),
            stat.pzxid,
            stat.cversion,
            stat.version,
            stat.aversion,
            stat.ephemeral_owner,
            data_length,
        );
    }
    let _ = writeln!(out, "----\nSession Details (sid, timeout, ephemeralCount):");
    let mut sessions: Vec<(i64, i32)> =
        archive.sessions.iter().map(|s| (s.session_id.to_native(), s.timeout_ms.to_native())).collect();
    sessions.sort_unstable();
    for (session_id, timeout_ms) in sessions {
        let count = ephemeral_counts.get(&session_id).copied().unwrap_or(0);
        let _ = writeln!(out, "0x{session_id:x}, {timeout_ms}, {count}");
    }
    let _ = writeln!(out, "----\nLast zxid: 0x{:x}", validated.zxid);
    Ok(out)
}

#[cfg(test)]
mod tests;
