//! Golden wire tests: frames recorded from real clients (kazoo, and Apache's own
//! Java client through zkCli.sh) talking to real Apache ZooKeeper 3.8, by
//! `tests/golden/record.py` (a tool run by hand, not by this suite).
//!
//! Every recorded frame is decoded with warden's codec, re-encoded with
//! warden's encoder, and must come out byte for byte identical, with no bytes
//! left over after decoding. Requests are decoded by their header's opcode;
//! replies by the opcode of the request with the same xid on that connection
//! (xid -1 is a watch event, -2 a ping reply, -4 an auth reply, -8 a
//! setWatches reply). A reply whose header carries an error has no body.
//!
//! File format: `<c2s|s2c> <hex of the frame body without its length prefix>`
//! per line; `#` lines are comments; `# connection ...` starts a new TCP
//! connection, whose first c2s frame is a ConnectRequest and whose first s2c
//! frame is a ConnectResponse.
//!
//! Every mismatch is collected and reported together (file, line, what,
//! recorded bytes, warden's bytes), so one run lists all codec divergences.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use warden::proto::{
    op, ConnectRequest, ConnectResponse, Create2Response, GetAclResponse, GetChildren2Response,
    GetChildrenResponse, GetDataResponse, IntResponse, Jute, MultiResponse, MultiResult, PathResponse,
    Reader, ReplyHeader, Request, RequestHeader, Response, StatResponse, StringsResponse, WatcherEvent,
    WhoAmIResponse, Writer,
};

/// Xids with a fixed meaning (ClientCnxn).
const XID_WATCH_EVENT: i32 = -1;
const XID_PING: i32 = -2;
const XID_AUTH: i32 = -4;
const XID_SET_WATCHES: i32 = -8;

/// Large enough for any recorded multi.
const MULTI_OPS_MAX: usize = 100_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    ClientToServer,
    ServerToClient,
}

struct Frame {
    line: usize,
    direction: Direction,
    body: Bytes,
}

struct Connection {
    name: String,
    frames: Vec<Frame>,
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd hex length {}", text.len()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| format!("bad hex at {i}: {e}")))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse(file: &str, text: &str) -> Vec<Connection> {
    let mut connections: Vec<Connection> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim_end();
        if raw.is_empty() {
            continue;
        }
        if let Some(comment) = raw.strip_prefix('#') {
            let comment = comment.trim();
            if comment.starts_with("connection") {
                connections.push(Connection { name: comment.to_string(), frames: Vec::new() });
            }
            continue;
        }
        let (direction, body) = raw.split_once(' ').unwrap_or_else(|| panic!("{file}:{line}: no space in {raw:?}"));
        let direction = match direction {
            "c2s" => Direction::ClientToServer,
            "s2c" => Direction::ServerToClient,
            other => panic!("{file}:{line}: unknown direction {other:?}"),
        };
        let body = unhex(body.trim()).unwrap_or_else(|e| panic!("{file}:{line}: {e}"));
        if connections.is_empty() {
            // Frames before any `# connection` line belong to one implicit connection.
            connections.push(Connection { name: "connection (implicit)".into(), frames: Vec::new() });
        }
        connections.last_mut().unwrap().frames.push(Frame { line, direction, body: Bytes::from(body) });
    }
    connections
}

/// What a golden file exercised, summed across files for the coverage check.
#[derive(Default)]
struct Coverage {
    frames: usize,
    connections: usize,
    connect_requests: usize,
    connect_responses: usize,
    /// Requests per opcode (c2s).
    requests: BTreeMap<i32, usize>,
    /// Successful replies with a body, per request opcode.
    replies_with_body: BTreeMap<i32, usize>,
    /// Replies whose header carried an error.
    error_replies: BTreeMap<i32, usize>,
    watch_events: usize,
    /// Multi replies with at least one error result (a failed transaction).
    failed_multis: usize,
}

impl Coverage {
    fn merge(&mut self, other: &Coverage) {
        self.frames += other.frames;
        self.connections += other.connections;
        self.connect_requests += other.connect_requests;
        self.connect_responses += other.connect_responses;
        for (k, v) in &other.requests {
            *self.requests.entry(*k).or_default() += v;
        }
        for (k, v) in &other.replies_with_body {
            *self.replies_with_body.entry(*k).or_default() += v;
        }
        for (k, v) in &other.error_replies {
            *self.error_replies.entry(*k).or_default() += v;
        }
        self.watch_events += other.watch_events;
        self.failed_multis += other.failed_multis;
    }

    fn summary(&self) -> String {
        let named = |map: &BTreeMap<i32, usize>| {
            map.iter().map(|(k, v)| format!("{}({k})={v}", op::name(*k))).collect::<Vec<_>>().join(", ")
        };
        format!(
            "{} frames in {} connections; connect req/resp {}/{}; watch events {}; failed multis {}\n  requests: {}\n  replies with body: {}\n  error replies: {}",
            self.frames,
            self.connections,
            self.connect_requests,
            self.connect_responses,
            self.watch_events,
            self.failed_multis,
            named(&self.requests),
            named(&self.replies_with_body),
            named(&self.error_replies),
        )
    }
}

/// Decodes a reply body by the opcode of its request. `Ok(None)`: the reply
/// carries no body for this opcode.
fn decode_reply_body(opcode: i32, reader: &mut Reader) -> Result<Option<Response>, String> {
    let e = |err: warden::proto::DecodeError| format!("decode {}: {err}", op::name(opcode));
    Ok(Some(match opcode {
        op::CREATE => Response::Create(PathResponse::decode(reader).map_err(e)?),
        op::CREATE2 | op::CREATE_TTL | op::CREATE_CONTAINER => {
            Response::Create2(Create2Response::decode(reader).map_err(e)?)
        }
        op::EXISTS | op::SET_DATA | op::SET_ACL => Response::Stat(StatResponse::decode(reader).map_err(e)?),
        op::GET_DATA | op::RECONFIG => Response::GetData(GetDataResponse::decode(reader).map_err(e)?),
        op::GET_ACL => Response::GetAcl(GetAclResponse::decode(reader).map_err(e)?),
        op::GET_CHILDREN => Response::GetChildren(GetChildrenResponse::decode(reader).map_err(e)?),
        op::GET_CHILDREN2 => Response::GetChildren2(GetChildren2Response::decode(reader).map_err(e)?),
        op::SYNC => Response::Sync(PathResponse::decode(reader).map_err(e)?),
        op::MULTI | op::MULTI_READ => Response::Multi(MultiResponse::decode(reader).map_err(e)?),
        op::GET_EPHEMERALS => Response::Strings(StringsResponse::decode(reader).map_err(e)?),
        // getAllChildrenNumber answers its count; addWatch answers ErrorResponse(0), an int.
        op::GET_ALL_CHILDREN_NUMBER | op::ADD_WATCH => Response::Int(IntResponse::decode(reader).map_err(e)?),
        op::WHO_AM_I => Response::WhoAmI(WhoAmIResponse::decode(reader).map_err(e)?),
        op::DELETE
        | op::PING
        | op::CHECK
        | op::AUTH
        | op::SET_WATCHES
        | op::SET_WATCHES2
        | op::CHECK_WATCHES
        | op::REMOVE_WATCHES
        | op::CLOSE_SESSION => return Ok(None),
        other => return Err(format!("no reply decoder for opcode {other} ({})", op::name(other))),
    }))
}

struct Checker<'a> {
    file: &'a str,
    mismatches: Vec<String>,
    coverage: Coverage,
}

impl Checker<'_> {
    fn fail(&mut self, frame: &Frame, what: &str, detail: String) {
        self.mismatches.push(format!(
            "{}:{} {} [{}]: {}\n    recorded: {}",
            self.file,
            frame.line,
            match frame.direction {
                Direction::ClientToServer => "c2s",
                Direction::ServerToClient => "s2c",
            },
            what,
            detail,
            hex(&frame.body)
        ));
    }

    /// Asserts warden's re-encoding equals the recorded bytes and nothing was left.
    fn compare(&mut self, frame: &Frame, what: &str, remaining: usize, produced: &[u8]) {
        if remaining != 0 {
            self.fail(frame, what, format!("{remaining} bytes left after decoding"));
        } else if produced != &frame.body[..] {
            let first_difference = produced
                .iter()
                .zip(frame.body.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(produced.len().min(frame.body.len()));
            self.fail(
                frame,
                what,
                format!(
                    "re-encoding differs (recorded {} bytes, warden {} bytes, first difference at byte {first_difference})\n    warden:   {}",
                    frame.body.len(),
                    produced.len(),
                    hex(produced)
                ),
            );
        }
    }

    fn check_connection(&mut self, connection: &Connection) {
        self.coverage.connections += 1;
        let mut seen_connect_request = false;
        let mut seen_connect_response = false;
        // xid -> opcode of the requests awaiting their reply.
        let mut pending: HashMap<i32, i32> = HashMap::new();
        for frame in &connection.frames {
            self.coverage.frames += 1;
            match frame.direction {
                Direction::ClientToServer if !seen_connect_request => {
                    seen_connect_request = true;
                    self.coverage.connect_requests += 1;
                    match ConnectRequest::decode(frame.body.clone()) {
                        Ok(request) => {
                            let mut writer = Writer::new();
                            request.encode(&mut writer);
                            self.compare(frame, "ConnectRequest", 0, &writer.into_bytes());
                        }
                        Err(err) => self.fail(frame, "ConnectRequest", format!("decode error: {err}")),
                    }
                }
                Direction::ServerToClient if !seen_connect_response => {
                    seen_connect_response = true;
                    self.coverage.connect_responses += 1;
                    match ConnectResponse::decode(frame.body.clone()) {
                        Ok(response) => {
                            let mut writer = Writer::new();
                            response.encode(&mut writer);
                            self.compare(frame, "ConnectResponse", 0, &writer.into_bytes());
                        }
                        Err(err) => self.fail(frame, "ConnectResponse", format!("decode error: {err}")),
                    }
                }
                Direction::ClientToServer => self.check_request(frame, &mut pending),
                Direction::ServerToClient => self.check_reply(frame, &mut pending),
            }
        }
        let _ = &connection.name;
    }

    fn check_request(&mut self, frame: &Frame, pending: &mut HashMap<i32, i32>) {
        let mut reader = Reader::new(frame.body.clone());
        let header = match RequestHeader::decode(&mut reader) {
            Ok(header) => header,
            Err(err) => return self.fail(frame, "RequestHeader", format!("decode error: {err}")),
        };
        let what = format!("request {}({}) xid {}", op::name(header.opcode), header.opcode, header.xid);
        *self.coverage.requests.entry(header.opcode).or_default() += 1;
        pending.insert(header.xid, header.opcode);
        let request = match Request::decode(header.opcode, &mut reader, MULTI_OPS_MAX) {
            Ok(request) => request,
            Err(err) => return self.fail(frame, &what, format!("decode error: {err:?}")),
        };
        if request.opcode() != header.opcode {
            self.fail(frame, &what, format!("decoded as opcode {} ({request:?})", request.opcode()));
        }
        let mut writer = Writer::new();
        header.encode(&mut writer);
        request.encode(&mut writer);
        self.compare(frame, &what, reader.remaining(), &writer.into_bytes());
    }

    fn check_reply(&mut self, frame: &Frame, pending: &mut HashMap<i32, i32>) {
        let mut reader = Reader::new(frame.body.clone());
        let header = match ReplyHeader::decode(&mut reader) {
            Ok(header) => header,
            Err(err) => return self.fail(frame, "ReplyHeader", format!("decode error: {err}")),
        };
        let mut writer = Writer::new();
        header.encode(&mut writer);

        if header.xid == XID_WATCH_EVENT {
            self.coverage.watch_events += 1;
            let what = "watch event (xid -1)";
            match WatcherEvent::decode(&mut reader) {
                Ok(event) => event.encode(&mut writer),
                Err(err) => return self.fail(frame, what, format!("decode error: {err}")),
            }
            return self.compare(frame, what, reader.remaining(), &writer.into_bytes());
        }

        let opcode = match pending.remove(&header.xid) {
            Some(opcode) => opcode,
            None => match header.xid {
                XID_PING => op::PING,
                XID_AUTH => op::AUTH,
                XID_SET_WATCHES => op::SET_WATCHES,
                xid => return self.fail(frame, "reply", format!("no request with xid {xid} on this connection")),
            },
        };
        let what = format!("reply to {}({opcode}) xid {} err {}", op::name(opcode), header.xid, header.err);

        if header.err != 0 {
            *self.coverage.error_replies.entry(opcode).or_default() += 1;
            // An error reply is the header alone.
            return self.compare(frame, &what, reader.remaining(), &writer.into_bytes());
        }
        match decode_reply_body(opcode, &mut reader) {
            Ok(Some(response)) => {
                *self.coverage.replies_with_body.entry(opcode).or_default() += 1;
                if let Response::Multi(multi) = &response {
                    if multi.results.iter().any(|r| matches!(r, MultiResult::Error { .. })) {
                        self.coverage.failed_multis += 1;
                    }
                }
                response.encode(&mut writer);
            }
            Ok(None) => {}
            Err(err) => return self.fail(frame, &what, err),
        }
        self.compare(frame, &what, reader.remaining(), &writer.into_bytes());
    }
}

fn check_file(name: &str) -> (Coverage, Vec<String>) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let connections = parse(name, &text);
    assert!(!connections.is_empty(), "{name}: no connections");
    let mut checker = Checker { file: name, mismatches: Vec::new(), coverage: Coverage::default() };
    for connection in &connections {
        checker.check_connection(connection);
    }
    assert!(checker.coverage.frames > 0, "{name}: no frames");
    (checker.coverage, checker.mismatches)
}

fn assert_round_trips(name: &str) -> Coverage {
    let (coverage, mismatches) = check_file(name);
    eprintln!("{name}: {}", coverage.summary());
    assert!(
        mismatches.is_empty(),
        "{name}: {} frame(s) where warden's codec does not reproduce Apache ZooKeeper's bytes:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    coverage
}

#[test]
fn kazoo_frames_round_trip_byte_for_byte() {
    assert_round_trips("kazoo.frames");
}

#[test]
fn zkcli_java_client_frames_round_trip_byte_for_byte() {
    assert_round_trips("zkcli.frames");
}

#[test]
fn golden_files_cover_the_protocol() {
    let mut total = Coverage::default();
    for name in ["kazoo.frames", "zkcli.frames"] {
        // Mismatches are reported by the per-file tests; coverage is checked here.
        total.merge(&check_file(name).0);
    }
    eprintln!("both files: {}", total.summary());
    let required: &[(&str, &[i32])] = &[
        ("create", &[op::CREATE]),
        ("create2", &[op::CREATE2]),
        ("createTTL", &[op::CREATE_TTL]),
        ("createContainer", &[op::CREATE_CONTAINER]),
        ("delete", &[op::DELETE]),
        ("exists", &[op::EXISTS]),
        ("getData", &[op::GET_DATA]),
        ("setData", &[op::SET_DATA]),
        ("getACL", &[op::GET_ACL]),
        ("setACL", &[op::SET_ACL]),
        ("getChildren", &[op::GET_CHILDREN]),
        ("getChildren2", &[op::GET_CHILDREN2]),
        ("sync", &[op::SYNC]),
        ("ping", &[op::PING]),
        ("multi", &[op::MULTI]),
        ("addWatch", &[op::ADD_WATCH]),
        ("removeWatches or checkWatches", &[op::REMOVE_WATCHES, op::CHECK_WATCHES]),
        ("getEphemerals", &[op::GET_EPHEMERALS]),
        ("getAllChildrenNumber", &[op::GET_ALL_CHILDREN_NUMBER]),
        ("whoAmI", &[op::WHO_AM_I]),
        ("auth", &[op::AUTH]),
        ("closeSession", &[op::CLOSE_SESSION]),
        ("setWatches or setWatches2", &[op::SET_WATCHES, op::SET_WATCHES2]),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(_, opcodes)| !opcodes.iter().any(|o| total.requests.get(o).copied().unwrap_or(0) > 0))
        .map(|(name, _)| *name)
        .collect();
    assert!(missing.is_empty(), "golden files lack requests for: {missing:?}\n{}", total.summary());
    // Replies: each kind of body, errors, events, and a failed transaction.
    for opcode in [
        op::CREATE,
        op::CREATE2,
        op::EXISTS,
        op::GET_DATA,
        op::SET_DATA,
        op::GET_ACL,
        op::SET_ACL,
        op::GET_CHILDREN,
        op::GET_CHILDREN2,
        op::SYNC,
        op::MULTI,
        op::GET_EPHEMERALS,
        op::GET_ALL_CHILDREN_NUMBER,
        op::WHO_AM_I,
        op::ADD_WATCH,
    ] {
        assert!(
            total.replies_with_body.get(&opcode).copied().unwrap_or(0) > 0,
            "no successful {} reply recorded\n{}",
            op::name(opcode),
            total.summary()
        );
    }
    assert!(total.connect_requests >= 4 && total.connect_responses >= 4, "{}", total.summary());
    assert!(total.watch_events > 0, "no watch event recorded");
    assert!(total.error_replies.values().sum::<usize>() > 0, "no error reply recorded");
    assert!(total.failed_multis > 0, "no failed multi recorded");
}
