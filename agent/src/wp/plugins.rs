//! What is installed in a site's `wp-content`: plugins (each main file's header: name and
//! version), must-use plugins, drop-ins, and the theme's version. Read through the host seam,
//! bounded in count; headers are parsed from the first 8 KiB as WordPress does.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::{FileKind, Host};

/// The most plugins listed per directory (a hostile directory of a million files costs this).
pub const MAX_PLUGINS: usize = 1000;

/// One installed plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plugin {
    /// The directory name (`pay-gateway`), or the file name for a single-file plugin.
    pub slug: String,
    /// The main file relative to the plugins directory (`pay-gateway/pay-gateway.php`): what
    /// `active_plugins` lists.
    pub file: String,
    pub name: Option<String>,
    pub version: Option<String>,
    /// The newest mtime of the plugin's top-level files (an update changes it).
    pub mtime: i64,
}

/// Drop-in files WordPress loads from `wp-content` when present.
pub const DROPINS: &[&str] = &[
    "advanced-cache.php",
    "object-cache.php",
    "db.php",
    "db-error.php",
    "install.php",
    "maintenance.php",
    "php-error.php",
    "fatal-error-handler.php",
    "sunrise.php",
    "blog-deleted.php",
    "blog-inactive.php",
    "blog-suspended.php",
];

/// `Key: value` from a file header (the `Plugin Name:` / `Version:` comment block).
pub fn header_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        // As WordPress's get_file_data(): `^(?:[ \t]*<?php)?[ \t/*#@]*Key:(.*)$`.
        let t = line.trim_start_matches([' ', '\t']);
        let t = t.strip_prefix("<?php").unwrap_or(t);
        let t = t.trim_start_matches([' ', '\t', '/', '*', '#', '@']);
        let rest = t.strip_prefix(key)?.trim_start();
        let value = rest.strip_prefix(':')?.trim();
        let value = value.trim_end_matches("*/").trim();
        (!value.is_empty()).then(|| crate::wp::printable(value, 80))
    })
}

fn head(host: &dyn Host, path: &Path) -> Option<String> {
    let bytes = host.read(path).ok()?;
    let n = bytes.len().min(8192);
    Some(String::from_utf8_lossy(&bytes[..n]).into_owned())
}

/// Every plugin in `dir` (`wp-content/plugins`): single files and directories whose top-level
/// `.php` file carries a `Plugin Name:` header.
pub fn list(host: &dyn Host, dir: &Path) -> Vec<Plugin> {
    let Ok(names) = host.read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names.into_iter().take(MAX_PLUGINS) {
        let path = dir.join(&name);
        let Ok(meta) = host.metadata(&path) else {
            continue;
        };
        match meta.kind {
            FileKind::File if name.ends_with(".php") => {
                if let Some(text) = head(host, &path) {
                    if let Some(pname) = header_field(&text, "Plugin Name") {
                        out.push(Plugin {
                            slug: name.trim_end_matches(".php").to_string(),
                            file: name.clone(),
                            name: Some(pname),
                            version: header_field(&text, "Version"),
                            mtime: meta.mtime,
                        });
                    }
                }
            }
            FileKind::Dir => {
                let Ok(files) = host.read_dir(&path) else {
                    continue;
                };
                let mut newest = meta.mtime;
                let mut main: Option<(String, String)> = None;
                for f in files.iter().filter(|f| f.ends_with(".php")).take(200) {
                    let fp = path.join(f);
                    if let Ok(m) = host.metadata(&fp) {
                        newest = newest.max(m.mtime);
                    }
                    if main.is_none() {
                        if let Some(text) = head(host, &fp) {
                            if header_field(&text, "Plugin Name").is_some() {
                                main = Some((f.clone(), text));
                            }
                        }
                    }
                }
                if let Some((f, text)) = main {
                    out.push(Plugin {
                        slug: name.clone(),
                        file: format!("{name}/{f}"),
                        name: header_field(&text, "Plugin Name"),
                        version: header_field(&text, "Version"),
                        mtime: newest,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Must-use plugins: every `.php` file directly in `mu-plugins` (all of them load).
pub fn must_use(host: &dyn Host, dir: &Path) -> Vec<Plugin> {
    let Ok(names) = host.read_dir(dir) else {
        return Vec::new();
    };
    names
        .into_iter()
        .filter(|n| n.ends_with(".php"))
        .take(MAX_PLUGINS)
        .map(|name| {
            let path = dir.join(&name);
            let text = head(host, &path).unwrap_or_default();
            Plugin {
                slug: name.trim_end_matches(".php").to_string(),
                file: name.clone(),
                name: header_field(&text, "Plugin Name"),
                version: header_field(&text, "Version"),
                mtime: host.metadata(&path).map(|m| m.mtime).unwrap_or(0),
            }
        })
        .collect()
}

/// The drop-ins present in `content_dir`.
pub fn dropins(host: &dyn Host, content_dir: &Path) -> Vec<String> {
    DROPINS
        .iter()
        .filter(|d| host.metadata(&content_dir.join(d)).is_ok())
        .map(|d| d.to_string())
        .collect()
}

/// A theme's `Version:` from its `style.css`.
pub fn theme_version(host: &dyn Host, themes_dir: &Path, theme: &str) -> Option<String> {
    if theme.contains('/') || theme.contains("..") {
        return None;
    }
    let text = head(host, &themes_dir.join(theme).join("style.css"))?;
    header_field(&text, "Version")
}

/// The WordPress version from `wp-includes/version.php` (`$wp_version = '6.1.9';`).
pub fn core_version(host: &dyn Host, abspath: &Path) -> Option<String> {
    let bytes = host.read(&abspath.join("wp-includes/version.php")).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let at = text.find("$wp_version")?;
    let rest = &text[at..];
    let q1 = rest.find(['\'', '"'])?;
    let quote = rest[q1..].chars().next()?;
    let end = rest[q1 + 1..].find(quote)?;
    Some(crate::wp::printable(&rest[q1 + 1..q1 + 1 + end], 32))
}

/// The plugins directory of a content directory.
pub fn plugins_dir(content_dir: &Path) -> PathBuf {
    content_dir.join("plugins")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::host::fixture::FixtureHost;

    #[test]
    fn headers_and_listing() {
        let host = FixtureHost::new()
            .file(
                "/c/plugins/pay-gateway/pay-gateway.php",
                "<?php\n/**\n * Plugin Name: Pay Gateway\n * Version: 3.2.0\n */\n",
            )
            .file("/c/plugins/pay-gateway/includes/x.php", "<?php")
            .file(
                "/c/plugins/hello.php",
                "<?php\n/*\nPlugin Name: Hello Dolly\nVersion: 1.7.2\n*/",
            )
            .file("/c/plugins/index.php", "<?php // Silence is golden.")
            .file("/c/plugins/no-header/x.php", "<?php echo 1;")
            .file("/c/mu-plugins/host.php", "<?php")
            .file("/c/object-cache.php", "<?php")
            .file(
                "/c/themes/lab/style.css",
                "/*\nTheme Name: Lab\nVersion: 1.0.0\n*/",
            )
            .file(
                "/w/wp-includes/version.php",
                "<?php\n$wp_version = '6.1.9';\n",
            );
        let p = list(&host, Path::new("/c/plugins"));
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].file, "hello.php");
        assert_eq!(p[1].file, "pay-gateway/pay-gateway.php");
        assert_eq!(p[1].version.as_deref(), Some("3.2.0"));
        assert_eq!(must_use(&host, Path::new("/c/mu-plugins"))[0].slug, "host");
        assert_eq!(dropins(&host, Path::new("/c")), ["object-cache.php"]);
        assert_eq!(
            theme_version(&host, Path::new("/c/themes"), "lab").as_deref(),
            Some("1.0.0")
        );
        assert_eq!(
            theme_version(&host, Path::new("/c/themes"), "../../etc"),
            None
        );
        assert_eq!(
            core_version(&host, Path::new("/w")).as_deref(),
            Some("6.1.9")
        );
    }

    #[test]
    fn a_hostile_header_is_printable_and_short() {
        let v = header_field(
            &format!(" * Version: 1.0\u{1b}[31m{}", "x".repeat(500)),
            "Version",
        )
        .unwrap();
        assert!(!v.contains('\u{1b}') && v.chars().count() <= 81, "{v}");
    }
}
