//! LOGIN7 ([MS-TDS] 2.2.6.4), TDS 7.0 to 7.4 and 8.0, with the FeatureExt
//! block (2.2.6.4 "FeatureExt") and password obfuscation.
//!
//! The fixed part is 94 bytes (86 before TDS 7.2, which lacks
//! ibChangePassword and cbSSPILong); variable data follows, addressed by
//! offsets from the payload start. Strings are UTF-16LE with lengths in
//! characters; the SSPI blob length is in bytes.
//!
//! Real clients lay the variable data out in field order. A message with
//! another layout (gaps, shared offsets, data after FeatureExt) re-encodes to
//! its original bytes as long as no field was changed; a changed message is
//! written in field order.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use zeroize::Zeroizing;

use crate::tds::all_headers::{decode_utf16, encode_utf16};
use crate::tds::packet::PacketType;
use crate::tds::{DecodeError, EncodeError, Reader};

/// Cap on a LOGIN7 payload: "the maximum length of a LOGIN7 message is
/// 128 KB - 1" (2.2.6.4, Length).
pub const MAX_LOGIN7_LEN: usize = 128 * 1024 - 1;

/// Cap on FeatureExt entries. About a dozen feature ids exist; 64 bounds the
/// list a peer can make us build.
pub const MAX_FEATURES: usize = 64;

/// Fixed part length from TDS 7.2 on.
pub const FIXED_LEN: usize = 94;

/// Fixed part length for TDS 7.0 and 7.1.
pub const FIXED_LEN_71: usize = 86;

/// TDSVersion values (2.2.6.4), as the little-endian DWORD reads.
pub mod version {
    pub const TDS70: u32 = 0x7000_0000;
    pub const TDS71: u32 = 0x7100_0001;
    pub const TDS72: u32 = 0x7209_0002;
    pub const TDS73A: u32 = 0x730A_0003;
    pub const TDS73B: u32 = 0x730B_0003;
    pub const TDS74: u32 = 0x7400_0004;
    pub const TDS80: u32 = 0x0800_0000;
}

/// OptionFlags3 bits used here (2.2.6.4).
pub mod flags3 {
    /// fChangePassword.
    pub const CHANGE_PASSWORD: u8 = 0x01;
    /// fExtension: ibExtension points at the FeatureExt offset.
    pub const EXTENSION: u8 = 0x10;
}

/// OptionFlags2 bit fIntSecurity: integrated (SSPI) authentication.
pub const OPTION2_INTEGRATED_SECURITY: u8 = 0x80;

const FEATURE_TERMINATOR: u8 = 0xFF;
const STRUCTURE: &str = "LOGIN7";

/// Whether a message of this type is a pre-TDS7 login (type 0x02), which
/// tdsguard refuses: SQL Server 7.0 and later never see one.
pub fn is_pre_tds7_login(packet_type: PacketType) -> bool {
    packet_type == PacketType::PreTds7Login
}

/// Known FeatureExt ids (2.2.6.4; 0x0B-0x10 as sent by newer drivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureId {
    SessionRecovery,
    FedAuth,
    ColumnEncryption,
    GlobalTransactions,
    AzureSqlSupport,
    DataClassification,
    Utf8Support,
    AzureSqlDnsCaching,
    JsonSupport,
    VectorSupport,
    UserAgent,
    Unknown(u8),
}

impl FeatureId {
    pub fn from_u8(id: u8) -> Self {
        match id {
            0x01 => FeatureId::SessionRecovery,
            0x02 => FeatureId::FedAuth,
            0x04 => FeatureId::ColumnEncryption,
            0x05 => FeatureId::GlobalTransactions,
            0x08 => FeatureId::AzureSqlSupport,
            0x09 => FeatureId::DataClassification,
            0x0A => FeatureId::Utf8Support,
            0x0B => FeatureId::AzureSqlDnsCaching,
            0x0D => FeatureId::JsonSupport,
            0x0E => FeatureId::VectorSupport,
            0x10 => FeatureId::UserAgent,
            other => FeatureId::Unknown(other),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FeatureId::SessionRecovery => "SESSIONRECOVERY",
            FeatureId::FedAuth => "FEDAUTH",
            FeatureId::ColumnEncryption => "COLUMNENCRYPTION",
            FeatureId::GlobalTransactions => "GLOBALTRANSACTIONS",
            FeatureId::AzureSqlSupport => "AZURESQLSUPPORT",
            FeatureId::DataClassification => "DATACLASSIFICATION",
            FeatureId::Utf8Support => "UTF8_SUPPORT",
            FeatureId::AzureSqlDnsCaching => "AZURESQLDNSCACHING",
            FeatureId::JsonSupport => "JSONSUPPORT",
            FeatureId::VectorSupport => "VECTORSUPPORT",
            FeatureId::UserAgent => "USERAGENT",
            FeatureId::Unknown(_) => "unknown",
        }
    }
}

/// One FeatureExt entry, kept byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub struct Feature {
    pub id: u8,
    pub data: Bytes,
}

impl Feature {
    pub fn kind(&self) -> FeatureId {
        FeatureId::from_u8(self.id)
    }
}

/// FEDAUTH data holds an access token, so no feature data is shown.
impl fmt::Debug for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feature")
            .field("id", &self.kind().name())
            .field("len", &self.data.len())
            .finish()
    }
}

/// A LOGIN7 message. Fields are public; a decoded message remembers its
/// bytes and reproduces them from [`Login7::encode`] while every field still
/// equals what was decoded.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Login7 {
    /// LE DWORD, see [`version`].
    pub tds_version: u32,
    pub packet_size: u32,
    pub client_prog_ver: u32,
    pub client_pid: u32,
    pub connection_id: u32,
    pub option_flags1: u8,
    pub option_flags2: u8,
    pub type_flags: u8,
    pub option_flags3: u8,
    pub client_time_zone: i32,
    pub client_lcid: u32,
    pub hostname: String,
    pub username: String,
    /// Clear text (deobfuscated). Never logged.
    pub password: Zeroizing<String>,
    pub app_name: String,
    pub server_name: String,
    pub library_name: String,
    pub language: String,
    pub database: String,
    /// ClientID: usually a MAC address.
    pub client_id: [u8; 6],
    /// First SSPI blob (integrated authentication). Never logged.
    pub sspi: Zeroizing<Vec<u8>>,
    pub attach_db_file: String,
    /// New password (TDS 7.2+, with fChangePassword). Never logged.
    pub change_password: Zeroizing<String>,
    /// FeatureExt entries in order (TDS 7.4+, with fExtension); `None`
    /// when the message has no FeatureExt block.
    pub features: Option<Vec<Feature>>,
    original: Option<Box<Original>>,
}

#[derive(Clone, PartialEq, Eq)]
struct Original {
    decoded: Login7,
    raw: Bytes,
}

impl fmt::Debug for Login7 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login7")
            .field("tds_version", &format_args!("{:#010x}", self.tds_version))
            .field("packet_size", &self.packet_size)
            .field("client_pid", &self.client_pid)
            .field("option_flags", &self.option_flags())
            .field("hostname", &self.hostname)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("app_name", &self.app_name)
            .field("server_name", &self.server_name)
            .field("library_name", &self.library_name)
            .field("language", &self.language)
            .field("database", &self.database)
            .field("sspi_len", &self.sspi.len())
            .field("attach_db_file", &self.attach_db_file)
            .field("change_password", &"<redacted>")
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

/// Swaps the nibbles of each byte, then XORs with 0xA5 (2.2.6.4, Password).
pub fn obfuscate_password(bytes: &mut [u8]) {
    for b in bytes {
        *b = b.rotate_left(4) ^ 0xA5;
    }
}

/// Reverses [`obfuscate_password`]: XOR with 0xA5, then swap the nibbles.
pub fn deobfuscate_password(bytes: &mut [u8]) {
    for b in bytes {
        *b = (*b ^ 0xA5).rotate_left(4);
    }
}

/// Offsets of the (ib, cch) pairs in the fixed part.
mod field {
    pub const HOSTNAME: usize = 36;
    pub const USERNAME: usize = 40;
    pub const PASSWORD: usize = 44;
    pub const APP_NAME: usize = 48;
    pub const SERVER_NAME: usize = 52;
    pub const EXTENSION: usize = 56;
    pub const LIBRARY: usize = 60;
    pub const LANGUAGE: usize = 64;
    pub const DATABASE: usize = 68;
    pub const CLIENT_ID: usize = 72;
    pub const SSPI: usize = 78;
    pub const ATTACH_DB: usize = 82;
    pub const CHANGE_PASSWORD: usize = 86;
    pub const SSPI_LONG: usize = 90;
}

/// Whether this TDSVersion has the 94-byte fixed part.
fn has_72_fields(tds_version: u32) -> bool {
    tds_version >= 0x7200_0000 || tds_version == version::TDS80
}

fn invalid(field: &'static str, value: u64) -> DecodeError {
    DecodeError::InvalidValue {
        structure: STRUCTURE,
        field,
        value,
    }
}

fn malformed(reason: &'static str) -> DecodeError {
    DecodeError::Malformed {
        structure: STRUCTURE,
        reason,
    }
}

impl Login7 {
    /// TDS version as major.minor for display ("7.4", "8.0").
    pub fn version_name(&self) -> &'static str {
        match self.tds_version {
            version::TDS70 => "7.0",
            0x7100_0000 | version::TDS71 => "7.1",
            version::TDS72 => "7.2",
            version::TDS73A => "7.3A",
            version::TDS73B => "7.3B",
            version::TDS74 => "7.4",
            version::TDS80 => "8.0",
            _ => "unknown",
        }
    }

    /// The four option bytes as one LE word, for display.
    fn option_flags(&self) -> u32 {
        u32::from_le_bytes([
            self.option_flags1,
            self.option_flags2,
            self.type_flags,
            self.option_flags3,
        ])
    }

    /// Whether a FEDAUTH feature is present (its data is a token; callers
    /// must not log it).
    pub fn has_feature(&self, id: FeatureId) -> bool {
        self.features
            .iter()
            .flatten()
            .any(|feature| feature.kind() == id)
    }

    /// Whether the message is unchanged since decoding and will be written
    /// from its original bytes.
    pub fn is_unmodified(&self) -> bool {
        self.original
            .as_ref()
            .is_some_and(|o| self.fields_equal(&o.decoded))
    }

    fn fields_equal(&self, decoded: &Login7) -> bool {
        let mut me = self.clone();
        me.original = None;
        me == *decoded
    }

    /// Decodes a whole LOGIN7 payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        if payload.len() > MAX_LOGIN7_LEN {
            return Err(DecodeError::TooLarge {
                structure: STRUCTURE,
                length: payload.len(),
                limit: MAX_LOGIN7_LEN,
            });
        }
        let mut login = decode_fixed(payload)?;
        decode_variable(&mut login, payload)?;

        let decoded = login.clone();
        login.original = Some(Box::new(Original {
            decoded,
            raw: Bytes::copy_from_slice(payload),
        }));
        Ok(login)
    }

    /// Appends the payload: the original bytes if unmodified, otherwise the
    /// fields in order.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if let Some(original) = &self.original {
            if self.fields_equal(&original.decoded) {
                out.extend_from_slice(&original.raw);
                return Ok(());
            }
        }
        encode_canonical(self, out)
    }
}

fn decode_fixed(payload: &[u8]) -> Result<Login7, DecodeError> {
    let mut r = Reader::new(payload, STRUCTURE);
    let length = r.u32_le()? as usize;
    if length != payload.len() {
        return Err(DecodeError::LengthMismatch {
            structure: STRUCTURE,
            declared: length,
            used: payload.len(),
        });
    }
    let tds_version = r.u32_le()?;
    if tds_version < version::TDS70 && tds_version != version::TDS80 {
        return Err(invalid("TDSVersion", tds_version.into()));
    }
    Ok(Login7 {
        tds_version,
        packet_size: r.u32_le()?,
        client_prog_ver: r.u32_le()?,
        client_pid: r.u32_le()?,
        connection_id: r.u32_le()?,
        option_flags1: r.u8()?,
        option_flags2: r.u8()?,
        type_flags: r.u8()?,
        option_flags3: r.u8()?,
        client_time_zone: r.u32_le()? as i32,
        client_lcid: r.u32_le()?,
        ..Login7::default()
    })
}

/// The (offset, count) pair at `at` in the fixed part.
fn pair(payload: &[u8], at: usize) -> Result<(usize, usize), DecodeError> {
    let mut r = Reader::new(payload, STRUCTURE);
    r.skip(at)?;
    Ok((usize::from(r.u16_le()?), usize::from(r.u16_le()?)))
}

/// `len` bytes at `offset`, which must lie inside the payload.
fn slice_at(payload: &[u8], offset: usize, len: usize) -> Result<&[u8], DecodeError> {
    if len == 0 {
        return Ok(&[]);
    }
    payload
        .get(offset..offset.saturating_add(len))
        .ok_or(DecodeError::Truncated {
            structure: STRUCTURE,
            needed: offset.saturating_add(len),
            available: payload.len(),
        })
}

fn utf16(bytes: &[u8]) -> Result<String, DecodeError> {
    decode_utf16(bytes, STRUCTURE)
}

fn string_field(payload: &[u8], at: usize) -> Result<String, DecodeError> {
    let (offset, chars) = pair(payload, at)?;
    utf16(slice_at(payload, offset, chars * 2)?)
}

fn password_field(payload: &[u8], at: usize) -> Result<Zeroizing<String>, DecodeError> {
    let (offset, chars) = pair(payload, at)?;
    let mut bytes = Zeroizing::new(slice_at(payload, offset, chars * 2)?.to_vec());
    deobfuscate_password(&mut bytes);
    Ok(Zeroizing::new(utf16(&bytes)?))
}

fn decode_variable(login: &mut Login7, payload: &[u8]) -> Result<(), DecodeError> {
    let modern = has_72_fields(login.tds_version);
    let fixed_len = if modern { FIXED_LEN } else { FIXED_LEN_71 };
    if payload.len() < fixed_len {
        return Err(DecodeError::Truncated {
            structure: STRUCTURE,
            needed: fixed_len,
            available: payload.len(),
        });
    }

    login.hostname = string_field(payload, field::HOSTNAME)?;
    login.username = string_field(payload, field::USERNAME)?;
    login.password = password_field(payload, field::PASSWORD)?;
    login.app_name = string_field(payload, field::APP_NAME)?;
    login.server_name = string_field(payload, field::SERVER_NAME)?;
    login.library_name = string_field(payload, field::LIBRARY)?;
    login.language = string_field(payload, field::LANGUAGE)?;
    login.database = string_field(payload, field::DATABASE)?;
    login.client_id = slice_at(payload, field::CLIENT_ID, 6)?
        .try_into()
        .map_err(|_| malformed("ClientID"))?;
    login.attach_db_file = string_field(payload, field::ATTACH_DB)?;
    login.sspi = Zeroizing::new(sspi_field(payload, modern)?.to_vec());
    if modern {
        login.change_password = password_field(payload, field::CHANGE_PASSWORD)?;
    }
    login.features = feature_ext(login, payload)?;
    Ok(())
}

/// The SSPI blob: cbSSPI, or cbSSPILong when cbSSPI is 0xFFFF (2.2.6.4).
fn sspi_field(payload: &[u8], modern: bool) -> Result<&[u8], DecodeError> {
    let (offset, short_len) = pair(payload, field::SSPI)?;
    let mut len = short_len;
    if modern && short_len == usize::from(u16::MAX) {
        let mut r = Reader::new(payload, STRUCTURE);
        r.skip(field::SSPI_LONG)?;
        len = r.u32_le()? as usize;
    }
    slice_at(payload, offset, len)
}

/// The FeatureExt list when fExtension is set (2.2.6.4, ibExtension).
///
/// Without fExtension the ibExtension field is "ibUnused"; bytes it points
/// at are reproduced only while the message is unmodified.
/// TODO(tdsguard): keep them as a field if a client is found that sends any.
fn feature_ext(login: &Login7, payload: &[u8]) -> Result<Option<Vec<Feature>>, DecodeError> {
    if login.option_flags3 & flags3::EXTENSION == 0 {
        return Ok(None);
    }
    let (offset, len) = pair(payload, field::EXTENSION)?;
    if len != 4 {
        return Err(invalid("cbExtension", len as u64));
    }
    let mut r = Reader::new(slice_at(payload, offset, 4)?, STRUCTURE);
    let block_offset = r.u32_le()? as usize;
    let block = payload
        .get(block_offset..)
        .ok_or_else(|| invalid("FeatureExt offset", block_offset as u64))?;
    decode_features(block).map(Some)
}

fn decode_features(block: &[u8]) -> Result<Vec<Feature>, DecodeError> {
    let mut r = Reader::new(block, "LOGIN7 FeatureExt");
    let mut features = Vec::new();
    loop {
        let id = r.u8()?;
        if id == FEATURE_TERMINATOR {
            return Ok(features);
        }
        if features.len() == MAX_FEATURES {
            return Err(DecodeError::TooLarge {
                structure: "LOGIN7 FeatureExt",
                length: MAX_FEATURES + 1,
                limit: MAX_FEATURES,
            });
        }
        let len = r.u32_le()? as usize;
        let data = Bytes::copy_from_slice(r.bytes(len)?);
        features.push(Feature { id, data });
    }
}

/// Writes the variable data in field order after the fixed part.
struct VariableWriter {
    fixed: BytesMut,
    data: BytesMut,
    fixed_len: usize,
}

impl VariableWriter {
    fn offset(&self) -> Result<u16, EncodeError> {
        let offset = self.fixed_len + self.data.len();
        u16::try_from(offset).map_err(|_| too_large("variable data", offset, 0xFFFF))
    }

    /// Appends `bytes` and writes ib plus `count` into the fixed part.
    fn put(&mut self, bytes: &[u8], count: usize) -> Result<(), EncodeError> {
        let offset = self.offset()?;
        let count = u16::try_from(count).map_err(|_| too_large("field", count, 0xFFFF))?;
        self.fixed.put_u16_le(offset);
        self.fixed.put_u16_le(count);
        self.data.extend_from_slice(bytes);
        Ok(())
    }

    fn put_str(&mut self, s: &str) -> Result<(), EncodeError> {
        let bytes = encode_utf16(s);
        self.put(&bytes, bytes.len() / 2)
    }

    fn put_password(&mut self, s: &str) -> Result<(), EncodeError> {
        let count = s.encode_utf16().count();
        let mut bytes: Zeroizing<Vec<u8>> =
            Zeroizing::new(s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect());
        obfuscate_password(&mut bytes);
        self.put(&bytes, count)
    }
}

fn too_large(field: &'static str, length: usize, limit: usize) -> EncodeError {
    EncodeError::TooLarge {
        structure: STRUCTURE,
        field,
        length,
        limit,
    }
}

fn encode_canonical(login: &Login7, out: &mut BytesMut) -> Result<(), EncodeError> {
    let modern = has_72_fields(login.tds_version);
    let fixed_len = if modern { FIXED_LEN } else { FIXED_LEN_71 };
    let mut w = VariableWriter {
        fixed: BytesMut::with_capacity(fixed_len),
        data: BytesMut::new(),
        fixed_len,
    };
    put_fixed_head(login, &mut w.fixed);
    put_strings(login, &mut w)?;
    put_tail(login, &mut w, modern)?;

    let total = fixed_len + w.data.len();
    if total > MAX_LOGIN7_LEN {
        return Err(too_large("message", total, MAX_LOGIN7_LEN));
    }
    let mut fixed = w.fixed;
    fixed[..4].copy_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&fixed);
    out.extend_from_slice(&w.data);
    Ok(())
}

/// The first 36 bytes; Length is patched once the total is known.
fn put_fixed_head(login: &Login7, fixed: &mut BytesMut) {
    fixed.put_u32_le(0);
    fixed.put_u32_le(login.tds_version);
    fixed.put_u32_le(login.packet_size);
    fixed.put_u32_le(login.client_prog_ver);
    fixed.put_u32_le(login.client_pid);
    fixed.put_u32_le(login.connection_id);
    fixed.put_u8(login.option_flags1);
    fixed.put_u8(login.option_flags2);
    fixed.put_u8(login.type_flags);
    fixed.put_u8(login.option_flags3);
    fixed.put_i32_le(login.client_time_zone);
    fixed.put_u32_le(login.client_lcid);
}

/// Host name through database, with the FeatureExt offset DWORD in the
/// ibExtension slot (its value is patched in `put_tail`).
fn put_strings(login: &Login7, w: &mut VariableWriter) -> Result<(), EncodeError> {
    w.put_str(&login.hostname)?;
    w.put_str(&login.username)?;
    w.put_password(&login.password)?;
    w.put_str(&login.app_name)?;
    w.put_str(&login.server_name)?;
    match &login.features {
        Some(_) => w.put(&[0; 4], 4)?,
        None => w.put(&[], 0)?,
    }
    w.put_str(&login.library_name)?;
    w.put_str(&login.language)?;
    w.put_str(&login.database)?;
    w.fixed.extend_from_slice(&login.client_id);
    Ok(())
}

fn put_tail(login: &Login7, w: &mut VariableWriter, modern: bool) -> Result<(), EncodeError> {
    let ext_dword_at = extension_dword_position(login, w);

    let sspi_len = login.sspi.len();
    let long = sspi_len >= usize::from(u16::MAX);
    if long && !modern {
        return Err(too_large("SSPI", sspi_len, 0xFFFE));
    }
    let short = if long { sspi_len.min(0xFFFF) } else { sspi_len };
    w.put(&login.sspi, short)?;
    w.put_str(&login.attach_db_file)?;
    if modern {
        w.put_password(&login.change_password)?;
        w.fixed.put_u32_le(if long { sspi_len as u32 } else { 0 });
    }

    if let Some(features) = &login.features {
        let block_at = w.fixed_len + w.data.len();
        if let Some(at) = ext_dword_at {
            w.data[at..at + 4].copy_from_slice(&(block_at as u32).to_le_bytes());
        }
        encode_features(features, &mut w.data)?;
    }
    Ok(())
}

/// Where the FeatureExt offset DWORD sits in the data buffer.
fn extension_dword_position(login: &Login7, w: &VariableWriter) -> Option<usize> {
    login.features.as_ref()?;
    let mut r = Reader::new(&w.fixed, STRUCTURE);
    r.skip(field::EXTENSION).ok()?;
    let offset = usize::from(r.u16_le().ok()?);
    offset.checked_sub(w.fixed_len)
}

fn encode_features(features: &[Feature], out: &mut BytesMut) -> Result<(), EncodeError> {
    if features.len() > MAX_FEATURES {
        return Err(too_large("feature count", features.len(), MAX_FEATURES));
    }
    for feature in features {
        let len = u32::try_from(feature.data.len())
            .map_err(|_| too_large("feature data", feature.data.len(), u32::MAX as usize))?;
        out.put_u8(feature.id);
        out.put_u32_le(len);
        out.extend_from_slice(&feature.data);
    }
    out.put_u8(FEATURE_TERMINATOR);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [MS-TDS] 4.2 login request (TDS 7.2), header included.
    const LOGIN_42: &[u8] =
        include_bytes!("../../fixtures/ms-tds-examples/ms-tds-4.2_login7_request.bin");

    fn spec_payload() -> Vec<u8> {
        LOGIN_42[8..].to_vec()
    }

    fn encode(login: &Login7) -> Vec<u8> {
        let mut out = BytesMut::new();
        login.encode(&mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn password_obfuscation_matches_the_spec() {
        let mut bytes: Vec<u8> = "testpwd"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        obfuscate_password(&mut bytes);
        assert_eq!(&bytes[..4], &[0xE2, 0xA5, 0xF3, 0xA5]);
        deobfuscate_password(&mut bytes);
        assert_eq!(bytes[0], b't');
    }

    #[test]
    fn decodes_the_spec_example() {
        let payload = spec_payload();
        assert_eq!(payload.len(), 0x88);
        let login = Login7::decode(&payload).unwrap();
        assert_eq!(login.tds_version, version::TDS72);
        assert_eq!(login.packet_size, 4096);
        assert_eq!(login.hostname, "skostov1");
        assert_eq!(login.username, "sa");
        assert_eq!(&*login.password, "");
        assert_eq!(login.app_name, "OSQL-32");
        assert_eq!(login.library_name, "ODBC");
        assert_eq!(login.client_id, [0x00, 0x50, 0x8B, 0xE2, 0xB7, 0x8F]);
        assert!(login.features.is_none());
        assert!(login.is_unmodified());
        assert_eq!(encode(&login), payload);

        // Spec layout is field order, so a fresh encode gives the same bytes.
        let mut fresh = login.clone();
        fresh.original = None;
        assert_eq!(encode(&fresh), payload);
    }

    #[test]
    fn debug_hides_secrets() {
        let mut login = Login7::decode(&spec_payload()).unwrap();
        login.password = Zeroizing::new("hunter2-secret".into());
        login.change_password = Zeroizing::new("new-secret".into());
        login.sspi = Zeroizing::new(b"sspi-blob".to_vec());
        login.features = Some(vec![Feature {
            id: 0x02,
            data: Bytes::from_static(b"fedauth-token"),
        }]);
        let shown = format!("{login:?}");
        for secret in ["hunter2", "new-secret", "sspi-blob", "fedauth-token"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("FEDAUTH"));
    }

    fn sample_74() -> Login7 {
        Login7 {
            tds_version: version::TDS74,
            packet_size: 8000,
            option_flags3: flags3::EXTENSION | flags3::CHANGE_PASSWORD,
            hostname: "host".into(),
            username: "user".into(),
            password: Zeroizing::new("pässwörd".into()),
            app_name: "app".into(),
            server_name: "srv.example".into(),
            library_name: "lib".into(),
            database: "db".into(),
            sspi: Zeroizing::new(vec![1, 2, 3]),
            change_password: Zeroizing::new("neu".into()),
            features: Some(vec![
                Feature {
                    id: 0x04,
                    data: Bytes::from_static(&[1]),
                },
                Feature {
                    id: 0x77,
                    data: Bytes::from_static(&[9, 9]),
                },
            ]),
            ..Login7::default()
        }
    }

    #[test]
    fn round_trips_features_and_passwords() {
        let login = sample_74();
        let bytes = encode(&login);
        let decoded = Login7::decode(&bytes).unwrap();
        assert_eq!(&*decoded.password, "pässwörd");
        assert_eq!(&*decoded.change_password, "neu");
        assert_eq!(&decoded.sspi[..], &[1, 2, 3]);
        assert_eq!(decoded.features, login.features);
        assert!(decoded.has_feature(FeatureId::ColumnEncryption));
        assert_eq!(encode(&decoded), bytes);
    }

    #[test]
    fn modified_message_is_reencoded() {
        let mut login = Login7::decode(&encode(&sample_74())).unwrap();
        login.database = "other".into();
        assert!(!login.is_unmodified());
        let again = Login7::decode(&encode(&login)).unwrap();
        assert_eq!(again.database, "other");
        assert_eq!(again.hostname, "host");
    }

    #[test]
    fn rejects_bad_input() {
        let payload = spec_payload();
        assert!(Login7::decode(&payload[..50]).is_err());
        let mut bad_len = payload.clone();
        bad_len[0] = 0x87;
        assert!(Login7::decode(&bad_len).is_err());
        let mut bad_offset = payload.clone();
        bad_offset[36] = 0xF0;
        assert!(Login7::decode(&bad_offset).is_err());
        let mut old = payload;
        old[4..8].copy_from_slice(&[0, 0, 0, 0x50]);
        assert!(Login7::decode(&old).is_err());
    }

    #[test]
    fn decodes_a_tds71_login_with_its_own_layout() {
        let raw = include_bytes!("../../fixtures/client-first-packets/jtds-prelogin.bin");
        let login = Login7::decode(&raw[8..]).unwrap();
        assert_eq!(login.version_name(), "7.1");
        assert_eq!(login.username, "holdout");
        assert_eq!(login.library_name, "jTDS");
        assert_eq!(login.database, "holdoutdb");
        assert!(!login.password.is_empty());
        assert_eq!(encode(&login), &raw[8..]);
    }

    #[test]
    fn pre_tds7_login_is_detected() {
        assert!(is_pre_tds7_login(PacketType::PreTds7Login));
        assert!(!is_pre_tds7_login(PacketType::Login7));
    }
}
