//! The one-shot audit: discover, observe, read the log window, diagnose, report. The same pipeline
//! runs on the live host, on a snapshot, and (through a [`Recorder`]) while `collect` captures one.
//! [`scan`] is the log-only variant: given files, no probe of the host.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::check::{Area, Check};
use crate::config::Config;
use crate::diagnose::{self, Scope};
use crate::discover;
use crate::event::Evidence;
use crate::host::live::LiveHost;
use crate::host::recorder::Recorder;
use crate::host::{Host, HostExt};
use crate::logs::{self, Window};
use crate::probes;
use crate::report::{self, Report};
use crate::rules::RuleSet;

/// Kept events and responses freed by `scan` itself (more are freed on a thread of their own).
const FREE_INLINE: usize = 1_000;

/// How an audit runs.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The log window; the config's `audit.since` when `None`.
    pub since: Option<Duration>,
    /// Say what is happening on stderr (long audits on big logs).
    pub progress: bool,
    /// `live`, or the snapshot's path, for the report.
    pub source: String,
    /// The log rules (the embedded packs plus the site's `rules.d`): passed to every log reader.
    pub rules: Arc<RuleSet>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            since: None,
            progress: false,
            source: "live".to_string(),
            rules: logs::builtin_rules().unwrap_or_else(|_| Arc::new(RuleSet::empty())),
        }
    }
}

fn progress(opts: &AuditOptions, what: &str) {
    if opts.progress {
        eprintln!("origin-agent: {what}…");
    }
}

/// Everything an audit learnt, before it is turned into a report.
#[derive(Debug)]
pub struct AuditData {
    pub discovery: discover::Discovery,
    pub checks: Vec<Check>,
    pub evidence: Evidence,
    pub window: Window,
    pub firewall_table: Option<String>,
}

/// Runs the pipeline up to the evidence and the checks.
pub fn gather(host: &dyn Host, config: &Config, opts: &AuditOptions) -> AuditData {
    let now = host.now();
    let since = opts.since.unwrap_or(config.audit_since);
    let window = Window {
        since: now
            .checked_sub(jiff::SignedDuration::try_from(since).unwrap_or_default())
            .ok(),
        until: Some(now),
    };
    progress(opts, "discovering the web stack");
    let discovery = discover::discover(host, config);
    progress(opts, "probing services, load, limits and disks");
    let mut checks = probes::run_all(host, &discovery, config);
    progress(opts, "reading the logs");
    let mut files = discover::log_files(host, &discovery, config);
    let sites = crate::wp::discover_sites(host, &discovery, &[]);
    files.extend(crate::wp::debug_logs(&sites));
    let tz = host.time_zone();
    let evidence = logs::read_evidence(host, &files, &window, &tz, &opts.rules);
    checks.extend(log_checks(&evidence));
    checks.extend(crate::wp::checks::checks(
        host, &sites, &evidence, &discovery,
    ));
    progress(opts, "checking the firewall against the CDN ranges");
    let (firewall_checks, firewall_table) =
        crate::firewall::audit_for(host, config, &discovery, &evidence);
    checks.extend(firewall_checks);
    let cdns = crate::stack::cdn_status::providers(config, &discovery, &evidence);
    checks.extend(crate::stack::cdn_status::checks_for(host, config, &cdns));
    AuditData {
        discovery,
        checks,
        evidence,
        window,
        firewall_table,
    }
}

/// A full audit of `host`.
pub fn run(host: &dyn Host, config: &Config, opts: &AuditOptions) -> Report {
    let data = gather(host, config, opts);
    progress(opts, "diagnosing");
    let stack_found = data.discovery.nginx.is_some()
        || data.discovery.apache.is_some()
        || !data.discovery.php_fpm.is_empty()
        || data
            .evidence
            .files
            .iter()
            .any(|f| f.error.is_none() && f.lines > 0);
    let diagnosis = diagnose::diagnose(
        &data.evidence,
        &data.checks,
        &data.discovery,
        Scope { stack_found },
    );
    report::build(
        host.hostname(),
        // The moment the window ends: one clock reading for the whole report.
        data.window.until.unwrap_or_else(|| host.now()),
        report::Window {
            since: data.window.since,
            until: data.window.until,
        },
        &data.evidence,
        diagnosis,
        data.checks,
        data.discovery.notes.clone(),
        data.firewall_table,
        opts.source.clone(),
    )
}

/// One check per log source, so the checklist says which logs were read and which could not be.
fn log_checks(evidence: &Evidence) -> Vec<Check> {
    evidence
        .files
        .iter()
        .map(|file| {
            let kind = file.source.map_or("log", |s| s.as_str());
            let id = format!("logs.{kind}.{}", file.path.display());
            let title = format!("{kind} {}", file.path.display());
            match &file.error {
                Some(err) => {
                    Check::skip(id, Area::Logs, title, format!("could not be read: {err}"))
                }
                None => {
                    let mut detail = format!("{} lines, {} events", file.lines, file.events);
                    if file.bad_lines > 0 {
                        detail.push_str(&format!(", {} lines did not parse", file.bad_lines));
                    }
                    if file.outside_window > 0 {
                        detail.push_str(&format!(", {} outside the window", file.outside_window));
                    }
                    Check::ok(id, Area::Logs, title).detail(detail)
                }
            }
        })
        .collect()
}

/// `collect`: audits the live host through a recorder and writes what it read as a snapshot.
pub fn collect(config: &Config, opts: &AuditOptions, out: &Path) -> std::io::Result<Report> {
    collect_with(config, opts, out, true).map(|(report, _)| report)
}

/// `collect` with or without redaction; also returns what was redacted (`PATH: kind`).
pub fn collect_with(
    config: &Config,
    opts: &AuditOptions,
    out: &Path,
    redact: bool,
) -> std::io::Result<(Report, Vec<String>)> {
    let recorder = Recorder::new(LiveHost).redacting(redact);
    let report = run(&recorder, config, opts);
    recorder.write(out, &report.host)?;
    Ok((report, recorder.redacted()))
}

/// The default snapshot file name: `origin-agent-HOST-YYYYmmddTHHMMSSZ.tar.gz`.
pub fn default_snapshot_name(host: &str, now: jiff::Timestamp) -> PathBuf {
    PathBuf::from(format!(
        "origin-agent-{host}-{}.tar.gz",
        now.strftime("%Y%m%dT%H%M%SZ")
    ))
}

/// `scan`: the log evidence and diagnosis over the given files alone.
pub fn scan(paths: &[PathBuf], since: Option<Duration>, rules: &Arc<RuleSet>) -> Report {
    let host = LiveHost;
    let now = host.now();
    let window = Window {
        since: since.and_then(|d| {
            now.checked_sub(jiff::SignedDuration::try_from(d).unwrap_or_default())
                .ok()
        }),
        until: None,
    };
    let tz = host.time_zone();
    let evidence = logs::scan_paths(paths, &window, &tz, rules);
    let checks = log_checks(&evidence);
    let stack_found = evidence.files.iter().any(|f| f.error.is_none());
    let diagnosis = diagnose::diagnose(
        &evidence,
        &checks,
        &discover::Discovery::default(),
        Scope { stack_found },
    );
    let report = report::build(
        host.hostname(),
        now,
        report::Window {
            since: window.since,
            until: window.until,
        },
        &evidence,
        diagnosis,
        checks,
        Vec::new(),
        None,
        "scan".to_string(),
    );
    // Freeing many kept events and responses takes milliseconds: off the caller's path (the
    // CLI prints the report meanwhile and exits). A few are freed here, quicker than starting a
    // thread; so is all of it where no thread can be started.
    if evidence.events.len() + evidence.errors.len() > FREE_INLINE {
        let _ = std::thread::Builder::new()
            .name("evidence-free".into())
            .spawn(move || drop(evidence));
    }
    report
}
