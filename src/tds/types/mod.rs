//! TDS data types: TYPE_INFO, value framing, PLP, typed values, table-valued
//! parameters ([MS-TDS] 2.2.5.4 "Data Type Definitions", 2.2.5.5 "Data Type
//! Dependent Data Streams", 2.2.5.6 "Type Info Rule Definition").
//!
//! Contract for token and message decoders (kept stable):
//! - [`TypeInfo::decode`] / [`TypeInfo::encode`]: TYPE_INFO as in COLMETADATA,
//!   RETURNVALUE and TVP columns; [`TypeInfo::decode_in`] with
//!   [`TypeContext::Rpc`] for RPC parameters (UDT_INFO differs there).
//!   TEXT/NTEXT/IMAGE columns are followed in COLMETADATA by a table name,
//!   which is not part of TYPE_INFO: see [`TypeInfo::has_table_name`] and
//!   [`TableName`].
//! - [`TypeInfo::framing`] says how a value of that type is delimited in a
//!   ROW/NBCROW/RETURNVALUE; [`TypeInfo::framing_in`] for RPC parameters.
//! - [`decode_value_raw`] cuts one complete value out of a buffer as a
//!   [`RawValue`] (wire bytes plus assembled data or NULL);
//!   [`RawValue::encode`] writes the wire bytes back unchanged.
//! - [`decode_value`] / [`encode_value`] convert to and from [`SqlValue`];
//!   [`encode_value_in`] frames for RPC parameters. sql_variant, XML, UDT,
//!   TVP, TEXT/NTEXT/IMAGE, json and vector values stay [`SqlValue::Raw`];
//!   [`variant::decode_variant`] reads a sql_variant when needed.
//! - [`TypeInfo::declaration`] gives the T-SQL type for `@params` strings,
//!   so a rewritten parameter's declaration can follow its new TYPE_INFO.

pub mod collation;
pub mod datetime;
pub mod framing;
pub mod plp;
#[cfg(test)]
pub(crate) mod testing;
pub mod tvp;
pub mod type_info;
pub mod value;
pub mod variant;

pub use collation::{CharEncoding, Collation};
pub use framing::{decode_value_raw, decode_value_raw_in, encode_null, RawValue, ValueFraming};
pub use plp::{PLP_NULL, PLP_UNKNOWN_LEN};
pub use tvp::{TvpColumn, TvpTypeInfo};
pub use type_info::{
    DecimalType, FixedType, LegacyVarLenType, LongType, NullableType, TableName, TypeContext,
    TypeInfo, UdtInfo, VarLenType, XmlSchema,
};
pub use value::{decode_value, encode_value, encode_value_in, SqlValue};

use crate::tds::{DecodeError, EncodeError, Reader};

/// Reads `chars` UTF-16LE code units as a string; invalid UTF-16 is an
/// error because identifiers must re-encode to the same bytes.
pub(crate) fn read_utf16(
    r: &mut Reader<'_>,
    chars: usize,
    field: &'static str,
) -> Result<String, DecodeError> {
    let bytes = r.bytes(chars * 2)?;
    let units = bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|e| DecodeError::InvalidValue {
            structure: r.structure(),
            field,
            value: u64::from(e.unpaired_surrogate()),
        })
}

/// B_VARCHAR: 1-byte length in characters, then UTF-16LE.
pub(crate) fn read_b_varchar(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<String, DecodeError> {
    let chars = usize::from(r.u8()?);
    read_utf16(r, chars, field)
}

/// US_VARCHAR: 2-byte length in characters, then UTF-16LE.
pub(crate) fn read_us_varchar(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<String, DecodeError> {
    let chars = usize::from(r.u16_le()?);
    read_utf16(r, chars, field)
}

pub(crate) fn write_b_varchar(
    s: &str,
    out: &mut Vec<u8>,
    structure: &'static str,
    field: &'static str,
) -> Result<(), EncodeError> {
    let units: Vec<u16> = s.encode_utf16().collect();
    let len =
        u8::try_from(units.len()).map_err(|_| too_long(structure, field, units.len(), 0xFF))?;
    out.push(len);
    units
        .iter()
        .for_each(|u| out.extend_from_slice(&u.to_le_bytes()));
    Ok(())
}

pub(crate) fn write_us_varchar(
    s: &str,
    out: &mut Vec<u8>,
    structure: &'static str,
    field: &'static str,
) -> Result<(), EncodeError> {
    let units: Vec<u16> = s.encode_utf16().collect();
    let len =
        u16::try_from(units.len()).map_err(|_| too_long(structure, field, units.len(), 0xFFFF))?;
    out.extend_from_slice(&len.to_le_bytes());
    units
        .iter()
        .for_each(|u| out.extend_from_slice(&u.to_le_bytes()));
    Ok(())
}

pub(crate) fn too_long(
    structure: &'static str,
    field: &'static str,
    length: usize,
    limit: usize,
) -> EncodeError {
    EncodeError::TooLarge {
        structure,
        field,
        length,
        limit,
    }
}
