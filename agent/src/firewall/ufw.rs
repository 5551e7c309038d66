//! ufw: its rule files (`/etc/ufw/user.rules`, `user6.rules`), whose `### tuple ###` comments map
//! the iptables rules in `ufw-user-input` back to the ufw command that made them (so the fix is
//! `ufw delete …`, not a raw iptables edit ufw would undo), and the rules an *inactive* ufw would
//! apply once enabled.

use std::path::Path;

use crate::host::{Host, HostExt};

use super::eval::{Hook, RuleRef, Ruleset, Verdict};
use super::ipset::IpSets;
use super::iptables;
use crate::addrset::Family;

/// One `### tuple ### ACTION PROTO DPORT DST SPORT SRC DIRECTION` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub action: String,
    pub proto: String,
    pub dport: String,
    pub dst: String,
    pub sport: String,
    pub src: String,
    pub direction: String,
}

impl Tuple {
    fn parse(line: &str) -> Option<Tuple> {
        let rest = line.trim().strip_prefix("### tuple ###")?;
        let w: Vec<&str> = rest.split_whitespace().collect();
        if w.len() < 7 {
            return None;
        }
        Some(Tuple {
            action: w[0]
                .trim_end_matches("_log-all")
                .trim_end_matches("_log")
                .to_string(),
            proto: w[1].to_string(),
            dport: w[2].to_string(),
            dst: w[3].to_string(),
            sport: w[4].to_string(),
            src: w[5].to_string(),
            direction: w[6].to_string(),
        })
    }

    fn any(addr: &str) -> bool {
        addr == "0.0.0.0/0" || addr == "::/0" || addr == "any"
    }

    /// The ufw command that made this rule (`ufw deny proto tcp from X to any port 80`).
    pub fn command(&self) -> String {
        let mut s = format!("ufw {}", self.action);
        if self.direction == "out" {
            s.push_str(" out");
        }
        if self.proto != "any" {
            s.push_str(&format!(" proto {}", self.proto));
        }
        let from = if Self::any(&self.src) {
            "any"
        } else {
            &self.src
        };
        let to = if Self::any(&self.dst) {
            "any"
        } else {
            &self.dst
        };
        s.push_str(&format!(" from {from}"));
        if self.sport != "any" {
            s.push_str(&format!(" port {}", self.sport));
        }
        s.push_str(&format!(" to {to}"));
        if self.dport != "any" {
            s.push_str(&format!(" port {}", self.dport));
        }
        s
    }

    fn verdict(&self) -> Option<Verdict> {
        match self.action.as_str() {
            "allow" => Some(Verdict::Accept),
            "deny" => Some(Verdict::Drop),
            "reject" => Some(Verdict::Reject),
            _ => None,
        }
    }
}

/// ufw's files as read from the host.
#[derive(Debug, Clone)]
pub struct UfwFiles {
    pub user_rules: Option<String>,
    pub user6_rules: Option<String>,
    /// `ENABLED=` of /etc/ufw/ufw.conf.
    pub enabled: Option<bool>,
    /// `DEFAULT_INPUT_POLICY` of /etc/default/ufw.
    pub input_policy: Verdict,
}

impl UfwFiles {
    pub fn read(host: &dyn Host) -> UfwFiles {
        let text = |p: &str| host.read_text(Path::new(p)).ok();
        let enabled = text("/etc/ufw/ufw.conf").and_then(|t| {
            t.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("ENABLED=")
                    .map(|v| v.trim_matches('"').eq_ignore_ascii_case("yes"))
            })
        });
        let input_policy = text("/etc/default/ufw")
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.trim().strip_prefix("DEFAULT_INPUT_POLICY=").map(|v| {
                        match v.trim_matches('"') {
                            "ACCEPT" => Verdict::Accept,
                            "REJECT" => Verdict::Reject,
                            _ => Verdict::Drop,
                        }
                    })
                })
            })
            .unwrap_or(Verdict::Drop);
        UfwFiles {
            user_rules: text("/etc/ufw/user.rules"),
            user6_rules: text("/etc/ufw/user6.rules"),
            enabled,
            input_policy,
        }
    }

    /// The ufw command behind a rule of `ufw-user-input` / `ufw6-user-input`, matched on its
    /// meaning (source, destination port, verdict), since iptables-save reorders the options.
    pub fn command_for(&self, rule: &RuleRef, verdict: Verdict) -> Option<String> {
        let text = if rule.chain.starts_with("ufw6-") {
            self.user6_rules.as_deref()?
        } else if rule.chain.starts_with("ufw-") {
            self.user_rules.as_deref()?
        } else {
            return None;
        };
        let words = iptables::tokenize(&rule.text);
        let opt = |names: &[&str]| {
            words
                .iter()
                .position(|w| names.contains(&w.as_str()))
                .and_then(|i| words.get(i + 1).cloned())
        };
        let src = opt(&["-s", "--source"]).map(|s| {
            s.trim_end_matches("/32")
                .trim_end_matches("/128")
                .to_string()
        });
        let dport = opt(&["--dport", "--dports"]);
        let mut pending: Option<Tuple> = None;
        for line in text.lines() {
            if let Some(t) = Tuple::parse(line) {
                pending = Some(t);
                continue;
            }
            let Some(t) = &pending else { continue };
            if !line.starts_with("-A ") {
                continue;
            }
            let tsrc = if Tuple::any(&t.src) {
                None
            } else {
                Some(
                    t.src
                        .trim_end_matches("/32")
                        .trim_end_matches("/128")
                        .to_string(),
                )
            };
            let tport = if t.dport == "any" {
                None
            } else {
                Some(t.dport.clone())
            };
            if tsrc == src && tport == dport && t.verdict() == Some(verdict) {
                return Some(t.command());
            }
        }
        None
    }

    /// The rule sets an inactive ufw would install (its user chains under its default policy),
    /// or `None` when ufw is active or absent.
    pub fn inactive_rulesets(&self, ipsets: &IpSets) -> Option<(Ruleset, Ruleset)> {
        if self.enabled != Some(false) {
            return None;
        }
        let build = |text: Option<&str>, family: Family, chain: &str| {
            let mut rs = Ruleset::new(family);
            if let Some(text) = text {
                iptables::parse_into(&mut rs, text, "ufw (inactive)", ipsets);
                if let Some(ci) = rs.chains.iter().position(|c| c.name == chain) {
                    if let Some(c) = rs.chains.get_mut(ci) {
                        c.policy = Some(self.input_policy);
                    }
                    rs.stages.push((Hook::Input, 0, ci));
                }
            }
            rs
        };
        Some((
            build(self.user_rules.as_deref(), Family::V4, "ufw-user-input"),
            build(self.user6_rules.as_deref(), Family::V6, "ufw6-user-input"),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn captured_tuples_map_rules_back_to_ufw_commands() {
        let files = UfwFiles {
            user_rules: Some(
                include_str!("../../../tests/fixtures/firewall/ufw-f2b-docker/user.rules").into(),
            ),
            user6_rules: Some(
                include_str!("../../../tests/fixtures/firewall/ufw-f2b-docker/user6.rules").into(),
            ),
            enabled: Some(true),
            input_policy: Verdict::Drop,
        };
        let rule = |chain: &str, text: &str| RuleRef {
            source: "ip6tables".into(),
            table: "filter".into(),
            chain: chain.into(),
            position: 4,
            text: text.into(),
        };
        // iptables-save prints the options in another order than user6.rules holds them.
        let r = rule(
            "ufw6-user-input",
            "-A ufw6-user-input -s 2400:cb00:2::/48 -p tcp -m tcp --dport 443 -j REJECT --reject-with tcp-reset",
        );
        assert_eq!(
            files.command_for(&r, Verdict::Reject).unwrap(),
            "ufw reject proto tcp from 2400:cb00:2::/48 to any port 443"
        );
        let r = rule(
            "ufw-user-input",
            "-A ufw-user-input -p tcp -m tcp --dport 80 -j ACCEPT",
        );
        assert_eq!(
            files.command_for(&r, Verdict::Accept).unwrap(),
            "ufw allow proto tcp from any to any port 80"
        );
        assert!(files.command_for(&r, Verdict::Drop).is_none());
        assert!(files.inactive_rulesets(&IpSets::default()).is_none());
    }
}
