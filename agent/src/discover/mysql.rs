//! MySQL/MariaDB configuration: `my.cnf` with `!include` and `!includedir`, the server sections
//! (`[mysqld]`, `[mariadbd]`, `[server]`, `[mariadb]`, `[mysqld_safe]`), and the running
//! server's command-line options (`--log-error=`, `--socket=`, `--port=`, ...) on top, into
//! [`Database`]. Option names treat `-` and `_` alike, as the server does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::host::{Host, HostExt};

use super::model::{Database, Origin, Sourced};

const SERVER_SECTIONS: &[&str] = &["mysqld", "mariadbd", "server", "mariadb", "mysqld_safe"];
const MAX_FILES: usize = 256;

/// Server options found in config files: normalized name → (value, origin).
pub type Options = BTreeMap<String, Sourced<String>>;

fn normalize(key: &str) -> String {
    key.trim().replace('-', "_")
}

/// Reads `main` and its includes; returns the server options and the files read.
pub fn load(host: &dyn Host, main: &Path) -> (Options, Vec<PathBuf>, Vec<String>) {
    let mut options = Options::new();
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    let mut bytes = 0;
    read_file(
        host,
        main,
        &mut options,
        &mut files,
        &mut warnings,
        &mut bytes,
        0,
    );
    (options, files, warnings)
}

fn read_file(
    host: &dyn Host,
    path: &Path,
    options: &mut Options,
    files: &mut Vec<PathBuf>,
    warnings: &mut Vec<String>,
    bytes: &mut u64,
    depth: usize,
) {
    if depth > 10 || files.len() >= MAX_FILES || files.iter().any(|f| f == path) {
        return;
    }
    let text = match host.read_text(path) {
        Ok(text) => text,
        Err(e) => {
            warnings.push(e.to_string());
            return;
        }
    };
    if *bytes + text.len() as u64 > super::MAX_CONFIG_BYTES {
        warnings.push(format!(
            "{}: the config passes {} bytes in all; rest ignored",
            path.display(),
            super::MAX_CONFIG_BYTES
        ));
        return;
    }
    *bytes += text.len() as u64;
    files.push(path.to_path_buf());
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("!includedir") {
            let dir = PathBuf::from(rest.trim());
            if let Ok(names) = host.read_dir(&dir) {
                for name in names {
                    if name.ends_with(".cnf") {
                        read_file(
                            host,
                            &dir.join(name),
                            options,
                            files,
                            warnings,
                            bytes,
                            depth + 1,
                        );
                    }
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("!include") {
            read_file(
                host,
                Path::new(rest.trim()),
                options,
                files,
                warnings,
                bytes,
                depth + 1,
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            section = rest.split(']').next().unwrap_or("").trim().to_lowercase();
            continue;
        }
        if !SERVER_SECTIONS.contains(&section.as_str()) {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, v.trim()),
            None => (line, ""),
        };
        let value = value.split(" #").next().unwrap_or(value).trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        let origin = Origin::File {
            path: path.to_path_buf(),
            line: i + 1,
        };
        // mysqld_safe's log-error only counts when the server sections do not set one.
        let key = normalize(key);
        if section == "mysqld_safe" && options.contains_key(&key) {
            continue;
        }
        options.insert(key, Sourced::new(value.to_string(), origin));
    }
}

/// Applies the server's command-line options (`--key=value`) over the file options.
pub fn apply_cmdline(options: &mut Options, words: &[String], pid: u32) {
    for word in words.iter().skip(1) {
        if let Some(rest) = word.strip_prefix("--") {
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            options.insert(
                normalize(key),
                Sourced::new(value.to_string(), Origin::Process { pid }),
            );
        }
    }
}

/// Fills a [`Database`] from the options. `hostname` names the default `HOST.err` log.
pub fn build(options: &Options, files: Vec<PathBuf>, mariadb: bool) -> Database {
    let get = |k: &str| options.get(k).filter(|v| !v.value.is_empty());
    let path = |k: &str| get(k).map(|v| Sourced::new(PathBuf::from(&v.value), v.origin.clone()));
    let datadir = path("datadir");
    let mut error_log = path("log_error");
    if let (Some(log), Some(dir)) = (&mut error_log, &datadir) {
        if log.value.is_relative() {
            log.value = dir.value.join(&log.value);
        }
    }
    Database {
        process: None,
        flavor: if mariadb { "mariadb" } else { "mysql" }.to_string(),
        config_files: files,
        error_log,
        socket: path("socket"),
        port: get("port").and_then(|v| {
            v.value
                .parse()
                .ok()
                .map(|p| Sourced::new(p, v.origin.clone()))
        }),
        bind_address: get("bind_address").cloned(),
        datadir,
        max_connections: get("max_connections").and_then(|v| {
            v.value
                .parse()
                .ok()
                .map(|p| Sourced::new(p, v.origin.clone()))
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::fixture::FixtureHost;

    #[test]
    fn includes_sections_and_command_line() {
        let host = FixtureHost::new()
            .file(
                "/etc/mysql/my.cnf",
                "[client-server]\nsocket = /run/client.sock\n!includedir /etc/mysql/mariadb.conf.d/\n",
            )
            .file(
                "/etc/mysql/mariadb.conf.d/50-server.cnf",
                "[mysqld]\ndatadir = /var/lib/mysql\nlog-error = /var/log/mysql/error.log\nskip-name-resolve\nmax_connections = 151 # default\nsocket = /run/mysqld/mysqld.sock\n",
            )
            .file("/etc/mysql/mariadb.conf.d/README", "[mysqld]\nport=1\n");
        let (mut options, files, _) = load(&host, Path::new("/etc/mysql/my.cnf"));
        assert_eq!(files.len(), 2);
        let words: Vec<String> = ["/usr/sbin/mariadbd", "--port=3307", "--log-error=err.log"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        apply_cmdline(&mut options, &words, 42);
        let db = build(&options, files, true);
        assert_eq!(db.flavor, "mariadb");
        assert_eq!(db.port.as_ref().unwrap().value, 3307);
        assert_eq!(
            db.port.as_ref().unwrap().origin,
            Origin::Process { pid: 42 }
        );
        assert_eq!(
            db.socket.as_ref().unwrap().value,
            PathBuf::from("/run/mysqld/mysqld.sock")
        );
        assert_eq!(
            db.error_log.as_ref().unwrap().value,
            PathBuf::from("/var/lib/mysql/err.log")
        );
        assert_eq!(db.max_connections.as_ref().unwrap().value, 151);
        assert_eq!(
            db.datadir.as_ref().unwrap().origin.to_string(),
            "/etc/mysql/mariadb.conf.d/50-server.cnf:2"
        );
    }

    #[test]
    fn includes_are_bounded_in_total_bytes() {
        let big = format!("[mysqld]\n# {}\nport = 3306\n", "x".repeat(4 << 20));
        let mut host = FixtureHost::new().file("/e/my.cnf", "!includedir /e/conf.d\n");
        for i in 0..10 {
            host = host.file(format!("/e/conf.d/{i}.cnf"), big.clone());
        }
        let (_, files, warnings) = load(&host, Path::new("/e/my.cnf"));
        assert!(files.len() < 10, "{}", files.len());
        assert!(
            warnings.iter().any(|w| w.contains("in all")),
            "{warnings:?}"
        );
    }

    #[test]
    fn missing_files_are_warnings() {
        let host = FixtureHost::new();
        let (options, files, warnings) = load(&host, Path::new("/etc/mysql/my.cnf"));
        assert!(options.is_empty() && files.is_empty());
        assert_eq!(warnings.len(), 1);
    }
}
