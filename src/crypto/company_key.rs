//! The company key: an RSA private key in a PKCS#8 PEM file readable only by its owner.
//!
//! It wraps each database's data key (RSA-OAEP with SHA-256) and keys the integrity tag of every
//! wrapped key (see `data_key`). Its public half is identified by a [`Fingerprint`]: SHA-256 over
//! the DER encoding of the public key's SubjectPublicKeyInfo (RFC 5280 section 4.1), written as
//! lower-case hexadecimal. `openssl pkey -in FILE -pubout -outform DER | sha256sum` prints the
//! same value.
//!
//! Key files are created with mode 0600 in one `open` call that refuses to replace an existing
//! file, and loading refuses a file its group or others can access. Both checks are Unix-only.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use hkdf::Hkdf;
use rand::rngs::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::error::CryptoError;
use crate::crypto::hex;

/// Size in bits of the keys `tdsguard keygen` makes.
pub const GENERATED_KEY_BITS: usize = 2048;

/// Smallest modulus accepted when loading: the product's key size.
pub const MIN_KEY_BITS: usize = 2048;

/// Largest modulus accepted when loading; it also bounds the wrapped key size to 512 bytes.
pub const MAX_KEY_BITS: usize = 4096;

/// Cap on the key file size. A 4096-bit PKCS#8 PEM key is about 3.3 KiB.
pub const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// HKDF-SHA256 salt and info for the key of the wrapped data key tags (docs/FORMAT.md).
const TAG_KEY_SALT: &[u8] = b"tdsguard company key";
const TAG_KEY_INFO: &[u8] = b"tdsguard v1 wrapped data key tag";

/// SHA-256 of a public key's SubjectPublicKeyInfo DER. Public: safe to log and store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

/// An RSA company key loaded in memory. Its private parts are zeroized on drop (by `rsa`), and
/// its `Debug` shows only the fingerprint.
pub struct CompanyKey {
    private: RsaPrivateKey,
    public: RsaPublicKey,
    fingerprint: Fingerprint,
    tag_key: Zeroizing<[u8; 32]>,
    rsa_decryptions: AtomicU64,
}

impl Fingerprint {
    /// The fingerprint of a SubjectPublicKeyInfo DER encoding.
    pub fn of_spki_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// A fingerprint from its 32 bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// A fingerprint from 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        Self::from_slice(&hex::decode(text)?)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl CompanyKey {
    /// A new RSA-2048 key from the operating system's generator.
    pub fn generate() -> Result<Self, CryptoError> {
        let private =
            RsaPrivateKey::new(&mut OsRng, GENERATED_KEY_BITS).map_err(|_| CryptoError::Rsa {
                operation: "key generation",
            })?;
        Self::from_private(private, "(generated)")
    }

    /// Parse a PKCS#8 PEM RSA private key. `origin` names it in errors (a path, usually).
    pub fn from_pkcs8_pem(pem: &str, origin: &str) -> Result<Self, CryptoError> {
        let private = RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|_| format_error(origin, "not a PKCS#8 PEM RSA private key"))?;
        Self::from_private(private, origin)
    }

    /// Load a key file, refusing one that its group or others can access.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        let length = check_key_file(path, &file)?;

        let mut pem = Zeroizing::new(String::with_capacity(length as usize + 1));
        file.read_to_string(&mut pem)
            .map_err(|e| io_error(path, e))?;
        Self::from_pkcs8_pem(&pem, &path.display().to_string())
    }

    /// Write the key as PKCS#8 PEM to a new file with mode 0600. Never replaces a file.
    pub fn write_new(&self, path: &Path) -> Result<(), CryptoError> {
        let pem = self.to_pkcs8_pem()?;
        let mut file = create_private_file(path)?;

        let written = file
            .write_all(pem.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            drop(file);
            // The file was created by this call (create_new), so removing it removes only our
            // partial write.
            let _ = fs::remove_file(path);
            return Err(io_error(path, e));
        }
        Ok(())
    }

    /// The key as PKCS#8 PEM text (zeroized on drop).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, CryptoError> {
        self.private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| CryptoError::Rsa {
                operation: "PKCS#8 encoding",
            })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Modulus size in bytes: the length of every RSA-OAEP ciphertext under this key.
    pub fn modulus_len(&self) -> usize {
        self.public.size()
    }

    /// RSA private-key operations done with this key so far (diagnostics and tests).
    pub fn rsa_decryptions(&self) -> u64 {
        self.rsa_decryptions.load(Ordering::Relaxed)
    }

    /// RSA-OAEP (SHA-256, empty label) encryption under the public half.
    pub(crate) fn encrypt_oaep(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.public
            .encrypt(&mut OsRng, Oaep::new::<Sha256>(), message)
            .map_err(|_| CryptoError::Rsa {
                operation: "OAEP encryption",
            })
    }

    /// RSA-OAEP decryption. Callers must have authenticated `ciphertext` first (see
    /// `data_key::unwrap`): the `rsa` crate's decryption is not constant-time (RUSTSEC-2023-0071).
    pub(crate) fn decrypt_oaep(&self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.rsa_decryptions.fetch_add(1, Ordering::Relaxed);
        let plain = self
            .private
            .decrypt(Oaep::new::<Sha256>(), ciphertext)
            .ok()?;
        Some(Zeroizing::new(plain))
    }

    /// The HMAC-SHA256 key for wrapped data key tags.
    pub(crate) fn tag_key(&self) -> &[u8; 32] {
        &self.tag_key
    }

    fn from_private(private: RsaPrivateKey, origin: &str) -> Result<Self, CryptoError> {
        let bits = private.n().bits();
        if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
            return Err(format_error(
                origin,
                "RSA modulus must be 2048 to 4096 bits",
            ));
        }
        private
            .validate()
            .map_err(|_| format_error(origin, "RSA key fails validation"))?;

        let public = private.to_public_key();
        let spki = public
            .to_public_key_der()
            .map_err(|_| format_error(origin, "public key does not encode"))?;
        let tag_key = derive_tag_key(&private, origin)?;

        Ok(Self {
            fingerprint: Fingerprint::of_spki_der(spki.as_bytes()),
            private,
            public,
            tag_key,
            rsa_decryptions: AtomicU64::new(0),
        })
    }
}

impl fmt::Debug for CompanyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompanyKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// HKDF-SHA256 over the PKCS#1 RSAPrivateKey DER (RFC 8017 appendix A.1.2), which is the
/// `privateKey` octet string of the PKCS#8 file, so any tool that reads the file can derive it.
fn derive_tag_key(
    private: &RsaPrivateKey,
    origin: &str,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let der = private
        .to_pkcs1_der()
        .map_err(|_| format_error(origin, "private key does not encode"))?;

    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(TAG_KEY_SALT), der.as_bytes())
        .expand(TAG_KEY_INFO, key.as_mut())
        .map_err(|_| format_error(origin, "tag key derivation"))?;
    Ok(key)
}

/// Check the opened key file: a regular file, not too large, and (on Unix) no group or other
/// permission bits. Checked on the open handle, so the file cannot be swapped in between.
fn check_key_file(path: &Path, file: &File) -> Result<u64, CryptoError> {
    let metadata = file.metadata().map_err(|e| io_error(path, e))?;
    if !metadata.is_file() {
        return Err(format_error(
            &path.display().to_string(),
            "not a regular file",
        ));
    }
    if metadata.len() > MAX_KEY_FILE_LEN {
        return Err(format_error(
            &path.display().to_string(),
            "file larger than 64 KiB",
        ));
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;

        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(metadata.len())
}

fn create_private_file(path: &Path) -> Result<File, CryptoError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);

    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }

    options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => CryptoError::KeyFileExists {
            path: path.to_path_buf(),
        },
        _ => io_error(path, e),
    })
}

fn io_error(path: &Path, source: io::Error) -> CryptoError {
    CryptoError::KeyFileIo {
        path: path.to_path_buf(),
        source,
    }
}

fn format_error(origin: &str, reason: &'static str) -> CryptoError {
    CryptoError::KeyFileFormat {
        origin: origin.to_owned(),
        reason,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::OnceLock;

    use super::*;

    /// Test-only keys from fixtures/envelope/ (never use them for data).
    pub(crate) const TEST_KEY_A_PEM: &str =
        include_str!("../../fixtures/envelope/test-company-key-a.pem");
    pub(crate) const TEST_KEY_B_PEM: &str =
        include_str!("../../fixtures/envelope/test-company-key-b.pem");

    pub(crate) fn key_a() -> &'static CompanyKey {
        static KEY: OnceLock<CompanyKey> = OnceLock::new();
        KEY.get_or_init(|| CompanyKey::from_pkcs8_pem(TEST_KEY_A_PEM, "test key a").unwrap())
    }

    pub(crate) fn key_b() -> &'static CompanyKey {
        static KEY: OnceLock<CompanyKey> = OnceLock::new();
        KEY.get_or_init(|| CompanyKey::from_pkcs8_pem(TEST_KEY_B_PEM, "test key b").unwrap())
    }

    fn write_with_mode(dir: &Path, mode: u32) -> std::path::PathBuf {
        let path = dir.join(format!("key-{mode:o}.pem"));
        fs::write(&path, TEST_KEY_A_PEM).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn load_accepts_owner_only_modes() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let key = CompanyKey::load(&write_with_mode(dir.path(), mode)).unwrap();
            assert_eq!(key.fingerprint(), key_a().fingerprint());
        }
    }

    #[test]
    fn load_refuses_group_or_other_access_and_says_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660, 0o610, 0o601] {
            let path = write_with_mode(dir.path(), mode);
            let error = CompanyKey::load(&path).unwrap_err();

            assert!(matches!(error, CryptoError::KeyFilePermissions { mode: m, .. } if m == mode));
            let text = error.to_string();
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
        }
    }

    #[test]
    fn write_new_sets_mode_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("company.pem");
        key_a().write_new(&path).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            CompanyKey::load(&path).unwrap().fingerprint(),
            key_a().fingerprint()
        );

        let error = key_b().write_new(&path).unwrap_err();
        assert!(matches!(error, CryptoError::KeyFileExists { .. }));
        assert_eq!(
            CompanyKey::load(&path).unwrap().fingerprint(),
            key_a().fingerprint()
        );
    }

    #[test]
    fn fingerprint_is_sha256_of_spki_der() {
        let spki = key_a().public.to_public_key_der().unwrap();
        let expected = hex::encode(&Sha256::digest(spki.as_bytes()));
        assert_eq!(key_a().fingerprint().to_string(), expected);
        assert_eq!(
            Fingerprint::from_hex(&expected),
            Some(key_a().fingerprint())
        );
        assert_ne!(key_a().fingerprint(), key_b().fingerprint());
    }

    #[test]
    fn pem_round_trip_keeps_fingerprint_and_tag_key() {
        let pem = key_a().to_pkcs8_pem().unwrap();
        let again = CompanyKey::from_pkcs8_pem(&pem, "again").unwrap();
        assert_eq!(again.fingerprint(), key_a().fingerprint());
        assert_eq!(again.tag_key(), key_a().tag_key());
        assert_ne!(key_a().tag_key(), key_b().tag_key());
    }

    #[test]
    fn debug_shows_only_the_fingerprint() {
        let text = format!("{:?}", key_a());
        assert!(text.contains(&key_a().fingerprint().to_string()));
        assert!(!text.contains("private"), "{text}");
        assert!(text.len() < 120, "{text}");
    }

    #[test]
    fn rejects_garbage_and_public_keys() {
        let error = CompanyKey::from_pkcs8_pem("not a key", "x").unwrap_err();
        assert!(matches!(error, CryptoError::KeyFileFormat { .. }));

        let public = key_a().public.to_public_key_pem(LineEnding::LF).unwrap();
        assert!(CompanyKey::from_pkcs8_pem(&public, "x").is_err());
    }
}
