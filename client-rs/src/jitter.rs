//! The random numbers behind reconnect jitter: a small xorshift generator
//! per client, seeded once from its runtime. Jitter needs spread between
//! clients, not secrecy, so a few instructions per draw suffice and no
//! dependency is added for it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// xorshift64* (Vigna): a full period over the non-zero `u64`s, and the
/// final multiply scrambles the high bits the delay is scaled by.
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    pub(crate) fn seeded(seed: u64) -> Jitter {
        // Zero is xorshift's one fixed point; spread nearby seeds apart.
        let state = splitmix(seed);
        Jitter {
            state: if state == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                state
            },
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One step of splitmix64: turns counters and similar seeds into
/// well-mixed ones.
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed that differs between clients and between processes, for
/// runtimes without a better source: std's per-process random hash keys
/// (from the OS where there is one), a counter for clients in one process
/// and a stack address.
pub(crate) fn default_seed() -> u64 {
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    CLIENTS.fetch_add(1, Ordering::Relaxed).hash(&mut hasher);
    let here = 0u8;
    (&here as *const u8 as usize).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_fill_the_range_evenly() {
        let mut jitter = Jitter::seeded(1);
        let mut buckets = [0u32; 10];
        let draws = 100_000;
        for _ in 0..draws {
            let share = jitter.next_u64() as f64 / u64::MAX as f64;
            buckets[((share * 10.0) as usize).min(9)] += 1;
        }
        // Each tenth expects 10 000 draws; ±5% is over 15 standard
        // deviations, so only a broken generator misses it.
        for count in buckets {
            assert!((9_500..=10_500).contains(&count), "{buckets:?}");
        }
    }

    #[test]
    fn nearby_seeds_and_seed_zero_give_different_streams() {
        let first = |seed| Jitter::seeded(seed).next_u64();
        assert_ne!(first(0), 0);
        assert_ne!(first(0), first(1));
        assert_ne!(first(1), first(2));
        assert_ne!(default_seed(), default_seed());
    }
}
