//! Data keys: one random AES-256 key per database, stored in the database wrapped under the
//! company key.
//!
//! A [`WrappedDataKey`] holds the key id, the company key's fingerprint, the RSA-OAEP (SHA-256)
//! ciphertext and an HMAC-SHA256 tag keyed from the company private key. The database is not
//! trusted, so [`unwrap`] checks the fingerprint and verifies the tag before any RSA decryption:
//! nobody with only database access can make the proxy decrypt RSA ciphertexts of their choosing.
//! The byte layout of the tag input is in docs/FORMAT.md.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::company_key::{CompanyKey, Fingerprint, MAX_KEY_BITS};
use crate::crypto::envelope::hmac_sha256;
use crate::crypto::error::CryptoError;
use crate::crypto::rng;

/// AES-256 key length.
pub const DATA_KEY_LEN: usize = 32;

/// HMAC-SHA256 tag length of a wrapped key.
pub const WRAPPED_TAG_LEN: usize = 32;

/// Largest wrapped key: one RSA block of the largest accepted company key (4096 bits).
pub const MAX_WRAPPED_LEN: usize = MAX_KEY_BITS / 8;

/// First byte of the tag input; a new wrapping format would change it.
const TAG_INPUT_VERSION: u8 = 0x01;

/// A data key id: 1 to 2^31-1, so that it fits the key table's SQL `int` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataKeyId(u32);

/// An unwrapped AES-256 data key. Zeroized on drop; deliberately has no `Debug`.
pub struct DataKey {
    id: DataKeyId,
    secret: Zeroizing<[u8; DATA_KEY_LEN]>,
}

/// A data key as stored in the key table. All fields are public values.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    pub key_id: DataKeyId,
    /// Fingerprint of the company key this was wrapped under.
    pub company_key: Fingerprint,
    /// RSA-OAEP (SHA-256, empty label) ciphertext of the 32 key bytes.
    pub wrapped: Vec<u8>,
    /// HMAC-SHA256 over the fields above (docs/FORMAT.md, "Wrapped data key").
    pub tag: [u8; WRAPPED_TAG_LEN],
}

/// Unwrapped data keys, unwrapped once per process per (company key, key id).
#[derive(Default)]
pub struct DataKeyCache {
    keys: Mutex<HashMap<(Fingerprint, DataKeyId), Arc<DataKey>>>,
}

impl DataKeyId {
    /// Largest id: SQL `int`'s maximum.
    pub const MAX: u32 = i32::MAX as u32;

    /// An id from a number read from the key table or configuration.
    pub fn new(id: i64) -> Result<Self, CryptoError> {
        match u32::try_from(id) {
            Ok(value) if (1..=Self::MAX).contains(&value) => Ok(Self(value)),
            _ => Err(CryptoError::KeyIdOutOfRange(id)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The id after this one, for rotation.
    pub fn next(self) -> Result<Self, CryptoError> {
        Self::new(i64::from(self.0) + 1)
    }
}

impl fmt::Display for DataKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl DataKey {
    /// A new random key from the operating system's generator.
    pub fn generate(id: DataKeyId) -> Result<Self, CryptoError> {
        let mut secret = Zeroizing::new([0u8; DATA_KEY_LEN]);
        rng::os_fill(secret.as_mut())?;
        Ok(Self { id, secret })
    }

    /// A key from known bytes: test vectors and benches only.
    #[doc(hidden)]
    pub fn from_bytes(id: DataKeyId, bytes: [u8; DATA_KEY_LEN]) -> Self {
        Self {
            id,
            secret: Zeroizing::new(bytes),
        }
    }

    pub fn id(&self) -> DataKeyId {
        self.id
    }

    /// Wrap under `company` (RSA-OAEP) and tag the result.
    pub fn wrap(&self, company: &CompanyKey) -> Result<WrappedDataKey, CryptoError> {
        let wrapped = company.encrypt_oaep(self.secret.as_ref())?;
        let tag = compute_tag(company, self.id, &company.fingerprint(), &wrapped);

        Ok(WrappedDataKey {
            key_id: self.id,
            company_key: company.fingerprint(),
            wrapped,
            tag,
        })
    }

    pub(crate) fn secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.secret
    }
}

impl fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDataKey")
            .field("key_id", &self.key_id)
            .field("company_key", &self.company_key)
            .field("wrapped_len", &self.wrapped.len())
            .finish_non_exhaustive()
    }
}

/// Unwrap a key table row. Order matters: fingerprint, then the tag (constant-time), and only
/// then RSA decryption.
pub fn unwrap(wrapped: &WrappedDataKey, company: &CompanyKey) -> Result<DataKey, CryptoError> {
    authenticate(wrapped, company)?;

    let key_id = wrapped.key_id.get();
    if wrapped.wrapped.len() != company.modulus_len() {
        return Err(CryptoError::UnwrapFailed { key_id });
    }
    let plain = company
        .decrypt_oaep(&wrapped.wrapped)
        .ok_or(CryptoError::UnwrapFailed { key_id })?;

    if plain.len() != DATA_KEY_LEN {
        return Err(CryptoError::UnwrapFailed { key_id });
    }
    // Copied straight into zeroizing storage, so no stack copy of the key is left behind.
    let mut secret = Zeroizing::new([0u8; DATA_KEY_LEN]);
    secret.copy_from_slice(&plain);
    Ok(DataKey {
        id: wrapped.key_id,
        secret,
    })
}

/// The same data key wrapped under another company key (company key rotation). The data key
/// and its id do not change, so every envelope stays readable.
pub fn rewrap(
    wrapped: &WrappedDataKey,
    from: &CompanyKey,
    to: &CompanyKey,
) -> Result<WrappedDataKey, CryptoError> {
    unwrap(wrapped, from)?.wrap(to)
}

/// A new data key for new writes (data key rotation), with the id after the highest in
/// `existing`, or 1 for an empty table. Old ids stay in the table and keep decrypting.
pub fn rotate(
    existing: &[WrappedDataKey],
    company: &CompanyKey,
) -> Result<(DataKey, WrappedDataKey), CryptoError> {
    let id = match existing.iter().map(|row| row.key_id).max() {
        Some(highest) => highest.next()?,
        None => DataKeyId(1),
    };

    let key = DataKey::generate(id)?;
    let wrapped = key.wrap(company)?;
    Ok((key, wrapped))
}

/// The checks that need no RSA: the row is for this company key and its tag verifies.
fn authenticate(wrapped: &WrappedDataKey, company: &CompanyKey) -> Result<(), CryptoError> {
    let key_id = wrapped.key_id.get();
    if wrapped.company_key != company.fingerprint() {
        return Err(CryptoError::WrongCompanyKey {
            key_id,
            wrapped_for: wrapped.company_key,
            loaded: company.fingerprint(),
        });
    }

    // RUSTSEC-2023-0071: the rsa crate's private-key operation leaks timing (Marvin attack), and
    // no fixed release exists. Anyone who can write the key table could otherwise submit chosen
    // ciphertexts and time our decryption. The tag is keyed from the private key, so only a key
    // holder can produce a row that reaches `decrypt_oaep`. `verify_slice` compares in constant
    // time.
    let mac = tag_mac(
        company,
        wrapped.key_id,
        &wrapped.company_key,
        &wrapped.wrapped,
    );
    mac.verify_slice(&wrapped.tag)
        .map_err(|_| CryptoError::WrappedKeyTagMismatch { key_id })
}

fn compute_tag(
    company: &CompanyKey,
    key_id: DataKeyId,
    fingerprint: &Fingerprint,
    wrapped: &[u8],
) -> [u8; WRAPPED_TAG_LEN] {
    tag_mac(company, key_id, fingerprint, wrapped)
        .finalize()
        .into_bytes()
        .into()
}

/// HMAC-SHA256(tag key, 0x01 || key id (u32 BE) || fingerprint || len (u16 BE) || wrapped).
fn tag_mac(
    company: &CompanyKey,
    key_id: DataKeyId,
    fingerprint: &Fingerprint,
    wrapped: &[u8],
) -> Hmac<Sha256> {
    let mut mac = hmac_sha256(company.tag_key());

    mac.update(&[TAG_INPUT_VERSION]);
    mac.update(&key_id.get().to_be_bytes());
    mac.update(fingerprint.as_bytes());
    let length = u16::try_from(wrapped.len()).unwrap_or(u16::MAX);
    mac.update(&length.to_be_bytes());
    mac.update(wrapped);
    mac
}

impl DataKeyCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cache shared by the whole process.
    pub fn process() -> &'static Self {
        static CACHE: OnceLock<DataKeyCache> = OnceLock::new();
        CACHE.get_or_init(Self::new)
    }

    /// The unwrapped key for `wrapped`, unwrapping it on first use. The row's fingerprint and
    /// tag are checked on every call, so a tampered row fails even when the key is cached.
    pub fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        company: &CompanyKey,
    ) -> Result<Arc<DataKey>, CryptoError> {
        authenticate(wrapped, company)?;

        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = (company.fingerprint(), wrapped.key_id);
        if let Some(key) = keys.get(&slot) {
            return Ok(Arc::clone(key));
        }

        let key = Arc::new(unwrap(wrapped, company)?);
        keys.insert(slot, Arc::clone(&key));
        Ok(key)
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::company_key::tests::{key_a, key_b};

    fn id(value: i64) -> DataKeyId {
        DataKeyId::new(value).unwrap()
    }

    #[test]
    fn wrap_unwrap_round_trip() {
        let key = DataKey::generate(id(7)).unwrap();
        let wrapped = key.wrap(key_a()).unwrap();
        assert_eq!(wrapped.key_id, id(7));
        assert_eq!(wrapped.company_key, key_a().fingerprint());
        assert_eq!(wrapped.wrapped.len(), 256);

        let back = unwrap(&wrapped, key_a()).unwrap();
        assert_eq!(back.id(), id(7));
        assert_eq!(back.secret(), key.secret());
    }

    #[test]
    fn wrong_company_key_is_named_and_no_rsa_is_attempted() {
        let company = CompanyKey::from_pkcs8_pem(
            crate::crypto::company_key::tests::TEST_KEY_B_PEM,
            "b (fresh counter)",
        )
        .unwrap();
        let wrapped = DataKey::generate(id(1)).unwrap().wrap(key_a()).unwrap();

        let error = unwrap(&wrapped, &company).err().unwrap();
        assert!(matches!(
            error,
            CryptoError::WrongCompanyKey { key_id: 1, wrapped_for, loaded }
                if wrapped_for == key_a().fingerprint() && loaded == company.fingerprint()
        ));
        assert_eq!(company.rsa_decryptions(), 0);
    }

    #[test]
    fn tampered_rows_fail_the_tag_before_any_rsa_decryption() {
        let company = CompanyKey::from_pkcs8_pem(
            crate::crypto::company_key::tests::TEST_KEY_A_PEM,
            "a (fresh counter)",
        )
        .unwrap();
        let good = DataKey::generate(id(3)).unwrap().wrap(&company).unwrap();

        let mut tampered = Vec::new();
        for i in 0..good.wrapped.len() {
            let mut row = good.clone();
            row.wrapped[i] ^= 0x01;
            tampered.push(row);
        }
        for i in 0..WRAPPED_TAG_LEN {
            let mut row = good.clone();
            row.tag[i] ^= 0x80;
            tampered.push(row);
        }
        let mut other_id = good.clone();
        other_id.key_id = id(4);
        tampered.push(other_id);
        let mut truncated = good.clone();
        truncated.wrapped.pop();
        tampered.push(truncated);

        for row in &tampered {
            let error = unwrap(row, &company).err().unwrap();
            assert!(
                matches!(error, CryptoError::WrappedKeyTagMismatch { .. }),
                "{error}"
            );
        }
        assert_eq!(company.rsa_decryptions(), 0);

        unwrap(&good, &company).unwrap();
        assert_eq!(company.rsa_decryptions(), 1);
    }

    #[test]
    fn rewrap_moves_the_same_key_to_another_company_key() {
        let key = DataKey::generate(id(9)).unwrap();
        let under_a = key.wrap(key_a()).unwrap();

        let under_b = rewrap(&under_a, key_a(), key_b()).unwrap();
        assert_eq!(under_b.key_id, id(9));
        assert_eq!(under_b.company_key, key_b().fingerprint());
        assert_eq!(unwrap(&under_b, key_b()).unwrap().secret(), key.secret());
        assert!(matches!(
            unwrap(&under_b, key_a()),
            Err(CryptoError::WrongCompanyKey { .. })
        ));

        let error = rewrap(&under_a, key_b(), key_a()).err().unwrap();
        assert!(matches!(error, CryptoError::WrongCompanyKey { .. }));
    }

    #[test]
    fn rotate_picks_the_next_id_and_old_ids_still_unwrap() {
        let (first, first_row) = rotate(&[], key_a()).unwrap();
        assert_eq!(first.id(), id(1));

        let (second, second_row) = rotate(std::slice::from_ref(&first_row), key_a()).unwrap();
        assert_eq!(second.id(), id(2));
        assert_ne!(second.secret(), first.secret());

        assert_eq!(
            unwrap(&first_row, key_a()).unwrap().secret(),
            first.secret()
        );
        assert_eq!(
            unwrap(&second_row, key_a()).unwrap().secret(),
            second.secret()
        );

        let last = WrappedDataKey {
            key_id: id(i64::from(DataKeyId::MAX)),
            ..second_row
        };
        assert!(matches!(
            rotate(&[last], key_a()),
            Err(CryptoError::KeyIdOutOfRange(_))
        ));
    }

    #[test]
    fn key_ids_fit_sql_int() {
        assert!(DataKeyId::new(0).is_err());
        assert!(DataKeyId::new(-1).is_err());
        assert!(DataKeyId::new(i64::from(i32::MAX) + 1).is_err());
        assert_eq!(
            DataKeyId::new(i64::from(i32::MAX)).unwrap().get(),
            0x7fff_ffff
        );
    }

    #[test]
    fn cache_unwraps_once_and_still_checks_tags() {
        let company = CompanyKey::from_pkcs8_pem(
            crate::crypto::company_key::tests::TEST_KEY_A_PEM,
            "a (cache counter)",
        )
        .unwrap();
        let wrapped = DataKey::generate(id(5)).unwrap().wrap(&company).unwrap();
        let cache = DataKeyCache::new();

        let first = cache.unwrap(&wrapped, &company).unwrap();
        let second = cache.unwrap(&wrapped, &company).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(company.rsa_decryptions(), 1);
        assert_eq!(cache.len(), 1);

        let mut tampered = wrapped.clone();
        tampered.tag[0] ^= 1;
        assert!(matches!(
            cache.unwrap(&tampered, &company),
            Err(CryptoError::WrappedKeyTagMismatch { key_id: 5 })
        ));
    }

    const WRAPPED_KAT_PATH: &str = "fixtures/envelope/wrapped-key.json";
    const WRAPPED_KAT_JSON: &str = include_str!("../../fixtures/envelope/wrapped-key.json");

    /// The wrapped-key vector for test key A. OAEP is randomized, so `wrapped` is whatever the
    /// regeneration drew; everything else is recomputed from it.
    fn wrapped_vector(wrapped: &WrappedDataKey, data_key: &DataKey) -> serde_json::Value {
        serde_json::json!({
            "company_key_file": "test-company-key-a.pem",
            "key_id": wrapped.key_id.get(),
            "data_key": crate::crypto::hex::encode(data_key.secret()),
            "company_key_fingerprint": wrapped.company_key.to_string(),
            "tag_key": crate::crypto::hex::encode(key_a().tag_key()),
            "wrapped_key": crate::crypto::hex::encode(&wrapped.wrapped),
            "tag": crate::crypto::hex::encode(&wrapped.tag),
        })
    }

    #[test]
    fn wrapped_key_vector_recomputes() {
        let fixture: serde_json::Value = serde_json::from_str(WRAPPED_KAT_JSON).unwrap();
        let field =
            |name: &str| crate::crypto::hex::decode(fixture[name].as_str().unwrap()).unwrap();
        let row = WrappedDataKey {
            key_id: id(fixture["key_id"].as_i64().unwrap()),
            company_key: Fingerprint::from_slice(&field("company_key_fingerprint")).unwrap(),
            wrapped: field("wrapped_key"),
            tag: field("tag").try_into().unwrap(),
        };

        let data_key = unwrap(&row, key_a()).unwrap();
        assert_eq!(wrapped_vector(&row, &data_key), fixture);
        let recomputed = compute_tag(key_a(), row.key_id, &row.company_key, &row.wrapped);
        assert_eq!(recomputed, row.tag);
    }

    /// Writes fixtures/envelope/wrapped-key.json (see fixtures/envelope/README.md).
    #[test]
    #[ignore]
    fn regenerate_wrapped_key_vector() {
        let data_key = DataKey::from_bytes(id(1), core::array::from_fn(|i| i as u8));
        let wrapped = data_key.wrap(key_a()).unwrap();
        let text = serde_json::to_string_pretty(&wrapped_vector(&wrapped, &data_key)).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(WRAPPED_KAT_PATH);
        std::fs::write(path, text + "\n").unwrap();
    }
}
