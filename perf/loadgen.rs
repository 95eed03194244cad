//! warden-loadgen: a ZooKeeper-protocol load generator (std threads, blocking
//! sockets, warden's own jute codec). Works against warden and Apache ZooKeeper.
//!
//! N connections, each its own session, each with a writer thread that sends
//! request frames and a reader thread that matches replies to requests by xid
//! (ZooKeeper answers a connection's requests in order). At most `--in-flight K`
//! requests are outstanding per connection. Latency is measured per request from
//! the moment it is queued for sending to the moment its reply is read.
//!
//! Workloads:
//!   create-serial  K=1 creates of unique nodes under --parent
//!   create         pipelined creates of unique nodes under --parent
//!   set            setData on a pool of --keys nodes (--parent/n0 .. n{keys-1});
//!                  the pool is created first unless --skip-setup
//!   populate       create --count nodes --parent/n0 .. n{count-1}, pipelined
//!
//! Every run is bounded: by --ops (or --count for populate) and by --seconds.
//! Prints one line of results (or one JSON object with --json).

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use warden::proto::{
    op, Acl, ConnectRequest, ConnectResponse, CreateRequest, Id, Jute, Reader, ReplyHeader, Request, RequestHeader,
    SetDataRequest, Writer,
};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    CreateSerial,
    Create,
    Set,
    Populate,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::CreateSerial => "create-serial",
            Workload::Create => "create",
            Workload::Set => "set",
            Workload::Populate => "populate",
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(name = "warden-loadgen", about = "ZooKeeper-protocol load generator")]
struct Args {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:2181")]
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
    /// Bytes of data per create / setData.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Size of the setData key pool.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Nodes to create for populate.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Parent node of everything this tool creates (created if missing).
    #[arg(long, default_value = "/bench")]
    parent: String,
    /// set: assume the key pool exists (e.g. made by populate).
    #[arg(long)]
    skip_setup: bool,
    /// Session timeout requested, ms.
    #[arg(long, default_value_t = 30000)]
    session_timeout_ms: i32,
    /// Print a JSON object instead of the one-line summary.
    #[arg(long)]
    json: bool,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

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
    if !(0..=64 * 1024 * 1024).contains(&length) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame length {length}")));
    }
    let mut body = vec![0u8; length as usize];
    reader.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// Opens a connection and establishes a fresh session.
fn connect(args: &Args) -> Result<TcpStream, Error> {
    let address = args.server.to_socket_addrs()?.next().ok_or("server address did not resolve")?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut writer = Writer::new();
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout_ms: args.session_timeout_ms,
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
        return Err("server refused the session".into());
    }
    Ok(stream)
}

/// Sends a closeSession and waits (bounded) for its reply.
fn close_session(mut stream: TcpStream, xid: i32) {
    let mut frame = Vec::new();
    encode_request(&mut frame, xid, op::CLOSE_SESSION, &Request::CloseSession);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(&frame).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match read_frame(&mut stream) {
                Ok(reply) => {
                    let header = ReplyHeader::decode(&mut Reader::new(reply));
                    if matches!(header, Ok(h) if h.xid == xid) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// What one connection's run produced.
#[derive(Default)]
struct ConnResult {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<i32>,
    last_reply: Option<Instant>,
    failure: Option<String>,
}

/// The requests outstanding on one connection: (xid, time queued, is the
/// closing closeSession).
struct Window {
    queue: Mutex<VecDeque<(i32, Instant, bool)>>,
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
    rng: u64,
    /// Shared counter of requests issued (ops budget, populate indices).
    issued: Arc<AtomicU64>,
    ops_max: u64,
}

impl Generator {
    fn next(&mut self) -> Option<(i32, Request)> {
        let index = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.ops_max > 0 && index >= self.ops_max {
            return None;
        }
        match self.workload {
            Workload::CreateSerial | Workload::Create => {
                self.seq += 1;
                let path = format!("{}/{}-{}-{}", self.parent, self.run_id, self.conn, self.seq);
                Some((op::CREATE, create(path, self.value.clone())))
            }
            Workload::Populate => {
                let path = format!("{}/n{}", self.parent, index);
                Some((op::CREATE, create(path, self.value.clone())))
            }
            Workload::Set => {
                // xorshift64: uniform keys without a dependency.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let key = self.rng % self.keys;
                let path = format!("{}/n{}", self.parent, key);
                Some((
                    op::SET_DATA,
                    Request::SetData(SetDataRequest { path, data: Some(self.value.clone()), version: -1 }),
                ))
            }
        }
    }
}

fn create(path: String, value: Bytes) -> Request {
    Request::Create {
        opcode: op::CREATE,
        request: CreateRequest { path, data: Some(value), acl: open_acl(), flags: 0 },
    }
}

/// Runs one connection: a writer (this thread) and a reader thread. The writer
/// ends the stream with a closeSession, whose reply tells the reader it is done.
fn run_connection(
    stream: TcpStream,
    mut generator: Generator,
    in_flight: usize,
    seconds: f64,
    start: Arc<Barrier>,
    abort: Arc<AtomicBool>,
) -> ConnResult {
    let window = Arc::new(Window { queue: Mutex::new(VecDeque::with_capacity(in_flight)), changed: Condvar::new() });
    let reader_done = Arc::new(AtomicBool::new(false));
    let read_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return ConnResult { failure: Some(e.to_string()), ..Default::default() },
    };
    let reader = {
        let window = window.clone();
        let reader_done = reader_done.clone();
        let abort = abort.clone();
        thread::spawn(move || {
            let mut result = ConnResult::default();
            let mut input = BufReader::with_capacity(256 * 1024, read_stream);
            loop {
                let frame = match read_frame(&mut input) {
                    Ok(frame) => frame,
                    Err(e) => {
                        result.failure = Some(format!("read: {e}"));
                        abort.store(true, Ordering::Relaxed);
                        break;
                    }
                };
                let now = Instant::now();
                let header = match ReplyHeader::decode(&mut Reader::new(frame)) {
                    Ok(h) => h,
                    Err(e) => {
                        result.failure = Some(format!("bad reply header: {e}"));
                        abort.store(true, Ordering::Relaxed);
                        break;
                    }
                };
                if header.xid == -1 || header.xid == -2 {
                    continue; // watch event or ping reply
                }
                let sent = {
                    let mut queue = window.queue.lock().unwrap();
                    let front = queue.pop_front();
                    window.changed.notify_all();
                    front
                };
                match sent {
                    Some((xid, _, true)) if xid == header.xid => break, // closeSession answered
                    Some((xid, at, false)) if xid == header.xid => {
                        result.latencies_us.push(now.duration_since(at).as_micros().min(u32::MAX as u128) as u32);
                        result.last_reply = Some(now);
                        if header.err != 0 {
                            result.errors += 1;
                            result.first_error.get_or_insert(header.err);
                        }
                    }
                    other => {
                        result.failure = Some(format!("reply xid {} does not match {:?}", header.xid, other));
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
    let deadline = if seconds > 0.0 { Some(Instant::now() + Duration::from_secs_f64(seconds)) } else { None };
    let mut out_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return ConnResult { failure: Some(e.to_string()), ..Default::default() },
    };
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut xid: i32 = 1;
    let mut write_failure = None;
    'send: loop {
        if abort.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Some((opcode, request)) = generator.next() else { break };
        {
            let mut queue = window.queue.lock().unwrap();
            while queue.len() >= in_flight {
                if !buffer.is_empty() {
                    drop(queue);
                    if let Err(e) = out_stream.write_all(&buffer) {
                        write_failure = Some(format!("write: {e}"));
                        break 'send;
                    }
                    buffer.clear();
                    queue = window.queue.lock().unwrap();
                    continue;
                }
                if reader_done.load(Ordering::Acquire) {
                    break 'send; // the reader gave up
                }
                queue = window.changed.wait_timeout(queue, Duration::from_millis(100)).unwrap().0;
            }
            queue.push_back((xid, Instant::now(), false));
        }
        encode_request(&mut buffer, xid, opcode, &request);
        xid = xid.wrapping_add(1).max(1);
        if buffer.len() >= 32 * 1024 {
            if let Err(e) = out_stream.write_all(&buffer) {
                write_failure = Some(format!("write: {e}"));
                break;
            }
            buffer.clear();
        }
    }
    if write_failure.is_none() && !reader_done.load(Ordering::Acquire) {
        window.queue.lock().unwrap().push_back((xid, Instant::now(), true));
        encode_request(&mut buffer, xid, op::CLOSE_SESSION, &Request::CloseSession);
        if let Err(e) = out_stream.write_all(&buffer) {
            write_failure = Some(format!("write: {e}"));
        }
    }
    if write_failure.is_some() || abort.load(Ordering::Relaxed) {
        // Unblock the reader: nothing more will be answered.
        let _ = stream.shutdown(Shutdown::Both);
    }
    let mut result = reader.join().unwrap_or_else(|_| ConnResult { failure: Some("reader panicked".into()), ..Default::default() });
    if result.failure.is_none() {
        result.failure = write_failure;
    }
    let _ = stream.shutdown(Shutdown::Both);
    result
}

/// Creates `path` (ignoring NODEEXISTS) on a fresh session.
fn ensure_parent(args: &Args) -> Result<(), Error> {
    let mut stream = connect(args)?;
    let mut components = String::new();
    let mut xid = 1;
    for part in args.parent.split('/').filter(|p| !p.is_empty()) {
        components.push('/');
        components.push_str(part);
        let mut frame = Vec::new();
        encode_request(&mut frame, xid, op::CREATE, &create(components.clone(), Bytes::new()));
        stream.write_all(&frame)?;
        let header = ReplyHeader::decode(&mut Reader::new(read_frame(&mut stream)?))?;
        if header.err != 0 && header.err != -110 {
            return Err(format!("create {components} failed with error {}", header.err).into());
        }
        xid += 1;
    }
    close_session(stream, xid);
    Ok(())
}

/// Creates the setData key pool (ignoring NODEEXISTS), pipelined on one connection.
fn setup_keys(args: &Args) -> Result<(), Error> {
    let stream = connect(args)?;
    let generator = Generator {
        workload: Workload::Populate,
        parent: args.parent.clone(),
        run_id: String::new(),
        conn: 0,
        seq: 0,
        value: Bytes::from(vec![b'k'; args.value_bytes]),
        keys: args.keys,
        rng: 1,
        issued: Arc::new(AtomicU64::new(0)),
        ops_max: args.keys,
    };
    let result = run_connection(
        stream,
        generator,
        64,
        120.0,
        Arc::new(Barrier::new(1)),
        Arc::new(AtomicBool::new(false)),
    );
    if let Some(failure) = result.failure {
        return Err(format!("setup: {failure}").into());
    }
    if let Some(err) = result.first_error {
        if err != -110 {
            return Err(format!("setup: create failed with error {err}").into());
        }
    }
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let mut args = Args::parse();
    if let Err(e) = run(&mut args) {
        eprintln!("warden-loadgen: {e}");
        std::process::exit(1);
    }
}

fn run(args: &mut Args) -> Result<(), Error> {
    if args.workload == Workload::CreateSerial {
        args.in_flight = 1;
    }
    if args.workload == Workload::Populate {
        if args.count == 0 {
            return Err("populate needs --count".into());
        }
        args.ops = args.count;
    }
    if args.connections == 0 || args.in_flight == 0 {
        return Err("--connections and --in-flight must be at least 1".into());
    }
    if args.ops == 0 && args.seconds <= 0.0 {
        return Err("give --ops or --seconds (every run must be bounded)".into());
    }
    if args.workload == Workload::Set && args.keys == 0 {
        return Err("set needs --keys >= 1".into());
    }
    if !args.parent.starts_with('/') || args.parent.len() < 2 || args.parent.ends_with('/') {
        return Err("--parent must be an absolute path other than /".into());
    }

    ensure_parent(args)?;
    if args.workload == Workload::Set && !args.skip_setup {
        setup_keys(args)?;
    }

    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let run_id = format!("r{:x}", (nanos as u64) ^ ((std::process::id() as u64) << 40));
    let issued = Arc::new(AtomicU64::new(0));
    let abort = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(args.connections + 1));
    let value = Bytes::from(vec![b'v'; args.value_bytes]);

    // Connect every session before the clock starts.
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        streams.push(connect(args)?);
    }
    let mut handles = Vec::with_capacity(args.connections);
    for (conn, stream) in streams.into_iter().enumerate() {
        let generator = Generator {
            workload: args.workload,
            parent: args.parent.clone(),
            run_id: run_id.clone(),
            conn,
            seq: 0,
            value: value.clone(),
            keys: args.keys,
            rng: 0x9E37_79B9_7F4A_7C15 ^ ((conn as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)),
            issued: issued.clone(),
            ops_max: args.ops,
        };
        let in_flight = args.in_flight;
        let barrier = barrier.clone();
        let abort = abort.clone();
        let seconds = args.seconds;
        handles.push(thread::spawn(move || run_connection(stream, generator, in_flight, seconds, barrier, abort)));
    }
    barrier.wait();
    let started = Instant::now();

    let mut latencies = Vec::new();
    let mut errors = 0u64;
    let mut first_error = None;
    let mut last_reply = started;
    let mut failures = Vec::new();
    for handle in handles {
        let result = handle.join().map_err(|_| "connection thread panicked")?;
        latencies.extend_from_slice(&result.latencies_us);
        errors += result.errors;
        if first_error.is_none() {
            first_error = result.first_error;
        }
        if let Some(at) = result.last_reply {
            last_reply = last_reply.max(at);
        }
        if let Some(f) = result.failure {
            failures.push(f);
        }
    }
    let seconds = last_reply.duration_since(started).as_secs_f64().max(1e-9);
    latencies.sort_unstable();
    let ops = latencies.len() as u64;
    let throughput = ops as f64 / seconds;
    let (p50, p99, p999, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        latencies.last().copied().unwrap_or(0),
    );
    let mean = if ops > 0 { latencies.iter().map(|&l| l as u64).sum::<u64>() as f64 / ops as f64 } else { 0.0 };
    if args.json {
        println!(
            "{{\"workload\":\"{}\",\"server\":\"{}\",\"connections\":{},\"in_flight\":{},\"value_bytes\":{},\"ops\":{},\"seconds\":{:.3},\"throughput\":{:.1},\"mean_us\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"errors\":{},\"first_error\":{},\"failures\":{}}}",
            args.workload.name(),
            args.server,
            args.connections,
            args.in_flight,
            args.value_bytes,
            ops,
            seconds,
            throughput,
            mean,
            p50,
            p99,
            p999,
            max,
            errors,
            first_error.map(|e| e.to_string()).unwrap_or_else(|| "null".into()),
            failures.len()
        );
    } else {
        println!(
            "workload={} connections={} in_flight={} value_bytes={} ops={} seconds={:.3} throughput={:.1} ops/s mean_us={:.1} p50_us={} p99_us={} p999_us={} max_us={} errors={}{}",
            args.workload.name(),
            args.connections,
            args.in_flight,
            args.value_bytes,
            ops,
            seconds,
            throughput,
            mean,
            p50,
            p99,
            p999,
            max,
            errors,
            first_error.map(|e| format!(" first_error={e}")).unwrap_or_default()
        );
    }
    for failure in &failures {
        eprintln!("warden-loadgen: connection failed: {failure}");
    }
    if !failures.is_empty() {
        return Err(format!("{} connection(s) failed", failures.len()).into());
    }
    Ok(())
}
