//! What the logs said, as typed values: [`Event`]s (a server-side line that a rule matched, tied to
//! a cause) and [`Response`]s (access-log lines with a 5xx status), gathered with per-file and
//! per-status counts into [`Evidence`]. The log readers produce it; the diagnosis consumes it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cause::CauseId;
pub use crate::fields::FieldMap;

/// Which kind of log a line came from. The names are the config keys of `logs:` and the `source`
/// label of `origin_agent_log_lines_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// nginx's access log (and Apache's, in a format it names).
    NginxAccess,
    /// nginx's error log.
    NginxError,
    /// The PHP-FPM master's log.
    PhpFpm,
    /// A pool's slow log (`request_slowlog_timeout` traces).
    PhpFpmSlow,
    /// PHP's own error log (`error_log` of php.ini or a pool).
    Php,
    /// MySQL/MariaDB's error log.
    MysqlError,
    /// The kernel's log (OOM kills, segfaults).
    Kernel,
    /// Apache's error log.
    ApacheError,
}

impl LogSource {
    /// Every source, in a stable order.
    pub const ALL: &'static [LogSource] = &[
        LogSource::NginxAccess,
        LogSource::NginxError,
        LogSource::PhpFpm,
        LogSource::PhpFpmSlow,
        LogSource::Php,
        LogSource::MysqlError,
        LogSource::Kernel,
        LogSource::ApacheError,
    ];

    /// The config key and metric label (`nginx_error`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::NginxAccess => "nginx_access",
            LogSource::NginxError => "nginx_error",
            LogSource::PhpFpm => "php_fpm",
            LogSource::PhpFpmSlow => "php_fpm_slow",
            LogSource::Php => "php",
            LogSource::MysqlError => "mysql_error",
            LogSource::Kernel => "kernel",
            LogSource::ApacheError => "apache_error",
        }
    }

    /// The source with this config key, if any.
    pub fn parse(name: &str) -> Option<LogSource> {
        LogSource::ALL.iter().copied().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad an event is on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, not a failure on its own.
    Info,
    /// Something degraded.
    Warning,
    /// A failed request or operation.
    Error,
    /// The service itself failed (crash, out of memory).
    Critical,
}

/// A server-side log entry that a rule matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The log it came from.
    pub source: LogSource,
    /// The file it was read from.
    pub file: PathBuf,
    /// 1-based number of the entry's first physical line in `file`.
    pub line: u64,
    /// When it happened (each format's own meaning, in UTC), if the line carries a time.
    pub time: Option<jiff::Timestamp>,
    /// The rule's id (`nginx.connect-enoent`).
    pub rule: String,
    /// The event's name (`upstream-socket-missing`).
    pub event: String,
    /// The catalog cause the rule supports.
    pub cause: CauseId,
    /// How bad the rule says it is.
    pub severity: Severity,
    /// The entry as written (continuation lines joined with `\n`), capped in length.
    pub text: String,
    /// Named captures and parser fields: `errno`, `upstream`, `request`, `client`, `server`,
    /// `host`, `connection`, `pid`, `pool`, `child`, `signal`, `plugin`, `theme`, `script`, ...
    #[serde(default, skip_serializing_if = "FieldMap::is_empty")]
    pub fields: FieldMap,
}

impl Event {
    /// A named capture or parser field, if present.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name)
    }
}

/// An access-log line whose status is 5xx (or 499, the client giving up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The access log it was read from.
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: u64,
    /// When the request *finished* (the access log stamps the end of the request).
    pub time: Option<jiff::Timestamp>,
    /// The HTTP status.
    pub status: u16,
    /// The request line (`GET /x HTTP/1.1`), as the visitor sent it: never matched by rules.
    pub request: String,
    /// The client address as logged (the CDN edge when real-IP is not restored).
    pub client: String,
    /// `$upstream_addr`, when the format logs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_addr: Option<String>,
    /// `$upstream_status`, when the format logs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<String>,
    /// `$request_time` in seconds, when the format logs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_time: Option<f64>,
    /// `$body_bytes_sent`, when the format logs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<u64>,
    /// `$http_cf_connecting_ip` / `$http_x_forwarded_for` when the format logs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
}

/// Counts over every access-log line read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseStats {
    /// Access-log lines read within the window.
    pub total: u64,
    /// Lines per HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Responses per minute (Unix seconds of the minute's start): total and 5xx.
    pub per_minute: BTreeMap<i64, MinuteCount>,
    /// How often each client address was seen (capped to the most frequent few thousand), for
    /// telling which CDN fronts the origin.
    pub clients: BTreeMap<String, u64>,
}

/// Responses within one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCount {
    /// Every response of the minute.
    pub total: u64,
    /// The 5xx responses of the minute.
    pub errors: u64,
}

/// What was learnt from one file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileSummary {
    /// The file read.
    pub path: PathBuf,
    /// What kind of log it is, when known.
    pub source: Option<LogSource>,
    /// The detected or configured format (`combined`, `main`, `mariadb`, ...).
    pub format: String,
    /// Lines read.
    pub lines: u64,
    /// Events that rules matched in it.
    pub events: u64,
    /// Lines that did not parse (counted and skipped, never fatal).
    pub bad_lines: u64,
    /// Lines outside the time window.
    pub outside_window: u64,
    /// Lines longer than the line cap (their excess was dropped).
    #[serde(default)]
    pub truncated_lines: u64,
    /// Bytes at the start of a time-ordered file skipped as before the window (found by
    /// bisection; `lines` and `outside_window` count the lines read).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_bytes: u64,
    /// Why the file could not be read, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How often one rule matched, and when first and last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTally {
    /// How many events.
    pub count: u64,
    /// The earliest event's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<jiff::Timestamp>,
    /// The latest event's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<jiff::Timestamp>,
}

impl RuleTally {
    /// Counts one event at `time`.
    pub fn add(&mut self, time: Option<jiff::Timestamp>) {
        self.count += 1;
        if let Some(t) = time {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }

    /// Folds another tally into this one.
    pub fn absorb(&mut self, other: &RuleTally) {
        self.count += other.count;
        for t in [other.first, other.last].into_iter().flatten() {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }
}

/// Everything the logs said within the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Server-side events that rules matched, capped at [`Evidence::MAX_EVENTS`].
    pub events: Vec<Event>,
    /// Counts over every access-log line.
    pub responses: ResponseStats,
    /// 5xx (and 499) responses, in file order, capped at [`Evidence::MAX_ERRORS`].
    pub errors: Vec<Response>,
    /// What was learnt from each file read.
    pub files: Vec<FileSummary>,
    /// Every event within the window, tallied by rule id (count, first and last time), including
    /// those not kept in `events` (the kept list is capped, newest first per rule).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events_by_rule: BTreeMap<String, RuleTally>,
    /// Events and 5xx responses counted but not kept in `events` / `errors` (the caps keep the
    /// newest).
    #[serde(default)]
    pub events_dropped: u64,
    /// 5xx responses counted but not kept in `errors`.
    #[serde(default)]
    pub errors_dropped: u64,
    /// The `fix:` text (with `${field}` placeholders) of every rule that matched, by rule id:
    /// the diagnosis shows it where it knows no more specific fix.
    #[serde(skip)]
    pub rule_fixes: BTreeMap<String, String>,
}

impl Evidence {
    /// The most 5xx responses kept in `errors`.
    pub const MAX_ERRORS: usize = 200_000;
    /// The most events kept in `events`.
    pub const MAX_EVENTS: usize = 200_000;

    /// Folds another file's evidence into this one.
    pub fn merge(&mut self, other: Evidence) {
        let room = Self::MAX_EVENTS.saturating_sub(self.events.len());
        self.events_dropped +=
            other.events_dropped + (other.events.len().saturating_sub(room)) as u64;
        self.events.extend(other.events.into_iter().take(room));
        let room = Self::MAX_ERRORS.saturating_sub(self.errors.len());
        self.errors_dropped +=
            other.errors_dropped + (other.errors.len().saturating_sub(room)) as u64;
        self.errors.extend(other.errors.into_iter().take(room));
        for (rule, tally) in other.events_by_rule {
            self.events_by_rule.entry(rule).or_default().absorb(&tally);
        }
        self.rule_fixes.extend(other.rule_fixes);
        self.files.extend(other.files);
        let stats = &mut self.responses;
        stats.total += other.responses.total;
        for (status, n) in other.responses.by_status {
            *stats.by_status.entry(status).or_default() += n;
        }
        for (minute, count) in other.responses.per_minute {
            let entry = stats.per_minute.entry(minute).or_default();
            entry.total += count.total;
            entry.errors += count.errors;
        }
        for (client, n) in other.responses.clients {
            *stats.clients.entry(client).or_default() += n;
        }
    }
}
