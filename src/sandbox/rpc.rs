//! Requests of a logged-in session: SQL batches ([MS-TDS] 2.2.6.7) and RPCs
//! (2.2.6.6), the RESETCONNECTION status bit (2.2.3.1.2) and the engine
//! session they share.
//!
//! A request runs on a blocking thread; the engine session travels with it
//! and comes back when it ends. RPC parameters are turned from TYPE_INFO and
//! wire values into the engine's declared types and values; sp_executesql,
//! sp_prepare, sp_execute, sp_prepexec, sp_unprepare and named procedures run
//! in the engine, sp_describe_first_result_set and
//! sp_describe_undeclared_parameters are answered here in the result set
//! shapes SQL Server documents for them.

use rusqlite::InterruptHandle;
use tracing::debug;

use crate::sandbox::engine::catalog::system_type_id;
use crate::sandbox::engine::errors::SqlError;
use crate::sandbox::engine::session::{ColumnDesc, DoneInfo, ResultSink};
use crate::sandbox::engine::types::{Date, DateTime, Len, SqlType, Time, Value};
use crate::sandbox::engine::{Engine, Param, Session};
use crate::sandbox::login;
use crate::sandbox::results::{type_info, TdsSink, TokenWriter};
use crate::tds::packet::{Message, PacketType};
use crate::tds::rpc::{ProcName, RpcCall, RpcParam, RpcRequest};
use crate::tds::sql_batch::{reset_request, SqlBatch};
use crate::tds::token::env_change::ENV_RESETACK;
use crate::tds::token::{EnvChange, Token, TokenContext};
use crate::tds::types::value::SqlValue;
use crate::tds::types::{
    DecimalType, FixedType, LegacyVarLenType, LongType, NullableType, TypeInfo, VarLenType,
};

/// Our own message number (40700-40799, shared with the engine) for what
/// the sandbox does not do.
const UNSUPPORTED: u32 = 40701;
/// Severity of a statement-level error (SQL Server's usual 16).
const STATEMENT_ERROR_CLASS: u8 = 16;
/// "Cannot open database requested by the login" (SQL Server 4060).
const CANNOT_OPEN_DATABASE: u32 = 4060;

/// The engine session of a connection, between requests.
pub struct SessionState {
    engine: Engine,
    session: Option<Session>,
    login_database: String,
    ctx: TokenContext,
}

/// Everything a request needs on its thread.
struct RequestJob {
    engine: Engine,
    session: Session,
    login_database: String,
    message: Message,
    sink: TdsSink,
}

/// What a finished request hands back to its session.
pub struct Finished {
    session: Session,
}

impl SessionState {
    /// Opens an engine session in the login's database (blocking: SQLite
    /// files are opened). A database that does not exist refuses the login
    /// with SQL Server's message 4060.
    pub fn open(
        engine: &Engine,
        database: &str,
        ctx: TokenContext,
    ) -> Result<SessionState, SqlError> {
        let session = open_session(engine, database)?;
        Ok(SessionState {
            engine: engine.clone(),
            session: Some(session),
            login_database: database.to_owned(),
            ctx,
        })
    }

    /// The engine's session id, reported as SPID.
    pub fn spid(&self) -> u16 {
        self.session.as_ref().map_or(0, Session::spid)
    }

    /// The current database.
    pub fn database(&self) -> String {
        self.session
            .as_ref()
            .map_or_else(String::new, |s| s.database().to_owned())
    }

    /// The token context responses are encoded in.
    pub fn token_context(&self) -> TokenContext {
        self.ctx.clone()
    }

    /// A handle that stops the running SQLite statement (for attention).
    pub fn interrupt_handle(&self) -> Option<InterruptHandle> {
        self.session.as_ref().map(|s| s.conn.get_interrupt_handle())
    }

    /// Packs `message` and the session into a job for a blocking thread.
    pub fn start_request(
        &mut self,
        message: Message,
        out: TokenWriter,
    ) -> Option<impl FnOnce() -> Finished + Send + 'static> {
        let session = self.session.take()?;
        let job = RequestJob {
            engine: self.engine.clone(),
            session,
            login_database: self.login_database.clone(),
            message,
            sink: TdsSink::new(out),
        };
        Some(move || job.run())
    }

    /// Takes the session back from a finished request.
    pub fn request_done(&mut self, finished: Finished) {
        self.session = Some(finished.session);
    }
}

fn open_session(engine: &Engine, database: &str) -> Result<Session, SqlError> {
    let mut session = engine.new_session().map_err(|_| {
        SqlError::new(
            CANNOT_OPEN_DATABASE as i32,
            "The sandbox could not open a session.",
        )
    })?;
    if database.is_empty() || session.database().eq_ignore_ascii_case(database) {
        return Ok(session);
    }
    let mut capture = CaptureErrors::default();
    let sql = format!("USE [{}]", database.replace(']', "]]"));
    engine.execute_batch(&mut session, &sql, &[], &mut capture);
    if capture.error.is_some() {
        let text = format!(
            "Cannot open database \"{database}\" requested by the login. The login failed."
        );
        return Err(SqlError::new(CANNOT_OPEN_DATABASE as i32, text));
    }
    Ok(session)
}

/// A sink that keeps only the first error (for statements the sandbox
/// runs on its own, such as the login's USE).
#[derive(Default)]
struct CaptureErrors {
    error: Option<SqlError>,
}

impl ResultSink for CaptureErrors {
    fn columns(&mut self, _: &[ColumnDesc]) {}
    fn row(&mut self, _: &[Value]) {}
    fn done(&mut self, _: DoneInfo) {}
    fn error(&mut self, error: SqlError) {
        if error.class > 10 && self.error.is_none() {
            self.error = Some(error);
        }
    }
    fn env_change(&mut self, _: crate::sandbox::engine::EnvChange) {}
    fn return_status(&mut self, _: i32) {}
    fn return_value(&mut self, _: crate::sandbox::engine::ReturnValue) {}
}

impl RequestJob {
    fn run(mut self) -> Finished {
        self.respond();
        self.sink.finish(None);
        Finished {
            session: self.session,
        }
    }

    fn respond(&mut self) {
        if reset_request(&self.message).ok().flatten().is_some() {
            self.reset();
        }
        let payload = self.message.payload.clone();
        match self.message.packet_type {
            PacketType::SqlBatch => self.batch(&payload),
            PacketType::Rpc => self.rpc(&payload),
            _ => self.unsupported("this message type"),
        }
    }

    /// RESETCONNECTION: a fresh engine session in the login's database (a
    /// dropped SQLite connection rolls back what was open), and ENVCHANGE 18
    /// first in the response (2.2.7.9).
    /// TODO(tdsguard): RESETCONNECTIONSKIPTRAN should keep an open
    /// transaction; it resets everything like RESETCONNECTION.
    fn reset(&mut self) {
        match open_session(&self.engine, &self.login_database) {
            Ok(session) => self.session = session,
            Err(err) => debug!(number = err.number, "session reset failed"),
        }
        let ack = EnvChange::Bytes {
            env_type: ENV_RESETACK,
            new: Vec::new(),
            old: Vec::new(),
        };
        self.sink.write(&Token::EnvChange(ack));
    }

    fn batch(&mut self, payload: &[u8]) {
        match SqlBatch::decode(payload) {
            Ok(batch) => {
                let (engine, session) = (&self.engine, &mut self.session);
                engine.execute_batch(session, &batch.text, &[], &mut self.sink);
            }
            Err(_) => self.unsupported("a malformed SQL batch"),
        }
    }

    fn rpc(&mut self, payload: &[u8]) {
        let request = match RpcRequest::decode(payload) {
            Ok(request) => request,
            Err(_) => return self.unsupported("a malformed RPC request"),
        };
        for call in &request.calls {
            if self.sink.is_cancelled() {
                return;
            }
            self.sink.begin_rpc();
            self.call(call);
            self.sink.end_rpc();
        }
    }

    fn call(&mut self, call: &RpcCall) {
        let name = procedure_name(&call.proc_name);
        let params = match engine_params(&call.params) {
            Ok(params) => params,
            Err(what) => return self.unsupported(&what),
        };
        match name.to_ascii_lowercase().as_str() {
            "sp_describe_first_result_set" => self.describe_first_result_set(&params),
            "sp_describe_undeclared_parameters" => self.describe_undeclared_parameters(&params),
            _ => {
                let (engine, session) = (&self.engine, &mut self.session);
                engine.call_procedure(session, &name, &params, &mut self.sink);
            }
        }
    }

    fn describe_first_result_set(&mut self, params: &[Param]) {
        let Some(sql) = text_param(params, 0) else {
            return self.missing_statement("sp_describe_first_result_set");
        };
        match self
            .engine
            .describe_first_result_set(&mut self.session, &sql)
        {
            Ok(columns) => describe::first_result_set(&columns, &mut self.sink),
            Err(err) => self.sink.error(err),
        }
        self.sink.return_status(0);
    }

    fn describe_undeclared_parameters(&mut self, params: &[Param]) {
        let Some(sql) = text_param(params, 0) else {
            return self.missing_statement("sp_describe_undeclared_parameters");
        };
        match self
            .engine
            .describe_undeclared_parameters(&mut self.session, &sql)
        {
            Ok(found) => describe::undeclared_parameters(&found, &mut self.sink),
            Err(err) => self.sink.error(err),
        }
        self.sink.return_status(0);
    }

    fn missing_statement(&mut self, procedure: &str) {
        let text = format!(
            "Procedure or function '{procedure}' expects parameter '@tsql', which was not supplied."
        );
        self.sink.error(SqlError::new(201, text));
        self.sink.return_status(1);
    }

    /// ERROR naming what is unsupported, then DONE with the error bit; the
    /// connection stays usable.
    fn unsupported(&mut self, what: &str) {
        let text = format!("The sandbox does not support {what}.");
        self.sink
            .sql_error(UNSUPPORTED, 1, STATEMENT_ERROR_CLASS, &text, 1);
        self.sink.done(DoneInfo {
            error: true,
            ..DoneInfo::default()
        });
    }
}

fn text_param(params: &[Param], index: usize) -> Option<String> {
    match params.get(index).map(|p| &p.value) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The procedure name, with well-known ids spelled out (2.2.6.6 ProcIDs).
fn procedure_name(name: &ProcName) -> String {
    match name {
        ProcName::Id(id) => ProcName::well_known_name(*id)
            .unwrap_or("unknown procedure id")
            .to_owned(),
        ProcName::Name(name) => name.clone(),
    }
}

/// RPC parameters as engine parameters; `Err` names what is unsupported.
fn engine_params(params: &[RpcParam]) -> Result<Vec<Param>, String> {
    params.iter().map(engine_param).collect()
}

fn engine_param(param: &RpcParam) -> Result<Param, String> {
    if param.is_encrypted() {
        return Err("Always Encrypted parameters".to_owned());
    }
    let declared = declared_type(&param.type_info).ok_or_else(|| {
        format!(
            "parameters of TDS type {:#04x}",
            param.type_info.type_byte()
        )
    })?;
    let typed = param
        .value()
        .map_err(|_| "a parameter value that does not decode".to_owned())?;
    let value = engine_value(&typed)
        .ok_or_else(|| format!("values of TDS type {:#04x}", param.type_info.type_byte()))?;
    Ok(Param {
        name: param.name.clone(),
        declared,
        value,
        output: param.is_output(),
    })
}

/// The T-SQL type a parameter's TYPE_INFO declares.
pub fn declared_type(ti: &TypeInfo) -> Option<SqlType> {
    Some(match ti {
        TypeInfo::Fixed(fixed) => fixed_declared(*fixed),
        TypeInfo::Nullable { ty, len } => nullable_declared(*ty, *len)?,
        TypeInfo::Decimal {
            ty,
            precision,
            scale,
            ..
        } => match ty {
            DecimalType::NumericN | DecimalType::Numeric => SqlType::Numeric {
                precision: *precision,
                scale: *scale,
            },
            _ => SqlType::Decimal {
                precision: *precision,
                scale: *scale,
            },
        },
        TypeInfo::Date => SqlType::Date,
        TypeInfo::Time { scale } => SqlType::Time(*scale),
        TypeInfo::DateTime2 { scale } => SqlType::DateTime2(*scale),
        TypeInfo::DateTimeOffset { scale } => SqlType::DateTimeOffset(*scale),
        TypeInfo::VarLen { ty, max_len, .. } => var_len_declared(*ty, *max_len),
        TypeInfo::LegacyVarLen { ty, len } => legacy_declared(*ty, *len),
        TypeInfo::Long { ty, .. } => match ty {
            LongType::Text => SqlType::VarChar(Len::Max),
            LongType::NText => SqlType::NVarChar(Len::Max),
            LongType::Image => SqlType::VarBinary(Len::Max),
        },
        _ => return None,
    })
}

fn fixed_declared(fixed: FixedType) -> SqlType {
    match fixed {
        FixedType::Int1 => SqlType::TinyInt,
        FixedType::Bit => SqlType::Bit,
        FixedType::Int2 => SqlType::SmallInt,
        FixedType::Int8 => SqlType::BigInt,
        FixedType::Flt4 => SqlType::Real,
        FixedType::Flt8 => SqlType::Float { mantissa_bits: 53 },
        FixedType::Money => SqlType::Money,
        FixedType::Money4 => SqlType::SmallMoney,
        FixedType::DateTime => SqlType::DateTime,
        FixedType::DateTim4 => SqlType::SmallDateTime,
        // NULLTYPE (a NULL without a type) and int.
        FixedType::Int4 | FixedType::Null => SqlType::Int,
    }
}

fn nullable_declared(ty: NullableType, len: u8) -> Option<SqlType> {
    Some(match (ty, len) {
        (NullableType::IntN, 1) => SqlType::TinyInt,
        (NullableType::IntN, 2) => SqlType::SmallInt,
        (NullableType::IntN, 4) => SqlType::Int,
        (NullableType::IntN, 8) => SqlType::BigInt,
        (NullableType::BitN, _) => SqlType::Bit,
        (NullableType::FltN, 4) => SqlType::Real,
        (NullableType::FltN, _) => SqlType::Float { mantissa_bits: 53 },
        (NullableType::MoneyN, 4) => SqlType::SmallMoney,
        (NullableType::MoneyN, _) => SqlType::Money,
        (NullableType::DateTimeN, 4) => SqlType::SmallDateTime,
        (NullableType::DateTimeN, _) => SqlType::DateTime,
        (NullableType::Guid, _) => SqlType::UniqueIdentifier,
        _ => return None,
    })
}

fn var_len_declared(ty: VarLenType, max_len: u16) -> SqlType {
    let len = |unit: u16| match max_len {
        0xFFFF => Len::Max,
        n => Len::N(u32::from((n / unit).max(1))),
    };
    let fixed = |unit: u16| u32::from((max_len / unit).max(1));
    match ty {
        VarLenType::BigVarChar => SqlType::VarChar(len(1)),
        VarLenType::BigChar => SqlType::Char(fixed(1)),
        VarLenType::NVarChar => SqlType::NVarChar(len(2)),
        VarLenType::NChar => SqlType::NChar(fixed(2)),
        VarLenType::BigVarBinary => SqlType::VarBinary(len(1)),
        VarLenType::BigBinary => SqlType::Binary(fixed(1)),
    }
}

fn legacy_declared(ty: LegacyVarLenType, len: u8) -> SqlType {
    let n = u32::from(len.max(1));
    match ty {
        LegacyVarLenType::Char => SqlType::Char(n),
        LegacyVarLenType::VarChar => SqlType::VarChar(Len::N(n)),
        LegacyVarLenType::Binary => SqlType::Binary(n),
        LegacyVarLenType::VarBinary => SqlType::VarBinary(Len::N(n)),
    }
}

/// A decoded parameter value as an engine value.
pub fn engine_value(v: &SqlValue) -> Option<Value> {
    Some(match v {
        SqlValue::Null => Value::Null,
        SqlValue::Bit(b) => Value::Bool(*b),
        SqlValue::TinyInt(n) => Value::Int(i64::from(*n)),
        SqlValue::SmallInt(n) => Value::Int(i64::from(*n)),
        SqlValue::Int(n) => Value::Int(i64::from(*n)),
        SqlValue::BigInt(n) => Value::Int(*n),
        SqlValue::Real(f) => Value::Float(f64::from(*f)),
        SqlValue::Float(f) => Value::Float(*f),
        SqlValue::Decimal { value, scale, .. } => Value::Decimal {
            value: *value,
            scale: *scale,
        },
        SqlValue::Money(units) => Value::Decimal {
            value: i128::from(*units),
            scale: 4,
        },
        SqlValue::SmallMoney(units) => Value::Decimal {
            value: i128::from(*units),
            scale: 4,
        },
        SqlValue::Char { .. }
        | SqlValue::VarChar { .. }
        | SqlValue::NChar(_)
        | SqlValue::NVarChar(_) => Value::String(v.text()?),
        SqlValue::Binary(b) | SqlValue::VarBinary(b) => Value::Bytes(b.clone()),
        SqlValue::Guid(g) => Value::Guid(guid_rfc_order(g)),
        _ => temporal_value(v)?,
    })
}

fn temporal_value(v: &SqlValue) -> Option<Value> {
    let civil = match v {
        SqlValue::Date(d) => {
            let (year, month, day) = d.ymd();
            return Some(Value::Date(Date { year, month, day }));
        }
        SqlValue::Time(t) => {
            let (hour, minute, second, nanos) = t.hms_nanos();
            return Some(Value::Time(Time {
                hour,
                minute,
                second,
                nanos,
            }));
        }
        SqlValue::DateTimeOffset(dto) => {
            let c = dto.to_local_civil()?;
            return Some(Value::DateTimeOffset {
                datetime: engine_datetime(&c),
                offset_minutes: dto.offset_minutes,
            });
        }
        SqlValue::DateTime(dt) => dt.to_civil(),
        SqlValue::SmallDateTime(dt) => dt.to_civil(),
        SqlValue::DateTime2(dt) => dt.to_civil(),
        _ => return None,
    };
    Some(Value::DateTime2(engine_datetime(&civil)))
}

fn engine_datetime(c: &crate::tds::types::datetime::Civil) -> DateTime {
    DateTime {
        date: Date {
            year: c.year,
            month: c.month,
            day: c.day,
        },
        time: Time {
            hour: c.hour,
            minute: c.minute,
            second: c.second,
            nanos: c.nanosecond,
        },
    }
}

/// Wire order (first three groups little-endian) to RFC 4122 order.
fn guid_rfc_order(g: &[u8; 16]) -> [u8; 16] {
    let mut r = *g;
    r[0..4].reverse();
    r[4..6].reverse();
    r[6..8].reverse();
    r
}

/// The result sets of sp_describe_first_result_set and
/// sp_describe_undeclared_parameters, with the column names and types their
/// Transact-SQL reference pages list.
mod describe {
    use super::*;

    fn col(name: &str, ty: SqlType, nullable: bool) -> ColumnDesc {
        ColumnDesc::computed(name, ty, nullable)
    }

    fn sysname() -> SqlType {
        SqlType::NVarChar(Len::N(128))
    }

    /// sp_describe_first_result_set: one row per column.
    pub fn first_result_set(columns: &[ColumnDesc], sink: &mut TdsSink) {
        sink.columns(&first_result_set_columns());
        for (i, column) in columns.iter().enumerate() {
            sink.row(&first_result_set_row(i, column));
        }
        sink.done(DoneInfo {
            row_count: Some(columns.len() as u64),
            ..DoneInfo::default()
        });
    }

    fn first_result_set_columns() -> Vec<ColumnDesc> {
        let bit = SqlType::Bit;
        let mut cols = vec![
            col("is_hidden", bit, false),
            col("column_ordinal", SqlType::Int, false),
            col("name", sysname(), true),
            col("is_nullable", bit, false),
            col("system_type_id", SqlType::Int, false),
            col("system_type_name", SqlType::NVarChar(Len::N(256)), true),
            col("max_length", SqlType::SmallInt, false),
            col("precision", SqlType::TinyInt, false),
            col("scale", SqlType::TinyInt, false),
            col("collation_name", sysname(), true),
            col("user_type_id", SqlType::Int, true),
            col("user_type_database", sysname(), true),
            col("user_type_schema", sysname(), true),
            col("user_type_name", sysname(), true),
            col(
                "assembly_qualified_type_name",
                SqlType::NVarChar(Len::N(4000)),
                true,
            ),
            col("xml_collection_id", SqlType::Int, true),
            col("xml_collection_database", sysname(), true),
            col("xml_collection_schema", sysname(), true),
            col("xml_collection_name", sysname(), true),
            col("is_xml_document", bit, false),
            col("is_case_sensitive", bit, false),
            col("is_fixed_length_clr_type", bit, false),
        ];
        for name in ["source_server", "source_database", "source_schema"] {
            cols.push(col(name, sysname(), true));
        }
        cols.push(col("source_table", sysname(), true));
        cols.push(col("source_column", sysname(), true));
        for name in [
            "is_identity_column",
            "is_part_of_unique_key",
            "is_updateable",
            "is_computed_column",
            "is_sparse_column_set",
        ] {
            cols.push(col(name, bit, true));
        }
        for name in [
            "ordinal_in_order_by_list",
            "order_by_list_length",
            "order_by_is_descending",
        ] {
            cols.push(col(name, SqlType::SmallInt, true));
        }
        cols.push(col("tds_type_id", SqlType::Int, false));
        cols.push(col("tds_length", SqlType::Int, false));
        cols.push(col("tds_collation_id", SqlType::Int, true));
        cols.push(col("tds_collation_sort_id", SqlType::TinyInt, true));
        cols
    }

    fn first_result_set_row(index: usize, column: &ColumnDesc) -> Vec<Value> {
        let ty = &column.ty;
        let text = |s: &str| Value::String(s.to_owned());
        let opt_text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_owned()));
        let (tds_type, tds_length) = tds_type(ty, column.nullable);
        let (collation_id, sort_id) = collation_fields(ty);
        let mut row = vec![
            Value::Bool(false),
            Value::Int(index as i64 + 1),
            text(&column.name),
            Value::Bool(column.nullable),
            Value::Int(system_type_id(ty)),
            text(&ty.to_string()),
            Value::Int(i64::from(ty.max_length())),
            Value::Int(i64::from(ty.precision())),
            Value::Int(i64::from(ty.scale())),
            opt_text(column.collation),
            Value::Int(system_type_id(ty)),
        ];
        row.extend(std::iter::repeat_n(Value::Null, 8));
        row.extend([Value::Bool(false), Value::Bool(false), Value::Bool(false)]);
        row.extend(std::iter::repeat_n(Value::Null, 3));
        row.push(opt_text(column.table.as_deref()));
        row.push(opt_text(
            column.table.as_ref().map(|_| column.name.as_str()),
        ));
        row.push(Value::Bool(column.identity));
        row.push(Value::Null);
        row.push(Value::Bool(column.table.is_some() && !column.identity));
        row.push(Value::Bool(column.table.is_none()));
        row.push(Value::Bool(false));
        row.extend(std::iter::repeat_n(Value::Null, 3));
        row.push(Value::Int(tds_type));
        row.push(Value::Int(tds_length));
        row.push(collation_id);
        row.push(sort_id);
        row
    }

    /// The TDS type byte and TYPE_INFO length a column of `ty` travels with.
    fn tds_type(ty: &SqlType, nullable: bool) -> (i64, i64) {
        let ti = type_info(ty, nullable);
        let len = match &ti {
            TypeInfo::Nullable { len, .. } => i64::from(*len),
            TypeInfo::Decimal { len, .. } => i64::from(*len),
            TypeInfo::VarLen {
                max_len: 0xFFFF, ..
            } => -1,
            TypeInfo::VarLen { max_len, .. } => i64::from(*max_len),
            TypeInfo::Fixed(f) => f.size() as i64,
            TypeInfo::Date => 3,
            TypeInfo::Time { .. } => 5,
            TypeInfo::DateTime2 { .. } => 8,
            TypeInfo::DateTimeOffset { .. } => 10,
            _ => 0,
        };
        (i64::from(ti.type_byte()), len)
    }

    fn collation_fields(ty: &SqlType) -> (Value, Value) {
        if !ty.is_character() {
            return (Value::Null, Value::Null);
        }
        let c = login::DEFAULT_COLLATION;
        let id = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        (Value::Int(i64::from(id)), Value::Int(i64::from(c[4])))
    }

    /// sp_describe_undeclared_parameters: one row per parameter.
    pub fn undeclared_parameters(found: &[(String, SqlType)], sink: &mut TdsSink) {
        sink.columns(&undeclared_columns());
        for (i, (name, ty)) in found.iter().enumerate() {
            sink.row(&undeclared_row(i, name, ty));
        }
        sink.done(DoneInfo {
            row_count: Some(found.len() as u64),
            ..DoneInfo::default()
        });
    }

    fn undeclared_columns() -> Vec<ColumnDesc> {
        let mut cols = vec![
            col("parameter_ordinal", SqlType::Int, false),
            col("name", sysname(), false),
            col("suggested_system_type_id", SqlType::Int, false),
            col(
                "suggested_system_type_name",
                SqlType::NVarChar(Len::N(256)),
                true,
            ),
            col("suggested_max_length", SqlType::SmallInt, false),
            col("suggested_precision", SqlType::TinyInt, false),
            col("suggested_scale", SqlType::TinyInt, false),
            col("suggested_user_type_id", SqlType::Int, true),
        ];
        for name in [
            "suggested_user_type_database",
            "suggested_user_type_schema",
            "suggested_user_type_name",
        ] {
            cols.push(col(name, sysname(), true));
        }
        cols.push(col(
            "suggested_assembly_qualified_type_name",
            SqlType::NVarChar(Len::N(4000)),
            true,
        ));
        cols.push(col("suggested_xml_collection_id", SqlType::Int, true));
        for name in [
            "suggested_xml_collection_database",
            "suggested_xml_collection_schema",
            "suggested_xml_collection_name",
        ] {
            cols.push(col(name, sysname(), true));
        }
        for name in [
            "suggested_is_xml_document",
            "suggested_is_case_sensitive",
            "suggested_is_fixed_length_clr_type",
            "suggested_is_input",
            "suggested_is_output",
        ] {
            cols.push(col(name, SqlType::Bit, false));
        }
        cols.push(col("formal_parameter_name", sysname(), true));
        cols.push(col("suggested_tds_type_id", SqlType::Int, false));
        cols.push(col("suggested_tds_length", SqlType::Int, false));
        cols
    }

    fn undeclared_row(index: usize, name: &str, ty: &SqlType) -> Vec<Value> {
        let (tds_type, tds_length) = tds_type(ty, true);
        let mut row = vec![
            Value::Int(index as i64 + 1),
            Value::String(name.to_owned()),
            Value::Int(system_type_id(ty)),
            Value::String(ty.to_string()),
            Value::Int(i64::from(ty.max_length())),
            Value::Int(i64::from(ty.precision())),
            Value::Int(i64::from(ty.scale())),
            Value::Int(system_type_id(ty)),
        ];
        row.extend(std::iter::repeat_n(Value::Null, 8));
        row.extend([
            Value::Bool(false),
            Value::Bool(false),
            Value::Bool(false),
            Value::Bool(true),
            Value::Bool(false),
        ]);
        row.push(Value::Null);
        row.push(Value::Int(tds_type));
        row.push(Value::Int(tds_length));
        row
    }
}
