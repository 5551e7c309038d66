//! Diagnosis: correlates the 5xx responses with the log events and the current state, and ranks
//! the causes from the catalog.
//!
//! The steps, in order:
//! 1. [`refine`]: cross-log refinement of events whose cause depends on another log (a worker reset
//!    seen by nginx is a timeout when PHP-FPM terminated it, an OOM kill when the kernel killed it,
//!    a crash otherwise).
//! 2. [`link`]: each 5xx response is linked to the event that explains it: the nginx error entry of
//!    the same request (request line, time within the request's duration), otherwise an event of
//!    another log in the same seconds (a weaker link).
//!    [`implied`]: error-log entries that ended a request (a rule's `responds: N`) and that no
//!    access-log line shows are responses too, linked to their own event.
//! 3. Scoring: the share of the 5xx a cause explains, how specific its evidence is (direct links),
//!    and whether the current state confirms it (a failing check naming the cause).
//! 4. Causes that only the state shows (firewall, fail2ban, real IP, web server down) are listed
//!    whenever a check shows them, 5xx in the logs or not.
//!
//! 5. [`chain`]: a cause whose events another explains (refine marks them: PHP fatals that are the
//!    database, a crashed table after a full disk) carries `explained_by`; its root ranks above it.
//!
//! No guessing: 5xx with no explaining evidence leave `verdict.cause` empty and the status
//! `unknown`.

mod apache;
mod chain;
mod fix;
mod implied;
mod link;
mod refine;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cause::CauseId;
use crate::check::{Check, Status};
use crate::discover::Discovery;
use crate::event::{Event, Evidence, LogSource, Response, Severity};

pub use chain::chain_of;
pub use implied::Implied;
pub use link::{explain, ExplainQuery, Explanation};

/// How many evidence lines a cause shows.
const EVIDENCE_LINES: usize = 5;

/// One evidence line: where it is and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceLine {
    pub source: String,
    pub line: u64,
    pub text: String,
}

/// A ranked cause with its evidence and fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CauseReport {
    pub id: CauseId,
    pub title: String,
    pub score: f64,
    /// Log events attributed to this cause.
    pub events: u64,
    /// 5xx responses this cause explains (linked to its events).
    pub responses: u64,
    pub first_seen: Option<jiff::Timestamp>,
    pub last_seen: Option<jiff::Timestamp>,
    /// What the visitor sees directly and through a CDN.
    pub status_direct: String,
    pub status_cdn: String,
    /// True when a check confirms it in the current state.
    pub confirmed_now: bool,
    /// What asking the stack directly saw that rules this cause out *now* (it may still be
    /// what happened in the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruled_out_now: Option<String>,
    pub evidence: Vec<EvidenceLine>,
    /// The failing checks that show it now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    pub fix: String,
    /// The cause that explains this one (a database out of connections behind PHP fatal
    /// errors): the verdict names the root of the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explained_by: Option<CauseId>,
    /// Why it happened, when its log lines say (`upstream.unresolvable` for an nginx that could
    /// not start because an upstream name does not resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<CauseId>,
    /// The statuses of the 5xx it explains (access-log and implied), with their counts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<u16, u64>,
}

/// When the 5xx started, peaked and stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub first_error: jiff::Timestamp,
    pub last_error: jiff::Timestamp,
    /// The minute with the most 5xx, and how many.
    pub peak_minute: jiff::Timestamp,
    pub peak_errors: u64,
    /// Still erroring in the last minute of the window.
    pub ongoing: bool,
}

/// The overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictStatus {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl VerdictStatus {
    /// The monitoring-plugin exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            VerdictStatus::Ok => 0,
            VerdictStatus::Warning => 1,
            VerdictStatus::Critical => 2,
            VerdictStatus::Unknown => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            VerdictStatus::Ok => "OK",
            VerdictStatus::Warning => "WARNING",
            VerdictStatus::Critical => "CRITICAL",
            VerdictStatus::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub status: VerdictStatus,
    pub cause: Option<CauseId>,
    pub summary: String,
}

/// The diagnosis of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub verdict: Verdict,
    pub causes: Vec<CauseReport>,
    pub timeline: Option<Timeline>,
    /// 5xx responses no evidence explains.
    pub unexplained: u64,
    /// What was looked at, for an `unknown` verdict.
    pub checked: Vec<String>,
    /// Responses the error logs imply that no access-log line shows.
    #[serde(default)]
    pub implied: Implied,
}

/// What the diagnosis knows about the scope of its input.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    /// A web server was found (or logs were given): "nothing found" is then a real answer.
    pub stack_found: bool,
}

/// Diagnoses one window of evidence against the current state.
pub fn diagnose(
    evidence: &Evidence,
    checks: &[Check],
    discovery: &Discovery,
    scope: Scope,
) -> Diagnosis {
    // The pids the kernel killed for memory in this window (its log read by the check, not given
    // as a log file): PHP-FPM children SIGKILLed with those pids are OOM kills.
    let oom_pids: Vec<&str> = checks
        .iter()
        .filter(|c| c.id == "host.oom-kills" && c.status == Status::Fail)
        .filter_map(|c| c.detail.split_once(crate::probes::load::OOM_PIDS))
        .flat_map(|(_, pids)| pids.split_whitespace())
        .collect();
    let events = apache::refine(refine::refine(&evidence.events, &oom_pids), discovery);
    let errors: Vec<&Response> = evidence.errors.iter().filter(|r| r.status >= 500).collect();
    let links = link::link(&errors, &events);
    let (implied, implied_tally) = implied::implied(&events, &links, evidence);

    // Gather per cause: events, linked responses, evidence.
    let mut by_cause: BTreeMap<CauseId, Acc> = BTreeMap::new();
    for event in &events {
        let acc = by_cause.entry(event.cause).or_default();
        if event.severity == Severity::Info {
            // Context (a restart, "ready to handle connections"): shown, never the evidence.
            acc.context.push(event);
        } else {
            acc.events.push(event);
        }
    }
    for link in &links.links {
        let acc = by_cause.entry(link.cause).or_default();
        if let Some(r) = errors.get(link.response) {
            *acc.statuses.entry(r.status).or_default() += 1;
        }
        if link.direct {
            acc.direct += 1;
        } else {
            acc.weak += 1;
        }
        acc.linked_events.push(link.event);
    }
    for (i, status) in &implied {
        let event: &Event = &events[*i];
        let acc = by_cause.entry(event.cause).or_default();
        *acc.statuses.entry(*status).or_default() += 1;
        acc.direct += 1;
        acc.linked_events.push(event);
    }
    // The logs keep the newest events of each rule (caps) but tally all of them: count and date
    // the rest too, under the cause the kept events of that rule have.
    let mut kept_per_rule: BTreeMap<&str, BTreeMap<CauseId, u64>> = BTreeMap::new();
    for event in events.iter().filter(|e| e.severity != Severity::Info) {
        *kept_per_rule
            .entry(event.rule.as_str())
            .or_default()
            .entry(event.cause)
            .or_default() += 1;
    }
    for (rule, tally) in &evidence.events_by_rule {
        let Some(causes) = kept_per_rule.get(rule.as_str()) else {
            continue;
        };
        let kept: u64 = causes.values().sum();
        let Some((cause, _)) = causes.iter().max_by_key(|(_, n)| **n) else {
            continue;
        };
        let acc = by_cause.entry(*cause).or_default();
        acc.extra_events += tally.count.saturating_sub(kept);
        acc.tally_first = match (acc.tally_first, tally.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let failing: Vec<&Check> = checks
        .iter()
        .filter(|c| c.status == Status::Fail && c.cause.is_some())
        .collect();
    for check in &failing {
        if let Some(cause) = check.cause {
            by_cause.entry(cause).or_default().checks.push(check);
        }
    }

    let total_errors = (errors.len() + implied.len()) as f64;
    let mut causes: Vec<CauseReport> = Vec::new();
    for (cause, acc) in by_cause {
        if !acc.qualifies(cause, total_errors > 0.0) {
            continue;
        }
        let explained = acc.direct as f64 + 0.5 * acc.weak as f64;
        let share = if total_errors > 0.0 {
            (explained / total_errors).min(1.0)
        } else {
            0.0
        };
        let confirmed = !acc.checks.is_empty();
        let specificity = if acc.direct > 0 {
            1.0
        } else if acc.weak > 0 {
            0.5
        } else if confirmed {
            0.6
        } else {
            0.2
        };
        let mut score = 0.65 * share + 0.15 * specificity + if confirmed { 0.2 } else { 0.0 };
        if acc.direct + acc.weak == 0 && !cause.state_only() {
            // Explains none of the 5xx it could have shown in the logs: below any that does.
            score *= 0.5;
        }
        if cause.state_only() && confirmed {
            // Errors that never reach the origin's logs: the state is the whole evidence.
            score = score.max(0.6);
        }
        let score = (score * 100.0).round() / 100.0;
        let times = acc.events.iter().filter_map(|e| e.time);
        let first_seen = match (times.clone().min(), acc.tally_first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let last_seen = times.max();
        let evidence_lines = acc.evidence();
        // Checks that know a fix for this cause (the max-children sizing from worker RSS and free
        // memory, a timeout pair) lend it, failing or only warning.
        let fixing: Vec<&Check> = checks
            .iter()
            .filter(|c| c.cause == Some(cause) && c.fix.is_some())
            .filter(|c| matches!(c.status, Status::Fail | Status::Warn))
            .collect();
        let fix = fix::fix_for(cause, &acc.events, &fixing, discovery, &evidence.rule_fixes);
        causes.push(CauseReport {
            id: cause,
            title: cause.title().to_string(),
            score,
            events: acc.events.len() as u64 + acc.extra_events,
            responses: acc.direct + acc.weak,
            first_seen,
            last_seen,
            status_direct: apache::visitor_status(cause, &acc.events, discovery, &acc.statuses)
                .unwrap_or_else(|| cause.status_direct().to_string()),
            status_cdn: cause.status_cdn().to_string(),
            confirmed_now: confirmed,
            ruled_out_now: (!confirmed)
                .then(|| crate::stack::layers::ruled_out(checks, cause))
                .flatten(),
            evidence: evidence_lines,
            checks: acc.checks.iter().map(|c| c.id.clone()).collect(),
            fix,
            explained_by: None,
            reason: acc
                .events
                .iter()
                .find_map(|e| e.field(crate::logs::REASON).and_then(CauseId::parse)),
            statuses: acc.statuses.clone(),
        });
    }
    chain::link_chains(&mut causes, &events, &fixing_by_cause(checks), discovery);
    causes.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.responses.cmp(&a.responses))
            .then(b.events.cmp(&a.events))
            .then(a.id.cmp(&b.id))
    });

    let unexplained = errors.len() as u64 - links.explained as u64;
    let timeline = timeline(evidence);
    let checked = checked_list(evidence, checks);
    let verdict = verdict(
        &causes,
        (errors.len() + implied.len()) as u64,
        unexplained,
        checks,
        scope,
        &timeline,
    );
    Diagnosis {
        verdict,
        causes,
        timeline,
        unexplained,
        checked,
        implied: implied_tally,
    }
}

/// The checks that lend a fix to each cause (failing or warning).
fn fixing_by_cause(checks: &[Check]) -> BTreeMap<CauseId, Vec<&Check>> {
    let mut out: BTreeMap<CauseId, Vec<&Check>> = BTreeMap::new();
    for c in checks {
        if let (Some(cause), Some(_)) = (c.cause, &c.fix) {
            if matches!(c.status, Status::Fail | Status::Warn) {
                out.entry(cause).or_default().push(c);
            }
        }
    }
    out
}

#[derive(Default)]
struct Acc<'a> {
    events: Vec<&'a Event>,
    /// Events the logs counted but did not keep (over the per-rule cap).
    extra_events: u64,
    tally_first: Option<jiff::Timestamp>,
    context: Vec<&'a Event>,
    linked_events: Vec<&'a Event>,
    direct: u64,
    weak: u64,
    checks: Vec<&'a Check>,
    statuses: BTreeMap<u16, u64>,
}

impl<'a> Acc<'a> {
    /// Whether this cause belongs in the list.
    fn qualifies(&self, cause: CauseId, any_errors: bool) -> bool {
        if self.direct + self.weak > 0 {
            return true;
        }
        if self.events.is_empty() {
            // The state alone: causes whose errors never reach the origin's logs hold whenever
            // the state shows them; any other failing check is a cause only when there are 5xx
            // to explain (an idle broken location, an installed but unused database, a busy CPU
            // are findings of the checklist, not why visitors get 502s).
            return !self.checks.is_empty() && (cause.state_only() || any_errors);
        }
        match cause {
            // A `pm.max_children` warning alone only slows requests down: not a cause of 5xx.
            // Or, in a PHP-FPM log alone, with slow or timed-out requests (refine moved them here).
            CauseId::UpstreamSaturated => self.events.iter().chain(&self.context).any(|e| {
                e.source == LogSource::NginxError
                    || (e.source == LogSource::PhpFpm && e.field("script").is_some())
            }),
            // PHP-FPM that could not start (its config, its socket) serves no request at all.
            CauseId::UpstreamDown => {
                any_errors
                    || self
                        .events
                        .iter()
                        .any(|e| e.source == LogSource::PhpFpm && e.severity == Severity::Critical)
            }
            // An nginx that never started (`[emerg]` at start-up) serves nothing, so no request
            // shows it: it stands on its own (below any cause that explains 5xx).
            CauseId::WebDown => self
                .events
                .iter()
                .any(|e| e.source == LogSource::NginxError),
            // Events that make no access-log line of their own (kernel drops, accept failures,
            // OOM kills, crashed tables) stand on their own.
            CauseId::NetListenOverflow
            | CauseId::WebSaturated
            | CauseId::NetConntrackFull
            | CauseId::NetWorkerConnections
            | CauseId::HostFdExhausted
            | CauseId::HostOomKill
            | CauseId::HostDiskFull
            | CauseId::DbCrashedTable
            | CauseId::DbDown
            | CauseId::DbTooManyConnections => true,
            // Anything else found in the logs while 5xx happened, but linked to none of them, is
            // still worth listing (it may explain 5xx outside the access log we read).
            _ => any_errors,
        }
    }

    /// The strongest evidence lines: linked events first, then others, distinct texts, several
    /// sources, then the failing checks.
    fn evidence(&self) -> Vec<EvidenceLine> {
        let mut out: Vec<EvidenceLine> = Vec::new();
        let mut seen_sources: BTreeMap<LogSource, usize> = BTreeMap::new();
        // The shape of each line in `out` (computed once, not per comparison).
        let mut shapes: Vec<&str> = Vec::new();
        let mut push = |event: &'a Event, out: &mut Vec<EvidenceLine>| {
            if out.len() >= EVIDENCE_LINES {
                return;
            }
            let per_source = seen_sources.entry(event.source).or_default();
            if *per_source >= 3 {
                return;
            }
            let this = shape(&event.text);
            if shapes.contains(&this) {
                return;
            }
            shapes.push(this);
            *per_source += 1;
            out.push(EvidenceLine {
                source: event.file.display().to_string(),
                line: event.line,
                text: event.text.clone(),
            });
        };
        for event in &self.linked_events {
            push(event, &mut out);
        }
        for event in self.events.iter().chain(&self.context) {
            push(event, &mut out);
        }
        for check in &self.checks {
            if out.len() >= EVIDENCE_LINES + 2 {
                break;
            }
            out.push(EvidenceLine {
                source: format!("check {}", check.id),
                line: 0,
                text: if check.detail.is_empty() {
                    check.title.clone()
                } else {
                    format!("{}: {}", check.title, check.detail)
                },
            });
        }
        out
    }
}

/// What a line says, without the time, pid and connection prefix and nginx's `, client:` tail:
/// two lines with the same shape say the same thing.
fn shape(s: &str) -> &str {
    use memchr::memmem::Finder;
    use std::sync::OnceLock;
    // Built once: a search set up per call costs more than the search (10,000 lines a scan).
    static FINDERS: OnceLock<[Finder<'static>; 3]> = OnceLock::new();
    let [conn, php, client] = FINDERS.get_or_init(|| {
        [
            Finder::new(b": *"),
            Finder::new(b"] "),
            Finder::new(b", client:"),
        ]
    });
    // nginx: after "*CONN "; php-fpm: after "] "; otherwise the whole line.
    let body = if let Some(i) = conn.find(s.as_bytes()) {
        let rest = &s[i + 3..];
        memchr::memchr(b' ', rest.as_bytes()).map_or(rest, |j| &rest[j + 1..])
    } else {
        php.find(s.as_bytes()).map_or(s, |i| &s[i + 2..])
    };
    client.find(body.as_bytes()).map_or(body, |i| &body[..i])
}

fn timeline(evidence: &Evidence) -> Option<Timeline> {
    let minutes: Vec<(i64, u64)> = evidence
        .responses
        .per_minute
        .iter()
        .filter(|(_, c)| c.errors > 0)
        .map(|(m, c)| (*m, c.errors))
        .collect();
    let first = minutes.first()?;
    let last = minutes.last()?;
    let peak = minutes.iter().max_by_key(|(m, n)| (*n, -*m))?;
    let last_minute_of_window = evidence.responses.per_minute.keys().next_back().copied();
    let ts = |secs: i64| jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    // Precise first/last from the responses themselves when they carry times.
    let times = evidence
        .errors
        .iter()
        .filter(|r| r.status >= 500)
        .filter_map(|r| r.time);
    let first_error = times.clone().min().unwrap_or_else(|| ts(first.0));
    let last_error = times.max().unwrap_or_else(|| ts(last.0 + 59));
    Some(Timeline {
        first_error,
        last_error,
        peak_minute: ts(peak.0),
        peak_errors: peak.1,
        ongoing: last_minute_of_window == Some(last.0),
    })
}

fn checked_list(evidence: &Evidence, checks: &[Check]) -> Vec<String> {
    let mut checked = Vec::new();
    for file in &evidence.files {
        let what = file
            .source
            .map_or("log".to_string(), |s| s.as_str().to_string());
        match &file.error {
            None => checked.push(format!(
                "{what} {} ({} lines, {} events)",
                file.path.display(),
                file.lines,
                file.events
            )),
            Some(err) => checked.push(format!("{what} {}: not read ({err})", file.path.display())),
        }
    }
    let ran = checks.iter().filter(|c| c.status != Status::Skip).count();
    let skipped = checks.len() - ran;
    checked.push(format!(
        "{ran} checks of the current state ran, {skipped} could not run"
    ));
    checked
}

fn verdict(
    causes: &[CauseReport],
    errors: u64,
    unexplained: u64,
    checks: &[Check],
    scope: Scope,
    timeline: &Option<Timeline>,
) -> Verdict {
    let when = timeline.as_ref().map_or(String::new(), |t| {
        if t.ongoing {
            format!(", ongoing since {}", short_time(t.first_error))
        } else {
            format!(
                " between {} and {}",
                short_time(t.first_error),
                short_time(t.last_error)
            )
        }
    });
    if let Some(top) = causes.first() {
        let status = if top.responses > 0 || top.confirmed_now {
            VerdictStatus::Critical
        } else {
            VerdictStatus::Warning
        };
        let summary = if errors > 0 && top.responses > 0 {
            format!(
                "{} of {} 5xx responses{when}: {} ({}).",
                top.responses, errors, top.title, top.id
            )
        } else if errors > 0 {
            format!(
                "{} 5xx responses{when}; the evidence points to: {} ({}).",
                errors, top.title, top.id
            )
        } else {
            format!(
                "{} ({}), seen in the {}.",
                capitalize(&top.title),
                top.id,
                if top.confirmed_now || top.events == 0 {
                    "current state"
                } else {
                    "logs"
                }
            )
        };
        return Verdict {
            status,
            cause: Some(top.id),
            summary,
        };
    }
    if errors > 0 {
        return Verdict {
            status: VerdictStatus::Unknown,
            cause: None,
            summary: format!(
                "{errors} 5xx responses{when} ({unexplained} unexplained): no log line or check explains them; see what was checked."
            ),
        };
    }
    let failing = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warning = checks.iter().filter(|c| c.status == Status::Warn).count();
    if !scope.stack_found {
        return Verdict {
            status: VerdictStatus::Unknown,
            cause: None,
            summary: "No web server or logs were found to audit.".to_string(),
        };
    }
    if failing > 0 || warning > 0 {
        return Verdict {
            status: if failing > 0 {
                VerdictStatus::Warning
            } else {
                VerdictStatus::Ok
            },
            cause: None,
            summary: format!(
                "No 5xx responses; {failing} failing and {warning} warning checks to look at."
            ),
        };
    }
    Verdict {
        status: VerdictStatus::Ok,
        cause: None,
        summary: "Healthy: no 5xx responses and every check passed.".to_string(),
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

/// `2026-11-24 07:45:17Z`.
pub fn short_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests;
