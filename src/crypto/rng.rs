//! Randomness: the operating system's generator for keys, and a userspace ChaCha20 generator
//! for nonces and epochs.
//!
//! Sealing a value must not cost a system call, so nonces come from `ChaCha20Rng` seeded from the
//! operating system and reseeded after [`RESEED_INTERVAL`] outputs. Keys (company key, data keys)
//! always come straight from the operating system.
//!
//! Limits: the generator state lives in process memory and is not zeroized on drop (rand_chacha
//! does not offer it); a process that forks would share the state with its child, and tdsguard
//! does not fork.

use rand::rngs::OsRng;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use crate::crypto::error::CryptoError;

/// Outputs drawn from one seed before the generator is reseeded from the operating system.
/// ChaCha20 as a generator is sound for far longer; reseeding bounds how much output a single
/// leaked state would expose, at one system call per 2^20 values.
pub const RESEED_INTERVAL: u32 = 1 << 20;

/// Fill `out` from the operating system's generator.
pub fn os_fill(out: &mut [u8]) -> Result<(), CryptoError> {
    OsRng.try_fill_bytes(out).map_err(CryptoError::Random)
}

/// A ChaCha20 generator seeded from the operating system and reseeded periodically.
pub struct NonceSource {
    rng: ChaCha20Rng,
    until_reseed: u32,
}

impl NonceSource {
    /// A generator with a fresh seed from the operating system.
    pub fn new() -> Result<Self, CryptoError> {
        Ok(Self {
            rng: seeded()?,
            until_reseed: RESEED_INTERVAL,
        })
    }

    /// A fresh 96-bit nonce.
    pub fn nonce(&mut self) -> Result<[u8; 12], CryptoError> {
        self.count()?;

        let mut nonce = [0u8; 12];
        self.rng.fill_bytes(&mut nonce);
        Ok(nonce)
    }

    /// A fresh random 32-bit value (used for sub-key epochs).
    pub fn next_u32(&mut self) -> Result<u32, CryptoError> {
        self.count()?;
        Ok(self.rng.next_u32())
    }

    fn count(&mut self) -> Result<(), CryptoError> {
        if self.until_reseed == 0 {
            self.rng = seeded()?;
            self.until_reseed = RESEED_INTERVAL;
        }
        self.until_reseed -= 1;
        Ok(())
    }
}

fn seeded() -> Result<ChaCha20Rng, CryptoError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    os_fill(seed.as_mut())?;
    Ok(ChaCha20Rng::from_seed(*seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_differ_and_reseed_resets_the_counter() {
        let mut source = NonceSource::new().unwrap();
        let a = source.nonce().unwrap();
        let b = source.nonce().unwrap();
        assert_ne!(a, b);
        assert_eq!(source.until_reseed, RESEED_INTERVAL - 2);

        source.until_reseed = 0;
        source.nonce().unwrap();
        assert_eq!(source.until_reseed, RESEED_INTERVAL - 1);
    }

    #[test]
    fn two_sources_are_seeded_independently() {
        let mut a = NonceSource::new().unwrap();
        let mut b = NonceSource::new().unwrap();
        assert_ne!(a.nonce().unwrap(), b.nonce().unwrap());
    }
}
