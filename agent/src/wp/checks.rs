//! The audit's WordPress section: one check per site (version, database, plugins, theme),
//! what could not be read, debug logging off on a site that is failing, `WP_MEMORY_LIMIT`
//! against PHP's `memory_limit`, and a check per plugin or theme the errors are attributed to,
//! whose fix names the plugin, its version and the exact command.

use std::path::Path;

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::discover::Discovery;
use crate::event::Evidence;
use crate::host::Host;

use super::blame::{self, Blame, Kind};
use super::Site;

/// WP-CLI, when installed as a root-owned binary where packages and admins put it.
pub fn wp_cli(host: &dyn Host) -> Option<&'static str> {
    const PATHS: [&str; 2] = ["/usr/local/bin/wp", "/usr/bin/wp"];
    let found = crate::trust::known_binary(host, None, &PATHS).ok()?;
    PATHS.into_iter().find(|p| Path::new(p) == found)
}

/// `256M` → bytes (PHP shorthand; `-1` is unlimited → `None`).
pub fn php_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last()?.to_ascii_uppercase() {
        'K' => (&v[..v.len() - 1], 1u64 << 10),
        'M' => (&v[..v.len() - 1], 1 << 20),
        'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .map(|n| n.saturating_mul(mult))
}

/// The fix for a blamed component.
pub fn fix(b: &Blame, site: Option<&Site>, cli: Option<&str>) -> String {
    let what = format!(
        "{} `{}`{}",
        b.kind.label(),
        b.slug,
        b.version
            .as_ref()
            .map_or(String::new(), |v| format!(" {v}"))
    );
    let path = site.map(|s| s.abspath.display().to_string());
    let command = match (b.kind, cli) {
        (Kind::Plugin, Some(wp)) => format!(
            "`{wp} plugin deactivate {}{}` (as the site's owner)",
            b.slug,
            path.as_ref()
                .map_or(String::new(), |p| format!(" --path={p}"))
        ),
        (Kind::Theme, Some(wp)) => format!(
            "`{wp} theme activate <another theme>{}`",
            path.as_ref()
                .map_or(String::new(), |p| format!(" --path={p}"))
        ),
        _ => match &b.dir {
            Some(dir) => format!(
                "rename its directory (`mv {} {}.disabled`; WordPress then deactivates it)",
                dir.display(),
                dir.display()
            ),
            None => format!(
                "rename wp-content/plugins/{} (WordPress then deactivates it)",
                b.slug
            ),
        },
    };
    let update = if b.changed.is_some() {
        " Its files changed just before the errors began: roll back to the previous version, or report the bug to its author."
    } else {
        " Then update it or report the bug to its author."
    };
    format!(
        "The WordPress {what} causes these errors: deactivate it with {command}.{update} `origin-agent wp isolate` confirms it on a throwaway copy."
    )
}

/// The WordPress checks of an audit.
pub fn checks(
    host: &dyn Host,
    sites: &[Site],
    evidence: &Evidence,
    discovery: &Discovery,
) -> Vec<Check> {
    let mut out = Vec::new();
    let blames = blame::attribute(evidence, sites);
    let cli = wp_cli(host);
    for site in sites {
        let id = format!("wordpress.site.{}", site.name);
        let title = format!("WordPress site {}", site.name);
        if let Some(problem) = site.problems.first().filter(|_| site.db_name.is_none()) {
            out.push(Check::warn(id, Area::WordPress, title).detail(problem.clone()));
            continue;
        }
        let mut detail = format!(
            "WordPress {} at {}, config {}, database {} (prefix {}){}",
            site.version.as_deref().unwrap_or("?"),
            site.abspath.display(),
            site.config_path.display(),
            site.db_name.as_deref().unwrap_or("?"),
            site.table_prefix,
            if site.multisite { ", multisite" } else { "" }
        );
        match &site.active_plugins {
            Some(active) => {
                let named: Vec<String> = active
                    .iter()
                    .map(|f| {
                        let slug = f.split('/').next().unwrap_or(f).trim_end_matches(".php");
                        match site.plugin(slug).and_then(|p| p.version.clone()) {
                            Some(v) => format!("{slug} {v}"),
                            None => slug.to_string(),
                        }
                    })
                    .collect();
                detail.push_str(&format!(
                    "; {} active plugins: {}",
                    active.len(),
                    named.join(", ")
                ));
            }
            None => detail.push_str(&format!("; {} plugins installed", site.plugins.len())),
        }
        if !site.mu_plugins.is_empty() {
            detail.push_str(&format!(
                "; must-use: {}",
                site.mu_plugins
                    .iter()
                    .map(|p| p.slug.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !site.dropins.is_empty() {
            detail.push_str(&format!("; drop-ins: {}", site.dropins.join(", ")));
        }
        if let Some(theme) = &site.theme {
            detail.push_str(&format!(
                "; theme {theme}{}",
                site.theme_version
                    .as_ref()
                    .map_or(String::new(), |v| format!(" {v}"))
            ));
        }
        let mut check = Check::ok(id, Area::WordPress, title).detail(detail);
        if site.problems.iter().any(|p| !p.is_empty()) {
            check = Check::warn(check.id.clone(), Area::WordPress, check.title.clone())
                .detail(format!("{}; {}", check.detail, site.problems.join("; ")));
        }
        out.push(check);

        let failing = blames.iter().any(|b| b.site.as_deref() == Some(&site.name))
            || (evidence.responses.by_status.keys().any(|s| *s >= 500) && sites.len() == 1);
        let php_log = discovery
            .php_fpm
            .iter()
            .flat_map(|f| &f.pools)
            .any(|p| p.php_error_log.is_some());
        if failing && site.debug_log.is_none() && !php_log {
            out.push(
                Check::warn(format!("wordpress.debug-log.{}", site.name), Area::WordPress, format!("{}: PHP errors are not logged", site.name))
                    .detail("the site answers 5xx but neither WP_DEBUG_LOG nor the pool's error_log records PHP errors")
                    .fix(format!("log PHP errors without showing them to visitors: in {} set `define('WP_DEBUG', true); define('WP_DEBUG_LOG', '/var/log/wordpress/{}.log'); define('WP_DEBUG_DISPLAY', false);` (a log outside the document root), or `php_admin_value[error_log]` in the PHP-FPM pool", site.config_path.display(), site.name)),
            );
        }
        if let Some(wp_limit) = site.memory_limit.as_deref() {
            let php_limit = discovery
                .php_fpm
                .iter()
                .flat_map(|f| &f.pools)
                .find_map(|p| p.php_memory_limit.as_ref());
            if let (Some(php), Some(wpb)) = (php_limit, php_bytes(wp_limit)) {
                if php_bytes(&php.value).is_some_and(|pb| wpb > pb) {
                    out.push(
                        Check::warn(format!("wordpress.memory-limit.{}", site.name), Area::WordPress, format!("{}: WP_MEMORY_LIMIT is above PHP's memory_limit", site.name))
                            .detail(format!("WP_MEMORY_LIMIT {wp_limit} in {}, but the pool sets memory_limit {} ({}), which WordPress cannot raise", site.config_path.display(), php.value, php.origin))
                            .cause(CauseId::AppMemoryLimit),
                    );
                }
            }
        }
    }
    for b in blames.iter().take(10) {
        let site = b
            .site
            .as_ref()
            .and_then(|n| sites.iter().find(|s| &s.name == n));
        out.push(
            Check::fail(
                format!("wordpress.blame.{}", b.slug),
                Area::WordPress,
                blame::summary(b),
            )
            .detail(format!(
                "first {} frame on the stack of {} error{}{}; e.g. {}:{}",
                b.kind.label(),
                b.total(),
                if b.total() == 1 { "" } else { "s" },
                b.site
                    .as_ref()
                    .map_or(String::new(), |s| format!(" on {s}")),
                b.sample.0.display(),
                b.sample.1
            ))
            .cause(b.cause())
            .fix(fix(b, site, cli)),
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn php_shorthand() {
        assert_eq!(php_bytes("256M"), Some(256 << 20));
        assert_eq!(php_bytes("1G"), Some(1 << 30));
        assert_eq!(php_bytes("-1"), None);
        assert_eq!(php_bytes(""), None);
    }
}
