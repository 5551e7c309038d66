//! Where the daemon's words go: its own log ([`Logger`]: structured entries in the systemd
//! journal through the native protocol on `/run/systemd/journal/socket`, or lines on stderr when
//! there is no journal), and incident notifications ([`Notifier`]s: the log, a webhook with the
//! incident as JSON or in Slack's `{"text": ...}` shape, an exec hook that gets the JSON on its
//! standard input). What a keep-current re-apply of the CDN whitelist changed (or why it failed)
//! goes the same ways ([`Notifier::send_whitelist`]). Notifications are sent from one worker thread ([`Dispatcher`]) behind a small
//! bounded queue, so a slow webhook never stalls the tailing loop; every send is bounded in time.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Config, WebhookFormat};
use crate::whitelist::current::WhitelistNote;

use super::incident::{Notification, NotificationKind};
use super::metrics::Metrics;

/// The journal's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Syslog priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// The daemon's log: journal entries with fields, or stderr lines.
#[derive(Debug, Clone)]
pub struct Logger {
    journal: Option<Arc<UnixDatagram>>,
    min: Level,
}

impl Logger {
    /// The journal when its socket exists, else stderr.
    pub fn detect() -> Logger {
        if Path::new(JOURNAL_SOCKET).exists() {
            if let Ok(logger) = Logger::journal(Path::new(JOURNAL_SOCKET)) {
                return logger;
            }
        }
        Logger::stderr()
    }

    pub fn stderr() -> Logger {
        Logger {
            journal: None,
            min: Level::Info,
        }
    }

    /// Logs to the journal socket at `path` (tests point it at their own socket).
    pub fn journal(path: &Path) -> io::Result<Logger> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Logger {
            journal: Some(Arc::new(socket)),
            min: Level::Info,
        })
    }

    /// Logs `message` with extra journal fields (names in upper case: `ORIGIN_AGENT_CAUSE`).
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        if level > self.min {
            return;
        }
        if let Some(socket) = &self.journal {
            let entry = journal_entry(level, message, fields);
            if socket.send(&entry).is_ok() {
                return;
            }
        }
        let message = crate::report::escape::controls(message);
        let mut line = format!("origin-agent[{}]: {message}", level.label());
        for (key, value) in fields {
            line.push_str(&format!(" {}={value:?}", key.to_ascii_lowercase()));
        }
        let _ = writeln!(io::stderr().lock(), "{line}");
    }

    pub fn error(&self, message: &str) {
        self.log(Level::Error, message, &[]);
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warning, message, &[]);
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message, &[]);
    }
}

/// One entry in the journal's native protocol: `KEY=value\n`, or for values with a newline
/// `KEY\n` + the length as 64-bit little endian + the value + `\n`.
pub fn journal_entry(level: Level, message: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + message.len());
    let priority = (level as u8).to_string();
    let base = [
        ("MESSAGE", message),
        ("PRIORITY", priority.as_str()),
        ("SYSLOG_IDENTIFIER", "origin-agent"),
    ];
    for (key, value) in base.iter().chain(fields.iter()) {
        let key: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        let key = key.trim_start_matches('_');
        if key.is_empty() {
            continue;
        }
        out.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("webhook {url}: {message}")]
    Webhook { url: String, message: String },
    #[error("cannot run {program}: {source}")]
    ExecStart { program: PathBuf, source: io::Error },
    #[error("{program} exited with {status}")]
    ExecFailed { program: PathBuf, status: String },
    #[error("{program} did not finish within {seconds} s and was killed")]
    ExecTimeout { program: PathBuf, seconds: u64 },
}

/// Somewhere incident notifications go.
pub trait Notifier: Send + std::fmt::Debug {
    /// A short name for logs and metrics: `log`, `webhook`, `exec`.
    fn name(&self) -> &'static str;
    fn send(&self, note: &Notification) -> Result<(), NotifyError>;
    /// Sends what a keep-current re-apply of the CDN whitelist changed, or why it failed.
    fn send_whitelist(&self, note: &WhitelistNote) -> Result<(), NotifyError>;
}

/// Notifications into the daemon's own log (journal fields or stderr).
#[derive(Debug, Clone)]
pub struct LogNotifier {
    pub logger: Logger,
}

impl Notifier for LogNotifier {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send(&self, note: &Notification) -> Result<(), NotifyError> {
        let level = match note.kind {
            NotificationKind::Opened | NotificationKind::CauseChanged => Level::Warning,
            NotificationKind::Closed => Level::Notice,
        };
        let cause = note.incident.top_cause.map_or("", |c| c.id());
        let rate = note.incident.errors_per_minute.to_string();
        self.logger.log(
            level,
            &note.summary,
            &[
                ("ORIGIN_AGENT_EVENT", note.kind.as_str()),
                ("ORIGIN_AGENT_INCIDENT", &note.incident.id),
                ("ORIGIN_AGENT_CAUSE", cause),
                ("ORIGIN_AGENT_ERRORS_PER_MINUTE", &rate),
            ],
        );
        Ok(())
    }

    fn send_whitelist(&self, note: &WhitelistNote) -> Result<(), NotifyError> {
        let level = if note.failure.is_some() {
            Level::Warning
        } else {
            Level::Notice
        };
        self.logger
            .log(level, &note.summary, &[("ORIGIN_AGENT_EVENT", note.kind)]);
        Ok(())
    }
}

/// The JSON body a webhook or exec hook gets.
pub fn notification_json(note: &Notification) -> String {
    serde_json::to_string(note).unwrap_or_else(|_| "{}".to_string())
}

/// Slack's incoming-webhook shape.
pub fn slack_json(note: &Notification) -> String {
    let icon = match note.kind {
        NotificationKind::Opened => ":rotating_light:",
        NotificationKind::CauseChanged => ":mag:",
        NotificationKind::Closed => ":white_check_mark:",
    };
    let mut text = format!("{icon} {}", crate::report::escape::controls(&note.summary));
    if let Some(first) = note.incident.causes.first() {
        text.push_str(&format!(
            "\n> `{}` (score {:.2}): {}",
            first.cause.id(),
            first.score,
            first.title
        ));
    }
    serde_json::json!({ "text": text }).to_string()
}

/// The JSON body of a whitelist note (webhook, exec hook).
pub fn whitelist_json(note: &WhitelistNote) -> String {
    serde_json::to_string(note).unwrap_or_else(|_| "{}".to_string())
}

/// A whitelist note in Slack's shape.
pub fn whitelist_slack_json(note: &WhitelistNote) -> String {
    let icon = if note.failure.is_some() {
        ":warning:"
    } else {
        ":shield:"
    };
    let text = format!("{icon} {}", crate::report::escape::controls(&note.summary));
    serde_json::json!({ "text": text }).to_string()
}

/// POSTs notifications to a URL.
#[derive(Debug)]
pub struct WebhookNotifier {
    url: String,
    format: WebhookFormat,
    agent: ureq::Agent,
}

impl WebhookNotifier {
    pub fn new(url: impl Into<String>, format: WebhookFormat, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(true)
            .max_redirects(0)
            .user_agent(concat!("origin-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        WebhookNotifier {
            url: url.into(),
            format,
            agent,
        }
    }
}

impl Notifier for WebhookNotifier {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send(&self, note: &Notification) -> Result<(), NotifyError> {
        self.post(match self.format {
            WebhookFormat::Json => notification_json(note),
            WebhookFormat::Slack => slack_json(note),
        })
    }

    fn send_whitelist(&self, note: &WhitelistNote) -> Result<(), NotifyError> {
        self.post(match self.format {
            WebhookFormat::Json => whitelist_json(note),
            WebhookFormat::Slack => whitelist_slack_json(note),
        })
    }
}

impl WebhookNotifier {
    fn post(&self, body: String) -> Result<(), NotifyError> {
        self.agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(body)
            .map(|_| ())
            .map_err(|err| NotifyError::Webhook {
                url: self.url.clone(),
                message: err.to_string(),
            })
    }
}

/// Runs a program with the notification JSON on stdin and `ORIGIN_AGENT_EVENT` in its
/// environment; killed when it takes longer than the timeout.
#[derive(Debug, Clone)]
pub struct ExecNotifier {
    pub program: PathBuf,
    pub timeout: Duration,
}

impl Notifier for ExecNotifier {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn send(&self, note: &Notification) -> Result<(), NotifyError> {
        self.run(
            note.kind.as_str(),
            &note.incident.id,
            notification_json(note),
        )
    }

    fn send_whitelist(&self, note: &WhitelistNote) -> Result<(), NotifyError> {
        self.run(note.kind, "", whitelist_json(note))
    }
}

impl ExecNotifier {
    /// Runs the hook with `json` on its standard input, bounded by the timeout.
    fn run(&self, event: &str, incident: &str, json: String) -> Result<(), NotifyError> {
        let start_err = |source| NotifyError::ExecStart {
            program: self.program.clone(),
            source,
        };
        let mut child = Command::new(&self.program)
            .env("ORIGIN_AGENT_EVENT", event)
            .env("ORIGIN_AGENT_INCIDENT", incident)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(start_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            // Written from a thread: a note larger than a pipe buffer (a failure carries the
            // firewall tool's stderr) to a hook that does not read would otherwise block before
            // the deadline is watched; the group kill at the deadline ends the write (EPIPE).
            std::thread::spawn(move || {
                let _ = stdin.write_all(json.as_bytes());
            });
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(NotifyError::ExecFailed {
                        program: self.program.clone(),
                        status: status.to_string(),
                    })
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    // The hook's whole process group: nothing it started outlives the deadline.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(child.id() as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = child.wait();
                    return Err(NotifyError::ExecTimeout {
                        program: self.program.clone(),
                        seconds: self.timeout.as_secs(),
                    });
                }
                Err(source) => return Err(start_err(source)),
            }
        }
    }
}

/// The notifiers a config asks for: the log always, then the webhook and the exec hook.
pub fn notifiers_from_config(config: &Config, logger: &Logger) -> Vec<Box<dyn Notifier>> {
    let mut out: Vec<Box<dyn Notifier>> = vec![Box::new(LogNotifier {
        logger: logger.clone(),
    })];
    if let Some(url) = &config.webhook {
        out.push(Box::new(WebhookNotifier::new(
            url.clone(),
            config.webhook_format,
            Duration::from_secs(5),
        )));
    }
    if let Some(program) = &config.notify_exec {
        out.push(Box::new(ExecNotifier {
            program: program.clone(),
            timeout: Duration::from_secs(10),
        }));
    }
    out
}

/// Sends notifications from a worker thread; a full queue drops (and logs) rather than blocks.
#[derive(Debug)]
pub struct Dispatcher {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    logger: Logger,
}

#[derive(Debug)]
enum Job {
    Send(Box<Notification>),
    Whitelist(Box<WhitelistNote>),
    Replace(Vec<Box<dyn Notifier>>),
}

/// A handle that queues notifications from another thread (the whitelist re-apply's).
#[derive(Debug, Clone)]
pub struct NotifySender {
    tx: SyncSender<Job>,
    logger: Logger,
}

impl NotifySender {
    /// Queues a whitelist note for every notifier (never blocks: a full queue drops it).
    pub fn send_whitelist(&self, note: WhitelistNote) {
        queue(&self.tx, &self.logger, Job::Whitelist(Box::new(note)));
    }
}

fn queue(tx: &SyncSender<Job>, logger: &Logger, job: Job) {
    match tx.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            logger.warn("notification queue full: a notification was dropped")
        }
        Err(TrySendError::Disconnected(_)) => logger.error("notification worker is gone"),
    }
}

/// Sends a whitelist note at once through the config's webhook and exec hook (the command line's
/// `cdn update`, which prints the line itself); the errors, in words.
pub fn send_whitelist_now(config: &Config, note: &WhitelistNote) -> Vec<String> {
    notifiers_from_config(config, &Logger::stderr())
        .iter()
        .filter(|n| n.name() != "log")
        .filter_map(|n| n.send_whitelist(note).err())
        .map(|e| format!("notification failed: {e}"))
        .collect()
}

/// Notifications waiting at most.
const QUEUE: usize = 32;

impl Dispatcher {
    pub fn start(
        notifiers: Vec<Box<dyn Notifier>>,
        logger: Logger,
        metrics: Option<Arc<Metrics>>,
    ) -> io::Result<Dispatcher> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let log = logger.clone();
        let thread = std::thread::Builder::new()
            .name("notify".to_string())
            .spawn(move || worker(rx, notifiers, log, metrics))?;
        Ok(Dispatcher {
            tx: Some(tx),
            thread: Some(thread),
            logger,
        })
    }

    /// Queues a notification for every notifier.
    pub fn send(&self, note: Notification) {
        if let Some(tx) = &self.tx {
            queue(tx, &self.logger, Job::Send(Box::new(note)));
        }
    }

    /// A handle for other threads (`None` once finishing).
    pub fn sender(&self) -> Option<NotifySender> {
        self.tx.as_ref().map(|tx| NotifySender {
            tx: tx.clone(),
            logger: self.logger.clone(),
        })
    }

    /// Uses new notifiers from the next notification on (after a config reload).
    pub fn replace(&self, notifiers: Vec<Box<dyn Notifier>>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Replace(notifiers));
        }
    }

    /// Sends what is queued (each send is bounded in time) and stops the worker, waiting at
    /// most `limit` (what is still queued then is dropped with the process).
    pub fn finish(mut self, limit: Duration) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + limit;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                self.logger
                    .warn("notifications still being sent at shutdown were abandoned");
            }
        }
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker(
    rx: Receiver<Job>,
    mut notifiers: Vec<Box<dyn Notifier>>,
    logger: Logger,
    metrics: Option<Arc<Metrics>>,
) {
    for job in rx {
        match job {
            Job::Replace(new) => notifiers = new,
            Job::Send(_) | Job::Whitelist(_) => {
                for notifier in &notifiers {
                    let result = match &job {
                        Job::Whitelist(note) => notifier.send_whitelist(note),
                        Job::Send(note) => notifier.send(note),
                        Job::Replace(_) => Ok(()),
                    };
                    if let Some(metrics) = &metrics {
                        let label = if result.is_ok() { "ok" } else { "error" };
                        metrics.count_notification(notifier.name(), label);
                    }
                    if let Err(err) = result {
                        logger.log(
                            Level::Warning,
                            &format!("notification failed: {err}"),
                            &[("ORIGIN_AGENT_NOTIFIER", notifier.name())],
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cause::CauseId;
    use crate::daemon::incident::{IncidentPolicy, IncidentTracker};

    fn opened() -> Notification {
        let mut t = IncidentTracker::new(IncidentPolicy::default(), "web1");
        t.tick(
            jiff::Timestamp::from_second(1_790_000_000).unwrap(),
            25,
            &[(CauseId::UpstreamSaturated, 0.9)],
        )
        .remove(0)
    }

    /// Parses a native-protocol entry back into fields.
    fn parse_entry(mut data: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let nl = data.iter().position(|b| *b == b'\n').unwrap();
            let head = &data[..nl];
            if let Some(eq) = head.iter().position(|b| *b == b'=') {
                out.push((
                    String::from_utf8(head[..eq].to_vec()).unwrap(),
                    String::from_utf8(head[eq + 1..].to_vec()).unwrap(),
                ));
                data = &data[nl + 1..];
            } else {
                let key = String::from_utf8(head.to_vec()).unwrap();
                let len = u64::from_le_bytes(data[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = String::from_utf8(data[nl + 9..nl + 9 + len].to_vec()).unwrap();
                assert_eq!(data[nl + 9 + len], b'\n');
                out.push((key, value));
                data = &data[nl + 10 + len..];
            }
        }
        out
    }

    #[test]
    fn journal_entries_use_the_native_protocol_with_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let logger = Logger::journal(&path).unwrap();
        LogNotifier {
            logger: logger.clone(),
        }
        .send(&opened())
        .unwrap();
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).unwrap();
        let fields = parse_entry(&buf[..n]);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PRIORITY"), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("origin-agent"));
        assert_eq!(get("ORIGIN_AGENT_EVENT"), Some("opened"));
        assert_eq!(get("ORIGIN_AGENT_CAUSE"), Some("upstream.saturated"));
        assert!(get("MESSAGE").unwrap().contains("25 errors/min"));
        // A multi-line message uses the length-prefixed form.
        logger.log(
            Level::Error,
            "two\nlines",
            &[("_bad", "x"), ("odd-key", "v")],
        );
        let n = server.recv(&mut buf).unwrap();
        let fields = parse_entry(&buf[..n]);
        assert!(fields.contains(&("MESSAGE".to_string(), "two\nlines".to_string())));
        assert!(fields.contains(&("BAD".to_string(), "x".to_string())));
        assert!(fields.contains(&("ODD_KEY".to_string(), "v".to_string())));
    }

    #[test]
    fn exec_hook_gets_the_json_and_is_killed_when_slow() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got.json");
        let script = dir.path().join("hook.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncat > {}\necho \"$ORIGIN_AGENT_EVENT\" >> {}\n",
                out.display(),
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let hook = ExecNotifier {
            program: script,
            timeout: Duration::from_secs(10),
        };
        hook.send(&opened()).unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        let (json, event) = got.rsplit_once('}').unwrap();
        let value: serde_json::Value = serde_json::from_str(&format!("{json}}}")).unwrap();
        assert_eq!(value["kind"], "opened");
        assert_eq!(value["incident"]["top_cause"], "upstream.saturated");
        assert_eq!(event.trim(), "opened");

        let slow = dir.path().join("slow.sh");
        std::fs::write(&slow, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let start = Instant::now();
        let err = ExecNotifier {
            program: slow,
            timeout: Duration::from_millis(300),
        }
        .send(&opened())
        .unwrap_err();
        assert!(matches!(err, NotifyError::ExecTimeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        // A large note to a hook that never reads its input: still bounded by the timeout.
        let mut big = whitelist_note();
        big.failure = Some("x".repeat(1 << 20));
        let start = Instant::now();
        let err = ExecNotifier {
            program: dir.path().join("slow.sh"),
            timeout: Duration::from_millis(300),
        }
        .send_whitelist(&big)
        .unwrap_err();
        assert!(matches!(err, NotifyError::ExecTimeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let missing = ExecNotifier {
            program: dir.path().join("nope"),
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(
            missing.send(&opened()),
            Err(NotifyError::ExecStart { .. })
        ));
    }

    #[derive(Debug)]
    struct Slow(Arc<std::sync::atomic::AtomicUsize>);

    impl Notifier for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn send(&self, _: &Notification) -> Result<(), NotifyError> {
            std::thread::sleep(Duration::from_millis(300));
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        fn send_whitelist(&self, _: &WhitelistNote) -> Result<(), NotifyError> {
            Ok(())
        }
    }

    #[test]
    fn dispatcher_never_blocks_the_caller_and_bounds_shutdown() {
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let metrics = Arc::new(Metrics::new());
        let d = Dispatcher::start(
            vec![Box::new(Slow(sent.clone()))],
            Logger::stderr(),
            Some(metrics.clone()),
        )
        .unwrap();
        let start = Instant::now();
        for _ in 0..100 {
            d.send(opened()); // beyond the queue: dropped, not waited for
        }
        assert!(start.elapsed() < Duration::from_millis(200));
        let start = Instant::now();
        d.finish(Duration::from_millis(700));
        assert!(start.elapsed() < Duration::from_millis(1500));
        let n = sent.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=QUEUE + 1).contains(&n), "{n}");
        assert!(metrics
            .render()
            .contains("origin_agent_notifications_total{notifier=\"slow\",result=\"ok\"}"));
    }

    #[test]
    fn slack_shape_is_a_text_object() {
        let v: serde_json::Value = serde_json::from_str(&slack_json(&opened())).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("upstream.saturated"), "{text}");
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    fn whitelist_note() -> WhitelistNote {
        WhitelistNote {
            kind: "whitelist_changed",
            summary: "CDN whitelist (firewalld, cloudflare): 1 ranges added, 1 removed, applied and verified".into(),
            backend: "firewalld".into(),
            providers: vec!["cloudflare".into()],
            added_count: 1,
            removed_count: 1,
            added: vec!["cloudflare 103.21.244.0/22".into()],
            removed: vec!["cloudflare 203.0.113.0/24".into()],
            failure: None,
            rolled_back: None,
        }
    }

    /// A one-request HTTP server on loopback: hands over the body it got, answers 204.
    fn one_request_server() -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader, Read};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let l = line.trim().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length.min(1 << 20)];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .unwrap();
            let _ = tx.send(String::from_utf8(body).unwrap());
        });
        (url, rx)
    }

    #[test]
    fn whitelist_changes_reach_a_real_webhook_through_the_dispatcher_and_the_exec_hook() {
        let (url, got) = one_request_server();
        let d = Dispatcher::start(
            vec![Box::new(WebhookNotifier::new(
                url,
                WebhookFormat::Json,
                Duration::from_secs(5),
            ))],
            Logger::stderr(),
            None,
        )
        .unwrap();
        // From another thread, as the daemon's whitelist thread sends it.
        let sender = d.sender().unwrap();
        std::thread::spawn(move || sender.send_whitelist(whitelist_note()))
            .join()
            .unwrap();
        let body = got.recv_timeout(Duration::from_secs(10)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "whitelist_changed");
        assert_eq!(v["backend"], "firewalld");
        assert_eq!(v["added"][0], "cloudflare 103.21.244.0/22");
        assert_eq!(v["removed"][0], "cloudflare 203.0.113.0/24");
        assert!(v.get("failure").is_none());
        d.finish(Duration::from_secs(2));

        let (url, got) = one_request_server();
        let mut failed = whitelist_note();
        failed.kind = "whitelist_failed";
        failed.summary = "CDN whitelist (firewalld, cloudflare): 1 ranges added, 0 removed NOT kept current: \u{1b}[2Jboom; rolled back: x".into();
        failed.failure = Some("boom".into());
        WebhookNotifier::new(url, WebhookFormat::Slack, Duration::from_secs(5))
            .send_whitelist(&failed)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&got.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with(":warning: CDN whitelist") && !text.contains('\u{1b}'),
            "{text}"
        );

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let script = dir.path().join("hook.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$ORIGIN_AGENT_EVENT\" > {0}\ncat >> {0}\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        ExecNotifier {
            program: script,
            timeout: Duration::from_secs(10),
        }
        .send_whitelist(&whitelist_note())
        .unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        let (event, json) = got.split_once('\n').unwrap();
        assert_eq!(event, "whitelist_changed");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(json).unwrap()["added_count"],
            1
        );
    }

    #[test]
    fn webhook_to_a_closed_port_fails_quickly() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let hook = WebhookNotifier::new(
            format!("http://127.0.0.1:{port}/hook"),
            WebhookFormat::Json,
            Duration::from_secs(2),
        );
        let start = Instant::now();
        assert!(matches!(
            hook.send(&opened()),
            Err(NotifyError::Webhook { .. })
        ));
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
