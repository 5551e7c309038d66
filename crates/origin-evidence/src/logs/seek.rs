//! Reading a window, not a file: where a time-ordered log's window starts, found by bisection on
//! the entries' time stamps, so that `audit --since 1h` over a 10 GB access log reads the last
//! hour and not 10 GB.
//!
//! Logs are written in time order except for a little disorder: nginx workers and PHP-FPM's
//! children write their lines a moment apart, a buffered `access_log … buffer=` flushes late.
//! The search looks for the last probed entry stamped before `since − SLACK`; every line before
//! it is then before `since` as long as no line is out of order by more than [`SLACK`]. The
//! lines from there on are parsed as in a full read (those before `since` counted outside the
//! window), so the counts are exactly those of a full read. Probes that go backwards in time by
//! more than [`SLACK`] (a log that is not time-ordered) make the reader read the whole file.
//! Only plain files on a host that can seek are bisected; line numbers after a skip are not
//! known (evidence then names the file alone; its lines carry their own stamps).

use std::io::Read;
use std::path::Path;

use jiff::{SignedDuration, Timestamp};

use super::{starts_entry, LineParser};
use crate::event::LogSource;
use origin_host::Host;

/// The most a line may be out of time order and still be read by a bisected read.
pub(crate) const SLACK: SignedDuration = SignedDuration::from_secs(10 * 60);
/// Files smaller than this are read whole: bisecting them saves less than it costs.
pub(crate) const MIN_BISECT: u64 = 16 << 20;
/// Bytes one probe reads (more, in steps, up to [`PROBE_MAX`], when it finds no stamped entry).
const PROBE: usize = 64 << 10;
const PROBE_MAX: usize = 1 << 20;
/// Stop when the window's start is known to within this many bytes.
const CLOSE_ENOUGH: u64 = 256 << 10;

/// The byte offset (an entry's start) to read `path` from for a window starting at `since`;
/// 0 (the whole file) when the file is small, compressed, not seekable on this host, not
/// time-ordered, or begins inside the window.
pub(crate) fn window_start(
    host: &dyn Host,
    path: &Path,
    source: LogSource,
    size: u64,
    since: Timestamp,
    stamper: &mut LineParser,
) -> u64 {
    if size < MIN_BISECT || source == LogSource::ApacheError {
        return 0;
    }
    let Some(target) = since.checked_sub(SLACK).ok() else {
        return 0;
    };
    let mut probe = |offset: u64| probe(host, path, source, offset, stamper);
    let Some((first, t0)) = probe(0) else {
        return 0;
    };
    if t0 >= target {
        return 0;
    }
    let mut probes: Vec<(u64, Timestamp)> = vec![(first, t0)];
    let (mut lo, mut hi) = (first, size);
    while hi.saturating_sub(lo) > CLOSE_ENOUGH {
        let mid = lo + (hi - lo) / 2;
        match probe(mid) {
            Some((at, t)) if at < hi => {
                probes.push((at, t));
                if t < target {
                    lo = at;
                } else {
                    hi = mid;
                }
            }
            // No entry starts between `mid` and `hi` (or none has a stamp): look lower.
            _ => hi = mid,
        }
    }
    probes.sort_unstable();
    let ordered = probes
        .windows(2)
        .all(|w| w[1].1 >= w[0].1.checked_sub(SLACK).unwrap_or(w[0].1));
    if ordered {
        lo
    } else {
        0
    }
}

/// Whether a rotated copy can hold lines of `window`, told by its first and last stamps: its
/// first entry (plain or gzip, through `open`) stamped after the window's end, or (plain files on
/// a host that seeks) its last entries all stamped before `since − SLACK`, and it is skipped. A
/// copy whose stamps cannot be read is kept (the full read decides).
pub(crate) fn sibling_in_window(
    host: &dyn Host,
    path: &Path,
    window: &super::Window,
    tz: &jiff::tz::TimeZone,
) -> bool {
    let Ok(reader) = host.open(path) else {
        return true;
    };
    let mut head = Vec::with_capacity(PROBE);
    if super::read::maybe_gunzip(reader)
        .take(PROBE as u64)
        .read_to_end(&mut head)
        .is_err()
    {
        return true;
    }
    let (source, format) = match super::detect_source(&head) {
        Some(LogSource::NginxAccess) | None => {
            let format = head
                .split(|&b| b == b'\n')
                .find(|l| !l.is_empty())
                .and_then(super::AccessFormat::infer)
                .unwrap_or_else(super::AccessFormat::combined);
            (LogSource::NginxAccess, Some(format))
        }
        Some(source) => (source, None),
    };
    let mut stamper = LineParser::stamper(
        source,
        format.as_ref(),
        tz.clone(),
        super::year_anchor(host, path),
    );
    let first = entries(&head, source).find_map(|l| stamper.stamp(l));
    if let (Some(first), Some(until)) = (first, window.until) {
        if first > until {
            return false;
        }
    }
    let (Some(since), Ok(meta)) = (window.since, host.metadata(path)) else {
        return true;
    };
    if path.extension().is_some_and(|e| e == "gz") || head.starts_with(&[0x1f, 0x8b]) {
        return true;
    }
    let Some(Ok(mut tail)) = host.open_at(path, meta.size.saturating_sub(PROBE as u64)) else {
        return true;
    };
    let mut buf = vec![0u8; PROBE];
    let mut filled = 0;
    loop {
        let n = read_some(&mut tail, &mut buf[filled..]);
        filled += n;
        if n == 0 || filled == buf.len() {
            break;
        }
    }
    let last = entries(&buf[..filled], source)
        .filter_map(|l| stamper.stamp(l))
        .max();
    match (last, since.checked_sub(SLACK)) {
        (Some(last), Ok(target)) => last >= target,
        _ => true,
    }
}

/// The entry-starting lines of `data` (a partial first line may come first: it does not parse).
fn entries(data: &[u8], source: LogSource) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(move |l| starts_entry(source, l))
}

/// The first entry starting at or after `offset` (after the line `offset` falls in, unless it
/// is 0) that carries a time stamp: its offset and time.
fn probe(
    host: &dyn Host,
    path: &Path,
    source: LogSource,
    offset: u64,
    stamper: &mut LineParser,
) -> Option<(u64, Timestamp)> {
    let mut reader = host.open_at(path, offset)?.ok()?;
    let mut buf = vec![0u8; PROBE];
    let mut filled = 0usize;
    // Where the scan for an entry start resumes: after the first newline unless at 0.
    let mut at: Option<usize> = (offset == 0).then_some(0);
    loop {
        let n = read_some(&mut reader, &mut buf[filled..]);
        filled += n;
        let data = &buf[..filled];
        if at.is_none() {
            at = memchr::memchr(b'\n', data).map(|i| i + 1);
        }
        if let Some(mut s) = at {
            while let Some(nl) = memchr::memchr(b'\n', &data[s..]) {
                let line = &data[s..s + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if starts_entry(source, line) {
                    if let Some(t) = stamper.stamp(line) {
                        return Some((offset + s as u64, t));
                    }
                }
                s += nl + 1;
            }
            at = Some(s);
        }
        if n == 0 || filled >= PROBE_MAX {
            return None;
        }
        if filled == buf.len() {
            buf.resize((buf.len() * 2).min(PROBE_MAX), 0);
        }
    }
}

/// Reads what is there (retrying interruptions); 0 at the end or on an error.
fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> usize {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::event::Evidence;
    use crate::logs::{builtin_rules, read_evidence, LogFile, Window};
    use origin_host::live::LiveHost;
    use origin_host::{
        Command, CommandOutput, ConnectOutcome, Endpoint, FileMeta, FsStats, HostError,
    };

    /// The live host without seeking: the reader reads every file whole (the reference).
    struct NoSeek;

    impl Host for NoSeek {
        fn read(&self, p: &Path) -> Result<Vec<u8>, HostError> {
            LiveHost.read(p)
        }
        fn open(&self, p: &Path) -> Result<Box<dyn Read + Send>, HostError> {
            LiveHost.open(p)
        }
        fn read_dir(&self, p: &Path) -> Result<Vec<String>, HostError> {
            LiveHost.read_dir(p)
        }
        fn metadata(&self, p: &Path) -> Result<FileMeta, HostError> {
            LiveHost.metadata(p)
        }
        fn read_link(&self, p: &Path) -> Result<PathBuf, HostError> {
            LiveHost.read_link(p)
        }
        fn run(&self, c: &Command) -> Result<CommandOutput, HostError> {
            LiveHost.run(c)
        }
        fn connect(&self, e: &Endpoint, t: Duration) -> ConnectOutcome {
            LiveHost.connect(e, t)
        }
        fn statvfs(&self, p: &Path) -> Result<FsStats, HostError> {
            LiveHost.statvfs(p)
        }
        fn now(&self) -> Timestamp {
            LiveHost.now()
        }
        fn pause(&self, d: Duration) {
            LiveHost.pause(d)
        }
        fn is_live(&self) -> bool {
            true
        }
    }

    const T0: i64 = 1_795_420_800; // 2026-11-23T08:00:00Z
    /// The files' time span: 8 hours, dense enough that the window's start is found to within
    /// a few minutes (the bisection stops at 256 KiB).
    const SPAN: i64 = 8 * 3600;

    /// Seconds 0..`span` over `n` lines, each stamp moved up to ±`jitter` s (out of order);
    /// the lines within 3 s of `edge` shuffled harder, and those written 400 s before it stamped
    /// 2 s after it (a late writer, within [`SLACK`]): disorder right at the window's start.
    fn stamps(n: usize, span: i64, jitter: i64, edge: i64) -> Vec<i64> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |m: i64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (2 * m as u64 + 1)) as i64 - m
        };
        (0..n)
            .map(|i| {
                let t = span * i as i64 / n as i64;
                if (t - (edge - 400)).abs() <= 1 {
                    return edge + 2;
                }
                let j = if (t - edge).abs() < 3 { 3 } else { jitter };
                (t + rnd(j)).max(0)
            })
            .collect()
    }

    fn access_log(path: &Path, n: usize, edge: i64) {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for (i, t) in stamps(n, SPAN, 2, edge).into_iter().enumerate() {
            let ts = Timestamp::from_second(T0 + t).unwrap();
            let status = [200, 200, 200, 502, 504, 404, 200, 500][i % 8];
            writeln!(
                f,
                "10.0.{}.{} - - [{}] \"GET /p/{i}?q=abcdefghijklmnopqrstuvwxyz HTTP/1.1\" {status} 512 \"https://example.com/\" \"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/132.0\"",
                i % 7,
                i % 251,
                ts.strftime("%d/%b/%Y:%H:%M:%S +0000")
            )
            .unwrap();
        }
    }

    fn error_log(path: &Path, n: usize, edge: i64) {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for (i, t) in stamps(n, SPAN, 1, edge).into_iter().enumerate() {
            let ts = Timestamp::from_second(T0 + t)
                .unwrap()
                .strftime("%Y/%m/%d %H:%M:%S");
            match i % 5 {
                0 => writeln!(f, "{ts} [error] 42#42: *{i} connect() to unix:/run/php/php8.2-fpm.sock failed (11: Resource temporarily unavailable) while connecting to upstream, client: 10.0.0.{}, server: example.com, request: \"GET /p/{i} HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"example.com\"", i % 200),
                1 => writeln!(f, "{ts} [error] 42#42: *{i} FastCGI sent in stderr: \"PHP message: PHP Fatal error:  Uncaught Error: Call to undefined function f() in /var/www/wp-content/plugins/acme/x.php:{i}\nStack trace:\n#0 {{main}}\n  thrown in /var/www/wp-content/plugins/acme/x.php on line {i}\" while reading response header from upstream, client: 10.0.0.1, server: example.com, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"example.com\""),
                _ => writeln!(f, "{ts} [error] 42#42: *{i} open() \"/var/www/html/favicon-{i}.png\" failed (2: No such file or directory), client: 10.0.0.2, server: example.com, request: \"GET /favicon.png HTTP/1.1\", host: \"example.com\""),
            }
            .unwrap();
        }
    }

    /// What must be the same whether the file was bisected or read whole: every count and
    /// tally, every 5xx response, and the newest event of each rule (which events besides are
    /// kept as samples depends on where chunks begin; line numbers are unknown after a skip).
    fn comparable(ev: &Evidence) -> Vec<String> {
        let mut newest: BTreeMap<&str, &crate::event::Event> = BTreeMap::new();
        for e in &ev.events {
            newest.insert(&e.rule, e);
        }
        let newest: Vec<_> = newest
            .values()
            .map(|e| (&e.rule, e.time, &e.text, &e.fields))
            .collect();
        let errors: Vec<_> = ev
            .errors
            .iter()
            .map(|r| (r.status, r.time, &r.request, &r.client))
            .collect();
        let files: Vec<_> = ev
            .files
            .iter()
            .map(|f| (f.events, f.bad_lines, f.truncated_lines, &f.error))
            .collect();
        vec![
            format!("{:?}", ev.responses),
            format!("{:?}", ev.events_by_rule),
            format!("{newest:?}"),
            format!("{errors:?}"),
            format!("{files:?}"),
        ]
    }

    #[test]
    fn a_bisected_read_counts_exactly_what_a_full_read_counts_with_disorder_at_the_edge() {
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access.log");
        let error = dir.path().join("error.log");
        // The window starts 7 h in, where the lines are most out of order.
        let edge = 7 * 3600;
        access_log(&access, 120_000, edge);
        error_log(&error, 60_000, edge);
        assert!(std::fs::metadata(&access).unwrap().len() > MIN_BISECT);
        assert!(std::fs::metadata(&error).unwrap().len() > MIN_BISECT);
        let rules = builtin_rules().unwrap();
        for (path, until) in [
            (&access, None),
            (&error, None),
            (&access, Some(edge + 1800)),
        ] {
            let window = Window {
                since: Some(Timestamp::from_second(T0 + edge).unwrap()),
                until: until.map(|u| Timestamp::from_second(T0 + u).unwrap()),
            };
            let file = LogFile {
                path: path.clone(),
                source: None,
                access_format: None,
            };
            let tz = jiff::tz::TimeZone::UTC;
            let fast = read_evidence(&LiveHost, std::slice::from_ref(&file), &window, &tz, &rules);
            let full = read_evidence(&NoSeek, std::slice::from_ref(&file), &window, &tz, &rules);
            let (f, w) = (&fast.files[0], &full.files[0]);
            assert!(f.skipped_bytes > 0, "{f:?}");
            assert_eq!(w.skipped_bytes, 0);
            assert!(
                f.lines < w.lines / 5,
                "{} of {} lines read",
                f.lines,
                w.lines
            );
            assert!(f.events > 0 || fast.responses.total > 0);
            for (what, (a, b)) in comparable(&fast)
                .iter()
                .zip(comparable(&full).iter())
                .enumerate()
            {
                assert!(a == b, "{} part {what} differs", path.display());
            }
            // The full read saw lines before the window at the edge: the disorder was there.
            assert!(w.outside_window > f.outside_window);
        }
    }

    #[test]
    fn a_log_that_is_not_time_ordered_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        access_log(&path, 120_000, 0);
        // Append an old day after the recent one: stamps go back by a day mid-file.
        let mut text = std::fs::read(&path).unwrap();
        let half = text.len() / 2;
        let nl = half + text[half..].iter().position(|&b| b == b'\n').unwrap() + 1;
        let (a, b) = text.split_at_mut(nl);
        let swapped = [b.to_vec(), a.to_vec()].concat();
        text = swapped;
        std::fs::write(&path, &text).unwrap();
        let size = text.len() as u64;
        let fmt = crate::logs::AccessFormat::combined();
        let mut stamper = LineParser::stamper(
            LogSource::NginxAccess,
            Some(&fmt),
            jiff::tz::TimeZone::UTC,
            LiveHost.now(),
        );
        let since = Timestamp::from_second(T0 + 6 * 3600).unwrap();
        let start = window_start(
            &LiveHost,
            &path,
            LogSource::NginxAccess,
            size,
            since,
            &mut stamper,
        );
        assert_eq!(start, 0);
        // Small files and hosts that cannot seek: read whole.
        assert_eq!(
            window_start(
                &LiveHost,
                &path,
                LogSource::NginxAccess,
                MIN_BISECT - 1,
                since,
                &mut stamper
            ),
            0
        );
        assert_eq!(
            window_start(
                &NoSeek,
                &path,
                LogSource::NginxAccess,
                size,
                since,
                &mut stamper
            ),
            0
        );
    }

    #[test]
    fn rotated_copies_are_skipped_by_their_first_and_last_stamps() {
        let dir = tempfile::tempdir().unwrap();
        let line = |t: i64, status: u16| {
            let ts = Timestamp::from_second(T0 + t).unwrap();
            format!(
                "10.0.0.1 - - [{}] \"GET / HTTP/1.1\" {status} 5 \"-\" \"x\"\n",
                ts.strftime("%d/%b/%Y:%H:%M:%S +0000")
            )
        };
        let day = |from: i64| {
            (0..200)
                .map(|i| line(from + i * 60, 502))
                .collect::<String>()
        };
        let current = dir.path().join("access.log");
        std::fs::write(&current, day(3 * 86_400)).unwrap();
        // Two days old, but touched recently (copied back from a backup): its mtime is in the
        // window, its stamps are not.
        std::fs::write(dir.path().join("access.log.1"), day(86_400)).unwrap();
        // Written after the window's end.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(day(5 * 86_400).as_bytes()).unwrap();
        std::fs::write(dir.path().join("access.log.2.gz"), gz.finish().unwrap()).unwrap();
        // In the window: read.
        std::fs::write(dir.path().join("access.log.3"), day(3 * 86_400 - 7200)).unwrap();
        let window = Window {
            since: Some(Timestamp::from_second(T0 + 3 * 86_400 - 3600).unwrap()),
            until: Some(Timestamp::from_second(T0 + 4 * 86_400).unwrap()),
        };
        let file = LogFile {
            path: current,
            source: None,
            access_format: None,
        };
        let ev = read_evidence(
            &LiveHost,
            &[file],
            &window,
            &jiff::tz::TimeZone::UTC,
            &builtin_rules().unwrap(),
        );
        assert_eq!(
            crate::logs::io_tests::file_names(&ev),
            ["access.log.3", "access.log"]
        );
        // Cannot tell (no stamp): kept.
        let odd = dir.path().join("odd.log.1");
        std::fs::write(&odd, "no stamps here\n").unwrap();
        let tz = jiff::tz::TimeZone::UTC;
        assert!(sibling_in_window(&LiveHost, &odd, &window, &tz));
    }
}
