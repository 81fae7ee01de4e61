//! The key table: where each database stores its wrapped data keys (docs/FORMAT.md, "Key
//! table"). This module only builds statement text and parses rows; running them is the TDS
//! client's job.
//!
//! One row per (data key id, company key): during a company key rotation the same data key is
//! stored wrapped under both keys. Rows come from the database, which is not trusted, so every
//! value is length-checked here and authenticated by `data_key::unwrap` before use.

use crate::crypto::company_key::Fingerprint;
use crate::crypto::data_key::{DataKeyId, WrappedDataKey, MAX_WRAPPED_LEN, WRAPPED_TAG_LEN};
use crate::crypto::error::CryptoError;

/// Table name used when the configuration names none.
pub const DEFAULT_TABLE_NAME: &str = "dbo.tdsguard_data_keys";

/// Longest identifier part in characters (SQL Server's `sysname`).
const MAX_NAME_PART_CHARS: usize = 128;

/// Columns in the order the SELECT returns them and the INSERT takes them.
pub const COLUMNS: [&str; 4] = ["key_id", "company_key_fingerprint", "wrapped_key", "tag"];

/// A validated key table name, rendered with brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTable {
    quoted: String,
    /// The unquoted last part, for constraint names.
    table: String,
}

impl KeyTable {
    /// A table named `table` or `schema.table`: bare parts of letters, digits and `_` (not
    /// starting with a digit), at most 128 characters each. Quoting is not accepted so that the
    /// name can be pasted into statements without escaping rules.
    pub fn new(name: &str) -> Result<Self, CryptoError> {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 {
            return Err(name_error("use table or schema.table"));
        }
        for part in &parts {
            check_part(part)?;
        }

        let quoted = parts
            .iter()
            .map(|part| format!("[{part}]"))
            .collect::<Vec<_>>()
            .join(".");
        let table = parts.last().copied().unwrap_or_default().to_owned();
        Ok(Self { quoted, table })
    }

    /// The table name as used in statements, e.g. `[dbo].[tdsguard_data_keys]`.
    pub fn name(&self) -> &str {
        &self.quoted
    }

    /// The statement that creates the table.
    pub fn create_table_sql(&self) -> String {
        format!(
            "CREATE TABLE {name} (\n    \
             key_id int NOT NULL,\n    \
             company_key_fingerprint binary(32) NOT NULL,\n    \
             wrapped_key varbinary({MAX_WRAPPED_LEN}) NOT NULL,\n    \
             tag binary({WRAPPED_TAG_LEN}) NOT NULL,\n    \
             created_at datetime2(0) NOT NULL DEFAULT SYSUTCDATETIME(),\n    \
             CONSTRAINT [PK_{table}] PRIMARY KEY (key_id, company_key_fingerprint),\n    \
             CONSTRAINT [CK_{table}_key_id] CHECK (key_id > 0)\n)",
            name = self.quoted,
            table = self.table,
        )
    }

    /// The insert statement; parameters @P1..@P4 take [`insert_values`]'s values in order.
    pub fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {} (key_id, company_key_fingerprint, wrapped_key, tag) \
             VALUES (@P1, @P2, @P3, @P4)",
            self.quoted
        )
    }

    /// The query for the rows of one company key; @P1 is its fingerprint (binary(32)). The
    /// highest key id is the one new values are sealed under.
    pub fn select_sql(&self) -> String {
        format!(
            "SELECT key_id, company_key_fingerprint, wrapped_key, tag FROM {} \
             WHERE company_key_fingerprint = @P1 ORDER BY key_id",
            self.quoted
        )
    }
}

/// Values for [`KeyTable::insert_sql`]: key_id (int), fingerprint (binary(32)), wrapped key
/// (varbinary), tag (binary(32)).
pub fn insert_values(row: &WrappedDataKey) -> (i32, [u8; 32], &[u8], [u8; WRAPPED_TAG_LEN]) {
    // DataKeyId guarantees 1..=i32::MAX.
    let key_id = i32::try_from(row.key_id.get()).unwrap_or(i32::MAX);
    (key_id, *row.company_key.as_bytes(), &row.wrapped, row.tag)
}

/// A row read from the database, column by column in [`COLUMNS`] order.
pub fn parse_row(
    key_id: i32,
    company_key_fingerprint: &[u8],
    wrapped_key: &[u8],
    tag: &[u8],
) -> Result<WrappedDataKey, CryptoError> {
    let key_id = DataKeyId::new(i64::from(key_id))?;
    let company_key = Fingerprint::from_slice(company_key_fingerprint)
        .ok_or(row_error("company_key_fingerprint", "must be 32 bytes"))?;
    if wrapped_key.is_empty() || wrapped_key.len() > MAX_WRAPPED_LEN {
        return Err(row_error("wrapped_key", "must be 1 to 512 bytes"));
    }
    let tag = tag
        .try_into()
        .map_err(|_| row_error("tag", "must be 32 bytes"))?;

    Ok(WrappedDataKey {
        key_id,
        company_key,
        wrapped: wrapped_key.to_vec(),
        tag,
    })
}

fn check_part(part: &str) -> Result<(), CryptoError> {
    let mut chars = part.chars();
    let Some(first) = chars.next() else {
        return Err(name_error("a name part is empty"));
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(name_error("a name part must start with a letter or _"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(name_error(
            "a name part may hold only letters, digits and _",
        ));
    }
    if part.len() > MAX_NAME_PART_CHARS {
        return Err(name_error("a name part is longer than 128 characters"));
    }
    Ok(())
}

fn name_error(reason: &'static str) -> CryptoError {
    CryptoError::KeyTableName { reason }
}

fn row_error(field: &'static str, reason: &'static str) -> CryptoError {
    CryptoError::KeyTableRow { field, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::company_key::tests::key_a;
    use crate::crypto::data_key::{unwrap, DataKey};

    #[test]
    fn names_are_validated_and_bracketed() {
        assert_eq!(
            KeyTable::new(DEFAULT_TABLE_NAME).unwrap().name(),
            "[dbo].[tdsguard_data_keys]"
        );
        assert_eq!(KeyTable::new("keys_2").unwrap().name(), "[keys_2]");
        for bad in [
            "",
            "a.b.c",
            "a;drop",
            "[x]",
            "1abc",
            "a b",
            "a.",
            &"x".repeat(129),
        ] {
            assert!(KeyTable::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statements_name_the_table_and_columns() {
        let table = KeyTable::new("sec.keys").unwrap();
        let create = table.create_table_sql();
        assert!(create.starts_with("CREATE TABLE [sec].[keys] ("));
        assert!(create.contains("wrapped_key varbinary(512) NOT NULL"));
        assert!(
            create.contains("CONSTRAINT [PK_keys] PRIMARY KEY (key_id, company_key_fingerprint)")
        );
        assert!(create.contains("CONSTRAINT [CK_keys_key_id] CHECK (key_id > 0)"));
        for column in COLUMNS {
            assert!(create.contains(&format!("{column} ")), "{column}");
            assert!(table.select_sql().contains(column));
            assert!(table.insert_sql().contains(column));
        }
        assert!(table.insert_sql().ends_with("VALUES (@P1, @P2, @P3, @P4)"));
    }

    #[test]
    fn format_doc_shows_the_default_statements() {
        let doc = include_str!("../../docs/FORMAT.md");
        let table = KeyTable::new(DEFAULT_TABLE_NAME).unwrap();
        assert!(doc.contains(&table.create_table_sql()));
        assert!(doc.contains(&format!("`{}`", table.insert_sql())));
        assert!(doc.contains(&format!("`{}`", table.select_sql())));
    }

    #[test]
    fn insert_values_parse_back_and_unwrap() {
        let key = DataKey::generate(DataKeyId::new(12).unwrap()).unwrap();
        let row = key.wrap(key_a()).unwrap();

        let (id, fingerprint, wrapped, tag) = insert_values(&row);
        assert_eq!(id, 12);
        let parsed = parse_row(id, &fingerprint, wrapped, &tag).unwrap();
        assert_eq!(parsed, row);
        assert_eq!(unwrap(&parsed, key_a()).unwrap().id(), key.id());
    }

    #[test]
    fn malformed_rows_are_rejected_by_field() {
        let ok = [0u8; 32];
        let field = |e: CryptoError| match e {
            CryptoError::KeyTableRow { field, .. } => field,
            CryptoError::KeyIdOutOfRange(_) => "key_id",
            _ => "other",
        };
        assert_eq!(field(parse_row(0, &ok, &[1], &ok).unwrap_err()), "key_id");
        assert_eq!(field(parse_row(-5, &ok, &[1], &ok).unwrap_err()), "key_id");
        assert_eq!(
            field(parse_row(1, &ok[..31], &[1], &ok).unwrap_err()),
            "company_key_fingerprint"
        );
        assert_eq!(
            field(parse_row(1, &ok, &[], &ok).unwrap_err()),
            "wrapped_key"
        );
        assert_eq!(
            field(parse_row(1, &ok, &[0; 513], &ok).unwrap_err()),
            "wrapped_key"
        );
        assert_eq!(field(parse_row(1, &ok, &[1], &[0; 33]).unwrap_err()), "tag");
    }
}
