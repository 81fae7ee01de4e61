//! T-SQL to SQLite translation on sqlparser's MsSql AST, with SQL Server result typing.
//!
//! The translator rewrites a parsed statement in place (names, literals, functions, TOP,
//! variables) and infers the declared type of every result column. Variables, parameters and
//! `@@` values become SQLite bind parameters. Decimal columns are stored scaled (see
//! `types`): a bare decimal column in a select list, or MIN/MAX/SUM of one, is read raw and
//! exact; anywhere else the column is divided by 10^scale. Constructs outside the supported
//! subset fail with an error naming them.

use std::collections::HashMap;

use rusqlite::types::Value as SqliteValue;
use rusqlite::Connection;
use sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, GroupByExpr, Ident, LimitClause, ObjectName, ObjectNamePart, OffsetRows,
    OrderByKind, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, TableFactor,
    TableWithJoins, UnaryOperator, Value as AstValue,
};

use crate::sandbox::engine::catalog::{self, ColumnInfo, TableInfo, ViewDef};
use crate::sandbox::engine::errors::SqlError;
use crate::sandbox::engine::session::{ColumnDesc, Variable, DEFAULT_COLLATION};
use crate::sandbox::engine::types::{pow10, Len, SqlType, Storage};

/// Text of @@VERSION.
pub const VERSION_TEXT: &str = "Microsoft SQL Server 2022 (RTM) - 16.0.1000.6 (X64) \n\t\
    tdsguard sandbox: an embedded stand-in on SQLite, not a SQL Server\n\t\
    Copyright (C) 2022 Microsoft Corporation\n\tDeveloper Edition (64-bit)";

/// Values of `@@` functions and other session facts the translator binds.
pub(crate) struct SysValues {
    pub database: String,
    pub spid: u16,
    pub tran_count: u32,
    pub identity: Option<i64>,
    pub scope_identity: Option<i64>,
    pub rowcount: u64,
    pub error: i32,
}

/// One result column and how to read it.
#[derive(Debug, Clone)]
pub(crate) struct OutCol {
    pub desc: ColumnDesc,
    /// The SQLite value is a scaled integer (a stored decimal column read directly).
    pub raw_scaled: bool,
}

/// Inferred type of an expression.
#[derive(Debug, Clone)]
pub(crate) struct Ty {
    ty: SqlType,
    nullable: bool,
    raw: bool,
    identity: bool,
    table: Option<String>,
}

impl Ty {
    fn of(ty: SqlType, nullable: bool) -> Self {
        Ty {
            ty,
            nullable,
            raw: false,
            identity: false,
            table: None,
        }
    }
}

struct ScopeEntry {
    alias: String,
    alias_ident: Ident,
    table: TableInfo,
}

/// Translates one statement. Holds the binds produced so far.
pub(crate) struct Translator<'a> {
    conn: &'a Connection,
    vars: &'a HashMap<String, Variable>,
    sys: &'a SysValues,
    pub binds: Vec<SqliteValue>,
    pub views: Vec<&'static ViewDef>,
    scopes: Vec<Vec<ScopeEntry>>,
    /// Names and declared types of variables the statement reads, for parameter inference.
    pub compared: Vec<(String, SqlType)>,
    /// Unknown `@names` are recorded instead of raising 137 (describe_undeclared_parameters).
    pub lenient_vars: bool,
}

fn ident(s: &str) -> Ident {
    Ident::with_quote('"', s)
}

fn number(text: &str) -> Expr {
    Expr::Value(AstValue::Number(text.to_string(), false).with_empty_span())
}

fn string(text: &str) -> Expr {
    Expr::Value(AstValue::SingleQuotedString(text.to_string()).with_empty_span())
}

/// A call of a SQLite function with plain arguments.
pub(crate) fn call(name: &str, args: Vec<Expr>) -> Expr {
    let args = args
        .into_iter()
        .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
        .collect();
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args,
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Name parts of an object name, without quotes.
pub(crate) fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Splits `db.schema.name` into (database, schema, name); empty parts are None.
pub(crate) fn split_name(parts: &[String]) -> (Option<&str>, Option<&str>, &str) {
    fn non_empty(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    match parts {
        [n] => (None, None, n),
        [s, n] => (None, non_empty(s), n),
        [d, s, n] => (non_empty(d), non_empty(s), n),
        [.., d, s, n] => (non_empty(d), non_empty(s), n),
        [] => (None, None, ""),
    }
}

/// Rank of a type in SQL Server's data type precedence (higher wins), for the common types.
fn precedence(ty: &SqlType) -> u8 {
    match ty {
        SqlType::DateTimeOffset(_) => 30,
        SqlType::DateTime2(_) => 29,
        SqlType::DateTime => 28,
        SqlType::SmallDateTime => 27,
        SqlType::Date => 26,
        SqlType::Time(_) => 25,
        SqlType::Float { .. } => 24,
        SqlType::Real => 23,
        SqlType::Decimal { .. } | SqlType::Numeric { .. } => 22,
        SqlType::Money => 21,
        SqlType::SmallMoney => 20,
        SqlType::BigInt => 19,
        SqlType::Int => 18,
        SqlType::SmallInt => 17,
        SqlType::TinyInt => 16,
        SqlType::Bit => 15,
        SqlType::UniqueIdentifier => 12,
        SqlType::NVarChar(_) => 11,
        SqlType::NChar(_) => 10,
        SqlType::VarChar(_) => 9,
        SqlType::Char(_) => 8,
        SqlType::VarBinary(_) => 7,
        SqlType::Binary(_) => 6,
    }
}

fn char_len(ty: &SqlType) -> Option<u32> {
    match ty {
        SqlType::VarChar(Len::Max) | SqlType::NVarChar(Len::Max) => None,
        other => Some(other.length_limit().unwrap_or(30)),
    }
}

fn concat_type(a: &SqlType, b: &SqlType) -> SqlType {
    let unicode = matches!(a, SqlType::NVarChar(_) | SqlType::NChar(_))
        || matches!(b, SqlType::NVarChar(_) | SqlType::NChar(_));
    let (cap, total) = match (char_len(a), char_len(b)) {
        (Some(x), Some(y)) => (if unicode { 4000 } else { 8000 }, Some(x + y)),
        _ => (0, None),
    };
    let len = match total {
        Some(n) if n <= cap => Len::N(n),
        _ => Len::Max,
    };
    if unicode {
        SqlType::NVarChar(len)
    } else {
        SqlType::VarChar(len)
    }
}

fn arith_type(a: &SqlType, b: &SqlType) -> SqlType {
    let decimal_scale = |t: &SqlType| match t.storage() {
        Storage::Scaled(s) => Some(s),
        _ => None,
    };
    let winner = if precedence(a) >= precedence(b) {
        *a
    } else {
        *b
    };
    match (decimal_scale(a), decimal_scale(b)) {
        (Some(x), Some(y)) if matches!(winner.storage(), Storage::Scaled(_)) => SqlType::Decimal {
            precision: 38,
            scale: x.max(y),
        },
        _ if winner.is_character() => *if a.is_character() { b } else { a },
        _ => winner,
    }
}

/// `-<number>` as one negative number literal.
fn negated_literal(e: &Expr) -> Option<AstValue> {
    let Expr::UnaryOp {
        op: UnaryOperator::Minus,
        expr,
    } = e
    else {
        return None;
    };
    let Expr::Value(v) = &**expr else {
        return None;
    };
    match &v.value {
        AstValue::Number(text, long) if !text.starts_with('-') => {
            Some(AstValue::Number(format!("-{text}"), *long))
        }
        _ => None,
    }
}

fn literal_number_type(text: &str) -> SqlType {
    if text.contains(['e', 'E']) {
        return SqlType::Float { mantissa_bits: 53 };
    }
    if let Some((int, frac)) = text.split_once('.') {
        let digits = int.trim_start_matches('-').trim_start_matches('0').len() + frac.len();
        let precision = digits.clamp(1, 38) as u8;
        return SqlType::Numeric {
            precision: precision.max(frac.len() as u8),
            scale: frac.len().min(38) as u8,
        };
    }
    match text.parse::<i64>() {
        Ok(n) if i32::try_from(n).is_ok() => SqlType::Int,
        Ok(_) => SqlType::BigInt,
        Err(_) => SqlType::Numeric {
            precision: text.len().min(38) as u8,
            scale: 0,
        },
    }
}

fn string_len(s: &str) -> Len {
    Len::N(s.chars().count().max(1) as u32)
}

impl<'a> Translator<'a> {
    pub fn new(
        conn: &'a Connection,
        vars: &'a HashMap<String, Variable>,
        sys: &'a SysValues,
    ) -> Self {
        Self {
            conn,
            vars,
            sys,
            binds: Vec::new(),
            views: Vec::new(),
            scopes: Vec::new(),
            compared: Vec::new(),
            lenient_vars: false,
        }
    }

    /// Records that a parameter is written to a column of type `ty` (parameter inference).
    pub fn note_target(&mut self, e: &Expr, ty: SqlType) {
        if let Expr::Identifier(id) = e {
            if self.lenient_vars
                && id.value.starts_with('@')
                && !id.value.starts_with("@@")
                && !self.vars.contains_key(&id.value.to_ascii_lowercase())
            {
                self.compared.push((id.value.clone(), ty));
            }
        }
    }

    fn bind(&mut self, v: SqliteValue) -> Expr {
        self.binds.push(v);
        Expr::Value(AstValue::Placeholder(format!("?{}", self.binds.len())).with_empty_span())
    }

    /// Reserves a bind slot filled in by the caller later; returns its 1-based index.
    pub fn reserve_bind(&mut self) -> (usize, Expr) {
        let e = self.bind(SqliteValue::Null);
        (self.binds.len(), e)
    }

    /// Resolves a table or catalog view name.
    pub fn table(&mut self, name: &ObjectName) -> Result<TableInfo, SqlError> {
        let parts = name_parts(name);
        let (db, schema, table) = split_name(&parts);
        if let Some(db) = db {
            if !db.eq_ignore_ascii_case(&self.sys.database) {
                return Err(SqlError::unsupported(format!(
                    "cross-database reference '{name}'"
                )));
            }
        }
        let schema_lc = schema.map(|s| s.to_ascii_lowercase());
        if let Some(s) = schema_lc
            .as_deref()
            .filter(|s| *s == "sys" || *s == "information_schema")
        {
            let full = format!("{s}.{}", table.to_ascii_lowercase());
            let view =
                catalog::view(&full).ok_or_else(|| SqlError::invalid_object(&name.to_string()))?;
            if !self.views.iter().any(|v| v.name == view.name) {
                self.views.push(view);
            }
            return catalog::view_info(view);
        }
        if table.starts_with('#') {
            return Err(SqlError::unsupported("temporary tables"));
        }
        catalog::table(self.conn, table)?.ok_or_else(|| SqlError::invalid_object(&name.to_string()))
    }

    /// Translates a query; returns its result columns. `raw` allows raw decimal reads in the
    /// select list (top-level queries only).
    pub fn query(&mut self, q: &mut Query, raw: bool) -> Result<Vec<OutCol>, SqlError> {
        if q.with.is_some() {
            return Err(SqlError::unsupported("common table expressions (WITH)"));
        }
        if q.for_clause.is_some() {
            return Err(SqlError::unsupported("FOR XML / FOR JSON"));
        }
        let mut order_by = q.order_by.take();
        let cols = self.set_expr(&mut q.body, raw, order_by.as_mut())?;
        q.order_by = order_by;
        self.limit(q)?;
        Ok(cols)
    }

    fn limit(&mut self, q: &mut Query) -> Result<(), SqlError> {
        let top = match q.body.as_mut() {
            SetExpr::Select(s) => s.top.take(),
            _ => None,
        };
        if let Some(top) = top {
            if top.percent || top.with_ties {
                return Err(SqlError::unsupported("TOP PERCENT / WITH TIES"));
            }
            let mut e = match top.quantity {
                Some(sqlparser::ast::TopQuantity::Expr(e)) => e,
                Some(sqlparser::ast::TopQuantity::Constant(n)) => number(&n.to_string()),
                None => return Err(SqlError::syntax("TOP")),
            };
            self.expr(&mut e, false)?;
            q.limit_clause = Some(LimitClause::LimitOffset {
                limit: Some(e),
                offset: None,
                limit_by: vec![],
            });
            return Ok(());
        }
        let fetch = q.fetch.take();
        if let Some(LimitClause::LimitOffset { limit, offset, .. }) = q.limit_clause.as_mut() {
            if let Some(off) = offset.as_mut() {
                off.rows = OffsetRows::None;
                self.expr(&mut off.value, false)?;
            }
            let quantity = fetch.and_then(|f| f.quantity);
            *limit = Some(match quantity {
                Some(mut e) => {
                    self.expr(&mut e, false)?;
                    e
                }
                None => number("-1"),
            });
        }
        Ok(())
    }

    fn set_expr(
        &mut self,
        body: &mut SetExpr,
        raw: bool,
        order_by: Option<&mut sqlparser::ast::OrderBy>,
    ) -> Result<Vec<OutCol>, SqlError> {
        match body {
            SetExpr::Select(s) => self.select(s, raw, order_by),
            SetExpr::Query(q) => self.query(q, raw),
            SetExpr::SetOperation { left, right, .. } => {
                let cols = self.set_expr(left, false, None)?;
                self.set_expr(right, false, None)?;
                Ok(cols)
            }
            _ => Err(SqlError::unsupported("this query form")),
        }
    }

    fn select(
        &mut self,
        s: &mut Select,
        raw: bool,
        order_by: Option<&mut sqlparser::ast::OrderBy>,
    ) -> Result<Vec<OutCol>, SqlError> {
        if s.into.is_some() {
            return Err(SqlError::unsupported("SELECT INTO"));
        }
        self.scopes.push(Vec::new());
        let result = self.select_in_scope(s, raw, order_by);
        self.scopes.pop();
        result
    }

    fn select_in_scope(
        &mut self,
        s: &mut Select,
        raw: bool,
        order_by: Option<&mut sqlparser::ast::OrderBy>,
    ) -> Result<Vec<OutCol>, SqlError> {
        for twj in s.from.iter_mut() {
            self.table_with_joins(twj)?;
        }
        let cols = self.projection(&mut s.projection, raw)?;
        if let Some(e) = s.selection.as_mut() {
            self.expr(e, false)?;
        }
        match &mut s.group_by {
            GroupByExpr::Expressions(exprs, _) => {
                for e in exprs.iter_mut() {
                    self.expr(e, false)?;
                }
            }
            GroupByExpr::All(_) => return Err(SqlError::unsupported("GROUP BY ALL")),
        }
        if let Some(e) = s.having.as_mut() {
            self.expr(e, false)?;
        }
        if let Some(ob) = order_by {
            self.order_by(ob, &cols)?;
        }
        Ok(cols)
    }

    fn order_by(
        &mut self,
        ob: &mut sqlparser::ast::OrderBy,
        cols: &[OutCol],
    ) -> Result<(), SqlError> {
        let OrderByKind::Expressions(list) = &mut ob.kind else {
            return Err(SqlError::unsupported("ORDER BY ALL"));
        };
        for item in list.iter_mut() {
            let is_alias = match &item.expr {
                Expr::Identifier(id) => {
                    cols.iter()
                        .any(|c| c.desc.name.eq_ignore_ascii_case(&id.value))
                        && self.resolve(None, &id.value)?.is_none()
                }
                _ => false,
            };
            if !is_alias {
                self.expr(&mut item.expr, false)?;
            }
        }
        Ok(())
    }

    fn table_with_joins(&mut self, twj: &mut TableWithJoins) -> Result<(), SqlError> {
        self.factor(&mut twj.relation)?;
        for join in twj.joins.iter_mut() {
            self.factor(&mut join.relation)?;
        }
        for join in twj.joins.iter_mut() {
            use sqlparser::ast::{JoinConstraint as C, JoinOperator as J};
            let constraint = match &mut join.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Right(c)
                | J::RightOuter(c)
                | J::FullOuter(c)
                | J::CrossJoin(c) => c,
                _ => return Err(SqlError::unsupported("this join type")),
            };
            match constraint {
                C::On(e) => {
                    self.expr(e, false)?;
                }
                C::None => {}
                _ => return Err(SqlError::unsupported("JOIN USING / NATURAL")),
            }
        }
        Ok(())
    }

    fn factor(&mut self, f: &mut TableFactor) -> Result<(), SqlError> {
        match f {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                ..
            } => {
                if args.is_some() {
                    return Err(SqlError::unsupported("table-valued functions"));
                }
                with_hints.clear();
                let table = self.table(name)?;
                let alias_ident = match alias {
                    Some(a) => a.name.clone(),
                    None => ident(&table.sqlite_name),
                };
                *name = ObjectName::from(vec![ident(&table.sqlite_name)]);
                self.push_scope(alias_ident, table);
                Ok(())
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                let Some(alias) = alias else {
                    return Err(SqlError::new(102, "Incorrect syntax near ')'."));
                };
                let cols = self.query(subquery, false)?;
                let columns = cols
                    .iter()
                    .map(|c| ColumnInfo {
                        name: c.desc.name.clone(),
                        ty: c.desc.ty,
                        nullable: c.desc.nullable,
                        identity: false,
                        default_sql: None,
                    })
                    .collect();
                let table = TableInfo {
                    object_id: 0,
                    name: alias.name.value.clone(),
                    sqlite_name: alias.name.value.clone(),
                    columns,
                    identity_increment: None,
                };
                self.push_scope(alias.name.clone(), table);
                Ok(())
            }
            _ => Err(SqlError::unsupported("this FROM clause item")),
        }
    }

    fn push_scope(&mut self, alias_ident: Ident, table: TableInfo) {
        let entry = ScopeEntry {
            alias: alias_ident.value.to_ascii_lowercase(),
            alias_ident,
            table,
        };
        if let Some(level) = self.scopes.last_mut() {
            level.push(entry);
        } else {
            self.scopes.push(vec![entry]);
        }
    }

    /// Opens a scope holding one table (UPDATE, DELETE).
    pub fn enter_table(&mut self, table: TableInfo) {
        self.scopes.push(Vec::new());
        self.push_scope(ident(&table.sqlite_name), table);
    }

    fn projection(
        &mut self,
        items: &mut Vec<SelectItem>,
        raw: bool,
    ) -> Result<Vec<OutCol>, SqlError> {
        let mut out_items = Vec::with_capacity(items.len());
        let mut cols = Vec::with_capacity(items.len());
        for item in items.drain(..) {
            match item {
                SelectItem::Wildcard(_) => self.expand(None, &mut out_items, &mut cols, raw)?,
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    _,
                ) => {
                    let parts = name_parts(&n);
                    let alias = parts.last().cloned().unwrap_or_default();
                    self.expand(Some(&alias), &mut out_items, &mut cols, raw)?;
                }
                SelectItem::UnnamedExpr(mut e) => {
                    let name = match &e {
                        Expr::Identifier(i) if !i.value.starts_with('@') => i.value.clone(),
                        Expr::CompoundIdentifier(parts) => {
                            parts.last().map(|i| i.value.clone()).unwrap_or_default()
                        }
                        _ => String::new(),
                    };
                    let ty = self.expr(&mut e, raw)?;
                    cols.push(out_col(name, ty));
                    out_items.push(SelectItem::UnnamedExpr(e));
                }
                SelectItem::ExprWithAlias { mut expr, alias } => {
                    let ty = self.expr(&mut expr, raw)?;
                    cols.push(out_col(alias.value.clone(), ty));
                    out_items.push(SelectItem::ExprWithAlias { expr, alias });
                }
                SelectItem::QualifiedWildcard(..) => {
                    return Err(SqlError::unsupported("this wildcard form"))
                }
            }
        }
        *items = out_items;
        Ok(cols)
    }

    fn expand(
        &mut self,
        alias: Option<&str>,
        items: &mut Vec<SelectItem>,
        cols: &mut Vec<OutCol>,
        raw: bool,
    ) -> Result<(), SqlError> {
        let level = self.scopes.last().map(Vec::as_slice).unwrap_or_default();
        if level.is_empty() {
            return Err(SqlError::new(263, "Must specify table to select from."));
        }
        let mut found = false;
        let mut pending = Vec::new();
        for entry in level
            .iter()
            .filter(|e| alias.is_none_or(|a| e.alias.eq_ignore_ascii_case(a)))
        {
            found = true;
            for c in &entry.table.columns {
                let e = Expr::CompoundIdentifier(vec![entry.alias_ident.clone(), ident(&c.name)]);
                pending.push((e, c.clone(), entry.table.name.clone()));
            }
        }
        if !found {
            return Err(SqlError::new(
                4104,
                format!(
                    "The multi-part identifier \"{}.*\" could not be bound.",
                    alias.unwrap_or_default()
                ),
            ));
        }
        for (mut e, c, table) in pending {
            let scaled = matches!(c.ty.storage(), Storage::Scaled(_));
            if scaled && !raw {
                e = self.descale(e, &c.ty);
            }
            let ty = Ty {
                ty: c.ty,
                nullable: c.nullable,
                raw: scaled && raw,
                identity: c.identity,
                table: Some(table),
            };
            cols.push(out_col(c.name.clone(), ty));
            items.push(SelectItem::UnnamedExpr(e));
        }
        Ok(())
    }

    fn descale(&self, e: Expr, ty: &SqlType) -> Expr {
        let Storage::Scaled(scale) = ty.storage() else {
            return e;
        };
        let divisor = format!("{}.0", pow10(scale));
        Expr::Nested(Box::new(Expr::BinaryOp {
            left: Box::new(e),
            op: BinaryOperator::Divide,
            right: Box::new(number(&divisor)),
        }))
    }

    /// Finds a column in the scopes, innermost first.
    fn resolve(
        &self,
        qualifier: Option<&str>,
        name: &str,
    ) -> Result<Option<(ColumnInfo, String)>, SqlError> {
        for level in self.scopes.iter().rev() {
            let mut hits = level
                .iter()
                .filter(|e| {
                    qualifier.is_none_or(|q| {
                        e.alias.eq_ignore_ascii_case(q) || e.table.name.eq_ignore_ascii_case(q)
                    })
                })
                .filter_map(|e| {
                    e.table
                        .column(name)
                        .map(|c| (c.clone(), e.table.name.clone()))
                });
            if let Some(hit) = hits.next() {
                if hits.next().is_some() && qualifier.is_none() {
                    return Err(SqlError::new(
                        209,
                        format!("Ambiguous column name '{name}'."),
                    ));
                }
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    fn column_ref(
        &mut self,
        e: &mut Expr,
        qualifier: Option<String>,
        name: &str,
        top: bool,
    ) -> Result<Ty, SqlError> {
        let Some((col, table)) = self.resolve(qualifier.as_deref(), name)? else {
            if let Some(q) = qualifier {
                return Err(SqlError::new(
                    4104,
                    format!("The multi-part identifier \"{q}.{name}\" could not be bound."),
                ));
            }
            return Err(SqlError::invalid_column(name));
        };
        let scaled = matches!(col.ty.storage(), Storage::Scaled(_));
        if scaled && !top {
            let inner = std::mem::replace(e, number("0"));
            *e = self.descale(inner, &col.ty);
        }
        Ok(Ty {
            ty: col.ty,
            nullable: col.nullable,
            raw: scaled && top,
            identity: col.identity,
            table: Some(table),
        })
    }

    fn variable(&mut self, e: &mut Expr, name: &str) -> Result<Ty, SqlError> {
        let key = name.to_ascii_lowercase();
        let Some(var) = self.vars.get(&key) else {
            if self.lenient_vars {
                self.compared
                    .push((name.to_string(), SqlType::NVarChar(Len::N(4000))));
                *e = self.bind(SqliteValue::Null);
                return Ok(Ty::of(SqlType::NVarChar(Len::N(4000)), true));
            }
            return Err(SqlError::undeclared(name));
        };
        let (ty, value) = (
            var.ty,
            crate::sandbox::engine::types::expression_form(&var.value, &var.ty),
        );
        *e = self.bind(value);
        Ok(Ty::of(ty, true))
    }

    fn system_variable(&mut self, e: &mut Expr, name: &str) -> Result<Ty, SqlError> {
        let sys = self.sys;
        let opt = |v: Option<i64>| v.map_or(SqliteValue::Null, SqliteValue::Integer);
        let (value, ty) = match name.to_ascii_lowercase().as_str() {
            "@@version" => (
                SqliteValue::Text(VERSION_TEXT.into()),
                SqlType::NVarChar(Len::N(300)),
            ),
            "@@spid" => (SqliteValue::Integer(sys.spid.into()), SqlType::SmallInt),
            "@@trancount" => (SqliteValue::Integer(sys.tran_count.into()), SqlType::Int),
            "@@rowcount" => (
                SqliteValue::Integer(sys.rowcount.min(i32::MAX as u64) as i64),
                SqlType::Int,
            ),
            "@@identity" => (
                opt(sys.identity),
                SqlType::Numeric {
                    precision: 38,
                    scale: 0,
                },
            ),
            "@@error" => (SqliteValue::Integer(sys.error.into()), SqlType::Int),
            "@@servername" => (
                SqliteValue::Text("tdsguard".into()),
                SqlType::NVarChar(Len::N(128)),
            ),
            "@@servicename" => (
                SqliteValue::Text("MSSQLSERVER".into()),
                SqlType::NVarChar(Len::N(128)),
            ),
            "@@language" => (
                SqliteValue::Text("us_english".into()),
                SqlType::NVarChar(Len::N(128)),
            ),
            "@@max_precision" => (SqliteValue::Integer(38), SqlType::TinyInt),
            "@@datefirst" => (SqliteValue::Integer(7), SqlType::TinyInt),
            "@@textsize" => (SqliteValue::Integer(i32::MAX.into()), SqlType::Int),
            "@@lock_timeout" => (SqliteValue::Integer(-1), SqlType::Int),
            "@@options" => (SqliteValue::Integer(5496), SqlType::Int),
            "@@microsoftversion" => (SqliteValue::Integer(0x1000_03E8), SqlType::Int),
            _ => return Err(SqlError::unsupported(format!("the system function {name}"))),
        };
        let nullable = matches!(value, SqliteValue::Null);
        *e = self.bind(value);
        Ok(Ty::of(ty, nullable))
    }

    /// Translates an expression in place and returns its type. `top` is true for a select
    /// list item, where a stored decimal column may be read raw.
    pub fn expr(&mut self, e: &mut Expr, top: bool) -> Result<Ty, SqlError> {
        // A negative literal is one value, so that a long one keeps its
        // digits (see `literal`).
        if let Some(mut value) = negated_literal(e) {
            let ty = self.literal(&mut value)?;
            *e = Expr::Value(value.with_empty_span());
            return Ok(ty);
        }
        match e {
            Expr::Identifier(id) => {
                let name = id.value.clone();
                if name.starts_with("@@") {
                    return self.system_variable(e, &name);
                }
                if name.starts_with('@') {
                    return self.variable(e, &name);
                }
                self.column_ref(e, None, &name, top)
            }
            Expr::CompoundIdentifier(parts) => {
                let names: Vec<String> = parts.iter().map(|p| p.value.clone()).collect();
                let (Some(col), Some(qual)) = (
                    names.last().cloned(),
                    names
                        .len()
                        .checked_sub(2)
                        .and_then(|i| names.get(i))
                        .cloned(),
                ) else {
                    return Err(SqlError::unsupported("this identifier"));
                };
                if names.len() > 2 {
                    *e = Expr::CompoundIdentifier(vec![
                        Ident::new(qual.clone()),
                        Ident::new(col.clone()),
                    ]);
                }
                self.column_ref(e, Some(qual), &col, top)
            }
            Expr::Value(v) => self.literal(&mut v.value),
            Expr::Nested(inner) => self.expr(inner, false),
            Expr::UnaryOp { op, expr } => {
                let ty = self.expr(expr, false)?;
                Ok(if matches!(op, UnaryOperator::Not) {
                    Ty::of(SqlType::Bit, true)
                } else {
                    Ty::of(ty.ty, ty.nullable)
                })
            }
            Expr::BinaryOp { left, op, right } => {
                let l = self.expr(left, false)?;
                let r = self.expr(right, false)?;
                self.note_comparison(left, right, &l, &r);
                canonicalize_text(left, &l, &r);
                canonicalize_text(right, &r, &l);
                Ok(binary_type(op, &l, &r))
            }
            Expr::IsNull(x) | Expr::IsNotNull(x) => {
                self.expr(x, false)?;
                Ok(Ty::of(SqlType::Bit, false))
            }
            Expr::InList { expr, list, .. } => {
                self.expr(expr, false)?;
                for item in list.iter_mut() {
                    self.expr(item, false)?;
                }
                Ok(Ty::of(SqlType::Bit, true))
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                self.expr(expr, false)?;
                self.expr(low, false)?;
                self.expr(high, false)?;
                Ok(Ty::of(SqlType::Bit, true))
            }
            Expr::Like {
                expr,
                pattern,
                any: false,
                ..
            } => {
                self.expr(expr, false)?;
                self.expr(pattern, false)?;
                Ok(Ty::of(SqlType::Bit, true))
            }
            Expr::InSubquery { expr, subquery, .. } => {
                self.expr(expr, false)?;
                self.query(subquery, false)?;
                Ok(Ty::of(SqlType::Bit, true))
            }
            Expr::Exists { subquery, .. } => {
                self.query(subquery, false)?;
                Ok(Ty::of(SqlType::Bit, false))
            }
            Expr::Subquery(q) => {
                let cols = self.query(q, false)?;
                let first = cols
                    .first()
                    .ok_or_else(|| SqlError::unsupported("an empty subquery"))?;
                Ok(Ty::of(first.desc.ty, true))
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand, conditions, else_result),
            Expr::Cast {
                expr, data_type, ..
            }
            | Expr::Convert {
                expr,
                data_type: Some(data_type),
                ..
            } => {
                let ty = cast_target(&data_type.to_string())?;
                self.expr(expr, false)?;
                let inner = std::mem::replace(expr.as_mut(), number("0"));
                *e = call("__tds_cast", vec![inner, string(&ty.to_string())]);
                Ok(Ty::of(ty, true))
            }
            Expr::Function(_) => self.function(e, top),
            other => Err(SqlError::unsupported(format!(
                "the expression '{}'",
                short(&other.to_string())
            ))),
        }
    }

    fn note_comparison(&mut self, left: &Expr, right: &Expr, l: &Ty, r: &Ty) {
        if !self.lenient_vars {
            return;
        }
        let is_unknown =
            |e: &Expr| matches!(e, Expr::Value(v) if matches!(&v.value, AstValue::Placeholder(_)));
        for (side, other) in [(left, r), (right, l)] {
            if is_unknown(side) {
                if let Some(last) = self
                    .compared
                    .iter_mut()
                    .rev()
                    .find(|(_, t)| *t == SqlType::NVarChar(Len::N(4000)))
                {
                    if other.table.is_some() {
                        last.1 = other.ty;
                    }
                }
            }
        }
    }

    fn case(
        &mut self,
        operand: &mut Option<Box<Expr>>,
        conditions: &mut [sqlparser::ast::CaseWhen],
        else_result: &mut Option<Box<Expr>>,
    ) -> Result<Ty, SqlError> {
        if let Some(o) = operand.as_mut() {
            self.expr(o, false)?;
        }
        let mut result: Option<Ty> = None;
        for cw in conditions.iter_mut() {
            self.expr(&mut cw.condition, false)?;
            let t = self.expr(&mut cw.result, false)?;
            result = Some(match result {
                Some(prev) if precedence(&prev.ty) >= precedence(&t.ty) => prev,
                _ => t,
            });
        }
        if let Some(er) = else_result.as_mut() {
            let t = self.expr(er, false)?;
            if result
                .as_ref()
                .is_none_or(|p| precedence(&t.ty) > precedence(&p.ty))
            {
                result = Some(t);
            }
        }
        let ty = result.map(|t| t.ty).unwrap_or(SqlType::Int);
        Ok(Ty::of(ty, true))
    }

    fn literal(&mut self, v: &mut AstValue) -> Result<Ty, SqlError> {
        match v {
            AstValue::Number(text, _) => {
                let ty = literal_number_type(text);
                // SQLite reads a decimal literal as a double, which keeps 15
                // significant digits; a longer one (money's limits have 19)
                // goes over as text, which conversions parse exactly.
                if matches!(ty, SqlType::Numeric { precision, .. } if precision > 15) {
                    *v = AstValue::SingleQuotedString(std::mem::take(text));
                }
                Ok(Ty::of(ty, false))
            }
            AstValue::SingleQuotedString(s) => Ok(Ty::of(SqlType::VarChar(string_len(s)), false)),
            AstValue::NationalStringLiteral(s) => {
                let ty = SqlType::NVarChar(string_len(s));
                *v = AstValue::SingleQuotedString(std::mem::take(s));
                Ok(Ty::of(ty, false))
            }
            AstValue::HexStringLiteral(h) => Ok(Ty::of(
                SqlType::VarBinary(Len::N((h.len() as u32).div_ceil(2).max(1))),
                false,
            )),
            AstValue::Null => Ok(Ty::of(SqlType::Int, true)),
            AstValue::Placeholder(_) => Ok(Ty::of(SqlType::NVarChar(Len::N(4000)), true)),
            other => Err(SqlError::unsupported(format!("the literal {other}"))),
        }
    }

    fn function(&mut self, e: &mut Expr, top: bool) -> Result<Ty, SqlError> {
        let Expr::Function(f) = e else {
            return Err(SqlError::unsupported("this call"));
        };
        if f.over.is_some() {
            return Err(SqlError::unsupported("window functions"));
        }
        let name = name_parts(&f.name)
            .last()
            .cloned()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let distinct =
            matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment.is_some());
        let mut args = take_args(f)?;
        let star = args.iter().any(|a| a.is_none());
        let mut types = Vec::with_capacity(args.len());
        let raw_arg = top && matches!(name.as_str(), "min" | "max" | "sum") && args.len() == 1;
        for a in args.iter_mut().flatten() {
            types.push(self.expr(a, raw_arg)?);
        }
        let first = types.first().cloned();
        let (new_name, ty): (&str, Ty) = match name.as_str() {
            "count" => ("count", Ty::of(SqlType::Int, false)),
            "count_big" => ("count", Ty::of(SqlType::BigInt, false)),
            "sum" | "avg" | "min" | "max" => {
                let t = first.clone().ok_or_else(|| wrong_args(&name))?;
                let ty = match (name.as_str(), t.ty) {
                    ("sum" | "avg", SqlType::TinyInt | SqlType::SmallInt) => SqlType::Int,
                    (
                        "sum" | "avg",
                        SqlType::Decimal { scale, .. } | SqlType::Numeric { scale, .. },
                    ) => SqlType::Decimal {
                        precision: 38,
                        scale: if name == "avg" { scale.max(6) } else { scale },
                    },
                    (_, other) => other,
                };
                let raw = t.raw && name != "avg";
                (
                    leak_name(&name),
                    Ty {
                        ty,
                        nullable: true,
                        raw,
                        identity: false,
                        table: None,
                    },
                )
            }
            "isnull" => ("ifnull", first.clone().ok_or_else(|| wrong_args(&name))?),
            "coalesce" => ("coalesce", first.clone().ok_or_else(|| wrong_args(&name))?),
            "nullif" => ("nullif", first.clone().ok_or_else(|| wrong_args(&name))?),
            "len" => ("__tds_len", Ty::of(SqlType::Int, true)),
            "datalength" => ("length", Ty::of(SqlType::Int, true)),
            "upper" | "lower" | "ltrim" | "rtrim" | "replace" => (
                leak_name(&name),
                first.clone().ok_or_else(|| wrong_args(&name))?,
            ),
            "trim" => ("trim", first.clone().ok_or_else(|| wrong_args(&name))?),
            "substring" => ("substr", first.clone().ok_or_else(|| wrong_args(&name))?),
            "abs" => ("abs", first.clone().ok_or_else(|| wrong_args(&name))?),
            "round" => ("round", first.clone().ok_or_else(|| wrong_args(&name))?),
            "charindex" => ("__tds_charindex", Ty::of(SqlType::Int, true)),
            "getdate" | "current_timestamp" => return Ok(self.now(e, SqlType::DateTime, "0")),
            "getutcdate" => return Ok(self.now(e, SqlType::DateTime, "0")),
            "sysdatetime" | "sysutcdatetime" => return Ok(self.now(e, SqlType::DateTime2(7), "0")),
            "sysdatetimeoffset" => return Ok(self.now(e, SqlType::DateTimeOffset(7), "1")),
            "newid" => {
                *e = call("__tds_newid", vec![]);
                return Ok(Ty::of(SqlType::UniqueIdentifier, false));
            }
            "db_name" if args.is_empty() => {
                *e = self.bind(SqliteValue::Text(self.sys.database.clone()));
                return Ok(Ty::of(SqlType::NVarChar(Len::N(128)), true));
            }
            "scope_identity" => {
                *e = self.bind(
                    self.sys
                        .scope_identity
                        .map_or(SqliteValue::Null, SqliteValue::Integer),
                );
                return Ok(Ty::of(
                    SqlType::Numeric {
                        precision: 38,
                        scale: 0,
                    },
                    true,
                ));
            }
            "object_id" => return self.object_id(e, &args),
            "suser_sname" | "user_name" | "schema_name" | "original_login" | "system_user"
            | "current_user" => {
                *e = self.bind(SqliteValue::Text(
                    if name == "schema_name" || name == "user_name" {
                        "dbo"
                    } else {
                        "sa"
                    }
                    .into(),
                ));
                return Ok(Ty::of(SqlType::NVarChar(Len::N(128)), true));
            }
            "serverproperty" => return self.server_property(e, &args),
            _ => {
                return Err(SqlError::unsupported(format!(
                    "the function {}",
                    name.to_ascii_uppercase()
                )))
            }
        };
        let mut new_args: Vec<Option<Expr>> = args;
        if name == "len" || name == "charindex" || !distinct {
            let plain: Vec<Expr> = new_args.drain(..).flatten().collect();
            *e = if star {
                count_star(new_name)
            } else {
                call(new_name, plain)
            };
        } else {
            let plain: Vec<Expr> = new_args.drain(..).flatten().collect();
            let mut c = call(new_name, plain);
            if let Expr::Function(Function {
                args: FunctionArguments::List(l),
                ..
            }) = &mut c
            {
                l.duplicate_treatment = Some(sqlparser::ast::DuplicateTreatment::Distinct);
            }
            *e = c;
        }
        Ok(ty)
    }

    fn now(&mut self, e: &mut Expr, ty: SqlType, with_offset: &str) -> Ty {
        *e = call("__tds_now", vec![number(with_offset)]);
        Ty::of(ty, false)
    }

    fn object_id(&mut self, e: &mut Expr, args: &[Option<Expr>]) -> Result<Ty, SqlError> {
        let text = |a: Option<&Option<Expr>>| match a {
            Some(Some(Expr::Value(v))) => match &v.value {
                AstValue::SingleQuotedString(s) | AstValue::NationalStringLiteral(s) => {
                    Some(s.clone())
                }
                _ => None,
            },
            _ => None,
        };
        let Some(name) = text(args.first()) else {
            return Err(SqlError::unsupported(
                "OBJECT_ID with a non-literal argument",
            ));
        };
        let kind = text(args.get(1));
        let parts: Vec<String> = name
            .split('.')
            .map(|p| {
                p.trim_matches(|c| c == '[' || c == ']' || c == '"')
                    .to_string()
            })
            .collect();
        let (_, _, table) = split_name(&parts);
        let id = catalog::object_id(self.conn, table, kind.as_deref())?;
        *e = self.bind(id.map_or(SqliteValue::Null, SqliteValue::Integer));
        Ok(Ty::of(SqlType::Int, true))
    }

    fn server_property(&mut self, e: &mut Expr, args: &[Option<Expr>]) -> Result<Ty, SqlError> {
        let prop = match args.first() {
            Some(Some(Expr::Value(v))) => match &v.value {
                AstValue::SingleQuotedString(s) | AstValue::NationalStringLiteral(s) => {
                    s.to_ascii_lowercase()
                }
                _ => String::new(),
            },
            _ => String::new(),
        };
        let value = match prop.as_str() {
            "productversion" => SqliteValue::Text("16.0.1000.6".into()),
            "productlevel" => SqliteValue::Text("RTM".into()),
            "edition" => SqliteValue::Text("Developer Edition (64-bit)".into()),
            "engineedition" => SqliteValue::Text("3".into()),
            "servername" | "machinename" => SqliteValue::Text("tdsguard".into()),
            "collation" => SqliteValue::Text(DEFAULT_COLLATION.into()),
            "isintegratedsecurityonly" | "ishadrenabled" | "isclustered" => {
                SqliteValue::Text("0".into())
            }
            _ => SqliteValue::Null,
        };
        // TODO(tdsguard): SERVERPROPERTY returns sql_variant; reported as nvarchar(128).
        *e = self.bind(value);
        Ok(Ty::of(SqlType::NVarChar(Len::N(128)), true))
    }
}

/// Stored temporal and GUID text has one canonical form; a character operand compared with
/// such a column is converted to it so that `born = '1984-2-29'` matches.
fn canonicalize_text(side: &mut Expr, side_ty: &Ty, other: &Ty) {
    let canonical = matches!(
        other.ty,
        SqlType::Date
            | SqlType::Time(_)
            | SqlType::DateTime
            | SqlType::SmallDateTime
            | SqlType::DateTime2(_)
            | SqlType::DateTimeOffset(_)
            | SqlType::UniqueIdentifier
    );
    if !canonical || !side_ty.ty.is_character() {
        return;
    }
    let inner = std::mem::replace(side, number("0"));
    *side = call("__tds_cast", vec![inner, string(&other.ty.to_string())]);
}

fn leak_name(name: &str) -> &'static str {
    match name {
        "sum" => "sum",
        "avg" => "avg",
        "min" => "min",
        "max" => "max",
        "upper" => "upper",
        "lower" => "lower",
        "ltrim" => "ltrim",
        "rtrim" => "rtrim",
        _ => "replace",
    }
}

fn count_star(name: &str) -> Expr {
    let mut c = call(name, vec![]);
    if let Expr::Function(Function {
        args: FunctionArguments::List(l),
        ..
    }) = &mut c
    {
        l.args = vec![FunctionArg::Unnamed(FunctionArgExpr::Wildcard)];
    }
    c
}

fn wrong_args(name: &str) -> SqlError {
    SqlError::new(174, format!("The {name} function requires 1 argument(s)."))
}

/// Plain arguments of a call; `None` stands for `*`.
fn take_args(f: &mut Function) -> Result<Vec<Option<Expr>>, SqlError> {
    let list = match std::mem::replace(&mut f.args, FunctionArguments::None) {
        FunctionArguments::None => return Ok(Vec::new()),
        FunctionArguments::List(l) => l,
        FunctionArguments::Subquery(_) => {
            return Err(SqlError::unsupported("a subquery as function argument"))
        }
    };
    let mut out = Vec::with_capacity(list.args.len());
    for a in list.args {
        match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => out.push(Some(e)),
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => out.push(None),
            _ => return Err(SqlError::unsupported("named function arguments")),
        }
    }
    Ok(out)
}

fn out_col(name: String, ty: Ty) -> OutCol {
    let collation = ty.ty.is_character().then_some(DEFAULT_COLLATION);
    OutCol {
        desc: ColumnDesc {
            name,
            ty: ty.ty,
            nullable: ty.nullable,
            identity: ty.identity,
            collation,
            table: ty.table,
        },
        raw_scaled: ty.raw,
    }
}

fn binary_type(op: &mut BinaryOperator, l: &Ty, r: &Ty) -> Ty {
    let nullable = l.nullable || r.nullable;
    match op {
        BinaryOperator::Plus if l.ty.is_character() && r.ty.is_character() => {
            *op = BinaryOperator::StringConcat;
            Ty::of(concat_type(&l.ty, &r.ty), nullable)
        }
        BinaryOperator::Plus
        | BinaryOperator::Minus
        | BinaryOperator::Multiply
        | BinaryOperator::Divide
        | BinaryOperator::Modulo => Ty::of(arith_type(&l.ty, &r.ty), nullable),
        _ => Ty::of(SqlType::Bit, nullable),
    }
}

/// Target type of CAST/CONVERT: character and binary types without a length get 30.
pub(crate) fn cast_target(text: &str) -> Result<SqlType, SqlError> {
    let lower = text.trim().to_ascii_lowercase();
    if !lower.contains('(')
        && matches!(
            lower.as_str(),
            "char" | "varchar" | "nchar" | "nvarchar" | "binary" | "varbinary"
        )
    {
        return SqlType::parse(&format!("{lower}(30)"));
    }
    SqlType::parse(text)
}

fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_types_follow_sql_server() {
        assert_eq!(literal_number_type("1"), SqlType::Int);
        assert_eq!(literal_number_type("3000000000"), SqlType::BigInt);
        assert_eq!(
            literal_number_type("12.50"),
            SqlType::Numeric {
                precision: 4,
                scale: 2
            }
        );
        assert_eq!(
            literal_number_type("1e3"),
            SqlType::Float { mantissa_bits: 53 }
        );
    }

    #[test]
    fn arithmetic_and_concat_types() {
        assert_eq!(arith_type(&SqlType::Int, &SqlType::BigInt), SqlType::BigInt);
        assert_eq!(
            arith_type(&SqlType::Int, &SqlType::Float { mantissa_bits: 53 }),
            SqlType::Float { mantissa_bits: 53 }
        );
        assert_eq!(
            concat_type(&SqlType::VarChar(Len::N(2)), &SqlType::NVarChar(Len::N(3))),
            SqlType::NVarChar(Len::N(5))
        );
        assert_eq!(
            cast_target("varchar").unwrap(),
            SqlType::VarChar(Len::N(30))
        );
    }

    #[test]
    fn names_split_into_parts() {
        let parts = vec!["db".to_string(), "dbo".to_string(), "t".to_string()];
        assert_eq!(split_name(&parts), (Some("db"), Some("dbo"), "t"));
        let parts = vec!["db".to_string(), String::new(), "t".to_string()];
        assert_eq!(split_name(&parts), (Some("db"), None, "t"));
    }
}
