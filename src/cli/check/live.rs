//! The live half of `tdsguard check`: each mapped column against INFORMATION_SCHEMA.COLUMNS,
//! and the key table, over the administrator connection of the key commands.
//!
//! A column is ready when the server holds it as `varbinary` at least as wide as its largest
//! envelope. For any other state the report gives the ALTER TABLE a DBA would run. Those
//! statements change the column's type only: they do not encrypt, and a column that holds
//! plaintext must have its values migrated (read as plaintext, written back through the
//! proxy), which this command does not do.

use std::io::Write;

use anyhow::{bail, Context};

use crate::cli::admin_client::{self, AdminClient};
use crate::cli::check::{ColumnPlan, VARBINARY_MAX};
use crate::config::{Config, UpstreamMode};
use crate::crypto::demo::DEMO_KEY_FILE;
use crate::crypto::{CompanyKey, DataKeyCache, DataKeyId, Fingerprint, KeyTable};
use crate::rewrite::column_map::{canonical_ident, TableKey};

/// Most INFORMATION_SCHEMA.COLUMNS rows read for one table name: a wide table has up to
/// 30,000 columns ("Maximum capacity specifications for SQL Server"). The server is the
/// configured upstream; the cap keeps a runaway answer from being taken as a schema.
pub const MAX_SCHEMA_ROWS: usize = 30_000;

/// The columns of every table with a given (lower-case) name, as SQL Server describes them.
/// LOWER makes the match independent of the catalog's collation.
const SCHEMA_SQL: &str = "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, \
     CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS WHERE LOWER(TABLE_NAME) = @P1";

/// One row of INFORMATION_SCHEMA.COLUMNS, names as the server spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveColumn {
    pub schema: String,
    pub table: String,
    pub column: String,
    /// `DATA_TYPE`, lower case: `nvarchar`, `varbinary`, `int` ...
    pub data_type: String,
    /// `CHARACTER_MAXIMUM_LENGTH`: characters or bytes, -1 for `(max)`, `None` otherwise.
    pub max_length: Option<i32>,
    pub nullable: bool,
}

impl LiveColumn {
    /// `nvarchar(50)`, `varbinary(max)`, `int`.
    pub fn type_text(&self) -> String {
        match self.max_length {
            Some(-1) => format!("{}(max)", self.data_type),
            Some(n) => format!("{}({n})", self.data_type),
            None => self.data_type.clone(),
        }
    }
}

/// What the live schema says about one mapped column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnState {
    /// `varbinary`, wide enough.
    Ready(LiveColumn),
    /// The table does not exist in the database.
    TableMissing,
    /// The table exists without the column.
    ColumnMissing { schema: String, table: String },
    /// Still the plaintext type the application uses: needs migration.
    Plaintext(LiveColumn),
    /// Neither the plaintext type nor varbinary (`binary(n)` included: it pads values).
    OtherType(LiveColumn),
    /// `varbinary`, narrower than the largest envelope.
    TooNarrow(LiveColumn),
    /// The entry is restricted to another database.
    OtherDatabase(String),
}

/// One mapped column and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnReport {
    pub plan: ColumnPlan,
    pub state: ColumnState,
}

/// What the key table says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// The table does not exist.
    TableMissing,
    /// The table exists without rows.
    Empty,
    /// Rows exist; no company key was available to test them.
    Unverified { rows: usize },
    /// No row is wrapped under the company key.
    NotForThisCompanyKey {
        fingerprint: Fingerprint,
        rows: usize,
    },
    /// The newest data key of the company key unwraps.
    Ready {
        key_id: DataKeyId,
        fingerprint: Fingerprint,
    },
    /// A row of the company key does not unwrap (tampered, or a different key pair).
    DoesNotUnwrap { key_id: DataKeyId, reason: String },
    /// The configured company key file could not be loaded.
    CompanyKeyUnreadable(String),
}

/// The whole live report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveReport {
    /// `DB_NAME()` of the connection.
    pub database: String,
    pub key_table: String,
    pub keys: KeyState,
    pub columns: Vec<ColumnReport>,
}

impl ColumnState {
    /// Whether the proxy can store this column as it is.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready(_) | Self::OtherDatabase(_))
    }
}

impl KeyState {
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready { .. } | Self::Unverified { .. })
    }
}

impl LiveReport {
    /// Whether the proxy can serve this database as configured.
    pub fn is_ready(&self) -> bool {
        self.keys.is_ready() && self.columns.iter().all(|c| c.state.is_ready())
    }
}

/// Connects as the administrator (starting the embedded sandbox when configured) and checks.
pub fn run(
    config: &Config,
    plans: &[ColumnPlan],
    database: Option<&str>,
) -> anyhow::Result<LiveReport> {
    let table = KeyTable::new(&config.keys.key_table).context("keys.key_table")?;
    let company = company_key(config);
    admin_client::run_as_admin(config, database, async |client| {
        check(client, plans, &table, company.as_ref()).await
    })
}

/// The company key to test the data keys with: the configured file, else (embedded sandbox)
/// the demo key if `serve` made one. `None` when there is none; an error when it is unreadable.
pub fn company_key(config: &Config) -> Option<Result<CompanyKey, String>> {
    let path = match &config.keys.company_key_file {
        Some(path) => path.clone(),
        None if config.upstream.mode == UpstreamMode::Embedded => {
            Some(config.listen.data_dir.join(DEMO_KEY_FILE)).filter(|p| p.exists())?
        }
        None => return None,
    };
    Some(CompanyKey::load(&path).map_err(|e| format!("{}: {e}", path.display())))
}

/// Checks the connected database.
pub async fn check(
    client: &mut AdminClient,
    plans: &[ColumnPlan],
    table: &KeyTable,
    company: Option<&Result<CompanyKey, String>>,
) -> anyhow::Result<LiveReport> {
    let database = current_database(client).await?;
    let keys = key_state(client, table, company).await?;
    let mut columns = Vec::with_capacity(plans.len());
    let mut schema_rows: Vec<(String, Vec<LiveColumn>)> = Vec::new();
    for plan in plans {
        if let Some(other) = plan
            .database
            .as_ref()
            .filter(|d| **d != canonical_ident(&database))
        {
            columns.push(report(plan, ColumnState::OtherDatabase(other.clone())));
            continue;
        }
        let known = schema_rows.iter().position(|(t, _)| *t == plan.table.table);
        let index = match known {
            Some(index) => index,
            None => {
                let rows = table_columns(client, &plan.table.table).await?;
                schema_rows.push((plan.table.table.clone(), rows));
                schema_rows.len() - 1
            }
        };
        columns.push(report(plan, classify(plan, &schema_rows[index].1)));
    }
    Ok(LiveReport {
        database,
        key_table: table.name().to_owned(),
        keys,
        columns,
    })
}

fn report(plan: &ColumnPlan, state: ColumnState) -> ColumnReport {
    ColumnReport {
        plan: plan.clone(),
        state,
    }
}

async fn current_database(client: &mut AdminClient) -> anyhow::Result<String> {
    let row = client
        .simple_query("SELECT DB_NAME()")
        .await?
        .into_row()
        .await
        .context("reading DB_NAME()")?;
    let name: Option<&str> = row.as_ref().map(|r| r.try_get(0)).transpose()?.flatten();
    name.map(str::to_owned)
        .context("DB_NAME() returned no database")
}

/// INFORMATION_SCHEMA.COLUMNS rows of every table called `name` (any schema).
async fn table_columns(client: &mut AdminClient, name: &str) -> anyhow::Result<Vec<LiveColumn>> {
    let rows = client
        .query(SCHEMA_SQL, &[&name])
        .await?
        .into_first_result()
        .await
        .with_context(|| format!("reading INFORMATION_SCHEMA.COLUMNS of {name}"))?;
    // TODO(tdsguard): tiberius collects the whole result before the cap is checked.
    if rows.len() > MAX_SCHEMA_ROWS {
        bail!("INFORMATION_SCHEMA.COLUMNS has more than {MAX_SCHEMA_ROWS} rows for {name}");
    }
    rows.iter().map(live_column).collect()
}

fn live_column(row: &tiberius::Row) -> anyhow::Result<LiveColumn> {
    let text = |i: usize| -> anyhow::Result<String> {
        let value: Option<&str> = row.try_get(i)?;
        Ok(value.unwrap_or_default().to_owned())
    };
    Ok(LiveColumn {
        schema: text(0)?,
        table: text(1)?,
        column: text(2)?,
        data_type: text(3)?.to_ascii_lowercase(),
        max_length: row.try_get(4)?,
        nullable: text(5)?.eq_ignore_ascii_case("yes"),
    })
}

/// The state of a mapped column among the rows of tables with its table's name.
pub fn classify(plan: &ColumnPlan, rows: &[LiveColumn]) -> ColumnState {
    let in_table: Vec<&LiveColumn> = rows.iter().filter(|r| same_table(r, &plan.table)).collect();
    let Some(first) = in_table.first() else {
        return ColumnState::TableMissing;
    };
    let Some(column) = in_table
        .iter()
        .find(|r| canonical_ident(&r.column) == plan.column)
    else {
        return ColumnState::ColumnMissing {
            schema: first.schema.clone(),
            table: first.table.clone(),
        };
    };
    let column = (*column).clone();
    if column.data_type == "varbinary" {
        return match wide_enough(column.max_length, plan.storage_len) {
            true => ColumnState::Ready(column),
            false => ColumnState::TooNarrow(column),
        };
    }
    match is_plaintext_type(&column, plan) {
        true => ColumnState::Plaintext(column),
        false => ColumnState::OtherType(column),
    }
}

fn same_table(row: &LiveColumn, table: &TableKey) -> bool {
    canonical_ident(&row.schema) == table.schema && canonical_ident(&row.table) == table.table
}

/// Whether `varbinary(found)` (-1 for max) holds envelopes of `needed` bytes.
fn wide_enough(found: Option<i32>, needed: u16) -> bool {
    match (found, needed) {
        (Some(-1), _) => true,
        (_, VARBINARY_MAX) => false,
        (Some(n), needed) => n >= i32::from(needed),
        (None, _) => false,
    }
}

/// Whether the server's type is the configured plaintext type (`numeric` for `decimal`;
/// precision and scale are not compared).
fn is_plaintext_type(column: &LiveColumn, plan: &ColumnPlan) -> bool {
    let canonical = plan.plain.canonical();
    let base = canonical.split('(').next().unwrap_or_default();
    let found = match column.data_type.as_str() {
        "numeric" => "decimal",
        other => other,
    };
    match column.max_length {
        Some(_) => column.type_text() == canonical,
        None => found == base,
    }
}

async fn key_state(
    client: &mut AdminClient,
    table: &KeyTable,
    company: Option<&Result<CompanyKey, String>>,
) -> anyhow::Result<KeyState> {
    let Some(rows) = admin_client::read_rows(client, table).await? else {
        return Ok(KeyState::TableMissing);
    };
    if rows.is_empty() {
        return Ok(KeyState::Empty);
    }
    let company = match company {
        None => return Ok(KeyState::Unverified { rows: rows.len() }),
        Some(Err(reason)) => return Ok(KeyState::CompanyKeyUnreadable(reason.clone())),
        Some(Ok(company)) => company,
    };
    let fingerprint = company.fingerprint();
    let Some(newest) = rows
        .iter()
        .filter(|r| r.company_key == fingerprint)
        .max_by_key(|r| r.key_id)
    else {
        return Ok(KeyState::NotForThisCompanyKey {
            fingerprint,
            rows: rows.len(),
        });
    };
    Ok(match DataKeyCache::new().unwrap(newest, company) {
        Ok(_) => KeyState::Ready {
            key_id: newest.key_id,
            fingerprint,
        },
        Err(e) => KeyState::DoesNotUnwrap {
            key_id: newest.key_id,
            reason: e.to_string(),
        },
    })
}

/// The report: the key table, a line per column, then the statements for the DBA.
pub fn print_report(report: &LiveReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "live schema of database {}", report.database)?;
    writeln!(
        out,
        "  key table {}: {}",
        report.key_table,
        key_line(&report.keys)
    )?;
    let width = report
        .columns
        .iter()
        .map(|c| c.plan.entry.len())
        .max()
        .unwrap_or(0);
    for column in &report.columns {
        let line = state_line(&column.state, &column.plan);
        writeln!(out, "  {:width$}  {line}", column.plan.entry)?;
    }
    print_statements(report, out)?;
    let pending = report
        .columns
        .iter()
        .filter(|c| !c.state.is_ready())
        .count();
    match report.is_ready() {
        true => writeln!(out, "\nready: every mapped column and the key table"),
        false => writeln!(
            out,
            "\nnot ready: {pending} column(s){} need work",
            if report.keys.is_ready() {
                ""
            } else {
                " and the key table"
            }
        ),
    }
}

fn key_line(keys: &KeyState) -> String {
    match keys {
        KeyState::TableMissing => {
            "MISSING: run `tdsguard init-db` (serve creates it for the embedded sandbox)".into()
        }
        KeyState::Empty => "EMPTY: no data key; run `tdsguard init-db`".into(),
        KeyState::Unverified { rows } => {
            format!("ok, {rows} data key row(s); not unwrapped (no company key configured)")
        }
        KeyState::NotForThisCompanyKey { fingerprint, rows } => format!(
            "NO KEY for company key {fingerprint} among {rows} row(s): run `tdsguard rewrap` \
             with the old key, or `tdsguard init-db --replace`"
        ),
        KeyState::Ready {
            key_id,
            fingerprint,
        } => format!("ok, data key {key_id} unwraps under company key {fingerprint}"),
        KeyState::DoesNotUnwrap { key_id, reason } => {
            format!("DATA KEY {key_id} DOES NOT UNWRAP: {reason}")
        }
        KeyState::CompanyKeyUnreadable(reason) => format!("company key unreadable: {reason}"),
    }
}

fn state_line(state: &ColumnState, plan: &ColumnPlan) -> String {
    let needed = plan.storage_type();
    match state {
        ColumnState::Ready(c) => format!("ok ({})", c.type_text()),
        ColumnState::TableMissing => format!("TABLE MISSING (create it with {needed})"),
        ColumnState::ColumnMissing { .. } => format!("COLUMN MISSING (needs {needed})"),
        ColumnState::Plaintext(c) => {
            format!("NEEDS MIGRATION: still {}, needs {needed}", c.type_text())
        }
        ColumnState::OtherType(c) => format!(
            "WRONG TYPE: {}, neither {} nor {needed}",
            c.type_text(),
            plan.plain.canonical()
        ),
        ColumnState::TooNarrow(c) => format!("TOO NARROW: {}, needs {needed}", c.type_text()),
        ColumnState::OtherDatabase(db) => format!("skipped: mapped in database {db} only"),
    }
}

/// The ALTER TABLE statements for every column that is not ready.
fn print_statements(report: &LiveReport, out: &mut impl Write) -> std::io::Result<()> {
    let statements: Vec<String> = report
        .columns
        .iter()
        .filter_map(|c| alter_statement(&c.state, &c.plan))
        .collect();
    let mut missing_tables: Vec<String> = report
        .columns
        .iter()
        .filter(|c| c.state == ColumnState::TableMissing)
        .map(|c| c.plan.table.to_string())
        .collect();
    missing_tables.dedup();
    if statements.is_empty() && missing_tables.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nstatements for the DBA (review before running):")?;
    for statement in &statements {
        writeln!(out, "  {statement}")?;
    }
    if !missing_tables.is_empty() {
        writeln!(
            out,
            "  -- missing table(s) {}: create them through the proxy, which declares\n  \
             -- mapped columns as varbinary",
            missing_tables.join(", ")
        )?;
    }
    writeln!(
        out,
        "note: ALTER COLUMN changes the type only, it does not encrypt. A column that holds\n      \
         plaintext must have its values migrated (read, then written back through the\n      \
         proxy); tdsguard does not do this. Widening a varbinary column keeps its envelopes."
    )
}

/// The statement that makes one column ready, if a statement can.
pub fn alter_statement(state: &ColumnState, plan: &ColumnPlan) -> Option<String> {
    let needed = plan.storage_type();
    let (c, action) = match state {
        ColumnState::Plaintext(c) | ColumnState::OtherType(c) | ColumnState::TooNarrow(c) => {
            (c, "ALTER COLUMN")
        }
        ColumnState::ColumnMissing { schema, table } => {
            let table = quote_table(schema, table);
            let column = quote(&plan.column);
            return Some(format!("ALTER TABLE {table} ADD {column} {needed} NULL;"));
        }
        ColumnState::Ready(_) | ColumnState::TableMissing | ColumnState::OtherDatabase(_) => {
            return None
        }
    };
    let null = if c.nullable { "NULL" } else { "NOT NULL" };
    Some(format!(
        "ALTER TABLE {} {action} {} {needed} {null};",
        quote_table(&c.schema, &c.table),
        quote(&c.column),
    ))
}

/// `[schema].[table]`.
fn quote_table(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

/// A bracket-quoted identifier (`]` doubled, as T-SQL's QUOTENAME does).
fn quote(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ColumnConfig, EncryptionMode, OnDecryptError};

    fn plan(table: &str, column: &str, ty: &str) -> ColumnPlan {
        ColumnPlan::new(&ColumnConfig {
            table: table.into(),
            column: column.into(),
            sql_type: ty.into(),
            mode: EncryptionMode::Randomized,
            on_decrypt_error: OnDecryptError::Error,
            database: None,
        })
        .unwrap()
    }

    fn live(column: &str, data_type: &str, max_length: Option<i32>, nullable: bool) -> LiveColumn {
        LiveColumn {
            schema: "dbo".into(),
            table: "Patients".into(),
            column: column.into(),
            data_type: data_type.into(),
            max_length,
            nullable,
        }
    }

    #[test]
    fn columns_are_classified_by_type_and_width() {
        let ssn = plan("dbo.Patients", "SSN", "char(11)");
        let rows = |c: LiveColumn| vec![live("id", "int", None, false), c];
        let state = |c: LiveColumn| classify(&ssn, &rows(c));
        assert!(matches!(
            state(live("ssn", "varbinary", Some(49), true)),
            ColumnState::Ready(_)
        ));
        assert!(matches!(
            state(live("ssn", "varbinary", Some(-1), true)),
            ColumnState::Ready(_)
        ));
        assert!(matches!(
            state(live("ssn", "varbinary", Some(48), true)),
            ColumnState::TooNarrow(_)
        ));
        assert!(matches!(
            state(live("ssn", "char", Some(11), true)),
            ColumnState::Plaintext(_)
        ));
        assert!(matches!(
            state(live("ssn", "binary", Some(49), true)),
            ColumnState::OtherType(_)
        ));
        assert!(matches!(
            state(live("other", "int", None, true)),
            ColumnState::ColumnMissing { .. }
        ));
        assert_eq!(
            classify(
                &plan("dbo.Visits", "ssn", "char(11)"),
                &rows(live("ssn", "char", Some(11), true))
            ),
            ColumnState::TableMissing
        );
    }

    #[test]
    fn max_plaintext_needs_varbinary_max() {
        let notes = plan("Patients", "notes", "nvarchar(max)");
        let state = classify(&notes, &[live("notes", "varbinary", Some(8000), true)]);
        assert!(matches!(state, ColumnState::TooNarrow(_)), "{state:?}");
        let state = classify(&notes, &[live("notes", "nvarchar", Some(-1), true)]);
        assert!(matches!(state, ColumnState::Plaintext(_)), "{state:?}");
    }

    #[test]
    fn decimal_matches_numeric_without_comparing_precision() {
        let cost = plan("Patients", "cost", "decimal(10,2)");
        let state = classify(&cost, &[live("cost", "numeric", None, true)]);
        assert!(matches!(state, ColumnState::Plaintext(_)), "{state:?}");
    }

    #[test]
    fn alter_statements_quote_names_and_keep_nullability() {
        let ssn = plan("dbo.Patients", "ssn", "char(11)");
        let column = live("S]N", "char", Some(11), false);
        assert_eq!(
            alter_statement(&ColumnState::Plaintext(column), &ssn).unwrap(),
            "ALTER TABLE [dbo].[Patients] ALTER COLUMN [S]]N] varbinary(49) NOT NULL;"
        );
        let missing = ColumnState::ColumnMissing {
            schema: "dbo".into(),
            table: "Patients".into(),
        };
        assert_eq!(
            alter_statement(&missing, &ssn).unwrap(),
            "ALTER TABLE [dbo].[Patients] ADD [ssn] varbinary(49) NULL;"
        );
        let ready = ColumnState::Ready(live("ssn", "varbinary", Some(49), true));
        assert_eq!(alter_statement(&ready, &ssn), None);
    }
}
