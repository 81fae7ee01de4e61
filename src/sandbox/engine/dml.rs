//! INSERT, UPDATE, DELETE and CREATE TABLE translated to SQLite statements.
//!
//! Every value written to a column passes through `__tds_store`, which converts it to the
//! column's storage form and raises SQL Server's errors (2628 truncation, 245/8114
//! conversion, 8115 overflow). NOT NULL and key violations come from SQLite constraints and
//! are mapped to 515 and 2627. Identity values are computed from a bind slot holding the
//! table's next value, which the executor fills after taking the write lock.

use rusqlite::types::Value as SqliteValue;
use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, ColumnOption, CreateTable, Delete, Expr,
    FromTable, Ident, Insert, SetExpr, TableConstraint, TableFactor, TableObject, TableWithJoins,
    UnaryOperator, Value,
};

use crate::sandbox::engine::catalog::{ColumnInfo, TableInfo};
use crate::sandbox::engine::errors::SqlError;
use crate::sandbox::engine::functions::COLLATION;
use crate::sandbox::engine::translate::{name_parts, Translator};
use crate::sandbox::engine::types::{SqlType, Storage};

/// A translated data-modifying statement.
pub(crate) struct DmlPlan {
    pub sql: String,
    pub binds: Vec<SqliteValue>,
    pub table: TableInfo,
    /// `db.dbo.table`, as SQL Server names the table in messages.
    pub label: String,
    /// 1-based bind slot for the table's next identity value.
    pub identity_bind: Option<usize>,
}

/// A translated CREATE TABLE.
pub(crate) struct TablePlan {
    pub name: String,
    pub sql: String,
    pub columns: Vec<ColumnInfo>,
    pub identity: Option<(i64, i64)>,
}

/// Quotes an identifier for SQLite.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn store(expr_sql: &str, col: &ColumnInfo, label: &str) -> String {
    format!(
        "__tds_store({expr_sql}, {}, {}, {})",
        literal(&col.ty.to_string()),
        literal(label),
        literal(&col.name)
    )
}

fn user_table(
    tr: &mut Translator<'_>,
    name: &sqlparser::ast::ObjectName,
) -> Result<TableInfo, SqlError> {
    let table = tr.table(name)?;
    if table.object_id == 0 {
        return Err(SqlError::unsupported("modifying a catalog view"));
    }
    Ok(table)
}

struct InsertShape {
    explicit: Vec<ColumnInfo>,
    identity: Option<ColumnInfo>,
    defaults: Vec<ColumnInfo>,
}

fn insert_shape(
    table: &TableInfo,
    columns: &[sqlparser::ast::Ident],
    identity_insert: bool,
) -> Result<InsertShape, SqlError> {
    let explicit: Vec<ColumnInfo> = if columns.is_empty() {
        table
            .columns
            .iter()
            .filter(|c| !c.identity)
            .cloned()
            .collect()
    } else {
        let mut v = Vec::with_capacity(columns.len());
        for c in columns {
            v.push(
                table
                    .column(&c.value)
                    .cloned()
                    .ok_or_else(|| SqlError::invalid_column(&c.value))?,
            );
        }
        v
    };
    if explicit.iter().any(|c| c.identity) && !identity_insert {
        return Err(SqlError::new(
            544,
            format!("Cannot insert explicit value for identity column in table '{}' when IDENTITY_INSERT is set to OFF.", table.name),
        ));
    }
    // TODO(tdsguard): with IDENTITY_INSERT ON, explicit values above the next identity value
    // should move it forward as SQL Server does.
    let listed = |c: &ColumnInfo| {
        explicit
            .iter()
            .any(|e| e.name.eq_ignore_ascii_case(&c.name))
    };
    let identity = table.identity_column().filter(|c| !listed(c)).cloned();
    let defaults = table
        .columns
        .iter()
        .filter(|c| !c.identity && c.default_sql.is_some() && !listed(c))
        .cloned()
        .collect();
    Ok(InsertShape {
        explicit,
        identity,
        defaults,
    })
}

fn count_error(values: usize, columns: usize, select: bool) -> Option<SqlError> {
    let (more, fewer) = if select {
        (
            (121, "The select list for the INSERT statement contains more items than the insert list. The number of SELECT values must match the number of INSERT columns."),
            (120, "The select list for the INSERT statement contains fewer items than the insert list. The number of SELECT values must match the number of INSERT columns."),
        )
    } else {
        (
            (110, "There are fewer columns in the INSERT statement than values specified in the VALUES clause. The number of values in the VALUES clause must match the number of columns specified in the INSERT statement."),
            (109, "There are more columns in the INSERT statement than values specified in the VALUES clause. The number of values in the VALUES clause must match the number of columns specified in the INSERT statement."),
        )
    };
    match values.cmp(&columns) {
        std::cmp::Ordering::Greater => Some(SqlError::new(more.0, more.1)),
        std::cmp::Ordering::Less => Some(SqlError::new(fewer.0, fewer.1)),
        std::cmp::Ordering::Equal => None,
    }
}

/// Translates INSERT (VALUES, SELECT or DEFAULT VALUES).
pub(crate) fn insert(
    tr: &mut Translator<'_>,
    ins: &mut Insert,
    db: &str,
    identity_insert: Option<&str>,
) -> Result<DmlPlan, SqlError> {
    let TableObject::TableName(name) = &ins.table else {
        return Err(SqlError::unsupported("INSERT into a table function"));
    };
    if ins.returning.is_some() || ins.on.is_some() {
        return Err(SqlError::unsupported("this INSERT clause"));
    }
    let table = user_table(tr, name)?;
    let label = format!("{db}.dbo.{}", table.name);
    let ident_on = identity_insert.is_some_and(|t| t.eq_ignore_ascii_case(&table.name));
    let shape = insert_shape(&table, &ins.columns, ident_on)?;
    let mut names: Vec<String> = shape.explicit.iter().map(|c| quote(&c.name)).collect();
    let identity_bind = shape.identity.as_ref().map(|c| {
        names.push(quote(&c.name));
        tr.reserve_bind().0
    });
    names.extend(shape.defaults.iter().map(|c| quote(&c.name)));
    let incr = table.identity_increment.unwrap_or(1);
    let tail = |identity: Option<String>| -> Vec<String> {
        let mut v: Vec<String> = identity.into_iter().collect();
        v.extend(
            shape
                .defaults
                .iter()
                .map(|c| store(c.default_sql.as_deref().unwrap_or("NULL"), c, &label)),
        );
        v
    };
    let table_sql = quote(&table.sqlite_name);
    let sql = match ins.source.as_deref_mut() {
        None if names.is_empty() => format!("INSERT INTO {table_sql} DEFAULT VALUES"),
        None => {
            let values = tail(identity_bind.map(|k| format!("?{k}")));
            format!(
                "INSERT INTO {table_sql} ({}) VALUES ({})",
                names.join(", "),
                values.join(", ")
            )
        }
        Some(q) => {
            if let SetExpr::Values(values) = q.body.as_mut() {
                let mut rows = Vec::with_capacity(values.rows.len());
                for (i, row) in values.rows.iter_mut().enumerate() {
                    if let Some(err) = count_error(row.len(), shape.explicit.len(), false) {
                        return Err(err);
                    }
                    let mut items = Vec::with_capacity(names.len());
                    for (e, c) in row.iter_mut().zip(&shape.explicit) {
                        tr.note_target(e, c.ty);
                        tr.expr(e, false)?;
                        items.push(store(&e.to_string(), c, &label));
                    }
                    items.extend(tail(
                        identity_bind.map(|k| format!("(?{k} + {})", i as i64 * incr)),
                    ));
                    rows.push(format!("({})", items.join(", ")));
                }
                format!(
                    "INSERT INTO {table_sql} ({}) VALUES {}",
                    names.join(", "),
                    rows.join(", ")
                )
            } else {
                let cols = tr.query(q, false)?;
                if let Some(err) = count_error(cols.len(), shape.explicit.len(), true) {
                    return Err(err);
                }
                let src: Vec<String> = (1..=cols.len()).map(|i| format!("c{i}")).collect();
                let mut items: Vec<String> = src
                    .iter()
                    .zip(&shape.explicit)
                    .map(|(s, c)| store(s, c, &label))
                    .collect();
                items.extend(tail(
                    identity_bind.map(|k| format!("(?{k} + (row_number() OVER () - 1) * {incr})")),
                ));
                format!(
                    "WITH __src({}) AS ({q}) INSERT INTO {table_sql} ({}) SELECT {} FROM __src",
                    src.join(", "),
                    names.join(", "),
                    items.join(", ")
                )
            }
        }
    };
    Ok(DmlPlan {
        sql,
        binds: std::mem::take(&mut tr.binds),
        table,
        label,
        identity_bind,
    })
}

fn single_table(twj: &TableWithJoins) -> Result<&sqlparser::ast::ObjectName, SqlError> {
    match &twj.relation {
        TableFactor::Table {
            name, alias: None, ..
        } if twj.joins.is_empty() => Ok(name),
        _ => Err(SqlError::unsupported("UPDATE/DELETE with joins or aliases")),
    }
}

/// Translates UPDATE of one table.
pub(crate) fn update(
    tr: &mut Translator<'_>,
    target: &TableWithJoins,
    assignments: &mut [Assignment],
    has_from: bool,
    selection: Option<&mut sqlparser::ast::Expr>,
    db: &str,
) -> Result<DmlPlan, SqlError> {
    if has_from {
        return Err(SqlError::unsupported("UPDATE ... FROM"));
    }
    let table = user_table(tr, single_table(target)?)?;
    let label = format!("{db}.dbo.{}", table.name);
    tr.enter_table(table.clone());
    let mut sets = Vec::with_capacity(assignments.len());
    for a in assignments.iter_mut() {
        let AssignmentTarget::ColumnName(col_name) = &a.target else {
            return Err(SqlError::unsupported("tuple assignment"));
        };
        let col_name = name_parts(col_name).last().cloned().unwrap_or_default();
        let col = table
            .column(&col_name)
            .cloned()
            .ok_or_else(|| SqlError::invalid_column(&col_name))?;
        if col.identity {
            return Err(SqlError::new(
                8102,
                format!("Cannot update identity column '{}'.", col.name),
            ));
        }
        tr.note_target(&a.value, col.ty);
        tr.expr(&mut a.value, false)?;
        sets.push(format!(
            "{} = {}",
            quote(&col.name),
            store(&a.value.to_string(), &col, &label)
        ));
    }
    let mut sql = format!(
        "UPDATE {} SET {}",
        quote(&table.sqlite_name),
        sets.join(", ")
    );
    if let Some(e) = selection {
        tr.expr(e, false)?;
        sql.push_str(&format!(" WHERE {e}"));
    }
    Ok(DmlPlan {
        sql,
        binds: std::mem::take(&mut tr.binds),
        table,
        label,
        identity_bind: None,
    })
}

/// Translates DELETE from one table.
pub(crate) fn delete(
    tr: &mut Translator<'_>,
    del: &mut Delete,
    db: &str,
) -> Result<DmlPlan, SqlError> {
    let from = match &del.from {
        FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
    };
    let [target] = from.as_slice() else {
        return Err(SqlError::unsupported("DELETE from several tables"));
    };
    if !del.tables.is_empty() || del.using.is_some() || del.limit.is_some() {
        return Err(SqlError::unsupported("this DELETE form"));
    }
    let table = user_table(tr, single_table(target)?)?;
    let label = format!("{db}.dbo.{}", table.name);
    tr.enter_table(table.clone());
    let mut sql = format!("DELETE FROM {}", quote(&table.sqlite_name));
    if let Some(e) = del.selection.as_mut() {
        tr.expr(e, false)?;
        sql.push_str(&format!(" WHERE {e}"));
    }
    Ok(DmlPlan {
        sql,
        binds: std::mem::take(&mut tr.binds),
        table,
        label,
        identity_bind: None,
    })
}

fn identity_params(text: &str) -> Result<(i64, i64), SqlError> {
    let inner = text
        .split_once('(')
        .map(|(_, r)| r.trim_end().trim_end_matches(')'))
        .unwrap_or("");
    if inner.trim().is_empty() {
        return Ok((1, 1));
    }
    let mut it = inner.split(',').map(|s| s.trim().parse::<i64>());
    match (it.next(), it.next()) {
        (Some(Ok(seed)), Some(Ok(incr))) if incr != 0 => Ok((seed, incr)),
        _ => Err(SqlError::syntax("IDENTITY")),
    }
}

/// Column names inside the parentheses of a PRIMARY KEY / UNIQUE constraint's text.
fn constraint_columns(text: &str) -> Vec<String> {
    let Some((_, rest)) = text.split_once('(') else {
        return Vec::new();
    };
    let inner = rest.split(')').next().unwrap_or("");
    inner
        .split(',')
        .filter_map(|c| c.split_whitespace().next())
        .map(|c| {
            c.trim_matches(|ch| ch == '[' || ch == ']' || ch == '"')
                .to_string()
        })
        .collect()
}

struct ColumnPlan {
    info: ColumnInfo,
    sql: String,
    identity: Option<(i64, i64)>,
}

fn column_def(
    tr: &mut Translator<'_>,
    def: &sqlparser::ast::ColumnDef,
) -> Result<ColumnPlan, SqlError> {
    let ty = SqlType::parse(&def.data_type.to_string())?;
    let mut info = ColumnInfo {
        name: def.name.value.clone(),
        ty,
        nullable: true,
        identity: false,
        default_sql: None,
    };
    let mut sql = format!("{} {}", quote(&info.name), ty.sqlite_decl());
    let mut identity = None;
    for opt in &def.options {
        match &opt.option {
            ColumnOption::Null => info.nullable = true,
            ColumnOption::NotNull => info.nullable = false,
            ColumnOption::Default(e) => {
                let mut e = e.clone();
                tr.expr(&mut e, false)?;
                if !tr.binds.is_empty() {
                    return Err(SqlError::unsupported(
                        "DEFAULT with variables or session functions",
                    ));
                }
                info.default_sql = Some(e.to_string());
            }
            ColumnOption::Unique {
                is_primary: true, ..
            } => {
                info.nullable = false;
                sql.push_str(" PRIMARY KEY");
            }
            ColumnOption::Unique {
                is_primary: false, ..
            } => sql.push_str(" UNIQUE"),
            ColumnOption::Collation(_) => {}
            other
                if other
                    .to_string()
                    .to_ascii_uppercase()
                    .starts_with("IDENTITY") =>
            {
                if !matches!(ty.storage(), Storage::Integer | Storage::Scaled(0))
                    || ty == SqlType::Bit
                {
                    return Err(SqlError::new(2749, format!("Identity column '{}' must be of data type int, bigint, smallint, tinyint, or decimal or numeric with a scale of 0, and constrained to be nonnullable.", info.name)));
                }
                identity = Some(identity_params(&other.to_string())?);
                info.identity = true;
                info.nullable = false;
            }
            other => return Err(SqlError::unsupported(format!("the column option {other}"))),
        }
    }
    if !info.nullable {
        sql.push_str(" NOT NULL");
    }
    if ty.is_character() {
        sql.push_str(&format!(" COLLATE {COLLATION}"));
    }
    Ok(ColumnPlan {
        info,
        sql,
        identity,
    })
}

/// A table CHECK constraint as SQLite DDL. Only comparisons of integer and
/// float columns with numbers, joined by AND / OR / NOT, are taken: those
/// compare the same in SQLite's storage form as in SQL Server (decimal and
/// money are stored scaled, text types in canonical forms). Anything else is
/// reported as unsupported rather than enforced differently.
fn check_constraint(
    name: Option<&Ident>,
    expr: &Expr,
    columns: &[ColumnInfo],
) -> Result<String, SqlError> {
    if !numeric_check(expr, columns) {
        return Err(SqlError::unsupported(format!(
            "the CHECK constraint ({expr}): only comparisons of integer or float columns with numbers"
        )));
    }
    let body = expr.to_string().replace(['[', ']'], "\"");
    Ok(match name {
        Some(name) => format!("CONSTRAINT {} CHECK ({body})", quote(&name.value)),
        None => format!("CHECK ({body})"),
    })
}

fn numeric_check(expr: &Expr, columns: &[ColumnInfo]) -> bool {
    match expr {
        Expr::Identifier(ident) => columns
            .iter()
            .find(|col| col.name.eq_ignore_ascii_case(&ident.value))
            .is_some_and(|col| matches!(col.ty.storage(), Storage::Integer | Storage::Real)),
        Expr::Value(v) => matches!(v.value, Value::Number(..)),
        Expr::Nested(inner) => numeric_check(inner, columns),
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => numeric_check(inner, columns),
        Expr::UnaryOp { op, expr } => {
            matches!(op, UnaryOperator::Not | UnaryOperator::Minus) && numeric_check(expr, columns)
        }
        Expr::BinaryOp { left, op, right } => {
            matches!(
                op,
                BinaryOperator::Gt
                    | BinaryOperator::GtEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::And
                    | BinaryOperator::Or
            ) && numeric_check(left, columns)
                && numeric_check(right, columns)
        }
        _ => false,
    }
}

/// Translates CREATE TABLE into SQLite DDL plus catalog rows.
pub(crate) fn create_table(
    tr: &mut Translator<'_>,
    ct: &CreateTable,
) -> Result<TablePlan, SqlError> {
    if ct.query.is_some() || ct.temporary {
        return Err(SqlError::unsupported("CREATE TABLE AS / temporary tables"));
    }
    let parts = name_parts(&ct.name);
    let name = parts.last().cloned().unwrap_or_default();
    if name.starts_with('#') {
        return Err(SqlError::unsupported("temporary tables"));
    }
    let mut columns = Vec::with_capacity(ct.columns.len());
    let mut defs = Vec::with_capacity(ct.columns.len() + ct.constraints.len());
    let mut identity = None;
    for def in &ct.columns {
        let plan = column_def(tr, def)?;
        if plan.identity.is_some() && identity.is_some() {
            return Err(SqlError::new(2744, format!("Multiple identity columns specified for table '{name}'. Only one identity column per table is allowed.")));
        }
        identity = identity.or(plan.identity);
        defs.push(plan.sql);
        columns.push(plan.info);
    }
    for c in &ct.constraints {
        if let TableConstraint::Check { name, expr, .. } = c {
            defs.push(check_constraint(name.as_ref(), expr, &columns)?);
            continue;
        }
        let text = c.to_string();
        let upper = text.to_ascii_uppercase();
        if !(upper.contains("PRIMARY KEY") || upper.contains("UNIQUE")) {
            return Err(SqlError::unsupported(format!(
                "the table constraint {text}"
            )));
        }
        if upper.contains("PRIMARY KEY") {
            for key in constraint_columns(&text) {
                if let Some(col) = columns
                    .iter_mut()
                    .find(|col| col.name.eq_ignore_ascii_case(&key))
                {
                    col.nullable = false;
                }
            }
        }
        defs.push(text.replace(['[', ']'], "\""));
    }
    // Columns made NOT NULL by a table-level PRIMARY KEY need the SQLite constraint too.
    for (def, col) in defs.iter_mut().zip(&columns) {
        if !col.nullable && !def.contains(" NOT NULL") {
            def.push_str(" NOT NULL");
        }
    }
    let sql = format!("CREATE TABLE {} ({})", quote(&name), defs.join(", "));
    Ok(TablePlan {
        name,
        sql,
        columns,
        identity,
    })
}

/// SQLite DDL for ALTER TABLE ADD of one nullable column without default.
pub(crate) fn add_column(
    tr: &mut Translator<'_>,
    table: &TableInfo,
    def: &sqlparser::ast::ColumnDef,
) -> Result<(String, ColumnInfo), SqlError> {
    let plan = column_def(tr, def)?;
    if !plan.info.nullable || plan.info.default_sql.is_some() || plan.identity.is_some() {
        // TODO(tdsguard): NOT NULL/DEFAULT/IDENTITY on ALTER TABLE ADD need existing rows filled.
        return Err(SqlError::unsupported(
            "ALTER TABLE ADD with NOT NULL, DEFAULT or IDENTITY",
        ));
    }
    if table.column(&plan.info.name).is_some() {
        return Err(SqlError::new(2705, format!("Column names in each table must be unique. Column name '{}' in table '{}' is specified more than once.", plan.info.name, table.name)));
    }
    Ok((
        format!(
            "ALTER TABLE {} ADD COLUMN {}",
            quote(&table.sqlite_name),
            plan.sql
        ),
        plan.info,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_parameters() {
        assert_eq!(identity_params("IDENTITY(100, 5)").unwrap(), (100, 5));
        assert_eq!(identity_params("IDENTITY").unwrap(), (1, 1));
        assert!(identity_params("IDENTITY(1, 0)").is_err());
    }

    #[test]
    fn constraint_column_names() {
        assert_eq!(
            constraint_columns("CONSTRAINT pk PRIMARY KEY ([a], b DESC)"),
            vec!["a", "b"]
        );
    }

    #[test]
    fn insert_counts() {
        assert_eq!(count_error(2, 3, false).unwrap().number, 109);
        assert_eq!(count_error(3, 2, false).unwrap().number, 110);
        assert!(count_error(2, 2, true).is_none());
    }
}
