//! Where a log's past lives: its rotated copies (`NAME.1`, `NAME.2.gz`, `NAME-20261123`,
//! `NAME-20261123.gz`) next to it, and in the directory logrotate moves them to when its config
//! says `olddir` for that log (a stanza whose path patterns match the log, or a global `olddir`
//! before it). Read through the host seam, so snapshots and fixtures answer the same way.

use std::path::{Path, PathBuf};

use super::Window;
use origin_host::Host;

/// Rotated copies read at most, per log.
const MAX_SIBLINGS: usize = 64;

/// logrotate's main config and its include directory (Debian's layout).
const LOGROTATE_CONF: &str = "/etc/logrotate.conf";
const LOGROTATE_DIR: &str = "/etc/logrotate.d";

/// Rotated copies of `path`, oldest first, whose mtime reaches into the window.
pub(crate) fn rotated_siblings(host: &dyn Host, path: &Path, window: &Window) -> Vec<PathBuf> {
    let olddirs = olddirs(
        host,
        path,
        Path::new(LOGROTATE_CONF),
        Path::new(LOGROTATE_DIR),
    );
    siblings_in(host, path, &olddirs, window)
}

fn siblings_in(host: &dyn Host, path: &Path, olddirs: &[PathBuf], window: &Window) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    // (order key: older first) -> path
    let mut found: Vec<(i64, PathBuf)> = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(olddirs.iter().filter(|d| d.as_path() != dir).cloned());
    for d in &dirs {
        let Ok(names) = host.read_dir(d) else {
            continue;
        };
        for n in names {
            if let Some(key) = rotation_key(name, &n) {
                found.push((key, d.join(&n)));
            }
        }
    }
    found.sort();
    found.dedup_by(|a, b| a.1 == b.1);
    let mut out: Vec<PathBuf> = found
        .into_iter()
        .filter(|(_, p)| match (window.since, host.metadata(p)) {
            (Some(since), Ok(meta)) => meta.mtime >= since.as_second(),
            (None, Ok(_)) => true,
            (_, Err(_)) => false,
        })
        .map(|(_, p)| p)
        .collect();
    if out.len() > MAX_SIBLINGS {
        out.drain(..out.len() - MAX_SIBLINGS);
    }
    out
}

/// The age order of `candidate` as a rotated copy of the log named `name` (smaller: older), or
/// `None` when it is not one.
fn rotation_key(name: &str, candidate: &str) -> Option<i64> {
    let rest = candidate.strip_prefix(name)?;
    let rest = rest.strip_suffix(".gz").unwrap_or(rest);
    if let Some(num) = rest.strip_prefix('.') {
        match num.parse::<u32>() {
            Ok(k) if k > 0 => Some(-i64::from(k)),
            _ => None,
        }
    } else if let Some(date) = rest.strip_prefix('-') {
        match (date.len(), date.parse::<u32>()) {
            (8, Ok(d)) => Some(i64::from(d) - 100_000_000),
            _ => None,
        }
    } else {
        None
    }
}

/// The `olddir`s logrotate moves `log`'s rotated copies to, from `conf` and the files of
/// `conf_dir` (in name order, as `include` reads them). An unreadable config is no olddir.
fn olddirs(host: &dyn Host, log: &Path, conf: &Path, conf_dir: &Path) -> Vec<PathBuf> {
    let mut texts = Vec::new();
    if let Ok(bytes) = host.read(conf) {
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    if let Ok(mut names) = host.read_dir(conf_dir) {
        names.sort();
        for n in names {
            // logrotate skips backup and package-manager leftovers the same way.
            if n.starts_with('.') || n.ends_with('~') || n.contains(".dpkg-") {
                continue;
            }
            if let Ok(bytes) = host.read(&conf_dir.join(&n)) {
                texts.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    let mut global: Option<String> = None;
    let mut out: Vec<PathBuf> = Vec::new();
    for text in &texts {
        for dir in parse_olddirs(text, log, &mut global) {
            let dir = match log.parent() {
                // A relative olddir is relative to the log's own directory.
                Some(parent) if !Path::new(&dir).is_absolute() => parent.join(dir),
                _ => PathBuf::from(dir),
            };
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out
}

/// The olddirs one config text gives `log`: from each stanza whose path patterns match it (its
/// own `olddir`, or the global one in force; `noolddir` cancels). `global` carries top-level
/// `olddir` settings from one file to the next.
fn parse_olddirs(text: &str, log: &Path, global: &mut Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    // Inside a stanza: (does it match the log, its own olddir setting: None = not set,
    // Some(None) = noolddir, Some(Some(dir)) = olddir dir).
    let mut stanza: Option<(bool, Option<Option<String>>)> = None;
    let mut pending_patterns: Vec<String> = Vec::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some((matches, own)) = &mut stanza {
            if line.starts_with('}') {
                let dir = match own.take() {
                    Some(setting) => setting,
                    None => global.clone(),
                };
                if *matches {
                    out.extend(dir);
                }
                stanza = None;
                continue;
            }
            let mut words = line.split_whitespace();
            match words.next() {
                Some("olddir") => *own = Some(words.next().map(unquote)),
                Some("noolddir") => *own = Some(None),
                _ => {}
            }
            continue;
        }
        // Top level: a directive, or the path patterns of a stanza (its `{` may follow on the
        // same line or a later one).
        let (head, opens) = match line.split_once('{') {
            Some((head, _)) => (head.trim(), true),
            None => (line, false),
        };
        let first = head.split_whitespace().next().unwrap_or("");
        if !opens
            && pending_patterns.is_empty()
            && !first.starts_with('/')
            && !first.starts_with('"')
        {
            let mut words = head.split_whitespace();
            match words.next() {
                Some("olddir") => *global = words.next().map(unquote),
                Some("noolddir") => *global = None,
                _ => {}
            }
            continue;
        }
        pending_patterns.extend(head.split_whitespace().map(unquote));
        if opens {
            let matches = pending_patterns
                .iter()
                .any(|p| glob::Pattern::new(p).is_ok_and(|pat| pat.matches_path(log)));
            pending_patterns.clear();
            stanza = Some((matches, None));
        }
    }
    out
}

fn unquote(word: &str) -> String {
    word.trim_matches('"').trim_matches('\'').to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use origin_host::live::LiveHost;

    #[test]
    fn olddir_of_a_matching_stanza_or_the_global_one() {
        let log = Path::new("/var/log/nginx/access.log");
        let conf = "\
# see \"man logrotate\"
weekly
olddir /var/log/archive
/var/log/nginx/*.log {
        daily
        olddir /var/log/nginx/old   # kept 14 days
        rotate 14
}
/var/log/php8.2-fpm.log {
        noolddir
}
\"/var/log/mysql/error.log\"
{
        weekly
}
";
        let mut global = None;
        assert_eq!(
            parse_olddirs(conf, log, &mut global),
            ["/var/log/nginx/old"]
        );
        assert_eq!(global.as_deref(), Some("/var/log/archive"));
        let mut global = None;
        assert!(parse_olddirs(conf, Path::new("/var/log/php8.2-fpm.log"), &mut global).is_empty());
        let mut global = None;
        assert_eq!(
            parse_olddirs(conf, Path::new("/var/log/mysql/error.log"), &mut global),
            ["/var/log/archive"]
        );
        let mut global = None;
        assert!(parse_olddirs(conf, Path::new("/srv/other.log"), &mut global).is_empty());
    }

    #[test]
    fn rotated_copies_are_found_in_olddir_too_oldest_first() {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("nginx");
        let old = logs.join("old");
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(etc.join("logrotate.d")).unwrap();
        std::fs::write(etc.join("logrotate.conf"), "weekly\n").unwrap();
        std::fs::write(
            etc.join("logrotate.d/nginx"),
            format!("{}/*.log {{\n  daily\n  olddir old\n}}\n", logs.display()),
        )
        .unwrap();
        std::fs::write(
            etc.join("logrotate.d/nginx.dpkg-old"),
            "/x { olddir /nope }\n",
        )
        .unwrap();
        let log = logs.join("error.log");
        for f in [
            &log,
            &logs.join("error.log.1"),
            &old.join("error.log.2.gz"),
            &old.join("error.log.3.gz"),
            &old.join("access.log.1"),
        ] {
            std::fs::write(f, "x").unwrap();
        }
        let dirs = olddirs(
            &LiveHost,
            &log,
            &etc.join("logrotate.conf"),
            &etc.join("logrotate.d"),
        );
        assert_eq!(dirs, [logs.join("old")]);
        let found = siblings_in(&LiveHost, &log, &dirs, &Window::default());
        assert_eq!(
            found,
            [
                old.join("error.log.3.gz"),
                old.join("error.log.2.gz"),
                logs.join("error.log.1")
            ]
        );
        // No logrotate config: only the copies next to the log.
        let none = olddirs(
            &LiveHost,
            &log,
            &root.path().join("missing.conf"),
            &root.path().join("missing.d"),
        );
        assert!(none.is_empty());
        assert_eq!(
            siblings_in(&LiveHost, &log, &none, &Window::default()),
            [logs.join("error.log.1")]
        );
    }

    #[test]
    fn rotation_names() {
        assert_eq!(rotation_key("error.log", "error.log.1"), Some(-1));
        assert_eq!(rotation_key("error.log", "error.log.12.gz"), Some(-12));
        assert_eq!(
            rotation_key("error.log", "error.log-20261123.gz"),
            Some(20261123 - 100_000_000)
        );
        assert_eq!(rotation_key("error.log", "error.log.bak"), None);
        assert_eq!(rotation_key("error.log", "error.log.0"), None);
        assert_eq!(rotation_key("error.log", "error.log-2026"), None);
        assert_eq!(rotation_key("error.log", "other.log.1"), None);
    }
}
