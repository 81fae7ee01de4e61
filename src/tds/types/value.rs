//! Typed values of the types a column can be encrypted in, and their wire
//! encoding ([MS-TDS] 2.2.5.5.1 "System Data Type Values").
//!
//! [`decode_value`] turns a [`RawValue`] into a [`SqlValue`];
//! [`encode_value`] writes it back in the framing of a [`TypeInfo`]. For
//! every value in canonical form the result is the original bytes. Not kept:
//! the chunk layout of PLP values (re-encoded with the exact total length as
//! one chunk, as drivers send parameters) and the sign byte of a negative zero
//! decimal. Values of other types (XML, UDT, sql_variant, TVP,
//! TEXT/NTEXT/IMAGE, json, vector) are kept as their wire bytes in
//! [`SqlValue::Raw`] and written back unchanged.

use std::fmt;

use crate::tds::{DecodeError, EncodeError};

use super::collation::{decode_cp1252, encode_cp1252, CharEncoding, Collation};
use super::datetime::{
    date_from_bytes, date_to_bytes, time_from_bytes, time_len, time_to_bytes, Date, DateTime,
    DateTime2, DateTimeOffset, SmallDateTime, Time,
};
use super::framing::{encode_null, encode_prefixed, RawValue, ValueFraming};
use super::plp::{encode_plp, PlpLength};
use super::type_info::{
    DecimalType, FixedType, LegacyVarLenType, NullableType, TypeContext, TypeInfo, VarLenType,
};

/// A typed value. `Debug` shows the kind and size only, never the content.
#[derive(Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bit(bool),
    TinyInt(u8),
    SmallInt(i16),
    Int(i32),
    BigInt(i64),
    Real(f32),
    Float(f64),
    /// `value` × 10^-scale.
    Decimal {
        value: i128,
        precision: u8,
        scale: u8,
    },
    /// Units of 1/10000.
    Money(i64),
    /// Units of 1/10000.
    SmallMoney(i32),
    /// char(n): bytes in the collation's code page; `None` for legacy CHAR.
    Char {
        bytes: Vec<u8>,
        collation: Option<Collation>,
    },
    /// varchar(n) and varchar(max).
    VarChar {
        bytes: Vec<u8>,
        collation: Option<Collation>,
    },
    NChar(String),
    /// nvarchar(n) and nvarchar(max).
    NVarChar(String),
    Binary(Vec<u8>),
    /// varbinary(n) and varbinary(max).
    VarBinary(Vec<u8>),
    Date(Date),
    Time(Time),
    DateTime(DateTime),
    SmallDateTime(SmallDateTime),
    DateTime2(DateTime2),
    DateTimeOffset(DateTimeOffset),
    /// Wire byte order: the first three groups little-endian.
    Guid([u8; 16]),
    /// A value of a type without a typed form, as its complete wire bytes.
    Raw(Vec<u8>),
}

impl SqlValue {
    /// The text of a character value, if its encoding is known (UTF-16,
    /// UTF-8 or code page 1252 collations).
    pub fn text(&self) -> Option<String> {
        match self {
            SqlValue::NChar(s) | SqlValue::NVarChar(s) => Some(s.clone()),
            SqlValue::Char { bytes, collation } | SqlValue::VarChar { bytes, collation } => {
                decode_text(bytes, collation.as_ref())
            }
            _ => None,
        }
    }

    /// A varchar value holding `text` in the encoding of `collation`, or
    /// `None` if that encoding is not supported or cannot represent `text`.
    pub fn varchar_from_text(text: &str, collation: Collation) -> Option<SqlValue> {
        let bytes = encode_text(text, &collation)?;
        Some(SqlValue::VarChar {
            bytes,
            collation: Some(collation),
        })
    }

    /// Like [`SqlValue::varchar_from_text`], for char(n).
    pub fn char_from_text(text: &str, collation: Collation) -> Option<SqlValue> {
        let bytes = encode_text(text, &collation)?;
        Some(SqlValue::Char {
            bytes,
            collation: Some(collation),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            SqlValue::Null => "Null",
            SqlValue::Bit(_) => "Bit",
            SqlValue::TinyInt(_) => "TinyInt",
            SqlValue::SmallInt(_) => "SmallInt",
            SqlValue::Int(_) => "Int",
            SqlValue::BigInt(_) => "BigInt",
            SqlValue::Real(_) => "Real",
            SqlValue::Float(_) => "Float",
            SqlValue::Decimal { .. } => "Decimal",
            SqlValue::Money(_) => "Money",
            SqlValue::SmallMoney(_) => "SmallMoney",
            SqlValue::Char { .. } => "Char",
            SqlValue::VarChar { .. } => "VarChar",
            SqlValue::NChar(_) => "NChar",
            SqlValue::NVarChar(_) => "NVarChar",
            SqlValue::Binary(_) => "Binary",
            SqlValue::VarBinary(_) => "VarBinary",
            SqlValue::Date(_) => "Date",
            SqlValue::Time(_) => "Time",
            SqlValue::DateTime(_) => "DateTime",
            SqlValue::SmallDateTime(_) => "SmallDateTime",
            SqlValue::DateTime2(_) => "DateTime2",
            SqlValue::DateTimeOffset(_) => "DateTimeOffset",
            SqlValue::Guid(_) => "Guid",
            SqlValue::Raw(_) => "Raw",
        }
    }
}

impl fmt::Debug for SqlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = match self {
            SqlValue::Char { bytes, .. }
            | SqlValue::VarChar { bytes, .. }
            | SqlValue::Binary(bytes)
            | SqlValue::VarBinary(bytes)
            | SqlValue::Raw(bytes) => Some(bytes.len()),
            SqlValue::NChar(s) | SqlValue::NVarChar(s) => Some(s.len()),
            _ => None,
        };
        match len {
            Some(len) => write!(f, "{}(<{len} bytes redacted>)", self.kind()),
            None => write!(f, "{}(<redacted>)", self.kind()),
        }
    }
}

fn decode_text(bytes: &[u8], collation: Option<&Collation>) -> Option<String> {
    match collation?.encoding() {
        CharEncoding::Utf8 => String::from_utf8(bytes.to_vec()).ok(),
        CharEncoding::Windows1252 => Some(decode_cp1252(bytes)),
        CharEncoding::CodePage(_) => None,
    }
}

fn encode_text(text: &str, collation: &Collation) -> Option<Vec<u8>> {
    match collation.encoding() {
        CharEncoding::Utf8 => Some(text.as_bytes().to_vec()),
        CharEncoding::Windows1252 => encode_cp1252(text),
        CharEncoding::CodePage(_) => None,
    }
}

/// Decodes UTF-16LE; odd lengths and unpaired surrogates are errors.
pub fn decode_utf16(bytes: &[u8]) -> Result<String, DecodeError> {
    if bytes.len() % 2 != 0 {
        return Err(malformed("UTF-16 value with an odd byte count"));
    }
    let units = bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| malformed("UTF-16 value with an unpaired surrogate"))
}

fn encode_utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn malformed(reason: &'static str) -> DecodeError {
    DecodeError::Malformed {
        structure: "value",
        reason,
    }
}

fn bad_len(len: usize) -> DecodeError {
    DecodeError::InvalidValue {
        structure: "value",
        field: "length",
        value: len as u64,
    }
}

fn mismatch(type_name: &'static str) -> EncodeError {
    EncodeError::TypeMismatch {
        structure: "value",
        type_name,
    }
}

/// Converts a raw value of type `ti` into a typed value.
pub fn decode_value(ti: &TypeInfo, raw: &RawValue<'_>) -> Result<SqlValue, DecodeError> {
    let Some(data) = raw.data() else {
        return Ok(SqlValue::Null);
    };
    match ti {
        TypeInfo::Fixed(ty) => decode_fixed(*ty, data),
        TypeInfo::Nullable { ty, .. } => decode_nullable(*ty, data),
        TypeInfo::Decimal {
            precision, scale, ..
        } => decode_decimal(data, *precision, *scale),
        TypeInfo::Date => Ok(SqlValue::Date(date_from_bytes(fixed(data)?))),
        TypeInfo::Time { scale } => decode_time(data, *scale).map(SqlValue::Time),
        TypeInfo::DateTime2 { scale } => decode_datetime2(data, *scale).map(SqlValue::DateTime2),
        TypeInfo::DateTimeOffset { scale } => decode_dto(data, *scale),
        TypeInfo::LegacyVarLen { ty, .. } => Ok(decode_legacy(*ty, data)),
        TypeInfo::VarLen { ty, collation, .. } => decode_var_len(*ty, *collation, data),
        _ => Ok(SqlValue::Raw(raw.wire().to_vec())),
    }
}

fn fixed<const N: usize>(data: &[u8]) -> Result<[u8; N], DecodeError> {
    data.try_into().map_err(|_| bad_len(data.len()))
}

fn decode_fixed(ty: FixedType, data: &[u8]) -> Result<SqlValue, DecodeError> {
    let v = match ty {
        FixedType::Null => SqlValue::Null,
        FixedType::Int1 => SqlValue::TinyInt(u8::from_le_bytes(fixed(data)?)),
        FixedType::Bit => decode_bit(data)?,
        FixedType::Int2 => SqlValue::SmallInt(i16::from_le_bytes(fixed(data)?)),
        FixedType::Int4 => SqlValue::Int(i32::from_le_bytes(fixed(data)?)),
        FixedType::Int8 => SqlValue::BigInt(i64::from_le_bytes(fixed(data)?)),
        FixedType::Flt4 => SqlValue::Real(f32::from_le_bytes(fixed(data)?)),
        FixedType::Flt8 => SqlValue::Float(f64::from_le_bytes(fixed(data)?)),
        FixedType::Money => SqlValue::Money(decode_money(fixed(data)?)),
        FixedType::Money4 => SqlValue::SmallMoney(i32::from_le_bytes(fixed(data)?)),
        FixedType::DateTime => decode_datetime(fixed(data)?),
        FixedType::DateTim4 => decode_smalldatetime(fixed(data)?),
    };
    Ok(v)
}

fn decode_bit(data: &[u8]) -> Result<SqlValue, DecodeError> {
    match data {
        [0] => Ok(SqlValue::Bit(false)),
        [1] => Ok(SqlValue::Bit(true)),
        _ => Err(malformed("bit value other than 0 or 1")),
    }
}

/// MONEY: the high 32 bits first, each half little-endian (2.2.5.5.1.4).
fn decode_money(b: [u8; 8]) -> i64 {
    let high = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let low = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    (i64::from(high) << 32) | i64::from(low)
}

fn encode_money(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&((v >> 32) as i32).to_le_bytes());
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

fn decode_datetime(b: [u8; 8]) -> SqlValue {
    SqlValue::DateTime(DateTime {
        days: i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        ticks: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    })
}

fn decode_smalldatetime(b: [u8; 4]) -> SqlValue {
    SqlValue::SmallDateTime(SmallDateTime {
        days: u16::from_le_bytes([b[0], b[1]]),
        minutes: u16::from_le_bytes([b[2], b[3]]),
    })
}

/// Nullable types are decoded by the length of the value itself.
fn decode_nullable(ty: NullableType, data: &[u8]) -> Result<SqlValue, DecodeError> {
    let fixed_ty = match (ty, data.len()) {
        (NullableType::IntN, 1) => FixedType::Int1,
        (NullableType::IntN, 2) => FixedType::Int2,
        (NullableType::IntN, 4) => FixedType::Int4,
        (NullableType::IntN, 8) => FixedType::Int8,
        (NullableType::BitN, 1) => FixedType::Bit,
        (NullableType::FltN, 4) => FixedType::Flt4,
        (NullableType::FltN, 8) => FixedType::Flt8,
        (NullableType::MoneyN, 4) => FixedType::Money4,
        (NullableType::MoneyN, 8) => FixedType::Money,
        (NullableType::DateTimeN, 4) => FixedType::DateTim4,
        (NullableType::DateTimeN, 8) => FixedType::DateTime,
        (NullableType::Guid, 16) => return Ok(SqlValue::Guid(fixed(data)?)),
        (_, len) => return Err(bad_len(len)),
    };
    decode_fixed(fixed_ty, data)
}

/// DECIMAL: sign byte (1 = positive) then a little-endian magnitude of
/// 4, 8, 12 or 16 bytes (2.2.5.5.1.6).
fn decode_decimal(data: &[u8], precision: u8, scale: u8) -> Result<SqlValue, DecodeError> {
    let Some((&sign, magnitude)) = data.split_first() else {
        return Err(bad_len(0));
    };
    if !matches!(magnitude.len(), 4 | 8 | 12 | 16) || sign > 1 {
        return Err(malformed("decimal sign or length"));
    }
    let mut buf = [0u8; 16];
    buf[..magnitude.len()].copy_from_slice(magnitude);
    let abs = u128::from_le_bytes(buf);
    let abs = i128::try_from(abs).map_err(|_| malformed("decimal magnitude out of range"))?;
    let value = if sign == 1 { abs } else { -abs };
    Ok(SqlValue::Decimal {
        value,
        precision,
        scale,
    })
}

fn decode_time(data: &[u8], scale: u8) -> Result<Time, DecodeError> {
    if data.len() != time_len(scale) {
        return Err(bad_len(data.len()));
    }
    let t = time_from_bytes(data, scale);
    if !t.is_valid() {
        return Err(malformed("time beyond one day"));
    }
    Ok(t)
}

fn decode_datetime2(data: &[u8], scale: u8) -> Result<DateTime2, DecodeError> {
    let n = time_len(scale);
    if data.len() != n + 3 {
        return Err(bad_len(data.len()));
    }
    let time = decode_time(&data[..n], scale)?;
    let date = date_from_bytes(fixed(&data[n..])?);
    Ok(DateTime2 { date, time })
}

fn decode_dto(data: &[u8], scale: u8) -> Result<SqlValue, DecodeError> {
    let Some(split) = data.len().checked_sub(2) else {
        return Err(bad_len(data.len()));
    };
    let utc = decode_datetime2(&data[..split], scale)?;
    let offset_minutes = i16::from_le_bytes(fixed(&data[split..])?);
    Ok(SqlValue::DateTimeOffset(DateTimeOffset {
        utc,
        offset_minutes,
    }))
}

fn decode_legacy(ty: LegacyVarLenType, data: &[u8]) -> SqlValue {
    let bytes = data.to_vec();
    match ty {
        LegacyVarLenType::Char => SqlValue::Char {
            bytes,
            collation: None,
        },
        LegacyVarLenType::VarChar => SqlValue::VarChar {
            bytes,
            collation: None,
        },
        LegacyVarLenType::Binary => SqlValue::Binary(bytes),
        LegacyVarLenType::VarBinary => SqlValue::VarBinary(bytes),
    }
}

fn decode_var_len(
    ty: VarLenType,
    collation: Option<Collation>,
    data: &[u8],
) -> Result<SqlValue, DecodeError> {
    let bytes = data.to_vec();
    let v = match ty {
        VarLenType::BigChar => SqlValue::Char { bytes, collation },
        VarLenType::BigVarChar => SqlValue::VarChar { bytes, collation },
        VarLenType::NChar => SqlValue::NChar(decode_utf16(data)?),
        VarLenType::NVarChar => SqlValue::NVarChar(decode_utf16(data)?),
        VarLenType::BigBinary => SqlValue::Binary(bytes),
        VarLenType::BigVarBinary => SqlValue::VarBinary(bytes),
    };
    Ok(v)
}

/// Writes `v` as a value of type `ti` in a row.
pub fn encode_value(ti: &TypeInfo, v: &SqlValue, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_value_in(ti, TypeContext::Column, v, out)
}

/// Writes `v` as a value of type `ti` framed for `ctx`. [`SqlValue::Raw`]
/// is written unchanged: it must already be framed for `ti` and `ctx`.
pub fn encode_value_in(
    ti: &TypeInfo,
    ctx: TypeContext,
    v: &SqlValue,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if let SqlValue::Raw(wire) = v {
        out.extend_from_slice(wire);
        return Ok(());
    }
    if *v == SqlValue::Null {
        return encode_null(ti, ctx, out);
    }
    let data = value_bytes(ti, v)?;
    match ti.framing_in(ctx) {
        ValueFraming::Plp => encode_plp(Some(&data), data.len(), PlpLength::Known, out),
        framing => encode_prefixed(framing, &data, out),
    }
}

/// The unframed bytes of `v`, checked against `ti`.
fn value_bytes(ti: &TypeInfo, v: &SqlValue) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    match ti {
        TypeInfo::Fixed(ty) => fixed_bytes(*ty, v, &mut out)?,
        TypeInfo::Nullable { ty, .. } => nullable_bytes(*ty, v, &mut out)?,
        TypeInfo::Decimal { ty, len, .. } => decimal_bytes(*ty, *len, v, &mut out)?,
        TypeInfo::Date => match v {
            SqlValue::Date(d) => date_to_bytes(d, &mut out),
            _ => return Err(mismatch("date")),
        },
        TypeInfo::Time { scale } => match v {
            SqlValue::Time(t) if t.scale == *scale => time_to_bytes(t, &mut out),
            _ => return Err(mismatch("time")),
        },
        TypeInfo::DateTime2 { scale } => match v {
            SqlValue::DateTime2(dt) if dt.time.scale == *scale => datetime2_bytes(dt, &mut out),
            _ => return Err(mismatch("datetime2")),
        },
        TypeInfo::DateTimeOffset { scale } => match v {
            SqlValue::DateTimeOffset(dto) if dto.utc.time.scale == *scale => {
                datetime2_bytes(&dto.utc, &mut out);
                out.extend_from_slice(&dto.offset_minutes.to_le_bytes());
            }
            _ => return Err(mismatch("datetimeoffset")),
        },
        TypeInfo::LegacyVarLen { .. } | TypeInfo::VarLen { .. } => string_bytes(ti, v, &mut out)?,
        _ => return Err(mismatch("type without a typed value form")),
    }
    Ok(out)
}

fn datetime2_bytes(dt: &DateTime2, out: &mut Vec<u8>) {
    time_to_bytes(&dt.time, out);
    date_to_bytes(&dt.date, out);
}

fn fixed_bytes(ty: FixedType, v: &SqlValue, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match (ty, v) {
        (FixedType::Int1, SqlValue::TinyInt(x)) => out.push(*x),
        (FixedType::Bit, SqlValue::Bit(x)) => out.push(u8::from(*x)),
        (FixedType::Int2, SqlValue::SmallInt(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (FixedType::Int4, SqlValue::Int(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (FixedType::Int8, SqlValue::BigInt(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (FixedType::Flt4, SqlValue::Real(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (FixedType::Flt8, SqlValue::Float(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (FixedType::Money, SqlValue::Money(x)) => encode_money(*x, out),
        (FixedType::Money4, SqlValue::SmallMoney(x)) => out.extend_from_slice(&x.to_le_bytes()),
        (FixedType::DateTime, SqlValue::DateTime(x)) => {
            out.extend_from_slice(&x.days.to_le_bytes());
            out.extend_from_slice(&x.ticks.to_le_bytes());
        }
        (FixedType::DateTim4, SqlValue::SmallDateTime(x)) => {
            out.extend_from_slice(&x.days.to_le_bytes());
            out.extend_from_slice(&x.minutes.to_le_bytes());
        }
        _ => return Err(mismatch("fixed-length type")),
    }
    Ok(())
}

fn nullable_bytes(ty: NullableType, v: &SqlValue, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let fixed_ty = match (ty, v) {
        (NullableType::IntN, SqlValue::TinyInt(_)) => FixedType::Int1,
        (NullableType::IntN, SqlValue::SmallInt(_)) => FixedType::Int2,
        (NullableType::IntN, SqlValue::Int(_)) => FixedType::Int4,
        (NullableType::IntN, SqlValue::BigInt(_)) => FixedType::Int8,
        (NullableType::BitN, SqlValue::Bit(_)) => FixedType::Bit,
        (NullableType::FltN, SqlValue::Real(_)) => FixedType::Flt4,
        (NullableType::FltN, SqlValue::Float(_)) => FixedType::Flt8,
        (NullableType::MoneyN, SqlValue::SmallMoney(_)) => FixedType::Money4,
        (NullableType::MoneyN, SqlValue::Money(_)) => FixedType::Money,
        (NullableType::DateTimeN, SqlValue::SmallDateTime(_)) => FixedType::DateTim4,
        (NullableType::DateTimeN, SqlValue::DateTime(_)) => FixedType::DateTime,
        (NullableType::Guid, SqlValue::Guid(g)) => {
            out.extend_from_slice(g);
            return Ok(());
        }
        _ => return Err(mismatch("nullable fixed-length type")),
    };
    fixed_bytes(fixed_ty, v, out)
}

fn decimal_bytes(
    ty: DecimalType,
    len: u8,
    v: &SqlValue,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let SqlValue::Decimal { value, .. } = v else {
        return Err(mismatch(match ty {
            DecimalType::NumericN | DecimalType::Numeric => "numeric",
            _ => "decimal",
        }));
    };
    let magnitude_len = usize::from(len.saturating_sub(1));
    let abs = value.unsigned_abs().to_le_bytes();
    if abs[magnitude_len.min(16)..].iter().any(|&b| b != 0) {
        return Err(super::too_long("DECIMAL", "magnitude", 16, magnitude_len));
    }
    out.push(u8::from(*value >= 0));
    out.extend_from_slice(&abs[..magnitude_len.min(16)]);
    Ok(())
}

fn string_bytes(ti: &TypeInfo, v: &SqlValue, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let is = |t: VarLenType| matches!(ti, TypeInfo::VarLen { ty, .. } if *ty == t);
    let legacy = |t: LegacyVarLenType| matches!(ti, TypeInfo::LegacyVarLen { ty, .. } if *ty == t);
    match v {
        SqlValue::Char { bytes, .. }
            if is(VarLenType::BigChar) || legacy(LegacyVarLenType::Char) =>
        {
            out.extend_from_slice(bytes)
        }
        SqlValue::VarChar { bytes, .. }
            if is(VarLenType::BigVarChar) || legacy(LegacyVarLenType::VarChar) =>
        {
            out.extend_from_slice(bytes)
        }
        SqlValue::NChar(s) if is(VarLenType::NChar) => out.extend(encode_utf16(s)),
        SqlValue::NVarChar(s) if is(VarLenType::NVarChar) => out.extend(encode_utf16(s)),
        SqlValue::Binary(b) if is(VarLenType::BigBinary) || legacy(LegacyVarLenType::Binary) => {
            out.extend_from_slice(b)
        }
        SqlValue::VarBinary(b)
            if is(VarLenType::BigVarBinary) || legacy(LegacyVarLenType::VarBinary) =>
        {
            out.extend_from_slice(b)
        }
        _ => return Err(mismatch("character or binary type")),
    }
    Ok(())
}

/// The text form of a GUID in wire order, e.g. `c70d7bf1-e5c7-40c5-...`.
pub fn guid_to_string(g: &[u8; 16]) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    let tail: String = g[10..].iter().map(|b| format!("{b:02x}")).collect();
    format!("{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{tail}", g[8], g[9])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::types::datetime::Civil;
    use crate::tds::types::framing::decode_value_raw;
    use crate::tds::Reader;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/test-suite-bytes/r2dbc-mssql_test_vectors.jsonl"
    ));

    /// The bytes of the vector `method`, minus `skip` leading bytes.
    fn vector(method: &str, skip: usize) -> Vec<u8> {
        let line = VECTORS
            .lines()
            .find(|l| l.contains(&format!("\"method\": \"{method}\"")))
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        let hex = json["hex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        bytes[skip..].to_vec()
    }

    fn type_info(bytes: &[u8]) -> TypeInfo {
        let mut r = Reader::new(bytes, "TYPE_INFO");
        let ti = TypeInfo::decode(&mut r).unwrap();
        r.finish().unwrap();
        ti
    }

    /// Decodes one value, checks the buffer is used up and that encoding
    /// the typed value gives the same bytes.
    fn round_trip(ti: &TypeInfo, bytes: &[u8]) -> SqlValue {
        let mut r = Reader::new(bytes, "value");
        let raw = decode_value_raw(ti, &mut r).unwrap();
        r.finish().unwrap();
        let v = decode_value(ti, &raw).unwrap();

        let mut out = Vec::new();
        encode_value(ti, &v, &mut out).unwrap();
        assert_eq!(out, bytes, "{v:?}");
        v
    }

    fn civil(y: i32, mo: u8, d: u8, h: u8, mi: u8, s: u8, ns: u32) -> Civil {
        Civil {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
            nanosecond: ns,
        }
    }

    #[test]
    fn datetime_vector() {
        let v = round_trip(
            &type_info(&[0x6F, 0x08]),
            &vector("shouldDecodeDateTime", 0),
        );
        let SqlValue::DateTime(dt) = v else {
            panic!("{v:?}")
        };
        assert_eq!(dt.to_civil(), civil(2018, 10, 27, 15, 40, 57, 100_000_000));
    }

    #[test]
    fn datetime2_vector() {
        let v = round_trip(
            &type_info(&[0x2A, 0x07]),
            &vector("shouldDecodeDateTime2", 0),
        );
        let SqlValue::DateTime2(dt) = v else {
            panic!("{v:?}")
        };
        assert_eq!(dt.to_civil(), civil(2018, 10, 27, 15, 41, 0, 162_000_000));
    }

    #[test]
    fn datetimeoffset_vectors() {
        let ti = type_info(&[0x2B, 0x07]);
        let v = round_trip(&ti, &vector("shouldDecodeDateTimeOffset", 0));
        let SqlValue::DateTimeOffset(dto) = v else {
            panic!("{v:?}")
        };
        assert_eq!(dto.offset_minutes, 45);
        assert_eq!(
            dto.utc.to_civil(),
            civil(2018, 8, 27, 16, 56, 14, 890_000_000)
        );

        let v = round_trip(&ti, &vector("shouldDecodeDateTimeOffsetNegativeTz", 0));
        assert!(matches!(v, SqlValue::DateTimeOffset(d) if d.offset_minutes == -45));
    }

    #[test]
    fn numeric_vectors() {
        let v = round_trip(&type_info(&[0x6D, 0x08]), &vector("shouldDecodeFloat", 0));
        assert_eq!(v, SqlValue::Float(11344.554));

        let v = round_trip(&type_info(&[0x6E, 0x08]), &vector("shouldEncodeMoney", 1));
        assert_eq!(v, SqlValue::Money(73_014_944_032));

        let v = round_trip(&type_info(&[0x26, 0x08]), &vector("shouldEncodeLong", 1));
        assert_eq!(v, SqlValue::BigInt(0x0100_0000_0000_0001));
    }

    #[test]
    fn guid_vector() {
        let v = round_trip(&type_info(&[0x24, 0x10]), &vector("shouldEncodeUuid", 1));
        let SqlValue::Guid(g) = v else {
            panic!("{v:?}")
        };
        assert_eq!(guid_to_string(&g), "c70d7bf1-e5c7-40c5-98c7-a12f7e686724");
    }

    #[test]
    fn binary_vector() {
        let ti = type_info(&[0xAD, 0x0A, 0x00]);
        let v = round_trip(&ti, &vector("shouldDecodeBinaryToByteArray", 0));
        assert_eq!(v, SqlValue::Binary(b"foo\0\0\0\0\0\0\0".to_vec()));
    }

    #[test]
    fn nvarchar_null_vector() {
        let bytes = vector("shouldEncodeNull", 0);
        let ti = type_info(&[&[0xE7][..], &bytes[..7]].concat());
        assert_eq!(round_trip(&ti, &bytes[7..]), SqlValue::Null);
    }

    #[test]
    fn plp_chunk_boundary_inside_a_character() {
        let bytes = vector("shouldDecodeVarcharMaxSplitCharacter", 0);
        let ti = TypeInfo::nvarchar(0xFFFF, Collation::new(0x0409, 0, 0, 52));
        let mut r = Reader::new(&bytes, "value");
        let raw = decode_value_raw(&ti, &mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(raw.wire(), bytes);

        let v = decode_value(&ti, &raw).unwrap();
        let text = "leanne.ashton@dd-pub.com,david.maassen@dd-pub.com";
        assert_eq!(v, SqlValue::NVarChar(text.into()));
        assert_eq!(v.text().unwrap(), text);

        // Re-encoded as one chunk, and back to the same text.
        let mut out = Vec::new();
        encode_value(&ti, &v, &mut out).unwrap();
        assert_eq!(out.len(), 8 + 4 + 98 + 4);
        let mut r = Reader::new(&out, "value");
        let again = decode_value(&ti, &decode_value_raw(&ti, &mut r).unwrap()).unwrap();
        assert_eq!(again, v);
    }

    #[test]
    fn truncated_plp_is_an_error() {
        let bytes = vector("shouldReportRemainderInDecodeBuffer", 0);
        let ti = TypeInfo::nvarchar(0xFFFF, Collation::default());
        let mut r = Reader::new(&bytes, "value");
        assert!(matches!(
            decode_value_raw(&ti, &mut r),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn fixed_and_nullable_integers() {
        assert_eq!(
            round_trip(&type_info(&[0x38]), &[1, 0, 0, 0x80]),
            SqlValue::Int(i32::MIN + 1)
        );
        assert_eq!(
            round_trip(&type_info(&[0x30]), &[0xFF]),
            SqlValue::TinyInt(255)
        );
        assert_eq!(round_trip(&type_info(&[0x32]), &[1]), SqlValue::Bit(true));
        assert_eq!(
            round_trip(&type_info(&[0x26, 2]), &[2, 0xFE, 0xFF]),
            SqlValue::SmallInt(-2)
        );
        assert_eq!(round_trip(&type_info(&[0x26, 4]), &[0]), SqlValue::Null);
        assert_eq!(round_trip(&type_info(&[0x1F]), &[]), SqlValue::Null);
        assert_eq!(
            round_trip(&type_info(&[0x7A]), &[0x10, 0x27, 0, 0]),
            SqlValue::SmallMoney(10_000)
        );
        let money = [0xFF, 0xFF, 0xFF, 0xFF, 0xF0, 0xD8, 0xFF, 0xFF];
        assert_eq!(
            round_trip(&type_info(&[0x3C]), &money),
            SqlValue::Money(-10_000)
        );
    }

    #[test]
    fn decimal_values() {
        let ti = type_info(&[0x6A, 0x11, 0x26, 0x04]);
        let mut bytes = vec![0x11, 0x00];
        bytes.extend_from_slice(&12_345_678_901_234_567_890_u128.to_le_bytes());
        let v = round_trip(&ti, &bytes);
        assert_eq!(
            v,
            SqlValue::Decimal {
                value: -12_345_678_901_234_567_890,
                precision: 38,
                scale: 4
            }
        );

        let small = type_info(&[0x6C, 0x05, 0x09, 0x02]);
        assert!(matches!(
            round_trip(&small, &[5, 1, 0x39, 0x30, 0, 0]),
            SqlValue::Decimal { value: 12345, .. }
        ));
        let too_big = SqlValue::Decimal {
            value: 1 << 40,
            precision: 9,
            scale: 2,
        };
        assert!(encode_value(&small, &too_big, &mut Vec::new()).is_err());
    }

    #[test]
    fn time_values_at_every_scale() {
        for scale in 0..=7u8 {
            let t = Time::from_hms_nanos(23, 59, 59, 999_999_999, scale).unwrap();
            let mut bytes = vec![time_len(scale) as u8];
            time_to_bytes(&t, &mut bytes);
            assert_eq!(
                round_trip(&type_info(&[0x29, scale]), &bytes),
                SqlValue::Time(t)
            );

            let dt = DateTime2 {
                date: Date::from_ymd(9999, 12, 31).unwrap(),
                time: t,
            };
            let mut bytes = vec![time_len(scale) as u8 + 3];
            datetime2_bytes(&dt, &mut bytes);
            assert_eq!(
                round_trip(&type_info(&[0x2A, scale]), &bytes),
                SqlValue::DateTime2(dt)
            );
        }
        let date = Date::from_ymd(1, 1, 1).unwrap();
        assert_eq!(
            round_trip(&TypeInfo::Date, &[3, 0, 0, 0]),
            SqlValue::Date(date)
        );
    }

    #[test]
    fn character_values() {
        let latin = Collation::new(0x0409, 0x00D0_0000, 0, 52);
        let ti = TypeInfo::VarLen {
            ty: VarLenType::BigVarChar,
            max_len: 50,
            collation: Some(latin),
        };
        let v = round_trip(&ti, &[3, 0, b'c', b'a', 0xE9]);
        assert_eq!(v.text().unwrap(), "ca\u{e9}");

        let utf8 = Collation::new(0x0409, 0x0400_0000, 0, 0);
        let v = SqlValue::VarChar {
            bytes: "caf\u{e9}".as_bytes().to_vec(),
            collation: Some(utf8),
        };
        assert_eq!(v.text().unwrap(), "caf\u{e9}");
        assert_eq!(SqlValue::varchar_from_text("caf\u{e9}", utf8), Some(v));
        let latin_value = SqlValue::char_from_text("\u{20ac}1", latin).unwrap();
        assert!(matches!(&latin_value, SqlValue::Char { bytes, .. } if bytes == &[0x80, b'1']));
        assert_eq!(SqlValue::varchar_from_text("\u{4e2d}", latin), None);

        let nchar = TypeInfo::VarLen {
            ty: VarLenType::NChar,
            max_len: 4,
            collation: Some(latin),
        };
        assert_eq!(
            round_trip(&nchar, &[4, 0, b'h', 0, b'i', 0]),
            SqlValue::NChar("hi".into())
        );

        let mut r = Reader::new(&[2, 0, 0x00, 0xD8], "value");
        let raw = decode_value_raw(&nchar, &mut r).unwrap();
        assert!(decode_value(&nchar, &raw).is_err());
    }

    #[test]
    fn other_types_stay_raw() {
        let xml = type_info(&[0xF1, 0x00]);
        let bytes = [
            0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, b'<', 0, 0, 0, 0, 0,
        ];
        assert_eq!(round_trip(&xml, &bytes), SqlValue::Raw(bytes.to_vec()));
    }

    #[test]
    fn type_mismatch_is_an_encode_error() {
        let ti = type_info(&[0x26, 0x04]);
        assert!(encode_value(&ti, &SqlValue::NVarChar("x".into()), &mut Vec::new()).is_err());
        assert!(encode_value(&type_info(&[0x38]), &SqlValue::Null, &mut Vec::new()).is_err());
    }

    #[test]
    fn debug_redacts_content() {
        let v = SqlValue::NVarChar("secret".into());
        assert_eq!(format!("{v:?}"), "NVarChar(<6 bytes redacted>)");
        assert!(!format!("{:?}", SqlValue::Int(42)).contains("42"));
    }

    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::tds::types::framing::decode_value_raw_in;
        use crate::tds::types::testing::arb_typed;

        proptest! {
            #[test]
            fn encode_decode_encode_identity((ti, v) in arb_typed()) {
                for ctx in [TypeContext::Column, TypeContext::Rpc] {
                    let mut bytes = Vec::new();
                    encode_value_in(&ti, ctx, &v, &mut bytes).unwrap();

                    let mut r = Reader::new(&bytes, "value");
                    let raw = decode_value_raw_in(&ti, ctx, &mut r).unwrap();
                    r.finish().unwrap();
                    let decoded = decode_value(&ti, &raw).unwrap();

                    let mut again = Vec::new();
                    encode_value_in(&ti, ctx, &decoded, &mut again).unwrap();
                    prop_assert_eq!(&again, &bytes);
                    if !matches!(v, SqlValue::Real(_) | SqlValue::Float(_)) {
                        prop_assert_eq!(&decoded, &v);
                    }
                }
            }
        }
    }
}
