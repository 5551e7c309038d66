//! Service health now: nginx running and listening, each PHP-FPM pool running with its socket
//! present, connectable and open to the nginx worker user, each upstream target connectable, the
//! database running and connectable. Failing checks name their catalog cause and a fix with the
//! host's own paths.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::config::Config;
use crate::discover::{probe_timeout, Address, Discovery, Nginx, PhpFpm, Pool};
use crate::host::{ConnectOutcome, Endpoint, FileKind, FileMeta, Host, HostExt};

use super::netstat::{self, ListenSocket};

/// The most upstream addresses checked in one run.
const MAX_UPSTREAMS: usize = 64;

/// Every service check.
pub fn checks(host: &dyn Host, d: &Discovery, config: &Config) -> Vec<Check> {
    let mut out = crate::trust::checks(&d.untrusted);
    nginx_checks(host, d, &mut out);
    let worker = worker_identity(host, d.nginx.as_ref());
    if d.php_fpm.is_empty() {
        out.push(Check::skip(
            "php-fpm.running",
            Area::Services,
            "PHP-FPM",
            "no PHP-FPM master process or php-fpm.conf found",
        ));
    }
    for fpm in &d.php_fpm {
        pool_checks(host, d, fpm, worker.as_ref(), config, &mut out);
    }
    upstream_checks(host, d, config, &mut out);
    db_checks(host, d, config, &mut out);
    out
}

/// `(111: Connection refused)`, as nginx writes it (without Rust's ` (os error 111)`).
fn errno_text(outcome: &ConnectOutcome) -> String {
    let message = match outcome.message.rfind(" (os error ") {
        Some(i) => &outcome.message[..i],
        None => outcome.message.as_str(),
    };
    match outcome.errno {
        Some(n) => format!("({n}: {message})"),
        None => message.to_string(),
    }
}

pub(crate) fn listen_table(host: &dyn Host) -> Option<Vec<ListenSocket>> {
    let mut any = false;
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = host.read_text(Path::new(file)) {
            any = true;
            out.extend(netstat::parse_tcp_listen(&text));
        }
    }
    any.then_some(out)
}

/// Socket inodes a process holds (`/proc/PID/fd/* -> socket:[N]`).
pub(crate) fn socket_inodes(host: &dyn Host, pid: u32) -> Option<BTreeSet<u64>> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let names = host.read_dir(&dir).ok()?;
    let mut out = BTreeSet::new();
    for name in names.iter().take(65536) {
        if let Ok(target) = host.read_link(&dir.join(name)) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                if let Ok(n) = n.parse() {
                    out.insert(n);
                }
            }
        }
    }
    Some(out)
}

/// nginx's two service checks, skipped for `reason`.
fn skip_nginx(out: &mut Vec<Check>, reason: String) {
    out.push(Check::skip(
        "nginx.running",
        Area::Services,
        "nginx",
        reason.clone(),
    ));
    out.push(Check::skip(
        "nginx.listening",
        Area::Services,
        "nginx listening",
        reason,
    ));
}

fn nginx_checks(host: &dyn Host, d: &Discovery, out: &mut Vec<Check>) {
    let Some(nginx) = &d.nginx else {
        let reason = match &d.apache {
            Some(a) => format!(
                "nginx not found; Apache httpd runs (pid {})",
                a.master.as_ref().map(|m| m.pid).unwrap_or(0)
            ),
            None => "no nginx master process and no /etc/nginx/nginx.conf found".to_string(),
        };
        skip_nginx(out, reason);
        return;
    };
    let conf = nginx
        .config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/etc/nginx/nginx.conf".into());
    if let Some(err) = &nginx.config_error {
        out.push(Check::skip(
            "nginx.config",
            Area::Services,
            "nginx config",
            format!("the config could not be read, so checks that need it are skipped: {err}"),
        ));
    }
    let Some(master) = &nginx.master else {
        if let Some(pid) = d
            .apache
            .as_ref()
            .and_then(|a| a.master.as_ref())
            .map(|m| m.pid)
        {
            // Installed but not running, while Apache serves: not a fault.
            let reason = format!(
                "nginx is installed ({conf}) but not running; Apache httpd (pid {pid}) serves this host"
            );
            skip_nginx(out, reason);
            return;
        }
        out.push(
            Check::fail("nginx.running", Area::Services, "nginx is not running")
                .detail(format!("no nginx master process; its config is {conf}"))
                .cause(CauseId::WebDown)
                .fix(format!(
                    "check the config with `nginx -t -c {conf}`, then start it: `systemctl start nginx`; the reason it stopped is in `journalctl -u nginx` and the nginx error log"
                )),
        );
        out.push(
            Check::fail("nginx.listening", Area::Services, "nginx is not listening")
                .detail("nginx is not running, so nothing answers on its ports")
                .cause(CauseId::WebDown),
        );
        return;
    };
    if nginx.workers.is_empty() {
        out.push(
            Check::warn("nginx.running", Area::Services, "nginx master has no workers")
                .detail(format!(
                    "master pid {} runs with config {conf}, but no `nginx: worker process` child was found",
                    master.pid
                ))
                .cause(CauseId::WebDown)
                .fix("restart nginx: `systemctl restart nginx`"),
        );
    } else {
        out.push(
            Check::ok("nginx.running", Area::Services, "nginx is running")
                .detail(format!(
                    "master pid {} with {} worker(s), config {conf}",
                    master.pid,
                    nginx.workers.len()
                ))
                .metric("workers", nginx.workers.len() as f64, None),
        );
    }
    out.push(listening_check(host, nginx, master.pid));
}

fn listening_check(host: &dyn Host, nginx: &Nginx, master: u32) -> Check {
    let declared: BTreeSet<u16> = nginx
        .servers
        .iter()
        .flat_map(|s| &s.listens)
        .filter_map(|l| l.port)
        .collect();
    let table = listen_table(host);
    let inodes = socket_inodes(host, master);
    let held: Vec<ListenSocket> = match (&table, &inodes) {
        (Some(table), Some(inodes)) if !inodes.is_empty() => table
            .iter()
            .filter(|s| inodes.contains(&s.inode))
            .cloned()
            .collect(),
        (Some(table), _) => table
            .iter()
            .filter(|s| declared.contains(&s.port))
            .cloned()
            .collect(),
        (None, _) => {
            // No socket table: try the ports.
            let mut held = Vec::new();
            for port in &declared {
                let outcome = host.connect(
                    &Endpoint::Tcp(format!("127.0.0.1:{port}")),
                    std::time::Duration::from_secs(2),
                );
                if outcome.connected {
                    held.push(ListenSocket {
                        addr: "127.0.0.1".into(),
                        port: *port,
                        inode: 0,
                    });
                }
            }
            held
        }
    };
    let held_ports: BTreeSet<u16> = held.iter().map(|s| s.port).collect();
    let shown = held
        .iter()
        .map(|s| {
            if s.addr.contains(':') {
                format!("[{}]:{}", s.addr, s.port)
            } else {
                format!("{}:{}", s.addr, s.port)
            }
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ");
    let missing: Vec<String> = declared
        .difference(&held_ports)
        .map(u16::to_string)
        .collect();
    if held.is_empty() {
        Check::fail("nginx.listening", Area::Services, "nginx listens on no port")
            .detail(format!(
                "the config declares port(s) {} but no listening socket was found for them",
                declared.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            ))
            .cause(CauseId::WebDown)
            .fix("check `nginx -t` and the nginx error log for `bind() ... failed`, then `systemctl restart nginx`")
    } else if !missing.is_empty() {
        Check::warn(
            "nginx.listening",
            Area::Services,
            "nginx does not listen on every configured port",
        )
        .detail(format!(
            "listening on {shown}; not on port(s) {}",
            missing.join(", ")
        ))
        .fix("look for `bind() ... failed (98: Address already in use)` in the nginx error log")
    } else {
        Check::ok("nginx.listening", Area::Services, "nginx is listening")
            .detail(format!("listening on {shown}"))
    }
}

/// Who the nginx workers run as: uid, gid, supplementary gids, and a name for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub user: String,
    pub group: String,
}

/// The nginx worker identity: from a running worker's status, else the `user` directive.
pub fn worker_identity(host: &dyn Host, nginx: Option<&Nginx>) -> Option<Identity> {
    let nginx = nginx?;
    for pid in &nginx.workers {
        if let Ok(text) = host.read_text(&PathBuf::from(format!("/proc/{pid}/status"))) {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            };
            let uid = field("Uid:").and_then(|v| v.get(1)?.parse().ok());
            let gid = field("Gid:").and_then(|v| v.get(1)?.parse().ok());
            if let (Some(uid), Some(gid)) = (uid, gid) {
                let groups = field("Groups:")
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|g| g.parse().ok())
                    .collect();
                return Some(Identity {
                    uid,
                    gid,
                    groups,
                    user: super::id_name(host, "/etc/passwd", uid),
                    group: super::id_name(host, "/etc/group", gid),
                });
            }
        }
    }
    let directive = nginx
        .user
        .as_ref()
        .map(|u| u.value.clone())
        .unwrap_or_else(|| "nobody".into());
    let mut words = directive.split_whitespace();
    let user = words.next().unwrap_or("nobody").to_string();
    let (uid, gid, groups) = super::user_ids(host, &user)?;
    let group = match words.next() {
        Some(g) => g.to_string(),
        None => super::id_name(host, "/etc/group", gid),
    };
    let gid = super::group_id(host, &group).unwrap_or(gid);
    Some(Identity {
        uid,
        gid,
        groups,
        user,
        group,
    })
}

/// Whether `who` may connect to a unix socket with this owner and mode (write permission).
pub fn may_connect(who: &Identity, meta: &FileMeta) -> bool {
    if who.uid == 0 {
        return true;
    }
    if meta.uid == who.uid {
        return meta.mode & 0o200 != 0;
    }
    if meta.gid == who.gid || who.groups.contains(&meta.gid) {
        return meta.mode & 0o020 != 0;
    }
    meta.mode & 0o002 != 0
}

fn service_name(fpm: &PhpFpm) -> String {
    match &fpm.version {
        Some(v) => format!("php{v}-fpm"),
        None => "php-fpm".to_string(),
    }
}

fn pool_checks(
    host: &dyn Host,
    d: &Discovery,
    fpm: &PhpFpm,
    worker: Option<&Identity>,
    config: &Config,
    out: &mut Vec<Check>,
) {
    let service = service_name(fpm);
    let conf = fpm.config_path.display().to_string();
    if let Some(err) = &fpm.config_error {
        out.push(Check::skip(
            format!("php-fpm.{}.config", service),
            Area::Services,
            "PHP-FPM config",
            format!("{conf} could not be read: {err}"),
        ));
    }
    if fpm.pools.is_empty() && fpm.master.is_none() {
        out.push(
            Check::fail("php-fpm.running", Area::Services, "PHP-FPM is not running")
                .detail(format!("no PHP-FPM master process for {conf}"))
                .cause(CauseId::UpstreamDown)
                .fix(format!(
                    "`php-fpm{} -t`, then `systemctl start {service}`",
                    fpm.version.clone().unwrap_or_default()
                )),
        );
    }
    for pool in &fpm.pools {
        let id = super::pool_id(d, fpm, pool);
        match &fpm.master {
            None => out.push(
                Check::fail(
                    format!("{id}.running"),
                    Area::Services,
                    format!("PHP-FPM pool {} is not running", pool.name),
                )
                .detail(format!("no PHP-FPM master process for {conf}"))
                .cause(CauseId::UpstreamDown)
                .fix(format!(
                    "start it: `systemctl start {service}` (test the config first with `php-fpm{} -t`); why it stopped is in its error log",
                    fpm.version.clone().unwrap_or_default()
                )),
            ),
            Some(master) => {
                let ondemand = pool.pm.as_ref().is_some_and(|p| p.value == "ondemand");
                if pool.workers.is_empty() && !ondemand {
                    out.push(
                        Check::warn(
                            format!("{id}.running"),
                            Area::Services,
                            format!("PHP-FPM pool {} has no workers", pool.name),
                        )
                        .detail(format!(
                            "master pid {} runs, but no `php-fpm: pool {}` process was found",
                            master.pid, pool.name
                        ))
                        .cause(CauseId::UpstreamDown),
                    );
                } else {
                    out.push(
                        Check::ok(
                            format!("{id}.running"),
                            Area::Services,
                            format!("PHP-FPM pool {} is running", pool.name),
                        )
                        .detail(format!(
                            "master pid {}, {} worker(s)",
                            master.pid,
                            pool.workers.len()
                        ))
                        .metric("workers", pool.workers.len() as f64, None),
                    );
                }
            }
        }
        socket_checks(host, fpm, pool, &id, worker, config, out);
    }
}

fn socket_checks(
    host: &dyn Host,
    fpm: &PhpFpm,
    pool: &Pool,
    id: &str,
    worker: Option<&Identity>,
    config: &Config,
    out: &mut Vec<Check>,
) {
    let service = service_name(fpm);
    let Some(listen) = &pool.listen else {
        out.push(Check::skip(
            format!("{id}.socket"),
            Area::Services,
            format!("PHP-FPM pool {} socket", pool.name),
            format!("pool {} has no `listen` directive", pool.name),
        ));
        return;
    };
    let address = &listen.value;
    let title = format!(
        "PHP-FPM pool {} accepts connections on {address}",
        pool.name
    );
    let mut meta = None;
    if let Address::Unix(path) = address {
        match host.metadata(path) {
            Ok(m) if m.kind != FileKind::Socket => {
                out.push(
                    Check::fail(format!("{id}.socket"), Area::Services, title)
                        .detail(format!("{} exists but is not a socket", path.display()))
                        .cause(CauseId::UpstreamDown)
                        .fix(format!(
                            "remove {} and restart PHP-FPM: `systemctl restart {service}`",
                            path.display()
                        )),
                );
                return;
            }
            Ok(m) => meta = Some(m),
            Err(err) if err.is_not_found() => {
                out.push(
                    Check::fail(format!("{id}.socket"), Area::Services, title)
                        .detail(format!(
                            "the socket {} does not exist (nginx gets `(2: No such file or directory)`); `listen` is set at {}",
                            path.display(),
                            listen.origin
                        ))
                        .cause(CauseId::UpstreamDown)
                        .fix(format!(
                            "restart PHP-FPM so it creates the socket: `systemctl restart {service}`; if the pool's `listen` and nginx's `fastcgi_pass` differ, make them the same path"
                        )),
                );
                return;
            }
            Err(_) => {}
        }
    }
    let outcome = host.connect(&address.endpoint(), probe_timeout(config));
    if outcome.connected {
        out.push(
            Check::ok(format!("{id}.socket"), Area::Services, title)
                .detail(format!("connected in {} ms", outcome.millis))
                .metric("connect_ms", outcome.millis as f64, Some("ms")),
        );
    } else {
        let (cause, fix) = match outcome.errno {
            Some(libc::EAGAIN) => (
                CauseId::UpstreamSaturated,
                format!("the listen queue is full: raise `pm.max_children` for pool {} or find the slow requests (slowlog)", pool.name),
            ),
            Some(libc::EACCES) => (
                CauseId::UpstreamSocketPermission,
                "see the socket-permission check".to_string(),
            ),
            _ => (
                CauseId::UpstreamDown,
                format!("restart PHP-FPM: `systemctl restart {service}` and read its error log for why it stopped"),
            ),
        };
        out.push(
            Check::fail(format!("{id}.socket"), Area::Services, title)
                .detail(format!(
                    "connect to {address} failed {}",
                    errno_text(&outcome)
                ))
                .cause(cause)
                .fix(fix),
        );
    }
    // Permission of the unix socket against the nginx worker user.
    let (Address::Unix(path), Some(meta)) = (address, meta) else {
        return;
    };
    let perm_id = format!("{id}.socket-permission");
    let perm_title = format!("nginx may open the socket of pool {}", pool.name);
    let Some(worker) = worker else {
        out.push(Check::skip(
            perm_id,
            Area::Services,
            perm_title,
            "the nginx worker user is not known (no nginx workers, no `user` directive resolvable in /etc/passwd)",
        ));
        return;
    };
    let owner = super::id_name(host, "/etc/passwd", meta.uid);
    let group = super::id_name(host, "/etc/group", meta.gid);
    let now = format!(
        "{} is owned by {owner}:{group} with mode {:04o}; nginx workers run as {}:{}",
        path.display(),
        meta.mode,
        worker.user,
        worker.group
    );
    if may_connect(worker, &meta) {
        out.push(Check::ok(perm_id, Area::Services, perm_title).detail(now));
        return;
    }
    let acl_user = pool
        .listen_acl_users
        .as_ref()
        .is_some_and(|a| a.value.split(',').any(|u| u.trim() == worker.user));
    let acl_group = pool
        .listen_acl_groups
        .as_ref()
        .is_some_and(|a| a.value.split(',').any(|g| g.trim() == worker.group));
    if acl_user || acl_group {
        out.push(
            Check::ok(perm_id, Area::Services, perm_title).detail(format!(
                "{now}; access is granted by the pool's listen.acl_* ACL"
            )),
        );
        return;
    }
    let at = |s: &Option<crate::discover::Sourced<String>>, key: &str| match s {
        Some(v) => format!("{key} (now `{}` at {})", v.value, v.origin),
        None => format!("{key} (not set)"),
    };
    let file = match &pool.origin {
        crate::discover::Origin::File { path, .. } => path.display().to_string(),
        other => other.to_string(),
    };
    out.push(
        Check::fail(perm_id, Area::Services, perm_title)
            .detail(format!(
                "{now}: nginx gets `(13: Permission denied) while connecting to upstream`. {}, {}, {}",
                at(&pool.listen_owner, "listen.owner"),
                at(&pool.listen_group, "listen.group"),
                at(&pool.listen_mode, "listen.mode")
            ))
            .cause(CauseId::UpstreamSocketPermission)
            .fix(format!(
                "in {file}, pool [{}]: set `listen.owner = {}`, `listen.group = {}`, `listen.mode = 0660`, then `systemctl restart {service}`",
                pool.name, worker.user, worker.group
            )),
    );
}

fn upstream_checks(host: &dyn Host, d: &Discovery, config: &Config, out: &mut Vec<Check>) {
    let Some(nginx) = &d.nginx else {
        return;
    };
    let mut addresses: BTreeSet<Address> = BTreeSet::new();
    for target in &nginx.upstream_targets {
        if let Some(a) = &target.address {
            addresses.insert(a.clone());
        }
        if let Some(group) = &target.group {
            if let Some(g) = nginx.upstream_groups.iter().find(|g| &g.name == group) {
                addresses.extend(g.servers.iter().cloned());
            }
        }
    }
    // Named upstreams resolve through DNS, which the connect timeout does not bound: the whole
    // sweep gets a budget, and what is left after it is skipped with the reason.
    let started = std::time::Instant::now();
    let budget = config
        .command_timeout
        .max(std::time::Duration::from_secs(5));
    for address in addresses.into_iter().take(MAX_UPSTREAMS) {
        let id = format!("upstream.{address}.connect");
        let title = format!("upstream {address} accepts connections");
        if host.is_live() && started.elapsed() > budget {
            out.push(Check::skip(
                id,
                Area::Services,
                title,
                format!(
                    "not tried: the upstream checks used their {} s budget",
                    budget.as_secs()
                ),
            ));
            continue;
        }
        let outcome = host.connect(&address.endpoint(), probe_timeout(config));
        let used_by: Vec<String> = nginx
            .upstream_targets
            .iter()
            .filter(|t| t.address.as_ref() == Some(&address))
            .map(|t| t.origin.to_string())
            .chain(
                nginx
                    .upstream_groups
                    .iter()
                    .filter(|g| g.servers.contains(&address))
                    .map(|g| format!("upstream {} ({})", g.name, g.origin)),
            )
            .take(3)
            .collect();
        if outcome.connected {
            out.push(
                Check::ok(id, Area::Services, title)
                    .detail(format!("connected in {} ms", outcome.millis))
                    .metric("connect_ms", outcome.millis as f64, Some("ms")),
            );
        } else {
            let cause = match outcome.errno {
                Some(libc::EAGAIN) => CauseId::UpstreamSaturated,
                Some(libc::EACCES) => CauseId::UpstreamSocketPermission,
                Some(libc::ETIMEDOUT) => CauseId::UpstreamTimeout,
                _ => CauseId::UpstreamDown,
            };
            out.push(
                Check::fail(id, Area::Services, title)
                    .detail(format!(
                        "connect failed {}{}",
                        errno_text(&outcome),
                        if used_by.is_empty() {
                            String::new()
                        } else {
                            format!("; used at {}", used_by.join(", "))
                        }
                    ))
                    .cause(cause)
                    .fix(format!(
                        "start the service behind {address}, or correct the address in the nginx config"
                    )),
            );
        }
    }
}

fn db_checks(host: &dyn Host, d: &Discovery, config: &Config, out: &mut Vec<Check>) {
    let Some(db) = &d.database else {
        out.push(Check::skip(
            "db.running",
            Area::Services,
            "database",
            "no mysqld/mariadbd process and no my.cnf found",
        ));
        return;
    };
    let unit = if db.flavor == "mariadb" {
        "mariadb"
    } else {
        "mysql"
    };
    match &db.process {
        None => {
            out.push(
                Check::fail(
                    "db.running",
                    Area::Services,
                    format!("{unit} is not running"),
                )
                .detail(format!(
                    "no mysqld/mariadbd process; config files: {}",
                    db.config_files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .cause(CauseId::DbDown)
                .fix(format!(
                    "`systemctl start {unit}`; why it stopped is in {}",
                    db.error_log
                        .as_ref()
                        .map(|l| l.value.display().to_string())
                        .unwrap_or_else(|| format!("`journalctl -u {unit}`"))
                )),
            );
        }
        Some(p) => out.push(
            Check::ok("db.running", Area::Services, format!("{unit} is running"))
                .detail(format!("pid {}", p.pid)),
        ),
    }
    let mut endpoints = Vec::new();
    let socket = db
        .socket
        .as_ref()
        .map(|s| s.value.clone())
        .unwrap_or_else(|| PathBuf::from("/run/mysqld/mysqld.sock"));
    endpoints.push(Endpoint::Unix(socket));
    let skip_networking = db.bind_address.is_none()
        && db.port.is_none()
        && db
            .process
            .as_ref()
            .is_some_and(|p| p.cmdline.contains("--skip-networking"));
    if !skip_networking {
        let port = db.port.as_ref().map(|p| p.value).unwrap_or(3306);
        let host_part = match db.bind_address.as_ref().map(|b| b.value.as_str()) {
            None | Some("0.0.0.0") | Some("*") | Some("::") => "127.0.0.1".to_string(),
            Some(addr) if addr.contains(':') => format!("[{addr}]"),
            Some(addr) => addr.split(',').next().unwrap_or(addr).trim().to_string(),
        };
        endpoints.push(Endpoint::Tcp(format!("{host_part}:{port}")));
    }
    let mut failures = Vec::new();
    for ep in &endpoints {
        let outcome = host.connect(ep, probe_timeout(config));
        if outcome.connected {
            out.push(
                Check::ok(
                    "db.connect",
                    Area::Services,
                    format!("{unit} accepts connections"),
                )
                .detail(format!("connected to {ep} in {} ms", outcome.millis)),
            );
            return;
        }
        failures.push(format!("{ep} {}", errno_text(&outcome)));
    }
    out.push(
        Check::fail(
            "db.connect",
            Area::Services,
            format!("{unit} refuses connections"),
        )
        .detail(format!("connect failed: {}", failures.join("; ")))
        .cause(CauseId::DbDown)
        .fix(format!(
            "restart it: `systemctl restart {unit}` and read its error log"
        )),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::check::Status;
    use crate::discover::{discover, testdata};

    const SOCK: &str = "/run/php/php8.2-fpm.sock";

    fn run(host: &crate::host::fixture::FixtureHost) -> Vec<Check> {
        let d = discover(host, &Config::default());
        checks(host, &d, &Config::default())
    }

    fn get<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks.iter().find(|c| c.id == id).unwrap_or_else(|| {
            panic!(
                "no {id} in {:?}",
                checks.iter().map(|c| &c.id).collect::<Vec<_>>()
            )
        })
    }

    fn healthy() -> crate::host::fixture::FixtureHost {
        testdata::stack()
            .socket(SOCK, 33, 33, 0o660)
            .listening(&Endpoint::Unix(SOCK.into()))
            .listening(&Endpoint::Unix("/run/mysqld/mysqld.sock".into()))
            .file(
                "/proc/net/tcp",
                "  sl local rem st\n   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n",
            )
            .dir("/proc/100/fd")
            .link("/proc/100/fd/6", "socket:[4242]")
    }

    #[test]
    fn a_healthy_stack_is_all_ok() {
        let checks = run(&healthy());
        for id in [
            "nginx.running",
            "nginx.listening",
            "php-fpm.pool.www.running",
            "php-fpm.pool.www.socket",
            "php-fpm.pool.www.socket-permission",
            "upstream.unix:/run/php/php8.2-fpm.sock.connect",
            "db.running",
            "db.connect",
        ] {
            let c = get(&checks, id);
            assert_eq!(c.status, Status::Ok, "{id}: {}", c.detail);
        }
        assert!(get(&checks, "nginx.listening")
            .detail
            .contains("0.0.0.0:80"));
    }

    #[test]
    fn a_missing_socket_and_a_refusing_one_are_upstream_down() {
        let host = testdata::stack();
        let checks = run(&host);
        let c = get(&checks, "php-fpm.pool.www.socket");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.cause, Some(CauseId::UpstreamDown));
        assert!(c.detail.contains("does not exist"));
        let host = testdata::stack()
            .socket(SOCK, 33, 33, 0o660)
            .refusing(&Endpoint::Unix(SOCK.into()), libc::ECONNREFUSED);
        let checks = run(&host);
        let c = get(&checks, "php-fpm.pool.www.socket");
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("(111: Connection refused)"),
            "{}",
            c.detail
        );
        assert!(!c.detail.contains("os error"), "{}", c.detail);
        assert_eq!(
            get(&checks, "upstream.unix:/run/php/php8.2-fpm.sock.connect").status,
            Status::Fail
        );
    }

    #[test]
    fn a_root_only_socket_is_a_permission_failure_with_the_fix() {
        let host = testdata::stack()
            .socket(SOCK, 0, 0, 0o600)
            .listening(&Endpoint::Unix(SOCK.into()));
        let checks = run(&host);
        let c = get(&checks, "php-fpm.pool.www.socket-permission");
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        assert_eq!(c.cause, Some(CauseId::UpstreamSocketPermission));
        let fix = c.fix.as_ref().unwrap();
        assert!(fix.contains("/etc/php/8.2/fpm/pool.d/www.conf"), "{fix}");
        assert!(fix.contains("listen.owner = www-data"), "{fix}");
        assert!(fix.contains("listen.mode = 0660"), "{fix}");
        assert!(c.detail.contains("mode 0600"), "{}", c.detail);
    }

    #[test]
    fn stopped_services_fail_with_their_causes() {
        let host = crate::host::fixture::FixtureHost::new()
            .file("/etc/nginx/nginx.conf", testdata::NGINX_CONF)
            .file("/etc/php/8.2/fpm/php-fpm.conf", testdata::FPM_CONF)
            .file("/etc/php/8.2/fpm/pool.d/www.conf", testdata::WWW_CONF)
            .file("/etc/mysql/my.cnf", "[mysqld]\n");
        let checks = run(&host);
        let c = get(&checks, "nginx.running");
        assert_eq!((c.status, c.cause), (Status::Fail, Some(CauseId::WebDown)));
        let c = get(&checks, "php-fpm.pool.www.running");
        assert_eq!(
            (c.status, c.cause),
            (Status::Fail, Some(CauseId::UpstreamDown))
        );
        assert!(c.fix.as_ref().unwrap().contains("php8.2-fpm"));
        let c = get(&checks, "db.running");
        assert_eq!((c.status, c.cause), (Status::Fail, Some(CauseId::DbDown)));
    }

    #[test]
    fn permission_rules() {
        let who = Identity {
            uid: 33,
            gid: 33,
            groups: vec![100],
            user: "www-data".into(),
            group: "www-data".into(),
        };
        let meta = |uid, gid, mode| FileMeta {
            kind: FileKind::Socket,
            mode,
            uid,
            gid,
            size: 0,
            mtime: 0,
            dev: 0,
            ino: 0,
        };
        assert!(may_connect(&who, &meta(33, 0, 0o600)));
        assert!(!may_connect(&who, &meta(0, 0, 0o660)));
        assert!(may_connect(&who, &meta(0, 100, 0o660)));
        assert!(!may_connect(&who, &meta(0, 33, 0o600)));
        assert!(may_connect(&who, &meta(0, 0, 0o666)));
    }
}
