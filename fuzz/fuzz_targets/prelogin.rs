//! PRELOGIN: a decoded payload re-encodes to the same bytes; after a change,
//! whatever encodes decodes to the changed options.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tdsguard::tds::prelogin::{Encryption, PreLogin};

fuzz_target!(|data: &[u8]| {
    let Ok(mut prelogin) = PreLogin::decode(data) else {
        return;
    };
    let mut out = BytesMut::new();
    prelogin.encode(&mut out).unwrap();
    assert_eq!(&out[..], data);

    prelogin.set_encryption(Encryption::NotSupported, false);
    prelogin.set_mars(false);
    let mut changed = BytesMut::new();
    if prelogin.encode(&mut changed).is_err() {
        // Adding options can pass the option cap; encode refuses that.
        return;
    }
    let again = PreLogin::decode(&changed).unwrap();
    assert_eq!(again.encryption(), Some((Encryption::NotSupported, false)));
    assert_eq!(again.mars(), Some(false));
    assert_eq!(again.options(), prelogin.options());
});
