//! Linking 5xx responses to the events that explain them.
//!
//! A direct link is the nginx error entry of the same request: same request line, logged at most
//! the request's duration (plus slack) before the access line, which nginx writes when the request
//! ends. Each error entry explains at most one response. A weak link is an event of any log within
//! a few seconds of the response, used only when no direct link exists.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use crate::cause::CauseId;
use crate::event::{Event, LogSource, Response, Severity};

/// Slack added to a request's duration when matching its error entry (whole-second log times).
const SLACK_SECS: i64 = 2;
/// How close in time an event must be for a weak link.
const WEAK_SECS: i64 = 2;

#[derive(Debug)]
pub struct Link<'a> {
    pub response: usize,
    pub event: &'a Event,
    pub cause: CauseId,
    pub direct: bool,
}

#[derive(Debug, Default)]
pub struct Links<'a> {
    pub links: Vec<Link<'a>>,
    /// Responses with at least one link.
    pub explained: usize,
}

pub fn link<'a>(errors: &[&Response], events: &'a [Cow<'a, Event>]) -> Links<'a> {
    // The nginx error entries of each request line, not yet linked. Every look-up below is a
    // range query (the nearest in time on either side), so linking n responses to m events costs
    // O((n + m) log m), however many entries share a request line or a second.
    let mut by_request: HashMap<&str, Unlinked> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        if event.source == LogSource::NginxError {
            if let Some(request) = event.field("request") {
                by_request
                    .entry(request)
                    .or_default()
                    .insert(i, event.time.map(|t| t.as_second()));
            }
        }
    }
    // Events a weak link may name, by time, one list per status (the causes plausible for it).
    let weak_candidates: Vec<(i64, usize)> = {
        let mut v: Vec<(i64, usize)> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                // Info is context, not a cause; an entry with a request belongs to that request.
                e.severity != Severity::Info
                    && !(e.source == LogSource::NginxError && e.field("request").is_some())
            })
            .filter_map(|(i, e)| e.time.map(|t| (t.as_second(), i)))
            .collect();
        v.sort_unstable();
        v
    };
    let mut weak_by_status: HashMap<u16, Vec<(i64, usize)>> = HashMap::new();
    let mut links = Links::default();

    for (r, response) in errors.iter().enumerate() {
        let duration = duration_secs(response);
        let rt = response.time.map(|t| t.as_second());
        let direct = by_request
            .get_mut(response.request.as_str())
            .and_then(|c| c.take_nearest(rt, duration, |i| events[i].time.map(|t| t.as_second())));
        if let Some(i) = direct {
            links.links.push(Link {
                response: r,
                event: &events[i],
                cause: events[i].cause,
                direct: true,
            });
            links.explained += 1;
            continue;
        }
        // Weak link: the nearest event in time from a log that has no request to match on.
        let Some(rt) = rt else { continue };
        let list = weak_by_status.entry(response.status).or_insert_with(|| {
            weak_candidates
                .iter()
                .copied()
                .filter(|&(_, i)| plausible(events[i].cause, response.status))
                .collect()
        });
        if let Some(i) = nearest_in(list, rt, rt - duration - WEAK_SECS, rt + WEAK_SECS) {
            links.links.push(Link {
                response: r,
                event: &events[i],
                cause: events[i].cause,
                direct: false,
            });
            links.explained += 1;
        }
    }
    links
}

/// The request's duration in whole seconds, as far as it can matter: a logged `$request_time` that
/// is negative, not a number or infinite (`inf` parses as a float) is read as 0 or a day, so the
/// windows below never overflow or turn inside out.
fn duration_secs(response: &Response) -> i64 {
    let t = response.request_time.unwrap_or(0.0);
    if t.is_nan() {
        0
    } else {
        t.clamp(0.0, 86_400.0).ceil() as i64
    }
}

/// The event of `sorted` (by time, then index) nearest to `at`, within `lo..=hi`: the smallest
/// distance, then the earlier time, then the lower index.
fn nearest_in(sorted: &[(i64, usize)], at: i64, lo: i64, hi: i64) -> Option<usize> {
    let p = sorted.partition_point(|&(t, _)| t < at);
    let after = sorted.get(p).filter(|&&(t, _)| t <= hi);
    let before = p
        .checked_sub(1)
        .map(|q| sorted[q].0)
        .filter(|&t| t >= lo)
        .map(|t| sorted[sorted.partition_point(|&(u, _)| u < t)]);
    match (before, after) {
        (Some((tb, ib)), Some(&(ta, ia))) => Some(if at - tb <= ta - at { ib } else { ia }),
        (Some((_, ib)), None) => Some(ib),
        (None, Some(&(_, ia))) => Some(ia),
        (None, None) => None,
    }
}

/// The not yet linked error entries of one request line.
#[derive(Debug, Default)]
struct Unlinked {
    /// (time, index) of the entries with a time.
    timed: BTreeSet<(i64, usize)>,
    /// Indexes of the entries without one.
    untimed: BTreeSet<usize>,
    /// Every index, for a response without a time.
    all: BTreeSet<usize>,
}

impl Unlinked {
    fn insert(&mut self, index: usize, time: Option<i64>) {
        match time {
            Some(t) => self.timed.insert((t, index)),
            None => self.untimed.insert(index),
        };
        self.all.insert(index);
    }

    fn remove(&mut self, index: usize, time: Option<i64>) {
        match time {
            Some(t) => self.timed.remove(&(t, index)),
            None => self.untimed.remove(&index),
        };
        self.all.remove(&index);
    }

    /// Takes the entry that ended the response at `rt` after `duration` seconds: logged at most
    /// the duration (plus slack) before the access line, or slack after; the nearest in time,
    /// then the lowest index. An entry without a time (or a response without one) is a match of
    /// last resort: the lowest index.
    fn take_nearest(
        &mut self,
        rt: Option<i64>,
        duration: i64,
        time_of: impl Fn(usize) -> Option<i64>,
    ) -> Option<usize> {
        let Some(r) = rt else {
            let &i = self.all.first()?;
            self.remove(i, time_of(i));
            return Some(i);
        };
        let after = self
            .timed
            .range((r, 0)..)
            .next()
            .filter(|&&(t, _)| t - r <= SLACK_SECS)
            .copied();
        let before = self
            .timed
            .range(..(r, 0))
            .next_back()
            .filter(|&&(t, _)| r - t <= duration + SLACK_SECS)
            .and_then(|&(t, _)| self.timed.range((t, 0)..).next())
            .copied();
        let best = match (before, after) {
            (Some((tb, ib)), Some((ta, ia))) => {
                // The smaller distance; on a tie the lower index.
                if (r - tb, ib) < (ta - r, ia) {
                    (Some(tb), ib)
                } else {
                    (Some(ta), ia)
                }
            }
            (Some((t, i)), None) | (None, Some((t, i))) => (Some(t), i),
            (None, None) => (None, *self.untimed.first()?),
        };
        self.remove(best.1, best.0);
        Some(best.1)
    }
}

/// Whether a cause can produce this status at the origin (log catalog §0, §2).
fn plausible(cause: CauseId, status: u16) -> bool {
    use CauseId::*;
    match status {
        504 => matches!(
            cause,
            UpstreamTimeout | UpstreamSaturated | HostOverloaded | DbTooManyConnections
        ),
        // Apache answers 500 when a FastCGI answer has no usable headers.
        500 => matches!(
            cause,
            UpstreamBadResponse
                | UpstreamCrashed
                | AppFatalError
                | AppMemoryLimit
                | DbDown
                | DbTooManyConnections
                | DbCrashedTable
                | HostDiskFull
                | HostFdExhausted
                | NetWorkerConnections
        ),
        // Apache answers 503 when it cannot reach its backend.
        503 => matches!(
            cause,
            HostCgroupLimit
                | UpstreamDown
                | UpstreamSocketPermission
                | UpstreamSaturated
                | UpstreamCrashed
                | WebSaturated
        ),
        502 => !matches!(cause, AppFatalError | AppMemoryLimit | DbCrashedTable),
        _ => true,
    }
}

/// What `origin-agent explain` asks about.
#[derive(Debug, Clone)]
pub enum ExplainQuery {
    /// Responses within a few seconds of this moment.
    At(jiff::Timestamp),
    /// Responses whose request line contains this text.
    Request(String),
    /// The nginx connection id (`*123`).
    Connection(String),
}

/// One response and what explains it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub response: Response,
    pub cause: Option<CauseId>,
    pub direct: bool,
    pub event: Option<Event>,
    /// Other events of the same seconds, for context.
    pub nearby: Vec<Event>,
}

/// Explains the responses the query selects.
pub fn explain(evidence: &crate::event::Evidence, query: &ExplainQuery) -> Vec<Explanation> {
    let events = super::refine::refine(&evidence.events, &[]);
    let errors: Vec<&Response> = evidence.errors.iter().collect();
    let links = link(&errors, &events);
    let selected = |r: &Response, linked: Option<&Event>| match query {
        ExplainQuery::At(t) => r
            .time
            .is_some_and(|rt| (rt.as_second() - t.as_second()).abs() <= 5),
        ExplainQuery::Request(text) => r.request.contains(text.as_str()),
        ExplainQuery::Connection(id) => {
            let id = id.trim_start_matches('*');
            linked.is_some_and(|e| {
                e.field("connection").map(|c| c.trim_start_matches('*')) == Some(id)
            })
        }
    };
    let by_response: HashMap<usize, &Link<'_>> =
        links.links.iter().map(|l| (l.response, l)).collect();
    let mut out = Vec::new();
    for (r, response) in errors.iter().enumerate() {
        let link = by_response.get(&r).copied();
        if !selected(response, link.map(|l| l.event)) {
            continue;
        }
        let nearby = response.time.map_or_else(Vec::new, |rt| {
            events
                .iter()
                .filter(|e| {
                    e.time
                        .is_some_and(|t| (t.as_second() - rt.as_second()).abs() <= WEAK_SECS)
                        && link.is_none_or(|l| !std::ptr::eq(l.event, e.as_ref()))
                })
                .take(5)
                .map(|e| e.as_ref().clone())
                .collect()
        });
        out.push(Explanation {
            response: (*response).clone(),
            cause: link.map(|l| l.cause),
            direct: link.is_some_and(|l| l.direct),
            event: link.map(|l| l.event.clone()),
            nearby,
        });
        if out.len() >= 50 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The linking as first written: a scan of every candidate of the request line and of every
    /// event in the weak window (quadratic, obviously right). `link` must pick the same.
    fn reference<'a>(
        errors: &[&Response],
        events: &'a [Cow<'a, Event>],
    ) -> Vec<(usize, usize, bool)> {
        let mut by_request: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            if event.source == LogSource::NginxError {
                if let Some(request) = event.field("request") {
                    by_request.entry(request).or_default().push(i);
                }
            }
        }
        let mut timed: Vec<(i64, usize)> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.time.map(|t| (t.as_second(), i)))
            .collect();
        timed.sort_unstable();
        let mut used = vec![false; events.len()];
        let mut out = Vec::new();
        for (r, response) in errors.iter().enumerate() {
            let duration = duration_secs(response);
            let rt = response.time.map(|t| t.as_second());
            let mut best: Option<(i64, usize)> = None;
            for &i in by_request
                .get(response.request.as_str())
                .into_iter()
                .flatten()
            {
                if used[i] {
                    continue;
                }
                let distance = match (rt, events[i].time.map(|t| t.as_second())) {
                    (Some(r), Some(e)) => {
                        let before = r - e;
                        if before < -SLACK_SECS || before > duration + SLACK_SECS {
                            continue;
                        }
                        before.abs()
                    }
                    _ => i64::MAX / 2,
                };
                if best.is_none_or(|(d, _)| distance < d) {
                    best = Some((distance, i));
                }
            }
            if let Some((_, i)) = best {
                used[i] = true;
                out.push((r, i, true));
                continue;
            }
            let Some(rt) = rt else { continue };
            let lo = timed.partition_point(|(t, _)| *t < rt - duration - WEAK_SECS);
            let mut nearest: Option<(i64, usize)> = None;
            for &(t, i) in &timed[lo..] {
                if t > rt + WEAK_SECS {
                    break;
                }
                let event = &events[i];
                if event.severity == Severity::Info
                    || (event.source == LogSource::NginxError && event.field("request").is_some())
                    || !plausible(event.cause, response.status)
                {
                    continue;
                }
                let d = (t - rt).abs();
                if nearest.is_none_or(|(nd, _)| d < nd) {
                    nearest = Some((d, i));
                }
            }
            if let Some((_, i)) = nearest {
                out.push((r, i, false));
            }
        }
        out
    }

    /// A small deterministic generator (xorshift): no dependency, the same cases every run.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn absurd_request_times_neither_overflow_nor_hide_the_entry() {
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let event: Cow<'_, Event> = Cow::Owned(Event {
            source: LogSource::NginxError,
            file: "e.log".into(),
            line: 1,
            time: Some(at),
            rule: "r".into(),
            event: "e".into(),
            cause: CauseId::UpstreamTimeout,
            severity: Severity::Error,
            text: String::new(),
            fields: [("request", "GET / HTTP/1.1")].into_iter().collect(),
        });
        for t in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -5.0, 1e300] {
            let response = Response {
                file: "a.log".into(),
                line: 1,
                time: Some(at),
                status: 504,
                request: "GET / HTTP/1.1".into(),
                client: String::new(),
                upstream_addr: None,
                upstream_status: None,
                request_time: Some(t),
                body_bytes: None,
                forwarded_for: None,
            };
            let events = [event.clone()];
            let links = link(&[&response], &events);
            assert_eq!(links.explained, 1, "request_time {t}");
            assert!(links.links[0].direct);
        }
    }

    #[test]
    fn linking_by_range_queries_picks_what_the_full_scan_picks() {
        let causes = [
            CauseId::UpstreamTimeout,
            CauseId::UpstreamDown,
            CauseId::AppFatalError,
            CauseId::DbTooManyConnections,
            CauseId::UpstreamSaturated,
        ];
        let severities = [Severity::Info, Severity::Warning, Severity::Error];
        let sources = [
            LogSource::NginxError,
            LogSource::PhpFpm,
            LogSource::MysqlError,
        ];
        let base = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut compared = 0;
        for case in 0..400 {
            // Few request lines and few seconds: many ties and many entries per request.
            let span = 1 + rng.below(12) as i64;
            let requests = 1 + rng.below(4);
            let time = |rng: &mut Rng| {
                (rng.below(10) > 0)
                    .then(|| base + jiff::SignedDuration::from_secs(rng.below(span as u64) as i64))
            };
            let events: Vec<Cow<'_, Event>> = (0..rng.below(60))
                .map(|_| {
                    let source = sources[rng.below(3) as usize];
                    let mut fields = origin_evidence::event::FieldMap::new();
                    if source == LogSource::NginxError && rng.below(4) > 0 {
                        fields.insert("request", format!("GET /{} HTTP/1.1", rng.below(requests)));
                    }
                    Cow::Owned(Event {
                        source,
                        file: "e.log".into(),
                        line: 1,
                        time: time(&mut rng),
                        rule: "r".into(),
                        event: "e".into(),
                        cause: causes[rng.below(5) as usize],
                        severity: severities[rng.below(3) as usize],
                        text: String::new(),
                        fields,
                    })
                })
                .collect();
            let responses: Vec<Response> = (0..rng.below(40))
                .map(|_| Response {
                    file: "a.log".into(),
                    line: 1,
                    time: time(&mut rng),
                    status: [500, 502, 503, 504][rng.below(4) as usize],
                    request: format!("GET /{} HTTP/1.1", rng.below(requests + 1)),
                    client: String::new(),
                    upstream_addr: None,
                    upstream_status: None,
                    request_time: (rng.below(2) == 0).then(|| rng.below(4000) as f64 / 1000.0),
                    body_bytes: None,
                    forwarded_for: None,
                })
                .collect();
            let errors: Vec<&Response> = responses.iter().collect();
            let want = reference(&errors, &events);
            let got = link(&errors, &events);
            let got: Vec<(usize, usize, bool)> = got
                .links
                .iter()
                .map(|l| {
                    let i = events
                        .iter()
                        .position(|e| std::ptr::eq(e.as_ref(), l.event))
                        .unwrap();
                    (l.response, i, l.direct)
                })
                .collect();
            assert_eq!(got, want, "case {case}");
            compared += want.len();
        }
        assert!(compared > 2_000, "the cases link little: {compared}");
    }
}
