//! `--fail2ban`: the provider's ranges become every running jail's `ignoreip` (at once, with
//! `fail2ban-client set JAIL addignoreip`, and across restarts, with a jail.d drop-in of the
//! agent's own), and the CDN addresses already banned are unbanned. Bans of other addresses are
//! never touched.
//!
//! fail2ban (up to 1.0) has no `ignoreip = file:…`, so the drop-in holds, per jail, the jail's
//! whole effective `ignoreip` (what the server reports, the operator's entries included) plus the
//! ranges; `fail2ban-client -t` checks the configuration with it, and a failing test puts the
//! previous file back. The drop-in is written directly (the host seam has no writes); every
//! `fail2ban-client` call goes through [`Host::run`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::ProviderList;
use crate::addrset::{addr_value, parse_net};
use crate::host::{Command, Host};

/// fail2ban's configuration directory when the request names none.
pub const DEFAULT_CONF: &str = "/etc/fail2ban";
/// The drop-in's name inside `jail.d`.
pub const DROPIN: &str = "origin-agent-cdn.local";

/// What happened in one jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailChange {
    pub jail: String,
    /// Ranges added to the jail's ignore list (or to add, in a dry run).
    pub ignore_added: usize,
    /// CDN addresses unbanned (or to unban).
    pub unbanned: Vec<IpAddr>,
}

/// The fail2ban part of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail2banOutcome {
    pub dropin: PathBuf,
    pub dropin_text: String,
    pub jails: Vec<JailChange>,
    /// The drop-in passed `fail2ban-client -t` and was kept.
    pub written: bool,
    pub error: Option<String>,
    pub notes: Vec<String>,
}

fn client(conf: &Path, args: &[&str]) -> Command {
    let conf = conf.display().to_string();
    let mut all = vec!["-c", conf.as_str()];
    all.extend_from_slice(args);
    Command::new("fail2ban-client", &all).timeout(Duration::from_secs(30))
}

fn ask(host: &dyn Host, conf: &Path, args: &[&str]) -> Result<String, String> {
    match host.run(&client(conf, args)) {
        Ok(o) if o.success() => Ok(o.stdout_text()),
        Ok(o) => Err(format!(
            "fail2ban-client {}: {}",
            args.join(" "),
            o.stderr.trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `Jail list:\tsshd, web` from `fail2ban-client status`.
pub fn parse_jails(text: &str) -> Vec<String> {
    text.lines()
        .find_map(|l| l.split_once("Jail list:").map(|(_, rest)| rest))
        .map(|rest| {
            rest.split([',', ' ', '\t'])
                .map(str::trim)
                .filter(|j| !j.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The entries of `get JAIL ignoreip` (`|- 127.0.0.0/8`, `` `- ::1 ``).
pub fn parse_ignore(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("|-")
                .or_else(|| l.trim().strip_prefix("`-"))
        })
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// The addresses of `get JAIL banip` (space separated).
pub fn parse_banned(text: &str) -> Vec<IpAddr> {
    text.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn in_lists(addr: &IpAddr, lists: &[ProviderList]) -> bool {
    let (family, value) = addr_value(addr);
    lists.iter().any(|(_, v4, v6)| {
        v4.iter().chain(v6.iter()).any(|n| {
            let (lo, hi) = crate::addrset::net_bounds(n);
            crate::addrset::Family::of(n) == family && lo <= value && value <= hi
        })
    })
}

fn dropin_text(per_jail: &[(String, Vec<String>)]) -> String {
    let mut s = String::from(
        "# Written by origin-agent (`origin-agent whitelist --fail2ban`): each jail's ignoreip\n# with the CDN ranges added. Regenerated on every run; do not edit.\n",
    );
    for (jail, entries) in per_jail {
        s.push_str(&format!("\n[{jail}]\nignoreip = {}\n", entries.join(" ")));
    }
    s
}

/// Plans (dry run) or applies the fail2ban part.
pub fn run(host: &dyn Host, lists: &[ProviderList], conf: &Path, apply: bool) -> Fail2banOutcome {
    let dropin = conf.join("jail.d").join(DROPIN);
    let mut out = Fail2banOutcome {
        dropin: dropin.clone(),
        dropin_text: String::new(),
        jails: Vec::new(),
        written: false,
        error: None,
        notes: Vec::new(),
    };
    let jails = match ask(host, conf, &["status"]) {
        Ok(text) => parse_jails(&text),
        Err(e) => {
            out.error = Some(format!("fail2ban is not answering: {e}"));
            return out;
        }
    };
    let nets: Vec<&IpNet> = lists
        .iter()
        .flat_map(|(_, v4, v6)| v4.iter().chain(v6.iter()))
        .collect();
    let mut per_jail = Vec::new();
    for jail in &jails {
        let mut change = JailChange {
            jail: jail.clone(),
            ignore_added: 0,
            unbanned: Vec::new(),
        };
        let current = match ask(host, conf, &["get", jail, "ignoreip"]) {
            Ok(t) => parse_ignore(&t),
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        let have: BTreeSet<IpNet> = current.iter().filter_map(|e| parse_net(e)).collect();
        let mut entries = current.clone();
        let mut batch = String::new();
        for net in &nets {
            if have.contains(net) {
                continue;
            }
            change.ignore_added += 1;
            entries.push(net.to_string());
            batch.push_str(&format!("set {jail} addignoreip {net}\n"));
        }
        if apply && !batch.is_empty() {
            // One client for all additions (thousands of ranges for some CDNs), then a check
            // that every one of them is in the jail's list.
            batch.push_str("exit\n");
            let _ = host.run(
                &client(conf, &["-i"])
                    .timeout(Duration::from_secs(120))
                    .stdin(batch.into_bytes()),
            );
            let now: BTreeSet<IpNet> = match ask(host, conf, &["get", jail, "ignoreip"]) {
                Ok(t) => parse_ignore(&t)
                    .iter()
                    .filter_map(|e| parse_net(e))
                    .collect(),
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            };
            let missing = nets.iter().filter(|n| !now.contains(*n)).count();
            if missing > 0 {
                out.error = Some(format!(
                    "jail {jail}: {missing} ranges did not make it into ignoreip"
                ));
                return out;
            }
        }
        let banned = ask(host, conf, &["get", jail, "banip"])
            .map(|t| parse_banned(&t))
            .unwrap_or_default();
        change.unbanned = banned.into_iter().filter(|a| in_lists(a, lists)).collect();
        if apply && !change.unbanned.is_empty() {
            let ips: Vec<String> = change.unbanned.iter().map(IpAddr::to_string).collect();
            let mut args = vec!["set", jail.as_str(), "unbanip"];
            args.extend(ips.iter().map(String::as_str));
            if let Err(e) = ask(host, conf, &args) {
                out.error = Some(e);
                return out;
            }
        }
        per_jail.push((jail.clone(), entries));
        out.jails.push(change);
    }
    out.dropin_text = dropin_text(&per_jail);
    if !apply {
        return out;
    }
    let previous = host.read(&dropin).ok();
    if previous.as_deref() == Some(out.dropin_text.as_bytes()) {
        out.written = true;
        return out;
    }
    if let Err(e) = host.write_atomic(&dropin, out.dropin_text.as_bytes()) {
        out.error = Some(e.to_string());
        return out;
    }
    match ask(host, conf, &["-t"]) {
        Ok(_) => out.written = true,
        Err(e) => {
            let _ = match &previous {
                Some(old) => host.write_atomic(&dropin, old),
                None => host.remove_file(&dropin),
            };
            out.error = Some(format!(
                "the configuration test failed with the drop-in, which was put back (the running jails keep the new ignoreip until fail2ban restarts): {e}"
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
    fn parses_the_client_outputs() {
        let status = "Status\n|- Number of jail:\t2\n`- Jail list:\tsshd, web\n";
        assert_eq!(parse_jails(status), vec!["sshd", "web"]);
        let ignore = "These IP addresses/networks are ignored:\n|- 127.0.0.0/8\n`- 10.1.2.3\n";
        assert_eq!(parse_ignore(ignore), vec!["127.0.0.0/8", "10.1.2.3"]);
        assert_eq!(parse_banned("173.245.48.10 198.51.100.7\n").len(), 2);
        assert!(parse_banned("").is_empty());
    }

    #[test]
    fn only_addresses_inside_the_ranges_count_as_cdn() {
        let lists = vec![(
            Provider::Cloudflare,
            vec!["173.245.48.0/20".parse().unwrap()],
            vec!["2400:cb00::/32".parse().unwrap()],
        )];
        assert!(in_lists(&"173.245.48.10".parse().unwrap(), &lists));
        assert!(in_lists(&"2400:cb00::1".parse().unwrap(), &lists));
        assert!(!in_lists(&"198.51.100.7".parse().unwrap(), &lists));
        let text = dropin_text(&[(
            "web".into(),
            vec!["127.0.0.0/8".into(), "173.245.48.0/20".into()],
        )]);
        assert!(text.contains("[web]\nignoreip = 127.0.0.0/8 173.245.48.0/20\n"));
    }
}
