//! On-disk formats, pure: txn records and the transaction log (`log.rs`),
//! snapshots (`snapshot.rs`), and recovery's decisions (`recovery.rs`). Every
//! record is checked on both sides of the disk: encoded with its length, CRC
//! and zxid, and validated again when read. File I/O lives in the runtime.

pub mod log;
pub mod recovery;
pub mod snapshot;
pub mod txn_codec;
