//! Fuzz smoke test: a seeded, dependency-free fuzzer that runs briefly in the
//! test suite (the coverage-guided libFuzzer targets are in fuzz/, and
//! tests/fuzz_corpus.rs replays their corpus; this needs nothing but cargo).
//!
//! 1. `decoders_survive_mutated_input`: valid encodings of every request kind
//!    (and of ConnectRequest, MultiResponse and framed streams) are mutated
//!    (bit flips, truncation, length fields forced huge or negative, byte
//!    insertion and deletion, splicing) and fed to every decoder. Decoding must
//!    not panic, must not allocate more than a small multiple of its input (a
//!    counting global allocator measures it), must return quickly, and what
//!    decodes must re-encode to exactly the bytes it consumed and decode again
//!    to the same value.
//! 2. `pipeline_replicas_agree`: decoded requests drive the pure pipeline:
//!    writes through `Prep` (over its own DataTree), the committed txns into a
//!    second DataTree and into a `Shard`, reads through `Shard::read`. Nothing
//!    may panic, every txn Prep approved must apply cleanly, and the three
//!    trees must stay identical (digest, and node by node including ACLs).
//!
//! Environment: `FUZZ_SEED` (decimal or 0x-hex; default fixed),
//! `FUZZ_ITERATIONS` (default 200_000 decoder iterations and as many pipeline
//! requests: ~3 s in release, ~15 s in debug), `FUZZ_ITERATION` (run only
//! that decoder iteration, printing its input) and `FUZZ_EPOCH` (run only that
//! pipeline epoch). Every failure prints the seed, the iteration or epoch and
//! step, the input in hex and the command that replays it.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warden::fuzzing::{allocated, allocation_budget, env_u64, hex, mutate, panic_message, CountingAllocator};
use warden::pipeline::auth::{authenticate, digest_id, AuthOutcome};
use warden::pipeline::prep::{Prep, PrepConfig};
use warden::pipeline::latest::LatestTree;
use warden::pipeline::{Committed, Origin, Shard, ShardConfig, ShardOutput};
use warden::proto::codes::{op, perms};
use warden::proto::frame::{encode_frame, FrameDecoder};
use warden::proto::{
    Acl, AddWatchRequest, AuthPacket, CheckVersionRequest, ConnectRequest, CreateRequest, CreateTtlRequest,
    DeleteRequest, ErrorCode, Id, Jute, MultiOp, MultiRequest, MultiResponse, MultiResult, PathRequest,
    PathWatchRequest, Reader, ReconfigRequest, ReplyHeader, Request, RequestHeader, SetAclRequest, SetDataRequest,
    SetWatches, SetWatches2, Stat, WatchTypeRequest, Writer,
};
use warden::rng::Rng;
use warden::tree::{open_acl_unsafe, read_acl_unsafe, DataTree};
use warden::txn::{Txn, TxnBody};

// ---------------------------------------------------------------------------
// Allocation accounting: warden::fuzzing's counting allocator.

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f`, returning its result, the bytes it allocated and how long it took.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    let before = allocated();
    let start = Instant::now();
    let value = f();
    let elapsed = start.elapsed();
    (value, allocated().wrapping_sub(before), elapsed)
}

/// A decode of a few KiB that takes this long has gone quadratic or worse.
const DECODE_TIME_MAX: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Configuration (the RNG, the mutator and the counting allocator are
// warden::fuzzing's, shared with tests/fuzz_corpus.rs and fuzz/).

const DEFAULT_SEED: u64 = 0x5eed_2024_cafe_f00d;

fn seed() -> u64 {
    env_u64("FUZZ_SEED").unwrap_or(DEFAULT_SEED)
}

/// test.sh runs `cargo test --release`: 200k iterations of each test take a
/// few seconds there, and well under a minute in a debug build.
fn iterations() -> u64 {
    env_u64("FUZZ_ITERATIONS").unwrap_or(200_000)
}

// ---------------------------------------------------------------------------
// Generators of valid values.

const PATHS: &[&str] = &[
    "/",
    "/a",
    "/a/b",
    "/a/b/c",
    "/b",
    "/b/c",
    "/c",
    "/a/s-",
    "/b/s-",
    "/s-",
    "/zookeeper",
    "/zookeeper/quota",
    "/zookeeper/config",
    "/zookeeper/quota/q",
    // Invalid, in the ways clients get paths wrong.
    "",
    "a",
    "/a/",
    "//a",
    "/a//b",
    "/./a",
    "/a/..",
    "/a\u{0}b",
    "/\u{1}",
    "/\u{fff5}",
    "/\u{e000}",
    "/é",
    " /a",
    "/a ",
];

/// The first entries of PATHS that are valid paths.
const VALID_PATHS: usize = 14;

thread_local! {
    /// Set by the pipeline test: generate mostly valid requests (valid paths,
    /// open ACLs, consistent flags and TTLs), so that writes succeed often
    /// enough to build interesting trees. The decoder test leaves it off.
    static TAME: Cell<bool> = const { Cell::new(false) };
}

fn tame() -> bool {
    TAME.with(Cell::get)
}

fn gen_path(rng: &mut Rng, extra: &[String]) -> String {
    if !extra.is_empty() && rng.one_in(3) {
        return rng.pick(extra).clone();
    }
    if tame() && !rng.one_in(10) {
        return PATHS[rng.index(VALID_PATHS)].to_string();
    }
    match rng.below(20) {
        0 => {
            // Random printable-ish string, sometimes with a leading slash.
            let length = rng.below(12);
            let mut path: String = (0..length).map(|_| char::from(b' ' + rng.below(95) as u8)).collect();
            if rng.one_in(2) {
                path.insert(0, '/');
            }
            path
        }
        1 => format!("/a/s-{:010}", rng.below(4)),
        _ => rng.pick(PATHS).to_string(),
    }
}

fn gen_id(rng: &mut Rng) -> Id {
    let (scheme, id) = match rng.below(12) {
        0..=3 => ("world".to_owned(), "anyone".to_owned()),
        4 => ("world".to_owned(), "someone".to_owned()),
        5 => ("auth".to_owned(), String::new()),
        6 => {
            let users = ["u:p", "v:q", "super:superpw"];
            ("digest".to_owned(), digest_id(users[rng.index(users.len())]))
        }
        7 => ("digest".to_owned(), "no-colon".to_owned()),
        8 => ("ip".to_owned(), rng.pick(&["127.0.0.1", "10.0.0.0/8", "::1", "127.0.0.1/40", "not-an-ip", "0.0.0.0/0"]).to_string()),
        9 => ("super".to_owned(), String::new()),
        10 => ("sasl".to_owned(), "x".to_owned()),
        _ => (String::from_utf8_lossy(&rng.bytes_upto(6)).into_owned(), String::new()),
    };
    Id { scheme, id }
}

fn gen_acl(rng: &mut Rng) -> Vec<Acl> {
    if tame() && rng.below(10) < 7 {
        return open_acl_unsafe();
    }
    match rng.below(8) {
        0..=2 => open_acl_unsafe(),
        3 => read_acl_unsafe(),
        4 => Vec::new(),
        _ => (0..1 + rng.below(3))
            .map(|_| {
                let perms = match rng.below(5) {
                    0 => perms::ALL,
                    1 => rng.i32(),
                    2 => -1,
                    3 => 0,
                    _ => 1 + rng.below(31) as i32,
                };
                Acl { perms, id: gen_id(rng) }
            })
            .collect(),
    }
}

fn gen_data(rng: &mut Rng) -> Option<Bytes> {
    match rng.below(8) {
        0 => None,
        1 => Some(Bytes::new()),
        2 if rng.one_in(50) => Some(Bytes::from(rng.bytes_upto(16 * 1024))),
        _ => Some(Bytes::from(rng.bytes_upto(24))),
    }
}

fn gen_version(rng: &mut Rng) -> i32 {
    if tame() && rng.below(10) < 6 {
        return -1;
    }
    match rng.below(8) {
        0..=2 => -1,
        3 => 0,
        4 => 1,
        5 => 2,
        6 => i32::MAX,
        _ => rng.i32(),
    }
}

fn gen_flags(rng: &mut Rng) -> i32 {
    if rng.one_in(if tame() { 100 } else { 12 }) {
        rng.i32()
    } else {
        rng.below(7) as i32
    }
}

fn gen_ttl(rng: &mut Rng) -> i64 {
    if tame() && rng.below(10) < 7 {
        return 1 + rng.below(10_000) as i64;
    }
    match rng.below(7) {
        0 => -1,
        1 => 0,
        2 => 1,
        3 => 1000,
        4 => 0xff_ffff_ffff,
        5 => 0x100_0000_0000,
        _ => rng.i64(),
    }
}

fn gen_create(rng: &mut Rng, extra: &[String]) -> CreateRequest {
    CreateRequest { path: gen_path(rng, extra), data: gen_data(rng), acl: gen_acl(rng), flags: gen_flags(rng) }
}

fn gen_strings(rng: &mut Rng, extra: &[String]) -> Vec<String> {
    (0..rng.below(4)).map(|_| gen_path(rng, extra)).collect()
}

fn gen_multi_op(rng: &mut Rng, extra: &[String], reads: bool) -> MultiOp {
    let choice = if reads { rng.below(9) } else { rng.below(7) };
    match choice {
        0 | 1 => MultiOp::Create {
            opcode: *rng.pick(&[op::CREATE, op::CREATE2, op::CREATE_CONTAINER]),
            request: gen_create(rng, extra),
        },
        2 => MultiOp::CreateTtl(CreateTtlRequest {
            path: gen_path(rng, extra),
            data: gen_data(rng),
            acl: gen_acl(rng),
            flags: gen_flags(rng),
            ttl: gen_ttl(rng),
        }),
        3 => MultiOp::Delete {
            opcode: *rng.pick(&[op::DELETE, op::DELETE, op::DELETE_CONTAINER]),
            request: DeleteRequest { path: gen_path(rng, extra), version: gen_version(rng) },
        },
        4 => MultiOp::SetData(SetDataRequest { path: gen_path(rng, extra), data: gen_data(rng), version: gen_version(rng) }),
        5 | 6 => MultiOp::Check(CheckVersionRequest { path: gen_path(rng, extra), version: gen_version(rng) }),
        7 => MultiOp::GetData(PathWatchRequest { path: gen_path(rng, extra), watch: rng.one_in(2) }),
        _ => MultiOp::GetChildren(PathWatchRequest { path: gen_path(rng, extra), watch: rng.one_in(2) }),
    }
}

fn gen_multi(rng: &mut Rng, extra: &[String], read_only: bool) -> MultiRequest {
    let count = if rng.one_in(100) { rng.below(300) } else { rng.below(6) };
    let ops = (0..count)
        .map(|_| {
            if read_only {
                if rng.one_in(2) {
                    MultiOp::GetData(PathWatchRequest { path: gen_path(rng, extra), watch: rng.one_in(2) })
                } else {
                    MultiOp::GetChildren(PathWatchRequest { path: gen_path(rng, extra), watch: rng.one_in(2) })
                }
            } else {
                // Mostly writes; an occasional read makes Prep refuse the multi.
                let reads = rng.one_in(20);
                gen_multi_op(rng, extra, reads)
            }
        })
        .collect();
    MultiRequest { ops }
}

/// Every opcode `Request` has, so the generator and the decoders cover them all.
const REQUEST_OPCODES: &[i32] = &[
    op::CREATE,
    op::CREATE2,
    op::CREATE_CONTAINER,
    op::CREATE_TTL,
    op::DELETE,
    op::DELETE_CONTAINER,
    op::EXISTS,
    op::GET_DATA,
    op::SET_DATA,
    op::GET_ACL,
    op::SET_ACL,
    op::GET_CHILDREN,
    op::GET_CHILDREN2,
    op::SYNC,
    op::PING,
    op::CHECK,
    op::MULTI,
    op::MULTI_READ,
    op::RECONFIG,
    op::CHECK_WATCHES,
    op::REMOVE_WATCHES,
    op::AUTH,
    op::SET_WATCHES,
    op::SET_WATCHES2,
    op::GET_EPHEMERALS,
    op::GET_ALL_CHILDREN_NUMBER,
    op::ADD_WATCH,
    op::WHO_AM_I,
    op::CLOSE_SESSION,
];

/// Opcodes `Request::decode` must refuse without panicking.
const UNKNOWN_OPCODES: &[i32] = &[op::NOTIFICATION, op::SASL, op::CREATE_SESSION, op::ERROR, 10, 23, 99, 108, i32::MIN, i32::MAX];

fn gen_request_for(rng: &mut Rng, opcode: i32, extra: &[String]) -> Request {
    let path = |rng: &mut Rng| gen_path(rng, extra);
    let watch_type = |rng: &mut Rng| if rng.one_in(8) { rng.i32() } else { 1 + rng.below(5) as i32 };
    match opcode {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER => Request::Create { opcode, request: gen_create(rng, extra) },
        op::CREATE_TTL => Request::CreateTtl(CreateTtlRequest {
            path: path(rng),
            data: gen_data(rng),
            acl: gen_acl(rng),
            flags: if tame() && rng.below(10) < 7 { *rng.pick(&[5, 6]) } else { gen_flags(rng) },
            ttl: gen_ttl(rng),
        }),
        op::DELETE => Request::Delete(DeleteRequest { path: path(rng), version: gen_version(rng) }),
        op::DELETE_CONTAINER => Request::DeleteContainer(PathRequest { path: path(rng) }),
        op::EXISTS => Request::Exists(PathWatchRequest { path: path(rng), watch: rng.one_in(2) }),
        op::GET_DATA => Request::GetData(PathWatchRequest { path: path(rng), watch: rng.one_in(2) }),
        op::SET_DATA => Request::SetData(SetDataRequest { path: path(rng), data: gen_data(rng), version: gen_version(rng) }),
        op::GET_ACL => Request::GetAcl(PathRequest { path: path(rng) }),
        op::SET_ACL => Request::SetAcl(SetAclRequest { path: path(rng), acl: gen_acl(rng), version: gen_version(rng) }),
        op::GET_CHILDREN => Request::GetChildren(PathWatchRequest { path: path(rng), watch: rng.one_in(2) }),
        op::GET_CHILDREN2 => Request::GetChildren2(PathWatchRequest { path: path(rng), watch: rng.one_in(2) }),
        op::SYNC => Request::Sync(PathRequest { path: path(rng) }),
        op::PING => Request::Ping,
        op::CHECK => Request::Check(CheckVersionRequest { path: path(rng), version: gen_version(rng) }),
        op::MULTI => Request::Multi(gen_multi(rng, extra, false)),
        op::MULTI_READ => {
            let read_only = !rng.one_in(10);
            Request::MultiRead(gen_multi(rng, extra, read_only))
        }
        op::RECONFIG => Request::Reconfig(ReconfigRequest {
            joining_servers: path(rng),
            leaving_servers: path(rng),
            new_members: path(rng),
            cur_config_id: rng.i64(),
        }),
        op::CHECK_WATCHES => Request::CheckWatches(WatchTypeRequest { path: path(rng), watcher_type: watch_type(rng) }),
        op::REMOVE_WATCHES => Request::RemoveWatches(WatchTypeRequest { path: path(rng), watcher_type: watch_type(rng) }),
        op::AUTH => Request::Auth(AuthPacket {
            auth_type: if rng.one_in(4) { rng.i32() } else { 0 },
            scheme: rng.pick(&["digest", "digest", "digest", "ip", "world", "super", ""]).to_string(),
            auth: match rng.below(4) {
                0 => Bytes::from(rng.bytes_upto(12)),
                _ => Bytes::from(rng.pick(&["u:p", "v:q", "super:superpw", "nocolon", ""]).as_bytes().to_vec()),
            },
        }),
        op::SET_WATCHES => Request::SetWatches(SetWatches {
            relative_zxid: if rng.one_in(2) { rng.below(100) as i64 } else { rng.i64() },
            data_watches: gen_strings(rng, extra),
            exist_watches: gen_strings(rng, extra),
            child_watches: gen_strings(rng, extra),
        }),
        op::SET_WATCHES2 => Request::SetWatches2(SetWatches2 {
            relative_zxid: if rng.one_in(2) { rng.below(100) as i64 } else { rng.i64() },
            data_watches: gen_strings(rng, extra),
            exist_watches: gen_strings(rng, extra),
            child_watches: gen_strings(rng, extra),
            persistent_watches: gen_strings(rng, extra),
            persistent_recursive_watches: gen_strings(rng, extra),
        }),
        op::GET_EPHEMERALS => Request::GetEphemerals(PathRequest { path: path(rng) }),
        op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber(PathRequest { path: path(rng) }),
        op::ADD_WATCH => Request::AddWatch(AddWatchRequest {
            path: path(rng),
            mode: if rng.one_in(6) { rng.i32() } else { rng.below(2) as i32 },
        }),
        op::WHO_AM_I => Request::WhoAmI,
        op::CLOSE_SESSION => Request::CloseSession,
        other => unreachable!("no generator for opcode {other}"),
    }
}

/// The opcodes that are writes (or need Prep).
const WRITE_OPCODES: &[i32] = &[
    op::CREATE,
    op::CREATE2,
    op::CREATE_CONTAINER,
    op::CREATE_TTL,
    op::DELETE,
    op::DELETE_CONTAINER,
    op::SET_DATA,
    op::SET_ACL,
    op::CHECK,
    op::MULTI,
    op::MULTI,
    op::RECONFIG,
    op::CLOSE_SESSION,
];

fn gen_request(rng: &mut Rng, extra: &[String]) -> Request {
    // Tame runs favour writes, which build the state reads then explore.
    let opcode = if tame() && rng.one_in(2) { *rng.pick(WRITE_OPCODES) } else { *rng.pick(REQUEST_OPCODES) };
    gen_request_for(rng, opcode, extra)
}

fn gen_stat(rng: &mut Rng) -> Stat {
    Stat {
        czxid: rng.i64(),
        mzxid: rng.i64(),
        ctime: rng.i64(),
        mtime: rng.i64(),
        version: rng.i32(),
        cversion: rng.i32(),
        aversion: rng.i32(),
        ephemeral_owner: rng.i64(),
        data_length: rng.i32(),
        num_children: rng.i32(),
        pzxid: rng.i64(),
    }
}

fn gen_multi_response(rng: &mut Rng) -> MultiResponse {
    let results = (0..rng.below(6))
        .map(|_| match rng.below(8) {
            0 => MultiResult::Create { path: gen_path(rng, &[]) },
            1 => MultiResult::Create2 { path: gen_path(rng, &[]), stat: gen_stat(rng) },
            2 => MultiResult::Delete,
            3 => MultiResult::SetData { stat: gen_stat(rng) },
            4 => MultiResult::Check,
            5 => MultiResult::GetChildren { children: gen_strings(rng, &[]) },
            6 => MultiResult::GetData { data: gen_data(rng), stat: gen_stat(rng) },
            _ => MultiResult::Error { err: *rng.pick(&ErrorCode::ALL) },
        })
        .collect();
    MultiResponse { results }
}

fn gen_connect_request(rng: &mut Rng) -> ConnectRequest {
    ConnectRequest {
        protocol_version: if rng.one_in(4) { rng.i32() } else { 0 },
        last_zxid_seen: rng.below(1000) as i64,
        timeout_ms: *rng.pick(&[30_000, 4_000, 0, -1, i32::MAX]),
        session_id: if rng.one_in(2) { 0 } else { rng.i64() },
        password: Bytes::from({ let n = *rng.pick(&[16, 0, 3]); rng.bytes(n) }),
        read_only: *rng.pick(&[None, Some(false), Some(true)]),
    }
}

fn encode_request(request: &Request) -> Bytes {
    let mut writer = Writer::new();
    request.encode(&mut writer);
    writer.into_bytes()
}

fn encode_with_header(xid: i32, request: &Request) -> Bytes {
    let mut writer = Writer::new();
    RequestHeader { xid, opcode: request.opcode() }.encode(&mut writer);
    request.encode(&mut writer);
    writer.into_bytes()
}

// ---------------------------------------------------------------------------
// Decoder checks. Each panics (with a description) when a property fails; the
// driver catches it and adds seed, iteration and input.

fn check_budget(what: &str, input_len: usize, allocated: usize, elapsed: Duration) {
    assert!(
        allocated <= allocation_budget(input_len),
        "{what}: decoding {input_len} bytes allocated {allocated} bytes (budget {})",
        allocation_budget(input_len)
    );
    assert!(elapsed <= DECODE_TIME_MAX, "{what}: decoding {input_len} bytes took {elapsed:?}");
}

/// The longest vector inside a request (every element takes at least one byte).
fn longest_vector(request: &Request) -> usize {
    match request {
        Request::Create { request, .. } => request.acl.len(),
        Request::CreateTtl(request) => request.acl.len(),
        Request::SetAcl(request) => request.acl.len(),
        Request::Multi(multi) | Request::MultiRead(multi) => multi
            .ops
            .iter()
            .map(|operation| match operation {
                MultiOp::Create { request, .. } => request.acl.len(),
                MultiOp::CreateTtl(request) => request.acl.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
            .max(multi.ops.len()),
        Request::SetWatches(request) => request.data_watches.len().max(request.exist_watches.len()).max(request.child_watches.len()),
        Request::SetWatches2(request) => [
            &request.data_watches,
            &request.exist_watches,
            &request.child_watches,
            &request.persistent_watches,
            &request.persistent_recursive_watches,
        ]
        .iter()
        .map(|list| list.len())
        .max()
        .unwrap_or(0),
        _ => 0,
    }
}

/// Decodes a request body for `opcode`; checks budget, bounds and that the
/// value re-encodes to exactly the bytes consumed and decodes to itself.
fn check_request_body(opcode: i32, body: &Bytes) -> Option<Request> {
    let mut reader = Reader::new(body.clone());
    let (decoded, allocated, elapsed) = measured(|| Request::decode(opcode, &mut reader, 1000));
    check_budget(&format!("Request::decode({opcode})"), body.len(), allocated, elapsed);
    let request = decoded.ok()?;
    assert_eq!(request.opcode(), opcode, "decoded request answers a different opcode");
    let consumed = reader.position();
    assert!(consumed <= body.len(), "reader consumed {consumed} of {} bytes", body.len());
    assert!(longest_vector(&request) <= body.len(), "a vector of {} elements from {} bytes", longest_vector(&request), body.len());
    if let Request::Multi(multi) | Request::MultiRead(multi) = &request {
        assert!(multi.ops.len() <= 1000, "multi with {} ops decoded past its limit", multi.ops.len());
    }
    let encoded = encode_request(&request);
    assert_eq!(
        encoded.len(),
        consumed,
        "re-encoding {request:?} gives {} bytes, but decoding consumed {consumed}",
        encoded.len()
    );
    let mut again = Reader::new(encoded.clone());
    match Request::decode(opcode, &mut again, 1000) {
        Ok(redecoded) => assert_eq!(redecoded, request, "decode(encode(x)) != x"),
        Err(error) => panic!("re-encoded request does not decode: {error:?}; bytes {}", hex(&encoded)),
    }
    assert_eq!(again.remaining(), 0);
    Some(request)
}

/// A whole request frame body: header then request.
fn check_request_frame(frame: &Bytes) -> Option<(i32, Request)> {
    let mut reader = Reader::new(frame.clone());
    let (header, allocated, elapsed) = measured(|| RequestHeader::decode(&mut reader));
    check_budget("RequestHeader::decode", frame.len(), allocated, elapsed);
    let header = header.ok()?;
    let rest = reader.rest();
    let request = check_request_body(header.opcode, &rest)?;
    Some((header.xid, request))
}

fn check_connect_request(frame: &Bytes) {
    let (decoded, allocated, elapsed) = measured(|| ConnectRequest::decode(frame.clone()));
    check_budget("ConnectRequest::decode", frame.len(), allocated, elapsed);
    if let Ok(request) = decoded {
        let mut writer = Writer::new();
        request.encode(&mut writer);
        let encoded = writer.into_bytes();
        assert!(encoded.len() <= frame.len(), "connect request re-encodes longer than its frame");
        assert_eq!(ConnectRequest::decode(encoded).as_ref(), Ok(&request), "ConnectRequest decode(encode(x)) != x");
    }
}

fn check_multi_response(body: &Bytes) {
    let mut reader = Reader::new(body.clone());
    let (decoded, allocated, elapsed) = measured(|| MultiResponse::decode(&mut reader));
    check_budget("MultiResponse::decode", body.len(), allocated, elapsed);
    if let Ok(response) = decoded {
        assert!(response.results.len() <= body.len(), "{} results from {} bytes", response.results.len(), body.len());
        let consumed = reader.position();
        let mut writer = Writer::new();
        response.encode(&mut writer);
        let encoded = writer.into_bytes();
        assert_eq!(encoded.len(), consumed, "MultiResponse re-encodes to {} bytes, consumed {consumed}", encoded.len());
        assert_eq!(MultiResponse::decode(&mut Reader::new(encoded)), Ok(response), "MultiResponse decode(encode(x)) != x");
    }
}

/// Feeds `stream` to a FrameDecoder in random chunks; every frame it yields
/// goes through the request decoders.
fn check_frame_stream(rng: &mut Rng, stream: &[u8]) {
    let limit = *rng.pick(&[64usize, 4096, 1 << 20]);
    let mut decoder = FrameDecoder::new(limit);
    let mut offset = 0;
    let mut yielded = 0usize;
    let mut total_allocated = 0usize;
    let mut frames = Vec::new();
    'feed: while offset < stream.len() {
        let chunk = 1 + rng.index(stream.len() - offset);
        decoder.buffer_mut().extend_from_slice(&stream[offset..offset + chunk]);
        offset += chunk;
        loop {
            let (next, allocated, elapsed) = measured(|| decoder.next_frame());
            total_allocated += allocated;
            assert!(elapsed <= DECODE_TIME_MAX, "FrameDecoder::next_frame took {elapsed:?}");
            match next {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= limit, "frame of {} bytes above the limit {limit}", frame.len());
                    yielded += 4 + frame.len();
                    assert!(yielded <= offset, "decoder yielded {yielded} bytes from {offset} fed");
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    // The decoder may reserve room for one whole frame (bounded by the limit),
    // and the buffer may double as it grows; nothing more.
    let budget = 2 * (limit + 4 + stream.len()) + 16 * 1024;
    assert!(total_allocated <= budget, "FrameDecoder allocated {total_allocated} bytes for {} (limit {limit})", stream.len());
    for frame in frames {
        check_request_frame(&frame);
    }
}

/// One decoder iteration: returns the input it built, for the failure report.
fn decoder_iteration(rng: &mut Rng, input: &RefCell<Vec<u8>>, stage: &Cell<&'static str>) {
    stage.set("generate");
    let request = gen_request(rng, &[]);
    let donor = encode_with_header(rng.i32(), &gen_request(rng, &[]));
    let body = encode_request(&request);
    *input.borrow_mut() = body.to_vec();

    // The unmutated encoding decodes back to the request.
    stage.set("round trip of a valid request");
    let decoded = check_request_body(request.opcode(), &body);
    assert_eq!(decoded.as_ref(), Some(&request), "a valid request does not round-trip");

    // A mutated body, decoded as every opcode.
    stage.set("mutated body, every opcode");
    let mutated = Bytes::from(mutate(rng, &body, &donor[8..]));
    *input.borrow_mut() = mutated.to_vec();
    for &opcode in REQUEST_OPCODES.iter().chain(UNKNOWN_OPCODES) {
        let decoded = check_request_body(opcode, &mutated);
        if UNKNOWN_OPCODES.contains(&opcode) {
            assert!(decoded.is_none(), "unknown opcode {opcode} decoded");
        }
    }
    check_request_body(rng.i32(), &mutated);

    // A mutated frame body with its header.
    stage.set("mutated header + body");
    let framed = encode_with_header(rng.i32(), &request);
    let mutated = Bytes::from(mutate(rng, &framed, &donor));
    *input.borrow_mut() = mutated.to_vec();
    check_request_frame(&mutated);

    // Stream framing: a few frames, mutated as a whole.
    stage.set("frame stream");
    let mut stream = BytesMut::new();
    encode_frame(&framed, &mut stream);
    for _ in 0..rng.below(3) {
        encode_frame(&encode_with_header(rng.i32(), &gen_request(rng, &[])), &mut stream);
    }
    let stream = if rng.one_in(4) { stream.to_vec() } else { mutate(rng, &stream, &donor) };
    *input.borrow_mut() = stream.clone();
    check_frame_stream(rng, &stream);

    // Connect requests.
    stage.set("ConnectRequest");
    let mut writer = Writer::new();
    gen_connect_request(rng).encode(&mut writer);
    let connect = writer.into_bytes();
    let mutated = if rng.one_in(5) { connect.to_vec() } else { mutate(rng, &connect, &donor) };
    *input.borrow_mut() = mutated.clone();
    check_connect_request(&Bytes::from(mutated));

    // Multi responses (what a client, or a follower, decodes).
    stage.set("MultiResponse");
    let mut writer = Writer::new();
    gen_multi_response(rng).encode(&mut writer);
    let response = writer.into_bytes();
    let mutated = if rng.one_in(5) { response.to_vec() } else { mutate(rng, &response, &donor) };
    *input.borrow_mut() = mutated.clone();
    check_multi_response(&Bytes::from(mutated));
    stage.set("done");
}

#[test]
fn decoders_survive_mutated_input() {
    let seed = seed();
    let only = env_u64("FUZZ_ITERATION");
    let range = match only {
        Some(iteration) => iteration..iteration + 1,
        None => 0..iterations(),
    };
    let start = Instant::now();
    for iteration in range.clone() {
        let mut rng = Rng::for_iteration(seed, 1, iteration);
        let input = RefCell::new(Vec::new());
        let stage = Cell::new("start");
        let outcome = catch_unwind(AssertUnwindSafe(|| decoder_iteration(&mut rng, &input, &stage)));
        if only.is_some() {
            eprintln!("iteration {iteration}, last input ({}): {}", stage.get(), hex(&input.borrow()));
        }
        if let Err(payload) = outcome {
            panic!(
                "decoder fuzz failed: seed {seed:#x}, iteration {iteration}, stage '{}'\n  {}\n  input ({} bytes): {}\n  \
                 replay: FUZZ_SEED={seed:#x} FUZZ_ITERATION={iteration} RUST_BACKTRACE=1 cargo test --release --test fuzz_decoders decoders",
                stage.get(),
                panic_message(payload.as_ref()),
                input.borrow().len(),
                hex(&input.borrow()),
            );
        }
    }
    eprintln!(
        "decoders_survive_mutated_input: seed {seed:#x}, {} iterations in {:.1?}",
        range.end - range.start,
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------
// The pipeline: Prep + replica DataTree + Shard.

/// Requests per epoch; each epoch starts from a fresh tree, so trees stay small
/// and any epoch can be replayed alone.
const EPOCH_STEPS: u64 = 2_000;

struct Client {
    connection: u64,
    session_id: i64,
    auth: Vec<Id>,
}

struct Pipeline {
    prep: Prep,
    replica: DataTree,
    shard: Shard,
    clients: Vec<Client>,
    next_connection: u64,
    now_ms: i64,
    out: Vec<ShardOutput>,
    triggers: Vec<warden::tree::Trigger>,
    /// Outcomes by kind, printed with --nocapture to show what the run covered.
    stats: std::collections::BTreeMap<String, u64>,
}

const IPS: &[&str] = &["127.0.0.1", "10.1.2.3", "::1", "192.168.0.9"];

impl Pipeline {
    fn new(rng: &mut Rng) -> Pipeline {
        let config = PrepConfig { extended_types_enabled: !rng.one_in(5) };
        let mut pipeline = Pipeline {
            prep: Prep::new(&DataTree::new(), config),
            replica: DataTree::new(),
            shard: Shard::new(DataTree::new(), ShardConfig { password_secret: rng.next_u64() }),
            clients: Vec::new(),
            next_connection: 1,
            now_ms: 1_700_000_000_000,
            out: Vec::new(),
            triggers: Vec::new(),
            stats: Default::default(),
        };
        for _ in 0..4 {
            pipeline.open_client(rng);
        }
        pipeline
    }

    fn open_client(&mut self, rng: &mut Rng) {
        let connection = self.next_connection;
        self.next_connection += 1;
        let ip = rng.pick(IPS).to_string();
        self.shard.open(connection, ip.clone(), rng.one_in(2));
        let session_id = match rng.below(6) {
            0 => rng.i64(),
            1 => 0,
            other => other as i64,
        };
        let mut client = Client { connection, session_id, auth: vec![Id { scheme: "ip".into(), id: ip }] };
        if rng.one_in(3) {
            self.add_auth(&mut client, "digest", rng.pick(&["u:p", "v:q", "super:superpw"]).as_bytes());
        }
        // Establish the session through a txn, as the sequencer would.
        let txn = self.prep.create_session(session_id, 30_000, self.now_ms);
        let origin = Origin { server: 0, connection, xid: 0, opcode: op::CREATE_SESSION };
        self.commit(txn, Some(origin));
        self.clients.push(client);
    }

    fn add_auth(&mut self, client: &mut Client, scheme: &str, auth: &[u8]) {
        if let AuthOutcome::Added(ids) = authenticate(scheme, auth, Some(&digest_id("super:superpw"))) {
            for id in &ids {
                if !client.auth.contains(id) {
                    client.auth.push(id.clone());
                }
            }
            self.shard.add_auth(client.connection, ids);
        }
    }

    /// Applies a txn Prep produced to the replica and the shard, checking that
    /// what Prep approved applies cleanly.
    fn commit(&mut self, txn: Txn, origin: Option<Origin>) {
        let kind = match &txn.body {
            TxnBody::Error { err } => format!("txn error {err:?}"),
            TxnBody::Multi(bodies) => match bodies.iter().find(|body| matches!(body, TxnBody::Error { .. })) {
                Some(TxnBody::Error { err }) => format!("txn multi failed {err:?}"),
                _ => format!("txn multi ok ({} ops)", if bodies.len() > 3 { "4+".into() } else { bodies.len().to_string() }),
            },
            TxnBody::Create(_) => "txn create".into(),
            TxnBody::Delete { .. } => "txn delete".into(),
            TxnBody::SetData { .. } => "txn setData".into(),
            TxnBody::SetAcl { .. } => "txn setACL".into(),
            TxnBody::Check { .. } => "txn check".into(),
            TxnBody::CreateSession { .. } => "txn createSession".into(),
            TxnBody::CloseSession => "txn closeSession".into(),
        };
        *self.stats.entry(kind).or_default() += 1;
        self.triggers.clear();
        let result = self.replica.apply(&txn, &mut self.triggers);
        match &txn.body {
            TxnBody::Error { .. } => {}
            TxnBody::Multi(bodies) => {
                let failed = bodies.iter().any(|body| matches!(body, TxnBody::Error { .. }));
                if !failed {
                    for (index, sub) in result.multi.iter().enumerate() {
                        assert_eq!(sub.err, ErrorCode::Ok, "op {index} of a multi Prep approved failed to apply: {txn:?}");
                    }
                }
            }
            _ => assert_eq!(result.err, ErrorCode::Ok, "a txn Prep approved failed to apply: {txn:?}"),
        }
        self.out.clear();
        self.shard.apply(&Committed::Txn { txn: Arc::new(txn), origin }, &mut self.out);
        self.handle_outputs();
    }

    /// Checks the shard's frames and performs its closes, as the runtime would.
    fn handle_outputs(&mut self) {
        let outputs = std::mem::take(&mut self.out);
        for output in &outputs {
            match output {
                ShardOutput::Frame { frame, .. } => {
                    assert!(frame.len() >= 4 + 16, "frame of {} bytes is shorter than a reply header", frame.len());
                    let length = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                    assert_eq!(length as usize, frame.len() - 4, "frame length prefix disagrees with its size");
                }
                ShardOutput::Close { connection } => {
                    self.shard.close(*connection);
                    self.clients.retain(|client| client.connection != *connection);
                }
                ShardOutput::WriteDone { .. } | ShardOutput::Established { .. } => {}
            }
        }
        self.out = outputs;
        self.out.clear();
    }

    /// Existing paths, for the generator: a short random walk from `/`.
    fn known_paths(&self, rng: &mut Rng) -> Vec<String> {
        let mut paths = Vec::new();
        let mut current = "/".to_owned();
        for _ in 0..3 {
            let Some(node) = self.replica.get(&current) else { break };
            let mut children: Vec<&str> = node.children.iter().map(|child| &**child).collect();
            if children.is_empty() {
                break;
            }
            children.sort_unstable();
            let child = *rng.pick(&children);
            current = if current == "/" { format!("/{child}") } else { format!("{current}/{child}") };
            paths.push(current.clone());
        }
        paths
    }

    fn step(&mut self, rng: &mut Rng, last_request: &RefCell<String>, last_input: &RefCell<Vec<u8>>) {
        self.now_ms += rng.below(2_000) as i64;
        if self.clients.is_empty() || rng.one_in(200) {
            self.open_client(rng);
        }
        let extra = self.known_paths(rng);
        let request = gen_request(rng, &extra);
        let xid = rng.below(1 << 20) as i32;
        // Through the wire format, sometimes mutated: only what decodes goes on.
        let mut frame = encode_with_header(xid, &request).to_vec();
        if rng.one_in(8) {
            let donor = encode_with_header(xid, &gen_request(rng, &extra));
            frame = mutate(rng, &frame, &donor);
        }
        *last_input.borrow_mut() = frame.clone();
        *last_request.borrow_mut() = "(did not decode)".into();
        let Some((xid, request)) = check_request_frame(&Bytes::from(frame)) else {
            *self.stats.entry("request did not decode".into()).or_default() += 1;
            return;
        };
        *last_request.borrow_mut() = format!("{request:?}");

        let client_index = rng.index(self.clients.len());
        let connection = self.clients[client_index].connection;
        let origin = Origin { server: 0, connection, xid, opcode: request.opcode() };
        if let Request::Auth(packet) = &request {
            let mut client = std::mem::replace(&mut self.clients[client_index], Client { connection, session_id: 0, auth: Vec::new() });
            self.add_auth(&mut client, &packet.scheme, &packet.auth);
            self.clients[client_index] = client;
        } else if let Request::Sync(path) = &request {
            self.out.clear();
            self.shard.apply(&Committed::SyncDone { origin, path: path.path.clone() }, &mut self.out);
            self.handle_outputs();
        } else if request.is_write() {
            // Mostly the client's own session; sometimes a random or dead one.
            let client = &self.clients[client_index];
            let session_id = if rng.one_in(10) { rng.below(8) as i64 } else { client.session_id };
            let auth = if rng.one_in(20) { vec![gen_id(rng)] } else { client.auth.clone() };
            let live = self.replica.sessions().contains_key(&session_id) && !rng.one_in(50);
            let txn = self.prep.prep(self.now_ms, session_id, xid, &request, &auth, live);
            assert_eq!(txn.zxid, self.prep.zxid_last(), "prep returned a txn that is not the last zxid");
            self.commit(txn, Some(origin));
        } else {
            self.out.clear();
            self.shard.read(connection, xid, &request, &mut self.out);
            if let Some(ShardOutput::Frame { frame, .. }) = self.out.last() {
                let err = i32::from_be_bytes([frame[16], frame[17], frame[18], frame[19]]);
                let err = ErrorCode::from_code(err).map_or(err.to_string(), |err| format!("{err:?}"));
                *self.stats.entry(format!("read {} {err}", op::name(request.opcode()))).or_default() += 1;
            }
            self.handle_outputs();
        }
        // Writes fed to read (a confused runtime) must be refused, not crash.
        if rng.one_in(40) && self.clients.iter().any(|client| client.connection == connection) {
            let other = gen_request(rng, &extra);
            self.out.clear();
            self.shard.read(connection, xid, &other, &mut self.out);
            self.handle_outputs();
        }
        // The container manager, and session expiry.
        if rng.one_in(25) {
            for candidate in self.prep.tree().container_candidates(self.now_ms, 4) {
                let txn = self.prep.delete_container(&candidate, self.now_ms);
                self.commit(txn, None);
            }
        }
        if rng.one_in(60) {
            let session_id = rng.below(6) as i64;
            let txn = self.prep.close_session(session_id, 0, self.now_ms);
            self.commit(txn, None);
        }
    }

    /// ZooKeeper refuses to delete its system nodes: PrepRequestProcessor's
    /// getParentPathAndValidate answers BADARGUMENTS for isSpecialPath
    /// (`/`, `/zookeeper`, `/zookeeper/quota`, `/zookeeper/config`).
    fn check_system_nodes(&self) {
        for special in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
            assert!(self.prep.tree().get(special).is_some(), "system node {special} was deleted");
        }
    }

    /// The replica and the shard's tree must be identical and hold ZooKeeper's
    /// system nodes, and Prep's latest state must be what they hold.
    fn check_replicas(&self) {
        self.check_system_nodes();
        let (replica, shard) = (&self.replica, self.shard.tree());
        assert_eq!(replica.last_processed_zxid(), self.prep.zxid_last(), "replica tree is not at Prep's zxid");
        assert_eq!(shard.last_processed_zxid(), self.prep.zxid_last(), "shard tree is not at Prep's zxid");
        assert_eq!(shard.digest(), replica.digest(), "shard tree digest differs from the replica's");
        assert_eq!(shard.node_count(), replica.node_count(), "shard tree node count differs");
        assert_eq!(shard.ephemerals_by_session(), replica.ephemerals_by_session(), "shard ephemerals differ");
        assert_eq!(shard.sessions(), replica.sessions(), "shard sessions differ");
        assert_eq!(shard.data_bytes(), replica.data_bytes(), "shard data_bytes differ");
        // Node by node, ACLs included (the digest does not cover ACLs).
        let mut pending = vec!["/".to_owned()];
        let mut visited = 0;
        while let Some(path) = pending.pop() {
            let Some(node) = replica.get(&path) else { continue };
            visited += 1;
            let other = shard.get(&path).unwrap_or_else(|| panic!("{path} missing from the shard tree"));
            assert_eq!(other.stat, node.stat, "{path}: stat differs in the shard tree");
            assert_eq!(other.data, node.data, "{path}: data differs in the shard tree");
            assert_eq!(other.acl, node.acl, "{path}: ACL differs in the shard tree");
            assert_eq!(other.children, node.children, "{path}: children differ in the shard tree");
            for child in node.children.iter() {
                pending.push(if path == "/" { format!("/{child}") } else { format!("{path}/{child}") });
            }
        }
        assert_eq!(visited, replica.node_count(), "nodes unreachable from / in the replica tree");
        let latest = self.prep.tree();
        let expected = LatestTree::from_tree(replica);
        assert_eq!(latest.last_processed_zxid(), expected.last_processed_zxid(), "Prep's latest state is at another zxid");
        assert_eq!(latest.node_count(), expected.node_count(), "Prep's latest state has another node count");
        for (path, node) in expected.iter() {
            assert_eq!(latest.get(path), Some(node), "{path}: Prep's latest state differs from the replica's");
        }
    }
}

#[test]
fn pipeline_replicas_agree() {
    let seed = seed();
    let steps = iterations().max(1);
    let epochs = steps.div_ceil(EPOCH_STEPS);
    let range = match env_u64("FUZZ_EPOCH") {
        Some(epoch) => epoch..epoch + 1,
        None => 0..epochs,
    };
    let start = Instant::now();
    TAME.with(|tame| tame.set(true));
    let mut txns = 0;
    let mut stats = std::collections::BTreeMap::<String, u64>::new();
    for epoch in range {
        let mut rng = Rng::for_iteration(seed, 2, epoch);
        let step_index = Cell::new(0u64);
        let last_request = RefCell::new(String::new());
        let last_input = RefCell::new(Vec::new());
        let mut zxid_end = 0;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut pipeline = Pipeline::new(&mut rng);
            let epoch_steps = steps.saturating_sub(epoch * EPOCH_STEPS).clamp(1, EPOCH_STEPS);
            for step in 0..epoch_steps {
                step_index.set(step);
                pipeline.step(&mut rng, &last_request, &last_input);
                pipeline.check_system_nodes();
                if step % 64 == 63 {
                    pipeline.check_replicas();
                }
            }
            pipeline.check_replicas();
            zxid_end = pipeline.prep.zxid_last();
            for (kind, count) in &pipeline.stats {
                *stats.entry(kind.clone()).or_default() += count;
            }
        }));
        txns += zxid_end;
        if let Err(payload) = outcome {
            panic!(
                "pipeline fuzz failed: seed {seed:#x}, epoch {epoch}, step {}\n  {}\n  last request: {}\n  \
                 its frame ({} bytes): {}\n  replay: FUZZ_SEED={seed:#x} FUZZ_EPOCH={epoch} RUST_BACKTRACE=1 cargo test --release --test fuzz_decoders pipeline",
                step_index.get(),
                panic_message(payload.as_ref()),
                last_request.borrow(),
                last_input.borrow().len(),
                hex(&last_input.borrow()),
            );
        }
    }
    eprintln!("pipeline_replicas_agree: seed {seed:#x}, {steps} requests, {txns} txns in {:.1?}", start.elapsed());
    if std::env::var_os("FUZZ_STATS").is_some() {
        for (kind, count) in &stats {
            eprintln!("  {count:>8}  {kind}");
        }
    }
}

/// The reply header the shard writes is decodable (a smoke check of the
/// encoder side the decoders above are the inverse of).
#[test]
fn reply_frames_decode() {
    let frame = warden::pipeline::shard::reply_frame(7, 42, ErrorCode::NoNode, None);
    let mut reader = Reader::new(frame.slice(4..));
    let header = ReplyHeader::decode(&mut reader).expect("reply header decodes");
    assert_eq!(header, ReplyHeader { xid: 7, zxid: 42, err: ErrorCode::NoNode.code() });
    assert_eq!(reader.remaining(), 0);
}
