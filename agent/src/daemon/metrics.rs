//! The daemon's metrics: a small registry of the counters and gauges named in DESIGN.md, its
//! Prometheus text exposition (format 0.0.4, written by hand), and a localhost HTTP server on a
//! std `TcpListener` in its own thread that answers `GET /metrics`, `GET /status` (JSON) and 404
//! otherwise, with a bounded request size, a whole-request deadline and a cap on concurrent
//! connections (each served in a thread of its own, off the daemon's work loop).
//!
//! The daemon batches per-line counts and applies them once per poll ([`Batch`]), so the lock is
//! taken a few times per second, not per line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cause::CauseId;
use crate::check::{Check, Status};
use crate::event::LogSource;

use super::tail::PollStats;

/// Counts gathered over one poll, applied to [`Metrics`] in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub lines: BTreeMap<LogSource, u64>,
    pub responses: BTreeMap<u16, u64>,
    pub cause_events: BTreeMap<CauseId, u64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.responses.is_empty() && self.cause_events.is_empty()
    }

    pub fn clear(&mut self) {
        self.lines.clear();
        self.responses.clear();
        self.cause_events.clear();
    }
}

#[derive(Debug, Default)]
struct Inner {
    up: bool,
    incident_open: bool,
    lines: BTreeMap<LogSource, u64>,
    responses: BTreeMap<u16, u64>,
    cause_events: BTreeMap<CauseId, u64>,
    checks: BTreeMap<String, Status>,
    tail_files: u64,
    tail_bytes: u64,
    rotations: u64,
    truncations: u64,
    long_lines: u64,
    read_errors: u64,
    notifications: BTreeMap<(&'static str, &'static str), u64>,
    status: serde_json::Value,
}

/// The registry, shared between the daemon loop and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The value of `origin_agent_check_status`: 0 ok, 1 warning, 2 critical, 3 unknown (skipped).
pub fn check_value(status: Status) -> u8 {
    match status {
        Status::Ok => 0,
        Status::Warn => 1,
        Status::Fail => 2,
        Status::Skip => 3,
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain counters: still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_up(&self, up: bool) {
        self.lock().up = up;
    }

    pub fn set_incident_open(&self, open: bool) {
        self.lock().incident_open = open;
    }

    /// Adds one poll's counts.
    pub fn apply(&self, batch: &Batch) {
        if batch.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for (source, n) in &batch.lines {
            *inner.lines.entry(*source).or_default() += n;
        }
        for (status, n) in &batch.responses {
            *inner.responses.entry(*status).or_default() += n;
        }
        for (cause, n) in &batch.cause_events {
            *inner.cause_events.entry(*cause).or_default() += n;
        }
    }

    /// Adds what the tailer did in one poll.
    pub fn record_poll(&self, stats: &PollStats) {
        let mut inner = self.lock();
        inner.tail_files = stats.files as u64;
        inner.tail_bytes += stats.bytes;
        inner.rotations += stats.rotations;
        inner.truncations += stats.truncations;
        inner.long_lines += stats.long_lines;
        inner.read_errors += stats.errors.len() as u64;
    }

    /// Replaces the check statuses with the latest results.
    pub fn set_checks(&self, checks: &[Check]) {
        let mut inner = self.lock();
        inner.checks = checks.iter().map(|c| (c.id.clone(), c.status)).collect();
    }

    /// Counts a notification by notifier and result (`ok` or `error`).
    pub fn count_notification(&self, notifier: &'static str, result: &'static str) {
        *self
            .lock()
            .notifications
            .entry((notifier, result))
            .or_default() += 1;
    }

    /// Replaces the document served at `/status`.
    pub fn set_status(&self, status: serde_json::Value) {
        self.lock().status = status;
    }

    pub fn status_json(&self) -> String {
        let inner = self.lock();
        if inner.status.is_null() {
            return format!("{{\"up\":{}}}\n", inner.up);
        }
        let mut text = serde_json::to_string_pretty(&inner.status).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Lines counted for a source so far.
    pub fn lines(&self, source: LogSource) -> u64 {
        self.lock().lines.get(&source).copied().unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(4096);
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "origin_agent_up",
            "gauge",
            "1 while the daemon's work loop runs.",
        );
        let _ = writeln!(out, "origin_agent_up {}", u8::from(inner.up));
        family(
            &mut out,
            "origin_agent_incident_open",
            "gauge",
            "1 while a 5xx incident is open.",
        );
        let _ = writeln!(
            out,
            "origin_agent_incident_open {}",
            u8::from(inner.incident_open)
        );
        family(
            &mut out,
            "origin_agent_log_lines_total",
            "counter",
            "Lines read per log source.",
        );
        for (source, n) in &inner.lines {
            let _ = writeln!(
                out,
                "origin_agent_log_lines_total{{source=\"{}\"}} {n}",
                source.as_str()
            );
        }
        family(
            &mut out,
            "origin_agent_responses_total",
            "counter",
            "Access-log responses by status code.",
        );
        for (status, n) in &inner.responses {
            let _ = writeln!(
                out,
                "origin_agent_responses_total{{status=\"{status}\"}} {n}"
            );
        }
        family(
            &mut out,
            "origin_agent_cause_events_total",
            "counter",
            "Log events attributed to each cause id.",
        );
        for (cause, n) in &inner.cause_events {
            let _ = writeln!(
                out,
                "origin_agent_cause_events_total{{cause=\"{}\"}} {n}",
                cause.id()
            );
        }
        family(
            &mut out,
            "origin_agent_check_status",
            "gauge",
            "Latest result of each check: 0 ok, 1 warning, 2 critical, 3 unknown.",
        );
        for (check, status) in &inner.checks {
            let _ = writeln!(
                out,
                "origin_agent_check_status{{check=\"{}\"}} {}",
                escape_label(check),
                check_value(*status)
            );
        }
        family(
            &mut out,
            "origin_agent_tail_files",
            "gauge",
            "Log files open (followed or draining after rotation).",
        );
        let _ = writeln!(out, "origin_agent_tail_files {}", inner.tail_files);
        for (name, help, value) in [
            (
                "origin_agent_tail_bytes_total",
                "Bytes read from log files.",
                inner.tail_bytes,
            ),
            (
                "origin_agent_tail_rotations_total",
                "Log files seen renamed or deleted away.",
                inner.rotations,
            ),
            (
                "origin_agent_tail_truncations_total",
                "Log files seen truncated in place (copytruncate).",
                inner.truncations,
            ),
            (
                "origin_agent_tail_long_lines_total",
                "Log lines cut at the maximum line length.",
                inner.long_lines,
            ),
            (
                "origin_agent_tail_read_errors_total",
                "Failed reads of log files.",
                inner.read_errors,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        family(
            &mut out,
            "origin_agent_notifications_total",
            "counter",
            "Incident notifications sent, by notifier and result.",
        );
        for ((notifier, result), n) in &inner.notifications {
            let _ = writeln!(
                out,
                "origin_agent_notifications_total{{notifier=\"{notifier}\",result=\"{result}\"}} {n}"
            );
        }
        out
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// The most time one connection gets, from accept to the last byte of the answer: a client
/// sending a byte a second cannot hold a connection longer than this.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// The most connections served at once; a new one past it closes the oldest (each lasts at
/// most [`REQUEST_DEADLINE`] anyway), so slow clients can never keep a scrape out.
const MAX_CONNECTIONS: usize = 8;

/// The HTTP server for `/metrics` and `/status`; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves in a new thread: each connection in a
    /// thread of its own, at most [`MAX_CONNECTIONS`] at once (a new one closes the oldest),
    /// each bounded by [`REQUEST_DEADLINE`] in all.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // The connections being served, oldest first, each with a handle to shut it down.
        let active: Arc<Mutex<std::collections::VecDeque<(u64, TcpStream)>>> = Arc::default();
        let thread = std::thread::Builder::new()
            .name("metrics-http".to_string())
            .spawn(move || {
                let mut next_id = 0u64;
                for stream in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else {
                        continue;
                    };
                    let Ok(handle) = stream.try_clone() else {
                        continue;
                    };
                    next_id += 1;
                    let id = next_id;
                    {
                        let mut conns = active.lock().unwrap_or_else(|p| p.into_inner());
                        // At the cap the oldest connection goes: slow clients that reconnect
                        // without end cannot keep a scrape out.
                        while conns.len() >= MAX_CONNECTIONS {
                            if let Some((_, oldest)) = conns.pop_front() {
                                let _ = oldest.shutdown(std::net::Shutdown::Both);
                            }
                        }
                        conns.push_back((id, handle));
                    }
                    let (metrics, conns) = (metrics.clone(), active.clone());
                    let spawned = std::thread::Builder::new()
                        .name("metrics-conn".to_string())
                        .spawn(move || {
                            let _ = serve(Conn::new(stream), &metrics);
                            conns
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .retain(|(c, _)| *c != id);
                        });
                    if spawned.is_err() {
                        active
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .retain(|(c, _)| *c != id);
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept thread (connections in flight end by their own
    /// deadline; nothing waits for them).
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_thread();
        }
    }
}

/// One connection under its whole-request deadline: every read and write gets what is left of
/// it as its timeout, and fails once it has passed.
struct Conn {
    stream: TcpStream,
    deadline: std::time::Instant,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            deadline: std::time::Instant::now() + REQUEST_DEADLINE,
        }
    }

    fn left(&self) -> io::Result<Duration> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request deadline"));
        }
        Ok(left)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Answers one request on one connection, then closes it.
fn serve(mut stream: Conn, metrics: &Metrics) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&buf[..n]);
        if memchr::memmem::find(&head, b"\r\n\r\n").is_some()
            || memchr::memmem::find(&head, b"\n\n").is_some()
        {
            break true;
        }
        if head.len() > MAX_REQUEST {
            // Read (a bounded amount of) the rest, so closing does not reset the connection
            // before the client reads the answer.
            let whole = stream.deadline;
            stream.deadline = whole.min(std::time::Instant::now() + Duration::from_millis(100));
            let mut drained = 0usize;
            while drained < 64 * 1024 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
            stream.deadline = whole;
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                false,
            );
        }
    };
    if !complete {
        return Ok(());
    }
    let line_end = memchr::memchr(b'\n', &head).unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"only GET\n",
            false,
        );
    }
    match path {
        "/metrics" => {
            let body = metrics.render();
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
                head_only,
            )
        }
        "/status" => {
            let body = metrics.status_json();
            respond(
                &mut stream,
                "200 OK",
                "application/json",
                body.as_bytes(),
                head_only,
            )
        }
        "/" => respond(
            &mut stream,
            "200 OK",
            "text/plain",
            b"origin-agent: /metrics (Prometheus), /status (JSON)\n",
            head_only,
        ),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"not found\n",
            head_only,
        ),
    }
}

fn respond(
    stream: &mut impl Write,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn exposition_has_every_family_and_escapes_labels() {
        let m = Metrics::new();
        m.set_up(true);
        let mut batch = Batch::default();
        batch.lines.insert(LogSource::NginxAccess, 7);
        batch.responses.insert(502, 3);
        batch.cause_events.insert(CauseId::UpstreamSaturated, 2);
        m.apply(&batch);
        m.apply(&batch);
        m.set_checks(&[
            Check::fail("php-fpm.pool.www", crate::check::Area::Limits, "t"),
            Check::skip("odd\"id\\x", crate::check::Area::Limits, "t", "why"),
        ]);
        let text = m.render();
        for line in [
            "origin_agent_up 1",
            "origin_agent_incident_open 0",
            "origin_agent_log_lines_total{source=\"nginx_access\"} 14",
            "origin_agent_responses_total{status=\"502\"} 6",
            "origin_agent_cause_events_total{cause=\"upstream.saturated\"} 4",
            "origin_agent_check_status{check=\"php-fpm.pool.www\"} 2",
            "origin_agent_check_status{check=\"odd\\\"id\\\\x\"} 3",
            "# TYPE origin_agent_log_lines_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // Every sample line belongs to a declared family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{l}");
        }
    }

    #[test]
    fn server_answers_metrics_status_404_and_refuses_huge_requests() {
        let m = Arc::new(Metrics::new());
        m.set_up(true);
        m.set_status(serde_json::json!({"up": true, "files": 2}));
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let metrics = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("\r\n\r\n# HELP origin_agent_up"));
        let status = get(addr, b"GET /status?x=1 HTTP/1.0\r\n\r\n");
        let body = status.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["files"], 2);
        assert!(get(addr, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 20_000));
        assert!(get(addr, &huge).starts_with("HTTP/1.1 431"));
        // A client that connects and says nothing does not block the next one for long.
        let _idle = TcpStream::connect(addr).unwrap();
        let start = std::time::Instant::now();
        assert!(get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").contains("origin_agent_up 1"));
        assert!(start.elapsed() < Duration::from_secs(4));
        server.shutdown();
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn slow_clients_neither_hold_a_connection_past_the_deadline_nor_block_a_scrape() {
        let m = Arc::new(Metrics::new());
        m.set_up(true);
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), m).unwrap();
        let addr = server.local_addr();
        // More slow clients than the cap, each sending a header byte now and then.
        let slow: Vec<_> = (0..MAX_CONNECTIONS + 2)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    let started = std::time::Instant::now();
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
                    for _ in 0..10 {
                        std::thread::sleep(Duration::from_millis(500));
                        if s.write_all(b"X").is_err() {
                            break;
                        }
                    }
                    let mut rest = Vec::new();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let _ = s.read_to_end(&mut rest);
                    started.elapsed()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let started = std::time::Instant::now();
        // The first try gets in at once: it closes the oldest slow connection.
        let answer = loop {
            let got = std::panic::catch_unwind(|| get(addr, b"GET /metrics HTTP/1.1\r\n\r\n"));
            match got {
                Ok(text) if text.contains("origin_agent_up 1") => break text,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        assert!(answer.starts_with("HTTP/1.1 200"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        for t in slow {
            let held = t.join().unwrap();
            assert!(
                held < Duration::from_secs(4),
                "a slow client held on {held:?}"
            );
        }
        let started = std::time::Instant::now();
        server.shutdown();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
