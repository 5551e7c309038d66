//! The real-stack lab: starts real nginx, PHP-FPM 8.2 and (optionally) MariaDB from the Debian
//! packages, as child processes of the test, in a fresh temp dir, on 127.0.0.1 and free ports, so
//! every end-to-end scenario can cause a failure for real and read the real log lines it leaves.
//!
//! # Layout of a lab dir
//!
//! - `nginx.conf`, `fastcgi_params`, `php-fpm.conf`: generated from [`LabOptions`].
//! - `www/`: the docroot, copied from `tests/e2e/lab/www/`: `index.php`, `sleep.php?s=N`,
//!   `memory.php`, `bigheader.php`, `db.php?hold=N[&table=DB.T]`,
//!   `wp-content/plugins/acme-slider/slider.php`.
//! - nginx locations: `~ \.php$` (the pool socket), `/fpm-status` (the pool's status page),
//!   `/refused/` (a TCP FastCGI port where nothing listens), `/nolive/` (an `upstream
//!   php_backend` of two such ports), `/dns/` (a variable `proxy_pass` whose resolver never
//!   answers).
//! - `logs/`: nginx `error.log` (level `warn`) and `access.log` (the catalog's lab format:
//!   combined + `ua= us= urt= rt=`), `php-fpm.log` (master log, `catch_workers_output = yes`),
//!   `php-fpm-access.log`, optional `php-fpm-slow.log` and `php-error.log`, `mariadb.err`, and
//!   each child's stdout/stderr.
//! - `run/`: `php-fpm.sock`, `mysql.sock`, pid files. `state/`: files the PHP scripts write
//!   (`busy.pid`: the worker that holds the latest `sleep.php` request). `mysql/`: the datadir,
//!   a copy of a template made once per mariadbd version under cargo's `target/tmp`.
//!
//! Only one lab runs at a time ([`LAB_LOCK`], taken by [`Lab::start`] and held by the [`Lab`];
//! [`exclusive`] for tests that need no lab running), because the agent's discovery looks at
//! every running process. `Drop` stops every child (SIGTERM, then SIGKILL to its process group)
//! and removes the dir. Children run with RLIMIT_CORE 0. Traffic goes to 127.0.0.1 only, every
//! request has connect/read timeouts, and every wait is bounded.
//!
//! When not root, or nginx / php-fpm8.2 (or MariaDB, when asked for) is not installed,
//! [`Lab::start`] returns [`LabError::Skip`]; use [`start_or_skip`] in tests.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use nix::sys::signal::{kill, killpg};
use nix::unistd::Pid;

/// Serialises labs: at most one lab (and its processes) exists at any time in this test binary.
pub static LAB_LOCK: Mutex<()> = Mutex::new(());

/// The file whose `flock` serialises labs across test processes too: two checkouts' test
/// binaries (or a test binary and a bench) running at once would otherwise each discover the
/// other's nginx and PHP-FPM.
const LAB_LOCK_FILE: &str = "/tmp/origin-agent-e2e-lab.lock";

/// Held while a lab (or a test that must see none) runs: the in-process lock and, when the lock
/// file could be opened, an exclusive `flock` on it, released when the guard drops.
#[derive(Debug)]
pub struct Exclusive {
    _file: Option<nix::fcntl::Flock<fs::File>>,
    _guard: MutexGuard<'static, ()>,
}

/// Takes [`LAB_LOCK`] (and the machine-wide [`LAB_LOCK_FILE`]) without starting a lab: for tests
/// that must see no lab processes (e.g. discovery on the live host). Recovers from a poisoned
/// lock (a panicked test). Waits for another process's lab without a deadline of its own: the
/// holder's labs are bounded, and a killed holder's `flock` is released by the kernel.
pub fn exclusive() -> Exclusive {
    let guard = LAB_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LAB_LOCK_FILE)
        .ok()
        .and_then(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok());
    Exclusive {
        _file: file,
        _guard: guard,
    }
}

/// How long any readiness wait may take.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Default user agent of the lab client (the catalog's lab lines use it).
pub const LAB_UA: &str = "Mozilla/5.0 (lab)";
/// Upper bound on requests per `get_many` call.
pub const MAX_REQUESTS: usize = 2000;
/// Upper bound on client threads per `get_many` call.
pub const MAX_CONCURRENCY: usize = 64;

/// Why a lab could not start or a fault could not be applied.
#[derive(Debug)]
pub enum LabError {
    /// A prerequisite is missing (not root, package not installed): the test should print the
    /// reason and return, not fail.
    Skip(String),
    /// Something went wrong; the message carries the tail of the relevant log.
    Failed(String),
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Skip(reason) => write!(f, "skip: {reason}"),
            LabError::Failed(msg) => write!(f, "lab failed: {msg}"),
        }
    }
}

impl std::error::Error for LabError {}

fn failed(msg: impl Into<String>) -> LabError {
    LabError::Failed(msg.into())
}

fn io_failed(what: &str, path: &Path, err: std::io::Error) -> LabError {
    failed(format!("{what} {}: {err}", path.display()))
}

/// PHP-FPM process manager mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pm {
    Static,
    Dynamic,
    Ondemand,
}

impl Pm {
    fn as_str(self) -> &'static str {
        match self {
            Pm::Static => "static",
            Pm::Dynamic => "dynamic",
            Pm::Ondemand => "ondemand",
        }
    }
}

/// Where Apache httpd sits in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApacheMode {
    /// Apache (event MPM, mod_proxy_fcgi to the pool) answers on the lab port; no nginx.
    Alone,
    /// nginx answers on the lab port and proxies `.php` to Apache on a port of its own (the
    /// cPanel/Plesk layout).
    BehindNginx,
}

/// The lab's knobs. `LabOptions::default()` is a healthy site.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// `pm` of pool `www`.
    pub pm: Pm,
    /// `pm.max_children` (at least 1).
    pub max_children: u32,
    /// `listen.backlog`; `None` keeps PHP-FPM's default (511).
    pub listen_backlog: Option<i32>,
    /// `request_terminate_timeout` in seconds; `None` = 0 (off).
    pub request_terminate_timeout: Option<u32>,
    /// `listen.owner` / `listen.group` / `listen.mode` of the pool socket.
    pub listen_owner: String,
    pub listen_group: String,
    pub listen_mode: String,
    /// `php_admin_value[memory_limit]` (memory.php exhausts it).
    pub memory_limit: String,
    /// Set `php_admin_value[error_log]` to `logs/php-error.log`. Off by default, so PHP messages
    /// go to FastCGI stderr (nginx `FastCGI sent in stderr`) and to the php-fpm log, like a stock
    /// Debian pool.
    pub php_error_log: bool,
    /// nginx `fastcgi_read_timeout` in seconds.
    pub fastcgi_read_timeout: u32,
    /// nginx `fastcgi_buffer_size` (e.g. "4k").
    pub fastcgi_buffer_size: String,
    /// nginx `worker_connections` (each proxied request takes two: client and upstream).
    pub worker_connections: u32,
    /// nginx `worker_rlimit_nofile`; `None` leaves the limit alone.
    pub worker_rlimit_nofile: Option<u32>,
    /// Mount a tmpfs of this size (e.g. `"64k"`) on nginx's temp dir (`<lab>/tmp/nginx`: client
    /// bodies, FastCGI buffers), in a mount namespace of nginx's own (`unshare -m`), so a big
    /// request body fails with `(28: No space left on device)` without touching the host.
    pub nginx_temp_tmpfs: Option<String>,
    /// Start MariaDB too.
    pub mariadb: bool,
    /// MariaDB `--max-connections` (MariaDB raises anything below 10 to 10).
    pub mariadb_max_connections: u32,
    /// Extra mariadbd arguments, e.g. `--myisam-recover-options=OFF`.
    pub mariadb_args: Vec<String>,
    /// `request_slowlog_timeout` in seconds, with `slowlog` = `logs/php-fpm-slow.log`.
    pub request_slowlog_timeout: Option<u32>,
    /// Start Debian's apache2 too, alone or behind nginx.
    pub apache: Option<ApacheMode>,
    /// Apache `MaxRequestWorkers` (one child: `ServerLimit 1`, `ThreadsPerChild` = this).
    pub apache_max_workers: u32,
    /// Apache `ProxyTimeout` in seconds.
    pub apache_proxy_timeout: u32,
    /// Lines appended to pool `www` (e.g. `php_admin_flag[opcache.enable] = off`).
    pub extra_pool: String,
    /// Extra nginx directives for the `http` block (e.g. a `limit_req_zone`, or another
    /// `server {}` such as the WordPress site); `{lab}` is replaced with the lab dir.
    pub nginx_http_extra: String,
    /// Extra nginx directives for the lab's `server` block (e.g. an `auth_basic` location);
    /// `{lab}` is replaced with the lab dir.
    pub nginx_server_extra: String,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            pm: Pm::Static,
            max_children: 4,
            listen_backlog: None,
            request_terminate_timeout: None,
            listen_owner: "www-data".into(),
            listen_group: "www-data".into(),
            listen_mode: "0660".into(),
            memory_limit: "32M".into(),
            php_error_log: false,
            fastcgi_read_timeout: 30,
            fastcgi_buffer_size: "4k".into(),
            worker_connections: 512,
            worker_rlimit_nofile: None,
            nginx_temp_tmpfs: None,
            mariadb: false,
            mariadb_max_connections: 20,
            mariadb_args: Vec::new(),
            request_slowlog_timeout: None,
            apache: None,
            apache_max_workers: 10,
            apache_proxy_timeout: 30,
            extra_pool: String::new(),
            nginx_http_extra: String::new(),
            nginx_server_extra: String::new(),
        }
    }
}

/// One HTTP answer seen by the lab client. `status` is 0 when no status line arrived (connect
/// error, reset, timeout).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub elapsed: Duration,
}

/// Byte offsets of the lab's logs at one moment, to read only what a scenario added.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogMark {
    pub error: u64,
    pub access: u64,
    pub php_fpm: u64,
    pub php_error: u64,
    pub php_fpm_slow: u64,
    pub mariadb: u64,
}

/// The text each log gained since a [`LogMark`].
#[derive(Debug, Clone, Default)]
pub struct LogsSince {
    pub error: String,
    pub access: String,
    pub php_fpm: String,
    pub php_error: String,
    pub php_fpm_slow: String,
    pub mariadb: String,
}

/// A running lab. Dropping it stops every child and removes its dir.
#[derive(Debug)]
pub struct Lab {
    opts: LabOptions,
    dir: tempfile::TempDir,
    port: u16,
    refused_port: u16,
    refused_port2: u16,
    dns_port: u16,
    mariadb_port: u16,
    apache_port: u16,
    nginx: Option<Child>,
    apache: Option<Child>,
    php_fpm: Option<Child>,
    mariadb: Option<Child>,
    // Last field: released after every child is gone.
    _lock: Exclusive,
}

/// Starts a lab, or prints why it cannot run here and returns `None` (the test then returns).
/// Panics on a real failure (with the log tail), which fails the test.
pub fn start_or_skip(opts: LabOptions) -> Option<Lab> {
    match Lab::start(opts) {
        Ok(lab) => Some(lab),
        Err(LabError::Skip(reason)) => {
            crate::skip(&reason);
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `N` distinct free TCP ports on 127.0.0.1 (all listeners are held until every port is known).
fn free_ports<const N: usize>() -> Result<[u16; N], LabError> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for slot in &mut ports {
        let l = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| failed(format!("bind 127.0.0.1:0: {e}")))?;
        *slot = l
            .local_addr()
            .map_err(|e| failed(format!("local_addr: {e}")))?
            .port();
        held.push(l);
    }
    Ok(ports)
}

/// A free UDP port on 127.0.0.1 (for a resolver address where nothing answers).
fn free_udp_port() -> Result<u16, LabError> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| failed(format!("bind udp 127.0.0.1:0: {e}")))?;
    s.local_addr()
        .map(|a| a.port())
        .map_err(|e| failed(format!("local_addr: {e}")))
}

/// The last `max` bytes of a file (lossy UTF-8), or a note that it cannot be read.
pub fn tail(path: &Path, max: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<{}: {e}>", path.display()),
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What `path` holds after byte `offset` (lossy UTF-8; empty when it cannot be read).
pub fn read_from(path: &Path, offset: u64) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(_) => String::new(),
    }
}

fn www_data_ids() -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name("www-data").ok()??;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

const PHP_FILES: &[(&str, &str)] = &[
    ("index.php", include_str!("../lab/www/index.php")),
    ("sleep.php", include_str!("../lab/www/sleep.php")),
    ("memory.php", include_str!("../lab/www/memory.php")),
    ("bigheader.php", include_str!("../lab/www/bigheader.php")),
    ("hugeheader.php", include_str!("../lab/www/hugeheader.php")),
    ("db.php", include_str!("../lab/www/db.php")),
    (
        "wp-content/plugins/acme-slider/slider.php",
        include_str!("../lab/www/wp-content/plugins/acme-slider/slider.php"),
    ),
];

impl Lab {
    /// Starts PHP-FPM, MariaDB (when `opts.mariadb`) and nginx, each waited for (bounded by
    /// [`READY_TIMEOUT`]). Takes [`LAB_LOCK`] for the lab's lifetime.
    pub fn start(opts: LabOptions) -> Result<Lab, LabError> {
        let lock = exclusive();
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::Skip(
                "the lab needs root (nginx and php-fpm switch to www-data)".into(),
            ));
        }
        for bin in ["nginx", "php-fpm8.2"] {
            if find_binary(bin).is_none() {
                return Err(LabError::Skip(format!(
                    "{bin} is not installed (run scripts/install-test-deps.sh)"
                )));
            }
        }
        if opts.apache.is_some() && find_binary("apache2").is_none() {
            return Err(LabError::Skip(
                "apache2 is not installed (run scripts/install-test-deps.sh)".into(),
            ));
        }
        if opts.mariadb {
            for bin in ["mariadbd", "mariadb-install-db", "mariadb"] {
                if find_binary(bin).is_none() {
                    return Err(LabError::Skip(format!(
                        "{bin} is not installed (run scripts/install-test-deps.sh)"
                    )));
                }
            }
        }
        let Some((www_uid, www_gid)) = www_data_ids() else {
            return Err(LabError::Skip("user www-data does not exist".into()));
        };
        let dir = tempfile::Builder::new()
            .prefix("origin-agent-lab-")
            .tempdir()
            .map_err(|e| failed(format!("temp dir: {e}")))?;
        let [port, refused_port, refused_port2, mariadb_port, apache_port] = free_ports::<5>()?;
        let dns_port = free_udp_port()?;
        let mut lab = Lab {
            opts,
            port,
            refused_port,
            refused_port2,
            dns_port,
            mariadb_port,
            apache_port,
            dir,
            nginx: None,
            apache: None,
            php_fpm: None,
            mariadb: None,
            _lock: lock,
        };
        let started = lab.prepare_dir(www_uid, www_gid).and_then(|()| {
            lab.start_php_fpm()?;
            if lab.opts.mariadb {
                lab.start_mariadb()?;
            }
            if lab.opts.apache.is_some() {
                lab.start_apache()?;
            }
            if lab.opts.apache == Some(ApacheMode::Alone) {
                return Ok(());
            }
            lab.start_nginx()
        });
        match started {
            Ok(()) => Ok(lab),
            // Dropping `lab` stops what did start and removes the dir.
            Err(LabError::Failed(msg)) => Err(failed(format!(
                "{msg}\n(lab dir {}, removed)",
                lab.dir().display()
            ))),
            Err(e) => Err(e),
        }
    }

    fn prepare_dir(&self, www_uid: u32, www_gid: u32) -> Result<(), LabError> {
        let root = self.dir();
        for sub in [
            "",
            "www",
            "logs",
            "run",
            "state",
            "tmp",
            "tmp/nginx",
            "tmp/mysql",
            "mysql",
        ] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| io_failed("mkdir", &p, e))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                .map_err(|e| io_failed("chmod", &p, e))?;
        }
        let state = root.join("state");
        std::os::unix::fs::chown(&state, Some(www_uid), Some(www_gid))
            .map_err(|e| io_failed("chown", &state, e))?;
        for (rel, text) in PHP_FILES {
            let p = root.join("www").join(rel);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).map_err(|e| io_failed("mkdir", parent, e))?;
            }
            fs::write(&p, text).map_err(|e| io_failed("write", &p, e))?;
        }
        let conf = self.fastcgi_params_text();
        let p = root.join("fastcgi_params");
        fs::write(&p, conf).map_err(|e| io_failed("write", &p, e))?;
        let p = self.php_fpm_conf();
        fs::write(&p, self.php_fpm_conf_text()).map_err(|e| io_failed("write", &p, e))?;
        if self.opts.apache != Some(ApacheMode::Alone) {
            let p = self.nginx_conf();
            fs::write(&p, self.nginx_conf_text()).map_err(|e| io_failed("write", &p, e))?;
        }
        if self.opts.apache.is_some() {
            let p = self.apache_conf();
            fs::write(&p, self.apache_conf_text()).map_err(|e| io_failed("write", &p, e))?;
        }
        Ok(())
    }

    fn fastcgi_params_text(&self) -> String {
        let mut s = String::new();
        for (k, v) in [
            ("SCRIPT_FILENAME", "$document_root$fastcgi_script_name"),
            ("QUERY_STRING", "$query_string"),
            ("REQUEST_METHOD", "$request_method"),
            ("CONTENT_TYPE", "$content_type"),
            ("CONTENT_LENGTH", "$content_length"),
            ("SCRIPT_NAME", "$fastcgi_script_name"),
            ("REQUEST_URI", "$request_uri"),
            ("DOCUMENT_URI", "$document_uri"),
            ("DOCUMENT_ROOT", "$document_root"),
            ("SERVER_PROTOCOL", "$server_protocol"),
            ("REQUEST_SCHEME", "$scheme"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_SOFTWARE", "nginx/$nginx_version"),
            ("REMOTE_ADDR", "$remote_addr"),
            ("REMOTE_PORT", "$remote_port"),
            ("SERVER_ADDR", "$server_addr"),
            ("SERVER_PORT", "$server_port"),
            ("SERVER_NAME", "$server_name"),
            ("REDIRECT_STATUS", "200"),
        ] {
            s.push_str(&format!("fastcgi_param {k} {v};\n"));
        }
        s.push_str(&format!(
            "fastcgi_param LAB_STATE {};\n",
            self.dir().join("state").display()
        ));
        s.push_str(&format!(
            "fastcgi_param LAB_MYSQL_SOCKET {};\n",
            self.mariadb_socket().display()
        ));
        s
    }

    fn php_fpm_conf_text(&self) -> String {
        let o = &self.opts;
        let d = self.dir();
        let children = o.max_children.max(1);
        let mut s = format!(
            "; origin-agent lab pool (generated)\n\
             [global]\n\
             pid = {pid}\n\
             error_log = {log}\n\
             log_level = notice\n\
             daemonize = no\n\
             \n\
             [www]\n\
             user = www-data\n\
             group = www-data\n\
             listen = {sock}\n\
             listen.owner = {owner}\n\
             listen.group = {group}\n\
             listen.mode = {mode}\n\
             pm = {pm}\n\
             pm.max_children = {children}\n",
            pid = d.join("run/php-fpm.pid").display(),
            log = self.php_fpm_log().display(),
            sock = self.socket().display(),
            owner = o.listen_owner,
            group = o.listen_group,
            mode = o.listen_mode,
            pm = o.pm.as_str(),
        );
        if o.pm == Pm::Dynamic {
            let start = children.min(2);
            s.push_str(&format!(
                "pm.start_servers = {start}\npm.min_spare_servers = 1\npm.max_spare_servers = {start}\n"
            ));
        }
        if let Some(backlog) = o.listen_backlog {
            s.push_str(&format!("listen.backlog = {backlog}\n"));
        }
        s.push_str(&format!(
            "request_terminate_timeout = {}\n",
            o.request_terminate_timeout.unwrap_or(0)
        ));
        // Workers killed by SIGSEGV must not write core files outside the lab.
        s.push_str("rlimit_core = 0\n");
        if let Some(t) = o.request_slowlog_timeout {
            s.push_str(&format!(
                "request_slowlog_timeout = {t}\nslowlog = {}\n",
                self.php_fpm_slow_log().display()
            ));
        }
        s.push_str(&format!(
            "catch_workers_output = yes\n\
             pm.status_path = /fpm-status\n\
             access.log = {}\n\
             php_admin_value[display_errors] = Off\n\
             php_admin_flag[log_errors] = on\n\
             php_admin_value[memory_limit] = {}\n",
            self.php_fpm_access_log().display(),
            o.memory_limit
        ));
        if o.php_error_log {
            s.push_str(&format!(
                "php_admin_value[error_log] = {}\n",
                self.php_error_log().display()
            ));
        }
        s.push_str(&o.extra_pool);
        s
    }

    fn nginx_conf_text(&self) -> String {
        let o = &self.opts;
        let d = self.dir();
        let params = d.join("fastcgi_params");
        let sock = self.socket();
        let tmp = self.nginx_tmpdir();
        format!(
            r#"# origin-agent lab nginx (generated)
user www-data;
worker_processes 1;
pid {pid};
error_log {error_log} warn;
{rlimit}
events {{
    worker_connections {worker_connections};
}}

http {{
    default_type text/plain;
    server_tokens on;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    log_format lab '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" ua="$upstream_addr" us="$upstream_status" urt="$upstream_response_time" rt=$request_time';
    access_log {access_log} lab;

    {http_extra}

    upstream php_backend {{
        server 127.0.0.1:{refused} max_fails=1 fail_timeout=30s;
        server 127.0.0.1:{refused2} max_fails=1 fail_timeout=30s;
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name example.com;
        root {www};
        index index.php;

        fastcgi_read_timeout {read_timeout}s;
        fastcgi_buffer_size {buffer_size};

        location ~ \.php$ {{
{php_pass}
        }}

        location = /fpm-status {{
            allow 127.0.0.1;
            deny all;
            include {params};
            fastcgi_pass unix:{sock};
        }}

        # A TCP upstream where nothing listens: connect() failed (111).
        location ^~ /refused/ {{
            include {params};
            fastcgi_pass 127.0.0.1:{refused};
        }}

        # A variable upstream name, resolved at request time by a resolver where nothing
        # answers: "could not be resolved (110: Operation timed out)".
        location ^~ /dns/ {{
            resolver 127.0.0.1:{dns_port} ipv6=off;
            resolver_timeout 1s;
            set $lab_backend backend.example.invalid;
            proxy_pass http://$lab_backend:8080;
        }}

        # An upstream group whose two servers refuse: after one failed try of each, every
        # request gets "no live upstreams" (a group of one server is never marked failed).
        location ^~ /nolive/ {{
            include {params};
            fastcgi_pass php_backend;
        }}

        {server_extra}
    }}
}}
"#,
            pid = d.join("run/nginx.pid").display(),
            error_log = self.error_log().display(),
            access_log = self.access_log().display(),
            tmp = tmp.display(),
            refused = self.refused_port,
            refused2 = self.refused_port2,
            dns_port = self.dns_port,
            worker_connections = o.worker_connections,
            rlimit = o
                .worker_rlimit_nofile
                .map(|n| format!("worker_rlimit_nofile {n};\n"))
                .unwrap_or_default(),
            port = self.port,
            www = d.join("www").display(),
            read_timeout = o.fastcgi_read_timeout,
            buffer_size = o.fastcgi_buffer_size,
            php_pass = match o.apache {
                Some(ApacheMode::BehindNginx) => format!(
                    "            proxy_pass http://127.0.0.1:{};\n            proxy_read_timeout {}s;",
                    self.apache_port, o.fastcgi_read_timeout
                ),
                _ => format!(
                    "            include {};\n            fastcgi_pass unix:{};",
                    params.display(),
                    sock.display()
                ),
            },
            params = params.display(),
            sock = sock.display(),
            http_extra = o
                .nginx_http_extra
                .replace("{lab}", &d.display().to_string()),
            server_extra = o
                .nginx_server_extra
                .replace("{lab}", &d.display().to_string()),
        )
    }

    /// Apache's port: the lab port when it is alone, its own behind nginx.
    pub fn apache_port(&self) -> u16 {
        match self.opts.apache {
            Some(ApacheMode::Alone) => self.port,
            _ => self.apache_port,
        }
    }

    pub fn apache_conf(&self) -> PathBuf {
        self.dir().join("apache2.conf")
    }

    pub fn apache_error_log(&self) -> PathBuf {
        self.logs_dir().join("apache-error.log")
    }

    pub fn apache_access_log(&self) -> PathBuf {
        self.logs_dir().join("apache-access.log")
    }

    pub fn apache_pid(&self) -> Option<u32> {
        self.apache.as_ref().map(Child::id)
    }

    fn apache_conf_text(&self) -> String {
        let o = &self.opts;
        let d = self.dir();
        let m = "/usr/lib/apache2/modules";
        let modules: String = [
            "mpm_event",
            "authz_core",
            "dir",
            "env",
            "proxy",
            "proxy_fcgi",
            "status",
        ]
        .iter()
        .map(|n| format!("LoadModule {n}_module {m}/mod_{n}.so\n"))
        .collect();
        format!(
            r#"# origin-agent lab apache2 (generated)
ServerRoot {dir}
PidFile {dir}/run/apache2.pid
DefaultRuntimeDir {dir}/run
Mutex file:{dir}/run default
{modules}Listen 127.0.0.1:{port}
User www-data
Group www-data
ServerName lab.example
ServerLimit 1
StartServers 1
ThreadsPerChild {workers}
MaxRequestWorkers {workers}
MinSpareThreads 1
MaxSpareThreads {workers}
ListenBacklog 511
Timeout 60
ProxyTimeout {proxy_timeout}
ErrorLog {error_log}
LogLevel warn
LogFormat "%h %l %u %t \"%r\" %>s %O \"%{{Referer}}i\" \"%{{User-Agent}}i\" %D" lab
CustomLog {access_log} lab
DocumentRoot {www}
DirectoryIndex index.php
SetEnv LAB_STATE {dir}/state
SetEnv LAB_MYSQL_SOCKET {mysql_socket}
<VirtualHost 127.0.0.1:{port}>
    ServerName example.com
    ServerAlias www.example.com
    DocumentRoot {www}
    <FilesMatch "\.php$">
        SetHandler "proxy:unix:{sock}|fcgi://localhost"
    </FilesMatch>
    <Location "/server-status">
        SetHandler server-status
    </Location>
</VirtualHost>
"#,
            dir = d.display(),
            port = self.apache_port(),
            workers = o.apache_max_workers.max(1),
            proxy_timeout = o.apache_proxy_timeout,
            error_log = self.apache_error_log().display(),
            access_log = self.apache_access_log().display(),
            www = d.join("www").display(),
            mysql_socket = self.mariadb_socket().display(),
            sock = self.socket().display(),
        )
    }

    /// Starts (or restarts after `stop_apache`) Apache in the foreground and waits for its port.
    pub fn start_apache(&mut self) -> Result<(), LabError> {
        if let Some(child) = self.apache.take() {
            stop_child(child);
        }
        let d = self.dir().to_string_lossy().into_owned();
        let conf = self.apache_conf().to_string_lossy().into_owned();
        let child = self.spawn(
            "apache2",
            "apache2",
            &["-d", &d, "-f", &conf, "-D", "FOREGROUND"],
        )?;
        self.apache = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.apache_port()));
        if !wait_listening(self.apache.as_mut(), addr) {
            return Err(failed(format!(
                "apache2 did not start\n--- apache2.stderr ---\n{}\n--- apache-error.log ---\n{}",
                tail(&self.logs_dir().join("apache2.stderr"), 2000),
                tail(&self.apache_error_log(), 2000)
            )));
        }
        Ok(())
    }

    /// SIGTERM Apache and wait for it (bounded).
    pub fn stop_apache(&mut self) -> Result<(), LabError> {
        let child = self
            .apache
            .take()
            .ok_or_else(|| failed("apache2 is not running"))?;
        stop_child(child);
        Ok(())
    }

    fn spawn(&self, name: &str, bin: &str, args: &[&str]) -> Result<Child, LabError> {
        let exe =
            find_binary(bin).ok_or_else(|| LabError::Skip(format!("{bin} is not installed")))?;
        let out_path = self.logs_dir().join(format!("{name}.stdout"));
        let err_path = self.logs_dir().join(format!("{name}.stderr"));
        let out = fs::File::create(&out_path).map_err(|e| io_failed("create", &out_path, e))?;
        let err = fs::File::create(&err_path).map_err(|e| io_failed("create", &err_path, e))?;
        // Through sh only to set RLIMIT_CORE to 0 (no core files from the crash scenarios, on
        // any CI's core_pattern); `exec` keeps the pid, so the child is the daemon itself.
        Command::new("/bin/sh")
            .arg("-c")
            .arg("ulimit -c 0 && exec \"$0\" \"$@\"")
            .arg(&exe)
            .args(args)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: Drop can kill the master and every worker it forked at once.
            .process_group(0)
            .spawn()
            .map_err(|e| failed(format!("spawn {}: {e}", exe.display())))
    }

    /// Starts (or restarts after `stop_php_fpm`) the PHP-FPM master and waits for its socket.
    pub fn start_php_fpm(&mut self) -> Result<(), LabError> {
        if let Some(child) = self.php_fpm.take() {
            stop_child(child);
        }
        let conf = self.php_fpm_conf();
        let conf = conf.to_string_lossy().into_owned();
        let child = self.spawn("php-fpm", "php-fpm8.2", &["-F", "-y", &conf])?;
        self.php_fpm = Some(child);
        let sock = self.socket();
        let mut exited = false;
        let ok = wait_until(READY_TIMEOUT, || {
            exited = self
                .php_fpm
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            exited || UnixStream::connect(&sock).is_ok()
        });
        if !ok || exited {
            return Err(failed(format!(
                "php-fpm did not listen on {} within {:?}{}\n--- php-fpm.log ---\n{}\n--- stderr ---\n{}",
                sock.display(),
                READY_TIMEOUT,
                if exited { " (it exited)" } else { "" },
                tail(&self.php_fpm_log(), 2000),
                tail(&self.logs_dir().join("php-fpm.stderr"), 2000)
            )));
        }
        Ok(())
    }

    fn start_nginx(&mut self) -> Result<(), LabError> {
        let d = self.dir().to_string_lossy().into_owned();
        let conf = self.nginx_conf().to_string_lossy().into_owned();
        let elog = self.error_log().to_string_lossy().into_owned();
        let nginx_args = ["-p", &d, "-e", &elog, "-c", &conf, "-g", "daemon off;"];
        let child = match &self.opts.nginx_temp_tmpfs {
            None => self.spawn("nginx", "nginx", &nginx_args)?,
            Some(size) => {
                let nginx = find_binary("nginx")
                    .ok_or_else(|| LabError::Skip("nginx is not installed".into()))?;
                let nginx = nginx.to_string_lossy().into_owned();
                let tmp = self.nginx_tmpdir().to_string_lossy().into_owned();
                let script = format!(
                    "mount -t tmpfs -o size={size},mode=0755 lab-nginx-tmp \"$0\" && exec \"$@\""
                );
                let mut args = vec![
                    "-m",
                    "--propagation",
                    "private",
                    "/bin/sh",
                    "-c",
                    &script,
                    &tmp,
                    &nginx,
                ];
                args.extend(nginx_args);
                if find_binary("unshare").is_none() {
                    return Err(LabError::Skip(
                        "unshare (util-linux) is not installed".into(),
                    ));
                }
                self.spawn("nginx", "unshare", &args)?
            }
        };
        self.nginx = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        if !wait_listening(self.nginx.as_mut(), addr) {
            return Err(failed(format!(
                "nginx did not listen on {addr} within {READY_TIMEOUT:?}\n--- error.log ---\n{}\n--- stderr ---\n{}",
                tail(&self.error_log(), 2000),
                tail(&self.logs_dir().join("nginx.stderr"), 2000)
            )));
        }
        Ok(())
    }

    fn start_mariadb(&mut self) -> Result<(), LabError> {
        // A fresh copy of a datadir that `mariadb-install-db` made once (it takes seconds).
        let template = mariadb_template()?;
        let datadir = self.dir().join("mysql");
        copy_tree(&template, &datadir)?;
        self.launch_mariadb()?;
        // The user db.php connects as: no SUPER/CONNECTION ADMIN, so it gets no extra connection
        // beyond max_connections.
        self.mariadb_sql(
            "CREATE USER 'lab'@'localhost' IDENTIFIED BY 'lab'; GRANT SELECT ON *.* TO 'lab'@'localhost';",
        )?;
        Ok(())
    }

    /// Starts mariadbd on the lab's (already installed) datadir and waits for its socket.
    fn launch_mariadb(&mut self) -> Result<(), LabError> {
        let datadir_s = self.dir().join("mysql").to_string_lossy().into_owned();
        let sock = self.mariadb_socket();
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={datadir_s}"),
            format!("--socket={}", sock.display()),
            format!("--port={}", self.mariadb_port),
            "--bind-address=127.0.0.1".to_string(),
            format!("--log-error={}", self.mariadb_log().display()),
            format!(
                "--pid-file={}",
                self.dir().join("run/mariadb.pid").display()
            ),
            format!("--max-connections={}", self.opts.mariadb_max_connections),
            "--user=root".to_string(),
            "--skip-name-resolve".to_string(),
            "--innodb-buffer-pool-size=16M".to_string(),
            "--innodb-log-file-size=8M".to_string(),
            // Its own temp dir: nothing shared with other processes' files in /tmp.
            format!("--tmpdir={}", self.mariadb_tmpdir().display()),
        ];
        args.extend(self.opts.mariadb_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self.spawn("mariadb", "mariadbd", &args)?;
        self.mariadb = Some(child);
        let mut exited = false;
        let ok = wait_until(READY_TIMEOUT, || {
            exited = self
                .mariadb
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            exited || UnixStream::connect(&sock).is_ok()
        });
        if !ok || exited {
            return Err(failed(format!(
                "mariadbd did not listen on {} within {READY_TIMEOUT:?}{}\n--- mariadb.err ---\n{}",
                sock.display(),
                if exited { " (it exited)" } else { "" },
                tail(&self.mariadb_log(), 3000)
            )));
        }
        Ok(())
    }

    /// Starts MariaDB again on the same datadir (after `stop_mariadb` / `kill_mariadb`), with
    /// crash recovery when it was killed.
    pub fn restart_mariadb(&mut self) -> Result<(), LabError> {
        if !self.opts.mariadb {
            return Err(failed("this lab has no MariaDB"));
        }
        if let Some(child) = self.mariadb.take() {
            stop_child(child);
        }
        self.launch_mariadb()
    }

    /// Runs SQL as root over the lab MariaDB's socket with the `mariadb` client.
    pub fn mariadb_sql(&self, sql: &str) -> Result<String, LabError> {
        let client = find_binary("mariadb")
            .ok_or_else(|| LabError::Skip("the mariadb client is not installed".into()))?;
        let out = Command::new(client)
            .args([
                "--no-defaults",
                &format!("--socket={}", self.mariadb_socket().display()),
                "-uroot",
                "--batch",
                "--skip-column-names",
                "-e",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(format!("run mariadb client: {e}")))?;
        if !out.status.success() {
            return Err(failed(format!(
                "mariadb -e {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    // ----- paths -----

    /// The lab's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn options(&self) -> &LabOptions {
        &self.opts
    }
    fn logs_dir(&self) -> PathBuf {
        self.dir().join("logs")
    }
    pub fn docroot(&self) -> PathBuf {
        self.dir().join("www")
    }
    pub fn nginx_conf(&self) -> PathBuf {
        self.dir().join("nginx.conf")
    }
    pub fn php_fpm_conf(&self) -> PathBuf {
        self.dir().join("php-fpm.conf")
    }
    /// nginx error log.
    pub fn error_log(&self) -> PathBuf {
        self.logs_dir().join("error.log")
    }
    /// nginx access log, lab format.
    pub fn access_log(&self) -> PathBuf {
        self.logs_dir().join("access.log")
    }
    /// PHP-FPM master log (`[global] error_log`).
    pub fn php_fpm_log(&self) -> PathBuf {
        self.logs_dir().join("php-fpm.log")
    }
    /// PHP-FPM pool access log.
    pub fn php_fpm_access_log(&self) -> PathBuf {
        self.logs_dir().join("php-fpm-access.log")
    }
    /// PHP-FPM slow log (written when `LabOptions::request_slowlog_timeout` is set).
    pub fn php_fpm_slow_log(&self) -> PathBuf {
        self.logs_dir().join("php-fpm-slow.log")
    }
    /// PHP's own error_log (only written when `LabOptions::php_error_log`).
    pub fn php_error_log(&self) -> PathBuf {
        self.logs_dir().join("php-error.log")
    }
    pub fn mariadb_log(&self) -> PathBuf {
        self.logs_dir().join("mariadb.err")
    }
    /// nginx's temp paths live under this dir.
    pub fn nginx_tmpdir(&self) -> PathBuf {
        self.dir().join("tmp/nginx")
    }
    fn mariadb_tmpdir(&self) -> PathBuf {
        self.dir().join("tmp/mysql")
    }
    pub fn mariadb_socket(&self) -> PathBuf {
        self.dir().join("run/mysql.sock")
    }
    pub fn mariadb_port(&self) -> u16 {
        self.mariadb_port
    }
    /// The PHP-FPM pool socket.
    pub fn socket(&self) -> PathBuf {
        self.dir().join("run/php-fpm.sock")
    }
    /// nginx's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The TCP port the `/refused/` location and the `php_backend` upstream point at (nothing
    /// listens there).
    pub fn refused_port(&self) -> u16 {
        self.refused_port
    }
    /// The UDP port of the `/dns/` location's resolver (nothing answers there).
    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }
    /// The second server of the `php_backend` upstream (nothing listens there either).
    pub fn refused_port2(&self) -> u16 {
        self.refused_port2
    }
    pub fn nginx_pid(&self) -> Option<u32> {
        self.nginx.as_ref().map(Child::id)
    }
    pub fn php_fpm_pid(&self) -> Option<u32> {
        self.php_fpm.as_ref().map(Child::id)
    }
    pub fn mariadb_pid(&self) -> Option<u32> {
        self.mariadb.as_ref().map(Child::id)
    }

    /// An `origin-agent` config (YAML) that points at this lab: its logs, nginx and PHP-FPM
    /// configs, the status page, MariaDB's socket/port (when started), and a state dir inside the
    /// lab. Discovery should find the same things on its own; this is for tests that pin them.
    pub fn agent_config_yaml(&self) -> String {
        let q = |p: PathBuf| format!("\"{}\"", p.display());
        let alone = self.opts.apache == Some(ApacheMode::Alone);
        let mut access = vec![q(self.apache_access_log())];
        if !alone {
            access.insert(0, q(self.access_log()));
        }
        if self.opts.apache.is_none() {
            access.truncate(1);
        }
        let mut y = format!(
            "# origin-agent config for lab {dir}\n\
             logs:\n  nginx_access: [{access}]\n  nginx_error: [{error}]\n  php_fpm: [{fpm}]\n",
            dir = self.dir().display(),
            access = access.join(", "),
            error = if alone {
                String::new()
            } else {
                q(self.error_log())
            },
            fpm = q(self.php_fpm_log()),
        );
        if self.opts.apache.is_some() {
            y.push_str(&format!(
                "  apache_error: [{}]\n",
                q(self.apache_error_log())
            ));
        }
        if self.opts.request_slowlog_timeout.is_some() {
            y.push_str(&format!(
                "  php_fpm_slow: [{}]\n",
                q(self.php_fpm_slow_log())
            ));
        }
        if self.opts.php_error_log {
            y.push_str(&format!("  php: [{}]\n", q(self.php_error_log())));
        }
        if self.opts.mariadb {
            y.push_str(&format!("  mysql_error: [{}]\n", q(self.mariadb_log())));
        }
        if !alone {
            y.push_str(&format!("nginx:\n  config: {}\n", q(self.nginx_conf())));
        }
        if self.opts.apache.is_some() {
            y.push_str(&format!("apache:\n  config: {}\n", q(self.apache_conf())));
        }
        y.push_str(&format!(
            "php_fpm:\n  configs: [{}]\n  status_url: \"/fpm-status\"\n",
            q(self.php_fpm_conf())
        ));
        if self.opts.mariadb {
            y.push_str(&format!(
                "mysql:\n  socket: {}\n  port: {}\n",
                q(self.mariadb_socket()),
                self.mariadb_port
            ));
        }
        y.push_str(&format!(
            "state_dir: {}\n",
            q(self.dir().join("agent-state"))
        ));
        y
    }

    /// Writes [`Lab::agent_config_yaml`] to `<lab>/agent.yaml` and returns its path.
    pub fn write_agent_config(&self) -> Result<PathBuf, LabError> {
        let p = self.dir().join("agent.yaml");
        fs::write(&p, self.agent_config_yaml()).map_err(|e| io_failed("write", &p, e))?;
        Ok(p)
    }

    // ----- logs -----

    /// Current sizes of the logs.
    pub fn mark(&self) -> LogMark {
        LogMark {
            error: file_len(&self.error_log()),
            access: file_len(&self.access_log()),
            php_fpm: file_len(&self.php_fpm_log()),
            php_error: file_len(&self.php_error_log()),
            php_fpm_slow: file_len(&self.php_fpm_slow_log()),
            mariadb: file_len(&self.mariadb_log()),
        }
    }

    /// What each log gained since `mark`.
    pub fn logs_since(&self, mark: &LogMark) -> LogsSince {
        LogsSince {
            error: read_from(&self.error_log(), mark.error),
            access: read_from(&self.access_log(), mark.access),
            php_fpm: read_from(&self.php_fpm_log(), mark.php_fpm),
            php_error: read_from(&self.php_error_log(), mark.php_error),
            php_fpm_slow: read_from(&self.php_fpm_slow_log(), mark.php_fpm_slow),
            mariadb: read_from(&self.mariadb_log(), mark.mariadb),
        }
    }

    /// Waits (bounded) until `path` contains `needle` after byte `offset`.
    pub fn wait_for_log(&self, path: &Path, offset: u64, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || read_from(path, offset).contains(needle))
    }

    // ----- traffic -----

    /// GET `path` (must start with `/`, already percent-encoded) with the lab user agent; the
    /// status, or 0 when no answer came.
    pub fn get(&self, path: &str) -> u16 {
        self.request(path, LAB_UA).status
    }

    /// GET with a chosen user agent and the default 30 s read timeout.
    pub fn request(&self, path: &str, user_agent: &str) -> Reply {
        http_get(self.port, path, user_agent, Duration::from_secs(30))
    }

    /// POST `body_len` bytes (`x=aaaa…`) to `path`; the status, or 0 when no answer came.
    pub fn post(&self, path: &str, body_len: usize) -> u16 {
        let mut body = b"x=".to_vec();
        body.resize(body_len.max(2), b'a');
        http_request(
            self.port,
            "POST",
            path,
            LAB_UA,
            &body,
            Duration::from_secs(30),
        )
        .status
    }

    /// `n` GETs of `path` over `concurrency` threads (both bounded by [`MAX_REQUESTS`] and
    /// [`MAX_CONCURRENCY`]); statuses in request order, 0 for no answer.
    pub fn get_many(&self, path: &str, n: usize, concurrency: usize) -> Vec<u16> {
        let n = n.min(MAX_REQUESTS);
        let workers = concurrency.clamp(1, MAX_CONCURRENCY).min(n.max(1));
        let next = AtomicUsize::new(0);
        let results = Mutex::new(vec![0u16; n]);
        let port = self.port;
        thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let status = http_get(port, path, LAB_UA, Duration::from_secs(30)).status;
                    let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(slot) = r.get_mut(i) {
                        *slot = status;
                    }
                });
            }
        });
        results.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    // ----- faults -----

    /// SIGTERM the PHP-FPM master and wait for it (bounded); a clean stop removes the socket.
    pub fn stop_php_fpm(&mut self) -> Result<(), LabError> {
        let child = self
            .php_fpm
            .take()
            .ok_or_else(|| failed("php-fpm is not running"))?;
        stop_child(child);
        Ok(())
    }

    /// SIGKILL the PHP-FPM master and all its workers at once (a crash): the socket file stays,
    /// so nginx gets `(111: Connection refused)`.
    pub fn kill_php_fpm(&mut self) -> Result<(), LabError> {
        let mut child = self
            .php_fpm
            .take()
            .ok_or_else(|| failed("php-fpm is not running"))?;
        let pgid = pid_of(&child);
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait();
        // Workers close their copy of the listening socket only when they are gone; until then
        // a connect() still succeeds (and is then reset). Wait for the real "refused" state.
        let sock = self.socket();
        let refused = wait_until(
            READY_TIMEOUT,
            || matches!(UnixStream::connect(&sock), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        );
        if !refused {
            return Err(failed(format!(
                "{} still accepts connections after SIGKILL of php-fpm's process group",
                sock.display()
            )));
        }
        Ok(())
    }

    /// Removes the PHP-FPM socket file while PHP-FPM keeps running.
    pub fn remove_socket(&self) -> Result<(), LabError> {
        let s = self.socket();
        fs::remove_file(&s).map_err(|e| io_failed("remove", &s, e))
    }

    /// Makes the socket `srw------- root root`, so nginx's workers (www-data) get EACCES.
    pub fn break_socket_permissions(&self) -> Result<(), LabError> {
        let s = self.socket();
        std::os::unix::fs::chown(&s, Some(0), Some(0)).map_err(|e| io_failed("chown", &s, e))?;
        fs::set_permissions(&s, fs::Permissions::from_mode(0o600))
            .map_err(|e| io_failed("chmod", &s, e))
    }

    /// Sends `sleep.php?s=sleep_secs` and, once a worker holds it (it writes its pid), sends
    /// `signal` to that worker; returns the request's reply. Bounded by `sleep_secs` + 15 s.
    pub fn kill_worker(&self, signal: Signal, sleep_secs: u32) -> Result<Reply, LabError> {
        let pid_file = self.dir().join("state/busy.pid");
        let _ = fs::remove_file(&pid_file);
        let port = self.port;
        let path = format!("/sleep.php?s={sleep_secs}");
        let timeout = Duration::from_secs(u64::from(sleep_secs) + 15);
        thread::scope(|s| {
            let req = s.spawn(move || http_get(port, &path, LAB_UA, timeout));
            let mut pid = None;
            wait_until(READY_TIMEOUT, || {
                pid = fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok());
                pid.is_some()
            });
            let sent = match pid {
                Some(p) => kill(Pid::from_raw(p), signal)
                    .map_err(|e| failed(format!("kill({p}, {signal}): {e}"))),
                None => Err(failed(format!(
                    "no worker picked up the slow request within {READY_TIMEOUT:?}\n--- php-fpm.log ---\n{}",
                    tail(&self.php_fpm_log(), 2000)
                ))),
            };
            let reply = req.join().map_err(|_| failed("request thread panicked"))?;
            sent.map(|()| reply)
        })
    }

    /// Sends `signal` to mariadbd (SIGSEGV: its crash report; SIGKILL: an OOM-style kill) and
    /// waits (bounded) for it to exit; the socket file may stay behind.
    pub fn kill_mariadb(&mut self, signal: Signal) -> Result<(), LabError> {
        let mut child = self
            .mariadb
            .take()
            .ok_or_else(|| failed("mariadb is not running"))?;
        let pid = pid_of(&child);
        kill(pid, signal).map_err(|e| failed(format!("kill(mariadbd, {signal}): {e}")))?;
        if !wait_until(READY_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_)))) {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
        Ok(())
    }

    /// SIGTERM MariaDB and wait for it (bounded).
    pub fn stop_mariadb(&mut self) -> Result<(), LabError> {
        let child = self
            .mariadb
            .take()
            .ok_or_else(|| failed("mariadb is not running"))?;
        stop_child(child);
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in [
            self.nginx.take(),
            self.apache.take(),
            self.php_fpm.take(),
            self.mariadb.take(),
        ]
        .into_iter()
        .flatten()
        {
            stop_child(child);
        }
        // `dir` (TempDir) removes itself; `_lock` is released last.
    }
}

/// Waits (bounded by [`READY_TIMEOUT`]) until `addr` accepts; false when the child exited
/// first or the time ran out.
fn wait_listening(mut child: Option<&mut Child>, addr: SocketAddr) -> bool {
    let mut exited = false;
    let ok = wait_until(READY_TIMEOUT, || {
        if let Some(c) = child.as_deref_mut() {
            if matches!(c.try_wait(), Ok(Some(_))) {
                exited = true;
                return true;
            }
        }
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    ok && !exited
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// A pristine MariaDB datadir made by `mariadb-install-db`, cached per mariadbd version under
/// cargo's integration-test scratch dir (`target/tmp`): made once, then copied for every lab.
/// Written to a staging dir and renamed into place, so a half-made template is never used.
fn mariadb_template() -> Result<PathBuf, LabError> {
    static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut cached = TEMPLATE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = cached.as_ref() {
        if p.is_dir() {
            return Ok(p.clone());
        }
    }
    let mariadbd = find_binary("mariadbd")
        .ok_or_else(|| LabError::Skip("mariadbd is not installed".into()))?;
    let version = Command::new(&mariadbd)
        .arg("--version")
        .output()
        .map_err(|e| failed(format!("{} --version: {e}", mariadbd.display())))?;
    let version: String = String::from_utf8_lossy(&version.stdout)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let final_dir = root.join(format!("lab-mariadb-{}", version.trim_matches('-')));
    let data = final_dir.join("data");
    if !data.is_dir() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let staging = root.join(format!(
            "lab-mariadb-staging-{}-{stamp}",
            std::process::id()
        ));
        let made = install_mariadb_datadir(&staging);
        let made = made.and_then(|()| match fs::rename(&staging, &final_dir) {
            Ok(()) => Ok(()),
            // Another test process made it first: use theirs.
            Err(_) if data.is_dir() => Ok(()),
            Err(e) => Err(io_failed("rename", &staging, e)),
        });
        let _ = fs::remove_dir_all(&staging);
        made?;
    }
    *cached = Some(data.clone());
    Ok(data)
}

/// Runs `mariadb-install-db` into `<dir>/data` (temp files in `<dir>/tmp`).
fn install_mariadb_datadir(dir: &Path) -> Result<(), LabError> {
    let data = dir.join("data");
    let tmp = dir.join("tmp");
    for d in [&data, &tmp] {
        fs::create_dir_all(d).map_err(|e| io_failed("mkdir", d, e))?;
    }
    let install = find_binary("mariadb-install-db")
        .ok_or_else(|| LabError::Skip("mariadb-install-db is not installed".into()))?;
    let out = Command::new(&install)
        .args([
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            "--user=root",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
            &format!("--tmpdir={}", tmp.display()),
            // Small files: 20 MB per lab instead of 110 MB.
            "--innodb-log-file-size=8M",
            "--innodb-buffer-pool-size=16M",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("run {}: {e}", install.display())))?;
    if !out.status.success() {
        return Err(failed(format!(
            "mariadb-install-db failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Copies a directory tree of plain files and dirs (a MariaDB datadir).
fn copy_tree(from: &Path, to: &Path) -> Result<(), LabError> {
    fs::create_dir_all(to).map_err(|e| io_failed("mkdir", to, e))?;
    let entries = fs::read_dir(from).map_err(|e| io_failed("read dir", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_failed("read dir", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| io_failed("stat", &src, e))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst).map_err(|e| io_failed("copy", &src, e))?;
        }
    }
    Ok(())
}

/// SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL the whole process group; always reaps.
fn stop_child(mut child: Child) {
    let pid = pid_of(&child);
    if matches!(child.try_wait(), Ok(Some(_))) {
        // The master is gone; make sure no orphaned worker of its group survives.
        let _ = killpg(pid, Signal::SIGKILL);
        return;
    }
    let _ = kill(pid, Signal::SIGTERM);
    let exited = wait_until(STOP_GRACE, || matches!(child.try_wait(), Ok(Some(_))));
    // Workers left behind (or a master that ignored SIGTERM) die with the group.
    let _ = killpg(pid, Signal::SIGKILL);
    if !exited {
        let _ = child.wait();
    }
}

pub use crate::util::services::wait_until;

/// A minimal HTTP/1.1 GET to 127.0.0.1:`port` (never anywhere else), `Connection: close`,
/// connect timeout 2 s, read timeout `timeout`, at most 1 MiB read.
pub fn http_get(port: u16, path: &str, user_agent: &str, timeout: Duration) -> Reply {
    http_request(port, "GET", path, user_agent, &[], timeout)
}

/// Like [`http_get`] with a method and a body (sent with `Content-Length`).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    user_agent: &str,
    body: &[u8],
    timeout: Duration,
) -> Reply {
    let start = Instant::now();
    let none = |start: Instant| Reply {
        status: 0,
        body: String::new(),
        elapsed: start.elapsed(),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return none(start);
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let length = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\n{length}Connection: close\r\n\r\n"
    );
    if stream.write_all(req.as_bytes()).is_err() {
        return none(start);
    }
    // A server that answers early (an error) may close before the whole body is sent: still
    // read its answer.
    let _ = stream.write_all(body);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Reply {
        status,
        body,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lab_starts_serves_and_cleans_up() {
        let Some(lab) = start_or_skip(LabOptions::default()) else {
            return;
        };
        let dir = lab.dir().to_path_buf();
        let nginx = lab.nginx_pid().unwrap();
        let fpm = lab.php_fpm_pid().unwrap();
        let r = lab.request("/index.php", LAB_UA);
        assert_eq!(r.status, 200, "body: {}", r.body);
        assert!(r.body.contains("ok"));
        assert_eq!(lab.get("/no-such-file.html"), 404);
        let access = fs::read_to_string(lab.access_log()).unwrap();
        assert!(
            access.contains(r#""GET /index.php HTTP/1.1" 200 "#)
                && access.contains(r#""Mozilla/5.0 (lab)" ua="unix:"#),
            "access log: {access}"
        );
        let status = lab.request("/fpm-status?json", LAB_UA);
        assert_eq!(status.status, 200);
        assert!(
            status.body.contains("\"listen queue\":0"),
            "{}",
            status.body
        );
        drop(lab);
        assert!(!dir.exists(), "lab dir left behind");
        for pid in [nginx, fpm] {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} survived the lab"
            );
        }
    }

    #[test]
    fn php_fpm_restarts_over_a_stale_socket() {
        let Some(mut lab) = start_or_skip(LabOptions::default()) else {
            return;
        };
        let old = lab.php_fpm_pid().unwrap();
        lab.kill_php_fpm().unwrap();
        assert!(lab.socket().exists(), "SIGKILL leaves the socket file");
        assert_eq!(lab.get("/index.php"), 502);
        lab.start_php_fpm().unwrap();
        assert_ne!(lab.php_fpm_pid(), Some(old));
        assert_eq!(lab.get("/index.php"), 200);
        lab.stop_php_fpm().unwrap();
        assert!(!lab.socket().exists(), "a clean stop removes the socket");
        assert!(
            lab.stop_php_fpm().is_err(),
            "stopping twice is an error, not a panic"
        );
    }

    #[test]
    fn get_many_is_bounded_and_ordered() {
        let Some(lab) = start_or_skip(LabOptions::default()) else {
            return;
        };
        let statuses = lab.get_many("/index.php", 20, 4);
        assert_eq!(statuses, vec![200; 20]);
        assert_eq!(
            lab.get_many("/index.php", MAX_REQUESTS + 5, 0).len(),
            MAX_REQUESTS
        );
        // Nothing listens on the refused port: no answer is 0, not a hang or a panic.
        let r = http_get(lab.refused_port(), "/", LAB_UA, Duration::from_secs(1));
        assert_eq!(r.status, 0);
    }

    #[test]
    fn agent_config_points_at_the_lab_and_loads() {
        let Some(lab) = start_or_skip(LabOptions::default()) else {
            return;
        };
        let path = lab.write_agent_config().unwrap();
        let cfg = origin_agent::config::Config::load(&path).unwrap();
        assert_eq!(
            cfg.nginx_config.as_deref(),
            Some(lab.nginx_conf().as_path())
        );
        assert_eq!(cfg.php_fpm_configs, Some(vec![lab.php_fpm_conf()]));
        assert_eq!(
            cfg.logs.nginx_error,
            Some(vec![lab.error_log().display().to_string()])
        );
        assert_eq!(cfg.state_dir, lab.dir().join("agent-state"));
    }

    #[test]
    fn a_broken_pool_config_fails_with_the_php_fpm_log_and_cleans_up() {
        let opts = LabOptions {
            listen_owner: "no-such-user-lab".into(),
            ..LabOptions::default()
        };
        let t = Instant::now();
        match Lab::start(opts) {
            Err(LabError::Skip(reason)) => crate::skip(&reason),
            Err(LabError::Failed(msg)) => {
                assert!(msg.contains("php-fpm did not listen"), "{msg}");
                assert!(msg.contains("(it exited)"), "{msg}");
                assert!(
                    msg.contains("no-such-user-lab"),
                    "the log tail names the cause: {msg}"
                );
                assert!(
                    t.elapsed() < READY_TIMEOUT,
                    "an exited child is not waited for"
                );
                let dir = msg
                    .rsplit_once("(lab dir ")
                    .and_then(|(_, rest)| rest.split_once(", removed)"))
                    .map(|(d, _)| PathBuf::from(d))
                    .unwrap();
                assert!(!dir.exists(), "the failed lab's dir was left behind");
                // The lock was released: a good lab starts right after.
                let lab = start_or_skip(LabOptions::default()).unwrap();
                assert_eq!(lab.get("/index.php"), 200);
            }
            Ok(_) => panic!("a pool with an unknown listen.owner must not start"),
        }
    }
}
