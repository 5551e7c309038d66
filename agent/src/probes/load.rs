//! Load now: load average per core, CPU/memory/I/O pressure (PSI), memory available, swap in use
//! and swap activity (`/proc/vmstat` sampled twice), and recent kernel OOM kills (`journalctl -k`
//! or `/var/log/kern.log`). Overload shows as `host.overloaded`, OOM kills as `host.oom-kill`.

use std::path::Path;

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::config::Config;
use crate::discover::cpu_count;
use crate::host::{Command, Host, HostExt};

use super::{human_bytes, parse_proc, Samples};

/// Every load check.
pub fn checks(host: &dyn Host, config: &Config, samples: &Samples) -> Vec<Check> {
    let mut out = vec![load_average(host)];
    for kind in ["cpu", "memory", "io"] {
        out.push(pressure(host, kind));
    }
    out.push(memory(host));
    out.push(swap(host, samples));
    out.push(oom_kills(host, config));
    out
}

fn load_average(host: &dyn Host) -> Check {
    let title = "load average per core";
    let bytes = match host.read(Path::new("/proc/loadavg")) {
        Ok(b) => b,
        Err(e) => return Check::skip("load.cpu", Area::Load, title, e.to_string()),
    };
    let Some(load) = parse_proc::<procfs_core::LoadAverage>(&bytes) else {
        return Check::skip(
            "load.cpu",
            Area::Load,
            title,
            "/proc/loadavg could not be parsed",
        );
    };
    let cpus = cpu_count(host).unwrap_or(1).max(1);
    let per_core = f64::from(load.five) / f64::from(cpus);
    let detail = format!(
        "load {:.2} {:.2} {:.2} (1, 5, 15 min) on {cpus} CPU(s): {per_core:.2} per core over 5 min",
        load.one, load.five, load.fifteen
    );
    let check = if per_core >= 3.0 {
        Check::fail("load.cpu", Area::Load, "the host is overloaded")
            .cause(CauseId::HostOverloaded)
            .fix("find what uses the CPU (`top -o %CPU`): a traffic spike, a crawler, a runaway PHP script or cron job")
    } else if per_core >= 1.5 {
        Check::warn("load.cpu", Area::Load, "the host is heavily loaded")
            .cause(CauseId::HostOverloaded)
    } else {
        Check::ok("load.cpu", Area::Load, title)
    };
    check
        .detail(detail)
        .metric("load5_per_core", per_core, None)
        .metric("load1", f64::from(load.one), None)
}

/// PSI `avg10` of `some` and `full` from a `/proc/pressure/*` file.
pub fn parse_psi(text: &str) -> Option<(f64, Option<f64>)> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next()?;
        let avg10 = words
            .find_map(|w| w.strip_prefix("avg10="))
            .and_then(|v| v.parse::<f64>().ok());
        match kind {
            "some" => some = avg10,
            "full" => full = avg10,
            _ => {}
        }
    }
    Some((some?, full))
}

fn pressure(host: &dyn Host, kind: &str) -> Check {
    let id = format!("load.psi.{kind}");
    let title = format!("{kind} pressure (PSI)");
    let text = match host.read_text(&Path::new("/proc/pressure").join(kind)) {
        Ok(t) => t,
        Err(e) => {
            return Check::skip(
                id,
                Area::Load,
                title,
                format!("PSI not available ({e}; the kernel needs CONFIG_PSI and psi=1)"),
            )
        }
    };
    let Some((some, full)) = parse_psi(&text) else {
        return Check::skip(
            id,
            Area::Load,
            title,
            format!("/proc/pressure/{kind} could not be parsed"),
        );
    };
    let stalled = match kind {
        "cpu" => some,
        _ => full.unwrap_or(some),
    };
    let detail = format!(
        "some {some:.1}%{} of the last 10 s stalled on {kind}",
        full.map(|f| format!(", full {f:.1}%")).unwrap_or_default()
    );
    let (warn, fail) = match kind {
        "cpu" => (40.0, 80.0),
        "memory" => (5.0, 20.0),
        _ => (20.0, 50.0),
    };
    let check = if stalled >= fail {
        Check::fail(id, Area::Load, format!("heavy {kind} pressure")).cause(CauseId::HostOverloaded)
    } else if stalled >= warn {
        Check::warn(id, Area::Load, format!("{kind} pressure")).cause(CauseId::HostOverloaded)
    } else {
        Check::ok(id, Area::Load, title)
    };
    check.detail(detail).metric("some_avg10", some, Some("%"))
}

fn meminfo(host: &dyn Host) -> Result<procfs_core::Meminfo, String> {
    let bytes = host
        .read(Path::new("/proc/meminfo"))
        .map_err(|e| e.to_string())?;
    parse_proc::<procfs_core::Meminfo>(&bytes)
        .ok_or_else(|| "/proc/meminfo could not be parsed".into())
}

fn memory(host: &dyn Host) -> Check {
    let title = "memory available";
    let info = match meminfo(host) {
        Ok(i) => i,
        Err(e) => return Check::skip("memory.available", Area::Load, title, e),
    };
    let available = info
        .mem_available
        .unwrap_or(info.mem_free + info.cached + info.buffers);
    let total = info.mem_total.max(1);
    let pct = available as f64 * 100.0 / total as f64;
    let detail = format!(
        "{} of {} available ({pct:.1}%)",
        human_bytes(available),
        human_bytes(total)
    );
    let check = if pct < 5.0 {
        Check::fail("memory.available", Area::Load, "memory is nearly exhausted")
            .cause(CauseId::HostOverloaded)
            .fix("lower PHP-FPM `pm.max_children` or MySQL buffers to what fits, or add memory")
    } else if pct < 10.0 {
        Check::warn("memory.available", Area::Load, "memory is low").cause(CauseId::HostOverloaded)
    } else {
        Check::ok("memory.available", Area::Load, title)
    };
    check
        .detail(detail)
        .metric("mem_available", available as f64, Some("B"))
        .metric("mem_available_pct", pct, Some("%"))
}

fn swap(host: &dyn Host, samples: &Samples) -> Check {
    let title = "swap activity";
    let Some((a, b)) = &samples.vmstat else {
        return Check::skip(
            "swap.activity",
            Area::Load,
            title,
            samples
                .vmstat_error
                .clone()
                .unwrap_or_else(|| "/proc/vmstat not readable".into()),
        );
    };
    let delta = |k: &str| match (a.get(k), b.get(k)) {
        (Some(x), Some(y)) => Some(y.saturating_sub(*x)),
        _ => None,
    };
    let (Some(pin), Some(pout)) = (delta("pswpin"), delta("pswpout")) else {
        return Check::skip(
            "swap.activity",
            Area::Load,
            title,
            "/proc/vmstat has no pswpin/pswpout",
        );
    };
    let rate = (pin + pout) as f64 / samples.seconds.max(0.001);
    let used = meminfo(host)
        .ok()
        .map(|m| m.swap_total.saturating_sub(m.swap_free));
    let detail = format!(
        "{rate:.0} pages/s swapped (in {pin}, out {pout} over {:.1} s){}",
        samples.seconds,
        used.map(|u| format!("; {} of swap in use", human_bytes(u)))
            .unwrap_or_default()
    );
    let check = if rate >= 1000.0 {
        Check::fail("swap.activity", Area::Load, "the host is swapping hard")
            .cause(CauseId::HostOverloaded)
            .fix("memory is overcommitted: lower PHP-FPM `pm.max_children` (see its check) or MySQL buffers")
    } else if rate >= 100.0 {
        Check::warn("swap.activity", Area::Load, "the host is swapping")
            .cause(CauseId::HostOverloaded)
    } else {
        Check::ok("swap.activity", Area::Load, title)
    };
    check.detail(detail).metric("swap_pages_per_s", rate, None)
}

/// The kernel's ring buffer (`dmesg`, for hosts with neither journald nor a syslog kern.log),
/// the lines of the last `secs` seconds.
fn kernel_ring(host: &dyn Host, config: &Config, secs: u64) -> Option<String> {
    let cmd = Command::new("dmesg", &["--time-format", "iso"]).timeout(config.command_timeout);
    let out = host.run(&cmd).ok().filter(|o| o.success())?;
    let cutoff = host
        .now()
        .checked_sub(jiff::SignedDuration::from_secs(secs as i64))
        .ok();
    Some(
        out.stdout_text()
            .lines()
            .filter(|l| {
                // `2026-12-03T09:00:00,123456+00:00 msg`
                let stamp = l.split_whitespace().next().unwrap_or("").replace(',', ".");
                match (stamp.parse::<jiff::Timestamp>().ok(), cutoff) {
                    (Some(ts), Some(c)) => ts >= c,
                    _ => true,
                }
            })
            .map(|l| format!("{l}\n"))
            .collect(),
    )
}

/// The pids of the killed processes (the last 64), as the diagnosis reads them back
/// (`OOM_PIDS` then the pids): what ties a PHP-FPM child's SIGKILL to the kernel.
fn oom_victim_pids_text(text: &str) -> String {
    let pids: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Out of memory") || l.contains("Memory cgroup out of memory"))
        .filter_map(|l| {
            let rest = &l[l.find("Killed process ")? + 15..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect();
    if pids.is_empty() {
        return String::new();
    }
    let from = pids.len().saturating_sub(64);
    format!("{OOM_PIDS}{}", pids[from..].join(" "))
}

/// Where the `host.oom-kills` detail lists the killed pids.
pub const OOM_PIDS: &str = "; killed pids ";

/// OOM-kill lines in kernel log text: `Out of memory: Killed process 123 (php-fpm8.2)` and
/// `oom-kill:...`; returns the killed process names.
pub fn oom_victims(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let idx = l.find("Killed process ")?;
            if !(l.contains("Out of memory") || l.contains("Memory cgroup out of memory")) {
                return None;
            }
            let rest = &l[idx..];
            let name = rest.split_once('(')?.1.split_once(')')?.0;
            Some(name.to_string())
        })
        .collect()
}

/// The timestamp at the start of a syslog line: RFC 3339 (`2026-11-24T07:40:00.123+00:00`).
fn line_time(line: &str) -> Option<jiff::Timestamp> {
    line.split_whitespace().next()?.parse().ok()
}

fn oom_kills(host: &dyn Host, config: &Config) -> Check {
    let title = "kernel OOM kills";
    let since = config.audit_since;
    let secs = since.as_secs();
    let cmd = Command::new(
        "journalctl",
        &["-k", "--no-pager", "-q", "--since", &format!("-{secs}s")],
    )
    .timeout(config.command_timeout);
    let (text, source) = match host.run(&cmd) {
        Ok(out) if out.success() => (out.stdout_text(), "journalctl -k".to_string()),
        other => {
            let journal_err = match other {
                Ok(out) => format!(
                    "journalctl exited with {:?}: {}",
                    out.status,
                    out.stderr.trim()
                ),
                Err(e) => e.to_string(),
            };
            match host.read_text(Path::new("/var/log/kern.log")) {
                Ok(t) => {
                    let cutoff = host
                        .now()
                        .checked_sub(jiff::SignedDuration::from_secs(secs as i64))
                        .ok();
                    // Keep lines inside the window when they carry an RFC 3339 time.
                    let kept: String = t
                        .lines()
                        .filter(|l| match (line_time(l), cutoff) {
                            (Some(ts), Some(c)) => ts >= c,
                            _ => true,
                        })
                        .map(|l| format!("{l}\n"))
                        .collect();
                    (kept, "/var/log/kern.log".to_string())
                }
                Err(e) => match kernel_ring(host, config, secs) {
                    Some(kept) => (kept, "dmesg".to_string()),
                    None => {
                        return Check::skip(
                            "host.oom-kills",
                            Area::Load,
                            title,
                            format!("no kernel log: {journal_err}; /var/log/kern.log: {e}"),
                        )
                    }
                },
            }
        }
    };
    // A journal with no kernel lines at all (no journald running, a container): the ring buffer.
    let (text, source) = match text.trim().is_empty() {
        true => kernel_ring(host, config, secs).map_or((text, source), |t| (t, "dmesg".into())),
        false => (text, source),
    };
    let victims = oom_victims(&text);
    if victims.is_empty() {
        return Check::ok("host.oom-kills", Area::Load, title).detail(format!(
            "no OOM kill in the last {} min ({source})",
            secs / 60
        ));
    }
    let mut names = victims.clone();
    names.sort();
    names.dedup();
    Check::fail("host.oom-kills", Area::Load, "the kernel killed processes for memory")
        .detail(format!(
            "{} OOM kill(s) in the last {} min ({source}): {}{}",
            victims.len(),
            secs / 60,
            names.join(", "),
            oom_victim_pids_text(&text)
        ))
        .cause(CauseId::HostOomKill)
        .fix("lower PHP-FPM `pm.max_children` to what memory holds (see php-fpm.pool.*.max-children), lower MySQL buffers, or add memory")
        .metric("oom_kills", victims.len() as f64, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::check::Status;
    use crate::host::fixture::FixtureHost;
    use crate::host::HostError;

    const MEMINFO: &str = "MemTotal:        2000000 kB\nMemFree:          50000 kB\nMemAvailable:      60000 kB\nBuffers:           1000 kB\nCached:           10000 kB\nSwapCached:           0 kB\nActive:            1000 kB\nInactive:          1000 kB\nSwapTotal:       1000000 kB\nSwapFree:         400000 kB\nDirty:                0 kB\nWriteback:            0 kB\nMapped:               0 kB\nShmem:                0 kB\nSlab:                 0 kB\nCommitLimit:          0 kB\nCommitted_AS:         0 kB\nVmallocTotal:         0 kB\nVmallocUsed:          0 kB\nVmallocChunk:         0 kB\nAnonPages:            0 kB\nPageTables:           0 kB\nNFS_Unstable:         0 kB\nBounce:               0 kB\nWritebackTmp:         0 kB\nSReclaimable:         0 kB\nSUnreclaim:           0 kB\nKernelStack:          0 kB\nMlocked:              0 kB\nUnevictable:          0 kB\n";

    fn get(checks: &[Check], id: &str) -> Check {
        checks.iter().find(|c| c.id == id).cloned().unwrap()
    }

    #[test]
    fn overloaded_host_fails_with_numbers() {
        let host = FixtureHost::new()
            .file("/sys/devices/system/cpu/online", "0-1")
            .file("/proc/loadavg", "9.50 7.00 3.00 5/300 1234\n")
            .file("/proc/meminfo", MEMINFO)
            .file(
                "/proc/pressure/memory",
                "some avg10=30.00 avg60=10.00 avg300=2.00 total=100\nfull avg10=25.00 avg60=1.00 avg300=0.00 total=50\n",
            )
            .file_seq("/proc/vmstat", &["pswpin 100\npswpout 100\n", "pswpin 1300\npswpout 1100\n"])
            .command_ok(
                "journalctl -k --no-pager -q --since -3600s",
                "Nov 24 07:01:02 web1 kernel: Out of memory: Killed process 4242 (php-fpm8.2) total-vm:1000kB\n",
            );
        let samples = Samples::take(&host);
        let checks = checks(&host, &Config::default(), &samples);
        let c = get(&checks, "load.cpu");
        assert_eq!(
            (c.status, c.cause),
            (Status::Fail, Some(CauseId::HostOverloaded))
        );
        assert!(c.detail.contains("3.50 per core"), "{}", c.detail);
        let c = get(&checks, "memory.available");
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        assert!(c.detail.contains("3.0%"), "{}", c.detail);
        assert_eq!(get(&checks, "load.psi.memory").status, Status::Fail);
        assert_eq!(get(&checks, "load.psi.cpu").status, Status::Skip);
        let c = get(&checks, "swap.activity");
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        assert!(c.detail.contains("2200 pages/s"), "{}", c.detail);
        let c = get(&checks, "host.oom-kills");
        assert_eq!(
            (c.status, c.cause),
            (Status::Fail, Some(CauseId::HostOomKill))
        );
        assert!(c.detail.contains("php-fpm8.2"));
    }

    #[test]
    fn quiet_host_is_ok_and_kern_log_is_the_fallback() {
        let now: jiff::Timestamp = "2026-11-24T08:00:00Z".parse().unwrap();
        let host = FixtureHost::new()
            .at(now)
            .file("/proc/loadavg", "0.10 0.20 0.30 1/100 1\n")
            .file_seq("/proc/vmstat", &["pswpin 5\npswpout 5\n"])
            .command(
                "journalctl -k --no-pager -q --since -3600s",
                Err(HostError::Timeout { command: "journalctl".into(), seconds: 10 }),
            )
            .file(
                "/var/log/kern.log",
                "2026-11-24T05:00:00.000000+00:00 web1 kernel: Out of memory: Killed process 1 (mysqld)\n2026-11-24T07:30:00.000000+00:00 web1 kernel: Out of memory: Killed process 2 (php-fpm8.2)\n",
            );
        let samples = Samples::take(&host);
        let checks = checks(&host, &Config::default(), &samples);
        assert_eq!(get(&checks, "load.cpu").status, Status::Ok);
        assert_eq!(get(&checks, "swap.activity").status, Status::Ok);
        assert_eq!(get(&checks, "memory.available").status, Status::Skip);
        let c = get(&checks, "host.oom-kills");
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("1 OOM kill"), "{}", c.detail);
        assert!(!c.detail.contains("mysqld"));
    }

    #[test]
    fn psi_parser() {
        assert_eq!(
            parse_psi("some avg10=1.50 avg60=0 avg300=0 total=1\n"),
            Some((1.5, None))
        );
        assert_eq!(parse_psi("garbage"), None);
    }
}
