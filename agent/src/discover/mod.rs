//! Zero-config discovery of the web stack: nginx (and Apache httpd), PHP-FPM masters and pools,
//! MySQL/MariaDB, from running processes and the configs they name, then distro defaults; the
//! agent's config overrides every path. The result is [`Discovery`] (see [`model`]).
//!
//! - [`process`]: the process table and what each process is;
//! - [`trust`]: which processes, configs and binaries the root agent believes (applied here);
//! - [`accounts`]: user and group names and ids (`/etc/passwd`, `/etc/group`);
//! - [`nginx`], [`apache`], [`php_fpm`], [`mysql`]: the config parsers (bytes in, values with file:line out);
//! - [`logs`]: every log file to read, from what was discovered and the agent's `logs.*`.

pub mod accounts;
pub mod apache;
pub mod logs;
pub mod model;
pub mod mysql;
pub mod nginx;
pub mod php_fpm;
pub mod process;
pub mod trust;

pub use logs::log_files;
pub use model::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::host::{Command, Host, HostExt};

use process::{Proc, Role};

/// The default nginx config on Debian/Ubuntu/RHEL.
/// The most bytes a server's main config and all its includes may hold together, for every
/// server whose config is read (nginx, Apache, PHP-FPM, MySQL): hosting panels include files
/// from customers' directories, and 512 files of the per-file read bound would be gigabytes.
pub const MAX_CONFIG_BYTES: u64 = 32 * 1024 * 1024;

pub const NGINX_DEFAULT_CONFIG: &str = "/etc/nginx/nginx.conf";
/// Debian's compiled-in error log (`--error-log-path`).
pub const NGINX_DEFAULT_ERROR_LOG: &str = "/var/log/nginx/error.log";
/// Debian's compiled-in prefix.
pub const NGINX_DEFAULT_PREFIX: &str = "/usr/share/nginx";

/// Finds the stack on `host`.
pub fn discover(host: &dyn Host, config: &Config) -> Discovery {
    let (procs, untrusted) = crate::trust::partition(host, process::list(host));
    let mut discovery = Discovery {
        untrusted,
        ..Discovery::default()
    };
    if procs.is_empty() {
        discovery.notes.push(no_process_note(host).into());
    }
    discover_nginx(host, config, &procs, &mut discovery);
    discover_php_fpm(host, config, &procs, &mut discovery);
    discover_database(host, config, &procs, &mut discovery);
    discover_apache(host, config, &procs, &mut discovery);
    discovery
}

/// Why discovery found no stack process: /proc could not be listed, or nothing of the stack runs.
fn no_process_note(host: &dyn Host) -> &'static str {
    match host.read_dir(Path::new("/proc")) {
        Ok(names) if names.iter().any(|n| n.parse::<u32>().is_ok()) => {
            "no web-stack process running (nginx, Apache, PHP-FPM, MySQL/MariaDB): discovery from files only"
        }
        _ => "no process list (/proc unreadable or empty): discovery from files only",
    }
}

/// The number of CPUs the host has online (`/sys/devices/system/cpu/online`, else cpuinfo).
pub fn cpu_count(host: &dyn Host) -> Option<u32> {
    if let Ok(text) = host.read_text(Path::new("/sys/devices/system/cpu/online")) {
        let mut n = 0u32;
        for part in text.trim().split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                    n += b.checked_sub(a)? + 1;
                }
                None if !part.is_empty() => {
                    part.parse::<u32>().ok()?;
                    n += 1
                }
                None => {}
            }
        }
        if n > 0 {
            return Some(n);
        }
    }
    let text = host.read_text(Path::new("/proc/cpuinfo")).ok()?;
    let n = text.lines().filter(|l| l.starts_with("processor")).count() as u32;
    (n > 0).then_some(n)
}

/// The nginx binary to run (`-V`, `-T`): the configured one, else the distro's, checked by
/// [`crate::trust::known_binary`]; never the running master's `/proc/PID/exe`.
fn nginx_binary(host: &dyn Host, config: &Config, notes: &mut Vec<String>) -> Option<PathBuf> {
    match crate::trust::known_binary(
        host,
        config.nginx_binary.as_deref(),
        crate::trust::NGINX_PATHS,
    ) {
        Ok(path) => Some(path),
        Err(why) => {
            let note = format!("nginx: not run ({why})");
            if !notes.contains(&note) {
                notes.push(note);
            }
            None
        }
    }
}

fn nginx_v(
    host: &dyn Host,
    config: &Config,
    notes: &mut Vec<String>,
) -> (Option<PathBuf>, Option<PathBuf>) {
    let Some(binary) = nginx_binary(host, config, notes) else {
        return (None, None);
    };
    let cmd = Command::new(&binary.display().to_string(), &["-V"]).timeout(config.command_timeout);
    let Ok(out) = host.run(&cmd) else {
        return (None, None);
    };
    // nginx -V writes to stderr.
    let text = format!("{}{}", out.stderr, out.stdout_text());
    let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    (
        process::option_value(&words, None, Some("--conf-path")).map(PathBuf::from),
        process::option_value(&words, None, Some("--prefix")).map(PathBuf::from),
    )
}

/// `nginx -T` output, when the binary runs and prints a configuration.
fn nginx_dump(
    host: &dyn Host,
    config: &Config,
    notes: &mut Vec<String>,
    conf: &Path,
    prefix: Option<&Path>,
) -> Option<String> {
    let binary = nginx_binary(host, config, notes)?;
    let conf = conf.display().to_string();
    let mut args = vec!["-T", "-q", "-c", conf.as_str()];
    let prefix = prefix.map(|p| p.display().to_string());
    if let Some(p) = &prefix {
        args.extend(["-p", p.as_str()]);
    }
    let cmd = Command::new(&binary.display().to_string(), &args).timeout(config.command_timeout);
    let out = host.run(&cmd).ok()?;
    let text = out.stdout_text();
    text.contains("# configuration file ").then_some(text)
}

fn load_nginx(
    host: &dyn Host,
    config: &Config,
    config_path: &Path,
    prefix: Option<PathBuf>,
    cpus: u32,
    notes: &mut Vec<String>,
) -> Nginx {
    let prefix_dir = prefix
        .clone()
        .unwrap_or_else(|| PathBuf::from(NGINX_DEFAULT_PREFIX));
    let loaded = nginx::load(host, config_path).or_else(|err| match err {
        nginx::NginxConfigError::Read { .. } => {
            match nginx_dump(host, config, notes, config_path, prefix.as_deref()) {
                Some(dump) => {
                    notes.push(format!(
                        "nginx: {} not readable ({err}); config read from `nginx -T`",
                        config_path.display()
                    ));
                    nginx::load_dump(&dump, config_path)
                }
                None => Err(err),
            }
        }
        other => Err(other),
    });
    let mut nginx = match loaded {
        Ok(loaded) => {
            for w in &loaded.warnings {
                notes.push(format!("nginx: {w}"));
            }
            let mut n = nginx::extract(&loaded.directives, &prefix_dir, cpus);
            n.config_files = loaded.files;
            // Without a main-context error_log, nginx writes its own errors to the compiled-in
            // path as well (servers' error_log only take their requests' errors).
            let main_level = loaded.directives.iter().any(|d| d.name == "error_log");
            let default = PathBuf::from(NGINX_DEFAULT_ERROR_LOG);
            if !main_level
                && !n.error_logs.is_empty()
                && !n.error_logs.iter().any(|l| l.value == default)
                && host.metadata(&default).is_ok()
            {
                n.error_logs.push(Sourced::default_value(default));
            }
            n
        }
        Err(err) => {
            notes.push(format!("nginx: config not read: {err}"));
            Nginx {
                config_error: Some(err.to_string()),
                ..Nginx::default()
            }
        }
    };
    nginx.config_path = Some(config_path.to_path_buf());
    nginx.prefix = prefix;
    if nginx.config_error.is_none() {
        if nginx.error_logs.is_empty() {
            nginx.error_logs.push(Sourced::default_value(PathBuf::from(
                NGINX_DEFAULT_ERROR_LOG,
            )));
        }
        if nginx.access_logs.is_empty() {
            nginx.access_logs.push(AccessLog {
                path: PathBuf::from("/var/log/nginx/access.log"),
                format_name: "combined".into(),
                format: Some(nginx::COMBINED.to_string()),
                origin: Origin::Default,
            });
        }
    }
    nginx
}

fn discover_nginx(host: &dyn Host, config: &Config, procs: &[Proc], d: &mut Discovery) {
    let cpus = cpu_count(host).unwrap_or(1);
    let mut found: Vec<Nginx> = Vec::new();
    for master in procs {
        let Role::NginxMaster { config: c, prefix } = process::role(master) else {
            continue;
        };
        // A new master during a binary upgrade is a child of the old one: skip it.
        if procs
            .iter()
            .any(|p| p.pid == master.ppid && matches!(process::role(p), Role::NginxMaster { .. }))
        {
            continue;
        }
        let (mut conf, mut prefix) = (c, prefix);
        if conf.is_none() || prefix.is_none() {
            let (v_conf, v_prefix) = nginx_v(host, config, &mut d.notes);
            if conf.is_none() {
                conf = v_conf;
            }
            if prefix.is_none() {
                prefix = v_prefix;
            }
        }
        let from_cmdline = conf.is_some();
        let mut conf = conf.unwrap_or_else(|| PathBuf::from(NGINX_DEFAULT_CONFIG));
        if conf.is_relative() {
            conf = prefix
                .clone()
                .unwrap_or_else(|| PathBuf::from(NGINX_DEFAULT_PREFIX))
                .join(conf);
        }
        let mut n = load_nginx(host, config, &conf, prefix, cpus, &mut d.notes);
        let workers: Vec<u32> = procs
            .iter()
            .filter(|p| {
                p.ppid == master.pid
                    && match process::role(p) {
                        Role::NginxWorker => true,
                        // Just forked, still wearing the master's title (a new master of a
                        // binary upgrade has children of its own).
                        Role::NginxMaster { .. } => !procs.iter().any(|q| q.ppid == p.pid),
                        _ => false,
                    }
            })
            .map(|p| p.pid)
            .collect();
        d.notes.push(format!(
            "nginx: master pid {} with {} worker(s), config {} {}",
            master.pid,
            workers.len(),
            conf.display(),
            if from_cmdline {
                "from its command line"
            } else {
                "(default path)"
            }
        ));
        // `-e FILE` replaces the compiled-in error log for nginx's own start-up messages.
        let words = master.words();
        if let Some(elog) = process::option_value(&words, Some("-e"), None) {
            let path = PathBuf::from(&elog);
            if elog != "stderr" && !n.error_logs.iter().any(|l| l.value == path) {
                n.error_logs
                    .push(Sourced::new(path, Origin::Process { pid: master.pid }));
            }
        }
        n.master = Some(master.info(process::children(procs, master.pid)));
        n.workers = workers;
        found.push(n);
    }
    let wanted = config.nginx_config.as_deref();
    let primary = match wanted {
        Some(path) => found
            .iter()
            .position(|n| n.config_path.as_deref() == Some(path)),
        None => found
            .iter()
            .position(|n| n.config_path.as_deref() == Some(Path::new(NGINX_DEFAULT_CONFIG)))
            .or(if found.is_empty() { None } else { Some(0) }),
    };
    match primary {
        Some(i) => {
            let n = found.remove(i);
            d.nginx = Some(n);
        }
        None => {
            // Not running (or not the one named): read the config named, or the default.
            let path = wanted
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(NGINX_DEFAULT_CONFIG));
            if wanted.is_some() || host.metadata(&path).is_ok() {
                d.notes.push(format!(
                    "nginx: no running master uses {}; config read from {}",
                    path.display(),
                    if wanted.is_some() {
                        "the agent's config"
                    } else {
                        "the distro default path"
                    }
                ));
                d.nginx = Some(load_nginx(host, config, &path, None, cpus, &mut d.notes));
            } else if found.is_empty() {
                d.notes
                    .push("nginx: not found (no master process, no /etc/nginx/nginx.conf)".into());
            }
        }
    }
    d.other_nginx = found;
}

fn discover_php_fpm(host: &dyn Host, config: &Config, procs: &[Proc], d: &mut Discovery) {
    let masters: Vec<(&Proc, Option<PathBuf>)> = procs
        .iter()
        .filter_map(|p| match process::role(p) {
            Role::PhpFpmMaster { config } => Some((p, config)),
            _ => None,
        })
        .collect();
    let mut configs: Vec<(PathBuf, Option<&Proc>, &str)> = Vec::new();
    if let Some(paths) = &config.php_fpm_configs {
        for path in paths {
            let master = masters
                .iter()
                .find(|(_, c)| c.as_deref() == Some(path.as_path()))
                .map(|(p, _)| *p);
            configs.push((path.clone(), master, "the agent's config"));
        }
    } else if !masters.is_empty() {
        for (master, conf) in &masters {
            let path = match conf {
                Some(c) => c.clone(),
                None => match master.exe.as_deref().and_then(php_fpm::version_from_path) {
                    Some(v) => PathBuf::from(format!("/etc/php/{v}/fpm/php-fpm.conf")),
                    None => PathBuf::from("/etc/php-fpm.conf"),
                },
            };
            configs.push((path, Some(*master), "its command line"));
        }
    } else {
        let mut defaults = host.glob("/etc/php/*/fpm/php-fpm.conf");
        for extra in ["/etc/php-fpm.conf", "/usr/local/etc/php-fpm.conf"] {
            if host.metadata(Path::new(extra)).is_ok() {
                defaults.push(PathBuf::from(extra));
            }
        }
        for path in defaults {
            configs.push((path, None, "the distro default path"));
        }
        if configs.is_empty() {
            d.notes
                .push("php-fpm: not found (no master process, no php-fpm.conf)".into());
        }
    }
    for (path, master, how) in configs {
        let mut fpm = match php_fpm::load(host, &path) {
            Ok((entries, files, warnings)) => {
                for w in warnings {
                    d.notes.push(format!("php-fpm: {w}"));
                }
                let mut fpm = php_fpm::build(&entries, &path);
                fpm.config_files = files;
                fpm
            }
            Err(err) => {
                d.notes.push(format!(
                    "php-fpm: config {} not read: {err}",
                    path.display()
                ));
                PhpFpm {
                    config_path: path.clone(),
                    config_error: Some(err.to_string()),
                    version: php_fpm::version_from_path(&path),
                    ..PhpFpm::default()
                }
            }
        };
        if let Some(master) = master {
            for pool in &mut fpm.pools {
                pool.workers = procs
                    .iter()
                    .filter(|p| {
                        p.ppid == master.pid
                            && process::role(p)
                                == Role::PhpFpmWorker {
                                    pool: pool.name.clone(),
                                }
                    })
                    .map(|p| p.pid)
                    .collect();
            }
            if fpm.version.is_none() {
                fpm.version = master.exe.as_deref().and_then(php_fpm::version_from_path);
            }
            fpm.master = Some(master.info(process::children(procs, master.pid)));
        }
        d.notes.push(format!(
            "php-fpm: {} config {} from {how}, pools: {}",
            match master {
                Some(m) => format!("master pid {},", m.pid),
                None => "not running,".to_string(),
            },
            path.display(),
            fpm.pools
                .iter()
                .map(|p| format!("{} ({} workers)", p.name, p.workers.len()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        d.php_fpm.push(fpm);
    }
}

/// One server's view: its config files read (as it would) and its command line on top.
fn database_view(
    host: &dyn Host,
    config: &Config,
    server: Option<&Proc>,
) -> (Database, Vec<String>) {
    let words = server.map(Proc::words).unwrap_or_default();
    let no_defaults = words.iter().any(|w| w == "--no-defaults");
    let defaults_file = process::option_value(&words, None, Some("--defaults-file"));
    let main = config.mysql_config.clone().or_else(|| {
        if no_defaults {
            return None;
        }
        defaults_file.map(PathBuf::from).or_else(|| {
            ["/etc/mysql/my.cnf", "/etc/my.cnf"]
                .iter()
                .map(PathBuf::from)
                .find(|p| host.metadata(p).is_ok())
        })
    });
    let (mut options, files, warnings) = match &main {
        Some(main) => mysql::load(host, main),
        None => Default::default(),
    };
    let mut mariadb = files
        .iter()
        .any(|f| f.display().to_string().contains("mariadb"));
    if let Some(p) = server {
        mysql::apply_cmdline(&mut options, &words, p.pid);
        if let Role::Database { mariadb: m } = process::role(p) {
            mariadb |= m;
        }
    }
    (mysql::build(&options, files, mariadb), warnings)
}

fn discover_database(host: &dyn Host, config: &Config, procs: &[Proc], d: &mut Discovery) {
    let servers: Vec<&Proc> = procs
        .iter()
        .filter(|p| {
            matches!(process::role(p), Role::Database { .. })
                && !procs
                    .iter()
                    .any(|q| q.pid == p.ppid && matches!(process::role(q), Role::Database { .. }))
        })
        .collect();
    let pinned = config.mysql_socket.is_some() || config.mysql_port.is_some();
    let mut chosen: Option<(&Proc, Database, Vec<String>)> = None;
    for server in &servers {
        let (db, warnings) = database_view(host, config, Some(server));
        // When the agent's config names a socket or port, the server must use it.
        let matches = !pinned
            || config
                .mysql_socket
                .as_ref()
                .is_some_and(|s| db.socket.as_ref().is_some_and(|x| &x.value == s))
            || config
                .mysql_port
                .is_some_and(|p| db.port.as_ref().is_some_and(|x| x.value == p));
        if matches {
            chosen = Some((server, db, warnings));
            break;
        }
    }
    if pinned && chosen.is_none() && !servers.is_empty() {
        d.notes.push(format!(
            "database: {} server(s) run, none on the socket/port the agent's config names",
            servers.len()
        ));
    }
    let (server, mut db, warnings) = match chosen {
        Some((p, db, w)) => (Some(p), db, w),
        None => {
            let (db, w) = database_view(host, config, None);
            (None, db, w)
        }
    };
    if server.is_none() && db.config_files.is_empty() && !pinned {
        d.notes
            .push("database: not found (no mysqld/mariadbd process, no my.cnf)".into());
        return;
    }
    for w in warnings {
        d.notes.push(format!("database: {w}"));
    }
    if let Some(socket) = &config.mysql_socket {
        db.socket = Some(Sourced::new(socket.clone(), Origin::Config));
    }
    if let Some(port) = config.mysql_port {
        db.port = Some(Sourced::new(port, Origin::Config));
    }
    if db.datadir.is_none() {
        db.datadir = Some(Sourced::default_value(PathBuf::from("/var/lib/mysql")));
    }
    if db.error_log.is_none() {
        // No log_error: MariaDB/MySQL write DATADIR/HOSTNAME.err (or to journald on Debian).
        let datadir = db
            .datadir
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        let candidate = datadir.join(format!("{}.err", host.hostname()));
        if host.metadata(&candidate).is_ok() {
            db.error_log = Some(Sourced::default_value(candidate));
        }
    }
    d.notes.push(format!(
        "database: {} {}, {} config file(s)",
        db.flavor,
        match server {
            Some(p) => format!("pid {}", p.pid),
            None => "not running".to_string(),
        },
        db.config_files.len()
    ));
    db.process = server.map(|p| p.info(process::children(procs, p.pid)));
    d.database = Some(db);
}

fn discover_apache(host: &dyn Host, config: &Config, procs: &[Proc], d: &mut Discovery) {
    let masters: Vec<&Proc> = procs
        .iter()
        .filter(|p| {
            process::role(p) == Role::Apache
                && !procs
                    .iter()
                    .any(|q| q.pid == p.ppid && process::role(q) == Role::Apache)
        })
        .collect();
    // The master of the config the agent names, else a root-owned one first (only a root
    // master's command line and environment are believed).
    let wanted = config.apache_config.as_deref();
    let master = match wanted {
        Some(path) => masters
            .iter()
            .find(|p| p.uid == 0 && apache_paths(Some(p)).1 == path)
            .copied(),
        None => masters
            .iter()
            .find(|p| p.uid == 0)
            .or(masters.first())
            .copied(),
    };
    if masters.len() > 1 {
        d.notes.push(format!(
            "apache httpd: {} masters run (pids {}); pid {} is the one audited",
            masters.len(),
            masters
                .iter()
                .map(|p| p.pid.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            master.map_or(0, |m| m.pid)
        ));
    }
    let Some(mut a) = apache_view(host, master, wanted, &mut d.notes) else {
        return;
    };
    if let Some(m) = master {
        a.workers = process::children(procs, m.pid);
        a.master = Some(m.info(a.workers.clone()));
    }
    d.notes.push(format!(
        "apache httpd: {}, config {}{}, mpm {}, {} virtual host(s), listens on {}",
        match master {
            Some(m) => format!("master pid {} with {} child(ren)", m.pid, a.workers.len()),
            None => "not running".into(),
        },
        a.config_path
            .as_ref()
            .map_or("(none)".into(), |p| p.display().to_string()),
        a.config_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (not read: {e})")),
        a.mpm.as_deref().unwrap_or("unknown"),
        a.vhosts.len(),
        a.ports()
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    d.apache = Some(a);
}

/// One httpd's view: its config (from a root master's `-d`/`-f`, else the distro's path), read
/// with the master's environment (Debian's `envvars`) and `-D` defines.
/// The server root and main config a master was started with (`-d`, `-f`; believed of a root
/// master only), else its flavour's defaults.
fn apache_paths(master: Option<&Proc>) -> (PathBuf, PathBuf) {
    let trusted = master.filter(|m| m.uid == 0);
    let words = trusted.map(Proc::words).unwrap_or_default();
    let httpd = master.is_some_and(|m| m.program() == "httpd");
    let (default_root, default_conf) = if httpd {
        ("/etc/httpd", "conf/httpd.conf")
    } else {
        ("/etc/apache2", "apache2.conf")
    };
    let root = process::option_value(&words, Some("-d"), None)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default_root));
    let conf = process::option_value(&words, Some("-f"), None)
        .map(|f| {
            if f.starts_with('/') {
                PathBuf::from(f)
            } else {
                root.join(f)
            }
        })
        .unwrap_or_else(|| root.join(default_conf));
    (root, conf)
}

/// The server root and main config httpd was built with (`-V`: `HTTPD_ROOT`,
/// `SERVER_CONFIG_FILE`), from a binary at a known path ([`crate::trust::APACHE_PATHS`], the
/// master's own first when it is one of them), never the path a process named otherwise.
fn apache_compiled_paths(
    host: &dyn Host,
    master: Option<&Proc>,
    notes: &mut Vec<String>,
) -> Option<(PathBuf, PathBuf)> {
    let named = master
        .and_then(|m| m.words().into_iter().next())
        .filter(|w| crate::trust::APACHE_PATHS.contains(&w.as_str()));
    let binary = match crate::trust::known_binary(
        host,
        named.as_deref().map(Path::new),
        crate::trust::APACHE_PATHS,
    ) {
        Ok(binary) => binary,
        Err(why) => {
            notes.push(format!("apache httpd: -V not run ({why})"));
            return None;
        }
    };
    let cmd = Command::new(&binary.display().to_string(), &["-V"]).timeout(Duration::from_secs(5));
    let out = host.run(&cmd).ok()?;
    let (root, file) = apache::compiled_paths(&out.stdout_text())?;
    let conf = if file.is_absolute() {
        file
    } else {
        root.join(file)
    };
    notes.push(format!(
        "apache httpd: config {} (from {} -V: the command line names none)",
        conf.display(),
        binary.display()
    ));
    Some((root, conf))
}

fn apache_view(
    host: &dyn Host,
    master: Option<&Proc>,
    wanted: Option<&Path>,
    notes: &mut Vec<String>,
) -> Option<Apache> {
    let trusted = master.filter(|m| m.uid == 0);
    let words = trusted.map(Proc::words).unwrap_or_default();
    let flavor = match master.map(Proc::program) {
        Some(p) if p == "httpd" => "httpd",
        Some(_) => "apache2",
        None if host
            .metadata(Path::new("/etc/apache2/apache2.conf"))
            .is_ok() =>
        {
            "apache2"
        }
        None if host
            .metadata(Path::new("/etc/httpd/conf/httpd.conf"))
            .is_ok() =>
        {
            "httpd"
        }
        None if wanted.is_some() => "apache2",
        None => return None,
    };
    let (mut root, mut conf) = apache_paths(master);
    if trusted.is_some()
        && process::option_value(&words, Some("-f"), None).is_none()
        && process::option_value(&words, Some("-d"), None).is_none()
        && host.metadata(&conf).is_err()
    {
        // Neither named on the command line nor where the flavour keeps it (cPanel's httpd in
        // /etc/apache2/conf, a source build in /usr/local/apache2): ask the binary where it
        // was built to look.
        if let Some((r, c)) = apache_compiled_paths(host, master, notes) {
            (root, conf) = (r, c);
        }
    }
    // A config named on a command line is read only when root owns it (the trust model).
    if let Err(why) = crate::trust::file_trusted(host, &conf, &Role::Apache) {
        notes.push(format!("apache httpd: config not read: {why}"));
        let (r, c) = apache_paths(None);
        (root, conf) = (r, c);
    }
    if master.is_none() {
        if let Some(path) = wanted {
            // Not running: the agent's config names the file; its ServerRoot directive (read
            // in order) sets the root, the file's directory until then.
            conf = path.to_path_buf();
            root = path.parent().map(Path::to_path_buf).unwrap_or(root);
        }
        if flavor == "httpd" {
            root = PathBuf::from("/etc/httpd");
            conf = wanted.map_or_else(|| root.join("conf/httpd.conf"), Path::to_path_buf);
        }
    }
    let mut defines = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w == "-D" {
            if let Some(n) = it.next() {
                defines.push(n.clone());
            }
        } else if let Some(n) = w.strip_prefix("-D") {
            defines.push(n.to_string());
        }
    }
    let mut env = host
        .read(Path::new("/etc/apache2/envvars"))
        .ok()
        .filter(|_| flavor == "apache2")
        .map(|b| apache::parse_envvars(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    if let Some(m) = trusted {
        if let Ok(bytes) = host.read(&PathBuf::from(format!("/proc/{}/environ", m.pid))) {
            env.extend(apache::parse_environ(&bytes));
        }
    }
    let mut a = match apache::load(host, &conf, &root, &env, &defines) {
        Ok(loaded) => {
            let mut a = apache::extract(&loaded);
            apache::read_remoteip_lists(host, &mut a);
            for w in &loaded.warnings {
                notes.push(format!("apache httpd: {w}"));
            }
            a
        }
        Err(err) => Apache {
            config_error: Some(err.to_string()),
            error_logs: ["/var/log/apache2/error.log", "/var/log/httpd/error_log"]
                .iter()
                .map(PathBuf::from)
                .filter(|p| host.metadata(p).is_ok())
                .map(Sourced::default_value)
                .collect(),
            ..Apache::default()
        },
    };
    a.flavor = flavor.to_string();
    a.config_path = Some(conf);
    Some(a)
}

/// The timeout used for connect probes and commands started by discovery.
pub fn probe_timeout(config: &Config) -> Duration {
    config.command_timeout.min(Duration::from_secs(3))
}

#[cfg(test)]
pub(crate) mod testdata {
    //! A fixture host with a whole stack: nginx master + 2 workers, PHP-FPM master with a `www`
    //! pool of 2 workers, MariaDB, Apache absent.
    use crate::host::fixture::FixtureHost;

    pub fn status(ppid: u32, uid: u32, rss_kb: u64) -> String {
        format!(
            "Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1\nNgid:\t0\nPid:\t1\nPPid:\t{ppid}\nTracerPid:\t0\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\nFDSize:\t64\nGroups:\t\nVmRSS:\t{rss_kb} kB\nThreads:\t1\n"
        )
    }

    pub const NGINX_CONF: &str = "user www-data;\nworker_processes 2;\nerror_log /var/log/nginx/error.log;\nevents { worker_connections 1024; }\nhttp {\n  access_log /var/log/nginx/access.log;\n  fastcgi_read_timeout 60s;\n  server {\n    listen 80;\n    server_name example.com;\n    location ~ \\.php$ { fastcgi_pass unix:/run/php/php8.2-fpm.sock; }\n  }\n}\n";
    pub const FPM_CONF: &str =
        "[global]\nerror_log = /var/log/php8.2-fpm.log\ninclude=/etc/php/8.2/fpm/pool.d/*.conf\n";
    pub const WWW_CONF: &str = "[www]\nuser = www-data\ngroup = www-data\nlisten = /run/php/php8.2-fpm.sock\nlisten.owner = www-data\nlisten.group = www-data\nlisten.mode = 0660\npm = dynamic\npm.max_children = 5\nrequest_terminate_timeout = 30s\nslowlog = /var/log/php8.2-fpm.$pool.slow.log\n";

    pub fn stack() -> FixtureHost {
        let mut host = FixtureHost::new()
            .file("/sys/devices/system/cpu/online", "0-1\n")
            .file("/etc/hostname", "web1\n")
            .file("/etc/nginx/nginx.conf", NGINX_CONF)
            .file("/etc/php/8.2/fpm/php-fpm.conf", FPM_CONF)
            .file("/etc/php/8.2/fpm/pool.d/www.conf", WWW_CONF)
            .file(
                "/etc/mysql/my.cnf",
                "[mysqld]\nsocket = /run/mysqld/mysqld.sock\ndatadir = /var/lib/mysql\nlog_error = /var/log/mysql/error.log\n",
            )
            .file("/var/log/kern.log", "")
            .file("/etc/group", "root:x:0:\nwww-data:x:33:\n")
            .file("/etc/passwd", "root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\nmysql:x:110:110::/nonexistent:/bin/false\n");
        let procs: &[(u32, u32, u32, &[u8], u64)] = &[
            (
                100,
                1,
                0,
                b"nginx: master process /usr/sbin/nginx -g daemon on; master_process on;\0",
                4000,
            ),
            (101, 100, 33, b"nginx: worker process\0", 6000),
            (102, 100, 33, b"nginx: worker process\0", 6000),
            (
                200,
                1,
                0,
                b"php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)\0\0\0",
                20000,
            ),
            (201, 200, 33, b"php-fpm: pool www\0", 60000),
            (202, 200, 33, b"php-fpm: pool www\0", 40000),
            (300, 1, 110, b"/usr/sbin/mariadbd\0", 90000),
        ];
        for (pid, ppid, uid, cmdline, rss) in procs {
            host = host
                .file(format!("/proc/{pid}/cmdline"), cmdline)
                .file(format!("/proc/{pid}/status"), status(*ppid, *uid, *rss));
        }
        host.link("/proc/100/exe", "/usr/sbin/nginx")
            .link("/proc/200/exe", "/usr/sbin/php-fpm8.2")
            .link("/proc/300/exe", "/usr/sbin/mariadbd")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::fixture::FixtureHost;

    #[test]
    fn finds_the_whole_stack_from_processes() {
        let host = testdata::stack();
        let d = discover(&host, &Config::default());
        let nginx = d.nginx.as_ref().unwrap();
        assert_eq!(nginx.master.as_ref().unwrap().pid, 100);
        assert_eq!(nginx.workers, vec![101, 102]);
        assert_eq!(
            nginx.config_path.as_deref(),
            Some(Path::new(NGINX_DEFAULT_CONFIG))
        );
        assert_eq!(nginx.worker_connections.as_ref().unwrap().value, 1024);
        assert_eq!(d.php_fpm.len(), 1);
        let fpm = &d.php_fpm[0];
        assert_eq!(fpm.master.as_ref().unwrap().pid, 200);
        assert_eq!(fpm.version.as_deref(), Some("8.2"));
        assert_eq!(fpm.pools[0].workers, vec![201, 202]);
        let db = d.database.as_ref().unwrap();
        assert_eq!(db.flavor, "mariadb");
        assert_eq!(db.process.as_ref().unwrap().pid, 300);
        assert_eq!(
            db.error_log.as_ref().unwrap().value,
            PathBuf::from("/var/log/mysql/error.log")
        );
        assert!(d.apache.is_none());
        assert!(
            d.notes.iter().any(|n| n.contains("nginx: master pid 100")),
            "{:?}",
            d.notes
        );
    }

    #[test]
    fn an_empty_host_gives_notes_not_errors() {
        let d = discover(&FixtureHost::new(), &Config::default());
        assert!(d.nginx.is_none() && d.php_fpm.is_empty() && d.database.is_none());
        assert!(d.notes.iter().any(|n| n.contains("nginx: not found")));
    }

    #[test]
    fn agent_config_overrides_and_unreadable_configs_are_noted() {
        let host = testdata::stack()
            .file(
                "/srv/nginx.conf",
                "events {}\nhttp { error_log /srv/err.log; }\n",
            )
            .error(
                "/srv/fpm.conf",
                crate::host::HostError::PermissionDenied {
                    path: "/srv/fpm.conf".into(),
                },
            );
        let config = Config {
            nginx_config: Some(PathBuf::from("/srv/nginx.conf")),
            php_fpm_configs: Some(vec![PathBuf::from("/srv/fpm.conf")]),
            mysql_port: Some(3307),
            ..Config::default()
        };
        let d = discover(&host, &config);
        let nginx = d.nginx.as_ref().unwrap();
        assert!(nginx.master.is_none());
        assert_eq!(nginx.error_logs[0].value, PathBuf::from("/srv/err.log"));
        assert_eq!(d.other_nginx.len(), 1);
        assert!(d.php_fpm[0]
            .config_error
            .as_ref()
            .unwrap()
            .contains("permission denied"));
        assert_eq!(
            d.database.as_ref().unwrap().port.as_ref().unwrap().origin,
            Origin::Config
        );
    }

    #[test]
    fn apache_is_noted_and_a_second_nginx_is_kept_aside() {
        let host = testdata::stack()
            .file("/proc/500/cmdline", b"/usr/sbin/apache2\0-k\0start\0")
            .file("/proc/500/status", testdata::status(1, 0, 1000))
            .file("/proc/501/cmdline", b"/usr/sbin/apache2\0-k\0start\0")
            .file("/proc/501/status", testdata::status(500, 33, 1000))
            .file("/etc/apache2/apache2.conf", "")
            .file("/var/log/apache2/error.log", "")
            .file(
                "/proc/600/cmdline",
                b"nginx: master process nginx -c /srv/other/nginx.conf\0",
            )
            .file("/proc/600/status", testdata::status(1, 0, 1000))
            .file("/srv/other/nginx.conf", "events {}\n");
        let d = discover(&host, &Config::default());
        let apache = d.apache.as_ref().unwrap();
        assert_eq!(apache.master.as_ref().unwrap().pid, 500);
        assert_eq!(apache.master.as_ref().unwrap().children, vec![501]);
        assert_eq!(
            apache.config_path.as_deref(),
            Some(Path::new("/etc/apache2/apache2.conf"))
        );
        assert_eq!(apache.error_logs.len(), 1);
        // The default-config nginx stays the primary one.
        assert_eq!(d.nginx.as_ref().unwrap().master.as_ref().unwrap().pid, 100);
        assert_eq!(d.other_nginx.len(), 1);
        assert_eq!(
            d.other_nginx[0].config_path.as_deref(),
            Some(Path::new("/srv/other/nginx.conf"))
        );
    }

    #[test]
    fn apache_config_from_a_root_masters_command_line_and_environment() {
        let conf = "ServerRoot /srv/httpd\nListen 127.0.0.1:8080\nErrorLog ${APACHE_LOG_DIR}/err.log\nInclude sites/*.conf\n";
        let host = FixtureHost::new()
            .file(
                "/proc/500/cmdline",
                b"/usr/sbin/apache2\0-d\0/srv/httpd\0-f\0/srv/httpd/main.conf\0-DFOREGROUND\0",
            )
            .file("/proc/500/status", testdata::status(1, 0, 1000))
            .file("/proc/500/environ", b"APACHE_LOG_DIR=/srv/logs\0PATH=/bin\0")
            .file("/proc/501/cmdline", b"/usr/sbin/apache2\0-d\0/srv/httpd\0")
            .file("/proc/501/status", testdata::status(500, 33, 1000))
            .file("/srv/httpd/main.conf", conf)
            .file(
                "/srv/httpd/sites/a.conf",
                "<VirtualHost *:8080>\nServerName a.example\nServerAlias b.example\n</VirtualHost>\n",
            );
        let d = discover(&host, &Config::default());
        let a = d.apache.as_ref().unwrap();
        assert_eq!(a.master.as_ref().unwrap().pid, 500);
        assert_eq!(a.workers, vec![501]);
        assert_eq!(
            a.config_path.as_deref(),
            Some(Path::new("/srv/httpd/main.conf"))
        );
        assert_eq!(a.error_logs[0].value, PathBuf::from("/srv/logs/err.log"));
        assert_eq!(a.vhosts[0].host_names(), vec!["a.example", "b.example"]);
        assert_eq!(a.ports().into_iter().collect::<Vec<_>>(), vec![8080]);
        // Not running, the agent's config names the file.
        let host = FixtureHost::new().file("/srv/httpd/main.conf", conf);
        let config = Config {
            apache_config: Some(PathBuf::from("/srv/httpd/main.conf")),
            ..Config::default()
        };
        let a = discover(&host, &config).apache.unwrap();
        assert!(a.master.is_none());
        assert_eq!(a.ports().into_iter().collect::<Vec<_>>(), vec![8080]);
    }

    #[test]
    fn apache_config_from_the_binarys_compiled_paths_when_no_default_exists() {
        // cPanel EasyApache 4: /usr/sbin/httpd, its config in /etc/apache2/conf/httpd.conf.
        let host = testdata::stack()
            .file("/proc/500/cmdline", b"/usr/sbin/httpd\0-k\0start\0")
            .file("/proc/500/status", testdata::status(1, 0, 1000))
            .file("/usr/sbin/httpd", "")
            .file("/etc/apache2/conf/httpd.conf", "ErrorLog logs/error_log\n")
            .command_ok(
                "/usr/sbin/httpd -V",
                "Server version: Apache/2.4.62 (cPanel)\n -D HTTPD_ROOT=\"/etc/apache2\"\n -D SERVER_CONFIG_FILE=\"conf/httpd.conf\"\n",
            );
        let d = discover(&host, &Config::default());
        let apache = d.apache.as_ref().unwrap();
        assert_eq!(
            apache.config_path.as_deref(),
            Some(Path::new("/etc/apache2/conf/httpd.conf"))
        );
        assert!(apache.config_error.is_none(), "{:?}", apache.config_error);
        assert!(d.notes.iter().any(|n| n.contains("-V")), "{:?}", d.notes);
        // A master named by a path outside the known ones is not asked; nothing is run.
        let odd = testdata::stack()
            .file("/proc/500/cmdline", b"/home/u/httpd\0-k\0start\0")
            .file("/proc/500/status", testdata::status(1, 0, 1000))
            .file("/etc/apache2/conf/httpd.conf", "");
        let d = discover(&odd, &Config::default());
        assert!(
            d.notes.iter().any(|n| n.contains("-V not run")),
            "{:?}",
            d.notes
        );
    }

    #[test]
    fn a_non_root_apache_master_is_not_believed() {
        let host = FixtureHost::new()
            .file(
                "/proc/700/cmdline",
                b"/usr/sbin/apache2\0-f\0/home/eve/evil.conf\0",
            )
            .file("/proc/700/status", testdata::status(1, 1000, 1000))
            .file("/home/eve/evil.conf", "Include /etc/shadow\n");
        let d = discover(&host, &Config::default());
        // Neither its process nor the config it names is believed.
        assert!(d.apache.as_ref().is_none_or(|a| a.master.is_none()));
        assert!(!d
            .apache
            .iter()
            .flat_map(|a| &a.config_files)
            .any(|f| f.starts_with("/home/eve")));
    }

    #[test]
    fn an_unreadable_nginx_config_is_read_through_nginx_t() {
        let dump = format!(
            "# configuration file /etc/nginx/nginx.conf:\n{}",
            testdata::NGINX_CONF
        );
        let host = testdata::stack()
            .error(
                "/etc/nginx/nginx.conf",
                crate::host::HostError::PermissionDenied {
                    path: "/etc/nginx/nginx.conf".into(),
                },
            )
            .file("/usr/sbin/nginx", "")
            .command_ok("/usr/sbin/nginx -T -q -c /etc/nginx/nginx.conf", &dump);
        let d = discover(&host, &Config::default());
        let nginx = d.nginx.as_ref().unwrap();
        assert!(nginx.config_error.is_none(), "{:?}", nginx.config_error);
        assert_eq!(nginx.worker_connections.as_ref().unwrap().value, 1024);
        assert!(d.notes.iter().any(|n| n.contains("nginx -T")));
        // Without the binary the error is kept and noted.
        let host = testdata::stack().error(
            "/etc/nginx/nginx.conf",
            crate::host::HostError::PermissionDenied {
                path: "/etc/nginx/nginx.conf".into(),
            },
        );
        let d = discover(&host, &Config::default());
        assert!(d.nginx.as_ref().unwrap().config_error.is_some());
    }

    #[test]
    fn the_database_named_by_socket_is_chosen_among_several() {
        let host = testdata::stack()
            .file(
                "/proc/310/cmdline",
                b"/usr/sbin/mariadbd\0--no-defaults\0--socket=/tmp/b.sock\0--port=3310\0",
            )
            .file("/proc/310/status", testdata::status(1, 0, 1000));
        let pick = |socket: &str| {
            let config = Config {
                mysql_socket: Some(PathBuf::from(socket)),
                ..Config::default()
            };
            let d = discover(&host, &config);
            let db = d.database.unwrap();
            (db.process.map(|p| p.pid), db.port.map(|p| p.value))
        };
        // The first server's socket comes from /etc/mysql/my.cnf, the second's from its
        // command line (it reads no my.cnf).
        assert_eq!(pick("/run/mysqld/mysqld.sock"), (Some(300), None));
        assert_eq!(pick("/tmp/b.sock"), (Some(310), Some(3310)));
        assert_eq!(pick("/tmp/none.sock"), (None, None));
    }

    #[test]
    fn server_only_error_logs_keep_the_default_and_dash_e_adds_one() {
        let host = FixtureHost::new()
            .file(
                "/proc/100/cmdline",
                b"nginx: master process /usr/sbin/nginx -e /srv/start.log\0",
            )
            .file("/proc/100/status", testdata::status(1, 0, 1000))
            .file(
                "/etc/nginx/nginx.conf",
                "events {}\nhttp { server { error_log /srv/site.log; } }\n",
            )
            .file("/var/log/nginx/error.log", "");
        let d = discover(&host, &Config::default());
        let logs: Vec<String> = d
            .nginx
            .unwrap()
            .error_logs
            .iter()
            .map(|l| l.value.display().to_string())
            .collect();
        assert_eq!(
            logs,
            vec![
                "/srv/site.log",
                "/var/log/nginx/error.log",
                "/srv/start.log"
            ]
        );
    }

    #[test]
    fn a_just_forked_worker_with_the_masters_title_counts_as_a_worker() {
        let host = testdata::stack()
            .file(
                "/proc/103/cmdline",
                b"nginx: master process /usr/sbin/nginx -g daemon on; master_process on;\0",
            )
            .file("/proc/103/status", testdata::status(100, 0, 1000));
        let d = discover(&host, &Config::default());
        assert_eq!(d.nginx.as_ref().unwrap().workers, vec![101, 102, 103]);
        assert!(d.other_nginx.is_empty());
    }

    #[test]
    fn cpu_count_from_sys_or_cpuinfo() {
        let host = FixtureHost::new().file("/sys/devices/system/cpu/online", "0-3,6\n");
        assert_eq!(cpu_count(&host), Some(5));
        let host = FixtureHost::new().file("/proc/cpuinfo", "processor\t: 0\nx\nprocessor\t: 1\n");
        assert_eq!(cpu_count(&host), Some(2));
        assert_eq!(cpu_count(&FixtureHost::new()), None);
    }
}

#[cfg(test)]
mod fuzz {
    //! Parsers take any bytes without panicking.
    use super::*;
    use crate::host::fixture::FixtureHost;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn config_parsers_never_panic(text in "[ -~\n\t{};'\"\\\\#$\u{0}-\u{7f}é]{0,400}") {
            let _ = nginx::parse(&text, Path::new("/x.conf"));
            let _ = nginx::load_dump(&text, Path::new("/x.conf"));
            let _ = nginx::parse_time(&text);
            let _ = nginx::parse_size(&text);
            let mut section = String::new();
            let _ = php_fpm::parse(&text, Path::new("/x.conf"), &mut section);
            let _ = php_fpm::parse_time(&text);
            let _ = process::parse_cmdline(text.as_bytes());
            let _ = process::parse_status_ids(&text);
            let host = FixtureHost::new()
                .file("/etc/mysql/my.cnf", &text)
                .file("/etc/nginx/nginx.conf", &text)
                .file("/etc/php/8.2/fpm/php-fpm.conf", &text);
            let d = discover(&host, &Config::default());
            let _ = log_files(&host, &d, &Config::default());
        }
    }
}
