//! `iptables-save` / `ip6tables-save` text (nf_tables and legacy back ends, which print the same
//! format) into the evaluator's [`Ruleset`]. ufw, CSF, fail2ban and Docker all live in these
//! chains, so this is also where their rules are read.

use std::collections::HashMap;

use super::eval::{Action, Chain, Cond, Hook, PortMatch, Rule, RuleRef, Ruleset, Verdict};
use super::ipset::IpSets;
use crate::addrset::{parse_net, AddrSet, Family};

/// Splits a rule line into words, honouring double quotes with backslash escapes.
pub fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// Where a built-in chain sits on the input path (None: not on it).
fn stage_of(table: &str, chain: &str) -> Option<(Hook, i64)> {
    match (table, chain) {
        ("raw", "PREROUTING") => Some((Hook::Prerouting, -300)),
        ("mangle", "PREROUTING") => Some((Hook::Prerouting, -150)),
        ("mangle", "INPUT") => Some((Hook::Input, -150)),
        ("filter", "INPUT") => Some((Hook::Input, 0)),
        ("security", "INPUT") => Some((Hook::Input, 50)),
        ("mangle", "FORWARD") => Some((Hook::Forward, -150)),
        ("filter", "FORWARD") => Some((Hook::Forward, 0)),
        ("security", "FORWARD") => Some((Hook::Forward, 50)),
        _ => None,
    }
}

fn policy_of(word: &str) -> Option<Verdict> {
    match word {
        "ACCEPT" => Some(Verdict::Accept),
        "DROP" => Some(Verdict::Drop),
        _ => None,
    }
}

/// The interface a CDN's connection arrives on is the public one: `lo` and container/VPN bridges
/// are not it; any other name (eth0, ens3, `+`) is assumed to be.
pub fn iface_cond(name: &str, negated: bool) -> Cond {
    let internal = [
        "lo", "docker", "br-", "veth", "virbr", "cni", "flannel", "cali", "kube", "wg", "tun",
        "tap", "lxc", "lxd",
    ];
    let is_internal = internal.iter().any(|p| {
        if *p == "lo" {
            name == "lo"
        } else {
            name.starts_with(p)
        }
    });
    if is_internal == negated {
        Cond::Yes
    } else {
        Cond::No
    }
}

/// A destination-address match: the connection goes to one of this host's public addresses.
/// Loopback, multicast and broadcast destinations never match; other addresses are assumed to be
/// the host's own.
pub fn dest_cond(nets: &[ipnet::IpNet], negated: bool) -> Cond {
    let special = |n: &ipnet::IpNet| {
        let a = n.network();
        a.is_loopback() || a.is_multicast() || a.to_string() == "255.255.255.255"
    };
    let any_public = nets.iter().any(|n| !special(n));
    if any_public != negated {
        Cond::Yes
    } else {
        Cond::No
    }
}

/// Parses a port list `80`, `1000:2000`, `80,443,8000:8100`.
pub fn parse_ports(text: &str) -> Option<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once(':') {
            let a = if a.is_empty() { 0 } else { a.parse().ok()? };
            let b = if b.is_empty() {
                u16::MAX
            } else {
                b.parse().ok()?
            };
            out.push((a, b));
        } else {
            let p = service_port(part)?;
            out.push((p, p));
        }
    }
    Some(out)
}

fn service_port(name: &str) -> Option<u16> {
    match name {
        "http" | "www" => Some(80),
        "https" => Some(443),
        "ssh" => Some(22),
        _ => name.parse().ok(),
    }
}

/// A destination NAT of the nat table: new connections to `ports` go to `to` (`IP[:PORT]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    pub ports: Vec<(u16, u16)>,
    pub to: String,
    pub to_port: Option<u16>,
    pub rule: String,
}

/// The DNAT rules of the nat table (Docker's published ports). Rules that only apply to
/// traffic from a container bridge (`-i docker0`) are left out.
pub fn dnat_rules(text: &str) -> Vec<Dnat> {
    let mut out = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            continue;
        }
        if table != "nat" || !line.starts_with("-A ") || !line.contains("-j DNAT") {
            continue;
        }
        let words = tokenize(line);
        let mut ports = None;
        let mut to = None;
        let mut internal_only = false;
        for (i, w) in words.iter().enumerate() {
            let next = words.get(i + 1).map(String::as_str).unwrap_or("");
            let negated = i > 0 && words[i - 1] == "!";
            match w.as_str() {
                "--dport" | "--dports" | "--destination-port" => ports = parse_ports(next),
                "--to-destination" => to = Some(next.to_string()),
                "-i" | "--in-interface" => {
                    internal_only = iface_cond(next, negated) == Cond::No;
                }
                _ => {}
            }
        }
        let (Some(ports), Some(to)) = (ports, to) else {
            continue;
        };
        if internal_only {
            continue;
        }
        // `172.17.0.2:80`, `[fd00::2]:80`, `172.17.0.2`.
        let to_port = to
            .rsplit_once(':')
            .filter(|(host, _)| !host.contains(':') || host.ends_with(']'))
            .and_then(|(_, p)| p.split('-').next().and_then(|p| p.parse().ok()));
        out.push(Dnat {
            ports,
            to,
            to_port,
            rule: line.to_string(),
        });
    }
    out
}

/// What `iptables-save` printed, by table, for de-duplication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveSummary {
    /// `nf_tables` or `legacy`, from the header comment.
    pub backend: Option<String>,
    pub tables: Vec<String>,
    /// The rule lines, in order (for comparing two views of the same rules).
    pub rule_lines: Vec<String>,
    /// Tables iptables-nft reported as incompatible (changed with `nft`).
    pub incompatible: Vec<String>,
}

/// Reads the header and rules of an `iptables-save` output without compiling it.
pub fn summarize(text: &str) -> SaveSummary {
    let mut s = SaveSummary::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("# Generated by") {
            if line.contains("nf_tables") {
                s.backend = Some("nf_tables".into());
            } else if line.contains("legacy") {
                s.backend = Some("legacy".into());
            }
        } else if let Some(t) = line.strip_prefix('*') {
            s.tables.push(t.to_string());
        } else if let Some(rest) = line.strip_prefix("# Table `") {
            // iptables-nft cannot show a table nft changed: `nft -j` must read it instead.
            if let Some((name, _)) = rest.split_once('\'') {
                if rest.contains("incompatible") {
                    s.incompatible.push(name.to_string());
                }
            }
        } else if line.starts_with("-A ") || line.starts_with(':') {
            s.rule_lines
                .push(line.split(" [").next().unwrap_or(line).to_string());
        }
    }
    s
}

/// Compiles `iptables-save` text into `rs` (whose family says whether this is iptables or
/// ip6tables output). `source` labels the rules (`iptables`, `iptables-legacy`, ...).
pub fn parse_into(rs: &mut Ruleset, text: &str, source: &str, ipsets: &IpSets) {
    let family = rs.family;
    let mut table = String::new();
    let mut chains: HashMap<(String, String), usize> = HashMap::new();
    let mut positions: HashMap<usize, usize> = HashMap::new();
    // First pass: every table's chains (rules may name a chain declared later in odd dumps).
    for line in text.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let Some(name) = words.next() else { continue };
            let policy = words.next().and_then(policy_of);
            let key = (table.clone(), name.to_string());
            if chains.contains_key(&key) {
                continue;
            }
            let idx = rs.chains.len();
            rs.chains.push(Chain {
                source: source.to_string(),
                table: table.clone(),
                name: name.to_string(),
                policy,
                rules: Vec::new(),
            });
            if let Some((hook, prio)) = stage_of(&table, name) {
                rs.stages.push((hook, prio, idx));
            }
            chains.insert(key, idx);
        }
    }
    table.clear();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            continue;
        }
        let Some(body) = line.strip_prefix("-A ") else {
            continue;
        };
        let words = tokenize(body);
        let Some(chain_name) = words.first() else {
            rs.notes
                .push(format!("{source}: line {}: empty rule", lineno + 1));
            continue;
        };
        let Some(&ci) = chains.get(&(table.clone(), chain_name.clone())) else {
            rs.notes.push(format!(
                "{source}: line {}: rule for undeclared chain {chain_name}",
                lineno + 1
            ));
            continue;
        };
        let pos = positions.entry(ci).or_insert(0);
        *pos += 1;
        let at = RuleRef {
            source: source.to_string(),
            table: table.clone(),
            chain: chain_name.clone(),
            position: *pos,
            text: line.to_string(),
        };
        let rule = compile_rule(&words[1..], family, &table, &chains, ipsets, at);
        if let Some(chain) = rs.chains.get_mut(ci) {
            chain.rules.push(rule);
        }
    }
}

/// Options that never change whether a new TCP connection matches.
const IGNORED_OPTIONS: &[&str] = &[
    "--comment",
    "--icmp-type",
    "--icmpv6-type",
    "--log-prefix",
    "--log-level",
    "--reject-with",
];

/// Modules whose options this compiler understands fully.
const KNOWN_MODULES: &[&str] = &[
    "tcp",
    "udp",
    "multiport",
    "conntrack",
    "state",
    "set",
    "comment",
    "addrtype",
    "icmp",
    "icmp6",
    "iprange",
    "pkttype",
];

fn compile_rule(
    words: &[String],
    family: Family,
    table: &str,
    chains: &HashMap<(String, String), usize>,
    ipsets: &IpSets,
    at: RuleRef,
) -> Rule {
    let mut src: Option<AddrSet> = None;
    let mut dports = Vec::new();
    let mut cond = Cond::Yes;
    let mut action = Action::Continue;
    let mut negate = false;
    let mut i = 0;
    let narrow = |src: &mut Option<AddrSet>, s: AddrSet| {
        *src = Some(match src.take() {
            None => s,
            Some(cur) => cur.intersect(&s),
        });
    };
    let value = |i: usize| words.get(i + 1).map(String::as_str).unwrap_or("");
    while i < words.len() {
        let w = words[i].as_str();
        let neg = std::mem::take(&mut negate);
        match w {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-s" | "--source" | "--src-range" => {
                let v = value(i);
                let mut set = AddrSet::empty(family);
                let mut ok = true;
                for part in v.split(',') {
                    if let Some((a, b)) = part.split_once('-') {
                        match (parse_net(a), parse_net(b)) {
                            (Some(a), Some(b)) => {
                                let (lo, hi) = (
                                    crate::addrset::net_bounds(&a).0,
                                    crate::addrset::net_bounds(&b).1,
                                );
                                set = set.union(&AddrSet::from_intervals(family, vec![(lo, hi)]));
                            }
                            _ => ok = false,
                        }
                    } else if let Some(net) = parse_net(part) {
                        set = set.union(&AddrSet::from_nets(family, [&net]));
                    } else {
                        ok = false;
                    }
                }
                if ok {
                    narrow(&mut src, if neg { set.complement() } else { set });
                } else {
                    cond = cond.and(Cond::Maybe(format!("unreadable source {v}")));
                }
                i += 2;
            }
            "-d" | "--destination" | "--dst-range" => {
                let v = value(i);
                let nets: Vec<ipnet::IpNet> = v
                    .split(',')
                    .filter_map(|p| parse_net(p.split('-').next().unwrap_or(p)))
                    .collect();
                cond = cond.and(dest_cond(&nets, neg));
                i += 2;
            }
            "-p" | "--protocol" => {
                let v = value(i).to_ascii_lowercase();
                let tcp = matches!(v.as_str(), "tcp" | "6" | "all" | "0");
                cond = cond.and(if tcp != neg { Cond::Yes } else { Cond::No });
                i += 2;
            }
            "-i" | "--in-interface" => {
                cond = cond.and(iface_cond(value(i), neg));
                i += 2;
            }
            "-o" | "--out-interface" => i += 2,
            "-m" | "--match" => {
                let m = value(i);
                if !KNOWN_MODULES.contains(&m) {
                    cond = cond.and(Cond::Maybe(format!("-m {m}")));
                }
                i += 2;
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" | "--ports" => {
                match parse_ports(value(i)) {
                    Some(ranges) => dports.push(PortMatch {
                        negated: neg,
                        ranges,
                    }),
                    None => cond = cond.and(Cond::Maybe(format!("port {}", value(i)))),
                }
                i += 2;
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" => {
                cond = cond.and(Cond::Maybe("source port".into()));
                i += 2;
            }
            "--ctstate" | "--state" => {
                let new = value(i).split(',').any(|s| s.eq_ignore_ascii_case("NEW"));
                cond = cond.and(if new != neg { Cond::Yes } else { Cond::No });
                i += 2;
            }
            "--match-set" => {
                let name = value(i);
                let flags = words.get(i + 2).map(String::as_str).unwrap_or("");
                let first = flags.split(',').next().unwrap_or("");
                match (first, ipsets.addresses(name, family)) {
                    ("src", Some(set)) => {
                        narrow(&mut src, if neg { set.complement() } else { set });
                    }
                    ("src", None) if !ipsets.sets.contains_key(name) => {
                        cond = cond.and(Cond::Maybe(format!("ipset {name} not listed")));
                    }
                    _ => {
                        cond = cond.and(Cond::Maybe(format!("ipset {name} {flags}")));
                    }
                }
                i += 3;
            }
            "--syn" => {
                cond = cond.and(if neg { Cond::No } else { Cond::Yes });
                i += 1;
            }
            "--tcp-flags" => {
                // The first packet of a new connection carries SYN alone.
                let flags = |text: &str| -> Vec<String> {
                    match text {
                        "ALL" => ["FIN", "SYN", "RST", "PSH", "ACK", "URG"]
                            .iter()
                            .map(|s| s.to_string())
                            .collect(),
                        "NONE" => Vec::new(),
                        t => t.split(',').map(str::to_string).collect(),
                    }
                };
                let mask = flags(value(i));
                let comp = flags(words.get(i + 2).map(String::as_str).unwrap_or(""));
                let mut want: Vec<String> = mask.iter().filter(|f| *f == "SYN").cloned().collect();
                let mut comp: Vec<String> = comp.into_iter().filter(|f| mask.contains(f)).collect();
                want.sort();
                comp.sort();
                cond = cond.and(if (want == comp) != neg {
                    Cond::Yes
                } else {
                    Cond::No
                });
                i += 3;
            }
            "-f" | "--fragment" => {
                cond = cond.and(if neg { Cond::Yes } else { Cond::No });
                i += 1;
            }
            "--dst-type" => {
                let t = value(i);
                let yes = t.split(',').any(|t| t == "LOCAL" || t == "UNICAST");
                cond = cond.and(if yes != neg { Cond::Yes } else { Cond::No });
                i += 2;
            }
            "--src-type" => {
                let t = value(i);
                let yes = t.split(',').any(|t| t == "UNICAST");
                cond = cond.and(if yes != neg { Cond::Yes } else { Cond::No });
                i += 2;
            }
            "--pkt-type" => {
                let yes = value(i) == "unicast";
                cond = cond.and(if yes != neg { Cond::Yes } else { Cond::No });
                i += 2;
            }
            "-c" | "--set-counters" => i += 3,
            "-j" | "--jump" | "-g" | "--goto" => {
                let target = value(i);
                let goto = matches!(w, "-g" | "--goto");
                action = match target {
                    "ACCEPT" => Action::Verdict(Verdict::Accept),
                    "DROP" | "TARPIT" => Action::Verdict(Verdict::Drop),
                    "REJECT" => Action::Verdict(Verdict::Reject),
                    "RETURN" => Action::Return,
                    "QUEUE" | "NFQUEUE" => Action::Unknown(target.to_string()),
                    t => match chains.get(&(table.to_string(), t.to_string())) {
                        Some(&ci) if goto => Action::Goto(ci),
                        Some(&ci) => Action::Jump(ci),
                        None => Action::Continue,
                    },
                };
                break;
            }
            _ => {
                // Options with no bearing on a new TCP connection (comments, ICMP types) are
                // skipped; any other option this reader does not know makes the rule uncertain
                // (unless a module already did).
                if !IGNORED_OPTIONS.contains(&w) && !matches!(cond, Cond::Maybe(_) | Cond::No) {
                    cond = cond.and(Cond::Maybe(format!("option {w}")));
                }
                i += 1;
                while i < words.len() && !words[i].starts_with('-') && words[i] != "!" {
                    i += 1;
                }
            }
        }
    }
    Rule {
        src,
        dports,
        cond,
        action,
        at,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::firewall::eval::evaluate;

    fn v4(nets: &[&str]) -> AddrSet {
        let nets: Vec<ipnet::IpNet> = nets.iter().map(|n| parse_net(n).unwrap()).collect();
        AddrSet::from_nets(Family::V4, &nets)
    }

    #[test]
    fn unknown_options_of_known_modules_are_uncertain() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n\
            -A INPUT -s 10.0.0.0/8 -p tcp -m conntrack --ctorigdstport 8080 -j DROP\n\
            -A INPUT -s 10.0.0.0/8 -p icmp -m icmp --icmp-type 8 -j DROP\n\
            -A INPUT -s 10.0.0.0/8 -m comment --comment \"x y\" -j REJECT\nCOMMIT\n";
        let mut rs = Ruleset::new(Family::V4);
        parse_into(&mut rs, text, "iptables", &IpSets::default());
        let t = v4(&["10.0.0.0/8"]);
        let e = evaluate(&rs, &t, 80);
        assert_eq!(e.uncertain_in(&t).len(), 1);
        assert!(e.uncertain_in(&t)[0].reason.contains("--ctorigdstport"));
        let b = e.blocked_in(&t);
        assert_eq!(
            (b.len(), b[0].by.position, b[0].verdict),
            (1, 3, Verdict::Reject)
        );
    }

    #[test]
    fn tokenizer_keeps_quoted_comments() {
        let w = tokenize(r#"INPUT -m comment --comment "a \"b\" c" -j DROP"#);
        assert_eq!(
            w,
            [
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "DROP"
            ]
        );
    }

    #[test]
    fn user_chains_return_negation_and_policy() {
        let text = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:CDN - [0:0]\n\
            -A INPUT -i lo -j ACCEPT\n\
            -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A INPUT -p tcp -m multiport --dports 80,443 -j CDN\n\
            -A CDN -s 173.245.48.5/32 -j DROP\n\
            -A CDN ! -s 173.245.48.0/20 -j RETURN\n\
            -A CDN -p tcp -m tcp --dport 443 -j REJECT --reject-with tcp-reset\n\
            -A CDN -j ACCEPT\nCOMMIT\n";
        let mut rs = Ruleset::new(Family::V4);
        parse_into(&mut rs, text, "iptables", &IpSets::default());
        let targets = v4(&["173.245.48.0/20", "103.21.244.0/22"]);
        let e80 = evaluate(&rs, &targets, 80);
        let blocked = e80.blocked_in(&targets);
        assert_eq!(blocked.len(), 2);
        assert_eq!(blocked[0].set.describe(5), "173.245.48.5/32");
        assert_eq!(blocked[0].by.position, 1);
        assert_eq!(blocked[0].by.chain, "CDN");
        // The returned range falls to INPUT's policy DROP.
        assert_eq!(blocked[1].set.describe(5), "103.21.244.0/22");
        assert!(blocked[1].by.is_policy());
        let e443 = evaluate(&rs, &targets, 443);
        let b443 = e443.blocked_in(&targets);
        assert_eq!(b443.iter().map(|d| d.set.size()).sum::<u128>(), 4096 + 1024);
        assert!(b443
            .iter()
            .any(|d| d.verdict == Verdict::Reject && d.by.position == 3));
        let e22 = evaluate(&rs, &targets, 22);
        assert_eq!(e22.blocked_in(&targets)[0].set, targets);
    }

    #[test]
    fn goto_returns_to_the_callers_caller_and_unknown_modules_are_uncertain() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n\
            -A INPUT -j A\n-A INPUT -s 10.0.0.0/8 -j DROP\n\
            -A A -g B\n-A A -j DROP\n\
            -A B -s 10.1.0.0/16 -j RETURN\n-A B -s 10.2.0.0/16 -m limit --limit 5/min -j DROP\n\
            -A B -j ACCEPT\nCOMMIT\n";
        let mut rs = Ruleset::new(Family::V4);
        parse_into(&mut rs, text, "iptables", &IpSets::default());
        let t = v4(&["10.0.0.0/8"]);
        let e = evaluate(&rs, &t, 80);
        let b = e.blocked_in(&t);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].set.describe(3), "10.1.0.0/16");
        assert_eq!((b[0].by.chain.as_str(), b[0].by.position), ("INPUT", 2));
        let u = e.uncertain_in(&t);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].set.describe(3), "10.2.0.0/16");
        assert!(u[0].reason.contains("limit"));
    }
}
