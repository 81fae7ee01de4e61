//! Column encryption rewriting: which parameter, literal and result column
//! is which mapped PHI column; sealing values on the way up, opening them on
//! the way down, and refusing (fail closed) whatever cannot be handled.
//!
//! Sans-I/O. A [`Rewriter`] is shared by all connections (column map, cipher,
//! analysis cache). Each upstream session gets a [`Session`]: requests go
//! in through [`Session::handle_sql_batch`], [`Session::handle_rpc`] and
//! [`Session::handle_bulk_load`] and come out unchanged, rewritten or
//! refused; the response's tokens then go through
//! [`Session::handle_token`]. TDS requests and responses alternate on a
//! connection without MARS (refused at PRELOGIN), so one response plan at a
//! time is kept.
//!
//! A refusal is answered to the application with
//! [`Refusal::response_bytes`] instead of sending the request upstream.

pub mod analysis;
pub mod cache;
pub mod column_map;
pub mod convert;
pub mod envelope_cipher;
pub mod error;
pub mod literals;
pub mod params;
pub mod results;
pub mod schema;
pub mod sealer;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, EncryptionMode};
use crate::tds::rpc::RpcRequest;
use crate::tds::sql_batch::SqlBatch;
use crate::tds::token::{Token, TokenContext};
use crate::tds::types::{Collation, SqlValue, TypeInfo};

pub use analysis::Analysis;
pub use cache::{AnalysisCache, DEFAULT_ANALYSIS_CACHE_CAP};
pub use column_map::{ColumnMap, ColumnRef, MappedColumn, PlainType, DEFAULT_COLLATION};
pub use envelope_cipher::{EnvelopeValueCipher, NoKeyCipher};
pub use error::{Refusal, RefusalKind, RewriteError};
pub use results::TokenAction;
pub use sealer::ValueCipher;

use crate::rewrite::column_map::column_ref;
use crate::rewrite::error::RefusalKind as K;

/// Prepared handles remembered per session. sp_prepare handles are
/// session-scoped ints; drivers keep a statement cache of a few hundred.
/// Beyond this cap further prepares are refused rather than forgotten,
/// because an unknown handle is refused at sp_execute.
pub const MAX_PREPARED_PER_SESSION: usize = 65_536;

/// What happens to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// Forward the request's packets as they came.
    Unchanged,
    /// Send this message instead.
    Rewritten(T),
    /// Do not send it; answer the application with the refusal.
    Refused(Refusal),
}

/// The shared part: column map, cipher and analysis cache. The cipher is
/// the one [`Rewriter::session`] uses for every database; a relay that
/// loads data keys per database gives it a [`NoKeyCipher`] (for envelope
/// lengths) and uses [`Rewriter::session_awaiting_key`].
pub struct Rewriter {
    map: Arc<ColumnMap>,
    cipher: Arc<dyn ValueCipher>,
    cache: AnalysisCache,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl Rewriter {
    pub fn new(map: ColumnMap, cipher: Arc<dyn ValueCipher>, cache_cap: usize) -> Self {
        Rewriter {
            map: Arc::new(map),
            cipher,
            cache: AnalysisCache::new(cache_cap),
        }
    }

    /// From the `[[columns]]` and `[[procedures]]` of a loaded config.
    pub fn from_config(
        config: &Config,
        cipher: Arc<dyn ValueCipher>,
    ) -> Result<Self, RewriteError> {
        let map = ColumnMap::new(&config.columns, &config.procedures)?;
        Ok(Rewriter::new(map, cipher, DEFAULT_ANALYSIS_CACHE_CAP))
    }

    pub fn map(&self) -> &ColumnMap {
        &self.map
    }

    /// The (cached) analysis of `text` in `database`.
    pub fn analyze(&self, database: &str, text: &str) -> Arc<Analysis> {
        if let Some(a) = self.cache.get(database, text) {
            return a;
        }
        let a = Arc::new(analysis::analyze(&self.map, database, text));
        self.cache.insert(database, text, Arc::clone(&a));
        a
    }

    /// A new upstream session in `database` that seals and opens with the
    /// rewriter's cipher, whatever the database.
    pub fn session(self: &Arc<Self>, database: &str) -> Session {
        Session {
            rewriter: Arc::clone(self),
            database: database.to_string(),
            collation: DEFAULT_COLLATION,
            prepared: HashMap::new(),
            pending: results::ResponseState::default(),
            key: SessionKey::Shared,
        }
    }

    /// A new upstream session whose cipher is per database: until
    /// [`Session::install_key`] (and again after each change of database)
    /// statements that need a key are refused, and
    /// [`Session::needs_key_load`] says the relay should load one.
    pub fn session_awaiting_key(self: &Arc<Self>, database: &str) -> Session {
        let mut s = self.session(database);
        s.key = SessionKey::Unloaded(key_not_loaded(database));
        s
    }
}

/// The cipher a session seals and opens with.
#[derive(Clone)]
enum SessionKey {
    /// The rewriter's cipher, for every database.
    Shared,
    /// The current database's key has not been loaded yet: statements that
    /// need it are refused with this until the relay loads it.
    Unloaded(Refusal),
    /// The current database's cipher.
    Loaded(Arc<dyn ValueCipher>),
    /// Loading the current database's key failed: statements that need it
    /// are refused with this (it names the cause and the fix).
    Refused(Refusal),
}

fn key_not_loaded(database: &str) -> Refusal {
    Refusal::new(
        K::KeyUnavailable,
        format!(
            "tdsguard: encrypted columns are unavailable in database '{database}': its data key \
             is not loaded (the database changed inside the batch); send the statement again"
        ),
    )
}

/// A statement prepared with sp_prepare / sp_prepexec.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// Declared parameter names (canonical) in order.
    pub names: Vec<String>,
    /// The mapped column of each declared parameter.
    pub columns: Vec<Option<Arc<MappedColumn>>>,
    pub analysis: Arc<Analysis>,
}

/// Per upstream session state.
pub struct Session {
    rewriter: Arc<Rewriter>,
    database: String,
    collation: Collation,
    prepared: HashMap<i32, Prepared>,
    pending: results::ResponseState,
    key: SessionKey,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("database", &self.database)
            .field("prepared", &self.prepared.len())
            .field("key_loaded", &self.key_refusal().is_none())
            .finish()
    }
}

impl Session {
    /// The current database changed (ENVCHANGE type 1). A per-database key
    /// no longer applies: the session waits for the new database's.
    pub fn set_database(&mut self, database: &str) {
        let changed = self.database != database;
        self.database = database.to_string();
        if changed && !matches!(self.key, SessionKey::Shared) {
            self.key = SessionKey::Unloaded(key_not_loaded(database));
        }
    }

    /// The current database's cipher arrived.
    pub fn install_key(&mut self, cipher: Arc<dyn ValueCipher>) {
        self.key = SessionKey::Loaded(cipher);
    }

    /// The current database's key cannot be had: statements that need it
    /// are refused with `message` (which names the cause and the fix).
    pub fn refuse_key(&mut self, message: impl Into<String>) {
        self.key = SessionKey::Refused(Refusal::new(K::KeyUnavailable, message));
    }

    /// Whether the current database's key has not been asked for yet.
    pub fn needs_key_load(&self) -> bool {
        matches!(self.key, SessionKey::Unloaded(_))
    }

    /// Why statements on mapped columns are refused now, if they are.
    pub fn key_refusal(&self) -> Option<&Refusal> {
        match &self.key {
            SessionKey::Unloaded(r) | SessionKey::Refused(r) => Some(r),
            SessionKey::Shared | SessionKey::Loaded(_) => None,
        }
    }

    fn cipher(&self) -> Result<&Arc<dyn ValueCipher>, Refusal> {
        match &self.key {
            SessionKey::Shared => Ok(&self.rewriter.cipher),
            SessionKey::Loaded(c) => Ok(c),
            SessionKey::Unloaded(r) | SessionKey::Refused(r) => Err(r.clone()),
        }
    }

    /// The key refusal, when the response just planned must open values
    /// and no key is loaded.
    fn key_refusal_for_response(&mut self) -> Option<Refusal> {
        let refusal = self
            .key_refusal()
            .filter(|_| self.pending.needs_key())?
            .clone();
        self.pending = results::ResponseState::default();
        Some(refusal)
    }

    /// An ENVCHANGE of the server, whatever the response: database (1),
    /// collation (7) and reset acknowledgement (18) keep the session in
    /// step. Seeing one twice changes nothing.
    pub fn handle_env_change(&mut self, change: &crate::tds::token::EnvChange) {
        results::observe_env_change(self, change);
    }

    /// The database's default collation (ENVCHANGE type 7), used for the
    /// plaintext TYPE_INFO of character columns.
    pub fn set_collation(&mut self, collation: Collation) {
        self.collation = collation;
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// RESETCONNECTION: prepared handles and the response plan are dropped.
    pub fn handle_reset(&mut self) {
        self.prepared.clear();
        self.pending = results::ResponseState::default();
    }

    /// Number of prepared handles remembered.
    pub fn prepared_count(&self) -> usize {
        self.prepared.len()
    }

    /// Whether a handle is remembered.
    pub fn knows_handle(&self, handle: i32) -> bool {
        self.prepared.contains_key(&handle)
    }

    /// A SQL batch: literals of mapped columns are sealed, schema types of
    /// mapped columns rewritten; statements that cannot work are refused.
    pub fn handle_sql_batch(
        &mut self,
        batch: &SqlBatch,
    ) -> Result<Outcome<SqlBatch>, RewriteError> {
        self.pending = results::ResponseState::default();
        if let Some(r) = schema::bulk_refusal(&self.rewriter.map, &self.database, &batch.text) {
            return Ok(Outcome::Refused(r));
        }
        let analysis = self.rewriter.analyze(&self.database, &batch.text);
        if let Some(r) = &analysis.refusal {
            return Ok(Outcome::Refused(r.clone()));
        }
        self.pending.expect(&analysis);
        if let Some(r) = self.key_refusal_for_response() {
            return Ok(Outcome::Refused(r));
        }
        if !analysis.needs_rewrite() {
            return Ok(Outcome::Unchanged);
        }
        match literals::rewrite_text(self, &batch.text, &analysis, literals::TextKind::Batch) {
            Ok(None) => Ok(Outcome::Unchanged),
            Ok(Some(text)) => Ok(Outcome::Rewritten(SqlBatch {
                all_headers: batch.all_headers.clone(),
                text,
            })),
            Err(r) => Ok(Outcome::Refused(r)),
        }
    }

    /// An RPC request (sp_executesql, sp_prepexec, sp_prepare, sp_execute,
    /// sp_unprepare, mapped stored procedures).
    pub fn handle_rpc(
        &mut self,
        request: &RpcRequest,
    ) -> Result<Outcome<RpcRequest>, RewriteError> {
        self.pending = results::ResponseState::default();
        let outcome = params::rewrite_request(self, request);
        if outcome.is_ok() {
            if let Some(r) = self.key_refusal_for_response() {
                return Ok(Outcome::Refused(r));
            }
        }
        match outcome {
            Ok(None) => Ok(Outcome::Unchanged),
            Ok(Some(r)) => Ok(Outcome::Rewritten(r)),
            Err(RewriteError::Refused(r)) => {
                self.pending = results::ResponseState::default();
                Ok(Outcome::Refused(r))
            }
            Err(e) => Err(e),
        }
    }

    /// A bulk load message (packet type 0x07). INSERT BULK into a mapped
    /// table is refused before its data is sent; a bulk message whose
    /// COLMETADATA names a mapped column is refused here too.
    pub fn handle_bulk_load(&mut self, column_names: &[String]) -> Outcome<()> {
        schema::bulk_data_refusal(&self.rewriter.map, column_names)
            .map_or(Outcome::Unchanged, Outcome::Refused)
    }

    /// One token of the response to the last request.
    pub fn handle_token(
        &mut self,
        token: &Token,
        ctx: &TokenContext,
    ) -> Result<TokenAction, RewriteError> {
        results::handle_token(self, token, ctx)
    }

    /// Whether the rows of the current result set must be handed over
    /// whole (decoded) because some of its columns are opened.
    pub fn wants_whole_rows(&self) -> bool {
        self.pending.wants_rows()
    }

    /// Whether the current response needs its tokens rewritten (when not,
    /// the relay may forward its packets as they come).
    pub fn response_needs_rewrite(&self) -> bool {
        self.pending.is_active()
    }

    /// Seals one value for a mapped column: conversion to the column's type,
    /// canonical form for deterministic columns, then the cipher. `None`
    /// for NULL, which stays NULL.
    pub(crate) fn seal(&self, m: &MappedColumn, v: &SqlValue) -> Result<Option<Vec<u8>>, Refusal> {
        let converted = convert::to_column(v, &m.plain, self.collation, &m.display_name())?;
        if converted == SqlValue::Null {
            return Ok(None);
        }
        let converted = match m.mode {
            EncryptionMode::Deterministic => convert::canonical(converted, &m.plain),
            EncryptionMode::Randomized => converted,
        };
        let ti = m.plain.type_info(self.collation);
        let plain = convert::plain_bytes(&ti, &converted)?;
        let column = column_ref(&self.database, m);
        self.cipher()?
            .seal(&column, &m.plain_text, m.mode, &plain)
            .map(Some)
            .map_err(|e| Refusal::new(K::Encrypt, e.to_string()))
    }

    /// The storage TYPE_INFO of a mapped column: varbinary(n) or (max).
    pub(crate) fn storage_type(&self, m: &MappedColumn) -> TypeInfo {
        TypeInfo::varbinary(self.storage_len(m))
    }

    pub(crate) fn storage_len(&self, m: &MappedColumn) -> u16 {
        let cipher = Arc::clone(&self.rewriter.cipher);
        m.plain.storage_max_len(move |n| cipher.sealed_len(n))
    }

    /// The T-SQL declaration of the storage type.
    pub(crate) fn storage_declaration(&self, m: &MappedColumn) -> String {
        match self.storage_len(m) {
            0xFFFF => "varbinary(max)".to_string(),
            n => format!("varbinary({n})"),
        }
    }

    pub(crate) fn open(
        &self,
        m: &MappedColumn,
        envelope: &[u8],
    ) -> Result<Vec<u8>, sealer::CipherError> {
        let column = column_ref(&self.database, m);
        let Ok(cipher) = self.cipher() else {
            return Err(sealer::CipherError::Open {
                column: column.to_string(),
                reason: "the database's data key is not loaded",
            });
        };
        cipher.open(&column, &m.plain_text, envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared<T: Send + Sync>() {}
    fn owned<T: Send>() {}

    #[test]
    fn rewriter_is_shared_and_sessions_move_between_tasks() {
        shared::<Rewriter>();
        owned::<Session>();
    }

    #[test]
    fn analyses_are_cached_per_database_and_text() {
        let map = ColumnMap::new(&[], &[]).unwrap();
        let rw = Rewriter::new(map, Arc::new(sealer::InsecureTestCipher::new(1)), 8);
        let a = rw.analyze("db", "SELECT 1");
        let b = rw.analyze("db", "SELECT 1");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &rw.analyze("other", "SELECT 1")));
    }
}
