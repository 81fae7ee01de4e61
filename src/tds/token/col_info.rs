//! COLINFO (0xA5, [MS-TDS] 2.2.7.3): browse-mode column information, one
//! entry per result column.

use super::wire::{read_b_varchar, u16_body, with_u16_len, write_b_varchar, UcsString};
use super::COLINFO;
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// Status bit: the column has a different name in its table (EXPRESSION is
/// 0x04, KEY 0x08, HIDDEN 0x10); only DIFFERENT_NAME adds bytes.
pub const COLINFO_DIFFERENT_NAME: u8 = 0x20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColInfoEntry {
    pub column: u8,
    /// Index into the preceding TABNAME (0 for expressions).
    pub table: u8,
    pub status: u8,
    /// Present when `status` has [`COLINFO_DIFFERENT_NAME`].
    pub base_name: Option<UcsString>,
}

/// `A5 | Length 2 | { ColNum 1 | TableNum 1 | Status 1 | [ColName B_VARCHAR] }...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColInfo(pub Vec<ColInfoEntry>);

impl ColInfo {
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut body = u16_body(r, "COLINFO")?;
        let mut entries = Vec::new();
        while !body.is_empty() {
            let (column, table, status) = (body.u8()?, body.u8()?, body.u8()?);
            let base_name = if status & COLINFO_DIFFERENT_NAME != 0 {
                Some(read_b_varchar(&mut body)?)
            } else {
                None
            };
            entries.push(ColInfoEntry {
                column,
                table,
                status,
                base_name,
            });
        }
        Ok(ColInfo(entries))
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        with_u16_len(COLINFO, "COLINFO", out, |out| {
            for e in &self.0 {
                out.extend_from_slice(&[e.column, e.table, e.status]);
                if let Some(name) = &e.base_name {
                    write_b_varchar(name, "COLINFO", out)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::encode_round_trip;
    use crate::tds::token::{Token, TokenContext};

    #[test]
    fn round_trips() {
        let t = Token::ColInfo(ColInfo(vec![
            ColInfoEntry {
                column: 1,
                table: 1,
                status: 0x08,
                base_name: None,
            },
            ColInfoEntry {
                column: 2,
                table: 1,
                status: 0x20,
                base_name: Some("b".into()),
            },
        ]));
        let bytes = encode_round_trip(&t, &TokenContext::default());
        assert_eq!(bytes.len(), 3 + 3 + 3 + 3);
    }
}
