//! The fuzz targets of `warden::fuzzing`, on stable and without cargo-fuzz:
//!
//! 1. `corpus_and_regressions_replay`: every file in `fuzz/corpus/<target>/`
//!    (seeds) and `fuzz/regressions/<target>/` (inputs that once crashed a
//!    target), and the seeds as generated now, run through their target. A
//!    failure names the file and how to replay it under the fuzzer.
//! 2. `targets_survive_mutated_seeds`: a short seeded mutation run of every
//!    target from its seeds, so the suite exercises each briefly even where
//!    cargo-fuzz is not installed (`fuzz/smoke.sh` runs libFuzzer itself).
//! 3. `every_record_and_opcode_is_a_kind` and `every_target_has_a_fuzz_binary`:
//!    nothing the codec can decode is left out of the targets.
//! 4. `write_seed_corpus` (ignored; run by hand after a format change)
//!    regenerates `fuzz/corpus/` from warden's own encoders:
//!    `cargo test --release --test fuzz_corpus -- --ignored write_seed_corpus`.
//!
//! Environment: `FUZZ_SEED` (decimal or 0x-hex), `FUZZ_ITERATIONS` (mutated
//! inputs per target, default 20 000), `FUZZ_TARGET` and `FUZZ_ITERATION`
//! (replay one target's one iteration, printing its input).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warden::fuzzing::{self, env_u64, hex, mutate, panic_message, CountingAllocator, RECORD_KINDS, REQUEST_OPCODES, TARGETS};
use warden::pipeline::auth::digest_id;
use warden::pipeline::{Committed, Origin, ToSequencer};
use warden::proto::codes::op;
use warden::proto::frame::encode_frame;
use warden::proto::records::RequestError;
use warden::proto::*;
use warden::rng::Rng;
use warden::storage::log::{encode_segment_header, BatchEncoder};
use warden::storage::snapshot::encode_snapshot;
use warden::storage::txn_codec::txn_to_bytes;
use warden::tree::{open_acl_unsafe, DataTree};
use warden::txn::{ephemeral_owner, CreateTxn, Txn, TxnBody};
use warden::zab::election::{Notification, ServerState, Vote};
use warden::zab::wire::{self, PeerMessage};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// One input that takes this long has gone quadratic or worse (libFuzzer's
/// smoke run uses `-timeout` for the same purpose).
const INPUT_TIME_MAX: Duration = Duration::from_secs(2);

const DEFAULT_SEED: u64 = 0xf022_c0de_5eed_0001;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs one input through `target`; the failure, if any, as text.
fn run_one(target: &fuzzing::Target, input: &[u8]) -> Result<(), String> {
    let start = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let elapsed = start.elapsed();
    match outcome {
        Err(payload) => Err(panic_message(payload.as_ref())),
        Ok(()) if elapsed > INPUT_TIME_MAX => Err(format!("took {elapsed:?} (limit {INPUT_TIME_MAX:?})")),
        Ok(()) => Ok(()),
    }
}

/// Describes a failing input: its start in hex, and where the whole of it
/// was saved (under target/tmp), ready to copy into fuzz/regressions/.
fn describe_input(target: &str, label: &str, input: &[u8]) -> String {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let path = directory.join(format!("{target}-{label}"));
    let saved = std::fs::create_dir_all(&directory).and_then(|()| std::fs::write(&path, input));
    let shown = &input[..input.len().min(256)];
    let more = if shown.len() < input.len() { "..." } else { "" };
    match saved {
        Ok(()) => format!("input ({} bytes): {}{more}\n  saved: {}", input.len(), hex(shown), path.display()),
        Err(error) => format!("input ({} bytes): {}{more}\n  (not saved: {error})", input.len(), hex(shown)),
    }
}

// ---------------------------------------------------------------------------
// Seeds: valid inputs built with warden's own encoders.

/// A seed: a file name (what it holds) and its bytes, mode byte included.
type Seed = (String, Vec<u8>);

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut input = vec![mode];
    input.extend_from_slice(bytes);
    input
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2).map(|index| u8::from_str_radix(&text[2 * index..2 * index + 2], 16).expect("hex")).collect()
}

/// The client-to-server frames of each connection in a golden file.
fn golden_connections(name: &str) -> Vec<Vec<Vec<u8>>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    let mut connections: Vec<Vec<Vec<u8>>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("# connection") {
            connections.push(Vec::new());
        } else if let (Some(frame), Some(connection)) = (line.strip_prefix("c2s "), connections.last_mut()) {
            connection.push(unhex(frame.trim()));
        }
    }
    connections
}

fn frame_seeds() -> Vec<Seed> {
    let stream = |frames: &[&[u8]]| {
        let mut out = BytesMut::new();
        for frame in frames {
            encode_frame(frame, &mut out);
        }
        out.to_vec()
    };
    // The config byte picks the frame limit (modulo 3) and how the stream is
    // split into reads: 2, the server's limit; 1, 4 KiB.
    let server = 2;
    let mut seeds = vec![("ruok".to_owned(), with_mode(server, b"ruok"))];
    for golden in ["kazoo.frames", "zkcli.frames"] {
        let client = golden.trim_end_matches(".frames");
        for (index, connection) in golden_connections(golden).iter().enumerate() {
            let Some((connect, requests)) = connection.split_first() else { continue };
            let all: Vec<&[u8]> = connection.iter().map(Vec::as_slice).collect();
            seeds.push((format!("{client}-connection-{index}"), with_mode(server, &stream(&all))));
            // The connect frame and one request of each opcode, each alone: small inputs fuzz faster.
            let mut seen = std::collections::BTreeSet::new();
            for request in requests {
                let Some(opcode) = request.get(4..8) else { continue };
                let opcode = i32::from_be_bytes([opcode[0], opcode[1], opcode[2], opcode[3]]);
                if seen.insert(opcode) {
                    let name = format!("{client}-{}", op::name(opcode).to_lowercase());
                    seeds.push((name, with_mode(1, &stream(&[connect, request]))));
                }
            }
        }
    }
    seeds
}

fn stat() -> Stat {
    Stat {
        czxid: 3,
        mzxid: 0x1_0000_0004,
        ctime: 1_700_000_000_000,
        mtime: 1_700_000_000_500,
        version: 2,
        cversion: 1,
        aversion: 0,
        ephemeral_owner: 0x100,
        data_length: 1,
        num_children: 1,
        pzxid: 5,
    }
}

fn digest_acl() -> Vec<Acl> {
    vec![
        Acl { perms: 31, id: Id { scheme: "digest".into(), id: digest_id("u:p") } },
        Acl { perms: 1, id: Id { scheme: "world".into(), id: "anyone".into() } },
    ]
}

/// A request of every opcode `Request` has.
fn requests() -> Vec<Request> {
    let create = CreateRequest { path: "/a".into(), data: Some(Bytes::from_static(b"x")), acl: open_acl_unsafe(), flags: 0 };
    let ttl = CreateTtlRequest { path: "/t".into(), data: None, acl: digest_acl(), flags: 5, ttl: 1000 };
    let path = |path: &str| PathRequest { path: path.into() };
    let watch = |path: &str| PathWatchRequest { path: path.into(), watch: true };
    let multi = MultiRequest {
        ops: vec![
            MultiOp::Create { opcode: op::CREATE2, request: create.clone() },
            MultiOp::CreateTtl(ttl.clone()),
            MultiOp::Delete { opcode: op::DELETE, request: DeleteRequest { path: "/b".into(), version: -1 } },
            MultiOp::SetData(SetDataRequest { path: "/a".into(), data: None, version: 3 }),
            MultiOp::Check(CheckVersionRequest { path: "/a".into(), version: 0 }),
        ],
    };
    let multi_read = MultiRequest { ops: vec![MultiOp::GetData(watch("/a")), MultiOp::GetChildren(watch("/"))] };
    let strings = |count: usize| (0..count).map(|index| format!("/w{index}")).collect::<Vec<_>>();
    vec![
        Request::Create { opcode: op::CREATE, request: create.clone() },
        Request::Create { opcode: op::CREATE2, request: create.clone() },
        Request::Create { opcode: op::CREATE_CONTAINER, request: CreateRequest { flags: 4, ..create } },
        Request::CreateTtl(ttl),
        Request::Delete(DeleteRequest { path: "/a".into(), version: 1 }),
        Request::DeleteContainer(path("/c")),
        Request::Exists(watch("/a")),
        Request::GetData(watch("/a")),
        Request::SetData(SetDataRequest { path: "/a".into(), data: Some(Bytes::from_static(b"data")), version: -1 }),
        Request::GetAcl(path("/a")),
        Request::SetAcl(SetAclRequest { path: "/a".into(), acl: digest_acl(), version: 0 }),
        Request::GetChildren(watch("/")),
        Request::GetChildren2(watch("/")),
        Request::Sync(path("/")),
        Request::Ping,
        Request::Check(CheckVersionRequest { path: "/a".into(), version: 2 }),
        Request::Multi(multi),
        Request::MultiRead(multi_read),
        Request::Reconfig(ReconfigRequest {
            joining_servers: "server.4=127.0.0.1:2888:3888".into(),
            leaving_servers: "1".into(),
            new_members: String::new(),
            cur_config_id: -1,
        }),
        Request::CheckWatches(WatchTypeRequest { path: "/a".into(), watcher_type: 3 }),
        Request::RemoveWatches(WatchTypeRequest { path: "/a".into(), watcher_type: 1 }),
        Request::Auth(AuthPacket { auth_type: 0, scheme: "digest".into(), auth: Bytes::from_static(b"u:p") }),
        Request::SetWatches(SetWatches { relative_zxid: 7, data_watches: strings(2), exist_watches: strings(1), child_watches: strings(3) }),
        Request::SetWatches2(SetWatches2 {
            relative_zxid: 7,
            data_watches: strings(1),
            exist_watches: strings(1),
            child_watches: strings(1),
            persistent_watches: strings(2),
            persistent_recursive_watches: strings(2),
        }),
        Request::GetEphemerals(path("/")),
        Request::GetAllChildrenNumber(path("/")),
        Request::AddWatch(AddWatchRequest { path: "/a".into(), mode: 1 }),
        Request::WhoAmI,
        Request::CloseSession,
    ]
}

/// The index of a kind of `RECORD_KINDS` as `jute_records`' selector byte.
fn selector(name: &str) -> u8 {
    let index = RECORD_KINDS.iter().position(|kind| kind.name == name).unwrap_or_else(|| panic!("no record kind {name}"));
    u8::try_from(index).expect("fewer than 256 record kinds")
}

fn request_selector(opcode: i32) -> u8 {
    let index = REQUEST_OPCODES.iter().position(|&known| known == opcode).expect("a known opcode");
    u8::try_from(RECORD_KINDS.len() - REQUEST_OPCODES.len() + index).expect("fewer than 256 record kinds")
}

fn jute_seed<T: Jute>(kind: &str, value: &T) -> Seed {
    (kind.to_owned(), with_mode(selector(kind), &value.encode_to_bytes()))
}

fn jute_seeds() -> Vec<Seed> {
    // Zeros decode as every jute record (null-free lengths, counts and
    // numbers), so one all-zero body seeds every kind.
    let mut seeds: Vec<Seed> = RECORD_KINDS
        .iter()
        .enumerate()
        .map(|(index, kind)| (format!("{}-zeros", kind.name.replace([' ', '(', ')'], "_")), with_mode(index as u8, &[0; 64])))
        .collect();
    for request in requests() {
        let mut writer = Writer::new();
        request.encode(&mut writer);
        let name = format!("request-{}", op::name(request.opcode()).to_lowercase());
        seeds.push((name, with_mode(request_selector(request.opcode()), &writer.into_bytes())));
    }
    seeds.extend([
        jute_seed("Id", &Id { scheme: "digest".into(), id: digest_id("u:p") }),
        jute_seed("Acl", &digest_acl()[0]),
        jute_seed("Stat", &stat()),
        jute_seed("ClientInfo", &ClientInfo { auth_scheme: "ip".into(), user: "127.0.0.1".into() }),
        jute_seed("RequestHeader", &RequestHeader { xid: 7, opcode: op::CREATE }),
        jute_seed("ReplyHeader", &ReplyHeader { xid: 7, zxid: 0x1_0000_0001, err: ErrorCode::NoNode.code() }),
        jute_seed("MultiHeader", &MultiHeader { opcode: op::CHECK, done: false, err: -1 }),
        jute_seed("WatcherEvent", &WatcherEvent { event_type: 3, state: 3, path: "/a".into() }),
        jute_seed("StatResponse", &StatResponse { stat: stat() }),
        jute_seed("PathResponse", &PathResponse { path: "/a/s-0000000001".into() }),
        jute_seed("Create2Response", &Create2Response { path: "/a".into(), stat: stat() }),
        jute_seed("GetDataResponse", &GetDataResponse { data: Some(Bytes::from_static(b"x")), stat: stat() }),
        jute_seed("GetChildrenResponse", &GetChildrenResponse { children: vec!["a".into(), "zookeeper".into()] }),
        jute_seed("GetChildren2Response", &GetChildren2Response { children: vec!["a".into()], stat: stat() }),
        jute_seed("GetAclResponse", &GetAclResponse { acl: digest_acl(), stat: stat() }),
        jute_seed("IntResponse", &IntResponse { value: 42 }),
        jute_seed("StringsResponse", &StringsResponse { values: vec!["/a/e".into()] }),
        jute_seed("WhoAmIResponse", &WhoAmIResponse { client_info: vec![ClientInfo { auth_scheme: "digest".into(), user: "u".into() }] }),
    ]);
    let mut writer = Writer::new();
    ConnectRequest { timeout_ms: 30_000, password: Bytes::from(vec![0; 16]), read_only: Some(false), ..Default::default() }
        .encode(&mut writer);
    seeds.push(("ConnectRequest".into(), with_mode(selector("ConnectRequest"), &writer.into_bytes())));
    let mut writer = Writer::new();
    ConnectResponse { timeout_ms: 30_000, session_id: 0x100, password: Bytes::from(vec![7; 16]), ..Default::default() }
        .encode(&mut writer);
    seeds.push(("ConnectResponse".into(), with_mode(selector("ConnectResponse"), &writer.into_bytes())));
    if let Some(Request::Multi(multi)) = requests().into_iter().find(|request| matches!(request, Request::Multi(_))) {
        let mut writer = Writer::new();
        multi.encode(&mut writer);
        seeds.push(("MultiRequest".into(), with_mode(selector("MultiRequest"), &writer.into_bytes())));
    }
    let response = MultiResponse {
        results: vec![
            MultiResult::Create { path: "/a".into() },
            MultiResult::Create2 { path: "/b".into(), stat: stat() },
            MultiResult::Delete,
            MultiResult::SetData { stat: stat() },
            MultiResult::Check,
            MultiResult::GetChildren { children: vec!["a".into()] },
            MultiResult::GetData { data: None, stat: stat() },
            MultiResult::Error { err: ErrorCode::NoNode },
        ],
    };
    let mut writer = Writer::new();
    response.encode(&mut writer);
    seeds.push(("MultiResponse".into(), with_mode(selector("MultiResponse"), &writer.into_bytes())));
    for (index, txn) in txns().iter().enumerate() {
        seeds.push((format!("txn-{index}"), with_mode(selector("Txn"), &txn_to_bytes(txn))));
    }
    seeds
}

const SESSION: i64 = 0x100;

/// Txns of every body kind, with consecutive zxids from 1, that apply
/// cleanly to a fresh tree.
fn txns() -> Vec<Txn> {
    let create = |opcode: i32, path: &str, owner: i64| {
        TxnBody::Create(CreateTxn {
            opcode,
            path: path.into(),
            data: Some(Bytes::copy_from_slice(path.as_bytes())),
            acl: if owner == 0 { digest_acl() } else { open_acl_unsafe() }.into(),
            ephemeral_owner: owner,
            parent_cversion: 1,
        })
    };
    let bodies = vec![
        TxnBody::CreateSession { timeout_ms: 30_000 },
        create(op::CREATE, "/a", 0),
        create(op::CREATE2, "/a/e", SESSION),
        create(op::CREATE_CONTAINER, "/c", ephemeral_owner::CONTAINER),
        create(op::CREATE_TTL, "/t", ephemeral_owner::ttl(1000)),
        TxnBody::SetData { path: "/a".into(), data: None, version: 1 },
        TxnBody::SetAcl { path: "/a".into(), acl: open_acl_unsafe(), version: 1 },
        TxnBody::Check { path: "/a".into() },
        TxnBody::Multi(vec![create(op::CREATE, "/m", 0), TxnBody::SetData { path: "/m".into(), data: None, version: 1 }]),
        TxnBody::Multi(vec![TxnBody::Error { err: ErrorCode::Ok }, TxnBody::Error { err: ErrorCode::NoNode }]),
        TxnBody::Error { err: ErrorCode::NodeExists },
        TxnBody::Delete { path: "/t".into() },
        TxnBody::CloseSession,
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(index, body)| Txn { session_id: SESSION, cxid: index as i32, zxid: index as i64 + 1, time_ms: 1_700_000_000_000 + index as i64, body })
        .collect()
}

/// A segment of the txns in batches of `batch_size`, and each batch's records.
fn segment(txns: &[Txn], batch_size: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut file = encode_segment_header(txns.first().map_or(1, |txn| txn.zxid));
    let mut payloads = Vec::new();
    for batch in txns.chunks(batch_size) {
        let mut encoder = BatchEncoder::new();
        for txn in batch {
            encoder.push(txn);
        }
        let bytes = encoder.finish();
        let payload_bytes = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        payloads.push(bytes[32..32 + payload_bytes].to_vec());
        file.extend_from_slice(bytes);
    }
    (file, payloads)
}

/// `log_records`' compact form of a segment (see `fuzzing::compact_segment`).
fn compact(first_zxid: i64, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut description = first_zxid.to_be_bytes().to_vec();
    for payload in payloads {
        description.extend_from_slice(&u16::try_from(payload.len()).expect("a small batch").to_be_bytes());
        description.extend_from_slice(payload);
    }
    description
}

fn log_seeds() -> Vec<Seed> {
    let txns = txns();
    let (one_batch, one_payload) = segment(&txns[..3], 16);
    let (batches, payloads) = segment(&txns, 4);
    let mut torn = batches.clone();
    torn.extend_from_slice(&segment(&txns[..2], 4).0[4096..4096 + 100]);
    let mut corrupt = batches.clone();
    corrupt[4096 + 40] ^= 1; // inside the first batch's first record: a valid batch follows
    vec![
        ("empty-segment".into(), with_mode(0, &encode_segment_header(1))),
        ("one-batch".into(), with_mode(0, &one_batch)),
        ("batches".into(), with_mode(0, &batches)),
        ("torn-tail".into(), with_mode(0, &torn)),
        ("corrupt".into(), with_mode(0, &corrupt)),
        ("batches-repaired".into(), with_mode(1, &batches)),
        ("one-batch-compact".into(), with_mode(2, &compact(1, &one_payload))),
        ("batches-compact".into(), with_mode(2, &compact(1, &payloads))),
    ]
}

fn snapshot_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    let empty = encode_snapshot(&tree);
    // Applied up to before the CloseSession, so that the session and its ephemeral are in the snapshot.
    let txns = txns();
    for txn in &txns[..txns.len() - 1] {
        tree.apply(txn, &mut triggers);
    }
    let full = encode_snapshot(&tree);
    for (name, file) in [("empty", empty), ("tree", full)] {
        seeds.push((format!("{name}-file"), with_mode(0, &file)));
        // Mode 1: zxid and payload, the header made by the target.
        let zxid = &file[12..20];
        let mut sealed = zxid.to_vec();
        sealed.extend_from_slice(&file[64..]);
        seeds.push((format!("{name}-payload"), with_mode(1, &sealed)));
    }
    seeds
}

fn peer_messages() -> Vec<PeerMessage> {
    let origin = |xid: i32, opcode: i32| Origin { server: 2, connection: (1 << 48) | 9, xid, opcode };
    let txns = txns();
    let vote = Vote { leader: 3, zxid: 0x1_0000_0005, election_epoch: 2, peer_epoch: 1 };
    let mut messages = vec![
        PeerMessage::Hello { sid: 1 },
        PeerMessage::Notification(Notification { vote, state: ServerState::Looking, sid: 1 }),
        PeerMessage::Notification(Notification { vote, state: ServerState::Leading, sid: 3 }),
        PeerMessage::FollowerInfo { sid: 2, zxid: 0x1_0000_0004 },
        PeerMessage::ObserverInfo { sid: 4, zxid: 0 },
        PeerMessage::AckEpoch { last_logged_zxid: 0x1_0000_0004, current_epoch: Some(1) },
        PeerMessage::AckEpoch { last_logged_zxid: 0, current_epoch: None },
        PeerMessage::Ack { zxid: 0x2_0000_0001 },
        PeerMessage::Forward(ToSequencer::Sync { origin: origin(3, op::SYNC), path: "/".into() }),
        PeerMessage::Forward(ToSequencer::CreateSession { origin: origin(0, op::CREATE_SESSION), timeout_ms: 30_000 }),
        PeerMessage::Forward(ToSequencer::Revalidate { origin: origin(0, op::CREATE_SESSION), session_id: SESSION, timeout_ms: 4000 }),
        PeerMessage::Forward(ToSequencer::Touch { session_ids: vec![SESSION, SESSION + 1] }),
        PeerMessage::LeaderInfo { zxid: 0x2_0000_0000, secret: 0x005e_c2e7 },
        PeerMessage::Diff { zxid: 0x1_0000_0004 },
        PeerMessage::Trunc { zxid: 0x1_0000_0002 },
        PeerMessage::Snap { zxid: 0x1_0000_0004, bytes: 4096 },
        PeerMessage::SnapChunk { bytes: Bytes::from(encode_snapshot(&DataTree::new())) },
        PeerMessage::SnapEnd,
        PeerMessage::Commit { zxid: 1 },
        PeerMessage::NewLeader { zxid: 0x2_0000_0000 },
        PeerMessage::UpToDate,
        PeerMessage::Reply(Committed::SyncDone { origin: origin(3, op::SYNC), path: "/".into() }),
        PeerMessage::Reply(Committed::Revalidated { origin: origin(0, op::CREATE_SESSION), session_id: SESSION, timeout_ms: 4000, valid: true }),
        PeerMessage::Reply(Committed::Failed { origin: origin(5, op::SET_DATA), err: ErrorCode::SystemError }),
        PeerMessage::Ping { zxid: 0x1_0000_0004 },
    ];
    for (index, txn) in txns.into_iter().enumerate() {
        let origin = (index % 2 == 0).then(|| origin(index as i32, op::CREATE));
        let (zxid, txn) = (txn.zxid, Arc::new(txn));
        messages.push(if index % 3 == 0 {
            PeerMessage::Inform { zxid, txn, origin }
        } else {
            PeerMessage::Proposal { zxid, txn, origin }
        });
    }
    for request in requests() {
        if request.is_write() || matches!(request, Request::Sync(_)) {
            messages.push(PeerMessage::Forward(ToSequencer::Write {
                origin: origin(11, request.opcode()),
                session_id: SESSION,
                request,
                auth: vec![Id { scheme: "ip".into(), id: "127.0.0.1".into() }].into(),
            }));
        }
    }
    messages
}

fn peer_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut stream = BytesMut::new();
    let mut counts = BTreeMap::<&str, usize>::new();
    for message in peer_messages() {
        let mut frame = BytesMut::new();
        wire::encode(&message, &mut frame).unwrap_or_else(|error| panic!("encode {}: {error}", message.name()));
        let count = counts.entry(message.name()).or_default();
        seeds.push((format!("{}-{count}", message.name()), with_mode(0, &frame[wire::FRAME_PREFIX_BYTES..])));
        *count += 1;
        if !matches!(message, PeerMessage::SnapChunk { .. }) {
            stream.extend_from_slice(&frame);
        }
    }
    // Mode 3: a stream with the quorum port's limit; mode 7: the election port's.
    seeds.push(("stream-quorum".into(), with_mode(3, &stream)));
    let mut election = BytesMut::new();
    for message in peer_messages().iter().filter(|message| matches!(message, PeerMessage::Hello { .. } | PeerMessage::Notification(_))) {
        wire::encode(message, &mut election).expect("encodes");
    }
    seeds.push(("stream-election".into(), with_mode(7, &election)));
    seeds
}

fn seeds(target: &str) -> Vec<Seed> {
    match target {
        "frame" => frame_seeds(),
        "jute_records" => jute_seeds(),
        "log_records" => log_seeds(),
        "snapshot" => snapshot_seeds(),
        "peer_messages" => peer_seeds(),
        other => panic!("no seeds for target {other}: add them to tests/fuzz_corpus.rs"),
    }
}

/// Files in `directory` (none if it does not exist), sorted.
fn files(directory: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(directory) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|entry| entry.expect("directory entry").path()).filter(|path| path.is_file()).collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn corpus_and_regressions_replay() {
    assert!(fuzzing::allocation_counted(), "CountingAllocator is not the global allocator");
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for target in TARGETS {
        let mut count = 0;
        for (name, input) in seeds(target.name) {
            count += 1;
            if let Err(error) = run_one(target, &input) {
                failures.push(format!("{}: generated seed {name}: {error}\n  {}", target.name, describe_input(target.name, &name, &input)));
            }
        }
        for kind in ["corpus", "regressions"] {
            for path in files(&fuzz_dir().join(kind).join(target.name)) {
                count += 1;
                let input = std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
                if let Err(error) = run_one(target, &input) {
                    failures.push(format!(
                        "{}: {}: {error}\n  replay: cd fuzz && cargo fuzz run --sanitizer none {} {}",
                        target.name,
                        path.display(),
                        target.name,
                        path.strip_prefix(fuzz_dir()).unwrap_or(&path).display()
                    ));
                }
            }
        }
        counts.push(format!("{} {count}", target.name));
    }
    assert!(failures.is_empty(), "{} inputs failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("corpus_and_regressions_replay: {}", counts.join(", "));
}

#[test]
fn targets_survive_mutated_seeds() {
    assert!(fuzzing::allocation_counted(), "CountingAllocator is not the global allocator");
    let seed = env_u64("FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let iterations = env_u64("FUZZ_ITERATIONS").unwrap_or(20_000);
    let only_target = std::env::var("FUZZ_TARGET").ok();
    let only_iteration = env_u64("FUZZ_ITERATION");
    let start = Instant::now();
    for (stream, target) in TARGETS.iter().enumerate() {
        if only_target.as_deref().is_some_and(|name| name != target.name) {
            continue;
        }
        let seeds = seeds(target.name);
        let range = match only_iteration {
            Some(iteration) => iteration..iteration + 1,
            None => 0..iterations,
        };
        for iteration in range {
            let mut rng = Rng::for_iteration(seed, stream as u64, iteration);
            let (_, base) = rng.pick(&seeds);
            let (_, donor) = rng.pick(&seeds);
            // Keep the mode byte most of the time: it selects what the rest means.
            let mut input = mutate(&mut rng, &base[1..], &donor[1..]);
            input.insert(0, if rng.one_in(8) { rng.next_u64() as u8 } else { base[0] });
            if only_iteration.is_some() {
                eprintln!("{} iteration {iteration}, {}", target.name, describe_input(target.name, &format!("{seed:#x}-{iteration}"), &input));
            }
            if let Err(error) = run_one(target, &input) {
                panic!(
                    "fuzz target {} failed: seed {seed:#x}, iteration {iteration}\n  {error}\n  {}\n  \
                     replay: FUZZ_SEED={seed:#x} FUZZ_TARGET={} FUZZ_ITERATION={iteration} cargo test --release --test fuzz_corpus targets_survive\n  \
                     once fixed, add the saved input to fuzz/regressions/{}/ (see fuzz/README.md)",
                    target.name,
                    describe_input(target.name, &format!("{seed:#x}-{iteration}"), &input),
                    target.name,
                    target.name,
                );
            }
        }
    }
    eprintln!("targets_survive_mutated_seeds: seed {seed:#x}, {iterations} inputs per target in {:.1?}", start.elapsed());
}

/// Every record `proto/records.rs` defines and every opcode `Request::decode`
/// knows has a kind in `jute_records`, so a new one cannot go unfuzzed.
#[test]
fn every_record_and_opcode_is_a_kind() {
    let source = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proto/records.rs")).expect("read records.rs");
    let names: Vec<&str> = RECORD_KINDS.iter().map(|kind| kind.name).collect();
    let mut missing = Vec::new();
    for line in source.lines() {
        let Some((_, rest)) = line.split_once("pub struct ") else { continue };
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if !names.contains(&name.as_str()) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "records without a kind in fuzzing::RECORD_KINDS: {missing:?}");
    let candidates = (-200..=200).chain([i32::MIN, i32::MAX]);
    for opcode in candidates {
        let known = !matches!(Request::decode(opcode, &mut Reader::new(Bytes::new()), 1), Err(RequestError::UnknownOpcode(_)));
        assert_eq!(known, REQUEST_OPCODES.contains(&opcode), "opcode {opcode} ({}): REQUEST_OPCODES is out of date", op::name(opcode));
    }
    let decodable: Vec<i32> = requests().iter().map(Request::opcode).collect();
    for opcode in REQUEST_OPCODES {
        assert!(decodable.contains(opcode), "no seed request for opcode {opcode} in tests/fuzz_corpus.rs");
    }
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("read fuzz/Cargo.toml");
    for target in TARGETS {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{}.rs", target.name));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        assert!(source.contains(&format!("warden::fuzzing::{}(data)", target.name)), "{} does not call its target", path.display());
        assert!(manifest.contains(&format!("name = \"{}\"", target.name)), "fuzz/Cargo.toml has no [[bin]] {}", target.name);
    }
}

/// Regenerates `fuzz/corpus/<target>/` from the encoders (run by hand after
/// a format change; the fuzzer's own finds are never written there).
#[test]
#[ignore]
fn write_seed_corpus() {
    for target in TARGETS {
        let directory = fuzz_dir().join("corpus").join(target.name);
        if directory.exists() {
            std::fs::remove_dir_all(&directory).expect("remove the old corpus");
        }
        std::fs::create_dir_all(&directory).expect("create the corpus directory");
        let seeds = seeds(target.name);
        for (name, input) in &seeds {
            std::fs::write(directory.join(name), input).expect("write a seed");
        }
        eprintln!("{}: {} seeds", directory.display(), seeds.len());
    }
}
