//! A shard: one core's client connections, their sessions' auth, a DataTree
//! replica and the WatchManager. It answers reads from its replica (ZooKeeper's
//! FinalRequestProcessor for reads), applies the committed stream in zxid
//! order, and turns results into frames: watch events first, then the reply
//! that reveals the change, so a client always sees the event before the data.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;

use super::auth::{check_acl, world_anyone};
use super::{Committed, ConnectionId, Origin};
use crate::proto::codes::{event, op, perms, state, xid};
use crate::proto::{
    Acl, ClientInfo, ConnectResponse, Create2Response, ErrorCode, GetAclResponse, GetChildren2Response,
    GetChildrenResponse, GetDataResponse, Id, IntResponse, Jute, MultiOp, MultiResponse, MultiResult, PathResponse,
    ReplyHeader, Request, Response, SetWatches2, StatResponse, StringsResponse, WatcherEvent, WhoAmIResponse, Writer,
};
use crate::session::session_password;
use crate::tree::{ApplyResult, DataTree, Trigger};
use crate::txn::TxnBody;
use crate::watch::{Notification, WatchManager};

#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub password_secret: u64,
}

/// What the runtime must do for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardOutput {
    /// Write this length-prefixed frame.
    Frame { connection: ConnectionId, frame: Bytes },
    /// A write this connection sent has been answered.
    WriteDone { connection: ConnectionId },
    /// The handshake finished: the connection now belongs to this session.
    Established { connection: ConnectionId, session_id: i64, timeout_ms: i32 },
    /// Close the connection once its queued frames are written.
    Close { connection: ConnectionId },
}

/// A connection as the shard knows it.
pub struct ConnectionInfo {
    pub session_id: i64,
    /// Shared with every write request the connection sends.
    pub auth: Arc<[Id]>,
    /// Whether the handshake carried the trailing readOnly byte; the connect
    /// response mirrors it.
    pub read_only_byte: bool,
    pub timeout_ms: i32,
}

pub struct Shard {
    tree: DataTree,
    watches: WatchManager,
    connections: HashMap<ConnectionId, ConnectionInfo>,
    config: ShardConfig,
    triggers: Vec<Trigger>,
    notifications: Vec<Notification>,
}

/// Encodes a reply frame: length, ReplyHeader, optional body.
pub fn reply_frame(xid: i32, zxid: i64, err: ErrorCode, body: Option<&Response>) -> Bytes {
    let mut writer = Writer::with_buffer(BytesMut::with_capacity(64));
    writer.write_i32(0);
    ReplyHeader { xid, zxid, err: err.code() }.encode(&mut writer);
    if let (ErrorCode::Ok, Some(body)) = (err, body) {
        body.encode(&mut writer);
    }
    finish_frame(writer)
}

fn finish_frame(writer: Writer) -> Bytes {
    let mut buffer = writer.buffer;
    let length = (buffer.len() - 4) as i32;
    buffer[..4].copy_from_slice(&length.to_be_bytes());
    buffer.freeze()
}

/// A watch notification frame: xid -1, zxid -1, as ZooKeeper sends them.
pub fn event_frame(event_type: i32, path: &str) -> Bytes {
    let mut writer = Writer::with_buffer(BytesMut::with_capacity(32 + path.len()));
    writer.write_i32(0);
    ReplyHeader { xid: xid::WATCH_EVENT, zxid: -1, err: 0 }.encode(&mut writer);
    WatcherEvent { event_type, state: state::SYNC_CONNECTED, path: path.to_owned() }.encode(&mut writer);
    finish_frame(writer)
}

pub fn connect_response_frame(response: &ConnectResponse) -> Bytes {
    let mut writer = Writer::new();
    writer.write_i32(0);
    response.encode(&mut writer);
    finish_frame(writer)
}

/// The answer ZooKeeper gives a client whose session is gone: timeout 0,
/// session 0, a zeroed password.
pub fn expired_connect_response(read_only_byte: bool) -> Bytes {
    connect_response_frame(&ConnectResponse {
        protocol_version: 0,
        timeout_ms: 0,
        session_id: 0,
        password: Bytes::from_static(&[0; 16]),
        read_only: read_only_byte.then_some(false),
    })
}

impl Shard {
    pub fn new(tree: DataTree, config: ShardConfig) -> Shard {
        Shard {
            tree,
            watches: WatchManager::new(),
            connections: HashMap::new(),
            config,
            triggers: Vec::new(),
            notifications: Vec::new(),
        }
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    pub fn watches(&self) -> &WatchManager {
        &self.watches
    }

    pub fn connection(&self, connection: ConnectionId) -> Option<&ConnectionInfo> {
        self.connections.get(&connection)
    }

    pub fn connections(&self) -> impl Iterator<Item = (&ConnectionId, &ConnectionInfo)> {
        self.connections.iter()
    }

    /// A new TCP connection; `remote_ip` becomes its `ip` auth id.
    pub fn open(&mut self, connection: ConnectionId, remote_ip: String, read_only_byte: bool) {
        let auth = Arc::from([Id { scheme: "ip".into(), id: remote_ip }]);
        self.connections.insert(connection, ConnectionInfo { session_id: 0, auth, read_only_byte, timeout_ms: 0 });
    }

    pub fn close(&mut self, connection: ConnectionId) {
        self.connections.remove(&connection);
        self.watches.remove_watcher(connection);
    }

    pub fn add_auth(&mut self, connection: ConnectionId, ids: Vec<Id>) {
        if let Some(info) = self.connections.get_mut(&connection) {
            let mut auth = info.auth.to_vec();
            for id in ids {
                if !auth.contains(&id) {
                    auth.push(id);
                }
            }
            info.auth = auth.into();
        }
    }

    pub fn check_password(&self, session_id: i64, password: &[u8]) -> bool {
        password == session_password(session_id, self.config.password_secret)
    }

    fn auth_of(&self, connection: ConnectionId) -> &[Id] {
        self.connections.get(&connection).map_or(&[], |info| &info.auth)
    }

    /// Answers a read (or a local request such as ping, setWatches or
    /// checkWatches) from this shard's replica. Frames go to `out` in order.
    pub fn read(&mut self, connection: ConnectionId, request_xid: i32, request: &Request, out: &mut Vec<ShardOutput>) {
        let zxid = self.tree.last_processed_zxid();
        let result = self.read_inner(connection, request, out);
        let frame = match result {
            Ok(body) => reply_frame(request_xid, zxid, ErrorCode::Ok, body.as_ref()),
            Err(err) => reply_frame(request_xid, zxid, err, None),
        };
        out.push(ShardOutput::Frame { connection, frame });
    }

    fn read_inner(&mut self, connection: ConnectionId, request: &Request, out: &mut Vec<ShardOutput>) -> Result<Option<Response>, ErrorCode> {
        match request {
            Request::Ping => Ok(None),
            Request::Exists(request) => {
                if request.path.contains('\0') {
                    return Err(ErrorCode::BadArguments);
                }
                // ZooKeeper registers an exists watch whether or not the node exists.
                if request.watch {
                    self.watches.add_data_watch(&request.path, connection);
                }
                let node = self.tree.get(&request.path).ok_or(ErrorCode::NoNode)?;
                Ok(Some(Response::Stat(StatResponse { stat: node.full_stat() })))
            }
            Request::GetData(request) => {
                let (data, stat) = self.get_data(connection, &request.path, request.watch)?;
                Ok(Some(Response::GetData(GetDataResponse { data, stat })))
            }
            Request::GetChildren(request) => {
                let (children, _) = self.get_children(connection, &request.path, request.watch)?;
                Ok(Some(Response::GetChildren(GetChildrenResponse { children })))
            }
            Request::GetChildren2(request) => {
                let (children, stat) = self.get_children(connection, &request.path, request.watch)?;
                Ok(Some(Response::GetChildren2(GetChildren2Response { children, stat })))
            }
            Request::GetAcl(request) => {
                let auth = self.auth_of(connection);
                let node = self.tree.get(&request.path).ok_or(ErrorCode::NoNode)?;
                check_acl(&node.acl, perms::READ | perms::ADMIN, auth)?;
                let mut acl: Vec<Acl> = node.acl.to_vec();
                // Without ADMIN, digest hashes are masked (ZOOKEEPER-1392).
                if check_acl(&node.acl, perms::ADMIN, auth).is_err() {
                    for entry in acl.iter_mut().filter(|entry| entry.id.scheme == "digest") {
                        let user = entry.id.id.split(':').next().unwrap_or("").to_owned();
                        entry.id.id = format!("{user}:x");
                    }
                }
                Ok(Some(Response::GetAcl(GetAclResponse { acl, stat: node.full_stat() })))
            }
            Request::GetAllChildrenNumber(request) => {
                let node = self.tree.get(&request.path).ok_or(ErrorCode::NoNode)?;
                check_acl(&node.acl, perms::READ, self.auth_of(connection))?;
                let count = self.tree.all_children_number(&request.path) as i32;
                Ok(Some(Response::Int(IntResponse { value: count })))
            }
            Request::GetEphemerals(request) => {
                let session_id = self.connections.get(&connection).map_or(0, |info| info.session_id);
                let prefix = request.path.trim();
                let mut paths: Vec<String> = self
                    .tree
                    .ephemerals(session_id)
                    .filter(|path| prefix.is_empty() || prefix == "/" || path.starts_with(prefix))
                    .map(str::to_owned)
                    .collect();
                paths.sort();
                Ok(Some(Response::Strings(StringsResponse { values: paths })))
            }
            Request::MultiRead(multi) => {
                let mut results = Vec::with_capacity(multi.ops.len());
                for operation in &multi.ops {
                    let result = match operation {
                        MultiOp::GetData(request) => self
                            .get_data(connection, &request.path, request.watch)
                            .map(|(data, stat)| MultiResult::GetData { data, stat }),
                        MultiOp::GetChildren(request) => self
                            .get_children(connection, &request.path, request.watch)
                            .map(|(children, _)| MultiResult::GetChildren { children }),
                        _ => return Err(ErrorCode::MarshallingError),
                    };
                    results.push(result.unwrap_or_else(|err| MultiResult::Error { err }));
                }
                Ok(Some(Response::Multi(MultiResponse { results })))
            }
            Request::SetWatches(request) => {
                let request = SetWatches2 {
                    relative_zxid: request.relative_zxid,
                    data_watches: request.data_watches.clone(),
                    exist_watches: request.exist_watches.clone(),
                    child_watches: request.child_watches.clone(),
                    ..SetWatches2::default()
                };
                self.set_watches(connection, &request, out);
                Ok(None)
            }
            Request::SetWatches2(request) => {
                self.set_watches(connection, request, out);
                Ok(None)
            }
            Request::AddWatch(request) => {
                let recursive = match request.mode {
                    crate::proto::codes::add_watch_mode::PERSISTENT => false,
                    crate::proto::codes::add_watch_mode::PERSISTENT_RECURSIVE => true,
                    _ => return Err(ErrorCode::BadArguments),
                };
                self.watches.add_persistent_watch(&request.path, connection, recursive);
                Ok(Some(Response::Int(IntResponse { value: 0 })))
            }
            Request::CheckWatches(request) => {
                if self.watches.contains(&request.path, connection, request.watcher_type) {
                    Ok(None)
                } else {
                    Err(ErrorCode::NoWatcher)
                }
            }
            Request::RemoveWatches(request) => {
                if self.watches.remove(&request.path, connection, request.watcher_type) {
                    Ok(None)
                } else {
                    Err(ErrorCode::NoWatcher)
                }
            }
            Request::WhoAmI => {
                let client_info = self
                    .auth_of(connection)
                    .iter()
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.clone(),
                        // The digest provider reports the user name, not the hash.
                        user: if id.scheme == "digest" {
                            id.id.split(':').next().unwrap_or("").to_owned()
                        } else {
                            id.id.clone()
                        },
                    })
                    .collect();
                Ok(Some(Response::WhoAmI(WhoAmIResponse { client_info })))
            }
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    fn get_data(&mut self, connection: ConnectionId, path: &str, watch: bool) -> Result<(Option<Bytes>, crate::proto::Stat), ErrorCode> {
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        check_acl(&node.acl, perms::READ, self.connections.get(&connection).map_or(&[], |info| &info.auth))?;
        let result = (node.data.clone(), node.full_stat());
        if watch {
            self.watches.add_data_watch(path, connection);
        }
        Ok(result)
    }

    fn get_children(&mut self, connection: ConnectionId, path: &str, watch: bool) -> Result<(Vec<String>, crate::proto::Stat), ErrorCode> {
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        check_acl(&node.acl, perms::READ, self.connections.get(&connection).map_or(&[], |info| &info.auth))?;
        let mut children: Vec<String> = node.children.iter().map(|child| child.to_string()).collect();
        children.sort_unstable();
        let stat = node.full_stat();
        if watch {
            self.watches.add_child_watch(path, connection);
        }
        Ok((children, stat))
    }

    /// ZooKeeper's DataTree.setWatches: fire at once for what changed after
    /// `relative_zxid`, register the rest.
    fn set_watches(&mut self, connection: ConnectionId, request: &SetWatches2, out: &mut Vec<ShardOutput>) {
        let relative = request.relative_zxid;
        let fire = |event_type: i32, path: &str, out: &mut Vec<ShardOutput>| {
            out.push(ShardOutput::Frame { connection, frame: event_frame(event_type, path) });
        };
        for path in &request.data_watches {
            match self.tree.get(path) {
                None => fire(event::NODE_DELETED, path, out),
                Some(node) if node.stat.mzxid > relative => fire(event::NODE_DATA_CHANGED, path, out),
                Some(_) => self.watches.add_data_watch(path, connection),
            }
        }
        for path in &request.exist_watches {
            match self.tree.get(path) {
                Some(_) => fire(event::NODE_CREATED, path, out),
                None => self.watches.add_data_watch(path, connection),
            }
        }
        for path in &request.child_watches {
            match self.tree.get(path) {
                None => fire(event::NODE_DELETED, path, out),
                Some(node) if node.stat.pzxid > relative => fire(event::NODE_CHILDREN_CHANGED, path, out),
                Some(_) => self.watches.add_child_watch(path, connection),
            }
        }
        for path in &request.persistent_watches {
            self.watches.add_persistent_watch(path, connection, false);
        }
        for path in &request.persistent_recursive_watches {
            self.watches.add_persistent_watch(path, connection, true);
        }
    }

    /// Applies one item of the committed stream.
    pub fn apply(&mut self, committed: &Committed, out: &mut Vec<ShardOutput>) {
        match committed {
            Committed::Reset { tree } => {
                for connection in self.connections.keys() {
                    out.push(ShardOutput::Close { connection: *connection });
                }
                self.connections.clear();
                self.watches = WatchManager::new();
                self.tree = DataTree::clone(tree);
            }
            Committed::Secret(secret) => self.config.password_secret = *secret,
            Committed::Txn { txn, origin } => {
                self.triggers.clear();
                let result = self.tree.apply(txn, &mut self.triggers);
                self.notifications.clear();
                self.watches.trigger(&self.triggers, &mut self.notifications);
                for notification in self.notifications.drain(..) {
                    if self.connections.contains_key(&notification.watcher) {
                        out.push(ShardOutput::Frame {
                            connection: notification.watcher,
                            frame: event_frame(notification.event_type, &notification.path),
                        });
                    }
                }
                let origin = origin.filter(|origin| self.connections.contains_key(&origin.connection));
                match &txn.body {
                    TxnBody::CreateSession { timeout_ms } => {
                        if let Some(origin) = origin {
                            self.session_established(origin.connection, txn.session_id, *timeout_ms, out);
                        }
                    }
                    TxnBody::CloseSession => {
                        if let Some(origin) = origin {
                            let frame = reply_frame(origin.xid, txn.zxid, ErrorCode::Ok, None);
                            out.push(ShardOutput::Frame { connection: origin.connection, frame });
                            out.push(ShardOutput::WriteDone { connection: origin.connection });
                        }
                        // Every connection of the closed or expired session
                        // goes, in id order (not hash order: reproducible).
                        let mut closing: Vec<ConnectionId> = self
                            .connections
                            .iter()
                            .filter(|(_, info)| info.session_id == txn.session_id)
                            .map(|(connection, _)| *connection)
                            .collect();
                        closing.sort_unstable();
                        for connection in closing {
                            out.push(ShardOutput::Close { connection });
                        }
                    }
                    _ => {
                        if let Some(origin) = origin {
                            let frame = write_reply(origin, txn.zxid, &result);
                            out.push(ShardOutput::Frame { connection: origin.connection, frame });
                            out.push(ShardOutput::WriteDone { connection: origin.connection });
                        }
                    }
                }
            }
            Committed::SyncDone { origin, path } => {
                if self.connections.contains_key(&origin.connection) {
                    let zxid = self.tree.last_processed_zxid();
                    let body = Response::Sync(PathResponse { path: path.clone() });
                    let frame = reply_frame(origin.xid, zxid, ErrorCode::Ok, Some(&body));
                    out.push(ShardOutput::Frame { connection: origin.connection, frame });
                    out.push(ShardOutput::WriteDone { connection: origin.connection });
                }
            }
            Committed::Failed { origin, err } => {
                if !self.connections.contains_key(&origin.connection) {
                    return;
                }
                if origin.opcode == op::CREATE_SESSION {
                    // No session could be created: close, as for an expired one.
                    out.push(ShardOutput::Close { connection: origin.connection });
                    return;
                }
                let frame = reply_frame(origin.xid, self.tree.last_processed_zxid(), *err, None);
                out.push(ShardOutput::Frame { connection: origin.connection, frame });
                out.push(ShardOutput::WriteDone { connection: origin.connection });
            }
            Committed::Revalidated { origin, session_id, timeout_ms, valid } => {
                if *valid {
                    // The session moved here: ZooKeeper closes its older connection.
                    let stale: Vec<ConnectionId> = self
                        .connections
                        .iter()
                        .filter(|(connection, info)| info.session_id == *session_id && **connection != origin.connection)
                        .map(|(connection, _)| *connection)
                        .collect();
                    for connection in stale {
                        out.push(ShardOutput::Close { connection });
                    }
                }
                if let Some(info) = self.connections.get(&origin.connection) {
                    if *valid {
                        self.session_established(origin.connection, *session_id, *timeout_ms, out);
                    } else {
                        let frame = expired_connect_response(info.read_only_byte);
                        out.push(ShardOutput::Frame { connection: origin.connection, frame });
                        out.push(ShardOutput::Close { connection: origin.connection });
                    }
                }
            }
        }
    }

    fn session_established(&mut self, connection: ConnectionId, session_id: i64, timeout_ms: i32, out: &mut Vec<ShardOutput>) {
        let Some(info) = self.connections.get_mut(&connection) else { return };
        info.session_id = session_id;
        info.timeout_ms = timeout_ms;
        let response = ConnectResponse {
            protocol_version: 0,
            timeout_ms,
            session_id,
            password: Bytes::copy_from_slice(&session_password(session_id, self.config.password_secret)),
            read_only: info.read_only_byte.then_some(false),
        };
        out.push(ShardOutput::Frame { connection, frame: connect_response_frame(&response) });
        out.push(ShardOutput::Established { connection, session_id, timeout_ms });
    }
}

/// The reply to a committed write, shaped by the request's opcode.
fn write_reply(origin: Origin, zxid: i64, result: &ApplyResult) -> Bytes {
    if result.err != ErrorCode::Ok {
        return reply_frame(origin.xid, zxid, result.err, None);
    }
    let stat = result.stat.unwrap_or_default();
    let body = match origin.opcode {
        op::CREATE => Some(Response::Create(PathResponse { path: result.path.clone() })),
        op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
            Some(Response::Create2(Create2Response { path: result.path.clone(), stat }))
        }
        op::SET_DATA | op::SET_ACL | op::CHECK => Some(Response::Stat(StatResponse { stat })),
        op::MULTI => Some(Response::Multi(MultiResponse { results: result.multi.iter().map(multi_result).collect() })),
        _ => None,
    };
    reply_frame(origin.xid, zxid, ErrorCode::Ok, body.as_ref())
}

fn multi_result(result: &ApplyResult) -> MultiResult {
    if result.opcode == op::ERROR {
        return MultiResult::Error { err: result.err };
    }
    let stat = result.stat.unwrap_or_default();
    match result.opcode {
        op::CREATE => MultiResult::Create { path: result.path.clone() },
        op::CREATE2 => MultiResult::Create2 { path: result.path.clone(), stat },
        op::DELETE => MultiResult::Delete,
        op::SET_DATA => MultiResult::SetData { stat },
        _ => MultiResult::Check,
    }
}

#[allow(dead_code)]
fn world_acl() -> Vec<Acl> {
    vec![Acl { perms: perms::ALL, id: world_anyone() }]
}
