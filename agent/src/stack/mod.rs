//! Asking the stack directly (DESIGN.md checklist steps 2, 3–4, 5 and 8): instead of inferring
//! the present from processes and logs, talk to each layer, through the host seam so `collect`
//! records every answer and `audit --snapshot` replays it.
//!
//! - [`self_test`]: the origin bypassing the proxy: each served name on the local listeners,
//!   then each PHP-FPM pool and proxied upstream, and which layer fails;
//! - [`fpm_status`]: each pool's live status page over FastCGI;
//! - [`db_status`]: the database's live status ([`mysql`] finds the database and its logins);
//! - [`cdn_status`]: the CDNs' public status pages (`origin-agent cdn status`);
//! - [`layers`]: the layer map (CDN → web server → PHP-FPM → database) the report shows;
//!
//! The protocol clients that carry these asks on the live host (HTTP, FastCGI, MySQL, the status
//! page fetch) belong to the host seam: `host::client`. This module owns what the answers mean.

pub mod cdn_status;
pub mod db_status;
pub mod fpm_status;
pub mod layers;
pub mod mysql;
pub mod self_test;

use crate::check::Check;
use crate::config::Config;
use crate::discover::Discovery;
use crate::host::Host;

/// How long one exchange with a local service may take.
pub const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Every probe that asks the local stack, as checks (the CDN status runs after the logs, which
/// tell which CDN fronts the origin: [`cdn_status::checks_for`]). The probes run side by side (each bounded by
/// its deadline), so the whole stays within about one deadline on a broken host.
pub fn checks(host: &dyn Host, discovery: &Discovery, config: &Config) -> Vec<Check> {
    std::thread::scope(|s| {
        let fpm = s.spawn(|| fpm_status::checks(host, discovery));
        let db = s.spawn(|| db_status::checks(host, discovery, config));
        let mut out = self_test::checks(host, discovery, config);
        for handle in [fpm, db] {
            out.extend(handle.join().unwrap_or_default());
        }
        out
    })
}

/// A JSON string from another program (a status page), as text to show: no control byte,
/// at most 300 characters.
pub(crate) fn json_text(v: Option<&serde_json::Value>) -> String {
    v.and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect()
}

/// `(11: Resource temporarily unavailable)` style, as nginx writes errnos.
pub(crate) fn errno_label(errno: Option<i32>, message: &str) -> String {
    let text = message
        .rfind(" (os error ")
        .map_or(message, |i| &message[..i])
        .to_string();
    match errno {
        Some(n) => format!("({n}: {text})"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn config_keys_of_the_direct_asks() {
        let c = Config::from_yaml(
            "self_test:\n  enabled: false\n  paths: [/, /health]\ndatabase:\n  credentials_file: /etc/origin-agent/db.cnf\ncdn:\n  status_urls:\n    cloudflare: http://127.0.0.1:9/summary.json\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        assert!(!c.self_test_enabled);
        assert_eq!(c.self_test_paths, vec!["/", "/health"]);
        assert_eq!(
            c.cdn_status_urls["cloudflare"],
            "http://127.0.0.1:9/summary.json"
        );
        let d = Config::default();
        assert!(d.self_test_enabled);
        assert_eq!(d.self_test_paths, vec!["/"]);
        for bad in [
            "self_test:\n  paths: [health]\n",
            "self_test:\n  paths: []\n",
            "self_test:\n  password: x\n",
            "database:\n  credentials_file: db.cnf\n",
            "database:\n  password: x\n",
            "cdn:\n  status_urls:\n    nosuch: https://x/\n",
            "cdn:\n  status_urls:\n    cloudflare: ftp://x/\n",
        ] {
            assert!(
                Config::from_yaml(bad, Path::new("t.yaml")).is_err(),
                "{bad}"
            );
        }
    }
}
