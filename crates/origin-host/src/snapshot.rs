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

/// The journal's file name inside a snapshot.
pub const JOURNAL_FILE: &str = "snapshot.json";
/// The journal format this agent writes and reads.
pub const JOURNAL_VERSION: u32 = 1;
/// The most a snapshot's files may hold in all (what is kept in memory).
pub const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;
/// The most one file of a snapshot may hold (a log tail is 8 MiB; a journal of a big host tens).
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;
/// The most bytes a packed snapshot may decompress to, every header, extension record and
/// skipped entry counted: a small `.tar.gz` cannot make the reader work through gigabytes.
pub const MAX_UNPACKED_BYTES: u64 = 512 * 1024 * 1024;
/// The most files a snapshot may hold.
pub const MAX_ENTRIES: usize = 100_000;
/// The most an extension header (GNU long name or link, PAX record) may hold.
const MAX_EXTENSION_BYTES: u64 = 64 * 1024;

/// A command's recorded output; stdout lives in a blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedOutput {
    /// The exit code, or `None` when a signal ended it.
    pub status: Option<i32>,
    /// The name of the blob (file of the snapshot) that holds its stdout.
    pub stdout_blob: String,
    /// Its standard error.
    pub stderr: String,
}

type Answers<T> = BTreeMap<String, Vec<Result<T, HostError>>>;

/// Every answer a host gave, keyed by operation and argument.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Journal {
    /// The journal format ([`JOURNAL_VERSION`]).
    pub version: u32,
    /// The captured host's name.
    pub host: String,
    /// When `collect` ran.
    pub captured_at: Option<jiff::Timestamp>,
    /// The agent version that captured it.
    pub agent: String,
    /// Whole-file reads, by path: the blob holding the bytes (redacted when `collect` redacts).
    #[serde(default)]
    pub reads: Answers<String>,
    /// Files opened for streaming (`open`), by path: the blob holding the bytes.
    #[serde(default)]
    pub opens: Answers<String>,
    /// Directory listings, by path.
    #[serde(default)]
    pub dirs: Answers<Vec<String>>,
    /// `stat` answers, by path.
    #[serde(default)]
    pub metas: Answers<FileMeta>,
    /// Symlink targets, by path.
    #[serde(default)]
    pub links: Answers<PathBuf>,
    /// Command outputs, by command line.
    #[serde(default)]
    pub commands: Answers<RecordedOutput>,
    /// Connection outcomes, by endpoint key.
    #[serde(default)]
    pub connects: BTreeMap<String, Vec<ConnectOutcome>>,
    /// File system space answers, by path.
    #[serde(default)]
    pub statvfs: Answers<FsStats>,
    /// Answers of local services (HTTP self-test, FastCGI status, database status), by request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exchanges: BTreeMap<String, Vec<Result<super::Reply, super::ExchangeError>>>,
    /// What `collect` redacted (`PATH: kind, …`; see [`super::redact`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

/// Why a snapshot could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot's files could not be read.
    #[error("cannot read snapshot {path}: {source}")]
    Io {
        /// The snapshot (a directory or a `.tar.gz`).
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// No journal: not a snapshot.
    #[error("snapshot {path} has no {JOURNAL_FILE}: is it a snapshot written by `origin-agent collect`?")]
    NoJournal {
        /// The snapshot given.
        path: PathBuf,
    },
    /// The journal is not valid JSON of the expected shape.
    #[error("snapshot {path}: {JOURNAL_FILE} is invalid: {source}")]
    BadJournal {
        /// The snapshot given.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The journal's version is not one this agent reads.
    #[error("snapshot {path} has version {found}; this agent reads version {JOURNAL_VERSION}")]
    Version {
        /// The snapshot given.
        path: PathBuf,
        /// The version it has.
        found: u32,
    },
    /// Past a size or count bound (a hostile or broken archive).
    #[error("snapshot {path} refused: {why}")]
    TooLarge {
        /// The snapshot given.
        path: PathBuf,
        /// Which bound and by how much.
        why: String,
    },
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
        let meta = std::fs::symlink_metadata(path).map_err(io)?;
        let files = if meta.is_dir() {
            read_dir_tree(path).map_err(|e| match e {
                TarError::Io(source) => io(source),
                TarError::TooLarge(why) => SnapshotError::TooLarge {
                    path: path.to_path_buf(),
                    why,
                },
            })?
        } else {
            read_tar_gz(path).map_err(|e| match e {
                TarError::Io(source) => io(source),
                TarError::TooLarge(why) => SnapshotError::TooLarge {
                    path: path.to_path_buf(),
                    why,
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

    /// Every answer the snapshot holds.
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

/// Reads one regular file of a directory snapshot: never through a symlink (`O_NOFOLLOW`), never
/// a FIFO or device (non-blocking open, then `fstat`), at most [`MAX_ENTRY_BYTES`].
fn read_snapshot_file(path: &Path, budget: &mut Budget) -> Result<Vec<u8>, TarError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => TarError::TooLarge(format!("{} is a symlink", path.display())),
            _ => TarError::Io(e),
        })?;
    let meta = file.metadata().map_err(TarError::Io)?;
    if !meta.is_file() {
        return Err(TarError::TooLarge(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    budget.admit(&path.display().to_string(), meta.len())?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(TarError::Io)?;
    if bytes.len() as u64 > meta.len() {
        return Err(TarError::TooLarge(format!(
            "{} grew while read",
            path.display()
        )));
    }
    Ok(bytes)
}

/// What a snapshot may still hold: files, and bytes in all.
struct Budget {
    files: usize,
    bytes: u64,
}

impl Budget {
    fn new() -> Budget {
        Budget { files: 0, bytes: 0 }
    }

    fn admit(&mut self, name: &str, size: u64) -> Result<(), TarError> {
        self.files += 1;
        if self.files > MAX_ENTRIES {
            return Err(TarError::TooLarge(format!("more than {MAX_ENTRIES} files")));
        }
        if size > MAX_ENTRY_BYTES {
            return Err(TarError::TooLarge(format!(
                "{name} holds {size} bytes, more than the {MAX_ENTRY_BYTES} a snapshot file may"
            )));
        }
        self.bytes += size;
        if self.bytes > MAX_SNAPSHOT_BYTES {
            return Err(TarError::TooLarge(format!(
                "its files hold more than {MAX_SNAPSHOT_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

fn read_dir_tree(root: &Path) -> Result<HashMap<String, Vec<u8>>, TarError> {
    let mut budget = Budget::new();
    let mut files = HashMap::new();
    match read_snapshot_file(&root.join(JOURNAL_FILE), &mut budget) {
        Ok(bytes) if !bytes.is_empty() => {
            files.insert(JOURNAL_FILE.to_string(), bytes);
        }
        Ok(_) => {}
        Err(TarError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let blobs = root.join("blobs");
    let is_dir = std::fs::symlink_metadata(&blobs).is_ok_and(|m| m.is_dir());
    if is_dir {
        for entry in std::fs::read_dir(&blobs).map_err(TarError::Io)? {
            let entry = entry.map_err(TarError::Io)?;
            let name = format!("blobs/{}", entry.file_name().to_string_lossy());
            files.insert(name, read_snapshot_file(&entry.path(), &mut budget)?);
        }
    }
    Ok(files)
}

#[derive(Debug)]
enum TarError {
    Io(std::io::Error),
    TooLarge(String),
}

/// Counts every decompressed byte the tar reader takes and fails past [`MAX_UNPACKED_BYTES`].
struct Bounded<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= MAX_UNPACKED_BYTES {
            return Err(std::io::Error::other(UNPACKED_TOO_LARGE));
        }
        let room = (MAX_UNPACKED_BYTES - self.read).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n as u64;
        Ok(n)
    }
}

const UNPACKED_TOO_LARGE: &str = "unpacks to more than the bound";

fn too_large_or_io(e: std::io::Error) -> TarError {
    if e.to_string() == UNPACKED_TOO_LARGE {
        TarError::TooLarge(format!(
            "it decompresses to more than {MAX_UNPACKED_BYTES} bytes"
        ))
    } else {
        TarError::Io(e)
    }
}

/// Reads a packed snapshot with every allocation bounded: entries are taken raw (the tar crate
/// would read a GNU long name or a PAX record of any size into memory), extension headers are
/// read here up to `MAX_EXTENSION_BYTES` (64 KiB), regular files up to [`MAX_ENTRY_BYTES`] each and
/// [`MAX_SNAPSHOT_BYTES`] in all, and the whole stream up to [`MAX_UNPACKED_BYTES`].
pub fn read_tar_gz_from<R: Read>(reader: R) -> Result<HashMap<String, Vec<u8>>, String> {
    read_tar(reader).map_err(|e| match e {
        TarError::Io(e) => e.to_string(),
        TarError::TooLarge(why) => why,
    })
}

fn read_tar_gz(path: &Path) -> Result<HashMap<String, Vec<u8>>, TarError> {
    let file = std::fs::File::open(path).map_err(TarError::Io)?;
    read_tar(file)
}

fn read_tar<R: Read>(reader: R) -> Result<HashMap<String, Vec<u8>>, TarError> {
    let bounded = Bounded {
        inner: flate2::read::GzDecoder::new(reader),
        read: 0,
    };
    let mut archive = tar::Archive::new(bounded);
    let mut files = HashMap::new();
    let mut budget = Budget::new();
    let mut long_name: Option<String> = None;
    let entries = archive.entries().map_err(too_large_or_io)?.raw(true);
    for entry in entries {
        let mut entry = entry.map_err(too_large_or_io)?;
        let kind = entry.header().entry_type();
        let size = entry.header().entry_size().map_err(too_large_or_io)?;
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if extension {
            if size > MAX_EXTENSION_BYTES {
                return Err(TarError::TooLarge(format!(
                    "an extension header (GNU long name or link, PAX) of {size} bytes"
                )));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(MAX_EXTENSION_BYTES)
                .read_to_end(&mut bytes)
                .map_err(too_large_or_io)?;
            if kind.is_gnu_longname() {
                let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                long_name = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
            } else if kind.is_pax_local_extensions() {
                long_name = pax_path(&bytes).or(long_name);
            }
            continue;
        }
        let name = long_name.take();
        if !kind.is_file() {
            continue;
        }
        let name = match name {
            Some(name) => name,
            None => String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
        };
        // Archives may or may not carry a top folder: keep the path from `snapshot.json` / `blobs/`.
        let name = match name.rfind("blobs/") {
            Some(i) => name[i..].to_string(),
            None => name.rsplit('/').next().unwrap_or(&name).to_string(),
        };
        budget.admit(&name, size)?;
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(too_large_or_io)?;
        files.insert(name, bytes);
    }
    Ok(files)
}

/// A raw tar header block (GNU format) of entry type `kind` declaring `size` bytes: for building
/// archives by hand (hostile ones in tests, fuzz seeds).
pub fn raw_header(name: &str, kind: u8, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    let _ = h.set_path(name);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// The `path` record of a PAX extension header (`LEN path=VALUE\n` records).
fn pax_path(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines().find_map(|record| {
        let (_, kv) = record.split_once(' ')?;
        kv.strip_prefix("path=").map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn gz(tar_bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(tar_bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn a_huge_long_name_header_is_refused_without_allocating_it() {
        // A GNU long-name header declaring 3 GiB, followed by a few MB of zeros (compressed to
        // almost nothing): the reader refuses at the header.
        let mut t = raw_header("././@LongLink", b'L', 3 << 30);
        t.extend(std::iter::repeat_n(0u8, 4 << 20));
        let err = read_tar_gz_from(&gz(&t)[..]).unwrap_err();
        assert!(err.contains("extension header"), "{err}");
        let mut t = raw_header("pax", b'x', 1 << 30);
        t.extend(std::iter::repeat_n(0u8, 1 << 20));
        assert!(read_tar_gz_from(&gz(&t)[..])
            .unwrap_err()
            .contains("extension header"));
    }

    #[test]
    fn a_huge_regular_entry_and_a_huge_stream_are_refused() {
        let t = raw_header("blobs/000001", b'0', 10 << 30);
        let err = read_tar_gz_from(&gz(&t)[..]).unwrap_err();
        assert!(err.contains("more than"), "{err}");
        // Many skipped (non-regular) entries still count against the stream bound.
        let mut t = Vec::new();
        for i in 0..3 {
            t.extend(raw_header(&format!("dir{i}"), b'5', 0));
        }
        t.extend(raw_header("fifo", b'6', 0));
        t.extend(raw_header("sym", b'2', 0));
        let files = read_tar_gz_from(&gz(&t)[..]).unwrap();
        assert!(files.is_empty());
    }

    #[test]
    fn long_names_within_bounds_name_the_next_file() {
        let name = format!("{}/blobs/000007", "d".repeat(150));
        let mut body = name.clone().into_bytes();
        body.push(0);
        let mut t = raw_header("././@LongLink", b'L', body.len() as u64);
        let mut padded = body.clone();
        padded.resize(body.len().div_ceil(512) * 512, 0);
        t.extend(padded);
        t.extend(raw_header("short", b'0', 3));
        let mut data = b"abc".to_vec();
        data.resize(512, 0);
        t.extend(data);
        t.extend([0u8; 1024]);
        let files = read_tar_gz_from(&gz(&t)[..]).unwrap();
        assert_eq!(
            files.get("blobs/000007").map(Vec::as_slice),
            Some(&b"abc"[..])
        );
    }

    #[test]
    fn a_directory_snapshot_never_follows_a_symlink_or_reads_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join(JOURNAL_FILE), "{}").unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("blobs/x")).unwrap();
        let err = SnapshotHost::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        std::fs::remove_file(dir.path().join("blobs/x")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("blobs/y"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = SnapshotHost::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
