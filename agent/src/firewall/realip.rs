//! nginx real IP behind a CDN: does `set_real_ip_from` cover the provider's current ranges
//! (missing, partial), does `real_ip_header` name the header the provider sets, what the access
//! log shows (edge addresses logged as clients), and entries that trust ranges no provider
//! publishes any more (a security finding: anyone there can forge visitor addresses).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::cause::CauseId;
use crate::cdn::{real_ip_header, CdnCatalog, Provider};
use crate::check::{Area, Check};
use crate::discover::RealIp;

use crate::addrset::{addr_value, parse_net, AddrSet, Family};

/// The addresses nginx trusts (`set_real_ip_from`), per family.
pub fn trusted(real_ip: &RealIp, family: Family) -> AddrSet {
    let nets: Vec<ipnet::IpNet> = real_ip
        .set_real_ip_from
        .iter()
        .filter_map(|s| parse_net(&s.value))
        .collect();
    AddrSet::from_nets(family, &nets)
}

/// The share (0..=1) of the provider's addresses nginx trusts, both families weighed by range
/// count so IPv6's size does not swamp IPv4.
pub fn trusted_share(real_ip: &RealIp, catalog: &CdnCatalog, p: Provider) -> f64 {
    let Some(r) = catalog.get(p) else {
        return 0.0;
    };
    let total = r.len();
    if total == 0 {
        return 1.0;
    }
    let mut covered = 0usize;
    for family in [Family::V4, Family::V6] {
        let t = trusted(real_ip, family);
        let nets = match family {
            Family::V4 => &r.v4,
            Family::V6 => &r.v6,
        };
        covered += nets
            .iter()
            .filter(|n| AddrSet::from_nets(family, [*n]).subtract(&t).is_empty())
            .count();
    }
    covered as f64 / total as f64
}

/// The nginx snippet that trusts the provider and reads its header.
pub fn snippet(catalog: &CdnCatalog, p: Provider, missing_only: Option<&[ipnet::IpNet]>) -> String {
    let mut out = format!("# {p} edges (origin-agent)\n");
    let nets: Vec<ipnet::IpNet> = match missing_only {
        Some(m) => m.to_vec(),
        None => catalog
            .get(p)
            .map(|r| r.nets().copied().collect())
            .unwrap_or_default(),
    };
    for n in nets {
        out.push_str(&format!("set_real_ip_from {n};\n"));
    }
    let header = real_ip_header(p);
    out.push_str(&format!("real_ip_header {header};\n"));
    if header == "X-Forwarded-For" {
        out.push_str("real_ip_recursive on;\n");
    }
    out
}

/// `nginx.real-ip.<provider>`.
pub fn coverage_check(
    p: Provider,
    real_ip: &RealIp,
    catalog: &CdnCatalog,
    clients: &BTreeMap<String, u64>,
) -> Check {
    let id = format!("nginx.real-ip.{p}");
    let title = format!("nginx restores visitor addresses behind {p}");
    let Some(ranges) = catalog.get(p) else {
        return Check::skip(id, Area::Cdn, title, format!("no ranges for {p}"));
    };
    // Evidence in the access log: clients inside the provider's ranges.
    let mut edge_requests = 0u64;
    let mut edge_addrs = 0usize;
    let mut total = 0u64;
    for (addr, n) in clients {
        total += n;
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let (f, v) = addr_value(&ip);
            if ranges.set(f).contains(v) {
                edge_requests += n;
                edge_addrs += 1;
            }
        }
    }
    let evidence = if edge_requests > 0 {
        format!(
            "; the access log shows {edge_requests} of {total} requests from {edge_addrs} {p} edge addresses as the client"
        )
    } else {
        String::new()
    };
    let mut missing = Vec::new();
    for family in [Family::V4, Family::V6] {
        let t = trusted(real_ip, family);
        missing.extend(ranges.set(family).subtract(&t).to_nets());
    }
    let header = real_ip
        .real_ip_header
        .as_ref()
        .map(|h| h.value.to_ascii_lowercase());
    let want = real_ip_header(p).to_ascii_lowercase();
    let header_ok = match header.as_deref() {
        Some(h) if h == want => true,
        Some("x-forwarded-for") => real_ip.real_ip_recursive || want == "x-forwarded-for",
        _ => false,
    };
    if missing.is_empty() && header_ok {
        let c = Check::ok(id, Area::Cdn, title).detail(format!(
            "set_real_ip_from covers all {} {p} ranges and real_ip_header is {}{evidence}",
            ranges.len(),
            real_ip
                .real_ip_header
                .as_ref()
                .map(|h| h.value.as_str())
                .unwrap_or("?")
        ));
        if edge_requests > 0 {
            return c.with_status(crate::check::Status::Warn);
        }
        return c;
    }
    let full = missing.len() >= ranges.len();
    let what = if !missing.is_empty() {
        if full && real_ip.set_real_ip_from.is_empty() {
            format!("no set_real_ip_from at all: nginx logs and rate-limits {p}'s edge addresses instead of visitors")
        } else if full {
            format!("set_real_ip_from covers none of {p}'s ranges")
        } else {
            format!(
                "set_real_ip_from misses {} of {p}'s current ranges: {}",
                missing.len(),
                missing
                    .iter()
                    .take(10)
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    } else {
        format!(
            "real_ip_header is {} but {p} puts the visitor in {}",
            real_ip
                .real_ip_header
                .as_ref()
                .map(|h| h.value.as_str())
                .unwrap_or("unset (default X-Real-IP)"),
            real_ip_header(p)
        )
    };
    let fix = if missing.is_empty() || full {
        snippet(catalog, p, None)
    } else {
        snippet(catalog, p, Some(&missing))
    };
    Check::fail(id, Area::Cdn, title)
        .detail(format!("{what}{evidence}"))
        .cause(CauseId::NginxRealIpMissing)
        .fix(format!(
            "add to the http {{ }} block and reload nginx:\n{fix}"
        ))
}

/// `nginx.real-ip.stale`: trusted public ranges that no provider publishes now, when the trusted
/// list is otherwise a provider's (or a range a provider is known to have withdrawn).
pub fn stale_check(
    real_ip: &RealIp,
    catalog: &CdnCatalog,
    providers: &[Provider],
) -> Option<Check> {
    let id = "nginx.real-ip.stale";
    let title = "nginx trusts only ranges the CDNs publish";
    let mut stale = Vec::new();
    for entry in &real_ip.set_real_ip_from {
        let Some(net) = parse_net(&entry.value) else {
            continue;
        };
        if !super::is_public(&net) {
            continue;
        }
        let family = Family::of(&net);
        let s = AddrSet::from_nets(family, [&net]);
        let any = catalog
            .providers
            .keys()
            .fold(AddrSet::empty(family), |a, p| {
                a.union(&catalog.set(*p, family))
            });
        let outside = s.subtract(&any);
        if outside.is_empty() {
            continue;
        }
        let retired = super::RETIRED
            .iter()
            .find(|(_, r)| parse_net(r).is_some_and(|r| r.contains(&net) || net.contains(&r)));
        let owner = retired.map(|(p, _)| *p).or_else(|| {
            providers
                .iter()
                .copied()
                .find(|p| trusted_share(real_ip, catalog, *p) >= 0.5)
        });
        if let Some(p) = owner {
            stale.push(format!(
                "set_real_ip_from {} ({}) is not in {p}'s current list",
                entry.value, entry.origin
            ));
        }
    }
    if real_ip.set_real_ip_from.is_empty() {
        return None;
    }
    Some(if stale.is_empty() {
        Check::ok(id, Area::Cdn, title).detail("every trusted public range is published by a CDN")
    } else {
        Check::warn(id, Area::Cdn, title)
            .detail(format!(
                "anyone in these ranges can set the visitor address nginx logs and rate-limits: {}",
                stale.join("; ")
            ))
            .fix("remove those set_real_ip_from lines and reload nginx (`origin-agent cdn show NAME` prints the current list)")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::check::Status;
    use crate::discover::model::{Origin, Sourced};

    fn real_ip(entries: &[&str], header: Option<&str>) -> RealIp {
        RealIp {
            set_real_ip_from: entries
                .iter()
                .map(|e| Sourced::new(e.to_string(), Origin::Default))
                .collect(),
            real_ip_header: header.map(|h| Sourced::new(h.to_string(), Origin::Default)),
            real_ip_recursive: false,
        }
    }

    #[test]
    fn missing_partial_wrong_header_and_complete() {
        let cat = CdnCatalog::bundled();
        let mut clients = BTreeMap::new();
        clients.insert("162.158.1.2".to_string(), 50u64);
        let none = coverage_check(Provider::Cloudflare, &RealIp::default(), &cat, &clients);
        assert_eq!(none.status, Status::Fail);
        assert_eq!(none.cause, Some(CauseId::NginxRealIpMissing));
        assert!(none.detail.contains("50 of 50 requests"), "{}", none.detail);
        assert!(none
            .fix
            .as_ref()
            .unwrap()
            .contains("set_real_ip_from 173.245.48.0/20;"));
        assert!(none
            .fix
            .as_ref()
            .unwrap()
            .contains("real_ip_header CF-Connecting-IP;"));

        let all: Vec<String> = cat
            .get(Provider::Cloudflare)
            .unwrap()
            .nets()
            .map(|n| n.to_string())
            .collect();
        let mut partial: Vec<&str> = all.iter().map(String::as_str).collect();
        partial.retain(|n| *n != "2c0f:f248::/32" && *n != "131.0.72.0/22");
        let c = coverage_check(
            Provider::Cloudflare,
            &real_ip(&partial, Some("CF-Connecting-IP")),
            &cat,
            &BTreeMap::new(),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("misses 2"), "{}", c.detail);
        assert!(c
            .fix
            .as_ref()
            .unwrap()
            .contains("set_real_ip_from 131.0.72.0/22;"));
        assert!(!c.fix.as_ref().unwrap().contains("173.245.48.0/20"));

        let full: Vec<&str> = all.iter().map(String::as_str).collect();
        let wrong = coverage_check(
            Provider::Cloudflare,
            &real_ip(&full, None),
            &cat,
            &BTreeMap::new(),
        );
        assert_eq!(wrong.status, Status::Fail);
        assert!(wrong.detail.contains("X-Real-IP"));
        let ok = coverage_check(
            Provider::Cloudflare,
            &real_ip(&full, Some("CF-Connecting-IP")),
            &cat,
            &BTreeMap::new(),
        );
        assert_eq!(ok.status, Status::Ok, "{}", ok.detail);

        let mut with_stale = full.clone();
        with_stale.push("199.27.128.0/21");
        with_stale.push("10.0.0.0/8");
        let s = stale_check(
            &real_ip(&with_stale, Some("CF-Connecting-IP")),
            &cat,
            &[Provider::Cloudflare],
        )
        .unwrap();
        assert_eq!(s.status, Status::Warn);
        assert!(s.detail.contains("199.27.128.0/21"));
        assert!(!s.detail.contains("10.0.0.0/8"));
        let mut unknown = full.clone();
        unknown.push("198.51.100.0/24");
        let s = stale_check(&real_ip(&unknown, None), &cat, &[Provider::Cloudflare]).unwrap();
        assert!(s.detail.contains("198.51.100.0/24"));
        assert_eq!(
            stale_check(&real_ip(&full, None), &cat, &[Provider::Cloudflare])
                .unwrap()
                .status,
            Status::Ok
        );
    }
}
