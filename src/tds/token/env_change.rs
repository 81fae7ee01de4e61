//! ENVCHANGE (0xE3, [MS-TDS] 2.2.7.9): the server reports a change of session
//! state: database, language, collation, packet size, transaction
//! descriptors, reset acknowledgement, routing.
//!
//! The whole token is bounded by its 2-byte length, so no further cap is
//! needed. Types the specification does not define are kept as raw bytes.

use std::fmt;

use super::wire::{
    read_b_varbyte, read_b_varchar, read_us_varbyte, read_us_varchar, u16_body, with_u16_len,
    write_b_varbyte, write_b_varchar, write_us_varbyte, write_us_varchar, UcsString,
};
use super::ENVCHANGE;
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

pub const ENV_DATABASE: u8 = 0x01;
pub const ENV_LANGUAGE: u8 = 0x02;
pub const ENV_CHARSET: u8 = 0x03;
pub const ENV_PACKETSIZE: u8 = 0x04;
pub const ENV_SORT_LOCALID: u8 = 0x05;
pub const ENV_SORT_FLAGS: u8 = 0x06;
pub const ENV_SQLCOLLATION: u8 = 0x07;
pub const ENV_BEGINTRAN: u8 = 0x08;
pub const ENV_COMMITTRAN: u8 = 0x09;
pub const ENV_ROLLBACKTRAN: u8 = 0x0A;
pub const ENV_ENLISTDTC: u8 = 0x0B;
pub const ENV_DEFECTTRAN: u8 = 0x0C;
pub const ENV_MIRROR_PARTNER: u8 = 0x0D;
pub const ENV_PROMOTETRAN: u8 = 0x0F;
pub const ENV_TRANMGR_ADDRESS: u8 = 0x10;
pub const ENV_TRANENDED: u8 = 0x11;
pub const ENV_RESETACK: u8 = 0x12;
pub const ENV_USER_INSTANCE: u8 = 0x13;
pub const ENV_ROUTING: u8 = 0x14;

/// Routing data of ENVCHANGE type 20: where the client must reconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// 0 = TCP.
    pub protocol: u8,
    /// For TCP, the port.
    pub port: u16,
    pub server: UcsString,
}

/// One environment change. `new`/`old` follow the spec's NewValue/OldValue.
#[derive(Clone, PartialEq, Eq)]
pub enum EnvChange {
    /// Types 1-6, 13 and 19: B_VARCHAR new and old values.
    Text {
        env_type: u8,
        new: UcsString,
        old: UcsString,
    },
    /// Types 7-12, 16-18: B_VARBYTE new and old values (collation,
    /// transaction descriptors, reset acknowledgement).
    Bytes {
        env_type: u8,
        new: Vec<u8>,
        old: Vec<u8>,
    },
    /// Type 15: L_VARBYTE DTC token, B_VARBYTE old value.
    PromoteTransaction { new: Vec<u8>, old: Vec<u8> },
    /// Type 20: US_VARBYTE routing data, US_VARBYTE old value (empty).
    /// `old` is `None` when the sender left the old value out entirely, as
    /// some hand-built streams do; it is re-encoded the same way.
    Routing {
        routing: Routing,
        old: Option<Vec<u8>>,
    },
    /// A type MS-TDS does not define: the bytes after the type byte.
    Other { env_type: u8, body: Vec<u8> },
}

impl EnvChange {
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut body = u16_body(r, "ENVCHANGE")?;
        let env_type = body.u8()?;
        let change = Self::decode_value(env_type, &mut body)?;
        body.finish()?;
        Ok(change)
    }

    fn decode_value(env_type: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match env_type {
            0x01..=0x06 | ENV_MIRROR_PARTNER | ENV_USER_INSTANCE => EnvChange::Text {
                env_type,
                new: read_b_varchar(r)?,
                old: read_b_varchar(r)?,
            },
            0x07..=0x0C | 0x10..=0x12 => EnvChange::Bytes {
                env_type,
                new: read_b_varbyte(r)?,
                old: read_b_varbyte(r)?,
            },
            ENV_PROMOTETRAN => {
                let len = r.u32_le()? as usize;
                let new = r.bytes(len)?.to_vec();
                let old = read_b_varbyte(r)?;
                EnvChange::PromoteTransaction { new, old }
            }
            ENV_ROUTING => Self::decode_routing(r)?,
            _ => EnvChange::Other {
                env_type,
                body: r.bytes(r.remaining())?.to_vec(),
            },
        })
    }

    fn decode_routing(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.u16_le()? as usize;
        let mut data = r.take(len, "ENVCHANGE routing")?;
        let routing = Routing {
            protocol: data.u8()?,
            port: data.u16_le()?,
            server: read_us_varchar(&mut data)?,
        };
        data.finish()?;
        let old = match r.is_empty() {
            true => None,
            false => Some(read_us_varbyte(r)?),
        };
        Ok(EnvChange::Routing { routing, old })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        with_u16_len(ENVCHANGE, "ENVCHANGE", out, |out| {
            out.push(self.env_type());
            self.encode_value(out)
        })
    }

    fn encode_value(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        const S: &str = "ENVCHANGE";
        match self {
            EnvChange::Text { new, old, .. } => {
                write_b_varchar(new, S, out)?;
                write_b_varchar(old, S, out)
            }
            EnvChange::Bytes { new, old, .. } => {
                write_b_varbyte(new, S, out)?;
                write_b_varbyte(old, S, out)
            }
            EnvChange::PromoteTransaction { new, old } => {
                out.extend_from_slice(&(new.len() as u32).to_le_bytes());
                out.extend_from_slice(new);
                write_b_varbyte(old, S, out)
            }
            EnvChange::Routing { routing, old } => {
                let mut data = vec![routing.protocol];
                data.extend_from_slice(&routing.port.to_le_bytes());
                write_us_varchar(&routing.server, S, &mut data)?;
                write_us_varbyte(&data, S, out)?;
                match old {
                    Some(old) => write_us_varbyte(old, S, out),
                    None => Ok(()),
                }
            }
            EnvChange::Other { body, .. } => {
                out.extend_from_slice(body);
                Ok(())
            }
        }
    }

    /// The ENVCHANGE type byte.
    pub fn env_type(&self) -> u8 {
        match self {
            EnvChange::Text { env_type, .. }
            | EnvChange::Bytes { env_type, .. }
            | EnvChange::Other { env_type, .. } => *env_type,
            EnvChange::PromoteTransaction { .. } => ENV_PROMOTETRAN,
            EnvChange::Routing { .. } => ENV_ROUTING,
        }
    }

    /// The new packet size (type 4), if this is one and its text is a number.
    pub fn packet_size(&self) -> Option<u32> {
        match self {
            EnvChange::Text {
                env_type: ENV_PACKETSIZE,
                new,
                ..
            } => new.to_string_lossy().trim().parse().ok(),
            _ => None,
        }
    }

    /// The new database name (type 1).
    pub fn database(&self) -> Option<&UcsString> {
        match self {
            EnvChange::Text {
                env_type: ENV_DATABASE,
                new,
                ..
            } => Some(new),
            _ => None,
        }
    }

    /// The reset-connection acknowledgement (type 18).
    pub fn is_reset_ack(&self) -> bool {
        self.env_type() == ENV_RESETACK
    }

    /// The routing target (type 20).
    pub fn routing(&self) -> Option<&Routing> {
        match self {
            EnvChange::Routing { routing, .. } => Some(routing),
            _ => None,
        }
    }

    /// The new transaction descriptor of a BEGIN TRANSACTION (type 8).
    pub fn begin_transaction(&self) -> Option<&[u8]> {
        match self {
            EnvChange::Bytes {
                env_type: ENV_BEGINTRAN,
                new,
                ..
            } => Some(new),
            _ => None,
        }
    }
}

/// Shows the type and, for names and sizes, the values; transaction tokens
/// and unknown bodies are shown by length only.
impl fmt::Debug for EnvChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvChange::Text { env_type, new, old } => {
                write!(f, "EnvChange({env_type:#04x}, {new:?} <- {old:?})")
            }
            EnvChange::Routing { routing, .. } => write!(f, "EnvChange(routing, {routing:?})"),
            other => write!(f, "EnvChange({:#04x})", other.env_type()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::{encode_round_trip, round_trip};
    use crate::tds::token::{Token, TokenContext};

    fn ctx() -> TokenContext {
        TokenContext::default()
    }

    #[test]
    fn packet_size_text() {
        let change = EnvChange::Text {
            env_type: ENV_PACKETSIZE,
            new: "8000".into(),
            old: "4096".into(),
        };
        encode_round_trip(&Token::EnvChange(change.clone()), &ctx());
        assert_eq!(change.packet_size(), Some(8000));
    }

    #[test]
    fn begin_transaction_descriptor() {
        let bytes = [ENVCHANGE, 11, 0, 8, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        let Token::EnvChange(c) = round_trip(&bytes, &ctx()) else {
            panic!("not ENVCHANGE")
        };
        assert_eq!(c.begin_transaction(), Some(&[1, 2, 3, 4, 5, 6, 7, 8][..]));
    }

    #[test]
    fn reset_ack_promote_and_unknown() {
        let t = round_trip(&[ENVCHANGE, 3, 0, ENV_RESETACK, 0, 0], &ctx());
        let Token::EnvChange(c) = t else { panic!() };
        assert!(c.is_reset_ack());
        round_trip(&[ENVCHANGE, 8, 0, 0x0F, 2, 0, 0, 0, 9, 9, 0], &ctx());
        let t = round_trip(&[ENVCHANGE, 3, 0, 0x63, 1, 2], &ctx());
        assert!(
            t == Token::EnvChange(EnvChange::Other {
                env_type: 0x63,
                body: vec![1, 2]
            })
        );
    }

    #[test]
    fn routing() {
        let change = EnvChange::Routing {
            routing: Routing {
                protocol: 0,
                port: 11001,
                server: "w.example".into(),
            },
            old: Some(Vec::new()),
        };
        let bytes = encode_round_trip(&Token::EnvChange(change.clone()), &ctx());
        assert_eq!(&bytes[3..6], &[ENV_ROUTING, 23, 0]);
        assert_eq!(change.routing().map(|r| r.port), Some(11001));
        // Without the old value (r2dbc-mssql's hand-built vector).
        let bytes = [ENVCHANGE, 8, 0, ENV_ROUTING, 5, 0, 0, 0x39, 0x30, 0, 0];
        let Token::EnvChange(c) = round_trip(&bytes, &ctx()) else {
            panic!()
        };
        assert_eq!(c.routing().map(|r| r.port), Some(12345));
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut r = Reader::new(&[ENVCHANGE, 4, 0, 1, 0, 0, 9], "t");
        assert!(Token::decode(&mut r, &ctx()).is_err());
    }
}
