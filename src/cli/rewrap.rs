//! `tdsguard rewrap --new-key FILE [--keep-old]`: company key rotation. Every data key row of
//! the current company key (`keys.company_key_file`) is unwrapped and wrapped again, same id and
//! same 32 bytes, under the new key (docs/FORMAT.md, "Rewrap"). No envelope changes.
//!
//! All rows change in one transaction. The old key's rows are then deleted, so the old company
//! key no longer opens anything in this database; `--keep-old` keeps them while proxies still
//! holding the old key are moved to the new one.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cli::admin_client::{self, AdminClient};
use crate::cli::init_db::{finish_transaction, key_table, load_company_key};
use crate::config::Config;
use crate::crypto::{rewrap as rewrap_row, CompanyKey, DataKeyId, Fingerprint, KeyTable};

/// What `rewrap` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapReport {
    pub from: Fingerprint,
    pub to: Fingerprint,
    /// Ids wrapped under the new key by this run.
    pub rewrapped: Vec<DataKeyId>,
    /// Ids that already had a row under the new key (an earlier run).
    pub already_present: Vec<DataKeyId>,
    /// Rows of the old key deleted.
    pub deleted_old: u64,
}

/// Runs `tdsguard rewrap`.
pub fn run(
    config: &Config,
    database: Option<&str>,
    new_key: &Path,
    keep_old: bool,
) -> anyhow::Result<ExitCode> {
    let from = load_company_key(config)?;
    let to = CompanyKey::load(new_key)?;
    let table = key_table(config)?;
    let report = admin_client::run_as_admin(config, database, async |client| {
        rewrap(client, &table, &from, &to, keep_old).await
    })?;

    print_report(&report, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// Wraps every data key of `from` under `to` in one transaction.
pub async fn rewrap(
    client: &mut AdminClient,
    table: &KeyTable,
    from: &CompanyKey,
    to: &CompanyKey,
    keep_old: bool,
) -> anyhow::Result<RewrapReport> {
    if from.fingerprint() == to.fingerprint() {
        bail!(
            "the new company key is the current one ({})",
            from.fingerprint()
        );
    }
    let rows = admin_client::read_rows(client, table)
        .await?
        .with_context(|| format!("{} does not exist: run `tdsguard init-db`", table.name()))?;
    let ours: Vec<_> = rows
        .iter()
        .filter(|r| r.company_key == from.fingerprint())
        .collect();
    if ours.is_empty() {
        bail!(
            "{} holds no data key wrapped under company key {}",
            table.name(),
            from.fingerprint()
        );
    }

    // Unwrapping everything before the first write: a row that fails leaves the table as it was.
    let mut report = RewrapReport {
        from: from.fingerprint(),
        to: to.fingerprint(),
        rewrapped: Vec::new(),
        already_present: Vec::new(),
        deleted_old: 0,
    };
    let mut new_rows = Vec::new();
    for row in ours {
        let present = rows
            .iter()
            .any(|r| r.key_id == row.key_id && r.company_key == to.fingerprint());
        if present {
            report.already_present.push(row.key_id);
            continue;
        }
        let again = rewrap_row(row, from, to)
            .with_context(|| format!("rewrapping data key {}", row.key_id))?;
        new_rows.push(again);
    }

    admin_client::transaction(client, "BEGIN TRANSACTION").await?;
    let written = async {
        for row in &new_rows {
            admin_client::insert_row(client, table, row).await?;
        }
        match keep_old {
            true => Ok(0),
            false => admin_client::delete_rows(client, table, Some(from.fingerprint())).await,
        }
    }
    .await;
    finish_transaction(client, written.is_ok()).await?;
    report.deleted_old = written?;
    report.rewrapped = new_rows.iter().map(|r| r.key_id).collect();
    Ok(report)
}

/// Prints what was done: ids and fingerprints only.
pub fn print_report(report: &RewrapReport, out: &mut impl Write) -> std::io::Result<()> {
    let ids = |list: &[DataKeyId]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(out, "company key {} -> {}", report.from, report.to)?;
    writeln!(out, "rewrapped data key id(s): {}", ids(&report.rewrapped))?;
    if !report.already_present.is_empty() {
        writeln!(
            out,
            "already wrapped under the new key: {}",
            ids(&report.already_present)
        )?;
    }
    match report.deleted_old {
        0 => writeln!(out, "rows of the old company key kept"),
        n => writeln!(out, "deleted {n} row(s) of the old company key"),
    }?;
    writeln!(out, "no encrypted value was changed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_ids_and_fingerprints() {
        let id = |n| DataKeyId::new(n).unwrap();
        let report = RewrapReport {
            from: Fingerprint::from_slice(&[1; 32]).unwrap(),
            to: Fingerprint::from_slice(&[2; 32]).unwrap(),
            rewrapped: vec![id(1), id(2)],
            already_present: vec![],
            deleted_old: 2,
        };
        let mut out = Vec::new();
        print_report(&report, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("rewrapped data key id(s): 1, 2"), "{text}");
        assert!(text.contains(&"02".repeat(32)), "{text}");
        assert!(text.contains("deleted 2 row(s)"), "{text}");
    }
}
