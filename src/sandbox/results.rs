//! Turning what the engine produces into the token stream of a TDS response
//! ([MS-TDS] 2.2.4 token stream, 2.2.7 tokens), packet payload by packet
//! payload, while the statement still runs.
//!
//! [`TokenWriter`] runs on the engine's blocking thread: it encodes tokens
//! with the codec's encoders into a buffer and hands every full packet
//! payload to the connection task through a bounded channel, so a large
//! result is never held in memory and the client sees rows as they come. The
//! connection task adds the packet headers (see `server`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::debug;

use crate::sandbox::engine::errors::SqlError;
use crate::sandbox::engine::session::{
    ColumnDesc, DoneInfo, EnvChange as EngineEnvChange, ResultSink,
    ReturnValue as EngineReturnValue,
};
use crate::sandbox::engine::types::{Len, SqlType, Time, Value};
use crate::sandbox::login;
use crate::tds::packet::HEADER_LEN;
use crate::tds::token::env_change::{
    ENV_BEGINTRAN, ENV_COMMITTRAN, ENV_DATABASE, ENV_ROLLBACKTRAN,
};
use crate::tds::token::return_value::STATUS_OUTPUT_PARAM;
use crate::tds::token::{
    ColMetadata, ColumnData, Done, DoneKind, DoneStatus, EnvChange as TdsEnvChange, RawValue,
    ReturnStatus, ReturnValue as TdsReturnValue, Row, TdsVersion, Token, TokenContext, TypeInfoRaw,
    UcsString, NBCROW, ROW,
};
use crate::tds::types::collation::encode_cp1252;
use crate::tds::types::datetime::{self as wire, Civil};
use crate::tds::types::value::{encode_value, SqlValue};
use crate::tds::types::{Collation, DecimalType, FixedType, NullableType, TypeInfo, VarLenType};
use crate::tds::{EncodeError, Reader};

/// Packet payloads buffered between the engine thread and the socket. Small:
/// back-pressure should reach the engine quickly when the client reads slowly.
pub const OUTGOING_QUEUE: usize = 16;

/// A piece of a response on its way to the connection task.
#[derive(Debug)]
pub enum Outgoing {
    /// Exactly one full packet payload; more follows.
    Payload(Bytes),
    /// The rest of the response (possibly empty); the packet carrying it
    /// ends the message.
    Last(Bytes),
}

/// Why token writing stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WriteStop {
    /// The client sent an attention; the rest of the response is dropped.
    #[error("the request was cancelled by an attention")]
    Cancelled,
    /// The connection task is gone (client disconnected).
    #[error("the connection closed while the response was written")]
    Disconnected,
    #[error("a token could not be encoded")]
    Encode(#[from] EncodeError),
}

/// Encodes tokens of one response and streams them out as packet payloads.
pub struct TokenWriter {
    ctx: TokenContext,
    buf: Vec<u8>,
    payload_len: usize,
    tx: mpsc::Sender<Outgoing>,
    cancel: Arc<AtomicBool>,
}

impl TokenWriter {
    /// A writer for packets of `packet_size` bytes (header included).
    pub fn new(
        ctx: TokenContext,
        packet_size: usize,
        tx: mpsc::Sender<Outgoing>,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        let payload_len = packet_size.saturating_sub(HEADER_LEN).max(1);
        TokenWriter {
            ctx,
            buf: Vec::with_capacity(payload_len * 2),
            payload_len,
            tx,
            cancel,
        }
    }

    /// Whether the client asked to cancel the running request.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The negotiated TDS version and the current result set's metadata.
    pub fn context(&self) -> &TokenContext {
        &self.ctx
    }

    /// Appends one token; stops when the request was cancelled.
    pub fn token(&mut self, token: &Token) -> Result<(), WriteStop> {
        if self.is_cancelled() {
            return Err(WriteStop::Cancelled);
        }
        token.encode(&self.ctx, &mut self.buf)?;
        self.ctx.observe(token);
        self.send_full_payloads()
    }

    /// Appends bytes already encoded as tokens (rows encoded against the
    /// current metadata by the caller, for speed).
    pub fn encoded(&mut self, bytes: &[u8]) -> Result<(), WriteStop> {
        if self.is_cancelled() {
            return Err(WriteStop::Cancelled);
        }
        self.buf.extend_from_slice(bytes);
        self.send_full_payloads()
    }

    /// A DONE-family token.
    pub fn done(
        &mut self,
        kind: DoneKind,
        status: u16,
        cur_cmd: u16,
        rows: u64,
    ) -> Result<(), WriteStop> {
        let done = Done {
            kind,
            status: DoneStatus(status),
            cur_cmd,
            row_count: rows,
        };
        self.token(&Token::Done(done))
    }

    fn send_full_payloads(&mut self) -> Result<(), WriteStop> {
        if self.buf.len() < self.payload_len {
            return Ok(());
        }
        let mut rest = std::mem::take(&mut self.buf);
        let mut start = 0;
        while rest.len() - start >= self.payload_len {
            let end = start + self.payload_len;
            let payload = Bytes::copy_from_slice(&rest[start..end]);
            self.tx
                .blocking_send(Outgoing::Payload(payload))
                .map_err(|_| WriteStop::Disconnected)?;
            start = end;
        }
        rest.drain(..start);
        self.buf = rest;
        Ok(())
    }

    /// Ends the response. After a cancel, what is buffered is dropped: the
    /// connection task closes the response with DONE(ATTN).
    pub fn finish(mut self) -> Result<(), WriteStop> {
        if self.is_cancelled() {
            self.buf.clear();
        }
        let last = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Outgoing::Last(last))
            .map_err(|_| WriteStop::Disconnected)
    }
}

/// Collation of every character column: SQL_Latin1_General_CP1_CI_AS.
pub fn default_collation() -> Collation {
    let c = login::DEFAULT_COLLATION;
    Collation {
        info: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        sort_id: c[4],
    }
}

/// COLMETADATA flags (2.2.7.4): fNullable.
const FLAG_NULLABLE: u16 = 0x0001;
/// usUpdateable = 2 ("unknown"), what SQL Server 2022 sends for SELECT
/// columns in the captures.
const FLAG_UPDATEABLE_UNKNOWN: u16 = 0x0008;
/// fIdentity.
const FLAG_IDENTITY: u16 = 0x0010;

/// TYPE_INFO max length of `(max)` types: the value travels as PLP.
const MAX_LEN_PLP: u16 = 0xFFFF;

/// DONE CurCmd of a SELECT (undocumented; SQL Server sends 0xC1, captures).
const CUR_CMD_SELECT: u16 = 0x00C1;

/// The TYPE_INFO SQL Server sends for a column of type `ty`. NOT NULL
/// integer, bit, float, money and datetime columns use the fixed-length
/// types (an `int NOT NULL` column is INT4 0x38, as in the r2dbc-mssql
/// vectors); nullable ones the N types.
pub fn type_info(ty: &SqlType, nullable: bool) -> TypeInfo {
    if let Some(fixed) = fixed_type(ty).filter(|_| !nullable) {
        return TypeInfo::Fixed(fixed);
    }
    match *ty {
        SqlType::Decimal { precision, scale } => decimal(DecimalType::DecimalN, precision, scale),
        SqlType::Numeric { precision, scale } => decimal(DecimalType::NumericN, precision, scale),
        SqlType::Date => TypeInfo::Date,
        SqlType::Time(scale) => TypeInfo::Time { scale },
        SqlType::DateTime2(scale) => TypeInfo::DateTime2 { scale },
        SqlType::DateTimeOffset(scale) => TypeInfo::DateTimeOffset { scale },
        SqlType::UniqueIdentifier => nullable_type(NullableType::Guid, 16),
        _ => var_len_type(ty).unwrap_or_else(|| nullable_of(ty)),
    }
}

fn fixed_type(ty: &SqlType) -> Option<FixedType> {
    Some(match ty {
        SqlType::TinyInt => FixedType::Int1,
        SqlType::SmallInt => FixedType::Int2,
        SqlType::Int => FixedType::Int4,
        SqlType::BigInt => FixedType::Int8,
        SqlType::Bit => FixedType::Bit,
        SqlType::Real => FixedType::Flt4,
        SqlType::Float { mantissa_bits } if *mantissa_bits <= 24 => FixedType::Flt4,
        SqlType::Float { .. } => FixedType::Flt8,
        SqlType::Money => FixedType::Money,
        SqlType::SmallMoney => FixedType::Money4,
        SqlType::DateTime => FixedType::DateTime,
        SqlType::SmallDateTime => FixedType::DateTim4,
        _ => return None,
    })
}

/// The N type of a fixed-length type (INTN, BITN, FLTN, MONEYN, DATETIMN).
fn nullable_of(ty: &SqlType) -> TypeInfo {
    let fixed = fixed_type(ty).unwrap_or(FixedType::Int4);
    let ty = match fixed {
        FixedType::Bit => NullableType::BitN,
        FixedType::Flt4 | FixedType::Flt8 => NullableType::FltN,
        FixedType::Money | FixedType::Money4 => NullableType::MoneyN,
        FixedType::DateTime | FixedType::DateTim4 => NullableType::DateTimeN,
        _ => NullableType::IntN,
    };
    nullable_type(ty, fixed.size() as u8)
}

fn nullable_type(ty: NullableType, len: u8) -> TypeInfo {
    TypeInfo::Nullable { ty, len }
}

fn decimal(ty: DecimalType, precision: u8, scale: u8) -> TypeInfo {
    TypeInfo::Decimal {
        ty,
        len: decimal_len(precision),
        precision,
        scale,
    }
}

/// Bytes of a DECIMALN value for a precision: sign byte plus 4, 8, 12 or 16
/// bytes of magnitude (2.2.5.5.1.6).
fn decimal_len(precision: u8) -> u8 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

fn var_len_type(ty: &SqlType) -> Option<TypeInfo> {
    let (vt, max_len) = match *ty {
        SqlType::Char(n) => (VarLenType::BigChar, clamp_len(n)),
        SqlType::VarChar(len) => (VarLenType::BigVarChar, max_len(len, 1)),
        SqlType::NChar(n) => (VarLenType::NChar, clamp_len(n.saturating_mul(2))),
        SqlType::NVarChar(len) => (VarLenType::NVarChar, max_len(len, 2)),
        SqlType::Binary(n) => (VarLenType::BigBinary, clamp_len(n)),
        SqlType::VarBinary(len) => (VarLenType::BigVarBinary, max_len(len, 1)),
        _ => return None,
    };
    let collation = vt.has_collation().then(default_collation);
    Some(TypeInfo::VarLen {
        ty: vt,
        max_len,
        collation,
    })
}

fn max_len(len: Len, bytes_per_char: u32) -> u16 {
    match len {
        Len::N(n) => clamp_len(n.saturating_mul(bytes_per_char)),
        Len::Max => MAX_LEN_PLP,
    }
}

/// Lengths above 8000 bytes exist only as `(max)`; the engine never
/// declares them, the clamp only keeps the cast total.
fn clamp_len(n: u32) -> u16 {
    n.min(8000) as u16
}

/// COLMETADATA flags for a column.
fn column_flags(column: &ColumnDesc) -> u16 {
    if column.identity {
        return FLAG_IDENTITY;
    }
    let nullable = if column.nullable { FLAG_NULLABLE } else { 0 };
    FLAG_UPDATEABLE_UNKNOWN | nullable
}

/// A codec TYPE_INFO in the raw form the token structs carry.
fn raw_type_info(ti: &TypeInfo) -> Result<TypeInfoRaw, EncodeError> {
    let mut bytes = Vec::new();
    ti.encode(&mut bytes)?;
    TypeInfoRaw::decode(&mut Reader::new(&bytes, "TYPE_INFO")).map_err(|_| {
        EncodeError::Inconsistent {
            structure: "TYPE_INFO",
            reason: "type info does not decode back",
        }
    })
}

/// Converts an engine value to the codec's typed value for a column of
/// type `ty`. `None` when the engine produced a value of another kind.
pub fn sql_value(ty: &SqlType, v: &Value) -> Option<SqlValue> {
    if let Value::Null = v {
        return Some(SqlValue::Null);
    }
    match ty {
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt => integer(ty, v),
        SqlType::Bit => bit(v),
        SqlType::Real | SqlType::Float { .. } => float(ty, v),
        SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => {
            decimal_value(*precision, *scale, v)
        }
        SqlType::Money | SqlType::SmallMoney => money(ty, v),
        SqlType::Char(_) | SqlType::VarChar(_) | SqlType::NChar(_) | SqlType::NVarChar(_) => {
            text(ty, v)
        }
        SqlType::Binary(_) | SqlType::VarBinary(_) => binary(ty, v),
        _ => temporal(ty, v),
    }
}

fn integer(ty: &SqlType, v: &Value) -> Option<SqlValue> {
    let n = match v {
        Value::Int(n) => *n,
        Value::Bool(b) => i64::from(*b),
        _ => return None,
    };
    Some(match ty {
        SqlType::TinyInt => SqlValue::TinyInt(u8::try_from(n).ok()?),
        SqlType::SmallInt => SqlValue::SmallInt(i16::try_from(n).ok()?),
        SqlType::Int => SqlValue::Int(i32::try_from(n).ok()?),
        _ => SqlValue::BigInt(n),
    })
}

fn bit(v: &Value) -> Option<SqlValue> {
    match v {
        Value::Bool(b) => Some(SqlValue::Bit(*b)),
        Value::Int(n) => Some(SqlValue::Bit(*n != 0)),
        _ => None,
    }
}

fn float(ty: &SqlType, v: &Value) -> Option<SqlValue> {
    let f = match v {
        Value::Float(f) => *f,
        Value::Int(n) => *n as f64,
        Value::Decimal { value, scale } => *value as f64 / 10f64.powi(i32::from(*scale)),
        _ => return None,
    };
    Some(match ty {
        SqlType::Real => SqlValue::Real(f as f32),
        SqlType::Float { mantissa_bits } if *mantissa_bits <= 24 => SqlValue::Real(f as f32),
        _ => SqlValue::Float(f),
    })
}

/// `v` as an integer count of 10^-scale units, rounded half away from zero.
fn scaled(v: &Value, scale: u8) -> Option<i128> {
    match v {
        Value::Int(n) => i128::from(*n).checked_mul(pow10(scale)),
        Value::Bool(b) => Some(i128::from(*b) * pow10(scale)),
        Value::Decimal { value, scale: from } => Some(rescale(*value, *from, scale)),
        Value::Float(f) => Some((f * 10f64.powi(i32::from(scale))).round() as i128),
        _ => None,
    }
}

fn rescale(value: i128, from: u8, to: u8) -> i128 {
    if to >= from {
        return value.saturating_mul(pow10(to - from));
    }
    let div = pow10(from - to);
    let (q, r) = (value / div, value % div);
    if r.abs() * 2 >= div {
        return q + value.signum();
    }
    q
}

fn pow10(n: u8) -> i128 {
    10i128.checked_pow(u32::from(n)).unwrap_or(i128::MAX)
}

fn decimal_value(precision: u8, scale: u8, v: &Value) -> Option<SqlValue> {
    Some(SqlValue::Decimal {
        value: scaled(v, scale)?,
        precision,
        scale,
    })
}

/// money and smallmoney count units of 1/10000 (2.2.5.5.1.4).
fn money(ty: &SqlType, v: &Value) -> Option<SqlValue> {
    let units = scaled(v, 4)?;
    Some(match ty {
        SqlType::SmallMoney => SqlValue::SmallMoney(i32::try_from(units).ok()?),
        _ => SqlValue::Money(i64::try_from(units).ok()?),
    })
}

fn text(ty: &SqlType, v: &Value) -> Option<SqlValue> {
    let Value::String(s) = v else {
        return None;
    };
    let collation = Some(default_collation());
    Some(match ty {
        SqlType::NChar(_) => SqlValue::NChar(s.clone()),
        SqlType::NVarChar(_) => SqlValue::NVarChar(s.clone()),
        SqlType::Char(_) => SqlValue::Char {
            bytes: code_page_1252(s),
            collation,
        },
        _ => SqlValue::VarChar {
            bytes: code_page_1252(s),
            collation,
        },
    })
}

/// Text for a char/varchar column in the collation's code page 1252; a
/// character without a 1252 byte becomes `?`, as SQL Server converts it.
fn code_page_1252(s: &str) -> Vec<u8> {
    if let Some(bytes) = encode_cp1252(s) {
        return bytes;
    }
    let mut buf = [0u8; 4];
    s.chars()
        .map(|c| encode_cp1252(c.encode_utf8(&mut buf)).map_or(b'?', |b| b[0]))
        .collect()
}

fn binary(ty: &SqlType, v: &Value) -> Option<SqlValue> {
    let Value::Bytes(b) = v else {
        return None;
    };
    Some(match ty {
        SqlType::Binary(_) => SqlValue::Binary(b.clone()),
        _ => SqlValue::VarBinary(b.clone()),
    })
}

fn temporal(ty: &SqlType, v: &Value) -> Option<SqlValue> {
    match (ty, v) {
        (SqlType::Date, Value::Date(d)) => Some(SqlValue::Date(wire::Date::from_ymd(
            d.year, d.month, d.day,
        )?)),
        (SqlType::Date, Value::DateTime2(dt)) => temporal(ty, &Value::Date(dt.date)),
        (SqlType::Time(scale), Value::Time(t)) => Some(SqlValue::Time(wire_time(t, *scale)?)),
        (SqlType::DateTime2(scale), v) => Some(SqlValue::DateTime2(wire::DateTime2::from_civil(
            &civil(v)?,
            *scale,
        )?)),
        (SqlType::DateTime, v) => Some(SqlValue::DateTime(wire::DateTime::from_civil(&civil(v)?)?)),
        (SqlType::SmallDateTime, v) => Some(SqlValue::SmallDateTime(
            wire::SmallDateTime::from_civil(&civil(v)?)?,
        )),
        (
            SqlType::DateTimeOffset(scale),
            Value::DateTimeOffset {
                datetime,
                offset_minutes,
            },
        ) => {
            let c = civil(&Value::DateTime2(*datetime))?;
            let dto = wire::DateTimeOffset::from_local_civil(&c, *offset_minutes, *scale)?;
            Some(SqlValue::DateTimeOffset(dto))
        }
        (SqlType::UniqueIdentifier, Value::Guid(g)) => Some(SqlValue::Guid(guid_wire_order(g))),
        _ => None,
    }
}

fn wire_time(t: &Time, scale: u8) -> Option<wire::Time> {
    wire::Time::from_hms_nanos(t.hour, t.minute, t.second, t.nanos, scale)
}

fn civil(v: &Value) -> Option<Civil> {
    let (date, time) = match v {
        Value::DateTime2(dt) => (dt.date, dt.time),
        Value::Date(d) => (*d, MIDNIGHT),
        _ => return None,
    };
    Some(Civil {
        year: date.year,
        month: date.month,
        day: date.day,
        hour: time.hour,
        minute: time.minute,
        second: time.second,
        nanosecond: time.nanos,
    })
}

const MIDNIGHT: Time = Time {
    hour: 0,
    minute: 0,
    second: 0,
    nanos: 0,
};

/// RFC 4122 order to the wire order: the first three groups little-endian
/// (2.2.5.5.1.7).
fn guid_wire_order(g: &[u8; 16]) -> [u8; 16] {
    let mut w = *g;
    w[0..4].reverse();
    w[4..6].reverse();
    w[6..8].reverse();
    w
}

/// What an RPC returns after its statements (2.2.7.18, 2.2.7.19): SQL Server
/// sends RETURNSTATUS, then the RETURNVALUEs, then DONEPROC.
#[derive(Default)]
struct RpcTail {
    status: Option<i32>,
    values: Vec<(u16, Token)>,
    error: bool,
    in_transaction: bool,
}

/// One result column as the sink encodes it.
struct Column {
    ty: SqlType,
    type_info: TypeInfo,
}

/// The engine's [`ResultSink`], writing tokens through a [`TokenWriter`].
///
/// DONE tokens are held back by one step: only when the next token (or the
/// end of the request) comes is it known whether MORE must be set. The
/// engine's sink methods cannot fail, so the first write failure (cancel,
/// disconnect) is remembered and everything after it is dropped.
pub struct TdsSink {
    out: TokenWriter,
    columns: Vec<Column>,
    pending_done: Option<Done>,
    in_result_set: bool,
    row_buf: Vec<u8>,
    stopped: Option<WriteStop>,
    failed: bool,
    rpc: Option<RpcTail>,
    produced: bool,
}

impl TdsSink {
    pub fn new(out: TokenWriter) -> Self {
        TdsSink {
            out,
            columns: Vec::new(),
            pending_done: None,
            in_result_set: false,
            row_buf: Vec::new(),
            stopped: None,
            failed: false,
            rpc: None,
            produced: false,
        }
    }

    /// Starts one RPC call: statement DONEs become DONEINPROC and the
    /// procedure's status and output values wait for [`TdsSink::end_rpc`].
    pub fn begin_rpc(&mut self) {
        self.rpc = Some(RpcTail::default());
    }

    /// Ends an RPC call with RETURNSTATUS, RETURNVALUEs and DONEPROC.
    pub fn end_rpc(&mut self) {
        let Some(mut tail) = self.rpc.take() else {
            return;
        };
        if let Some(status) = tail.status {
            self.write(&Token::ReturnStatus(ReturnStatus(status)));
        }
        tail.values.sort_by_key(|(ordinal, _)| *ordinal);
        for (_, token) in &tail.values {
            self.write(token);
        }
        let mut status = 0;
        if tail.error {
            status |= DoneStatus::ERROR;
        }
        if tail.in_transaction {
            status |= DoneStatus::INXACT;
        }
        self.hold_done(Done {
            kind: DoneKind::DoneProc,
            status: DoneStatus(status),
            cur_cmd: 0,
            row_count: 0,
        });
    }

    /// Whether the client cancelled or left; the engine should stop.
    pub fn is_cancelled(&self) -> bool {
        self.stopped.is_some() || self.out.is_cancelled()
    }

    /// Whether an ERROR token went out in this response.
    pub fn had_error(&self) -> bool {
        self.failed
    }

    /// Writes a token after releasing a held-back DONE with MORE set.
    pub fn write(&mut self, token: &Token) {
        if self.stopped.is_some() {
            return;
        }
        if let Some(mut done) = self.pending_done.take() {
            done.status.0 |= DoneStatus::MORE;
            self.record(|out| out.token(&Token::Done(done)));
        }
        self.record(|out| out.token(token));
    }

    fn record(&mut self, f: impl FnOnce(&mut TokenWriter) -> Result<(), WriteStop>) {
        if self.stopped.is_some() {
            return;
        }
        self.produced = true;
        if let Err(stop) = f(&mut self.out) {
            debug!(reason = %stop, "response stopped");
            self.stopped = Some(stop);
        }
    }

    /// Holds `done` back until it is known whether more follows.
    pub fn hold_done(&mut self, done: Done) {
        if let Some(mut previous) = self.pending_done.take() {
            previous.status.0 |= DoneStatus::MORE;
            self.record(|out| out.token(&Token::Done(previous)));
        }
        self.pending_done = Some(done);
    }

    /// An ERROR token with SQL Server's fields.
    pub fn sql_error(&mut self, number: u32, state: u8, class: u8, text: &str, line: u32) {
        let mut token = login::error_token(number, state, class, text);
        if let Token::InfoError(e) = &mut token {
            e.is_error = class > 10;
            e.line = line;
        }
        self.failed |= class > 10;
        if let Some(tail) = self.rpc.as_mut() {
            tail.error |= class > 10;
        }
        self.write(&token);
    }

    /// Ends the response: `final_done` (after the held-back DONE, which
    /// then gets MORE) or else the held-back DONE is the last token.
    pub fn finish(mut self, final_done: Option<Done>) {
        let last = final_done.or_else(|| self.pending_done.take());
        match last {
            Some(done) => self.write(&Token::Done(done)),
            // An empty batch is still answered with a DONE.
            None if !self.produced => self.write(&Token::Done(Done {
                kind: DoneKind::Done,
                status: DoneStatus::default(),
                cur_cmd: 0,
                row_count: 0,
            })),
            None => {}
        }
        if let Err(err) = self.out.finish() {
            debug!(reason = %err, "response not finished");
        }
    }

    fn start_result_set(&mut self, columns: &[ColumnDesc]) -> Result<Token, EncodeError> {
        self.columns.clear();
        let mut data = Vec::with_capacity(columns.len());
        for column in columns {
            let type_info = type_info(&column.ty, column.nullable || column_is_outer(column));
            data.push(ColumnData {
                user_type: 0,
                flags: column_flags(column),
                type_info: raw_type_info(&type_info)?,
                table_name: None,
                crypto: None,
                name: UcsString::from(column.name.as_str()),
            });
            self.columns.push(Column {
                ty: column.ty,
                type_info,
            });
        }
        let meta = ColMetadata {
            no_metadata: false,
            cek_table: None,
            columns: data,
        };
        Ok(Token::ColMetadata(Arc::new(meta)))
    }

    /// ROW, or NBCROW when a value is NULL (SQL Server's choice for rows
    /// with NULLs, TDS 7.3B and later). The token byte and null bitmap are
    /// written here; every value goes through the codec's value encoder.
    fn encode_row(&mut self, values: &[Value]) -> Result<(), EncodeError> {
        let mut buf = std::mem::take(&mut self.row_buf);
        buf.clear();
        let nbc = values.iter().any(|v| matches!(v, Value::Null)) && self.nbc_allowed();
        buf.push(if nbc { NBCROW } else { ROW });
        if nbc {
            push_null_bitmap(values, &mut buf);
        }
        let result = self.encode_values(values, nbc, &mut buf);
        self.row_buf = buf;
        result
    }

    fn encode_values(
        &self,
        values: &[Value],
        nbc: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if values.len() != self.columns.len() {
            return Err(EncodeError::Inconsistent {
                structure: "ROW",
                reason: "value count differs from the column count",
            });
        }
        for (column, value) in self.columns.iter().zip(values) {
            if nbc && matches!(value, Value::Null) {
                continue;
            }
            let typed = sql_value(&column.ty, value).ok_or(EncodeError::Inconsistent {
                structure: "ROW",
                reason: "engine value does not fit the column type",
            })?;
            encode_value(&column.type_info, &typed, buf)?;
        }
        Ok(())
    }

    fn nbc_allowed(&self) -> bool {
        self.out.context().tds_version.0 >= TdsVersion::V7_3B.0
            || self.out.context().tds_version == TdsVersion::V8_0
    }

    fn send_row(&mut self, values: &[Value]) {
        if self.stopped.is_some() {
            return;
        }
        if let Err(err) = self.encode_row(values) {
            self.encode_failure(err);
            return;
        }
        let row = std::mem::take(&mut self.row_buf);
        self.record(|out| out.encoded(&row));
        self.row_buf = row;
    }

    fn encode_failure(&mut self, err: EncodeError) {
        debug!(error = %err, "value not encodable");
        self.sql_error(
            ENCODE_FAILED,
            1,
            16,
            "The sandbox could not send a value of the result.",
            1,
        );
        self.stopped = Some(WriteStop::Encode(err));
    }
}

/// Our message number for a value the sandbox could not encode.
const ENCODE_FAILED: u32 = 40702;

/// A NOT NULL column can still come out NULL through an outer join the
/// engine did not see; only columns of base tables keep the fixed types.
fn column_is_outer(column: &ColumnDesc) -> bool {
    column.table.is_none() && !column.identity
}

fn push_null_bitmap(values: &[Value], buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.resize(start + Row::bitmap_len(values.len()), 0);
    for (i, v) in values.iter().enumerate() {
        if matches!(v, Value::Null) {
            buf[start + i / 8] |= 1 << (i % 8);
        }
    }
}

/// ENVCHANGE for a transaction descriptor (8 bytes LE, 2.2.7.9 types 8-10).
fn transaction_change(env_type: u8, descriptor: u64, begin: bool) -> Token {
    let bytes = descriptor.to_le_bytes().to_vec();
    let (new, old) = if begin {
        (bytes, Vec::new())
    } else {
        (Vec::new(), bytes)
    };
    Token::EnvChange(TdsEnvChange::Bytes { env_type, new, old })
}

impl ResultSink for TdsSink {
    fn columns(&mut self, columns: &[ColumnDesc]) {
        match self.start_result_set(columns) {
            Ok(token) => {
                self.write(&token);
                self.in_result_set = true;
            }
            Err(err) => self.encode_failure(err),
        }
    }

    fn row(&mut self, values: &[Value]) {
        if let Some(mut done) = self.pending_done.take() {
            done.status.0 |= DoneStatus::MORE;
            self.record(|out| out.token(&Token::Done(done)));
        }
        self.send_row(values);
    }

    fn done(&mut self, info: DoneInfo) {
        if let Some(tail) = self.rpc.as_mut() {
            tail.error |= info.error;
            tail.in_transaction = info.in_transaction;
            if tail.status.is_some() {
                // The procedure's own end: DONEPROC follows in end_rpc.
                return;
            }
        }
        let mut status = 0;
        if info.row_count.is_some() {
            status |= DoneStatus::COUNT;
        }
        if info.error {
            status |= DoneStatus::ERROR;
        }
        if info.in_transaction {
            status |= DoneStatus::INXACT;
        }
        let cur_cmd = if self.in_result_set {
            CUR_CMD_SELECT
        } else {
            0
        };
        self.in_result_set = false;
        let in_proc = info.in_proc || self.rpc.is_some();
        self.hold_done(Done {
            kind: if in_proc {
                DoneKind::DoneInProc
            } else {
                DoneKind::Done
            },
            status: DoneStatus(status),
            cur_cmd,
            row_count: info.row_count.unwrap_or(0),
        });
    }

    fn error(&mut self, error: SqlError) {
        let number = u32::try_from(error.number).unwrap_or(u32::MAX);
        self.sql_error(number, error.state, error.class, &error.message, error.line);
    }

    fn env_change(&mut self, change: EngineEnvChange) {
        let token = match change {
            EngineEnvChange::Database { old, new } => {
                self.write(&login::env_text(ENV_DATABASE, &new, &old));
                login::info(
                    login::INFO_DATABASE_CHANGED,
                    1,
                    &login::database_changed(&new),
                )
            }
            EngineEnvChange::BeginTran { descriptor } => {
                transaction_change(ENV_BEGINTRAN, descriptor, true)
            }
            EngineEnvChange::Commit { descriptor } => {
                transaction_change(ENV_COMMITTRAN, descriptor, false)
            }
            EngineEnvChange::Rollback { descriptor } => {
                transaction_change(ENV_ROLLBACKTRAN, descriptor, false)
            }
        };
        self.write(&token);
    }

    fn return_status(&mut self, status: i32) {
        match self.rpc.as_mut() {
            Some(tail) => tail.status = Some(status),
            None => self.write(&Token::ReturnStatus(ReturnStatus(status))),
        }
    }

    fn return_value(&mut self, value: EngineReturnValue) {
        let token = match return_value_token(&value) {
            Ok(token) => token,
            Err(err) => return self.encode_failure(err),
        };
        match self.rpc.as_mut() {
            Some(tail) => tail.values.push((value.ordinal, token)),
            None => self.write(&token),
        }
    }
}

/// RETURNVALUE of an OUTPUT parameter (2.2.7.19): status 0x01, the N type
/// of the declared type, nullable.
pub fn return_value_token(value: &EngineReturnValue) -> Result<Token, EncodeError> {
    let ti = type_info(&value.ty, true);
    let typed = sql_value(&value.ty, &value.value).ok_or(EncodeError::Inconsistent {
        structure: "RETURNVALUE",
        reason: "engine value does not fit the parameter type",
    })?;
    output_param(value.ordinal, &value.name, &ti, &typed)
}

/// A RETURNVALUE token for an output parameter of type `ti`.
pub fn output_param(
    ordinal: u16,
    name: &str,
    ti: &TypeInfo,
    value: &SqlValue,
) -> Result<Token, EncodeError> {
    let raw = raw_type_info(ti)?;
    let mut framed = Vec::new();
    encode_value(ti, value, &mut framed)?;
    let value = RawValue::decode(raw.framing(), &mut Reader::new(&framed, "RETURNVALUE")).map_err(
        |_| EncodeError::Inconsistent {
            structure: "RETURNVALUE",
            reason: "value does not decode back",
        },
    )?;
    Ok(Token::ReturnValue(Box::new(TdsReturnValue {
        ordinal,
        name: UcsString::from(name),
        status: STATUS_OUTPUT_PARAM,
        user_type: 0,
        flags: FLAG_NULLABLE,
        type_info: raw,
        crypto: None,
        value,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::login;

    fn writer(packet_size: usize) -> (TokenWriter, mpsc::Receiver<Outgoing>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(1024);
        let cancel = Arc::new(AtomicBool::new(false));
        let w = TokenWriter::new(
            TokenContext::default(),
            packet_size,
            tx,
            Arc::clone(&cancel),
        );
        (w, rx, cancel)
    }

    fn drain(rx: &mut mpsc::Receiver<Outgoing>) -> (Vec<Bytes>, Option<Bytes>) {
        let (mut full, mut last) = (Vec::new(), None);
        while let Ok(item) = rx.try_recv() {
            match item {
                Outgoing::Payload(p) => full.push(p),
                Outgoing::Last(p) => last = Some(p),
            }
        }
        (full, last)
    }

    #[test]
    fn payloads_are_cut_at_the_packet_size() {
        let (mut w, mut rx, _) = writer(512);
        let info = login::info(5701, 2, &"x".repeat(300));
        for _ in 0..5 {
            w.token(&info).expect("writes");
        }
        w.finish().expect("finishes");
        let (full, last) = drain(&mut rx);
        assert!(full.iter().all(|p| p.len() == 504));
        let total: usize = full.iter().map(Bytes::len).sum::<usize>() + last.map_or(0, |l| l.len());
        let mut one = Vec::new();
        info.encode(&TokenContext::default(), &mut one)
            .expect("encodes");
        assert_eq!(total, one.len() * 5);
    }

    #[test]
    fn cancel_stops_writing_and_drops_the_buffer() {
        let (mut w, mut rx, cancel) = writer(4096);
        w.done(DoneKind::Done, DoneStatus::MORE, 0, 0)
            .expect("writes");
        cancel.store(true, Ordering::Relaxed);
        assert!(matches!(
            w.done(DoneKind::Done, 0, 0, 0),
            Err(WriteStop::Cancelled)
        ));
        w.finish().expect("finishes");
        let (full, last) = drain(&mut rx);
        assert!(full.is_empty());
        assert_eq!(last.expect("last").len(), 0);
    }
}
