//! `tdsguard check --live` against the in-process sandbox: a ready schema, a missing column, a
//! column still in its plaintext type, a varbinary column too narrow for its envelopes, a
//! missing key table; and the command as a process, for its exit codes.

mod common;

use std::path::Path;
use std::process::Command;

use tdsguard::cli::admin_client::{self, AdminClient, Credentials, Target};
use tdsguard::cli::check::live::{self, ColumnState, KeyState, LiveReport};
use tdsguard::cli::check::{ColumnPlan, VARBINARY_MAX};
use tdsguard::cli::{init_db, keygen};
use tdsguard::config::{ColumnConfig, EncryptionMode, OnDecryptError};
use tdsguard::crypto::{CompanyKey, KeyTable};

use common::sandbox::{TestSandbox, PASSWORD};

const KEY_TABLE: &str = "dbo.tdsguard_data_keys";

/// The demo map: full_name nvarchar(50) → varbinary(138), ssn char(11) → varbinary(49),
/// notes nvarchar(max) → varbinary(max).
const COLUMNS: [(&str, &str); 3] = [
    ("full_name", "nvarchar(50)"),
    ("ssn", "char(11)"),
    ("notes", "nvarchar(max)"),
];

fn plans() -> Vec<ColumnPlan> {
    COLUMNS
        .iter()
        .map(|(column, ty)| {
            ColumnPlan::new(&ColumnConfig {
                table: "dbo.Patients".into(),
                column: (*column).into(),
                sql_type: (*ty).into(),
                mode: EncryptionMode::Randomized,
                on_decrypt_error: OnDecryptError::Error,
                database: None,
            })
            .unwrap()
        })
        .collect()
}

async fn admin(sandbox: &TestSandbox) -> AdminClient {
    let target = Target::sandbox(sandbox.addr(), Some(&sandbox.cert_pem()));
    let credentials = Credentials::new("sa", PASSWORD);
    admin_client::connect(&target, &credentials, Some("tdsguard"))
        .await
        .expect("administrator login")
}

async fn batch(client: &mut AdminClient, sql: &str) {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
}

fn company_key(dir: &Path) -> CompanyKey {
    let path = dir.join("company.pem");
    keygen::keygen_to(&path, &mut Vec::new()).expect("keygen");
    CompanyKey::load(&path).expect("key loads")
}

/// A sandbox with `dbo.Patients` made by `create` and, when `with_keys`, an initialised key
/// table; returns the report of the live check.
async fn check_schema(create: &str, with_keys: bool) -> (LiveReport, String) {
    let sandbox = TestSandbox::start().await;
    let company = company_key(sandbox.dir.path());
    let table = KeyTable::new(KEY_TABLE).unwrap();
    let mut client = admin(&sandbox).await;
    batch(&mut client, create).await;
    if with_keys {
        init_db::init_db(&mut client, &table, &company, false)
            .await
            .expect("init-db");
    }
    let report = live::check(&mut client, &plans(), &table, Some(&Ok(company)))
        .await
        .expect("live check");
    drop(client);
    sandbox.handle.shutdown().await;

    let mut out = Vec::new();
    live::print_report(&report, &mut out).unwrap();
    (report, String::from_utf8(out).unwrap())
}

fn state<'r>(report: &'r LiveReport, column: &str) -> &'r ColumnState {
    &report
        .columns
        .iter()
        .find(|c| c.plan.column == column)
        .expect("column in report")
        .state
}

const READY: &str = "CREATE TABLE dbo.Patients (id int NOT NULL, full_name varbinary(138), \
                     ssn varbinary(49) NOT NULL, notes varbinary(max))";

#[tokio::test]
async fn a_ready_schema_has_no_statements() {
    let (report, text) = check_schema(READY, true).await;
    assert!(report.is_ready(), "{text}");
    assert!(matches!(report.keys, KeyState::Ready { .. }), "{text}");
    assert_eq!(report.database, "tdsguard");
    for (column, _) in COLUMNS {
        assert!(
            matches!(state(&report, column), ColumnState::Ready(_)),
            "{text}"
        );
    }
    assert!(!text.contains("ALTER"), "{text}");
    assert!(
        text.contains("ready: every mapped column and the key table"),
        "{text}"
    );
    assert_eq!(plans()[2].storage_len, VARBINARY_MAX);
}

#[tokio::test]
async fn a_missing_column_gets_an_add() {
    let create = "CREATE TABLE dbo.Patients (id int, full_name varbinary(138), \
                  notes varbinary(max))";
    let (report, text) = check_schema(create, true).await;
    assert!(!report.is_ready());
    assert!(
        matches!(state(&report, "ssn"), ColumnState::ColumnMissing { .. }),
        "{text}"
    );
    assert!(
        text.contains("COLUMN MISSING (needs varbinary(49))"),
        "{text}"
    );
    assert!(
        text.contains("ALTER TABLE [dbo].[Patients] ADD [ssn] varbinary(49) NULL;"),
        "{text}"
    );
}

#[tokio::test]
async fn a_plaintext_column_gets_an_alter_and_the_migration_note() {
    let create = "CREATE TABLE dbo.Patients (id int, full_name nvarchar(50), \
                  ssn varbinary(49) NOT NULL, notes nvarchar(max) NOT NULL)";
    let (report, text) = check_schema(create, true).await;
    assert!(!report.is_ready());
    assert!(
        matches!(state(&report, "full_name"), ColumnState::Plaintext(_)),
        "{text}"
    );
    assert!(
        text.contains("NEEDS MIGRATION: still nvarchar(50), needs varbinary(138)"),
        "{text}"
    );
    assert!(
        text.contains("ALTER TABLE [dbo].[Patients] ALTER COLUMN [full_name] varbinary(138) NULL;"),
        "{text}"
    );
    assert!(
        text.contains("ALTER TABLE [dbo].[Patients] ALTER COLUMN [notes] varbinary(max) NOT NULL;"),
        "{text}"
    );
    assert!(text.contains("must have its values migrated"), "{text}");
    assert!(text.contains("not ready: 2 column(s) need work"), "{text}");
}

#[tokio::test]
async fn a_narrow_varbinary_is_widened() {
    let create = "CREATE TABLE dbo.Patients (id int, full_name varbinary(100), \
                  ssn varbinary(49) NOT NULL, notes varbinary(8000))";
    let (report, text) = check_schema(create, true).await;
    assert!(
        matches!(state(&report, "full_name"), ColumnState::TooNarrow(_)),
        "{text}"
    );
    assert!(
        matches!(state(&report, "notes"), ColumnState::TooNarrow(_)),
        "{text}"
    );
    assert!(
        text.contains("TOO NARROW: varbinary(100), needs varbinary(138)"),
        "{text}"
    );
    assert!(
        text.contains("ALTER TABLE [dbo].[Patients] ALTER COLUMN [notes] varbinary(max) NULL;"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_key_table_is_not_ready() {
    let (report, text) = check_schema(READY, false).await;
    assert_eq!(report.keys, KeyState::TableMissing);
    assert!(report.columns.iter().all(|c| c.state.is_ready()), "{text}");
    assert!(!report.is_ready());
    assert!(text.contains("MISSING: run `tdsguard init-db`"), "{text}");
    assert!(
        text.contains("not ready: 0 column(s) and the key table"),
        "{text}"
    );
}

/// Writes a config for the embedded sandbox over `dir/sandbox.db`.
fn write_config(dir: &Path, columns: &str) -> std::path::PathBuf {
    let path = dir.join("proxy.toml");
    let text = format!(
        "[listen]\ndata_dir = {data:?}\n\
         [sandbox]\ndata_file = {db:?}\nusers = [{{ name = \"sa\", password = {PASSWORD:?} }}]\n\
         [keys]\ncompany_key_file = {key:?}\n{columns}",
        data = dir.display().to_string(),
        db = dir.join("sandbox.db").display().to_string(),
        key = dir.join("company.pem").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run_check(config: &Path) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tdsguard"))
        .args(["check", "--live", "--config"])
        .arg(config)
        .env_remove("TDSGUARD_ADMIN_USER")
        .env_remove("TDSGUARD_ADMIN_PASSWORD")
        .env_remove("RUST_LOG")
        .output()
        .expect("tdsguard runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_command_exits_0_when_ready_1_when_not_and_78_on_config_errors() {
    let sandbox = TestSandbox::start().await;
    let company = company_key(sandbox.dir.path());
    let mut client = admin(&sandbox).await;
    batch(&mut client, READY).await;
    batch(
        &mut client,
        "CREATE TABLE dbo.Visits (id int, reason nvarchar(200))",
    )
    .await;
    let table = KeyTable::new(KEY_TABLE).unwrap();
    init_db::init_db(&mut client, &table, &company, false)
        .await
        .unwrap();
    drop(client);
    sandbox.handle.shutdown().await;
    let dir = sandbox.dir.path();

    let mut columns = String::new();
    for (column, ty) in COLUMNS {
        columns += &format!(
            "[[columns]]\ntable = \"dbo.Patients\"\ncolumn = \"{column}\"\ntype = \"{ty}\"\n"
        );
    }
    let config = write_config(dir, &columns);
    let (code, stdout, stderr) = run_check(&config);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("dbo.Patients.ssn"), "{stdout}");
    assert!(stdout.contains("data key 1 unwraps"), "{stdout}");

    columns += "[[columns]]\ntable = \"Visits\"\ncolumn = \"reason\"\ntype = \"nvarchar(200)\"\n";
    let config = write_config(dir, &columns);
    let (code, stdout, stderr) = run_check(&config);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ALTER TABLE [dbo].[Visits] ALTER COLUMN [reason] varbinary(438) NULL;"),
        "{stdout}"
    );

    columns += "[[columns]]\ntable = \"Visits\"\ncolumn = \"reason\"\ntype = \"nvarchar(9000)\"\n";
    let config = write_config(dir, &columns);
    let (code, stdout, stderr) = run_check(&config);
    assert_eq!(code, Some(78), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    assert!(
        stderr.contains("proxy.toml:27: columns[4].type (Visits.reason)"),
        "{stderr}"
    );
    assert!(stderr.contains("also by columns[3]"), "{stderr}");
}
