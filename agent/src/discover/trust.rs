//! The trust model: what the root agent believes, and from whom.
//!
//! The agent runs as root on hosts where other accounts (site users, the web server's own user,
//! any PHP plugin's code) are not trusted, and where visitors write into the logs it reads. It
//! believes:
//!
//! - **the kernel** (`/proc`, `/sys`, netlink): a process's owner, parent and executable link;
//! - **root-owned files and binaries**, and files owned by the service account that the distro's
//!   own unit runs a service as (`mysql` for MySQL/MariaDB);
//! - **a process's claims** (the config path on its command line, its sockets, its logs) only as
//!   far as its owner: a process owned by root, or by the service account the distro's unit runs
//!   that service as, is believed; one owned by anybody else (`nobody` running
//!   `exec -a "nginx: master process"`) is not, and [`checks`] say why.
//!
//! It **executes only known binaries**: the path the agent's config names, else the distro's
//! path ([`known_binary`]), each checked to be root-owned and not writable by group or others
//! along the whole path. It never executes `/proc/PID/exe` or a path taken from a command line.
//! A config file named by a trusted process is read only when it is owned by root or by that
//! service account and not writable by others ([`file_trusted`]).
//!
//! Everything a visitor wrote (request lines, user agents, referrers, exception messages) is text
//! to show, escaped (`report::escape`), never evidence of a server-side cause on its own.
//!
//! A snapshot replays what another host answered and executes nothing: there, an ownership that
//! the capture did not record is taken as it is (the snapshot's journal is what is audited).

use std::path::{Path, PathBuf};

use crate::check::{Area, Check};
use crate::discover::process::{self, Proc, Role};
use crate::host::{FileKind, FileMeta, Host, HostError};

/// Where Debian, Ubuntu and RHEL install nginx.
pub const NGINX_PATHS: &[&str] = &["/usr/sbin/nginx", "/usr/local/sbin/nginx"];

/// Where Debian (`apache2`), RHEL and cPanel EasyApache 4 (`httpd`), cPanel EasyApache 3 and
/// source builds (the official image's `/usr/local/apache2`) install Apache httpd.
pub const APACHE_PATHS: &[&str] = &[
    "/usr/sbin/apache2",
    "/usr/sbin/httpd",
    "/usr/local/apache/bin/httpd",
    "/usr/local/apache2/bin/httpd",
];

/// Why something was not trusted. The text is shown in a check's detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Distrust {
    #[error("{path} is owned by uid {uid}, not root")]
    NotRootOwned { path: PathBuf, uid: u32 },
    #[error("{path} is writable by {who} (mode {mode:o})")]
    Writable {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error("{path} is owned by {owner}, not by root or {account}")]
    Owner {
        path: PathBuf,
        owner: String,
        account: String,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{0}")]
    Unreadable(HostError),
    #[error("none of {0} is installed")]
    NoBinary(String),
    #[error("{0} is not an absolute path")]
    Relative(PathBuf),
    #[error("process {pid} ({title}) is owned by {owner}, not by root{account}: its claims are not believed")]
    Process {
        pid: u32,
        title: String,
        owner: String,
        account: String,
    },
}

/// The account the distro's own unit runs a service as, besides root: the only non-root owner
/// whose claims about that service are believed.
pub fn service_account(role: &Role) -> Option<&'static str> {
    match role {
        Role::Database { .. } => Some("mysql"),
        _ => None,
    }
}

/// The uids allowed to own a process's claims and the files they name: root, and the service
/// account when it exists on this host.
fn allowed_uids(host: &dyn Host, account: Option<&str>) -> Vec<u32> {
    let mut uids = vec![0];
    if let Some((uid, _, _)) = account.and_then(|a| crate::discover::accounts::user_ids(host, a)) {
        uids.push(uid);
    }
    uids
}

fn meta_or_snapshot(host: &dyn Host, path: &Path) -> Result<Option<FileMeta>, Distrust> {
    match host.metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        // A snapshot executes nothing: what the capture did not record is not a risk here.
        Err(HostError::NotInSnapshot { .. }) if !host.is_live() => Ok(None),
        Err(err) => Err(Distrust::Unreadable(err)),
    }
}

/// Whether `path` and every directory above it are root-owned and not writable by group or
/// others: nobody but root can replace what is there.
pub fn root_path(host: &dyn Host, path: &Path) -> Result<(), Distrust> {
    let mut prefix = PathBuf::new();
    for component in path.components() {
        prefix.push(component);
        let Some(meta) = meta_or_snapshot(host, &prefix)? else {
            continue;
        };
        if meta.uid != 0 {
            return Err(Distrust::NotRootOwned {
                path: prefix,
                uid: meta.uid,
            });
        }
        if meta.mode & 0o022 != 0 {
            let who = if meta.mode & 0o002 != 0 {
                "others"
            } else {
                "its group"
            };
            return Err(Distrust::Writable {
                path: prefix,
                who,
                mode: meta.mode,
            });
        }
    }
    Ok(())
}

/// The binary to execute for a program: the configured path when there is one, else the first
/// of the distro's paths that exists, checked with [`root_path`]. Never a path a process named.
pub fn known_binary(
    host: &dyn Host,
    configured: Option<&Path>,
    distro: &[&str],
) -> Result<PathBuf, Distrust> {
    let path = match configured {
        Some(path) => path.to_path_buf(),
        None => distro
            .iter()
            .map(PathBuf::from)
            .find(|p| !matches!(host.metadata(p), Err(e) if e.is_not_found()))
            .ok_or_else(|| Distrust::NoBinary(distro.join(", ")))?,
    };
    if !path.is_absolute() {
        return Err(Distrust::Relative(path));
    }
    if let Some(meta) = meta_or_snapshot(host, &path)? {
        if meta.kind != FileKind::File {
            return Err(Distrust::NotAFile { path });
        }
    }
    root_path(host, &path)?;
    Ok(path)
}

/// Whether a file named by a trusted process of `role` may be read: a regular file owned by root
/// or by the role's service account, not writable by others.
pub fn file_trusted(host: &dyn Host, path: &Path, role: &Role) -> Result<(), Distrust> {
    let account = service_account(role);
    let meta = match meta_or_snapshot(host, path) {
        Ok(Some(meta)) => meta,
        // Nothing there: nothing to read either (the read reports it).
        Ok(None) | Err(Distrust::Unreadable(HostError::NotFound { .. })) => return Ok(()),
        Err(err) => return Err(err),
    };
    if meta.kind != FileKind::File {
        return Err(Distrust::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if !allowed_uids(host, account).contains(&meta.uid) {
        return Err(Distrust::Owner {
            path: path.to_path_buf(),
            owner: crate::discover::accounts::id_name(host, "/etc/passwd", meta.uid),
            account: account.unwrap_or("root").to_string(),
        });
    }
    if meta.mode & 0o002 != 0 {
        return Err(Distrust::Writable {
            path: path.to_path_buf(),
            who: "others",
            mode: meta.mode,
        });
    }
    Ok(())
}

/// Whether a process's claims (its title, the config it names) are believed: its owner is root
/// or the role's service account, and a config file it names passes [`file_trusted`]. Workers
/// claim nothing (they count only as children of a trusted master) and always pass.
pub fn process_trusted(host: &dyn Host, proc: &Proc) -> Result<(), Distrust> {
    let role = process::role(proc);
    let config = match &role {
        Role::NginxMaster { config, .. } | Role::PhpFpmMaster { config } => config.clone(),
        Role::Database { .. } => {
            process::option_value(&proc.words(), None, Some("--defaults-file")).map(PathBuf::from)
        }
        Role::Apache => None,
        Role::NginxWorker | Role::NginxHelper | Role::PhpFpmWorker { .. } | Role::Other => {
            return Ok(())
        }
    };
    let account = service_account(&role);
    if !allowed_uids(host, account).contains(&proc.uid) {
        let title: String = proc.cmdline().chars().take(80).collect();
        return Err(Distrust::Process {
            pid: proc.pid,
            title,
            owner: if proc.uid == u32::MAX {
                "an unknown owner".to_string()
            } else {
                crate::discover::accounts::id_name(host, "/etc/passwd", proc.uid)
            },
            account: account.map(|a| format!(" or {a}")).unwrap_or_default(),
        });
    }
    if let Some(config) = config.filter(|c| c.is_absolute()) {
        file_trusted(host, &config, &role)?;
    }
    Ok(())
}

/// The servers whose workers wear their master's title (every Apache child; an nginx worker just
/// forked); discovery never takes a master-titled child of a master for a master.
fn forks_lookalikes(role: &Role) -> Option<u8> {
    match role {
        Role::NginxMaster { .. } => Some(0),
        Role::Apache => Some(1),
        _ => None,
    }
}

/// Splits the process list into the processes whose claims are believed and the reasons the
/// others are not. An nginx or Apache child wearing the title of its trusted master (every Apache
/// child, an nginx worker just forked) is the master's worker: kept whatever its owner.
pub fn partition(host: &dyn Host, procs: Vec<Proc>) -> (Vec<Proc>, Vec<String>) {
    let verdicts: Vec<Result<(), Distrust>> =
        procs.iter().map(|p| process_trusted(host, p)).collect();
    let masters: std::collections::BTreeMap<u32, u8> = procs
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.is_ok())
        .filter_map(|(p, _)| Some((p.pid, forks_lookalikes(&process::role(p))?)))
        .collect();
    let mut trusted = Vec::with_capacity(procs.len());
    let mut refused = Vec::new();
    for (proc, verdict) in procs.into_iter().zip(verdicts) {
        let worker = || {
            forks_lookalikes(&process::role(&proc)).is_some()
                && masters.get(&proc.ppid) == forks_lookalikes(&process::role(&proc)).as_ref()
        };
        match verdict {
            Err(why) if !worker() => refused.push(why.to_string()),
            _ => trusted.push(proc),
        }
    }
    (trusted, refused)
}

/// The check listing processes whose claims were not believed (none when every one was).
pub fn checks(refused: &[String]) -> Vec<Check> {
    if refused.is_empty() {
        return Vec::new();
    }
    vec![Check::warn(
        "discovery.untrusted",
        Area::Discovery,
        format!(
            "{} process(es) claiming to be part of the web stack were not trusted",
            refused.len()
        ),
    )
    .detail(refused.join("; "))]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::fixture::FixtureHost;

    fn proc(uid: u32, title: &str) -> Proc {
        Proc {
            pid: 42,
            ppid: 1,
            uid,
            argv: vec![title.to_string()],
            exe: Some(PathBuf::from("/tmp/evil")),
        }
    }

    fn passwd() -> FixtureHost {
        FixtureHost::new().file(
            "/etc/passwd",
            "root:x:0:0::/root:/bin/sh\nmysql:x:110:110::/nonexistent:/bin/false\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n",
        )
    }

    #[test]
    fn a_master_owned_by_nobody_is_not_believed_and_the_reason_names_the_owner() {
        let host = passwd();
        let err = process_trusted(
            &host,
            &proc(
                65534,
                "nginx: master process /usr/sbin/nginx -c /tmp/x.conf",
            ),
        )
        .unwrap_err();
        assert!(err.to_string().contains("owned by nobody"), "{err}");
        assert!(process_trusted(&host, &proc(0, "nginx: master process nginx")).is_ok());
        // Workers claim nothing.
        assert!(process_trusted(&host, &proc(65534, "nginx: worker process")).is_ok());
    }

    #[test]
    fn a_lookalike_child_is_a_worker_only_under_a_trusted_master_of_its_own_kind() {
        let host = passwd();
        let mut apache = proc(0, "/usr/sbin/apache2 -k start");
        apache.pid = 1;
        let mut child = proc(33, "/usr/sbin/apache2 -k start");
        child.pid = 2;
        child.ppid = 1;
        let mut fpm = proc(0, "php-fpm: master process (/etc/php.conf)");
        fpm.pid = 3;
        // A PHP worker that exec'd itself into an nginx lookalike: its parent is PHP-FPM.
        let mut fake = proc(33, "nginx: master process nginx -c /tmp/evil.conf");
        fake.pid = 4;
        fake.ppid = 3;
        let (kept, refused) = partition(&host, vec![apache, child, fpm, fake]);
        assert_eq!(
            kept.iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(refused.len(), 1, "{refused:?}");
    }

    #[test]
    fn the_database_may_run_as_its_service_account_but_not_as_anyone_else() {
        let host = passwd();
        assert!(process_trusted(&host, &proc(110, "/usr/sbin/mariadbd")).is_ok());
        let err = process_trusted(&host, &proc(65534, "/usr/sbin/mariadbd")).unwrap_err();
        assert!(err.to_string().contains("not by root or mysql"), "{err}");
    }

    #[test]
    fn a_config_named_by_a_root_process_must_be_owned_by_root() {
        let mut host = passwd().file("/tmp/x.conf", "events {}\n");
        host = host.meta(
            "/tmp/x.conf",
            FileMeta {
                kind: FileKind::File,
                mode: 0o644,
                uid: 65534,
                gid: 65534,
                size: 10,
                mtime: 0,
                dev: 0,
                ino: 0,
            },
        );
        let err = process_trusted(
            &host,
            &proc(0, "nginx: master process /usr/sbin/nginx -c /tmp/x.conf"),
        )
        .unwrap_err();
        assert!(matches!(err, Distrust::Owner { .. }), "{err}");
    }

    #[test]
    fn known_binaries_are_checked_along_the_whole_path() {
        let host = FixtureHost::new().file("/usr/sbin/nginx", "");
        assert_eq!(
            known_binary(&host, None, NGINX_PATHS).unwrap(),
            PathBuf::from("/usr/sbin/nginx")
        );
        let dir = |uid, mode| FileMeta {
            kind: FileKind::Dir,
            mode,
            uid,
            gid: 0,
            size: 0,
            mtime: 0,
            dev: 0,
            ino: 0,
        };
        let writable = FixtureHost::new()
            .file("/opt/x/nginx", "")
            .meta("/opt/x", dir(0, 0o777));
        let err =
            known_binary(&writable, Some(Path::new("/opt/x/nginx")), NGINX_PATHS).unwrap_err();
        assert!(err.to_string().contains("writable by others"), "{err}");
        let owned = FixtureHost::new()
            .file("/home/u/nginx", "")
            .meta("/home/u", dir(1000, 0o755));
        assert!(matches!(
            known_binary(&owned, Some(Path::new("/home/u/nginx")), NGINX_PATHS),
            Err(Distrust::NotRootOwned { uid: 1000, .. })
        ));
        assert!(matches!(
            known_binary(&FixtureHost::new(), None, NGINX_PATHS),
            Err(Distrust::NoBinary(_))
        ));
        assert!(matches!(
            known_binary(&host, Some(Path::new("nginx")), NGINX_PATHS),
            Err(Distrust::Relative(_))
        ));
    }

    #[test]
    fn live_binaries_resolve_on_this_machine() {
        // /bin/sh is root-owned along its path on any sane host.
        let path = known_binary(&crate::host::live::LiveHost, None, &["/bin/sh"]).unwrap();
        assert_eq!(path, PathBuf::from("/bin/sh"));
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("nginx");
        std::fs::write(&fake, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(known_binary(&crate::host::live::LiveHost, Some(&fake), &[]).is_err());
    }
}
