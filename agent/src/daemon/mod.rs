//! The daemon (`origin-agent run`): tails the logs, hands every line to a line processor, ticks
//! the diagnosis, opens and closes incidents, notifies, re-runs probes, and serves Prometheus
//! metrics and a JSON status page.
//!
//! # Layout
//!
//! - [`tail`] and [`checkpoint`]: the log tailer (rotation-proof, restart-proof).
//! - [`metrics`]: the registry, its Prometheus text and the localhost HTTP server.
//! - [`incident`]: the incident state machine (open, top-cause change, close; no floods).
//! - [`notify`]: the daemon's log (journal or stderr) and the notifiers (log, webhook, exec).
//! - [`systemd`]: `READY=1`, `WATCHDOG=1`, `STATUS=`.
//! - this file: the seams the lead plugs the real parser and diagnosis into
//!   ([`LineProcessor`], [`Diagnoser`]), the loop ([`run`], [`run_with`]) and a small real
//!   [`AccessStatusCounter`] that counts access-log statuses (for tests, and as a fallback).
//!
//! Signals: SIGHUP reloads the config (validated first; on error the old one stays), SIGTERM and
//! SIGINT flush the checkpoint and stop within about a poll interval.
//!
//! # Plugging in the parser and the diagnosis
//!
//! ```no_run
//! use std::path::Path;
//! use origin_agent::config::Config;
//! use origin_agent::daemon::{self, Diagnoser, LineOutcome, LineProcessor, TickResult};
//! use origin_agent::event::LogSource;
//!
//! struct Pipeline; // the real one holds a LineParser and a sliding window of evidence
//!
//! impl LineProcessor for Pipeline {
//!     fn line(&mut self, _: LogSource, _: &Path, _: u64, _: &[u8]) -> LineOutcome {
//!         LineOutcome::default() // parse; say the status (access log) or the cause (events)
//!     }
//! }
//! impl Diagnoser for Pipeline {
//!     fn tick(&mut self, _now: jiff::Timestamp) -> TickResult {
//!         TickResult::default() // 5xx per minute now, ranked causes, derived checks
//!     }
//! }
//!
//! let config = Config::load_or_default(None).unwrap_or_default();
//! daemon::run(&config, &mut Pipeline).unwrap_or_else(|err| eprintln!("{err}"));
//! ```

pub mod checkpoint;
pub mod incident;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod systemd;
pub mod tail;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::cause::CauseId;
use crate::check::{Check, Status};
use crate::config::Config;
use crate::event::LogSource;
use crate::host::Host;

use incident::{IncidentPolicy, IncidentTracker};
use metrics::{Batch, Metrics, MetricsServer};
use notify::{Dispatcher, Logger};
use systemd::Systemd;
pub use tail::{PollStats, TailOptions, TailSource, Tailer};

/// What one log line turned out to be, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineOutcome {
    /// The HTTP status, for an access-log line.
    pub status: Option<u16>,
    /// The cause of the event a rule matched, for a server-side line.
    pub cause: Option<CauseId>,
}

/// The seam for the log parser: gets every line the tailer reads, in file order.
pub trait LineProcessor {
    fn line(&mut self, source: LogSource, path: &Path, line_no: u64, line: &[u8]) -> LineOutcome;
}

/// What the diagnosis says at one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickResult {
    /// 5xx responses per minute now (over the last minute, or scaled from a shorter window).
    pub errors_per_minute: u64,
    /// Ranked causes, best first, with their scores.
    pub causes: Vec<(CauseId, f64)>,
    /// Checks the diagnosis derives (merged over the probes' checks in the metrics).
    pub checks: Vec<Check>,
}

/// A probe pass run off the work loop (see [`Diagnoser::probe_job`]).
pub type ProbeJob = Box<dyn FnOnce() -> ProbeOutput + Send>;

/// What a [`ProbeJob`] hands back to its pipeline.
pub struct ProbeOutput(pub Box<dyn std::any::Any + Send>);

impl std::fmt::Debug for ProbeOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeOutput")
    }
}

/// The seam for the diagnosis and the probes.
pub trait Diagnoser {
    /// The logs to follow under `config` (override to add discovered logs).
    fn sources(&mut self, config: &Config) -> Vec<TailSource> {
        sources_from_config(config)
    }

    /// Called every tick (a few seconds) with the time now.
    fn tick(&mut self, now: Timestamp) -> TickResult;

    /// Re-runs the probes (every `config.probe_interval`).
    fn probe(&mut self, _now: Timestamp) -> Vec<Check> {
        Vec::new()
    }

    /// The probe pass as a job the daemon runs in a thread of its own, so a stuck probe never
    /// stops the tailing, the metrics or a stop; `None` runs [`Diagnoser::probe`] in the loop.
    fn probe_job(&mut self, _now: Timestamp) -> Option<ProbeJob> {
        None
    }

    /// A probe job finished: takes its output, returns its checks.
    fn probe_done(&mut self, _output: ProbeOutput) -> Vec<Check> {
        Vec::new()
    }

    /// The host the daemon's own work (re-applying the whitelist) goes through: the pipeline's,
    /// so a fixture-driven pipeline never touches the live machine. Default: the live host.
    fn host(&self) -> Arc<dyn Host> {
        Arc::new(crate::host::live::LiveHost)
    }

    /// A new config was loaded (SIGHUP).
    fn reconfigure(&mut self, _config: &Config) {}
}

/// The configured logs as tail sources (each path or glob of `logs:`).
pub fn sources_from_config(config: &Config) -> Vec<TailSource> {
    let logs = &config.logs;
    let mut out = Vec::new();
    for (source, patterns) in [
        (LogSource::NginxAccess, &logs.nginx_access),
        (LogSource::NginxError, &logs.nginx_error),
        (LogSource::PhpFpm, &logs.php_fpm),
        (LogSource::PhpFpmSlow, &logs.php_fpm_slow),
        (LogSource::Php, &logs.php),
        (LogSource::MysqlError, &logs.mysql_error),
        (LogSource::Kernel, &logs.kernel),
    ] {
        for pattern in patterns.iter().flatten() {
            out.push(TailSource {
                source,
                pattern: pattern.clone(),
            });
        }
    }
    out
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for metrics: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// Timings of the loop; the defaults suit production.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How often the tailer polls when no filesystem event wakes it earlier.
    pub poll_interval: Duration,
    /// Minimum time between polls when events keep arriving (a flood).
    pub min_poll_gap: Duration,
    /// How often the diagnosis ticks and incidents are evaluated.
    pub tick_interval: Duration,
    pub checkpoint_interval: Duration,
    pub tail: TailOptions,
    /// Incident policy; `threshold_per_minute` and `baseline_factor` are taken from the config.
    pub incident: IncidentPolicy,
    /// Host name in incidents (default: the machine's).
    pub host: Option<String>,
    /// Logger (default: journal if present, else stderr).
    pub logger: Option<Logger>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            poll_interval: Duration::from_millis(250),
            min_poll_gap: Duration::from_millis(50),
            tick_interval: Duration::from_secs(5),
            checkpoint_interval: Duration::from_secs(5),
            tail: TailOptions::default(),
            incident: IncidentPolicy::default(),
            host: None,
            logger: None,
        }
    }
}

/// Asks a running loop to stop or reload, and tells what it bound. Signal handlers set the same
/// flags; tests set them directly.
#[derive(Debug, Default)]
pub struct Control {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    metrics_addr: Mutex<Option<SocketAddr>>,
    ready: AtomicBool,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
    }

    /// The metrics server's address once it is bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        *self
            .metrics_addr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True once the first pass is done (when `READY=1` was sent).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Routes SIGTERM and SIGINT to stop and SIGHUP to reload.
    pub fn register_signals(&self) -> Result<(), DaemonError> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        for (signal, flag) in [
            (SIGTERM, &self.stop),
            (SIGINT, &self.stop),
            (SIGHUP, &self.reload),
        ] {
            signal_hook::flag::register(signal, flag.clone()).map_err(DaemonError::Signals)?;
        }
        Ok(())
    }
}

/// The daemon with signal handling and default timings: runs until SIGTERM or SIGINT.
pub fn run<P: LineProcessor + Diagnoser>(
    config: &Config,
    pipeline: &mut P,
) -> Result<(), DaemonError> {
    let control = Control::new();
    control.register_signals()?;
    run_with(config, pipeline, RunOptions::default(), &control)
}

/// Re-applies the last whitelist on a thread of its own (firewall commands take seconds; the
/// loop and the watchdog go on); what changed, or why it failed, goes through the notifiers
/// (the log among them). Nothing is sent when nothing changed.
fn keep_whitelist_current(
    host: Arc<dyn Host>,
    config: &Config,
    notify: Option<notify::NotifySender>,
    busy: &Arc<AtomicBool>,
) {
    use crate::whitelist::current;
    busy.store(true, Ordering::SeqCst);
    let (state_dir, flag) = (config.state_dir.clone(), busy.clone());
    let spawned = std::thread::Builder::new()
        .name("whitelist".to_string())
        .spawn(move || {
            let catalog = crate::cdn::load(&state_dir);
            let note = match current::keep_current(host.as_ref(), &state_dir, &catalog) {
                Ok(Some(out)) => current::note(&out),
                Ok(None) => None,
                Err(e) => Some(current::error_note(&e)),
            };
            if let (Some(note), Some(tx)) = (note, notify) {
                tx.send_whitelist(note);
            }
            flag.store(false, Ordering::SeqCst);
        });
    if spawned.is_err() {
        busy.store(false, Ordering::SeqCst);
    }
}

/// The name of the tailer's checkpoint in the state directory.
pub const CHECKPOINT_FILE: &str = "tail-checkpoint.json";

/// The daemon loop; returns when `control` is told to stop (after flushing the checkpoint).
pub fn run_with<P: LineProcessor + Diagnoser>(
    config: &Config,
    pipeline: &mut P,
    options: RunOptions,
    control: &Control,
) -> Result<(), DaemonError> {
    let logger = options.logger.clone().unwrap_or_else(Logger::detect);
    let mut sd = Systemd::from_env();
    let mut config = config.clone();
    std::fs::create_dir_all(&config.state_dir).map_err(|source| DaemonError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let checkpoint_path = config.state_dir.join(CHECKPOINT_FILE);

    let metrics = Arc::new(Metrics::new());
    let server =
        MetricsServer::start(config.metrics_listen, metrics.clone()).map_err(|source| {
            DaemonError::Listen {
                addr: config.metrics_listen,
                source,
            }
        })?;
    *control
        .metrics_addr
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(server.local_addr());

    let host = options.host.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_string())
    });
    let policy = |config: &Config| IncidentPolicy {
        threshold_per_minute: config.incident_threshold,
        baseline_factor: config.baseline_factor,
        ..options.incident.clone()
    };
    let mut tracker = IncidentTracker::new(policy(&config), host.clone());
    let dispatcher = Dispatcher::start(
        notify::notifiers_from_config(&config, &logger),
        logger.clone(),
        Some(metrics.clone()),
    )
    .map_err(DaemonError::Thread)?;

    let mut sources = pipeline.sources(&config);
    let mut tailer = new_tailer(&sources, &checkpoint_path, &options, &logger);
    let (mut _watcher, mut wake) = watch(&sources);

    logger.info(&format!(
        "started: following {} log pattern(s), metrics on http://{}/metrics",
        sources.len(),
        server.local_addr()
    ));
    metrics.set_up(true);
    let started_at = Timestamp::now();
    let mut batch = Batch::default();
    let mut probe_checks: Vec<Check> = Vec::new();
    let mut tick_checks: Vec<Check> = Vec::new();
    let mut last_tick: Option<Instant> = None;
    let mut last_probe: Option<Instant> = None;
    // The first re-apply comes one interval after the start, not at once.
    let mut last_whitelist = Instant::now();
    let whitelist_busy = Arc::new(AtomicBool::new(false));
    // The probe pass running in its thread, if one is (never two at once).
    let mut probing: Option<std::sync::mpsc::Receiver<ProbeOutput>> = None;
    let mut last_checkpoint = Instant::now();
    // Something changed since the last checkpoint (an idle host does not fsync every 5 s).
    let mut dirty = false;
    let mut checkpoint_error: Option<String> = None;
    let mut last_files = usize::MAX;
    let mut last_errors = BTreeSet::new();
    let mut last_result = TickResult::default();
    let mut first = true;

    while !control.stop.load(Ordering::SeqCst) {
        let loop_start = Instant::now();
        if control.reload.swap(false, Ordering::SeqCst) {
            sd.reloading();
            if let Some(new) = reload(&config, &logger) {
                pipeline.reconfigure(&new);
                let new_sources = pipeline.sources(&new);
                if new_sources != sources {
                    if let Err(err) = tailer.checkpoint() {
                        logger.error(&err.to_string());
                    }
                    sources = new_sources;
                    tailer = new_tailer(&sources, &checkpoint_path, &options, &logger);
                    (_watcher, wake) = watch(&sources);
                }
                tracker.set_policy(policy(&new));
                dispatcher.replace(notify::notifiers_from_config(&new, &logger));
                if new.metrics_listen != config.metrics_listen {
                    logger.warn("metrics.listen changed: takes effect after a restart");
                }
                if new.state_dir != config.state_dir {
                    logger.warn("state_dir changed: takes effect after a restart");
                }
                config = new;
                logger.info("configuration reloaded");
            }
            sd.ready("running");
        }

        // Tail: every line to the processor; counts batched into the metrics once per poll.
        let poll = tailer.poll(&mut |source, path: &Path, line_no, line: &[u8]| {
            *batch.lines.entry(source).or_default() += 1;
            let outcome = pipeline.line(source, path, line_no, line);
            if let Some(status) = outcome.status {
                *batch.responses.entry(status).or_default() += 1;
            }
            if let Some(cause) = outcome.cause {
                *batch.cause_events.entry(cause).or_default() += 1;
            }
        });
        metrics.apply(&batch);
        batch.clear();
        if let Ok(stats) = &poll {
            dirty |= stats.bytes > 0
                || stats.rotations > 0
                || stats.truncations > 0
                || stats.files != last_files;
            last_files = stats.files;
            metrics.record_poll(stats);
            report_read_errors(&logger, &stats.errors, &mut last_errors);
        }

        let now = Timestamp::now();
        let mut checks_changed = false;
        if let Some(every) = config.whitelist_every.filter(|e| !e.is_zero()) {
            if last_whitelist.elapsed() >= every && !whitelist_busy.load(Ordering::SeqCst) {
                last_whitelist = Instant::now();
                keep_whitelist_current(
                    pipeline.host(),
                    &config,
                    dispatcher.sender(),
                    &whitelist_busy,
                );
            }
        }
        if let Some(rx) = &probing {
            match rx.try_recv() {
                Ok(output) => {
                    probe_checks = pipeline.probe_done(output);
                    checks_changed = true;
                    probing = None;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => probing = None,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
        }
        if probing.is_none() && last_probe.is_none_or(|t| t.elapsed() >= config.probe_interval) {
            last_probe = Some(Instant::now());
            match pipeline.probe_job(now) {
                Some(job) => {
                    let (tx, rx) = std::sync::mpsc::channel();
                    let spawned = std::thread::Builder::new()
                        .name("probes".to_string())
                        .spawn(move || {
                            let _ = tx.send(job());
                        });
                    match spawned {
                        Ok(_) => probing = Some(rx),
                        Err(err) => logger.error(&format!("cannot start the probe thread: {err}")),
                    }
                }
                None => {
                    probe_checks = pipeline.probe(now);
                    checks_changed = true;
                }
            }
        }
        if last_tick.is_none_or(|t| t.elapsed() >= options.tick_interval) {
            last_tick = Some(Instant::now());
            let result = pipeline.tick(now);
            for note in tracker.tick(now, result.errors_per_minute, &result.causes) {
                dispatcher.send(note);
            }
            metrics.set_incident_open(tracker.current().is_some());
            tick_checks = result.checks.clone();
            checks_changed = true;
            last_result = result;
            let status = status_line(&last_result, &tracker);
            sd.status(&status);
            metrics.set_status(status_doc(
                &host,
                started_at,
                now,
                &tailer,
                &metrics,
                &last_result,
                &tracker,
                &probe_checks,
            ));
        }
        if checks_changed {
            let mut all = probe_checks.clone();
            all.extend(tick_checks.iter().cloned());
            metrics.set_checks(&all);
        }
        if first {
            first = false;
            control.ready.store(true, Ordering::SeqCst);
            sd.ready(&status_line(&last_result, &tracker));
        }
        sd.watchdog();
        if dirty && last_checkpoint.elapsed() >= options.checkpoint_interval {
            last_checkpoint = Instant::now();
            dirty = false;
            match tailer.checkpoint() {
                // Said once until it works again, not every few seconds.
                Err(err) if checkpoint_error.as_deref() != Some(err.to_string().as_str()) => {
                    logger.error(&err.to_string());
                    checkpoint_error = Some(err.to_string());
                }
                Err(_) => {}
                Ok(()) => checkpoint_error = None,
            }
        }

        // Sleep until the next poll, waking early (but not too often) on filesystem events.
        let elapsed = loop_start.elapsed();
        if elapsed < options.min_poll_gap {
            std::thread::sleep(options.min_poll_gap - elapsed);
        }
        let rest = options.poll_interval.saturating_sub(loop_start.elapsed());
        if let Some(rx) = &wake {
            if rx.recv_timeout(rest).is_ok() {
                while rx.try_recv().is_ok() {}
            }
        } else {
            std::thread::sleep(rest);
        }
    }

    sd.stopping();
    let flushed = tailer.checkpoint();
    if let Err(err) = &flushed {
        logger.error(&err.to_string());
    }
    metrics.set_up(false);
    server.shutdown();
    dispatcher.finish(Duration::from_secs(5));
    logger.info("stopped");
    Ok(())
}

fn new_tailer(
    sources: &[TailSource],
    checkpoint: &Path,
    options: &RunOptions,
    logger: &Logger,
) -> Tailer {
    let tailer = Tailer::with_options(sources.to_vec(), checkpoint, options.tail.clone());
    if let Some(err) = tailer.load_error() {
        logger.warn(&format!("{err}; starting without it"));
    }
    tailer
}

/// Reads the config file again; `None` (and a logged error) when it is missing or invalid.
fn reload(config: &Config, logger: &Logger) -> Option<Config> {
    let Some(path) = &config.path else {
        logger.warn("SIGHUP: no config file to reload (running on defaults)");
        return None;
    };
    match Config::load(path) {
        Ok(new) => Some(new),
        Err(err) => {
            logger.error(&format!(
                "config reload failed, keeping the running config: {err}"
            ));
            None
        }
    }
}

/// Logs read errors once when they appear (not every poll), at most a few per poll.
fn report_read_errors(
    logger: &Logger,
    errors: &[(PathBuf, String)],
    last: &mut BTreeSet<(PathBuf, String)>,
) {
    const MAX_LOGGED: usize = 10;
    let now: BTreeSet<(PathBuf, String)> = errors.iter().cloned().collect();
    let new: Vec<&(PathBuf, String)> = now.iter().filter(|e| !last.contains(*e)).collect();
    for (path, err) in new.iter().take(MAX_LOGGED) {
        logger.warn(&format!("cannot read {}: {err}", path.display()));
    }
    if new.len() > MAX_LOGGED {
        logger.warn(&format!(
            "... and {} more log files cannot be read",
            new.len() - MAX_LOGGED
        ));
    }
    *last = now;
}

/// The filesystem watcher used as a wake-up hint: one watch per directory of the patterns.
type Wake = (Option<notify_rs::RecommendedWatcher>, Option<Receiver<()>>);

use ::notify as notify_rs;

fn watch(sources: &[TailSource]) -> Wake {
    use notify_rs::Watcher;
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let watcher =
        notify_rs::recommended_watcher(move |_event: notify_rs::Result<notify_rs::Event>| {
            // A full channel already holds a wake-up: nothing to add.
            let _ = tx.try_send(());
        });
    let Ok(mut watcher) = watcher else {
        return (None, None);
    };
    let mut dirs: Vec<PathBuf> = sources
        .iter()
        .filter_map(|s| {
            // The deepest directory without glob characters.
            let mut dir = Path::new(&s.pattern).parent()?.to_path_buf();
            while dir.to_string_lossy().contains(['*', '?', '[']) {
                dir = dir.parent()?.to_path_buf();
            }
            Some(dir)
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut any = false;
    for dir in dirs {
        any |= watcher
            .watch(&dir, notify_rs::RecursiveMode::NonRecursive)
            .is_ok();
    }
    if any {
        (Some(watcher), Some(rx))
    } else {
        (None, None)
    }
}

fn status_line(result: &TickResult, tracker: &IncidentTracker) -> String {
    match tracker.current() {
        Some(inc) => format!(
            "incident open: {} 5xx/min, {}",
            inc.errors_per_minute,
            inc.top_cause.map_or("cause unknown", |c| c.id())
        ),
        None => format!("ok: {} 5xx/min", result.errors_per_minute),
    }
}

#[allow(clippy::too_many_arguments)]
fn status_doc(
    host: &str,
    started_at: Timestamp,
    now: Timestamp,
    tailer: &Tailer,
    metrics: &Metrics,
    result: &TickResult,
    tracker: &IncidentTracker,
    checks: &[Check],
) -> serde_json::Value {
    let files: Vec<serde_json::Value> = tailer
        .tracked()
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path, "source": f.source, "rotated": f.rotated, "offset": f.consumed,
            })
        })
        .collect();
    let lines: serde_json::Map<String, serde_json::Value> = LogSource::ALL
        .iter()
        .filter(|s| metrics.lines(**s) > 0)
        .map(|s| (s.as_str().to_string(), metrics.lines(*s).into()))
        .collect();
    let count = |status: Status| checks.iter().filter(|c| c.status == status).count();
    serde_json::json!({
        "version": 1,
        "host": host,
        "started_at": started_at,
        "updated_at": now,
        "errors_per_minute": result.errors_per_minute,
        "causes": result.causes.iter().map(|(c, s)| serde_json::json!({"id": c, "score": s})).collect::<Vec<_>>(),
        "incident": tracker.current(),
        "files": files,
        "lines": lines,
        "checks": {"ok": count(Status::Ok), "warn": count(Status::Warn), "fail": count(Status::Fail), "skip": count(Status::Skip)},
        // The last probe pass's findings (the full audit is `origin-agent audit`).
        "findings": checks
            .iter()
            .filter(|c| matches!(c.status, Status::Fail | Status::Warn))
            .map(|c| serde_json::json!({"id": c.id, "status": c.status, "title": c.title, "detail": c.detail, "cause": c.cause}))
            .collect::<Vec<_>>(),
    })
}

/// A small real line processor and diagnoser: counts access-log statuses (the status field of
/// `combined`-style lines), and reports 5xx per minute over a sliding window. Causes come from
/// nothing here; the lead's diagnosis replaces it.
#[derive(Debug)]
pub struct AccessStatusCounter {
    window: Duration,
    /// (arrival, count) per second with 5xx.
    errors: VecDeque<(Instant, u64)>,
    pub responses: u64,
    pub server_errors: u64,
}

impl AccessStatusCounter {
    /// `window`: how far back `errors_per_minute` looks (scaled to a minute).
    pub fn new(window: Duration) -> AccessStatusCounter {
        AccessStatusCounter {
            window: window.max(Duration::from_secs(1)),
            errors: VecDeque::new(),
            responses: 0,
            server_errors: 0,
        }
    }
}

/// The status code of a combined-format line: the three digits after the quoted request.
pub fn access_status(line: &[u8]) -> Option<u16> {
    let open = memchr::memchr(b'"', line)?;
    let close = open + 1 + memchr::memchr(b'"', &line[open + 1..])?;
    let rest = line.get(close + 1..)?;
    let rest = rest.strip_prefix(b" ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|b| *b != b' ') {
        return None;
    }
    let status = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..600).contains(&status).then_some(status)
}

impl LineProcessor for AccessStatusCounter {
    fn line(&mut self, source: LogSource, _: &Path, _: u64, line: &[u8]) -> LineOutcome {
        if source != LogSource::NginxAccess {
            return LineOutcome::default();
        }
        let status = access_status(line);
        if let Some(status) = status {
            self.responses += 1;
            if status >= 500 {
                self.server_errors += 1;
                let now = Instant::now();
                match self.errors.back_mut() {
                    Some((t, n)) if now.duration_since(*t) < Duration::from_secs(1) => *n += 1,
                    _ => self.errors.push_back((now, 1)),
                }
            }
        }
        LineOutcome {
            status,
            cause: None,
        }
    }
}

impl Diagnoser for AccessStatusCounter {
    fn tick(&mut self, _now: Timestamp) -> TickResult {
        while self
            .errors
            .front()
            .is_some_and(|(t, _)| t.elapsed() > self.window)
        {
            self.errors.pop_front();
        }
        let in_window: u64 = self.errors.iter().map(|(_, n)| n).sum();
        let per_minute = in_window.saturating_mul(60) / self.window.as_secs().max(1);
        TickResult {
            errors_per_minute: per_minute,
            causes: Vec::new(),
            checks: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_after_the_quoted_request_only() {
        // nginx escapes quotes inside $request (\x22), so the first quoted field is the request.
        let line = br#"203.0.113.9 - - [24/Nov/2026:08:00:00 +0000] "GET /x/502 HTTP/1.1" 200 157 "-" "curl/8 502""#;
        assert_eq!(access_status(line), Some(200));
        let line = br#"1.2.3.4 - - [24/Nov/2026:08:00:00 +0000] "GET / HTTP/1.1" 504 0 "-" "-""#;
        assert_eq!(access_status(line), Some(504));
        assert_eq!(access_status(b"garbage"), None);
        assert_eq!(access_status(b"\"x\" 5000 1"), None);
        assert_eq!(access_status(b"\"x\" 99"), None);
        assert_eq!(access_status(b"\"unterminated 502 1"), None);
    }

    #[test]
    fn counter_scales_the_window_to_a_minute() {
        let mut c = AccessStatusCounter::new(Duration::from_secs(10));
        let p = Path::new("/x");
        for _ in 0..5 {
            let o = c.line(
                LogSource::NginxAccess,
                p,
                1,
                br#"a - - [t] "GET / HTTP/1.1" 502 0 "-" "-""#,
            );
            assert_eq!(o.status, Some(502));
        }
        c.line(LogSource::NginxError, p, 1, br#""GET / HTTP/1.1" 502 0"#);
        c.line(
            LogSource::NginxAccess,
            p,
            1,
            br#"a - - [t] "GET / HTTP/1.1" 200 0 "-" "-""#,
        );
        let r = c.tick(Timestamp::now());
        assert_eq!(r.errors_per_minute, 30);
        assert_eq!((c.responses, c.server_errors), (6, 5));
    }

    #[test]
    fn config_logs_become_sources() {
        let config = Config::from_yaml(
            "logs:\n  nginx_access: [/var/log/nginx/*access.log]\n  mysql_error: [/var/log/mysql/error.log]\n",
            Path::new("c.yaml"),
        )
        .unwrap_or_default();
        let sources = sources_from_config(&config);
        assert_eq!(
            sources,
            vec![
                TailSource {
                    source: LogSource::NginxAccess,
                    pattern: "/var/log/nginx/*access.log".to_string()
                },
                TailSource {
                    source: LogSource::MysqlError,
                    pattern: "/var/log/mysql/error.log".to_string()
                },
            ]
        );
    }
}
