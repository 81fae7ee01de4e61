//! Errors raised while decoding or encoding TDS.
//!
//! A decode error names the structure that was being read, so a log line (or
//! `tdsguard dump`) says where a peer's bytes stopped making sense. Values and
//! raw bytes are never carried: they may be PHI or credentials.

use thiserror::Error;

/// Why bytes could not be decoded as TDS.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended inside a structure that is decoded only when complete.
    #[error("{structure} is truncated: needs {needed} bytes, {available} available")]
    Truncated {
        structure: &'static str,
        needed: usize,
        available: usize,
    },

    /// A length field is larger than the cap tdsguard allows for it.
    #[error("{structure} length {length} exceeds the limit of {limit}")]
    TooLarge {
        structure: &'static str,
        length: usize,
        limit: usize,
    },

    /// A field holds a value the specification does not allow here.
    #[error("{structure} has an invalid {field}: {value:#x}")]
    InvalidValue {
        structure: &'static str,
        field: &'static str,
        value: u64,
    },

    /// A token type byte that tdsguard does not know. Token streams cannot be
    /// skipped safely without knowing each token's framing, so this is fatal.
    #[error("unknown token type {0:#04x}")]
    UnknownToken(u8),

    /// A data type byte that tdsguard does not know.
    #[error("unknown data type {0:#04x}")]
    UnknownType(u8),

    /// A structure ended before its declared length was used up, or left
    /// bytes behind that its declared length does not account for.
    #[error("{structure} declares {declared} bytes but its contents take {used}")]
    LengthMismatch {
        structure: &'static str,
        declared: usize,
        used: usize,
    },

    /// Anything else the peer got wrong, described in a few words.
    #[error("malformed {structure}: {reason}")]
    Malformed {
        structure: &'static str,
        reason: &'static str,
    },
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A value does not fit the field or type it is written into.
    #[error("{structure}: {field} of {length} does not fit (limit {limit})")]
    TooLarge {
        structure: &'static str,
        field: &'static str,
        length: usize,
        limit: usize,
    },

    /// Parts of a structure disagree (e.g. a row with more values than its
    /// COLMETADATA has columns).
    #[error("{structure}: {reason}")]
    Inconsistent {
        structure: &'static str,
        reason: &'static str,
    },

    /// A value does not match the type it is written as.
    #[error("{structure}: value does not match type {type_name}")]
    TypeMismatch {
        structure: &'static str,
        type_name: &'static str,
    },
}
