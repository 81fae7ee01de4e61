//! The envelope cipher as the rewrite layer sees it.
//!
//! [`ValueCipher`] is the seam to `crypto::envelope`: seal a plaintext bound
//! to a column and its plaintext type, open an envelope, and say how long an
//! envelope of a plaintext is (for the `varbinary(n)` declarations). The
//! production implementation is a small adapter over the crypto module's
//! `EnvelopeCipher`: `ColumnRef` gives the four parts of its `ColumnId`,
//! `plaintext_type` is the canonical text its `SqlType::parse` reads back,
//! the two modes map one to one, and `sealed_len` is its `envelope_len`.
//! The adapter should keep one `ValueBinding` per column and type, since
//! building one hashes the names.
//!
//! TODO(tdsguard): after a data key rotation, deterministic lookups must
//! match values sealed under every loaded key (`seal_deterministic_all_keys`
//! in the crypto module): `col = @p` becomes `col IN (@p_k1, @p_k2, ...)`.
//! Until then lookups only find values written under the current key.

use std::fmt;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::EncryptionMode;
use crate::rewrite::column_map::ColumnRef;

/// Why sealing or opening failed. Carries no value bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CipherError {
    #[error("envelope does not open for {column}: {reason}")]
    Open {
        column: String,
        reason: &'static str,
    },
    #[error("cannot seal for {column}: {reason}")]
    Seal {
        column: String,
        reason: &'static str,
    },
}

/// Seals and opens column values.
pub trait ValueCipher: Send + Sync {
    /// Encrypts one non-NULL plaintext (its TDS encoding in the column's
    /// declared type) for `column`, binding `plaintext_type`.
    fn seal(
        &self,
        column: &ColumnRef,
        plaintext_type: &str,
        mode: EncryptionMode,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError>;

    /// Decrypts an envelope read from `column`.
    fn open(
        &self,
        column: &ColumnRef,
        plaintext_type: &str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError>;

    /// Envelope length for a plaintext of `plain_len` bytes.
    fn sealed_len(&self, plain_len: usize) -> usize;
}

/// Bytes an envelope adds to its plaintext in the crypto format: a 22-byte
/// header and a 16-byte tag.
pub const ENVELOPE_OVERHEAD: usize = 38;

const TEST_MAGIC: &[u8; 4] = b"TGT1";

/// A stand-in cipher for tests: the envelope layout and overhead of the
/// real format with a SHA-256 keystream and tag. It hides plaintext from a
/// casual look but is not encryption; it exists so the rewrite layer can be
/// tested without the crypto module.
#[doc(hidden)]
pub struct InsecureTestCipher {
    key: [u8; 32],
    counter: std::sync::atomic::AtomicU64,
}

impl InsecureTestCipher {
    pub fn new(seed: u8) -> Self {
        InsecureTestCipher {
            key: [seed; 32],
            counter: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn keystream(&self, binding: &[u8], nonce: &[u8], len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut block = 0u64;
        while out.len() < len {
            let mut h = Sha256::new();
            h.update(self.key);
            h.update(binding);
            h.update(nonce);
            h.update(block.to_le_bytes());
            out.extend_from_slice(&h.finalize());
            block += 1;
        }
        out.truncate(len);
        out
    }

    fn tag(&self, binding: &[u8], header: &[u8], body: &[u8]) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(b"tag");
        h.update(self.key);
        h.update(binding);
        h.update(header);
        h.update(body);
        let d = h.finalize();
        let mut t = [0u8; 16];
        t.copy_from_slice(&d[..16]);
        t
    }

    fn nonce(&self, binding: &[u8], mode: EncryptionMode, plaintext: &[u8]) -> [u8; 12] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(binding);
        match mode {
            EncryptionMode::Deterministic => h.update(plaintext),
            EncryptionMode::Randomized => {
                let n = self
                    .counter
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                h.update(n.to_le_bytes());
            }
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&h.finalize()[..12]);
        nonce
    }
}

impl fmt::Debug for InsecureTestCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InsecureTestCipher")
    }
}

fn binding_bytes(column: &ColumnRef, plaintext_type: &str) -> Vec<u8> {
    format!("{column}\0{plaintext_type}").into_bytes()
}

impl ValueCipher for InsecureTestCipher {
    fn seal(
        &self,
        column: &ColumnRef,
        plaintext_type: &str,
        mode: EncryptionMode,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let binding = binding_bytes(column, plaintext_type);
        let nonce = self.nonce(&binding, mode, plaintext);
        let mut out = Vec::with_capacity(self.sealed_len(plaintext.len()));
        out.extend_from_slice(TEST_MAGIC);
        out.push(u8::from(mode == EncryptionMode::Deterministic) + 1);
        out.extend_from_slice(&[0u8; 5]);
        out.extend_from_slice(&nonce);
        let stream = self.keystream(&binding, &nonce, plaintext.len());
        out.extend(plaintext.iter().zip(stream).map(|(p, k)| p ^ k));
        let tag = self.tag(&binding, &out[..22], &out[22..]);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn open(
        &self,
        column: &ColumnRef,
        plaintext_type: &str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let fail = |reason| CipherError::Open {
            column: column.to_string(),
            reason,
        };
        if envelope.len() < ENVELOPE_OVERHEAD || !envelope.starts_with(TEST_MAGIC) {
            return Err(fail("not an envelope"));
        }
        let binding = binding_bytes(column, plaintext_type);
        let (front, tag) = envelope.split_at(envelope.len() - 16);
        if self.tag(&binding, &front[..22], &front[22..]) != tag {
            return Err(fail("authentication failed"));
        }
        let stream = self.keystream(&binding, &front[10..22], front.len() - 22);
        Ok(front[22..].iter().zip(stream).map(|(c, k)| c ^ k).collect())
    }

    fn sealed_len(&self, plain_len: usize) -> usize {
        plain_len + ENVELOPE_OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(c: &str) -> ColumnRef {
        ColumnRef {
            database: "clinic".into(),
            schema: "dbo".into(),
            table: "patients".into(),
            column: c.into(),
        }
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let cipher = InsecureTestCipher::new(7);
        let env = cipher
            .seal(
                &col("ssn"),
                "char(11)",
                EncryptionMode::Randomized,
                b"123-45-6789",
            )
            .unwrap();
        assert_eq!(env.len(), cipher.sealed_len(11));
        assert_eq!(
            cipher.open(&col("ssn"), "char(11)", &env).unwrap(),
            b"123-45-6789"
        );
        assert!(cipher.open(&col("name"), "char(11)", &env).is_err());
        assert!(cipher.open(&col("ssn"), "char(12)", &env).is_err());
    }

    #[test]
    fn deterministic_repeats_randomized_does_not() {
        let c = InsecureTestCipher::new(1);
        let seal = |m| c.seal(&col("ssn"), "char(11)", m, b"x").unwrap();
        assert_eq!(
            seal(EncryptionMode::Deterministic),
            seal(EncryptionMode::Deterministic)
        );
        assert_ne!(
            seal(EncryptionMode::Randomized),
            seal(EncryptionMode::Randomized)
        );
    }
}
