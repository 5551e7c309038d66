//! A `log_format` string and a line, both arbitrary: compiling and parsing never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use origin_agent::event::LogSource;
use origin_agent::logs::{LineParser, Parsed};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (fmt, line) = data.split_at(split);
    let Ok(fmt) = std::str::from_utf8(fmt) else { return };
    if let Ok(mut p) = LineParser::new(
        LogSource::NginxAccess,
        Some(fmt),
        jiff::tz::TimeZone::UTC,
        std::sync::Arc::new(origin_agent::rules::RuleSet::empty()),
    ) {
        match p.parse(std::path::Path::new("fuzz"), 1, line) {
            Parsed::Event(_) => panic!("the access log made an event"),
            Parsed::Response(_) | Parsed::Other | Parsed::Bad => {}
        }
    }
});
