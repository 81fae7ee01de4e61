//! Whether the tdsguard target really encrypts a scenario's mapped columns.
//!
//! The tdsguard target runs with `[[columns]]` entries for the bench tables
//! and, in front of the embedded sandbox, with a company key of its own and
//! a data key stored in the sandbox the way `tdsguard serve` provisions its
//! demo ([`provision_sandbox`]). Whether that leads to encryption depends on
//! the relay of the build, so the bench checks instead of assuming: after a
//! mapped table has been made through tdsguard, a direct read must show its
//! mapped columns as varbinary (stored encrypted) and a read through
//! tdsguard must show them as their plaintext type (opened again). When
//! either is not so, the scenario's tdsguard figures are pass-through
//! figures and the report says so next to them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tiberius::ColumnType;

use crate::bench::scenarios::{Scenario, Tiberius};
use crate::bench::BenchError;
use crate::config::{Config, SandboxUser, UpstreamMode};
use crate::crypto::CompanyKey;

/// File name of the bench's company key inside its private directory.
const KEY_FILE: &str = "bench-company-key.pem";

/// What a check found for one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct EncryptionCheck {
    /// Every mapped column is stored as varbinary and comes back through
    /// tdsguard in another (its plaintext) type.
    pub active: bool,
    /// Types of the mapped columns in a direct read, as tiberius names them.
    pub stored_types: Vec<String>,
    /// Types of the same columns read through tdsguard.
    pub tdsguard_types: Vec<String>,
    /// What the figures mean, in a sentence.
    pub note: String,
}

impl EncryptionCheck {
    /// A check that could not be made.
    pub fn unknown(note: String) -> EncryptionCheck {
        EncryptionCheck {
            active: false,
            stored_types: Vec::new(),
            tdsguard_types: Vec::new(),
            note,
        }
    }
}

/// Makes a company key in `dir` and stores a data key wrapped under it in
/// the sandbox's default database, as `serve` does for its demo; returns
/// the key file for the tdsguard target's `keys.company_key_file`.
pub async fn provision_sandbox(
    base: &Config,
    dir: &Path,
    sandbox: (SocketAddr, Option<&Path>),
    login: SandboxUser,
    database: &str,
) -> Result<PathBuf, BenchError> {
    let key_file = dir.join(KEY_FILE);
    CompanyKey::generate()
        .and_then(|key| key.write_new(&key_file))
        .map_err(|e| BenchError::Setup(format!("making the bench company key: {e}")))?;

    let mut config = base.clone();
    config.upstream.mode = UpstreamMode::Embedded;
    config.listen.data_dir = dir.to_path_buf();
    config.keys.company_key_file = Some(key_file.clone());
    config.sandbox.users = vec![login];
    config.sandbox.database = database.to_owned();
    crate::crypto::demo::provision_demo(&config, sandbox.0, sandbox.1)
        .await
        .map_err(|e| BenchError::Setup(format!("storing a data key in the sandbox: {e:#}")))?;
    Ok(key_file)
}

/// Reads the mapped columns of `scenario`'s table directly and through
/// tdsguard, and says whether they are encrypted.
pub async fn check(
    scenario: &Scenario,
    direct: &mut Tiberius,
    through: &mut Tiberius,
) -> EncryptionCheck {
    let Some(table) = scenario.table() else {
        return EncryptionCheck::unknown("the scenario has no table".to_owned());
    };
    let names: Vec<&str> = scenario.columns.iter().map(|c| c.column.as_str()).collect();
    let stored = column_types(direct, table, &names).await;
    let seen = column_types(through, table, &names).await;
    match (stored, seen) {
        (Ok(stored), Ok(seen)) => verdict(stored, seen),
        (Err(err), _) => EncryptionCheck::unknown(format!("reading {table} directly: {err}")),
        (_, Err(err)) => {
            EncryptionCheck::unknown(format!("reading {table} through tdsguard: {err}"))
        }
    }
}

fn verdict(stored: Vec<ColumnType>, seen: Vec<ColumnType>) -> EncryptionCheck {
    let all_binary = !stored.is_empty() && stored.iter().all(|&t| is_binary(t));
    let opened = seen.len() == stored.len() && seen.iter().all(|&t| !is_binary(t));
    let active = all_binary && opened;
    let note = match (all_binary, opened) {
        (true, true) => "encrypted: stored as varbinary, returned as plaintext by tdsguard",
        (true, false) => "stored as varbinary but tdsguard returns it undecrypted",
        (false, _) => {
            "NOT encrypted: the relay of this build stored plaintext; the tdsguard figures \
             are pass-through figures"
        }
    };
    EncryptionCheck {
        active,
        stored_types: stored.iter().map(|t| format!("{t:?}")).collect(),
        tdsguard_types: seen.iter().map(|t| format!("{t:?}")).collect(),
        note: note.to_owned(),
    }
}

fn is_binary(t: ColumnType) -> bool {
    matches!(
        t,
        ColumnType::BigVarBin | ColumnType::BigBinary | ColumnType::Image
    )
}

/// The types of `columns` of `table` from a query that returns no rows.
async fn column_types(
    client: &mut Tiberius,
    table: &str,
    columns: &[&str],
) -> Result<Vec<ColumnType>, BenchError> {
    let sql = format!("SELECT {} FROM {table} WHERE 1 = 0", columns.join(", "));
    let mut stream = client
        .simple_query(sql)
        .await
        .map_err(BenchError::sql("reading column types"))?;
    let types = stream
        .columns()
        .await
        .map_err(BenchError::sql("reading column types"))?
        .map(|cols| cols.iter().map(|c| c.column_type()).collect())
        .unwrap_or_default();
    stream
        .into_results()
        .await
        .map_err(BenchError::sql("reading column types"))?;
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_needs_varbinary_at_rest_and_plaintext_through_tdsguard() {
        let bin = vec![ColumnType::BigVarBin; 4];
        let text = vec![ColumnType::NVarchar; 4];
        assert!(verdict(bin.clone(), text.clone()).active);
        let plain = verdict(text.clone(), text);
        assert!(!plain.active);
        assert!(plain.note.starts_with("NOT encrypted"));
        assert!(!verdict(bin.clone(), bin).active);
        assert!(!verdict(Vec::new(), Vec::new()).active);
    }
}
