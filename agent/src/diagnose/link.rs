//! Linking 5xx responses to the events that explain them.
//!
//! A direct link is the nginx error entry of the same request: same request line, logged at most
//! the request's duration (plus slack) before the access line, which nginx writes when the request
//! ends. Each error entry explains at most one response. A weak link is an event of any log within
//! a few seconds of the response, used only when no direct link exists.

use std::borrow::Cow;
use std::collections::HashMap;

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
    let mut links = Links::default();

    for (r, response) in errors.iter().enumerate() {
        let duration = response.request_time.unwrap_or(0.0).ceil() as i64;
        let rt = response.time.map(|t| t.as_second());
        let mut best: Option<(i64, usize)> = None;
        if let Some(candidates) = by_request.get(response.request.as_str()) {
            for &i in candidates {
                if used[i] {
                    continue;
                }
                let distance = match (rt, events[i].time.map(|t| t.as_second())) {
                    (Some(r), Some(e)) => {
                        let before = r - e; // error entries come before (or with) the access line
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
        }
        if let Some((_, i)) = best {
            used[i] = true;
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
        let lo = timed.partition_point(|(t, _)| *t < rt - duration - WEAK_SECS);
        let mut nearest: Option<(i64, usize)> = None;
        for &(t, i) in &timed[lo..] {
            if t > rt + WEAK_SECS {
                break;
            }
            let event = &events[i];
            if event.severity == Severity::Info {
                continue; // context, not a cause
            }
            if event.source == LogSource::NginxError && event.field("request").is_some() {
                continue; // that one belongs to another request
            }
            if !plausible(event.cause, response.status) {
                continue;
            }
            let d = (t - rt).abs();
            if nearest.is_none_or(|(nd, _)| d < nd) {
                nearest = Some((d, i));
            }
        }
        if let Some((_, i)) = nearest {
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

/// Whether a cause can produce this status at the origin (log catalog §0, §2).
fn plausible(cause: CauseId, status: u16) -> bool {
    use CauseId::*;
    match status {
        504 => matches!(
            cause,
            UpstreamTimeout | UpstreamSaturated | HostOverloaded | DbTooManyConnections
        ),
        500 => matches!(
            cause,
            AppFatalError
                | AppMemoryLimit
                | DbDown
                | DbTooManyConnections
                | DbCrashedTable
                | HostDiskFull
                | HostFdExhausted
                | NetWorkerConnections
        ),
        503 => matches!(
            cause,
            HostCgroupLimit | UpstreamDown | UpstreamSaturated | UpstreamCrashed
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
    let mut out = Vec::new();
    for (r, response) in errors.iter().enumerate() {
        let link = links.links.iter().find(|l| l.response == r);
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
