//! The value envelope: how one column value is encrypted for storage (docs/FORMAT.md).
//!
//! ```text
//! offset  size  field
//!      0     1  version      0x01
//!      1     1  mode         0x01 randomized (AES-256-GCM), 0x02 deterministic (AES-256-GCM-SIV)
//!      2     4  key id       data key id, u32 big-endian
//!      6     4  epoch        sub-key epoch, u32 big-endian (0 in deterministic mode)
//!     10    12  nonce
//!     22     n  ciphertext   same length as the plaintext
//!   22+n    16  tag
//! ```
//!
//! Associated data is the 22 header bytes followed by the binding digest (SHA-256 of the
//! canonical column name and type text, see `binding`), so a ciphertext copied into another
//! column, read as another type, or with any header field changed does not authenticate.
//!
//! Randomized mode encrypts under a sub-key derived per (data key, epoch). Each process picks a
//! random 32-bit epoch and picks a new one after [`SEALS_PER_EPOCH`] seals, far below the 2^32
//! invocations NIST SP 800-38D section 8.3 allows per key with random 96-bit nonces.
//!
//! The plaintext is the caller's bytes (the value's TDS encoding in the declared type). SQL NULL
//! is never sealed: callers keep NULL as NULL. An empty value still gets a full envelope.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadCore, AeadInPlace};
use aes_gcm::{Aes256Gcm, KeyInit};
use aes_gcm_siv::Aes256GcmSiv;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::binding::ValueBinding;
use crate::crypto::data_key::{DataKey, DataKeyId};
use crate::crypto::error::CryptoError;
use crate::crypto::rng::NonceSource;

/// Envelope format version written and read by this build.
pub const VERSION: u8 = 0x01;

/// Mode byte of randomized envelopes.
pub const MODE_RANDOMIZED: u8 = 0x01;

/// Mode byte of deterministic envelopes.
pub const MODE_DETERMINISTIC: u8 = 0x02;

/// Header length: version, mode, key id, epoch, nonce.
pub const HEADER_LEN: usize = 22;

/// AEAD tag length of both modes.
pub const TAG_LEN: usize = 16;

/// Bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Largest envelope: SQL Server's varbinary(max) limit of 2^31-1 bytes.
pub const MAX_ENVELOPE_LEN: usize = i32::MAX as usize;

/// Largest plaintext an envelope carries.
pub const MAX_PLAINTEXT_LEN: usize = MAX_ENVELOPE_LEN - OVERHEAD;

/// Seals under one randomized sub-key before this process picks a new epoch: 2^24, a factor
/// 256 below SP 800-38D's 2^32 limit, so even 256 processes that all drew the same epoch stay
/// within it.
pub const SEALS_PER_EPOCH: u32 = 1 << 24;

/// Cap on cached sub-keys per data key. Epochs of stored envelopes come from the database, so
/// the cache must not grow with them; past the cap it is emptied and refilled on demand.
pub const MAX_CACHED_SUBKEYS: usize = 1024;

/// HKDF-SHA256 salt and info labels (docs/FORMAT.md, "Randomized mode", "Deterministic mode").
const HKDF_SALT: &[u8] = b"tdsguard envelope";
const INFO_RANDOMIZED: &[u8] = b"tdsguard v1 randomized epoch";
const INFO_DETERMINISTIC: &[u8] = b"tdsguard v1 deterministic column";

/// How a column's values are encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A fresh random nonce per value: equal values give unrelated envelopes.
    Randomized,
    /// Equal values in the same column under the same data key give equal envelopes, so
    /// `WHERE col = @p` works; reveals which stored values are equal (and so their frequency).
    Deterministic,
}

/// The fixed-size front of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    mode: Mode,
    key_id: u32,
    epoch: u32,
    nonce: [u8; 12],
}

/// Per-column keys of deterministic mode: AES-256-GCM-SIV and the HMAC for synthetic nonces.
///
/// TODO(tdsguard): the keyed HMAC state here and the HKDF pseudorandom key in `hkdf_expand` are
/// not zeroized on drop (hmac 0.12 and hkdf 0.12 offer no zeroize); AES key schedules are.
struct DeterministicKeys {
    cipher: Aes256GcmSiv,
    nonce_mac: Hmac<Sha256>,
}

/// One loaded data key and the keys derived from it so far.
struct KeyEntry {
    key: Arc<DataKey>,
    subkeys: Mutex<HashMap<u32, Arc<Aes256Gcm>>>,
    columns: Mutex<HashMap<[u8; 32], Arc<DeterministicKeys>>>,
}

/// This process's randomized sealing state for the current data key.
struct SealState {
    nonces: NonceSource,
    epoch: u32,
    remaining: u32,
    cipher: Arc<Aes256Gcm>,
}

/// Seals values under the current data key and opens values under any loaded data key.
pub struct EnvelopeCipher {
    keys: HashMap<DataKeyId, KeyEntry>,
    current: DataKeyId,
    seal_state: Mutex<SealState>,
}

/// Envelope length for a plaintext of `plaintext_len` bytes (both modes).
pub const fn envelope_len(plaintext_len: usize) -> usize {
    plaintext_len + OVERHEAD
}

/// Plaintext length inside an envelope of `envelope_len` bytes, if it can be one.
pub const fn plaintext_len(envelope_len: usize) -> Option<usize> {
    envelope_len.checked_sub(OVERHEAD)
}

impl Mode {
    pub fn byte(self) -> u8 {
        match self {
            Self::Randomized => MODE_RANDOMIZED,
            Self::Deterministic => MODE_DETERMINISTIC,
        }
    }

    fn from_byte(byte: u8) -> Result<Self, CryptoError> {
        match byte {
            MODE_RANDOMIZED => Ok(Self::Randomized),
            MODE_DETERMINISTIC => Ok(Self::Deterministic),
            other => Err(CryptoError::EnvelopeMode(other)),
        }
    }
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = VERSION;
        out[1] = self.mode.byte();
        out[2..6].copy_from_slice(&self.key_id.to_be_bytes());
        out[6..10].copy_from_slice(&self.epoch.to_be_bytes());
        out[10..].copy_from_slice(&self.nonce);
        out
    }

    /// Decode and check the header fields; `bytes` is exactly the header.
    fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, CryptoError> {
        let [version, mode, k0, k1, k2, k3, e0, e1, e2, e3, nonce @ ..] = *bytes;
        if version != VERSION {
            return Err(CryptoError::EnvelopeVersion(version));
        }

        let header = Self {
            mode: Mode::from_byte(mode)?,
            key_id: u32::from_be_bytes([k0, k1, k2, k3]),
            epoch: u32::from_be_bytes([e0, e1, e2, e3]),
            nonce,
        };
        if header.mode == Mode::Deterministic && header.epoch != 0 {
            return Err(CryptoError::EnvelopeEpoch(header.epoch));
        }
        Ok(header)
    }
}

impl EnvelopeCipher {
    /// A cipher that seals under `current` (and opens its envelopes).
    pub fn new(current: Arc<DataKey>) -> Result<Self, CryptoError> {
        let id = current.id();
        let seal_state = SealState::new(&current)?;

        let mut keys = HashMap::new();
        keys.insert(id, KeyEntry::new(current));
        Ok(Self {
            keys,
            current: id,
            seal_state: Mutex::new(seal_state),
        })
    }

    /// Load an older data key so its envelopes still open. Sealing is unaffected.
    pub fn add_key(&mut self, key: Arc<DataKey>) {
        self.keys
            .entry(key.id())
            .or_insert_with(|| KeyEntry::new(key));
    }

    /// Seal new values under `key` from now on; keys loaded before keep opening.
    pub fn rotate_to(&mut self, key: Arc<DataKey>) -> Result<(), CryptoError> {
        let state = SealState::new(&key)?;
        self.current = key.id();
        self.keys.insert(key.id(), KeyEntry::new(key));
        *self
            .seal_state
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = state;
        Ok(())
    }

    /// The data key id new envelopes carry.
    pub fn current_key_id(&self) -> DataKeyId {
        self.current
    }

    /// Encrypt one non-NULL value of the column `binding` describes.
    pub fn seal(
        &self,
        mode: Mode,
        binding: &ValueBinding,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        check_plaintext(plaintext)?;
        let entry = self.entry(self.current.get())?;

        match mode {
            Mode::Randomized => {
                let (header, cipher) = self.next_randomized()?;
                seal_with(&*cipher, header, binding, plaintext)
            }
            Mode::Deterministic => seal_deterministic(entry, binding, plaintext),
        }
    }

    /// The deterministic envelopes of `plaintext` under every loaded data key, for equality
    /// lookups in a column that holds values written before a data key rotation.
    pub fn seal_deterministic_all_keys(
        &self,
        binding: &ValueBinding,
        plaintext: &[u8],
    ) -> Result<Vec<Vec<u8>>, CryptoError> {
        check_plaintext(plaintext)?;

        let mut entries: Vec<&KeyEntry> = self.keys.values().collect();
        entries.sort_by_key(|entry| entry.key.id());
        entries
            .into_iter()
            .map(|entry| seal_deterministic(entry, binding, plaintext))
            .collect()
    }

    /// Decrypt an envelope read from the column `binding` describes. Any change to any byte,
    /// another column, another type or an unknown key gives an error, never other plaintext.
    pub fn open(
        &self,
        binding: &ValueBinding,
        envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let too_short = CryptoError::EnvelopeTooShort {
            length: envelope.len(),
            minimum: OVERHEAD,
        };
        let (header_bytes, rest) = envelope
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(too_short)?;
        let header = Header::decode(header_bytes)?;
        let Some((body, tag)) = rest.split_last_chunk::<TAG_LEN>() else {
            return Err(CryptoError::EnvelopeTooShort {
                length: envelope.len(),
                minimum: OVERHEAD,
            });
        };

        let entry = self.entry(header.key_id)?;
        let aad = associated_data(header_bytes, binding);
        let mut plain = Zeroizing::new(body.to_vec());
        let opened = match header.mode {
            Mode::Randomized => entry.open_randomized(&header, &aad, &mut plain, tag),
            Mode::Deterministic => {
                entry.open_deterministic(&header, binding, &aad, &mut plain, tag)
            }
        };

        opened
            .map(|()| plain)
            .map_err(|()| CryptoError::EnvelopeAuthentication {
                column: binding.column().to_string(),
                sql_type: binding.sql_type().to_string(),
            })
    }

    fn entry(&self, key_id: u32) -> Result<&KeyEntry, CryptoError> {
        DataKeyId::new(i64::from(key_id))
            .ok()
            .and_then(|id| self.keys.get(&id))
            .ok_or(CryptoError::UnknownDataKey(key_id))
    }

    /// The header and sub-key for the next randomized seal, moving to a new epoch when due.
    fn next_randomized(&self) -> Result<(Header, Arc<Aes256Gcm>), CryptoError> {
        let mut state = self
            .seal_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = &self.entry(self.current.get())?.key;
        if state.remaining == 0 {
            state.new_epoch(key)?;
        }
        state.remaining -= 1;

        let header = Header {
            mode: Mode::Randomized,
            key_id: self.current.get(),
            epoch: state.epoch,
            nonce: state.nonces.nonce()?,
        };
        Ok((header, Arc::clone(&state.cipher)))
    }
}

impl KeyEntry {
    fn new(key: Arc<DataKey>) -> Self {
        Self {
            key,
            subkeys: Mutex::new(HashMap::new()),
            columns: Mutex::new(HashMap::new()),
        }
    }

    /// Decrypt in place. A sub-key derived for a stored epoch is cached only after the envelope
    /// authenticates, so forged epochs cannot churn the cache.
    fn open_randomized(
        &self,
        header: &Header,
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), ()> {
        let cached = self.cached_subkey(header.epoch);
        let cipher = match &cached {
            Some(cipher) => Arc::clone(cipher),
            None => Arc::new(randomized_cipher(&self.key, header.epoch)),
        };

        cipher
            .decrypt_in_place_detached(&header.nonce.into(), aad, buffer, tag.into())
            .map_err(|_| ())?;
        if cached.is_none() {
            self.cache_subkey(header.epoch, cipher);
        }
        Ok(())
    }

    fn open_deterministic(
        &self,
        header: &Header,
        binding: &ValueBinding,
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), ()> {
        let keys = self.deterministic_keys(binding);
        keys.cipher
            .decrypt_in_place_detached(&header.nonce.into(), aad, buffer, tag.into())
            .map_err(|_| ())
    }

    fn cached_subkey(&self, epoch: u32) -> Option<Arc<Aes256Gcm>> {
        let subkeys = self.subkeys.lock().unwrap_or_else(PoisonError::into_inner);
        subkeys.get(&epoch).cloned()
    }

    fn cache_subkey(&self, epoch: u32, cipher: Arc<Aes256Gcm>) {
        let mut subkeys = self.subkeys.lock().unwrap_or_else(PoisonError::into_inner);
        if subkeys.len() >= MAX_CACHED_SUBKEYS {
            subkeys.clear();
        }
        subkeys.insert(epoch, cipher);
    }

    /// Keys for a configured column; the number of columns is set by configuration, not by
    /// peers, so this cache needs no cap.
    fn deterministic_keys(&self, binding: &ValueBinding) -> Arc<DeterministicKeys> {
        let mut columns = self.columns.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = columns
            .entry(*binding.digest())
            .or_insert_with(|| Arc::new(DeterministicKeys::derive(&self.key, binding)));
        Arc::clone(keys)
    }
}

impl SealState {
    fn new(key: &DataKey) -> Result<Self, CryptoError> {
        let mut nonces = NonceSource::new()?;
        let epoch = nonces.next_u32()?;
        Ok(Self {
            cipher: Arc::new(randomized_cipher(key, epoch)),
            nonces,
            epoch,
            remaining: SEALS_PER_EPOCH,
        })
    }

    fn new_epoch(&mut self, key: &DataKey) -> Result<(), CryptoError> {
        let epoch = self.nonces.next_u32()?;
        self.cipher = Arc::new(randomized_cipher(key, epoch));
        self.epoch = epoch;
        self.remaining = SEALS_PER_EPOCH;
        Ok(())
    }
}

impl DeterministicKeys {
    fn derive(key: &DataKey, binding: &ValueBinding) -> Self {
        let okm = deterministic_key_material(key, binding);
        let (cipher_key, mac_key) = okm.split_at(32);

        Self {
            cipher: Aes256GcmSiv::new(cipher_key.into()),
            nonce_mac: hmac_sha256(mac_key),
        }
    }

    /// Synthetic nonce: the first 12 bytes of HMAC-SHA256(nonce key, plaintext).
    fn nonce(&self, plaintext: &[u8]) -> [u8; 12] {
        let mut mac = self.nonce_mac.clone();
        mac.update(plaintext);
        let digest = mac.finalize().into_bytes();

        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&digest[..12]);
        nonce
    }
}

/// 64 bytes: the AES-256-GCM-SIV key, then the synthetic nonce's HMAC key.
fn deterministic_key_material(key: &DataKey, binding: &ValueBinding) -> Zeroizing<[u8; 64]> {
    let mut okm = Zeroizing::new([0u8; 64]);
    hkdf_expand(key, &[INFO_DETERMINISTIC, binding.digest()], okm.as_mut());
    okm
}

/// HMAC-SHA256 keyed with `key`.
pub(crate) fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The randomized-mode AES-256-GCM cipher of `key` for `epoch`.
fn randomized_cipher(key: &DataKey, epoch: u32) -> Aes256Gcm {
    Aes256Gcm::new(randomized_subkey(key, epoch).as_ref().into())
}

fn randomized_subkey(key: &DataKey, epoch: u32) -> Zeroizing<[u8; 32]> {
    let mut subkey = Zeroizing::new([0u8; 32]);
    hkdf_expand(
        key,
        &[INFO_RANDOMIZED, &epoch.to_be_bytes()],
        subkey.as_mut(),
    );
    subkey
}

/// HKDF-SHA256 with the envelope salt, the data key as input and `info` concatenated.
fn hkdf_expand(key: &DataKey, info: &[&[u8]], out: &mut [u8]) {
    let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), key.secret());
    // Outputs here are 32 or 64 bytes, far below HKDF-SHA256's 8160-byte limit.
    let expanded = hkdf.expand_multi_info(info, out);
    debug_assert!(expanded.is_ok());
}

fn seal_deterministic(
    entry: &KeyEntry,
    binding: &ValueBinding,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let keys = entry.deterministic_keys(binding);
    let header = Header {
        mode: Mode::Deterministic,
        key_id: entry.key.id().get(),
        epoch: 0,
        nonce: keys.nonce(plaintext),
    };
    seal_with(&keys.cipher, header, binding, plaintext)
}

/// Header, ciphertext and tag in one allocation.
fn seal_with<C: AeadInPlace + AeadCore<NonceSize = U12>>(
    cipher: &C,
    header: Header,
    binding: &ValueBinding,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let header_bytes = header.encode();
    let aad = associated_data(&header_bytes, binding);

    let mut out = Vec::with_capacity(envelope_len(plaintext.len()));
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(plaintext);

    // Both AEADs refuse only plaintexts over 2^36 bytes, which `check_plaintext` excludes.
    let tag = cipher
        .encrypt_in_place_detached(&header.nonce.into(), &aad, &mut out[HEADER_LEN..])
        .map_err(|_| CryptoError::PlaintextTooLarge {
            length: plaintext.len(),
            limit: MAX_PLAINTEXT_LEN,
        })?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Header bytes followed by the binding digest.
fn associated_data(header: &[u8; HEADER_LEN], binding: &ValueBinding) -> [u8; HEADER_LEN + 32] {
    let mut aad = [0u8; HEADER_LEN + 32];
    aad[..HEADER_LEN].copy_from_slice(header);
    aad[HEADER_LEN..].copy_from_slice(binding.digest());
    aad
}

fn check_plaintext(plaintext: &[u8]) -> Result<(), CryptoError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(CryptoError::PlaintextTooLarge {
            length: plaintext.len(),
            limit: MAX_PLAINTEXT_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::crypto::binding::ColumnId;
    use crate::crypto::hex;
    use crate::crypto::sql_type::SqlType;

    const KAT_PATH: &str = "fixtures/envelope/kat.json";
    const KAT_JSON: &str = include_str!("../../fixtures/envelope/kat.json");
    const FORMAT_MD: &str = include_str!("../../docs/FORMAT.md");

    fn data_key(id: u32, fill: u8) -> Arc<DataKey> {
        let id = DataKeyId::new(i64::from(id)).unwrap();
        Arc::new(DataKey::from_bytes(id, [fill; 32]))
    }

    fn binding(column: &str, sql_type: &str) -> ValueBinding {
        ValueBinding::new(
            ColumnId::parse(column).unwrap(),
            SqlType::parse(sql_type).unwrap(),
        )
    }

    fn ssn() -> ValueBinding {
        binding("Clinic.dbo.Patients.SSN", "nvarchar(11)")
    }

    fn cipher() -> EnvelopeCipher {
        EnvelopeCipher::new(data_key(1, 0x11)).unwrap()
    }

    fn is_auth_error(result: Result<Zeroizing<Vec<u8>>, CryptoError>) -> bool {
        matches!(result, Err(CryptoError::EnvelopeAuthentication { .. }))
    }

    #[test]
    fn both_modes_round_trip_including_empty_values() {
        let cipher = cipher();
        for mode in [Mode::Randomized, Mode::Deterministic] {
            for plaintext in [&b""[..], b"1", b"1\x002\x003\x00-\x004\x00"] {
                let envelope = cipher.seal(mode, &ssn(), plaintext).unwrap();
                assert_eq!(envelope.len(), envelope_len(plaintext.len()));
                assert_eq!(envelope[0], VERSION);
                assert_eq!(envelope[1], mode.byte());
                assert_eq!(envelope[2..6], [0, 0, 0, 1]);
                assert_eq!(
                    cipher.open(&ssn(), &envelope).unwrap().as_slice(),
                    plaintext
                );
            }
        }
    }

    #[test]
    fn randomized_differs_and_deterministic_repeats() {
        let cipher = cipher();
        let value = b"same value";
        let r1 = cipher.seal(Mode::Randomized, &ssn(), value).unwrap();
        let r2 = cipher.seal(Mode::Randomized, &ssn(), value).unwrap();
        assert_ne!(r1[10..22], r2[10..22]);
        assert_ne!(r1, r2);

        let d1 = cipher.seal(Mode::Deterministic, &ssn(), value).unwrap();
        let d2 = cipher.seal(Mode::Deterministic, &ssn(), value).unwrap();
        assert_eq!(d1, d2);
        assert_eq!(d1[6..10], [0, 0, 0, 0]);
        assert_ne!(
            d1,
            cipher
                .seal(Mode::Deterministic, &ssn(), b"other value")
                .unwrap()
        );

        let other_column = binding("Clinic.dbo.Patients.Phone", "nvarchar(11)");
        let d3 = cipher
            .seal(Mode::Deterministic, &other_column, value)
            .unwrap();
        assert_ne!(d1[HEADER_LEN..], d3[HEADER_LEN..]);
    }

    #[test]
    fn flipping_any_byte_or_truncating_fails_without_plaintext() {
        let cipher = cipher();
        for mode in [Mode::Randomized, Mode::Deterministic] {
            let envelope = cipher
                .seal(mode, &ssn(), b"123-45-6789 as nvarchar")
                .unwrap();

            for i in 0..envelope.len() {
                for bit in [0x01, 0x80, 0xff] {
                    let mut changed = envelope.clone();
                    changed[i] ^= bit;
                    assert!(cipher.open(&ssn(), &changed).is_err(), "{mode:?} byte {i}");
                }
            }
            for length in 0..envelope.len() {
                assert!(
                    cipher.open(&ssn(), &envelope[..length]).is_err(),
                    "{length}"
                );
            }
            let mut longer = envelope.clone();
            longer.push(0);
            assert!(cipher.open(&ssn(), &longer).is_err());
        }
    }

    #[test]
    fn envelope_moved_to_another_column_or_type_fails() {
        let cipher = cipher();
        let moved = [
            binding("Clinic.dbo.Patients.Phone", "nvarchar(11)"),
            binding("Clinic.dbo.Staff.SSN", "nvarchar(11)"),
            binding("Clinic.hr.Patients.SSN", "nvarchar(11)"),
            binding("Other.dbo.Patients.SSN", "nvarchar(11)"),
            binding("Clinic.dbo.Patients.SSN", "nvarchar(12)"),
            binding("Clinic.dbo.Patients.SSN", "varchar(11)"),
            binding("Clinic.dbo.Patients.SSN", "varbinary(22)"),
        ];
        let same = binding("[clinic].[DBO].patients.[ssn]", "NVARCHAR( 11 )");

        for mode in [Mode::Randomized, Mode::Deterministic] {
            let envelope = cipher.seal(mode, &ssn(), b"v\x00").unwrap();
            for other in &moved {
                assert!(
                    is_auth_error(cipher.open(other, &envelope)),
                    "{}",
                    other.column()
                );
            }
            assert_eq!(cipher.open(&same, &envelope).unwrap().as_slice(), b"v\x00");
        }
    }

    #[test]
    fn header_fields_are_checked() {
        let cipher = cipher();
        let envelope = cipher.seal(Mode::Deterministic, &ssn(), b"x").unwrap();

        let with = |i: usize, value: u8| {
            let mut changed = envelope.clone();
            changed[i] = value;
            cipher.open(&ssn(), &changed).err().unwrap()
        };
        assert!(matches!(with(0, 0x02), CryptoError::EnvelopeVersion(0x02)));
        assert!(matches!(with(1, 0x03), CryptoError::EnvelopeMode(0x03)));
        assert!(matches!(with(5, 0x09), CryptoError::UnknownDataKey(9)));
        assert!(matches!(with(9, 0x01), CryptoError::EnvelopeEpoch(1)));
        assert!(matches!(
            cipher.open(&ssn(), &envelope[..OVERHEAD - 1]),
            Err(CryptoError::EnvelopeTooShort {
                length: 37,
                minimum: 38
            })
        ));
    }

    #[test]
    fn another_data_key_with_the_same_id_fails_cleanly() {
        let envelope = cipher().seal(Mode::Randomized, &ssn(), b"x").unwrap();
        let impostor = EnvelopeCipher::new(data_key(1, 0x22)).unwrap();
        assert!(is_auth_error(impostor.open(&ssn(), &envelope)));
    }

    #[test]
    fn rotation_seals_under_the_new_id_and_old_ids_still_open() {
        let mut cipher = cipher();
        let old_random = cipher.seal(Mode::Randomized, &ssn(), b"old").unwrap();
        let old_det = cipher.seal(Mode::Deterministic, &ssn(), b"old").unwrap();

        cipher.rotate_to(data_key(2, 0x22)).unwrap();
        assert_eq!(cipher.current_key_id().get(), 2);
        let new_det = cipher.seal(Mode::Deterministic, &ssn(), b"old").unwrap();
        assert_eq!(new_det[2..6], [0, 0, 0, 2]);
        assert_ne!(new_det, old_det);

        assert_eq!(cipher.open(&ssn(), &old_random).unwrap().as_slice(), b"old");
        assert_eq!(cipher.open(&ssn(), &old_det).unwrap().as_slice(), b"old");
        let lookups = cipher.seal_deterministic_all_keys(&ssn(), b"old").unwrap();
        assert_eq!(lookups, vec![old_det, new_det]);
    }

    #[test]
    fn add_key_opens_envelopes_of_an_older_key() {
        let old = EnvelopeCipher::new(data_key(3, 0x33)).unwrap();
        let envelope = old.seal(Mode::Randomized, &ssn(), b"x").unwrap();

        let mut cipher = cipher();
        assert!(matches!(
            cipher.open(&ssn(), &envelope),
            Err(CryptoError::UnknownDataKey(3))
        ));
        cipher.add_key(data_key(3, 0x33));
        assert_eq!(cipher.open(&ssn(), &envelope).unwrap().as_slice(), b"x");
        assert_eq!(cipher.current_key_id().get(), 1);
    }

    #[test]
    fn a_new_epoch_starts_after_the_seal_budget() {
        let cipher = cipher();
        let first = cipher.seal(Mode::Randomized, &ssn(), b"x").unwrap();
        {
            let state = cipher.seal_state.lock().unwrap();
            assert_eq!(state.remaining, SEALS_PER_EPOCH - 1);
            assert_eq!(first[6..10], state.epoch.to_be_bytes());
        }

        cipher.seal_state.lock().unwrap().remaining = 0;
        let second = cipher.seal(Mode::Randomized, &ssn(), b"x").unwrap();
        let state = cipher.seal_state.lock().unwrap();
        assert_eq!(state.remaining, SEALS_PER_EPOCH - 1);
        assert_eq!(second[6..10], state.epoch.to_be_bytes());
        // Equal only with probability 2^-32.
        assert_ne!(first[6..10], second[6..10]);
        drop(state);

        assert_eq!(cipher.open(&ssn(), &first).unwrap().as_slice(), b"x");
        assert_eq!(cipher.open(&ssn(), &second).unwrap().as_slice(), b"x");
    }

    #[test]
    fn forged_epochs_are_not_cached() {
        let cipher = cipher();
        let envelope = cipher.seal(Mode::Randomized, &ssn(), b"x").unwrap();
        let entry = cipher.entry(1).unwrap();

        for epoch in 0..50u32 {
            let mut forged = envelope.clone();
            forged[6..10].copy_from_slice(&epoch.to_be_bytes());
            if forged != envelope {
                assert!(cipher.open(&ssn(), &forged).is_err());
            }
        }
        assert!(entry.subkeys.lock().unwrap().len() <= 1);
        cipher.open(&ssn(), &envelope).unwrap();
        assert_eq!(entry.subkeys.lock().unwrap().len(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn any_value_round_trips_and_any_change_fails(
            plaintext in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            deterministic in proptest::prelude::any::<bool>(),
            position in proptest::prelude::any::<usize>(),
            bit in 0u8..8,
        ) {
            let cipher = cipher();
            let mode = if deterministic { Mode::Deterministic } else { Mode::Randomized };
            let envelope = cipher.seal(mode, &ssn(), &plaintext).unwrap();
            let opened = cipher.open(&ssn(), &envelope).unwrap();
            proptest::prop_assert_eq!(opened.as_slice(), &plaintext[..]);

            let mut changed = envelope.clone();
            changed[position % envelope.len()] ^= 1 << bit;
            proptest::prop_assert!(cipher.open(&ssn(), &changed).is_err());
        }
    }

    #[test]
    fn shared_types_are_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<EnvelopeCipher>();
        shared::<crate::crypto::DataKeyCache>();
        shared::<crate::crypto::CompanyKey>();
    }

    #[test]
    fn plaintext_length_is_checked() {
        assert_eq!(envelope_len(0), 38);
        assert_eq!(plaintext_len(38), Some(0));
        assert_eq!(plaintext_len(37), None);
        assert!(check_plaintext(&[]).is_ok());
    }

    /// Envelope sizes for the FORMAT.md table: type text, TDS value bytes, envelope bytes and
    /// the storage column declaration.
    fn size_rows() -> Vec<String> {
        let types = [
            "tinyint",
            "smallint",
            "int",
            "bigint",
            "bit",
            "decimal(9,2)",
            "decimal(19,4)",
            "decimal(28,6)",
            "decimal(38,10)",
            "real",
            "float",
            "smallmoney",
            "money",
            "char(10)",
            "varchar(50)",
            "varchar(8000)",
            "varchar(max)",
            "nchar(10)",
            "nvarchar(50)",
            "nvarchar(3981)",
            "nvarchar(4000)",
            "nvarchar(max)",
            "binary(16)",
            "varbinary(256)",
            "varbinary(max)",
            "date",
            "time(0)",
            "time(3)",
            "time(7)",
            "smalldatetime",
            "datetime",
            "datetime2(0)",
            "datetime2(3)",
            "datetime2(7)",
            "datetimeoffset(0)",
            "datetimeoffset(3)",
            "datetimeoffset(7)",
            "uniqueidentifier",
        ];
        types
            .iter()
            .map(|text| {
                let sql_type = SqlType::parse(text).unwrap();
                let (value, envelope, column) = match sql_type.max_value_len() {
                    Some(n) if envelope_len(n) <= 8000 => {
                        let e = envelope_len(n);
                        (n.to_string(), e.to_string(), format!("varbinary({e})"))
                    }
                    Some(n) => (
                        n.to_string(),
                        envelope_len(n).to_string(),
                        "varbinary(max)".into(),
                    ),
                    None => (
                        "up to 2^31-1".into(),
                        "value + 38".into(),
                        "varbinary(max)".into(),
                    ),
                };
                format!("| `{sql_type}` | {value} | {envelope} | `{column}` |")
            })
            .collect()
    }

    #[test]
    fn format_doc_size_table_matches_the_code() {
        for row in size_rows() {
            assert!(
                FORMAT_MD.contains(&row),
                "docs/FORMAT.md lacks the row:\n{row}"
            );
        }
    }

    /// Fixed inputs of one known-answer vector. Deterministic vectors ignore `epoch` and
    /// `nonce` (they are 0 and derived).
    struct KatInput {
        mode: Mode,
        key_id: u32,
        epoch: u32,
        nonce: [u8; 12],
        column: &'static str,
        sql_type: &'static str,
        plaintext: Vec<u8>,
    }

    /// Every vector uses the data key 0x42 repeated 32 times.
    const KAT_KEY_FILL: u8 = 0x42;

    fn kat_inputs() -> Vec<KatInput> {
        let nonce: [u8; 12] = core::array::from_fn(|i| 0xa0 + i as u8);
        let ssn: Vec<u8> = "123-45-6789"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let input = |mode, key_id, epoch, nonce, column, sql_type, plaintext| KatInput {
            mode,
            key_id,
            epoch,
            nonce,
            column,
            sql_type,
            plaintext,
        };
        let patients = "Clinic.dbo.Patients.SSN";
        let (random, det) = (Mode::Randomized, Mode::Deterministic);

        vec![
            input(
                random,
                1,
                0x0102_0304,
                nonce,
                patients,
                "nvarchar(11)",
                ssn.clone(),
            ),
            input(random, 1, 0, [0; 12], patients, "nvarchar(11)", Vec::new()),
            input(
                random,
                7,
                0xffff_ffff,
                nonce,
                "[Clinic].[dbo].[Patients].[BirthDate]",
                "date",
                vec![0x5b, 0x95, 0x0a],
            ),
            input(
                random,
                1,
                42,
                nonce,
                "Clinic.dbo.Patients.Balance",
                "decimal(10,2)",
                vec![1, 0x39, 0x30, 0, 0, 0, 0, 0, 0],
            ),
            input(det, 1, 0, [0; 12], patients, "nvarchar(11)", ssn),
            input(det, 1, 0, [0; 12], patients, "nvarchar(11)", Vec::new()),
            input(
                det,
                2,
                0,
                [0; 12],
                "Clinic.dbo.Patients.Id",
                "int",
                vec![0x2a, 0, 0, 0],
            ),
        ]
    }

    /// One vector: randomized ones use the injected epoch and nonce, deterministic ones derive
    /// their nonce.
    fn kat_vector(input: &KatInput) -> Value {
        let key = data_key(input.key_id, KAT_KEY_FILL);
        let binding = binding(input.column, input.sql_type);
        let (envelope, key_material) = match input.mode {
            Mode::Randomized => {
                let header = Header {
                    mode: input.mode,
                    key_id: input.key_id,
                    epoch: input.epoch,
                    nonce: input.nonce,
                };
                let cipher = randomized_cipher(&key, input.epoch);
                let envelope = seal_with(&cipher, header, &binding, &input.plaintext).unwrap();
                (envelope, randomized_subkey(&key, input.epoch).to_vec())
            }
            Mode::Deterministic => {
                let entry = KeyEntry::new(Arc::clone(&key));
                let envelope = seal_deterministic(&entry, &binding, &input.plaintext).unwrap();
                (
                    envelope,
                    deterministic_key_material(&key, &binding).to_vec(),
                )
            }
        };

        let header: &[u8; HEADER_LEN] = envelope[..HEADER_LEN].try_into().unwrap();
        let mode = match input.mode {
            Mode::Randomized => "randomized",
            Mode::Deterministic => "deterministic",
        };
        json!({
            "mode": mode,
            "data_key_id": input.key_id,
            "data_key": hex::encode(key.secret()),
            "column": input.column,
            "canonical_column": binding.column().as_str(),
            "sql_type": input.sql_type,
            "canonical_sql_type": binding.sql_type().to_string(),
            "binding_digest": hex::encode(binding.digest()),
            "derived_key": hex::encode(&key_material),
            "associated_data": hex::encode(&associated_data(header, &binding)),
            "plaintext": hex::encode(&input.plaintext),
            "envelope": hex::encode(&envelope),
        })
    }

    fn kat_vectors() -> Value {
        let vectors: Vec<Value> = kat_inputs().iter().map(kat_vector).collect();
        json!({
            "format": "tdsguard value envelope version 1 (docs/FORMAT.md)",
            "regenerate": "cargo test --lib crypto::envelope::tests::regenerate_known_answer_vectors -- --ignored",
            "vectors": vectors,
        })
    }

    #[test]
    fn known_answer_vectors_match_the_fixture() {
        let fixture: Value = serde_json::from_str(KAT_JSON).unwrap();
        assert_eq!(fixture, kat_vectors());
    }

    #[test]
    fn known_answer_envelopes_open_through_the_public_api() {
        let fixture: Value = serde_json::from_str(KAT_JSON).unwrap();
        let vectors = fixture["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 7);

        for vector in vectors {
            let text = |name: &str| vector[name].as_str().unwrap().to_owned();
            let id = DataKeyId::new(vector["data_key_id"].as_i64().unwrap()).unwrap();
            let bytes: [u8; 32] = hex::decode(&text("data_key")).unwrap().try_into().unwrap();
            let cipher = EnvelopeCipher::new(Arc::new(DataKey::from_bytes(id, bytes))).unwrap();

            let binding = binding(&text("column"), &text("sql_type"));
            let opened = cipher
                .open(&binding, &hex::decode(&text("envelope")).unwrap())
                .unwrap();
            assert_eq!(opened.as_slice(), hex::decode(&text("plaintext")).unwrap());
        }
    }

    /// Writes fixtures/envelope/kat.json from the fixed inputs. Run only when the format changes
    /// on purpose (see fixtures/envelope/README.md).
    #[test]
    #[ignore]
    fn regenerate_known_answer_vectors() {
        let text = serde_json::to_string_pretty(&kat_vectors()).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(KAT_PATH);
        std::fs::write(path, text).unwrap();
    }
}
