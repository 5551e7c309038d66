//! The live machine: real files, real commands and real connections, each bounded by a deadline
//! ([`super::deadline`]).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    deadline, Command, CommandOutput, ConnectOutcome, Endpoint, FileKind, FileMeta, FsStats, Host,
    HostError, MAX_READ,
};

/// The machine the agent runs on.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveHost;

/// Opens `path` for reading only if it is a regular file: opened non-blocking (a FIFO someone
/// put where a log should be cannot hang the open) and checked with `fstat` on the open file
/// (no race with a rename). Every read of a log or config on the live host goes through here.
pub fn open_regular(path: &Path) -> Result<std::fs::File, HostError> {
    open_regular_io(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => HostError::NotAFile {
            path: path.display().to_string(),
        },
        _ => HostError::from_io(path, &e),
    })
}

/// [`open_regular`] with an `io::Error` (`InvalidInput` when the path is not a regular file).
pub fn open_regular_io(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    Ok(file)
}

impl Host for LiveHost {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        let file = open_regular(path)?;
        let mut bytes = Vec::new();
        file.take(MAX_READ)
            .read_to_end(&mut bytes)
            .map_err(|e| HostError::from_io(path, &e))?;
        Ok(bytes)
    }

    fn open(&self, path: &Path) -> Result<Box<dyn Read + Send>, HostError> {
        Ok(Box::new(open_regular(path)?))
    }

    fn open_tail(&self, path: &Path, max: u64) -> Result<Box<dyn Read + Send>, HostError> {
        use std::io::{Seek, SeekFrom};
        let mut file = open_regular(path)?;
        let size = file
            .metadata()
            .map_err(|e| HostError::from_io(path, &e))?
            .len();
        file.seek(SeekFrom::Start(size.saturating_sub(max)))
            .map_err(|e| HostError::from_io(path, &e))?;
        Ok(Box::new(file.take(max)))
    }

    fn open_at(&self, path: &Path, offset: u64) -> Option<Result<Box<dyn Read + Send>, HostError>> {
        use std::io::{Seek, SeekFrom};
        let open = || -> std::io::Result<Box<dyn Read + Send>> {
            let mut file = std::fs::File::open(path)?;
            file.seek(SeekFrom::Start(offset))?;
            Ok(Box::new(file))
        };
        Some(open().map_err(|e| HostError::from_io(path, &e)))
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<String>, HostError> {
        let entries = std::fs::read_dir(path).map_err(|e| HostError::from_io(path, &e))?;
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn metadata(&self, path: &Path) -> Result<FileMeta, HostError> {
        let meta = std::fs::metadata(path).map_err(|e| HostError::from_io(path, &e))?;
        let file_type = meta.file_type();
        let kind = if file_type.is_file() {
            FileKind::File
        } else if file_type.is_dir() {
            FileKind::Dir
        } else if file_type.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Other
        };
        Ok(FileMeta {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime: meta.mtime(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        std::fs::read_link(path).map_err(|e| HostError::from_io(path, &e))
    }

    fn run(&self, command: &Command) -> Result<CommandOutput, HostError> {
        deadline::run(command)
    }

    fn connect(&self, endpoint: &Endpoint, timeout: Duration) -> ConnectOutcome {
        let started = Instant::now();
        let result = match endpoint {
            Endpoint::Unix(path) => deadline::connect_unix(path, timeout).map(drop),
            Endpoint::Tcp(addr) => deadline::connect_tcp(addr, timeout).map(drop),
        };
        let millis = started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => ConnectOutcome {
                connected: true,
                errno: None,
                message: "connected".to_string(),
                millis,
            },
            Err(err) => ConnectOutcome {
                connected: false,
                errno: err.raw_os_error().or(match err.kind() {
                    std::io::ErrorKind::TimedOut => Some(libc::ETIMEDOUT),
                    _ => None,
                }),
                message: err.to_string(),
                millis,
            },
        }
    }

    fn exchange(&self, request: &super::Exchange) -> Result<super::Reply, super::ExchangeError> {
        crate::stack::exchange_live(request)
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats, HostError> {
        let stats = nix::sys::statvfs::statvfs(path).map_err(|errno| {
            HostError::from_io(path, &std::io::Error::from_raw_os_error(errno as i32))
        })?;
        let fragment = stats.fragment_size() as u64;
        Ok(FsStats {
            total_bytes: stats.blocks() as u64 * fragment,
            avail_bytes: stats.blocks_available() as u64 * fragment,
            total_inodes: stats.files() as u64,
            free_inodes: stats.files_available() as u64,
        })
    }

    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }

    fn pause(&self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_hanging_command_is_stopped_at_its_timeout() {
        let cmd = Command::new("sleep", &["30"]).timeout(Duration::from_millis(200));
        let started = Instant::now();
        let err = LiveHost.run(&cmd).unwrap_err();
        assert!(matches!(err, HostError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_command_is_reported_as_missing() {
        let err = LiveHost
            .run(&Command::new("origin-agent-no-such-tool", &[]))
            .unwrap_err();
        assert!(matches!(err, HostError::CommandMissing { .. }));
    }

    #[test]
    fn a_failing_command_is_an_output_not_an_error() {
        let out = LiveHost
            .run(&Command::new("sh", &["-c", "echo oops >&2; exit 3"]))
            .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stderr.trim(), "oops");
    }

    #[test]
    fn stdin_bytes_reach_the_command() {
        let out = LiveHost
            .run(&Command::new("cat", &[]).stdin(b"line one\nline two\n".to_vec()))
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout_text(), "line one\nline two\n");
    }

    #[test]
    fn a_fifo_is_not_read_and_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("error.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let started = Instant::now();
        assert!(matches!(
            LiveHost.read(&fifo),
            Err(HostError::NotAFile { .. })
        ));
        assert!(matches!(
            LiveHost.open(&fifo),
            Err(HostError::NotAFile { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_tail_is_read_by_seeking() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("big.log");
        std::fs::write(&log, "a".repeat(100) + "\nlast line\n").unwrap();
        let mut tail = String::new();
        LiveHost
            .open_tail(&log, 12)
            .unwrap()
            .read_to_string(&mut tail)
            .unwrap();
        assert_eq!(tail, "a\nlast line\n");
    }

    #[test]
    fn connecting_to_a_missing_unix_socket_gives_enoent() {
        let dir = tempfile::tempdir().unwrap();
        let out = LiveHost.connect(
            &Endpoint::Unix(dir.path().join("nope.sock")),
            Duration::from_secs(1),
        );
        assert!(!out.connected);
        assert_eq!(out.errno, Some(libc::ENOENT));
    }
}
