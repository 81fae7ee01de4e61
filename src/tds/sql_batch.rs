//! SQL batch requests ([MS-TDS] 2.2.6.7), plus the two client messages that
//! need framing only: attention (2.2.1.7, type 0x06, no payload) and bulk
//! load data (2.2.6.1, type 0x07, a token stream decoded elsewhere).
//!
//! A batch is optional ALL_HEADERS (required from TDS 7.2 on, absent from
//! older clients) followed by the SQL text in UTF-16LE.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::tds::all_headers::{decode_utf16, encode_utf16, AllHeaders};
use crate::tds::packet::{self, status, Message, PacketType};
use crate::tds::{DecodeError, EncodeError, Reader};

const STRUCTURE: &str = "SQLBatch";

/// A SQL batch. The text is SQL Server's, so Debug shows only its length.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SqlBatch {
    pub all_headers: Option<AllHeaders>,
    /// The batch text. Decoding is strict UTF-16, so encoding it again
    /// gives back the received bytes.
    pub text: String,
}

impl fmt::Debug for SqlBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBatch")
            .field("all_headers", &self.all_headers)
            .field("text_len", &self.text.len())
            .finish()
    }
}

impl SqlBatch {
    /// Decodes a batch, detecting ALL_HEADERS (see [`AllHeaders::is_present`]).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with(payload, AllHeaders::is_present(payload))
    }

    /// Decodes a batch whose ALL_HEADERS presence is known from the
    /// negotiated TDS version (7.2 and later: present).
    pub fn decode_with(payload: &[u8], has_all_headers: bool) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, STRUCTURE);
        let all_headers = match has_all_headers {
            true => Some(AllHeaders::decode(&mut r)?),
            false => None,
        };
        let text = decode_utf16(r.rest(), STRUCTURE)?;
        Ok(SqlBatch { all_headers, text })
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if let Some(headers) = &self.all_headers {
            headers.encode(out)?;
        }
        out.extend_from_slice(&encode_utf16(&self.text));
        Ok(())
    }

    /// The text as UTF-16LE, as it travels.
    pub fn text_utf16(&self) -> Vec<u8> {
        encode_utf16(&self.text)
    }
}

/// What the RESET bits of a request's first packet ask for (2.2.3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetRequest {
    /// RESETCONNECTION: reset the session, rolling back any transaction.
    Connection,
    /// RESETCONNECTIONSKIPTRAN: reset the session but keep the transaction.
    ConnectionSkipTransaction,
}

/// The reset a message asks for. Only SQL batch, RPC and transaction
/// manager requests may carry one; for other types the bits are an error.
pub fn reset_request(message: &Message) -> Result<Option<ResetRequest>, DecodeError> {
    if message.reset_flags == 0 {
        return Ok(None);
    }
    let may_reset = matches!(
        message.packet_type,
        PacketType::SqlBatch | PacketType::Rpc | PacketType::TransactionManager
    );
    if !may_reset {
        return Err(DecodeError::InvalidValue {
            structure: "message",
            field: "reset bits",
            value: message.reset_flags.into(),
        });
    }
    // With both bits set the stronger reset wins; the spec defines neither.
    if message.reset_flags & status::RESETCONNECTION != 0 {
        return Ok(Some(ResetRequest::Connection));
    }
    Ok(Some(ResetRequest::ConnectionSkipTransaction))
}

/// Checks that a message is a well-formed attention: type 0x06, no payload
/// and no RESET bits (a reset belongs to the request being cancelled, and a
/// cancelled request's reset may or may not have reached the server).
pub fn check_attention(message: &Message) -> Result<(), DecodeError> {
    if message.packet_type != PacketType::Attention {
        return Err(DecodeError::InvalidValue {
            structure: "attention",
            field: "packet type",
            value: (message.packet_type as u8).into(),
        });
    }
    if !message.payload.is_empty() {
        return Err(DecodeError::LengthMismatch {
            structure: "attention",
            declared: 0,
            used: message.payload.len(),
        });
    }
    reset_request(message).map(|_| ())
}

/// Appends an attention packet: type 0x06, EOM, length 8, no RESET bits.
pub fn encode_attention(out: &mut BytesMut) -> Result<(), EncodeError> {
    packet::encode_message(PacketType::Attention, 0, &[], packet::HEADER_LEN + 1, out)
}

/// Bulk load data (type 0x07): framing only. The payload is a token stream
/// (COLMETADATA, ROW..., DONE) that the token decoder reads.
#[derive(Clone, PartialEq, Eq)]
pub struct BulkLoad {
    pub token_stream: Bytes,
}

impl fmt::Debug for BulkLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkLoad")
            .field("len", &self.token_stream.len())
            .finish()
    }
}

impl BulkLoad {
    /// Takes the token stream out of a type 0x07 message.
    pub fn from_message(message: &Message) -> Result<Self, DecodeError> {
        if message.packet_type != PacketType::BulkLoad {
            return Err(DecodeError::InvalidValue {
                structure: "bulk load",
                field: "packet type",
                value: (message.packet_type as u8).into(),
            });
        }
        Ok(BulkLoad {
            token_stream: message.payload.clone(),
        })
    }

    /// Appends the message as packets of `packet_size`.
    pub fn encode(&self, packet_size: usize, out: &mut BytesMut) -> Result<(), EncodeError> {
        packet::encode_message(
            PacketType::BulkLoad,
            0,
            &self.token_stream,
            packet_size,
            out,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::all_headers::Header;
    use crate::tds::packet::{Assembled, MessageAssembler, PacketReader};

    const BATCH_46: &[u8] =
        include_bytes!("../../fixtures/ms-tds-examples/ms-tds-4.6_sqlbatch_request.bin");

    fn message(raw: &[u8]) -> Message {
        let mut reader = PacketReader::new();
        reader.feed(raw);
        let packet = reader.next_packet().unwrap().unwrap();
        match MessageAssembler::default().push(&packet).unwrap() {
            Some(Assembled::Message(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_the_spec_example() {
        let payload = &BATCH_46[8..];
        let batch = SqlBatch::decode(payload).unwrap();
        let headers = batch.all_headers.as_ref().unwrap();
        // As transcribed in the fixture: the 0x01 byte falls in the
        // descriptor's top byte, outstanding request count 0.
        assert_eq!(
            headers.transaction_descriptor(),
            Some((0x0100_0000_0000_0000, 0))
        );
        assert!(batch.text.starts_with("\nselect 'foo' as 'bar'"));
        let mut out = BytesMut::new();
        batch.encode(&mut out).unwrap();
        assert_eq!(&out[..], payload);
    }

    #[test]
    fn batch_without_headers_round_trips() {
        let batch = SqlBatch {
            all_headers: None,
            text: "SELECT 1".into(),
        };
        let mut out = BytesMut::new();
        batch.encode(&mut out).unwrap();
        assert_eq!(SqlBatch::decode(&out).unwrap(), batch);
        assert!(!format!("{batch:?}").contains("SELECT"));

        let with = SqlBatch {
            all_headers: Some(AllHeaders {
                headers: vec![Header::TransactionDescriptor {
                    descriptor: 7,
                    outstanding_requests: 1,
                }],
            }),
            text: String::new(),
        };
        let mut out = BytesMut::new();
        with.encode(&mut out).unwrap();
        assert_eq!(SqlBatch::decode_with(&out, true).unwrap(), with);
    }

    #[test]
    fn invalid_text_is_an_error() {
        assert!(SqlBatch::decode_with(&[0x41, 0x00, 0x42], false).is_err());
        assert!(SqlBatch::decode_with(&[0x00, 0xDC], false).is_err());
    }

    #[test]
    fn attention_and_reset() {
        let mut out = BytesMut::new();
        encode_attention(&mut out).unwrap();
        assert_eq!(&out[..], &[0x06, 0x01, 0x00, 0x08, 0x00, 0x00, 0x01, 0x00]);
        check_attention(&message(&out)).unwrap();

        let mut reset = BATCH_46.to_vec();
        reset[1] = status::EOM | status::RESETCONNECTION;
        let msg = message(&reset);
        assert_eq!(reset_request(&msg).unwrap(), Some(ResetRequest::Connection));
        assert!(check_attention(&msg).is_err());

        let mut bad = out.to_vec();
        bad[1] |= status::RESETCONNECTIONSKIPTRAN;
        assert!(check_attention(&message(&bad)).is_err());
    }

    #[test]
    fn bulk_load_framing() {
        let raw = include_bytes!("../../fixtures/ms-tds-examples/ms-tds-4.12_bulkload_request.bin");
        let bulk = BulkLoad::from_message(&message(raw)).unwrap();
        assert_eq!(bulk.token_stream.first(), Some(&0x81));
        let mut out = BytesMut::new();
        bulk.encode(4096, &mut out).unwrap();
        assert_eq!(&out[..], &raw[..]);
    }
}
