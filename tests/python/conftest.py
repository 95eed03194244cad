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

``WARDEN_TEST_TARGET`` (``warden`` by default, or ``apache``) picks the server
the compatibility suites run against.  ``test_differential.py`` always starts
an Apache reference server and compares it with warden (or, with
``DIFF_AGAINST=apache``, with a second Apache server, to validate the harness).
"""

import atexit
import glob
import os
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


def target_kind():
    """The server kind the compat suites run against (env WARDEN_TEST_TARGET)."""
    kind = os.environ.get("WARDEN_TEST_TARGET", "warden").strip().lower()
    if kind not in ("warden", "apache"):
        raise RuntimeError("WARDEN_TEST_TARGET must be 'warden' or 'apache', got %r" % kind)
    return kind


def free_port():
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    @property
    def hosts(self):
        return "127.0.0.1:%d" % self.port

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
            binary = os.environ.get("WARDEN_BIN", DEFAULT_WARDEN_BIN)
            if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
                pytest.fail(
                    "warden binary not found or not executable: %s "
                    "(build it with `cargo build --release`, or set WARDEN_BIN; "
                    "set WARDEN_TEST_TARGET=apache to run against Apache ZooKeeper)"
                    % binary, pytrace=False)
            return [
                binary, "server",
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


def start_server(kind, base_dir=None):
    """Start a server of `kind` in a fresh temp dir and wait until it is ready.

    The caller must call ``.stop()`` (use a finalizer).  The temp dir is
    removed by ``stop_and_clean``.
    """
    if base_dir is None:
        base_dir = tempfile.mkdtemp(prefix="warden-%s-" % kind)
    srv = ZkServer(kind, base_dir)
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
    srv = ZkServer(target_kind(), tempfile.mkdtemp(prefix="warden-%s-" % target_kind()))
    request.addfinalizer(lambda: stop_and_clean(srv))
    srv.start()
    srv.wait_ready()
    return srv


@pytest.fixture
def server_factory(request):
    """Function-scoped factory: ``server_factory(kind)`` starts a fresh server
    and registers its stop; several can be started in parallel with
    ``server_factory.many([kind, ...])``."""
    started = []

    def make(kind):
        srv = ZkServer(kind, tempfile.mkdtemp(prefix="warden-%s-" % kind))
        started.append(srv)
        srv.start()
        srv.wait_ready()
        return srv

    def many(kinds):
        srvs = [ZkServer(k, tempfile.mkdtemp(prefix="warden-%s-" % k)) for k in kinds]
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
    all are stopped and closed at the end of the test."""
    clients = []

    def make(**kw):
        kw.setdefault("timeout", 10.0)
        c = KazooClient(hosts=zk_server.hosts, **kw)
        clients.append(c)
        c.start(timeout=20)
        return c

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
