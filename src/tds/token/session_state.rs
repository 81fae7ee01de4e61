//! SESSIONSTATE (0xE4, [MS-TDS] 2.2.7.21): session state the client keeps for
//! connection recovery (TDS 7.4, only after SESSIONRECOVERY was acknowledged).

use std::fmt;

use super::wire::{u32_body, with_u32_len};
use super::SESSIONSTATE;
use crate::tds::error::{DecodeError, EncodeError};
use crate::tds::reader::Reader;

/// Cap on the 4-byte token length. Session state is a handful of SET options,
/// the database, language and user context; 1 MiB leaves ample room.
pub const MAX_SESSIONSTATE_BYTES: usize = 1 << 20;

/// StateLen values of 0xFF and above use the long form: 0xFF then 4 bytes.
const LONG_STATE_LEN: u8 = 0xFF;

#[derive(Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub state_id: u8,
    /// The length was written in the long form (kept for byte-exact re-encoding).
    pub long_len: bool,
    pub value: Vec<u8>,
}

/// `E4 | Length 4 | SeqNo 4 | Status 1 | { StateId 1 | StateLen 1 or FF+4 | StateValue }...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub seq_no: u32,
    /// 0x01 fRecoverable.
    pub status: u8,
    pub entries: Vec<StateEntry>,
}

impl SessionState {
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut body = u32_body(r, "SESSIONSTATE", MAX_SESSIONSTATE_BYTES)?;
        let seq_no = body.u32_le()?;
        let status = body.u8()?;
        let mut entries = Vec::new();
        while !body.is_empty() {
            entries.push(decode_entry(&mut body)?);
        }
        Ok(SessionState {
            seq_no,
            status,
            entries,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        with_u32_len(SESSIONSTATE, "SESSIONSTATE", out, |out| {
            out.extend_from_slice(&self.seq_no.to_le_bytes());
            out.push(self.status);
            for e in &self.entries {
                encode_entry(e, out);
            }
            Ok(())
        })
    }
}

fn decode_entry(r: &mut Reader<'_>) -> Result<StateEntry, DecodeError> {
    let state_id = r.u8()?;
    let short = r.u8()?;
    let long_len = short == LONG_STATE_LEN;
    let len = if long_len {
        r.u32_le()? as usize
    } else {
        short as usize
    };
    Ok(StateEntry {
        state_id,
        long_len,
        value: r.bytes(len)?.to_vec(),
    })
}

fn encode_entry(e: &StateEntry, out: &mut Vec<u8>) {
    out.push(e.state_id);
    if e.long_len || e.value.len() >= LONG_STATE_LEN as usize {
        out.push(LONG_STATE_LEN);
        out.extend_from_slice(&(e.value.len() as u32).to_le_bytes());
    } else {
        out.push(e.value.len() as u8);
    }
    out.extend_from_slice(&e.value);
}

/// Session state can name the user and database: shown by length.
impl fmt::Debug for StateEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StateEntry({:#04x}, {} bytes)",
            self.state_id,
            self.value.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::token::test_util::round_trip;
    use crate::tds::token::{Token, TokenContext};

    #[test]
    fn short_and_long_entries() {
        let mut bytes = vec![SESSIONSTATE, 0, 0, 0, 0, 2, 0, 0, 0, 1];
        bytes.extend_from_slice(&[0x00, 1, 0xAA]);
        bytes.extend_from_slice(&[0x02, 0xFF, 2, 0, 0, 0, 0xBB, 0xCC]);
        bytes[1] = (bytes.len() - 5) as u8;
        let Token::SessionState(s) = round_trip(&bytes, &TokenContext::default()) else {
            panic!("not SESSIONSTATE")
        };
        assert_eq!(s.seq_no, 2);
        assert_eq!(s.entries.len(), 2);
        assert!(s.entries[1].long_len);
    }

    #[test]
    fn length_over_cap_is_refused() {
        let bytes = [SESSIONSTATE, 0, 0, 0, 0x10];
        let mut r = Reader::new(&bytes, "t");
        assert!(matches!(
            Token::decode(&mut r, &TokenContext::default()),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
