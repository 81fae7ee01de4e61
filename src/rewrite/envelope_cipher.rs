//! The production [`ValueCipher`]: the rewrite layer's seam over one
//! database's [`EnvelopeCipher`] (docs/FORMAT.md).
//!
//! A [`ColumnRef`] becomes the crypto layer's [`ColumnId`], the canonical
//! plaintext type text becomes its [`SqlType`], and the pair is kept as one
//! [`ValueBinding`] per (column, type) so the binding digest is hashed once.
//! Data keys are per database, so one adapter serves the sessions whose
//! current database is that database; the relay installs it in a
//! [`crate::rewrite::Session`] when the key reply arrives.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::EncryptionMode;
use crate::crypto::ValueBinding;
use crate::crypto::{envelope_len, ColumnId, CryptoError, EnvelopeCipher, Mode, SqlType};
use crate::rewrite::column_map::ColumnRef;
use crate::rewrite::sealer::{CipherError, ValueCipher};

/// Most bindings cached per adapter. Entries come from the column map (one
/// per mapped column and type), not from peers; the cap only guards against
/// a map far larger than any real one. Beyond it bindings are built per call.
pub const MAX_CACHED_BINDINGS: usize = 4096;

/// Bindings by column, then by plaintext type: two levels so that a hit is
/// found with borrowed keys, without building a key per value.
#[derive(Default)]
struct BindingCache {
    by_column: HashMap<ColumnRef, HashMap<String, Arc<ValueBinding>>>,
    /// Bindings across both levels, for the cap.
    len: usize,
}

/// Seals and opens values of one database with its data keys.
pub struct EnvelopeValueCipher {
    cipher: Arc<EnvelopeCipher>,
    bindings: Mutex<BindingCache>,
}

impl EnvelopeValueCipher {
    pub fn new(cipher: Arc<EnvelopeCipher>) -> Self {
        EnvelopeValueCipher {
            cipher,
            bindings: Mutex::new(BindingCache::default()),
        }
    }

    /// The binding of `column` as `plaintext_type`, cached.
    fn binding(
        &self,
        column: &ColumnRef,
        plaintext_type: &str,
    ) -> Result<Arc<ValueBinding>, CryptoError> {
        let mut cache = self.bindings.lock().unwrap_or_else(PoisonError::into_inner);
        let hit = cache
            .by_column
            .get(column)
            .and_then(|types| types.get(plaintext_type));
        if let Some(b) = hit {
            return Ok(Arc::clone(b));
        }

        let binding = Arc::new(build_binding(column, plaintext_type)?);
        if cache.len < MAX_CACHED_BINDINGS {
            cache
                .by_column
                .entry(column.clone())
                .or_default()
                .insert(plaintext_type.to_string(), Arc::clone(&binding));
            cache.len += 1;
        }
        Ok(binding)
    }

    /// Number of cached bindings.
    pub fn cached_bindings(&self) -> usize {
        self.bindings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len
    }
}

impl fmt::Debug for EnvelopeValueCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopeValueCipher")
            .field("key_id", &self.cipher.current_key_id())
            .finish_non_exhaustive()
    }
}

impl ValueCipher for EnvelopeValueCipher {
    fn seal(
        &self,
        column: &ColumnRef,
        plaintext_type: &str,
        mode: EncryptionMode,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let fail = |e: CryptoError| CipherError::Seal {
            column: column.to_string(),
            reason: seal_reason(&e),
        };
        let binding = self.binding(column, plaintext_type).map_err(fail)?;
        self.cipher
            .seal(crypto_mode(mode), &binding, plaintext)
            .map_err(fail)
    }

    fn open(
        &self,
        column: &ColumnRef,
        plaintext_type: &str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let fail = |e: CryptoError| CipherError::Open {
            column: column.to_string(),
            reason: open_reason(&e),
        };
        let binding = self.binding(column, plaintext_type).map_err(fail)?;
        let mut plain = self.cipher.open(&binding, envelope).map_err(fail)?;
        // Moved out without a copy; the rewriter re-encodes it and drops it.
        Ok(std::mem::take(&mut *plain))
    }

    fn sealed_len(&self, plain_len: usize) -> usize {
        envelope_len(plain_len)
    }
}

/// A cipher with no key: every seal and open fails, lengths are the
/// envelope format's. The [`crate::rewrite::Rewriter`] of a relay that
/// loads keys per session holds one of these; sessions get the real cipher
/// of their database.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKeyCipher;

impl ValueCipher for NoKeyCipher {
    fn seal(
        &self,
        column: &ColumnRef,
        _plaintext_type: &str,
        _mode: EncryptionMode,
        _plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        Err(CipherError::Seal {
            column: column.to_string(),
            reason: "no data key is loaded",
        })
    }

    fn open(
        &self,
        column: &ColumnRef,
        _plaintext_type: &str,
        _envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        Err(CipherError::Open {
            column: column.to_string(),
            reason: "no data key is loaded",
        })
    }

    fn sealed_len(&self, plain_len: usize) -> usize {
        envelope_len(plain_len)
    }
}

fn build_binding(column: &ColumnRef, plaintext_type: &str) -> Result<ValueBinding, CryptoError> {
    let id = ColumnId::new(
        &bracketed(&column.database),
        &bracketed(&column.schema),
        &bracketed(&column.table),
        &bracketed(&column.column),
    )?;
    Ok(ValueBinding::new(id, SqlType::parse(plaintext_type)?))
}

/// A canonical (unquoted) name part as a bracketed identifier, so names
/// with dots or spaces stay one part.
fn bracketed(part: &str) -> String {
    format!("[{}]", part.replace(']', "]]"))
}

fn crypto_mode(mode: EncryptionMode) -> Mode {
    match mode {
        EncryptionMode::Randomized => Mode::Randomized,
        EncryptionMode::Deterministic => Mode::Deterministic,
    }
}

fn seal_reason(e: &CryptoError) -> &'static str {
    match e {
        CryptoError::ColumnName { reason } | CryptoError::SqlType { reason } => reason,
        CryptoError::PlaintextTooLarge { .. } => "the value is larger than an envelope can hold",
        CryptoError::Random(_) => "the random number generator failed",
        _ => "the cipher refused the value",
    }
}

fn open_reason(e: &CryptoError) -> &'static str {
    match e {
        CryptoError::UnknownDataKey(_) => "it uses a data key that is not loaded",
        CryptoError::EnvelopeAuthentication { .. } => "authentication failed",
        CryptoError::ColumnName { reason } | CryptoError::SqlType { reason } => reason,
        _ => "not an envelope",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::crypto::{DataKey, DataKeyId};
    use crate::rewrite::column_map::{MappedColumn, TableKey};
    use crate::rewrite::{convert, ColumnMap, Rewriter, DEFAULT_COLLATION};
    use crate::tds::types::SqlValue;

    fn cipher(seed: u8) -> EnvelopeValueCipher {
        let key = DataKey::from_bytes(DataKeyId::new(1).unwrap(), [seed; 32]);
        EnvelopeValueCipher::new(Arc::new(EnvelopeCipher::new(Arc::new(key)).unwrap()))
    }

    fn col(c: &str) -> ColumnRef {
        ColumnRef {
            database: "clinic".into(),
            schema: "dbo".into(),
            table: "patients".into(),
            column: c.into(),
        }
    }

    #[test]
    fn seals_opens_and_binds_column_and_type() {
        let c = cipher(7);
        let env = c
            .seal(
                &col("ssn"),
                "char(11)",
                EncryptionMode::Randomized,
                b"123-45-6789",
            )
            .unwrap();
        assert_eq!(env.len(), c.sealed_len(11));
        assert_eq!(
            c.open(&col("ssn"), "char(11)", &env).unwrap(),
            b"123-45-6789"
        );
        assert!(c.open(&col("name"), "char(11)", &env).is_err());
        assert!(c.open(&col("ssn"), "char(12)", &env).is_err());
        assert!(cipher(8).open(&col("ssn"), "char(11)", &env).is_err());
    }

    #[test]
    fn modes_map_one_to_one() {
        let c = cipher(1);
        let seal = |m| c.seal(&col("ssn"), "char(11)", m, b"x").unwrap();
        let d = EncryptionMode::Deterministic;
        let r = EncryptionMode::Randomized;
        assert_eq!(seal(d), seal(d));
        assert_ne!(seal(r), seal(r));
        assert_eq!(seal(d)[1], crate::crypto::envelope::MODE_DETERMINISTIC);
        assert_eq!(seal(r)[1], crate::crypto::envelope::MODE_RANDOMIZED);
    }

    #[test]
    fn one_binding_per_column_and_type() {
        let c = cipher(1);
        for _ in 0..3 {
            c.seal(&col("a"), "int", EncryptionMode::Randomized, &[1, 0, 0, 0])
                .unwrap();
        }
        c.seal(&col("a"), "bigint", EncryptionMode::Randomized, &[0; 8])
            .unwrap();
        assert_eq!(c.cached_bindings(), 2);
    }

    #[test]
    fn names_with_dots_and_brackets_stay_one_part() {
        let mut odd = col("we]ird.name");
        odd.table = "pa tients".into();
        let c = cipher(2);
        let env = c
            .seal(&odd, "int", EncryptionMode::Deterministic, &[1, 2, 3, 4])
            .unwrap();
        assert_eq!(c.open(&odd, "int", &env).unwrap(), [1, 2, 3, 4]);
    }

    #[test]
    fn bad_type_text_and_garbage_are_errors_without_values() {
        let c = cipher(3);
        let e = c
            .seal(&col("a"), "xml", EncryptionMode::Randomized, b"secret")
            .unwrap_err();
        assert!(!e.to_string().contains("secret"));
        assert!(matches!(
            c.open(&col("a"), "int", b"short"),
            Err(CipherError::Open { .. })
        ));
    }

    const EVERY_TYPE: &[(&str, &str)] = &[
        ("nvarchar(50)", "Zoë Nguyễn"),
        ("nvarchar(max)", "long text, long text, long text"),
        ("varchar(20)", "plain ascii"),
        ("char(11)", "123-45-6789"),
        ("nchar(5)", "ab"),
        ("tinyint", "7"),
        ("smallint", "-3"),
        ("int", "42"),
        ("bigint", "9000000000"),
        ("bit", "1"),
        ("decimal(10,2)", "12.34"),
        ("money", "1.2345"),
        ("smallmoney", "2.5"),
        ("real", "1.5"),
        ("float", "2.25"),
        ("date", "2024-01-31"),
        ("time(3)", "12:34:56.789"),
        ("datetime", "2024-01-31 12:00:00"),
        ("smalldatetime", "2024-01-31 12:00"),
        ("datetime2(7)", "2024-01-31 12:34:56.1234567"),
        ("datetimeoffset(7)", "2024-01-31 12:34:56 +01:00"),
        ("uniqueidentifier", "6F9619FF-8B86-D011-B42D-00C04FC964FF"),
    ];

    fn session_for(ty: &str, mode: EncryptionMode) -> (crate::rewrite::Session, Arc<MappedColumn>) {
        let config = crate::config::ColumnConfig {
            table: "dbo.patients".into(),
            column: "c".into(),
            sql_type: ty.into(),
            mode,
            on_decrypt_error: crate::config::OnDecryptError::Error,
            database: None,
        };
        let map = ColumnMap::new(&[config], &[]).unwrap();
        let rewriter = Arc::new(Rewriter::new(map, Arc::new(NoKeyCipher), 8));
        let mut session = rewriter.session_awaiting_key("clinic");
        session.install_key(Arc::new(cipher(9)));
        let key = TableKey::parse("dbo.patients").unwrap().1;
        let m = rewriter.map().column("clinic", &key, "c").unwrap();
        (session, m)
    }

    #[test]
    fn every_type_round_trips_through_the_rewriter() {
        for &(ty, text) in EVERY_TYPE {
            let (s, m) = session_for(ty, EncryptionMode::Randomized);
            let value = SqlValue::NVarChar(text.into());
            let env = s.seal(&m, &value).unwrap().unwrap();

            let ti = m.plain.type_info(DEFAULT_COLLATION);
            let converted = convert::to_column(&value, &m.plain, DEFAULT_COLLATION, "c").unwrap();
            let expected = convert::plain_bytes(&ti, &converted).unwrap();
            if expected.len() >= 4 {
                assert!(!env.windows(expected.len()).any(|w| w == expected), "{ty}");
            }
            let plain = s.open(&m, &env).unwrap();
            assert_eq!(plain, expected, "{ty}");
            assert_eq!(env.len(), envelope_len(expected.len()), "{ty}");
            assert_eq!(
                convert::from_plain_bytes(&ti, &plain),
                Some(converted),
                "{ty}"
            );
        }
    }

    #[test]
    fn every_type_is_deterministic_when_asked() {
        for &(ty, text) in EVERY_TYPE {
            let (s, m) = session_for(ty, EncryptionMode::Deterministic);
            let value = SqlValue::NVarChar(text.into());
            let a = s.seal(&m, &value).unwrap().unwrap();
            assert_eq!(Some(a.clone()), s.seal(&m, &value).unwrap(), "{ty}");
            assert_eq!(a[1], crate::crypto::envelope::MODE_DETERMINISTIC);
        }
    }

    #[test]
    fn null_stays_null_and_a_missing_key_refuses() {
        let (mut s, m) = session_for("int", EncryptionMode::Randomized);
        assert_eq!(s.seal(&m, &SqlValue::Null).unwrap(), None);

        s.set_database("other");
        let r = s.seal(&m, &SqlValue::Int(1)).unwrap_err();
        assert_eq!(
            r.number(),
            crate::crypto::session_keys::KEY_REFUSAL_ERROR_NUMBER
        );
        s.refuse_key("no key table");
        assert_eq!(
            s.key_refusal().map(|r| r.message.as_str()),
            Some("no key table")
        );
    }

    #[test]
    fn no_key_cipher_fails_closed_with_envelope_lengths() {
        let c = NoKeyCipher;
        assert!(c
            .seal(&col("a"), "int", EncryptionMode::Randomized, &[0; 4])
            .is_err());
        assert!(c.open(&col("a"), "int", &[0; 42]).is_err());
        assert_eq!(c.sealed_len(4), 42);
    }
}
