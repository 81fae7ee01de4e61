//! Refusals and failures of the rewrite layer.
//!
//! A [`Refusal`] is what the application sees when the proxy will not run a
//! statement: a SQL error of class 16 with a number from docs/ERRORS.md and a
//! message naming what and why, never a value. A [`RewriteError`] is a
//! failure of the layer itself (config, codec, cipher).

use std::fmt;

use thiserror::Error;

use crate::tds::token::{Done, DoneKind, DoneStatus, InfoError, Token, TokenContext};
use crate::tds::{DecodeError, EncodeError};

/// Severity of every refusal: "errors that can be corrected by the user"
/// ([MS-TDS] 2.2.7.10 ERROR, class 11-16).
pub const REFUSAL_CLASS: u8 = 16;

/// Server name put in the ERROR token of a refusal.
pub const REFUSAL_SERVER: &str = "tdsguard";

/// The documented refusal numbers (docs/ERRORS.md has one section each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// 50100: text that could not be analysed mentions a mapped column.
    Unparseable,
    /// 50101: LIKE on a mapped column.
    Like,
    /// 50102: <, >, <=, >=, <> or BETWEEN on a mapped column.
    Range,
    /// 50103: ORDER BY, GROUP BY or an aggregate on a mapped column.
    Ordering,
    /// 50104: equality lookup on a randomized column.
    RandomizedEquality,
    /// 50105: a function or operator applied to a mapped column.
    Function,
    /// 50106: a mapped column compared with, or fed from, another expression.
    Expression,
    /// 50107: a statement shape the proxy does not support on mapped columns.
    Unsupported,
    /// 50108: bulk load into a mapped table.
    BulkLoad,
    /// 50109: sp_execute with an unknown handle or mismatching parameters.
    PreparedMismatch,
    /// 50110: a value that SQL Server would not convert to the column's type.
    Conversion,
    /// 50111: string or binary data would be truncated (cf. 2628 / 8152).
    Truncation,
    /// 50112: numeric value out of the column's precision (cf. 8115).
    Overflow,
    /// 50113: a stored value failed to decrypt.
    Decrypt,
    /// 50114: result columns could not be matched with the statement.
    ResultShape,
    /// 50115: encryption of a value failed.
    Encrypt,
    /// 50120: the current database's data key is not loaded or was refused
    /// (the same number as `crypto::session_keys::KEY_REFUSAL_ERROR_NUMBER`).
    KeyUnavailable,
}

impl RefusalKind {
    /// The error number sent in the ERROR token.
    pub fn number(self) -> u32 {
        50100
            + match self {
                RefusalKind::Unparseable => 0,
                RefusalKind::Like => 1,
                RefusalKind::Range => 2,
                RefusalKind::Ordering => 3,
                RefusalKind::RandomizedEquality => 4,
                RefusalKind::Function => 5,
                RefusalKind::Expression => 6,
                RefusalKind::Unsupported => 7,
                RefusalKind::BulkLoad => 8,
                RefusalKind::PreparedMismatch => 9,
                RefusalKind::Conversion => 10,
                RefusalKind::Truncation => 11,
                RefusalKind::Overflow => 12,
                RefusalKind::Decrypt => 13,
                RefusalKind::ResultShape => 14,
                RefusalKind::Encrypt => 15,
                RefusalKind::KeyUnavailable => 20,
            }
    }
}

/// A statement the proxy will not run, as a SQL error for the application.
#[derive(Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// What and why; names columns, never values.
    pub message: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Refusal {
            kind,
            message: message.into(),
        }
    }

    pub fn number(&self) -> u32 {
        self.kind.number()
    }

    /// The ERROR token ([MS-TDS] 2.2.7.10) carrying this refusal.
    pub fn error_token(&self) -> InfoError {
        InfoError {
            is_error: true,
            number: self.number(),
            state: 1,
            class: REFUSAL_CLASS,
            message: self.message.as_str().into(),
            server: REFUSAL_SERVER.into(),
            procedure: "".into(),
            line: 1,
        }
    }

    /// A whole response to the refused request: ERROR then a final DONE with
    /// the error bit (2.2.7.6), as the server answers a failed batch.
    pub fn response_bytes(&self, ctx: &TokenContext) -> Result<Vec<u8>, EncodeError> {
        let done = Done {
            kind: DoneKind::Done,
            status: DoneStatus(DoneStatus::ERROR),
            cur_cmd: 0,
            row_count: 0,
        };
        let mut out = Vec::new();
        Token::InfoError(self.error_token()).encode(ctx, &mut out)?;
        Token::Done(done).encode(ctx, &mut out)?;
        Ok(out)
    }
}

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Refusal({}: {})", self.number(), self.message)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msg {}: {}", self.number(), self.message)
    }
}

/// Failures of the rewrite layer.
#[derive(Debug, Error)]
pub enum RewriteError {
    /// The column map in the configuration is not usable.
    #[error("invalid column map entry `{entry}`: {reason}")]
    Config { entry: String, reason: String },

    /// The request is refused; answer the client with the refusal.
    #[error("refused: {0}")]
    Refused(Refusal),

    #[error("decoding {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: DecodeError,
    },

    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: EncodeError,
    },
}

impl From<Refusal> for RewriteError {
    fn from(r: Refusal) -> Self {
        RewriteError::Refused(r)
    }
}

impl RewriteError {
    pub(crate) fn config(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        RewriteError::Config {
            entry: entry.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn encode(what: &'static str) -> impl FnOnce(EncodeError) -> Self {
        move |source| RewriteError::Encode { what, source }
    }

    pub(crate) fn decode(what: &'static str) -> impl FnOnce(DecodeError) -> Self {
        move |source| RewriteError::Decode { what, source }
    }

    /// The refusal, if this error is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            RewriteError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_distinct_and_in_range() {
        let kinds = [
            RefusalKind::Unparseable,
            RefusalKind::Like,
            RefusalKind::Range,
            RefusalKind::Ordering,
            RefusalKind::RandomizedEquality,
            RefusalKind::Function,
            RefusalKind::Expression,
            RefusalKind::Unsupported,
            RefusalKind::BulkLoad,
            RefusalKind::PreparedMismatch,
            RefusalKind::Conversion,
            RefusalKind::Truncation,
            RefusalKind::Overflow,
            RefusalKind::Decrypt,
            RefusalKind::ResultShape,
            RefusalKind::Encrypt,
            RefusalKind::KeyUnavailable,
        ];
        let mut numbers: Vec<u32> = kinds.iter().map(|k| k.number()).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), kinds.len());
        assert_eq!(numbers.first(), Some(&50100));
        assert_eq!(numbers.last(), Some(&50120));
        assert_eq!(
            RefusalKind::KeyUnavailable.number(),
            crate::crypto::session_keys::KEY_REFUSAL_ERROR_NUMBER
        );
    }

    #[test]
    fn response_is_error_then_final_done() {
        let refusal = Refusal::new(RefusalKind::Like, "LIKE on dbo.patients.ssn");
        let ctx = TokenContext::default();
        let bytes = refusal.response_bytes(&ctx).unwrap();
        let mut ctx2 = TokenContext::default();
        let tokens = crate::tds::token::decode_all(&bytes, &mut ctx2).unwrap();
        assert_eq!(tokens.len(), 2);
        let Token::InfoError(e) = &tokens[0] else {
            panic!("first token is {}", tokens[0].name())
        };
        assert_eq!((e.number, e.class, e.is_error), (50101, 16, true));
        let Token::Done(d) = &tokens[1] else {
            panic!("second token is {}", tokens[1].name())
        };
        assert!(d.status.has(DoneStatus::ERROR));
        assert!(!d.status.has(DoneStatus::MORE));
    }
}
