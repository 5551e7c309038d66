//! The ufw back end (`--backend ufw`): the allows go through ufw itself, so they live in ufw's
//! own files (`/etc/ufw/user.rules`, `user6.rules`) and survive reboots and `ufw reload`. Each
//! rule is `ufw prepend allow from NET to any port 80,443 proto tcp comment
//! 'origin-agent:PROVIDER'`, and the comment is how the agent recognises its own rules in
//! `ufw show added`.
//!
//! ufw has no transaction: the change is made one ufw command at a time, and a failing command
//! makes the agent undo the commands that already ran, in reverse. The default (`--backend auto`)
//! uses the iptables chain instead, which is atomic and also wins over ufw's chains. The agent
//! never enables, disables or resets ufw.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::backend::{
    diff_lines, lines, restore_plan, ApplyError, FirewallBackend, NotPersisted, Restored,
};
use super::saves::{run_ok, Saves};
use super::{ipt, Backend, Change, FamilyPlan, ProviderList, WhitelistError, WhitelistRequest};
use crate::addrset::{parse_net, Family};
use crate::cdn::Provider;
use crate::firewall::iptables::tokenize;
use crate::host::{Command, Host};

/// The comment prefix that marks a rule as the agent's.
pub const TAG: &str = "origin-agent";

/// One agent-made ufw rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UfwRule {
    pub provider: Provider,
    pub net: IpNet,
    /// `80,443`
    pub ports: String,
}

impl UfwRule {
    /// The ufw arguments after the verb (`allow from … comment …`).
    fn spec(&self, with_comment: bool) -> Vec<String> {
        let mut a: Vec<String> = [
            "allow",
            "from",
            &self.net.to_string(),
            "to",
            "any",
            "port",
            &self.ports,
            "proto",
            "tcp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if with_comment {
            a.push("comment".into());
            a.push(format!("{TAG}:{}", self.provider));
        }
        a
    }

    /// `ufw prepend allow …`
    pub fn add_args(&self) -> Vec<String> {
        let mut a = vec!["prepend".to_string()];
        a.extend(self.spec(true));
        a
    }

    /// `ufw delete allow …`
    pub fn delete_args(&self) -> Vec<String> {
        let mut a = vec!["delete".to_string()];
        a.extend(self.spec(false));
        a
    }
}

/// The agent's rules in `ufw show added`, in ufw's order.
pub fn parse_added(text: &str) -> Vec<UfwRule> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words = tokenize(&line.replace('\'', "\""));
        if words.first().map(String::as_str) != Some("ufw") {
            continue;
        }
        let after = |name: &str| {
            words
                .iter()
                .position(|w| w == name)
                .and_then(|i| words.get(i + 1))
                .cloned()
        };
        let Some(provider) = after("comment")
            .as_deref()
            .and_then(|c| c.strip_prefix(TAG))
            .and_then(|c| c.strip_prefix(':'))
            .and_then(Provider::parse)
        else {
            continue;
        };
        if words.get(1).map(String::as_str) != Some("allow") {
            continue;
        }
        let (Some(net), Some(ports)) =
            (after("from").as_deref().and_then(parse_net), after("port"))
        else {
            continue;
        };
        out.push(UfwRule {
            provider,
            net,
            ports,
        });
    }
    out
}

/// The text of one ufw command, for the plan.
pub fn command_text(args: &[String]) -> String {
    let mut s = String::from("ufw");
    for a in args {
        s.push(' ');
        if a.contains(' ') || a.contains(':') {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(a);
        }
    }
    s
}

/// A family's plan, the ufw commands that carry it out, and the commands that undo them.
pub type UfwPlan = (FamilyPlan, Vec<Vec<String>>, Vec<Vec<String>>);

/// Plans one family: the rules to delete (of requested providers, no longer published or with
/// other ports) and to prepend.
pub fn plan(
    family: Family,
    current: &[UfwRule],
    wanted: &[(Provider, Vec<IpNet>)],
    ports: &str,
) -> UfwPlan {
    let requested: BTreeSet<Provider> = wanted.iter().map(|(p, _)| *p).collect();
    let want: BTreeSet<(Provider, IpNet)> = wanted
        .iter()
        .flat_map(|(p, nets)| nets.iter().map(move |n| (*p, n.trunc())))
        .collect();
    let mut kept = BTreeSet::new();
    let mut remove = Vec::new();
    let mut undo = Vec::new();
    let mut ops = Vec::new();
    let mut unchanged = 0;
    for r in current.iter().filter(|r| Family::of(&r.net) == family) {
        if !requested.contains(&r.provider) {
            unchanged += 1;
            continue;
        }
        let key = (r.provider, r.net);
        if want.contains(&key) && r.ports == ports && !kept.contains(&key) {
            kept.insert(key);
            unchanged += 1;
        } else {
            remove.push(Change {
                provider: r.provider,
                net: r.net,
            });
            ops.push(r.delete_args());
            undo.push(r.add_args());
        }
    }
    let mut add = Vec::new();
    for (p, n) in want.iter().filter(|k| !kept.contains(k)) {
        let r = UfwRule {
            provider: *p,
            net: *n,
            ports: ports.to_string(),
        };
        ops.push(r.add_args());
        undo.push(r.delete_args());
        add.push(Change {
            provider: *p,
            net: *n,
        });
    }
    let script: String = ops
        .iter()
        .map(|a| format!("{}\n", command_text(a)))
        .collect();
    (
        FamilyPlan {
            family,
            add,
            remove,
            unchanged,
            structure: Vec::new(),
            script,
            pre_script: String::new(),
        },
        ops,
        undo,
    )
}

/// The commands that turn `current` back into `saved` (the agent's rules only).
pub fn restore_ops(current: &[UfwRule], saved: &[UfwRule]) -> Vec<Vec<String>> {
    let mut ops = Vec::new();
    for r in current.iter().filter(|r| !saved.contains(r)) {
        ops.push(r.delete_args());
    }
    for r in saved.iter().rev().filter(|r| !current.contains(r)) {
        ops.push(r.add_args());
    }
    ops
}

/// `iptables-save` text without the iptables rules ufw made for the agent's ufw rules (matched by
/// source, ports and ACCEPT in `ufw-user-input` / `ufw6-user-input`).
pub fn without_own(save: &str, own: &[UfwRule]) -> String {
    let mut out = String::new();
    for line in save.lines() {
        let words = tokenize(line.trim());
        let is_user = matches!(
            words.get(1).map(String::as_str),
            Some("ufw-user-input" | "ufw6-user-input")
        ) && words.first().map(String::as_str) == Some("-A");
        if is_user {
            let get = |name: &str| {
                words
                    .iter()
                    .position(|w| w == name)
                    .and_then(|i| words.get(i + 1))
                    .map(String::as_str)
            };
            let src = get("-s").and_then(parse_net);
            let ports = get("--dports").or_else(|| get("--dport"));
            let ours = own
                .iter()
                .any(|r| Some(r.net) == src && Some(r.ports.as_str()) == ports)
                && get("-j") == Some("ACCEPT");
            if ours {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The ufw back end: allows made through ufw itself, one command at a time, tagged with a
/// comment; a failing command undoes the ones already run, in reverse.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ufw;

fn ufw_cmd(args: &[String]) -> Command {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Command::new("ufw", &args)
}

impl Ufw {
    /// The plans with their commands and undo commands.
    fn plans(saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Vec<UfwPlan> {
        let current = saves.ufw_rules();
        let ports = ipt::ports_text(ports);
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| *f == Family::V4 || saves.ufw_v6)
            .map(|family| plan(family, &current, &ipt::wanted_of(lists, family), &ports))
            .collect()
    }
}

impl FirewallBackend for Ufw {
    fn kind(&self) -> Backend {
        Backend::Ufw
    }

    fn describe(&self) -> String {
        "back end: ufw (rules through ufw itself, tagged `origin-agent:PROVIDER`; ufw has no transaction: one command at a time, undone in reverse on failure)".to_string()
    }

    fn read(&self, host: &dyn Host) -> Result<Saves, WhitelistError> {
        Saves::read(host)?.with_ufw(host)
    }

    fn notes(&self, saves: &Saves) -> Vec<String> {
        if saves.ufw_v6 {
            Vec::new()
        } else {
            vec![
                "IPv6 left out: ufw does not manage IPv6 here (IPV6=no in /etc/default/ufw)".into(),
            ]
        }
    }

    fn plan(&self, saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Vec<FamilyPlan> {
        Self::plans(saves, lists, ports)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect()
    }

    fn commands(&self, plans: &[FamilyPlan]) -> Vec<String> {
        plans
            .iter()
            .flat_map(|p| p.script.lines().map(str::to_string))
            .collect()
    }

    fn apply(
        &self,
        host: &dyn Host,
        _plans: &[FamilyPlan],
        before: &Saves,
        lists: &[ProviderList],
        ports: &[u16],
    ) -> Result<(), ApplyError> {
        let mut undo: Vec<Vec<String>> = Vec::new();
        for (_, ops, undos) in Self::plans(before, lists, ports) {
            for (op, back) in ops.iter().zip(undos) {
                if let Err(source) = run_ok(host, &ufw_cmd(op)) {
                    let undone = undo
                        .iter()
                        .rev()
                        .filter(|b| run_ok(host, &ufw_cmd(b)).is_ok())
                        .count();
                    return Err(ApplyError::UndoneInPlace {
                        source,
                        tool: "ufw",
                        run: undo.len(),
                        undone,
                    });
                }
                undo.push(back);
            }
        }
        Ok(())
    }

    fn restore_to(&self, host: &dyn Host, before: &Saves) -> Restored {
        let current = match run_ok(host, &Command::new("ufw", &["show", "added"])) {
            Ok(t) => parse_added(&t),
            Err(e) => return Restored::failed("ufw NOT restored", "ufw (cannot read)", e),
        };
        let ops = restore_ops(&current, &before.ufw_rules());
        if ops.is_empty() {
            return Restored::new("nothing had changed");
        }
        for op in &ops {
            if let Err(e) = run_ok(host, &ufw_cmd(op)) {
                return Restored::failed("ufw NOT fully restored", "ufw", e);
            }
        }
        Restored::new(format!("ufw restored ({} commands)", ops.len()))
    }

    fn rollback_plans(&self, current: &Saves, before: &Saves) -> Vec<FamilyPlan> {
        let ops = restore_ops(&current.ufw_rules(), &before.ufw_rules());
        vec![restore_plan(
            Family::V4,
            "restore the agent's ufw rules as saved",
            ops.iter()
                .map(|o| format!("{}\n", command_text(o)))
                .collect(),
        )]
    }

    fn other_changes(&self, before: &Saves, after: &Saves) -> Vec<String> {
        let mut out = Vec::new();
        let mut own = before.ufw_rules();
        own.extend(after.ufw_rules());
        for family in [Family::V4, Family::V6] {
            if let (Some(b), Some(a)) = (before.get(family), after.get(family)) {
                diff_lines(
                    &mut out,
                    family.label(),
                    lines(&without_own(&ipt::without_own(b), &own)),
                    lines(&without_own(&ipt::without_own(a), &own)),
                );
            }
        }
        let strip = |t: &Option<String>| -> Vec<String> {
            t.as_deref()
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.contains("'origin-agent:"))
                .map(str::to_string)
                .collect()
        };
        diff_lines(&mut out, "ufw", strip(&before.ufw), strip(&after.ufw));
        out
    }

    fn persist(&self, _host: &dyn Host, _req: &WhitelistRequest) -> Result<String, NotPersisted> {
        Ok("ufw's own files (/etc/ufw/user.rules, /etc/ufw/user6.rules): ufw keeps its rules across reboots".to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ADDED: &str = "Added user rules (see 'ufw status' for running firewall):
ufw allow from 103.21.244.0/22 to any port 80,443 proto tcp comment 'origin-agent:cloudflare'
ufw allow 22/tcp
ufw allow from 199.27.128.0/21 to any port 80,443 proto tcp comment 'origin-agent:cloudflare'
ufw allow from 2400:cb00::/32 to any port 80,443 proto tcp comment 'origin-agent:cloudflare'
ufw allow from 10.0.0.0/8 to any port 80,443 proto tcp comment 'mine'
";

    #[test]
    fn reads_only_the_agents_rules() {
        let rules = parse_added(ADDED);
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].net.to_string(), "103.21.244.0/22");
        assert_eq!(rules[0].ports, "80,443");
    }

    #[test]
    fn plans_deletes_and_prepends_per_family() {
        let cur = parse_added(ADDED);
        let wanted = vec![(
            Provider::Cloudflare,
            vec![
                "103.21.244.0/22".parse().unwrap(),
                "173.245.48.0/20".parse().unwrap(),
            ],
        )];
        let (p, ops, undo) = plan(Family::V4, &cur, &wanted, "80,443");
        assert_eq!(p.remove[0].net.to_string(), "199.27.128.0/21");
        assert_eq!(p.add[0].net.to_string(), "173.245.48.0/20");
        assert_eq!(ops.len(), 2);
        assert_eq!(undo.len(), 2);
        assert!(p
            .script
            .contains("ufw delete allow from 199.27.128.0/21 to any port 80,443 proto tcp\n"));
        assert!(p.script.contains("ufw prepend allow from 173.245.48.0/20 to any port 80,443 proto tcp comment 'origin-agent:cloudflare'\n"));
        assert!(!p.script.contains("10.0.0.0"));
        let (p, _, _) = plan(
            Family::V4,
            &parse_added(&ADDED.replace("199.27.128.0/21", "173.245.48.0/20")),
            &wanted,
            "80,443",
        );
        assert!(p.is_empty(), "{}", p.script);
    }

    #[test]
    fn restore_ops_and_comparison() {
        let saved = parse_added(ADDED);
        let current = vec![saved[0].clone()];
        let ops = restore_ops(&current, &saved);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0][0], "prepend");
        let save = "-A ufw-user-input -p tcp -m multiport --dports 80,443 -s 103.21.244.0/22 -j ACCEPT\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n";
        assert_eq!(
            without_own(save, &saved),
            "-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n"
        );
    }
}
