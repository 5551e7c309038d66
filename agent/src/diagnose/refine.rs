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
//! - Causes behind causes (the field [`EXPLAINED_BY`], read by the chain step): a PHP fatal error
//!   that is a database connection failure (`mysqli_sql_exception: Too many connections`,
//!   `SQLSTATE[HY000] [2002]`) is explained by the database; a crashed table after the disk
//!   filled up by the full disk.
//! - With no front server's error log (a PHP-FPM log alone), slow or timed-out requests while
//!   `pm.max_children` is reached are the saturation.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::cause::CauseId;
use crate::event::{Event, LogSource};

/// Seconds within which two logs' lines are taken as the same moment (both log whole seconds).
const SAME_MOMENT: i64 = 2;
/// How long a `server reached pm.max_children` warning stands for: PHP-FPM logs it once per
/// episode, not once per queued request.
const SATURATION_EPISODE: i64 = 300;
/// How long before `no live upstreams` the refused connects that marked the servers count.
const NO_LIVE_LEAD: i64 = 60;
/// The kernel's OOM report and PHP-FPM's reaping of the victim: both wall-clock logs, but the
/// kernel's report is long and syslog may stamp it later.
const OOM_MOMENT: i64 = 5;

/// The event field naming the cause that explains an event's own cause.
pub const EXPLAINED_BY: &str = "explained_by";

/// `oom_pids`: pids the kernel killed for memory in this window, from its log read by a check
/// (when no kernel log file was given).
pub fn refine<'a>(events: &'a [Event], oom_pids: &[&str]) -> Vec<Cow<'a, Event>> {
    let secs = |e: &Event| e.time.map(|t| t.as_second());
    // The moments each test looks near, sorted: every test is a range query (a binary search),
    // so that thousands of events against thousands of others stay cheap.
    let mut timeouts: Vec<(i64, Option<&str>)> = events
        .iter()
        .filter(|e| is_fpm_timeout_kill(e))
        .filter_map(|e| Some((secs(e)?, e.field("child"))))
        .collect();
    timeouts.sort_unstable();
    let ooms: Vec<i64> = sorted(
        events
            .iter()
            .filter(|e| e.source == LogSource::Kernel && e.cause == CauseId::HostOomKill)
            .filter_map(secs),
    );
    let oom_victims: HashSet<&str> = events
        .iter()
        .filter(|e| e.source == LogSource::Kernel && e.cause == CauseId::HostOomKill)
        .filter_map(|e| e.field("victim_pid"))
        .chain(oom_pids.iter().copied())
        .collect();
    // PHP-FPM children the kernel killed: named by the kernel's report (its pid), or SIGKILLed
    // at the moment of an OOM kill. The kernel's stamps may be uptime only (raw dmesg): the pid
    // is what ties them then.
    let oom_sigkills: Vec<i64> = sorted(
        events
            .iter()
            .filter(|e| e.source == LogSource::PhpFpm && signal(e) == Some(9))
            .filter(|e| {
                e.field("child").is_some_and(|c| oom_victims.contains(c))
                    || e.time
                        .is_some_and(|t| any_near(&ooms, t.as_second(), OOM_MOMENT))
            })
            .filter_map(secs),
    );
    let disk_full: Option<i64> = events
        .iter()
        .filter(|e| e.cause == CauseId::HostDiskFull)
        .filter_map(secs)
        .min();
    let front_log = events
        .iter()
        .any(|e| matches!(e.source, LogSource::NginxError | LogSource::ApacheError));
    let is_sigkill = |e: &&Event| e.source == LogSource::PhpFpm && signal(e) == Some(9);
    // Any SIGKILL, with a time or not (one without a time still says the kernel was not alone).
    let any_sigkill = events.iter().any(|e| is_sigkill(&e));
    let sigkills: Vec<i64> = sorted(events.iter().filter(is_sigkill).filter_map(secs));
    let max_children: Vec<i64> = sorted(
        events
            .iter()
            .filter(|e| e.source == LogSource::PhpFpm && e.cause == CauseId::UpstreamSaturated)
            .filter_map(secs),
    );
    let no_live: Vec<i64> = sorted(
        events
            .iter()
            .filter(|e| e.source == LogSource::NginxError && e.cause == CauseId::UpstreamNoLive)
            .filter_map(secs),
    );
    // A `max_children` warning up to an episode before `t` (or at its moment).
    let saturated_at = |t: Option<i64>| {
        t.is_some_and(|t| any_in(&max_children, t - SATURATION_EPISODE, t + SAME_MOMENT))
    };
    let marks_no_live = |t: Option<i64>| t.is_some_and(|t| any_in(&no_live, t, t + NO_LIVE_LEAD));
    let near_within =
        |list: &[i64], t: Option<i64>, secs: i64| t.is_some_and(|t| any_near(list, t, secs));
    let timeout_near = |t: Option<i64>, child: Option<&str>| match t {
        Some(t) => {
            let from = timeouts.partition_point(|(s, _)| *s < t - SAME_MOMENT);
            timeouts[from..]
                .iter()
                .take_while(|(s, _)| *s <= t + SAME_MOMENT)
                .any(|(_, c)| child.is_none() || c.is_none() || *c == child)
        }
        None => false,
    };

    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let t = secs(event);
        let mut cause = event.cause;
        let mut explained_by = None;
        if event.source == LogSource::PhpFpm && signal(event).is_some() {
            let sig = signal(event).unwrap_or_default();
            let victim = event
                .field("child")
                .is_some_and(|c| oom_victims.contains(&c));
            if timeout_near(t, event.field("child")) {
                // The termination that `execution timed out` announced: same cause, same story.
                cause = CauseId::UpstreamTimeout;
            } else if sig == 9 && (victim || near_within(&ooms, t, OOM_MOMENT)) {
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
            } else if near_within(&oom_sigkills, t, OOM_MOMENT)
                || (near_within(&ooms, t, OOM_MOMENT)
                    && (near_within(&sigkills, t, OOM_MOMENT) || !any_sigkill))
            {
                cause = CauseId::HostOomKill;
            }
        } else if event.source == LogSource::PhpFpm
            && event.cause == CauseId::UpstreamTimeout
            && !front_log
            && saturated_at(t)
        {
            // A PHP-FPM log alone: the pool's workers were all taken by slow requests.
            cause = CauseId::UpstreamSaturated;
        } else if matches!(
            event.cause,
            CauseId::AppFatalError | CauseId::AppMemoryLimit
        ) {
            explained_by = database_failure(event);
        } else if event.cause == CauseId::DbCrashedTable
            && disk_full.is_some_and(|d| t.is_none_or(|t| d <= t + SAME_MOMENT))
        {
            explained_by = Some(CauseId::HostDiskFull);
        }
        // Only the events whose cause changed are copied.
        out.push(if cause == event.cause && explained_by.is_none() {
            Cow::Borrowed(event)
        } else {
            let mut event = Event {
                cause,
                ..event.clone()
            };
            if let Some(root) = explained_by {
                event.fields.insert(EXPLAINED_BY, root.id());
            }
            Cow::Owned(event)
        });
    }
    out
}

/// `moments`, sorted.
fn sorted(moments: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut v: Vec<i64> = moments.collect();
    v.sort_unstable();
    v
}

/// Whether sorted `moments` hold one in `lo..=hi`.
fn any_in(moments: &[i64], lo: i64, hi: i64) -> bool {
    let i = moments.partition_point(|&m| m < lo);
    moments.get(i).is_some_and(|&m| m <= hi)
}

/// Whether sorted `moments` hold one within `secs` of `t`.
fn any_near(moments: &[i64], t: i64, secs: i64) -> bool {
    any_in(moments, t - secs, t + secs)
}

/// A PHP fatal error that is the database refusing or lacking connections: PHP 8.1's
/// `mysqli_sql_exception`, PDO's `SQLSTATE[HY000] [1040]`, WordPress's message. Server error
/// numbers, not texts, where the message carries them.
fn database_failure(event: &Event) -> Option<CauseId> {
    let text = event.field("error").unwrap_or(&event.text);
    let lower = text.to_ascii_lowercase();
    let db_context = [
        "mysqli",
        "pdo",
        "sqlstate",
        "mysql",
        "database",
        "doctrine",
        "illuminate\\database",
    ]
    .iter()
    .any(|k| lower.contains(k));
    if !db_context {
        return None;
    }
    if lower.contains("[1040]")
        || lower.contains("/1040)")
        || lower.contains("too many connections")
        || lower.contains("[1203]")
    {
        return Some(CauseId::DbTooManyConnections);
    }
    if lower.contains("is marked as crashed") || lower.contains("[1194]") {
        return Some(CauseId::DbCrashedTable);
    }
    if ["[2002]", "[2003]", "[2006]", "/2002)", "/2003)", "/2006)"]
        .iter()
        .any(|k| lower.contains(k))
        || lower.contains("error establishing a database connection")
        || lower.contains("can't connect to mysql server")
        || lower.contains("can't connect to local mysql server")
        || lower.contains("mysql server has gone away")
        || (lower.contains("mysqli_sql_exception")
            && (lower.contains("connection refused")
                || lower.contains("no such file or directory")))
    {
        return Some(CauseId::DbDown);
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_queries_agree_with_a_scan() {
        // The binary searches against the plain scans they replaced, bounds included.
        let moments = sorted([5, -3, 40, 40, 7, 100, 0].into_iter());
        for lo in -10..110 {
            for width in [0, 1, 5, 60, 300] {
                let scan = moments.iter().any(|&m| m >= lo && m <= lo + width);
                assert_eq!(any_in(&moments, lo, lo + width), scan, "{lo} {width}");
                let near = moments.iter().any(|&m| (m - lo).abs() <= width);
                assert_eq!(any_near(&moments, lo, width), near, "{lo} ±{width}");
            }
        }
        assert!(!any_in(&[], 0, 10));
    }
}
