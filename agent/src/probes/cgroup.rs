//! The services' cgroup limits (the hosting plan's limits): `/proc/PID/cgroup` gives the path;
//! cgroup v2 has `memory.max`/`memory.events`, `pids.max`/`pids.events`, `cpu.max`/`cpu.stat`
//! under `/sys/fs/cgroup/<path>/`; cgroup v1 (and hybrid hosts) has per-controller trees
//! (`memory/<path>/memory.limit_in_bytes`, `memory.failcnt`, `memory.oom_control`,
//! `pids/<path>/pids.*`, `cpu/<path>/cpu.cfs_quota_us`, `cpu.stat`). A limit that was hit shows
//! as `host.cgroup-limit`.

use std::path::{Path, PathBuf};

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::discover::Discovery;
use crate::host::{Host, HostExt};

use super::human_bytes;
use super::netstat::parse_flat;

/// Where one process's cgroup files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The last component of the path (`php8.2-fpm.service`).
    pub unit: String,
    pub v1: bool,
    pub memory: PathBuf,
    pub pids: PathBuf,
    pub cpu: PathBuf,
}

/// Reads `/proc/PID/cgroup`: v1 controllers (`4:memory:/x`) win over the unified line
/// (`0::/x`) on hybrid hosts, since the limits live there. A process in the root cgroup has no
/// limits (an error with the reason).
pub fn locate(text: &str) -> Result<Cgroup, String> {
    let mut unified = None;
    let mut v1: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            unified = Some(path.trim().to_string());
        } else {
            for c in controllers.split(',') {
                v1.push((c.to_string(), path.trim().to_string()));
            }
        }
    }
    let find = |name: &str| v1.iter().find(|(c, _)| c == name).map(|(_, p)| p.clone());
    let root = Path::new("/sys/fs/cgroup");
    let unit_of = |path: &str| path.rsplit('/').find(|c| !c.is_empty()).map(str::to_string);
    let memory = find("memory");
    if let Some(main) = memory
        .clone()
        .or_else(|| find("pids"))
        .or_else(|| find("cpu"))
    {
        let unit = unit_of(&main)
            .ok_or_else(|| "the process is in the root cgroup: no limits apply".to_string())?;
        let dir = |controller: &str| {
            let path = find(controller).unwrap_or_else(|| main.clone());
            root.join(controller).join(path.trim_start_matches('/'))
        };
        return Ok(Cgroup {
            unit,
            v1: true,
            memory: dir("memory"),
            pids: dir("pids"),
            cpu: dir("cpu"),
        });
    }
    let path = unified.ok_or_else(|| "no cgroup line".to_string())?;
    let unit = unit_of(&path)
        .ok_or_else(|| "the process is in the root cgroup: no limits apply".to_string())?;
    let dir = root.join(path.trim_start_matches('/'));
    Ok(Cgroup {
        unit,
        v1: false,
        memory: dir.clone(),
        pids: dir.clone(),
        cpu: dir,
    })
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
    let mut seen: Vec<Cgroup> = Vec::new();
    for (service, pid) in pids {
        let skip = |reason: String| {
            Check::skip(
                format!("cgroup.{service}"),
                Area::Limits,
                format!("{service} cgroup limits"),
                reason,
            )
        };
        let cg = match host
            .read_text(&PathBuf::from(format!("/proc/{pid}/cgroup")))
            .map_err(|e| e.to_string())
            .and_then(|t| locate(&t))
        {
            Ok(cg) => cg,
            Err(reason) => {
                if !out
                    .iter()
                    .any(|c: &Check| c.id == format!("cgroup.{service}"))
                {
                    out.push(skip(reason));
                }
                continue;
            }
        };
        if seen.contains(&cg) {
            continue;
        }
        out.push(memory(host, &cg));
        out.push(pids_check(host, &cg));
        out.push(cpu(host, &cg));
        seen.push(cg);
    }
    out
}

fn read(host: &dyn Host, dir: &Path, name: &str) -> Option<String> {
    host.read_text(&dir.join(name))
        .ok()
        .map(|t| t.trim().to_string())
}

/// v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX × page size).
const V1_UNLIMITED: u64 = 1 << 62;

fn memory(host: &dyn Host, cg: &Cgroup) -> Check {
    let unit = cg.unit.as_str();
    let dir = &cg.memory;
    let id = format!("cgroup.{unit}.memory");
    let title = format!("{unit} memory limit");
    let (max_file, current_file) = if cg.v1 {
        ("memory.limit_in_bytes", "memory.usage_in_bytes")
    } else {
        ("memory.max", "memory.current")
    };
    let Some(max) = read(host, dir, max_file) else {
        return Check::skip(
            id,
            Area::Limits,
            title,
            format!(
                "{} not readable (memory controller off?)",
                dir.join(max_file).display()
            ),
        );
    };
    let current = read(host, dir, current_file).and_then(|v| v.parse::<u64>().ok());
    let (hits, ooms, events_text) = if cg.v1 {
        let failcnt = read(host, dir, "memory.failcnt")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let ooms = read(host, dir, "memory.oom_control")
            .map(|t| parse_flat(&t))
            .and_then(|e| e.get("oom_kill").copied())
            .unwrap_or(0);
        (
            failcnt,
            ooms,
            format!("memory.failcnt {failcnt}, oom_kill {ooms}"),
        )
    } else {
        let events = read(host, dir, "memory.events")
            .map(|t| parse_flat(&t))
            .unwrap_or_default();
        let hits = events.get("max").copied().unwrap_or(0);
        let ooms = events.get("oom_kill").copied().unwrap_or(0);
        (
            hits,
            ooms,
            format!("memory.events: max {hits}, oom_kill {ooms}"),
        )
    };
    let limit = max.parse::<u64>().ok().filter(|l| *l < V1_UNLIMITED);
    let detail = format!(
        "{max_file} {}, in use {}; {events_text}",
        limit.map(human_bytes).unwrap_or_else(|| "max".into()),
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

fn pids_check(host: &dyn Host, cg: &Cgroup) -> Check {
    let unit = cg.unit.as_str();
    let dir = &cg.pids;
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

fn cpu(host: &dyn Host, cg: &Cgroup) -> Check {
    let unit = cg.unit.as_str();
    let dir = &cg.cpu;
    let id = format!("cgroup.{unit}.cpu");
    let title = format!("{unit} CPU limit");
    let max = if cg.v1 {
        match read(host, dir, "cpu.cfs_quota_us").and_then(|q| q.parse::<i64>().ok()) {
            Some(q) if q > 0 => format!(
                "{q} {}",
                read(host, dir, "cpu.cfs_period_us").unwrap_or_else(|| "100000".into())
            ),
            _ => "max".to_string(),
        }
    } else {
        read(host, dir, "cpu.max").unwrap_or_else(|| "max".into())
    };
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
            .file("/proc/100/cgroup", "0::/\n")
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
        assert!(get("cgroup.nginx").detail.contains("root cgroup"));
    }

    #[test]
    fn cgroup_v1_limits_are_read_too() {
        let mem = "/sys/fs/cgroup/memory/lve/site1";
        let host = testdata::stack()
            .file(
                "/proc/200/cgroup",
                "9:name=systemd:/\n8:pids:/lve/site1\n4:memory:/lve/site1\n2:cpu,cpuacct:/lve/site1\n0::/\n",
            )
            .file(format!("{mem}/memory.limit_in_bytes"), "1073741824\n")
            .file(format!("{mem}/memory.usage_in_bytes"), "1000000000\n")
            .file(format!("{mem}/memory.failcnt"), "17\n")
            .file(
                format!("{mem}/memory.oom_control"),
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            )
            .file("/sys/fs/cgroup/pids/lve/site1/pids.max", "max\n")
            .file("/sys/fs/cgroup/cpu/lve/site1/cpu.cfs_quota_us", "-1\n")
            .file("/sys/fs/cgroup/cpu/lve/site1/cpu.stat", "nr_periods 0\n");
        let d = discover(&host, &Config::default());
        let checks = checks(&host, &d);
        let get = |id: &str| checks.iter().find(|c| c.id == id).unwrap();
        let c = get("cgroup.site1.memory");
        assert_eq!(
            (c.status, c.cause),
            (Status::Warn, Some(CauseId::HostCgroupLimit)),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("memory.failcnt 17"), "{}", c.detail);
        assert_eq!(get("cgroup.site1.pids").status, Status::Ok);
        assert_eq!(get("cgroup.site1.cpu").status, Status::Ok);
        let unlimited = locate("4:memory:/\n").unwrap_err();
        assert!(unlimited.contains("root cgroup"));
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
