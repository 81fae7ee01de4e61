//! FEATUREEXTACK (0xAE, [MS-TDS] 2.2.7.11): the features of LOGIN7's FeatureExt
//! the server accepted. The token has no overall length: entries run up to
//! the 0xFF terminator.

use std::fmt;

use super::FEATUREEXTACK;
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

pub const FEATURE_SESSIONRECOVERY: u8 = 0x01;
pub const FEATURE_FEDAUTH: u8 = 0x02;
pub const FEATURE_COLUMNENCRYPTION: u8 = 0x04;
pub const FEATURE_GLOBALTRANSACTIONS: u8 = 0x05;
pub const FEATURE_AZURESQLSUPPORT: u8 = 0x08;
pub const FEATURE_DATACLASSIFICATION: u8 = 0x09;
pub const FEATURE_UTF8_SUPPORT: u8 = 0x0A;
pub const FEATURE_AZURESQLDNSCACHING: u8 = 0x0B;
/// Ends the list (2.2.7.11 "TERMINATOR").
pub const FEATURE_TERMINATOR: u8 = 0xFF;

/// Cap on the whole token. The largest acknowledgement seen is the initial
/// session state of SESSIONRECOVERY (tens of bytes in captures); a session
/// state the server would replay is bounded like SESSIONSTATE's.
pub const MAX_FEATUREEXTACK_BYTES: usize = 1 << 20;

/// One acknowledged feature.
#[derive(Clone, PartialEq, Eq)]
pub struct FeatureAck {
    pub feature: u8,
    /// Feature-specific data, kept opaque (session state for SESSIONRECOVERY).
    pub data: Vec<u8>,
}

/// `AE | { FeatureId 1 | FeatureAckDataLen 4 | FeatureAckData }... | FF`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureExtAck(pub Vec<FeatureAck>);

impl FeatureExtAck {
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut acks = Vec::new();
        let mut total: usize = 1;
        loop {
            let feature = r.u8()?;
            if feature == FEATURE_TERMINATOR {
                return Ok(FeatureExtAck(acks));
            }
            let len = r.u32_le()? as usize;
            total = total.saturating_add(5).saturating_add(len);
            check_total(total)?;
            let data = r.bytes(len)?.to_vec();
            acks.push(FeatureAck { feature, data });
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(FEATUREEXTACK);
        for ack in &self.0 {
            out.push(ack.feature);
            out.extend_from_slice(&(ack.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&ack.data);
        }
        out.push(FEATURE_TERMINATOR);
        Ok(())
    }

    /// The acknowledgement data of `feature`, if it was acknowledged.
    pub fn find(&self, feature: u8) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|a| a.feature == feature)
            .map(|a| a.data.as_slice())
    }
}

/// Fails when a FEATUREEXTACK grows past [`MAX_FEATUREEXTACK_BYTES`].
pub fn check_total(total: usize) -> Result<(), DecodeError> {
    if total > MAX_FEATUREEXTACK_BYTES {
        return Err(DecodeError::TooLarge {
            structure: "FEATUREEXTACK",
            length: total,
            limit: MAX_FEATUREEXTACK_BYTES,
        });
    }
    Ok(())
}

/// Session recovery data can hold session state: shown by length.
impl fmt::Debug for FeatureAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FeatureAck({:#04x}, {} bytes)",
            self.feature,
            self.data.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::round_trip;
    use crate::tds::token::{Token, TokenContext};

    #[test]
    fn round_trips_and_finds() {
        let bytes = [
            FEATUREEXTACK,
            0x09,
            2,
            0,
            0,
            0,
            1,
            1,
            0x0A,
            1,
            0,
            0,
            0,
            1,
            0xFF,
        ];
        let Token::FeatureExtAck(ack) = round_trip(&bytes, &TokenContext::default()) else {
            panic!("not FEATUREEXTACK")
        };
        assert_eq!(ack.find(FEATURE_DATACLASSIFICATION), Some(&[1, 1][..]));
        assert_eq!(ack.find(FEATURE_COLUMNENCRYPTION), None);
    }

    #[test]
    fn oversized_entry_is_refused() {
        let bytes = [FEATUREEXTACK, 0x01, 0xFF, 0xFF, 0xFF, 0x7F];
        let mut r = Reader::new(&bytes, "t");
        assert!(matches!(
            Token::decode(&mut r, &TokenContext::default()),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
