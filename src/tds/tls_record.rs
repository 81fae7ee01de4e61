//! Recognising TLS records in a TDS byte stream, and reading the server name
//! (SNI) and ALPN protocols of a ClientHello (RFC 8446 5.1, 4.1.2; RFC 6066
//! section 3; RFC 7301 section 3.1).
//!
//! TDS 7.x carries the TLS handshake inside PRELOGIN (0x12) packets; after a
//! login-only handshake TLS records travel bare until LOGIN7 is sent; TDS 8.0
//! "strict" starts with a bare ClientHello offering ALPN `tds/8.0` ([MS-TDS]
//! 2.1, and the TDS-NOTES section on TDS 8.0). Nothing here decrypts; records
//! are only framed and the ClientHello is read for display and mode
//! detection.

use bytes::{Bytes, BytesMut};

use crate::tds::{DecodeError, Reader};

/// Record header: type 1, version 2, length 2 (RFC 8446 5.1).
pub const RECORD_HEADER_LEN: usize = 5;

/// Largest record payload: "The length MUST NOT exceed 2^14 + 256 bytes" for
/// TLSCiphertext in TLS 1.3, and TLS 1.2 allows 2^14 + 2048 (RFC 8446 5.2,
/// RFC 5246 6.2.3); the larger bound accepts both.
pub const MAX_RECORD_PAYLOAD: usize = (1 << 14) + 2048;

/// Cap on a ClientHello spread over several records. TLS allows 2^24 bytes;
/// SQL drivers send well under 2 KiB, and 64 KiB leaves room for
/// post-quantum key shares while bounding what we buffer.
pub const MAX_CLIENT_HELLO_LEN: usize = 64 * 1024;

/// ALPN protocol id of TDS 8.0 strict encryption.
pub const ALPN_TDS_80: &[u8] = b"tds/8.0";

const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXTENSION_SERVER_NAME: u16 = 0x0000;
const EXTENSION_ALPN: u16 = 0x0010;
const SNI_HOST_NAME: u8 = 0x00;

/// TLS record content types (RFC 8446 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ContentType {
    ChangeCipherSpec = 0x14,
    Alert = 0x15,
    Handshake = 0x16,
    ApplicationData = 0x17,
}

impl ContentType {
    pub fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0x14 => Some(ContentType::ChangeCipherSpec),
            0x15 => Some(ContentType::Alert),
            0x16 => Some(ContentType::Handshake),
            0x17 => Some(ContentType::ApplicationData),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ContentType::ChangeCipherSpec => "change_cipher_spec",
            ContentType::Alert => "alert",
            ContentType::Handshake => "handshake",
            ContentType::ApplicationData => "application_data",
        }
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub content_type: ContentType,
    /// legacy_record_version, 0x0301..=0x0304.
    pub version: u16,
    /// Payload length, at most [`MAX_RECORD_PAYLOAD`].
    pub length: u16,
}

impl RecordHeader {
    /// Decodes the 5-byte header; `Ok(None)` when `buf` does not start with
    /// something that can be a TLS record (so the caller may try TDS).
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        let mut r = Reader::new(buf, "TLS record header");
        let Some(content_type) = ContentType::from_u8(r.u8()?) else {
            return Ok(None);
        };
        let version = r.u16_be()?;
        if !(0x0301..=0x0304).contains(&version) {
            return Ok(None);
        }
        let length = r.u16_be()?;
        if usize::from(length) > MAX_RECORD_PAYLOAD {
            return Err(DecodeError::TooLarge {
                structure: "TLS record",
                length: length.into(),
                limit: MAX_RECORD_PAYLOAD,
            });
        }
        Ok(Some(RecordHeader {
            content_type,
            version,
            length,
        }))
    }

    /// Record length including the header.
    pub fn total_len(&self) -> usize {
        RECORD_HEADER_LEN + usize::from(self.length)
    }
}

/// Whether `buf` starts with a plausible TLS record header. Needs 3 bytes;
/// a TDS packet header never matches (no packet type is 0x14-0x17).
pub fn starts_with_record(buf: &[u8]) -> bool {
    let padded = [buf, &[0, 0]].concat();
    buf.len() >= 3 && matches!(RecordHeader::decode(&padded), Ok(Some(_)))
}

/// One whole TLS record, header included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub header: RecordHeader,
    pub raw: Bytes,
}

impl Record {
    pub fn payload(&self) -> &[u8] {
        self.raw.get(RECORD_HEADER_LEN..).unwrap_or_default()
    }
}

/// Splits a byte stream into TLS records.
#[derive(Debug, Default)]
pub struct RecordReader {
    buf: BytesMut,
}

impl RecordReader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next record; `Ok(None)` when more bytes are needed; an error when
    /// the bytes are not a TLS record.
    pub fn next_record(&mut self) -> Result<Option<Record>, DecodeError> {
        if self.buf.len() < RECORD_HEADER_LEN {
            return Ok(None);
        }
        let header = RecordHeader::decode(&self.buf)?.ok_or(DecodeError::Malformed {
            structure: "TLS record",
            reason: "not a TLS record header",
        })?;
        if self.buf.len() < header.total_len() {
            return Ok(None);
        }
        let raw = self.buf.split_to(header.total_len()).freeze();
        Ok(Some(Record { header, raw }))
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// What tdsguard reads from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHelloInfo {
    /// legacy_version of the ClientHello.
    pub version: u16,
    /// The host_name entry of server_name, if any (RFC 6066 section 3).
    pub server_name: Option<String>,
    /// ALPN protocol names in the client's order (RFC 7301 section 3.1).
    pub alpn: Vec<Vec<u8>>,
}

impl ClientHelloInfo {
    /// Whether the client asks for TDS 8.0 strict encryption.
    pub fn offers_tds8(&self) -> bool {
        self.alpn.iter().any(|p| p == ALPN_TDS_80)
    }
}

/// Reads the ClientHello at the start of a stream of TLS records (bare, or
/// the payload stream of PRELOGIN packets). `Ok(None)`: more bytes needed.
pub fn client_hello(stream: &[u8]) -> Result<Option<ClientHelloInfo>, DecodeError> {
    let mut records = RecordReader::new();
    records.feed(stream);
    let mut handshake = Vec::new();
    loop {
        let Some(record) = records.next_record()? else {
            return Ok(None);
        };
        if record.header.content_type != ContentType::Handshake {
            return Err(not_hello("first record is not a handshake"));
        }
        handshake.extend_from_slice(record.payload());
        if let Some(body) = complete_hello(&handshake)? {
            return decode_client_hello(body).map(Some);
        }
    }
}

fn not_hello(reason: &'static str) -> DecodeError {
    DecodeError::Malformed {
        structure: "TLS ClientHello",
        reason,
    }
}

/// The ClientHello body once the handshake bytes hold all of it.
fn complete_hello(handshake: &[u8]) -> Result<Option<&[u8]>, DecodeError> {
    let mut r = Reader::new(handshake, "TLS handshake");
    let (Ok(msg_type), Ok(len)) = (r.u8(), r.array::<3>()) else {
        return Ok(None);
    };
    if msg_type != HANDSHAKE_CLIENT_HELLO {
        return Err(not_hello("first handshake message is not a ClientHello"));
    }
    let len = u32::from_be_bytes([0, len[0], len[1], len[2]]) as usize;
    if len > MAX_CLIENT_HELLO_LEN {
        return Err(DecodeError::TooLarge {
            structure: "TLS ClientHello",
            length: len,
            limit: MAX_CLIENT_HELLO_LEN,
        });
    }
    Ok(r.bytes(len).ok())
}

/// Parses a ClientHello body (RFC 8446 4.1.2).
pub fn decode_client_hello(body: &[u8]) -> Result<ClientHelloInfo, DecodeError> {
    let mut r = Reader::new(body, "TLS ClientHello");
    let version = r.u16_be()?;
    r.skip(32)?;
    let session_id = usize::from(r.u8()?);
    r.skip(session_id)?;
    let suites = usize::from(r.u16_be()?);
    r.skip(suites)?;
    let compression = usize::from(r.u8()?);
    r.skip(compression)?;

    let mut info = ClientHelloInfo {
        version,
        ..ClientHelloInfo::default()
    };
    if r.is_empty() {
        return Ok(info);
    }
    let len = usize::from(r.u16_be()?);
    let mut extensions = r.take(len, "TLS extensions")?;
    while !extensions.is_empty() {
        read_extension(&mut extensions, &mut info)?;
    }
    Ok(info)
}

fn read_extension(r: &mut Reader<'_>, info: &mut ClientHelloInfo) -> Result<(), DecodeError> {
    let ext_type = r.u16_be()?;
    let len = usize::from(r.u16_be()?);
    let mut data = r.take(len, "TLS extension")?;
    match ext_type {
        EXTENSION_SERVER_NAME => info.server_name = read_server_name(&mut data)?,
        EXTENSION_ALPN => info.alpn = read_alpn(&mut data)?,
        _ => {}
    }
    Ok(())
}

fn read_server_name(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    let len = usize::from(r.u16_be()?);
    let mut list = r.take(len, "TLS server_name")?;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name_len = usize::from(list.u16_be()?);
        let name = list.bytes(name_len)?;
        if name_type == SNI_HOST_NAME {
            let name = std::str::from_utf8(name).map_err(|_| not_hello("SNI is not ASCII"))?;
            return Ok(Some(name.to_owned()));
        }
    }
    Ok(None)
}

fn read_alpn(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let len = usize::from(r.u16_be()?);
    let mut list = r.take(len, "TLS ALPN")?;
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name_len = usize::from(list.u8()?);
        protocols.push(list.bytes(name_len)?.to_vec());
    }
    Ok(protocols)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT_ODBC: &[u8] = include_bytes!(
        "../../fixtures/client-first-packets/pyodbc-msodbcsql18-encrypt-strict-prelogin.bin"
    );
    const STRICT_TEDIOUS: &[u8] =
        include_bytes!("../../fixtures/client-first-packets/tedious-encrypt-strict-prelogin.bin");

    #[test]
    fn reads_sni_and_alpn_of_a_strict_client() {
        let info = client_hello(STRICT_ODBC).unwrap().unwrap();
        assert_eq!(info.server_name.as_deref(), Some("127.0.0.1"));
        assert!(info.offers_tds8());
        assert_eq!(info.version, 0x0303);

        let info = client_hello(STRICT_TEDIOUS).unwrap().unwrap();
        assert!(info.offers_tds8());
    }

    #[test]
    fn every_prefix_needs_more_or_succeeds() {
        for cut in 0..STRICT_ODBC.len() {
            assert_eq!(client_hello(&STRICT_ODBC[..cut]).unwrap(), None, "{cut}");
        }
    }

    #[test]
    fn record_header_checks() {
        assert!(starts_with_record(&[0x16, 0x03, 0x01]));
        assert!(!starts_with_record(&[0x12, 0x01, 0x00]));
        assert!(!starts_with_record(&[0x16, 0x02, 0x00]));
        assert!(!starts_with_record(&[0x16, 0x03]));
        let too_long = [0x17, 0x03, 0x03, 0x48, 0x01];
        assert!(RecordHeader::decode(&too_long).is_err());
    }

    #[test]
    fn record_reader_splits_records() {
        let mut reader = RecordReader::new();
        reader.feed(&[0x17, 0x03, 0x03, 0x00, 0x02, 0xAA, 0xBB, 0x15, 0x03]);
        let record = reader.next_record().unwrap().unwrap();
        assert_eq!(record.header.content_type, ContentType::ApplicationData);
        assert_eq!(record.payload(), &[0xAA, 0xBB]);
        assert_eq!(reader.next_record().unwrap(), None);
        assert_eq!(reader.buffered(), 2);
    }

    #[test]
    fn non_hello_is_an_error() {
        assert!(client_hello(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]).is_err());
        assert!(client_hello(&[0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0, 0, 0]).is_err());
    }
}
