use super::*;

use crate::proto::codes::{op, perms};
use crate::proto::ErrorCode;
use crate::tree::{open_acl_unsafe, Trigger};
use crate::txn::{ephemeral_owner, CreateTxn, Txn, TxnBody};

const SESSION_A: i64 = 0x1000_0000_0000_0001;
const SESSION_B: i64 = 0x1000_0000_0000_0002;
const SESSION_C: i64 = 0x1000_0000_0000_0003;

struct Builder {
    tree: DataTree,
    zxid: i64,
    triggers: Vec<Trigger>,
}

impl Builder {
    fn new() -> Builder {
        Builder { tree: DataTree::new(), zxid: 0, triggers: Vec::new() }
    }

    fn apply(&mut self, session_id: i64, body: TxnBody) {
        self.zxid += 1;
        let txn = Txn { session_id, cxid: 1, zxid: self.zxid, time_ms: 1_700_000_000_000 + self.zxid, body };
        let result = self.tree.apply(&txn, &mut self.triggers);
        assert_eq!(result.err, ErrorCode::Ok, "{txn:?}");
    }

    fn session(&mut self, session_id: i64, timeout_ms: i32) {
        self.apply(session_id, TxnBody::CreateSession { timeout_ms });
    }

    fn create(&mut self, path: &str, data: Option<&[u8]>, acl: Vec<Acl>, owner: i64) {
        let opcode = if ephemeral_owner::is_container(owner) {
            op::CREATE_CONTAINER
        } else if ephemeral_owner::ttl_ms(owner).is_some() {
            op::CREATE_TTL
        } else {
            op::CREATE
        };
        let (parent, _) = crate::tree::path::split(path);
        let parent_cversion = self.tree.get(parent).unwrap().stat.cversion + 1;
        let session_id = if ephemeral_owner::is_session(owner) { owner } else { SESSION_A };
        self.apply(
            session_id,
            TxnBody::Create(CreateTxn {
                opcode,
                path: path.into(),
                data: data.map(Bytes::copy_from_slice),
                acl: acl.into(),
                ephemeral_owner: owner,
                parent_cversion,
            }),
        );
    }
}

fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
    Acl { perms, id: Id { scheme: scheme.into(), id: id.into() } }
}

/// Persistent, ephemeral (two sessions), container and TTL nodes; null,
/// empty and non-empty data; four distinct ACL lists; a setData and a delete.
fn sample_tree() -> DataTree {
    let mut b = Builder::new();
    b.session(SESSION_A, 30_000);
    b.session(SESSION_B, 4_000);
    b.session(SESSION_C, 10_000);
    let digest_acl = vec![acl(perms::ALL, "digest", "user:hash="), acl(perms::READ, "world", "anyone")];
    let ip_acl = vec![acl(perms::READ | perms::WRITE, "ip", "10.0.0.0/8")];
    b.create("/app", Some(b"config"), open_acl_unsafe(), 0);
    b.create("/app/null", None, open_acl_unsafe(), 0);
    b.create("/app/empty", Some(b""), digest_acl.clone(), 0);
    b.create("/app/secret", Some(&[0u8, 1, 2, 255]), digest_acl.clone(), 0);
    b.create("/app/ip", Some(b"x"), ip_acl, 0);
    b.create("/locks", None, open_acl_unsafe(), ephemeral_owner::CONTAINER);
    b.create("/locks/lock-0000000000", Some(b"a"), open_acl_unsafe(), SESSION_A);
    b.create("/locks/lock-0000000001", Some(b"b"), open_acl_unsafe(), SESSION_B);
    b.create("/eph-a2", None, digest_acl, SESSION_A);
    b.create("/ttl", Some(b"expires"), open_acl_unsafe(), ephemeral_owner::ttl(60_000));
    b.create("/app/big", Some(&vec![7u8; 5000]), open_acl_unsafe(), 0);
    b.apply(SESSION_A, TxnBody::SetData { path: "/app".into(), data: Some(Bytes::from_static(b"v2")), version: 0 });
    b.create("/gone", Some(b"g"), open_acl_unsafe(), 0);
    b.apply(SESSION_A, TxnBody::Delete { path: "/gone".into() });
    b.tree
}

fn assert_same_tree(a: &DataTree, b: &DataTree) {
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.last_processed_zxid(), b.last_processed_zxid());
    assert_eq!(a.sessions(), b.sessions());
    assert_eq!(a.node_count(), b.node_count());
    assert_eq!(a.data_bytes(), b.data_bytes());
    assert_eq!(a.acl_count(), b.acl_count());
    for session_id in a.sessions().keys().chain([&0, &ephemeral_owner::CONTAINER]) {
        let mut left: Vec<&str> = a.ephemerals(*session_id).collect();
        let mut right: Vec<&str> = b.ephemerals(*session_id).collect();
        left.sort();
        right.sort();
        assert_eq!(left, right, "ephemerals of {session_id:#x}");
    }
    for (path, node) in a.iter_nodes() {
        let other = b.get(path).unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(node.data, other.data, "data of {path}");
        assert_eq!(node.data.is_none(), other.data.is_none(), "null data of {path}");
        assert_eq!(&node.acl[..], &other.acl[..], "acl of {path}");
        assert_eq!(node.stat, other.stat, "stat of {path}");
        assert_eq!(node.full_stat(), other.full_stat(), "full stat of {path}");
        let mut left: Vec<&str> = node.children.iter().map(|c| &**c).collect();
        let mut right: Vec<&str> = other.children.iter().map(|c| &**c).collect();
        left.sort();
        right.sort();
        assert_eq!(left, right, "children of {path}");
    }
}

#[test]
fn round_trip_preserves_tree() {
    let tree = sample_tree();
    let bytes = encode_snapshot(&tree);
    assert_eq!(snapshot_zxid(&bytes), Ok(tree.last_processed_zxid()));
    let restored = decode_snapshot(Bytes::from(bytes.clone())).unwrap();
    assert_same_tree(&tree, &restored);
    assert!(restored.get("/app/null").unwrap().data.is_none());
    assert_eq!(restored.get("/app/empty").unwrap().data.as_deref(), Some(&b""[..]));
    assert_eq!(restored.ephemerals(SESSION_A).count(), 2);
    assert_eq!(restored.ephemerals(SESSION_B).count(), 1);
    assert_eq!(restored.ephemerals(SESSION_C).count(), 0);
    // The restored tree snapshots again to an equal tree.
    let again = decode_snapshot(Bytes::from(encode_snapshot(&restored))).unwrap();
    assert_same_tree(&tree, &again);
}

/// Streaming writes the same bytes as encoding in memory (with the header
/// returned for the first block), for payloads smaller and several times
/// larger than the stream's buffer.
#[test]
fn streaming_writes_the_encoded_bytes() {
    let mut big = Builder::new();
    big.create("/big", None, open_acl_unsafe(), 0);
    for index in 0..3_000 {
        big.create(&format!("/big/n{index:05}"), Some(&[b'v'; 100]), open_acl_unsafe(), 0);
    }
    for tree in [sample_tree(), DataTree::new(), big.tree] {
        let encoded = encode_snapshot(&tree);
        let (mut streamed, header) = stream_snapshot(&tree, Vec::new()).unwrap();
        assert_eq!(streamed[..HEADER_BYTES], [0u8; HEADER_BYTES]);
        streamed[..HEADER_BYTES].copy_from_slice(&header);
        assert_eq!(streamed.len(), encoded.len());
        assert!(streamed == encoded, "streamed bytes differ from the encoded ones");
    }
}

#[test]
fn fresh_tree_round_trips() {
    let tree = DataTree::new();
    let restored = decode_snapshot(Bytes::from(encode_snapshot(&tree))).unwrap();
    assert_same_tree(&tree, &restored);
}

#[test]
fn acl_lists_are_deduplicated() {
    let tree = sample_tree();
    let bytes = Bytes::from(encode_snapshot(&tree));
    let validated = Validated::check(bytes).unwrap();
    let archive = validated.archive().unwrap();
    // open, read-only (/zookeeper/config), digest+world, ip.
    assert_eq!(archive.acls.len(), 4);
    assert_eq!(archive.nodes.len(), tree.node_count());
}

#[test]
fn data_is_sliced_from_the_input_buffer() {
    let tree = sample_tree();
    let bytes = Bytes::from(encode_snapshot(&tree));
    assert_eq!(bytes.as_ptr() as usize % PAYLOAD_ALIGN, 0, "a Vec from malloc is 16-aligned");
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    let restored = decode_snapshot(bytes.clone()).unwrap();
    let big = restored.get("/app/big").unwrap().data.as_ref().unwrap();
    assert_eq!(big.len(), 5000);
    assert!(range.contains(&(big.as_ptr() as usize)), "data must point into the snapshot buffer");
}

#[test]
fn misaligned_input_is_copied_once_and_still_decodes() {
    let tree = sample_tree();
    let encoded = encode_snapshot(&tree);
    let mut shifted = Vec::with_capacity(encoded.len() + 1);
    shifted.push(0u8);
    shifted.extend_from_slice(&encoded);
    let misaligned = Bytes::from(shifted).slice(1..);
    assert_ne!(misaligned.as_ptr() as usize % PAYLOAD_ALIGN, 0);
    let restored = decode_snapshot(misaligned).unwrap();
    assert_same_tree(&tree, &restored);
}

fn rewrite_header_crc(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..HEADER_CRC_AT]);
    bytes[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

fn decode_err(bytes: Vec<u8>) -> SnapshotError {
    let describe = describe_snapshot(Bytes::from(bytes.clone()));
    assert!(describe.is_err(), "describe accepted a bad snapshot");
    match decode_snapshot(Bytes::from(bytes)) {
        Ok(_) => panic!("decoded a bad snapshot"),
        Err(err) => err,
    }
}

#[test]
fn truncation_is_an_error_naming_the_offset() {
    let bytes = encode_snapshot(&sample_tree());
    let len = bytes.len();
    for cut in [0, 1, 8, 20, 35, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 1, HEADER_BYTES + 100, len / 2, len - 1]
    {
        let err = decode_err(bytes[..cut].to_vec());
        assert_eq!(err.offset, cut as u64, "cut at {cut}: {err}");
        assert!(err.reason.contains("truncated"), "cut at {cut}: {err}");
    }
    assert!(snapshot_zxid(&bytes[..HEADER_BYTES - 1]).is_err());
    assert!(snapshot_zxid(&bytes[..HEADER_BYTES]).is_ok(), "the header alone gives the zxid");
}

#[test]
fn empty_input_is_an_error() {
    let err = decode_err(Vec::new());
    assert_eq!(err.offset, 0);
    assert!(snapshot_zxid(&[]).is_err());
}

#[test]
fn flipped_payload_bits_fail_the_crc() {
    let bytes = encode_snapshot(&sample_tree());
    for at in [HEADER_BYTES, HEADER_BYTES + 7, bytes.len() / 2, bytes.len() - 1] {
        for bit in [0, 7] {
            let mut bad = bytes.clone();
            bad[at] ^= 1 << bit;
            let err = decode_err(bad);
            assert!(err.reason.contains("payload checksum"), "{err}");
            assert_eq!(err.offset, HEADER_BYTES as u64);
        }
    }
}

#[test]
fn wrong_payload_crc_field_is_an_error() {
    let mut bytes = encode_snapshot(&sample_tree());
    bytes[28] ^= 0x10;
    rewrite_header_crc(&mut bytes);
    let err = decode_err(bytes);
    assert!(err.reason.contains("payload checksum"), "{err}");
}

#[test]
fn wrong_header_crc_is_an_error() {
    let mut bytes = encode_snapshot(&sample_tree());
    bytes[HEADER_CRC_AT + 3] ^= 1;
    let err = decode_err(bytes.clone());
    assert!(err.reason.contains("header checksum"), "{err}");
    assert!(snapshot_zxid(&bytes).is_err());
    // A changed zxid without a fixed header CRC is caught too.
    let mut bytes = encode_snapshot(&sample_tree());
    bytes[19] ^= 1;
    assert!(decode_err(bytes).reason.contains("header checksum"));
}

#[test]
fn wrong_magic_and_version_are_errors() {
    let good = encode_snapshot(&sample_tree());
    let mut bad = good.clone();
    bad[..8].copy_from_slice(b"WARDENLG");
    let err = decode_err(bad);
    assert_eq!(err.offset, 0);
    assert!(err.reason.contains("magic"), "{err}");
    let mut bad = good.clone();
    bad[8..12].copy_from_slice(&2u32.to_be_bytes());
    rewrite_header_crc(&mut bad);
    let err = decode_err(bad);
    assert_eq!(err.offset, 8);
    assert!(err.reason.contains("version 2"), "{err}");
}

#[test]
fn nonzero_padding_is_an_error() {
    let mut bytes = encode_snapshot(&sample_tree());
    bytes[HEADER_BYTES - 1] = 1;
    assert_eq!(decode_err(bytes).offset, HEADER_BYTES as u64 - 1);
}

#[test]
fn length_mismatches_are_errors() {
    let good = encode_snapshot(&sample_tree());
    // Trailing garbage.
    let mut bad = good.clone();
    bad.extend_from_slice(&[0u8; 16]);
    let err = decode_err(bad);
    assert!(err.reason.contains("trailing"), "{err}");
    assert_eq!(err.offset, good.len() as u64);
    // A length field claiming less or more than there is.
    for delta in [-16i64, 16, i64::MAX] {
        let mut bad = good.clone();
        let len = read_u64(&bad, 20).wrapping_add(delta as u64);
        bad[20..28].copy_from_slice(&len.to_be_bytes());
        rewrite_header_crc(&mut bad);
        decode_err(bad);
    }
    let mut bad = good.clone();
    bad[20..28].copy_from_slice(&u64::MAX.to_be_bytes());
    rewrite_header_crc(&mut bad);
    decode_err(bad);
}

/// A snapshot with a valid header and CRC around a payload that is not a
/// valid archive (or not a valid tree) is still an error, not a panic.
#[test]
fn invalid_archive_with_valid_crcs_is_an_error() {
    let good = encode_snapshot(&sample_tree());
    let reseal = |mut bytes: Vec<u8>| {
        let payload_len = (bytes.len() - HEADER_BYTES) as u64;
        let crc = crc32fast::hash(&bytes[HEADER_BYTES..]);
        bytes[20..28].copy_from_slice(&payload_len.to_be_bytes());
        bytes[28..32].copy_from_slice(&crc.to_be_bytes());
        rewrite_header_crc(&mut bytes);
        bytes
    };
    // Zeroed payloads, garbage payloads, every single byte flipped in a few places.
    decode_err(reseal(good[..HEADER_BYTES].to_vec()));
    let mut zeros = good.clone();
    zeros[HEADER_BYTES..].fill(0);
    decode_err(reseal(zeros));
    let mut ff = good.clone();
    ff[HEADER_BYTES..].fill(0xff);
    decode_err(reseal(ff));
    // The root object sits at the end: corrupting its relative pointers must be caught.
    let len = good.len();
    for at in len - 48..len {
        let mut bad = good.clone();
        bad[at] ^= 0x80;
        // Either bytecheck rejects it or it still describes a valid tree.
        let _ = decode_snapshot(Bytes::from(reseal(bad)));
    }
    // A truncated payload resealed with a matching length and CRC.
    for cut in [HEADER_BYTES + 1, HEADER_BYTES + 16, len - 8, len - 1] {
        decode_err(reseal(good[..cut].to_vec()));
    }
}

/// A tree without its root (or a node without its parent) is rejected by
/// restore, reported as a snapshot error; an ACL index out of range by the
/// archive check.
#[test]
fn archive_that_is_not_a_tree_is_an_error() {
    let payload = SnapshotPayload {
        acls: vec![vec![AclRecord { perms: perms::ALL, scheme: "world", id: "anyone" }]],
        nodes: vec![NodeRecord {
            path: "/orphan/child",
            data: None,
            acl: 0,
            stat: StatRecord::from(&StatPersisted::default()),
        }],
        sessions: Vec::new(),
    };
    let bytes = wrap(&payload, 9);
    let err = decode_snapshot(Bytes::from(bytes.clone())).err().expect("not a tree");
    assert!(err.reason.contains("not a valid tree"), "{err}");
    // describe is for inspecting snapshots, broken trees included.
    assert!(describe_snapshot(Bytes::from(bytes)).unwrap().contains("/orphan/child\n"));

    let payload = SnapshotPayload {
        acls: Vec::new(),
        nodes: vec![NodeRecord { path: "/", data: None, acl: 0, stat: StatRecord::from(&StatPersisted::default()) }],
        sessions: Vec::new(),
    };
    let err = decode_err(wrap(&payload, 9));
    assert!(err.reason.contains("ACL list 0 of 0"), "{err}");
}

fn wrap(payload: &SnapshotPayload<'_>, zxid: i64) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_BYTES];
    out = rkyv::api::high::to_bytes_in::<_, rancor::Error>(payload, out).unwrap();
    let payload_len = (out.len() - HEADER_BYTES) as u64;
    let crc = crc32fast::hash(&out[HEADER_BYTES..]);
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    out[12..20].copy_from_slice(&zxid.to_be_bytes());
    out[20..28].copy_from_slice(&payload_len.to_be_bytes());
    out[28..32].copy_from_slice(&crc.to_be_bytes());
    rewrite_header_crc(&mut out);
    out
}

#[test]
fn file_names_round_trip() {
    for zxid in [0i64, 1, 0x1_0000_0005, 0x7fff_ffff_ffff_ffff, -1] {
        let name = snapshot_file_name(zxid);
        assert_eq!(parse_snapshot_file_name(&name), Some(zxid), "{name}");
    }
    assert_eq!(snapshot_file_name(0x1_0000_0005), "snapshot.100000005");
    assert_eq!(parse_snapshot_file_name("snapshot.1f"), Some(0x1f));
    for bad in ["snapshot.", "snapshot.xyz", "snapshot.+1", "snapshot.-1", "log.5", "snapshot.1.tmp", "snapshot.12345678901234567"] {
        assert_eq!(parse_snapshot_file_name(bad), None, "{bad}");
    }
}

#[test]
fn describe_lists_nodes_sorted_and_sessions() {
    let tree = sample_tree();
    let text = describe_snapshot(Bytes::from(encode_snapshot(&tree))).unwrap();
    assert!(text.starts_with("Snapshot: format version 1, zxid 0x"), "{text}");
    assert!(text.contains(&format!("ZNode Details (count={}):", tree.node_count())));
    let paths: Vec<&str> =
        text.lines().collect::<Vec<_>>().windows(2).filter(|w| w[0] == "----" && w[1].starts_with('/')).map(|w| w[1]).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert_eq!(paths.len(), tree.node_count());
    assert!(text.contains("/app/big\n  cZxid = 0x"));
    assert!(text.contains("  dataLength = 5000\n"));
    assert!(text.contains("ctime = 2023-11-14 22:13:20.0"), "{text}");
    assert!(text.contains("Session Details (sid, timeout, ephemeralCount):\n"));
    assert!(text.contains(&format!("0x{SESSION_A:x}, 30000, 2\n")), "{text}");
    assert!(text.contains(&format!("0x{SESSION_B:x}, 4000, 1\n")));
    assert!(text.contains(&format!("0x{SESSION_C:x}, 10000, 0\n")));
}

#[test]
fn format_time_matches_known_dates() {
    assert_eq!(format_time(0), "1970-01-01 00:00:00.000 UTC");
    assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
    assert_eq!(format_time(-1), "1969-12-31 23:59:59.999 UTC");
}

/// One-off timing: `cargo test --release --lib storage::snapshot::tests::million -- --ignored --nocapture`.
#[test]
#[ignore]
fn million_node_timing() {
    use std::time::Instant;
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    let value = Bytes::from(vec![b'x'; 100]);
    let mut zxid = 0;
    for dir in 0..1000 {
        zxid += 1;
        let create = CreateTxn {
            opcode: op::CREATE,
            path: format!("/d{dir:04}").into(),
            data: None,
            acl: open_acl_unsafe().into(),
            ephemeral_owner: 0,
            parent_cversion: dir + 1,
        };
        tree.apply(&Txn { session_id: 1, cxid: 0, zxid, time_ms: zxid, body: TxnBody::Create(create) }, &mut triggers);
        for leaf in 0..1000 {
            zxid += 1;
            let create = CreateTxn {
                opcode: op::CREATE,
                path: format!("/d{dir:04}/n{leaf:06}").into(),
                data: Some(value.clone()),
                acl: open_acl_unsafe().into(),
                ephemeral_owner: 0,
                parent_cversion: leaf + 1,
            };
            tree.apply(&Txn { session_id: 1, cxid: 0, zxid, time_ms: zxid, body: TxnBody::Create(create) }, &mut triggers);
            triggers.clear();
        }
    }
    assert!(tree.node_count() > 1_000_000);
    let start = Instant::now();
    let restored = DataTree::restore(
        tree.last_processed_zxid(),
        tree.iter_nodes().map(|(path, node)| (path.to_owned(), node.data.clone(), node.acl.clone(), node.stat)),
        tree.sessions().iter().map(|(&id, &timeout)| (id, timeout)),
    )
    .unwrap();
    let bare_restore = start.elapsed();
    drop(restored);
    let start = Instant::now();
    let bytes = encode_snapshot(&tree);
    let encode = start.elapsed();
    let bytes = Bytes::from(bytes);
    let start = Instant::now();
    let restored = decode_snapshot(bytes.clone()).unwrap();
    let decode = start.elapsed();
    let start = Instant::now();
    Validated::check(bytes.clone()).unwrap().archive().unwrap();
    let validate = start.elapsed();
    println!(
        "{} znodes: snapshot {} bytes ({:.1} MiB), encode {encode:?}, decode {decode:?} \
         (CRC+bytecheck alone {validate:?}; DataTree::restore from a live tree alone {bare_restore:?})",
        tree.node_count(),
        bytes.len(),
        bytes.len() as f64 / (1024.0 * 1024.0)
    );
    assert_eq!(restored.digest(), tree.digest());
}
