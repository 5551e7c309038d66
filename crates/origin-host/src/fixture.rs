//! An in-memory [`Host`] for tests: files, directories, commands, connects and file systems are
//! declared up front; anything not declared answers `NotFound` / `CommandMissing` / refused.
//! Files can hold a sequence of contents (a counter sampled twice), and errors can be planted
//! (an unreadable config, a hanging command) to test the broken cases.
//!
//! The write side works in memory too: writes and removals land in an overlay that later reads
//! see, commands can answer a scripted sequence (the second call fails), a write can be made to
//! fail, and every command and write is kept in a [`FixtureHost::journal`], so a test asserts the
//! exact sequence of a change and of its undo without root.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    Command, CommandOutput, ConnectOutcome, Endpoint, FileKind, FileMeta, FsStats, Host, HostError,
};

#[derive(Debug, Clone)]
enum Entry {
    /// Successive reads return the next content; the last one repeats.
    Contents(Vec<Vec<u8>>),
    Error(HostError),
}

/// A host answering from in-memory maps.
#[derive(Debug, Default)]
pub struct FixtureHost {
    files: BTreeMap<PathBuf, Entry>,
    reads: Mutex<BTreeMap<PathBuf, usize>>,
    extra_dirs: BTreeSet<PathBuf>,
    meta: BTreeMap<PathBuf, FileMeta>,
    links: BTreeMap<PathBuf, PathBuf>,
    commands: BTreeMap<String, Result<CommandOutput, HostError>>,
    connects: BTreeMap<String, ConnectOutcome>,
    fs: BTreeMap<PathBuf, FsStats>,
    exchanges: BTreeMap<String, Result<super::Reply, super::ExchangeError>>,
    now: Option<jiff::Timestamp>,
    /// Successive answers of a command (the last repeats), with the calls made so far.
    sequences: BTreeMap<String, Vec<Result<CommandOutput, HostError>>>,
    calls: Mutex<BTreeMap<String, usize>>,
    /// Files written (`Some`) or removed (`None`) through the write side.
    overlay: Mutex<BTreeMap<PathBuf, Option<Vec<u8>>>>,
    failing_writes: BTreeSet<PathBuf>,
    journal: Mutex<Vec<String>>,
}

impl FixtureHost {
    /// An empty host: no files (so no processes), every command missing, every connect failing
    /// (`ENOENT` for a socket, `ECONNREFUSED` for a port), every exchange not captured.
    pub fn new() -> Self {
        Self::default()
    }

    /// A file with this content.
    pub fn file(mut self, path: impl AsRef<Path>, content: impl AsRef<[u8]>) -> Self {
        self.files.insert(
            path.as_ref().to_path_buf(),
            Entry::Contents(vec![content.as_ref().to_vec()]),
        );
        self
    }

    /// A file whose successive reads return these contents (the last repeats).
    pub fn file_seq(mut self, path: impl AsRef<Path>, contents: &[&str]) -> Self {
        let contents = contents.iter().map(|c| c.as_bytes().to_vec()).collect();
        self.files
            .insert(path.as_ref().to_path_buf(), Entry::Contents(contents));
        self
    }

    /// A path whose reads fail with `error`.
    pub fn error(mut self, path: impl AsRef<Path>, error: HostError) -> Self {
        self.files
            .insert(path.as_ref().to_path_buf(), Entry::Error(error));
        self
    }

    /// An (empty) directory.
    pub fn dir(mut self, path: impl AsRef<Path>) -> Self {
        self.extra_dirs.insert(path.as_ref().to_path_buf());
        self
    }

    /// A unix socket at `path` with this owner and mode.
    pub fn socket(mut self, path: impl AsRef<Path>, uid: u32, gid: u32, mode: u32) -> Self {
        self.meta.insert(
            path.as_ref().to_path_buf(),
            FileMeta {
                kind: FileKind::Socket,
                mode,
                uid,
                gid,
                size: 0,
                mtime: 0,
                dev: 0,
                ino: 0,
            },
        );
        self
    }

    /// What `metadata` answers for `path` (owner, mode, kind), over the defaults.
    pub fn meta(mut self, path: impl AsRef<Path>, meta: FileMeta) -> Self {
        self.meta.insert(path.as_ref().to_path_buf(), meta);
        self
    }

    /// A symlink (`/proc/PID/exe`).
    pub fn link(mut self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> Self {
        self.links
            .insert(path.as_ref().to_path_buf(), target.as_ref().to_path_buf());
        self
    }

    /// A command's answer (`key` is program and arguments space-joined, as `Command::key`).
    pub fn command(mut self, key: &str, result: Result<CommandOutput, HostError>) -> Self {
        self.commands.insert(key.to_string(), result);
        self
    }

    /// A successful command with this standard output.
    pub fn command_ok(self, key: &str, stdout: &str) -> Self {
        self.command(
            key,
            Ok(CommandOutput {
                status: Some(0),
                stdout: stdout.as_bytes().to_vec(),
                stderr: String::new(),
            }),
        )
    }

    /// An endpoint that accepts connections.
    pub fn listening(mut self, endpoint: &Endpoint) -> Self {
        self.connects.insert(
            endpoint.key(),
            ConnectOutcome {
                connected: true,
                errno: None,
                message: "connected".to_string(),
                millis: 1,
            },
        );
        self
    }

    /// An endpoint that fails with `errno`.
    pub fn refusing(mut self, endpoint: &Endpoint, errno: i32) -> Self {
        self.connects.insert(
            endpoint.key(),
            ConnectOutcome {
                connected: false,
                errno: Some(errno),
                message: std::io::Error::from_raw_os_error(errno).to_string(),
                millis: 1,
            },
        );
        self
    }

    /// A file system mounted at `mount` (statvfs of paths under it answers with `stats`).
    pub fn fs(mut self, mount: impl AsRef<Path>, stats: FsStats) -> Self {
        self.fs.insert(mount.as_ref().to_path_buf(), stats);
        self
    }

    /// A command whose successive calls answer these results in turn (the last repeats).
    pub fn command_seq(
        mut self,
        key: &str,
        results: Vec<Result<CommandOutput, HostError>>,
    ) -> Self {
        self.sequences.insert(key.to_string(), results);
        self
    }

    /// Writes to (and removals of) `path` fail with an I/O error.
    pub fn failing_write(mut self, path: impl AsRef<Path>) -> Self {
        self.failing_writes.insert(path.as_ref().to_path_buf());
        self
    }

    /// Every command run (`run KEY`, with `<<STDIN` first line when it had input) and every
    /// write (`write PATH`, `remove PATH`, `mkdir PATH`), in order.
    pub fn journal(&self) -> Vec<String> {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Only the journal lines that start with `prefix` (e.g. `"run ufw"`).
    pub fn journal_of(&self, prefix: &str) -> Vec<String> {
        self.journal()
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    /// A file's content now: the overlay (written or removed) over the declared files.
    pub fn content(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.read(path.as_ref()).ok()
    }

    fn log(&self, line: String) {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    fn overlaid(&self, path: &Path) -> Option<Option<Vec<u8>>> {
        self.overlay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
    }

    fn write_check(&self, path: &Path) -> Result<(), HostError> {
        if self.failing_writes.contains(path) {
            return Err(HostError::Io {
                path: path.display().to_string(),
                message: "No space left on device (scripted)".into(),
            });
        }
        Ok(())
    }

    /// Declares a local service's answer to `request`.
    pub fn answer(
        mut self,
        request: &super::Exchange,
        answer: Result<super::Reply, super::ExchangeError>,
    ) -> Self {
        self.exchanges.insert(request.key(), answer);
        self
    }

    /// Fixes the clock this host reports (`Host::now`).
    pub fn at(mut self, now: jiff::Timestamp) -> Self {
        self.now = Some(now);
        self
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.extra_dirs.iter().any(|d| d.starts_with(path))
            || self.files.keys().any(|f| f.starts_with(path) && f != path)
            || self.meta.keys().any(|f| f.starts_with(path) && f != path)
            || self.links.keys().any(|f| f.starts_with(path) && f != path)
    }
}

fn not_found(path: &Path) -> HostError {
    HostError::NotFound {
        path: path.display().to_string(),
    }
}

impl Host for FixtureHost {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        match self.overlaid(path) {
            Some(Some(bytes)) => return Ok(bytes),
            Some(None) => return Err(not_found(path)),
            None => {}
        }
        match self.files.get(path) {
            Some(Entry::Contents(contents)) => {
                let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
                let n = reads.entry(path.to_path_buf()).or_insert(0);
                let index = (*n).min(contents.len().saturating_sub(1));
                *n += 1;
                Ok(contents.get(index).cloned().unwrap_or_default())
            }
            Some(Entry::Error(err)) => Err(err.clone()),
            None => Err(not_found(path)),
        }
    }

    fn open(&self, path: &Path) -> Result<Box<dyn Read + Send>, HostError> {
        let bytes = self.read(path)?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<String>, HostError> {
        if let Some(Entry::Error(err)) = self.files.get(path) {
            return Err(err.clone());
        }
        if !self.is_dir(path) {
            return Err(not_found(path));
        }
        let mut names = BTreeSet::new();
        let all = self
            .files
            .keys()
            .chain(self.meta.keys())
            .chain(self.extra_dirs.iter())
            .chain(self.links.keys());
        for p in all {
            if let Ok(rest) = p.strip_prefix(path) {
                if let Some(first) = rest.components().next() {
                    names.insert(first.as_os_str().to_string_lossy().into_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn metadata(&self, path: &Path) -> Result<FileMeta, HostError> {
        if let Some(meta) = self.meta.get(path) {
            return Ok(meta.clone());
        }
        match self.overlaid(path) {
            Some(Some(bytes)) => {
                return Ok(FileMeta {
                    kind: FileKind::File,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    size: bytes.len() as u64,
                    mtime: 0,
                    dev: 0,
                    ino: 0,
                })
            }
            Some(None) => return Err(not_found(path)),
            None => {}
        }
        let base = FileMeta {
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            dev: 0,
            ino: 0,
        };
        match self.files.get(path) {
            Some(Entry::Contents(c)) => Ok(FileMeta {
                size: c.first().map(|c| c.len() as u64).unwrap_or(0),
                ..base
            }),
            Some(Entry::Error(err)) => Err(err.clone()),
            None if self.is_dir(path) => Ok(FileMeta {
                kind: FileKind::Dir,
                mode: 0o755,
                ..base
            }),
            None => Err(not_found(path)),
        }
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        self.links.get(path).cloned().ok_or_else(|| not_found(path))
    }

    fn run(&self, command: &Command) -> Result<CommandOutput, HostError> {
        let key = command.key();
        let first = command
            .stdin
            .as_deref()
            .map(|b| {
                let text = String::from_utf8_lossy(b);
                format!(" <<{}", text.lines().next().unwrap_or(""))
            })
            .unwrap_or_default();
        self.log(format!("run {key}{first}"));
        if let Some(seq) = self.sequences.get(&key) {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            let n = calls.entry(key.clone()).or_insert(0);
            let index = (*n).min(seq.len().saturating_sub(1));
            *n += 1;
            if let Some(r) = seq.get(index) {
                return r.clone();
            }
        }
        match self.commands.get(&key) {
            Some(result) => result.clone(),
            None => Err(HostError::CommandMissing {
                command: command.program.clone(),
            }),
        }
    }

    fn connect(&self, endpoint: &Endpoint, _timeout: Duration) -> ConnectOutcome {
        self.connects
            .get(&endpoint.key())
            .cloned()
            .unwrap_or_else(|| {
                let errno = match endpoint {
                    Endpoint::Unix(_) => libc::ENOENT,
                    Endpoint::Tcp(_) => libc::ECONNREFUSED,
                };
                ConnectOutcome {
                    connected: false,
                    errno: Some(errno),
                    message: std::io::Error::from_raw_os_error(errno).to_string(),
                    millis: 1,
                }
            })
    }

    fn exchange(&self, request: &super::Exchange) -> Result<super::Reply, super::ExchangeError> {
        self.exchanges
            .get(&request.key())
            .cloned()
            .unwrap_or_else(|| Err(super::ExchangeError::not_captured(request)))
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats, HostError> {
        self.fs
            .iter()
            .filter(|(mount, _)| path.starts_with(mount))
            .max_by_key(|(mount, _)| mount.as_os_str().len())
            .map(|(_, stats)| *stats)
            .ok_or_else(|| not_found(path))
    }

    fn now(&self) -> jiff::Timestamp {
        self.now.unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn pause(&self, _duration: Duration) {}

    fn is_live(&self) -> bool {
        false
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), HostError> {
        self.log(format!("write {}", path.display()));
        self.write_check(path)?;
        self.overlay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), Some(bytes.to_vec()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        self.log(format!("remove {}", path.display()));
        self.write_check(path)?;
        if self.read(path).is_err() {
            return Err(not_found(path));
        }
        self.overlay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), None);
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> Result<(), HostError> {
        self.log(format!("mkdir {}", path.display()));
        self.write_check(path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::HostExt;

    #[test]
    fn files_dirs_and_sequences_answer_as_declared() {
        let host = FixtureHost::new()
            .file("/etc/a.conf", "a")
            .file_seq("/proc/vmstat", &["1", "2"])
            .dir("/empty");
        assert_eq!(host.read_dir(Path::new("/etc")).unwrap(), vec!["a.conf"]);
        assert_eq!(host.read_dir(Path::new("/empty")).unwrap().len(), 0);
        assert_eq!(host.read(Path::new("/proc/vmstat")).unwrap(), b"1");
        assert_eq!(host.read(Path::new("/proc/vmstat")).unwrap(), b"2");
        assert_eq!(host.read(Path::new("/proc/vmstat")).unwrap(), b"2");
        assert!(host.read(Path::new("/nope")).unwrap_err().is_not_found());
        assert_eq!(host.glob("/etc/*.conf"), vec![PathBuf::from("/etc/a.conf")]);
        assert!(matches!(
            host.run(&Command::new("nginx", &["-T"])),
            Err(HostError::CommandMissing { .. })
        ));
    }
}
