//! Server tokens of the tabular result stream ([MS-TDS] 2.2.7 "Packet Data Token
//! Stream Definition", token definitions in 2.2.4).
//!
//! Every token decodes from a fully buffered slice and encodes back to the same
//! bytes. What a decoder needs to know about the connection (negotiated TDS
//! version, acknowledged features, the current COLMETADATA) is passed in
//! explicitly as a [`TokenContext`]. Streaming over partial input is the job of
//! [`crate::tds::stream::TokenReader`], which feeds these decoders.
//!
//! Token framing differs per token (2.2.4.2 "Token Definition"): fixed length
//! (DONE, RETURNSTATUS), a 2-byte or 4-byte length, or no length at all
//! (COLMETADATA, ROW, NBCROW, RETURNVALUE, FEATUREEXTACK, DATACLASSIFICATION).
//! The token class bits are not used to skip unknown tokens: an unknown token
//! byte is [`DecodeError::UnknownToken`].

pub mod col_info;
pub mod col_metadata;
pub mod data_classification;
pub mod done;
pub mod env_change;
pub mod feature_ext_ack;
pub mod fed_auth_info;
pub mod info_error;
pub mod login_ack;
pub mod order;
pub mod return_status;
pub mod return_value;
pub mod row;
pub mod session_state;
pub mod sspi;
pub mod tab_name;
mod wire;

use std::fmt;
use std::sync::Arc;

use super::error::{DecodeError, EncodeError};
use super::reader::Reader;

pub use col_info::{ColInfo, ColInfoEntry};
pub use col_metadata::{
    CekEntry, CekTable, CekValue, ColMetadata, ColumnData, CryptoMetadata, Framing, TypeInfoRaw,
};
pub use data_classification::{DataClassification, SensitivityProperty};
pub use done::{Done, DoneKind, DoneStatus};
pub use env_change::{EnvChange, Routing};
pub use feature_ext_ack::{FeatureAck, FeatureExtAck};
pub use fed_auth_info::FedAuthInfo;
pub use info_error::{InfoError, Severity};
pub use login_ack::LoginAck;
pub use order::Order;
pub use return_status::ReturnStatus;
pub use return_value::ReturnValue;
pub use row::{PlpLength, RawValue, Row, RowKind};
pub use session_state::{SessionState, StateEntry};
pub use sspi::Sspi;
pub use tab_name::TabName;
pub use wire::UcsString;

/// ALTMETADATA (2.2.7.1): COMPUTE BY metadata, removed in SQL Server 2012.
/// Recognised only to name it in errors; decoding it is refused.
pub const ALTMETADATA: u8 = 0x88;
/// ALTROW (2.2.7.2): COMPUTE BY row; refused like ALTMETADATA.
pub const ALTROW: u8 = 0xD3;
/// COLINFO (2.2.7.3).
pub const COLINFO: u8 = 0xA5;
/// COLMETADATA (2.2.7.4).
pub const COLMETADATA: u8 = 0x81;
/// DATACLASSIFICATION (2.2.7.5), TDS 7.4 with the feature acknowledged.
pub const DATACLASSIFICATION: u8 = 0xA3;
/// DONE (2.2.7.6).
pub const DONE: u8 = 0xFD;
/// DONEINPROC (2.2.7.7).
pub const DONEINPROC: u8 = 0xFF;
/// DONEPROC (2.2.7.8).
pub const DONEPROC: u8 = 0xFE;
/// ENVCHANGE (2.2.7.9).
pub const ENVCHANGE: u8 = 0xE3;
/// ERROR (2.2.7.10).
pub const ERROR: u8 = 0xAA;
/// FEATUREEXTACK (2.2.7.11), TDS 7.4.
pub const FEATUREEXTACK: u8 = 0xAE;
/// FEDAUTHINFO (2.2.7.12), TDS 7.4.
pub const FEDAUTHINFO: u8 = 0xEE;
/// INFO (2.2.7.13).
pub const INFO: u8 = 0xAB;
/// LOGINACK (2.2.7.14).
pub const LOGINACK: u8 = 0xAD;
/// NBCROW (2.2.7.15), TDS 7.3B.
pub const NBCROW: u8 = 0xD2;
/// OFFSET (2.2.7.16), TDS 7.1 and earlier only; refused.
pub const OFFSET: u8 = 0x78;
/// ORDER (2.2.7.17).
pub const ORDER: u8 = 0xA9;
/// RETURNSTATUS (2.2.7.18).
pub const RETURNSTATUS: u8 = 0x79;
/// RETURNVALUE (2.2.7.19).
pub const RETURNVALUE: u8 = 0xAC;
/// ROW (2.2.7.20).
pub const ROW: u8 = 0xD1;
/// SESSIONSTATE (2.2.7.21), TDS 7.4 with SESSIONRECOVERY.
pub const SESSIONSTATE: u8 = 0xE4;
/// SSPI (2.2.7.22).
pub const SSPI: u8 = 0xED;
/// TABNAME (2.2.7.23).
pub const TABNAME: u8 = 0xA4;

/// A TDS protocol version as LOGINACK carries it (2.2.7.14), read big-endian:
/// 7.4 is `0x7400_0004`. TDS 8.0 is `0x0800_0000` and behaves as 7.4 for tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TdsVersion(pub u32);

impl TdsVersion {
    pub const V7_0: TdsVersion = TdsVersion(0x7000_0000);
    pub const V7_1: TdsVersion = TdsVersion(0x7100_0001);
    pub const V7_2: TdsVersion = TdsVersion(0x7209_0002);
    pub const V7_3A: TdsVersion = TdsVersion(0x730A_0003);
    pub const V7_3B: TdsVersion = TdsVersion(0x730B_0003);
    pub const V7_4: TdsVersion = TdsVersion(0x7400_0004);
    pub const V8_0: TdsVersion = TdsVersion(0x0800_0000);

    /// Whether the 7.2 token layouts apply: 8-byte DONE row counts, 4-byte
    /// UserType, 4-byte INFO line numbers, multi-part table names.
    pub fn is_7_2_or_later(self) -> bool {
        self.0 >> 24 == 0x08 || self.0 >= Self::V7_2.0
    }
}

impl Default for TdsVersion {
    fn default() -> Self {
        TdsVersion::V7_4
    }
}

/// What a token decoder must know about the connection. The stream reader
/// keeps it current as LOGINACK, FEATUREEXTACK and COLMETADATA pass by.
#[derive(Debug, Clone, Default)]
pub struct TokenContext {
    /// The negotiated version (LOGINACK); before LOGINACK, the version the
    /// client asked for in LOGIN7.
    pub tds_version: TdsVersion,
    /// COLUMNENCRYPTION (feature 0x04) was acknowledged: COLMETADATA carries a
    /// CekTable, and encrypted columns carry CryptoMetadata (TDS-NOTES §14).
    pub column_encryption: bool,
    /// The DATACLASSIFICATION version acknowledged in FEATUREEXTACK (feature
    /// 0x09), if any; version 2 adds sensitivity ranks.
    pub data_classification: Option<u8>,
    /// The last COLMETADATA that carried columns; ROW, NBCROW and the 0xFFFF
    /// "no metadata" form refer to it.
    pub columns: Option<Arc<ColMetadata>>,
}

impl TokenContext {
    /// Updates the context after `token` went by, as a receiver would.
    pub fn observe(&mut self, token: &Token) {
        match token {
            Token::LoginAck(ack) => self.tds_version = ack.tds_version,
            Token::FeatureExtAck(ack) => self.observe_features(ack),
            Token::ColMetadata(meta) if !meta.is_no_metadata() => {
                self.columns = Some(Arc::clone(meta));
            }
            _ => {}
        }
    }

    fn observe_features(&mut self, ack: &FeatureExtAck) {
        if ack
            .find(feature_ext_ack::FEATURE_COLUMNENCRYPTION)
            .is_some()
        {
            self.column_encryption = true;
        }
        if let Some(data) = ack.find(feature_ext_ack::FEATURE_DATACLASSIFICATION) {
            self.data_classification = Some(data.first().copied().unwrap_or(1));
        }
    }

    /// The current result set's columns, or an error naming `structure`.
    pub fn require_columns(&self, structure: &'static str) -> Result<&ColMetadata, DecodeError> {
        self.columns.as_deref().ok_or(DecodeError::Malformed {
            structure,
            reason: "no COLMETADATA precedes it",
        })
    }
}

/// One server token, decoded.
#[derive(Clone, PartialEq)]
pub enum Token {
    ColInfo(ColInfo),
    /// Shared so the stream reader can keep it as the current metadata.
    ColMetadata(Arc<ColMetadata>),
    DataClassification(DataClassification),
    Done(Done),
    EnvChange(EnvChange),
    FeatureExtAck(FeatureExtAck),
    FedAuthInfo(FedAuthInfo),
    /// INFO (0xAB) or ERROR (0xAA); [`InfoError::is_error`] tells which.
    InfoError(InfoError),
    LoginAck(LoginAck),
    Order(Order),
    ReturnStatus(ReturnStatus),
    /// Boxed: the largest token by far.
    ReturnValue(Box<ReturnValue>),
    /// ROW or NBCROW, decoded against the current COLMETADATA.
    Row(Row),
    SessionState(SessionState),
    Sspi(Sspi),
    TabName(TabName),
}

impl Token {
    /// Decodes one whole token (type byte included) from `r`.
    pub fn decode(r: &mut Reader<'_>, ctx: &TokenContext) -> Result<Token, DecodeError> {
        let ty = r.u8()?;
        Ok(match ty {
            COLINFO => Token::ColInfo(ColInfo::decode_body(r)?),
            COLMETADATA => Token::ColMetadata(Arc::new(ColMetadata::decode_body(r, ctx)?)),
            DATACLASSIFICATION => {
                Token::DataClassification(DataClassification::decode_body(r, ctx)?)
            }
            DONE | DONEPROC | DONEINPROC => Token::Done(Done::decode_body(ty, r, ctx)?),
            ENVCHANGE => Token::EnvChange(EnvChange::decode_body(r)?),
            FEATUREEXTACK => Token::FeatureExtAck(FeatureExtAck::decode_body(r)?),
            FEDAUTHINFO => Token::FedAuthInfo(FedAuthInfo::decode_body(r)?),
            INFO | ERROR => Token::InfoError(InfoError::decode_body(ty, r, ctx)?),
            LOGINACK => Token::LoginAck(LoginAck::decode_body(r)?),
            ORDER => Token::Order(Order::decode_body(r)?),
            RETURNSTATUS => Token::ReturnStatus(ReturnStatus::decode_body(r)?),
            RETURNVALUE => Token::ReturnValue(Box::new(ReturnValue::decode_body(r, ctx)?)),
            ROW | NBCROW => Token::Row(Row::decode_body(ty, r, ctx)?),
            SESSIONSTATE => Token::SessionState(SessionState::decode_body(r)?),
            SSPI => Token::Sspi(Sspi::decode_body(r)?),
            TABNAME => Token::TabName(TabName::decode_body(r, ctx)?),
            other => return Err(DecodeError::UnknownToken(other)),
        })
    }

    /// Appends the token's wire form (type byte included) to `out`.
    pub fn encode(&self, ctx: &TokenContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Token::ColInfo(t) => t.encode(out),
            Token::ColMetadata(t) => t.encode(ctx, out),
            Token::DataClassification(t) => t.encode(ctx, out),
            Token::Done(t) => t.encode(ctx, out),
            Token::EnvChange(t) => t.encode(out),
            Token::FeatureExtAck(t) => t.encode(out),
            Token::FedAuthInfo(t) => t.encode(out),
            Token::InfoError(t) => t.encode(ctx, out),
            Token::LoginAck(t) => t.encode(out),
            Token::Order(t) => t.encode(out),
            Token::ReturnStatus(t) => t.encode(out),
            Token::ReturnValue(t) => t.encode(ctx, out),
            Token::Row(t) => t.encode(ctx, out),
            Token::SessionState(t) => t.encode(out),
            Token::Sspi(t) => t.encode(out),
            Token::TabName(t) => t.encode(ctx, out),
        }
    }

    /// The token's name as MS-TDS spells it, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Token::ColInfo(_) => "COLINFO",
            Token::ColMetadata(_) => "COLMETADATA",
            Token::DataClassification(_) => "DATACLASSIFICATION",
            Token::Done(d) => d.kind.name(),
            Token::EnvChange(_) => "ENVCHANGE",
            Token::FeatureExtAck(_) => "FEATUREEXTACK",
            Token::FedAuthInfo(_) => "FEDAUTHINFO",
            Token::InfoError(e) if e.is_error => "ERROR",
            Token::InfoError(_) => "INFO",
            Token::LoginAck(_) => "LOGINACK",
            Token::Order(_) => "ORDER",
            Token::ReturnStatus(_) => "RETURNSTATUS",
            Token::ReturnValue(_) => "RETURNVALUE",
            Token::Row(r) if r.kind == RowKind::NbcRow => "NBCROW",
            Token::Row(_) => "ROW",
            Token::SessionState(_) => "SESSIONSTATE",
            Token::Sspi(_) => "SSPI",
            Token::TabName(_) => "TABNAME",
        }
    }
}

/// Prints the token name only: tokens can hold row values, SQL text in
/// messages, SSPI blobs and session state.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.name())
    }
}

/// Decodes a whole buffered token stream, keeping `ctx` current, and fails
/// unless every byte belongs to a token. For tests, `dump` and small inputs;
/// network input goes through the streaming reader.
pub fn decode_all(buf: &[u8], ctx: &mut TokenContext) -> Result<Vec<Token>, DecodeError> {
    let mut r = Reader::new(buf, "token stream");
    let mut out = Vec::new();
    while !r.is_empty() {
        let token = Token::decode(&mut r, ctx)?;
        ctx.observe(&token);
        out.push(token);
    }
    Ok(out)
}

/// Encodes tokens in order, keeping `ctx` current as a receiver would.
pub fn encode_all(tokens: &[Token], ctx: &mut TokenContext) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    for token in tokens {
        token.encode(ctx, &mut out)?;
        ctx.observe(token);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// Decodes `bytes` as one token, checks the buffer is used up, re-encodes
    /// and checks the bytes are identical. Returns the token.
    pub fn round_trip(bytes: &[u8], ctx: &TokenContext) -> Token {
        let mut r = Reader::new(bytes, "test");
        let token = Token::decode(&mut r, ctx).expect("decodes");
        assert!(
            r.is_empty(),
            "{} left {} bytes",
            token.name(),
            r.remaining()
        );
        let mut out = Vec::new();
        token.encode(ctx, &mut out).expect("encodes");
        assert_eq!(out, bytes, "{} re-encodes differently", token.name());
        token
    }

    /// Encodes `token`, decodes it back and checks both agree.
    pub fn encode_round_trip(token: &Token, ctx: &TokenContext) -> Vec<u8> {
        let mut out = Vec::new();
        token.encode(ctx, &mut out).expect("encodes");
        let back = round_trip(&out, ctx);
        assert!(back == *token, "{} decodes differently", token.name());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_token_is_an_error() {
        let ctx = TokenContext::default();
        for ty in [0x00, ALTMETADATA, ALTROW, OFFSET, 0x42] {
            let bytes = [ty, 0, 0];
            let mut r = Reader::new(&bytes, "test");
            assert_eq!(
                Token::decode(&mut r, &ctx),
                Err(DecodeError::UnknownToken(ty))
            );
        }
    }

    #[test]
    fn version_gates() {
        assert!(TdsVersion::V7_4.is_7_2_or_later());
        assert!(TdsVersion::V8_0.is_7_2_or_later());
        assert!(TdsVersion::V7_2.is_7_2_or_later());
        assert!(!TdsVersion::V7_1.is_7_2_or_later());
    }
}
