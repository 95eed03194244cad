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
/// Committed txns waiting for the snapshot executor's replica. While a large
/// snapshot is written this absorbs the writes that arrive meanwhile; past it
/// the log waits (backpressure) rather than growing.
pub const SNAPSHOTTER_QUEUE_MAX: usize = 1 << 17;
/// Encoded bytes waiting for the log (written or being written); past this the
/// sequencer stops taking requests until a batch is durable.
pub const LOG_PENDING_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A snapshot file is written and flushed this much at a time.
pub const SNAPSHOT_WRITE_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Shards (cores) a process runs; connection ids keep the shard in 16 bits.
pub const SHARDS_MAX: usize = 1024;

const _: () = assert!(CONNECTION_OUTBOUND_BYTES_HIGH < CONNECTION_OUTBOUND_BYTES_MAX);
const _: () = assert!(SHARDS_MAX <= 1 << 16);
