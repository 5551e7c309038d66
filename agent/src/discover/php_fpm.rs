//! PHP-FPM configuration: the ini-style `php-fpm.conf` and its `include=` globs, the `[global]`
//! section and one section per pool, `$pool` substituted in values, `php_admin_value[...]` and
//! `php_value[...]`, parsed from the bytes the host returned into [`PhpFpm`] and [`Pool`]s.
//! Every value keeps its file and line.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::{Host, HostExt};

use super::model::{Address, Origin, PhpFpm, Pool, Sourced};

const MAX_FILES: usize = 256;
/// php-fpm's install prefix on Debian/Ubuntu/RHEL: relative `include=` paths start here.
pub const PHP_PREFIX: &str = "/usr";
/// Where relative `error_log` / `slowlog` / `access.log` paths start (`PHP_LOCALSTATEDIR`).
pub const PHP_LOCALSTATEDIR: &str = "/var";

fn state_path(value: &str) -> PathBuf {
    if value.starts_with('/') {
        PathBuf::from(value)
    } else {
        Path::new(PHP_LOCALSTATEDIR).join(value)
    }
}

/// Why a PHP-FPM main config could not be read (included files that fail are warnings).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhpFpmConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: crate::host::HostError,
    },
}

/// One `key = value` as written, with its section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// Parses one ini file; `include=` lines are returned as entries with key `include`.
/// Lines that are not `key = value` or `[section]` are skipped (php-fpm would refuse them; the
/// agent reads what it can).
pub fn parse(text: &str, path: &Path, section: &mut String) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            if let Some(name) = rest.split(']').next() {
                *section = name.trim().to_string();
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let mut value = value.trim();
        // A trailing `; comment` outside quotes.
        if !value.starts_with('"') {
            if let Some((v, _)) = value.split_once(" ;") {
                value = v.trim();
            }
        }
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        out.push(Entry {
            section: section.clone(),
            key: key.trim().to_string(),
            value: value.to_string(),
            file: path.to_path_buf(),
            line: i + 1,
        });
    }
    out
}

/// Entries in load order, the files read, the problems met.
pub type Loaded = (Vec<Entry>, Vec<PathBuf>, Vec<String>);

/// Reads the main config and its includes. Returns the entries in load order, the files read
/// and the problems met.
pub fn load(host: &dyn Host, main: &Path) -> Result<Loaded, PhpFpmConfigError> {
    let text = host
        .read_text(main)
        .map_err(|source| PhpFpmConfigError::Read {
            path: main.to_path_buf(),
            source,
        })?;
    let mut files = vec![main.to_path_buf()];
    let mut warnings = Vec::new();
    let mut section = "global".to_string();
    let mut entries = Vec::new();
    let mut bytes = text.len() as u64;
    // A deque: an include's entries go in front of the rest, one pop from the front per entry
    // (a vector's `remove(0)` made a long hostile include quadratic).
    let mut queue: VecDeque<Entry> = parse(&text, main, &mut section).into();
    // php-fpm prefixes a relative include with its install prefix (`/usr` on distros).
    let prefix = PathBuf::from(PHP_PREFIX);
    while let Some(entry) = queue.pop_front() {
        if entry.key == "include" {
            let pattern = if entry.value.starts_with('/') {
                entry.value.clone()
            } else {
                prefix.join(&entry.value).display().to_string()
            };
            let matched = if pattern.contains(['*', '?', '[']) {
                host.glob(&pattern)
            } else {
                vec![PathBuf::from(&pattern)]
            };
            let mut included = Vec::new();
            for file in matched {
                if files.len() >= MAX_FILES || files.contains(&file) {
                    continue;
                }
                match host.read_text(&file) {
                    Ok(text) if bytes + text.len() as u64 > super::MAX_CONFIG_BYTES => {
                        warnings.push(format!(
                            "{}:{}: include {}: the config passes {} bytes in all; rest ignored",
                            entry.file.display(),
                            entry.line,
                            file.display(),
                            super::MAX_CONFIG_BYTES
                        ));
                        break;
                    }
                    Ok(text) => {
                        bytes += text.len() as u64;
                        files.push(file.clone());
                        // An included file starts with the section that was current.
                        let mut sec = entry.section.clone();
                        included.extend(parse(&text, &file, &mut sec));
                    }
                    Err(e) => warnings.push(format!(
                        "{}:{}: include: {e}",
                        entry.file.display(),
                        entry.line
                    )),
                }
            }
            // Included entries come before the rest of the current file.
            for included_entry in included.into_iter().rev() {
                queue.push_front(included_entry);
            }
            continue;
        }
        entries.push(entry);
    }
    Ok((entries, files, warnings))
}

/// A php-fpm time value: seconds by default, or with `s`, `m`, `h`, `d`.
pub fn parse_time(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (digits, mult) = match value.chars().last()? {
        's' => (&value[..value.len() - 1], 1),
        'm' => (&value[..value.len() - 1], 60),
        'h' => (&value[..value.len() - 1], 3600),
        'd' => (&value[..value.len() - 1], 86400),
        _ => (value, 1),
    };
    Some(Duration::from_secs(
        digits.trim().parse::<u64>().ok()?.checked_mul(mult)?,
    ))
}

/// Parses a `listen` value: a path, `port`, `addr:port` or `[v6]:port`.
pub fn parse_listen(value: &str) -> Address {
    if value.starts_with('/') {
        Address::Unix(PathBuf::from(value))
    } else if value.parse::<u16>().is_ok() {
        Address::Tcp(format!("*:{value}"))
    } else {
        Address::Tcp(value.to_string())
    }
}

/// Builds the master's view from the entries.
pub fn build(entries: &[Entry], config_path: &Path) -> PhpFpm {
    let mut fpm = PhpFpm {
        config_path: config_path.to_path_buf(),
        ..PhpFpm::default()
    };
    let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for entry in entries {
        let origin = Origin::File {
            path: entry.file.clone(),
            line: entry.line,
        };
        if entry.section == "global" {
            if entry.key == "error_log" && entry.value != "syslog" {
                fpm.error_log = Some(Sourced::new(state_path(&entry.value), origin.clone()));
            }
            fpm.globals
                .insert(entry.key.clone(), Sourced::new(entry.value.clone(), origin));
            continue;
        }
        let name = entry.section.clone();
        let pool = pools.entry(name.clone()).or_insert_with(|| {
            order.push(name.clone());
            Pool {
                name: name.clone(),
                origin: origin.clone(),
                listen: None,
                listen_owner: None,
                listen_group: None,
                listen_mode: None,
                listen_acl_users: None,
                listen_acl_groups: None,
                listen_backlog: None,
                user: None,
                group: None,
                pm: None,
                max_children: None,
                request_terminate_timeout: None,
                request_slowlog_timeout: None,
                slowlog: None,
                access_log: None,
                status_path: None,
                php_error_log: None,
                php_memory_limit: None,
                other: BTreeMap::new(),
                workers: Vec::new(),
            }
        });
        let value = entry.value.replace("$pool", &name);
        match entry.key.as_str() {
            "listen" => pool.listen = Some(Sourced::new(parse_listen(&value), origin.clone())),
            "listen.owner" => pool.listen_owner = Some(Sourced::new(value, origin.clone())),
            "listen.group" => pool.listen_group = Some(Sourced::new(value, origin.clone())),
            "listen.mode" => pool.listen_mode = Some(Sourced::new(value, origin.clone())),
            "listen.acl_users" => pool.listen_acl_users = Some(Sourced::new(value, origin.clone())),
            "listen.acl_groups" => {
                pool.listen_acl_groups = Some(Sourced::new(value, origin.clone()))
            }
            "listen.backlog" => {
                pool.listen_backlog = value.parse().ok().map(|v| Sourced::new(v, origin.clone()))
            }
            "user" => pool.user = Some(Sourced::new(value, origin.clone())),
            "group" => pool.group = Some(Sourced::new(value, origin.clone())),
            "pm" => pool.pm = Some(Sourced::new(value, origin.clone())),
            "pm.max_children" => {
                pool.max_children = value.parse().ok().map(|v| Sourced::new(v, origin.clone()))
            }
            "request_terminate_timeout" => {
                pool.request_terminate_timeout =
                    parse_time(&value).map(|v| Sourced::new(v, origin.clone()))
            }
            "request_slowlog_timeout" => {
                pool.request_slowlog_timeout =
                    parse_time(&value).map(|v| Sourced::new(v, origin.clone()))
            }
            "slowlog" => pool.slowlog = Some(Sourced::new(state_path(&value), origin.clone())),
            "access.log" => {
                pool.access_log = Some(Sourced::new(PathBuf::from(value), origin.clone()))
            }
            "pm.status_path" => pool.status_path = Some(Sourced::new(value, origin.clone())),
            "php_admin_value[error_log]" | "php_value[error_log]" => {
                pool.php_error_log = Some(Sourced::new(PathBuf::from(value), origin.clone()))
            }
            "php_admin_value[memory_limit]" | "php_value[memory_limit]" => {
                pool.php_memory_limit = Some(Sourced::new(value, origin.clone()))
            }
            _ => {
                pool.other
                    .insert(entry.key.clone(), Sourced::new(value, origin));
            }
        }
    }
    fpm.pools = order.into_iter().filter_map(|n| pools.remove(&n)).collect();
    fpm.version = version_from_path(config_path);
    fpm
}

/// `8.2` from `/etc/php/8.2/fpm/php-fpm.conf` or `/usr/sbin/php-fpm8.2`.
pub fn version_from_path(path: &Path) -> Option<String> {
    let text = path.display().to_string();
    let re_like = |s: &str| -> Option<String> {
        let digits: String = s
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        (digits.contains('.') && digits.len() >= 3).then_some(digits)
    };
    if let Some(rest) = text.split("/php/").nth(1) {
        return re_like(rest.split('/').next().unwrap_or(""));
    }
    re_like(path.file_name()?.to_str()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::fixture::FixtureHost;

    const MAIN: &str = "\
[global]
pid = /run/php/php8.2-fpm.pid
error_log = /var/log/php8.2-fpm.log
; a comment
include=/etc/php/8.2/fpm/pool.d/*.conf
";

    const WWW: &str = "\
[www]
user = www-data
group = www-data
listen = /run/php/php8.2-fpm.sock
listen.owner = www-data
listen.group = www-data
listen.mode = 0660
listen.backlog = 1024
pm = dynamic
pm.max_children = 5
request_terminate_timeout = 30s
slowlog = /var/log/php-fpm/$pool.slow.log
request_slowlog_timeout = 5
php_admin_value[error_log] = /var/log/fpm-php.$pool.log
php_admin_value[memory_limit] = 128M
pm.start_servers = 2
";

    #[test]
    fn includes_are_bounded_in_total_bytes() {
        let big = format!("[p]\n; {}\nlisten = /run/p.sock\n", "x".repeat(4 << 20));
        let mut host = FixtureHost::new().file("/e/php-fpm.conf", "include=/e/pool.d/*.conf\n");
        for i in 0..10 {
            host = host.file(format!("/e/pool.d/p{i}.conf"), big.clone());
        }
        let (_, files, warnings) = load(&host, Path::new("/e/php-fpm.conf")).unwrap();
        assert!(files.len() < 10, "{}", files.len());
        assert!(
            warnings.iter().any(|w| w.contains("in all")),
            "{warnings:?}"
        );
    }

    #[test]
    fn included_entries_keep_their_place_before_the_rest_of_the_file() {
        let host = FixtureHost::new()
            .file("/e/php-fpm.conf", "a = 1\ninclude=/e/x.conf\nd = 4\n")
            .file("/e/x.conf", "b = 2\ninclude=/e/y.conf\nc = 3\n")
            .file("/e/y.conf", "b2 = 22\n");
        let (entries, _, _) = load(&host, Path::new("/e/php-fpm.conf")).unwrap();
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "b2", "c", "d"]);
    }

    #[test]
    fn loads_global_and_pools_through_includes() {
        let host = FixtureHost::new()
            .file("/etc/php/8.2/fpm/php-fpm.conf", MAIN)
            .file("/etc/php/8.2/fpm/pool.d/www.conf", WWW)
            .file(
                "/etc/php/8.2/fpm/pool.d/zz.conf",
                "[api]\nlisten = 127.0.0.1:9001\n\"bad line\"\n",
            );
        let main = Path::new("/etc/php/8.2/fpm/php-fpm.conf");
        let (entries, files, warnings) = load(&host, main).unwrap();
        assert_eq!(files.len(), 3);
        assert!(warnings.is_empty());
        let fpm = build(&entries, main);
        assert_eq!(fpm.version.as_deref(), Some("8.2"));
        assert_eq!(
            fpm.error_log.as_ref().unwrap().value,
            PathBuf::from("/var/log/php8.2-fpm.log")
        );
        assert_eq!(fpm.pools.len(), 2);
        let www = &fpm.pools[0];
        assert_eq!(www.name, "www");
        assert_eq!(
            www.listen.as_ref().unwrap().value,
            Address::Unix("/run/php/php8.2-fpm.sock".into())
        );
        assert_eq!(www.listen_mode.as_ref().unwrap().value, "0660");
        assert_eq!(www.listen_backlog.as_ref().unwrap().value, 1024);
        assert_eq!(www.max_children.as_ref().unwrap().value, 5);
        assert_eq!(
            www.max_children.as_ref().unwrap().origin.to_string(),
            "/etc/php/8.2/fpm/pool.d/www.conf:10"
        );
        assert_eq!(
            www.request_terminate_timeout.as_ref().unwrap().value,
            Duration::from_secs(30)
        );
        assert_eq!(
            www.slowlog.as_ref().unwrap().value,
            PathBuf::from("/var/log/php-fpm/www.slow.log")
        );
        assert_eq!(
            www.php_error_log.as_ref().unwrap().value,
            PathBuf::from("/var/log/fpm-php.www.log")
        );
        assert_eq!(www.php_memory_limit.as_ref().unwrap().value, "128M");
        assert!(www.other.contains_key("pm.start_servers"));
        assert_eq!(
            fpm.pools[1].listen.as_ref().unwrap().value,
            Address::Tcp("127.0.0.1:9001".into())
        );
    }

    #[test]
    fn relative_paths_follow_php_fpm_prefixes() {
        let host = FixtureHost::new()
            .file(
                "/opt/fpm/php-fpm.conf",
                "error_log = log/php-fpm.log\ninclude = etc/fpm.d/*.conf\n",
            )
            .file(
                "/usr/etc/fpm.d/a.conf",
                "[a]\nslowlog = log/$pool.slow\nlisten = [::1]:9000\n",
            );
        let main = Path::new("/opt/fpm/php-fpm.conf");
        let (entries, files, _) = load(&host, main).unwrap();
        assert_eq!(files.len(), 2);
        let fpm = build(&entries, main);
        assert_eq!(
            fpm.error_log.unwrap().value,
            PathBuf::from("/var/log/php-fpm.log")
        );
        assert_eq!(
            fpm.pools[0].slowlog.as_ref().unwrap().value,
            PathBuf::from("/var/log/a.slow")
        );
    }

    #[test]
    fn unreadable_config_is_an_error_and_times_parse() {
        let host = FixtureHost::new().error(
            "/etc/php-fpm.conf",
            crate::host::HostError::PermissionDenied {
                path: "/etc/php-fpm.conf".into(),
            },
        );
        assert!(load(&host, Path::new("/etc/php-fpm.conf"))
            .unwrap_err()
            .to_string()
            .contains("permission denied"));
        assert_eq!(parse_time("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_time("0"), Some(Duration::ZERO));
        assert_eq!(parse_time("abc"), None);
        assert_eq!(parse_listen("9000"), Address::Tcp("*:9000".into()));
        assert_eq!(
            version_from_path(Path::new("/usr/sbin/php-fpm8.3")).as_deref(),
            Some("8.3")
        );
    }
}
