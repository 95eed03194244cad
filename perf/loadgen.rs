//! warden-loadgen: a ZooKeeper-protocol load generator (std threads, blocking
//! sockets, warden's own jute codec). Works against warden and Apache ZooKeeper.
//!
//! N connections, each its own session, each with a writer thread that sends
//! request frames and a reader thread that matches replies to requests by xid
//! (ZooKeeper answers a connection's requests in order). At most `--in-flight K`
//! requests are outstanding per connection. Latency is measured per request from
//! the moment it is queued for sending (with `--rate`, from the moment it was
//! due, so a server that falls behind is charged for the wait) to the moment its
//! reply is read. Latencies go into fixed-size log-linear histograms (< 1 %
//! error), so a run's memory does not grow with its length.
//!
//! Workloads (keys are --parent/n0 .. n{keys-1}, created first unless --skip-setup):
//!   a              50 % getData / 50 % setData on the key pool (YCSB A)
//!   b              95 % getData / 5 % setData (YCSB B)
//!   c              getData only (YCSB C)
//!   large-values   50 % getData / 50 % setData of 100 KiB values (--value-bytes)
//!   set            setData only
//!   create         pipelined creates of unique nodes under --parent
//!   create-heavy   pipelined sequential creates (flag SEQUENTIAL) under --parent
//!   create-serial  K=1 creates of unique nodes under --parent
//!   delete-heavy   deletes --keys nodes that setup created (under a fresh child
//!                  of --parent); the run ends when all are deleted
//!   session-churn  per connection, serially: connect, create an ephemeral node,
//!                  closeSession; one op = one whole cycle
//!   watch-fanout   --sessions sessions each set a data watch (getData) on one
//!                  node, then one setData; reports the time from the write to
//!                  the last notification and the notification latencies
//!   populate       create --count nodes --parent/n0 .. n{count-1}, pipelined
//!
//! `--server a,b,c` (or `--servers`) spreads connections round-robin over an
//! ensemble's servers. `--pids P1,P2` reports the servers' CPU time
//! (utime + stime of all threads, /proc/PID/stat) over the run, per op.
//!
//! Every run is bounded: by --ops (or --count, --keys, --sessions) and by
//! --seconds. Prints one line of results (or one JSON object with --json).

use std::collections::VecDeque;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use warden::proto::{
    op, Acl, ConnectRequest, ConnectResponse, CreateRequest, DeleteRequest, Id, Jute, PathRequest,
    PathWatchRequest, Reader, ReplyHeader, Request, RequestHeader, SetDataRequest, WatcherEvent, Writer,
};
use warden::rng::Rng;

/// Limits of the tool itself, so that a typo in a flag cannot exhaust the machine.
mod limits {
    /// Largest reply frame accepted (ZooKeeper's own jute.maxbuffer is 1 MiB).
    pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
    /// Request bytes buffered by a writer before they are sent in one write.
    pub const WRITE_BUFFER_FLUSH_BYTES: usize = 32 * 1024;
    /// Connections of a pipelined run: each costs two threads.
    pub const CONNECTIONS_MAX: usize = 1024;
    /// Requests outstanding on one connection.
    pub const IN_FLIGHT_MAX: usize = 4096;
    /// Sessions of a watch fan-out: each is one socket, so RLIMIT_NOFILE must allow them.
    pub const FANOUT_SESSIONS_MAX: usize = 100_000;
    /// Threads that open the fan-out's sessions, and threads that poll them.
    pub const FANOUT_THREADS: usize = 8;
    /// Value size accepted (the server's jute.maxbuffer decides what it takes).
    pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
    /// Wait for any single reply outside the measured phase (setup, close).
    pub const REPLY_WAIT_MS: u64 = 20_000;
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    A,
    B,
    C,
    LargeValues,
    Set,
    Create,
    CreateHeavy,
    CreateSerial,
    DeleteHeavy,
    SessionChurn,
    WatchFanout,
    Populate,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::LargeValues => "large-values",
            Workload::Set => "set",
            Workload::Create => "create",
            Workload::CreateHeavy => "create-heavy",
            Workload::CreateSerial => "create-serial",
            Workload::DeleteHeavy => "delete-heavy",
            Workload::SessionChurn => "session-churn",
            Workload::WatchFanout => "watch-fanout",
            Workload::Populate => "populate",
        }
    }

    /// Percent of getData in a read/write mix; None for workloads that are not one.
    fn read_percent(self) -> Option<u64> {
        match self {
            Workload::A | Workload::LargeValues => Some(50),
            Workload::B => Some(95),
            Workload::C => Some(100),
            Workload::Set => Some(0),
            _ => None,
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(name = "warden-loadgen", about = "ZooKeeper-protocol load generator")]
struct Args {
    /// Server address host:port, or a comma-separated list (connections are
    /// spread round-robin; setup uses the first).
    #[arg(long, alias = "servers", default_value = "127.0.0.1:2181")]
    server: String,
    #[arg(long, value_enum)]
    workload: Workload,
    /// Connections (each its own session and thread pair).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests outstanding per connection (forced to 1 for create-serial).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Total requests across all connections (0 = bounded by --seconds only).
    #[arg(long, default_value_t = 0)]
    ops: u64,
    /// Stop issuing requests after this many seconds (0 = bounded by --ops only).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Offered load in requests per second over all connections (0 = as fast
    /// as the window allows). Latency then counts from when a request was due.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Bytes of data per create / setData [default: 100; 102400 for large-values].
    #[arg(long)]
    value_bytes: Option<usize>,
    /// Size of the key pool [default: 1000; 100 for large-values].
    #[arg(long)]
    keys: Option<u64>,
    /// Nodes to create for populate.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Sessions for watch-fanout.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Parent node of everything this tool creates (created if missing).
    #[arg(long, default_value = "/bench")]
    parent: String,
    /// Read/write mixes: assume the key pool exists (e.g. made by populate).
    #[arg(long)]
    skip_setup: bool,
    /// Session timeout requested, ms.
    #[arg(long, default_value_t = 30000)]
    session_timeout_ms: i32,
    /// Server process ids (comma-separated) whose CPU time to report.
    #[arg(long)]
    pids: Option<String>,
    /// Print a JSON object instead of the one-line summary.
    #[arg(long)]
    json: bool,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The settings of a run after defaults and checks.
#[derive(Clone)]
struct Plan {
    servers: Vec<String>,
    workload: Workload,
    connections: usize,
    in_flight: usize,
    ops: u64,
    seconds: f64,
    rate: f64,
    value_bytes: usize,
    keys: u64,
    parent: String,
    session_timeout_ms: i32,
}

impl Plan {
    /// The server a connection uses: round-robin over the list.
    fn server(&self, connection: usize) -> &str {
        &self.servers[connection % self.servers.len()]
    }
}

// ---------------------------------------------------------------------------
// Latency histogram

/// Sub-buckets per power of two: 128 keeps every bucket within 0.8 % of its value.
const HISTOGRAM_SUB_BITS: u32 = 7;
/// Buckets for every u32 microsecond value (up to about 71 minutes).
const HISTOGRAM_BUCKETS: usize = ((32 - HISTOGRAM_SUB_BITS as usize) + 1) << HISTOGRAM_SUB_BITS;

/// A log-linear histogram of latencies in microseconds, fixed size.
#[derive(Clone)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum_us: u64,
    max_us: u32,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { buckets: vec![0; HISTOGRAM_BUCKETS], count: 0, sum_us: 0, max_us: 0 }
    }

    fn bucket(value: u32) -> usize {
        let value = value as u64;
        if value < (1 << HISTOGRAM_SUB_BITS) {
            return value as usize;
        }
        let exponent = 63 - value.leading_zeros(); // >= HISTOGRAM_SUB_BITS
        let shift = exponent - HISTOGRAM_SUB_BITS;
        let mantissa = (value >> shift) as usize; // in [128, 256)
        ((shift as usize + 1) << HISTOGRAM_SUB_BITS) + (mantissa - (1 << HISTOGRAM_SUB_BITS))
    }

    /// The largest value that falls into bucket `index` (percentiles round up).
    fn bucket_high(index: usize) -> u64 {
        if index < (1 << HISTOGRAM_SUB_BITS) {
            return index as u64;
        }
        let shift = (index >> HISTOGRAM_SUB_BITS) - 1;
        let mantissa = ((index & ((1 << HISTOGRAM_SUB_BITS) - 1)) + (1 << HISTOGRAM_SUB_BITS)) as u64;
        ((mantissa + 1) << shift) - 1
    }

    fn record(&mut self, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u32::MAX as u128) as u32;
        self.buckets[Self::bucket(micros)] += 1;
        self.count += 1;
        self.sum_us += micros as u64;
        self.max_us = self.max_us.max(micros);
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::bucket_high(index).min(self.max_us as u64);
            }
        }
        self.max_us as u64
    }

    fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_us as f64 / self.count as f64
        }
    }
}

// ---------------------------------------------------------------------------
// Wire helpers

fn open_acl() -> Vec<Acl> {
    vec![Acl { perms: 31, id: Id { scheme: "world".into(), id: "anyone".into() } }]
}

/// Appends one length-prefixed request frame to `out`.
fn encode_request(out: &mut Vec<u8>, xid: i32, opcode: i32, request: &Request) {
    let mut writer = Writer::new();
    RequestHeader { xid, opcode }.encode(&mut writer);
    request.encode(&mut writer);
    let body = writer.into_bytes();
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
}

fn read_frame(reader: &mut impl Read) -> std::io::Result<Bytes> {
    let mut length = [0u8; 4];
    reader.read_exact(&mut length)?;
    let length = i32::from_be_bytes(length);
    if length < 0 || length as usize > limits::FRAME_BYTES_MAX {
        return Err(std::io::Error::new(ErrorKind::InvalidData, format!("frame length {length}")));
    }
    let mut body = vec![0u8; length as usize];
    reader.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// Opens a connection to `server` and establishes a fresh session.
fn connect(server: &str, session_timeout_ms: i32) -> Result<TcpStream, Error> {
    let address = server.to_socket_addrs()?.next().ok_or("server address did not resolve")?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(limits::REPLY_WAIT_MS)))?;
    let mut writer = Writer::new();
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout_ms: session_timeout_ms,
        session_id: 0,
        password: Bytes::from(vec![0u8; 16]),
        read_only: Some(false),
    }
    .encode(&mut writer);
    let body = writer.into_bytes();
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    let response = ConnectResponse::decode(read_frame(&mut stream)?)?;
    if response.session_id == 0 || response.timeout_ms <= 0 {
        return Err(format!("{server} refused the session").into());
    }
    Ok(stream)
}

/// Sends one request on a connection with nothing else outstanding and reads
/// its reply, skipping watch events and pings. Returns the reply's error code.
fn call(stream: &mut TcpStream, xid: i32, opcode: i32, request: &Request) -> Result<i32, Error> {
    let mut frame = Vec::new();
    encode_request(&mut frame, xid, opcode, request);
    stream.write_all(&frame)?;
    loop {
        let header = ReplyHeader::decode(&mut Reader::new(read_frame(stream)?))?;
        if header.xid == xid {
            return Ok(header.err);
        }
        if header.xid != -1 && header.xid != -2 {
            return Err(format!("reply xid {} while waiting for {xid}", header.xid).into());
        }
    }
}

/// Sends a closeSession and waits (bounded) for its reply.
fn close_session(mut stream: TcpStream, xid: i32) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = call(&mut stream, xid, op::CLOSE_SESSION, &Request::CloseSession);
    let _ = stream.shutdown(Shutdown::Both);
}

fn create(path: String, value: Bytes, flags: i32) -> Request {
    Request::Create { opcode: op::CREATE, request: CreateRequest { path, data: Some(value), acl: open_acl(), flags } }
}

/// ZooKeeper's CreateMode flags.
const FLAG_EPHEMERAL: i32 = 1;
const FLAG_SEQUENTIAL: i32 = 2;
/// ZooKeeper's NODEEXISTS error code.
const ERROR_NODE_EXISTS: i32 = -110;

// ---------------------------------------------------------------------------
// Pipelined runs

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Kind {
    Read,
    Write,
    /// The closeSession that ends a connection; not measured.
    Close,
}

/// What one connection's (or one phase's) run produced.
struct ConnResult {
    reads: Histogram,
    writes: Histogram,
    errors: u64,
    first_error: Option<i32>,
    last_reply: Option<Instant>,
    failures: Vec<String>,
}

impl ConnResult {
    fn new() -> ConnResult {
        ConnResult {
            reads: Histogram::new(),
            writes: Histogram::new(),
            errors: 0,
            first_error: None,
            last_reply: None,
            failures: Vec::new(),
        }
    }

    fn failed(failure: String) -> ConnResult {
        let mut result = ConnResult::new();
        result.failures.push(failure);
        result
    }

    fn merge(&mut self, other: ConnResult) {
        self.reads.merge(&other.reads);
        self.writes.merge(&other.writes);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.last_reply = match (self.last_reply, other.last_reply) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.failures.extend(other.failures);
    }

    fn record_error(&mut self, err: i32) {
        self.errors += 1;
        self.first_error.get_or_insert(err);
    }
}

/// The requests outstanding on one connection: (xid, time due, kind).
struct Window {
    queue: Mutex<VecDeque<(i32, Instant, Kind)>>,
    changed: Condvar,
}

/// Produces the next request for a connection, or None when the workload is done.
struct Generator {
    workload: Workload,
    parent: String,
    run_id: String,
    conn: usize,
    seq: u64,
    value: Bytes,
    keys: u64,
    rng: Rng,
    /// Shared counter of requests issued (ops budget, populate/delete indices).
    issued: Arc<AtomicU64>,
    ops_max: u64,
}

impl Generator {
    fn next(&mut self) -> Option<(i32, Request, Kind)> {
        let index = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.ops_max > 0 && index >= self.ops_max {
            return None;
        }
        if let Some(read_percent) = self.workload.read_percent() {
            let key = self.rng.below(self.keys);
            let path = format!("{}/n{}", self.parent, key);
            return Some(if self.rng.below(100) < read_percent {
                (op::GET_DATA, Request::GetData(PathWatchRequest { path, watch: false }), Kind::Read)
            } else {
                let request = SetDataRequest { path, data: Some(self.value.clone()), version: -1 };
                (op::SET_DATA, Request::SetData(request), Kind::Write)
            });
        }
        match self.workload {
            Workload::CreateSerial | Workload::Create => {
                self.seq += 1;
                let path = format!("{}/{}-{}-{}", self.parent, self.run_id, self.conn, self.seq);
                Some((op::CREATE, create(path, self.value.clone(), 0), Kind::Write))
            }
            Workload::CreateHeavy => {
                // The server appends the parent's 10-digit sequence number.
                let path = format!("{}/{}-", self.parent, self.run_id);
                Some((op::CREATE, create(path, self.value.clone(), FLAG_SEQUENTIAL), Kind::Write))
            }
            Workload::Populate => {
                let path = format!("{}/n{}", self.parent, index);
                Some((op::CREATE, create(path, self.value.clone(), 0), Kind::Write))
            }
            Workload::DeleteHeavy => {
                let path = format!("{}/n{}", self.parent, index);
                Some((op::DELETE, Request::Delete(DeleteRequest { path, version: -1 }), Kind::Write))
            }
            _ => None,
        }
    }
}

/// Runs one connection: a writer (this thread) and a reader thread. The writer
/// ends the stream with a closeSession, whose reply tells the reader it is done.
fn run_connection(
    stream: TcpStream,
    mut generator: Generator,
    in_flight: usize,
    seconds: f64,
    rate_per_connection: f64,
    start: Arc<Barrier>,
    abort: Arc<AtomicBool>,
) -> ConnResult {
    let window = Arc::new(Window { queue: Mutex::new(VecDeque::with_capacity(in_flight + 1)), changed: Condvar::new() });
    let reader_done = Arc::new(AtomicBool::new(false));
    let read_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return ConnResult::failed(e.to_string()),
    };
    let reader = {
        let window = window.clone();
        let reader_done = reader_done.clone();
        let abort = abort.clone();
        thread::spawn(move || {
            let mut result = ConnResult::new();
            let mut input = BufReader::with_capacity(256 * 1024, read_stream);
            loop {
                let frame = match read_frame(&mut input) {
                    Ok(frame) => frame,
                    Err(e) => {
                        result.failures.push(format!("read: {e}"));
                        abort.store(true, Ordering::Relaxed);
                        break;
                    }
                };
                let now = Instant::now();
                let header = match ReplyHeader::decode(&mut Reader::new(frame)) {
                    Ok(h) => h,
                    Err(e) => {
                        result.failures.push(format!("bad reply header: {e}"));
                        abort.store(true, Ordering::Relaxed);
                        break;
                    }
                };
                if header.xid == -1 || header.xid == -2 {
                    continue; // watch event or ping reply
                }
                let sent = {
                    let mut queue = window.queue.lock().unwrap_or_else(|e| e.into_inner());
                    let front = queue.pop_front();
                    window.changed.notify_all();
                    front
                };
                match sent {
                    Some((xid, _, Kind::Close)) if xid == header.xid => break,
                    Some((xid, due, kind)) if xid == header.xid => {
                        let latency = now.saturating_duration_since(due);
                        if kind == Kind::Read {
                            result.reads.record(latency);
                        } else {
                            result.writes.record(latency);
                        }
                        result.last_reply = Some(now);
                        if header.err != 0 {
                            result.record_error(header.err);
                        }
                    }
                    other => {
                        result.failures.push(format!("reply xid {} does not match {:?}", header.xid, other));
                        abort.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
            // Wake a writer that may wait on a window that will never drain.
            reader_done.store(true, Ordering::Release);
            window.changed.notify_all();
            result
        })
    };

    start.wait();
    let started = Instant::now();
    let deadline = if seconds > 0.0 { Some(started + Duration::from_secs_f64(seconds)) } else { None };
    let interval = if rate_per_connection > 0.0 { Some(Duration::from_secs_f64(1.0 / rate_per_connection)) } else { None };
    let mut out_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return ConnResult::failed(e.to_string()),
    };
    let mut buffer: Vec<u8> = Vec::with_capacity(2 * limits::WRITE_BUFFER_FLUSH_BYTES);
    let mut xid: i32 = 1;
    let mut sent: u32 = 0;
    let mut write_failure = None;
    'send: loop {
        if abort.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Open loop: wait until this request is due, sending what is buffered first.
        let due = match interval {
            Some(interval) => {
                let due = started + interval * sent;
                if deadline.is_some_and(|d| due >= d) {
                    break;
                }
                if !buffer.is_empty() {
                    if let Err(e) = out_stream.write_all(&buffer) {
                        write_failure = Some(format!("write: {e}"));
                        break;
                    }
                    buffer.clear();
                }
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                Some(due)
            }
            None => None,
        };
        let Some((opcode, request, kind)) = generator.next() else { break };
        {
            let mut queue = window.queue.lock().unwrap_or_else(|e| e.into_inner());
            while queue.len() >= in_flight {
                if !buffer.is_empty() {
                    drop(queue);
                    if let Err(e) = out_stream.write_all(&buffer) {
                        write_failure = Some(format!("write: {e}"));
                        break 'send;
                    }
                    buffer.clear();
                    queue = window.queue.lock().unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                if reader_done.load(Ordering::Acquire) {
                    break 'send; // the reader gave up
                }
                queue = window.changed.wait_timeout(queue, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
            }
            queue.push_back((xid, due.unwrap_or_else(Instant::now), kind));
        }
        encode_request(&mut buffer, xid, opcode, &request);
        xid = xid.wrapping_add(1).max(1);
        sent = sent.saturating_add(1);
        if buffer.len() >= limits::WRITE_BUFFER_FLUSH_BYTES || interval.is_some() {
            if let Err(e) = out_stream.write_all(&buffer) {
                write_failure = Some(format!("write: {e}"));
                break;
            }
            buffer.clear();
        }
    }
    if write_failure.is_none() && !reader_done.load(Ordering::Acquire) {
        window.queue.lock().unwrap_or_else(|e| e.into_inner()).push_back((xid, Instant::now(), Kind::Close));
        encode_request(&mut buffer, xid, op::CLOSE_SESSION, &Request::CloseSession);
        if let Err(e) = out_stream.write_all(&buffer) {
            write_failure = Some(format!("write: {e}"));
        }
    }
    if write_failure.is_some() || abort.load(Ordering::Relaxed) {
        // Unblock the reader: nothing more will be answered.
        let _ = stream.shutdown(Shutdown::Both);
    }
    let mut result = reader.join().unwrap_or_else(|_| ConnResult::failed("reader panicked".into()));
    result.failures.extend(write_failure);
    let _ = stream.shutdown(Shutdown::Both);
    result
}

/// One pipelined phase: `connections` sessions running `workload` under
/// `parent` until `ops_max` requests (0 = no limit) or `seconds` pass.
struct Phase<'a> {
    plan: &'a Plan,
    workload: Workload,
    parent: String,
    run_id: String,
    connections: usize,
    in_flight: usize,
    ops_max: u64,
    seconds: f64,
    rate: f64,
}

/// Runs a phase; returns its merged result and its start time. `before_start`
/// runs after every session is connected, just before the clock starts.
fn run_phase(phase: &Phase, before_start: impl FnOnce()) -> Result<(ConnResult, Instant), Error> {
    let issued = Arc::new(AtomicU64::new(0));
    let abort = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(phase.connections + 1));
    let value = Bytes::from(vec![b'v'; phase.plan.value_bytes]);

    // Connect every session before the clock starts.
    let mut streams = Vec::with_capacity(phase.connections);
    for conn in 0..phase.connections {
        streams.push(connect(phase.plan.server(conn), phase.plan.session_timeout_ms)?);
    }
    let mut handles = Vec::with_capacity(phase.connections);
    for (conn, stream) in streams.into_iter().enumerate() {
        let generator = Generator {
            workload: phase.workload,
            parent: phase.parent.clone(),
            run_id: phase.run_id.clone(),
            conn,
            seq: 0,
            value: value.clone(),
            keys: phase.plan.keys,
            rng: Rng::new(conn as u64),
            issued: issued.clone(),
            ops_max: phase.ops_max,
        };
        let (in_flight, seconds) = (phase.in_flight, phase.seconds);
        let rate_per_connection = phase.rate / phase.connections as f64;
        let (barrier, abort) = (barrier.clone(), abort.clone());
        handles.push(thread::spawn(move || {
            run_connection(stream, generator, in_flight, seconds, rate_per_connection, barrier, abort)
        }));
    }
    before_start();
    barrier.wait();
    let started = Instant::now();
    let mut total = ConnResult::new();
    for handle in handles {
        total.merge(handle.join().unwrap_or_else(|_| ConnResult::failed("connection thread panicked".into())));
    }
    Ok((total, started))
}

/// Creates `path` and its ancestors (ignoring NODEEXISTS) on a fresh session.
fn ensure_path(plan: &Plan, path: &str) -> Result<(), Error> {
    let mut stream = connect(plan.server(0), plan.session_timeout_ms)?;
    let mut components = String::new();
    let mut xid = 1;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        components.push('/');
        components.push_str(part);
        let err = call(&mut stream, xid, op::CREATE, &create(components.clone(), Bytes::new(), 0))?;
        if err != 0 && err != ERROR_NODE_EXISTS {
            return Err(format!("create {components} failed with error {err}").into());
        }
        xid += 1;
    }
    close_session(stream, xid);
    Ok(())
}

/// Creates `count` nodes `parent/n0..` (ignoring NODEEXISTS), pipelined on up
/// to 8 connections, then syncs every server so that followers have them too.
fn populate(plan: &Plan, parent: &str, count: u64) -> Result<(), Error> {
    let phase = Phase {
        plan,
        workload: Workload::Populate,
        parent: parent.to_owned(),
        run_id: String::new(),
        connections: plan.connections.clamp(1, 8),
        in_flight: 64,
        ops_max: count,
        seconds: 600.0,
        rate: 0.0,
    };
    let (result, _) = run_phase(&phase, || {})?;
    if let Some(failure) = result.failures.first() {
        return Err(format!("setup: {failure}").into());
    }
    if let Some(err) = result.first_error.filter(|&e| e != ERROR_NODE_EXISTS) {
        return Err(format!("setup: create failed with error {err}").into());
    }
    if result.writes.count < count {
        return Err(format!("setup: only {} of {count} creates answered", result.writes.count).into());
    }
    sync_servers(plan, parent)
}

/// A `sync` through every server: afterwards each has applied everything
/// committed before (ZooKeeper's sync), so reads on followers find the setup.
fn sync_servers(plan: &Plan, path: &str) -> Result<(), Error> {
    let mut seen = Vec::new();
    for server in &plan.servers {
        if seen.contains(server) {
            continue;
        }
        seen.push(server.clone());
        let mut stream = connect(server, plan.session_timeout_ms)?;
        let err = call(&mut stream, 1, op::SYNC, &Request::Sync(PathRequest { path: path.to_owned() }))?;
        if err != 0 {
            return Err(format!("sync {path} on {server} failed with error {err}").into());
        }
        close_session(stream, 2);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Server CPU time

/// CPU time (utime + stime) of the server processes, in seconds: all
/// threads together, and each thread's ("PID/TID") with its name.
#[derive(Default)]
struct CpuSample {
    total: f64,
    threads: std::collections::BTreeMap<String, (String, f64)>,
}

/// utime + stime, in clock ticks, from a /proc/.../stat file.
fn stat_ticks(path: &str) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(path)?;
    // The command name (field 2) may hold spaces; fields after its ')' are
    // state (3) ... utime (14), stime (15).
    let after_name = stat.rsplit_once(')').ok_or("unexpected /proc/PID/stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |index: usize| -> Result<u64, Error> { Ok(fields.get(index).ok_or("short /proc/PID/stat")?.parse::<u64>()?) };
    Ok(field(11)? + field(12)?)
}

fn cpu_sample(pids: &[u32]) -> Result<CpuSample, Error> {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return Err("sysconf(_SC_CLK_TCK) failed".into());
    }
    let seconds = |ticks: u64| ticks as f64 / ticks_per_second as f64;
    let mut sample = CpuSample::default();
    for pid in pids {
        sample.total += seconds(stat_ticks(&format!("/proc/{pid}/stat"))?);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let task = task.path();
            let (Ok(name), Ok(ticks)) = (std::fs::read_to_string(task.join("comm")), stat_ticks(&task.join("stat").to_string_lossy()))
            else {
                continue; // exited meanwhile
            };
            let tid = task.file_name().map(|tid| tid.to_string_lossy().into_owned()).unwrap_or_default();
            sample.threads.insert(format!("{pid}/{tid}"), (format!("{pid}/{}", name.trim()), seconds(ticks)));
        }
    }
    Ok(sample)
}

/// Server CPU between two samples: the total, and a JSON object of the
/// milliseconds of each thread name ("PID/name": the threads of one name
/// summed; a thread that exited before the second sample counts in the
/// total only), those of at least 10 ms, busiest first.
fn cpu_between(before: &CpuSample, after: &CpuSample) -> (f64, String) {
    let mut by_name: std::collections::BTreeMap<&String, f64> = std::collections::BTreeMap::new();
    for (tid, (name, seconds)) in &after.threads {
        // A thread absent from the first sample started after it.
        let earlier = before.threads.get(tid).map_or(0.0, |(_, seconds)| *seconds);
        *by_name.entry(name).or_default() += seconds - earlier;
    }
    let mut threads: Vec<(&String, f64)> = by_name.into_iter().filter(|(_, seconds)| *seconds >= 0.01).collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    let body: Vec<String> = threads
        .iter()
        .map(|(name, seconds)| format!("{}:{:.0}", json_string(name), seconds * 1e3))
        .collect();
    (after.total - before.total, format!("{{{}}}", body.join(",")))
}

fn parse_pids(text: &str) -> Result<Vec<u32>, Error> {
    text.split(',').filter(|p| !p.trim().is_empty()).map(|p| Ok(p.trim().parse::<u32>()?)).collect()
}

/// Raises the soft RLIMIT_NOFILE to at least `needed` (up to the hard limit).
fn raise_nofile(needed: u64) -> Result<(), Error> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: limit is a valid rlimit for getrlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        return Err(format!("need {needed} open files but the hard RLIMIT_NOFILE is {}", limit.rlim_max).into());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: limit is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Session churn

/// Each connection thread, serially until the budget or deadline: connect,
/// create an ephemeral node, closeSession. One op is one whole cycle.
fn run_churn(plan: &Plan, run_id: &str, before_start: impl FnOnce()) -> (ConnResult, Instant) {
    let issued = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(plan.connections + 1));
    let value = Bytes::from(vec![b'e'; plan.value_bytes]);
    let mut handles = Vec::with_capacity(plan.connections);
    for conn in 0..plan.connections {
        let (plan, issued, barrier, value) = (plan.clone(), issued.clone(), barrier.clone(), value.clone());
        let run_id = run_id.to_owned();
        handles.push(thread::spawn(move || {
            let mut result = ConnResult::new();
            barrier.wait();
            let deadline = Instant::now() + Duration::from_secs_f64(plan.seconds.max(0.001));
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let index = issued.fetch_add(1, Ordering::Relaxed);
                if plan.ops > 0 && index >= plan.ops {
                    break;
                }
                seq += 1;
                let begun = Instant::now();
                let cycle = || -> Result<i32, Error> {
                    let mut stream = connect(plan.server(conn), plan.session_timeout_ms)?;
                    let path = format!("{}/{}-{}-{}", plan.parent, run_id, conn, seq);
                    let err = call(&mut stream, 1, op::CREATE, &create(path, value.clone(), FLAG_EPHEMERAL))?;
                    let close_err = call(&mut stream, 2, op::CLOSE_SESSION, &Request::CloseSession)?;
                    let _ = stream.shutdown(Shutdown::Both);
                    Ok(if err != 0 { err } else { close_err })
                };
                match cycle() {
                    Ok(err) => {
                        let now = Instant::now();
                        result.writes.record(now - begun);
                        result.last_reply = Some(now);
                        if err != 0 {
                            result.record_error(err);
                        }
                    }
                    Err(e) => {
                        result.failures.push(e.to_string());
                        break;
                    }
                }
            }
            result
        }));
    }
    before_start();
    barrier.wait();
    let started = Instant::now();
    let mut total = ConnResult::new();
    for handle in handles {
        total.merge(handle.join().unwrap_or_else(|_| ConnResult::failed("churn thread panicked".into())));
    }
    (total, started)
}

// ---------------------------------------------------------------------------
// Watch fan-out

/// One watching session of the fan-out, polled without blocking.
struct Watcher {
    stream: TcpStream,
    /// Bytes received and not yet parsed into frames (bounded by one frame).
    input: Vec<u8>,
    notified: bool,
    closed: bool,
    /// The closeSession after the measurement was answered.
    close_answered: bool,
}

/// What the fan-out measured.
struct Fanout {
    sessions: usize,
    connect_seconds: f64,
    notifications: Histogram,
    /// From just before the setData was sent to the last notification.
    fanout_seconds: f64,
    write_latency: Duration,
    cpu: Option<(f64, String)>,
    /// Sessions whose closeSession got no answer (within REPLY_WAIT_MS).
    close_unanswered: usize,
    failures: Vec<String>,
}

/// Opens `sessions` sessions in parallel, each with a data watch on `path`.
fn open_watchers(plan: &Plan, path: &str, sessions: usize) -> Result<Vec<Watcher>, Error> {
    let threads = limits::FANOUT_THREADS.min(sessions.max(1));
    let mut handles = Vec::with_capacity(threads);
    for thread_index in 0..threads {
        let (plan, path) = (plan.clone(), path.to_owned());
        handles.push(thread::spawn(move || -> Result<Vec<Watcher>, Error> {
            let mut watchers = Vec::new();
            for session in (thread_index..sessions).step_by(threads) {
                let mut stream = connect(plan.server(session), plan.session_timeout_ms)?;
                let request = Request::GetData(PathWatchRequest { path: path.clone(), watch: true });
                let err = call(&mut stream, 1, op::GET_DATA, &request)?;
                if err != 0 {
                    return Err(format!("getData {path} with watch failed with error {err}").into());
                }
                stream.set_nonblocking(true)?;
                watchers.push(Watcher { stream, input: Vec::with_capacity(256), notified: false, closed: false, close_answered: false });
            }
            Ok(watchers)
        }));
    }
    let mut watchers = Vec::with_capacity(sessions);
    for handle in handles {
        watchers.extend(handle.join().map_err(|_| "watcher thread panicked")??);
    }
    Ok(watchers)
}

/// Reads what a watcher's socket has and calls `on_frame` for each whole frame,
/// including frames that arrived just before the server closed the socket (a
/// closeSession reply and the FIN often come in one read). Returns false once
/// the connection is closed or broken.
fn pump(watcher: &mut Watcher, mut on_frame: impl FnMut(ReplyHeader, Reader)) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        let open = match watcher.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                watcher.input.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => false,
        };
        // Parse after every chunk, so the buffer holds at most one partial frame.
        while watcher.input.len() >= 4 {
            let length = i32::from_be_bytes([watcher.input[0], watcher.input[1], watcher.input[2], watcher.input[3]]);
            if length < 0 || length as usize > limits::FRAME_BYTES_MAX {
                return false;
            }
            if watcher.input.len() < 4 + length as usize {
                break;
            }
            let frame = Bytes::copy_from_slice(&watcher.input[4..4 + length as usize]);
            watcher.input.drain(..4 + length as usize);
            let mut reader = Reader::new(frame);
            match ReplyHeader::decode(&mut reader) {
                Ok(header) => on_frame(header, reader),
                Err(_) => return false,
            }
        }
        if !open {
            return false;
        }
    }
}

/// Polls `watchers` until `done(watcher)` holds for all of them or `deadline`.
fn poll_until(
    watchers: &mut [Watcher],
    deadline: Instant,
    mut on_frame: impl FnMut(&mut Watcher, ReplyHeader, Reader, Instant),
    done: impl Fn(&Watcher) -> bool,
) {
    let mut fds: Vec<libc::pollfd> = watchers
        .iter()
        .map(|w| libc::pollfd { fd: w.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    loop {
        let mut pending = 0;
        for (fd, watcher) in fds.iter_mut().zip(watchers.iter()) {
            // A negative fd is skipped by poll.
            if done(watcher) || watcher.closed {
                fd.fd = -1;
            } else {
                pending += 1;
            }
        }
        let now = Instant::now();
        if pending == 0 || now >= deadline {
            return;
        }
        let timeout_ms = (deadline - now).as_millis().min(100) as i32;
        // SAFETY: fds is a valid array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready <= 0 {
            continue;
        }
        let now = Instant::now();
        for (fd, watcher) in fds.iter().zip(watchers.iter_mut()) {
            if fd.fd < 0 || fd.revents == 0 {
                continue;
            }
            let mut frames = Vec::new();
            let open = pump(watcher, |header, reader| frames.push((header, reader)));
            for (header, reader) in frames {
                on_frame(watcher, header, reader, now);
            }
            if !open {
                watcher.closed = true;
            }
        }
    }
}

fn run_fanout(plan: &Plan, sessions: usize, run_id: &str, pids: &[u32]) -> Result<Fanout, Error> {
    let path = format!("{}/watched-{run_id}", plan.parent);
    ensure_path(plan, &path)?;
    sync_servers(plan, &path)?;
    let connect_started = Instant::now();
    let mut watchers = open_watchers(plan, &path, sessions)?;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let mut writer = connect(plan.server(0), plan.session_timeout_ms)?;

    // Split the watchers over poller threads; each waits at the barrier until
    // the write is about to leave.
    let threads = limits::FANOUT_THREADS.min(sessions.max(1));
    let mut groups: Vec<Vec<Watcher>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, watcher) in watchers.drain(..).enumerate() {
        groups[index % threads].push(watcher);
    }
    let barrier = Arc::new(Barrier::new(threads + 1));
    let write_time = Arc::new(Mutex::new(None::<Instant>));
    let seconds = plan.seconds.max(1.0);
    let mut handles = Vec::with_capacity(threads);
    for mut group in groups {
        let (barrier, write_time, path) = (barrier.clone(), write_time.clone(), path.clone());
        handles.push(thread::spawn(move || {
            barrier.wait();
            let started = (*write_time.lock().unwrap_or_else(|e| e.into_inner())).unwrap_or_else(Instant::now);
            let mut latencies = Histogram::new();
            let mut last = None::<Instant>;
            let mut failures = Vec::new();
            let deadline = started + Duration::from_secs_f64(seconds);
            poll_until(
                &mut group,
                deadline,
                |watcher, header, mut reader, now| {
                    if header.xid != -1 {
                        return;
                    }
                    match WatcherEvent::decode(&mut reader) {
                        // NodeDataChanged (3) on the watched path.
                        Ok(event) if event.event_type == 3 && event.path == path && !watcher.notified => {
                            watcher.notified = true;
                            latencies.record(now.saturating_duration_since(started));
                            last = Some(last.map_or(now, |l: Instant| l.max(now)));
                        }
                        Ok(event) => failures.push(format!("unexpected event {event:?}")),
                        Err(e) => failures.push(format!("bad watch event: {e}")),
                    }
                },
                |watcher| watcher.notified,
            );
            let missed = group.iter().filter(|w| !w.notified).count();
            if missed > 0 {
                failures.push(format!("{missed} session(s) not notified within {seconds} s"));
            }
            (group, latencies, last, failures)
        }));
    }

    let cpu_before = if pids.is_empty() { None } else { Some(cpu_sample(pids)?) };
    // Record the write time before releasing the pollers, then send the write.
    let written = Instant::now();
    *write_time.lock().unwrap_or_else(|e| e.into_inner()) = Some(written);
    barrier.wait();
    let request = SetDataRequest { path: path.clone(), data: Some(Bytes::from_static(b"changed")), version: -1 };
    let err = call(&mut writer, 1, op::SET_DATA, &Request::SetData(request))?;
    let write_latency = written.elapsed();
    if err != 0 {
        return Err(format!("setData {path} failed with error {err}").into());
    }

    let mut notifications = Histogram::new();
    let mut last = None::<Instant>;
    let mut failures = Vec::new();
    let mut all = Vec::with_capacity(sessions);
    for handle in handles {
        let (group, latencies, group_last, group_failures) = handle.join().map_err(|_| "poller panicked")?;
        notifications.merge(&latencies);
        last = match (last, group_last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        failures.extend(group_failures);
        all.extend(group);
    }
    let cpu = match cpu_before {
        Some(before) => Some(cpu_between(&before, &cpu_sample(pids)?)),
        None => None,
    };
    let fanout_seconds = last.map(|l| l.saturating_duration_since(written).as_secs_f64()).unwrap_or(0.0);

    // Close every session (not measured): closeSession on each, then wait,
    // bounded, for the replies or the server closing the socket.
    let mut close = Vec::new();
    encode_request(&mut close, 2, op::CLOSE_SESSION, &Request::CloseSession);
    for watcher in &mut all {
        watcher.stream.set_nonblocking(false).ok();
        if watcher.stream.write_all(&close).is_err() {
            watcher.closed = true;
        }
        watcher.stream.set_nonblocking(true).ok();
    }
    let deadline = Instant::now() + Duration::from_millis(limits::REPLY_WAIT_MS);
    poll_until(&mut all, deadline, |watcher, header, _, _| {
        if header.xid == 2 {
            watcher.close_answered = true;
            watcher.closed = true;
        }
    }, |_| false);
    let close_unanswered = all.iter().filter(|w| !w.close_answered).count();
    close_session(writer, 2);
    drop(all);
    Ok(Fanout {
        sessions,
        connect_seconds,
        notifications,
        fanout_seconds,
        write_latency,
        cpu,
        close_unanswered,
        failures,
    })
}

// ---------------------------------------------------------------------------
// Reporting

/// An ordered list of result fields; values are already JSON literals.
/// `text` as a JSON string literal (quotes and backslashes escaped).
fn json_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

struct Report {
    fields: Vec<(&'static str, String)>,
}

impl Report {
    fn put(&mut self, key: &'static str, value: impl ToString) {
        self.fields.push((key, value.to_string()));
    }

    fn put_str(&mut self, key: &'static str, value: &str) {
        self.fields.push((key, json_string(value)));
    }

    fn print(&self, json: bool) {
        if json {
            let body: Vec<String> = self.fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            println!("{{{}}}", body.join(","));
        } else {
            let body: Vec<String> = self.fields.iter().map(|(k, v)| format!("{k}={}", v.trim_matches('"'))).collect();
            println!("{}", body.join(" "));
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("warden-loadgen: {e}");
        std::process::exit(1);
    }
}

fn plan(args: &Args) -> Result<Plan, Error> {
    let servers: Vec<String> = args.server.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    if servers.is_empty() {
        return Err("--server needs at least one host:port".into());
    }
    let large = args.workload == Workload::LargeValues;
    let mut plan = Plan {
        servers,
        workload: args.workload,
        connections: args.connections,
        in_flight: if args.workload == Workload::CreateSerial { 1 } else { args.in_flight },
        ops: args.ops,
        seconds: args.seconds,
        rate: args.rate,
        value_bytes: args.value_bytes.unwrap_or(if large { 100 * 1024 } else { 100 }),
        keys: args.keys.unwrap_or(if large { 100 } else { 1000 }),
        parent: args.parent.clone(),
        session_timeout_ms: args.session_timeout_ms,
    };
    match args.workload {
        Workload::Populate => {
            if args.count == 0 {
                return Err("populate needs --count".into());
            }
            plan.ops = args.count;
        }
        Workload::DeleteHeavy => {
            // Every delete removes one pre-populated node; more would fail.
            plan.ops = if plan.ops == 0 { plan.keys } else { plan.ops.min(plan.keys) };
        }
        _ => {}
    }
    if !(1..=limits::CONNECTIONS_MAX).contains(&plan.connections) {
        return Err(format!("--connections must be 1..={}", limits::CONNECTIONS_MAX).into());
    }
    if !(1..=limits::IN_FLIGHT_MAX).contains(&plan.in_flight) {
        return Err(format!("--in-flight must be 1..={}", limits::IN_FLIGHT_MAX).into());
    }
    if plan.value_bytes > limits::VALUE_BYTES_MAX {
        return Err(format!("--value-bytes must be at most {}", limits::VALUE_BYTES_MAX).into());
    }
    if plan.ops == 0 && plan.seconds <= 0.0 {
        return Err("give --ops or --seconds (every run must be bounded)".into());
    }
    if plan.rate < 0.0 || !plan.rate.is_finite() {
        return Err("--rate must be a non-negative number".into());
    }
    if args.workload.read_percent().is_some() && plan.keys == 0 {
        return Err("read/write mixes need --keys >= 1".into());
    }
    if args.workload == Workload::WatchFanout && !(1..=limits::FANOUT_SESSIONS_MAX).contains(&args.sessions) {
        return Err(format!("--sessions must be 1..={}", limits::FANOUT_SESSIONS_MAX).into());
    }
    if !plan.parent.starts_with('/') || plan.parent.len() < 2 || plan.parent.ends_with('/') {
        return Err("--parent must be an absolute path other than /".into());
    }
    Ok(plan)
}

fn run(args: &Args) -> Result<(), Error> {
    let plan = plan(args)?;
    let pids = match &args.pids {
        Some(text) => parse_pids(text)?,
        None => Vec::new(),
    };
    let files_needed = match plan.workload {
        Workload::WatchFanout => args.sessions + 64,
        _ => plan.connections * 2 + 64,
    };
    raise_nofile(files_needed as u64)?;

    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let run_id = format!("r{:x}", (nanos as u64) ^ ((std::process::id() as u64) << 40));
    ensure_path(&plan, &plan.parent)?;

    let mut report = Report { fields: Vec::new() };
    report.put_str("workload", plan.workload.name());
    report.put_str("server", &plan.servers.join(","));

    if plan.workload == Workload::WatchFanout {
        let fanout = run_fanout(&plan, args.sessions, &run_id, &pids)?;
        let n = &fanout.notifications;
        report.put("sessions", fanout.sessions);
        report.put("notified", n.count);
        report.put("connect_seconds", format!("{:.3}", fanout.connect_seconds));
        report.put("fanout_ms", format!("{:.3}", fanout.fanout_seconds * 1e3));
        report.put("write_us", fanout.write_latency.as_micros());
        report.put("ops", n.count);
        report.put("throughput", format!("{:.1}", n.count as f64 / fanout.fanout_seconds.max(1e-9)));
        report.put("mean_us", format!("{:.1}", n.mean()));
        report.put("p50_us", n.percentile(50.0));
        report.put("p99_us", n.percentile(99.0));
        report.put("p999_us", n.percentile(99.9));
        report.put("max_us", n.max_us);
        if let Some((cpu, threads)) = &fanout.cpu {
            report.put("server_cpu_ms", format!("{:.1}", cpu * 1e3));
            report.put("cpu_us_per_op", format!("{:.2}", cpu * 1e6 / (n.count.max(1)) as f64));
            report.put("server_threads_ms", threads);
        }
        report.put("close_unanswered", fanout.close_unanswered);
        report.put("errors", 0);
        report.put("failures", fanout.failures.len());
        report.print(args.json);
        for failure in fanout.failures.iter().take(5) {
            eprintln!("warden-loadgen: {failure}");
        }
        return if fanout.failures.is_empty() { Ok(()) } else { Err("watch fan-out incomplete".into()) };
    }

    // Setup, outside the clock.
    let mut parent = plan.parent.clone();
    if plan.workload.read_percent().is_some() && !args.skip_setup {
        populate(&plan, &parent, plan.keys)?;
    }
    if plan.workload == Workload::DeleteHeavy {
        parent = format!("{}/{run_id}", plan.parent);
        ensure_path(&plan, &parent)?;
        populate(&plan, &parent, plan.keys)?;
    }

    let mut cpu_before = None;
    let sample_cpu = |slot: &mut Option<Result<CpuSample, Error>>| {
        if !pids.is_empty() {
            *slot = Some(cpu_sample(&pids));
        }
    };
    let (result, started) = if plan.workload == Workload::SessionChurn {
        run_churn(&plan, &run_id, || sample_cpu(&mut cpu_before))
    } else {
        let phase = Phase {
            plan: &plan,
            workload: plan.workload,
            parent,
            run_id: run_id.clone(),
            connections: plan.connections,
            in_flight: plan.in_flight,
            ops_max: plan.ops,
            seconds: plan.seconds,
            rate: plan.rate,
        };
        run_phase(&phase, || sample_cpu(&mut cpu_before))?
    };
    let cpu = match cpu_before {
        Some(before) => Some(cpu_between(&before?, &cpu_sample(&pids)?)),
        None => None,
    };

    let seconds = result.last_reply.map(|l| l.duration_since(started).as_secs_f64()).unwrap_or(0.0).max(1e-9);
    let mut all = result.reads.clone();
    all.merge(&result.writes);
    let ops = all.count;
    report.put("connections", plan.connections);
    report.put("in_flight", plan.in_flight);
    report.put("value_bytes", plan.value_bytes);
    report.put("rate", plan.rate);
    report.put("ops", ops);
    report.put("seconds", format!("{seconds:.3}"));
    report.put("throughput", format!("{:.1}", ops as f64 / seconds));
    report.put("mean_us", format!("{:.1}", all.mean()));
    report.put("p50_us", all.percentile(50.0));
    report.put("p99_us", all.percentile(99.0));
    report.put("p999_us", all.percentile(99.9));
    report.put("max_us", all.max_us);
    report.put("reads", result.reads.count);
    report.put("read_p99_us", result.reads.percentile(99.0));
    report.put("writes", result.writes.count);
    report.put("write_p99_us", result.writes.percentile(99.0));
    if let Some((cpu, threads)) = cpu {
        report.put("server_cpu_ms", format!("{:.1}", cpu * 1e3));
        report.put("cpu_us_per_op", format!("{:.2}", cpu * 1e6 / ops.max(1) as f64));
        report.put("server_threads_ms", threads);
    }
    report.put("errors", result.errors);
    report.put("first_error", result.first_error.map(|e| e.to_string()).unwrap_or_else(|| "null".into()));
    report.put("failures", result.failures.len());
    report.print(args.json);
    for failure in result.failures.iter().take(5) {
        eprintln!("warden-loadgen: connection failed: {failure}");
    }
    if !result.failures.is_empty() {
        return Err(format!("{} connection(s) failed", result.failures.len()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{cpu_between, cpu_sample, json_string, Histogram};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// This thread's own CPU time.
    fn thread_cpu() -> Duration {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: now is a valid timespec for clock_gettime to fill in.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) }, 0);
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }

    /// Spins until this thread has used `cpu` of CPU time, then sets
    /// `spent` and spins on until `stop` (if any) says so.
    fn burn(cpu: Duration, spent: &AtomicBool, stop: Option<&AtomicBool>) {
        let mut x = 0u64;
        loop {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            if thread_cpu() >= cpu {
                spent.store(true, Ordering::Release);
                if stop.is_none_or(|stop| stop.load(Ordering::Acquire)) {
                    return;
                }
            }
        }
    }

    #[test]
    fn thread_cpu_names_the_busy_thread_and_is_valid_json() {
        let pid = std::process::id();
        let name = "busy \"q\\";
        // A thread that has exited counts in the process's total only.
        let before = cpu_sample(&[pid]).unwrap();
        let spent = Arc::new(AtomicBool::new(false));
        let flag = spent.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || burn(Duration::from_millis(200), &flag, None)).unwrap().join().unwrap();
        let (total, threads) = cpu_between(&before, &cpu_sample(&[pid]).unwrap());
        assert!(total >= 0.18, "total {total}");
        assert!(threads.starts_with('{') && threads.ends_with('}'), "{threads}");

        // A running one is named, its name escaped.
        let before = cpu_sample(&[pid]).unwrap();
        let (spent, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let busy = {
            let (spent, stop) = (spent.clone(), stop.clone());
            std::thread::Builder::new().name(name.into()).spawn(move || burn(Duration::from_millis(100), &spent, Some(&stop))).unwrap()
        };
        while !spent.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let after = cpu_sample(&[pid]).unwrap();
        stop.store(true, Ordering::Release);
        busy.join().unwrap();
        let (_, threads) = cpu_between(&before, &after);
        let key = json_string(&format!("{pid}/{name}"));
        assert!(threads.contains(&format!("{key}:")), "{threads} lacks {key}");
        assert_eq!(json_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut previous = 0;
        for value in [0u32, 1, 127, 128, 129, 255, 256, 1000, 65_535, 1_000_000, u32::MAX] {
            let index = Histogram::bucket(value);
            assert!(index >= previous);
            previous = index;
            let high = Histogram::bucket_high(index);
            assert!(high >= value as u64, "{value} -> bucket {index} high {high}");
            assert!(high as f64 <= value as f64 * 1.008 + 1.0, "{value} -> {high}");
        }
        let mut histogram = Histogram::new();
        for micros in 1..=1000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        // Percentiles round up to their bucket's top: within 0.8 %.
        assert!((500..=504).contains(&histogram.percentile(50.0)));
        assert!((990..=998).contains(&histogram.percentile(99.0)));
        assert_eq!(histogram.percentile(100.0), 1000);
    }
}
