//! `tdsguard check [--live] [--database NAME]`: validate the configuration, say what each
//! mapped column needs, and (with a login) compare that with the live schema.
//!
//! Offline, every `[[columns]]` and `[[procedures]]` problem is listed with its entry and line
//! (exit 78). A valid map is printed one column a line: plaintext type, mode,
//! `on_decrypt_error` and the `varbinary` storage its largest envelope needs, computed as the
//! proxy computes it when it rewrites CREATE and ALTER TABLE.
//!
//! Live (`--live`, or whenever `TDSGUARD_ADMIN_USER` / `TDSGUARD_ADMIN_PASSWORD` are set), the
//! administrator connection of the key commands reads INFORMATION_SCHEMA.COLUMNS and the key
//! table; see [`live`]. Exit 0 when everything is ready, 1 when something needs work.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use crate::cli::admin_client::{self, Credentials};
use crate::cli::{Cli, EXIT_CONFIG, EXIT_FAILURE};
use crate::config::{
    ColumnConfig, Config, ConfigError, EncryptionMode, OnDecryptError, Overrides, UpstreamMode,
};
use crate::crypto::envelope_len;
use crate::rewrite::column_map::{MappedColumn, PlainType, TableKey};

pub mod live;

/// `varbinary(max)` in the column map's storage length.
pub const VARBINARY_MAX: u16 = 0xFFFF;

/// Arguments of `tdsguard check`.
#[derive(Debug, Clone, Default, Args)]
pub struct CheckArgs {
    /// Also check the live schema and key table (implied when TDSGUARD_ADMIN_USER and
    /// TDSGUARD_ADMIN_PASSWORD are set).
    #[arg(long)]
    pub live: bool,
    /// Database to check live; the login's default database when absent.
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
}

/// One mapped column and the storage its ciphertext needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    /// The entry as written: `dbo.Patients.ssn`.
    pub entry: String,
    /// Canonical database the entry is restricted to; `None` for every database.
    pub database: Option<String>,
    pub table: TableKey,
    /// Canonical column name.
    pub column: String,
    pub plain: PlainType,
    pub mode: EncryptionMode,
    pub on_decrypt_error: OnDecryptError,
    /// `varbinary(n)` length, or [`VARBINARY_MAX`].
    pub storage_len: u16,
}

impl ColumnPlan {
    /// The plan of one validated entry; `None` when the entry does not parse (validation
    /// refuses such a configuration before this is reached).
    pub fn new(column: &ColumnConfig) -> Option<Self> {
        let mapped = MappedColumn::from_config(column).ok()?;
        Some(Self {
            entry: format!("{}.{}", column.table, column.column),
            storage_len: mapped.plain.storage_max_len(envelope_len),
            database: mapped.database,
            table: mapped.table,
            column: mapped.column,
            plain: mapped.plain,
            mode: mapped.mode,
            on_decrypt_error: mapped.on_decrypt_error,
        })
    }

    /// `varbinary(138)` or `varbinary(max)`.
    pub fn storage_type(&self) -> String {
        storage_text(self.storage_len)
    }
}

/// `varbinary(n)` for a storage length, `varbinary(max)` for [`VARBINARY_MAX`].
pub fn storage_text(len: u16) -> String {
    match len {
        VARBINARY_MAX => "varbinary(max)".to_owned(),
        n => format!("varbinary({n})"),
    }
}

/// The plans of every column entry, in file order.
pub fn plan(config: &Config) -> Vec<ColumnPlan> {
    config.columns.iter().filter_map(ColumnPlan::new).collect()
}

/// Runs `tdsguard check`.
pub fn run(cli: &Cli, overrides: &Overrides, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = match admin_client::load_config(cli.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => {
            print_config_error(&err, &mut std::io::stderr().lock())?;
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let plans = plan(&config);
    let mut out = std::io::stdout().lock();
    print_summary(&config, cli.config.as_deref(), &mut out)?;
    print_columns(&plans, &mut out)?;

    if !(args.live || Credentials::from_env().is_some()) {
        return Ok(ExitCode::SUCCESS);
    }
    drop(out);
    super::init_logging(&config.log.level, config.log.format);
    let report = live::run(&config, &plans, args.database.as_deref())?;
    let mut out = std::io::stdout().lock();
    live::print_report(&report, &mut out)?;
    Ok(match report.is_ready() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(EXIT_FAILURE),
    })
}

/// A configuration error; entry problems one a line, each with its file and line.
pub fn print_config_error(err: &ConfigError, out: &mut impl Write) -> std::io::Result<()> {
    let ConfigError::Entries(problems) = err else {
        return writeln!(out, "tdsguard: configuration error: {err}");
    };
    writeln!(
        out,
        "tdsguard: configuration error: {} problem(s) in [[columns]] / [[procedures]]",
        problems.len()
    )?;
    for problem in problems {
        writeln!(out, "  {problem}")?;
    }
    Ok(())
}

/// What the configuration sets up, a line per part.
pub fn print_summary(
    config: &Config,
    file: Option<&Path>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match file {
        Some(path) => writeln!(out, "configuration ok ({})", path.display())?,
        None => writeln!(out, "configuration ok")?,
    }
    writeln!(
        out,
        "  listen      {} (tls {:?})",
        config.listen.address, config.listen.tls
    )?;
    match config.upstream.mode {
        UpstreamMode::Embedded => writeln!(out, "  upstream    embedded sandbox")?,
        UpstreamMode::Server => writeln!(
            out,
            "  upstream    {}:{} ({:?})",
            config.upstream.host.as_deref().unwrap_or(""),
            config.upstream.port,
            config.upstream.encryption
        )?,
    }
    writeln!(out, "  key table   {}", config.keys.key_table)?;
    writeln!(out, "  columns     {} mapped", config.columns.len())?;
    writeln!(out, "  procedures  {} mapped", config.procedures.len())
}

/// One line per mapped column: plaintext type, mode, on_decrypt_error, storage type.
pub fn print_columns(plans: &[ColumnPlan], out: &mut impl Write) -> std::io::Result<()> {
    if plans.is_empty() {
        return Ok(());
    }
    let width = plans.iter().map(|p| p.entry.len()).max().unwrap_or(0);
    writeln!(out)?;
    writeln!(
        out,
        "  {:width$}  {:18}  {:13}  {:16}  storage",
        "column", "plaintext", "mode", "on_decrypt_error"
    )?;
    for p in plans {
        writeln!(
            out,
            "  {:width$}  {:18}  {:13}  {:16}  {}",
            p.entry,
            p.plain.canonical(),
            mode_name(p.mode),
            on_error_name(p.on_decrypt_error),
            p.storage_type()
        )?;
    }
    Ok(())
}

fn mode_name(mode: EncryptionMode) -> &'static str {
    match mode {
        EncryptionMode::Randomized => "randomized",
        EncryptionMode::Deterministic => "deterministic",
    }
}

fn on_error_name(on_error: OnDecryptError) -> &'static str {
    match on_error {
        OnDecryptError::Error => "error",
        OnDecryptError::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, Source};

    fn shipped_config() -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
        let source = Source {
            file: Some(path),
            env: vec![],
        };
        Config::load(&source, &Overrides::default()).unwrap()
    }

    #[test]
    fn storage_follows_the_envelope_size() {
        let config = shipped_config();
        let plans = plan(&config);
        let storage = |column: &str| {
            plans
                .iter()
                .find(|p| p.column == column)
                .map(ColumnPlan::storage_type)
        };
        // char(11): 11 bytes plus the 38-byte envelope overhead.
        assert_eq!(storage("ssn").as_deref(), Some("varbinary(49)"));
        // nvarchar(50): 100 bytes of UCS-2 plus 38.
        assert_eq!(storage("full_name").as_deref(), Some("varbinary(138)"));
        assert_eq!(storage("birth_date").as_deref(), Some("varbinary(41)"));
        assert_eq!(storage("notes").as_deref(), Some("varbinary(max)"));
    }

    #[test]
    fn column_lines_give_type_mode_and_storage() {
        let plans = plan(&shipped_config());
        let mut out = Vec::new();
        print_columns(&plans, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let ssn = text.lines().find(|l| l.contains("ssn")).unwrap();
        let words: Vec<&str> = ssn.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "dbo.Patients.ssn",
                "char(11)",
                "deterministic",
                "error",
                "varbinary(49)"
            ]
        );
    }

    #[test]
    fn entry_problems_are_printed_one_a_line() {
        let column = ColumnConfig {
            table: "t".into(),
            column: "c".into(),
            sql_type: "nvarchar(5000)".into(),
            mode: EncryptionMode::Randomized,
            on_decrypt_error: OnDecryptError::Error,
            database: None,
        };
        let mut config = shipped_config();
        config.columns = vec![column.clone(), column];
        let err = config.validate().unwrap_err();
        let mut out = Vec::new();
        print_config_error(&err, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].ends_with("3 problem(s) in [[columns]] / [[procedures]]"));
        assert!(lines[1].starts_with("  columns[0].type (t.c): type `nvarchar(5000)`"));
        assert!(lines[3].contains("also by columns[0]"), "{text}");
    }
}
