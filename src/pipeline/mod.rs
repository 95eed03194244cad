//! The request pipeline between the wire and the tree, as pure state
//! machines: `Sequencer` (one per process, on the peer core) turns writes into
//! txns through `Prep` and owns sessions; `Shard` (one per core) owns client
//! connections, a DataTree replica and the watches, answers reads locally and
//! applies the committed stream, producing reply and event frames. The runtime
//! moves messages between them and performs I/O; nothing here does.

pub mod auth;
pub mod latest;
pub mod prep;
pub mod sequencer;
pub mod shard;

pub use sequencer::{Sequencer, SequencerConfig};
pub use shard::{Shard, ShardConfig, ShardOutput};

use std::sync::Arc;

use crate::proto::{Id, Request};
use crate::txn::Txn;

/// The two clocks the runtime reads for the sequencer, at one instant. As in
/// ZooKeeper (Time.currentElapsedTime and currentWallTime), everything that
/// times something (session expiry, the container check's interval) uses the
/// elapsed clock, which never steps; only what users see (a txn's time, a
/// znode's ctime and mtime, the TTL and container age compared with them) and
/// the seed of session ids use the wall clock, which NTP may step either way.
/// A wall step therefore neither delays nor hastens an expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a monotonic clock from an arbitrary origin: only
    /// differences mean anything.
    pub elapsed_ms: i64,
    /// Milliseconds since the Unix epoch.
    pub wall_ms: i64,
}

impl Now {
    /// The elapsed clock as `zab::peer::Peer` takes it: the peer only times
    /// things, so it never sees the wall clock.
    pub fn elapsed_u64(self) -> u64 {
        self.elapsed_ms.max(0) as u64
    }
}

/// A connection, unique within the process: the shard index in the top 16 bits.
pub type ConnectionId = u64;

pub fn shard_of(connection: ConnectionId) -> usize {
    (connection >> 48) as usize
}

/// Where a request came from, so its reply finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The server (`myid`; 0 standalone) whose connection sent it: in an
    /// ensemble the leader sequences learners' requests, and the reply goes
    /// back to the server that owns the connection.
    pub server: u64,
    pub connection: ConnectionId,
    pub xid: i32,
    pub opcode: i32,
}

/// A proposal's payload in an ensemble: the txn, and which connection asked
/// for it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub txn: Arc<Txn>,
    pub origin: Option<Origin>,
}

/// The committed log for DIFF that `zab::peer::Peer::start_looking` takes,
/// from the txns a reload replayed from the log (oldest first). They come
/// from disk, so no connection waits for their replies: no origin.
pub fn replayed_history(txns: impl IntoIterator<Item = Txn>) -> Vec<(i64, Entry)> {
    txns.into_iter().map(|txn| (txn.zxid, Entry { txn: Arc::new(txn), origin: None })).collect()
}

/// Shard -> sequencer.
#[derive(Debug)]
pub enum ToSequencer {
    /// `auth` is the connection's ids, shared: cloning it per request is a
    /// reference count, not a list of strings.
    Write { origin: Origin, session_id: i64, request: Request, auth: Arc<[Id]> },
    /// `sync`: answered once everything before it has been applied on the shard.
    Sync { origin: Origin, path: String },
    CreateSession { origin: Origin, timeout_ms: i32 },
    /// A client reconnecting with an existing session id and the right password.
    Revalidate { origin: Origin, session_id: i64, timeout_ms: i32 },
    /// Sessions active on a shard since its last report (ZooKeeper's learner PING).
    Touch { session_ids: Vec<i64> },
}

impl ToSequencer {
    /// A learner's forwarded request names its own server; the leader trusts
    /// the link it came on, not the bytes.
    pub fn from_server(self, server: u64) -> ToSequencer {
        match self {
            ToSequencer::Write { mut origin, session_id, request, auth } => {
                origin.server = server;
                ToSequencer::Write { origin, session_id, request, auth }
            }
            ToSequencer::Sync { mut origin, path } => {
                origin.server = server;
                ToSequencer::Sync { origin, path }
            }
            ToSequencer::CreateSession { mut origin, timeout_ms } => {
                origin.server = server;
                ToSequencer::CreateSession { origin, timeout_ms }
            }
            ToSequencer::Revalidate { mut origin, session_id, timeout_ms } => {
                origin.server = server;
                ToSequencer::Revalidate { origin, session_id, timeout_ms }
            }
            touch @ ToSequencer::Touch { .. } => touch,
        }
    }
}

/// Sequencer -> shards: the committed stream, in zxid order.
#[derive(Debug, Clone)]
pub enum Committed {
    Txn { txn: Arc<Txn>, origin: Option<Origin> },
    SyncDone { origin: Origin, path: String },
    Revalidated { origin: Origin, session_id: i64, timeout_ms: i32, valid: bool },
    /// The write could not be made durable (the log failed): answer with an
    /// error, never with success.
    Failed { origin: Origin, err: crate::proto::ErrorCode },
    /// The server left its role (ensemble): close every client connection,
    /// forget their watches, and continue from this tree (rebuilt from the
    /// log, or a snapshot received from the leader).
    Reset { tree: Arc<crate::tree::DataTree> },
    /// The secret session passwords derive from (an ensemble shares the
    /// leader's, so a session can move between servers).
    Secret(u64),
}

impl Committed {
    /// Items only the origin's shard needs; txns and revalidations go to every shard.
    /// The server whose connection an answer is for (None: every server's).
    pub fn reply_server(&self) -> Option<u64> {
        match self {
            Committed::SyncDone { origin, .. } | Committed::Revalidated { origin, .. } | Committed::Failed { origin, .. } => {
                Some(origin.server)
            }
            _ => None,
        }
    }

    pub fn only_for_shard(&self) -> Option<usize> {
        match self {
            Committed::SyncDone { origin, .. } | Committed::Failed { origin, .. } => Some(shard_of(origin.connection)),
            _ => None,
        }
    }
}
