use super::*;
use crate::proto::{Acl, DeleteRequest, MultiRequest, SetDataRequest};
use crate::tree::open_acl_unsafe;
use bytes::Bytes;

fn prep() -> Prep {
    Prep::new(&DataTree::new(), PrepConfig { extended_types_enabled: true })
}

fn create(path: &str, flags: i32) -> Request {
    Request::Create {
        opcode: op::CREATE2,
        request: CreateRequest { path: path.into(), data: Some(Bytes::from_static(b"d")), acl: open_acl_unsafe(), flags },
    }
}

fn err_of(txn: &Txn) -> Option<ErrorCode> {
    match txn.body {
        TxnBody::Error { err } => Some(err),
        _ => None,
    }
}

#[test]
fn errors_consume_zxids_like_zookeeper() {
    let mut prep = prep();
    let ok = prep.prep(10, 1, 1, &create("/a", 0), &[], true);
    assert_eq!((ok.zxid, err_of(&ok)), (1, None));
    let exists = prep.prep(10, 1, 2, &create("/a", 0), &[], true);
    assert_eq!((exists.zxid, err_of(&exists)), (2, Some(ErrorCode::NodeExists)));
    let no_parent = prep.prep(10, 1, 3, &create("/x/y", 0), &[], true);
    assert_eq!(err_of(&no_parent), Some(ErrorCode::NoNode));
    let bad_path = prep.prep(10, 1, 4, &create("/a/", 0), &[], true);
    assert_eq!(err_of(&bad_path), Some(ErrorCode::BadArguments));
    let expired = prep.prep(10, 1, 5, &create("/b", 0), &[], false);
    assert_eq!(err_of(&expired), Some(ErrorCode::SessionExpired));
    assert_eq!(prep.zxid_last(), 5);
}

#[test]
fn sequential_suffix_counts_creates_not_deletes() {
    let mut prep = prep();
    prep.prep(0, 1, 0, &create("/p", 0), &[], true);
    prep.prep(0, 1, 0, &create("/p/a", 0), &[], true);
    let first = prep.prep(0, 1, 0, &create("/p/s-", 2), &[], true);
    assert!(matches!(&first.body, TxnBody::Create(c) if &*c.path == "/p/s-0000000001"));
    prep.prep(0, 1, 0, &Request::Delete(DeleteRequest { path: "/p/a".into(), version: -1 }), &[], true);
    let second = prep.prep(0, 1, 0, &create("/p/s-", 2), &[], true);
    assert!(matches!(&second.body, TxnBody::Create(c) if &*c.path == "/p/s-0000000002"));
}

#[test]
fn ephemeral_parents_refuse_children_and_ttl_needs_extended_types() {
    let mut prep = prep();
    prep.prep(0, 7, 0, &create("/e", 1), &[], true);
    assert_eq!(err_of(&prep.prep(0, 7, 0, &create("/e/c", 0), &[], true)), Some(ErrorCode::NoChildrenForEphemerals));
    let mut plain = Prep::new(&DataTree::new(), PrepConfig { extended_types_enabled: false });
    let ttl = Request::CreateTtl(crate::proto::CreateTtlRequest {
        path: "/t".into(),
        data: None,
        acl: open_acl_unsafe(),
        flags: 5,
        ttl: 1000,
    });
    assert_eq!(err_of(&plain.prep(0, 7, 0, &ttl, &[], true)), Some(ErrorCode::Unimplemented));
    assert_eq!(err_of(&prep.prep(0, 7, 0, &ttl, &[], true)), None);
}

#[test]
fn multi_sees_its_earlier_ops_and_fails_atomically() {
    let mut prep = prep();
    let multi = |ops| Request::Multi(MultiRequest { ops });
    let ok = prep.prep(
        0,
        1,
        0,
        &multi(vec![
            MultiOp::Create { opcode: op::CREATE, request: CreateRequest { path: "/m".into(), data: None, acl: open_acl_unsafe(), flags: 0 } },
            MultiOp::SetData(SetDataRequest { path: "/m".into(), data: None, version: 0 }),
            MultiOp::Delete { opcode: op::DELETE, request: DeleteRequest { path: "/m".into(), version: 1 } },
        ]),
        &[],
        true,
    );
    assert!(matches!(&ok.body, TxnBody::Multi(bodies) if bodies.iter().all(|b| !matches!(b, TxnBody::Error { .. }))));
    assert!(prep.tree().get("/m").is_none());
    let failed = prep.prep(
        0,
        1,
        0,
        &multi(vec![
            MultiOp::Create { opcode: op::CREATE, request: CreateRequest { path: "/n".into(), data: None, acl: open_acl_unsafe(), flags: 0 } },
            MultiOp::SetData(SetDataRequest { path: "/n".into(), data: None, version: 5 }),
            MultiOp::Delete { opcode: op::DELETE, request: DeleteRequest { path: "/n".into(), version: -1 } },
        ]),
        &[],
        true,
    );
    match &failed.body {
        TxnBody::Multi(bodies) => {
            assert!(matches!(bodies[0], TxnBody::Create(_)));
            assert_eq!(bodies[1], TxnBody::Error { err: ErrorCode::BadVersion });
            assert_eq!(bodies[2], TxnBody::Error { err: ErrorCode::RuntimeInconsistency });
        }
        other => panic!("{other:?}"),
    }
    assert!(prep.tree().get("/n").is_none());
}

#[test]
fn acls_are_checked_on_the_right_node() {
    let mut prep = prep();
    let user = Id { scheme: "digest".into(), id: super::super::auth::digest_id("u:p") };
    let read_only = vec![Acl { perms: perms::READ, id: user.clone() }];
    let request = Request::Create {
        opcode: op::CREATE,
        request: CreateRequest { path: "/r".into(), data: None, acl: read_only, flags: 0 },
    };
    assert_eq!(err_of(&prep.prep(0, 1, 0, &request, &[], true)), None);
    // Creating under /r needs CREATE on /r.
    assert_eq!(err_of(&prep.prep(0, 1, 0, &create("/r/c", 0), &[user.clone()], true)), Some(ErrorCode::NoAuth));
    // Deleting /r needs DELETE on / (world), not on /r.
    let delete = Request::Delete(DeleteRequest { path: "/r".into(), version: -1 });
    assert_eq!(err_of(&prep.prep(0, 1, 0, &delete, &[], true)), None);
}

#[test]
fn system_nodes_cannot_be_deleted() {
    // ZooKeeper's getParentPathAndValidate refuses special paths (found by the pipeline fuzz test).
    let mut prep = prep();
    for path in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
        let delete = Request::Delete(DeleteRequest { path: path.into(), version: -1 });
        assert_eq!(err_of(&prep.prep(0, 1, 0, &delete, &[], true)), Some(ErrorCode::BadArguments), "{path}");
        let container = Request::DeleteContainer(crate::proto::PathRequest { path: path.into() });
        assert_eq!(err_of(&prep.prep(0, 1, 0, &container, &[], true)), Some(ErrorCode::BadArguments), "{path}");
    }
    assert!(prep.tree().get("/zookeeper/config").is_some());
    // A malformed path is not found rather than refused, as in ZooKeeper.
    let delete = Request::Delete(DeleteRequest { path: "/zookeeper/".into(), version: -1 });
    assert_eq!(err_of(&prep.prep(0, 1, 0, &delete, &[], true)), Some(ErrorCode::NoNode));
}
