//! The real pipeline behind the daemon's seams: every tailed line goes through the same
//! [`LineParser`] and rules as `audit`; events and 5xx responses are kept over a sliding window
//! (`daemon.window`); each tick runs the same diagnosis over that window; the probes (discovery,
//! state checks, firewall) re-run every `daemon.probe_interval`.

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
use crate::host::live::LiveHost;
use crate::host::HostExt;
use crate::logs::{self, LineParser, Parsed};
use crate::probes;
use crate::rules::RuleSet;

/// The most events and 5xx responses kept in the window (a flood must not grow memory).
const MAX_WINDOW_ITEMS: usize = 50_000;
/// The most bytes a multi-line entry grows to when continuation lines are appended.
const MAX_ENTRY_TEXT: usize = 16 * 1024;

/// The daemon's line processor and diagnoser.
#[derive(Debug)]
pub struct AgentPipeline {
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

impl AgentPipeline {
    /// Discovers the stack once; the first probe pass runs on the daemon's first tick.
    pub fn new(config: &Config) -> AgentPipeline {
        let discovery = discover::discover(&LiveHost, config);
        AgentPipeline {
            config: config.clone(),
            discovery,
            // The site's rules (a broken pack: the embedded ones, as `audit` does).
            rules: RuleSet::load(Some(&config.rules_dir))
                .map(Arc::new)
                .or_else(|_| logs::builtin_rules())
                .ok(),
            tz: LiveHost.time_zone(),
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
        let now = Timestamp::now();
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
        for file in discover::log_files(&LiveHost, &self.discovery, config) {
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
        self.discovery = discover::discover(&LiveHost, &self.config);
        let mut checks = probes::run_all(&LiveHost, &self.discovery, &self.config);
        let evidence = self.evidence();
        checks.extend(
            crate::firewall::audit_for(&LiveHost, &self.config, &self.discovery, &evidence).0,
        );
        self.checks = checks.clone();
        checks
    }

    fn probe_job(&mut self, _now: Timestamp) -> Option<super::ProbeJob> {
        let config = self.config.clone();
        let evidence = self.evidence();
        Some(Box::new(move || {
            let discovery = discover::discover(&LiveHost, &config);
            let mut checks = probes::run_all(&LiveHost, &discovery, &config);
            checks.extend(crate::firewall::audit_for(&LiveHost, &config, &discovery, &evidence).0);
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
        self.discovery = discover::discover(&LiveHost, config);
    }
}
