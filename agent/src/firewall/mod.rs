//! Firewall evaluation: what verdict a new TCP connection from each CDN range gets from the
//! host's iptables, nftables, ipset, ufw, CSF and fail2ban; nginx's real-IP coverage of the CDN;
//! allow rules for ranges a provider no longer publishes.
//!
//! # Layout
//! - [`eval`]: the rule-set form and the symbolic walk that decides every address.
//! - [`iptables`], [`nft`], [`ipset`]: the readers of `iptables-save`, `nft -j list ruleset`,
//!   `ipset save`.
//! - [`fail2ban`]: current bans and `ignoreip`.
//! - [`files`]: CSF's `csf.deny` and `/etc/hosts.deny`;
//! - [`csf`]: CSF's temporary blocks (`csf -t`), `csf.ignore` coverage and country blocks.
//! - [`firewalld`]: firewalld's zones, sources, services, rich rules and ipsets (permanent XML
//!   and runtime), so a finding says which zone a CDN range lands in and why it is refused.
//! - [`ufw`]: ufw's rule files (fixes as `ufw` commands, an inactive ufw's rules).
//!
//! A web port that a nat-table DNAT rule forwards (Docker's published ports) is evaluated on the
//! FORWARD path (DOCKER-USER, DOCKER), with the port after translation.
//! - [`realip`]: nginx `set_real_ip_from` / `real_ip_header` against the provider's ranges.
//! - this file: [`audit`] (reads the host, builds the checks), [`evaluate_rules`] (the part that
//!   needs no host: reusable to verify a whitelist after it is applied), [`table_text`].

// The address sets moved up (the CDN catalog uses them too, and must not depend on the
// firewall); this keeps `firewall::addrset::…` paths resolving.
pub use crate::addrset;
pub mod csf;
pub mod eval;
pub mod fail2ban;
pub mod files;
pub mod firewalld;
pub mod ipset;
pub mod iptables;
pub mod nft;
pub mod realip;
pub mod ufw;
mod undetected;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cause::CauseId;
use crate::cdn::{CdnCatalog, Provider};
use crate::check::{Area, Check};
use crate::discover::RealIp;
use crate::host::{Command, Host};

use crate::addrset::{AddrSet, Family};
use eval::{RuleRef, Ruleset, Verdict};

/// What the auditor needs besides the host.
#[derive(Debug, Clone)]
pub struct FirewallInput<'a> {
    /// The CDNs that front this origin (configured or detected).
    pub providers: Vec<Provider>,
    /// The web ports (80, 443 and whatever nginx listens on).
    pub ports: Vec<u16>,
    /// nginx's real-IP setup, when nginx was found.
    pub real_ip: Option<&'a RealIp>,
    pub catalog: &'a CdnCatalog,
    /// Access-log client addresses and their request counts.
    pub access_clients: &'a BTreeMap<String, u64>,
}

/// How a provider's ranges fare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    Allowed,
    PartlyBlocked,
    Blocked,
    /// The rules could not be read.
    Unknown,
}

impl Reach {
    pub fn label(self) -> &'static str {
        match self {
            Reach::Allowed => "allowed",
            Reach::PartlyBlocked => "partly blocked",
            Reach::Blocked => "blocked",
            Reach::Unknown => "unknown",
        }
    }
}

/// A part of a provider's ranges and what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub family: Family,
    pub ports: Vec<u16>,
    pub verdict: Verdict,
    /// Exactly the addresses affected, as the fewest CIDR blocks.
    pub ranges: Vec<IpNet>,
    pub rule: RuleRef,
}

/// A part an uncertain rule (rate limit, unknown module) may decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doubt {
    pub family: Family,
    pub ports: Vec<u16>,
    pub ranges: Vec<IpNet>,
    pub rule: RuleRef,
    pub reason: String,
}

/// A fail2ban ban of an address inside a provider's ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdnBan {
    pub jail: String,
    pub address: std::net::IpAddr,
    pub provider: Provider,
}

/// One provider's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderVerdict {
    pub provider: Provider,
    pub reach: Reach,
    pub blocked: Vec<Part>,
    pub allowed: Vec<Part>,
    pub uncertain: Vec<Doubt>,
    pub bans: Vec<CdnBan>,
}

/// The auditor's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirewallReport {
    pub checks: Vec<Check>,
    pub providers: Vec<ProviderVerdict>,
    /// The rule sources that were read (`iptables (nf_tables): 42 rules`, ...).
    pub sources: Vec<String>,
    pub notes: Vec<String>,
}

/// Rule-set texts as the tools print them; any may be missing.
#[derive(Debug, Clone, Default)]
pub struct RuleTexts {
    pub iptables: Option<String>,
    pub ip6tables: Option<String>,
    pub iptables_legacy: Option<String>,
    pub ip6tables_legacy: Option<String>,
    pub nft_json: Option<String>,
    pub ipset: Option<String>,
}

/// The rule sets of both families, built from the texts.
#[derive(Debug, Clone)]
pub struct Rulesets {
    pub v4: Ruleset,
    pub v6: Ruleset,
    pub sources: Vec<String>,
    /// Families no rule source could be read for (their verdicts would be guesses).
    pub unread: Vec<Family>,
    /// DNAT rules per family: iptables' nat table (Docker's published ports) and native
    /// nftables nat chains on prerouting.
    pub dnat_v4: Vec<iptables::Dnat>,
    pub dnat_v6: Vec<iptables::Dnat>,
}

impl Rulesets {
    pub fn get(&self, f: Family) -> &Ruleset {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// The way a new connection to `port` goes: forwarded when a DNAT rule sends it on.
    pub fn path(&self, f: Family, port: u16) -> (eval::Path, Option<&iptables::Dnat>) {
        let dnat = match f {
            Family::V4 => &self.dnat_v4,
            Family::V6 => &self.dnat_v6,
        };
        match dnat
            .iter()
            .find(|d| d.ports.iter().any(|(a, b)| *a <= port && port <= *b))
        {
            Some(d) => (
                eval::Path {
                    hook: eval::Hook::Forward,
                    port,
                    port_after_dnat: d.to_port.unwrap_or(port),
                },
                Some(d),
            ),
            None => (eval::Path::input(port), None),
        }
    }

    /// True when no rule source was readable at all.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// Builds both families' rule sets. iptables-nft tables that `nft -j` also shows are counted
/// once (from `iptables-save`); a legacy view identical to the main one is counted once.
pub fn build_rulesets(texts: &RuleTexts) -> Rulesets {
    let ipsets = texts.ipset.as_deref().map(ipset::parse).unwrap_or_default();
    let mut v4 = Ruleset::new(Family::V4);
    let mut v6 = Ruleset::new(Family::V6);
    let mut sources = Vec::new();
    let mut skip_nft: HashSet<(String, String)> = HashSet::new();
    for (text, legacy_text, rs, name, nft_family) in [
        (
            &texts.iptables,
            &texts.iptables_legacy,
            &mut v4,
            "iptables",
            "ip",
        ),
        (
            &texts.ip6tables,
            &texts.ip6tables_legacy,
            &mut v6,
            "ip6tables",
            "ip6",
        ),
    ] {
        let main = text.as_deref().map(iptables::summarize);
        if let (Some(text), Some(sum)) = (text.as_deref(), &main) {
            iptables::parse_into(rs, text, name, &ipsets);
            let backend = sum.backend.clone().unwrap_or_else(|| "unknown".into());
            if backend != "legacy" {
                for t in &sum.tables {
                    if !sum.incompatible.contains(t) {
                        skip_nft.insert((nft_family.to_string(), t.clone()));
                    }
                }
            }
            sources.push(format!(
                "{name} ({backend}): {} rules",
                sum.rule_lines
                    .iter()
                    .filter(|l| l.starts_with("-A"))
                    .count()
            ));
        }
        if let Some(legacy) = legacy_text.as_deref() {
            let sum = iptables::summarize(legacy);
            let same = main
                .as_ref()
                .is_some_and(|m| m.rule_lines == sum.rule_lines);
            let main_is_legacy = main
                .as_ref()
                .is_some_and(|m| m.backend.as_deref() == Some("legacy"));
            if !sum.tables.is_empty() && !same && !main_is_legacy {
                iptables::parse_into(rs, legacy, &format!("{name}-legacy"), &ipsets);
                sources.push(format!(
                    "{name}-legacy: {} rules",
                    sum.rule_lines
                        .iter()
                        .filter(|l| l.starts_with("-A"))
                        .count()
                ));
            }
        }
    }
    let mut nft_dnat_v4 = Vec::new();
    let mut nft_dnat_v6 = Vec::new();
    if let Some(json) = texts.nft_json.as_deref() {
        match nft::parse(json) {
            Ok(ruleset) => {
                nft_dnat_v4 = nft::dnat_rules(&ruleset, Family::V4, &skip_nft);
                nft_dnat_v6 = nft::dnat_rules(&ruleset, Family::V6, &skip_nft);
                let before = v4.rule_count() + v6.rule_count();
                nft::compile_into(&mut v4, &ruleset, &skip_nft);
                nft::compile_into(&mut v6, &ruleset, &skip_nft);
                let native: Vec<String> = ruleset
                    .tables
                    .iter()
                    .filter(|t| !skip_nft.contains(*t))
                    .map(|(f, n)| format!("{f} {n}"))
                    .collect();
                sources.push(format!(
                    "nftables: {} native tables ({}), {} rule entries for both families",
                    native.len(),
                    native.join(", "),
                    v4.rule_count() + v6.rule_count() - before
                ));
            }
            Err(e) => v4.notes.push(e.to_string()),
        }
    }
    if !ipsets.sets.is_empty() {
        sources.push(format!(
            "ipset: {} sets, {} entries",
            ipsets.sets.len(),
            ipsets.sets.values().map(|s| s.entries).sum::<usize>()
        ));
    }
    let nft_ok = texts
        .nft_json
        .as_deref()
        .is_some_and(|j| nft::parse(j).is_ok());
    let mut unread = Vec::new();
    if texts.iptables.is_none() && texts.iptables_legacy.is_none() && !nft_ok {
        unread.push(Family::V4);
    }
    if texts.ip6tables.is_none() && texts.ip6tables_legacy.is_none() && !nft_ok {
        unread.push(Family::V6);
    }
    let dnat = |a: &Option<String>, b: &Option<String>, native: Vec<iptables::Dnat>| {
        let mut d: Vec<iptables::Dnat> = native;
        for t in [a, b].into_iter().flatten() {
            for r in iptables::dnat_rules(t) {
                if !d.iter().any(|x| x.rule == r.rule) {
                    d.push(r);
                }
            }
        }
        d
    };
    Rulesets {
        v4,
        v6,
        sources,
        unread,
        dnat_v4: dnat(&texts.iptables, &texts.iptables_legacy, nft_dnat_v4),
        dnat_v6: dnat(&texts.ip6tables, &texts.ip6tables_legacy, nft_dnat_v6),
    }
}

/// Evaluates every provider's ranges on every port through the rule sets (no host needed:
/// this is also how a whitelist is verified after it is applied).
pub fn evaluate_rules(
    rulesets: &Rulesets,
    catalog: &CdnCatalog,
    providers: &[Provider],
    ports: &[u16],
) -> Vec<ProviderVerdict> {
    let mut out: Vec<ProviderVerdict> = providers
        .iter()
        .map(|p| ProviderVerdict {
            provider: *p,
            reach: Reach::Allowed,
            blocked: Vec::new(),
            allowed: Vec::new(),
            uncertain: Vec::new(),
            bans: Vec::new(),
        })
        .collect();
    for family in [Family::V4, Family::V6] {
        if rulesets.unread.contains(&family) {
            continue;
        }
        let sets: Vec<AddrSet> = providers.iter().map(|p| catalog.set(*p, family)).collect();
        let all = sets
            .iter()
            .fold(AddrSet::empty(family), |acc, s| acc.union(s));
        if all.is_empty() {
            continue;
        }
        let rs = rulesets.get(family);
        // (rule, verdict, set) → ports, per provider.
        type Key = (usize, RuleRef, Verdict, Vec<(u128, u128)>);
        let mut blocked: BTreeMap<Key, Vec<u16>> = BTreeMap::new();
        let mut allowed: BTreeMap<Key, Vec<u16>> = BTreeMap::new();
        type DoubtKey = (usize, RuleRef, String, Vec<(u128, u128)>);
        let mut doubts: BTreeMap<DoubtKey, Vec<u16>> = BTreeMap::new();
        for &port in ports {
            let e = eval::evaluate_path(rs, &all, rulesets.path(family, port).0);
            for (i, set) in sets.iter().enumerate() {
                if set.is_empty() {
                    continue;
                }
                for d in e.blocked_in(set) {
                    blocked
                        .entry((i, d.by, d.verdict, d.set.intervals().to_vec()))
                        .or_default()
                        .push(port);
                }
                for d in e.accepted_in(set) {
                    allowed
                        .entry((i, d.by, d.verdict, d.set.intervals().to_vec()))
                        .or_default()
                        .push(port);
                }
                for u in e.uncertain_in(set) {
                    doubts
                        .entry((i, u.at, u.reason, u.set.intervals().to_vec()))
                        .or_default()
                        .push(port);
                }
            }
        }
        let nets = |ivs: Vec<(u128, u128)>| AddrSet::from_intervals(family, ivs).to_nets();
        for ((i, rule, verdict, ivs), ports) in blocked {
            out[i].blocked.push(Part {
                family,
                ports,
                verdict,
                ranges: nets(ivs),
                rule,
            });
        }
        for ((i, rule, verdict, ivs), ports) in allowed {
            out[i].allowed.push(Part {
                family,
                ports,
                verdict,
                ranges: nets(ivs),
                rule,
            });
        }
        for ((i, rule, reason, ivs), ports) in doubts {
            out[i].uncertain.push(Doubt {
                family,
                ports,
                ranges: nets(ivs),
                rule,
                reason,
            });
        }
    }
    for v in &mut out {
        v.reach = if v.blocked.is_empty() {
            Reach::Allowed
        } else if v.allowed.is_empty() {
            Reach::Blocked
        } else {
            Reach::PartlyBlocked
        };
    }
    out
}

/// Web ports that a nat-table DNAT rule (Docker's published ports) sends elsewhere, with where.
pub fn dnat_ports(rulesets: &Rulesets, ports: &[u16]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for f in [Family::V4, Family::V6] {
        for p in ports {
            if let (_, Some(d)) = rulesets.path(f, *p) {
                if !out.iter().any(|(q, _)| q == p) {
                    out.push((*p, d.to.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Runs a command through the host; `Err` is the reason it gave nothing usable.
fn run_text(host: &dyn Host, program: &str, args: &[&str]) -> Result<String, String> {
    match host.run(&Command::new(program, args)) {
        Ok(out) if out.success() => Ok(out.stdout_text()),
        Ok(out) => Err(format!(
            "`{}` failed: {}",
            Command::new(program, args).key(),
            out.stderr.lines().next().unwrap_or("no output").trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads every rule source the host has.
pub fn collect_rule_texts(host: &dyn Host, notes: &mut Vec<String>) -> RuleTexts {
    let mut get = |program: &str, args: &[&str]| match run_text(host, program, args) {
        Ok(t) => Some(t),
        Err(e) => {
            notes.push(e);
            None
        }
    };
    RuleTexts {
        iptables: get("iptables-save", &[]),
        ip6tables: get("ip6tables-save", &[]),
        iptables_legacy: get("iptables-legacy-save", &[]),
        ip6tables_legacy: get("ip6tables-legacy-save", &[]),
        nft_json: get("nft", &["-j", "list", "ruleset"]),
        ipset: get("ipset", &["save"]),
    }
}

fn ports_text(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn nets_text(nets: &[IpNet], max: usize) -> String {
    let mut s: Vec<String> = nets.iter().take(max).map(|n| n.to_string()).collect();
    if nets.len() > max {
        s.push(format!("… {} more", nets.len() - max));
    }
    s.join(", ")
}

/// The set a rule matches the source against: `--match-set NAME src` or `saddr @NAME`.
fn set_name(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if *w == "--match-set" && words.get(i + 2).is_some_and(|f| f.starts_with("src")) {
            return words.get(i + 1).map(|s| s.to_string());
        }
        if *w == "saddr" {
            if let Some(name) = words.get(i + 1).and_then(|n| n.strip_prefix('@')) {
                return Some(name.to_string());
            }
        }
    }
    None
}

/// The command that removes a rule, or adds the missing allow before a policy.
fn fix_for(part: &Part, provider: Provider, ufw: Option<&ufw::UfwFiles>) -> String {
    let r = &part.rule;
    if let Some(files) = ufw {
        if let Some(cmd) = files.command_for(r, part.verdict) {
            let cmd = cmd.strip_prefix("ufw ").unwrap_or(&cmd);
            return format!("remove the ufw rule: ufw delete {cmd}");
        }
        if r.is_policy() && files.enabled == Some(true) && r.chain == "INPUT" {
            return part
                .ranges
                .iter()
                .take(20)
                .flat_map(|n| {
                    part.ports.iter().map(move |p| {
                        format!("ufw insert 1 allow proto tcp from {n} to any port {p}")
                    })
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
    }
    let tool = if r.source.starts_with("ip6tables") {
        "ip6tables"
    } else {
        "iptables"
    };
    let legacy = if r.source.ends_with("-legacy") {
        "-legacy"
    } else {
        ""
    };
    if r.is_policy() {
        let ports = ports_text(&part.ports);
        if r.source == "nftables" {
            return format!(
                "allow {provider} before the policy of {} {}: nft insert rule {} {} {} saddr {{ {} }} tcp dport {{ {ports} }} accept (or `origin-agent whitelist --provider {provider} --apply`)",
                r.table,
                r.chain,
                r.table,
                r.chain,
                if part.family == Family::V4 { "ip" } else { "ip6" },
                nets_text(&part.ranges, 8)
            );
        }
        return format!(
            "allow {provider} before the policy: {tool}{legacy} -t {} -I {} -s <range> -p tcp -m multiport --dports {ports} -j ACCEPT for each of {} (or `origin-agent whitelist --provider {provider} --apply`)",
            r.table,
            r.chain,
            nets_text(&part.ranges, 8)
        );
    }
    // A ban list in a set: take the CDN's addresses out of the set, keep the rule.
    if let Some(set) = set_name(&r.text) {
        let ranges: Vec<String> = part.ranges.iter().map(|n| n.to_string()).collect();
        if r.source == "nftables" {
            return format!(
                "take {provider}'s addresses out of the set: nft delete element {} {set} {{ {} }} (an element wider than these must be deleted and its parts outside {provider} added back)",
                r.table,
                ranges.join(", ")
            );
        }
        return format!(
            "take {provider}'s addresses out of the set: {} (an entry wider than these must be deleted and its parts outside {provider} added back)",
            ranges
                .iter()
                .map(|n| format!("ipset del {set} {n}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if r.source == "nftables" {
        let handle = r.text.rsplit("handle ").next().unwrap_or("?");
        return format!(
            "remove the rule: nft delete rule {} {} handle {handle}",
            r.table, r.chain
        );
    }
    let spec = r.text.strip_prefix("-A ").unwrap_or(&r.text);
    format!("remove the rule: {tool}{legacy} -t {} -D {spec}", r.table)
}

/// The full audit: reads the host's firewall, fail2ban and nginx real-IP state through `host`.
pub fn audit(host: &dyn Host, input: &FirewallInput) -> FirewallReport {
    let mut notes = Vec::new();
    let mut checks = Vec::new();
    let mut ports: Vec<u16> = if input.ports.is_empty() {
        vec![80, 443]
    } else {
        input.ports.clone()
    };
    ports.sort_unstable();
    ports.dedup();
    let texts = collect_rule_texts(host, &mut notes);
    let rulesets = build_rulesets(&texts);
    let ufw_files = ufw::UfwFiles::read(host);
    let forwarded: Vec<String> = dnat_ports(&rulesets, &ports)
        .into_iter()
        .map(|(p, to)| format!("port {p} is forwarded to {to} (DNAT)"))
        .collect();
    notes.extend(forwarded.iter().cloned());
    notes.extend(rulesets.v4.notes.iter().cloned());
    notes.extend(rulesets.v6.notes.iter().cloned());
    let mut verdicts = if rulesets.is_empty() {
        Vec::new()
    } else {
        evaluate_rules(&rulesets, input.catalog, &input.providers, &ports)
    };

    if input.providers.is_empty() && !rulesets.is_empty() {
        let (found, targeted) = undetected::evaluate(&rulesets, input.catalog, &ports, &ufw_files);
        checks.extend(found);
        verdicts = targeted;
    } else if input.providers.is_empty() {
        checks.push(Check::skip(
            "firewall.cdn",
            Area::Firewall,
            "Firewall against CDN ranges",
            "no CDN fronts this origin (none configured, none detected)",
        ));
    } else if rulesets.is_empty() {
        for p in &input.providers {
            checks.push(Check::skip(
                format!("firewall.{p}"),
                Area::Firewall,
                format!("Firewall lets {p} reach ports {}", ports_text(&ports)),
                format!("no firewall rules could be read: {}", notes.join("; ")),
            ));
        }
        verdicts = input
            .providers
            .iter()
            .map(|p| ProviderVerdict {
                provider: *p,
                reach: Reach::Unknown,
                blocked: Vec::new(),
                allowed: Vec::new(),
                uncertain: Vec::new(),
                bans: Vec::new(),
            })
            .collect();
    } else {
        for v in &verdicts {
            let mut c = provider_check(v, &ports, Some(&ufw_files));
            if !forwarded.is_empty() {
                c.detail.push_str(&format!(
                    " ({}: evaluated on the FORWARD path)",
                    forwarded.join(", ")
                ));
            }
            for f in &rulesets.unread {
                c.detail.push_str(&format!(
                    " ({} rules could not be read, so {} was not evaluated: {})",
                    f.label(),
                    f.label(),
                    notes.join("; ")
                ));
                if c.status == crate::check::Status::Ok {
                    c.status = crate::check::Status::Warn;
                }
            }
            checks.push(c);
        }
    }

    // fail2ban.
    match fail2ban::read_state(host) {
        Ok(state) => {
            let mut found: Vec<CdnBan> = Vec::new();
            for jail in &state.jails {
                for addr in &jail.banned {
                    for p in input.catalog.providers_of(addr) {
                        found.push(CdnBan {
                            jail: jail.name.clone(),
                            address: *addr,
                            provider: p,
                        });
                    }
                }
            }
            for v in &mut verdicts {
                v.bans = found
                    .iter()
                    .filter(|b| b.provider == v.provider)
                    .cloned()
                    .collect();
            }
            bans_explain_blocks(&mut checks, &verdicts, &found);
            let rules_read = !rulesets.is_empty() && rulesets.unread.is_empty();
            checks.push(fail2ban_check(
                &state, &found, input, &verdicts, rules_read, &ports,
            ));
        }
        Err(reason) => checks.push(Check::skip(
            "fail2ban.cdn-banned",
            Area::Firewall,
            "fail2ban bans no CDN address",
            reason,
        )),
    }

    // nginx real IP.
    match input.real_ip {
        Some(real_ip) => {
            for p in &input.providers {
                checks.push(realip::coverage_check(
                    *p,
                    real_ip,
                    input.catalog,
                    input.access_clients,
                ));
            }
            if let Some(c) = realip::stale_check(real_ip, input.catalog, &input.providers) {
                checks.push(c);
            }
        }
        None if !input.providers.is_empty() => checks.push(Check::skip(
            "nginx.real-ip",
            Area::Cdn,
            "nginx restores visitor addresses behind the CDN",
            "nginx was not found",
        )),
        None => {}
    }

    // An inactive ufw's rules: what `ufw enable` would do to the CDN.
    let ufw_active = rulesets
        .v4
        .chains
        .iter()
        .any(|c| c.name == "ufw-user-input");
    if !ufw_active && !input.providers.is_empty() {
        if let Some((v4, v6)) = ufw_files.inactive_rulesets(&ipset::IpSets::default()) {
            let inactive = Rulesets {
                v4,
                v6,
                sources: vec!["ufw user rules".into()],
                unread: Vec::new(),
                dnat_v4: Vec::new(),
                dnat_v6: Vec::new(),
            };
            let would = evaluate_rules(&inactive, input.catalog, &input.providers, &ports);
            let blocked: Vec<String> = would
                .iter()
                .flat_map(|v| {
                    v.blocked.iter().map(move |b| {
                        format!(
                            "{} on port {}: {} ({})",
                            v.provider,
                            ports_text(&b.ports),
                            nets_text(&b.ranges, 6),
                            if b.rule.is_policy() {
                                format!("ufw default {}", b.verdict.label().to_lowercase())
                            } else {
                                b.rule.text.clone()
                            }
                        )
                    })
                })
                .collect();
            checks.push(if blocked.is_empty() {
                Check::ok("ufw.inactive", Area::Firewall, "ufw would let the CDN in if enabled")
                    .detail("ufw is disabled; its rules allow every CDN range on the web ports")
            } else {
                Check::warn("ufw.inactive", Area::Firewall, "ufw would let the CDN in if enabled")
                    .detail(format!(
                        "ufw is disabled now, but `ufw enable` would block: {}",
                        blocked.join("; ")
                    ))
                    .fix("before enabling ufw: ufw allow proto tcp from RANGE to any port 80,443 for each CDN range (`origin-agent cdn show NAME`), or `ufw allow 80,443/tcp`")
            });
        }
    }

    // Deny lists in files (CSF, TCP wrappers).
    let all_providers: Vec<Provider> = if input.providers.is_empty() {
        Provider::ALL.to_vec()
    } else {
        input.providers.clone()
    };
    checks.extend(files::csf_check(host, input.catalog, &all_providers));
    checks.extend(csf::checks(host, input.catalog, &all_providers));
    checks.extend(files::hosts_deny_check(host, input.catalog, &all_providers));
    let explained = firewalld::checks(host, input.catalog, &input.providers, &ports);
    firewalld::merge(&mut checks, explained);

    // Stale allow rules.
    if !rulesets.is_empty() {
        checks.push(stale_allow_check(&rulesets, input.catalog, &ports));
    }

    FirewallReport {
        checks,
        providers: verdicts,
        sources: rulesets.sources.clone(),
        notes,
    }
}

fn provider_check(v: &ProviderVerdict, ports: &[u16], ufw: Option<&ufw::UfwFiles>) -> Check {
    let p = v.provider;
    let id = format!("firewall.{p}");
    let title = format!("Firewall lets {p} reach ports {}", ports_text(ports));
    if v.blocked.is_empty() {
        let by: BTreeSet<String> = v.allowed.iter().map(|a| a.rule.describe()).collect();
        let mut c = Check::ok(id, Area::Firewall, title).detail(format!(
            "every {p} range is accepted on ports {} (by {})",
            ports_text(ports),
            by.into_iter().collect::<Vec<_>>().join("; ")
        ));
        if !v.uncertain.is_empty() {
            c = c.with_status(crate::check::Status::Warn).detail(format!(
                "{p} is accepted, but {} rule(s) may decide part of its ranges: {}",
                v.uncertain.len(),
                v.uncertain
                    .iter()
                    .take(5)
                    .map(|u| format!(
                        "{} ({}; {})",
                        u.rule.describe(),
                        u.reason,
                        nets_text(&u.ranges, 4)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        return c;
    }
    let mut lines = Vec::new();
    let mut fixes = BTreeSet::new();
    for b in &v.blocked {
        lines.push(format!(
            "{} {} on port {}: {} by {}",
            b.family.label(),
            b.verdict.label(),
            ports_text(&b.ports),
            nets_text(&b.ranges, 12),
            b.rule.describe()
        ));
        fixes.insert(fix_for(b, p, ufw));
    }
    let blocked_nets: usize = v.blocked.iter().map(|b| b.ranges.len()).sum();
    Check::fail(id, Area::Firewall, title)
        .detail(format!("{p} is {}: {}", v.reach.label(), lines.join("; ")))
        .cause(CauseId::FirewallCdnBlocked)
        .fix(fixes.into_iter().collect::<Vec<_>>().join("\n"))
        .metric(format!("{p}_blocked_blocks"), blocked_nets as f64, None)
}

/// Provider checks whose every blocked range is an address fail2ban banned: the rule is the ban's
/// effect (fail2ban's own chain), not a firewall rule of its own, so the check counts for
/// `fail2ban.cdn-banned` and the verdict names the ban.
fn bans_explain_blocks(checks: &mut [Check], verdicts: &[ProviderVerdict], found: &[CdnBan]) {
    for v in verdicts {
        let banned = |n: &IpNet| {
            n.prefix_len() == n.max_prefix_len()
                && found
                    .iter()
                    .any(|b| b.provider == v.provider && b.address == n.addr())
        };
        if v.blocked.is_empty() || !v.blocked.iter().all(|p| p.ranges.iter().all(banned)) {
            continue;
        }
        let id = format!("firewall.{}", v.provider);
        for c in checks
            .iter_mut()
            .filter(|c| c.id == id && c.cause == Some(CauseId::FirewallCdnBlocked))
        {
            c.cause = Some(CauseId::Fail2banCdnBanned);
            c.detail
                .push_str(" (these are fail2ban's bans: see fail2ban.cdn-banned)");
        }
    }
}

/// Whether the evaluated firewall blocks the banned address on the audited (web) ports: `None`
/// when it cannot tell (no verdict for the provider, rules unread, an uncertain rule).
fn ban_blocks_web(verdicts: &[ProviderVerdict], ban: &CdnBan) -> Option<bool> {
    let v = verdicts.iter().find(|v| v.provider == ban.provider)?;
    if v.reach == Reach::Unknown {
        return None;
    }
    let holds = |ranges: &[IpNet]| ranges.iter().any(|n| n.contains(&ban.address));
    if v.blocked.iter().any(|p| holds(&p.ranges)) {
        Some(true)
    } else if v.uncertain.iter().any(|d| holds(&d.ranges)) {
        None
    } else {
        Some(false)
    }
}

fn fail2ban_check(
    state: &fail2ban::Fail2banState,
    found: &[CdnBan],
    input: &FirewallInput,
    verdicts: &[ProviderVerdict],
    rules_read: bool,
    ports: &[u16],
) -> Check {
    let id = "fail2ban.cdn-banned";
    let title = "fail2ban bans no CDN address";
    let from = match state.source {
        fail2ban::BanSource::Server => "the running server",
        fail2ban::BanSource::Database => "its database (the server is not running)",
    };
    if found.is_empty() {
        let total: usize = state.jails.iter().map(|j| j.banned.len()).sum();
        return Check::ok(id, Area::Firewall, title).detail(format!(
            "{total} current bans in {} jails (read from {from}), none inside a CDN's ranges",
            state.jails.len()
        ));
    }
    // A jail bans on its own ports (`port = ssh`): when the running server's bans are all in
    // the rules and none of them stops the web ports, visitors are not affected; still worth
    // the ignoreip, not the cause of 5xx.
    let elsewhere_only = rules_read
        && state.source == fail2ban::BanSource::Server
        && found
            .iter()
            .all(|b| ban_blocks_web(verdicts, b) == Some(false));
    let mut lines = Vec::new();
    let mut fixes = Vec::new();
    for jail in &state.jails {
        let here: Vec<&CdnBan> = found.iter().filter(|b| b.jail == jail.name).collect();
        if here.is_empty() {
            continue;
        }
        let providers: BTreeSet<Provider> = here.iter().map(|b| b.provider).collect();
        let addrs: BTreeSet<String> = here.iter().map(|b| b.address.to_string()).collect();
        let real_ip_missing = input.real_ip.is_none_or(|r| {
            providers
                .iter()
                .any(|p| realip::trusted_share(r, input.catalog, *p) < 1.0)
        });
        let why = if real_ip_missing {
            "nginx does not restore the visitor's address for this CDN (set_real_ip_from missing), so the jail's filter saw the edge address of many visitors and banned it"
        } else {
            "the jail banned the CDN edge that relayed the offending requests (its filter or action uses the connecting address, not the visitor's)"
        };
        lines.push(format!(
            "jail {} banned {} ({}): {why}",
            jail.name,
            addrs.iter().cloned().collect::<Vec<_>>().join(", "),
            providers
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for a in &addrs {
            fixes.push(format!("fail2ban-client set {} unbanip {a}", jail.name));
        }
        let ranges: Vec<String> = providers
            .iter()
            .filter_map(|p| input.catalog.get(*p))
            .flat_map(|r| r.nets().map(|n| n.to_string()).collect::<Vec<_>>())
            .collect();
        let mut ignore = jail.ignoreip.clone();
        if ignore.is_empty() {
            ignore = vec!["127.0.0.1/8".into(), "::1".into()];
        }
        fixes.push(format!(
            "in /etc/fail2ban/jail.local [{}]: ignoreip = {} {}",
            jail.name,
            ignore.join(" "),
            ranges.join(" ")
        ));
    }
    if elsewhere_only {
        return Check::warn(id, Area::Firewall, title)
            .detail(format!(
                "{} (read from {from}); the firewall blocks these bans only on the jails' own ports, not on ports {}: visitors get through, but the CDN edge is one shared address for many",
                lines.join("; "),
                ports_text(ports),
            ))
            .fix(fixes.join("\n"))
            .metric("cdn_bans", found.len() as f64, None);
    }
    Check::fail(id, Area::Firewall, title)
        .detail(format!("{} (read from {from})", lines.join("; ")))
        .cause(CauseId::Fail2banCdnBanned)
        .fix(fixes.join("\n"))
        .metric("cdn_bans", found.len() as f64, None)
}

/// Known ranges providers used to publish and have withdrawn.
pub const RETIRED: &[(Provider, &str)] = &[
    (Provider::Cloudflare, "199.27.128.0/21"),
    (Provider::Cloudflare, "2400:cb00::/28"),
];

/// ACCEPT rules for the web ports that trust a public range no provider publishes now, in a
/// chain that is otherwise an allow list of a provider (or a range a provider retired).
fn stale_allow_check(rulesets: &Rulesets, catalog: &CdnCatalog, ports: &[u16]) -> Check {
    let id = "firewall.stale-allow";
    let title = "Firewall trusts only ranges the CDNs publish";
    let mut findings = Vec::new();
    let mut fixes = Vec::new();
    for family in [Family::V4, Family::V6] {
        let rs = rulesets.get(family);
        let provider_sets: Vec<(Provider, AddrSet)> = catalog
            .providers
            .keys()
            .map(|p| (*p, catalog.set(*p, family)))
            .collect();
        let any_provider = provider_sets
            .iter()
            .fold(AddrSet::empty(family), |a, (_, s)| a.union(s));
        let retired: Vec<(Provider, AddrSet)> = RETIRED
            .iter()
            .filter_map(|(p, n)| {
                let net = addrset::parse_net(n)?;
                (Family::of(&net) == family).then(|| (*p, AddrSet::from_nets(family, [&net])))
            })
            .collect();
        for chain in &rs.chains {
            let web_accepts: Vec<&eval::Rule> = chain
                .rules
                .iter()
                .filter(|r| {
                    matches!(r.action, eval::Action::Verdict(Verdict::Accept))
                        && r.cond == eval::Cond::Yes
                        && ports.iter().any(|p| r.dports.iter().all(|m| m.matches(*p)))
                })
                .collect();
            // Which provider this chain allows, if any (≥ 3 rules inside its ranges).
            let mut owner: Option<Provider> = None;
            for (p, set) in &provider_sets {
                let n = web_accepts
                    .iter()
                    .filter(|r| {
                        r.src
                            .as_ref()
                            .is_some_and(|s| !s.is_empty() && s.subtract(set).is_empty())
                    })
                    .count();
                if n >= 3 {
                    owner = Some(*p);
                    break;
                }
            }
            for r in &web_accepts {
                let Some(src) = &r.src else { continue };
                if src.is_empty() || src.size() > family.max() / 2 {
                    continue;
                }
                let nets = src.to_nets();
                if nets.iter().any(|n| !is_public(n)) {
                    continue;
                }
                let retired_by = retired
                    .iter()
                    .find(|(_, s)| !src.intersect(s).subtract(&any_provider).is_empty());
                let stale = src.subtract(&any_provider);
                let who = match (retired_by, owner) {
                    (Some((p, _)), _) => Some((*p, "a range it has withdrawn")),
                    (None, Some(p)) if !stale.is_empty() => {
                        Some((p, "a range in its allow list that it does not publish now"))
                    }
                    _ => None,
                };
                if let Some((p, what)) = who {
                    findings.push(format!(
                        "{} trusts {} — {what} ({p})",
                        r.at.describe(),
                        stale.describe(6)
                    ));
                    let part = Part {
                        family,
                        ports: ports.to_vec(),
                        verdict: Verdict::Accept,
                        ranges: stale.to_nets(),
                        rule: r.at.clone(),
                    };
                    fixes.push(fix_for(&part, p, None));
                }
            }
        }
    }
    if findings.is_empty() {
        return Check::ok(id, Area::Firewall, title)
            .detail("no allow rule trusts a range the providers no longer publish");
    }
    Check::warn(id, Area::Firewall, title)
        .detail(format!(
            "anyone in these ranges may reach the origin directly as if they were the CDN: {}",
            findings.join("; ")
        ))
        .fix(fixes.join("\n"))
}

/// Not private, loopback, link-local or multicast.
pub fn is_public(net: &IpNet) -> bool {
    let a = net.network();
    match a {
        std::net::IpAddr::V4(v) => {
            !(v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_multicast()
                || v.is_unspecified()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v) => {
            let s = v.segments()[0];
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s & 0xfe00) == 0xfc00
                || (s & 0xffc0) == 0xfe80)
        }
    }
}

/// The human report's table per provider: allowed / blocked / partly blocked, and by what.
pub fn table_text(report: &FirewallReport) -> String {
    let mut out = String::new();
    for v in &report.providers {
        out.push_str(&format!(
            "{}: {}\n",
            v.provider,
            v.reach.label().to_uppercase()
        ));
        if v.reach == Reach::Unknown {
            out.push_str("  (no firewall rules could be read)\n");
            continue;
        }
        out.push_str(&format!(
            "  {:<5} {:<8} {:<7} {:<40} {}\n",
            "FAM", "PORTS", "VERDICT", "RANGES", "DECIDED BY"
        ));
        let mut rows: Vec<&Part> = v.blocked.iter().chain(v.allowed.iter()).collect();
        rows.sort_by_key(|p| (p.family, !p.verdict.blocks(), p.rule.clone()));
        for p in rows {
            let fam = match p.family {
                Family::V4 => "IPv4",
                Family::V6 => "IPv6",
            };
            out.push_str(&format!(
                "  {:<5} {:<8} {:<7} {:<40} {}\n",
                fam,
                ports_text(&p.ports),
                p.verdict.label(),
                nets_text(&p.ranges, 3),
                p.rule.describe()
            ));
        }
        for u in &v.uncertain {
            out.push_str(&format!(
                "  {:<5} {:<8} {:<7} {:<40} {} ({})\n",
                u.family.label(),
                ports_text(&u.ports),
                "MAYBE",
                nets_text(&u.ranges, 3),
                u.rule.describe(),
                u.reason
            ));
        }
        for b in &v.bans {
            out.push_str(&format!(
                "  {:<5} {:<8} {:<7} {:<40} fail2ban jail {}\n",
                if b.address.is_ipv4() { "IPv4" } else { "IPv6" },
                "all",
                "BANNED",
                b.address,
                b.jail
            ));
        }
    }
    out
}

/// The real-IP checks speak of Apache's mod_remoteip when Apache is the front.
fn apache_real_ip_checks(checks: &mut [Check]) {
    for c in checks.iter_mut() {
        let Some(rest) = c.id.strip_prefix("nginx.real-ip") else {
            continue;
        };
        c.id = format!("apache.remoteip{rest}");
        c.title = c.title.replace("nginx", "Apache httpd (mod_remoteip)");
        if c.fix.is_some() {
            c.fix = Some(
                "enable mod_remoteip (`a2enmod remoteip`) with `RemoteIPHeader` set to the CDN's header (CF-Connecting-IP for Cloudflare) and a `RemoteIPTrustedProxy` line for each of its published ranges (`origin-agent cdn show NAME`), then `apachectl graceful`".into(),
            );
        }
    }
}

/// The audit's glue: which CDNs to check (the config's `cdn.providers`, else the ones detected
/// from the access log and nginx's config), on which ports (the config's `cdn.ports`, else 80, 443
/// and every port nginx listens on), and the firewall checks and per-provider table that result.
pub fn audit_for(
    host: &dyn Host,
    config: &crate::config::Config,
    discovery: &crate::discover::Discovery,
    evidence: &crate::event::Evidence,
) -> (Vec<Check>, Option<String>) {
    let catalog = crate::cdn::load(&config.state_dir);
    let nginx = discovery.nginx.as_ref();
    let default_real_ip = RealIp::default();
    // Apache alone in front (nginx not running): its mod_remoteip is what restores visitors.
    let apache_front = discovery
        .apache
        .as_ref()
        .filter(|a| a.master.is_some() && nginx.is_none_or(|n| n.master.is_none()));
    let apache_real_ip = apache_front.map(|a| crate::discover::apache::as_real_ip(&a.remote_ip));
    let real_ip = apache_real_ip
        .as_ref()
        .or(nginx.map(|n| &n.real_ip))
        .unwrap_or(&default_real_ip);
    let empty_formats = BTreeMap::new();
    let formats = nginx.map_or(&empty_formats, |n| &n.log_formats);
    let mut checks = Vec::new();
    let providers: Vec<Provider> = match &config.cdn_providers {
        Some(names) => names.iter().filter_map(|n| Provider::parse(n)).collect(),
        None => {
            let mut detected = crate::cdn::detect(
                &catalog,
                &evidence.responses.clients,
                &real_ip.cdn_hints(),
                formats,
            );
            undetected::more_evidence(host, discovery, &mut detected);
            if !detected.is_empty() {
                let why: Vec<String> = detected
                    .iter()
                    .map(|(p, why)| format!("{p}: {why}"))
                    .collect();
                checks.push(
                    Check::ok("cdn.detected", Area::Cdn, "CDN in front of this origin")
                        .detail(why.join("; ")),
                );
            }
            detected.into_iter().map(|(p, _)| p).collect()
        }
    };
    let ports: Vec<u16> = match &config.cdn_ports {
        Some(ports) => ports.clone(),
        None => {
            let mut ports = vec![80, 443];
            if let Some(n) = nginx {
                ports.extend(
                    n.servers
                        .iter()
                        .flat_map(|s| s.listens.iter().filter_map(|l| l.port)),
                );
            }
            if let Some(a) = apache_front {
                ports.extend(a.ports());
            }
            ports.sort_unstable();
            ports.dedup();
            ports
        }
    };
    let input = FirewallInput {
        providers,
        ports,
        real_ip: apache_real_ip.as_ref().or(nginx.map(|n| &n.real_ip)),
        catalog: &catalog,
        access_clients: &evidence.responses.clients,
    };
    let mut report = audit(host, &input);
    if apache_front.is_some() {
        apache_real_ip_checks(&mut report.checks);
    }
    let table = (!report.providers.is_empty()).then(|| table_text(&report));
    checks.extend(report.checks);
    (checks, table)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn legacy_view_identical_to_main_is_counted_once_and_nft_skips_iptables_tables() {
        let ipt = "# Generated by iptables-save v1.8.9 (nf_tables) on x\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 173.245.48.0/20 -j DROP\nCOMMIT\n";
        let nft = r#"{"nftables":[{"table":{"family":"ip","name":"filter"}},{"chain":{"family":"ip","table":"filter","name":"INPUT","type":"filter","hook":"input","prio":0,"policy":"accept"}},{"rule":{"family":"ip","table":"filter","chain":"INPUT","handle":2,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"prefix":{"addr":"173.245.48.0","len":20}}}},{"drop":null}]}}]}"#;
        let texts = RuleTexts {
            iptables: Some(ipt.into()),
            iptables_legacy: Some(ipt.replace("nf_tables", "legacy")),
            nft_json: Some(nft.into()),
            ..Default::default()
        };
        let rs = build_rulesets(&texts);
        assert_eq!(rs.v4.rule_count(), 1);
        let cat = CdnCatalog::bundled();
        let v = evaluate_rules(&rs, &cat, &[Provider::Cloudflare], &[80, 443]);
        assert_eq!(v[0].reach, Reach::PartlyBlocked);
        assert_eq!(v[0].blocked.len(), 1);
        assert_eq!(v[0].blocked[0].ports, [80, 443]);
        assert_eq!(
            v[0].blocked[0].ranges,
            ["173.245.48.0/20".parse::<IpNet>().unwrap()]
        );
        // A legacy view with different rules is a second stage.
        let other = "# Generated by iptables-save v1.8.9 (legacy)\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 103.21.244.0/22 -j REJECT\nCOMMIT\n";
        let texts = RuleTexts {
            iptables: Some(ipt.into()),
            iptables_legacy: Some(other.into()),
            ..Default::default()
        };
        let rs = build_rulesets(&texts);
        let v = evaluate_rules(&rs, &cat, &[Provider::Cloudflare], &[443]);
        assert_eq!(v[0].blocked.len(), 2);
        assert!(v[0]
            .blocked
            .iter()
            .any(|b| b.rule.source == "iptables-legacy"));
        let table = table_text(&FirewallReport {
            checks: vec![],
            providers: v,
            sources: vec![],
            notes: vec![],
        });
        assert!(table.contains("cloudflare: PARTLY BLOCKED"), "{table}");
        assert!(table.contains("103.21.244.0/22"), "{table}");
    }

    #[test]
    fn stale_allow_rules_in_a_provider_allow_list() {
        let ipt = "*filter\n:INPUT DROP [0:0]\n:CLOUDFLARE - [0:0]\n:OFFICE - [0:0]\n\
            -A INPUT -p tcp -m multiport --dports 80,443 -j CLOUDFLARE\n\
            -A INPUT -p tcp --dport 22 -j OFFICE\n\
            -A CLOUDFLARE -s 173.245.48.0/20 -j ACCEPT\n\
            -A CLOUDFLARE -s 103.21.244.0/22 -j ACCEPT\n\
            -A CLOUDFLARE -s 104.16.0.0/13 -j ACCEPT\n\
            -A CLOUDFLARE -s 199.27.128.0/21 -j ACCEPT\n\
            -A CLOUDFLARE -s 198.51.100.0/24 -j ACCEPT\n\
            -A CLOUDFLARE -s 10.0.0.0/8 -j ACCEPT\n\
            -A OFFICE -s 203.0.113.0/24 -j ACCEPT\nCOMMIT\n";
        let rs = build_rulesets(&RuleTexts {
            iptables: Some(ipt.into()),
            ..Default::default()
        });
        let cat = CdnCatalog::bundled();
        let c = stale_allow_check(&rs, &cat, &[80, 443]);
        assert_eq!(c.status, crate::check::Status::Warn);
        assert!(
            c.detail
                .contains("rule 4: -A CLOUDFLARE -s 199.27.128.0/21"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("withdrawn"));
        assert!(c.detail.contains("198.51.100.0/24"));
        assert!(!c.detail.contains("10.0.0.0/8"));
        assert!(!c.detail.contains("203.0.113.0/24"));
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("iptables -t filter -D CLOUDFLARE -s 199.27.128.0/21 -j ACCEPT"),
            "{fix}"
        );
        // Without the stale entries the same chain is clean.
        let clean = ipt
            .lines()
            .filter(|l| !l.contains("199.27") && !l.contains("198.51"))
            .collect::<Vec<_>>()
            .join("\n");
        let rs = build_rulesets(&RuleTexts {
            iptables: Some(clean),
            ..Default::default()
        });
        assert_eq!(
            stale_allow_check(&rs, &cat, &[80, 443]).status,
            crate::check::Status::Ok
        );
    }

    #[test]
    fn a_family_whose_rules_could_not_be_read_is_not_called_allowed() {
        let rs = build_rulesets(&RuleTexts {
            iptables: Some("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n".into()),
            ..Default::default()
        });
        assert_eq!(rs.unread, [Family::V6]);
        let v = evaluate_rules(&rs, &CdnCatalog::bundled(), &[Provider::Cloudflare], &[443]);
        assert!(v[0].allowed.iter().all(|p| p.family == Family::V4));
        assert!(!v[0].allowed.is_empty());
    }

    #[test]
    fn docker_published_ports_are_noted() {
        let texts = RuleTexts {
            iptables: Some(
                include_str!("../../../tests/fixtures/firewall/ufw-f2b-docker/iptables-save.txt")
                    .into(),
            ),
            ..Default::default()
        };
        let rs = build_rulesets(&texts);
        assert_eq!(
            dnat_ports(&rs, &[80, 443, 8080]),
            [(8080, "172.17.0.2:80".to_string())]
        );
        assert!(dnat_ports(&rs, &[80, 443]).is_empty());
        let (path, _) = rs.path(Family::V4, 8080);
        assert_eq!((path.hook, path.port_after_dnat), (eval::Hook::Forward, 80));
        // Port 8080 goes to the container through FORWARD: docker's own rule accepts it
        // (ufw's INPUT rules do not apply), after DOCKER-USER returned it.
        let v = evaluate_rules(
            &rs,
            &CdnCatalog::bundled(),
            &[Provider::Cloudflare],
            &[8080],
        );
        assert!(v[0].blocked.is_empty(), "{:#?}", v[0].blocked);
        assert!(v[0]
            .allowed
            .iter()
            .all(|a| a.rule.chain == "DOCKER" && a.rule.text.contains("--dport 80")));
    }
}
