//! Fuzz target bodies, shared by the cargo-fuzz crate in `fuzz/` (libFuzzer
//! drives them with coverage feedback) and by the test suite
//! (`tests/fuzz_corpus.rs` replays the seed corpus and every past crash, and
//! mutates the seeds briefly; `tests/fuzz_decoders.rs` uses the mutator).
//! Test support, not used by the server.
//!
//! Each target takes arbitrary bytes, feeds them to decoders that read
//! input from sockets or files, and panics when a property fails: a decoder
//! panicked, what decoded does not encode back to what was read, or decoding
//! allocated more than a constant factor of its input (measured by
//! [`CountingAllocator`], which the caller installs as its global allocator;
//! without it the allocation checks see zero and pass). Hangs are the
//! caller's to catch (libFuzzer's `-timeout`, the test's clock): this module
//! is pure like everything outside the runtime, so it has no clock.
//!
//! Targets whose input is checksummed (log segments, snapshots) have modes,
//! picked by the first byte, that repair or add the checksums: otherwise
//! nearly every mutation would stop at the CRC and the decoders behind it
//! would never be reached.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;

use bytes::{Bytes, BytesMut};

use crate::limits;
use crate::proto::codes::op;
use crate::proto::frame::FrameDecoder;
use crate::proto::jute::{Jute, Reader};
use crate::proto::records::RequestError;
use crate::proto::*;
use crate::rng::Rng;
use crate::storage::log::{self, plan_truncate, scan_segment, SegmentEnd, SegmentScan};
use crate::storage::recovery::{recover, Listing};
use crate::storage::snapshot::{self, decode_snapshot, describe_snapshot};
use crate::storage::txn_codec::{decode_txn, txn_to_bytes};
use crate::tree::DataTree;
use crate::zab::wire;

/// A fuzz target: its name (the cargo-fuzz binary and the corpus directory
/// under `fuzz/corpus/` and `fuzz/regressions/`) and its body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target. `fuzz/fuzz_targets/<name>.rs` exists for each.
pub const TARGETS: &[Target] = &[
    Target { name: "frame", run: frame },
    Target { name: "jute_records", run: jute_records },
    Target { name: "log_records", run: log_records },
    Target { name: "snapshot", run: snapshot },
    Target { name: "peer_messages", run: peer_messages },
];

// ---------------------------------------------------------------------------
// Allocation accounting.

/// A global allocator that counts the bytes each thread allocates. Install
/// it in the binary that runs the targets:
/// `#[global_allocator] static ALLOCATOR: CountingAllocator = CountingAllocator;`
pub struct CountingAllocator;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count_allocation(bytes: usize) {
    // try_with: the allocator runs while thread-locals are being torn down.
    let _ = ALLOCATED.try_with(|allocated| allocated.set(allocated.get().wrapping_add(bytes)));
}

// SAFETY: every method forwards to the system allocator unchanged; counting
// touches only a thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Bytes the current thread has allocated so far (0 forever without
/// [`CountingAllocator`] installed).
pub fn allocated() -> usize {
    ALLOCATED.with(Cell::get)
}

/// Whether [`CountingAllocator`] is the global allocator: a harness asserts
/// this once, so that the allocation checks cannot pass vacuously.
pub fn allocation_counted() -> bool {
    let before = allocated();
    let probe = std::hint::black_box(vec![0u8; 64]);
    drop(probe);
    allocated() != before
}

/// Runs `f`, returning its result and the bytes it allocated.
pub fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = allocated();
    let value = f();
    (value, allocated().wrapping_sub(before))
}

/// The most a decoder may allocate for `input_len` bytes: decoded values are
/// larger than their encodings (a 9-byte multi result becomes a ~100-byte
/// enum, a path becomes a String and a map key, vectors double as they
/// grow), but only by a constant factor.
pub fn allocation_budget(input_len: usize) -> usize {
    64 * input_len + 64 * 1024
}

fn check_allocation(what: &str, input_len: usize, allocated: usize) {
    let budget = allocation_budget(input_len);
    assert!(allocated <= budget, "{what}: {input_len} input bytes allocated {allocated} bytes (budget {budget})");
}

// ---------------------------------------------------------------------------
// The mutator (also used by tests/fuzz_decoders.rs).

const INTERESTING_I32: &[i32] = &[-1, -2, 0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fff_ffff, i32::MIN, 0x1000_0000, 0x0010_0000];

/// One to four random edits of `input`, the kinds that break decoders: bit
/// flips, truncation, a length field forced huge, negative or off by one,
/// insertion, deletion, splicing with `donor`, duplication, noise.
pub fn mutate(rng: &mut Rng, input: &[u8], donor: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(10) {
            // Bit flips.
            0 => {
                for _ in 0..1 + rng.below(4) {
                    if !bytes.is_empty() {
                        let index = rng.index(bytes.len());
                        bytes[index] ^= 1 << rng.below(8);
                    }
                }
            }
            // An interesting byte.
            1 => {
                if !bytes.is_empty() {
                    let index = rng.index(bytes.len());
                    bytes[index] = *rng.pick(&[0x00, 0xff, 0x7f, 0x80, 0x01, b'/', 0xc3]);
                }
            }
            // Truncation.
            2 => {
                let keep = rng.index(bytes.len() + 1);
                bytes.truncate(keep);
            }
            // A length field (any 4 bytes) forced huge, negative or off by one.
            3 | 4 => {
                if bytes.len() >= 4 {
                    let at = rng.index(bytes.len() - 3);
                    let current = i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
                    let value = match rng.below(4) {
                        0 => current.wrapping_add(1),
                        1 => current.wrapping_sub(1),
                        2 => (bytes.len() - at) as i32,
                        _ => *rng.pick(INTERESTING_I32),
                    };
                    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
                }
            }
            // Insertion.
            5 => {
                let at = rng.index(bytes.len() + 1);
                let inserted = {
                    let count = 1 + rng.index(8);
                    rng.bytes(count)
                };
                bytes.splice(at..at, inserted);
            }
            // Deletion.
            6 => {
                if !bytes.is_empty() {
                    let at = rng.index(bytes.len());
                    let count = 1 + rng.index((bytes.len() - at).min(8));
                    bytes.drain(at..at + count);
                }
            }
            // Splice with another encoding.
            7 => {
                let cut = rng.index(bytes.len() + 1);
                let from = rng.index(donor.len() + 1);
                bytes.truncate(cut);
                bytes.extend_from_slice(&donor[from..]);
            }
            // Duplicate a chunk.
            8 => {
                if !bytes.is_empty() {
                    let at = rng.index(bytes.len());
                    let count = 1 + rng.index((bytes.len() - at).min(16));
                    let chunk = bytes[at..at + count].to_vec();
                    let to = rng.index(bytes.len() + 1);
                    bytes.splice(to..to, chunk);
                }
            }
            // Replace with noise.
            _ => {
                if rng.one_in(4) {
                    bytes = rng.bytes_upto(64);
                } else if !bytes.is_empty() {
                    let at = rng.index(bytes.len());
                    let count = 1 + rng.index((bytes.len() - at).min(8));
                    for byte in &mut bytes[at..at + count] {
                        *byte = rng.next_u64() as u8;
                    }
                }
            }
        }
    }
    bytes
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A number from the environment (decimal or 0x-hex, `_` allowed), for the
/// seeds and budgets of seeded test runs; a value that is not a number
/// fails loudly rather than running something else than asked.
pub fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text} is not a number")))
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message.to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Splits `stream` into chunks of random sizes (the way a socket delivers
/// it), from a seed the input itself chose.
fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut rng = Rng::new(seed as u64);
    // Mostly small reads, sometimes everything at once.
    let chunk_max = *rng.pick(&[1usize, 3, 16, 256, usize::MAX]);
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < stream.len() {
        let length = 1 + rng.index((stream.len() - offset).min(chunk_max));
        out.push(&stream[offset..offset + length]);
        offset += length;
    }
    out
}

// ---------------------------------------------------------------------------
// frame: a client connection's byte stream, as runtime::connection reads it.

/// The server's frame limit: jute.maxbuffer (default 1048575) plus header
/// room, as `runtime::connection` builds its FrameDecoder.
const SERVER_FRAME_BYTES_MAX: usize = 1_048_575 + 1024;

/// What splitting frames off a read buffer may allocate in all: room for one
/// whole frame (bounded by the limit), the buffer doubling as it grows, and,
/// once per read, the shared header `bytes` allocates when a frame is split
/// off a buffer that the read had to reallocate. Linear in the bytes read.
fn split_budget(frame_bytes_max: usize, fed: usize, reads: usize) -> usize {
    const SHARED_HEADER_BYTES_PER_READ: usize = 64;
    2 * (frame_bytes_max + 4 + fed) + SHARED_HEADER_BYTES_PER_READ * reads + 16 * 1024
}

/// `data[0]` picks the frame limit and how the stream is split into reads;
/// the rest is what a client sent. The first four bytes may be a
/// four-letter word; otherwise frames follow, the first a ConnectRequest and
/// every later one a RequestHeader and a request, decoded as the connection
/// does.
pub fn frame(data: &[u8]) {
    let Some((&config, stream)) = data.split_first() else { return };
    let frame_bytes_max = [64, 4096, SERVER_FRAME_BYTES_MAX][config as usize % 3];
    if let Some(first_four) = stream.first_chunk::<4>() {
        if crate::fourlw::is_four_letter_word(first_four).is_some() {
            return;
        }
    }
    let mut decoder = FrameDecoder::new(frame_bytes_max);
    let mut fed = 0;
    let mut reads = 0;
    let mut yielded = 0;
    let mut decoder_allocated = 0;
    let mut frames = Vec::new();
    'reads: for chunk in chunks(stream, config) {
        decoder.buffer_mut().extend_from_slice(chunk);
        fed += chunk.len();
        reads += 1;
        loop {
            let (next, allocated) = measured(|| decoder.next_frame());
            decoder_allocated += allocated;
            match next {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= frame_bytes_max, "a frame of {} bytes above the limit {frame_bytes_max}", frame.len());
                    yielded += 4 + frame.len();
                    assert!(yielded <= fed, "the decoder yielded {yielded} bytes from {fed} fed");
                    frames.push(frame);
                }
                Ok(None) => break,
                // A bad length closes the connection: nothing after it is read.
                Err(_) => break 'reads,
            }
        }
    }
    let budget = split_budget(frame_bytes_max, fed, reads);
    assert!(decoder_allocated <= budget, "FrameDecoder allocated {decoder_allocated} bytes for {fed} (limit {frame_bytes_max})");
    let mut frames = frames.into_iter();
    if let Some(first) = frames.next() {
        connect_request(&first);
    }
    for frame in frames {
        request_frame(&frame);
    }
}

fn connect_request(frame: &Bytes) {
    let (decoded, allocated) = measured(|| ConnectRequest::decode(frame.clone()));
    check_allocation("ConnectRequest", frame.len(), allocated);
    let Ok(request) = decoded else { return };
    let mut writer = Writer::new();
    request.encode(&mut writer);
    let encoded = writer.into_bytes();
    // Bytes after the optional readOnly byte are ignored, as ZooKeeper does.
    assert!(encoded.len() <= frame.len(), "ConnectRequest re-encodes longer than its frame");
    assert_eq!(ConnectRequest::decode(encoded), Ok(request), "ConnectRequest: decode(encode(x)) != x");
}

/// A request frame after the handshake: header, then the body by opcode
/// (auth packets through their own decoder, as the connection does).
fn request_frame(frame: &Bytes) {
    let mut reader = Reader::new(frame.clone());
    let (header, allocated) = measured(|| RequestHeader::decode(&mut reader));
    check_allocation("RequestHeader", frame.len(), allocated);
    let Ok(header) = header else { return };
    let body = reader.rest();
    if header.opcode == op::AUTH {
        jute_round_trip::<AuthPacket>(&body);
    } else {
        request(header.opcode, &body);
    }
}

// ---------------------------------------------------------------------------
// jute_records: every record of the client protocol and the txn encoding.

/// Decodes `body` as `T`; what decodes must re-encode to exactly as many
/// bytes as were read, and decode again to the same value. (Not always to
/// the same bytes: a bool reads any nonzero byte as true and a null string
/// reads as empty, as ZooKeeper's jute does.)
fn jute_round_trip<T: Jute + PartialEq + Debug>(body: &Bytes) {
    let name = std::any::type_name::<T>();
    let mut reader = Reader::new(body.clone());
    let (decoded, allocated) = measured(|| T::decode(&mut reader));
    check_allocation(name, body.len(), allocated);
    let Ok(value) = decoded else { return };
    let consumed = reader.position();
    assert!(consumed <= body.len(), "{name}: read {consumed} of {} bytes", body.len());
    let encoded = value.encode_to_bytes();
    assert_eq!(encoded.len(), consumed, "{name}: {value:?} re-encodes to {} bytes but decoding read {consumed}", encoded.len());
    match T::decode_from(encoded.clone()) {
        Ok(again) => assert_eq!(again, value, "{name}: decode(encode(x)) != x"),
        Err(error) => panic!("{name}: the re-encoding {} does not decode: {error}", hex(&encoded)),
    }
}

/// A request body for `opcode`, with the server's multi limit.
fn request(opcode: i32, body: &Bytes) {
    let mut reader = Reader::new(body.clone());
    let (decoded, allocated) = measured(|| Request::decode(opcode, &mut reader, limits::MULTI_OPS_MAX));
    check_allocation("Request", body.len(), allocated);
    let request = match decoded {
        Ok(request) => request,
        Err(RequestError::UnknownOpcode(unknown)) => {
            assert_eq!(unknown, opcode);
            assert!(!REQUEST_OPCODES.contains(&opcode), "opcode {opcode} ({}) refused as unknown", op::name(opcode));
            return;
        }
        Err(RequestError::Decode(_)) => return,
    };
    assert!(REQUEST_OPCODES.contains(&opcode), "unlisted opcode {opcode} decoded: add it to REQUEST_OPCODES");
    assert_eq!(request.opcode(), opcode, "the decoded request answers another opcode");
    if let Request::Multi(multi) | Request::MultiRead(multi) = &request {
        assert!(multi.ops.len() <= limits::MULTI_OPS_MAX, "a multi of {} ops decoded", multi.ops.len());
    }
    let consumed = reader.position();
    let mut writer = Writer::new();
    request.encode(&mut writer);
    let encoded = writer.into_bytes();
    assert_eq!(encoded.len(), consumed, "{request:?} re-encodes to {} bytes but decoding read {consumed}", encoded.len());
    let mut again = Reader::new(encoded.clone());
    match Request::decode(opcode, &mut again, limits::MULTI_OPS_MAX) {
        Ok(redecoded) => assert_eq!(redecoded, request, "Request: decode(encode(x)) != x"),
        Err(error) => panic!("the re-encoded request {} does not decode: {error:?}", hex(&encoded)),
    }
}

fn multi_request(body: &Bytes) {
    let mut reader = Reader::new(body.clone());
    let (decoded, allocated) = measured(|| MultiRequest::decode(&mut reader, limits::MULTI_OPS_MAX));
    check_allocation("MultiRequest", body.len(), allocated);
    let Ok(multi) = decoded else { return };
    let consumed = reader.position();
    let mut writer = Writer::new();
    multi.encode(&mut writer);
    let encoded = writer.into_bytes();
    assert_eq!(encoded.len(), consumed, "MultiRequest re-encodes to {} bytes but decoding read {consumed}", encoded.len());
    let again = MultiRequest::decode(&mut Reader::new(encoded), limits::MULTI_OPS_MAX);
    assert_eq!(again, Ok(multi), "MultiRequest: decode(encode(x)) != x");
}

fn multi_response(body: &Bytes) {
    let mut reader = Reader::new(body.clone());
    let (decoded, allocated) = measured(|| MultiResponse::decode(&mut reader));
    check_allocation("MultiResponse", body.len(), allocated);
    let Ok(response) = decoded else { return };
    let consumed = reader.position();
    let mut writer = Writer::new();
    response.encode(&mut writer);
    let encoded = writer.into_bytes();
    assert_eq!(encoded.len(), consumed, "MultiResponse re-encodes to {} bytes but decoding read {consumed}", encoded.len());
    assert_eq!(MultiResponse::decode(&mut Reader::new(encoded)), Ok(response), "MultiResponse: decode(encode(x)) != x");
}

fn connect_response(body: &Bytes) {
    let (decoded, allocated) = measured(|| ConnectResponse::decode(body.clone()));
    check_allocation("ConnectResponse", body.len(), allocated);
    let Ok(response) = decoded else { return };
    let mut writer = Writer::new();
    response.encode(&mut writer);
    let encoded = writer.into_bytes();
    assert!(encoded.len() <= body.len(), "ConnectResponse re-encodes longer than its frame");
    assert_eq!(ConnectResponse::decode(encoded), Ok(response), "ConnectResponse: decode(encode(x)) != x");
}

/// A txn as the log and the peer protocol carry it.
fn txn(body: &Bytes) {
    let mut reader = Reader::new(body.clone());
    let (decoded, allocated) = measured(|| decode_txn(&mut reader));
    check_allocation("Txn", body.len(), allocated);
    let Ok(txn) = decoded else { return };
    let encoded = txn_to_bytes(&txn);
    assert_eq!(encoded.len(), reader.position(), "Txn re-encodes to {} bytes but decoding read {}", encoded.len(), reader.position());
    assert_eq!(decode_txn(&mut Reader::new(encoded)), Ok(txn), "Txn: decode(encode(x)) != x");
}

/// A record kind of `jute_records`: its name and its check.
pub struct RecordKind {
    pub name: &'static str,
    pub check: fn(&Bytes),
}

/// Declares `RECORD_KINDS` and `REQUEST_OPCODES` from one list.
macro_rules! record_kinds {
    (records: [$($record:ident),* $(,)?], other: [$($other:expr),* $(,)?], requests: [$($opcode:ident),* $(,)?] $(,)?) => {
        /// Every opcode `Request::decode` knows. The `request` check asserts
        /// that exactly these decode, so a new request kind cannot be left out.
        pub const REQUEST_OPCODES: &[i32] = &[$(op::$opcode),*];

        /// Every jute record in `proto::records` (`tests/fuzz_corpus.rs`
        /// checks that none is missing), the hand-written records and the
        /// txn, then a request body for every opcode (so the fuzzer need not
        /// find opcodes). `jute_records` picks one by its first byte, so this
        /// order is part of the corpus format: append, never insert.
        pub const RECORD_KINDS: &[RecordKind] = &[
            $(RecordKind { name: stringify!($record), check: jute_round_trip::<$record> },)*
            $($other,)*
            $(RecordKind { name: concat!("Request ", stringify!($opcode)), check: |body| request(op::$opcode, body) },)*
        ];
    };
}

record_kinds! {
    records: [
        Id, Acl, Stat, ClientInfo, RequestHeader, ReplyHeader, MultiHeader, WatcherEvent, AuthPacket,
        CreateRequest, CreateTtlRequest, DeleteRequest, PathWatchRequest, SetDataRequest, PathRequest,
        SetAclRequest, CheckVersionRequest, WatchTypeRequest, AddWatchRequest, SetWatches, SetWatches2,
        ReconfigRequest, StatResponse, PathResponse, Create2Response, GetDataResponse, GetChildrenResponse,
        GetChildren2Response, GetAclResponse, IntResponse, StringsResponse, WhoAmIResponse,
    ],
    other: [
        RecordKind { name: "ConnectRequest", check: connect_request },
        RecordKind { name: "ConnectResponse", check: connect_response },
        RecordKind { name: "MultiRequest", check: multi_request },
        RecordKind { name: "MultiResponse", check: multi_response },
        RecordKind { name: "Txn", check: txn },
        // Any opcode: four bytes of opcode, then the body.
        RecordKind {
            name: "Request(any opcode)",
            check: |body| {
                let mut reader = Reader::new(body.clone());
                if let Ok(opcode) = reader.read_i32() {
                    request(opcode, &reader.rest());
                }
            },
        },
    ],
    requests: [
        CREATE, DELETE, EXISTS, GET_DATA, SET_DATA, GET_ACL, SET_ACL, GET_CHILDREN, SYNC, PING,
        GET_CHILDREN2, CHECK, MULTI, CREATE2, RECONFIG, CHECK_WATCHES, REMOVE_WATCHES, CREATE_CONTAINER,
        DELETE_CONTAINER, CREATE_TTL, MULTI_READ, AUTH, SET_WATCHES, SET_WATCHES2, ADD_WATCH, WHO_AM_I,
        GET_EPHEMERALS, GET_ALL_CHILDREN_NUMBER, CLOSE_SESSION,
    ],
}

/// `data[0]` picks a kind of `RECORD_KINDS` (modulo their number), the rest
/// is the record's encoding.
pub fn jute_records(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else { return };
    let kind = &RECORD_KINDS[selector as usize % RECORD_KINDS.len()];
    (kind.check)(&Bytes::copy_from_slice(body));
}

// ---------------------------------------------------------------------------
// log_records: the transaction log's segment reader, truncation and recovery.

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(*bytes.get(at..)?.first_chunk::<4>()?))
}

/// Gives every whole record in a batch's payload a valid checksum, leaving
/// their lengths, zxids and txns as they are. Returns how many there are.
fn seal_records(payload: &mut [u8]) -> u32 {
    let mut at = 0;
    let mut count = 0;
    while at + log::RECORD_HEADER_BYTES <= payload.len() {
        let Some(length) = read_u32(payload, at) else { break };
        let end = at + log::RECORD_HEADER_BYTES + length as usize;
        if end > payload.len() {
            break;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&payload[at + 8..at + 16]); // the zxid
        hasher.update(&payload[at + log::RECORD_HEADER_BYTES..end]);
        payload[at + 4..at + 8].copy_from_slice(&hasher.finalize().to_be_bytes());
        at = end;
        count += 1;
    }
    count
}

/// Repairs every checksum a segment holds where its structure can be
/// found, so that a mutated segment gets past the CRCs to the decoders.
fn repair_segment(bytes: &mut [u8]) {
    if bytes.len() < log::BLOCK_BYTES || &bytes[..8] != log::SEGMENT_MAGIC {
        return;
    }
    let crc = crc32fast::hash(&bytes[..20]);
    bytes[20..24].copy_from_slice(&crc.to_be_bytes());
    let mut offset = log::BLOCK_BYTES;
    while offset + log::BATCH_HEADER_BYTES <= bytes.len() {
        let (Some(magic), Some(payload_bytes)) = (read_u32(bytes, offset), read_u32(bytes, offset + 4)) else { break };
        let payload_start = offset + log::BATCH_HEADER_BYTES;
        let batch_end = payload_start + payload_bytes as usize;
        if magic != log::BATCH_MAGIC || batch_end > bytes.len() {
            offset += log::BLOCK_BYTES;
            continue;
        }
        seal_records(&mut bytes[payload_start..batch_end]);
        let crc = crc32fast::hash(&bytes[payload_start..batch_end]);
        bytes[offset + 12..offset + 16].copy_from_slice(&crc.to_be_bytes());
        offset = batch_end.div_ceil(log::BLOCK_BYTES) * log::BLOCK_BYTES;
    }
}

/// Builds a segment from a compact description, so that small inputs reach
/// the record decoder: the first zxid (8 bytes), then batches, each a u16
/// length and that many bytes of records (length, CRC, zxid, txn). The
/// builder lays out the blocks and fills in every checksum and count.
fn compact_segment(description: &[u8]) -> Vec<u8> {
    let first_zxid = description.first_chunk::<8>().map_or(1, |bytes| i64::from_be_bytes(*bytes));
    let mut rest = description.get(8..).unwrap_or_default();
    let mut segment = log::encode_segment_header(first_zxid);
    while let Some((length, after)) = rest.split_first_chunk::<2>() {
        let length = (u16::from_be_bytes(*length) as usize).min(after.len());
        let mut payload = after[..length].to_vec();
        rest = &after[length..];
        let records = seal_records(&mut payload);
        segment.extend_from_slice(&log::BATCH_MAGIC.to_be_bytes());
        segment.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        segment.extend_from_slice(&records.to_be_bytes());
        segment.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
        // First and last zxid: informational, the reader takes the records'.
        segment.extend_from_slice(&[0; 16]);
        segment.extend_from_slice(&payload);
        segment.resize(segment.len().div_ceil(log::BLOCK_BYTES) * log::BLOCK_BYTES, 0);
    }
    segment
}

/// `data[0]` picks the mode: 0, the rest is a segment file as it is; 1, a
/// segment file whose checksums are repaired first; 2, a compact description
/// (see `compact_segment`). The segment is scanned, cut at several zxids,
/// and recovered from.
pub fn log_records(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let mut bytes = rest.to_vec();
            repair_segment(&mut bytes);
            bytes
        }
        _ => compact_segment(rest),
    };
    let bytes = Bytes::from(bytes);
    let (scanned, allocated) = measured(|| scan_segment(&bytes));
    check_allocation("scan_segment", bytes.len(), allocated);
    let Ok(scan) = scanned else { return };
    check_scan(&bytes, &scan);
    let _ = log::describe_segment(&bytes);
    let mut cuts = vec![i64::MIN, i64::MAX];
    if let (Some(first), Some(last)) = (scan.txns.first(), scan.txns.last()) {
        let middle = &scan.txns[scan.txns.len() / 2];
        cuts.extend([first.txn.zxid.saturating_sub(1), first.txn.zxid, middle.txn.zxid, last.txn.zxid]);
    }
    for to in cuts {
        check_truncate(&bytes, &scan, to);
    }
    check_recovery(&bytes, &scan);
}

fn check_scan(bytes: &Bytes, scan: &SegmentScan) {
    let end = match &scan.end {
        SegmentEnd::Clean { offset } | SegmentEnd::TornTail { offset, .. } | SegmentEnd::Corrupt { offset, .. } => *offset,
    };
    let mut previous = None;
    for logged in &scan.txns {
        assert!(logged.offset >= log::BLOCK_BYTES as u64, "a record inside the segment header at {}", logged.offset);
        assert!(logged.offset < end, "a record at {} after the end of the data at {end}", logged.offset);
        assert!(previous < Some(logged.offset), "record offsets out of order at {}", logged.offset);
        previous = Some(logged.offset);
        let encoded = txn_to_bytes(&logged.txn);
        assert_eq!(decode_txn(&mut Reader::new(encoded)).as_ref(), Ok(&logged.txn), "a logged txn does not round-trip");
    }
    assert!(end <= bytes.len().div_ceil(log::BLOCK_BYTES) as u64 * log::BLOCK_BYTES as u64, "the data ends at {end}, past the file");
}

/// Cutting after `to` must leave a segment that reads back cleanly with
/// exactly the records the plan says it keeps, all at or below `to`.
fn check_truncate(bytes: &Bytes, scan: &SegmentScan, to: i64) {
    let Ok(plan) = plan_truncate(bytes, to) else { return };
    let after = plan.apply(bytes);
    // A plan that changes nothing is skipped by the runtime; its cut may lie
    // past the end of a file not padded to whole blocks (warden's never are).
    if !plan.is_noop() {
        assert_eq!(after.len() as u64, plan.length_after(), "truncating after {to:#x}: length differs from the plan's");
    }
    let rescan = match scan_segment(&after) {
        Ok(rescan) => rescan,
        Err(reason) => panic!("truncating after {to:#x} left no segment: {reason}"),
    };
    assert!(matches!(rescan.end, SegmentEnd::Clean { .. }), "truncating after {to:#x} left {:?}", rescan.end);
    assert_eq!(rescan.txns.len(), plan.records_kept, "truncating after {to:#x}: records kept differ from the plan's");
    assert_eq!(rescan.txns.last().map(|logged| logged.txn.zxid), plan.last_zxid_kept);
    for (kept, original) in rescan.txns.iter().zip(&scan.txns) {
        assert_eq!(kept.txn, original.txn, "truncating after {to:#x} changed a record it kept");
        assert!(kept.txn.zxid <= to, "truncating after {to:#x} kept zxid {:#x}", kept.txn.zxid);
    }
}

/// Txns `check_recovery` keeps from what it replayed: small, so the fuzzer
/// reaches the bound.
const RECOVERY_TAIL_MAX: usize = 4;

/// Recovery from an empty snapshot at zxid 0 and this one segment: refused
/// or replayed, never a panic (a txn that passed the checksums is applied to
/// the tree whatever it says).
fn check_recovery(bytes: &Bytes, scan: &SegmentScan) {
    let listing = Listing { snapshots: vec![(0, "snapshot.0".into())], segments: vec![(scan.first_zxid, "log".into())] };
    let read = |name: &str| if name == "log" { Ok(bytes.clone()) } else { Err(format!("no file {name}")) };
    if let Ok(recovered) = recover(&listing, read, |_| Ok(DataTree::new()), RECOVERY_TAIL_MAX) {
        assert!(recovered.replayed <= scan.txns.len(), "replayed more txns than the segment holds");
        // The tail kept for DIFF is the last txns replayed, in order.
        assert_eq!(recovered.replayed_tail.len(), recovered.replayed.min(RECOVERY_TAIL_MAX));
        assert!(recovered.replayed_tail.iter().zip(recovered.replayed_tail.iter().skip(1)).all(|(a, b)| a.zxid < b.zxid));
        let last = recovered.replayed_tail.back().map_or(0, |txn| txn.zxid);
        assert_eq!(last, if recovered.replayed == 0 { 0 } else { recovered.tree.last_processed_zxid() });
    }
}

// ---------------------------------------------------------------------------
// snapshot: the snapshot loader.

/// `data[0]` picks the mode: even, the rest is a snapshot file as it is;
/// odd, the rest is a zxid (8 bytes) and a payload, given a valid header so
/// that rkyv's validation and the tree's restore see it. A snapshot that
/// loads must survive being written and loaded again unchanged.
pub fn snapshot(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let file = if mode % 2 == 0 {
        Bytes::copy_from_slice(rest)
    } else {
        let Some((zxid, payload)) = rest.split_first_chunk::<8>() else { return };
        Bytes::from(snapshot::with_header(i64::from_be_bytes(*zxid), payload))
    };
    let _ = describe_snapshot(file.clone());
    let (decoded, allocated) = measured(|| decode_snapshot(file.clone()));
    check_allocation("decode_snapshot", file.len(), allocated);
    let Ok(tree) = decoded else { return };
    assert_eq!(Ok(tree.last_processed_zxid()), snapshot::snapshot_zxid(&file), "the tree is not at the header's zxid");
    let encoded = snapshot::encode_snapshot(&tree);
    let again = match decode_snapshot(Bytes::from(encoded)) {
        Ok(again) => again,
        Err(error) => panic!("a loaded snapshot, written again, does not load: {error}"),
    };
    assert_eq!(again.last_processed_zxid(), tree.last_processed_zxid());
    assert_eq!(again.digest(), tree.digest(), "the snapshot's tree changed when written and loaded again");
    assert_eq!(again.node_count(), tree.node_count());
    assert_eq!(again.sessions(), tree.sessions());
    assert_eq!(again.data_bytes(), tree.data_bytes());
    for (path, node) in tree.iter_nodes() {
        let other = again.get(path).map(|other| &other.acl);
        assert_eq!(other, Some(&node.acl), "{path}: ACL changed when written and loaded again");
    }
}

// ---------------------------------------------------------------------------
// peer_messages: the ZAB peer protocol.

/// `data[0]` picks the mode: even, the rest is one frame body; odd, the rest
/// is a stream of frames split by `split_frame` (with the election port's,
/// the quorum port's or a tiny limit) and each body decoded.
pub fn peer_messages(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        peer_body(&Bytes::copy_from_slice(rest));
        return;
    }
    let frame_bytes_max = [limits::ELECTION_FRAME_BYTES_MAX, limits::PEER_FRAME_BYTES_MAX, 16][(mode as usize / 2) % 3];
    let mut buffer = BytesMut::new();
    let mut fed = 0;
    let mut reads = 0;
    let mut split_allocated = 0;
    let mut bodies = Vec::new();
    'reads: for chunk in chunks(rest, mode) {
        buffer.extend_from_slice(chunk);
        fed += chunk.len();
        reads += 1;
        loop {
            let (next, allocated) = measured(|| wire::split_frame(&mut buffer, frame_bytes_max));
            split_allocated += allocated;
            match next {
                Ok(Some(body)) => {
                    assert!(body.len() <= frame_bytes_max, "a peer frame of {} bytes above the limit {frame_bytes_max}", body.len());
                    bodies.push(body);
                }
                Ok(None) => break,
                Err(_) => break 'reads,
            }
        }
    }
    let budget = split_budget(frame_bytes_max, fed, reads);
    assert!(split_allocated <= budget, "split_frame allocated {split_allocated} bytes for {fed} (limit {frame_bytes_max})");
    for body in &bodies {
        peer_body(body);
    }
}

/// One frame body: what decodes must encode (the encoder accepts what the
/// decoder accepts) to a body of the same length, which decodes and encodes
/// again to the same bytes.
fn peer_body(body: &Bytes) {
    let (decoded, allocated) = measured(|| wire::decode(body.clone()));
    check_allocation("zab::wire::decode", body.len(), allocated);
    let Ok(message) = decoded else { return };
    let mut frame = BytesMut::new();
    if let Err(error) = wire::encode(&message, &mut frame) {
        panic!("{} decoded but does not encode: {error}", message.name());
    }
    let encoded = frame.split_off(wire::FRAME_PREFIX_BYTES).freeze();
    assert_eq!(encoded.len(), body.len(), "{} re-encodes to {} bytes from {}", message.name(), encoded.len(), body.len());
    let again = match wire::decode(encoded.clone()) {
        Ok(again) => again,
        Err(error) => panic!("a re-encoded {} does not decode: {error}", message.name()),
    };
    let mut frame_again = BytesMut::new();
    if let Err(error) = wire::encode(&again, &mut frame_again) {
        panic!("a re-decoded {} does not encode: {error}", again.name());
    }
    assert_eq!(&frame_again[wire::FRAME_PREFIX_BYTES..], &encoded[..], "{}: encode(decode(encode(x))) != encode(x)", message.name());
}
