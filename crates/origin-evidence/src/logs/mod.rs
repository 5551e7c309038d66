//! Log evidence: reads nginx, PHP-FPM, PHP, MySQL/MariaDB and kernel logs through the host seam
//! and turns them into [`Evidence`] (typed, timestamped events and 5xx responses).
//!
//! # Layout
//!
//! - `time`: each format's time stamp and its zone meaning, parsed from bytes.
//! - `envelope`: container, kubectl and syslog/journalctl prefixes taken off each line.
//! - `formats`: the header of each server-side format (time, level, ids), the message rules
//!   match, nginx's structural `client:/server:/request:/upstream:/host:` tail.
//! - [`access`]: nginx `log_format` strings compiled into parsers, and the allocation-free
//!   counting fast path.
//! - `read`: files through [`Host::open`] (plain or gzip), rotated siblings, newline- and
//!   entry-aligned chunks parsed in parallel, bounded memory.
//! - `io_tests`: the adversarial corpus, rotation, damaged input, property tests.
//! - this file: the public API ([`read_evidence`], [`scan_paths`], [`detect_source`],
//!   [`starts_entry`], [`LineParser`], [`for_each_entry`]).
//!
//! Limits: an entry is cut at [`LINE_CAP`] bytes (counted in `FileSummary::truncated_lines`);
//! per file the newest [`MAX_KEEP_EVENTS`] events ([`MAX_KEEP_PER_RULE`] per rule, built for
//! at most 50 per rule and 2 MiB chunk, spread over time) and [`MAX_KEEP_ERRORS`] 5xx responses
//! are kept, while `Evidence::events_by_rule` and the response stats count everything. Only
//! matched entries get a time (unmatched server lines are not checked against the window).
//!
//! Visitor-written text never makes an event: access-log lines only yield [`Response`]s, and
//! rules are anchored at the start of the server's own message (see [`crate::rules`]).

pub mod access;
mod envelope;
mod formats;
#[cfg(test)]
mod io_tests;
mod read;
mod rotation;
pub mod samples;
mod seek;
mod time;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use jiff::tz::TimeZone;
use jiff::Timestamp;

pub use access::{AccessFormat, FormatError, COMBINED};
pub use formats::starts_entry;

use crate::event::{Event, Evidence, FieldMap, LogSource, Response};
use crate::rules::{RuleError, RuleSet};
use origin_host::Host;

/// The most of one entry that is kept and parsed; the rest of a longer line is dropped (and
/// counted), so a huge line never grows memory.
pub const LINE_CAP: usize = 64 * 1024;
/// The most of an entry kept as an event's `text`.
pub const EVENT_TEXT_CAP: usize = 4 * 1024;
/// Events kept per file (the newest, at most [`MAX_KEEP_PER_RULE`] of each rule, so a flood of
/// one rule does not push out the rare ones); all are tallied in `Evidence::events_by_rule`.
pub const MAX_KEEP_EVENTS: usize = 10_000;
/// Events kept per rule and file.
pub const MAX_KEEP_PER_RULE: usize = 1_000;
/// 5xx responses kept per read (the newest); all are counted in the stats.
pub const MAX_KEEP_ERRORS: usize = 20_000;

/// The event field that carries a rule's `responds` status (see [`crate::rules::Rule::responds`]).
pub const RESPONDS: &str = "responds";

/// The event field that carries a rule's `reason` cause id.
pub const REASON: &str = "reason";

/// One log file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The file.
    pub path: PathBuf,
    /// The kind of log; `None` detects it from the content.
    pub source: Option<LogSource>,
    /// For nginx access logs, the `log_format` string (None: `combined`, or detected).
    pub access_format: Option<String>,
}

/// The time window to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Entries before this time are not read (`None`: from the start).
    pub since: Option<jiff::Timestamp>,
    /// Entries after this time are not read (`None`: to the end).
    pub until: Option<jiff::Timestamp>,
}

impl Window {
    /// Whether `t` lies within the window (both ends inclusive).
    pub fn contains(&self, t: Timestamp) -> bool {
        !(self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u))
    }
}

/// Why a parser could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The access-log format could not be compiled.
    #[error("access log format: {0}")]
    Format(#[from] FormatError),
    /// The rule set could not be loaded.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// This build has no parser for the source.
    #[error("no parser for {0} logs")]
    Unsupported(LogSource),
}

/// What one entry of a log said.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A server-side entry a rule matched.
    Event(Event),
    /// An access-log line (every status: `status` tells 5xx or not).
    Response(Response),
    /// A well-formed entry no rule matched.
    Other,
    /// An entry that does not follow the format (counted and skipped).
    Bad,
}

/// The embedded rules (without their samples), compiled once per process.
pub fn builtin_rules() -> Result<Arc<RuleSet>, LogError> {
    static RULES: OnceLock<Result<Arc<RuleSet>, String>> = OnceLock::new();
    match RULES.get_or_init(|| {
        RuleSet::builtin_lean()
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }) {
        Ok(set) => Ok(set.clone()),
        Err(e) => Err(LogError::Rules(RuleError::Invalid {
            file: "(builtin)".into(),
            id: String::new(),
            message: e.clone(),
        })),
    }
}

/// The text rules match: the message, or `program: message` for a syslog-wrapped line (built in
/// `scratch`, no allocation once it has grown).
fn message<'a>(scratch: &'a mut Vec<u8>, entry: &'a [u8], head: &formats::Head) -> &'a [u8] {
    match &head.prog {
        Some(p) => {
            scratch.clear();
            scratch.extend_from_slice(&entry[p.clone()]);
            scratch.extend_from_slice(b": ");
            scratch.extend_from_slice(&entry[head.msg.clone()]);
            scratch
        }
        None => &entry[head.msg.clone()],
    }
}

/// A streaming parser of one log's entries, for the daemon (and the batch reader).
#[derive(Debug)]
pub struct LineParser {
    source: LogSource,
    rules: Arc<RuleSet>,
    tz: TimeZone,
    access: Option<AccessFormat>,
    access_cache: access::TimeCache,
    cache: time::StampCache,
    fields: formats::Fields,
    scratch: Vec<u8>,
    /// The automaton's scratch space for this parser's source.
    pub(crate) match_cache: crate::rules::MatchCache,
    /// The last captures of each rule (an outage repeats one message).
    pub(crate) capture_memo: crate::rules::CaptureMemo,
    /// The reference for year-less stamps; `None`: the clock at the time of each line (a
    /// long-running daemon crosses new year).
    now: Option<Timestamp>,
}

impl LineParser {
    /// A parser of `source` entries matched against `rules` (the caller's rule set: the
    /// embedded packs, the site's `rules.d`, or one file under test).
    pub fn new(
        source: LogSource,
        access_format: Option<&str>,
        tz: TimeZone,
        rules: Arc<RuleSet>,
    ) -> Result<Self, LogError> {
        let access = if source == LogSource::NginxAccess {
            Some(match access_format {
                Some(f) => AccessFormat::compile(f)?,
                None => AccessFormat::combined(),
            })
        } else {
            None
        };
        Ok(LineParser {
            source,
            rules,
            tz,
            access,
            access_cache: access::TimeCache::default(),
            cache: time::StampCache::default(),
            fields: formats::Fields::new(),
            scratch: Vec::new(),
            match_cache: Default::default(),
            capture_memo: Default::default(),
            now: None,
        })
    }

    /// The moment syslog stamps (which have no year) are read against: a stamp later than
    /// this (plus a day) belongs to the year before.
    pub fn set_now(&mut self, now: Timestamp) {
        self.now = Some(now);
    }

    /// The kind of log this parser reads.
    pub fn source(&self) -> LogSource {
        self.source
    }

    /// Parses one logical entry (continuation lines joined with `\n`); `line_no` is the entry's
    /// first physical line. Only the first [`LINE_CAP`] bytes are looked at.
    pub fn parse(&mut self, file: &Path, line_no: u64, entry: &[u8]) -> Parsed {
        let entry = trim_entry(entry);
        if let Some(fmt) = &self.access {
            return match access::parse_line(fmt, &mut self.access_cache, file, line_no, entry) {
                Some(r) => Parsed::Response(r),
                None => Parsed::Bad,
            };
        }
        match self.classify(entry) {
            Class::Bad => Parsed::Bad,
            Class::Other => Parsed::Other,
            Class::Match { rule, time } => match self.build(file, line_no, entry, rule, time) {
                Some(ev) => Parsed::Event(ev),
                None => Parsed::Other,
            },
        }
    }

    /// Which rule (if any) an entry of a server-side log matches, and its time; no allocation.
    pub(crate) fn classify(&mut self, entry: &[u8]) -> Class {
        let entry = trim_entry(entry);
        let Some(head) = formats::head_for_match(self.source, entry, &mut self.fields) else {
            return Class::Bad;
        };
        let msg = message(&mut self.scratch, entry, &head);
        let Some(rule) = self
            .rules
            .match_index_with(self.source, msg, &mut self.match_cache)
        else {
            return Class::Other;
        };
        let time = stamp_time(&mut self.cache, &self.tz, self.now, entry, &head);
        Class::Match { rule, time }
    }

    /// The event of an entry that `classify` matched to `rule`.
    pub(crate) fn build(
        &mut self,
        file: &Path,
        line_no: u64,
        entry: &[u8],
        rule: usize,
        time: Option<Timestamp>,
    ) -> Option<Event> {
        let entry = trim_entry(entry);
        let head = formats::head(self.source, entry, &mut self.fields)?;
        let msg = message(&mut self.scratch, entry, &head);
        let rules = Arc::clone(&self.rules);
        let (rule, captures) = rules.captures_with(rule, msg, &mut self.capture_memo)?;
        if let Some((a, b)) = head.tail {
            formats::nginx_tail(entry, a, b, &mut self.fields);
        }
        // Checked once: a field of a valid entry cut at character boundaries is copied as is.
        let valid = std::str::from_utf8(entry).ok();
        let text_of = |r: &std::ops::Range<usize>| match valid {
            Some(s) if s.is_char_boundary(r.start) && s.is_char_boundary(r.end) => {
                s[r.clone()].to_string()
            }
            _ => String::from_utf8_lossy(&entry[r.clone()]).into_owned(),
        };
        // Sized once: the parser's fields, the captures, and the three added below.
        let count = self.fields.len() + captures.len() + 3;
        let text: usize = self
            .fields
            .iter()
            .map(|(name, r)| name.len() + r.len())
            .chain(
                captures
                    .iter()
                    .map(|(name, value)| name.len() + value.len()),
            )
            .sum();
        let mut fields = FieldMap::with_capacity(count, text + 64);
        for (name, r) in &self.fields {
            fields.insert(name, text_of(r));
        }
        for (name, value) in captures {
            fields.insert(name, value);
        }
        wordpress_component(&mut fields);
        if let Some(status) = rule.responds {
            fields.insert(RESPONDS, status.to_string());
        }
        if let Some(reason) = rule.reason {
            fields.insert(REASON, reason.id());
        }
        let text = match valid {
            Some(s) if s.len() <= EVENT_TEXT_CAP => s.to_string(),
            _ => capped_text(entry, EVENT_TEXT_CAP),
        };
        Some(Event {
            source: self.source,
            file: file.to_path_buf(),
            line: line_no,
            time,
            rule: rule.id.clone(),
            event: rule.event.clone(),
            cause: rule.cause,
            severity: rule.severity,
            text,
            fields,
        })
    }

    /// A parser that only reads time stamps (no rules): for the window bisection. `access`:
    /// the access log's compiled format.
    pub(crate) fn stamper(
        source: LogSource,
        access: Option<&AccessFormat>,
        tz: TimeZone,
        now: Timestamp,
    ) -> Self {
        LineParser {
            source,
            rules: Arc::new(RuleSet::empty()),
            tz,
            access: access.cloned(),
            access_cache: access::TimeCache::default(),
            cache: time::StampCache::default(),
            fields: formats::Fields::new(),
            scratch: Vec::new(),
            match_cache: Default::default(),
            capture_memo: Default::default(),
            now: Some(now),
        }
    }

    /// The time stamp of an entry (its first line is enough), as the full parse reads it; no
    /// rule runs.
    pub(crate) fn stamp(&mut self, entry: &[u8]) -> Option<Timestamp> {
        let entry = trim_entry(entry);
        if let Some(fmt) = &self.access {
            let (a, b, kind) = fmt.counted(entry)?.time?;
            return self.access_cache.get(entry.get(a..b)?, kind);
        }
        let head = formats::head(self.source, entry, &mut self.fields)?;
        stamp_time(&mut self.cache, &self.tz, self.now, entry, &head)
    }

    /// The rule set this parser uses.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }
}

/// What `classify` found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Class {
    Bad,
    Other,
    Match {
        rule: usize,
        time: Option<Timestamp>,
    },
}

fn trim_entry(entry: &[u8]) -> &[u8] {
    let entry = &entry[..entry.len().min(LINE_CAP)];
    entry.strip_suffix(b"\n").unwrap_or(entry)
}

/// The entry as text, at most `cap` bytes (invalid UTF-8 becomes U+FFFD, which is longer than
/// the byte it replaces: cut after converting, on a character boundary).
fn capped_text(entry: &[u8], cap: usize) -> String {
    let mut text = String::from_utf8_lossy(&entry[..entry.len().min(cap)]).into_owned();
    if text.len() > cap {
        let mut i = cap;
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        text.truncate(i);
    }
    text
}

fn stamp_time(
    cache: &mut time::StampCache,
    tz: &TimeZone,
    now: Option<Timestamp>,
    entry: &[u8],
    head: &formats::Head,
) -> Option<Timestamp> {
    use time::Stamp;
    let raw = entry.get(head.stamp_raw.clone()).unwrap_or_default();
    match head.stamp {
        Stamp::None => None,
        Stamp::Offset(c, off) => c.with_offset(off),
        Stamp::Local(c) => cache.get_or(raw, || c.in_zone(tz)),
        Stamp::NginxLocal => cache.nginx_local(raw, tz),
        Stamp::Named(c, a, b) => cache.get_or(raw, || {
            let name = std::str::from_utf8(entry.get(a..b)?).ok()?;
            if name == "UTC" || name == "GMT" {
                return c.with_offset(0);
            }
            match TimeZone::get(name) {
                Ok(zone) => c.in_zone(&zone),
                Err(_) => c.in_zone(tz),
            }
        }),
        Stamp::NoYear(c) => cache.get_or(raw, || {
            let now = now.unwrap_or_else(Timestamp::now);
            let year = now.to_zoned_datetime(tz.clone()).year();
            let this = time::Civil {
                y: year.into(),
                ..c
            }
            .in_zone(tz)?;
            if this.as_second() > now.as_second() + 2 * 86_400 {
                time::Civil {
                    y: i32::from(year) - 1,
                    ..c
                }
                .in_zone(tz)
            } else {
                Some(this)
            }
        }),
    }
}

/// Names the WordPress plugin or theme from a path field (`file`, `script`, `trace`).
fn wordpress_component(fields: &mut FieldMap) {
    if fields.contains_key("plugin") || fields.contains_key("theme") {
        return;
    }
    for key in ["file", "script", "trace"] {
        let Some(path) = fields.get(key) else {
            continue;
        };
        let found = [
            ("/wp-content/plugins/", "plugin"),
            ("/wp-content/mu-plugins/", "plugin"),
            ("/wp-content/themes/", "theme"),
        ]
        .iter()
        .filter_map(|(marker, kind)| {
            let at = memchr::memmem::find(path.as_bytes(), marker.as_bytes())?;
            let rest = &path[at + marker.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| *c != '/' && *c != ':' && !c.is_whitespace())
                .collect();
            (!name.is_empty()).then_some((at, *kind, name))
        })
        .min_by_key(|(at, _, _)| *at);
        if let Some((_, kind, name)) = found {
            fields.insert(kind, name);
            return;
        }
    }
}

/// Detects a log's kind from its first lines: the source whose header parses on the most
/// lines (at least one).
pub fn detect_source(sample: &[u8]) -> Option<LogSource> {
    const ORDER: [LogSource; 8] = [
        LogSource::NginxAccess,
        LogSource::NginxError,
        LogSource::PhpFpm,
        LogSource::PhpFpmSlow,
        LogSource::Php,
        LogSource::MysqlError,
        LogSource::ApacheError,
        LogSource::Kernel,
    ];
    let mut counts = [0usize; 8];
    let lines = sample
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && *l != b"\r")
        .take(64);
    for line in lines {
        let line = &line[..line.len().min(LINE_CAP)];
        for (i, source) in ORDER.iter().enumerate() {
            if formats::looks_like(*source, line) {
                counts[i] += 1;
            }
        }
    }
    let (best, n) = counts
        .iter()
        .enumerate()
        .fold((0, 0), |acc, (i, &n)| if n > acc.1 { (i, n) } else { acc });
    (n > 0).then_some(ORDER[best])
}

/// Calls `f(first_line_no, entry)` for each entry of `reader`: lines capped at [`LINE_CAP`],
/// continuation lines of `source` joined to their entry with `\n` (each line on its own when
/// `source` is `None`). Memory stays bounded by the cap whatever the line lengths.
pub fn for_each_entry<R: BufRead>(
    reader: R,
    source: Option<LogSource>,
    mut f: impl FnMut(u64, &[u8]),
) -> std::io::Result<()> {
    let mut entry: Vec<u8> = Vec::new();
    let mut entry_line = 0u64;
    let mut have = false;
    read::for_each_line(reader, |line_no, line| {
        let cont = match source {
            Some(s) => have && !starts_entry(s, line),
            None => false,
        };
        if cont {
            if entry.len() < LINE_CAP {
                entry.push(b'\n');
                let room = LINE_CAP - entry.len();
                entry.extend_from_slice(&line[..line.len().min(room)]);
            }
        } else {
            if have {
                f(entry_line, &entry);
            }
            entry.clear();
            if line.is_empty() {
                have = false;
                return;
            }
            entry.extend_from_slice(line);
            entry_line = line_no;
            have = true;
        }
    })?;
    if have {
        f(entry_line, &entry);
    }
    Ok(())
}

/// Reads every file within the window through the host: also the rotated siblings
/// (`access.log.1`, `access.log.2.gz`, `access.log-20261123.gz`) whose modification time
/// reaches into the window (all of them, up to 64, when the window has no start). The format
/// of a file whose `source` is `None` is detected from its content. Every file gets a
/// [`crate::event::FileSummary`]; errors land there, never in a panic.
pub fn read_evidence(
    host: &dyn Host,
    files: &[LogFile],
    window: &Window,
    tz: &jiff::tz::TimeZone,
    rules: &Arc<RuleSet>,
) -> Evidence {
    read::read_files(host, files, window, tz, rules, true)
}

/// The moment a file's year-less stamps (syslog, kernel) are read against: when the file was
/// last written (a rotated log, a copy of last year's log), not now; now when that is unknown.
fn year_anchor(host: &dyn Host, path: &Path) -> Timestamp {
    let now = host.now();
    host.metadata(path)
        .ok()
        .and_then(|m| Timestamp::from_second(m.mtime).ok())
        .filter(|t| *t < now)
        .unwrap_or(now)
}

/// `origin-agent scan FILE…`: the given live files only (no rotated siblings), each file's
/// format detected from its content.
pub fn scan_paths(
    paths: &[PathBuf],
    window: &Window,
    tz: &jiff::tz::TimeZone,
    rules: &Arc<RuleSet>,
) -> Evidence {
    let host = origin_host::live::LiveHost;
    let mut files: Vec<LogFile> = Vec::new();
    for p in paths {
        // A file whose lines mix sources (a container's output) is read once per source.
        let sources = envelope::split_file(&host, p);
        if sources.is_empty() {
            files.push(LogFile {
                path: p.clone(),
                source: None,
                access_format: None,
            });
        }
        for source in sources {
            files.push(LogFile {
                path: p.clone(),
                source: Some(source),
                access_format: None,
            });
        }
    }
    read::read_files(&host, &files, window, tz, rules, false)
}

/// For tests of a fast reader against a reference one: `base` cut at every length (`base`
/// itself included), then with each of `bytes` planted at each offset in `at`.
#[cfg(test)]
pub(crate) fn mutants(base: &[u8], at: std::ops::Range<usize>, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..=base.len()).map(|n| base[..n].to_vec()).collect();
    for i in at {
        for &b in bytes {
            let mut v = base.to_vec();
            v[i] = b;
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parser(source: LogSource) -> LineParser {
        let mut p = LineParser::new(source, None, TimeZone::UTC, builtin_rules().unwrap()).unwrap();
        p.set_now("2026-11-24T12:00:00Z".parse().unwrap());
        p
    }

    #[test]
    fn nginx_event_has_time_in_the_given_zone_and_fields() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let mut p =
            LineParser::new(LogSource::NginxError, None, tz, builtin_rules().unwrap()).unwrap();
        let line = br#"2026/11/24 07:45:17 [crit] 23673#23673: *1 connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: example.com, request: "GET /index.php HTTP/1.1", upstream: "fastcgi://unix:/run/php/php8.2-fpm.sock:", host: "127.0.0.1:18080""#;
        let Parsed::Event(ev) = p.parse(Path::new("/e.log"), 7, line) else {
            panic!()
        };
        assert_eq!(ev.time.unwrap().to_string(), "2026-11-24T06:45:17Z");
        assert_eq!(ev.cause, crate::cause::CauseId::UpstreamDown);
        assert_eq!(ev.field("errno"), Some("2"));
        assert_eq!(ev.field("socket"), Some("/run/php/php8.2-fpm.sock"));
        assert_eq!(ev.line, 7);
    }

    #[test]
    fn year_less_stamps_are_dated_from_when_the_file_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kern.log");
        std::fs::write(
            &path,
            "Dec 30 23:59:00 web kernel: Out of memory: Killed process 12 (php-fpm8.2) total-vm:1kB\n",
        )
        .unwrap();
        let written: std::time::SystemTime =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_704_189_600); // 2024-01-02 10:00 UTC
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(written)
            .unwrap();
        let ev = scan_paths(
            &[path],
            &Window::default(),
            &TimeZone::UTC,
            &builtin_rules().unwrap(),
        );
        assert_eq!(
            ev.events[0].time.unwrap().to_string(),
            "2023-12-30T23:59:00Z"
        );
    }

    #[test]
    fn syslog_year_is_inferred_from_now() {
        let mut p = parser(LogSource::Kernel);
        let Parsed::Event(ev) = p.parse(
            Path::new("k"),
            1,
            b"Dec 31 23:59:00 web kernel: Out of memory: Killed process 1 (php-fpm8.2) total-vm:1kB",
        ) else {
            panic!()
        };
        assert_eq!(ev.time.unwrap().to_string(), "2025-12-31T23:59:00Z");
        let Parsed::Event(ev) = p.parse(
            Path::new("k"),
            1,
            b"Nov 24 07:00:00 web kernel: Out of memory: Killed process 1 (php-fpm8.2) total-vm:1kB",
        ) else {
            panic!()
        };
        assert_eq!(ev.time.unwrap().to_string(), "2026-11-24T07:00:00Z");
        assert_eq!(ev.field("victim"), Some("php-fpm8.2"));
    }

    #[test]
    fn php_log_zone_name_is_used() {
        let mut p = parser(LogSource::Php);
        let Parsed::Event(ev) = p.parse(Path::new("p"), 1, b"[24-Nov-2026 08:45:38 Europe/Berlin] PHP Fatal error:  Uncaught Error: x in /var/www/wp-content/themes/acme/functions.php:3") else { panic!() };
        assert_eq!(ev.time.unwrap().to_string(), "2026-11-24T07:45:38Z");
        assert_eq!(ev.field("theme"), Some("acme"));
    }

    #[test]
    fn access_lines_are_responses_never_events() {
        let mut p = parser(LogSource::NginxAccess);
        let line = br#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET /connect()%20to%20unix:/x%20failed%20(2:%20No%20such%20file%20or%20directory) HTTP/1.1" 200 5 "-" "connect() to unix:/run/php.sock failed (2: No such file or directory) while connecting to upstream""#;
        let Parsed::Response(r) = p.parse(Path::new("a"), 1, line) else {
            panic!()
        };
        assert_eq!(r.status, 200);
        assert_eq!(
            p.parse(Path::new("a"), 2, b"not an access line"),
            Parsed::Bad
        );
    }

    #[test]
    fn event_text_stays_under_its_cap_with_invalid_utf8() {
        // Found by the fuzzer: each invalid byte becomes a 3-byte U+FFFD.
        let mut p = parser(LogSource::Php);
        let mut line =
            b"[14-Feb-2017 13:07:16 UTC] PHP Fatal error:  x in /a.php on line 1 ".to_vec();
        line.extend(std::iter::repeat_n(0xffu8, 3 * EVENT_TEXT_CAP));
        let Parsed::Event(ev) = p.parse(Path::new("p"), 1, &line) else {
            panic!()
        };
        assert!(ev.text.len() <= EVENT_TEXT_CAP);
        assert!(ev.text.ends_with('\u{fffd}'));
    }

    #[test]
    fn invalid_utf8_inside_a_matched_line_still_matches() {
        let mut p = parser(LogSource::NginxError);
        let line = b"2026/11/24 07:45:17 [crit] 1#1: *1 connect() to unix:/run/php/\xffbad.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: s, request: \"GET /\xfe HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/\xffbad.sock:\", host: \"h\"";
        let Parsed::Event(ev) = p.parse(Path::new("e"), 1, line) else {
            panic!()
        };
        assert_eq!(ev.rule, "nginx.connect-enoent");
        assert_eq!(ev.field("socket"), Some("/run/php/\u{fffd}bad.sock"));
    }

    #[test]
    fn detection() {
        let cases: [(&str, LogSource); 7] = [
            (r#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET / HTTP/1.1" 200 5 "-" "x""#, LogSource::NginxAccess),
            ("2026/11/24 07:45:17 [error] 1#1: *1 x\nStack trace:\n#0 {main}", LogSource::NginxError),
            ("[24-Nov-2026 07:45:35] NOTICE: fpm is running, pid 24124", LogSource::PhpFpm),
            ("\n[24-Nov-2026 07:45:46]  [pool www] pid 24248\nscript_filename = /x\n[0x1] f() /x:1\n", LogSource::PhpFpmSlow),
            ("[14-Feb-2017 13:07:16 UTC] PHP Fatal error: x", LogSource::Php),
            ("2026-11-24  7:47:02 0 [Note] mariadbd: ready for connections.", LogSource::MysqlError),
            ("Nov 24 07:00:00 web kernel: x\nNov 24 07:00:01 web systemd[1]: y", LogSource::Kernel),
        ];
        for (text, want) in cases {
            assert_eq!(detect_source(text.as_bytes()), Some(want), "{text}");
        }
        assert_eq!(detect_source(b"\x00\x01\xff binary"), None);
        assert_eq!(detect_source(b""), None);
    }

    #[test]
    fn entries_join_continuations_and_cap_long_lines() {
        let mut text = Vec::new();
        text.extend_from_slice(b"2026/11/24 07:45:38 [error] 1#1: *26 FastCGI sent in stderr: \"PHP message: PHP Fatal error:  Uncaught Error: x() in /var/www/wp-content/plugins/acme-slider/slider.php:3\nStack trace:\n#0 {main}\n  thrown in /x.php on line 3\" while reading response header from upstream, client: 127.0.0.1, server: s, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/s:\", host: \"h\"\n");
        text.extend_from_slice(b"2026/11/24 07:45:39 [error] 1#1: *27 ");
        text.extend(std::iter::repeat_n(b'a', 3 * LINE_CAP));
        text.extend_from_slice(b"\n2026/11/24 07:45:40 [error] 1#1: *28 last\n");
        let mut seen = Vec::new();
        for_each_entry(&text[..], Some(LogSource::NginxError), |n, e| {
            seen.push((n, e.len(), e.to_vec()))
        })
        .unwrap();
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 5, 6]);
        assert!(seen[1].1 <= LINE_CAP);
        let mut p = parser(LogSource::NginxError);
        let Parsed::Event(ev) = p.parse(Path::new("e"), 1, &seen[0].2) else {
            panic!()
        };
        assert_eq!(ev.rule, "nginx.php-fatal-error");
        assert_eq!(ev.field("plugin"), Some("acme-slider"));
        assert_eq!(ev.field("request"), Some("GET / HTTP/1.1"));
    }
}
