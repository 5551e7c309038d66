//! Which log files to read: the ones discovery found (nginx error and access logs with their
//! `log_format`, the PHP-FPM master's `error_log`, pool slowlogs, the PHP `error_log`, the
//! MySQL/MariaDB error log, the kernel log), replaced per source by the agent's `logs.*`
//! (paths or globs, expanded through the host), and distro defaults that exist when nothing
//! was found.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::event::LogSource;
use crate::host::{Host, HostExt};
use crate::logs::LogFile;

use super::model::Discovery;

/// Every log to read.
pub fn log_files(host: &dyn Host, discovery: &Discovery, config: &Config) -> Vec<LogFile> {
    let mut out: Vec<LogFile> = Vec::new();
    let access_format = |path: &Path| -> Option<String> {
        discovery
            .nginx
            .iter()
            .flat_map(|n| &n.access_logs)
            .chain(discovery.apache.iter().flat_map(|a| &a.access_logs))
            .find(|l| l.path == path)
            .and_then(|l| l.format.clone())
    };
    let sources: [(LogSource, &Option<Vec<String>>); 8] = [
        (LogSource::NginxAccess, &config.logs.nginx_access),
        (LogSource::NginxError, &config.logs.nginx_error),
        (LogSource::PhpFpm, &config.logs.php_fpm),
        (LogSource::PhpFpmSlow, &config.logs.php_fpm_slow),
        (LogSource::Php, &config.logs.php),
        (LogSource::MysqlError, &config.logs.mysql_error),
        (LogSource::Kernel, &config.logs.kernel),
        (LogSource::ApacheError, &config.logs.apache_error),
    ];
    for (source, configured) in sources {
        let paths: Vec<(PathBuf, Option<String>)> = match configured {
            Some(patterns) => patterns
                .iter()
                .flat_map(|p| {
                    if p.contains(['*', '?', '[']) {
                        host.glob(p)
                    } else {
                        vec![PathBuf::from(p)]
                    }
                })
                .map(|p| {
                    let f = access_format(&p);
                    (p, f)
                })
                .collect(),
            None => discovered(host, discovery, source),
        };
        for (path, format) in paths {
            if out.iter().any(|f| f.path == path) {
                continue;
            }
            out.push(LogFile {
                path,
                source: Some(source),
                access_format: if source == LogSource::NginxAccess {
                    format
                } else {
                    None
                },
            });
        }
    }
    out
}

fn existing(host: &dyn Host, paths: &[&str]) -> Vec<(PathBuf, Option<String>)> {
    paths
        .iter()
        .flat_map(|p| {
            if p.contains('*') {
                host.glob(p)
            } else {
                vec![PathBuf::from(p)]
            }
        })
        .filter(|p| host.metadata(p).is_ok())
        .map(|p| (p, None))
        .collect()
}

fn discovered(host: &dyn Host, d: &Discovery, source: LogSource) -> Vec<(PathBuf, Option<String>)> {
    let found: Vec<(PathBuf, Option<String>)> = match source {
        LogSource::NginxAccess => d
            .nginx
            .iter()
            .flat_map(|n| &n.access_logs)
            // httpd's access logs are read as nginx's, through their translated LogFormat.
            .chain(d.apache.iter().flat_map(|a| &a.access_logs))
            .map(|l| (l.path.clone(), l.format.clone()))
            .collect(),
        LogSource::NginxError => d
            .nginx
            .iter()
            .flat_map(|n| &n.error_logs)
            .map(|l| (l.value.clone(), None))
            .collect(),
        LogSource::PhpFpm => d
            .php_fpm
            .iter()
            .map(|f| match &f.error_log {
                Some(l) => l.value.clone(),
                None => PathBuf::from(format!(
                    "/var/log/php{}-fpm.log",
                    f.version.clone().unwrap_or_default()
                )),
            })
            .map(|p| (p, None))
            .collect(),
        LogSource::PhpFpmSlow => d
            .php_fpm
            .iter()
            .flat_map(|f| &f.pools)
            .filter_map(|p| p.slowlog.as_ref())
            .map(|l| (l.value.clone(), None))
            .collect(),
        LogSource::Php => d
            .php_fpm
            .iter()
            .flat_map(|f| &f.pools)
            .filter_map(|p| p.php_error_log.as_ref())
            .map(|l| (l.value.clone(), None))
            .collect(),
        LogSource::MysqlError => d
            .database
            .iter()
            .filter_map(|db| db.error_log.as_ref())
            .map(|l| (l.value.clone(), None))
            .collect(),
        LogSource::Kernel => existing(host, &["/var/log/kern.log"]),
        LogSource::ApacheError => d
            .apache
            .iter()
            .flat_map(|a| &a.error_logs)
            .map(|p| (p.value.clone(), None))
            .collect(),
    };
    if !found.is_empty() {
        return found;
    }
    match source {
        LogSource::NginxAccess => existing(host, &["/var/log/nginx/access.log"]),
        LogSource::ApacheError if d.apache.is_some() => existing(
            host,
            &["/var/log/apache2/error.log", "/var/log/httpd/error_log"],
        ),
        LogSource::NginxError => existing(host, &["/var/log/nginx/error.log"]),
        LogSource::PhpFpm => existing(
            host,
            &["/var/log/php*-fpm.log", "/var/log/php-fpm/error.log"],
        ),
        LogSource::MysqlError => existing(
            host,
            &[
                "/var/log/mysql/error.log",
                "/var/log/mariadb/mariadb.log",
                "/var/log/mysqld.log",
            ],
        ),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::discover::{discover, testdata};
    use crate::host::fixture::FixtureHost;

    #[test]
    fn every_discovered_log_with_its_source_and_format() {
        let host = testdata::stack();
        let d = discover(&host, &Config::default());
        let files = log_files(&host, &d, &Config::default());
        let find = |p: &str| files.iter().find(|f| f.path == Path::new(p)).unwrap();
        assert_eq!(
            find("/var/log/nginx/access.log").source,
            Some(LogSource::NginxAccess)
        );
        assert!(find("/var/log/nginx/access.log")
            .access_format
            .as_ref()
            .unwrap()
            .contains("$http_user_agent"));
        assert_eq!(
            find("/var/log/nginx/error.log").source,
            Some(LogSource::NginxError)
        );
        assert_eq!(
            find("/var/log/php8.2-fpm.log").source,
            Some(LogSource::PhpFpm)
        );
        assert_eq!(
            find("/var/log/php8.2-fpm.www.slow.log").source,
            Some(LogSource::PhpFpmSlow)
        );
        assert_eq!(
            find("/var/log/mysql/error.log").source,
            Some(LogSource::MysqlError)
        );
        assert_eq!(find("/var/log/kern.log").source, Some(LogSource::Kernel));
    }

    #[test]
    fn config_globs_override_per_source_and_defaults_need_to_exist() {
        let host = FixtureHost::new()
            .file("/srv/logs/a-error.log", "")
            .file("/srv/logs/b-error.log", "")
            .file("/var/log/mysql/error.log", "");
        let mut config = Config::default();
        config.logs.nginx_error = Some(vec!["/srv/logs/*-error.log".into()]);
        let d = Discovery::default();
        let files = log_files(&host, &d, &config);
        let paths: Vec<_> = files.iter().map(|f| f.path.display().to_string()).collect();
        assert_eq!(
            paths,
            vec![
                "/srv/logs/a-error.log",
                "/srv/logs/b-error.log",
                "/var/log/mysql/error.log"
            ]
        );
    }
}
