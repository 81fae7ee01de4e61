//! Statement analysis: for a statement text, which parameters and literals
//! bind to which mapped columns (and whether they store or look up a value),
//! which result columns come from mapped columns, and whether the text uses
//! a mapped column in a way that cannot work on ciphertext (a refusal).
//!
//! Parsing uses sqlparser's MsSql dialect. Two things it does not do are
//! done here on tokens: batches without semicolons are read statement by
//! statement, and `OUTPUT INSERTED.x ...` clauses are cut out of
//! INSERT/UPDATE/DELETE/MERGE before parsing and read separately.
//!
//! Acceptance is positive: the AST walk marks each identifier token it
//! understood (a projected column, `col = @p`, an INSERT column list, ...).
//! Afterwards every token of the statement that names a mapped column of a
//! table in scope and was not marked is a refusal; its neighbours decide
//! which one (LIKE, range, ORDER BY, function, other expression).
//!
//! Not supported on mapped columns (refused): UNION/EXCEPT/INTERSECT
//! projections, CTE and derived-table projections, `SELECT @v = col`,
//! `SELECT ... INTO`, views and control-of-flow statements.
//! TODO(tdsguard): decrypt UNION branches whose columns map to the same
//! mapped column, and projections through CTEs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, FromTable, Ident, IfStatement, Insert, JoinConstraint,
    JoinOperator, MergeAction, MergeInsertKind, ObjectName, Query, Select, SelectItem, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, UnaryOperator, Value,
};
use sqlparser::dialect::MsSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::rewrite::column_map::{
    canonical_ident, param_key, ColumnMap, MappedColumn, TableKey, DEFAULT_COLLATION,
};
use crate::rewrite::convert::parse_decimal_text;
use crate::rewrite::error::{Refusal, RefusalKind};
use crate::tds::types::SqlValue;

/// Longest statement text analysed, in bytes. Longer text that mentions a
/// mapped column is refused; the parser's cost grows with the text.
pub const MAX_ANALYSED_TEXT_BYTES: usize = 4 << 20;

/// Where a value comes from.
#[derive(Clone, PartialEq)]
pub enum ValueSource {
    /// A parameter, by canonical name (`@p0`, lower case).
    Param(String),
    /// A literal at byte range `start..end` of the text.
    Literal(Literal),
}

/// A literal bound to a mapped column.
#[derive(Clone, PartialEq)]
pub struct Literal {
    pub start: usize,
    pub end: usize,
    /// The literal's value as SQL Server types it (varchar for '...',
    /// nvarchar for N'...', int/numeric/float for numbers, varbinary for 0x).
    pub value: SqlValue,
}

/// Whether a bound value is stored or compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// INSERT VALUES, UPDATE SET, MERGE source values.
    Store,
    /// Equality (`=`, `<>`, `IN`) on a deterministic column.
    Lookup,
}

/// One value bound to a mapped column.
#[derive(Clone)]
pub struct Binding {
    pub source: ValueSource,
    pub column: Arc<MappedColumn>,
    pub role: Role,
}

/// One column of a result set.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputColumn {
    /// Not a mapped column.
    Plain,
    Mapped(Arc<MappedColumn>),
    /// `*` or `t.*`: the mapped columns of those tables, matched by name
    /// against COLMETADATA.
    Star(Vec<Arc<MappedColumn>>),
}

/// The expected result set of one statement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultPlan {
    pub columns: Vec<OutputColumn>,
}

impl ResultPlan {
    pub fn has_mapped(&self) -> bool {
        self.columns
            .iter()
            .any(|c| !matches!(c, OutputColumn::Plain))
    }
}

/// A CREATE TABLE / ALTER TABLE ADD column of a mapped table whose declared
/// type must become the storage type: byte range of the type in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaEdit {
    pub start: usize,
    pub end: usize,
    pub column: Arc<MappedColumn>,
}

/// What a statement text does with mapped columns.
#[derive(Clone, Default)]
pub struct Analysis {
    /// Whether any mapped table or column is involved.
    pub touches_mapped: bool,
    pub bindings: Vec<Binding>,
    /// One entry per statement that returns rows, in order.
    pub results: Vec<ResultPlan>,
    pub schema_edits: Vec<SchemaEdit>,
    pub refusal: Option<Refusal>,
}

impl Analysis {
    fn refused(r: Refusal) -> Self {
        Analysis {
            touches_mapped: true,
            refusal: Some(r),
            ..Analysis::default()
        }
    }

    /// The column a parameter is bound to, if any.
    pub fn param_column(&self, name: &str) -> Option<&Binding> {
        let key = param_key(name);
        self.bindings
            .iter()
            .find(|b| matches!(&b.source, ValueSource::Param(p) if *p == key))
    }

    /// Whether the rewriter has anything to do.
    pub fn needs_rewrite(&self) -> bool {
        self.refusal.is_some()
            || !self.bindings.is_empty()
            || !self.schema_edits.is_empty()
            || self.results.iter().any(ResultPlan::has_mapped)
    }
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analysis")
            .field("touches_mapped", &self.touches_mapped)
            .field("bindings", &self.bindings.len())
            .field("results", &self.results.len())
            .field("refusal", &self.refusal)
            .finish()
    }
}

/// Analyses a statement text in `database`.
pub fn analyze(map: &ColumnMap, database: &str, text: &str) -> Analysis {
    if map.is_empty() || !map.mentions_mapped_name(text) && !mentions_table(map, text) {
        return Analysis::default();
    }
    if text.len() > MAX_ANALYSED_TEXT_BYTES {
        return Analysis::refused(unparseable("the statement text is too long to analyse"));
    }
    let lines = LineIndex::new(text);
    let Ok(tokens) = Tokenizer::new(&MsSqlDialect {}, text).tokenize_with_location() else {
        return Analysis::refused(unparseable("the statement text could not be read"));
    };
    let (tokens, outputs) = cut_output_clauses(tokens, &lines);
    let mut a = Analyzer::new(map, database, text, &lines);
    a.run(tokens, outputs);
    a.finish()
}

fn mentions_table(map: &ColumnMap, text: &str) -> bool {
    map.mentions_mapped_table(text) || map.mentions_mapped_procedure(text)
}

fn unparseable(why: &str) -> Refusal {
    Refusal::new(
        RefusalKind::Unparseable,
        format!("{why}, and it mentions a mapped column; it is not sent"),
    )
}

/// Byte offsets of line starts, to turn (line, column) into a byte offset.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// Byte offset of a 1-based (line, column-in-characters) location.
    fn offset(&self, loc: Location) -> Option<usize> {
        let line_start = *self
            .starts
            .get(usize::try_from(loc.line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        let rest = self.text.get(line_start..)?;
        match rest.char_indices().nth(col) {
            Some((i, _)) => Some(line_start + i),
            None if rest.chars().count() == col => Some(self.text.len()),
            None => None,
        }
    }
}

/// An OUTPUT clause cut out of a DML statement.
struct OutputClause {
    /// Byte offset of the OUTPUT keyword.
    at: usize,
    /// `(qualifier, column)` per item; `None` for items other than
    /// `INSERTED.x` / `DELETED.x` / `*` forms; `Some((q, "*"))` for `q.*`.
    items: Vec<Option<(String, String)>>,
    into: bool,
}

fn is_word(t: &Token, kw: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
}

fn is_ws(t: &TokenWithSpan) -> bool {
    matches!(t.token, Token::Whitespace(_))
}

/// Removes `OUTPUT INSERTED.x, ... [INTO target [(cols)]]` from the tokens.
fn cut_output_clauses(
    tokens: Vec<TokenWithSpan>,
    lines: &LineIndex<'_>,
) -> (Vec<TokenWithSpan>, Vec<OutputClause>) {
    let mut out = Vec::with_capacity(tokens.len());
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if is_word(&tokens[i].token, "OUTPUT") && output_follows(&tokens[i + 1..]) {
            let (clause, next) = read_output(&tokens, i, lines);
            clauses.push(clause);
            i = next;
            continue;
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    (out, clauses)
}

fn output_follows(rest: &[TokenWithSpan]) -> bool {
    match rest.iter().find(|t| !is_ws(t)).map(|t| &t.token) {
        Some(Token::Word(w)) => {
            let v = w.value.to_ascii_lowercase();
            v == "inserted" || v == "deleted" || v.starts_with('$')
        }
        // `OUTPUT 1`, as Entity Framework Core writes UPDATE and DELETE.
        Some(Token::Number(..)) => true,
        _ => false,
    }
}

const OUTPUT_END: [&str; 8] = [
    "VALUES", "SELECT", "DEFAULT", "FROM", "WHERE", "OPTION", "WHEN", "EXEC",
];

fn read_output(
    tokens: &[TokenWithSpan],
    start: usize,
    lines: &LineIndex<'_>,
) -> (OutputClause, usize) {
    let at = lines.offset(tokens[start].span.start).unwrap_or(0);
    let mut items = Vec::new();
    let mut current: Vec<&Token> = Vec::new();
    let (mut depth, mut into, mut i) = (0i32, false, start + 1);
    while let Some(t) = tokens.get(i) {
        let tok = &t.token;
        let at_top = depth == 0;
        if at_top
            && (matches!(tok, Token::SemiColon | Token::EOF)
                || OUTPUT_END.iter().any(|k| is_word(tok, k)))
        {
            break;
        }
        if at_top && !into && is_word(tok, "INTO") {
            into = true;
        }
        match tok {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if at_top && !into => {
                items.push(output_item(&current));
                current.clear();
            }
            Token::Whitespace(_) => {}
            _ if !into => current.push(tok),
            _ => {}
        }
        i += 1;
    }
    if !current.is_empty() {
        items.push(output_item(&current));
    }
    (OutputClause { at, items, into }, i)
}

fn output_item(tokens: &[&Token]) -> Option<(String, String)> {
    match tokens {
        [Token::Word(q), Token::Period, Token::Word(c), ..] => {
            Some((q.value.to_lowercase(), c.value.to_lowercase()))
        }
        [Token::Word(q), Token::Period, Token::Mul, ..] => {
            Some((q.value.to_lowercase(), "*".into()))
        }
        _ => None,
    }
}

/// A table in scope: its key and the mapped columns it has.
#[derive(Clone)]
struct ScopeTable {
    /// Canonical alias or name used to qualify columns.
    names: Vec<String>,
    mapped: Vec<Arc<MappedColumn>>,
}

struct Analyzer<'a> {
    map: &'a ColumnMap,
    database: &'a str,
    text: &'a str,
    lines: &'a LineIndex<'a>,
    out: Analysis,
    /// Byte offsets of identifier tokens understood as legitimate uses.
    accepted: HashSet<usize>,
    /// Scope of the statement being analysed (all its tables).
    scope: Vec<ScopeTable>,
    /// Mapped output aliases of the current statement.
    aliases: HashMap<String, Arc<MappedColumn>>,
}

impl<'a> Analyzer<'a> {
    fn new(map: &'a ColumnMap, database: &'a str, text: &'a str, lines: &'a LineIndex<'a>) -> Self {
        Analyzer {
            map,
            database,
            text,
            lines,
            out: Analysis::default(),
            accepted: HashSet::new(),
            scope: Vec::new(),
            aliases: HashMap::new(),
        }
    }

    fn finish(self) -> Analysis {
        self.out
    }

    fn refuse(&mut self, r: Refusal) {
        self.out.touches_mapped = true;
        if self.out.refusal.is_none() {
            self.out.refusal = Some(r);
        }
    }

    fn run(&mut self, tokens: Vec<TokenWithSpan>, outputs: Vec<OutputClause>) {
        let dialect = MsSqlDialect {};
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens.clone());
        let mut statements = Vec::new();
        loop {
            while parser.consume_token(&Token::SemiColon) {}
            if parser.peek_token().token == Token::EOF {
                break;
            }
            let begin = self.lines.offset(parser.peek_token().span.start);
            match parser.parse_statement() {
                Ok(s) => {
                    let end = match parser.peek_token() {
                        t if t.token == Token::EOF => Some(self.text.len()),
                        t => self.lines.offset(t.span.start),
                    };
                    statements.push((s, begin.unwrap_or(0), end.unwrap_or(self.text.len())));
                }
                Err(_) => {
                    // Fail closed: text that mentions a mapped table or
                    // column and cannot be parsed is never sent.
                    if self.map.mentions_mapped_name(self.text)
                        || self.map.mentions_mapped_table(self.text)
                    {
                        self.refuse(unparseable("the statement text could not be parsed"));
                    }
                    return;
                }
            }
        }
        for (statement, begin, end) in &statements {
            self.statement(statement, *begin, *end, &outputs, &tokens);
            if self.out.refusal.is_some() {
                return;
            }
        }
    }

    fn statement(
        &mut self,
        s: &Statement,
        begin: usize,
        end: usize,
        outputs: &[OutputClause],
        tokens: &[TokenWithSpan],
    ) {
        self.scope.clear();
        self.aliases.clear();
        match s {
            Statement::Query(q) => self.top_query(q),
            Statement::Insert(i) => self.insert(i),
            Statement::Update {
                table,
                assignments,
                from,
                selection,
                ..
            } => self.update(table, assignments, from.as_ref(), selection.as_ref()),
            Statement::Delete(d) => self.delete(&d.from, d.selection.as_ref()),
            Statement::Merge {
                table,
                source,
                on,
                clauses,
                ..
            } => self.merge(table, source, on, clauses),
            Statement::CreateTable(c) => self.create_table(&c.name, &c.columns),
            Statement::AlterTable {
                name, operations, ..
            } => self.alter_table(name, operations),
            Statement::Drop { .. } | Statement::Truncate { .. } => {}
            Statement::If(branches) => {
                return self.if_statement(branches, begin, end, outputs, tokens)
            }
            _ if self.mentions_mapped(begin, end) => {
                return self.refuse(Refusal::new(
                    RefusalKind::Unsupported,
                    "this kind of statement is not analysed by the proxy and it names a mapped \
                     table or column; it is not sent",
                ));
            }
            _ => {}
        }
        let output = outputs.iter().find(|o| o.at >= begin && o.at < end);
        if let Some(o) = output {
            self.output(o);
        }
        self.scan_tokens(tokens, begin, end);
    }

    /// IF … [ELSE IF …] [ELSE …], as install scripts guard their DDL
    /// (`IF OBJECT_ID(N'dbo.T') IS NULL CREATE TABLE …`). Each condition is
    /// walked like a WHERE clause with nothing outside it in scope, so a
    /// subquery on a mapped table is handled (or refused) as it would be in
    /// a SELECT; each branch's statements are analysed like top-level ones.
    /// The token scan then runs once over the whole IF, so a mapped column
    /// that no step accounted for is still refused.
    fn if_statement(
        &mut self,
        branches: &IfStatement,
        begin: usize,
        end: usize,
        outputs: &[OutputClause],
        tokens: &[TokenWithSpan],
    ) {
        if outputs.iter().any(|o| o.at >= begin && o.at < end) && self.mentions_mapped(begin, end) {
            return self.refuse(Refusal::new(
                RefusalKind::Unsupported,
                "an OUTPUT clause inside IF on a mapped table is not analysed; it is not sent",
            ));
        }
        let blocks = std::iter::once(&branches.if_block)
            .chain(&branches.elseif_blocks)
            .chain(branches.else_block.as_ref());
        for block in blocks {
            if let Some(condition) = &block.condition {
                self.scope.clear();
                self.aliases.clear();
                self.predicate(condition);
            }
            for inner in block.statements() {
                // Inner statements get no tokens: the scan below covers them.
                self.statement(inner, begin, end, &[], &[]);
                if self.out.refusal.is_some() {
                    return;
                }
            }
        }
        self.scan_tokens(tokens, begin, end);
    }

    // ---- scope ----

    fn table_of(&self, name: &ObjectName) -> Option<TableKey> {
        let text: Vec<String> = name.0.iter().map(|p| p.to_string()).collect();
        TableKey::parse(&text.join(".")).map(|(_, k)| k)
    }

    fn add_table(&mut self, name: &ObjectName, alias: Option<&Ident>) {
        let key = self.table_of(name);
        let mapped = key
            .as_ref()
            .map(|k| self.map.table_columns(self.database, k))
            .unwrap_or_default();
        if !mapped.is_empty() {
            self.out.touches_mapped = true;
        }
        let mut names = Vec::new();
        if let Some(k) = &key {
            names.push(k.table.clone());
        }
        if let Some(a) = alias {
            names.push(canonical_ident(&a.value));
        }
        self.scope.push(ScopeTable { names, mapped });
    }

    fn add_from(&mut self, from: &[TableWithJoins]) {
        for twj in from {
            self.add_factor(&twj.relation);
            for j in &twj.joins {
                self.add_factor(&j.relation);
            }
        }
        // ON conditions are read once every table of the FROM is in scope.
        for j in from.iter().flat_map(|t| t.joins.iter()) {
            if let Some(on) = join_condition(&j.join_operator) {
                self.predicate(on);
            }
        }
    }

    fn add_factor(&mut self, f: &TableFactor) {
        match f {
            TableFactor::Table { name, alias, .. } => {
                self.add_table(name, alias.as_ref().map(|a| &a.name))
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                self.sub_query(subquery);
                // Column names of a derived table are definitions, not uses.
                for c in alias.iter().flat_map(|a| a.columns.iter()) {
                    self.accept(&c.name);
                }
                self.scope.push(ScopeTable {
                    names: alias
                        .iter()
                        .map(|a| canonical_ident(&a.name.value))
                        .collect(),
                    mapped: Vec::new(),
                });
            }
            _ => {}
        }
    }

    /// The mapped column an identifier chain names, if any.
    fn resolve(&self, parts: &[Ident]) -> Option<Arc<MappedColumn>> {
        let (column, qualifier) = parts.split_last()?;
        let column = canonical_ident(&column.value);
        let qualifier = qualifier.last().map(|q| canonical_ident(&q.value));
        self.scope
            .iter()
            .filter(|t| qualifier.as_ref().is_none_or(|q| t.names.contains(q)))
            .flat_map(|t| t.mapped.iter())
            .find(|m| m.column == column)
            .cloned()
    }

    fn accept(&mut self, ident: &Ident) {
        if let Some(at) = self.lines.offset(ident.span.start) {
            self.accepted.insert(at);
        }
    }

    fn accept_all(&mut self, parts: &[Ident]) {
        parts.iter().for_each(|p| self.accept(p));
    }

    /// The mapped column an expression is, when it is a bare column reference.
    fn column_expr<'e>(&self, e: &'e Expr) -> Option<(Arc<MappedColumn>, &'e [Ident])> {
        let parts: &[Ident] = match e {
            Expr::Identifier(i) if !i.value.starts_with('@') => std::slice::from_ref(i),
            Expr::CompoundIdentifier(parts) => parts,
            Expr::Nested(inner) => return self.column_expr(inner),
            _ => return None,
        };
        self.resolve(parts).map(|m| (m, parts))
    }

    // ---- statements ----

    fn top_query(&mut self, q: &Query) {
        if let Some(plan) = self.query(q, true) {
            self.out.results.push(plan);
        }
    }

    fn sub_query(&mut self, q: &Query) {
        let saved = std::mem::take(&mut self.scope);
        self.query(q, false);
        let inner = std::mem::replace(&mut self.scope, saved);
        // Keep inner tables for the token scan (their names qualify columns).
        self.scope.extend(inner);
    }

    /// Analyses a query; the plan of its result when `top`.
    fn query(&mut self, q: &Query, top: bool) -> Option<ResultPlan> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.sub_query(&cte.query);
            }
        }
        match q.body.as_ref() {
            SetExpr::Select(s) => self.select(s, top),
            SetExpr::Query(inner) => self.query(inner, top),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr_sub(left);
                self.set_expr_sub(right);
                top.then(ResultPlan::default)
            }
            SetExpr::Values(_) => top.then(ResultPlan::default),
            _ => None,
        }
    }

    fn set_expr_sub(&mut self, e: &SetExpr) {
        if let SetExpr::Select(s) = e {
            self.select(s, false);
        }
    }

    fn select(&mut self, s: &Select, top: bool) -> Option<ResultPlan> {
        self.add_from(&s.from);
        if let Some(w) = &s.selection {
            self.predicate(w);
        }
        if let Some(h) = &s.having {
            self.predicate(h);
        }
        let returns_rows = top && s.into.is_none();
        let plan = ResultPlan {
            columns: s
                .projection
                .iter()
                .map(|item| self.projection(item, returns_rows))
                .collect(),
        };
        returns_rows.then_some(plan)
    }

    fn projection(&mut self, item: &SelectItem, accept: bool) -> OutputColumn {
        match item {
            SelectItem::UnnamedExpr(e) => self.projected_expr(e, None, accept),
            SelectItem::ExprWithAlias { expr, alias } => {
                self.projected_expr(expr, Some(alias), accept)
            }
            SelectItem::Wildcard(_) => self.star(None),
            SelectItem::QualifiedWildcard(kind, _) => {
                let q = kind.to_string();
                let name = q.rsplit('.').next().map(canonical_ident);
                self.star(name)
            }
        }
    }

    fn projected_expr(&mut self, e: &Expr, alias: Option<&Ident>, accept: bool) -> OutputColumn {
        if let Expr::Identifier(i) = e {
            if i.value.starts_with('@') {
                return OutputColumn::Plain;
            }
        }
        let Some((m, parts)) = self.column_expr(e) else {
            return OutputColumn::Plain;
        };
        if !accept {
            return OutputColumn::Plain;
        }
        self.accept_all(parts);
        if let Some(a) = alias {
            self.accept(a);
            self.aliases
                .insert(canonical_ident(&a.value), Arc::clone(&m));
        }
        OutputColumn::Mapped(m)
    }

    fn star(&mut self, qualifier: Option<String>) -> OutputColumn {
        let tables: Vec<&ScopeTable> = self
            .scope
            .iter()
            .filter(|t| qualifier.as_ref().is_none_or(|q| t.names.contains(q)))
            .collect();
        let mapped: Vec<Arc<MappedColumn>> = tables
            .iter()
            .flat_map(|t| t.mapped.iter().cloned())
            .collect();
        if mapped.is_empty() {
            return OutputColumn::Plain;
        }
        let mut names: Vec<&str> = mapped.iter().map(|m| m.column.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if tables.len() > 1 && names.len() != mapped.len() {
            self.refuse(Refusal::new(
                RefusalKind::ResultShape,
                "SELECT * over several tables with mapped columns of the same name cannot be \
                 decrypted by name; list the columns",
            ));
        }
        OutputColumn::Star(mapped)
    }

    fn insert(&mut self, i: &Insert) {
        let TableObject::TableName(name) = &i.table else {
            return;
        };
        self.add_table(name, i.table_alias.as_ref());
        let Some(target) = self.scope.last().cloned() else {
            return;
        };
        if target.mapped.is_empty() {
            if let Some(src) = &i.source {
                self.sub_query(src);
            }
            return;
        }
        if i.columns.is_empty() {
            self.refuse(Refusal::new(
                RefusalKind::Unsupported,
                format!(
                    "INSERT into {} must name its columns (it has mapped columns)",
                    target.mapped[0].table
                ),
            ));
            return;
        }
        let targets: Vec<Option<Arc<MappedColumn>>> = i
            .columns
            .iter()
            .map(|c| {
                target
                    .mapped
                    .iter()
                    .find(|m| m.column == canonical_ident(&c.value))
                    .cloned()
            })
            .collect();
        for (c, t) in i.columns.iter().zip(&targets) {
            if t.is_some() {
                self.accept(c);
            }
        }
        if let Some(src) = &i.source {
            self.insert_source(src, &targets);
        }
    }

    fn insert_source(&mut self, src: &Query, targets: &[Option<Arc<MappedColumn>>]) {
        match src.body.as_ref() {
            SetExpr::Values(v) => {
                for row in &v.rows {
                    self.store_row(row, targets);
                }
            }
            SetExpr::Select(s) => {
                self.add_from(&s.from);
                if let Some(w) = &s.selection {
                    self.predicate(w);
                }
                let exprs: Vec<Expr> =
                    s.projection
                        .iter()
                        .map(|p| match p {
                            SelectItem::UnnamedExpr(e)
                            | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
                            _ => Expr::Value(Value::Null.into()),
                        })
                        .collect();
                if s.projection.iter().any(|p| {
                    matches!(
                        p,
                        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
                    )
                }) && targets.iter().any(Option::is_some)
                {
                    self.refuse(expression_refusal(
                        "INSERT ... SELECT * into a table with mapped columns",
                    ));
                    return;
                }
                self.store_row(&exprs, targets);
            }
            _ => {
                if targets.iter().any(Option::is_some) {
                    self.refuse(expression_refusal("this INSERT source for a mapped column"));
                }
            }
        }
    }

    fn store_row(&mut self, row: &[Expr], targets: &[Option<Arc<MappedColumn>>]) {
        if row.len() != targets.len() {
            self.refuse(Refusal::new(
                RefusalKind::Unsupported,
                "INSERT values do not match its column list",
            ));
            return;
        }
        for (e, t) in row.iter().zip(targets) {
            match t {
                Some(m) => self.bind_value(e, m, Role::Store),
                None => self.walk_plain(e),
            }
        }
    }

    fn update(
        &mut self,
        table: &TableWithJoins,
        assignments: &[sqlparser::ast::Assignment],
        from: Option<&sqlparser::ast::UpdateTableFromKind>,
        selection: Option<&Expr>,
    ) {
        if let Some(f) = from {
            let tables = match f {
                sqlparser::ast::UpdateTableFromKind::BeforeSet(t)
                | sqlparser::ast::UpdateTableFromKind::AfterSet(t) => t,
            };
            self.add_from(tables);
        }
        self.add_from(std::slice::from_ref(table));
        for a in assignments {
            let AssignmentTarget::ColumnName(name) = &a.target else {
                continue;
            };
            let parts: Vec<Ident> = name
                .0
                .iter()
                .filter_map(|p| p.as_ident().cloned())
                .collect();
            match self.resolve(&parts) {
                Some(m) => {
                    self.accept_all(&parts);
                    self.bind_value(&a.value, &m, Role::Store);
                }
                None => self.walk_plain(&a.value),
            }
        }
        if let Some(w) = selection {
            self.predicate(w);
        }
    }

    fn delete(&mut self, from: &FromTable, selection: Option<&Expr>) {
        let tables = match from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        self.add_from(tables);
        if let Some(w) = selection {
            self.predicate(w);
        }
    }

    fn merge(
        &mut self,
        table: &TableFactor,
        source: &TableFactor,
        on: &Expr,
        clauses: &[sqlparser::ast::MergeClause],
    ) {
        self.add_factor(table);
        let Some(target) = self.scope.last().cloned() else {
            return;
        };
        let source_rows = merge_source(source);
        self.add_factor(source);
        self.predicate(on);
        for c in clauses {
            for (parts, value) in merge_assignments(&c.action) {
                let m = parts.last().and_then(|c| {
                    let name = canonical_ident(&c.value);
                    target.mapped.iter().find(|m| m.column == name).cloned()
                });
                match m {
                    Some(m) => {
                        self.accept_all(&parts);
                        self.merge_value(&value, &m, &source_rows);
                    }
                    None => self.walk_plain(&value),
                }
            }
        }
    }

    /// A MERGE value for a mapped column: a source column of a VALUES
    /// source (every row's item binds), or a parameter or literal.
    fn merge_value(&mut self, value: &Expr, m: &Arc<MappedColumn>, source: &Option<MergeSource>) {
        let column = match value {
            Expr::CompoundIdentifier(p) if p.len() == 2 => {
                Some((canonical_ident(&p[0].value), canonical_ident(&p[1].value)))
            }
            _ => None,
        };
        let found = column.and_then(|(alias, col)| {
            let s = source.as_ref()?;
            (s.alias == alias)
                .then(|| s.columns.iter().position(|c| *c == col))
                .flatten()
                .map(|i| (s, i))
        });
        let Some((s, index)) = found else {
            return self.bind_value(value, m, Role::Store);
        };
        if let Expr::CompoundIdentifier(p) = value {
            self.accept_all(p);
        }
        for row in s.rows.clone() {
            match row.get(index) {
                Some(e) => self.bind_value(e, m, Role::Store),
                None => self.refuse(expression_refusal("a MERGE source row without the column")),
            }
        }
    }

    fn create_table(&mut self, name: &ObjectName, columns: &[sqlparser::ast::ColumnDef]) {
        let Some(key) = self.table_of(name) else {
            return;
        };
        for c in columns {
            self.schema_column(&key, &c.name);
        }
    }

    fn alter_table(&mut self, name: &ObjectName, ops: &[sqlparser::ast::AlterTableOperation]) {
        let Some(key) = self.table_of(name) else {
            return;
        };
        for op in ops {
            match op {
                sqlparser::ast::AlterTableOperation::AddColumn { column_def, .. } => {
                    self.schema_column(&key, &column_def.name)
                }
                other => {
                    let _ = other;
                }
            }
        }
    }

    fn schema_column(&mut self, key: &TableKey, name: &Ident) {
        let Some(m) = self.map.column(self.database, key, &name.value) else {
            return;
        };
        self.out.touches_mapped = true;
        self.accept(name);
        let Some(after_name) = self.lines.offset(name.span.end) else {
            return self.refuse(unparseable("a column definition could not be located"));
        };
        match type_span(self.text, after_name) {
            Some((start, end)) => self.out.schema_edits.push(SchemaEdit {
                start,
                end,
                column: m,
            }),
            None => self.refuse(unparseable("a column type could not be located")),
        }
    }

    fn output(&mut self, o: &OutputClause) {
        let target = self.scope.first().cloned();
        let mapped = target.map(|t| t.mapped).unwrap_or_default();
        let columns: Vec<OutputColumn> = o
            .items
            .iter()
            .map(|item| match item {
                Some((q, c)) if q == "inserted" || q == "deleted" => match c.as_str() {
                    "*" if !mapped.is_empty() => OutputColumn::Star(mapped.clone()),
                    c => mapped
                        .iter()
                        .find(|m| m.column == canonical_ident(c))
                        .map_or(OutputColumn::Plain, |m| OutputColumn::Mapped(Arc::clone(m))),
                },
                _ => OutputColumn::Plain,
            })
            .collect();
        let plan = ResultPlan { columns };
        if o.into && plan.has_mapped() {
            return self.refuse(Refusal::new(
                RefusalKind::Unsupported,
                "OUTPUT ... INTO a table of a mapped column would copy ciphertext the proxy cannot \
                 follow",
            ));
        }
        if !o.into {
            self.out.results.push(plan);
        }
    }

    // ---- expressions ----

    /// A WHERE / ON / HAVING condition.
    fn predicate(&mut self, e: &Expr) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And | BinaryOperator::Or,
                right,
            } => {
                self.predicate(left);
                self.predicate(right);
            }
            Expr::Nested(inner) => self.predicate(inner),
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => self.predicate(expr),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq | BinaryOperator::NotEq,
                right,
            } => self.equality(left, right),
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => match self.column_expr(inner) {
                Some((_, parts)) => self.accept_all(parts),
                None => self.walk_plain(inner),
            },
            Expr::InList { expr, list, .. } => match self.column_expr(expr) {
                Some((m, parts)) => {
                    self.accept_all(parts);
                    for item in list {
                        self.lookup(item, &m);
                    }
                }
                None => list
                    .iter()
                    .chain(std::iter::once(expr.as_ref()))
                    .for_each(|x| self.walk_plain(x)),
            },
            other => self.walk_plain(other),
        }
    }

    fn equality(&mut self, left: &Expr, right: &Expr) {
        match (self.column_expr(left), self.column_expr(right)) {
            (Some((m, parts)), None) => {
                self.accept_all(parts);
                self.lookup(right, &m);
            }
            (None, Some((m, parts))) => {
                self.accept_all(parts);
                self.lookup(left, &m);
            }
            (Some((m, _)), Some(_)) => self.refuse(Refusal::new(
                RefusalKind::Expression,
                format!("{} is compared with another column; ciphertexts of different columns never match", m.display_name()),
            )),
            (None, None) => {
                self.walk_plain(left);
                self.walk_plain(right);
            }
        }
    }

    /// A value compared with a mapped column.
    fn lookup(&mut self, e: &Expr, m: &Arc<MappedColumn>) {
        if !m.is_deterministic() {
            return self.refuse(Refusal::new(
                RefusalKind::RandomizedEquality,
                format!(
                    "{} is encrypted with randomized mode; equality needs mode = \"deterministic\"",
                    m.display_name()
                ),
            ));
        }
        self.bind_value(e, m, Role::Lookup)
    }

    /// A parameter or literal for a mapped column; anything else is refused.
    fn bind_value(&mut self, e: &Expr, m: &Arc<MappedColumn>, role: Role) {
        if let Expr::Nested(inner) = e {
            return self.bind_value(inner, m, role);
        }
        if matches!(e, Expr::Value(v) if v.value == Value::Null) {
            return;
        }
        let Some(source) = self.value_source(e) else {
            return self.refuse(Refusal::new(
                RefusalKind::Expression,
                format!(
                    "{} gets a value from an expression the proxy cannot encrypt; use a \
                     parameter or a literal",
                    m.display_name()
                ),
            ));
        };
        self.out.touches_mapped = true;
        if let ValueSource::Param(p) = &source {
            if self.out.param_column(p).is_some_and(|b| b.column != *m) {
                let msg = format!("parameter {p} is used for two different mapped columns");
                return self.refuse(Refusal::new(RefusalKind::Unsupported, msg));
            }
        }
        self.out.bindings.push(Binding {
            source,
            column: Arc::clone(m),
            role,
        });
    }

    /// A parameter, or a literal (possibly negated) with its span.
    fn value_source(&self, e: &Expr) -> Option<ValueSource> {
        match e {
            Expr::Identifier(i) if i.value.starts_with('@') => {
                Some(ValueSource::Param(param_key(&i.value)))
            }
            Expr::Value(v) => self
                .literal(&v.value, v.span.start, v.span.end, false)
                .map(ValueSource::Literal),
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match expr.as_ref() {
                Expr::Value(v) => self
                    .literal(&v.value, v.span.start, v.span.end, true)
                    .map(ValueSource::Literal),
                _ => None,
            },
            _ => None,
        }
    }

    /// A literal's typed value and byte span (a leading minus included).
    fn literal(
        &self,
        v: &Value,
        start: Location,
        end: Location,
        negative: bool,
    ) -> Option<Literal> {
        let mut start = self.lines.offset(start)?;
        let end = self.lines.offset(end)?;
        if negative {
            let before = self.text.get(..start)?.trim_end();
            before.ends_with('-').then_some(())?;
            start = before.len() - 1;
        }
        let value = match v {
            Value::SingleQuotedString(s) => SqlValue::varchar_from_text(s, DEFAULT_COLLATION)?,
            Value::NationalStringLiteral(s) => SqlValue::NVarChar(s.clone()),
            Value::HexStringLiteral(h) => SqlValue::VarBinary(hex_bytes(h)?),
            Value::Number(n, _) => number_value(n, negative)?,
            _ => return None,
        };
        Some(Literal { start, end, value })
    }

    /// An expression that must not involve mapped columns (walked for
    /// subqueries; mapped column tokens inside are caught by the scan).
    fn walk_plain(&mut self, e: &Expr) {
        match e {
            Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => self.sub_query(q),
            Expr::InSubquery { expr, subquery, .. } => {
                self.walk_plain(expr);
                self.sub_query(subquery);
            }
            Expr::Nested(inner) => self.walk_plain(inner),
            Expr::BinaryOp { left, right, .. } => {
                self.walk_plain(left);
                self.walk_plain(right);
            }
            _ => {}
        }
    }

    // ---- token scan ----

    /// Refuses any mention of a mapped column in `begin..end` that the AST
    /// walk did not accept.
    fn scan_tokens(&mut self, tokens: &[TokenWithSpan], begin: usize, end: usize) {
        let toks: Vec<(usize, &TokenWithSpan)> = tokens
            .iter()
            .filter(|t| !is_ws(t))
            .filter_map(|t| Some((self.lines.offset(t.span.start)?, t)))
            .filter(|(at, _)| *at >= begin && *at < end)
            .collect();
        let words: HashSet<String> = toks
            .iter()
            .filter_map(|(_, t)| match &t.token {
                Token::Word(w) => Some(canonical_ident(&w.value)),
                _ => None,
            })
            .collect();
        for (i, (at, t)) in toks.iter().enumerate() {
            let Token::Word(w) = &t.token else { continue };
            if self.accepted.contains(at) || w.value.starts_with('@') {
                continue;
            }
            let Some(name) = self.mapped_mention(&toks, i, &w.value, &words) else {
                continue;
            };
            let kind = classify(&toks, i);
            let why = match kind {
                RefusalKind::Like => "LIKE cannot match encrypted values",
                RefusalKind::Range => "range comparisons cannot work on encrypted values",
                RefusalKind::Ordering => {
                    "ORDER BY, GROUP BY and aggregates cannot work on encrypted values"
                }
                RefusalKind::Function => "functions cannot be applied to encrypted values",
                _ => "it is used in an expression the proxy cannot evaluate on encrypted values",
            };
            return self.refuse(Refusal::new(kind, format!("{name}: {why}")));
        }
    }

    /// The display name of the mapped column token `i` names, if it does.
    fn mapped_mention(
        &self,
        toks: &[(usize, &TokenWithSpan)],
        i: usize,
        word: &str,
        words: &HashSet<String>,
    ) -> Option<String> {
        let col = canonical_ident(word);
        if let Some(m) = self.aliases.get(&col) {
            return Some(m.display_name());
        }
        let qualifier = match (
            i.checked_sub(2).and_then(|j| toks.get(j)),
            i.checked_sub(1).and_then(|j| toks.get(j)),
        ) {
            (Some((_, q)), Some((_, dot))) if dot.token == Token::Period => match &q.token {
                Token::Word(q) => Some(canonical_ident(&q.value)),
                _ => None,
            },
            _ => None,
        };
        if let Some((_, next)) = toks.get(i + 1) {
            if next.token == Token::Period {
                return None;
            }
        }
        let found = self
            .scope
            .iter()
            .filter(|t| qualifier.as_ref().is_none_or(|q| t.names.contains(q)))
            .flat_map(|t| t.mapped.iter())
            .find(|m| m.column == col);
        if let Some(m) = found {
            return Some(m.display_name());
        }
        let qualified_by_known_table = qualifier
            .as_ref()
            .is_some_and(|q| self.scope.iter().any(|t| t.names.contains(q)));
        if qualified_by_known_table {
            return None;
        }
        // A column of a mapped table the AST walk did not put in scope
        // (a table inside an expression it does not descend into).
        self.map
            .columns_named(self.database, &col)
            .into_iter()
            .find(|m| words.contains(&m.table.table))
            .map(|m| m.display_name())
    }

    /// Whether `begin..end` mentions a mapped table, column or procedure
    /// name anywhere, string literals included (dynamic SQL).
    fn mentions_mapped(&self, begin: usize, end: usize) -> bool {
        let Some(text) = self.text.get(begin..end) else {
            return true;
        };
        self.map.mentions_mapped_name(text)
            || self.map.mentions_mapped_table(text)
            || self.map.mentions_mapped_procedure(text)
    }
}

fn join_condition(op: &JoinOperator) -> Option<&Expr> {
    let constraint = match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c) => c,
        _ => return None,
    };
    match constraint {
        JoinConstraint::On(e) => Some(e),
        _ => None,
    }
}

fn expression_refusal(what: &str) -> Refusal {
    Refusal::new(
        RefusalKind::Expression,
        format!("{what} is not a parameter or literal; the proxy cannot encrypt it"),
    )
}

/// The (target column, value) pairs of a MERGE action: INSERT (cols)
/// VALUES (...) and UPDATE SET col = value.
fn merge_assignments(action: &MergeAction) -> Vec<(Vec<Ident>, Expr)> {
    match action {
        MergeAction::Insert(ins) => match &ins.kind {
            MergeInsertKind::Values(v) => v.rows.first().map_or_else(Vec::new, |row| {
                let columns = ins.columns.iter().map(|c| vec![c.clone()]);
                columns.zip(row.iter().cloned()).collect()
            }),
            MergeInsertKind::Row => Vec::new(),
        },
        MergeAction::Update { assignments } => assignments
            .iter()
            .filter_map(|a| match &a.target {
                AssignmentTarget::ColumnName(n) => Some((ident_parts(n), a.value.clone())),
                _ => None,
            })
            .collect(),
        MergeAction::Delete => Vec::new(),
    }
}

fn ident_parts(name: &ObjectName) -> Vec<Ident> {
    name.0
        .iter()
        .filter_map(|p| p.as_ident().cloned())
        .collect()
}

struct MergeSource {
    alias: String,
    columns: Vec<String>,
    rows: Vec<Vec<Expr>>,
}

fn merge_source(source: &TableFactor) -> Option<MergeSource> {
    let TableFactor::Derived {
        subquery,
        alias: Some(alias),
        ..
    } = source
    else {
        return None;
    };
    let SetExpr::Values(v) = subquery.body.as_ref() else {
        return None;
    };
    Some(MergeSource {
        alias: canonical_ident(&alias.name.value),
        columns: alias
            .columns
            .iter()
            .map(|c| canonical_ident(&c.name.value))
            .collect(),
        rows: v.rows.clone(),
    })
}

const AGGREGATES: [&str; 9] = [
    "count",
    "count_big",
    "sum",
    "avg",
    "min",
    "max",
    "string_agg",
    "stdev",
    "var",
];

/// Words that can precede `(` without being a function call.
const NOT_FUNCTIONS: [Keyword; 12] = [
    Keyword::IN,
    Keyword::VALUES,
    Keyword::EXISTS,
    Keyword::AND,
    Keyword::OR,
    Keyword::NOT,
    Keyword::ON,
    Keyword::WHERE,
    Keyword::SELECT,
    Keyword::INTO,
    Keyword::AS,
    Keyword::BY,
];

/// Which refusal a mapped column token at `i` gets, from its neighbours.
fn classify(toks: &[(usize, &TokenWithSpan)], i: usize) -> RefusalKind {
    let tok = |j: usize| toks.get(j).map(|(_, t)| &t.token);
    // Step over a qualifier (`p.ssn`) to the token before the reference.
    let mut first = i;
    while first >= 2 && tok(first - 1) == Some(&Token::Period) {
        first -= 2;
    }
    let prev = first.checked_sub(1).and_then(tok);
    let next = tok(i + 1);
    let is_kw = |t: Option<&Token>, k: &str| t.is_some_and(|t| is_word(t, k));
    if is_kw(next, "LIKE")
        || is_kw(prev, "LIKE")
        || (is_kw(next, "NOT") && is_kw(tok(i + 2), "LIKE"))
    {
        return RefusalKind::Like;
    }
    let range =
        |t: Option<&Token>| matches!(t, Some(Token::Lt | Token::Gt | Token::LtEq | Token::GtEq));
    if range(prev)
        || range(next)
        || is_kw(next, "BETWEEN")
        || (is_kw(next, "NOT") && is_kw(tok(i + 2), "BETWEEN"))
    {
        return RefusalKind::Range;
    }
    if prev == Some(&Token::LParen) {
        if let Some(Token::Word(f)) = first.checked_sub(2).and_then(tok) {
            let name = f.value.to_lowercase();
            if AGGREGATES.contains(&name.as_str()) {
                return RefusalKind::Ordering;
            }
            if !NOT_FUNCTIONS.contains(&f.keyword) {
                return RefusalKind::Function;
            }
        }
    }
    if in_clause(toks, first, &["ORDER", "GROUP"]) {
        return RefusalKind::Ordering;
    }
    RefusalKind::Expression
}

/// Whether the nearest clause keyword before `i` at the same depth is one of
/// `kws` followed by BY.
fn in_clause(toks: &[(usize, &TokenWithSpan)], i: usize, kws: &[&str]) -> bool {
    let mut depth = 0i32;
    for j in (0..i).rev() {
        let t = &toks[j].1.token;
        match t {
            Token::RParen => depth += 1,
            Token::LParen if depth == 0 => return false,
            Token::LParen => depth -= 1,
            Token::Word(w) if depth == 0 && w.value.eq_ignore_ascii_case("BY") => {
                return j > 0 && kws.iter().any(|k| is_word(&toks[j - 1].1.token, k));
            }
            Token::Word(w)
                if depth == 0
                    && ["WHERE", "SELECT", "SET", "ON", "HAVING", "VALUES"]
                        .iter()
                        .any(|k| w.value.eq_ignore_ascii_case(k)) =>
            {
                return false;
            }
            _ => {}
        }
    }
    false
}

/// The byte span of the data type that starts after `from` (whitespace
/// skipped): a word, optionally `(n[, m])` or `(max)`.
fn type_span(text: &str, from: usize) -> Option<(usize, usize)> {
    let rest = text.get(from..)?;
    let start = from + (rest.len() - rest.trim_start().len());
    let body = text.get(start..)?;
    let word_len =
        body.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '[' || c == ']'))?;
    if word_len == 0 {
        return None;
    }
    let after_word = body.get(word_len..)?;
    let gap = after_word.len() - after_word.trim_start().len();
    if after_word.trim_start().starts_with('(') {
        let close = after_word.find(')')?;
        return Some((start, start + word_len + close + 1));
    }
    let _ = gap;
    Some((start, start + word_len))
}

fn hex_bytes(h: &str) -> Option<Vec<u8>> {
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A numeric literal typed as SQL Server types it: int when it fits,
/// numeric(p,s) for other exact numbers, float with an exponent.
fn number_value(n: &str, negative: bool) -> Option<SqlValue> {
    if n.contains(['e', 'E']) {
        let f: f64 = n.parse().ok()?;
        return Some(SqlValue::Float(if negative { -f } else { f }));
    }
    let (value, scale) = parse_decimal_text(n)?;
    let value = if negative { -value } else { value };
    if scale == 0 {
        if let Ok(i) = i32::try_from(value) {
            return Some(SqlValue::Int(i));
        }
    }
    let precision = u8::try_from(n.chars().filter(char::is_ascii_digit).count())
        .ok()?
        .max(scale)
        .max(1);
    Some(SqlValue::Decimal {
        value,
        precision,
        scale,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{ColumnConfig, EncryptionMode, OnDecryptError};

    pub(crate) fn test_map() -> ColumnMap {
        let col = |column: &str, ty: &str, mode| ColumnConfig {
            table: "dbo.Patients".into(),
            column: column.into(),
            sql_type: ty.into(),
            mode,
            on_decrypt_error: OnDecryptError::Error,
            database: None,
        };
        ColumnMap::new(
            &[
                col("Ssn", "char(11)", EncryptionMode::Deterministic),
                col("Name", "nvarchar(50)", EncryptionMode::Randomized),
                col("Dob", "date", EncryptionMode::Deterministic),
            ],
            &[],
        )
        .unwrap()
    }

    fn run(sql: &str) -> Analysis {
        analyze(&test_map(), "clinic", sql)
    }

    fn refused(sql: &str) -> u32 {
        let a = run(sql);
        a.refusal
            .as_ref()
            .map(Refusal::number)
            .unwrap_or_else(|| panic!("not refused: {sql}"))
    }

    fn params(a: &Analysis) -> Vec<(String, String, Role)> {
        a.bindings
            .iter()
            .filter_map(|b| match &b.source {
                ValueSource::Param(p) => Some((p.clone(), b.column.column.clone(), b.role)),
                ValueSource::Literal(_) => None,
            })
            .collect()
    }

    fn ok(sql: &str) -> Analysis {
        let a = run(sql);
        assert!(a.refusal.is_none(), "{sql}: {:?}", a.refusal);
        a
    }

    #[test]
    fn unmapped_statements_pass_untouched() {
        let a = ok("SELECT id, total FROM dbo.Orders WHERE total > @p0 ORDER BY total");
        assert!(!a.touches_mapped && !a.needs_rewrite());
        let a = ok("this is not sql at all");
        assert!(!a.needs_rewrite());
    }

    #[test]
    fn insert_values_multi_row() {
        let a = ok("INSERT INTO [dbo].[Patients] ([Id], [Ssn], [Name]) VALUES (@p0, @p1, @p2), (@p3, @p4, N'x')");
        let p = params(&a);
        assert!(p.contains(&("@p1".into(), "ssn".into(), Role::Store)));
        assert!(p.contains(&("@p2".into(), "name".into(), Role::Store)));
        assert!(p.contains(&("@p4".into(), "ssn".into(), Role::Store)));
        assert!(!p.iter().any(|(n, _, _)| n == "@p0" || n == "@p3"));
        let lit = a.bindings.iter().find_map(|b| match &b.source {
            ValueSource::Literal(l) => Some(l.clone()),
            _ => None,
        });
        let lit = lit.expect("literal bound");
        assert_eq!(lit.value, SqlValue::NVarChar("x".into()));
    }

    #[test]
    fn insert_output_inserted_as_ef_writes_it() {
        let a = ok("SET NOCOUNT ON;\nINSERT INTO [Patients] ([Name], [Ssn])\nOUTPUT INSERTED.[Id], INSERTED.[Ssn]\nVALUES (@p0, @p1);");
        assert_eq!(a.results.len(), 1);
        assert_eq!(a.results[0].columns.len(), 2);
        assert!(matches!(&a.results[0].columns[1], OutputColumn::Mapped(m) if m.column == "ssn"));
        assert_eq!(params(&a).len(), 2);
    }

    #[test]
    fn merge_output_as_ef_writes_it() {
        let sql = "SET NOCOUNT ON;\nDECLARE @inserted0 TABLE ([Id] int, [_Position] [int]);\n\
                   MERGE [Patients] USING (\nVALUES (@p0, @p1, 0),\n(@p2, @p3, 1)) AS i ([Name], [Ssn], _Position) ON 1=0\n\
                   WHEN NOT MATCHED THEN\nINSERT ([Name], [Ssn])\nVALUES (i.[Name], i.[Ssn])\n\
                   OUTPUT INSERTED.[Id], i._Position\nINTO @inserted0;\n\n\
                   SELECT [i].[Id] FROM @inserted0 i\nORDER BY [i].[_Position];";
        let a = ok(sql);
        let p = params(&a);
        assert!(p.contains(&("@p0".into(), "name".into(), Role::Store)));
        assert!(p.contains(&("@p3".into(), "ssn".into(), Role::Store)));
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn insert_select_literal_ok_column_refused() {
        let a = ok("INSERT INTO Patients (Ssn, Id) SELECT @p0, 5");
        assert_eq!(params(&a).len(), 1);
        assert_eq!(
            refused("INSERT INTO Patients (Ssn) SELECT ssn_plain FROM dbo.Staging"),
            50106
        );
        assert_eq!(refused("INSERT INTO Patients VALUES (@p0)"), 50107);
    }

    #[test]
    fn update_set_and_where() {
        let a =
            ok("UPDATE p SET p.Name = @name, Visits = 3 FROM dbo.Patients p WHERE p.Ssn = @ssn");
        let p = params(&a);
        assert!(p.contains(&("@name".into(), "name".into(), Role::Store)));
        assert!(p.contains(&("@ssn".into(), "ssn".into(), Role::Lookup)));
        assert_eq!(refused("UPDATE Patients SET Name = UPPER(@p0)"), 50106);
        assert_eq!(refused("UPDATE Patients SET Name = Name + @p0"), 50106);
    }

    #[test]
    fn where_equality_and_in_on_deterministic() {
        let a = ok("SELECT Id FROM Patients WHERE Ssn IN (@a, @b) AND Dob = '2001-02-03'");
        assert_eq!(params(&a).len(), 2);
        assert_eq!(a.bindings.len(), 3);
        ok("DELETE FROM Patients WHERE @p1 = [Ssn]");
        ok("SELECT Id FROM Patients WHERE Name IS NULL");
    }

    #[test]
    fn fail_closed_cases_have_their_numbers() {
        assert_eq!(refused("SELECT Id FROM Patients WHERE Name = @p0"), 50104);
        assert_eq!(
            refused("SELECT Id FROM Patients WHERE Ssn LIKE '12%'"),
            50101
        );
        assert_eq!(refused("SELECT Id FROM Patients WHERE Dob > @d"), 50102);
        assert_eq!(
            refused("SELECT Id FROM Patients WHERE Dob BETWEEN @a AND @b"),
            50102
        );
        assert_eq!(refused("SELECT Id FROM Patients ORDER BY Name"), 50103);
        assert_eq!(
            refused("SELECT Dob, COUNT(*) FROM Patients GROUP BY Dob"),
            50103
        );
        assert_eq!(refused("SELECT MAX(Dob) FROM Patients"), 50103);
        assert_eq!(
            refused("SELECT Id FROM Patients WHERE UPPER(Name) = @n"),
            50105
        );
        assert_eq!(refused("SELECT LEN(Name) FROM Patients"), 50105);
        assert_eq!(
            refused("SELECT p.Id FROM Patients p JOIN Patients q ON p.Ssn = q.Ssn"),
            50106
        );
        assert_eq!(refused("SELECT Id FROM Patients WHERE Ssn = Id + 1"), 50106);
        assert_eq!(refused("SELECT Ssn FROM Patients WHERE (("), 50100);
    }

    #[test]
    fn select_projection_with_aliases_and_joins() {
        let a = ok("SELECT p.Id, p.[Name] AS n, v.Total FROM dbo.Patients AS p INNER JOIN dbo.Visits v ON v.PatientId = p.Id");
        let cols = &a.results[0].columns;
        assert_eq!(cols.len(), 3);
        assert_eq!(cols[0], OutputColumn::Plain);
        assert!(matches!(&cols[1], OutputColumn::Mapped(m) if m.column == "name"));
        assert_eq!(cols[2], OutputColumn::Plain);
        assert_eq!(
            refused("SELECT p.Name AS n FROM Patients p ORDER BY n"),
            50103
        );
    }

    #[test]
    fn select_star_and_qualified_star() {
        let a = ok("SELECT * FROM [clinic].[dbo].[Patients]");
        assert!(matches!(&a.results[0].columns[0], OutputColumn::Star(m) if m.len() == 3));
        let a = ok("SELECT v.* FROM Patients p JOIN Visits v ON v.PatientId = p.Id");
        assert_eq!(a.results[0].columns[0], OutputColumn::Plain);
    }

    #[test]
    fn batches_without_semicolons_and_declare() {
        let a = ok("DECLARE @x int = 5\nSELECT Name FROM Patients WHERE Id = @x\nSELECT Id FROM dbo.Visits");
        assert_eq!(a.results.len(), 2);
        assert!(a.results[0].has_mapped());
        assert!(!a.results[1].has_mapped());
    }

    /// The text of each literal bound to a mapped column.
    fn literal_texts<'a>(a: &Analysis, sql: &'a str) -> Vec<&'a str> {
        a.bindings
            .iter()
            .filter_map(|b| match &b.source {
                ValueSource::Literal(l) => Some(&sql[l.start..l.end]),
                _ => None,
            })
            .collect()
    }

    /// The text of each declared type a schema edit replaces.
    fn schema_edit_texts<'a>(a: &Analysis, sql: &'a str) -> Vec<&'a str> {
        a.schema_edits
            .iter()
            .map(|e| &sql[e.start..e.end])
            .collect()
    }

    #[test]
    fn literal_spans_cover_the_literal_text() {
        let sql = "UPDATE Patients SET Ssn = '123-45-6789' WHERE Dob = N'2000-01-01' AND Id = -5";
        let a = ok(sql);
        let spans = literal_texts(&a, sql);
        assert_eq!(spans, vec!["'123-45-6789'", "N'2000-01-01'"]);
    }

    #[test]
    fn create_and_alter_table_types_are_located() {
        let sql = "CREATE TABLE dbo.Patients (Id int PRIMARY KEY, Ssn char(11) NOT NULL, Name nvarchar (50))";
        let a = ok(sql);
        let spans = schema_edit_texts(&a, sql);
        assert_eq!(spans, vec!["char(11)", "nvarchar (50)"]);
        let sql = "ALTER TABLE Patients ADD Dob date NULL";
        let a = ok(sql);
        assert_eq!(&sql[a.schema_edits[0].start..a.schema_edits[0].end], "date");
    }

    #[test]
    fn if_guards_are_analysed_branch_by_branch() {
        let sql = "IF OBJECT_ID(N'dbo.Patients') IS NULL \
                   CREATE TABLE dbo.Patients (Id int PRIMARY KEY, Ssn char(11), Name nvarchar(50)) \
                   ELSE ALTER TABLE dbo.Patients ADD Dob date NULL";
        let a = ok(sql);
        let spans = schema_edit_texts(&a, sql);
        assert_eq!(spans, vec!["char(11)", "nvarchar(50)", "date"]);

        // A lookup in the condition is bound like one in a WHERE clause, and
        // so is a literal in a branch.
        let sql = "IF EXISTS (SELECT 1 FROM Patients WHERE Ssn = '123-45-6789') \
                   UPDATE Patients SET Dob = '2000-01-01' WHERE Ssn = '123-45-6789'";
        let a = ok(sql);
        let spans = literal_texts(&a, sql);
        assert_eq!(
            spans,
            vec!["'123-45-6789'", "'2000-01-01'", "'123-45-6789'"]
        );
    }

    #[test]
    fn statements_the_walk_does_not_cover_fail_closed() {
        assert_eq!(
            refused("SELECT CASE WHEN EXISTS (SELECT 1 FROM Patients WHERE Ssn = '1') THEN 1 END"),
            50106
        );
        assert_eq!(
            refused("IF EXISTS (SELECT 1 FROM Patients WHERE Name = N'Ann') SELECT 1"),
            50104
        );
        assert_eq!(
            refused("IF 1 = 1 SELECT Ssn FROM Patients ORDER BY Ssn"),
            50103
        );
        ok("DROP TABLE Patients");
        ok("SELECT v.Ssn FROM dbo.Visits v WHERE v.PatientId IN (SELECT Id FROM Patients)");
    }

    #[test]
    fn join_conditions_are_analysed() {
        let a = ok(
            "SELECT v.Id FROM dbo.Visits v JOIN Patients p ON p.Id = v.PatientId AND p.Ssn = @s",
        );
        assert_eq!(params(&a), vec![("@s".into(), "ssn".into(), Role::Lookup)]);
        assert_eq!(
            refused("SELECT v.Id FROM Visits v JOIN Patients p ON p.Name = @n"),
            50104
        );
    }

    #[test]
    fn ef_core_update_with_output_1() {
        let a =
            ok("SET NOCOUNT ON;\nUPDATE [Patients] SET [Name] = @p0\nOUTPUT 1\nWHERE [Id] = @p1;");
        assert_eq!(params(&a), vec![("@p0".into(), "name".into(), Role::Store)]);
        assert_eq!(
            a.results,
            vec![ResultPlan {
                columns: vec![OutputColumn::Plain]
            }]
        );
    }

    #[test]
    fn dynamic_sql_and_mapped_procedures_in_batches_fail_closed() {
        let sql = "EXEC sp_executesql N'INSERT INTO Patients (Ssn) VALUES (@s)', N'@s char(11)', @s = '1'";
        assert_eq!(refused(sql), 50107);
        ok("EXEC sp_who");
    }

    #[test]
    fn common_driver_and_orm_shapes_are_accepted() {
        for sql in [
            "SELECT TOP(1) Id, Ssn FROM dbo.Patients WITH (NOLOCK) WHERE Ssn = @p0",
            "SELECT Id, Name FROM Patients WHERE Ssn = @p0 ORDER BY Id OFFSET 10 ROWS FETCH NEXT 5 ROWS ONLY",
            "SELECT COUNT(*) FROM Patients WHERE Ssn = @p0",
            "DELETE p FROM Patients p WHERE p.Ssn = @s",
            "SELECT [p].[Id], [p].[Name] FROM [Patients] AS [p] WHERE [p].[Dob] = @__dob_0",
            "SET NOCOUNT ON; INSERT INTO [Patients] ([Name]) VALUES (@p0); SELECT [Id] FROM [Patients] WHERE @@ROWCOUNT = 1 AND [Id] = scope_identity();",
            "SELECT Id FROM Patients WHERE Ssn IS NOT NULL AND (Dob = @d OR Dob IS NULL)",
        ] {
            let a = ok(sql);
            assert!(a.touches_mapped, "{sql}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any text is analysed without panicking, and text naming a mapped
        /// column is either understood or refused.
        #[test]
        fn arbitrary_text_never_panics(noise in "\\PC{0,80}", at in 0usize..4) {
            let parts = ["SELECT Ssn FROM Patients WHERE ", noise.as_str(), " Ssn = @p", "'"];
            let sql: String = parts.iter().take(at + 1).copied().collect();
            let a = run(&sql);
            proptest::prop_assert!(a.refusal.is_some() || a.touches_mapped);
        }
    }

    #[test]
    fn a_parameter_for_two_columns_is_refused() {
        assert_eq!(
            refused("SELECT Id FROM Patients WHERE Ssn = @p OR Dob = @p"),
            50107
        );
    }
}
