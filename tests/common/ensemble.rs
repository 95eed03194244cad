//! Multi-process ensembles on loopback, for tests/ensemble.rs.
//!
//! An [`Ensemble`] is N voters and M observers, each a real server process:
//! `warden server --config <cfg>`, or with `ENSEMBLE_TARGET=apache` Apache
//! ZooKeeper 3.8's `QuorumPeerMain <cfg>` (the Debian package's jars in
//! /usr/share/java), so that every expectation is checked against ZooKeeper
//! itself. The configurations are the shipped examples in `config/`
//! (`ensemble-3/` for 3 voters, `observer/` for 3 voters + 1 observer) with
//! only ports, directories and tickTime rewritten, which also proves that
//! the examples parse; other shapes reuse `ensemble-3/node1.cfg` with
//! generated `server.N` lines.
//!
//! Faults: every node has its own configuration in which every OTHER
//! server's quorum and election ports point at a proxy for that directed pair
//! (i -> j) that forwards to j's real port; a node's own line keeps its real
//! ports and client ports are always direct. [`Ensemble::partition`] makes
//! every proxy between different groups drop what its live connections carry
//! (silently, as a real partition does: the ends notice by their timeouts)
//! and close new ones at once; [`Ensemble::heal`] closes the connections that
//! lost bytes and forwards again. ZooKeeper's election
//! handshake (QuorumCnxManager's InitialMessage) tells the receiver the
//! sender's own election address, which the receiver dials back when the
//! sender has the smaller id; the election proxy rewrites that address to the
//! proxy of the reverse pair so that no connection bypasses the proxies.
//!
//! Each node's stdout and stderr go to `output-<incarnation>.log` in its
//! directory (Apache ZooKeeper logs at INFO through slf4j-simple, with
//! LearnerHandler at DEBUG because ZooKeeper 3.8 logs one TRUNC case only at
//! DEBUG). The leader's sync choice for a learner is read from those files:
//! a line with `Sending DIFF`, `Sending TRUNC` or `Sending SNAP` (ZooKeeper
//! writes "Sending snapshot ..." for SNAP; either is accepted).
//!
//! The client side is a minimal ZooKeeper protocol client written against the
//! protocol, not against warden's codec: sessions that can be resumed on any
//! server, pipelining, a background [`SessionKeeper`] that pings and moves a
//! session across servers as ZooKeeper's client does, a pipelining
//! [`LoadWriter`], and [`tree_digest`], a digest of the whole tree read by a
//! client after `sync`.
//!
//! Every wait and loop is bounded in time; dropping an Ensemble SIGKILLs
//! every process it started and stops its proxies. `ENSEMBLE_KEEP_DATA=1`
//! keeps the directory of a failed test (the path is printed), `=all` of
//! every test.

use super::{frame, Enc};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// tickTime of every test ensemble. initLimit (10) and syncLimit (5) come
/// from the example files, so a dead leader is noticed within a second.
pub const TICK_MS: u32 = 200;
/// The largest session timeout the servers grant: 20 ticks, as in ZooKeeper.
pub const SESSION_TIMEOUT_MS: i32 = 20 * TICK_MS as i32;
/// A reply to a request on a healthy connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A ConnectResponse, or the close of a server that does not serve.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a proxy keeps retrying a target that refuses connections.
const TARGET_RETRY_MAX: Duration = Duration::from_millis(1500);
const FOUR_LETTER_TIMEOUT: Duration = Duration::from_secs(2);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);
/// Upper bound on the life of every background thread (proxies, keepers,
/// writers), in case a test forgets to stop one.
const BACKGROUND_LIFETIME_MAX: Duration = Duration::from_secs(600);
/// Upper bound on the nodes a digest walks.
const DIGEST_NODES_MAX: usize = 100_000;

pub const OP_CREATE: i32 = 1;
pub const OP_DELETE: i32 = 2;
pub const OP_EXISTS: i32 = 3;
pub const OP_GET_DATA: i32 = 4;
pub const OP_SET_DATA: i32 = 5;
pub const OP_GET_CHILDREN: i32 = 8;
pub const OP_SYNC: i32 = 9;
pub const OP_PING: i32 = 11;
pub const OP_CLOSE_SESSION: i32 = -11;

pub const XID_WATCH_EVENT: i32 = -1;
pub const XID_PING: i32 = -2;

pub const OK: i32 = 0;
pub const NONODE: i32 = -101;
pub const NODEEXISTS: i32 = -110;

pub const PERSISTENT: i32 = 0;
pub const EPHEMERAL: i32 = 1;
const PERMS_ALL: i32 = 31;

// ---------------------------------------------------------------------------
// Which server
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Warden,
    Apache,
}

/// `ENSEMBLE_TARGET`: `warden` (default) or `apache`.
pub fn target() -> Target {
    match std::env::var("ENSEMBLE_TARGET").as_deref() {
        Err(_) | Ok("") | Ok("warden") => Target::Warden,
        Ok("apache") => Target::Apache,
        Ok(other) => panic!("ENSEMBLE_TARGET must be warden or apache, not {other:?}"),
    }
}

/// The standalone tests' classpath with slf4j-simple instead of slf4j-nop, so
/// that ZooKeeper's log reaches the console (stderr) at INFO.
fn apache_classpath_logging() -> String {
    assert!(
        Path::new("/usr/share/java/zookeeper.jar").exists(),
        "Apache ZooKeeper is not installed (no /usr/share/java/zookeeper.jar): apt-get install -y zookeeper"
    );
    assert!(
        Path::new("/usr/share/java/slf4j-simple.jar").exists(),
        "no /usr/share/java/slf4j-simple.jar (libslf4j-java)"
    );
    super::apache_classpath()
        .split(':')
        .map(|jar| if jar.ends_with("/slf4j-nop.jar") { "/usr/share/java/slf4j-simple.jar" } else { jar })
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------
// Fault-injecting proxies
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum LinkKind {
    Quorum,
    Election,
}

/// One directed pair's proxy: `from` dials it believing it is `to`.
#[derive(Clone)]
struct Link {
    from: u32,
    to: u32,
    target_port: u16,
    /// Election links only: `from`'s own election address as it advertises
    /// it, and the address `to` must dial instead (the proxy `to` -> `from`).
    rewrite: Option<(String, String)>,
}

struct LiveConnection {
    pair: (u32, u32),
    streams: Vec<TcpStream>,
    closed: Arc<AtomicBool>,
    /// Cut by a partition: bytes are read and dropped (nothing tells the
    /// ends; they find out by their own timeouts, as across a real
    /// partition), and the connection is closed when the partition heals.
    blackholed: Arc<AtomicBool>,
}

#[derive(Default)]
struct NetState {
    /// Unordered pairs (smaller id first) that may not talk.
    blocked: HashSet<(u32, u32)>,
    live: Vec<LiveConnection>,
}

#[derive(Default)]
struct ProxyNet {
    state: Mutex<NetState>,
    stop: AtomicBool,
    /// Election handshakes whose address was rewritten (for diagnostics).
    rewrites: AtomicUsize,
}

fn pair(a: u32, b: u32) -> (u32, u32) {
    (a.min(b), a.max(b))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl ProxyNet {
    fn is_blocked(&self, from: u32, to: u32) -> bool {
        self.state.lock().unwrap().blocked.contains(&pair(from, to))
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener, link: Link) {
        let started = Instant::now();
        for inbound in listener.incoming() {
            if self.stop.load(Ordering::SeqCst) || started.elapsed() > BACKGROUND_LIFETIME_MAX {
                return;
            }
            if let Ok(inbound) = inbound {
                let (net, link) = (self.clone(), link.clone());
                thread::spawn(move || net.forward(inbound, &link));
            }
        }
    }

    fn forward(self: &Arc<Self>, inbound: TcpStream, link: &Link) {
        if self.is_blocked(link.from, link.to) {
            return; // dropping `inbound` closes it: the dialer sees EOF
        }
        // The dialer's connect already succeeded (to the proxy), so a refused
        // connect to the target must not become an at-once close: ZooKeeper's
        // learner retries a refused connect to a leader that is not yet
        // listening, but gives up on a connection closed under it. Keep
        // trying for a while, as a SYN would be retransmitted.
        let started = Instant::now();
        let outbound = loop {
            match TcpStream::connect_timeout(&loopback(link.target_port), TCP_CONNECT_TIMEOUT) {
                Ok(outbound) => break outbound,
                Err(_) if started.elapsed() < TARGET_RETRY_MAX && !self.stop.load(Ordering::SeqCst) => {
                    if self.is_blocked(link.from, link.to) {
                        return;
                    }
                    sleep(Duration::from_millis(20));
                }
                Err(_) => return, // target down: close the dialer's connection
            }
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let closed = Arc::new(AtomicBool::new(false));
        let blackholed = Arc::new(AtomicBool::new(false));
        let (Ok(in_read), Ok(out_read), Ok(in_kept), Ok(out_kept)) =
            (inbound.try_clone(), outbound.try_clone(), inbound.try_clone(), outbound.try_clone())
        else {
            return;
        };
        {
            let mut state = self.state.lock().unwrap();
            if state.blocked.contains(&pair(link.from, link.to)) {
                let _ = inbound.shutdown(Shutdown::Both);
                let _ = outbound.shutdown(Shutdown::Both);
                return;
            }
            state.live.retain(|connection| !connection.closed.load(Ordering::SeqCst));
            state.live.push(LiveConnection {
                pair: pair(link.from, link.to),
                streams: vec![in_kept, out_kept],
                closed: closed.clone(),
                blackholed: blackholed.clone(),
            });
        }
        let (net, rewrite, closed_a, blackholed_a) = (self.clone(), link.rewrite.clone(), closed.clone(), blackholed.clone());
        thread::spawn(move || net.pump(in_read, outbound, rewrite, closed_a, blackholed_a));
        let net = self.clone();
        thread::spawn(move || net.pump(out_read, inbound, None, closed, blackholed));
    }

    /// Copies `source` to `sink` until either side closes, the connection is
    /// cut by a partition, or the network stops; then closes both.
    fn pump(
        &self,
        mut source: TcpStream,
        mut sink: TcpStream,
        rewrite: Option<(String, String)>,
        closed: Arc<AtomicBool>,
        blackholed: Arc<AtomicBool>,
    ) {
        let _ = source.set_read_timeout(Some(Duration::from_millis(200)));
        let started = Instant::now();
        let mut rewrite = rewrite;
        let mut head: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        while !closed.load(Ordering::SeqCst)
            && !self.stop.load(Ordering::SeqCst)
            && started.elapsed() < BACKGROUND_LIFETIME_MAX
        {
            let n = match source.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    // A prefix that never completes is passed on unchanged.
                    if rewrite.is_some() && !head.is_empty() && started.elapsed() > Duration::from_secs(2) {
                        rewrite = None;
                        if sink.write_all(&head).is_err() {
                            break;
                        }
                        head.clear();
                    }
                    continue;
                }
                Err(_) => break,
            };
            if blackholed.load(Ordering::SeqCst) {
                continue;
            }
            let outgoing: Vec<u8> = match &rewrite {
                None => chunk[..n].to_vec(),
                Some((own, replacement)) => {
                    head.extend_from_slice(&chunk[..n]);
                    match rewrite_initial_message(&head, own, replacement) {
                        Prefix::NeedMore if started.elapsed() < Duration::from_secs(2) => continue,
                        Prefix::Rewritten(bytes) => {
                            self.rewrites.fetch_add(1, Ordering::SeqCst);
                            rewrite = None;
                            head.clear();
                            bytes
                        }
                        Prefix::NeedMore | Prefix::NotIt => {
                            rewrite = None;
                            std::mem::take(&mut head)
                        }
                    }
                }
            };
            if sink.write_all(&outgoing).is_err() {
                break;
            }
        }
        closed.store(true, Ordering::SeqCst);
        let _ = source.shutdown(Shutdown::Both);
        let _ = sink.shutdown(Shutdown::Both);
    }
}

enum Prefix {
    NeedMore,
    NotIt,
    Rewritten(Vec<u8>),
}

/// ZooKeeper's election InitialMessage: i64 protocol version (-65536, or
/// -65535 with several `|`-separated addresses), i64 sid, i32 length and the
/// sender's own election address as "host:port". Rewrites `own` to
/// `replacement`; anything else passes unchanged.
fn rewrite_initial_message(head: &[u8], own: &str, replacement: &str) -> Prefix {
    let v1 = (-65536i64).to_be_bytes();
    let v2 = (-65535i64).to_be_bytes();
    let n = head.len().min(8);
    if head[..n] != v1[..n] && head[..n] != v2[..n] {
        return Prefix::NotIt;
    }
    if head.len() < 20 {
        return Prefix::NeedMore;
    }
    let length = i32::from_be_bytes(head[16..20].try_into().unwrap());
    if !(0..=4096).contains(&length) {
        return Prefix::NotIt;
    }
    let end = 20 + length as usize;
    if head.len() < end {
        return Prefix::NeedMore;
    }
    let Ok(addresses) = std::str::from_utf8(&head[20..end]) else {
        return Prefix::NotIt;
    };
    let rewritten: Vec<&str> = addresses.split('|').map(|a| if a == own { replacement } else { a }).collect();
    let rewritten = rewritten.join("|");
    if rewritten == addresses {
        eprintln!("ensemble proxy: election handshake address {addresses:?} is not {own:?}; passed on unchanged");
        return Prefix::NotIt;
    }
    let mut out = head[..16].to_vec();
    out.extend_from_slice(&(rewritten.len() as i32).to_be_bytes());
    out.extend_from_slice(rewritten.as_bytes());
    out.extend_from_slice(&head[end..]);
    Prefix::Rewritten(out)
}

// ---------------------------------------------------------------------------
// Nodes and the ensemble
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Leader,
    Follower,
    Observer,
    Other(String),
}

/// A position in a node's output, to read only what it logged afterwards.
#[derive(Clone, Debug)]
pub struct OutputMark {
    id: u32,
    incarnation: u32,
    offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Diff,
    Trunc,
    Snap,
}

struct Node {
    id: u32,
    observer: bool,
    client_port: u16,
    quorum_port: u16,
    election_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// How many times the process was started; names its output file.
    incarnation: u32,
}

impl Node {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn config_path(&self) -> PathBuf {
        self.dir.join("zoo.cfg")
    }
    fn output_path(&self, incarnation: u32) -> PathBuf {
        self.dir.join(format!("output-{incarnation}.log"))
    }
}

static ENSEMBLE_COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Ensemble {
    pub name: String,
    pub target: Target,
    dir: PathBuf,
    nodes: Vec<Node>,
    net: Arc<ProxyNet>,
    proxy_ports: BTreeMap<(u32, u32, LinkKind), u16>,
    proxy_threads: Vec<JoinHandle<()>>,
    /// One ensemble at a time: on a 2-core machine, parallel ensembles make
    /// elections and session timeouts race the scheduler, not the protocol.
    _exclusive: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

impl Ensemble {
    /// Creates (but does not start) `voters` voters with ids 1..=voters and
    /// `observers` observers after them, in a fresh temporary directory.
    pub fn new(name: &str, voters: u32, observers: u32) -> Ensemble {
        assert!(voters >= 1 && voters + observers <= 9, "{voters} voters + {observers} observers");
        let exclusive = ONE_AT_A_TIME.lock().unwrap_or_else(|poison| poison.into_inner());
        let target = target();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let counter = ENSEMBLE_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("warden-ensemble-{name}-{}-{counter}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create ensemble dir");
        let count = voters + observers;
        let ports = warden::runtime::testkit::free_ports(3 * count as usize);
        let nodes: Vec<Node> = (1..=count)
            .map(|id| {
                let base = 3 * (id as usize - 1);
                Node {
                    id,
                    observer: id > voters,
                    client_port: ports[base],
                    quorum_port: ports[base + 1],
                    election_port: ports[base + 2],
                    dir: dir.join(format!("node{id}")),
                    child: None,
                    incarnation: 0,
                }
            })
            .collect();

        let net = Arc::new(ProxyNet::default());
        let mut proxy_ports = BTreeMap::new();
        let mut listeners = Vec::new();
        for from in 1..=count {
            for to in (1..=count).filter(|&to| to != from) {
                for kind in [LinkKind::Quorum, LinkKind::Election] {
                    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
                    proxy_ports.insert((from, to, kind), listener.local_addr().unwrap().port());
                    listeners.push((from, to, kind, listener));
                }
            }
        }
        let mut proxy_threads = Vec::new();
        for (from, to, kind, listener) in listeners {
            let target_node = &nodes[to as usize - 1];
            let link = Link {
                from,
                to,
                target_port: match kind {
                    LinkKind::Quorum => target_node.quorum_port,
                    LinkKind::Election => target_node.election_port,
                },
                rewrite: (kind == LinkKind::Election).then(|| {
                    let own = format!("127.0.0.1:{}", nodes[from as usize - 1].election_port);
                    let replacement = format!("127.0.0.1:{}", proxy_ports[&(to, from, LinkKind::Election)]);
                    (own, replacement)
                }),
            };
            let net = net.clone();
            proxy_threads.push(thread::spawn(move || net.accept_loop(listener, link)));
        }

        let ensemble = Ensemble { name: name.to_owned(), target, dir, nodes, net, proxy_ports, proxy_threads, _exclusive: exclusive };
        for node in &ensemble.nodes {
            fs::create_dir_all(node.data_dir()).expect("create data dir");
            fs::write(node.data_dir().join("myid"), format!("{}\n", node.id)).expect("write myid");
            fs::write(node.config_path(), ensemble.render_config(node)).expect("write zoo.cfg");
        }
        ensemble
    }

    /// Every id, voters first.
    pub fn ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    pub fn voters(&self) -> Vec<u32> {
        self.nodes.iter().filter(|node| !node.observer).map(|node| node.id).collect()
    }

    pub fn running(&self) -> Vec<u32> {
        self.nodes.iter().filter(|node| node.child.is_some()).map(|node| node.id).collect()
    }

    pub fn is_observer(&self, id: u32) -> bool {
        self.node(id).observer
    }

    pub fn client_port(&self, id: u32) -> u16 {
        self.node(id).client_port
    }

    /// Client ports of the given nodes, in that order.
    pub fn client_ports(&self, ids: &[u32]) -> Vec<u16> {
        ids.iter().map(|&id| self.client_port(id)).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `line` (key=value) to every node's zoo.cfg; before `start`.
    pub fn append_config(&self, line: &str) {
        for node in &self.nodes {
            let mut text = fs::read_to_string(node.config_path()).expect("read zoo.cfg");
            text.push_str(line);
            text.push('\n');
            fs::write(node.config_path(), text).expect("write zoo.cfg");
        }
    }

    /// The snapshot files in a node's data directory.
    pub fn snapshot_files(&self, id: u32) -> Vec<String> {
        let dir = self.node(id).data_dir().join("version-2");
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|entries| entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.retain(|name| name.starts_with("snapshot."));
        names.sort();
        names
    }

    pub fn config_text(&self, id: u32) -> String {
        fs::read_to_string(self.node(id).config_path()).expect("read zoo.cfg")
    }

    fn node(&self, id: u32) -> &Node {
        self.nodes.get((id as usize).wrapping_sub(1)).unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u32) -> &mut Node {
        self.nodes.get_mut((id as usize).wrapping_sub(1)).unwrap_or_else(|| panic!("no node {id}"))
    }

    // -- configuration ------------------------------------------------------

    /// The shipped example this node's configuration starts from, and whether
    /// it describes exactly this ensemble's shape (then its server lines are
    /// checked and replaced one for one; otherwise they are generated).
    fn template(&self, node: &Node) -> (PathBuf, bool) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let voters = self.voters().len();
        let observers = self.nodes.len() - voters;
        match (voters, observers) {
            (3, 0) => (root.join(format!("ensemble-3/node{}.cfg", node.id)), true),
            (3, 1) => (root.join(format!("observer/node{}.cfg", node.id)), true),
            _ => (root.join("ensemble-3/node1.cfg"), false),
        }
    }

    /// `server.N` as `viewer` sees it: its own line with its real ports,
    /// every other server behind the proxy for (viewer -> N).
    fn server_line(&self, viewer: u32, server: &Node) -> String {
        let role = if server.observer { "observer" } else { "participant" };
        let (quorum, election) = if server.id == viewer {
            (server.quorum_port, server.election_port)
        } else {
            (
                self.proxy_ports[&(viewer, server.id, LinkKind::Quorum)],
                self.proxy_ports[&(viewer, server.id, LinkKind::Election)],
            )
        };
        format!("server.{}=127.0.0.1:{quorum}:{election}:{role};127.0.0.1:{}", server.id, server.client_port)
    }

    fn render_config(&self, node: &Node) -> String {
        let (path, exact) = self.template(node);
        let template = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read example {}: {e}", path.display()));
        let server_lines: Vec<String> = self.nodes.iter().map(|server| self.server_line(node.id, server)).collect();
        let mut out = format!("# Rendered by tests/common/ensemble.rs from {}\n", path.display());
        let mut template_servers: Vec<(u32, String)> = Vec::new();
        let mut template_peer_type: Option<String> = None;
        let mut servers_written = false;
        for line in template.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            let (key, value) = trimmed
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .unwrap_or_else(|| panic!("{}: expected key=value in {line:?}", path.display()));
            let replaced = match key {
                "dataDir" => Some(format!("dataDir={}", node.data_dir().display())),
                "dataLogDir" => Some(String::new()),
                "clientPort" => Some(format!("clientPort={}", node.client_port)),
                "clientPortAddress" => Some("clientPortAddress=127.0.0.1".to_owned()),
                "tickTime" => Some(format!("tickTime={TICK_MS}")),
                "peerType" => {
                    template_peer_type = Some(value.to_owned());
                    (!exact).then(String::new)
                }
                _ if key.starts_with("server.") => {
                    let id: u32 =
                        key["server.".len()..].parse().unwrap_or_else(|_| panic!("{}: {key}", path.display()));
                    let role = value.split(';').next().unwrap().split(':').nth(3).unwrap_or("participant");
                    template_servers.push((id, role.to_owned()));
                    if servers_written {
                        Some(String::new())
                    } else {
                        servers_written = true;
                        Some(server_lines.join("\n"))
                    }
                }
                _ => None,
            };
            match replaced {
                Some(text) if text.is_empty() => {}
                Some(text) => {
                    out.push_str(&text);
                    out.push('\n');
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        if exact {
            let expected: Vec<(u32, String)> = self
                .nodes
                .iter()
                .map(|server| (server.id, if server.observer { "observer" } else { "participant" }.to_owned()))
                .collect();
            assert_eq!(template_servers, expected, "{}: server lines do not describe this ensemble", path.display());
            let says_observer = template_peer_type.as_deref() == Some("observer");
            assert_eq!(says_observer, node.observer, "{}: peerType", path.display());
        } else {
            if !servers_written {
                out.push_str(&server_lines.join("\n"));
                out.push('\n');
            }
            if node.observer {
                out.push_str("peerType=observer\n");
            }
        }
        out
    }

    // -- processes ----------------------------------------------------------

    pub fn start_all(&mut self) {
        for id in self.ids() {
            self.start(id);
        }
    }

    /// Starts the node's process (a new incarnation with its own output
    /// file). Does not wait: see [`Ensemble::wait_stable`].
    pub fn start(&mut self, id: u32) {
        let target = self.target;
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.incarnation += 1;
        let output = File::create(node.output_path(node.incarnation)).expect("create output file");
        let mut command = match target {
            Target::Warden => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
                command.arg("server").arg("--config").arg(node.config_path());
                if let Ok(level) = std::env::var("WARDEN_LOG_LEVEL") {
                    command.arg("--log-level").arg(level);
                }
                command
            }
            Target::Apache => {
                let mut command = Command::new("java");
                command.args(["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]);
                command.args([
                    "-Dzookeeper.admin.enableServer=false",
                    "-Dzookeeper.jmx.log4j.disable=true",
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                    "-Dorg.slf4j.simpleLogger.showDateTime=true",
                    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
                    // "Sending TRUNC to follower zxidToSend=..." is a DEBUG line.
                    "-Dorg.slf4j.simpleLogger.log.org.apache.zookeeper.server.quorum.LearnerHandler=debug",
                ]);
                command.args(["-cp", &apache_classpath_logging(), "org.apache.zookeeper.server.quorum.QuorumPeerMain"]);
                command.arg(node.config_path());
                command
            }
        };
        command
            .current_dir(&node.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone().expect("clone output file")))
            .stderr(Stdio::from(output));
        node.child = Some(command.spawn().unwrap_or_else(|e| panic!("start node {id}: {e}")));
    }

    /// SIGTERM, and wait (bounded) for the process to exit.
    pub fn stop(&mut self, id: u32) {
        let tail = self.output_tail(id, 3000);
        let node = self.node_mut(id);
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {id} is not running"));
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} still running {STOP_TIMEOUT:?} after SIGTERM; output:\n{tail}");
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: nothing in flight is finished, nothing is flushed.
    pub fn kill(&mut self, id: u32) {
        let node = self.node_mut(id);
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {id} is not running"));
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
    }

    pub fn restart(&mut self, id: u32) {
        self.stop(id);
        self.start(id);
    }

    /// Deletes everything in a stopped node's data directory except myid.
    pub fn wipe(&mut self, id: u32) {
        let node = self.node(id);
        assert!(node.child.is_none(), "wipe node {id}: stop it first");
        for entry in fs::read_dir(node.data_dir()).expect("read data dir") {
            let path = entry.expect("dir entry").path();
            if path.file_name().is_some_and(|name| name == "myid") {
                continue;
            }
            if path.is_dir() {
                fs::remove_dir_all(&path).expect("remove");
            } else {
                fs::remove_file(&path).expect("remove");
            }
        }
    }

    /// Panics if a node the ensemble started has exited on its own.
    pub fn check_alive(&mut self) {
        let mut dead = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    dead.push((node.id, status));
                }
            }
        }
        if let Some((id, status)) = dead.first() {
            panic!("node {id} exited on its own with {status}; output:\n{}", self.output_tail(*id, 6000));
        }
    }

    // -- roles --------------------------------------------------------------

    /// The node's role from `srvr`; None when it is down or not serving.
    pub fn mode(&self, id: u32) -> Option<Mode> {
        let node = self.node(id);
        node.child.as_ref()?;
        let text = four_letter(node.client_port, "srvr")?;
        let mode = text.lines().find_map(|line| line.strip_prefix("Mode:"))?.trim();
        Some(match mode {
            "leader" => Mode::Leader,
            "follower" => Mode::Follower,
            "observer" => Mode::Observer,
            other => Mode::Other(other.to_owned()),
        })
    }

    /// `mntr` as key -> value; empty when the node does not answer.
    pub fn mntr(&self, id: u32) -> BTreeMap<String, String> {
        let text = four_letter(self.client_port(id), "mntr").unwrap_or_default();
        text.lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect()
    }

    /// The leader among the running nodes, if exactly one says so.
    pub fn leader(&self) -> Option<u32> {
        let leaders: Vec<u32> = self.running().into_iter().filter(|&id| self.mode(id) == Some(Mode::Leader)).collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Waits until every running node reports its role, exactly one is the
    /// leader, voters are leader or follower and observers observer, twice
    /// in a row with the same leader. Returns the leader.
    pub fn wait_stable(&mut self, within: Duration) -> u32 {
        let running = self.running();
        self.wait_stable_among(&running, within)
    }

    /// As [`Ensemble::wait_stable`], looking only at `ids` (the side of a
    /// partition that should have a leader).
    pub fn wait_stable_among(&mut self, ids: &[u32], within: Duration) -> u32 {
        let started = Instant::now();
        let mut previous: Option<u32> = None;
        let mut polls = 0u32;
        loop {
            self.check_alive();
            let last = ids.iter().map(|&id| (id, self.mode(id))).collect::<Vec<_>>();
            let fitting = last.iter().all(|(id, mode)| match mode {
                Some(Mode::Observer) => self.is_observer(*id),
                Some(Mode::Leader) | Some(Mode::Follower) => !self.is_observer(*id),
                _ => false,
            });
            if let Some((id, _)) = last.iter().find(|(_, mode)| *mode == Some(Mode::Other("standalone".into()))) {
                panic!(
                    "node {id} of ensemble {} runs standalone: it ignored its server.N lines; modes: {last:?}\n{}",
                    self.name,
                    self.output_tail(*id, 2500)
                );
            }
            let leaders: Vec<u32> =
                last.iter().filter(|(_, mode)| *mode == Some(Mode::Leader)).map(|(id, _)| *id).collect();
            if fitting && leaders.len() == 1 {
                if previous == Some(leaders[0]) {
                    return leaders[0];
                }
                previous = Some(leaders[0]);
            } else {
                previous = None;
            }
            polls += 1;
            if started.elapsed() > within || polls > 100_000 {
                let tails: String = ids
                    .iter()
                    .map(|&id| format!("--- node {id} output tail ---\n{}\n", self.output_tail(id, 2500)))
                    .collect();
                panic!("ensemble {} not stable among {ids:?} within {within:?}; modes: {last:?}\n{tails}", self.name);
            }
            sleep(POLL);
        }
    }

    /// Waits until the node stops reporting a role (it left the quorum).
    pub fn wait_not_serving(&mut self, id: u32, within: Duration) {
        let started = Instant::now();
        loop {
            self.check_alive();
            let mode = self.mode(id);
            if mode.is_none() {
                return;
            }
            assert!(started.elapsed() < within, "node {id} still reports {mode:?} after {within:?}");
            sleep(POLL);
        }
    }

    // -- partitions ---------------------------------------------------------

    /// Cuts every proxied link between nodes of different groups: live
    /// connections go silent (their bytes are dropped) and new ones are
    /// closed on arrival. A node in no
    /// group is alone. Replaces any earlier partition.
    pub fn partition(&self, groups: &[&[u32]]) {
        for group in groups {
            for id in group.iter() {
                self.node(*id);
            }
        }
        let group_of = |id: u32| groups.iter().position(|group| group.contains(&id)).map_or(1000 + id as usize, |g| g);
        let mut state = self.net.state.lock().unwrap();
        state.blocked.clear();
        for a in self.ids() {
            for b in self.ids() {
                if a < b && group_of(a) != group_of(b) {
                    state.blocked.insert((a, b));
                }
            }
        }
        let blocked = state.blocked.clone();
        for connection in &state.live {
            if blocked.contains(&connection.pair) {
                connection.blackholed.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Every proxy forwards again; nodes reconnect on their own.
    /// Ends every partition. Connections that lost bytes to it are closed
    /// (a TCP stream cannot skip a gap); the servers reconnect.
    pub fn heal(&self) {
        let mut state = self.net.state.lock().unwrap();
        state.blocked.clear();
        for connection in &state.live {
            if connection.blackholed.load(Ordering::SeqCst) {
                connection.closed.store(true, Ordering::SeqCst);
                for stream in &connection.streams {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        }
        state.live.retain(|connection| !connection.closed.load(Ordering::SeqCst));
    }

    /// Election handshakes the proxies redirected so far.
    pub fn proxy_rewrites(&self) -> usize {
        self.net.rewrites.load(Ordering::SeqCst)
    }

    // -- output -------------------------------------------------------------

    /// The current end of the node's output.
    pub fn output_mark(&self, id: u32) -> OutputMark {
        let node = self.node(id);
        let offset = fs::metadata(node.output_path(node.incarnation)).map(|m| m.len()).unwrap_or(0);
        OutputMark { id, incarnation: node.incarnation, offset }
    }

    /// What the node wrote after `mark`, across later incarnations too.
    pub fn output_since(&self, mark: &OutputMark) -> String {
        let node = self.node(mark.id);
        let mut text = String::new();
        for incarnation in mark.incarnation.max(1)..=node.incarnation {
            let bytes = fs::read(node.output_path(incarnation)).unwrap_or_default();
            let skip = if incarnation == mark.incarnation { (mark.offset as usize).min(bytes.len()) } else { 0 };
            text.push_str(&String::from_utf8_lossy(&bytes[skip..]));
        }
        text
    }

    /// The whole output of the node, every incarnation.
    pub fn output(&self, id: u32) -> String {
        self.output_since(&OutputMark { id, incarnation: 1, offset: 0 })
    }

    pub fn output_tail(&self, id: u32, bytes: usize) -> String {
        let node = self.node(id);
        let text = fs::read(node.output_path(node.incarnation)).unwrap_or_default();
        let start = text.len().saturating_sub(bytes);
        format!("[{}]\n{}", node.output_path(node.incarnation).display(), String::from_utf8_lossy(&text[start..]))
    }

    /// The sync modes the leader logged after `mark`, for `peer` where the
    /// line names a peer ("sid: N" or "sid:N"; ZooKeeper's SNAP line names
    /// none).
    pub fn sync_modes_since(&self, leader_mark: &OutputMark, peer: u32) -> Vec<(SyncMode, String)> {
        self.output_since(leader_mark)
            .lines()
            .filter_map(|line| {
                let mode = if line.contains("Sending DIFF") {
                    SyncMode::Diff
                } else if line.contains("Sending TRUNC") {
                    SyncMode::Trunc
                } else if line.contains("Sending SNAP") || line.contains("Sending snapshot") {
                    SyncMode::Snap
                } else {
                    return None;
                };
                match named_sid(line) {
                    Some(sid) if sid != peer => None,
                    _ => Some((mode, line.to_owned())),
                }
            })
            .collect()
    }

    /// Waits (bounded) until the leader has logged a sync mode for `peer`.
    pub fn wait_sync_modes(&self, leader_mark: &OutputMark, peer: u32, within: Duration) -> Vec<(SyncMode, String)> {
        let started = Instant::now();
        loop {
            let modes = self.sync_modes_since(leader_mark, peer);
            if !modes.is_empty() {
                return modes;
            }
            if started.elapsed() > within {
                panic!(
                    "node {} logged no DIFF/TRUNC/SNAP for peer {peer} within {within:?}; output since the mark:\n{}",
                    leader_mark.id,
                    self.output_since(leader_mark)
                );
            }
            sleep(POLL);
        }
    }

    // -- replicas -----------------------------------------------------------

    /// Digests every given node's tree (each after `sync`) until they agree,
    /// bounded by `within`; panics with the differences otherwise.
    pub fn assert_converged(&mut self, ids: &[u32], within: Duration) -> TreeDigest {
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            self.check_alive();
            attempts += 1;
            let digests: Vec<(u32, Result<TreeDigest, ClientError>)> =
                ids.iter().map(|&id| (id, tree_digest(self.client_port(id)))).collect();
            let all_ok = digests.iter().all(|(_, digest)| digest.is_ok());
            if all_ok {
                let first = digests[0].1.as_ref().unwrap();
                if digests.iter().all(|(_, digest)| digest.as_ref().unwrap() == first) {
                    println!(
                        "[{}] digests of nodes {ids:?} agree: {:016x} over {} znodes (attempt {attempts})",
                        self.name,
                        first.hash(),
                        first.nodes.len()
                    );
                    return first.clone();
                }
            }
            if started.elapsed() > within || attempts > 1000 {
                let mut report = String::new();
                let reference = digests.iter().find_map(|(id, digest)| digest.as_ref().ok().map(|d| (*id, d)));
                for (id, digest) in &digests {
                    match (digest, reference) {
                        (Err(error), _) => report.push_str(&format!("node {id}: no digest: {error:?}\n")),
                        (Ok(digest), Some((reference_id, reference))) => report.push_str(&format!(
                            "node {id}: {:016x} ({} znodes); vs node {reference_id}: {:?}\n",
                            digest.hash(),
                            digest.nodes.len(),
                            reference.differences(digest, 10)
                        )),
                        (Ok(_), None) => {}
                    }
                }
                panic!("[{}] replicas {ids:?} did not converge within {within:?}:\n{report}", self.name);
            }
            sleep(Duration::from_millis(200));
        }
    }
}

/// The number after "sid:" (ZooKeeper: "for peer sid: 2"), if any.
fn named_sid(line: &str) -> Option<u32> {
    let at = line.find("sid:")?;
    let digits: String = line[at + 4..].trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if panicking {
            for node in &self.nodes {
                eprintln!(
                    "--- [{}] node {} (incarnation {}) ---\n{}",
                    self.name,
                    node.id,
                    node.incarnation,
                    self.output_tail(node.id, 3000)
                );
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGKILL);
                }
                let _ = child.wait();
            }
        }
        self.net.stop.store(true, Ordering::SeqCst);
        {
            let state = self.net.state.lock().unwrap();
            for connection in &state.live {
                connection.closed.store(true, Ordering::SeqCst);
                for stream in &connection.streams {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        }
        // Wake every accept loop so that it sees `stop`.
        for port in self.proxy_ports.values() {
            let _ = TcpStream::connect_timeout(&loopback(*port), Duration::from_millis(200));
        }
        for handle in self.proxy_threads.drain(..) {
            let _ = handle.join();
        }
        let keep = std::env::var("ENSEMBLE_KEEP_DATA").unwrap_or_default();
        if (panicking && !keep.is_empty()) || keep == "all" {
            eprintln!("[{}] ensemble directory kept: {}", self.name, self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sends a four-letter word; the whole answer, or None.
pub fn four_letter(port: u16, word: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&loopback(port), TCP_CONNECT_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(FOUR_LETTER_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(FOUR_LETTER_TIMEOUT)).ok()?;
    stream.write_all(word.as_bytes()).ok()?;
    let mut answer = Vec::new();
    let deadline = Instant::now() + FOUR_LETTER_TIMEOUT;
    let mut chunk = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// No TCP connection (the server is down).
    Refused(String),
    /// The server closed the connection (ZooKeeper does so when it does not
    /// serve, and on leader loss).
    Closed(String),
    Timeout(String),
    /// The server says the session is gone.
    Expired,
    /// An error code where the call expects success or a known code.
    Server(i32),
    Protocol(String),
}

pub type ClientResult<T> = Result<T, ClientError>;

/// What getData returns: the data and the Stat.
pub type DataAndStat = (Vec<u8>, Stat);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone)]
pub struct Reply {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Vec<u8>,
}

struct Dec<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Dec<'a> {
    fn new(b: &'a [u8]) -> Self {
        Dec { b, p: 0 }
    }
    fn take(&mut self, n: usize) -> ClientResult<&'a [u8]> {
        if self.p + n > self.b.len() {
            return Err(ClientError::Protocol(format!(
                "short record: need {n} bytes at {} of {}",
                self.p,
                self.b.len()
            )));
        }
        let out = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(out)
    }
    fn i32(&mut self) -> ClientResult<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> ClientResult<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn buf(&mut self) -> ClientResult<Vec<u8>> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(Vec::new());
        }
        Ok(self.take(n as usize)?.to_vec())
    }
    fn str(&mut self) -> ClientResult<String> {
        String::from_utf8(self.buf()?).map_err(|e| ClientError::Protocol(format!("utf-8: {e}")))
    }
    fn stat(&mut self) -> ClientResult<Stat> {
        Ok(Stat {
            czxid: self.i64()?,
            mzxid: self.i64()?,
            ctime: self.i64()?,
            mtime: self.i64()?,
            version: self.i32()?,
            cversion: self.i32()?,
            aversion: self.i32()?,
            ephemeral_owner: self.i64()?,
            data_length: self.i32()?,
            num_children: self.i32()?,
            pzxid: self.i64()?,
        })
    }
}

pub fn create_body(path: &str, data: &[u8], flags: i32) -> Vec<u8> {
    Enc::default().str(path).buf(data).acl(&[(PERMS_ALL, "world", "anyone")]).i32(flags).0
}

pub fn set_data_body(path: &str, data: &[u8], version: i32) -> Vec<u8> {
    Enc::default().str(path).buf(data).i32(version).0
}

/// getData, exists and getChildren: path and no watch.
pub fn path_body(path: &str) -> Vec<u8> {
    Enc::default().str(path).bool(false).0
}

fn request(xid: i32, opcode: i32, body: &[u8]) -> Vec<u8> {
    let mut packet = Enc::default().i32(xid).i32(opcode).0;
    packet.extend_from_slice(body);
    frame(&packet)
}

/// A getData reply's data and Stat; None for NONODE.
pub fn decode_get_data(reply: &Reply) -> ClientResult<Option<DataAndStat>> {
    match reply.err {
        OK => {
            let mut d = Dec::new(&reply.body);
            let data = d.buf()?;
            Ok(Some((data, d.stat()?)))
        }
        NONODE => Ok(None),
        err => Err(ClientError::Server(err)),
    }
}

/// One client session on one server.
pub struct Session {
    stream: TcpStream,
    rbuf: Vec<u8>,
    pub id: i64,
    pub password: Vec<u8>,
    pub timeout_ms: i32,
    pub port: u16,
    pub last_zxid: i64,
    xid: i32,
    last_send: Instant,
}

impl Session {
    /// A new session with the largest timeout the servers grant.
    pub fn connect(port: u16) -> ClientResult<Session> {
        Session::resume(port, 0, &[0; 16], 0, SESSION_TIMEOUT_MS)
    }

    /// Connects with the given credentials (0 = a new session). Err(Expired)
    /// when the server answers that the session is gone; Err(Closed) when it
    /// closes without answering (not serving, or behind `last_zxid`).
    pub fn resume(
        port: u16,
        session_id: i64,
        password: &[u8],
        last_zxid: i64,
        timeout_ms: i32,
    ) -> ClientResult<Session> {
        let stream = TcpStream::connect_timeout(&loopback(port), TCP_CONNECT_TIMEOUT)
            .map_err(|e| ClientError::Refused(format!("port {port}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let mut session = Session {
            stream,
            rbuf: Vec::new(),
            id: session_id,
            password: password.to_vec(),
            timeout_ms,
            port,
            last_zxid,
            xid: 0,
            last_send: Instant::now(),
        };
        let body = Enc::default().i32(0).i64(last_zxid).i32(timeout_ms).i64(session_id).buf(password).bool(false).0;
        session.write(&frame(&body))?;
        let response = session.read_frame(HANDSHAKE_TIMEOUT)?;
        let mut d = Dec::new(&response);
        let _protocol = d.i32()?;
        let (timeout_ms, id, password) = (d.i32()?, d.i64()?, d.buf()?);
        if timeout_ms <= 0 {
            return Err(ClientError::Expired);
        }
        if session_id != 0 && id != session_id {
            return Err(ClientError::Protocol(format!("asked to resume {session_id:#x}, got {id:#x}")));
        }
        session.id = id;
        session.password = password;
        session.timeout_ms = timeout_ms;
        Ok(session)
    }

    fn write(&mut self, bytes: &[u8]) -> ClientResult<()> {
        self.last_send = Instant::now();
        self.stream.write_all(bytes).map_err(|e| ClientError::Closed(format!("write to port {}: {e}", self.port)))
    }

    fn read_frame(&mut self, within: Duration) -> ClientResult<Vec<u8>> {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if self.rbuf.len() >= 4 {
                let length = i32::from_be_bytes(self.rbuf[..4].try_into().unwrap());
                if length < 0 {
                    return Err(ClientError::Protocol(format!("negative frame length {length}")));
                }
                let length = length as usize;
                if self.rbuf.len() >= 4 + length {
                    let body = self.rbuf[4..4 + length].to_vec();
                    self.rbuf.drain(..4 + length);
                    return Ok(body);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout(format!("nothing from port {} within {within:?}", self.port)));
            }
            let _ = self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed(format!("port {} closed the connection", self.port))),
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::Closed(format!("read from port {}: {e}", self.port))),
            }
        }
    }

    /// Sends a request without waiting (pipelining); returns its xid.
    pub fn send(&mut self, opcode: i32, body: &[u8]) -> ClientResult<i32> {
        self.xid += 1;
        let xid = self.xid;
        self.write(&request(xid, opcode, body))?;
        Ok(xid)
    }

    /// The next reply to a request (pings and watch events are skipped).
    pub fn recv(&mut self, within: Duration) -> ClientResult<Reply> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.read_frame(left.max(Duration::from_millis(1)))?;
            let mut d = Dec::new(&frame);
            let (xid, zxid, err) = (d.i32()?, d.i64()?, d.i32()?);
            if xid == XID_PING || xid == XID_WATCH_EVENT {
                continue;
            }
            if zxid > self.last_zxid {
                self.last_zxid = zxid;
            }
            return Ok(Reply { xid, zxid, err, body: frame[d.p..].to_vec() });
        }
    }

    pub fn call(&mut self, opcode: i32, body: &[u8]) -> ClientResult<Reply> {
        let xid = self.send(opcode, body)?;
        let reply = self.recv(IO_TIMEOUT)?;
        if reply.xid != xid {
            return Err(ClientError::Protocol(format!(
                "reply xid {} for request xid {xid} (opcode {opcode})",
                reply.xid
            )));
        }
        Ok(reply)
    }

    /// Sends every request with at most `window` unanswered, and returns the
    /// replies in order.
    pub fn pipeline(&mut self, requests: &[(i32, Vec<u8>)], window: usize) -> ClientResult<Vec<Reply>> {
        let window = window.max(1);
        let mut xids = VecDeque::new();
        let mut replies = Vec::with_capacity(requests.len());
        let mut next = 0;
        while replies.len() < requests.len() {
            while next < requests.len() && xids.len() < window {
                let (opcode, body) = &requests[next];
                xids.push_back(self.send(*opcode, body)?);
                next += 1;
            }
            let reply = self.recv(IO_TIMEOUT)?;
            let expected = xids.pop_front().unwrap();
            if reply.xid != expected {
                return Err(ClientError::Protocol(format!("reply xid {} where {expected} was next", reply.xid)));
            }
            replies.push(reply);
        }
        Ok(replies)
    }

    /// The reply's error code (OK, NODEEXISTS, ...).
    pub fn create(&mut self, path: &str, data: &[u8], flags: i32) -> ClientResult<i32> {
        Ok(self.call(OP_CREATE, &create_body(path, data, flags))?.err)
    }

    pub fn set_data(&mut self, path: &str, data: &[u8], version: i32) -> ClientResult<i32> {
        Ok(self.call(OP_SET_DATA, &set_data_body(path, data, version))?.err)
    }

    pub fn delete(&mut self, path: &str, version: i32) -> ClientResult<i32> {
        Ok(self.call(OP_DELETE, &Enc::default().str(path).i32(version).0)?.err)
    }

    pub fn get_data(&mut self, path: &str) -> ClientResult<Option<DataAndStat>> {
        decode_get_data(&self.call(OP_GET_DATA, &path_body(path))?)
    }

    pub fn exists(&mut self, path: &str) -> ClientResult<Option<Stat>> {
        let reply = self.call(OP_EXISTS, &path_body(path))?;
        match reply.err {
            OK => Ok(Some(Dec::new(&reply.body).stat()?)),
            NONODE => Ok(None),
            err => Err(ClientError::Server(err)),
        }
    }

    pub fn children(&mut self, path: &str) -> ClientResult<Option<Vec<String>>> {
        decode_children(&self.call(OP_GET_CHILDREN, &path_body(path))?)
    }

    /// `sync`: this server has applied everything the leader committed
    /// before the sync reached it.
    pub fn sync(&mut self, path: &str) -> ClientResult<()> {
        match self.call(OP_SYNC, &Enc::default().str(path).0)?.err {
            OK => Ok(()),
            err => Err(ClientError::Server(err)),
        }
    }

    /// getData of every path, pipelined.
    pub fn get_data_many(&mut self, paths: &[String]) -> ClientResult<Vec<Option<DataAndStat>>> {
        let requests: Vec<(i32, Vec<u8>)> = paths.iter().map(|path| (OP_GET_DATA, path_body(path))).collect();
        self.pipeline(&requests, 64)?.iter().map(decode_get_data).collect()
    }

    /// Creates every (path, data) pipelined; the error code of each.
    pub fn create_many(&mut self, nodes: &[(String, Vec<u8>)], window: usize) -> ClientResult<Vec<i32>> {
        let requests: Vec<(i32, Vec<u8>)> =
            nodes.iter().map(|(path, data)| (OP_CREATE, create_body(path, data, PERSISTENT))).collect();
        Ok(self.pipeline(&requests, window)?.iter().map(|reply| reply.err).collect())
    }

    pub fn send_ping(&mut self) -> ClientResult<()> {
        self.write(&request(XID_PING, OP_PING, &[]))
    }

    pub fn since_last_send(&self) -> Duration {
        self.last_send.elapsed()
    }

    /// Reads for `within`, consuming pings and watch events; Err when the
    /// connection closes (or anything else arrives).
    pub fn idle(&mut self, within: Duration) -> ClientResult<()> {
        match self.recv(within) {
            Err(ClientError::Timeout(_)) => Ok(()),
            Err(error) => Err(error),
            Ok(reply) => Err(ClientError::Protocol(format!("unexpected reply xid {} while idle", reply.xid))),
        }
    }

    pub fn close(mut self) -> ClientResult<()> {
        match self.call(OP_CLOSE_SESSION, &[])?.err {
            OK => Ok(()),
            err => Err(ClientError::Server(err)),
        }
    }
}

pub fn decode_children(reply: &Reply) -> ClientResult<Option<Vec<String>>> {
    match reply.err {
        OK => {
            let mut d = Dec::new(&reply.body);
            let count = d.i32()?;
            if !(0..=1_000_000).contains(&count) {
                return Err(ClientError::Protocol(format!("{count} children")));
            }
            (0..count).map(|_| d.str()).collect::<ClientResult<Vec<String>>>().map(Some)
        }
        NONODE => Ok(None),
        err => Err(ClientError::Server(err)),
    }
}

/// Tries each port in turn (several rounds, bounded by `within`) until a
/// new session is established.
pub fn connect_any(ports: &[u16], within: Duration) -> Session {
    let started = Instant::now();
    let mut errors = Vec::new();
    for round in 0..10_000u32 {
        for &port in ports {
            match Session::connect(port) {
                Ok(session) => return session,
                Err(error) => errors.push(error),
            }
        }
        assert!(
            started.elapsed() < within,
            "no session on any of {ports:?} within {within:?} ({round} rounds): {:?}",
            errors.last()
        );
        sleep(POLL);
    }
    panic!("no session on any of {ports:?}");
}

// ---------------------------------------------------------------------------
// A session kept alive in the background
// ---------------------------------------------------------------------------

/// Pings a session every third of its timeout and, when its connection is
/// lost, resumes it (id, password, last zxid seen) on the next server of its
/// list, round robin, as ZooKeeper's client does.
pub struct SessionKeeper {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<KeeperReport>>,
}

#[derive(Debug)]
pub struct Reconnect {
    pub port: u16,
    /// From the loss of the previous connection to the new handshake.
    pub after: Duration,
}

pub struct KeeperReport {
    /// The session, connected, unless it expired.
    pub session: Option<Session>,
    pub id: i64,
    pub expired: bool,
    pub reconnects: Vec<Reconnect>,
    /// What went wrong along the way (for failure messages).
    pub events: Vec<String>,
}

impl SessionKeeper {
    pub fn start(session: Session, ports: Vec<u16>) -> SessionKeeper {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let handle = thread::spawn(move || keep(session, ports, stop_flag));
        SessionKeeper { stop, handle: Some(handle) }
    }

    pub fn stop(mut self) -> KeeperReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().expect("keeper thread panicked")
    }
}

impl Drop for SessionKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn keep(session: Session, ports: Vec<u16>, stop: Arc<AtomicBool>) -> KeeperReport {
    let (id, password, timeout_ms) = (session.id, session.password.clone(), session.timeout_ms);
    let mut last_zxid = session.last_zxid;
    let mut next_port = ports.iter().position(|&p| p == session.port).map_or(0, |i| i + 1);
    let mut current = Some(session);
    let mut report = KeeperReport { session: None, id, expired: false, reconnects: Vec::new(), events: Vec::new() };
    let mut lost_at = Instant::now();
    let started = Instant::now();
    let ping_every = Duration::from_millis(timeout_ms as u64 / 3);
    while !stop.load(Ordering::SeqCst) && started.elapsed() < BACKGROUND_LIFETIME_MAX {
        match current.as_mut() {
            Some(session) => {
                let mut outcome = Ok(());
                if session.since_last_send() >= ping_every {
                    outcome = session.send_ping();
                }
                if outcome.is_ok() {
                    outcome = session.idle(POLL);
                }
                if let Err(error) = outcome {
                    report.events.push(format!("lost connection to port {}: {error:?}", session.port));
                    last_zxid = last_zxid.max(session.last_zxid);
                    current = None;
                    lost_at = Instant::now();
                }
            }
            None => {
                let port = ports[next_port % ports.len()];
                next_port += 1;
                match Session::resume(port, id, &password, last_zxid, timeout_ms) {
                    Ok(session) => {
                        report.reconnects.push(Reconnect { port, after: lost_at.elapsed() });
                        current = Some(session);
                    }
                    Err(ClientError::Expired) => {
                        report.events.push(format!("port {port} says session {id:#x} expired"));
                        report.expired = true;
                        break;
                    }
                    Err(error) => {
                        if report.events.len() < 200 {
                            report.events.push(format!("resume on port {port}: {error:?}"));
                        }
                        sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }
    report.session = current;
    report
}

// ---------------------------------------------------------------------------
// Write load
// ---------------------------------------------------------------------------

/// One session pipelining writes: for i = 0, 1, ... it creates
/// `{prefix}/k{i}` with data `c{i}` and at once sets it to `s{i}` (version
/// 0), at most `window` requests unanswered, one pair per `pace`, until
/// stopped, `pairs_max` pairs, or its connection is lost.
pub struct LoadWriter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<LoadReport>>,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub port: u16,
    pub prefix: String,
    /// Paths whose create was acknowledged.
    pub created: Vec<String>,
    /// Paths whose setData (to `s{i}`, version 1) was acknowledged.
    pub set: HashSet<String>,
    pub sent_pairs: usize,
    /// Replies with an error code (none expected).
    pub failures: Vec<String>,
    pub ended: String,
}

impl LoadWriter {
    pub fn start(port: u16, prefix: &str, pairs_max: usize, pace: Duration, window: usize) -> LoadWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let prefix = prefix.to_owned();
        let handle = thread::spawn(move || write_load(port, prefix, pairs_max, pace, window, stop_flag));
        LoadWriter { stop, handle: Some(handle) }
    }

    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().expect("writer thread panicked")
    }
}

impl Drop for LoadWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The data a LoadWriter writes for key i: created, then set.
pub fn load_data(i: usize) -> (Vec<u8>, Vec<u8>) {
    (format!("c{i}").into_bytes(), format!("s{i}").into_bytes())
}

fn write_load(
    port: u16,
    prefix: String,
    pairs_max: usize,
    pace: Duration,
    window: usize,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let mut report = LoadReport { port, prefix: prefix.clone(), ..LoadReport::default() };
    let mut session = match Session::connect(port) {
        Ok(session) => session,
        Err(error) => {
            report.ended = format!("connect: {error:?}");
            return report;
        }
    };
    // (xid, path, is_set)
    let mut pending: VecDeque<(i32, String, bool)> = VecDeque::new();
    let started = Instant::now();
    let mut next_send = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    let mut last_progress = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) && stopped_at.is_none() {
            stopped_at = Some(Instant::now());
        }
        let draining = stopped_at.is_some() || report.sent_pairs >= pairs_max;
        if draining && pending.is_empty() {
            report.ended = "done".into();
            let _ = session.close();
            break;
        }
        if stopped_at.is_some_and(|at| at.elapsed() > Duration::from_secs(3))
            || started.elapsed() > BACKGROUND_LIFETIME_MAX
        {
            report.ended = format!("stopped with {} replies outstanding", pending.len());
            break;
        }
        if !draining && pending.len() + 2 <= window && Instant::now() >= next_send {
            let i = report.sent_pairs;
            let path = format!("{prefix}/k{i}");
            let (created, set) = load_data(i);
            let sent = session
                .send(OP_CREATE, &create_body(&path, &created, PERSISTENT))
                .and_then(|xid| Ok((xid, session.send(OP_SET_DATA, &set_data_body(&path, &set, 0))?)));
            match sent {
                Ok((create_xid, set_xid)) => {
                    pending.push_back((create_xid, path.clone(), false));
                    pending.push_back((set_xid, path, true));
                    report.sent_pairs += 1;
                    next_send += pace;
                }
                Err(error) => {
                    report.ended = format!("send: {error:?}");
                    break;
                }
            }
        }
        match session.recv(Duration::from_millis(2)) {
            Ok(reply) => {
                last_progress = Instant::now();
                let Some((xid, path, is_set)) = pending.pop_front() else {
                    report.failures.push(format!("reply xid {} with nothing pending", reply.xid));
                    break;
                };
                if reply.xid != xid {
                    report.failures.push(format!("reply xid {} where {xid} ({path}) was next", reply.xid));
                    break;
                }
                match (reply.err, is_set) {
                    (OK, false) => report.created.push(path),
                    (OK, true) => {
                        report.set.insert(path);
                    }
                    (err, _) => report
                        .failures
                        .push(format!("{path} {}: error {err}", if is_set { "setData" } else { "create" })),
                }
            }
            Err(ClientError::Timeout(_)) => {
                if !pending.is_empty() && last_progress.elapsed() > IO_TIMEOUT {
                    report.ended = format!("no reply for {IO_TIMEOUT:?} with {} outstanding", pending.len());
                    break;
                }
            }
            Err(error) => {
                report.ended = format!("{error:?} with {} outstanding", pending.len());
                break;
            }
        }
    }
    report
}

// ---------------------------------------------------------------------------
// Tree digest
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZnodeDigest {
    pub data: Vec<u8>,
    pub czxid: i64,
    pub mzxid: i64,
    pub version: i32,
    pub cversion: i32,
    pub ephemeral_owner: i64,
}

/// Every znode but the /zookeeper subtree (system nodes: /zookeeper/config
/// holds each server's own view of the server lines, which differ here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeDigest {
    pub nodes: BTreeMap<String, ZnodeDigest>,
}

impl TreeDigest {
    /// FNV-1a 64 over paths, data and the Stat fields compared.
    pub fn hash(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= *byte as u64;
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for (path, node) in &self.nodes {
            eat(&(path.len() as u32).to_be_bytes());
            eat(path.as_bytes());
            eat(&(node.data.len() as u32).to_be_bytes());
            eat(&node.data);
            eat(&node.czxid.to_be_bytes());
            eat(&node.mzxid.to_be_bytes());
            eat(&node.version.to_be_bytes());
            eat(&node.cversion.to_be_bytes());
            eat(&node.ephemeral_owner.to_be_bytes());
        }
        hash
    }

    /// Up to `limit` paths where `other` differs, described.
    pub fn differences(&self, other: &TreeDigest, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (path, node) in &self.nodes {
            match other.nodes.get(path) {
                None => out.push(format!("{path}: missing there")),
                Some(theirs) if theirs != node => out.push(format!("{path}: {node:?} vs {theirs:?}")),
                _ => {}
            }
        }
        for path in other.nodes.keys() {
            if !self.nodes.contains_key(path) {
                out.push(format!("{path}: only there"));
            }
        }
        out.truncate(limit);
        out
    }
}

/// Connects a fresh session to `port`, `sync`s, and walks the whole tree
/// from / (pipelined, level by level).
pub fn tree_digest(port: u16) -> ClientResult<TreeDigest> {
    let mut session = Session::connect(port)?;
    session.sync("/")?;
    let mut nodes = BTreeMap::new();
    let mut level = vec!["/".to_owned()];
    while !level.is_empty() {
        if nodes.len() + level.len() > DIGEST_NODES_MAX {
            return Err(ClientError::Protocol(format!("more than {DIGEST_NODES_MAX} znodes")));
        }
        let mut requests = Vec::with_capacity(level.len() * 2);
        for path in &level {
            requests.push((OP_GET_DATA, path_body(path)));
            requests.push((OP_GET_CHILDREN, path_body(path)));
        }
        let replies = session.pipeline(&requests, 128)?;
        let mut next = Vec::new();
        for (path, pair) in level.iter().zip(replies.chunks(2)) {
            // A node deleted during the walk (an expiring ephemeral) is
            // skipped; the caller compares digests again.
            let (Some((data, stat)), Some(mut children)) = (decode_get_data(&pair[0])?, decode_children(&pair[1])?)
            else {
                continue;
            };
            nodes.insert(
                path.clone(),
                ZnodeDigest {
                    data,
                    czxid: stat.czxid,
                    mzxid: stat.mzxid,
                    version: stat.version,
                    cversion: stat.cversion,
                    ephemeral_owner: stat.ephemeral_owner,
                },
            );
            children.sort();
            for child in children {
                let child_path = if path == "/" { format!("/{child}") } else { format!("{path}/{child}") };
                if child_path != "/zookeeper" {
                    next.push(child_path);
                }
            }
        }
        level = next;
    }
    let _ = session.close();
    Ok(TreeDigest { nodes })
}
