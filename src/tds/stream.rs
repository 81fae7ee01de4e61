//! A streaming, sans-I/O reader of the server's token stream ([MS-TDS] 2.2.7
//! "Packet Data Token Stream Definition"): bytes go in with
//! [`TokenReader::handle_bytes`] in pieces of any size, [`Item`]s come out of
//! [`TokenReader::poll_item`] as soon as they are complete.
//!
//! Cost is linear in the input. The reader never restarts a token when more
//! bytes arrive: tokens with a length prefix (or a fixed size) are decoded
//! once, when all of them is buffered; FEATUREEXTACK is walked entry by
//! entry; COLMETADATA column by column; DATACLASSIFICATION one count, name or
//! property at a time; ROW, NBCROW and RETURNVALUE value by value, keeping
//! the position inside the current value and the PLP chunk state. A unit
//! that must be retried (one COLMETADATA column, a RETURNVALUE header, a
//! CekTable) is retried only once the buffer reaches the length its last
//! attempt proved necessary, so every retry gets past at least one more
//! field: the cost per unit is at most its size times its number of fields.
//! [`TokenReader::work`] counts the bytes examined, for tests that hold the
//! reader to this.
//!
//! Rows are handed over in one of two [`RowMode`]s: as raw pieces (constant
//! memory, for forwarding untouched results) or whole and decoded (for
//! rewriting), under a size cap.
//!
//! Value framing comes from [`crate::tds::types::TypeInfo::framing`], through
//! the COLMETADATA columns ([`crate::tds::token::TypeInfoRaw`]).
//!
//! RETURNVALUE is always held whole (the rewriter needs output parameters
//! whole), under the whole-row cap of the current mode, or
//! [`DEFAULT_MAX_WHOLE_ROW_BYTES`] in [`RowMode::Pieces`].

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::tds::error::DecodeError;
use crate::tds::reader::Reader;
use crate::tds::token::col_metadata::{CekTable, ColumnData, MAX_COLUMNS};
use crate::tds::token::data_classification::{
    self, DataClassification, MAX_DATACLASSIFICATION_BYTES, VERSION_WITH_RANK,
};
use crate::tds::token::feature_ext_ack::{check_total, FEATURE_TERMINATOR};
use crate::tds::token::fed_auth_info::MAX_FEDAUTHINFO_BYTES;
use crate::tds::token::return_value::ReturnValueHeader;
use crate::tds::token::row::{Row, PLP_NULL, PLP_UNKNOWN};
use crate::tds::token::session_state::MAX_SESSIONSTATE_BYTES;
use crate::tds::token::{self as tok, ColMetadata, Done, Framing, Token, TokenContext};
use crate::tds::token::{EnvChange, FeatureExtAck, Routing, TdsVersion, UcsString};

/// Default cap on one row (or RETURNVALUE) held whole. Rewriting needs each
/// encrypted cell complete (the AEAD tag covers all of it), so a row is
/// buffered; 64 MiB admits large LOB cells while bounding memory per
/// connection. Raise it per deployment through [`RowMode::Whole`].
pub const DEFAULT_MAX_WHOLE_ROW_BYTES: usize = 64 << 20;

/// Cap on one COLMETADATA column description while it is buffered: a
/// TYPE_INFO, a column name (B_VARCHAR, at most 510 bytes), a TableName for
/// TEXT columns and a UDT's names; 1 MiB is far above any real column.
pub const MAX_COLUMN_BYTES: usize = 1 << 20;

/// Cap on a whole COLMETADATA token: up to [`MAX_COLUMNS`] columns of a few
/// hundred bytes each, plus the CekTable.
pub const MAX_COLMETADATA_BYTES: usize = 16 << 20;

/// Name given to the buffer reader, so a truncation of the buffered input is
/// told apart from a truncation inside a nested length (a real error).
const BUFFERED: &str = "buffered token stream";

/// How ROW and NBCROW tokens are handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowMode {
    /// As [`Item::RowPiece`]s followed by [`Item::RowEnd`]; no row is held
    /// whole, so a result of any size streams in memory bounded by what the
    /// caller hands in at once plus a few header bytes.
    Pieces,
    /// As [`Item::Token`] with [`Token::Row`], decoded, for rewriting. A row
    /// (or a PLP value's declared length) above `max_row_bytes` is
    /// [`DecodeError::TooLarge`].
    Whole { max_row_bytes: usize },
}

impl Default for RowMode {
    fn default() -> Self {
        RowMode::Whole {
            max_row_bytes: DEFAULT_MAX_WHOLE_ROW_BYTES,
        }
    }
}

/// What the reader yields.
///
/// Every byte fed in comes out exactly once, in order: as the `raw` of a
/// token or as a row piece. Concatenating them gives the input back, so a
/// relay forwards `raw` (or the pieces) unchanged and re-encodes only what it
/// rewrote.
///
/// A result set read in [`RowMode::Pieces`] looks like
///
/// ```text
/// Token(COLMETADATA)  RowPiece RowPiece ... RowEnd  RowPiece RowEnd ...  Token(DONE)
/// ```
///
/// and in [`RowMode::Whole`] like
///
/// ```text
/// Token(COLMETADATA)  Token(ROW)  Token(NBCROW) ...  Token(DONE)
/// ```
///
/// Only rows come in pieces; every other token (RETURNVALUE included) comes
/// whole. The mode can change between rows, e.g. to whole rows once a
/// COLMETADATA shows an encrypted column. What a relay must track is read
/// with [`Item::signal`]; the reader itself keeps the [`TokenContext`]
/// (version, acknowledged features, current columns) current.
#[derive(Clone)]
pub enum Item {
    /// A complete token (in [`RowMode::Whole`], rows too) with its bytes as
    /// they arrived, type byte included.
    Token { token: Token, raw: Bytes },
    /// [`RowMode::Pieces`]: the next bytes of the current ROW or NBCROW. The
    /// first piece starts with the token byte. Pieces follow packet
    /// boundaries of the input, not value boundaries.
    RowPiece(Bytes),
    /// [`RowMode::Pieces`]: the row whose pieces were yielded is complete.
    RowEnd,
}

/// What a relay must react to, read off an [`Item`] by [`Item::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal<'a> {
    /// A DONE, DONEPROC or DONEINPROC. `attention`: the ATTN bit, the
    /// acknowledgement of a cancel. `end_of_response`: a DONE or DONEPROC
    /// without MORE, the last token of the response.
    Done {
        attention: bool,
        end_of_response: bool,
    },
    /// ENVCHANGE type 4: the new packet size for both directions.
    PacketSize(u32),
    /// ENVCHANGE type 1: the new current database.
    Database(&'a UcsString),
    /// ENVCHANGE type 18: the request reset the session; drop per-session caches.
    ResetAck,
    /// ENVCHANGE type 20: the server redirects the client elsewhere.
    Routing(&'a Routing),
    /// LOGINACK: the negotiated TDS version.
    LoginAck(TdsVersion),
    /// FEATUREEXTACK: the features the server accepted.
    FeatureExtAck(&'a FeatureExtAck),
}

impl Item {
    /// The token, if this item is one.
    pub fn token(&self) -> Option<&Token> {
        match self {
            Item::Token { token, .. } => Some(token),
            _ => None,
        }
    }

    /// The bytes to forward for this item when it is not rewritten.
    pub fn raw(&self) -> Option<&Bytes> {
        match self {
            Item::Token { raw, .. } | Item::RowPiece(raw) => Some(raw),
            Item::RowEnd => None,
        }
    }

    /// What a relay must track about this item, if anything.
    pub fn signal(&self) -> Option<Signal<'_>> {
        match self.token()? {
            Token::Done(d) => Some(done_signal(d)),
            Token::EnvChange(e) => env_signal(e),
            Token::LoginAck(ack) => Some(Signal::LoginAck(ack.tds_version)),
            Token::FeatureExtAck(ack) => Some(Signal::FeatureExtAck(ack)),
            _ => None,
        }
    }
}

fn done_signal(d: &Done) -> Signal<'static> {
    Signal::Done {
        attention: d.is_attention_ack(),
        end_of_response: d.ends_response(),
    }
}

fn env_signal(e: &EnvChange) -> Option<Signal<'_>> {
    if let Some(size) = e.packet_size() {
        return Some(Signal::PacketSize(size));
    }
    if let Some(db) = e.database() {
        return Some(Signal::Database(db));
    }
    if e.is_reset_ack() {
        return Some(Signal::ResetAck);
    }
    e.routing().map(Signal::Routing)
}

/// Tokens, pieces and lengths only: row bytes and messages are not printed.
impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Token { token, raw } => write!(f, "{token:?}[{} bytes]", raw.len()),
            Item::RowPiece(b) => write!(f, "RowPiece({} bytes)", b.len()),
            Item::RowEnd => f.write_str("RowEnd"),
        }
    }
}

/// Where the walk of one value stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueStep {
    /// Before the value's length prefix.
    Start,
    /// TEXT/NTEXT/IMAGE: TextPtrLen read, waiting for pointer, timestamp, length.
    TextHeader(u8),
    /// Inside the data; `chunked`: a PLP chunk, followed by another chunk header.
    Data { remaining: u64, chunked: bool },
    /// Before a PLP chunk length.
    ChunkHeader,
}

/// Progress through a ROW, NBCROW or RETURNVALUE value list.
#[derive(Debug)]
struct ValueWalk {
    step: ValueStep,
    /// Whole-row cap, or `None` when rows pass as pieces.
    cap: Option<usize>,
}

enum Progress {
    Done,
    /// Needs the buffer to reach this length.
    Need(usize),
}

impl ValueWalk {
    fn new(cap: Option<usize>) -> Self {
        ValueWalk {
            step: ValueStep::Start,
            cap,
        }
    }

    /// Advances through the value at `*pos` as far as `buf` allows.
    fn advance(
        &mut self,
        framing: Framing,
        buf: &[u8],
        pos: &mut usize,
        work: &mut u64,
    ) -> Result<Progress, DecodeError> {
        loop {
            let stop = match self.step {
                ValueStep::Start => self.start(framing, buf, pos, work)?,
                ValueStep::TextHeader(ptr_len) => self.text_header(ptr_len, buf, pos, work)?,
                ValueStep::Data { remaining, chunked } => {
                    self.data(remaining, chunked, buf, pos, work)
                }
                ValueStep::ChunkHeader => self.chunk_header(buf, pos, work)?,
            };
            if let Some(progress) = stop {
                return Ok(progress);
            }
        }
    }

    /// TEXT/NTEXT/IMAGE: text pointer, timestamp and 4-byte length.
    fn text_header(
        &mut self,
        ptr_len: u8,
        buf: &[u8],
        pos: &mut usize,
        work: &mut u64,
    ) -> Result<Option<Progress>, DecodeError> {
        let header = ptr_len as usize + 8 + 4;
        let Some(b) = buf.get(*pos..*pos + header) else {
            return Ok(Some(Progress::Need(*pos + header)));
        };
        let len = le_u64(b.get(header - 4..).unwrap_or_default());
        self.consume(pos, header, work);
        self.set_data(len, false)?;
        Ok(None)
    }

    /// Skips over as much of the data as is buffered.
    fn data(
        &mut self,
        remaining: u64,
        chunked: bool,
        buf: &[u8],
        pos: &mut usize,
        work: &mut u64,
    ) -> Option<Progress> {
        let take = remaining.min(buf.len().saturating_sub(*pos) as u64);
        self.consume(pos, take as usize, work);
        if take < remaining {
            self.step = ValueStep::Data {
                remaining: remaining - take,
                chunked,
            };
            return Some(Progress::Need(*pos + 1));
        }
        if !chunked {
            return Some(Progress::Done);
        }
        self.step = ValueStep::ChunkHeader;
        None
    }

    /// A PLP chunk length; 0 ends the value.
    fn chunk_header(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        work: &mut u64,
    ) -> Result<Option<Progress>, DecodeError> {
        let Some(b) = buf.get(*pos..*pos + 4) else {
            return Ok(Some(Progress::Need(*pos + 4)));
        };
        let len = le_u64(b);
        self.consume(pos, 4, work);
        if len == 0 {
            return Ok(Some(Progress::Done));
        }
        self.set_data(len, true)?;
        Ok(None)
    }

    /// Reads the length prefix. `Some` ends the call (done or needs more),
    /// `None` continues with the new step.
    fn start(
        &mut self,
        framing: Framing,
        buf: &[u8],
        pos: &mut usize,
        work: &mut u64,
    ) -> Result<Option<Progress>, DecodeError> {
        let width = match framing {
            Framing::Fixed(n) => {
                self.step = ValueStep::Data {
                    remaining: u64::from(n),
                    chunked: false,
                };
                return Ok(None);
            }
            Framing::ByteLen | Framing::Text => 1,
            Framing::UShortLen => 2,
            Framing::Variant => 4,
            Framing::Plp => 8,
        };
        let Some(b) = buf.get(*pos..*pos + width) else {
            return Ok(Some(Progress::Need(*pos + width)));
        };
        let len = le_u64(b);
        self.consume(pos, width, work);
        self.after_prefix(framing, len)
    }

    fn after_prefix(
        &mut self,
        framing: Framing,
        len: u64,
    ) -> Result<Option<Progress>, DecodeError> {
        let null = match framing {
            Framing::ByteLen | Framing::Variant | Framing::Text => len == 0,
            Framing::UShortLen => len == 0xFFFF,
            _ => len == PLP_NULL,
        };
        if null {
            return Ok(Some(Progress::Done));
        }
        match framing {
            Framing::Text => self.step = ValueStep::TextHeader(len as u8),
            Framing::Plp => {
                if len != PLP_UNKNOWN {
                    self.check_cap("PLP value", len)?;
                }
                self.step = ValueStep::ChunkHeader;
            }
            _ => self.set_data(len, false)?,
        }
        Ok(None)
    }

    fn set_data(&mut self, len: u64, chunked: bool) -> Result<(), DecodeError> {
        self.check_cap("value", len)?;
        self.step = ValueStep::Data {
            remaining: len,
            chunked,
        };
        Ok(())
    }

    fn check_cap(&self, structure: &'static str, len: u64) -> Result<(), DecodeError> {
        match self.cap {
            Some(cap) if len > cap as u64 => Err(DecodeError::TooLarge {
                structure,
                length: usize::try_from(len).unwrap_or(usize::MAX),
                limit: cap,
            }),
            _ => Ok(()),
        }
    }

    fn consume(&self, pos: &mut usize, n: usize, work: &mut u64) {
        *pos += n;
        *work += n as u64;
    }
}

/// Little-endian integer of up to 8 bytes.
fn le_u64(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// Progress through a ROW or NBCROW.
#[derive(Debug)]
struct RowWalk {
    ty: u8,
    meta: Arc<ColMetadata>,
    /// NBCROW bitmap once read.
    bitmap: Option<Vec<u8>>,
    column: usize,
    value: ValueWalk,
}

impl RowWalk {
    /// Reads the NBCROW bitmap, then walks values as far as `buf` allows.
    fn advance(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        work: &mut u64,
    ) -> Result<Progress, DecodeError> {
        let columns = self.meta.columns.len();
        if self.bitmap.is_none() {
            let len = Row::bitmap_len(columns);
            let Some(b) = buf.get(*pos..*pos + len) else {
                return Ok(Progress::Need(*pos + len));
            };
            self.bitmap = Some(b.to_vec());
            *pos += len;
            *work += len as u64;
        }
        while let Some(column) = self.meta.columns.get(self.column) {
            if !self.is_bitmap_null(self.column) {
                let framing = column.type_info.framing();
                if let Progress::Need(n) = self.value.advance(framing, buf, pos, work)? {
                    return Ok(Progress::Need(n));
                }
                self.value = ValueWalk::new(self.value.cap);
            }
            self.column += 1;
        }
        Ok(Progress::Done)
    }

    /// NBCROW: column `i` is NULL by the bitmap and has no bytes.
    fn is_bitmap_null(&self, i: usize) -> bool {
        self.ty == tok::NBCROW && Row::bitmap_has(self.bitmap.as_deref().unwrap_or_default(), i)
    }
}

/// Progress through a COLMETADATA.
#[derive(Debug, Default)]
struct ColMetaWalk {
    count: Option<usize>,
    cek_table: Option<CekTable>,
    columns: Vec<ColumnData>,
}

/// How far a COLMETADATA walk got.
enum WalkEnd {
    /// Needs the buffer to reach this length.
    Need(usize),
    /// Count was 0xFFFF.
    NoMetadata,
    Complete,
}

impl ColMetaWalk {
    /// Reads the count, the CekTable when column encryption was acked, then
    /// as many whole columns as are buffered.
    fn advance(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        ctx: &TokenContext,
        work: &mut u64,
    ) -> Result<WalkEnd, DecodeError> {
        if self.count.is_none() {
            match attempt(buf, *pos, work, ColMetadata::decode_count)? {
                Attempt::Need(n) => return Ok(WalkEnd::Need(n)),
                Attempt::Done(None, _) => return Ok(WalkEnd::NoMetadata),
                Attempt::Done(Some(count), used) => {
                    *pos += used;
                    self.count = Some(count);
                    self.columns.reserve(count.min(MAX_COLUMNS));
                }
            }
        }
        if ctx.column_encryption && self.cek_table.is_none() {
            match attempt(buf, *pos, work, CekTable::decode)? {
                Attempt::Need(n) => return Ok(WalkEnd::Need(n)),
                Attempt::Done(table, used) => {
                    *pos += used;
                    self.cek_table = Some(table);
                }
            }
        }
        self.read_columns(buf, pos, ctx, work)
    }

    fn read_columns(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        ctx: &TokenContext,
        work: &mut u64,
    ) -> Result<WalkEnd, DecodeError> {
        while self.columns.len() < self.count.unwrap_or_default() {
            match attempt(buf, *pos, work, |r| ColumnData::decode(r, ctx))? {
                Attempt::Need(n) => {
                    check_need("COLMETADATA column", n - *pos, MAX_COLUMN_BYTES)?;
                    return Ok(WalkEnd::Need(n));
                }
                Attempt::Done(column, used) => {
                    *pos += used;
                    self.columns.push(column);
                }
            }
        }
        Ok(WalkEnd::Complete)
    }
}

/// Progress through a RETURNVALUE.
#[derive(Debug)]
struct ReturnValueWalk {
    framing: Option<Framing>,
    value: ValueWalk,
}

/// Where a DATACLASSIFICATION walk stands; each step reads one small unit
/// (a count, a name pair, a rank or a property).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataClassStep {
    LabelCount,
    Labels(u16),
    InfoTypeCount,
    InfoTypes(u16),
    Rank,
    ColumnCount,
    /// Columns still to read.
    Columns(usize),
    /// Properties still to read in the current column, then columns after it.
    Properties(u16, usize),
    Done,
}

/// Progress through a DATACLASSIFICATION, which has no length prefix.
#[derive(Debug)]
struct DataClassWalk {
    step: DataClassStep,
    with_rank: bool,
    token: DataClassification,
}

impl DataClassWalk {
    fn new(with_rank: bool) -> Self {
        DataClassWalk {
            step: DataClassStep::LabelCount,
            with_rank,
            token: DataClassification {
                labels: Vec::new(),
                information_types: Vec::new(),
                rank: None,
                columns: Vec::new(),
            },
        }
    }

    /// Reads one unit from `r` and moves to the next step.
    fn read_unit(&mut self, r: &mut Reader<'_>, ctx: &TokenContext) -> Result<(), DecodeError> {
        use DataClassStep::*;
        self.step = match self.step {
            LabelCount => Labels(r.u16_le()?),
            Labels(0) => InfoTypeCount,
            Labels(n) => {
                self.token.labels.push(data_classification::decode_pair(r)?);
                Labels(n - 1)
            }
            InfoTypeCount => InfoTypes(r.u16_le()?),
            InfoTypes(0) if self.with_rank => Rank,
            InfoTypes(0) => ColumnCount,
            InfoTypes(n) => {
                let pair = data_classification::decode_pair(r)?;
                self.token.information_types.push(pair);
                InfoTypes(n - 1)
            }
            Rank => {
                self.token.rank = Some(r.u32_le()? as i32);
                ColumnCount
            }
            ColumnCount => Columns(data_classification::check_column_count(r.u16_le()?, ctx)?),
            Columns(0) => Done,
            Columns(n) => {
                let properties = r.u16_le()?;
                self.token.columns.push(Vec::new());
                Properties(properties, n - 1)
            }
            Properties(0, left) => Columns(left),
            Properties(k, left) => {
                let p = data_classification::decode_property(r, self.with_rank)?;
                if let Some(column) = self.token.columns.last_mut() {
                    column.push(p);
                }
                Properties(k - 1, left)
            }
            Done => Done,
        };
        Ok(())
    }
}

#[derive(Debug)]
enum State {
    /// Between tokens.
    Idle,
    /// A token decoded once `total` bytes are buffered (`None`: length not read yet).
    Sized {
        width: usize,
        cap: usize,
        total: Option<usize>,
    },
    FeatureExtAck,
    ColMetadata(Box<ColMetaWalk>),
    DataClassification(Box<DataClassWalk>),
    ReturnValue(Box<ReturnValueWalk>),
    Row(Box<RowWalk>),
}

/// Result of parsing a structure that may not be fully buffered yet.
enum Attempt<T> {
    Done(T, usize),
    Need(usize),
}

/// Parses `buf[from..]` with `f`; a truncation of the buffer becomes
/// `Need(total length required)`, other errors pass through.
fn attempt<T>(
    buf: &[u8],
    from: usize,
    work: &mut u64,
    f: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Attempt<T>, DecodeError> {
    let slice = buf.get(from..).unwrap_or_default();
    let mut r = Reader::new(slice, BUFFERED);
    match f(&mut r) {
        Ok(v) => {
            *work += r.position() as u64;
            Ok(Attempt::Done(v, r.position()))
        }
        Err(DecodeError::Truncated {
            structure,
            needed,
            available,
        }) if structure == BUFFERED => {
            let consumed = slice.len() - available;
            *work += consumed as u64;
            Ok(Attempt::Need(from + consumed + needed))
        }
        Err(e) => Err(e),
    }
}

fn check_need(structure: &'static str, need: usize, limit: usize) -> Result<(), DecodeError> {
    if need > limit {
        return Err(DecodeError::TooLarge {
            structure,
            length: need,
            limit,
        });
    }
    Ok(())
}

/// The streaming token reader. See the module documentation.
pub struct TokenReader {
    ctx: TokenContext,
    mode: RowMode,
    /// Unconsumed input; index 0 is the start of the current token (or of
    /// the current row's next piece).
    buf: BytesMut,
    /// Parse position inside `buf` for walked tokens.
    pos: usize,
    /// `poll_item` does nothing until `buf` holds this many bytes.
    need: usize,
    state: State,
    row_end_pending: bool,
    failed: Option<DecodeError>,
    work: u64,
}

impl TokenReader {
    /// A reader starting between tokens, with rows yielded whole under the
    /// default cap.
    pub fn new(ctx: TokenContext) -> Self {
        TokenReader {
            ctx,
            mode: RowMode::default(),
            buf: BytesMut::new(),
            pos: 0,
            need: 1,
            state: State::Idle,
            row_end_pending: false,
            failed: None,
            work: 0,
        }
    }

    /// Chooses how rows are handed over, from the next row on.
    pub fn set_row_mode(&mut self, mode: RowMode) {
        self.mode = mode;
    }

    pub fn row_mode(&self) -> RowMode {
        self.mode
    }

    /// The connection context as the tokens so far left it.
    pub fn context(&self) -> &TokenContext {
        &self.ctx
    }

    /// For setting what is known from elsewhere (the TDS version asked for in
    /// LOGIN7, features acknowledged on another path).
    pub fn context_mut(&mut self) -> &mut TokenContext {
        &mut self.ctx
    }

    /// Appends input. Nothing is parsed until [`TokenReader::poll_item`].
    pub fn handle_bytes(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that have not been yielded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the reader stands between tokens with nothing buffered.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle) && self.buf.is_empty() && !self.row_end_pending
    }

    /// Bytes examined so far (prefixes and values counted once each, plus
    /// retries); stays within a small factor of the input.
    pub fn work(&self) -> u64 {
        self.work
    }

    /// The next complete item, `Ok(None)` when more input is needed. After an
    /// error the reader stays failed: token streams cannot be resynchronised.
    pub fn poll_item(&mut self) -> Result<Option<Item>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.row_end_pending {
            self.row_end_pending = false;
            return Ok(Some(Item::RowEnd));
        }
        let result = self.step();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn step(&mut self) -> Result<Option<Item>, DecodeError> {
        if self.buf.len() < self.need {
            return Ok(None);
        }
        if matches!(self.state, State::Idle) {
            self.start_token()?;
        }
        match self.state {
            State::Idle => Ok(None),
            State::Sized { .. } => self.step_sized(),
            State::FeatureExtAck => self.step_feature_ext_ack(),
            State::ColMetadata(_) => self.step_col_metadata(),
            State::DataClassification(_) => self.step_data_classification(),
            State::ReturnValue(_) => self.step_return_value(),
            State::Row(_) => self.step_row(),
        }
    }

    /// Reads the token type and picks how to frame the token.
    fn start_token(&mut self) -> Result<(), DecodeError> {
        let ty = self.buf.first().copied().unwrap_or_default();
        self.pos = 1;
        self.state = match ty {
            tok::DONE | tok::DONEPROC | tok::DONEINPROC => {
                Self::fixed(Done::wire_len(self.ctx.tds_version))
            }
            tok::RETURNSTATUS => Self::fixed(1 + tok::ReturnStatus::BODY_LEN),
            tok::ENVCHANGE
            | tok::INFO
            | tok::ERROR
            | tok::LOGINACK
            | tok::ORDER
            | tok::TABNAME
            | tok::COLINFO
            | tok::SSPI => Self::length(2, 0xFFFF),
            tok::SESSIONSTATE => Self::length(4, MAX_SESSIONSTATE_BYTES),
            tok::FEDAUTHINFO => Self::length(4, MAX_FEDAUTHINFO_BYTES),
            tok::FEATUREEXTACK => State::FeatureExtAck,
            tok::COLMETADATA => State::ColMetadata(Box::default()),
            tok::DATACLASSIFICATION => State::DataClassification(Box::new(DataClassWalk::new(
                data_classification::require_ack(&self.ctx)? >= VERSION_WITH_RANK,
            ))),
            tok::RETURNVALUE => State::ReturnValue(Box::new(ReturnValueWalk {
                framing: None,
                value: ValueWalk::new(Some(self.whole_cap())),
            })),
            tok::ROW | tok::NBCROW => self.start_row(ty)?,
            other => return Err(DecodeError::UnknownToken(other)),
        };
        self.need = 1;
        Ok(())
    }

    fn fixed(total: usize) -> State {
        State::Sized {
            width: 0,
            cap: total,
            total: Some(total),
        }
    }

    fn length(width: usize, cap: usize) -> State {
        State::Sized {
            width,
            cap,
            total: None,
        }
    }

    fn whole_cap(&self) -> usize {
        match self.mode {
            RowMode::Whole { max_row_bytes } => max_row_bytes,
            RowMode::Pieces => DEFAULT_MAX_WHOLE_ROW_BYTES,
        }
    }

    fn start_row(&mut self, ty: u8) -> Result<State, DecodeError> {
        let name = if ty == tok::NBCROW { "NBCROW" } else { "ROW" };
        let meta = self.ctx.columns.clone().ok_or(DecodeError::Malformed {
            structure: name,
            reason: "no COLMETADATA precedes it",
        })?;
        let cap = match self.mode {
            RowMode::Whole { max_row_bytes } => Some(max_row_bytes),
            RowMode::Pieces => None,
        };
        Ok(State::Row(Box::new(RowWalk {
            ty,
            meta,
            bitmap: if ty == tok::NBCROW {
                None
            } else {
                Some(Vec::new())
            },
            column: 0,
            value: ValueWalk::new(cap),
        })))
    }

    /// Fixed-size and length-prefixed tokens: decoded once, when complete.
    fn step_sized(&mut self) -> Result<Option<Item>, DecodeError> {
        let State::Sized { width, cap, total } = self.state else {
            return Ok(None);
        };
        let total = match total {
            Some(t) => t,
            None => {
                let Some(len) = self.buf.get(1..1 + width) else {
                    return Ok(self.wait(1 + width));
                };
                let len = le_u64(len) as usize;
                let structure = token_name(self.buf.first().copied().unwrap_or_default());
                check_need(structure, len, cap)?;
                self.state = State::Sized {
                    width,
                    cap,
                    total: Some(1 + width + len),
                };
                1 + width + len
            }
        };
        if self.buf.len() < total {
            self.need = total;
            return Ok(None);
        }
        self.finish_token(total).map(Some)
    }

    /// Splits off `len` bytes, decodes them as one token and updates the context.
    fn finish_token(&mut self, len: usize) -> Result<Item, DecodeError> {
        let raw = self.buf.split_to(len).freeze();
        self.work += len as u64;
        let mut r = Reader::new(&raw, "token");
        let token = Token::decode(&mut r, &self.ctx)?;
        if !r.is_empty() {
            return Err(DecodeError::LengthMismatch {
                structure: token.name(),
                declared: len,
                used: r.position(),
            });
        }
        Ok(self.yield_token(token, raw))
    }

    fn yield_token(&mut self, token: Token, raw: Bytes) -> Item {
        self.ctx.observe(&token);
        self.state = State::Idle;
        self.pos = 0;
        self.need = 1;
        Item::Token { token, raw }
    }

    /// FEATUREEXTACK has no length: walk `FeatureId 1 | Len 4 | data` entries.
    fn step_feature_ext_ack(&mut self) -> Result<Option<Item>, DecodeError> {
        loop {
            let Some(&id) = self.buf.get(self.pos) else {
                self.need = self.pos + 1;
                return Ok(None);
            };
            if id == FEATURE_TERMINATOR {
                return self.finish_token(self.pos + 1).map(Some);
            }
            let Some(len) = self.buf.get(self.pos + 1..self.pos + 5) else {
                self.need = self.pos + 5;
                return Ok(None);
            };
            let next = (self.pos + 5).saturating_add(le_u64(len) as usize);
            check_total(next)?;
            self.work += 5;
            self.pos = next;
        }
    }

    /// COLMETADATA: the count, the CekTable, then one column at a time.
    fn step_col_metadata(&mut self) -> Result<Option<Item>, DecodeError> {
        let State::ColMetadata(walk) = &mut self.state else {
            return Ok(None);
        };
        match walk.advance(&self.buf, &mut self.pos, &self.ctx, &mut self.work)? {
            WalkEnd::Need(n) => {
                check_need("COLMETADATA", n, MAX_COLMETADATA_BYTES)?;
                Ok(self.wait(n))
            }
            WalkEnd::NoMetadata => self.finish_no_metadata(),
            WalkEnd::Complete => self.finish_col_metadata(),
        }
    }

    fn wait(&mut self, need: usize) -> Option<Item> {
        self.need = need;
        None
    }

    fn finish_no_metadata(&mut self) -> Result<Option<Item>, DecodeError> {
        let raw = self.buf.split_to(3).freeze();
        let token = Token::ColMetadata(Arc::new(ColMetadata::no_metadata()));
        Ok(Some(self.yield_token(token, raw)))
    }

    fn finish_col_metadata(&mut self) -> Result<Option<Item>, DecodeError> {
        let State::ColMetadata(walk) = std::mem::replace(&mut self.state, State::Idle) else {
            return Ok(None);
        };
        let meta = ColMetadata {
            no_metadata: false,
            cek_table: walk.cek_table,
            columns: walk.columns,
        };
        let raw = self.buf.split_to(self.pos).freeze();
        Ok(Some(
            self.yield_token(Token::ColMetadata(Arc::new(meta)), raw),
        ))
    }

    /// DATACLASSIFICATION has no length: walked one count, name pair, rank
    /// or property at a time.
    fn step_data_classification(&mut self) -> Result<Option<Item>, DecodeError> {
        let State::DataClassification(walk) = &mut self.state else {
            return Ok(None);
        };
        let (buf, ctx, work) = (&self.buf[..], &self.ctx, &mut self.work);
        while walk.step != DataClassStep::Done {
            match attempt(buf, self.pos, work, |r| walk.read_unit(r, ctx))? {
                Attempt::Need(n) => {
                    check_need("DATACLASSIFICATION", n, MAX_DATACLASSIFICATION_BYTES)?;
                    self.need = n;
                    return Ok(None);
                }
                Attempt::Done((), used) => self.pos += used,
            }
            check_need("DATACLASSIFICATION", self.pos, MAX_DATACLASSIFICATION_BYTES)?;
        }
        let State::DataClassification(walk) = std::mem::replace(&mut self.state, State::Idle)
        else {
            return Ok(None);
        };
        let raw = self.buf.split_to(self.pos).freeze();
        let token = Token::DataClassification(walk.token);
        Ok(Some(self.yield_token(token, raw)))
    }

    /// RETURNVALUE: the header (retried as a unit), then the value walked,
    /// then the whole token decoded once.
    fn step_return_value(&mut self) -> Result<Option<Item>, DecodeError> {
        let State::ReturnValue(walk) = &mut self.state else {
            return Ok(None);
        };
        let (buf, ctx, work) = (&self.buf[..], &self.ctx, &mut self.work);
        let framing = match walk.framing {
            Some(f) => f,
            None => match attempt(buf, self.pos, work, |r| ReturnValueHeader::decode(r, ctx))? {
                Attempt::Need(n) => {
                    check_need("RETURNVALUE", n, MAX_COLUMN_BYTES)?;
                    return Ok(self.wait(n));
                }
                Attempt::Done(h, used) => {
                    self.pos += used;
                    walk.framing = Some(h.type_info.framing());
                    h.type_info.framing()
                }
            },
        };
        match walk.value.advance(framing, buf, &mut self.pos, work)? {
            Progress::Need(n) => {
                check_need("RETURNVALUE", self.pos, self.whole_cap())?;
                Ok(self.wait(n))
            }
            Progress::Done => {
                check_need("RETURNVALUE", self.pos, self.whole_cap())?;
                self.finish_token(self.pos).map(Some)
            }
        }
    }

    /// ROW / NBCROW: the bitmap, then each non-NULL value.
    fn step_row(&mut self) -> Result<Option<Item>, DecodeError> {
        match self.walk_row()? {
            Progress::Done => self.finish_row(),
            Progress::Need(n) => {
                self.need = n;
                Ok(self.row_piece())
            }
        }
    }

    fn walk_row(&mut self) -> Result<Progress, DecodeError> {
        let State::Row(walk) = &mut self.state else {
            return Ok(Progress::Done);
        };
        let progress = walk.advance(&self.buf, &mut self.pos, &mut self.work)?;
        if let Some(cap) = walk.value.cap {
            check_need(name_of_row(walk.ty), self.pos, cap)?;
        }
        Ok(progress)
    }

    /// In pieces mode, hands over what has been walked of the current row.
    fn row_piece(&mut self) -> Option<Item> {
        let State::Row(walk) = &self.state else {
            return None;
        };
        if walk.value.cap.is_some() || self.pos == 0 {
            return None;
        }
        let piece = self.buf.split_to(self.pos).freeze();
        self.need -= self.pos;
        self.pos = 0;
        Some(Item::RowPiece(piece))
    }

    fn finish_row(&mut self) -> Result<Option<Item>, DecodeError> {
        let State::Row(walk) = std::mem::replace(&mut self.state, State::Idle) else {
            return Ok(None);
        };
        if walk.value.cap.is_none() {
            return Ok(Some(self.finish_pieces()));
        }
        let raw = self.buf.split_to(self.pos).freeze();
        self.work += raw.len() as u64;
        let mut r = Reader::new(raw.get(1..).unwrap_or_default(), name_of_row(walk.ty));
        let row = Row::decode_with(walk.ty, &mut r, &walk.meta)?;
        r.finish()?;
        Ok(Some(self.yield_token(Token::Row(row), raw)))
    }

    fn finish_pieces(&mut self) -> Item {
        let piece = self.buf.split_to(self.pos).freeze();
        self.pos = 0;
        self.need = 1;
        if piece.is_empty() {
            return Item::RowEnd;
        }
        self.row_end_pending = true;
        Item::RowPiece(piece)
    }
}

fn name_of_row(ty: u8) -> &'static str {
    if ty == tok::NBCROW {
        "NBCROW"
    } else {
        "ROW"
    }
}

fn token_name(ty: u8) -> &'static str {
    match ty {
        tok::ENVCHANGE => "ENVCHANGE",
        tok::INFO => "INFO",
        tok::ERROR => "ERROR",
        tok::LOGINACK => "LOGINACK",
        tok::ORDER => "ORDER",
        tok::TABNAME => "TABNAME",
        tok::COLINFO => "COLINFO",
        tok::SSPI => "SSPI",
        tok::SESSIONSTATE => "SESSIONSTATE",
        tok::FEDAUTHINFO => "FEDAUTHINFO",
        _ => "token",
    }
}

/// State and sizes only: the buffer can hold row values.
impl fmt::Debug for TokenReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReader")
            .field("mode", &self.mode)
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .field("failed", &self.failed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;
    use crate::tds::token::col_metadata::tests::sample_metadata;
    use crate::tds::token::{PlpLength, RawValue, RowKind};

    /// Feeds `input` cut at `cuts` (ascending offsets), collecting items.
    fn run_cuts(input: &[u8], ctx: TokenContext, mode: RowMode, cuts: &[usize]) -> Vec<Item> {
        let mut reader = TokenReader::new(ctx);
        reader.set_row_mode(mode);
        let mut items = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            reader.handle_bytes(&input[start..end]);
            start = end;
            while let Some(item) = reader.poll_item().expect("stream decodes") {
                items.push(item);
            }
        }
        assert!(reader.is_idle(), "left {:?}", reader);
        items
    }

    fn every(input: &[u8], step: usize) -> Vec<usize> {
        (step..input.len()).step_by(step).collect()
    }

    /// Every byte comes out once, in order; every token re-encodes to its raw bytes.
    fn check_exact(input: &[u8], items: &[Item], mut ctx: TokenContext) {
        let mut joined = Vec::new();
        for item in items {
            if let Some(raw) = item.raw() {
                joined.extend_from_slice(raw);
            }
            let Item::Token { token, raw } = item else {
                continue;
            };
            let mut out = Vec::new();
            token.encode(&ctx, &mut out).expect("re-encodes");
            assert_eq!(&out[..], &raw[..], "{} differs", token.name());
            ctx.observe(token);
        }
        assert_eq!(joined, input);
    }

    /// Decodes `input` whole, byte by byte, and cut at many offsets, in both
    /// row modes; returns the tokens of the whole run.
    fn check_stream(input: &[u8], ctx: &TokenContext) -> Vec<Token> {
        let whole = RowMode::default();
        let items = run_cuts(input, ctx.clone(), whole, &[]);
        check_exact(input, &items, ctx.clone());
        let one_by_one = run_cuts(input, ctx.clone(), whole, &every(input, 1));
        assert_eq!(format!("{items:?}"), format!("{one_by_one:?}"));
        for step in [2, 3, 5, 7, 13, 64, 512] {
            let cut = run_cuts(input, ctx.clone(), whole, &every(input, step));
            check_exact(input, &cut, ctx.clone());
            let pieces = run_cuts(input, ctx.clone(), RowMode::Pieces, &every(input, step));
            check_exact(input, &pieces, ctx.clone());
        }
        items
            .into_iter()
            .filter_map(|i| i.token().cloned())
            .collect()
    }

    fn fixture(dir: &str, name: &str) -> Vec<u8> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let local = root.join("fixtures").join(dir).join(name);
        let shared = root
            .join("../shared/fixtures/captures")
            .join(dir)
            .join(name);
        std::fs::read(&local)
            .or_else(|_| std::fs::read(&shared))
            .unwrap_or_else(|e| panic!("fixture {dir}/{name}: {e}"))
    }

    /// The server's token streams in a one-direction capture: payloads of
    /// type-0x04 packets joined, minus the PRELOGIN response (the first 0x04
    /// message when TLS-in-PRELOGIN follows it); bare TLS records skipped.
    fn token_streams(capture: &[u8]) -> Vec<u8> {
        let has_tls = capture.windows(2).any(|w| w == [0x12, 0x01]);
        let (mut out, mut pos, mut skipped_prelogin) = (Vec::new(), 0, !has_tls);
        let mut in_message = false;
        while pos + 5 <= capture.len() {
            let (ty, status) = (capture[pos], capture[pos + 1]);
            if ty == 0x17 && capture[pos + 1] == 0x03 {
                pos += 5 + u16::from_be_bytes([capture[pos + 3], capture[pos + 4]]) as usize;
                continue;
            }
            let len = u16::from_be_bytes([capture[pos + 2], capture[pos + 3]]) as usize;
            let payload = &capture[pos + 8..pos + len];
            pos += len;
            if ty != 0x04 {
                continue;
            }
            if !skipped_prelogin && !in_message && payload.first() == Some(&0x00) {
                skipped_prelogin = status & 0x01 != 0;
                continue;
            }
            in_message = status & 0x01 == 0;
            out.extend_from_slice(payload);
        }
        out
    }

    fn modern() -> TokenContext {
        TokenContext::default()
    }

    #[test]
    fn sql2022_login_and_select() {
        let stream = token_streams(&fixture(
            "sql2022-login-select",
            "packetbeat-0x5CE_mssql_login_and_select.stream0.node1.bin",
        ));
        let tokens = check_stream(&stream, &modern());
        let names: Vec<_> = tokens.iter().map(Token::name).collect();
        assert!(names.contains(&"LOGINACK"));
        assert!(names.contains(&"FEATUREEXTACK"));
        assert!(names.contains(&"SESSIONSTATE"));
        assert!(names.contains(&"ROW"));
        let Some(Token::Done(last)) = tokens.last() else {
            panic!("ends with {:?}", tokens.last())
        };
        assert!(last.ends_response());
        assert_eq!(last.row_count, 1);
    }

    #[test]
    fn more_sql_server_captures() {
        for name in [
            "packetbeat-0x5CE_mssql_login.stream0.node1.bin",
            "packetbeat-0x5CE_mssql_login_and_insert.stream0.node1.bin",
            "packetbeat-0x5CE_mssql_15x_login_and_select.stream0.node1.bin",
        ] {
            let stream = token_streams(&fixture("more-sql-server", name));
            let tokens = check_stream(&stream, &modern());
            assert!(
                tokens.iter().any(|t| matches!(t, Token::LoginAck(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn wireshark_rpc_responses() {
        // Stream 1 is the old TDS 7.1 client's connection (4-byte DONE counts).
        for (n, version) in [
            (0, TdsVersion::V7_4),
            (1, TdsVersion::V7_1),
            (4, TdsVersion::V7_4),
        ] {
            let name = format!("wireshark-wiki_ms-sql-tds-rpc-requests.stream{n}.node1.bin");
            let stream = token_streams(&fixture("wireshark-rpc", &name));
            assert!(!stream.is_empty());
            let ctx = TokenContext {
                tds_version: version,
                ..modern()
            };
            let tokens = check_stream(&stream, &ctx);
            assert!(matches!(tokens.last(), Some(Token::Done(_))), "{name}");
        }
    }

    #[test]
    fn pytds_login_response_7_3b() {
        let stream = token_streams(&fixture(
            "test-suite-bytes",
            "pytds_login_response_sql2008_10.0.5512.bin",
        ));
        let tokens = check_stream(&stream, &modern());
        let ack = tokens.iter().find_map(|t| match t {
            Token::LoginAck(a) => Some(a.tds_version),
            _ => None,
        });
        assert_eq!(ack, Some(TdsVersion::V7_3B));
        let tran = token_streams(&fixture(
            "test-suite-bytes",
            "pytds_use_db_response_begin_tran.bin",
        ));
        check_stream(&tran, &modern());
    }

    #[test]
    fn r2dbc_login_response_acks_column_encryption() {
        let stream = fixture(
            "test-suite-bytes",
            "r2dbc-mssql_login_response_tokens_sql2017_14.0.3038.bin",
        );
        check_stream(&stream, &modern());
        let items = run_cuts(&stream, modern(), RowMode::default(), &[]);
        let mut reader = TokenReader::new(modern());
        reader.handle_bytes(&stream);
        while reader.poll_item().unwrap().is_some() {}
        assert!(reader.context().column_encryption);
        assert!(items
            .iter()
            .any(|i| i.signal() == Some(Signal::PacketSize(8000))));
    }

    #[test]
    fn r2dbc_colmetadata_and_row_with_cek_table() {
        let stream = fixture("test-suite-bytes", "r2dbc-mssql_colmetadata_row_tokens.bin");
        let ctx = TokenContext {
            column_encryption: true,
            ..modern()
        };
        let tokens = check_stream(&stream, &ctx);
        assert_eq!(tokens.len(), 2);
        let Token::ColMetadata(meta) = &tokens[0] else {
            panic!()
        };
        assert_eq!(meta.columns.len(), 7);
        assert_eq!(meta.cek_table, Some(CekTable::default()));
    }

    #[test]
    fn r2dbc_token_vectors() {
        let text = String::from_utf8(fixture(
            "test-suite-bytes",
            "r2dbc-mssql_test_vectors.jsonl",
        ))
        .expect("utf-8");
        let mut decoded = 0;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let hex = v["hex"].as_str().unwrap_or_default();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            let method = v["method"].as_str().unwrap_or_default();
            let direction = v["direction"].as_str().unwrap_or_default();
            if !direction.starts_with("server->client token") {
                continue;
            }
            let whole_token = matches!(
                bytes.first(),
                Some(&(tok::DONE | tok::DONEPROC | tok::DONEINPROC | tok::ENVCHANGE | tok::INFO))
                    | Some(&(tok::ERROR | tok::LOGINACK | tok::FEATUREEXTACK | tok::TABNAME))
                    | Some(&tok::COLINFO)
            );
            if !whole_token || method == "canDecodeShouldReportDecodability" {
                continue;
            }
            check_stream(&bytes, &modern());
            decoded += 1;
        }
        assert!(decoded >= 15, "only {decoded} vectors decoded");
    }

    #[test]
    fn routing_vector_signal() {
        let bytes = [
            0xE3, 0x16, 0x00, 0x14, 0x13, 0x00, 0x00, 0x39, 0x30, 0x07, 0x00, b't', 0, b'e', 0,
            b's', 0, b't', 0, b'i', 0, b'n', 0, b'g', 0,
        ];
        let items = run_cuts(&bytes, modern(), RowMode::default(), &every(&bytes, 1));
        let Some(Signal::Routing(r)) = items[0].signal() else {
            panic!("no routing signal")
        };
        assert_eq!((r.protocol, r.port), (0, 12345));
        assert_eq!(r.server.to_string_lossy(), "testing");
    }

    fn plp_row(meta: &ColMetadata, value_len: usize) -> Vec<u8> {
        let mut values = vec![RawValue::Null; meta.columns.len()];
        values[0] = RawValue::Bytes(vec![1, 0, 0, 0]);
        values[3] = RawValue::Plp {
            length: PlpLength::Known(value_len as u64),
            data: vec![0x41; value_len],
            chunks: Vec::new(),
        };
        let mut out = Vec::new();
        Row::nbc(values).encode_with(meta, &mut out).unwrap();
        out
    }

    fn with_sample_metadata() -> (TokenContext, Vec<u8>) {
        let meta = sample_metadata();
        let mut head = Vec::new();
        meta.encode(&modern(), &mut head).unwrap();
        (modern(), head)
    }

    #[test]
    fn eight_mib_plp_in_4k_pieces_is_linear() {
        let (ctx, mut input) = with_sample_metadata();
        let meta = sample_metadata();
        input.extend_from_slice(&plp_row(&meta, 8 << 20));
        input.extend_from_slice(&[tok::DONE, 0x10, 0, 0xC1, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        for mode in [RowMode::default(), RowMode::Pieces] {
            let mut reader = TokenReader::new(ctx.clone());
            reader.set_row_mode(mode);
            let (mut max_buffered, mut rows, mut pieces) = (0, 0, 0);
            for chunk in input.chunks(4096) {
                reader.handle_bytes(chunk);
                while let Some(item) = reader.poll_item().unwrap() {
                    match item {
                        Item::Token {
                            token: Token::Row(_),
                            ..
                        } => rows += 1,
                        Item::RowPiece(_) => pieces += 1,
                        _ => {}
                    }
                }
                max_buffered = max_buffered.max(reader.buffered());
            }
            assert!(
                reader.work() <= 3 * input.len() as u64,
                "{mode:?}: {}",
                reader.work()
            );
            if mode == RowMode::Pieces {
                assert!(pieces > 2000, "{pieces} pieces");
                assert!(max_buffered <= 4096, "held {max_buffered} bytes");
            } else {
                assert_eq!(rows, 1);
            }
        }
    }

    #[test]
    fn whole_row_cap_is_enforced_early() {
        let (ctx, mut input) = with_sample_metadata();
        input.extend_from_slice(&plp_row(&sample_metadata(), 100_000));
        let mut reader = TokenReader::new(ctx);
        reader.set_row_mode(RowMode::Whole {
            max_row_bytes: 10_000,
        });
        reader.handle_bytes(&input[..input.len() / 2]);
        assert!(reader.poll_item().unwrap().is_some());
        assert!(matches!(
            reader.poll_item(),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(reader.poll_item().is_err(), "stays failed");
    }

    #[test]
    fn data_classification_after_its_ack() {
        let (mut ctx, mut input) = with_sample_metadata();
        ctx.data_classification = Some(2);
        let columns = sample_metadata().columns.len();
        let property = |label| tok::SensitivityProperty {
            label,
            information_type: 1,
            rank: Some(10),
        };
        let mut properties = vec![Vec::new(); columns];
        properties[0] = vec![property(0), property(1)];
        properties[columns - 1] = vec![property(1)];
        let token = Token::DataClassification(DataClassification {
            labels: vec![("Public".into(), "a".into()), ("Secret".into(), "b".into())],
            information_types: vec![("Name".into(), "c".into()), ("Health".into(), "d".into())],
            rank: Some(20),
            columns: properties,
        });
        let mut after = ctx.clone();
        after.columns = Some(Arc::new(sample_metadata()));
        token.encode(&after, &mut input).unwrap();
        let tokens = check_stream(&input, &ctx);
        assert!(tokens[1] == token);
        let work = {
            let mut reader = TokenReader::new(ctx.clone());
            for b in &input {
                reader.handle_bytes(&[*b]);
                while reader.poll_item().unwrap().is_some() {}
            }
            reader.work()
        };
        assert!(
            work <= 8 * input.len() as u64,
            "work {work} for {}",
            input.len()
        );

        ctx.data_classification = None;
        let mut reader = TokenReader::new(ctx);
        reader.handle_bytes(&input);
        assert!(reader.poll_item().unwrap().is_some());
        assert!(reader.poll_item().is_err(), "refused without the ack");
    }

    #[test]
    fn large_col_metadata_one_byte_at_a_time_is_linear() {
        let mut meta = sample_metadata();
        let columns = meta.columns.clone();
        for _ in 0..100 {
            meta.columns.extend(columns.iter().cloned());
        }
        let mut input = Vec::new();
        meta.encode(&modern(), &mut input).unwrap();
        let mut reader = TokenReader::new(modern());
        let mut items = 0;
        for b in &input {
            reader.handle_bytes(&[*b]);
            while reader.poll_item().unwrap().is_some() {
                items += 1;
            }
        }
        assert_eq!(items, 1);
        assert!(
            reader.work() <= 16 * input.len() as u64,
            "work {}",
            reader.work()
        );
    }

    #[test]
    fn whole_row_cap_counts_all_values() {
        let (ctx, mut input) = with_sample_metadata();
        input.extend_from_slice(&plp_row(&sample_metadata(), 1000));
        let mut reader = TokenReader::new(ctx);
        reader.set_row_mode(RowMode::Whole {
            max_row_bytes: 1010,
        });
        reader.handle_bytes(&input);
        assert!(reader.poll_item().unwrap().is_some());
        assert!(matches!(
            reader.poll_item(),
            Err(DecodeError::TooLarge {
                structure: "NBCROW",
                ..
            })
        ));
    }

    #[test]
    fn pieces_end_with_row_end() {
        let (ctx, mut input) = with_sample_metadata();
        let row = plp_row(&sample_metadata(), 10);
        input.extend_from_slice(&row);
        let items = run_cuts(&input, ctx, RowMode::Pieces, &[input.len() - 5]);
        let kinds: Vec<_> = items.iter().map(|i| format!("{i:?}")).collect();
        assert_eq!(
            kinds[1..],
            ["RowPiece(28 bytes)", "RowPiece(5 bytes)", "RowEnd"]
        );
        assert_eq!(row.len(), 33);
    }

    #[test]
    fn unknown_token_and_row_without_metadata_fail() {
        let mut reader = TokenReader::new(modern());
        reader.handle_bytes(&[0x42]);
        assert_eq!(
            reader.poll_item().unwrap_err(),
            DecodeError::UnknownToken(0x42)
        );
        let mut reader = TokenReader::new(modern());
        reader.handle_bytes(&[tok::ROW, 1]);
        assert!(reader.poll_item().is_err());
    }

    #[test]
    fn attention_ack_signal() {
        let bytes = [tok::DONE, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let items = run_cuts(&bytes, modern(), RowMode::default(), &[]);
        assert_eq!(
            items[0].signal(),
            Some(Signal::Done {
                attention: true,
                end_of_response: true
            })
        );
    }

    fn arb_value(framing: Framing) -> BoxedStrategy<RawValue> {
        let bytes = |max| proptest::collection::vec(any::<u8>(), 1..max);
        match framing {
            Framing::Fixed(n) => proptest::collection::vec(any::<u8>(), n as usize)
                .prop_map(RawValue::Bytes)
                .boxed(),
            Framing::Plp => (proptest::collection::vec(1u32..40, 0..4), any::<bool>())
                .prop_map(|(chunks, known)| {
                    let total: u32 = chunks.iter().sum();
                    RawValue::Plp {
                        length: if known {
                            PlpLength::Known(u64::from(total))
                        } else {
                            PlpLength::Unknown
                        },
                        data: vec![7; total as usize],
                        chunks,
                    }
                })
                .boxed(),
            Framing::Text => (bytes(40), any::<[u8; 8]>(), bytes(40))
                .prop_map(|(text_ptr, timestamp, data)| RawValue::Text {
                    text_ptr,
                    timestamp,
                    data,
                })
                .boxed(),
            _ => prop_oneof![Just(RawValue::Null), bytes(60).prop_map(RawValue::Bytes)].boxed(),
        }
    }

    fn arb_row() -> impl Strategy<Value = Row> {
        let values: Vec<_> = sample_metadata()
            .framings()
            .into_iter()
            .map(arb_value)
            .collect();
        (values, any::<bool>()).prop_map(|(values, nbc)| match nbc {
            true => Row::nbc(values),
            false => Row {
                kind: RowKind::Row,
                null_bitmap: Vec::new(),
                values,
            },
        })
    }

    fn arb_token() -> impl Strategy<Value = Token> {
        let name = "[a-zA-Z0-9 ]{0,20}".prop_map(|s| UcsString::from(s.as_str()));
        prop_oneof![
            (0u8..3, any::<u16>(), any::<u16>(), any::<u64>()).prop_map(|(k, s, c, n)| {
                let kind = [tok::DONE, tok::DONEPROC, tok::DONEINPROC][k as usize];
                Token::Done(Done {
                    kind: tok::DoneKind::from_type(kind).unwrap(),
                    status: tok::DoneStatus(s),
                    cur_cmd: c,
                    row_count: n,
                })
            }),
            (1u8..7, name.clone(), name.clone()).prop_map(|(t, new, old)| {
                Token::EnvChange(EnvChange::Text {
                    env_type: t,
                    new,
                    old,
                })
            }),
            (any::<u32>(), any::<u8>(), name.clone(), name.clone()).prop_map(|(n, c, m, s)| {
                Token::InfoError(tok::InfoError {
                    is_error: c > 10,
                    number: n,
                    state: 1,
                    class: c,
                    message: m,
                    server: s,
                    procedure: UcsString::default(),
                    line: 3,
                })
            }),
            any::<i32>().prop_map(|v| Token::ReturnStatus(tok::ReturnStatus(v))),
            (8u8..13, proptest::collection::vec(any::<u8>(), 0..9)).prop_map(|(t, new)| {
                Token::EnvChange(EnvChange::Bytes {
                    env_type: t,
                    new,
                    old: Vec::new(),
                })
            }),
            (any::<u16>(), name.clone()).prop_map(|(port, server)| {
                Token::EnvChange(EnvChange::Routing {
                    routing: Routing {
                        protocol: 0,
                        port,
                        server,
                    },
                    old: Some(Vec::new()),
                })
            }),
            proptest::collection::vec(
                (
                    (0u8..0xFF).prop_filter("changes later framing", |f| {
                        ![
                            tok::feature_ext_ack::FEATURE_COLUMNENCRYPTION,
                            tok::feature_ext_ack::FEATURE_DATACLASSIFICATION,
                        ]
                        .contains(f)
                    }),
                    proptest::collection::vec(any::<u8>(), 0..9),
                ),
                0..4
            )
            .prop_map(|acks| Token::FeatureExtAck(FeatureExtAck(
                acks.into_iter()
                    .map(|(feature, data)| tok::FeatureAck { feature, data })
                    .collect(),
            ))),
            (
                any::<u32>(),
                proptest::collection::vec(
                    (
                        any::<u8>(),
                        any::<bool>(),
                        proptest::collection::vec(any::<u8>(), 0..300)
                    ),
                    0..3
                )
            )
                .prop_map(|(seq_no, entries)| Token::SessionState(tok::SessionState {
                    seq_no,
                    status: 1,
                    entries: entries
                        .into_iter()
                        .map(|(state_id, long, value)| tok::StateEntry {
                            state_id,
                            long_len: long || value.len() >= 0xFF,
                            value,
                        })
                        .collect(),
                })),
            (name.clone(), any::<[u8; 4]>()).prop_map(|(prog_name, prog_version)| {
                Token::LoginAck(tok::LoginAck {
                    interface: 1,
                    tds_version: TdsVersion::V7_4,
                    prog_name,
                    prog_version,
                })
            }),
            proptest::collection::vec(proptest::collection::vec(name.clone(), 1..4), 0..3)
                .prop_map(|t| Token::TabName(tok::TabName(t))),
            (any::<u16>(), name.clone(), arb_value(Framing::ByteLen)).prop_map(
                |(ordinal, n, v)| {
                    let mut r = Reader::new(&[0x26, 4], "t");
                    let type_info = tok::TypeInfoRaw::decode(&mut r).unwrap();
                    let value = match v {
                        RawValue::Bytes(_) => RawValue::Bytes(vec![1, 2, 3, 4]),
                        other => other,
                    };
                    Token::ReturnValue(Box::new(tok::ReturnValue {
                        ordinal,
                        name: n,
                        status: 1,
                        user_type: 0,
                        flags: 0,
                        type_info,
                        crypto: None,
                        value,
                    }))
                }
            ),
            Just(Token::ColMetadata(Arc::new(ColMetadata::no_metadata()))),
            Just(Token::ColMetadata(Arc::new(sample_metadata()))),
            proptest::collection::vec(any::<u16>(), 0..8).prop_map(|v| Token::Order(tok::Order(v))),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|v| Token::Sspi(tok::Sspi(v))),
            arb_row().prop_map(Token::Row),
        ]
    }

    proptest! {
        #[test]
        fn generated_tokens_round_trip_through_the_reader(
            tokens in proptest::collection::vec(arb_token(), 1..12),
            step in 1usize..50,
        ) {
            let mut ctx = modern();
            ctx.columns = Some(Arc::new(sample_metadata()));
            let mut input = Vec::new();
            for t in &tokens {
                t.encode(&ctx, &mut input).unwrap();
            }
            let items = run_cuts(&input, ctx.clone(), RowMode::default(), &every(&input, step));
            check_exact(&input, &items, ctx.clone());
            let back: Vec<_> = items.iter().filter_map(|i| i.token().cloned()).collect();
            prop_assert!(back == tokens);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            step in 1usize..20,
            pieces in any::<bool>(),
        ) {
            let (mut ctx, head) = with_sample_metadata();
            ctx.column_encryption = step % 2 == 0;
            ctx.data_classification = Some(2);
            let mut reader = TokenReader::new(ctx);
            if pieces {
                reader.set_row_mode(RowMode::Pieces);
            }
            let mut input = if step % 3 == 0 { head } else { Vec::new() };
            input.extend_from_slice(&bytes);
            let mut out = 0usize;
            for chunk in input.chunks(step) {
                reader.handle_bytes(chunk);
                while let Ok(Some(item)) = reader.poll_item() {
                    out += item.raw().map_or(0, |r| r.len());
                }
            }
            prop_assert!(out <= input.len());
            prop_assert!(reader.work() <= 8 * input.len() as u64 + 64);
        }
    }
}
