//! Codec and tree benchmarks: decode+encode of the common requests and
//! responses, reply framing, DataTree::apply (create, setData, delete),
//! Shard::read (getData, getChildren) and Prep::prep.
//! `cargo bench --bench codec -- --test` runs each once (a smoke test).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use warden::pipeline::prep::{Prep, PrepConfig};
use warden::pipeline::shard::reply_frame;
use warden::pipeline::{Shard, ShardConfig, ShardOutput};
use warden::proto::codes::op;
use warden::proto::{
    CreateRequest, ErrorCode, GetDataResponse, Jute, MultiOp, MultiRequest, PathWatchRequest, Reader, Request,
    RequestHeader, Response, SetDataRequest, Stat, Writer,
};
use warden::tree::{open_acl_unsafe, DataTree};
use warden::txn::{CreateTxn, Txn, TxnBody};

/// A request frame body (header + request), as the connection hands it to decode.
fn frame_body(xid: i32, request: &Request) -> Bytes {
    let mut writer = Writer::new();
    RequestHeader { xid, opcode: request.opcode() }.encode(&mut writer);
    request.encode(&mut writer);
    writer.into_bytes()
}

/// Decode header + request, then re-encode the request: one round trip.
fn round_trip(frame: &Bytes) -> usize {
    let mut reader = Reader::new(frame.clone());
    let header = RequestHeader::decode(&mut reader).expect("header");
    let request = Request::decode(header.opcode, &mut reader, 1000).expect("request");
    let mut writer = Writer::new();
    request.encode(&mut writer);
    writer.len()
}

fn create_request(path: String, data: usize) -> Request {
    Request::Create {
        opcode: op::CREATE,
        request: CreateRequest { path, data: Some(Bytes::from(vec![b'x'; data])), acl: open_acl_unsafe(), flags: 0 },
    }
}

fn stat() -> Stat {
    Stat { czxid: 5, mzxid: 9, ctime: 1_700_000_000_000, mtime: 1_700_000_000_500, version: 3, data_length: 1024, pzxid: 5, ..Stat::default() }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");

    let get_data = frame_body(1, &Request::GetData(PathWatchRequest { path: "/app/config/node-0042".into(), watch: true }));
    group.throughput(Throughput::Bytes(get_data.len() as u64));
    group.bench_function("getData request decode+encode", |b| b.iter(|| round_trip(black_box(&get_data))));

    let create = frame_body(2, &create_request("/app/locks/lock-0000000042".into(), 100));
    group.throughput(Throughput::Bytes(create.len() as u64));
    group.bench_function("create request (100 B data) decode+encode", |b| b.iter(|| round_trip(black_box(&create))));

    let ops = (0..10)
        .map(|index| match index % 3 {
            0 => MultiOp::Create {
                opcode: op::CREATE,
                request: CreateRequest {
                    path: format!("/app/multi/n{index}"),
                    data: Some(Bytes::from_static(b"value")),
                    acl: open_acl_unsafe(),
                    flags: 0,
                },
            },
            1 => MultiOp::SetData(SetDataRequest { path: format!("/app/multi/n{index}"), data: Some(Bytes::from_static(b"v2")), version: -1 }),
            _ => MultiOp::Check(warden::proto::CheckVersionRequest { path: "/app/multi".into(), version: 0 }),
        })
        .collect();
    let multi = frame_body(3, &Request::Multi(MultiRequest { ops }));
    group.throughput(Throughput::Bytes(multi.len() as u64));
    group.bench_function("multi (10 ops) decode+encode", |b| b.iter(|| round_trip(black_box(&multi))));

    let response = GetDataResponse { data: Some(Bytes::from(vec![7u8; 1024])), stat: stat() };
    let encoded = response.encode_to_bytes();
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("GetDataResponse (1 KiB) decode+encode", |b| {
        b.iter(|| {
            let decoded = GetDataResponse::decode(&mut Reader::new(black_box(encoded.clone()))).expect("decode");
            decoded.encode_to_bytes().len()
        })
    });

    let body = Response::GetData(response.clone());
    group.throughput(Throughput::Bytes(reply_frame(7, 42, ErrorCode::Ok, Some(&body)).len() as u64));
    group.bench_function("reply_frame getData (1 KiB)", |b| {
        b.iter(|| reply_frame(black_box(7), black_box(42), ErrorCode::Ok, Some(black_box(&body))).len())
    });
    group.throughput(Throughput::Bytes(reply_frame(7, 42, ErrorCode::NoNode, None).len() as u64));
    group.bench_function("reply_frame error (header only)", |b| {
        b.iter(|| reply_frame(black_box(7), black_box(42), ErrorCode::NoNode, None).len())
    });
    group.finish();
}

const TREE_NODES: usize = 10_000;

fn node_path(index: usize) -> String {
    format!("/bench/d{:02}/n{index:05}", index % 100)
}

/// Create txns for a 10k-node tree: /bench, 100 directories, then the nodes.
fn create_txns() -> Vec<Txn> {
    let mut paths = vec!["/bench".to_owned()];
    paths.extend((0..100).map(|directory| format!("/bench/d{directory:02}")));
    paths.extend((0..TREE_NODES).map(node_path));
    paths
        .into_iter()
        .enumerate()
        .map(|(index, path)| Txn {
            session_id: 1,
            cxid: index as i32,
            zxid: index as i64 + 1,
            time_ms: 1_700_000_000_000,
            body: TxnBody::Create(CreateTxn {
                opcode: op::CREATE,
                path: path.into(),
                data: Some(Bytes::from_static(&[b'd'; 100])),
                acl: open_acl_unsafe().into(),
                ephemeral_owner: 0,
                parent_cversion: 1,
            }),
        })
        .collect()
}

fn tree(c: &mut Criterion) {
    let txns = create_txns();
    let mut group = c.benchmark_group("tree");
    group.sample_size(10);
    group.throughput(Throughput::Elements(txns.len() as u64));
    group.bench_function("DataTree::apply create x10k (builds a 10k-node tree)", |b| {
        b.iter_batched(
            DataTree::new,
            |mut tree| {
                let mut triggers = Vec::new();
                for txn in &txns {
                    triggers.clear();
                    tree.apply(txn, &mut triggers);
                }
                tree
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut full = DataTree::new();
    let mut triggers = Vec::new();
    for txn in &txns {
        full.apply(txn, &mut triggers);
    }
    assert_eq!(full.node_count(), 4 + 1 + 100 + TREE_NODES);

    // setData on the 10k-node tree: the steady-state write of workloads A/B.
    // The txns cycle over every node; zxids keep rising across iterations.
    let mut group = c.benchmark_group("tree");
    let value = Bytes::from_static(&[b's'; 100]);
    let mut set_tree = full.clone();
    let mut set_zxid = txns.len() as i64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("DataTree::apply setData (10k-node tree)", |b| {
        b.iter(|| {
            set_zxid += 1;
            let txn = Txn {
                session_id: 1,
                cxid: set_zxid as i32,
                zxid: set_zxid,
                time_ms: 1_700_000_000_000,
                body: TxnBody::SetData { path: node_path(set_zxid as usize % TREE_NODES), data: Some(value.clone()), version: -1 },
            };
            triggers.clear();
            black_box(set_tree.apply(black_box(&txn), &mut triggers));
        })
    });
    drop(set_tree);

    // Deleting every leaf of the 10k-node tree (each batch starts from a copy).
    let delete_txns: Vec<Txn> = (0..TREE_NODES)
        .map(|index| Txn {
            session_id: 1,
            cxid: index as i32,
            zxid: (txns.len() + index + 1) as i64,
            time_ms: 1_700_000_000_000,
            body: TxnBody::Delete { path: node_path(index) },
        })
        .collect();
    group.sample_size(10);
    group.throughput(Throughput::Elements(delete_txns.len() as u64));
    group.bench_function("DataTree::apply delete x10k (empties a 10k-node tree)", |b| {
        b.iter_batched(
            || full.clone(),
            |mut tree| {
                for txn in &delete_txns {
                    triggers.clear();
                    tree.apply(txn, &mut triggers);
                }
                assert_eq!(tree.node_count(), 4 + 1 + 100);
                tree
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    let mut shard = Shard::new(full, ShardConfig { password_secret: 1 });
    shard.open(1, "127.0.0.1".into(), false);
    let requests: Vec<Request> = (0..1024)
        .map(|index| Request::GetData(PathWatchRequest { path: node_path(index * 7 % TREE_NODES), watch: false }))
        .collect();
    let mut out: Vec<ShardOutput> = Vec::with_capacity(4);
    shard.read(1, 1, &requests[1], &mut out);
    match &out[..] {
        [ShardOutput::Frame { frame, .. }] => assert_eq!(&frame[16..20], &[0, 0, 0, 0], "getData must succeed"),
        other => panic!("unexpected read output {other:?}"),
    }
    let mut group = c.benchmark_group("tree");
    let mut next = 0;
    group.bench_function("Shard::read getData (10k-node tree)", |b| {
        b.iter(|| {
            out.clear();
            next = (next + 1) % requests.len();
            shard.read(1, next as i32, black_box(&requests[next]), &mut out);
            out.len()
        })
    });
    // getChildren of a directory with 100 children (reply encoding dominates).
    let children = Request::GetChildren(PathWatchRequest { path: "/bench/d42".into(), watch: false });
    group.bench_function("Shard::read getChildren (100 children)", |b| {
        b.iter(|| {
            out.clear();
            shard.read(1, 7, black_box(&children), &mut out);
            out.len()
        })
    });

    // Prep of creates: every create is of a fresh path (an existing one would
    // measure the NodeExists error path instead), under 100 parents; the Prep
    // is rebuilt every 10k creates, outside the timing, so memory stays flat
    // and the tree stays at the 10k-node size of the benches above.
    let fresh_prep = || {
        let mut prep = Prep::new(&DataTree::new(), PrepConfig { extended_types_enabled: true });
        prep.prep(0, 1, 0, &create_request("/prep".into(), 0), &[], true);
        for directory in 0..100 {
            prep.prep(0, 1, 0, &create_request(format!("/prep/d{directory:02}"), 0), &[], true);
        }
        prep
    };
    let requests: Vec<Request> =
        (0..TREE_NODES).map(|index| create_request(format!("/prep/d{:02}/n{index:05}", index % 100), 100)).collect();
    group.bench_function("Prep::prep create (100 B data)", |b| {
        b.iter_custom(|iterations| {
            let mut total = std::time::Duration::ZERO;
            let mut remaining = iterations as usize;
            while remaining > 0 {
                let chunk = remaining.min(TREE_NODES);
                let mut prep = fresh_prep();
                let start = std::time::Instant::now();
                for request in &requests[..chunk] {
                    black_box(prep.prep(1, 1, 1, black_box(request), &[], true).zxid);
                }
                total += start.elapsed();
                drop(prep);
                remaining -= chunk;
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, codec, tree);
criterion_main!(benches);
