//! The 5-byte SQL collation carried by character types ([MS-TDS] 2.2.5.1.2
//! "Collation Rule Definition").
//!
//! Layout: a little-endian 32-bit word holding the LCID (bits 0-19), the
//! comparison flags (bits 20-26), one reserved bit and a 4-bit version
//! (bits 28-31), then a 1-byte SortId. The word is kept whole so reserved
//! bits survive a round trip.

use std::fmt;

use crate::tds::{DecodeError, Reader};

/// Size of a collation on the wire (2.2.5.1.2).
pub const COLLATION_LEN: usize = 5;

const LCID_MASK: u32 = 0x000F_FFFF;
const FLAG_IGNORE_CASE: u32 = 0x0010_0000;
const FLAG_IGNORE_ACCENT: u32 = 0x0020_0000;
const FLAG_IGNORE_WIDTH: u32 = 0x0040_0000;
const FLAG_IGNORE_KANA: u32 = 0x0080_0000;
const FLAG_BINARY: u32 = 0x0100_0000;
const FLAG_BINARY2: u32 = 0x0200_0000;
const FLAG_UTF8: u32 = 0x0400_0000;

/// A collation as sent by the peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Collation {
    /// LCID, flags, reserved bit and version, as the little-endian word.
    pub info: u32,
    /// SQL sort order id; 0 means "Windows collation, use the LCID".
    pub sort_id: u8,
}

/// How the bytes of a non-Unicode character value are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharEncoding {
    /// UTF-8 collation (flag fUTF8, SQL Server 2019+).
    Utf8,
    /// Windows code page 1252 (Latin-1 and its Windows extensions).
    Windows1252,
    /// Another code page, not decoded by tdsguard.
    CodePage(u16),
}

impl Collation {
    /// Builds a collation from its parts. `lcid` is cut to 20 bits; `flags`
    /// are given in their wire positions (bits 20-26, e.g. 0x0010_0000 for
    /// ignore-case) and other bits are dropped; `version` is cut to 4 bits.
    pub fn new(lcid: u32, flags: u32, version: u8, sort_id: u8) -> Self {
        let flags = flags & (0x7F << 20);
        let version = u32::from(version & 0x0F) << 28;
        Collation {
            info: (lcid & LCID_MASK) | flags | version,
            sort_id,
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let info = r.u32_le()?;
        let sort_id = r.u8()?;
        Ok(Collation { info, sort_id })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.info.to_le_bytes());
        out.push(self.sort_id);
    }

    pub fn lcid(&self) -> u32 {
        self.info & LCID_MASK
    }

    /// The comparison flag bits (ignore case/accent/width/kana, binary,
    /// binary2, UTF-8), still in their wire positions.
    pub fn flags(&self) -> u32 {
        self.info & (0x7F << 20)
    }

    pub fn version(&self) -> u8 {
        (self.info >> 28) as u8
    }

    pub fn ignore_case(&self) -> bool {
        self.info & FLAG_IGNORE_CASE != 0
    }

    pub fn ignore_accent(&self) -> bool {
        self.info & FLAG_IGNORE_ACCENT != 0
    }

    pub fn ignore_width(&self) -> bool {
        self.info & FLAG_IGNORE_WIDTH != 0
    }

    pub fn ignore_kana(&self) -> bool {
        self.info & FLAG_IGNORE_KANA != 0
    }

    pub fn binary(&self) -> bool {
        self.info & (FLAG_BINARY | FLAG_BINARY2) != 0
    }

    pub fn utf8(&self) -> bool {
        self.info & FLAG_UTF8 != 0
    }

    /// The encoding of varchar/char/text bytes under this collation.
    ///
    /// Only the common Latin cases are mapped; any other collation yields
    /// `CodePage(0)` or its code page and is left undecoded.
    /// TODO(tdsguard): the full LCID and SortId to code page tables.
    pub fn encoding(&self) -> CharEncoding {
        if self.utf8() {
            return CharEncoding::Utf8;
        }
        if self.sort_id != 0 {
            return sort_id_encoding(self.sort_id);
        }
        lcid_encoding(self.lcid())
    }
}

/// SQL (non-Windows) sort orders. 51-56 and 81-84 are the code page 1252
/// dictionary and binary orders, e.g. 52 = SQL_Latin1_General_CP1_CI_AS.
fn sort_id_encoding(sort_id: u8) -> CharEncoding {
    match sort_id {
        0x33..=0x38 | 0x51..=0x54 | 0xB7..=0xBA => CharEncoding::Windows1252,
        0x28..=0x32 => CharEncoding::CodePage(437),
        _ => CharEncoding::CodePage(0),
    }
}

/// Windows collations: the Western European LCIDs use code page 1252.
fn lcid_encoding(lcid: u32) -> CharEncoding {
    let primary = lcid & 0x3FF;
    match primary {
        0x03 | 0x06 | 0x07 | 0x09 | 0x0A | 0x0B | 0x0C | 0x0F | 0x10 | 0x13 | 0x14 | 0x16
        | 0x1D | 0x21 | 0x2D | 0x36 | 0x38 | 0x3E | 0x41 | 0x56 => CharEncoding::Windows1252,
        _ => CharEncoding::CodePage(0),
    }
}

/// Code page 1252 code points 0x80-0x9F; the rest map to U+0000-U+00FF.
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

/// Decodes code page 1252 bytes; every byte maps to a character.
pub fn decode_cp1252(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| cp1252_char(b)).collect()
}

fn cp1252_char(b: u8) -> char {
    let code = match b {
        0x80..=0x9F => CP1252_HIGH[usize::from(b - 0x80)],
        _ => u16::from(b),
    };
    char::from_u32(u32::from(code)).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Encodes a string as code page 1252, or `None` if a character has no
/// code page 1252 byte.
pub fn encode_cp1252(s: &str) -> Option<Vec<u8>> {
    s.chars().map(cp1252_byte).collect()
}

fn cp1252_byte(c: char) -> Option<u8> {
    let code = u32::from(c);
    if let Some(i) = CP1252_HIGH.iter().position(|&h| u32::from(h) == code) {
        return u8::try_from(0x80 + i).ok();
    }
    match code {
        0x00..=0x7F | 0xA0..=0xFF => u8::try_from(code).ok(),
        _ => None,
    }
}

impl fmt::Debug for Collation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collation")
            .field("lcid", &format_args!("{:#06x}", self.lcid()))
            .field("flags", &format_args!("{:#x}", self.flags() >> 20))
            .field("version", &self.version())
            .field("sort_id", &self.sort_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_latin1_general_ci_as_from_capture() {
        let bytes = [0x09, 0x04, 0xD0, 0x00, 0x34];
        let mut r = Reader::new(&bytes, "collation");
        let c = Collation::decode(&mut r).unwrap();
        r.finish().unwrap();

        assert_eq!(c.lcid(), 0x0409);
        assert!(c.ignore_case() && c.ignore_kana() && c.ignore_width());
        assert!(!c.ignore_accent() && !c.utf8() && !c.binary());
        assert_eq!(c.sort_id, 52);
        assert_eq!(c.encoding(), CharEncoding::Windows1252);

        let mut out = Vec::new();
        c.encode(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn new_places_fields() {
        let c = Collation::new(0x0409, FLAG_UTF8 | FLAG_IGNORE_CASE, 2, 0);
        assert_eq!(c.info, 0x2410_0409);
        assert_eq!(c.version(), 2);
        assert_eq!(c.encoding(), CharEncoding::Utf8);
    }

    #[test]
    fn cp1252_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        let s = decode_cp1252(&all);
        assert_eq!(encode_cp1252(&s).unwrap(), all);
        assert_eq!(decode_cp1252(&[0x80, 0x41]), "\u{20AC}A");
        assert_eq!(encode_cp1252("\u{4E2D}"), None);
    }
}
