//! Resource limits now: PHP-FPM `pm.max_children` against memory (average worker RSS),
//! `request_terminate_timeout` against nginx's `fastcgi_read_timeout`, `listen.backlog` against
//! `net.core.somaxconn`; nginx `worker_connections` against the workers' open-file limit; open
//! fds against the limit per service; accept-queue overflows (sampled twice); conntrack use.

use std::path::Path;
use std::time::Duration;

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::discover::{Discovery, Nginx, Pool};
use crate::host::{Host, HostExt};

use super::{human_bytes, max_open_files, open_fds, parse_proc, rss_bytes, Samples};

/// nginx's default `fastcgi_read_timeout`.
const NGINX_DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// PHP-FPM's default `listen.backlog` on Linux.
const FPM_DEFAULT_BACKLOG: i64 = 511;

/// Every limits check.
pub fn checks(host: &dyn Host, d: &Discovery, samples: &Samples) -> Vec<Check> {
    let mut out = Vec::new();
    let somaxconn = read_u64(host, "/proc/sys/net/core/somaxconn");
    let mem_available = host
        .read(Path::new("/proc/meminfo"))
        .ok()
        .and_then(|b| parse_proc::<procfs_core::Meminfo>(&b))
        .and_then(|m| m.mem_available);
    for fpm in &d.php_fpm {
        for pool in &fpm.pools {
            let base = super::pool_id(d, fpm, pool);
            out.push(max_children(host, &base, pool, mem_available));
            out.push(terminate_timeout(&base, pool, d.nginx.as_ref()));
            out.push(backlog(&base, pool, somaxconn));
        }
    }
    if let Some(nginx) = &d.nginx {
        out.extend(nginx_limits(host, nginx));
    }
    out.extend(fd_checks(host, d));
    out.push(listen_overflows(samples, somaxconn));
    out.push(conntrack(host));
    out
}

fn read_u64(host: &dyn Host, path: &str) -> Option<u64> {
    host.read_text(Path::new(path)).ok()?.trim().parse().ok()
}

fn max_children(host: &dyn Host, base: &str, pool: &Pool, mem_available: Option<u64>) -> Check {
    let id = format!("{base}.max-children");
    let title = format!("pool {} pm.max_children fits in memory", pool.name);
    let Some(max) = &pool.max_children else {
        return Check::skip(id, Area::Limits, title, "pm.max_children is not set");
    };
    let rss: Vec<u64> = pool
        .workers
        .iter()
        .filter_map(|p| rss_bytes(host, *p))
        .collect();
    if rss.is_empty() {
        return Check::skip(
            id,
            Area::Limits,
            title,
            format!("no running worker of pool {} to measure", pool.name),
        );
    }
    let Some(available) = mem_available else {
        return Check::skip(
            id,
            Area::Limits,
            title,
            "MemAvailable not readable from /proc/meminfo",
        );
    };
    let is_static = pool.pm.as_ref().is_none_or(|p| p.value == "static");
    let current: u64 = rss.iter().sum();
    let avg = (current / rss.len() as u64).max(1);
    let budget = available + current;
    let fits = (budget as f64 * 0.9 / avg as f64).floor() as u64;
    let need = u64::from(max.value) * avg;
    let detail = format!(
        "pm.max_children = {} ({}); workers average {} RSS ({} running), so {} children need {}; memory available to them: {} (MemAvailable {} + their current {})",
        max.value,
        max.origin,
        human_bytes(avg),
        rss.len(),
        max.value,
        human_bytes(need),
        human_bytes(budget),
        human_bytes(available),
        human_bytes(current)
    );
    let check = if need > budget {
        Check::fail(
            id,
            Area::Limits,
            format!("pool {} may use more memory than the host has", pool.name),
        )
        .cause(CauseId::HostOomKill)
        .fix(format!(
            "set `pm.max_children = {}` at {} (then reload PHP-FPM), or add memory",
            fits.max(1),
            max.origin
        ))
    } else if !is_static && rss.len() as u64 >= u64::from(max.value) && fits > u64::from(max.value)
    {
        // Every child is spawned (busy or idle: the status page would tell); memory allows more.
        Check::warn(
            id,
            Area::Limits,
            format!("pool {} runs all its children", pool.name),
        )
        .cause(CauseId::UpstreamSaturated)
        .fix(format!(
            "memory allows up to {fits}: raise `pm.max_children` at {} if requests queue",
            max.origin
        ))
    } else {
        Check::ok(id, Area::Limits, title)
    };
    check
        .detail(detail)
        .metric("max_children", f64::from(max.value), None)
        .metric("max_children_fit", fits as f64, None)
        .metric("worker_rss_avg", avg as f64, Some("B"))
}

fn terminate_timeout(base: &str, pool: &Pool, nginx: Option<&Nginx>) -> Check {
    let id = format!("{base}.terminate-timeout");
    let title = format!(
        "pool {} request_terminate_timeout vs nginx fastcgi_read_timeout",
        pool.name
    );
    let Some(nginx) = nginx else {
        return Check::skip(id, Area::Limits, title, "nginx not found");
    };
    let (read, read_at) = match &nginx.fastcgi_read_timeout {
        Some(t) => (t.value, t.origin.to_string()),
        None => (NGINX_DEFAULT_READ_TIMEOUT, "nginx default".to_string()),
    };
    let terminate = pool.request_terminate_timeout.as_ref();
    let secs = |d: Duration| d.as_secs();
    match terminate {
        Some(t) if !t.value.is_zero() && t.value <= read => Check::ok(id, Area::Limits, title)
            .detail(format!(
            "PHP-FPM stops a request after {} s ({}), before nginx gives up at {} s ({read_at})",
            secs(t.value),
            t.origin,
            secs(read)
        )),
        other => {
            let now = match other {
                Some(t) if t.value.is_zero() => {
                    format!("request_terminate_timeout = 0 (off) at {}", t.origin)
                }
                Some(t) => format!(
                    "request_terminate_timeout = {} s at {}",
                    secs(t.value),
                    t.origin
                ),
                None => "request_terminate_timeout is not set (off)".to_string(),
            };
            let file = match &pool.origin {
                crate::discover::Origin::File { path, .. } => path.display().to_string(),
                o => o.to_string(),
            };
            Check::warn(id, Area::Limits, format!("pool {}'s scripts outlive nginx's timeout", pool.name))
                .detail(format!(
                    "{now}, but nginx answers 504 after fastcgi_read_timeout = {} s ({read_at}): the worker stays busy after the visitor got the error, and the pool fills up",
                    secs(read)
                ))
                .cause(CauseId::UpstreamTimeout)
                .fix(format!(
                    "in {file}, pool [{}]: set `request_terminate_timeout = {}s` (no more than fastcgi_read_timeout)",
                    pool.name,
                    secs(read)
                ))
        }
    }
}

fn backlog(base: &str, pool: &Pool, somaxconn: Option<u64>) -> Check {
    let id = format!("{base}.backlog");
    let title = format!("pool {} listen.backlog vs net.core.somaxconn", pool.name);
    let Some(somaxconn) = somaxconn else {
        return Check::skip(
            id,
            Area::Limits,
            title,
            "/proc/sys/net/core/somaxconn not readable",
        );
    };
    let (backlog, at) = match &pool.listen_backlog {
        Some(b) => (b.value, b.origin.to_string()),
        None => (FPM_DEFAULT_BACKLOG, "PHP-FPM default".to_string()),
    };
    let wanted = if backlog < 0 {
        somaxconn
    } else {
        backlog as u64
    };
    let detail = format!(
        "listen.backlog = {backlog} ({at}); net.core.somaxconn = {somaxconn}; effective queue {}",
        wanted.min(somaxconn)
    );
    if wanted > somaxconn {
        Check::warn(id, Area::Limits, format!("pool {}'s backlog is capped by somaxconn", pool.name))
            .detail(detail)
            .cause(CauseId::NetListenOverflow)
            .fix(format!(
                "`sysctl -w net.core.somaxconn={wanted}` and persist it in /etc/sysctl.d/90-origin-agent.conf"
            ))
    } else {
        Check::ok(id, Area::Limits, title).detail(detail)
    }
    .metric("effective_backlog", wanted.min(somaxconn) as f64, None)
}

fn nginx_limits(host: &dyn Host, nginx: &Nginx) -> Vec<Check> {
    let mut out = Vec::new();
    let wc = nginx
        .worker_connections
        .as_ref()
        .map(|w| w.value)
        .unwrap_or(512);
    let wc_at = nginx
        .worker_connections
        .as_ref()
        .map(|w| w.origin.to_string())
        .unwrap_or_else(|| "nginx default".into());
    let wp = nginx
        .worker_processes
        .as_ref()
        .map(|w| w.value)
        .unwrap_or(1);
    let real = nginx.workers.iter().find_map(|p| max_open_files(host, *p));
    let configured = nginx.worker_rlimit_nofile.as_ref();
    let (nofile, nofile_from) = match (configured, real) {
        (_, Some(r)) => (Some(r), "the workers' Max open files".to_string()),
        (Some(c), None) => (
            Some(c.value),
            format!("worker_rlimit_nofile at {}", c.origin),
        ),
        (None, None) => (None, String::new()),
    };
    let title = "nginx worker_connections fit the open-file limit";
    match nofile {
        None => out.push(Check::skip(
            "nginx.worker-connections",
            Area::Limits,
            title,
            "no running nginx worker to read /proc/PID/limits from and no worker_rlimit_nofile",
        )),
        Some(nofile) => {
            let detail = format!(
                "worker_connections = {wc} ({wc_at}) × {wp} worker(s) = {} connections; open-file limit per worker {} ({nofile_from})",
                u64::from(wc) * u64::from(wp),
                if nofile == u64::MAX { "unlimited".to_string() } else { nofile.to_string() }
            );
            let fix = format!(
                "set `worker_rlimit_nofile {};` in the main context of {} (at least 2 × worker_connections: a proxied request holds two descriptors)",
                u64::from(wc) * 2,
                nginx
                    .config_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "nginx.conf".into())
            );
            let check = if u64::from(wc) > nofile {
                Check::fail(
                    "nginx.worker-connections",
                    Area::Limits,
                    "nginx workers cannot open worker_connections descriptors",
                )
                .cause(CauseId::NetWorkerConnections)
                .fix(fix)
            } else if u64::from(wc) * 2 > nofile {
                Check::warn(
                    "nginx.worker-connections",
                    Area::Limits,
                    "proxied connections may exhaust nginx's descriptors",
                )
                .cause(CauseId::HostFdExhausted)
                .fix(fix)
            } else {
                Check::ok("nginx.worker-connections", Area::Limits, title)
            };
            out.push(check.detail(detail).metric(
                "connections_capacity",
                f64::from(wc) * f64::from(wp),
                None,
            ));
        }
    }
    let title = "nginx workers' open-file limit";
    match (real, configured) {
        (None, _) => out.push(Check::skip(
            "nginx.open-files",
            Area::Limits,
            title,
            "no running nginx worker whose /proc/PID/limits is readable",
        )),
        (Some(r), Some(c)) if r < c.value => out.push(
            Check::warn("nginx.open-files", Area::Limits, "worker_rlimit_nofile is not in effect")
                .detail(format!(
                    "worker_rlimit_nofile {} at {}, but the workers run with Max open files {r}",
                    c.value, c.origin
                ))
                .cause(CauseId::HostFdExhausted)
                .fix("restart nginx (a reload keeps the old limit when the master cannot raise it); check LimitNOFILE in its systemd unit"),
        ),
        (Some(r), _) => out.push(
            Check::ok("nginx.open-files", Area::Limits, title)
                .detail(format!("workers run with Max open files {r}"))
                .metric("max_open_files", r as f64, None),
        ),
    }
    out
}

fn fd_checks(host: &dyn Host, d: &Discovery) -> Vec<Check> {
    let mut services: Vec<(String, Vec<u32>)> = Vec::new();
    if let Some(n) = &d.nginx {
        if let Some(m) = &n.master {
            let mut pids = vec![m.pid];
            pids.extend(&n.workers);
            services.push(("nginx".into(), pids));
        }
    }
    for fpm in &d.php_fpm {
        if let Some(m) = &fpm.master {
            let mut pids = vec![m.pid];
            pids.extend(fpm.pools.iter().flat_map(|p| p.workers.iter().copied()));
            let name = if services.iter().any(|(n, _)| n == "php-fpm") {
                format!("php-fpm-{}", m.pid)
            } else {
                "php-fpm".into()
            };
            services.push((name, pids));
        }
    }
    if let Some(db) = &d.database {
        if let Some(p) = &db.process {
            services.push((db.flavor.clone(), vec![p.pid]));
        }
    }
    let mut out = Vec::new();
    for (name, pids) in services {
        let id = format!("fd.{name}");
        let title = format!("{name} open files vs limit");
        let mut worst: Option<(u32, usize, u64)> = None;
        let mut errors = Vec::new();
        for pid in pids.iter().take(512) {
            let (Ok(open), Some(limit)) = (open_fds(host, *pid), max_open_files(host, *pid)) else {
                errors.push(pid.to_string());
                continue;
            };
            let ratio = open as f64 / limit.max(1) as f64;
            if worst.is_none_or(|(_, o, l)| ratio > o as f64 / l.max(1) as f64) {
                worst = Some((*pid, open, limit));
            }
        }
        let Some((pid, open, limit)) = worst else {
            out.push(Check::skip(
                id,
                Area::Limits,
                title,
                format!(
                    "/proc/PID/fd or limits not readable for pid(s) {} (needs root)",
                    errors.join(", ")
                ),
            ));
            continue;
        };
        let pct = open as f64 * 100.0 / limit.max(1) as f64;
        let detail = format!("pid {pid} has {open} of {limit} descriptors open ({pct:.0}%)");
        let check = if pct >= 90.0 {
            Check::fail(id, Area::Limits, format!("{name} is running out of file descriptors"))
                .cause(CauseId::HostFdExhausted)
                .fix(format!("raise the limit: `LimitNOFILE=` in the {name} systemd unit (`systemctl edit {name}`), for nginx also `worker_rlimit_nofile`"))
        } else if pct >= 75.0 {
            Check::warn(
                id,
                Area::Limits,
                format!("{name} uses most of its file descriptors"),
            )
            .cause(CauseId::HostFdExhausted)
        } else {
            Check::ok(id, Area::Limits, title)
        };
        out.push(check.detail(detail).metric("fd_used_pct", pct, Some("%")));
    }
    out
}

fn listen_overflows(samples: &Samples, somaxconn: Option<u64>) -> Check {
    let title = "accept-queue overflows";
    let Some((a, b)) = &samples.netstat else {
        return Check::skip(
            "net.listen-overflows",
            Area::Network,
            title,
            samples
                .netstat_error
                .clone()
                .unwrap_or_else(|| "/proc/net/netstat not readable".into()),
        );
    };
    let get = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied();
    let (Some(o1), Some(o2)) = (
        get(a, "TcpExt.ListenOverflows"),
        get(b, "TcpExt.ListenOverflows"),
    ) else {
        return Check::skip(
            "net.listen-overflows",
            Area::Network,
            title,
            "no TcpExt ListenOverflows counter",
        );
    };
    let drops = get(b, "TcpExt.ListenDrops").unwrap_or(0);
    let d_drops = drops.saturating_sub(get(a, "TcpExt.ListenDrops").unwrap_or(drops));
    let delta = o2.saturating_sub(o1).max(d_drops);
    let rate = delta as f64 / samples.seconds.max(0.001);
    let detail = format!(
        "{delta} overflow(s)/drop(s) in {:.1} s; since boot: ListenOverflows {o2}, ListenDrops {drops}{}",
        samples.seconds,
        somaxconn.map(|s| format!("; net.core.somaxconn = {s}")).unwrap_or_default()
    );
    if delta > 0 {
        Check::fail("net.listen-overflows", Area::Network, "accept queues are overflowing now")
            .detail(detail)
            .cause(CauseId::NetListenOverflow)
            .fix(format!(
                "raise `net.core.somaxconn` (now {}) and nginx `listen ... backlog=`; if it is a SYN flood, enable `net.ipv4.tcp_syncookies=1`",
                somaxconn.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
            ))
            .metric("listen_overflows_per_s", rate, None)
    } else {
        Check::ok("net.listen-overflows", Area::Network, title)
            .detail(detail)
            .metric("listen_overflows_per_s", 0.0, None)
    }
}

fn conntrack(host: &dyn Host) -> Check {
    let title = "connection tracking table";
    let count = read_u64(host, "/proc/sys/net/netfilter/nf_conntrack_count");
    let max = read_u64(host, "/proc/sys/net/netfilter/nf_conntrack_max");
    let (Some(count), Some(max)) = (count, max) else {
        return Check::skip(
            "net.conntrack",
            Area::Network,
            title,
            "nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_count)",
        );
    };
    let pct = count as f64 * 100.0 / max.max(1) as f64;
    let detail = format!("{count} of {max} entries ({pct:.0}%)");
    let check = if pct >= 90.0 {
        Check::fail(
            "net.conntrack",
            Area::Network,
            "the conntrack table is nearly full",
        )
        .cause(CauseId::NetConntrackFull)
        .fix(format!(
            "`sysctl -w net.netfilter.nf_conntrack_max={}` and persist it in /etc/sysctl.d/",
            max * 2
        ))
    } else if pct >= 75.0 {
        Check::warn(
            "net.conntrack",
            Area::Network,
            "the conntrack table is filling up",
        )
        .cause(CauseId::NetConntrackFull)
    } else {
        Check::ok("net.conntrack", Area::Network, title)
    };
    check
        .detail(detail)
        .metric("conntrack_used_pct", pct, Some("%"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::check::Status;
    use crate::config::Config;
    use crate::discover::{discover, testdata};

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units\nMax cpu time              unlimited            unlimited            seconds\nMax file size             unlimited            unlimited            bytes\nMax data size             unlimited            unlimited            bytes\nMax stack size            8388608              unlimited            bytes\nMax core file size        0                    unlimited            bytes\nMax resident set          unlimited            unlimited            bytes\nMax processes             7823                 7823                 processes\nMax open files            1024                 524288               files\nMax locked memory         8388608              8388608              bytes\nMax address space         unlimited            unlimited            bytes\nMax file locks            unlimited            unlimited            locks\nMax pending signals       7823                 7823                 signals\nMax msgqueue size         819200               819200               bytes\nMax nice priority         0                    0\nMax realtime priority     0                    0\nMax realtime timeout      unlimited            unlimited            us\n";

    fn meminfo(available_kb: u64) -> String {
        format!("MemTotal:        2000000 kB\nMemFree:          50000 kB\nMemAvailable:      {available_kb} kB\nBuffers:           1000 kB\nCached:           10000 kB\nSwapCached:           0 kB\nActive:            1000 kB\nInactive:          1000 kB\nSwapTotal:       0 kB\nSwapFree:         0 kB\nDirty:                0 kB\nWriteback:            0 kB\nMapped:               0 kB\nShmem:                0 kB\nSlab:                 0 kB\nCommitLimit:          0 kB\nCommitted_AS:         0 kB\nVmallocTotal:         0 kB\nVmallocUsed:          0 kB\nVmallocChunk:         0 kB\nAnonPages:            0 kB\nPageTables:           0 kB\nNFS_Unstable:         0 kB\nBounce:               0 kB\nWritebackTmp:         0 kB\nSReclaimable:         0 kB\nSUnreclaim:           0 kB\nKernelStack:          0 kB\nMlocked:              0 kB\nUnevictable:          0 kB\n")
    }

    fn run(host: &crate::host::fixture::FixtureHost) -> Vec<Check> {
        let d = discover(host, &Config::default());
        let samples = Samples::take(host);
        checks(host, &d, &samples)
    }

    fn get(checks: &[Check], id: &str) -> Check {
        checks
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id}"))
    }

    #[test]
    fn max_children_against_memory_names_the_number_and_the_line() {
        // Workers average 50 MiB (60000 + 40000 kB / 2); 5 children need 250 MB; only
        // 100 MB + 100 MB (current) are available: fail, and 200 MB * 0.9 / 50 MB = 3.
        let host = testdata::stack().file("/proc/meminfo", meminfo(100_000));
        let checks = run(&host);
        let c = get(&checks, "php-fpm.pool.www.max-children");
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        let fix = c.fix.unwrap();
        assert!(fix.contains("pm.max_children = 3"), "{fix}");
        assert!(fix.contains("/etc/php/8.2/fpm/pool.d/www.conf:9"), "{fix}");
        let host = testdata::stack().file("/proc/meminfo", meminfo(1_900_000));
        let c = get(&run(&host), "php-fpm.pool.www.max-children");
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
        // A dynamic pool with every child spawned and room for more: a warning with the number.
        let host = testdata::stack()
            .file("/proc/meminfo", meminfo(1_900_000))
            .file(
                "/etc/php/8.2/fpm/pool.d/www.conf",
                testdata::WWW_CONF.replace("pm.max_children = 5", "pm.max_children = 2"),
            );
        let c = get(&run(&host), "php-fpm.pool.www.max-children");
        assert_eq!(c.status, Status::Warn, "{}", c.detail);
        assert!(c.fix.unwrap().contains("memory allows up to 36"));
    }

    #[test]
    fn timeouts_backlog_and_counters() {
        let host = testdata::stack()
            .file("/proc/sys/net/core/somaxconn", "128\n")
            .file_seq(
                "/proc/net/netstat",
                &[
                    "TcpExt: ListenOverflows ListenDrops\nTcpExt: 10 10\n",
                    "TcpExt: ListenOverflows ListenDrops\nTcpExt: 25 25\n",
                ],
            )
            .file("/proc/sys/net/netfilter/nf_conntrack_count", "95000\n")
            .file("/proc/sys/net/netfilter/nf_conntrack_max", "100000\n");
        let checks = run(&host);
        // request_terminate_timeout 30s < fastcgi_read_timeout 60s.
        assert_eq!(
            get(&checks, "php-fpm.pool.www.terminate-timeout").status,
            Status::Ok
        );
        let c = get(&checks, "php-fpm.pool.www.backlog");
        assert_eq!(
            (c.status, c.cause),
            (Status::Warn, Some(CauseId::NetListenOverflow))
        );
        assert!(c.fix.unwrap().contains("somaxconn=511"));
        let c = get(&checks, "net.listen-overflows");
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        assert!(c.detail.starts_with("15 overflow"), "{}", c.detail);
        let c = get(&checks, "net.conntrack");
        assert_eq!(
            (c.status, c.cause),
            (Status::Fail, Some(CauseId::NetConntrackFull))
        );
    }

    #[test]
    fn terminate_timeout_off_is_a_warning_with_the_fix() {
        let host = testdata::stack().file(
            "/etc/php/8.2/fpm/pool.d/www.conf",
            testdata::WWW_CONF.replace(
                "request_terminate_timeout = 30s",
                "request_terminate_timeout = 0",
            ),
        );
        let c = get(&run(&host), "php-fpm.pool.www.terminate-timeout");
        assert_eq!(
            (c.status, c.cause),
            (Status::Warn, Some(CauseId::UpstreamTimeout))
        );
        assert!(c.fix.unwrap().contains("request_terminate_timeout = 60s"));
    }

    #[test]
    fn nginx_connections_and_fds_against_limits() {
        let mut host = testdata::stack()
            .file("/proc/101/limits", LIMITS)
            .file("/proc/102/limits", LIMITS)
            .file(
                "/proc/100/limits",
                LIMITS.replace("1024                 524288", "100000               524288"),
            );
        // Worker 101 has 950 of 1024 fds open.
        for fd in 0..950 {
            host = host.link(format!("/proc/101/fd/{fd}"), "/dev/null");
        }
        host = host
            .link("/proc/102/fd/0", "/dev/null")
            .link("/proc/100/fd/0", "/dev/null");
        let checks = run(&host);
        // worker_connections 1024 × 2 fds > 1024.
        let c = get(&checks, "nginx.worker-connections");
        assert_eq!(c.status, Status::Warn, "{}", c.detail);
        assert!(c.fix.unwrap().contains("worker_rlimit_nofile 2048;"));
        let c = get(&checks, "fd.nginx");
        assert_eq!(
            (c.status, c.cause),
            (Status::Fail, Some(CauseId::HostFdExhausted))
        );
        assert!(c.detail.contains("pid 101 has 950 of 1024"), "{}", c.detail);
        assert_eq!(get(&checks, "nginx.open-files").status, Status::Ok);
        assert_eq!(get(&checks, "fd.php-fpm").status, Status::Skip);
    }
}
