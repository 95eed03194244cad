//! Helpers for the test suites (unit and integration tests); not used by the
//! server itself.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::rng::Rng;

/// Lowest port of the kernel's ephemeral range (the source ports of outgoing
/// connections), 32768 when it cannot be read.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Lowest port `free_ports` picks from.
const PICK_LOW: u16 = 10_000;
/// Random picks tried per requested port before falling back to port 0.
const PICK_TRIES_PER_PORT: usize = 50;

/// Ports this process has handed out: never handed out again, so a test
/// that stops a server and restarts it on the same port cannot find that
/// port taken by a concurrent test (tests of one binary run in parallel).
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Locks on `<tmp>/warden-test-ports/<port>.lock` for every port handed out,
/// held until the process exits (the kernel drops them even if it crashes):
/// test processes running at the same time (two suites, or a suite and a
/// developer's run) never hand out each other's ports either. The files
/// stay (empty, one per port ever picked, so at most one per port below the
/// ephemeral range).
static PORT_LOCKS: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// Reserves `port` against other processes; false if one holds it.
fn lock_port(port: u16) -> bool {
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join("warden-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let Ok(file) = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(format!("{port}.lock"))) else {
        // No lock files here (read-only tmp): reserve within this process only.
        return true;
    };
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    PORT_LOCKS.lock().unwrap_or_else(|poison| poison.into_inner()).push(file);
    true
}

/// `count` distinct TCP ports on 127.0.0.1 that are free now, that no earlier
/// call in this process returned, and that no other live process using this
/// function holds.
///
/// They are picked below the ephemeral range when there is room: a port
/// chosen inside it can be handed out, before the server under test binds it,
/// as the source port of some outgoing connection (another server's peer
/// link, a client, a probe), and the server then fails with EADDRINUSE.
pub fn free_ports(count: usize) -> Vec<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poison| poison.into_inner());
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let mut rng = Rng::new(seed ^ CALLS.fetch_add(1, Ordering::Relaxed));
    let high = ephemeral_low();
    let mut held: Vec<TcpListener> = Vec::with_capacity(count);
    let mut tries = 0;
    while high > PICK_LOW + 1000 && held.len() < count && tries < PICK_TRIES_PER_PORT * count {
        tries += 1;
        let port = PICK_LOW + rng.below(u64::from(high - PICK_LOW)) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            if lock_port(port) {
                held.push(listener);
            }
        }
    }
    while held.len() < count {
        held.push(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"));
    }
    let ports: Vec<u16> = held.iter().map(|listener| listener.local_addr().expect("local address").port()).collect();
    handed_out.extend(&ports);
    ports
}

/// One free port; see `free_ports`.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports = free_ports(12);
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 12, "{ports:?}");
        for &port in &ports {
            assert!(port < ephemeral_low(), "{port}");
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
        // Freed again, but never handed out twice in one process.
        let again = free_ports(12);
        assert!(again.iter().all(|port| !ports.contains(port)), "{ports:?} then {again:?}");
    }

    #[test]
    fn a_handed_out_port_is_locked_against_other_processes() {
        let port = free_port();
        // Another open file description of the same lock file, as another
        // process would have, cannot take it.
        assert!(!lock_port(port), "port {port} is reserved by this process");
    }
}
