//! Snapshots: what `origin-agent collect` captured, replayed as a [`Host`].
//!
//! A snapshot is a directory (or the same directory packed as `.tar.gz`) holding `snapshot.json`,
//! the [`Journal`] of every answer the live host gave, and `blobs/`, the bytes of files and command
//! outputs. Answers are replayed in the order they were given: a counter read twice (to get a
//! rate) replays both samples; past the last recorded answer the last one repeats. Anything the
//! capture never asked answers [`HostError::NotInSnapshot`], which probes report as a skip.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Command, CommandOutput, ConnectOutcome, Endpoint, FileMeta, FsStats, Host, HostError};

pub const JOURNAL_FILE: &str = "snapshot.json";
pub const JOURNAL_VERSION: u32 = 1;
/// The most a packed snapshot may unpack to in memory.
const MAX_SNAPSHOT_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// A command's recorded output; stdout lives in a blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedOutput {
    pub status: Option<i32>,
    pub stdout_blob: String,
    pub stderr: String,
}

type Answers<T> = BTreeMap<String, Vec<Result<T, HostError>>>;

/// Every answer a host gave, keyed by operation and argument.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub host: String,
    pub captured_at: Option<jiff::Timestamp>,
    /// The agent version that captured it.
    pub agent: String,
    #[serde(default)]
    pub reads: Answers<String>,
    #[serde(default)]
    pub opens: Answers<String>,
    #[serde(default)]
    pub dirs: Answers<Vec<String>>,
    #[serde(default)]
    pub metas: Answers<FileMeta>,
    #[serde(default)]
    pub links: Answers<PathBuf>,
    #[serde(default)]
    pub commands: Answers<RecordedOutput>,
    #[serde(default)]
    pub connects: BTreeMap<String, Vec<ConnectOutcome>>,
    #[serde(default)]
    pub statvfs: Answers<FsStats>,
    /// Answers of local services (HTTP self-test, FastCGI status, database status), by request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exchanges: BTreeMap<String, Vec<Result<super::Reply, super::ExchangeError>>>,
}

/// Why a snapshot could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot {path} has no {JOURNAL_FILE}: is it a snapshot written by `origin-agent collect`?")]
    NoJournal { path: PathBuf },
    #[error("snapshot {path}: {JOURNAL_FILE} is invalid: {source}")]
    BadJournal {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("snapshot {path} has version {found}; this agent reads version {JOURNAL_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("snapshot {path} unpacks to more than {MAX_SNAPSHOT_BYTES} bytes")]
    TooLarge { path: PathBuf },
}

/// A captured host, replayed.
#[derive(Debug)]
pub struct SnapshotHost {
    journal: Journal,
    blobs: HashMap<String, Vec<u8>>,
    cursors: Mutex<HashMap<(u8, String), usize>>,
}

impl SnapshotHost {
    /// Opens a snapshot directory or `.tar.gz` file.
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let files = if path.is_dir() {
            read_dir_tree(path).map_err(io)?
        } else {
            read_tar_gz(path).map_err(|e| match e {
                TarError::Io(source) => io(source),
                TarError::TooLarge => SnapshotError::TooLarge {
                    path: path.to_path_buf(),
                },
            })?
        };
        Self::from_files(path, files)
    }

    fn from_files(path: &Path, mut files: HashMap<String, Vec<u8>>) -> Result<Self, SnapshotError> {
        let journal_bytes = files.remove(JOURNAL_FILE).ok_or(SnapshotError::NoJournal {
            path: path.to_path_buf(),
        })?;
        let journal: Journal =
            serde_json::from_slice(&journal_bytes).map_err(|source| SnapshotError::BadJournal {
                path: path.to_path_buf(),
                source,
            })?;
        if journal.version != JOURNAL_VERSION {
            return Err(SnapshotError::Version {
                path: path.to_path_buf(),
                found: journal.version,
            });
        }
        Ok(SnapshotHost {
            journal,
            blobs: files,
            cursors: Mutex::new(HashMap::new()),
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The next recorded answer for `key` of operation `op`, or the last one once exhausted.
    fn next<'a, T>(
        &self,
        op: u8,
        answers: &'a BTreeMap<String, Vec<T>>,
        key: &str,
    ) -> Option<&'a T> {
        let list = answers.get(key)?;
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let cursor = cursors.entry((op, key.to_string())).or_insert(0);
        let answer = list.get(*cursor).or_else(|| list.last());
        *cursor += 1;
        answer
    }

    fn blob(&self, name: &str, what: &str) -> Result<Vec<u8>, HostError> {
        self.blobs
            .get(name)
            .cloned()
            .ok_or_else(|| HostError::NotInSnapshot {
                what: format!("{what} (blob {name} missing)"),
            })
    }
}

fn missing(what: impl Into<String>) -> HostError {
    HostError::NotInSnapshot { what: what.into() }
}

fn path_key(path: &Path) -> String {
    path.display().to_string()
}

impl Host for SnapshotHost {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        let key = path_key(path);
        match self.next(0, &self.journal.reads, &key) {
            Some(Ok(blob)) => self.blob(blob, &key),
            Some(Err(err)) => Err(err.clone()),
            // A log opened during capture can be read whole as well.
            None => match self.next(1, &self.journal.opens, &key) {
                Some(Ok(blob)) => self.blob(blob, &key),
                Some(Err(err)) => Err(err.clone()),
                None => Err(missing(key)),
            },
        }
    }

    fn open(&self, path: &Path) -> Result<Box<dyn Read + Send>, HostError> {
        let key = path_key(path);
        let bytes = match self.next(1, &self.journal.opens, &key) {
            Some(Ok(blob)) => self.blob(blob, &key)?,
            Some(Err(err)) => return Err(err.clone()),
            None => match self.next(0, &self.journal.reads, &key) {
                Some(Ok(blob)) => self.blob(blob, &key)?,
                Some(Err(err)) => return Err(err.clone()),
                None => return Err(missing(key)),
            },
        };
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<String>, HostError> {
        let key = path_key(path);
        match self.next(2, &self.journal.dirs, &key) {
            Some(answer) => answer.clone(),
            None => Err(missing(key)),
        }
    }

    fn metadata(&self, path: &Path) -> Result<FileMeta, HostError> {
        let key = path_key(path);
        match self.next(3, &self.journal.metas, &key) {
            Some(answer) => answer.clone(),
            None => Err(missing(key)),
        }
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        let key = path_key(path);
        match self.next(4, &self.journal.links, &key) {
            Some(answer) => answer.clone(),
            None => Err(missing(key)),
        }
    }

    fn run(&self, command: &Command) -> Result<CommandOutput, HostError> {
        let key = command.key();
        match self.next(5, &self.journal.commands, &key) {
            Some(Ok(out)) => Ok(CommandOutput {
                status: out.status,
                stdout: self.blob(&out.stdout_blob, &key)?,
                stderr: out.stderr.clone(),
            }),
            Some(Err(err)) => Err(err.clone()),
            None => Err(missing(format!("command `{key}`"))),
        }
    }

    fn connect(&self, endpoint: &Endpoint, _timeout: Duration) -> ConnectOutcome {
        let key = endpoint.key();
        match self.next(6, &self.journal.connects, &key) {
            Some(outcome) => outcome.clone(),
            None => ConnectOutcome {
                connected: false,
                errno: None,
                message: format!("{key}: not captured in this snapshot"),
                millis: 0,
            },
        }
    }

    fn exchange(&self, request: &super::Exchange) -> Result<super::Reply, super::ExchangeError> {
        match self.next(8, &self.journal.exchanges, &request.key()) {
            Some(answer) => answer.clone(),
            None => Err(super::ExchangeError::not_captured(request)),
        }
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats, HostError> {
        let key = path_key(path);
        match self.next(7, &self.journal.statvfs, &key) {
            Some(answer) => answer.clone(),
            None => Err(missing(format!("statvfs {key}"))),
        }
    }

    fn now(&self) -> jiff::Timestamp {
        self.journal
            .captured_at
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn pause(&self, _duration: Duration) {}

    fn is_live(&self) -> bool {
        false
    }

    fn hostname(&self) -> String {
        self.journal.host.clone()
    }
}

fn read_dir_tree(root: &Path) -> std::io::Result<HashMap<String, Vec<u8>>> {
    let mut files = HashMap::new();
    files.insert(
        JOURNAL_FILE.to_string(),
        std::fs::read(root.join(JOURNAL_FILE)).unwrap_or_default(),
    );
    if files.get(JOURNAL_FILE).is_some_and(|b| b.is_empty()) {
        files.remove(JOURNAL_FILE);
    }
    let blobs = root.join("blobs");
    if blobs.is_dir() {
        for entry in std::fs::read_dir(&blobs)? {
            let entry = entry?;
            let name = format!("blobs/{}", entry.file_name().to_string_lossy());
            files.insert(name, std::fs::read(entry.path())?);
        }
    }
    Ok(files)
}

enum TarError {
    Io(std::io::Error),
    TooLarge,
}

fn read_tar_gz(path: &Path) -> Result<HashMap<String, Vec<u8>>, TarError> {
    let file = std::fs::File::open(path).map_err(TarError::Io)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = HashMap::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(TarError::Io)? {
        let mut entry = entry.map_err(TarError::Io)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(TarError::Io)?
            .to_string_lossy()
            .into_owned();
        // Archives may or may not carry a top folder: keep the path from `snapshot.json` / `blobs/`.
        let name = match name.rfind("blobs/") {
            Some(i) => name[i..].to_string(),
            None => name.rsplit('/').next().unwrap_or(&name).to_string(),
        };
        total += entry.size();
        if total > MAX_SNAPSHOT_BYTES {
            return Err(TarError::TooLarge);
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(TarError::Io)?;
        files.insert(name, bytes);
    }
    Ok(files)
}
