//! Simulated ZooKeeper clients and the histories they record.
//!
//! A client holds one session at a time and one connection at a time, to a
//! server it picks at random; it pipelines a few operations of every kind on
//! a small set of znodes (so operations on one path contend): creates
//! (persistent, ephemeral, sequential), deletes, setData, multis over
//! several keys, setACL and getACL, reads, sync; it sets data, exists and
//! child watches, and on connection loss reconnects elsewhere with its
//! session id and last seen zxid, re-sending its watches with setWatches
//! first, as the real clients do. Now and then it closes its session, or
//! abandons it (goes silent, so the servers expire it) and starts a new
//! one. Every operation is recorded: when it was issued, and — if a
//! definite reply came — when, at which zxid, with what outcome. Operations whose connection was lost stay open: they may or may
//! not have taken effect. Each session's requests, replies, watch events and
//! reconnects are recorded as well, in the order the client saw them, for
//! `session_order`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::invariants::{Invariants, LoggedClose};
use super::linearizable;
use super::server::ClientMsg;
use super::session_order::{self, EventType, SessionEvent, SessionHistory, WatchRequest};
use super::linearizable::Access;
use crate::proto::codes::{event, perms, xid};
use crate::proto::{
    op, Acl, CheckVersionRequest, ConnectRequest, ConnectResponse, CreateRequest, DeleteRequest, ErrorCode, GetAclResponse,
    GetChildrenResponse, GetDataResponse, Id, Jute, MultiOp, MultiRequest, MultiResponse, MultiResult, PathRequest, PathResponse,
    PathWatchRequest, Reader, ReplyHeader, Request, SetAclRequest, SetDataRequest, SetWatches, StatResponse, WatcherEvent,
};
use crate::rng::Rng;
use crate::txn::TxnBody;
use crate::zab::ServerId;

/// Leaf znodes the clients contend on.
pub const KEYS: u32 = 3;
/// Sequential creates name their nodes this prefix and the parent's ("/")
/// next sequence number.
pub const SEQUENTIAL_PREFIX: &str = "/s-";
/// Sequential nodes a client remembers (its own, acknowledged) to delete.
const SEQUENTIAL_OWN_MAX: usize = 8;
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
    /// `ephemeral`: owned by the session, deleted when it ends.
    Create { data: Bytes, ephemeral: bool },
    /// Of `SEQUENTIAL_PREFIX`: the server appends the sequence number.
    CreateSequential { data: Bytes, ephemeral: bool },
    Delete { version: i32 },
    SetData { data: Bytes, version: i32 },
    GetData { watch: bool },
    Exists { watch: bool },
    /// Of a key (no children: only its delete fires a child watch) or of
    /// "/", the keys' parent.
    GetChildren { watch: bool },
    SetAcl { access: Access, version: i32 },
    GetAcl,
    Sync,
    /// One op on each of several distinct keys, all or none.
    Multi { parts: Vec<(String, MultiPart)> },
    CloseSession,
}

/// One op of a multi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiPart {
    Create { data: Bytes },
    Delete { version: i32 },
    SetData { data: Bytes, version: i32 },
    Check { version: i32 },
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            OpKind::Create { .. }
                | OpKind::CreateSequential { .. }
                | OpKind::Delete { .. }
                | OpKind::SetData { .. }
                | OpKind::SetAcl { .. }
                | OpKind::Multi { .. }
                | OpKind::CloseSession
        )
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
    /// A sequential create, and the name it got.
    CreatedAt { path: String },
    Deleted,
    Set { version: i32 },
    Data { data: Bytes, version: i32 },
    Exists { version: i32 },
    Children { count: usize },
    AclSet { aversion: i32 },
    Acl { access: Access, aversion: i32 },
    Checked,
    Synced,
    Closed,
    /// Every part succeeded, each with its own outcome.
    MultiDone { parts: Vec<Outcome> },
    /// Part `index` failed with `err` (NoNode, NodeExists, BadVersion or
    /// NoAuth); nothing changed.
    MultiFailed { index: usize, err: Box<Outcome> },
    NoNode,
    NodeExists,
    BadVersion,
    NoAuth,
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
    outstanding: VecDeque<usize>,
    counter: u64,
    probe: Probe,
    /// When the probe began: a write issued since then must be answered.
    probe_started: u64,
    /// Sequential nodes this client created, newest last.
    own_sequential: VecDeque<String>,
    /// A closeSession is on its way: send nothing more on this session.
    closing: bool,
    /// Whether it closes and abandons sessions (`SimConfig::session_churn`).
    session_churn: bool,
    /// The session's standard watches not yet fired, by the list ZooKeeper's
    /// client keeps them in (ZKWatchManager): getData and exists that found
    /// the node, exists that did not, getChildren. setWatches re-sends them.
    data_watches: BTreeSet<String>,
    exist_watches: BTreeSet<String>,
    child_watches: BTreeSet<String>,
    history: History,
}

impl Client {
    pub fn new(id: u32, servers: Vec<ServerId>, seed: u64, session_churn: bool) -> Client {
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
            own_sequential: VecDeque::new(),
            closing: false,
            session_churn,
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
                    if self.closing {
                        // The closeSession's reply ends the session.
                    } else if self.probe == Probe::Wanted {
                        if !self.outstanding.iter().any(|&i| self.history.ops[i].kind.is_write() && self.history.ops[i].invoke >= self.probe_started) {
                            let data = self.unique_data();
                            self.issue(now, conn, format!("/k{}", self.id % KEYS), OpKind::SetData { data, version: -1 }, &mut out);
                        }
                    } else if busy && !self.closing {
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
        let path = self.random_key();
        let roll = self.rng.below(1000);
        let (path, kind) = if roll < 200 {
            (path, OpKind::Create { data: self.unique_data(), ephemeral: self.rng.chance(300) })
        } else if roll < 400 {
            (path, OpKind::SetData { data: self.unique_data(), version: self.random_version(500) })
        } else if roll < 490 {
            (path, OpKind::Delete { version: self.random_version(600) })
        } else if roll < 690 {
            (path, OpKind::GetData { watch: self.rng.chance(400) })
        } else if roll < 770 {
            (path, OpKind::Exists { watch: self.rng.chance(500) })
        } else if roll < 820 {
            let path = if self.rng.chance(500) { "/".to_string() } else { path };
            (path, OpKind::GetChildren { watch: self.rng.chance(600) })
        } else if roll < 850 {
            let kind = OpKind::CreateSequential { data: self.unique_data(), ephemeral: self.rng.chance(500) };
            (SEQUENTIAL_PREFIX.to_string(), kind)
        } else if roll < 870 {
            // One of its own sequential nodes, if it has one.
            let Some(own) = self.rng.choose(self.own_sequential.make_contiguous()).cloned() else { return };
            (own, OpKind::Delete { version: self.random_version(800) })
        } else if roll < 910 {
            self.random_multi()
        } else if roll < 935 {
            let access = if self.rng.chance(700) { Access::Open } else { Access::NoWrite };
            (path, OpKind::SetAcl { access, version: self.random_version(600) })
        } else if roll < 955 {
            (path, OpKind::GetAcl)
        } else if roll < 985 {
            (path, OpKind::Sync)
        } else if !self.session_churn {
            (path, OpKind::Sync)
        } else if roll < 992 {
            self.closing = true;
            (path, OpKind::CloseSession)
        } else {
            self.abandon(conn, out);
            return;
        };
        self.issue(now, conn, path, kind, out);
    }

    fn random_key(&mut self) -> String {
        format!("/k{}", self.rng.below(KEYS as u64))
    }

    /// -1 with probability `any_per_mille`, else a small version.
    fn random_version(&mut self, any_per_mille: u64) -> i32 {
        if self.rng.chance(any_per_mille) {
            -1
        } else {
            self.rng.below(4) as i32
        }
    }

    /// One op on each of two or three distinct keys, named by its first key
    /// (`SessionEvent::Sent` takes any one of its paths).
    fn random_multi(&mut self) -> (String, OpKind) {
        let mut keys: Vec<u64> = (0..u64::from(KEYS)).collect();
        let count = 2 + self.rng.below(u64::from(KEYS) - 1) as usize;
        for i in 0..count {
            let j = i + self.rng.below((keys.len() - i) as u64) as usize;
            keys.swap(i, j);
        }
        keys.truncate(count);
        let parts = keys
            .into_iter()
            .map(|key| {
                let part = match self.rng.below(4) {
                    0 => MultiPart::Create { data: self.unique_data() },
                    1 => MultiPart::Delete { version: self.random_version(500) },
                    2 => MultiPart::SetData { data: self.unique_data(), version: self.random_version(500) },
                    _ => MultiPart::Check { version: self.random_version(300) },
                };
                (format!("/k{key}"), part)
            })
            .collect::<Vec<_>>();
        (parts[0].0.clone(), OpKind::Multi { parts })
    }

    /// Goes silent: drops the connection and forgets the session, which the
    /// servers then expire; the next connection starts a new one.
    fn abandon(&mut self, conn: u64, out: &mut Vec<ClientOut>) {
        out.push(ClientOut::Close { conn });
        self.end_session();
        self.lost();
    }

    /// The session is over (closed, expired or abandoned): its watches and
    /// sequential nodes go with it.
    fn end_session(&mut self) {
        self.session = None;
        self.data_watches.clear();
        self.exist_watches.clear();
        self.child_watches.clear();
        self.own_sequential.clear();
    }

    fn issue(&mut self, now: u64, conn: u64, path: String, kind: OpKind, out: &mut Vec<ClientOut>) {
        let xid = self.next_xid;
        self.next_xid += 1;
        // CreateMode flags: 1 ephemeral, 2 sequential.
        let create = |path: &str, data: &Bytes, flags: i32| CreateRequest {
            path: path.to_string(),
            data: Some(data.clone()),
            acl: acl_of(Access::Open),
            flags,
        };
        let request = match &kind {
            OpKind::Create { data, ephemeral } => {
                Request::Create { opcode: op::CREATE, request: create(&path, data, i32::from(*ephemeral)) }
            }
            OpKind::CreateSequential { data, ephemeral } => {
                Request::Create { opcode: op::CREATE, request: create(&path, data, 2 | i32::from(*ephemeral)) }
            }
            OpKind::Delete { version } => Request::Delete(DeleteRequest { path: path.clone(), version: *version }),
            OpKind::SetData { data, version } => {
                Request::SetData(SetDataRequest { path: path.clone(), data: Some(data.clone()), version: *version })
            }
            OpKind::GetData { watch } => Request::GetData(PathWatchRequest { path: path.clone(), watch: *watch }),
            OpKind::Exists { watch } => Request::Exists(PathWatchRequest { path: path.clone(), watch: *watch }),
            OpKind::GetChildren { watch } => Request::GetChildren(PathWatchRequest { path: path.clone(), watch: *watch }),
            OpKind::SetAcl { access, version } => {
                Request::SetAcl(SetAclRequest { path: path.clone(), acl: acl_of(*access), version: *version })
            }
            OpKind::GetAcl => Request::GetAcl(PathRequest { path: path.clone() }),
            OpKind::Sync => Request::Sync(PathRequest { path: path.clone() }),
            OpKind::Multi { parts } => Request::Multi(MultiRequest {
                ops: parts
                    .iter()
                    .map(|(path, part)| match part {
                        MultiPart::Create { data } => MultiOp::Create { opcode: op::CREATE, request: create(path, data, 0) },
                        MultiPart::Delete { version } => {
                            MultiOp::Delete { opcode: op::DELETE, request: DeleteRequest { path: path.clone(), version: *version } }
                        }
                        MultiPart::SetData { data, version } => MultiOp::SetData(SetDataRequest {
                            path: path.clone(),
                            data: Some(data.clone()),
                            version: *version,
                        }),
                        MultiPart::Check { version } => MultiOp::Check(CheckVersionRequest { path: path.clone(), version: *version }),
                    })
                    .collect(),
            }),
            OpKind::CloseSession => Request::CloseSession,
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
        self.closing = false;
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
                    self.end_session();
                    self.lost();
                    return vec![ClientOut::Close { conn }];
                }
                if let Some((old, _)) = &self.session {
                    if *old != response.session_id {
                        self.history.violations.push(format!("client {}: resumed session {old:#x} but got {:#x}", self.id, response.session_id));
                    }
                }
                let resumed = self.session.as_ref().is_some_and(|(old, _)| *old == response.session_id);
                if !resumed {
                    self.end_session();
                }
                self.session = Some((response.session_id, response.password));
                self.state = State::Connected { conn };
                if !resumed {
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
                "FIFO: client {} session {session:#x} expected the reply to xid {} ({:?}) but got xid {}",
                self.id, op.xid, op.kind, header.xid
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
        let outcome = match (&op.kind, err) {
            (OpKind::Multi { .. }, ErrorCode::Ok) => multi_outcome(&mut reader),
            (OpKind::Multi { .. }, _) => None,
            (_, ErrorCode::Ok) => match &op.kind {
                OpKind::Create { .. } => Some(Outcome::Created),
                OpKind::CreateSequential { .. } => PathResponse::decode(&mut reader).ok().map(|r| Outcome::CreatedAt { path: r.path }),
                OpKind::Delete { .. } => Some(Outcome::Deleted),
                OpKind::SetData { .. } => StatResponse::decode(&mut reader).ok().map(|r| Outcome::Set { version: r.stat.version }),
                OpKind::GetData { .. } => GetDataResponse::decode(&mut reader)
                    .ok()
                    .map(|r| Outcome::Data { data: r.data.unwrap_or_default(), version: r.stat.version }),
                OpKind::Exists { .. } => StatResponse::decode(&mut reader).ok().map(|r| Outcome::Exists { version: r.stat.version }),
                OpKind::GetChildren { .. } => {
                    GetChildrenResponse::decode(&mut reader).ok().map(|r| Outcome::Children { count: r.children.len() })
                }
                OpKind::SetAcl { .. } => StatResponse::decode(&mut reader).ok().map(|r| Outcome::AclSet { aversion: r.stat.aversion }),
                OpKind::GetAcl => match GetAclResponse::decode(&mut reader) {
                    Ok(r) => match access_of(&r.acl) {
                        Some(access) => Some(Outcome::Acl { access, aversion: r.stat.aversion }),
                        None => {
                            self.history.violations.push(format!("client {}: getACL of {} answered {:?}, an ACL no client set", self.id, op.path, r.acl));
                            None
                        }
                    },
                    Err(_) => None,
                },
                OpKind::Sync => Some(Outcome::Synced),
                OpKind::CloseSession => Some(Outcome::Closed),
                OpKind::Multi { .. } => unreachable!("matched above"),
            },
            (_, ErrorCode::NoNode) => Some(Outcome::NoNode),
            (_, ErrorCode::NodeExists) => Some(Outcome::NodeExists),
            (_, ErrorCode::BadVersion) => Some(Outcome::BadVersion),
            (_, ErrorCode::NoAuth) => Some(Outcome::NoAuth),
            (_, ErrorCode::SessionExpired) => {
                self.end_session();
                self.lost();
                return vec![ClientOut::Close { conn }];
            }
            _ => None,
        };
        if let Some(Outcome::CreatedAt { path }) = &outcome {
            if self.own_sequential.len() >= SEQUENTIAL_OWN_MAX {
                self.own_sequential.pop_front();
            }
            self.own_sequential.push_back(path.clone());
        }
        if matches!(op.kind, OpKind::CloseSession) {
            // Answered (closed, or already gone): the session is over, and
            // the server closes the connection.
            let index_result = outcome.map(|outcome| OpResult { at: now, step: self.step, zxid: header.zxid, outcome });
            self.history.ops[index].result = index_result;
            self.end_session();
            self.lost();
            return vec![ClientOut::Close { conn }];
        }
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

/// The ACL the simulator sets for `access`.
fn acl_of(access: Access) -> Vec<Acl> {
    let perms = match access {
        Access::Open => perms::ALL,
        Access::NoWrite => perms::ALL & !perms::WRITE,
    };
    vec![Acl { perms, id: Id { scheme: "world".into(), id: "anyone".into() } }]
}

/// The `Access` an ACL the simulator set stands for.
fn access_of(acl: &[Acl]) -> Option<Access> {
    [Access::Open, Access::NoWrite].into_iter().find(|&access| acl_of(access) == acl)
}

/// A successful multi reply's outcome: every part's, or the first failure
/// (ZooKeeper answers OK for the parts before it and RUNTIMEINCONSISTENCY
/// after). Anything else is no definite outcome.
fn multi_outcome(reader: &mut Reader) -> Option<Outcome> {
    let response = MultiResponse::decode(reader).ok()?;
    let failed = response.results.iter().position(|result| matches!(result, MultiResult::Error { err } if *err != ErrorCode::Ok));
    if let Some(index) = failed {
        let MultiResult::Error { err } = response.results[index] else { return None };
        let err = match err {
            ErrorCode::NoNode => Outcome::NoNode,
            ErrorCode::NodeExists => Outcome::NodeExists,
            ErrorCode::BadVersion => Outcome::BadVersion,
            ErrorCode::NoAuth => Outcome::NoAuth,
            _ => return None,
        };
        return Some(Outcome::MultiFailed { index, err: Box::new(err) });
    }
    let parts = response
        .results
        .into_iter()
        .map(|result| match result {
            MultiResult::Create { .. } | MultiResult::Create2 { .. } => Some(Outcome::Created),
            MultiResult::Delete => Some(Outcome::Deleted),
            MultiResult::SetData { stat } => Some(Outcome::Set { version: stat.version }),
            MultiResult::Check => Some(Outcome::Checked),
            _ => None,
        })
        .collect::<Option<Vec<Outcome>>>()?;
    Some(Outcome::MultiDone { parts })
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
fn linearizability_entries(histories: &[&History], closes: &[LoggedClose]) -> Vec<linearizable::Entry> {
    use linearizable::{Completion, Entry, Op as L, Outcome as O};
    let in_model = |outcome: &Outcome| -> O {
        match outcome {
            Outcome::Created | Outcome::CreatedAt { .. } | Outcome::Deleted | Outcome::Checked | Outcome::Synced => O::Ok,
            Outcome::Set { version } | Outcome::Exists { version } => O::Stat { version: *version },
            Outcome::Data { data, version } => O::Data { data: value_of(data), version: *version },
            Outcome::AclSet { aversion } => O::AclStat { aversion: *aversion },
            Outcome::Acl { access, aversion } => O::Acl { access: *access, aversion: *aversion },
            Outcome::NoNode => O::NoNode,
            Outcome::NodeExists => O::NodeExists,
            Outcome::BadVersion => O::BadVersion,
            Outcome::NoAuth => O::NoAuth,
            Outcome::Children { .. } | Outcome::Closed | Outcome::MultiDone { .. } | Outcome::MultiFailed { .. } => {
                unreachable!("not a per-path outcome: {outcome:?}")
            }
        }
    };
    // An ephemeral of a session no server ever logged closing lives like a
    // persistent node for the whole history: entering it as one lets the
    // search treat unanswered creates of all such sessions alike.
    let closing: BTreeSet<u64> = closes.iter().map(|close| close.session_id as u64).collect();
    let mut entries = Vec::new();
    for op in histories.iter().flat_map(|history| &history.ops) {
        let client = op.session as u64;
        let completion = |outcome: &Outcome| op.result.as_ref().map(|result| Completion { time: result.step, outcome: in_model(outcome) });
        let mut push = |path: &str, kind: L, completed: Option<Completion>| {
            entries.push(Entry { client, path: path.to_string(), op: kind, invoked: op.invoke_step, completed });
        };
        let outcome = op.result.as_ref().map(|result| &result.outcome);
        let create = |data: &Bytes, ephemeral: bool| match ephemeral && closing.contains(&client) {
            true => L::CreateEphemeral { data: value_of(data), owner: client },
            false => L::Create { data: value_of(data) },
        };
        let single = match &op.kind {
            OpKind::Create { data, ephemeral } => create(data, *ephemeral),
            OpKind::Delete { version } => L::Delete { version: *version },
            OpKind::SetData { data, version } => L::SetData { data: value_of(data), version: *version },
            OpKind::GetData { .. } => L::GetData,
            OpKind::Exists { .. } => L::Exists,
            OpKind::SetAcl { access, version } => L::SetAcl { access: *access, version: *version },
            OpKind::GetAcl => L::GetAcl,
            OpKind::Sync => L::Sync,
            // A sequential create joins its node's history once its name is
            // known; one never answered names a node no one else touches.
            OpKind::CreateSequential { data, ephemeral } => {
                if let Some(Outcome::CreatedAt { path }) = outcome {
                    push(path, create(data, *ephemeral), completion(&Outcome::Created));
                }
                continue;
            }
            // Each part on its own path (distinct paths, one part each):
            // all took effect, or only the failing one's answer is known.
            OpKind::Multi { parts } => {
                let part_op = |part: &MultiPart| match part {
                    MultiPart::Create { data } => L::Create { data: value_of(data) },
                    MultiPart::Delete { version } => L::Delete { version: *version },
                    MultiPart::SetData { data, version } => L::SetData { data: value_of(data), version: *version },
                    MultiPart::Check { version } => L::Check { version: *version },
                };
                match outcome {
                    None => parts.iter().for_each(|(path, part)| push(path, part_op(part), None)),
                    Some(Outcome::MultiDone { parts: outcomes }) => {
                        for ((path, part), outcome) in parts.iter().zip(outcomes) {
                            push(path, part_op(part), completion(outcome));
                        }
                    }
                    Some(Outcome::MultiFailed { index, err }) => {
                        let (path, part) = &parts[*index];
                        push(path, part_op(part), completion(err));
                    }
                    Some(other) => unreachable!("a multi answered {other:?}"),
                }
                continue;
            }
            // getChildren is outside the per-znode model; closeSession
            // enters as the committed txn (below), whoever asked for it.
            OpKind::GetChildren { .. } | OpKind::CloseSession => continue,
        };
        // An unanswered read changes nothing: leave it out.
        match outcome {
            Some(outcome) => push(&op.path, single, completion(outcome)),
            None if op.kind.is_write() => push(&op.path, single, None),
            None => {}
        }
    }
    // A closeSession takes effect between its first log and first commit,
    // on every path its session created an ephemeral on.
    let mut ephemeral_paths: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for entry in &entries {
        if let L::CreateEphemeral { owner, .. } = entry.op {
            ephemeral_paths.entry(owner).or_default().insert(entry.path.clone());
        }
    }
    for close in closes {
        let session = close.session_id as u64;
        for path in ephemeral_paths.get(&session).into_iter().flatten() {
            entries.push(Entry {
                client: session,
                path: path.clone(),
                op: L::CloseSession { session },
                invoked: close.logged,
                completed: close.committed.map(|time| Completion { time, outcome: O::Ok }),
            });
        }
    }
    linearizable::relax_reads_for_any_server(&mut entries);
    entries
}

/// Per kind of operation (and a few outcomes worth knowing were reached):
/// (sent, answered). "session expired" counts the committed closeSessions
/// no client asked for.
pub fn op_counts(histories: &[&History], closes: &[LoggedClose]) -> BTreeMap<&'static str, (u64, u64)> {
    let mut counts: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut count = |name: &'static str, answered: bool| {
        let entry = counts.entry(name).or_default();
        entry.0 += 1;
        entry.1 += u64::from(answered);
    };
    let mut requested_closes = BTreeSet::new();
    for op in histories.iter().flat_map(|history| &history.ops) {
        let name = match &op.kind {
            OpKind::Create { ephemeral: false, .. } => "create",
            OpKind::Create { ephemeral: true, .. } => "create ephemeral",
            OpKind::CreateSequential { .. } => "create sequential",
            OpKind::Delete { .. } => "delete",
            OpKind::SetData { .. } => "setData",
            OpKind::GetData { .. } => "getData",
            OpKind::Exists { .. } => "exists",
            OpKind::GetChildren { .. } => "getChildren",
            OpKind::SetAcl { .. } => "setACL",
            OpKind::GetAcl => "getACL",
            OpKind::Sync => "sync",
            OpKind::Multi { .. } => "multi",
            OpKind::CloseSession => {
                requested_closes.insert(op.session);
                "closeSession"
            }
        };
        count(name, op.result.is_some());
        match op.result.as_ref().map(|result| &result.outcome) {
            Some(Outcome::NoAuth) => count("NOAUTH answer", true),
            Some(Outcome::MultiFailed { .. }) => count("multi failed", true),
            Some(Outcome::MultiDone { .. }) => count("multi done", true),
            _ => {}
        }
    }
    for close in closes.iter().filter(|close| close.committed.is_some()) {
        if !requested_closes.contains(&close.session_id) {
            count("session expired", true);
        }
    }
    counts
}

/// The checks on what clients saw, after a run.
pub fn check_histories(histories: &[&History], invariants: &Invariants) -> Vec<String> {
    let mut violations = Vec::new();
    match linearizable::check(&linearizability_entries(histories, &invariants.logged_closes())) {
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
                Some(txn) if txn.session_id == op.session && txn.cxid == op.xid => {
                    if let Outcome::CreatedAt { path } = &result.outcome {
                        if !matches!(&txn.body, TxnBody::Create(create) if *create.path == **path) {
                            violations.push(format!(
                                "SequentialNames: client {} was told it created {path} at {:#x}, but the txn committed there is {:?}",
                                op.client, result.zxid, txn.body
                            ));
                        }
                    }
                }
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
    violations.extend(check_sequential_names(histories));
    violations
}

/// Sequential names: every acknowledged sequential create got a distinct
/// name, with a sequence number higher than any created at a lower zxid
/// (the parent's cversion only grows).
fn check_sequential_names(histories: &[&History]) -> Option<String> {
    let mut created: Vec<(i64, &str, u32)> = Vec::new();
    for op in histories.iter().flat_map(|history| &history.ops) {
        let Some(OpResult { zxid, outcome: Outcome::CreatedAt { path }, .. }) = &op.result else { continue };
        let number = path.strip_prefix(SEQUENTIAL_PREFIX).filter(|digits| digits.len() == 10).and_then(|digits| digits.parse().ok());
        let Some(number) = number else {
            return Some(format!("SequentialNames: client {} was told it created {path}, not {SEQUENTIAL_PREFIX} and ten digits", op.client));
        };
        created.push((*zxid, path, number));
    }
    created.sort_unstable();
    created.windows(2).find(|pair| pair[1].2 <= pair[0].2).map(|pair| {
        format!(
            "SequentialNames: {} created at {:#x} after {} at {:#x}: sequence numbers must grow with the zxid",
            pair[1].1, pair[1].0, pair[0].1, pair[0].0
        )
    })
}
