//! Partially length-prefixed (PLP) values ([MS-TDS] 2.2.5.2.3 "Partially
//! Length-prefixed Data Types"): `(max)` types, XML, CLR UDT and json.
//!
//! ```text
//! PLP_BODY = PLP_NULL                            8 bytes of 0xFF
//!          / (ULONGLONGLEN / UNKNOWN_PLP_LEN)    total length, or 0xFF..FE
//!            *PLP_CHUNK PLP_TERMINATOR           ULONGLEN + bytes ..., 4 zero bytes
//! ```
//!
//! Chunk boundaries carry no meaning: they may split a UTF-16 code unit, so
//! text is decoded only after the chunks are joined. This module works on a
//! complete buffer; the streaming token reader frames PLP on its own.

use std::borrow::Cow;

use crate::tds::{DecodeError, EncodeError, Reader};

/// PLP_NULL: the total length that marks a NULL value.
pub const PLP_NULL: u64 = 0xFFFF_FFFF_FFFF_FFFF;

/// UNKNOWN_PLP_LEN: the sender streams chunks without announcing the total.
pub const PLP_UNKNOWN_LEN: u64 = 0xFFFF_FFFF_FFFF_FFFE;

/// Largest PLP value accepted, in bytes: 2^31 - 1, the storage limit of
/// varchar(max), nvarchar(max), varbinary(max) and xml in SQL Server (its
/// "max indicates a maximum storage size of 2^31-1 bytes"). A larger total
/// length cannot be a real value and is refused before anything is buffered.
pub const MAX_PLP_LEN: u64 = 0x7FFF_FFFF;

/// Chunk size used when tdsguard writes PLP values itself. 8000 bytes matches
/// what SQL Server and common drivers send; any size is legal.
pub const DEFAULT_PLP_CHUNK_LEN: usize = 8000;

/// How [`encode_plp`] announces the total length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlpLength {
    /// Exact total length in the 8-byte header.
    Known,
    /// UNKNOWN_PLP_LEN in the header.
    Unknown,
}

/// A PLP value's wire bytes and its joined data (`None` for NULL).
pub type PlpParts<'a> = (&'a [u8], Option<Cow<'a, [u8]>>);

/// Reads one PLP value. Returns the bytes it occupied on the wire and the
/// joined data (`None` for PLP_NULL). A single chunk is borrowed, several
/// are copied into one buffer.
pub fn decode_plp<'a>(r: &mut Reader<'a>) -> Result<PlpParts<'a>, DecodeError> {
    let start = r.rest();
    let total = r.u64_le()?;
    if total == PLP_NULL {
        return Ok((&start[..8], None));
    }
    if total != PLP_UNKNOWN_LEN && total > MAX_PLP_LEN {
        return Err(too_large(r, total));
    }

    let data = read_chunks(r)?;
    if total != PLP_UNKNOWN_LEN && total != data.len() as u64 {
        return Err(DecodeError::LengthMismatch {
            structure: r.structure(),
            declared: usize::try_from(total).unwrap_or(usize::MAX),
            used: data.len(),
        });
    }
    let used = start.len() - r.remaining();
    Ok((&start[..used], Some(data)))
}

fn too_large(r: &Reader<'_>, length: u64) -> DecodeError {
    DecodeError::TooLarge {
        structure: r.structure(),
        length: usize::try_from(length).unwrap_or(usize::MAX),
        limit: MAX_PLP_LEN as usize,
    }
}

/// Reads chunks up to the terminator, joining their data.
fn read_chunks<'a>(r: &mut Reader<'a>) -> Result<Cow<'a, [u8]>, DecodeError> {
    let mut data: Cow<'a, [u8]> = Cow::Borrowed(&[]);
    loop {
        let len = u64::from(r.u32_le()?);
        if len == 0 {
            return Ok(data);
        }
        if data.len() as u64 + len > MAX_PLP_LEN {
            return Err(too_large(r, data.len() as u64 + len));
        }
        let chunk = r.bytes(len as usize)?;
        append(&mut data, chunk);
    }
}

fn append<'a>(data: &mut Cow<'a, [u8]>, chunk: &'a [u8]) {
    if data.is_empty() {
        *data = Cow::Borrowed(chunk);
        return;
    }
    data.to_mut().extend_from_slice(chunk);
}

/// Writes `data` (or PLP_NULL for `None`) as PLP in chunks of at most
/// `chunk_len` bytes (a `chunk_len` of 0 is taken as 1).
pub fn encode_plp(
    data: Option<&[u8]>,
    chunk_len: usize,
    length: PlpLength,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let Some(data) = data else {
        out.extend_from_slice(&PLP_NULL.to_le_bytes());
        return Ok(());
    };
    if data.len() as u64 > MAX_PLP_LEN {
        return Err(super::too_long(
            "PLP",
            "total length",
            data.len(),
            MAX_PLP_LEN as usize,
        ));
    }

    let total = match length {
        PlpLength::Known => data.len() as u64,
        PlpLength::Unknown => PLP_UNKNOWN_LEN,
    };
    out.extend_from_slice(&total.to_le_bytes());
    for chunk in data.chunks(chunk_len.clamp(1, MAX_PLP_LEN as usize)) {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Option<Vec<u8>> {
        let mut r = Reader::new(bytes, "PLP");
        let (wire, data) = decode_plp(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(wire, bytes);
        data.map(|d| d.into_owned())
    }

    #[test]
    fn null_known_and_unknown_lengths() {
        assert_eq!(decode_all(&[0xFF; 8]), None);

        let known = [
            5, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o', 0, 0, 0, 0,
        ];
        assert_eq!(decode_all(&known).unwrap(), b"hello");

        let mut unknown = PLP_UNKNOWN_LEN.to_le_bytes().to_vec();
        unknown.extend_from_slice(&[2, 0, 0, 0, b'h', b'e', 3, 0, 0, 0, b'l', b'l', b'o']);
        unknown.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(decode_all(&unknown).unwrap(), b"hello");
    }

    #[test]
    fn empty_value_has_no_chunks() {
        let empty = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_all(&empty).unwrap(), b"");
    }

    #[test]
    fn wrong_total_length_is_rejected() {
        let bad = [
            4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o', 0, 0, 0, 0,
        ];
        let mut r = Reader::new(&bad, "PLP");
        assert!(matches!(
            decode_plp(&mut r),
            Err(DecodeError::LengthMismatch {
                declared: 4,
                used: 5,
                ..
            })
        ));
    }

    #[test]
    fn oversized_total_is_rejected_before_reading() {
        let bad = (MAX_PLP_LEN + 1).to_le_bytes();
        let mut r = Reader::new(&bad, "PLP");
        assert!(matches!(
            decode_plp(&mut r),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn missing_terminator_is_truncation() {
        let bad = [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'x'];
        let mut r = Reader::new(&bad, "PLP");
        assert!(matches!(
            decode_plp(&mut r),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn encode_with_chosen_chunk_size() {
        let mut out = Vec::new();
        encode_plp(Some(b"hello"), 2, PlpLength::Known, &mut out).unwrap();
        let expected = [
            5, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'h', b'e', 2, 0, 0, 0, b'l', b'l', 1, 0, 0, 0,
            b'o', 0, 0, 0, 0,
        ];
        assert_eq!(out, expected);
        assert_eq!(decode_all(&out).unwrap(), b"hello");

        out.clear();
        encode_plp(Some(b"hi"), 0, PlpLength::Unknown, &mut out).unwrap();
        assert_eq!(&out[..8], &PLP_UNKNOWN_LEN.to_le_bytes());
        assert_eq!(decode_all(&out).unwrap(), b"hi");

        out.clear();
        encode_plp(None, 10, PlpLength::Known, &mut out).unwrap();
        assert_eq!(out, [0xFF; 8]);
    }
}
