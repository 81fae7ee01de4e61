//! RPC requests: a decoded payload re-encodes to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tdsguard::tds::rpc::RpcRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = RpcRequest::decode(data) else {
        return;
    };
    assert_eq!(request.to_bytes().unwrap(), data);
    for param in request.calls.iter().flat_map(|c| &c.params) {
        let _ = param.value();
    }
});
