//! Procedures: user procedures (CREATE PROCEDURE, EXEC with positional or named arguments,
//! RETURN, OUTPUT), and the system procedures drivers call: sp_executesql, sp_prepare,
//! sp_execute, sp_prepexec, sp_unprepare, sp_datatype_info(_100).
//!
//! A procedure is stored as its text and parsed again when called; the body runs as a
//! nested batch whose variables are the parameters.

use std::collections::HashMap;

use rusqlite::types::ValueRef;

use crate::sandbox::engine::catalog;
use crate::sandbox::engine::errors::SqlError;
use crate::sandbox::engine::exec::{assign, parse_param_decl, Exec};
use crate::sandbox::engine::session::{
    ColumnDesc, Prepared, ReturnValue, Session, Variable, MAX_PREPARED_PER_SESSION,
};
use crate::sandbox::engine::types::{expression_form, Len, SqlType, Value};

/// One argument of a procedure call.
#[derive(Clone)]
pub struct Arg {
    /// `@name` for a named argument, empty for a positional one.
    pub name: String,
    pub ty: SqlType,
    pub value: Value,
    /// Variable of the calling batch that receives an OUTPUT value (T-SQL EXEC).
    pub target: Option<String>,
}

/// A declared procedure or sp_executesql parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    pub name: String,
    pub ty: SqlType,
    pub output: bool,
    /// Default value expression text.
    pub default: Option<String>,
}

impl ParamDecl {
    /// Parses `@name [AS] type [= default] [OUTPUT|OUT] [READONLY]`.
    pub fn parse(text: &str) -> Result<ParamDecl, SqlError> {
        let text = text.trim();
        let (name, rest) = text
            .split_once(char::is_whitespace)
            .ok_or_else(|| SqlError::syntax(text))?;
        if !name.starts_with('@') {
            return Err(SqlError::syntax(name));
        }
        let mut rest = rest.trim();
        if rest.get(..3).is_some_and(|w| w.eq_ignore_ascii_case("as ")) {
            rest = rest.get(3..).unwrap_or_default().trim();
        }
        let mut output = false;
        for suffix in ["output", "out", "readonly"] {
            let lower = rest.to_ascii_lowercase();
            if lower.ends_with(suffix)
                && lower[..lower.len() - suffix.len()].ends_with(char::is_whitespace)
            {
                output |= suffix != "readonly";
                rest = rest[..rest.len() - suffix.len()].trim();
            }
        }
        let (ty_text, default) = match rest.split_once('=') {
            Some((t, d)) => (t.trim(), Some(d.trim().to_string())),
            None => (rest, None),
        };
        Ok(ParamDecl {
            name: name.to_string(),
            ty: SqlType::parse(ty_text)?,
            output,
            default,
        })
    }
}

/// A CREATE PROCEDURE batch.
pub struct ProcText {
    pub name: String,
    pub or_alter: bool,
    pub text: String,
}

/// Words at the start of `text`, skipping whitespace; returns (word, rest).
fn next_word(text: &str) -> (&str, &str) {
    let t = text.trim_start();
    let end = t
        .find(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .unwrap_or(t.len());
    (&t[..end], &t[end..])
}

/// Recognises a batch that is a CREATE [OR ALTER] PROC[EDURE].
pub fn create_procedure_text(sql: &str) -> Option<ProcText> {
    let (w, rest) = next_word(sql);
    if !w.eq_ignore_ascii_case("create") {
        return None;
    }
    let (mut w, mut rest) = next_word(rest);
    let mut or_alter = false;
    if w.eq_ignore_ascii_case("or") {
        let (alter, r) = next_word(rest);
        if !alter.eq_ignore_ascii_case("alter") {
            return None;
        }
        or_alter = true;
        (w, rest) = next_word(r);
    }
    if !(w.eq_ignore_ascii_case("proc") || w.eq_ignore_ascii_case("procedure")) {
        return None;
    }
    let (name, _) = next_word(rest);
    let name = name
        .rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches(|c| c == '[' || c == ']' || c == '"')
        .to_string();
    Some(ProcText {
        name,
        or_alter,
        text: sql.to_string(),
    })
}

/// Byte offset of the first top-level `AS` word (outside quotes, brackets and parentheses).
fn find_as(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut quote, mut bracket) = (0i32, false, false);
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !bracket => quote = !quote,
            b'[' if !quote => bracket = true,
            b']' if !quote => bracket = false,
            b'(' if !quote && !bracket => depth += 1,
            b')' if !quote && !bracket => depth -= 1,
            _ if quote || bracket || depth != 0 => {}
            b'a' | b'A' => {
                let word = bytes
                    .get(i..i + 2)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"as"));
                let before = i == 0
                    || !bytes[i - 1].is_ascii_alphanumeric()
                        && bytes[i - 1] != b'_'
                        && bytes[i - 1] != b'@';
                let after = bytes
                    .get(i + 2)
                    .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_');
                if word && before && after {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// A parsed procedure: parameters and body.
pub struct ProcDef {
    pub params: Vec<ParamDecl>,
    pub body: String,
}

impl ProcDef {
    /// Parses the stored CREATE PROCEDURE text.
    pub fn parse(text: &str) -> Result<ProcDef, SqlError> {
        let lower = text.to_ascii_lowercase();
        let kw = lower
            .find("proc")
            .ok_or_else(|| SqlError::syntax("PROCEDURE"))?;
        let (_, after_kw) = next_word(&text[kw..]);
        let (_, after_name) = next_word(after_kw);
        let at = find_as(after_name).ok_or_else(|| SqlError::syntax("end of batch"))?;
        let mut params = after_name[..at].trim();
        if params.starts_with('(') && params.ends_with(')') {
            params = &params[1..params.len() - 1];
        }
        let params = parse_param_decl(params)?;
        Ok(ProcDef {
            params,
            body: strip_begin_end(after_name[at + 2..].trim()).to_string(),
        })
    }
}

fn strip_begin_end(body: &str) -> &str {
    let (first, rest) = next_word(body);
    let (second, _) = next_word(rest);
    let is_tran = second.eq_ignore_ascii_case("tran") || second.eq_ignore_ascii_case("transaction");
    let trimmed = rest.trim_end().trim_end_matches(';').trim_end();
    let lower = trimmed.to_ascii_lowercase();
    if first.eq_ignore_ascii_case("begin") && !is_tran && lower.ends_with("end") {
        return &trimmed[..trimmed.len() - 3];
    }
    body
}

fn text_arg(args: &[Arg], i: usize) -> Option<String> {
    match args.get(i).map(|a| &a.value) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_arg(args: &[Arg], i: usize) -> Option<i64> {
    match args.get(i).map(|a| &a.value) {
        Some(Value::Int(n)) => Some(*n),
        Some(Value::Decimal { value, scale: 0 }) => i64::try_from(*value).ok(),
        _ => None,
    }
}

/// Dispatches a procedure call.
pub(crate) fn call(
    ex: &mut Exec<'_, '_>,
    s: &mut Session,
    name: &str,
    args: Vec<Arg>,
) -> Result<(), SqlError> {
    match name.to_ascii_lowercase().as_str() {
        "sp_executesql" => {
            let sql = text_arg(&args, 0).ok_or_else(|| {
                SqlError::new(
                    214,
                    "Procedure expects parameter '@statement' of type 'ntext/nchar/nvarchar'.",
                )
            })?;
            let decl = text_arg(&args, 1).unwrap_or_default();
            let params = parse_param_decl(&decl)?;
            let rest = args.get(2..).unwrap_or_default().to_vec();
            run_with_params(ex, s, &sql, &params, rest, 2, false)
        }
        "sp_prepare" | "sp_prepexec" => {
            let decl = text_arg(&args, 1).unwrap_or_default();
            let sql = text_arg(&args, 2)
                .ok_or_else(|| SqlError::new(8180, "Statement(s) could not be prepared."))?;
            let handle = prepare(s, &decl, &sql)?;
            ex.sink.return_value(ReturnValue {
                name: args.first().map(|a| a.name.clone()).unwrap_or_default(),
                ordinal: 0,
                ty: SqlType::Int,
                value: Value::Int(handle.into()),
            });
            if name.eq_ignore_ascii_case("sp_prepexec") {
                let rest = args.get(3..).unwrap_or_default().to_vec();
                return execute_handle(ex, s, handle, rest, 3);
            }
            finish(ex, s, 0);
            Ok(())
        }
        "sp_execute" => {
            let handle = int_arg(&args, 0)
                .and_then(|h| i32::try_from(h).ok())
                .unwrap_or(0);
            let rest = args.get(1..).unwrap_or_default().to_vec();
            execute_handle(ex, s, handle, rest, 1)
        }
        "sp_unprepare" => {
            let handle = int_arg(&args, 0)
                .and_then(|h| i32::try_from(h).ok())
                .unwrap_or(0);
            unprepare(s, handle)?;
            finish(ex, s, 0);
            Ok(())
        }
        "sp_datatype_info" | "sp_datatype_info_100" => {
            let filter = int_arg(&args, 0);
            datatype_info(ex, s, filter);
            finish(ex, s, 0);
            Ok(())
        }
        "sp_describe_first_result_set" => {
            let sql = text_arg(&args, 0).unwrap_or_default();
            let cols = ex.engine.describe_first_result_set(s, &sql)?;
            describe_first_result_set(ex, s, &cols);
            finish(ex, s, 0);
            Ok(())
        }
        "sp_describe_undeclared_parameters" => {
            let sql = text_arg(&args, 0).unwrap_or_default();
            let params = ex.engine.describe_undeclared_parameters(s, &sql)?;
            describe_undeclared(ex, s, &params);
            finish(ex, s, 0);
            Ok(())
        }
        _ => user_procedure(ex, s, name, args),
    }
}

fn finish(ex: &mut Exec<'_, '_>, s: &Session, status: i32) {
    ex.sink.return_status(status);
    let done = s.done(None, false);
    ex.sink.done(done);
}

/// Creates a prepared statement handle.
pub(crate) fn prepare(s: &mut Session, decl: &str, sql: &str) -> Result<i32, SqlError> {
    let params = parse_param_decl(decl)?
        .into_iter()
        .map(|p| (p.name, p.ty))
        .collect();
    if s.prepared.len() >= MAX_PREPARED_PER_SESSION {
        return Err(SqlError::unsupported(
            "more prepared statements on one connection",
        ));
    }
    let handle = s.next_handle;
    s.next_handle = s
        .next_handle
        .checked_add(1)
        .ok_or_else(|| SqlError::unsupported("more prepared statement handles"))?;
    s.prepared.insert(
        handle,
        Prepared {
            params,
            sql: sql.to_string(),
        },
    );
    Ok(handle)
}

/// Drops a prepared statement handle.
pub(crate) fn unprepare(s: &mut Session, handle: i32) -> Result<(), SqlError> {
    s.prepared.remove(&handle).map(|_| ()).ok_or_else(|| {
        SqlError::new(
            8179,
            format!("Could not find prepared statement with handle {handle}."),
        )
    })
}

fn execute_handle(
    ex: &mut Exec<'_, '_>,
    s: &mut Session,
    handle: i32,
    args: Vec<Arg>,
    first_ordinal: u16,
) -> Result<(), SqlError> {
    let prepared = s.prepared.get(&handle).cloned().ok_or_else(|| {
        SqlError::new(
            8179,
            format!("Could not find prepared statement with handle {handle}."),
        )
    })?;
    let params: Vec<ParamDecl> = prepared
        .params
        .into_iter()
        .map(|(name, ty)| ParamDecl {
            name,
            ty,
            output: false,
            default: None,
        })
        .collect();
    run_with_params(ex, s, &prepared.sql, &params, args, first_ordinal, false)
}

/// Binds arguments to declared parameters as variables of a nested batch.
fn bind_params(
    s: &mut Session,
    proc_name: &str,
    params: &[ParamDecl],
    args: &[Arg],
    ex: &mut Exec<'_, '_>,
) -> Result<HashMap<String, Variable>, SqlError> {
    let positional = args.iter().filter(|a| a.name.is_empty()).count();
    if args.len() > params.len() {
        return Err(SqlError::new(
            8144,
            format!("Procedure or function {proc_name} has too many arguments specified."),
        ));
    }
    let outer = std::mem::take(&mut s.vars);
    let mut staged = HashMap::new();
    for p in params {
        staged.insert(
            p.name.to_ascii_lowercase(),
            Variable {
                ty: p.ty,
                value: Value::Null,
            },
        );
    }
    s.vars = staged;
    let result = (|| {
        for (i, p) in params.iter().enumerate() {
            let arg = args
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case(&p.name))
                .or_else(|| if i < positional { args.get(i) } else { None });
            let value = match (arg, &p.default) {
                (Some(a), _) => expression_form(&a.value, &a.ty),
                (None, Some(d)) => default_value(ex, s, d)?,
                (None, None) => {
                    return Err(SqlError::new(201, format!("Procedure or function '{proc_name}' expects parameter '{}', which was not supplied.", p.name)));
                }
            };
            assign(s, &p.name, ValueRef::from(&value))?;
        }
        Ok(())
    })();
    let vars = std::mem::replace(&mut s.vars, outer);
    result.map(|_| vars)
}

fn default_value(
    ex: &mut Exec<'_, '_>,
    s: &mut Session,
    text: &str,
) -> Result<rusqlite::types::Value, SqlError> {
    let e = sqlparser::parser::Parser::new(&sqlparser::dialect::MsSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|_| SqlError::syntax(text))?;
    let (v, ty) = ex.eval(s, &e)?;
    Ok(expression_form(&v, &ty))
}

fn run_with_params(
    ex: &mut Exec<'_, '_>,
    s: &mut Session,
    sql: &str,
    params: &[ParamDecl],
    args: Vec<Arg>,
    first_ordinal: u16,
    in_proc: bool,
) -> Result<(), SqlError> {
    let vars = bind_params(s, "sp_executesql", params, &args, ex)?;
    let (status, inner) = ex.nested(s, sql, vars, in_proc);
    outputs(ex, s, params, &args, &inner, first_ordinal)?;
    finish(ex, s, status.unwrap_or(0));
    Ok(())
}

fn outputs(
    ex: &mut Exec<'_, '_>,
    s: &mut Session,
    params: &[ParamDecl],
    args: &[Arg],
    inner: &HashMap<String, Variable>,
    first_ordinal: u16,
) -> Result<(), SqlError> {
    for (i, p) in params.iter().enumerate() {
        let Some(var) = inner.get(&p.name.to_ascii_lowercase()) else {
            continue;
        };
        let arg = args
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(&p.name))
            .or_else(|| args.get(i).filter(|a| a.name.is_empty()));
        let Some(arg) = arg else {
            continue;
        };
        if let Some(target) = &arg.target {
            if p.output {
                let v = expression_form(&var.value, &var.ty);
                assign(s, target, ValueRef::from(&v))?;
            }
        } else if p.output {
            let ordinal = first_ordinal + u16::try_from(i).unwrap_or(u16::MAX - first_ordinal);
            ex.sink.return_value(ReturnValue {
                name: p.name.clone(),
                ordinal,
                ty: p.ty,
                value: var.value.clone(),
            });
        }
    }
    Ok(())
}

fn user_procedure(
    ex: &mut Exec<'_, '_>,
    s: &mut Session,
    name: &str,
    args: Vec<Arg>,
) -> Result<(), SqlError> {
    let Some(text) = catalog::procedure(&s.conn, name)? else {
        return Err(SqlError::new(
            2812,
            format!("Could not find stored procedure '{name}'."),
        ));
    };
    let def = ProcDef::parse(&text)?;
    let vars = bind_params(s, name, &def.params, &args, ex)?;
    let (status, inner) = ex.nested(s, &def.body, vars, true);
    outputs(ex, s, &def.params, &args, &inner, 0)?;
    finish(ex, s, status.unwrap_or(0));
    Ok(())
}

/// ODBC SQL data type codes (sqlext.h / sqlncli.h) for sp_datatype_info.
fn odbc_type(ty: &SqlType) -> i64 {
    match ty {
        SqlType::Bit => -7,
        SqlType::TinyInt => -6,
        SqlType::BigInt => -5,
        SqlType::VarBinary(_) => -3,
        SqlType::Binary(_) => -2,
        SqlType::Char(_) => 1,
        SqlType::Numeric { .. } => 2,
        SqlType::Decimal { .. } | SqlType::Money | SqlType::SmallMoney => 3,
        SqlType::Int => 4,
        SqlType::SmallInt => 5,
        SqlType::Float { .. } => 6,
        SqlType::Real => 7,
        SqlType::VarChar(_) => 12,
        SqlType::Date => 91,
        SqlType::DateTime | SqlType::SmallDateTime | SqlType::DateTime2(_) => 93,
        SqlType::NChar(_) => -8,
        SqlType::NVarChar(_) => -9,
        SqlType::UniqueIdentifier => -11,
        SqlType::Time(_) => -154,
        SqlType::DateTimeOffset(_) => -155,
    }
}

fn datatype_columns() -> Vec<ColumnDesc> {
    let small = SqlType::SmallInt;
    let name = SqlType::NVarChar(Len::N(128));
    let lit = SqlType::VarChar(Len::N(32));
    [
        ("TYPE_NAME", name, false),
        ("DATA_TYPE", small, false),
        ("PRECISION", SqlType::Int, true),
        ("LITERAL_PREFIX", lit, true),
        ("LITERAL_SUFFIX", lit, true),
        ("CREATE_PARAMS", lit, true),
        ("NULLABLE", small, false),
        ("CASE_SENSITIVE", small, false),
        ("SEARCHABLE", small, false),
        ("UNSIGNED_ATTRIBUTE", small, true),
        ("MONEY", small, false),
        ("AUTO_INCREMENT", small, true),
        ("LOCAL_TYPE_NAME", name, true),
        ("MINIMUM_SCALE", small, true),
        ("MAXIMUM_SCALE", small, true),
        ("SQL_DATA_TYPE", small, false),
        ("SQL_DATETIME_SUB", small, true),
        ("NUM_PREC_RADIX", SqlType::Int, true),
        ("INTERVAL_PRECISION", small, true),
        ("USERTYPE", small, true),
    ]
    .into_iter()
    .map(|(n, t, nullable)| ColumnDesc::computed(n, t, nullable))
    .collect()
}

fn datatype_row(ty: &SqlType) -> Vec<Value> {
    let int = |n: i64| Value::Int(n);
    let text = |s: &str| Value::String(s.into());
    let quoted = ty.is_character()
        || matches!(
            ty,
            SqlType::Date
                | SqlType::Time(_)
                | SqlType::DateTime
                | SqlType::SmallDateTime
                | SqlType::DateTime2(_)
                | SqlType::DateTimeOffset(_)
                | SqlType::UniqueIdentifier
        );
    let prefix = if matches!(ty, SqlType::NChar(_) | SqlType::NVarChar(_)) {
        Some("N'")
    } else if quoted {
        Some("'")
    } else if matches!(ty, SqlType::Binary(_) | SqlType::VarBinary(_)) {
        Some("0x")
    } else {
        None
    };
    let precision = ty
        .length_limit()
        .map(i64::from)
        .unwrap_or_else(|| i64::from(ty.precision()));
    let create = match ty {
        SqlType::Decimal { .. } | SqlType::Numeric { .. } => Some("precision,scale"),
        SqlType::Char(_)
        | SqlType::VarChar(_)
        | SqlType::NChar(_)
        | SqlType::NVarChar(_)
        | SqlType::Binary(_)
        | SqlType::VarBinary(_) => Some("max length"),
        SqlType::Time(_) | SqlType::DateTime2(_) | SqlType::DateTimeOffset(_) => Some("scale"),
        _ => None,
    };
    let numeric = matches!(
        ty.storage(),
        crate::sandbox::engine::types::Storage::Integer
            | crate::sandbox::engine::types::Storage::Scaled(_)
            | crate::sandbox::engine::types::Storage::Real
    ) && *ty != SqlType::Bit;
    let opt = |o: Option<&str>| o.map_or(Value::Null, text);
    let sql_data_type = match odbc_type(ty) {
        91 | 93 => 9,
        other => other,
    };
    vec![
        text(ty.type_name()),
        int(odbc_type(ty)),
        int(precision),
        opt(prefix),
        opt(prefix.map(|_| "'").filter(|_| quoted)),
        opt(create),
        int(1),
        int(0),
        int(if ty.is_character() { 3 } else { 2 }),
        if numeric { int(0) } else { Value::Null },
        int(i64::from(matches!(
            ty,
            SqlType::Money | SqlType::SmallMoney
        ))),
        if numeric { int(0) } else { Value::Null },
        text(ty.type_name()),
        if numeric || ty.scale() > 0 {
            int(0)
        } else {
            Value::Null
        },
        if numeric || ty.scale() > 0 {
            int(ty.scale().into())
        } else {
            Value::Null
        },
        int(sql_data_type),
        match ty {
            SqlType::Date => int(1),
            SqlType::DateTime | SqlType::SmallDateTime | SqlType::DateTime2(_) => int(3),
            _ => Value::Null,
        },
        if numeric { int(10) } else { Value::Null },
        Value::Null,
        int(0),
    ]
}

fn datatype_info(ex: &mut Exec<'_, '_>, s: &Session, filter: Option<i64>) {
    ex.sink.columns(&datatype_columns());
    let mut n = 0;
    for ty in catalog::builtin_types() {
        if filter.is_some_and(|f| f != 0 && f != odbc_type(&ty)) {
            continue;
        }
        ex.sink.row(&datatype_row(&ty));
        n += 1;
    }
    let done = s.done(Some(n), false);
    ex.sink.done(done);
}

/// TDS type byte a column of this type is sent with (MS-TDS 2.2.5.4: the nullable forms
/// INTN 0x26, BITN 0x68, FLTN 0x6D, MONEYN 0x6E, DATETIMN 0x6F; the others as named).
fn tds_type_id(ty: &SqlType) -> i64 {
    match ty {
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt => 0x26,
        SqlType::Bit => 0x68,
        SqlType::Float { .. } | SqlType::Real => 0x6D,
        SqlType::Money | SqlType::SmallMoney => 0x6E,
        SqlType::DateTime | SqlType::SmallDateTime => 0x6F,
        other => catalog::system_type_id(other),
    }
}

fn sysname() -> SqlType {
    SqlType::NVarChar(Len::N(128))
}

fn type_columns(prefix: &str) -> Vec<ColumnDesc> {
    let c = |n: &str, t: SqlType| ColumnDesc::computed(format!("{prefix}{n}"), t, true);
    vec![
        c("system_type_id", SqlType::Int),
        c("system_type_name", SqlType::NVarChar(Len::N(256))),
        c("max_length", SqlType::SmallInt),
        c("precision", SqlType::TinyInt),
        c("scale", SqlType::TinyInt),
    ]
}

fn type_values(ty: &SqlType) -> Vec<Value> {
    vec![
        Value::Int(catalog::system_type_id(ty)),
        Value::String(ty.to_string()),
        Value::Int(ty.max_length().into()),
        Value::Int(ty.precision().into()),
        Value::Int(ty.scale().into()),
    ]
}

/// The result set of sp_describe_first_result_set. Columns follow SQL Server's order; the
/// CLR, XML and source_* columns are NULL.
fn describe_first_result_set(ex: &mut Exec<'_, '_>, s: &Session, cols: &[ColumnDesc]) {
    let c = |n: &str, t: SqlType| ColumnDesc::computed(n, t, true);
    let mut desc = vec![
        c("is_hidden", SqlType::Bit),
        c("column_ordinal", SqlType::Int),
        c("name", sysname()),
        c("is_nullable", SqlType::Bit),
    ];
    desc.extend(type_columns(""));
    desc.push(c("collation_name", sysname()));
    desc.push(c("user_type_id", SqlType::Int));
    for n in ["user_type_database", "user_type_schema", "user_type_name"] {
        desc.push(c(n, sysname()));
    }
    desc.push(c(
        "assembly_qualified_type_name",
        SqlType::NVarChar(Len::N(4000)),
    ));
    desc.push(c("xml_collection_id", SqlType::Int));
    for n in [
        "xml_collection_database",
        "xml_collection_schema",
        "xml_collection_name",
    ] {
        desc.push(c(n, sysname()));
    }
    for n in [
        "is_xml_document",
        "is_case_sensitive",
        "is_fixed_length_clr_type",
    ] {
        desc.push(c(n, SqlType::Bit));
    }
    for n in [
        "source_server",
        "source_database",
        "source_schema",
        "source_table",
        "source_column",
    ] {
        desc.push(c(n, sysname()));
    }
    for n in [
        "is_identity_column",
        "is_part_of_unique_key",
        "is_updateable",
        "is_computed_column",
        "is_sparse_column_set",
    ] {
        desc.push(c(n, SqlType::Bit));
    }
    for n in [
        "ordinal_in_order_by_list",
        "order_by_list_length",
        "order_by_is_descending",
    ] {
        desc.push(c(n, SqlType::SmallInt));
    }
    for n in ["tds_type_id", "tds_length", "tds_collation_id"] {
        desc.push(c(n, SqlType::Int));
    }
    desc.push(c("tds_collation_sort_id", SqlType::TinyInt));
    ex.sink.columns(&desc);
    for (i, col) in cols.iter().enumerate() {
        let mut row = vec![
            Value::Bool(false),
            Value::Int(i as i64 + 1),
            Value::String(col.name.clone()),
            Value::Bool(col.nullable),
        ];
        row.extend(type_values(&col.ty));
        row.push(
            col.collation
                .map_or(Value::Null, |c| Value::String(c.into())),
        );
        row.push(Value::Null);
        row.extend(std::iter::repeat_n(Value::Null, 3 + 1 + 1 + 3));
        row.extend([Value::Bool(false), Value::Bool(false), Value::Bool(false)]);
        row.extend(std::iter::repeat_n(Value::Null, 3));
        row.push(col.table.clone().map_or(Value::Null, Value::String));
        row.push(
            col.table
                .as_ref()
                .map_or(Value::Null, |_| Value::String(col.name.clone())),
        );
        row.extend([
            Value::Bool(col.identity),
            Value::Null,
            Value::Bool(col.table.is_some()),
            Value::Bool(false),
            Value::Bool(false),
        ]);
        row.extend(std::iter::repeat_n(Value::Null, 3));
        row.push(Value::Int(tds_type_id(&col.ty)));
        row.push(Value::Int(col.ty.max_length().into()));
        // TODO(tdsguard): collation id and sort id of SQL_Latin1_General_CP1_CI_AS.
        row.extend([Value::Null, Value::Null]);
        ex.sink.row(&row);
    }
    let done = s.done(Some(cols.len() as u64), false);
    ex.sink.done(done);
}

/// The result set of sp_describe_undeclared_parameters.
fn describe_undeclared(ex: &mut Exec<'_, '_>, s: &Session, params: &[(String, SqlType)]) {
    let c = |n: &str, t: SqlType| ColumnDesc::computed(n, t, true);
    let mut desc = vec![c("parameter_ordinal", SqlType::Int), c("name", sysname())];
    desc.extend(type_columns("suggested_"));
    desc.push(c("suggested_user_type_id", SqlType::Int));
    for n in [
        "suggested_user_type_database",
        "suggested_user_type_schema",
        "suggested_user_type_name",
    ] {
        desc.push(c(n, sysname()));
    }
    desc.push(c(
        "suggested_assembly_qualified_type_name",
        SqlType::NVarChar(Len::N(4000)),
    ));
    desc.push(c("suggested_xml_collection_id", SqlType::Int));
    for n in [
        "suggested_xml_collection_database",
        "suggested_xml_collection_schema",
        "suggested_xml_collection_name",
    ] {
        desc.push(c(n, sysname()));
    }
    for n in [
        "suggested_is_xml_document",
        "suggested_is_case_sensitive",
        "suggested_is_fixed_length_clr_type",
        "suggested_is_input",
        "suggested_is_output",
    ] {
        desc.push(c(n, SqlType::Bit));
    }
    desc.push(c("formal_parameter_name", sysname()));
    desc.push(c("suggested_tds_type_id", SqlType::Int));
    desc.push(c("suggested_tds_length", SqlType::Int));
    ex.sink.columns(&desc);
    for (i, (name, ty)) in params.iter().enumerate() {
        let mut row = vec![Value::Int(i as i64 + 1), Value::String(name.clone())];
        row.extend(type_values(ty));
        row.push(Value::Int(catalog::system_type_id(ty)));
        row.extend(std::iter::repeat_n(Value::Null, 3 + 1 + 1 + 3));
        row.extend([
            Value::Bool(false),
            Value::Bool(false),
            Value::Bool(false),
            Value::Bool(true),
            Value::Bool(false),
        ]);
        row.push(Value::Null);
        row.push(Value::Int(tds_type_id(ty)));
        row.push(Value::Int(ty.max_length().into()));
        ex.sink.row(&row);
    }
    let done = s.done(Some(params.len() as u64), false);
    ex.sink.done(done);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_procedure_text() {
        let t = "CREATE PROCEDURE dbo.[add_one] @a int, @b int = 3 OUTPUT AS BEGIN SET @b = @a + 1; RETURN 7 END";
        let p = create_procedure_text(t).unwrap();
        assert_eq!(p.name, "add_one");
        let def = ProcDef::parse(&p.text).unwrap();
        assert_eq!(def.params.len(), 2);
        assert!(def.params[1].output);
        assert_eq!(def.params[1].default.as_deref(), Some("3"));
        assert_eq!(def.body.trim(), "SET @b = @a + 1; RETURN 7");
    }

    #[test]
    fn as_inside_brackets_is_skipped() {
        assert_eq!(find_as("(@a int) [as] AS SELECT 1"), Some(14));
    }

    #[test]
    fn datatype_rows_match_columns() {
        for ty in catalog::builtin_types() {
            assert_eq!(datatype_row(&ty).len(), datatype_columns().len());
        }
    }
}
