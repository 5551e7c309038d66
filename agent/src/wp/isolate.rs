//! `origin-agent wp isolate`: the "disable every plugin, then enable them one by one on a
//! staging copy" guide, as a bisection on a throwaway copy of a live WordPress site.
//!
//! The copy: the site's code copied (symlinks stay symlinks, files opened with `O_NOFOLLOW`;
//! uploads and the cache drop-ins `object-cache.php`/`advanced-cache.php` are left out, so the
//! copy never writes into live uploads or a shared object cache) into a directory only root
//! and `nogroup` can enter; its tables copied on the database server into a new database
//! (`CREATE TABLE … LIKE` + `INSERT … SELECT`, as root over the local socket: the live
//! database is only read) with a user of its own; a `wp-config.php` of its own with
//! `WP_HOME`/`WP_SITEURL` pinned to the copy (else WordPress redirects to the live site) and no
//! cron, updates or outgoing HTTP; served by PHP's built-in server on a loopback port as
//! `nobody`, through a router of its own. The production web server is never touched.
//!
//! The bisection writes only the copy's `active_plugins` and loads only the copy's page
//! (redirects are not followed). It searches for the shortest prefix of the plugin list with
//! which the page fails, the plugins the copy's fatal error names first, so one that throws is
//! found in ⌈log2 n⌉ + 1 page loads; a plugin that fails only with another is then paired by
//! a second search. A journal in the state directory lists everything created, so a run that
//! crashed or was interrupted is cleaned up by the next one; Ctrl-C cleans up at once.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::db::{Db, DbError};
use super::Site;

/// The most files and bytes copied: a site bigger than this is refused, not half-copied.
const MAX_FILES: u64 = 300_000;
const MAX_BYTES: u64 = 4 << 30;
/// Deadline of one page load.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a page read.
const MAX_PAGE: usize = 1 << 20;
/// Drop-ins a copy must not run: they talk to caches the live site shares.
const SKIPPED_DROPINS: &[&str] = &["object-cache.php", "advanced-cache.php"];

#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    #[error("no WordPress site named {0} (sites: {1})")]
    NoSite(String, String),
    #[error("site {0}: {1}")]
    Site(String, String),
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("the copy: {0}")]
    Copy(String),
    #[error("interrupted; the copy was removed")]
    Interrupted,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IsolateError {
    let what = what.into();
    move |e| IsolateError::Io(what, e)
}

/// What `wp isolate` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub site: String,
    /// The page: a path on the site (`/checkout/`).
    pub url: String,
    /// Use this existing staging document root instead of a throwaway copy.
    pub staging: Option<PathBuf>,
    /// Where the journal lives.
    pub state_dir: PathBuf,
    /// Where copies are made (default `/var/tmp`).
    pub work_dir: PathBuf,
}

/// What the isolation found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Finding {
    /// The page works on the copy with every plugin active.
    NotAPlugin { status: u16 },
    /// One plugin makes the page fail, alone.
    Plugin {
        slug: String,
        version: Option<String>,
    },
    /// Two plugins fail together and work apart.
    Pair {
        plugins: Vec<(String, Option<String>)>,
    },
    /// The page fails with no plugin active.
    ThemeOrCore { theme: Option<String> },
    /// More than two plugins are needed together.
    Several { plugins: Vec<String> },
}

/// One page load of the bisection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Load {
    pub active: Vec<String>,
    pub status: u16,
    /// The copy's PHP fatal error for this load, first line, printable.
    pub error: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub site: String,
    pub url: String,
    pub plugins: usize,
    pub finding: Finding,
    pub loads: Vec<Load>,
    /// The first failing load's PHP error, for the evidence.
    pub evidence: Option<String>,
}

impl Outcome {
    /// ⌈log2 n⌉ for n plugins (at least 1).
    pub fn steps(n: usize) -> u32 {
        ceil_log2(n)
    }

    pub fn text(&self) -> String {
        let version = |v: &Option<String>| v.as_ref().map_or(String::new(), |v| format!(" {v}"));
        let head = match &self.finding {
            Finding::NotAPlugin { status } => format!(
                "{} on the copy answers {status} with all {} plugins active: the page works with all plugins: not a plugin",
                self.url, self.plugins
            ),
            Finding::Plugin { slug, version: v } => format!(
                "culprit: plugin `{slug}`{}: {} fails with it alone and works without it. Fix: deactivate it (`wp plugin deactivate {slug}`, or rename its directory) and roll back or update it",
                version(v),
                self.url
            ),
            Finding::Pair { plugins } => format!(
                "conflict: plugins {}: {} fails with both active and works with either alone. Fix: deactivate one of them",
                plugins
                    .iter()
                    .map(|(s, v)| format!("`{s}`{}", version(v)))
                    .collect::<Vec<_>>()
                    .join(" and "),
                self.url
            ),
            Finding::ThemeOrCore { theme } => format!(
                "{} fails on the copy with no plugin active: not a plugin; the theme{} or WordPress core",
                self.url,
                theme.as_ref().map_or(String::new(), |t| format!(" `{t}`"))
            ),
            Finding::Several { plugins } => format!(
                "{} fails only with all of these together: {}",
                self.url,
                plugins.join(", ")
            ),
        };
        let mut out = format!(
            "{head}\n{} page loads on a copy of {}",
            self.loads.len(),
            self.site
        );
        if let Some(e) = &self.evidence {
            out.push_str(&format!("\nevidence (the copy's PHP error log): {e}"));
        }
        out.push('\n');
        out
    }
}

fn ceil_log2(n: usize) -> u32 {
    let n = n.max(2);
    usize::BITS - (n - 1).leading_zeros()
}

/// Everything a run created, for cleanup after a crash.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Journal {
    pub pid: u32,
    pub copy_root: Option<PathBuf>,
    pub database: Option<String>,
    pub db_user: Option<String>,
    pub socket: Option<PathBuf>,
    pub server_pid: Option<u32>,
    /// A staging site's database, prefix and `active_plugins` to restore.
    pub staging_restore: Option<(String, String, Vec<String>)>,
}

fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join("wp-isolate.journal.json")
}

impl Journal {
    fn save(&self, state_dir: &Path) -> Result<(), IsolateError> {
        fs::create_dir_all(state_dir).map_err(io(state_dir.display().to_string()))?;
        let path = journal_path(state_dir);
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(tmp.display().to_string()))?;
        f.write_all(&body).map_err(io(tmp.display().to_string()))?;
        fs::rename(&tmp, &path).map_err(io(path.display().to_string()))
    }

    /// Removes what the journal lists. Best effort: every step is tried.
    pub fn clean(&self, report: &mut dyn FnMut(&str)) {
        if let Some(pid) = self.server_pid {
            stop_server(pid, self.copy_root.as_deref());
        }
        if let Some(sock) = &self.socket {
            if let Ok(mut db) = Db::connect(sock) {
                if let Some((name, prefix, active)) = &self.staging_restore {
                    if db.set_active_plugins(name, prefix, active).is_ok() {
                        report(&format!(
                            "restored the staging database {name}'s active plugins"
                        ));
                    }
                }
                if let Some(name) = &self.database {
                    if db.drop_database(name).is_ok() {
                        report(&format!("dropped the temporary database {name}"));
                    }
                }
                if let Some(user) = &self.db_user {
                    let _ = db.drop_user(user);
                }
            }
        }
        if let Some(root) = &self.copy_root {
            // Only a directory this agent names that way (a journal is root's file, but be sure).
            if root
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("origin-agent-wp-copy-"))
                && fs::remove_dir_all(root).is_ok()
            {
                report(&format!("removed the copy {}", root.display()));
            }
        }
    }
}

/// Cleans up after an earlier run that did not finish (its journal is still there).
/// Refuses to start while another run is going (the journal names a live `isolate` process).
pub fn recover(state_dir: &Path, report: &mut dyn FnMut(&str)) -> Result<(), IsolateError> {
    let path = journal_path(state_dir);
    let Ok(bytes) = fs::read(&path) else {
        return Ok(());
    };
    if let Ok(journal) = serde_json::from_slice::<Journal>(&bytes) {
        if journal.pid != std::process::id()
            && Path::new(&format!("/proc/{}", journal.pid)).exists()
        {
            // That run is still going: leave it alone.
            let own = fs::read(format!("/proc/{}/cmdline", journal.pid)).unwrap_or_default();
            if String::from_utf8_lossy(&own).contains("isolate") {
                return Err(IsolateError::Refused(format!(
                    "another `wp isolate` (pid {}) is running",
                    journal.pid
                )));
            }
        }
        report("an earlier `wp isolate` did not finish: cleaning up after it");
        journal.clean(report);
    }
    let _ = fs::remove_file(path);
    Ok(())
}

fn stop_server(pid: u32, copy_root: Option<&Path>) {
    // Only our own server: `php … -S 127.0.0.1:…` with the copy's router on its command line.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let ours = cmdline.contains("-S\x00127.0.0.1:")
        && copy_root.is_some_and(|r| cmdline.contains(&*r.to_string_lossy()));
    if !ours {
        return;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(raw);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
            .is_ok_and(|s| s != nix::sys::wait::WaitStatus::StillAlive)
            || nix::sys::signal::kill(pid, None).is_err()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Random letters and digits (from the kernel's generator).
fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut bytes);
    }
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// A PHP single-quoted string literal.
fn php_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Is `a` equal to, inside, or containing `b` (after resolving symlinks where possible)?
fn overlaps(a: &Path, b: &Path) -> bool {
    let a = fs::canonicalize(a).unwrap_or_else(|_| a.to_path_buf());
    let b = fs::canonicalize(b).unwrap_or_else(|_| b.to_path_buf());
    a.starts_with(&b) || b.starts_with(&a)
}

/// Refuses a target that is the live site: its document root, content directory or database.
pub fn refuse_live_target(
    live: &Site,
    root: &Path,
    content: &Path,
    database: &str,
) -> Result<(), IsolateError> {
    for (what, live_path) in [
        ("document root", &live.abspath),
        ("content directory", &live.content_dir),
    ] {
        for target in [root, content] {
            if overlaps(target, live_path) {
                return Err(IsolateError::Refused(format!(
                    "{} overlaps the live site's {what} {}",
                    target.display(),
                    live_path.display()
                )));
            }
        }
    }
    if live.db_name.as_deref() == Some(database) {
        return Err(IsolateError::Refused(format!(
            "the database {database} is the live site's"
        )));
    }
    Ok(())
}

/// The first of `paths` that exists, root-owned and not writable by others along its path
/// (the trust layer's rule for anything the agent executes).
fn known_binary(paths: &[&str]) -> Option<PathBuf> {
    crate::trust::known_binary(&crate::host::live::LiveHost, None, paths).ok()
}

/// The `php` CLI binary.
fn php_binary() -> Result<PathBuf, IsolateError> {
    known_binary(&["/usr/bin/php", "/usr/local/bin/php"]).ok_or_else(|| {
        IsolateError::Copy(
            "no root-owned php CLI at /usr/bin/php (Debian: apt-get install php-cli php-mysql)"
                .into(),
        )
    })
}

fn nobody() -> (u32, u32) {
    let uid = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .map_or(65534, |u| u.uid.as_raw());
    let gid = nix::unistd::Group::from_name("nogroup")
        .ok()
        .flatten()
        .map_or(65534, |g| g.gid.as_raw());
    (uid, gid)
}

/// Copies a tree without following symlinks, leaving out `skip` (absolute paths).
struct Copier {
    files: u64,
    bytes: u64,
    gid: u32,
    /// Set by Ctrl-C / SIGTERM: the copy stops and is removed.
    interrupted: Arc<AtomicBool>,
}

impl Copier {
    fn copy_tree(&mut self, from: &Path, to: &Path, skip: &[PathBuf]) -> Result<(), IsolateError> {
        fs::create_dir_all(to).map_err(io(to.display().to_string()))?;
        self.own(to, 0o750)?;
        let entries = fs::read_dir(from).map_err(io(from.display().to_string()))?;
        for entry in entries {
            let entry = entry.map_err(io(from.display().to_string()))?;
            let src = entry.path();
            if skip.contains(&src) {
                continue;
            }
            let dst = to.join(entry.file_name());
            let meta = fs::symlink_metadata(&src).map_err(io(src.display().to_string()))?;
            self.files += 1;
            if self.interrupted.load(Ordering::Relaxed) {
                return Err(IsolateError::Interrupted);
            }
            if self.files > MAX_FILES {
                return Err(IsolateError::Copy(format!(
                    "more than {MAX_FILES} files: not copied"
                )));
            }
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(&src).map_err(io(src.display().to_string()))?;
                std::os::unix::fs::symlink(&target, &dst).map_err(io(dst.display().to_string()))?;
            } else if ft.is_dir() {
                self.copy_tree(&src, &dst, skip)?;
            } else if ft.is_file() {
                self.bytes += meta.len();
                if self.bytes > MAX_BYTES {
                    return Err(IsolateError::Copy(format!(
                        "more than {} GiB: not copied",
                        MAX_BYTES >> 30
                    )));
                }
                let mut input = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&src)
                    .map_err(io(src.display().to_string()))?;
                let mut output = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o640)
                    .open(&dst)
                    .map_err(io(dst.display().to_string()))?;
                std::io::copy(&mut input, &mut output).map_err(io(dst.display().to_string()))?;
                self.own(&dst, 0o640)?;
            }
        }
        Ok(())
    }

    /// root:nogroup with `mode`: the copy's server (nobody:nogroup) reads, never writes.
    fn own(&self, path: &Path, mode: u32) -> Result<(), IsolateError> {
        std::os::unix::fs::lchown(path, Some(0), Some(self.gid))
            .map_err(io(path.display().to_string()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io(path.display().to_string()))
    }
}

/// The copy's router for `php -S`: static files as they are, PHP files run, everything else
/// through WordPress's `index.php`; the copy's URL pinned before WordPress reads its config.
fn router(home: &str) -> String {
    format!(
        r#"<?php
// origin-agent wp isolate: router of a throwaway copy (never the live site).
if (!defined('WP_HOME')) define('WP_HOME', {home});
if (!defined('WP_SITEURL')) define('WP_SITEURL', {home});
$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH) ?: '/';
$file = realpath($_SERVER['DOCUMENT_ROOT'] . $path);
if ($file !== false && is_file($file) && $path !== '/') return false;
if ($file !== false && is_dir($file) && is_file($file . '/index.php') && $path !== '/') return false;
$_SERVER['SCRIPT_NAME'] = '/index.php';
$_SERVER['PHP_SELF'] = '/index.php';
$_SERVER['SCRIPT_FILENAME'] = $_SERVER['DOCUMENT_ROOT'] . '/index.php';
chdir($_SERVER['DOCUMENT_ROOT']);
require $_SERVER['DOCUMENT_ROOT'] . '/index.php';
"#,
        home = php_str(home)
    )
}

/// One GET to the copy: the status and a `Location` if any (never followed).
fn get(port: u16, path: &str) -> Result<(u16, Option<String>), std::io::Error> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let deadline = Instant::now() + PAGE_TIMEOUT;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let clean: String = path.chars().filter(|c| c.is_ascii_graphic()).collect();
    // One write: PHP's built-in server rejects a request that arrives in small pieces.
    let request = format!(
        "GET {clean} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: origin-agent-wp-isolate\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_PAGE {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = String::from_utf8_lossy(&buf[..buf.len().min(16384)]).into_owned();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line")
        })?;
    let location = head.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    Ok((status, location))
}

/// The copy being bisected.
struct Bench<'a> {
    db: Db,
    database: String,
    prefix: String,
    port: u16,
    url: String,
    error_log: PathBuf,
    loads: Vec<Load>,
    cache: BTreeMap<Vec<String>, bool>,
    /// The first failing load's fatal error text (all lines).
    first_error: Option<String>,
    interrupted: Arc<AtomicBool>,
    progress: &'a mut dyn FnMut(&str),
    steps: u32,
}

impl Bench<'_> {
    /// Loads the page with exactly `active` plugins active. True when it fails (5xx).
    fn fails(&mut self, active: &[String]) -> Result<bool, IsolateError> {
        let mut key: Vec<String> = active.to_vec();
        key.sort();
        key.dedup();
        if let Some(r) = self.cache.get(&key) {
            return Ok(*r);
        }
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(IsolateError::Interrupted);
        }
        self.db
            .set_active_plugins(&self.database, &self.prefix, &key)?;
        let offset = fs::metadata(&self.error_log).map(|m| m.len()).unwrap_or(0);
        let (status, location) = get(self.port, &self.url).map_err(|e| {
            let log = fs::read(self.error_log.with_file_name("server.log")).unwrap_or_default();
            let tail = String::from_utf8_lossy(&log[log.len().saturating_sub(600)..]).into_owned();
            IsolateError::Copy(format!(
                "GET {} on the copy: {e}; the server's log ends: {}",
                self.url,
                super::printable(&tail, 600)
            ))
        })?;
        if let Some(loc) = &location {
            let ours = loc.starts_with('/')
                || loc.starts_with(&format!("http://127.0.0.1:{}/", self.port));
            if !ours {
                return Err(IsolateError::Copy(format!(
                    "the copy redirects to {} (not followed: it would load another site)",
                    super::printable(loc, 120)
                )));
            }
        }
        let error = new_fatal(&self.error_log, offset);
        let fails = status >= 500;
        if fails && self.first_error.is_none() {
            self.first_error.clone_from(&error);
        }
        let k = self.loads.len() + 1;
        let line = if k == 1 {
            format!(
                "load 1: all {} plugins active, to reproduce → {status}{}",
                key.len(),
                if fails { " fails" } else { " works" }
            )
        } else {
            format!(
                "step {} of {}: {} plugins active ({}) → {status}{}",
                k - 1,
                if k - 1 > self.steps as usize {
                    format!("{} + pairing", self.steps)
                } else {
                    self.steps.to_string()
                },
                key.len(),
                key.iter().map(|f| slug(f)).collect::<Vec<_>>().join(", "),
                if fails { " fails" } else { " works" }
            )
        };
        (self.progress)(&line);
        self.loads.push(Load {
            active: key.clone(),
            status,
            error: error
                .as_ref()
                .map(|e| super::printable(e.lines().next().unwrap_or(""), 300)),
        });
        self.cache.insert(key, fails);
        Ok(fails)
    }

    /// The smallest `k` with `fixed + cand[..k]` failing, knowing `fixed + cand` fails and
    /// `fixed` alone works.
    fn shortest_failing_prefix(
        &mut self,
        fixed: &[String],
        cand: &[String],
    ) -> Result<usize, IsolateError> {
        let (mut lo, mut hi) = (0usize, cand.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let mut set = fixed.to_vec();
            set.extend_from_slice(&cand[..mid]);
            if self.fails(&set)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }
}

/// A plugin file's slug (`pay-gateway/pay-gateway.php` → `pay-gateway`).
fn slug(file: &str) -> &str {
    file.split('/')
        .next()
        .unwrap_or(file)
        .trim_end_matches(".php")
}

/// The PHP fatal error written to the copy's log after `offset`, if any.
fn new_fatal(path: &Path, offset: u64) -> Option<String> {
    // php -S writes the log after the response is sent: give it a moment.
    let deadline = Instant::now() + Duration::from_millis(300);
    loop {
        let bytes = fs::read(path).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
        let end = bytes.len().min(start + (256 << 10));
        let text = String::from_utf8_lossy(&bytes[start..end]);
        if let Some(at) = text.find("PHP Fatal error") {
            return Some(text[at..].trim().to_string());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// The plugin slugs a fatal error names, in order of appearance (the first frame first).
fn named_plugins(error: &str, plugins_dir: &Path) -> Vec<String> {
    let marker = format!("{}/", plugins_dir.display());
    let mut out: Vec<String> = Vec::new();
    let mut rest = error;
    while let Some(at) = rest.find(&marker) {
        rest = &rest[at + marker.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| !matches!(c, '/' | ':' | '(' | ')' | '"' | '\'') && !c.is_whitespace())
            .take(100)
            .collect();
        let name = name.trim_end_matches(".php").to_string();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The bisection over `all` (plugin files in load order) on a prepared copy.
fn bisect(
    bench: &mut Bench<'_>,
    all: &[String],
    plugins_dir: &Path,
) -> Result<Finding, IsolateError> {
    if !bench.fails(all)? {
        let status = bench.loads.last().map_or(0, |l| l.status);
        return Ok(Finding::NotAPlugin { status });
    }
    if all.is_empty() {
        return Ok(Finding::ThemeOrCore { theme: None });
    }
    // The plugins the error names go first: a plugin that throws is then found in ⌈log2 n⌉.
    let hints = bench
        .first_error
        .as_deref()
        .map(|e| named_plugins(e, plugins_dir))
        .unwrap_or_default();
    let mut order: Vec<String> = Vec::new();
    for h in &hints {
        if let Some(f) = all.iter().find(|f| slug(f) == h) {
            order.push(f.clone());
        }
    }
    let rest: Vec<String> = all.iter().filter(|f| !order.contains(f)).cloned().collect();
    order.extend(rest);
    let k = bench.shortest_failing_prefix(&[], &order)?;
    let x = order[k - 1].clone();
    if bench.fails(std::slice::from_ref(&x))? {
        // Alone it fails. It is the culprit if the error is in its own code, or if the page
        // works with no plugin at all.
        let alone_error = bench
            .loads
            .iter()
            .rev()
            .find(|l| l.active == [x.clone()])
            .and_then(|l| l.error.clone());
        let own = alone_error.is_some_and(|e| {
            named_plugins(&e, plugins_dir).first().map(String::as_str) == Some(slug(&x))
        }) || bench.first_error.as_deref().is_some_and(|e| {
            named_plugins(e, plugins_dir).first().map(String::as_str) == Some(slug(&x))
        });
        if own || !bench.fails(&[])? {
            return Ok(Finding::Plugin {
                slug: slug(&x).to_string(),
                version: None,
            });
        }
        return Ok(Finding::ThemeOrCore { theme: None });
    }
    // `x` fails only with some of order[..k-1]: find its partner the same way.
    let before = order[..k - 1].to_vec();
    let j = bench.shortest_failing_prefix(std::slice::from_ref(&x), &before)?;
    let y = before[j - 1].clone();
    if bench.fails(&[x.clone(), y.clone()])? {
        let mut pair = vec![slug(&y).to_string(), slug(&x).to_string()];
        pair.sort();
        return Ok(Finding::Pair {
            plugins: pair.into_iter().map(|p| (p, None)).collect(),
        });
    }
    let mut several: Vec<String> = before[..j].iter().map(|f| slug(f).to_string()).collect();
    several.push(slug(&x).to_string());
    Ok(Finding::Several { plugins: several })
}

/// A free loopback port (bound and released: the server binds it right after).
fn free_port() -> Result<u16, IsolateError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("a loopback port"))?;
    Ok(l.local_addr().map_err(io("a loopback port"))?.port())
}

/// Runs `wp isolate` for a site of `sites` (discovered on the live host).
pub fn run(
    sites: &[Site],
    socket_hint: Option<&Path>,
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Outcome, IsolateError> {
    let site = sites
        .iter()
        .find(|s| {
            s.name == opts.site
                || s.server_names.contains(&opts.site)
                || s.abspath == Path::new(&opts.site)
        })
        .ok_or_else(|| {
            IsolateError::NoSite(
                opts.site.clone(),
                sites
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
    if let Some(p) = site
        .problems
        .iter()
        .find(|p| p.contains("symlink") || p.contains("could not be read"))
    {
        return Err(IsolateError::Site(site.name.clone(), p.clone()));
    }
    let live_db = site
        .db_name
        .clone()
        .ok_or_else(|| IsolateError::Site(site.name.clone(), "no DB_NAME in its config".into()))?;
    if site.multisite {
        return Err(IsolateError::Site(
            site.name.clone(),
            "multisite is not supported by wp isolate yet".into(),
        ));
    }
    if !opts.url.starts_with('/') {
        return Err(IsolateError::Refused(format!(
            "--url {} must be a path on the site, like /checkout/",
            opts.url
        )));
    }
    let db_host = super::config::DbHost::parse(site.db_host.as_deref().unwrap_or("localhost"));
    let socket = super::db::socket_for(&crate::host::live::LiveHost, &db_host, socket_hint)?;
    recover(&opts.state_dir, progress)?;

    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    let mut journal = Journal {
        pid: std::process::id(),
        socket: Some(socket.clone()),
        ..Journal::default()
    };
    let result = prepare_and_bisect(
        site,
        &live_db,
        &socket,
        opts,
        &mut journal,
        interrupted,
        progress,
    );
    journal.clean(progress);
    let _ = fs::remove_file(journal_path(&opts.state_dir));
    result
}

#[allow(clippy::too_many_arguments)]
fn prepare_and_bisect(
    site: &Site,
    live_db: &str,
    socket: &Path,
    opts: &Options,
    journal: &mut Journal,
    interrupted: Arc<AtomicBool>,
    progress: &mut dyn FnMut(&str),
) -> Result<Outcome, IsolateError> {
    let mut db = Db::connect(socket)?;
    let live = db.site_options(live_db, &site.table_prefix, false)?;
    if let Some(p) = live.problems.first() {
        return Err(IsolateError::Site(site.name.clone(), p.clone()));
    }
    let all = live.active_plugins.clone();
    let port = free_port()?;
    let home = format!("http://127.0.0.1:{port}");
    let (uid, gid) = nobody();
    let php = php_binary()?;
    let token = random_token(10);

    let (docroot, database, plugins_dir, copy_root) = match &opts.staging {
        Some(staging) => {
            let cfg_text = fs::read_to_string(staging.join("wp-config.php"))
                .map_err(io(staging.join("wp-config.php").display().to_string()))?;
            let cfg = super::config::parse(&cfg_text);
            let name = cfg.str("DB_NAME").unwrap_or_default().to_string();
            let prefix = cfg.table_prefix.clone().unwrap_or_else(|| "wp_".into());
            refuse_live_target(site, staging, &staging.join("wp-content"), &name)?;
            if prefix != site.table_prefix {
                return Err(IsolateError::Refused(format!(
                    "the staging site's table prefix {prefix} is not the live site's {}",
                    site.table_prefix
                )));
            }
            let staged = db.site_options(&name, &prefix, false)?;
            journal.staging_restore = Some((name.clone(), prefix, staged.active_plugins));
            journal.save(&opts.state_dir)?;
            (
                staging.clone(),
                name,
                staging.join("wp-content/plugins"),
                None,
            )
        }
        None => {
            let root = opts.work_dir.join(format!("origin-agent-wp-copy-{token}"));
            let database = format!("oa_wp_copy_{token}");
            refuse_live_target(site, &root, &root.join("site/wp-content"), &database)?;
            journal.copy_root = Some(root.clone());
            journal.database = Some(database.clone());
            journal.db_user = Some(database.clone());
            journal.save(&opts.state_dir)?;
            progress(&format!(
                "copying {} (code only; uploads and cache drop-ins left out) to {}",
                site.abspath.display(),
                root.display()
            ));
            let t = Instant::now();
            fs::create_dir(&root).map_err(io(root.display().to_string()))?;
            let mut copier = Copier {
                files: 0,
                bytes: 0,
                gid,
                interrupted: interrupted.clone(),
            };
            copier.own(&root, 0o750)?;
            let docroot = root.join("site");
            let content_inside = site.content_dir.starts_with(&site.abspath);
            let mut skip = vec![site.abspath.join("wp-config.php"), site.content_dir.clone()];
            if !content_inside {
                skip.push(site.abspath.join("wp-content"));
            }
            copier.copy_tree(&site.abspath, &docroot, &skip)?;
            let mut content_skip = vec![site.content_dir.join("uploads")];
            content_skip.extend(SKIPPED_DROPINS.iter().map(|d| site.content_dir.join(d)));
            copier.copy_tree(
                &site.content_dir,
                &docroot.join("wp-content"),
                &content_skip,
            )?;
            let uploads = docroot.join("wp-content/uploads");
            fs::create_dir(&uploads).map_err(io(uploads.display().to_string()))?;
            std::os::unix::fs::lchown(&uploads, Some(uid), Some(gid))
                .map_err(io(uploads.display().to_string()))?;
            progress(&format!(
                "copied {} files ({} MB) in {:.1} s",
                copier.files,
                copier.bytes >> 20,
                t.elapsed().as_secs_f64()
            ));

            progress(&format!("copying the database {live_db} into {database}"));
            let tables = db.tables(live_db, &site.table_prefix)?;
            db.copy_tables(live_db, &database, &tables)?;
            let password = random_token(24);
            db.create_user(&database, &password, &database)?;
            db.set_option(&database, &site.table_prefix, "siteurl", &home)?;
            db.set_option(&database, &site.table_prefix, "home", &home)?;
            write_copy_config(
                site, &docroot, &database, &password, socket, &home, copier.gid,
            )?;
            (
                docroot,
                database,
                root.join("site/wp-content/plugins"),
                Some(root),
            )
        }
    };
    let work = copy_root
        .clone()
        .unwrap_or_else(|| opts.work_dir.join(format!("origin-agent-wp-copy-{token}")));
    if copy_root.is_none() {
        fs::create_dir(&work).map_err(io(work.display().to_string()))?;
        journal.copy_root = Some(work.clone());
        journal.save(&opts.state_dir)?;
        std::os::unix::fs::lchown(&work, Some(0), Some(gid))
            .map_err(io(work.display().to_string()))?;
        fs::set_permissions(&work, fs::Permissions::from_mode(0o750))
            .map_err(io(work.display().to_string()))?;
    }
    let router_path = work.join("router.php");
    fs::write(&router_path, router(&home)).map_err(io(router_path.display().to_string()))?;
    std::os::unix::fs::lchown(&router_path, Some(0), Some(gid))
        .map_err(io(router_path.display().to_string()))?;
    fs::set_permissions(&router_path, fs::Permissions::from_mode(0o640))
        .map_err(io(router_path.display().to_string()))?;
    let error_log = work.join("php-error.log");
    let server_log = work.join("server.log");
    for f in [&error_log, &server_log] {
        fs::write(f, b"").map_err(io(f.display().to_string()))?;
        std::os::unix::fs::lchown(f, Some(uid), Some(gid)).map_err(io(f.display().to_string()))?;
    }
    let log_out = fs::OpenOptions::new()
        .append(true)
        .open(&server_log)
        .map_err(io(server_log.display().to_string()))?;
    let log_err = log_out
        .try_clone()
        .map_err(io(server_log.display().to_string()))?;
    // setpriv (util-linux) drops to nobody:nogroup with no supplementary groups, then execs php.
    let setpriv = known_binary(&["/usr/bin/setpriv", "/bin/setpriv"])
        .ok_or_else(|| IsolateError::Copy("no root-owned setpriv (util-linux)".into()))?;
    let child = std::process::Command::new(&setpriv)
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_string(),
            "--".to_string(),
            php.to_string_lossy().into_owned(),
        ])
        .args([
            "-d",
            "display_errors=0",
            "-d",
            "log_errors=1",
            "-d",
            &format!("error_log={}", error_log.display()),
            "-d",
            "opcache.enable_cli=0",
            "-d",
            "max_execution_time=30",
            "-S",
            &format!("127.0.0.1:{port}"),
            "-t",
            &docroot.to_string_lossy(),
            &router_path.to_string_lossy(),
        ])
        .current_dir(&docroot)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(log_out)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(io(format!("starting {}", php.display())))?;
    journal.server_pid = Some(child.id());
    journal.save(&opts.state_dir)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_err()
    {
        if Instant::now() > deadline {
            return Err(IsolateError::Copy(format!(
                "php -S did not listen on 127.0.0.1:{port} within 10 s (see {})",
                server_log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    progress(&format!(
        "serving the copy on {home} (php -S as nobody); bisecting {} plugins on {}: at most {} steps",
        all.len(),
        opts.url,
        ceil_log2(all.len())
    ));
    let mut bench = Bench {
        db,
        database,
        prefix: site.table_prefix.clone(),
        port,
        url: opts.url.clone(),
        error_log,
        loads: Vec::new(),
        cache: BTreeMap::new(),
        first_error: None,
        interrupted,
        progress,
        steps: ceil_log2(all.len()),
    };
    let finding = bisect(&mut bench, &all, &plugins_dir);
    if let Some((name, prefix, active)) = &journal.staging_restore {
        bench.db.set_active_plugins(name, prefix, active)?;
    }
    let mut finding = finding?;
    // Versions from the live site's headers.
    let version = |s: &str| site.plugin(s).and_then(|p| p.version.clone());
    match &mut finding {
        Finding::Plugin { slug, version: v } => *v = version(slug),
        Finding::Pair { plugins } => {
            for (s, v) in plugins.iter_mut() {
                *v = version(s);
            }
        }
        Finding::ThemeOrCore { theme } => theme.clone_from(&site.theme),
        _ => {}
    }
    Ok(Outcome {
        site: site.name.clone(),
        url: opts.url.clone(),
        plugins: all.len(),
        finding,
        evidence: bench
            .first_error
            .as_ref()
            .map(|e| super::printable(e.lines().next().unwrap_or(""), 400)),
        loads: bench.loads,
    })
}

/// The copy's `wp-config.php`: its own database and user, the live prefix, URLs pinned to the
/// copy, fresh salts, no cron, updates or outgoing HTTP.
fn write_copy_config(
    site: &Site,
    docroot: &Path,
    database: &str,
    password: &str,
    socket: &Path,
    home: &str,
    gid: u32,
) -> Result<(), IsolateError> {
    let mut c =
        String::from("<?php\n// origin-agent wp isolate: a throwaway copy. Never the live site.\n");
    let mut define = |k: &str, v: String| c.push_str(&format!("define('{k}', {v});\n"));
    define("DB_NAME", php_str(database));
    define("DB_USER", php_str(database));
    define("DB_PASSWORD", php_str(password));
    define(
        "DB_HOST",
        php_str(&format!("localhost:{}", socket.display())),
    );
    define("DB_CHARSET", php_str("utf8mb4"));
    define("DB_COLLATE", php_str(""));
    for k in super::config::SALT_KEYS {
        define(k, php_str(&random_token(48)));
    }
    define("WP_HOME", php_str(home));
    define("WP_SITEURL", php_str(home));
    define(
        "WP_CONTENT_DIR",
        php_str(&docroot.join("wp-content").to_string_lossy()),
    );
    define("WP_CONTENT_URL", php_str(&format!("{home}/wp-content")));
    define("WP_DEBUG", "false".into());
    define("DISABLE_WP_CRON", "true".into());
    define("WP_HTTP_BLOCK_EXTERNAL", "true".into());
    define("AUTOMATIC_UPDATER_DISABLED", "true".into());
    define("WP_CACHE", "false".into());
    if let Some(m) = &site.memory_limit {
        define("WP_MEMORY_LIMIT", php_str(m));
    }
    c.push_str(&format!(
        "$table_prefix = {};\n",
        php_str(&site.table_prefix)
    ));
    c.push_str("if (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');\nrequire_once ABSPATH . 'wp-settings.php';\n");
    let path = docroot.join("wp-config.php");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&path)
        .map_err(io(path.display().to_string()))?;
    f.write_all(c.as_bytes())
        .map_err(io(path.display().to_string()))?;
    std::os::unix::fs::lchown(&path, Some(0), Some(gid)).map_err(io(path.display().to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_ceil_log2() {
        assert_eq!(ceil_log2(1), 1);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(5), 3);
        assert_eq!(ceil_log2(8), 3);
        assert_eq!(ceil_log2(9), 4);
    }

    #[test]
    fn a_target_that_is_the_live_site_is_refused() {
        let live = Site {
            name: "shop".into(),
            abspath: "/srv/shop".into(),
            content_dir: "/srv/shop/wp-content".into(),
            db_name: Some("shop".into()),
            ..Site::default()
        };
        assert!(
            refuse_live_target(&live, Path::new("/srv/shop"), Path::new("/tmp/x"), "copy").is_err()
        );
        assert!(refuse_live_target(
            &live,
            Path::new("/srv/shop/staging"),
            Path::new("/tmp/x"),
            "copy"
        )
        .is_err());
        assert!(refuse_live_target(&live, Path::new("/srv"), Path::new("/tmp/x"), "copy").is_err());
        assert!(refuse_live_target(
            &live,
            Path::new("/var/tmp/c"),
            Path::new("/var/tmp/c/wp-content"),
            "shop"
        )
        .is_err());
        assert!(refuse_live_target(
            &live,
            Path::new("/var/tmp/c"),
            Path::new("/var/tmp/c/wp-content"),
            "copy"
        )
        .is_ok());
    }

    #[test]
    fn the_plugins_an_error_names_in_order() {
        let e = "PHP Fatal error:  Cannot redeclare asset_version_hash() (previously declared in /c/site/wp-content/plugins/cache-boost/cache-boost.php:9) in /c/site/wp-content/plugins/lazy-images/lazy-images.php on line 9";
        assert_eq!(
            named_plugins(e, Path::new("/c/site/wp-content/plugins")),
            ["cache-boost", "lazy-images"]
        );
    }

    #[test]
    fn php_strings_are_escaped() {
        assert_eq!(php_str("a'b\\c"), "'a\\'b\\\\c'");
    }
}
