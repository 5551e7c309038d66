//! Fixes with the host's own numbers: the file and line to change, the current value and the one
//! to set. A check that knows a precise fix (the probes compute `pm.max_children` from worker RSS
//! and free memory) wins; otherwise the fix is built from the discovered configs and the events.

use std::collections::BTreeMap;

use crate::cause::CauseId;
use crate::check::Check;
use crate::discover::{Address, Discovery, Origin, Pool};
use crate::event::Event;

pub fn fix_for(
    cause: CauseId,
    events: &[&Event],
    checks: &[&Check],
    discovery: &Discovery,
    rule_fixes: &BTreeMap<String, String>,
) -> String {
    let check_fix: Vec<&str> = checks.iter().filter_map(|c| c.fix.as_deref()).collect();
    let specific = specific_fix(cause, events, discovery);
    match (check_fix.first(), specific) {
        (Some(check), Some(specific)) if !specific.contains(check) => {
            format!("{specific} {}", sentence(check))
        }
        (Some(check), _) => sentence(check),
        (None, Some(specific)) => specific,
        (None, None) => rule_fix(events, rule_fixes).unwrap_or_else(|| generic(cause).to_string()),
    }
}

/// The `fix:` text of the rule behind most of `events`, its `${field}` placeholders filled from
/// the newest of that rule's events that has them all.
fn rule_fix(events: &[&Event], rule_fixes: &BTreeMap<String, String>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for event in events {
        *counts.entry(event.rule.as_str()).or_default() += 1;
    }
    let (rule, _) = counts.into_iter().max_by_key(|(_, n)| *n)?;
    let template = rule_fixes.get(rule)?;
    events
        .iter()
        .rev()
        .filter(|e| e.rule == rule)
        .find_map(|e| crate::rules::fill_fix(template, &e.fields))
}

/// A check's fix as a sentence: capital first letter, final period.
fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

fn at(origin: &Origin) -> String {
    match origin {
        Origin::File { .. } => format!(" ({origin})"),
        _ => String::new(),
    }
}

/// The most frequent value of an event field.
fn top_field<'a>(events: &[&'a Event], name: &str) -> Option<(&'a str, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for event in events {
        if let Some(v) = event.field(name) {
            *counts.entry(v).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n)
}

/// The unix socket path or host:port inside an nginx `upstream: "fastcgi://unix:/x.sock:"` field.
fn upstream_address(raw: &str) -> Option<Address> {
    let rest = raw.split("://").nth(1).unwrap_or(raw);
    if let Some(path) = rest.strip_prefix("unix:") {
        let path = path.trim_end_matches(':');
        let path = path.split(':').next().unwrap_or(path);
        return Some(Address::Unix(path.into()));
    }
    let hostport = rest.split('/').next().unwrap_or(rest);
    (!hostport.is_empty()).then(|| Address::Tcp(hostport.to_string()))
}

fn pools(discovery: &Discovery) -> impl Iterator<Item = &Pool> {
    discovery.php_fpm.iter().flat_map(|m| m.pools.iter())
}

fn pool_for<'a>(discovery: &'a Discovery, address: &Address) -> Option<&'a Pool> {
    pools(discovery).find(|p| p.listen.as_ref().is_some_and(|l| &l.value == address))
}

fn nginx_user(discovery: &Discovery) -> String {
    discovery
        .nginx
        .as_ref()
        .and_then(|n| n.user.as_ref())
        .map(|u| {
            u.value
                .split_whitespace()
                .next()
                .unwrap_or("www-data")
                .to_string()
        })
        .unwrap_or_else(|| "www-data".to_string())
}

fn specific_fix(cause: CauseId, events: &[&Event], discovery: &Discovery) -> Option<String> {
    let upstream = top_field(events, "upstream").and_then(|(u, _)| upstream_address(u));
    let pool = upstream.as_ref().and_then(|a| pool_for(discovery, a));
    match cause {
        CauseId::UpstreamDown => {
            let address = upstream?;
            Some(match pool {
                Some(pool) => format!(
                    "PHP-FPM pool `{}` should be listening on {address}{} but is not: start it (`systemctl restart php{}-fpm`) and find why it stopped (`journalctl -u php{}-fpm`, kernel OOM kills).",
                    pool.name,
                    pool.listen.as_ref().map_or(String::new(), |l| at(&l.origin)),
                    php_version(discovery),
                    php_version(discovery),
                ),
                None => {
                    let serving: Vec<String> = pools(discovery)
                        .filter_map(|p| p.listen.as_ref().map(|l| format!("{} (pool {})", l.value, p.name)))
                        .collect();
                    if serving.is_empty() {
                        format!("nginx passes requests to {address}, where nothing listens: start the app server (PHP-FPM) that should serve it.")
                    } else {
                        format!(
                            "nginx passes requests to {address}, which no running PHP-FPM pool serves; the pools listen on {}. Point `fastcgi_pass` at one of them or fix the pool's `listen`, then reload.",
                            serving.join(", ")
                        )
                    }
                }
            })
        }
        CauseId::UpstreamSocketPermission => {
            let user = nginx_user(discovery);
            let pool = pool?;
            Some(format!(
                "nginx workers run as `{user}` and cannot open the socket of pool `{}`: in {} set `listen.owner = {user}`, `listen.group = {user}`, `listen.mode = 0660` (now owner {}, group {}, mode {}), then `systemctl reload php{}-fpm`.",
                pool.name,
                origin_file(&pool.origin),
                pool.listen_owner.as_ref().map_or("unset".to_string(), |v| format!("{}{}", v.value, at(&v.origin))),
                pool.listen_group.as_ref().map_or("unset".to_string(), |v| format!("{}{}", v.value, at(&v.origin))),
                pool.listen_mode.as_ref().map_or("unset (0660)".to_string(), |v| format!("{}{}", v.value, at(&v.origin))),
                php_version(discovery),
            ))
        }
        CauseId::UpstreamSaturated => {
            let pool = pool.or_else(|| pools(discovery).next())?;
            let max = pool.max_children.as_ref()?;
            Some(format!(
                "Every worker of pool `{}` was busy and its listen queue overflowed: `pm.max_children = {}`{}, {}. Raise pm.max_children as far as memory allows and make the slow requests faster (slowlog).",
                pool.name,
                max.value,
                at(&max.origin),
                pool.listen_backlog.as_ref().map_or("`listen.backlog` 511 (default)".to_string(), |b| format!("`listen.backlog = {}`{}", b.value, at(&b.origin))),
            ))
        }
        CauseId::UpstreamTimeout => {
            let read = discovery.nginx.as_ref().and_then(|n| n.fastcgi_read_timeout.as_ref());
            let pool = pool.or_else(|| pools(discovery).next());
            let terminate = pool.and_then(|p| p.request_terminate_timeout.as_ref());
            let slow = top_field(events, "request")
                .or_else(|| top_field(events, "script"))
                .map(|(r, n)| format!(" The slowest: `{r}` ({n} times)."))
                .unwrap_or_default();
            let mut parts = Vec::new();
            if let Some(read) = read {
                parts.push(format!("nginx `fastcgi_read_timeout {}s`{}", read.value.as_secs(), at(&read.origin)));
            }
            if let Some(t) = terminate {
                parts.push(format!("PHP-FPM `request_terminate_timeout = {}s`{}", t.value.as_secs(), at(&t.origin)));
            }
            if parts.is_empty() {
                return None;
            }
            Some(format!(
                "Requests ran longer than the limits: {}.{slow} Make those requests faster (enable `request_slowlog_timeout` to see where they wait) or raise the limits together, with request_terminate_timeout at or above fastcgi_read_timeout.",
                parts.join(", ")
            ))
        }
        CauseId::UpstreamBadResponse => {
            let size = discovery.nginx.as_ref().and_then(|n| n.fastcgi_buffer_size.as_ref());
            let now = size.map_or("the default 4k/8k".to_string(), |s| format!("{}k{}", s.value / 1024, at(&s.origin)));
            Some(format!(
                "The app's response headers do not fit nginx's buffer (fastcgi_buffer_size now {now}): set `fastcgi_buffer_size 32k; fastcgi_buffers 16 16k;` in the server block that passes to PHP (or `proxy_buffer_size` for proxy_pass), `nginx -t`, reload; and find what sets so many headers or cookies."
            ))
        }
        CauseId::AppFatalError => {
            if let Some((plugin, n)) = top_field(events, "plugin") {
                return Some(format!(
                    "The WordPress plugin `{plugin}` threw {n} fatal errors: update or deactivate it (`wp plugin deactivate {plugin}`, or rename wp-content/plugins/{plugin}), then check the PHP error log."
                ));
            }
            if let Some((theme, n)) = top_field(events, "theme") {
                return Some(format!(
                    "The WordPress theme `{theme}` threw {n} fatal errors: update it or switch themes (`wp theme activate twentytwentyfour`)."
                ));
            }
            top_field(events, "file").map(|(file, n)| {
                format!("{n} fatal errors come from {file}: fix or roll back that code.")
            })
        }
        CauseId::AppMemoryLimit => {
            let limit = pools(discovery).find_map(|p| p.php_memory_limit.as_ref());
            let script = top_field(events, "file").or_else(|| top_field(events, "plugin"));
            Some(format!(
                "PHP ran out of its memory_limit{}{}: raise `memory_limit` (php_admin_value[memory_limit] in the pool, or php.ini) only if the code needs it, and fix what allocates that much.",
                limit.map_or(String::new(), |l| format!(" ({}{})", l.value, at(&l.origin))),
                script.map_or(String::new(), |(s, _)| format!(" in {s}")),
            ))
        }
        CauseId::DbTooManyConnections => {
            let db = discovery.database.as_ref()?;
            let max = db.max_connections.as_ref();
            Some(format!(
                "The database refused connections at max_connections = {}: find who holds them (`SHOW PROCESSLIST`), shorten slow queries, or raise `max_connections` in the [mysqld] section (memory allows about 1–5 MB a connection).",
                max.map_or("151 (default)".to_string(), |m| format!("{}{}", m.value, at(&m.origin)))
            ))
        }
        CauseId::DbCrashedTable => top_field(events, "table").map(|(table, _)| {
            format!("Repair the table {table}: `mariadb-check --auto-repair` on it (or `REPAIR TABLE`), after a backup; then find why the server stopped uncleanly (OOM kill, disk full).")
        }),
        CauseId::HostOomKill => {
            let victims = top_field(events, "process").or_else(|| top_field(events, "victim"));
            let pool = pools(discovery).find(|p| p.max_children.is_some());
            Some(format!(
                "The kernel killed {} for memory. Lower memory use: {}add swap or memory, and lower MySQL's buffers if it is large.",
                victims.map_or("processes".to_string(), |(v, n)| format!("`{v}` ({n} times)")),
                pool.and_then(|p| p.max_children.as_ref().map(|m| format!(
                    "pool `{}` may start {} workers (`pm.max_children`{}) — size it to the memory available (see the max-children check); ",
                    p.name, m.value, at(&m.origin)
                ))).unwrap_or_default(),
            ))
        }
        CauseId::UpstreamUnresolvable => top_field(events, "name").or_else(|| top_field(events, "host_name")).map(|(name, _)| {
            format!("nginx cannot resolve `{name}`: fix its DNS record, or give nginx a working `resolver` (for variable upstreams), or use an IP address.")
        }),
        CauseId::UpstreamNoLive => top_field(events, "upstream").map(|(group, _)| {
            format!("Every server of upstream `{group}` was marked failed: bring the servers back, and check their own logs; `max_fails`/`fail_timeout` decide how fast nginx retries.")
        }),
        _ => None,
    }
}

fn origin_file(origin: &Origin) -> String {
    match origin {
        Origin::File { path, .. } => path.display().to_string(),
        other => other.to_string(),
    }
}

fn php_version(discovery: &Discovery) -> String {
    discovery
        .php_fpm
        .iter()
        .find_map(|m| m.version.clone())
        .unwrap_or_else(|| "X.Y".to_string())
}

fn generic(cause: CauseId) -> &'static str {
    match cause {
        CauseId::WebDown => "Start the web server (`systemctl start nginx`) and find why it stopped (`journalctl -u nginx`, `nginx -t`).",
        CauseId::UpstreamDown => "Start the app server (PHP-FPM) and find why it stopped (`journalctl -u php*-fpm`, kernel OOM kills); check that nginx's fastcgi_pass names the socket the pool listens on.",
        CauseId::UpstreamSocketPermission => "Give the nginx user access to the PHP-FPM socket: `listen.owner`/`listen.group` = the nginx user and `listen.mode = 0660` in the pool, then reload PHP-FPM.",
        CauseId::UpstreamSaturated => "Raise the pool's `pm.max_children` as far as memory allows, make slow requests faster (slowlog), and keep `listen.backlog` at 511 or more.",
        CauseId::UpstreamTimeout => "Make the slow requests faster (PHP-FPM slowlog) or raise `fastcgi_read_timeout` and `request_terminate_timeout` together.",
        CauseId::UpstreamCrashed => "PHP-FPM workers die mid-request: look for core dumps (`coredumpctl list`), a crashing extension (disable opcache/JIT or the newest extension to test), and the kernel log.",
        CauseId::UpstreamBadResponse => "Raise `fastcgi_buffer_size`/`proxy_buffer_size` (e.g. 32k) so the app's headers fit, and check the app for huge headers or cookies.",
        CauseId::UpstreamUnresolvable => "Fix the DNS of the upstream name, or give nginx a `resolver`, or use an address.",
        CauseId::UpstreamNoLive => "Every server of the upstream group was marked failed: bring them back and check their logs.",
        CauseId::AppFatalError => "Fix or roll back the code that throws the fatal errors (the PHP error log names the file).",
        CauseId::AppMemoryLimit => "Raise PHP's `memory_limit` only if the code needs it, and fix what allocates so much.",
        CauseId::DbDown => "Start the database and find why it stopped (`journalctl -u mariadb`, its error log, OOM kills).",
        CauseId::DbTooManyConnections => "Find who holds the connections (`SHOW PROCESSLIST`), shorten slow queries, or raise `max_connections`.",
        CauseId::DbCrashedTable => "Repair the crashed table (`mariadb-check --auto-repair`), after a backup.",
        CauseId::HostOomKill => "Lower memory use (PHP-FPM `pm.max_children`, MySQL buffers) or add memory or swap.",
        CauseId::HostOverloaded => "The host is past its capacity: find the busiest processes (`top`, PSI), cache more at the CDN, or add CPU/memory.",
        CauseId::HostDiskFull => "Free space on the full file system (old logs, temp files, backups) and set up log rotation.",
        CauseId::HostFdExhausted => "Raise the open-files limit (`LimitNOFILE=` in the unit, nginx `worker_rlimit_nofile`) above worker_connections × 2.",
        CauseId::HostCgroupLimit => "The service hits its cgroup limit (memory.max, pids.max or cpu.max): raise it (`systemctl set-property UNIT MemoryMax=…`) or ask the hosting provider for a larger plan.",
        CauseId::NetListenOverflow => "Accept queues overflow: raise `net.core.somaxconn` and `net.ipv4.tcp_max_syn_backlog`, the listen `backlog=` of nginx and `listen.backlog` of PHP-FPM, and look for a SYN flood.",
        CauseId::NetConntrackFull => "Raise `net.netfilter.nf_conntrack_max` (and the hash size), or stop tracking web traffic (`notrack` in the raw table).",
        CauseId::NetWorkerConnections => "Raise nginx `worker_connections` (and `worker_rlimit_nofile` to at least twice that).",
        CauseId::FirewallCdnBlocked => "Allow the CDN's published ranges on the web ports before the rule that drops them (`origin-agent whitelist --provider NAME` shows the exact change).",
        CauseId::Fail2banCdnBanned => "Unban the CDN addresses and add the CDN's ranges to the jails' `ignoreip`; behind a CDN, configure nginx real IP so bans hit visitors, not edges.",
        CauseId::NginxRealIpMissing => "Add `set_real_ip_from` for each of the CDN's ranges and the CDN's `real_ip_header` to nginx, so logs, limits and bans see visitors.",
        CauseId::DnsMismatch => "Point the name at the CDN (proxied) or at this origin, as intended.",
        CauseId::TlsOriginCert => "Renew or fix the origin certificate so it is valid and matches the served name.",
    }
}
