//! Values arrive in whatever type the driver chose; this module converts
//! them to the mapped column's declared type the way SQL Server converts
//! implicitly on assignment and comparison, enforces the length and
//! precision the server can no longer check, puts deterministic values in a
//! canonical form and produces the plaintext that is sealed: the value's
//! TDS encoding in the declared type ([MS-TDS] 2.2.5.5.1 "System Data Type
//! Values"), without framing.
//!
//! Departures from SQL Server, on purpose:
//! - Strings that a non-Unicode column's code page cannot hold are refused
//!   (the server would store `?`).
//! - Date and time strings are accepted in the ISO forms only
//!   (`yyyy-mm-dd`, `yyyymmdd`, `yyyy-mm-dd[T ]hh:mm[:ss[.fffffff]]`, with
//!   `Z` or `+hh:mm` for datetimeoffset); forms that depend on SET DATEFORMAT
//!   or the language are refused.
//! - Deterministic `varchar`/`nvarchar` values are stored without trailing
//!   spaces, so that `'a'` and `'a  '` compare equal as the server would
//!   compare them. Case and accent insensitivity of the collation are NOT
//!   kept: deterministic encryption compares bytes, so `'Smith'` and
//!   `'SMITH'` are different values (docs/ERRORS.md, 50104 notes).

use std::borrow::Cow;

use crate::rewrite::column_map::{PlainType, StringKind};
use crate::rewrite::error::{Refusal, RefusalKind};
use crate::tds::types::datetime::{
    civil_from_days, days_from_civil, Civil, Date, DateTime, DateTime2, DateTimeOffset,
    SmallDateTime, Time,
};
use crate::tds::types::{decode_value, encode_value, Collation, RawValue, SqlValue, TypeInfo};
use crate::tds::Reader;

const NANOS_PER_DAY: i128 = 86_400 * 1_000_000_000;

/// Converts `v` to the column's plaintext type. NULL stays NULL.
pub fn to_column(
    v: &SqlValue,
    plain: &PlainType,
    collation: Collation,
    column: &str,
) -> Result<SqlValue, Refusal> {
    if *v == SqlValue::Null {
        return Ok(SqlValue::Null);
    }
    let cx = Cx { column, collation };
    match *plain {
        PlainType::String { kind, len } => cx.string(v, kind, len),
        PlainType::Binary { fixed, len } => cx.binary(v, fixed, len),
        PlainType::TinyInt => cx.integer(v, 0, 255).map(|i| SqlValue::TinyInt(i as u8)),
        PlainType::SmallInt => cx
            .integer(v, i16::MIN.into(), i16::MAX.into())
            .map(|i| SqlValue::SmallInt(i as i16)),
        PlainType::Int => cx
            .integer(v, i32::MIN.into(), i32::MAX.into())
            .map(|i| SqlValue::Int(i as i32)),
        PlainType::BigInt => cx
            .integer(v, i64::MIN.into(), i64::MAX.into())
            .map(|i| SqlValue::BigInt(i as i64)),
        PlainType::Bit => cx.bit(v),
        PlainType::Decimal { precision, scale } => cx.decimal(v, precision, scale),
        PlainType::Money => cx
            .decimal(v, 19, 4)
            .map(|d| SqlValue::Money(decimal_value(&d) as i64)),
        PlainType::SmallMoney => cx.decimal(v, 10, 4).and_then(|d| cx.small_money(&d)),
        PlainType::Real => cx.float(v).map(|f| SqlValue::Real(f as f32)),
        PlainType::Float => cx.float(v).map(SqlValue::Float),
        PlainType::UniqueIdentifier => cx.guid(v),
        _ => cx.temporal(v, plain),
    }
}

/// The canonical form of a converted value for deterministic sealing.
pub fn canonical(v: SqlValue, plain: &PlainType) -> SqlValue {
    match (v, plain) {
        (SqlValue::VarChar { bytes, collation }, _) => SqlValue::VarChar {
            bytes: trim_trailing(&bytes, b' ').to_vec(),
            collation,
        },
        (SqlValue::NVarChar(s), _) => SqlValue::NVarChar(s.trim_end_matches(' ').to_string()),
        (SqlValue::Float(f), _) => SqlValue::Float(if f == 0.0 { 0.0 } else { f }),
        (SqlValue::Real(f), _) => SqlValue::Real(if f == 0.0 { 0.0 } else { f }),
        (v, _) => v,
    }
}

/// The plaintext that is sealed: `v`'s data bytes in type `ti`.
pub fn plain_bytes(ti: &TypeInfo, v: &SqlValue) -> Result<Vec<u8>, Refusal> {
    let mut framed = Vec::new();
    encode_value(ti, v, &mut framed)
        .map_err(|_| internal("the value does not encode in its type"))?;
    let mut r = Reader::new(&framed, "plaintext");
    let raw = crate::tds::types::decode_value_raw(ti, &mut r)
        .map_err(|_| internal("the encoded value does not decode"))?;
    Ok(raw.data().map(<[u8]>::to_vec).unwrap_or_default())
}

/// The typed value of opened plaintext bytes of type `ti`.
pub fn from_plain_bytes(ti: &TypeInfo, bytes: &[u8]) -> Option<SqlValue> {
    let raw = RawValue::from_parts(&[], Some(Cow::Borrowed(bytes)));
    decode_value(ti, &raw).ok()
}

fn internal(reason: &str) -> Refusal {
    Refusal::new(RefusalKind::Encrypt, format!("cannot encrypt: {reason}"))
}

fn trim_trailing(b: &[u8], pad: u8) -> &[u8] {
    let end = b.iter().rposition(|c| *c != pad).map_or(0, |i| i + 1);
    &b[..end]
}

/// The scaled integer of a decimal value.
fn decimal_value(v: &SqlValue) -> i128 {
    match v {
        SqlValue::Decimal { value, .. } => *value,
        _ => 0,
    }
}

struct Cx<'a> {
    column: &'a str,
    collation: Collation,
}

impl Cx<'_> {
    fn refuse(&self, from: &str, to: &str) -> Refusal {
        Refusal::new(
            RefusalKind::Conversion,
            format!(
                "implicit conversion from {from} to {to} is not allowed for {}",
                self.column
            ),
        )
    }

    fn truncation(&self) -> Refusal {
        Refusal::new(
            RefusalKind::Truncation,
            format!(
                "string or binary data would be truncated in {}",
                self.column
            ),
        )
    }

    fn overflow(&self, to: &str) -> Refusal {
        Refusal::new(
            RefusalKind::Overflow,
            format!(
                "arithmetic overflow converting a value to {to} for {}",
                self.column
            ),
        )
    }

    fn string(
        &self,
        v: &SqlValue,
        kind: StringKind,
        len: Option<u16>,
    ) -> Result<SqlValue, Refusal> {
        let text = self
            .text_of(v)
            .ok_or_else(|| self.refuse(kind_of(v), "a character type"))?;
        let text = match kind.is_unicode() {
            true => self.fit_units(text, kind, len)?,
            false => return self.fit_bytes(&text, kind, len),
        };
        Ok(match kind {
            StringKind::NChar => SqlValue::NChar(text),
            _ => SqlValue::NVarChar(text),
        })
    }

    /// The text of a character value, or of a number or GUID (which SQL
    /// Server converts to character types implicitly).
    fn text_of(&self, v: &SqlValue) -> Option<String> {
        if let Some(t) = v.text() {
            return Some(t);
        }
        Some(match v {
            SqlValue::TinyInt(i) => i.to_string(),
            SqlValue::SmallInt(i) => i.to_string(),
            SqlValue::Int(i) => i.to_string(),
            SqlValue::BigInt(i) => i.to_string(),
            SqlValue::Bit(b) => u8::from(*b).to_string(),
            SqlValue::Decimal { value, scale, .. } => decimal_text(*value, *scale),
            SqlValue::Guid(g) => crate::tds::types::value::guid_to_string(g).to_uppercase(),
            _ => return None,
        })
    }

    fn fit_units(
        &self,
        text: String,
        kind: StringKind,
        len: Option<u16>,
    ) -> Result<String, Refusal> {
        let Some(n) = len.map(usize::from) else {
            return Ok(text);
        };
        let mut units: Vec<u16> = text.encode_utf16().collect();
        if units.len() > n {
            if units[n..].iter().any(|u| *u != u16::from(b' ')) {
                return Err(self.truncation());
            }
            units.truncate(n);
        }
        if kind.is_fixed() {
            units.resize(n, u16::from(b' '));
        }
        String::from_utf16(&units).map_err(|_| self.truncation())
    }

    fn fit_bytes(
        &self,
        text: &str,
        kind: StringKind,
        len: Option<u16>,
    ) -> Result<SqlValue, Refusal> {
        let encoded = SqlValue::varchar_from_text(text, self.collation)
            .ok_or_else(|| self.refuse("text outside the column's code page", "varchar"))?;
        let SqlValue::VarChar {
            mut bytes,
            collation,
        } = encoded
        else {
            return Err(self.refuse("text", "varchar"));
        };
        if let Some(n) = len.map(usize::from) {
            if bytes.len() > n {
                if bytes[n..].iter().any(|b| *b != b' ') {
                    return Err(self.truncation());
                }
                bytes.truncate(n);
            }
            if kind.is_fixed() {
                bytes.resize(n, b' ');
            }
        }
        Ok(match kind {
            StringKind::Char => SqlValue::Char { bytes, collation },
            _ => SqlValue::VarChar { bytes, collation },
        })
    }

    fn binary(&self, v: &SqlValue, fixed: bool, len: Option<u16>) -> Result<SqlValue, Refusal> {
        let mut bytes = match v {
            SqlValue::Binary(b) | SqlValue::VarBinary(b) => b.clone(),
            other => return Err(self.refuse(kind_of(other), "a binary type")),
        };
        if let Some(n) = len.map(usize::from) {
            if bytes.len() > n {
                return Err(self.truncation());
            }
            if fixed {
                bytes.resize(n, 0);
            }
        }
        Ok(if fixed {
            SqlValue::Binary(bytes)
        } else {
            SqlValue::VarBinary(bytes)
        })
    }

    fn integer(&self, v: &SqlValue, min: i128, max: i128) -> Result<i128, Refusal> {
        let i = match v {
            SqlValue::Bit(b) => i128::from(*b),
            SqlValue::TinyInt(i) => i128::from(*i),
            SqlValue::SmallInt(i) => i128::from(*i),
            SqlValue::Int(i) => i128::from(*i),
            SqlValue::BigInt(i) => i128::from(*i),
            // Decimal to integer truncates the fraction, as SQL Server does.
            SqlValue::Decimal { value, scale, .. } => value / 10i128.pow(u32::from(*scale)),
            SqlValue::Money(m) => i128::from(*m) / 10_000,
            SqlValue::SmallMoney(m) => i128::from(*m) / 10_000,
            SqlValue::Float(f) => {
                float_to_int(*f).ok_or_else(|| self.overflow("an integer type"))?
            }
            SqlValue::Real(f) => {
                float_to_int(f64::from(*f)).ok_or_else(|| self.overflow("an integer type"))?
            }
            other => {
                let t = self
                    .text_of(other)
                    .ok_or_else(|| self.refuse(kind_of(other), "an integer type"))?;
                t.trim().parse::<i128>().map_err(|_| {
                    self.refuse("a string that is not an integer", "an integer type")
                })?
            }
        };
        if i < min || i > max {
            return Err(self.overflow("an integer type"));
        }
        Ok(i)
    }

    fn bit(&self, v: &SqlValue) -> Result<SqlValue, Refusal> {
        if let Some(t) = v.text() {
            return match t.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(SqlValue::Bit(true)),
                "false" | "0" => Ok(SqlValue::Bit(false)),
                _ => Err(self.refuse("a string that is not a bit", "bit")),
            };
        }
        self.integer(v, i128::MIN, i128::MAX)
            .map(|i| SqlValue::Bit(i != 0))
    }

    fn decimal(&self, v: &SqlValue, precision: u8, scale: u8) -> Result<SqlValue, Refusal> {
        let (value, from_scale) = match v {
            SqlValue::Decimal { value, scale, .. } => (*value, *scale),
            SqlValue::Money(m) => (i128::from(*m), 4),
            SqlValue::SmallMoney(m) => (i128::from(*m), 4),
            SqlValue::Float(f) => return self.decimal_from_float(*f, precision, scale),
            SqlValue::Real(f) => return self.decimal_from_float(f64::from(*f), precision, scale),
            other => match self.text_of(other) {
                Some(t) if other.text().is_some() => parse_decimal_text(&t)
                    .ok_or_else(|| self.refuse("a string that is not a number", "decimal"))?,
                _ => (self.integer(other, i128::MIN, i128::MAX)?, 0),
            },
        };
        let scaled = rescale(value, from_scale, scale).ok_or_else(|| self.overflow("decimal"))?;
        if digits(scaled) > u32::from(precision) {
            return Err(self.overflow(&format!("decimal({precision},{scale})")));
        }
        Ok(SqlValue::Decimal {
            value: scaled,
            precision,
            scale,
        })
    }

    fn decimal_from_float(&self, f: f64, precision: u8, scale: u8) -> Result<SqlValue, Refusal> {
        let scaled = (f * 10f64.powi(i32::from(scale))).round();
        if !scaled.is_finite() || scaled.abs() >= 1e38 {
            return Err(self.overflow("decimal"));
        }
        let v = SqlValue::Decimal {
            value: scaled as i128,
            precision: 38,
            scale,
        };
        self.decimal(&v, precision, scale)
    }

    fn small_money(&self, d: &SqlValue) -> Result<SqlValue, Refusal> {
        i32::try_from(decimal_value(d))
            .map(SqlValue::SmallMoney)
            .map_err(|_| self.overflow("smallmoney"))
    }

    fn float(&self, v: &SqlValue) -> Result<f64, Refusal> {
        Ok(match v {
            SqlValue::Float(f) => *f,
            SqlValue::Real(f) => f64::from(*f),
            SqlValue::Decimal { value, scale, .. } => *value as f64 / 10f64.powi(i32::from(*scale)),
            SqlValue::Money(m) => *m as f64 / 1e4,
            SqlValue::SmallMoney(m) => f64::from(*m) / 1e4,
            other if other.text().is_some() => other
                .text()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .filter(|f| f.is_finite())
                .ok_or_else(|| self.refuse("a string that is not a number", "float"))?,
            other => self.integer(other, i128::MIN, i128::MAX)? as f64,
        })
    }

    fn guid(&self, v: &SqlValue) -> Result<SqlValue, Refusal> {
        match v {
            SqlValue::Guid(g) => Ok(SqlValue::Guid(*g)),
            other => other
                .text()
                .and_then(|t| parse_guid(&t))
                .map(SqlValue::Guid)
                .ok_or_else(|| self.refuse(kind_of(other), "uniqueidentifier")),
        }
    }

    fn temporal(&self, v: &SqlValue, plain: &PlainType) -> Result<SqlValue, Refusal> {
        let target = plain.canonical();
        let (civil, offset) = self
            .civil_of(v, plain)
            .ok_or_else(|| self.refuse(kind_of(v), &target))?;
        let out = match *plain {
            PlainType::Date => {
                Date::from_ymd(civil.year, civil.month, civil.day).map(SqlValue::Date)
            }
            PlainType::Time { scale } => round_civil(&civil, scale, true)
                .and_then(|c| Time::from_hms_nanos(c.hour, c.minute, c.second, c.nanosecond, scale))
                .map(SqlValue::Time),
            PlainType::DateTime2 { scale } => round_civil(&civil, scale, false)
                .and_then(|c| DateTime2::from_civil(&c, scale))
                .map(SqlValue::DateTime2),
            PlainType::DateTimeOffset { scale } => round_civil(&civil, scale, false)
                .and_then(|c| DateTimeOffset::from_local_civil(&c, offset.unwrap_or(0), scale))
                .map(SqlValue::DateTimeOffset),
            PlainType::DateTime => DateTime::from_civil(&civil)
                .filter(|d| d.days >= -53_690)
                .map(SqlValue::DateTime),
            PlainType::SmallDateTime => round_to_minute(&civil)
                .and_then(|c| SmallDateTime::from_civil(&c))
                .map(SqlValue::SmallDateTime),
            _ => None,
        };
        out.ok_or_else(|| self.overflow(&target))
    }

    /// A calendar value and, for datetimeoffset, its offset in minutes.
    fn civil_of(&self, v: &SqlValue, plain: &PlainType) -> Option<(Civil, Option<i16>)> {
        let civil = match v {
            SqlValue::Date(d) => with_time(d.ymd(), (0, 0, 0, 0)),
            SqlValue::Time(t) if matches!(plain, PlainType::Time { .. }) => {
                with_time((1900, 1, 1), t.hms_nanos())
            }
            SqlValue::DateTime(d) => d.to_civil(),
            SqlValue::SmallDateTime(d) => d.to_civil(),
            SqlValue::DateTime2(d) => d.to_civil(),
            SqlValue::DateTimeOffset(d) => {
                return Some((d.to_local_civil()?, Some(d.offset_minutes)))
            }
            other => return parse_iso(&other.text()?, plain),
        };
        // Time-only targets take the time part; date-only values have
        // midnight, as SQL Server converts date to datetime2.
        Some((civil, None))
    }
}

fn kind_of(v: &SqlValue) -> &'static str {
    match v {
        SqlValue::Char { .. } | SqlValue::VarChar { .. } => "varchar",
        SqlValue::NChar(_) | SqlValue::NVarChar(_) => "nvarchar",
        SqlValue::Binary(_) | SqlValue::VarBinary(_) => "varbinary",
        SqlValue::Date(_) => "date",
        SqlValue::Time(_) => "time",
        SqlValue::DateTime(_) | SqlValue::SmallDateTime(_) => "datetime",
        SqlValue::DateTime2(_) => "datetime2",
        SqlValue::DateTimeOffset(_) => "datetimeoffset",
        SqlValue::Guid(_) => "uniqueidentifier",
        SqlValue::Raw(_) => "a type without a typed form",
        SqlValue::Float(_) | SqlValue::Real(_) => "float",
        _ => "a numeric type",
    }
}

fn with_time(ymd: (i32, u8, u8), hms: (u8, u8, u8, u32)) -> Civil {
    Civil {
        year: ymd.0,
        month: ymd.1,
        day: ymd.2,
        hour: hms.0,
        minute: hms.1,
        second: hms.2,
        nanosecond: hms.3,
    }
}

/// Rounds to `scale` fractional digits as SQL Server does on conversion;
/// a carry past midnight moves to the next day (or wraps for `time`).
fn round_civil(c: &Civil, scale: u8, wrap: bool) -> Option<Civil> {
    let unit = 10i128.pow(9 - u32::from(scale.min(7)));
    let day = i128::from(days_from_civil(c.year, c.month, c.day)?);
    let nanos = (i128::from(c.hour) * 3600 + i128::from(c.minute) * 60 + i128::from(c.second))
        * 1_000_000_000
        + i128::from(c.nanosecond);
    let rounded = (nanos + unit / 2) / unit * unit;
    let (day, nanos) = match (rounded >= NANOS_PER_DAY, wrap) {
        (true, true) => (day, rounded - NANOS_PER_DAY),
        (true, false) => (day + 1, rounded - NANOS_PER_DAY),
        _ => (day, rounded),
    };
    let secs = nanos / 1_000_000_000;
    Some(with_time(
        civil_from_days(i64::try_from(day).ok()?),
        (
            (secs / 3600) as u8,
            (secs / 60 % 60) as u8,
            (secs % 60) as u8,
            (nanos % 1_000_000_000) as u32,
        ),
    ))
}

/// smalldatetime rounds to the minute (29.998 s down, 29.999 s up).
fn round_to_minute(c: &Civil) -> Option<Civil> {
    let up = c.second >= 30 || (c.second == 29 && c.nanosecond >= 999_000_000);
    if !up {
        return Some(Civil {
            second: 0,
            nanosecond: 0,
            ..*c
        });
    }
    round_civil(
        &Civil {
            minute: c.minute,
            second: 59,
            nanosecond: 999_999_999,
            ..*c
        },
        0,
        false,
    )
}

fn float_to_int(f: f64) -> Option<i128> {
    (f.is_finite() && f.abs() < 1e38).then_some(f.trunc() as i128)
}

fn rescale(value: i128, from: u8, to: u8) -> Option<i128> {
    if to >= from {
        return value.checked_mul(10i128.checked_pow(u32::from(to - from))?);
    }
    // SQL Server rounds half away from zero when the scale shrinks.
    let div = 10i128.pow(u32::from(from - to));
    let q = value / div;
    let r = value % div;
    Some(if r.abs() * 2 >= div {
        q + value.signum()
    } else {
        q
    })
}

fn digits(v: i128) -> u32 {
    let mut n = v.unsigned_abs();
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn decimal_text(value: i128, scale: u8) -> String {
    if scale == 0 {
        return value.to_string();
    }
    let div = 10i128.pow(u32::from(scale));
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    let div = div.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / div,
        abs % div,
        width = usize::from(scale)
    )
}

/// `[-+]digits[.digits]` → (scaled value, scale). Exponents are refused.
pub fn parse_decimal_text(t: &str) -> Option<(i128, u8)> {
    let t = t.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let all = format!("{int}{frac}");
    if all.is_empty() || !all.bytes().all(|b| b.is_ascii_digit()) || all.len() > 38 {
        return None;
    }
    let v: i128 = all.parse().ok()?;
    Some((if neg { -v } else { v }, u8::try_from(frac.len()).ok()?))
}

fn parse_guid(t: &str) -> Option<[u8; 16]> {
    let t = t.trim().trim_start_matches('{').trim_end_matches('}');
    let hex: String = t.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || t.len() != 36 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    // Wire order: the first three groups little-endian.
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

/// ISO date/time text; see the module notes for the forms accepted.
fn parse_iso(t: &str, plain: &PlainType) -> Option<(Civil, Option<i16>)> {
    let t = t.trim();
    if let PlainType::Time { .. } = plain {
        if !t.contains('-') {
            return Some((parse_time(t, (1900, 1, 1))?, None));
        }
    }
    let (date, rest) = split_date(t)?;
    let (time_text, offset) = split_offset(rest.trim_start_matches(['T', ' ']))?;
    let civil = match time_text.is_empty() {
        true => with_time(date, (0, 0, 0, 0)),
        false => parse_time(time_text, date)?,
    };
    days_from_civil(civil.year, civil.month, civil.day)?;
    Some((civil, offset))
}

fn split_date(t: &str) -> Option<((i32, u8, u8), &str)> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<u16>().ok();
    if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        let ymd = (
            i32::from(num(0..4)?),
            u8::try_from(num(5..7)?).ok()?,
            u8::try_from(num(8..10)?).ok()?,
        );
        return Some((ymd, t.get(10..)?));
    }
    if b.len() >= 8 && b[..8].iter().all(u8::is_ascii_digit) {
        let ymd = (
            i32::from(num(0..4)?),
            u8::try_from(num(4..6)?).ok()?,
            u8::try_from(num(6..8)?).ok()?,
        );
        return Some((ymd, t.get(8..)?));
    }
    None
}

fn split_offset(t: &str) -> Option<(&str, Option<i16>)> {
    if let Some(rest) = t.strip_suffix('Z') {
        return Some((rest.trim_end(), Some(0)));
    }
    let Some(i) = t.rfind(['+', '-']) else {
        return Some((t, None));
    };
    let (hh, mm) = t[i + 1..].split_once(':')?;
    let minutes = hh.parse::<i16>().ok()? * 60 + mm.parse::<i16>().ok()?;
    if minutes > 14 * 60 {
        return None;
    }
    let sign = if t.as_bytes()[i] == b'-' { -1 } else { 1 };
    Some((t[..i].trim_end(), Some(sign * minutes)))
}

fn parse_time(t: &str, date: (i32, u8, u8)) -> Option<Civil> {
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    let (h, m, s) = match parts.as_slice() {
        [h, m] => (h.parse().ok()?, m.parse().ok()?, 0),
        [h, m, s] => (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?),
        _ => return None,
    };
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) || h > 23 || m > 59 || s > 59 {
        return None;
    }
    let nanos = format!("{frac:0<9}").parse().ok()?;
    Some(with_time(date, (h, m, s, nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::column_map::DEFAULT_COLLATION;

    fn conv(v: SqlValue, ty: &str) -> Result<SqlValue, Refusal> {
        to_column(
            &v,
            &PlainType::parse(ty).unwrap(),
            DEFAULT_COLLATION,
            "dbo.t.c",
        )
    }

    fn varchar(s: &str) -> SqlValue {
        SqlValue::varchar_from_text(s, DEFAULT_COLLATION).unwrap()
    }

    #[test]
    fn strings_pad_truncate_and_refuse() {
        let v = conv(varchar("ab"), "char(4)").unwrap();
        assert_eq!(v.text().unwrap(), "ab  ");
        assert_eq!(
            conv(varchar("abc  "), "varchar(3)")
                .unwrap()
                .text()
                .unwrap(),
            "abc"
        );
        assert_eq!(
            conv(varchar("abcd"), "varchar(3)").unwrap_err().number(),
            50111
        );
        assert_eq!(
            conv(SqlValue::NVarChar("ab".into()), "nvarchar(2)").unwrap(),
            SqlValue::NVarChar("ab".into())
        );
        assert_eq!(
            conv(varchar("x"), "nvarchar(5)").unwrap(),
            SqlValue::NVarChar("x".into())
        );
        assert_eq!(
            conv(SqlValue::NVarChar("\u{4e2d}".into()), "varchar(5)")
                .unwrap_err()
                .number(),
            50110
        );
        assert_eq!(
            conv(SqlValue::Int(42), "varchar(5)")
                .unwrap()
                .text()
                .unwrap(),
            "42"
        );
        assert_eq!(conv(varchar(""), "varchar(5)").unwrap().text().unwrap(), "");
    }

    #[test]
    fn numbers_convert_and_overflow() {
        let d = conv(SqlValue::Int(12), "decimal(10,2)").unwrap();
        assert_eq!(
            d,
            SqlValue::Decimal {
                value: 1200,
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            conv(varchar("1.005"), "decimal(10,2)").unwrap(),
            SqlValue::Decimal {
                value: 101,
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            conv(SqlValue::BigInt(1_000_000_000), "decimal(10,2)")
                .unwrap_err()
                .number(),
            50112
        );
        assert_eq!(
            conv(SqlValue::Int(300), "tinyint").unwrap_err().number(),
            50112
        );
        assert_eq!(conv(varchar("abc"), "int").unwrap_err().number(), 50110);
        assert_eq!(
            conv(SqlValue::TinyInt(7), "bigint").unwrap(),
            SqlValue::BigInt(7)
        );
        assert_eq!(
            conv(
                SqlValue::Decimal {
                    value: 1234,
                    precision: 5,
                    scale: 1
                },
                "money"
            )
            .unwrap(),
            SqlValue::Money(1_234_000)
        );
    }

    #[test]
    fn temporal_values_convert() {
        let dt = DateTime::from_civil(&with_time((2020, 2, 29), (13, 5, 0, 0))).unwrap();
        assert_eq!(
            conv(SqlValue::DateTime(dt), "date").unwrap(),
            SqlValue::Date(Date::from_ymd(2020, 2, 29).unwrap())
        );
        assert_eq!(
            conv(varchar("2021-12-31"), "date").unwrap(),
            SqlValue::Date(Date::from_ymd(2021, 12, 31).unwrap())
        );
        assert_eq!(
            conv(varchar("20211231"), "date").unwrap(),
            SqlValue::Date(Date::from_ymd(2021, 12, 31).unwrap())
        );
        assert_eq!(
            conv(varchar("12/31/2021"), "date").unwrap_err().number(),
            50110
        );
        let v = conv(varchar("2021-01-01 10:00:00.12345"), "datetime2(3)").unwrap();
        let SqlValue::DateTime2(d) = v else {
            panic!("not datetime2")
        };
        assert_eq!(d.to_civil().nanosecond, 123_000_000);
        let v = conv(varchar("2021-01-01T10:00:00+02:00"), "datetimeoffset(0)").unwrap();
        let SqlValue::DateTimeOffset(d) = v else {
            panic!("not dto")
        };
        assert_eq!(d.offset_minutes, 120);
        assert_eq!(d.utc.to_civil().hour, 8);
        assert_eq!(conv(SqlValue::Int(5), "date").unwrap_err().number(), 50110);
    }

    #[test]
    fn null_stays_null_and_plain_bytes_round_trip() {
        assert_eq!(conv(SqlValue::Null, "char(11)").unwrap(), SqlValue::Null);
        let ty = PlainType::parse("nvarchar(10)").unwrap();
        let ti = ty.type_info(DEFAULT_COLLATION);
        let bytes = plain_bytes(&ti, &SqlValue::NVarChar("hé".into())).unwrap();
        assert_eq!(bytes, vec![b'h', 0, 0xE9, 0]);
        assert_eq!(
            from_plain_bytes(&ti, &bytes),
            Some(SqlValue::NVarChar("hé".into()))
        );
        assert_eq!(
            plain_bytes(&ti, &SqlValue::NVarChar(String::new())).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn canonical_trims_variable_strings_only() {
        let ty = PlainType::parse("nvarchar(10)").unwrap();
        assert_eq!(
            canonical(SqlValue::NVarChar("a  ".into()), &ty),
            SqlValue::NVarChar("a".into())
        );
        let c = conv(varchar("a"), "char(3)").unwrap();
        assert_eq!(
            canonical(c.clone(), &PlainType::parse("char(3)").unwrap()),
            c
        );
    }

    #[test]
    fn odd_text_is_refused_without_panicking() {
        for t in [
            "2021-01-0\u{e9}",
            "2021-\u{e9}1-01",
            "\u{e9}",
            "2021-01-01T25:00",
            "2021-01-01+99:00",
        ] {
            assert_eq!(
                conv(varchar(t), "datetime2(3)").unwrap_err().number(),
                50110,
                "{t}"
            );
        }
    }

    #[test]
    fn guid_text_is_wire_order() {
        let g = conv(
            varchar("01020304-0506-0708-090a-0b0c0d0e0f10"),
            "uniqueidentifier",
        )
        .unwrap();
        assert_eq!(
            g,
            SqlValue::Guid([4, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16])
        );
    }
}
