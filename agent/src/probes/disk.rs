//! Disk space and inodes (statvfs through the host) of the file systems that hold the logs, temp
//! files, PHP sessions (`session.save_path`, default `/var/lib/php/sessions`) and the database
//! datadir; one check per mount (`disk.<mount>`), a full one is `host.disk-full`.

use std::path::{Path, PathBuf};

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::discover::Discovery;
use crate::host::{FsStats, Host};

use super::{human_bytes, parse_proc};

/// The paths whose file systems matter, each with what it holds.
pub fn paths_of_interest(d: &Discovery) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = vec![(PathBuf::from("/tmp"), "temp files".into())];
    if let Some(n) = &d.nginx {
        for l in &n.error_logs {
            out.push((l.value.clone(), "nginx error log".into()));
        }
        for l in &n.access_logs {
            out.push((l.path.clone(), "nginx access log".into()));
        }
        out.push((PathBuf::from("/var/lib/nginx"), "nginx temp files".into()));
    }
    for fpm in &d.php_fpm {
        if let Some(l) = &fpm.error_log {
            out.push((l.value.clone(), "PHP-FPM log".into()));
        }
        let mut sessions = false;
        for pool in &fpm.pools {
            for key in [
                "php_admin_value[session.save_path]",
                "php_value[session.save_path]",
            ] {
                if let Some(v) = pool.other.get(key) {
                    // `N;MODE;/path` is allowed: the path is the last part.
                    let path = v.value.rsplit(';').next().unwrap_or(&v.value);
                    out.push((PathBuf::from(path), "PHP sessions".into()));
                    sessions = true;
                }
            }
        }
        if !sessions {
            out.push((
                PathBuf::from("/var/lib/php/sessions"),
                "PHP sessions".into(),
            ));
        }
    }
    if let Some(db) = &d.database {
        if let Some(dir) = &db.datadir {
            out.push((dir.value.clone(), "database datadir".into()));
        }
        if let Some(l) = &db.error_log {
            out.push((l.value.clone(), "database error log".into()));
        }
    }
    out
}

fn mount_points(host: &dyn Host) -> Vec<PathBuf> {
    let Ok(bytes) = host.read(Path::new("/proc/self/mountinfo")) else {
        return Vec::new();
    };
    parse_proc::<procfs_core::process::MountInfos>(&bytes)
        .map(|m| m.0.into_iter().map(|i| i.mount_point).collect())
        .unwrap_or_default()
}

/// Every disk check.
pub fn checks(host: &dyn Host, d: &Discovery) -> Vec<Check> {
    let mounts = mount_points(host);
    // mount label → (stats, what it holds)
    let mut seen: Vec<(String, FsStats, Vec<String>)> = Vec::new();
    let mut errors = Vec::new();
    for (path, what) in paths_of_interest(d) {
        // Walk up to an existing directory.
        let mut probe = path.clone();
        let stats = loop {
            match host.statvfs(&probe) {
                Ok(s) => break Some(s),
                Err(e) => match probe.parent() {
                    Some(p) if e.is_not_found() => probe = p.to_path_buf(),
                    _ => {
                        errors.push(format!("{}: {e}", path.display()));
                        break None;
                    }
                },
            }
        };
        let Some(stats) = stats else { continue };
        let label = mounts
            .iter()
            .filter(|m| probe.starts_with(m))
            .max_by_key(|m| m.as_os_str().len())
            .map(|m| m.display().to_string())
            .unwrap_or_else(|| probe.display().to_string());
        match seen.iter_mut().find(|(l, _, _)| *l == label) {
            Some((_, _, holds)) => {
                if !holds.contains(&what) {
                    holds.push(what)
                }
            }
            None => seen.push((label, stats, vec![what])),
        }
    }
    let mut out = Vec::new();
    if seen.is_empty() {
        out.push(Check::skip(
            "disk",
            Area::Disk,
            "disk space",
            format!("no file system could be measured: {}", errors.join("; ")),
        ));
    }
    for (mount, s, holds) in seen {
        let id = format!("disk.{mount}");
        let title = format!("space on {mount}");
        let free_pct = s.avail_bytes as f64 * 100.0 / s.total_bytes.max(1) as f64;
        let inode_pct = if s.total_inodes == 0 {
            100.0
        } else {
            s.free_inodes as f64 * 100.0 / s.total_inodes as f64
        };
        let detail = format!(
            "{} free of {} ({free_pct:.1}%), {inode_pct:.1}% inodes free; holds {}",
            human_bytes(s.avail_bytes),
            human_bytes(s.total_bytes),
            holds.join(", ")
        );
        let worst = free_pct.min(inode_pct);
        let check = if worst < 2.0 || s.avail_bytes < 64 * 1024 * 1024 {
            Check::fail(id, Area::Disk, format!("{mount} is full"))
                .cause(CauseId::HostDiskFull)
                .fix(format!(
                    "free space on {mount}: `du -xh --max-depth=2 {mount} | sort -h | tail`; old logs (`journalctl --vacuum-size=`), PHP sessions, temp files{}",
                    if inode_pct < 2.0 { "; inodes are the problem: look for directories with millions of small files (sessions, cache)" } else { "" }
                ))
        } else if worst < 10.0 {
            Check::warn(id, Area::Disk, format!("{mount} is nearly full"))
                .cause(CauseId::HostDiskFull)
        } else {
            Check::ok(id, Area::Disk, title)
        };
        out.push(
            check
                .detail(detail)
                .metric("free_pct", free_pct, Some("%"))
                .metric("inodes_free_pct", inode_pct, Some("%")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::check::Status;
    use crate::config::Config;
    use crate::discover::{discover, testdata};

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_full_var_and_a_roomy_root() {
        let host = testdata::stack()
            .file(
                "/proc/self/mountinfo",
                "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n23 22 8:2 / /var rw,relatime shared:2 - ext4 /dev/sda2 rw\n",
            )
            .fs("/", FsStats { total_bytes: 100 * GIB, avail_bytes: 50 * GIB, total_inodes: 1000, free_inodes: 900 })
            .fs("/var", FsStats { total_bytes: 10 * GIB, avail_bytes: GIB / 100, total_inodes: 1000, free_inodes: 900 });
        let d = discover(&host, &Config::default());
        let checks = checks(&host, &d);
        let var = checks.iter().find(|c| c.id == "disk./var").unwrap();
        assert_eq!(
            (var.status, var.cause),
            (Status::Fail, Some(CauseId::HostDiskFull))
        );
        assert!(var.detail.contains("nginx error log"), "{}", var.detail);
        assert!(var.detail.contains("database datadir"), "{}", var.detail);
        let root = checks.iter().find(|c| c.id == "disk./").unwrap();
        assert_eq!(root.status, Status::Ok);
        assert!(root.detail.contains("temp files"));
    }

    #[test]
    fn inodes_count_too_and_nothing_measurable_is_a_skip() {
        let host = testdata::stack().fs(
            "/",
            FsStats {
                total_bytes: 100 * GIB,
                avail_bytes: 50 * GIB,
                total_inodes: 1000,
                free_inodes: 5,
            },
        );
        let d = discover(&host, &Config::default());
        let c = &checks(&host, &d)[0];
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        let c = &checks(&testdata::stack(), &d)[0];
        assert_eq!(c.status, Status::Skip);
    }
}
