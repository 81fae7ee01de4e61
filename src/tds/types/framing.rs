//! How one value is delimited on the wire, by its TYPE_INFO ([MS-TDS]
//! 2.2.5.2 "Data Type Dependent Data Streams", TYPE_VARBYTE in 2.2.5.6), and
//! a complete-buffer reader that cuts one value out as a [`RawValue`].

use std::borrow::Cow;
use std::fmt;

use crate::tds::{DecodeError, EncodeError, Reader};

use super::plp::{decode_plp, PLP_NULL};
use super::type_info::{TypeContext, TypeInfo};

/// Largest TEXT/NTEXT/IMAGE value accepted, in bytes: 2^31 - 1, the storage
/// limit SQL Server documents for text and image.
pub const MAX_LONG_LEN: u32 = 0x7FFF_FFFF;

/// Largest sql_variant value accepted, in bytes: SQL Server documents 8016
/// bytes as the maximum length of sql_variant data.
pub const MAX_VARIANT_LEN: u32 = 8016;

/// Text pointer length used by SQL Server in TEXT/NTEXT/IMAGE row values
/// (16 bytes; 2.2.5.2.2 allows any BYTELEN, so this is not enforced).
pub const TEXT_PTR_LEN: usize = 16;

/// Size of the timestamp after a text pointer (2.2.5.2.2).
pub const TEXT_TIMESTAMP_LEN: usize = 8;

/// fDefault in TVP column flags: the column has no data in TVP rows.
/// TODO(tdsguard): confirm the bit position against a driver capture.
pub const TVP_COLUMN_DEFAULT: u16 = 0x0200;

const TVP_ROW_TOKEN: u8 = 0x01;
const TVP_END_TOKEN: u8 = 0x00;

/// The framing of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFraming {
    /// Exactly this many bytes, no prefix, never NULL (fixed-length types;
    /// 0 for NULLTYPE).
    Fixed(usize),
    /// BYTELEN prefix; 0 = NULL (nullable numeric, GUID, decimal, date and
    /// time types, legacy CHAR/VARCHAR/BINARY/VARBINARY). "Other nullable data
    /// types have a length of 0 if they are null" (2.2.4.2.1.3), so a legacy
    /// string type cannot carry an empty value.
    /// TODO(tdsguard): confirm legacy CHAR/VARCHAR NULL against a 7.x capture.
    ByteLen,
    /// USHORTLEN prefix; 0xFFFF = NULL (BIG*/N* types below max, vector;
    /// 2.2.4.2.1.3).
    UShortLen,
    /// Row form of TEXT/NTEXT/IMAGE: TextPtrLen 1 (0 = NULL), text pointer,
    /// 8-byte timestamp, LONGLEN, data.
    TextPtr,
    /// RPC form of TEXT/NTEXT/IMAGE: LONGLEN; "Null is represented by a
    /// length of -1 (0xFFFFFFFF)" (2.2.4.2.1.3).
    LongLen,
    /// PLP body (see [`super::plp`]).
    Plp,
    /// sql_variant: LONGLEN, 0 = NULL, then BaseType, PropBytes, properties,
    /// data.
    Variant,
    /// TVP rows: TVP_ROW_TOKEN + column values ..., TVP_END_TOKEN.
    Tvp,
}

impl TypeInfo {
    /// Framing of values in ROW, NBCROW and RETURNVALUE.
    pub fn framing(&self) -> ValueFraming {
        self.framing_in(TypeContext::Column)
    }

    /// Framing of values in `ctx`; RPC parameters send TEXT/NTEXT/IMAGE
    /// without a text pointer.
    pub fn framing_in(&self, ctx: TypeContext) -> ValueFraming {
        if self.is_plp() {
            return ValueFraming::Plp;
        }
        match self {
            TypeInfo::Fixed(ty) => ValueFraming::Fixed(ty.size()),
            TypeInfo::Nullable { .. }
            | TypeInfo::Decimal { .. }
            | TypeInfo::Date
            | TypeInfo::Time { .. }
            | TypeInfo::DateTime2 { .. }
            | TypeInfo::DateTimeOffset { .. }
            | TypeInfo::LegacyVarLen { .. } => ValueFraming::ByteLen,
            TypeInfo::VarLen { .. } | TypeInfo::Vector { .. } => ValueFraming::UShortLen,
            TypeInfo::Long { .. } => match ctx {
                TypeContext::Column => ValueFraming::TextPtr,
                TypeContext::Rpc => ValueFraming::LongLen,
            },
            TypeInfo::Variant { .. } => ValueFraming::Variant,
            TypeInfo::Tvp(_) => ValueFraming::Tvp,
            TypeInfo::Xml { .. } | TypeInfo::Udt(_) | TypeInfo::Json => ValueFraming::Plp,
        }
    }
}

/// One value as it was framed on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct RawValue<'a> {
    wire: &'a [u8],
    data: Option<Cow<'a, [u8]>>,
}

impl<'a> RawValue<'a> {
    /// The value's bytes exactly as received, length prefix included.
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }

    pub fn is_null(&self) -> bool {
        self.data.is_none()
    }

    /// The value's data without framing (PLP chunks joined; for TEXT the
    /// bytes after the length; for sql_variant BaseType onwards; for a TVP
    /// the rows as sent), or `None` for NULL.
    pub fn data(&self) -> Option<&[u8]> {
        self.data.as_deref()
    }

    /// Writes the wire bytes back unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.wire);
    }

    /// A value from its wire bytes and its data (`None` for NULL).
    pub(crate) fn from_parts(wire: &'a [u8], data: Option<Cow<'a, [u8]>>) -> Self {
        RawValue { wire, data }
    }

    /// Copies borrowed data so the value outlives the input buffer.
    pub fn into_owned(self) -> (Vec<u8>, Option<Vec<u8>>) {
        (self.wire.to_vec(), self.data.map(Cow::into_owned))
    }
}

impl fmt::Debug for RawValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue")
            .field("wire_len", &self.wire.len())
            .field("data_len", &self.data.as_ref().map(|d| d.len()))
            .finish()
    }
}

/// Reads one complete value of type `ti` as found in a row.
pub fn decode_value_raw<'a>(
    ti: &TypeInfo,
    r: &mut Reader<'a>,
) -> Result<RawValue<'a>, DecodeError> {
    decode_value_raw_in(ti, TypeContext::Column, r)
}

/// Reads one complete value of type `ti` as framed in `ctx`.
pub fn decode_value_raw_in<'a>(
    ti: &TypeInfo,
    ctx: TypeContext,
    r: &mut Reader<'a>,
) -> Result<RawValue<'a>, DecodeError> {
    let start = r.rest();
    let data = match ti.framing_in(ctx) {
        ValueFraming::Fixed(n) => Some(Cow::Borrowed(r.bytes(n)?)),
        ValueFraming::ByteLen => read_byte_len(r)?,
        ValueFraming::UShortLen => read_ushort_len(r)?,
        ValueFraming::TextPtr => read_text_ptr(r)?,
        ValueFraming::LongLen => read_long_len(r)?,
        ValueFraming::Plp => decode_plp(r)?.1,
        ValueFraming::Variant => read_variant(r)?,
        ValueFraming::Tvp => read_tvp_rows(ti, r)?,
    };
    let used = start.len() - r.remaining();
    Ok(RawValue {
        wire: &start[..used],
        data,
    })
}

type Data<'a> = Option<Cow<'a, [u8]>>;

fn read_byte_len<'a>(r: &mut Reader<'a>) -> Result<Data<'a>, DecodeError> {
    let len = r.u8()?;
    if len == 0 {
        return Ok(None);
    }
    Ok(Some(Cow::Borrowed(r.bytes(usize::from(len))?)))
}

fn read_ushort_len<'a>(r: &mut Reader<'a>) -> Result<Data<'a>, DecodeError> {
    let len = r.u16_le()?;
    if len == 0xFFFF {
        return Ok(None);
    }
    Ok(Some(Cow::Borrowed(r.bytes(usize::from(len))?)))
}

fn read_long_data<'a>(r: &mut Reader<'a>, len: u32) -> Result<Data<'a>, DecodeError> {
    if len > MAX_LONG_LEN {
        return Err(DecodeError::TooLarge {
            structure: r.structure(),
            length: len as usize,
            limit: MAX_LONG_LEN as usize,
        });
    }
    Ok(Some(Cow::Borrowed(r.bytes(len as usize)?)))
}

fn read_text_ptr<'a>(r: &mut Reader<'a>) -> Result<Data<'a>, DecodeError> {
    let ptr_len = r.u8()?;
    if ptr_len == 0 {
        return Ok(None);
    }
    r.skip(usize::from(ptr_len) + TEXT_TIMESTAMP_LEN)?;
    let len = r.u32_le()?;
    read_long_data(r, len)
}

fn read_long_len<'a>(r: &mut Reader<'a>) -> Result<Data<'a>, DecodeError> {
    let len = r.u32_le()?;
    if len == 0xFFFF_FFFF {
        return Ok(None);
    }
    read_long_data(r, len)
}

fn read_variant<'a>(r: &mut Reader<'a>) -> Result<Data<'a>, DecodeError> {
    let len = r.u32_le()?;
    if len == 0 {
        return Ok(None);
    }
    if len > MAX_VARIANT_LEN {
        return Err(DecodeError::TooLarge {
            structure: r.structure(),
            length: len as usize,
            limit: MAX_VARIANT_LEN as usize,
        });
    }
    // BaseType and PropBytes come first (2.2.5.5.4).
    if len < 2 {
        return Err(DecodeError::Malformed {
            structure: r.structure(),
            reason: "sql_variant shorter than its BaseType and PropBytes",
        });
    }
    Ok(Some(Cow::Borrowed(r.bytes(len as usize)?)))
}

/// Rows of a TVP value: each TVP_ROW_TOKEN is followed by one value per
/// column without fDefault, framed as in an RPC parameter.
fn read_tvp_rows<'a>(ti: &TypeInfo, r: &mut Reader<'a>) -> Result<Data<'a>, DecodeError> {
    let TypeInfo::Tvp(tvp) = ti else {
        return Err(DecodeError::Malformed {
            structure: r.structure(),
            reason: "TVP framing without TVP metadata",
        });
    };
    let start = r.rest();
    loop {
        match r.u8()? {
            TVP_END_TOKEN => break,
            TVP_ROW_TOKEN => read_tvp_row(tvp, r)?,
            other => {
                return Err(DecodeError::InvalidValue {
                    structure: r.structure(),
                    field: "TVP row token",
                    value: u64::from(other),
                })
            }
        }
    }
    let used = start.len() - r.remaining();
    Ok(Some(Cow::Borrowed(&start[..used])))
}

fn read_tvp_row(tvp: &super::TvpTypeInfo, r: &mut Reader<'_>) -> Result<(), DecodeError> {
    for col in tvp.columns.iter().flatten() {
        if col.flags & TVP_COLUMN_DEFAULT != 0 {
            continue;
        }
        decode_value_raw_in(&col.type_info, TypeContext::Rpc, r)?;
    }
    Ok(())
}

/// Writes the NULL form of a value of type `ti` in `ctx`. Fixed-length types
/// have no NULL form.
pub fn encode_null(ti: &TypeInfo, ctx: TypeContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match ti.framing_in(ctx) {
        ValueFraming::Fixed(0) => {}
        ValueFraming::Fixed(_) => {
            return Err(EncodeError::TypeMismatch {
                structure: "value",
                type_name: "fixed-length type (not nullable)",
            })
        }
        ValueFraming::ByteLen | ValueFraming::TextPtr => out.push(0),
        ValueFraming::UShortLen => out.extend_from_slice(&[0xFF, 0xFF]),
        ValueFraming::LongLen => out.extend_from_slice(&[0xFF; 4]),
        ValueFraming::Plp => out.extend_from_slice(&PLP_NULL.to_le_bytes()),
        ValueFraming::Variant => out.extend_from_slice(&[0; 4]),
        ValueFraming::Tvp => out.push(TVP_END_TOKEN),
    }
    Ok(())
}

/// Writes `data` with the prefix `framing` calls for (not for PLP, TEXT row
/// values or TVP rows, which need more than a length).
pub(crate) fn encode_prefixed(
    framing: ValueFraming,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let too_long = |limit| super::too_long("value", "length", data.len(), limit);
    match framing {
        ValueFraming::Fixed(n) if n == data.len() => {}
        ValueFraming::ByteLen if !data.is_empty() && data.len() < 0x100 => {
            out.push(data.len() as u8)
        }
        ValueFraming::UShortLen if data.len() < 0xFFFF => {
            out.extend_from_slice(&(data.len() as u16).to_le_bytes())
        }
        ValueFraming::LongLen if data.len() <= MAX_LONG_LEN as usize => {
            out.extend_from_slice(&(data.len() as u32).to_le_bytes())
        }
        ValueFraming::Fixed(n) => return Err(too_long(n)),
        ValueFraming::ByteLen => return Err(too_long(0xFF)),
        ValueFraming::UShortLen => return Err(too_long(0xFFFE)),
        _ => return Err(too_long(MAX_LONG_LEN as usize)),
    }
    out.extend_from_slice(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ti(bytes: &[u8], ctx: TypeContext) -> TypeInfo {
        let mut r = Reader::new(bytes, "TYPE_INFO");
        TypeInfo::decode_in(&mut r, ctx).unwrap()
    }

    fn raw_round_trip(t: &TypeInfo, ctx: TypeContext, value: &[u8]) -> Option<Vec<u8>> {
        let mut r = Reader::new(value, "value");
        let raw = decode_value_raw_in(t, ctx, &mut r).unwrap();
        r.finish().unwrap();
        let mut out = Vec::new();
        raw.encode(&mut out);
        assert_eq!(out, value);
        raw.data().map(<[u8]>::to_vec)
    }

    #[test]
    fn framing_per_type() {
        let col = TypeContext::Column;
        assert_eq!(ti(&[0x38], col).framing(), ValueFraming::Fixed(4));
        assert_eq!(ti(&[0x1F], col).framing(), ValueFraming::Fixed(0));
        assert_eq!(ti(&[0x26, 4], col).framing(), ValueFraming::ByteLen);
        assert_eq!(ti(&[0x28], col).framing(), ValueFraming::ByteLen);
        assert_eq!(
            ti(&[0xA5, 0x40, 0x1F], col).framing(),
            ValueFraming::UShortLen
        );
        assert_eq!(ti(&[0xA5, 0xFF, 0xFF], col).framing(), ValueFraming::Plp);
        assert_eq!(
            ti(&[0x22, 0, 0, 0, 1], col).framing(),
            ValueFraming::TextPtr
        );
        assert_eq!(
            ti(&[0x22, 0, 0, 0, 1], col).framing_in(TypeContext::Rpc),
            ValueFraming::LongLen
        );
        assert_eq!(ti(&[0xF1, 0], col).framing(), ValueFraming::Plp);
        assert_eq!(
            ti(&[0x62, 0x10, 0x1F, 0, 0], col).framing(),
            ValueFraming::Variant
        );
    }

    #[test]
    fn byte_and_ushort_lengths() {
        let col = TypeContext::Column;
        let intn = ti(&[0x26, 4], col);
        assert_eq!(
            raw_round_trip(&intn, col, &[4, 1, 0, 0, 0]).unwrap(),
            [1, 0, 0, 0]
        );
        assert_eq!(raw_round_trip(&intn, col, &[0]), None);

        let vb = ti(&[0xA5, 0x40, 0x1F], col);
        assert_eq!(
            raw_round_trip(&vb, col, &[2, 0, 0xAB, 0xCD]).unwrap(),
            [0xAB, 0xCD]
        );
        assert_eq!(raw_round_trip(&vb, col, &[0, 0]).unwrap(), b"");
        assert_eq!(raw_round_trip(&vb, col, &[0xFF, 0xFF]), None);
    }

    #[test]
    fn text_in_rows_and_in_rpc() {
        let col = TypeContext::Column;
        let text = ti(
            &[0x23, 0xFF, 0xFF, 0xFF, 0x7F, 0x09, 0x04, 0xD0, 0x00, 0x34],
            col,
        );
        // Test vector: 16-byte text pointer "dummy textptr\0\0\0", timestamp
        // "dummyTS\0", length 11, "mytextvalue".
        let row =
            hex("1064756d6d79207465787470747200000064756d6d795453000b0000006d797465787476616c7565");
        assert_eq!(raw_round_trip(&text, col, &row).unwrap(), b"mytextvalue");
        assert_eq!(raw_round_trip(&text, col, &[0]), None);

        let rpc = TypeContext::Rpc;
        assert_eq!(
            raw_round_trip(&text, rpc, &[2, 0, 0, 0, b'h', b'i']).unwrap(),
            b"hi"
        );
        assert_eq!(raw_round_trip(&text, rpc, &[0xFF; 4]), None);
    }

    #[test]
    fn variant_value() {
        let v = ti(&[0x62, 0x10, 0x1F, 0, 0], TypeContext::Column);
        let int = [6, 0, 0, 0, 0x38, 0, 1, 0, 0, 0];
        assert_eq!(
            raw_round_trip(&v, TypeContext::Column, &int).unwrap(),
            [0x38, 0, 1, 0, 0, 0]
        );
        assert_eq!(raw_round_trip(&v, TypeContext::Column, &[0, 0, 0, 0]), None);
    }

    #[test]
    fn encode_null_matches_framing() {
        let rpc = TypeContext::Rpc;
        let mut out = Vec::new();
        encode_null(
            &ti(&[0xE7, 0x40, 0x1F, 9, 4, 0xD0, 0, 0x34], rpc),
            rpc,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0xFF, 0xFF]);
        out.clear();
        encode_null(&ti(&[0x26, 4], rpc), rpc, &mut out).unwrap();
        assert_eq!(out, [0]);
        assert!(encode_null(&ti(&[0x38], rpc), rpc, &mut out).is_err());
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::tds::types::testing::arb_type_info;

        proptest! {
            #[test]
            fn arbitrary_values_never_panic(
                ti in arb_type_info(TypeContext::Rpc),
                bytes in proptest::collection::vec(any::<u8>(), 0..96),
            ) {
                for ctx in [TypeContext::Column, TypeContext::Rpc] {
                    let mut r = Reader::new(&bytes, "value");
                    if let Ok(raw) = decode_value_raw_in(&ti, ctx, &mut r) {
                        prop_assert_eq!(raw.wire(), &bytes[..r.position()]);
                        let _ = crate::tds::types::decode_value(&ti, &raw);
                    }
                }
            }
        }
    }
}
