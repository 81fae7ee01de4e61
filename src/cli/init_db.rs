//! `tdsguard init-db [--database NAME] [--replace]`: create the key table in a database and
//! store a new random data key wrapped under the company key (docs/FORMAT.md, "Key table").
//!
//! An existing data key is never replaced silently: envelopes sealed under it stop opening once
//! its row is gone. `--replace` deletes every row and stores a key with a fresh id (one above
//! the highest seen), so old envelopes fail as "unknown data key" rather than as tampered.
//! Output names key ids and fingerprints only, never key material.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cli::admin_client::{self, AdminClient};
use crate::config::Config;
use crate::crypto::{rotate, CompanyKey, DataKeyCache, DataKeyId, Fingerprint, KeyTable};

/// What `init-db` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    pub table_created: bool,
    pub key_id: DataKeyId,
    pub fingerprint: Fingerprint,
    /// Rows deleted by `--replace`.
    pub replaced_rows: usize,
}

/// Runs `tdsguard init-db` with the loaded configuration.
pub fn run(config: &Config, database: Option<&str>, replace: bool) -> anyhow::Result<ExitCode> {
    let company = load_company_key(config)?;
    let table = key_table(config)?;
    let report = admin_client::run_as_admin(config, database, async |client| {
        init_db(client, &table, &company, replace).await
    })?;

    print_report(&report, &table, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// The company key named by `keys.company_key_file`, with the crypto layer's checks (mode 0600).
pub fn load_company_key(config: &Config) -> anyhow::Result<CompanyKey> {
    let path = company_key_path(config)?;
    Ok(CompanyKey::load(&path)?)
}

fn company_key_path(config: &Config) -> anyhow::Result<PathBuf> {
    match &config.keys.company_key_file {
        Some(path) => Ok(path.clone()),
        None => bail!(
            "keys.company_key_file is not set: make a key with `tdsguard keygen --out FILE` \
             and name it in [keys]"
        ),
    }
}

/// The validated `keys.key_table`.
pub fn key_table(config: &Config) -> anyhow::Result<KeyTable> {
    KeyTable::new(&config.keys.key_table).context("keys.key_table")
}

/// Creates the table if missing and stores a new data key for the connected database.
pub async fn init_db(
    client: &mut AdminClient,
    table: &KeyTable,
    company: &CompanyKey,
    replace: bool,
) -> anyhow::Result<InitReport> {
    let (existing, table_created) = match admin_client::read_rows(client, table).await? {
        Some(rows) => (rows, false),
        None => {
            admin_client::create_table(client, table).await?;
            (Vec::new(), true)
        }
    };
    if !existing.is_empty() && !replace {
        bail!("{}", refusal(table, &existing, company.fingerprint()));
    }

    let (key, wrapped) = rotate(&existing, company)?;
    admin_client::transaction(client, "BEGIN TRANSACTION").await?;
    let stored = async {
        let deleted = match existing.is_empty() {
            true => 0,
            false => admin_client::delete_rows(client, table, None).await?,
        };
        admin_client::insert_row(client, table, &wrapped).await?;
        anyhow::Ok(deleted)
    }
    .await;
    finish_transaction(client, stored.is_ok()).await?;
    let deleted = stored?;

    verify_stored(client, table, company, key.id()).await?;
    Ok(InitReport {
        table_created,
        key_id: key.id(),
        fingerprint: company.fingerprint(),
        replaced_rows: usize::try_from(deleted).unwrap_or(usize::MAX),
    })
}

/// Commits on success, rolls back otherwise.
pub(crate) async fn finish_transaction(
    client: &mut AdminClient,
    success: bool,
) -> anyhow::Result<()> {
    let statement = if success {
        "COMMIT TRANSACTION"
    } else {
        "ROLLBACK TRANSACTION"
    };
    admin_client::transaction(client, statement).await
}

/// Reads the row back and unwraps it, so a stored key is known to work before we say so.
async fn verify_stored(
    client: &mut AdminClient,
    table: &KeyTable,
    company: &CompanyKey,
    key_id: DataKeyId,
) -> anyhow::Result<()> {
    let rows = admin_client::read_rows(client, table)
        .await?
        .unwrap_or_default();
    let row = rows
        .iter()
        .find(|row| row.key_id == key_id && row.company_key == company.fingerprint())
        .with_context(|| {
            format!(
                "data key {key_id} is not in {} after storing it",
                table.name()
            )
        })?;
    DataKeyCache::new()
        .unwrap(row, company)
        .with_context(|| format!("data key {key_id} does not unwrap after storing it"))?;
    Ok(())
}

fn refusal(
    table: &KeyTable,
    existing: &[crate::crypto::WrappedDataKey],
    ours: Fingerprint,
) -> String {
    let ids: Vec<String> = existing
        .iter()
        .map(|row| match row.company_key == ours {
            true => format!("{} (this company key)", row.key_id),
            false => format!("{} (company key {})", row.key_id, row.company_key),
        })
        .collect();
    format!(
        "{} already holds data keys: {}; values encrypted under them become unreadable if they \
         are replaced. Use `tdsguard rotate-data-key` to add a key, or --replace to discard them",
        table.name(),
        ids.join(", ")
    )
}

/// Prints what was done: ids and fingerprints only.
pub fn print_report(
    report: &InitReport,
    table: &KeyTable,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if report.table_created {
        writeln!(out, "created key table {}", table.name())?;
    }
    if report.replaced_rows > 0 {
        writeln!(
            out,
            "replaced {} existing key row(s); values sealed under them no longer decrypt",
            report.replaced_rows
        )?;
    }
    writeln!(out, "data key id: {}", report.key_id)?;
    writeln!(
        out,
        "wrapped under company key (fingerprint): {}",
        report.fingerprint
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_id_and_fingerprint_only() {
        let table = KeyTable::new("dbo.k").unwrap();
        let fingerprint = Fingerprint::from_slice(&[0xab; 32]).unwrap();
        let report = InitReport {
            table_created: true,
            key_id: DataKeyId::new(1).unwrap(),
            fingerprint,
            replaced_rows: 0,
        };
        let mut out = Vec::new();
        print_report(&report, &table, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("created key table [dbo].[k]"), "{text}");
        assert!(text.contains("data key id: 1"), "{text}");
        assert!(text.contains(&"ab".repeat(32)), "{text}");
    }

    #[test]
    fn missing_key_file_setting_says_how_to_fix() {
        let config = Config::load(
            &crate::config::Source {
                file: None,
                env: vec![],
            },
            &crate::config::Overrides::default(),
        )
        .unwrap();
        let error = load_company_key(&config).unwrap_err().to_string();
        assert!(error.contains("tdsguard keygen"), "{error}");
    }
}
