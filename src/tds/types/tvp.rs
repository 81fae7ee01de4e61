//! TVP_TYPE_INFO, the metadata of a table-valued parameter ([MS-TDS]
//! 2.2.5.5.5 "Table Valued Parameter", RPC requests only, TDS 7.3+).
//!
//! ```text
//! TVPTYPE DbName OwningSchema TypeName        three B_VARCHAR
//!         ColumnCount USHORT (0xFFFF = TVP_NULL_TOKEN, no columns)
//!         { UserType ULONG, Flags USHORT, TYPE_INFO, ColName B_VARCHAR }
//!         [TVP_ORDER_UNIQUE 0x10] [TVP_COLUMN_ORDERING 0x11]
//!         TVP_END_TOKEN 0x00
//! ```
//! The rows that follow are the parameter's value (see
//! [`super::framing::ValueFraming::Tvp`]).

use crate::tds::{DecodeError, EncodeError, Reader};

use super::type_info::{TypeContext, TypeInfo, TVPTYPE};
use super::{read_b_varchar, too_long, write_b_varchar};

/// Largest column count accepted: a table type has at most 1024 columns,
/// like a table (SQL Server "Maximum capacity specifications").
pub const MAX_TVP_COLUMNS: usize = 1024;

const TVP_NULL_TOKEN: u16 = 0xFFFF;
const TVP_ORDER_UNIQUE_TOKEN: u8 = 0x10;
const TVP_COLUMN_ORDERING_TOKEN: u8 = 0x11;
const TVP_END_TOKEN: u8 = 0x00;

/// One TVP column's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TvpColumn {
    pub user_type: u32,
    pub flags: u16,
    pub type_info: TypeInfo,
    /// Sent empty by conforming clients.
    pub name: String,
}

/// Optional TVP metadata, kept in the order received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TvpOptional {
    /// TVP_ORDER_UNIQUE: (column number, flags) pairs.
    OrderUnique(Vec<(u16, u8)>),
    /// TVP_COLUMN_ORDERING: column numbers.
    ColumnOrdering(Vec<u16>),
}

/// TVP_TYPE_INFO without its type byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TvpTypeInfo {
    pub db_name: String,
    pub owning_schema: String,
    pub type_name: String,
    /// `None` for TVP_NULL_TOKEN.
    pub columns: Option<Vec<TvpColumn>>,
    pub optional: Vec<TvpOptional>,
}

impl TvpTypeInfo {
    /// Decodes everything after TVPTYPE, up to and including TVP_END_TOKEN.
    pub fn decode_after_type_byte(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let db_name = read_b_varchar(r, "TVP DbName")?;
        let owning_schema = read_b_varchar(r, "TVP OwningSchema")?;
        let type_name = read_b_varchar(r, "TVP TypeName")?;
        let columns = decode_columns(r)?;
        let optional = decode_optional(r)?;
        Ok(TvpTypeInfo {
            db_name,
            owning_schema,
            type_name,
            columns,
            optional,
        })
    }

    /// Encodes everything after TVPTYPE.
    pub fn encode_type_info_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_b_varchar(&self.db_name, out, "TVP_TYPE_INFO", "DbName")?;
        write_b_varchar(&self.owning_schema, out, "TVP_TYPE_INFO", "OwningSchema")?;
        write_b_varchar(&self.type_name, out, "TVP_TYPE_INFO", "TypeName")?;
        encode_columns(self.columns.as_deref(), out)?;
        self.optional
            .iter()
            .try_for_each(|o| encode_optional(o, out))?;
        out.push(TVP_END_TOKEN);
        Ok(())
    }
}

fn decode_columns(r: &mut Reader<'_>) -> Result<Option<Vec<TvpColumn>>, DecodeError> {
    let count = r.u16_le()?;
    if count == TVP_NULL_TOKEN {
        return Ok(None);
    }
    if usize::from(count) > MAX_TVP_COLUMNS {
        return Err(DecodeError::TooLarge {
            structure: r.structure(),
            length: usize::from(count),
            limit: MAX_TVP_COLUMNS,
        });
    }
    (0..count)
        .map(|_| decode_column(r))
        .collect::<Result<_, _>>()
        .map(Some)
}

fn decode_column(r: &mut Reader<'_>) -> Result<TvpColumn, DecodeError> {
    let user_type = r.u32_le()?;
    let flags = r.u16_le()?;
    // A TVP cannot contain a TVP. Checking the type byte before decoding
    // also keeps nested input from recursing.
    if r.rest().first() == Some(&TVPTYPE) {
        return Err(DecodeError::Malformed {
            structure: r.structure(),
            reason: "TVP column of TVP type",
        });
    }
    let type_info = TypeInfo::decode_in(r, TypeContext::Rpc)?;
    let name = read_b_varchar(r, "TVP ColName")?;
    Ok(TvpColumn {
        user_type,
        flags,
        type_info,
        name,
    })
}

fn decode_optional(r: &mut Reader<'_>) -> Result<Vec<TvpOptional>, DecodeError> {
    let mut optional = Vec::new();
    loop {
        match r.u8()? {
            TVP_END_TOKEN => return Ok(optional),
            TVP_ORDER_UNIQUE_TOKEN => optional.push(decode_order_unique(r)?),
            TVP_COLUMN_ORDERING_TOKEN => optional.push(decode_column_ordering(r)?),
            other => {
                return Err(DecodeError::InvalidValue {
                    structure: r.structure(),
                    field: "TVP metadata token",
                    value: u64::from(other),
                })
            }
        }
    }
}

fn decode_order_unique(r: &mut Reader<'_>) -> Result<TvpOptional, DecodeError> {
    let count = r.u16_le()?;
    let pairs = (0..count)
        .map(|_| Ok((r.u16_le()?, r.u8()?)))
        .collect::<Result<_, DecodeError>>()?;
    Ok(TvpOptional::OrderUnique(pairs))
}

fn decode_column_ordering(r: &mut Reader<'_>) -> Result<TvpOptional, DecodeError> {
    let count = r.u16_le()?;
    let cols = (0..count).map(|_| r.u16_le()).collect::<Result<_, _>>()?;
    Ok(TvpOptional::ColumnOrdering(cols))
}

fn encode_columns(columns: Option<&[TvpColumn]>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let Some(columns) = columns else {
        out.extend_from_slice(&TVP_NULL_TOKEN.to_le_bytes());
        return Ok(());
    };
    if columns.len() > MAX_TVP_COLUMNS {
        return Err(too_long(
            "TVP_TYPE_INFO",
            "ColumnCount",
            columns.len(),
            MAX_TVP_COLUMNS,
        ));
    }
    out.extend_from_slice(&(columns.len() as u16).to_le_bytes());
    for col in columns {
        out.extend_from_slice(&col.user_type.to_le_bytes());
        out.extend_from_slice(&col.flags.to_le_bytes());
        col.type_info.encode(out)?;
        write_b_varchar(&col.name, out, "TVP_TYPE_INFO", "ColName")?;
    }
    Ok(())
}

fn encode_optional(o: &TvpOptional, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let count =
        |n: usize| u16::try_from(n).map_err(|_| too_long("TVP_TYPE_INFO", "Count", n, 0xFFFF));
    match o {
        TvpOptional::OrderUnique(pairs) => {
            out.push(TVP_ORDER_UNIQUE_TOKEN);
            out.extend_from_slice(&count(pairs.len())?.to_le_bytes());
            for (col, flags) in pairs {
                out.extend_from_slice(&col.to_le_bytes());
                out.push(*flags);
            }
        }
        TvpOptional::ColumnOrdering(cols) => {
            out.push(TVP_COLUMN_ORDERING_TOKEN);
            out.extend_from_slice(&count(cols.len())?.to_le_bytes());
            cols.iter()
                .for_each(|c| out.extend_from_slice(&c.to_le_bytes()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::types::framing::decode_value_raw_in;

    /// dbo.IdList (id int NOT NULL, name nvarchar(10)) with ORDER_UNIQUE and
    /// COLUMN_ORDERING, then two rows.
    fn sample() -> (Vec<u8>, Vec<u8>) {
        let mut ti = vec![0xF3, 0x00, 0x03, b'd', 0, b'b', 0, b'o', 0, 0x01, b'T', 0];
        ti.extend_from_slice(&[0x02, 0x00]);
        ti.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x38, 0x00]);
        ti.extend_from_slice(&[
            0, 0, 0, 0, 1, 0, 0xE7, 0x14, 0x00, 9, 4, 0xD0, 0, 0x34, 0x00,
        ]);
        ti.extend_from_slice(&[0x10, 0x01, 0x00, 0x01, 0x00, 0x05]);
        ti.extend_from_slice(&[0x11, 0x01, 0x00, 0x02, 0x00]);
        ti.push(0x00);

        let mut rows = vec![0x01, 7, 0, 0, 0, 2, 0, b'a', 0];
        rows.extend_from_slice(&[0x01, 8, 0, 0, 0, 0xFF, 0xFF]);
        rows.push(0x00);
        (ti, rows)
    }

    #[test]
    fn tvp_type_info_and_rows_round_trip() {
        let (ti_bytes, rows) = sample();
        let mut r = Reader::new(&ti_bytes, "TVP");
        let ti = TypeInfo::decode_in(&mut r, TypeContext::Rpc).unwrap();
        r.finish().unwrap();

        let TypeInfo::Tvp(tvp) = &ti else {
            panic!("not a TVP")
        };
        assert_eq!(tvp.type_name, "T");
        assert_eq!(tvp.columns.as_ref().unwrap().len(), 2);
        assert_eq!(tvp.optional.len(), 2);

        let mut out = Vec::new();
        ti.encode(&mut out).unwrap();
        assert_eq!(out, ti_bytes);

        let mut r = Reader::new(&rows, "TVP rows");
        let raw = decode_value_raw_in(&ti, TypeContext::Rpc, &mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(raw.wire(), rows);
    }

    #[test]
    fn null_tvp_and_nested_tvp() {
        let null = [0xF3, 0, 0, 0x01, b'T', 0, 0xFF, 0xFF, 0x00];
        let mut r = Reader::new(&null, "TVP");
        let ti = TypeInfo::decode_in(&mut r, TypeContext::Rpc).unwrap();
        r.finish().unwrap();
        let mut out = Vec::new();
        ti.encode(&mut out).unwrap();
        assert_eq!(out, null);

        let nested = [0xF3, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0xF3, 0, 0, 0];
        let mut r = Reader::new(&nested, "TVP");
        assert!(matches!(
            TypeInfo::decode_in(&mut r, TypeContext::Rpc),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
