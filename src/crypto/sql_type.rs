//! The declared SQL type of an encrypted column: its canonical text (bound into each envelope's
//! associated data) and the size of its values' TDS encodings (for sizing the storage column).
//!
//! Value sizes follow MS-TDS 2.2.5.4.1 (fixed-length types), 2.2.5.5.1.6 (decimal/numeric: a sign
//! byte and a 4/8/12/16-byte magnitude) and 2.2.5.5.1.8 (date and time: time takes 3/4/5 bytes
//! by scale, date 3, offset 2). Character lengths are the declared byte length for char/varchar
//! and two bytes per declared character for nchar/nvarchar (UCS-2 units).

use std::fmt;

use crate::crypto::error::CryptoError;

/// Largest declared length of char, varchar, binary and varbinary (bytes).
pub const MAX_BYTE_LENGTH: u16 = 8000;

/// Largest declared length of nchar and nvarchar (UCS-2 units).
pub const MAX_NCHAR_LENGTH: u16 = 4000;

/// Largest scale of time, datetime2 and datetimeoffset.
pub const MAX_TIME_SCALE: u8 = 7;

/// Largest precision of decimal and numeric.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// Longest type text accepted (`datetimeoffset(7)` is 17 characters).
const MAX_TYPE_TEXT_LEN: usize = 64;

/// A declared length: a count, or `max` (stored out of row, up to 2^31-1 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Length {
    Fixed(u16),
    Max,
}

/// An encryptable SQL Server column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SqlType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    Decimal { precision: u8, scale: u8 },
    Real,
    Float,
    SmallMoney,
    Money,
    Char(u16),
    VarChar(Length),
    NChar(u16),
    NVarChar(Length),
    Binary(u16),
    VarBinary(Length),
    Date,
    Time(u8),
    SmallDateTime,
    DateTime,
    DateTime2(u8),
    DateTimeOffset(u8),
    UniqueIdentifier,
}

impl SqlType {
    /// Parse a type as written in T-SQL or proxy.toml: case-insensitive, whitespace ignored,
    /// optional brackets around the name. Synonyms and omitted arguments take SQL Server's
    /// meaning: `numeric` is `decimal`, `integer` is `int`, `decimal` is `decimal(18,0)`,
    /// `varchar` is `varchar(1)`, `time` is `time(7)`, `float(1..24)` is `real`.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        if text.len() > MAX_TYPE_TEXT_LEN {
            return Err(type_error("type text is too long"));
        }
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect();

        let (name, arguments) = split_arguments(&compact)?;
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        from_parts(name, &arguments)
    }

    /// Length in bytes of the largest TDS value encoding of this type (without the TDS length
    /// prefix); `None` for `(max)` types.
    pub fn max_value_len(&self) -> Option<usize> {
        let bytes = match *self {
            Self::TinyInt | Self::Bit => 1,
            Self::SmallInt => 2,
            Self::Int | Self::Real | Self::SmallMoney | Self::SmallDateTime => 4,
            Self::BigInt | Self::Float | Self::Money | Self::DateTime => 8,
            Self::Decimal { precision, .. } => decimal_len(precision),
            Self::Char(n) | Self::Binary(n) => usize::from(n),
            Self::NChar(n) => 2 * usize::from(n),
            Self::VarChar(length) | Self::VarBinary(length) => usize::from(fixed(length)?),
            Self::NVarChar(length) => 2 * usize::from(fixed(length)?),
            Self::Date => 3,
            Self::Time(scale) => time_len(scale),
            Self::DateTime2(scale) => time_len(scale) + 3,
            Self::DateTimeOffset(scale) => time_len(scale) + 5,
            Self::UniqueIdentifier => 16,
        };
        Some(bytes)
    }
}

impl fmt::Display for SqlType {
    /// The canonical type text bound into associated data, e.g. `nvarchar(50)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TinyInt => f.write_str("tinyint"),
            Self::SmallInt => f.write_str("smallint"),
            Self::Int => f.write_str("int"),
            Self::BigInt => f.write_str("bigint"),
            Self::Bit => f.write_str("bit"),
            Self::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            Self::Real => f.write_str("real"),
            Self::Float => f.write_str("float"),
            Self::SmallMoney => f.write_str("smallmoney"),
            Self::Money => f.write_str("money"),
            Self::Char(n) => write!(f, "char({n})"),
            Self::VarChar(length) => write!(f, "varchar({length})"),
            Self::NChar(n) => write!(f, "nchar({n})"),
            Self::NVarChar(length) => write!(f, "nvarchar({length})"),
            Self::Binary(n) => write!(f, "binary({n})"),
            Self::VarBinary(length) => write!(f, "varbinary({length})"),
            Self::Date => f.write_str("date"),
            Self::Time(scale) => write!(f, "time({scale})"),
            Self::SmallDateTime => f.write_str("smalldatetime"),
            Self::DateTime => f.write_str("datetime"),
            Self::DateTime2(scale) => write!(f, "datetime2({scale})"),
            Self::DateTimeOffset(scale) => write!(f, "datetimeoffset({scale})"),
            Self::UniqueIdentifier => f.write_str("uniqueidentifier"),
        }
    }
}

impl fmt::Display for Length {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Max => f.write_str("max"),
        }
    }
}

fn from_parts(name: &str, arguments: &[&str]) -> Result<SqlType, CryptoError> {
    let plain = |t: SqlType| match arguments {
        [] => Ok(t),
        _ => Err(type_error("this type takes no arguments")),
    };

    match name {
        "tinyint" => plain(SqlType::TinyInt),
        "smallint" => plain(SqlType::SmallInt),
        "int" | "integer" => plain(SqlType::Int),
        "bigint" => plain(SqlType::BigInt),
        "bit" => plain(SqlType::Bit),
        "decimal" | "numeric" | "dec" => decimal(arguments),
        "real" => plain(SqlType::Real),
        "float" => float(arguments),
        "smallmoney" => plain(SqlType::SmallMoney),
        "money" => plain(SqlType::Money),
        "char" | "character" => Ok(SqlType::Char(length(arguments, MAX_BYTE_LENGTH, false)?.0)),
        "varchar" => Ok(SqlType::VarChar(
            length(arguments, MAX_BYTE_LENGTH, true)?.1,
        )),
        "nchar" => Ok(SqlType::NChar(
            length(arguments, MAX_NCHAR_LENGTH, false)?.0,
        )),
        "nvarchar" => Ok(SqlType::NVarChar(
            length(arguments, MAX_NCHAR_LENGTH, true)?.1,
        )),
        "binary" => Ok(SqlType::Binary(
            length(arguments, MAX_BYTE_LENGTH, false)?.0,
        )),
        "varbinary" => Ok(SqlType::VarBinary(
            length(arguments, MAX_BYTE_LENGTH, true)?.1,
        )),
        "date" => plain(SqlType::Date),
        "time" => Ok(SqlType::Time(scale(arguments)?)),
        "smalldatetime" => plain(SqlType::SmallDateTime),
        "datetime" => plain(SqlType::DateTime),
        "datetime2" => Ok(SqlType::DateTime2(scale(arguments)?)),
        "datetimeoffset" => Ok(SqlType::DateTimeOffset(scale(arguments)?)),
        "uniqueidentifier" => plain(SqlType::UniqueIdentifier),
        _ => Err(type_error("unknown or not encryptable type name")),
    }
}

/// `name(a,b)` into `name` and `[a, b]`; `name` alone into `name` and `[]`.
fn split_arguments(text: &str) -> Result<(&str, Vec<&str>), CryptoError> {
    let Some((name, rest)) = text.split_once('(') else {
        return Ok((text, Vec::new()));
    };
    let inner = rest
        .strip_suffix(')')
        .ok_or(type_error("unbalanced parentheses"))?;
    if inner.contains(['(', ')']) {
        return Err(type_error("unbalanced parentheses"));
    }
    Ok((name, inner.split(',').collect()))
}

fn number(text: &str) -> Result<u16, CryptoError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(type_error("argument is not a number"));
    }
    text.parse()
        .map_err(|_| type_error("argument is too large"))
}

/// A declared length; the first value is the count for fixed types, the second the `Length`.
fn length(arguments: &[&str], limit: u16, allow_max: bool) -> Result<(u16, Length), CryptoError> {
    match arguments {
        [] => Ok((1, Length::Fixed(1))),
        ["max"] if allow_max => Ok((0, Length::Max)),
        [n] => match number(n)? {
            n @ 1.. if n <= limit => Ok((n, Length::Fixed(n))),
            _ => Err(type_error("length is out of range")),
        },
        _ => Err(type_error("a length takes one argument")),
    }
}

fn scale(arguments: &[&str]) -> Result<u8, CryptoError> {
    match arguments {
        [] => Ok(MAX_TIME_SCALE),
        [n] => match number(n)? {
            n @ 0..=7 => Ok(n as u8),
            _ => Err(type_error("scale must be 0 to 7")),
        },
        _ => Err(type_error("a scale takes one argument")),
    }
}

fn decimal(arguments: &[&str]) -> Result<SqlType, CryptoError> {
    let (precision, scale) = match arguments {
        [] => (18, 0),
        [p] => (number(p)?, 0),
        [p, s] => (number(p)?, number(s)?),
        _ => return Err(type_error("decimal takes precision and scale")),
    };
    if !(1..=u16::from(MAX_DECIMAL_PRECISION)).contains(&precision) || scale > precision {
        return Err(type_error(
            "decimal precision must be 1 to 38 and scale 0 to precision",
        ));
    }
    Ok(SqlType::Decimal {
        precision: precision as u8,
        scale: scale as u8,
    })
}

/// `float(n)`: n of 1 to 24 is `real`, 25 to 53 is `float` (8 bytes).
fn float(arguments: &[&str]) -> Result<SqlType, CryptoError> {
    match arguments {
        [] => Ok(SqlType::Float),
        [n] => match number(n)? {
            1..=24 => Ok(SqlType::Real),
            25..=53 => Ok(SqlType::Float),
            _ => Err(type_error("float precision must be 1 to 53")),
        },
        _ => Err(type_error("float takes one argument")),
    }
}

fn fixed(length: Length) -> Option<u16> {
    match length {
        Length::Fixed(n) => Some(n),
        Length::Max => None,
    }
}

/// MS-TDS 2.2.5.5.1.6: sign byte plus a 4, 8, 12 or 16-byte magnitude by precision.
fn decimal_len(precision: u8) -> usize {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

/// MS-TDS 2.2.5.5.1.8: time of day in 3, 4 or 5 bytes by scale.
fn time_len(scale: u8) -> usize {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

fn type_error(reason: &'static str) -> CryptoError {
    CryptoError::SqlType { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        SqlType::parse(text).unwrap().to_string()
    }

    #[test]
    fn canonical_text_folds_case_space_brackets_and_synonyms() {
        assert_eq!(canonical("NVARCHAR ( 50 )"), "nvarchar(50)");
        assert_eq!(canonical("[nvarchar](MAX)"), "nvarchar(max)");
        assert_eq!(canonical("Numeric(10, 2)"), "decimal(10,2)");
        assert_eq!(canonical("decimal"), "decimal(18,0)");
        assert_eq!(canonical("decimal(5)"), "decimal(5,0)");
        assert_eq!(canonical("integer"), "int");
        assert_eq!(canonical("varchar"), "varchar(1)");
        assert_eq!(canonical("datetime2"), "datetime2(7)");
        assert_eq!(canonical("time(0)"), "time(0)");
        assert_eq!(canonical("float(24)"), "real");
        assert_eq!(canonical("float(53)"), "float");
        assert_eq!(canonical("UniqueIdentifier"), "uniqueidentifier");
    }

    #[test]
    fn canonical_text_parses_back_to_the_same_type() {
        for text in [
            "decimal(38,38)",
            "varbinary(max)",
            "char(8000)",
            "datetimeoffset(3)",
        ] {
            let parsed = SqlType::parse(text).unwrap();
            assert_eq!(SqlType::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }

    #[test]
    fn rejects_bad_types() {
        for text in [
            "text",
            "xml",
            "nvarchar(4001)",
            "varchar(0)",
            "char(max)",
            "decimal(39,0)",
            "decimal(5,6)",
            "time(8)",
            "int(4)",
            "nvarchar(50",
            "nvarchar((50))",
            "float(54)",
            "varchar(-1)",
            "",
        ] {
            assert!(SqlType::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn value_sizes_follow_the_tds_encodings() {
        let size = |text: &str| SqlType::parse(text).unwrap().max_value_len();
        assert_eq!(size("int"), Some(4));
        assert_eq!(size("bigint"), Some(8));
        assert_eq!(size("decimal(9,2)"), Some(5));
        assert_eq!(size("decimal(10,2)"), Some(9));
        assert_eq!(size("decimal(28,2)"), Some(13));
        assert_eq!(size("decimal(38,2)"), Some(17));
        assert_eq!(size("nvarchar(50)"), Some(100));
        assert_eq!(size("nvarchar(max)"), None);
        assert_eq!(size("time(2)"), Some(3));
        assert_eq!(size("time(4)"), Some(4));
        assert_eq!(size("datetime2(7)"), Some(8));
        assert_eq!(size("datetimeoffset(0)"), Some(8));
        assert_eq!(size("datetimeoffset(7)"), Some(10));
        assert_eq!(size("uniqueidentifier"), Some(16));
    }
}
