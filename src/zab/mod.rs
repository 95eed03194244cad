//! ZAB, as pure state machines: fast leader election (`election`), the
//! broadcast phase with quorum counting (`broadcast`), and the leader's choice
//! of how to bring a learner up to date (`sync`). Each takes `now` and events
//! and returns effects; none does I/O, reads a clock or spawns, so the
//! simulator can drive whole ensembles. `peer` composes them into one
//! server's whole life; `wire` is its frame format; the runtime's
//! `peer_net` and `ensemble` move the bytes.

pub mod broadcast;
pub mod discovery;
pub mod election;
pub mod peer;
pub mod wire;
pub mod sync;

/// A server's id in the ensemble (`server.N` / myid).
pub type ServerId = u64;

/// The epoch part of a zxid: its high 32 bits.
pub fn epoch_of(zxid: i64) -> u32 {
    ((zxid as u64) >> 32) as u32
}

/// The counter part of a zxid: its low 32 bits.
pub fn counter_of(zxid: i64) -> u32 {
    zxid as u64 as u32
}

pub fn make_zxid(epoch: u32, counter: u32) -> i64 {
    (((epoch as u64) << 32) | counter as u64) as i64
}

/// Whether `count` of `voters` is a majority (ZooKeeper's QuorumMaj).
pub fn is_quorum(count: usize, voters: usize) -> bool {
    count * 2 > voters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zxid_parts() {
        let zxid = make_zxid(3, 7);
        assert_eq!((epoch_of(zxid), counter_of(zxid)), (3, 7));
        assert_eq!(zxid, 0x0000_0003_0000_0007);
        assert!(is_quorum(2, 3) && !is_quorum(1, 3) && !is_quorum(2, 4) && is_quorum(3, 5));
    }
}
