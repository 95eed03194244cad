#!/usr/bin/env python3
"""Record golden ZooKeeper wire frames from real clients talking to real Apache
ZooKeeper 3.8.  A tool run by hand, NOT by the test suite:

    python3 tests/golden/record.py            # writes tests/golden/{kazoo,zkcli}.frames

It starts Apache ZooKeeper (the Debian package's jars, as tests/python/conftest.py
does: 4lw.commands.whitelist=*, admin.enableServer=false,
-Dzookeeper.extendedTypesEnabled=true) on a free 127.0.0.1 port, puts a TCP
proxy in front of it on another free 127.0.0.1 port, and drives two clients
through the proxy:

* kazoo (the pip-installed Python client), scenario in ``drive_kazoo``;
* Apache's own Java client, ``zkCli.sh -server 127.0.0.1:PROXYPORT``, with
  commands piped on stdin, scenario in ``drive_zkcli``.

The proxy splits both directions into length-prefixed frames and records them.
Output format (read by tests/golden.rs), one line per frame:

    <c2s|s2c> <hex of the frame body, without its 4-byte length prefix>

Lines starting with ``#`` are comments.  ``# connection N: <scenario>`` starts a
new TCP connection (its first c2s frame is a ConnectRequest, its first s2c frame
a ConnectResponse); ``# step: ...`` lines name what the driver did next.  Frames
of one connection are written together, in the order the proxy saw them (a
request is recorded before it is forwarded, so its reply always follows it).
The proxy can also cut every open connection (``Proxy.drop_all``) so that the
clients reconnect to their session: that records reconnect ConnectRequests,
kazoo's re-sent auth and the Java client's setWatches/setWatches2.
"""

import glob
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ZK_HOME = os.environ.get("ZK_HOME", "/usr/share/zookeeper")
ZKCLI = os.environ.get("ZKCLI", os.path.join(ZK_HOME, "bin", "zkCli.sh"))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apache_classpath():
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
        sys.exit("Apache ZooKeeper is not installed (apt-get install -y zookeeper)")
    return ":".join(os.path.join(j, x) for x in jars if os.path.exists(os.path.join(j, x)))


class ApacheZk:
    def __init__(self, base):
        self.base = base
        self.port = free_port()
        data = os.path.join(base, "data")
        os.makedirs(data, exist_ok=True)
        cfg = os.path.join(base, "zoo.cfg")
        with open(cfg, "w") as f:
            f.write("tickTime=2000\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\n"
                    "4lw.commands.whitelist=*\nadmin.enableServer=false\nforceSync=no\n" % (data, self.port))
        self.log = open(os.path.join(base, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [os.environ.get("JAVA", "java"), "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC",
             "-Dzookeeper.extendedTypesEnabled=true", "-Dzookeeper.admin.enableServer=false",
             "-Dzookeeper.jmx.log4j.disable=true", "-cp", apache_classpath(),
             "org.apache.zookeeper.server.ZooKeeperServerMain", cfg],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=base, start_new_session=True)

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit("ZooKeeper exited early, see %s/server.log" % self.base)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"ruok")
                    if s.recv(4) == b"imok":
                        break
            except OSError:
                pass
            time.sleep(0.1)
        # Warm the server up (first session creation is slow on a cold JVM) with a
        # direct, unrecorded session, so that the recorded clients do not time out.
        while time.monotonic() < deadline:
            from kazoo.client import KazooClient
            c = KazooClient(hosts="127.0.0.1:%d" % self.port, timeout=10.0)
            try:
                c.start(timeout=10)
                c.get_children("/")
                c.stop()
                c.close()
                return
            except Exception:  # noqa: BLE001 - retried until the deadline
                try:
                    c.stop()
                    c.close()
                except Exception:  # noqa: BLE001
                    pass
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit("ZooKeeper not ready after %ds" % timeout)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
        self.proc.wait(timeout=10)


class Connection:
    def __init__(self, number, scenario):
        self.number = number
        self.scenario = scenario
        self.entries = []  # ("#", text) | ("c2s"/"s2c", bytes)
        self.lock = threading.Lock()
        self.sockets = []
        self.open = True

    def add(self, kind, value):
        with self.lock:
            self.entries.append((kind, value))


class Proxy:
    """Accepts on 127.0.0.1:<port>, connects each client to the upstream server."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.connections = []
        self.scenario = "unnamed"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def hosts(self):
        return "127.0.0.1:%d" % self.port

    def _accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                conn = Connection(len(self.connections) + 1, self.scenario)
                conn.sockets = [client, upstream]
                self.connections.append(conn)
            threading.Thread(target=self._pump, args=(conn, client, upstream, "c2s"), daemon=True).start()
            threading.Thread(target=self._pump, args=(conn, upstream, client, "s2c"), daemon=True).start()

    def _pump(self, conn, src, dst, direction):
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                while len(buf) >= 4:
                    (length,) = struct.unpack(">i", buf[:4])
                    if length < 0 or length > 16 << 20:
                        raise RuntimeError("bad frame length %d on %s" % (length, direction))
                    if len(buf) < 4 + length:
                        break
                    frame, buf = buf[:4 + length], buf[4 + length:]
                    conn.add(direction, frame[4:])  # recorded before it is forwarded
                    dst.sendall(frame)
        except OSError as e:
            if conn.open:
                conn.add("#", "%s: socket error %s" % (direction, e))
        finally:
            if buf:
                conn.add("#", "%s: %d trailing bytes of an incomplete frame were not recorded" % (direction, len(buf)))
            self._close(conn)

    def _close(self, conn):
        with conn.lock:
            conn.open = False
            for s in conn.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass

    def note(self, text):
        """A `# step:` comment in every open connection."""
        print("  step:", text, flush=True)
        with self.lock:
            conns = [c for c in self.connections if c.open]
        for c in conns:
            c.add("#", "step: " + text)

    def drop_all(self):
        """Cut every open connection (the clients reconnect to their sessions)."""
        with self.lock:
            conns = [c for c in self.connections if c.open]
        for c in conns:
            c.add("#", "proxy cut this connection")
            self._close(c)

    def take_connections(self):
        with self.lock:
            conns, self.connections = self.connections, []
        return conns

    def close(self):
        self.listener.close()


def write_frames(path, title, connections):
    lines = [
        "# Golden ZooKeeper client<->server frames: %s against Apache ZooKeeper 3.8." % title,
        "# Recorded by tests/golden/record.py; checked by tests/golden.rs.",
        "# Format: '<c2s|s2c> <hex frame body without the 4-byte length>'; '#' lines are comments;",
        "# '# connection N: ...' starts a new TCP connection (ConnectRequest/ConnectResponse first).",
    ]
    frames = 0
    for conn in connections:
        lines.append("# connection %d: %s" % (conn.number, conn.scenario))
        for kind, value in conn.entries:
            if kind == "#":
                lines.append("# " + value)
            else:
                lines.append("%s %s" % (kind, value.hex()))
                frames += 1
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s: %d connections, %d frames, %d bytes"
          % (path, len(connections), frames, os.path.getsize(path)), flush=True)


def wait_for(pred, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def drive_kazoo(proxy):
    from kazoo.client import KazooClient, KazooState
    from kazoo.exceptions import (BadVersionError, NoAuthError, NoNodeError,
                                  NodeExistsError, NotEmptyError)
    from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

    events = []

    def watch_(tag):
        # kazoo keeps a set of watcher functions per path: a distinct function per call.
        return lambda event: events.append((tag, event))

    proxy.scenario = "kazoo main session"
    zk = KazooClient(hosts=proxy.hosts, timeout=10.0)
    zk.start(timeout=15)
    note = proxy.note

    note("create persistent, with data, empty data, ephemeral, sequential, create2")
    zk.create("/g")
    zk.create("/g/data", b"hello")
    zk.create("/g/empty", b"")
    zk.create("/g/eph", b"e", ephemeral=True)
    zk.create("/g/seq-", b"s", sequence=True)
    zk.create("/g/eseq-", b"es", ephemeral=True, sequence=True)
    zk.create("/g/c2", b"create2", include_data=True)
    zk.create("/g/uni-\u00fc\u00df\u4e2d", "utf8 \u00e9".encode())
    zk.create("/g/big", bytes(range(256)) * 16)
    zk.create("/g/a/b/c", b"deep", makepath=True)
    note("create with digest ACL")
    digest = make_digest_acl("golden", "secret", all=True)
    zk.create("/g/secret", b"hidden", acl=[digest])
    note("create errors: NodeExists, NoNode parent, NoChildrenForEphemerals")
    for path in ("/g", "/nope/child", "/g/eph/child"):
        try:
            zk.create(path)
        except Exception:
            pass

    note("get/exists with watches (incl. exists watch on a missing node)")
    zk.get("/g/data", watch=watch_(1))
    zk.exists("/g/data", watch=watch_(2))
    zk.exists("/g/missing", watch=watch_(3))
    zk.get("/g/empty")
    zk.get("/g/big")
    zk.get("/g/uni-\u00fc\u00df\u4e2d")
    try:
        zk.get("/g/nope")
    except NoNodeError:
        pass
    note("set fires data watches")
    zk.set("/g/data", b"world")
    wait_for(lambda: len(events) >= 2, what="data watch events")
    note("create fires exists watch (NodeCreated)")
    zk.create("/g/missing", b"now here")
    wait_for(lambda: len(events) >= 3, what="NodeCreated event")
    note("set with bad version")
    try:
        zk.set("/g/data", b"x", version=99)
    except BadVersionError:
        pass
    zk.set("/g/data", b"v2", version=1)

    note("get_children (getChildren) and include_data (getChildren2), with watches")
    zk.get_children("/g", watch=watch_(4))
    zk.get_children("/g", watch=watch_(5), include_data=True)
    zk.get_children("/")
    zk.get_children("/g/a/b/c", include_data=True)
    note("child create fires child watch")
    zk.create("/g/kid", b"k")
    wait_for(lambda: len(events) >= 4, what="child event")

    note("get_acls / set_acls")
    zk.get_acls("/")
    zk.get_acls("/g/data")
    zk.set_acls("/g/data", OPEN_ACL_UNSAFE + [digest])
    zk.set_acls("/g/data", OPEN_ACL_UNSAFE, version=1)
    try:
        zk.set_acls("/g/data", OPEN_ACL_UNSAFE, version=42)
    except BadVersionError:
        pass
    note("NoAuth before add_auth")
    try:
        zk.get("/g/secret")
    except NoAuthError:
        pass
    note("add_auth digest")
    zk.add_auth("digest", "golden:secret")
    zk.get("/g/secret")
    zk.get_acls("/g/secret")

    note("sync")
    zk.sync("/g")

    note("successful transaction")
    stat = zk.exists("/g/data")
    t = zk.transaction()
    t.create("/g/t1", b"t")
    t.create("/g/t2", b"", ephemeral=True)
    t.check("/g/data", stat.version)
    t.set_data("/g/data", b"in txn")
    t.delete("/g/kid")
    results = t.commit()
    if any(isinstance(r, Exception) for r in results):
        raise RuntimeError("transaction expected to succeed: %r" % (results,))
    note("failing transaction")
    t = zk.transaction()
    t.create("/g/t3", b"t")
    t.check("/g/data", 1000)
    t.delete("/g/no-such-node")
    results = t.commit()
    if not any(isinstance(r, Exception) for r in results):
        raise RuntimeError("transaction expected to fail: %r" % (results,))

    note("second session: ephemeral owner; its close fires NodeDeleted in this session")
    proxy.scenario = "kazoo second session"
    zk2 = KazooClient(hosts=proxy.hosts, timeout=10.0)
    zk2.start(timeout=15)
    proxy.scenario = "kazoo main session (reconnected)"
    zk2.create("/g/other-eph", b"o", ephemeral=True)
    zk.exists("/g/other-eph", watch=watch_(6))
    n = len(events)
    zk2.stop()
    zk2.close()
    wait_for(lambda: len(events) > n, what="NodeDeleted event")

    note("delete (with version, NoNode, NotEmpty)")
    zk.delete("/g/t1")
    zk.delete("/g/missing", version=0)
    for path in ("/g/missing", "/g/a"):
        try:
            zk.delete(path)
        except (NoNodeError, NotEmptyError):
            pass
    zk.delete("/g/a", recursive=True)

    note("idle: pings")
    time.sleep(5)

    note("proxy cuts the connection: kazoo reconnects to its session and re-sends auth")
    zk.get("/g/data", watch=watch_(7))
    connected = threading.Event()
    zk.add_listener(lambda state: connected.set() if state == KazooState.CONNECTED else None)
    proxy.drop_all()
    if not connected.wait(15):
        raise RuntimeError("kazoo did not reconnect")
    zk.get("/g/data")
    zk.set("/g/data", b"after reconnect")
    zk.delete("/g", recursive=True)

    note("close")
    zk.stop()
    zk.close()
    time.sleep(0.5)


def drive_zkcli(proxy):
    if not os.path.exists(ZKCLI):
        sys.exit("zkCli.sh not found at %s" % ZKCLI)
    proxy.scenario = "zkCli.sh (Java client)"
    env = dict(os.environ, ZOO_LOG_DIR=os.environ.get("TMPDIR", "/tmp"))
    p = subprocess.Popen([ZKCLI, "-timeout", "4000", "-server", proxy.hosts],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=env, text=True, start_new_session=True)
    output = []
    threading.Thread(target=lambda: output.extend(p.stdout), daemon=True).start()
    wait_for(lambda: any("SyncConnected" in line for line in output), timeout=30, what="zkCli connect")

    def cmd(line, pause=0.4):
        proxy.note("zkCli: " + line)
        p.stdin.write(line + "\n")
        p.stdin.flush()
        time.sleep(pause)

    for line in [
        "create /z",
        "create /z/data hello",
        "create /z/nodata",
        "create -e /z/eph e",
        "create -s /z/seq- s",
        "create -e -s /z/eseq- es",
        "create -t 60000 /z/ttl t",
        "create -c /z/cont",
        "create /z/cont/child c",
        "create /z/data dup",
        "ls /z",
        "ls -w /z",
        "ls -s /z",
        "ls -R /z",
        "get /z/data",
        "get -s /z/data",
        "get -w /z/data",
        "get /z/nodata",
        "get /z/missing",
        "set /z/data world",
        "set -v 0 /z/data stale",
        "set -s /z/data again",
        "stat /z/data",
        "stat -w /z/data",
        "stat /z/missing",
        "addWatch /z",
        "addWatch -m PERSISTENT /z/nodata",
        "create /z/w1 a",
        "set /z/nodata now-data",
        "getAcl /z/data",
        "getAcl -s /",
        "setAcl /z/data world:anyone:cdrwa,ip:127.0.0.1:r",
        "setAcl -v 0 /z/data world:anyone:cdrwa",
        "addauth digest golden:secret",
        "create /z/authed x auth:golden:secret:cdrwa",
        "setAcl /z/nodata auth:golden:secret:cdrwa",
        "get /z/authed",
        "whoami",
        "getEphemerals",
        "getEphemerals /z",
        "getAllChildrenNumber /z",
        "getAllChildrenNumber /",
        "sync /z",
        "config",
    ]:
        cmd(line)
    proxy.note("idle: pings")
    time.sleep(3.5)
    proxy.note("proxy cuts the connection: the Java client reconnects with setWatches2 and re-sends auth")
    time.sleep(0.5)
    proxy.drop_all()
    time.sleep(3.0)
    for line in [
        "get /z/data",
        "ls -w /z",
        "stat -w /z/eph",
        "removewatches /z/eph -d",
        "removewatches /z -a",
        "removewatches /z/data -c",
        "removewatches /z/nodata",
        "delete /z/eph",
        "delete /z/missing",
        "delete /z",
        "delete -v 7 /z/data",
        "deleteall /z",
        "ls /",
    ]:
        cmd(line)
    cmd("quit", pause=1.0)
    p.stdin.close()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.wait()
    time.sleep(0.3)
    text = "".join(output)
    if os.environ.get("RECORD_VERBOSE"):
        print(text)
    return text


def main():
    base = tempfile.mkdtemp(prefix="golden-zk-")
    zk = ApacheZk(base)
    try:
        zk.wait_ready()
        proxy = Proxy(zk.port)
        print("Apache ZooKeeper on %d, proxy on %d" % (zk.port, proxy.port), flush=True)
        print("kazoo:", flush=True)
        try:
            drive_kazoo(proxy)
        except BaseException:
            write_frames(os.path.join(HERE, "kazoo.failed"), "FAILED kazoo run", proxy.take_connections())
            raise
        write_frames(os.path.join(HERE, "kazoo.frames"), "kazoo %s" % __import__("kazoo").__version__,
                     proxy.take_connections())
        print("zkCli:", flush=True)
        drive_zkcli(proxy)
        write_frames(os.path.join(HERE, "zkcli.frames"), "zkCli.sh (Apache Java client 3.8)",
                     proxy.take_connections())
        proxy.close()
    finally:
        zk.stop()
        if os.environ.get("RECORD_KEEP"):
            print("kept", base)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
