//! Responses implied by the error logs: an entry that ended a request with an error status (a
//! rule's `responds: N`, carried as the event field [`RESPONDS`]) *is* a response the server
//! answered N, whether or not an access log shows it. They are counted where no access-log line
//! does: the entry is linked to no access-log 5xx, and no access log read covers its minute.
//!
//! One request can leave several entries (a `FastCGI sent in stderr` fatal, then `upstream
//! prematurely closed`): entries of one connection and request line within a minute are one
//! response, with the worst (highest gateway) status. The entries of the front server (nginx,
//! Apache) stand for their requests; the PHP logs imply responses only when no front server's
//! error log was read (otherwise the same request would count twice).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::event::{Event, Evidence, LogSource};
use crate::hash::FastBuild;
use crate::logs::RESPONDS;

use super::link::Links;

/// Fewer implied responses than this count only when they are a tenth of the server lines read.
const ISOLATED: usize = 3;
/// Entries of one request this close in time are one response.
const SAME_REQUEST_SECS: i64 = 60;

/// Implied responses, by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Implied {
    /// Responses implied by error-log entries that no access-log line shows.
    pub total: u64,
    pub status_500: u64,
    pub status_502: u64,
    pub status_504: u64,
    pub status_5xx: u64,
    pub by_status: BTreeMap<u16, u64>,
}

/// One request's entries: (file, pid, connection, request), borrowed from the event (no string
/// copied per event).
type RequestKey<'a> = (Cow<'a, str>, &'a str, &'a str, &'a str);

/// The events (indexes into `events`) that stand for implied responses, and their tally.
pub fn implied(
    events: &[Cow<'_, Event>],
    links: &Links<'_>,
    evidence: &Evidence,
) -> (Vec<(usize, u16)>, Implied) {
    let linked: HashSet<*const Event, FastBuild> = links
        .links
        .iter()
        .map(|l| l.event as *const Event)
        .collect();
    let front_read = evidence
        .files
        .iter()
        .any(|f| f.error.is_none() && f.source.is_some_and(is_front))
        || events.iter().any(|e| is_front(e.source));
    let covered = |t: Option<jiff::Timestamp>| {
        let Some(t) = t else {
            // No time: covered when any access log was read at all.
            return !evidence.responses.per_minute.is_empty();
        };
        let minute = t.as_second().div_euclid(60) * 60;
        match (
            evidence.responses.per_minute.keys().next(),
            evidence.responses.per_minute.keys().next_back(),
        ) {
            (Some(first), Some(last)) => minute >= *first && minute <= *last,
            _ => false,
        }
    };
    // (file, pid, connection, request) → (last time, index into `out`)
    let mut open: HashMap<RequestKey<'_>, (i64, usize), FastBuild> = HashMap::default();
    let mut out: Vec<(usize, u16)> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let Some(status) = event.field(RESPONDS).and_then(|s| s.parse::<u16>().ok()) else {
            continue;
        };
        if front_read && !is_front(event.source) {
            continue;
        }
        if linked.contains(&(event.as_ref() as *const Event)) || covered(event.time) {
            continue;
        }
        let t = event.time.map_or(0, |t| t.as_second());
        let key = event.field("connection").map(|conn| {
            (
                event.file.to_string_lossy(),
                event.field("pid").unwrap_or_default(),
                conn,
                event.field("request").unwrap_or_default(),
            )
        });
        if let Some(key) = &key {
            if let Some((last, at)) = open.get_mut(key) {
                if (t - *last).abs() <= SAME_REQUEST_SECS {
                    *last = t;
                    let (_, old) = out[*at];
                    if worse(status, old) {
                        out[*at] = (i, status);
                    }
                    continue;
                }
            }
        }
        if let Some(key) = key {
            open.insert(key, (t, out.len()));
        }
        out.push((i, status));
    }
    // One or two gateway errors lost among many other lines of the front server's error log (an
    // auth-failure or scanner log with a stray upstream error) do not make an outage on their own.
    let server_lines: u64 = evidence
        .files
        .iter()
        .filter(|f| f.source.is_some_and(is_front))
        .map(|f| f.lines)
        .sum();
    if out.len() < ISOLATED && (out.len() as u64) * 10 < server_lines {
        out.clear();
    }
    let mut tally = Implied::default();
    for (_, status) in &out {
        tally.total += 1;
        *tally.by_status.entry(*status).or_default() += 1;
    }
    tally.status_500 = tally.by_status.get(&500).copied().unwrap_or(0);
    tally.status_502 = tally.by_status.get(&502).copied().unwrap_or(0);
    tally.status_504 = tally.by_status.get(&504).copied().unwrap_or(0);
    tally.status_5xx = tally.by_status.range(500..600).map(|(_, n)| n).sum();
    (out, tally)
}

/// The server that answers visitors and logs their requests' gateway errors.
fn is_front(source: LogSource) -> bool {
    matches!(source, LogSource::NginxError | LogSource::ApacheError)
}

/// A gateway error (the worker died, 502/504) says more than the 500 logged before it.
fn worse(new: u16, old: u16) -> bool {
    let rank = |s: u16| match s {
        502 | 504 => 2,
        500..=599 => 1,
        _ => 0,
    };
    rank(new) > rank(old)
}
