//! The discovered web stack as data: what runs, which configs it read, where it logs, what it
//! talks to. Every value that came from a config file carries where it came from
//! ([`Origin`]), so a fix can name the file and line to change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a value came from: a config file and line, or how it was inferred.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// A config file and 1-based line.
    File { path: PathBuf, line: usize },
    /// A running process's command line.
    Process { pid: u32 },
    /// The agent's config file.
    Config,
    /// Nobody set it: the software's built-in default.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Process { pid } => write!(f, "process {pid}"),
            Origin::Config => f.write_str("origin-agent config"),
            Origin::Default => f.write_str("built-in default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Sourced<T> {
    pub fn new(value: T, origin: Origin) -> Self {
        Sourced { value, origin }
    }

    pub fn default_value(value: T) -> Self {
        Sourced {
            value,
            origin: Origin::Default,
        }
    }
}

/// An address a server listens on or an upstream is reached at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "address", rename_all = "lowercase")]
pub enum Address {
    Unix(PathBuf),
    /// `host:port` (host may be a name, an IPv4 address, `*`, or a bracketed IPv6 address).
    Tcp(String),
}

impl Address {
    /// The endpoint to connect to for an address (wildcards become loopback).
    pub fn endpoint(&self) -> crate::host::Endpoint {
        use crate::host::Endpoint;
        match self {
            Address::Unix(path) => Endpoint::Unix(path.clone()),
            Address::Tcp(addr) => {
                let fixed = if let Some(port) = addr.strip_prefix("*:") {
                    format!("127.0.0.1:{port}")
                } else if let Some(port) = addr.strip_prefix("0.0.0.0:") {
                    format!("127.0.0.1:{port}")
                } else if let Some(port) = addr.strip_prefix("[::]:") {
                    format!("[::1]:{port}")
                } else {
                    addr.clone()
                };
                Endpoint::Tcp(fixed)
            }
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(addr) => f.write_str(addr),
        }
    }
}

/// A running process that discovery looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// `/proc/PID/exe` target.
    pub exe: Option<PathBuf>,
    /// `/proc/PID/cmdline`, arguments joined by spaces.
    pub cmdline: String,
    /// The PIDs of its children (workers).
    pub children: Vec<u32>,
}

/// nginx as discovered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nginx {
    pub master: Option<ProcessInfo>,
    /// The worker processes' PIDs (children of the master).
    #[serde(default)]
    pub workers: Vec<u32>,
    /// The prefix relative paths resolve against (`-p`, `--prefix=` of `nginx -V`).
    #[serde(default)]
    pub prefix: Option<PathBuf>,
    /// The main config file, and how it was found (process, `nginx -V`, default path).
    pub config_path: Option<PathBuf>,
    /// Every file the config loaded (includes resolved), in load order.
    pub config_files: Vec<PathBuf>,
    /// Why the config could not be read, if it could not.
    pub config_error: Option<String>,
    pub user: Option<Sourced<String>>,
    pub worker_processes: Option<Sourced<u32>>,
    pub worker_connections: Option<Sourced<u32>>,
    pub worker_rlimit_nofile: Option<Sourced<u64>>,
    pub error_logs: Vec<Sourced<PathBuf>>,
    pub access_logs: Vec<AccessLog>,
    /// `log_format NAME '...'`, joined into one string per name (`combined` is built in).
    pub log_formats: BTreeMap<String, String>,
    pub servers: Vec<Server>,
    pub upstream_groups: Vec<UpstreamGroup>,
    /// Every `fastcgi_pass` / `proxy_pass` / `uwsgi_pass` target and where it stands.
    pub upstream_targets: Vec<UpstreamTarget>,
    /// `fastcgi_read_timeout` (the tightest one found), default 60 s.
    pub fastcgi_read_timeout: Option<Sourced<Duration>>,
    pub proxy_read_timeout: Option<Sourced<Duration>>,
    /// `fastcgi_buffer_size` in bytes (default one page, 4 KiB or 8 KiB).
    pub fastcgi_buffer_size: Option<Sourced<u64>>,
    pub proxy_buffer_size: Option<Sourced<u64>>,
    pub real_ip: RealIp,
    /// `ssl_certificate` set in `http {}` (servers inherit it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_certificate: Option<Sourced<PathBuf>>,
}

/// One `access_log PATH [FORMAT]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLog {
    pub path: PathBuf,
    /// The format name (`combined` when none is given).
    pub format_name: String,
    /// The format string, when known (built-in `combined` or a `log_format`).
    pub format: Option<String>,
    pub origin: Origin,
}

/// One `server { }` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub names: Vec<String>,
    pub listens: Vec<Listen>,
    pub origin: Origin,
    /// `ssl_certificate` of the server (or inherited from `http {}`), resolved against the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_certificate: Option<Sourced<PathBuf>>,
    /// `root` directives of the server and its locations (document roots), resolved against
    /// the prefix; WordPress discovery starts from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<PathBuf>,
}

impl Server {
    /// The `server_name`s that are plain host names (no `_`, regex, wildcard, address or
    /// undotted name), lowercased: what a certificate must cover and DNS must resolve.
    pub fn host_names(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| !n.starts_with('~') && !n.contains('*') && n.contains('.'))
            .filter(|n| n.parse::<std::net::IpAddr>().is_err())
            .map(|n| n.to_ascii_lowercase())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    pub address: Address,
    pub port: Option<u16>,
    pub ssl: bool,
    pub default_server: bool,
    /// `backlog=` of the listen directive (default 511 on Linux).
    pub backlog: Option<u32>,
}

/// `upstream NAME { server ...; }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamGroup {
    pub name: String,
    pub servers: Vec<Address>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    Fastcgi,
    Proxy,
    Uwsgi,
    Grpc,
}

/// A `*_pass` target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTarget {
    pub kind: UpstreamKind,
    /// The address, or for a group the group's servers are listed in `upstream_groups`.
    pub address: Option<Address>,
    /// The name of the `upstream {}` group when the pass names one.
    pub group: Option<String>,
    /// True when the target contains variables (resolved at run time).
    pub dynamic: bool,
    /// The raw argument as written.
    pub raw: String,
    pub origin: Origin,
}

/// nginx's real-IP setup (`ngx_http_realip_module`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealIp {
    /// Each `set_real_ip_from` value as written (a CIDR, an address, `unix:`) and where.
    pub set_real_ip_from: Vec<Sourced<String>>,
    pub real_ip_header: Option<Sourced<String>>,
    pub real_ip_recursive: bool,
}

impl RealIp {
    /// What this setup tells the CDN detection (trusted ranges as written, the header).
    pub fn cdn_hints(&self) -> crate::cdn::RealIpHints<'_> {
        crate::cdn::RealIpHints {
            trusted: self
                .set_real_ip_from
                .iter()
                .map(|s| s.value.as_str())
                .collect(),
            header: self.real_ip_header.as_ref().map(|h| h.value.as_str()),
        }
    }
}

/// A PHP-FPM master and its pools.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhpFpm {
    pub master: Option<ProcessInfo>,
    /// The main config (`php-fpm.conf`), from `php-fpm: master process (FILE)`.
    pub config_path: PathBuf,
    pub config_files: Vec<PathBuf>,
    pub config_error: Option<String>,
    /// The master's `error_log`.
    pub error_log: Option<Sourced<PathBuf>>,
    /// `emergency_restart_threshold`, `process_control_timeout`, ... (global section), raw.
    pub globals: BTreeMap<String, Sourced<String>>,
    pub pools: Vec<Pool>,
    /// e.g. `8.2`, from the binary or config path.
    pub version: Option<String>,
}

/// One PHP-FPM pool (`[www]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub origin: Origin,
    pub listen: Option<Sourced<Address>>,
    pub listen_owner: Option<Sourced<String>>,
    pub listen_group: Option<Sourced<String>>,
    pub listen_mode: Option<Sourced<String>>,
    pub listen_acl_users: Option<Sourced<String>>,
    pub listen_acl_groups: Option<Sourced<String>>,
    /// `listen.backlog` (default 511 on Linux).
    pub listen_backlog: Option<Sourced<i64>>,
    pub user: Option<Sourced<String>>,
    pub group: Option<Sourced<String>>,
    /// `pm` = static / dynamic / ondemand.
    pub pm: Option<Sourced<String>>,
    pub max_children: Option<Sourced<u32>>,
    pub request_terminate_timeout: Option<Sourced<Duration>>,
    pub request_slowlog_timeout: Option<Sourced<Duration>>,
    pub slowlog: Option<Sourced<PathBuf>>,
    pub access_log: Option<Sourced<PathBuf>>,
    pub status_path: Option<Sourced<String>>,
    /// `php_admin_value[error_log]` / `php_value[error_log]`.
    pub php_error_log: Option<Sourced<PathBuf>>,
    /// `php_admin_value[memory_limit]` / `php_value[memory_limit]`, raw.
    pub php_memory_limit: Option<Sourced<String>>,
    /// Every other key as written, for checks that need one.
    pub other: BTreeMap<String, Sourced<String>>,
    /// PIDs of this pool's workers (from `php-fpm: pool NAME` processes).
    pub workers: Vec<u32>,
}

/// MySQL or MariaDB as discovered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Database {
    pub process: Option<ProcessInfo>,
    /// `mariadb` or `mysql`.
    pub flavor: String,
    pub config_files: Vec<PathBuf>,
    pub error_log: Option<Sourced<PathBuf>>,
    pub socket: Option<Sourced<PathBuf>>,
    pub port: Option<Sourced<u16>>,
    pub bind_address: Option<Sourced<String>>,
    pub datadir: Option<Sourced<PathBuf>>,
    pub max_connections: Option<Sourced<u32>>,
}

/// Apache httpd as discovered: its process, the config it read (includes resolved), and what
/// the rest of the agent needs from it. Other code (the origin self-test, site discovery) should
/// take the served names from [`Apache::vhosts`] (`server_name`, `aliases`, `document_root`),
/// the ports from [`Apache::listens`], and the backends from [`Apache::proxy_targets`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Apache {
    pub master: Option<ProcessInfo>,
    /// The children of the master (each serves requests: threads under event/worker).
    #[serde(default)]
    pub workers: Vec<u32>,
    /// `apache2` (Debian) or `httpd` (RHEL).
    #[serde(default)]
    pub flavor: String,
    pub config_path: Option<PathBuf>,
    #[serde(default)]
    pub server_root: Option<PathBuf>,
    /// Every file the config loaded (includes resolved), in load order.
    #[serde(default)]
    pub config_files: Vec<PathBuf>,
    #[serde(default)]
    pub config_error: Option<String>,
    /// Loaded modules (`proxy_fcgi`, `remoteip`, `status`, `mpm_event`, …).
    #[serde(default)]
    pub modules: Vec<String>,
    /// `event`, `worker` or `prefork`.
    #[serde(default)]
    pub mpm: Option<String>,
    #[serde(default)]
    pub user: Option<Sourced<String>>,
    #[serde(default)]
    pub group: Option<Sourced<String>>,
    #[serde(default)]
    pub server_name: Option<Sourced<String>>,
    /// The main server's `DocumentRoot`.
    #[serde(default)]
    pub document_root: Option<Sourced<PathBuf>>,
    #[serde(default)]
    pub listens: Vec<ApacheListen>,
    #[serde(default)]
    pub vhosts: Vec<VirtualHost>,
    /// Every `ErrorLog` (main server first).
    pub error_logs: Vec<Sourced<PathBuf>>,
    #[serde(default)]
    pub error_log_format: Option<Sourced<String>>,
    /// Every `CustomLog`/`TransferLog` file; `format` is the `LogFormat` translated into the
    /// nginx `log_format` syntax the access-log parser compiles.
    #[serde(default)]
    pub access_logs: Vec<AccessLog>,
    /// `LogFormat "…" NAME`, as written.
    #[serde(default)]
    pub log_formats: BTreeMap<String, String>,
    /// `ProxyPass`, `ProxyPassMatch` and `SetHandler "proxy:…"` backends.
    #[serde(default)]
    pub proxy_targets: Vec<ApacheProxyTarget>,
    #[serde(default)]
    pub max_request_workers: Option<Sourced<u32>>,
    #[serde(default)]
    pub server_limit: Option<Sourced<u32>>,
    #[serde(default)]
    pub threads_per_child: Option<Sourced<u32>>,
    #[serde(default)]
    pub listen_backlog: Option<Sourced<u32>>,
    /// `Timeout` (default 60 s).
    #[serde(default)]
    pub timeout: Option<Sourced<Duration>>,
    /// `ProxyTimeout` or a `ProxyPass … timeout=` (the tightest).
    #[serde(default)]
    pub proxy_timeout: Option<Sourced<Duration>>,
    #[serde(default)]
    pub remote_ip: RemoteIp,
    /// The `<Location>` that serves mod_status (`SetHandler server-status`).
    #[serde(default)]
    pub status_path: Option<Sourced<String>>,
}

/// One `Listen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApacheListen {
    /// The address part (`127.0.0.1`, `[::]`), `None` for every address.
    pub host: Option<String>,
    pub port: u16,
    pub ssl: bool,
    pub origin: Origin,
}

/// One `<VirtualHost>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualHost {
    /// The section's addresses (`*:80`, `127.0.0.1:8080`, `_default_:443`).
    pub addresses: Vec<String>,
    pub server_name: Option<String>,
    pub aliases: Vec<String>,
    pub document_root: Option<Sourced<PathBuf>>,
    pub error_log: Option<Sourced<PathBuf>>,
    /// `SSLEngine on`.
    pub ssl: bool,
    pub origin: Origin,
}

impl VirtualHost {
    /// `ServerName` and `ServerAlias`es that are plain host names, lowercased.
    pub fn host_names(&self) -> Vec<String> {
        self.server_name
            .iter()
            .chain(&self.aliases)
            .map(|n| n.split(':').next().unwrap_or(n))
            .filter(|n| !n.contains('*') && n.contains('.'))
            .filter(|n| n.parse::<std::net::IpAddr>().is_err())
            .map(|n| n.to_ascii_lowercase())
            .collect()
    }
}

/// A backend httpd proxies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApacheProxyTarget {
    pub kind: UpstreamKind,
    /// `None` for a balancer or a target with variables.
    pub address: Option<Address>,
    /// `ProxyPass`, `ProxyPassMatch` or `SetHandler`.
    pub directive: String,
    pub raw: String,
    /// The index into [`Apache::vhosts`] of the enclosing `<VirtualHost>`.
    pub vhost: Option<usize>,
    pub origin: Origin,
}

/// mod_remoteip settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteIp {
    pub header: Option<Sourced<String>>,
    /// `RemoteIPTrustedProxy` / `RemoteIPInternalProxy` values (and the lines of their lists).
    pub trusted: Vec<Sourced<String>>,
    /// `RemoteIPTrustedProxyList` / `RemoteIPInternalProxyList` files.
    pub trusted_lists: Vec<Sourced<PathBuf>>,
}

/// Everything discovery found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    /// The nginx the probes look at: the one started with `/etc/nginx/nginx.conf` (or the
    /// config the agent names), else the oldest running master.
    pub nginx: Option<Nginx>,
    /// Other running nginx masters (test instances, a second site), discovered the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_nginx: Vec<Nginx>,
    pub apache: Option<Apache>,
    pub php_fpm: Vec<PhpFpm>,
    pub database: Option<Database>,
    /// Human-readable notes on what was found and from where ("nginx: master pid 812, config
    /// /etc/nginx/nginx.conf from its command line").
    pub notes: Vec<String>,
    /// Processes that claimed to be part of the stack but whose claims were not believed, each
    /// with the reason ([`crate::trust`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untrusted: Vec<String>,
}
