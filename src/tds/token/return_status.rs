//! RETURNSTATUS (0x79, [MS-TDS] 2.2.7.18): the return value of a stored
//! procedure, a 4-byte signed integer that is never NULL.

use super::RETURNSTATUS;
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// `79 | Value 4`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnStatus(pub i32);

impl ReturnStatus {
    /// Bytes after the token type.
    pub const BODY_LEN: usize = 4;

    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ReturnStatus(r.u32_le()? as i32))
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(RETURNSTATUS);
        out.extend_from_slice(&self.0.to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::round_trip;
    use crate::tds::token::{Token, TokenContext};

    #[test]
    fn round_trips() {
        let t = round_trip(
            &[RETURNSTATUS, 0xFE, 0xFF, 0xFF, 0xFF],
            &TokenContext::default(),
        );
        assert!(t == Token::ReturnStatus(ReturnStatus(-2)));
    }
}
