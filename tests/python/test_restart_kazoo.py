"""Server restarts seen by kazoo: sessions and their ephemerals across a
SIGKILL or SIGTERM of the server, restarted on the same data directory and
port.

* A kazoo client whose server dies and comes back within the session timeout
  reconnects on its own to the same session; its ephemeral is still there.
* A session closed before the restart stays closed: its ephemeral is gone.
* A session whose client died (process killed, no closeSession) survives the
  restart and then expires: its ephemeral disappears after the timeout.

Written for warden (it needs the durable transaction log: with an in-memory
server every test here fails, which is the point). With
WARDEN_TEST_TARGET=apache the same tests run against Apache ZooKeeper 3.8,
restarted the same way, to check the expectations are ZooKeeper's. Nothing is
skipped for either target.
"""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from conftest import ENSEMBLE_KINDS, _LIVE, _LIVE_LOCK, ZkServer, _kill_proc, stop_and_clean, target_kind, wait_for

# Default tickTime of the fixtures' servers is 2000 ms: negotiated session
# timeouts are clamped to [4000, 40000] ms.
TICK_S = 2.0


class RestartableServer(ZkServer):
    """A ZkServer that can be stopped (SIGKILL or SIGTERM) and started again
    on the same data directory and port. Each start logs to its own file."""

    def __init__(self, kind, base_dir):
        super().__init__(kind, base_dir)
        self.starts = 0

    def start(self):
        self.starts += 1
        self.log_path = os.path.join(self.base_dir, "server-%d.log" % self.starts)
        return super().start()

    def kill(self, sig):
        """Sends `sig` to the server's process group and waits (bounded)."""
        proc = self.proc
        assert proc is not None and proc.poll() is None, "server not running"
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _kill_proc(proc)
            pytest.fail("%s server did not exit within 15 s of signal %d" % (self.kind, sig), pytrace=False)
        with _LIVE_LOCK:
            _LIVE.discard(proc)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
        return proc.returncode

    def restart(self, sig=signal.SIGKILL):
        """Stops the server with `sig` and starts it again on the same data
        directory and port; returns once it serves sessions."""
        self.kill(sig)
        # The killed server's accepted connections linger in TIME_WAIT on the
        # port for a minute; ZooKeeper binds anyway (SO_REUSEADDR), and so must
        # warden. An early exit is retried briefly, then reported.
        deadline = time.monotonic() + 3
        while True:
            self.start()
            t_end = time.monotonic() + 0.5
            while time.monotonic() < t_end and self.proc.poll() is None:
                time.sleep(0.05)
            if self.proc.poll() is None:
                break
            with _LIVE_LOCK:
                _LIVE.discard(self.proc)
            self._log.close()
            self._log = None
            if time.monotonic() > deadline:
                tail = self.log_tail()
                hint = ""
                if "Address already in use" in tail:
                    hint = (" (the port still has TIME_WAIT connections of the killed server; "
                            "Apache ZooKeeper rebinds at once because its listener sets SO_REUSEADDR)")
                pytest.fail("%s server could not restart on port %d%s\n--- server log tail ---\n%s"
                            % (self.kind, self.port, hint, tail), pytrace=False)
            time.sleep(0.3)
        self.wait_ready()
        return self


@pytest.fixture
def restartable(request):
    """A fresh server of the target kind that the test can restart."""
    kind = target_kind()
    if kind in ENSEMBLE_KINDS:
        pytest.fail("test_restart_kazoo.py restarts one standalone server; run it with "
                    "WARDEN_TEST_TARGET=warden or apache (tests/python/run.sh does)", pytrace=False)
    srv = RestartableServer(kind, tempfile.mkdtemp(prefix="warden-restart-%s-" % kind))

    request.addfinalizer(lambda: stop_and_clean(srv))
    srv.start()
    srv.wait_ready()
    return srv


@pytest.fixture
def clients(request):
    """Factory of started kazoo clients; stopped and closed at the end."""
    made = []

    def make(hosts, **kw):
        kw.setdefault("timeout", 10.0)
        # Retry connecting quickly and forever: the server comes back soon.
        kw.setdefault("connection_retry", KazooRetry(max_tries=-1, delay=0.1, backoff=1.5, max_delay=0.5))
        c = KazooClient(hosts=hosts, **kw)
        made.append(c)
        c.start(timeout=20)
        return c

    def fin():
        for c in made:
            try:
                c.stop()
                c.close()
            except Exception:  # noqa: BLE001
                pass

    request.addfinalizer(fin)
    return make


SIGNALS = [pytest.param(signal.SIGKILL, id="sigkill"), pytest.param(signal.SIGTERM, id="sigterm")]


@pytest.mark.parametrize("sig", SIGNALS)
def test_ephemeral_survives_quick_restart(restartable, clients, sig):
    """The server dies and restarts within the session timeout: kazoo
    reconnects by itself to the same session (never LOST), and the session's
    ephemeral, its data and the persistent nodes are all still there."""
    zk = clients(restartable.hosts, timeout=10.0)
    states = []
    lock = threading.Lock()

    def listener(state):
        with lock:
            states.append(state)

    zk.add_listener(listener)
    zk.create("/persist", b"p")
    zk.set("/persist", b"p2")
    zk.create("/eph", b"mine", ephemeral=True)
    session_id, password = zk.client_id
    before = zk.exists("/eph")
    assert before.ephemeralOwner == session_id

    t0 = time.monotonic()
    restartable.restart(sig)
    wait_for(lambda: KazooState.SUSPENDED in states, timeout=10, msg="kazoo to notice the restart")
    wait_for(lambda: zk.state == KazooState.CONNECTED and zk.connected, timeout=15,
             msg="kazoo to reconnect after the restart")
    elapsed = time.monotonic() - t0
    assert KazooState.LOST not in states, "session lost across a %.1f s restart: %r" % (elapsed, states)
    assert zk.client_id[0] == session_id, "kazoo reconnected to another session"
    assert zk.client_id[1] == password

    st = zk.exists("/eph")
    assert st is not None, "the ephemeral /eph of a live session is gone after the restart"
    assert st.ephemeralOwner == session_id
    assert (st.czxid, st.version) == (before.czxid, before.version)
    assert zk.get("/eph")[0] == b"mine"
    data, pst = zk.get("/persist")
    assert (data, pst.version) == (b"p2", 1)

    # New writes continue the zxid sequence; the session still owns /eph.
    zk.create("/after", b"a")
    assert zk.exists("/after").czxid > before.czxid
    other = clients(restartable.hosts)
    assert other.exists("/eph").ephemeralOwner == session_id
    zk.stop()
    wait_for(lambda: other.exists("/eph") is None, timeout=5, msg="/eph to go when its session closes")


def test_closed_session_stays_closed_after_restart(restartable, clients):
    """A session closed (kazoo stop) before the server is SIGKILLed: after the
    restart its ephemeral is gone and cannot come back; persistent data stays."""
    zk = clients(restartable.hosts)
    zk.create("/persist", b"p")
    zk.create("/eph", b"x", ephemeral=True)
    zk.create("/eph_seq-", b"y", ephemeral=True, sequence=True)
    session_id = zk.client_id[0]
    zk.stop()
    zk.close()

    restartable.restart(signal.SIGKILL)
    other = clients(restartable.hosts)
    assert other.exists("/persist") is not None, "persistent node lost across the restart"
    assert other.exists("/eph") is None, "ephemeral of a closed session is back after the restart"
    assert [c for c in other.get_children("/") if c.startswith("eph")] == []
    # Stays gone (no resurrection once the server settles).
    time.sleep(TICK_S)
    assert other.exists("/eph") is None
    assert other.client_id[0] != session_id


HOLDER = r"""
import sys, time
from kazoo.client import KazooClient
zk = KazooClient(hosts=sys.argv[1], timeout=float(sys.argv[2]))
zk.start(timeout=20)
zk.create("/held", b"held", ephemeral=True)
print("%d" % zk.client_id[0], flush=True)
time.sleep(120)
"""


def start_holder(hosts, timeout_s):
    """A subprocess that opens a kazoo session, creates the ephemeral /held
    and then just sleeps; returns (process, session id)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, hosts, str(timeout_s)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    line = []

    def read():
        line.append(proc.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)
    if not line or not line[0].strip():
        _kill_proc(proc)
        pytest.fail("holder process did not report a session: %r"
                    % proc.stderr.read().decode("utf-8", "replace")[-2000:], pytrace=False)
    return proc, int(line[0])


@pytest.mark.parametrize("sig", SIGNALS)
def test_dead_client_ephemeral_expires_after_restart(restartable, clients, sig):
    """The process holding a session dies without closing it; the server then
    restarts. The session (and its ephemeral) is still there right after the
    restart, nobody resumes it, and it expires after its timeout."""
    timeout_s = 2 * TICK_S  # the smallest timeout the server allows: 4 s
    holder, session_id = start_holder(restartable.hosts, timeout_s)
    observer = clients(restartable.hosts)
    st = observer.exists("/held")
    assert st is not None and st.ephemeralOwner == session_id
    observer.stop()
    observer.close()

    _kill_proc(holder)  # SIGKILL: the connection drops, no closeSession
    restartable.restart(sig)
    restarted = time.monotonic()
    observer = clients(restartable.hosts)
    st = observer.exists("/held")
    assert st is not None and st.ephemeralOwner == session_id, (
        "the ephemeral of a session that had not expired is gone right after the restart")

    # Expiry: the timeout (4 s) plus a tick of slack after the restart; allow
    # more on a loaded machine, but it must go.
    wait_for(lambda: observer.exists("/held") is None, timeout=timeout_s + 4 * TICK_S + 5,
             msg="/held of the dead session to expire after the restart")
    print("/held expired %.1f s after the restart" % (time.monotonic() - restarted))
    assert observer.connected
    assert observer.exists("/") is not None
