//! Cross-log refinement: the cause of some events depends on what another log said at the same
//! moment (log catalog §4.7–4.9, §5):
//! - nginx saw the worker reset the connection (`recv() failed (104…)`, `upstream prematurely
//!   closed`): a PHP-FPM `execution timed out … terminating` at that moment makes it a timeout
//!   (`request_terminate_timeout`); a PHP-FPM `signal 9` with a kernel OOM kill makes it an OOM
//!   kill; otherwise the worker crashed.
//! - PHP-FPM's `exited on signal 9` is an OOM kill only when the kernel log agrees; `signal 15`
//!   after `execution timed out` is the timeout's own consequence; `signal 15`/`SIGQUIT` alone is a
//!   graceful stop or reload, not a crash.
//! - nginx's `upstream timed out … while reading response header` after PHP-FPM said `server
//!   reached pm.max_children` is a request that waited in the pool's queue: saturation (§4.5),
//!   not one slow script.
//! - `connect() failed (111…)` to TCP servers just before `no live upstreams` is how nginx marked
//!   the group's servers failed: one story, `upstream.no-live`.

use std::borrow::Cow;

use crate::cause::CauseId;
use crate::event::{Event, LogSource};

/// Seconds within which two logs' lines are taken as the same moment (both log whole seconds).
const SAME_MOMENT: i64 = 2;
/// How long a `server reached pm.max_children` warning stands for: PHP-FPM logs it once per
/// episode, not once per queued request.
const SATURATION_EPISODE: i64 = 300;
/// How long before `no live upstreams` the refused connects that marked the servers count.
const NO_LIVE_LEAD: i64 = 60;

pub fn refine(events: &[Event]) -> Vec<Cow<'_, Event>> {
    let secs = |e: &Event| e.time.map(|t| t.as_second());
    let timeouts: Vec<(Option<i64>, Option<&str>)> = events
        .iter()
        .filter(|e| is_fpm_timeout_kill(e))
        .map(|e| (secs(e), e.field("child")))
        .collect();
    let ooms: Vec<Option<i64>> = events
        .iter()
        .filter(|e| e.source == LogSource::Kernel && e.cause == CauseId::HostOomKill)
        .map(secs)
        .collect();
    let sigkills: Vec<Option<i64>> = events
        .iter()
        .filter(|e| e.source == LogSource::PhpFpm && signal(e) == Some(9))
        .map(secs)
        .collect();
    let max_children: Vec<i64> = events
        .iter()
        .filter(|e| e.source == LogSource::PhpFpm && e.cause == CauseId::UpstreamSaturated)
        .filter_map(secs)
        .collect();
    let no_live: Vec<i64> = events
        .iter()
        .filter(|e| e.source == LogSource::NginxError && e.cause == CauseId::UpstreamNoLive)
        .filter_map(secs)
        .collect();
    let saturated_at = |t: Option<i64>| {
        t.is_some_and(|t| {
            max_children
                .iter()
                .any(|m| *m <= t + SAME_MOMENT && t - m <= SATURATION_EPISODE)
        })
    };
    let marks_no_live = |t: Option<i64>| {
        t.is_some_and(|t| no_live.iter().any(|n| *n >= t && n - t <= NO_LIVE_LEAD))
    };
    let near = |list: &[Option<i64>], t: Option<i64>| match t {
        Some(t) => list.iter().flatten().any(|s| (s - t).abs() <= SAME_MOMENT),
        None => false,
    };
    let timeout_near = |t: Option<i64>, child: Option<&str>| match t {
        Some(t) => timeouts.iter().any(|(s, c)| {
            s.is_some_and(|s| (s - t).abs() <= SAME_MOMENT)
                && (child.is_none() || c.is_none() || *c == child)
        }),
        None => false,
    };

    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let t = secs(event);
        let mut cause = event.cause;
        if event.source == LogSource::PhpFpm && signal(event).is_some() {
            let sig = signal(event).unwrap_or_default();
            if timeout_near(t, event.field("child")) {
                // The termination that `execution timed out` announced: same cause, same story.
                cause = CauseId::UpstreamTimeout;
            } else if sig == 9 && near(&ooms, t) {
                cause = CauseId::HostOomKill;
            } else if sig == 15 || sig == 3 {
                // SIGTERM / SIGQUIT with no timeout: php-fpm stopping or reloading its children.
                continue;
            } else {
                cause = CauseId::UpstreamCrashed;
            }
        } else if event.source == LogSource::NginxError
            && event.cause == CauseId::UpstreamTimeout
            && saturated_at(t)
        {
            cause = CauseId::UpstreamSaturated;
        } else if event.source == LogSource::NginxError
            && event.cause == CauseId::UpstreamDown
            && event.field("errno") == Some("111")
            && event.field("upstream").is_some_and(is_tcp_upstream)
            && marks_no_live(t)
        {
            cause = CauseId::UpstreamNoLive;
        } else if event.source == LogSource::NginxError && event.cause == CauseId::UpstreamCrashed {
            if timeout_near(t, None) {
                cause = CauseId::UpstreamTimeout;
            } else if near(&ooms, t) && (near(&sigkills, t) || sigkills.is_empty()) {
                cause = CauseId::HostOomKill;
            }
        }
        // Only the events whose cause changed are copied.
        out.push(if cause == event.cause {
            Cow::Borrowed(event)
        } else {
            Cow::Owned(Event {
                cause,
                ..event.clone()
            })
        });
    }
    out
}

/// `fastcgi://127.0.0.1:9000`, `http://[::1]:8080/x`: a TCP peer, not a unix socket.
fn is_tcp_upstream(upstream: &str) -> bool {
    !upstream.contains("unix:")
}

fn is_fpm_timeout_kill(event: &Event) -> bool {
    event.source == LogSource::PhpFpm
        && event.cause == CauseId::UpstreamTimeout
        && signal(event).is_none()
}

/// The signal number of a PHP-FPM `exited on signal N` event.
fn signal(event: &Event) -> Option<u32> {
    let raw = event.field("signal")?;
    let digits: String = raw.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}
