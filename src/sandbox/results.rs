//! Turning what the engine produces into the token stream of a TDS response
//! ([MS-TDS] 2.2.4 token stream, 2.2.7 tokens), packet payload by packet
//! payload, while the statement still runs.
//!
//! [`TokenWriter`] runs on the engine's blocking thread: it encodes tokens
//! with the codec's encoders into a buffer and hands every full packet
//! payload to the connection task through a bounded channel, so a large
//! result is never held in memory and the client sees rows as they come. The
//! connection task adds the packet headers (see `server`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::tds::packet::HEADER_LEN;
use crate::tds::token::{Done, DoneKind, DoneStatus, Token, TokenContext};
use crate::tds::EncodeError;

/// Packet payloads buffered between the engine thread and the socket. Small:
/// back-pressure should reach the engine quickly when the client reads slowly.
pub const OUTGOING_QUEUE: usize = 16;

/// A piece of a response on its way to the connection task.
#[derive(Debug)]
pub enum Outgoing {
    /// Exactly one full packet payload; more follows.
    Payload(Bytes),
    /// The rest of the response (possibly empty); the packet carrying it
    /// ends the message.
    Last(Bytes),
}

/// Why token writing stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WriteStop {
    /// The client sent an attention; the rest of the response is dropped.
    #[error("the request was cancelled by an attention")]
    Cancelled,
    /// The connection task is gone (client disconnected).
    #[error("the connection closed while the response was written")]
    Disconnected,
    #[error("a token could not be encoded")]
    Encode(#[from] EncodeError),
}

/// Encodes tokens of one response and streams them out as packet payloads.
pub struct TokenWriter {
    ctx: TokenContext,
    buf: Vec<u8>,
    payload_len: usize,
    tx: mpsc::Sender<Outgoing>,
    cancel: Arc<AtomicBool>,
}

impl TokenWriter {
    /// A writer for packets of `packet_size` bytes (header included).
    pub fn new(
        ctx: TokenContext,
        packet_size: usize,
        tx: mpsc::Sender<Outgoing>,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        let payload_len = packet_size.saturating_sub(HEADER_LEN).max(1);
        TokenWriter {
            ctx,
            buf: Vec::with_capacity(payload_len * 2),
            payload_len,
            tx,
            cancel,
        }
    }

    /// Whether the client asked to cancel the running request.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The negotiated TDS version and the current result set's metadata.
    pub fn context(&self) -> &TokenContext {
        &self.ctx
    }

    /// Appends one token; stops when the request was cancelled.
    pub fn token(&mut self, token: &Token) -> Result<(), WriteStop> {
        if self.is_cancelled() {
            return Err(WriteStop::Cancelled);
        }
        token.encode(&self.ctx, &mut self.buf)?;
        self.ctx.observe(token);
        self.send_full_payloads()
    }

    /// Appends bytes already encoded as tokens (rows encoded against the
    /// current metadata by the caller, for speed).
    pub fn encoded(&mut self, bytes: &[u8]) -> Result<(), WriteStop> {
        if self.is_cancelled() {
            return Err(WriteStop::Cancelled);
        }
        self.buf.extend_from_slice(bytes);
        self.send_full_payloads()
    }

    /// A DONE-family token.
    pub fn done(
        &mut self,
        kind: DoneKind,
        status: u16,
        cur_cmd: u16,
        rows: u64,
    ) -> Result<(), WriteStop> {
        let done = Done {
            kind,
            status: DoneStatus(status),
            cur_cmd,
            row_count: rows,
        };
        self.token(&Token::Done(done))
    }

    fn send_full_payloads(&mut self) -> Result<(), WriteStop> {
        if self.buf.len() < self.payload_len {
            return Ok(());
        }
        let mut rest = std::mem::take(&mut self.buf);
        let mut start = 0;
        while rest.len() - start >= self.payload_len {
            let end = start + self.payload_len;
            let payload = Bytes::copy_from_slice(&rest[start..end]);
            self.tx
                .blocking_send(Outgoing::Payload(payload))
                .map_err(|_| WriteStop::Disconnected)?;
            start = end;
        }
        rest.drain(..start);
        self.buf = rest;
        Ok(())
    }

    /// Ends the response. After a cancel, what is buffered is dropped: the
    /// connection task closes the response with DONE(ATTN).
    pub fn finish(mut self) -> Result<(), WriteStop> {
        if self.is_cancelled() {
            self.buf.clear();
        }
        let last = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Outgoing::Last(last))
            .map_err(|_| WriteStop::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::login;

    fn writer(packet_size: usize) -> (TokenWriter, mpsc::Receiver<Outgoing>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(1024);
        let cancel = Arc::new(AtomicBool::new(false));
        let w = TokenWriter::new(
            TokenContext::default(),
            packet_size,
            tx,
            Arc::clone(&cancel),
        );
        (w, rx, cancel)
    }

    fn drain(rx: &mut mpsc::Receiver<Outgoing>) -> (Vec<Bytes>, Option<Bytes>) {
        let (mut full, mut last) = (Vec::new(), None);
        while let Ok(item) = rx.try_recv() {
            match item {
                Outgoing::Payload(p) => full.push(p),
                Outgoing::Last(p) => last = Some(p),
            }
        }
        (full, last)
    }

    #[test]
    fn payloads_are_cut_at_the_packet_size() {
        let (mut w, mut rx, _) = writer(512);
        let info = login::info(5701, 2, &"x".repeat(300));
        for _ in 0..5 {
            w.token(&info).expect("writes");
        }
        w.finish().expect("finishes");
        let (full, last) = drain(&mut rx);
        assert!(full.iter().all(|p| p.len() == 504));
        let total: usize = full.iter().map(Bytes::len).sum::<usize>() + last.map_or(0, |l| l.len());
        let mut one = Vec::new();
        info.encode(&TokenContext::default(), &mut one)
            .expect("encodes");
        assert_eq!(total, one.len() * 5);
    }

    #[test]
    fn cancel_stops_writing_and_drops_the_buffer() {
        let (mut w, mut rx, cancel) = writer(4096);
        w.done(DoneKind::Done, DoneStatus::MORE, 0, 0)
            .expect("writes");
        cancel.store(true, Ordering::Relaxed);
        assert!(matches!(
            w.done(DoneKind::Done, 0, 0, 0),
            Err(WriteStop::Cancelled)
        ));
        w.finish().expect("finishes");
        let (full, last) = drain(&mut rx);
        assert!(full.is_empty());
        assert_eq!(last.expect("last").len(), 0);
    }
}
