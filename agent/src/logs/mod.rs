//! Log evidence: reads nginx, PHP-FPM, PHP, MySQL/MariaDB and kernel logs through the host seam
//! and turns them into [`Evidence`] (typed, timestamped events and 5xx responses).

use std::path::PathBuf;

use crate::event::{Evidence, LogSource};
use crate::host::Host;

/// One log file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    /// The kind of log; `None` detects it from the content.
    pub source: Option<LogSource>,
    /// For nginx access logs, the `log_format` string (None: `combined`, or detected).
    pub access_format: Option<String>,
}

/// The time window to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub since: Option<jiff::Timestamp>,
    pub until: Option<jiff::Timestamp>,
}

/// Reads every file within the window.
pub fn read_evidence(
    _host: &dyn Host,
    _files: &[LogFile],
    _window: &Window,
    _tz: &jiff::tz::TimeZone,
) -> Evidence {
    Evidence::default()
}

/// Reads the given files, each format detected.
pub fn scan_paths(_paths: &[PathBuf], _window: &Window, _tz: &jiff::tz::TimeZone) -> Evidence {
    Evidence::default()
}
