//! The `[[columns]]` and `[[procedures]]` configuration compiled into a
//! lookup: canonical identifiers, the parsed plaintext type with its TDS
//! TYPE_INFO ([MS-TDS] 2.2.5.4 "Data Type Definitions") and the varbinary
//! storage size its ciphertext needs.
//!
//! Identifiers are canonical when brackets and double quotes are removed and
//! they are lower-cased; a missing schema is `dbo`. This follows SQL Server's
//! default case-insensitive catalog collation; a database with a
//! case-sensitive catalog collation could hold two tables the map cannot tell
//! apart, and such a configuration is not supported.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::config::{ColumnConfig, EncryptionMode, OnDecryptError, ProcedureConfig};
use crate::rewrite::error::RewriteError;
use crate::tds::types::datetime::time_len;
use crate::tds::types::{Collation, DecimalType, NullableType, TypeInfo, VarLenType};

/// Schema assumed when a name has none.
pub const DEFAULT_SCHEMA: &str = "dbo";

/// Longest `n` of `varbinary(n)` before `varbinary(max)` is needed
/// ("Maximum capacity specifications": 8000 bytes in-row).
pub const MAX_VARBINARY_N: usize = 8000;

/// Collation of character values when no other is known:
/// SQL_Latin1_General_CP1_CI_AS, `09 04 D0 00 34` on the wire (2.2.5.1.2).
pub const DEFAULT_COLLATION: Collation = Collation {
    info: 0x00D0_0409,
    sort_id: 0x34,
};

/// Removes one level of `[brackets]` or `"quotes"` and lower-cases.
pub fn canonical_ident(part: &str) -> String {
    let t = part.trim();
    let inner = if t.len() >= 2 && t.starts_with('[') && t.ends_with(']') {
        t[1..t.len() - 1].replace("]]", "]")
    } else if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        t[1..t.len() - 1].replace("\"\"", "\"")
    } else {
        t.to_string()
    };
    inner.to_lowercase()
}

/// Splits a dotted name at dots outside brackets and quotes.
pub fn split_dotted(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut closing: Option<char> = None;
    for c in name.chars() {
        match (closing, c) {
            (None, '[') => closing = Some(']'),
            (None, '"') => closing = Some('"'),
            (Some(end), c) if c == end => closing = None,
            (None, '.') => {
                parts.push(canonical_ident(&current));
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(canonical_ident(&current));
    parts
}

/// A table: canonical schema and name (the database is matched separately).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableKey {
    pub schema: String,
    pub table: String,
}

impl TableKey {
    /// From `table`, `schema.table` or `db.schema.table` (the database part
    /// is returned separately).
    pub fn parse(name: &str) -> Option<(Option<String>, TableKey)> {
        let parts = split_dotted(name);
        let (db, schema, table) = match parts.as_slice() {
            [t] => (None, DEFAULT_SCHEMA.to_string(), t.clone()),
            [s, t] => (None, s.clone(), t.clone()),
            [d, s, t] => (Some(d.clone()), s.clone(), t.clone()),
            _ => return None,
        };
        let schema = if schema.is_empty() {
            DEFAULT_SCHEMA.to_string()
        } else {
            schema
        };
        (!table.is_empty()).then_some((db, TableKey { schema, table }))
    }
}

impl fmt::Display for TableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Character kinds of the string types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StringKind {
    Char,
    VarChar,
    NChar,
    NVarChar,
}

impl StringKind {
    pub fn is_unicode(self) -> bool {
        matches!(self, StringKind::NChar | StringKind::NVarChar)
    }

    pub fn is_fixed(self) -> bool {
        matches!(self, StringKind::Char | StringKind::NChar)
    }
}

/// A column's plaintext SQL type, as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlainType {
    /// `len` in characters; `None` is `(max)`.
    String {
        kind: StringKind,
        len: Option<u16>,
    },
    /// `len` in bytes; `None` is `(max)`.
    Binary {
        fixed: bool,
        len: Option<u16>,
    },
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Money,
    SmallMoney,
    Real,
    Float,
    Date,
    Time {
        scale: u8,
    },
    DateTime,
    SmallDateTime,
    DateTime2 {
        scale: u8,
    },
    DateTimeOffset {
        scale: u8,
    },
    UniqueIdentifier,
}

impl PlainType {
    /// Parses `nvarchar(50)`, `char(11)`, `decimal(10,2)`, `date`,
    /// `datetime2(3)`, `varbinary(max)` ... (case-insensitive).
    pub fn parse(text: &str) -> Result<PlainType, String> {
        let t = text.trim().to_lowercase();
        let (name, args) = match t.find('(') {
            Some(i) if t.ends_with(')') => (t[..i].trim(), Some(&t[i + 1..t.len() - 1])),
            Some(_) => return Err(format!("unbalanced parentheses in `{text}`")),
            None => (t.as_str(), None),
        };
        let args: Vec<&str> = args
            .map(|a| a.split(',').map(str::trim).collect())
            .unwrap_or_default();
        parse_named(name, &args).ok_or_else(|| format!("unsupported type `{text}`"))
    }

    /// The TYPE_INFO of a nullable column of this type.
    pub fn type_info(&self, collation: Collation) -> TypeInfo {
        match *self {
            PlainType::String { kind, len } => string_type_info(kind, len, collation),
            PlainType::Binary { fixed, len } => TypeInfo::VarLen {
                ty: if fixed {
                    VarLenType::BigBinary
                } else {
                    VarLenType::BigVarBinary
                },
                max_len: len.unwrap_or(0xFFFF),
                collation: None,
            },
            PlainType::TinyInt => nullable(NullableType::IntN, 1),
            PlainType::SmallInt => nullable(NullableType::IntN, 2),
            PlainType::Int => nullable(NullableType::IntN, 4),
            PlainType::BigInt => nullable(NullableType::IntN, 8),
            PlainType::Bit => nullable(NullableType::BitN, 1),
            PlainType::Decimal { precision, scale } => TypeInfo::Decimal {
                ty: DecimalType::DecimalN,
                len: decimal_len(precision),
                precision,
                scale,
            },
            PlainType::Money => nullable(NullableType::MoneyN, 8),
            PlainType::SmallMoney => nullable(NullableType::MoneyN, 4),
            PlainType::Real => nullable(NullableType::FltN, 4),
            PlainType::Float => nullable(NullableType::FltN, 8),
            PlainType::Date => TypeInfo::Date,
            PlainType::Time { scale } => TypeInfo::Time { scale },
            PlainType::DateTime => nullable(NullableType::DateTimeN, 8),
            PlainType::SmallDateTime => nullable(NullableType::DateTimeN, 4),
            PlainType::DateTime2 { scale } => TypeInfo::DateTime2 { scale },
            PlainType::DateTimeOffset { scale } => TypeInfo::DateTimeOffset { scale },
            PlainType::UniqueIdentifier => nullable(NullableType::Guid, 16),
        }
    }

    /// The canonical T-SQL spelling, bound into the ciphertext's associated
    /// data: lower case, no spaces (`nvarchar(50)`, `decimal(10,2)`).
    pub fn canonical(&self) -> String {
        let n = |len: Option<u16>| len.map_or("max".to_string(), |n| n.to_string());
        match *self {
            PlainType::String { kind, len } => format!("{}({})", string_name(kind), n(len)),
            PlainType::Binary { fixed: true, len } => format!("binary({})", n(len)),
            PlainType::Binary { fixed: false, len } => format!("varbinary({})", n(len)),
            PlainType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            PlainType::Time { scale } => format!("time({scale})"),
            PlainType::DateTime2 { scale } => format!("datetime2({scale})"),
            PlainType::DateTimeOffset { scale } => format!("datetimeoffset({scale})"),
            other => simple_name(other).to_string(),
        }
    }

    /// Largest plaintext in bytes, or `None` for `(max)` types.
    pub fn max_plain_len(&self) -> Option<usize> {
        let len = match *self {
            PlainType::String { kind, len } => {
                usize::from(len?) * if kind.is_unicode() { 2 } else { 1 }
            }
            PlainType::Binary { len, .. } => usize::from(len?),
            PlainType::TinyInt | PlainType::Bit => 1,
            PlainType::SmallInt => 2,
            PlainType::Int | PlainType::Real | PlainType::SmallMoney | PlainType::SmallDateTime => {
                4
            }
            PlainType::BigInt | PlainType::Float | PlainType::Money | PlainType::DateTime => 8,
            PlainType::Decimal { precision, .. } => usize::from(decimal_len(precision)),
            PlainType::Date => 3,
            PlainType::Time { scale } => time_len(scale),
            PlainType::DateTime2 { scale } => time_len(scale) + 3,
            PlainType::DateTimeOffset { scale } => time_len(scale) + 5,
            PlainType::UniqueIdentifier => 16,
        };
        Some(len)
    }

    /// The storage type's max length: `varbinary(n)` holding the largest
    /// envelope, or 0xFFFF (`varbinary(max)`) beyond 8000 bytes.
    pub fn storage_max_len(&self, sealed_len: impl Fn(usize) -> usize) -> u16 {
        match self.max_plain_len().map(sealed_len) {
            Some(n) if n <= MAX_VARBINARY_N => n as u16,
            _ => 0xFFFF,
        }
    }
}

fn nullable(ty: NullableType, len: u8) -> TypeInfo {
    TypeInfo::Nullable { ty, len }
}

fn string_type_info(kind: StringKind, len: Option<u16>, collation: Collation) -> TypeInfo {
    let ty = match kind {
        StringKind::Char => VarLenType::BigChar,
        StringKind::VarChar => VarLenType::BigVarChar,
        StringKind::NChar => VarLenType::NChar,
        StringKind::NVarChar => VarLenType::NVarChar,
    };
    let max_len = match (len, kind.is_unicode()) {
        (None, _) => 0xFFFF,
        (Some(n), true) => n.saturating_mul(2),
        (Some(n), false) => n,
    };
    TypeInfo::VarLen {
        ty,
        max_len,
        collation: Some(collation),
    }
}

/// Bytes of a DECIMALN value for a precision, sign byte included (2.2.5.5.1.6).
pub fn decimal_len(precision: u8) -> u8 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

fn string_name(kind: StringKind) -> &'static str {
    match kind {
        StringKind::Char => "char",
        StringKind::VarChar => "varchar",
        StringKind::NChar => "nchar",
        StringKind::NVarChar => "nvarchar",
    }
}

fn simple_name(t: PlainType) -> &'static str {
    match t {
        PlainType::TinyInt => "tinyint",
        PlainType::SmallInt => "smallint",
        PlainType::Int => "int",
        PlainType::BigInt => "bigint",
        PlainType::Bit => "bit",
        PlainType::Money => "money",
        PlainType::SmallMoney => "smallmoney",
        PlainType::Real => "real",
        PlainType::Float => "float",
        PlainType::Date => "date",
        PlainType::DateTime => "datetime",
        PlainType::SmallDateTime => "smalldatetime",
        PlainType::UniqueIdentifier => "uniqueidentifier",
        _ => "",
    }
}

fn parse_named(name: &str, args: &[&str]) -> Option<PlainType> {
    let string = |kind: StringKind, cap: u16| {
        parse_len(args, cap).map(|len| PlainType::String { kind, len })
    };
    let scaled = |f: fn(u8) -> PlainType| match args {
        [] => Some(f(7)),
        [s] => s.parse::<u8>().ok().filter(|s| *s <= 7).map(f),
        _ => None,
    };
    let plain = |t: PlainType| args.is_empty().then_some(t);
    match name {
        "char" => string(StringKind::Char, 8000).filter(|t| t.max_plain_len().is_some()),
        "varchar" => string(StringKind::VarChar, 8000),
        "nchar" => string(StringKind::NChar, 4000).filter(|t| t.max_plain_len().is_some()),
        "nvarchar" => string(StringKind::NVarChar, 4000),
        "binary" => parse_len(args, 8000)
            .filter(Option::is_some)
            .map(|len| PlainType::Binary { fixed: true, len }),
        "varbinary" => parse_len(args, 8000).map(|len| PlainType::Binary { fixed: false, len }),
        "decimal" | "numeric" => parse_decimal(args),
        "time" => scaled(|scale| PlainType::Time { scale }),
        "datetime2" => scaled(|scale| PlainType::DateTime2 { scale }),
        "datetimeoffset" => scaled(|scale| PlainType::DateTimeOffset { scale }),
        "tinyint" => plain(PlainType::TinyInt),
        "smallint" => plain(PlainType::SmallInt),
        "int" => plain(PlainType::Int),
        "bigint" => plain(PlainType::BigInt),
        "bit" => plain(PlainType::Bit),
        "money" => plain(PlainType::Money),
        "smallmoney" => plain(PlainType::SmallMoney),
        "real" => plain(PlainType::Real),
        "float" => plain(PlainType::Float),
        "date" => plain(PlainType::Date),
        "datetime" => plain(PlainType::DateTime),
        "smalldatetime" => plain(PlainType::SmallDateTime),
        "uniqueidentifier" => plain(PlainType::UniqueIdentifier),
        _ => None,
    }
}

/// `(n)` up to `cap`, `(max)`, or no argument (length 1, as T-SQL has it
/// for a column definition).
fn parse_len(args: &[&str], cap: u16) -> Option<Option<u16>> {
    match args {
        [] => Some(Some(1)),
        ["max"] => Some(None),
        [n] => n
            .parse::<u16>()
            .ok()
            .filter(|n| (1..=cap).contains(n))
            .map(Some),
        _ => None,
    }
}

fn parse_decimal(args: &[&str]) -> Option<PlainType> {
    let (p, s) = match args {
        [] => (18, 0),
        [p] => (p.parse().ok()?, 0),
        [p, s] => (p.parse().ok()?, s.parse().ok()?),
        _ => return None,
    };
    ((1..=38).contains(&p) && s <= p).then_some(PlainType::Decimal {
        precision: p,
        scale: s,
    })
}

/// One mapped column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedColumn {
    /// Canonical database, or `None` for every database.
    pub database: Option<String>,
    pub table: TableKey,
    /// Canonical column name.
    pub column: String,
    pub plain: PlainType,
    /// `plain` as canonical text (`nvarchar(50)`), the type a value is bound
    /// to; kept here because sealing and opening need it for every value.
    pub plain_text: String,
    pub mode: EncryptionMode,
    pub on_decrypt_error: OnDecryptError,
}

impl MappedColumn {
    /// A `[[columns]]` entry with its names made canonical and its type
    /// parsed; the database comes from `database` or a three-part table name.
    pub fn from_config(c: &ColumnConfig) -> Result<MappedColumn, RewriteError> {
        let entry = format!("{}.{}", c.table, c.column);
        let (db, table) = TableKey::parse(&c.table)
            .ok_or_else(|| RewriteError::config(&entry, "table is not `[schema.]table`"))?;
        let plain = PlainType::parse(&c.sql_type).map_err(|e| RewriteError::config(&entry, e))?;
        Ok(MappedColumn {
            database: c.database.as_deref().map(canonical_ident).or(db),
            table,
            column: canonical_ident(&c.column),
            plain,
            plain_text: plain.canonical(),
            mode: c.mode,
            on_decrypt_error: c.on_decrypt_error,
        })
    }

    /// `schema.table.column`, for messages (names only, never values).
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }

    pub fn is_deterministic(&self) -> bool {
        self.mode == EncryptionMode::Deterministic
    }
}

/// A mapped column as used in one database: what the cipher binds to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnRef {
    pub database: String,
    pub schema: String,
    pub table: String,
    pub column: String,
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.database, self.schema, self.table, self.column
        )
    }
}

/// The compiled column map.
#[derive(Debug, Default)]
pub struct ColumnMap {
    tables: HashMap<TableKey, Vec<Arc<MappedColumn>>>,
    /// Canonical column names, to spot mentions in text that does not parse.
    names: Vec<String>,
    /// Procedure → parameter (canonical, with `@`) → column.
    procedures: HashMap<TableKey, HashMap<String, Arc<MappedColumn>>>,
}

impl ColumnMap {
    /// Compiles `[[columns]]` and `[[procedures]]`.
    pub fn new(
        columns: &[ColumnConfig],
        procedures: &[ProcedureConfig],
    ) -> Result<ColumnMap, RewriteError> {
        let mut map = ColumnMap::default();
        for c in columns {
            map.add_column(c)?;
        }
        for p in procedures {
            map.add_procedure(p)?;
        }
        Ok(map)
    }

    fn add_column(&mut self, c: &ColumnConfig) -> Result<(), RewriteError> {
        let mapped = MappedColumn::from_config(c)?;
        if !self.names.contains(&mapped.column) {
            self.names.push(mapped.column.clone());
        }
        self.tables
            .entry(mapped.table.clone())
            .or_default()
            .push(Arc::new(mapped));
        Ok(())
    }

    fn add_procedure(&mut self, p: &ProcedureConfig) -> Result<(), RewriteError> {
        let (_, proc_key) = TableKey::parse(&p.procedure).ok_or_else(|| {
            RewriteError::config(&p.procedure, "procedure is not `[schema.]name`")
        })?;
        let mut params = HashMap::new();
        for (param, target) in &p.parameters {
            let parts = split_dotted(target);
            let (table, column) = match parts.as_slice() {
                [t, c] => (
                    TableKey {
                        schema: DEFAULT_SCHEMA.into(),
                        table: t.clone(),
                    },
                    c,
                ),
                [s, t, c] => (
                    TableKey {
                        schema: s.clone(),
                        table: t.clone(),
                    },
                    c,
                ),
                _ => {
                    return Err(RewriteError::config(
                        &p.procedure,
                        "parameter target is not `table.column`",
                    ))
                }
            };
            let mapped = self
                .tables
                .get(&table)
                .and_then(|cols| cols.iter().find(|m| &m.column == column))
                .ok_or_else(|| {
                    RewriteError::config(&p.procedure, format!("{target} is not a mapped column"))
                })?;
            params.insert(param_key(param), Arc::clone(mapped));
        }
        self.procedures.insert(proc_key, params);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The mapped columns of a table in `database`.
    pub fn table_columns(&self, database: &str, table: &TableKey) -> Vec<Arc<MappedColumn>> {
        let db = canonical_ident(database);
        self.tables
            .get(table)
            .map(|cols| {
                cols.iter()
                    .filter(|m| m.database.as_deref().is_none_or(|d| d == db))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a table has mapped columns in `database`.
    pub fn is_mapped_table(&self, database: &str, table: &TableKey) -> bool {
        !self.table_columns(database, table).is_empty()
    }

    /// The mapped column `table.column` in `database`.
    pub fn column(
        &self,
        database: &str,
        table: &TableKey,
        column: &str,
    ) -> Option<Arc<MappedColumn>> {
        let column = canonical_ident(column);
        self.table_columns(database, table)
            .into_iter()
            .find(|m| m.column == column)
    }

    /// Whether `text` mentions a mapped column name as a word (used to decide
    /// whether text that cannot be parsed may be passed through).
    pub fn mentions_mapped_name(&self, text: &str) -> bool {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '@' || c == '#' || c == '$'))
            .collect();
        self.names.iter().any(|n| words.contains(&n.as_str()))
    }

    /// Whether `text` mentions the name of a table with mapped columns.
    pub fn mentions_mapped_table(&self, text: &str) -> bool {
        let lower = text.to_lowercase();
        self.tables.keys().any(|t| lower.contains(&t.table))
    }

    /// Whether `name` (canonical) is the name of a table with mapped columns.
    pub fn is_mapped_table_name(&self, name: &str) -> bool {
        self.tables.keys().any(|t| t.table == name)
    }

    /// Every mapped column called `column` (canonical) in `database`.
    pub fn columns_named(&self, database: &str, column: &str) -> Vec<Arc<MappedColumn>> {
        let db = canonical_ident(database);
        self.tables
            .values()
            .flatten()
            .filter(|m| m.column == column && m.database.as_deref().is_none_or(|d| d == db))
            .cloned()
            .collect()
    }

    /// Whether `text` mentions the name of a procedure in `[[procedures]]`.
    pub fn mentions_mapped_procedure(&self, text: &str) -> bool {
        let lower = text.to_lowercase();
        self.procedures.keys().any(|p| lower.contains(&p.table))
    }

    /// Mapped parameters of a procedure (by canonical name with `@`).
    pub fn procedure(&self, name: &str) -> Option<&HashMap<String, Arc<MappedColumn>>> {
        let (_, key) = TableKey::parse(name)?;
        self.procedures.get(&key)
    }
}

/// A parameter name in canonical form: lower case, starting with `@`.
pub fn param_key(name: &str) -> String {
    let n = name.trim().to_lowercase();
    if n.starts_with('@') {
        n
    } else {
        format!("@{n}")
    }
}

/// The binding of a mapped column in `database`.
pub fn column_ref(database: &str, m: &MappedColumn) -> ColumnRef {
    ColumnRef {
        database: m
            .database
            .clone()
            .unwrap_or_else(|| canonical_ident(database)),
        schema: m.table.schema.clone(),
        table: m.table.table.clone(),
        column: m.column.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(table: &str, column: &str, ty: &str, mode: EncryptionMode) -> ColumnConfig {
        ColumnConfig {
            table: table.into(),
            column: column.into(),
            sql_type: ty.into(),
            mode,
            on_decrypt_error: OnDecryptError::Error,
            database: None,
        }
    }

    #[test]
    fn identifiers_are_canonical() {
        assert_eq!(canonical_ident("[Patients]"), "patients");
        assert_eq!(canonical_ident("\"SSN\""), "ssn");
        assert_eq!(split_dotted("[dbo].[My.Table]"), vec!["dbo", "my.table"]);
        let (db, key) = TableKey::parse("Clinic..Patients").unwrap();
        assert_eq!(db.as_deref(), Some("clinic"));
        assert_eq!(key.schema, "dbo");
    }

    #[test]
    fn types_parse_with_type_info() {
        let t = PlainType::parse("NVARCHAR(50)").unwrap();
        assert_eq!(t.canonical(), "nvarchar(50)");
        assert_eq!(t.max_plain_len(), Some(100));
        assert!(matches!(
            t.type_info(DEFAULT_COLLATION),
            TypeInfo::VarLen { max_len: 100, .. }
        ));
        let d = PlainType::parse("decimal(10, 2)").unwrap();
        assert_eq!(
            d,
            PlainType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(d.max_plain_len(), Some(9));
        assert_eq!(
            PlainType::parse("datetime2(3)").unwrap().max_plain_len(),
            Some(7)
        );
        assert_eq!(
            PlainType::parse("varbinary(max)").unwrap().max_plain_len(),
            None
        );
        assert_eq!(
            PlainType::parse("char(11)")
                .unwrap()
                .storage_max_len(|n| n + 38),
            49
        );
        assert_eq!(
            PlainType::parse("nvarchar(4000)")
                .unwrap()
                .storage_max_len(|n| n + 38),
            0xFFFF
        );
        assert!(PlainType::parse("nvarchar(4001)").is_err());
        assert!(PlainType::parse("geography").is_err());
        assert!(PlainType::parse("decimal(39,2)").is_err());
    }

    #[test]
    fn map_looks_up_by_canonical_names() {
        let cols = [col(
            "[dbo].[Patients]",
            "[SSN]",
            "char(11)",
            EncryptionMode::Deterministic,
        )];
        let mut params = std::collections::BTreeMap::new();
        params.insert("@Ssn".to_string(), "Patients.ssn".to_string());
        let procs = [ProcedureConfig {
            procedure: "dbo.FindPatient".into(),
            parameters: params,
        }];
        let map = ColumnMap::new(&cols, &procs).unwrap();
        let key = TableKey::parse("patients").unwrap().1;
        assert!(map.column("anydb", &key, "Ssn").is_some());
        assert!(map.mentions_mapped_name("select SSN from x"));
        assert!(!map.mentions_mapped_name("select ssn_hash from x"));
        assert!(map
            .procedure("[dbo].[findpatient]")
            .unwrap()
            .contains_key("@ssn"));
    }

    #[test]
    fn database_restricts_a_column() {
        let mut c = col("Patients", "ssn", "char(11)", EncryptionMode::Randomized);
        c.database = Some("Clinic".into());
        let map = ColumnMap::new(&[c], &[]).unwrap();
        let key = TableKey::parse("patients").unwrap().1;
        assert!(map.is_mapped_table("CLINIC", &key));
        assert!(!map.is_mapped_table("other", &key));
    }
}
