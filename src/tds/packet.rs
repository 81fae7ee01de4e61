//! TDS packets: the 8-byte header, splitting a byte stream into packets,
//! joining packets into messages and cutting a message back into packets
//! ([MS-TDS] 2.2.3 "Packet Header", 2.2.3.1.1 "Type", 2.2.3.1.2 "Status").
//!
//! A message is the concatenation of packet payloads up to the packet with
//! EOM set; packet boundaries carry no meaning above this module.

use bytes::{BufMut, Bytes, BytesMut};

use crate::tds::{DecodeError, EncodeError};

/// Length of the packet header (2.2.3).
pub const HEADER_LEN: usize = 8;

/// Largest packet tdsguard accepts: 32767 is the largest packet size a
/// client can negotiate (LOGIN7.PacketSize, confirmed by ENVCHANGE type 4,
/// legal range 512..=32767 per 2.2.6.4).
pub const MAX_PACKET_LEN: usize = 32767;

/// Smallest negotiable packet size (2.2.6.4).
pub const MIN_NEGOTIATED_PACKET_SIZE: usize = 512;

/// Packet size used before a login changes it: the classic default.
pub const DEFAULT_PACKET_SIZE: usize = 4096;

/// Default cap on an assembled message. tdsguard buffers a whole client
/// request to rewrite its parameters, so this bounds memory per connection.
/// LOGIN7 is at most 128 KiB - 1 (2.2.6.4); SQL batches and RPCs have no
/// protocol limit, so the number is a policy: 64 MiB covers large batches and
/// LOB parameters seen in practice while keeping a hostile client from making
/// the proxy buffer gigabytes.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// Status bits of the packet header (2.2.3.1.2).
pub mod status {
    /// End of message: the last packet of a message.
    pub const EOM: u8 = 0x01;
    /// Client to server, only together with EOM: discard the whole message.
    pub const IGNORE: u8 = 0x02;
    /// Not defined by MS-TDS, yet real clients set it on non-final packets
    /// (Wireshark calls it "event notification"). Accepted only without EOM.
    pub const EVENT_NOTIFICATION: u8 = 0x04;
    /// Reset the session before running this request (TDS 7.1+).
    pub const RESETCONNECTION: u8 = 0x08;
    /// Reset the session but keep the transaction (TDS 7.3+).
    pub const RESETCONNECTIONSKIPTRAN: u8 = 0x10;
    /// Both reset bits.
    pub const RESET_MASK: u8 = RESETCONNECTION | RESETCONNECTIONSKIPTRAN;
    /// Every bit tdsguard accepts.
    pub const KNOWN: u8 = EOM | IGNORE | EVENT_NOTIFICATION | RESET_MASK;
}

/// The Type byte of a packet (2.2.3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// 0x01, client: SQL batch.
    SqlBatch = 0x01,
    /// 0x02, client: pre-TDS7 login. Recognised only so it can be refused.
    PreTds7Login = 0x02,
    /// 0x03, client: remote procedure call.
    Rpc = 0x03,
    /// 0x04, server: tabular result (every server reply).
    TabularResult = 0x04,
    /// 0x06, client: attention (cancel).
    Attention = 0x06,
    /// 0x07, client: bulk load data.
    BulkLoad = 0x07,
    /// 0x08, client: federated authentication token.
    FedAuthToken = 0x08,
    /// 0x0E, client: transaction manager request.
    TransactionManager = 0x0E,
    /// 0x10, client: TDS 7 login.
    Login7 = 0x10,
    /// 0x11, client: SSPI continuation.
    Sspi = 0x11,
    /// 0x12, both: PRELOGIN, and TLS handshake records during a 7.x handshake.
    PreLogin = 0x12,
}

impl PacketType {
    /// Decodes a Type byte; unknown types are an error.
    pub fn decode(byte: u8) -> Result<Self, DecodeError> {
        let ty = match byte {
            0x01 => PacketType::SqlBatch,
            0x02 => PacketType::PreTds7Login,
            0x03 => PacketType::Rpc,
            0x04 => PacketType::TabularResult,
            0x06 => PacketType::Attention,
            0x07 => PacketType::BulkLoad,
            0x08 => PacketType::FedAuthToken,
            0x0E => PacketType::TransactionManager,
            0x10 => PacketType::Login7,
            0x11 => PacketType::Sspi,
            0x12 => PacketType::PreLogin,
            other => return Err(invalid("packet header", "type", other.into())),
        };
        Ok(ty)
    }

    /// The Type byte.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// The MS-TDS name, for logs and `tdsguard dump`.
    pub fn name(self) -> &'static str {
        match self {
            PacketType::SqlBatch => "SQLBatch",
            PacketType::PreTds7Login => "PreTDS7Login",
            PacketType::Rpc => "RPC",
            PacketType::TabularResult => "TabularResult",
            PacketType::Attention => "Attention",
            PacketType::BulkLoad => "BulkLoad",
            PacketType::FedAuthToken => "FedAuthToken",
            PacketType::TransactionManager => "TransactionManager",
            PacketType::Login7 => "Login7",
            PacketType::Sspi => "SSPI",
            PacketType::PreLogin => "PreLogin",
        }
    }
}

fn invalid(structure: &'static str, field: &'static str, value: u64) -> DecodeError {
    DecodeError::InvalidValue {
        structure,
        field,
        value,
    }
}

/// The 8-byte packet header (2.2.3). Length and SPID are big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub packet_type: PacketType,
    /// Status bits, see [`status`].
    pub status: u8,
    /// Total packet length including the header, 8..=32767.
    pub length: u16,
    /// Server session id; clients send 0.
    pub spid: u16,
    /// Increments per packet, wrapping; receivers ignore it.
    pub packet_id: u8,
    /// Always 0 per the spec; kept as received.
    pub window: u8,
}

impl PacketHeader {
    /// Decodes and checks a header from the first 8 bytes of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = crate::tds::Reader::new(buf, "packet header");
        let packet_type = PacketType::decode(r.u8()?)?;
        let status = r.u8()?;
        let length = r.u16_be()?;
        let spid = r.u16_be()?;
        let packet_id = r.u8()?;
        let window = r.u8()?;

        check_status(status)?;
        check_length(length)?;
        Ok(PacketHeader {
            packet_type,
            status,
            length,
            spid,
            packet_id,
            window,
        })
    }

    /// Appends the 8 header bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN);
        out.put_u8(self.packet_type.to_u8());
        out.put_u8(self.status);
        out.put_u16(self.length);
        out.put_u16(self.spid);
        out.put_u8(self.packet_id);
        out.put_u8(self.window);
    }

    /// Whether this is the last packet of its message.
    pub fn is_eom(&self) -> bool {
        self.status & status::EOM != 0
    }

    /// Whether the message ending here is to be discarded (EOM + IGNORE).
    pub fn is_ignore(&self) -> bool {
        self.status & status::IGNORE != 0
    }

    /// The RESETCONNECTION / RESETCONNECTIONSKIPTRAN bits.
    pub fn reset_flags(&self) -> u8 {
        self.status & status::RESET_MASK
    }

    /// Payload length (total length minus the header).
    pub fn payload_len(&self) -> usize {
        usize::from(self.length).saturating_sub(HEADER_LEN)
    }
}

fn check_status(value: u8) -> Result<(), DecodeError> {
    if value & !status::KNOWN != 0 {
        return Err(invalid("packet header", "status", value.into()));
    }

    // 2.2.3.1.2: IGNORE is set "in conjunction with EOM". Bit 0x04 is only
    // seen on non-final packets; on a final one it is taken as an error.
    let eom = value & status::EOM != 0;
    let ignore_without_eom = value & status::IGNORE != 0 && !eom;
    let event_with_eom = value & status::EVENT_NOTIFICATION != 0 && eom;
    if ignore_without_eom || event_with_eom {
        return Err(invalid("packet header", "status", value.into()));
    }
    Ok(())
}

fn check_length(length: u16) -> Result<(), DecodeError> {
    let length = usize::from(length);
    if length < HEADER_LEN {
        return Err(invalid("packet header", "length", length as u64));
    }
    if length > MAX_PACKET_LEN {
        return Err(DecodeError::TooLarge {
            structure: "packet",
            length,
            limit: MAX_PACKET_LEN,
        });
    }
    Ok(())
}

/// One whole packet: its decoded header and its raw bytes, header included,
/// so a relay can forward it byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    pub header: PacketHeader,
    /// The whole packet as received, header included.
    pub raw: Bytes,
}

impl Packet {
    /// The payload (the bytes after the header).
    pub fn payload(&self) -> Bytes {
        self.raw.slice(HEADER_LEN.min(self.raw.len())..)
    }
}

/// Payload bytes may be credentials or PHI, so only the header is shown.
impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("header", &self.header)
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

/// Splits a byte stream, fed in pieces of any size, into whole packets.
///
/// Buffers at most one packet plus whatever the caller feeds beyond it; the
/// caller bounds that by draining packets between feeds.
#[derive(Debug, Default)]
pub struct PacketReader {
    buf: BytesMut,
}

impl PacketReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole packet, `Ok(None)` when more bytes are needed. A
    /// header error is reported as soon as the 8 header bytes are present.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, DecodeError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = PacketHeader::decode(&self.buf)?;

        let length = usize::from(header.length);
        if self.buf.len() < length {
            return Ok(None);
        }
        let raw = self.buf.split_to(length).freeze();
        Ok(Some(Packet { header, raw }))
    }

    /// Bytes fed but not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The buffered bytes not yet returned, without consuming them (for a
    /// caller that detects a switch to bare TLS records).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Removes and returns the buffered bytes not yet returned as packets.
    pub fn take_pending(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

/// A whole message: the joined payloads of its packets.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub packet_type: PacketType,
    /// RESETCONNECTION / RESETCONNECTIONSKIPTRAN bits of the first packet.
    pub reset_flags: u8,
    /// SPID of the first packet.
    pub spid: u16,
    /// Number of packets the message arrived in.
    pub packet_count: usize,
    /// Payload length of the first packet, a hint of the sender's packet size.
    pub first_packet_len: usize,
    pub payload: Bytes,
}

/// Payloads may hold credentials or PHI; only sizes are shown.
impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("packet_type", &self.packet_type)
            .field("reset_flags", &self.reset_flags)
            .field("spid", &self.spid)
            .field("packet_count", &self.packet_count)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// What the assembler produced from a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// The packet ended a message.
    Message(Message),
    /// The packet had EOM + IGNORE: the message it ended is discarded.
    Discarded {
        packet_type: PacketType,
        packet_count: usize,
    },
}

/// Joins packets into messages (2.2.3.1.2: only EOM ends a message).
#[derive(Debug)]
pub struct MessageAssembler {
    max_message_len: usize,
    current: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    packet_type: PacketType,
    reset_flags: u8,
    spid: u16,
    packet_count: usize,
    first_packet_len: usize,
    payload: BytesMut,
}

impl Default for MessageAssembler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_LEN)
    }
}

impl MessageAssembler {
    /// An assembler refusing messages larger than `max_message_len` bytes.
    pub fn new(max_message_len: usize) -> Self {
        MessageAssembler {
            max_message_len,
            current: None,
        }
    }

    /// Whether a message has been started but not ended.
    pub fn in_message(&self) -> bool {
        self.current.is_some()
    }

    /// Adds one packet; returns the message it completes, if any.
    pub fn push(&mut self, packet: &Packet) -> Result<Option<Assembled>, DecodeError> {
        let header = packet.header;
        let payload = packet.raw.get(HEADER_LEN..).unwrap_or_default();
        let partial = self.current.get_or_insert_with(|| Partial {
            packet_type: header.packet_type,
            reset_flags: header.reset_flags(),
            spid: header.spid,
            packet_count: 0,
            first_packet_len: payload.len(),
            payload: BytesMut::new(),
        });

        // 2.2.3.1.1: every packet of a message carries the same type.
        if partial.packet_type != header.packet_type {
            self.current = None;
            return Err(invalid("message", "packet type", header.packet_type as u64));
        }
        let total = partial.payload.len() + payload.len();
        if total > self.max_message_len {
            self.current = None;
            return Err(DecodeError::TooLarge {
                structure: "message",
                length: total,
                limit: self.max_message_len,
            });
        }
        partial.payload.extend_from_slice(payload);
        partial.packet_count += 1;

        if !header.is_eom() {
            return Ok(None);
        }
        Ok(self.current.take().map(|p| p.finish(header.is_ignore())))
    }
}

impl Partial {
    fn finish(self, ignore: bool) -> Assembled {
        if ignore {
            return Assembled::Discarded {
                packet_type: self.packet_type,
                packet_count: self.packet_count,
            };
        }
        Assembled::Message(Message {
            packet_type: self.packet_type,
            reset_flags: self.reset_flags,
            spid: self.spid,
            packet_count: self.packet_count,
            first_packet_len: self.first_packet_len,
            payload: self.payload.freeze(),
        })
    }
}

/// Cuts `payload` into packets of at most `packet_size` bytes (header
/// included) and appends them to `out`, with SPID 0 as a client sends.
///
/// PacketID starts at 1 and wraps; `reset_flags` (RESETCONNECTION bits) go
/// only on the first packet, EOM only on the last. An empty payload gives one
/// header-only packet (an attention).
pub fn encode_message(
    packet_type: PacketType,
    reset_flags: u8,
    payload: &[u8],
    packet_size: usize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode_message_with_spid(packet_type, reset_flags, 0, payload, packet_size, out)
}

/// [`encode_message`] with a SPID, as a server sends.
pub fn encode_message_with_spid(
    packet_type: PacketType,
    reset_flags: u8,
    spid: u16,
    payload: &[u8],
    packet_size: usize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    check_packet_size(packet_size)?;
    let chunk_len = packet_size - HEADER_LEN;
    let chunk_count = payload.len().div_ceil(chunk_len).max(1);
    out.reserve(payload.len() + chunk_count * HEADER_LEN);

    for index in 0..chunk_count {
        let start = index * chunk_len;
        let chunk = &payload[start..payload.len().min(start + chunk_len)];
        let last = index + 1 == chunk_count;
        let mut status = if last { status::EOM } else { 0 };
        if index == 0 {
            status |= reset_flags & status::RESET_MASK;
        }
        let header = PacketHeader {
            packet_type,
            status,
            length: (HEADER_LEN + chunk.len()) as u16,
            spid,
            packet_id: ((index + 1) % 256) as u8,
            window: 0,
        };
        header.encode(out);
        out.extend_from_slice(chunk);
    }
    Ok(())
}

fn check_packet_size(packet_size: usize) -> Result<(), EncodeError> {
    if packet_size <= HEADER_LEN || packet_size > MAX_PACKET_LEN {
        return Err(EncodeError::TooLarge {
            structure: "packet",
            field: "packet size",
            length: packet_size,
            limit: MAX_PACKET_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRELOGIN_41: &[u8] = &[
        0x12, 0x01, 0x00, 0x2F, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1A, 0x00, 0x06, 0x01, 0x00,
        0x20, 0x00, 0x01, 0x02, 0x00, 0x21, 0x00, 0x01, 0x03, 0x00, 0x22, 0x00, 0x04, 0x04, 0x00,
        0x26, 0x00, 0x01, 0xFF, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0xB8, 0x0D, 0x00,
        0x00, 0x01,
    ];

    #[test]
    fn header_round_trip() {
        let header = PacketHeader::decode(PRELOGIN_41).unwrap();
        assert_eq!(header.packet_type, PacketType::PreLogin);
        assert_eq!(header.length, 0x2F);
        assert_eq!(header.packet_id, 1);
        assert!(header.is_eom());
        let mut out = BytesMut::new();
        header.encode(&mut out);
        assert_eq!(&out[..], &PRELOGIN_41[..HEADER_LEN]);
    }

    #[test]
    fn header_rejects_bad_values() {
        let mut bad_type = PRELOGIN_41[..8].to_vec();
        bad_type[0] = 0x05;
        assert!(PacketHeader::decode(&bad_type).is_err());

        let mut short = PRELOGIN_41[..8].to_vec();
        short[2..4].copy_from_slice(&[0x00, 0x07]);
        assert!(PacketHeader::decode(&short).is_err());

        let mut long = PRELOGIN_41[..8].to_vec();
        long[2..4].copy_from_slice(&[0x80, 0x00]);
        assert!(matches!(
            PacketHeader::decode(&long),
            Err(DecodeError::TooLarge { length: 32768, .. })
        ));

        for bad_status in [0x20, 0x02, 0x05] {
            let mut s = PRELOGIN_41[..8].to_vec();
            s[1] = bad_status;
            assert!(PacketHeader::decode(&s).is_err(), "{bad_status:#x}");
        }
    }

    #[test]
    fn reader_splits_a_stream_fed_byte_by_byte() {
        let stream = [PRELOGIN_41, PRELOGIN_41].concat();
        let mut reader = PacketReader::new();
        let mut packets = Vec::new();
        for byte in &stream {
            reader.feed(std::slice::from_ref(byte));
            while let Some(p) = reader.next_packet().unwrap() {
                packets.push(p);
            }
        }
        assert_eq!(packets.len(), 2);
        assert_eq!(&packets[1].raw[..], PRELOGIN_41);
        assert_eq!(packets[0].payload().len(), PRELOGIN_41.len() - 8);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn encode_splits_and_assembler_joins() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut out = BytesMut::new();
        encode_message(
            PacketType::Rpc,
            status::RESETCONNECTION,
            &payload,
            512,
            &mut out,
        )
        .unwrap();

        let mut reader = PacketReader::new();
        reader.feed(&out);
        let mut assembler = MessageAssembler::default();
        let first = reader.next_packet().unwrap().unwrap();
        assert_eq!(first.header.status, status::RESETCONNECTION);
        assert_eq!(first.header.length, 512);
        assert!(assembler.push(&first).unwrap().is_none());
        let second = reader.next_packet().unwrap().unwrap();
        assert_eq!(second.header.status, status::EOM);
        assert_eq!(second.header.packet_id, 2);
        let Some(Assembled::Message(msg)) = assembler.push(&second).unwrap() else {
            panic!("message expected");
        };
        assert_eq!(msg.reset_flags, status::RESETCONNECTION);
        assert_eq!(msg.packet_count, 2);
        assert_eq!(&msg.payload[..], &payload[..]);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn empty_payload_is_one_header_only_packet() {
        let mut out = BytesMut::new();
        encode_message(PacketType::Attention, 0, &[], 4096, &mut out).unwrap();
        assert_eq!(&out[..], &[0x06, 0x01, 0x00, 0x08, 0x00, 0x00, 0x01, 0x00]);
    }

    #[test]
    fn packet_id_wraps() {
        let payload = vec![0u8; 300];
        let mut out = BytesMut::new();
        encode_message(PacketType::SqlBatch, 0, &payload, 9, &mut out).unwrap();
        assert_eq!(out.len(), 300 * 9);
        assert_eq!(out[255 * 9 + 6], 0);
        assert_eq!(out[256 * 9 + 6], 1);
        assert!(encode_message(PacketType::SqlBatch, 0, &payload, 8, &mut out).is_err());
        assert!(encode_message(PacketType::SqlBatch, 0, &payload, 32768, &mut out).is_err());
    }

    #[test]
    fn ignore_discards_and_type_change_fails() {
        let mut assembler = MessageAssembler::default();
        let first = packet(PacketType::SqlBatch, 0, b"abc");
        let last = packet(PacketType::SqlBatch, status::EOM | status::IGNORE, b"d");
        assert!(assembler.push(&first).unwrap().is_none());
        assert_eq!(
            assembler.push(&last).unwrap(),
            Some(Assembled::Discarded {
                packet_type: PacketType::SqlBatch,
                packet_count: 2
            })
        );

        assert!(assembler.push(&first).unwrap().is_none());
        let other = packet(PacketType::Rpc, status::EOM, b"d");
        assert!(assembler.push(&other).is_err());
        assert!(!assembler.in_message());
    }

    #[test]
    fn message_cap_is_enforced() {
        let mut assembler = MessageAssembler::new(4);
        assert!(assembler
            .push(&packet(PacketType::SqlBatch, 0, b"abc"))
            .is_ok());
        let err = assembler.push(&packet(PacketType::SqlBatch, status::EOM, b"de"));
        assert!(matches!(err, Err(DecodeError::TooLarge { limit: 4, .. })));
    }

    fn packet(packet_type: PacketType, status: u8, payload: &[u8]) -> Packet {
        let header = PacketHeader {
            packet_type,
            status,
            length: (HEADER_LEN + payload.len()) as u16,
            spid: 0,
            packet_id: 1,
            window: 0,
        };
        let mut raw = BytesMut::new();
        header.encode(&mut raw);
        raw.extend_from_slice(payload);
        Packet {
            header,
            raw: raw.freeze(),
        }
    }
}
