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

impl Host for LiveHost {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        let file = std::fs::File::open(path).map_err(|e| HostError::from_io(path, &e))?;
        let mut bytes = Vec::new();
        file.take(MAX_READ)
            .read_to_end(&mut bytes)
            .map_err(|e| HostError::from_io(path, &e))?;
        Ok(bytes)
    }

    fn open(&self, path: &Path) -> Result<Box<dyn Read + Send>, HostError> {
        let file = std::fs::File::open(path).map_err(|e| HostError::from_io(path, &e))?;
        Ok(Box::new(file))
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
