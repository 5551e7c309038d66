//! Probes: the state of the host *now*, as checks with stable ids: service health, load, limits,
//! disk. Each probe reads through the host seam and never panics: what it cannot read becomes a
//! `skip` check with the reason.
//!
//! - [`apache`]: which web server fronts the host, Apache httpd running, listening, its workers;
//! - [`services`]: nginx, PHP-FPM pools and their sockets, upstream targets, the database;
//! - [`load`]: load average, PSI, memory, swap activity, OOM kills;
//! - [`limits`]: PHP-FPM children vs memory, timeouts, backlogs, nginx connections, open files,
//!   accept-queue overflows, conntrack;
//! - [`queues`]: connections waiting on the pools' and nginx's listening sockets now (`ss`);
//! - [`cgroup`]: the services' cgroup limits (v2, v1 and hybrid);
//! - [`disk`]: space and inodes where logs, temp files, sessions and the datadir live;
//! - [`dns`]: the served names against the CDN ranges and this origin;
//! - [`tls`]: the certificates nginx serves;
//! - [`netstat`]: parsers for the kernel's network tables.
//!
//! [`run_all`] also runs the direct asks of the stack (`crate::stack::checks`).

pub mod apache;
pub mod cgroup;
pub mod disk;
pub mod dns;
pub mod limits;
pub mod load;
pub mod netstat;
pub mod queues;
pub mod services;
pub mod tls;

// The account look-ups live in discovery (trust uses them too); the probes keep their names.
pub(crate) use crate::discover::accounts::{group_id, id_name, user_ids};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check::Check;
use crate::config::Config;
use crate::discover::{Discovery, PhpFpm, Pool};
use crate::host::{Host, HostError, HostExt};

/// How long counters (swap, listen overflows) are sampled for.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Counters read twice, `SAMPLE_INTERVAL` apart (one pause for every probe that needs a rate).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub vmstat: Option<(BTreeMap<String, u64>, BTreeMap<String, u64>)>,
    pub netstat: Option<(BTreeMap<String, u64>, BTreeMap<String, u64>)>,
    pub vmstat_error: Option<String>,
    pub netstat_error: Option<String>,
    pub seconds: f64,
}

impl Samples {
    pub fn take(host: &dyn Host) -> Samples {
        let read_vm = || {
            host.read_text(Path::new("/proc/vmstat"))
                .map(|t| netstat::parse_flat(&t))
        };
        let read_net = || {
            host.read_text(Path::new("/proc/net/netstat"))
                .map(|t| netstat::parse_netstat(&t))
        };
        let (vm1, net1) = (read_vm(), read_net());
        let started = std::time::Instant::now();
        host.pause(SAMPLE_INTERVAL);
        let seconds = if host.is_live() {
            started.elapsed().as_secs_f64().max(0.001)
        } else {
            SAMPLE_INTERVAL.as_secs_f64()
        };
        let (vm2, net2) = (read_vm(), read_net());
        let pair = |a: Result<_, HostError>, b: Result<_, HostError>| match (a, b) {
            (Ok(a), Ok(b)) => (Some((a, b)), None),
            (Err(e), _) | (_, Err(e)) => (None, Some(e.to_string())),
        };
        let (vmstat, vmstat_error) = pair(vm1, vm2);
        let (netstat, netstat_error) = pair(net1, net2);
        Samples {
            vmstat,
            netstat,
            vmstat_error,
            netstat_error,
            seconds,
        }
    }
}

/// Runs every probe.
pub fn run_all(host: &dyn Host, discovery: &Discovery, config: &Config) -> Vec<Check> {
    let samples = Samples::take(host);
    let mut checks = Vec::new();
    checks.extend(services::checks(host, discovery, config));
    checks.extend(apache::checks(
        host,
        discovery,
        crate::discover::probe_timeout(config),
    ));
    checks.extend(load::checks(host, config, &samples));
    checks.extend(limits::checks(host, discovery, &samples));
    checks.extend(queues::checks(host, discovery, config));
    checks.extend(cgroup::checks(host, discovery));
    checks.extend(disk::checks(host, discovery));
    checks.extend(tls::checks(host, discovery));
    checks.extend(dns::checks(host, discovery, config));
    checks.extend(crate::stack::checks(host, discovery, config));
    checks
}

/// Parses bytes with a `procfs-core` parser; a parser error (or a panic inside it) is `None`.
pub(crate) fn parse_proc<T: procfs_core::FromRead>(bytes: &[u8]) -> Option<T> {
    std::panic::catch_unwind(|| T::from_read(bytes).ok())
        .ok()
        .flatten()
}

/// `/proc/PID/limits`, lines too short for procfs-core's parser dropped first.
pub(crate) fn read_limits(host: &dyn Host, pid: u32) -> Option<procfs_core::process::Limits> {
    let text = host
        .read_text(&PathBuf::from(format!("/proc/{pid}/limits")))
        .ok()?;
    let kept: String = text
        .lines()
        .filter(|l| l.starts_with("Limit") || l.split_whitespace().count() >= 4)
        .map(|l| format!("{l}\n"))
        .collect();
    parse_proc(kept.as_bytes())
}

/// The soft `Max open files` of a process.
pub(crate) fn max_open_files(host: &dyn Host, pid: u32) -> Option<u64> {
    match read_limits(host, pid)?.max_open_files.soft_limit {
        procfs_core::process::LimitValue::Value(v) => Some(v),
        procfs_core::process::LimitValue::Unlimited => Some(u64::MAX),
    }
}

/// Resident set size of a process in bytes (`VmRSS`).
pub(crate) fn rss_bytes(host: &dyn Host, pid: u32) -> Option<u64> {
    let bytes = host
        .read(&PathBuf::from(format!("/proc/{pid}/status")))
        .ok()?;
    if let Some(status) = parse_proc::<procfs_core::process::Status>(&bytes) {
        return status.vmrss.map(|kb| kb * 1024);
    }
    // Fall back to the one line (procfs-core wants every field).
    String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The number of open fds of a process (`/proc/PID/fd` entries).
pub(crate) fn open_fds(host: &dyn Host, pid: u32) -> Result<usize, HostError> {
    host.read_dir(&PathBuf::from(format!("/proc/{pid}/fd")))
        .map(|names| names.len())
}

/// The id prefix of a pool's checks: `php-fpm.pool.NAME`, or `php-fpm.pool.NAME@VERSION` when
/// another PHP-FPM master (another PHP version) has a pool of the same name.
pub fn pool_id(d: &Discovery, fpm: &PhpFpm, pool: &Pool) -> String {
    let clash = d
        .php_fpm
        .iter()
        .filter(|other| other.config_path != fpm.config_path)
        .any(|other| other.pools.iter().any(|p| p.name == pool.name));
    if clash {
        let tag = fpm
            .version
            .clone()
            .unwrap_or_else(|| fpm.config_path.display().to_string());
        format!("php-fpm.pool.{}@{tag}", pool.name)
    } else {
        format!("php-fpm.pool.{}", pool.name)
    }
}

/// Bytes in a human unit.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::check::Status;
    use crate::discover::{discover, testdata};
    use crate::host::fixture::FixtureHost;

    #[test]
    fn an_empty_host_gives_skips_not_panics() {
        let host = FixtureHost::new();
        let d = discover(&host, &Config::default());
        let checks = run_all(&host, &d, &Config::default());
        assert!(!checks.is_empty());
        for c in &checks {
            assert!(
                matches!(c.status, Status::Skip),
                "{} is {:?}: {}",
                c.id,
                c.status,
                c.detail
            );
            assert!(!c.detail.is_empty(), "{} has no reason", c.id);
        }
        assert!(checks.iter().any(|c| c.id == "nginx.running"));
    }

    #[test]
    fn garbage_proc_files_do_not_panic() {
        let garbage = "\u{0}\u{1}x: y: z\n\n1 2\nLimit\nMax open files\n";
        let mut host = testdata::stack();
        for path in [
            "/proc/loadavg",
            "/proc/meminfo",
            "/proc/vmstat",
            "/proc/net/netstat",
            "/proc/pressure/memory",
            "/proc/101/limits",
            "/proc/201/status",
            "/proc/100/cgroup",
            "/proc/net/tcp",
            "/proc/sys/net/netfilter/nf_conntrack_count",
        ] {
            host = host.file(path, garbage);
        }
        let d = discover(&host, &Config::default());
        let checks = run_all(&host, &d, &Config::default());
        assert!(checks.len() > 10);
    }

    #[test]
    fn pools_of_two_php_versions_get_distinct_ids() {
        let host = testdata::stack()
            .file(
                "/etc/php/7.4/fpm/php-fpm.conf",
                "include=/etc/php/7.4/fpm/pool.d/*.conf\n",
            )
            .file(
                "/etc/php/7.4/fpm/pool.d/www.conf",
                "[www]\nlisten = /run/php/php7.4-fpm.sock\n",
            );
        let config = Config {
            php_fpm_configs: Some(vec![
                "/etc/php/8.2/fpm/php-fpm.conf".into(),
                "/etc/php/7.4/fpm/php-fpm.conf".into(),
            ]),
            ..Config::default()
        };
        let d = discover(&host, &config);
        let checks = run_all(&host, &d, &config);
        assert!(checks
            .iter()
            .any(|c| c.id == "php-fpm.pool.www@8.2.running"));
        assert!(checks.iter().any(|c| c.id == "php-fpm.pool.www@7.4.socket"));
        let mut ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "check ids are unique");
    }

    #[test]
    fn ids_and_names() {
        let host = testdata::stack();
        assert_eq!(user_ids(&host, "www-data"), Some((33, 33, vec![])));
        assert_eq!(id_name(&host, "/etc/passwd", 33), "www-data");
        assert_eq!(id_name(&host, "/etc/passwd", 77), "77");
        assert_eq!(group_id(&host, "www-data"), Some(33));
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn probe_parsers_never_panic(text in "[ -~\n\t{};'\"\\\\#$\u{0}-\u{7f}é]{0,400}") {
            let _ = super::netstat::parse_tcp_listen(&text);
            let _ = super::netstat::parse_netstat(&text);
            let _ = super::load::parse_psi(&text);
            let _ = super::cgroup::locate(&text);
        }
    }
}
