//! Shards stay inside the CPUs the server was given. Started under a
//! one-CPU affinity mask (as `taskset -c N` or a container's cpuset does),
//! every executor thread must run on that CPU alone: pinning shard i to CPU
//! i would escape the mask, and stack the servers of a one-machine ensemble
//! on the same CPUs.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

/// The CPUs this test process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is empty; the call writes within its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity: {}", std::io::Error::last_os_error());
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

struct Server {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a standalone server whose affinity mask is `cpu` alone.
fn start_on(cpu: usize, extra: &[&str], name: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("warden-placement-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = warden::runtime::testkit::free_port();
    let mut command = Command::new(WARDEN);
    command
        .args(["server", "--client-port", &port.to_string(), "--client-port-address", "127.0.0.1", "--pre-alloc-size", "1024"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only sched_setaffinity, async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn warden");
    let mut server = Server { child, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(server.child.try_wait().unwrap().is_none(), "warden exited during start-up");
        assert!(Instant::now() < deadline, "warden did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// Each thread of a shard's executor (glommio names them
/// `warden-core-N-<executor id>`: the executor and its helper) and its
/// allowed CPUs, as /proc/PID/task/TID/status lists them ("1", "0-3").
fn core_threads(pid: u32) -> Vec<(String, String)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read tasks") {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default().trim().to_string();
        if !name.starts_with("warden-core-") {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        let cpus = status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:")).unwrap_or("?").trim().to_string();
        threads.push((name, cpus));
    }
    threads.sort();
    threads
}

/// The last CPU this process may use: CPU 0 would not tell a pinned shard 0
/// from a shard kept in its mask.
fn a_cpu_other_than_the_first() -> usize {
    let allowed = allowed_cpus();
    assert!(allowed.len() >= 2, "this test needs two allowed CPUs to tell them apart; it has {allowed:?}");
    *allowed.last().unwrap()
}

#[test]
fn a_shard_runs_on_the_cpu_of_the_mask_not_cpu_zero() {
    let cpu = a_cpu_other_than_the_first();
    let server = start_on(cpu, &[], "default");
    let threads = core_threads(server.child.id());
    // --cores 0 (the default) means every allowed CPU: one shard here.
    assert!(!threads.is_empty() && threads.iter().all(|(name, _)| name.starts_with("warden-core-0-")), "{threads:?}");
    assert!(threads.iter().all(|(_, cpus)| *cpus == cpu.to_string()), "shard threads outside CPU {cpu}: {threads:?}");
}

#[test]
fn more_shards_than_allowed_cpus_stay_inside_the_mask() {
    let cpu = a_cpu_other_than_the_first();
    let server = start_on(cpu, &["--cores", "2"], "two");
    let threads = core_threads(server.child.id());
    for shard in 0..2 {
        assert!(threads.iter().any(|(name, _)| name.starts_with(&format!("warden-core-{shard}-"))), "no shard {shard}: {threads:?}");
    }
    assert!(threads.iter().all(|(_, cpus)| *cpus == cpu.to_string()), "shard threads outside CPU {cpu}: {threads:?}");
}
