//! Every bound in one place (TigerBeetle style): queues, batches, buffers.
//! Overload means backpressure or a closed connection, never unbounded growth.

/// Messages from one shard waiting for the sequencer; a full queue makes the
/// shard's connections wait before reading more requests.
pub const SHARD_TO_SEQUENCER_QUEUE_MAX: usize = 1024;
/// Committed items waiting for one shard to apply them.
pub const COMMIT_QUEUE_MAX: usize = 4096;
/// Inputs the sequencer handles before it hands the resulting batch to shards.
pub const SEQUENCER_BATCH_MAX: usize = 256;
/// Writes one connection may have in flight before its reader pauses
/// (ZooKeeper bounds outstanding requests with globalOutstandingLimit).
pub const CONNECTION_WRITES_IN_FLIGHT_MAX: usize = 1000;
/// Reads one connection may have parked behind its own writes (or behind
/// commits its shard has not applied yet) before its reader pauses.
pub const CONNECTION_PARKED_READS_MAX: usize = 1000;
/// Bytes queued for one client before it counts as too slow and is dropped.
/// A client that reads nothing cannot hold more memory than this.
pub const CONNECTION_OUTBOUND_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Above this, the connection's own reader pauses until the writer drains.
pub const CONNECTION_OUTBOUND_BYTES_HIGH: usize = 4 * 1024 * 1024;
/// Bytes read from a socket per read call.
pub const SOCKET_READ_BYTES: usize = 64 * 1024;
/// Ops in one multi (each takes at least a 9-byte header on the wire).
pub const MULTI_OPS_MAX: usize = 100_000;
/// Session ids one shard reports in one Touch message.
pub const SESSION_TOUCH_BATCH_MAX: usize = 4096;
/// Containers and TTL nodes removed per container-manager check.
pub const CONTAINER_DELETES_PER_CHECK_MAX: usize = 10_000;
/// Committed txns sent to the snapshot executor's replica in one message:
/// fewer wake-ups of its thread, at the cost of the replica lagging by up to
/// this many txns until a snapshot is asked for.
pub const SNAPSHOTTER_TXNS_PER_SEND: usize = 256;
/// Committed txns held on core 0 for the snapshot executor before the
/// delivery waits for the feeder to send them.
pub const SNAPSHOTTER_TXNS_PENDING_MAX: usize = 4 * SNAPSHOTTER_TXNS_PER_SEND;
/// Messages (batches of txns) waiting for the snapshot executor's replica.
/// While a snapshot is written the replica applies nothing, so this absorbs
/// the writes that arrive meanwhile: 2^20 txns, about 11 s of create-heavy
/// (a 1.3M-znode snapshot takes about 2 s; with 2^17 the writes stalled for
/// up to 1.7 s behind it). Past it the log waits (backpressure).
pub const SNAPSHOTTER_QUEUE_MAX: usize = (1 << 20) / SNAPSHOTTER_TXNS_PER_SEND;
/// What the txns waiting for the snapshot executor may hold in memory
/// (`Txn::memory_bytes`): the feeder waits past it, so large values cannot
/// make `SNAPSHOTTER_QUEUE_MAX` batches a memory hazard.
pub const SNAPSHOTTER_BACKLOG_BYTES_MAX: usize = 256 * 1024 * 1024;
const _: () = assert!(SNAPSHOTTER_TXNS_PER_SEND <= SNAPSHOTTER_TXNS_PENDING_MAX);
/// Encoded bytes waiting for the log (written or being written); past this the
/// sequencer stops taking requests until a batch is durable.
pub const LOG_PENDING_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Log batches written whose fdatasync may still be running: the next batch
/// is written while earlier ones sync (they complete faster overlapped).
pub const LOG_SYNCS_IN_FLIGHT_MAX: usize = 4;

/// The log writer keeps this much of its segment ahead of the last batch
/// written with zeros (`LogWriter`), in chunks of `LOG_ZERO_FILL_CHUNK_BYTES`
/// (small for the reason snapshot chunks are). A batch then overwrites
/// blocks already written, so its fdatasync needs no journal commit; into
/// merely preallocated (unwritten) blocks every fdatasync commits the
/// filesystem's journal, and waits for whatever other processes put in it.
/// The chunk's own conversion is committed by the next batch's sync (a sync
/// of its own per chunk cost 16 % of create-heavy's throughput). Only after
/// batches of at most `LOG_ZERO_FILL_BATCH_MAX_BYTES`: a busier log shares
/// each commit among many txns, and zeros would only add writes.
pub const LOG_ZERO_AHEAD_BYTES: u64 = 2 * 1024 * 1024;
pub const LOG_ZERO_FILL_CHUNK_BYTES: u64 = 256 * 1024;
pub const LOG_ZERO_FILL_BATCH_MAX_BYTES: u64 = 64 * 1024;
const _: () = assert!(LOG_ZERO_AHEAD_BYTES % LOG_ZERO_FILL_CHUNK_BYTES == 0 && LOG_ZERO_FILL_CHUNK_BYTES % 4096 == 0);

/// A snapshot file is written and flushed this much at a time. Each flush is
/// device work a log fdatasync may queue behind: 4 MiB chunks put p99 write
/// latency at about 10 ms while a 1M-znode snapshot was written (1 ms
/// without snapshots); 256 KiB chunks at about 3 ms, and the snapshot is
/// written no slower (`perf/ab.sh` with PREFILL/SNAP; see the commit).
pub const SNAPSHOT_WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// The largest frame on the quorum port (a proposal, a forwarded request, a
/// snapshot chunk). A longer declared length closes the link before anything
/// is buffered, and the sender refuses to encode one. A forwarded request is a
/// client frame (at most `jute.maxbuffer`, 1 MiB by default) plus a few
/// headers, so this leaves room for a raised `jute.maxbuffer`.
pub const PEER_FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The largest frame on the election port: a notification is about 50 bytes,
/// so a stranger cannot make an election connection buffer more than this.
pub const ELECTION_FRAME_BYTES_MAX: usize = 1024;
/// A snapshot travels to a learner in pieces of at most this many bytes, so
/// that no frame holds a whole snapshot and proposals can follow it closely.
pub const SNAP_CHUNK_BYTES: usize = 1024 * 1024;
/// How often the task that streams a SNAP looks whether the snapshot
/// executor finished encoding it (it takes about a second per million znodes).
pub const SNAP_ENCODE_POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// A snapshot streamed to a learner is fed to its link while at most this
/// many bytes wait for the socket, so its size is not bounded by the link's
/// queue (`PEER_QUEUE_BYTES_MAX`): only the leader's one encoded copy.
pub const SNAP_STREAM_AHEAD_BYTES: usize = 4 * SNAP_CHUNK_BYTES;
/// Notifications waiting on one outbound election link. When full the oldest
/// is dropped: fast leader election re-sends its vote on every timeout, so a
/// lost notification delays an election but never wedges it.
pub const ELECTION_QUEUE_MAX: usize = 64;
/// Encoded bytes waiting on one quorum link, beside the message bound
/// (`zab::broadcast::LEARNER_QUEUE_MAX`): with frames up to
/// `PEER_FRAME_BYTES_MAX`, the message bound alone would let one slow learner
/// hold terabytes. Past either bound a send fails with QueueFull. A snapshot
/// is streamed (`SNAP_STREAM_AHEAD_BYTES`); what is queued behind it (the
/// txns committed meanwhile) counts here.
pub const PEER_QUEUE_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// Quorum-port connections open at once; one more is closed on accept. An
/// ensemble needs one per learner, plus a few replaced ones still closing.
pub const QUORUM_LINKS_MAX: usize = 1024;

/// Shards (cores) a process runs; connection ids keep the shard in 16 bits.
pub const SHARDS_MAX: usize = 1024;

/// Requests forwarded by learners that a leader holds while it cannot
/// propose; past it, the forwarding learner is dropped and re-syncs.
pub const LEADER_HELD_FORWARDS_MAX: usize = 16 * 1024;

/// Committed txns an ensemble member keeps in memory for DIFF (ZooKeeper's
/// commitLogCount, 500 by default): the ones it commits, and after a reload
/// the last ones recovery replayed from its log.
pub const COMMITTED_LOG_MAX: usize = 500;

const _: () = assert!(CONNECTION_OUTBOUND_BYTES_HIGH < CONNECTION_OUTBOUND_BYTES_MAX);
const _: () = assert!(SHARDS_MAX <= 1 << 16);
const _: () = assert!(SNAP_CHUNK_BYTES + 64 <= PEER_FRAME_BYTES_MAX);
const _: () = assert!(PEER_FRAME_BYTES_MAX <= PEER_QUEUE_BYTES_MAX);
const _: () = assert!(SNAP_STREAM_AHEAD_BYTES + PEER_FRAME_BYTES_MAX <= PEER_QUEUE_BYTES_MAX);
const _: () = assert!(PEER_FRAME_BYTES_MAX <= i32::MAX as usize);
const _: () = assert!(ELECTION_FRAME_BYTES_MAX <= PEER_FRAME_BYTES_MAX);
