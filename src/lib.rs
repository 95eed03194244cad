//! warden: a ZooKeeper-compatible coordination service. See docs/ARCHITECTURE.md.

pub mod proto;
pub mod tree;
pub mod txn;
pub mod watch;
