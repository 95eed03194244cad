//! Client-port sockets. glommio's own bind sets only SO_REUSEPORT; a restarted
//! server also needs SO_REUSEADDR, or it cannot bind while the previous
//! process's connections sit in TIME_WAIT (Apache ZooKeeper rebinds at once).

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, AsRawFd, IntoRawFd};
use std::time::{Duration, Instant};

fn check(result: libc::c_int) -> std::io::Result<libc::c_int> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A listening socket on `address`. With `share_port` (one per shard) the
/// kernel spreads connections across the shards' sockets; without it the bind
/// fails if anything listens there already.
pub fn bind(address: SocketAddr, share_port: bool) -> std::io::Result<OwnedFd> {
    let socket = bind_only(address, share_port)?;
    // SAFETY: a bound stream socket.
    check(unsafe { libc::listen(socket.as_raw_fd(), 1024) })?;
    Ok(socket)
}

/// How long binding a port waits for it while it is in use. A stopped
/// server's port can stay taken for a moment after its process is reaped
/// (its pending io_uring accepts are torn down asynchronously): binding
/// right after a SIGTERM'd server exited failed for about 10 ms in one of
/// six tries, and an ensemble test that restarts every node failed on it.
pub const BIND_IN_USE_PATIENCE: Duration = Duration::from_secs(5);
const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// A socket bound to `address` that does not listen: how start-up detects a
/// port in use and resolves port 0 before the shards bind it. A listening
/// probe would accept connections into its queue and reset them when it
/// closes; a client that connected in that window saw its connection reset.
/// A port in use is tried again for up to `BIND_IN_USE_PATIENCE`.
pub fn bind_only(address: SocketAddr, share_port: bool) -> std::io::Result<OwnedFd> {
    bind_patiently(address, share_port, BIND_IN_USE_PATIENCE)
}

fn bind_patiently(address: SocketAddr, share_port: bool, patience: Duration) -> std::io::Result<OwnedFd> {
    let deadline = Instant::now() + patience;
    let mut warned = false;
    loop {
        match bind_once(address, share_port) {
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !warned {
                    tracing::warn!(%address, "address in use; trying again for up to {} s", patience.as_secs_f64());
                    warned = true;
                }
                std::thread::sleep(BIND_RETRY_INTERVAL);
            }
            result => return result,
        }
    }
}

fn bind_once(address: SocketAddr, share_port: bool) -> std::io::Result<OwnedFd> {
    let family = if address.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket calls; every return is checked and the fd is owned below.
    let socket = unsafe { OwnedFd::from_raw_fd(check(libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0))?) };
    let enable: libc::c_int = 1;
    let set = |option| {
        // SAFETY: `enable` outlives the call and its size is passed.
        check(unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &enable as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
    };
    set(libc::SO_REUSEADDR)?;
    if share_port {
        set(libc::SO_REUSEPORT)?;
    }
    let (storage, length) = socket_address(address);
    // SAFETY: `storage` holds a valid sockaddr of `length` bytes.
    check(unsafe { libc::bind(socket.as_raw_fd(), &storage as *const libc::sockaddr_storage as *const libc::sockaddr, length) })?;
    Ok(socket)
}

/// The port a socket is bound to (resolves port 0).
pub fn local_port(socket: &OwnedFd) -> std::io::Result<u16> {
    // SAFETY: getsockname writes at most `length` bytes into `storage`.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    check(unsafe { libc::getsockname(socket.as_raw_fd(), &mut storage as *mut _ as *mut libc::sockaddr, &mut length) })?;
    let port = if storage.ss_family as libc::c_int == libc::AF_INET {
        // SAFETY: the family says this is a sockaddr_in.
        let v4 = unsafe { &*(&storage as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
        u16::from_be(v4.sin_port)
    } else {
        // SAFETY: otherwise it is a sockaddr_in6.
        let v6 = unsafe { &*(&storage as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
        u16::from_be(v6.sin6_port)
    };
    Ok(port)
}

/// A shard's listener, shared-port, as a glommio listener.
pub fn glommio_listener(address: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    let socket = bind(address, true)?;
    // SAFETY: we hand over ownership of a listening TCP socket.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

fn socket_address(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill the variant we use.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match address {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let out = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = v4.port().to_be();
            out.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) };
            (storage, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let out = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = v6.port().to_be();
            out.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            out.sin6_scope_id = v6.scope_id();
            (storage, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port held by a socket that goes away soon is bound once it is
    /// free; one held for longer than the patience is an error.
    #[test]
    fn a_port_in_use_is_tried_again_for_a_while() {
        let port = crate::runtime::testkit::free_port();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let held = std::net::TcpListener::bind(address).unwrap();
        let error = bind_patiently(address, false, Duration::from_millis(200)).map(|_| ()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let started = Instant::now();
        bind_patiently(address, false, Duration::from_secs(5)).expect("bound once the port was free");
        assert!(started.elapsed() >= Duration::from_millis(250), "bound while the port was still held");
        releaser.join().unwrap();
    }
}
