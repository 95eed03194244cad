use super::*;

fn txn(zxid: i64, body: TxnBody) -> Txn {
    Txn { session_id: 7, cxid: 1, zxid, time_ms: 1000 + zxid, body }
}

fn create(path: &str, owner: i64, parent_cversion: i32) -> TxnBody {
    TxnBody::Create(CreateTxn {
        opcode: op::CREATE,
        path: path.into(),
        data: Some(Bytes::from_static(b"v")),
        acl: open_acl_unsafe().into(),
        ephemeral_owner: owner,
        parent_cversion,
    })
}

#[test]
fn fresh_tree_matches_zookeeper_system_nodes() {
    let tree = DataTree::new();
    let root = tree.get("/").unwrap();
    assert_eq!(root.children.iter().map(|c| &**c).collect::<Vec<_>>(), vec!["zookeeper"]);
    assert_eq!(tree.get(ZOOKEEPER_PATH).unwrap().full_stat().num_children, 2);
    assert_eq!(tree.get("/").unwrap().full_stat().cversion, -1);
    let config = tree.get(CONFIG_PATH).unwrap();
    assert_eq!(config.stat.aversion, -1);
    assert_eq!(&config.acl[..], &read_acl_unsafe()[..]);
    assert_eq!(tree.all_children_number("/"), 3);
}

#[test]
fn create_sets_stat_and_parent_cversion_pzxid() {
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    let result = tree.apply(&txn(5, create("/a", 0, 1)), &mut triggers);
    assert_eq!(result.err, ErrorCode::Ok);
    let stat = result.stat.unwrap();
    assert_eq!((stat.czxid, stat.mzxid, stat.pzxid, stat.ctime, stat.mtime), (5, 5, 5, 1005, 1005));
    assert_eq!((stat.version, stat.cversion, stat.aversion, stat.data_length), (0, 0, 0, 1));
    let root = tree.get("/").unwrap();
    // Stored: one create; reported: 2 * 1 - 2 children (the fresh root reports -1).
    assert_eq!((root.stat.cversion, root.full_stat().cversion, root.stat.pzxid), (1, 0, 5));
    assert_eq!(
        triggers,
        vec![
            Trigger { path: "/a".into(), event_type: event::NODE_CREATED },
            Trigger { path: "/".into(), event_type: event::NODE_CHILDREN_CHANGED },
        ]
    );
}

#[test]
fn delete_moves_parent_pzxid_but_not_cversion() {
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    tree.apply(&txn(2, create("/a", 0, 1)), &mut triggers);
    tree.apply(&txn(3, create("/a/b", 0, 1)), &mut triggers);
    triggers.clear();
    let result = tree.apply(&txn(4, TxnBody::Delete { path: "/a/b".into() }), &mut triggers);
    assert_eq!(result.err, ErrorCode::Ok);
    let parent = tree.get("/a").unwrap();
    // One create stored; reported cversion counts the delete too.
    assert_eq!((parent.stat.cversion, parent.full_stat().cversion, parent.stat.pzxid), (1, 2, 4));
    assert_eq!(triggers[0], Trigger { path: "/a/b".into(), event_type: event::NODE_DELETED });
    assert_eq!(triggers[1], Trigger { path: "/a".into(), event_type: event::NODE_CHILDREN_CHANGED });
}

#[test]
fn close_session_removes_its_ephemerals_only() {
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    tree.apply(&txn(1, TxnBody::CreateSession { timeout_ms: 4000 }), &mut triggers);
    tree.apply(&txn(2, create("/e1", 7, 1)), &mut triggers);
    tree.apply(&txn(3, create("/e2", 7, 2)), &mut triggers);
    tree.apply(&txn(4, create("/other", 8, 3)), &mut triggers);
    assert_eq!(tree.ephemerals(7).count(), 2);
    tree.apply(&txn(5, TxnBody::CloseSession), &mut triggers);
    assert!(tree.get("/e1").is_none() && tree.get("/e2").is_none());
    assert!(tree.get("/other").is_some());
    assert_eq!(tree.ephemerals(7).count(), 0);
    assert!(!tree.sessions().contains_key(&7));
    assert_eq!(tree.get("/").unwrap().stat.pzxid, 5);
}

#[test]
fn failed_multi_changes_nothing_and_reports_ok_then_error_then_runtime_inconsistency() {
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    let body = TxnBody::Multi(vec![
        TxnBody::Error { err: ErrorCode::Ok },
        TxnBody::Error { err: ErrorCode::NoNode },
        TxnBody::Error { err: ErrorCode::RuntimeInconsistency },
    ]);
    let before = tree.digest();
    let result = tree.apply(&txn(9, body), &mut triggers);
    assert_eq!(result.err, ErrorCode::Ok);
    let errors: Vec<_> = result.multi.iter().map(|sub| sub.err).collect();
    assert_eq!(errors, vec![ErrorCode::Ok, ErrorCode::NoNode, ErrorCode::RuntimeInconsistency]);
    assert_eq!(tree.digest(), before);
    assert!(triggers.is_empty());
    assert_eq!(tree.last_processed_zxid(), 9);
}

#[test]
fn containers_and_ttls_become_candidates_as_zookeeper_decides() {
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    tree.apply(&txn(1, create("/c", ephemeral_owner::CONTAINER, 1)), &mut triggers);
    tree.apply(&txn(2, create("/t", ephemeral_owner::ttl(100), 2)), &mut triggers);
    // A container that never had a child is not removed.
    assert_eq!(tree.container_candidates(1002, 10), Vec::<String>::new());
    tree.apply(&txn(3, create("/c/x", 0, 1)), &mut triggers);
    tree.apply(&txn(4, TxnBody::Delete { path: "/c/x".into() }), &mut triggers);
    assert_eq!(tree.container_candidates(1002, 10), vec!["/c".to_string()]);
    assert_eq!(tree.container_candidates(1002 + 101, 10), vec!["/c".to_string(), "/t".to_string()]);
}

#[test]
fn acl_interning_releases_unused_lists() {
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    let baseline = tree.acl_count();
    let mut body = create("/a", 0, 1);
    if let TxnBody::Create(create) = &mut body {
        create.acl = vec![Acl { perms: 1, id: Id { scheme: "digest".into(), id: "u:x".into() } }].into();
    }
    tree.apply(&txn(1, body), &mut triggers);
    assert_eq!(tree.acl_count(), baseline + 1);
    tree.apply(&txn(2, TxnBody::Delete { path: "/a".into() }), &mut triggers);
    assert_eq!(tree.acl_count(), baseline);
}

#[test]
fn restore_rebuilds_children_and_indexes() {
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    tree.apply(&txn(1, TxnBody::CreateSession { timeout_ms: 4000 }), &mut triggers);
    tree.apply(&txn(2, create("/a", 0, 1)), &mut triggers);
    tree.apply(&txn(3, create("/a/e", 7, 1)), &mut triggers);
    tree.apply(&txn(4, create("/c", ephemeral_owner::CONTAINER, 2)), &mut triggers);
    let nodes: Vec<_> = tree
        .iter_nodes()
        .map(|(path, node)| (path.to_owned(), node.data.clone(), node.acl.clone(), node.stat))
        .collect();
    let sessions: Vec<_> = tree.sessions().iter().map(|(id, timeout)| (*id, *timeout)).collect();
    let restored = DataTree::restore(tree.last_processed_zxid(), nodes, sessions).unwrap();
    assert_eq!(restored.digest(), tree.digest());
    assert_eq!(restored.ephemerals(7).collect::<Vec<_>>(), vec!["/a/e"]);
    assert_eq!(restored.sessions().get(&7), Some(&4000));
    assert_eq!(restored.last_processed_zxid(), 4);
    assert_eq!(restored.approximate_data_size(), tree.approximate_data_size());
    let orphan = vec![("/".to_string(), None, open_acl_unsafe().into(), StatPersisted::default()), ("/x/y".to_string(), None, open_acl_unsafe().into(), StatPersisted::default())];
    assert!(DataTree::restore(0, orphan, []).is_err());
}

/// Every replica holds one Node per znode (four replicas on a two-core
/// server): its size is most of the server's memory per znode, so growing
/// it is a decision, not an accident. Leaves carry no child set.
#[test]
fn nodes_stay_compact_and_leaves_allocate_no_child_set() {
    assert!(std::mem::size_of::<Node>() <= 120, "Node grew to {} bytes", std::mem::size_of::<Node>());
    let mut tree = DataTree::new();
    let mut triggers = Vec::new();
    tree.apply(&txn(2, create("/a", 0, 1)), &mut triggers);
    tree.apply(&txn(3, create("/a/b", 0, 1)), &mut triggers);
    assert_eq!(tree.get("/a").unwrap().children.len(), 1);
    assert!(tree.get("/a").unwrap().children.contains("b"));
    assert!(tree.get("/a/b").unwrap().children.is_empty());
    tree.apply(&txn(4, TxnBody::Delete { path: "/a/b".into() }), &mut triggers);
    let a = tree.get("/a").unwrap();
    assert!(a.children.is_empty() && !a.children.contains("b"));
    assert_eq!(a.full_stat().num_children, 0);
}

/// Replicas share a znode's path: each keys the znode by the create txn's
/// allocation and lists it in the parent's child set, copying nothing.
#[test]
fn replicas_share_the_create_txns_path() {
    let create_txn = txn(2, create("/a", 0, 1));
    let TxnBody::Create(body) = &create_txn.body else { unreachable!() };
    let mut trees = [DataTree::new(), DataTree::new()];
    let mut triggers = Vec::new();
    for tree in &mut trees {
        tree.apply(&create_txn, &mut triggers);
    }
    // The txn's own reference, plus a key and a child entry per tree.
    assert_eq!(Arc::strong_count(&body.path), 1 + 2 * trees.len());
    let root = trees[0].get("/").unwrap();
    assert!(root.children.contains("a") && root.children.contains("zookeeper"));
    let mut names: Vec<&str> = root.children.iter().map(|child| child.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "zookeeper"]);
    for tree in &mut trees {
        tree.apply(&txn(3, TxnBody::Delete { path: "/a".into() }), &mut triggers);
    }
    assert_eq!(Arc::strong_count(&body.path), 1);
}

#[test]
fn applying_quietly_reaches_the_same_state() {
    let acl_admin_only = vec![Acl { perms: perms::ADMIN, id: Id { scheme: "world".into(), id: "anyone".into() } }];
    let bodies = vec![
        TxnBody::CreateSession { timeout_ms: 4000 },
        create("/a", 0, 1),
        create("/a/e", 7, 1),
        create("/c", ephemeral_owner::CONTAINER, 2),
        create("/t", ephemeral_owner::ttl(60_000), 3),
        TxnBody::SetData { path: "/a".into(), data: Some(Bytes::from_static(b"longer")), version: 1 },
        TxnBody::SetAcl { path: "/c".into(), acl: acl_admin_only, version: 1 },
        TxnBody::Multi(vec![create("/m", 0, 4), TxnBody::Delete { path: "/t".into() }]),
        TxnBody::Multi(vec![create("/n", 0, 5), TxnBody::Error { err: ErrorCode::NoNode }]),
        TxnBody::Delete { path: "/missing".into() },
        TxnBody::Check { path: "/a".into() },
        TxnBody::Error { err: ErrorCode::BadVersion },
        TxnBody::CloseSession,
    ];
    let (mut loud, mut quiet) = (DataTree::new(), DataTree::new());
    let mut triggers = Vec::new();
    for (index, body) in bodies.into_iter().enumerate() {
        let txn = txn(index as i64 + 1, body);
        loud.apply(&txn, &mut triggers);
        quiet.apply_quietly(&txn);
        assert_eq!(quiet.digest(), loud.digest(), "after {:?}", txn.body);
        assert_eq!(quiet.last_processed_zxid(), loud.last_processed_zxid());
        assert_eq!(quiet.ephemerals_by_session(), loud.ephemerals_by_session());
        assert_eq!(quiet.sessions(), loud.sessions());
        assert_eq!(quiet.acl_count(), loud.acl_count());
        assert_eq!(quiet.data_bytes(), loud.data_bytes());
        assert_eq!(quiet.container_candidates(i64::MAX, 10), loud.container_candidates(i64::MAX, 10));
    }
    assert!(!triggers.is_empty(), "the loud replica reported its triggers");
    assert!(quiet.get("/a/e").is_none(), "the session's ephemeral went with it");
    assert!(quiet.get("/m").is_some() && quiet.get("/n").is_none());
}

/// A create of a znode that exists (a replayed txn) is NodeExists and
/// changes nothing: not the node, not its parent's cversion, pzxid or child
/// count. The child set answers whether it exists (one node-table probe).
#[test]
fn a_create_of_an_existing_znode_changes_nothing() {
    let mut tree = DataTree::new();
    tree.apply_quietly(&txn(1, create("/p", 0, 1)));
    tree.apply_quietly(&txn(2, create("/p/a", 0, 1)));
    let before = (tree.get("/p").unwrap().full_stat(), tree.get("/p/a").unwrap().full_stat(), tree.node_count());
    let mut again = create("/p/a", 0, 5);
    if let TxnBody::Create(create) = &mut again {
        create.data = Some(Bytes::from_static(b"other"));
    }
    let result = tree.apply(&txn(3, again), &mut Vec::new());
    assert_eq!(result.err, ErrorCode::NodeExists);
    let after = (tree.get("/p").unwrap().full_stat(), tree.get("/p/a").unwrap().full_stat(), tree.node_count());
    assert_eq!(before, after);
    assert_eq!(tree.get("/p/a").unwrap().data.as_deref(), Some(&b"v"[..]));
    assert_eq!(tree.get("/p").unwrap().children.len(), 1);
}
