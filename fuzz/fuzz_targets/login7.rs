//! LOGIN7: a decoded payload re-encodes to the same bytes; a changed login
//! re-encodes in field order and decodes to the same fields.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tdsguard::tds::login7::Login7;

fuzz_target!(|data: &[u8]| {
    let Ok(mut login) = Login7::decode(data) else {
        return;
    };
    let mut out = BytesMut::new();
    login.encode(&mut out).unwrap();
    assert_eq!(&out[..], data);

    login.database.push('x');
    let mut changed = BytesMut::new();
    if login.encode(&mut changed).is_err() {
        // Only a login already at the size limits may fail to grow.
        return;
    }
    let again = Login7::decode(&changed).unwrap();
    assert_eq!(again.database, login.database);
    assert_eq!(again.password.as_str(), login.password.as_str());
    assert_eq!(again.features, login.features);
    assert_eq!(again.sspi[..], login.sspi[..]);
});
