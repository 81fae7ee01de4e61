//! PRELOGIN request and response ([MS-TDS] 2.2.6.5).
//!
//! The payload is an option table (token, offset, length, both big-endian,
//! offsets from the payload start) ended by 0xFF, then the option data. The
//! client sends it in a type 0x12 message, the server answers with the same
//! layout in a type 0x04 message. Options are kept in table order, unknown
//! ones included, and a decoded message re-encodes to the same bytes.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::tds::{DecodeError, EncodeError, Reader};

/// Option tokens (2.2.6.5).
pub mod token {
    pub const VERSION: u8 = 0x00;
    pub const ENCRYPTION: u8 = 0x01;
    pub const INSTOPT: u8 = 0x02;
    pub const THREADID: u8 = 0x03;
    pub const MARS: u8 = 0x04;
    pub const TRACEID: u8 = 0x05;
    pub const FEDAUTHREQUIRED: u8 = 0x06;
    pub const NONCEOPT: u8 = 0x07;
    pub const TERMINATOR: u8 = 0xFF;
}

/// Cap on option table entries. MS-TDS defines eight options; 64 leaves room
/// for future ones while bounding the table a peer can make us walk.
pub const MAX_OPTIONS: usize = 64;

/// Cap on the PRELOGIN payload: it travels in one packet in practice, and a
/// packet holds at most 32767 - 8 bytes (2.2.3).
pub const MAX_PRELOGIN_LEN: usize = 32767 - 8;

/// ENCRYPTION bit OR'ed into the value for client-certificate authentication.
pub const ENCRYPT_CLIENT_CERT: u8 = 0x80;

/// Length of the NONCEOPT data (2.2.6.5).
pub const NONCE_LEN: usize = 32;

/// Length of the TRACEID data: connection id, activity id, sequence.
pub const TRACE_ID_LEN: usize = 36;

const ENTRY_LEN: usize = 5;
const STRUCTURE: &str = "PRELOGIN";

/// The ENCRYPTION option without the client-certificate bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// 0x00 ENCRYPT_OFF: available but off (login-only TLS).
    Off,
    /// 0x01 ENCRYPT_ON.
    On,
    /// 0x02 ENCRYPT_NOT_SUP.
    NotSupported,
    /// 0x03 ENCRYPT_REQ.
    Required,
}

impl Encryption {
    fn decode(byte: u8) -> Result<(Self, bool), DecodeError> {
        let mode = match byte & !ENCRYPT_CLIENT_CERT {
            0x00 => Encryption::Off,
            0x01 => Encryption::On,
            0x02 => Encryption::NotSupported,
            0x03 => Encryption::Required,
            _ => return Err(invalid("encryption", byte.into())),
        };
        Ok((mode, byte & ENCRYPT_CLIENT_CERT != 0))
    }

    fn to_u8(self) -> u8 {
        match self {
            Encryption::Off => 0x00,
            Encryption::On => 0x01,
            Encryption::NotSupported => 0x02,
            Encryption::Required => 0x03,
        }
    }
}

/// The VERSION option: a driver or product version, not the TDS version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    /// Big-endian on the wire.
    pub build: u16,
    /// Big-endian on the wire; almost always 0.
    pub sub_build: u16,
}

/// The TRACEID option (TDS 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId {
    pub connection_id: [u8; 16],
    pub activity_id: [u8; 16],
    pub sequence: u32,
}

/// One option: its token and its data bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct PreLoginOption {
    pub token: u8,
    pub data: Bytes,
}

impl fmt::Debug for PreLoginOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreLoginOption")
            .field("token", &option_name(self.token))
            .field("len", &self.data.len())
            .finish()
    }
}

/// A PRELOGIN request or response.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PreLogin {
    options: Vec<PreLoginOption>,
    /// The received bytes when their layout differs from what [`encode`]
    /// writes (data out of table order, gaps, trailing bytes); dropped by
    /// every setter.
    ///
    /// [`encode`]: PreLogin::encode
    original: Option<Bytes>,
}

impl fmt::Debug for PreLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreLogin")
            .field("options", &self.options)
            .field("original_layout", &self.original.is_some())
            .finish()
    }
}

/// The MS-TDS name of an option token.
pub fn option_name(token: u8) -> &'static str {
    match token {
        token::VERSION => "VERSION",
        token::ENCRYPTION => "ENCRYPTION",
        token::INSTOPT => "INSTOPT",
        token::THREADID => "THREADID",
        token::MARS => "MARS",
        token::TRACEID => "TRACEID",
        token::FEDAUTHREQUIRED => "FEDAUTHREQUIRED",
        token::NONCEOPT => "NONCEOPT",
        _ => "unknown",
    }
}

fn invalid(field: &'static str, value: u64) -> DecodeError {
    DecodeError::InvalidValue {
        structure: STRUCTURE,
        field,
        value,
    }
}

impl PreLogin {
    /// An empty PRELOGIN (no options).
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes a whole PRELOGIN payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        if payload.len() > MAX_PRELOGIN_LEN {
            return Err(DecodeError::TooLarge {
                structure: STRUCTURE,
                length: payload.len(),
                limit: MAX_PRELOGIN_LEN,
            });
        }
        let table = decode_table(payload)?;
        let table_end = table.len() * ENTRY_LEN + 1;

        let mut options = Vec::with_capacity(table.len());
        for (token, offset, length) in table {
            let data = option_data(payload, table_end, offset, length)?;
            check_option(token, data)?;
            options.push(PreLoginOption {
                token,
                data: Bytes::copy_from_slice(data),
            });
        }

        let mut prelogin = PreLogin {
            options,
            original: None,
        };
        if prelogin.encode_canonical()[..] != *payload {
            prelogin.original = Some(Bytes::copy_from_slice(payload));
        }
        Ok(prelogin)
    }

    /// Appends the payload; reproduces decoded bytes exactly when unmodified.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if let Some(original) = &self.original {
            out.extend_from_slice(original);
            return Ok(());
        }
        // Refuse what our own decoder would refuse.
        if self.options.len() > MAX_OPTIONS {
            return Err(EncodeError::TooLarge {
                structure: STRUCTURE,
                field: "option count",
                length: self.options.len(),
                limit: MAX_OPTIONS,
            });
        }
        let bytes = self.encode_canonical();
        if bytes.len() > MAX_PRELOGIN_LEN {
            return Err(EncodeError::TooLarge {
                structure: STRUCTURE,
                field: "payload",
                length: bytes.len(),
                limit: MAX_PRELOGIN_LEN,
            });
        }
        out.extend_from_slice(&bytes);
        Ok(())
    }

    /// Table in option order, then the data in the same order, contiguous.
    fn encode_canonical(&self) -> BytesMut {
        let mut out = BytesMut::new();
        let mut offset = self.options.len() * ENTRY_LEN + 1;
        for option in &self.options {
            out.put_u8(option.token);
            out.put_u16(offset as u16);
            out.put_u16(option.data.len() as u16);
            offset += option.data.len();
        }
        out.put_u8(token::TERMINATOR);
        for option in &self.options {
            out.extend_from_slice(&option.data);
        }
        out
    }

    /// The options in table order.
    pub fn options(&self) -> &[PreLoginOption] {
        &self.options
    }

    /// Whether the decoded layout differs from the one [`encode`] writes
    /// after a change.
    ///
    /// [`encode`]: PreLogin::encode
    pub fn has_original_layout(&self) -> bool {
        self.original.is_some()
    }

    /// The data of the first option with this token.
    pub fn option(&self, token: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|o| o.token == token)
            .map(|o| &o.data[..])
    }

    /// Sets an option's data in place, or appends the option if missing.
    /// Typed setters below check lengths; this one does not.
    pub fn set_option(&mut self, token: u8, data: &[u8]) {
        self.original = None;
        let data = Bytes::copy_from_slice(data);
        match self.options.iter_mut().find(|o| o.token == token) {
            Some(option) => option.data = data,
            None => self.options.push(PreLoginOption { token, data }),
        }
    }

    /// Removes every option with this token.
    pub fn remove_option(&mut self, token: u8) {
        self.original = None;
        self.options.retain(|o| o.token != token);
    }

    pub fn version(&self) -> Option<Version> {
        let data = self.option(token::VERSION)?;
        let mut r = Reader::new(data, STRUCTURE);
        Some(Version {
            major: r.u8().ok()?,
            minor: r.u8().ok()?,
            build: r.u16_be().ok()?,
            sub_build: r.u16_be().ok()?,
        })
    }

    pub fn set_version(&mut self, v: Version) {
        let [b0, b1] = v.build.to_be_bytes();
        let [s0, s1] = v.sub_build.to_be_bytes();
        self.set_option(token::VERSION, &[v.major, v.minor, b0, b1, s0, s1]);
    }

    /// The encryption mode and whether the client-certificate bit is set.
    pub fn encryption(&self) -> Option<(Encryption, bool)> {
        let byte = *self.option(token::ENCRYPTION)?.first()?;
        Encryption::decode(byte).ok()
    }

    pub fn set_encryption(&mut self, mode: Encryption, client_cert: bool) {
        let cert = if client_cert { ENCRYPT_CLIENT_CERT } else { 0 };
        self.set_option(token::ENCRYPTION, &[mode.to_u8() | cert]);
    }

    /// INSTOPT: the client's instance name (NUL-terminated) or the server's
    /// one-byte answer (0x00 ok, 0x01 mismatch), as raw bytes.
    pub fn instance(&self) -> Option<&[u8]> {
        self.option(token::INSTOPT)
    }

    pub fn set_instance(&mut self, data: &[u8]) {
        self.set_option(token::INSTOPT, data);
    }

    /// THREADID: the client's thread id, little-endian (the 4.1 example
    /// reads `B8 0D 00 00` as 3512); servers send the option empty.
    pub fn thread_id(&self) -> Option<u32> {
        let data = self.option(token::THREADID)?;
        Reader::new(data, STRUCTURE).u32_le().ok()
    }

    pub fn set_thread_id(&mut self, id: u32) {
        self.set_option(token::THREADID, &id.to_le_bytes());
    }

    pub fn mars(&self) -> Option<bool> {
        Some(*self.option(token::MARS)?.first()? != 0)
    }

    pub fn set_mars(&mut self, on: bool) {
        self.set_option(token::MARS, &[u8::from(on)]);
    }

    pub fn trace_id(&self) -> Option<TraceId> {
        let data = self.option(token::TRACEID)?;
        let mut r = Reader::new(data, STRUCTURE);
        Some(TraceId {
            connection_id: r.array().ok()?,
            activity_id: r.array().ok()?,
            sequence: r.u32_le().ok()?,
        })
    }

    pub fn set_trace_id(&mut self, t: TraceId) {
        let mut data = Vec::with_capacity(TRACE_ID_LEN);
        data.extend_from_slice(&t.connection_id);
        data.extend_from_slice(&t.activity_id);
        data.extend_from_slice(&t.sequence.to_le_bytes());
        self.set_option(token::TRACEID, &data);
    }

    pub fn fed_auth_required(&self) -> Option<bool> {
        Some(*self.option(token::FEDAUTHREQUIRED)?.first()? != 0)
    }

    pub fn set_fed_auth_required(&mut self, on: bool) {
        self.set_option(token::FEDAUTHREQUIRED, &[u8::from(on)]);
    }

    pub fn nonce(&self) -> Option<[u8; NONCE_LEN]> {
        self.option(token::NONCEOPT)?.try_into().ok()
    }

    pub fn set_nonce(&mut self, nonce: [u8; NONCE_LEN]) {
        self.set_option(token::NONCEOPT, &nonce);
    }
}

/// Reads (token, offset, length) entries up to the terminator.
fn decode_table(payload: &[u8]) -> Result<Vec<(u8, usize, usize)>, DecodeError> {
    let mut r = Reader::new(payload, STRUCTURE);
    let mut table = Vec::new();
    loop {
        let token = r.u8()?;
        if token == token::TERMINATOR {
            return Ok(table);
        }
        if table.len() == MAX_OPTIONS {
            return Err(DecodeError::TooLarge {
                structure: STRUCTURE,
                length: MAX_OPTIONS + 1,
                limit: MAX_OPTIONS,
            });
        }
        let offset = usize::from(r.u16_be()?);
        let length = usize::from(r.u16_be()?);
        table.push((token, offset, length));
    }
}

/// The data an entry points at; it must lie after the table.
fn option_data(
    payload: &[u8],
    table_end: usize,
    offset: usize,
    length: usize,
) -> Result<&[u8], DecodeError> {
    // A zero-length option may point anywhere (servers echo offsets loosely).
    if length == 0 {
        return Ok(&[]);
    }
    if offset < table_end {
        return Err(invalid("option offset", offset as u64));
    }
    payload
        .get(offset..offset + length)
        .ok_or(DecodeError::Truncated {
            structure: STRUCTURE,
            needed: offset + length,
            available: payload.len(),
        })
}

/// Checks the lengths (and the ENCRYPTION value) 2.2.6.5 fixes.
fn check_option(token: u8, data: &[u8]) -> Result<(), DecodeError> {
    let allowed: &[usize] = match token {
        token::VERSION => &[6],
        token::ENCRYPTION => &[1],
        token::THREADID => &[0, 4],
        token::MARS => &[1],
        token::TRACEID => &[0, TRACE_ID_LEN],
        token::FEDAUTHREQUIRED => &[0, 1],
        token::NONCEOPT => &[0, NONCE_LEN],
        _ => return Ok(()),
    };
    if !allowed.contains(&data.len()) {
        return Err(invalid("option length", data.len() as u64));
    }
    if let (token::ENCRYPTION, Some(&byte)) = (token, data.first()) {
        Encryption::decode(byte)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [MS-TDS] 4.1 pre-login request payload.
    const REQUEST_41: &[u8] = &[
        0x00, 0x00, 0x1A, 0x00, 0x06, 0x01, 0x00, 0x20, 0x00, 0x01, 0x02, 0x00, 0x21, 0x00, 0x01,
        0x03, 0x00, 0x22, 0x00, 0x04, 0x04, 0x00, 0x26, 0x00, 0x01, 0xFF, 0x09, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0xB8, 0x0D, 0x00, 0x00, 0x01,
    ];

    fn encode(p: &PreLogin) -> Vec<u8> {
        let mut out = BytesMut::new();
        p.encode(&mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn decodes_the_spec_example() {
        let p = PreLogin::decode(REQUEST_41).unwrap();
        assert_eq!(
            p.version(),
            Some(Version {
                major: 9,
                minor: 0,
                build: 0,
                sub_build: 0
            })
        );
        assert_eq!(p.encryption(), Some((Encryption::On, false)));
        assert_eq!(p.instance(), Some(&[0u8][..]));
        assert_eq!(p.thread_id(), Some(0x0DB8));
        assert_eq!(p.mars(), Some(true));
        assert!(!p.has_original_layout());
        assert_eq!(encode(&p), REQUEST_41);
    }

    #[test]
    fn setters_keep_order_and_reencode() {
        let mut p = PreLogin::decode(REQUEST_41).unwrap();
        p.set_encryption(Encryption::Required, true);
        p.set_mars(false);
        p.set_nonce([7; NONCE_LEN]);
        let bytes = encode(&p);
        let q = PreLogin::decode(&bytes).unwrap();
        assert_eq!(q.encryption(), Some((Encryption::Required, true)));
        assert_eq!(q.mars(), Some(false));
        assert_eq!(q.nonce(), Some([7; NONCE_LEN]));
        let tokens: Vec<u8> = q.options().iter().map(|o| o.token).collect();
        assert_eq!(tokens, [0, 1, 2, 3, 4, 7]);
        assert_eq!(encode(&q), bytes);
    }

    #[test]
    fn odd_layouts_and_unknown_options_are_kept() {
        // Data stored in reverse order, an unknown option 0x42, a trailing byte.
        let payload = [
            0x01, 0x00, 0x10, 0x00, 0x01, 0x42, 0x00, 0x0E, 0x00, 0x02, 0xFF, 0x00, 0x00, 0x00,
            0xAA, 0xBB, 0x03, 0x99,
        ];
        let mut p = PreLogin::decode(&payload).unwrap();
        assert!(p.has_original_layout());
        assert_eq!(p.option(0x42), Some(&[0xAA, 0xBB][..]));
        assert_eq!(p.encryption(), Some((Encryption::Required, false)));
        assert_eq!(encode(&p), payload);

        p.set_mars(true);
        assert!(!p.has_original_layout());
        let q = PreLogin::decode(&encode(&p)).unwrap();
        assert_eq!(q.option(0x42), Some(&[0xAA, 0xBB][..]));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(PreLogin::decode(&[]).is_err());
        assert!(PreLogin::decode(&[0x00, 0x00, 0x06, 0x00, 0x06]).is_err());
        // ENCRYPTION value 0x05.
        assert!(PreLogin::decode(&[0x01, 0x00, 0x06, 0x00, 0x01, 0xFF, 0x05]).is_err());
        // Data past the end.
        assert!(PreLogin::decode(&[0x01, 0x00, 0x06, 0x00, 0x02, 0xFF, 0x00]).is_err());
        // Offset inside the table.
        assert!(PreLogin::decode(&[0x01, 0x00, 0x01, 0x00, 0x01, 0xFF, 0x00]).is_err());
    }

    #[test]
    fn too_many_options_are_refused_on_encode() {
        let mut p = PreLogin::new();
        for token in 0..=MAX_OPTIONS as u8 {
            p.set_option(token.wrapping_add(0x10), &[]);
        }
        assert!(p.encode(&mut BytesMut::new()).is_err());
        p.remove_option(0x10);
        let bytes = encode(&p);
        assert_eq!(
            PreLogin::decode(&bytes).unwrap().options().len(),
            MAX_OPTIONS
        );
    }

    #[test]
    fn empty_prelogin_round_trips() {
        let p = PreLogin::decode(&[0xFF]).unwrap();
        assert!(p.options().is_empty());
        assert_eq!(encode(&p), [0xFF]);
        assert_eq!(encode(&PreLogin::new()), [0xFF]);
    }
}
