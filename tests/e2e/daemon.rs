//! End-to-end tests of the daemon's parts: the loop against a real nginx writing its access log
//! through logrotate-style rotations and a restart, the metrics endpoint, incidents delivered to a
//! webhook receiver, SIGHUP reload, sd-notify and SIGTERM in a child process, and the packaging
//! (the unit under `systemd-analyze`, the default config, alert rules and dashboard).
//!
//! Everything runs in temp dirs on 127.0.0.1 with ephemeral ports; every wait is bounded.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use origin_agent::check::Check;
use origin_agent::config::{Config, WebhookFormat};
use origin_agent::daemon::incident::{IncidentPolicy, IncidentTracker, NotificationKind};
use origin_agent::daemon::notify::{Logger, Notifier, WebhookNotifier};
use origin_agent::daemon::{
    self, AccessStatusCounter, Control, Diagnoser, LineOutcome, LineProcessor, RunOptions,
    TailSource, TickResult,
};
use origin_agent::event::LogSource;

use crate::util::cmd::run_agent;
use crate::util::services::{self, free_port, wait_for};

const WAIT: Duration = Duration::from_secs(15);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn metric(text: &str, sample: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// The status counter behind a mutex, so the test can read it while the loop runs (and keep it
/// across a restart of the loop).
#[derive(Clone)]
struct Shared(Arc<Mutex<AccessStatusCounter>>);

impl Shared {
    fn new(window: Duration) -> Shared {
        Shared(Arc::new(Mutex::new(AccessStatusCounter::new(window))))
    }
    fn counts(&self) -> (u64, u64) {
        let c = self.0.lock().unwrap();
        (c.responses, c.server_errors)
    }
}

impl LineProcessor for Shared {
    fn line(&mut self, source: LogSource, path: &Path, n: u64, line: &[u8]) -> LineOutcome {
        self.0.lock().unwrap().line(source, path, n, line)
    }
}

impl Diagnoser for Shared {
    fn tick(&mut self, now: jiff::Timestamp) -> TickResult {
        self.0.lock().unwrap().tick(now)
    }
    fn probe(&mut self, _now: jiff::Timestamp) -> Vec<Check> {
        vec![Check::ok(
            "test.probe",
            origin_agent::check::Area::Services,
            "probe ran",
        )]
    }
}

fn fast_options(logger: Option<Logger>) -> RunOptions {
    RunOptions {
        poll_interval: Duration::from_millis(50),
        min_poll_gap: Duration::from_millis(10),
        tick_interval: Duration::from_millis(200),
        checkpoint_interval: Duration::from_millis(500),
        host: Some("test-host".to_string()),
        logger: Some(logger.unwrap_or_else(Logger::stderr)),
        ..RunOptions::default()
    }
}

/// Runs the daemon loop in a thread until the returned guard is stopped or dropped.
struct Running {
    control: Arc<Control>,
    thread: Option<std::thread::JoinHandle<Result<(), daemon::DaemonError>>>,
}

impl Running {
    fn start<P>(config: Config, mut pipeline: P, options: RunOptions) -> Running
    where
        P: LineProcessor + Diagnoser + Send + 'static,
    {
        let control = Arc::new(Control::new());
        let c = control.clone();
        let thread =
            std::thread::spawn(move || daemon::run_with(&config, &mut pipeline, options, &c));
        wait_for("the daemon's first pass", || control.is_ready());
        Running {
            control,
            thread: Some(thread),
        }
    }

    fn metrics_addr(&self) -> SocketAddr {
        self.control.metrics_addr().unwrap()
    }

    fn stop(mut self) {
        self.stop_inner().unwrap();
    }

    fn stop_inner(&mut self) -> Option<()> {
        self.control.stop();
        let thread = self.thread.take()?;
        let start = Instant::now();
        while !thread.is_finished() {
            assert!(start.elapsed() < WAIT, "daemon did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap().unwrap();
        Some(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.control.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn config_yaml(text: &str, dir: &Path) -> Config {
    let path = dir.join("config.yaml");
    fs::write(&path, text).unwrap();
    Config::load(&path).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A real nginx writing a combined access log.

struct Nginx {
    nginx: services::Nginx,
    port: u16,
    /// No lab runs while this nginx does (discovery in other tests looks at every process).
    _lock: crate::lab::Exclusive,
}

impl Nginx {
    /// Starts nginx in `dir` on a free loopback port; `None` (with the reason printed) when
    /// nginx is not installed.
    fn start(dir: &Path) -> Option<Nginx> {
        let lock = crate::lab::exclusive();
        if !Path::new(services::Nginx::BINARY).exists() {
            crate::skip("nginx is not installed (/usr/sbin/nginx)");
            return None;
        }
        let port = free_port();
        let d = dir.display();
        let http = format!(
            "access_log {d}/logs/access.log combined;\n\
               server {{ listen 127.0.0.1:{port};\n\
                 location /ok {{ return 200 \"ok\\n\"; }}\n\
                 location /bad {{ return 502; }} }}"
        );
        let nginx = Nginx {
            nginx: services::Nginx::start(dir, None, "", &http),
            port,
            _lock: lock,
        };
        let addr = nginx.addr();
        wait_for("nginx to listen", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        Some(nginx)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn dir(&self) -> &Path {
        self.nginx.dir()
    }

    fn access_log(&self) -> PathBuf {
        self.dir().join("logs/access.log")
    }

    /// `n` requests, one after the other; each line is in the log when its connection closes.
    fn requests(&self, path: &str, n: usize, expect: u16) {
        for _ in 0..n {
            assert_eq!(http_get(self.addr(), path).0, expect);
        }
    }

    /// What logrotate's postrotate does: `nginx -s reopen` (SIGUSR1 to the master).
    fn reopen(&self) {
        self.nginx.reopen();
        let log = self.access_log();
        wait_for("nginx to reopen its log", || log.exists());
    }
}

#[test]
fn nginx_lines_are_counted_once_across_rename_create_copytruncate_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nginx) = Nginx::start(&dir.path().join("nginx")) else {
        return;
    };
    let state = dir.path().join("state");
    let config = config_yaml(
        &format!(
            "logs:\n  nginx_access: [{}]\nmetrics:\n  listen: 127.0.0.1:0\nstate_dir: {}\n",
            nginx.access_log().display(),
            state.display()
        ),
        dir.path(),
    );
    // Lines from before the agent's first start are history: not counted.
    nginx.requests("/ok", 3, 200);
    let shared = Shared::new(Duration::from_secs(60));
    let running = Running::start(config.clone(), shared.clone(), fast_options(None));
    let metrics_addr = running.metrics_addr();
    assert_ne!(metrics_addr.port(), 0);

    nginx.requests("/ok", 20, 200);
    nginx.requests("/bad", 5, 502);
    wait_for("25 lines", || shared.counts() == (25, 5));
    // The metrics endpoint on the ephemeral port shows the counters.
    wait_for("metrics to show the 502s", || {
        let (code, text) = http_get(metrics_addr, "/metrics");
        code == 200
            && metric(&text, "origin_agent_responses_total{status=\"502\"}") == Some(5)
            && metric(&text, "origin_agent_responses_total{status=\"200\"}") == Some(20)
            && metric(
                &text,
                "origin_agent_log_lines_total{source=\"nginx_access\"}",
            ) == Some(25)
            && metric(&text, "origin_agent_check_status{check=\"test.probe\"}") == Some(0)
            && metric(&text, "origin_agent_up") == Some(1)
    });
    wait_for("/status to show the lines", || {
        let (code, status) = http_get(metrics_addr, "/status");
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        code == 200 && status["host"] == "test-host" && status["lines"]["nginx_access"] == 25
    });

    // logrotate `create`: rename, nginx keeps writing the old file until it reopens.
    let logs = nginx.dir().join("logs");
    fs::rename(nginx.access_log(), logs.join("access.log.1")).unwrap();
    nginx.requests("/ok", 5, 200);
    nginx.reopen();
    nginx.requests("/ok", 10, 200);
    // (A file created and copytruncated within one poll, before the tailer read any of it,
    // cannot be told from a new file: its lines live only in the copy. Real rotations are
    // hours apart; wait for the tailer to have read the new file.)
    wait_for("40 lines", || shared.counts() == (40, 5));
    // logrotate `copytruncate`.
    fs::copy(nginx.access_log(), logs.join("access.log.2")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(nginx.access_log())
        .unwrap()
        .set_len(0)
        .unwrap();
    nginx.requests("/bad", 7, 502);
    let start = Instant::now();
    while shared.counts() != (47, 12) {
        assert!(
            start.elapsed() < WAIT,
            "47 lines: have {:?}",
            shared.counts()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, text) = http_get(metrics_addr, "/metrics");
    assert!(metric(&text, "origin_agent_tail_rotations_total").unwrap() >= 1);
    assert!(metric(&text, "origin_agent_tail_truncations_total").unwrap() >= 1);

    // Stop (checkpoint flushed); traffic and a rotation while the agent is down; start again.
    running.stop();
    assert!(state.join(daemon::CHECKPOINT_FILE).exists());
    nginx.requests("/ok", 6, 200);
    fs::rename(nginx.access_log(), logs.join("access.log.3")).unwrap();
    nginx.reopen();
    nginx.requests("/bad", 4, 502);
    let running = Running::start(config, shared.clone(), fast_options(None));
    wait_for("57 lines", || shared.counts() == (57, 16));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(shared.counts(), (57, 16), "no line read twice");
    running.stop();
}

// ---------------------------------------------------------------------------------------------
// Webhook receiver.

/// Accepts HTTP POSTs on 127.0.0.1:0 and keeps their bodies.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<String>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keep = bodies.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: at most 50 requests over the test binary's life.
            for stream in listener.incoming().take(50) {
                let Ok(mut s) = stream else { continue };
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let Ok(n) = s.read(&mut buf) else { break None };
                    if n == 0 {
                        break None;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break Some(body[..len].to_string());
                        }
                    }
                };
                if let Some(body) = body {
                    keep.lock().unwrap().push(body);
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Receiver {
            addr,
            bodies,
            _thread: thread,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn json(&self) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }
}

#[test]
fn webhook_receives_open_and_close_of_an_incident_from_the_state_machine() {
    let receiver = Receiver::start();
    let json = WebhookNotifier::new(receiver.url(), WebhookFormat::Json, Duration::from_secs(5));
    let slack = WebhookNotifier::new(receiver.url(), WebhookFormat::Slack, Duration::from_secs(5));
    let mut tracker = IncidentTracker::new(IncidentPolicy::default(), "web1");
    let t0 = jiff::Timestamp::from_second(1_790_000_000).unwrap();
    let at = |s: i64| t0.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
    let cause = [(origin_agent::cause::CauseId::UpstreamTimeout, 0.7)];
    let mut notes = Vec::new();
    notes.extend(tracker.tick(at(0), 3, &cause));
    notes.extend(tracker.tick(at(5), 40, &cause));
    for s in (10..100).step_by(5) {
        notes.extend(tracker.tick(at(s), 35, &cause));
    }
    for s in (100..300).step_by(5) {
        notes.extend(tracker.tick(at(s), 0, &[]));
    }
    let kinds: Vec<_> = notes.iter().map(|n| n.kind).collect();
    assert_eq!(kinds, [NotificationKind::Opened, NotificationKind::Closed]);
    for note in &notes {
        json.send(note).unwrap();
    }
    slack.send(&notes[0]).unwrap();
    let got = receiver.json();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["kind"], "opened");
    assert_eq!(got[0]["incident"]["top_cause"], "upstream.timeout");
    assert_eq!(got[0]["incident"]["errors_per_minute"], 40);
    assert_eq!(got[1]["kind"], "closed");
    assert_eq!(got[1]["incident"]["id"], got[0]["incident"]["id"]);
    assert_eq!(got[1]["incident"]["peak_errors_per_minute"], 40);
    assert!(got[1]["incident"]["closed_at"].is_string());
    let text = got[2]["text"].as_str().unwrap();
    assert!(
        text.contains("incident opened") && text.contains("upstream.timeout"),
        "{text}"
    );
}

#[test]
fn the_daemon_loop_opens_and_closes_an_incident_and_tells_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let log = dir.path().join("access.log");
    fs::write(&log, "").unwrap();
    let config = config_yaml(
        &format!(
            "logs:\n  nginx_access: [{}]\nmetrics:\n  listen: 127.0.0.1:0\nstate_dir: {}\n\
             daemon:\n  incident_threshold: 30\nnotify:\n  webhook: {}\n",
            log.display(),
            dir.path().join("state").display(),
            receiver.url()
        ),
        dir.path(),
    );
    let mut options = fast_options(None);
    options.incident.quiet_to_close = Duration::from_millis(600);
    // A 2 s window: 20 errors in it are 600 per minute.
    let running = Running::start(config, Shared::new(Duration::from_secs(2)), options);
    let mut lines = String::new();
    for i in 0..20 {
        lines.push_str(&format!(
            "203.0.113.{i} - - [24/Nov/2026:08:00:00 +0000] \"GET /x HTTP/1.1\" 502 157 \"-\" \"curl/8\"\n"
        ));
    }
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let addr = running.metrics_addr();
    wait_for("the incident to open", || {
        metric(&http_get(addr, "/metrics").1, "origin_agent_incident_open") == Some(1)
    });
    // The errors stop: after the window empties and the quiet period passes, it closes.
    wait_for("open and close at the webhook", || {
        receiver.json().len() >= 2
    });
    let got = receiver.json();
    assert_eq!(got[0]["kind"], "opened");
    assert_eq!(got[0]["incident"]["host"], "test-host");
    assert!(got[0]["incident"]["errors_per_minute"].as_u64().unwrap() >= 30);
    assert_eq!(got[1]["kind"], "closed");
    assert_eq!(
        metric(&http_get(addr, "/metrics").1, "origin_agent_incident_open"),
        Some(0)
    );
    wait_for("the webhook sends to be counted", || {
        metric(
            &http_get(addr, "/metrics").1,
            "origin_agent_notifications_total{notifier=\"webhook\",result=\"ok\"}",
        ) == Some(2)
    });
    running.stop();
    assert_eq!(receiver.json().len(), 2, "no further notifications");
}

#[test]
fn the_whitelist_reapply_tells_the_webhook_only_when_something_happened() {
    // Never reaches a firewall: no whitelist was applied (nothing to re-apply), then a saved
    // state that cannot be read (the re-apply fails before anything is read or changed).
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let log = dir.path().join("access.log");
    fs::write(&log, "").unwrap();
    let state = dir.path().join("state");
    let config = config_yaml(
        &format!(
            "logs:\n  nginx_access: [{}]\nmetrics:\n  listen: 127.0.0.1:0\nstate_dir: {}\n\
             daemon:\n  whitelist_every: 1s\nnotify:\n  webhook: {}\n",
            log.display(),
            state.display(),
            receiver.url()
        ),
        dir.path(),
    );
    let running = Running::start(
        config,
        Shared::new(Duration::from_secs(2)),
        fast_options(None),
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        receiver.json().is_empty(),
        "sent with nothing to keep current"
    );
    fs::create_dir_all(state.join("whitelist")).unwrap();
    fs::write(state.join("whitelist/before-last-apply.json"), "{not json").unwrap();
    wait_for("the failed re-apply at the webhook", || {
        !receiver.json().is_empty()
    });
    running.stop();
    let got = receiver.json();
    assert_eq!(got[0]["kind"], "whitelist_failed");
    let summary = got[0]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("CDN whitelist NOT kept current:")
            && summary.contains("unreadable saved state"),
        "{summary}"
    );
}

// ---------------------------------------------------------------------------------------------
// SIGHUP reload (through the control flag the signal handler sets).

#[test]
fn reload_refuses_a_broken_config_and_applies_a_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let journal_path = dir.path().join("journal.sock");
    let journal = UnixDatagram::bind(&journal_path).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let logger = Logger::journal(&journal_path).unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let yaml = |logs: &str| {
        format!(
            "logs:\n  nginx_access: [{logs}]\nmetrics:\n  listen: 127.0.0.1:0\nstate_dir: {}\n",
            dir.path().join("state").display()
        )
    };
    let config = config_yaml(&yaml(&a.display().to_string()), dir.path());
    let config_path = config.path.clone().unwrap();
    let shared = Shared::new(Duration::from_secs(60));
    let running = Running::start(config, shared.clone(), fast_options(Some(logger)));
    let line = "1.2.3.4 - - [24/Nov/2026:08:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"\n";
    fs::write(&a, line).unwrap();
    fs::write(&b, line).unwrap();
    wait_for("a.log's line", || shared.counts().0 == 1);

    let message = |want: &str| -> String {
        let mut buf = vec![0u8; 65536];
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(n) = journal.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.contains(want) {
                    return text;
                }
            }
        }
        panic!("no log message with {want:?}");
    };
    fs::write(&config_path, "logs:\n  nginx_acess: [/x]\n").unwrap();
    running.control.reload();
    let refused = message("config reload failed, keeping the running config");
    assert!(refused.contains("nginx_acess"), "{refused}");
    // The old config still runs: a.log is still followed.
    OpenOptions::new()
        .append(true)
        .open(&a)
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    wait_for("a.log's second line", || shared.counts().0 == 2);

    fs::write(
        &config_path,
        yaml(&format!("{}, {}", a.display(), b.display())),
    )
    .unwrap();
    running.control.reload();
    message("configuration reloaded");
    // A newly configured file starts at its end once the new tailer has seen it.
    let addr = running.metrics_addr();
    let b_name = b.display().to_string();
    wait_for("the new tailer to follow b.log", || {
        http_get(addr, "/status").1.contains(&b_name)
    });
    // b.log existed before the reload: a newly configured file starts at its end.
    OpenOptions::new()
        .append(true)
        .open(&b)
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    wait_for("b.log's new line", || shared.counts().0 == 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(shared.counts().0, 3);
    running.stop();
}

// ---------------------------------------------------------------------------------------------
// sd-notify and SIGTERM: the daemon with real signal handling runs in a child process (this
// test binary, running only the ignored test below), so NOTIFY_SOCKET and the signal handlers
// never touch the other tests.

#[test]
#[ignore = "run by sd_notify_ready_watchdog_and_sigterm in a child process"]
fn daemon_child_process() {
    let Some(path) = std::env::var_os("ORIGIN_AGENT_TEST_CONFIG") else {
        return;
    };
    let config = Config::load(Path::new(&path)).unwrap();
    let mut counter = AccessStatusCounter::new(Duration::from_secs(60));
    daemon::run(&config, &mut counter).unwrap();
}

#[test]
fn sd_notify_ready_watchdog_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        format!(
            "logs:\n  nginx_access: [{}]\nmetrics:\n  listen: 127.0.0.1:0\nstate_dir: {}\n",
            dir.path().join("access.log").display(),
            state.display()
        ),
    )
    .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: a shell that execs keeps its pid.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "daemon::daemon_child_process",
            "--ignored",
            "--test-threads=1",
        ])
        .env("ORIGIN_AGENT_TEST_CONFIG", &config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Reap<'a>(&'a mut Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let child = Reap(&mut child);
    let mut seen = Vec::<String>::new();
    let receive_until = |want: &str, seen: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if seen.iter().any(|m| m.lines().any(|l| l == want)) {
                return;
            }
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        panic!("no {want} from the daemon; got {seen:?}");
    };
    receive_until("READY=1", &mut seen);
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS="), "{ready}");
    receive_until("WATCHDOG=1", &mut seen);
    // A second ping shows it comes from the loop, not once at start.
    let pings_before = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let start = Instant::now();
    while seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() == pings_before {
        assert!(start.elapsed() < WAIT, "watchdog pings stopped");
        let mut buf = [0u8; 4096];
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    let sent = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    receive_until("STOPPING=1", &mut seen);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "no exit within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let checkpoint = fs::read_to_string(state.join(daemon::CHECKPOINT_FILE)).unwrap();
    assert!(checkpoint.contains("\"version\": 1"));
}

// ---------------------------------------------------------------------------------------------
// Packaging.

#[test]
fn unit_file_passes_systemd_analyze_verify_and_security() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        crate::skip("systemd-analyze is not installed");
        return;
    }
    let unit = fs::read_to_string(repo_root().join("systemd/origin-agent.service")).unwrap();
    for required in [
        "Type=notify",
        "ExecStartPre=/usr/bin/origin-agent config check",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "StateDirectory=origin-agent",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.contains(required), "unit lacks {required}");
    }
    // verify checks that ExecStart= exists: point it at the binary this build made.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("origin-agent.service");
    let binary = env!("CARGO_BIN_EXE_origin-agent");
    fs::write(
        &copy,
        unit.replace("/usr/bin/origin-agent", binary).replace(
            "man:origin-agent(1)",
            "https://example.invalid/origin-agent",
        ),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for")?
                .1
                .split(':')
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in {text}"));
    eprintln!("systemd-analyze security exposure: {exposure}");
    assert!(exposure <= 4.9, "exposure {exposure} > 4.9");
}

/// The metric names the daemon exposes (from a registry with every family present).
fn exposed_metric_names() -> Vec<String> {
    let m = origin_agent::daemon::metrics::Metrics::new();
    let text = m.render();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn referenced_metrics(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("origin_agent_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn default_config_alert_rules_and_dashboard_match_the_code() {
    let root = repo_root();
    // The shipped config is valid as is (all commented out) ...
    let text = fs::read_to_string(root.join("packaging/config.yaml")).unwrap();
    Config::from_yaml(&text, Path::new("packaging/config.yaml")).unwrap();
    // ... and every example setting in it is a real key with a valid value.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            // `#key: value` and `#  nested: value` are settings; `# text` is prose.
            Some(rest)
                if !rest.is_empty() && (!rest.starts_with(' ') || rest.starts_with("  ")) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_yaml(&uncommented, Path::new("uncommented.yaml")).unwrap();
    assert_eq!(config.incident_threshold, 10);
    assert_eq!(config.webhook_format, WebhookFormat::Json);
    assert_eq!(
        daemon::sources_from_config(&config).first(),
        Some(&TailSource {
            source: LogSource::NginxAccess,
            pattern: "/var/log/nginx/access.log".to_string()
        })
    );

    let names = exposed_metric_names();
    for required in [
        "origin_agent_log_lines_total",
        "origin_agent_responses_total",
        "origin_agent_cause_events_total",
        "origin_agent_check_status",
        "origin_agent_incident_open",
        "origin_agent_up",
    ] {
        assert!(names.iter().any(|n| n == required), "{required}");
    }
    // Alert rules: valid YAML, each rule complete, only real metric names.
    let rules_text =
        fs::read_to_string(root.join("packaging/prometheus/origin-agent.rules.yml")).unwrap();
    let rules: serde_json::Value = yaml_serde::from_str(&rules_text).unwrap();
    let list = rules["groups"][0]["rules"].as_array().unwrap();
    assert!(list.len() >= 5);
    for rule in list {
        for key in ["alert", "expr", "for"] {
            assert!(rule[key].is_string(), "{rule}: {key}");
        }
        assert!(rule["labels"]["severity"].is_string(), "{rule}");
        assert!(rule["annotations"]["summary"].is_string(), "{rule}");
    }
    for name in referenced_metrics(&rules_text) {
        assert!(
            names.contains(&name),
            "alert rules use unknown metric {name}"
        );
    }
    // Dashboard: valid JSON, panels with queries, only real metric names.
    let dash_text = fs::read_to_string(root.join("packaging/grafana/origin-agent.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash_text).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for panel in panels {
        assert!(panel["targets"][0]["expr"].is_string(), "{panel}");
    }
    for name in referenced_metrics(&dash_text) {
        assert!(
            names.contains(&name),
            "dashboard uses unknown metric {name}"
        );
    }
    // The .deb ships what the brief lists.
    let cargo = fs::read_to_string(root.join("agent/Cargo.toml")).unwrap();
    for asset in [
        "etc/origin-agent/config.yaml",
        "usr/share/origin-agent/rules/",
        "target/assets/man/*.1",
        "completions/origin-agent.bash",
        "completions/_origin-agent",
        "completions/origin-agent.fish",
        "unit-scripts = \"../systemd\"",
    ] {
        assert!(cargo.contains(asset), "deb metadata lacks {asset}");
    }
}

// ---------------------------------------------------------------------------------------------
// Budgets (measured, not timed in CI): run with
//   cargo test --release --test e2e daemon::daemon_budgets -- --ignored --nocapture

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100);
    ticks as f64 / hz as f64
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn daemon_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    fs::write(&log, "").unwrap();
    let port = free_port();
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        format!(
            "logs:\n  nginx_access: [{}]\nmetrics:\n  listen: 127.0.0.1:{port}\nstate_dir: {}\n",
            log.display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "daemon::daemon_child_process",
            "--ignored",
            "--test-threads=1",
        ])
        .env("ORIGIN_AGENT_TEST_CONFIG", &config)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Until the first pass, an existing file is history (read from its end): wait for it.
    let name = log.display().to_string();
    wait_for("the child daemon to follow the log", || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
            && http_get(addr, "/status").1.contains(&name)
    });
    let lines_read = || {
        metric(
            &http_get(addr, "/metrics").1,
            "origin_agent_log_lines_total{source=\"nginx_access\"}",
        )
        .unwrap_or(0)
    };
    let mut file = OpenOptions::new().append(true).open(&log).unwrap();
    let line = |i: u64, status: u16| {
        format!(
            "198.51.100.{} - - [24/Nov/2026:08:00:00 +0000] \"GET /wp-content/themes/x/style.css?ver={i} HTTP/1.1\" {status} 5120 \"https://example.com/\" \"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0\"\n",
            i % 250
        )
    };
    let mut written = 0u64;
    // Steady: 2,000 lines/s for 10 s, in 10 ms batches; 1% 502.
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    for tick in 0..1000u64 {
        let mut batch = String::new();
        for _ in 0..20 {
            written += 1;
            batch.push_str(&line(written, if written % 100 == 0 { 502 } else { 200 }));
        }
        file.write_all(batch.as_bytes()).unwrap();
        let next = t0 + Duration::from_millis(10 * (tick + 1));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    wait_for("steady lines read", || lines_read() == written);
    let steady_cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let steady_rss = status_kib(pid, "VmRSS:");
    // Latency of one 502 to the metrics.
    let before = metric(
        &http_get(addr, "/metrics").1,
        "origin_agent_responses_total{status=\"502\"}",
    )
    .unwrap_or(0);
    let t = Instant::now();
    written += 1;
    file.write_all(line(written, 502).as_bytes()).unwrap();
    wait_for("the 502 in the metrics", || {
        metric(
            &http_get(addr, "/metrics").1,
            "origin_agent_responses_total{status=\"502\"}",
        ) == Some(before + 1)
    });
    let latency = t.elapsed();
    // Flood: 50,000 lines/s for 5 s.
    let t1 = Instant::now();
    for tick in 0..500u64 {
        let mut batch = String::with_capacity(500 * 200);
        for _ in 0..500 {
            written += 1;
            batch.push_str(&line(written, 200));
        }
        file.write_all(batch.as_bytes()).unwrap();
        let next = t1 + Duration::from_millis(10 * (tick + 1));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    wait_for("flood lines read", || lines_read() == written);
    let catch_up = t1.elapsed();
    let hwm = status_kib(pid, "VmHWM:");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    eprintln!(
        "budgets: steady 2000 lines/s: cpu {steady_cpu:.2}% of a core, rss {} KiB; \
         502 -> metrics in {} ms; flood 50000 lines/s x 5 s read in {:.2} s, peak rss {} KiB",
        steady_rss,
        latency.as_millis(),
        catch_up.as_secs_f64(),
        hwm
    );
    assert!(latency < Duration::from_secs(2));
    assert!(hwm < 64 * 1024, "peak rss {hwm} KiB");
}

// ---------------------------------------------------------------------------------------------
// The real pipeline (same parser, rules and diagnosis as `audit`) against a real lab.

/// Saturate a real PHP-FPM pool behind real nginx: the daemon opens an incident whose top cause
/// is `upstream.saturated`, tells the webhook, and closes it once the errors stop.
#[test]
fn a_saturated_pool_opens_an_incident_with_the_right_cause_and_closes_it() {
    use origin_agent::daemon::pipeline::AgentPipeline;
    let Some(mut lab) = crate::lab::start_or_skip(crate::scenarios::pool_exhausted_options())
    else {
        return;
    };
    let receiver = Receiver::start();
    let mut config = Config::load(&lab.write_agent_config().unwrap()).unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.incident_threshold = 5;
    config.webhook = Some(receiver.url());
    config.probe_interval = Duration::from_secs(3600);
    let pipeline = AgentPipeline::new(Arc::new(origin_agent::host::live::LiveHost), &config)
        .with_rate_window(Duration::from_secs(3));
    let mut options = fast_options(None);
    options.incident.quiet_to_close = Duration::from_secs(1);
    options.incident.min_stable = Duration::ZERO;
    let running = Running::start(config, pipeline, options);

    let outcome = crate::scenarios::pool_exhausted(&mut lab).unwrap();
    assert!(
        outcome.statuses().contains(&502),
        "{:?}",
        outcome.statuses()
    );
    wait_for("the incident's open and close at the webhook", || {
        receiver.json().iter().any(|n| n["kind"] == "closed")
    });
    let got = receiver.json();
    let opened = got
        .iter()
        .find(|n| n["kind"] == "opened")
        .expect("an opened notification");
    assert_eq!(
        opened["incident"]["top_cause"], "upstream.saturated",
        "{opened}"
    );
    let text = http_get(running.metrics_addr(), "/metrics").1;
    assert!(
        metric(&text, "origin_agent_responses_total{status=\"502\"}").unwrap_or(0) >= 1,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "origin_agent_cause_events_total{cause=\"upstream.saturated\"}"
        )
        .unwrap_or(0)
            >= 1,
        "{text}"
    );
    running.stop();
}

/// `origin-agent status` reads a running daemon's /status: the open incident and its cause.
#[test]
fn status_reports_the_running_daemons_incident() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    fs::write(&log, "").unwrap();
    let config = config_yaml(
        &format!(
            "logs:\n  nginx_access: [{}]\nmetrics:\n  listen: 127.0.0.1:0\nstate_dir: {}\ndaemon:\n  incident_threshold: 30\n",
            log.display(),
            dir.path().join("state").display()
        ),
        dir.path(),
    );
    let running = Running::start(
        config,
        Shared::new(Duration::from_secs(2)),
        fast_options(None),
    );
    let addr = running.metrics_addr().to_string();
    let status = |json: bool| {
        let mut args = vec!["status", "--listen", addr.as_str()];
        if json {
            args.push("--json");
        }
        run_agent(&args)
    };
    let quiet = status(false);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&quiet.stdout).starts_with("No open incident."));

    let lines: String = (0..20)
        .map(|i| format!("203.0.113.{i} - - [24/Nov/2026:08:00:00 +0000] \"GET /x HTTP/1.1\" 502 157 \"-\" \"curl/8\"\n"))
        .collect();
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    wait_for("the incident to open", || {
        status(false).status.code() == Some(2)
    });
    let json: serde_json::Value = serde_json::from_slice(&status(true).stdout).unwrap();
    assert!(json["incident"]["opened_at"].is_string(), "{json}");
    assert!(String::from_utf8_lossy(&status(false).stdout).starts_with("INCIDENT "));
    running.stop();

    let gone = status(false);
    assert_eq!(gone.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no daemon answers"));
}
