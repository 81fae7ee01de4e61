//! TABNAME (0xA4, [MS-TDS] 2.2.7.23): the tables a browse-mode result reads
//! from. From TDS 7.2 each name has several parts (server, database, schema,
//! table); before, each is one US_VARCHAR.

use super::wire::{read_us_varchar, u16_body, with_u16_len, write_us_varchar, UcsString};
use super::{TokenContext, TABNAME};
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// `A4 | Length 2 | TableName...`; each TableName is `NumParts 1 | US_VARCHAR...`
/// (7.2+) or one US_VARCHAR (before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabName(pub Vec<Vec<UcsString>>);

impl TabName {
    pub fn decode_body(r: &mut Reader<'_>, ctx: &TokenContext) -> Result<Self, DecodeError> {
        let mut body = u16_body(r, "TABNAME")?;
        let mut tables = Vec::new();
        while !body.is_empty() {
            tables.push(read_table_name(&mut body, ctx)?);
        }
        Ok(TabName(tables))
    }

    pub fn encode(&self, ctx: &TokenContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        with_u16_len(TABNAME, "TABNAME", out, |out| {
            for table in &self.0 {
                write_table_name(table, ctx, "TABNAME", out)?;
            }
            Ok(())
        })
    }
}

/// A multi-part table name (7.2+: `NumParts 1` + parts; before: one part).
/// Shared with COLMETADATA's TableName for TEXT/NTEXT/IMAGE columns.
pub fn read_table_name(
    r: &mut Reader<'_>,
    ctx: &TokenContext,
) -> Result<Vec<UcsString>, DecodeError> {
    if !ctx.tds_version.is_7_2_or_later() {
        return Ok(vec![read_us_varchar(r)?]);
    }
    let parts = r.u8()?;
    (0..parts).map(|_| read_us_varchar(r)).collect()
}

pub fn write_table_name(
    parts: &[UcsString],
    ctx: &TokenContext,
    structure: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if ctx.tds_version.is_7_2_or_later() {
        let n = u8::try_from(parts.len()).map_err(|_| EncodeError::TooLarge {
            structure,
            field: "NumParts",
            length: parts.len(),
            limit: 0xFF,
        })?;
        out.push(n);
    } else if parts.len() != 1 {
        return Err(EncodeError::TooLarge {
            structure,
            field: "table name parts before TDS 7.2",
            length: parts.len(),
            limit: 1,
        });
    }
    for part in parts {
        write_us_varchar(part, structure, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::encode_round_trip;
    use crate::tds::token::{TdsVersion, Token};

    #[test]
    fn round_trips_in_both_forms() {
        let t = Token::TabName(TabName(vec![
            vec!["dbo".into(), "t".into()],
            vec!["u".into()],
        ]));
        encode_round_trip(&t, &TokenContext::default());
        let old = TokenContext {
            tds_version: TdsVersion::V7_1,
            ..TokenContext::default()
        };
        let t = Token::TabName(TabName(vec![vec!["t1".into()], vec!["t2".into()]]));
        let bytes = encode_round_trip(&t, &old);
        assert_eq!(bytes.len(), 3 + 2 * (2 + 4));
    }
}
