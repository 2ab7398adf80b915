//! Seeded randomness.
//!
//! Two kinds, both reproducible from one seed (darknet-spec §0):
//! - ChaCha streams (`rand_chacha`), one per purpose, for host-side draws (weight init, data order,
//!   augmentation). [`stream`] derives a purpose-specific stream from the run seed.
//! - A counter-based hash for per-element draws made on a device (dropout): the value for element
//!   `i` depends only on `(seed, i)`, uses 32-bit integer arithmetic only, and so gives the same
//!   bits in Rust and in WGSL (`shaders-wgsl/dropout.wgsl` implements the same functions).

use rand_chacha::ChaCha8Rng;
use rand::SeedableRng;

/// Purposes of the ChaCha streams; each gets its own stream so that, e.g., changing augmentation
/// does not change the initial weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    WeightInit = 1,
    DataOrder = 2,
    Augment = 3,
    Dropout = 4,
    Synthetic = 5,
}

/// A ChaCha8 stream for `purpose`, derived from the run seed.
pub fn stream(seed: u64, purpose: Purpose) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(purpose as u64);
    rng
}

/// "lowbias32" integer hash (a well-mixed 32-bit finaliser).
#[inline]
pub fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Uniform in [0, 1) with 24 bits, from (seed, index). Exact in f32 on every backend.
#[inline]
pub fn uniform(seed: u64, index: u32) -> f32 {
    let s0 = seed as u32;
    let s1 = (seed >> 32) as u32;
    let h = hash32(index ^ hash32(s0 ^ hash32(s1)));
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Dropout mask bit: element `index` is kept when its uniform draw is ≥ p.
#[inline]
pub fn dropout_keep(seed: u64, index: u32, p: f32) -> bool {
    uniform(seed, index) >= p
}

/// Seed of one dropout layer at one iteration (so the mask changes every step, reproducibly).
pub fn dropout_seed(run_seed: u64, iteration: u64, layer: usize) -> u64 {
    let a = hash32(run_seed as u32 ^ hash32((run_seed >> 32) as u32 ^ Purpose::Dropout as u32));
    let b = hash32(iteration as u32 ^ hash32((iteration >> 32) as u32 ^ a));
    let c = hash32(layer as u32 ^ b);
    ((b as u64) << 32) | c as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u32> = (0..8).map(|_| stream(7, Purpose::WeightInit).random()).collect();
        let mut s = stream(7, Purpose::WeightInit);
        let b: Vec<u32> = (0..8).map(|_| s.random()).collect();
        assert_eq!(a[0], b[0]);
        let c: u32 = stream(7, Purpose::DataOrder).random();
        assert_ne!(b[0], c);
    }

    #[test]
    fn dropout_rate_is_close_to_p() {
        let seed = dropout_seed(42, 3, 5);
        let n = 100_000u32;
        let dropped = (0..n).filter(|&i| !dropout_keep(seed, i, 0.3)).count() as f64 / n as f64;
        assert!((dropped - 0.3).abs() < 0.01, "dropped fraction {dropped}");
        assert_ne!(dropout_seed(42, 3, 5), dropout_seed(42, 4, 5));
    }
}
