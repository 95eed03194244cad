//! SessionTracker: live sessions, their negotiated timeouts and their expiry,
//! bucketed by tick as ZooKeeper's ExpiryQueue does: a session touched at `now`
//! expires at the first tick boundary after `now + timeout`, so one check per
//! tick finds every expired session without scanning them all. Also session id
//! allocation and passwords. Pure: `now` is always an argument, and it is the
//! elapsed (monotonic) clock, never the wall clock, so that an NTP step
//! neither delays nor hastens an expiry (ZooKeeper's ExpiryQueue runs on
//! Time.currentElapsedTime too).

use std::collections::BTreeMap;

use hashbrown::{HashMap, HashSet};

use crate::rng::Rng;

/// Expiry bucketed at tick granularity (ZooKeeper's ExpiryQueue).
pub struct ExpiryQueue {
    interval_ms: i64,
    expiry_by_item: HashMap<i64, i64>,
    buckets: BTreeMap<i64, HashSet<i64>>,
}

impl ExpiryQueue {
    pub fn new(interval_ms: i64) -> ExpiryQueue {
        assert!(interval_ms > 0);
        ExpiryQueue { interval_ms, expiry_by_item: HashMap::new(), buckets: BTreeMap::new() }
    }

    fn round_up(&self, time_ms: i64) -> i64 {
        (time_ms / self.interval_ms + 1) * self.interval_ms
    }

    /// Moves `item` to the bucket for `now + timeout`; returns its expiry time.
    pub fn update(&mut self, item: i64, now_ms: i64, timeout_ms: i64) -> i64 {
        let expiry = self.round_up(now_ms + timeout_ms);
        let previous = self.expiry_by_item.insert(item, expiry);
        if previous == Some(expiry) {
            return expiry;
        }
        if let Some(previous) = previous {
            self.remove_from_bucket(item, previous);
        }
        self.buckets.entry(expiry).or_default().insert(item);
        expiry
    }

    fn remove_from_bucket(&mut self, item: i64, expiry: i64) {
        if let Some(bucket) = self.buckets.get_mut(&expiry) {
            bucket.remove(&item);
            if bucket.is_empty() {
                self.buckets.remove(&expiry);
            }
        }
    }

    pub fn remove(&mut self, item: i64) {
        if let Some(expiry) = self.expiry_by_item.remove(&item) {
            self.remove_from_bucket(item, expiry);
        }
    }

    /// Removes and returns every item whose bucket time is at or before `now`.
    pub fn poll(&mut self, now_ms: i64) -> Vec<i64> {
        let mut expired = Vec::new();
        while let Some((&expiry, _)) = self.buckets.first_key_value() {
            if expiry > now_ms {
                break;
            }
            let bucket = self.buckets.remove(&expiry).unwrap_or_default();
            for item in bucket {
                self.expiry_by_item.remove(&item);
                expired.push(item);
            }
        }
        expired.sort_unstable();
        expired
    }

    pub fn len(&self) -> usize {
        self.expiry_by_item.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expiry_by_item.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    pub timeout_ms: i32,
    /// Set once a closeSession txn is on its way: the session takes no new requests.
    pub closing: bool,
}

pub struct SessionTracker {
    sessions: HashMap<i64, SessionState>,
    expiry: ExpiryQueue,
    next_session_id: i64,
    password_secret: u64,
}

impl SessionTracker {
    /// `server_id` goes in the top byte of session ids and `start_ms` seeds the
    /// rest, as ZooKeeper's initializeNextSessionId does, so ids differ across
    /// restarts and servers. `start_ms` is the wall clock: an elapsed clock
    /// starts over with the process and would repeat a previous run's ids.
    pub fn new(tick_ms: i64, server_id: u8, start_ms: i64, password_secret: u64) -> SessionTracker {
        let mut next_session_id = ((start_ms << 24) as u64 >> 8) as i64 | ((server_id as i64) << 56);
        if next_session_id == i64::MIN {
            next_session_id += 1;
        }
        SessionTracker { sessions: HashMap::new(), expiry: ExpiryQueue::new(tick_ms), next_session_id, password_secret }
    }

    pub fn create(&mut self, timeout_ms: i32, now_ms: i64) -> i64 {
        let mut session_id = self.next_session_id;
        while self.sessions.contains_key(&session_id) || session_id == 0 {
            session_id += 1;
        }
        self.next_session_id = session_id + 1;
        self.track(session_id, timeout_ms, now_ms);
        session_id
    }

    /// Starts tracking a session created elsewhere (or restored on recovery).
    pub fn track(&mut self, session_id: i64, timeout_ms: i32, now_ms: i64) {
        self.sessions.insert(session_id, SessionState { timeout_ms, closing: false });
        self.expiry.update(session_id, now_ms, timeout_ms as i64);
    }

    /// Extends a live session; false if it is unknown or closing.
    pub fn touch(&mut self, session_id: i64, now_ms: i64) -> bool {
        match self.sessions.get(&session_id) {
            Some(state) if !state.closing => {
                self.expiry.update(session_id, now_ms, state.timeout_ms as i64);
                true
            }
            _ => false,
        }
    }

    pub fn get(&self, session_id: i64) -> Option<SessionState> {
        self.sessions.get(&session_id).copied()
    }

    pub fn is_live(&self, session_id: i64) -> bool {
        self.sessions.get(&session_id).is_some_and(|state| !state.closing)
    }

    pub fn set_closing(&mut self, session_id: i64) {
        if let Some(state) = self.sessions.get_mut(&session_id) {
            state.closing = true;
        }
        self.expiry.remove(session_id);
    }

    pub fn remove(&mut self, session_id: i64) {
        self.sessions.remove(&session_id);
        self.expiry.remove(session_id);
    }

    /// Sessions whose time ran out by `now`; each is marked closing.
    pub fn expire(&mut self, now_ms: i64) -> Vec<i64> {
        let expired = self.expiry.poll(now_ms);
        for session_id in &expired {
            if let Some(state) = self.sessions.get_mut(session_id) {
                state.closing = true;
            }
        }
        expired
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn password(&self, session_id: i64) -> [u8; 16] {
        session_password(session_id, self.password_secret)
    }

    /// Live sessions and the (elapsed-clock) time their bucket expires, for `dump`.
    pub fn expiries(&self) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = self
            .sessions
            .keys()
            .map(|session_id| (*session_id, self.expiry.expiry_by_item.get(session_id).copied().unwrap_or(0)))
            .collect();
        out.sort();
        out
    }
}

/// A session's password: 16 bytes derived from its id and the server secret
/// (ZooKeeper derives them from a Random seeded with id ^ secret). Any shard
/// can check a password without asking the sequencer.
pub fn session_password(session_id: i64, secret: u64) -> [u8; 16] {
    // splitmix64 from id ^ secret: a fixed, well-mixed function of both, the
    // same in every version (a password outlives the server that issued it).
    let mut password = [0u8; 16];
    Rng::from_state((session_id as u64) ^ secret ^ 0x9e37_79b9_7f4a_7c15).fill(&mut password);
    password
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_to_the_next_tick() {
        let mut queue = ExpiryQueue::new(2000);
        assert_eq!(queue.update(1, 1000, 4000), 6000);
        assert_eq!(queue.update(2, 1999, 4000), 6000);
        assert_eq!(queue.update(3, 2000, 4000), 8000);
        assert!(queue.poll(5999).is_empty());
        assert_eq!(queue.poll(6000), vec![1, 2]);
        assert_eq!(queue.poll(100_000), vec![3]);
        assert!(queue.is_empty());
    }

    #[test]
    fn touch_postpones_expiry_and_closing_sessions_cannot_be_touched() {
        let mut tracker = SessionTracker::new(2000, 0, 1_700_000_000_000, 42);
        let session = tracker.create(4000, 0);
        assert!(tracker.touch(session, 3000));
        assert!(tracker.expire(6000).is_empty());
        assert_eq!(tracker.expire(8000), vec![session]);
        assert!(!tracker.is_live(session));
        assert!(!tracker.touch(session, 8001));
        tracker.remove(session);
        assert!(tracker.is_empty());
    }

    #[test]
    fn session_ids_are_unique_with_server_id_in_top_byte() {
        let mut tracker = SessionTracker::new(2000, 3, 1_700_000_000_000, 42);
        let first = tracker.create(4000, 0);
        let second = tracker.create(4000, 0);
        assert_ne!(first, second);
        assert_eq!(first >> 56, 3);
        assert_ne!(tracker.password(first), tracker.password(second));
        assert_eq!(tracker.password(first), session_password(first, 42));
    }

    #[test]
    fn passwords_are_the_same_in_every_version() {
        let first = [0x73, 0xd6, 0xbd, 0x23, 0xaa, 0x5f, 0xb6, 0x89, 0x31, 0x68, 0xe8, 0xb0, 0xff, 0x23, 0xaa, 0x2c];
        assert_eq!(session_password(0x0100_0000_0000_0001, 42), first);
        let second = [0xed, 0x31, 0x19, 0x5c, 0x32, 0x9d, 0x04, 0xb0, 0x68, 0x68, 0xb6, 0x19, 0xec, 0x94, 0x3d, 0xc5];
        assert_eq!(session_password(-1, 0xdead_beef), second);
    }
}
