//! Server token stream: fed in pieces, every item's bytes are exactly the
//! input in order, and every decoded token re-encodes to its bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tdsguard::tds::stream::TokenReader;
use tdsguard::tds::token::{TdsVersion, TokenContext};

fuzz_target!(|data: &[u8]| {
    // First byte: piece size; second: TDS version and column encryption.
    let [piece, flags, stream @ ..] = data else {
        return;
    };
    let ctx = TokenContext {
        tds_version: match flags & 1 {
            0 => TdsVersion::V7_4,
            _ => TdsVersion::V7_1,
        },
        column_encryption: flags & 2 != 0,
        ..TokenContext::default()
    };
    let mut reader = TokenReader::new(ctx);
    let mut seen = Vec::new();
    for chunk in stream.chunks(usize::from(*piece).max(1)) {
        reader.handle_bytes(chunk);
        loop {
            match reader.poll_item() {
                Ok(Some(item)) => {
                    if let Some(raw) = item.raw() {
                        seen.extend_from_slice(raw);
                    }
                    if let Some(token) = item.token() {
                        let mut out = Vec::new();
                        token.encode(reader.context(), &mut out).unwrap();
                        assert_eq!(Some(&out[..]), item.raw().map(|r| &r[..]));
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert_eq!(&seen[..], &stream[..seen.len()]);
});
