//! RETURNVALUE (0xAC, [MS-TDS] 2.2.7.19): an output parameter or a UDF's
//! return value. The token has no length; its value is framed by its own
//! TYPE_INFO like a ROW value, and may be PLP of any size.

use super::col_metadata::{CryptoMetadata, TypeInfoRaw, FLAG_ENCRYPTED};
use super::row::RawValue;
use super::wire::{read_b_varchar, write_b_varchar, UcsString};
use super::{TokenContext, RETURNVALUE};
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// Status 0x01: an output parameter of a stored procedure.
pub const STATUS_OUTPUT_PARAM: u8 = 0x01;
/// Status 0x02: the return value of a user-defined function.
pub const STATUS_UDF: u8 = 0x02;

/// `AC | ParamOrdinal 2 | ParamName B_VARCHAR | Status 1 | UserType 4 (2 before 7.2) |
/// Flags 2 | TYPE_INFO | [CryptoMetadata] | Value`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnValue {
    pub ordinal: u16,
    pub name: UcsString,
    pub status: u8,
    pub user_type: u32,
    pub flags: u16,
    pub type_info: TypeInfoRaw,
    /// Only when column encryption was acked and Flags has fEncrypted.
    pub crypto: Option<CryptoMetadata>,
    pub value: RawValue,
}

/// Everything of a RETURNVALUE before its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnValueHeader {
    pub ordinal: u16,
    pub name: UcsString,
    pub status: u8,
    pub user_type: u32,
    pub flags: u16,
    pub type_info: TypeInfoRaw,
    pub crypto: Option<CryptoMetadata>,
}

impl ReturnValueHeader {
    /// Reads the part after the token type and before the value.
    pub fn decode(r: &mut Reader<'_>, ctx: &TokenContext) -> Result<Self, DecodeError> {
        let ordinal = r.u16_le()?;
        let name = read_b_varchar(r)?;
        let status = r.u8()?;
        let user_type = match ctx.tds_version.is_7_2_or_later() {
            true => r.u32_le()?,
            false => u32::from(r.u16_le()?),
        };
        let flags = r.u16_le()?;
        let type_info = TypeInfoRaw::decode(r)?;
        let crypto = match ctx.column_encryption && flags & FLAG_ENCRYPTED != 0 {
            true => Some(CryptoMetadata::decode(r)?),
            false => None,
        };
        Ok(ReturnValueHeader {
            ordinal,
            name,
            status,
            user_type,
            flags,
            type_info,
            crypto,
        })
    }
}

impl ReturnValue {
    pub fn decode_body(r: &mut Reader<'_>, ctx: &TokenContext) -> Result<Self, DecodeError> {
        let h = ReturnValueHeader::decode(r, ctx)?;
        let value = RawValue::decode(h.type_info.framing(), r)?;
        Ok(ReturnValue {
            ordinal: h.ordinal,
            name: h.name,
            status: h.status,
            user_type: h.user_type,
            flags: h.flags,
            type_info: h.type_info,
            crypto: h.crypto,
            value,
        })
    }

    pub fn encode(&self, ctx: &TokenContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(RETURNVALUE);
        out.extend_from_slice(&self.ordinal.to_le_bytes());
        write_b_varchar(&self.name, "RETURNVALUE", out)?;
        out.push(self.status);
        if ctx.tds_version.is_7_2_or_later() {
            out.extend_from_slice(&self.user_type.to_le_bytes());
        } else {
            out.extend_from_slice(&(self.user_type as u16).to_le_bytes());
        }
        out.extend_from_slice(&self.flags.to_le_bytes());
        self.type_info.encode(out);
        if let Some(crypto) = &self.crypto {
            crypto.encode(out)?;
        }
        self.value.encode(self.type_info.framing(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::col_metadata::tests::{type_info, INTN4, NVARCHAR_MAX};
    use crate::tds::token::row::PlpLength;
    use crate::tds::token::test_util::{encode_round_trip, round_trip};
    use crate::tds::token::Token;

    #[test]
    fn prepared_handle() {
        // sp_prepexec's @handle: ordinal 0, empty name, output, INTN(4) = 1.
        let bytes = [
            RETURNVALUE,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0x26,
            4,
            4,
            1,
            0,
            0,
            0,
        ];
        let Token::ReturnValue(rv) = round_trip(&bytes, &TokenContext::default()) else {
            panic!("not RETURNVALUE")
        };
        assert_eq!(rv.value, RawValue::Bytes(vec![1, 0, 0, 0]));
        assert_eq!(rv.status, STATUS_OUTPUT_PARAM);
    }

    #[test]
    fn named_plp_value() {
        let rv = ReturnValue {
            ordinal: 2,
            name: "@out".into(),
            status: STATUS_OUTPUT_PARAM,
            user_type: 0,
            flags: 1,
            type_info: type_info(NVARCHAR_MAX),
            crypto: None,
            value: RawValue::Plp {
                length: PlpLength::Known(2),
                data: vec![b'a', 0],
                chunks: vec![2],
            },
        };
        encode_round_trip(
            &Token::ReturnValue(Box::new(rv.clone())),
            &TokenContext::default(),
        );
        let null = ReturnValue {
            value: RawValue::Null,
            type_info: type_info(INTN4),
            ..rv
        };
        encode_round_trip(
            &Token::ReturnValue(Box::new(null)),
            &TokenContext::default(),
        );
    }
}
