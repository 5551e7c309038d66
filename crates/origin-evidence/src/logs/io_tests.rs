//! Tests of the whole reading path: the adversarial corpus (visitor text holding real error
//! lines must yield no event), rotated and gzip siblings, windows, damaged input, and property
//! tests (arbitrary bytes never panic, bad lines are counted).

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use origin_host::live::LiveHost;

/// Every message a rule matches: the real error texts an attacker would copy.
fn payloads() -> Vec<String> {
    let set = crate::rules::RuleSet::builtin().unwrap();
    let mut out = Vec::new();
    for rule in set.rules() {
        for s in &rule.samples {
            let first = s.line.lines().next().unwrap_or_default().to_string();
            out.push(first.clone());
            // The message alone, without the header (what an anchored rule starts at).
            for sep in ["*1 ", "] ", ": "] {
                if let Some(i) = first.find(sep) {
                    out.push(first[i + sep.len()..].to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn esc(s: &str) -> String {
    // What nginx writes for a visitor's text in the access log (escape=default).
    s.replace('\\', "\\x5C").replace('"', "\\x22")
}

/// Access, nginx error, PHP and syslog lines in which every field a visitor controls holds a
/// real error text.
fn adversarial_files(dir: &Path) -> Vec<(PathBuf, LogSource)> {
    let mut access = String::new();
    let mut error = String::new();
    let mut php = String::new();
    let mut syslog = String::new();
    for (i, p) in payloads().iter().enumerate() {
        let path: String = p.replace(' ', "%20");
        let one_line = p.replace('\n', " ");
        access.push_str(&format!(
            "203.0.113.{} - - [24/Nov/2026:07:45:17 +0000] \"GET /{} HTTP/1.1\" 404 153 \"{}\" \"{}\"\n",
            i % 250,
            esc(&path),
            esc(&one_line),
            esc(&one_line)
        ));
        error.push_str(&format!(
            "2026/11/24 07:45:17 [error] 7#7: *{i} open() \"/var/www/html/{one_line}\" failed (2: No such file or directory), client: 203.0.113.9, server: example.com, request: \"GET /{path} HTTP/1.1\", host: \"{one_line}\", referrer: \"{one_line}\"\n"
        ));
        error.push_str(&format!(
            "2026/11/24 07:45:17 [error] 7#7: *{i} FastCGI sent in stderr: \"PHP message: PHP Warning:  Undefined array key \"{one_line}\" in /var/www/html/index.php on line 3\" while reading response header from upstream, client: 203.0.113.9, server: example.com, request: \"GET /{path} HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"example.com\", referrer: \"{one_line}\"\n"
        ));
        error.push_str(&format!(
            "2026/11/24 07:45:17 [info] 7#7: *{i} client sent invalid request while reading client request line, client: 203.0.113.9, server: example.com, request: \"{one_line}\"\n"
        ));
        php.push_str(&format!(
            "[24-Nov-2026 07:45:17 UTC] PHP Warning:  Undefined array key \"{one_line}\" in /var/www/html/index.php on line 3\n"
        ));
        php.push_str(&format!(
            "[24-Nov-2026 07:45:17 UTC] PHP Notice:  {one_line} in /var/www/html/index.php on line 4\n"
        ));
        syslog.push_str(&format!(
            "Nov 24 07:45:17 web myapp[42]: {one_line}\nNov 24 07:45:17 web sshd[9]: Invalid user {one_line} from 203.0.113.9\n"
        ));
    }
    let files = [
        ("access.log", access, LogSource::NginxAccess),
        ("error.log", error, LogSource::NginxError),
        ("php_errors.log", php, LogSource::Php),
        ("syslog", syslog, LogSource::Kernel),
    ];
    files
        .into_iter()
        .map(|(name, text, source)| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            (p, source)
        })
        .collect()
}

#[test]
fn visitor_text_holding_real_error_lines_yields_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let files = adversarial_files(dir.path());
    assert!(payloads().len() > 100);
    let logs: Vec<LogFile> = files
        .iter()
        .map(|(p, s)| LogFile {
            path: p.clone(),
            source: Some(*s),
            access_format: None,
        })
        .collect();
    let ev = read_evidence(
        &LiveHost,
        &logs,
        &Window::default(),
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    assert!(
        ev.events.is_empty(),
        "{} events, first: {:#?}",
        ev.events.len(),
        ev.events.first()
    );
    assert!(ev.events_by_rule.is_empty());
    for f in &ev.files {
        assert!(f.lines > 100, "{f:?}");
        assert_eq!(f.bad_lines, 0, "{f:?}");
    }
    // The access lines were still all read as responses.
    assert_eq!(ev.responses.total, payloads().len() as u64);
    // The same files with their format detected: still no event.
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let ev = scan_paths(
        &paths,
        &Window::default(),
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    assert!(ev.events.is_empty(), "{:#?}", ev.events.first());
    let detected: Vec<_> = ev.files.iter().map(|f| f.source).collect();
    let want: Vec<_> = files.iter().map(|(_, s)| Some(*s)).collect();
    assert_eq!(detected, want);
}

#[test]
fn real_lines_next_to_the_adversarial_ones_are_found() {
    // The control for the test above: the same reader finds the real lines.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("error.log");
    let mut text = std::fs::read_to_string({
        adversarial_files(dir.path());
        &p
    })
    .unwrap();
    text.push_str("2026/11/24 07:45:18 [crit] 7#7: *9 connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: example.com, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"x\"\n");
    std::fs::write(&p, text).unwrap();
    let ev = scan_paths(
        &[p],
        &Window::default(),
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    assert_eq!(ev.events.len(), 1);
    assert_eq!(ev.events[0].rule, "nginx.connect-enoent");
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The names of the files an evidence read, in reading order.
pub(super) fn file_names(ev: &Evidence) -> Vec<String> {
    ev.files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn set_mtime(p: &Path, unix: i64) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix as u64))
        .unwrap();
}

fn access_line(ts: &str, status: u16) -> String {
    format!("198.51.100.7 - - [{ts} +0000] \"GET / HTTP/1.1\" {status} 157 \"-\" \"x\"\n")
}

#[test]
fn rotated_and_gzip_siblings_are_read_when_the_window_reaches_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cur = d.join("access.log");
    std::fs::write(&cur, access_line("24/Nov/2026:07:30:00", 502)).unwrap();
    std::fs::write(
        d.join("access.log.1"),
        access_line("24/Nov/2026:06:30:00", 502),
    )
    .unwrap();
    std::fs::write(
        d.join("access.log.2.gz"),
        gz(access_line("24/Nov/2026:05:30:00", 504).as_bytes()),
    )
    .unwrap();
    std::fs::write(d.join("access.log.3.gz"), gz(b"old")).unwrap();
    std::fs::write(d.join("access.log.bak"), "not a sibling").unwrap();
    std::fs::write(d.join("other.log.1"), "not a sibling").unwrap();
    let t = |s: &str| s.parse::<Timestamp>().unwrap().as_second();
    set_mtime(&cur, t("2026-11-24T07:30:00Z"));
    set_mtime(&d.join("access.log.1"), t("2026-11-24T06:30:00Z"));
    set_mtime(&d.join("access.log.2.gz"), t("2026-11-24T05:30:00Z"));
    set_mtime(&d.join("access.log.3.gz"), t("2026-11-20T00:00:00Z"));
    let file = LogFile {
        path: cur.clone(),
        source: None,
        access_format: None,
    };
    let window = Window {
        since: Some("2026-11-24T05:00:00Z".parse().unwrap()),
        until: None,
    };
    let ev = read_evidence(
        &LiveHost,
        std::slice::from_ref(&file),
        &window,
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    assert_eq!(
        file_names(&ev),
        ["access.log.2.gz", "access.log.1", "access.log"]
    );
    assert_eq!(ev.responses.total, 3);
    assert_eq!(ev.responses.by_status.get(&504), Some(&1));
    assert!(ev.files.iter().all(|f| f.error.is_none()), "{:?}", ev.files);
    // A window that starts later leaves the older siblings out, and counts lines outside it.
    let window = Window {
        since: Some("2026-11-24T06:45:00Z".parse().unwrap()),
        until: None,
    };
    let ev = read_evidence(
        &LiveHost,
        &[file],
        &window,
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    assert_eq!(ev.files.len(), 1);
    assert_eq!(ev.responses.total, 1);
    // `scan` reads only the named files.
    let ev = scan_paths(
        &[cur],
        &Window::default(),
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    assert_eq!(ev.files.len(), 1);
}

#[test]
fn damaged_input_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Truncated gzip: the lines before the cut are read, the error is reported.
    let mut body = String::new();
    for i in 0..5000 {
        body.push_str(&access_line(
            "24/Nov/2026:07:30:00",
            if i % 10 == 0 { 502 } else { 200 },
        ));
    }
    let z = gz(body.as_bytes());
    std::fs::write(d.join("cut.log.gz"), &z[..z.len() / 2]).unwrap();
    // Binary garbage, a missing file, an empty file, a directory.
    let garbage: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("garbage.bin"), garbage).unwrap();
    std::fs::write(d.join("empty.log"), "").unwrap();
    let paths: Vec<PathBuf> = ["cut.log.gz", "garbage.bin", "missing.log", "empty.log", "."]
        .iter()
        .map(|n| d.join(n))
        .collect();
    let ev = scan_paths(
        &paths,
        &Window::default(),
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    assert_eq!(ev.files.len(), 5);
    let cut = &ev.files[0];
    assert_eq!(cut.source, Some(LogSource::NginxAccess));
    assert!(cut.error.is_some(), "{cut:?}");
    assert!(cut.lines > 100 && cut.lines < 5000, "{cut:?}");
    for f in &ev.files[1..] {
        assert!(f.error.is_some(), "{f:?}");
    }
}

#[test]
fn a_20_mb_line_is_cut_and_counted_and_the_next_lines_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("error.log");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(b"2026/11/24 07:45:16 [error] 7#7: *1 no live upstreams while connecting to upstream, client: 1.2.3.4, server: s, request: \"GET / HTTP/1.1\", upstream: \"http://b\", host: \"h\"\n").unwrap();
    f.write_all(b"2026/11/24 07:45:17 [error] 7#7: *2 ")
        .unwrap();
    let block = vec![b'A'; 1 << 20];
    for _ in 0..20 {
        f.write_all(&block).unwrap();
    }
    f.write_all(b"\n2026/11/24 07:45:18 [error] 7#7: *3 no live upstreams while connecting to upstream, client: 1.2.3.4, server: s, request: \"GET / HTTP/1.1\", upstream: \"http://b\", host: \"h\"\n").unwrap();
    drop(f);
    let ev = scan_paths(
        &[p],
        &Window::default(),
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    let s = &ev.files[0];
    assert_eq!(s.source, Some(LogSource::NginxError));
    assert_eq!(s.truncated_lines, 1, "{s:?}");
    assert_eq!(ev.events.len(), 2);
    assert_eq!(ev.events[1].line, 3);
    assert!(ev.events.iter().all(|e| e.text.len() <= EVENT_TEXT_CAP));
}

#[test]
fn line_numbers_and_counts_hold_across_chunks() {
    // Big enough for several chunks and batches: every 1000th line is a 502.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("access.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    let n = 150_000u64;
    for i in 1..=n {
        let status = if i % 1000 == 0 { 502 } else { 200 };
        writeln!(
            f,
            "10.0.{}.{} - - [24/Nov/2026:07:{:02}:{:02} +0000] \"GET /p/{i} HTTP/1.1\" {status} 12 \"-\" \"agent/{i}\"",
            i % 7,
            i % 5,
            (i / 60) % 60,
            i % 60
        )
        .unwrap();
    }
    drop(f);
    let ev = scan_paths(
        &[p],
        &Window::default(),
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    assert!(
        std::fs::metadata(dir.path().join("access.log"))
            .unwrap()
            .len()
            > 3 * (2 << 20)
    );
    assert_eq!(ev.responses.total, n);
    assert_eq!(ev.responses.by_status.get(&502), Some(&(n / 1000)));
    assert_eq!(ev.errors.len() as u64, n / 1000);
    for (k, r) in ev.errors.iter().enumerate() {
        assert_eq!(r.line, (k as u64 + 1) * 1000, "{r:?}");
        assert_eq!(r.request, format!("GET /p/{} HTTP/1.1", r.line));
    }
    assert_eq!(ev.responses.clients.len(), 35);
    assert_eq!(ev.responses.clients.values().sum::<u64>(), n);
    let minutes: u64 = ev.responses.per_minute.values().map(|m| m.total).sum();
    assert_eq!(minutes, n);
}

#[test]
fn error_log_events_keep_their_lines_order_and_exact_tallies_across_chunks() {
    // Several chunks (more than the buffers in flight): every 3rd entry is a refused connect,
    // every 7th a warning no rule reads, the rest 404s; each entry names its own line number.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("error.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    let n = 80_000u64;
    let mut refused = 0u64;
    for i in 1..=n {
        let msg = if i % 3 == 0 {
            refused += 1;
            "connect() to unix:/run/php/php8.2-fpm.sock failed (111: Connection refused) while connecting to upstream"
        } else if i % 7 == 0 {
            "FastCGI sent in stderr: \"PHP message: PHP Warning:  Undefined array key \\\"id\\\" in /var/www/x.php on line 3\" while reading response header from upstream"
        } else {
            "open() \"/var/www/html/favicon.ico\" failed (2: No such file or directory)"
        };
        writeln!(
            f,
            "2026/11/24 07:{:02}:{:02} [error] 42#42: *{i} {msg}, client: 10.0.0.1, server: x, request: \"GET /line/{i} HTTP/1.1\", host: \"x\"",
            (i / 60) % 60,
            i % 60
        )
        .unwrap();
    }
    drop(f);
    assert!(std::fs::metadata(&p).unwrap().len() > 8 * (2 << 20));
    let ev = scan_paths(
        &[p],
        &Window::default(),
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    assert_eq!(ev.files[0].lines, n);
    assert_eq!(ev.events_by_rule["nginx.connect-refused"].count, refused);
    assert_eq!(ev.events_by_rule.len(), 1, "{:?}", ev.events_by_rule.keys());
    // The kept events are the newest, in file order, each at its own line.
    // 8 to 20 chunks: each builds its newest 50 of the rule (the cap spreads them over time).
    assert!(ev.events.len() <= super::MAX_KEEP_PER_RULE);
    assert!(ev.events.len() >= 8 * 50, "{}", ev.events.len());
    let last = ev.events.last().unwrap();
    assert_eq!(last.line, n - n % 3);
    for pair in ev.events.windows(2) {
        assert!(pair[0].line < pair[1].line);
    }
    for e in &ev.events {
        assert_eq!(e.line % 3, 0);
        assert_eq!(
            e.field("request"),
            Some(format!("GET /line/{} HTTP/1.1", e.line).as_str())
        );
    }
    assert_eq!(
        ev.events_dropped + ev.events.len() as u64,
        refused,
        "every match is either kept or counted as dropped"
    );
}

#[test]
fn a_file_that_shrinks_while_being_read_ends_cleanly() {
    // A reader that claims a long file but ends early (truncated by logrotate copytruncate).
    struct Shrinking(u64);
    impl std::io::Read for Shrinking {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Ok(0);
            }
            self.0 -= 1;
            let line = b"Nov 24 07:45:17 web kernel: nf_conntrack: table full, dropping packet\n";
            let n = line.len().min(buf.len());
            buf[..n].copy_from_slice(&line[..n]);
            Ok(n)
        }
    }
    let mut seen = 0;
    for_each_entry(
        std::io::BufReader::new(Shrinking(3)),
        Some(LogSource::Kernel),
        |_, _| seen += 1,
    )
    .unwrap();
    assert_eq!(seen, 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for source in LogSource::ALL {
            if let Ok(mut p) = LineParser::new(*source, None, TimeZone::UTC, builtin_rules().unwrap()) {
                let _ = p.parse(Path::new("x"), 1, &bytes);
            }
            let _ = starts_entry(*source, &bytes);
        }
        let _ = detect_source(&bytes);
    }

    #[test]
    fn mutated_real_lines_never_panic(
        line_idx in 0usize..200,
        cut in 0usize..400,
        flip in 0usize..400,
        byte in any::<u8>(),
    ) {
        let set = crate::rules::RuleSet::builtin().unwrap();
        let samples: Vec<(LogSource, String)> = set
            .rules()
            .iter()
            .flat_map(|r| r.samples.iter().map(move |s| (r.source, s.line.clone())))
            .collect();
        let (source, line) = &samples[line_idx % samples.len()];
        let mut b = line.as_bytes().to_vec();
        if !b.is_empty() {
            let i = flip % b.len();
            b[i] = byte;
        }
        b.truncate(cut.max(1).min(b.len()));
        let mut p = LineParser::new(*source, None, TimeZone::UTC, builtin_rules().unwrap()).unwrap();
        match p.parse(Path::new("x"), 1, &b) {
            Parsed::Event(ev) => prop_assert!(!ev.rule.is_empty()),
            Parsed::Bad | Parsed::Other | Parsed::Response(_) => {}
        }
    }

    #[test]
    fn access_format_compiler_never_panics(fmt in "[$a-z_{} \"\\[\\]-]{0,80}", line in "[ -~]{0,200}") {
        if let Ok(f) = AccessFormat::compile(&fmt) {
            let mut p = LineParser::new(LogSource::NginxAccess, Some(&fmt), TimeZone::UTC, builtin_rules().unwrap()).unwrap();
            let _ = p.parse(Path::new("x"), 1, line.as_bytes());
            let _ = f.name();
        }
    }

    #[test]
    fn bad_lines_are_counted_and_good_ones_kept(
        junk in proptest::collection::vec("[^\n]{0,120}", 0..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.log");
        let mut text = String::new();
        let good = r#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET / HTTP/1.1" 502 157 "-" "x""#;
        text.push_str(good);
        text.push('\n');
        let mut bad = 0u64;
        for j in &junk {
            text.push_str(j);
            text.push('\n');
            if !crate::logs::access::looks_like_access(j.trim_end_matches('\r').as_bytes()) {
                bad += 1;
            }
        }
        std::fs::write(&p, &text).unwrap();
        let file = LogFile { path: p, source: Some(LogSource::NginxAccess), access_format: None };
        let ev = read_evidence(&LiveHost, &[file], &Window::default(), &TimeZone::UTC, &builtin_rules().unwrap());
        prop_assert_eq!(ev.files[0].bad_lines, bad);
        prop_assert_eq!(ev.responses.by_status.get(&502).copied().unwrap_or(0) >= 1, true);
    }
}

#[test]
fn multi_line_entries_of_slowlog_and_crash_reports_are_joined_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("www.slow.log");
    std::fs::write(
        &slow,
        "\n[24-Nov-2026 07:45:46]  [pool www] pid 24248\nscript_filename = /var/www/html/index.php\n[0x00007f0a3c813f20] curl_exec() /var/www/html/wp-content/plugins/acme-feeds/fetch.php:41\n[0x00007f0a3c813e80] acme_fetch() /var/www/html/wp-includes/class-wp-hook.php:324\n\n[24-Nov-2026 07:45:50]  [pool www] pid 24249\nscript_filename = /var/www/html/shop.php\n[0x00007f0a3c813f20] sleep() /var/www/html/shop.php:3\n",
    )
    .unwrap();
    let crash = dir.path().join("error.log");
    std::fs::write(
        &crash,
        "2026-11-24  7:48:15 3 [ERROR] mariadbd: Table './wp/wp_options' is marked as crashed and should be repaired\n261124  7:48:19 [ERROR] mariadbd got signal 11 ;\nSorry, we probably made a mistake, and this is a bug.\n\nServer version: 10.11.19-MariaDB-0+deb12u1 source revision: x\n2026-11-24  7:48:21 0 [Note] InnoDB: Starting crash recovery from checkpoint LSN=44404\n",
    )
    .unwrap();
    let tz = TimeZone::get("Europe/Berlin").unwrap();
    let ev = scan_paths(
        &[slow, crash],
        &Window::default(),
        &tz,
        &builtin_rules().unwrap(),
    );
    assert_eq!(ev.files[0].source, Some(LogSource::PhpFpmSlow));
    assert_eq!(ev.files[1].source, Some(LogSource::MysqlError));
    let rules: Vec<(&str, u64)> = ev
        .events
        .iter()
        .map(|e| (e.rule.as_str(), e.line))
        .collect();
    assert_eq!(
        rules,
        [
            ("php-fpm.slowlog-trace", 2),
            ("php-fpm.slowlog-trace", 7),
            ("mysql.crashed-table", 1),
            ("mysql.got-signal", 2),
            ("mysql.crash-recovery", 6),
        ]
    );
    assert_eq!(ev.events[0].field("plugin"), Some("acme-feeds"));
    assert_eq!(ev.events[1].field("script"), Some("/var/www/html/shop.php"));
    assert!(ev.events[3]
        .text
        .contains("Sorry, we probably made a mistake"));
    // Local stamps without a zone are read in the given zone (Berlin is UTC+1 in November).
    assert_eq!(
        ev.events[2].time.unwrap().to_string(),
        "2026-11-24T06:48:15Z"
    );
    assert_eq!(
        ev.events[0].time.unwrap().to_string(),
        "2026-11-24T06:45:46Z"
    );
}

#[test]
fn a_virtual_host_access_format_is_inferred_by_scan() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vhosts.log");
    std::fs::write(&p, "origin.example 54.87.212.77 - - [19/Oct/2018:16:05:32 +0000] \"GET / HTTP/1.1\" 502 157 \"-\" \"x\"\norigin.example 54.87.212.78 - - [19/Oct/2018:16:05:33 +0000] \"GET /a HTTP/1.1\" 200 9 \"-\" \"x\"\n").unwrap();
    let ev = scan_paths(
        &[p],
        &Window::default(),
        &TimeZone::UTC,
        &builtin_rules().unwrap(),
    );
    let f = &ev.files[0];
    assert_eq!(f.source, Some(LogSource::NginxAccess));
    assert!(f.format.contains("leading"), "{f:?}");
    assert_eq!(f.bad_lines, 0);
    assert_eq!(ev.errors[0].client, "54.87.212.77");
    assert_eq!(ev.responses.clients.len(), 2);
}
