//! The services' cgroup v2 limits (the hosting plan's limits): `/proc/PID/cgroup` gives the path,
//! `/sys/fs/cgroup/<path>/` its `memory.max`/`memory.events`, `pids.max`/`pids.events`,
//! `cpu.max`/`cpu.stat`. A limit that was hit shows as `host.cgroup-limit`.

use std::path::{Path, PathBuf};

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::discover::Discovery;
use crate::host::{Host, HostExt};

use super::human_bytes;
use super::netstat::parse_flat;

/// The cgroup v2 path of a process (`0::/system.slice/nginx.service`), or why there is none.
pub fn cgroup_path(text: &str) -> Result<String, String> {
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("0::") {
            return Ok(path.trim().to_string());
        }
    }
    if text.lines().any(|l| l.contains(':')) {
        Err("the host uses the cgroup v1 hierarchy (only v2 limits are checked)".into())
    } else {
        Err("no cgroup line".into())
    }
}

/// Every cgroup check for the stack's services.
pub fn checks(host: &dyn Host, d: &Discovery) -> Vec<Check> {
    let mut pids: Vec<(String, u32)> = Vec::new();
    if let Some(m) = d.nginx.as_ref().and_then(|n| n.master.as_ref()) {
        pids.push(("nginx".into(), m.pid));
    }
    for fpm in &d.php_fpm {
        if let Some(m) = &fpm.master {
            pids.push(("php-fpm".into(), m.pid));
        }
    }
    if let Some(p) = d.database.as_ref().and_then(|db| db.process.as_ref()) {
        pids.push(("database".into(), p.pid));
    }
    if pids.is_empty() {
        return vec![Check::skip(
            "cgroup.services",
            Area::Limits,
            "cgroup limits",
            "no running web-stack service to check",
        )];
    }
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for (service, pid) in pids {
        let text = match host.read_text(&PathBuf::from(format!("/proc/{pid}/cgroup"))) {
            Ok(t) => t,
            Err(e) => {
                out.push(Check::skip(
                    format!("cgroup.{service}"),
                    Area::Limits,
                    format!("{service} cgroup limits"),
                    e.to_string(),
                ));
                continue;
            }
        };
        let path = match cgroup_path(&text) {
            Ok(p) => p,
            Err(reason) => {
                out.push(Check::skip(
                    format!("cgroup.{service}"),
                    Area::Limits,
                    format!("{service} cgroup limits"),
                    reason,
                ));
                continue;
            }
        };
        if seen.contains(&path) {
            continue;
        }
        seen.push(path.clone());
        let unit = path
            .rsplit('/')
            .find(|c| !c.is_empty())
            .unwrap_or("root")
            .to_string();
        if unit == "root" {
            out.push(Check::skip(
                format!("cgroup.{service}"),
                Area::Limits,
                format!("{service} cgroup limits"),
                "the process is in the root cgroup: no limits apply",
            ));
            continue;
        }
        let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        out.push(memory(host, &unit, &dir));
        out.push(pids_check(host, &unit, &dir));
        out.push(cpu(host, &unit, &dir));
    }
    out
}

fn read(host: &dyn Host, dir: &Path, name: &str) -> Option<String> {
    host.read_text(&dir.join(name))
        .ok()
        .map(|t| t.trim().to_string())
}

fn memory(host: &dyn Host, unit: &str, dir: &Path) -> Check {
    let id = format!("cgroup.{unit}.memory");
    let title = format!("{unit} memory limit");
    let Some(max) = read(host, dir, "memory.max") else {
        return Check::skip(
            id,
            Area::Limits,
            title,
            format!(
                "{} not readable (memory controller off?)",
                dir.join("memory.max").display()
            ),
        );
    };
    let events = read(host, dir, "memory.events")
        .map(|t| parse_flat(&t))
        .unwrap_or_default();
    let current = read(host, dir, "memory.current").and_then(|v| v.parse::<u64>().ok());
    let hits = events.get("max").copied().unwrap_or(0);
    let ooms = events.get("oom_kill").copied().unwrap_or(0);
    let limit = max.parse::<u64>().ok();
    let detail = format!(
        "memory.max {}, in use {}; memory.events: max {hits}, oom_kill {ooms}",
        limit.map(human_bytes).unwrap_or_else(|| max.clone()),
        current.map(human_bytes).unwrap_or_else(|| "?".into())
    );
    let fix = format!("raise the memory limit of {unit} (`systemctl set-property {unit} MemoryMax=...`, or the hosting plan), or lower what runs in it");
    if ooms > 0 {
        Check::fail(
            id,
            Area::Limits,
            format!("{unit} hit its memory limit and processes were OOM-killed"),
        )
        .detail(detail)
        .cause(CauseId::HostCgroupLimit)
        .fix(fix)
    } else if let (Some(l), Some(c)) = (limit, current) {
        if c as f64 >= l as f64 * 0.9 || hits > 0 {
            Check::warn(id, Area::Limits, format!("{unit} is at its memory limit"))
                .detail(detail)
                .cause(CauseId::HostCgroupLimit)
                .fix(fix)
        } else {
            Check::ok(id, Area::Limits, title).detail(detail)
        }
    } else if hits > 0 {
        Check::warn(id, Area::Limits, format!("{unit} reached its memory limit"))
            .detail(detail)
            .cause(CauseId::HostCgroupLimit)
            .fix(fix)
    } else {
        Check::ok(id, Area::Limits, title).detail(detail)
    }
}

fn pids_check(host: &dyn Host, unit: &str, dir: &Path) -> Check {
    let id = format!("cgroup.{unit}.pids");
    let title = format!("{unit} process limit");
    let Some(max) = read(host, dir, "pids.max") else {
        return Check::skip(
            id,
            Area::Limits,
            title,
            "pids.max not readable (pids controller off?)",
        );
    };
    let current = read(host, dir, "pids.current").and_then(|v| v.parse::<u64>().ok());
    let hits = read(host, dir, "pids.events")
        .map(|t| parse_flat(&t))
        .and_then(|e| e.get("max").copied())
        .unwrap_or(0);
    let detail = format!(
        "pids.max {max}, current {}; pids.events max {hits}",
        current.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
    );
    if hits > 0 {
        Check::fail(id, Area::Limits, format!("{unit} hit its process limit (fork failed)"))
            .detail(detail)
            .cause(CauseId::HostCgroupLimit)
            .fix(format!("raise TasksMax of {unit} (`systemctl set-property {unit} TasksMax=...`) or lower pm.max_children"))
    } else {
        Check::ok(id, Area::Limits, title).detail(detail)
    }
}

fn cpu(host: &dyn Host, unit: &str, dir: &Path) -> Check {
    let id = format!("cgroup.{unit}.cpu");
    let title = format!("{unit} CPU limit");
    let max = read(host, dir, "cpu.max").unwrap_or_else(|| "max".into());
    let Some(stat) = read(host, dir, "cpu.stat").map(|t| parse_flat(&t)) else {
        return Check::skip(id, Area::Limits, title, "cpu.stat not readable");
    };
    let periods = stat.get("nr_periods").copied().unwrap_or(0);
    let throttled = stat.get("nr_throttled").copied().unwrap_or(0);
    let pct = if periods > 0 {
        throttled as f64 * 100.0 / periods as f64
    } else {
        0.0
    };
    let detail =
        format!("cpu.max {max}; throttled in {throttled} of {periods} periods ({pct:.0}%)");
    if max.starts_with("max") || periods == 0 {
        return Check::ok(id, Area::Limits, title).detail(detail);
    }
    let check = if pct >= 25.0 {
        Check::fail(id, Area::Limits, format!("{unit} is throttled by its CPU quota"))
            .cause(CauseId::HostCgroupLimit)
            .fix(format!("raise CPUQuota of {unit} (`systemctl set-property {unit} CPUQuota=...`) or the hosting plan"))
    } else if pct >= 5.0 {
        Check::warn(id, Area::Limits, format!("{unit} is sometimes throttled"))
            .cause(CauseId::HostCgroupLimit)
    } else {
        Check::ok(id, Area::Limits, title)
    };
    check.detail(detail).metric("throttled_pct", pct, Some("%"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::check::Status;
    use crate::config::Config;
    use crate::discover::{discover, testdata};

    #[test]
    fn limits_that_were_hit_fail() {
        let cg = "/sys/fs/cgroup/system.slice/php8.2-fpm.service";
        let host = testdata::stack()
            .file("/proc/200/cgroup", "0::/system.slice/php8.2-fpm.service\n")
            .file("/proc/100/cgroup", "12:memory:/x\n0::/\n")
            .file(
                "/proc/300/cgroup",
                "4:memory:/system.slice/mariadb.service\n",
            )
            .file(format!("{cg}/memory.max"), "536870912\n")
            .file(format!("{cg}/memory.current"), "300000000\n")
            .file(
                format!("{cg}/memory.events"),
                "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\n",
            )
            .file(format!("{cg}/pids.max"), "50\n")
            .file(format!("{cg}/pids.events"), "max 3\n")
            .file(format!("{cg}/cpu.max"), "50000 100000\n")
            .file(
                format!("{cg}/cpu.stat"),
                "usage_usec 1\nnr_periods 100\nnr_throttled 40\nthrottled_usec 5\n",
            );
        let d = discover(&host, &Config::default());
        let checks = checks(&host, &d);
        let get = |id: &str| checks.iter().find(|c| c.id == id).unwrap();
        for id in [
            "cgroup.php8.2-fpm.service.memory",
            "cgroup.php8.2-fpm.service.pids",
            "cgroup.php8.2-fpm.service.cpu",
        ] {
            let c = get(id);
            assert_eq!(
                (c.status, c.cause),
                (Status::Fail, Some(CauseId::HostCgroupLimit)),
                "{id}: {}",
                c.detail
            );
        }
        assert!(get("cgroup.php8.2-fpm.service.memory")
            .detail
            .contains("oom_kill 2"));
        assert_eq!(get("cgroup.nginx").status, Status::Skip);
        assert!(get("cgroup.database").detail.contains("v1"));
    }

    #[test]
    fn unlimited_is_ok() {
        let cg = "/sys/fs/cgroup/system.slice/nginx.service";
        let host = testdata::stack()
            .file("/proc/100/cgroup", "0::/system.slice/nginx.service\n")
            .file(format!("{cg}/memory.max"), "max\n")
            .file(format!("{cg}/memory.events"), "max 0\noom_kill 0\n")
            .file(format!("{cg}/pids.max"), "max\n")
            .file(format!("{cg}/cpu.stat"), "nr_periods 0\n");
        let d = discover(&host, &Config::default());
        let checks = checks(&host, &d);
        for c in checks
            .iter()
            .filter(|c| c.id.starts_with("cgroup.nginx.service"))
        {
            assert_eq!(c.status, Status::Ok, "{}: {}", c.id, c.detail);
        }
    }
}
