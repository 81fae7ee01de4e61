//! SSPI (0xED, [MS-TDS] 2.2.7.22): a server's SSPI (NTLM/Kerberos) challenge,
//! kept opaque.

use std::fmt;

use super::wire::{u16_body, with_u16_len};
use super::SSPI;
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// `ED | Length 2 | SSPIBuffer`
#[derive(Clone, PartialEq, Eq)]
pub struct Sspi(pub Vec<u8>);

impl Sspi {
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let body = u16_body(r, "SSPI")?;
        Ok(Sspi(body.rest().to_vec()))
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        with_u16_len(SSPI, "SSPI", out, |out| {
            out.extend_from_slice(&self.0);
            Ok(())
        })
    }
}

/// Authentication material: only the length is shown.
impl fmt::Debug for Sspi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sspi({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::round_trip;
    use crate::tds::token::{Token, TokenContext};

    #[test]
    fn round_trips() {
        let t = round_trip(&[SSPI, 3, 0, b'N', b'T', b'L'], &TokenContext::default());
        assert!(t == Token::Sspi(Sspi(b"NTL".to_vec())));
        assert_eq!(format!("{:?}", Sspi(vec![1, 2])), "Sspi(2 bytes)");
    }
}
