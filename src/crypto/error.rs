//! Errors raised by the crypto layer: key files, data keys, the key table and envelopes.
//!
//! Messages never carry key material, plaintext or ciphertext bytes: only paths, key ids,
//! fingerprints (public) and lengths. The key table and stored envelopes come from the database,
//! which is not trusted, so the variants that a database can cause say so in their docs.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::crypto::company_key::Fingerprint;

/// Why a key or envelope operation failed.
#[derive(Debug, Error)]
pub enum CryptoError {
    /// The company key file could not be read or written.
    #[error("company key file {path}: {source}")]
    KeyFileIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `keygen` never overwrites an existing key: losing a company key loses every database
    /// whose data key is wrapped only under it.
    #[error(
        "company key file {path} already exists; choose another path (it is never overwritten)"
    )]
    KeyFileExists { path: PathBuf },

    /// The key file is readable or writable by its group or by others.
    #[error(
        "company key file {path} has mode {mode:03o}, which lets group or others access it; \
         run `chmod 600 {path}` and try again"
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },

    /// The key file is not a PKCS#8 PEM RSA private key tdsguard accepts.
    #[error("company key {origin} is not usable: {reason}")]
    KeyFileFormat {
        origin: String,
        reason: &'static str,
    },

    /// The operating system's random number generator failed.
    #[error("operating system random number generator failed")]
    Random(#[source] rand::Error),

    /// RSA key generation or OAEP encryption failed (a local fault, not the database's).
    #[error("RSA {operation} failed")]
    Rsa { operation: &'static str },

    /// The key table row was wrapped under another company key than the one loaded.
    /// Caused by configuration (wrong key file) or by the database.
    #[error(
        "data key {key_id} is wrapped for company key {wrapped_for}, but the loaded company key \
         is {loaded}"
    )]
    WrongCompanyKey {
        key_id: u32,
        wrapped_for: Fingerprint,
        loaded: Fingerprint,
    },

    /// The wrapped data key's integrity tag does not verify under the loaded company key: the row
    /// was altered in the database or was not written by a holder of this key. No RSA decryption
    /// was attempted.
    #[error("integrity tag of wrapped data key {key_id} does not verify; the key row was altered")]
    WrappedKeyTagMismatch { key_id: u32 },

    /// RSA-OAEP decryption of a wrapped key whose tag verified still failed. Only a holder of the
    /// company key can produce such a row.
    #[error("wrapped data key {key_id} does not decrypt under the company key")]
    UnwrapFailed { key_id: u32 },

    /// A key table value from the database has the wrong shape.
    #[error("key table row: {field} is invalid: {reason}")]
    KeyTableRow {
        field: &'static str,
        reason: &'static str,
    },

    /// A key table name is not a one- or two-part SQL identifier tdsguard accepts.
    #[error("key table name is invalid: {reason}")]
    KeyTableName { reason: &'static str },

    /// A data key id outside 1..=2^31-1 (stored in an SQL `int`).
    #[error("data key id {0} is out of range (1 to 2147483647)")]
    KeyIdOutOfRange(i64),

    /// A column name given for the associated data is not a four-part name tdsguard accepts.
    #[error("column name is invalid: {reason}")]
    ColumnName { reason: &'static str },

    /// A SQL type text tdsguard cannot encrypt or does not understand.
    #[error("SQL type is invalid or not encryptable: {reason}")]
    SqlType { reason: &'static str },

    /// A value is larger than an envelope may carry.
    #[error("plaintext of {length} bytes exceeds the envelope limit of {limit}")]
    PlaintextTooLarge { length: usize, limit: usize },

    /// A stored envelope (from the database) is shorter than its fixed parts.
    #[error("envelope of {length} bytes is shorter than the minimum of {minimum}")]
    EnvelopeTooShort { length: usize, minimum: usize },

    /// A stored envelope names a format version this build does not read.
    #[error("envelope format version {0:#04x} is not supported")]
    EnvelopeVersion(u8),

    /// A stored envelope names an unknown mode.
    #[error("envelope mode {0:#04x} is not known")]
    EnvelopeMode(u8),

    /// A deterministic envelope carries a non-zero epoch (the field is reserved as zero).
    #[error("deterministic envelope carries epoch {0:#010x}; it must be zero")]
    EnvelopeEpoch(u32),

    /// A stored envelope names a data key id that this proxy has not loaded.
    #[error("envelope uses data key {0}, which is not loaded")]
    UnknownDataKey(u32),

    /// Authentication failed: the envelope was altered, belongs to another column or SQL type,
    /// or was made under another data key with the same id.
    #[error("envelope does not authenticate for column {column} as {sql_type}")]
    EnvelopeAuthentication { column: String, sql_type: String },
}

impl CryptoError {
    /// Whether the error can be caused by what the database stores or sends (as opposed to local
    /// configuration or a local fault), for the fail-closed error paths and the audit log.
    pub fn is_database_caused(&self) -> bool {
        matches!(
            self,
            Self::WrongCompanyKey { .. }
                | Self::WrappedKeyTagMismatch { .. }
                | Self::KeyTableRow { .. }
                | Self::KeyIdOutOfRange(_)
                | Self::EnvelopeTooShort { .. }
                | Self::EnvelopeVersion(_)
                | Self::EnvelopeMode(_)
                | Self::EnvelopeEpoch(_)
                | Self::UnknownDataKey(_)
                | Self::EnvelopeAuthentication { .. }
        )
    }
}
