//! Apache httpd now: which web server fronts the host (from what holds the listening sockets,
//! and whether nginx proxies to an Apache port), Apache running and listening, its
//! `MaxRequestWorkers` against memory (as `pm.max_children` is), and the mod_status scoreboard
//! when the config exposes it (asked through the host seam's HTTP exchange: a deadline, a size
//! cap, recorded in snapshots; no program is executed).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::discover::{Address, Apache, Discovery};
use crate::host::{Endpoint, Exchange, Host, Reply};

use super::services::{listen_table, socket_inodes};
use super::{human_bytes, parse_proc, rss_bytes};

/// Who serves the web ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Front {
    /// Ports the running nginx master holds.
    pub nginx_ports: BTreeSet<u16>,
    /// Ports the running httpd master holds.
    pub apache_ports: BTreeSet<u16>,
    /// nginx proxies to a port Apache is configured to listen on (the cPanel/Plesk layout).
    pub stacked: bool,
    pub nginx_running: bool,
    pub apache_running: bool,
}

impl Front {
    /// Apache answers the visitors itself (running, and not behind nginx).
    pub fn apache_serves(&self) -> bool {
        self.apache_running && !(self.stacked && self.nginx_running)
    }

    /// One line for the checklist.
    pub fn describe(&self) -> String {
        let ports = |p: &BTreeSet<u16>| p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        match (self.nginx_running, self.apache_running, self.stacked) {
            (true, true, true) => format!(
                "nginx (ports {}) in front of Apache httpd (ports {})",
                ports(&self.nginx_ports),
                ports(&self.apache_ports)
            ),
            (true, true, false) => format!(
                "nginx (ports {}) and Apache httpd (ports {}) side by side",
                ports(&self.nginx_ports),
                ports(&self.apache_ports)
            ),
            (true, false, true) => format!(
                "nginx (ports {}) proxies to Apache httpd, which is not running",
                ports(&self.nginx_ports)
            ),
            (true, false, false) => format!("nginx alone (ports {})", ports(&self.nginx_ports)),
            (false, true, _) => format!("Apache httpd alone (ports {})", ports(&self.apache_ports)),
            (false, false, _) => "no web server runs".to_string(),
        }
    }
}

/// Ports a master process holds listening sockets on.
fn held_ports(host: &dyn Host, pid: u32) -> BTreeSet<u16> {
    let (Some(table), Some(inodes)) = (listen_table(host), socket_inodes(host, pid)) else {
        return BTreeSet::new();
    };
    table
        .iter()
        .filter(|s| inodes.contains(&s.inode))
        .map(|s| s.port)
        .collect()
}

/// The port of a `host:port` address.
fn port_of(address: &Address) -> Option<u16> {
    match address {
        Address::Tcp(a) => a.rsplit_once(':')?.1.parse().ok(),
        Address::Unix(_) => None,
    }
}

/// Whether nginx proxies to one of `apache`'s ports (loopback or wildcard listens).
pub fn nginx_proxies_to_apache(d: &Discovery, apache: &Apache) -> bool {
    let Some(nginx) = &d.nginx else { return false };
    let ports = apache.ports();
    let group_servers = nginx.upstream_groups.iter().flat_map(|g| &g.servers);
    nginx
        .upstream_targets
        .iter()
        .filter_map(|t| t.address.as_ref())
        .chain(group_servers)
        .filter_map(port_of)
        .any(|p| ports.contains(&p))
}

/// Who fronts the host, from the running masters and their sockets.
pub fn front(host: &dyn Host, d: &Discovery) -> Front {
    let mut f = Front::default();
    if let Some(m) = d.nginx.as_ref().and_then(|n| n.master.as_ref()) {
        f.nginx_running = true;
        f.nginx_ports = held_ports(host, m.pid);
    }
    if let Some(a) = &d.apache {
        f.stacked = nginx_proxies_to_apache(d, a);
        if let Some(m) = &a.master {
            f.apache_running = true;
            f.apache_ports = held_ports(host, m.pid);
        }
    }
    // Both run, nginx's config names no Apache port, but only Apache holds 80/443: Apache
    // fronts; the reverse (nginx on 80/443 and Apache elsewhere) needs nginx's proxy_pass.
    f
}

/// Every Apache check (none when Apache was not found).
pub fn checks(host: &dyn Host, d: &Discovery, timeout: Duration) -> Vec<Check> {
    let Some(a) = &d.apache else {
        return Vec::new();
    };
    let f = front(host, d);
    let mut out = vec![Check::ok(
        "web.front",
        Area::Services,
        "which web server fronts the host",
    )
    .detail(f.describe())];
    let conf = a
        .config_path
        .as_ref()
        .map_or("(unknown)".into(), |p| p.display().to_string());
    let service = if a.flavor == "httpd" {
        "httpd"
    } else {
        "apache2"
    };
    if let Some(err) = &a.config_error {
        out.push(Check::skip(
            "apache.config",
            Area::Services,
            "Apache httpd config",
            format!("{conf} could not be read, so checks that need it are skipped: {err}"),
        ));
    }
    let Some(master) = &a.master else {
        // Not running: what it means depends on who else serves.
        let check = if f.stacked && f.nginx_running {
            Check::fail(
                "apache.running",
                Area::Services,
                "Apache httpd (behind nginx) is not running",
            )
            .detail(format!(
                "nginx proxies to Apache httpd (ports {}), but no httpd master process runs; its config is {conf}",
                a.ports().iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            ))
            .cause(CauseId::UpstreamDown)
        } else if f.nginx_running {
            return vec![Check::skip(
                "apache.running",
                Area::Services,
                "Apache httpd",
                format!("installed ({conf}) but not running; nginx serves this host"),
            )];
        } else {
            Check::fail(
                "apache.running",
                Area::Services,
                "Apache httpd is not running",
            )
            .detail(format!("no httpd master process; its config is {conf}"))
            .cause(CauseId::WebDown)
        };
        out.push(check.fix(format!(
            "check the config with `apachectl configtest`, then start it: `systemctl start {service}`; the reason it stopped is in `journalctl -u {service}` and its error log"
        )));
        return out;
    };
    let behind = f.stacked && f.nginx_running;
    let down_cause = if behind {
        CauseId::UpstreamDown
    } else {
        CauseId::WebDown
    };
    if a.workers.is_empty() {
        out.push(
            Check::warn(
                "apache.running",
                Area::Services,
                "Apache httpd has no children",
            )
            .detail(format!(
                "master pid {} runs with config {conf}, but no child process serves requests",
                master.pid
            ))
            .cause(down_cause),
        );
    } else {
        out.push(
            Check::ok("apache.running", Area::Services, "Apache httpd is running")
                .detail(format!(
                    "master pid {} with {} child(ren), {} MPM, config {conf}{}",
                    master.pid,
                    a.workers.len(),
                    a.mpm.as_deref().unwrap_or("unknown"),
                    if behind { ", behind nginx" } else { "" }
                ))
                .metric("children", a.workers.len() as f64, None),
        );
    }
    let declared = a.ports();
    let missing: Vec<String> = declared
        .difference(&f.apache_ports)
        .map(u16::to_string)
        .collect();
    let shown = f
        .apache_ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    out.push(if listen_table(host).is_none() {
        Check::skip(
            "apache.listening",
            Area::Services,
            "Apache httpd is listening",
            "/proc/net/tcp is not readable",
        )
    } else if f.apache_ports.is_empty() {
        Check::fail(
            "apache.listening",
            Area::Services,
            "Apache httpd listens on no port",
        )
        .detail(format!(
            "the config declares port(s) {} but the master holds no listening socket",
            declared
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .cause(down_cause)
        .fix("look for `AH00072: make_sock: could not bind to address` in its error log")
    } else if !missing.is_empty() {
        Check::warn(
            "apache.listening",
            Area::Services,
            "Apache httpd does not listen on every configured port",
        )
        .detail(format!(
            "listening on port(s) {shown}; not on {}",
            missing.join(", ")
        ))
    } else {
        Check::ok(
            "apache.listening",
            Area::Services,
            "Apache httpd is listening",
        )
        .detail(format!("listening on port(s) {shown}"))
    });
    out.push(workers_vs_memory(host, a));
    if let Some(c) = scoreboard(host, a, behind, timeout) {
        out.push(c);
    }
    out
}

/// `MaxRequestWorkers` against memory: children needed at the limit × their average RSS.
fn workers_vs_memory(host: &dyn Host, a: &Apache) -> Check {
    let id = "apache.max-request-workers";
    let title = "Apache MaxRequestWorkers fits in memory";
    let Some(limit) = a.worker_limit() else {
        return Check::skip(
            id,
            Area::Limits,
            title,
            "the MPM and its limits are unknown",
        );
    };
    let rss: Vec<u64> = a
        .workers
        .iter()
        .filter_map(|p| rss_bytes(host, *p))
        .collect();
    if rss.is_empty() {
        return Check::skip(id, Area::Limits, title, "no running child to measure");
    }
    let Some(available) = host
        .read(Path::new("/proc/meminfo"))
        .ok()
        .and_then(|b| parse_proc::<procfs_core::Meminfo>(&b))
        .and_then(|m| m.mem_available)
    else {
        return Check::skip(id, Area::Limits, title, "MemAvailable not readable");
    };
    let per_child = if a.mpm.as_deref() == Some("prefork") {
        1
    } else {
        a.threads_per_child.as_ref().map_or(25, |t| t.value.max(1))
    };
    let current: u64 = rss.iter().sum();
    let avg = (current / rss.len() as u64).max(1);
    let children_at_limit = u64::from(limit.value).div_ceil(u64::from(per_child));
    let need = children_at_limit * avg;
    let budget = available + current;
    let fit_children = (budget as f64 * 0.9 / avg as f64).floor() as u64;
    let fits = fit_children.saturating_mul(u64::from(per_child));
    let detail = format!(
        "MaxRequestWorkers = {} ({}), {} MPM with {} per child: {} children at the limit, averaging {} RSS, need {}; memory available to them: {}",
        limit.value,
        limit.origin,
        a.mpm.as_deref().unwrap_or("unknown"),
        per_child,
        children_at_limit,
        human_bytes(avg),
        human_bytes(need),
        human_bytes(budget)
    );
    let check = if need > budget {
        Check::fail(
            id,
            Area::Limits,
            "Apache may use more memory than the host has",
        )
        .cause(CauseId::HostOomKill)
        .fix(format!(
            "set `MaxRequestWorkers {}` at {} (then `apachectl graceful`), or add memory",
            fits.max(1),
            limit.origin
        ))
    } else {
        Check::ok(id, Area::Limits, title).fix(format!(
            "memory allows up to {fits}: raise `MaxRequestWorkers` at {} (and `ServerLimit`) if requests queue",
            limit.origin
        ))
    };
    check
        .detail(detail)
        .metric("max_request_workers", f64::from(limit.value), None)
        .metric("max_request_workers_fit", fits as f64, None)
        .metric("child_rss_avg", avg as f64, Some("B"))
}

/// The `?auto` scoreboard's `BusyWorkers` and `IdleWorkers`.
pub fn parse_status(text: &str) -> Option<(u32, u32)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("BusyWorkers:")?, field("IdleWorkers:")?))
}

/// mod_status through the host seam (recorded in snapshots), when the config exposes it.
fn scoreboard(host: &dyn Host, a: &Apache, behind: bool, timeout: Duration) -> Option<Check> {
    let path = a.status_path.as_ref()?;
    let id = "apache.scoreboard";
    let title = "Apache has idle workers (mod_status)";
    let l = a.listens.iter().find(|l| !l.ssl)?;
    let h = match l.host.as_deref() {
        None | Some("*") | Some("0.0.0.0") => "127.0.0.1",
        Some("[::]") => "[::1]",
        Some(h) => h,
    };
    let url = format!("http://{h}:{}{}?auto", l.port, path.value);
    let request = Exchange::Http {
        endpoint: Endpoint::Tcp(format!("{h}:{}", l.port)),
        host: "localhost".to_string(),
        tls: false,
        method: "GET".to_string(),
        path: format!("{}?auto", path.value),
        timeout_ms: timeout.as_millis().clamp(1_000, 5_000) as u64,
    };
    let text = match host.exchange(&request) {
        Ok(Reply::Http { status, body, .. }) if (200..300).contains(&status) => body,
        _ => {
            return Some(Check::skip(
                id,
                Area::Limits,
                title,
                format!("{url} did not answer"),
            ))
        }
    };
    let Some((busy, idle)) = parse_status(&text) else {
        return Some(Check::skip(
            id,
            Area::Limits,
            title,
            format!("{url}: no scoreboard"),
        ));
    };
    let detail = format!(
        "{busy} busy, {idle} idle workers ({url}, {path_origin})",
        path_origin = path.origin
    );
    let check = if idle == 0 && busy > 0 {
        Check::fail(id, Area::Limits, "every Apache worker is busy")
            .cause(if behind {
                CauseId::UpstreamSaturated
            } else {
                CauseId::WebSaturated
            })
            .detail(detail)
    } else {
        Check::ok(id, Area::Limits, title).detail(detail)
    };
    Some(check.metric("busy_workers", f64::from(busy), None).metric(
        "idle_workers",
        f64::from(idle),
        None,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scoreboard_text() {
        let text = "Total Accesses: 5\nBusyWorkers: 2\nGracefulWorkers: 0\nIdleWorkers: 0\n";
        assert_eq!(parse_status(text), Some((2, 0)));
        assert_eq!(parse_status("nothing"), None);
    }
}
