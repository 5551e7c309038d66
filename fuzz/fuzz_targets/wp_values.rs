//! WordPress inputs a site's own account controls, arbitrary: a PHP-serialized option value
//! (`active_plugins`), a `wp-config.php`, a plugin header and an error's text never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use origin_agent::wp;

fuzz_target!(|data: &[u8]| {
    let _ = wp::serial::plugin_list(data);
    let _ = wp::serial::plugin_keys(data);
    let text = String::from_utf8_lossy(data);
    let _ = wp::config::parse(&text);
    let _ = wp::config::DbHost::parse(&text);
    let _ = wp::plugins::header_field(&text, "Version");
    let _ = wp::blame::first_frame(&text, &[]);
});
