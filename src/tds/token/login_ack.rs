//! LOGINACK (0xAD, [MS-TDS] 2.2.7.14): the server accepted the login and
//! states the TDS version both sides use from now on.

use super::wire::{read_b_varchar, u16_body, with_u16_len, write_b_varchar, UcsString};
use super::{TdsVersion, LOGINACK};
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// `AD | Length 2 | Interface 1 | TDSVersion 4 (big-endian) | ProgName B_VARCHAR | ProgVersion 4`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAck {
    /// 0 = SQL_DFLT, 1 = SQL_TSQL.
    pub interface: u8,
    /// Read big-endian: 7.4 is `74 00 00 04` on the wire (TDS-NOTES §5).
    pub tds_version: TdsVersion,
    pub prog_name: UcsString,
    /// Major, minor, build high byte, build low byte.
    pub prog_version: [u8; 4],
}

impl LoginAck {
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut body = u16_body(r, "LOGINACK")?;
        let ack = LoginAck {
            interface: body.u8()?,
            tds_version: TdsVersion(body.u32_be()?),
            prog_name: read_b_varchar(&mut body)?,
            prog_version: body.array()?,
        };
        body.finish()?;
        Ok(ack)
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        with_u16_len(LOGINACK, "LOGINACK", out, |out| {
            out.push(self.interface);
            out.extend_from_slice(&self.tds_version.0.to_be_bytes());
            write_b_varchar(&self.prog_name, "LOGINACK", out)?;
            out.extend_from_slice(&self.prog_version);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::round_trip;
    use crate::tds::token::{Token, TokenContext};

    #[test]
    fn version_reads_big_endian() {
        let mut bytes = vec![LOGINACK, 0, 0, 0x01, 0x74, 0x00, 0x00, 0x04, 0x02];
        bytes.extend_from_slice(&[b'S', 0, b'Q', 0]);
        bytes.extend_from_slice(&[0x10, 0x00, 0x02, 0x58]);
        bytes[1] = (bytes.len() - 3) as u8;
        let Token::LoginAck(ack) = round_trip(&bytes, &TokenContext::default()) else {
            panic!("not LOGINACK")
        };
        assert_eq!(ack.tds_version, TdsVersion::V7_4);
        assert_eq!(ack.prog_name.to_string_lossy(), "SQ");
        assert_eq!(ack.prog_version, [0x10, 0, 2, 0x58]);
    }
}
