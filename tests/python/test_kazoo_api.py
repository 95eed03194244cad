"""kazoo API conformance tests against the target server (WARDEN_TEST_TARGET).

Every assertion states an exact value Apache ZooKeeper 3.8 produces (these
tests pass against it), so a server that passes behaves like ZooKeeper for
kazoo users.  On an ensemble target the clients of a test sit on different
servers, and a client reading another session's writes calls catch_up
(sync) first, as ZooKeeper's consistency guarantees require.
"""

import hashlib
import base64
import threading
import time

import pytest
from kazoo.exceptions import (
    BadVersionError, NoAuthError, NoChildrenForEphemeralsError, NodeExistsError,
    NoNodeError, NotEmptyError, RolledBackError, RuntimeInconsistency,
)
from kazoo.protocol.states import EventType, KazooState
from kazoo.security import ACL, Id, OPEN_ACL_UNSAFE, Permissions, make_digest_acl

import zkext
from conftest import catch_up, wait_for


def test_ruok(zk):
    """The 4lw `ruok` command answers exactly b'imok'."""
    assert zk.command(b"ruok") == "imok"


def test_create_persistent_and_stat(zk, ns):
    """create returns the path; a fresh node has version/cversion/aversion 0,
    czxid == mzxid == pzxid, dataLength and numChildren exact; the parent's
    cversion/numChildren/pzxid follow."""
    before = zk.exists(ns)
    assert zk.create(ns + "/n", b"abc") == ns + "/n"
    data, st = zk.get(ns + "/n")
    assert data == b"abc"
    assert (st.version, st.cversion, st.aversion) == (0, 0, 0)
    assert st.czxid == st.mzxid == st.pzxid
    assert st.ctime == st.mtime
    assert st.dataLength == 3 and st.numChildren == 0 and st.ephemeralOwner == 0
    parent = zk.exists(ns)
    assert parent.cversion == before.cversion + 1
    assert parent.numChildren == 1
    assert parent.pzxid == st.czxid
    assert parent.mzxid == before.mzxid  # children changes do not touch mzxid
    assert parent.version == before.version


def test_create_include_data(zk, ns):
    """create(include_data=True) (Create2) returns (path, stat) of the new node."""
    path, st = zk.create(ns + "/n", b"xy", include_data=True)
    assert path == ns + "/n"
    assert st == zk.exists(ns + "/n")
    assert st.dataLength == 2


def test_node_exists_and_no_node(zk, ns):
    """NodeExistsError on duplicate create; NoNodeError when the parent is
    missing, and for get/set/delete of a missing node; exists() gives None."""
    zk.create(ns + "/n")
    with pytest.raises(NodeExistsError):
        zk.create(ns + "/n")
    with pytest.raises(NoNodeError):
        zk.create(ns + "/missing/child")
    with pytest.raises(NoNodeError):
        zk.get(ns + "/nope")
    with pytest.raises(NoNodeError):
        zk.set(ns + "/nope", b"x")
    with pytest.raises(NoNodeError):
        zk.delete(ns + "/nope")
    with pytest.raises(NoNodeError):
        zk.get_children(ns + "/nope")
    assert zk.exists(ns + "/nope") is None


def test_failed_write_consumes_zxid(zk, ns):
    """Measured ZooKeeper behaviour: a failed write (NodeExists) is logged as
    an error txn and consumes exactly one zxid; a read consumes none."""
    a = zk.create(ns + "/a", include_data=True)[1].czxid
    with pytest.raises(NodeExistsError):
        zk.create(ns + "/a")
    zk.get(ns + "/a")
    zk.exists(ns + "/zz")
    b = zk.create(ns + "/b", include_data=True)[1].czxid
    assert b - a == 2
    with pytest.raises(BadVersionError):
        zk.set(ns + "/a", b"x", version=7)
    c = zk.create(ns + "/c", include_data=True)[1].czxid
    assert c - b == 2


def test_sequential_numbering(zk, ns):
    """Sequential suffix is %010d of a per-parent counter that counts child
    CREATIONS (sequential or not) but not deletions, whereas the parent's
    Stat.cversion counts both (measured on Apache 3.8: after 3 creates and
    1 delete cversion == 4 but the next suffix is 3)."""
    p = ns + "/seq"
    zk.create(p)
    assert zk.create(p + "/n-", sequence=True) == p + "/n-0000000000"
    assert zk.create(p + "/n-", sequence=True) == p + "/n-0000000001"
    zk.create(p + "/plain")
    zk.delete(p + "/n-0000000000")
    # cversion is now 4 (3 creates + 1 delete)
    assert zk.exists(p).cversion == 4
    assert zk.create(p + "/n-", sequence=True) == p + "/n-0000000003"
    assert zk.exists(p).cversion == 5
    assert zk.create(p + "/", sequence=True) == p + "/0000000004"
    zk.delete(p + "/plain")
    zk.delete(p + "/0000000004")
    assert zk.exists(p).cversion == 8
    eph = zk.create(p + "/e-", ephemeral=True, sequence=True)
    assert eph == p + "/e-0000000005"
    assert zk.exists(eph).ephemeralOwner == zk.client_id[0]


def test_ephemeral_rules(zk, ns, client_factory):
    """Ephemeral nodes carry the session id as ephemeralOwner, cannot have
    children (NoChildrenForEphemerals), and vanish when their session closes;
    another client observes the deletion via a watch."""
    other = client_factory()
    p = other.create(ns + "/eph", b"e", ephemeral=True)
    catch_up(zk)
    st = zk.exists(p)
    assert st.ephemeralOwner == other.client_id[0]
    with pytest.raises(NoChildrenForEphemeralsError):
        zk.create(p + "/child")
    seen = []
    ev = threading.Event()

    def w(event):
        seen.append((event.type, event.path))
        ev.set()

    assert zk.exists(p, watch=w) is not None
    other.stop()
    assert ev.wait(10), "no watch event after the ephemeral owner's session closed"
    assert seen == [(EventType.DELETED, p)]
    assert zk.exists(p) is None


def test_container_node(zk, ns):
    """A container node (createContainer) is created with the container
    mode, is a normal parent, and ephemeralOwner is 0."""
    path, st = zkext.create_container(zk, ns + "/cont", b"c")
    assert path == ns + "/cont"
    assert st.ephemeralOwner == 0 and st.dataLength == 1
    zk.create(ns + "/cont/kid")
    assert zk.get_children(ns + "/cont") == ["kid"]
    with pytest.raises(NodeExistsError):
        zkext.create_container(zk, ns + "/cont")


def test_ttl_node(zk, ns):
    """TTL nodes (createTTL, extended types enabled): persistent and
    sequential variants.  Measured on Apache 3.8: the Stat of a TTL node
    (in the Create2 reply and from exists) shows ephemeralOwner == 0."""
    path, st = zkext.create_ttl(zk, ns + "/ttl", b"t", ttl=600000)
    assert path == ns + "/ttl"
    assert zk.get(ns + "/ttl")[0] == b"t"
    path2, st2 = zkext.create_ttl(zk, ns + "/ttls-", b"", ttl=600000, sequence=True)
    assert path2 == ns + "/ttls-0000000001"
    assert st.ephemeralOwner == 0 and st2.ephemeralOwner == 0
    assert zk.exists(ns + "/ttl").ephemeralOwner == 0


def test_makepath(zk, ns):
    """create(makepath=True) creates all missing parents (empty data)."""
    assert zk.create(ns + "/a/b/c", b"deep", makepath=True) == ns + "/a/b/c"
    assert zk.get(ns + "/a")[0] == b""
    assert zk.get(ns + "/a/b/c")[0] == b"deep"
    zk.ensure_path(ns + "/a/b/c")  # idempotent


def test_set_and_versions(zk, ns):
    """set bumps version and mzxid; a wrong expected version raises
    BadVersionError for set and delete and changes nothing."""
    p = ns + "/v"
    zk.create(p, b"0")
    st1 = zk.set(p, b"1")
    assert st1.version == 1
    st2 = zk.set(p, b"22", version=1)
    assert st2.version == 2 and st2.dataLength == 2 and st2.mzxid > st1.mzxid
    assert st2.czxid == st1.czxid
    with pytest.raises(BadVersionError):
        zk.set(p, b"x", version=1)
    with pytest.raises(BadVersionError):
        zk.delete(p, version=5)
    assert zk.get(p)[0] == b"22"
    zk.delete(p, version=2)
    assert zk.exists(p) is None


def test_children_and_delete(zk, ns):
    """get_children (incl. include_data), NotEmptyError, recursive delete."""
    zk.create(ns + "/p")
    for n in ("c", "a", "b"):
        zk.create(ns + "/p/" + n, n.encode())
    assert sorted(zk.get_children(ns + "/p")) == ["a", "b", "c"]
    kids, st = zk.get_children(ns + "/p", include_data=True)
    assert sorted(kids) == ["a", "b", "c"]
    assert st.numChildren == 3 and st.cversion == 3
    with pytest.raises(NotEmptyError):
        zk.delete(ns + "/p")
    zk.create(ns + "/p/a/deep")
    zk.delete(ns + "/p", recursive=True)  # kazoo 2.11 returns None here
    assert zk.exists(ns + "/p") is None
    assert zk.get_children(ns) == []


def test_empty_and_large_data(zk, ns):
    """Empty data and a 512 KiB payload round-trip byte for byte."""
    zk.create(ns + "/e", b"")
    assert zk.get(ns + "/e")[0] == b""
    big = bytes(range(256)) * 2048
    zk.create(ns + "/big", big)
    data, st = zk.get(ns + "/big")
    assert data == big and st.dataLength == len(big)


def test_transaction_success(zk, ns):
    """A committed transaction returns per-op results: created path, True
    for delete and check, a ZnodeStat for set_data; all ops share one zxid."""
    zk.create(ns + "/old", b"o")
    t = zk.transaction()
    t.create(ns + "/t1", b"1")
    t.create(ns + "/s-", b"", sequence=True)
    t.set_data(ns + "/old", b"new", version=0)
    t.check(ns + "/old", 1)
    t.delete(ns + "/t1")
    res = t.commit()
    assert res[0] == ns + "/t1"
    assert res[1] == ns + "/s-0000000002"
    assert res[2].version == 1 and res[2].dataLength == 3
    assert res[3] is True and res[4] is True
    assert zk.exists(ns + "/t1") is None
    st_s = zk.exists(ns + "/s-0000000002")
    assert st_s.czxid == res[2].mzxid


def test_transaction_failure(zk, ns):
    """A failing transaction changes nothing; kazoo's result list holds
    RolledBackError for ops before the failing one, the failing op's own
    error, and RuntimeInconsistency for ops after it."""
    zk.create(ns + "/x", b"x")
    before = zk.exists(ns)
    t = zk.transaction()
    t.create(ns + "/new", b"")
    t.set_data(ns + "/x", b"y", version=3)  # fails: BadVersion
    t.delete(ns + "/x")
    res = t.commit()
    assert [type(r) for r in res] == [RolledBackError, BadVersionError, RuntimeInconsistency]
    assert zk.exists(ns + "/new") is None
    assert zk.get(ns + "/x")[0] == b"x"
    assert zk.exists(ns) == before
    t = zk.transaction()
    t.check(ns + "/missing", 0)
    res = t.commit()
    assert [type(r) for r in res] == [NoNodeError]


def test_acls_digest_and_auth(client_factory, ns, zk):
    """Digest ACLs: without auth NoAuthError on read/write; with the right
    add_auth access works; get_acls returns the ACL and its stat (aversion
    bumps on set_acls)."""
    acl = make_digest_acl("user", "pw", all=True)
    zk.create(ns + "/secret", b"s", acl=[acl])
    with pytest.raises(NoAuthError):  # getACL needs READ or ADMIN (3.8)
        zk.get_acls(ns + "/secret")
    authed = client_factory(auth_data=[("digest", "user:pw")])
    catch_up(authed)
    acls, st = authed.get_acls(ns + "/secret")
    assert acls == [acl]
    assert acls[0].id.id == "user:" + base64.b64encode(
        hashlib.sha1(b"user:pw").digest()).decode()
    assert acls[0].perms == Permissions.ALL
    assert st.aversion == 0
    with pytest.raises(NoAuthError):
        zk.get(ns + "/secret")
    with pytest.raises(NoAuthError):
        zk.set(ns + "/secret", b"x")
    assert authed.get(ns + "/secret")[0] == b"s"
    other = client_factory()
    other.add_auth("digest", "user:wrong")
    catch_up(other)
    with pytest.raises(NoAuthError):
        other.get(ns + "/secret")
    read_only = ACL(Permissions.READ, Id("world", "anyone"))
    st2 = authed.set_acls(ns + "/secret", [acl, read_only])
    assert st2.aversion == 1
    catch_up(zk)
    assert zk.get(ns + "/secret")[0] == b"s"
    with pytest.raises(NoAuthError):
        zk.set(ns + "/secret", b"x")
    with pytest.raises(BadVersionError):
        authed.set_acls(ns + "/secret", OPEN_ACL_UNSAFE, version=0)


def test_sync(zk, ns):
    """sync returns the (unchrooted) path."""
    assert zk.sync(ns) == ns


def test_one_shot_watches(client_factory, ns, zk):
    """One-shot watches: data watch fires once with CHANGED, children watch
    with CHILD on the parent path, exists watch on a missing node with
    CREATED; after firing they are gone (no second event)."""
    other = client_factory()
    events = []
    lock = threading.Lock()

    def w(ev):
        with lock:
            events.append((ev.type, ev.path))

    p = ns + "/w"
    assert zk.exists(p, watch=w) is None
    other.create(p, b"1")
    wait_for(lambda: len(events) >= 1, msg="CREATED event")
    zk.get(p, watch=w)
    zk.get_children(ns, watch=w)
    other.set(p, b"2")
    other.set(p, b"3")  # watch already consumed: no event
    other.create(ns + "/w2")
    other.create(ns + "/w3")  # child watch consumed
    zk.sync(ns)
    time.sleep(0.3)
    with lock:
        assert events == [(EventType.CREATED, p), (EventType.CHANGED, p),
                          (EventType.CHILD, ns)]
    zk.get(p, watch=w)
    zk.get_children(p, watch=w)
    other.delete(p)
    wait_for(lambda: len(events) >= 5, msg="DELETED events")
    time.sleep(0.2)
    # kazoo calls the data watcher and the child watcher for one NodeDeleted
    assert events[3:] == [(EventType.DELETED, p), (EventType.DELETED, p)]


def test_data_and_children_watch_helpers(client_factory, ns, zk):
    """DataWatch/ChildrenWatch re-arm and see every change (with stats)."""
    other = client_factory()
    p = ns + "/dw"
    datas = []
    kids = []
    zk.DataWatch(p, lambda data, stat: datas.append((data, stat.version if stat else None)))
    zk.ChildrenWatch(ns, lambda c: kids.append(sorted(c)))
    wait_for(lambda: datas and kids, msg="initial DataWatch/ChildrenWatch calls")
    other.create(p, b"a")
    wait_for(lambda: (b"a", 0) in datas, msg="DataWatch create")
    other.set(p, b"b")
    wait_for(lambda: (b"b", 1) in datas, msg="DataWatch set")
    other.delete(p)
    wait_for(lambda: datas[-1] == (None, None), msg="DataWatch delete")
    assert datas[0] == (None, None)
    wait_for(lambda: kids[-1] == [], msg="ChildrenWatch")
    assert ["dw"] in kids


def test_watch_event_order_in_multi(client_factory, ns, zk):
    """One multi that creates two children and changes a watched node: the
    watcher session receives the data event and a single child event."""
    other = client_factory()
    zk.create(ns + "/d", b"0")
    c = client_factory.unstarted()
    raw = zkext.record_raw_events(c)
    client_factory.start(c)
    try:
        catch_up(c)
        c.get(ns + "/d", watch=lambda e: None)
        c.get_children(ns, watch=lambda e: None)
        t = other.transaction()
        t.create(ns + "/k1")
        t.set_data(ns + "/d", b"1")
        t.create(ns + "/k2")
        t.commit()
        catch_up(c)
        c.exists("/")
        assert [(e[0], e[2]) for e in raw] == [("CHILD", ns), ("CHANGED", ns + "/d")]
    finally:
        c.stop()
        c.close()


def test_session_reconnect_keeps_session(zk, ns, client_factory):
    """Reconnecting with the same session id and password (a second client
    object) resumes the session: ephemerals stay owned by it."""
    first = client_factory()
    sid, pwd = first.client_id
    p = first.create(ns + "/mine", ephemeral=True)
    second = client_factory(client_id=(sid, pwd))
    assert second.client_id[0] == sid
    catch_up(second, zk)
    assert second.exists(p).ephemeralOwner == sid
    assert zk.exists(p) is not None


def test_connection_states(client_factory):
    """A started client is CONNECTED; stop() goes to LOST and closes the
    session (its ephemerals go away)."""
    states = []
    c = client_factory()
    c.add_listener(states.append)
    assert c.state == KazooState.CONNECTED
    c.stop()
    assert states and states[-1] == KazooState.LOST
