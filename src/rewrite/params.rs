//! RPC rewriting ([MS-TDS] 2.2.6.6 "RPC Request"): the values of parameters
//! bound to mapped columns become envelopes, their TYPE_INFO becomes
//! `varbinary(n)`, and the `@params` declaration text follows, so the server
//! never converts the bytes back to a character type (TDS-NOTES §8).
//!
//! Positional conventions (T-SQL reference of each procedure):
//! - sp_executesql: `@stmt`, `@params`, values...
//! - sp_prepexec: `@handle` OUTPUT, `@params`, `@stmt`, values...
//! - sp_prepare: `@handle` OUTPUT, `@params`, `@stmt`, [`@options`]
//! - sp_execute: `@handle`, values... (types fixed at prepare time: the
//!   session remembers handle → declaration, learned from the RETURNVALUE)
//! - sp_unprepare: `@handle`
//!
//! Named stored procedures use `[[procedures]]`: parameters by name.

use std::sync::Arc;

use crate::rewrite::analysis::{Analysis, ValueSource};
use crate::rewrite::column_map::{param_key, MappedColumn};
use crate::rewrite::error::{Refusal, RefusalKind, RewriteError};
use crate::rewrite::literals::{self, TextKind};
use crate::rewrite::{Prepared, Session, MAX_PREPARED_PER_SESSION};
use crate::tds::rpc::{proc_id, ProcName, RpcCall, RpcParam, RpcRequest};
use crate::tds::types::value::decode_utf16;
use crate::tds::types::{LongType, SqlValue, TypeInfo, VarLenType};

/// Rewrites every call of a request; `None` when nothing changes.
pub fn rewrite_request(
    s: &mut Session,
    request: &RpcRequest,
) -> Result<Option<RpcRequest>, RewriteError> {
    let mut out = request.clone();
    let mut changed = false;
    for call in &mut out.calls {
        changed |= rewrite_call(s, call)?;
    }
    Ok(changed.then_some(out))
}

fn rewrite_call(s: &mut Session, call: &mut RpcCall) -> Result<bool, RewriteError> {
    match call.proc_name.well_known_id() {
        Some(proc_id::SP_EXECUTESQL) => statement_call(s, call, Layout::EXECUTESQL),
        Some(proc_id::SP_PREPEXEC) => statement_call(s, call, Layout::PREPEXEC),
        Some(proc_id::SP_PREPARE) => statement_call(s, call, Layout::PREPARE),
        Some(proc_id::SP_EXECUTE) => execute(s, call),
        Some(proc_id::SP_UNPREPARE) => unprepare(s, call),
        Some(_) => cursor_call(s, call),
        None => named_call(s, call),
    }
}

/// Where the parts of a statement-carrying procedure are.
#[derive(Clone, Copy)]
struct Layout {
    stmt: usize,
    params: usize,
    first_value: Option<usize>,
    prepares: bool,
}

impl Layout {
    const EXECUTESQL: Layout = Layout {
        stmt: 0,
        params: 1,
        first_value: Some(2),
        prepares: false,
    };
    const PREPEXEC: Layout = Layout {
        stmt: 2,
        params: 1,
        first_value: Some(3),
        prepares: true,
    };
    const PREPARE: Layout = Layout {
        stmt: 2,
        params: 1,
        first_value: None,
        prepares: true,
    };
}

fn refused(kind: RefusalKind, msg: impl Into<String>) -> RewriteError {
    RewriteError::Refused(Refusal::new(kind, msg))
}

/// The text of a character parameter (nvarchar, nchar, ntext, varchar).
pub fn param_text(p: &RpcParam) -> Result<Option<String>, RewriteError> {
    if let TypeInfo::Long {
        ty: LongType::NText,
        ..
    } = p.type_info
    {
        let raw = p
            .raw_value()
            .map_err(RewriteError::decode("ntext parameter"))?;
        return match raw.data() {
            Some(d) => decode_utf16(d)
                .map(Some)
                .map_err(RewriteError::decode("ntext parameter")),
            None => Ok(None),
        };
    }
    let v = p
        .value()
        .map_err(RewriteError::decode("statement parameter"))?;
    Ok(v.text())
}

/// A parameter's value as a typed value for conversion; text, ntext and
/// image values are read from their raw data.
fn param_value(p: &RpcParam) -> Result<SqlValue, RewriteError> {
    let raw = p
        .raw_value()
        .map_err(RewriteError::decode("parameter value"))?;
    let Some(data) = raw.data() else {
        return Ok(SqlValue::Null);
    };
    match &p.type_info {
        TypeInfo::Long {
            ty: LongType::NText,
            ..
        } => decode_utf16(data)
            .map(SqlValue::NVarChar)
            .map_err(RewriteError::decode("ntext parameter")),
        TypeInfo::Long {
            ty: LongType::Text,
            collation,
            ..
        } => Ok(SqlValue::VarChar {
            bytes: data.to_vec(),
            collation: *collation,
        }),
        TypeInfo::Long {
            ty: LongType::Image,
            ..
        } => Ok(SqlValue::VarBinary(data.to_vec())),
        ti => crate::tds::types::decode_value(ti, &raw)
            .map_err(RewriteError::decode("parameter value")),
    }
}

/// Replaces a text parameter's value, keeping its type when the text fits.
fn set_text(p: &mut RpcParam, text: &str) -> Result<(), RewriteError> {
    let bytes = text.encode_utf16().count() * 2;
    let ti = match &p.type_info {
        TypeInfo::VarLen {
            ty: VarLenType::NVarChar,
            max_len,
            collation,
        } if *max_len == 0xFFFF || bytes <= usize::from(*max_len) => TypeInfo::VarLen {
            ty: VarLenType::NVarChar,
            max_len: *max_len,
            collation: *collation,
        },
        other => TypeInfo::nvarchar(
            0xFFFF,
            other
                .collation()
                .unwrap_or(crate::rewrite::DEFAULT_COLLATION),
        ),
    };
    p.set_value(ti, &SqlValue::NVarChar(text.to_string()))
        .map_err(RewriteError::encode("@params declaration"))
}

/// One declared parameter of an `@params` text.
#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    /// Canonical name (`@p0`).
    pub name: String,
    /// Byte range of the type in the text.
    pub type_start: usize,
    pub type_end: usize,
    pub output: bool,
}

/// Splits `@P0 nvarchar(4000),@P1 decimal(10, 2) OUTPUT` into declarations.
pub fn parse_declarations(text: &str) -> Vec<Declaration> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ',')))
    {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                if let Some(d) = declaration(text, start, i) {
                    out.push(d);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

fn declaration(text: &str, start: usize, end: usize) -> Option<Declaration> {
    let piece = text.get(start..end)?;
    let lead = piece.len() - piece.trim_start().len();
    let body = piece.trim();
    let name_len = body.find(char::is_whitespace)?;
    let name = param_key(&body[..name_len]);
    let after = &body[name_len..];
    let type_start = start + lead + name_len + (after.len() - after.trim_start().len());
    let mut type_text = after.trim();
    let mut output = false;
    for kw in ["output", "out", "readonly"] {
        let lower = type_text.to_ascii_lowercase();
        if lower.ends_with(kw) && lower[..lower.len() - kw.len()].ends_with(char::is_whitespace) {
            output |= kw != "readonly";
            type_text = type_text[..type_text.len() - kw.len()].trim_end();
        }
    }
    Some(Declaration {
        name,
        type_start,
        type_end: type_start + type_text.len(),
        output,
    })
}

/// sp_executesql, sp_prepexec and sp_prepare.
fn statement_call(
    s: &mut Session,
    call: &mut RpcCall,
    layout: Layout,
) -> Result<bool, RewriteError> {
    let Some(stmt) = text_at(call, layout.stmt)? else {
        return Ok(false);
    };
    let decl_text = text_at(call, layout.params)?.unwrap_or_default();
    let analysis = s.rewriter.analyze(&s.database, &stmt);
    if let Some(r) = &analysis.refusal {
        return Err(RewriteError::Refused(r.clone()));
    }
    let decls = parse_declarations(&decl_text);
    check_declared(&analysis, &decls)?;
    let columns: Vec<Option<Arc<MappedColumn>>> = decls
        .iter()
        .map(|d| {
            analysis
                .param_column(&d.name)
                .map(|b| Arc::clone(&b.column))
        })
        .collect();

    s.pending.expect(&analysis);
    if layout.prepares {
        s.pending.learn_handle(Prepared {
            names: decls.iter().map(|d| d.name.clone()).collect(),
            columns: columns.clone(),
            analysis: Arc::clone(&analysis),
        });
    }

    let new_stmt = literals::rewrite_text(s, &stmt, &analysis, TextKind::RpcStatement)?;
    if let (Some(text), Some(p)) = (&new_stmt, call.params.get_mut(layout.stmt)) {
        set_text(p, text)?;
    }
    if columns.iter().all(Option::is_none) {
        return Ok(new_stmt.is_some());
    }
    seal_declared(s, call, layout, &decl_text, &decls, &columns)?;
    Ok(true)
}

fn text_at(call: &RpcCall, index: usize) -> Result<Option<String>, RewriteError> {
    Ok(call
        .params
        .get(index)
        .map(param_text)
        .transpose()?
        .flatten())
}

/// Rewrites the declaration text and seals the values it declares.
fn seal_declared(
    s: &Session,
    call: &mut RpcCall,
    layout: Layout,
    decl_text: &str,
    decls: &[Declaration],
    columns: &[Option<Arc<MappedColumn>>],
) -> Result<(), RewriteError> {
    let new_decl = rewrite_declarations(s, decl_text, decls, columns)?;
    if let Some(p) = call.params.get_mut(layout.params) {
        set_text(p, &new_decl)?;
    }
    match layout.first_value {
        Some(first) => seal_values(s, call, first, decls, columns),
        None => Ok(()),
    }
}

/// Every parameter bound to a mapped column must be declared in `@params`:
/// a local variable of the statement would carry the value unsealed.
fn check_declared(analysis: &Analysis, decls: &[Declaration]) -> Result<(), RewriteError> {
    for b in &analysis.bindings {
        let ValueSource::Param(p) = &b.source else {
            continue;
        };
        if !decls.iter().any(|d| d.name == *p) {
            return Err(refused(
                RefusalKind::Unsupported,
                format!(
                    "{p} is not a declared parameter; a value for {} must be a parameter or a literal",
                    b.column.display_name()
                ),
            ));
        }
    }
    Ok(())
}

fn rewrite_declarations(
    s: &Session,
    text: &str,
    decls: &[Declaration],
    columns: &[Option<Arc<MappedColumn>>],
) -> Result<String, RewriteError> {
    let mut out = String::with_capacity(text.len() + 32);
    let mut at = 0;
    for (d, m) in decls.iter().zip(columns) {
        let Some(m) = m else { continue };
        if d.output {
            return Err(refused(
                RefusalKind::Unsupported,
                format!(
                    "OUTPUT parameter {} bound to {} is not supported",
                    d.name,
                    m.display_name()
                ),
            ));
        }
        out.push_str(text.get(at..d.type_start).unwrap_or_default());
        out.push_str(&s.storage_declaration(m));
        at = d.type_end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    Ok(out)
}

/// Seals the values that follow the fixed parameters, matched with the
/// declarations by name when the call names them, else by position.
fn seal_values(
    s: &Session,
    call: &mut RpcCall,
    first: usize,
    decls: &[Declaration],
    columns: &[Option<Arc<MappedColumn>>],
) -> Result<(), RewriteError> {
    let values = call.params.get_mut(first..).unwrap_or_default();
    for (pos, p) in values.iter_mut().enumerate() {
        let index = match p.name.is_empty() {
            true => Some(pos),
            false => decls.iter().position(|d| d.name == param_key(&p.name)),
        };
        let Some(m) = index.and_then(|i| columns.get(i)).and_then(Option::as_ref) else {
            continue;
        };
        seal_param(s, p, m)?;
    }
    Ok(())
}

fn seal_param(s: &Session, p: &mut RpcParam, m: &MappedColumn) -> Result<(), RewriteError> {
    let value = param_value(p)?;
    if let SqlValue::Raw(_) = value {
        return Err(refused(
            RefusalKind::Conversion,
            format!(
                "a parameter of this type cannot be stored in {}",
                m.display_name()
            ),
        ));
    }
    let sealed = s.seal(m, &value)?;
    let v = sealed.map_or(SqlValue::Null, SqlValue::VarBinary);
    p.set_value(s.storage_type(m), &v)
        .map_err(RewriteError::encode("sealed parameter"))
}

/// sp_execute: values are matched with the remembered declaration.
fn execute(s: &mut Session, call: &mut RpcCall) -> Result<bool, RewriteError> {
    let handle = handle_of(call)?;
    let Some(prepared) = s.prepared.get(&handle).cloned() else {
        return Err(refused(
            RefusalKind::PreparedMismatch,
            "sp_execute names a handle this session did not prepare through the proxy",
        ));
    };
    let values = call.params.len().saturating_sub(1);
    if values > prepared.names.len() {
        return Err(refused(
            RefusalKind::PreparedMismatch,
            "sp_execute passes more parameters than were prepared",
        ));
    }
    for (pos, p) in call.params.iter().skip(1).enumerate() {
        if !p.name.is_empty() && prepared.names.get(pos) != Some(&param_key(&p.name)) {
            return Err(refused(
                RefusalKind::PreparedMismatch,
                "sp_execute parameter names differ from the declaration",
            ));
        }
    }
    s.pending.expect(&prepared.analysis);
    if prepared.columns.iter().all(Option::is_none) {
        return Ok(false);
    }
    for (pos, p) in call.params.iter_mut().skip(1).enumerate() {
        if let Some(Some(m)) = prepared.columns.get(pos) {
            seal_param(s, p, m)?;
        }
    }
    Ok(true)
}

fn handle_of(call: &RpcCall) -> Result<i32, RewriteError> {
    let v = call
        .params
        .first()
        .map(|p| p.value())
        .transpose()
        .map_err(RewriteError::decode("handle"))?;
    match v {
        Some(SqlValue::Int(h)) => Ok(h),
        Some(SqlValue::SmallInt(h)) => Ok(i32::from(h)),
        Some(SqlValue::TinyInt(h)) => Ok(i32::from(h)),
        _ => Err(refused(
            RefusalKind::PreparedMismatch,
            "the prepared handle is not an int",
        )),
    }
}

fn unprepare(s: &mut Session, call: &RpcCall) -> Result<bool, RewriteError> {
    if let Ok(h) = handle_of(call) {
        s.prepared.remove(&h);
    }
    Ok(false)
}

/// Remembers a handle learned from a RETURNVALUE.
pub(crate) fn remember(s: &mut Session, handle: i32, prepared: Prepared) {
    if s.prepared.len() >= MAX_PREPARED_PER_SESSION && !s.prepared.contains_key(&handle) {
        // Over the cap the handle stays unknown, so sp_execute on it is
        // refused rather than sent without encryption.
        tracing::warn!(
            cap = MAX_PREPARED_PER_SESSION,
            "prepared handle cap reached"
        );
        return;
    }
    s.prepared.insert(handle, prepared);
}

/// API cursor procedures: statements touching mapped columns are refused.
///
/// TODO(tdsguard): sp_cursor positioned UPDATE/INSERT carries column values
/// of the cursor's table; it passes through because a cursor over a mapped
/// table can only have been opened by a statement refused here.
fn cursor_call(s: &mut Session, call: &RpcCall) -> Result<bool, RewriteError> {
    for p in &call.params {
        let Ok(Some(text)) = param_text(p) else {
            continue;
        };
        if touches(s, &text) {
            return Err(refused(
                RefusalKind::Unsupported,
                "API server cursors over mapped columns are not supported; use a default result set",
            ));
        }
    }
    Ok(false)
}

fn touches(s: &Session, text: &str) -> bool {
    let a: Arc<Analysis> = s.rewriter.analyze(&s.database, text);
    a.touches_mapped
}

/// Stored procedures by name: `[[procedures]]`, and the describe procedures.
fn named_call(s: &mut Session, call: &mut RpcCall) -> Result<bool, RewriteError> {
    let ProcName::Name(name) = &call.proc_name else {
        return Ok(false);
    };
    let last = name
        .rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    if last == "sp_describe_first_result_set" || last == "sp_describe_undeclared_parameters" {
        return describe_call(s, call, last == "sp_describe_first_result_set");
    }
    let Some(mapped) = s.rewriter.map.procedure(name).cloned() else {
        return Ok(false);
    };
    let mut changed = false;
    for p in &mut call.params {
        if p.name.is_empty() {
            return Err(refused(
                RefusalKind::Unsupported,
                format!("{name} has encrypted parameters and must be called with named parameters"),
            ));
        }
        let Some(m) = mapped.get(&param_key(&p.name)) else {
            continue;
        };
        if p.is_output() {
            s.pending
                .decrypt_return_value(&param_key(&p.name), Arc::clone(m));
        }
        seal_param(s, p, m)?;
        changed = true;
    }
    Ok(changed)
}

fn describe_call(
    s: &mut Session,
    call: &RpcCall,
    first_result_set: bool,
) -> Result<bool, RewriteError> {
    let Some(text) = call.params.first().map(param_text).transpose()?.flatten() else {
        return Ok(false);
    };
    let analysis = s.rewriter.analyze(&s.database, &text);
    if let Some(r) = &analysis.refusal {
        return Err(RewriteError::Refused(r.clone()));
    }
    s.pending.describe(&analysis, first_result_set);
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_split_outside_parentheses() {
        let text = "@P0 nvarchar(4000),@P1 decimal(10, 2) OUTPUT, @name  char(11)";
        let d = parse_declarations(text);
        assert_eq!(d.len(), 3);
        assert_eq!(&text[d[0].type_start..d[0].type_end], "nvarchar(4000)");
        assert_eq!(&text[d[1].type_start..d[1].type_end], "decimal(10, 2)");
        assert!(d[1].output && !d[0].output);
        assert_eq!(d[2].name, "@name");
        assert_eq!(&text[d[2].type_start..d[2].type_end], "char(11)");
        assert!(parse_declarations("").is_empty());
    }
}
