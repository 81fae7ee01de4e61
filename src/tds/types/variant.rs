//! The inside of a sql_variant value ([MS-TDS] 2.2.5.5.4 "Variant Data
//! Types"): BaseType, PropBytes, the base type's properties, then the value
//! without a length prefix (its length is what the variant's length leaves).
//!
//! | base types                                     | properties               |
//! |------------------------------------------------|--------------------------|
//! | fixed-length, GUID, DATE                       | none                     |
//! | TIME, DATETIME2, DATETIMEOFFSET                | scale (1)                |
//! | DECIMALN, NUMERICN                             | precision, scale (2)     |
//! | BIGVARBINARY, BIGBINARY                        | max length (2)           |
//! | BIGVARCHAR, BIGCHAR, NVARCHAR, NCHAR           | collation (5), max length (2) |
//!
//! Values stay raw bytes in rows and parameters; this module only reads them
//! as typed values when asked.

use std::borrow::Cow;

use crate::tds::{DecodeError, Reader};

use super::collation::Collation;
use super::framing::RawValue;
use super::type_info::{
    DecimalType, FixedType, NullableType, TypeInfo, VarLenType, DATENTYPE, DATETIME2NTYPE,
    DATETIMEOFFSETNTYPE, DECIMALNTYPE, GUIDTYPE, NUMERICNTYPE, TIMENTYPE,
};
use super::value::{decode_value, SqlValue};

const STRUCTURE: &str = "sql_variant";

/// Reads the data of a non-NULL sql_variant (as [`RawValue::data`] gives
/// it): the base type and the typed value.
pub fn decode_variant(data: &[u8]) -> Result<(TypeInfo, SqlValue), DecodeError> {
    let mut r = Reader::new(data, STRUCTURE);
    let base = r.u8()?;
    let prop_len = usize::from(r.u8()?);
    let mut props = r.take(prop_len, "sql_variant properties")?;
    let value = r.rest();
    let type_info = base_type_info(base, &mut props, value.len())?;
    props.finish()?;

    let raw = RawValue::from_parts(data, Some(Cow::Borrowed(value)));
    let value = decode_value(&type_info, &raw)?;
    Ok((type_info, value))
}

fn base_type_info(
    base: u8,
    props: &mut Reader<'_>,
    value_len: usize,
) -> Result<TypeInfo, DecodeError> {
    if let Some(ty) = FixedType::from_byte(base) {
        return Ok(TypeInfo::Fixed(ty));
    }
    let ti = match base {
        GUIDTYPE => TypeInfo::Nullable {
            ty: NullableType::Guid,
            len: 16,
        },
        DATENTYPE => TypeInfo::Date,
        TIMENTYPE => TypeInfo::Time { scale: props.u8()? },
        DATETIME2NTYPE => TypeInfo::DateTime2 { scale: props.u8()? },
        DATETIMEOFFSETNTYPE => TypeInfo::DateTimeOffset { scale: props.u8()? },
        DECIMALNTYPE | NUMERICNTYPE => decimal(base, props, value_len)?,
        _ => return var_len(base, props),
    };
    Ok(ti)
}

/// The value's length (sign byte and magnitude) stands in for the TYPE_INFO
/// length, which a variant does not carry.
fn decimal(base: u8, props: &mut Reader<'_>, value_len: usize) -> Result<TypeInfo, DecodeError> {
    let ty = match base {
        DECIMALNTYPE => DecimalType::DecimalN,
        _ => DecimalType::NumericN,
    };
    Ok(TypeInfo::Decimal {
        ty,
        len: u8::try_from(value_len).unwrap_or(u8::MAX),
        precision: props.u8()?,
        scale: props.u8()?,
    })
}

fn var_len(base: u8, props: &mut Reader<'_>) -> Result<TypeInfo, DecodeError> {
    let ty = VarLenType::from_byte(base).ok_or(DecodeError::UnknownType(base))?;
    let collation = match ty.has_collation() {
        true => Some(Collation::decode(props)?),
        false => None,
    };
    let max_len = props.u16_le()?;
    Ok(TypeInfo::VarLen {
        ty,
        max_len,
        collation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_variant() {
        let (ti, v) = decode_variant(&[0x38, 0x00, 0x2A, 0, 0, 0]).unwrap();
        assert_eq!(ti, TypeInfo::Fixed(FixedType::Int4));
        assert_eq!(v, SqlValue::Int(42));
    }

    #[test]
    fn nvarchar_variant() {
        let data = [
            0xE7, 0x07, 0x09, 0x04, 0xD0, 0x00, 0x34, 0x0A, 0x00, b'h', 0, b'i', 0,
        ];
        let (ti, v) = decode_variant(&data).unwrap();
        assert_eq!(ti.collation().unwrap().lcid(), 0x0409);
        assert_eq!(v, SqlValue::NVarChar("hi".into()));
    }

    #[test]
    fn decimal_and_time_variants() {
        let (_, v) = decode_variant(&[0x6C, 0x02, 0x05, 0x02, 0x01, 0x39, 0x30, 0, 0]).unwrap();
        assert!(matches!(
            v,
            SqlValue::Decimal {
                value: 12345,
                precision: 5,
                scale: 2
            }
        ));

        let (ti, _) = decode_variant(&[0x29, 0x01, 0x00, 0x01, 0x00, 0x00]).unwrap();
        assert_eq!(ti, TypeInfo::Time { scale: 0 });
    }

    #[test]
    fn bad_variants_are_errors() {
        assert!(decode_variant(&[0x38]).is_err());
        assert!(decode_variant(&[0x38, 0x01, 0x00, 1, 0, 0, 0]).is_err());
        assert!(decode_variant(&[0xF1, 0x00]).is_err());
        assert!(decode_variant(&[0x38, 0x00, 1, 0]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(0u8..=255, 0..48)) {
            let _ = decode_variant(&bytes);
        }
    }
}
