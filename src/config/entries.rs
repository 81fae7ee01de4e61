//! Validation of the `[[columns]]` and `[[procedures]]` entries.
//!
//! Every entry is checked and every problem is kept, so that `tdsguard check` can list them
//! all at once; each names its entry (`columns[2]`, the mapped `table.column`) and, when the
//! entry came from the config file, the line it is on. Types are read by the column map's
//! parser (what the proxy uses at run time) and by the crypto layer's (what it binds into
//! each envelope); a type must satisfy both.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{ColumnConfig, EncryptionMode, ProcedureConfig};
use crate::crypto::sql_type::{MAX_BYTE_LENGTH, MAX_NCHAR_LENGTH};
use crate::crypto::{CryptoError, SqlType};
use crate::rewrite::column_map::{canonical_ident, split_dotted, PlainType, TableKey};

/// One problem with one `[[columns]]` or `[[procedures]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryProblem {
    /// The entry and, when one field is at fault, the field: `columns[2].type`.
    pub key: String,
    /// What the entry maps, as written: `dbo.Patients.ssn` or `dbo.FindPatient`.
    pub entry: String,
    /// File and line of the entry (or of the field), when it came from the config file.
    pub location: Option<(PathBuf, usize)>,
    /// What is wrong, in a few words.
    pub reason: String,
}

impl EntryProblem {
    fn new(key: String, entry: String, reason: impl Into<String>) -> Self {
        Self {
            key,
            entry,
            location: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((path, line)) = &self.location {
            write!(f, "{}:{line}: ", path.display())?;
        }
        write!(f, "{} ({}): {}", self.key, self.entry, self.reason)
    }
}

/// Problems of every column and procedure entry, in file order, without locations.
pub fn problems(columns: &[ColumnConfig], procedures: &[ProcedureConfig]) -> Vec<EntryProblem> {
    let mut problems = Vec::new();
    let mut mapped = MappedNames::default();
    for (i, column) in columns.iter().enumerate() {
        check_column(i, column, &mut mapped, &mut problems);
    }
    let mut seen_procedures = HashMap::new();
    for (i, procedure) in procedures.iter().enumerate() {
        check_procedure(i, procedure, &mapped, &mut seen_procedures, &mut problems);
    }
    problems
}

/// A mapped column by canonical table and column name.
type ColumnKey = (TableKey, String);

/// The entries mapping one column: entry index and canonical database (`None`: every one).
type ColumnEntries = Vec<(usize, Option<String>)>;

/// The column entries seen so far.
#[derive(Default)]
struct MappedNames(HashMap<ColumnKey, ColumnEntries>);

impl MappedNames {
    /// Records an entry; returns the earlier entry that maps the same column in an overlapping
    /// set of databases (the same one, or every database on either side).
    fn insert(
        &mut self,
        key: (TableKey, String),
        index: usize,
        db: Option<String>,
    ) -> Option<usize> {
        let entries = self.0.entry(key).or_default();
        let clash = entries
            .iter()
            .find(|(_, other)| other.is_none() || db.is_none() || *other == db)
            .map(|(i, _)| *i);
        entries.push((index, db));
        clash
    }

    fn contains(&self, table: &TableKey, column: &str) -> bool {
        self.0.contains_key(&(table.clone(), column.to_owned()))
    }
}

fn check_column(
    i: usize,
    col: &ColumnConfig,
    mapped: &mut MappedNames,
    problems: &mut Vec<EntryProblem>,
) {
    let entry = format!("{}.{}", col.table, col.column);
    let problem = |field: &str, reason: String| {
        EntryProblem::new(format!("columns[{i}]{field}"), entry.clone(), reason)
    };
    if col.table.trim().is_empty() || col.column.trim().is_empty() {
        problems.push(problem("", "table and column must not be empty".into()));
        return;
    }
    let table = table_key(&col.table);
    if table.is_none() {
        let reason = format!("`{}` is not `table` or `schema.table`", col.table);
        problems.push(problem(".table", reason));
    }

    match column_type(&col.sql_type) {
        Err(reason) => problems.push(problem(".type", reason)),
        Ok(plain) if col.mode == EncryptionMode::Deterministic => {
            if let Some(reason) = deterministic_problem(&plain) {
                let reason = format!("deterministic on {}: {reason}", plain.canonical());
                problems.push(problem(".mode", reason));
            }
        }
        Ok(_) => {}
    }

    let Some(table) = table else { return };
    let db = col.database.as_deref().map(canonical_ident);
    let column = canonical_ident(&col.column);
    if let Some(earlier) = mapped.insert((table, column), i, db) {
        let reason = format!("column is mapped twice, also by columns[{earlier}]");
        problems.push(problem("", reason));
    }
}

/// `table` or `schema.table` (brackets and quotes allowed), as the column map keys it.
fn table_key(name: &str) -> Option<TableKey> {
    if split_dotted(name).len() > 2 {
        return None;
    }
    TableKey::parse(name).map(|(_, key)| key)
}

/// The plaintext type, accepted by both the column map and the crypto layer.
fn column_type(text: &str) -> Result<PlainType, String> {
    let crypto = SqlType::parse(text);
    match (PlainType::parse(text), crypto) {
        (Ok(plain), _) => match SqlType::parse(&plain.canonical()) {
            Ok(_) => Ok(plain),
            Err(e) => Err(format!("type `{text}`: {e}")),
        },
        (Err(_), Ok(known)) if PlainType::parse(&known.to_string()).is_ok() => {
            Err(format!("type `{text}`: write it as `{known}`"))
        }
        (Err(_), Err(CryptoError::SqlType { reason })) => {
            Err(format!("type `{text}`: {reason}{}", length_hint(text)))
        }
        (Err(e), _) => Err(format!("type `{text}`: {e}")),
    }
}

/// The allowed lengths of a character or binary type, for a length error.
fn length_hint(text: &str) -> String {
    let name = text.trim().to_ascii_lowercase();
    let name = name.split('(').next().unwrap_or("").trim();
    match name {
        "nchar" => format!(" (1 to {MAX_NCHAR_LENGTH})"),
        "nvarchar" => format!(" (1 to {MAX_NCHAR_LENGTH}, or max)"),
        "char" | "binary" => format!(" (1 to {MAX_BYTE_LENGTH})"),
        "varchar" | "varbinary" => format!(" (1 to {MAX_BYTE_LENGTH}, or max)"),
        _ => String::new(),
    }
}

/// Why deterministic encryption does not suit a type, if it does not. Deterministic mode
/// exists for `WHERE col = @p` lookups, and reveals which rows hold equal values.
fn deterministic_problem(plain: &PlainType) -> Option<&'static str> {
    match plain {
        PlainType::Bit => Some(
            "a bit has two values, so equal ciphertexts reveal every row once one row is known; \
             use mode = \"randomized\"",
        ),
        PlainType::Real | PlainType::Float => Some(
            "approximate numbers rarely compare equal after arithmetic, so lookups miss; \
             use mode = \"randomized\"",
        ),
        _ if plain.max_plain_len().is_none() => Some(
            "(max) values are stored as varbinary(max), which cannot be an index key, so \
             every lookup scans the table; use mode = \"randomized\" or a bounded length",
        ),
        _ => None,
    }
}

fn check_procedure(
    i: usize,
    procedure: &ProcedureConfig,
    mapped: &MappedNames,
    seen: &mut HashMap<TableKey, usize>,
    problems: &mut Vec<EntryProblem>,
) {
    let entry = procedure.procedure.clone();
    let problem = |field: &str, reason: String| {
        EntryProblem::new(format!("procedures[{i}]{field}"), entry.clone(), reason)
    };
    match table_key(&procedure.procedure) {
        None => {
            let reason = format!("`{}` is not `name` or `schema.name`", procedure.procedure);
            problems.push(problem(".procedure", reason));
        }
        Some(key) => {
            if let Some(earlier) = seen.insert(key, i) {
                let reason = format!("procedure is listed twice, also by procedures[{earlier}]");
                problems.push(problem("", reason));
            }
        }
    }
    for (parameter, target) in &procedure.parameters {
        if let Some(reason) = parameter_problem(parameter, target, mapped) {
            problems.push(problem(".parameters", format!("{parameter}: {reason}")));
        }
    }
}

fn parameter_problem(parameter: &str, target: &str, mapped: &MappedNames) -> Option<String> {
    if parameter.trim().trim_start_matches('@').is_empty() {
        return Some("parameter name is empty".into());
    }
    let parts = split_dotted(target);
    let (schema, table, column) = match parts.as_slice() {
        [t, c] => ("dbo".to_owned(), t.clone(), c.clone()),
        [s, t, c] => (s.clone(), t.clone(), c.clone()),
        _ => {
            return Some(format!(
                "`{target}` is not `table.column` or `schema.table.column`"
            ))
        }
    };
    let table = TableKey { schema, table };
    (!mapped.contains(&table, &column)).then(|| format!("`{target}` is not a [[columns]] entry"))
}

/// The parts of the file that give entries their lines; everything else is ignored.
#[derive(Deserialize)]
struct EntrySpans {
    #[serde(default)]
    columns: Vec<toml::Spanned<BTreeMap<String, toml::Spanned<toml::Value>>>>,
    #[serde(default)]
    procedures: Vec<toml::Spanned<BTreeMap<String, toml::Spanned<toml::Value>>>>,
}

/// Adds the file and line to each problem: the line of the faulty field, else of the entry.
pub fn locate(problems: &mut [EntryProblem], path: &Path, text: &str) {
    let Ok(spans) = toml::from_str::<EntrySpans>(text) else {
        return;
    };
    for problem in problems {
        let Some(offset) = offset_of(&spans, &problem.key) else {
            continue;
        };
        let (line, _) = super::line_and_column(text, offset);
        problem.location = Some((path.to_path_buf(), line));
    }
}

/// Byte offset of `columns[2].type`, `columns[2]`, `procedures[0].parameters` ... in the file.
fn offset_of(spans: &EntrySpans, key: &str) -> Option<usize> {
    let (list, rest) = key.split_once('[')?;
    let (index, field) = rest.split_once(']')?;
    let entries = match list {
        "columns" => &spans.columns,
        "procedures" => &spans.procedures,
        _ => return None,
    };
    let entry = entries.get(index.parse::<usize>().ok()?)?;
    let field = field.strip_prefix('.').and_then(|f| entry.get_ref().get(f));
    Some(field.map_or(entry.span().start, |value| value.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnDecryptError;

    fn column(table: &str, name: &str, ty: &str, mode: EncryptionMode) -> ColumnConfig {
        ColumnConfig {
            table: table.into(),
            column: name.into(),
            sql_type: ty.into(),
            mode,
            on_decrypt_error: OnDecryptError::Error,
            database: None,
        }
    }

    fn randomized(table: &str, name: &str, ty: &str) -> ColumnConfig {
        column(table, name, ty, EncryptionMode::Randomized)
    }

    fn messages(columns: &[ColumnConfig], procedures: &[ProcedureConfig]) -> Vec<String> {
        problems(columns, procedures)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_map_has_no_problems() {
        let columns = [
            randomized("dbo.Patients", "full_name", "nvarchar(50)"),
            randomized("[dbo].[Patients]", "notes", "NVARCHAR(MAX)"),
            column("Patients", "ssn", "char(11)", EncryptionMode::Deterministic),
            column(
                "Visits",
                "cost",
                "decimal(10,2)",
                EncryptionMode::Deterministic,
            ),
        ];
        assert_eq!(messages(&columns, &[]), Vec::<String>::new());
    }

    #[test]
    fn unknown_and_unsupported_types_name_the_entry() {
        let got = messages(
            &[
                randomized("dbo.Patients", "photo", "geography"),
                randomized("dbo.Patients", "bio", "text"),
                randomized("dbo.Patients", "age", "integer"),
            ],
            &[],
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("columns[0].type (dbo.Patients.photo): type `geography`"));
        assert!(got[0].contains("unknown or not encryptable"), "{}", got[0]);
        assert!(
            got[1].contains("columns[1].type (dbo.Patients.bio)"),
            "{}",
            got[1]
        );
        assert!(got[2].contains("write it as `int`"), "{}", got[2]);
    }

    #[test]
    fn lengths_and_precisions_out_of_range_give_the_range() {
        let got = messages(
            &[
                randomized("t", "a", "nvarchar(4001)"),
                randomized("t", "b", "varchar(0)"),
                randomized("t", "c", "decimal(39,2)"),
                randomized("t", "d", "datetime2(8)"),
                randomized("t", "e", "char(max)"),
            ],
            &[],
        );
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(
            got[0].contains("length is out of range (1 to 4000, or max)"),
            "{}",
            got[0]
        );
        assert!(got[1].contains("(1 to 8000, or max)"), "{}", got[1]);
        assert!(got[2].contains("precision must be 1 to 38"), "{}", got[2]);
        assert!(got[3].contains("scale must be 0 to 7"), "{}", got[3]);
        assert!(got[4].starts_with("columns[4].type (t.e)"), "{}", got[4]);
    }

    #[test]
    fn duplicates_are_found_across_spellings_and_databases() {
        let mut in_clinic = randomized("Patients", "SSN", "char(11)");
        in_clinic.database = Some("Clinic".into());
        let mut in_other = randomized("dbo.Patients", "ssn", "char(11)");
        in_other.database = Some("Other".into());
        let columns = [
            in_clinic,
            in_other,
            randomized("[dbo].[patients]", "[ssn]", "char(11)"),
        ];
        let got = messages(&columns, &[]);
        assert_eq!(
            got,
            ["columns[2] ([dbo].[patients].[ssn]): column is mapped twice, also by columns[0]"]
        );
    }

    #[test]
    fn deterministic_is_refused_where_lookups_make_no_sense() {
        let got = messages(
            &[
                column("t", "flag", "bit", EncryptionMode::Deterministic),
                column("t", "weight", "float", EncryptionMode::Deterministic),
                column("t", "notes", "nvarchar(max)", EncryptionMode::Deterministic),
                column("t", "flag2", "bit", EncryptionMode::Randomized),
            ],
            &[],
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("columns[0].mode (t.flag): deterministic on bit"));
        assert!(got[1].contains("deterministic on float"), "{}", got[1]);
        assert!(got[2].contains("varbinary(max)"), "{}", got[2]);
    }

    #[test]
    fn procedure_parameters_must_name_mapped_columns() {
        let columns = [randomized("dbo.Patients", "ssn", "char(11)")];
        let procedure = |name: &str, params: &[(&str, &str)]| ProcedureConfig {
            procedure: name.into(),
            parameters: params
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        };
        let procedures = [
            procedure("dbo.FindPatient", &[("@ssn", "Patients.SSN")]),
            procedure("FindPatient", &[("@s", "dbo.Patients.snn"), ("@x", "ssn")]),
        ];
        let got = messages(&columns, &procedures);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("procedures[1] (FindPatient): procedure is listed twice"));
        assert_eq!(
            got[1],
            "procedures[1].parameters (FindPatient): @s: `dbo.Patients.snn` is not a \
             [[columns]] entry"
        );
        assert!(
            got[2].contains("@x: `ssn` is not `table.column`"),
            "{}",
            got[2]
        );
    }

    #[test]
    fn locations_point_at_the_field_or_the_entry() {
        let text = "[[columns]]\ntable = \"t\"\ncolumn = \"a\"\ntype = \"int\"\n\n\
                    [[columns]]\ntable = \"t\"\ncolumn = \"b\"\ntype = \"nvarchar(9000)\"\n\
                    [[columns]]\ntable = \"t\"\ncolumn = \"a\"\ntype = \"int\"\n";
        let columns = [
            randomized("t", "a", "int"),
            randomized("t", "b", "nvarchar(9000)"),
            randomized("t", "a", "int"),
        ];
        let mut found = problems(&columns, &[]);
        locate(&mut found, Path::new("proxy.toml"), text);
        let got: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("proxy.toml:9: columns[1].type (t.b)"),
            "{}",
            got[0]
        );
        assert!(
            got[1].starts_with("proxy.toml:10: columns[2] (t.a)"),
            "{}",
            got[1]
        );
    }
}
