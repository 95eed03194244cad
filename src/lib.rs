//! warden: a ZooKeeper-compatible coordination service. See docs/ARCHITECTURE.md.

pub mod config;
pub mod pipeline;
pub mod proto;
pub mod session;
pub mod tree;
pub mod txn;
pub mod watch;
