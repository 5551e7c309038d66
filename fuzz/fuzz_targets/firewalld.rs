//! firewalld's readers over arbitrary bytes (zone, ipset and service XML, rich rules,
//! `firewall-cmd --list-all-zones` and `--info-ipset` output): no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use origin_agent::firewall::firewalld;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = firewalld::parse_zone("z", "fuzz", &text);
    let _ = firewalld::parse_ipset("fuzz", &text);
    let _ = firewalld::parse_service("fuzz", &text);
    let _ = firewalld::parse_rule_text(&text);
    let _ = firewalld::parse_list_all_zones(&text);
    let _ = firewalld::parse_info_ipset(&text);
});
