//! Whole files (plain or gzip, truncated, binary, huge lines) through the batch reader with the
//! format detected: no panic, bounded memory (run with -rss_limit_mb).
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use origin_agent::logs::{for_each_entry, scan_paths, Window};

fuzz_target!(|data: &[u8]| {
    let mut entries = 0u64;
    let _ = for_each_entry(data, Some(origin_agent::event::LogSource::NginxError), |_, e| {
        assert!(e.len() <= origin_agent::logs::LINE_CAP);
        entries += 1;
    });
    let Ok(rules) = origin_agent::logs::builtin_rules() else {
        return;
    };
    let Ok(mut f) = tempfile_in_tmp() else { return };
    if f.1.write_all(data).is_err() {
        return;
    }
    let _ = scan_paths(
        &[f.0.clone()],
        &Window::default(),
        &jiff::tz::TimeZone::UTC,
        &rules,
    );
    let _ = std::fs::remove_file(&f.0);
    f.0.clear();
});

fn tempfile_in_tmp() -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let p = std::env::temp_dir().join(format!("origin-agent-fuzz-{}.log", std::process::id()));
    let f = std::fs::File::create(&p)?;
    Ok((p, f))
}
