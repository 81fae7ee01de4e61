//! SQL Server style messages (number, state, class, text, line) produced by the engine.
//!
//! The numbers are SQL Server's own message numbers, so drivers that branch on them behave as
//! they would against a real server. Errors of our own (unsupported syntax) use 40700-40799.

use std::fmt;

/// Message number for a statement or feature the engine does not support (class 16).
pub const UNSUPPORTED: i32 = 40701;

/// Prefix a SQLite user function puts in front of an error it raises, so the error can be
/// turned back into a SQL Server message: `tds:<number>:<text>`.
pub(crate) const FUNCTION_ERROR_PREFIX: &str = "tds:";

/// One error or informational message, shaped like the ERROR / INFO token (MS-TDS 2.2.7.10).
#[derive(Clone, PartialEq, Eq)]
pub struct SqlError {
    /// Message number (`sys.messages.message_id`).
    pub number: i32,
    /// Error state.
    pub state: u8,
    /// Severity class; 0-10 are informational.
    pub class: u8,
    /// Message text. May quote a value, so it is not printed by `Debug`.
    pub message: String,
    /// 1-based line in the batch.
    pub line: u32,
}

impl SqlError {
    /// A class 16 error with state 1.
    pub fn new(number: i32, message: impl Into<String>) -> Self {
        Self {
            number,
            state: 1,
            class: 16,
            message: message.into(),
            line: 1,
        }
    }

    /// An informational message (class 0), such as 5701 "Changed database context".
    pub fn info(number: i32, message: impl Into<String>) -> Self {
        Self {
            number,
            state: 1,
            class: 0,
            message: message.into(),
            line: 1,
        }
    }

    /// Something the engine does not implement; the text names it.
    pub fn unsupported(what: impl fmt::Display) -> Self {
        Self::new(
            UNSUPPORTED,
            format!("The tdsguard sandbox does not support {what}."),
        )
    }

    /// 102: the parser stopped at `near`.
    pub fn syntax(near: &str) -> Self {
        Self::new(102, format!("Incorrect syntax near '{near}'."))
    }

    /// 208: unknown table or view.
    pub fn invalid_object(name: &str) -> Self {
        Self::new(208, format!("Invalid object name '{name}'."))
    }

    /// 207: unknown column.
    pub fn invalid_column(name: &str) -> Self {
        Self::new(207, format!("Invalid column name '{name}'."))
    }

    /// 137: undeclared variable.
    pub fn undeclared(name: &str) -> Self {
        Self::new(137, format!("Must declare the scalar variable \"{name}\"."))
    }

    /// Sets the line, keeping the rest.
    pub fn at_line(mut self, line: u32) -> Self {
        self.line = line;
        self
    }

    /// True when SQL Server stops the whole batch after this error instead of going on with
    /// the next statement: name resolution (207, 208), conversion (241, 245, 8114, 8169) and
    /// arithmetic overflow (8115) abort the batch; constraint and truncation errors (515,
    /// 2627, 2628, 8152), transaction misuse and unsupported statements end the statement only.
    pub fn aborts_batch(&self) -> bool {
        matches!(
            self.number,
            102 | 207 | 208 | 241 | 245 | 8114 | 8115 | 8169
        )
    }
}

impl fmt::Debug for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlError")
            .field("number", &self.number)
            .field("state", &self.state)
            .field("class", &self.class)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Msg {}, Level {}, State {}, Line {}",
            self.number, self.class, self.state, self.line
        )
    }
}

impl std::error::Error for SqlError {}

/// Errors opening the engine or a database file.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// SQLite refused to open or initialise a file.
    #[error("sqlite error while {context}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

/// Turns a SQLite error into a SQL Server message: constraint failures map to 515 / 2627 / 547,
/// errors raised by our conversion functions keep their number, anything else is 50000-like.
pub(crate) fn from_sqlite(err: &rusqlite::Error, table_hint: &str) -> SqlError {
    let text = match err {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        other => other.to_string(),
    };
    if let Some(rest) = text.strip_prefix(FUNCTION_ERROR_PREFIX) {
        return function_error(rest);
    }
    if let Some(col) = text.strip_prefix("NOT NULL constraint failed: ") {
        let column = col.rsplit('.').next().unwrap_or(col);
        return SqlError::new(
            515,
            format!(
                "Cannot insert the value NULL into column '{column}', table '{table_hint}'; \
                 column does not allow nulls. INSERT fails."
            ),
        );
    }
    if text.starts_with("UNIQUE constraint failed") {
        return SqlError::new(
            2627,
            format!(
                "Violation of PRIMARY KEY or UNIQUE KEY constraint. Cannot insert duplicate key \
                 in object '{table_hint}'."
            ),
        );
    }
    if let Some(name) = text.strip_prefix("CHECK constraint failed: ") {
        return SqlError::new(
            547,
            format!(
                "The statement conflicted with the CHECK constraint \"{name}\". The conflict \
                 occurred in table \"{table_hint}\"."
            ),
        );
    }
    if text.starts_with("no such table") {
        return SqlError::invalid_object(text.trim_start_matches("no such table: "));
    }
    if text.starts_with("no such column") {
        return SqlError::invalid_column(text.trim_start_matches("no such column: "));
    }
    SqlError::new(50000, format!("SQLite: {text}"))
}

fn function_error(rest: &str) -> SqlError {
    let mut parts = rest.splitn(2, ':');
    let number = parts.next().and_then(|n| n.parse().ok()).unwrap_or(50000);
    SqlError::new(number, parts.next().unwrap_or_default())
}

/// Encodes a SQL Server message as a SQLite user-function error.
pub(crate) fn function_failure(err: SqlError) -> rusqlite::Error {
    let text = format!("{FUNCTION_ERROR_PREFIX}{}:{}", err.number, err.message);
    rusqlite::Error::UserFunctionError(text.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_error_round_trips_number_and_text() {
        let err = function_failure(SqlError::new(2628, "too long: x"));
        let back = from_sqlite(&err, "t");
        assert_eq!(back.number, 2628);
        assert_eq!(back.message, "too long: x");
    }

    #[test]
    fn batch_abort_classes() {
        assert!(SqlError::new(245, "").aborts_batch());
        assert!(!SqlError::new(2627, "").aborts_batch());
    }
}
