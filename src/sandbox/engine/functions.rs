//! SQLite connection setup: the user functions and the collation the translated SQL uses.
//!
//! - `__tds_store(x, type, table, column)`: converts and validates a value for a column.
//! - `__tds_cast(x, type)`: CAST/CONVERT (expression form: decimals as REAL).
//! - `__tds_now(with_offset)`: current UTC time as stored text (the sandbox runs in UTC).
//! - `__tds_newid()`, `__tds_len(x)`, `__tds_charindex(needle, haystack)`,
//!   `__tds_typeinfo(type, field)`.
//! - collation `TDS_CI`: case-insensitive and blind to trailing spaces, like
//!   SQL_Latin1_General_CP1_CI_AS for the common cases (accents still count).

use std::cmp::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::Value as SqliteValue;
use rusqlite::Connection;

use crate::sandbox::engine::catalog;
use crate::sandbox::engine::errors::function_failure;
use crate::sandbox::engine::types::{self, format_guid, ConvMode, SqlType};

/// Milliseconds a statement waits for another session's lock before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Name of the collation given to character columns.
pub const COLLATION: &str = "TDS_CI";

/// Opens a database file ready for the engine.
pub fn open(path: &std::path::Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    register(&conn)?;
    catalog::init(&conn)?;
    Ok(conn)
}

fn parse_type(ctx: &Context<'_>, i: usize) -> rusqlite::Result<SqlType> {
    let text: String = ctx.get(i)?;
    SqlType::parse(&text).map_err(function_failure)
}

fn store(ctx: &Context<'_>) -> rusqlite::Result<SqliteValue> {
    let ty = parse_type(ctx, 1)?;
    let table: String = ctx.get(2)?;
    let column: String = ctx.get(3)?;
    types::to_storage(ctx.get_raw(0), &ty, ConvMode::Store, (&table, &column))
        .map_err(function_failure)
}

fn cast(ctx: &Context<'_>) -> rusqlite::Result<SqliteValue> {
    let ty = parse_type(ctx, 1)?;
    types::to_storage(ctx.get_raw(0), &ty, ConvMode::Cast, ("", "")).map_err(function_failure)
}

fn len(ctx: &Context<'_>) -> rusqlite::Result<Option<i64>> {
    let v: Option<String> = ctx.get(0)?;
    Ok(v.map(|s| s.trim_end_matches(' ').chars().count() as i64))
}

fn charindex(ctx: &Context<'_>) -> rusqlite::Result<Option<i64>> {
    let needle: Option<String> = ctx.get(0)?;
    let hay: Option<String> = ctx.get(1)?;
    let (Some(needle), Some(hay)) = (needle, hay) else {
        return Ok(None);
    };
    let hay_lc = hay.to_lowercase();
    Ok(Some(match hay_lc.find(&needle.to_lowercase()) {
        Some(byte) => hay_lc[..byte].chars().count() as i64 + 1,
        None => 0,
    }))
}

fn register(conn: &Connection) -> rusqlite::Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let volatile = FunctionFlags::SQLITE_UTF8;
    conn.create_scalar_function("__tds_store", 4, pure, store)?;
    conn.create_scalar_function("__tds_cast", 2, pure, cast)?;
    conn.create_scalar_function("__tds_len", 1, pure, len)?;
    conn.create_scalar_function("__tds_charindex", 2, pure, charindex)?;
    conn.create_scalar_function("__tds_now", 1, volatile, |ctx| {
        let with_offset: i64 = ctx.get(0)?;
        Ok(now_text(with_offset != 0))
    })?;
    conn.create_scalar_function("__tds_newid", 0, volatile, |_| Ok(new_guid_text()))?;
    conn.create_scalar_function("__tds_typeinfo", 2, pure, |ctx| {
        let ty: String = ctx.get(0)?;
        let field: String = ctx.get(1)?;
        Ok(catalog::type_info(&ty, &field))
    })?;
    conn.create_collation(COLLATION, compare_ci)
}

/// Case-insensitive comparison that ignores trailing spaces.
fn compare_ci(a: &str, b: &str) -> Ordering {
    let a = a.trim_end_matches(' ').chars().flat_map(char::to_lowercase);
    let b = b.trim_end_matches(' ').chars().flat_map(char::to_lowercase);
    a.cmp(b)
}

fn new_guid_text() -> String {
    let mut g = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut g);
    // RFC 4122 version 4, variant 1.
    g[6] = (g[6] & 0x0F) | 0x40;
    g[8] = (g[8] & 0x3F) | 0x80;
    format_guid(&g)
}

/// Current UTC time in the stored text form.
pub fn now_text(with_offset: bool) -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let text = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:07}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_nanos() / 100
    );
    if with_offset {
        format!("{text} +00:00")
    } else {
        text
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn collation_ignores_case_and_trailing_spaces() {
        assert_eq!(compare_ci("abc  ", "ABC"), Ordering::Equal);
        assert_eq!(compare_ci("a", "b"), Ordering::Less);
    }

    #[test]
    fn store_function_reports_truncation() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let err = conn
            .query_row(
                "SELECT __tds_store('abcd', 'nvarchar(2)', 't', 'c')",
                [],
                |r| r.get::<_, String>(0),
            )
            .unwrap_err();
        assert_eq!(
            crate::sandbox::engine::errors::from_sqlite(&err, "t").number,
            2628
        );
        let ok: i64 = conn
            .query_row(
                "SELECT __tds_store('12.345', 'decimal(10,2)', 't', 'c')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ok, 1235);
        let n: i64 = conn
            .query_row("SELECT __tds_len('ab  ')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }
}
