//! The CDNs' own status (checklist step 5): the public Statuspage-style summary of each provider
//! that fronts the origin (`/api/v2/summary.json`: overall indicator, components, unresolved
//! incidents), fetched through the host seam (recorded in snapshots), with a short deadline.
//! The last good answer is kept in the state dir and shown, marked as such, when the page is
//! unreachable; with no cached answer the check is a skip with the reason (most origins are fine
//! without it). URLs are overridable per provider (`cdn.status_urls`), which is how tests point
//! them at a loopback server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cdn::Provider;
use crate::check::{Area, Check, Status};
use crate::config::Config;
use crate::host::exchange::MAX_BODY;
use crate::host::{Exchange, Host, Reply};

/// How long a status page may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How old a cached answer may be and still be shown when the page is unreachable.
const CACHE_MAX_AGE_S: i64 = 3600;

/// The published Statuspage summaries. Providers without one are left out (configure
/// `cdn.status_urls.NAME` to add one).
pub fn default_url(p: Provider) -> Option<&'static str> {
    match p {
        Provider::Cloudflare => Some("https://www.cloudflarestatus.com/api/v2/summary.json"),
        Provider::Akamai => Some("https://www.akamaistatus.com/api/v2/summary.json"),
        _ => None,
    }
}

/// A provider's status, as the summary says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `none`, `minor`, `major`, `critical` (or `maintenance`).
    pub indicator: String,
    pub description: String,
    /// Unresolved incidents: name, status, impact.
    pub incidents: Vec<Incident>,
    /// Components not `operational`: name and status.
    pub degraded: Vec<(String, String)>,
    /// Maintenance in progress.
    pub maintenance: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub name: String,
    pub status: String,
    pub impact: String,
    pub updated_at: String,
    pub link: String,
}

impl Summary {
    pub fn troubled(&self) -> bool {
        !self.incidents.is_empty()
            || !self.degraded.is_empty()
            || matches!(self.indicator.as_str(), "minor" | "major" | "critical")
    }
}

fn text(v: &Value, key: &str) -> String {
    super::json_text(v.get(key))
}

/// Parses a Statuspage `summary.json`.
pub fn parse(body: &str) -> Result<Summary, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let status = v
        .get("status")
        .filter(|s| s.is_object())
        .ok_or("no `status` object: not a Statuspage summary")?;
    let list = |key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().take(200).cloned().collect())
            .unwrap_or_default()
    };
    let incidents = list("incidents")
        .iter()
        .filter(|i| !matches!(text(i, "status").as_str(), "resolved" | "postmortem"))
        .take(20)
        .map(|i| Incident {
            name: text(i, "name"),
            status: text(i, "status"),
            impact: text(i, "impact"),
            updated_at: text(i, "updated_at"),
            link: text(i, "shortlink"),
        })
        .collect();
    let degraded = list("components")
        .iter()
        .filter(|c| !c.get("group").and_then(Value::as_bool).unwrap_or(false))
        .filter(|c| {
            let s = text(c, "status");
            !s.is_empty() && s != "operational"
        })
        .take(50)
        .map(|c| (text(c, "name"), text(c, "status")))
        .collect();
    let maintenance = list("scheduled_maintenances")
        .iter()
        .filter(|m| text(m, "status") == "in_progress")
        .take(20)
        .map(|m| text(m, "name"))
        .collect();
    Ok(Summary {
        indicator: text(status, "indicator"),
        description: text(status, "description"),
        incidents,
        degraded,
        maintenance,
    })
}

/// A cached answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    fetched_at: jiff::Timestamp,
    url: String,
    summary: Summary,
}

fn cache_path(state_dir: &Path, p: Provider) -> PathBuf {
    state_dir
        .join("cdn-status")
        .join(format!("{}.json", p.name()))
}

fn save_cache(state_dir: &Path, p: Provider, cached: &Cached) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = state_dir.join("cdn-status");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", p.name(), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    // A fresh file (never through a planted link), then an atomic rename over the old one.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(cached).map_err(std::io::Error::other)?)?;
    drop(file);
    std::fs::rename(&tmp, cache_path(state_dir, p))
}

fn load_cache(state_dir: &Path, p: Provider) -> Option<Cached> {
    use std::io::Read;
    let file = std::fs::File::open(cache_path(state_dir, p)).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_BODY as u64).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// One provider's status: fresh, else cached, else why not.
pub fn status(
    host: &dyn Host,
    config: &Config,
    p: Provider,
) -> Result<(Summary, Option<jiff::Timestamp>), String> {
    let url = match config.cdn_status_urls.get(p.name()) {
        Some(u) => u.clone(),
        None => match default_url(p) {
            Some(u) => u.to_string(),
            None => {
                return Err(format!(
                    "{p} publishes no Statuspage-style summary the agent knows; set cdn.status_urls.{} to one",
                    p.name()
                ))
            }
        },
    };
    let request = Exchange::Fetch {
        url: url.clone(),
        timeout_ms: FETCH_TIMEOUT.as_millis() as u64,
    };
    let fresh = match host.exchange(&request) {
        Ok(Reply::Http {
            status: 200, body, ..
        }) => parse(&body).map_err(|e| format!("{url}: {e}")),
        Ok(Reply::Http { status, .. }) => Err(format!("{url}: HTTP {status}")),
        Ok(_) => Err(format!("{url}: not an HTTP answer")),
        Err(e) => Err(e.message),
    };
    match fresh {
        Ok(summary) => {
            if host.is_live() {
                let cached = Cached {
                    fetched_at: host.now(),
                    url,
                    summary: summary.clone(),
                };
                let _ = save_cache(&config.state_dir, p, &cached);
            }
            Ok((summary, None))
        }
        Err(why) => {
            let cached = host
                .is_live()
                .then(|| load_cache(&config.state_dir, p))
                .flatten()
                .filter(|c| c.url == url)
                .filter(|c| (host.now().as_second() - c.fetched_at.as_second()) < CACHE_MAX_AGE_S);
            match cached {
                Some(c) => Ok((c.summary, Some(c.fetched_at))),
                None => Err(format!("status page unreachable: {why}")),
            }
        }
    }
}

/// The text of one summary.
pub fn describe(s: &Summary) -> String {
    let mut lines = vec![format!(
        "{} ({})",
        if s.description.is_empty() {
            "no description"
        } else {
            &s.description
        },
        if s.indicator.is_empty() {
            "none"
        } else {
            &s.indicator
        }
    )];
    for i in &s.incidents {
        lines.push(format!(
            "incident: {} [{}, impact {}, updated {}] {}",
            i.name, i.status, i.impact, i.updated_at, i.link
        ));
    }
    if !s.degraded.is_empty() {
        let names: Vec<String> = s
            .degraded
            .iter()
            .take(10)
            .map(|(n, st)| format!("{n} ({st})"))
            .collect();
        lines.push(format!(
            "{} components not operational: {}{}",
            s.degraded.len(),
            names.join(", "),
            if s.degraded.len() > 10 { ", …" } else { "" }
        ));
    }
    for m in &s.maintenance {
        lines.push(format!("maintenance in progress: {m}"));
    }
    lines.join("\n")
}

/// The status check of each provider.
pub fn checks_for(host: &dyn Host, config: &Config, providers: &[Provider]) -> Vec<Check> {
    std::thread::scope(|s| {
        let handles: Vec<_> = providers
            .iter()
            .map(|p| (p, s.spawn(move || status(host, config, *p))))
            .collect();
        handles
            .into_iter()
            .map(|(p, h)| {
                let id = format!("cdn.status.{}", p.name());
                let title = format!("{p}'s own status page");
                match h
                    .join()
                    .unwrap_or_else(|_| Err("status probe failed".to_string()))
                {
                    Ok((summary, cached)) => {
                        let mut detail = describe(&summary);
                        if let Some(at) = cached {
                            detail = format!(
                                "(cached answer from {at}; the page is unreachable now)\n{detail}"
                            );
                        }
                        if summary.troubled() {
                            Check::warn(
                                id,
                                Area::Cdn,
                                format!("{p} reports an incident or degraded service"),
                            )
                            .detail(detail)
                        } else {
                            Check::ok(id, Area::Cdn, title)
                                .detail(format!("{detail}: the CDN itself reports no incident"))
                        }
                    }
                    Err(why) => Check::skip(id, Area::Cdn, title, why),
                }
            })
            .collect()
    })
}

/// The providers the firewall audit looked at: configured, else detected from the logs.
pub fn providers(
    config: &Config,
    discovery: &crate::discover::Discovery,
    evidence: &crate::event::Evidence,
) -> Vec<Provider> {
    if let Some(names) = &config.cdn_providers {
        return names.iter().filter_map(|n| Provider::parse(n)).collect();
    }
    let catalog = crate::cdn::load(&config.state_dir);
    let empty = BTreeMap::new();
    let nginx = discovery.nginx.as_ref();
    crate::cdn::detect(
        &catalog,
        &evidence.responses.clients,
        &nginx.map(|n| n.real_ip.cdn_hints()).unwrap_or_default(),
        nginx.map_or(&empty, |n| &n.log_formats),
    )
    .into_iter()
    .map(|(p, _)| p)
    .collect()
}

/// `origin-agent cdn status`: each provider's summary as text, and whether any has trouble.
pub fn status_text(host: &dyn Host, config: &Config, providers: &[Provider]) -> (String, Status) {
    let checks = checks_for(host, config, providers);
    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    let mut out = String::new();
    for c in &checks {
        out.push_str(&format!("{} [{}]\n", c.title, c.status.label()));
        for line in c.detail.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    (out, worst)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_summary_with_an_incident() {
        let body = r#"{"page":{"id":"x","name":"Cloudflare"},"status":{"indicator":"minor","description":"Minor Service Outage"},
          "components":[{"name":"Frankfurt, Germany - (FRA)","status":"partial_outage","group":false},{"name":"Europe","status":"degraded_performance","group":true},{"name":"London","status":"operational"}],
          "incidents":[{"name":"Elevated 5xx errors in FRA","status":"investigating","impact":"minor","updated_at":"2026-12-03T09:00:00Z","shortlink":"https://stspg.io/x"},{"name":"old","status":"resolved"}],
          "scheduled_maintenances":[]}"#;
        let s = parse(body).unwrap();
        assert!(s.troubled());
        assert_eq!(s.incidents.len(), 1);
        assert_eq!(
            s.degraded,
            vec![(
                "Frankfurt, Germany - (FRA)".to_string(),
                "partial_outage".to_string()
            )]
        );
        assert!(describe(&s).contains("Elevated 5xx errors in FRA"));
        assert!(parse("{\"status\":\"ok\"}").is_err());
        assert!(parse("<html>").is_err());
    }
}
