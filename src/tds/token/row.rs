//! ROW (0xD1, [MS-TDS] 2.2.7.20) and NBCROW (0xD2, 2.2.7.15, TDS 7.3B): one row
//! of values, framed by the current COLMETADATA. NBCROW leads with a null
//! bitmap and leaves NULL columns out.
//!
//! Values are kept as their payload bytes ([`RawValue`]); interpreting them is
//! the data types' job. Decoding here needs the whole row buffered; the
//! streaming reader walks rows incrementally and calls this only for rows it
//! must hand over whole.

use std::fmt;

use super::col_metadata::{ColMetadata, Framing};
use super::{TokenContext, NBCROW, ROW};
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// PLP TotalLength for NULL.
pub const PLP_NULL: u64 = 0xFFFF_FFFF_FFFF_FFFF;
/// PLP TotalLength when the sender does not state it (chunks still follow).
pub const PLP_UNKNOWN: u64 = 0xFFFF_FFFF_FFFF_FFFE;
/// sql_variant and TEXT lengths of 0 / TextPtrLen 0 mean NULL.
const USHORT_NULL: u16 = 0xFFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Row,
    NbcRow,
}

/// The TotalLength a PLP value was announced with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlpLength {
    Known(u64),
    /// 0xFFFFFFFFFFFFFFFE.
    Unknown,
}

/// One column value as sent, without its length prefix.
#[derive(Clone, PartialEq, Eq)]
pub enum RawValue {
    /// NULL: the type's NULL form, or a set bit in NBCROW's bitmap.
    Null,
    /// Fixed-length, 1-, 2- and 4-byte length types and sql_variant.
    Bytes(Vec<u8>),
    /// TEXT/NTEXT/IMAGE with their text pointer and timestamp.
    Text {
        text_ptr: Vec<u8>,
        timestamp: [u8; 8],
        data: Vec<u8>,
    },
    /// A PLP value, assembled; `chunks` are the chunk lengths as sent, so it
    /// re-encodes byte for byte (empty: one chunk of everything).
    Plp {
        length: PlpLength,
        data: Vec<u8>,
        chunks: Vec<u32>,
    },
}

/// Values are column data (possibly PHI): shown by length only.
impl fmt::Debug for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValue::Null => f.write_str("Null"),
            RawValue::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            RawValue::Text { data, .. } => write!(f, "Text({} bytes)", data.len()),
            RawValue::Plp { data, .. } => write!(f, "Plp({} bytes)", data.len()),
        }
    }
}

impl RawValue {
    /// Reads one value framed as `framing`.
    pub fn decode(framing: Framing, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match framing {
            Framing::Fixed(n) => Ok(RawValue::Bytes(r.bytes(n as usize)?.to_vec())),
            Framing::ByteLen => Self::sized(r.u8()? as usize, 0, r),
            Framing::UShortLen => match r.u16_le()? {
                USHORT_NULL => Ok(RawValue::Null),
                n => Ok(RawValue::Bytes(r.bytes(n as usize)?.to_vec())),
            },
            Framing::Variant => Self::sized(r.u32_le()? as usize, 0, r),
            Framing::Text => Self::decode_text(r),
            Framing::Plp => Self::decode_plp(r),
        }
    }

    fn sized(len: usize, null: usize, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if len == null {
            return Ok(RawValue::Null);
        }
        Ok(RawValue::Bytes(r.bytes(len)?.to_vec()))
    }

    fn decode_text(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ptr_len = r.u8()? as usize;
        if ptr_len == 0 {
            return Ok(RawValue::Null);
        }
        let text_ptr = r.bytes(ptr_len)?.to_vec();
        let timestamp = r.array()?;
        let len = r.u32_le()? as usize;
        Ok(RawValue::Text {
            text_ptr,
            timestamp,
            data: r.bytes(len)?.to_vec(),
        })
    }

    fn decode_plp(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let length = match r.u64_le()? {
            PLP_NULL => return Ok(RawValue::Null),
            PLP_UNKNOWN => PlpLength::Unknown,
            n => PlpLength::Known(n),
        };
        let (mut data, mut chunks) = (Vec::new(), Vec::new());
        loop {
            let n = r.u32_le()?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(r.bytes(n as usize)?);
            chunks.push(n);
        }
        check_plp_total(length, data.len())?;
        Ok(RawValue::Plp {
            length,
            data,
            chunks,
        })
    }

    /// Writes the value framed as `framing`.
    pub fn encode(&self, framing: Framing, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match (self, framing) {
            (RawValue::Null, _) => encode_null(framing, out),
            (RawValue::Bytes(b), Framing::Fixed(n)) if b.len() == n as usize => {
                out.extend_from_slice(b);
                Ok(())
            }
            (RawValue::Bytes(b), Framing::ByteLen) => prefixed(b, 1, out),
            (RawValue::Bytes(b), Framing::UShortLen) => prefixed(b, 2, out),
            (RawValue::Bytes(b), Framing::Variant) => prefixed(b, 4, out),
            (
                RawValue::Text {
                    text_ptr,
                    timestamp,
                    data,
                },
                Framing::Text,
            ) => {
                prefixed(text_ptr, 1, out)?;
                out.extend_from_slice(timestamp);
                prefixed(data, 4, out)
            }
            (
                RawValue::Plp {
                    length,
                    data,
                    chunks,
                },
                Framing::Plp,
            ) => {
                encode_plp(*length, data, chunks, out);
                Ok(())
            }
            _ => Err(EncodeError::TypeMismatch {
                structure: "ROW",
                type_name: framing_name(framing),
            }),
        }
    }
}

/// A known PLP TotalLength must equal the sum of the chunks (2.2.5.2.3).
fn check_plp_total(length: PlpLength, got: usize) -> Result<(), DecodeError> {
    match length {
        PlpLength::Known(n) if n != got as u64 => Err(DecodeError::LengthMismatch {
            structure: "PLP value",
            declared: n as usize,
            used: got,
        }),
        _ => Ok(()),
    }
}

fn framing_name(framing: Framing) -> &'static str {
    match framing {
        Framing::Fixed(_) => "fixed-length",
        Framing::ByteLen => "byte-length",
        Framing::UShortLen => "ushort-length",
        Framing::Text => "text",
        Framing::Variant => "sql_variant",
        Framing::Plp => "PLP",
    }
}

fn encode_null(framing: Framing, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match framing {
        Framing::Fixed(_) => {
            return Err(EncodeError::TypeMismatch {
                structure: "ROW",
                type_name: "NULL in a fixed-length column",
            })
        }
        Framing::ByteLen | Framing::Text => out.push(0),
        Framing::UShortLen => out.extend_from_slice(&USHORT_NULL.to_le_bytes()),
        Framing::Variant => out.extend_from_slice(&[0; 4]),
        Framing::Plp => out.extend_from_slice(&PLP_NULL.to_le_bytes()),
    }
    Ok(())
}

/// Writes a `width`-byte little-endian length then the bytes.
fn prefixed(b: &[u8], width: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let limit = match width {
        1 => 0xFF,
        2 => 0xFFFE,
        _ => u32::MAX as usize,
    };
    if b.len() > limit {
        return Err(EncodeError::TooLarge {
            structure: "ROW",
            field: "value",
            length: b.len(),
            limit,
        });
    }
    out.extend_from_slice(&(b.len() as u64).to_le_bytes()[..width]);
    out.extend_from_slice(b);
    Ok(())
}

fn encode_plp(length: PlpLength, data: &[u8], chunks: &[u32], out: &mut Vec<u8>) {
    let total = match length {
        PlpLength::Known(n) => n,
        PlpLength::Unknown => PLP_UNKNOWN,
    };
    out.extend_from_slice(&total.to_le_bytes());
    let sum: u64 = chunks.iter().map(|&c| u64::from(c)).sum();
    let mut rest = data;
    if sum == data.len() as u64 {
        for &c in chunks {
            let (chunk, tail) = rest.split_at(c as usize);
            out.extend_from_slice(&c.to_le_bytes());
            out.extend_from_slice(chunk);
            rest = tail;
        }
    }
    for chunk in rest.chunks(u32::MAX as usize) {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&[0; 4]);
}

/// A ROW or NBCROW with one value per column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub kind: RowKind,
    /// NBCROW only: the bitmap as sent (bit i set = column i is NULL).
    pub null_bitmap: Vec<u8>,
    pub values: Vec<RawValue>,
}

impl Row {
    /// Bytes of the NBCROW null bitmap for `columns` columns.
    pub fn bitmap_len(columns: usize) -> usize {
        columns.div_ceil(8)
    }

    /// Whether bit `i` of an NBCROW bitmap is set.
    pub fn bitmap_has(bitmap: &[u8], i: usize) -> bool {
        bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// An NBCROW whose bitmap marks exactly the NULL values.
    pub fn nbc(values: Vec<RawValue>) -> Row {
        let mut null_bitmap = vec![0u8; Self::bitmap_len(values.len())];
        for (i, v) in values.iter().enumerate() {
            if *v == RawValue::Null {
                null_bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        Row {
            kind: RowKind::NbcRow,
            null_bitmap,
            values,
        }
    }

    pub fn decode_body(
        ty: u8,
        r: &mut Reader<'_>,
        ctx: &TokenContext,
    ) -> Result<Self, DecodeError> {
        let structure = if ty == NBCROW { "NBCROW" } else { "ROW" };
        let meta = ctx.require_columns(structure)?;
        Self::decode_with(ty, r, meta)
    }

    /// Decodes a row body against `meta`.
    pub fn decode_with(
        ty: u8,
        r: &mut Reader<'_>,
        meta: &ColMetadata,
    ) -> Result<Self, DecodeError> {
        let n = meta.columns.len();
        let (kind, null_bitmap) = match ty {
            NBCROW => (RowKind::NbcRow, r.bytes(Self::bitmap_len(n))?.to_vec()),
            _ => (RowKind::Row, Vec::new()),
        };
        let mut values = Vec::with_capacity(n);
        for (i, column) in meta.columns.iter().enumerate() {
            if kind == RowKind::NbcRow && Self::bitmap_has(&null_bitmap, i) {
                values.push(RawValue::Null);
                continue;
            }
            values.push(RawValue::decode(column.type_info.framing(), r)?);
        }
        Ok(Row {
            kind,
            null_bitmap,
            values,
        })
    }

    pub fn encode(&self, ctx: &TokenContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let meta = ctx.columns.as_deref().ok_or(EncodeError::Inconsistent {
            structure: "ROW",
            reason: "no COLMETADATA to frame the row",
        })?;
        self.encode_with(meta, out)
    }

    /// Encodes the row against `meta`.
    pub fn encode_with(&self, meta: &ColMetadata, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.values.len() != meta.columns.len() {
            return Err(EncodeError::Inconsistent {
                structure: "ROW",
                reason: "value count differs from the column count",
            });
        }
        let nbc = self.kind == RowKind::NbcRow;
        out.push(if nbc { NBCROW } else { ROW });
        if nbc {
            self.encode_bitmap(out)?;
        }
        for (i, (v, c)) in self.values.iter().zip(&meta.columns).enumerate() {
            if nbc && Self::bitmap_has(&self.null_bitmap, i) {
                continue;
            }
            v.encode(c.type_info.framing(), out)?;
        }
        Ok(())
    }

    fn encode_bitmap(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.null_bitmap.len() != Self::bitmap_len(self.values.len()) {
            return Err(EncodeError::Inconsistent {
                structure: "NBCROW",
                reason: "null bitmap length differs from the column count",
            });
        }
        out.extend_from_slice(&self.null_bitmap);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::col_metadata::tests::sample_metadata;
    use crate::tds::token::test_util::encode_round_trip;
    use crate::tds::token::Token;
    use std::sync::Arc;

    pub fn ctx() -> TokenContext {
        TokenContext {
            columns: Some(Arc::new(sample_metadata())),
            ..TokenContext::default()
        }
    }

    fn values() -> Vec<RawValue> {
        vec![
            RawValue::Bytes(vec![1, 0, 0, 0]),
            RawValue::Null,
            RawValue::Bytes(b"a\0b\0".to_vec()),
            RawValue::Plp {
                length: PlpLength::Known(6),
                data: b"x\0y\0z\0".to_vec(),
                chunks: vec![1, 5],
            },
            RawValue::Bytes(vec![0; 8]),
            RawValue::Bytes(vec![1, 0x39, 0x30, 0, 0, 0, 0, 0, 0]),
            RawValue::Plp {
                length: PlpLength::Unknown,
                data: vec![],
                chunks: vec![],
            },
            RawValue::Text {
                text_ptr: vec![7; 16],
                timestamp: [1; 8],
                data: b"t\0".to_vec(),
            },
            RawValue::Bytes(vec![0x38, 0, 5, 0, 0, 0]),
        ]
    }

    #[test]
    fn row_round_trips() {
        let row = Row {
            kind: RowKind::Row,
            null_bitmap: Vec::new(),
            values: values(),
        };
        let bytes = encode_round_trip(&Token::Row(row), &ctx());
        assert_eq!(bytes[0], ROW);
    }

    #[test]
    fn nbcrow_round_trips_and_skips_nulls() {
        let mut v = values();
        v[7] = RawValue::Null;
        v[3] = RawValue::Null;
        let row = Row::nbc(v);
        assert_eq!(row.null_bitmap, vec![0b1000_1010, 0]);
        let bytes = encode_round_trip(&Token::Row(row.clone()), &ctx());
        let plain = Row {
            kind: RowKind::Row,
            ..row
        };
        let mut full = Vec::new();
        plain.encode(&ctx(), &mut full).unwrap();
        assert!(bytes.len() < full.len());
    }

    #[test]
    fn plp_total_must_match_chunks() {
        let meta = sample_metadata();
        let mut bytes = vec![0x01, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 2, 0, 0, 0, 0];
        let mut r = Reader::new(&bytes, "t");
        assert!(RawValue::decode(Framing::Plp, &mut r).is_err());
        bytes[0] = 2;
        let mut r = Reader::new(&bytes, "t");
        assert!(RawValue::decode(meta.columns[3].type_info.framing(), &mut r).is_ok());
    }

    #[test]
    fn row_without_metadata_is_an_error() {
        let mut r = Reader::new(&[ROW, 1], "t");
        assert!(Token::decode(&mut r, &TokenContext::default()).is_err());
    }

    #[test]
    fn debug_hides_values() {
        let text = format!("{:?}", RawValue::Bytes(b"secret".to_vec()));
        assert_eq!(text, "Bytes(6 bytes)");
    }
}
