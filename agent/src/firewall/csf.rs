//! What CSF (ConfigServer Security & Firewall) holds beyond the rules it built: temporary
//! blocks lfd made (`csf -t`) of CDN addresses, CDN ranges missing from `csf.ignore` (lfd may
//! block an edge that trips a login or connection-rate trigger), and country blocks
//! (`CC_DENY`) that catch CDN edges in those countries unless `csf.allow` lets the ranges in
//! first. The deny list `csf.deny` is read by [`super::files`].

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::files::parse_csf;
use crate::addrset::{parse_net, AddrSet, Family};
use crate::cause::CauseId;
use crate::cdn::{CdnCatalog, Provider};
use crate::check::{Area, Check};
use crate::host::{Command, Host, HostExt};

/// The addresses in `csf -t` output (one temporary allow or deny per line), with their line.
pub fn parse_temp(text: &str) -> Vec<(IpAddr, String)> {
    text.lines()
        .filter(|l| l.trim_start().starts_with("DENY"))
        .filter_map(|l| {
            let ip = l
                .split_whitespace()
                .find_map(|w| w.parse::<IpAddr>().ok())?;
            Some((ip, l.split_whitespace().collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

fn provider_of(ip: &IpAddr, catalog: &CdnCatalog, providers: &[Provider]) -> Option<Provider> {
    let net = parse_net(&ip.to_string())?;
    let family = Family::of(&net);
    let one = AddrSet::from_nets(family, [&net]);
    providers
        .iter()
        .copied()
        .find(|p| !catalog.set(*p, family).intersect(&one).is_empty())
}

/// The CSF checks, when CSF is installed.
pub fn checks(host: &dyn Host, catalog: &CdnCatalog, providers: &[Provider]) -> Vec<Check> {
    let conf = Path::new("/etc/csf/csf.conf");
    let Ok(conf_text) = host.read_text(conf) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // Temporary blocks.
    let id = "csf.cdn-temp-blocked";
    let title = "lfd holds no temporary block of a CDN address";
    match host.run(&Command::new("csf", &["-t"]).timeout(Duration::from_secs(30))) {
        Ok(o) if o.success() => {
            let hits: Vec<(IpAddr, String, Provider)> = parse_temp(&o.stdout_text())
                .into_iter()
                .filter_map(|(ip, line)| Some((ip, line, provider_of(&ip, catalog, providers)?)))
                .collect();
            if hits.is_empty() {
                out.push(Check::ok(id, Area::Firewall, title));
            } else {
                out.push(
                    Check::fail(id, Area::Firewall, title)
                        .detail(
                            hits.iter()
                                .map(|(ip, line, p)| format!("{ip} ({p}): {line}"))
                                .collect::<Vec<_>>()
                                .join("; "),
                        )
                        .cause(CauseId::FirewallCdnBlocked)
                        .fix(
                            hits.iter()
                                .map(|(ip, _, _)| format!("csf -tr {ip}"))
                                .collect::<Vec<_>>()
                                .join("\n")
                                + "\nthen keep lfd from blocking edges again: origin-agent whitelist --backend csf --apply (adds the ranges to csf.ignore)",
                        ),
                );
            }
        }
        _ => {}
    }
    // csf.ignore coverage and country blocks, per provider in use.
    let ignore = host
        .read_text(Path::new("/etc/csf/csf.ignore"))
        .unwrap_or_default();
    let allow = host
        .read_text(Path::new("/etc/csf/csf.allow"))
        .unwrap_or_default();
    let covered = |text: &str, family: Family| {
        let nets: Vec<_> = parse_csf(text)
            .into_iter()
            .map(|e| e.net)
            .filter(|n| Family::of(n) == family)
            .collect();
        AddrSet::from_nets(family, nets.iter())
    };
    let mut missing_ignore = Vec::new();
    let mut missing_allow = Vec::new();
    for p in providers {
        for family in [Family::V4, Family::V6] {
            let want = catalog.set(*p, family);
            let m = want.subtract(&covered(&ignore, family));
            if !m.is_empty() {
                missing_ignore.push(format!("{p} {}", m.describe(3)));
            }
            let m = want.subtract(&covered(&allow, family));
            if !m.is_empty() {
                missing_allow.push(format!("{p} {}", m.describe(3)));
            }
        }
    }
    let id = "csf.cdn-ignored";
    let title = "lfd ignores the CDN's ranges (csf.ignore)";
    out.push(if missing_ignore.is_empty() {
        Check::ok(id, Area::Firewall, title)
    } else {
        Check::warn(id, Area::Firewall, title)
            .detail(format!(
                "not in /etc/csf/csf.ignore: {} — lfd can block a CDN edge that trips one of its triggers (every visitor behind it then gets 5xx from the CDN)",
                missing_ignore.join("; ")
            ))
            .fix("origin-agent whitelist --backend csf --apply")
    });
    let cc_deny = setting(&conf_text, "CC_DENY").unwrap_or_default();
    if !cc_deny.is_empty() {
        let id = "csf.country-block";
        let title = "CSF's country blocks spare the CDN";
        out.push(if missing_allow.is_empty() {
            Check::ok(id, Area::Firewall, title).detail(format!(
                "CC_DENY = \"{cc_deny}\"; the CDN's ranges are in csf.allow, which CSF checks first"
            ))
        } else {
            Check::warn(id, Area::Firewall, title)
                .detail(format!(
                    "CC_DENY = \"{cc_deny}\" drops every address CSF locates in those countries, CDN edges there included; not in /etc/csf/csf.allow: {}",
                    missing_allow.join("; ")
                ))
                .fix("origin-agent whitelist --backend csf --apply (csf.allow is checked before the country blocks)")
        });
    }
    out
}

/// A `KEY = "VALUE"` setting of `csf.conf`.
pub fn setting(conf: &str, key: &str) -> Option<String> {
    conf.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::check::Status;
    use crate::host::fixture::FixtureHost;

    #[test]
    fn temp_blocks_of_cdn_edges_missing_ignores_and_country_blocks_are_found() {
        let temp = "\nA/D  IP address                               Port   Dir  Time To Live     Comment\nDENY 173.245.48.10                            *      in   59m 57s          lfd - (sshd) 5 failures\nDENY 198.51.100.7                             *      in   59m 57s          lfd - (sshd) 5 failures\n";
        let host = FixtureHost::new()
            .file("/etc/csf/csf.conf", "CC_DENY = \"CN,RU\"\n")
            .file("/etc/csf/csf.ignore", "127.0.0.1\n")
            .file(
                "/etc/csf/csf.allow",
                "tcp|in|d=80,443|s=173.245.48.0/20 # x\n",
            )
            .command_ok("csf -t", temp);
        let c = CdnCatalog::bundled();
        let found = checks(&host, &c, &[Provider::Cloudflare]);
        let by = |id: &str| found.iter().find(|c| c.id == id).unwrap();
        let t = by("csf.cdn-temp-blocked");
        assert_eq!(t.status, Status::Fail);
        assert!(
            t.detail.contains("173.245.48.10 (cloudflare)") && !t.detail.contains("198.51.100.7"),
            "{}",
            t.detail
        );
        assert_eq!(by("csf.cdn-ignored").status, Status::Warn);
        let cc = by("csf.country-block");
        assert_eq!(cc.status, Status::Warn);
        assert!(!cc.detail.contains("173.245.48.0/20"), "{}", cc.detail);
        assert!(checks(&FixtureHost::new(), &c, &[Provider::Cloudflare]).is_empty());
    }
}
