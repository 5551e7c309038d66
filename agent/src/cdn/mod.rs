//! CDN providers and their published IP ranges: the lists bundled in the binary (the default that
//! works offline), the last good lists `cdn update` saved in the state directory, the provider
//! names the config and the command line accept, `cdn list` / `cdn show`, and the detection of
//! which CDN fronts this origin (access-log clients, nginx real-IP settings and log formats).
//!
//! # Layout
//! - this file: [`Provider`], [`ProviderRanges`], [`CdnCatalog`], [`ranges`], [`load`],
//!   [`list_text`], [`show_text`], [`detect`];
//! - [`update`]: fetching the official endpoints, validating and saving (`cdn update`);
//! - [`evidence`]: a Cloudflare Origin CA certificate among the web server's certificates.
//!
//! It builds on [`crate::addrset`] and the host seam only: discovery hands it [`RealIpHints`].

pub mod evidence;
pub mod update;

pub use update::{
    update, CdnError, Endpoints, Format, Outcome, ProviderUpdate, Source, UpdateReport,
};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addrset::{addr_value, parse_net, AddrSet, Family};

/// A CDN or reverse-proxy provider whose edge addresses may connect to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Cloudflare,
    Fastly,
    Cloudfront,
    Akamai,
    Bunny,
    Gcore,
    Imperva,
    Sucuri,
    Stackpath,
    AzureFrontdoor,
    GoogleLb,
}

impl Provider {
    pub const ALL: &'static [Provider] = &[
        Provider::Cloudflare,
        Provider::Fastly,
        Provider::Cloudfront,
        Provider::Akamai,
        Provider::Bunny,
        Provider::Gcore,
        Provider::Imperva,
        Provider::Sucuri,
        Provider::Stackpath,
        Provider::AzureFrontdoor,
        Provider::GoogleLb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Cloudflare => "cloudflare",
            Provider::Fastly => "fastly",
            Provider::Cloudfront => "cloudfront",
            Provider::Akamai => "akamai",
            Provider::Bunny => "bunny",
            Provider::Gcore => "gcore",
            Provider::Imperva => "imperva",
            Provider::Sucuri => "sucuri",
            Provider::Stackpath => "stackpath",
            Provider::AzureFrontdoor => "azure-frontdoor",
            Provider::GoogleLb => "google-lb",
        }
    }

    pub fn parse(name: &str) -> Option<Provider> {
        let name = name.trim().to_ascii_lowercase();
        Provider::ALL.iter().copied().find(|p| p.name() == name)
    }

    pub fn names() -> Vec<&'static str> {
        Provider::ALL.iter().map(|p| p.name()).collect()
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a provider's list came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RangeOrigin {
    /// The snapshot bundled in the binary.
    Bundled { date: String },
    /// A list `cdn update` fetched, validated and saved.
    Updated {
        path: PathBuf,
        fetched_at: String,
        url: String,
    },
}

/// One provider's published ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRanges {
    pub provider: Provider,
    pub v4: Vec<IpNet>,
    pub v6: Vec<IpNet>,
    pub origin: RangeOrigin,
    /// What the list is and is not (e.g. Akamai: only the Origin IP ACL ranges).
    pub caveat: Option<String>,
}

impl ProviderRanges {
    /// All networks, IPv4 first.
    pub fn nets(&self) -> impl Iterator<Item = &IpNet> {
        self.v4.iter().chain(self.v6.iter())
    }

    pub fn set(&self, family: Family) -> AddrSet {
        match family {
            Family::V4 => AddrSet::from_nets(family, &self.v4),
            Family::V6 => AddrSet::from_nets(family, &self.v6),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// The most IPv4 addresses one provider's list may cover (three /8s; the largest bundled list,
/// Google's, covers about 41 million): a list that passes every per-prefix check can still hold
/// a thousand /16s, and `whitelist` would open the web ports to them. Past it (or past
/// [`MAX_GROWTH`]) a list is refused unless `--force`.
pub const MAX_V4_ADDRESSES: u128 = 3 << 24;
/// The most IPv6 addresses one provider's list may cover (a /22; Akamai's bundled list covers
/// about a /24).
pub const MAX_V6_ADDRESSES: u128 = 1 << 106;
/// How many times its previous (or bundled) size a list may grow to; a small list may also grow
/// by a /16 (IPv4) or a /32 (IPv6) whatever its size.
pub const MAX_GROWTH: u128 = 2;

/// The addresses a list covers, overlaps counted once per listed prefix (an upper bound).
pub fn address_count(nets: &[IpNet]) -> u128 {
    nets.iter()
        .map(|n| {
            let bits = match n {
                IpNet::V4(_) => 32 - u32::from(n.prefix_len()),
                IpNet::V6(_) => 128 - u32::from(n.prefix_len()),
            };
            1u128.checked_shl(bits).unwrap_or(u128::MAX)
        })
        .fold(0u128, u128::saturating_add)
}

/// Whether a provider's new list (`v4`, `v6`) stays within [`MAX_V4_ADDRESSES`] /
/// [`MAX_V6_ADDRESSES`] and within [`MAX_GROWTH`] of its `previous` list (`None`: nothing to
/// compare with). The reason, when not.
pub fn size_check(
    v4: &[IpNet],
    v6: &[IpNet],
    previous: Option<(&[IpNet], &[IpNet])>,
) -> Result<(), String> {
    let families = [
        (
            "IPv4",
            address_count(v4),
            MAX_V4_ADDRESSES,
            1u128 << 16,
            previous.map(|p| p.0),
        ),
        (
            "IPv6",
            address_count(v6),
            MAX_V6_ADDRESSES,
            1u128 << 96,
            previous.map(|p| p.1),
        ),
    ];
    for (family, count, max, slack, old) in families {
        if count > max {
            return Err(format!(
                "its {family} ranges cover {count} addresses, more than the {max} a CDN list may"
            ));
        }
        if let Some(old) = old {
            let before = address_count(old);
            let allowed = before
                .saturating_mul(MAX_GROWTH)
                .max(before.saturating_add(slack));
            if count > allowed {
                return Err(format!(
                    "its {family} ranges grew from {before} to {count} addresses (more than {MAX_GROWTH} times)"
                ));
            }
        }
    }
    Ok(())
}

/// Every provider's current list (bundled, or updated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdnCatalog {
    pub providers: BTreeMap<Provider, ProviderRanges>,
    /// Saved lists that were ignored (unreadable, invalid), with the reason.
    pub notes: Vec<String>,
}

impl CdnCatalog {
    /// The bundled lists only.
    pub fn bundled() -> Self {
        CdnCatalog {
            providers: Provider::ALL.iter().map(|p| (*p, ranges(*p))).collect(),
            notes: Vec::new(),
        }
    }

    pub fn get(&self, p: Provider) -> Option<&ProviderRanges> {
        self.providers.get(&p)
    }

    /// The provider's addresses of one family.
    pub fn set(&self, p: Provider, family: Family) -> AddrSet {
        self.get(p)
            .map(|r| r.set(family))
            .unwrap_or_else(|| AddrSet::empty(family))
    }

    /// The providers whose published ranges hold `addr`.
    pub fn providers_of(&self, addr: &IpAddr) -> Vec<Provider> {
        let (family, value) = addr_value(addr);
        self.providers
            .values()
            .filter(|r| r.set(family).contains(value))
            .map(|r| r.provider)
            .collect()
    }
}

struct Bundled {
    files: &'static [&'static str],
    caveat: Option<&'static str>,
}

fn bundled_files(p: Provider) -> Bundled {
    match p {
        Provider::Cloudflare => Bundled {
            files: &[
                include_str!("../../cdn-ranges/cloudflare-v4.txt"),
                include_str!("../../cdn-ranges/cloudflare-v6.txt"),
            ],
            caveat: None,
        },
        Provider::Fastly => Bundled {
            files: &[
                include_str!("../../cdn-ranges/fastly-v4.txt"),
                include_str!("../../cdn-ranges/fastly-v6.txt"),
            ],
            caveat: None,
        },
        Provider::Cloudfront => Bundled {
            files: &[
                include_str!("../../cdn-ranges/cloudfront-v4.txt"),
                include_str!("../../cdn-ranges/cloudfront-v6.txt"),
                include_str!("../../cdn-ranges/cloudfront-origin-facing-v4.txt"),
                include_str!("../../cdn-ranges/cloudfront-origin-facing-v6.txt"),
            ],
            caveat: Some(
                "edge (CLOUDFRONT) and origin-facing (CLOUDFRONT_ORIGIN_FACING) sets together",
            ),
        },
        Provider::Akamai => Bundled {
            files: &[
                include_str!("../../cdn-ranges/akamai-v4.txt"),
                include_str!("../../cdn-ranges/akamai-v6.txt"),
            ],
            caveat: Some("only the Origin IP ACL ranges; Site Shield maps are per customer"),
        },
        Provider::Bunny => Bundled {
            files: &[
                include_str!("../../cdn-ranges/bunny-v4.txt"),
                include_str!("../../cdn-ranges/bunny-v6.txt"),
            ],
            caveat: Some("single edge addresses that change daily: run `cdn update`"),
        },
        Provider::Gcore => Bundled {
            files: &[
                include_str!("../../cdn-ranges/gcore-v4.txt"),
                include_str!("../../cdn-ranges/gcore-v6.txt"),
            ],
            caveat: Some("single edge addresses that change constantly: run `cdn update`"),
        },
        Provider::Imperva => Bundled {
            files: &[
                include_str!("../../cdn-ranges/imperva-v4.txt"),
                include_str!("../../cdn-ranges/imperva-v6.txt"),
            ],
            caveat: None,
        },
        Provider::Sucuri => Bundled {
            files: &[
                include_str!("../../cdn-ranges/sucuri-v4.txt"),
                include_str!("../../cdn-ranges/sucuri-v6.txt"),
            ],
            caveat: Some("documentation page only, no machine-readable list"),
        },
        Provider::Stackpath => Bundled {
            files: &[
                include_str!("../../cdn-ranges/stackpath-v4.txt"),
                include_str!("../../cdn-ranges/stackpath-v6.txt"),
            ],
            caveat: Some("legacy list, not refreshed since April 2024"),
        },
        Provider::AzureFrontdoor => Bundled {
            files: &[
                include_str!("../../cdn-ranges/azure-frontdoor-v4.txt"),
                include_str!("../../cdn-ranges/azure-frontdoor-v6.txt"),
            ],
            caveat: Some("shared by all Front Door customers: also check the X-Azure-FDID header"),
        },
        Provider::GoogleLb => Bundled {
            files: &[
                include_str!("../../cdn-ranges/google-lb-v4.txt"),
                include_str!("../../cdn-ranges/google-lb-v6.txt"),
                include_str!("../../cdn-ranges/google-lb-internet-neg-v4.txt"),
            ],
            caveat: Some("GFE proxies, health checks and internet-NEG sources from Google's docs"),
        },
    }
}

/// Reads a bundled-format list: `#` comments, one CIDR a line. Returns the networks and the
/// snapshot date from the `# Snapshot date:` header.
pub fn parse_list(text: &str) -> (Vec<IpNet>, Option<String>) {
    let mut nets = Vec::new();
    let mut date = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(d) = line.strip_prefix("# Snapshot date:") {
            if date.is_none() {
                date = d.split_whitespace().next().map(str::to_string);
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(net) = parse_net(line) {
            nets.push(net);
        }
    }
    (nets, date)
}

/// The bundled list of one provider.
pub fn ranges(provider: Provider) -> ProviderRanges {
    let b = bundled_files(provider);
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut dates = Vec::new();
    for text in b.files {
        let (nets, date) = parse_list(text);
        if let Some(d) = date {
            dates.push(d);
        }
        for n in nets {
            match n {
                IpNet::V4(_) => v4.push(n),
                IpNet::V6(_) => v6.push(n),
            }
        }
    }
    v4.sort();
    v4.dedup();
    v6.sort();
    v6.dedup();
    dates.sort();
    dates.dedup();
    ProviderRanges {
        provider,
        v4,
        v6,
        origin: RangeOrigin::Bundled {
            date: if dates.is_empty() {
                "unknown".to_string()
            } else {
                dates.join(", ")
            },
        },
        caveat: b.caveat.map(str::to_string),
    }
}

/// The catalog the audit uses: the bundled lists, each overridden by a valid list `cdn update`
/// saved in `state_dir`. A saved list that does not validate is ignored (and noted).
pub fn load(state_dir: &Path) -> CdnCatalog {
    let mut catalog = CdnCatalog::bundled();
    for p in Provider::ALL {
        match update::read_saved(state_dir, *p) {
            Ok(Some(saved)) => {
                if let Some(entry) = catalog.providers.get_mut(p) {
                    entry.v4 = saved.v4;
                    entry.v6 = saved.v6;
                    entry.origin = saved.origin;
                }
            }
            Ok(None) => {}
            Err(e) => catalog.notes.push(format!("{p}: saved list ignored: {e}")),
        }
    }
    catalog
}

fn origin_text(o: &RangeOrigin) -> String {
    match o {
        RangeOrigin::Bundled { date } => format!("bundled snapshot {date}"),
        RangeOrigin::Updated { fetched_at, .. } => format!("updated {fetched_at}"),
    }
}

/// `origin-agent cdn list`: one line per provider.
pub fn list_text(catalog: &CdnCatalog) -> String {
    let mut out = format!(
        "{:<16} {:>6} {:>6}  {}\n",
        "PROVIDER", "IPv4", "IPv6", "SOURCE"
    );
    for r in catalog.providers.values() {
        out.push_str(&format!(
            "{:<16} {:>6} {:>6}  {}\n",
            r.provider.name(),
            r.v4.len(),
            r.v6.len(),
            origin_text(&r.origin)
        ));
    }
    for n in &catalog.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

/// `origin-agent cdn show NAME`: the header and every range.
pub fn show_text(catalog: &CdnCatalog, p: Provider) -> String {
    let Some(r) = catalog.get(p) else {
        return format!("{p}: no list\n");
    };
    let mut out = format!(
        "# {}: {} IPv4, {} IPv6 ranges ({})\n",
        p.name(),
        r.v4.len(),
        r.v6.len(),
        origin_text(&r.origin)
    );
    if let RangeOrigin::Updated { url, path, .. } = &r.origin {
        out.push_str(&format!(
            "# fetched from {url}, saved in {}\n",
            path.display()
        ));
    }
    if let Some(c) = &r.caveat {
        out.push_str(&format!("# note: {c}\n"));
    }
    for n in r.nets() {
        out.push_str(&n.to_string());
        out.push('\n');
    }
    out
}

/// What the web server's real-IP setup says about the CDN in front: the trusted proxy ranges as
/// written (nginx `set_real_ip_from`, Apache `RemoteIPTrustedProxy`) and the header the visitor's
/// address is taken from (`real_ip_header`). Discovery fills it (`RealIp::cdn_hints`); the
/// catalog needs nothing else of discovery's model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RealIpHints<'a> {
    /// Each trusted proxy entry as written (a CIDR, an address, `unix:`).
    pub trusted: Vec<&'a str>,
    /// The request header that carries the visitor's address, if one is set.
    pub header: Option<&'a str>,
}

/// Which CDNs front this origin, and why: access-log clients inside a provider's ranges, nginx's
/// `set_real_ip_from` entries inside them, and log formats or `real_ip_header` naming a
/// provider's header (`$http_cf_connecting_ip`).
pub fn detect(
    catalog: &CdnCatalog,
    clients: &BTreeMap<String, u64>,
    real_ip: &RealIpHints<'_>,
    log_formats: &BTreeMap<String, String>,
) -> Vec<(Provider, String)> {
    let mut why: BTreeMap<Provider, Vec<String>> = BTreeMap::new();
    // Access-log clients.
    let total: u64 = clients.values().sum();
    let mut hits: BTreeMap<Provider, (u64, usize)> = BTreeMap::new();
    for (addr, count) in clients {
        let Ok(ip) = addr.trim().parse::<IpAddr>() else {
            continue;
        };
        for p in catalog.providers_of(&ip) {
            let e = hits.entry(p).or_default();
            e.0 += count;
            e.1 += 1;
        }
    }
    for (p, (requests, addrs)) in hits {
        // A handful of requests from a provider's space (a crawler on Google Cloud) is not a
        // CDN in front: demand a real share of the traffic or several edge addresses.
        if requests * 20 >= total.max(1) || addrs >= 3 {
            why.entry(p).or_default().push(format!(
                "{requests} of {total} access-log requests come from {addrs} addresses in {p}'s ranges"
            ));
        }
    }
    // set_real_ip_from.
    let mut trusted: BTreeMap<Provider, usize> = BTreeMap::new();
    for entry in &real_ip.trusted {
        let Some(net) = parse_net(entry) else {
            continue;
        };
        let family = Family::of(&net);
        let s = AddrSet::from_nets(family, [&net]);
        for r in catalog.providers.values() {
            if !r.set(family).intersect(&s).is_empty() && net.prefix_len() > 0 {
                *trusted.entry(r.provider).or_default() += 1;
            }
        }
    }
    for (p, n) in trusted {
        why.entry(p).or_default().push(format!(
            "nginx trusts {n} of its ranges in set_real_ip_from"
        ));
    }
    // Headers in real_ip_header and log formats.
    let mut texts: Vec<(String, String)> = log_formats
        .iter()
        .map(|(name, f)| (format!("log_format {name}"), f.to_ascii_lowercase()))
        .collect();
    if let Some(h) = real_ip.header {
        texts.push((
            "real_ip_header".to_string(),
            format!("$http_{}", h.to_ascii_lowercase().replace('-', "_")),
        ));
    }
    for (where_, text) in &texts {
        for (p, header) in header_hints() {
            if text.contains(header) {
                why.entry(*p)
                    .or_default()
                    .push(format!("{where_} uses ${header}"));
            }
        }
    }
    why.into_iter()
        .map(|(p, mut reasons)| {
            reasons.dedup();
            (p, reasons.join("; "))
        })
        .collect()
}

/// Request headers only one provider sets, as nginx variables (without the `$`).
pub fn header_hints() -> &'static [(Provider, &'static str)] {
    &[
        (Provider::Cloudflare, "http_cf_connecting_ip"),
        (Provider::Cloudflare, "http_cf_ray"),
        (Provider::Fastly, "http_fastly_client_ip"),
        (Provider::Cloudfront, "http_cloudfront_viewer_address"),
        (Provider::Akamai, "http_true_client_ip"),
        (Provider::Imperva, "http_incap_client_ip"),
        (Provider::Sucuri, "http_x_sucuri_clientip"),
        (Provider::AzureFrontdoor, "http_x_azure_clientip"),
        (Provider::AzureFrontdoor, "http_x_azure_fdid"),
    ]
}

/// The header a provider puts the visitor's address in (for `real_ip_header`).
pub fn real_ip_header(p: Provider) -> &'static str {
    match p {
        Provider::Cloudflare => "CF-Connecting-IP",
        Provider::Fastly => "Fastly-Client-IP",
        Provider::Akamai => "True-Client-IP",
        Provider::Imperva => "Incap-Client-IP",
        Provider::Sucuri => "X-Sucuri-ClientIP",
        Provider::AzureFrontdoor => "X-Azure-ClientIP",
        Provider::Cloudfront
        | Provider::Bunny
        | Provider::Gcore
        | Provider::Stackpath
        | Provider::GoogleLb => "X-Forwarded-For",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bundled_lists_pass_the_size_bounds_and_a_swollen_list_does_not() {
        for p in Provider::ALL {
            let r = ranges(*p);
            assert_eq!(
                size_check(&r.v4, &r.v6, Some((&r.v4, &r.v6))),
                Ok(()),
                "{p}"
            );
        }
        // A thousand /16s: every prefix passes the /8 rule, the total does not.
        let swollen: Vec<IpNet> = (0..1000u32)
            .map(|i| {
                format!("{}.{}.0.0/16", 11 + i / 256, i % 256)
                    .parse()
                    .unwrap()
            })
            .collect();
        let err = size_check(&swollen, &[], None).unwrap_err();
        assert!(err.contains("more than"), "{err}");
        // Growth: Cloudflare's list plus two /10s is more than twice as large.
        let cf = ranges(Provider::Cloudflare);
        let mut grown = cf.v4.clone();
        grown.push("100.64.0.0/10".parse().unwrap());
        grown.push("44.0.0.0/10".parse().unwrap());
        let err = size_check(&grown, &cf.v6, Some((&cf.v4, &cf.v6))).unwrap_err();
        assert!(err.contains("grew"), "{err}");
    }

    #[test]
    fn bundled_lists_match_their_headers() {
        for p in Provider::ALL {
            let r = ranges(*p);
            assert!(!r.is_empty(), "{p}");
            assert!(r.v4.iter().all(|n| matches!(n, IpNet::V4(_))));
            assert!(r.v6.iter().all(|n| matches!(n, IpNet::V6(_))));
        }
        let cf = ranges(Provider::Cloudflare);
        assert_eq!((cf.v4.len(), cf.v6.len()), (15, 7));
        assert_eq!(
            cf.origin,
            RangeOrigin::Bundled {
                date: "2026-08-22".into()
            }
        );
        let text = show_text(&CdnCatalog::bundled(), Provider::Cloudflare);
        assert!(text.contains("\n173.245.48.0/20\n"));
        assert!(list_text(&CdnCatalog::bundled()).contains("cloudflare"));
    }

    #[test]
    fn detects_from_clients_real_ip_and_formats() {
        let cat = CdnCatalog::bundled();
        let mut clients = BTreeMap::new();
        clients.insert("173.245.48.9".to_string(), 900u64);
        clients.insert("198.51.100.7".to_string(), 100u64);
        clients.insert("garbage".to_string(), 5u64);
        let real_ip = RealIpHints {
            trusted: vec!["151.101.0.0/16"],
            header: None,
        };
        let mut formats = BTreeMap::new();
        formats.insert(
            "main".to_string(),
            "$remote_addr $http_x_sucuri_clientip".to_string(),
        );
        let found = detect(&cat, &clients, &real_ip, &formats);
        let names: Vec<Provider> = found.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            names,
            [Provider::Cloudflare, Provider::Fastly, Provider::Sucuri]
        );
        assert!(found[0].1.contains("900 of 1005"));
        // One stray request from a provider's space is not a CDN.
        let mut few = BTreeMap::new();
        few.insert("173.245.48.9".to_string(), 1u64);
        few.insert("198.51.100.7".to_string(), 1000u64);
        assert!(detect(&cat, &few, &RealIpHints::default(), &BTreeMap::new()).is_empty());
    }
}
