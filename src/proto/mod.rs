//! The ZooKeeper client wire protocol: jute primitives, records, opcodes and
//! error codes, and length-prefixed framing. Pure: no I/O, no clock.

pub mod codes;
pub mod frame;
pub mod jute;
pub mod records;

pub use codes::{op, ErrorCode};
pub use jute::{DecodeError, Jute, Reader, Writer};
pub use records::*;
