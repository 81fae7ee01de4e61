//! Requests of a logged-in session: SQL batches ([MS-TDS] 2.2.6.7) and RPCs
//! (2.2.6.6), the RESETCONNECTION status bit (2.2.3.1.2) and the session
//! state they share. A request runs on a blocking thread; the session's
//! state travels with it and comes back when it ends.

use std::sync::Arc;

use bytes::Bytes;
use tracing::debug;

use crate::sandbox::login::{self, SessionStart};
use crate::sandbox::results::{TokenWriter, WriteStop};
use crate::sandbox::server::SandboxOptions;
use crate::tds::packet::{Message, PacketType};
use crate::tds::sql_batch::{reset_request, SqlBatch};
use crate::tds::token::env_change::ENV_RESETACK;
use crate::tds::token::{DoneKind, DoneStatus, EnvChange, Token, TokenContext};

/// Our own message numbers (40700-40799, shared with the engine) for what
/// the sandbox does not do.
const UNSUPPORTED: u32 = 40701;
/// Severity of a statement-level error (SQL Server's usual 16).
const STATEMENT_ERROR_CLASS: u8 = 16;

/// What a session keeps between requests.
pub struct SessionState {
    ctx: TokenContext,
    database: Arc<str>,
}

/// Everything a request needs on its thread, returned when it ends.
pub struct RequestJob {
    database: Arc<str>,
    message: Message,
    out: TokenWriter,
}

/// What a finished request hands back to its session.
pub struct Finished {
    database: Arc<str>,
}

impl SessionState {
    pub fn new(options: &SandboxOptions, start: &SessionStart) -> Self {
        let _ = options;
        SessionState {
            ctx: TokenContext {
                tds_version: start.tds_version,
                ..TokenContext::default()
            },
            database: Arc::from(start.database.as_str()),
        }
    }

    /// The token context responses are encoded in.
    pub fn token_context(&self) -> TokenContext {
        self.ctx.clone()
    }

    /// Packs `message` and the session state into a job for a blocking thread.
    pub fn start_request(
        &mut self,
        message: Message,
        out: TokenWriter,
    ) -> impl FnOnce() -> Finished + Send + 'static {
        let job = RequestJob {
            database: Arc::clone(&self.database),
            message,
            out,
        };
        move || job.run()
    }

    /// Takes the state back from a finished request.
    pub fn request_done(&mut self, finished: Finished) {
        self.database = finished.database;
    }
}

impl RequestJob {
    fn run(mut self) -> Finished {
        match self.respond() {
            Ok(()) | Err(WriteStop::Cancelled) => {}
            Err(err) => debug!(error = %err, "response not completed"),
        }
        let _ = self.out.finish();
        Finished {
            database: self.database,
        }
    }

    fn respond(&mut self) -> Result<(), WriteStop> {
        if reset_request(&self.message).ok().flatten().is_some() {
            self.reset()?;
        }
        let payload = self.message.payload.clone();
        match self.message.packet_type {
            PacketType::SqlBatch => self.batch(&payload),
            PacketType::Rpc => self.rpc(&payload),
            _ => self.unsupported("this message type"),
        }
    }

    /// RESETCONNECTION: the response starts with ENVCHANGE 18 (2.2.7.9).
    fn reset(&mut self) -> Result<(), WriteStop> {
        let ack = EnvChange::Bytes {
            env_type: ENV_RESETACK,
            new: Vec::new(),
            old: Vec::new(),
        };
        self.out.token(&Token::EnvChange(ack))
    }

    fn batch(&mut self, payload: &Bytes) -> Result<(), WriteStop> {
        match SqlBatch::decode(payload) {
            Ok(batch) => self.execute_batch(&batch.text),
            Err(_) => self.unsupported("a malformed SQL batch"),
        }
    }

    fn execute_batch(&mut self, _sql: &str) -> Result<(), WriteStop> {
        self.unsupported("statement execution")
    }

    fn rpc(&mut self, _payload: &Bytes) -> Result<(), WriteStop> {
        self.unsupported("RPC requests")
    }

    /// ERROR naming what is unsupported, then DONE with the error bit; the
    /// connection stays usable.
    fn unsupported(&mut self, what: &str) -> Result<(), WriteStop> {
        let text = format!("The sandbox does not support {what}.");
        let error = login::error_token(UNSUPPORTED, 1, STATEMENT_ERROR_CLASS, &text);
        self.out.token(&error)?;
        self.out.done(DoneKind::Done, DoneStatus::ERROR, 0, 0)
    }
}
