//! A fast hasher for the maps of a scan's hot paths (client addresses, the keys of error-log
//! entries): a few instructions per eight bytes instead of SipHash's rounds, seeded at random
//! once per process.

/// A fast multiply-rotate hasher with a per-process random seed (client addresses are chosen
/// by the outside world; the seed and the map's size cap keep collisions from being steered).
#[derive(Debug, Clone, Copy)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        self.0 = h ^ (bytes.len() as u64);
    }

    #[inline]
    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.0 ^= u64::from(b);
    }

    fn finish(&self) -> u64 {
        // A final avalanche so that the low bits (the table index) depend on every input bit.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}

/// Builds [`FastHasher`]s with the process's seed (`HashMap::default()` with this as the
/// hasher type).
#[derive(Debug, Clone, Copy)]
pub struct FastBuild(u64);

impl Default for FastBuild {
    fn default() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        use std::hash::BuildHasher;
        FastBuild(*SEED.get_or_init(|| {
            std::collections::hash_map::RandomState::new().hash_one(0x6f72_6967_696e_u64)
        }))
    }
}

impl std::hash::BuildHasher for FastBuild {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}
