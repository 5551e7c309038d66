//! Incidents: a 5xx episode, from the minute the error rate crosses the threshold, or rises well
//! above the host's own learned baseline, until the errors have stopped for a while. The tracker is a pure state machine driven by ticks (time, 5xx
//! per minute, the ranked causes the diagnosis gives); it carries the ranked causes as they
//! evolve and yields [`Notification`]s on open, on a change of the top cause and on close.
//!
//! It never floods: a top-cause change is announced at most once per `min_update_gap` (changes
//! within the gap are coalesced: only the cause standing when the gap ends is sent, and nothing
//! when it is back to the one announced), and at most `max_per_hour` notifications leave per
//! hour; an incident whose opening was suppressed stays silent to its end, and the next sent
//! notification says how many were suppressed.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::cause::CauseId;

/// When incidents open and close, and how often they may speak.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentPolicy {
    /// 5xx per minute at or above which an incident opens.
    pub threshold_per_minute: u64,
    /// An open incident closes after the rate stayed under half the threshold this long.
    pub quiet_to_close: Duration,
    /// Minimum time between top-cause change notifications of one incident.
    pub min_update_gap: Duration,
    /// A new top cause is announced only once it has stayed on top this long.
    pub min_stable: Duration,
    /// Cap over all notifications in any hour.
    pub max_per_hour: usize,
    /// An incident also opens when the rate reaches this many times the host's learned normal
    /// rate (and at least [`IncidentPolicy::baseline_floor`]), even under the threshold: a
    /// quiet site going from 0.2 to 5 errors a minute has a problem. 0 turns it off.
    pub baseline_factor: f64,
    /// The fewest 5xx per minute the baseline rule opens an incident for.
    pub baseline_floor: u64,
    /// How long the baseline learns before it can open incidents.
    pub baseline_warmup: Duration,
    /// The baseline's memory: an exponential average over about this long, of the ticks with
    /// no incident open.
    pub baseline_memory: Duration,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        IncidentPolicy {
            threshold_per_minute: 10,
            quiet_to_close: Duration::from_secs(120),
            min_update_gap: Duration::from_secs(60),
            min_stable: Duration::from_secs(20),
            max_per_hour: 20,
            baseline_factor: 5.0,
            baseline_floor: 3,
            baseline_warmup: Duration::from_secs(30 * 60),
            baseline_memory: Duration::from_secs(60 * 60),
        }
    }
}

/// One ranked cause.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RankedCause {
    pub cause: CauseId,
    pub score: f64,
    /// The cause's title from the catalog.
    pub title: &'static str,
}

/// An incident as notifications and `/status` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// `<host>-<opened_at unix seconds>`.
    pub id: String,
    pub host: String,
    pub opened_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Timestamp>,
    /// The last tick that saw 5xx.
    pub last_error_at: Timestamp,
    pub errors_per_minute: u64,
    pub peak_errors_per_minute: u64,
    pub threshold_per_minute: u64,
    /// What opened it: `threshold`, or `baseline` (the rate rose well above the host's normal
    /// one while staying under the threshold).
    pub opened_by: OpenedBy,
    /// The host's normal 5xx per minute when it opened, once learned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_per_minute: Option<f64>,
    /// `causes[0]`, or none while nothing explains the errors.
    pub top_cause: Option<CauseId>,
    /// The best few causes, best first.
    pub causes: Vec<RankedCause>,
}

/// Which rule opened an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenedBy {
    Threshold,
    Baseline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Opened,
    CauseChanged,
    Closed,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Opened => "opened",
            NotificationKind::CauseChanged => "cause_changed",
            NotificationKind::Closed => "closed",
        }
    }
}

/// What is sent to notifiers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub kind: NotificationKind,
    pub at: Timestamp,
    /// One line for humans (Slack text, the journal's MESSAGE).
    pub summary: String,
    pub incident: Incident,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_cause: Option<CauseId>,
    /// Notifications left out by the hourly cap since the last one sent.
    pub suppressed: u64,
}

/// Keeps at most this many causes in an incident.
const MAX_CAUSES: usize = 5;

/// The state machine.
#[derive(Debug)]
pub struct IncidentTracker {
    policy: IncidentPolicy,
    host: String,
    open: Option<Open>,
    sent: VecDeque<Timestamp>,
    suppressed: u64,
    baseline: Option<Baseline>,
}

/// The host's normal 5xx rate, learned from the ticks with no incident open.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    rate: f64,
    since: Timestamp,
    last: Timestamp,
}

#[derive(Debug)]
struct Open {
    incident: Incident,
    /// The rate that opened it; quiet is under half of it.
    bar: u64,
    quiet_since: Option<Timestamp>,
    /// The top cause last announced, and when.
    announced: Option<CauseId>,
    announced_at: Timestamp,
    /// Since when the current top cause has been on top.
    top_since: Timestamp,
    /// The opening was suppressed by the cap: stay silent until closed.
    silent: bool,
}

impl IncidentTracker {
    pub fn new(policy: IncidentPolicy, host: impl Into<String>) -> IncidentTracker {
        IncidentTracker {
            policy,
            host: host.into(),
            open: None,
            sent: VecDeque::new(),
            suppressed: 0,
            baseline: None,
        }
    }

    /// The learned normal 5xx per minute, once warmed up.
    pub fn baseline(&self, now: Timestamp) -> Option<f64> {
        let b = self.baseline?;
        (elapsed(b.since, now) >= self.policy.baseline_warmup).then_some(b.rate)
    }

    /// The baseline rule's bar now: `factor × baseline`, at least the floor.
    fn baseline_bar(&self, now: Timestamp) -> Option<u64> {
        if self.policy.baseline_factor <= 0.0 {
            return None;
        }
        let rate = self.baseline(now)?;
        let bar = (self.policy.baseline_factor * rate).ceil();
        Some((bar as u64).max(self.policy.baseline_floor.max(1)))
    }

    fn learn(&mut self, now: Timestamp, errors_per_minute: u64) {
        let x = errors_per_minute as f64;
        let memory = self.policy.baseline_memory.as_secs_f64().max(1.0);
        let b = self.baseline.get_or_insert(Baseline {
            rate: x,
            since: now,
            last: now,
        });
        let dt = elapsed(b.last, now).as_secs_f64();
        let alpha = 1.0 - (-dt / memory).exp();
        b.rate += alpha * (x - b.rate);
        b.last = now;
    }

    pub fn policy(&self) -> &IncidentPolicy {
        &self.policy
    }

    /// New thresholds apply from the next tick (an open incident stays open).
    pub fn set_policy(&mut self, policy: IncidentPolicy) {
        self.policy = policy;
    }

    /// The open incident, if any.
    pub fn current(&self) -> Option<&Incident> {
        self.open.as_ref().map(|o| &o.incident)
    }

    /// Advances the machine: `errors_per_minute` is the 5xx rate now, `causes` the ranked causes
    /// (best first) with their scores. Returns what to notify.
    pub fn tick(
        &mut self,
        now: Timestamp,
        errors_per_minute: u64,
        causes: &[(CauseId, f64)],
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        let threshold = self.policy.threshold_per_minute.max(1);
        let ranked: Vec<RankedCause> = causes
            .iter()
            .take(MAX_CAUSES)
            .map(|(cause, score)| RankedCause {
                cause: *cause,
                score: *score,
                title: cause.title(),
            })
            .collect();
        let top = ranked.first().map(|c| c.cause);
        match &mut self.open {
            None => {
                let baseline_bar = self.baseline_bar(now);
                let bar = baseline_bar.map_or(threshold, |b| b.min(threshold));
                if errors_per_minute < bar {
                    self.learn(now, errors_per_minute);
                } else {
                    let opened_by = if errors_per_minute >= threshold {
                        OpenedBy::Threshold
                    } else {
                        OpenedBy::Baseline
                    };
                    let incident = Incident {
                        id: format!("{}-{}", self.host, now.as_second()),
                        host: self.host.clone(),
                        opened_at: now,
                        closed_at: None,
                        last_error_at: now,
                        errors_per_minute,
                        peak_errors_per_minute: errors_per_minute,
                        threshold_per_minute: threshold,
                        opened_by,
                        baseline_per_minute: self
                            .baseline(now)
                            .map(|r| (r * 100.0).round() / 100.0),
                        top_cause: top,
                        causes: ranked,
                    };
                    let note = self.note(NotificationKind::Opened, now, &incident, None);
                    let silent = note.is_none();
                    out.extend(note);
                    self.open = Some(Open {
                        incident,
                        bar,
                        quiet_since: None,
                        announced: top,
                        announced_at: now,
                        top_since: now,
                        silent,
                    });
                }
            }
            Some(open) => {
                let inc = &mut open.incident;
                inc.errors_per_minute = errors_per_minute;
                inc.peak_errors_per_minute = inc.peak_errors_per_minute.max(errors_per_minute);
                if errors_per_minute > 0 {
                    inc.last_error_at = now;
                }
                // Keep the last known causes when a tick has none (the evidence aged out).
                if !ranked.is_empty() {
                    if top != inc.top_cause {
                        open.top_since = now;
                    }
                    inc.causes = ranked;
                    inc.top_cause = top;
                }
                let quiet = errors_per_minute.saturating_mul(2) < open.bar;
                if quiet {
                    let since = *open.quiet_since.get_or_insert(now);
                    if elapsed(since, now) >= self.policy.quiet_to_close {
                        let mut incident = open.incident.clone();
                        incident.closed_at = Some(now);
                        let silent = open.silent;
                        self.open = None;
                        if silent {
                            self.suppressed += 1;
                        } else {
                            // A close always follows its (sent) opening, cap or not.
                            out.push(self.note_forced(NotificationKind::Closed, now, &incident));
                        }
                        return out;
                    }
                } else {
                    open.quiet_since = None;
                }
                let changed = open.incident.top_cause.is_some()
                    && open.incident.top_cause != open.announced
                    && elapsed(open.announced_at, now) >= self.policy.min_update_gap
                    && elapsed(open.top_since, now) >= self.policy.min_stable;
                if changed && !open.silent {
                    let previous = open.announced;
                    let incident = open.incident.clone();
                    let note = self.note(NotificationKind::CauseChanged, now, &incident, previous);
                    if let Some(open) = &mut self.open {
                        open.announced = incident.top_cause;
                        open.announced_at = now;
                    }
                    out.extend(note);
                }
            }
        }
        out
    }

    /// A notification, unless the hourly cap is reached (then counted as suppressed).
    fn note(
        &mut self,
        kind: NotificationKind,
        now: Timestamp,
        incident: &Incident,
        previous: Option<CauseId>,
    ) -> Option<Notification> {
        while self
            .sent
            .front()
            .is_some_and(|t| elapsed(*t, now) >= Duration::from_secs(3600))
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.policy.max_per_hour {
            self.suppressed += 1;
            return None;
        }
        let mut note = self.note_forced(kind, now, incident);
        note.previous_cause = previous;
        Some(note)
    }

    fn note_forced(
        &mut self,
        kind: NotificationKind,
        now: Timestamp,
        incident: &Incident,
    ) -> Notification {
        self.sent.push_back(now);
        let suppressed = std::mem::take(&mut self.suppressed);
        Notification {
            kind,
            at: now,
            summary: crate::report::escape::controls(&summary(kind, incident)).into_owned(),
            incident: incident.clone(),
            previous_cause: None,
            suppressed,
        }
    }
}

fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    let millis = to.as_millisecond().saturating_sub(from.as_millisecond());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn summary(kind: NotificationKind, incident: &Incident) -> String {
    let cause = match incident.top_cause {
        Some(cause) => format!("top cause {} ({})", cause.id(), cause.title()),
        None => "no cause identified yet".to_string(),
    };
    match kind {
        NotificationKind::Opened => {
            let why = match (incident.opened_by, incident.baseline_per_minute) {
                (OpenedBy::Baseline, Some(normal)) => format!(
                    "under the threshold of {} but far above this host's normal {normal}/min",
                    incident.threshold_per_minute
                ),
                _ => format!("threshold {}", incident.threshold_per_minute),
            };
            format!(
                "{}: 5xx incident opened, {} errors/min ({why}); {cause}",
                incident.host, incident.errors_per_minute
            )
        }
        NotificationKind::CauseChanged => format!(
            "{}: 5xx incident ongoing, {} errors/min; {cause}",
            incident.host, incident.errors_per_minute
        ),
        NotificationKind::Closed => {
            let minutes = incident
                .closed_at
                .map_or(0, |c| elapsed(incident.opened_at, c).as_secs() / 60);
            format!(
                "{}: 5xx incident closed after {minutes} min (peak {} errors/min); {cause}",
                incident.host, incident.peak_errors_per_minute
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + seconds).unwrap()
    }

    fn kinds(notes: &[Notification]) -> Vec<NotificationKind> {
        notes.iter().map(|n| n.kind).collect()
    }

    #[test]
    fn opens_at_the_threshold_follows_causes_and_closes_after_quiet_minutes() {
        let mut t = IncidentTracker::new(IncidentPolicy::default(), "web1");
        assert!(t.tick(at(0), 9, &[]).is_empty());
        assert!(t.current().is_none());
        let open = t.tick(at(10), 30, &[]);
        assert_eq!(kinds(&open), [NotificationKind::Opened]);
        assert_eq!(open[0].incident.top_cause, None);
        assert!(open[0].summary.contains("30 errors/min"));
        // The cause appears within the update gap: held back, then sent once.
        let sat = [
            (CauseId::UpstreamSaturated, 0.9),
            (CauseId::UpstreamTimeout, 0.4),
        ];
        assert!(t.tick(at(20), 40, &sat).is_empty());
        assert!(t.tick(at(45), 40, &sat).is_empty());
        let changed = t.tick(at(75), 50, &sat);
        assert_eq!(kinds(&changed), [NotificationKind::CauseChanged]);
        assert_eq!(changed[0].previous_cause, None);
        assert_eq!(
            changed[0].incident.top_cause,
            Some(CauseId::UpstreamSaturated)
        );
        assert!(
            t.tick(at(80), 50, &sat).is_empty(),
            "no repeat for the same cause"
        );
        // Errors drop under half the threshold: closes after two quiet minutes, not before.
        assert!(t.tick(at(100), 4, &[]).is_empty());
        assert!(t.tick(at(200), 0, &[]).is_empty());
        let closed = t.tick(at(221), 0, &[]);
        assert_eq!(kinds(&closed), [NotificationKind::Closed]);
        let inc = &closed[0].incident;
        assert_eq!(inc.closed_at, Some(at(221)));
        assert_eq!(inc.peak_errors_per_minute, 50);
        assert_eq!(
            inc.top_cause,
            Some(CauseId::UpstreamSaturated),
            "causes kept"
        );
        assert!(t.current().is_none());
    }

    #[test]
    fn a_burst_in_the_quiet_period_keeps_it_open() {
        let mut t = IncidentTracker::new(IncidentPolicy::default(), "h");
        t.tick(at(0), 100, &[]);
        t.tick(at(60), 0, &[]);
        t.tick(at(150), 20, &[]); // back over half the threshold: quiet restarts
        assert!(t.tick(at(200), 0, &[]).is_empty());
        assert!(t.tick(at(300), 0, &[]).is_empty());
        assert_eq!(kinds(&t.tick(at(321), 0, &[])), [NotificationKind::Closed]);
    }

    #[test]
    fn flapping_causes_are_coalesced_and_a_return_to_the_announced_one_is_silent() {
        let mut t = IncidentTracker::new(IncidentPolicy::default(), "h");
        let a = [(CauseId::UpstreamDown, 1.0)];
        let b = [(CauseId::UpstreamCrashed, 1.0)];
        let c = [(CauseId::HostOomKill, 1.0)];
        t.tick(at(0), 100, &a);
        let mut notes = Vec::new();
        for (i, causes) in [b, a, b, a, b, a].iter().enumerate() {
            notes.extend(t.tick(at(5 * i as i64 + 5), 100, causes));
        }
        assert!(notes.is_empty(), "{notes:?}");
        assert!(
            t.tick(at(61), 100, &a).is_empty(),
            "back to the announced cause"
        );
        assert!(t.tick(at(62), 100, &b).is_empty(), "not on top long enough");
        assert!(t.tick(at(63), 100, &c).is_empty());
        assert!(t.tick(at(80), 100, &c).is_empty());
        let n = t.tick(at(84), 100, &c);
        assert_eq!(kinds(&n), [NotificationKind::CauseChanged]);
        assert_eq!(n[0].previous_cause, Some(CauseId::UpstreamDown));
        assert_eq!(n[0].incident.top_cause, Some(CauseId::HostOomKill));
    }

    #[test]
    fn the_hourly_cap_suppresses_whole_incidents_and_reports_the_count() {
        let policy = IncidentPolicy {
            max_per_hour: 4,
            quiet_to_close: Duration::from_secs(10),
            ..IncidentPolicy::default()
        };
        let mut t = IncidentTracker::new(policy, "h");
        let mut sent = Vec::new();
        // An incident opening and closing every 30 s for 20 minutes.
        for i in 0..40 {
            let base = i * 30;
            sent.extend(t.tick(at(base), 100, &[]));
            sent.extend(t.tick(at(base + 1), 0, &[]));
            sent.extend(t.tick(at(base + 12), 0, &[]));
        }
        assert_eq!(sent.len(), 4, "{:?}", kinds(&sent));
        assert_eq!(
            kinds(&sent),
            [
                NotificationKind::Opened,
                NotificationKind::Closed,
                NotificationKind::Opened,
                NotificationKind::Closed
            ]
        );
        // An hour later the next opening goes out and says how many were left out.
        let n = t.tick(at(3700), 100, &[]);
        assert_eq!(kinds(&n), [NotificationKind::Opened]);
        assert_eq!(n[0].suppressed, 76, "38 openings and 38 closings");
    }

    /// Ticks every 5 s from `from` to `to` seconds at `rate` 5xx/min.
    fn steady(t: &mut IncidentTracker, from: i64, to: i64, rate: u64) -> Vec<Notification> {
        (from..to)
            .step_by(5)
            .flat_map(|s| t.tick(at(s), rate, &[(CauseId::UpstreamDown, 0.9)]))
            .collect()
    }

    #[test]
    fn a_quiet_site_whose_errors_jump_far_above_its_normal_opens_under_the_threshold() {
        let mut t = IncidentTracker::new(IncidentPolicy::default(), "web1");
        // An hour at 0-1 errors a minute (a bot's 502 now and then): normal.
        let mut notes = Vec::new();
        for s in (0..3600).step_by(5) {
            notes.extend(t.tick(at(s), u64::from(s % 60 == 0), &[]));
        }
        assert!(notes.is_empty());
        let normal = t.baseline(at(3600)).unwrap();
        assert!(normal > 0.0 && normal < 1.0, "{normal}");
        // 6 a minute: under the threshold (10), far above normal.
        let notes = steady(&mut t, 3600, 3610, 6);
        assert_eq!(kinds(&notes), [NotificationKind::Opened]);
        let inc = t.current().unwrap();
        assert_eq!(inc.opened_by, OpenedBy::Baseline);
        assert!(
            notes[0].summary.contains("far above this host's normal"),
            "{}",
            notes[0].summary
        );
        // Stays open while it lasts (6 is not under half of the 6 that opened it)...
        assert!(steady(&mut t, 3610, 4000, 6).is_empty());
        // ...and closes once the errors stop.
        let notes = steady(&mut t, 4000, 4200, 0);
        assert_eq!(kinds(&notes), [NotificationKind::Closed]);
    }

    #[test]
    fn a_steady_background_under_the_threshold_is_normal_and_the_threshold_still_opens() {
        let mut t = IncidentTracker::new(IncidentPolicy::default(), "web1");
        assert!(steady(&mut t, 0, 3600, 6).is_empty());
        // 9/min: under the threshold and under 5 × the normal 6: no incident.
        assert!(steady(&mut t, 3600, 3900, 9).is_empty());
        let notes = steady(&mut t, 3900, 3910, 12);
        assert_eq!(kinds(&notes), [NotificationKind::Opened]);
        assert_eq!(t.current().unwrap().opened_by, OpenedBy::Threshold);
    }

    #[test]
    fn the_baseline_waits_for_its_warmup_and_can_be_turned_off() {
        let mut t = IncidentTracker::new(IncidentPolicy::default(), "web1");
        assert!(steady(&mut t, 0, 600, 0).is_empty());
        assert_eq!(t.baseline(at(600)), None);
        // Ten minutes in: 6/min is not yet judged against a baseline.
        assert!(steady(&mut t, 600, 700, 6).is_empty());
        let off = IncidentPolicy {
            baseline_factor: 0.0,
            ..IncidentPolicy::default()
        };
        let mut t = IncidentTracker::new(off, "web1");
        assert!(steady(&mut t, 0, 3600, 0).is_empty());
        assert!(steady(&mut t, 3600, 3700, 6).is_empty());
    }

    #[test]
    fn notification_json_has_stable_names() {
        let mut t = IncidentTracker::new(IncidentPolicy::default(), "web1");
        let n = t.tick(at(0), 12, &[(CauseId::DbTooManyConnections, 0.8)]);
        let json = serde_json::to_value(&n[0]).unwrap();
        assert_eq!(json["kind"], "opened");
        assert_eq!(json["incident"]["top_cause"], "db.too-many-connections");
        assert_eq!(json["incident"]["causes"][0]["score"], 0.8);
        assert_eq!(
            json["incident"]["id"],
            format!("web1-{}", at(0).as_second())
        );
        assert!(json["incident"].get("closed_at").is_none());
    }
}
