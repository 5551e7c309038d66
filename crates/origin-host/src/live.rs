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
        super::client::exchange(request)
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

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), HostError> {
        write_atomic(path, bytes)
    }

    fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        std::fs::remove_file(path).map_err(|e| HostError::from_io(path, &e))
    }

    fn create_dir_all(&self, path: &Path) -> Result<(), HostError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|e| HostError::from_io(path, &e))
    }

    fn is_live(&self) -> bool {
        true
    }
}

/// A temporary file created exclusively beside `path` (`O_EXCL | O_NOFOLLOW`: a planted symlink
/// or file makes it fail, never redirects it), written, synced and renamed over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |p: &Path, e: std::io::Error| HostError::from_io(p, &e);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| HostError::Io {
            path: path.display().to_string(),
            message: "not a file name".into(),
        })?;
    // Keep the mode of the file replaced (not of a symlink's target: lstat).
    let mode = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let tmp = dir.join(format!(".{name}.origin-agent.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| err(&tmp, e))?;
    let written = file
        .write_all(bytes)
        .and_then(|_| file.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|_| file.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(path, e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
    fn writes_are_atomic_keep_the_mode_and_replace_a_symlink_without_following_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.conf");
        LiveHost.write_atomic(&f, b"one").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"one");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        LiveHost.write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        LiveHost.write_atomic(&link, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let sub = dir.path().join("x/y");
        LiveHost.create_dir_all(&sub).unwrap();
        LiveHost.remove_file(&f).unwrap();
        assert!(LiveHost.remove_file(&f).unwrap_err().is_not_found());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
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
