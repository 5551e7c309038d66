//! Firewall managers that own the rules and rebuild them at every start: a raw change under them
//! is wiped at their next reload, or fights them. Recognised from their configuration and the
//! switch that enables them; for those without a back end here (FireHOL, Shorewall, APF) the
//! whitelist refuses to touch the raw rules and prints the exact lines to add to the manager's
//! own configuration. CSF and firewalld have back ends ([`super::csf`], [`super::firewalld`]).

use std::path::Path;

use super::ProviderList;
use crate::addrset::Family;
use crate::host::{Host, HostExt};

/// A manager found active on the host, with the evidence and what to add to its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    pub name: &'static str,
    /// Why it is taken to own the rules (the files that say so).
    pub evidence: String,
    /// The file to edit.
    pub file: &'static str,
}

fn setting(host: &dyn Host, path: &str, key: &str) -> Option<String> {
    let text = host.read_text(Path::new(path)).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

fn exists(host: &dyn Host, path: &str) -> bool {
    host.metadata(Path::new(path)).is_ok()
}

fn enabled_unit(host: &dyn Host, unit: &str) -> Option<String> {
    let p = format!("/etc/systemd/system/multi-user.target.wants/{unit}");
    exists(host, &p).then_some(p)
}

/// The manager without a back end that owns the rules, if any.
pub fn detect(host: &dyn Host) -> Option<Manager> {
    // FireHOL: where Debian's /etc/default/firehol exists, its START_FIREHOL decides (the unit is
    // enabled on install, and refuses to start with NO); elsewhere, its unit enabled.
    if exists(host, "/etc/firehol/firehol.conf") {
        let on = match setting(host, "/etc/default/firehol", "START_FIREHOL") {
            Some(v) => v
                .eq_ignore_ascii_case("yes")
                .then(|| "/etc/default/firehol: START_FIREHOL=YES".to_string()),
            None if !exists(host, "/etc/default/firehol") => {
                enabled_unit(host, "firehol.service").map(|p| format!("{p} is enabled"))
            }
            None => None,
        };
        if let Some(evidence) = on {
            return Some(Manager {
                name: "FireHOL",
                evidence: format!("/etc/firehol/firehol.conf exists and {evidence}"),
                file: "/etc/firehol/firehol.conf",
            });
        }
    }
    // Shorewall: Debian's /etc/default/shorewall `startup=1` (or, without that file, the unit
    // enabled), and STARTUP_ENABLED not No in shorewall.conf.
    if exists(host, "/etc/shorewall/shorewall.conf") {
        let allowed = setting(host, "/etc/shorewall/shorewall.conf", "STARTUP_ENABLED")
            .is_none_or(|v| v.eq_ignore_ascii_case("yes"));
        let on = match setting(host, "/etc/default/shorewall", "startup") {
            Some(v) => (v == "1").then(|| "/etc/default/shorewall: startup=1".to_string()),
            None if !exists(host, "/etc/default/shorewall") => {
                enabled_unit(host, "shorewall.service").map(|p| format!("{p} is enabled"))
            }
            None => None,
        };
        if let (true, Some(evidence)) = (allowed, on) {
            return Some(Manager {
                name: "Shorewall",
                evidence: format!("/etc/shorewall/shorewall.conf exists and {evidence}"),
                file: "/etc/shorewall/rules",
            });
        }
    }
    // APF: DEVEL_MODE="0" in conf.apf (1 flushes the rules every 5 minutes: still APF's).
    if exists(host, "/etc/apf/conf.apf") {
        return Some(Manager {
            name: "APF",
            evidence: "/etc/apf/conf.apf exists (APF rebuilds the rules at `apf -r`)".into(),
            file: "/etc/apf/allow_hosts.rules",
        });
    }
    None
}

fn nets(lists: &[ProviderList], family: Family) -> Vec<String> {
    lists
        .iter()
        .flat_map(|(_, v4, v6)| if family == Family::V4 { v4 } else { v6 }.iter())
        .map(ToString::to_string)
        .collect()
}

/// The exact lines to add to the manager's configuration for `lists` on `ports`.
pub fn lines(m: &Manager, lists: &[ProviderList], ports: &[u16]) -> Vec<String> {
    let (v4, v6) = (nets(lists, Family::V4), nets(lists, Family::V6));
    let providers: Vec<String> = lists.iter().map(|(p, _, _)| p.to_string()).collect();
    let tag = format!("origin-agent:{}", providers.join(","));
    match m.name {
        "FireHOL" => {
            let ports: Vec<String> = ports.iter().map(|p| format!("tcp/{p}")).collect();
            let mut out = vec![format!(
                "# {tag}: inside the interface block that faces the internet"
            )];
            for (fam, nets) in [("ipv4", &v4), ("ipv6", &v6)] {
                if !nets.is_empty() {
                    out.push(format!(
                        "{fam} server custom origin-agent-cdn \"{}\" default accept src \"{}\"",
                        ports.join(" "),
                        nets.join(" ")
                    ));
                }
            }
            out.push("then: firehol try (or firehol restart)".into());
            out
        }
        "Shorewall" => {
            let ports = super::ipt::ports_text(ports);
            let mut out = vec![format!("# {tag}")];
            out.extend(
                v4.iter()
                    .map(|n| format!("ACCEPT\tnet:{n}\t$FW\ttcp\t{ports}")),
            );
            if !v6.is_empty() {
                out.push("# /etc/shorewall6/rules:".into());
                out.extend(
                    v6.iter()
                        .map(|n| format!("ACCEPT\tnet:[{n}]\t$FW\ttcp\t{ports}")),
                );
            }
            out.push("then: shorewall check && shorewall reload (and shorewall6)".into());
            out
        }
        _ => {
            let mut out = vec![format!("# {tag}")];
            for n in v4.iter().chain(v6.iter()) {
                for p in ports {
                    out.push(format!("tcp:in:d={p}:s={n}"));
                }
            }
            out.push("then: apf -r".into());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cdn::Provider;
    use crate::host::fixture::FixtureHost;

    #[test]
    fn a_manager_counts_only_when_enabled_and_its_lines_name_every_range() {
        // Debian's defaults: the unit enabled at install, START_FIREHOL=NO (it does not run).
        let off = FixtureHost::new()
            .file("/etc/firehol/firehol.conf", "version 6\n")
            .file("/etc/default/firehol", "START_FIREHOL=NO\n")
            .file(
                "/etc/systemd/system/multi-user.target.wants/firehol.service",
                "",
            );
        assert_eq!(detect(&off), None);
        let on = FixtureHost::new()
            .file("/etc/firehol/firehol.conf", "version 6\n")
            .file("/etc/default/firehol", "START_FIREHOL=YES\n");
        let m = detect(&on).unwrap();
        assert_eq!(m.name, "FireHOL");
        let lists = vec![(
            Provider::Cloudflare,
            vec!["173.245.48.0/20".parse().unwrap()],
            vec!["2400:cb00::/32".parse().unwrap()],
        )];
        let l = lines(&m, &lists, &[80, 443]);
        assert!(l.contains(&"ipv4 server custom origin-agent-cdn \"tcp/80 tcp/443\" default accept src \"173.245.48.0/20\"".to_string()), "{l:?}");
        let sw = FixtureHost::new()
            .file("/etc/shorewall/shorewall.conf", "STARTUP_ENABLED=Yes\n")
            .file("/etc/default/shorewall", "startup=1\n");
        let l = lines(&detect(&sw).unwrap(), &lists, &[80, 443]);
        assert!(l.contains(&"ACCEPT\tnet:173.245.48.0/20\t$FW\ttcp\t80,443".to_string()));
        let apf = FixtureHost::new().file("/etc/apf/conf.apf", "DEVEL_MODE=\"0\"\n");
        let l = lines(&detect(&apf).unwrap(), &lists, &[80]);
        assert!(l.contains(&"tcp:in:d=80:s=2400:cb00::/32".to_string()));
    }
}
