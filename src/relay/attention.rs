//! Staying in step with the server across an attention ([MS-TDS] 2.2.1.7
//! "Attention", 3.2.5.1 client sequencing of a cancel).
//!
//! A client cancels a request with an attention packet (type 0x06, no
//! payload). The server stops, may still send part of the pending response,
//! and ends with a DONE token carrying the ATTN bit (0x0020). The relay
//! forwards the attention at once and watches the server's messages until
//! that acknowledgement has passed; a server that never sends it is timed
//! out.
//! The acknowledgement itself is seen by the token reader of the relay loop.

use tokio::sync::watch;
use tokio::time::Instant;


/// Shared between the two directions of a connection: when the server must
/// have acknowledged the last attention by, if one is outstanding.
#[derive(Debug, Clone)]
pub struct AttentionSignal {
    deadline: watch::Sender<Option<Instant>>,
}

impl AttentionSignal {
    pub fn new() -> Self {
        AttentionSignal {
            deadline: watch::Sender::new(None),
        }
    }

    /// An attention went upstream; the server has until `deadline`.
    pub fn sent(&self, deadline: Instant) {
        self.deadline.send_replace(Some(deadline));
    }

    /// The server acknowledged.
    pub fn acknowledged(&self) {
        self.deadline.send_replace(None);
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Instant>> {
        self.deadline.subscribe()
    }
}

impl Default for AttentionSignal {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_round_trip() {
        let signal = AttentionSignal::new();
        let rx = signal.subscribe();
        let at = Instant::now();
        signal.sent(at);
        assert_eq!(*rx.borrow(), Some(at));
        signal.acknowledged();
        assert_eq!(*rx.borrow(), None);
    }
}
