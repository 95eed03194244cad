"""kazoo recipes driven by several clients/threads against the target server.

Each scenario would fail (wrong result or bounded timeout) if the server got
sequential numbering, ephemeral cleanup, watches or versioned writes wrong.
On an ensemble target the clients of a scenario sit on different servers; a
client that reads other clients' writes outside a recipe's own watch logic
calls catch_up (sync) first.
"""

import threading
import time

import pytest
from kazoo.exceptions import LockTimeout

from conftest import catch_up, wait_for

T = 15  # bound for every wait in this module


def _join_all(threads):
    for t in threads:
        t.join(T)
        assert not t.is_alive(), "worker thread did not finish within %ss" % T


def test_lock_mutual_exclusion(client_factory, ns):
    """4 clients x 5 rounds on one Lock: never two holders at once, all 20
    acquisitions happen, and the counter incremented under the lock is exact."""
    clients = [client_factory() for _ in range(4)]
    state = {"holders": 0, "max": 0, "count": 0}
    guard = threading.Lock()
    errors = []

    def worker(c):
        try:
            lock = c.Lock(ns + "/lock", "w")
            for _ in range(5):
                assert lock.acquire(timeout=T)
                with guard:
                    state["holders"] += 1
                    state["max"] = max(state["max"], state["holders"])
                v = state["count"]
                time.sleep(0.002)
                state["count"] = v + 1
                with guard:
                    state["holders"] -= 1
                lock.release()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(c,)) for c in clients]
    [t.start() for t in ts]
    _join_all(ts)
    assert not errors
    assert state["max"] == 1 and state["count"] == 20


def test_lock_released_when_holder_session_closes(client_factory, ns):
    """A waiter gets the lock as soon as the holder's session is closed
    (its ephemeral-sequential lock node is deleted)."""
    a, b = client_factory(), client_factory()
    la = a.Lock(ns + "/lock", "a")
    assert la.acquire(timeout=T)
    lb = b.Lock(ns + "/lock", "b")
    with pytest.raises(LockTimeout):
        lb.acquire(timeout=0.5)
    assert sorted(lb.contenders()) == ["a"]
    a.stop()
    assert lb.acquire(timeout=T)
    lb.release()


def test_election(client_factory, ns):
    """Election: exactly one leader at a time; when the leader's session
    closes, another contender becomes leader."""
    clients = [client_factory() for _ in range(3)]
    leaders = []
    stop = {i: threading.Event() for i in range(3)}

    def run(i):
        def lead():
            leaders.append(i)
            stop[i].wait(T)
        clients[i].Election(ns + "/elect", "c%d" % i).run(lead)

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(3)]
    for t in ts:
        t.start()
        time.sleep(0.1)
    wait_for(lambda: len(leaders) == 1, timeout=T, msg="first leader")
    first = leaders[0]
    assert first == 0
    time.sleep(0.3)
    assert leaders == [first]
    assert clients[1].Election(ns + "/elect").contenders()[0] == "c0"
    stop[first].set()
    wait_for(lambda: len(leaders) == 2, timeout=T, msg="second leader")
    assert leaders[1] == 1
    for e in stop.values():
        e.set()
    # Every contender finishes (the last ones lead in turn and return at
    # once) before the fixture closes their clients.
    _join_all(ts)


def test_counter_concurrent(client_factory, ns):
    """Counter (versioned set retry loop): 3 clients x 20 increments of 1
    from threads gives exactly 60."""
    clients = [client_factory() for _ in range(3)]

    def worker(c):
        cnt = c.Counter(ns + "/cnt")
        for _ in range(20):
            cnt += 1

    ts = [threading.Thread(target=worker, args=(c,)) for c in clients]
    [t.start() for t in ts]
    _join_all(ts)
    catch_up(clients[0])
    assert clients[0].Counter(ns + "/cnt").value == 60
    f = clients[0].Counter(ns + "/fc", default=0.0)
    f += 1.5
    f -= 0.25
    assert f.value == 1.25


def test_queue_fifo_and_priority(client_factory, ns):
    """Queue: items put by one client come out in FIFO order (within
    priority) for another; get() on empty returns None."""
    a, b = client_factory(), client_factory()
    qa, qb = a.Queue(ns + "/q"), b.Queue(ns + "/q")
    for i in range(5):
        qa.put(b"item%d" % i)
    qa.put(b"urgent", priority=10)
    catch_up(b)
    assert len(qb) == 6
    assert qb.get() == b"urgent"
    assert [qb.get() for _ in range(5)] == [b"item%d" % i for i in range(5)]
    assert qb.get() is None


def test_locking_queue_consume_and_release(client_factory, ns):
    """LockingQueue: two consumers take distinct items; an item not consumed
    by a consumer whose session closes becomes available again."""
    p, c1, c2 = client_factory(), client_factory(), client_factory()
    pq = p.LockingQueue(ns + "/lq")
    pq.put_all([b"a", b"b", b"c"])
    q1, q2 = c1.LockingQueue(ns + "/lq"), c2.LockingQueue(ns + "/lq")
    x = q1.get(timeout=T)
    y = q2.get(timeout=T)
    assert {x, y} < {b"a", b"b", b"c"} and x != y
    assert q1.consume() is True
    c2.stop()  # y was locked but not consumed
    got = set()
    for _ in range(2):
        v = q1.get(timeout=T)
        assert v is not None
        got.add(v)
        assert q1.consume()
    assert got == {b"a", b"b", b"c"} - {x}
    catch_up(p)
    assert len(pq) == 0


def test_barrier(client_factory, ns):
    """Barrier: waiters block while the barrier node exists and are all
    released by its removal from another client."""
    owner = client_factory()
    b = owner.Barrier(ns + "/bar")
    b.create()
    waiters = [client_factory() for _ in range(3)]
    catch_up(*waiters)
    results = []

    def wait(c):
        results.append(c.Barrier(ns + "/bar").wait(T))

    ts = [threading.Thread(target=wait, args=(c,)) for c in waiters]
    [t.start() for t in ts]
    time.sleep(0.3)
    assert results == []
    assert waiters[0].Barrier(ns + "/bar").wait(0.1) is False
    b.remove()
    _join_all(ts)
    assert results == [True, True, True]


def test_double_barrier(client_factory, ns):
    """DoubleBarrier with 3 members: nobody enters before all 3 arrived,
    nobody leaves before all 3 left."""
    clients = [client_factory() for _ in range(3)]
    entered, left = [], []
    errors = []

    def member(i):
        try:
            db = clients[i].DoubleBarrier(ns + "/db", 3)
            time.sleep(0.2 * i)
            db.enter()
            entered.append((i, time.monotonic()))
            time.sleep(0.1 * (2 - i))
            db.leave()
            left.append((i, time.monotonic()))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=member, args=(i,)) for i in range(3)]
    starts = time.monotonic()
    [t.start() for t in ts]
    _join_all(ts)
    assert not errors
    assert len(entered) == 3 and len(left) == 3
    # the last member arrives at ~0.4s; nobody may enter earlier
    assert min(t for _, t in entered) - starts >= 0.35
    assert min(t for _, t in left) >= max(t for _, t in entered)


def test_party(client_factory, ns):
    """Party/ShallowParty membership reflects joins, leaves and the session
    close of a member (ephemeral cleanup)."""
    a, b, c = client_factory(), client_factory(), client_factory()
    pa = a.Party(ns + "/party", "alice")
    pb = b.ShallowParty(ns + "/sparty", "bob")
    pc = c.Party(ns + "/party", "carol")
    pa.join()
    pc.join()
    catch_up(a)
    assert sorted(pa) == ["alice", "carol"] and len(pa) == 2
    pb.join()
    assert list(pb) == ["bob"]
    pb.leave()
    assert len(pb) == 0
    c.stop()
    wait_for(lambda: sorted(pa) == ["alice"], timeout=T, msg="party after session close")


def test_datawatch_and_childrenwatch_across_clients(client_factory, ns):
    """DataWatch and ChildrenWatch on one client observe, in order, every
    change made by another client (each change awaited before the next)."""
    watcher, writer = client_factory(), client_factory()
    p = ns + "/cfg"
    writer.create(p, b"v0")
    catch_up(watcher)
    seen, kids = [], []
    watcher.DataWatch(p, lambda d, s: seen.append((d, s.version if s else None)))
    watcher.ChildrenWatch(p, lambda ch: kids.append(sorted(ch)))
    wait_for(lambda: seen == [(b"v0", 0)] and kids == [[]], msg="initial calls")
    for i in range(1, 6):
        writer.set(p, b"v%d" % i)
        wait_for(lambda: seen[-1] == (b"v%d" % i, i), msg="DataWatch v%d" % i)
        writer.create(p + "/k%d" % i)
        wait_for(lambda: len(kids[-1]) == i, msg="ChildrenWatch %d" % i)
    assert seen == [(b"v%d" % i, i) for i in range(6)]
    assert kids[-1] == ["k%d" % i for i in range(1, 6)]
    writer.delete(p, recursive=True)
    wait_for(lambda: seen[-1] == (None, None), msg="DataWatch deletion")
