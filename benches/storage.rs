//! Storage benchmarks: snapshot encode/stream/decode of a 100k-znode tree, log batch
//! encoding (1, 64 and 1024 setData txns) and scanning a 10k-record segment.
//! `cargo bench --bench storage -- --test` runs each once (a smoke test).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use warden::proto::codes::op;
use warden::storage::log::{encode_segment_header, scan_segment, BatchEncoder};
use warden::storage::snapshot::{decode_snapshot, encode_snapshot, stream_snapshot};
use warden::tree::{open_acl_unsafe, DataTree};
use warden::txn::{CreateTxn, Txn, TxnBody};

const SNAPSHOT_NODES: usize = 100_000;
const DIRECTORIES: usize = 100;
const VALUE_BYTES: usize = 100;

fn create_txn(zxid: i64, path: String, data: Option<Bytes>, parent_cversion: i32) -> Txn {
    Txn {
        session_id: 1,
        cxid: zxid as i32,
        zxid,
        time_ms: 1_700_000_000_000 + zxid,
        body: TxnBody::Create(CreateTxn {
            opcode: op::CREATE,
            path: path.into(),
            data,
            acl: open_acl_unsafe().into(),
            ephemeral_owner: 0,
            parent_cversion,
        }),
    }
}

/// /bench, 100 directories under it, 1000 nodes of 100 bytes under each.
fn snapshot_tree() -> DataTree {
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let mut zxid = 1;
    tree.apply(&create_txn(zxid, "/bench".into(), None, 1), &mut triggers);
    for directory in 0..DIRECTORIES {
        zxid += 1;
        tree.apply(&create_txn(zxid, format!("/bench/d{directory:02}"), None, directory as i32 + 1), &mut triggers);
        for leaf in 0..SNAPSHOT_NODES / DIRECTORIES {
            zxid += 1;
            let path = format!("/bench/d{directory:02}/n{leaf:05}");
            tree.apply(&create_txn(zxid, path, Some(value.clone()), leaf as i32 + 1), &mut triggers);
            triggers.clear();
        }
    }
    assert!(tree.node_count() >= SNAPSHOT_NODES);
    tree
}

fn snapshot(c: &mut Criterion) {
    let tree = snapshot_tree();
    let encoded = Bytes::from(encode_snapshot(&tree));
    eprintln!("snapshot of {} znodes: {} bytes", tree.node_count(), encoded.len());
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.throughput(Throughput::Elements(tree.node_count() as u64));
    group.bench_function("encode 100k znodes (100 B)", |b| b.iter(|| encode_snapshot(black_box(&tree)).len()));
    // What the snapshot executor does: serialize through the checksumming
    // writer into a sink (here one that keeps nothing).
    group.bench_function("stream 100k znodes (100 B)", |b| {
        b.iter(|| stream_snapshot(black_box(&tree), std::io::sink()).expect("stream").1)
    });
    group.bench_function("decode 100k znodes (100 B)", |b| {
        b.iter_with_large_drop(|| decode_snapshot(black_box(encoded.clone())).expect("decode"))
    });
    group.finish();
}

fn set_data_txn(zxid: i64) -> Txn {
    Txn {
        session_id: 0x1000_0000_0000_0001,
        cxid: zxid as i32,
        zxid,
        time_ms: 1_700_000_000_000 + zxid,
        body: TxnBody::SetData {
            path: format!("/app/config/node-{:04}", zxid % 1000),
            data: Some(Bytes::from(vec![b'v'; VALUE_BYTES])),
            version: 3,
        },
    }
}

fn log(c: &mut Criterion) {
    let mut group = c.benchmark_group("log");
    for batch in [1usize, 64, 1024] {
        let txns: Vec<Txn> = (1..=batch as i64).map(set_data_txn).collect();
        let mut encoder = BatchEncoder::new();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("encode batch of {batch} setData (100 B)"), |b| {
            b.iter(|| {
                encoder.clear();
                for txn in &txns {
                    encoder.push(black_box(txn));
                }
                encoder.finish().len()
            })
        });
    }

    // A segment of 10k records in batches of 100.
    const SEGMENT_RECORDS: i64 = 10_000;
    const SEGMENT_BATCH: i64 = 100;
    let mut segment = encode_segment_header(1);
    let mut encoder = BatchEncoder::new();
    for zxid in 1..=SEGMENT_RECORDS {
        encoder.push(&set_data_txn(zxid));
        if zxid % SEGMENT_BATCH == 0 {
            segment.extend_from_slice(encoder.finish());
            encoder.clear();
        }
    }
    let segment = Bytes::from(segment);
    assert_eq!(scan_segment(&segment).expect("scan").txns.len(), SEGMENT_RECORDS as usize);
    group.throughput(Throughput::Elements(SEGMENT_RECORDS as u64));
    group.bench_function("scan segment of 10k setData records", |b| {
        b.iter_with_large_drop(|| scan_segment(black_box(&segment)).expect("scan"))
    });
    group.finish();
}

criterion_group!(benches, snapshot, log);
criterion_main!(benches);
