//! FEDAUTHINFO (0xEE, [MS-TDS] 2.2.7.12): where a client gets its federated
//! authentication token (STS URL, SPN). TDS 7.4.

use std::fmt;

use super::wire::{u32_body, with_u32_len};
use super::FEDAUTHINFO;
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// FedAuthInfoID of the STS URL.
pub const FEDAUTHINFO_STSURL: u8 = 0x01;
/// FedAuthInfoID of the service principal name.
pub const FEDAUTHINFO_SPN: u8 = 0x02;

/// Cap on the 4-byte token length: two UTF-16 strings (a URL and an SPN).
pub const MAX_FEDAUTHINFO_BYTES: usize = 64 * 1024;

/// `EE | Length 4 | CountOfInfoIDs 4 | { FedAuthInfoID 1 | DataLen 4 | DataOffset 4 }... | data`.
/// The body is kept as sent (offsets point into it); [`FedAuthInfo::options`]
/// reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct FedAuthInfo {
    pub body: Vec<u8>,
}

impl FedAuthInfo {
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let body = u32_body(r, "FEDAUTHINFO", MAX_FEDAUTHINFO_BYTES)?;
        let info = FedAuthInfo {
            body: body.rest().to_vec(),
        };
        info.options()?;
        Ok(info)
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        with_u32_len(FEDAUTHINFO, "FEDAUTHINFO", out, |out| {
            out.extend_from_slice(&self.body);
            Ok(())
        })
    }

    /// The (FedAuthInfoID, data) pairs; offsets count from the start of the
    /// body (CountOfInfoIDs).
    pub fn options(&self) -> Result<Vec<(u8, &[u8])>, DecodeError> {
        let mut r = Reader::new(&self.body, "FEDAUTHINFO");
        let count = r.u32_le()? as usize;
        if count > self.body.len() / 9 {
            return Err(DecodeError::Malformed {
                structure: "FEDAUTHINFO",
                reason: "more options than the body can hold",
            });
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let (id, len, offset) = (r.u8()?, r.u32_le()? as usize, r.u32_le()? as usize);
            let data = offset
                .checked_add(len)
                .and_then(|end| self.body.get(offset..end))
                .ok_or(DecodeError::Malformed {
                    structure: "FEDAUTHINFO",
                    reason: "option data outside the token",
                })?;
            out.push((id, data));
        }
        Ok(out)
    }
}

impl fmt::Debug for FedAuthInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FedAuthInfo({} bytes)", self.body.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::round_trip;
    use crate::tds::token::{Token, TokenContext};

    #[test]
    fn options_are_found() {
        let mut body = vec![1, 0, 0, 0, FEDAUTHINFO_SPN, 2, 0, 0, 0, 13, 0, 0, 0];
        body.extend_from_slice(&[b's', 0]);
        let mut bytes = vec![FEDAUTHINFO];
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&body);
        let Token::FedAuthInfo(info) = round_trip(&bytes, &TokenContext::default()) else {
            panic!("not FEDAUTHINFO")
        };
        assert_eq!(
            info.options().unwrap(),
            vec![(FEDAUTHINFO_SPN, &[b's', 0][..])]
        );
    }

    #[test]
    fn offset_outside_is_an_error() {
        let body = [1, 0, 0, 0, 1, 2, 0, 0, 0, 0xFF, 0, 0, 0];
        let mut bytes = vec![FEDAUTHINFO, 13, 0, 0, 0];
        bytes.extend_from_slice(&body);
        let mut r = Reader::new(&bytes, "t");
        assert!(Token::decode(&mut r, &TokenContext::default()).is_err());
    }
}
