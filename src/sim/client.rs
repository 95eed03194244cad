//! Simulated ZooKeeper clients and the histories they record.
//!
//! A client holds one session at a time and one connection at a time, to a
//! server it picks at random; it pipelines a few data operations on a small
//! set of leaf znodes (so operations on one path contend), sets data, exists
//! and child watches, and on connection loss reconnects elsewhere with its
//! session id and last seen zxid, re-sending its watches with setWatches
//! first, as the real clients do. Every operation is recorded: when it was
//! issued, and — if a definite reply came — when, at which zxid, with what
//! outcome. Operations whose connection was lost stay open: they may or may
//! not have taken effect. Each session's requests, replies, watch events and
//! reconnects are recorded as well, in the order the client saw them, for
//! `session_order`.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::invariants::Invariants;
use super::linearizable;
use super::server::ClientMsg;
use super::session_order::{self, EventType, SessionEvent, SessionHistory, WatchRequest};
use crate::proto::codes::{event, xid};
use crate::proto::{
    op, ConnectRequest, ConnectResponse, CreateRequest, DeleteRequest, ErrorCode, GetChildrenResponse, GetDataResponse, Jute,
    PathWatchRequest, Reader, ReplyHeader, Request, SetDataRequest, SetWatches, StatResponse, WatcherEvent,
};
use crate::rng::Rng;
use crate::zab::ServerId;

/// Leaf znodes the clients contend on.
pub const KEYS: u32 = 3;
/// Requests a client keeps outstanding.
const IN_FLIGHT_MAX: usize = 3;
/// A request unanswered this long means the connection is dead (the
/// client's read timeout).
const REQUEST_TIMEOUT_MS: u64 = 3_000;
/// A connection that has not finished its handshake by then is abandoned.
const CONNECT_TIMEOUT_MS: u64 = 1_000;
const SESSION_TIMEOUT_MS: i32 = 1_500;
/// Operations one client records at most.
const OPS_MAX: usize = 20_000;

#[derive(Debug)]
pub enum ClientOut {
    /// Open a connection to `server`; the simulator answers `on_connected`
    /// or `on_closed`.
    Open { server: ServerId },
    Send { conn: u64, msg: ClientMsg },
    Close { conn: u64 },
    WakeAt(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Create { data: Bytes },
    Delete { version: i32 },
    SetData { data: Bytes, version: i32 },
    GetData { watch: bool },
    Exists { watch: bool },
    /// Of a key (no children: only its delete fires a child watch) or of
    /// "/", the keys' parent.
    GetChildren { watch: bool },
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        matches!(self, OpKind::Create { .. } | OpKind::Delete { .. } | OpKind::SetData { .. })
    }

    /// The watch it asks for, as `session_order` names it.
    fn watch(&self) -> Option<WatchRequest> {
        match self {
            OpKind::GetData { watch: true } => Some(WatchRequest::Data),
            OpKind::Exists { watch: true } => Some(WatchRequest::Exists),
            OpKind::GetChildren { watch: true } => Some(WatchRequest::Children),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Deleted,
    Set { version: i32 },
    Data { data: Bytes, version: i32 },
    Exists { version: i32 },
    Children { count: usize },
    NoNode,
    NodeExists,
    BadVersion,
}

#[derive(Debug, Clone)]
pub struct OpResult {
    pub at: u64,
    /// The simulator's event number when the reply arrived (a total order).
    pub step: u64,
    pub zxid: i64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: u32,
    pub session: i64,
    pub xid: i32,
    pub path: String,
    pub kind: OpKind,
    pub invoke: u64,
    /// The simulator's event number when it was sent.
    pub invoke_step: u64,
    pub result: Option<OpResult>,
}

#[derive(Debug, Default, Clone)]
pub struct History {
    pub ops: Vec<Op>,
    /// What each of the client's sessions saw, oldest first.
    pub sessions: Vec<SessionHistory>,
    /// Protocol rules the client saw broken.
    pub violations: Vec<String>,
}

impl History {
    pub fn acked_writes(&self) -> u64 {
        self.ops.iter().filter(|op| op.kind.is_write() && op.result.is_some()).count() as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Opening { since: u64 },
    Handshaking { conn: u64, since: u64 },
    Connected { conn: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Off,
    Wanted,
    Done,
}

pub struct Client {
    /// The simulator's current event number (set before every call).
    pub step: u64,
    id: u32,
    servers: Vec<ServerId>,
    rng: Rng,
    state: State,
    session: Option<(i64, Bytes)>,
    last_zxid: i64,
    next_xid: i32,
    /// Indices into `history.ops`, in send order.
    outstanding: std::collections::VecDeque<usize>,
    counter: u64,
    probe: Probe,
    /// When the probe began: a write issued since then must be answered.
    probe_started: u64,
    /// The session's standard watches not yet fired, by the list ZooKeeper's
    /// client keeps them in (ZKWatchManager): getData and exists that found
    /// the node, exists that did not, getChildren. setWatches re-sends them.
    data_watches: BTreeSet<String>,
    exist_watches: BTreeSet<String>,
    child_watches: BTreeSet<String>,
    history: History,
}

impl Client {
    pub fn new(id: u32, servers: Vec<ServerId>, seed: u64) -> Client {
        Client {
            step: 0,
            id,
            servers,
            rng: Rng::new(seed),
            state: State::Idle,
            session: None,
            last_zxid: 0,
            next_xid: 1,
            outstanding: Default::default(),
            counter: 0,
            probe: Probe::Off,
            probe_started: 0,
            data_watches: BTreeSet::new(),
            exist_watches: BTreeSet::new(),
            child_watches: BTreeSet::new(),
            history: History::default(),
        }
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn start_probe(&mut self, now: u64) {
        self.probe = Probe::Wanted;
        self.probe_started = now;
    }

    pub fn probe_done(&self) -> bool {
        self.probe == Probe::Done
    }

    pub fn describe(&self) -> String {
        format!(
            "client {} {:?} session {:?} last zxid {:#x} outstanding {}",
            self.id,
            self.state,
            self.session.as_ref().map(|s| s.0),
            self.last_zxid,
            self.outstanding.len()
        )
    }

    /// The session it holds (it may have expired without its knowing).
    pub fn session(&self) -> Option<i64> {
        self.session.as_ref().map(|(id, _)| *id)
    }

    fn session_id(&self) -> i64 {
        self.session.as_ref().map_or(0, |(id, _)| *id)
    }

    /// Records what the current session saw.
    fn record(&mut self, event: SessionEvent) {
        if let Some(session) = self.history.sessions.last_mut() {
            session.events.push(event);
        }
    }

    pub fn on_wake(&mut self, now: u64, busy: bool) -> Vec<ClientOut> {
        let mut out = Vec::new();
        match self.state {
            State::Idle => {
                let server = *self.rng.pick(&self.servers);
                self.state = State::Opening { since: now };
                out.push(ClientOut::Open { server });
            }
            State::Opening { since } if now - since > CONNECT_TIMEOUT_MS => self.state = State::Idle,
            State::Opening { .. } => {}
            State::Handshaking { conn, since } if now - since > CONNECT_TIMEOUT_MS => {
                out.push(ClientOut::Close { conn });
                self.lost();
            }
            State::Handshaking { .. } => {}
            State::Connected { conn } => {
                let stuck = self.outstanding.front().is_some_and(|&i| now - self.history.ops[i].invoke > REQUEST_TIMEOUT_MS);
                if stuck {
                    out.push(ClientOut::Close { conn });
                    self.lost();
                } else if self.outstanding.len() < IN_FLIGHT_MAX && self.history.ops.len() < OPS_MAX {
                    if self.probe == Probe::Wanted {
                        if !self.outstanding.iter().any(|&i| self.history.ops[i].kind.is_write() && self.history.ops[i].invoke >= self.probe_started) {
                            let data = self.unique_data();
                            self.issue(now, conn, format!("/k{}", self.id % KEYS), OpKind::SetData { data, version: -1 }, &mut out);
                        }
                    } else if busy {
                        self.random_op(now, conn, &mut out);
                    }
                }
            }
        }
        out.push(ClientOut::WakeAt(now + self.rng.between(5, 60)));
        out
    }

    /// A value no other write uses: (client + 1) << 32 | counter, 8 bytes.
    fn unique_data(&mut self) -> Bytes {
        self.counter += 1;
        let value = (u64::from(self.id) + 1) << 32 | self.counter;
        Bytes::copy_from_slice(&value.to_be_bytes())
    }

    fn random_op(&mut self, now: u64, conn: u64, out: &mut Vec<ClientOut>) {
        let path = format!("/k{}", self.rng.below(KEYS as u64));
        let roll = self.rng.below(100);
        let kind = if roll < 25 {
            OpKind::Create { data: self.unique_data() }
        } else if roll < 50 {
            let version = if self.rng.chance(500) { -1 } else { self.rng.below(4) as i32 };
            OpKind::SetData { data: self.unique_data(), version }
        } else if roll < 62 {
            let version = if self.rng.chance(600) { -1 } else { self.rng.below(4) as i32 };
            OpKind::Delete { version }
        } else if roll < 86 {
            OpKind::GetData { watch: self.rng.chance(400) }
        } else if roll < 94 {
            OpKind::Exists { watch: self.rng.chance(500) }
        } else {
            let path = if self.rng.chance(500) { "/".to_string() } else { path };
            let kind = OpKind::GetChildren { watch: self.rng.chance(600) };
            return self.issue(now, conn, path, kind, out);
        };
        self.issue(now, conn, path, kind, out);
    }

    fn issue(&mut self, now: u64, conn: u64, path: String, kind: OpKind, out: &mut Vec<ClientOut>) {
        let xid = self.next_xid;
        self.next_xid += 1;
        let request = match &kind {
            OpKind::Create { data } => Request::Create {
                opcode: op::CREATE,
                request: CreateRequest { path: path.clone(), data: Some(data.clone()), acl: crate::tree::open_acl_unsafe(), flags: 0 },
            },
            OpKind::Delete { version } => Request::Delete(DeleteRequest { path: path.clone(), version: *version }),
            OpKind::SetData { data, version } => {
                Request::SetData(SetDataRequest { path: path.clone(), data: Some(data.clone()), version: *version })
            }
            OpKind::GetData { watch } => Request::GetData(PathWatchRequest { path: path.clone(), watch: *watch }),
            OpKind::Exists { watch } => Request::Exists(PathWatchRequest { path: path.clone(), watch: *watch }),
            OpKind::GetChildren { watch } => Request::GetChildren(PathWatchRequest { path: path.clone(), watch: *watch }),
        };
        let kind_of = if kind.is_write() { session_order::OpKind::Write } else { session_order::OpKind::Read };
        self.record(SessionEvent::Sent { xid, kind: kind_of, path: path.clone(), watch: kind.watch() });
        self.outstanding.push_back(self.history.ops.len());
        let invoke_step = self.step;
        self.history.ops.push(Op { client: self.id, session: self.session_id(), xid, path, kind, invoke: now, invoke_step, result: None });
        out.push(ClientOut::Send { conn, msg: ClientMsg::Request { xid, request } });
    }

    /// The connection is gone: outstanding operations stay open.
    fn lost(&mut self) {
        self.outstanding.clear();
        self.state = State::Idle;
    }

    pub fn on_connected(&mut self, now: u64, conn: u64) -> Vec<ClientOut> {
        if !matches!(self.state, State::Opening { .. }) {
            return vec![ClientOut::Close { conn }];
        }
        self.state = State::Handshaking { conn, since: now };
        let (session_id, password) = self.session.clone().unwrap_or((0, Bytes::from_static(&[0; 16])));
        let request = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: self.last_zxid,
            timeout_ms: SESSION_TIMEOUT_MS,
            session_id,
            password,
            read_only: None,
        };
        vec![ClientOut::Send { conn, msg: ClientMsg::Connect(request) }]
    }

    pub fn on_closed(&mut self, conn: u64) -> Vec<ClientOut> {
        match self.state {
            State::Opening { .. } => self.state = State::Idle,
            State::Handshaking { conn: current, .. } | State::Connected { conn: current } if current == conn => self.lost(),
            _ => {}
        }
        Vec::new()
    }

    pub fn on_frame(&mut self, now: u64, conn: u64, frame: Bytes) -> Vec<ClientOut> {
        let body = frame.slice(4.min(frame.len())..);
        match self.state {
            State::Handshaking { conn: current, .. } if current == conn => {
                let Ok(response) = ConnectResponse::decode(body) else {
                    self.history.violations.push(format!("client {}: undecodable connect response", self.id));
                    return vec![ClientOut::Close { conn }];
                };
                if response.timeout_ms <= 0 || response.session_id == 0 {
                    // Expired: start over with a new session.
                    self.session = None;
                    self.lost();
                    return vec![ClientOut::Close { conn }];
                }
                if let Some((old, _)) = &self.session {
                    if *old != response.session_id {
                        self.history.violations.push(format!("client {}: resumed session {old:#x} but got {:#x}", self.id, response.session_id));
                    }
                }
                let resumed = self.session.as_ref().is_some_and(|(old, _)| *old == response.session_id);
                self.session = Some((response.session_id, response.password));
                self.state = State::Connected { conn };
                if !resumed {
                    self.data_watches.clear();
                    self.exist_watches.clear();
                    self.child_watches.clear();
                    self.history.sessions.push(SessionHistory { session_id: response.session_id, events: Vec::new() });
                    return Vec::new();
                }
                self.record(SessionEvent::Reconnected { last_zxid_seen: self.last_zxid });
                if self.data_watches.is_empty() && self.exist_watches.is_empty() && self.child_watches.is_empty() {
                    return Vec::new();
                }
                // ZooKeeper's client re-sends its watches before anything
                // else on the new connection (ClientCnxn.primeConnection).
                let request = SetWatches {
                    relative_zxid: self.last_zxid,
                    data_watches: self.data_watches.iter().cloned().collect(),
                    exist_watches: self.exist_watches.iter().cloned().collect(),
                    child_watches: self.child_watches.iter().cloned().collect(),
                };
                vec![ClientOut::Send { conn, msg: ClientMsg::Request { xid: xid::SET_WATCHES, request: Request::SetWatches(request) } }]
            }
            State::Connected { conn: current } if current == conn => self.on_reply(now, conn, body),
            _ => Vec::new(),
        }
    }

    fn on_reply(&mut self, now: u64, conn: u64, body: Bytes) -> Vec<ClientOut> {
        let mut reader = Reader::new(body);
        let Ok(header) = ReplyHeader::decode(&mut reader) else {
            self.history.violations.push(format!("client {}: undecodable reply header", self.id));
            return vec![ClientOut::Close { conn }];
        };
        let session = self.session_id();
        // Watch events, pings and setWatches answer no request of this client's.
        match header.xid {
            xid::WATCH_EVENT => {
                self.on_watch_event(header.zxid, &mut reader);
                return Vec::new();
            }
            xid::PING => return Vec::new(),
            xid::SET_WATCHES => {
                self.last_zxid = self.last_zxid.max(header.zxid);
                self.record(SessionEvent::WatchesRestored { zxid: header.zxid });
                return Vec::new();
            }
            _ => {}
        }
        let err = ErrorCode::from_code(header.err).unwrap_or(ErrorCode::SystemError);
        self.record(SessionEvent::Reply { xid: header.xid, zxid: header.zxid, err });
        let Some(index) = self.outstanding.pop_front() else {
            self.history.violations.push(format!("client {}: reply xid {} with nothing outstanding", self.id, header.xid));
            return Vec::new();
        };
        let op = &self.history.ops[index];
        if op.xid != header.xid {
            self.history.violations.push(format!(
                "FIFO: client {} session {session:#x} expected the reply to xid {} but got xid {}",
                self.id, op.xid, header.xid
            ));
            return vec![ClientOut::Close { conn }];
        }
        if header.zxid > 0 {
            if header.zxid < self.last_zxid {
                self.history.violations.push(format!(
                    "MonotonicReads: client {} session {session:#x} saw zxid {:#x} after {:#x}",
                    self.id, header.zxid, self.last_zxid
                ));
            }
            self.last_zxid = self.last_zxid.max(header.zxid);
        }
        // The watch registers as ZooKeeper's client registers it (its
        // WatchRegistration): exists on NoNode too, in another list.
        let watches = match (&op.kind, err) {
            (OpKind::GetData { watch: true } | OpKind::Exists { watch: true }, ErrorCode::Ok) => Some(&mut self.data_watches),
            (OpKind::Exists { watch: true }, ErrorCode::NoNode) => Some(&mut self.exist_watches),
            (OpKind::GetChildren { watch: true }, ErrorCode::Ok) => Some(&mut self.child_watches),
            _ => None,
        };
        if let Some(watches) = watches {
            watches.insert(op.path.clone());
        }
        let outcome = match ErrorCode::from_code(header.err) {
            Some(ErrorCode::Ok) => match &op.kind {
                OpKind::Create { .. } => Some(Outcome::Created),
                OpKind::Delete { .. } => Some(Outcome::Deleted),
                OpKind::SetData { .. } => StatResponse::decode(&mut reader).ok().map(|r| Outcome::Set { version: r.stat.version }),
                OpKind::GetData { .. } => GetDataResponse::decode(&mut reader)
                    .ok()
                    .map(|r| Outcome::Data { data: r.data.unwrap_or_default(), version: r.stat.version }),
                OpKind::Exists { .. } => StatResponse::decode(&mut reader).ok().map(|r| Outcome::Exists { version: r.stat.version }),
                OpKind::GetChildren { .. } => {
                    GetChildrenResponse::decode(&mut reader).ok().map(|r| Outcome::Children { count: r.children.len() })
                }
            },
            Some(ErrorCode::NoNode) => Some(Outcome::NoNode),
            Some(ErrorCode::NodeExists) => Some(Outcome::NodeExists),
            Some(ErrorCode::BadVersion) => Some(Outcome::BadVersion),
            Some(ErrorCode::SessionExpired) => {
                self.session = None;
                self.lost();
                return vec![ClientOut::Close { conn }];
            }
            _ => None,
        };
        let is_write = op.kind.is_write();
        if let Some(outcome) = outcome {
            self.history.ops[index].result = Some(OpResult { at: now, step: self.step, zxid: header.zxid, outcome });
            if is_write && self.probe == Probe::Wanted && self.history.ops[index].invoke >= self.probe_started {
                self.probe = Probe::Done;
            }
        }
        Vec::new()
    }

    /// A watch event: the simulator wrote into its header the zxid of the
    /// change that fired it (or the server's zxid, for one setWatches fired).
    /// It disarms the watches it fires, as ZooKeeper's ZKWatchManager does.
    fn on_watch_event(&mut self, zxid: i64, reader: &mut Reader) {
        let Ok(watcher_event) = WatcherEvent::decode(reader) else {
            self.history.violations.push(format!("client {}: undecodable watch event", self.id));
            return;
        };
        let path = watcher_event.path;
        let event_type = match watcher_event.event_type {
            event::NODE_CREATED => EventType::NodeCreated,
            event::NODE_DELETED => EventType::NodeDeleted,
            event::NODE_DATA_CHANGED => EventType::NodeDataChanged,
            event::NODE_CHILDREN_CHANGED => EventType::NodeChildrenChanged,
            other => {
                self.history.violations.push(format!("client {}: watch event of type {other} for {path}", self.id));
                return;
            }
        };
        if event_type != EventType::NodeChildrenChanged {
            self.data_watches.remove(&path);
            self.exist_watches.remove(&path);
        }
        if matches!(event_type, EventType::NodeChildrenChanged | EventType::NodeDeleted) {
            self.child_watches.remove(&path);
        }
        self.record(SessionEvent::Watch { path, event: event_type, zxid });
    }
}

fn value_of(data: &Bytes) -> u64 {
    <[u8; 8]>::try_from(&data[..]).map(u64::from_be_bytes).unwrap_or(u64::MAX)
}

/// The histories as the linearizability checker takes them: per session,
/// ordered by the simulator's event numbers; reads relaxed (a follower may
/// lag, never behind its session's own writes). Unanswered reads are left
/// out; unanswered writes stay in, as may-or-may-not-have-happened (which
/// txns committed is not fully known here: a leader's history can arrive
/// through a snapshot).
fn linearizability_entries(histories: &[&History]) -> Vec<linearizable::Entry> {
    use linearizable::{Completion, Entry, Op as L, Outcome as O};
    let mut entries = Vec::new();
    for op in histories.iter().flat_map(|history| &history.ops) {
        // getChildren is outside the per-znode model.
        if (op.result.is_none() && !op.kind.is_write()) || matches!(op.kind, OpKind::GetChildren { .. }) {
            continue;
        }
        let kind = match &op.kind {
            OpKind::Create { data } => L::Create { data: value_of(data) },
            OpKind::Delete { version } => L::Delete { version: *version },
            OpKind::SetData { data, version } => L::SetData { data: value_of(data), version: *version },
            OpKind::GetData { .. } => L::GetData,
            OpKind::Exists { .. } => L::Exists,
            OpKind::GetChildren { .. } => continue,
        };
        let completed = op.result.as_ref().map(|result| Completion {
            time: result.step,
            outcome: match &result.outcome {
                Outcome::Created | Outcome::Deleted => O::Ok,
                Outcome::Set { version } | Outcome::Exists { version } => O::Stat { version: *version },
                Outcome::Data { data, version } => O::Data { data: value_of(data), version: *version },
                Outcome::Children { .. } => unreachable!("getChildren is left out above"),
                Outcome::NoNode => O::NoNode,
                Outcome::NodeExists => O::NodeExists,
                Outcome::BadVersion => O::BadVersion,
            },
        });
        entries.push(Entry { client: op.session as u64, path: op.path.clone(), op: kind, invoked: op.invoke_step, completed });
    }
    linearizable::relax_reads_for_any_server(&mut entries);
    entries
}

/// The checks on what clients saw, after a run.
pub fn check_histories(histories: &[&History], invariants: &Invariants) -> Vec<String> {
    let mut violations = Vec::new();
    match linearizable::check(&linearizability_entries(histories)) {
        linearizable::Verdict::Linearizable => {}
        linearizable::Verdict::Violation(violation) => violations.push(format!("Linearizability: {}", violation.explanation)),
        linearizable::Verdict::TooExpensive { path, ops, steps, states } => {
            violations.push(format!("Linearizability: search too expensive on {path} ({ops} ops, {steps} steps, {states} states)"))
        }
        linearizable::Verdict::Malformed { index, reason } => violations.push(format!("Linearizability: malformed history at {index}: {reason}")),
    }
    // Per session: FIFO order, monotonic zxids, read-your-writes, watches.
    match invariants.committed_changes() {
        Ok(changes) => {
            let committed = session_order::CommittedChanges::new(&changes);
            for session in histories.iter().flat_map(|history| &history.sessions) {
                if let Err(violation) = session_order::check_session(session, &committed) {
                    violations.push(format!("SessionOrder: {violation}"));
                }
            }
        }
        Err(reason) => violations.push(format!("SessionOrder: {reason}")),
    }
    for history in histories {
        violations.extend(history.violations.iter().cloned());
        // No acknowledged write lost: the reply's zxid is committed, as this
        // session's request.
        for op in &history.ops {
            let Some(result) = &op.result else { continue };
            if !op.kind.is_write() {
                continue;
            }
            match invariants.committed(result.zxid) {
                Some(txn) if txn.session_id == op.session && txn.cxid == op.xid => {}
                Some(txn) => violations.push(format!(
                    "AckedWriteLost: client {} write {:?} on {} acked at {:#x}, but {:#x} is committed as session {:#x} cxid {}",
                    op.client, op.kind, op.path, result.zxid, result.zxid, txn.session_id, txn.cxid
                )),
                None => violations.push(format!(
                    "AckedWriteLost: client {} write {:?} on {} acked at {:#x}, which no server committed",
                    op.client, op.kind, op.path, result.zxid
                )),
            }
        }
    }
    violations
}
