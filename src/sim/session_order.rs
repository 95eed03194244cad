//! Per-session ordering guarantees, checked on what one client saw.
//!
//! ZooKeeper promises each session (the "ZooKeeper guarantees" of the
//! programmer's guide): its requests are answered in the order it sent them
//! (FIFO client order); it never sees the service go back in time, even
//! after reconnecting to another server (a server whose state is behind the
//! client's lastZxidSeen refuses the connection); it reads its own writes;
//! and it sees a watch event before any reply that reveals the change that
//! fired it, each standard watch firing at most once. Watches survive a
//! reconnect: the client re-sends them with setWatches, and the new server
//! fires at once those whose node changed meanwhile (ZooKeeper's
//! DataTree.setWatches) and re-registers the rest.
//!
//! The simulator gives, per session, the events as the client saw them
//! (`SessionEvent`), and once per run the committed changes in zxid order
//! (`CommittedChanges`). Each check is a small named function returning the
//! first violation; `check_session` runs them all. Each is one pass over the
//! events, so time and memory are linear in the input (the watch check also
//! scans the armed watches on each reply, at most one per watched path and
//! table). Pure: no I/O, no clock, deterministic.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use hashbrown::HashMap;

use crate::proto::codes::ErrorCode;

pub type Zxid = i64;
pub type Xid = i32;
pub type SessionId = i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// getData, exists, getChildren, getChildren2, sync and the like.
    Read,
    /// create, delete, setData, setACL, multi: anything that becomes a txn.
    Write,
}

/// The watch a read asked for, as ZooKeeper's client registers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchRequest {
    /// getData with watch: registered only if the node exists.
    Data,
    /// exists with watch: registered whether or not the node exists.
    Exists,
    /// getChildren / getChildren2 with watch: registered only if it exists.
    Children,
}

/// `Watcher.Event.EventType` for standard watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    NodeCreated,
    NodeDeleted,
    NodeDataChanged,
    NodeChildrenChanged,
}

/// What one session's client saw, in the order it saw it. Record client
/// requests only: not pings, auth, setWatches or other special
/// (negative) xids; the reply to setWatches is `WatchesRestored`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A request went out. For a multi, `path` may be any one of its paths
    /// (read-your-writes is checked for that path only).
    Sent { xid: Xid, kind: OpKind, path: String, watch: Option<WatchRequest> },
    /// A reply arrived: its header's zxid and error code.
    Reply { xid: Xid, zxid: Zxid, err: ErrorCode },
    /// A watch event arrived. The wire carries zxid -1, so the simulator
    /// supplies the zxid of the committed change that fired it. An event a
    /// server fires at once on setWatches (one that arrives between
    /// `Reconnected` and `WatchesRestored`) is fired by no single change: its
    /// zxid is the server's then, and the changes it reports are at or below
    /// it.
    Watch { path: String, event: EventType, zxid: Zxid },
    /// The session is connected again (to any server) after losing its
    /// connection; requests still in flight were failed by the client with
    /// ConnectionLoss and get no reply. `last_zxid_seen` is what the client
    /// sent in its ConnectRequest.
    Reconnected { last_zxid_seen: Zxid },
    /// The reply to the setWatches the client sent first on its new
    /// connection, with the session's watches not yet fired (ZooKeeper's
    /// client does so whenever it holds any): the server fired at once, in
    /// the events before this, the watches whose node changed since the
    /// client's last zxid, and re-registered the others as of its state at
    /// `zxid`, the reply header's.
    WatchesRestored { zxid: Zxid },
}

/// One session's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionHistory {
    pub session_id: SessionId,
    pub events: Vec<SessionEvent>,
}

/// What a committed txn did to one path, for watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Created,
    Deleted,
    DataChanged,
}

/// One change of the committed history. A multi or a closeSession changes
/// several paths at one zxid: give each, in the order the txn applies them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub zxid: Zxid,
    pub path: String,
    pub kind: ChangeKind,
}

/// The committed changes, indexed for the watch check.
#[derive(Clone, Debug, Default)]
pub struct CommittedChanges {
    /// Changes to each path, in commit order: (zxid, position in commit
    /// order, kind). The position orders changes within one zxid.
    by_path: HashMap<String, Vec<ChangeRecord>>,
    /// Creates and deletes of each path's direct children, in commit order.
    children_by_parent: HashMap<String, Vec<ChangeRecord>>,
}

/// A change that fires a registration: when, and the event it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Trigger {
    zxid: Zxid,
    position: usize,
    event: EventType,
}

impl CommittedChanges {
    /// Indexes `changes` by path; they are ordered by zxid (stably, so the
    /// changes of one txn keep their order).
    pub fn new(changes: &[Change]) -> CommittedChanges {
        let mut order: Vec<usize> = (0..changes.len()).collect();
        order.sort_by_key(|&i| changes[i].zxid);
        let mut committed = CommittedChanges::default();
        for (position, &i) in order.iter().enumerate() {
            let change = &changes[i];
            let record = (change.zxid, position, change.kind);
            committed.by_path.entry_ref(change.path.as_str()).or_default().push(record);
            if change.kind != ChangeKind::DataChanged {
                if let Some(parent) = parent_of(&change.path) {
                    committed.children_by_parent.entry_ref(parent).or_default().push(record);
                }
            }
        }
        committed
    }

    /// The first change after `registered` that fires a watch in `table` on
    /// `path`: for the data table any change of the node; for the child
    /// table a child created or deleted, or the node deleted. ZooKeeper
    /// fires a standard watch on the first such change the server applies.
    fn first_trigger(&self, path: &str, table: Table, registered: Zxid) -> Option<Trigger> {
        let own = changes_after(self.by_path.get(path), registered);
        match table {
            Table::Data => own.first().map(|&(zxid, position, kind)| Trigger {
                zxid,
                position,
                event: match kind {
                    ChangeKind::Created => EventType::NodeCreated,
                    ChangeKind::Deleted => EventType::NodeDeleted,
                    ChangeKind::DataChanged => EventType::NodeDataChanged,
                },
            }),
            Table::Child => {
                let children = changes_after(self.children_by_parent.get(path), registered);
                let child = children.first().map(|&(zxid, position, _)| Trigger {
                    zxid,
                    position,
                    event: EventType::NodeChildrenChanged,
                });
                let deleted = own
                    .iter()
                    .find(|&&(_, _, kind)| kind == ChangeKind::Deleted)
                    .map(|&(zxid, position, _)| Trigger { zxid, position, event: EventType::NodeDeleted });
                match (child, deleted) {
                    (Some(a), Some(b)) => Some(if (a.zxid, a.position) < (b.zxid, b.position) { a } else { b }),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Whether some change after `after`, at or below `at_most`, fires a
    /// watch in `table` on `path` (what setWatches reports after a
    /// reconnect: that something changed, not which change).
    fn fires_between(&self, path: &str, table: Table, after: Zxid, at_most: Zxid) -> bool {
        let within = |list: Option<&Vec<ChangeRecord>>, wanted: fn(ChangeKind) -> bool| {
            changes_after(list, after).iter().take_while(|&&(z, _, _)| z <= at_most).any(|&(_, _, kind)| wanted(kind))
        };
        match table {
            Table::Data => within(self.by_path.get(path), |_| true),
            Table::Child => {
                within(self.children_by_parent.get(path), |_| true)
                    || within(self.by_path.get(path), |kind| kind == ChangeKind::Deleted)
            }
        }
    }

    /// Whether `path` exists once every change at or below `zxid` applied;
    /// `None` when no committed change ever touched it at or below `zxid`
    /// (a node the tree starts with, or one never created).
    fn present_at(&self, path: &str, zxid: Zxid) -> Option<bool> {
        let list = self.by_path.get(path).map_or(&[][..], Vec::as_slice);
        let upto = list.partition_point(|&(z, _, _)| z <= zxid);
        upto.checked_sub(1).map(|last| list[last].2 != ChangeKind::Deleted)
    }
}

type ChangeRecord = (Zxid, usize, ChangeKind);

/// The part of a path's change list after `zxid`.
fn changes_after(list: Option<&Vec<ChangeRecord>>, zxid: Zxid) -> &[ChangeRecord] {
    let list = list.map_or(&[][..], Vec::as_slice);
    &list[list.partition_point(|&(z, _, _)| z <= zxid)..]
}

/// The parent of an absolute path ("/" for "/a"); `None` for "/" itself.
fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    let cut = path.rfind('/')?;
    Some(if cut == 0 { "/" } else { &path[..cut] })
}

/// ZooKeeper's two watch tables: getData and exists watches share the data
/// table (one event fires them both), getChildren watches use the child
/// table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Table {
    Data,
    Child,
}

/// Which guarantee a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    FifoOrder,
    MonotonicZxid,
    ReadYourWrites,
    WatchBeforeData,
    /// A watch event with no armed registration: never set, or fired twice.
    WatchFiresOnce,
    /// A watch event that is not the change that should have fired it.
    WatchMatchesChange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub session_id: SessionId,
    pub check: Check,
    /// The event (index into the session's events) that shows it.
    pub event_index: usize,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session 0x{:x}: {:?}: event #{}: {}", self.session_id, self.check, self.event_index, self.message)
    }
}

fn violation(session: &SessionHistory, check: Check, event_index: usize, message: String) -> Result<(), Violation> {
    Err(Violation { session_id: session.session_id, check, event_index, message })
}

/// Every check, in the order below; the first violation.
pub fn check_session(session: &SessionHistory, committed: &CommittedChanges) -> Result<(), Violation> {
    check_fifo_order(session)?;
    check_monotonic_zxid(session)?;
    check_read_your_writes(session)?;
    check_watches(session, committed)
}

/// FIFO client order: each reply answers the oldest request still in
/// flight; no xid is answered twice; no reply answers an xid never sent, or
/// one that was in flight when the connection was lost (it cannot arrive on
/// the new connection). An xid sent twice makes replies ambiguous and is
/// reported too.
pub fn check_fifo_order(session: &SessionHistory) -> Result<(), Violation> {
    let mut in_flight: VecDeque<(Xid, usize)> = VecDeque::new();
    let mut sent_at: HashMap<Xid, usize> = HashMap::new();
    let mut answered_at: HashMap<Xid, usize> = HashMap::new();
    let mut abandoned_at: HashMap<Xid, usize> = HashMap::new();
    for (index, event) in session.events.iter().enumerate() {
        match event {
            SessionEvent::Sent { xid, .. } => {
                if let Some(first) = sent_at.insert(*xid, index) {
                    let message = format!("xid {xid} sent again (first sent at event #{first})");
                    return violation(session, Check::FifoOrder, index, message);
                }
                in_flight.push_back((*xid, index));
            }
            SessionEvent::Reply { xid, .. } => {
                if let Some(&(oldest, oldest_sent)) = in_flight.front() {
                    if oldest == *xid {
                        in_flight.pop_front();
                        answered_at.insert(*xid, index);
                        continue;
                    }
                    if let Some(&(_, sent)) = in_flight.iter().find(|(waiting, _)| waiting == xid) {
                        let message = format!(
                            "reply to xid {xid} (sent at event #{sent}) before the reply to xid {oldest} \
                             (sent earlier, at event #{oldest_sent})"
                        );
                        return violation(session, Check::FifoOrder, index, message);
                    }
                }
                let message = if let Some(first) = answered_at.get(xid) {
                    format!("second reply to xid {xid} (first at event #{first})")
                } else if let Some(reconnected) = abandoned_at.get(xid) {
                    format!(
                        "reply to xid {xid}, which was in flight when the connection was lost \
                         (reconnected at event #{reconnected}): a reply on the new connection"
                    )
                } else {
                    format!("reply to xid {xid}, which the session never sent")
                };
                return violation(session, Check::FifoOrder, index, message);
            }
            SessionEvent::Reconnected { .. } => {
                for (xid, _) in in_flight.drain(..) {
                    abandoned_at.insert(xid, index);
                }
            }
            SessionEvent::Watch { .. } | SessionEvent::WatchesRestored { .. } => {}
        }
    }
    Ok(())
}

/// No going back in time: the zxids in a session's reply headers never
/// decrease, across reconnects too (a server behind the client's
/// lastZxidSeen must refuse it, ZooKeeper's NIOServerCnxn/"client has seen
/// zxid ... our last zxid is ..." check). A reconnect that claims less than
/// the session saw is reported as well: the client must send the highest,
/// or that server-side protection cannot work. The setWatches reply
/// (`WatchesRestored`) is a reply like the others.
pub fn check_monotonic_zxid(session: &SessionHistory) -> Result<(), Violation> {
    // The highest zxid the session has seen, and the event that showed it.
    let mut highest: Option<(Zxid, usize)> = None;
    for (index, event) in session.events.iter().enumerate() {
        match *event {
            SessionEvent::Reply { zxid, .. } | SessionEvent::WatchesRestored { zxid } => {
                if let Some((seen, seen_at)) = highest {
                    if zxid < seen {
                        let reply = match *event {
                            SessionEvent::Reply { xid, .. } => format!("reply to xid {xid}"),
                            _ => "setWatches reply".to_string(),
                        };
                        let message = format!(
                            "{reply} has zxid 0x{zxid:x}, but the session already saw 0x{seen:x} (event #{seen_at})"
                        );
                        return violation(session, Check::MonotonicZxid, index, message);
                    }
                }
                if highest.is_none_or(|(seen, _)| zxid > seen) {
                    highest = Some((zxid, index));
                }
            }
            SessionEvent::Reconnected { last_zxid_seen } => match highest {
                Some((seen, seen_at)) if last_zxid_seen < seen => {
                    let message = format!(
                        "reconnected with lastZxidSeen 0x{last_zxid_seen:x}, below 0x{seen:x} that the session \
                         saw at event #{seen_at}"
                    );
                    return violation(session, Check::MonotonicZxid, index, message);
                }
                Some((seen, _)) if last_zxid_seen == seen => {}
                _ => highest = Some((last_zxid_seen, index)),
            },
            SessionEvent::Sent { .. } | SessionEvent::Watch { .. } => {}
        }
    }
    Ok(())
}

/// The requests in flight, to pair each reply with its request. Replies
/// that match nothing are skipped here (`check_fifo_order` reports them).
#[derive(Default)]
struct InFlight<'e> {
    requests: HashMap<Xid, (usize, OpKind, &'e str, Option<WatchRequest>)>,
}

impl<'e> InFlight<'e> {
    /// Feeds one event; for a reply, returns its request: (event index, kind,
    /// path, watch).
    fn feed(
        &mut self,
        index: usize,
        event: &'e SessionEvent,
    ) -> Option<(usize, OpKind, &'e str, Option<WatchRequest>)> {
        match event {
            SessionEvent::Sent { xid, kind, path, watch } => {
                self.requests.insert(*xid, (index, *kind, path.as_str(), *watch));
                None
            }
            SessionEvent::Reply { xid, .. } => self.requests.remove(xid),
            SessionEvent::Reconnected { .. } => {
                self.requests.clear();
                None
            }
            SessionEvent::Watch { .. } | SessionEvent::WatchesRestored { .. } => None,
        }
    }
}

/// Read-your-writes: once a write to a path succeeded at zxid Z, every
/// later read of that path by the session is answered at zxid >= Z (the
/// server had applied the write). Monotonic zxids imply it; this check names
/// the path and the write.
pub fn check_read_your_writes(session: &SessionHistory) -> Result<(), Violation> {
    let mut in_flight = InFlight::default();
    // Per path: the highest zxid of the session's successful writes, and
    // the reply that showed it.
    let mut written: HashMap<&str, (Zxid, usize)> = HashMap::new();
    for (index, event) in session.events.iter().enumerate() {
        let Some((_, kind, path, _)) = in_flight.feed(index, event) else { continue };
        let SessionEvent::Reply { xid, zxid, err } = *event else { continue };
        match kind {
            OpKind::Write if err == ErrorCode::Ok => {
                let entry = written.entry(path).or_insert((zxid, index));
                if zxid > entry.0 {
                    *entry = (zxid, index);
                }
            }
            OpKind::Write => {}
            OpKind::Read => {
                if let Some(&(write_zxid, write_at)) = written.get(path) {
                    if zxid < write_zxid {
                        let message = format!(
                            "read of {path} (xid {xid}) answered at zxid 0x{zxid:x}, before the session's own \
                             write to it at 0x{write_zxid:x} (event #{write_at})"
                        );
                        return violation(session, Check::ReadYourWrites, index, message);
                    }
                }
            }
        }
    }
    Ok(())
}

/// A standard watch the session holds: armed by a read's reply (or
/// re-registered by a setWatches reply) at zxid `registered`, until an
/// event fires it.
#[derive(Clone, Copy, Debug)]
struct Armed {
    registered: Zxid,
    registered_at: usize,
    /// The change that must fire it, if one was ever committed.
    trigger: Option<Trigger>,
    /// Set by an exists that answered NoNode: ZooKeeper's client keeps it in
    /// its exist-watch list, for which setWatches fires only NodeCreated,
    /// and only if the node exists then.
    exist_list: bool,
}

impl Armed {
    /// "Data watch on /k set at event #12 (zxid 0x…)", for violations.
    fn describe(&self, path: &str, table: Table) -> String {
        format!("{table:?} watch on {path} set at event #{} (zxid 0x{:x})", self.registered_at, self.registered)
    }
}

/// Watches: (1) watch before data: once a change that fires an armed watch
/// is committed at Z1, the session gets the event before any reply with
/// zxid >= Z1 (ZooKeeper applies the txn, queues the events, then replies);
/// (2) a standard watch fires at most once per registration (and never
/// without one); (3) the event is the change that fired it: exactly the
/// first firing change after registration, with its event type.
///
/// Registrations follow ZooKeeper's client: getData and getChildren watches
/// on a successful reply, exists watches on success or NoNode. Repeating a
/// registration before it fires changes nothing (the server keeps one
/// watcher per path and table). Watches survive reconnects: the client
/// re-sends them with setWatches (its default) before anything else, and
/// the events before its reply (`WatchesRestored` at the server's zxid S)
/// are the ones the new server fired at once. Each must report a change
/// after its registration, at or below S, of the kind setWatches reports
/// (NodeDeleted for a node gone, NodeDataChanged for the data list,
/// NodeCreated for the exist list, NodeChildrenChanged for the child list);
/// at the reply, no watch it left armed may have such a change at or below
/// S, except an exist-list watch whose node is absent at S (ZooKeeper's
/// setWatches checks only that the node exists, so a create and delete
/// while disconnected go unreported). From S on the watches it re-registered
/// are checked as above, strictly.
pub fn check_watches(session: &SessionHistory, committed: &CommittedChanges) -> Result<(), Violation> {
    let mut in_flight = InFlight::default();
    let mut armed: BTreeMap<(&str, Table), Armed> = BTreeMap::new();
    // Between a reconnect (with watches armed) and the setWatches reply.
    let mut restoring = false;
    // Paths setWatches reported deleted: ZooKeeper's fires NodeDeleted once
    // per list holding the path, so a second one for a data and a child
    // watch on the same node is no second firing.
    let mut restored_deletes: Vec<&str> = Vec::new();
    for (index, event) in session.events.iter().enumerate() {
        let request = in_flight.feed(index, event);
        match event {
            SessionEvent::Reply { xid, zxid, err } => {
                check_no_reply_past_a_watch(session, &armed, index, *xid, *zxid)?;
                if let Some((_, _, path, Some(watch))) = request {
                    if let Some(table) = registers(watch, *err) {
                        armed.entry((path, table)).or_insert_with(|| Armed {
                            registered: *zxid,
                            registered_at: index,
                            trigger: committed.first_trigger(path, table, *zxid),
                            exist_list: watch == WatchRequest::Exists && *err == ErrorCode::NoNode,
                        });
                    }
                }
            }
            SessionEvent::Watch { path, event: event_type, zxid } => {
                let tables: &[Table] = match event_type {
                    EventType::NodeCreated | EventType::NodeDataChanged => &[Table::Data],
                    EventType::NodeChildrenChanged => &[Table::Child],
                    // A delete fires both tables' watches but sends one event
                    // (ZooKeeper's DataTree.deleteNode passes the watchers it
                    // already notified to the child table).
                    EventType::NodeDeleted => &[Table::Data, Table::Child],
                };
                let mut fired = 0;
                for &table in tables {
                    if let Some(registration) = armed.remove(&(path.as_str(), table)) {
                        fired += 1;
                        let fired_by = FiredBy { path, event_type: *event_type, zxid: *zxid, table };
                        if restoring {
                            check_restored_event(session, committed, index, fired_by, registration)?;
                        } else {
                            check_event_matches_change(session, index, fired_by, registration)?;
                        }
                    }
                }
                if restoring && *event_type == EventType::NodeDeleted {
                    if fired > 0 {
                        restored_deletes.push(path);
                        continue;
                    }
                    if restored_deletes.contains(&path.as_str()) {
                        continue;
                    }
                }
                if fired == 0 {
                    let message = format!(
                        "{event_type:?} for {path} (zxid 0x{zxid:x}) but no watch is armed there: never set, or \
                         already fired"
                    );
                    return violation(session, Check::WatchFiresOnce, index, message);
                }
            }
            SessionEvent::Reconnected { .. } => {
                restoring = !armed.is_empty();
                restored_deletes.clear();
            }
            SessionEvent::WatchesRestored { zxid } => {
                if !restoring {
                    continue;
                }
                restoring = false;
                restored_deletes.clear();
                for (&(path, table), registration) in armed.iter_mut() {
                    let missed = committed.fires_between(path, table, registration.registered, *zxid)
                        && !(registration.exist_list && committed.present_at(path, *zxid) != Some(true));
                    if missed {
                        let message = format!(
                            "the setWatches reply at zxid 0x{zxid:x} re-registered the {table:?} watch on {path} \
                             (set at event #{}, zxid 0x{:x}) without an event, though a change after it and at or \
                             below 0x{zxid:x} fires it",
                            registration.registered_at, registration.registered
                        );
                        return violation(session, Check::WatchBeforeData, index, message);
                    }
                    *registration = Armed {
                        registered: *zxid,
                        registered_at: index,
                        trigger: committed.first_trigger(path, table, *zxid),
                        exist_list: registration.exist_list,
                    };
                }
            }
            SessionEvent::Sent { .. } => {}
        }
    }
    Ok(())
}

/// The table a read's reply arms, following ZooKeeper's client
/// (ZooKeeper.ExistsWatchRegistration registers on NoNode too).
fn registers(watch: WatchRequest, err: ErrorCode) -> Option<Table> {
    match (watch, err) {
        (WatchRequest::Data, ErrorCode::Ok) => Some(Table::Data),
        (WatchRequest::Exists, ErrorCode::Ok | ErrorCode::NoNode) => Some(Table::Data),
        (WatchRequest::Children, ErrorCode::Ok) => Some(Table::Child),
        _ => None,
    }
}

/// Watch before data: no armed watch's firing change is at or below the
/// zxid of this reply.
fn check_no_reply_past_a_watch(
    session: &SessionHistory,
    armed: &BTreeMap<(&str, Table), Armed>,
    index: usize,
    xid: Xid,
    zxid: Zxid,
) -> Result<(), Violation> {
    let missed = armed
        .iter()
        .filter_map(|(key, registration)| registration.trigger.map(|trigger| (trigger, key, registration)))
        .filter(|(trigger, _, _)| trigger.zxid <= zxid)
        .min_by_key(|(trigger, _, _)| (trigger.zxid, trigger.position));
    let Some((trigger, (path, table), registration)) = missed else { return Ok(()) };
    let message = format!(
        "reply to xid {xid} at zxid 0x{zxid:x} reveals the change at 0x{:x} that fires the {table:?} watch on {path} \
         (set at event #{}, zxid 0x{:x}), but its {:?} event has not arrived",
        trigger.zxid, registration.registered_at, registration.registered, trigger.event
    );
    violation(session, Check::WatchBeforeData, index, message)
}

/// A watch event and the registration it fired.
#[derive(Clone, Copy, Debug)]
struct FiredBy<'e> {
    path: &'e str,
    event_type: EventType,
    zxid: Zxid,
    table: Table,
}

/// An event fired by a committed change: exactly the first change that
/// fires `registration` after it was set.
fn check_event_matches_change(
    session: &SessionHistory,
    index: usize,
    fired: FiredBy<'_>,
    registration: Armed,
) -> Result<(), Violation> {
    let FiredBy { path, event_type, zxid, table } = fired;
    let set = registration.describe(path, table);
    if zxid <= registration.registered {
        let message = format!("{event_type:?} at zxid 0x{zxid:x} fires the {set}, for a change it already saw");
        return violation(session, Check::WatchMatchesChange, index, message);
    }
    match registration.trigger {
        Some(trigger) if trigger.zxid == zxid && trigger.event == event_type => Ok(()),
        Some(trigger) => {
            let message = format!(
                "{event_type:?} at zxid 0x{zxid:x} fires the {set}, but the first change to fire it is {:?} at 0x{:x}",
                trigger.event, trigger.zxid
            );
            violation(session, Check::WatchMatchesChange, index, message)
        }
        None => {
            let message =
                format!("{event_type:?} at zxid 0x{zxid:x} fires the {set}, but no committed change fires it");
            violation(session, Check::WatchMatchesChange, index, message)
        }
    }
}

/// An event setWatches fired at once, with the server at `fired.zxid`: some
/// change after the registration and at or below it fires the watch, and
/// the event is the one ZooKeeper's DataTree.setWatches picks for the list
/// the client keeps it in and for the node as it is then.
fn check_restored_event(
    session: &SessionHistory,
    committed: &CommittedChanges,
    index: usize,
    fired: FiredBy<'_>,
    registration: Armed,
) -> Result<(), Violation> {
    let FiredBy { path, event_type, zxid, table } = fired;
    let set = registration.describe(path, table);
    if !committed.fires_between(path, table, registration.registered, zxid) {
        let message = format!(
            "setWatches at zxid 0x{zxid:x} fired {event_type:?} for the {set}, but no change after it and at or below \
             0x{zxid:x} fires it"
        );
        return violation(session, Check::WatchMatchesChange, index, message);
    }
    let present = committed.present_at(path, zxid);
    let expected = match (present, table, registration.exist_list) {
        (Some(false), _, false) => Some(EventType::NodeDeleted),
        // An exist-list watch on a node still absent stays registered.
        (Some(false), _, true) => None,
        (_, Table::Data, false) => Some(EventType::NodeDataChanged),
        (_, Table::Data, true) => Some(EventType::NodeCreated),
        (_, Table::Child, _) => Some(EventType::NodeChildrenChanged),
    };
    if expected == Some(event_type) {
        return Ok(());
    }
    let node = match present {
        Some(true) => "exists",
        Some(false) => "does not exist",
        None => "was never changed",
    };
    let message = format!(
        "setWatches at zxid 0x{zxid:x} fired {event_type:?} for the {set}, where the node {node} and setWatches \
         reports {}",
        expected.map_or("nothing".to_string(), |event| format!("{event:?}"))
    );
    violation(session, Check::WatchMatchesChange, index, message)
}

#[cfg(test)]
#[path = "session_order_tests.rs"]
mod tests;
