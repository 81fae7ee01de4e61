//! Schema statements and bulk load on mapped tables.
//!
//! CREATE TABLE and ALTER TABLE ... ADD on a mapped table get the storage
//! type of mapped columns (found by statement analysis, applied by the
//! literal rewriter). Bulk load ([MS-TDS] 2.2.6.1 "Bulk Load BCP", started
//! by an `INSERT BULK` batch) into a mapped table is refused: the proxy
//! does not encrypt BCP rows, and must never let them write plaintext.

use crate::rewrite::column_map::{canonical_ident, ColumnMap, TableKey};
use crate::rewrite::error::{Refusal, RefusalKind};

/// The refusal of an `INSERT BULK` or `BULK INSERT` into a mapped table.
pub fn bulk_refusal(map: &ColumnMap, database: &str, text: &str) -> Option<Refusal> {
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    let table = match words.as_slice() {
        [a, b, t] if a.eq_ignore_ascii_case("insert") && b.eq_ignore_ascii_case("bulk") => t,
        [a, b, t] if a.eq_ignore_ascii_case("bulk") && b.eq_ignore_ascii_case("insert") => t,
        _ => return None,
    };
    let name = table.split('(').next().unwrap_or(table);
    let (_, key) = TableKey::parse(name)?;
    map.is_mapped_table(database, &key)
        .then(|| bulk(&key.to_string()))
}

/// The refusal of bulk data whose columns include a mapped column name.
pub fn bulk_data_refusal(map: &ColumnMap, column_names: &[String]) -> Option<Refusal> {
    column_names
        .iter()
        .find(|c| map.mentions_mapped_name(&canonical_ident(c)))
        .map(|c| bulk(c))
}

fn bulk(what: &str) -> Refusal {
    Refusal::new(
        RefusalKind::BulkLoad,
        format!(
            "bulk load into {what} is refused: it has encrypted columns and bulk rows are not \
             encrypted; insert with parameters instead"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::analysis::tests::test_map;

    #[test]
    fn insert_bulk_into_mapped_table_is_refused() {
        let map = test_map();
        let r = bulk_refusal(
            &map,
            "clinic",
            "insert bulk [dbo].[Patients] ([Ssn] VarChar(11))",
        )
        .unwrap();
        assert_eq!(r.number(), 50108);
        assert!(bulk_refusal(&map, "clinic", "INSERT BULK dbo.Visits (Id int)").is_none());
        assert!(bulk_refusal(&map, "clinic", "BULK INSERT Patients FROM 'x.csv'").is_some());
        assert!(bulk_refusal(&map, "clinic", "INSERT INTO Patients (Ssn) VALUES (1)").is_none());
    }

    #[test]
    fn bulk_data_naming_a_mapped_column_is_refused() {
        let map = test_map();
        assert!(bulk_data_refusal(&map, &["Id".into(), "[SSN]".into()]).is_some());
        assert!(bulk_data_refusal(&map, &["Id".into()]).is_none());
    }
}
