//! The vendored glommio (vendor/README.md) puts an executor to sleep with a
//! SeqCst fence where upstream issues a `membarrier()` syscall, and fences
//! the other side, `SleepNotifier::notify`, to match. A mistake there loses
//! wake-ups: a message pushed into a shared channel while its receiver's
//! executor decides to sleep leaves that executor asleep with work queued.
//! These tests make executors fall asleep between messages tens of thousands
//! of times, with nothing else to wake them (no timers), and fail if any
//! exchange stalls; and they check that the vendored source still carries
//! the change, so an update of glommio cannot quietly bring the syscall back.
//! The second change, `COOP_TASKRUN` on the main ring, is on the same path:
//! an executor asleep is woken through a completion in that ring (its
//! eventfd's), which these exchanges need tens of thousands of times.

use std::sync::mpsc;
use std::time::Duration;

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

/// Longer than any of these runs takes on a loaded 2-core machine (well
/// under a second each) by far; an executor asleep with a message queued
/// never finishes.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Runs `body` on a fresh executor thread; its result comes back on a
/// channel so that a hung executor fails the test instead of hanging it.
fn spawn_executor<T: Send + 'static>(
    name: &str,
    results: mpsc::Sender<(String, T)>,
    body: impl AsyncFnOnce() -> T + Send + 'static,
) {
    let name = name.to_string();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(&name)
        .spawn(move || async move {
            let result = body().await;
            let _ = results.send((name, result));
        })
        .expect("spawn an executor");
}

fn collect<T>(results: mpsc::Receiver<(String, T)>, count: usize, what: &str) -> Vec<(String, T)> {
    (0..count)
        .map(|_| {
            results
                .recv_timeout(STALL_LIMIT)
                .unwrap_or_else(|_| panic!("{what}: an executor stalled (a lost wake-up)"))
        })
        .collect()
}

#[test]
fn executors_ping_ponging_over_shared_channels_never_miss_a_wake_up() {
    const ROUND_TRIPS: u64 = 20_000;
    let (ping_sender, ping_receiver) = shared_channel::new_bounded::<u64>(1);
    let (pong_sender, pong_receiver) = shared_channel::new_bounded::<u64>(1);
    let (results, finished) = mpsc::channel();
    spawn_executor("pinger", results.clone(), async move || {
        let ping = ping_sender.connect().await;
        let pong = pong_receiver.connect().await;
        let mut sum = 0;
        for round in 0..ROUND_TRIPS {
            ping.send(round).await.expect("ponger gone");
            // Nothing is ready until the ponger answers: this executor sleeps.
            sum += pong.recv().await.expect("ponger gone");
        }
        sum
    });
    spawn_executor("ponger", results, async move || {
        let ping = ping_receiver.connect().await;
        let pong = pong_sender.connect().await;
        let mut answered = 0;
        while let Some(round) = ping.recv().await {
            pong.send(round + 1).await.expect("pinger gone");
            answered += 1;
            if answered == ROUND_TRIPS {
                break;
            }
        }
        answered
    });
    let mut results = collect(finished, 2, "ping-pong");
    results.sort();
    assert_eq!(results[0], ("pinger".to_string(), (1..=ROUND_TRIPS).sum::<u64>()));
    assert_eq!(results[1], ("ponger".to_string(), ROUND_TRIPS));
}

#[test]
fn a_sender_waiting_for_room_is_woken_when_the_receiver_takes_an_item() {
    const ITEMS: u64 = 50_000;
    // One slot: the sender waits for room after nearly every item, and its
    // executor sleeps until the receiver's executor takes that item.
    let (sender, receiver) = shared_channel::new_bounded::<u64>(1);
    let (results, finished) = mpsc::channel();
    spawn_executor("sender", results.clone(), async move || {
        let sender = sender.connect().await;
        for item in 0..ITEMS {
            sender.send(item).await.expect("receiver gone");
        }
        ITEMS
    });
    spawn_executor("receiver", results, async move || {
        let receiver = receiver.connect().await;
        let mut expected = 0;
        while let Some(item) = receiver.recv().await {
            assert_eq!(item, expected, "items arrive in order");
            expected += 1;
        }
        expected
    });
    for (name, count) in collect(finished, 2, "one-slot stream") {
        assert_eq!(count, ITEMS, "{name}");
    }
}

#[test]
fn the_vendored_glommio_carries_its_changes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/glommio/src/sys");
    let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap_or_else(|error| panic!("{file}: {error}"));
    let uring = read("uring.rs");
    let code_lines = |source: &str| -> Vec<String> {
        source.lines().map(|line| line.split("//").next().unwrap_or("").to_string()).collect()
    };
    assert!(
        !code_lines(&uring).iter().any(|line| line.contains("membarrier")),
        "vendor/glommio/src/sys/uring.rs calls membarrier again; re-apply vendor/README.md's patch"
    );
    let wait = uring.find("pub(crate) fn wait<").expect("Reactor::wait");
    let prepare = wait + uring[wait..].find("self.notifier.prepare_to_sleep();").expect("prepare_to_sleep in wait");
    let sweep = prepare + uring[prepare..].find("process_remote_channels()").expect("the sweep after prepare_to_sleep");
    assert!(
        code_lines(&uring[prepare..sweep]).iter().any(|line| line.contains("fence(std::sync::atomic::Ordering::SeqCst)")),
        "a SeqCst fence must separate prepare_to_sleep from the sweep of remote channels"
    );
    let notifier = read("mod.rs");
    let notify = notifier.find("pub(crate) fn notify(&self, force: bool) {").expect("SleepNotifier::notify");
    let swap = notify + notifier[notify..].find(".should_notify").expect("notify reads should_notify");
    assert!(
        code_lines(&notifier[notify..swap]).iter().any(|line| line.contains("fence(Ordering::SeqCst)")),
        "SleepNotifier::notify must fence before it reads should_notify"
    );
    assert!(!root.join("membarrier.rs").exists(), "sys/membarrier.rs is back");
    // The second change: the main ring (sockets, files) posts completions
    // cooperatively, without interrupting a running executor.
    let main_ring = uring.find("\"main\",").expect("the main ring's construction");
    let latency_ring = main_ring + uring[main_ring..].find("\"latency\",").expect("the latency ring's construction");
    assert!(
        code_lines(&uring[main_ring..latency_ring]).iter().any(|line| line.contains("SetupFlags::COOP_TASKRUN")),
        "the main ring must be set up with COOP_TASKRUN (vendor/README.md)"
    );
}
