//! Deny lists kept in files: CSF's `csf.deny` (loaded into its DENYIN chain or `chain_DENY`
//! ipset when csf starts, so an entry there blocks even if the running rules do not show it yet)
//! and `/etc/hosts.deny` (TCP wrappers: nginx does not use them, so they never block web traffic).

use std::path::Path;

use ipnet::IpNet;

use crate::cause::CauseId;
use crate::cdn::{CdnCatalog, Provider};
use crate::check::{Area, Check};
use crate::host::{Host, HostExt};

use crate::addrset::{parse_net_or_mask, AddrSet, Family};

/// One deny-file entry: the network, its 1-based line and its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyEntry {
    pub net: IpNet,
    pub line: usize,
    pub comment: String,
}

/// Reads `csf.deny` / `csf.allow`: `IP[/CIDR] # comment`; advanced `tcp|in|d=80|s=IP` entries
/// give their `s=` address. `Include` lines and garbage are skipped.
pub fn parse_csf(text: &str) -> Vec<DenyEntry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let (body, comment) = match raw.split_once('#') {
            Some((b, c)) => (b.trim(), c.trim().to_string()),
            None => (raw.trim(), String::new()),
        };
        if body.is_empty() || body.starts_with("Include") {
            continue;
        }
        let addr = if body.contains('|') {
            body.split('|')
                .find_map(|f| f.strip_prefix("s="))
                .unwrap_or("")
        } else {
            body.split_whitespace().next().unwrap_or("")
        };
        if let Some(net) = parse_net_or_mask(addr) {
            out.push(DenyEntry {
                net,
                line: i + 1,
                comment,
            });
        }
    }
    out
}

/// The parts of `entries` inside the providers' ranges, as (entry, provider, exact overlap).
fn cdn_hits(
    entries: &[DenyEntry],
    catalog: &CdnCatalog,
    providers: &[Provider],
) -> Vec<(DenyEntry, Provider, AddrSet)> {
    let mut out = Vec::new();
    for e in entries {
        let family = Family::of(&e.net);
        let s = AddrSet::from_nets(family, [&e.net]);
        for p in providers {
            let hit = catalog.set(*p, family).intersect(&s);
            if !hit.is_empty() {
                out.push((e.clone(), *p, hit));
            }
        }
    }
    out
}

/// `csf.cdn-denied` when csf is installed.
pub fn csf_check(host: &dyn Host, catalog: &CdnCatalog, providers: &[Provider]) -> Option<Check> {
    let path = Path::new("/etc/csf/csf.deny");
    let text = host.read_text(path).ok()?;
    let entries = parse_csf(&text);
    let hits = cdn_hits(&entries, catalog, providers);
    let id = "csf.cdn-denied";
    let title = "CSF's deny list holds no CDN address";
    if hits.is_empty() {
        return Some(Check::ok(id, Area::Firewall, title).detail(format!(
            "{} entries in {}, none inside the CDN's ranges",
            entries.len(),
            path.display()
        )));
    }
    let detail = hits
        .iter()
        .map(|(e, p, hit)| {
            format!(
                "{}:{}: {} blocks {} of {p}{}",
                path.display(),
                e.line,
                e.net,
                hit.describe(4),
                if e.comment.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.comment)
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let fix = hits
        .iter()
        .map(|(e, _, _)| format!("csf -dr {}", e.net))
        .collect::<Vec<_>>()
        .join("\n")
        + "\nthen add the CDN's ranges to /etc/csf/csf.allow and /etc/csf/csf.ignore (so lfd does not ban them again) and run csf -r";
    Some(
        Check::fail(id, Area::Firewall, title)
            .detail(detail)
            .cause(CauseId::FirewallCdnBlocked)
            .fix(fix),
    )
}

/// `hosts-deny.cdn`: only reported when hosts.deny names CDN addresses; nginx does not consult
/// TCP wrappers, so this never blocks web traffic (it does block sshd, vsftpd...).
pub fn hosts_deny_check(
    host: &dyn Host,
    catalog: &CdnCatalog,
    providers: &[Provider],
) -> Option<Check> {
    let text = host.read_text(Path::new("/etc/hosts.deny")).ok()?;
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let Some((daemons, clients)) = line.split_once(':') else {
            continue;
        };
        let daemons = daemons.to_ascii_lowercase();
        if !(daemons.contains("all") || daemons.contains("nginx")) {
            continue;
        }
        let clients = clients.split(':').next().unwrap_or("");
        for c in clients.split([',', ' ', '\t']).filter(|c| !c.is_empty()) {
            let c = c.trim_matches(['[', ']']);
            if let Some(net) = parse_net_or_mask(c) {
                entries.push(DenyEntry {
                    net,
                    line: i + 1,
                    comment: String::new(),
                });
            }
        }
    }
    let hits = cdn_hits(&entries, catalog, providers);
    if hits.is_empty() {
        return None;
    }
    Some(
        Check::ok("hosts-deny.cdn", Area::Firewall, "hosts.deny does not block web traffic")
            .detail(format!(
                "/etc/hosts.deny lists {} (inside {}), but nginx does not use TCP wrappers: it does not block the CDN",
                hits.iter().map(|(e, _, _)| e.net.to_string()).collect::<Vec<_>>().join(", "),
                hits.iter().map(|(_, p, _)| p.name()).collect::<Vec<_>>().join(", ")
            )),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_the_captured_csf_files() {
        let deny = include_str!("../../../tests/fixtures/firewall/csf/csf.deny");
        let entries = parse_csf(deny);
        assert_eq!(entries.len(), 5);
        let hits = cdn_hits(&entries, &CdnCatalog::bundled(), &[Provider::Cloudflare]);
        let nets: Vec<String> = hits.iter().map(|(e, _, _)| e.net.to_string()).collect();
        assert_eq!(nets, ["104.16.77.0/24", "108.162.210.5/32"]);
        assert_eq!(hits[1].0.line, 5);
        assert!(hits[1].0.comment.contains("mod_security"));
        let allow = include_str!("../../../tests/fixtures/firewall/csf/csf.allow");
        let a = parse_csf(allow);
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].net.to_string(), "198.51.100.0/24");
        assert!(
            parse_csf("garbage\n\u{0}\u{1}\n1.2.3.4/255.255.255.0\n")[0]
                .net
                .to_string()
                == "1.2.3.0/24"
        );
    }
}
