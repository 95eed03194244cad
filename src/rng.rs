//! The crate's one pseudo-random generator: splitmix64, seeded, no
//! dependencies. The simulator, the fuzzer, the tests, the load generator and
//! the sequencer's snapshot jitter all draw from it, so that a seed replays
//! the same run everywhere.
//!
//! Its output is pinned (see the tests): the simulator's seeds replay the
//! traces they always did, and session passwords (`session::session_password`,
//! a function of the committed secret) must not change across versions.
//! Not cryptographic: a few outputs predict the rest.

/// splitmix64's increment (2^64 / the golden ratio).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
/// XORed into every seed, as the simulator's generator always did (so its seeds keep their traces).
const SEED_SALT: u64 = 0x5eed_0f5e_ed0f;

/// A deterministic generator: the same seed gives the same numbers.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

/// splitmix64's output function: a bijection that mixes every bit into every bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng::from_state(seed ^ SEED_SALT)
    }

    /// The generator whose first output is `mix(state + GAMMA)`, for values
    /// that are specified as splitmix64 from a given state.
    pub fn from_state(state: u64) -> Rng {
        Rng { state }
    }

    /// An independent generator per `(seed, stream, index)`, so that one
    /// iteration of a seeded run can be replayed alone.
    pub fn for_iteration(seed: u64, stream: u64, index: u64) -> Rng {
        // Mixed, so that no two streams are the same sequence shifted.
        Rng::new(mix(seed ^ stream.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ index.wrapping_mul(GAMMA)))
    }

    /// A generator seeded from one draw of this one: drawing from it leaves this one where it is.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// Any `i32`, every bit pattern alike.
    pub fn i32(&mut self) -> i32 {
        self.next_u64() as i32
    }

    /// Any `i64`, every bit pattern alike.
    pub fn i64(&mut self) -> i64 {
        self.next_u64() as i64
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `0..len` (0 when `len` is 0): an index into a slice of `len`.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// True with probability 1 / `n` (always when `n` is 0 or 1).
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// One of `items`, or None (drawing nothing) when there are none.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.index(items.len())])
        }
    }

    /// One of `items`, which must not be empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        self.choose(items).expect("Rng::pick from an empty slice")
    }

    /// Fills `bytes`, eight from each draw, big-endian.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_be_bytes()[..chunk.len()]);
        }
    }

    /// `length` random bytes.
    pub fn bytes(&mut self, length: usize) -> Vec<u8> {
        let mut bytes = vec![0; length];
        self.fill(&mut bytes);
        bytes
    }

    /// Up to `bound - 1` random bytes, of a uniform length.
    pub fn bytes_upto(&mut self, bound: usize) -> Vec<u8> {
        let length = self.index(bound);
        self.bytes(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_is_pinned() {
        // The simulator's generator before it moved here: every seed's trace.
        let mut rng = Rng::new(7);
        assert_eq!([rng.next_u64(), rng.next_u64(), rng.next_u64()], [0x3921_57ed_6163_22b2, 0x2f50_408f_d977_3540, 0x82a7_0232_303b_ce59]);
        let mut rng = Rng::new(0);
        assert_eq!([rng.next_u64(), rng.next_u64(), rng.next_u64()], [0xe1c1_8c03_6e80_1b35, 0xdd06_7977_f1a6_296f, 0x6da6_a42b_5cdc_a430]);
    }

    #[test]
    fn ranges_hold() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            assert!(rng.below(10) < 10);
            assert!(rng.index(3) < 3);
            assert!((5..=9).contains(&rng.between(5, 9)));
            assert!(rng.bytes_upto(5).len() < 5);
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.index(0), 0);
        assert_eq!(rng.between(4, 4), 4);
        assert!(rng.one_in(1) && !rng.chance(0) && rng.chance(1000));
        assert_eq!(rng.choose::<u8>(&[]), None);
        assert_eq!(rng.bytes(13).len(), 13);
    }

    #[test]
    fn streams_and_forks_are_deterministic_and_distinct() {
        let draw = |mut rng: Rng| (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>();
        assert_eq!(draw(Rng::for_iteration(9, 1, 2)), draw(Rng::for_iteration(9, 1, 2)));
        assert_ne!(draw(Rng::for_iteration(9, 1, 2)), draw(Rng::for_iteration(9, 1, 3)));
        assert_ne!(draw(Rng::for_iteration(9, 1, 2)), draw(Rng::for_iteration(9, 2, 2)));
        let mut parent = Rng::new(3);
        let child = parent.fork();
        assert_eq!(draw(child.clone()), draw(Rng::new(3).fork()));
        assert_ne!(draw(child), draw(parent));
    }
}
