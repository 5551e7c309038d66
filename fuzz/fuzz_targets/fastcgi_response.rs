//! The FastCGI response parser (a pool's answer is bytes from another process): never a panic,
//! output bounded whatever the records say.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for complete in [false, true] {
        if let Ok(r) = origin_agent::host::client::fastcgi::parse_records(data, complete) {
            assert!(r.stdout.len() <= origin_agent::host::exchange::MAX_BODY);
            assert!(r.stderr.len() <= origin_agent::host::exchange::MAX_BODY);
            let _ = origin_agent::host::client::fastcgi::split_cgi(&r.stdout);
        }
    }
});
