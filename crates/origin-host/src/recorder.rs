//! Recording a host: wraps another [`Host`], passes every call through and keeps each answer in a
//! [`Journal`], which [`Recorder::write`] saves as a snapshot (a directory or a `.tar.gz`).
//!
//! Logs opened for reading are kept only as their tail ([`LOG_TAIL_BYTES`], cut at a line start),
//! so a snapshot of a busy host stays small; a compressed rotated log is kept whole when it fits.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::snapshot::{Journal, RecordedOutput, JOURNAL_FILE, JOURNAL_VERSION};
use super::{Command, CommandOutput, ConnectOutcome, Endpoint, FileMeta, FsStats, Host, HostError};

/// How much of each log a snapshot keeps.
pub const LOG_TAIL_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
struct Recording {
    journal: Journal,
    blobs: Vec<Vec<u8>>,
}

impl Recording {
    fn blob(&mut self, bytes: Vec<u8>) -> String {
        self.blobs.push(bytes);
        format!("blobs/{:06}", self.blobs.len() - 1)
    }
}

/// A host that records what it answers.
#[derive(Debug)]
pub struct Recorder<H: Host> {
    inner: H,
    recording: Mutex<Recording>,
    redact: bool,
}

impl<H: Host> Recorder<H> {
    /// A recorder that redacts secrets from what it records ([`super::redact`]).
    pub fn new(inner: H) -> Self {
        Recorder {
            inner,
            recording: Mutex::new(Recording::default()),
            redact: true,
        }
    }

    /// Whether secrets are redacted from the recording (the host's answers are never changed).
    pub fn redacting(mut self, redact: bool) -> Self {
        self.redact = redact;
        self
    }

    /// What was redacted so far (`PATH: kind, …`).
    pub fn redacted(&self) -> Vec<String> {
        self.with(|rec| rec.journal.redacted.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Recording) -> T) -> T {
        let mut guard = self.recording.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Writes the snapshot: a directory, or a `.tar.gz` when the path ends so.
    pub fn write(&self, out: &Path, hostname: &str) -> std::io::Result<()> {
        let (journal, blobs) = self.with(|rec| {
            let mut journal = rec.journal.clone();
            journal.version = JOURNAL_VERSION;
            journal.host = hostname.to_string();
            journal.agent = env!("CARGO_PKG_VERSION").to_string();
            if journal.captured_at.is_none() {
                journal.captured_at = Some(jiff::Timestamp::now());
            }
            (journal, rec.blobs.clone())
        });
        let journal_bytes = serde_json::to_vec_pretty(&journal).map_err(std::io::Error::other)?;
        let name = out.to_string_lossy();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            let file = create_exclusive(out)?;
            let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            let mut tar = tar::Builder::new(gz);
            append(&mut tar, JOURNAL_FILE, &journal_bytes)?;
            for (i, blob) in blobs.iter().enumerate() {
                append(&mut tar, &format!("blobs/{i:06}"), blob)?;
            }
            tar.into_inner()?.finish()?.flush()?;
        } else {
            use std::os::unix::fs::DirBuilderExt;
            // The directory is created here (never an existing one, never through a link),
            // 0700, and everything in it is new.
            std::fs::DirBuilder::new().mode(0o700).create(out)?;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(out.join("blobs"))?;
            create_exclusive(&out.join(JOURNAL_FILE))?.write_all(&journal_bytes)?;
            for (i, blob) in blobs.iter().enumerate() {
                create_exclusive(&out.join(format!("blobs/{i:06}")))?.write_all(blob)?;
            }
        }
        Ok(())
    }
}

/// Creates a new file, mode 0600: `O_EXCL` (an existing file or a planted symlink, dangling or
/// not, is an error, never written through) and `O_NOFOLLOW`.
pub fn create_exclusive(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} already exists (a snapshot is never written over a file or through a link)",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)
}

fn key(path: &Path) -> String {
    path.display().to_string()
}

/// Reads `reader` to its end keeping only the last `2 * cap` bytes at any time (a host whose
/// `open_tail` streams the whole file costs bounded memory).
fn read_tail(reader: &mut dyn Read, into: &mut Vec<u8>, cap: usize) -> std::io::Result<usize> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(into.len()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        into.extend_from_slice(&buf[..n]);
        if into.len() > 2 * cap + 1 {
            let excess = into.len() - (cap + 1);
            into.drain(..excess);
        }
    }
}

/// The tail of `bytes`, at most `cap` long, starting at a line start.
fn tail(mut bytes: Vec<u8>, cap: usize) -> Vec<u8> {
    if bytes.len() <= cap {
        return bytes;
    }
    let cut = bytes.len() - cap;
    let start = memchr::memchr(b'\n', &bytes[cut..]).map_or(bytes.len(), |i| cut + i + 1);
    bytes.drain(..start);
    bytes
}

impl<H: Host> Host for Recorder<H> {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        let answer = self.inner.read(path);
        self.with(|rec| {
            let recorded = match &answer {
                Ok(bytes) if self.redact => {
                    let (kept, kinds) = super::redact::redact(bytes);
                    if !kinds.is_empty() {
                        let line = format!("{}: {}", key(path), kinds.join(", "));
                        if !rec.journal.redacted.contains(&line) {
                            rec.journal.redacted.push(line);
                        }
                    }
                    Ok(rec.blob(kept))
                }
                Ok(bytes) => Ok(rec.blob(bytes.clone())),
                Err(err) => Err(err.clone()),
            };
            rec.journal
                .reads
                .entry(key(path))
                .or_default()
                .push(recorded);
        });
        answer
    }

    fn open(&self, path: &Path) -> Result<Box<dyn Read + Send>, HostError> {
        let compressed = path.extension().is_some_and(|e| e == "gz");
        // A plain log is read from its tail (the live host seeks there; one more byte tells
        // whether the cut is at a line start); a compressed one whole, up to the bound.
        let limit = LOG_TAIL_BYTES as u64 + 1;
        let opened = if compressed {
            self.inner.open(path)
        } else {
            self.inner.open_tail(path, limit)
        };
        let answer = opened.and_then(|reader| {
            let mut bytes = Vec::new();
            let mut reader: Box<dyn Read + Send> = if compressed {
                Box::new(reader.take(limit))
            } else {
                reader
            };
            if compressed {
                reader.read_to_end(&mut bytes)
            } else {
                read_tail(&mut reader, &mut bytes, LOG_TAIL_BYTES)
            }
            .map_err(|e| HostError::from_io(path, &e))?;
            Ok(bytes)
        });
        let answer = match answer {
            Ok(bytes) if compressed && bytes.len() > LOG_TAIL_BYTES => Err(HostError::Io {
                path: key(path),
                message: format!(
                    "compressed log larger than {LOG_TAIL_BYTES} bytes was not captured"
                ),
            }),
            Ok(bytes) if !compressed => Ok(tail(bytes, LOG_TAIL_BYTES)),
            other => other,
        };
        self.with(|rec| {
            let recorded = match &answer {
                Ok(bytes) => Ok(rec.blob(bytes.clone())),
                Err(err) => Err(err.clone()),
            };
            rec.journal
                .opens
                .entry(key(path))
                .or_default()
                .push(recorded);
        });
        answer.map(|bytes| Box::new(std::io::Cursor::new(bytes)) as Box<dyn Read + Send>)
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<String>, HostError> {
        let answer = self.inner.read_dir(path);
        self.with(|rec| {
            rec.journal
                .dirs
                .entry(key(path))
                .or_default()
                .push(answer.clone())
        });
        answer
    }

    fn metadata(&self, path: &Path) -> Result<FileMeta, HostError> {
        let answer = self.inner.metadata(path);
        self.with(|rec| {
            rec.journal
                .metas
                .entry(key(path))
                .or_default()
                .push(answer.clone())
        });
        answer
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        let answer = self.inner.read_link(path);
        self.with(|rec| {
            rec.journal
                .links
                .entry(key(path))
                .or_default()
                .push(answer.clone())
        });
        answer
    }

    fn run(&self, command: &Command) -> Result<CommandOutput, HostError> {
        let answer = self.inner.run(command);
        self.with(|rec| {
            let recorded = match &answer {
                Ok(out) => Ok(RecordedOutput {
                    status: out.status,
                    stdout_blob: rec.blob(out.stdout.clone()),
                    stderr: out.stderr.clone(),
                }),
                Err(err) => Err(err.clone()),
            };
            rec.journal
                .commands
                .entry(command.key())
                .or_default()
                .push(recorded);
        });
        answer
    }

    fn connect(&self, endpoint: &Endpoint, timeout: Duration) -> ConnectOutcome {
        let answer = self.inner.connect(endpoint, timeout);
        self.with(|rec| {
            rec.journal
                .connects
                .entry(endpoint.key())
                .or_default()
                .push(answer.clone())
        });
        answer
    }

    fn exchange(&self, request: &super::Exchange) -> Result<super::Reply, super::ExchangeError> {
        // The request holds no secret (credentials are named by path and read by the live
        // host alone), and neither does the answer: both are safe to keep.
        let answer = self.inner.exchange(request);
        self.with(|rec| {
            rec.journal
                .exchanges
                .entry(request.key())
                .or_default()
                .push(answer.clone())
        });
        answer
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats, HostError> {
        let answer = self.inner.statvfs(path);
        self.with(|rec| {
            rec.journal
                .statvfs
                .entry(key(path))
                .or_default()
                .push(answer.clone())
        });
        answer
    }

    fn now(&self) -> jiff::Timestamp {
        let now = self.inner.now();
        self.with(|rec| {
            if rec.journal.captured_at.is_none() {
                rec.journal.captured_at = Some(now);
            }
        });
        now
    }

    fn pause(&self, duration: Duration) {
        self.inner.pause(duration);
    }

    fn is_live(&self) -> bool {
        self.inner.is_live()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::live::LiveHost;
    use super::super::snapshot::SnapshotHost;
    use super::super::HostExt;
    use super::*;

    #[test]
    fn snapshots_are_new_0600_files_never_written_through_a_link_and_redacted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("debian.cnf");
        std::fs::write(
            &conf,
            "[client]\nuser = debian-sys-maint\npassword = s3cr3t\n",
        )
        .unwrap();
        let rec = Recorder::new(LiveHost);
        // The audit sees the real file; the recording does not keep the secret.
        assert!(String::from_utf8(rec.read(&conf).unwrap())
            .unwrap()
            .contains("s3cr3t"));
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "root's file\n").unwrap();
        for name in ["planted.tar.gz", "planted"] {
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(&victim, &link).unwrap();
            assert!(rec.write(&link, "web1").is_err());
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file\n");
        let out = dir.path().join("snap.tar.gz");
        rec.write(&out, "web1").unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            rec.write(&out, "web1").is_err(),
            "an existing file is not overwritten"
        );
        let snap = SnapshotHost::open(&out).unwrap();
        let recorded = String::from_utf8(snap.read(&conf).unwrap()).unwrap();
        assert!(recorded.contains("password = <redacted>"), "{recorded}");
        assert_eq!(snap.journal().redacted.len(), 1);
        assert!(rec.redacted()[0].contains("debian.cnf: option-file password"));
    }

    #[test]
    fn a_recorded_host_replays_the_same_answers_from_dir_and_tarball() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conf");
        std::fs::write(&file, b"hello\n").unwrap();
        let rec = Recorder::new(LiveHost);
        assert_eq!(rec.read(&file).unwrap(), b"hello\n");
        assert!(rec
            .read(&dir.path().join("missing"))
            .unwrap_err()
            .is_not_found());
        let out = rec.run(&Command::new("sh", &["-c", "echo one"])).unwrap();
        assert_eq!(out.stdout, b"one\n");
        std::fs::write(&file, b"changed\n").unwrap();
        assert_eq!(rec.read(&file).unwrap(), b"changed\n");
        let names = rec.read_dir(dir.path()).unwrap();

        for out in [dir.path().join("snap"), dir.path().join("snap.tar.gz")] {
            rec.write(&out, "web1").unwrap();
            let snap = SnapshotHost::open(&out).unwrap();
            assert_eq!(snap.journal().host, "web1");
            // Two reads of the same file replay in order, then the last repeats.
            assert_eq!(snap.read(&file).unwrap(), b"hello\n");
            assert_eq!(snap.read(&file).unwrap(), b"changed\n");
            assert_eq!(snap.read(&file).unwrap(), b"changed\n");
            assert!(snap
                .read(&dir.path().join("missing"))
                .unwrap_err()
                .is_not_found());
            let out = snap.run(&Command::new("sh", &["-c", "echo one"])).unwrap();
            assert_eq!(out.stdout, b"one\n");
            assert_eq!(snap.read_dir(dir.path()).unwrap(), names);
            // Never asked during capture: a clear "not captured", not a panic.
            let err = snap.read_text(Path::new("/nowhere")).unwrap_err();
            assert!(matches!(err, HostError::NotInSnapshot { .. }));
        }
    }

    #[test]
    fn log_tails_start_at_a_line() {
        let bytes = b"aaaa\nbbbb\ncccc\n".to_vec();
        assert_eq!(tail(bytes, 7), b"cccc\n");
    }
}
