//! `tdsguard dump FILE [--from client|server] [--roundtrip]`: decodes a raw
//! one-direction TDS byte stream (the reassembled TCP payload of one side of
//! a connection) and prints one line per message and per token.
//!
//! TLS records are recognised wherever TDS puts them: inside PRELOGIN (0x12)
//! packets during a 7.x handshake, bare between packets after a login-only
//! handshake (then plaintext TDS resumes), or from the first byte on a
//! TDS 8.0 strict stream (SNI and ALPN of the ClientHello are shown). TLS
//! payloads are not decrypted; a recognised record counts as understood.
//!
//! With `--roundtrip` each decoded message (and each server token) is
//! re-encoded and compared with the input; the first differing byte is
//! reported by its offset in the file. The LOGIN7 password, SSPI blobs and
//! federated authentication tokens are never printed.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::tds::login7::{is_pre_tds7_login, Login7};
use crate::tds::packet::{Assembled, Message, MessageAssembler, PacketHeader, PacketType};
use crate::tds::packet::{HEADER_LEN, MAX_PACKET_LEN};
use crate::tds::prelogin::{option_name, PreLogin};
use crate::tds::rpc::RpcRequest;
use crate::tds::sql_batch::{check_attention, SqlBatch};
use crate::tds::stream::{Item, TokenReader};
use crate::tds::tls_record::{self, ContentType, RecordHeader, RecordReader};
use crate::tds::token::{self, TdsVersion, Token, TokenContext};
use crate::tds::DecodeError;

/// Longest SQL text or value shown on one line, in characters.
const MAX_SHOWN_CHARS: usize = 120;

/// Which side of the connection a stream came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Client,
    Server,
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Direction::Client),
            "server" => Ok(Direction::Server),
            other => Err(format!("--from expects client or server, not {other:?}")),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Client => "client",
            Direction::Server => "server",
        })
    }
}

/// The arguments of `tdsguard dump`, without a parser framework.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpArgs {
    pub path: PathBuf,
    pub from: Option<Direction>,
    pub roundtrip: bool,
}

impl DumpArgs {
    /// Parses the arguments after `dump`.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, String> {
        let mut path = None;
        let mut from = None;
        let mut roundtrip = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--roundtrip" => roundtrip = true,
                "--from" => from = Some(args.next().ok_or("--from needs a value")?.parse()?),
                flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
                _ if path.is_some() => return Err("only one FILE is accepted".into()),
                _ => path = Some(PathBuf::from(arg)),
            }
        }
        let path = path.ok_or("dump needs a FILE")?;
        Ok(DumpArgs {
            path,
            from,
            roundtrip,
        })
    }
}

/// Why the dump could not run at all. Decode failures and round-trip
/// mismatches are not errors here: they are reported in [`DumpSummary`].
#[derive(Debug, Error)]
pub enum DumpError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the dump")]
    Write(#[from] io::Error),
}

/// What a dump found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// The direction given or guessed (`None` for an empty stream).
    pub direction: Option<Direction>,
    pub total_bytes: u64,
    /// Bytes decoded before the first failure (all of them on success).
    pub understood_bytes: u64,
    pub packets: u64,
    pub messages: u64,
    pub tokens: u64,
    pub tls_records: u64,
    /// Messages and tokens re-encoded and compared.
    pub roundtrip_checked: u64,
    /// The first failure, with the file offset where it was found.
    pub failure: Option<Failure>,
    /// The TDS version tokens were decoded with when neither LOGIN7 nor
    /// LOGINACK was in the stream (a capture started mid-session).
    pub assumed_tds_version: Option<u32>,
    /// The assumptions [`dump_bytes`] retried with, when the defaults failed.
    pub assumptions: Option<Assumptions>,
}

/// Where and why decoding (or reproducing) stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub offset: u64,
    pub kind: FailureKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The bytes could not be decoded.
    Decode(DecodeError),
    /// Re-encoding gave different bytes, first at `offset`.
    Mismatch { what: &'static str },
    /// Re-encoding failed.
    Encode(String),
    /// The stream ended inside a packet, message, record or token.
    Incomplete { what: &'static str },
    /// A message tdsguard refuses by design.
    Refused { what: &'static str },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FailureKind::Decode(e) => write!(f, "decode error at offset {}: {e}", self.offset),
            FailureKind::Mismatch { what } => {
                write!(f, "{what} re-encodes differently at offset {}", self.offset)
            }
            FailureKind::Encode(e) => write!(f, "cannot re-encode at offset {}: {e}", self.offset),
            FailureKind::Incomplete { what } => {
                write!(f, "stream ends inside a {what} at offset {}", self.offset)
            }
            FailureKind::Refused { what } => write!(f, "{what} at offset {}", self.offset),
        }
    }
}

impl DumpSummary {
    /// Whether every byte was understood (and, with `--roundtrip`,
    /// reproduced): the condition for exit status 0.
    pub fn success(&self) -> bool {
        self.failure.is_none() && self.understood_bytes == self.total_bytes
    }

    /// The process exit status `tdsguard dump` should end with.
    pub fn exit_code(&self) -> i32 {
        if self.success() {
            0
        } else {
            1
        }
    }
}

/// Runs `tdsguard dump` on a file, writing the listing to `out`.
pub fn run(
    path: &Path,
    from: Option<Direction>,
    roundtrip: bool,
    out: &mut impl Write,
) -> Result<DumpSummary, DumpError> {
    let bytes = std::fs::read(path).map_err(|source| DumpError::Read {
        path: path.to_owned(),
        source,
    })?;
    dump_bytes(&bytes, from, roundtrip, out)
}

/// Dumps a whole stream held in memory.
///
/// A stream without LOGIN7 or LOGINACK does not say its TDS version, and a
/// bare token stream does not say whether column encryption was
/// acknowledged. If the stream fails under the defaults (TDS 7.4, no column
/// encryption), it is tried again as TDS 7.1 (4-byte DONE row counts, 2-byte
/// user types) and with column encryption; the attempt that gets furthest is
/// printed.
pub fn dump_bytes(
    bytes: &[u8],
    from: Option<Direction>,
    roundtrip: bool,
    out: &mut impl Write,
) -> Result<DumpSummary, DumpError> {
    if let Some(summary) = dump_ntlm(bytes, out)? {
        return Ok(summary);
    }
    let direction = from.or_else(|| guess_direction(bytes));
    let (mut best, mut best_text) = dump_with(bytes, direction, roundtrip, None)?;
    let retries = [
        Assumptions::tds_version(TdsVersion::V7_1),
        Assumptions::column_encryption(),
    ];
    for assumption in retries {
        if best.success() || best.assumed_tds_version.is_none() {
            break;
        }
        let (summary, text) = dump_with(bytes, direction, roundtrip, Some(assumption))?;
        if summary.success() || summary.understood_bytes > best.understood_bytes {
            (best, best_text) = (summary, text);
        }
    }
    out.write_all(&best_text)?;
    Ok(best)
}

/// The signature every NTLM message starts with (MS-NLMP 2.2.1).
const NTLM_SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// Recognises a bare NTLM message: the payload an SSPI token (0xED) or an
/// SSPI message (0x11) carries, saved on its own. TDS treats it as opaque,
/// so nothing is re-encoded; the message is understood when its type is one
/// of the three NTLM defines and every payload field it declares lies inside
/// it. The fields (names, challenge, target information) are not printed.
fn dump_ntlm(bytes: &[u8], out: &mut impl Write) -> Result<Option<DumpSummary>, DumpError> {
    if !bytes.starts_with(NTLM_SIGNATURE) {
        return Ok(None);
    }
    let mut summary = DumpSummary {
        total_bytes: bytes.len() as u64,
        ..DumpSummary::default()
    };
    match ntlm_message_kind(bytes) {
        Ok(kind) => {
            writeln!(
                out,
                "@0 SSPI payload, not a TDS stream: NTLM {kind} message, {} bytes (contents not shown)",
                bytes.len()
            )?;
            summary.understood_bytes = summary.total_bytes;
        }
        Err(what) => {
            writeln!(out, "@0 NTLM message: {what}")?;
            summary.failure = Some(Failure {
                offset: 0,
                kind: FailureKind::Incomplete { what },
            });
        }
    }
    Ok(Some(summary))
}

/// The NTLM message type's name after checking the payload field
/// descriptors (length u16, maximum length u16, offset u32; MS-NLMP 2.2.2.10)
/// at the positions MS-NLMP 2.2.1.1–2.2.1.3 give for that type.
fn ntlm_message_kind(bytes: &[u8]) -> Result<&'static str, &'static str> {
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (kind, fields): (&'static str, &[usize]) = match u32_at(8) {
        Some(1) => ("NEGOTIATE", &[16, 24]),
        Some(2) => ("CHALLENGE", &[12, 40]),
        Some(3) => ("AUTHENTICATE", &[12, 20, 28, 36, 44, 52]),
        Some(_) => return Err("unknown NTLM message type"),
        None => return Err("NTLM message header"),
    };
    for &at in fields {
        let len = bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or("NTLM message header")?;
        let offset = u32_at(at + 4).ok_or("NTLM message header")? as usize;
        if len > 0 && offset.checked_add(len).is_none_or(|end| end > bytes.len()) {
            return Err("NTLM payload field");
        }
    }
    Ok(kind)
}

/// What a dump assumes about a stream that does not say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assumptions {
    pub tds_version: TdsVersion,
    /// COLUMNENCRYPTION acknowledged: COLMETADATA carries a CekTable.
    pub column_encryption: bool,
}

impl Assumptions {
    fn tds_version(tds_version: TdsVersion) -> Self {
        Assumptions {
            tds_version,
            column_encryption: false,
        }
    }

    fn column_encryption() -> Self {
        Assumptions {
            tds_version: TdsVersion::default(),
            column_encryption: true,
        }
    }
}

fn dump_with(
    bytes: &[u8],
    direction: Option<Direction>,
    roundtrip: bool,
    assumptions: Option<Assumptions>,
) -> Result<(DumpSummary, Vec<u8>), DumpError> {
    let mut text = Vec::new();
    let mut dumper = Dumper::new(direction, roundtrip, &mut text);
    if let Some(assumptions) = assumptions {
        dumper.assume(assumptions);
    }
    dumper.feed(bytes)?;
    let mut summary = dumper.finish()?;
    summary.assumptions = assumptions;
    Ok((summary, text))
}

/// Guesses the sender from the first bytes: a server's first message is a
/// tabular result (0x04) or, on a strict stream, a ServerHello.
pub fn guess_direction(bytes: &[u8]) -> Option<Direction> {
    let first = *bytes.first()?;
    if first == ContentType::Handshake as u8 {
        let hello = bytes.get(tls_record::RECORD_HEADER_LEN).copied();
        return Some(match hello {
            Some(0x02) => Direction::Server,
            _ => Direction::Client,
        });
    }
    match first {
        0x04 => Some(Direction::Server),
        _ => Some(Direction::Client),
    }
}

/// Where the bytes of a stream are going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing seen yet.
    Start,
    /// TDS packets, possibly with bare TLS records between them.
    Tds,
    /// TDS 8.0 strict: TLS records from the first byte.
    Strict,
    /// A bare server token stream without packet headers (as test suites
    /// record them).
    Tokens,
}

/// A run of payload bytes and the file offset it came from.
#[derive(Debug, Clone, Copy)]
struct Segment {
    file_offset: u64,
    len: usize,
}

/// Maps offsets in a logical stream (a message payload or the server token
/// stream) back to file offsets.
#[derive(Debug, Default)]
struct OffsetMap {
    segments: VecDeque<Segment>,
    /// Logical offset of the first segment.
    base: u64,
}

impl OffsetMap {
    fn push(&mut self, file_offset: u64, len: usize) {
        self.segments.push_back(Segment { file_offset, len });
    }

    /// The file offset of logical offset `at`.
    fn file_offset(&self, at: u64) -> u64 {
        let mut start = self.base;
        let mut last = 0;
        for s in &self.segments {
            let end = start + s.len as u64;
            if at < end {
                return s.file_offset + (at - start);
            }
            start = end;
            last = s.file_offset + s.len as u64;
        }
        last
    }

    /// Forgets segments wholly before logical offset `at`.
    fn forget_before(&mut self, at: u64) {
        while let Some(s) = self.segments.front() {
            if self.base + s.len as u64 > at {
                return;
            }
            self.base += s.len as u64;
            self.segments.pop_front();
        }
    }
}

/// The streaming decoder behind `dump`: bytes go in with [`Dumper::feed`] in
/// pieces of any size; the listing is the same however the input is split.
pub struct Dumper<'w, W: Write> {
    out: &'w mut W,
    direction: Option<Direction>,
    roundtrip: bool,
    mode: Mode,
    buf: BytesMut,
    /// File offset of `buf[0]`.
    offset: u64,
    assembler: MessageAssembler,
    message_map: OffsetMap,
    message_start: u64,
    /// TLS records carried inside PRELOGIN packets.
    wrapped_tls: RecordReader,
    /// Whether a TLS handshake inside PRELOGIN packets has begun.
    wrapped_started: bool,
    wrapped_map: OffsetMap,
    wrapped_consumed: u64,
    /// Handshake records of a not yet parsed ClientHello.
    hello: Option<Vec<u8>>,
    tokens: TokenReader,
    token_map: OffsetMap,
    token_consumed: u64,
    /// Whether a message was seen (a server's first may be PRELOGIN).
    seen_message: bool,
    /// Whether LOGIN7 or LOGINACK told the TDS version.
    version_seen: bool,
    summary: DumpSummary,
}

impl<'w, W: Write> Dumper<'w, W> {
    /// A dumper for a stream from `direction` (guessed from the first
    /// message when `None`).
    pub fn new(direction: Option<Direction>, roundtrip: bool, out: &'w mut W) -> Self {
        Dumper {
            out,
            direction,
            roundtrip,
            mode: Mode::Start,
            buf: BytesMut::new(),
            offset: 0,
            assembler: MessageAssembler::default(),
            message_map: OffsetMap::default(),
            message_start: 0,
            wrapped_tls: RecordReader::new(),
            wrapped_started: false,
            wrapped_map: OffsetMap::default(),
            wrapped_consumed: 0,
            hello: Some(Vec::new()),
            tokens: TokenReader::new(TokenContext::default()),
            token_map: OffsetMap::default(),
            token_consumed: 0,
            seen_message: false,
            version_seen: false,
            summary: DumpSummary {
                direction,
                ..DumpSummary::default()
            },
        }
    }

    /// Decodes tokens under `assumptions` until LOGIN7, LOGINACK or
    /// FEATUREEXTACK say otherwise (for streams captured mid-session).
    pub fn assume(&mut self, assumptions: Assumptions) {
        let ctx = self.tokens.context_mut();
        ctx.tds_version = assumptions.tds_version;
        ctx.column_encryption = assumptions.column_encryption;
    }

    /// The summary so far.
    pub fn summary(&self) -> &DumpSummary {
        &self.summary
    }

    /// Decodes as much of the stream as the bytes fed so far allow.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), DumpError> {
        self.summary.total_bytes += bytes.len() as u64;
        if self.summary.failure.is_some() {
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        while self.summary.failure.is_none() && self.step()? {}
        Ok(())
    }

    /// Ends the stream: reports anything left incomplete and returns the
    /// summary.
    pub fn finish(mut self) -> Result<DumpSummary, DumpError> {
        if self.summary.failure.is_none() {
            self.check_complete();
        }
        if !self.version_seen {
            self.summary.assumed_tds_version = Some(self.tokens.context().tds_version.0);
        }
        match &self.summary.failure {
            Some(failure) => writeln!(self.out, "FAILED: {failure}")?,
            None => writeln!(
                self.out,
                "ok: {} bytes, {} messages, {} tokens, {} TLS records{}",
                self.summary.total_bytes,
                self.summary.messages,
                self.summary.tokens,
                self.summary.tls_records,
                match self.roundtrip {
                    true => ", all reproduced",
                    false => "",
                }
            )?,
        }
        Ok(self.summary)
    }

    fn check_complete(&mut self) {
        let what = if !self.buf.is_empty() {
            Some("packet or TLS record")
        } else if self.assembler.in_message() {
            Some("message")
        } else if self.wrapped_tls.buffered() > 0 {
            Some("TLS record inside PRELOGIN")
        } else if !self.tokens.is_idle() {
            Some("token")
        } else {
            None
        };
        if let Some(what) = what {
            let offset = self.offset;
            self.fail(offset, FailureKind::Incomplete { what });
        }
    }

    fn fail(&mut self, offset: u64, kind: FailureKind) {
        if self.summary.failure.is_some() {
            return;
        }
        self.summary.understood_bytes = offset.min(self.summary.understood_bytes);
        self.summary.failure = Some(Failure { offset, kind });
    }

    /// One unit of work; `Ok(false)` when more bytes are needed.
    fn step(&mut self) -> Result<bool, DumpError> {
        let Some(&first) = self.buf.first() else {
            return Ok(false);
        };
        if self.mode == Mode::Start {
            if self.buf.len() < 3 {
                return Ok(false);
            }
            self.mode = start_mode(&self.buf);
            match self.mode {
                Mode::Strict => writeln!(self.out, "@0 TLS from the first byte (TDS 8.0 strict)")?,
                Mode::Tokens => {
                    writeln!(self.out, "@0 bare token stream (no packet headers)")?;
                    self.direction = Some(Direction::Server);
                    self.summary.direction = self.direction;
                }
                _ => {}
            }
        }
        if self.mode == Mode::Tokens {
            let at = self.offset;
            let len = self.buf.len();
            let raw = self.consume(len);
            self.token_map.push(at, len);
            self.feed_tokens(&raw)?;
            return Ok(false);
        }
        let is_record = self.mode == Mode::Strict || (0x14..=0x17).contains(&first);
        match is_record {
            true => self.step_record(),
            false => self.step_packet(),
        }
    }

    /// Consumes `len` bytes of `buf` as understood.
    fn consume(&mut self, len: usize) -> Bytes {
        let raw = self.buf.split_to(len).freeze();
        self.offset += len as u64;
        self.summary.understood_bytes = self.offset;
        raw
    }

    fn step_record(&mut self) -> Result<bool, DumpError> {
        if self.buf.len() < tls_record::RECORD_HEADER_LEN {
            return Ok(false);
        }
        let header = match RecordHeader::decode(&self.buf) {
            Ok(Some(h)) => h,
            Ok(None) => {
                let err = DecodeError::Malformed {
                    structure: "TLS record",
                    reason: "not a TLS record header",
                };
                self.fail(self.offset, FailureKind::Decode(err));
                return Ok(false);
            }
            Err(e) => {
                self.fail(self.offset, FailureKind::Decode(e));
                return Ok(false);
            }
        };
        if self.buf.len() < header.total_len() {
            return Ok(false);
        }
        let at = self.offset;
        let raw = self.consume(header.total_len());
        self.show_record(at, "bare", &header, &raw)?;
        Ok(true)
    }

    fn show_record(
        &mut self,
        at: u64,
        carrier: &str,
        header: &RecordHeader,
        raw: &[u8],
    ) -> Result<(), DumpError> {
        self.summary.tls_records += 1;
        writeln!(
            self.out,
            "@{at} TLS {carrier} record {} version={:#06x} len={}",
            header.content_type.name(),
            header.version,
            header.length
        )?;
        self.note_hello(header, raw)
    }

    /// Collects the first handshake records until a ClientHello parses, then
    /// prints its SNI and ALPN.
    fn note_hello(&mut self, header: &RecordHeader, raw: &[u8]) -> Result<(), DumpError> {
        let Some(collected) = self.hello.as_mut() else {
            return Ok(());
        };
        if header.content_type != ContentType::Handshake {
            self.hello = None;
            return Ok(());
        }
        collected.extend_from_slice(raw);
        match tls_record::client_hello(collected) {
            Ok(None) => {}
            Ok(Some(info)) => {
                let alpn: Vec<String> = info
                    .alpn
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                writeln!(
                    self.out,
                    "    ClientHello sni={} alpn={alpn:?}{}",
                    info.server_name.as_deref().unwrap_or("-"),
                    match info.offers_tds8() {
                        true => " (TDS 8.0)",
                        false => "",
                    }
                )?;
                self.hello = None;
            }
            // Not a ClientHello (a server's flight): nothing more to show.
            Err(_) => self.hello = None,
        }
        Ok(())
    }

    fn step_packet(&mut self) -> Result<bool, DumpError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(false);
        }
        let header = match PacketHeader::decode(&self.buf) {
            Ok(h) => h,
            Err(e) => {
                self.fail(self.offset, FailureKind::Decode(e));
                return Ok(false);
            }
        };
        let len = usize::from(header.length).min(MAX_PACKET_LEN);
        if self.buf.len() < len {
            return Ok(false);
        }
        let at = self.offset;
        let raw = self.consume(len);
        self.summary.packets += 1;
        if self.roundtrip {
            let mut encoded = BytesMut::new();
            header.encode(&mut encoded);
            if let Some(diff) =
                first_difference(raw.get(..HEADER_LEN).unwrap_or_default(), &encoded)
            {
                let what = "packet header";
                self.fail(at + diff as u64, FailureKind::Mismatch { what });
            }
        }
        self.on_packet(at, header, raw)?;
        Ok(true)
    }

    fn on_packet(&mut self, at: u64, header: PacketHeader, raw: Bytes) -> Result<(), DumpError> {
        if !self.assembler.in_message() {
            self.message_start = at;
            self.message_map = OffsetMap::default();
        }
        self.message_map
            .push(at + HEADER_LEN as u64, raw.len() - HEADER_LEN);
        let packet = crate::tds::packet::Packet { header, raw };
        match self.assembler.push(&packet) {
            Ok(None) => Ok(()),
            Ok(Some(Assembled::Message(message))) => self.on_message(message),
            Ok(Some(Assembled::Discarded {
                packet_type,
                packet_count,
            })) => {
                self.summary.messages += 1;
                writeln!(
                    self.out,
                    "@{} {} discarded by IGNORE after {packet_count} packets",
                    self.message_start,
                    packet_type.name()
                )?;
                Ok(())
            }
            Err(e) => {
                self.fail(at, FailureKind::Decode(e));
                Ok(())
            }
        }
    }

    fn on_message(&mut self, message: Message) -> Result<(), DumpError> {
        self.summary.messages += 1;
        let direction = *self.direction.get_or_insert(match message.packet_type {
            PacketType::TabularResult => Direction::Server,
            _ => Direction::Client,
        });
        self.summary.direction = Some(direction);
        writeln!(
            self.out,
            "@{} message {} len={} packets={}{}",
            self.message_start,
            message.packet_type.name(),
            message.payload.len(),
            message.packet_count,
            match message.reset_flags {
                0 => String::new(),
                f => format!(" reset={f:#04x}"),
            }
        )?;
        let first = !self.seen_message;
        self.seen_message = true;
        self.decode_message(&message, first)
    }

    fn decode_message(&mut self, message: &Message, first: bool) -> Result<(), DumpError> {
        let payload = &message.payload;
        match message.packet_type {
            // Once the handshake started, a record may continue across
            // PRELOGIN messages, so later ones need not start with a header.
            PacketType::PreLogin if self.wrapped_started || starts_like_tls(payload) => {
                self.wrapped_records(payload)
            }
            PacketType::PreLogin => self.prelogin(payload),
            PacketType::TabularResult if first && is_prelogin_payload(payload) => {
                self.prelogin(payload)
            }
            PacketType::TabularResult => self.token_stream(payload),
            PacketType::Login7 => self.login7(payload),
            PacketType::SqlBatch => self.sql_batch(payload),
            PacketType::Rpc => self.rpc(payload),
            PacketType::Attention => self.attention(message),
            PacketType::BulkLoad => self.bulk_load(payload),
            PacketType::FedAuthToken | PacketType::Sspi | PacketType::TransactionManager => {
                writeln!(self.out, "    opaque payload ({} bytes)", payload.len())?;
                Ok(())
            }
            t if is_pre_tds7_login(t) => {
                let offset = self.message_start;
                let what = "pre-TDS7 login (refused)";
                self.fail(offset, FailureKind::Refused { what });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Records a decode failure inside the current message.
    fn message_error(&mut self, e: DecodeError) {
        let offset = self.message_start;
        self.fail(offset, FailureKind::Decode(e));
    }

    /// Compares a re-encoding with the message payload.
    fn check_payload(&mut self, what: &'static str, original: &[u8], encoded: &[u8]) {
        if !self.roundtrip {
            return;
        }
        self.summary.roundtrip_checked += 1;
        if let Some(at) = first_difference(original, encoded) {
            let offset = self.message_map.file_offset(at as u64);
            self.fail(offset, FailureKind::Mismatch { what });
        }
    }

    fn encode_failed(&mut self, e: impl fmt::Display) {
        let offset = self.message_start;
        self.fail(offset, FailureKind::Encode(e.to_string()));
    }

    fn prelogin(&mut self, payload: &[u8]) -> Result<(), DumpError> {
        let prelogin = match PreLogin::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                self.message_error(e);
                return Ok(());
            }
        };
        let mut line = String::from("    PRELOGIN");
        for option in prelogin.options() {
            line.push_str(&format!(" {}", option_name(option.token)));
            if option_name(option.token) == "unknown" {
                line.push_str(&format!("({:#04x})", option.token));
            }
            line.push_str(&format!("[{}]", option.data.len()));
        }
        describe_prelogin(&prelogin, &mut line);
        writeln!(self.out, "{line}")?;

        let mut out = BytesMut::new();
        match prelogin.encode(&mut out) {
            Ok(()) => self.check_payload("PRELOGIN", payload, &out),
            Err(e) => self.encode_failed(e),
        }
        Ok(())
    }

    /// TLS records inside PRELOGIN packets (TDS 7.x handshake).
    fn wrapped_records(&mut self, payload: &[u8]) -> Result<(), DumpError> {
        self.wrapped_started = true;
        let segments: Vec<Segment> = self.message_map.segments.iter().copied().collect();
        for s in segments {
            self.wrapped_map.push(s.file_offset, s.len);
        }
        self.wrapped_tls.feed(payload);
        loop {
            let record = match self.wrapped_tls.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let offset = self.wrapped_map.file_offset(self.wrapped_consumed);
                    self.fail(offset, FailureKind::Decode(e));
                    return Ok(());
                }
            };
            let at = self.wrapped_map.file_offset(self.wrapped_consumed);
            self.wrapped_consumed += record.raw.len() as u64;
            self.wrapped_map.forget_before(self.wrapped_consumed);
            self.show_record(at, "in PRELOGIN", &record.header, &record.raw)?;
        }
    }

    fn login7(&mut self, payload: &[u8]) -> Result<(), DumpError> {
        let login = match Login7::decode(payload) {
            Ok(l) => l,
            Err(e) => {
                self.message_error(e);
                return Ok(());
            }
        };
        let features: Vec<&str> = login
            .features
            .iter()
            .flatten()
            .map(|f| f.kind().name())
            .collect();
        writeln!(
            self.out,
            "    LOGIN7 tds={} packet_size={} host={:?} user={:?} app={:?} server={:?} \
             library={:?} language={:?} database={:?} sspi={} bytes features={features:?}",
            login.version_name(),
            login.packet_size,
            login.hostname,
            login.username,
            login.app_name,
            login.server_name,
            login.library_name,
            login.language,
            login.database,
            login.sspi.len(),
        )?;
        self.tokens.context_mut().tds_version = TdsVersion(login.tds_version);
        self.version_seen = true;
        let mut out = BytesMut::new();
        match login.encode(&mut out) {
            Ok(()) => self.check_payload("LOGIN7", payload, &out),
            Err(e) => self.encode_failed(e),
        }
        Ok(())
    }

    fn sql_batch(&mut self, payload: &[u8]) -> Result<(), DumpError> {
        let batch = match SqlBatch::decode(payload) {
            Ok(b) => b,
            Err(e) => {
                self.message_error(e);
                return Ok(());
            }
        };
        let headers: Vec<String> = batch
            .all_headers
            .iter()
            .flat_map(|h| &h.headers)
            .map(|h| format!("{h:?}"))
            .collect();
        writeln!(
            self.out,
            "    SQLBatch headers={headers:?} text={:?}",
            shorten(&batch.text)
        )?;
        let mut out = BytesMut::new();
        match batch.encode(&mut out) {
            Ok(()) => self.check_payload("SQLBatch", payload, &out),
            Err(e) => self.encode_failed(e),
        }
        Ok(())
    }

    fn rpc(&mut self, payload: &[u8]) -> Result<(), DumpError> {
        let request = match RpcRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                self.message_error(e);
                return Ok(());
            }
        };
        for call in &request.calls {
            writeln!(
                self.out,
                "    RPC {:?} flags={:#06x}",
                call.proc_name, call.option_flags
            )?;
            for param in &call.params {
                let value = match param.value() {
                    Ok(v) => format_sql_value(&v),
                    Err(e) => format!("<{e}>"),
                };
                writeln!(
                    self.out,
                    "      param {:?} type={:#04x} status={:#04x} value={value}",
                    param.name,
                    param.type_info.type_byte(),
                    param.status
                )?;
            }
        }
        match request.to_bytes() {
            Ok(out) => self.check_payload("RPC", payload, &out),
            Err(e) => self.encode_failed(e),
        }
        Ok(())
    }

    fn attention(&mut self, message: &Message) -> Result<(), DumpError> {
        if let Err(e) = check_attention(message) {
            self.message_error(e);
            return Ok(());
        }
        writeln!(self.out, "    ATTENTION")?;
        Ok(())
    }

    /// Bulk load rows are a token stream of their own (COLMETADATA, ROW...,
    /// DONE), decoded against a fresh context of the login's version.
    fn bulk_load(&mut self, payload: &[u8]) -> Result<(), DumpError> {
        let mut ctx = TokenContext {
            tds_version: self.tokens.context().tds_version,
            ..TokenContext::default()
        };
        let tokens = match token::decode_all(payload, &mut ctx) {
            Ok(t) => t,
            Err(e) => {
                self.message_error(e);
                return Ok(());
            }
        };
        let names: Vec<&str> = tokens.iter().map(Token::name).collect();
        writeln!(self.out, "    BULKLOAD tokens={names:?}")?;
        let mut encode_ctx = TokenContext {
            tds_version: ctx.tds_version,
            ..TokenContext::default()
        };
        match token::encode_all(&tokens, &mut encode_ctx) {
            Ok(out) => self.check_payload("bulk load", payload, &out),
            Err(e) => self.encode_failed(e),
        }
        Ok(())
    }

    /// Server tokens, through the streaming reader so its context (TDS
    /// version, features, current columns) carries across messages.
    fn token_stream(&mut self, payload: &[u8]) -> Result<(), DumpError> {
        let segments: Vec<Segment> = self.message_map.segments.iter().copied().collect();
        for s in segments {
            self.token_map.push(s.file_offset, s.len);
        }
        self.feed_tokens(payload)
    }

    fn feed_tokens(&mut self, payload: &[u8]) -> Result<(), DumpError> {
        self.tokens.handle_bytes(payload);
        loop {
            let at = self.token_map.file_offset(self.token_consumed);
            match self.tokens.poll_item() {
                Ok(Some(item)) => self.on_item(at, item)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.fail(at, FailureKind::Decode(e));
                    return Ok(());
                }
            }
        }
    }

    fn on_item(&mut self, at: u64, item: Item) -> Result<(), DumpError> {
        let Some(raw) = item.raw().cloned() else {
            return Ok(());
        };
        self.token_consumed += raw.len() as u64;
        self.token_map.forget_before(self.token_consumed);
        let Some(token) = item.token() else {
            writeln!(self.out, "@{at}   row piece len={}", raw.len())?;
            return Ok(());
        };
        self.summary.tokens += 1;
        if matches!(token, Token::LoginAck(_)) {
            self.version_seen = true;
        }
        let detail = describe_token(token, self.tokens.context());
        writeln!(
            self.out,
            "@{at}   {} len={}{detail}",
            token.name(),
            raw.len()
        )?;
        if self.roundtrip {
            self.check_token(at, token, &raw);
        }
        Ok(())
    }

    fn check_token(&mut self, at: u64, token: &Token, raw: &[u8]) {
        self.summary.roundtrip_checked += 1;
        let mut out = Vec::new();
        if let Err(e) = token.encode(self.tokens.context(), &mut out) {
            self.fail(at, FailureKind::Encode(e.to_string()));
            return;
        }
        if let Some(diff) = first_difference(raw, &out) {
            let what = "token";
            self.fail(at + diff as u64, FailureKind::Mismatch { what });
        }
    }
}

/// How a stream starts: TLS, TDS packets, or (no packet type matches but a
/// token type does) a bare token stream.
fn start_mode(buf: &[u8]) -> Mode {
    if tls_record::starts_with_record(buf) {
        return Mode::Strict;
    }
    let first = buf.first().copied().unwrap_or(0);
    if PacketType::decode(first).is_err() && is_token_type(first) {
        return Mode::Tokens;
    }
    Mode::Tds
}

/// Token types of 2.2.7 a server stream can start with.
fn is_token_type(byte: u8) -> bool {
    matches!(
        byte,
        0x79 | 0x81
            | 0xA4
            | 0xA5
            | 0xA9
            | 0xAA
            | 0xAB
            | 0xAC
            | 0xAD
            | 0xAE
            | 0xD1
            | 0xD2
            | 0xE3
            | 0xE4
            | 0xED
            | 0xEE
            | 0xFD
            | 0xFE
            | 0xFF
    )
}

/// Whether a PRELOGIN payload is a TLS record rather than PRELOGIN options.
fn starts_like_tls(payload: &[u8]) -> bool {
    tls_record::starts_with_record(payload)
}

/// A server's first 0x04 message is a PRELOGIN response when it starts with
/// an option token (0x00-0x07) or the terminator; token types are >= 0x20.
fn is_prelogin_payload(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(0x00..=0x08 | 0xFF))
}

fn describe_prelogin(p: &PreLogin, line: &mut String) {
    if let Some(v) = p.version() {
        line.push_str(&format!(
            " version={}.{}.{}.{}",
            v.major, v.minor, v.build, v.sub_build
        ));
    }
    if let Some((mode, cert)) = p.encryption() {
        line.push_str(&format!(" encryption={mode:?}"));
        if cert {
            line.push_str("+client_cert");
        }
    }
    if let Some(mars) = p.mars() {
        line.push_str(&format!(" mars={mars}"));
    }
    if let Some(fed) = p.fed_auth_required() {
        line.push_str(&format!(" fedauth_required={fed}"));
    }
}

fn describe_token(token: &Token, ctx: &TokenContext) -> String {
    match token {
        Token::ColMetadata(meta) => {
            let columns: Vec<String> = meta
                .columns
                .iter()
                .map(|c| format!("{}:{:#04x}", c.name, c.type_info.type_id()))
                .collect();
            format!(" columns={columns:?}")
        }
        Token::Row(row) => {
            let types = ctx
                .columns
                .as_deref()
                .map(|m| &m.columns[..])
                .unwrap_or(&[]);
            let values: Vec<String> = row
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| format_row_value(types.get(i).map(|c| c.type_info.type_id()), v))
                .collect();
            format!(" values=[{}]", values.join(", "))
        }
        Token::Done(d) => format!(" status={:#06x} rows={}", d.status.0, d.row_count),
        Token::InfoError(e) => format!(
            " number={} class={} message={:?}",
            e.number,
            e.class,
            shorten(&e.message.to_string())
        ),
        Token::LoginAck(ack) => format!(
            " tds={:#010x} program={:?} version={:?}",
            ack.tds_version.0,
            ack.prog_name.to_string(),
            ack.prog_version
        ),
        Token::EnvChange(e) => format!(" type={}", e.env_type()),
        Token::FeatureExtAck(ack) => {
            let ids: Vec<String> = ack
                .0
                .iter()
                .map(|f| format!("{:#04x}", f.feature))
                .collect();
            format!(" features={ids:?}")
        }
        Token::ReturnStatus(s) => format!(" value={}", s.0),
        Token::ReturnValue(v) => format!(
            " name={:?} type={:#04x} value={}",
            v.name.to_string(),
            v.type_info.type_id(),
            format_row_value(Some(v.type_info.type_id()), &v.value)
        ),
        _ => String::new(),
    }
}

/// Shows a row value for the common types; other types as hex.
fn format_row_value(type_id: Option<u8>, value: &token::row::RawValue) -> String {
    use token::row::RawValue;
    let data = match value {
        RawValue::Null => return "NULL".into(),
        RawValue::Bytes(d) => d,
        RawValue::Text { data, .. } => data,
        RawValue::Plp { data, .. } => data,
    };
    match type_id {
        Some(0x30 | 0x34 | 0x38 | 0x7F | 0x26) => format_int(data),
        Some(0x32 | 0x68) => format!("{}", data.first().is_some_and(|b| *b != 0)),
        Some(0xE7 | 0xEF | 0x63) => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|p| u16::from_le_bytes([p[0], p[1]]))
                .collect();
            format!("{:?}", shorten(&String::from_utf16_lossy(&units)))
        }
        Some(0xA7 | 0xAF | 0x23 | 0x27 | 0x2F) => {
            let text: String = data.iter().map(|&b| char::from(b)).collect();
            format!("{:?}", shorten(&text))
        }
        _ => format_hex(data),
    }
}

fn format_int(data: &[u8]) -> String {
    match data.len() {
        1 => data[0].to_string(),
        2 => i16::from_le_bytes([data[0], data[1]]).to_string(),
        4 => i32::from_le_bytes([data[0], data[1], data[2], data[3]]).to_string(),
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(data);
            i64::from_le_bytes(b).to_string()
        }
        _ => format_hex(data),
    }
}

fn format_hex(data: &[u8]) -> String {
    let shown: String = data.iter().take(32).map(|b| format!("{b:02x}")).collect();
    match data.len() > 32 {
        true => format!("0x{shown}..({} bytes)", data.len()),
        false => format!("0x{shown}"),
    }
}

fn format_sql_value(value: &crate::tds::types::value::SqlValue) -> String {
    use crate::tds::types::value::SqlValue as V;
    if let Some(text) = value.text() {
        return format!("{:?}", shorten(&text));
    }
    match value {
        V::Null => "NULL".into(),
        V::Bit(b) => b.to_string(),
        V::TinyInt(v) => v.to_string(),
        V::SmallInt(v) => v.to_string(),
        V::Int(v) => v.to_string(),
        V::BigInt(v) => v.to_string(),
        V::Real(v) => v.to_string(),
        V::Float(v) => v.to_string(),
        V::Binary(b) | V::VarBinary(b) | V::Raw(b) => format_hex(b),
        V::Guid(g) => crate::tds::types::value::guid_to_string(g),
        other => format!("{other:?}"),
    }
}

fn shorten(text: &str) -> String {
    match text.chars().count() > MAX_SHOWN_CHARS {
        true => text
            .chars()
            .take(MAX_SHOWN_CHARS)
            .chain("…".chars())
            .collect(),
        false => text.to_owned(),
    }
}

/// The first index where the two differ (a length difference counts).
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(bytes: &[u8], roundtrip: bool) -> (DumpSummary, String) {
        let mut out = Vec::new();
        let direction = guess_direction(bytes);
        let mut dumper = Dumper::new(direction, roundtrip, &mut out);
        dumper.feed(bytes).unwrap();
        let summary = dumper.finish().unwrap();
        (summary, String::from_utf8(out).unwrap())
    }

    #[test]
    fn recognises_a_bare_ntlm_challenge() {
        let raw = include_bytes!("../../fixtures/test-suite-bytes/pytds_ntlm_challenge_type2.bin");
        let mut out = Vec::new();
        let summary = dump_bytes(raw, None, true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(summary.success(), "{text}");
        assert!(text.contains("NTLM CHALLENGE message"), "{text}");

        // A field pointing past the end is not understood.
        let mut cut = raw.to_vec();
        cut.truncate(60);
        let summary = dump_bytes(&cut, None, true, &mut Vec::new()).unwrap();
        assert!(!summary.success());
    }

    #[test]
    fn parses_args() {
        let args = ["f.bin", "--from", "server", "--roundtrip"].map(String::from);
        let parsed = DumpArgs::parse(args).unwrap();
        assert_eq!(parsed.from, Some(Direction::Server));
        assert!(parsed.roundtrip);
        assert!(DumpArgs::parse(["--from".to_string()]).is_err());
        assert!(DumpArgs::parse(Vec::new()).is_err());
    }

    #[test]
    fn dumps_a_login_without_showing_the_password() {
        let raw = include_bytes!("../../fixtures/client-first-packets/jtds-prelogin.bin");
        let (summary, text) = dump(raw, true);
        assert!(summary.success(), "{text}");
        assert_eq!(summary.direction, Some(Direction::Client));
        assert!(text.contains("user=\"holdout\""), "{text}");
        let login = Login7::decode(&raw[8..]).unwrap();
        assert!(!text.contains(login.password.as_str()));
    }

    #[test]
    fn strict_stream_shows_sni_and_alpn() {
        let raw = include_bytes!(
            "../../fixtures/client-first-packets/pyodbc-msodbcsql18-encrypt-strict-prelogin.bin"
        );
        let (summary, text) = dump(raw, true);
        assert!(summary.success(), "{text}");
        assert!(text.contains("sni=127.0.0.1"), "{text}");
        assert!(text.contains("tds/8.0"), "{text}");
        assert_eq!(summary.tls_records, 1);
    }

    #[test]
    fn truncated_stream_fails_with_offset() {
        let raw = include_bytes!("../../fixtures/ms-tds-examples/ms-tds-4.1_prelogin_request.bin");
        let (summary, text) = dump(&raw[..20], false);
        assert!(!summary.success());
        assert_eq!(summary.understood_bytes, 0);
        assert!(text.contains("FAILED"), "{text}");
    }

    #[test]
    fn tls_record_split_across_prelogin_messages() {
        // One handshake record (ClientHello) cut into two PRELOGIN messages.
        let hello = include_bytes!(
            "../../fixtures/client-first-packets/pyodbc-msodbcsql18-encrypt-strict-prelogin.bin"
        );
        let mut stream = BytesMut::new();
        for part in [&hello[..100], &hello[100..]] {
            crate::tds::packet::encode_message(PacketType::PreLogin, 0, part, 4096, &mut stream)
                .unwrap();
        }
        let (summary, text) = dump(&stream, true);
        assert!(summary.success(), "{text}");
        assert_eq!(summary.tls_records, 1);
        assert!(text.contains("sni=127.0.0.1"), "{text}");
    }

    #[test]
    fn offset_map_maps_across_segments() {
        let mut map = OffsetMap::default();
        map.push(8, 10);
        map.push(26, 5);
        assert_eq!(map.file_offset(0), 8);
        assert_eq!(map.file_offset(12), 28);
        map.forget_before(10);
        assert_eq!(map.file_offset(12), 28);
    }

    #[test]
    fn difference_is_found() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"abc", b"ab"), Some(2));
    }
}
