//! The live machine: real files, real commands (bounded by a timeout), real connections.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{
    Command, CommandOutput, ConnectOutcome, Endpoint, FileKind, FileMeta, FsStats, Host, HostError,
    MAX_READ,
};

/// The most of a command's output that is kept (stdout and stderr each).
const MAX_COMMAND_OUTPUT: usize = 64 * 1024 * 1024;

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
        run_bounded(command)
    }

    fn connect(&self, endpoint: &Endpoint, timeout: Duration) -> ConnectOutcome {
        let started = Instant::now();
        let result = match endpoint {
            Endpoint::Unix(path) => UnixStream::connect(path).map(drop),
            Endpoint::Tcp(addr) => connect_tcp(addr, timeout),
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

fn connect_tcp(addr: &str, timeout: Duration) -> std::io::Result<()> {
    use std::net::ToSocketAddrs;
    let mut last_err = None;
    for socket_addr in addr.to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&socket_addr, timeout) {
            Ok(_) => return Ok(()),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other(format!("{addr}: no address"))))
}

/// Runs a command with piped output, killing it when it outlives its timeout.
fn run_bounded(command: &Command) -> Result<CommandOutput, HostError> {
    let mut child = std::process::Command::new(&command.program)
        .args(&command.args)
        .stdin(if command.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .spawn()
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => HostError::CommandMissing {
                command: command.program.clone(),
            },
            _ => HostError::Io {
                path: command.program.clone(),
                message: err.to_string(),
            },
        })?;
    // Written from a thread so a command that fills its stdout pipe before reading all of its
    // input cannot deadlock us; dropping the pipe at the end closes the command's stdin.
    let stdin = match (child.stdin.take(), command.stdin.clone()) {
        (Some(mut pipe), Some(bytes)) => Some(std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&bytes);
        })),
        _ => None,
    };
    let stdout = child.stdout.take().map(spawn_reader);
    let stderr = child.stderr.take().map(spawn_reader);
    let deadline = Instant::now() + command.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HostError::Timeout {
                    command: command.key(),
                    seconds: command.timeout.as_secs().max(1),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(err) => {
                return Err(HostError::Io {
                    path: command.program.clone(),
                    message: err.to_string(),
                })
            }
        }
    };
    if let Some(writer) = stdin {
        let _ = writer.join();
    }
    let stdout = stdout
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    Ok(CommandOutput {
        status: status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn spawn_reader<R: Read + Send + 'static>(reader: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.take(MAX_COMMAND_OUTPUT as u64).read_to_end(&mut buf);
        buf
    })
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
