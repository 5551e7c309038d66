//! Deadline-bounded connections to local services: a non-blocking connect (a unix socket whose
//! backlog is full answers `EAGAIN` at once instead of blocking), then reads and writes that
//! never wait past one deadline for the whole exchange, and reads capped in size.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::deadline as bounded;

use crate::exchange::{ExchangeError, Stage};
use crate::Endpoint;

/// A connected stream whose every read and write is bounded by `deadline`.
#[derive(Debug)]
pub struct Conn {
    inner: Inner,
    /// When every read and write must be done (`started` + the timeout).
    pub deadline: Instant,
    /// When the connect began.
    pub started: Instant,
}

#[derive(Debug)]
enum Inner {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Connects to `endpoint`, waiting at most until `deadline`.
pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Conn, ExchangeError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let fail = |err: std::io::Error| {
        let mut e = ExchangeError::io(Stage::Connect, &err);
        e.millis = started.elapsed().as_millis() as u64;
        e
    };
    // The host's deadline-bounded connects (host/deadline.rs): a unix socket whose backlog is
    // full answers EAGAIN at once, a TCP connect and its name lookup wait until the deadline.
    let inner = match endpoint {
        Endpoint::Unix(path) => Inner::Unix(bounded::connect_unix(path, timeout).map_err(fail)?),
        Endpoint::Tcp(addr) => {
            let s = bounded::connect_tcp(addr, timeout).map_err(fail)?;
            let _ = s.set_nodelay(true);
            Inner::Tcp(s)
        }
    };
    Ok(Conn {
        inner,
        deadline,
        started,
    })
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT))
    } else {
        Ok(left)
    }
}

impl Conn {
    /// Milliseconds since the connect began.
    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Reads until end of stream or `cap` bytes, whichever first (bounded by the deadline).
    pub fn read_capped(&mut self, cap: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while out.len() < cap {
            let n = self.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n.min(cap - out.len())]);
        }
        Ok(out)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = remaining(self.deadline)?;
        match &mut self.inner {
            Inner::Tcp(s) => {
                s.set_read_timeout(Some(left))?;
                s.read(buf)
            }
            Inner::Unix(s) => {
                s.set_read_timeout(Some(left))?;
                s.read(buf)
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = remaining(self.deadline)?;
        match &mut self.inner {
            Inner::Tcp(s) => {
                s.set_write_timeout(Some(left))?;
                s.write(buf)
            }
            Inner::Unix(s) => {
                s.set_write_timeout(Some(left))?;
                s.write(buf)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
