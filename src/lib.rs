//! warden: a ZooKeeper-compatible coordination service. See docs/ARCHITECTURE.md.

pub mod calendar;
pub mod config;
pub mod fourlw;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod pipeline;
pub mod proto;
pub mod rng;
pub mod runtime;
pub mod session;
pub mod sim;
pub mod storage;
pub mod tree;
pub mod txn;
pub mod watch;
pub mod zab;
