//! Server certificates: loading a chain and key from PEM files, or generating
//! a self-signed certificate (rcgen) for given names, optionally kept in a
//! data directory so restarts present the same certificate.
//!
//! A generated key file is created with mode 0600, and a stored key that
//! other users can read is refused, since it would let them impersonate the
//! proxy to applications.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::TlsError;

/// File names used inside a data directory.
pub const GENERATED_CERT_FILE: &str = "tls-cert.pem";
pub const GENERATED_KEY_FILE: &str = "tls-key.pem";

/// A certificate chain (leaf first) and its private key.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("chain.len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Clone for ServerIdentity {
    fn clone(&self) -> Self {
        ServerIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A freshly generated self-signed certificate, as DER and as PEM.
pub struct SelfSigned {
    pub identity: ServerIdentity,
    pub cert_pem: String,
    key_pem: String,
}

impl SelfSigned {
    /// The private key in PKCS#8 PEM form (kept out of `Debug`).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Reads a certificate chain and a private key from PEM files.
pub fn load_pem_files(cert_path: &Path, key_path: &Path) -> Result<ServerIdentity, TlsError> {
    let chain = load_certificates(cert_path)?;
    let key = load_private_key(key_path)?;

    Ok(ServerIdentity { chain, key })
}

/// Reads every certificate of a PEM file (a chain, or a CA bundle).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| file_error(path, source))?;

    if certs.is_empty() {
        return Err(TlsError::EmptyPem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;

    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(TlsError::EmptyPem {
            path: path.to_owned(),
            what: "private key",
        }),
        Err(source) => Err(file_error(path, source)),
    }
}

/// Generates a self-signed certificate (ECDSA P-256) whose subject
/// alternative names are `names`; names that parse as IP addresses become IP
/// entries.
pub fn generate_self_signed(names: &[String]) -> Result<SelfSigned, TlsError> {
    let generated =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(TlsError::Generate)?;
    let key_der = generated.key_pair.serialize_der();

    Ok(SelfSigned {
        identity: ServerIdentity {
            chain: vec![generated.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key_der.into()),
        },
        cert_pem: generated.cert.pem(),
        key_pem: generated.key_pair.serialize_pem(),
    })
}

/// Loads the certificate kept in `dir`, or generates one for `names` and
/// stores it there (the key with mode 0600).
///
/// TODO(tdsguard): a stored certificate is reused even if `names` changed;
/// delete the files to regenerate.
pub fn load_or_generate(dir: &Path, names: &[String]) -> Result<ServerIdentity, TlsError> {
    let cert_path = dir.join(GENERATED_CERT_FILE);
    let key_path = dir.join(GENERATED_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        check_key_permissions(&key_path)?;
        return load_pem_files(&cert_path, &key_path);
    }

    let generated = generate_self_signed(names)?;
    fs::create_dir_all(dir).map_err(|source| file_error(dir, source))?;
    write_private(&key_path, generated.key_pem.as_bytes())?;
    fs::write(&cert_path, &generated.cert_pem).map_err(|source| file_error(&cert_path, source))?;
    Ok(generated.identity)
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| file_error(path, source))
}

fn file_error(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::File {
        path: PathBuf::from(path),
        source,
    }
}

/// Creates `path` readable by its owner only, then writes `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);

    let mut file = options
        .open(path)
        .map_err(|source| file_error(path, source))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| file_error(path, source))
}

#[cfg(unix)]
fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;

    let mode = fs::metadata(path)
        .map_err(|source| file_error(path, source))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyFilePermissions {
            path: path.to_owned(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_permissions(_path: &Path) -> Result<(), TlsError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    #[test]
    fn generated_pem_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let generated = generate_self_signed(&names()).unwrap();
        let cert_path = dir.path().join("c.pem");
        let key_path = dir.path().join("k.pem");
        fs::write(&cert_path, &generated.cert_pem).unwrap();
        fs::write(&key_path, generated.key_pem()).unwrap();

        let loaded = load_pem_files(&cert_path, &key_path).unwrap();
        assert_eq!(loaded.chain, generated.identity.chain);
        assert_eq!(loaded.key.secret_der(), generated.identity.key.secret_der());
    }

    #[test]
    fn stored_certificate_is_reused_and_the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path(), &names()).unwrap();
        let second = load_or_generate(dir.path(), &names()).unwrap();
        assert_eq!(first.chain, second.chain);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key_path = dir.path().join(GENERATED_KEY_FILE);
            let mode = fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);

            fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
            let err = load_or_generate(dir.path(), &names()).unwrap_err();
            assert!(matches!(err, TlsError::KeyFilePermissions { .. }));
        }
    }

    #[test]
    fn empty_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        fs::write(&path, "").unwrap();

        assert!(matches!(
            load_certificates(&path),
            Err(TlsError::EmptyPem {
                what: "certificate",
                ..
            })
        ));
        assert!(matches!(
            load_private_key(&path),
            Err(TlsError::EmptyPem {
                what: "private key",
                ..
            })
        ));
    }

    #[test]
    fn debug_redacts_the_key() {
        let generated = generate_self_signed(&names()).unwrap();

        let shown = format!("{generated:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("PRIVATE KEY"));
    }
}
