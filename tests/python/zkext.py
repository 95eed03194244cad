"""Small extensions to kazoo 2.11 used by the suites.

kazoo 2.11 has no API for container nodes (opcode 19, createContainer) nor
TTL nodes (opcode 21, createTTL), so these are sent here as raw protocol
requests through kazoo's own connection.  Also: a hook that records every
watch event exactly as the server sent it (before kazoo filters it through
its client-side watcher tables).
"""

from collections import namedtuple

from kazoo.protocol.serialization import (
    Watch, ZnodeStat, int_struct, long_struct, read_string, stat_struct,
    write_buffer, write_string,
)
from kazoo.protocol.states import EVENT_TYPE_MAP
from kazoo.security import OPEN_ACL_UNSAFE

# CreateMode flag values (org.apache.zookeeper.CreateMode)
PERSISTENT = 0
EPHEMERAL = 1
PERSISTENT_SEQUENTIAL = 2
EPHEMERAL_SEQUENTIAL = 3
CONTAINER = 4
PERSISTENT_WITH_TTL = 5
PERSISTENT_SEQUENTIAL_WITH_TTL = 6


def _ser_create(path, data, acl, flags):
    b = bytearray()
    b.extend(write_string(path))
    b.extend(write_buffer(data))
    b.extend(int_struct.pack(len(acl)))
    for a in acl:
        b.extend(int_struct.pack(a.perms) + write_string(a.id.scheme) + write_string(a.id.id))
    b.extend(int_struct.pack(flags))
    return b


def _deser_create2(buf, offset):
    path, offset = read_string(buf, offset)
    stat = ZnodeStat._make(stat_struct.unpack_from(buf, offset))
    return path, stat


class CreateContainer(namedtuple("CreateContainer", "path data acl flags")):
    """createContainer (opcode 19); reply is a Create2Response (path, stat)."""
    type = 19

    def serialize(self):
        return _ser_create(self.path, self.data, self.acl, self.flags)

    @classmethod
    def deserialize(cls, buf, offset):
        return _deser_create2(buf, offset)


class CreateTTL(namedtuple("CreateTTL", "path data acl flags ttl")):
    """createTTL (opcode 21): CreateTTLRequest = create fields + long ttl."""
    type = 21

    def serialize(self):
        b = _ser_create(self.path, self.data, self.acl, self.flags)
        b.extend(long_struct.pack(self.ttl))
        return b

    @classmethod
    def deserialize(cls, buf, offset):
        return _deser_create2(buf, offset)


def create_container(client, path, value=b"", acl=None, timeout=15):
    """Create a container node; returns (path, ZnodeStat) or raises the
    kazoo exception of the server's error code."""
    r = client.handler.async_result()
    client._call(CreateContainer(path, value, list(acl or OPEN_ACL_UNSAFE), CONTAINER), r)
    return r.get(timeout=timeout)


def create_ttl(client, path, value=b"", ttl=3600000, sequence=False, acl=None, timeout=15):
    """Create a TTL node (ttl in ms); returns (path, ZnodeStat)."""
    flags = PERSISTENT_SEQUENTIAL_WITH_TTL if sequence else PERSISTENT_WITH_TTL
    r = client.handler.async_result()
    client._call(CreateTTL(path, value, list(acl or OPEN_ACL_UNSAFE), flags, ttl), r)
    return r.get(timeout=timeout)


def record_raw_events(client):
    """Install (before start) a hook on `client` that appends every watch
    notification the server sends as (type, state, path) to the returned
    list.  It runs in kazoo's reader thread, so an event is recorded before
    any reply that the server sent after it is handed to the caller."""
    events = []
    conn = client._connection
    orig = conn._read_watch_event

    def hook(buffer, offset):
        w, _ = Watch.deserialize(buffer, offset)
        events.append((EVENT_TYPE_MAP.get(w.type, w.type), w.state, w.path))
        return orig(buffer, offset)

    conn._read_watch_event = hook
    return events
