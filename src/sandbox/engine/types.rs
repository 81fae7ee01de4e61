//! Declared T-SQL types, engine values, and the conversions between them and SQLite.
//!
//! Storage in SQLite, chosen so that `=` and `ORDER BY` work on the stored form:
//! - integer types and bit: INTEGER; float/real: REAL;
//! - decimal/numeric/money/smallmoney: INTEGER holding the value times 10^scale (exact; the
//!   translator divides by 10^scale wherever the column appears inside an expression);
//! - character types: TEXT (char/nchar padded to their length); binary types: BLOB;
//! - date `YYYY-MM-DD`, time `hh:mm:ss.fffffff`, datetime/smalldatetime/datetime2
//!   `YYYY-MM-DD hh:mm:ss.fffffff`, datetimeoffset the same plus ` +hh:mm`: TEXT with fixed
//!   widths, so text order is time order (datetimeoffset orders by local time, not UTC);
//! - uniqueidentifier: TEXT, upper-case canonical form.

use std::fmt;

use rusqlite::types::{Value as SqliteValue, ValueRef};

use crate::sandbox::engine::errors::SqlError;

/// Longest varchar/varbinary(n); beyond it the type must be (max). SQL Server limit.
pub const MAX_VAR_LEN: u32 = 8000;

/// Length of a variable-length type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Len {
    /// `(n)`.
    N(u32),
    /// `(max)`.
    Max,
}

/// A declared T-SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Numeric {
        precision: u8,
        scale: u8,
    },
    /// float(n): 24 bits or fewer is `real`, otherwise 53.
    Float {
        mantissa_bits: u8,
    },
    Real,
    Money,
    SmallMoney,
    Char(u32),
    VarChar(Len),
    NChar(u32),
    NVarChar(Len),
    Binary(u32),
    VarBinary(Len),
    Date,
    Time(u8),
    DateTime,
    SmallDateTime,
    DateTime2(u8),
    DateTimeOffset(u8),
    UniqueIdentifier,
}

/// How a type is kept in SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Integer,
    Real,
    /// Integer holding value * 10^scale.
    Scaled(u8),
    Text,
    Blob,
}

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

/// A time of day with 100 ns precision kept as nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub nanos: u32,
}

/// A date and a time without offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime {
    pub date: Date,
    pub time: Time,
}

/// One value in a row or parameter.
#[derive(Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// `value / 10^scale`.
    Decimal {
        value: i128,
        scale: u8,
    },
    String(String),
    Bytes(Vec<u8>),
    Date(Date),
    Time(Time),
    DateTime2(DateTime),
    DateTimeOffset {
        datetime: DateTime,
        offset_minutes: i16,
    },
    /// RFC 4122 byte order (the order of the canonical text form, not the TDS wire order).
    Guid([u8; 16]),
}

impl fmt::Debug for Value {
    // Row and parameter values must not reach logs; only the kind is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Value::Null => "Null",
            Value::Bool(_) => "Bool",
            Value::Int(_) => "Int",
            Value::Float(_) => "Float",
            Value::Decimal { .. } => "Decimal",
            Value::String(_) => "String",
            Value::Bytes(_) => "Bytes",
            Value::Date(_) => "Date",
            Value::Time(_) => "Time",
            Value::DateTime2(_) => "DateTime2",
            Value::DateTimeOffset { .. } => "DateTimeOffset",
            Value::Guid(_) => "Guid",
        };
        write!(f, "Value::{kind}(..)")
    }
}

impl SqlType {
    /// Parses a declared type such as `nvarchar(50)`, `DECIMAL(10, 2)`, `varbinary(max)`.
    pub fn parse(text: &str) -> Result<SqlType, SqlError> {
        let text = text.trim();
        let (name, args) = match text.find('(') {
            Some(open) => {
                let inner = text[open + 1..].trim_end().trim_end_matches(')');
                (
                    text[..open].trim(),
                    inner.split(',').map(|a| a.trim()).collect::<Vec<_>>(),
                )
            }
            None => (text, Vec::new()),
        };
        let name = name
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        Self::from_parts(&name, &args).ok_or_else(|| {
            SqlError::new(
                2715,
                format!("Column, parameter, or variable #1: Cannot find data type {text}."),
            )
        })
    }

    fn from_parts(name: &str, args: &[&str]) -> Option<SqlType> {
        let num = |i: usize| args.get(i).and_then(|a| a.parse::<u32>().ok());
        let len = |default: u32| match args.first() {
            Some(a) if a.eq_ignore_ascii_case("max") => Some(Len::Max),
            Some(a) => a
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_VAR_LEN).contains(n))
                .map(Len::N),
            None => Some(Len::N(default)),
        };
        let fixed = |default: u32| {
            let n = num(0).or(if args.is_empty() { Some(default) } else { None })?;
            (1..=MAX_VAR_LEN).contains(&n).then_some(n)
        };
        let frac = || -> Option<u8> { num(0).or(Some(7)).filter(|p| *p <= 7).map(|p| p as u8) };
        let ty = match name {
            "tinyint" => SqlType::TinyInt,
            "smallint" => SqlType::SmallInt,
            "int" | "integer" => SqlType::Int,
            "bigint" => SqlType::BigInt,
            "bit" => SqlType::Bit,
            "decimal" | "dec" | "numeric" => {
                let precision = num(0).unwrap_or(18).clamp(1, 38) as u8;
                let scale = num(1).unwrap_or(0) as u8;
                if scale > precision {
                    return None;
                }
                if name == "numeric" {
                    SqlType::Numeric { precision, scale }
                } else {
                    SqlType::Decimal { precision, scale }
                }
            }
            "float" => match num(0).unwrap_or(53) {
                1..=24 => SqlType::Float { mantissa_bits: 24 },
                25..=53 => SqlType::Float { mantissa_bits: 53 },
                _ => return None,
            },
            "real" => SqlType::Real,
            "money" => SqlType::Money,
            "smallmoney" => SqlType::SmallMoney,
            "char" | "character" => SqlType::Char(fixed(1)?),
            "varchar" => SqlType::VarChar(len(1)?),
            "nchar" => SqlType::NChar(fixed(1)?),
            "nvarchar" => SqlType::NVarChar(len(1)?),
            "binary" => SqlType::Binary(fixed(1)?),
            "varbinary" => SqlType::VarBinary(len(1)?),
            "text" => SqlType::VarChar(Len::Max),
            "ntext" | "sysname" if name == "ntext" => SqlType::NVarChar(Len::Max),
            "sysname" => SqlType::NVarChar(Len::N(128)),
            "image" => SqlType::VarBinary(Len::Max),
            "date" => SqlType::Date,
            "time" => SqlType::Time(frac()?),
            "datetime" => SqlType::DateTime,
            "smalldatetime" => SqlType::SmallDateTime,
            "datetime2" => SqlType::DateTime2(frac()?),
            "datetimeoffset" => SqlType::DateTimeOffset(frac()?),
            "uniqueidentifier" => SqlType::UniqueIdentifier,
            _ => return None,
        };
        Some(ty)
    }

    /// The SQLite representation.
    pub fn storage(&self) -> Storage {
        match self {
            SqlType::TinyInt
            | SqlType::SmallInt
            | SqlType::Int
            | SqlType::BigInt
            | SqlType::Bit => Storage::Integer,
            SqlType::Float { .. } | SqlType::Real => Storage::Real,
            SqlType::Decimal { scale, .. } | SqlType::Numeric { scale, .. } => {
                Storage::Scaled(*scale)
            }
            SqlType::Money | SqlType::SmallMoney => Storage::Scaled(4),
            SqlType::Binary(_) | SqlType::VarBinary(_) => Storage::Blob,
            _ => Storage::Text,
        }
    }

    /// SQLite column type used in CREATE TABLE (gives the column its affinity).
    pub fn sqlite_decl(&self) -> &'static str {
        match self.storage() {
            Storage::Integer | Storage::Scaled(_) => "INTEGER",
            Storage::Real => "REAL",
            Storage::Text => "TEXT",
            Storage::Blob => "BLOB",
        }
    }

    /// Type name as in `sys.types`.
    pub fn type_name(&self) -> &'static str {
        match self {
            SqlType::TinyInt => "tinyint",
            SqlType::SmallInt => "smallint",
            SqlType::Int => "int",
            SqlType::BigInt => "bigint",
            SqlType::Bit => "bit",
            SqlType::Decimal { .. } => "decimal",
            SqlType::Numeric { .. } => "numeric",
            SqlType::Float { mantissa_bits: 24 } | SqlType::Real => "real",
            SqlType::Float { .. } => "float",
            SqlType::Money => "money",
            SqlType::SmallMoney => "smallmoney",
            SqlType::Char(_) => "char",
            SqlType::VarChar(_) => "varchar",
            SqlType::NChar(_) => "nchar",
            SqlType::NVarChar(_) => "nvarchar",
            SqlType::Binary(_) => "binary",
            SqlType::VarBinary(_) => "varbinary",
            SqlType::Date => "date",
            SqlType::Time(_) => "time",
            SqlType::DateTime => "datetime",
            SqlType::SmallDateTime => "smalldatetime",
            SqlType::DateTime2(_) => "datetime2",
            SqlType::DateTimeOffset(_) => "datetimeoffset",
            SqlType::UniqueIdentifier => "uniqueidentifier",
        }
    }

    /// `sys.columns.max_length`: bytes, -1 for (max).
    pub fn max_length(&self) -> i32 {
        let var = |len: &Len, unit: i32| match len {
            Len::Max => -1,
            Len::N(n) => *n as i32 * unit,
        };
        match self {
            SqlType::TinyInt | SqlType::Bit => 1,
            SqlType::SmallInt => 2,
            SqlType::Int | SqlType::Real | SqlType::SmallMoney | SqlType::SmallDateTime => 4,
            SqlType::Float { mantissa_bits: 24 } => 4,
            SqlType::BigInt | SqlType::Float { .. } | SqlType::Money | SqlType::DateTime => 8,
            SqlType::Decimal { precision, .. } | SqlType::Numeric { precision, .. } => {
                decimal_bytes(*precision)
            }
            SqlType::Char(n) | SqlType::Binary(n) => *n as i32,
            SqlType::NChar(n) => *n as i32 * 2,
            SqlType::VarChar(l) | SqlType::VarBinary(l) => var(l, 1),
            SqlType::NVarChar(l) => var(l, 2),
            SqlType::Date => 3,
            SqlType::Time(p) => 3 + i32::from(*p > 2) + i32::from(*p > 4),
            SqlType::DateTime2(p) => 6 + i32::from(*p > 2) + i32::from(*p > 4),
            SqlType::DateTimeOffset(p) => 8 + i32::from(*p > 2) + i32::from(*p > 4),
            SqlType::UniqueIdentifier => 16,
        }
    }

    /// `sys.columns.precision`.
    pub fn precision(&self) -> u8 {
        match self {
            SqlType::TinyInt => 3,
            SqlType::SmallInt => 5,
            SqlType::Int => 10,
            SqlType::BigInt => 19,
            SqlType::Bit => 1,
            SqlType::Decimal { precision, .. } | SqlType::Numeric { precision, .. } => *precision,
            SqlType::Float { mantissa_bits } => *mantissa_bits,
            SqlType::Real => 24,
            SqlType::Money => 19,
            SqlType::SmallMoney => 10,
            SqlType::Date => 10,
            SqlType::Time(p) => 8 + p + u8::from(*p > 0),
            SqlType::DateTime => 23,
            SqlType::SmallDateTime => 16,
            SqlType::DateTime2(p) => 19 + p + u8::from(*p > 0),
            SqlType::DateTimeOffset(p) => 26 + p + u8::from(*p > 0),
            _ => 0,
        }
    }

    /// `sys.columns.scale`.
    pub fn scale(&self) -> u8 {
        match self {
            SqlType::Decimal { scale, .. } | SqlType::Numeric { scale, .. } => *scale,
            SqlType::Money | SqlType::SmallMoney => 4,
            SqlType::Time(p) | SqlType::DateTime2(p) | SqlType::DateTimeOffset(p) => *p,
            SqlType::DateTime => 3,
            _ => 0,
        }
    }

    /// True for char/varchar/nchar/nvarchar (which carry a collation).
    pub fn is_character(&self) -> bool {
        matches!(
            self,
            SqlType::Char(_) | SqlType::VarChar(_) | SqlType::NChar(_) | SqlType::NVarChar(_)
        )
    }

    /// Character or byte limit for length checks; None for (max) and non-string types.
    pub fn length_limit(&self) -> Option<u32> {
        match self {
            SqlType::Char(n) | SqlType::NChar(n) | SqlType::Binary(n) => Some(*n),
            SqlType::VarChar(Len::N(n)) | SqlType::NVarChar(Len::N(n)) => Some(*n),
            SqlType::VarBinary(Len::N(n)) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.type_name();
        let len = |l: &Len| match l {
            Len::Max => "max".to_string(),
            Len::N(n) => n.to_string(),
        };
        match self {
            SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => {
                write!(f, "{name}({precision},{scale})")
            }
            SqlType::Char(n) | SqlType::NChar(n) | SqlType::Binary(n) => write!(f, "{name}({n})"),
            SqlType::VarChar(l) | SqlType::NVarChar(l) | SqlType::VarBinary(l) => {
                write!(f, "{name}({})", len(l))
            }
            SqlType::Time(p) | SqlType::DateTime2(p) | SqlType::DateTimeOffset(p) => {
                write!(f, "{name}({p})")
            }
            SqlType::Float { mantissa_bits: 53 } => write!(f, "float"),
            _ => write!(f, "{name}"),
        }
    }
}

/// Bytes SQL Server uses for decimal(p) (`sys.columns.max_length`).
fn decimal_bytes(precision: u8) -> i32 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

/// What a conversion is for: storing into a column (length checks raise 2628) or an explicit
/// CAST/CONVERT (strings are cut silently, as SQL Server does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvMode {
    Store,
    Cast,
}

/// The value a SQLite expression produced, owned.
fn source_name(v: &ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Integer(_) => "int",
        ValueRef::Real(_) => "float",
        ValueRef::Blob(_) => "varbinary",
        _ => "varchar",
    }
}

/// Converts a SQLite value to the storage form of `ty`, validating like SQL Server.
/// `column` names the target for 2628 messages (table, column).
pub fn to_storage(
    v: ValueRef<'_>,
    ty: &SqlType,
    mode: ConvMode,
    column: (&str, &str),
) -> Result<SqliteValue, SqlError> {
    if let ValueRef::Null = v {
        return Ok(SqliteValue::Null);
    }
    match ty.storage() {
        Storage::Integer => to_integer(v, ty).map(SqliteValue::Integer),
        Storage::Real => to_real(v).map(SqliteValue::Real),
        Storage::Scaled(scale) => {
            let scaled = to_scaled(v, ty, scale)?;
            match mode {
                ConvMode::Store => Ok(SqliteValue::Integer(scaled as i64)),
                ConvMode::Cast => Ok(SqliteValue::Real(scaled as f64 / pow10(scale) as f64)),
            }
        }
        Storage::Blob => to_blob(v, ty, mode, column).map(SqliteValue::Blob),
        Storage::Text => to_text(v, ty, mode, column).map(SqliteValue::Text),
    }
}

fn overflow(from: &str, ty: &SqlType) -> SqlError {
    let target = match ty.storage() {
        Storage::Scaled(_) => "numeric".to_string(),
        _ => ty.type_name().to_string(),
    };
    SqlError::new(
        8115,
        format!("Arithmetic overflow error converting {from} to data type {target}."),
    )
}

fn int_range(ty: &SqlType) -> (i64, i64) {
    match ty {
        SqlType::TinyInt => (0, 255),
        SqlType::SmallInt => (i16::MIN.into(), i16::MAX.into()),
        SqlType::Int => (i32::MIN.into(), i32::MAX.into()),
        _ => (i64::MIN, i64::MAX),
    }
}

fn to_integer(v: ValueRef<'_>, ty: &SqlType) -> Result<i64, SqlError> {
    let n = match v {
        ValueRef::Integer(i) => i,
        ValueRef::Real(r) if r.is_finite() && r.abs() < 9.2e18 => r.trunc() as i64,
        ValueRef::Real(_) => return Err(overflow("expression", ty)),
        ValueRef::Text(t) => parse_int_text(t, ty)?,
        ValueRef::Blob(_) => return Err(implicit("varbinary", ty)),
        ValueRef::Null => 0,
    };
    if *ty == SqlType::Bit {
        return Ok(i64::from(n != 0));
    }
    let (lo, hi) = int_range(ty);
    if n < lo || n > hi {
        return Err(overflow("expression", ty));
    }
    Ok(n)
}

fn parse_int_text(t: &[u8], ty: &SqlType) -> Result<i64, SqlError> {
    let s = String::from_utf8_lossy(t);
    let trimmed = s.trim();
    if *ty == SqlType::Bit {
        if trimmed.eq_ignore_ascii_case("true") {
            return Ok(1);
        }
        if trimmed.eq_ignore_ascii_case("false") {
            return Ok(0);
        }
    }
    trimmed.parse::<i64>().map_err(|_| {
        SqlError::new(
            245,
            format!(
                "Conversion failed when converting the varchar value '{s}' to data type {}.",
                ty.type_name()
            ),
        )
    })
}

fn implicit(from: &str, ty: &SqlType) -> SqlError {
    SqlError::new(
        257,
        format!(
            "Implicit conversion from data type {from} to {ty} is not allowed. Use the CONVERT \
             function to run this query."
        ),
    )
}

fn to_real(v: ValueRef<'_>) -> Result<f64, SqlError> {
    match v {
        ValueRef::Integer(i) => Ok(i as f64),
        ValueRef::Real(r) => Ok(r),
        ValueRef::Text(t) => String::from_utf8_lossy(t)
            .trim()
            .parse::<f64>()
            .map_err(|_| SqlError::new(8114, "Error converting data type varchar to float.")),
        _ => Err(implicit("varbinary", &SqlType::Float { mantissa_bits: 53 })),
    }
}

/// 10^n for n <= 38.
pub fn pow10(n: u8) -> i128 {
    10i128.pow(u32::from(n.min(38)))
}

fn to_scaled(v: ValueRef<'_>, ty: &SqlType, scale: u8) -> Result<i128, SqlError> {
    let scaled = match v {
        ValueRef::Integer(i) => i128::from(i)
            .checked_mul(pow10(scale))
            .ok_or_else(|| overflow("int", ty))?,
        ValueRef::Real(r) => {
            let x = (r * pow10(scale) as f64).round();
            if !x.is_finite() || x.abs() > 1e38 {
                return Err(overflow("float", ty));
            }
            x as i128
        }
        ValueRef::Text(t) => {
            parse_decimal(&String::from_utf8_lossy(t), scale).ok_or_else(|| {
                SqlError::new(
                    8114,
                    format!("Error converting data type varchar to {}.", ty.type_name()),
                )
            })?
        }
        ref other => return Err(implicit(source_name(other), ty)),
    };
    check_precision(scaled, ty)?;
    Ok(scaled)
}

fn check_precision(scaled: i128, ty: &SqlType) -> Result<(), SqlError> {
    // Scaled values are kept in a SQLite INTEGER, so at most 18 digits fit regardless of the
    // declared precision.
    // TODO(tdsguard): decimal(p > 18) values beyond 18 digits need a text or two-column form.
    let digits = match ty {
        SqlType::Money => 19,
        SqlType::SmallMoney => 10,
        _ => ty.precision(),
    };
    let limit = pow10(digits.min(18));
    let magnitude = scaled.unsigned_abs();
    let money_fits = matches!(ty, SqlType::Money) && i64::try_from(scaled).is_ok();
    if magnitude >= limit as u128 && !money_fits {
        return Err(overflow("expression", ty));
    }
    Ok(())
}

/// Parses `[-]digits[.digits]` into value * 10^scale, rounding half away from zero.
pub fn parse_decimal(text: &str, scale: u8) -> Option<i128> {
    let t = text.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
        || int_part.len() > 38
    {
        return None;
    }
    let mut value: i128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let frac: Vec<u8> = frac_part.bytes().map(|b| b - b'0').collect();
    for i in 0..usize::from(scale) {
        value = value
            .checked_mul(10)?
            .checked_add(i128::from(*frac.get(i).unwrap_or(&0)))?;
    }
    if frac.get(usize::from(scale)).is_some_and(|d| *d >= 5) {
        value = value.checked_add(1)?;
    }
    Some(if neg { -value } else { value })
}

/// Formats value / 10^scale.
pub fn format_decimal(value: i128, scale: u8) -> String {
    let p = pow10(scale);
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    if scale == 0 {
        return format!("{sign}{abs}");
    }
    let p = p as u128;
    format!(
        "{sign}{}.{:0width$}",
        abs / p,
        abs % p,
        width = usize::from(scale)
    )
}

fn truncation(column: (&str, &str), shown: &str) -> SqlError {
    SqlError::new(
        2628,
        format!(
            "String or binary data would be truncated in table '{}', column '{}'. Truncated \
             value: '{shown}'.",
            column.0, column.1
        ),
    )
}

fn to_blob(
    v: ValueRef<'_>,
    ty: &SqlType,
    mode: ConvMode,
    column: (&str, &str),
) -> Result<Vec<u8>, SqlError> {
    let mut bytes = match v {
        ValueRef::Blob(b) => b.to_vec(),
        ValueRef::Text(t) if mode == ConvMode::Cast => t.to_vec(),
        ref other => return Err(implicit(source_name(other), ty)),
    };
    if let Some(limit) = ty.length_limit() {
        let limit = limit as usize;
        if bytes.len() > limit {
            if mode == ConvMode::Store {
                return Err(truncation(column, ""));
            }
            bytes.truncate(limit);
        }
        if matches!(ty, SqlType::Binary(_)) {
            bytes.resize(limit, 0);
        }
    }
    Ok(bytes)
}

fn to_text(
    v: ValueRef<'_>,
    ty: &SqlType,
    mode: ConvMode,
    column: (&str, &str),
) -> Result<String, SqlError> {
    let text = match v {
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) if ty.is_character() => String::from_utf8_lossy(b).into_owned(),
        ValueRef::Blob(_) => return Err(implicit("varbinary", ty)),
        ValueRef::Null => String::new(),
    };
    if ty.is_character() {
        return fit_string(text, ty, mode, column);
    }
    canonical_text(&text, ty)
}

fn fit_string(
    text: String,
    ty: &SqlType,
    mode: ConvMode,
    column: (&str, &str),
) -> Result<String, SqlError> {
    let Some(limit) = ty.length_limit() else {
        return Ok(text);
    };
    let limit = limit as usize;
    let count = text.chars().count();
    // Trailing spaces beyond the limit are dropped silently, as with ANSI_PADDING.
    if count > limit && text.chars().skip(limit).any(|c| c != ' ') {
        let cut: String = text.chars().take(limit).collect();
        if mode == ConvMode::Store {
            return Err(truncation(column, &cut));
        }
        return Ok(cut);
    }
    let mut out: String = if count > limit {
        text.chars().take(limit).collect()
    } else {
        text
    };
    if matches!(ty, SqlType::Char(_) | SqlType::NChar(_)) {
        let have = out.chars().count();
        out.extend(std::iter::repeat_n(' ', limit.saturating_sub(have)));
    }
    Ok(out)
}

fn bad_datetime() -> SqlError {
    SqlError::new(
        241,
        "Conversion failed when converting date and/or time from character string.",
    )
}

/// Re-formats text for a date/time or uniqueidentifier column.
fn canonical_text(text: &str, ty: &SqlType) -> Result<String, SqlError> {
    let value = parse_temporal_text(text, ty)?;
    Ok(storage_text(&value, ty).unwrap_or_default())
}

/// Parses a text literal into a typed value for `ty` (date/time types and uniqueidentifier).
pub fn parse_temporal_text(text: &str, ty: &SqlType) -> Result<Value, SqlError> {
    let t = text.trim();
    match ty {
        SqlType::UniqueIdentifier => parse_guid(t).map(Value::Guid).ok_or_else(|| {
            SqlError::new(
                8169,
                "Conversion failed when converting from a character string to uniqueidentifier.",
            )
        }),
        SqlType::Date => parse_datetime(t)
            .map(|dt| Value::Date(dt.date))
            .ok_or_else(bad_datetime),
        SqlType::Time(_) => parse_time(t).map(Value::Time).ok_or_else(bad_datetime),
        SqlType::DateTimeOffset(_) => parse_offset(t).ok_or_else(bad_datetime),
        _ => parse_datetime(t)
            .map(Value::DateTime2)
            .ok_or_else(bad_datetime),
    }
}

fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_date(s: &str) -> Option<Date> {
    let (y, m, d) = if s.len() == 8 && !s.contains('-') {
        (num(s.get(..4)?)?, num(s.get(4..6)?)?, num(s.get(6..)?)?)
    } else {
        let mut it = s.split('-');
        let y = num(it.next()?)?;
        let m = num(it.next()?)?;
        let d = num(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        (y, m, d)
    };
    let date = Date {
        year: y,
        month: m,
        day: d,
    };
    valid_date(&date).then_some(date)
}

fn valid_date(d: &Date) -> bool {
    let leap = (d.year % 4 == 0 && d.year % 100 != 0) || d.year % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    (1..=9999).contains(&d.year)
        && (1..=12).contains(&d.month)
        && d.day >= 1
        && days
            .get(usize::from(d.month) - 1)
            .is_some_and(|max| d.day <= *max)
}

fn parse_time(s: &str) -> Option<Time> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut it = hms.split(':');
    let hour: u8 = num(it.next()?)?;
    let minute: u8 = num(it.next()?)?;
    let second: u8 = match it.next() {
        Some(x) => num(x)?,
        None => 0,
    };
    if it.next().is_some() || hour > 23 || minute > 59 || second > 59 || frac.len() > 9 {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        num::<u32>(frac)? * 10u32.pow(9 - frac.len() as u32)
    };
    Some(Time {
        hour,
        minute,
        second,
        nanos,
    })
}

fn parse_datetime(s: &str) -> Option<DateTime> {
    let midnight = Time {
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
    };
    match s.split_once([' ', 'T']) {
        Some((d, t)) => Some(DateTime {
            date: parse_date(d)?,
            time: parse_time(t.trim())?,
        }),
        None => Some(DateTime {
            date: parse_date(s)?,
            time: midnight,
        }),
    }
}

fn parse_offset(s: &str) -> Option<Value> {
    let cut = s.rfind(['+', '-']).filter(|i| *i > 10)?;
    let datetime = parse_datetime(s[..cut].trim())?;
    let sign: i16 = if s[cut..].starts_with('-') { -1 } else { 1 };
    let (h, m) = s[cut + 1..].split_once(':')?;
    let minutes = num::<i16>(h)? * 60 + num::<i16>(m)?;
    (minutes <= 14 * 60).then_some(Value::DateTimeOffset {
        datetime,
        offset_minutes: sign * minutes,
    })
}

fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s
        .trim_matches(|c| c == '{' || c == '}')
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn format_time(t: &Time, digits: u8) -> String {
    let base = format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second);
    if digits == 0 {
        return base;
    }
    let frac = format!("{:09}", t.nanos);
    format!("{base}.{}", &frac[..usize::from(digits.min(9))])
}

fn format_date(d: &Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

/// Formats a GUID in canonical upper-case text.
pub fn format_guid(g: &[u8; 16]) -> String {
    let h: String = g.iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The stored text of a temporal or GUID value (fixed 7 fraction digits), None when the value
/// kind does not fit the type.
pub fn storage_text(v: &Value, ty: &SqlType) -> Option<String> {
    let dt_text = |dt: &DateTime| format!("{} {}", format_date(&dt.date), format_time(&dt.time, 7));
    match (v, ty) {
        (Value::Guid(g), SqlType::UniqueIdentifier) => Some(format_guid(g)),
        (Value::Date(d), SqlType::Date) => Some(format_date(d)),
        (Value::DateTime2(dt), SqlType::Date) => Some(format_date(&dt.date)),
        (Value::Time(t), SqlType::Time(_)) => Some(format_time(t, 7)),
        (Value::DateTime2(dt), SqlType::Time(_)) => Some(format_time(&dt.time, 7)),
        (
            Value::DateTimeOffset {
                datetime,
                offset_minutes,
            },
            SqlType::DateTimeOffset(_),
        ) => {
            let sign = if *offset_minutes < 0 { '-' } else { '+' };
            let m = offset_minutes.unsigned_abs();
            Some(format!(
                "{} {sign}{:02}:{:02}",
                dt_text(datetime),
                m / 60,
                m % 60
            ))
        }
        (Value::DateTime2(dt), SqlType::DateTimeOffset(_)) => {
            Some(format!("{} +00:00", dt_text(dt)))
        }
        (Value::DateTimeOffset { datetime, .. }, _) | (Value::DateTime2(datetime), _) => {
            Some(dt_text(datetime))
        }
        (Value::Date(d), _) => Some(format!("{} 00:00:00.0000000", format_date(d))),
        _ => None,
    }
}

/// A parameter or variable value in the form bound to SQLite inside expressions (decimals
/// as REAL, temporal values and GUIDs as their stored text).
pub fn expression_form(v: &Value, ty: &SqlType) -> SqliteValue {
    match v {
        Value::Null => SqliteValue::Null,
        Value::Bool(b) => SqliteValue::Integer(i64::from(*b)),
        Value::Int(i) => SqliteValue::Integer(*i),
        Value::Float(f) => SqliteValue::Real(*f),
        Value::Decimal { value, scale } => SqliteValue::Real(*value as f64 / pow10(*scale) as f64),
        Value::String(s) => SqliteValue::Text(s.clone()),
        Value::Bytes(b) => SqliteValue::Blob(b.clone()),
        Value::Guid(g) => SqliteValue::Text(format_guid(g)),
        other => {
            let target = if matches!(
                ty,
                SqlType::Date | SqlType::Time(_) | SqlType::DateTimeOffset(_)
            ) {
                *ty
            } else {
                default_type_of(other)
            };
            SqliteValue::Text(storage_text(other, &target).unwrap_or_default())
        }
    }
}

/// The type a value has when no declaration says otherwise (SQL Server's parameter defaults).
pub fn default_type_of(v: &Value) -> SqlType {
    match v {
        Value::Null | Value::String(_) => SqlType::NVarChar(Len::N(4000)),
        Value::Bool(_) => SqlType::Bit,
        Value::Int(_) => SqlType::BigInt,
        Value::Float(_) => SqlType::Float { mantissa_bits: 53 },
        Value::Decimal { scale, .. } => SqlType::Decimal {
            precision: 38,
            scale: *scale,
        },
        Value::Bytes(_) => SqlType::VarBinary(Len::Max),
        Value::Date(_) => SqlType::Date,
        Value::Time(_) => SqlType::Time(7),
        Value::DateTime2(_) => SqlType::DateTime2(7),
        Value::DateTimeOffset { .. } => SqlType::DateTimeOffset(7),
        Value::Guid(_) => SqlType::UniqueIdentifier,
    }
}

/// Reads a SQLite value as `ty`. `raw_scaled` says an INTEGER holds value * 10^scale (a
/// stored decimal column read directly) rather than the number itself.
pub fn from_sqlite(v: ValueRef<'_>, ty: &SqlType, raw_scaled: bool) -> Result<Value, SqlError> {
    if let ValueRef::Null = v {
        return Ok(Value::Null);
    }
    match ty.storage() {
        Storage::Integer if *ty == SqlType::Bit => Ok(Value::Bool(to_integer(v, ty)? != 0)),
        Storage::Integer => Ok(Value::Int(to_integer(v, &SqlType::BigInt)?)),
        Storage::Real => Ok(Value::Float(to_real(v)?)),
        Storage::Scaled(scale) => match v {
            ValueRef::Integer(i) if raw_scaled => Ok(Value::Decimal {
                value: i.into(),
                scale,
            }),
            _ => Ok(Value::Decimal {
                value: to_scaled(
                    v,
                    &SqlType::Decimal {
                        precision: 38,
                        scale,
                    },
                    scale,
                )?,
                scale,
            }),
        },
        Storage::Blob => match v {
            ValueRef::Blob(b) => Ok(Value::Bytes(b.to_vec())),
            ValueRef::Text(t) => Ok(Value::Bytes(t.to_vec())),
            other => Err(implicit(source_name(&other), ty)),
        },
        Storage::Text if ty.is_character() => Ok(Value::String(match v {
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            ValueRef::Integer(i) => i.to_string(),
            ValueRef::Real(r) => r.to_string(),
            ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
            ValueRef::Null => String::new(),
        })),
        Storage::Text => match v {
            ValueRef::Text(t) => temporal_value(&String::from_utf8_lossy(t), ty),
            other => Err(implicit(source_name(&other), ty)),
        },
    }
}

fn temporal_value(text: &str, ty: &SqlType) -> Result<Value, SqlError> {
    let v = parse_temporal_text(text, ty)?;
    Ok(match (v, ty) {
        (Value::DateTime2(dt), SqlType::Date) => Value::Date(dt.date),
        (v, _) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_declared_types() {
        assert_eq!(
            SqlType::parse("nvarchar(50)").unwrap(),
            SqlType::NVarChar(Len::N(50))
        );
        assert_eq!(
            SqlType::parse("DECIMAL(10, 2)").unwrap(),
            SqlType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            SqlType::parse("varbinary(MAX)").unwrap(),
            SqlType::VarBinary(Len::Max)
        );
        assert_eq!(SqlType::parse("datetime2").unwrap(), SqlType::DateTime2(7));
        assert_eq!(SqlType::parse("float(24)").unwrap().type_name(), "real");
        assert_eq!(SqlType::parse("bogus").unwrap_err().number, 2715);
        assert!(SqlType::parse("varchar(9000)").is_err());
    }

    #[test]
    fn display_round_trips() {
        for t in [
            "nvarchar(max)",
            "decimal(10,2)",
            "char(11)",
            "datetime2(3)",
            "float",
            "int",
        ] {
            assert_eq!(SqlType::parse(t).unwrap().to_string(), t);
        }
    }

    #[test]
    fn decimal_text_is_exact() {
        assert_eq!(parse_decimal("12.345", 2), Some(1235));
        assert_eq!(parse_decimal("-0.5", 0), Some(-1));
        assert_eq!(parse_decimal("abc", 2), None);
        assert_eq!(format_decimal(-1234, 2), "-12.34");
        assert_eq!(format_decimal(5, 3), "0.005");
    }

    #[test]
    fn store_checks_length_and_pads_char() {
        let ty = SqlType::NVarChar(Len::N(3));
        let err =
            to_storage(ValueRef::Text(b"abcd"), &ty, ConvMode::Store, ("t", "c")).unwrap_err();
        assert_eq!(err.number, 2628);
        let ok = to_storage(
            ValueRef::Text(b"ab"),
            &SqlType::Char(4),
            ConvMode::Store,
            ("t", "c"),
        )
        .unwrap();
        assert_eq!(ok, SqliteValue::Text("ab  ".into()));
        let cut = to_storage(ValueRef::Text(b"abcd"), &ty, ConvMode::Cast, ("t", "c")).unwrap();
        assert_eq!(cut, SqliteValue::Text("abc".into()));
    }

    #[test]
    fn store_checks_numbers() {
        let ty = SqlType::Decimal {
            precision: 4,
            scale: 2,
        };
        let ok = to_storage(ValueRef::Real(12.345), &ty, ConvMode::Store, ("t", "c")).unwrap();
        assert_eq!(ok, SqliteValue::Integer(1235));
        let err = to_storage(ValueRef::Integer(100), &ty, ConvMode::Store, ("t", "c")).unwrap_err();
        assert_eq!(err.number, 8115);
        let err = to_storage(
            ValueRef::Text(b"x"),
            &SqlType::Int,
            ConvMode::Store,
            ("t", "c"),
        )
        .unwrap_err();
        assert_eq!(err.number, 245);
        let err = to_storage(
            ValueRef::Integer(300),
            &SqlType::TinyInt,
            ConvMode::Store,
            ("t", "c"),
        )
        .unwrap_err();
        assert_eq!(err.number, 8115);
    }

    #[test]
    fn temporal_text_is_canonical() {
        let s = to_storage(
            ValueRef::Text(b"2024-02-29T10:11:12.5"),
            &SqlType::DateTime2(7),
            ConvMode::Store,
            ("t", "c"),
        );
        assert_eq!(
            s.unwrap(),
            SqliteValue::Text("2024-02-29 10:11:12.5000000".into())
        );
        let err = to_storage(
            ValueRef::Text(b"2023-02-29"),
            &SqlType::Date,
            ConvMode::Store,
            ("t", "c"),
        )
        .unwrap_err();
        assert_eq!(err.number, 241);
        let v = from_sqlite(ValueRef::Text(b"2024-01-02"), &SqlType::Date, false).unwrap();
        assert_eq!(
            v,
            Value::Date(Date {
                year: 2024,
                month: 1,
                day: 2
            })
        );
    }

    #[test]
    fn guid_text_round_trips() {
        let g = parse_guid("{6f9619ff-8b86-d011-b42d-00c04fc964ff}").unwrap();
        assert_eq!(format_guid(&g), "6F9619FF-8B86-D011-B42D-00C04FC964FF");
    }

    #[test]
    fn value_debug_hides_contents() {
        assert_eq!(
            format!("{:?}", Value::String("secret".into())),
            "Value::String(..)"
        );
    }
}
