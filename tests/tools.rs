//! The storage tools and start-up checks on data directories a real server
//! wrote: `verify`, `log-dump`, `snapshot-dump`, `purge`; a torn tail is cut
//! at start-up; corruption in the middle of the log refuses to start, naming
//! the file and the offset (never silently dropping data, ZOOKEEPER-2325).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use zookeeper_client::{Acls, Client, CreateMode};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const BLOCK: usize = 4096;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-tools-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start(data_dir: &Path, extra: &[&str]) -> (Child, u16) {
    let port = warden::runtime::testkit::free_port();
    let mut child = Command::new(WARDEN)
        .args(["server", "--client-port", &port.to_string(), "--client-port-address", "127.0.0.1", "--pre-alloc-size", "1024"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "warden exited during start-up");
        assert!(Instant::now() < deadline, "warden did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "warden did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `count` nodes, one txn per batch (one request in flight).
fn populate(data_dir: &Path, count: usize, extra: &[&str]) {
    let (child, port) = start(data_dir, extra);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = Client::connector().connect(&format!("127.0.0.1:{port}")).await.unwrap();
        let mode = CreateMode::Persistent.with_acls(Acls::anyone_all());
        for index in 0..count {
            client.create(&format!("/node{index}"), b"payload", &mode).await.unwrap();
        }
    });
    stop(child);
}

fn warden(args: &[&str], data_dir: &Path) -> Output {
    Command::new(WARDEN).args(args).arg("--data-dir").arg(data_dir).output().unwrap()
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("version-2"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with(prefix) && path.extension().is_none_or(|ext| ext != "tmp"))
        .collect();
    found.sort();
    found
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn verify_and_dump_a_real_data_directory() {
    let dir = temp_dir("dump");
    populate(&dir, 20, &[]);
    let verify = warden(&["verify"], &dir);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(text(&verify.stdout).contains("ok: snapshot zxid 0x0, 21 txns replayed"), "{}", text(&verify.stdout));
    let segment = files(&dir, "log.")[0].clone();
    let dump = Command::new(WARDEN).arg("log-dump").arg(&segment).output().unwrap();
    let dump_text = text(&dump.stdout);
    assert!(dump_text.contains("createSession") && dump_text.contains("create path=/node19"), "{dump_text}");
    let snapshot = files(&dir, "snapshot.")[0].clone();
    let dump = Command::new(WARDEN).arg("snapshot-dump").arg(&snapshot).output().unwrap();
    assert!(text(&dump.stdout).contains("/zookeeper/config"), "{}", text(&dump.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corruption_in_the_middle_of_the_log_refuses_to_start() {
    let dir = temp_dir("corrupt");
    populate(&dir, 10, &[]);
    let segment = files(&dir, "log.")[0].clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    // The first batch starts after the header block; damage its payload.
    bytes[BLOCK + 40] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();
    let verify = warden(&["verify"], &dir);
    assert!(!verify.status.success());
    let message = text(&verify.stderr);
    assert!(message.contains(&segment.display().to_string()) && message.contains(&format!("offset {BLOCK}")), "{message}");
    let server = Command::new(WARDEN)
        .args(["server", "--client-port", "0", "--client-port-address", "127.0.0.1", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!server.status.success(), "a corrupt log must stop the server");
    let message = text(&server.stderr);
    assert!(message.contains("refusing to start") && message.contains(&format!("offset {BLOCK}")), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn torn_tail_is_cut_and_everything_before_it_recovers() {
    let dir = temp_dir("torn");
    populate(&dir, 10, &[]);
    let segment = files(&dir, "log.")[0].clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    // Find the last written block and tear it: zero its second half.
    let last = (0..bytes.len() / BLOCK).rev().find(|block| bytes[block * BLOCK..(block + 1) * BLOCK].iter().any(|b| *b != 0)).unwrap();
    for byte in &mut bytes[last * BLOCK + 40..(last + 1) * BLOCK] {
        *byte = 0;
    }
    std::fs::write(&segment, &bytes).unwrap();
    let verify = warden(&["verify"], &dir);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(text(&verify.stdout).contains("torn tail"), "{}", text(&verify.stdout));
    // The server starts, cuts the tail, and holds everything before it.
    let (child, port) = start(&dir, &[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = Client::connector().connect(&format!("127.0.0.1:{port}")).await.unwrap();
        let children = client.list_children("/").await.unwrap();
        // The last batch was the closeSession or the last create; all earlier creates survive.
        assert!(children.len() >= 10, "{children:?}");
        assert_eq!(client.get_data("/node8").await.unwrap().0, b"payload");
    });
    stop(child);
    assert!(std::fs::metadata(&segment).unwrap().len() < bytes.len() as u64, "the torn tail was not cut");
    let verify = warden(&["verify"], &dir);
    assert!(!text(&verify.stdout).contains("torn tail"), "{}", text(&verify.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn snapshots_roll_the_log_and_purge_keeps_what_recovery_needs() {
    let dir = temp_dir("purge");
    populate(&dir, 60, &["--snap-count", "10"]);
    let snapshots = files(&dir, "snapshot.");
    assert!(snapshots.len() >= 5, "{snapshots:?}");
    let before = warden(&["verify"], &dir);
    assert!(before.status.success(), "{}", text(&before.stderr));
    let purge = warden(&["purge", "--count", "3"], &dir);
    assert!(purge.status.success(), "{}", text(&purge.stderr));
    assert_eq!(files(&dir, "snapshot.").len(), 3);
    let after = warden(&["verify"], &dir);
    assert!(after.status.success(), "{}", text(&after.stderr));
    // Same final state: the last zxid line matches.
    let last_zxid = |output: &Output| text(&output.stdout).split("last zxid ").nth(1).unwrap().split(',').next().unwrap().to_owned();
    assert_eq!(last_zxid(&before), last_zxid(&after));
    let _ = std::fs::remove_dir_all(&dir);
}
