//! The agent's configuration (`/etc/origin-agent/config.yaml`), in three steps: **parse** (YAML
//! into [`RawConfig`], unknown keys and wrong types are errors naming the key's path and line),
//! **validate** (values that parse but make no sense: a bad listen address, an unknown provider,
//! a zero interval), **resolve** (defaults filled in, giving [`Config`]). Every key is optional;
//! discovery fills in what the file leaves out, and the file overrides every discovered path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/origin-agent/config.yaml";
/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/origin-agent";

/// Why a config could not be used. Each variant names the file, and the key and line when known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: `{key}`: {message}")]
    Parse {
        path: PathBuf,
        key: String,
        line: usize,
        message: String,
    },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The file as written. Every struct denies unknown fields, so a typo is an error, not a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub logs: RawLogs,
    #[serde(default)]
    pub nginx: RawNginx,
    #[serde(default)]
    pub apache: RawApache,
    #[serde(default)]
    pub php_fpm: RawPhpFpm,
    #[serde(default)]
    pub mysql: RawMysql,
    #[serde(default)]
    pub cdn: RawCdn,
    #[serde(default)]
    pub metrics: RawMetrics,
    pub state_dir: Option<PathBuf>,
    /// Site rule packs (`*.yaml`) that extend or override the embedded ones.
    pub rules_dir: Option<PathBuf>,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub notify: RawNotify,
    #[serde(default)]
    pub self_test: RawSelfTest,
    #[serde(default)]
    pub database: RawDatabase,
}

/// The origin self-test (requests to the local listeners with each served name).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelfTest {
    /// On by default.
    pub enabled: Option<bool>,
    /// Paths asked per name (default `/`), at most 4.
    pub paths: Option<Vec<String>>,
}

/// How the agent logs in to the database for its live status.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// A root-owned my.cnf-style file with `[client]` `user=` and `password=` (never put the
    /// password in this config).
    pub credentials_file: Option<PathBuf>,
}

/// Log paths or globs per source; rotated and `.gz` siblings are read by `audit`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    pub nginx_access: Option<Vec<String>>,
    pub nginx_error: Option<Vec<String>>,
    pub php_fpm: Option<Vec<String>>,
    pub php_fpm_slow: Option<Vec<String>>,
    pub php: Option<Vec<String>>,
    pub mysql_error: Option<Vec<String>>,
    pub kernel: Option<Vec<String>>,
    /// Apache httpd error logs (its access logs are listed under `nginx_access`).
    pub apache_error: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNginx {
    /// The main config file (default: what the running master was started with).
    pub config: Option<PathBuf>,
    /// The nginx binary used for `nginx -T`.
    pub binary: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApache {
    /// httpd's main config (default: what the running master was started with, else
    /// `/etc/apache2/apache2.conf` or `/etc/httpd/conf/httpd.conf`).
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhpFpm {
    /// Main config files of PHP-FPM masters (default: from the running masters).
    pub configs: Option<Vec<PathBuf>>,
    /// Status page URL path of the pools, if `pm.status_path` is exposed through nginx.
    pub status_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMysql {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCdn {
    /// Which CDNs front this origin; default: detected from the access logs and nginx's config.
    pub providers: Option<Vec<String>>,
    /// The ports the CDN connects to (default: 80, 443 and whatever nginx listens on).
    pub ports: Option<Vec<u16>>,
    /// Statuspage-style summary URL per provider (`cloudflare: https://…/summary.json`).
    pub status_urls: Option<BTreeMap<String, String>>,
    /// This origin's public addresses when they are on no local interface (NAT, elastic or
    /// floating IPs): lets the DNS check tell "points elsewhere" from "points at us".
    pub origin_addresses: Option<Vec<std::net::IpAddr>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// The default log window, e.g. `1h`, `30m`, `2d`.
    pub since: Option<String>,
    /// How long each external command may take, e.g. `10s`.
    pub command_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// How often the probes re-run, e.g. `60s`.
    pub probe_interval: Option<String>,
    /// The sliding window the diagnosis looks at, e.g. `10m`.
    pub window: Option<String>,
    /// 5xx per minute that open an incident.
    pub incident_threshold: Option<u64>,
    /// An incident also opens at this many times the host's learned normal 5xx rate (0: off).
    pub baseline_factor: Option<f64>,
    /// Keep the CDN whitelist current on this schedule (off when absent), e.g. `24h`.
    pub whitelist_every: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub webhook: Option<String>,
    /// `json` (default) or `slack`.
    pub webhook_format: Option<String>,
    /// A program run with the incident as JSON on its standard input.
    pub exec: Option<PathBuf>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    pub logs: RawLogs,
    pub nginx_config: Option<PathBuf>,
    pub nginx_binary: Option<PathBuf>,
    pub apache_config: Option<PathBuf>,
    pub php_fpm_configs: Option<Vec<PathBuf>>,
    pub php_fpm_status_url: Option<String>,
    pub mysql_config: Option<PathBuf>,
    pub mysql_socket: Option<PathBuf>,
    pub mysql_port: Option<u16>,
    pub cdn_providers: Option<Vec<String>>,
    pub cdn_ports: Option<Vec<u16>>,
    pub origin_addresses: Vec<std::net::IpAddr>,
    pub metrics_listen: SocketAddr,
    pub state_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub audit_since: Duration,
    pub command_timeout: Duration,
    pub probe_interval: Duration,
    pub daemon_window: Duration,
    pub incident_threshold: u64,
    pub baseline_factor: f64,
    pub whitelist_every: Option<Duration>,
    pub webhook: Option<String>,
    pub webhook_format: WebhookFormat,
    pub notify_exec: Option<PathBuf>,
    pub self_test_enabled: bool,
    pub self_test_paths: Vec<String>,
    pub database_credentials_file: Option<PathBuf>,
    pub cdn_status_urls: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Json,
    Slack,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(RawConfig::default(), None).unwrap_or_else(|_| unreachable_default())
    }
}

#[allow(clippy::panic)]
fn unreachable_default() -> Config {
    // The empty config resolves by construction; this is covered by a test.
    panic!("the empty config must resolve")
}

impl Config {
    /// Loads a config file: parse, validate, resolve.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Loads the given file, or the default file when it exists, or the empty config.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Self::load(path),
            None if Path::new(DEFAULT_PATH).exists() => Self::load(Path::new(DEFAULT_PATH)),
            None => Ok(Config::default()),
        }
    }

    /// Parses YAML text; `path` names the file in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw = parse(text, path)?;
        Self::resolve(raw, Some(path))
    }

    fn resolve(raw: RawConfig, path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = path.map(Path::to_path_buf).unwrap_or_default();
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: file.clone(),
            key: key.to_string(),
            message,
        };
        // Destructure every field so a new key cannot skip validation (STYLE.md habit 5).
        let RawConfig {
            logs,
            nginx,
            apache,
            php_fpm,
            mysql,
            cdn,
            metrics,
            state_dir,
            rules_dir,
            audit,
            daemon,
            notify,
            self_test,
            database,
        } = raw;
        let (self_test_enabled, self_test_paths) = resolve_self_test(self_test, &invalid)?;
        let cdn_status_urls = cdn.status_urls.clone().unwrap_or_default();
        for (name, url) in &cdn_status_urls {
            if crate::cdn::Provider::parse(name).is_none() {
                return Err(invalid(
                    "cdn.status_urls",
                    format!("unknown provider `{name}`"),
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "cdn.status_urls",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }
        if let Some(file) = &database.credentials_file {
            if !file.is_absolute() {
                return Err(invalid(
                    "database.credentials_file",
                    format!("`{}` is not an absolute path", file.display()),
                ));
            }
        }
        let RawLogs {
            nginx_access,
            nginx_error,
            php_fpm: php_fpm_logs,
            php_fpm_slow,
            php,
            mysql_error,
            kernel,
            apache_error,
        } = &logs;
        for (key, list) in [
            ("logs.nginx_access", nginx_access),
            ("logs.nginx_error", nginx_error),
            ("logs.php_fpm", php_fpm_logs),
            ("logs.php_fpm_slow", php_fpm_slow),
            ("logs.php", php),
            ("logs.mysql_error", mysql_error),
            ("logs.kernel", kernel),
            ("logs.apache_error", apache_error),
        ] {
            for entry in list.iter().flatten() {
                if !entry.starts_with('/') {
                    return Err(invalid(key, format!("`{entry}` is not an absolute path")));
                }
                if glob::Pattern::new(entry).is_err() {
                    return Err(invalid(key, format!("`{entry}` is not a valid glob")));
                }
            }
        }
        let metrics_listen = match metrics.listen.as_deref() {
            None => SocketAddr::from(([127, 0, 0, 1], 9502)),
            Some(text) => text.parse().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!("`{text}` is not an address:port such as 127.0.0.1:9502"),
                )
            })?,
        };
        if let Some(providers) = &cdn.providers {
            for name in providers {
                if crate::cdn::Provider::parse(name).is_none() {
                    return Err(invalid(
                        "cdn.providers",
                        format!(
                            "unknown provider `{name}`; known: {}",
                            crate::cdn::Provider::names().join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some(ports) = &cdn.ports {
            if ports.contains(&0) {
                return Err(invalid("cdn.ports", "port 0 is not a port".to_string()));
            }
        }
        let duration =
            |key: &str, text: Option<&str>, default: Duration| -> Result<Duration, ConfigError> {
                match text {
                    None => Ok(default),
                    Some(text) => match parse_duration(text) {
                        Some(d) if !d.is_zero() => Ok(d),
                        _ => Err(invalid(
                            key,
                            format!("`{text}` is not a duration such as 90s, 15m, 1h or 2d"),
                        )),
                    },
                }
            };
        let audit_since = duration(
            "audit.since",
            audit.since.as_deref(),
            Duration::from_secs(3600),
        )?;
        let command_timeout = duration(
            "audit.command_timeout",
            audit.command_timeout.as_deref(),
            Duration::from_secs(10),
        )?;
        let probe_interval = duration(
            "daemon.probe_interval",
            daemon.probe_interval.as_deref(),
            Duration::from_secs(60),
        )?;
        let daemon_window = duration(
            "daemon.window",
            daemon.window.as_deref(),
            Duration::from_secs(600),
        )?;
        let whitelist_every = match daemon.whitelist_every.as_deref() {
            None => None,
            Some(text) => Some(duration(
                "daemon.whitelist_every",
                Some(text),
                Duration::ZERO,
            )?),
        };
        let incident_threshold = daemon.incident_threshold.unwrap_or(10);
        if incident_threshold == 0 {
            return Err(invalid(
                "daemon.incident_threshold",
                "must be at least 1".to_string(),
            ));
        }
        let baseline_factor = daemon.baseline_factor.unwrap_or(5.0);
        if !baseline_factor.is_finite() || baseline_factor < 0.0 {
            return Err(invalid(
                "daemon.baseline_factor",
                format!("{baseline_factor} is not a factor (0 turns the baseline off)"),
            ));
        }
        let webhook_format = match notify.webhook_format.as_deref() {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(other) => {
                return Err(invalid(
                    "notify.webhook_format",
                    format!("`{other}` is not one of json, slack"),
                ))
            }
        };
        if let Some(url) = &notify.webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "notify.webhook",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }
        Ok(Config {
            path: path.map(Path::to_path_buf),
            logs,
            nginx_config: nginx.config,
            nginx_binary: nginx.binary,
            apache_config: apache.config,
            php_fpm_configs: php_fpm.configs,
            php_fpm_status_url: php_fpm.status_url,
            mysql_config: mysql.config,
            mysql_socket: mysql.socket,
            mysql_port: mysql.port,
            cdn_providers: cdn.providers,
            cdn_ports: cdn.ports,
            origin_addresses: cdn.origin_addresses.unwrap_or_default(),
            metrics_listen,
            state_dir: state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            rules_dir: rules_dir.unwrap_or_else(|| PathBuf::from(crate::rules::DEFAULT_RULES_DIR)),
            audit_since,
            command_timeout,
            probe_interval,
            daemon_window,
            incident_threshold,
            baseline_factor,
            whitelist_every,
            webhook: notify.webhook,
            webhook_format,
            notify_exec: notify.exec,
            self_test_enabled,
            self_test_paths,
            database_credentials_file: database.credentials_file,
            cdn_status_urls,
        })
    }
}

fn resolve_self_test(
    raw: RawSelfTest,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(bool, Vec<String>), ConfigError> {
    let RawSelfTest { enabled, paths } = raw;
    let paths = paths.unwrap_or_else(|| vec!["/".to_string()]);
    if paths.is_empty() || paths.len() > 4 {
        return Err(invalid("self_test.paths", "give 1 to 4 paths".to_string()));
    }
    for p in &paths {
        if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "self_test.paths",
                format!("`{p}` is not a path such as /health"),
            ));
        }
    }
    Ok((enabled.unwrap_or(true), paths))
}

fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    let deserializer = yaml_serde::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let line = inner.location().map_or(0, |loc| loc.line());
        let message = inner.to_string();
        // yaml_serde appends " at line N column M"; the line is already in our prefix.
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        ConfigError::Parse {
            path: path.to_path_buf(),
            key: if key == "." {
                "(top level)".to_string()
            } else {
                key
            },
            line,
            message,
        }
    })
}

/// Parses `90s`, `15m`, `1h`, `2d`, `1w` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "m" | "min" | "mins" => n.checked_mul(60)?,
        "h" | "hour" | "hours" => n.checked_mul(3600)?,
        "d" | "day" | "days" => n.checked_mul(86_400)?,
        "w" | "week" | "weeks" => n.checked_mul(604_800)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/etc/origin-agent/config.yaml"))
    }

    #[test]
    fn the_empty_config_resolves_to_defaults() {
        let config = load("").unwrap();
        assert_eq!(config.metrics_listen.to_string(), "127.0.0.1:9502");
        assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(config.audit_since, Duration::from_secs(3600));
        let _ = Config::default();
    }

    #[test]
    fn the_design_example_parses() {
        let config = load(
            "logs:\n  nginx_access: [/var/log/nginx/access.log]\n  nginx_error:  [/var/log/nginx/error.log]\n  php_fpm:      [/var/log/php8.2-fpm.log]\n  mysql_error:  [/var/log/mysql/error.log]\ncdn:\n  providers: [cloudflare]\nmetrics:\n  listen: 127.0.0.1:9502\nstate_dir: /var/lib/origin-agent\n",
        )
        .unwrap();
        assert_eq!(config.cdn_providers.unwrap(), vec!["cloudflare"]);
        assert_eq!(
            config.logs.nginx_error.unwrap(),
            vec!["/var/log/nginx/error.log"]
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err =
            load("logs:\n  nginx_access: [/var/log/a.log]\n  ngnix_error: [/x]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(":3:"), "{text}");
        assert!(text.contains("ngnix_error"), "{text}");
    }

    #[test]
    fn the_baseline_factor_defaults_to_5_can_be_off_and_must_be_a_factor() {
        assert_eq!(load("{}\n").unwrap().baseline_factor, 5.0);
        assert_eq!(
            load("daemon:\n  baseline_factor: 0\n")
                .unwrap()
                .baseline_factor,
            0.0
        );
        let err = load("daemon:\n  baseline_factor: -2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("daemon.baseline_factor"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_key_path_and_line() {
        let err = load("metrics:\n  listen: 127.0.0.1:9502\ndaemon:\n  incident_threshold: lots\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("daemon.incident_threshold"), "{text}");
        assert!(text.contains(":4:"), "{text}");
    }

    #[test]
    fn invalid_values_are_named() {
        let err = load("metrics:\n  listen: localhost\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.listen"), "{err}");
        let err = load("cdn:\n  providers: [cloudflair]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cloudflair") && err.contains("cloudflare"),
            "{err}"
        );
        let err = load("logs:\n  nginx_error: [relative.log]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("logs.nginx_error"), "{err}");
        let err = load("audit:\n  since: soon\n").unwrap_err().to_string();
        assert!(err.contains("audit.since"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("1y"), None);
        assert_eq!(parse_duration(""), None);
    }
}
