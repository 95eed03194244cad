//! The client protocol's records (`zookeeper.jute`), and the request and
//! response enums that map opcodes to them. Pure encode/decode.

use bytes::Bytes;

use super::codes::{op, ErrorCode};
use super::jute::{DecodeError, DecodeResult, Jute, Reader, Writer};
use crate::jute_record;

jute_record! { pub struct Id { pub scheme: String, pub id: String } }
jute_record! { pub struct Acl { pub perms: i32, pub id: Id } }

jute_record! {
    /// A znode's metadata, field for field as ZooKeeper's `Stat`.
    #[derive(Copy)]
    pub struct Stat {
        pub czxid: i64,
        pub mzxid: i64,
        pub ctime: i64,
        pub mtime: i64,
        pub version: i32,
        pub cversion: i32,
        pub aversion: i32,
        pub ephemeral_owner: i64,
        pub data_length: i32,
        pub num_children: i32,
        pub pzxid: i64,
    }
}

// `Copy` on a String-free record needs Clone derived twice; jute_record derives Clone.
jute_record! { pub struct ClientInfo { pub auth_scheme: String, pub user: String } }

jute_record! { pub struct RequestHeader { pub xid: i32, pub opcode: i32 } }
jute_record! { pub struct ReplyHeader { pub xid: i32, pub zxid: i64, pub err: i32 } }
jute_record! { pub struct MultiHeader { pub opcode: i32, pub done: bool, pub err: i32 } }
jute_record! { pub struct WatcherEvent { pub event_type: i32, pub state: i32, pub path: String } }
jute_record! { pub struct AuthPacket { pub auth_type: i32, pub scheme: String, pub auth: Bytes } }

jute_record! { pub struct CreateRequest { pub path: String, pub data: Option<Bytes>, pub acl: Vec<Acl>, pub flags: i32 } }
jute_record! { pub struct CreateTtlRequest { pub path: String, pub data: Option<Bytes>, pub acl: Vec<Acl>, pub flags: i32, pub ttl: i64 } }
jute_record! { pub struct DeleteRequest { pub path: String, pub version: i32 } }
jute_record! { pub struct PathWatchRequest { pub path: String, pub watch: bool } }
jute_record! { pub struct SetDataRequest { pub path: String, pub data: Option<Bytes>, pub version: i32 } }
jute_record! { pub struct PathRequest { pub path: String } }
jute_record! { pub struct SetAclRequest { pub path: String, pub acl: Vec<Acl>, pub version: i32 } }
jute_record! { pub struct CheckVersionRequest { pub path: String, pub version: i32 } }
jute_record! { pub struct WatchTypeRequest { pub path: String, pub watcher_type: i32 } }
jute_record! { pub struct AddWatchRequest { pub path: String, pub mode: i32 } }
jute_record! {
    pub struct SetWatches {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
    }
}
jute_record! {
    pub struct SetWatches2 {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
        pub persistent_watches: Vec<String>,
        pub persistent_recursive_watches: Vec<String>,
    }
}
jute_record! {
    pub struct ReconfigRequest {
        pub joining_servers: String,
        pub leaving_servers: String,
        pub new_members: String,
        pub cur_config_id: i64,
    }
}

jute_record! { pub struct StatResponse { pub stat: Stat } }
jute_record! { pub struct PathResponse { pub path: String } }
jute_record! { pub struct Create2Response { pub path: String, pub stat: Stat } }
jute_record! { pub struct GetDataResponse { pub data: Option<Bytes>, pub stat: Stat } }
jute_record! { pub struct GetChildrenResponse { pub children: Vec<String> } }
jute_record! { pub struct GetChildren2Response { pub children: Vec<String>, pub stat: Stat } }
jute_record! { pub struct GetAclResponse { pub acl: Vec<Acl>, pub stat: Stat } }
jute_record! { pub struct IntResponse { pub value: i32 } }
jute_record! { pub struct StringsResponse { pub values: Vec<String> } }
jute_record! { pub struct WhoAmIResponse { pub client_info: Vec<ClientInfo> } }

/// The first frame of a connection. `read_only` is absent from old clients'
/// frames, so it is optional here and its presence is remembered: ZooKeeper
/// answers such clients without the trailing byte too.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Bytes,
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    pub fn decode(frame: Bytes) -> DecodeResult<ConnectRequest> {
        let mut reader = Reader::new(frame);
        let mut request = ConnectRequest {
            protocol_version: reader.read_i32()?,
            last_zxid_seen: reader.read_i64()?,
            timeout_ms: reader.read_i32()?,
            session_id: reader.read_i64()?,
            password: reader.read_buffer()?,
            read_only: None,
        };
        if reader.remaining() >= 1 {
            request.read_only = Some(reader.read_bool()?);
        }
        Ok(request)
    }

    pub fn encode(&self, writer: &mut Writer) {
        writer.write_i32(self.protocol_version);
        writer.write_i64(self.last_zxid_seen);
        writer.write_i32(self.timeout_ms);
        writer.write_i64(self.session_id);
        writer.write_buffer(&self.password);
        if let Some(read_only) = self.read_only {
            writer.write_bool(read_only);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Bytes,
    pub read_only: Option<bool>,
}

impl ConnectResponse {
    pub fn decode(frame: Bytes) -> DecodeResult<ConnectResponse> {
        let mut reader = Reader::new(frame);
        let mut response = ConnectResponse {
            protocol_version: reader.read_i32()?,
            timeout_ms: reader.read_i32()?,
            session_id: reader.read_i64()?,
            password: reader.read_buffer()?,
            read_only: None,
        };
        if reader.remaining() >= 1 {
            response.read_only = Some(reader.read_bool()?);
        }
        Ok(response)
    }

    pub fn encode(&self, writer: &mut Writer) {
        writer.write_i32(self.protocol_version);
        writer.write_i32(self.timeout_ms);
        writer.write_i64(self.session_id);
        writer.write_buffer(&self.password);
        if let Some(read_only) = self.read_only {
            writer.write_bool(read_only);
        }
    }
}

/// One operation inside a multi or multiRead request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    Create { opcode: i32, request: CreateRequest },
    CreateTtl(CreateTtlRequest),
    Delete { opcode: i32, request: DeleteRequest },
    SetData(SetDataRequest),
    Check(CheckVersionRequest),
    GetChildren(PathWatchRequest),
    GetData(PathWatchRequest),
}

impl MultiOp {
    pub fn opcode(&self) -> i32 {
        match self {
            MultiOp::Create { opcode, .. } | MultiOp::Delete { opcode, .. } => *opcode,
            MultiOp::CreateTtl(_) => op::CREATE_TTL,
            MultiOp::SetData(_) => op::SET_DATA,
            MultiOp::Check(_) => op::CHECK,
            MultiOp::GetChildren(_) => op::GET_CHILDREN,
            MultiOp::GetData(_) => op::GET_DATA,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, MultiOp::GetChildren(_) | MultiOp::GetData(_))
    }

    pub fn path(&self) -> &str {
        match self {
            MultiOp::Create { request, .. } => &request.path,
            MultiOp::CreateTtl(request) => &request.path,
            MultiOp::Delete { request, .. } => &request.path,
            MultiOp::SetData(request) => &request.path,
            MultiOp::Check(request) => &request.path,
            MultiOp::GetChildren(request) | MultiOp::GetData(request) => &request.path,
        }
    }
}

/// `MultiOperationRecord`: ops each behind a MultiHeader, ended by a header with done set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiRequest {
    pub ops: Vec<MultiOp>,
}

impl MultiRequest {
    pub fn decode(reader: &mut Reader, ops_max: usize) -> DecodeResult<MultiRequest> {
        let mut ops = Vec::new();
        loop {
            let header = MultiHeader::decode(reader)?;
            if header.done {
                break;
            }
            if ops.len() >= ops_max {
                return Err(DecodeError::Invalid("too many ops in multi"));
            }
            let operation = match header.opcode {
                op::CREATE | op::CREATE2 | op::CREATE_CONTAINER => {
                    MultiOp::Create { opcode: header.opcode, request: CreateRequest::decode(reader)? }
                }
                op::CREATE_TTL => MultiOp::CreateTtl(CreateTtlRequest::decode(reader)?),
                op::DELETE | op::DELETE_CONTAINER => {
                    MultiOp::Delete { opcode: header.opcode, request: DeleteRequest::decode(reader)? }
                }
                op::SET_DATA => MultiOp::SetData(SetDataRequest::decode(reader)?),
                op::CHECK => MultiOp::Check(CheckVersionRequest::decode(reader)?),
                op::GET_CHILDREN => MultiOp::GetChildren(PathWatchRequest::decode(reader)?),
                op::GET_DATA => MultiOp::GetData(PathWatchRequest::decode(reader)?),
                _ => return Err(DecodeError::Invalid("unknown opcode in multi")),
            };
            ops.push(operation);
        }
        Ok(MultiRequest { ops })
    }

    pub fn encode(&self, writer: &mut Writer) {
        for operation in &self.ops {
            MultiHeader { opcode: operation.opcode(), done: false, err: -1 }.encode(writer);
            match operation {
                MultiOp::Create { request, .. } => request.encode(writer),
                MultiOp::CreateTtl(request) => request.encode(writer),
                MultiOp::Delete { request, .. } => request.encode(writer),
                MultiOp::SetData(request) => request.encode(writer),
                MultiOp::Check(request) => request.encode(writer),
                MultiOp::GetChildren(request) | MultiOp::GetData(request) => request.encode(writer),
            }
        }
        MultiHeader { opcode: -1, done: true, err: -1 }.encode(writer);
    }
}

/// One result in a MultiResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    /// A create op answered with its path only (opcode create).
    Create { path: String },
    /// create2, createTTL and createContainer answer with path and Stat.
    Create2 { path: String, stat: Stat },
    Delete,
    SetData { stat: Stat },
    Check,
    GetChildren { children: Vec<String> },
    GetData { data: Option<Bytes>, stat: Stat },
    Error { err: ErrorCode },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiResponse {
    pub results: Vec<MultiResult>,
}

impl MultiResponse {
    pub fn encode(&self, writer: &mut Writer) {
        for result in &self.results {
            let (opcode, err) = match result {
                MultiResult::Create { .. } => (op::CREATE, 0),
                MultiResult::Create2 { .. } => (op::CREATE2, 0),
                MultiResult::Delete => (op::DELETE, 0),
                MultiResult::SetData { .. } => (op::SET_DATA, 0),
                MultiResult::Check => (op::CHECK, 0),
                MultiResult::GetChildren { .. } => (op::GET_CHILDREN, 0),
                MultiResult::GetData { .. } => (op::GET_DATA, 0),
                MultiResult::Error { err } => (op::ERROR, err.code()),
            };
            MultiHeader { opcode, done: false, err }.encode(writer);
            match result {
                MultiResult::Create { path } => writer.write_string(path),
                MultiResult::Create2 { path, stat } => {
                    writer.write_string(path);
                    stat.encode(writer);
                }
                MultiResult::Delete | MultiResult::Check => {}
                MultiResult::SetData { stat } => stat.encode(writer),
                MultiResult::GetChildren { children } => children.encode(writer),
                MultiResult::GetData { data, stat } => {
                    data.encode(writer);
                    stat.encode(writer);
                }
                MultiResult::Error { err } => writer.write_i32(err.code()),
            }
        }
        MultiHeader { opcode: -1, done: true, err: -1 }.encode(writer);
    }

    pub fn decode(reader: &mut Reader) -> DecodeResult<MultiResponse> {
        let mut results = Vec::new();
        loop {
            let header = MultiHeader::decode(reader)?;
            if header.done {
                break;
            }
            let result = match header.opcode {
                op::CREATE => MultiResult::Create { path: reader.read_string()? },
                op::CREATE2 => MultiResult::Create2 { path: reader.read_string()?, stat: Stat::decode(reader)? },
                op::DELETE => MultiResult::Delete,
                op::CHECK => MultiResult::Check,
                op::SET_DATA => MultiResult::SetData { stat: Stat::decode(reader)? },
                op::GET_CHILDREN => MultiResult::GetChildren { children: Vec::decode(reader)? },
                op::GET_DATA => MultiResult::GetData { data: reader.read_buffer_opt()?, stat: Stat::decode(reader)? },
                op::ERROR => {
                    let code = reader.read_i32()?;
                    let err = ErrorCode::from_code(code).ok_or(DecodeError::Invalid("unknown error code"))?;
                    MultiResult::Error { err }
                }
                _ => return Err(DecodeError::Invalid("unknown opcode in multi response")),
            };
            results.push(result);
        }
        Ok(MultiResponse { results })
    }
}

/// A decoded client request (everything after the RequestHeader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// create, create2 and createContainer share CreateRequest.
    Create { opcode: i32, request: CreateRequest },
    CreateTtl(CreateTtlRequest),
    /// delete and deleteContainer; deleteContainer carries only a path.
    Delete(DeleteRequest),
    DeleteContainer(PathRequest),
    Exists(PathWatchRequest),
    GetData(PathWatchRequest),
    SetData(SetDataRequest),
    GetAcl(PathRequest),
    SetAcl(SetAclRequest),
    GetChildren(PathWatchRequest),
    GetChildren2(PathWatchRequest),
    Sync(PathRequest),
    Ping,
    Check(CheckVersionRequest),
    Multi(MultiRequest),
    MultiRead(MultiRequest),
    Reconfig(ReconfigRequest),
    CheckWatches(WatchTypeRequest),
    RemoveWatches(WatchTypeRequest),
    Auth(AuthPacket),
    SetWatches(SetWatches),
    SetWatches2(SetWatches2),
    GetEphemerals(PathRequest),
    GetAllChildrenNumber(PathRequest),
    AddWatch(AddWatchRequest),
    WhoAmI,
    CloseSession,
}

/// Why a request frame could not be turned into a `Request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    Decode(DecodeError),
    /// An opcode ZooKeeper's server does not know; it answers UNIMPLEMENTED... no:
    /// ZooKeeper closes the connection on an unknown type, and so do we.
    UnknownOpcode(i32),
}

impl From<DecodeError> for RequestError {
    fn from(error: DecodeError) -> Self {
        RequestError::Decode(error)
    }
}

impl Request {
    pub fn decode(opcode: i32, reader: &mut Reader, multi_ops_max: usize) -> Result<Request, RequestError> {
        Ok(match opcode {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER => {
                Request::Create { opcode, request: CreateRequest::decode(reader)? }
            }
            op::CREATE_TTL => Request::CreateTtl(CreateTtlRequest::decode(reader)?),
            op::DELETE => Request::Delete(DeleteRequest::decode(reader)?),
            op::DELETE_CONTAINER => Request::DeleteContainer(PathRequest::decode(reader)?),
            op::EXISTS => Request::Exists(PathWatchRequest::decode(reader)?),
            op::GET_DATA => Request::GetData(PathWatchRequest::decode(reader)?),
            op::SET_DATA => Request::SetData(SetDataRequest::decode(reader)?),
            op::GET_ACL => Request::GetAcl(PathRequest::decode(reader)?),
            op::SET_ACL => Request::SetAcl(SetAclRequest::decode(reader)?),
            op::GET_CHILDREN => Request::GetChildren(PathWatchRequest::decode(reader)?),
            op::GET_CHILDREN2 => Request::GetChildren2(PathWatchRequest::decode(reader)?),
            op::SYNC => Request::Sync(PathRequest::decode(reader)?),
            op::PING => Request::Ping,
            op::CHECK => Request::Check(CheckVersionRequest::decode(reader)?),
            op::MULTI => Request::Multi(MultiRequest::decode(reader, multi_ops_max)?),
            op::MULTI_READ => Request::MultiRead(MultiRequest::decode(reader, multi_ops_max)?),
            op::RECONFIG => Request::Reconfig(ReconfigRequest::decode(reader)?),
            op::CHECK_WATCHES => Request::CheckWatches(WatchTypeRequest::decode(reader)?),
            op::REMOVE_WATCHES => Request::RemoveWatches(WatchTypeRequest::decode(reader)?),
            op::AUTH => Request::Auth(AuthPacket::decode(reader)?),
            op::SET_WATCHES => Request::SetWatches(SetWatches::decode(reader)?),
            op::SET_WATCHES2 => Request::SetWatches2(SetWatches2::decode(reader)?),
            op::GET_EPHEMERALS => Request::GetEphemerals(PathRequest::decode(reader)?),
            op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber(PathRequest::decode(reader)?),
            op::ADD_WATCH => Request::AddWatch(AddWatchRequest::decode(reader)?),
            op::WHO_AM_I => Request::WhoAmI,
            op::CLOSE_SESSION => Request::CloseSession,
            _ => return Err(RequestError::UnknownOpcode(opcode)),
        })
    }

    pub fn opcode(&self) -> i32 {
        match self {
            Request::Create { opcode, .. } => *opcode,
            Request::CreateTtl(_) => op::CREATE_TTL,
            Request::Delete(_) => op::DELETE,
            Request::DeleteContainer(_) => op::DELETE_CONTAINER,
            Request::Exists(_) => op::EXISTS,
            Request::GetData(_) => op::GET_DATA,
            Request::SetData(_) => op::SET_DATA,
            Request::GetAcl(_) => op::GET_ACL,
            Request::SetAcl(_) => op::SET_ACL,
            Request::GetChildren(_) => op::GET_CHILDREN,
            Request::GetChildren2(_) => op::GET_CHILDREN2,
            Request::Sync(_) => op::SYNC,
            Request::Ping => op::PING,
            Request::Check(_) => op::CHECK,
            Request::Multi(_) => op::MULTI,
            Request::MultiRead(_) => op::MULTI_READ,
            Request::Reconfig(_) => op::RECONFIG,
            Request::CheckWatches(_) => op::CHECK_WATCHES,
            Request::RemoveWatches(_) => op::REMOVE_WATCHES,
            Request::Auth(_) => op::AUTH,
            Request::SetWatches(_) => op::SET_WATCHES,
            Request::SetWatches2(_) => op::SET_WATCHES2,
            Request::GetEphemerals(_) => op::GET_EPHEMERALS,
            Request::GetAllChildrenNumber(_) => op::GET_ALL_CHILDREN_NUMBER,
            Request::AddWatch(_) => op::ADD_WATCH,
            Request::WhoAmI => op::WHO_AM_I,
            Request::CloseSession => op::CLOSE_SESSION,
        }
    }

    pub fn encode(&self, writer: &mut Writer) {
        match self {
            Request::Create { request, .. } => request.encode(writer),
            Request::CreateTtl(request) => request.encode(writer),
            Request::Delete(request) => request.encode(writer),
            Request::DeleteContainer(request)
            | Request::GetAcl(request)
            | Request::Sync(request)
            | Request::GetEphemerals(request)
            | Request::GetAllChildrenNumber(request) => request.encode(writer),
            Request::Exists(request)
            | Request::GetData(request)
            | Request::GetChildren(request)
            | Request::GetChildren2(request) => request.encode(writer),
            Request::SetData(request) => request.encode(writer),
            Request::SetAcl(request) => request.encode(writer),
            Request::Ping | Request::WhoAmI | Request::CloseSession => {}
            Request::Check(request) => request.encode(writer),
            Request::Multi(request) | Request::MultiRead(request) => request.encode(writer),
            Request::Reconfig(request) => request.encode(writer),
            Request::CheckWatches(request) | Request::RemoveWatches(request) => request.encode(writer),
            Request::Auth(request) => request.encode(writer),
            Request::SetWatches(request) => request.encode(writer),
            Request::SetWatches2(request) => request.encode(writer),
            Request::AddWatch(request) => request.encode(writer),
        }
    }

    /// Writes change the tree and go through the sequencer; everything else is
    /// answered by the shard that owns the connection.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create { .. }
                | Request::CreateTtl(_)
                | Request::Delete(_)
                | Request::DeleteContainer(_)
                | Request::SetData(_)
                | Request::SetAcl(_)
                | Request::Check(_)
                | Request::Multi(_)
                | Request::Reconfig(_)
                | Request::CloseSession
        )
    }
}

/// A reply body. `None` in a reply means a header-only frame (every error, and
/// the requests ZooKeeper answers without a body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Create(PathResponse),
    Create2(Create2Response),
    Stat(StatResponse),
    GetData(GetDataResponse),
    GetAcl(GetAclResponse),
    GetChildren(GetChildrenResponse),
    GetChildren2(GetChildren2Response),
    Sync(PathResponse),
    Multi(MultiResponse),
    Int(IntResponse),
    Strings(StringsResponse),
    WhoAmI(WhoAmIResponse),
}

impl Response {
    pub fn encode(&self, writer: &mut Writer) {
        match self {
            Response::Create(response) | Response::Sync(response) => response.encode(writer),
            Response::Create2(response) => response.encode(writer),
            Response::Stat(response) => response.encode(writer),
            Response::GetData(response) => response.encode(writer),
            Response::GetAcl(response) => response.encode(writer),
            Response::GetChildren(response) => response.encode(writer),
            Response::GetChildren2(response) => response.encode(writer),
            Response::Multi(response) => response.encode(writer),
            Response::Int(response) => response.encode(writer),
            Response::Strings(response) => response.encode(writer),
            Response::WhoAmI(response) => response.encode(writer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(request: Request) {
        let mut writer = Writer::new();
        request.encode(&mut writer);
        let bytes = writer.into_bytes();
        let mut reader = Reader::new(bytes.clone());
        let decoded = Request::decode(request.opcode(), &mut reader, 1000).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn create_request_golden_bytes() {
        // create("/a", b"x", OPEN_ACL_UNSAFE, PERSISTENT) as the Java client frames its body.
        let request = CreateRequest {
            path: "/a".into(),
            data: Some(Bytes::from_static(b"x")),
            acl: vec![Acl { perms: 31, id: Id { scheme: "world".into(), id: "anyone".into() } }],
            flags: 0,
        };
        let expected: &[u8] = &[
            0, 0, 0, 2, b'/', b'a', 0, 0, 0, 1, b'x', 0, 0, 0, 1, 0, 0, 0, 31, 0, 0, 0, 5, b'w', b'o', b'r', b'l',
            b'd', 0, 0, 0, 6, b'a', b'n', b'y', b'o', b'n', b'e', 0, 0, 0, 0,
        ];
        assert_eq!(&request.encode_to_bytes()[..], expected);
        assert_eq!(CreateRequest::decode_from(Bytes::from_static(expected)).unwrap(), request);
    }

    #[test]
    fn every_request_round_trips() {
        let acl = vec![Acl { perms: 1, id: Id { scheme: "digest".into(), id: "u:h".into() } }];
        let create = CreateRequest { path: "/c".into(), data: None, acl: acl.clone(), flags: 3 };
        let requests = vec![
            Request::Create { opcode: op::CREATE, request: create.clone() },
            Request::Create { opcode: op::CREATE2, request: create.clone() },
            Request::Create { opcode: op::CREATE_CONTAINER, request: create.clone() },
            Request::CreateTtl(CreateTtlRequest { path: "/t".into(), data: Some(Bytes::new()), acl: acl.clone(), flags: 5, ttl: 100 }),
            Request::Delete(DeleteRequest { path: "/d".into(), version: -1 }),
            Request::DeleteContainer(PathRequest { path: "/d".into() }),
            Request::Exists(PathWatchRequest { path: "/e".into(), watch: true }),
            Request::GetData(PathWatchRequest { path: "/e".into(), watch: false }),
            Request::SetData(SetDataRequest { path: "/s".into(), data: Some(Bytes::from_static(b"v")), version: 3 }),
            Request::GetAcl(PathRequest { path: "/".into() }),
            Request::SetAcl(SetAclRequest { path: "/".into(), acl: acl.clone(), version: 0 }),
            Request::GetChildren(PathWatchRequest { path: "/".into(), watch: true }),
            Request::GetChildren2(PathWatchRequest { path: "/".into(), watch: true }),
            Request::Sync(PathRequest { path: "/".into() }),
            Request::Ping,
            Request::Check(CheckVersionRequest { path: "/".into(), version: 1 }),
            Request::Multi(MultiRequest {
                ops: vec![
                    MultiOp::Create { opcode: op::CREATE, request: create.clone() },
                    MultiOp::Delete { opcode: op::DELETE, request: DeleteRequest { path: "/x".into(), version: 2 } },
                    MultiOp::SetData(SetDataRequest { path: "/y".into(), data: None, version: -1 }),
                    MultiOp::Check(CheckVersionRequest { path: "/z".into(), version: 0 }),
                ],
            }),
            Request::MultiRead(MultiRequest {
                ops: vec![
                    MultiOp::GetData(PathWatchRequest { path: "/a".into(), watch: false }),
                    MultiOp::GetChildren(PathWatchRequest { path: "/b".into(), watch: false }),
                ],
            }),
            Request::Reconfig(ReconfigRequest { joining_servers: "a".into(), leaving_servers: "".into(), new_members: "".into(), cur_config_id: -1 }),
            Request::CheckWatches(WatchTypeRequest { path: "/".into(), watcher_type: 3 }),
            Request::RemoveWatches(WatchTypeRequest { path: "/".into(), watcher_type: 1 }),
            Request::Auth(AuthPacket { auth_type: 0, scheme: "digest".into(), auth: Bytes::from_static(b"u:p") }),
            Request::SetWatches(SetWatches { relative_zxid: 5, data_watches: vec!["/a".into()], exist_watches: vec![], child_watches: vec!["/b".into()] }),
            Request::SetWatches2(SetWatches2 { relative_zxid: 5, persistent_recursive_watches: vec!["/r".into()], ..Default::default() }),
            Request::GetEphemerals(PathRequest { path: "/".into() }),
            Request::GetAllChildrenNumber(PathRequest { path: "/".into() }),
            Request::AddWatch(AddWatchRequest { path: "/w".into(), mode: 1 }),
            Request::WhoAmI,
            Request::CloseSession,
        ];
        for request in requests {
            round_trip_request(request);
        }
    }

    #[test]
    fn multi_response_failure_layout() {
        let response = MultiResponse {
            results: vec![
                MultiResult::Error { err: ErrorCode::Ok },
                MultiResult::Error { err: ErrorCode::NoNode },
                MultiResult::Error { err: ErrorCode::RuntimeInconsistency },
            ],
        };
        let mut writer = Writer::new();
        response.encode(&mut writer);
        let bytes = writer.into_bytes();
        // Each result: MultiHeader(-1, false, err) + ErrorResponse(err); then the done header.
        assert_eq!(bytes.len(), 3 * (9 + 4) + 9);
        assert_eq!(&bytes[13..22], &[0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0x9b]);
        assert_eq!(MultiResponse::decode(&mut Reader::new(bytes)).unwrap(), response);
    }

    #[test]
    fn connect_request_with_and_without_read_only() {
        let mut request = ConnectRequest { timeout_ms: 30000, password: Bytes::from(vec![0u8; 16]), ..Default::default() };
        let mut writer = Writer::new();
        request.encode(&mut writer);
        assert_eq!(writer.len(), 4 + 8 + 4 + 8 + 4 + 16);
        assert_eq!(ConnectRequest::decode(writer.into_bytes()).unwrap(), request);
        request.read_only = Some(false);
        let mut writer = Writer::new();
        request.encode(&mut writer);
        assert_eq!(writer.len(), 4 + 8 + 4 + 8 + 4 + 16 + 1);
        assert_eq!(ConnectRequest::decode(writer.into_bytes()).unwrap(), request);
    }

    #[test]
    fn unknown_opcode_and_garbage_are_errors_not_panics() {
        let mut reader = Reader::new(Bytes::from_static(&[1, 2, 3]));
        assert_eq!(Request::decode(999, &mut reader, 10), Err(RequestError::UnknownOpcode(999)));
        for opcode in [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 100, 101, 103, 104, 105, 106] {
            let mut reader = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0x00, 1]));
            assert!(Request::decode(opcode, &mut reader, 10).is_err(), "opcode {opcode}");
        }
    }
}
