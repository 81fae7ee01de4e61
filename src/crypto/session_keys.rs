//! Loading a database's data keys inside an application's own upstream session, sans-I/O.
//!
//! After login and after every change of database (ENVCHANGE type 1, [MS-TDS] 2.2.7.9) the relay
//! sends [`KeySource::encode_request`]'s SQL batch (2.2.6.7, with ALL_HEADERS 2.2.5.3 carrying
//! the session's current transaction descriptor) and feeds the reply to a [`KeyReply`] instead
//! of the application. The reply ends in a [`KeyOutcome`]: the [`EnvelopeCipher`] of that
//! database, or a [`KeyRefusal`] saying why encrypted columns must be refused and how to fix it.
//!
//! The query reads every row of the key table, not only this company key's, so that "the rows
//! are wrapped for another company key" can be told apart from "there is no row". It is guarded
//! by `OBJECT_ID`, so a missing table gives an empty reply instead of error 208; a server that
//! still raises 208 is understood too.
//!
//! Limits: if the session has `XACT_ABORT ON` and an open transaction, an error raised by this
//! query (a permission error, for example) rolls that transaction back, as any failed statement
//! would. Unwrapped keys are cached per process ([`DataKeyCache`]); fingerprint and tag are
//! checked on every load.

use std::fmt;
use std::sync::Arc;

use bytes::BytesMut;

use crate::crypto::company_key::{CompanyKey, Fingerprint};
use crate::crypto::data_key::{DataKeyCache, DataKeyId, WrappedDataKey};
use crate::crypto::envelope::EnvelopeCipher;
use crate::crypto::error::CryptoError;
use crate::crypto::key_table::{parse_row, KeyTable, COLUMNS};
use crate::tds::all_headers::{AllHeaders, Header};
use crate::tds::sql_batch::SqlBatch;
use crate::tds::stream::{RowMode, TokenReader};
use crate::tds::token::{ColMetadata, InfoError, RawValue, Row, Token, TokenContext};
use crate::tds::types::{FixedType, LegacyVarLenType, NullableType, TypeInfo, VarLenType};
use crate::tds::{DecodeError, EncodeError};

/// Most key rows accepted in one reply. One row per data key id and company key; yearly
/// rotations under a handful of company keys stay far below it.
pub const MAX_KEY_ROWS: usize = 4096;

/// Largest key table row held whole: key id 4, fingerprint 32, wrapped key up to 512 (a
/// 4096-bit company key), tag 32, plus length prefixes; 4 KiB leaves room for a server that
/// sends the binary columns as `varbinary(max)`.
pub const MAX_KEY_ROW_BYTES: usize = 4096;

/// Error number of the SQL error a refusal becomes (SQL Server leaves numbers above 50000 to
/// applications; the rewriter's refusals use 50100-50115, docs/ERRORS.md).
pub const KEY_REFUSAL_ERROR_NUMBER: u32 = 50_120;

/// Class of that error: 16, a statement error the application can show; the session goes on.
pub const KEY_REFUSAL_CLASS: u8 = 16;

/// SQL Server: invalid object name (the key table does not exist).
const ERROR_INVALID_OBJECT: u32 = 208;

/// SQL Server errors that mean the login may not read the key table or use the database:
/// 229 (permission denied on an object), 230 (on a column), 262 (in the database), 297 (the
/// user has no permission), 916 (the login cannot access the database).
const PERMISSION_ERRORS: [u32; 5] = [229, 230, 262, 297, 916];

/// What a relay needs to load keys: the key table name, the company key and the cache.
#[derive(Clone)]
pub struct KeySource {
    table: KeyTable,
    company: Arc<CompanyKey>,
    cache: Option<Arc<DataKeyCache>>,
}

/// Why encrypted columns of a database must be refused. Every variant names the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The key table does not exist in the database.
    NoKeyTable { database: String, table: String },
    /// The table holds no row at all.
    NoKeyRow { database: String, table: String },
    /// The table holds rows, none wrapped for the loaded company key.
    WrongCompanyKey {
        database: String,
        found: Fingerprint,
        loaded: Fingerprint,
    },
    /// A row's integrity tag does not verify: altered in the database. No RSA was attempted.
    TagMismatch { database: String, key_id: u32 },
    /// A row whose tag verified did not decrypt.
    UnwrapFailed { database: String, key_id: u32 },
    /// The login may not read the key table (SQL Server error `number`).
    PermissionDenied {
        database: String,
        table: String,
        number: u32,
    },
    /// The reply does not have the key table's shape.
    MalformedReply { database: String, reason: String },
    /// The query failed with another SQL Server error.
    QueryFailed { database: String, number: u32 },
}

/// The end of a key reply: the database's cipher, or why it cannot be had.
pub type KeyOutcome = Result<EnvelopeCipher, KeyRefusal>;

/// Consumes the reply to the key query, token by token or as raw bytes.
pub struct KeyReply {
    source: KeySource,
    database: String,
    reader: TokenReader,
    columns: Option<Arc<ColMetadata>>,
    result_sets: usize,
    rows: Vec<WrappedDataKey>,
    foreign: Option<Fingerprint>,
    row_count: usize,
    error: Option<u32>,
    malformed: Option<String>,
}

impl KeySource {
    /// Keys unwrapped through the process-wide [`DataKeyCache`].
    pub fn new(table: KeyTable, company: Arc<CompanyKey>) -> Self {
        Self {
            table,
            company,
            cache: None,
        }
    }

    /// Keys unwrapped through `cache` instead (tests, or one cache per proxy instance).
    pub fn with_cache(mut self, cache: Arc<DataKeyCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.company.fingerprint()
    }

    /// The T-SQL of the key query.
    pub fn query_text(&self) -> String {
        let name = self.table.name();
        format!(
            "IF OBJECT_ID(N'{name}', N'U') IS NOT NULL SELECT {} FROM {name} ORDER BY key_id",
            COLUMNS.join(", ")
        )
    }

    /// The key query as a SQL batch payload (without packet headers), in the session's current
    /// transaction (`transaction_descriptor` from the last ENVCHANGE 8/9/10, 0 for none).
    /// ALL_HEADERS with a transaction descriptor is required from TDS 7.2 on (2.2.5.3).
    pub fn encode_request(
        &self,
        transaction_descriptor: u64,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let batch = SqlBatch {
            all_headers: Some(AllHeaders {
                headers: vec![Header::TransactionDescriptor {
                    descriptor: transaction_descriptor,
                    // Without MARS one request is outstanding: this one.
                    outstanding_requests: 1,
                }],
            }),
            text: self.query_text(),
        };
        batch.encode(out)
    }

    /// A parser for the reply in `database`, starting from the session's token context (TDS
    /// version and acknowledged features).
    pub fn reply(&self, database: &str, ctx: TokenContext) -> KeyReply {
        let mut reader = TokenReader::new(ctx);
        reader.set_row_mode(RowMode::Whole {
            max_row_bytes: MAX_KEY_ROW_BYTES,
        });
        KeyReply {
            source: self.clone(),
            database: database.to_owned(),
            reader,
            columns: None,
            result_sets: 0,
            rows: Vec::new(),
            foreign: None,
            row_count: 0,
            error: None,
            malformed: None,
        }
    }

    fn cache(&self) -> &DataKeyCache {
        match &self.cache {
            Some(cache) => cache,
            None => DataKeyCache::process(),
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySource")
            .field("table", &self.table.name())
            .field("company_key", &self.company.fingerprint())
            .finish_non_exhaustive()
    }
}

impl KeyReply {
    /// Appends reply bytes (packet payloads, in order).
    pub fn handle_bytes(&mut self, data: &[u8]) {
        self.reader.handle_bytes(data);
    }

    /// The outcome once the reply's final DONE arrived; `Ok(None)` while more bytes are needed.
    /// A decode error means the upstream stream is broken: the relay ends the session.
    pub fn poll_outcome(&mut self) -> Result<Option<KeyOutcome>, DecodeError> {
        while let Some(item) = self.reader.poll_item()? {
            if let Some(token) = item.token() {
                if let Some(outcome) = self.handle_token(token) {
                    return Ok(Some(outcome));
                }
            }
        }
        Ok(None)
    }

    /// For a relay that reads tokens itself (rows whole, against the reply's COLMETADATA):
    /// feed each token; the outcome comes with the final DONE.
    pub fn handle_token(&mut self, token: &Token) -> Option<KeyOutcome> {
        match token {
            Token::InfoError(e) if e.is_error => self.error = self.error.or(Some(e.number)),
            Token::ColMetadata(meta) if !meta.is_no_metadata() => self.handle_columns(meta),
            Token::Row(row) => self.handle_row(row),
            Token::Done(done) if done.ends_response() => return Some(self.finish()),
            _ => {}
        }
        None
    }

    fn handle_columns(&mut self, meta: &Arc<ColMetadata>) {
        self.result_sets += 1;
        if let Err(reason) = check_columns(meta) {
            self.malformed.get_or_insert(reason.to_owned());
        }
        self.columns = Some(Arc::clone(meta));
    }

    fn handle_row(&mut self, row: &Row) {
        self.row_count += 1;
        if self.malformed.is_some() {
            return;
        }
        if self.row_count > MAX_KEY_ROWS {
            self.malformed = Some(format!("more than {MAX_KEY_ROWS} key rows"));
            return;
        }
        match parse_key_row(row) {
            Ok(parsed) if parsed.company_key == self.source.fingerprint() => self.rows.push(parsed),
            Ok(parsed) => {
                self.foreign.get_or_insert(parsed.company_key);
            }
            Err(reason) => self.malformed = Some(reason),
        }
    }

    fn finish(&mut self) -> KeyOutcome {
        if let Some(number) = self.error {
            return Err(self.refusal_for_error(number));
        }
        let database = self.database.clone();
        if let Some(reason) = self.malformed.take() {
            return Err(KeyRefusal::MalformedReply { database, reason });
        }
        if self.result_sets == 0 {
            return Err(KeyRefusal::NoKeyTable {
                database,
                table: self.source.table.name().to_owned(),
            });
        }
        if self.rows.is_empty() {
            return Err(self.no_usable_row());
        }
        self.build_cipher()
    }

    fn refusal_for_error(&self, number: u32) -> KeyRefusal {
        let database = self.database.clone();
        let table = self.source.table.name().to_owned();
        match number {
            ERROR_INVALID_OBJECT => KeyRefusal::NoKeyTable { database, table },
            n if PERMISSION_ERRORS.contains(&n) => KeyRefusal::PermissionDenied {
                database,
                table,
                number,
            },
            _ => KeyRefusal::QueryFailed { database, number },
        }
    }

    fn no_usable_row(&self) -> KeyRefusal {
        let database = self.database.clone();
        match self.foreign {
            Some(found) => KeyRefusal::WrongCompanyKey {
                database,
                found,
                loaded: self.source.fingerprint(),
            },
            None => KeyRefusal::NoKeyRow {
                database,
                table: self.source.table.name().to_owned(),
            },
        }
    }

    /// Unwraps every row of this company key; the highest id seals, all open.
    fn build_cipher(&mut self) -> KeyOutcome {
        self.rows.sort_by_key(|row| row.key_id);
        let duplicate = self
            .rows
            .windows(2)
            .any(|pair| matches!(pair, [a, b] if a.key_id == b.key_id));
        if duplicate {
            return Err(KeyRefusal::MalformedReply {
                database: self.database.clone(),
                reason: "a data key id appears twice for one company key".to_owned(),
            });
        }

        let source = &self.source;
        let mut keys = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            let key = source.cache().unwrap(row, &source.company);
            keys.push(key.map_err(|e| self.refusal_for_crypto(row.key_id, e))?);
        }
        let current = keys.pop().ok_or_else(|| self.no_usable_row())?;
        let current_id = current.id();
        let mut cipher =
            EnvelopeCipher::new(current).map_err(|e| self.refusal_for_crypto(current_id, e))?;
        for key in keys {
            cipher.add_key(key);
        }
        Ok(cipher)
    }

    fn refusal_for_crypto(&self, key_id: DataKeyId, error: CryptoError) -> KeyRefusal {
        let database = self.database.clone();
        let key_id = key_id.get();
        match error {
            CryptoError::WrappedKeyTagMismatch { .. } => {
                KeyRefusal::TagMismatch { database, key_id }
            }
            CryptoError::UnwrapFailed { .. } => KeyRefusal::UnwrapFailed { database, key_id },
            CryptoError::WrongCompanyKey {
                wrapped_for,
                loaded,
                ..
            } => KeyRefusal::WrongCompanyKey {
                database,
                found: wrapped_for,
                loaded,
            },
            other => KeyRefusal::MalformedReply {
                database,
                reason: other.to_string(),
            },
        }
    }
}

impl fmt::Debug for KeyReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyReply")
            .field("database", &self.database)
            .field("rows", &self.rows.len())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl KeyRefusal {
    /// The SQL error the application sees when a statement touches an encrypted column.
    pub fn error_token(&self) -> InfoError {
        InfoError {
            is_error: true,
            number: KEY_REFUSAL_ERROR_NUMBER,
            state: 1,
            class: KEY_REFUSAL_CLASS,
            message: self.to_string().as_str().into(),
            server: "tdsguard".into(),
            procedure: "".into(),
            line: 0,
        }
    }

    /// Whether the database's content (not configuration) caused it: for the audit log.
    pub fn is_database_caused(&self) -> bool {
        matches!(
            self,
            Self::TagMismatch { .. } | Self::UnwrapFailed { .. } | Self::MalformedReply { .. }
        )
    }
}

impl fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tdsguard: encrypted columns are unavailable in database '"
        )?;
        match self {
            Self::NoKeyTable { database, table } => write!(
                f,
                "{database}': the key table {table} does not exist; run `tdsguard init-db \
                 --database {database}`"
            ),
            Self::NoKeyRow { database, table } => write!(
                f,
                "{database}': the key table {table} holds no data key; run `tdsguard init-db \
                 --database {database}`"
            ),
            Self::WrongCompanyKey {
                database,
                found,
                loaded,
            } => write!(
                f,
                "{database}': its data keys are wrapped for company key {found}, but this proxy \
                 loaded {loaded}; configure keys.company_key_file with that key, or run \
                 `tdsguard rewrap` where it is"
            ),
            Self::TagMismatch { database, key_id } => write!(
                f,
                "{database}': the integrity tag of data key {key_id} does not verify, so the key \
                 row was altered; restore the key table from a backup"
            ),
            Self::UnwrapFailed { database, key_id } => write!(
                f,
                "{database}': data key {key_id} does not decrypt under the company key; restore \
                 the key table from a backup"
            ),
            Self::PermissionDenied {
                database,
                table,
                number,
            } => write!(
                f,
                "{database}': this login may not read {table} (SQL Server error {number}); \
                 GRANT SELECT ON {table} to it"
            ),
            Self::MalformedReply { database, reason } => write!(
                f,
                "{database}': the key table reply is not usable ({reason}); check that the table \
                 was made by `tdsguard init-db`"
            ),
            Self::QueryFailed { database, number } => write!(
                f,
                "{database}': reading the key table failed with SQL Server error {number}"
            ),
        }
    }
}

/// A key row's four values: key id (int), fingerprint, wrapped key and tag (binary).
fn parse_key_row(row: &Row) -> Result<WrappedDataKey, String> {
    let [id, fingerprint, wrapped, tag] = row.values.as_slice() else {
        return Err("a key row does not have four values".to_owned());
    };
    let id = match id {
        RawValue::Bytes(b) => <[u8; 4]>::try_from(b.as_slice()).map(i32::from_le_bytes),
        _ => return Err("key_id is NULL or not an int".to_owned()),
    }
    .map_err(|_| "key_id is not 4 bytes".to_owned())?;
    parse_row(id, binary(fingerprint)?, binary(wrapped)?, binary(tag)?).map_err(|e| e.to_string())
}

fn binary(value: &RawValue) -> Result<&[u8], String> {
    match value {
        RawValue::Bytes(b) => Ok(b),
        RawValue::Plp { data, .. } => Ok(data),
        _ => Err("a binary key column is NULL".to_owned()),
    }
}

/// The reply must have the key table's four columns: an int, then three binary columns.
fn check_columns(meta: &ColMetadata) -> Result<(), &'static str> {
    let [id, rest @ ..] = meta.columns.as_slice() else {
        return Err("the key query returned no columns");
    };
    if rest.len() != 3 {
        return Err("the key query did not return four columns");
    }
    let int = matches!(
        id.type_info.typed(),
        TypeInfo::Fixed(FixedType::Int4)
            | TypeInfo::Nullable {
                ty: NullableType::IntN,
                len: 4
            }
    );
    if !int {
        return Err("key_id is not an int column");
    }
    if !rest.iter().all(|c| is_binary(c.type_info.typed())) {
        return Err("a key column is not binary");
    }
    Ok(())
}

fn is_binary(typed: &TypeInfo) -> bool {
    matches!(
        typed,
        TypeInfo::VarLen {
            ty: VarLenType::BigBinary | VarLenType::BigVarBinary,
            ..
        } | TypeInfo::LegacyVarLen {
            ty: LegacyVarLenType::Binary | LegacyVarLenType::VarBinary,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::company_key::tests::{TEST_KEY_A_PEM, TEST_KEY_B_PEM};
    use crate::crypto::data_key::DataKey;
    use crate::crypto::{ColumnId, Mode, SqlType, ValueBinding};
    use crate::tds::token::{encode_all, ColumnData, Done, DoneKind, DoneStatus, TypeInfoRaw};
    use crate::tds::Reader;

    /// A company key with its own RSA counter.
    fn company(pem: &str) -> Arc<CompanyKey> {
        Arc::new(CompanyKey::from_pkcs8_pem(pem, "test").unwrap())
    }

    fn source(company: &Arc<CompanyKey>) -> KeySource {
        KeySource::new(
            KeyTable::new("dbo.tdsguard_keys").unwrap(),
            Arc::clone(company),
        )
        .with_cache(Arc::new(DataKeyCache::new()))
    }

    fn id(n: i64) -> DataKeyId {
        DataKeyId::new(n).unwrap()
    }

    fn column(name: &str, typed: TypeInfo) -> ColumnData {
        ColumnData {
            user_type: 0,
            flags: 0,
            type_info: TypeInfoRaw::from_typed(typed).unwrap(),
            table_name: None,
            crypto: None,
            name: name.into(),
        }
    }

    fn binary_type(ty: VarLenType, max_len: u16) -> TypeInfo {
        TypeInfo::VarLen {
            ty,
            max_len,
            collation: None,
        }
    }

    /// COLMETADATA as SQL Server describes the key table's SELECT.
    fn metadata() -> Token {
        Token::ColMetadata(Arc::new(ColMetadata {
            no_metadata: false,
            cek_table: None,
            columns: vec![
                column("key_id", TypeInfo::Fixed(FixedType::Int4)),
                column(
                    "company_key_fingerprint",
                    binary_type(VarLenType::BigBinary, 32),
                ),
                column("wrapped_key", binary_type(VarLenType::BigVarBinary, 512)),
                column("tag", binary_type(VarLenType::BigBinary, 32)),
            ],
        }))
    }

    fn row(wrapped: &WrappedDataKey) -> Token {
        let id = i32::try_from(wrapped.key_id.get()).unwrap();
        Token::Row(Row {
            kind: crate::tds::token::RowKind::Row,
            null_bitmap: Vec::new(),
            values: vec![
                RawValue::Bytes(id.to_le_bytes().to_vec()),
                RawValue::Bytes(wrapped.company_key.as_bytes().to_vec()),
                RawValue::Bytes(wrapped.wrapped.clone()),
                RawValue::Bytes(wrapped.tag.to_vec()),
            ],
        })
    }

    fn done(status: u16) -> Token {
        Token::Done(Done {
            kind: DoneKind::Done,
            status: DoneStatus(status),
            cur_cmd: 0xC1,
            row_count: 0,
        })
    }

    fn error(number: u32) -> Token {
        Token::InfoError(InfoError {
            is_error: true,
            number,
            state: 1,
            class: 16,
            message: "denied".into(),
            server: "db".into(),
            procedure: "".into(),
            line: 1,
        })
    }

    fn result(rows: &[WrappedDataKey]) -> Vec<Token> {
        let mut tokens = vec![metadata()];
        tokens.extend(rows.iter().map(row));
        tokens.push(done(DoneStatus::COUNT));
        tokens
    }

    /// Encodes `tokens` and feeds them one byte at a time; the outcome must come with the last
    /// byte and not before.
    fn outcome(source: &KeySource, tokens: &[Token]) -> KeyOutcome {
        let bytes = encode_all(tokens, &mut TokenContext::default()).unwrap();
        let mut reply = source.reply("clinic", TokenContext::default());
        let (last, body) = bytes.split_last().unwrap();
        for b in body {
            reply.handle_bytes(std::slice::from_ref(b));
            assert!(reply.poll_outcome().unwrap().is_none());
        }
        reply.handle_bytes(&[*last]);
        reply
            .poll_outcome()
            .unwrap()
            .expect("outcome at the final DONE")
    }

    fn binding() -> ValueBinding {
        let column = ColumnId::new("clinic", "dbo", "Patients", "ssn").unwrap();
        ValueBinding::new(column, SqlType::parse("char(11)").unwrap())
    }

    #[test]
    fn request_is_a_sql_batch_with_the_transaction_descriptor() {
        let company = company(TEST_KEY_A_PEM);
        let source = source(&company);
        let mut out = BytesMut::new();
        source
            .encode_request(0x0102_0304_0506_0708, &mut out)
            .unwrap();

        let batch = SqlBatch::decode_with(&out, true).unwrap();
        let headers = batch.all_headers.unwrap();
        assert_eq!(
            headers.transaction_descriptor(),
            Some((0x0102_0304_0506_0708, 1))
        );
        assert_eq!(batch.text, source.query_text());
        assert_eq!(
            batch.text,
            "IF OBJECT_ID(N'[dbo].[tdsguard_keys]', N'U') IS NOT NULL SELECT key_id, \
             company_key_fingerprint, wrapped_key, tag FROM [dbo].[tdsguard_keys] ORDER BY key_id"
        );

        let mut again = BytesMut::new();
        SqlBatch::decode(&out).unwrap().encode(&mut again).unwrap();
        assert_eq!(again, out, "re-encodes byte for byte");
    }

    #[test]
    fn format_doc_shows_the_query_for_the_default_table() {
        let doc = include_str!("../../docs/FORMAT.md");
        let table = KeyTable::new(crate::crypto::key_table::DEFAULT_TABLE_NAME).unwrap();
        let source = KeySource::new(table, company(TEST_KEY_A_PEM));
        assert!(doc.contains(&source.query_text()));
        assert!(doc.contains(&KEY_REFUSAL_ERROR_NUMBER.to_string()));
    }

    #[test]
    fn rows_give_a_cipher_sealing_under_the_highest_id_and_opening_older_ones() {
        let company = company(TEST_KEY_A_PEM);
        let source = source(&company);
        let one = DataKey::generate(id(1)).unwrap();
        let two = DataKey::generate(id(2)).unwrap();
        let rows = [two.wrap(&company).unwrap(), one.wrap(&company).unwrap()];

        let cipher = outcome(&source, &result(&rows)).unwrap();
        assert_eq!(cipher.current_key_id(), id(2));
        let old = EnvelopeCipher::new(Arc::new(one))
            .unwrap()
            .seal(Mode::Randomized, &binding(), b"123-45-6789")
            .unwrap();
        assert_eq!(&cipher.open(&binding(), &old).unwrap()[..], b"123-45-6789");
        assert_eq!(company.rsa_decryptions(), 2);

        outcome(&source, &result(&rows)).unwrap();
        assert_eq!(company.rsa_decryptions(), 2, "unwrapped once per process");
    }

    #[test]
    fn rows_of_other_company_keys_are_skipped_or_named() {
        let a = company(TEST_KEY_A_PEM);
        let b = company(TEST_KEY_B_PEM);
        let under_b = DataKey::generate(id(1)).unwrap().wrap(&b).unwrap();
        let under_a = DataKey::generate(id(1)).unwrap().wrap(&a).unwrap();

        let mixed = outcome(&source(&a), &result(&[under_b.clone(), under_a]));
        assert_eq!(mixed.unwrap().current_key_id(), id(1));

        let refusal = outcome(&source(&a), &result(&[under_b])).err().unwrap();
        assert_eq!(
            refusal,
            KeyRefusal::WrongCompanyKey {
                database: "clinic".into(),
                found: b.fingerprint(),
                loaded: a.fingerprint(),
            }
        );
        assert!(refusal.to_string().contains(&b.fingerprint().to_string()));
        assert!(refusal.to_string().contains("tdsguard rewrap"));
        assert_eq!(a.rsa_decryptions(), 1);
    }

    #[test]
    fn missing_table_and_empty_table_say_run_init_db() {
        let company = company(TEST_KEY_A_PEM);
        let source = source(&company);
        let table = "[dbo].[tdsguard_keys]".to_owned();
        let database = "clinic".to_owned();

        let guarded = outcome(&source, &[done(0)]).err().unwrap();
        assert_eq!(
            guarded,
            KeyRefusal::NoKeyTable {
                database: database.clone(),
                table: table.clone()
            }
        );
        let raised = outcome(&source, &[error(208), done(DoneStatus::ERROR)]);
        assert_eq!(raised.err().unwrap(), guarded);
        assert!(guarded
            .to_string()
            .contains("tdsguard init-db --database clinic"));

        let empty = outcome(&source, &result(&[])).err().unwrap();
        assert_eq!(empty, KeyRefusal::NoKeyRow { database, table });
        assert!(empty.to_string().contains("tdsguard init-db"));
    }

    #[test]
    fn permission_errors_are_named_with_the_grant() {
        let company = company(TEST_KEY_A_PEM);
        let source = source(&company);
        for number in [229, 262, 916] {
            let refusal = outcome(&source, &[error(number), done(DoneStatus::ERROR)])
                .err()
                .unwrap();
            assert!(
                matches!(refusal, KeyRefusal::PermissionDenied { number: n, .. } if n == number)
            );
            assert!(refusal.to_string().contains("GRANT SELECT"), "{refusal}");
        }
        let other = outcome(&source, &[error(1205), done(DoneStatus::ERROR)]);
        assert!(matches!(
            other,
            Err(KeyRefusal::QueryFailed { number: 1205, .. })
        ));
    }

    #[test]
    fn tampered_tag_is_refused_before_any_rsa() {
        let company = company(TEST_KEY_A_PEM);
        let source = source(&company);
        let mut wrapped = DataKey::generate(id(3)).unwrap().wrap(&company).unwrap();
        wrapped.tag[0] ^= 0x01;

        let refusal = outcome(&source, &result(&[wrapped])).err().unwrap();
        assert_eq!(
            refusal,
            KeyRefusal::TagMismatch {
                database: "clinic".into(),
                key_id: 3
            }
        );
        assert!(refusal.is_database_caused());
        assert_eq!(company.rsa_decryptions(), 0);
    }

    #[test]
    fn reply_of_another_shape_is_refused() {
        let company = company(TEST_KEY_A_PEM);
        let source = source(&company);
        let wrong = Token::ColMetadata(Arc::new(ColMetadata {
            no_metadata: false,
            cek_table: None,
            columns: vec![column("key_id", TypeInfo::varbinary(4))],
        }));
        let refusal = outcome(&source, &[wrong, done(0)]).err().unwrap();
        assert!(
            matches!(refusal, KeyRefusal::MalformedReply { .. }),
            "{refusal}"
        );

        let wrapped = DataKey::generate(id(1)).unwrap().wrap(&company).unwrap();
        let mut short = row(&wrapped);
        if let Token::Row(r) = &mut short {
            r.values[1] = RawValue::Bytes(vec![0; 31]);
        }
        let tokens = [metadata(), short, done(DoneStatus::COUNT)];
        let refusal = outcome(&source, &tokens).err().unwrap();
        assert!(
            refusal.to_string().contains("company_key_fingerprint"),
            "{refusal}"
        );
    }

    #[test]
    fn refusal_becomes_a_class_16_error_token_that_round_trips() {
        let refusal = KeyRefusal::NoKeyRow {
            database: "clinic".into(),
            table: "[dbo].[k]".into(),
        };
        let token = Token::InfoError(refusal.error_token());
        let ctx = TokenContext::default();
        let mut bytes = Vec::new();
        token.encode(&ctx, &mut bytes).unwrap();

        let mut r = Reader::new(&bytes, "test");
        let Token::InfoError(back) = Token::decode(&mut r, &ctx).unwrap() else {
            panic!("not an ERROR token");
        };
        assert!(r.is_empty());
        assert_eq!(back.number, KEY_REFUSAL_ERROR_NUMBER);
        assert_eq!(back.class, KEY_REFUSAL_CLASS);
        assert_eq!(back.message.to_string_lossy(), refusal.to_string());
    }

    #[test]
    fn oversized_row_is_a_decode_error_not_an_allocation() {
        let company = company(TEST_KEY_A_PEM);
        let source = source(&company);
        let huge = Token::ColMetadata(Arc::new(ColMetadata {
            no_metadata: false,
            cek_table: None,
            columns: vec![
                column("key_id", TypeInfo::Fixed(FixedType::Int4)),
                column("a", binary_type(VarLenType::BigVarBinary, 0xFFFF)),
                column("b", binary_type(VarLenType::BigVarBinary, 0xFFFF)),
                column("c", binary_type(VarLenType::BigVarBinary, 0xFFFF)),
            ],
        }));
        let mut ctx = TokenContext::default();
        let mut bytes = encode_all(&[huge], &mut ctx).unwrap();
        bytes.push(crate::tds::token::ROW);
        bytes.extend_from_slice(&1i32.to_le_bytes());
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());

        let mut reply = source.reply("clinic", TokenContext::default());
        reply.handle_bytes(&bytes);
        assert!(matches!(
            reply.poll_outcome(),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
