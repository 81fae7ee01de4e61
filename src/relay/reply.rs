//! Messages tdsguard itself sends to the application: a PRELOGIN answer and
//! the ERROR + DONE reply that reports a failure the application must see
//! ([MS-TDS] 2.2.7.10 ERROR, 2.2.7.6 DONE, 2.2.6.5 PRELOGIN).

use bytes::{Bytes, BytesMut};

use crate::tds::packet::{encode_message_with_spid, PacketType, DEFAULT_PACKET_SIZE};
use crate::tds::prelogin::{Encryption, PreLogin, Version};
use crate::tds::token::{Done, DoneKind, DoneStatus, InfoError, TdsVersion, TokenContext};
use crate::tds::EncodeError;

/// Class of the errors tdsguard reports: 20 is the lowest fatal class, "the
/// connection is closed" (SQL Server's severity levels; MS-TDS 2.2.7.10 only
/// says classes above 10 are errors).
pub const FATAL_CLASS: u8 = 20;

/// Error number of tdsguard's own messages. SQL Server keeps numbers above
/// 50000 for messages not its own; tdsguard uses one of them for all.
pub const ERROR_NUMBER: u32 = 50_100;

/// The server name tdsguard's own errors carry.
pub const SERVER_NAME: &str = "tdsguard";

/// The product version tdsguard announces in PRELOGIN on both legs. Drivers
/// read the server's capabilities from LOGINACK; some check that PRELOGIN
/// names a SQL Server 2005 (9.x) or later before they speak TDS 7.2+, so the
/// number follows SQL Server 2022's major version.
pub const PRELOGIN_VERSION: Version = Version {
    major: 16,
    minor: 0,
    build: 0x0001,
    sub_build: 0,
};

/// An ERROR token of class 20 followed by DONE(ERROR), as one type 0x04
/// message in `version`'s token layout, cut at `packet_size`.
pub fn fatal_error(
    text: &str,
    version: TdsVersion,
    packet_size: usize,
) -> Result<Bytes, EncodeError> {
    let ctx = TokenContext {
        tds_version: version,
        ..TokenContext::default()
    };
    let mut payload = Vec::new();
    error_token(text).encode(&ctx, &mut payload)?;
    done_error().encode(&ctx, &mut payload)?;

    let mut out = BytesMut::new();
    encode_message_with_spid(PacketType::TabularResult, 0, 0, &payload, packet_size, &mut out)?;
    Ok(out.freeze())
}

/// [`fatal_error`] at the pre-login packet size and the newest layout.
pub fn fatal_error_default(text: &str) -> Result<Bytes, EncodeError> {
    fatal_error(text, TdsVersion::V7_4, DEFAULT_PACKET_SIZE)
}

fn error_token(text: &str) -> InfoError {
    InfoError {
        is_error: true,
        number: ERROR_NUMBER,
        state: 1,
        class: FATAL_CLASS,
        message: text.into(),
        server: SERVER_NAME.into(),
        procedure: "".into(),
        line: 0,
    }
}

fn done_error() -> Done {
    Done {
        kind: DoneKind::Done,
        status: DoneStatus(DoneStatus::ERROR),
        cur_cmd: 0,
        row_count: 0,
    }
}

/// The PRELOGIN answer to the client: tdsguard's version, the chosen
/// encryption, no MARS, INSTOPT "ok", and FEDAUTHREQUIRED echoed when the
/// client sent it.
pub fn prelogin_response(
    request: &PreLogin,
    encryption: Encryption,
) -> Result<Bytes, EncodeError> {
    let mut answer = PreLogin::new();
    answer.set_version(PRELOGIN_VERSION);
    answer.set_encryption(encryption, false);
    answer.set_instance(&[0x00]);
    answer.set_option(crate::tds::prelogin::token::THREADID, &[]);
    answer.set_mars(false);
    if request.fed_auth_required().is_some() {
        answer.set_fed_auth_required(true);
    }

    let mut payload = BytesMut::new();
    answer.encode(&mut payload)?;
    let mut out = BytesMut::new();
    encode_message_with_spid(
        PacketType::TabularResult,
        0,
        0,
        &payload,
        DEFAULT_PACKET_SIZE,
        &mut out,
    )?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::packet::{PacketHeader, HEADER_LEN};
    use crate::tds::token::{decode_all, Token};

    #[test]
    fn fatal_error_decodes_as_error_then_done() {
        let bytes = fatal_error("upstream unreachable", TdsVersion::V7_4, 4096).unwrap();
        let header = PacketHeader::decode(&bytes).unwrap();
        assert_eq!(header.packet_type, PacketType::TabularResult);
        assert!(header.is_eom());
        assert_eq!(usize::from(header.length), bytes.len());

        let mut ctx = TokenContext::default();
        let tokens = decode_all(&bytes[HEADER_LEN..], &mut ctx).unwrap();
        let [Token::InfoError(error), Token::Done(done)] = &tokens[..] else {
            panic!("unexpected tokens {tokens:?}");
        };
        assert!(error.is_error);
        assert_eq!(error.class, FATAL_CLASS);
        assert_eq!(error.message.to_string_lossy(), "upstream unreachable");
        assert!(done.status.has(DoneStatus::ERROR));
    }

    #[test]
    fn fatal_error_in_7_1_layout() {
        let bytes = fatal_error("x", TdsVersion::V7_1, 4096).unwrap();
        let mut ctx = TokenContext {
            tds_version: TdsVersion::V7_1,
            ..TokenContext::default()
        };
        let tokens = decode_all(&bytes[HEADER_LEN..], &mut ctx).unwrap();
        assert_eq!(tokens.len(), 2);
    }

    #[test]
    fn prelogin_response_refuses_mars() {
        let mut request = PreLogin::new();
        request.set_mars(true);
        request.set_fed_auth_required(true);
        let bytes = prelogin_response(&request, Encryption::Off).unwrap();
        let answer = PreLogin::decode(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(answer.mars(), Some(false));
        assert_eq!(answer.encryption(), Some((Encryption::Off, false)));
        assert_eq!(answer.fed_auth_required(), Some(true));
        assert_eq!(answer.version(), Some(PRELOGIN_VERSION));
    }
}
