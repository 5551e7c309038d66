//! Every server-side parser and the format detector over arbitrary bytes: no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use origin_agent::event::LogSource;
use origin_agent::logs::{detect_source, starts_entry, LineParser, Parsed};

fuzz_target!(|data: &[u8]| {
    let _ = detect_source(data);
    let Ok(rules) = origin_agent::logs::builtin_rules() else {
        return;
    };
    for source in LogSource::ALL {
        let _ = starts_entry(*source, data);
        if let Ok(mut p) = LineParser::new(*source, None, jiff::tz::TimeZone::UTC, rules.clone()) {
            if let Parsed::Event(ev) = p.parse(std::path::Path::new("fuzz"), 1, data) {
                assert!(ev.text.len() <= origin_agent::logs::EVENT_TEXT_CAP);
                assert!(*source != LogSource::NginxAccess, "the access log made an event");
            }
        }
    }
});
