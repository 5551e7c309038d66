//! The process table as discovery sees it: every `/proc/PID` read through the host seam
//! (`cmdline`, `status` for the parent and owner, `exe`), and the classification of the web
//! stack's processes (nginx master/workers, PHP-FPM masters and pool workers, mysqld/mariadbd,
//! Apache httpd).

use std::path::{Path, PathBuf};

use crate::host::Host;

use super::model::ProcessInfo;

/// One process as read from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// Effective uid.
    pub uid: u32,
    /// The command line's arguments (NUL-separated in /proc), empty ones dropped.
    pub argv: Vec<String>,
    pub exe: Option<PathBuf>,
}

impl Proc {
    /// The arguments joined by spaces, then re-split on whitespace: a title set with
    /// `setproctitle` (`nginx: master process /usr/sbin/nginx -c FILE`) is one argument.
    pub fn words(&self) -> Vec<String> {
        self.argv
            .iter()
            .flat_map(|a| a.split_whitespace())
            .map(str::to_string)
            .collect()
    }

    pub fn cmdline(&self) -> String {
        self.words().join(" ")
    }

    /// The basename of the first word.
    pub fn program(&self) -> String {
        self.words()
            .first()
            .map(|w| {
                let w = w.trim_end_matches(':');
                w.rsplit('/').next().unwrap_or(w).to_string()
            })
            .unwrap_or_default()
    }

    pub fn info(&self, children: Vec<u32>) -> ProcessInfo {
        ProcessInfo {
            pid: self.pid,
            exe: self.exe.clone(),
            cmdline: self.cmdline(),
            children,
        }
    }
}

/// Parses `/proc/PID/cmdline` (NUL-separated).
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

/// `PPid` and effective `Uid` from `/proc/PID/status`.
pub fn parse_status_ids(text: &str) -> (Option<u32>, Option<u32>) {
    let mut ppid = None;
    let mut uid = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("PPid:") {
            ppid = rest.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("Uid:") {
            uid = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok());
        }
    }
    (ppid, uid)
}

/// The web stack's processes (nginx, PHP-FPM, the database, Apache, with their workers). Every
/// command line is read; `status` and `exe` only for those, so a busy host stays cheap (and a
/// snapshot small). Kernel threads (no command line) and vanished processes are left out.
pub fn list(host: &dyn Host) -> Vec<Proc> {
    let Ok(names) = host.read_dir(Path::new("/proc")) else {
        return Vec::new();
    };
    let mut procs = Vec::new();
    for name in names {
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let base = PathBuf::from("/proc").join(&name);
        let Ok(cmdline) = host.read(&base.join("cmdline")) else {
            continue;
        };
        let argv = parse_cmdline(&cmdline);
        if argv.is_empty() {
            continue;
        }
        let candidate = Proc {
            pid,
            ppid: 0,
            uid: u32::MAX,
            argv,
            exe: None,
        };
        if role(&candidate) == Role::Other {
            continue;
        }
        let argv = candidate.argv;
        let (ppid, uid) = host
            .read(&base.join("status"))
            .map(|b| parse_status_ids(&String::from_utf8_lossy(&b)))
            .unwrap_or((None, None));
        let exe = host.read_link(&base.join("exe")).ok();
        procs.push(Proc {
            pid,
            ppid: ppid.unwrap_or(0),
            uid: uid.unwrap_or(u32::MAX),
            argv,
            exe,
        });
    }
    procs
}

/// The value of `-X VALUE`, `-XVALUE`, `--long=VALUE` or `--long VALUE` in `words`.
pub fn option_value(words: &[String], short: Option<&str>, long: Option<&str>) -> Option<String> {
    let mut iter = words.iter().peekable();
    while let Some(word) = iter.next() {
        if let Some(long) = long {
            if let Some(rest) = word.strip_prefix(long) {
                if let Some(value) = rest.strip_prefix('=') {
                    return Some(value.to_string());
                }
                if rest.is_empty() {
                    return iter.peek().map(|s| s.to_string());
                }
            }
        }
        if let Some(short) = short {
            if word == short {
                return iter.peek().map(|s| s.to_string());
            }
            if let Some(rest) = word.strip_prefix(short) {
                if !rest.is_empty() && !word.starts_with("--") {
                    return Some(rest.to_string());
                }
            }
        }
    }
    None
}

/// What a process is, as far as the stack goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `nginx: master process ... [-c FILE] [-p PREFIX]`, or a plain `nginx` run in the
    /// foreground (`daemon off`).
    NginxMaster {
        config: Option<PathBuf>,
        prefix: Option<PathBuf>,
    },
    NginxWorker,
    /// `nginx: cache manager process`, `nginx: cache loader process`.
    NginxHelper,
    /// `php-fpm: master process (FILE)`.
    PhpFpmMaster {
        config: Option<PathBuf>,
    },
    /// `php-fpm: pool NAME`.
    PhpFpmWorker {
        pool: String,
    },
    /// `mysqld` / `mariadbd` (`mysqld_safe` wrappers are ignored).
    Database {
        mariadb: bool,
    },
    /// `apache2` / `httpd`.
    Apache,
    Other,
}

/// Classifies one process.
pub fn role(proc: &Proc) -> Role {
    let words = proc.words();
    let joined = words.join(" ");
    if joined.starts_with("nginx: master process") {
        let rest: Vec<String> = words.iter().skip(3).cloned().collect();
        return Role::NginxMaster {
            config: option_value(&rest, Some("-c"), None).map(PathBuf::from),
            prefix: option_value(&rest, Some("-p"), None).map(PathBuf::from),
        };
    }
    if joined.starts_with("nginx: worker process") {
        return Role::NginxWorker;
    }
    if joined.starts_with("nginx: ") {
        // cache manager / loader processes.
        return Role::NginxHelper;
    }
    if let Some(rest) = joined.strip_prefix("php-fpm: master process") {
        let config = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .map(PathBuf::from);
        return Role::PhpFpmMaster { config };
    }
    if let Some(pool) = joined.strip_prefix("php-fpm: pool ") {
        return Role::PhpFpmWorker {
            pool: pool.trim().to_string(),
        };
    }
    let program = proc.program();
    let exe_name = proc
        .exe
        .as_ref()
        .and_then(|e| e.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match program.as_str() {
        "nginx" => Role::NginxMaster {
            config: option_value(&words, Some("-c"), None).map(PathBuf::from),
            prefix: option_value(&words, Some("-p"), None).map(PathBuf::from),
        },
        "mariadbd" => Role::Database { mariadb: true },
        "mysqld" => Role::Database {
            mariadb: exe_name.starts_with("mariadb"),
        },
        "apache2" | "httpd" => Role::Apache,
        _ if program.starts_with("php-fpm") && words.len() == 1 => {
            Role::PhpFpmMaster { config: None }
        }
        _ => Role::Other,
    }
}

/// The PIDs whose parent is `pid`.
pub fn children(procs: &[Proc], pid: u32) -> Vec<u32> {
    procs
        .iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::fixture::FixtureHost;

    fn proc(argv: &[&str]) -> Proc {
        Proc {
            pid: 10,
            ppid: 1,
            uid: 0,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            exe: None,
        }
    }

    #[test]
    fn classifies_the_stack_processes() {
        assert_eq!(
            role(&proc(&[
                "nginx: master process /usr/sbin/nginx -c /tmp/t/nginx.conf -p /tmp/t/"
            ])),
            Role::NginxMaster {
                config: Some("/tmp/t/nginx.conf".into()),
                prefix: Some("/tmp/t/".into())
            }
        );
        assert_eq!(
            role(&proc(&["nginx: master process /usr/sbin/nginx"])),
            Role::NginxMaster {
                config: None,
                prefix: None
            }
        );
        assert_eq!(role(&proc(&["nginx: worker process"])), Role::NginxWorker);
        assert_eq!(
            role(&proc(&["nginx: cache manager process"])),
            Role::NginxHelper
        );
        assert_eq!(
            role(&proc(&[
                "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"
            ])),
            Role::PhpFpmMaster {
                config: Some("/etc/php/8.2/fpm/php-fpm.conf".into())
            }
        );
        assert_eq!(
            role(&proc(&["php-fpm: pool www"])),
            Role::PhpFpmWorker { pool: "www".into() }
        );
        assert_eq!(
            role(&proc(&["/usr/sbin/mariadbd", "--log-error=/x"])),
            Role::Database { mariadb: true }
        );
        assert_eq!(
            role(&proc(&["/usr/sbin/apache2", "-k", "start"])),
            Role::Apache
        );
        assert_eq!(role(&proc(&["bash"])), Role::Other);
    }

    #[test]
    fn options_in_every_spelling() {
        let words: Vec<String> = ["mysqld", "--socket=/s", "--port", "3307", "-cX"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            option_value(&words, None, Some("--socket")),
            Some("/s".into())
        );
        assert_eq!(
            option_value(&words, None, Some("--port")),
            Some("3307".into())
        );
        assert_eq!(option_value(&words, Some("-c"), None), Some("X".into()));
        assert_eq!(option_value(&words, None, Some("--datadir")), None);
    }

    #[test]
    fn lists_processes_and_skips_kernel_threads_and_vanished_ones() {
        let host = FixtureHost::new()
            .file("/proc/1/cmdline", b"/sbin/init\0")
            .file(
                "/proc/1/status",
                "Name:\tinit\nPPid:\t0\nUid:\t0\t0\t0\t0\n",
            )
            .file("/proc/2/cmdline", b"")
            .file("/proc/300/cmdline", b"nginx: worker process\0\0\0")
            .file("/proc/300/status", "PPid:\t299\nUid:\t33\t33\t33\t33\n")
            .file("/proc/self/cmdline", b"x\0")
            .dir("/proc/400");
        let procs = list(&host);
        // init is not part of the stack.
        assert_eq!(procs.len(), 1);
        assert_eq!(procs[0].pid, 300);
        assert_eq!(procs[0].ppid, 299);
        assert_eq!(procs[0].uid, 33);
        assert_eq!(procs[0].cmdline(), "nginx: worker process");
    }
}
