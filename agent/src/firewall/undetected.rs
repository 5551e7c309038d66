//! The firewall when no CDN is configured or detected: a firewall that blocks a CDN entirely also
//! removes it from the access log, so detection cannot be the gate. Every bundled provider is
//! evaluated; a rule that targets addresses inside a provider's ranges on the web ports (not one
//! that closes them to everyone) names the provider, and is a cause when it blocks. A default deny
//! that closes the web ports to every public address is reported as such.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::eval::{self, RuleRef};
use super::{evaluate_rules, ports_text, provider_check, ufw, ProviderVerdict, Reach, Rulesets};
use crate::addrset::{parse_net, AddrSet, Family};
use crate::cdn::{CdnCatalog, Provider};
use crate::check::{Area, Check};

/// Adds what the traffic cannot show: a Cloudflare Origin CA certificate on the origin.
pub(super) fn more_evidence(
    host: &dyn crate::host::Host,
    discovery: &crate::discover::Discovery,
    detected: &mut Vec<(Provider, String)>,
) {
    let certificates = discovery.nginx.iter().flat_map(|n| {
        n.servers
            .iter()
            .filter_map(|s| s.ssl_certificate.as_ref())
            .map(|c| c.value.as_path())
    });
    if let Some(path) = crate::cdn::evidence::cloudflare_origin_cert(host, certificates) {
        let why = format!(
            "nginx serves {}, a Cloudflare Origin CA certificate (only Cloudflare's edge trusts it)",
            path.display()
        );
        match detected
            .iter_mut()
            .find(|(p, _)| *p == Provider::Cloudflare)
        {
            Some((_, reasons)) => {
                reasons.push_str("; ");
                reasons.push_str(&why);
            }
            None => detected.push((Provider::Cloudflare, why)),
        }
    }
}

/// Addresses no visitor on the internet has.
const NOT_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/3",
    "::/8",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The checks and the verdicts of providers some rule targets.
pub(super) fn evaluate(
    rulesets: &Rulesets,
    catalog: &CdnCatalog,
    ports: &[u16],
    ufw_files: &ufw::UfwFiles,
) -> (Vec<Check>, Vec<ProviderVerdict>) {
    let providers: Vec<Provider> = Provider::ALL
        .iter()
        .copied()
        .filter(|p| catalog.get(*p).is_some_and(|r| !r.is_empty()))
        .collect();
    let public = everyone(rulesets, catalog, &providers, ports);
    let (everyone, closed) = (public.blocking, public.closed);
    let mut checks = Vec::new();
    let mut targeted = Vec::new();
    // A CDN-only origin (the rules accept a provider) closes the web ports to the rest on purpose.
    let mut allow_listed = false;
    for mut v in evaluate_rules(rulesets, catalog, &providers, ports) {
        if v.allowed
            .iter()
            .any(|part| !public.accepting.contains(&part.rule))
        {
            // The firewall accepts this provider's ranges by name: it fronts the origin, and
            // whatever else stops its ranges (a default deny past a stale list) counts.
            let mut c = provider_check(&v, ports, Some(ufw_files));
            c.detail
                .push_str(" (detected from the firewall: its rules accept this provider's ranges)");
            checks.push(c);
            targeted.push(v);
            allow_listed = true;
            continue;
        }
        v.blocked.retain(|part| !everyone.contains(&part.rule));
        if v.blocked.is_empty() {
            continue;
        }
        v.reach = if v.allowed.is_empty() {
            Reach::Blocked
        } else {
            Reach::PartlyBlocked
        };
        let mut c = provider_check(&v, ports, Some(ufw_files));
        c.detail.push_str(
            " (no CDN is configured or detected, so every bundled provider was evaluated: this rule targets its ranges)",
        );
        checks.push(c);
        targeted.push(v);
    }
    if !closed.is_empty() && !allow_listed {
        let rules: Vec<String> = closed.iter().map(|(_, r)| r.describe()).collect();
        let ports_closed: BTreeSet<u16> = closed.iter().map(|(p, _)| *p).collect();
        let ports_closed: Vec<u16> = ports_closed.into_iter().collect();
        checks.push(
            Check::fail(
                "firewall.web-ports",
                Area::Firewall,
                format!("Firewall lets the public reach ports {}", ports_text(ports)),
            )
            .detail(format!(
                "ports {} are closed to every public address, a CDN's included (a default deny with no accept for the web ports): {}",
                ports_text(&ports_closed),
                rules.into_iter().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join("; ")
            ))
            .fix(format!(
                "accept the web ports before the deny (ufw: `ufw allow 80,443/tcp`; iptables: `iptables -I INPUT -p tcp -m multiport --dports {} -j ACCEPT`), or only the CDN's ranges: `origin-agent whitelist --provider NAME`",
                ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
            )),
        );
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "firewall.cdn",
            Area::Firewall,
            "Firewall against CDN ranges",
        ).detail(format!(
            "no CDN fronts this origin (none configured, none detected); no rule targets the ranges of any of the {} bundled providers on ports {}",
            providers.len(),
            ports_text(ports)
        )));
    }
    (checks, targeted)
}

/// How the firewall treats the public at large (every public address outside the CDNs).
struct Public {
    /// Rules that block a sizeable share of it: not aimed at a CDN.
    blocking: BTreeSet<RuleRef>,
    /// Rules that accept a sizeable share of it.
    accepting: BTreeSet<RuleRef>,
    /// Ports where most of it is blocked, with the rule that does it.
    closed: Vec<(u16, RuleRef)>,
}

fn everyone(
    rulesets: &Rulesets,
    catalog: &CdnCatalog,
    providers: &[Provider],
    ports: &[u16],
) -> Public {
    let mut public = Public {
        blocking: BTreeSet::new(),
        accepting: BTreeSet::new(),
        closed: Vec::new(),
    };
    for family in [Family::V4, Family::V6] {
        if rulesets.unread.contains(&family) {
            continue;
        }
        let cdn = providers.iter().fold(AddrSet::empty(family), |acc, p| {
            acc.union(&catalog.set(*p, family))
        });
        let private: Vec<IpNet> = NOT_PUBLIC.iter().filter_map(|n| parse_net(n)).collect();
        let private =
            AddrSet::from_nets(family, private.iter().filter(|n| Family::of(n) == family));
        let rest = AddrSet::full(family).subtract(&cdn).subtract(&private);
        if rest.is_empty() {
            continue;
        }
        let sizeable = rest.size() / 1024;
        let rs = rulesets.get(family);
        for &port in ports {
            let e = eval::evaluate_path(rs, &rest, rulesets.path(family, port).0);
            for d in e.accepted_in(&rest) {
                if d.set.size() >= sizeable {
                    public.accepting.insert(d.by.clone());
                }
            }
            let blocked = e.blocked_in(&rest);
            let size: u128 = blocked.iter().map(|d| d.set.size()).sum();
            for d in &blocked {
                if d.set.size() >= sizeable {
                    public.blocking.insert(d.by.clone());
                }
            }
            if size >= rest.size() / 2 {
                if let Some(d) = blocked.iter().max_by_key(|d| d.set.size()) {
                    public.closed.push((port, d.by.clone()));
                }
            }
        }
    }
    public
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{build_rulesets, RuleTexts};
    use super::*;
    use crate::cause::CauseId;
    use crate::check::Status;

    fn run(ipt: &str) -> (Vec<Check>, Vec<ProviderVerdict>) {
        let rs = build_rulesets(&RuleTexts {
            iptables: Some(ipt.into()),
            ..Default::default()
        });
        evaluate(
            &rs,
            &CdnCatalog::bundled(),
            &[80, 443],
            &ufw::UfwFiles {
                user_rules: None,
                user6_rules: None,
                enabled: None,
                input_policy: crate::firewall::eval::Verdict::Drop,
            },
        )
    }

    #[test]
    fn a_rule_aimed_at_a_cdn_names_it_with_no_cdn_configured() {
        let (checks, verdicts) = run("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 173.245.48.0/20 -p tcp --dport 443 -j DROP\n-A INPUT -s 203.0.113.7/32 -j DROP\nCOMMIT\n");
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert_eq!(verdicts[0].provider, Provider::Cloudflare);
        let c = checks
            .iter()
            .find(|c| c.id == "firewall.cloudflare")
            .unwrap();
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.cause, Some(CauseId::FirewallCdnBlocked));
        assert!(checks.iter().all(|c| c.id != "firewall.web-ports"));
    }

    #[test]
    fn a_default_deny_is_reported_as_closing_the_web_ports_not_as_a_cdn() {
        let (checks, verdicts) =
            run("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n");
        assert!(verdicts.is_empty(), "{verdicts:?}");
        let c = checks
            .iter()
            .find(|c| c.id == "firewall.web-ports")
            .unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.cause.is_none());
    }

    #[test]
    fn a_stale_allow_list_names_its_provider_and_the_deny_behind_it_counts() {
        let (checks, verdicts) = run("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -s 173.245.48.0/20 -p tcp -m multiport --dports 80,443 -j ACCEPT\nCOMMIT\n");
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert_eq!(verdicts[0].provider, Provider::Cloudflare);
        assert_eq!(verdicts[0].reach, Reach::PartlyBlocked);
        let c = checks
            .iter()
            .find(|c| c.id == "firewall.cloudflare")
            .unwrap();
        assert_eq!(c.cause, Some(CauseId::FirewallCdnBlocked));
        assert!(checks.iter().all(|c| c.id != "firewall.web-ports"));
    }

    #[test]
    fn an_open_firewall_with_no_cdn_is_fine() {
        let (checks, verdicts) =
            run("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 203.0.113.7/32 -j DROP\nCOMMIT\n");
        assert!(verdicts.is_empty());
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Ok);
    }
}
