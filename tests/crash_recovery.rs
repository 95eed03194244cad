//! Crash recovery of the real `warden` binary: what a client was told is
//! durable must survive SIGKILL, and a clean or unclean restart must keep the
//! zxid sequence, the sessions and their ephemerals (and expire the sessions
//! whose clients are gone).
//!
//! Every test starts its own server on loopback with its own temporary data
//! directory and restarts it on that same directory; the client is a minimal
//! ZooKeeper protocol client (std only, after tests/server_behaviour.rs).
//! Every wait is bounded.
//!
//! Knobs for `acknowledged_writes_survive_sigkill`:
//! * `CRASH_CYCLES` (default 20): kill/restart cycles.
//! * `CRASH_SEED` (default: from the clock, printed): replays a run's choices
//!   (stream lengths, kill moments, ops, data). Timing still varies.
//!
//! `CRASH_RECOVERY_TARGET=apache` runs the same tests against Apache ZooKeeper
//! 3.8 (the Debian package's jars in /usr/share/java), to check that the
//! expectations are ZooKeeper's (the exit status after SIGTERM is not checked
//! there: the JVM exits with 143).
//!
//! With `CRASH_KEEP_DATA=1` a failing test keeps its data directory (the path
//! is printed) so the log and snapshots can be inspected; by default every
//! directory is removed (preallocated log segments are large).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::{apache_classpath, frame, free_port, Enc};
use warden::rng::Rng;

const IO_TIMEOUT: Duration = Duration::from_secs(5);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

const OP_CREATE: i32 = 1;
const OP_DELETE: i32 = 2;
const OP_EXISTS: i32 = 3;
const OP_GET_DATA: i32 = 4;
const OP_SET_DATA: i32 = 5;
const OP_PING: i32 = 11;
const OP_GET_CHILDREN2: i32 = 12;
const OP_MULTI: i32 = 14;
const OP_CLOSE_SESSION: i32 = -11;
const OP_ERROR: i32 = -1;

const XID_WATCH_EVENT: i32 = -1;
const XID_PING: i32 = -2;

const OK: i32 = 0;
const NONODE: i32 = -101;
const BADVERSION: i32 = -103;
const NODEEXISTS: i32 = -110;

const EPHEMERAL: i32 = 1;
const PERMS_ALL: i32 = 31;

// ---------------------------------------------------------------------------
// Server process, restartable on the same data directory
// ---------------------------------------------------------------------------

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn apache_target() -> bool {
    std::env::var("CRASH_RECOVERY_TARGET").map(|v| v == "apache").unwrap_or(false)
}

struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    tick_ms: u32,
    max_session_timeout_ms: u32,
    snap_count: Option<u64>,
    pre_alloc_kib: Option<u64>,
    starts: usize,
}

impl Server {
    /// A server (not yet started) with its own temp dir.
    fn new(name: &str, tick_ms: u32, max_session_timeout_ms: u32) -> Server {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("warden-crash-{name}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("create temp dir");
        Server { child: None, port: 0, dir, tick_ms, max_session_timeout_ms, snap_count: None, pre_alloc_kib: None, starts: 0 }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("server-{}.log", self.starts))
    }

    /// Starts the server on `port` (or a fresh port) and waits until it
    /// accepts connections. Retries with fresh ports if the bind races.
    fn start(&mut self, port: Option<u16>) {
        assert!(self.child.is_none(), "server already running");
        let mut last_error = String::new();
        for attempt in 0..4 {
            let port = match (port, attempt) {
                (Some(p), 0 | 1) => p,
                _ => free_port(),
            };
            match self.try_start(port) {
                Ok(()) => return,
                Err(error) => last_error = error,
            }
            sleep(Duration::from_millis(200));
        }
        panic!("server did not start on {}: {last_error}", self.dir.display());
    }

    fn command(&self, port: u16) -> Command {
        if apache_target() {
            let cfg = format!(
                "tickTime={}\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nmaxSessionTimeout={}\n\
                 forceSync=yes\nadmin.enableServer=false\n",
                self.tick_ms,
                self.data_dir().display(),
                self.max_session_timeout_ms
            );
            let cfg_path = self.dir.join("zoo.cfg");
            std::fs::write(&cfg_path, cfg).unwrap();
            let mut command = Command::new("java");
            command.args(["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]);
            command.arg("-Dzookeeper.admin.enableServer=false");
            if let Some(n) = self.snap_count {
                command.arg(format!("-Dzookeeper.snapCount={n}"));
            }
            if let Some(kib) = self.pre_alloc_kib {
                command.arg(format!("-Dzookeeper.preAllocSize={kib}"));
            }
            command.args(["-cp", &apache_classpath(), "org.apache.zookeeper.server.ZooKeeperServerMain"]);
            command.arg(&cfg_path);
            return command;
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
        command.arg("server");
        command.args(["--client-port", &port.to_string(), "--client-port-address", "127.0.0.1"]);
        command.arg("--data-dir").arg(self.data_dir());
        command.args(["--tick-time", &self.tick_ms.to_string()]);
        command.args(["--max-session-timeout", &self.max_session_timeout_ms.to_string()]);
        command.args(["--force-sync", "yes", "--log-level", "info"]);
        if let Some(n) = self.snap_count {
            command.args(["--snap-count", &n.to_string()]);
        }
        if let Some(kib) = self.pre_alloc_kib {
            command.args(["--pre-alloc-size", &kib.to_string()]);
        }
        command
    }

    fn try_start(&mut self, port: u16) -> Result<(), String> {
        self.starts += 1;
        let log = File::create(self.log_path()).expect("create log file");
        let mut command = self.command(port);
        command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = command.spawn().map_err(|e| format!("spawn: {e}"))?;
        self.child = Some(child);
        self.port = port;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                return Err(format!("exited early with {status}; log:\n{}", self.log_tail()));
            }
            // Ready once the port accepts and, for warden, once this very
            // process says it serves: a port accepting could be another
            // test's server that took it meanwhile (warden binds with
            // SO_REUSEPORT), while ours exits with "cannot bind".
            let serving = apache_target() || self.log_tail().contains("warden serving");
            if serving && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                self.sigkill();
                return Err(format!("port {port} not accepting after {READY_TIMEOUT:?}; log:\n{}", self.log_tail()));
            }
            sleep(Duration::from_millis(10));
        }
        if apache_target() {
            // ZooKeeper accepts before it serves: wait for a real handshake.
            loop {
                if let Ok((mut conn, Some(r))) = handshake(port, 0, 30000, 0, &[0; 16], Duration::from_secs(2)) {
                    if r.timeout_ms > 0 {
                        let _ = conn.send_raw(&request(1, OP_CLOSE_SESSION, &[]));
                        let _ = conn.recv(IO_TIMEOUT);
                        break;
                    }
                }
                if Instant::now() > deadline {
                    self.sigkill();
                    return Err("apache server never completed a handshake".into());
                }
                sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// SIGKILL, without waiting for anything in flight; reaps the process.
    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the exit.
    fn sigterm(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server still running {within:?} after SIGTERM; log:\n{}", self.log_tail());
            }
            sleep(Duration::from_millis(10));
        }
    }

    fn assert_running(&mut self) {
        let log = self.log_tail();
        let child = self.child.as_mut().expect("server running");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited with {status}; log:\n{log}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!("--- server log tail (start #{}, port {}) ---\n{}", self.starts, self.port, self.log_tail());
        }
        self.sigkill();
        if panicking && std::env::var_os("CRASH_KEEP_DATA").is_some() {
            eprintln!("data directory kept for inspection: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
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
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.p + n > self.b.len() {
            return Err(format!("short record: need {n} bytes at {} of {}", self.p, self.b.len()));
        }
        let out = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(out)
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bool(&mut self) -> Result<bool, String> {
        Ok(self.take(1)?[0] != 0)
    }
    fn buf(&mut self) -> Result<Vec<u8>, String> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(Vec::new());
        }
        Ok(self.take(n as usize)?.to_vec())
    }
    fn str(&mut self) -> Result<String, String> {
        String::from_utf8(self.buf()?).map_err(|e| format!("utf-8: {e}"))
    }
    fn stat(&mut self) -> Result<Stat, String> {
        Ok(Stat {
            czxid: self.i64()?,
            mzxid: self.i64()?,
            _ctime: self.i64()?,
            _mtime: self.i64()?,
            version: self.i32()?,
            cversion: self.i32()?,
            _aversion: self.i32()?,
            ephemeral_owner: self.i64()?,
            data_length: self.i32()?,
            num_children: self.i32()?,
            _pzxid: self.i64()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    czxid: i64,
    mzxid: i64,
    _ctime: i64,
    _mtime: i64,
    version: i32,
    cversion: i32,
    _aversion: i32,
    ephemeral_owner: i64,
    data_length: i32,
    num_children: i32,
    _pzxid: i64,
}

fn request(xid: i32, opcode: i32, body: &[u8]) -> Vec<u8> {
    let mut packet = Enc::default().i32(xid).i32(opcode).0;
    packet.extend_from_slice(body);
    frame(&packet)
}

#[derive(Debug, Clone)]
struct Reply {
    xid: i32,
    zxid: i64,
    err: i32,
    body: Vec<u8>,
}

fn parse_reply(frame: &[u8]) -> Result<Reply, String> {
    let mut d = Dec::new(frame);
    let (xid, zxid, err) = (d.i32()?, d.i64()?, d.i32()?);
    Ok(Reply { xid, zxid, err, body: frame[d.p..].to_vec() })
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

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn { stream, rbuf: Vec::new() })
    }

    fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
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
            if self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1)))).is_err() {
                return Recv::Closed;
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Recv::Closed,
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Recv::Timeout,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Recv::Closed,
            }
        }
    }
}

#[derive(Debug)]
struct ConnectResponse {
    timeout_ms: i32,
    session_id: i64,
    password: Vec<u8>,
}

/// Sends a ConnectRequest; the response, or None when the server closed the
/// connection without one. Err when the server neither answers nor closes.
fn handshake(
    port: u16,
    last_zxid: i64,
    timeout_ms: i32,
    session_id: i64,
    password: &[u8],
    within: Duration,
) -> Result<(Conn, Option<ConnectResponse>), String> {
    let mut conn = Conn::open(port).map_err(|e| format!("connect: {e}"))?;
    let body = Enc::default().i32(0).i64(last_zxid).i32(timeout_ms).i64(session_id).buf(password).bool(false).0;
    if conn.send_raw(&frame(&body)).is_err() {
        return Ok((conn, None));
    }
    match conn.recv(within) {
        Recv::Frame(body) => {
            let mut d = Dec::new(&body);
            let _protocol = d.i32()?;
            let response = ConnectResponse { timeout_ms: d.i32()?, session_id: d.i64()?, password: d.buf()? };
            Ok((conn, Some(response)))
        }
        Recv::Closed => Ok((conn, None)),
        Recv::Timeout => Err(format!("no ConnectResponse within {within:?}")),
    }
}

// ---------------------------------------------------------------------------
// Synchronous session
// ---------------------------------------------------------------------------

struct Session {
    conn: Conn,
    id: i64,
    password: Vec<u8>,
    xid: i32,
    last_zxid: i64,
    last_ping: Instant,
}

impl Session {
    fn connect(port: u16, last_zxid: i64, timeout_ms: i32) -> Session {
        Session::resume(port, 0, &[0; 16], last_zxid, timeout_ms)
    }

    /// Connects with the given credentials; panics unless the session is accepted.
    fn resume(port: u16, session_id: i64, password: &[u8], last_zxid: i64, timeout_ms: i32) -> Session {
        let (conn, response) = handshake(port, last_zxid, timeout_ms, session_id, password, READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("handshake (session {session_id:#x}, lastZxidSeen {last_zxid:#x}): {e}"));
        let response = response.unwrap_or_else(|| {
            panic!("server closed the connection instead of accepting session {session_id:#x} (lastZxidSeen {last_zxid:#x})")
        });
        assert!(
            response.timeout_ms > 0 && response.session_id != 0,
            "session {session_id:#x} refused (lastZxidSeen {last_zxid:#x}): {response:?}"
        );
        if session_id != 0 {
            assert_eq!(response.session_id, session_id, "resumed session id");
        }
        Session {
            conn,
            id: response.session_id,
            password: response.password,
            xid: 0,
            last_zxid,
            last_ping: Instant::now(),
        }
    }

    fn call(&mut self, opcode: i32, body: &[u8]) -> Reply {
        self.xid += 1;
        let xid = self.xid;
        self.conn.send_raw(&request(xid, opcode, body)).expect("send request");
        loop {
            let frame = match self.conn.recv(IO_TIMEOUT) {
                Recv::Frame(frame) => frame,
                Recv::Timeout => panic!("no reply to opcode {opcode} xid {xid} within {IO_TIMEOUT:?}"),
                Recv::Closed => panic!("connection closed awaiting the reply to opcode {opcode} xid {xid}"),
            };
            let reply = parse_reply(&frame).expect("reply header");
            match reply.xid {
                XID_WATCH_EVENT | XID_PING => {}
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

    /// (err, zxid of the reply)
    fn create(&mut self, path: &str, data: &[u8], flags: i32) -> (i32, i64) {
        let reply = self.call(OP_CREATE, &Enc::default().str(path).buf(data).acl(&[(PERMS_ALL, "world", "anyone")]).i32(flags).0);
        (reply.err, reply.zxid)
    }

    fn set_data(&mut self, path: &str, data: &[u8], version: i32) -> (i32, i64) {
        let reply = self.call(OP_SET_DATA, &Enc::default().str(path).buf(data).i32(version).0);
        (reply.err, reply.zxid)
    }

    fn exists(&mut self, path: &str) -> (i32, Option<Stat>) {
        let reply = self.call(OP_EXISTS, &Enc::default().str(path).bool(false).0);
        if reply.err != OK {
            return (reply.err, None);
        }
        (reply.err, Some(Dec::new(&reply.body).stat().expect("exists stat")))
    }

    fn get_data(&mut self, path: &str) -> (i32, Vec<u8>, Option<Stat>, i64) {
        let reply = self.call(OP_GET_DATA, &Enc::default().str(path).bool(false).0);
        if reply.err != OK {
            return (reply.err, Vec::new(), None, reply.zxid);
        }
        let mut d = Dec::new(&reply.body);
        let data = d.buf().expect("getData data");
        (reply.err, data, Some(d.stat().expect("getData stat")), reply.zxid)
    }

    /// Sends a ping if the last was more than `every` ago (reply skipped later).
    fn ping_if_due(&mut self, every: Duration) {
        if self.last_ping.elapsed() >= every {
            let _ = self.conn.send_raw(&request(XID_PING, OP_PING, &[]));
            self.last_ping = Instant::now();
        }
    }

    fn close(mut self) {
        let reply = self.call(OP_CLOSE_SESSION, &[]);
        assert_eq!(reply.err, OK, "closeSession");
    }
}

// ---------------------------------------------------------------------------
// The crash model
// ---------------------------------------------------------------------------

fn key_path(key: u64) -> String {
    format!("/crash/k{key}")
}

/// A node as the model knows it. zxids are known for acknowledged writes and
/// for nodes read back from the server; unknown (None) otherwise.
#[derive(Debug, Clone, PartialEq)]
struct NodeState {
    data: Vec<u8>,
    version: i32,
    czxid: Option<i64>,
    mzxid: Option<i64>,
}

#[derive(Debug, Clone)]
struct Observed {
    data: Vec<u8>,
    version: i32,
    czxid: i64,
    mzxid: i64,
}

fn matches(model: Option<&NodeState>, observed: Option<&Observed>) -> bool {
    match (model, observed) {
        (None, None) => true,
        (Some(m), Some(o)) => {
            m.data == o.data
                && m.version == o.version
                && m.czxid.is_none_or(|z| z == o.czxid)
                && m.mzxid.is_none_or(|z| z == o.mzxid)
        }
        _ => false,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create { key: u64, data: Vec<u8> },
    SetData { key: u64, data: Vec<u8>, version: i32 },
    Delete { key: u64, version: i32 },
    /// multi(create key data1, setData key data2 version 0)
    Multi { key: u64, data1: Vec<u8>, data2: Vec<u8> },
    /// multi(create key, setData missing): fails as a whole
    MultiFail { key: u64, missing: u64, data: Vec<u8> },
}

/// What a request's reply says: an error code, with the resulting version
/// for setData, or for a multi whether it committed.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Err(i32),
    SetOk { version: i32 },
    Multi { committed: bool },
}

impl Op {
    fn keys(&self) -> Vec<u64> {
        match self {
            Op::Create { key, .. } | Op::SetData { key, .. } | Op::Delete { key, .. } | Op::Multi { key, .. } => vec![*key],
            Op::MultiFail { key, missing, .. } => vec![*key, *missing],
        }
    }

    fn short(&self) -> String {
        let d = |data: &[u8]| String::from_utf8_lossy(&data[..data.len().min(24)]).into_owned();
        match self {
            Op::Create { key, data } => format!("create k{key} data={:?}.. ({} bytes)", d(data), data.len()),
            Op::SetData { key, data, version } => {
                format!("setData k{key} expect v{version} data={:?}.. ({} bytes)", d(data), data.len())
            }
            Op::Delete { key, version } => format!("delete k{key} expect v{version}"),
            Op::Multi { key, data1, data2 } => format!("multi(create k{key} {:?}.., setData v0 {:?}..)", d(data1), d(data2)),
            Op::MultiFail { key, missing, .. } => format!("multi(create k{key}, setData missing k{missing}) [must fail]"),
        }
    }

    fn encode(&self, xid: i32) -> Vec<u8> {
        let create = |e: Enc, key: u64, data: &[u8]| e.str(&key_path(key)).buf(data).acl(&[(PERMS_ALL, "world", "anyone")]).i32(0);
        let header = |e: Enc, op: i32| e.i32(op).bool(false).i32(-1);
        let end = |e: Enc| e.i32(-1).bool(true).i32(-1);
        match self {
            Op::Create { key, data } => request(xid, OP_CREATE, &create(Enc::default(), *key, data).0),
            Op::SetData { key, data, version } => {
                request(xid, OP_SET_DATA, &Enc::default().str(&key_path(*key)).buf(data).i32(*version).0)
            }
            Op::Delete { key, version } => request(xid, OP_DELETE, &Enc::default().str(&key_path(*key)).i32(*version).0),
            Op::Multi { key, data1, data2 } => {
                let e = create(header(Enc::default(), OP_CREATE), *key, data1);
                let e = header(e, OP_SET_DATA).str(&key_path(*key)).buf(data2).i32(0);
                request(xid, OP_MULTI, &end(e).0)
            }
            Op::MultiFail { key, missing, data } => {
                let e = create(header(Enc::default(), OP_CREATE), *key, data);
                let e = header(e, OP_SET_DATA).str(&key_path(*missing)).buf(b"never").i32(-1);
                request(xid, OP_MULTI, &end(e).0)
            }
        }
    }

    /// Applies to `state` as ZooKeeper would; `zxid` when known (acknowledged).
    /// Returns the outcome and whether a child of /crash was created.
    fn apply(&self, state: &mut BTreeMap<u64, NodeState>, zxid: Option<i64>) -> (Outcome, bool) {
        match self {
            Op::Create { key, data } => {
                if state.contains_key(key) {
                    return (Outcome::Err(NODEEXISTS), false);
                }
                state.insert(*key, NodeState { data: data.clone(), version: 0, czxid: zxid, mzxid: zxid });
                (Outcome::Err(OK), true)
            }
            Op::SetData { key, data, version } => match state.get_mut(key) {
                None => (Outcome::Err(NONODE), false),
                Some(node) if *version != -1 && node.version != *version => (Outcome::Err(BADVERSION), false),
                Some(node) => {
                    node.data = data.clone();
                    node.version += 1;
                    node.mzxid = zxid;
                    (Outcome::SetOk { version: node.version }, false)
                }
            },
            Op::Delete { key, version } => match state.get(key) {
                None => (Outcome::Err(NONODE), false),
                Some(node) if *version != -1 && node.version != *version => (Outcome::Err(BADVERSION), false),
                Some(_) => {
                    state.remove(key);
                    (Outcome::Err(OK), false)
                }
            },
            Op::Multi { key, data2, .. } => {
                if state.contains_key(key) {
                    return (Outcome::Multi { committed: false }, false);
                }
                state.insert(*key, NodeState { data: data2.clone(), version: 1, czxid: zxid, mzxid: zxid });
                (Outcome::Multi { committed: true }, true)
            }
            Op::MultiFail { key, missing, .. } => {
                let committed = !state.contains_key(key) && state.contains_key(missing);
                assert!(!committed, "model: MultiFail generated on an existing 'missing' node");
                (Outcome::Multi { committed: false }, false)
            }
        }
    }
}

/// The outcome a reply reports for `op`.
fn reply_outcome(op: &Op, reply: &Reply) -> Result<Outcome, String> {
    match op {
        Op::Multi { .. } | Op::MultiFail { .. } => {
            if reply.err != OK {
                // A multi that fails as a whole may also be reported in the header.
                return Ok(Outcome::Multi { committed: false });
            }
            let mut d = Dec::new(&reply.body);
            let mut committed = true;
            loop {
                let (op_type, done, err) = (d.i32()?, d.bool()?, d.i32()?);
                if done {
                    break;
                }
                match op_type {
                    OP_CREATE => {
                        d.str()?;
                    }
                    OP_SET_DATA => {
                        d.stat()?;
                    }
                    OP_DELETE => {}
                    OP_ERROR => {
                        // Any error result (0 = rolled back) means nothing committed.
                        let _code = d.i32()?;
                        let _ = err;
                        committed = false;
                    }
                    other => return Err(format!("unexpected op type {other} in a multi response")),
                }
            }
            Ok(Outcome::Multi { committed })
        }
        Op::SetData { .. } if reply.err == OK => Ok(Outcome::SetOk { version: Dec::new(&reply.body).stat()?.version }),
        _ => Ok(Outcome::Err(reply.err)),
    }
}

#[derive(Debug, Clone)]
struct Record {
    op: Op,
    /// The outcome the model predicts (all earlier ops of the stream applied).
    expected: Outcome,
    /// (outcome, zxid) once the reply arrived.
    acked: Option<(Outcome, i64)>,
}

/// One connection's writes in one cycle. Its keys are its own: no other
/// connection touches them, so per key the history is this stream's order.
struct Stream {
    index: usize,
    rng: Rng,
    /// The model with every issued op applied (what the server will have once
    /// everything issued commits).
    issued_state: BTreeMap<u64, NodeState>,
    /// The keys this stream owns at the start, with their state.
    baseline: BTreeMap<u64, NodeState>,
    records: Vec<Record>,
    next_key: u64,
    write_id: u64,
    tag: String,
    /// Reply problems (out of order, undecodable, outcome differs from the model).
    problems: Vec<String>,
    closed_by_server: bool,
}

impl Stream {
    fn data(&mut self) -> Vec<u8> {
        self.write_id += 1;
        let mut out = format!("{}-s{}-w{}|", self.tag, self.index, self.write_id).into_bytes();
        let extra = if self.rng.chance(150) { self.rng.between(200, 4000) } else { self.rng.between(0, 48) };
        let mut letters = self.rng.fork();
        out.extend((0..extra).map(|_| b'a' + letters.below(26) as u8));
        out
    }

    fn new_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    fn random_live(&mut self) -> Option<u64> {
        if self.issued_state.is_empty() {
            return None;
        }
        let n = self.rng.index(self.issued_state.len());
        self.issued_state.keys().nth(n).copied()
    }

    /// Generates the next op against the issued model and records it.
    fn next_op(&mut self) -> &Record {
        let live = self.issued_state.len();
        let roll = self.rng.below(100);
        let op = match self.random_live() {
            None => Op::Create { key: self.new_key(), data: self.data() },
            Some(key) => {
                let version = self.issued_state[&key].version;
                let delete_bias = if live > 150 { 25 } else { 0 };
                if roll < 30 - delete_bias.min(20) {
                    Op::Create { key: self.new_key(), data: self.data() }
                } else if roll < 58 {
                    let version = if self.rng.chance(150) { -1 } else { version };
                    Op::SetData { key, data: self.data(), version }
                } else if roll < 72 + delete_bias {
                    Op::Delete { key, version: if self.rng.chance(200) { -1 } else { version } }
                } else if roll < 88 + delete_bias.min(5) {
                    let key = self.new_key();
                    Op::Multi { key, data1: self.data(), data2: self.data() }
                } else if roll < 92 {
                    Op::SetData { key, data: self.data(), version: version + 7 }
                } else if roll < 96 {
                    let missing = self.new_key();
                    let key = self.new_key();
                    Op::MultiFail { key, missing, data: self.data() }
                } else if roll < 98 {
                    Op::Delete { key: self.new_key(), version: -1 }
                } else {
                    // Create an existing node: NODEEXISTS.
                    Op::Create { key, data: self.data() }
                }
            }
        };
        let (expected, _) = op.apply(&mut self.issued_state, None);
        self.records.push(Record { op, expected, acked: None });
        self.records.last().unwrap()
    }

    fn acked_count(&self) -> usize {
        self.records.iter().take_while(|r| r.acked.is_some()).count()
    }

    fn max_acked_zxid(&self) -> i64 {
        self.records.iter().filter_map(|r| r.acked.as_ref().map(|a| a.1)).max().unwrap_or(0)
    }

    /// Pipelines writes on `conn` until `stop_at` (or until the server dies),
    /// then drains the replies still in flight.
    fn run(&mut self, mut conn: Conn, stop_at: Instant) {
        let window = self.rng.between(4, 96) as usize;
        let hard_deadline = stop_at + Duration::from_secs(15);
        let mut xid = 0;
        let mut first_unacked = 0usize;
        let mut xids: VecDeque<i32> = VecDeque::new();
        loop {
            let now = Instant::now();
            let inflight = self.records.len() - first_unacked;
            if now < stop_at && inflight < window {
                // A burst of frames in one write, so the server sees many at once.
                let burst = self.rng.between(1, (window - inflight) as u64) as usize;
                let mut bytes = Vec::new();
                for _ in 0..burst {
                    xid += 1;
                    let frame = self.next_op().op.encode(xid);
                    bytes.extend_from_slice(&frame);
                    xids.push_back(xid);
                }
                if conn.send_raw(&bytes).is_err() {
                    self.closed_by_server = true;
                    return;
                }
            } else if now >= stop_at && inflight == 0 {
                return;
            } else if now > hard_deadline {
                self.problems.push(format!("stream {}: {inflight} replies still missing 15 s after the stream ended", self.index));
                return;
            }
            let mut wait = if now < stop_at { Duration::from_millis(1) } else { Duration::from_millis(100) };
            loop {
                match conn.recv(wait) {
                    Recv::Frame(frame) => {
                        // Drain what is already buffered, then go back to sending.
                        wait = Duration::ZERO;
                        let reply = match parse_reply(&frame) {
                            Ok(reply) => reply,
                            Err(e) => {
                                self.problems.push(format!("stream {}: undecodable reply: {e}", self.index));
                                return;
                            }
                        };
                        if reply.xid == XID_PING || reply.xid == XID_WATCH_EVENT {
                            continue;
                        }
                        let Some(expected_xid) = xids.pop_front() else {
                            self.problems.push(format!("stream {}: reply xid {} with nothing in flight", self.index, reply.xid));
                            return;
                        };
                        if reply.xid != expected_xid {
                            self.problems.push(format!(
                                "stream {}: reply xid {} but the oldest request in flight is xid {expected_xid}",
                                self.index, reply.xid
                            ));
                            return;
                        }
                        let record = &mut self.records[first_unacked];
                        match reply_outcome(&record.op, &reply) {
                            Ok(outcome) => {
                                if outcome != record.expected {
                                    self.problems.push(format!(
                                        "stream {} op #{first_unacked} {}: reply {outcome:?} (zxid {:#x}), model expected {:?}",
                                        self.index,
                                        record.op.short(),
                                        reply.zxid,
                                        record.expected
                                    ));
                                }
                                record.acked = Some((outcome, reply.zxid));
                            }
                            Err(e) => {
                                self.problems.push(format!("stream {}: undecodable reply body: {e}", self.index));
                                return;
                            }
                        }
                        first_unacked += 1;
                    }
                    Recv::Timeout => break,
                    Recv::Closed => {
                        self.closed_by_server = true;
                        return;
                    }
                }
            }
        }
    }
}

/// Reads /crash back: (children's state, /crash's stat, zxid of the
/// getChildren reply). Reads are pipelined.
fn read_crash_tree(session: &mut Session) -> (BTreeMap<u64, Observed>, Stat, i64, Vec<String>) {
    let reply = session.call(OP_GET_CHILDREN2, &Enc::default().str("/crash").bool(false).0);
    assert_eq!(reply.err, OK, "getChildren2 /crash after the restart (its create was acknowledged)");
    let mut d = Dec::new(&reply.body);
    let n = d.i32().unwrap();
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(d.str().unwrap());
    }
    let stat = d.stat().unwrap();
    let zxid = reply.zxid;
    let mut foreign = Vec::new();
    let mut keys = Vec::new();
    for name in &names {
        match name.strip_prefix('k').and_then(|k| k.parse::<u64>().ok()) {
            Some(key) => keys.push(key),
            None => foreign.push(name.clone()),
        }
    }
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(128) {
        let mut bytes = Vec::new();
        let first = session.xid + 1;
        for key in chunk {
            session.xid += 1;
            bytes.extend_from_slice(&request(session.xid, OP_GET_DATA, &Enc::default().str(&key_path(*key)).bool(false).0));
        }
        session.conn.send_raw(&bytes).expect("send getData batch");
        let mut i = 0;
        while i < chunk.len() {
            let frame = match session.conn.recv(IO_TIMEOUT) {
                Recv::Frame(frame) => frame,
                _ => panic!("no getData reply within {IO_TIMEOUT:?}"),
            };
            let reply = parse_reply(&frame).unwrap();
            if reply.xid == XID_PING || reply.xid == XID_WATCH_EVENT {
                continue;
            }
            assert_eq!(reply.xid, first + i as i32, "getData reply order");
            // A child listed but gone (NONODE) cannot happen: nobody else writes.
            assert_eq!(reply.err, OK, "getData {} (listed by getChildren)", key_path(chunk[i]));
            let mut d = Dec::new(&reply.body);
            let data = d.buf().unwrap();
            let stat = d.stat().unwrap();
            assert_eq!(stat.data_length as usize, data.len(), "dataLength of {}", key_path(chunk[i]));
            out.insert(chunk[i], Observed { data, version: stat.version, czxid: stat.czxid, mzxid: stat.mzxid });
            i += 1;
        }
    }
    (out, stat, zxid, foreign)
}

/// For one stream: every prefix length L (at least everything acknowledged)
/// whose applied state equals what was read back, with the count of child
/// creates in that prefix. Err with a description of the first discrepancy.
fn consistent_prefixes(stream: &Stream, observed: &BTreeMap<u64, Observed>) -> Result<Vec<(usize, u64)>, String> {
    let acked = stream.acked_count();
    let mut state = stream.baseline.clone();
    let mut owned: BTreeSet<u64> = state.keys().copied().collect();
    for r in &stream.records {
        owned.extend(r.op.keys());
    }
    let mut bad: BTreeSet<u64> = owned.iter().copied().filter(|k| !matches(state.get(k), observed.get(k))).collect();
    let mut out = Vec::new();
    let mut creates = 0u64;
    let mut bad_at_acked = None;
    for l in 0..=stream.records.len() {
        if l == acked {
            bad_at_acked = Some(bad.clone());
        }
        if l >= acked && bad.is_empty() {
            out.push((l, creates));
        }
        if l == stream.records.len() {
            break;
        }
        let r = &stream.records[l];
        let zxid = r.acked.as_ref().map(|a| a.1);
        let (_, created) = r.op.apply(&mut state, zxid);
        creates += created as u64;
        for k in r.op.keys() {
            if matches(state.get(&k), observed.get(&k)) {
                bad.remove(&k);
            } else {
                bad.insert(k);
            }
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    // Describe the first key wrong after the acknowledged prefix.
    let bad = bad_at_acked.unwrap_or_default();
    let key = *bad.iter().next().expect("some key mismatches");
    let mut model = stream.baseline.clone();
    for r in &stream.records[..acked] {
        r.op.apply(&mut model, r.acked.as_ref().map(|a| a.1));
    }
    let mut history = String::new();
    for (i, r) in stream.records.iter().enumerate() {
        if r.op.keys().contains(&key) {
            let status = match &r.acked {
                Some((outcome, zxid)) => format!("ACKED {outcome:?} zxid {zxid:#x}"),
                None => "issued, not acknowledged".to_string(),
            };
            history += &format!("\n    #{i} {} -> {status}", r.op.short());
        }
    }
    let show = |o: Option<&Observed>| match o {
        None => "absent".to_string(),
        Some(o) => format!(
            "data={:?}.. ({} bytes) version={} czxid={:#x} mzxid={:#x}",
            String::from_utf8_lossy(&o.data[..o.data.len().min(24)]),
            o.data.len(),
            o.version,
            o.czxid,
            o.mzxid
        ),
    };
    let show_model = |m: Option<&NodeState>| match m {
        None => "absent".to_string(),
        Some(m) => format!(
            "data={:?}.. ({} bytes) version={} czxid={:?} mzxid={:?}",
            String::from_utf8_lossy(&m.data[..m.data.len().min(24)]),
            m.data.len(),
            m.version,
            m.czxid,
            m.mzxid
        ),
    };
    Err(format!(
        "stream {}: {} ops issued, {acked} acknowledged; no prefix of the unacknowledged ops explains the state read back.\n  \
         first discrepancy: {} read back as {}\n  after the acknowledged writes the model has {}\n  \
         in the baseline: {}\n  this stream's ops on it:{history}",
        stream.index,
        stream.records.len(),
        key_path(key),
        show(observed.get(&key)),
        show_model(model.get(&key)),
        show_model(stream.baseline.get(&key)),
    ))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn acknowledged_writes_survive_sigkill() {
    let cycles = env_u64("CRASH_CYCLES").unwrap_or(20);
    let seed = env_u64("CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) ^ u64::from(std::process::id())
    });
    println!("acknowledged_writes_survive_sigkill: CRASH_SEED={seed} CRASH_CYCLES={cycles}");
    eprintln!("acknowledged_writes_survive_sigkill: CRASH_SEED={seed} CRASH_CYCLES={cycles}");
    let mut rng = Rng::new(seed);
    let mut server = Server::new("sigkill", 500, 20000);

    // The state read back after the last restart: the baseline of the next cycle.
    let mut baseline: BTreeMap<u64, NodeState> = BTreeMap::new();
    let mut baseline_creates = 0u64;
    let mut max_zxid = 0i64;
    let mut total_acked = 0usize;
    let mut total_issued = 0usize;
    let started = Instant::now();

    for cycle in 1..=cycles {
        let cycle_began = Instant::now();
        let context = format!("CRASH_SEED={seed} cycle {cycle}/{cycles}");
        // Vary the snapshot interval across restarts: snapshots and log replay both get exercised.
        let mut snap_count = *rng.pick(&[2u64, 10, 50, 300, 100_000]);
        if apache_target() {
            // ZooKeeper snapshots synchronously: every other txn is too slow to start from.
            snap_count = snap_count.max(50);
        }
        server.snap_count = Some(snap_count);
        // Small log preallocation on some starts: the log then grows its file while writing.
        server.pre_alloc_kib = if rng.chance(500) { Some(256) } else { None };
        server.start(None);
        let port = server.port;

        if cycle == 1 {
            let mut s = Session::connect(port, 0, 10000);
            assert_eq!(s.create("/crash", b"root", 0).0, OK, "{context}: create /crash");
            max_zxid = max_zxid.max(s.last_zxid);
        }

        // Streams: 1 to 3 connections, each owning a share of the live keys.
        let n_streams = rng.between(1, 3) as usize;
        let mut streams: Vec<Stream> = (0..n_streams)
            .map(|i| Stream {
                index: i,
                rng: rng.fork(),
                issued_state: BTreeMap::new(),
                baseline: BTreeMap::new(),
                records: Vec::new(),
                next_key: (cycle * 10 + i as u64) * 1_000_000,
                write_id: 0,
                tag: format!("c{cycle}"),
                problems: Vec::new(),
                closed_by_server: false,
            })
            .collect();
        for (key, node) in &baseline {
            let owner = (*key as usize) % n_streams;
            streams[owner].baseline.insert(*key, node.clone());
            streams[owner].issued_state.insert(*key, node.clone());
        }
        let conns: Vec<Conn> = streams
            .iter()
            .map(|_| {
                let (conn, response) = handshake(port, max_zxid, 10000, 0, &[0; 16], READY_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{context}: writer handshake: {e}"));
                let response = response.unwrap_or_else(|| panic!("{context}: writer session refused"));
                assert!(response.timeout_ms > 0, "{context}: writer session refused: {response:?}");
                conn
            })
            .collect();

        let stream_ms = rng.between(50, 400);
        let quiescent = rng.chance(120);
        let kill_after_ms = rng.between(5, stream_ms);
        let t0 = Instant::now();
        let stop_at = t0 + Duration::from_millis(stream_ms);
        let mut handles = Vec::new();
        for (mut stream, conn) in streams.into_iter().zip(conns) {
            handles.push(std::thread::spawn(move || {
                stream.run(conn, stop_at);
                stream
            }));
        }
        if quiescent {
            // Kill after every reply has arrived: all of it must survive.
            let deadline = Instant::now() + Duration::from_secs(20);
            while !handles.iter().all(|h| h.is_finished()) && Instant::now() < deadline {
                sleep(Duration::from_millis(2));
            }
        } else {
            let kill_at = t0 + Duration::from_millis(kill_after_ms);
            sleep(kill_at.saturating_duration_since(Instant::now()));
        }
        server.assert_running();
        server.sigkill();
        let streams: Vec<Stream> = handles.into_iter().map(|h| h.join().expect("writer thread panicked")).collect();

        // Restart on the same data dir; nothing may be lost.
        let restart_began = Instant::now();
        server.start(None);
        let restart_ms = restart_began.elapsed().as_millis();
        let cycle_max_acked = streams.iter().map(|s| s.max_acked_zxid()).max().unwrap_or(0);
        max_zxid = max_zxid.max(cycle_max_acked);
        // lastZxidSeen = the newest acknowledged zxid: the server must not be behind it.
        let mut reader = Session::connect(server.port, max_zxid, 10000);
        let (observed, root, read_zxid, foreign) = read_crash_tree(&mut reader);

        let issued: usize = streams.iter().map(|s| s.records.len()).sum();
        let acked: usize = streams.iter().map(|s| s.acked_count()).sum();
        total_issued += issued;
        total_acked += acked;
        println!(
            "{context}: snapCount {snap_count}, preAllocSize {}, {n_streams} connection(s), stream {stream_ms} ms, {}; {issued} issued, \
             {acked} acknowledged, {} nodes read back; restart took {restart_ms} ms, cycle {} ms so far",
            server.pre_alloc_kib.map_or("default".to_string(), |kib| format!("{kib} KiB")),
            if quiescent { "killed when idle".to_string() } else { format!("killed at {kill_after_ms} ms") },
            observed.len(),
            cycle_began.elapsed().as_millis()
        );

        for stream in &streams {
            if let Some(problem) = stream.problems.first() {
                panic!("{context}: {problem}");
            }
            if quiescent {
                assert_eq!(stream.acked_count(), stream.records.len(), "{context}: quiescent kill but replies missing");
            }
        }
        assert!(foreign.is_empty(), "{context}: children of /crash never issued: {foreign:?}");
        assert!(
            read_zxid >= max_zxid,
            "{context}: after restart the server's zxid {read_zxid:#x} is behind the newest acknowledged zxid {max_zxid:#x}"
        );

        // Nothing appears that was never issued.
        let mut owned = BTreeSet::new();
        for s in &streams {
            owned.extend(s.baseline.keys().copied());
            for r in &s.records {
                owned.extend(r.op.keys());
            }
        }
        if let Some(key) = observed.keys().find(|k| !owned.contains(k)) {
            panic!("{context}: {} exists but was never issued: {:?}", key_path(*key), observed[key]);
        }

        // Per connection, a prefix (covering all acknowledged writes) explains the state.
        let mut possible_creates: BTreeSet<u64> = BTreeSet::from([baseline_creates]);
        for stream in &streams {
            let prefixes = consistent_prefixes(stream, &observed).unwrap_or_else(|e| panic!("{context}: {e}"));
            let mut next = BTreeSet::new();
            for base in &possible_creates {
                for (_, c) in &prefixes {
                    next.insert(base + c);
                }
            }
            possible_creates = next;
        }

        // /crash's numChildren and cversion (creates + deletes) agree with the children.
        assert_eq!(root.num_children as usize, observed.len(), "{context}: /crash numChildren vs children listed");
        let cv_plus_children = i64::from(root.cversion) + i64::from(root.num_children);
        assert!(
            cv_plus_children >= 0 && cv_plus_children % 2 == 0 && root.cversion >= root.num_children,
            "{context}: /crash cversion {} inconsistent with {} children (cversion counts creates + deletes)",
            root.cversion,
            root.num_children
        );
        let creates = (cv_plus_children / 2) as u64;
        assert!(
            possible_creates.contains(&creates),
            "{context}: /crash cversion {} with {} children implies {creates} child creates; the writes explain only {:?}",
            root.cversion,
            root.num_children,
            possible_creates
        );

        baseline = observed
            .into_iter()
            .map(|(k, o)| (k, NodeState { data: o.data, version: o.version, czxid: Some(o.czxid), mzxid: Some(o.mzxid) }))
            .collect();
        baseline_creates = creates;
        max_zxid = max_zxid.max(read_zxid);
        drop(reader);
        server.sigkill();
    }
    println!(
        "acknowledged_writes_survive_sigkill: {cycles} cycles, {total_issued} writes issued, {total_acked} acknowledged \
         and verified, {:.1} s (CRASH_SEED={seed})",
        started.elapsed().as_secs_f64()
    );
    assert!(total_acked > 0, "the server never acknowledged a write (CRASH_SEED={seed})");
}

#[test]
fn restart_preserves_zxid_and_sessions() {
    let mut server = Server::new("sigterm", 1000, 60000);
    server.start(None);
    let port = server.port;

    let mut s = Session::connect(port, 0, 30000);
    assert_eq!(s.create("/p", b"persistent", 0).0, OK);
    assert_eq!(s.create("/p/a", b"a", 0).0, OK);
    assert_eq!(s.set_data("/p", b"persistent-2", 0).0, OK);
    assert_eq!(s.create("/eph", b"mine", EPHEMERAL).0, OK);
    let (id, password, last_zxid) = (s.id, s.password.clone(), s.last_zxid);
    assert!(last_zxid > 0, "replies carried no zxid");

    // Clean stop.
    let status = server.sigterm(Duration::from_secs(10));
    if !apache_target() {
        assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    }
    drop(s);

    // Restart on the same data dir (same port if it can be had).
    server.start(Some(port));
    let port = server.port;

    // A new client that saw the old zxid is accepted: the server is not behind it.
    let mut fresh = Session::connect(port, last_zxid, 30000);
    let (err, data, stat, zxid) = fresh.get_data("/p");
    assert_eq!(err, OK, "/p after restart");
    assert_eq!(data, b"persistent-2");
    assert_eq!(stat.unwrap().version, 1, "/p version after restart");
    assert!(zxid >= last_zxid, "server zxid {zxid:#x} behind the last zxid seen {last_zxid:#x}");
    assert_eq!(fresh.get_data("/p/a").1, b"a");

    // The old session resumes (same id and password, within its timeout).
    let mut resumed = Session::resume(port, id, &password, last_zxid, 30000);
    let (err, stat) = resumed.exists("/eph");
    assert_eq!(err, OK, "the session's ephemeral /eph after a clean restart");
    assert_eq!(stat.unwrap().ephemeral_owner, id, "/eph ephemeralOwner");

    // New writes get zxids past everything before the restart.
    let (err, zxid) = resumed.create("/after", b"x", 0);
    assert_eq!(err, OK);
    assert!(zxid > last_zxid, "new write zxid {zxid:#x} not greater than pre-restart {last_zxid:#x}");
    let (err, stat) = fresh.exists("/after");
    assert_eq!(err, OK);
    let stat = stat.unwrap();
    assert!(stat.czxid > last_zxid && stat.mzxid == stat.czxid, "/after czxid {:#x}", stat.czxid);
    let (err, zxid2) = fresh.set_data("/p", b"persistent-3", 1);
    assert_eq!(err, OK);
    assert!(zxid2 > zxid, "zxids not increasing after restart: {zxid:#x} then {zxid2:#x}");

    // The resumed session still owns its ephemeral: closing it removes it.
    resumed.close();
    assert_eq!(fresh.exists("/eph").0, NONODE, "/eph after its session closed");
    fresh.close();
    server.sigterm(Duration::from_secs(10));
}

#[test]
fn ephemerals_of_dead_sessions_expire_after_restart() {
    let mut server = Server::new("expire", 200, 4000);
    server.start(None);
    let port = server.port;

    let mut dead = Session::connect(port, 0, 1000);
    let mut alive = Session::connect(port, 0, 1000);
    assert_eq!(dead.create("/dead", b"d", EPHEMERAL).0, OK);
    assert_eq!(alive.create("/alive", b"a", EPHEMERAL).0, OK);
    assert_eq!(alive.create("/keep", b"k", 0).0, OK);
    let (dead_id, dead_password) = (dead.id, dead.password.clone());
    let (alive_id, alive_password, last_zxid) = (alive.id, alive.password.clone(), alive.last_zxid.max(dead.last_zxid));

    server.sigkill();
    drop(dead);
    drop(alive);
    server.start(None);
    let restarted = Instant::now();
    let port = server.port;

    // The surviving client reconnects at once and keeps its session alive.
    let mut alive = Session::resume(port, alive_id, &alive_password, last_zxid, 1000);
    assert_eq!(alive.exists("/alive").0, OK, "/alive right after restart");
    assert_eq!(alive.exists("/keep").0, OK, "/keep right after restart");

    // The dead session's ephemeral goes within ~4 s of the restart.
    let mut gone_after = None;
    while restarted.elapsed() < Duration::from_secs(4) {
        alive.ping_if_due(Duration::from_millis(150));
        if alive.exists("/dead").0 == NONODE {
            gone_after = Some(restarted.elapsed());
            break;
        }
        sleep(Duration::from_millis(50));
    }
    let gone_after = gone_after.unwrap_or_else(|| panic!("/dead still exists 4 s after the restart (session timeout 1000 ms)"));
    println!("/dead removed {} ms after restart", gone_after.as_millis());

    // The reconnected session keeps its ephemeral well past its timeout.
    let until = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < until {
        alive.ping_if_due(Duration::from_millis(150));
        let (err, stat) = alive.exists("/alive");
        assert_eq!(err, OK, "/alive vanished although its session reconnected and pings");
        assert_eq!(stat.unwrap().ephemeral_owner, alive_id);
        sleep(Duration::from_millis(100));
    }

    // The dead session cannot be resumed.
    let (_conn, response) = handshake(port, last_zxid, 1000, dead_id, &dead_password, IO_TIMEOUT).expect("handshake");
    if let Some(response) = response {
        assert!(response.timeout_ms <= 0, "expired session {dead_id:#x} was resumed: {response:?}");
    }
    server.assert_running();
    alive.close();
}

