//! Transactions: what the sequencer decides and every replica applies. A txn is
//! the output of the Prep stage (ZooKeeper's PrepRequestProcessor) and the input
//! of every DataTree's apply; the log will persist exactly this. Failed writes
//! are txns too (`TxnBody::Error`), so errors consume a zxid and are ordered
//! with everything else, as in ZooKeeper.

use std::sync::Arc;

use bytes::Bytes;

use crate::proto::{Acl, ErrorCode};

/// The header every txn carries (ZooKeeper's TxnHeader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub session_id: i64,
    pub cxid: i32,
    pub zxid: i64,
    pub time_ms: i64,
    pub body: TxnBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnBody {
    CreateSession { timeout_ms: i32 },
    CloseSession,
    Create(CreateTxn),
    Delete { path: String },
    SetData { path: String, data: Option<Bytes>, version: i32 },
    SetAcl { path: String, acl: Vec<Acl>, version: i32 },
    /// A version check that passed (ZooKeeper's CheckVersionTxn); it changes nothing.
    Check { path: String },
    /// The ops of a multi; on failure every op is an `Error` (see `MultiTxn`).
    Multi(Vec<TxnBody>),
    Error { err: ErrorCode },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTxn {
    /// create, create2, createContainer or createTTL: decides the reply's shape.
    pub opcode: i32,
    /// Shared: every replica's tree keys the new znode, and lists it among
    /// its parent's children, with this one allocation.
    pub path: Arc<str>,
    pub data: Option<Bytes>,
    /// `tree::shared_open_acl()` for OPEN_ACL_UNSAFE, as Prep and the txn
    /// decoder make it.
    pub acl: Arc<[Acl]>,
    /// The session for ephemerals, `CONTAINER_OWNER` for containers, a TTL
    /// encoding for TTL nodes, 0 otherwise (ZooKeeper's EphemeralType).
    pub ephemeral_owner: i64,
    pub parent_cversion: i32,
}

/// ZooKeeper's EphemeralType encodings of ephemeralOwner.
pub mod ephemeral_owner {
    /// A container's ephemeralOwner: only the high bit set.
    pub const CONTAINER: i64 = i64::MIN;
    const EXTENDED_MASK: i64 = 0xff00_0000_0000_0000u64 as i64;
    const TTL_VALUE_MASK: i64 = 0x0000_00ff_ffff_ffff;
    /// The largest TTL ZooKeeper accepts (40 bits of milliseconds).
    pub const TTL_MS_MAX: i64 = TTL_VALUE_MASK;

    pub fn ttl(ttl_ms: i64) -> i64 {
        EXTENDED_MASK | ttl_ms
    }

    pub fn is_container(owner: i64) -> bool {
        owner == CONTAINER
    }

    /// The TTL of a TTL node, if `owner` encodes one.
    pub fn ttl_ms(owner: i64) -> Option<i64> {
        if owner != CONTAINER && owner & EXTENDED_MASK == EXTENDED_MASK && owner & 0x00ff_ff00_0000_0000 == 0 {
            Some(owner & TTL_VALUE_MASK)
        } else {
            None
        }
    }

    /// Whether `owner` names a session (a real ephemeral).
    pub fn is_session(owner: i64) -> bool {
        owner != 0 && !is_container(owner) && ttl_ms(owner).is_none()
    }
}

impl Txn {
    /// Whether this txn changes the tree or the session set; error txns do not.
    pub fn is_error(&self) -> bool {
        matches!(self.body, TxnBody::Error { .. })
    }
}

impl Txn {
    /// This txn with its znode data copied into buffers of its own. A txn
    /// decoded from a log segment slices the segment's buffer (no copy on the
    /// way in); one kept for long, as the committed log for DIFF is, must not
    /// hold the whole segment in memory with it.
    pub fn detached(&self) -> Txn {
        Txn { session_id: self.session_id, cxid: self.cxid, zxid: self.zxid, time_ms: self.time_ms, body: self.body.detached() }
    }
}

impl Txn {
    /// About how much memory this txn holds alive (its struct, paths, data
    /// and ACLs): what a queue of txns is bounded by.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Txn>() + self.body.heap_bytes()
    }
}

impl TxnBody {
    fn heap_bytes(&self) -> usize {
        let data = |data: &Option<Bytes>| data.as_ref().map_or(0, Bytes::len);
        let acl = |acl: &[Acl]| {
            acl.iter().map(|acl| std::mem::size_of::<Acl>() + acl.id.scheme.len() + acl.id.id.len()).sum::<usize>()
        };
        match self {
            TxnBody::Create(create) => create.path.len() + data(&create.data) + acl(&create.acl),
            TxnBody::SetData { path, data: value, .. } => path.len() + data(value),
            TxnBody::SetAcl { path, acl: list, .. } => path.len() + acl(list),
            TxnBody::Delete { path } | TxnBody::Check { path } => path.len(),
            TxnBody::Multi(bodies) => bodies.iter().map(|body| std::mem::size_of::<TxnBody>() + body.heap_bytes()).sum(),
            TxnBody::CreateSession { .. } | TxnBody::CloseSession | TxnBody::Error { .. } => 0,
        }
    }

    fn detached(&self) -> TxnBody {
        let copy = |data: &Option<Bytes>| data.as_deref().map(Bytes::copy_from_slice);
        match self {
            TxnBody::Create(create) => TxnBody::Create(CreateTxn { data: copy(&create.data), ..create.clone() }),
            TxnBody::SetData { path, data, version } => TxnBody::SetData { path: path.clone(), data: copy(data), version: *version },
            TxnBody::Multi(bodies) => TxnBody::Multi(bodies.iter().map(TxnBody::detached).collect()),
            other => other.clone(),
        }
    }
}
