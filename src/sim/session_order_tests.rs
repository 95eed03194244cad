//! Each check on sequences that keep the guarantee (must pass) and that break
//! it (must fail, with the right check and event).

use super::*;

use ChangeKind::{Created, DataChanged, Deleted};
use EventType::{NodeChildrenChanged, NodeCreated, NodeDataChanged, NodeDeleted};

const SESSION: SessionId = 0x1_0000_0001;

fn session(events: Vec<SessionEvent>) -> SessionHistory {
    SessionHistory { session_id: SESSION, events }
}

fn read(xid: Xid, path: &str) -> SessionEvent {
    SessionEvent::Sent { xid, kind: OpKind::Read, path: path.to_string(), watch: None }
}

fn write(xid: Xid, path: &str) -> SessionEvent {
    SessionEvent::Sent { xid, kind: OpKind::Write, path: path.to_string(), watch: None }
}

fn watch(xid: Xid, path: &str, watch: WatchRequest) -> SessionEvent {
    SessionEvent::Sent { xid, kind: OpKind::Read, path: path.to_string(), watch: Some(watch) }
}

fn reply(xid: Xid, zxid: Zxid) -> SessionEvent {
    SessionEvent::Reply { xid, zxid, err: ErrorCode::Ok }
}

fn failed(xid: Xid, zxid: Zxid, err: ErrorCode) -> SessionEvent {
    SessionEvent::Reply { xid, zxid, err }
}

fn event(path: &str, event: EventType, zxid: Zxid) -> SessionEvent {
    SessionEvent::Watch { path: path.to_string(), event, zxid }
}

fn reconnected(last_zxid_seen: Zxid) -> SessionEvent {
    SessionEvent::Reconnected { last_zxid_seen }
}

fn watches_restored(zxid: Zxid) -> SessionEvent {
    SessionEvent::WatchesRestored { zxid }
}

fn change(zxid: Zxid, path: &str, kind: ChangeKind) -> Change {
    Change { zxid, path: path.to_string(), kind }
}

/// Asserts `result` is a violation of `check` shown at event `index`.
fn assert_violates(result: Result<(), Violation>, check: Check, index: usize) {
    match result {
        Err(violation) => {
            println!("{violation}");
            assert_eq!((violation.check, violation.event_index), (check, index), "{violation}");
            assert_eq!(violation.session_id, SESSION);
        }
        Ok(()) => panic!("expected a {check:?} violation at event #{index}"),
    }
}

// ---------------------------------------------------------------------------
// FIFO order.

#[test]
fn fifo_accepts_pipelined_requests_answered_in_order() {
    let history = session(vec![
        write(1, "/a"),
        read(2, "/a"),
        read(3, "/b"),
        reply(1, 0x10),
        reply(2, 0x10),
        write(4, "/b"),
        reply(3, 0x10),
        reply(4, 0x11),
    ]);
    assert_eq!(check_fifo_order(&history), Ok(()));
}

#[test]
fn fifo_forgets_requests_in_flight_at_a_reconnect() {
    // xids 2 and 3 failed with ConnectionLoss; the session goes on.
    let history = session(vec![
        read(1, "/a"),
        reply(1, 0x10),
        write(2, "/a"),
        read(3, "/a"),
        reconnected(0x10),
        read(4, "/a"),
        reply(4, 0x12),
    ]);
    assert_eq!(check_fifo_order(&history), Ok(()));
}

#[test]
fn fifo_catches_a_reply_out_of_order() {
    let history = session(vec![write(1, "/a"), read(2, "/a"), reply(2, 0x10), reply(1, 0x10)]);
    assert_violates(check_fifo_order(&history), Check::FifoOrder, 2);
}

#[test]
fn fifo_catches_a_second_reply() {
    let history = session(vec![read(1, "/a"), reply(1, 0x10), reply(1, 0x10)]);
    assert_violates(check_fifo_order(&history), Check::FifoOrder, 2);
}

#[test]
fn fifo_catches_a_reply_never_asked_for() {
    let history = session(vec![read(1, "/a"), reply(1, 0x10), reply(7, 0x10)]);
    assert_violates(check_fifo_order(&history), Check::FifoOrder, 2);
    assert_violates(check_fifo_order(&session(vec![reply(1, 0x10)])), Check::FifoOrder, 0);
}

#[test]
fn fifo_catches_a_reply_from_the_old_connection() {
    let history = session(vec![write(1, "/a"), reconnected(0), reply(1, 0x10)]);
    assert_violates(check_fifo_order(&history), Check::FifoOrder, 2);
}

#[test]
fn fifo_catches_an_xid_sent_twice() {
    let history = session(vec![read(1, "/a"), reply(1, 0x10), read(1, "/a")]);
    assert_violates(check_fifo_order(&history), Check::FifoOrder, 2);
}

// ---------------------------------------------------------------------------
// Monotonic zxids: no going back in time.

#[test]
fn monotonic_accepts_equal_and_rising_zxids_across_reconnects() {
    let history = session(vec![
        read(1, "/a"),
        reply(1, 0x10),
        read(2, "/a"),
        reply(2, 0x10),
        write(3, "/a"),
        failed(3, 0x11, ErrorCode::BadVersion),
        reconnected(0x11),
        read(4, "/a"),
        reply(4, 0x11),
        write(5, "/a"),
        reply(5, 0x20),
    ]);
    assert_eq!(check_monotonic_zxid(&history), Ok(()));
}

#[test]
fn monotonic_catches_a_reply_from_the_past() {
    let history = session(vec![read(1, "/a"), reply(1, 0x10), read(2, "/a"), reply(2, 0xf)]);
    assert_violates(check_monotonic_zxid(&history), Check::MonotonicZxid, 3);
}

#[test]
fn monotonic_catches_a_server_behind_the_client_after_a_reconnect() {
    // The client told the server it had seen 0x20; the server accepted it
    // and answered from 0x18. It must have refused the connection.
    let history = session(vec![write(1, "/a"), reply(1, 0x20), reconnected(0x20), read(2, "/a"), reply(2, 0x18)]);
    assert_violates(check_monotonic_zxid(&history), Check::MonotonicZxid, 4);
}

#[test]
fn monotonic_catches_a_reconnect_that_forgets_what_was_seen() {
    let history = session(vec![read(1, "/a"), reply(1, 0x20), reconnected(0x10)]);
    assert_violates(check_monotonic_zxid(&history), Check::MonotonicZxid, 2);
}

// ---------------------------------------------------------------------------
// Read-your-writes.

#[test]
fn read_your_writes_accepts_reads_at_or_after_the_write() {
    let history = session(vec![
        write(1, "/a"),
        reply(1, 0x10),
        read(2, "/a"),
        reply(2, 0x10),
        // A failed write promises nothing; another path's write says
        // nothing about /b's reads (monotonic zxids cover that).
        write(3, "/b"),
        failed(3, 0x30, ErrorCode::NoNode),
        read(4, "/b"),
        reply(4, 0x12),
    ]);
    assert_eq!(check_read_your_writes(&history), Ok(()));
}

#[test]
fn read_your_writes_catches_a_read_before_the_own_write() {
    let history = session(vec![write(1, "/a"), reply(1, 0x10), read(2, "/a"), reply(2, 0xc)]);
    assert_violates(check_read_your_writes(&history), Check::ReadYourWrites, 3);
}

#[test]
fn read_your_writes_holds_across_a_reconnect() {
    let history = session(vec![
        write(1, "/a"),
        reply(1, 0x10),
        reconnected(0x10),
        read(2, "/a"),
        failed(2, 0x9, ErrorCode::NoNode),
    ]);
    assert_violates(check_read_your_writes(&history), Check::ReadYourWrites, 4);
}

// ---------------------------------------------------------------------------
// Watches.

fn committed() -> CommittedChanges {
    CommittedChanges::new(&[
        change(0x5, "/a", Created),
        change(0x7, "/a", DataChanged),
        change(0x8, "/b", DataChanged),
        change(0x9, "/a", DataChanged),
        change(0xa, "/c", Created),
        change(0xb, "/a/x", Created),
        // A multi: two changes at one zxid, in the order applied.
        change(0xc, "/a/x", Deleted),
        change(0xc, "/a", Deleted),
    ])
}

#[test]
fn watch_event_arrives_before_the_data_it_announces() {
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x6),
        // Other traffic that does not reveal 0x7 yet.
        read(2, "/b"),
        reply(2, 0x6),
        event("/a", NodeDataChanged, 0x7),
        read(3, "/a"),
        reply(3, 0x8),
    ]);
    assert_eq!(check_watches(&history, &committed()), Ok(()));
}

#[test]
fn watch_catches_data_seen_before_its_event() {
    // ZooKeeper's guarantee: the event for 0x7 must come before any reply
    // at 0x7 or later.
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x6),
        read(2, "/b"),
        reply(2, 0x8),
        event("/a", NodeDataChanged, 0x7),
    ]);
    assert_violates(check_watches(&history, &committed()), Check::WatchBeforeData, 3);
}

#[test]
fn watch_catches_the_own_write_reply_before_its_event() {
    // The session changes the node it watches: the event still comes first.
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x6),
        write(2, "/a"),
        reply(2, 0x7),
        event("/a", NodeDataChanged, 0x7),
    ]);
    assert_violates(check_watches(&history, &committed()), Check::WatchBeforeData, 3);
}

#[test]
fn watch_fires_once_per_registration_and_can_be_set_again() {
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        // The same watch twice before it fires: one registration.
        watch(2, "/a", WatchRequest::Exists),
        reply(1, 0x6),
        reply(2, 0x6),
        event("/a", NodeDataChanged, 0x7),
        watch(3, "/a", WatchRequest::Data),
        reply(3, 0x8),
        event("/a", NodeDataChanged, 0x9),
    ]);
    assert_eq!(check_watches(&history, &committed()), Ok(()));
}

#[test]
fn watch_catches_an_event_fired_twice() {
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x6),
        event("/a", NodeDataChanged, 0x7),
        event("/a", NodeDataChanged, 0x9),
    ]);
    assert_violates(check_watches(&history, &committed()), Check::WatchFiresOnce, 3);
}

#[test]
fn watch_catches_an_event_never_asked_for() {
    let history = session(vec![read(1, "/a"), reply(1, 0x6), event("/a", NodeDataChanged, 0x7)]);
    assert_violates(check_watches(&history, &committed()), Check::WatchFiresOnce, 2);
    // getData on a missing node sets no watch (ZooKeeper throws NoNode
    // before registering); exists does.
    let history = session(vec![
        watch(1, "/c", WatchRequest::Data),
        failed(1, 0x6, ErrorCode::NoNode),
        event("/c", NodeCreated, 0xa),
    ]);
    assert_violates(check_watches(&history, &committed()), Check::WatchFiresOnce, 2);
    let history = session(vec![
        watch(1, "/c", WatchRequest::Exists),
        failed(1, 0x6, ErrorCode::NoNode),
        event("/c", NodeCreated, 0xa),
        read(2, "/c"),
        reply(2, 0xa),
    ]);
    assert_eq!(check_watches(&history, &committed()), Ok(()));
}

#[test]
fn watch_catches_an_event_for_the_wrong_change() {
    // Registered at 0x6: the first change is 0x7, not 0x9.
    let skipped = session(vec![watch(1, "/a", WatchRequest::Data), reply(1, 0x6), event("/a", NodeDataChanged, 0x9)]);
    assert_violates(check_watches(&skipped, &committed()), Check::WatchMatchesChange, 2);
    // The right change with the wrong type.
    let wrong_type = session(vec![watch(1, "/a", WatchRequest::Data), reply(1, 0x6), event("/a", NodeCreated, 0x7)]);
    assert_violates(check_watches(&wrong_type, &committed()), Check::WatchMatchesChange, 2);
    // A change the session had already seen when it set the watch.
    let stale = session(vec![watch(1, "/a", WatchRequest::Data), reply(1, 0x7), event("/a", NodeDataChanged, 0x7)]);
    assert_violates(check_watches(&stale, &committed()), Check::WatchMatchesChange, 2);
}

#[test]
fn child_watches_and_deletes() {
    // A child created fires the child watch; a multi deleting the child and
    // then the node fires the child watch once (NodeChildrenChanged, the
    // first change) and the data watch with NodeDeleted.
    let history = session(vec![
        watch(1, "/a", WatchRequest::Children),
        reply(1, 0xa),
        event("/a", NodeChildrenChanged, 0xb),
        watch(2, "/a", WatchRequest::Children),
        watch(3, "/a", WatchRequest::Data),
        reply(2, 0xb),
        reply(3, 0xb),
        event("/a", NodeChildrenChanged, 0xc),
        event("/a", NodeDeleted, 0xc),
        read(4, "/a"),
        failed(4, 0xc, ErrorCode::NoNode),
    ]);
    assert_eq!(check_watches(&history, &committed()), Ok(()));
    // Without the child watch, one NodeDeleted serves both tables: a child
    // and a data watch on the deleted node get a single event.
    let changes = CommittedChanges::new(&[change(0x5, "/p", Created), change(0x9, "/p", Deleted)]);
    let history = session(vec![
        watch(1, "/p", WatchRequest::Children),
        watch(2, "/p", WatchRequest::Data),
        reply(1, 0x5),
        reply(2, 0x5),
        event("/p", NodeDeleted, 0x9),
        read(3, "/p"),
        failed(3, 0x9, ErrorCode::NoNode),
    ]);
    assert_eq!(check_watches(&history, &changes), Ok(()));
    // A missed child event shows at the next reply past it.
    let history = session(vec![watch(1, "/a", WatchRequest::Children), reply(1, 0xa), read(2, "/a"), reply(2, 0xb)]);
    assert_violates(check_watches(&history, &committed()), Check::WatchBeforeData, 3);
}

#[test]
fn watch_after_a_reconnect_may_report_a_later_change() {
    // While disconnected, /a changed at 0x7 and 0x9; the new server's
    // setWatches, at 0x9, fires once (ZooKeeper reports mzxid > lastZxid).
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x6),
        reconnected(0x6),
        event("/a", NodeDataChanged, 0x9),
        watches_restored(0x9),
        read(2, "/a"),
        reply(2, 0x9),
    ]);
    assert_eq!(check_watches(&history, &committed()), Ok(()));
    // Still only a change that fires it: nothing changed /a in (0x9, 0xb].
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x9),
        reconnected(0x9),
        event("/a", NodeDataChanged, 0xb),
    ]);
    assert_violates(check_watches(&history, &committed()), Check::WatchMatchesChange, 3);
    // And still before the data: a client that did not restore its watches.
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x6),
        reconnected(0x6),
        read(2, "/a"),
        reply(2, 0x9),
        event("/a", NodeDataChanged, 0x9),
    ]);
    assert_violates(check_watches(&history, &committed()), Check::WatchBeforeData, 4);
}

#[test]
fn watch_after_a_reconnect_is_not_lost() {
    // The setWatches reply at 0x9 re-registered a watch that 0x7 fires.
    let history = session(vec![watch(1, "/a", WatchRequest::Data), reply(1, 0x6), reconnected(0x6), watches_restored(0x9)]);
    assert_violates(check_watches(&history, &committed()), Check::WatchBeforeData, 3);
    // Re-registered at 0x6 with nothing changed: from there on the first
    // change fires it, exactly.
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x6),
        reconnected(0x6),
        watches_restored(0x6),
        event("/a", NodeDataChanged, 0x9),
    ]);
    assert_violates(check_watches(&history, &committed()), Check::WatchMatchesChange, 4);
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x6),
        reconnected(0x6),
        watches_restored(0x6),
        event("/a", NodeDataChanged, 0x7),
        read(2, "/a"),
        reply(2, 0x8),
    ]);
    assert_eq!(check_watches(&history, &committed()), Ok(()));
}

#[test]
fn watch_after_a_reconnect_reports_what_set_watches_reports() {
    // /a is gone at 0xd: its data and child watches each get NodeDeleted
    // (ZooKeeper's setWatches fires once per list).
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        watch(2, "/a", WatchRequest::Children),
        reply(1, 0xb),
        reply(2, 0xb),
        reconnected(0xb),
        event("/a", NodeDeleted, 0xd),
        event("/a", NodeDeleted, 0xd),
        watches_restored(0xd),
        read(3, "/a"),
        failed(3, 0xd, ErrorCode::NoNode),
    ]);
    assert_eq!(check_watches(&history, &committed()), Ok(()));
    // Not NodeDataChanged for a node that is gone.
    let history = session(vec![
        watch(1, "/a", WatchRequest::Data),
        reply(1, 0x6),
        reconnected(0x6),
        event("/a", NodeDataChanged, 0xd),
    ]);
    assert_violates(check_watches(&history, &committed()), Check::WatchMatchesChange, 3);
    // An exists watch on a missing node: NodeCreated if it exists now.
    let history = session(vec![
        watch(1, "/c", WatchRequest::Exists),
        failed(1, 0x6, ErrorCode::NoNode),
        reconnected(0x6),
        event("/c", NodeCreated, 0xd),
        watches_restored(0xd),
    ]);
    assert_eq!(check_watches(&history, &committed()), Ok(()));
}

#[test]
fn an_exists_watch_misses_a_node_created_and_deleted_while_disconnected() {
    // ZooKeeper's setWatches only asks whether the node exists: /e came and
    // went while the client was away, and no event tells it.
    let changes = CommittedChanges::new(&[
        change(0x20, "/e", Created),
        change(0x21, "/e", Deleted),
        change(0x23, "/e", Created),
    ]);
    let history = session(vec![
        watch(1, "/e", WatchRequest::Exists),
        failed(1, 0x10, ErrorCode::NoNode),
        reconnected(0x10),
        watches_restored(0x22),
        read(2, "/e"),
        failed(2, 0x22, ErrorCode::NoNode),
        event("/e", NodeCreated, 0x23),
    ]);
    assert_eq!(check_watches(&history, &changes), Ok(()));
    // A data watch has no such excuse.
    let history = session(vec![
        watch(1, "/e", WatchRequest::Exists),
        reply(1, 0x20),
        reconnected(0x20),
        watches_restored(0x22),
    ]);
    assert_violates(check_watches(&history, &changes), Check::WatchBeforeData, 3);
}

#[test]
fn monotonic_counts_the_set_watches_reply() {
    let history = session(vec![read(1, "/a"), reply(1, 0x20), reconnected(0x20), watches_restored(0x18)]);
    assert_violates(check_monotonic_zxid(&history), Check::MonotonicZxid, 3);
}

// ---------------------------------------------------------------------------
// All of them.

#[test]
fn check_session_runs_every_check() {
    let good = session(vec![
        watch(1, "/a", WatchRequest::Data),
        write(2, "/b"),
        reply(1, 0x6),
        reply(2, 0x8),
        event("/a", NodeDataChanged, 0x7),
    ]);
    // The event comes after the reply at 0x8 here: watch before data fails,
    // though every other check passes.
    assert_eq!(check_fifo_order(&good), Ok(()));
    assert_eq!(check_monotonic_zxid(&good), Ok(()));
    assert_eq!(check_read_your_writes(&good), Ok(()));
    assert_violates(check_session(&good, &committed()), Check::WatchBeforeData, 3);

    let good = session(vec![
        watch(1, "/a", WatchRequest::Data),
        write(2, "/a"),
        reply(1, 0x6),
        event("/a", NodeDataChanged, 0x7),
        reply(2, 0x7),
        read(3, "/a"),
        reply(3, 0x8),
    ]);
    assert_eq!(check_session(&good, &committed()), Ok(()));
    // FIFO is checked first.
    let bad = session(vec![read(1, "/a"), read(2, "/a"), reply(2, 0x6), reply(1, 0x5)]);
    assert_violates(check_session(&bad, &committed()), Check::FifoOrder, 2);
}

#[test]
fn parent_paths() {
    assert_eq!(parent_of("/"), None);
    assert_eq!(parent_of("/a"), Some("/"));
    assert_eq!(parent_of("/a/b/c"), Some("/a/b"));
    assert_eq!(parent_of("relative"), None);
}
