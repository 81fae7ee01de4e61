//! Staying in step with the server across an attention ([MS-TDS] 2.2.1.7
//! "Attention", 3.2.5.1 client sequencing of a cancel).
//!
//! A client cancels a request with an attention packet (type 0x06, no
//! payload). The server stops, may still send part of the pending response,
//! and ends with a DONE token carrying the ATTN bit (0x0020). The relay
//! forwards the attention at once and watches the server's messages until
//! that acknowledgement has passed; a server that never sends it is timed
//! out.
//!
//! The end of every server message is its last DONE token (2.2.7.6: the
//! final DONE of a response has MORE clear), so keeping the last 13 bytes of
//! each message (9 before TDS 7.2) is enough to see the acknowledgement,
//! whatever the rows before it contain and however packets split them.

use tokio::sync::watch;
use tokio::time::Instant;

use crate::tds::packet::Packet;
use crate::tds::token::{DoneStatus, DONE, DONEPROC};

/// Length of a DONE token in TDS 7.2 and later (2.2.7.6).
const DONE_LEN: usize = 13;
/// Length of a DONE token before TDS 7.2 (4-byte row count).
const DONE_LEN_7_1: usize = 9;

/// How a server message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageEnd {
    /// The message ended with DONE(ATTN): a cancel was acknowledged.
    pub attention_ack: bool,
}

/// Watches server messages for the final DONE token.
#[derive(Debug)]
pub struct ResponseTracker {
    tail: [u8; DONE_LEN],
    tail_len: usize,
    done_len: usize,
}

impl ResponseTracker {
    /// `tds_7_2_or_later` decides the DONE token length.
    pub fn new(tds_7_2_or_later: bool) -> Self {
        ResponseTracker {
            tail: [0; DONE_LEN],
            tail_len: 0,
            done_len: if tds_7_2_or_later {
                DONE_LEN
            } else {
                DONE_LEN_7_1
            },
        }
    }

    /// Takes the next server packet; at the end of a message says how it
    /// ended.
    pub fn observe(&mut self, packet: &Packet) -> Option<MessageEnd> {
        self.push_tail(&packet.payload());
        if !packet.header.is_eom() {
            return None;
        }
        let end = MessageEnd {
            attention_ack: self.ends_with_attention_ack(),
        };
        self.tail_len = 0;
        Some(end)
    }

    fn push_tail(&mut self, payload: &[u8]) {
        let keep = self.done_len;
        if payload.len() >= keep {
            self.tail[..keep].copy_from_slice(&payload[payload.len() - keep..]);
            self.tail_len = keep;
            return;
        }
        let total = self.tail_len + payload.len();
        let drop = total.saturating_sub(keep);
        self.tail.copy_within(drop..self.tail_len, 0);
        let start = self.tail_len - drop;
        self.tail[start..start + payload.len()].copy_from_slice(payload);
        self.tail_len = start + payload.len();
    }

    fn ends_with_attention_ack(&self) -> bool {
        if self.tail_len < self.done_len {
            return false;
        }
        let token = self.tail[0];
        let status = DoneStatus(u16::from_le_bytes([self.tail[1], self.tail[2]]));
        (token == DONE || token == DONEPROC) && status.has(DoneStatus::ATTN)
    }
}

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
    use bytes::BytesMut;

    use super::*;
    use crate::tds::packet::{encode_message_with_spid, PacketHeader, PacketType, HEADER_LEN};

    fn done(status: u16) -> Vec<u8> {
        let mut out = vec![DONE];
        out.extend_from_slice(&status.to_le_bytes());
        out.extend_from_slice(&[0xC1, 0x00]);
        out.extend_from_slice(&7u64.to_le_bytes());
        out
    }

    fn packets(payload: &[u8], size: usize) -> Vec<Packet> {
        let mut out = BytesMut::new();
        encode_message_with_spid(PacketType::TabularResult, 0, 51, payload, size, &mut out)
            .unwrap();
        let mut rest = out.freeze();
        let mut list = Vec::new();
        while !rest.is_empty() {
            let header = PacketHeader::decode(&rest).unwrap();
            let raw = rest.split_to(usize::from(header.length));
            list.push(Packet { header, raw });
        }
        list
    }

    fn ends(payload: &[u8], size: usize) -> Vec<Option<MessageEnd>> {
        let mut tracker = ResponseTracker::new(true);
        packets(payload, size)
            .iter()
            .map(|p| tracker.observe(p))
            .collect()
    }

    #[test]
    fn sees_attention_ack_split_across_packets() {
        let mut payload = vec![0xD1; 1000];
        payload.extend(done(DoneStatus::ATTN));
        for size in [HEADER_LEN + 1, HEADER_LEN + 5, 512, 4096] {
            let result = ends(&payload, size);
            let last = result.last().copied().flatten();
            assert_eq!(last, Some(MessageEnd { attention_ack: true }), "size {size}");
            assert!(result[..result.len() - 1].iter().all(Option::is_none));
        }
    }

    #[test]
    fn ordinary_done_is_not_an_ack() {
        let mut payload = vec![0x00; 40];
        payload.extend(done(DoneStatus::COUNT));
        let result = ends(&payload, 512);
        assert_eq!(result, vec![Some(MessageEnd { attention_ack: false })]);
    }

    #[test]
    fn short_message_is_not_an_ack() {
        assert_eq!(ends(&[DONE, 0x20], 512), vec![Some(MessageEnd { attention_ack: false })]);
    }

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
