"""Apache's own CLI (zkCli.sh, the Java client) against the target server.

A scripted session is piped to zkCli.sh on stdin (it runs non-interactively
without a terminal); single commands are also passed as arguments.  The
output is asserted, so a server that the reference Java client cannot talk to
(or that answers differently) fails here.  zkCli prints results on stdout
and "Created ..." / error messages on stderr; both are checked.
"""

import os
import re
import subprocess

import pytest

from conftest import ZKCLI


def zkcli(server, *args, stdin=None, timeout=60):
    if not os.path.exists(ZKCLI):
        pytest.fail("zkCli.sh not found at %s (install the Debian zookeeper package)" % ZKCLI)
    p = subprocess.run(
        [ZKCLI, "-server", server.hosts] + list(args),
        input=stdin, capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, ZOO_LOG_DIR=os.environ.get("TMPDIR", "/tmp")))
    return p


def stat_fields(text):
    return dict(re.findall(r"^(\w+) = (.*)$", text, re.M))


def test_scripted_session(zk_server):
    """create / ls / get / set / stat / create -e / create -s / delete /
    deleteall through one piped zkCli session."""
    script = "\n".join([
        "create /cli hello",
        "ls /cli",
        "get /cli",
        "set /cli world",
        "stat /cli",
        "create -e /cli/eph e",
        "create -s /cli/seq- s",
        "create -s /cli/seq- s",
        "ls /cli",
        "delete /cli",
        "create /cli/sub x",
        "deleteall /cli",
        "ls /",
        "quit",
    ]) + "\n"
    p = zkcli(zk_server, stdin=script)
    assert p.returncode == 0, p.stderr
    out, err = p.stdout, p.stderr
    assert "WatchedEvent state:SyncConnected type:None path:null" in out
    assert "Created /cli\n" in err
    assert "Created /cli/eph\n" in err
    assert "Created /cli/seq-0000000001\n" in err
    assert "Created /cli/seq-0000000002\n" in err
    assert "Created /cli/sub\n" in err
    assert "Node not empty: /cli" in err
    lines = out.splitlines()
    assert "[]" in lines                                  # ls /cli (empty)
    assert "hello" in lines                               # get /cli
    assert "[eph, seq-0000000001, seq-0000000002]" in lines
    f = stat_fields(out)
    assert f["dataVersion"] == "1"
    assert f["cversion"] == "0"
    assert f["aclVersion"] == "0"
    assert f["ephemeralOwner"] == "0x0"
    assert f["dataLength"] == "5"
    assert f["numChildren"] == "0"
    assert int(f["mZxid"], 16) == int(f["cZxid"], 16) + 1
    assert f["pZxid"] == f["cZxid"]
    # after deleteall, only /zookeeper is left at the root
    assert lines[-5:].count("[zookeeper]") == 1 or "[zookeeper]" in lines


def test_single_commands(zk_server):
    """Commands as arguments: each runs in its own session; get -s shows
    data then the Stat; errors for missing nodes are reported."""
    p = zkcli(zk_server, "create", "/one", "1")
    assert p.returncode == 0 and "Created /one" in p.stderr
    p = zkcli(zk_server, "create", "/one/tmp", "t")
    assert "Created /one/tmp" in p.stderr
    p = zkcli(zk_server, "delete", "/one/tmp")
    assert p.returncode == 0
    p = zkcli(zk_server, "get", "-s", "/one")
    lines = p.stdout.splitlines()
    i = lines.index("1")
    f = stat_fields("\n".join(lines[i + 1:]))
    assert f["dataVersion"] == "0" and f["dataLength"] == "1"
    assert f["numChildren"] == "0" and f["cversion"] == "2"
    p = zkcli(zk_server, "ls", "/one")
    assert "[]" in p.stdout.splitlines()
    p = zkcli(zk_server, "get", "/missing")
    assert "Node does not exist: /missing" in p.stdout + p.stderr
    p = zkcli(zk_server, "delete", "/one")
    assert p.returncode == 0
    p = zkcli(zk_server, "stat", "/one")
    assert "Node does not exist: /one" in p.stdout + p.stderr
