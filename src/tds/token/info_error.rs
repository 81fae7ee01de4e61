//! INFO (0xAB, [MS-TDS] 2.2.7.13) and ERROR (0xAA, 2.2.7.10): a server
//! message. Both tokens share one layout.

use std::fmt;

use super::wire::{
    read_b_varchar, read_us_varchar, u16_body, with_u16_len, write_b_varchar, write_us_varchar,
    UcsString,
};
use super::{TokenContext, ERROR, INFO};
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// Class 11 and above is an error, 10 and below informational (2.2.7.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Informational,
    Error,
}

/// `AA|AB | Length 2 | Number 4 | State 1 | Class 1 | MsgText US_VARCHAR |
/// ServerName B_VARCHAR | ProcName B_VARCHAR | LineNumber 4 (2 before 7.2)`
#[derive(Clone, PartialEq, Eq)]
pub struct InfoError {
    /// ERROR (0xAA) rather than INFO (0xAB).
    pub is_error: bool,
    pub number: u32,
    pub state: u8,
    pub class: u8,
    /// May quote SQL text or values (e.g. a duplicate key): never logged.
    pub message: UcsString,
    pub server: UcsString,
    pub procedure: UcsString,
    pub line: u32,
}

impl InfoError {
    pub fn decode_body(
        ty: u8,
        r: &mut Reader<'_>,
        ctx: &TokenContext,
    ) -> Result<Self, DecodeError> {
        let mut body = u16_body(r, if ty == ERROR { "ERROR" } else { "INFO" })?;
        let token = InfoError {
            is_error: ty == ERROR,
            number: body.u32_le()?,
            state: body.u8()?,
            class: body.u8()?,
            message: read_us_varchar(&mut body)?,
            server: read_b_varchar(&mut body)?,
            procedure: read_b_varchar(&mut body)?,
            line: if ctx.tds_version.is_7_2_or_later() {
                body.u32_le()?
            } else {
                u32::from(body.u16_le()?)
            },
        };
        body.finish()?;
        Ok(token)
    }

    pub fn encode(&self, ctx: &TokenContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (ty, name) = if self.is_error {
            (ERROR, "ERROR")
        } else {
            (INFO, "INFO")
        };
        with_u16_len(ty, name, out, |out| {
            out.extend_from_slice(&self.number.to_le_bytes());
            out.extend_from_slice(&[self.state, self.class]);
            write_us_varchar(&self.message, name, out)?;
            write_b_varchar(&self.server, name, out)?;
            write_b_varchar(&self.procedure, name, out)?;
            if ctx.tds_version.is_7_2_or_later() {
                out.extend_from_slice(&self.line.to_le_bytes());
            } else {
                out.extend_from_slice(&(self.line as u16).to_le_bytes());
            }
            Ok(())
        })
    }

    pub fn severity(&self) -> Severity {
        if self.class >= 11 {
            Severity::Error
        } else {
            Severity::Informational
        }
    }
}

/// The message text is left out: it can quote SQL or values.
impl fmt::Debug for InfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(if self.is_error { "Error" } else { "Info" })
            .field("number", &self.number)
            .field("state", &self.state)
            .field("class", &self.class)
            .field("message_len", &self.message.len())
            .field("line", &self.line)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::encode_round_trip;
    use crate::tds::token::{TdsVersion, Token};

    fn sample(is_error: bool) -> InfoError {
        InfoError {
            is_error,
            number: 18456,
            state: 1,
            class: 14,
            message: "Login failed for user 'x'.".into(),
            server: "srv".into(),
            procedure: UcsString::default(),
            line: 1,
        }
    }

    #[test]
    fn error_and_info_round_trip() {
        let bytes = encode_round_trip(&Token::InfoError(sample(true)), &TokenContext::default());
        assert_eq!(bytes[0], ERROR);
        assert_eq!(sample(true).severity(), Severity::Error);
        let old = TokenContext {
            tds_version: TdsVersion::V7_1,
            ..TokenContext::default()
        };
        let short = encode_round_trip(&Token::InfoError(sample(false)), &old);
        assert_eq!(short[0], INFO);
        assert_eq!(short.len() + 2, bytes.len());
    }

    #[test]
    fn debug_hides_message() {
        let text = format!("{:?}", sample(true));
        assert!(!text.contains("Login failed"));
        assert!(text.contains("18456"));
    }
}
