//! DONE (0xFD), DONEPROC (0xFE) and DONEINPROC (0xFF), [MS-TDS] 2.2.7.6-2.2.7.8:
//! the end of a statement, of a procedure, or of a statement inside one.

use super::{TdsVersion, TokenContext, DONE, DONEINPROC, DONEPROC};
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// Which of the three DONE tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneKind {
    Done,
    DoneProc,
    DoneInProc,
}

impl DoneKind {
    pub fn from_type(ty: u8) -> Option<Self> {
        match ty {
            DONE => Some(DoneKind::Done),
            DONEPROC => Some(DoneKind::DoneProc),
            DONEINPROC => Some(DoneKind::DoneInProc),
            _ => None,
        }
    }

    pub fn token_type(self) -> u8 {
        match self {
            DoneKind::Done => DONE,
            DoneKind::DoneProc => DONEPROC,
            DoneKind::DoneInProc => DONEINPROC,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DoneKind::Done => "DONE",
            DoneKind::DoneProc => "DONEPROC",
            DoneKind::DoneInProc => "DONEINPROC",
        }
    }
}

/// The Status bit field (2.2.7.6). Bits MS-TDS does not define are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DoneStatus(pub u16);

impl DoneStatus {
    /// DONE_MORE: more results follow in this response.
    pub const MORE: u16 = 0x0001;
    /// DONE_ERROR: the statement failed.
    pub const ERROR: u16 = 0x0002;
    /// DONE_INXACT: a transaction is open.
    pub const INXACT: u16 = 0x0004;
    /// DONE_COUNT: the row count is valid.
    pub const COUNT: u16 = 0x0010;
    /// DONE_ATTN: acknowledges an attention (cancel).
    pub const ATTN: u16 = 0x0020;
    /// DONE_SRVERROR: a severe error; the results are to be discarded.
    pub const SRVERROR: u16 = 0x0100;

    pub fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// `FD|FE|FF | Status 2 | CurCmd 2 | DoneRowCount 8 (4 before TDS 7.2)`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub kind: DoneKind,
    pub status: DoneStatus,
    pub cur_cmd: u16,
    pub row_count: u64,
}

impl Done {
    /// Token length including the type byte, for the given version.
    pub fn wire_len(version: TdsVersion) -> usize {
        if version.is_7_2_or_later() {
            13
        } else {
            9
        }
    }

    pub fn decode_body(
        ty: u8,
        r: &mut Reader<'_>,
        ctx: &TokenContext,
    ) -> Result<Self, DecodeError> {
        let kind = DoneKind::from_type(ty).ok_or(DecodeError::UnknownToken(ty))?;
        let status = DoneStatus(r.u16_le()?);
        let cur_cmd = r.u16_le()?;
        let row_count = if ctx.tds_version.is_7_2_or_later() {
            r.u64_le()?
        } else {
            u64::from(r.u32_le()?)
        };
        Ok(Done {
            kind,
            status,
            cur_cmd,
            row_count,
        })
    }

    pub fn encode(&self, ctx: &TokenContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.kind.token_type());
        out.extend_from_slice(&self.status.0.to_le_bytes());
        out.extend_from_slice(&self.cur_cmd.to_le_bytes());
        if ctx.tds_version.is_7_2_or_later() {
            out.extend_from_slice(&self.row_count.to_le_bytes());
            return Ok(());
        }
        let count = u32::try_from(self.row_count).map_err(|_| EncodeError::TooLarge {
            structure: self.kind.name(),
            field: "DoneRowCount",
            length: self.row_count as usize,
            limit: u32::MAX as usize,
        })?;
        out.extend_from_slice(&count.to_le_bytes());
        Ok(())
    }

    /// The server acknowledges an attention: everything of the cancelled
    /// request has been sent (TDS-NOTES §12).
    pub fn is_attention_ack(&self) -> bool {
        self.status.has(DoneStatus::ATTN)
    }

    /// The last token of a response: a DONE or DONEPROC without MORE.
    /// DONEINPROC never ends a response.
    pub fn ends_response(&self) -> bool {
        self.kind != DoneKind::DoneInProc && !self.status.has(DoneStatus::MORE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::round_trip;
    use crate::tds::token::Token;

    #[test]
    fn done_with_count_7_4() {
        let bytes = [DONE, 0x10, 0, 0xC1, 0, 5, 0, 0, 0, 0, 0, 0, 0];
        let Token::Done(d) = round_trip(&bytes, &TokenContext::default()) else {
            panic!("not DONE")
        };
        assert_eq!(d.row_count, 5);
        assert_eq!(d.cur_cmd, 0xC1);
        assert!(d.ends_response());
        assert!(!d.is_attention_ack());
    }

    #[test]
    fn doneproc_attention_and_7_1_row_count() {
        let ctx = TokenContext {
            tds_version: TdsVersion::V7_1,
            ..TokenContext::default()
        };
        let bytes = [DONEPROC, 0x21, 0x01, 0, 0, 7, 0, 0, 0];
        let Token::Done(d) = round_trip(&bytes, &ctx) else {
            panic!("not DONEPROC")
        };
        assert!(d.is_attention_ack());
        assert!(d.status.has(DoneStatus::SRVERROR));
        assert!(!d.ends_response());
        assert_eq!(d.row_count, 7);
    }

    #[test]
    fn doneinproc_never_ends_response() {
        let bytes = [DONEINPROC, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let Token::Done(d) = round_trip(&bytes, &TokenContext::default()) else {
            panic!("not DONEINPROC")
        };
        assert!(!d.ends_response());
    }
}
