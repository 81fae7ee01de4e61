//! Per-connection state and the types the engine hands to its caller: parameters, column
//! descriptions, DONE information, environment changes and the result sink.
//!
//! The front end turns these into COLMETADATA, ROW, DONE, ERROR, ENVCHANGE, RETURNSTATUS and
//! RETURNVALUE tokens (MS-TDS 2.2.7); nothing here knows the wire format.

use std::collections::HashMap;
use std::fmt;

use rusqlite::Connection;

use crate::sandbox::engine::errors::SqlError;
use crate::sandbox::engine::types::{SqlType, Value};

/// Collation reported for character columns (SQL Server's default server collation).
pub const DEFAULT_COLLATION: &str = "SQL_Latin1_General_CP1_CI_AS";

/// Prepared statements one session may hold. SQL Server has no fixed limit; the cap keeps a
/// client that never unprepares from growing memory without bound.
pub const MAX_PREPARED_PER_SESSION: usize = 4096;

/// Declared variables one batch may hold (bounded for the same reason).
pub const MAX_VARIABLES: usize = 10_000;

/// A parameter of sp_executesql, sp_execute or a procedure call.
#[derive(Clone)]
pub struct Param {
    /// Name with the `@`, e.g. `@p1`. Empty for positional procedure arguments.
    pub name: String,
    /// Declared type.
    pub declared: SqlType,
    /// Value.
    pub value: Value,
    /// True for OUTPUT parameters.
    pub output: bool,
}

impl fmt::Debug for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Param")
            .field("name", &self.name)
            .field("declared", &self.declared)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

/// One result column, as COLMETADATA needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDesc {
    /// Column name; empty for an unnamed expression.
    pub name: String,
    /// Declared or inferred type.
    pub ty: SqlType,
    /// Whether the column may be NULL.
    pub nullable: bool,
    /// Whether the column is an IDENTITY column.
    pub identity: bool,
    /// Collation name for character types.
    pub collation: Option<&'static str>,
    /// Base table name when the column is a plain table column.
    pub table: Option<String>,
}

impl ColumnDesc {
    /// A computed column of type `ty`.
    pub fn computed(name: impl Into<String>, ty: SqlType, nullable: bool) -> Self {
        let collation = ty.is_character().then_some(DEFAULT_COLLATION);
        Self {
            name: name.into(),
            ty,
            nullable,
            identity: false,
            collation,
            table: None,
        }
    }
}

/// What the DONE token after a statement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DoneInfo {
    /// Rows affected or returned; None when the statement has no count or NOCOUNT is on.
    pub row_count: Option<u64>,
    /// The statement failed (DONE_ERROR).
    pub error: bool,
    /// A transaction is open after the statement.
    pub in_transaction: bool,
    /// SET NOCOUNT was on (the front end clears DONE_COUNT).
    pub nocount: bool,
    /// The statement ran inside a procedure (DONEINPROC rather than DONE).
    pub in_proc: bool,
}

/// Environment changes the front end reports with ENVCHANGE (MS-TDS 2.2.7.9): database (1),
/// begin (8), commit (9) and rollback (10) transaction. Descriptors are per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    Database { old: String, new: String },
    BeginTran { descriptor: u64 },
    Commit { descriptor: u64 },
    Rollback { descriptor: u64 },
}

/// An OUTPUT parameter's value after a procedure call.
#[derive(Clone)]
pub struct ReturnValue {
    /// Parameter name with `@`.
    pub name: String,
    /// Position among the call's parameters (0-based).
    pub ordinal: u16,
    /// Declared type.
    pub ty: SqlType,
    /// Value.
    pub value: Value,
}

impl fmt::Debug for ReturnValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReturnValue")
            .field("name", &self.name)
            .field("ty", &self.ty)
            .finish_non_exhaustive()
    }
}

/// Receives results statement by statement. Rows are streamed straight from SQLite.
pub trait ResultSink {
    /// A result set starts.
    fn columns(&mut self, columns: &[ColumnDesc]);
    /// One row of the current result set.
    fn row(&mut self, values: &[Value]);
    /// A statement finished.
    fn done(&mut self, done: DoneInfo);
    /// An error (class > 10) or informational message (class <= 10).
    fn error(&mut self, error: SqlError);
    /// Database or transaction state changed.
    fn env_change(&mut self, change: EnvChange);
    /// A procedure returned this status.
    fn return_status(&mut self, status: i32);
    /// An OUTPUT parameter's value.
    fn return_value(&mut self, value: ReturnValue);
}

/// A declared variable.
#[derive(Clone)]
pub(crate) struct Variable {
    pub ty: SqlType,
    pub value: Value,
}

/// A prepared statement: the parameter declaration and the statement text.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub params: Vec<(String, SqlType)>,
    pub sql: String,
}

/// SET options the session tracks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub nocount: bool,
    pub fmtonly: bool,
    pub identity_insert: Option<String>,
}

/// State of one client connection.
pub struct Session {
    pub(crate) conn: Connection,
    pub(crate) database: String,
    pub(crate) spid: u16,
    pub(crate) vars: HashMap<String, Variable>,
    pub(crate) identity: Option<i64>,
    pub(crate) scope_identity: Option<i64>,
    pub(crate) rowcount: u64,
    pub(crate) tran_count: u32,
    pub(crate) tran_descriptor: u64,
    pub(crate) next_descriptor: u64,
    pub(crate) options: Options,
    pub(crate) prepared: HashMap<i32, Prepared>,
    pub(crate) next_handle: i32,
    pub(crate) proc_depth: u32,
    pub(crate) last_error: i32,
    pub(crate) last_abort: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("database", &self.database)
            .field("spid", &self.spid)
            .field("tran_count", &self.tran_count)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(conn: Connection, database: String, spid: u16) -> Self {
        Self {
            conn,
            database,
            spid,
            vars: HashMap::new(),
            identity: None,
            scope_identity: None,
            rowcount: 0,
            tran_count: 0,
            tran_descriptor: 0,
            next_descriptor: 1,
            options: Options::default(),
            prepared: HashMap::new(),
            next_handle: 1,
            proc_depth: 0,
            last_error: 0,
            last_abort: false,
        }
    }

    /// Current database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Server process id reported by @@SPID.
    pub fn spid(&self) -> u16 {
        self.spid
    }

    /// @@TRANCOUNT.
    pub fn transaction_count(&self) -> u32 {
        self.tran_count
    }

    /// Descriptor of the open transaction (0 when none), for the TDS transaction header.
    pub fn transaction_descriptor(&self) -> u64 {
        self.tran_descriptor
    }

    /// Whether SET NOCOUNT is on.
    pub fn nocount(&self) -> bool {
        self.options.nocount
    }

    pub(crate) fn done(&self, row_count: Option<u64>, error: bool) -> DoneInfo {
        DoneInfo {
            row_count: if self.options.nocount {
                None
            } else {
                row_count
            },
            error,
            in_transaction: self.tran_count > 0,
            nocount: self.options.nocount,
            in_proc: self.proc_depth > 0,
        }
    }
}
