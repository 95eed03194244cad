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

/// `count` distinct TCP ports on 127.0.0.1 that are free now, and that no
/// earlier call in this process returned.
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
            held.push(listener);
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
}
