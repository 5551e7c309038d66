//! Incidents: a 5xx episode, from the minute the error rate crosses the threshold until the
//! errors have stopped for a while. The tracker is a pure state machine driven by ticks (time, 5xx
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
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        IncidentPolicy {
            threshold_per_minute: 10,
            quiet_to_close: Duration::from_secs(120),
            min_update_gap: Duration::from_secs(60),
            min_stable: Duration::from_secs(20),
            max_per_hour: 20,
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
    /// `causes[0]`, or none while nothing explains the errors.
    pub top_cause: Option<CauseId>,
    /// The best few causes, best first.
    pub causes: Vec<RankedCause>,
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
}

#[derive(Debug)]
struct Open {
    incident: Incident,
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
        }
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
                if errors_per_minute >= threshold {
                    let incident = Incident {
                        id: format!("{}-{}", self.host, now.as_second()),
                        host: self.host.clone(),
                        opened_at: now,
                        closed_at: None,
                        last_error_at: now,
                        errors_per_minute,
                        peak_errors_per_minute: errors_per_minute,
                        threshold_per_minute: threshold,
                        top_cause: top,
                        causes: ranked,
                    };
                    let note = self.note(NotificationKind::Opened, now, &incident, None);
                    let silent = note.is_none();
                    out.extend(note);
                    self.open = Some(Open {
                        incident,
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
                let quiet = errors_per_minute.saturating_mul(2) < threshold;
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
            summary: summary(kind, incident),
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
        NotificationKind::Opened => format!(
            "{}: 5xx incident opened, {} errors/min (threshold {}); {cause}",
            incident.host, incident.errors_per_minute, incident.threshold_per_minute
        ),
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
