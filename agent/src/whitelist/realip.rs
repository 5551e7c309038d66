//! `--nginx-real-ip`: an nginx include with `set_real_ip_from` for every range of the requested
//! providers (and their `real_ip_header` when they agree on one), so nginx logs, rate-limits and
//! bans the visitor instead of the CDN edge. The file is written atomically, `nginx -t` checks
//! the whole configuration with it, and nginx is reloaded only when that passes; otherwise the
//! previous file (or its absence) is put back and nothing is reloaded.
//!
//! The include is the agent's own file, written directly (the host seam has no writes); the
//! `nginx` commands go through [`Host::run`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ProviderList;
use crate::cdn::real_ip_header;
use crate::host::{Command, Host, HostError, HostExt};

/// Where the include goes when the request names no path (Debian's nginx.conf includes
/// `/etc/nginx/conf.d/*.conf` inside `http {}`).
pub const DEFAULT_INCLUDE: &str = "/etc/nginx/conf.d/origin-agent-real-ip.conf";

/// What happened to the include.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealIpOutcome {
    pub path: PathBuf,
    /// The file's content (what was written, or would be in a dry run).
    pub text: String,
    /// The file already had exactly this content.
    pub unchanged: bool,
    /// `nginx -t` passed with the new file.
    pub tested: bool,
    pub reloaded: bool,
    /// The nginx error when the test failed (the file was then put back).
    pub error: Option<String>,
    pub notes: Vec<String>,
}

/// The include's text; `with_header` adds `real_ip_header` (only when all providers use the same
/// header).
pub fn include_text(lists: &[ProviderList], with_header: bool) -> (String, Option<&'static str>) {
    let mut s = String::from(
        "# Written by origin-agent (`origin-agent whitelist --nginx-real-ip`): the CDN ranges\n# nginx trusts to name the real visitor. Regenerated on every run; do not edit.\n",
    );
    let headers: Vec<&'static str> = lists.iter().map(|(p, _, _)| real_ip_header(*p)).collect();
    let header = headers
        .first()
        .copied()
        .filter(|h| headers.iter().all(|x| x == h));
    for (p, v4, v6) in lists {
        s.push_str(&format!("# {}\n", p.name()));
        for net in v4.iter().chain(v6.iter()) {
            s.push_str(&format!("set_real_ip_from {net};\n"));
        }
    }
    if with_header {
        if let Some(h) = header {
            s.push_str(&format!("real_ip_header {h};\n"));
        }
    }
    (s, header)
}

fn nginx_cmd(conf: Option<&Path>, args: &[&str]) -> Command {
    let mut all: Vec<String> = Vec::new();
    if let Some(c) = conf {
        all.push("-c".into());
        all.push(c.display().to_string());
    }
    all.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    Command::new("nginx", &refs).timeout(Duration::from_secs(30))
}

fn put_back(host: &dyn Host, path: &Path, previous: &Option<String>) -> Result<(), HostError> {
    match previous {
        Some(old) => host.write_atomic(path, old.as_bytes()),
        None => host.remove_file(path),
    }
}

fn test_ok(host: &dyn Host, conf: Option<&Path>) -> Result<(), String> {
    match host.run(&nginx_cmd(conf, &["-t"])) {
        Ok(o) if o.success() => Ok(()),
        Ok(o) => Err(o.stderr.trim().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Plans (dry run) or writes, tests and reloads the include.
pub fn run(
    host: &dyn Host,
    lists: &[ProviderList],
    path: &Path,
    conf: Option<&Path>,
    apply: bool,
) -> RealIpOutcome {
    let (text, header) = include_text(lists, true);
    let previous = host.read_text(path).ok();
    let mut out = RealIpOutcome {
        path: path.to_path_buf(),
        text: text.clone(),
        unchanged: previous.as_deref() == Some(text.as_str()),
        tested: false,
        reloaded: false,
        error: None,
        notes: Vec::new(),
    };
    if header.is_none() && lists.len() > 1 {
        out.notes.push(format!(
            "the providers use different client-address headers ({}): no real_ip_header written, set the one your CDN sends",
            lists
                .iter()
                .map(|(p, _, _)| format!("{}: {}", p.name(), real_ip_header(*p)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !apply || out.unchanged {
        return out;
    }
    if let Err(e) = host.write_atomic(path, text.as_bytes()) {
        out.error = Some(e.to_string());
        return out;
    }
    let mut result = test_ok(host, conf);
    if let Err(msg) = &result {
        // The configuration sets its own real_ip_header: keep it, write only the ranges.
        if msg.contains("real_ip_header") {
            let (plain, _) = include_text(lists, false);
            if host.write_atomic(path, plain.as_bytes()).is_ok() {
                out.notes.push(
                    "the configuration already sets real_ip_header; only set_real_ip_from written"
                        .into(),
                );
                out.text = plain;
                result = test_ok(host, conf);
            }
        }
    }
    match result {
        Ok(()) => {
            out.tested = true;
            match host.run(&nginx_cmd(conf, &["-s", "reload"])) {
                Ok(o) if o.success() => out.reloaded = true,
                Ok(o) => out.error = Some(format!("nginx -s reload: {}", o.stderr.trim())),
                Err(e) => out.error = Some(format!("nginx -s reload: {e}")),
            }
        }
        Err(msg) => {
            let restored = put_back(host, path, &previous);
            out.error = Some(format!(
                "nginx -t failed with the include, so nothing was reloaded and the previous file was put back{}: {msg}",
                if restored.is_err() { " (FAILED to put it back)" } else { "" }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cdn::Provider;

    #[test]
    fn the_include_lists_every_range_and_one_header_only_when_providers_agree() {
        let cf = (
            Provider::Cloudflare,
            vec!["173.245.48.0/20".parse().unwrap()],
            vec!["2400:cb00::/32".parse().unwrap()],
        );
        let (text, header) = include_text(std::slice::from_ref(&cf), true);
        assert!(text.contains("set_real_ip_from 173.245.48.0/20;\n"));
        assert!(text.contains("set_real_ip_from 2400:cb00::/32;\n"));
        assert!(text.contains("real_ip_header CF-Connecting-IP;\n"));
        assert_eq!(header, Some("CF-Connecting-IP"));
        let fastly = (
            Provider::Fastly,
            vec!["151.101.0.0/16".parse().unwrap()],
            vec![],
        );
        let (text, header) = include_text(&[cf, fastly], true);
        assert_eq!(header, None);
        assert!(!text.contains("real_ip_header"));
    }
}
