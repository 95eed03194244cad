//! A failing disk (the log's write or sync returns ENOSPC or EIO): the
//! affected writes are answered with an error and never acknowledged, every
//! later write fails too, reads keep working, and after a restart on a healthy
//! disk every acknowledged write is there and no failed one is. The failure is
//! injected with the hidden `--test-fail-log-after-bytes` flag.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zookeeper_client::{Acls, Client, CreateMode, Error};

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(data_dir: &PathBuf, extra: &[&str]) -> Server {
        let port = warden::runtime::testkit::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["server", "--client-port", &port.to_string(), "--client-port-address", "127.0.0.1"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--pre-alloc-size", "1024", "--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn warden");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "warden did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(port: u16) -> Client {
    tokio::time::timeout(Duration::from_secs(10), Client::connector().connect(&format!("127.0.0.1:{port}")))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_log_writes_are_never_acknowledged() {
    let data_dir = std::env::temp_dir().join(format!("warden-disk-failure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let create = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let mut acknowledged = Vec::new();
    let failed_path;
    {
        // Room for a few dozen one-txn batches (each is one 4 KiB block).
        let server = Server::start(&data_dir, &["--test-fail-log-after-bytes", "163840"]);
        let client = connect(server.port).await;
        let mut index = 0;
        loop {
            let path = format!("/n{index}");
            match client.create(&path, b"v", &create).await {
                Ok(_) => acknowledged.push(path),
                Err(error) => {
                    // ZooKeeper clients see a system error, never success.
                    assert_eq!(error, Error::UnexpectedErrorCode(-1), "write {index}");
                    failed_path = path;
                    break;
                }
            }
            index += 1;
            assert!(index < 1000, "the injected failure never happened");
        }
        assert!(acknowledged.len() > 10, "failed too early: {}", acknowledged.len());
        // Every later write fails as well; reads still answer from committed state.
        for attempt in 0..3 {
            let error = client.set_data("/n0", format!("x{attempt}").as_bytes(), None).await.unwrap_err();
            assert_eq!(error, Error::UnexpectedErrorCode(-1));
        }
        assert_eq!(client.get_data("/n0").await.unwrap().0, b"v");
        assert_eq!(client.get_data(&failed_path).await.unwrap_err(), Error::NoNode);
    }
    // A healthy restart: everything acknowledged is there, the failed write is not.
    let server = Server::start(&data_dir, &[]);
    let client = connect(server.port).await;
    for path in &acknowledged {
        assert_eq!(client.get_data(path).await.unwrap().0, b"v", "{path} lost");
    }
    assert_eq!(client.get_data(&failed_path).await.unwrap_err(), Error::NoNode);
    client.create("/after-restart", b"", &create).await.unwrap();
    drop(client);
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}
