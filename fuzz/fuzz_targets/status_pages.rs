//! The answers the agent parses from services: HTTP heads, PHP-FPM status JSON, Statuspage
//! summaries. Never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = origin_agent::host::client::http::parse_head(data);
    let text = String::from_utf8_lossy(data);
    let _ = origin_agent::stack::fpm_status::parse(&text);
    let _ = origin_agent::stack::cdn_status::parse(&text);
    let _ = origin_agent::stack::db_status::digest(&text);
});
