//! Statement execution: parses a batch, runs each statement against the session's SQLite
//! connection and reports results, DONE, errors and environment changes to the sink.
//!
//! Error handling follows SQL Server with XACT_ABORT OFF: a failing statement is rolled back
//! on its own and the batch goes on, except for the errors `SqlError::aborts_batch` lists
//! (syntax, name resolution, conversion, overflow), which end the batch. A syntax error stops
//! the batch before anything runs, since SQL Server compiles the batch as a whole.

use rusqlite::params_from_iter;
use rusqlite::types::{Value as SqliteValue, ValueRef};
use sqlparser::ast::{
    Expr, ObjectType, Query, SelectItem, SessionParamValue, Set, SetExpr, SetSessionParamKind,
    Statement, Use,
};
use sqlparser::dialect::MsSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::sandbox::engine::catalog;
use crate::sandbox::engine::dml::{self, DmlPlan};
use crate::sandbox::engine::errors::{from_sqlite, SqlError};
use crate::sandbox::engine::procs;
use crate::sandbox::engine::session::{
    ColumnDesc, EnvChange, ResultSink, Session, Variable, MAX_VARIABLES,
};
use crate::sandbox::engine::translate::{name_parts, OutCol, SysValues, Translator};
use crate::sandbox::engine::types::{self, ConvMode, SqlType, Value};
use crate::sandbox::engine::Engine;

/// Longest batch text accepted. SQL Server allows 65,536 * packet size; the sandbox keeps
/// parsing memory bounded with a smaller cap.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Nesting depth of procedure and sp_executesql calls (SQL Server's limit is 32).
pub const MAX_NESTING: u32 = 32;

/// What a statement asks of the statements after it.
pub(crate) enum Flow {
    Continue,
    Return(i32),
}

/// Runs statements for one call into the engine.
pub(crate) struct Exec<'e, 's> {
    pub engine: &'e Engine,
    pub sink: &'s mut dyn ResultSink,
}

pub(crate) fn sys_values(s: &Session) -> SysValues {
    SysValues {
        database: s.database.clone(),
        spid: s.spid,
        tran_count: s.tran_count,
        identity: s.identity,
        scope_identity: s.scope_identity,
        rowcount: s.rowcount,
        error: s.last_error,
    }
}

fn sqlite_err(e: rusqlite::Error) -> SqlError {
    from_sqlite(&e, "")
}

/// Converts parser errors to 102, naming the token the parser stopped at.
fn parse_error(text: &str) -> SqlError {
    let near = text
        .split("found: ")
        .nth(1)
        .map(|rest| {
            rest.split(" at Line")
                .next()
                .unwrap_or(rest)
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    let line = text
        .split("Line: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(1);
    if near.eq_ignore_ascii_case("OUTPUT") {
        return SqlError::unsupported("the OUTPUT clause").at_line(line);
    }
    let near = if near == "EOF" {
        "end of batch".to_string()
    } else {
        near
    };
    SqlError::syntax(&near).at_line(line)
}

fn word_is(t: &TokenWithSpan, w: &str) -> bool {
    matches!(&t.token, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w))
}

/// Adjusts T-SQL the parser does not take as is: `TRAN` after BEGIN/COMMIT/ROLLBACK,
/// CLUSTERED/NONCLUSTERED, and `SET a ON, b ON` lists (split into one SET each).
fn normalize(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let significant = |v: &Vec<TokenWithSpan>, back: usize| {
        v.iter()
            .rev()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .nth(back)
            .cloned()
    };
    for t in tokens {
        if word_is(&t, "CLUSTERED") || word_is(&t, "NONCLUSTERED") {
            continue;
        }
        let prev = significant(&out, 0);
        if word_is(&t, "TRAN")
            && prev.as_ref().is_some_and(|p| {
                word_is(p, "BEGIN") || word_is(p, "COMMIT") || word_is(p, "ROLLBACK")
            })
        {
            out.push(TokenWithSpan {
                token: Token::make_keyword("TRANSACTION"),
                span: t.span,
            });
            continue;
        }
        if t.token == Token::Comma
            && prev
                .as_ref()
                .is_some_and(|p| word_is(p, "ON") || word_is(p, "OFF"))
        {
            let option = significant(&out, 1);
            let before = significant(&out, 2);
            if option.is_some()
                && before.as_ref().is_some_and(|b| {
                    word_is(b, "SET")
                        || b.token == Token::Comma
                        || matches!(&b.token, Token::Word(_))
                })
                && set_list_open(&out)
            {
                out.push(TokenWithSpan {
                    token: Token::SemiColon,
                    span: t.span,
                });
                out.push(TokenWithSpan {
                    token: Token::Whitespace(sqlparser::tokenizer::Whitespace::Space),
                    span: t.span,
                });
                out.push(TokenWithSpan {
                    token: Token::make_keyword("SET"),
                    span: t.span,
                });
                continue;
            }
        }
        out.push(t);
    }
    out
}

/// True when the statement being built started with SET followed by an option name.
fn set_list_open(out: &[TokenWithSpan]) -> bool {
    let mut it = out
        .iter()
        .rev()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)));
    let mut last_two: Vec<&TokenWithSpan> = Vec::new();
    for t in it.by_ref() {
        if t.token == Token::SemiColon {
            break;
        }
        last_two.push(t);
    }
    let first = last_two.last();
    first.is_some_and(|f| word_is(f, "SET"))
        && last_two
            .iter()
            .all(|t| !matches!(&t.token, Token::Word(w) if w.value.starts_with('@')))
}

/// Parses a batch.
pub(crate) fn parse_batch(sql: &str) -> Result<Vec<Statement>, SqlError> {
    if sql.len() > MAX_BATCH_BYTES {
        return Err(SqlError::new(
            40702,
            "The batch is larger than the tdsguard sandbox accepts.",
        ));
    }
    let dialect = MsSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| parse_error(&e.to_string()))?;
    let mut tokens = normalize(tokens);
    // T-SQL does not need `;` between statements; the parser does. Where it stops at a
    // statement keyword expecting the end of a statement, a `;` is inserted and the batch
    // parsed again.
    for _ in 0..MAX_IMPLIED_SEPARATORS {
        let err = match Parser::new(&dialect)
            .with_tokens_with_locations(tokens.clone())
            .parse_statements()
        {
            Ok(statements) => return Ok(statements),
            Err(e) => e.to_string(),
        };
        let Some(at) = separator_position(&tokens, &err) else {
            return Err(parse_error(&err));
        };
        let span = tokens
            .get(at)
            .map(|t| t.span)
            .unwrap_or(sqlparser::tokenizer::Span::empty());
        tokens.insert(
            at,
            TokenWithSpan {
                token: Token::SemiColon,
                span,
            },
        );
    }
    Err(SqlError::unsupported(
        "this many statements without `;` in one batch",
    ))
}

/// Statements one batch may leave without a `;` separator (each costs one more parse).
const MAX_IMPLIED_SEPARATORS: usize = 512;

const STATEMENT_WORDS: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "SET", "DECLARE", "IF", "BEGIN", "COMMIT", "ROLLBACK",
    "EXEC", "EXECUTE", "CREATE", "DROP", "ALTER", "USE", "RETURN", "TRUNCATE", "WITH", "PRINT",
];

/// Index of the statement keyword a parse error stopped at, if a `;` before it could help.
fn separator_position(tokens: &[TokenWithSpan], err: &str) -> Option<usize> {
    if !err.contains("Expected: end of statement") && !err.contains("Expected: ;") {
        return None;
    }
    let line: u64 = err
        .split("Line: ")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()?;
    let column: u64 = err.split("Column: ").nth(1)?.trim().parse().ok()?;
    let at = tokens
        .iter()
        .position(|t| t.span.start.line == line && t.span.start.column == column)?;
    let is_keyword = STATEMENT_WORDS.iter().any(|w| word_is(&tokens[at], w));
    let previous = tokens[..at]
        .iter()
        .rev()
        .find(|t| !matches!(t.token, Token::Whitespace(_)));
    let already = previous.is_some_and(|t| t.token == Token::SemiColon);
    (is_keyword && !already).then_some(at)
}

fn statement_line(st: &Statement) -> u32 {
    use sqlparser::ast::Spanned;
    let line = st.span().start.line;
    u32::try_from(line).unwrap_or(1).max(1)
}

/// Splits a parameter declaration list (`@a int, @b decimal(10,2) OUTPUT`).
pub(crate) fn parse_param_decl(decl: &str) -> Result<Vec<procs::ParamDecl>, SqlError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = decl.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 0 => {
                out.push(procs::ParamDecl::parse(&decl[start..i])?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !decl[start..].trim().is_empty() {
        out.push(procs::ParamDecl::parse(&decl[start..])?);
    }
    Ok(out)
}

impl Exec<'_, '_> {
    /// Runs a batch. Returns the RETURN status if a RETURN statement ended it.
    pub fn batch(&mut self, s: &mut Session, sql: &str) -> Option<i32> {
        if let Some(def) = procs::create_procedure_text(sql) {
            self.run_one(s, 1, |ex, s| ex.create_procedure(s, def));
            return None;
        }
        let statements = match parse_batch(sql) {
            Ok(st) => st,
            Err(e) => {
                self.fail(s, e);
                return None;
            }
        };
        self.statements(s, statements)
    }

    fn statements(&mut self, s: &mut Session, statements: Vec<Statement>) -> Option<i32> {
        for st in statements {
            let line = statement_line(&st);
            match self.run_one(s, line, |ex, s| ex.statement(s, st)) {
                Some(Flow::Return(status)) => return Some(status),
                Some(Flow::Continue) => {}
                None if s.last_abort => return None,
                None => {}
            }
        }
        None
    }

    fn run_one(
        &mut self,
        s: &mut Session,
        line: u32,
        f: impl FnOnce(&mut Self, &mut Session) -> Result<Flow, SqlError>,
    ) -> Option<Flow> {
        s.last_abort = false;
        match f(self, s) {
            Ok(flow) => Some(flow),
            Err(e) => {
                let line = if e.line > 1 { e.line } else { line };
                s.last_abort = e.aborts_batch();
                self.fail(s, e.at_line(line));
                None
            }
        }
    }

    fn fail(&mut self, s: &mut Session, e: SqlError) {
        s.last_error = e.number;
        s.rowcount = 0;
        self.sink.error(e);
        let done = s.done(None, true);
        self.sink.done(done);
    }

    fn ok(&mut self, s: &mut Session, count: Option<u64>) -> Result<Flow, SqlError> {
        s.last_error = 0;
        s.rowcount = count.unwrap_or(0);
        let done = s.done(count, false);
        self.sink.done(done);
        Ok(Flow::Continue)
    }

    fn statement(&mut self, s: &mut Session, st: Statement) -> Result<Flow, SqlError> {
        match st {
            Statement::Query(q) => self.select(s, q),
            Statement::Insert(mut ins) => {
                let db = s.database.clone();
                let ident_insert = s.options.identity_insert.clone();
                let plan = self.with_translator(s, |tr| {
                    dml::insert(tr, &mut ins, &db, ident_insert.as_deref())
                })?;
                self.run_dml(s, plan)
            }
            Statement::Update {
                table,
                mut assignments,
                from,
                mut selection,
                ..
            } => {
                let db = s.database.clone();
                let plan = self.with_translator(s, |tr| {
                    dml::update(
                        tr,
                        &table,
                        &mut assignments,
                        from.is_some(),
                        selection.as_mut(),
                        &db,
                    )
                })?;
                self.run_dml(s, plan)
            }
            Statement::Delete(mut del) => {
                let db = s.database.clone();
                let plan = self.with_translator(s, |tr| dml::delete(tr, &mut del, &db))?;
                self.run_dml(s, plan)
            }
            Statement::Truncate { table_names, .. } => self.truncate(s, &table_names),
            Statement::CreateTable(ct) => self.create_table(s, &ct),
            Statement::CreateIndex(ci) => self.create_index(s, &ci),
            Statement::AlterTable {
                name, operations, ..
            } => self.alter_table(s, &name, &operations),
            Statement::Drop {
                object_type,
                if_exists,
                names,
                ..
            } => self.drop(s, object_type, if_exists, &names),
            Statement::DropProcedure {
                if_exists,
                proc_desc,
                ..
            } => {
                let names: Vec<_> = proc_desc.into_iter().map(|d| d.name).collect();
                self.drop_objects(s, ("P", "procedure"), if_exists, &names)
            }
            Statement::CreateDatabase {
                db_name,
                if_not_exists,
                ..
            } => {
                self.engine
                    .create_database(&name_parts(&db_name).join("."), if_not_exists)?;
                self.ok(s, None)
            }
            Statement::Use(u) => self.use_database(s, &u),
            Statement::StartTransaction { .. } => self.begin(s),
            Statement::Commit { .. } => self.commit(s),
            Statement::Rollback {
                savepoint: None, ..
            } => self.rollback(s),
            Statement::Set(set) => self.set(s, set),
            Statement::Declare { stmts } => self.declare(s, stmts),
            Statement::If(ifs) => self.if_statement(s, ifs),
            Statement::Execute {
                name: Some(name),
                parameters,
                ..
            } => self.execute(s, &name, parameters),
            Statement::Return(r) => {
                let status = match r.value {
                    Some(sqlparser::ast::ReturnStatementValue::Expr(e)) => {
                        match self.eval(s, &e)?.0 {
                            Value::Int(n) => i32::try_from(n).unwrap_or(0),
                            _ => 0,
                        }
                    }
                    None => 0,
                };
                Ok(Flow::Return(status))
            }
            other => Err(SqlError::unsupported(format!(
                "the statement '{}'",
                first_words(&other.to_string())
            ))),
        }
    }

    fn with_translator<T>(
        &mut self,
        s: &mut Session,
        f: impl FnOnce(&mut Translator<'_>) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let sys = sys_values(s);
        let (result, views) = {
            let mut tr = Translator::new(&s.conn, &s.vars, &sys);
            let r = f(&mut tr);
            (r, tr.views.clone())
        };
        let value = result?;
        self.refresh_views(s, &views)?;
        Ok(value)
    }

    fn refresh_views(
        &self,
        s: &Session,
        views: &[&'static catalog::ViewDef],
    ) -> Result<(), SqlError> {
        if views.is_empty() {
            return Ok(());
        }
        let dbs = self.engine.databases_sql()?;
        for v in views {
            catalog::refresh_view(&s.conn, v, &s.database, &dbs)?;
        }
        Ok(())
    }

    /// Translates a query; returns SQL, binds and columns.
    pub fn translate_query(
        &mut self,
        s: &mut Session,
        q: &mut Query,
        raw: bool,
    ) -> Result<(String, Vec<SqliteValue>, Vec<OutCol>), SqlError> {
        let sys = sys_values(s);
        let (cols, binds, views) = {
            let mut tr = Translator::new(&s.conn, &s.vars, &sys);
            let cols = tr.query(q, raw)?;
            (cols, std::mem::take(&mut tr.binds), tr.views.clone())
        };
        self.refresh_views(s, &views)?;
        Ok((q.to_string(), binds, cols))
    }

    fn select(&mut self, s: &mut Session, mut q: Box<Query>) -> Result<Flow, SqlError> {
        if let Some(targets) = assignment_targets(&mut q) {
            return self.select_assign(s, q, targets);
        }
        let (sql, binds, cols) = self.translate_query(s, &mut q, true)?;
        let n = self.stream(s, &sql, &binds, &cols)?;
        self.ok(s, Some(n))
    }

    /// Runs a query and streams its rows to the sink.
    pub fn stream(
        &mut self,
        s: &Session,
        sql: &str,
        binds: &[SqliteValue],
        cols: &[OutCol],
    ) -> Result<u64, SqlError> {
        let descs: Vec<ColumnDesc> = cols.iter().map(|c| c.desc.clone()).collect();
        let mut stmt = s.conn.prepare_cached(sql).map_err(sqlite_err)?;
        self.sink.columns(&descs);
        if s.options.fmtonly {
            return Ok(0);
        }
        let mut rows = stmt
            .query(params_from_iter(binds.iter()))
            .map_err(sqlite_err)?;
        let mut buf: Vec<Value> = Vec::with_capacity(cols.len());
        let mut count = 0u64;
        while let Some(row) = rows.next().map_err(sqlite_err)? {
            buf.clear();
            for (i, c) in cols.iter().enumerate() {
                let v = row.get_ref(i).map_err(sqlite_err)?;
                buf.push(types::from_sqlite(v, &c.desc.ty, c.raw_scaled)?);
            }
            self.sink.row(&buf);
            count += 1;
        }
        Ok(count)
    }

    fn select_assign(
        &mut self,
        s: &mut Session,
        mut q: Box<Query>,
        targets: Vec<String>,
    ) -> Result<Flow, SqlError> {
        let (sql, binds, _) = self.translate_query(s, &mut q, false)?;
        let mut rows_seen = 0u64;
        let mut last: Option<Vec<SqliteValue>> = None;
        {
            let mut stmt = s.conn.prepare_cached(&sql).map_err(sqlite_err)?;
            let mut rows = stmt
                .query(params_from_iter(binds.iter()))
                .map_err(sqlite_err)?;
            while let Some(row) = rows.next().map_err(sqlite_err)? {
                rows_seen += 1;
                let mut vals = Vec::with_capacity(targets.len());
                for i in 0..targets.len() {
                    vals.push(row.get::<_, SqliteValue>(i).map_err(sqlite_err)?);
                }
                last = Some(vals);
            }
        }
        if let Some(vals) = last {
            for (name, v) in targets.iter().zip(vals) {
                assign(s, name, ValueRef::from(&v))?;
            }
        }
        self.ok(s, Some(rows_seen))
    }

    fn run_dml(&mut self, s: &mut Session, plan: DmlPlan) -> Result<Flow, SqlError> {
        if s.options.fmtonly {
            return self.ok(s, None);
        }
        let label = plan.label.clone();
        let n = match plan.identity_bind {
            Some(_) => self.run_identity_insert(s, plan)?,
            None => s
                .conn
                .prepare_cached(&plan.sql)
                .and_then(|mut st| st.execute(params_from_iter(plan.binds.iter())))
                .map_err(|e| from_sqlite(&e, &label))? as u64,
        };
        self.ok(s, Some(n))
    }

    fn run_identity_insert(&mut self, s: &mut Session, mut plan: DmlPlan) -> Result<u64, SqlError> {
        let slot = plan.identity_bind.unwrap_or(0);
        s.conn
            .execute_batch("SAVEPOINT __tds_identity")
            .map_err(sqlite_err)?;
        let result = (|| {
            let next = catalog::identity_next(&s.conn, plan.table.object_id)?;
            if let Some(b) = slot.checked_sub(1).and_then(|i| plan.binds.get_mut(i)) {
                *b = SqliteValue::Integer(next);
            }
            let n = s
                .conn
                .prepare_cached(&plan.sql)
                .and_then(|mut st| st.execute(params_from_iter(plan.binds.iter())))
                .map_err(|e| from_sqlite(&e, &plan.label))? as i64;
            let incr = plan.table.identity_increment.unwrap_or(1);
            if n > 0 {
                catalog::set_identity_next(&s.conn, plan.table.object_id, next + n * incr)?;
            }
            Ok::<_, SqlError>((n, next + (n - 1) * incr))
        })();
        match result {
            Ok((n, last)) => {
                s.conn
                    .execute_batch("RELEASE __tds_identity")
                    .map_err(sqlite_err)?;
                if n > 0 {
                    s.identity = Some(last);
                    s.scope_identity = Some(last);
                }
                Ok(n as u64)
            }
            Err(e) => {
                let _ = s
                    .conn
                    .execute_batch("ROLLBACK TO __tds_identity; RELEASE __tds_identity");
                Err(e)
            }
        }
    }

    fn truncate(
        &mut self,
        s: &mut Session,
        names: &[sqlparser::ast::TruncateTableTarget],
    ) -> Result<Flow, SqlError> {
        for t in names {
            let parts = name_parts(&t.name);
            let name = parts.last().cloned().unwrap_or_default();
            let table = catalog::table(&s.conn, &name)?
                .ok_or_else(|| SqlError::invalid_object(&t.name.to_string()))?;
            // TODO(tdsguard): TRUNCATE should also reset the identity to its seed.
            s.conn
                .execute(
                    &format!("DELETE FROM {}", dml::quote(&table.sqlite_name)),
                    [],
                )
                .map_err(sqlite_err)?;
        }
        self.ok(s, None)
    }

    fn in_savepoint(s: &Session, f: impl FnOnce() -> Result<(), SqlError>) -> Result<(), SqlError> {
        s.conn
            .execute_batch("SAVEPOINT __tds_ddl")
            .map_err(sqlite_err)?;
        match f() {
            Ok(()) => s
                .conn
                .execute_batch("RELEASE __tds_ddl")
                .map_err(sqlite_err),
            Err(e) => {
                let _ = s
                    .conn
                    .execute_batch("ROLLBACK TO __tds_ddl; RELEASE __tds_ddl");
                Err(e)
            }
        }
    }

    fn create_table(
        &mut self,
        s: &mut Session,
        ct: &sqlparser::ast::CreateTable,
    ) -> Result<Flow, SqlError> {
        let plan = self.with_translator(s, |tr| dml::create_table(tr, ct))?;
        if catalog::object_id(&s.conn, &plan.name, None)?.is_some() {
            if ct.if_not_exists {
                return self.ok(s, None);
            }
            return Err(SqlError::new(
                2714,
                format!(
                    "There is already an object named '{}' in the database.",
                    plan.name
                ),
            ));
        }
        Self::in_savepoint(s, || {
            s.conn.execute_batch(&plan.sql).map_err(sqlite_err)?;
            let id = catalog::add_object(&s.conn, &plan.name, "U", None, plan.identity)?;
            for (i, col) in plan.columns.iter().enumerate() {
                catalog::add_column(&s.conn, id, i as i64 + 1, col)?;
            }
            Ok(())
        })?;
        self.ok(s, None)
    }

    fn create_index(
        &mut self,
        s: &mut Session,
        ci: &sqlparser::ast::CreateIndex,
    ) -> Result<Flow, SqlError> {
        let table_parts = name_parts(&ci.table_name);
        let table_name = table_parts.last().cloned().unwrap_or_default();
        let table = catalog::table(&s.conn, &table_name)?
            .ok_or_else(|| SqlError::invalid_object(&ci.table_name.to_string()))?;
        let index = ci
            .name
            .as_ref()
            .map(|n| name_parts(n).join("_"))
            .unwrap_or_else(|| "ix".into());
        let cols: Vec<String> = ci
            .columns
            .iter()
            .map(|c| c.to_string().replace(['[', ']'], "\""))
            .collect();
        let sql = format!(
            "CREATE {}INDEX {}{} ON {} ({})",
            if ci.unique { "UNIQUE " } else { "" },
            if ci.if_not_exists {
                "IF NOT EXISTS "
            } else {
                ""
            },
            dml::quote(&format!("{}__{index}", table.sqlite_name)),
            dml::quote(&table.sqlite_name),
            cols.join(", ")
        );
        s.conn
            .execute_batch(&sql)
            .map_err(|e| from_sqlite(&e, &table.name))?;
        self.ok(s, None)
    }

    fn alter_table(
        &mut self,
        s: &mut Session,
        name: &sqlparser::ast::ObjectName,
        ops: &[sqlparser::ast::AlterTableOperation],
    ) -> Result<Flow, SqlError> {
        let parts = name_parts(name);
        let table = catalog::table(
            &s.conn,
            parts.last().map(String::as_str).unwrap_or_default(),
        )?
        .ok_or_else(|| SqlError::invalid_object(&name.to_string()))?;
        for op in ops {
            let sqlparser::ast::AlterTableOperation::AddColumn { column_def, .. } = op else {
                return Err(SqlError::unsupported(format!(
                    "ALTER TABLE {}",
                    first_words(&op.to_string())
                )));
            };
            let (sql, info) =
                self.with_translator(s, |tr| dml::add_column(tr, &table, column_def))?;
            let next_id = table.columns.len() as i64 + 1;
            Self::in_savepoint(s, || {
                s.conn.execute_batch(&sql).map_err(sqlite_err)?;
                catalog::add_column(&s.conn, table.object_id, next_id, &info)
            })?;
        }
        self.ok(s, None)
    }

    fn drop(
        &mut self,
        s: &mut Session,
        kind: ObjectType,
        if_exists: bool,
        names: &[sqlparser::ast::ObjectName],
    ) -> Result<Flow, SqlError> {
        let (code, word) = match kind {
            ObjectType::Table => ("U", "table"),
            _ => return Err(SqlError::unsupported(format!("DROP {kind}"))),
        };
        self.drop_objects(s, (code, word), if_exists, names)
    }

    fn drop_objects(
        &mut self,
        s: &mut Session,
        (code, word): (&str, &str),
        if_exists: bool,
        names: &[sqlparser::ast::ObjectName],
    ) -> Result<Flow, SqlError> {
        for n in names {
            let parts = name_parts(n);
            let name = parts.last().cloned().unwrap_or_default();
            let Some(id) = catalog::object_id(&s.conn, &name, Some(code))? else {
                if if_exists {
                    continue;
                }
                return Err(SqlError::new(3701, format!("Cannot drop the {word} '{n}', because it does not exist or you do not have permission.")));
            };
            Self::in_savepoint(s, || {
                if code == "U" {
                    s.conn
                        .execute_batch(&format!("DROP TABLE {}", dml::quote(&name)))
                        .map_err(sqlite_err)?;
                }
                catalog::drop_object(&s.conn, id)
            })?;
        }
        self.ok(s, None)
    }

    fn use_database(&mut self, s: &mut Session, u: &Use) -> Result<Flow, SqlError> {
        let (Use::Object(name) | Use::Database(name)) = u else {
            return Err(SqlError::unsupported("this USE form"));
        };
        let name = name_parts(name).join(".");
        if s.tran_count > 0 {
            // TODO(tdsguard): one SQLite connection per database means no cross-database
            // transaction; SQL Server allows USE inside a transaction.
            return Err(SqlError::unsupported("USE inside a transaction"));
        }
        let (canonical, conn) = self.engine.connect(&name)?;
        let old = std::mem::replace(&mut s.database, canonical.clone());
        s.conn = conn;
        self.sink.env_change(EnvChange::Database {
            old,
            new: canonical.clone(),
        });
        self.sink.error(SqlError::info(
            5701,
            format!("Changed database context to '{canonical}'."),
        ));
        self.ok(s, None)
    }

    fn begin(&mut self, s: &mut Session) -> Result<Flow, SqlError> {
        if s.tran_count == 0 {
            s.conn.execute_batch("BEGIN").map_err(sqlite_err)?;
            s.tran_descriptor = s.next_descriptor;
            s.next_descriptor += 1;
            self.sink.env_change(EnvChange::BeginTran {
                descriptor: s.tran_descriptor,
            });
        }
        s.tran_count += 1;
        self.ok(s, None)
    }

    fn commit(&mut self, s: &mut Session) -> Result<Flow, SqlError> {
        if s.tran_count == 0 {
            return Err(SqlError::new(
                3902,
                "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
            ));
        }
        s.tran_count -= 1;
        if s.tran_count == 0 {
            s.conn.execute_batch("COMMIT").map_err(sqlite_err)?;
            let descriptor = std::mem::take(&mut s.tran_descriptor);
            self.sink.env_change(EnvChange::Commit { descriptor });
        }
        self.ok(s, None)
    }

    fn rollback(&mut self, s: &mut Session) -> Result<Flow, SqlError> {
        if s.tran_count == 0 {
            return Err(SqlError::new(
                3903,
                "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
            ));
        }
        s.tran_count = 0;
        s.conn.execute_batch("ROLLBACK").map_err(sqlite_err)?;
        let descriptor = std::mem::take(&mut s.tran_descriptor);
        self.sink.env_change(EnvChange::Rollback { descriptor });
        self.ok(s, None)
    }

    fn set(&mut self, s: &mut Session, set: Set) -> Result<Flow, SqlError> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = name_parts(&variable).join(".");
                if !name.starts_with('@') {
                    return self.ok(s, None);
                }
                let [value] = values.as_slice() else {
                    return Err(SqlError::syntax(","));
                };
                let v = self.eval_raw(s, value)?;
                assign(s, &name, ValueRef::from(&v))?;
                self.ok(s, None)
            }
            Set::SetSessionParam(SetSessionParamKind::Generic(g)) => {
                let on = g.value.eq_ignore_ascii_case("ON");
                for n in &g.names {
                    match n.to_ascii_uppercase().as_str() {
                        "NOCOUNT" => s.options.nocount = on,
                        "FMTONLY" => s.options.fmtonly = on,
                        _ => {}
                    }
                }
                self.ok(s, None)
            }
            Set::SetSessionParam(SetSessionParamKind::IdentityInsert(ii)) => {
                let parts = name_parts(&ii.obj);
                let table = parts.last().cloned().unwrap_or_default();
                if catalog::table(&s.conn, &table)?.is_none() {
                    return Err(SqlError::invalid_object(&ii.obj.to_string()));
                }
                s.options.identity_insert =
                    matches!(ii.value, SessionParamValue::On).then_some(table);
                self.ok(s, None)
            }
            // Other SET forms (isolation level, statistics, offsets) are accepted and ignored.
            _ => self.ok(s, None),
        }
    }

    fn declare(
        &mut self,
        s: &mut Session,
        stmts: Vec<sqlparser::ast::Declare>,
    ) -> Result<Flow, SqlError> {
        for d in stmts {
            let Some(dt) = d.data_type else {
                return Err(SqlError::unsupported(
                    "DECLARE without a type (cursors, tables)",
                ));
            };
            let ty = SqlType::parse(&dt.to_string())?;
            for n in &d.names {
                let key = n.value.to_ascii_lowercase();
                if s.vars.contains_key(&key) {
                    return Err(SqlError::new(134, format!("The variable name '{}' has already been declared. Variable names must be unique within a query batch or stored procedure.", n.value)));
                }
                if s.vars.len() >= MAX_VARIABLES {
                    return Err(SqlError::unsupported("more variables in one batch"));
                }
                s.vars.insert(
                    key,
                    Variable {
                        ty,
                        value: Value::Null,
                    },
                );
            }
            if let Some(
                sqlparser::ast::DeclareAssignment::Expr(e)
                | sqlparser::ast::DeclareAssignment::Default(e),
            ) = d.assignment
            {
                let v = self.eval_raw(s, &e)?;
                for n in &d.names {
                    assign(s, &n.value, ValueRef::from(&v))?;
                }
            }
        }
        self.ok(s, None)
    }

    fn if_statement(
        &mut self,
        s: &mut Session,
        ifs: sqlparser::ast::IfStatement,
    ) -> Result<Flow, SqlError> {
        let blocks = std::iter::once(ifs.if_block)
            .chain(ifs.elseif_blocks)
            .chain(ifs.else_block);
        for block in blocks {
            let taken = match &block.condition {
                Some(cond) => {
                    let text = format!("CASE WHEN {cond} THEN 1 ELSE 0 END");
                    let e = Parser::new(&MsSqlDialect {})
                        .try_with_sql(&text)
                        .and_then(|mut p| p.parse_expr())
                        .map_err(|e| parse_error(&e.to_string()))?;
                    matches!(self.eval(s, &e)?.0, Value::Int(1))
                }
                None => true,
            };
            if taken {
                let statements = block.conditional_statements.statements().clone();
                return Ok(match self.statements(s, statements) {
                    Some(status) => Flow::Return(status),
                    None => Flow::Continue,
                });
            }
        }
        Ok(Flow::Continue)
    }

    /// Evaluates a scalar expression to its SQLite (expression-form) value.
    fn eval_raw(&mut self, s: &mut Session, e: &Expr) -> Result<SqliteValue, SqlError> {
        let (sql, binds, _) = self.eval_query(s, e)?;
        s.conn
            .query_row(&sql, params_from_iter(binds.iter()), |r| {
                r.get::<_, SqliteValue>(0)
            })
            .map_err(|e| from_sqlite(&e, ""))
    }

    fn eval_query(
        &mut self,
        s: &mut Session,
        e: &Expr,
    ) -> Result<(String, Vec<SqliteValue>, Vec<OutCol>), SqlError> {
        let text = format!("SELECT {e}");
        let mut st =
            Parser::parse_sql(&MsSqlDialect {}, &text).map_err(|e| parse_error(&e.to_string()))?;
        let Some(Statement::Query(mut q)) = st.pop() else {
            return Err(SqlError::syntax(&e.to_string()));
        };
        self.translate_query(s, &mut q, false)
    }

    /// Evaluates a scalar expression to a typed value.
    pub fn eval(&mut self, s: &mut Session, e: &Expr) -> Result<(Value, SqlType), SqlError> {
        let (sql, binds, cols) = self.eval_query(s, e)?;
        let ty = cols.first().map(|c| c.desc.ty).unwrap_or(SqlType::Int);
        let v: SqliteValue = s
            .conn
            .query_row(&sql, params_from_iter(binds.iter()), |r| r.get(0))
            .map_err(|e| from_sqlite(&e, ""))?;
        Ok((types::from_sqlite(ValueRef::from(&v), &ty, false)?, ty))
    }

    fn execute(
        &mut self,
        s: &mut Session,
        name: &sqlparser::ast::ObjectName,
        parameters: Vec<Expr>,
    ) -> Result<Flow, SqlError> {
        let proc_name = name_parts(name).last().cloned().unwrap_or_default();
        let mut args = Vec::with_capacity(parameters.len());
        for p in parameters {
            let (arg_name, expr) = match p {
                Expr::BinaryOp {
                    left,
                    op: sqlparser::ast::BinaryOperator::Eq,
                    right,
                } => match *left {
                    Expr::Identifier(id) if id.value.starts_with('@') => (id.value, *right),
                    other => (
                        String::new(),
                        Expr::BinaryOp {
                            left: Box::new(other),
                            op: sqlparser::ast::BinaryOperator::Eq,
                            right,
                        },
                    ),
                },
                other => (String::new(), other),
            };
            let target = match &expr {
                Expr::Identifier(id)
                    if id.value.starts_with('@') && !id.value.starts_with("@@") =>
                {
                    Some(id.value.clone())
                }
                _ => None,
            };
            let (value, ty) = self.eval(s, &expr)?;
            args.push(procs::Arg {
                name: arg_name,
                ty,
                value,
                target,
            });
        }
        self.call(s, &proc_name, args)?;
        Ok(Flow::Continue)
    }

    /// Calls a system or user procedure.
    pub fn call(
        &mut self,
        s: &mut Session,
        name: &str,
        args: Vec<procs::Arg>,
    ) -> Result<(), SqlError> {
        if s.proc_depth >= MAX_NESTING {
            return Err(SqlError::new(217, "Maximum stored procedure, function, trigger, or view nesting level exceeded (limit 32)."));
        }
        procs::call(self, s, name, args)
    }

    fn create_procedure(
        &mut self,
        s: &mut Session,
        def: procs::ProcText,
    ) -> Result<Flow, SqlError> {
        procs::ProcDef::parse(&def.text)?;
        if let Some(id) = catalog::object_id(&s.conn, &def.name, Some("P"))? {
            if !def.or_alter {
                return Err(SqlError::new(
                    2714,
                    format!(
                        "There is already an object named '{}' in the database.",
                        def.name
                    ),
                ));
            }
            catalog::drop_object(&s.conn, id)?;
        }
        catalog::add_object(&s.conn, &def.name, "P", Some(&def.text), None)?;
        self.ok(s, None)
    }

    /// Runs a batch as a nested scope with its own variables (procedure body, sp_executesql).
    pub fn nested(
        &mut self,
        s: &mut Session,
        sql: &str,
        vars: std::collections::HashMap<String, Variable>,
        in_proc: bool,
    ) -> (Option<i32>, std::collections::HashMap<String, Variable>) {
        let saved = std::mem::replace(&mut s.vars, vars);
        let saved_scope = s.scope_identity;
        if in_proc {
            s.proc_depth += 1;
        }
        let status = self.batch(s, sql);
        if in_proc {
            s.proc_depth -= 1;
        }
        s.scope_identity = saved_scope;
        let inner = std::mem::replace(&mut s.vars, saved);
        (status, inner)
    }
}

fn first_words(text: &str) -> String {
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `SELECT @a = x, @b = y ...`: returns the variable names and leaves plain items behind.
fn assignment_targets(q: &mut Query) -> Option<Vec<String>> {
    let SetExpr::Select(sel) = q.body.as_mut() else {
        return None;
    };
    let all = !sel.projection.is_empty()
        && sel.projection.iter().all(|i| matches!(i, SelectItem::ExprWithAlias { alias, .. } if alias.value.starts_with('@')));
    if !all {
        return None;
    }
    let mut names = Vec::with_capacity(sel.projection.len());
    for item in sel.projection.iter_mut() {
        if let SelectItem::ExprWithAlias { expr, alias } = item {
            names.push(alias.value.clone());
            *item = SelectItem::UnnamedExpr(std::mem::replace(
                expr,
                Expr::value(sqlparser::ast::Value::Null),
            ));
        }
    }
    Some(names)
}

/// Assigns a value to a declared variable, converting it to the variable's type.
pub(crate) fn assign(s: &mut Session, name: &str, v: ValueRef<'_>) -> Result<(), SqlError> {
    let key = name.to_ascii_lowercase();
    let ty = s
        .vars
        .get(&key)
        .map(|v| v.ty)
        .ok_or_else(|| SqlError::undeclared(name))?;
    let stored = types::to_storage(v, &ty, ConvMode::Cast, ("", ""))?;
    let value = types::from_sqlite(ValueRef::from(&stored), &ty, false)?;
    if let Some(var) = s.vars.get_mut(&key) {
        var.value = value;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_normalization() {
        assert!(parse_batch("BEGIN TRAN; COMMIT TRAN").is_ok());
        assert_eq!(
            parse_batch("SET ANSI_WARNINGS ON, ANSI_PADDING ON")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_batch("CREATE TABLE t (id int PRIMARY KEY CLUSTERED)").is_ok());
    }

    #[test]
    fn statements_without_separators() {
        assert_eq!(
            parse_batch(
                "SET NOCOUNT ON\nSELECT 1\nSELECT 2 FROM t WHERE a = 1\nINSERT INTO t VALUES (1)"
            )
            .unwrap()
            .len(),
            4
        );
    }

    #[test]
    fn syntax_errors_name_the_token() {
        let err = parse_batch("SELECT * FORM t").unwrap_err();
        assert_eq!(err.number, 102);
        assert!(err.message.contains("t"), "{}", err.message);
    }

    #[test]
    fn parameter_declarations() {
        let d = parse_param_decl("@a int, @b decimal(10, 2) OUTPUT").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[1].ty,
            SqlType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert!(d[1].output);
    }
}
