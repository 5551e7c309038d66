//! DNS of the served names (`dns.mismatch`): every plain `server_name` of nginx is resolved with
//! `getent ahosts` through the host seam (the system resolver, /etc/hosts included; snapshots
//! replay it) and its addresses compared with this host's own (`ip -o addr`, plus the config's
//! `cdn.origin_addresses` for NAT'd public addresses) and the CDNs' published ranges.
//!
//! A name that points at a CDN or at this origin is fine. One that points elsewhere fails only
//! when the origin's public addresses are known (local, or configured): on a NAT'd host they are
//! not, and the check says so instead of guessing.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::cause::CauseId;
use crate::cdn::CdnCatalog;
use crate::check::{Area, Check};
use crate::config::Config;
use crate::discover::Discovery;
use crate::host::{Command, Host};

/// The addresses `getent ahosts` printed (first column, deduplicated, in order).
pub fn parse_getent(text: &str) -> Vec<IpAddr> {
    let mut seen = BTreeSet::new();
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<IpAddr>().ok())
        .filter(|a| seen.insert(*a))
        .collect()
}

/// The addresses of `ip -o addr show` (`inet 192.0.2.2/24 …`, `inet6 ::1/128 …`).
pub fn parse_ip_addr(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

fn plain_names(discovery: &Discovery) -> Vec<String> {
    let names: BTreeSet<String> = discovery
        .nginx
        .iter()
        .flat_map(|n| &n.servers)
        .flat_map(|s| s.host_names())
        .collect();
    names.into_iter().collect()
}

pub fn checks(host: &dyn Host, discovery: &Discovery, config: &Config) -> Vec<Check> {
    let names = plain_names(discovery);
    if names.is_empty() {
        return Vec::new();
    }
    let timeout = config.command_timeout;
    let mut own: Vec<IpAddr> = config.origin_addresses.clone();
    if let Ok(listing) = host.run(&Command::new("ip", &["-o", "addr", "show"]).timeout(timeout)) {
        if listing.success() {
            own.extend(parse_ip_addr(&listing.stdout_text()));
        }
    }
    // A host whose own addresses are all private is NAT'd: its public address is unknown unless
    // the config names it.
    let public_known = !config.origin_addresses.is_empty() || own.iter().any(is_public);
    let catalog = crate::cdn::load(&config.state_dir);
    let mut checks = Vec::new();
    for name in names.iter().take(20) {
        let id = format!("dns.{name}");
        let title = format!("{name} resolves to the CDN or this origin");
        let addresses = match host.run(&Command::new("getent", &["ahosts", name]).timeout(timeout))
        {
            Ok(answer) if answer.success() => parse_getent(&answer.stdout_text()),
            Ok(answer) if answer.status == Some(2) => {
                checks.push(
                    Check::warn(id, Area::Network, title)
                        .detail(format!("{name} does not resolve here (getent: not found)")),
                );
                continue;
            }
            Ok(answer) => {
                checks.push(Check::skip(
                    id,
                    Area::Network,
                    title,
                    format!("getent failed: {}", answer.stderr.trim()),
                ));
                continue;
            }
            Err(err) => {
                checks.push(Check::skip(id, Area::Network, title, err.to_string()));
                continue;
            }
        };
        checks.push(judge(
            id,
            title,
            name,
            &addresses,
            &own,
            public_known,
            &catalog,
        ));
    }
    checks
}

fn judge(
    id: String,
    title: String,
    name: &str,
    addresses: &[IpAddr],
    own: &[IpAddr],
    public_known: bool,
    catalog: &CdnCatalog,
) -> Check {
    let list = |a: &[IpAddr]| {
        a.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut providers = BTreeSet::new();
    let mut elsewhere = Vec::new();
    for addr in addresses {
        let p = catalog.providers_of(addr);
        if !p.is_empty() {
            providers.extend(p.into_iter().map(|p| p.name()));
        } else if !own.contains(addr) {
            elsewhere.push(*addr);
        }
    }
    if addresses.is_empty() {
        return Check::warn(id, Area::Network, title)
            .detail(format!("{name} resolves to no address"));
    }
    if elsewhere.is_empty() {
        let via = if providers.is_empty() {
            "this origin".to_string()
        } else {
            format!(
                "{} (proxied)",
                providers.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        return Check::ok(id, Area::Network, title)
            .detail(format!("{name} → {} : {via}", list(addresses)));
    }
    if public_known {
        Check::fail(id, Area::Network, title)
            .detail(format!(
                "{name} → {}: neither a CDN's published range nor this origin ({})",
                list(&elsewhere),
                list(own)
            ))
            .cause(CauseId::DnsMismatch)
            .fix(format!(
                "point {name} at the CDN (proxied) or at this origin; if {} is this origin behind NAT, add it to `cdn.origin_addresses`",
                list(&elsewhere)
            ))
    } else {
        Check::warn(id, Area::Network, title).detail(format!(
            "{name} → {}, not a CDN range; this host has only private addresses, so whether that is its public address cannot be told: set `cdn.origin_addresses`",
            list(&elsewhere)
        ))
    }
}

fn is_public(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            !(v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::discover::{Address, Listen, Nginx, Origin, Server};
    use crate::host::fixture::FixtureHost;

    fn discovery(names: &[&str]) -> Discovery {
        Discovery {
            nginx: Some(Nginx {
                servers: vec![Server {
                    names: names.iter().map(|n| n.to_string()).collect(),
                    listens: vec![Listen {
                        address: Address::Tcp("*:80".into()),
                        port: Some(80),
                        ssl: false,
                        default_server: false,
                        backlog: None,
                    }],
                    origin: Origin::Default,
                    ssl_certificate: None,
                    roots: Vec::new(),
                }],
                ..Nginx::default()
            }),
            ..Discovery::default()
        }
    }

    // Outputs recorded from the real `getent ahosts` and `ip -o addr show`.
    const IP_ADDR_PUBLIC: &str = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n2: eth0    inet 198.51.100.20/24 brd 198.51.100.255 scope global eth0\\       valid_lft forever preferred_lft forever\n";
    const IP_ADDR_NAT: &str = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever preferred_lft forever\n";
    fn getent(addr: &str) -> String {
        format!("{addr}       STREAM shop.test\n{addr}       DGRAM  \n{addr}       RAW    \n")
    }

    fn run(host: FixtureHost, config: &Config) -> Check {
        checks(&host, &discovery(&["shop.test", "_", "localhost"]), config).remove(0)
    }

    #[test]
    fn names_pointing_at_a_cdn_or_this_origin_are_fine_and_elsewhere_fails_when_provable() {
        let config = Config::default();
        let base = || FixtureHost::new().command_ok("ip -o addr show", IP_ADDR_PUBLIC);
        let cdn = run(
            base().command_ok("getent ahosts shop.test", &getent("104.16.0.1")),
            &config,
        );
        assert_eq!(cdn.status, crate::check::Status::Ok, "{cdn:?}");
        assert!(cdn.detail.contains("cloudflare"), "{}", cdn.detail);
        let here = run(
            base().command_ok("getent ahosts shop.test", &getent("198.51.100.20")),
            &config,
        );
        assert_eq!(here.status, crate::check::Status::Ok);
        let away = run(
            base().command_ok("getent ahosts shop.test", &getent("203.0.113.9")),
            &config,
        );
        assert_eq!(away.status, crate::check::Status::Fail);
        assert_eq!(away.cause, Some(CauseId::DnsMismatch));
        assert!(away.detail.contains("203.0.113.9"), "{}", away.detail);
    }

    #[test]
    fn behind_nat_elsewhere_is_only_a_warning_until_the_public_address_is_configured() {
        let nat = || {
            FixtureHost::new()
                .command_ok("ip -o addr show", IP_ADDR_NAT)
                .command_ok("getent ahosts shop.test", &getent("203.0.113.9"))
        };
        let unknown = run(nat(), &Config::default());
        assert_eq!(unknown.status, crate::check::Status::Warn);
        assert_eq!(unknown.cause, None);
        let with = |addr: &str| Config {
            origin_addresses: vec![addr.parse().unwrap()],
            ..Config::default()
        };
        assert_eq!(
            run(nat(), &with("203.0.113.9")).status,
            crate::check::Status::Ok
        );
        assert_eq!(
            run(nat(), &with("203.0.113.10")).status,
            crate::check::Status::Fail
        );
    }

    #[test]
    fn unresolvable_names_warn_and_missing_tools_skip() {
        let host = FixtureHost::new()
            .command_ok("ip -o addr show", IP_ADDR_PUBLIC)
            .command(
                "getent ahosts shop.test",
                Ok(crate::host::CommandOutput {
                    status: Some(2),
                    stdout: Vec::new(),
                    stderr: String::new(),
                }),
            );
        assert_eq!(
            run(host, &Config::default()).status,
            crate::check::Status::Warn
        );
        let bare = FixtureHost::new();
        assert_eq!(
            run(bare, &Config::default()).status,
            crate::check::Status::Skip
        );
    }

    #[test]
    fn parsers_take_the_real_shapes() {
        assert_eq!(
            parse_getent(&getent("104.16.0.1")),
            vec!["104.16.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(parse_ip_addr(IP_ADDR_PUBLIC).len(), 2);
    }
}
