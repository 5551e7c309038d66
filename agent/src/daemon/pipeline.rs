//! The real pipeline behind the daemon's seams: every tailed line goes through the same
//! [`LineParser`] and rules as `audit`; events and 5xx responses are kept over a sliding window
//! (`daemon.window`); each tick runs the same diagnosis over that window; the probes (discovery,
//! state checks, firewall) re-run every `daemon.probe_interval`.
//!
//! Every read of the machine (discovery, probes, firewall, the clock and time zone) goes through
//! the host the pipeline is given, as `audit` does: the daemon passes the live host, tests a
//! fixture host.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::{Diagnoser, LineOutcome, LineProcessor, TailSource, TickResult};
use crate::check::Check;
use crate::config::Config;
use crate::diagnose::{self, Scope};
use crate::discover::{self, Discovery};
use crate::event::{Event, Evidence, LogSource, MinuteCount, Response};
use crate::host::{Host, HostExt};
use crate::logs::{self, LineParser, Parsed};
use crate::probes;
use crate::rules::RuleSet;

/// The most events and 5xx responses kept in the window (a flood must not grow memory).
const MAX_WINDOW_ITEMS: usize = 50_000;
/// The most bytes a multi-line entry grows to when continuation lines are appended.
const MAX_ENTRY_TEXT: usize = 16 * 1024;

/// The daemon's line processor and diagnoser.
pub struct AgentPipeline {
    host: Arc<dyn Host>,
    config: Config,
    discovery: Discovery,
    rules: Option<Arc<RuleSet>>,
    tz: jiff::tz::TimeZone,
    /// The access-log format of each discovered access log.
    formats: HashMap<PathBuf, Option<String>>,
    parsers: HashMap<(LogSource, PathBuf), Option<LineParser>>,
    window: Duration,
    /// The span over which the 5xx rate is measured (a minute; shorter in tests).
    rate_window: Duration,
    events: VecDeque<Event>,
    errors: VecDeque<Response>,
    minutes: BTreeMap<i64, (MinuteCount, BTreeMap<u16, u64>)>,
    clients: HashMap<String, u64>,
    checks: Vec<Check>,
}

impl std::fmt::Debug for AgentPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The host is a trait object without `Debug`; the window is what tells a pipeline apart.
        f.debug_struct("AgentPipeline")
            .field("window", &self.window)
            .field("events", &self.events.len())
            .field("errors", &self.errors.len())
            .field("checks", &self.checks.len())
            .finish_non_exhaustive()
    }
}

impl AgentPipeline {
    /// Discovers the stack on `host` once; the first probe pass runs on the daemon's first tick.
    pub fn new(host: Arc<dyn Host>, config: &Config) -> AgentPipeline {
        let discovery = discover::discover(host.as_ref(), config);
        let tz = host.time_zone();
        AgentPipeline {
            host,
            config: config.clone(),
            discovery,
            // The site's rules (a broken pack: the embedded ones, as `audit` does).
            rules: RuleSet::load(Some(&config.rules_dir))
                .map(Arc::new)
                .or_else(|_| logs::builtin_rules())
                .ok(),
            tz,
            formats: HashMap::new(),
            parsers: HashMap::new(),
            window: config.daemon_window,
            rate_window: Duration::from_secs(60),
            events: VecDeque::new(),
            errors: VecDeque::new(),
            minutes: BTreeMap::new(),
            clients: HashMap::new(),
            checks: Vec::new(),
        }
    }

    /// Measures the 5xx rate over `span` instead of a minute (scaled to a per-minute rate).
    pub fn with_rate_window(mut self, span: Duration) -> Self {
        self.rate_window = span.max(Duration::from_secs(1));
        self
    }

    fn parser(&mut self, source: LogSource, path: &Path) -> Option<&mut LineParser> {
        let key = (source, path.to_path_buf());
        if !self.parsers.contains_key(&key) {
            let format = self.formats.get(path).cloned().flatten();
            let rules = self.rules.clone();
            let parser = rules.and_then(|rules| {
                LineParser::new(source, format.as_deref(), self.tz.clone(), rules.clone())
                    .or_else(|_| LineParser::new(source, None, self.tz.clone(), rules))
                    .ok()
            });
            self.parsers.insert(key.clone(), parser);
        }
        self.parsers.get_mut(&key).and_then(Option::as_mut)
    }

    fn prune(&mut self, now: Timestamp) {
        let cutoff = now.as_second() - self.window.as_secs() as i64;
        let old = |t: Option<Timestamp>| t.is_some_and(|t| t.as_second() < cutoff);
        while self.events.front().is_some_and(|e| old(e.time))
            || self.events.len() > MAX_WINDOW_ITEMS
        {
            self.events.pop_front();
        }
        while self.errors.front().is_some_and(|r| old(r.time))
            || self.errors.len() > MAX_WINDOW_ITEMS
        {
            self.errors.pop_front();
        }
        let first_minute = cutoff / 60 * 60;
        self.minutes = self.minutes.split_off(&first_minute);
        if self.clients.len() > 10_000 {
            self.clients.retain(|_, n| *n > 1);
        }
    }

    /// The window as evidence, for the diagnosis.
    fn evidence(&self) -> Evidence {
        let mut evidence = Evidence {
            events: self.events.iter().cloned().collect(),
            errors: self.errors.iter().cloned().collect(),
            ..Evidence::default()
        };
        for (minute, (count, statuses)) in &self.minutes {
            evidence.responses.per_minute.insert(*minute, *count);
            evidence.responses.total += count.total;
            for (status, n) in statuses {
                *evidence.responses.by_status.entry(*status).or_default() += n;
            }
        }
        evidence.responses.clients = self.clients.iter().map(|(k, v)| (k.clone(), *v)).collect();
        if let Some(rules) = &self.rules {
            evidence.rule_fixes = rules.fixes_of(evidence.events.iter().map(|e| e.rule.as_str()));
        }
        evidence
    }
}

impl LineProcessor for AgentPipeline {
    fn line(&mut self, source: LogSource, path: &Path, line_no: u64, line: &[u8]) -> LineOutcome {
        if source != LogSource::NginxAccess && !logs::starts_entry(source, line) {
            // A continuation line (a PHP stack trace after `FastCGI sent in stderr`, a crash
            // report): it belongs to the entry before it.
            if let Some(last) = self.events.back_mut() {
                if last.file == path && last.text.len() < MAX_ENTRY_TEXT {
                    last.text.push('\n');
                    last.text.push_str(&String::from_utf8_lossy(line));
                }
            }
            return LineOutcome::default();
        }
        let now = self.host.now();
        let Some(parser) = self.parser(source, path) else {
            return LineOutcome::default();
        };
        parser.set_now(now);
        match parser.parse(path, line_no, line) {
            Parsed::Event(mut event) => {
                event.time.get_or_insert(now);
                let cause = event.cause;
                self.events.push_back(event);
                LineOutcome {
                    status: None,
                    cause: Some(cause),
                }
            }
            Parsed::Response(mut response) => {
                let time = *response.time.get_or_insert(now);
                let status = response.status;
                let (count, statuses) = self.minutes.entry(time.as_second() / 60 * 60).or_default();
                count.total += 1;
                *statuses.entry(status).or_default() += 1;
                if status >= 500 {
                    count.errors += 1;
                }
                *self.clients.entry(response.client.clone()).or_default() += 1;
                if status >= 500 || status == 499 {
                    self.errors.push_back(response);
                }
                LineOutcome {
                    status: Some(status),
                    cause: None,
                }
            }
            Parsed::Other | Parsed::Bad => LineOutcome::default(),
        }
    }
}

impl Diagnoser for AgentPipeline {
    fn sources(&mut self, config: &Config) -> Vec<TailSource> {
        let mut sources = super::sources_from_config(config);
        for file in discover::log_files(self.host.as_ref(), &self.discovery, config) {
            let Some(source) = file.source else { continue };
            let pattern = file.path.display().to_string();
            if file.access_format.is_some() {
                self.formats
                    .insert(file.path.clone(), file.access_format.clone());
            }
            if !sources.iter().any(|s| s.pattern == pattern) {
                sources.push(TailSource { source, pattern });
            }
        }
        sources
    }

    fn tick(&mut self, now: Timestamp) -> TickResult {
        self.prune(now);
        let span = self.rate_window.as_secs().max(1) as i64;
        let since = now.as_second() - span;
        let recent = self
            .errors
            .iter()
            .filter(|r| r.status >= 500 && r.time.is_some_and(|t| t.as_second() >= since))
            .count() as u64;
        let errors_per_minute = recent * 60 / span as u64;
        let evidence = self.evidence();
        let diagnosis = diagnose::diagnose(
            &evidence,
            &self.checks,
            &self.discovery,
            Scope { stack_found: true },
        );
        TickResult {
            errors_per_minute,
            causes: diagnosis.causes.iter().map(|c| (c.id, c.score)).collect(),
            checks: Vec::new(),
        }
    }

    fn probe(&mut self, _now: Timestamp) -> Vec<Check> {
        let host = self.host.as_ref();
        self.discovery = discover::discover(host, &self.config);
        let mut checks = probes::run_all(host, &self.discovery, &self.config);
        let evidence = self.evidence();
        checks.extend(crate::firewall::audit_for(host, &self.config, &self.discovery, &evidence).0);
        self.checks = checks.clone();
        checks
    }

    fn probe_job(&mut self, _now: Timestamp) -> Option<super::ProbeJob> {
        let config = self.config.clone();
        let evidence = self.evidence();
        let host = self.host.clone();
        Some(Box::new(move || {
            let host = host.as_ref();
            let discovery = discover::discover(host, &config);
            let mut checks = probes::run_all(host, &discovery, &config);
            checks.extend(crate::firewall::audit_for(host, &config, &discovery, &evidence).0);
            super::ProbeOutput(Box::new((discovery, checks)))
        }))
    }

    fn probe_done(&mut self, output: super::ProbeOutput) -> Vec<Check> {
        match output.0.downcast::<(Discovery, Vec<Check>)>() {
            Ok(done) => {
                let (discovery, checks) = *done;
                self.discovery = discovery;
                self.checks = checks.clone();
                checks
            }
            Err(_) => self.checks.clone(),
        }
    }

    fn reconfigure(&mut self, config: &Config) {
        // Rules are reloaded with the config; a broken pack keeps the rules in force.
        match RuleSet::load(Some(&config.rules_dir)) {
            Ok(set) => self.rules = Some(Arc::new(set)),
            Err(err) => eprintln!(
                "origin-agent: rules in {} not reloaded, the previous rules stay: {err}",
                config.rules_dir.display()
            ),
        }
        self.config = config.clone();
        self.window = config.daemon_window;
        self.parsers.clear();
        self.discovery = discover::discover(self.host.as_ref(), config);
    }

    fn host(&self) -> Arc<dyn Host> {
        self.host.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cause::CauseId;
    use crate::check::Status;
    use crate::discover::testdata;

    /// The daemon's pipeline driven through a fixture host (a whole stack whose PHP-FPM socket is
    /// gone): discovery finds the logs to follow, the tailed lines become events and 5xx
    /// responses, the probe pass sees the missing socket, and the tick names the cause.
    #[test]
    fn the_pipeline_runs_on_the_host_it_is_given() {
        let now: Timestamp = "2026-11-24T07:45:40Z".parse().unwrap();
        // nginx listens on :80 (its master holds the socket), the database answers; the pool's
        // socket is missing.
        let host = testdata::stack()
            .file(
                "/proc/net/tcp",
                "  sl local rem st\n   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n",
            )
            .dir("/proc/100/fd")
            .link("/proc/100/fd/6", "socket:[4242]")
            .listening(&crate::host::Endpoint::Unix("/run/mysqld/mysqld.sock".into()))
            .file("/var/log/nginx/error.log", "")
            .file("/var/log/nginx/access.log", "")
            .at(now);
        let state = tempfile::tempdir().unwrap();
        let config = Config {
            rules_dir: state.path().join("rules.d"),
            state_dir: state.path().to_path_buf(),
            ..Config::default()
        };
        let mut pipeline = AgentPipeline::new(Arc::new(host), &config);

        let sources = pipeline.sources(&config);
        for (source, path) in [
            (LogSource::NginxError, "/var/log/nginx/error.log"),
            (LogSource::NginxAccess, "/var/log/nginx/access.log"),
        ] {
            assert!(
                sources
                    .iter()
                    .any(|s| s.source == source && s.pattern == path),
                "{path} not followed: {sources:?}"
            );
        }

        let error_log = Path::new("/var/log/nginx/error.log");
        let line = "2026/11/24 07:45:29 [crit] 101#101: *9 connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 203.0.113.5, server: example.com, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"example.com\"";
        let outcome = pipeline.line(LogSource::NginxError, error_log, 1, line.as_bytes());
        assert_eq!(outcome.cause, Some(CauseId::UpstreamDown));
        let access_log = Path::new("/var/log/nginx/access.log");
        for n in 1..=3 {
            let line = "203.0.113.5 - - [24/Nov/2026:07:45:29 +0000] \"GET / HTTP/1.1\" 502 157 \"-\" \"curl/8\"";
            let outcome = pipeline.line(LogSource::NginxAccess, access_log, n, line.as_bytes());
            assert_eq!(outcome.status, Some(502));
        }

        // The probe pass reads the fixture: nginx listens, the pool's socket does not exist.
        let checks = pipeline.probe(now);
        let socket = checks
            .iter()
            .find(|c| c.id == "php-fpm.pool.www.socket")
            .unwrap_or_else(|| panic!("no socket check: {checks:#?}"));
        assert_eq!(socket.status, Status::Fail, "{socket:?}");
        let listening = checks.iter().find(|c| c.id == "nginx.listening").unwrap();
        assert_eq!(listening.status, Status::Ok, "{listening:?}");

        let tick = pipeline.tick(now);
        assert_eq!(tick.errors_per_minute, 3);
        assert_eq!(
            tick.causes.first().map(|(id, _)| *id),
            Some(CauseId::UpstreamDown),
            "{:?}",
            tick.causes
        );
    }
}
