//! Apache httpd in the diagnosis: behind nginx, Apache's own state is the upstream's (Apache at
//! `MaxRequestWorkers` is `upstream.saturated` named as Apache, and nginx's timeouts to an Apache
//! that hit the limit are that saturation, not a slow app); the status a visitor got from Apache
//! (503 when the backend is unreachable, 504 on a timeout, 500 on unusable headers); and fixes
//! with the Apache directive, file and line to change.

use std::borrow::Cow;

use crate::cause::CauseId;
use crate::discover::{Address, Apache, Discovery};
use crate::event::{Event, LogSource};

/// How long before an nginx timeout an `AH00484` still explains it (requests queue behind the
/// busy workers up to nginx's read timeout).
const SATURATION_REACH_SECS: i64 = 300;

/// The Apache that nginx proxies to, when the host is stacked (nginx in front of Apache).
pub fn behind_nginx(d: &Discovery) -> Option<&Apache> {
    let a = d.apache.as_ref()?;
    crate::probes::apache::nginx_proxies_to_apache(d, a).then_some(a)
}

/// The `host:port` of an nginx `upstream: "http://127.0.0.1:8080/x"` field, as a port.
fn upstream_port(event: &Event) -> Option<u16> {
    let raw = event.field("upstream")?;
    let rest = raw.split("://").nth(1).unwrap_or(raw);
    let hostport = rest.split('/').next()?;
    hostport.rsplit_once(':')?.1.parse().ok()
}

/// `End of script output before headers` followed by `AH01070` for the same client: the
/// answer's headers were unusable (a bad response), not a dead worker.
fn headers_unusable(events: Vec<Cow<'_, Event>>) -> Vec<Cow<'_, Event>> {
    let keys: Vec<(Option<String>, Option<i64>)> = events
        .iter()
        .filter(|e| e.rule == "apache.fcgi-bad-headers")
        .map(|e| {
            (
                e.field("client").map(str::to_string),
                e.time.map(|t| t.as_second()),
            )
        })
        .collect();
    events
        .into_iter()
        .map(|e| {
            let paired = e.rule == "apache.fcgi-no-headers"
                && keys.iter().any(|(c, t)| {
                    c.as_deref() == e.field("client")
                        && match (t, e.time.map(|x| x.as_second())) {
                            (Some(a), Some(b)) => (a - b).abs() <= 1,
                            _ => true,
                        }
                });
            if paired {
                let mut owned = e.into_owned();
                owned.cause = CauseId::UpstreamBadResponse;
                owned.severity = crate::event::Severity::Info;
                Cow::Owned(owned)
            } else {
                e
            }
        })
        .collect()
}

/// Re-attributes Apache events (see the module doc).
pub fn refine<'a>(events: Vec<Cow<'a, Event>>, d: &Discovery) -> Vec<Cow<'a, Event>> {
    let events = if events.iter().any(|e| e.rule == "apache.fcgi-bad-headers") {
        headers_unusable(events)
    } else {
        events
    };
    let Some(apache) = behind_nginx(d) else {
        return events;
    };
    let ports = apache.ports();
    let saturated: Vec<i64> = events
        .iter()
        .filter(|e| e.source == LogSource::ApacheError && e.cause == CauseId::WebSaturated)
        .filter(|e| e.severity != crate::event::Severity::Info)
        .filter_map(|e| e.time.map(|t| t.as_second()))
        .collect();
    events
        .into_iter()
        .map(|e| {
            let to_apache = e.source == LogSource::NginxError
                && upstream_port(&e).is_some_and(|p| ports.contains(&p));
            let becomes = if e.source == LogSource::ApacheError
                && e.cause == CauseId::WebSaturated
                && e.severity != crate::event::Severity::Info
            {
                Some(CauseId::UpstreamSaturated)
            } else if to_apache && e.cause == CauseId::UpstreamTimeout {
                let t = e.time.map(|t| t.as_second());
                let near = t.is_none_or(|t| {
                    saturated
                        .iter()
                        .any(|s| *s <= t + 5 && t - *s <= SATURATION_REACH_SECS)
                });
                (!saturated.is_empty() && near).then_some(CauseId::UpstreamSaturated)
            } else {
                None
            };
            match becomes {
                Some(cause) => {
                    let mut owned = e.into_owned();
                    owned.cause = cause;
                    owned.fields.insert("backend", "apache");
                    Cow::Owned(owned)
                }
                None => e,
            }
        })
        .collect()
}

/// Whether Apache's error log shows this cause (Apache is in the visitor's path).
fn from_apache(events: &[&Event]) -> bool {
    events.iter().any(|e| e.source == LogSource::ApacheError)
}

/// Whether the cause's nginx events point at the Apache behind it.
fn nginx_to_apache(events: &[&Event], d: &Discovery) -> bool {
    let Some(a) = behind_nginx(d) else {
        return false;
    };
    let ports = a.ports();
    events.iter().any(|e| {
        upstream_port(e).is_some_and(|p| ports.contains(&p)) || e.field("backend") == Some("apache")
    })
}

/// What the visitor got for this cause, when Apache is in the path: the statuses of the
/// responses it explains when the access log shows them, else what Apache answers for it.
pub fn visitor_status(
    cause: CauseId,
    events: &[&Event],
    d: &Discovery,
    seen: &std::collections::BTreeMap<u16, u64>,
) -> Option<String> {
    let seen_text = || {
        seen.keys()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" / ")
    };
    if nginx_to_apache(events, d) {
        // nginx answers for Apache.
        let who = match cause {
            CauseId::UpstreamDown => "nginx; Apache httpd is down",
            CauseId::UpstreamSaturated => "nginx; Apache httpd has no free worker",
            _ => return None,
        };
        let statuses = match (seen.is_empty(), cause) {
            (false, _) => seen_text(),
            (true, CauseId::UpstreamDown) => "502".to_string(),
            (true, _) => "504 / 502".to_string(),
        };
        return Some(format!("{statuses} ({who})"));
    }
    if !from_apache(events) {
        return None;
    }
    if !seen.is_empty() {
        return Some(format!("{} (Apache httpd)", seen_text()));
    }
    let behind = behind_nginx(d).is_some() && d.nginx.as_ref().is_some_and(|n| n.master.is_some());
    Some(
        match (cause, behind) {
            (CauseId::UpstreamDown | CauseId::UpstreamSocketPermission, false) => {
                "503 (Apache httpd)"
            }
            (CauseId::UpstreamDown | CauseId::UpstreamSocketPermission, true) => {
                "503 (Apache httpd, passed on by nginx)"
            }
            (CauseId::UpstreamSaturated, _) => "503 (Apache httpd)",
            (CauseId::UpstreamTimeout, _) => "504 (Apache httpd)",
            (CauseId::UpstreamBadResponse, _) => {
                "500 (Apache httpd; 502 for a broken FastCGI record)"
            }
            (CauseId::UpstreamCrashed, _) => "500 / 502 / 503 (Apache httpd)",
            (CauseId::WebSaturated, _) => "none: requests wait in the listen queue, then time out",
            (CauseId::AppFatalError | CauseId::AppMemoryLimit, _) => "500",
            _ => return None,
        }
        .to_string(),
    )
}

fn limit_text(a: &Apache) -> String {
    match a.worker_limit() {
        Some(l) => format!("`MaxRequestWorkers {}` ({})", l.value, l.origin),
        None => "`MaxRequestWorkers`".to_string(),
    }
}

fn name_of(a: &Apache) -> String {
    a.config_path.as_ref().map_or_else(
        || "Apache httpd".to_string(),
        |p| format!("Apache httpd ({})", p.display()),
    )
}

/// A fix with Apache's own directives and lines, when Apache is where the cause lives.
pub fn fix(cause: CauseId, events: &[&Event], d: &Discovery) -> Option<String> {
    let a = d.apache.as_ref();
    let service = a.map_or("apache2", |a| {
        if a.flavor == "httpd" {
            "httpd"
        } else {
            "apache2"
        }
    });
    if nginx_to_apache(events, d) {
        let a = a?;
        return match cause {
            CauseId::UpstreamDown => Some(format!(
                "nginx proxies to {} on port(s) {}, which does not answer: start it (`apachectl configtest`, then `systemctl start {service}`) and find why it stopped (`journalctl -u {service}`, its error log).",
                name_of(a),
                a.ports().iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            )),
            CauseId::UpstreamSaturated => Some(format!(
                "Apache httpd behind nginx ran out of workers ({}, {} MPM): requests queued until nginx gave up. Raise it (with `ServerLimit`) as far as memory allows (the `apache.max-request-workers` check), and make the slow requests faster.",
                limit_text(a),
                a.mpm.as_deref().unwrap_or("unknown")
            )),
            _ => None,
        };
    }
    if !from_apache(events) {
        return None;
    }
    let a = a?;
    let timeout = a.backend_timeout();
    let at = |o: &crate::discover::Origin| match o {
        crate::discover::Origin::File { .. } => format!(" ({o})"),
        _ => " (the default)".to_string(),
    };
    let target = events
        .iter()
        .find_map(|e| e.field("socket").or(e.field("target")))
        .unwrap_or("the backend");
    let pool = d.php_fpm.iter().flat_map(|m| &m.pools).find(|p| {
        p.listen.as_ref().is_some_and(|l| match &l.value {
            Address::Unix(path) => path.to_string_lossy() == target,
            Address::Tcp(t) => t == target,
        })
    });
    Some(match cause {
        CauseId::UpstreamDown => match pool {
            Some(p) => format!(
                "Apache cannot reach PHP-FPM pool `{}` at {target}{}: start PHP-FPM (`systemctl start php{}-fpm`) and find why it stopped; visitors get 503 from Apache meanwhile.",
                p.name,
                p.listen.as_ref().map_or(String::new(), |l| at(&l.origin)),
                d.php_fpm.iter().find_map(|m| m.version.clone()).unwrap_or_default()
            ),
            None => format!(
                "Apache cannot reach {target}, named by its `SetHandler \"proxy:…\"`/`ProxyPass`{}: start the backend that should listen there, or point Apache at the address it listens on; visitors get 503 from Apache meanwhile.",
                a.proxy_targets.first().map_or(String::new(), |t| at(&t.origin))
            ),
        },
        CauseId::UpstreamTimeout => format!(
            "The backend answered slower than Apache's timeout: `ProxyTimeout`/`Timeout` = {} s{}. Make the slow requests faster (the PHP-FPM slowlog), or raise `ProxyTimeout` together with PHP-FPM's `request_terminate_timeout`.",
            timeout.value.as_secs(),
            at(&timeout.origin)
        ),
        CauseId::WebSaturated => format!(
            "Every Apache worker was busy ({}, {} MPM): new connections waited in the listen queue. Raise it (with `ServerLimit`) as far as memory allows (the `apache.max-request-workers` check says how far), and make the slow requests faster.",
            limit_text(a),
            a.mpm.as_deref().unwrap_or("unknown")
        ),
        CauseId::UpstreamBadResponse => "PHP-FPM's answer could not be parsed as headers by Apache (a header line over about 8 KiB, or output before the headers): find the script that sends huge headers or cookies (the `script` of `End of script output before headers`).".to_string(),
        CauseId::UpstreamCrashed => "The backend (or an Apache child) died mid-request: the PHP-FPM log and the kernel log at that moment say which signal and why (a segfault, an outside SIGKILL, the OOM killer).".to_string(),
        _ => return None,
    })
}
