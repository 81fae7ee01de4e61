//! Execution engine of the sandbox: T-SQL in, typed result sets out, on SQLite.
//!
//! ```text
//!   batch text ──► exec::parse_batch (sqlparser, MsSql dialect)
//!                    │ per statement
//!                    ▼
//!   translate / dml ──► SQLite SQL + binds + typed columns ──► SQLite (one file per database)
//!                    │
//!                    ▼
//!   ResultSink: columns, row (streamed from the cursor), done, error, env_change, ...
//! ```
//!
//! Files: the data path given to [`Engine::open`] holds the default database and the
//! registry of databases; `master` and databases made by CREATE DATABASE live next to it as
//! `<stem>.<name>.sqlite`. Each session opens its own SQLite connection to its current
//! database; USE switches the connection.
//!
//! This is a stand-in for tests and the quick start, not a database product: the subset of
//! T-SQL it runs is listed in `translate`, `dml` and `exec`; anything else fails with error
//! [`errors::UNSUPPORTED`] naming the construct.

pub mod catalog;
pub mod dml;
pub mod errors;
pub mod exec;
pub mod functions;
pub mod procs;
pub mod session;
pub mod translate;
pub mod types;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use sqlparser::ast::Statement;

pub use errors::{EngineError, SqlError};
pub use session::{ColumnDesc, DoneInfo, EnvChange, Param, ResultSink, ReturnValue, Session};
pub use types::{Date, DateTime, Len, SqlType, Time, Value};

use crate::sandbox::engine::exec::{parse_batch, sys_values, Exec};
use crate::sandbox::engine::session::Variable;
use crate::sandbox::engine::translate::Translator;

/// Longest database name (SQL Server's sysname is 128 characters).
const MAX_DATABASE_NAME: usize = 128;

/// First session id handed out; SQL Server user sessions start above 50.
const FIRST_SPID: u16 = 51;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Name of the database kept in the main data file.
    pub default_database: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_database: "tdsguard".into(),
        }
    }
}

struct Inner {
    main_path: PathBuf,
    dir: PathBuf,
    stem: String,
    default_database: String,
    next_spid: AtomicU16,
}

/// The engine: shared by all sessions (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("main_path", &self.inner.main_path)
            .finish_non_exhaustive()
    }
}

fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> EngineError {
    move |source| EngineError::Sqlite { context, source }
}

impl Engine {
    /// Opens (or creates) the engine's files with the default settings.
    pub fn open(data_path: impl AsRef<Path>) -> Result<Engine, EngineError> {
        Self::open_with(data_path, EngineConfig::default())
    }

    /// Opens (or creates) the engine's files.
    pub fn open_with(
        data_path: impl AsRef<Path>,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        let main_path = data_path.as_ref().to_path_buf();
        let dir = main_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let stem = main_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sandbox".into());
        let engine = Engine {
            inner: Arc::new(Inner {
                main_path,
                dir,
                stem,
                default_database: config.default_database,
                next_spid: AtomicU16::new(FIRST_SPID),
            }),
        };
        let conn = functions::open(&engine.inner.main_path)
            .map_err(sqlite("opening the main data file"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS __tdsguard_databases(name TEXT PRIMARY KEY COLLATE NOCASE, \
             database_id INTEGER NOT NULL UNIQUE, file TEXT NOT NULL, create_date TEXT NOT NULL)",
        )
        .map_err(sqlite("creating the database registry"))?;
        engine
            .register(&conn, "master", 1)
            .map_err(sqlite("registering master"))?;
        let default = engine.inner.default_database.clone();
        engine
            .register(&conn, &default, 5)
            .map_err(sqlite("registering the default database"))?;
        Ok(engine)
    }

    fn register(&self, conn: &Connection, name: &str, id: i64) -> Result<(), rusqlite::Error> {
        let file = if name.eq_ignore_ascii_case(&self.inner.default_database) {
            String::new()
        } else {
            self.file_name(name)
        };
        conn.execute(
            "INSERT OR IGNORE INTO __tdsguard_databases VALUES (?1, ?2, ?3, strftime('%Y-%m-%d %H:%M:%f0000', 'now'))",
            params![name, id, file],
        )?;
        Ok(())
    }

    fn file_name(&self, name: &str) -> String {
        format!("{}.{}.sqlite", self.inner.stem, name.to_ascii_lowercase())
    }

    fn registry(&self) -> Result<Connection, SqlError> {
        Connection::open(&self.inner.main_path).map_err(|e| errors::from_sqlite(&e, ""))
    }

    /// Opens a connection to a database by name; returns its canonical name too.
    pub(crate) fn connect(&self, name: &str) -> Result<(String, Connection), SqlError> {
        let row: Option<(String, String)> = self
            .registry()?
            .query_row(
                "SELECT name, file FROM __tdsguard_databases WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| errors::from_sqlite(&e, ""))?;
        let Some((canonical, file)) = row else {
            return Err(SqlError::new(911, format!("Database '{name}' does not exist. Make sure that the name is entered correctly.")));
        };
        let path = if file.is_empty() {
            self.inner.main_path.clone()
        } else {
            self.inner.dir.join(file)
        };
        let conn = functions::open(&path).map_err(|e| errors::from_sqlite(&e, ""))?;
        Ok((canonical, conn))
    }

    /// CREATE DATABASE.
    pub(crate) fn create_database(&self, name: &str, if_not_exists: bool) -> Result<(), SqlError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_DATABASE_NAME
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            // File names derive from database names, so only a safe subset is allowed.
            return Err(SqlError::unsupported(format!(
                "the database name '{name}' (letters, digits and _ only)"
            )));
        }
        let reg = self.registry()?;
        let exists: bool = reg
            .query_row(
                "SELECT COUNT(*) FROM __tdsguard_databases WHERE name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| errors::from_sqlite(&e, ""))?
            > 0;
        if exists {
            if if_not_exists {
                return Ok(());
            }
            return Err(SqlError::new(
                1801,
                format!("Database '{name}' already exists. Choose a different database name."),
            ));
        }
        let id: i64 = reg
            .query_row(
                "SELECT MAX(database_id) + 1 FROM __tdsguard_databases",
                [],
                |r| r.get(0),
            )
            .map_err(|e| errors::from_sqlite(&e, ""))?;
        functions::open(&self.inner.dir.join(self.file_name(name)))
            .map_err(|e| errors::from_sqlite(&e, ""))?;
        self.register(&reg, name, id.max(6))
            .map_err(|e| errors::from_sqlite(&e, ""))
    }

    /// Rows of sys.databases as a SQLite subquery.
    pub(crate) fn databases_sql(&self) -> Result<String, SqlError> {
        let reg = self.registry()?;
        let mut st = reg.prepare("SELECT name, database_id, create_date FROM __tdsguard_databases ORDER BY database_id").map_err(|e| errors::from_sqlite(&e, ""))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| errors::from_sqlite(&e, ""))?;
        let mut parts = Vec::new();
        for row in rows {
            let (name, id, created) = row.map_err(|e| errors::from_sqlite(&e, ""))?;
            parts.push(format!(
                "SELECT '{}' AS name, {id} AS database_id, '{created}' AS create_date",
                name.replace('\'', "''")
            ));
        }
        Ok(format!("({})", parts.join(" UNION ALL ")))
    }

    /// Opens a new session on the default database.
    pub fn new_session(&self) -> Result<Session, EngineError> {
        let conn = functions::open(&self.inner.main_path).map_err(sqlite("opening a session"))?;
        let spid = self.inner.next_spid.fetch_add(1, Ordering::Relaxed);
        Ok(Session::new(
            conn,
            self.inner.default_database.clone(),
            spid,
        ))
    }

    /// Runs a batch. `params` are the batch's parameters (as with sp_executesql).
    pub fn execute_batch(
        &self,
        session: &mut Session,
        sql: &str,
        params: &[Param],
        sink: &mut dyn ResultSink,
    ) {
        let mut vars = HashMap::with_capacity(params.len());
        for p in params {
            vars.insert(
                p.name.to_ascii_lowercase(),
                Variable {
                    ty: p.declared,
                    value: p.value.clone(),
                },
            );
        }
        let mut ex = Exec { engine: self, sink };
        let (_, inner) = ex.nested(session, sql, vars, false);
        for (i, p) in params.iter().enumerate().filter(|(_, p)| p.output) {
            let Some(var) = inner.get(&p.name.to_ascii_lowercase()) else {
                continue;
            };
            let ordinal = u16::try_from(i).unwrap_or(u16::MAX);
            ex.sink.return_value(ReturnValue {
                name: p.name.clone(),
                ordinal,
                ty: var.ty,
                value: var.value.clone(),
            });
        }
    }

    /// Runs a procedure called by RPC (MS-TDS 2.2.6.6): sp_executesql, sp_prepare,
    /// sp_execute, sp_prepexec, sp_unprepare, sp_datatype_info or a user procedure.
    /// Parameters without a name are positional.
    pub fn call_procedure(
        &self,
        session: &mut Session,
        name: &str,
        params: &[Param],
        sink: &mut dyn ResultSink,
    ) {
        let args = params
            .iter()
            .map(|p| procs::Arg {
                name: p.name.clone(),
                ty: p.declared,
                value: p.value.clone(),
                target: None,
            })
            .collect();
        let mut ex = Exec { engine: self, sink };
        if let Err(e) = ex.call(session, name, args) {
            ex.sink.error(e);
            let done = session.done(None, true);
            ex.sink.done(done);
        }
    }

    /// sp_prepare: returns a handle (1, 2, ... per session).
    pub fn prepare(
        &self,
        session: &mut Session,
        params_decl: &str,
        sql: &str,
    ) -> Result<i32, SqlError> {
        procs::prepare(session, params_decl, sql)
    }

    /// sp_execute of a handle from [`Engine::prepare`]. Parameters are matched by name.
    pub fn execute_prepared(
        &self,
        session: &mut Session,
        handle: i32,
        params: &[Param],
        sink: &mut dyn ResultSink,
    ) -> Result<(), SqlError> {
        let prepared = session.prepared.get(&handle).cloned().ok_or_else(|| {
            SqlError::new(
                8179,
                format!("Could not find prepared statement with handle {handle}."),
            )
        })?;
        let typed: Vec<Param> = params
            .iter()
            .map(|p| {
                let declared = prepared
                    .params
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&p.name))
                    .map_or(p.declared, |(_, t)| *t);
                Param {
                    declared,
                    ..p.clone()
                }
            })
            .collect();
        self.execute_batch(session, &prepared.sql, &typed, sink);
        Ok(())
    }

    /// sp_unprepare.
    pub fn unprepare(&self, session: &mut Session, handle: i32) -> Result<(), SqlError> {
        procs::unprepare(session, handle)
    }

    /// sp_describe_first_result_set: the columns of the first result set, without running.
    pub fn describe_first_result_set(
        &self,
        session: &mut Session,
        sql: &str,
    ) -> Result<Vec<ColumnDesc>, SqlError> {
        for st in parse_batch(sql)? {
            if let Statement::Query(mut q) = st {
                let sys = sys_values(session);
                let mut tr = Translator::new(&session.conn, &session.vars, &sys);
                tr.lenient_vars = true;
                let cols = tr.query(&mut q, true)?;
                return Ok(cols.into_iter().map(|c| c.desc).collect());
            }
        }
        Ok(Vec::new())
    }

    /// sp_describe_undeclared_parameters: each `@name` with the type of the column it is
    /// compared with or written to (nvarchar(4000) when nothing says otherwise).
    pub fn describe_undeclared_parameters(
        &self,
        session: &mut Session,
        sql: &str,
    ) -> Result<Vec<(String, SqlType)>, SqlError> {
        let sys = sys_values(session);
        let empty = HashMap::new();
        let mut tr = Translator::new(&session.conn, &empty, &sys);
        tr.lenient_vars = true;
        for st in parse_batch(sql)? {
            match st {
                Statement::Query(mut q) => {
                    tr.query(&mut q, false)?;
                }
                Statement::Insert(mut ins) => {
                    dml::insert(&mut tr, &mut ins, &sys.database, None)?;
                }
                Statement::Update {
                    table,
                    mut assignments,
                    from,
                    mut selection,
                    ..
                } => {
                    dml::update(
                        &mut tr,
                        &table,
                        &mut assignments,
                        from.is_some(),
                        selection.as_mut(),
                        &sys.database,
                    )?;
                }
                Statement::Delete(mut del) => {
                    dml::delete(&mut tr, &mut del, &sys.database)?;
                }
                _ => {}
            }
        }
        let mut out: Vec<(String, SqlType)> = Vec::new();
        let default = SqlType::NVarChar(Len::N(4000));
        for (name, ty) in tr.compared {
            match out.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                Some(existing) if existing.1 == default => existing.1 = ty,
                Some(_) => {}
                None => out.push((name, ty)),
            }
        }
        Ok(out)
    }
}
