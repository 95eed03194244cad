use super::*;
use crate::pipeline::prep::{Prep, PrepConfig};
use crate::proto::codes::op;
use crate::proto::{
    CheckVersionRequest, CreateRequest, CreateTtlRequest, DeleteRequest, Id, MultiOp, MultiRequest, PathRequest, Request,
    SetAclRequest, SetDataRequest,
};
use crate::rng::Rng;
use crate::tree::open_acl_unsafe;
use bytes::Bytes;

/// Every znode of `tree` as (path, node), sorted by path.
fn nodes(tree: &LatestTree) -> Vec<(String, LatestNode)> {
    let mut nodes: Vec<_> = tree.iter().map(|(path, node)| (path.to_owned(), node.clone())).collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    nodes
}

const PATHS: &[&str] = &["/a", "/a/b", "/a/b/c", "/b", "/b/x", "/c", "/c/y", "/s-", "/a/s-"];
const SESSIONS: &[i64] = &[0x11, 0x22, 0x33];

fn random_acl(rng: &mut Rng) -> Vec<crate::proto::Acl> {
    if rng.one_in(4) {
        let perms = *rng.pick(&[crate::proto::codes::perms::ALL, crate::proto::codes::perms::READ | crate::proto::codes::perms::CREATE]);
        vec![crate::proto::Acl { perms, id: Id { scheme: "world".into(), id: "anyone".into() } }]
    } else {
        open_acl_unsafe()
    }
}

/// A write a client could send, on a few paths, so that most of them meet
/// existing nodes: every kind Prep turns into a txn.
fn random_write(rng: &mut Rng) -> Request {
    let path = rng.pick(PATHS).to_string();
    let version = if rng.one_in(3) { rng.below(3) as i32 } else { -1 };
    let create = |rng: &mut Rng, path: String| CreateRequest {
        path,
        data: Some(Bytes::from(rng.bytes_upto(8))),
        acl: random_acl(rng),
        flags: rng.below(5) as i32,
    };
    match rng.below(9) {
        0..=2 => Request::Create { opcode: op::CREATE2, request: create(rng, path) },
        3 => Request::CreateTtl(CreateTtlRequest {
            path,
            data: None,
            acl: open_acl_unsafe(),
            flags: *rng.pick(&[5, 6]),
            ttl: rng.between(1, 100) as i64,
        }),
        4 => Request::Delete(DeleteRequest { path, version }),
        5 => Request::SetData(SetDataRequest { path, data: Some(Bytes::from(rng.bytes_upto(8))), version }),
        6 => Request::SetAcl(SetAclRequest { path, acl: random_acl(rng), version }),
        7 => Request::DeleteContainer(PathRequest { path }),
        _ => {
            let ops = (0..rng.between(1, 4))
                .map(|_| {
                    let path = rng.pick(PATHS).to_string();
                    match rng.below(4) {
                        0 => MultiOp::Create { opcode: op::CREATE, request: create(rng, path) },
                        1 => MultiOp::Delete { opcode: op::DELETE, request: DeleteRequest { path, version: -1 } },
                        2 => MultiOp::SetData(SetDataRequest { path, data: None, version: -1 }),
                        _ => MultiOp::Check(CheckVersionRequest { path, version: rng.below(2) as i32 }),
                    }
                })
                .collect();
            Request::Multi(MultiRequest { ops })
        }
    }
}

/// Prep (over a LatestTree) preps random writes and session closes; every
/// txn is also applied to a DataTree, as a shard applies it. After each,
/// the LatestTree must hold exactly what a LatestTree made from that
/// DataTree holds: the same nodes with the same versions, child counts,
/// owners, mtimes and ACLs, the same ephemerals, and the same containers
/// and TTL nodes to delete.
#[test]
fn matches_the_data_tree_on_random_workloads() {
    for seed in 0..40 {
        let mut rng = Rng::new(seed);
        let mut prep = Prep::new(&DataTree::new(), PrepConfig { extended_types_enabled: true });
        let mut tree = DataTree::new();
        let mut triggers = Vec::new();
        for step in 0..400 {
            let now_ms = 1_000 + step * 10;
            let session = *rng.pick(SESSIONS);
            let txn = if rng.one_in(40) {
                prep.close_session(session, 0, now_ms)
            } else {
                prep.prep(now_ms, session, step as i32, &random_write(&mut rng), &[], true)
            };
            triggers.clear();
            tree.apply(&txn, &mut triggers);
            let expected = LatestTree::from_tree(&tree);
            let latest = prep.tree();
            let context = format!("seed {seed} step {step}: {:?}", txn.body);
            assert_eq!(nodes(latest), nodes(&expected), "{context}");
            assert_eq!(latest.last_processed_zxid(), tree.last_processed_zxid(), "{context}");
            for session in SESSIONS {
                let from_tree: Vec<String> = tree.ephemerals(*session).map(str::to_owned).collect();
                assert_eq!(latest.ephemerals(*session), from_tree, "{context}");
            }
            for at in [now_ms, now_ms + 50, now_ms + 1_000] {
                assert_eq!(latest.container_candidates(at, 100), tree.container_candidates(at, 100), "{context}");
            }
            assert_eq!(latest.acl_count(), tree.acl_count(), "{context}");
        }
    }
}

#[test]
fn a_latest_node_is_a_fraction_of_a_data_tree_node() {
    // Inline in the table: path (16) + node (48), against a DataTree's boxed
    // 120-byte node plus its entry and its place in the parent's child set.
    assert_eq!(std::mem::size_of::<LatestNode>(), 48);
}
