//! `tdsguard keygen --out FILE`: make a company key.
//!
//! The file is created with mode 0600 and never replaces an existing file. The printed
//! fingerprint is SHA-256 over the public key's SubjectPublicKeyInfo DER, in hexadecimal; it is
//! what the key table stores and what `openssl pkey -in FILE -pubout -outform DER | sha256sum`
//! prints.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;

use crate::crypto::{CompanyKey, Fingerprint};

/// Generate a company key into `out` and print where it went and its fingerprint.
pub fn keygen(out: &Path) -> anyhow::Result<Fingerprint> {
    keygen_to(out, &mut io::stdout().lock())
}

/// [`keygen`] writing its report to `report`.
pub fn keygen_to(out: &Path, report: &mut impl Write) -> anyhow::Result<Fingerprint> {
    let key = CompanyKey::generate().context("generating the company key")?;
    key.write_new(out).context("writing the company key")?;

    let fingerprint = key.fingerprint();
    writeln!(
        report,
        "company key written to {} (mode 0600)",
        out.display()
    )?;
    writeln!(
        report,
        "fingerprint (SHA-256 of SubjectPublicKeyInfo DER, hex): {fingerprint}"
    )?;
    writeln!(
        report,
        "keep a backup: data keys wrapped only under this key cannot be recovered"
    )?;
    Ok(fingerprint)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keygen_writes_a_loadable_owner_only_key_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("company.pem");
        let mut report = Vec::new();

        let fingerprint = keygen_to(&path, &mut report).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(CompanyKey::load(&path).unwrap().fingerprint(), fingerprint);
        let text = String::from_utf8(report).unwrap();
        assert!(text.contains(&fingerprint.to_string()), "{text}");

        let before = std::fs::read(&path).unwrap();
        assert!(keygen_to(&path, &mut Vec::new()).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
