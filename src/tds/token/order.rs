//! ORDER (0xA9, [MS-TDS] 2.2.7.17): the columns an ORDER BY sorts on.

use super::wire::{u16_body, with_u16_len};
use super::ORDER;
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// `A9 | Length 2 | ColNum 2 ...` (1-based column numbers)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order(pub Vec<u16>);

impl Order {
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut body = u16_body(r, "ORDER")?;
        let mut columns = Vec::with_capacity(body.remaining() / 2);
        while !body.is_empty() {
            columns.push(body.u16_le()?);
        }
        Ok(Order(columns))
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        with_u16_len(ORDER, "ORDER", out, |out| {
            for c in &self.0 {
                out.extend_from_slice(&c.to_le_bytes());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::round_trip;
    use crate::tds::token::{Token, TokenContext};

    #[test]
    fn round_trips() {
        let t = round_trip(&[ORDER, 4, 0, 1, 0, 3, 0], &TokenContext::default());
        assert!(t == Token::Order(Order(vec![1, 3])));
    }

    #[test]
    fn odd_length_is_truncated() {
        let mut r = Reader::new(&[ORDER, 3, 0, 1, 0, 3], "t");
        assert!(Token::decode(&mut r, &TokenContext::default()).is_err());
    }
}
