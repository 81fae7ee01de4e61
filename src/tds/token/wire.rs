//! Shared pieces of token layouts: the length-prefixed string and byte forms
//! of [MS-TDS] 2.2.5.1.x (B_VARCHAR, US_VARCHAR, B_VARBYTE, US_VARBYTE) and
//! length prefixes written as placeholders and patched afterwards.

use std::fmt;

use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// A UTF-16LE string kept as code units, so names with unpaired surrogates
/// survive a round trip byte for byte.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct UcsString(pub Vec<u16>);

impl UcsString {
    /// Number of UTF-16 code units (what B_VARCHAR/US_VARCHAR count).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The string, with unpaired surrogates replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf16_lossy(&self.0)
    }

    fn read(r: &mut Reader<'_>, units: usize) -> Result<Self, DecodeError> {
        let bytes = r.bytes(units * 2)?;
        let units = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(UcsString(units))
    }

    fn write(&self, out: &mut Vec<u8>) {
        for unit in &self.0 {
            out.extend_from_slice(&unit.to_le_bytes());
        }
    }
}

impl From<&str> for UcsString {
    fn from(s: &str) -> Self {
        UcsString(s.encode_utf16().collect())
    }
}

impl fmt::Debug for UcsString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

impl fmt::Display for UcsString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

/// B_VARCHAR: 1-byte count of UTF-16 units, then the units.
pub fn read_b_varchar(r: &mut Reader<'_>) -> Result<UcsString, DecodeError> {
    let units = r.u8()? as usize;
    UcsString::read(r, units)
}

/// US_VARCHAR: 2-byte count of UTF-16 units, then the units.
pub fn read_us_varchar(r: &mut Reader<'_>) -> Result<UcsString, DecodeError> {
    let units = r.u16_le()? as usize;
    UcsString::read(r, units)
}

/// B_VARBYTE: 1-byte length, then the bytes.
pub fn read_b_varbyte(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let len = r.u8()? as usize;
    Ok(r.bytes(len)?.to_vec())
}

/// US_VARBYTE: 2-byte length, then the bytes.
pub fn read_us_varbyte(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let len = r.u16_le()? as usize;
    Ok(r.bytes(len)?.to_vec())
}

fn too_large(structure: &'static str, field: &'static str, n: usize, limit: usize) -> EncodeError {
    EncodeError::TooLarge {
        structure,
        field,
        length: n,
        limit,
    }
}

pub fn write_b_varchar(
    s: &UcsString,
    structure: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let n = u8::try_from(s.len()).map_err(|_| too_large(structure, "B_VARCHAR", s.len(), 0xFF))?;
    out.push(n);
    s.write(out);
    Ok(())
}

pub fn write_us_varchar(
    s: &UcsString,
    structure: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let n =
        u16::try_from(s.len()).map_err(|_| too_large(structure, "US_VARCHAR", s.len(), 0xFFFF))?;
    out.extend_from_slice(&n.to_le_bytes());
    s.write(out);
    Ok(())
}

pub fn write_b_varbyte(
    b: &[u8],
    structure: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let n = u8::try_from(b.len()).map_err(|_| too_large(structure, "B_VARBYTE", b.len(), 0xFF))?;
    out.push(n);
    out.extend_from_slice(b);
    Ok(())
}

pub fn write_us_varbyte(
    b: &[u8],
    structure: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let n =
        u16::try_from(b.len()).map_err(|_| too_large(structure, "US_VARBYTE", b.len(), 0xFFFF))?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// Writes `ty`, a 2-byte length placeholder and the body `f` writes, then
/// patches the length.
pub fn with_u16_len(
    ty: u8,
    structure: &'static str,
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    out.push(ty);
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    f(out)?;
    let len = out.len() - at - 2;
    let n = u16::try_from(len).map_err(|_| too_large(structure, "Length", len, 0xFFFF))?;
    out[at..at + 2].copy_from_slice(&n.to_le_bytes());
    Ok(())
}

/// Like [`with_u16_len`] with a 4-byte length.
pub fn with_u32_len(
    ty: u8,
    structure: &'static str,
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    out.push(ty);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    f(out)?;
    let len = out.len() - at - 4;
    let n =
        u32::try_from(len).map_err(|_| too_large(structure, "Length", len, u32::MAX as usize))?;
    out[at..at + 4].copy_from_slice(&n.to_le_bytes());
    Ok(())
}

/// Reads a 2-byte token length and returns a reader over exactly that body.
pub fn u16_body<'a>(
    r: &mut Reader<'a>,
    structure: &'static str,
) -> Result<Reader<'a>, DecodeError> {
    let len = r.u16_le()? as usize;
    r.take(len, structure)
}

/// Reads a 4-byte token length (capped at `cap`) and returns a reader over the body.
pub fn u32_body<'a>(
    r: &mut Reader<'a>,
    structure: &'static str,
    cap: usize,
) -> Result<Reader<'a>, DecodeError> {
    let len = r.u32_le()? as usize;
    if len > cap {
        return Err(DecodeError::TooLarge {
            structure,
            length: len,
            limit: cap,
        });
    }
    r.take(len, structure)
}
