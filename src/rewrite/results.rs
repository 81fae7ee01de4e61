//! Result rewriting ([MS-TDS] 2.2.7.4 COLMETADATA, 2.2.7.15 NBCROW, 2.2.7.17
//! ROW, 2.2.7.19 RETURNVALUE): columns that come from mapped columns get
//! their plaintext TYPE_INFO back, their values are opened and re-encoded
//! in the plaintext type; NULL stays NULL. A value that does not open
//! follows the column's `on_decrypt_error`: "error" replaces the row with an
//! ERROR token (the rest of that result set is dropped and the next DONE
//! carries the error bit), "null" sends NULL and logs a warning without the
//! value.
//!
//! The answers of sp_describe_first_result_set and
//! sp_describe_undeclared_parameters are rewritten to show plaintext types.
//!
//! Result sets are matched with the statements' plans in order. When the
//! column count differs from the plan (a result set the analysis did not
//! foresee), columns are matched by name with the plan's mapped columns;
//! only varbinary columns are ever opened.
//!
//! TODO(tdsguard): result sets of procedures and of control-of-flow the
//! analysis does not see shift the plan queue; name matching then covers
//! only columns whose names equal the mapped column names.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::config::OnDecryptError;
use crate::rewrite::analysis::{Analysis, OutputColumn, ResultPlan};
use crate::rewrite::column_map::{canonical_ident, param_key, MappedColumn, PlainType, StringKind};
use crate::rewrite::convert::from_plain_bytes;
use crate::rewrite::error::{Refusal, RefusalKind, RewriteError};
use crate::rewrite::{params, Prepared, Session};
use crate::tds::token::EnvChange;
use crate::tds::token::{
    ColMetadata, ColumnData, Done, DoneKind, DoneStatus, PlpLength, RawValue, ReturnValue, Row,
    RowKind, Token, TokenContext, TypeInfoRaw,
};
use crate::tds::types::{encode_value, Collation, SqlValue, TypeInfo, VarLenType};
use crate::tds::Reader;

/// ENVCHANGE type: database (2.2.7.9).
const ENV_DATABASE: u8 = 0x01;
/// ENVCHANGE type: SQL collation.
const ENV_SQL_COLLATION: u8 = 0x07;
/// ENVCHANGE type: RESETCONNECTION / RESETCONNECTIONSKIPTRAN acknowledgement.
const ENV_RESET_ACK: u8 = 0x12;

/// What to send for one server token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAction {
    /// The token's bytes as they came.
    Forward,
    /// These bytes instead (possibly none: the token is dropped).
    Replace(Vec<u8>),
}

/// Which describe procedure is being answered.
#[derive(Debug, Clone)]
enum Describe {
    FirstResultSet(ResultPlan),
    Parameters(Arc<Analysis>),
}

/// The current result set.
#[derive(Debug, Clone)]
struct Current {
    /// The mapped column of each result column that is opened.
    columns: Vec<Option<Arc<MappedColumn>>>,
    /// The metadata sent to the client.
    meta: Arc<ColMetadata>,
    /// Describe rows: column indexes of the fields to rewrite.
    describe: Option<DescribeColumns>,
    failed: bool,
}

#[derive(Debug, Clone, Default)]
struct DescribeColumns {
    key: Option<usize>,
    fields: Vec<(usize, Field)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    TypeName,
    MaxLength,
    Precision,
    Scale,
    TypeId,
    UserTypeId,
}

/// What the response to the last request needs.
#[derive(Debug, Default)]
pub(crate) struct ResponseState {
    plans: VecDeque<ResultPlan>,
    active: bool,
    current: Option<Current>,
    prepare: Option<Prepared>,
    return_values: HashMap<String, Arc<MappedColumn>>,
    describe: Option<Describe>,
    failed: bool,
}

impl ResponseState {
    pub(crate) fn expect(&mut self, a: &Analysis) {
        self.active |= a.results.iter().any(ResultPlan::has_mapped);
        self.plans.extend(a.results.iter().cloned());
    }

    pub(crate) fn learn_handle(&mut self, p: Prepared) {
        self.prepare = Some(p);
        self.active = true;
    }

    pub(crate) fn decrypt_return_value(&mut self, name: &str, m: Arc<MappedColumn>) {
        self.return_values.insert(name.to_string(), m);
        self.active = true;
    }

    pub(crate) fn describe(&mut self, a: &Arc<Analysis>, first_result_set: bool) {
        if !a.touches_mapped {
            return;
        }
        self.describe = Some(match first_result_set {
            true => Describe::FirstResultSet(a.results.first().cloned().unwrap_or_default()),
            false => Describe::Parameters(Arc::clone(a)),
        });
        self.active = true;
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    /// Whether the planned response opens values (needs the data key).
    pub(crate) fn needs_key(&self) -> bool {
        self.plans.iter().any(ResultPlan::has_mapped) || !self.return_values.is_empty()
    }

    pub(crate) fn wants_rows(&self) -> bool {
        self.current.as_ref().is_some_and(|c| !c.failed)
    }
}

/// One token of the response.
pub(crate) fn handle_token(
    s: &mut Session,
    token: &Token,
    ctx: &TokenContext,
) -> Result<TokenAction, RewriteError> {
    if let Token::EnvChange(change) = token {
        observe_env_change(s, change);
    }
    if !s.pending.active {
        return Ok(TokenAction::Forward);
    }
    match token {
        Token::ColMetadata(meta) if !meta.is_no_metadata() => col_metadata(s, meta, ctx),
        Token::Row(row) => self::row(s, row),
        Token::ReturnValue(rv) => return_value(s, rv, ctx),
        Token::Done(done) => done_token(s, done, ctx),
        _ => Ok(TokenAction::Forward),
    }
}

/// ENVCHANGE types 1 (database), 7 (SQL collation) and 18 (reset
/// acknowledged), [MS-TDS] 2.2.7.9.
pub(crate) fn observe_env_change(s: &mut Session, change: &EnvChange) {
    match change {
        EnvChange::Text {
            env_type: ENV_DATABASE,
            new,
            ..
        } => s.set_database(&new.to_string_lossy()),
        EnvChange::Bytes {
            env_type: ENV_SQL_COLLATION,
            new,
            ..
        } if new.len() == 5 => {
            let info = u32::from_le_bytes([new[0], new[1], new[2], new[3]]);
            s.set_collation(Collation {
                info,
                sort_id: new[4],
            });
        }
        // The reset's own response keeps its plan; only handles go.
        EnvChange::Bytes {
            env_type: ENV_RESET_ACK,
            ..
        } => s.prepared.clear(),
        _ => {}
    }
}

fn encode_token(token: &Token, ctx: &TokenContext) -> Result<Vec<u8>, RewriteError> {
    let mut out = Vec::new();
    token
        .encode(ctx, &mut out)
        .map_err(RewriteError::encode("rewritten token"))?;
    Ok(out)
}

fn done_token(
    s: &mut Session,
    done: &Done,
    ctx: &TokenContext,
) -> Result<TokenAction, RewriteError> {
    let ends = matches!(done.kind, DoneKind::Done | DoneKind::DoneProc)
        && !done.status.has(DoneStatus::MORE);
    let failed = std::mem::take(&mut s.pending.failed);
    if ends {
        s.pending = ResponseState::default();
    }
    if !failed {
        return Ok(TokenAction::Forward);
    }
    let mut marked = *done;
    marked.status = DoneStatus(done.status.0 | DoneStatus::ERROR);
    encode_token(&Token::Done(marked), ctx).map(TokenAction::Replace)
}

fn is_varbinary(c: &ColumnData) -> bool {
    matches!(
        c.type_info.typed(),
        TypeInfo::VarLen {
            ty: VarLenType::BigVarBinary,
            ..
        }
    )
}

/// Which result column is which mapped column.
fn match_columns(meta: &ColMetadata, plan: Option<&ResultPlan>) -> Vec<Option<Arc<MappedColumn>>> {
    let n = meta.columns.len();
    let Some(plan) = plan.filter(|p| p.has_mapped()) else {
        return vec![None; n];
    };
    let positional = plan.columns.len() == n
        && !plan
            .columns
            .iter()
            .any(|c| matches!(c, OutputColumn::Star(_)));
    let by_name: Vec<Arc<MappedColumn>> = plan
        .columns
        .iter()
        .flat_map(|c| match c {
            OutputColumn::Mapped(m) => vec![Arc::clone(m)],
            OutputColumn::Star(ms) => ms.clone(),
            OutputColumn::Plain => Vec::new(),
        })
        .collect();
    meta.columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let m = match (positional, plan.columns.get(i)) {
                (true, Some(OutputColumn::Mapped(m))) => Some(Arc::clone(m)),
                (true, _) => None,
                (false, _) => {
                    let name = canonical_ident(&c.name.to_string_lossy());
                    by_name.iter().find(|m| m.column == name).cloned()
                }
            };
            m.filter(|_| is_varbinary(c))
        })
        .collect()
}

fn col_metadata(
    s: &mut Session,
    meta: &Arc<ColMetadata>,
    ctx: &TokenContext,
) -> Result<TokenAction, RewriteError> {
    if let Some(describe) = s.pending.describe.clone() {
        s.pending.current = Some(Current {
            columns: vec![None; meta.columns.len()],
            meta: Arc::clone(meta),
            describe: Some(describe_columns(meta, &describe)),
            failed: false,
        });
        return Ok(TokenAction::Forward);
    }
    let plan = s.pending.plans.pop_front();
    let columns = match_columns(meta, plan.as_ref());
    if columns.iter().all(Option::is_none) {
        s.pending.current = None;
        return Ok(TokenAction::Forward);
    }
    let mut rewritten = (**meta).clone();
    for (c, m) in rewritten.columns.iter_mut().zip(&columns) {
        if let Some(m) = m {
            let ti = m.plain.type_info(s.collation);
            c.type_info =
                TypeInfoRaw::from_typed(ti).map_err(RewriteError::encode("plaintext TYPE_INFO"))?;
            c.user_type = 0;
        }
    }
    let rewritten = Arc::new(rewritten);
    let bytes = encode_token(&Token::ColMetadata(Arc::clone(&rewritten)), ctx)?;
    s.pending.current = Some(Current {
        columns,
        meta: rewritten,
        describe: None,
        failed: false,
    });
    Ok(TokenAction::Replace(bytes))
}

fn row(s: &mut Session, row: &Row) -> Result<TokenAction, RewriteError> {
    let Some(current) = s.pending.current.clone() else {
        return Ok(TokenAction::Forward);
    };
    if current.failed {
        return Ok(TokenAction::Replace(Vec::new()));
    }
    if let Some(d) = &current.describe {
        return describe_row(s, row, &current, d);
    }
    let mut values = row.values.clone();
    for (v, m) in values.iter_mut().zip(&current.columns) {
        let Some(m) = m else { continue };
        match open_value(s, m, v) {
            Ok(plain) => *v = plain,
            Err(refusal) => return fail_result(s, refusal),
        }
    }
    reencode_row(row.kind, values, &current.meta, "decrypted row")
}

/// The ERROR token of a failed decryption; the rest of the result set is
/// dropped.
fn fail_result(s: &mut Session, refusal: Refusal) -> Result<TokenAction, RewriteError> {
    if let Some(c) = s.pending.current.as_mut() {
        c.failed = true;
    }
    s.pending.failed = true;
    let mut out = Vec::new();
    Token::InfoError(refusal.error_token())
        .encode(&TokenContext::default(), &mut out)
        .map_err(RewriteError::encode("decrypt error"))?;
    Ok(TokenAction::Replace(out))
}

/// Opens one stored value into the plaintext framing.
fn open_value(s: &Session, m: &MappedColumn, v: &RawValue) -> Result<RawValue, Refusal> {
    let envelope = match v {
        RawValue::Null => return Ok(RawValue::Null),
        RawValue::Bytes(b) => b.as_slice(),
        RawValue::Plp { data, .. } => data.as_slice(),
        RawValue::Text { data, .. } => data.as_slice(),
    };
    let ti = m.plain.type_info(s.collation);
    let plain = s
        .open(m, envelope)
        .ok()
        .filter(|p| from_plain_bytes(&ti, p).is_some());
    match (plain, m.on_decrypt_error) {
        (Some(p), _) if ti.is_plp() => Ok(RawValue::Plp {
            length: PlpLength::Known(p.len() as u64),
            data: p,
            chunks: Vec::new(),
        }),
        (Some(p), _) => Ok(RawValue::Bytes(p)),
        (None, OnDecryptError::Null) => {
            tracing::warn!(column = %m.display_name(), "stored value did not decrypt; sent as NULL");
            Ok(RawValue::Null)
        }
        (None, OnDecryptError::Error) => Err(Refusal::new(
            RefusalKind::Decrypt,
            format!(
                "a stored value of {} did not decrypt (wrong key, column or tampering)",
                m.display_name()
            ),
        )),
    }
}

fn return_value(
    s: &mut Session,
    rv: &ReturnValue,
    ctx: &TokenContext,
) -> Result<TokenAction, RewriteError> {
    let name = param_key(&rv.name.to_string_lossy());
    if let Some(prepared) = s.pending.prepare.take() {
        if name == "@handle" || rv.ordinal == 0 {
            if let Some(h) = int_of(&rv.value) {
                params::remember(s, h, prepared);
            }
        } else {
            s.pending.prepare = Some(prepared);
        }
    }
    let Some(m) = s.pending.return_values.get(&name).cloned() else {
        return Ok(TokenAction::Forward);
    };
    if !matches!(
        rv.type_info.typed(),
        TypeInfo::VarLen {
            ty: VarLenType::BigVarBinary,
            ..
        }
    ) {
        return Ok(TokenAction::Forward);
    }
    let value = match open_value(s, &m, &rv.value) {
        Ok(v) => v,
        Err(r) => return fail_result(s, r),
    };
    let mut out = rv.clone();
    out.type_info = TypeInfoRaw::from_typed(m.plain.type_info(s.collation))
        .map_err(RewriteError::encode("RETURNVALUE type"))?;
    out.user_type = 0;
    out.value = value;
    encode_token(&Token::ReturnValue(Box::new(out)), ctx).map(TokenAction::Replace)
}

fn int_of(v: &RawValue) -> Option<i32> {
    match v {
        RawValue::Bytes(b) => match b.as_slice() {
            [a, b, c, d] => Some(i32::from_le_bytes([*a, *b, *c, *d])),
            _ => None,
        },
        _ => None,
    }
}

// ---- describe procedures ----

fn describe_columns(meta: &ColMetadata, describe: &Describe) -> DescribeColumns {
    let prefix = match describe {
        Describe::FirstResultSet(_) => "",
        Describe::Parameters(_) => "suggested_",
    };
    let key = match describe {
        Describe::FirstResultSet(_) => "column_ordinal",
        Describe::Parameters(_) => "name",
    };
    let mut d = DescribeColumns::default();
    for (i, c) in meta.columns.iter().enumerate() {
        let name = c.name.to_string_lossy().to_ascii_lowercase();
        if name == key {
            d.key = Some(i);
        }
        let field = match name.strip_prefix(prefix).unwrap_or("") {
            "system_type_name" => Field::TypeName,
            "max_length" => Field::MaxLength,
            "precision" => Field::Precision,
            "scale" => Field::Scale,
            "system_type_id" => Field::TypeId,
            "user_type_id" => Field::UserTypeId,
            _ => continue,
        };
        d.fields.push((i, field));
    }
    d
}

fn describe_row(
    s: &Session,
    row: &Row,
    current: &Current,
    d: &DescribeColumns,
) -> Result<TokenAction, RewriteError> {
    let Some(describe) = &s.pending.describe else {
        return Ok(TokenAction::Forward);
    };
    let key = d
        .key
        .and_then(|k| Some((k, row.values.get(k)?, current.meta.columns.get(k)?)));
    let Some((_, key_value, key_col)) = key else {
        return Ok(TokenAction::Forward);
    };
    let key = typed(key_col, key_value);
    let m = match (describe, key) {
        (Describe::FirstResultSet(plan), Some(SqlValue::Int(ordinal))) => usize::try_from(ordinal)
            .ok()
            .and_then(|o| plan.columns.get(o.checked_sub(1)?))
            .and_then(|c| match c {
                OutputColumn::Mapped(m) => Some(Arc::clone(m)),
                _ => None,
            }),
        (Describe::Parameters(a), Some(v)) => v
            .text()
            .and_then(|n| a.param_column(&n).map(|b| Arc::clone(&b.column))),
        _ => None,
    };
    let Some(m) = m else {
        return Ok(TokenAction::Forward);
    };
    let mut values = row.values.clone();
    for (i, field) in &d.fields {
        let (Some(v), Some(col)) = (values.get_mut(*i), current.meta.columns.get(*i)) else {
            continue;
        };
        if let Some(new) = field_value(&m.plain, *field, col) {
            *v = new;
        }
    }
    reencode_row(row.kind, values, &current.meta, "describe row")
}

/// A row of `kind` with `values` replaced, encoded for `meta` (a ROW's
/// values in full, an NBCROW's with its null bitmap rebuilt).
fn reencode_row(
    kind: RowKind,
    values: Vec<RawValue>,
    meta: &ColMetadata,
    what: &'static str,
) -> Result<TokenAction, RewriteError> {
    let new_row = match kind {
        RowKind::NbcRow => Row::nbc(values),
        RowKind::Row => Row {
            kind: RowKind::Row,
            null_bitmap: Vec::new(),
            values,
        },
    };
    let mut out = Vec::new();
    new_row
        .encode_with(meta, &mut out)
        .map_err(RewriteError::encode(what))?;
    Ok(TokenAction::Replace(out))
}

fn typed(col: &ColumnData, v: &RawValue) -> Option<SqlValue> {
    let mut wire = Vec::new();
    v.encode(col.type_info.framing(), &mut wire).ok()?;
    let mut r = Reader::new(&wire, "describe value");
    let raw = crate::tds::types::decode_value_raw(col.type_info.typed(), &mut r).ok()?;
    crate::tds::types::decode_value(col.type_info.typed(), &raw).ok()
}

/// The value a describe field takes for a plaintext type, in the field's
/// own column type.
fn field_value(plain: &PlainType, field: Field, col: &ColumnData) -> Option<RawValue> {
    let ti = col.type_info.typed();
    let v = match field {
        Field::TypeName => SqlValue::NVarChar(plain.canonical()),
        Field::MaxLength => int_for(ti, plain.max_plain_len().map_or(-1, |n| n as i64))?,
        Field::Precision => int_for(ti, i64::from(precision_scale(plain).0))?,
        Field::Scale => int_for(ti, i64::from(precision_scale(plain).1))?,
        Field::TypeId | Field::UserTypeId => int_for(ti, i64::from(system_type_id(plain)))?,
    };
    let mut wire = Vec::new();
    encode_value(ti, &v, &mut wire).ok()?;
    let mut r = Reader::new(&wire, "describe value");
    RawValue::decode(col.type_info.framing(), &mut r).ok()
}

fn int_for(ti: &TypeInfo, v: i64) -> Option<SqlValue> {
    let len = match ti {
        TypeInfo::Nullable { len, .. } => *len,
        _ => return None,
    };
    Some(match len {
        1 => SqlValue::TinyInt(u8::try_from(v).ok()?),
        2 => SqlValue::SmallInt(i16::try_from(v).ok()?),
        4 => SqlValue::Int(i32::try_from(v).ok()?),
        _ => SqlValue::BigInt(v),
    })
}

fn precision_scale(plain: &PlainType) -> (u8, u8) {
    match *plain {
        PlainType::Decimal { precision, scale } => (precision, scale),
        PlainType::TinyInt => (3, 0),
        PlainType::SmallInt => (5, 0),
        PlainType::Int => (10, 0),
        PlainType::BigInt => (19, 0),
        PlainType::Bit => (1, 0),
        PlainType::Money => (19, 4),
        PlainType::SmallMoney => (10, 4),
        PlainType::Real => (24, 0),
        PlainType::Float => (53, 0),
        PlainType::Date => (10, 0),
        PlainType::Time { scale } => (9 + scale.min(1) + scale, scale),
        PlainType::DateTime2 { scale } => (20 + scale.min(1) + scale, scale),
        PlainType::DateTimeOffset { scale } => (27 + scale.min(1) + scale, scale),
        PlainType::DateTime => (23, 3),
        PlainType::SmallDateTime => (16, 0),
        _ => (0, 0),
    }
}

/// `sys.types.system_type_id` of a plaintext type.
fn system_type_id(plain: &PlainType) -> u8 {
    match *plain {
        PlainType::String {
            kind: StringKind::Char,
            ..
        } => 175,
        PlainType::String {
            kind: StringKind::VarChar,
            ..
        } => 167,
        PlainType::String {
            kind: StringKind::NChar,
            ..
        } => 239,
        PlainType::String {
            kind: StringKind::NVarChar,
            ..
        } => 231,
        PlainType::Binary { fixed: true, .. } => 173,
        PlainType::Binary { fixed: false, .. } => 165,
        PlainType::TinyInt => 48,
        PlainType::SmallInt => 52,
        PlainType::Int => 56,
        PlainType::BigInt => 127,
        PlainType::Bit => 104,
        PlainType::Decimal { .. } => 106,
        PlainType::Money => 60,
        PlainType::SmallMoney => 122,
        PlainType::Real => 59,
        PlainType::Float => 62,
        PlainType::Date => 40,
        PlainType::Time { .. } => 41,
        PlainType::DateTime => 61,
        PlainType::SmallDateTime => 58,
        PlainType::DateTime2 { .. } => 42,
        PlainType::DateTimeOffset { .. } => 43,
        PlainType::UniqueIdentifier => 36,
    }
}
