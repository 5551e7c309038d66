//! The host seam: every read of a file, of /proc or /sys, every directory listing, every external
//! command and every connectivity probe goes through [`Host`].
//!
//! Three implementations live here:
//! - [`live::LiveHost`] reads the machine the agent runs on;
//! - [`snapshot::SnapshotHost`] replays a snapshot (a directory or a `.tar.gz`) written by
//!   `origin-agent collect`, so a support engineer can audit a customer's host offline and every
//!   probe can be tested on fixtures;
//! - [`recorder::Recorder`] wraps another host and records every answer it gives, which is how
//!   `collect` captures exactly what the audit reads.
//!
//! Parsers never touch the file system themselves: they take the bytes a `Host` returned.

#![warn(missing_docs)]

pub mod client;
pub mod deadline;
pub mod exchange;
pub mod fixture;
pub mod live;
pub mod program;
pub mod recorder;
pub mod redact;
pub mod rewrite;
pub mod snapshot;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use exchange::{Exchange, ExchangeError, Reply};

/// Why a host operation could not answer. Probes turn these into `skip` checks with the reason.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "error", rename_all = "kebab-case")]
pub enum HostError {
    /// The path does not exist.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The agent may not read the path.
    #[error("{path}: permission denied")]
    PermissionDenied {
        /// The path asked for.
        path: String,
    },
    /// Any other I/O failure.
    #[error("{path}: {message}")]
    Io {
        /// The path asked for.
        path: String,
        /// The OS's description of the failure.
        message: String,
    },
    /// The program is not installed (not on the search path, or not executable).
    #[error("`{command}` is not installed")]
    CommandMissing {
        /// The program named.
        command: String,
    },
    /// The command ran past its deadline and was killed.
    #[error("`{command}` did not finish within {seconds} s and was stopped")]
    Timeout {
        /// The command line, as [`Command::key`] gives it.
        command: String,
        /// The deadline it had.
        seconds: u64,
    },
    /// A snapshot that never recorded this question.
    #[error("{what}: not captured in this snapshot")]
    NotInSnapshot {
        /// What was asked (a path, a command line, an endpoint).
        what: String,
    },
    /// A write asked of a host that only replays (a snapshot).
    #[error("{path}: this host is read-only (a snapshot is never written)")]
    ReadOnly {
        /// The path that would have been written.
        path: String,
    },
    /// A FIFO, device or socket where a regular file was expected: never opened for reading.
    #[error("{path} is not a regular file (a FIFO or device where a file should be): not read")]
    NotAFile {
        /// The path asked for.
        path: String,
    },
}

impl HostError {
    pub(crate) fn from_io(path: &Path, err: &std::io::Error) -> Self {
        let path = path.display().to_string();
        match err.kind() {
            std::io::ErrorKind::NotFound => HostError::NotFound { path },
            std::io::ErrorKind::PermissionDenied => HostError::PermissionDenied { path },
            _ => HostError::Io {
                path,
                message: err.to_string(),
            },
        }
    }

    /// Whether the path simply does not exist (often an answer, not a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, HostError::NotFound { .. })
    }
}

/// The kind of a directory entry, as `lstat`'s file type says (symlinks are followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A unix-domain socket.
    Socket,
    /// Anything else (FIFO, device).
    Other,
}

/// What `stat(2)` says of a path (symlinks followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// What the path is.
    pub kind: FileKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Device number of the file system holding it (with `ino`, identifies a file across renames).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

/// A command to run: program, arguments and how long it may take.
#[derive(Debug, Clone)]
pub struct Command {
    /// The program to run (started directly, never through a shell).
    pub program: String,
    /// Its arguments, each passed as is (no shell).
    pub args: Vec<String>,
    /// How long it may run before it is killed.
    pub timeout: Duration,
    /// Bytes written to the command's standard input (`None`: stdin is `/dev/null`). The live
    /// host feeds them; the recorder and snapshots ignore them (a command's key is its argv).
    pub stdin: Option<Vec<u8>>,
}

impl Command {
    /// A command with a 10 s deadline and no standard input.
    pub fn new(program: &str, args: &[&str]) -> Self {
        Command {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            timeout: Duration::from_secs(10),
            stdin: None,
        }
    }

    /// Feeds `bytes` to the command's standard input.
    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// Sets the deadline after which the command is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key a snapshot stores the command under: the program and arguments, space-joined.
    pub fn key(&self) -> String {
        let mut key = self.program.clone();
        for arg in &self.args {
            key.push(' ');
            key.push_str(arg);
        }
        key
    }
}

/// What a finished command left behind. A non-zero exit is an output, not an error: the caller
/// decides what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The exit code, or `None` when a signal ended it.
    pub status: Option<i32>,
    /// Its standard output, bytes as written (capped by the host).
    #[serde(skip)]
    pub stdout: Vec<u8>,
    /// Its standard error, lossy UTF-8 (capped by the host).
    pub stderr: String,
}

impl CommandOutput {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Something to connect to, to learn whether it accepts connections *now*.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// A unix-domain socket path.
    Unix(PathBuf),
    /// `host:port`; the host may be a name, an IPv4 address or a bracketed IPv6 address.
    Tcp(String),
}

impl Endpoint {
    /// What a snapshot stores the connection's outcome under (`unix:PATH` or `tcp:ADDR`).
    pub fn key(&self) -> String {
        match self {
            Endpoint::Unix(path) => format!("unix:{}", path.display()),
            Endpoint::Tcp(addr) => format!("tcp:{addr}"),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => f.write_str(addr),
        }
    }
}

/// The outcome of a connection attempt. `errno` is the raw OS error number (match numbers, not
/// texts: libcs word them differently).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectOutcome {
    /// Whether the connection was accepted.
    pub connected: bool,
    /// The OS error of the failed connect (`ECONNREFUSED`, `EAGAIN`, ...), if any.
    pub errno: Option<i32>,
    /// The outcome in words (`connected`, or the OS's error text).
    pub message: String,
    /// How long the attempt took.
    pub millis: u64,
}

/// Space and inodes of the file system holding a path (`statvfs(3)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsStats {
    /// Size of the file system.
    pub total_bytes: u64,
    /// Bytes available to an unprivileged writer.
    pub avail_bytes: u64,
    /// Inodes in total.
    pub total_inodes: u64,
    /// Inodes free.
    pub free_inodes: u64,
}

/// The one interface to the machine under audit.
pub trait Host: Send + Sync {
    /// A whole (small) file: configs, /proc and /sys files. Reads at most `MAX_READ` bytes.
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError>;
    /// A streaming reader for large files (logs). The bytes are raw (a `.gz` stays compressed).
    fn open(&self, path: &Path) -> Result<Box<dyn Read + Send>, HostError>;
    /// The last `max` bytes of a file (more or less: the file may grow), for logs of any size.
    /// The live host seeks; the default streams the whole file and the caller keeps the tail.
    fn open_tail(&self, path: &Path, _max: u64) -> Result<Box<dyn Read + Send>, HostError> {
        self.open(path)
    }
    /// The names in a directory, sorted.
    fn read_dir(&self, path: &Path) -> Result<Vec<String>, HostError>;
    /// `stat(2)`, following symlinks.
    fn metadata(&self, path: &Path) -> Result<FileMeta, HostError>;
    /// Where a symlink points (`/proc/PID/exe`, `/etc/localtime`).
    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError>;
    /// Runs a command, bounded by its timeout.
    fn run(&self, command: &Command) -> Result<CommandOutput, HostError>;
    /// Tries to connect, bounded by `timeout`.
    fn connect(&self, endpoint: &Endpoint, timeout: Duration) -> ConnectOutcome;
    /// One bounded request to a local service (HTTP, FastCGI, MySQL); see [`exchange`].
    /// Hosts that cannot talk to services (fixtures, snapshots that never saw it) say so.
    fn exchange(&self, request: &Exchange) -> Result<Reply, ExchangeError> {
        Err(ExchangeError::not_captured(request))
    }
    /// `statvfs(3)` of the file system holding `path`.
    fn statvfs(&self, path: &Path) -> Result<FsStats, HostError>;
    /// The host's current time (a snapshot's capture time).
    fn now(&self) -> jiff::Timestamp;
    /// Waits between two samples of a counter (a snapshot returns at once).
    fn pause(&self, duration: Duration);
    /// True when this is the live machine (some checks only make sense there).
    fn is_live(&self) -> bool;
    /// A reader of `path` from byte `offset` on, for hosts that can seek (the live one); `None`:
    /// this host reads files from their start only (snapshots, fixtures, the recorder, which
    /// captures whole tails).
    fn open_at(
        &self,
        _path: &Path,
        _offset: u64,
    ) -> Option<Result<Box<dyn Read + Send>, HostError>> {
        None
    }

    /// The write side, for the changes `whitelist` makes (firewall-manager files, the nginx
    /// include, the fail2ban drop-in). Replaces `path`'s content atomically: a new temporary file
    /// beside it (never following a symlink), fsync, rename over `path` (a symlink at `path` is
    /// replaced, not followed). An existing file keeps its permission bits; a new one is 0644.
    /// A snapshot (the default) refuses.
    fn write_atomic(&self, path: &Path, _bytes: &[u8]) -> Result<(), HostError> {
        Err(HostError::ReadOnly {
            path: path.display().to_string(),
        })
    }
    /// Removes a file (a symlink itself, never its target).
    fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        Err(HostError::ReadOnly {
            path: path.display().to_string(),
        })
    }
    /// Creates a directory and its parents (0755), like `mkdir -p`.
    fn create_dir_all(&self, path: &Path) -> Result<(), HostError> {
        Err(HostError::ReadOnly {
            path: path.display().to_string(),
        })
    }
    /// The host's name (a snapshot's recorded name).
    fn hostname(&self) -> String {
        let read = |p: &str| {
            self.read(Path::new(p))
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        };
        read("/proc/sys/kernel/hostname")
            .or_else(|_| read("/etc/hostname"))
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_string())
    }
}

/// The most a `Host::read` returns: configs and /proc files are small, and a huge "config" must
/// not take the agent's memory.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

/// Convenience helpers over any host.
pub trait HostExt: Host {
    /// A file as text (lossy UTF-8).
    fn read_text(&self, path: &Path) -> Result<String, HostError> {
        self.read(path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Expands a glob pattern (`*`, `?`, `[...]` in any component) against this host's files.
    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        glob_on(self, pattern)
    }

    /// The host's time zone, from `/etc/localtime` (TZif) read through the seam, else UTC.
    /// nginx error logs and PHP-FPM logs carry no zone: this is the zone they are written in.
    fn time_zone(&self) -> jiff::tz::TimeZone {
        let name = self
            .read_link(Path::new("/etc/localtime"))
            .ok()
            .and_then(|target| {
                let s = target.to_string_lossy().into_owned();
                s.split_once("zoneinfo/").map(|(_, name)| name.to_string())
            })
            .unwrap_or_else(|| "localtime".to_string());
        match self.read(Path::new("/etc/localtime")) {
            Ok(bytes) => jiff::tz::TimeZone::tzif(&name, &bytes).unwrap_or(jiff::tz::TimeZone::UTC),
            Err(_) => jiff::tz::TimeZone::UTC,
        }
    }
}

impl<H: Host + ?Sized> HostExt for H {}

fn glob_on<H: Host + ?Sized>(host: &H, pattern: &str) -> Vec<PathBuf> {
    let mut current: Vec<PathBuf> = vec![PathBuf::from("/")];
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    if !pattern.starts_with('/') {
        return Vec::new();
    }
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let mut next = Vec::new();
        let is_pattern = component.contains(['*', '?', '[']);
        for base in &current {
            if is_pattern {
                let Ok(matcher) = glob::Pattern::new(component) else {
                    return Vec::new();
                };
                if let Ok(names) = host.read_dir(base) {
                    for name in names {
                        if name.starts_with('.') && !component.starts_with('.') {
                            continue;
                        }
                        if matcher.matches(&name) {
                            next.push(base.join(&name));
                        }
                    }
                }
            } else {
                let candidate = base.join(component);
                if last || host.metadata(&candidate).is_ok() {
                    next.push(candidate);
                }
            }
        }
        current = next;
        if current.is_empty() {
            break;
        }
    }
    current.retain(|p| host.metadata(p).is_ok());
    current.sort();
    current
}
