//! Waits with a deadline: every connect and every external command the live host makes.
//!
//! - [`connect_unix`] and [`connect_tcp`] connect without blocking and wait for the connection
//!   with `poll(2)` until the deadline. A unix socket whose listen queue is full answers `EAGAIN`
//!   at once (the pool is saturated: that is the finding, not a reason to wait); a name is
//!   resolved in a helper thread bounded by the same deadline.
//! - [`run`] starts a command in its own process group, reads its stdout and stderr with `poll(2)`
//!   until the deadline (a grandchild holding the pipes open does not extend it), and kills the
//!   whole group when the deadline passes.
//!
//! Other code that must wait on something a local user controls should use these, never a
//! blocking call without a bound (see the agent's `trust` module).

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use super::{Command, CommandOutput, HostError};

/// The most of a command's output that is kept (stdout and stderr each).
pub const MAX_COMMAND_OUTPUT: usize = 64 * 1024 * 1024;

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn poll_timeout(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d.min(Duration::from_secs(3600))).unwrap_or(PollTimeout::MAX)
}

/// Waits until `fd` is writable (a non-blocking connect finished) or the deadline passes.
fn wait_connected(fd: &OwnedFd, deadline: Instant) -> io::Result<()> {
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        match nix::poll::poll(&mut fds, poll_timeout(left)) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    match socket::getsockopt(fd, socket::sockopt::SocketError)? {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Connects to a unix stream socket within `timeout`. A full listen queue is `EAGAIN` at once.
/// The stream is returned in blocking mode with read and write timeouts set to what is left.
pub fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    match socket::connect(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => wait_connected(&fd, deadline)?,
        Err(e) => return Err(e.into()),
    }
    let stream = UnixStream::from(fd);
    finish(&stream, deadline, |s, d| {
        s.set_read_timeout(d)?;
        s.set_write_timeout(d)?;
        s.set_nonblocking(false)
    })?;
    Ok(stream)
}

fn finish<S>(
    stream: &S,
    deadline: Instant,
    set: impl Fn(&S, Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let left = remaining(deadline).max(Duration::from_millis(1));
    set(stream, Some(left))
}

/// Resolves `host:port` within the deadline (an address resolves at once; a name in a helper
/// thread, abandoned at the deadline).
pub fn resolve(addr: &str, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(vec![sa]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = addr.to_string();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send(owned.to_socket_addrs().map(|i| i.collect::<Vec<_>>()));
        })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{addr}: name not resolved within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

/// Connects to `host:port` (each resolved address in turn) within `timeout` in all.
pub fn connect_tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    for sa in resolve(addr, timeout)? {
        let left = remaining(deadline);
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&sa, left) {
            Ok(stream) => {
                finish(&stream, deadline, |s, d| {
                    s.set_read_timeout(d)?;
                    s.set_write_timeout(d)
                })?;
                return Ok(stream);
            }
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::ETIMEDOUT)))
}

/// Runs `command` in its own process group, bounded by its timeout: the output is read until
/// the deadline, and at the deadline the whole group is killed.
pub fn run(command: &Command) -> Result<CommandOutput, HostError> {
    let deadline = Instant::now() + command.timeout;
    let program = super::program::resolve(&command.program)?;
    let mut child = std::process::Command::new(&program)
        .args(&command.args)
        .stdin(if command.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .env("PATH", super::program::SEARCH_PATH)
        .process_group(0)
        .spawn()
        .map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => HostError::CommandMissing {
                command: command.program.clone(),
            },
            _ => HostError::Io {
                path: command.program.clone(),
                message: err.to_string(),
            },
        })?;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let kill_group = || {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    };
    // Written from a thread so a command that fills its stdout pipe before reading all of its
    // input cannot deadlock us; the group kill at the deadline ends a stuck write (EPIPE).
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), command.stdin.clone()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&bytes);
        });
    }
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut status = None;
    let timed_out = loop {
        if status.is_none() {
            match child.try_wait() {
                Ok(s) => status = s,
                Err(err) => {
                    kill_group();
                    let _ = child.wait();
                    return Err(HostError::Io {
                        path: command.program.clone(),
                        message: err.to_string(),
                    });
                }
            }
        }
        if status.is_some() && stdout_pipe.is_none() && stderr_pipe.is_none() {
            break false;
        }
        let left = remaining(deadline);
        if left.is_zero() {
            break true;
        }
        let step = left.min(Duration::from_millis(50));
        let mut fds = Vec::with_capacity(2);
        if let Some(p) = &stdout_pipe {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if let Some(p) = &stderr_pipe {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if fds.is_empty() {
            std::thread::sleep(step);
            continue;
        }
        let ready = match nix::poll::poll(&mut fds, poll_timeout(step)) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(_) => break true,
        };
        if ready == 0 {
            continue;
        }
        let flags: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut i = 0;
        if stdout_pipe.is_some() {
            if flags[i] {
                drain(&mut stdout_pipe, &mut stdout);
            }
            i += 1;
        }
        if stderr_pipe.is_some() && flags[i] {
            drain(&mut stderr_pipe, &mut stderr);
        }
    };
    // The group goes either way: nothing the command started outlives the call.
    kill_group();
    if timed_out {
        let _ = child.wait();
        return Err(HostError::Timeout {
            command: command.key(),
            seconds: command.timeout.as_secs().max(1),
        });
    }
    let status = match status {
        Some(s) => s,
        None => child.wait().map_err(|err| HostError::Io {
            path: command.program.clone(),
            message: err.to_string(),
        })?,
    };
    Ok(CommandOutput {
        status: status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Reads what a ready pipe holds (one read never blocks after `poll` said readable); closes it
/// at end of file or when the output passed [`MAX_COMMAND_OUTPUT`].
fn drain<R: Read>(pipe: &mut Option<R>, into: &mut Vec<u8>) {
    let Some(reader) = pipe else {
        return;
    };
    let mut buf = [0u8; 64 * 1024];
    match reader.read(&mut buf) {
        Ok(0) => *pipe = None,
        Ok(n) => {
            let keep = n.min(MAX_COMMAND_OUTPUT.saturating_sub(into.len()));
            into.extend_from_slice(&buf[..keep]);
            if into.len() >= MAX_COMMAND_OUTPUT {
                *pipe = None;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(_) => *pipe = None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_full_listen_queue_is_eagain_at_once_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // A listener with backlog 0 that never accepts: one pending connection fills it.
        let listener = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        socket::bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        socket::listen(&listener, socket::Backlog::new(0).unwrap()).unwrap();
        let started = Instant::now();
        let mut held = Vec::new();
        let mut last = None;
        for _ in 0..300 {
            match connect_unix(&path, Duration::from_secs(2)) {
                Ok(s) => held.push(s),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        let err = last.expect("the queue never filled");
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_grandchild_holding_stdout_does_not_outlive_the_deadline() {
        let cmd = Command::new("sh", &["-c", "sleep 30 & echo started"])
            .timeout(Duration::from_millis(500));
        let started = Instant::now();
        let err = run(&cmd).unwrap_err();
        assert!(matches!(err, HostError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_quick_command_gives_its_whole_output() {
        let out = run(&Command::new("sh", &["-c", "seq 1 100000; echo err >&2"])).unwrap();
        assert!(out.success());
        assert_eq!(out.stdout_text().lines().count(), 100000);
        assert_eq!(out.stderr.trim(), "err");
    }

    #[test]
    fn a_tcp_connect_to_a_closed_port_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = connect_tcp(&addr, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    }
}
