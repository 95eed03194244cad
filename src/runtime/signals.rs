//! SIGINT and SIGTERM: blocked in every thread and taken by one waiting
//! thread, which raises the shutdown flag the executors poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub fn install(shutdown: Arc<AtomicBool>) -> std::io::Result<()> {
    // SAFETY: plain libc signal-set calls on a local, initialised sigset_t.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        // Threads started after this inherit the mask, so only sigwait sees them.
        let result = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if result != 0 {
            return Err(std::io::Error::from_raw_os_error(result));
        }
    }
    std::thread::Builder::new().name("warden-signals".into()).spawn(move || loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: `set` outlives the call; sigwait only writes `signal`.
        let result = unsafe { libc::sigwait(&set, &mut signal) };
        if result == 0 && (signal == libc::SIGINT || signal == libc::SIGTERM) {
            tracing::info!(signal, "shutdown requested");
            shutdown.store(true, Ordering::Relaxed);
            return;
        }
    })?;
    Ok(())
}
