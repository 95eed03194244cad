//! Integration tests driving a real server through the third-party Rust client
//! crate `zookeeper-client` (kezhuw, 0.11.x, tokio based).
//!
//! Target selection via `WARDEN_TEST_TARGET`:
//! * `warden` (default): spawns the `warden` binary built by cargo.
//! * `apache`: spawns Apache ZooKeeper 3.8 from the Debian package
//!   (`/usr/share/java/zookeeper.jar`, java on PATH). The classpath can be
//!   overridden with `WARDEN_ZK_CLASSPATH`.
//!
//! Every expectation in this file was validated against Apache ZooKeeper 3.8.0
//! (`WARDEN_TEST_TARGET=apache cargo test --test client_rust`), so it encodes
//! real ZooKeeper behaviour.
//!
//! Requires the `tokio` feature of `zookeeper-client` (dev-dependency
//! `zookeeper-client = { version = "0.11", features = ["tokio"] }`): without a runtime
//! feature the crate has no task spawner and every connect panics with "no spawner".
//!
//! All tests share one server process per test binary (reference counted: it
//! is killed when the last running test releases it) and use unique paths.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::timeout;
use zookeeper_client::{
    Acl, Acls, AddWatchMode, AuthId, AuthUser, Client, CreateMode, CreateOptions, CreateSequence,
    Error, EventType, MultiReadResult, MultiWriteError, MultiWriteResult, OneshotWatcher,
    Permission, PersistentWatcher, SessionState, Stat, WatchedEvent,
};

// ---------------------------------------------------------------------------
// Server harness
// ---------------------------------------------------------------------------

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
const OP_TIMEOUT: Duration = Duration::from_secs(10);

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

use warden::runtime::testkit::free_port;

/// A spawned server process; killed, waited and its temp dir removed on Drop.
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
    target: String,
}

impl Server {
    fn start() -> Server {
        let target = std::env::var("WARDEN_TEST_TARGET").unwrap_or_else(|_| "warden".to_string());
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("warden-client-rust-{}", unique_suffix()));
        let data_dir = dir.join("data");
        fs::create_dir_all(&data_dir).expect("create temp data dir");
        let log_path = dir.join("server.log");
        let log = fs::File::create(&log_path).expect("create server log");
        let log_err = log.try_clone().expect("clone server log handle");

        let mut cmd = match target.as_str() {
            "warden" => {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
                cmd.arg("server")
                    .arg("--client-port")
                    .arg(port.to_string())
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .arg("--extended-types-enabled")
                    .arg("true")
                    .arg("--4lw-commands-whitelist")
                    .arg("*");
                cmd
            }
            "apache" => {
                let conf_dir = dir.join("conf");
                fs::create_dir_all(&conf_dir).expect("create conf dir");
                let cfg = format!(
                    "tickTime=2000\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                     4lw.commands.whitelist=*\nadmin.enableServer=false\n",
                    data_dir.display(),
                    port
                );
                let cfg_path = conf_dir.join("zoo.cfg");
                fs::write(&cfg_path, cfg).expect("write zoo.cfg");
                // Quiet log4j config: only warnings, to stdout (captured into server.log).
                fs::write(
                    conf_dir.join("log4j.properties"),
                    "log4j.rootLogger=WARN, CONSOLE\n\
                     log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n\
                     log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n\
                     log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n\n",
                )
                .expect("write log4j.properties");
                // The Debian package ships the jars in /usr/share/java; zookeeper.jar's manifest
                // Class-Path pulls in its dependencies. slf4j-log4j12 + log4j-1.2 bind logging to
                // the quiet config above. /usr/share/zookeeper/lib/* is kept for other layouts.
                let classpath = std::env::var("WARDEN_ZK_CLASSPATH").unwrap_or_else(|_| {
                    format!(
                        "{}:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:\
                         /usr/share/java/log4j-1.2.jar:/usr/share/zookeeper/lib/*",
                        conf_dir.display()
                    )
                });
                let mut cmd = Command::new("java");
                cmd.arg("-Xmx256m")
                    .arg("-XX:+UseSerialGC")
                    .arg("-XX:TieredStopAtLevel=1")
                    .arg("-Dzookeeper.extendedTypesEnabled=true")
                    .arg(format!(
                        "-Dlog4j.configuration=file:{}",
                        conf_dir.join("log4j.properties").display()
                    ))
                    .arg("-cp")
                    .arg(classpath)
                    .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
                    .arg(&cfg_path);
                cmd
            }
            other => panic!("unknown WARDEN_TEST_TARGET {other:?} (expected `warden` or `apache`)"),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {target} server: {e}"));
        let mut server = Server {
            child,
            dir,
            port,
            target,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait server") {
                panic!(
                    "{} server exited during startup with {status}; log:\n{}",
                    self.target,
                    self.log()
                );
            }
            if TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} server did not accept connections on 127.0.0.1:{} within {:?}; log:\n{}",
                    self.target,
                    self.port,
                    STARTUP_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.join("server.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

static SHARED: Mutex<Weak<Server>> = Mutex::new(Weak::new());

/// Returns the shared server, starting it when no running test holds it.
fn server() -> Arc<Server> {
    let mut guard = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = guard.upgrade() {
        return server;
    }
    let server = Arc::new(Server::start());
    *guard = Arc::downgrade(&server);
    server
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn connect(server: &Server) -> Client {
    connect_with(server, Client::connector()).await
}

async fn connect_with(server: &Server, connector: zookeeper_client::Connector) -> Client {
    timeout(
        STARTUP_TIMEOUT,
        connector
            .with_session_timeout(Duration::from_secs(10))
            .connect(&server.addr()),
    )
    .await
    .expect("timed out connecting")
    .expect("connect failed")
}

/// Bounds an operation future in time.
async fn op<T>(fut: impl std::future::Future<Output = T>) -> T {
    timeout(OP_TIMEOUT, fut).await.expect("operation timed out")
}

async fn event(watcher: OneshotWatcher) -> WatchedEvent {
    timeout(EVENT_TIMEOUT, watcher.changed())
        .await
        .expect("timed out waiting for oneshot watch event")
}

async fn pevent(watcher: &mut PersistentWatcher) -> WatchedEvent {
    timeout(EVENT_TIMEOUT, watcher.changed())
        .await
        .expect("timed out waiting for persistent watch event")
}

fn assert_event(ev: &WatchedEvent, event_type: EventType, path: &str) {
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (event_type, path),
        "unexpected event {ev:?}"
    );
    assert_eq!(
        ev.session_state,
        SessionState::SyncConnected,
        "event {ev:?}"
    );
}

/// Unique absolute path for a test.
fn uniq(name: &str) -> String {
    format!("/rs-{name}-{}", UNIQUE.fetch_add(1, Ordering::Relaxed))
}

const PERSISTENT: CreateOptions<'static> = CreateMode::Persistent.with_acls(Acls::anyone_all());
const PERSISTENT_SEQ: CreateOptions<'static> =
    CreateMode::PersistentSequential.with_acls(Acls::anyone_all());
const EPHEMERAL: CreateOptions<'static> = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
const EPHEMERAL_SEQ: CreateOptions<'static> =
    CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
const CONTAINER: CreateOptions<'static> = CreateMode::Container.with_acls(Acls::anyone_all());

/// Container and TTL nodes are stored with a special ephemeralOwner
/// (Long.MIN_VALUE, resp. 0xFF00.. | ttl), but clients are shown 0
/// (DataNode.getClientEphemeralOwner) in every Stat: create2, exists, getData, ...
const EXTENDED_TYPE_CLIENT_OWNER: i64 = 0;

/// Base64(SHA1("alice:secret")) / Base64(SHA1("bob:hunter2")), the digest scheme ids.
const ALICE_DIGEST: &str = "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=";
const BOB_DIGEST: &str = "bob:1Yu1ryCXOIF7lyFzbmQ5J+MJOZc=";

fn assert_fresh_stat(stat: &Stat, data_len: i32, owner: i64) {
    assert!(stat.czxid > 0, "{stat:?}");
    assert_eq!(stat.mzxid, stat.czxid, "{stat:?}");
    assert_eq!(stat.pzxid, stat.czxid, "{stat:?}");
    assert_eq!(stat.ctime, stat.mtime, "{stat:?}");
    assert!(stat.ctime > 0, "{stat:?}");
    assert_eq!(stat.version, 0, "{stat:?}");
    assert_eq!(stat.cversion, 0, "{stat:?}");
    assert_eq!(stat.aversion, 0, "{stat:?}");
    assert_eq!(stat.ephemeral_owner, owner, "{stat:?}");
    assert_eq!(stat.data_length, data_len, "{stat:?}");
    assert_eq!(stat.num_children, 0, "{stat:?}");
}

async fn stat_of(client: &Client, path: &str) -> Stat {
    op(client.check_stat(path))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{path} does not exist"))
}

async fn children_sorted(client: &Client, path: &str) -> Vec<String> {
    let mut children = op(client.list_children(path)).await.unwrap();
    children.sort();
    children
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// create2 (and create via 3.4 compatibility), createContainer, createTTL: all modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_modes_and_stats() {
    let server = server();
    let client = connect(&server).await;
    let sid = client.session_id().0;
    assert_ne!(sid, 0);
    let root = uniq("create");

    // Persistent (create2 returns the stat of the new node).
    let (stat, seq) = op(client.create(&root, b"root", &PERSISTENT))
        .await
        .unwrap();
    assert_eq!(seq.into_i64(), -1);
    assert_fresh_stat(&stat, 4, 0);
    assert_eq!(stat_of(&client, &root).await, stat);
    assert_eq!(
        op(client.get_data(&root)).await.unwrap(),
        (b"root".to_vec(), stat)
    );

    // Ephemeral: ephemeralOwner is the session id.
    let eph = format!("{root}/eph");
    let (eph_stat, _) = op(client.create(&eph, b"", &EPHEMERAL)).await.unwrap();
    assert_fresh_stat(&eph_stat, 0, sid);
    assert!(eph_stat.czxid > stat.czxid);

    // Persistent sequential: first child created under a parent with cversion 1.
    let (pseq_stat, pseq) = op(client.create(&format!("{root}/pseq-"), b"p", &PERSISTENT_SEQ))
        .await
        .unwrap();
    assert_eq!(pseq.into_i64(), 1);
    assert_eq!(pseq.to_string(), "0000000001");
    assert_fresh_stat(&pseq_stat, 1, 0);
    assert_eq!(
        stat_of(&client, &format!("{root}/pseq-0000000001")).await,
        pseq_stat
    );

    // Ephemeral sequential.
    let (eseq_stat, eseq) = op(client.create(&format!("{root}/eseq-"), b"", &EPHEMERAL_SEQ))
        .await
        .unwrap();
    assert_eq!(eseq.into_i64(), 2);
    assert_fresh_stat(&eseq_stat, 0, sid);
    assert!(op(client.check_stat(&format!("{root}/eseq-0000000002")))
        .await
        .unwrap()
        .is_some());

    // Container: the client-visible ephemeralOwner is 0.
    let container = format!("{root}/container");
    let (container_stat, _) = op(client.create(&container, b"c", &CONTAINER))
        .await
        .unwrap();
    assert_fresh_stat(&container_stat, 1, EXTENDED_TYPE_CLIENT_OWNER);
    assert_eq!(stat_of(&client, &container).await, container_stat);
    // A container can hold ephemeral children.
    op(client.create(&format!("{container}/e"), b"", &EPHEMERAL))
        .await
        .unwrap();

    // TTL (persistent and persistent-sequential): the client-visible ephemeralOwner is 0.
    let ttl_opts = CreateMode::Persistent
        .with_acls(Acls::anyone_all())
        .with_ttl(Duration::from_millis(60_000));
    let (ttl_stat, _) = op(client.create(&format!("{root}/ttl"), b"t", &ttl_opts))
        .await
        .unwrap();
    assert_fresh_stat(&ttl_stat, 1, EXTENDED_TYPE_CLIENT_OWNER);
    assert_eq!(
        op(client.get_data(&format!("{root}/ttl"))).await.unwrap(),
        (b"t".to_vec(), ttl_stat)
    );
    let ttl_seq_opts = CreateMode::PersistentSequential
        .with_acls(Acls::anyone_all())
        .with_ttl(Duration::from_millis(12_345));
    let (ttl_seq_stat, ttl_seq) = op(client.create(&format!("{root}/ttlseq-"), b"", &ttl_seq_opts))
        .await
        .unwrap();
    assert_eq!(ttl_seq.into_i64(), 5);
    assert_fresh_stat(&ttl_seq_stat, 0, EXTENDED_TYPE_CLIENT_OWNER);

    // Plain create (opcode 1): the 3.4 compatible client mode does not get a stat back.
    let old = connect_with(&server, Client::connector().with_server_version(3, 4, 0)).await;
    let (old_stat, _) = op(old.create(&format!("{root}/old"), b"old", &PERSISTENT))
        .await
        .unwrap();
    assert!(old_stat.is_invalid(), "{old_stat:?}");
    let old_stat = stat_of(&client, &format!("{root}/old")).await;
    assert_fresh_stat(&old_stat, 3, 0);

    // Parent bookkeeping: 7 creates, no deletes.
    let parent = stat_of(&client, &root).await;
    assert_eq!(parent.num_children, 7);
    assert_eq!(parent.cversion, 7);
    assert_eq!(parent.version, 0);
    assert_eq!(
        parent.mzxid, stat.czxid,
        "child creation does not touch mzxid"
    );
    assert_eq!(
        parent.pzxid, old_stat.czxid,
        "pzxid is the zxid of the last child creation"
    );
    assert_eq!(parent.mtime, stat.mtime);

    let mut expected: Vec<String> = [
        "container",
        "eph",
        "eseq-0000000002",
        "old",
        "pseq-0000000001",
        "ttl",
        "ttlseq-0000000005",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.sort();
    assert_eq!(children_sorted(&client, &root).await, expected);

    // Creating an existing node.
    assert_eq!(
        op(client.create(&root, b"", &PERSISTENT))
            .await
            .unwrap_err(),
        Error::NodeExists
    );
    assert_eq!(
        op(client.create(&eph, b"", &EPHEMERAL)).await.unwrap_err(),
        Error::NodeExists
    );
}

/// The sequential suffix is `%010d` of the parent's cversion at the time of the create,
/// where -- measured on Apache ZooKeeper 3.8 -- the counter used for naming counts child
/// *creations* only: child deletions bump the cversion reported in Stat, but not the
/// sequence number. Without deletions both are equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_suffix_follows_parent_cversion() {
    let server = server();
    let client = connect(&server).await;
    let p = uniq("seq");
    op(client.create(&p, b"", &PERSISTENT)).await.unwrap();

    // No deletions yet: suffix == cversion of the parent before the create.
    op(client.create(&format!("{p}/a"), b"", &PERSISTENT))
        .await
        .unwrap();
    op(client.create(&format!("{p}/b"), b"", &PERSISTENT))
        .await
        .unwrap();
    assert_eq!(stat_of(&client, &p).await.cversion, 2);
    let (_, seq) = op(client.create(&format!("{p}/s-"), b"", &PERSISTENT_SEQ))
        .await
        .unwrap();
    assert_eq!(seq.into_i64(), 2);
    assert_eq!(seq.to_string(), "0000000002");
    let (_, seq) = op(client.create(&format!("{p}/e-"), b"", &EPHEMERAL_SEQ))
        .await
        .unwrap();
    assert_eq!(
        seq.into_i64(),
        3,
        "counter is shared between prefixes and modes"
    );
    assert_eq!(stat_of(&client, &p).await.cversion, 4);

    // A deletion bumps the reported cversion ...
    op(client.delete(&format!("{p}/a"), None)).await.unwrap();
    let st = stat_of(&client, &p).await;
    assert_eq!((st.cversion, st.num_children), (5, 3));
    // ... but not the sequence counter (4 creations so far).
    let (_, seq) = op(client.create(&format!("{p}/s-"), b"", &PERSISTENT_SEQ))
        .await
        .unwrap();
    assert_eq!(seq.into_i64(), 4);
    assert_eq!(stat_of(&client, &p).await.cversion, 6);

    // Data changes of the parent do not move either counter.
    op(client.set_data(&p, b"x", None)).await.unwrap();
    // A sequential create with a trailing slash names the child by the number alone.
    let (_, seq) = op(client.create(&format!("{p}/"), b"", &PERSISTENT_SEQ))
        .await
        .unwrap();
    assert_eq!(seq.into_i64(), 5);
    assert_eq!(format!("{seq}"), "0000000005");
    assert_eq!(stat_of(&client, &p).await.cversion, 7);

    // Deleting a sequential node does not free or reuse numbers.
    op(client.delete(&format!("{p}/0000000005"), None))
        .await
        .unwrap();
    let (_, seq) = op(client.create(&format!("{p}/s-"), b"", &PERSISTENT_SEQ))
        .await
        .unwrap();
    assert_eq!(seq.into_i64(), 6);
    assert_eq!(stat_of(&client, &p).await.cversion, 9);

    // Deletion through session close, and through multi, are not counted either.
    let tmp = connect(&server).await;
    op(tmp.create(&format!("{p}/t"), b"", &EPHEMERAL))
        .await
        .unwrap();
    let (_, w) = op(client.check_and_watch_stat(&format!("{p}/t")))
        .await
        .unwrap();
    drop(tmp);
    assert_event(&event(w).await, EventType::NodeDeleted, &format!("{p}/t"));
    let mut m = client.new_multi_writer();
    m.add_create(&format!("{p}/m"), b"", &PERSISTENT).unwrap();
    m.add_delete(&format!("{p}/m"), None).unwrap();
    op(m.commit()).await.unwrap();
    let st = stat_of(&client, &p).await;
    assert_eq!((st.cversion, st.num_children), (13, 5));
    let (_, seq) = op(client.create(&format!("{p}/s-"), b"", &PERSISTENT_SEQ))
        .await
        .unwrap();
    assert_eq!(seq.into_i64(), 9);

    assert_eq!(
        children_sorted(&client, &p).await,
        vec![
            "b".to_string(),
            "e-0000000003".into(),
            "s-0000000002".into(),
            "s-0000000004".into(),
            "s-0000000006".into(),
            "s-0000000009".into()
        ]
    );
    let st = stat_of(&client, &p).await;
    assert_eq!((st.cversion, st.num_children, st.version), (14, 6, 1));

    let (_, seq): (Stat, CreateSequence) =
        op(client.create(&format!("{p}/z"), b"", &PERSISTENT_SEQ))
            .await
            .unwrap();
    assert_eq!(seq.to_string(), "0000000010");
    assert!(op(client.check_stat(&format!("{p}/z0000000010")))
        .await
        .unwrap()
        .is_some());
}

/// exists, getData, setData with versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_set_data_with_versions() {
    let server = server();
    let client = connect(&server).await;
    let p = uniq("data");
    let missing = format!("{p}-missing");

    assert_eq!(op(client.check_stat(&p)).await.unwrap(), None);
    assert_eq!(op(client.get_data(&p)).await.unwrap_err(), Error::NoNode);
    assert_eq!(
        op(client.set_data(&missing, b"x", None)).await.unwrap_err(),
        Error::NoNode
    );

    let (created, _) = op(client.create(&p, b"v0", &PERSISTENT)).await.unwrap();
    let (data, st0) = op(client.get_data(&p)).await.unwrap();
    assert_eq!(data, b"v0");
    assert_eq!(st0, created);

    let st1 = op(client.set_data(&p, b"value-1", Some(0))).await.unwrap();
    assert_eq!(st1.version, 1);
    assert_eq!(st1.data_length, 7);
    assert_eq!(st1.czxid, st0.czxid);
    assert!(st1.mzxid > st0.mzxid);
    assert_eq!(st1.pzxid, st0.pzxid, "setData does not move pzxid");
    assert_eq!(st1.ctime, st0.ctime);
    assert!(st1.mtime >= st0.mtime);
    assert_eq!(
        (
            st1.cversion,
            st1.aversion,
            st1.num_children,
            st1.ephemeral_owner
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(
        op(client.get_data(&p)).await.unwrap(),
        (b"value-1".to_vec(), st1)
    );

    // Stale version.
    assert_eq!(
        op(client.set_data(&p, b"nope", Some(0))).await.unwrap_err(),
        Error::BadVersion
    );
    assert_eq!(
        op(client.set_data(&p, b"nope", Some(7))).await.unwrap_err(),
        Error::BadVersion
    );
    assert_eq!(
        op(client.get_data(&p)).await.unwrap(),
        (b"value-1".to_vec(), st1)
    );

    // Unconditional (-1) and empty data.
    let st2 = op(client.set_data(&p, b"", None)).await.unwrap();
    assert_eq!((st2.version, st2.data_length), (2, 0));
    assert!(st2.mzxid > st1.mzxid);
    assert_eq!(op(client.get_data(&p)).await.unwrap(), (Vec::new(), st2));

    // Setting identical data still bumps the version.
    let st3 = op(client.set_data(&p, b"", Some(2))).await.unwrap();
    assert_eq!(st3.version, 3);

    // Larger payload round trip.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let st4 = op(client.set_data(&p, &big, Some(3))).await.unwrap();
    assert_eq!((st4.version, st4.data_length), (4, 200_000));
    let (data, st) = op(client.get_data(&p)).await.unwrap();
    assert_eq!(data, big);
    assert_eq!(st, st4);
    assert_eq!(stat_of(&client, &p).await, st4);
}

/// delete with versions and its errors; parent cversion/pzxid bookkeeping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_versions() {
    let server = server();
    let client = connect(&server).await;
    let p = uniq("delete");
    let c = format!("{p}/c");
    op(client.create(&p, b"", &PERSISTENT)).await.unwrap();
    let (child, _) = op(client.create(&c, b"", &PERSISTENT)).await.unwrap();

    assert_eq!(
        op(client.delete(&p, None)).await.unwrap_err(),
        Error::NotEmpty
    );
    assert_eq!(
        op(client.delete(&p, Some(0))).await.unwrap_err(),
        Error::NotEmpty
    );
    assert_eq!(
        op(client.delete(&format!("{p}/missing"), None))
            .await
            .unwrap_err(),
        Error::NoNode
    );
    assert_eq!(
        op(client.delete(&c, Some(1))).await.unwrap_err(),
        Error::BadVersion
    );

    op(client.set_data(&c, b"1", None)).await.unwrap();
    let last = op(client.set_data(&c, b"2", None)).await.unwrap();
    assert_eq!(last.version, 2);
    assert_eq!(
        op(client.delete(&c, Some(1))).await.unwrap_err(),
        Error::BadVersion
    );
    op(client.delete(&c, Some(2))).await.unwrap();
    assert_eq!(op(client.check_stat(&c)).await.unwrap(), None);
    assert_eq!(
        op(client.delete(&c, None)).await.unwrap_err(),
        Error::NoNode
    );
    assert_eq!(
        op(client.delete(&c, Some(2))).await.unwrap_err(),
        Error::NoNode
    );

    let parent = stat_of(&client, &p).await;
    assert_eq!(
        (parent.cversion, parent.num_children, parent.version),
        (2, 0, 0)
    );
    assert!(
        parent.pzxid > last.mzxid,
        "delete moves the parent's pzxid: {parent:?} vs {last:?}"
    );
    assert!(parent.pzxid > child.czxid);
    assert_eq!(parent.mzxid, parent.czxid);

    // Version of the node itself, not of the parent, is checked.
    op(client.delete(&p, Some(0))).await.unwrap();
    assert_eq!(op(client.check_stat(&p)).await.unwrap(), None);

    // The client library refuses to delete "/".
    assert!(matches!(
        op(client.delete("/", None)).await.unwrap_err(),
        Error::BadArguments(_)
    ));
}

/// NodeExists/NoNode/NoChildrenForEphemerals/InvalidACL/bad paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes() {
    let server = server();
    let client = connect(&server).await;
    let p = uniq("errors");
    op(client.create(&p, b"", &PERSISTENT)).await.unwrap();

    // Parent missing.
    assert_eq!(
        op(client.create(&format!("{p}/no/child"), b"", &PERSISTENT))
            .await
            .unwrap_err(),
        Error::NoNode
    );
    assert_eq!(
        op(client.create(&format!("{p}/no/seq-"), b"", &PERSISTENT_SEQ))
            .await
            .unwrap_err(),
        Error::NoNode
    );

    // Ephemerals cannot have children, whatever the child's mode.
    let eph = format!("{p}/eph");
    op(client.create(&eph, b"", &EPHEMERAL)).await.unwrap();
    for opts in [&PERSISTENT, &EPHEMERAL, &CONTAINER] {
        assert_eq!(
            op(client.create(&format!("{eph}/child"), b"", opts))
                .await
                .unwrap_err(),
            Error::NoChildrenForEphemerals
        );
    }
    for opts in [&PERSISTENT_SEQ, &EPHEMERAL_SEQ] {
        assert_eq!(
            op(client.create(&format!("{eph}/child-"), b"", opts))
                .await
                .unwrap_err(),
            Error::NoChildrenForEphemerals
        );
    }
    assert_eq!(stat_of(&client, &eph).await.cversion, 0);

    // Server-side InvalidACL: malformed digest id, and "auth" scheme without any authenticated id.
    let bad_digest = [Acl::new(Permission::ALL, AuthId::new("digest", "no-colon"))];
    assert_eq!(
        op(client.create(
            &format!("{p}/acl1"),
            b"",
            &CreateMode::Persistent.with_acls(Acls::new(&bad_digest))
        ))
        .await
        .unwrap_err(),
        Error::InvalidAcl
    );
    assert_eq!(
        op(client.create(
            &format!("{p}/acl2"),
            b"",
            &CreateMode::Persistent.with_acls(Acls::creator_all())
        ))
        .await
        .unwrap_err(),
        Error::InvalidAcl
    );
    let bad_scheme = [Acl::new(Permission::ALL, AuthId::new("nosuchscheme", "x"))];
    assert_eq!(
        op(client.create(
            &format!("{p}/acl3"),
            b"",
            &CreateMode::Persistent.with_acls(Acls::new(&bad_scheme))
        ))
        .await
        .unwrap_err(),
        Error::InvalidAcl
    );
    // Client-side: empty ACL list.
    assert_eq!(
        op(client.create(
            &format!("{p}/acl4"),
            b"",
            &CreateMode::Persistent.with_acls(Acls::new(&[]))
        ))
        .await
        .unwrap_err(),
        Error::InvalidAcl
    );

    // Client-side path validation.
    for bad in [
        "",
        "relative",
        "/double//slash",
        "/trailing/",
        "/dot/./x",
        "/dotdot/../x",
    ] {
        assert!(
            matches!(
                op(client.create(bad, b"", &PERSISTENT)).await.unwrap_err(),
                Error::BadArguments(_)
            ),
            "{bad:?} should be rejected"
        );
    }
    assert!(matches!(
        op(client.create("/", b"", &PERSISTENT)).await.unwrap_err(),
        Error::BadArguments(_)
    ));
    // Server-side path validation: a trailing "." or ".." component passes the client's check.
    for bad in [format!("{p}/."), format!("{p}/..")] {
        assert_eq!(
            op(client.create(&bad, b"", &PERSISTENT)).await.unwrap_err(),
            Error::BadArguments(&"server error"),
            "{bad:?} should be rejected by the server"
        );
    }
    // Reads do not validate the path on the server: simply NoNode.
    assert_eq!(
        op(client.get_data(&format!("{p}/."))).await.unwrap_err(),
        Error::NoNode
    );
    // TTL is only valid for persistent modes, and must be non-zero (client-side).
    let ttl_eph = CreateMode::Ephemeral
        .with_acls(Acls::anyone_all())
        .with_ttl(Duration::from_secs(1));
    assert!(matches!(
        op(client.create(&format!("{p}/ttl"), b"", &ttl_eph))
            .await
            .unwrap_err(),
        Error::BadArguments(_)
    ));

    // Nothing above created a node.
    assert_eq!(children_sorted(&client, &p).await, vec!["eph".to_string()]);
    let st = stat_of(&client, &p).await;
    assert_eq!((st.cversion, st.num_children), (1, 1));
}

/// getChildren and getChildren2 (children + stat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_and_children2() {
    let server = server();
    let client = connect(&server).await;
    let p = uniq("children");
    op(client.create(&p, b"parent", &PERSISTENT)).await.unwrap();
    assert_eq!(
        op(client.list_children(&p)).await.unwrap(),
        Vec::<String>::new()
    );
    let (children, st) = op(client.get_children(&p)).await.unwrap();
    assert!(children.is_empty());
    assert_fresh_stat(&st, 6, 0);

    op(client.create(&format!("{p}/b"), b"", &PERSISTENT))
        .await
        .unwrap();
    op(client.create(&format!("{p}/a"), b"", &EPHEMERAL))
        .await
        .unwrap();
    let (last, _) = op(client.create(&format!("{p}/c"), b"", &PERSISTENT))
        .await
        .unwrap();
    op(client.create(&format!("{p}/c/grandchild"), b"", &PERSISTENT))
        .await
        .unwrap();

    assert_eq!(
        children_sorted(&client, &p).await,
        vec!["a".to_string(), "b".into(), "c".into()]
    );
    let (mut children, st) = op(client.get_children(&p)).await.unwrap();
    children.sort();
    assert_eq!(children, vec!["a".to_string(), "b".into(), "c".into()]);
    assert_eq!(
        (st.num_children, st.cversion, st.version, st.data_length),
        (3, 3, 0, 6)
    );
    assert_eq!(st.pzxid, last.czxid, "grandchildren do not move pzxid");
    assert_eq!(st, stat_of(&client, &p).await);

    assert_eq!(
        op(client.list_children(&format!("{p}/a"))).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        op(client.list_children(&format!("{p}/c"))).await.unwrap(),
        vec!["grandchild".to_string()]
    );
    assert_eq!(
        op(client.list_children(&format!("{p}/zz")))
            .await
            .unwrap_err(),
        Error::NoNode
    );
    assert_eq!(
        op(client.get_children(&format!("{p}/zz")))
            .await
            .unwrap_err(),
        Error::NoNode
    );

    // The root lists the "zookeeper" system node.
    assert!(op(client.list_children("/"))
        .await
        .unwrap()
        .contains(&"zookeeper".to_string()));
}

/// getACL/setACL with aversion and world-scheme enforcement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_set_acl() {
    let server = server();
    let client = connect(&server).await;
    let p = uniq("acl");
    op(client.create(&p, b"d", &PERSISTENT)).await.unwrap();

    let (acl, st) = op(client.get_acl(&p)).await.unwrap();
    assert_eq!(acl, vec![Acl::new(Permission::ALL, AuthId::anyone())]);
    assert_fresh_stat(&st, 1, 0);
    assert_eq!(
        op(client.get_acl(&format!("{p}/missing")))
            .await
            .unwrap_err(),
        Error::NoNode
    );

    let read_admin = [Acl::new(
        Permission::READ | Permission::ADMIN,
        AuthId::anyone(),
    )];
    let st1 = op(client.set_acl(&p, &read_admin, Some(0))).await.unwrap();
    assert_eq!((st1.aversion, st1.version, st1.cversion), (1, 0, 0));
    assert!(st1.mzxid == st.mzxid, "setACL does not change mzxid");
    assert_eq!(
        op(client.set_acl(&p, &read_admin, Some(0)))
            .await
            .unwrap_err(),
        Error::BadVersion
    );
    let (acl, st) = op(client.get_acl(&p)).await.unwrap();
    assert_eq!(acl, read_admin.to_vec());
    assert_eq!(st, st1);

    // Enforcement: no WRITE, no CREATE, READ ok.
    assert_eq!(
        op(client.set_data(&p, b"x", None)).await.unwrap_err(),
        Error::NoAuth
    );
    assert_eq!(
        op(client.create(&format!("{p}/c"), b"", &PERSISTENT))
            .await
            .unwrap_err(),
        Error::NoAuth
    );
    assert_eq!(op(client.get_data(&p)).await.unwrap().0, b"d");
    // Permission checks happen before version checks.
    assert_eq!(
        op(client.set_data(&p, b"x", Some(42))).await.unwrap_err(),
        Error::NoAuth
    );

    // Write-only: getData/getChildren need READ, exists does not.
    let write_admin = [Acl::new(
        Permission::WRITE | Permission::ADMIN,
        AuthId::anyone(),
    )];
    let st2 = op(client.set_acl(&p, &write_admin, None)).await.unwrap();
    assert_eq!(st2.aversion, 2);
    assert_eq!(op(client.get_data(&p)).await.unwrap_err(), Error::NoAuth);
    assert_eq!(
        op(client.list_children(&p)).await.unwrap_err(),
        Error::NoAuth
    );
    assert_eq!(
        op(client.get_children(&p)).await.unwrap_err(),
        Error::NoAuth
    );
    assert_eq!(stat_of(&client, &p).await.aversion, 2);
    op(client.set_data(&p, b"w", Some(0))).await.unwrap();

    // Server-side InvalidACL on setACL.
    assert_eq!(
        op(client.set_acl(&p, &[], None)).await.unwrap_err(),
        Error::InvalidAcl
    );
    let bad = [Acl::new(Permission::ALL, AuthId::new("digest", "no-colon"))];
    assert_eq!(
        op(client.set_acl(&p, &bad, None)).await.unwrap_err(),
        Error::InvalidAcl
    );
    assert_eq!(
        op(client.set_acl(&p, Acls::creator_all().as_ref(), None))
            .await
            .unwrap_err(),
        Error::InvalidAcl
    );

    // No ADMIN: setACL refused.
    let write_only = [Acl::new(Permission::WRITE, AuthId::anyone())];
    let st3 = op(client.set_acl(&p, &write_only, Some(2))).await.unwrap();
    assert_eq!(st3.aversion, 3);
    assert_eq!(
        op(client.set_acl(&p, &read_admin, None)).await.unwrap_err(),
        Error::NoAuth
    );

    // Delete permission is taken from the parent ("/" is world:anyone ALL).
    op(client.delete(&p, None)).await.unwrap();
}

/// addAuth digest, ACL enforcement across sessions, whoAmI, bad auth scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_and_enforcement() {
    let server = server();
    let alice = connect(&server).await;
    let anon = connect(&server).await;
    let p = uniq("auth");

    // whoAmI before and after addAuth.
    assert_eq!(
        op(anon.list_auth_users()).await.unwrap(),
        vec![AuthUser::new("ip", "127.0.0.1")]
    );
    op(alice.auth("digest", b"alice:secret")).await.unwrap();
    let mut users = op(alice.list_auth_users()).await.unwrap();
    users.sort_by(|a, b| (a.scheme(), a.user()).cmp(&(b.scheme(), b.user())));
    assert_eq!(
        users,
        vec![
            AuthUser::new("digest", "alice"),
            AuthUser::new("ip", "127.0.0.1")
        ]
    );

    // "auth" scheme expands to the authenticated digest identity.
    let creator = CreateMode::Persistent.with_acls(Acls::creator_all());
    op(alice.create(&p, b"secret-data", &creator))
        .await
        .unwrap();
    let (acl, _) = op(alice.get_acl(&p)).await.unwrap();
    assert_eq!(
        acl,
        vec![Acl::new(
            Permission::ALL,
            AuthId::new("digest", ALICE_DIGEST)
        )]
    );
    assert_eq!(op(alice.get_data(&p)).await.unwrap().0, b"secret-data");
    op(alice.create(&format!("{p}/child"), b"", &PERSISTENT))
        .await
        .unwrap();

    // Unauthenticated session.
    assert_eq!(op(anon.get_data(&p)).await.unwrap_err(), Error::NoAuth);
    assert_eq!(
        op(anon.set_data(&p, b"x", None)).await.unwrap_err(),
        Error::NoAuth
    );
    assert_eq!(op(anon.list_children(&p)).await.unwrap_err(), Error::NoAuth);
    assert_eq!(
        op(anon.create(&format!("{p}/x"), b"", &PERSISTENT))
            .await
            .unwrap_err(),
        Error::NoAuth
    );
    assert_eq!(
        op(anon.delete(&format!("{p}/child"), None))
            .await
            .unwrap_err(),
        Error::NoAuth
    );
    assert_eq!(
        op(anon.set_acl(&p, Acls::anyone_all().as_ref(), None))
            .await
            .unwrap_err(),
        Error::NoAuth
    );
    // getACL needs READ or ADMIN, getAllChildrenNumber needs READ.
    assert_eq!(op(anon.get_acl(&p)).await.unwrap_err(), Error::NoAuth);
    assert_eq!(
        op(anon.count_descendants_number(&p)).await.unwrap_err(),
        Error::NoAuth
    );
    let mut r = anon.new_multi_reader();
    r.add_get_data(&p).unwrap();
    r.add_get_children(&p).unwrap();
    let results = op(r.commit()).await.unwrap();
    assert!(
        matches!(
            &results[..],
            [
                MultiReadResult::Error { err: Error::NoAuth },
                MultiReadResult::Error { err: Error::NoAuth }
            ]
        ),
        "{results:?}"
    );
    // exists, sync and addWatch are not ACL-checked.
    assert_eq!(stat_of(&anon, &p).await.num_children, 1);
    let (stat, _w) = op(anon.check_and_watch_stat(&p)).await.unwrap();
    assert_eq!(stat.unwrap().num_children, 1);
    op(anon.sync(&p)).await.unwrap();
    let _pw = op(anon.watch(&p, AddWatchMode::Persistent)).await.unwrap();

    // Wrong password: authentication succeeds (digest accepts any id) but does not match.
    let bob = connect_with(
        &server,
        Client::connector().with_auth("digest", b"bob:hunter2"),
    )
    .await;
    op(bob.auth("digest", b"alice:wrong")).await.unwrap();
    assert_eq!(op(bob.get_data(&p)).await.unwrap_err(), Error::NoAuth);

    // Same credentials in another session (auth given at connect time).
    let alice2 = connect_with(
        &server,
        Client::connector().with_auth("digest", b"alice:secret"),
    )
    .await;
    assert_eq!(op(alice2.get_data(&p)).await.unwrap().0, b"secret-data");
    op(alice2.delete(&format!("{p}/child"), None))
        .await
        .unwrap();

    // Explicit digest ACL for bob (read only) plus world read of nothing.
    let q = format!("{p}-bob");
    let bob_read = [
        Acl::new(Permission::READ, AuthId::new("digest", BOB_DIGEST)),
        Acl::new(Permission::ALL, AuthId::new("digest", ALICE_DIGEST)),
    ];
    op(alice.create(
        &q,
        b"for-bob",
        &CreateMode::Persistent.with_acls(Acls::new(&bob_read)),
    ))
    .await
    .unwrap();
    assert_eq!(op(bob.get_data(&q)).await.unwrap().0, b"for-bob");
    assert_eq!(
        op(bob.set_data(&q, b"x", None)).await.unwrap_err(),
        Error::NoAuth
    );
    assert_eq!(op(anon.get_data(&q)).await.unwrap_err(), Error::NoAuth);
    assert_eq!(op(alice.get_acl(&q)).await.unwrap().0, bob_read.to_vec());
    op(alice.set_data(&q, b"y", Some(0))).await.unwrap();

    // Unknown auth scheme fails authentication (and the session).
    let doomed = connect(&server).await;
    assert_eq!(
        op(doomed.auth("nosuchscheme", b"whatever"))
            .await
            .unwrap_err(),
        Error::AuthFailed
    );

    op(alice.delete(&p, None)).await.unwrap();
    op(alice.delete(&q, None)).await.unwrap();
}

/// sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_op() {
    let server = server();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let p = uniq("sync");
    op(other.create(&p, b"x", &PERSISTENT)).await.unwrap();
    op(client.sync(&p)).await.unwrap();
    assert_eq!(op(client.get_data(&p)).await.unwrap().0, b"x");
    op(client.sync("/")).await.unwrap();
    // sync does not check existence.
    op(client.sync(&format!("{p}/missing"))).await.unwrap();
}

/// multi: success layout, failure layout (index of the failing op), check op, atomicity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_write() {
    let server = server();
    let client = connect(&server).await;
    let p = uniq("multi");
    op(client.create(&p, b"", &PERSISTENT)).await.unwrap();

    // Empty multi is answered by the client library without a request.
    assert_eq!(
        op(client.new_multi_writer().commit()).await.unwrap(),
        vec![]
    );

    let mut w = client.new_multi_writer();
    w.add_check_version(&p, 0).unwrap();
    w.add_create(&format!("{p}/a"), b"a", &PERSISTENT).unwrap();
    w.add_create(&format!("{p}/s-"), b"s", &PERSISTENT_SEQ)
        .unwrap();
    w.add_create(&format!("{p}/e"), b"", &EPHEMERAL).unwrap();
    w.add_set_data(&p, b"parent", Some(0)).unwrap();
    w.add_check_version(&p, 1).unwrap(); // sees the preceding setData
    w.add_set_data(&format!("{p}/a"), b"aa", Some(0)).unwrap();
    w.add_delete(&format!("{p}/a"), Some(1)).unwrap();
    let results = op(w.commit()).await.unwrap();
    assert_eq!(results.len(), 8, "{results:?}");
    assert_eq!(results[0], MultiWriteResult::Check);
    let MultiWriteResult::Create { path, stat: a_stat } = &results[1] else {
        panic!("{results:?}")
    };
    assert_eq!(path, &format!("{p}/a"));
    let MultiWriteResult::Create { path, stat: s_stat } = &results[2] else {
        panic!("{results:?}")
    };
    assert_eq!(
        path,
        &format!("{p}/s-0000000001"),
        "seq number counts the create before it"
    );
    let MultiWriteResult::Create { path, stat: e_stat } = &results[3] else {
        panic!("{results:?}")
    };
    assert_eq!(path, &format!("{p}/e"));
    let MultiWriteResult::SetData { stat: p_stat } = &results[4] else {
        panic!("{results:?}")
    };
    assert_eq!(results[5], MultiWriteResult::Check);
    let MultiWriteResult::SetData { stat: a2_stat } = &results[6] else {
        panic!("{results:?}")
    };
    assert_eq!(results[7], MultiWriteResult::Delete);

    // The whole multi is one transaction: one zxid.
    let zxid = p_stat.mzxid;
    // Apache 3.8 answers a create2 inside multi with a plain create result (path only, so the
    // client reports an invalid Stat; ZOOKEEPER-4026). A server returning the stat must
    // return the right one.
    for (stat, len, owner) in [
        (a_stat, 1, 0),
        (s_stat, 1, 0),
        (e_stat, 0, client.session_id().0),
    ] {
        if !stat.is_invalid() {
            assert_fresh_stat(stat, len, owner);
            assert_eq!(stat.czxid, zxid);
        }
    }
    assert_eq!(a2_stat.mzxid, zxid);
    assert_eq!(stat_of(&client, &format!("{p}/e")).await.czxid, zxid);
    assert_eq!((p_stat.version, p_stat.data_length), (1, 6));
    assert_eq!(
        (a2_stat.version, a2_stat.czxid, a2_stat.data_length),
        (1, zxid, 2)
    );
    // Parent: 3 creates + 1 delete; its stat in the result is taken at that step.
    assert_eq!((p_stat.num_children, p_stat.cversion), (3, 3));
    let parent = stat_of(&client, &p).await;
    assert_eq!(
        (
            parent.num_children,
            parent.cversion,
            parent.version,
            parent.pzxid
        ),
        (2, 4, 1, zxid)
    );
    assert_eq!(
        children_sorted(&client, &p).await,
        vec!["e".to_string(), "s-0000000001".into()]
    );

    // Failure: the index of the first failing op is reported and nothing is applied.
    let mut w = client.new_multi_writer();
    w.add_create(&format!("{p}/b"), b"", &PERSISTENT).unwrap();
    w.add_check_version(&p, 0).unwrap(); // stale: version is 1
    w.add_set_data(&p, b"never", None).unwrap();
    assert_eq!(
        op(w.commit()).await.unwrap_err(),
        MultiWriteError::OperationFailed {
            index: 1,
            source: Error::BadVersion
        }
    );
    assert_eq!(
        op(client.check_stat(&format!("{p}/b"))).await.unwrap(),
        None
    );
    assert_eq!(op(client.get_data(&p)).await.unwrap().1, parent);

    let mut w = client.new_multi_writer();
    w.add_check_version(&format!("{p}/missing"), -1).unwrap();
    w.add_create(&format!("{p}/b"), b"", &PERSISTENT).unwrap();
    assert_eq!(
        op(w.commit()).await.unwrap_err(),
        MultiWriteError::OperationFailed {
            index: 0,
            source: Error::NoNode
        }
    );

    let mut w = client.new_multi_writer();
    w.add_create(&format!("{p}/b"), b"", &PERSISTENT).unwrap();
    w.add_set_data(&format!("{p}/b"), b"x", Some(0)).unwrap();
    w.add_create(&format!("{p}/b"), b"", &PERSISTENT).unwrap();
    assert_eq!(
        op(w.commit()).await.unwrap_err(),
        MultiWriteError::OperationFailed {
            index: 2,
            source: Error::NodeExists
        }
    );

    let mut w = client.new_multi_writer();
    w.add_set_data(&p, b"x", None).unwrap();
    w.add_delete(&p, None).unwrap();
    assert_eq!(
        op(w.commit()).await.unwrap_err(),
        MultiWriteError::OperationFailed {
            index: 1,
            source: Error::NotEmpty
        }
    );

    let mut w = client.new_multi_writer();
    w.add_create(&format!("{p}/e/x"), b"", &PERSISTENT).unwrap();
    assert_eq!(
        op(w.commit()).await.unwrap_err(),
        MultiWriteError::OperationFailed {
            index: 0,
            source: Error::NoChildrenForEphemerals
        }
    );

    let mut w = client.new_multi_writer();
    w.add_delete(&format!("{p}/e"), Some(3)).unwrap();
    assert_eq!(
        op(w.commit()).await.unwrap_err(),
        MultiWriteError::OperationFailed {
            index: 0,
            source: Error::BadVersion
        }
    );

    // Nothing of the failed multis was applied (no zxid consumed on the node either).
    assert_eq!(stat_of(&client, &p).await, parent);
    assert_eq!(
        children_sorted(&client, &p).await,
        vec!["e".to_string(), "s-0000000001".into()]
    );

    // CheckWriter: a leading check of the given version.
    let mut cw = client.new_check_writer(&p, Some(1)).unwrap();
    cw.add_set_data(&p, b"checked", Some(1)).unwrap();
    let results = op(cw.commit()).await.unwrap();
    assert!(
        matches!(&results[..], [MultiWriteResult::SetData { stat }] if stat.version == 2),
        "{results:?}"
    );
    let cw = client.new_check_writer(&p, Some(1)).unwrap();
    assert!(matches!(
        op(cw.commit()).await.unwrap_err(),
        zookeeper_client::CheckWriteError::CheckFailed {
            source: Error::BadVersion
        }
    ));
}

/// multiRead: per-op results, errors reported individually.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_read() {
    let server = server();
    let client = connect(&server).await;
    let p = uniq("multiread");
    op(client.create(&p, b"pdata", &PERSISTENT)).await.unwrap();
    op(client.create(&format!("{p}/x"), b"xdata", &PERSISTENT))
        .await
        .unwrap();
    op(client.create(&format!("{p}/y"), b"", &PERSISTENT))
        .await
        .unwrap();
    let p_stat = stat_of(&client, &p).await;
    let x_stat = stat_of(&client, &format!("{p}/x")).await;

    let mut r = client.new_multi_reader();
    r.add_get_data(&p).unwrap();
    r.add_get_children(&p).unwrap();
    r.add_get_data(&format!("{p}/missing")).unwrap();
    r.add_get_children(&format!("{p}/missing")).unwrap();
    r.add_get_data(&format!("{p}/x")).unwrap();
    r.add_get_children(&format!("{p}/x")).unwrap();
    let results = op(r.commit()).await.unwrap();
    assert_eq!(results.len(), 6, "{results:?}");
    match &results[0] {
        MultiReadResult::Data { data, stat } => {
            assert_eq!(data, b"pdata");
            assert_eq!(stat, &p_stat);
        }
        other => panic!("{other:?}"),
    }
    match &results[1] {
        MultiReadResult::Children { children } => {
            let mut children = children.clone();
            children.sort();
            assert_eq!(children, vec!["x".to_string(), "y".into()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&results[2], MultiReadResult::Error { err: Error::NoNode }),
        "{results:?}"
    );
    assert!(
        matches!(&results[3], MultiReadResult::Error { err: Error::NoNode }),
        "{results:?}"
    );
    match &results[4] {
        MultiReadResult::Data { data, stat } => {
            assert_eq!(data, b"xdata");
            assert_eq!(stat, &x_stat);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&results[5], MultiReadResult::Children { children } if children.is_empty()),
        "{results:?}"
    );

    // ACL is enforced per op.
    let no_read = [Acl::new(
        Permission::WRITE | Permission::ADMIN,
        AuthId::anyone(),
    )];
    op(client.set_acl(&format!("{p}/y"), &no_read, None))
        .await
        .unwrap();
    let mut r = client.new_multi_reader();
    r.add_get_data(&format!("{p}/y")).unwrap();
    r.add_get_data(&format!("{p}/x")).unwrap();
    let results = op(r.commit()).await.unwrap();
    assert!(
        matches!(&results[0], MultiReadResult::Error { err: Error::NoAuth }),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], MultiReadResult::Data { .. }),
        "{results:?}"
    );

    assert!(op(client.new_multi_reader().commit())
        .await
        .unwrap()
        .is_empty());
}

/// getEphemerals and getAllChildrenNumber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemerals_and_descendant_count() {
    let server = server();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let p = uniq("ephemerals");
    op(client.create(&p, b"", &PERSISTENT)).await.unwrap();
    op(client.create(&format!("{p}/e1"), b"", &EPHEMERAL))
        .await
        .unwrap();
    op(client.create(&format!("{p}/sub"), b"", &PERSISTENT))
        .await
        .unwrap();
    op(client.create(&format!("{p}/sub/e2"), b"", &EPHEMERAL))
        .await
        .unwrap();
    op(client.create(&format!("{p}/sub/pers"), b"", &PERSISTENT))
        .await
        .unwrap();
    op(client.create(&format!("{p}/sub/es-"), b"", &EPHEMERAL_SEQ))
        .await
        .unwrap();
    op(other.create(&format!("{p}/other"), b"", &EPHEMERAL))
        .await
        .unwrap();

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(op(client.list_ephemerals(&p)).await.unwrap()),
        vec![
            format!("{p}/e1"),
            format!("{p}/sub/e2"),
            format!("{p}/sub/es-0000000002")
        ]
    );
    assert_eq!(
        sorted(
            op(client.list_ephemerals(&format!("{p}/sub")))
                .await
                .unwrap()
        ),
        vec![format!("{p}/sub/e2"), format!("{p}/sub/es-0000000002")]
    );
    assert_eq!(
        op(other.list_ephemerals(&p)).await.unwrap(),
        vec![format!("{p}/other")]
    );
    // The node itself is included when it is ephemeral.
    assert_eq!(
        op(client.list_ephemerals(&format!("{p}/e1")))
            .await
            .unwrap(),
        vec![format!("{p}/e1")]
    );
    // Prefix matching is by string, not by path component.
    assert_eq!(
        op(client.list_ephemerals(&format!("{p}/e"))).await.unwrap(),
        vec![format!("{p}/e1")]
    );
    // No NoNode for a missing prefix.
    assert_eq!(
        op(client.list_ephemerals(&format!("{p}/missing")))
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    // "/" lists all of the session's ephemerals.
    let all = op(client.list_ephemerals("/")).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");

    // getAllChildrenNumber: all descendants, excluding the node itself.
    assert_eq!(op(client.count_descendants_number(&p)).await.unwrap(), 6);
    assert_eq!(
        op(client.count_descendants_number(&format!("{p}/sub")))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        op(client.count_descendants_number(&format!("{p}/e1")))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        op(client.count_descendants_number(&format!("{p}/missing")))
            .await
            .unwrap_err(),
        Error::NoNode
    );
    op(client.delete(&format!("{p}/sub/pers"), None))
        .await
        .unwrap();
    assert_eq!(op(client.count_descendants_number(&p)).await.unwrap(), 5);
}

/// One-shot data/exist/child watches (getData/exists/getChildren/getChildren2 with watch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneshot_watches() {
    let server = server();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let p = uniq("watch");
    let c = format!("{p}/c");

    // exists watch on a missing node fires NodeCreated.
    let (stat, w) = op(client.check_and_watch_stat(&p)).await.unwrap();
    assert_eq!(stat, None);
    op(other.create(&p, b"0", &PERSISTENT)).await.unwrap();
    assert_event(&event(w).await, EventType::NodeCreated, &p);

    // exists watch on an existing node fires NodeDataChanged.
    let (stat, w) = op(client.check_and_watch_stat(&p)).await.unwrap();
    assert_eq!(stat.unwrap().version, 0);
    op(other.set_data(&p, b"1", None)).await.unwrap();
    assert_event(&event(w).await, EventType::NodeDataChanged, &p);

    // data watch fires NodeDataChanged, for a change by the same session too.
    let (data, _, w) = op(client.get_and_watch_data(&p)).await.unwrap();
    assert_eq!(data, b"1");
    op(client.set_data(&p, b"2", None)).await.unwrap();
    assert_event(&event(w).await, EventType::NodeDataChanged, &p);

    // child watch (getChildren) fires NodeChildrenChanged on create; data changes of the
    // parent or of children do not fire it.
    let (children, w) = op(client.list_and_watch_children(&p)).await.unwrap();
    assert!(children.is_empty());
    op(other.set_data(&p, b"3", None)).await.unwrap();
    op(other.create(&c, b"", &PERSISTENT)).await.unwrap();
    assert_event(&event(w).await, EventType::NodeChildrenChanged, &p);

    // child watch (getChildren2) fires NodeChildrenChanged on delete; child data does not.
    let (children, stat, w) = op(client.get_and_watch_children(&p)).await.unwrap();
    assert_eq!(children, vec!["c".to_string()]);
    assert_eq!((stat.num_children, stat.cversion), (1, 1));
    op(other.set_data(&c, b"x", None)).await.unwrap();
    op(other.delete(&c, None)).await.unwrap();
    assert_event(&event(w).await, EventType::NodeChildrenChanged, &p);

    // Data, exists and child watches on the same node all fire NodeDeleted on deletion.
    let (_, _, wd) = op(client.get_and_watch_data(&p)).await.unwrap();
    let (_, we) = op(client.check_and_watch_stat(&p)).await.unwrap();
    let (_, wc) = op(client.list_and_watch_children(&p)).await.unwrap();
    op(other.delete(&p, None)).await.unwrap();
    assert_event(&event(wd).await, EventType::NodeDeleted, &p);
    assert_event(&event(we).await, EventType::NodeDeleted, &p);
    assert_event(&event(wc).await, EventType::NodeDeleted, &p);

    // Watch on a missing node via getData is refused (NoNode), so no watch is left behind.
    assert_eq!(
        op(client.get_and_watch_data(&p)).await.unwrap_err(),
        Error::NoNode
    );
    assert_eq!(
        op(client.list_and_watch_children(&p)).await.unwrap_err(),
        Error::NoNode
    );

    // Ephemeral deletion by session close fires NodeDeleted and the parent's child watch.
    let q = uniq("watch-eph");
    op(client.create(&q, b"", &PERSISTENT)).await.unwrap();
    let owner = connect(&server).await;
    op(owner.create(&format!("{q}/e"), b"", &EPHEMERAL))
        .await
        .unwrap();
    let (_, we) = op(client.check_and_watch_stat(&format!("{q}/e")))
        .await
        .unwrap();
    let (_, wc) = op(client.list_and_watch_children(&q)).await.unwrap();
    drop(owner);
    assert_event(&event(we).await, EventType::NodeDeleted, &format!("{q}/e"));
    assert_event(&event(wc).await, EventType::NodeChildrenChanged, &q);
}

/// addWatch PERSISTENT: data, exists and child events on the node; stays registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_watch() {
    let server = server();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let p = uniq("pwatch");
    let c = format!("{p}/c");

    let mut w = op(client.watch(&p, AddWatchMode::Persistent))
        .await
        .unwrap();
    op(other.create(&p, b"", &PERSISTENT)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeCreated, &p);
    op(other.set_data(&p, b"1", None)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeDataChanged, &p);
    op(other.set_data(&p, b"2", None)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeDataChanged, &p);
    op(other.create(&c, b"", &PERSISTENT)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeChildrenChanged, &p);
    // Child data changes and grandchildren are not reported (not recursive);
    // the next event is the one for the child deletion.
    op(other.set_data(&c, b"x", None)).await.unwrap();
    op(other.create(&format!("{c}/g"), b"", &PERSISTENT))
        .await
        .unwrap();
    op(other.delete(&format!("{c}/g"), None)).await.unwrap();
    op(other.delete(&c, None)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeChildrenChanged, &p);
    op(other.delete(&p, None)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeDeleted, &p);
    // Still registered after deletion.
    op(client.create(&p, b"again", &PERSISTENT)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeCreated, &p);
}

/// addWatch PERSISTENT_RECURSIVE: created/changed/deleted for the node and all descendants,
/// no NodeChildrenChanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_recursive_watch() {
    let server = server();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let p = uniq("rwatch");
    let c = format!("{p}/c");
    let g = format!("{c}/g");
    let sibling = format!("{p}x");

    let mut w = op(client.watch(&p, AddWatchMode::PersistentRecursive))
        .await
        .unwrap();
    op(other.create(&p, b"", &PERSISTENT)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeCreated, &p);
    op(other.create(&c, b"", &PERSISTENT)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeCreated, &c);
    op(other.create(&g, b"", &EPHEMERAL)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeCreated, &g);
    op(other.set_data(&g, b"x", None)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeDataChanged, &g);
    // A sibling sharing the string prefix is not a descendant.
    op(other.create(&sibling, b"", &PERSISTENT)).await.unwrap();
    op(other.set_data(&p, b"p", None)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeDataChanged, &p);
    op(other.delete(&g, None)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeDeleted, &g);
    // Multi: one event per op, in order.
    let mut m = other.new_multi_writer();
    m.add_create(&g, b"", &PERSISTENT).unwrap();
    m.add_set_data(&c, b"c", None).unwrap();
    m.add_delete(&g, None).unwrap();
    op(m.commit()).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeCreated, &g);
    assert_event(&pevent(&mut w).await, EventType::NodeDataChanged, &c);
    assert_event(&pevent(&mut w).await, EventType::NodeDeleted, &g);
    op(other.delete(&c, None)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeDeleted, &c);
    op(other.delete(&p, None)).await.unwrap();
    assert_event(&pevent(&mut w).await, EventType::NodeDeleted, &p);
}

/// removeWatches for data, child, exists and persistent watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)] // OneshotWatcher::remove / PersistentWatcher::remove send removeWatches explicitly.
async fn remove_watches() {
    let server = server();
    let client = connect(&server).await;
    let other = connect(&server).await;
    let p = uniq("rmwatch");
    op(client.create(&p, b"", &PERSISTENT)).await.unwrap();

    // Sole data watch on a path: removeWatches(ANY) succeeds (server answers NoWatcher otherwise).
    let (_, _, w) = op(client.get_and_watch_data(&p)).await.unwrap();
    op(w.remove()).await.unwrap();
    // Exists watch on a missing node.
    let (_, w) = op(client.check_and_watch_stat(&format!("{p}/missing")))
        .await
        .unwrap();
    op(w.remove()).await.unwrap();
    // Child watch.
    let (_, w) = op(client.list_and_watch_children(&p)).await.unwrap();
    op(w.remove()).await.unwrap();

    // Data + child watch on one path: removing the data watch sends removeWatches(DATA);
    // the child watch still fires.
    let (_, _, wd) = op(client.get_and_watch_data(&p)).await.unwrap();
    let (_, wc) = op(client.list_and_watch_children(&p)).await.unwrap();
    op(wd.remove()).await.unwrap();
    op(other.set_data(&p, b"x", None)).await.unwrap();
    op(other.create(&format!("{p}/c"), b"", &PERSISTENT))
        .await
        .unwrap();
    assert_event(&event(wc).await, EventType::NodeChildrenChanged, &p);

    // Removing the child watch while a data watch remains: removeWatches(CHILDREN).
    let (_, _, wd) = op(client.get_and_watch_data(&p)).await.unwrap();
    let (_, wc) = op(client.list_and_watch_children(&p)).await.unwrap();
    op(wc.remove()).await.unwrap();
    op(other.delete(&format!("{p}/c"), None)).await.unwrap();
    op(other.set_data(&p, b"y", None)).await.unwrap();
    assert_event(&event(wd).await, EventType::NodeDataChanged, &p);

    // Persistent and persistent-recursive watches.
    let w = op(client.watch(&p, AddWatchMode::Persistent))
        .await
        .unwrap();
    op(w.remove()).await.unwrap();
    let w = op(client.watch(&p, AddWatchMode::PersistentRecursive))
        .await
        .unwrap();
    op(w.remove()).await.unwrap();

    // After removal, a fresh watch still works.
    let mut w = op(client.watch(&p, AddWatchMode::PersistentRecursive))
        .await
        .unwrap();
    op(other.create(&format!("{p}/d"), b"", &PERSISTENT))
        .await
        .unwrap();
    assert_event(
        &pevent(&mut w).await,
        EventType::NodeCreated,
        &format!("{p}/d"),
    );
}

/// Closing a session deletes its ephemerals for everybody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_close_removes_ephemerals() {
    let server = server();
    let owner = connect(&server).await;
    let observer = connect(&server).await;
    assert_ne!(owner.session_id(), observer.session_id());
    let p = uniq("session");
    op(observer.create(&p, b"", &PERSISTENT)).await.unwrap();
    op(owner.create(&format!("{p}/e"), b"", &EPHEMERAL))
        .await
        .unwrap();
    op(owner.create(&format!("{p}/s-"), b"", &EPHEMERAL_SEQ))
        .await
        .unwrap();
    op(owner.create(&format!("{p}/keep"), b"", &PERSISTENT))
        .await
        .unwrap();

    let (stat, w) = op(observer.check_and_watch_stat(&format!("{p}/e")))
        .await
        .unwrap();
    assert_eq!(stat.unwrap().ephemeral_owner, owner.session_id().0);
    assert_eq!(
        stat_of(&observer, &format!("{p}/s-0000000001"))
            .await
            .ephemeral_owner,
        owner.session_id().0
    );
    let before = stat_of(&observer, &p).await;
    assert_eq!((before.num_children, before.cversion), (3, 3));

    let mut state = owner.state_watcher();
    assert_eq!(owner.state(), SessionState::SyncConnected);
    drop(owner); // last handle: closeSession
    assert_event(&event(w).await, EventType::NodeDeleted, &format!("{p}/e"));
    assert_eq!(
        timeout(EVENT_TIMEOUT, state.changed()).await.unwrap(),
        SessionState::Closed
    );

    assert_eq!(
        children_sorted(&observer, &p).await,
        vec!["keep".to_string()]
    );
    let after = stat_of(&observer, &p).await;
    assert_eq!((after.num_children, after.cversion), (1, 5));
    assert!(after.pzxid > before.pzxid);
    assert_eq!(
        op(observer.list_ephemerals(&p)).await.unwrap(),
        Vec::<String>::new()
    );
}

/// reconfig is disabled on a standalone server; getConfig reads /zookeeper/config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_reconfig_disabled() {
    let server = server();
    let client = connect(&server).await;
    // Standalone without dynamic config: empty data and an all-zero stat, aversion -1.
    let (data, stat) = op(client.get_config()).await.unwrap();
    assert!(data.is_empty(), "{data:?}");
    assert_eq!(
        (stat.czxid, stat.mzxid, stat.pzxid, stat.ctime, stat.mtime),
        (0, 0, 0, 0, 0),
        "{stat:?}"
    );
    assert_eq!(
        (stat.version, stat.cversion, stat.aversion),
        (0, 0, -1),
        "{stat:?}"
    );
    assert_eq!(
        (stat.ephemeral_owner, stat.data_length, stat.num_children),
        (0, 0, 0),
        "{stat:?}"
    );
    let mut zk_children = op(client.list_children("/zookeeper")).await.unwrap();
    zk_children.sort();
    assert_eq!(zk_children, vec!["config".to_string(), "quota".into()]);
    let update = zookeeper_client::EnsembleUpdate::Incremental {
        joinings: vec!["server.2=127.0.0.1:2888:3888;2181"].into_iter(),
        leavings: Vec::new().into_iter(),
    };
    assert_eq!(
        op(client.update_ensemble(update, None)).await.unwrap_err(),
        Error::ReconfigDisabled
    );
}
