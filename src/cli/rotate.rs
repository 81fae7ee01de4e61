//! `tdsguard rotate-data-key`: data key rotation (docs/FORMAT.md, "Rotation"). A new random data
//! key with the next id (highest id in the table + 1, over every company key's rows, so ids stay
//! unique) is stored under the company key. Proxies seal new values under it from their next
//! key load; the older ids stay in the table and keep opening the values that carry them.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cli::admin_client::{self, AdminClient};
use crate::cli::init_db::{key_table, load_company_key};
use crate::config::Config;
use crate::crypto::{rotate, CompanyKey, DataKeyCache, DataKeyId, Fingerprint, KeyTable};

/// What `rotate-data-key` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    pub new_key_id: DataKeyId,
    /// Ids of this company key that stay readable.
    pub previous: Vec<DataKeyId>,
    pub fingerprint: Fingerprint,
}

/// Runs `tdsguard rotate-data-key`.
pub fn run(config: &Config, database: Option<&str>) -> anyhow::Result<ExitCode> {
    let company = load_company_key(config)?;
    let table = key_table(config)?;
    let report = admin_client::run_as_admin(config, database, async |client| {
        rotate_data_key(client, &table, &company).await
    })?;

    print_report(&report, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// Adds the next data key. The current keys must unwrap first: rotating on top of a table this
/// company key cannot read would hide that problem.
pub async fn rotate_data_key(
    client: &mut AdminClient,
    table: &KeyTable,
    company: &CompanyKey,
) -> anyhow::Result<RotateReport> {
    let rows = admin_client::read_rows(client, table)
        .await?
        .with_context(|| format!("{} does not exist: run `tdsguard init-db`", table.name()))?;
    let cache = DataKeyCache::new();
    let mut previous = Vec::new();
    for row in rows
        .iter()
        .filter(|r| r.company_key == company.fingerprint())
    {
        cache
            .unwrap(row, company)
            .with_context(|| format!("checking data key {}", row.key_id))?;
        previous.push(row.key_id);
    }
    if previous.is_empty() {
        if let Some(other) = rows.first() {
            bail!(
                "{} holds no data key for company key {}; its keys are wrapped for company key \
                 {} (configure that key in keys.company_key_file)",
                table.name(),
                company.fingerprint(),
                other.company_key
            );
        }
        bail!(
            "{} holds no data key for company key {}: run `tdsguard init-db` first",
            table.name(),
            company.fingerprint()
        );
    }

    let (key, wrapped) = rotate(&rows, company)?;
    admin_client::insert_row(client, table, &wrapped).await?;
    Ok(RotateReport {
        new_key_id: key.id(),
        previous,
        fingerprint: company.fingerprint(),
    })
}

/// Prints what was done: ids and the fingerprint only.
pub fn print_report(report: &RotateReport, out: &mut impl Write) -> std::io::Result<()> {
    let previous: Vec<String> = report.previous.iter().map(ToString::to_string).collect();
    writeln!(out, "new data key id: {}", report.new_key_id)?;
    writeln!(
        out,
        "still readable: data key id(s) {}",
        previous.join(", ")
    )?;
    writeln!(out, "company key (fingerprint): {}", report.fingerprint)?;
    writeln!(
        out,
        "running proxies seal under the new key after their next key load (reconnect or USE)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_new_and_old_ids() {
        let id = |n| DataKeyId::new(n).unwrap();
        let report = RotateReport {
            new_key_id: id(3),
            previous: vec![id(1), id(2)],
            fingerprint: Fingerprint::from_slice(&[7; 32]).unwrap(),
        };
        let mut out = Vec::new();
        print_report(&report, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("new data key id: 3"), "{text}");
        assert!(text.contains("data key id(s) 1, 2"), "{text}");
    }
}
