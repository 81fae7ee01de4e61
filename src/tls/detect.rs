//! Classifies what a client sends first, so one listener can serve TDS 7.x
//! (PRELOGIN, [MS-TDS] 2.2.6.5), drivers that skip PRELOGIN (LOGIN7 first,
//! [MS-TDS] 2.2.6.4), pre-TDS7 logins, and TDS 8.0 strict clients, whose first
//! bytes are a TLS ClientHello offering ALPN `tds/8.0`.
//!
//! [`classify`] is sans-I/O; [`detect`] reads just enough bytes and hands them
//! back in a [`Replay`] so the caller still sees the whole stream. The caller
//! puts a timeout around [`detect`]. A ClientHello is parsed only from the
//! first TLS record: a hello spread over several records reports no ALPN.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::replay::Replay;
use crate::tds::{DecodeError, Reader};

/// Packet types ([MS-TDS] 2.2.3.1.1).
const PACKET_TYPE_PRELOGIN: u8 = 0x12;
const PACKET_TYPE_LOGIN7: u8 = 0x10;
const PACKET_TYPE_PRE_TDS7_LOGIN: u8 = 0x02;
/// Packet header length and the largest legal packet ([MS-TDS] 2.2.3,
/// 2.2.6.4: packet sizes run from 512 to 32767).
const TDS_HEADER_LEN: usize = 8;
const MAX_TDS_PACKET_LEN: usize = 32767;

/// TLS record type "handshake", handshake type "client_hello", and the ALPN
/// extension number (RFC 8446 5.1, 4; RFC 7301 3.1).
const TLS_CONTENT_HANDSHAKE: u8 = 0x16;
const TLS_HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const TLS_EXTENSION_ALPN: u16 = 0x0010;
const TLS_RECORD_HEADER_LEN: usize = 5;
/// Largest plaintext record (RFC 8446 5.1: 2^14); a ClientHello record is
/// plaintext, so detection never buffers more than this plus the header.
const MAX_TLS_PLAINTEXT_LEN: usize = 16384;

/// ALPN protocol id of TDS 8.0 strict encryption.
pub const ALPN_TDS_80: &[u8] = b"tds/8.0";

/// Most bytes [`detect`] buffers before deciding.
pub const MAX_DETECT_LEN: usize = TLS_RECORD_HEADER_LEN + MAX_TLS_PLAINTEXT_LEN;

/// What a client's first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPacket {
    /// A TDS PRELOGIN packet (0x12): TDS 7.x, TLS negotiated in PRELOGIN.
    Prelogin,
    /// A LOGIN7 packet (0x10) with no PRELOGIN before it (jTDS).
    Login7,
    /// A pre-TDS7 login packet (0x02), which tdsguard does not serve.
    PreTds7Login,
    /// A TLS ClientHello: TDS 8.0 strict if it offers ALPN `tds/8.0`.
    TlsClientHello { offers_tds_80: bool },
    /// Anything else, including a stream that ended too early.
    Garbage,
}

/// The result of looking at a prefix of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// Not enough bytes yet: at least this many are needed in total.
    NeedMore(usize),
    Done(FirstPacket),
}

/// Classifies the first bytes a client sent.
pub fn classify(bytes: &[u8]) -> Classification {
    match bytes.first() {
        None => Classification::NeedMore(1),
        Some(&TLS_CONTENT_HANDSHAKE) => classify_tls(bytes),
        Some(&kind) => classify_tds(kind, bytes),
    }
}

fn classify_tds(kind: u8, bytes: &[u8]) -> Classification {
    let packet = match kind {
        PACKET_TYPE_PRELOGIN => FirstPacket::Prelogin,
        PACKET_TYPE_LOGIN7 => FirstPacket::Login7,
        PACKET_TYPE_PRE_TDS7_LOGIN => FirstPacket::PreTds7Login,
        _ => return Classification::Done(FirstPacket::Garbage),
    };
    let Some(header) = bytes.get(..TDS_HEADER_LEN) else {
        return Classification::NeedMore(TDS_HEADER_LEN);
    };

    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if !(TDS_HEADER_LEN..=MAX_TDS_PACKET_LEN).contains(&len) {
        return Classification::Done(FirstPacket::Garbage);
    }
    Classification::Done(packet)
}

fn classify_tls(bytes: &[u8]) -> Classification {
    let Some(header) = bytes.get(..TLS_RECORD_HEADER_LEN) else {
        return Classification::NeedMore(TLS_RECORD_HEADER_LEN);
    };

    // Record version: 0x0301 (TLS 1.0, what most hellos carry) up to 0x0304.
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if header[1] != 0x03 || !(0x01..=0x04).contains(&header[2]) || len > MAX_TLS_PLAINTEXT_LEN {
        return Classification::Done(FirstPacket::Garbage);
    }

    let Some(body) = bytes.get(TLS_RECORD_HEADER_LEN..TLS_RECORD_HEADER_LEN + len) else {
        return Classification::NeedMore(TLS_RECORD_HEADER_LEN + len);
    };
    match client_hello_alpn(body) {
        Ok(protocols) => Classification::Done(FirstPacket::TlsClientHello {
            offers_tds_80: protocols.contains(&ALPN_TDS_80),
        }),
        Err(_) => Classification::Done(FirstPacket::Garbage),
    }
}

/// The ALPN protocol names of a ClientHello (RFC 8446 4.1.2), from a record
/// body. A hello cut off by the record end yields what was found before the
/// cut only if the extension list itself is complete.
fn client_hello_alpn(record: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    let mut r = Reader::new(record, "ClientHello");
    if r.u8()? != TLS_HANDSHAKE_CLIENT_HELLO {
        return Err(malformed("not a client_hello"));
    }

    let len = u32::from_be_bytes([0, r.u8()?, r.u8()?, r.u8()?]);
    let mut hello = r.take(len as usize, "ClientHello")?;
    hello.skip(2 + 32)?; // legacy_version, random
    skip_vec8(&mut hello)?; // legacy_session_id
    skip_vec16(&mut hello)?; // cipher_suites
    skip_vec8(&mut hello)?; // legacy_compression_methods
    if hello.is_empty() {
        return Ok(Vec::new());
    }

    let ext_len = hello.u16_be()?;
    let extensions = hello.take(usize::from(ext_len), "ClientHello extensions")?;
    alpn_from_extensions(extensions)
}

fn alpn_from_extensions(mut r: Reader<'_>) -> Result<Vec<&[u8]>, DecodeError> {
    while !r.is_empty() {
        let kind = r.u16_be()?;
        let len = r.u16_be()?;
        let data = r.take(usize::from(len), "ClientHello extension")?;
        if kind == TLS_EXTENSION_ALPN {
            return alpn_names(data);
        }
    }

    Ok(Vec::new())
}

/// ProtocolNameList (RFC 7301 3.1): u16 length, then u8-prefixed names.
fn alpn_names(mut data: Reader<'_>) -> Result<Vec<&[u8]>, DecodeError> {
    let list_len = data.u16_be()?;
    let mut list = data.take(usize::from(list_len), "ALPN protocol list")?;
    data.finish()?;

    let mut names = Vec::new();
    while !list.is_empty() {
        let len = list.u8()?;
        names.push(list.bytes(usize::from(len))?);
    }
    Ok(names)
}

fn skip_vec8(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    let len = r.u8()?;
    r.skip(usize::from(len))
}

fn skip_vec16(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    let len = r.u16_be()?;
    r.skip(usize::from(len))
}

fn malformed(reason: &'static str) -> DecodeError {
    DecodeError::Malformed {
        structure: "ClientHello",
        reason,
    }
}

/// Reads the first bytes of `stream` until [`classify`] decides (at most
/// [`MAX_DETECT_LEN`] bytes) and returns the verdict with a stream that
/// replays those bytes. A stream that ends first is [`FirstPacket::Garbage`].
pub async fn detect<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<(FirstPacket, Replay<S>)> {
    let mut seen = Vec::new();

    loop {
        let want = match classify(&seen) {
            Classification::Done(packet) => return Ok((packet, Replay::new(seen, stream))),
            Classification::NeedMore(total) => total.min(MAX_DETECT_LEN),
        };

        let start = seen.len();
        seen.resize(want, 0);
        let n = stream.read(&mut seen[start..]).await?;
        seen.truncate(start + n);
        if n == 0 {
            return Ok((FirstPacket::Garbage, Replay::new(seen, stream)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIBERIUS: &[u8] =
        include_bytes!("../../fixtures/client-first-packets/tiberius-prelogin.bin");
    const JTDS: &[u8] = include_bytes!("../../fixtures/client-first-packets/jtds-prelogin.bin");
    const ODBC_STRICT: &[u8] = include_bytes!(
        "../../fixtures/client-first-packets/pyodbc-msodbcsql18-encrypt-strict-prelogin.bin"
    );
    const TEDIOUS_STRICT: &[u8] =
        include_bytes!("../../fixtures/client-first-packets/tedious-encrypt-strict-prelogin.bin");
    const PRELOGINS: [&[u8]; 4] = [
        include_bytes!("../../fixtures/client-first-packets/pyodbc-msodbcsql18-prelogin.bin"),
        include_bytes!("../../fixtures/client-first-packets/pyodbc-freetds-prelogin.bin"),
        include_bytes!("../../fixtures/client-first-packets/tedious-prelogin.bin"),
        TIBERIUS,
    ];

    fn done(bytes: &[u8]) -> FirstPacket {
        match classify(bytes) {
            Classification::Done(packet) => packet,
            other => panic!("undecided: {other:?}"),
        }
    }

    #[test]
    fn real_first_packets() {
        for capture in PRELOGINS {
            assert_eq!(done(capture), FirstPacket::Prelogin);
        }
        assert_eq!(done(JTDS), FirstPacket::Login7);

        let strict = FirstPacket::TlsClientHello {
            offers_tds_80: true,
        };
        assert_eq!(done(ODBC_STRICT), strict);
        assert_eq!(done(TEDIOUS_STRICT), strict);
    }

    #[test]
    fn every_prefix_is_undecided_or_right() {
        for capture in PRELOGINS
            .into_iter()
            .chain([JTDS, ODBC_STRICT, TEDIOUS_STRICT])
        {
            let full = done(capture);
            for cut in 0..capture.len() {
                match classify(&capture[..cut]) {
                    Classification::NeedMore(total) => assert!(total > cut),
                    Classification::Done(packet) => assert_eq!(packet, full, "cut at {cut}"),
                }
            }
        }
    }

    #[test]
    fn client_hello_alpn_lists_every_protocol() {
        let body = &ODBC_STRICT[TLS_RECORD_HEADER_LEN..];
        let names = client_hello_alpn(body).unwrap();

        assert!(names.contains(&ALPN_TDS_80));
    }

    #[test]
    fn a_hello_without_tds_alpn_is_not_strict() {
        let mut hello = ODBC_STRICT.to_vec();
        let at = hello.windows(7).position(|w| w == ALPN_TDS_80).unwrap();
        hello[at..at + 7].copy_from_slice(b"tds/7.9");

        assert_eq!(
            done(&hello),
            FirstPacket::TlsClientHello {
                offers_tds_80: false
            }
        );
    }

    #[test]
    fn garbage_and_bad_headers() {
        assert_eq!(done(b"GET / HTTP/1.1\r\n"), FirstPacket::Garbage);
        assert_eq!(
            done(&[0x12, 0x01, 0x00, 0x04, 0, 0, 0, 0]),
            FirstPacket::Garbage
        );
        assert_eq!(done(&[0x16, 0x02, 0x00, 0x00, 0x10]), FirstPacket::Garbage);
        assert_eq!(
            done(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0, 0, 0]),
            FirstPacket::Garbage
        );
        assert_eq!(classify(&[0x02]), Classification::NeedMore(8));
    }

    #[test]
    fn a_huge_record_length_is_not_buffered() {
        assert_eq!(done(&[0x16, 0x03, 0x01, 0xFF, 0xFF]), FirstPacket::Garbage);
    }

    #[tokio::test]
    async fn detect_replays_what_it_read() {
        let mut wire = ODBC_STRICT.to_vec();
        wire.extend_from_slice(b"more");

        let (packet, replay) = detect(&wire[..]).await.unwrap();
        assert!(matches!(
            packet,
            FirstPacket::TlsClientHello {
                offers_tds_80: true
            }
        ));

        let mut all = Vec::new();
        let mut replay = replay;
        replay.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, wire);
    }

    #[tokio::test]
    async fn detect_on_a_short_stream_is_garbage() {
        let (packet, replay) = detect(&[0x12u8, 0x01][..]).await.unwrap();

        assert_eq!(packet, FirstPacket::Garbage);
        assert_eq!(replay.pending(), [0x12, 0x01]);
    }

    proptest::proptest! {
        #[test]
        fn classify_never_panics_and_asks_for_more_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            if let Classification::NeedMore(total) = classify(&bytes) {
                proptest::prop_assert!(total > bytes.len());
                proptest::prop_assert!(total <= MAX_DETECT_LEN);
            }
        }
    }
}
