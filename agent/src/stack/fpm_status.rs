//! PHP-FPM's live status, read straight from each pool over FastCGI (`pm.status_path` with
//! `?json&full`), without needing the web server to expose it: active, idle and total workers,
//! the listen queue, `max children reached`, slow requests, and the scripts holding the workers
//! right now. When the pool has `pm.status_listen` (PHP 8.0+), the status is asked there: that
//! separate listener answers even when every worker of the pool is busy.
//!
//! What it proves now: a pool with no idle worker and requests queued is saturated
//! (`upstream.saturated`, confirmed); a pool that accepts the connection but has no worker free
//! to answer within the deadline is saturated too; idle workers rule saturation out.

use serde_json::Value;

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::discover::{Address, Discovery, Pool};
use crate::host::exchange::{ExchangeError, Stage};
use crate::host::{Endpoint, Exchange, Host, Reply};

/// One worker as the full status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub pid: u64,
    pub state: String,
    pub method: String,
    pub uri: String,
    pub script: String,
    /// Microseconds the current (or last) request has run.
    pub duration_us: u64,
    pub memory: u64,
}

/// A pool's status page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStatus {
    pub pool: String,
    pub active: u64,
    pub idle: u64,
    pub total: u64,
    pub max_active: u64,
    pub listen_queue: u64,
    pub max_listen_queue: u64,
    pub listen_queue_len: u64,
    pub max_children_reached: u64,
    pub slow_requests: u64,
    pub start_since: u64,
    pub workers: Vec<Worker>,
}

/// Parses `?json&full` (or `?json`) output. Numbers PHP-FPM writes as strings are accepted.
pub fn parse(body: &str) -> Result<PoolStatus, String> {
    let v: Value = serde_json::from_str(body.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    if !obj.contains_key("active processes") {
        return Err("no `active processes` in the answer: not a PHP-FPM status page".into());
    }
    let n = |o: &serde_json::Map<String, Value>, k: &str| -> u64 {
        match o.get(k) {
            Some(Value::Number(x)) => x.as_u64().unwrap_or(0),
            Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
            _ => 0,
        }
    };
    // Request URIs are visitors' text: no control byte reaches a terminal.
    let s = |o: &serde_json::Map<String, Value>, k: &str| super::json_text(o.get(k));
    let workers = obj
        .get("processes")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_object)
                .take(10_000)
                .map(|w| Worker {
                    pid: n(w, "pid"),
                    state: s(w, "state"),
                    method: s(w, "request method"),
                    uri: s(w, "request uri"),
                    script: s(w, "script"),
                    duration_us: n(w, "request duration"),
                    memory: n(w, "last request memory"),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(PoolStatus {
        pool: s(obj, "pool"),
        active: n(obj, "active processes"),
        idle: n(obj, "idle processes"),
        total: n(obj, "total processes"),
        max_active: n(obj, "max active processes"),
        listen_queue: n(obj, "listen queue"),
        max_listen_queue: n(obj, "max listen queue"),
        listen_queue_len: n(obj, "listen queue len"),
        max_children_reached: n(obj, "max children reached"),
        slow_requests: n(obj, "slow requests"),
        start_since: n(obj, "start since"),
        workers,
    })
}

/// The status page's path and where to ask it, when the pool has one.
pub fn status_target(pool: &Pool) -> Option<(String, Endpoint)> {
    let path = pool.status_path.as_ref()?.value.clone();
    let endpoint = match pool.other.get("pm.status_listen") {
        Some(listen) => address_endpoint(&crate::discover::php_fpm::parse_listen(&listen.value)),
        None => address_endpoint(&pool.listen.as_ref()?.value),
    };
    Some((path, endpoint))
}

pub(crate) fn address_endpoint(address: &Address) -> Endpoint {
    address.endpoint()
}

/// The request for a pool's page `uri` over FastCGI.
pub fn request(endpoint: &Endpoint, uri: &str) -> Exchange {
    Exchange::Fastcgi {
        endpoint: endpoint.clone(),
        params: crate::host::client::fastcgi::get_params(uri),
        timeout_ms: super::EXCHANGE_TIMEOUT.as_millis() as u64,
    }
}

/// The lines to add to a pool file to get its status (and keep it answering when saturated).
pub fn enable_lines(pool: &Pool) -> String {
    let dir = match &pool.listen.as_ref().map(|l| &l.value) {
        Some(Address::Unix(p)) => p
            .parent()
            .map_or("/run/php".to_string(), |d| d.display().to_string()),
        _ => "/run/php".to_string(),
    };
    format!(
        "pm.status_path = /fpm-status\npm.status_listen = {dir}/{}-status.sock",
        pool.name
    )
}

/// The status check of every pool.
pub fn checks(host: &dyn Host, d: &Discovery) -> Vec<Check> {
    let mut out = Vec::new();
    for fpm in &d.php_fpm {
        for pool in fpm.pools.iter().filter(|p| in_use(d, fpm, p)) {
            out.push(pool_check(host, pool));
        }
    }
    out
}

/// A pool worth asking: its master runs, or nginx passes requests to it (a stopped PHP-FPM
/// that nginx depends on is exactly what to find; an installed, unused one is not). Decided
/// from discovery alone, so a snapshot replays the same choice.
pub fn in_use(d: &Discovery, fpm: &crate::discover::PhpFpm, pool: &Pool) -> bool {
    if fpm.master.is_some() {
        return true;
    }
    let Some(listen) = &pool.listen else {
        return false;
    };
    let target = address_endpoint(&listen.value);
    d.nginx.iter().chain(&d.other_nginx).any(|n| {
        n.upstream_targets.iter().any(|t| {
            t.address
                .as_ref()
                .is_some_and(|a| address_endpoint(a) == target)
        })
    })
}

fn pool_check(host: &dyn Host, pool: &Pool) -> Check {
    let id = format!("php-fpm.pool.{}.live-status", pool.name);
    let title = format!("PHP-FPM pool `{}` live status", pool.name);
    let Some((path, endpoint)) = status_target(pool) else {
        let file = pool.origin.to_string();
        return Check::skip(
            id,
            Area::Services,
            title,
            format!(
                "pool `{}` has no pm.status_path, so its workers cannot be asked; add to its pool file ({file}) and reload PHP-FPM:\n{}",
                pool.name,
                enable_lines(pool)
            ),
        )
        .fix(enable_lines(pool));
    };
    let uri = format!("{path}?json&full");
    let max_children = pool.max_children.as_ref().map(|m| m.value as u64);
    match host.exchange(&request(&endpoint, &uri)) {
        Ok(Reply::Fastcgi {
            status: 200,
            body,
            millis,
            ..
        }) => match parse(&body) {
            Ok(status) => judge(&id, &title, pool, &status, max_children, millis, &endpoint),
            Err(e) => Check::warn(id, Area::Services, title).detail(format!(
                "{endpoint} answered {uri} but {e}; is pm.status_path `{path}` right?"
            )),
        },
        Ok(Reply::Fastcgi { status, body, .. }) => Check::warn(id, Area::Services, title).detail(
            format!(
                "{endpoint} answered {uri} with status {status} ({}): the status page is not served there",
                body.trim().chars().take(80).collect::<String>()
            ),
        ),
        Ok(_) => Check::warn(id, Area::Services, title).detail("not a FastCGI answer"),
        Err(e) => unreachable_check(&id, &title, pool, &endpoint, &e),
    }
}

/// What an unanswered status request says about the pool.
fn unreachable_check(
    id: &str,
    title: &str,
    pool: &Pool,
    endpoint: &Endpoint,
    e: &ExchangeError,
) -> Check {
    let label = super::errno_label(e.errno, &e.message);
    match (e.stage, e.errno) {
        (Stage::NotCaptured, _) => Check::skip(id, Area::Services, title, e.message.clone()),
        (Stage::Connect, Some(libc::EAGAIN)) => Check::fail(id, Area::Services, title)
            .detail(format!(
                "{endpoint}: connect() failed {label}: the pool's listen queue is full now, every worker is busy"
            ))
            .cause(CauseId::UpstreamSaturated),
        (Stage::Connect, Some(libc::ECONNREFUSED | libc::ENOENT)) => {
            Check::fail(id, Area::Services, title)
                .detail(format!(
                    "{endpoint}: connect() failed {label}: pool `{}` is not running now",
                    pool.name
                ))
                .cause(CauseId::UpstreamDown)
        }
        (Stage::Exchange, Some(libc::ETIMEDOUT)) => Check::fail(id, Area::Services, title)
            .detail(format!(
                "{endpoint} accepted the connection but no worker answered within {} ms: every worker of pool `{}` is busy now{}",
                e.millis,
                pool.name,
                if pool.other.contains_key("pm.status_listen") {
                    ""
                } else {
                    " (add pm.status_listen to see which scripts hold them)"
                }
            ))
            .cause(CauseId::UpstreamSaturated),
        _ => Check::warn(id, Area::Services, title)
            .detail(format!("{endpoint}: the status request failed: {label}")),
    }
}

fn judge(
    id: &str,
    title: &str,
    pool: &Pool,
    s: &PoolStatus,
    max_children: Option<u64>,
    millis: u64,
    endpoint: &Endpoint,
) -> Check {
    // Asked on the pool's own socket, one active worker is this very request.
    let own = u64::from(!pool.other.contains_key("pm.status_listen"));
    let busy = s.active.saturating_sub(own);
    let limit = max_children.unwrap_or(s.total.max(1));
    let mut workers: Vec<&Worker> = s
        .workers
        .iter()
        .filter(|w| w.state.eq_ignore_ascii_case("running") && !w.uri.contains("json&full"))
        .collect();
    workers.sort_by_key(|w| std::cmp::Reverse(w.duration_us));
    let holding: Vec<String> = workers
        .iter()
        .take(5)
        .map(|w| {
            format!(
                "pid {} {} {} for {:.1} s ({})",
                w.pid,
                w.method,
                w.uri,
                w.duration_us as f64 / 1e6,
                w.script
            )
        })
        .collect();
    let numbers = format!(
        "{busy} of {limit} workers busy, {} idle, listen queue {} (max {} since start, length {}), max children reached {} times, {} slow requests",
        s.idle.saturating_sub(0),
        s.listen_queue,
        s.max_listen_queue,
        s.listen_queue_len,
        s.max_children_reached,
        s.slow_requests
    );
    let mut detail = format!("{endpoint} answered in {millis} ms: {numbers}");
    if !holding.is_empty() {
        detail.push_str(&format!(
            "\nthe {} scripts holding workers right now:\n  {}",
            holding.len(),
            holding.join("\n  ")
        ));
    }
    let saturated = busy >= limit || (s.idle == 0 && s.listen_queue > 0);
    let check = if saturated {
        Check::fail(id, Area::Services, title)
            .detail(format!("pool `{}` is saturated now: {detail}", pool.name))
            .cause(CauseId::UpstreamSaturated)
    } else {
        Check::ok(id, Area::Services, title)
            .detail(format!(
                "pool `{}` answers and has {} idle workers: not saturated now. {detail}",
                pool.name, s.idle
            ))
            // An ok check naming a cause rules it out now (see diagnose).
            .cause(CauseId::UpstreamSaturated)
    };
    check
        .metric("active", busy as f64, None)
        .metric("idle", s.idle as f64, None)
        .metric("listen_queue", s.listen_queue as f64, None)
        .metric("max_children_reached", s.max_children_reached as f64, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SATURATED: &str = r#"{"pool":"www","process manager":"static","start time":1764745000,"start since":60,"accepted conn":12,"listen queue":3,"max listen queue":4,"listen queue len":511,"idle processes":0,"active processes":2,"total processes":2,"max active processes":2,"max children reached":0,"slow requests":1,"processes":[{"pid":101,"state":"Running","start time":1764745000,"start since":60,"requests":3,"request duration":5012345,"request method":"GET","request uri":"/slow.php?s=30","content length":0,"user":"-","script":"/srv/www/slow.php","last request cpu":0.00,"last request memory":0},{"pid":102,"state":"Running","request duration":4000000,"request method":"GET","request uri":"/slow.php?s=30","script":"/srv/www/slow.php","last request memory":0}]}"#;

    #[test]
    fn a_status_page_parses() {
        let s = parse(SATURATED).unwrap();
        assert_eq!((s.active, s.idle, s.listen_queue), (2, 0, 3));
        assert_eq!(s.workers.len(), 2);
        assert_eq!(s.workers[0].uri, "/slow.php?s=30");
        assert!(parse("<html>").is_err());
        assert!(parse("{\"pool\":\"www\"}").is_err());
    }
}
