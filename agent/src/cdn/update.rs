//! `origin-agent cdn update`: fetches each provider's official endpoint (plain text or JSON, each
//! in its own format), validates every entry, refuses a list that is empty, holds a prefix broader
//! than DESIGN.md allows (0.0.0.0/0, ::/0, shorter than /8 in IPv4 or /20 in IPv6) or shrank by
//! more than half (unless forced), keeps the last good list in the state directory, and reports
//! what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CdnCatalog, Provider, RangeOrigin};
use crate::addrset::Family;

/// Errors of `cdn update` that stop it as a whole (per-provider failures are in the report).
#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    SavedList { path: PathBuf, message: String },
}

/// How a response lists the ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// One CIDR or address per line (`#` comments allowed); the family, when the URL is for one.
    Text(Option<Family>),
    /// JSON arrays of strings at these JSON pointers (`""` is the document itself).
    Json(Vec<(String, Family)>),
    /// AWS `ip-ranges.json`, keeping the prefixes of these services.
    Aws(Vec<String>),
}

/// One official endpoint.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub format: Format,
    /// Sent as an `application/x-www-form-urlencoded` POST body when set (Imperva).
    pub post_form: Option<(String, String)>,
    pub accept: Option<String>,
}

impl Source {
    fn get(url: &str, format: Format) -> Self {
        Source {
            url: url.to_string(),
            format,
            post_form: None,
            accept: None,
        }
    }
}

/// Where each provider's list is fetched from.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub sources: BTreeMap<Provider, Vec<Source>>,
    /// Providers without a machine-readable list, and why.
    pub unavailable: BTreeMap<Provider, String>,
    pub timeout: Duration,
    /// Use `http_proxy`/`https_proxy` from the environment (off for loopback test servers).
    pub env_proxy: bool,
    /// The largest response body accepted.
    pub max_body: u64,
}

impl Endpoints {
    /// The providers' official endpoints.
    pub fn official() -> Self {
        use Family::{V4, V6};
        let json = |pairs: &[(&str, Family)]| {
            Format::Json(pairs.iter().map(|(p, f)| (p.to_string(), *f)).collect())
        };
        let mut sources = BTreeMap::new();
        sources.insert(
            Provider::Cloudflare,
            vec![
                Source::get("https://www.cloudflare.com/ips-v4", Format::Text(Some(V4))),
                Source::get("https://www.cloudflare.com/ips-v6", Format::Text(Some(V6))),
            ],
        );
        sources.insert(
            Provider::Fastly,
            vec![Source::get(
                "https://api.fastly.com/public-ip-list",
                json(&[("/addresses", V4), ("/ipv6_addresses", V6)]),
            )],
        );
        sources.insert(
            Provider::Cloudfront,
            vec![Source::get(
                "https://ip-ranges.amazonaws.com/ip-ranges.json",
                Format::Aws(vec![
                    "CLOUDFRONT".to_string(),
                    "CLOUDFRONT_ORIGIN_FACING".to_string(),
                ]),
            )],
        );
        sources.insert(
            Provider::Akamai,
            vec![
                Source::get(
                    "https://techdocs.akamai.com/property-manager/pdfs/akamai_ipv4_CIDRs.txt",
                    Format::Text(Some(V4)),
                ),
                Source::get(
                    "https://techdocs.akamai.com/property-manager/pdfs/akamai_ipv6_CIDRs.txt",
                    Format::Text(Some(V6)),
                ),
            ],
        );
        let bunny = |url: &str, f: Family| Source {
            accept: Some("application/json".to_string()),
            ..Source::get(url, json(&[("", f)]))
        };
        sources.insert(
            Provider::Bunny,
            vec![
                bunny("https://bunnycdn.com/api/system/edgeserverlist", V4),
                bunny("https://bunnycdn.com/api/system/edgeserverlist/IPv6", V6),
            ],
        );
        sources.insert(
            Provider::Gcore,
            vec![Source::get(
                "https://api.gcore.com/cdn/public-ip-list",
                json(&[("/addresses", V4), ("/addresses_v6", V6)]),
            )],
        );
        sources.insert(
            Provider::Imperva,
            vec![Source {
                post_form: Some(("resp_format".to_string(), "json".to_string())),
                ..Source::get(
                    "https://my.imperva.com/api/integration/v1/ips",
                    json(&[("/ipRanges", V4), ("/ipv6Ranges", V6)]),
                )
            }],
        );
        sources.insert(
            Provider::Stackpath,
            vec![Source::get(
                "https://k3t9x2h3.map2.ssl.hwcdn.net/ipblocks.txt",
                Format::Text(None),
            )],
        );
        let mut unavailable = BTreeMap::new();
        unavailable.insert(
            Provider::Sucuri,
            "Sucuri publishes its ranges only on a documentation page".to_string(),
        );
        unavailable.insert(
            Provider::AzureFrontdoor,
            "Azure's service-tag file changes name every week; no stable URL".to_string(),
        );
        unavailable.insert(
            Provider::GoogleLb,
            "Google publishes the load-balancer ranges only in its documentation".to_string(),
        );
        Endpoints {
            sources,
            unavailable,
            timeout: Duration::from_secs(30),
            env_proxy: true,
            max_body: 16 * 1024 * 1024,
        }
    }

    /// The same endpoints served from `base` (`http://127.0.0.1:PORT`): each URL's scheme is
    /// dropped and the rest appended (`{base}/www.cloudflare.com/ips-v4`). For tests and mirrors.
    pub fn rebased(mut self, base: &str) -> Self {
        let base = base.trim_end_matches('/');
        for list in self.sources.values_mut() {
            for s in list.iter_mut() {
                let rest = s.url.split_once("://").map(|(_, r)| r).unwrap_or(&s.url);
                s.url = format!("{base}/{rest}");
            }
        }
        self.env_proxy = false;
        self.timeout = Duration::from_secs(5);
        self
    }
}

/// What happened to one provider's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Updated,
    Unchanged,
    /// The fetched list failed validation; the last good list stays.
    Refused {
        reason: String,
    },
    /// The endpoint could not be fetched or read.
    Failed {
        reason: String,
    },
    /// No machine-readable endpoint.
    Skipped {
        reason: String,
    },
}

/// One provider's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderUpdate {
    pub provider: Provider,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
    /// Entries in the list now in force.
    pub entries: usize,
}

/// The whole `cdn update` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    pub providers: Vec<ProviderUpdate>,
}

impl UpdateReport {
    /// True when no provider failed or was refused.
    pub fn ok(&self) -> bool {
        self.providers.iter().all(|p| {
            matches!(
                p.outcome,
                Outcome::Updated | Outcome::Unchanged | Outcome::Skipped { .. }
            )
        })
    }

    /// The human text: one line per provider, then the changes.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.providers {
            let what = match &p.outcome {
                Outcome::Updated => format!(
                    "updated: +{} -{} ({} entries)",
                    p.added.len(),
                    p.removed.len(),
                    p.entries
                ),
                Outcome::Unchanged => format!("unchanged ({} entries)", p.entries),
                Outcome::Refused { reason } => {
                    format!("REFUSED, kept the last good list: {reason}")
                }
                Outcome::Failed { reason } => format!("FAILED, kept the last good list: {reason}"),
                Outcome::Skipped { reason } => format!("skipped: {reason}"),
            };
            out.push_str(&format!("{:<16} {what}\n", p.provider.name()));
            for n in p.added.iter().take(50) {
                out.push_str(&format!("  + {n}\n"));
            }
            for n in p.removed.iter().take(50) {
                out.push_str(&format!("  - {n}\n"));
            }
        }
        out
    }
}

/// A list saved by `cdn update`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedList {
    provider: Provider,
    fetched_at: String,
    url: String,
    v4: Vec<String>,
    v6: Vec<String>,
}

/// A validated saved list.
#[derive(Debug, Clone)]
pub(crate) struct Saved {
    pub v4: Vec<IpNet>,
    pub v6: Vec<IpNet>,
    pub origin: RangeOrigin,
}

fn saved_path(state_dir: &Path, p: Provider) -> PathBuf {
    state_dir
        .join("cdn-ranges")
        .join(format!("{}.json", p.name()))
}

/// Reads and re-validates the saved list of `p`; `Ok(None)` when there is none.
pub(crate) fn read_saved(state_dir: &Path, p: Provider) -> Result<Option<Saved>, CdnError> {
    let path = saved_path(state_dir, p);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CdnError::SavedList {
                path,
                message: e.to_string(),
            })
        }
    };
    let bad = |message: String| CdnError::SavedList {
        path: path.clone(),
        message,
    };
    let saved: SavedList = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if saved.provider != p {
        return Err(bad(format!("holds the list of {}", saved.provider)));
    }
    let mut entries: Vec<(String, Option<Family>)> = Vec::new();
    entries.extend(saved.v4.iter().map(|s| (s.clone(), Some(Family::V4))));
    entries.extend(saved.v6.iter().map(|s| (s.clone(), Some(Family::V6))));
    let (v4, v6) = validate(&entries).map_err(bad)?;
    Ok(Some(Saved {
        v4,
        v6,
        origin: RangeOrigin::Updated {
            path: path.clone(),
            fetched_at: saved.fetched_at,
            url: saved.url,
        },
    }))
}

fn is_special(net: &IpNet) -> bool {
    let contained = |cidrs: &[&str]| {
        cidrs.iter().any(|c| {
            c.parse::<IpNet>()
                .map(|c| c.contains(net) || net.contains(&c))
                .unwrap_or(false)
        })
    };
    match net {
        IpNet::V4(_) => contained(&[
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "224.0.0.0/4",
            "240.0.0.0/4",
        ]),
        IpNet::V6(_) => contained(&[
            "::/127",
            "fc00::/7",
            "fe80::/10",
            "ff00::/8",
            "::ffff:0:0/96",
        ]),
    }
}

/// Validates every entry: it parses, is a network address (no host bits), has the expected
/// family, is public, and is no broader than /8 (IPv4) or /20 (IPv6). Any bad entry refuses the
/// whole list (a broken response must not half-replace a good list). An empty list is refused.
pub fn validate(entries: &[(String, Option<Family>)]) -> Result<(Vec<IpNet>, Vec<IpNet>), String> {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for (raw, family) in entries {
        let text = raw.trim();
        let net = if text.contains('/') {
            let net: IpNet = text
                .parse()
                .map_err(|_| format!("`{text}` is not an address or CIDR"))?;
            if net.trunc() != net {
                return Err(format!(
                    "`{text}` has host bits set (not a network address)"
                ));
            }
            net
        } else {
            let addr: IpAddr = text
                .parse()
                .map_err(|_| format!("`{text}` is not an address or CIDR"))?;
            IpNet::from(addr)
        };
        let fam = match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        };
        if let Some(want) = family {
            if *want != fam {
                return Err(format!("`{text}` is not {}", want.label()));
            }
        }
        let min = match fam {
            Family::V4 => 8,
            Family::V6 => 20,
        };
        if net.prefix_len() < min {
            return Err(format!(
                "`{text}` is broader than /{min}: refusing a list that would trust so much"
            ));
        }
        if is_special(&net) {
            return Err(format!("`{text}` is not a public address range"));
        }
        match fam {
            Family::V4 => v4.insert(net),
            Family::V6 => v6.insert(net),
        };
    }
    if v4.is_empty() && v6.is_empty() {
        return Err("the list is empty".to_string());
    }
    Ok((v4.into_iter().collect(), v6.into_iter().collect()))
}

/// The entries of one response, by format.
pub fn parse_response(
    body: &str,
    format: &Format,
) -> Result<Vec<(String, Option<Family>)>, String> {
    match format {
        Format::Text(family) => Ok(body
            .split(['\n', '\r', ' ', '\t', ','])
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| (l.to_string(), *family))
            .collect()),
        Format::Json(pointers) => {
            let doc: Value =
                serde_json::from_str(body).map_err(|e| format!("not valid JSON: {e}"))?;
            let mut out = Vec::new();
            for (ptr, family) in pointers {
                let arr = doc
                    .pointer(ptr)
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("no array at `{ptr}` in the JSON"))?;
                for v in arr {
                    let s = v
                        .as_str()
                        .ok_or_else(|| format!("a non-string entry `{v}` at `{ptr}`"))?;
                    out.push((s.to_string(), Some(*family)));
                }
            }
            Ok(out)
        }
        Format::Aws(services) => {
            let doc: Value =
                serde_json::from_str(body).map_err(|e| format!("not valid JSON: {e}"))?;
            let mut out = Vec::new();
            for (key, field, family) in [
                ("prefixes", "ip_prefix", Family::V4),
                ("ipv6_prefixes", "ipv6_prefix", Family::V6),
            ] {
                let arr = doc
                    .get(key)
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("no `{key}` array in the JSON"))?;
                for item in arr {
                    let service = item.get("service").and_then(Value::as_str).unwrap_or("");
                    if !services.iter().any(|s| s == service) {
                        continue;
                    }
                    let s = item
                        .get(field)
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("an entry of `{key}` without `{field}`"))?;
                    out.push((s.to_string(), Some(family)));
                }
            }
            Ok(out)
        }
    }
}

fn fetch(agent: &ureq::Agent, source: &Source, max_body: u64) -> Result<String, String> {
    let result = match &source.post_form {
        Some((k, v)) => agent
            .post(&source.url)
            .send_form([(k.as_str(), v.as_str())]),
        None => {
            let mut req = agent.get(&source.url);
            if let Some(a) = &source.accept {
                req = req.header("Accept", a);
            }
            req.call()
        }
    };
    let mut resp = result.map_err(|e| format!("{}: {e}", source.url))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("{}: HTTP {status}", source.url));
    }
    resp.body_mut()
        .with_config()
        .limit(max_body)
        .read_to_string()
        .map_err(|e| format!("{}: {e}", source.url))
}

/// Fetches, validates and saves the lists of `providers` (all providers when empty).
/// `force` accepts a list that shrank by more than half; nothing accepts an empty or too broad
/// list. The previous list (saved, else bundled) stays in force whenever a new one is refused.
pub fn update(
    state_dir: &Path,
    providers: &[Provider],
    force: bool,
    endpoints: &Endpoints,
) -> Result<UpdateReport, CdnError> {
    let dir = state_dir.join("cdn-ranges");
    std::fs::create_dir_all(&dir).map_err(|source| CdnError::StateDir {
        path: dir.clone(),
        source,
    })?;
    let current = super::load(state_dir);
    let wanted: Vec<Provider> = if providers.is_empty() {
        Provider::ALL.to_vec()
    } else {
        providers.to_vec()
    };
    let mut builder = ureq::Agent::config_builder()
        .timeout_global(Some(endpoints.timeout))
        .http_status_as_error(false)
        .user_agent(concat!("origin-agent/", env!("CARGO_PKG_VERSION")));
    if !endpoints.env_proxy {
        builder = builder.proxy(None);
    }
    let agent: ureq::Agent = builder.build().into();
    let mut report = UpdateReport::default();
    for p in wanted {
        let old = current.get(p).cloned();
        let old_entries = old.as_ref().map(|o| o.len()).unwrap_or(0);
        let mut result = ProviderUpdate {
            provider: p,
            outcome: Outcome::Unchanged,
            added: Vec::new(),
            removed: Vec::new(),
            entries: old_entries,
        };
        let Some(sources) = endpoints.sources.get(&p) else {
            let reason = endpoints
                .unavailable
                .get(&p)
                .cloned()
                .unwrap_or_else(|| "no endpoint".to_string());
            result.outcome = Outcome::Skipped { reason };
            report.providers.push(result);
            continue;
        };
        let mut entries = Vec::new();
        let mut failure = None;
        for s in sources {
            match fetch(&agent, s, endpoints.max_body)
                .and_then(|body| parse_response(&body, &s.format))
            {
                Ok(e) => entries.extend(e),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(reason) = failure {
            result.outcome = Outcome::Failed { reason };
            report.providers.push(result);
            continue;
        }
        let (v4, v6) = match validate(&entries) {
            Ok(v) => v,
            Err(reason) => {
                result.outcome = Outcome::Refused { reason };
                report.providers.push(result);
                continue;
            }
        };
        let new_entries = v4.len() + v6.len();
        if !force {
            let previous = old.as_ref().map(|o| (&o.v4[..], &o.v6[..]));
            if let Err(why) = super::size_check(&v4, &v6, previous) {
                result.outcome = Outcome::Refused {
                    reason: format!("{why}; use --force to accept it"),
                };
                report.providers.push(result);
                continue;
            }
        }
        if !force && new_entries * 2 < old_entries {
            result.outcome = Outcome::Refused {
                reason: format!(
                    "the list shrank from {old_entries} to {new_entries} entries (more than half); use --force to accept it"
                ),
            };
            report.providers.push(result);
            continue;
        }
        let old_set: BTreeSet<IpNet> = old
            .as_ref()
            .map(|o| o.nets().copied().collect())
            .unwrap_or_default();
        let new_set: BTreeSet<IpNet> = v4.iter().chain(v6.iter()).copied().collect();
        result.added = new_set.difference(&old_set).copied().collect();
        result.removed = old_set.difference(&new_set).copied().collect();
        result.entries = new_entries;
        let url = sources
            .iter()
            .map(|s| s.url.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let saved = SavedList {
            provider: p,
            fetched_at: jiff::Timestamp::now().to_string(),
            url,
            v4: v4.iter().map(|n| n.to_string()).collect(),
            v6: v6.iter().map(|n| n.to_string()).collect(),
        };
        let path = saved_path(state_dir, p);
        write_atomic(&path, &saved)?;
        result.outcome = if result.added.is_empty() && result.removed.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Updated
        };
        report.providers.push(result);
    }
    Ok(report)
}

fn write_atomic(path: &Path, saved: &SavedList) -> Result<(), CdnError> {
    let err = |source| CdnError::StateDir {
        path: path.to_path_buf(),
        source,
    };
    let json =
        serde_json::to_vec_pretty(saved).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The catalog after an update (for callers that print `cdn list` right after).
pub fn reload(state_dir: &Path) -> CdnCatalog {
    super::load(state_dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A loopback HTTP server answering recorded responses by path; it serves at most `limit`
    /// requests and its thread ends with the test.
    struct Server {
        base: String,
        routes: Arc<Mutex<BTreeMap<String, (u16, String)>>>,
    }

    impl Server {
        fn start(limit: usize) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let routes: Arc<Mutex<BTreeMap<String, (u16, String)>>> = Arc::default();
            let r = routes.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().take(limit) {
                    let Ok(mut stream) = stream else { continue };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    let _ = reader.read_line(&mut first);
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    let _ = std::io::Read::read_exact(&mut reader, &mut body);
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (status, text) = r
                        .lock()
                        .unwrap()
                        .get(&path)
                        .cloned()
                        .unwrap_or((404, "not found".into()));
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    );
                }
            });
            Server { base, routes }
        }

        fn serve(&self, path: &str, status: u16, body: &str) {
            self.routes
                .lock()
                .unwrap()
                .insert(path.to_string(), (status, body.to_string()));
        }
    }

    const CF4: &str = "173.245.48.0/20\n103.21.244.0/22\n103.22.200.0/22\n103.31.4.0/22\n141.101.64.0/18\n108.162.192.0/18\n190.93.240.0/20\n188.114.96.0/20\n197.234.240.0/22\n198.41.128.0/17\n162.158.0.0/15\n104.16.0.0/13\n104.24.0.0/14\n172.64.0.0/13\n131.0.72.0/22";
    const CF6: &str = "2400:cb00::/32\n2606:4700::/32\n2803:f800::/32\n2405:b500::/32\n2405:8100::/32\n2a06:98c0::/29\n2c0f:f248::/32";

    #[test]
    fn updates_validates_refuses_and_keeps_the_last_good_list() {
        let server = Server::start(100);
        let state = tempfile::tempdir().unwrap();
        let eps = Endpoints::official().rebased(&server.base);
        // A new Cloudflare range appears, one disappears.
        let cf4 = CF4.replace("131.0.72.0/22", "131.0.76.0/22");
        server.serve("/www.cloudflare.com/ips-v4", 200, &cf4);
        server.serve("/www.cloudflare.com/ips-v6", 200, CF6);
        server.serve(
            "/api.fastly.com/public-ip-list",
            200,
            r#"{"addresses":["23.235.32.0/20","43.249.72.0/22"],"ipv6_addresses":["2a04:4e40::/32"]}"#,
        );
        let r = update(state.path(), &[Provider::Cloudflare], false, &eps).unwrap();
        assert_eq!(r.providers[0].outcome, Outcome::Updated);
        assert_eq!(
            r.providers[0].added,
            vec!["131.0.76.0/22".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            r.providers[0].removed,
            vec!["131.0.72.0/22".parse::<IpNet>().unwrap()]
        );
        let cat = super::super::load(state.path());
        let cf = cat.get(Provider::Cloudflare).unwrap();
        assert!(matches!(cf.origin, RangeOrigin::Updated { .. }));
        assert!(cf.v4.contains(&"131.0.76.0/22".parse().unwrap()));
        // Same again: unchanged.
        let r = update(state.path(), &[Provider::Cloudflare], false, &eps).unwrap();
        assert_eq!(r.providers[0].outcome, Outcome::Unchanged);

        // Fastly shrank from 21 bundled entries to 3: refused unless forced.
        let r = update(state.path(), &[Provider::Fastly], false, &eps).unwrap();
        assert!(
            matches!(&r.providers[0].outcome, Outcome::Refused { reason } if reason.contains("shrank"))
        );
        assert!(!r.ok());
        let r = update(state.path(), &[Provider::Fastly], true, &eps).unwrap();
        assert_eq!(r.providers[0].entries, 3);

        // Broken responses: too broad, host bits, wrong family, empty, HTML, HTTP 500, bad JSON.
        let broken: &[(&str, &str, u16, &str)] = &[
            ("/www.cloudflare.com/ips-v4", "0.0.0.0/0", 200, "broader"),
            ("/www.cloudflare.com/ips-v4", "104.0.0.0/7", 200, "broader"),
            (
                "/www.cloudflare.com/ips-v4",
                "173.245.48.1/20",
                200,
                "host bits",
            ),
            (
                "/www.cloudflare.com/ips-v4",
                "2400:cb00::/32",
                200,
                "not IPv4",
            ),
            (
                "/www.cloudflare.com/ips-v4",
                "<html>oops</html>",
                200,
                "not an address",
            ),
            (
                "/www.cloudflare.com/ips-v4",
                "10.0.0.0/8",
                200,
                "not a public",
            ),
            ("/www.cloudflare.com/ips-v4", "", 500, "HTTP 500"),
        ];
        for (path, body, status, why) in broken {
            server.serve(path, *status, body);
            let r = update(state.path(), &[Provider::Cloudflare], true, &eps).unwrap();
            let text = r.text();
            assert!(text.contains(why), "{why}: {text}");
            let cat = super::super::load(state.path());
            assert!(cat
                .get(Provider::Cloudflare)
                .unwrap()
                .v4
                .contains(&"131.0.76.0/22".parse().unwrap()));
        }
        server.serve("/www.cloudflare.com/ips-v4", 200, "");
        server.serve("/www.cloudflare.com/ips-v6", 200, "");
        let r = update(state.path(), &[Provider::Cloudflare], true, &eps).unwrap();
        assert!(r.text().contains("empty"), "{}", r.text());
        server.serve("/api.fastly.com/public-ip-list", 200, "{\"addresses\":");
        let r = update(state.path(), &[Provider::Fastly], true, &eps).unwrap();
        assert!(r.text().contains("JSON"), "{}", r.text());
        // Providers without an endpoint are skipped with the reason.
        let r = update(state.path(), &[Provider::Sucuri], false, &eps).unwrap();
        assert!(matches!(r.providers[0].outcome, Outcome::Skipped { .. }));
        assert!(r.ok());
    }

    #[test]
    fn aws_bunny_imperva_formats() {
        let aws = r#"{"syncToken":"1","prefixes":[{"ip_prefix":"130.176.0.0/18","service":"CLOUDFRONT_ORIGIN_FACING"},{"ip_prefix":"3.5.0.0/16","service":"AMAZON"}],"ipv6_prefixes":[{"ipv6_prefix":"2600:9000:1000::/36","service":"CLOUDFRONT"}]}"#;
        let eps = Endpoints::official();
        let f = &eps.sources[&Provider::Cloudfront][0].format;
        let e = parse_response(aws, f).unwrap();
        assert_eq!(e.len(), 2);
        let (v4, v6) = validate(&e).unwrap();
        assert_eq!((v4.len(), v6.len()), (1, 1));
        let bunny = &eps.sources[&Provider::Bunny][0].format;
        let (v4, _) =
            validate(&parse_response(r#"["89.187.188.227","89.187.162.249"]"#, bunny).unwrap())
                .unwrap();
        assert_eq!(v4[0].to_string(), "89.187.162.249/32");
        let imp = &eps.sources[&Provider::Imperva][0].format;
        let body = r#"{"ipRanges":["199.83.128.0/21"],"ipv6Ranges":["2a02:e980::/29"],"res":0}"#;
        assert_eq!(
            validate(&parse_response(body, imp).unwrap())
                .unwrap()
                .1
                .len(),
            1
        );
        assert!(parse_response(r#"{"ipRanges":[5]}"#, imp).is_err());
    }

    #[test]
    fn a_tampered_saved_list_is_ignored() {
        let state = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(state.path().join("cdn-ranges")).unwrap();
        std::fs::write(
            state.path().join("cdn-ranges/cloudflare.json"),
            r#"{"provider":"cloudflare","fetched_at":"x","url":"y","v4":["0.0.0.0/0"],"v6":[]}"#,
        )
        .unwrap();
        let cat = super::super::load(state.path());
        assert!(matches!(
            cat.get(Provider::Cloudflare).unwrap().origin,
            RangeOrigin::Bundled { .. }
        ));
        assert_eq!(cat.notes.len(), 1);
    }
}
