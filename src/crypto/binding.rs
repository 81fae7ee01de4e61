//! What an envelope is bound to: the column's canonical four-part name and its declared type.
//!
//! Canonical column text is `[database].[schema].[table].[column]`: each part unquoted (from
//! `[..]` with `]]` for `]`, or `".."` with `""` for `"`), ASCII letters folded to lower case,
//! then written in brackets with `]` doubled. Brackets on every part keep the text unambiguous
//! when a name contains a dot. Only ASCII is case-folded, because SQL Server's folding of other
//! letters depends on the collation; names that differ in non-ASCII case are different columns
//! here (decryption fails closed rather than mixing them up).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::crypto::error::CryptoError;
use crate::crypto::sql_type::SqlType;

/// Longest identifier part in characters: SQL Server's `sysname` is nvarchar(128).
pub const MAX_IDENTIFIER_CHARS: usize = 128;

/// A column's canonical four-part name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ColumnId {
    canonical: String,
}

/// A column and its declared type, with the digest that goes into associated data. Build one
/// per configured column and reuse it: the digest is computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueBinding {
    column: ColumnId,
    sql_type: SqlType,
    digest: [u8; 32],
}

impl ColumnId {
    /// A column from its four parts, each bare or quoted (`[Name]`, `"Name"`).
    pub fn new(
        database: &str,
        schema: &str,
        table: &str,
        column: &str,
    ) -> Result<Self, CryptoError> {
        let mut parts = Vec::with_capacity(4);
        for text in [database, schema, table, column] {
            let (name, rest) = parse_part(text)?;
            if !rest.trim().is_empty() {
                return Err(name_error("a name part has text after it"));
            }
            parts.push(name);
        }
        Ok(Self::from_unquoted(&parts))
    }

    /// A column from dotted text such as `Clinic.dbo.[Patients].SSN`.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let mut parts = Vec::with_capacity(4);
        let mut rest = text;
        loop {
            let (name, after) = parse_part(rest)?;
            parts.push(name);
            if parts.len() > 4 {
                return Err(name_error("expected database.schema.table.column"));
            }
            match after.strip_prefix('.') {
                Some(next) => rest = next,
                None if after.trim().is_empty() => break,
                None => return Err(name_error("unexpected text after a name part")),
            }
        }

        match parts.as_slice() {
            [_, _, _, _] => Ok(Self::from_unquoted(&parts)),
            _ => Err(name_error("expected database.schema.table.column")),
        }
    }

    /// The canonical text, e.g. `[clinic].[dbo].[patients].[ssn]`.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    fn from_unquoted(parts: &[String]) -> Self {
        let mut canonical = String::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                canonical.push('.');
            }
            push_canonical(&mut canonical, part);
        }
        Self { canonical }
    }
}

impl fmt::Display for ColumnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl ValueBinding {
    pub fn new(column: ColumnId, sql_type: SqlType) -> Self {
        let digest = binding_digest(column.as_str(), &sql_type.to_string());
        Self {
            column,
            sql_type,
            digest,
        }
    }

    pub fn column(&self) -> &ColumnId {
        &self.column
    }

    pub fn sql_type(&self) -> SqlType {
        self.sql_type
    }

    /// SHA-256 over the length-prefixed canonical column and type texts (docs/FORMAT.md).
    pub(crate) fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

/// SHA-256(u16 BE length || column UTF-8 || u16 BE length || type UTF-8).
fn binding_digest(column: &str, sql_type: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    for text in [column, sql_type] {
        // Column text is at most 4 * (2 + 2 * 128 * 4) + 3 bytes, well under 65535.
        let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
        hash.update(length.to_be_bytes());
        hash.update(text.as_bytes());
    }
    hash.finalize().into()
}

/// One name part from the start of `text`: the unquoted name and the text after it.
fn parse_part(text: &str) -> Result<(String, &str), CryptoError> {
    let text = text.trim_start();
    let (name, rest) = match text.chars().next() {
        Some('[') => quoted(&text[1..], ']')?,
        Some('"') => quoted(&text[1..], '"')?,
        _ => {
            let end = text.find('.').unwrap_or(text.len());
            let name = text[..end].trim_end();
            if name.contains(|c: char| c.is_whitespace() || matches!(c, '[' | ']' | '"')) {
                return Err(name_error(
                    "a bare name part holds spaces or quotes; use [brackets]",
                ));
            }
            (name.to_owned(), &text[end..])
        }
    };

    if name.is_empty() {
        return Err(name_error("a name part is empty"));
    }
    if name.chars().count() > MAX_IDENTIFIER_CHARS {
        return Err(name_error("a name part is longer than 128 characters"));
    }
    Ok((name, rest.trim_start()))
}

/// Text up to the closing `close`, where a doubled `close` stands for one.
fn quoted(text: &str, close: char) -> Result<(String, &str), CryptoError> {
    let mut name = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != close {
            name.push(c);
            continue;
        }
        if chars.peek().map(|&(_, next)| next) == Some(close) {
            chars.next();
            name.push(close);
            continue;
        }
        return Ok((name, &text[i + close.len_utf8()..]));
    }
    Err(name_error("a quoted name part is not closed"))
}

fn push_canonical(out: &mut String, name: &str) {
    out.push('[');
    for c in name.chars() {
        if c == ']' {
            out.push(']');
        }
        out.push(c.to_ascii_lowercase());
    }
    out.push(']');
}

fn name_error(reason: &'static str) -> CryptoError {
    CryptoError::ColumnName { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        ColumnId::parse(text).unwrap().as_str().to_owned()
    }

    #[test]
    fn canonical_form_folds_ascii_case_and_quoting() {
        let expected = "[clinic].[dbo].[patients].[ssn]";
        assert_eq!(canonical("Clinic.dbo.Patients.SSN"), expected);
        assert_eq!(canonical("[Clinic].[DBO].[Patients].[SSN]"), expected);
        assert_eq!(canonical("\"clinic\".dbo.\"PATIENTS\".ssn"), expected);
        assert_eq!(canonical(" clinic . dbo . patients . ssn "), expected);
        assert_eq!(
            ColumnId::new("Clinic", "[dbo]", "\"Patients\"", "SSN")
                .unwrap()
                .as_str(),
            expected
        );
    }

    #[test]
    fn dots_and_brackets_inside_names_stay_unambiguous() {
        assert_eq!(canonical("[a.b].c.d.e"), "[a.b].[c].[d].[e]");
        assert_eq!(canonical("a.[b.c].d.e"), "[a].[b.c].[d].[e]");
        assert_eq!(canonical("a.b.c.[x]]y]"), "[a].[b].[c].[x]]y]");
        assert_eq!(canonical("a.b.c.\"q\"\"r\""), "[a].[b].[c].[q\"r]");
        assert_eq!(canonical("a.b.c.Éé"), "[a].[b].[c].[Éé]");
    }

    #[test]
    fn rejects_malformed_names() {
        let long = format!("a.b.c.{}", "x".repeat(129));
        for text in [
            "a.b.c",
            "a.b.c.d.e",
            "a..c.d",
            "[a.b.c.d",
            "a.b.c.[]",
            "a.b.c.d x",
            &long,
        ] {
            assert!(ColumnId::parse(text).is_err(), "{text}");
        }
        assert!(ColumnId::new("a", "b", "c", "d.e").is_err());
        assert!(ColumnId::new("a", "b", "c", "").is_err());
    }

    #[test]
    fn binding_digest_depends_on_column_and_type() {
        let column = ColumnId::parse("db.dbo.t.c").unwrap();
        let other = ColumnId::parse("db.dbo.t.d").unwrap();
        let nvarchar = SqlType::parse("nvarchar(50)").unwrap();
        let varchar = SqlType::parse("varchar(50)").unwrap();

        let base = ValueBinding::new(column.clone(), nvarchar);
        assert_eq!(
            base.digest(),
            ValueBinding::new(column.clone(), nvarchar).digest()
        );
        assert_ne!(base.digest(), ValueBinding::new(other, nvarchar).digest());
        assert_ne!(base.digest(), ValueBinding::new(column, varchar).digest());
    }
}
