use super::*;
use crate::txn::TxnBody;

fn txn(zxid: i64) -> Txn {
    Txn { session_id: 1, cxid: zxid as i32, zxid, time_ms: 5, body: TxnBody::Delete { path: format!("/n{zxid}") } }
}

/// A segment with batches of the given sizes, then `tail_zero_blocks` of
/// preallocated zeros.
fn segment(batches: &[usize], tail_zero_blocks: usize) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = encode_segment_header(1);
    let mut offsets = Vec::new();
    let mut zxid = 1;
    let mut encoder = BatchEncoder::new();
    for size in batches {
        encoder.clear();
        for _ in 0..*size {
            encoder.push(&txn(zxid));
            zxid += 1;
        }
        offsets.push(bytes.len());
        bytes.extend_from_slice(encoder.finish());
    }
    bytes.resize(bytes.len() + tail_zero_blocks * BLOCK_BYTES, 0);
    (bytes, offsets)
}

fn zxids(scan: &SegmentScan) -> Vec<i64> {
    scan.txns.iter().map(|logged| logged.txn.zxid).collect()
}

#[test]
fn batches_round_trip_and_zeros_end_the_log() {
    let (bytes, offsets) = segment(&[1, 3, 2], 4);
    assert!(offsets.iter().all(|offset| offset % BLOCK_BYTES == 0));
    let scan = scan_segment(&Bytes::from(bytes)).unwrap();
    assert_eq!(scan.first_zxid, 1);
    assert_eq!(zxids(&scan), vec![1, 2, 3, 4, 5, 6]);
    assert!(matches!(scan.end, SegmentEnd::Clean { .. }));
}

#[test]
fn torn_last_batch_is_a_torn_tail() {
    let (mut bytes, offsets) = segment(&[2, 2], 4);
    // Half of the last batch never reached the disk.
    let last = offsets[1];
    for byte in &mut bytes[last + 40..last + BLOCK_BYTES] {
        *byte = 0;
    }
    let scan = scan_segment(&Bytes::from(bytes)).unwrap();
    assert_eq!(zxids(&scan), vec![1, 2]);
    assert_eq!(scan.end, SegmentEnd::TornTail { offset: last as u64, reason: "batch checksum mismatch".into() });
}

#[test]
fn lost_batch_header_of_the_last_batch_is_a_torn_tail() {
    let (mut bytes, offsets) = segment(&[1, 1], 2);
    let last = offsets[1];
    for byte in &mut bytes[last..last + BATCH_HEADER_BYTES] {
        *byte = 0;
    }
    let scan = scan_segment(&Bytes::from(bytes)).unwrap();
    assert_eq!(zxids(&scan), vec![1]);
    assert!(matches!(scan.end, SegmentEnd::TornTail { .. }), "{:?}", scan.end);
}

#[test]
fn flipped_bit_in_the_middle_is_corruption() {
    // One valid batch after the damage is enough: only the last batch can be torn.
    let (mut bytes, offsets) = segment(&[1, 1, 1], 2);
    bytes[offsets[1] + BATCH_HEADER_BYTES + 20] ^= 0x10;
    let scan = scan_segment(&Bytes::from(bytes)).unwrap();
    assert_eq!(zxids(&scan), vec![1]);
    match scan.end {
        SegmentEnd::Corrupt { offset, reason } => {
            assert_eq!(offset, offsets[1] as u64);
            assert!(reason.contains(&format!("a valid batch follows at offset {}", offsets[2])), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn damaged_record_inside_a_checksummed_batch_is_corruption() {
    let (mut bytes, offsets) = segment(&[2], 2);
    let first = offsets[0];
    bytes[first + BATCH_HEADER_BYTES + 4] ^= 0x01; // the record's own crc
    let payload_bytes = read_u32(&bytes, first + 4) as usize;
    let crc = crc32fast::hash(&bytes[first + BATCH_HEADER_BYTES..first + BATCH_HEADER_BYTES + payload_bytes]);
    bytes[first + 12..first + 16].copy_from_slice(&crc.to_be_bytes());
    let scan = scan_segment(&Bytes::from(bytes)).unwrap();
    assert!(matches!(scan.end, SegmentEnd::Corrupt { .. }), "{:?}", scan.end);
}

#[test]
fn bad_segment_header_is_refused() {
    let (mut bytes, _) = segment(&[1], 0);
    bytes[0] = b'X';
    assert!(scan_segment(&Bytes::from(bytes.clone())).is_err());
    bytes[0] = b'W';
    bytes[13] ^= 1; // first zxid, covered by the header checksum
    assert!(scan_segment(&Bytes::from(bytes)).is_err());
    assert!(scan_segment(&Bytes::from_static(b"short")).is_err());
}

#[test]
fn file_names_follow_zookeeper() {
    assert_eq!(segment_file_name(0x1f), "log.1f");
    assert_eq!(parse_segment_file_name("log.1f"), Some(0x1f));
    assert_eq!(parse_segment_file_name("snapshot.1f"), None);
}

// Truncation (ZAB's TRUNC): a segment of batches [2, 3, 2] holds zxids
// 1-2 | 3-5 | 6-7, and cutting after `to` must leave exactly the records <= to.

fn cut(bytes: &[u8], to: i64) -> (TruncatePlan, SegmentScan) {
    let bytes = Bytes::from(bytes.to_vec());
    let plan = plan_truncate(&bytes, to).unwrap();
    let after = plan.apply(&bytes);
    assert_eq!(after.len() as u64, plan.length_after());
    let scan = scan_segment(&after).unwrap();
    assert!(matches!(scan.end, SegmentEnd::Clean { .. }), "{:?}", scan.end);
    (plan, scan)
}

#[test]
fn truncate_inside_a_batch_rewrites_its_head_as_a_new_batch() {
    let (bytes, offsets) = segment(&[2, 3, 2], 4);
    let (plan, scan) = cut(&bytes, 4);
    assert_eq!(plan.cut_offset, offsets[1] as u64);
    assert_eq!((plan.records_kept, plan.records_removed, plan.last_zxid_kept), (4, 3, Some(4)));
    let rewrite = plan.rewrite.as_ref().unwrap();
    assert_eq!(rewrite.len() % BLOCK_BYTES, 0);
    assert_eq!(zxids(&scan), vec![1, 2, 3, 4]);
    // The rewritten records are the same txns, not just the same zxids.
    let original = scan_segment(&Bytes::from(bytes)).unwrap();
    for (kept, before) in scan.txns.iter().zip(&original.txns) {
        assert_eq!(kept.txn, before.txn);
    }
}

#[test]
fn truncate_at_a_batch_boundary_only_cuts() {
    let (bytes, offsets) = segment(&[2, 3, 2], 4);
    let (plan, scan) = cut(&bytes, 5);
    assert_eq!((plan.cut_offset, plan.rewrite.is_none()), (offsets[2] as u64, true));
    assert_eq!(zxids(&scan), vec![1, 2, 3, 4, 5]);
    let (plan, scan) = cut(&bytes, 2);
    assert_eq!((plan.cut_offset, plan.rewrite.is_none()), (offsets[1] as u64, true));
    assert_eq!(zxids(&scan), vec![1, 2]);
}

#[test]
fn truncate_at_or_after_the_end_changes_nothing() {
    let (bytes, _) = segment(&[2, 3, 2], 4);
    for to in [7, 8, i64::MAX] {
        let plan = plan_truncate(&Bytes::from(bytes.clone()), to).unwrap();
        assert!(plan.is_noop(), "to {to}: {plan:?}");
        assert_eq!((plan.records_kept, plan.last_zxid_kept), (7, Some(7)));
    }
}

#[test]
fn truncate_before_every_record_leaves_the_header_only() {
    let (bytes, _) = segment(&[2, 3, 2], 4);
    let (plan, scan) = cut(&bytes, 0);
    assert_eq!((plan.cut_offset, plan.records_kept, plan.last_zxid_kept), (BLOCK_BYTES as u64, 0, None));
    assert!(scan.txns.is_empty());
    // A batch that straddles `to` at its first record keeps one record.
    let (plan, scan) = cut(&bytes, 1);
    assert_eq!(plan.cut_offset, BLOCK_BYTES as u64);
    assert_eq!(zxids(&scan), vec![1]);
}

#[test]
fn truncate_removes_a_torn_tail_with_the_records_above_to() {
    let (mut bytes, offsets) = segment(&[2, 3, 2], 4);
    bytes[offsets[2] + 40] ^= 0xff;
    // Nothing above `to` is valid: the torn batch goes all the same.
    let (plan, scan) = cut(&bytes, 9);
    assert_eq!((plan.cut_offset, plan.records_removed), (offsets[2] as u64, 0));
    assert!(plan.damage_removed.as_deref().unwrap().contains("torn tail"), "{plan:?}");
    assert!(!plan.is_noop());
    assert_eq!(zxids(&scan), vec![1, 2, 3, 4, 5]);
    let (plan, scan) = cut(&bytes, 3);
    assert_eq!(plan.cut_offset, offsets[1] as u64);
    assert_eq!(zxids(&scan), vec![1, 2, 3]);
}

#[test]
fn truncate_removes_corruption_only_after_the_record_at_to() {
    let (mut bytes, offsets) = segment(&[2, 3, 2, 1], 4);
    bytes[offsets[2] + BATCH_HEADER_BYTES + 20] ^= 0x10;
    // Records 6-7 are damaged and 8 follows: below the damage, cutting is safe.
    let (plan, scan) = cut(&bytes, 4);
    assert!(plan.damage_removed.as_deref().unwrap().contains("corruption"), "{plan:?}");
    assert_eq!(zxids(&scan), vec![1, 2, 3, 4]);
    let (_, scan) = cut(&bytes, 5);
    assert_eq!(zxids(&scan), vec![1, 2, 3, 4, 5]);
    // Above it, the damaged bytes may have held records the state at `to` needs.
    let error = plan_truncate(&Bytes::from(bytes), 7).unwrap_err();
    assert!(error.contains("corruption") && error.contains("0x5"), "{error}");
}

#[test]
fn truncate_of_something_not_a_segment_is_an_error() {
    assert!(plan_truncate(&Bytes::from(vec![0u8; BLOCK_BYTES * 2]), 1).is_err());
}

#[test]
fn a_batch_may_cross_into_a_new_epoch() {
    // What a learner synced by DIFF logs in one batch: the old epoch's tail,
    // then the new leader's first proposals (its epoch may skip numbers).
    let zxids_logged = [(1 << 32) + 7, (1 << 32) + 8, (3 << 32) + 1, (3 << 32) + 2];
    let mut bytes = encode_segment_header(zxids_logged[0]);
    let mut encoder = BatchEncoder::new();
    for zxid in zxids_logged {
        encoder.push(&txn(zxid));
    }
    bytes.extend_from_slice(encoder.finish());
    assert_eq!(zxids(&scan_segment(&Bytes::from(bytes.clone())).unwrap()), zxids_logged);
    let (plan, scan) = cut(&bytes, (3 << 32) + 1);
    assert_eq!((plan.records_kept, plan.records_removed), (3, 1));
    assert_eq!(zxids(&scan), zxids_logged[..3]);
}

#[test]
#[should_panic(expected = "does not follow")]
fn a_batch_refuses_a_gap_inside_an_epoch() {
    let mut encoder = BatchEncoder::new();
    encoder.push(&txn((1 << 32) + 7));
    encoder.push(&txn((1 << 32) + 9));
}
