//! WordPress: the sites on this host and what they run. Sites are found from the web server's
//! document roots (nginx `root`, PHP-FPM `chdir`, and any other list of roots a caller passes,
//! such as Apache's `DocumentRoot`), through `wp-config.php` (also one level up, and Debian's
//! `/etc/wordpress/config-HOST.php` layout). For each: the database settings (never the
//! password or salts), table prefix, debug logging, memory limit, multisite, core version, the
//! installed plugins with their versions, must-use plugins and drop-ins; on the live host also
//! the active plugin list and theme from the database.
//!
//! - [`config`]: `wp-config.php` as data. [`serial`]: PHP-serialized options.
//! - [`plugins`]: headers of plugins and themes. [`db`]: the database (root over the socket).
//! - [`blame`]: which plugin the errors come from; [`checks`]: the audit's WordPress section.
//! - [`isolate`]: `wp isolate`, plugin bisection on a throwaway copy.
//!
//! Everything under a document root may be written by the site's own (untrusted) account: a
//! `wp-config.php` that is a symlink is not followed, files are read with the host's bounded
//! reads, and nothing here ever writes to a live site.

pub mod blame;
pub mod checks;
pub mod config;
pub mod db;
pub mod isolate;
pub mod plugins;
pub mod serial;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::discover::Discovery;
use crate::host::{Host, HostError, HostExt};

use self::config::{ConfigFile, Value};
use self::plugins::Plugin;

/// The most document roots looked at (a host with thousands of vhosts is bounded).
const MAX_ROOTS: usize = 500;

/// One WordPress install.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// The server name it is served as, else its directory.
    pub name: String,
    /// Every server name of the document root.
    pub server_names: Vec<String>,
    /// The document root it was found from.
    pub docroot: PathBuf,
    /// `ABSPATH`: where `wp-settings.php` is.
    pub abspath: PathBuf,
    /// The config file holding the database settings.
    pub config_path: PathBuf,
    pub content_dir: PathBuf,
    pub db_name: Option<String>,
    pub db_user: Option<String>,
    pub db_host: Option<String>,
    pub table_prefix: String,
    pub debug: bool,
    /// Where PHP errors go when `WP_DEBUG` and `WP_DEBUG_LOG` are on.
    pub debug_log: Option<PathBuf>,
    pub memory_limit: Option<String>,
    pub multisite: bool,
    pub debian_layout: bool,
    pub version: Option<String>,
    pub plugins: Vec<Plugin>,
    pub mu_plugins: Vec<Plugin>,
    pub dropins: Vec<String>,
    /// From the database, when it could be read: plugin files in load order.
    pub active_plugins: Option<Vec<String>>,
    pub theme: Option<String>,
    pub theme_version: Option<String>,
    /// Why something could not be read (a symlinked or unreadable config, the database).
    pub problems: Vec<String>,
}

impl Site {
    /// The installed plugin for a slug.
    pub fn plugin(&self, slug: &str) -> Option<&Plugin> {
        self.plugins
            .iter()
            .chain(&self.mu_plugins)
            .find(|p| p.slug == slug)
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.content_dir.join("plugins")
    }
}

/// Text from a file or a database, made safe to print: control characters replaced, at most
/// `max` characters (an ellipsis marks the cut).
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// Multi-line text made safe for a terminal: every line through [`printable`].
pub fn printable_lines(s: &str) -> String {
    s.lines().map(|l| printable(l, 2000) + "\n").collect()
}

/// Document roots with the server names they serve: nginx `root`s, Apache `DocumentRoot`s
/// (each virtual host's and the main server's), PHP-FPM `chdir`s, then `extra` (configured roots).
pub fn document_roots(
    discovery: &Discovery,
    extra: &[(PathBuf, Vec<String>)],
) -> Vec<(PathBuf, Vec<String>)> {
    let mut out: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut add = |root: PathBuf, names: Vec<String>| {
        if let Some(existing) = out.iter_mut().find(|(r, _)| *r == root) {
            for n in names {
                if !existing.1.contains(&n) {
                    existing.1.push(n);
                }
            }
        } else if out.len() < MAX_ROOTS {
            out.push((root, names));
        }
    };
    for nginx in discovery.nginx.iter().chain(&discovery.other_nginx) {
        for server in &nginx.servers {
            let names: Vec<String> = server
                .names
                .iter()
                .filter(|n| !n.is_empty() && *n != "_" && !n.starts_with('~'))
                .cloned()
                .collect();
            for root in &server.roots {
                add(root.clone(), names.clone());
            }
        }
    }
    if let Some(apache) = &discovery.apache {
        for vhost in &apache.vhosts {
            if let Some(root) = &vhost.document_root {
                add(root.value.clone(), vhost.host_names());
            }
        }
        if let Some(root) = &apache.document_root {
            let names = apache
                .server_name
                .iter()
                .map(|n| n.value.to_ascii_lowercase())
                .collect();
            add(root.value.clone(), names);
        }
    }
    for fpm in &discovery.php_fpm {
        for pool in &fpm.pools {
            if let Some(dir) = pool.other.get("chdir") {
                add(PathBuf::from(&dir.value), Vec::new());
            }
        }
    }
    for (root, names) in extra {
        add(root.clone(), names.clone());
    }
    out
}

/// Reads a config file, refusing a symlink (its target is outside what the site may name)
/// and saying why a file cannot be read.
fn read_config(host: &dyn Host, path: &Path) -> Result<Option<ConfigFile>, String> {
    if let Ok(target) = host.read_link(path) {
        return Err(format!(
            "{} is a symlink to {}: not followed (a site's files may name any file)",
            path.display(),
            printable(&target.to_string_lossy(), 200)
        ));
    }
    match host.read(path) {
        Ok(bytes) => Ok(Some(config::parse(&String::from_utf8_lossy(&bytes)))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(HostError::Io { message, .. }) => {
            Err(format!("{} could not be read: {message}", path.display()))
        }
        Err(e) => Err(format!("{} could not be read: {e}", path.display())),
    }
}

/// Resolves a path constant: a literal, or `__DIR__ . '/x'` / `dirname(__FILE__) . '/x'`
/// relative to the config's directory.
fn path_value(value: &Value, config_dir: &Path) -> Option<PathBuf> {
    match value {
        Value::Str(s) if s.starts_with('/') => Some(PathBuf::from(s)),
        Value::Expr(e) => {
            let rest = e
                .strip_prefix("__DIR__ .")
                .or_else(|| e.strip_prefix("dirname ( __FILE__ ) ."))?
                .trim();
            let lit = rest.strip_prefix('\'')?.strip_suffix('\'')?;
            (!lit.contains("..")).then(|| PathBuf::from(format!("{}{lit}", config_dir.display())))
        }
        _ => None,
    }
}

/// Every WordPress site under the discovered document roots (see the module doc).
pub fn discover_sites(
    host: &dyn Host,
    discovery: &Discovery,
    extra: &[(PathBuf, Vec<String>)],
) -> Vec<Site> {
    let mut sites: Vec<Site> = Vec::new();
    for (root, names) in document_roots(discovery, extra) {
        if host.metadata(&root.join("wp-settings.php")).is_err() {
            continue;
        }
        let mut found = site_at(host, &root, &names);
        for site in found.drain(..) {
            if !sites
                .iter()
                .any(|s| s.config_path == site.config_path && s.abspath == site.abspath)
            {
                sites.push(site);
            }
        }
    }
    if host.is_live() {
        let socket = discovery
            .database
            .as_ref()
            .and_then(|d| d.socket.as_ref())
            .map(|s| s.value.clone());
        for site in &mut sites {
            read_database(host, site, socket.as_deref());
        }
    }
    sites
}

/// The sites of one document root that holds `wp-settings.php`.
fn site_at(host: &dyn Host, root: &Path, names: &[String]) -> Vec<Site> {
    let base = Site {
        name: names
            .first()
            .cloned()
            .unwrap_or_else(|| root.display().to_string()),
        server_names: names.to_vec(),
        docroot: root.to_path_buf(),
        abspath: root.to_path_buf(),
        version: plugins::core_version(host, root),
        table_prefix: "wp_".into(),
        ..Site::default()
    };
    // wp-load.php: ABSPATH/wp-config.php, else one level up when that directory is not
    // another install.
    let mut candidates = vec![root.join("wp-config.php")];
    if let Some(parent) = root.parent() {
        if host.metadata(&parent.join("wp-settings.php")).is_err() {
            candidates.push(parent.join("wp-config.php"));
        }
    }
    let mut site = base.clone();
    let mut cfg = None;
    for path in candidates {
        match read_config(host, &path) {
            Ok(Some(c)) => {
                site.config_path = path;
                cfg = Some(c);
                break;
            }
            Ok(None) => {}
            Err(problem) => {
                site.config_path = path;
                site.problems.push(problem);
                return vec![site];
            }
        }
    }
    let Some(cfg) = cfg else {
        site.problems
            .push(format!("no wp-config.php for {}", root.display()));
        return vec![site];
    };
    if !cfg.debian_dispatcher {
        let dir = site.config_path.parent().unwrap_or(root).to_path_buf();
        apply(host, &mut site, &cfg, &dir, root.join("wp-content"));
        return vec![site];
    }
    // Debian: /etc/wordpress/config-HOST.php per served name (else every config there).
    let mut configs: Vec<(String, PathBuf)> = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                PathBuf::from(format!(
                    "/etc/wordpress/config-{}.php",
                    n.to_ascii_lowercase()
                )),
            )
        })
        .filter(|(_, p)| host.metadata(p).is_ok() || host.read_link(p).is_ok())
        .collect();
    if configs.is_empty() {
        configs = host
            .glob("/etc/wordpress/config-*.php")
            .into_iter()
            .filter_map(|p| {
                let name = p
                    .file_name()?
                    .to_str()?
                    .strip_prefix("config-")?
                    .strip_suffix(".php")?
                    .to_string();
                Some((name, p))
            })
            .collect();
    }
    let mut out = Vec::new();
    for (name, path) in configs.into_iter().take(MAX_ROOTS) {
        let mut s = base.clone();
        s.name = name;
        s.config_path = path.clone();
        s.debian_layout = true;
        match read_config(host, &path) {
            Ok(Some(mut c)) => {
                c.fill_from(&cfg);
                apply(
                    host,
                    &mut s,
                    &c,
                    Path::new("/etc/wordpress"),
                    PathBuf::from("/var/lib/wordpress/wp-content"),
                );
            }
            Ok(None) => continue,
            Err(problem) => s.problems.push(problem),
        }
        out.push(s);
    }
    out
}

fn apply(
    host: &dyn Host,
    site: &mut Site,
    cfg: &ConfigFile,
    config_dir: &Path,
    default_content: PathBuf,
) {
    let text = |k: &str| cfg.str(k).map(|v| printable(v, 128));
    site.db_name = text("DB_NAME");
    site.db_user = text("DB_USER");
    site.db_host = text("DB_HOST");
    if let Some(p) = &cfg.table_prefix {
        site.table_prefix = printable(p, 64);
    }
    site.debug = cfg.flag("WP_DEBUG");
    site.memory_limit = text("WP_MEMORY_LIMIT");
    site.multisite = cfg.flag("MULTISITE");
    site.content_dir = cfg
        .constants
        .get("WP_CONTENT_DIR")
        .and_then(|v| path_value(v, config_dir))
        .unwrap_or(default_content);
    site.debug_log = match cfg.constants.get("WP_DEBUG_LOG") {
        Some(Value::Str(p)) if site.debug && p.starts_with('/') => Some(PathBuf::from(p)),
        Some(v) if site.debug && v.truthy() => Some(site.content_dir.join("debug.log")),
        _ => None,
    };
    let pdir = site.plugins_dir();
    site.plugins = plugins::list(host, &pdir);
    site.mu_plugins = plugins::must_use(host, &site.content_dir.join("mu-plugins"));
    site.dropins = plugins::dropins(host, &site.content_dir);
}

/// Active plugins and theme from the database (live host only; root over the local socket).
fn read_database(host: &dyn Host, site: &mut Site, discovered_socket: Option<&Path>) {
    let Some(db_name) = site.db_name.clone() else {
        return;
    };
    let db_host = config::DbHost::parse(site.db_host.as_deref().unwrap_or("localhost"));
    let result = db::socket_for(host, &db_host, discovered_socket)
        .and_then(|sock| db::Db::connect(&sock))
        .and_then(|mut conn| conn.site_options(&db_name, &site.table_prefix, site.multisite));
    match result {
        Ok(opts) => {
            let mut active = opts.active_plugins;
            active.extend(opts.sitewide_plugins);
            site.active_plugins = Some(active);
            site.theme = opts.stylesheet.or(opts.template);
            site.theme_version = site
                .theme
                .as_deref()
                .and_then(|t| plugins::theme_version(host, &site.content_dir.join("themes"), t));
            site.problems.extend(opts.problems);
        }
        Err(e) => site.problems.push(format!("active plugins not read: {e}")),
    }
}

/// PHP's `WP_DEBUG_LOG` files of the sites, as log sources for the audit.
pub fn debug_logs(sites: &[Site]) -> Vec<crate::logs::LogFile> {
    sites
        .iter()
        .filter_map(|s| s.debug_log.clone())
        .map(|path| crate::logs::LogFile {
            path,
            source: Some(crate::event::LogSource::Php),
            access_format: None,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::discover::model::{Nginx, Server};
    use crate::host::fixture::FixtureHost;

    fn discovery(root: &str, name: &str) -> Discovery {
        Discovery {
            nginx: Some(Nginx {
                servers: vec![Server {
                    names: vec![name.into()],
                    listens: Vec::new(),
                    origin: crate::discover::model::Origin::Default,
                    ssl_certificate: None,
                    roots: vec![PathBuf::from(root)],
                }],
                ..Nginx::default()
            }),
            ..Discovery::default()
        }
    }

    #[test]
    fn standard_layout_with_config_one_level_up() {
        let host = FixtureHost::new()
            .file("/srv/shop/public/wp-settings.php", "<?php")
            .file("/srv/shop/wp-config.php", "<?php define('DB_NAME','shop'); define('DB_PASSWORD','s3cret-pw'); define('WP_DEBUG', true); define('WP_DEBUG_LOG', true); $table_prefix = 'sh_';")
            .file("/srv/shop/public/wp-content/plugins/acme/acme.php", "<?php\n/* Plugin Name: Acme\nVersion: 2.0 */");
        let sites = discover_sites(&host, &discovery("/srv/shop/public", "shop.test"), &[]);
        assert_eq!(sites.len(), 1);
        let s = &sites[0];
        assert_eq!(s.name, "shop.test");
        assert_eq!(s.config_path, PathBuf::from("/srv/shop/wp-config.php"));
        assert_eq!(s.table_prefix, "sh_");
        assert_eq!(
            s.debug_log,
            Some(PathBuf::from("/srv/shop/public/wp-content/debug.log"))
        );
        assert_eq!(s.plugins[0].version.as_deref(), Some("2.0"));
        assert!(!serde_json::to_string(&sites).unwrap().contains("s3cret"));
    }

    #[test]
    fn debian_layout_reads_etc_wordpress() {
        let host = FixtureHost::new()
            .file("/usr/share/wordpress/wp-settings.php", "<?php")
            .file("/usr/share/wordpress/wp-config.php", "<?php\n$debian_file = '/etc/wordpress/config-'.strtolower($debian_server).'.php';\ndefine('WP_CONTENT_DIR', '/var/lib/wordpress/wp-content');")
            .file("/etc/wordpress/config-blog.test.php", "<?php define('DB_NAME','blog'); define('DB_HOST','localhost:/run/db.sock');")
            .file("/var/lib/wordpress/wp-content/plugins/x/x.php", "<?php /* Plugin Name: X */");
        let sites = discover_sites(&host, &discovery("/usr/share/wordpress", "blog.test"), &[]);
        assert_eq!(sites.len(), 1, "{sites:?}");
        assert!(sites[0].debian_layout);
        assert_eq!(sites[0].db_name.as_deref(), Some("blog"));
        assert_eq!(
            sites[0].content_dir,
            PathBuf::from("/var/lib/wordpress/wp-content")
        );
        assert_eq!(sites[0].plugins.len(), 1);
    }

    #[test]
    fn a_symlinked_or_unreadable_config_is_a_problem_not_a_read() {
        let host = FixtureHost::new()
            .file("/var/www/a/wp-settings.php", "<?php")
            .link("/var/www/a/wp-config.php", "/etc/shadow")
            .file("/var/www/b/wp-settings.php", "<?php")
            .error(
                "/var/www/b/wp-config.php",
                HostError::Io {
                    path: "/var/www/b/wp-config.php".into(),
                    message: "Permission denied (os error 13)".into(),
                },
            );
        let mut d = discovery("/var/www/a", "a.test");
        d.nginx.as_mut().unwrap().servers[0]
            .roots
            .push(PathBuf::from("/var/www/b"));
        let sites = discover_sites(&host, &d, &[]);
        assert_eq!(sites.len(), 2);
        assert!(
            sites[0].problems[0].contains("symlink"),
            "{:?}",
            sites[0].problems
        );
        assert!(sites[0].db_name.is_none());
        assert!(
            sites[1].problems[0].contains("could not be read"),
            "{:?}",
            sites[1].problems
        );
    }
}
