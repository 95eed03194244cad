"""Shared pytest fixtures for the warden Python test suites.

Every test module gets its own freshly started server on a free loopback
port with its own temporary data directory; the server is killed (and waited
for) when the module finishes, also when a test fails.

Two kinds of server can be started:

* ``apache``: Apache ZooKeeper 3.8 standalone (``ZooKeeperServerMain``), using
  the jars of the Debian ``zookeeper`` package (``/usr/share/java``) or, if
  present, an upstream-style ``/usr/share/zookeeper/lib``.
* ``warden``: the Rust server under test (``WARDEN_BIN``, default
  ``<repo>/target/release/warden``).  A missing binary is a test FAILURE,
  never a skip.

``WARDEN_TEST_TARGET`` picks the server the compatibility suites run against:

* ``warden`` (default) or ``apache``: one standalone server;
* ``ensemble``: a 3-node warden ensemble on loopback (``warden server
  --config`` with ``server.N`` lines and ``dataDir/myid``), started by
  ``ZkEnsemble``; every node must answer ``srvr`` with ``Mode: leader`` or
  ``Mode: follower`` before the tests start;
* ``apache-ensemble``: the same with Apache ZooKeeper's ``QuorumPeerMain``, to
  check that the suites' expectations hold for a real ZooKeeper ensemble.

With an ensemble target the clients are spread over the servers: client ``i``
of a test (``client_factory``, ``server.client(i)``) connects to node
``i % 3`` first (its hosts list rotated by ``i``, not shuffled).  Replicas lag:
ZooKeeper promises a session its own writes and, after ``sync``, everything
committed before the sync, so where a test reads (or expects the watch
events of) another session's writes it calls ``catch_up(client)`` first: a
``sync("/")`` on ensembles, nothing on a standalone server (whose reads
must already see every acknowledged write).

``test_differential.py`` always starts an Apache standalone reference server
and compares it with warden standalone, the warden ensemble (ensemble target),
or Apache (``DIFF_AGAINST``, to validate the harness).
"""

import atexit
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
from kazoo.client import KazooClient

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_WARDEN_BIN = os.path.join(REPO_ROOT, "target", "release", "warden")
ZK_HOME = os.environ.get("ZK_HOME", "/usr/share/zookeeper")
ZKCLI = os.environ.get("ZKCLI", os.path.join(ZK_HOME, "bin", "zkCli.sh"))
READY_TIMEOUT = float(os.environ.get("WARDEN_READY_TIMEOUT", "20"))

# Every process started by these fixtures, so that even an interpreter exit
# that skips the finalizers does not leave servers behind.
_LIVE = set()
_LIVE_LOCK = threading.Lock()


def _kill_all_live():
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        _kill_proc(p)


atexit.register(_kill_all_live)


def _on_sigterm(signum, frame):
    # A plain SIGTERM would end pytest without finalizers or atexit: stop the
    # servers first, then unwind like Ctrl-C.
    _kill_all_live()
    raise KeyboardInterrupt("SIGTERM")


if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _on_sigterm)


def _kill_proc(proc):
    if proc.poll() is None:
        try:
            # Each server runs in its own process group (start_new_session);
            # kill that group only.
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                proc.kill()
            except ProcessLookupError:
                pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    with _LIVE_LOCK:
        _LIVE.discard(proc)


# Ensemble target -> the server kind of its nodes.
ENSEMBLE_KINDS = {"ensemble": "warden", "apache-ensemble": "apache"}
TARGET_KINDS = ("warden", "apache") + tuple(ENSEMBLE_KINDS)
ENSEMBLE_SIZE = 3


def target_kind():
    """The server kind the compat suites run against (env WARDEN_TEST_TARGET)."""
    kind = os.environ.get("WARDEN_TEST_TARGET", "warden").strip().lower()
    if kind not in TARGET_KINDS:
        raise RuntimeError("WARDEN_TEST_TARGET must be one of %s, got %r"
                           % (", ".join(TARGET_KINDS), kind))
    return kind


def is_ensemble_target():
    return target_kind() in ENSEMBLE_KINDS


def catch_up(*clients):
    """Before a client reads (or expects watch events for) another session's
    writes: on an ensemble target, ``sync("/")`` on each client, so its server
    has applied (and sent the watch events of) everything committed before.
    Nothing on a standalone target."""
    if is_ensemble_target():
        for c in clients:
            c.sync("/")


def free_port():
    """A currently free TCP port on 127.0.0.1."""
    return free_ports(1)[0]


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n):
    """`n` distinct, currently free TCP ports on 127.0.0.1.

    Taken below the kernel's ephemeral range when there is room: a port
    chosen there is never handed out meanwhile as the source port of an
    outgoing connection (the servers' peers, clients, 4lw probes), which
    would make the server that is about to bind it fail."""
    lo, _ = _ephemeral_range()
    socks = []
    try:
        if lo - 10000 >= 1000:
            rng = random.SystemRandom()
            tries = 0
            while len(socks) < n and tries < 50 * n:
                tries += 1
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind(("127.0.0.1", rng.randrange(10000, lo)))
                except OSError:
                    s.close()
                    continue
                socks.append(s)
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def four_letter_word(port, word, timeout=2.0):
    """Send a four-letter word to 127.0.0.1:port; the reply text ('' on a
    connection error)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(word)
            out = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                out += b
            return out.decode("utf-8", "replace")
    except OSError:
        return ""


def apache_classpath():
    """Classpath for ZooKeeperServerMain / ZooKeeperMain.

    The Debian package has no ``lib/`` folder: its jars are in
    ``/usr/share/java`` (zookeeper.jar's manifest names most dependencies).
    slf4j-nop is added so the server prints nothing.
    """
    lib = os.path.join(ZK_HOME, "lib")
    if os.path.isdir(lib) and glob.glob(os.path.join(lib, "zookeeper-*.jar")):
        return lib + "/*"
    j = "/usr/share/java"
    jars = [
        "zookeeper.jar", "zookeeper-jute.jar", "slf4j-api.jar", "slf4j-nop.jar",
        "netty-handler.jar", "netty-common.jar", "netty-buffer.jar",
        "netty-transport.jar", "netty-codec.jar", "netty-resolver.jar",
        "netty-transport-native-epoll.jar",
        "netty-transport-native-unix-common.jar", "metrics-core.jar",
        "commons-cli.jar", "snappy-java.jar", "jline.jar",
    ]
    if not os.path.exists(os.path.join(j, "zookeeper.jar")):
        raise RuntimeError(
            "Apache ZooKeeper is not installed (no %s/zookeeper.jar and no %s); "
            "run tests/python/run.sh or apt-get install -y zookeeper" % (j, lib))
    return ":".join(os.path.join(j, x) for x in jars if os.path.exists(os.path.join(j, x)))


def warden_binary():
    """The warden binary (WARDEN_BIN); a missing one FAILS the test."""
    binary = os.environ.get("WARDEN_BIN", DEFAULT_WARDEN_BIN)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(
            "warden binary not found or not executable: %s "
            "(build it with `cargo build --release`, or set WARDEN_BIN; "
            "set WARDEN_TEST_TARGET=apache to run against Apache ZooKeeper)"
            % binary, pytrace=False)
    return binary


class ZkServer:
    """One server process (Apache ZooKeeper or warden) on 127.0.0.1:port."""

    def __init__(self, kind, base_dir):
        self.kind = kind
        self.port = free_port()
        self.base_dir = base_dir
        self.data_dir = os.path.join(base_dir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_path = os.path.join(base_dir, "server.log")
        self.proc = None

    is_ensemble = False

    @property
    def hosts(self):
        return "127.0.0.1:%d" % self.port

    def client(self, index=0, **kw):
        """An unstarted KazooClient for this server (`index` only matters
        for ensembles)."""
        return KazooClient(hosts=self.hosts, **kw)

    def check_placement(self, client, index):
        """Ensembles: fail unless the started `client` is connected to the
        node `index` picks.  Nothing to check for one server."""

    def command(self):
        if self.kind == "apache":
            cfg = os.path.join(self.base_dir, "zoo.cfg")
            with open(cfg, "w") as f:
                f.write(
                    "tickTime=2000\n"
                    "dataDir=%s\n"
                    "clientPort=%d\n"
                    "clientPortAddress=127.0.0.1\n"
                    "4lw.commands.whitelist=*\n"
                    "admin.enableServer=false\n" % (self.data_dir, self.port))
            return [
                os.environ.get("JAVA", "java"),
                "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.extendedTypesEnabled=true",
                "-Dzookeeper.admin.enableServer=false",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-cp", apache_classpath(),
                "org.apache.zookeeper.server.ZooKeeperServerMain", cfg,
            ]
        if self.kind == "warden":
            return [
                warden_binary(), "server",
                "--client-port", str(self.port),
                "--data-dir", self.data_dir,
                "--tick-time", "2000",
                "--extended-types-enabled", "true",
                "--4lw-commands-whitelist", "*",
            ]
        raise ValueError("unknown server kind %r" % self.kind)

    def start(self):
        cmd = self.command()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.base_dir, start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(self.proc)
        return self

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return "<no log>"

    def _fail(self, msg):
        tail = self.log_tail()
        self.stop()
        pytest.fail("%s server on port %d: %s\n--- server log tail ---\n%s"
                    % (self.kind, self.port, msg, tail), pytrace=False)

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Block until a ZooKeeper session can be established (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._fail("exited early with code %s" % self.proc.returncode)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._fail("port not accepting connections after %.0fs" % timeout)
            time.sleep(0.05)
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail("exited early with code %s" % self.proc.returncode)
            # Short session timeout: kazoo's connect read timeout derives from
            # it, so a probe hitting a not-yet-serving server fails fast.
            c = KazooClient(hosts=self.hosts, timeout=2.0)
            try:
                c.start(timeout=max(0.5, min(3.0, deadline - time.monotonic())))
                c.stop()
                c.close()
                return self
            except Exception as e:  # noqa: BLE001 - retried, reported below
                last = e
                try:
                    c.stop()
                    c.close()
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(0.1)
        self._fail("no ZooKeeper session could be established within %.0fs (%r)"
                   % (timeout, last))

    def stop(self):
        if self.proc is not None:
            _kill_proc(self.proc)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None


class EnsembleNode(ZkServer):
    """One member of a ZkEnsemble: a warden (``server --config``) or Apache
    (``QuorumPeerMain``) process reading the zoo.cfg its ensemble wrote."""

    def __init__(self, kind, base_dir, myid, client_port, quorum_port, election_port):
        self.kind = kind
        self.myid = myid
        self.port = client_port
        self.quorum_port = quorum_port
        self.election_port = election_port
        self.base_dir = base_dir
        self.data_dir = os.path.join(base_dir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        with open(os.path.join(self.data_dir, "myid"), "w") as f:
            f.write("%d\n" % myid)
        self.log_path = os.path.join(base_dir, "server.log")
        self.cfg_path = os.path.join(base_dir, "zoo.cfg")
        self.proc = None

    def server_line(self):
        return "server.%d=127.0.0.1:%d:%d;127.0.0.1:%d" % (
            self.myid, self.quorum_port, self.election_port, self.port)

    def write_config(self, server_lines):
        text = ("tickTime=200\n"
                "initLimit=10\n"
                "syncLimit=5\n"
                "dataDir=%s\n"
                "clientPort=%d\n"
                "clientPortAddress=127.0.0.1\n"
                "4lw.commands.whitelist=*\n" % (self.data_dir, self.port))
        if self.kind == "warden":
            text += "zookeeper.extendedTypesEnabled=true\n"
        else:
            text += "admin.enableServer=false\n"
        text += "".join(line + "\n" for line in server_lines)
        with open(self.cfg_path, "w") as f:
            f.write(text)

    def command(self):
        if self.kind == "apache":
            return [
                os.environ.get("JAVA", "java"),
                "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.extendedTypesEnabled=true",
                "-Dzookeeper.admin.enableServer=false",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-cp", apache_classpath(),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain", self.cfg_path,
            ]
        if self.kind == "warden":
            return [warden_binary(), "server", "--config", self.cfg_path]
        raise ValueError("unknown server kind %r" % self.kind)

    def mode(self):
        """The role `srvr` reports (leader, follower, ...), or, in angle
        brackets, why there is none (no answer, or the reply's first line)."""
        reply = four_letter_word(self.port, b"srvr")
        for line in reply.splitlines():
            if line.startswith("Mode: "):
                return line[len("Mode: "):].strip()
        if not reply:
            return "<no answer>" if self.proc.poll() is None else "<exited>"
        return "<%s>" % reply.splitlines()[0].strip()


class ZkEnsemble:
    """A 3-node ensemble (warden or Apache) on loopback, each node with its
    own data dir (and myid), zoo.cfg and free ports.  Offers the interface of
    ZkServer that the suites use (hosts, client, check_placement, start,
    wait_ready, stop, base_dir)."""

    is_ensemble = True

    def __init__(self, kind, base_dir, size=ENSEMBLE_SIZE):
        self.kind = kind
        self.base_dir = base_dir
        ports = free_ports(3 * size)
        self.nodes = [
            EnsembleNode(kind, os.path.join(base_dir, "node%d" % (i + 1)), i + 1,
                         ports[3 * i], ports[3 * i + 1], ports[3 * i + 2])
            for i in range(size)]
        lines = [n.server_line() for n in self.nodes]
        for n in self.nodes:
            n.write_config(lines)

    @property
    def port(self):
        return self.nodes[0].port

    @property
    def hosts(self):
        """Every node, for clients that may use any of them."""
        return ",".join(n.hosts for n in self.nodes)

    def hosts_for(self, index):
        """The hosts list rotated by `index`: node index % size first."""
        k = index % len(self.nodes)
        return ",".join(n.hosts for n in self.nodes[k:] + self.nodes[:k])

    def client(self, index=0, **kw):
        """An unstarted KazooClient that connects to node index % size first
        (hosts rotated by `index`, not shuffled)."""
        kw.setdefault("randomize_hosts", False)
        return KazooClient(hosts=self.hosts_for(index), **kw)

    def check_placement(self, client, index):
        want = self.nodes[index % len(self.nodes)].port
        try:
            got = client._connection._socket.getpeername()[1]
        except (AttributeError, OSError) as e:
            pytest.fail("client %d: cannot tell which ensemble node it is connected to (%r)"
                        % (index, e), pytrace=False)
        if got != want:
            pytest.fail("client %d connected to 127.0.0.1:%d, expected node %d (127.0.0.1:%d) "
                        "first in its hosts list %s"
                        % (index, got, index % len(self.nodes) + 1, want, self.hosts_for(index)),
                       pytrace=False)

    def start(self):
        for n in self.nodes:
            n.start()
        return self

    def log_tail(self, n=3000):
        return "\n".join("--- node %d (client port %d, %s) ---\n%s"
                         % (x.myid, x.port, x.log_path, x.log_tail(n)) for x in self.nodes)

    def _fail(self, msg):
        tail = self.log_tail()
        self.stop()
        pytest.fail("%s ensemble (client ports %s): %s\n--- server log tails ---\n%s"
                    % (self.kind, self.hosts, msg, tail), pytrace=False)

    def modes(self):
        return [n.mode() for n in self.nodes]

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Block (bounded) until every node answers `srvr` with `Mode: leader`
        or `Mode: follower`, exactly one of them leader."""
        deadline = time.monotonic() + timeout
        modes = []
        while True:
            for n in self.nodes:
                if n.proc.poll() is not None:
                    self._fail("node %d exited early with code %s" % (n.myid, n.proc.returncode))
            modes = self.modes()
            if all(m in ("leader", "follower") for m in modes) and modes.count("leader") == 1:
                return self
            if time.monotonic() > deadline:
                self._fail("not every node reports Mode: leader/follower after %.0fs "
                           "(srvr modes: %r)" % (timeout, modes))
            time.sleep(0.05)

    def stop(self):
        for n in self.nodes:
            n.stop()


def make_server(kind, base_dir=None):
    """An unstarted server (standalone kind) or ensemble (ensemble kind)."""
    if base_dir is None:
        base_dir = tempfile.mkdtemp(prefix="warden-%s-" % kind)
    if kind in ENSEMBLE_KINDS:
        return ZkEnsemble(ENSEMBLE_KINDS[kind], base_dir)
    return ZkServer(kind, base_dir)


def start_server(kind, base_dir=None):
    """Start a server of `kind` in a fresh temp dir and wait until it is ready.

    The caller must call ``.stop()`` (use a finalizer).  The temp dir is
    removed by ``stop_and_clean``.
    """
    srv = make_server(kind, base_dir)
    srv.start()
    try:
        srv.wait_ready()
    except BaseException:
        srv.stop()
        raise
    return srv


def stop_and_clean(srv):
    srv.stop()
    shutil.rmtree(srv.base_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def zk_server(request):
    """A fresh server of the target kind (WARDEN_TEST_TARGET) for this module."""
    srv = make_server(target_kind())
    request.addfinalizer(lambda: stop_and_clean(srv))
    srv.start()
    srv.wait_ready()
    return srv


@pytest.fixture
def server_factory(request):
    """Function-scoped factory: ``server_factory(kind)`` starts a fresh server
    (or ensemble, for an ensemble kind) and registers its stop; several can be started in parallel with
    ``server_factory.many([kind, ...])``."""
    started = []

    def make(kind):
        srv = make_server(kind)
        started.append(srv)
        srv.start()
        srv.wait_ready()
        return srv

    def many(kinds):
        srvs = [make_server(k) for k in kinds]
        started.extend(srvs)
        for s in srvs:
            s.start()
        for s in srvs:
            s.wait_ready()
        return srvs

    make.many = many

    def fin():
        for s in started:
            stop_and_clean(s)

    request.addfinalizer(fin)
    return make


@pytest.fixture
def client_factory(zk_server, request):
    """Function-scoped factory of started KazooClients connected to zk_server;
    all are stopped and closed at the end of the test.  The i-th client of a
    test (0-based) goes to ensemble node i % 3 (checked).
    ``client_factory.unstarted(**kw)`` returns the next client unstarted (to
    hook it before start); start it with ``client_factory.start(c)``."""
    clients = []
    placement = {}

    def unstarted(**kw):
        kw.setdefault("timeout", 10.0)
        index = len(clients)
        c = zk_server.client(index, **kw)
        clients.append(c)
        placement[id(c)] = index
        return c

    def start(c):
        c.start(timeout=20)
        zk_server.check_placement(c, placement[id(c)])
        return c

    def make(**kw):
        return start(unstarted(**kw))

    make.unstarted = unstarted
    make.start = start

    def fin():
        for c in clients:
            try:
                c.stop()
                c.close()
            except Exception:  # noqa: BLE001
                pass

    request.addfinalizer(fin)
    return make


@pytest.fixture
def zk(client_factory):
    """A started KazooClient on the module's server."""
    return client_factory()


@pytest.fixture
def ns(request, zk):
    """A unique, existing namespace path for this test (e.g. /t_test_foo)."""
    name = "/t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    zk.delete(name, recursive=True) if zk.exists(name) else None
    zk.create(name)
    return name


def wait_for(pred, timeout=10.0, interval=0.02, msg="condition"):
    """Poll `pred` until truthy (bounded); fail loudly on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    pytest.fail("timed out after %.1fs waiting for %s" % (timeout, msg), pytrace=False)
