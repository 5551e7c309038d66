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
}

impl<H: Host> Recorder<H> {
    pub fn new(inner: H) -> Self {
        Recorder {
            inner,
            recording: Mutex::new(Recording::default()),
        }
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
            let file = std::fs::File::create(out)?;
            let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            let mut tar = tar::Builder::new(gz);
            append(&mut tar, JOURNAL_FILE, &journal_bytes)?;
            for (i, blob) in blobs.iter().enumerate() {
                append(&mut tar, &format!("blobs/{i:06}"), blob)?;
            }
            tar.into_inner()?.finish()?.flush()?;
        } else {
            std::fs::create_dir_all(out.join("blobs"))?;
            std::fs::write(out.join(JOURNAL_FILE), &journal_bytes)?;
            for (i, blob) in blobs.iter().enumerate() {
                std::fs::write(out.join(format!("blobs/{i:06}")), blob)?;
            }
        }
        Ok(())
    }
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
        let answer = self.inner.open(path).and_then(|mut reader| {
            let mut bytes = Vec::new();
            reader
                .read_to_end(&mut bytes)
                .map_err(|e| HostError::from_io(path, &e))?;
            Ok(bytes)
        });
        let compressed = path.extension().is_some_and(|e| e == "gz");
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
