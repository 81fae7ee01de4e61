//! Column encryption in the relay: the request and response rewriters of a
//! connection over one [`Session`] of the rewrite layer.
//!
//! Requests (SQL batches and RPCs) are assembled whole and go through the
//! session: unchanged, rewritten (literals and parameters sealed, schema
//! types changed) or refused. A refusal is answered to the application as
//! an ERROR (class 16, its docs/ERRORS.md number, server `tdsguard`) and a
//! DONE with the error bit; nothing goes upstream and the connection stays
//! open. Responses the session planned for are intercepted: COLMETADATA,
//! ROW, NBCROW and RETURNVALUE of mapped columns, and sp_describe_* answers,
//! are re-encoded in plaintext types.
//!
//! Keys: the session starts without its database's data key. The first
//! request that needs it makes the relay send the key query on the
//! application's own session (its reply never reaches the application),
//! then the request is handled again; after a change of database, again.
//! A key that cannot be had is remembered: statements on mapped columns are
//! refused with 50120 and the reason, others flow. Unwrapped data keys are
//! cached across connections by the [`KeySource`]'s [`DataKeyCache`].
//!
//! Bulk load data (packet type 0x07) is forwarded as it comes: the INSERT
//! BULK statement that must precede it is a SQL batch, refused for a mapped
//! table, and SQL Server rejects bulk data without one.
//!
//! Both halves share the session behind a mutex that is never held across
//! an await; requests and responses alternate on a connection (no MARS).
//!
//! [`DataKeyCache`]: crate::crypto::DataKeyCache

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use crate::crypto::session_keys::{KeyOutcome, KeyReply, KeySource, MAX_KEY_ROW_BYTES};
use crate::relay::hook::{
    RequestInterest, RequestRewriter, ResponseAction, ResponseRewriter, RewriteError,
    RewriterFactory, Rewritten, SessionInfo,
};
use crate::rewrite::{
    self, EnvelopeValueCipher, Outcome, Refusal, RefusalKind, Rewriter, Session, TokenAction,
};
use crate::tds::packet::{Message, PacketHeader, PacketType};
use crate::tds::rpc::RpcRequest;
use crate::tds::sql_batch::SqlBatch;
use crate::tds::stream::{Item, RowMode, DEFAULT_MAX_WHOLE_ROW_BYTES};
use crate::tds::token::{ColMetadata, EnvChange, TdsVersion, TokenContext};

/// Makes the column encryption rewriters of each connection.
pub struct ColumnEncryption {
    rewriter: Arc<Rewriter>,
    /// Where data keys come from; `None` seals with the rewriter's own
    /// cipher in every database (tests).
    keys: Option<KeySource>,
}

impl ColumnEncryption {
    /// Data keys loaded per database through `keys`.
    pub fn new(rewriter: Arc<Rewriter>, keys: KeySource) -> Self {
        ColumnEncryption {
            rewriter,
            keys: Some(keys),
        }
    }

    /// Every database sealed with the rewriter's cipher, no key loading.
    pub fn with_rewriter_cipher(rewriter: Arc<Rewriter>) -> Self {
        ColumnEncryption {
            rewriter,
            keys: None,
        }
    }

    fn new_state(&self, info: &SessionInfo) -> State {
        let database = login_database(info);
        let mut session = match self.keys {
            Some(_) => self.rewriter.session_awaiting_key(&database),
            None => self.rewriter.session(&database),
        };
        for change in &info.login_env {
            session.handle_env_change(change);
        }
        State {
            session,
            key_reply: None,
        }
    }
}

impl RewriterFactory for ColumnEncryption {
    fn request(&self) -> Box<dyn RequestRewriter> {
        self.pair(&SessionInfo::default()).0
    }

    fn response(&self) -> Box<dyn ResponseRewriter> {
        self.pair(&SessionInfo::default()).1
    }

    fn pair(&self, info: &SessionInfo) -> (Box<dyn RequestRewriter>, Box<dyn ResponseRewriter>) {
        let state = Arc::new(Mutex::new(self.new_state(info)));
        let requests = Requests {
            state: Arc::clone(&state),
            keys: self.keys.clone(),
            login_database: login_database(info),
        };
        (Box::new(requests), Box::new(Responses { state }))
    }
}

/// The database the login ended in: its last ENVCHANGE type 1.
fn login_database(info: &SessionInfo) -> String {
    info.login_env
        .iter()
        .rev()
        .find_map(EnvChange::database)
        .map(|name| name.to_string_lossy())
        .unwrap_or_default()
}

/// What both halves of a connection share.
struct State {
    session: Session,
    /// The reply to the key query being read, if one is outstanding.
    key_reply: Option<KeyReply>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere cannot leave the session half-updated in a way
    // that leaks plaintext: every refusal path is checked afresh.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Client to server.
struct Requests {
    state: Arc<Mutex<State>>,
    keys: Option<KeySource>,
    login_database: String,
}

/// What the session made of a request.
enum Handled {
    Unchanged,
    Replaced(Bytes),
    Refused(Refusal),
}

impl Requests {
    fn handle(&self, session: &mut Session, message: &Message) -> Result<Handled, RewriteError> {
        match message.packet_type {
            PacketType::SqlBatch => handle_batch(session, &message.payload),
            PacketType::Rpc => handle_rpc(session, &message.payload),
            _ => Ok(Handled::Unchanged),
        }
    }

    /// The key query, when `refusal` is only "the key is not loaded yet".
    fn key_query(&self, state: &mut State, refusal: &Refusal, message: &Message) -> Option<Bytes> {
        let keys = self.keys.as_ref()?;
        if refusal.kind != RefusalKind::KeyUnavailable || !state.session.needs_key_load() {
            return None;
        }
        let mut out = BytesMut::new();
        if let Err(e) = keys.encode_request(transaction_descriptor(message), &mut out) {
            state.session.refuse_key(format!(
                "tdsguard: encrypted columns are unavailable: the key query could not be encoded \
                 ({e})"
            ));
            return None;
        }
        let database = state.session.database().to_string();
        debug!(db.name = %database, "loading the data key");
        state.key_reply = Some(keys.reply(&database, TokenContext::default()));
        Some(out.freeze())
    }
}

impl RequestRewriter for Requests {
    fn interest(&mut self, first: &PacketHeader) -> RequestInterest {
        match first.packet_type {
            PacketType::SqlBatch | PacketType::Rpc => RequestInterest::WholeMessage,
            _ => RequestInterest::PassThrough,
        }
    }

    fn rewrite_request(
        &mut self,
        message: &Message,
        info: &SessionInfo,
    ) -> Result<Rewritten, RewriteError> {
        let mut state = lock(&self.state);
        let refusal = match self.handle(&mut state.session, message)? {
            Handled::Unchanged => return Ok(Rewritten::Unchanged),
            Handled::Replaced(payload) => return Ok(Rewritten::Replaced(payload)),
            Handled::Refused(refusal) => refusal,
        };
        if let Some(query) = self.key_query(&mut state, &refusal, message) {
            return Ok(Rewritten::OwnRequestFirst(query));
        }
        // Limitation: a refused request that carried RESETCONNECTION is not
        // sent, so the server does not reset; the session here has already
        // dropped its prepared handles (later sp_execute on them is refused
        // with 50109, fail closed).
        debug!(refusal.number = refusal.number(), "request refused");
        let ctx = context(info);
        let tokens = refusal
            .response_bytes(&ctx)
            .map_err(|e| relay_error("encoding a refusal", e))?;
        Ok(Rewritten::Answered(Bytes::from(tokens)))
    }

    /// RESETCONNECTION: prepared handles go, and the server returns to the
    /// login's database.
    fn on_reset(&mut self) {
        let mut state = lock(&self.state);
        state.session.handle_reset();
        if !self.login_database.is_empty() {
            state.session.set_database(&self.login_database);
        }
    }
}

fn handle_batch(session: &mut Session, payload: &[u8]) -> Result<Handled, RewriteError> {
    let Ok(batch) = SqlBatch::decode(payload) else {
        return Ok(Handled::Refused(undecodable("SQL batch")));
    };
    match session.handle_sql_batch(&batch).map_err(rewrite_error)? {
        Outcome::Unchanged => Ok(Handled::Unchanged),
        Outcome::Refused(r) => Ok(Handled::Refused(r)),
        Outcome::Rewritten(batch) => {
            let mut out = BytesMut::new();
            batch
                .encode(&mut out)
                .map_err(|e| relay_error("encoding a rewritten batch", e))?;
            Ok(Handled::Replaced(out.freeze()))
        }
    }
}

fn handle_rpc(session: &mut Session, payload: &[u8]) -> Result<Handled, RewriteError> {
    let Ok(request) = RpcRequest::decode(payload) else {
        return Ok(Handled::Refused(undecodable("RPC request")));
    };
    match session.handle_rpc(&request).map_err(rewrite_error)? {
        Outcome::Unchanged => Ok(Handled::Unchanged),
        Outcome::Refused(r) => Ok(Handled::Refused(r)),
        Outcome::Rewritten(request) => request
            .to_bytes()
            .map(|b| Handled::Replaced(Bytes::from(b)))
            .map_err(|e| relay_error("encoding a rewritten RPC", e)),
    }
}

/// A request the proxy cannot read cannot be checked for mapped columns:
/// it is refused rather than forwarded (the server would reject it too).
fn undecodable(what: &str) -> Refusal {
    Refusal::new(
        RefusalKind::Unparseable,
        format!("tdsguard: the {what} could not be decoded, so it was not sent"),
    )
}

/// The request's own transaction descriptor (ALL_HEADERS, 2.2.5.3), so the
/// key query runs in the application's transaction; 0 outside one.
fn transaction_descriptor(message: &Message) -> u64 {
    let headers = match message.packet_type {
        PacketType::SqlBatch => SqlBatch::decode(&message.payload)
            .ok()
            .and_then(|b| b.all_headers),
        _ => RpcRequest::decode(&message.payload)
            .ok()
            .and_then(|r| r.all_headers),
    };
    headers
        .and_then(|h| h.transaction_descriptor())
        .map_or(0, |(descriptor, _)| descriptor)
}

fn context(info: &SessionInfo) -> TokenContext {
    TokenContext {
        tds_version: TdsVersion(info.tds_version),
        ..TokenContext::default()
    }
}

fn rewrite_error(e: rewrite::RewriteError) -> RewriteError {
    RewriteError {
        reason: e.to_string(),
    }
}

fn relay_error(what: &str, e: impl std::fmt::Display) -> RewriteError {
    RewriteError {
        reason: format!("{what}: {e}"),
    }
}

/// Server to client.
struct Responses {
    state: Arc<Mutex<State>>,
}

impl Responses {
    fn finish_key(state: &mut State, outcome: KeyOutcome) {
        let database = state.session.database().to_string();
        match outcome {
            Ok(cipher) => {
                debug!(db.name = %database, key.id = %cipher.current_key_id(), "data key loaded");
                let cipher = EnvelopeValueCipher::new(Arc::new(cipher));
                state.session.install_key(Arc::new(cipher));
            }
            Err(refusal) => {
                warn!(db.name = %database, reason = %refusal, "encrypted columns unavailable");
                state.session.refuse_key(refusal.to_string());
            }
        }
    }
}

impl ResponseRewriter for Responses {
    fn intercept(&mut self, _info: &SessionInfo) -> bool {
        lock(&self.state).session.response_needs_rewrite()
    }

    fn row_mode(&mut self, _metadata: &ColMetadata) -> RowMode {
        let state = lock(&self.state);
        if state.key_reply.is_some() {
            return RowMode::Whole {
                max_row_bytes: MAX_KEY_ROW_BYTES,
            };
        }
        match state.session.wants_whole_rows() {
            // TODO(tdsguard): a mapped cell above the whole-row cap closes
            // the connection; streaming one PLP value through the cipher
            // would need a chunked envelope.
            true => RowMode::Whole {
                max_row_bytes: DEFAULT_MAX_WHOLE_ROW_BYTES,
            },
            false => RowMode::Pieces,
        }
    }

    fn on_item(
        &mut self,
        item: &Item,
        ctx: &TokenContext,
        _info: &SessionInfo,
    ) -> Result<ResponseAction, RewriteError> {
        let Some(token) = item.token() else {
            return Ok(ResponseAction::Forward);
        };
        let mut state = lock(&self.state);
        match state
            .session
            .handle_token(token, ctx)
            .map_err(rewrite_error)?
        {
            TokenAction::Forward => Ok(ResponseAction::Forward),
            TokenAction::Replace(bytes) => Ok(ResponseAction::Replace(Bytes::from(bytes))),
        }
    }

    fn on_own_item(&mut self, item: &Item) -> Result<(), RewriteError> {
        let Some(token) = item.token() else {
            return Ok(());
        };
        let mut state = lock(&self.state);
        let Some(reply) = state.key_reply.as_mut() else {
            return Ok(());
        };
        if let Some(outcome) = reply.handle_token(token) {
            state.key_reply = None;
            Self::finish_key(&mut state, outcome);
        }
        Ok(())
    }

    fn on_own_reply_end(&mut self) {
        let mut state = lock(&self.state);
        if state.key_reply.take().is_some() {
            let database = state.session.database().to_string();
            state.session.refuse_key(format!(
                "tdsguard: encrypted columns are unavailable in database '{database}': the key \
                 query's reply ended without a final DONE"
            ));
        }
    }

    fn on_env_change(&mut self, change: &EnvChange) {
        lock(&self.state).session.handle_env_change(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{ColumnConfig, EncryptionMode, OnDecryptError};
    use crate::crypto::company_key::tests::TEST_KEY_A_PEM;
    use crate::crypto::{CompanyKey, KeyTable};
    use crate::rewrite::{ColumnMap, NoKeyCipher};
    use crate::tds::token::{decode_all, Done, DoneKind, DoneStatus, Token};

    fn factory() -> ColumnEncryption {
        let column = ColumnConfig {
            table: "dbo.Patients".into(),
            column: "ssn".into(),
            sql_type: "char(11)".into(),
            mode: EncryptionMode::Deterministic,
            on_decrypt_error: OnDecryptError::Error,
            database: None,
        };
        let map = ColumnMap::new(&[column], &[]).unwrap();
        let rewriter = Arc::new(Rewriter::new(map, Arc::new(NoKeyCipher), 8));
        let company = CompanyKey::from_pkcs8_pem(TEST_KEY_A_PEM, "test").unwrap();
        let table = KeyTable::new("dbo.tdsguard_data_keys").unwrap();
        ColumnEncryption::new(rewriter, KeySource::new(table, Arc::new(company)))
    }

    fn info() -> SessionInfo {
        SessionInfo {
            client_packet_size: 4096,
            server_packet_size: 4096,
            tds_version: TdsVersion::V7_4.0,
            login_env: Vec::new(),
        }
    }

    fn batch(sql: &str) -> Message {
        let mut payload = BytesMut::new();
        SqlBatch {
            all_headers: None,
            text: sql.into(),
        }
        .encode(&mut payload)
        .unwrap();
        Message {
            packet_type: PacketType::SqlBatch,
            reset_flags: 0,
            spid: 0,
            packet_count: 1,
            first_packet_len: payload.len(),
            payload: payload.freeze(),
        }
    }

    /// The error number and class of an answer, checking it ends in
    /// DONE(ERROR).
    fn answered(outcome: Rewritten) -> (u32, u8) {
        let Rewritten::Answered(tokens) = outcome else {
            panic!("not answered: {outcome:?}");
        };
        let tokens = decode_all(&tokens, &mut TokenContext::default()).unwrap();
        let [Token::InfoError(e), Token::Done(d)] = &tokens[..] else {
            panic!("unexpected tokens {tokens:?}");
        };
        assert!(d.status.has(DoneStatus::ERROR));
        assert_eq!(e.server.to_string_lossy(), "tdsguard");
        (e.number, e.class)
    }

    fn final_done() -> Item {
        let done = Token::Done(Done {
            kind: DoneKind::Done,
            status: DoneStatus(0),
            cur_cmd: 0,
            row_count: 0,
        });
        Item::Token {
            token: done,
            raw: Bytes::new(),
        }
    }

    #[test]
    fn a_refusal_is_answered_in_place() {
        let (mut requests, _) = factory().pair(&info());
        let outcome = requests
            .rewrite_request(
                &batch("SELECT 1 FROM dbo.Patients WHERE ssn LIKE '1%'"),
                &info(),
            )
            .unwrap();
        assert_eq!(answered(outcome), (50101, 16));
    }

    #[test]
    fn unmapped_requests_flow_while_the_key_is_not_loaded() {
        let (mut requests, _) = factory().pair(&info());
        let outcome = requests
            .rewrite_request(&batch("SELECT name FROM dbo.Other"), &info())
            .unwrap();
        assert_eq!(outcome, Rewritten::Unchanged);
    }

    #[test]
    fn a_mapped_request_loads_the_key_first_then_fails_closed_without_one() {
        let (mut requests, mut responses) = factory().pair(&info());
        let insert = batch("INSERT INTO dbo.Patients (ssn) VALUES ('123-45-6789')");
        let first = requests.rewrite_request(&insert, &info()).unwrap();
        assert!(matches!(first, Rewritten::OwnRequestFirst(_)), "{first:?}");

        // The key query's reply: no result set (the table does not exist).
        responses.on_own_item(&final_done()).unwrap();
        responses.on_own_reply_end();

        let again = requests.rewrite_request(&insert, &info()).unwrap();
        assert_eq!(answered(again), (50120, 16));
        let plain = requests
            .rewrite_request(&batch("SELECT 1"), &info())
            .unwrap();
        assert_eq!(plain, Rewritten::Unchanged);
    }

    #[test]
    fn a_reply_without_its_final_done_refuses_the_key() {
        let (mut requests, mut responses) = factory().pair(&info());
        let select = batch("SELECT ssn FROM dbo.Patients");
        let first = requests.rewrite_request(&select, &info()).unwrap();
        assert!(matches!(first, Rewritten::OwnRequestFirst(_)));
        responses.on_own_reply_end();
        let again = requests.rewrite_request(&select, &info()).unwrap();
        assert_eq!(answered(again).0, 50120);
    }
}
