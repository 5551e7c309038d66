//! Packed snapshots (`audit --snapshot FILE.tar.gz`) as an attacker hands them over: arbitrary
//! tar bytes (gzipped here, so the fuzzer works on the tar layer) and arbitrary gzip bytes through
//! the bounded reader. No panic, and memory bounded (run with -rss_limit_mb=512): every header
//! kind counts against the snapshot bounds.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use origin_agent::host::snapshot::{read_tar_gz_from, MAX_SNAPSHOT_BYTES};

fuzz_target!(|data: &[u8]| {
    // The bytes as a tar stream.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if gz.write_all(data).is_ok() {
        if let Ok(packed) = gz.finish() {
            if let Ok(files) = read_tar_gz_from(&packed[..]) {
                let total: u64 = files.values().map(|v| v.len() as u64).sum();
                assert!(total <= MAX_SNAPSHOT_BYTES);
            }
        }
    }
    // The bytes as the .tar.gz itself.
    let _ = read_tar_gz_from(data);
});
