//! Behaviour of the real `warden` binary at the wire level: malformed and
//! oversized frames, handshake edge cases, connection limits, session resume,
//! expiry and close, setWatches after a reconnect, timeout negotiation,
//! SIGTERM, container/TTL reaping, four-letter words and the super digest.
//!
//! Every test starts its own server on its own loopback port with its own
//! temporary data directory, and talks to it with the minimal ZooKeeper
//! protocol client below (std only). Every wait is bounded in time.
//!
//! Setting `SERVER_BEHAVIOUR_TARGET=apache` runs the same tests against Apache
//! ZooKeeper 3.8 (the Debian package's jars in /usr/share/java) instead, to
//! check that the expectations are ZooKeeper's. Against Apache only
//! `sigterm_shuts_down_cleanly` is expected to fail (the JVM exits with 143).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::{apache_classpath, frame, free_port, Enc};
use warden::rng::Rng;

const IO_TIMEOUT: Duration = Duration::from_secs(5);
const READY_TIMEOUT: Duration = Duration::from_secs(20);

// Opcodes.
const OP_CREATE: i32 = 1;
const OP_DELETE: i32 = 2;
const OP_EXISTS: i32 = 3;
const OP_GET_DATA: i32 = 4;
const OP_SET_DATA: i32 = 5;
const OP_PING: i32 = 11;
const OP_CREATE_CONTAINER: i32 = 19;
const OP_CREATE_TTL: i32 = 21;
const OP_AUTH: i32 = 100;
const OP_SET_WATCHES: i32 = 101;
const OP_CLOSE_SESSION: i32 = -11;

// Special xids.
const XID_WATCH_EVENT: i32 = -1;
const XID_PING: i32 = -2;
const XID_AUTH: i32 = -4;
const XID_SET_WATCHES: i32 = -8;

// Error codes.
const OK: i32 = 0;
const MARSHALLINGERROR: i32 = -5;
const UNIMPLEMENTED: i32 = -6;
const NONODE: i32 = -101;
const NOAUTH: i32 = -102;
const NODEEXISTS: i32 = -110;
const AUTHFAILED: i32 = -115;

// Watch event types and the SyncConnected state.
const EVENT_NODE_DELETED: i32 = 2;
const EVENT_NODE_DATA_CHANGED: i32 = 3;
const STATE_SYNC_CONNECTED: i32 = 3;

// Create modes.
const EPHEMERAL: i32 = 1;
const CONTAINER: i32 = 4;
const PERSISTENT_WITH_TTL: i32 = 5;

const PERMS_ALL: i32 = 31;
const PERMS_READ: i32 = 1;

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

#[derive(Default, Clone)]
struct Opts {
    tick_ms: Option<u32>,
    min_session_timeout_ms: Option<u32>,
    max_session_timeout_ms: Option<u32>,
    max_client_cnxns: Option<u32>,
    jute_maxbuffer: Option<u32>,
    extended_types: bool,
    container_check_interval_ms: Option<u32>,
    super_digest: Option<&'static str>,
    whitelist_all: bool,
}

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

static SERVER_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn apache_target() -> bool {
    std::env::var("SERVER_BEHAVIOUR_TARGET").map(|v| v == "apache").unwrap_or(false)
}

fn unique_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = SERVER_COUNTER.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("warden-server-behaviour-{name}-{}-{n}-{nanos}", std::process::id()))
}

impl Server {
    fn start(name: &str, opts: Opts) -> Server {
        // A port picked by binding :0 may, rarely, be taken before the server
        // binds it: retry with a fresh port if the server exits early.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Server::try_start(name, &opts) {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("server did not start: {last_error}");
    }

    fn command(opts: &Opts, port: u16, dir: &std::path::Path, data_dir: &std::path::Path) -> Command {
        let tick = opts.tick_ms.unwrap_or(2000);
        if apache_target() {
            let mut cfg = format!(
                "tickTime={tick}\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n",
                data_dir.display()
            );
            if let Some(v) = opts.min_session_timeout_ms {
                cfg += &format!("minSessionTimeout={v}\n");
            }
            if let Some(v) = opts.max_session_timeout_ms {
                cfg += &format!("maxSessionTimeout={v}\n");
            }
            if let Some(v) = opts.max_client_cnxns {
                cfg += &format!("maxClientCnxns={v}\n");
            }
            if opts.whitelist_all {
                cfg += "4lw.commands.whitelist=*\n";
            }
            let cfg_path = dir.join("zoo.cfg");
            std::fs::write(&cfg_path, cfg).unwrap();
            let mut command = Command::new("java");
            command.args(["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]);
            command.arg("-Dzookeeper.admin.enableServer=false");
            if let Some(v) = opts.jute_maxbuffer {
                command.arg(format!("-Djute.maxbuffer={v}"));
            }
            if opts.extended_types {
                command.arg("-Dzookeeper.extendedTypesEnabled=true");
            }
            if let Some(v) = opts.container_check_interval_ms {
                command.arg(format!("-Dznode.container.checkIntervalMs={v}"));
            }
            if let Some(v) = opts.super_digest {
                command.arg(format!("-Dzookeeper.DigestAuthenticationProvider.superDigest={v}"));
            }
            command.args(["-cp", &apache_classpath(), "org.apache.zookeeper.server.ZooKeeperServerMain"]);
            command.arg(&cfg_path);
            return command;
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
        command.arg("server");
        command.args(["--client-port", &port.to_string(), "--client-port-address", "127.0.0.1"]);
        command.arg("--data-dir").arg(data_dir);
        command.args(["--tick-time", &tick.to_string(), "--log-level", "info"]);
        if let Some(v) = opts.min_session_timeout_ms {
            command.args(["--min-session-timeout", &v.to_string()]);
        }
        if let Some(v) = opts.max_session_timeout_ms {
            command.args(["--max-session-timeout", &v.to_string()]);
        }
        if let Some(v) = opts.max_client_cnxns {
            command.args(["--max-client-cnxns", &v.to_string()]);
        }
        if let Some(v) = opts.jute_maxbuffer {
            command.args(["--jute-maxbuffer", &v.to_string()]);
        }
        if opts.extended_types {
            command.args(["--extended-types-enabled", "true"]);
        }
        if let Some(v) = opts.container_check_interval_ms {
            command.args(["--container-check-interval-ms", &v.to_string()]);
        }
        if let Some(v) = opts.super_digest {
            command.args(["--super-digest", v]);
        }
        if opts.whitelist_all {
            command.args(["--4lw-commands-whitelist", "*"]);
        }
        command
    }

    fn try_start(name: &str, opts: &Opts) -> Result<Server, String> {
        let dir = unique_dir(name);
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).expect("create temp dir");
        let port = free_port();
        let log = File::create(dir.join("server.log")).expect("create log file");
        let mut command = Server::command(opts, port, &dir, &data_dir);
        command
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = command.spawn().map_err(|e| format!("spawn: {e}"))?;
        let mut server = Server { child, port, dir };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("exited early with {status}; log:\n{}", server.log_tail()));
            }
            // Ready once it answers srvr as a server does. A TCP connect alone
            // is not proof: the suite saw connects succeed (to whatever held
            // the port for an instant) before the server under test listened,
            // and the first session then found nothing there.
            if common::ensemble::four_letter(port, "srvr").is_some_and(|answer| answer.contains("Mode: ")) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("port {port} not accepting after {READY_TIMEOUT:?}; log:\n{}", server.log_tail()));
            }
            sleep(Duration::from_millis(20));
        }
        if apache_target() {
            // ZooKeeper accepts before it serves: wait for a real handshake.
            loop {
                if let Ok((mut conn, Some(_))) = try_handshake(port, 0, 30000, 0, &[0; 16]) {
                    let _ = conn.send(&request_header(1, OP_CLOSE_SESSION));
                    let _ = conn.read_until_closed(IO_TIMEOUT);
                    break;
                }
                if Instant::now() > deadline {
                    return Err("apache server never completed a handshake".into());
                }
                sleep(Duration::from_millis(100));
            }
        }
        Ok(server)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// Asserts the process is still running and still serves a new session.
    fn assert_serving(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "server process exited; log:\n{}", self.log_tail());
        let mut session = Session::connect(self.port);
        assert_eq!(session.exists("/", false), OK);
        session.close();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- server log tail (port {}) ---\n{}", self.port, self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Jute encoding
// ---------------------------------------------------------------------------

struct Dec<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Dec<'a> {
    fn new(b: &'a [u8]) -> Self {
        Dec { b, p: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.p + n <= self.b.len(), "short record: need {n} bytes at {} of {:?}", self.p, self.b);
        let out = &self.b[self.p..self.p + n];
        self.p += n;
        out
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn buf(&mut self) -> Vec<u8> {
        let n = self.i32();
        if n < 0 {
            return Vec::new();
        }
        self.take(n as usize).to_vec()
    }
    fn str(&mut self) -> String {
        String::from_utf8(self.buf()).expect("utf-8 string")
    }
    fn remaining(&self) -> usize {
        self.b.len() - self.p
    }
}

fn request_header(xid: i32, opcode: i32) -> Vec<u8> {
    Enc::default().i32(xid).i32(opcode).0
}

fn connect_request(last_zxid: i64, timeout_ms: i32, session_id: i64, password: &[u8]) -> Vec<u8> {
    Enc::default().i32(0).i64(last_zxid).i32(timeout_ms).i64(session_id).buf(password).bool(false).0
}

#[derive(Debug, Clone, PartialEq)]
struct ConnectResponse {
    protocol_version: i32,
    timeout_ms: i32,
    session_id: i64,
    password: Vec<u8>,
}

fn parse_connect_response(body: &[u8]) -> ConnectResponse {
    let mut d = Dec::new(body);
    let response = ConnectResponse { protocol_version: d.i32(), timeout_ms: d.i32(), session_id: d.i64(), password: d.buf() };
    assert!(d.remaining() <= 1, "trailing bytes after ConnectResponse: {body:?}");
    response
}

#[derive(Debug, Clone, PartialEq)]
struct Reply {
    xid: i32,
    zxid: i64,
    err: i32,
    body: Vec<u8>,
}

fn parse_reply(frame: &[u8]) -> Reply {
    let mut d = Dec::new(frame);
    let (xid, zxid, err) = (d.i32(), d.i64(), d.i32());
    Reply { xid, zxid, err, body: frame[d.p..].to_vec() }
}

#[derive(Debug, Clone, PartialEq)]
struct Event {
    event_type: i32,
    state: i32,
    path: String,
}

fn parse_event(reply: &Reply) -> Event {
    assert_eq!((reply.xid, reply.zxid, reply.err), (XID_WATCH_EVENT, -1, 0), "watch event header");
    let mut d = Dec::new(&reply.body);
    Event { event_type: d.i32(), state: d.i32(), path: d.str() }
}

// ---------------------------------------------------------------------------
// Raw connection
// ---------------------------------------------------------------------------

enum Recv {
    Frame(Vec<u8>),
    Timeout,
    Closed,
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

impl Conn {
    fn open(port: u16) -> Conn {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Conn { stream, rbuf: Vec::new() }
    }

    /// Writes raw bytes; an error (the server already closed) is returned.
    fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn send(&mut self, body: &[u8]) -> std::io::Result<()> {
        self.send_raw(&frame(body))
    }

    fn take_frame(&mut self) -> Option<Vec<u8>> {
        if self.rbuf.len() < 4 {
            return None;
        }
        let length = i32::from_be_bytes(self.rbuf[..4].try_into().unwrap());
        assert!(length >= 0, "negative frame length {length} from server");
        let length = length as usize;
        if self.rbuf.len() < 4 + length {
            return None;
        }
        let body = self.rbuf[4..4 + length].to_vec();
        self.rbuf.drain(..4 + length);
        Some(body)
    }

    /// The next frame, waiting at most `within`.
    fn recv(&mut self, within: Duration) -> Recv {
        let deadline = Instant::now() + within;
        loop {
            if let Some(frame) = self.take_frame() {
                return Recv::Frame(frame);
            }
            let now = Instant::now();
            if now >= deadline {
                return Recv::Timeout;
            }
            self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1)))).unwrap();
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Recv::Closed,
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => return Recv::Timeout,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Recv::Closed,
            }
        }
    }

    fn recv_frame(&mut self, what: &str) -> Vec<u8> {
        match self.recv(IO_TIMEOUT) {
            Recv::Frame(frame) => frame,
            Recv::Timeout => panic!("{what}: no frame within {IO_TIMEOUT:?}"),
            Recv::Closed => panic!("{what}: connection closed"),
        }
    }

    /// Reads until the server closes the connection (EOF or reset) and returns
    /// every byte received before that; panics if it stays open `within`.
    fn read_until_closed(&mut self, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        let mut received = std::mem::take(&mut self.rbuf);
        loop {
            let now = Instant::now();
            assert!(now < deadline, "connection not closed by the server within {within:?}; received {received:?}");
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return received,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {
                    panic!("connection not closed by the server within {within:?}; received {received:?}")
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return received,
            }
        }
    }
}

/// Sends a ConnectRequest; the ConnectResponse, or None if the server closed
/// the connection without one.
fn try_handshake(
    port: u16,
    last_zxid: i64,
    timeout_ms: i32,
    session_id: i64,
    password: &[u8],
) -> std::io::Result<(Conn, Option<ConnectResponse>)> {
    let mut conn = Conn::open(port);
    if conn.send(&connect_request(last_zxid, timeout_ms, session_id, password)).is_err() {
        return Ok((conn, None));
    }
    match conn.recv(IO_TIMEOUT) {
        Recv::Frame(body) => {
            let response = parse_connect_response(&body);
            Ok((conn, Some(response)))
        }
        Recv::Closed => Ok((conn, None)),
        Recv::Timeout => Err(std::io::Error::new(ErrorKind::TimedOut, "no ConnectResponse")),
    }
}

fn handshake(port: u16, last_zxid: i64, timeout_ms: i32, session_id: i64, password: &[u8]) -> (Conn, Option<ConnectResponse>) {
    try_handshake(port, last_zxid, timeout_ms, session_id, password).expect("handshake: neither response nor close")
}

fn four_letter_word(port: u16, word: &str) -> String {
    let mut conn = Conn::open(port);
    conn.send_raw(word.as_bytes()).expect("send four-letter word");
    String::from_utf8(conn.read_until_closed(IO_TIMEOUT)).expect("utf-8 four-letter-word reply")
}

// ---------------------------------------------------------------------------
// Session client
// ---------------------------------------------------------------------------

struct Session {
    conn: Conn,
    id: i64,
    password: Vec<u8>,
    timeout_ms: i32,
    xid: i32,
    last_zxid: i64,
    events: VecDeque<Event>,
    last_ping: Instant,
}

impl Session {
    fn connect(port: u16) -> Session {
        Session::connect_with_timeout(port, 30000)
    }

    fn connect_with_timeout(port: u16, timeout_ms: i32) -> Session {
        Session::resume(port, 0, &[0; 16], 0, timeout_ms)
    }

    /// Connects with the given credentials and asserts the session is accepted.
    fn resume(port: u16, session_id: i64, password: &[u8], last_zxid: i64, timeout_ms: i32) -> Session {
        let (conn, response) = handshake(port, last_zxid, timeout_ms, session_id, password);
        let response = response.expect("server closed the connection instead of answering the ConnectRequest");
        assert!(response.timeout_ms > 0, "session refused: {response:?}");
        assert_ne!(response.session_id, 0, "session refused: {response:?}");
        if session_id != 0 {
            assert_eq!(response.session_id, session_id, "resumed session id");
        }
        Session {
            conn,
            id: response.session_id,
            password: response.password,
            timeout_ms: response.timeout_ms,
            xid: 0,
            last_zxid,
            events: VecDeque::new(),
            last_ping: Instant::now(),
        }
    }

    fn next_xid(&mut self) -> i32 {
        self.xid += 1;
        self.xid
    }

    /// Sends one request with `xid` and waits for its reply; watch events that
    /// arrive first are queued, ping replies skipped.
    fn call_xid(&mut self, xid: i32, opcode: i32, body: &[u8]) -> Reply {
        let mut packet = request_header(xid, opcode);
        packet.extend_from_slice(body);
        self.conn.send(&packet).expect("send request");
        loop {
            let reply = parse_reply(&self.conn.recv_frame(&format!("reply to opcode {opcode} xid {xid}")));
            match reply.xid {
                XID_WATCH_EVENT => self.events.push_back(parse_event(&reply)),
                XID_PING if xid != XID_PING => {}
                _ => {
                    assert_eq!(reply.xid, xid, "reply xid for opcode {opcode}");
                    if reply.zxid > self.last_zxid {
                        self.last_zxid = reply.zxid;
                    }
                    return reply;
                }
            }
        }
    }

    fn call(&mut self, opcode: i32, body: &[u8]) -> Reply {
        let xid = self.next_xid();
        self.call_xid(xid, opcode, body)
    }

    fn create_full(&mut self, opcode: i32, path: &str, data: &[u8], acl: &[(i32, &str, &str)], flags: i32, ttl: Option<i64>) -> i32 {
        let mut body = Enc::default().str(path).buf(data).acl(acl).i32(flags);
        if let Some(ttl) = ttl {
            body = body.i64(ttl);
        }
        self.call(opcode, &body.0).err
    }

    fn create(&mut self, path: &str, data: &[u8], flags: i32) -> i32 {
        self.create_full(OP_CREATE, path, data, &[(PERMS_ALL, "world", "anyone")], flags, None)
    }

    fn exists(&mut self, path: &str, watch: bool) -> i32 {
        self.call(OP_EXISTS, &Enc::default().str(path).bool(watch).0).err
    }

    /// (err, data)
    fn get_data(&mut self, path: &str, watch: bool) -> (i32, Vec<u8>) {
        let reply = self.call(OP_GET_DATA, &Enc::default().str(path).bool(watch).0);
        if reply.err != OK {
            return (reply.err, Vec::new());
        }
        (reply.err, Dec::new(&reply.body).buf())
    }

    fn set_data(&mut self, path: &str, data: &[u8]) -> i32 {
        self.call(OP_SET_DATA, &Enc::default().str(path).buf(data).i32(-1).0).err
    }

    fn delete(&mut self, path: &str) -> i32 {
        self.call(OP_DELETE, &Enc::default().str(path).i32(-1).0).err
    }

    fn ping(&mut self) {
        self.conn.send(&request_header(XID_PING, OP_PING)).expect("send ping");
        self.last_ping = Instant::now();
    }

    /// The next watch event within `within`, pinging every 150 ms meanwhile.
    fn wait_event(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if now.duration_since(self.last_ping) >= Duration::from_millis(150) {
                self.ping();
            }
            match self.conn.recv(Duration::from_millis(50).min(deadline - now)) {
                Recv::Frame(frame) => {
                    let reply = parse_reply(&frame);
                    match reply.xid {
                        XID_WATCH_EVENT => self.events.push_back(parse_event(&reply)),
                        XID_PING => assert_eq!(reply.err, OK, "ping reply"),
                        other => panic!("unexpected reply xid {other} while waiting for an event: {reply:?}"),
                    }
                }
                Recv::Timeout => {}
                Recv::Closed => panic!("connection closed while waiting for a watch event"),
            }
        }
    }

    /// Sends closeSession and asserts the reply and the server-side close.
    fn close(mut self) {
        let xid = self.next_xid();
        let reply = self.call_xid(xid, OP_CLOSE_SESSION, &[]);
        assert_eq!(reply.err, OK, "closeSession reply");
        let rest = self.conn.read_until_closed(IO_TIMEOUT);
        assert!(rest.is_empty(), "bytes after the closeSession reply: {rest:?}");
    }
}

/// Polls `check` (with pings on `session`) until it holds or `within` passes.
fn eventually(session: &mut Session, within: Duration, mut check: impl FnMut(&mut Session) -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check(session) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn oversized_frame_closes_connection_server_survives() {
    let mut server = Server::start("oversized", Opts { jute_maxbuffer: Some(1024), ..Opts::default() });
    let ten_mb: i32 = 10 * 1024 * 1024;

    // As the first frame, before any handshake.
    let mut conn = Conn::open(server.port);
    conn.send_raw(&ten_mb.to_be_bytes()).unwrap();
    let received = conn.read_until_closed(IO_TIMEOUT);
    assert!(received.is_empty(), "server answered an oversized first frame: {received:?}");

    // Inside an established session.
    let mut session = Session::connect(server.port);
    assert_eq!(session.create("/before", b"x", 0), OK);
    session.conn.send_raw(&ten_mb.to_be_bytes()).unwrap();
    let received = session.conn.read_until_closed(IO_TIMEOUT);
    assert!(received.is_empty(), "server answered an oversized frame: {received:?}");

    // A negative length is refused the same way.
    let mut conn = Conn::open(server.port);
    conn.send_raw(&(-5i32).to_be_bytes()).unwrap();
    assert!(conn.read_until_closed(IO_TIMEOUT).is_empty());

    // A fresh client still works, with frames below the limit.
    let mut fresh = Session::connect(server.port);
    assert_eq!(fresh.get_data("/before", false), (OK, b"x".to_vec()));
    assert_eq!(fresh.set_data("/before", &[7u8; 512]), OK);
    assert_eq!(fresh.get_data("/before", false), (OK, vec![7u8; 512]));
    fresh.close();
    server.assert_serving();
}

#[test]
fn garbage_and_truncated_frames() {
    let mut server = Server::start("garbage", Opts::default());

    // Random bytes as the first frame: too short to be a ConnectRequest.
    let mut conn = Conn::open(server.port);
    conn.send(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03]).unwrap();
    let received = conn.read_until_closed(IO_TIMEOUT);
    assert!(received.is_empty(), "server answered a garbage first frame: {received:?}");

    // A ConnectRequest whose password length runs past the frame.
    let mut conn = Conn::open(server.port);
    conn.send(&Enc::default().i32(0).i64(0).i32(30000).i64(0).i32(1000).bytes(&[1, 2, 3]).0).unwrap();
    assert!(conn.read_until_closed(IO_TIMEOUT).is_empty());
    server.assert_serving();

    // After a valid handshake, a truncated request header closes the connection.
    let mut session = Session::connect(server.port);
    session.conn.send(&[0, 0, 1]).unwrap();
    let received = session.conn.read_until_closed(IO_TIMEOUT);
    assert!(received.is_empty(), "server answered a truncated header: {received:?}");
    server.assert_serving();

    // A valid header with a garbled body: MARSHALLINGERROR, connection kept.
    let mut session = Session::connect(server.port);
    let reply = session.call_xid(7, OP_GET_DATA, &Enc::default().i32(0x7fff_ffff).0);
    assert_eq!((reply.xid, reply.err), (7, MARSHALLINGERROR));
    assert!(reply.body.is_empty(), "error reply carries a body: {:?}", reply.body);
    assert_eq!(session.create("/still-works", b"", 0), OK);
    assert_eq!(session.exists("/still-works", false), OK);

    assert_eq!(session.get_data("/still-works", false), (OK, Vec::new()));

    // An unknown opcode: UNIMPLEMENTED. (What happens to the connection
    // afterwards is checked by `unknown_opcode_closes_connection_keeps_session`.)
    let reply = session.call_xid(8, 999, &Enc::default().str("/").0);
    assert_eq!((reply.xid, reply.err), (8, UNIMPLEMENTED));
    assert!(reply.body.is_empty(), "error reply carries a body: {:?}", reply.body);
    drop(session);

    server.assert_serving();
}

/// ZooKeeper's UnimplementedRequestProcessor answers an unknown opcode with
/// UNIMPLEMENTED and then calls `cnxn.sendCloseSession()`, which closes the
/// connection (not the session: it can be resumed).
#[test]
fn unknown_opcode_closes_connection_keeps_session() {
    let mut server = Server::start("unknownop", Opts::default());
    let mut session = Session::connect(server.port);
    assert_eq!(session.create("/eph", b"", EPHEMERAL), OK);
    let (id, password) = (session.id, session.password.clone());
    let reply = session.call_xid(5, 999, &[]);
    assert_eq!((reply.xid, reply.err), (5, UNIMPLEMENTED));
    let received = session.conn.read_until_closed(IO_TIMEOUT);
    assert!(received.is_empty(), "bytes after the UNIMPLEMENTED reply: {received:?}");
    // The session itself survives and can be resumed.
    let mut resumed = Session::resume(server.port, id, &password, session.last_zxid, 30000);
    assert_eq!(resumed.exists("/eph", false), OK);
    resumed.close();
    server.assert_serving();
}

#[test]
fn request_before_handshake() {
    let mut server = Server::start("prehandshake", Opts::default());
    let mut conn = Conn::open(server.port);
    // RequestHeader{xid 1, getData} + GetDataRequest{"/", false}: 14 bytes,
    // shorter than any ConnectRequest (which needs at least 28).
    let mut packet = request_header(1, OP_GET_DATA);
    packet.extend_from_slice(&Enc::default().str("/").bool(false).0);
    conn.send(&packet).unwrap();
    let received = conn.read_until_closed(IO_TIMEOUT);
    assert!(received.is_empty(), "server answered a request sent before the handshake: {received:?}");
    server.assert_serving();
}

#[test]
fn max_client_cnxns_per_ip() {
    let mut server = Server::start("maxcnxns", Opts { max_client_cnxns: Some(3), ..Opts::default() });
    // Let the readiness probe's connection be fully retired first.
    sleep(Duration::from_millis(500));
    let first = Session::connect(server.port);
    let mut second = Session::connect(server.port);
    let mut third = Session::connect(server.port);

    // The fourth connection is closed without a ConnectResponse.
    let mut fourth = Conn::open(server.port);
    let _ = fourth.send(&connect_request(0, 30000, 0, &[0; 16]));
    let received = fourth.read_until_closed(IO_TIMEOUT);
    assert!(received.is_empty(), "4th connection got an answer: {received:?}");
    drop(fourth);

    // The three admitted sessions keep working.
    assert_eq!(second.exists("/", false), OK);
    assert_eq!(third.exists("/", false), OK);

    // Closing one (just the socket) makes room for a new one.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut replacement = loop {
        match handshake(server.port, 0, 30000, 0, &[0; 16]) {
            (conn, Some(response)) => {
                assert!(response.timeout_ms > 0 && response.session_id != 0, "{response:?}");
                break conn;
            }
            (_, None) => {
                assert!(Instant::now() < deadline, "no room for a new connection after closing one");
                sleep(Duration::from_millis(50));
            }
        }
    };
    replacement.send(&[request_header(1, OP_EXISTS), Enc::default().str("/").bool(false).0].concat()).unwrap();
    let reply = parse_reply(&replacement.recv_frame("exists on the replacement connection"));
    assert_eq!((reply.xid, reply.err), (1, OK));

    // And it is full again.
    let mut fifth = Conn::open(server.port);
    let _ = fifth.send(&connect_request(0, 30000, 0, &[0; 16]));
    assert!(fifth.read_until_closed(IO_TIMEOUT).is_empty(), "a 4th concurrent connection was admitted");
    drop((second, third, replacement));
    // Closes are noticed asynchronously: give the server a moment to count them.
    sleep(Duration::from_millis(500));
    server.assert_serving();
}

#[test]
fn session_resume_and_wrong_password() {
    let mut server = Server::start("resume", Opts::default());
    let mut session = Session::connect(server.port);
    assert_eq!(session.password.len(), 16, "session password length");
    assert_eq!(session.create("/eph", b"mine", EPHEMERAL), OK);
    let (id, password, last_zxid) = (session.id, session.password.clone(), session.last_zxid);
    assert!(last_zxid > 0);
    drop(session); // TCP close only, no closeSession

    let mut resumed = Session::resume(server.port, id, &password, last_zxid, 30000);
    assert_eq!(resumed.id, id);
    assert_eq!(resumed.password, password, "a resumed session keeps its password");
    assert_eq!(resumed.get_data("/eph", false), (OK, b"mine".to_vec()));
    // The ephemeral is still owned by this session: a second create clashes.
    assert_eq!(resumed.create("/eph", b"", EPHEMERAL), NODEEXISTS);
    let last_zxid = resumed.last_zxid;
    drop(resumed);

    let mut wrong = password.clone();
    wrong[0] ^= 0xff;
    let (mut conn, response) = handshake(server.port, last_zxid, 30000, id, &wrong);
    let response = response.expect("a wrong password is answered with a ConnectResponse");
    assert_eq!((response.protocol_version, response.timeout_ms, response.session_id), (0, 0, 0), "{response:?}");
    assert_eq!(response.password, vec![0u8; 16]);
    assert!(conn.read_until_closed(IO_TIMEOUT).is_empty(), "bytes after the refusal");

    // The refusal did not harm the session itself.
    let mut again = Session::resume(server.port, id, &password, last_zxid, 30000);
    assert_eq!(again.exists("/eph", false), OK);
    again.close();
    let mut observer = Session::connect(server.port);
    assert_eq!(observer.exists("/eph", false), NONODE);
    observer.close();
    server.assert_serving();
}

#[test]
fn session_expiry_removes_ephemerals_and_fires_watches() {
    let mut server = Server::start(
        "expiry",
        Opts {
            tick_ms: Some(200),
            min_session_timeout_ms: Some(400),
            max_session_timeout_ms: Some(1000),
            ..Opts::default()
        },
    );
    let mut a = Session::connect_with_timeout(server.port, 400);
    assert_eq!(a.timeout_ms, 400);
    assert_eq!(a.create("/e", b"", EPHEMERAL), OK);
    let (a_id, a_password, a_zxid) = (a.id, a.password.clone(), a.last_zxid);

    let mut b = Session::connect_with_timeout(server.port, 1000);
    assert_eq!(b.timeout_ms, 1000);
    assert_eq!(b.exists("/e", true), OK);

    let dropped = Instant::now();
    drop(a);
    let event = b.wait_event(Duration::from_secs(3)).expect("no NodeDeleted for /e within 3 s of dropping A");
    assert_eq!(event, Event { event_type: EVENT_NODE_DELETED, state: STATE_SYNC_CONNECTED, path: "/e".into() });
    assert!(dropped.elapsed() >= Duration::from_millis(300), "expired before its timeout: {:?}", dropped.elapsed());
    assert_eq!(b.exists("/e", false), NONODE);

    let (mut conn, response) = handshake(server.port, a_zxid, 400, a_id, &a_password);
    let response = response.expect("an expired session is answered with a ConnectResponse");
    assert_eq!((response.timeout_ms, response.session_id), (0, 0), "{response:?}");
    assert!(conn.read_until_closed(IO_TIMEOUT).is_empty());

    // B, kept alive by its pings, is still there.
    assert_eq!(b.exists("/", false), OK);
    b.close();
    server.assert_serving();
}

#[test]
fn close_session_removes_ephemerals_immediately() {
    let mut server = Server::start("closesession", Opts::default());
    let mut a = Session::connect(server.port);
    assert_eq!(a.create("/e", b"", EPHEMERAL), OK);
    let mut b = Session::connect(server.port);
    assert_eq!(b.exists("/e", true), OK);

    let reply = a.call_xid(42, OP_CLOSE_SESSION, &[]);
    assert_eq!((reply.xid, reply.err), (42, OK));
    assert!(reply.body.is_empty());
    assert!(a.conn.read_until_closed(IO_TIMEOUT).is_empty(), "bytes after the closeSession reply");

    // Well before A's 30 s timeout.
    let event = b.wait_event(Duration::from_secs(2)).expect("no NodeDeleted for /e after closeSession");
    assert_eq!(event, Event { event_type: EVENT_NODE_DELETED, state: STATE_SYNC_CONNECTED, path: "/e".into() });
    assert_eq!(b.exists("/e", false), NONODE);

    // The closed session cannot be resumed.
    let (mut conn, response) = handshake(server.port, b.last_zxid, 30000, a.id, &a.password);
    let response = response.expect("a closed session is answered with a ConnectResponse");
    assert_eq!((response.timeout_ms, response.session_id), (0, 0), "{response:?}");
    assert!(conn.read_until_closed(IO_TIMEOUT).is_empty());
    b.close();
    server.assert_serving();
}

#[test]
fn set_watches_after_reconnect() {
    let mut server = Server::start("setwatches", Opts::default());
    let mut first = Session::connect(server.port);
    assert_eq!(first.create("/w", b"a", 0), OK);
    assert_eq!(first.create("/quiet", b"q", 0), OK);
    assert_eq!(first.get_data("/w", true), (OK, b"a".to_vec()));
    assert_eq!(first.get_data("/quiet", true), (OK, b"q".to_vec()));
    let (id, password, seen) = (first.id, first.password.clone(), first.last_zxid);
    drop(first);

    let mut other = Session::connect(server.port);
    assert_eq!(other.set_data("/w", b"b"), OK);
    assert!(other.last_zxid > seen);

    let mut first = Session::resume(server.port, id, &password, seen, 30000);
    let body = Enc::default().i64(seen).strs(&["/w", "/quiet"]).strs(&[]).strs(&[]).0;
    let reply = first.call_xid(XID_SET_WATCHES, OP_SET_WATCHES, &body);
    assert_eq!(reply.err, OK);
    // The event for the change it missed comes at once (before the reply).
    assert_eq!(
        first.events.pop_front(),
        Some(Event { event_type: EVENT_NODE_DATA_CHANGED, state: STATE_SYNC_CONNECTED, path: "/w".into() })
    );
    assert!(first.events.is_empty(), "unexpected events: {:?}", first.events);

    // The unchanged node's watch was re-registered: it fires on the next change.
    assert_eq!(other.set_data("/quiet", b"r"), OK);
    let event = first.wait_event(Duration::from_secs(3)).expect("re-registered watch did not fire");
    assert_eq!(event, Event { event_type: EVENT_NODE_DATA_CHANGED, state: STATE_SYNC_CONNECTED, path: "/quiet".into() });
    // And /w's watch was consumed by the immediate event, not registered again.
    assert_eq!(other.set_data("/w", b"c"), OK);
    assert_eq!(first.wait_event(Duration::from_millis(500)), None);
    first.close();
    other.close();
    server.assert_serving();
}

#[test]
fn last_zxid_seen_ahead_is_refused() {
    let mut server = Server::start("zxidahead", Opts::default());
    let (mut conn, response) = handshake(server.port, 1 << 40, 30000, 0, &[0; 16]);
    assert_eq!(response, None, "a client ahead of the server was answered");
    assert!(conn.read_until_closed(IO_TIMEOUT).is_empty());
    server.assert_serving();
}

#[test]
fn negotiated_timeout_is_clamped() {
    let mut server = Server::start("clamp", Opts::default());
    let low = Session::connect_with_timeout(server.port, 1);
    assert_eq!(low.timeout_ms, 4000, "1 ms is raised to 2 x tickTime");
    let high = Session::connect_with_timeout(server.port, 1_000_000_000);
    assert_eq!(high.timeout_ms, 40000, "10^9 ms is lowered to 20 x tickTime");
    let inside = Session::connect_with_timeout(server.port, 12345);
    assert_eq!(inside.timeout_ms, 12345, "a timeout inside the bounds is kept");
    low.close();
    high.close();
    inside.close();
    server.assert_serving();
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut server = Server::start("sigterm", Opts::default());
    let mut session = Session::connect(server.port);
    assert_eq!(session.create("/durable", b"d", 0), OK);
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "server still running 5 s after SIGTERM");
        sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM: {exit}");
    // Its clients see the connection end.
    let _ = session.conn.read_until_closed(IO_TIMEOUT);
}

#[test]
fn container_and_ttl_removed_by_server() {
    let mut server = Server::start(
        "containers",
        Opts { extended_types: true, container_check_interval_ms: Some(200), ..Opts::default() },
    );
    let world = [(PERMS_ALL, "world", "anyone")];
    let mut s = Session::connect(server.port);
    let started = Instant::now();
    assert_eq!(s.create_full(OP_CREATE_CONTAINER, "/never-used", b"", &world, CONTAINER, None), OK);
    assert_eq!(s.create_full(OP_CREATE_CONTAINER, "/c", b"", &world, CONTAINER, None), OK);
    assert_eq!(s.create("/c/child", b"", 0), OK);
    assert_eq!(s.create_full(OP_CREATE_TTL, "/t", b"", &world, PERSISTENT_WITH_TTL, Some(100)), OK);
    assert_eq!(s.exists("/t", false), OK);

    // A container with a child stays.
    sleep(Duration::from_millis(600));
    assert_eq!(s.exists("/c", false), OK, "a container with a child was removed");
    assert_eq!(s.delete("/c/child"), OK);

    assert!(
        eventually(&mut s, Duration::from_secs(3), |s| s.exists("/c", false) == NONODE),
        "emptied container still there after 3 s"
    );
    assert!(
        eventually(&mut s, Duration::from_secs(3), |s| s.exists("/t", false) == NONODE),
        "expired TTL node still there after 3 s"
    );
    // Several check intervals have passed: the never-used container stays.
    if let Some(rest) = Duration::from_millis(1200).checked_sub(started.elapsed()) {
        sleep(rest);
    }
    assert_eq!(s.exists("/never-used", false), OK, "a container that never had a child was removed");
    s.close();
    server.assert_serving();
}

#[test]
fn four_letter_words() {
    let mut default = Server::start("fourlw-default", Opts::default());
    assert_eq!(four_letter_word(default.port, "stat"), "stat is not executed because it is not in the whitelist.\n");
    assert_eq!(four_letter_word(default.port, "ruok"), "ruok is not executed because it is not in the whitelist.\n");
    let srvr = four_letter_word(default.port, "srvr");
    assert!(srvr.starts_with("Zookeeper version:"), "srvr: {srvr:?}");
    assert!(srvr.contains("\nMode: standalone\n"), "srvr: {srvr:?}");
    default.assert_serving();

    let mut all = Server::start("fourlw-all", Opts { whitelist_all: true, ..Opts::default() });
    assert_eq!(four_letter_word(all.port, "ruok"), "imok");
    let stat = four_letter_word(all.port, "stat");
    assert!(stat.starts_with("Zookeeper version:"), "stat: {stat:?}");
    all.assert_serving();
}

#[test]
fn super_digest_bypasses_acls() {
    let mut server = Server::start(
        "superdigest",
        Opts { super_digest: Some("super:g9oN2HttPfn8MMWJZ2r45Np/LIA="), ..Opts::default() },
    );
    let read_only_for_someone = [(PERMS_READ, "digest", "someone:2jmj7l5rSw0yVb/vlWAYkK/YBwk=")];
    let mut creator = Session::connect(server.port);
    assert_eq!(creator.create_full(OP_CREATE, "/locked", b"v0", &read_only_for_someone, 0, None), OK);

    // Without auth: no access.
    assert_eq!(creator.set_data("/locked", b"v1"), NOAUTH);
    assert_eq!(creator.get_data("/locked", false).0, NOAUTH);
    creator.close();

    // A wrong super password gives no super powers.
    let mut wrong = Session::connect(server.port);
    let reply = wrong.call_xid(XID_AUTH, OP_AUTH, &Enc::default().i32(0).str("digest").buf(b"super:wrong").0);
    assert_eq!((reply.xid, reply.err), (XID_AUTH, OK));
    assert_eq!(wrong.set_data("/locked", b"v1"), NOAUTH);
    wrong.close();

    // super:superpw bypasses the ACL.
    let mut admin = Session::connect(server.port);
    let reply = admin.call_xid(XID_AUTH, OP_AUTH, &Enc::default().i32(0).str("digest").buf(b"super:superpw").0);
    assert_eq!((reply.xid, reply.err), (XID_AUTH, OK));
    assert_eq!(admin.set_data("/locked", b"v1"), OK);
    assert_eq!(admin.get_data("/locked", false), (OK, b"v1".to_vec()));
    admin.close();

    // An unknown auth scheme: AUTHFAILED, then the connection is closed.
    let mut bad = Session::connect(server.port);
    let reply = bad.call_xid(XID_AUTH, OP_AUTH, &Enc::default().i32(0).str("nosuchscheme").buf(b"x").0);
    assert_eq!((reply.xid, reply.err), (XID_AUTH, AUTHFAILED));
    assert!(bad.conn.read_until_closed(IO_TIMEOUT).is_empty());
    let _ = bad.conn.stream.shutdown(Shutdown::Both);
    server.assert_serving();
}

/// A client may pipeline: every read answers with exactly the writes its
/// connection sent before it (none of those sent after), replies come in
/// request order, and a read sees every write another connection was already
/// answered for. (warden parks such reads instead of pausing the reader.)
#[test]
fn pipelined_reads_see_exactly_the_writes_sent_before_them() {
    let mut server = Server::start("pipelined", Opts::default());
    let mut session = Session::connect(server.port);
    assert_eq!(session.create("/pipe", b"0", 0), OK);

    // (xid, opcode, expected (err, data, version)) for each request sent.
    let mut expected: Vec<(i32, i32, i32, Vec<u8>, i32)> = Vec::new();
    let mut batch = Vec::new();
    let (mut data, mut version) = (b"0".to_vec(), 0);
    let mut rng = Rng::new(0);
    for i in 0..600 {
        let xid = session.next_xid();
        let (opcode, body) = match rng.below(10) {
            0..=3 => {
                data = format!("v{i}").into_bytes();
                version += 1;
                (OP_SET_DATA, Enc::default().str("/pipe").buf(&data).i32(-1).0)
            }
            4..=7 => (OP_GET_DATA, Enc::default().str("/pipe").bool(false).0),
            _ => (OP_EXISTS, Enc::default().str("/pipe").bool(false).0),
        };
        let mut packet = request_header(xid, opcode);
        packet.extend_from_slice(&body);
        batch.extend_from_slice(&frame(&packet));
        expected.push((xid, opcode, OK, data.clone(), version));
    }
    session.conn.send_raw(&batch).expect("send the pipelined batch");
    for (xid, opcode, err, data, version) in expected {
        let reply = parse_reply(&session.conn.recv_frame("pipelined reply"));
        assert_eq!((reply.xid, reply.err), (xid, err), "reply order (opcode {opcode})");
        let mut body = Dec::new(&reply.body);
        let got_data = if opcode == OP_GET_DATA { Some(body.buf()) } else { None };
        // Every reply here carries a Stat: czxid mzxid ctime mtime version ...
        let stat = body.take(36);
        let got_version = i32::from_be_bytes(stat[32..36].try_into().unwrap());
        assert_eq!(got_version, version, "xid {xid} opcode {opcode}: version seen");
        if let Some(got) = got_data {
            assert_eq!(got, data, "xid {xid}: getData sees exactly the writes sent before it");
        }
    }

    // Across connections (possibly on other cores): once a write is
    // answered, a read sent afterwards on any connection sees it.
    let mut other = Session::connect(server.port);
    for i in 0..50 {
        let value = format!("w{i}").into_bytes();
        assert_eq!(other.set_data("/pipe", &value), OK);
        assert_eq!(session.get_data("/pipe", false), (OK, value));
    }
    other.close();
    session.close();
    server.assert_serving();
}
