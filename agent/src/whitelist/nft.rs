//! The nftables back end of the whitelist: one named interval set per provider and family
//! (`oa_cdn_cloudflare_v4`) in the table of the input chain that decides (the native base chain on
//! the input hook with a drop policy or drop rules), and one rule per provider and family at the
//! top of that chain, `ip saddr @oa_cdn_cloudflare_v4 tcp dport { 80, 443 } accept comment
//! "origin-agent:cloudflare"`. Every change, both families together, is one `nft -f -`
//! transaction: set elements added and deleted one by one (never flush-and-refill), so a connection
//! from a range that stays is never refused in between.
//!
//! The state is read from `nft -j list ruleset`. Tables that iptables-nft owns are not "native"
//! and never chosen.

use std::collections::{BTreeMap, HashSet};

use ipnet::IpNet;
use serde_json::Value;

use std::path::{Path, PathBuf};

use super::backend::{
    diff_lines, lines, restore_plan, ApplyError, FirewallBackend, NotPersisted, Restored,
};
use super::saves::{nft_cmd, run_ok, Saves};
use super::state::SavedState;
use super::{ipt, Backend, Change, FamilyPlan, ProviderList, WhitelistError, WhitelistRequest};
use crate::addrset::{net_bounds, parse_net, AddrSet, Family};
use crate::cdn::Provider;
use crate::host::{Command, Host, HostExt};

/// The comment prefix that marks a rule as the agent's.
pub const TAG: &str = "origin-agent";

/// The chain the agent's rules go into.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NftChain {
    pub family: String,
    pub table: String,
    pub name: String,
}

impl NftChain {
    fn covers(&self, family: Family) -> bool {
        match self.family.as_str() {
            "ip" => family == Family::V4,
            "ip6" => family == Family::V6,
            _ => true,
        }
    }

    fn prefix(&self) -> String {
        format!("{} {}", self.family, self.table)
    }
}

/// One element of an interval set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    pub lo: u128,
    pub hi: u128,
    /// As nft prints it: `1.2.3.0/24`, `1.2.3.4`, `1.2.3.4-1.2.3.9`.
    pub text: String,
}

/// What an agent-made rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRule {
    pub provider: Provider,
    pub family: Family,
    pub ports: Vec<u16>,
}

/// A rule of the deciding chain, in chain order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NRule {
    pub handle: u64,
    pub owned: Option<OwnedRule>,
}

/// The agent's objects around the deciding chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftState {
    /// The agent's sets in the chain's table, by name.
    pub sets: BTreeMap<String, Vec<Elem>>,
    pub rules: Vec<NRule>,
}

/// The set name for a provider and family (nft names allow letters, digits and `_`).
pub fn set_name(p: Provider, family: Family) -> String {
    let f = match family {
        Family::V4 => "v4",
        Family::V6 => "v6",
    };
    format!("oa_cdn_{}_{f}", p.name().replace('-', "_"))
}

fn provider_of_set(name: &str) -> Option<(Provider, Family)> {
    let rest = name.strip_prefix("oa_cdn_")?;
    let (p, f) = rest.rsplit_once('_')?;
    let family = match f {
        "v4" => Family::V4,
        "v6" => Family::V6,
        _ => return None,
    };
    let p = Provider::ALL
        .iter()
        .copied()
        .find(|x| x.name().replace('-', "_") == p)?;
    Some((p, family))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn items(doc: &Value) -> &[Value] {
    doc.get("nftables")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn is_blocking_rule(rule: &Value) -> bool {
    rule.get("expr").and_then(Value::as_array).is_some_and(|e| {
        e.iter()
            .any(|x| x.get("drop").is_some() || x.get("reject").is_some())
    })
}

/// The native input chain that decides: a filter base chain on the input hook, not in a table
/// iptables-nft owns (`skip`), with a drop policy (first choice) or drop/reject rules; the one
/// with the lowest priority wins. `None` when no native chain blocks anything.
pub fn deciding_chain(doc: &Value, skip: &HashSet<(String, String)>) -> Option<NftChain> {
    let mut best: Option<(u8, i64, NftChain)> = None;
    for item in items(doc) {
        let Some(c) = item.get("chain") else { continue };
        if s(c, "hook") != "input" || s(c, "type") != "filter" {
            continue;
        }
        let chain = NftChain {
            family: s(c, "family").to_string(),
            table: s(c, "table").to_string(),
            name: s(c, "name").to_string(),
        };
        if !matches!(chain.family.as_str(), "ip" | "ip6" | "inet")
            || skip.contains(&(chain.family.clone(), chain.table.clone()))
        {
            continue;
        }
        let rank = if s(c, "policy") == "drop" {
            0
        } else if rules_of(doc, &chain).any(is_blocking_rule) {
            1
        } else {
            continue;
        };
        let prio = c.get("prio").and_then(Value::as_i64).unwrap_or(0);
        if best
            .as_ref()
            .is_none_or(|(r, p, _)| (rank, prio) < (*r, *p))
        {
            best = Some((rank, prio, chain));
        }
    }
    best.map(|(_, _, c)| c)
}

fn rules_of<'a>(doc: &'a Value, chain: &'a NftChain) -> impl Iterator<Item = &'a Value> + 'a {
    items(doc).iter().filter_map(move |i| {
        let r = i.get("rule")?;
        (s(r, "family") == chain.family
            && s(r, "table") == chain.table
            && s(r, "chain") == chain.name)
            .then_some(r)
    })
}

fn elem(v: &Value, family: Family) -> Option<Elem> {
    let v = v.get("elem").and_then(|e| e.get("val")).unwrap_or(v);
    if let Some(a) = v.as_str() {
        let net = parse_net(a)?;
        let (lo, hi) = net_bounds(&net);
        return Some(Elem {
            lo,
            hi,
            text: a.to_string(),
        });
    }
    if let Some(p) = v.get("prefix") {
        let text = format!("{}/{}", s(p, "addr"), p.get("len")?.as_u64()?);
        let net = parse_net(&text)?;
        let (lo, hi) = net_bounds(&net);
        return Some(Elem { lo, hi, text });
    }
    if let Some(r) = v.get("range").and_then(Value::as_array) {
        let a = parse_net(r.first()?.as_str()?)?;
        let b = parse_net(r.get(1)?.as_str()?)?;
        if Family::of(&a) != family {
            return None;
        }
        return Some(Elem {
            lo: net_bounds(&a).0,
            hi: net_bounds(&b).1,
            text: format!("{}-{}", r.first()?.as_str()?, r.get(1)?.as_str()?),
        });
    }
    None
}

fn owned_rule(r: &Value) -> Option<OwnedRule> {
    let comment = s(r, "comment");
    let provider = Provider::parse(comment.strip_prefix(TAG)?.strip_prefix(':')?)?;
    let exprs = r.get("expr")?.as_array()?;
    let mut set = None;
    let mut ports = Vec::new();
    let mut accept = false;
    for e in exprs {
        if e.get("accept").is_some() {
            accept = true;
        }
        let Some(m) = e.get("match") else { continue };
        let field = m
            .get("left")
            .and_then(|l| l.get("payload"))
            .map(|p| (s(p, "protocol"), s(p, "field")));
        match field {
            Some(("ip" | "ip6", "saddr")) => {
                set = m.get("right").and_then(Value::as_str).map(str::to_string);
            }
            Some(("tcp", "dport")) => {
                let right = m.get("right")?;
                if let Some(n) = right.as_u64() {
                    ports.push(u16::try_from(n).ok()?);
                } else {
                    for p in right.get("set")?.as_array()? {
                        ports.push(u16::try_from(p.as_u64()?).ok()?);
                    }
                }
            }
            _ => {}
        }
    }
    let (p, family) = provider_of_set(set?.strip_prefix('@')?)?;
    if p != provider || !accept {
        return None;
    }
    ports.sort_unstable();
    Some(OwnedRule {
        provider,
        family,
        ports,
    })
}

/// Reads the agent's sets and the chain's rules.
pub fn read_state(doc: &Value, chain: &NftChain) -> NftState {
    let mut st = NftState::default();
    for item in items(doc) {
        let Some(set) = item.get("set") else { continue };
        if s(set, "family") != chain.family || s(set, "table") != chain.table {
            continue;
        }
        let name = s(set, "name");
        let Some((_, family)) = provider_of_set(name) else {
            continue;
        };
        let elems = set
            .get("elem")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|e| elem(e, family)).collect())
            .unwrap_or_default();
        st.sets.insert(name.to_string(), elems);
    }
    for r in rules_of(doc, chain) {
        st.rules.push(NRule {
            handle: r.get("handle").and_then(Value::as_u64).unwrap_or(0),
            owned: owned_rule(r),
        });
    }
    st
}

fn rule_text(chain: &NftChain, o: &OwnedRule, verb: &str) -> String {
    let proto = match o.family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    let ports = o
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{verb} {} {} {proto} saddr @{} tcp dport {{ {ports} }} accept comment \"{TAG}:{}\"",
        chain.prefix(),
        chain.name,
        set_name(o.provider, o.family),
        o.provider
    )
}

fn set_decl(chain: &NftChain, name: &str, family: Family) -> String {
    let ty = match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    };
    format!(
        "add set {} {name} {{ type {ty}; flags interval; }}",
        chain.prefix()
    )
}

/// Plans both families. Each plan's script holds its family's commands; the apply runs the
/// scripts of both families as one `nft -f` transaction.
pub fn plan(
    chain: &NftChain,
    current: &NftState,
    lists: &[ProviderList],
    ports: &[u16],
) -> Vec<FamilyPlan> {
    let requested: HashSet<Provider> = lists.iter().map(|(p, _, _)| *p).collect();
    // The agent's rules must all come before every other rule of the chain.
    let first_other = current
        .rules
        .iter()
        .position(|r| r.owned.is_none())
        .unwrap_or(current.rules.len());
    let on_top = current.rules[first_other..]
        .iter()
        .all(|r| r.owned.is_none());
    let mut plans = Vec::new();
    for family in [Family::V4, Family::V6] {
        if !chain.covers(family) {
            continue;
        }
        let mut lines = Vec::new();
        let mut add = Vec::new();
        let mut remove = Vec::new();
        let mut unchanged = 0;
        let mut structure = Vec::new();
        for (p, v4, v6) in lists {
            let nets = if family == Family::V4 { v4 } else { v6 };
            let name = set_name(*p, family);
            let desired = AddrSet::from_nets(family, nets);
            let existing = current.sets.get(&name);
            let rules: Vec<&NRule> = current
                .rules
                .iter()
                .filter(|r| {
                    r.owned
                        .as_ref()
                        .is_some_and(|o| o.provider == *p && o.family == family)
                })
                .collect();
            if desired.is_empty() && existing.is_none() && rules.is_empty() {
                continue;
            }
            let mut kept = AddrSet::empty(family);
            let mut gone = Vec::new();
            if let Some(elems) = existing {
                for e in elems {
                    let one = AddrSet::from_intervals(family, vec![(e.lo, e.hi)]);
                    if one.subtract(&desired).is_empty() {
                        kept = kept.union(&one);
                        unchanged += 1;
                    } else {
                        gone.push(e.text.clone());
                        for net in one.to_nets() {
                            remove.push(Change { provider: *p, net });
                        }
                    }
                }
            } else {
                lines.push(set_decl(chain, &name, family));
                structure.push(format!("create set {name} in {}", chain.prefix()));
            }
            if !gone.is_empty() {
                lines.push(format!(
                    "delete element {} {name} {{ {} }}",
                    chain.prefix(),
                    gone.join(", ")
                ));
            }
            let new: Vec<IpNet> = desired.subtract(&kept).to_nets();
            if !new.is_empty() {
                lines.push(format!(
                    "add element {} {name} {{ {} }}",
                    chain.prefix(),
                    new.iter()
                        .map(IpNet::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                add.extend(new.into_iter().map(|net| Change { provider: *p, net }));
            }
            let want = OwnedRule {
                provider: *p,
                family,
                ports: ports.to_vec(),
            };
            let rule_ok = on_top
                && rules.len() == 1
                && rules.first().and_then(|r| r.owned.as_ref()) == Some(&want);
            if !rule_ok {
                for r in &rules {
                    lines.push(format!(
                        "delete rule {} {} handle {}",
                        chain.prefix(),
                        chain.name,
                        r.handle
                    ));
                }
                lines.push(rule_text(chain, &want, "insert rule"));
                structure.push(format!(
                    "{} the rule for {p} at the top of {} {}",
                    if rules.is_empty() {
                        "insert"
                    } else {
                        "replace"
                    },
                    chain.prefix(),
                    chain.name
                ));
            }
        }
        // Rules of providers not requested are moved to the top too when they are not there.
        if !on_top {
            for r in &current.rules {
                if let Some(o) = &r.owned {
                    if o.family == family && !requested.contains(&o.provider) {
                        lines.push(format!(
                            "delete rule {} {} handle {}",
                            chain.prefix(),
                            chain.name,
                            r.handle
                        ));
                        lines.push(rule_text(chain, o, "insert rule"));
                    }
                }
            }
        }
        let mut script = String::new();
        for l in lines {
            script.push_str(&l);
            script.push('\n');
        }
        plans.push(FamilyPlan {
            family,
            add,
            remove,
            unchanged,
            structure,
            script,
            pre_script: String::new(),
        });
    }
    plans
}

/// The script that puts the agent's objects back as they were in `saved`: its rules at their
/// places, its sets with their elements, and nothing of the agent's that was not there.
pub fn restore_script(chain: &NftChain, current: &NftState, saved: &NftState) -> Option<String> {
    if current == saved {
        return None;
    }
    let mut lines = Vec::new();
    for r in &current.rules {
        if r.owned.is_some() {
            lines.push(format!(
                "delete rule {} {} handle {}",
                chain.prefix(),
                chain.name,
                r.handle
            ));
        }
    }
    for name in current.sets.keys() {
        if saved.sets.contains_key(name) {
            lines.push(format!("flush set {} {name}", chain.prefix()));
        } else {
            lines.push(format!("delete set {} {name}", chain.prefix()));
        }
    }
    for (name, elems) in &saved.sets {
        if !current.sets.contains_key(name) {
            let family = provider_of_set(name).map_or(Family::V4, |(_, f)| f);
            lines.push(set_decl(chain, name, family));
        }
        if !elems.is_empty() {
            lines.push(format!(
                "add element {} {name} {{ {} }}",
                chain.prefix(),
                elems
                    .iter()
                    .map(|e| e.text.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    // Saved agent rules, each run anchored after the rule before it (or at the top).
    let mut i = 0;
    while i < saved.rules.len() {
        if saved.rules[i].owned.is_none() {
            i += 1;
            continue;
        }
        let start = i;
        while i < saved.rules.len() && saved.rules[i].owned.is_some() {
            i += 1;
        }
        let anchor = start.checked_sub(1).map(|a| saved.rules[a].handle);
        for r in saved.rules[start..i].iter().rev() {
            let Some(o) = &r.owned else { continue };
            match anchor {
                None => lines.push(rule_text(chain, o, "insert rule")),
                Some(h) => {
                    let text = rule_text(chain, o, "add rule");
                    let head = format!("add rule {} {} ", chain.prefix(), chain.name);
                    let tail = text.strip_prefix(&head).unwrap_or(&text);
                    lines.push(format!("{head}position {h} {tail}"));
                }
            }
        }
    }
    let mut script = String::new();
    for l in lines {
        script.push_str(&l);
        script.push('\n');
    }
    Some(script)
}

/// The include `--persist` writes: the agent's sets with their elements and its rules, as `nft`
/// commands that run after the host's own configuration has created the table and chain.
pub fn persist_text(chain: &NftChain, st: &NftState) -> String {
    let mut s = String::from(
        "# Written by origin-agent (`origin-agent whitelist --persist`): the CDN whitelist,\n# loaded after the tables above it. Regenerated on every apply and rollback; do not edit.\n",
    );
    for (name, elems) in &st.sets {
        let family = provider_of_set(name).map_or(Family::V4, |(_, f)| f);
        s.push_str(&set_decl(chain, name, family));
        s.push('\n');
        if !elems.is_empty() {
            s.push_str(&format!(
                "add element {} {name} {{ {} }}\n",
                chain.prefix(),
                elems
                    .iter()
                    .map(|e| e.text.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for r in st.rules.iter().rev() {
        if let Some(o) = &r.owned {
            s.push_str(&rule_text(chain, o, "insert rule"));
            s.push('\n');
        }
    }
    s
}

/// The ruleset JSON without the agent's objects, handles and counters: what must be identical
/// before and after an apply.
pub fn without_own(doc: &Value, chain: &NftChain) -> Vec<String> {
    let mut out = Vec::new();
    for item in items(doc) {
        if item.get("metainfo").is_some() {
            continue;
        }
        if let Some(set) = item.get("set") {
            if s(set, "family") == chain.family
                && s(set, "table") == chain.table
                && provider_of_set(s(set, "name")).is_some()
            {
                continue;
            }
        }
        if let Some(r) = item.get("rule") {
            if s(r, "family") == chain.family
                && s(r, "table") == chain.table
                && s(r, "chain") == chain.name
                && owned_rule(r).is_some()
            {
                continue;
            }
        }
        let mut v = item.clone();
        scrub(&mut v);
        out.push(v.to_string());
    }
    out
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("handle");
            if let Some(Value::Object(c)) = map.get_mut("counter") {
                c.remove("packets");
                c.remove("bytes");
            }
            for (_, x) in map.iter_mut() {
                scrub(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// The nftables back end: per-provider interval sets and an accept rule at the top of the input
/// chain that decides, changed with one `nft -f` transaction.
#[derive(Debug, Clone)]
pub struct Nftables {
    pub chain: NftChain,
}

impl Nftables {
    fn states(&self, current: &Saves, before: &Saves) -> Option<(NftState, NftState)> {
        let (cur, old) = (current.nft_doc()?, before.nft_doc()?);
        Some((read_state(&cur, &self.chain), read_state(&old, &self.chain)))
    }
}

/// The boot-time nftables configuration `--persist` writes to.
pub fn conf_of(req: &WhitelistRequest) -> PathBuf {
    req.nft_conf
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/nftables.conf"))
}

impl FirewallBackend for Nftables {
    fn kind(&self) -> Backend {
        Backend::Nftables
    }

    fn describe(&self) -> String {
        let c = &self.chain;
        format!(
            "back end: nftables (sets and rules in the deciding chain {} {} {})",
            c.family, c.table, c.name
        )
    }

    fn notes(&self, _saves: &Saves) -> Vec<String> {
        if self.chain.family == "ip" {
            vec![format!(
                "IPv6 left out: the deciding chain is in the ip (IPv4) table {}",
                self.chain.table
            )]
        } else {
            Vec::new()
        }
    }

    fn plan(&self, saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Vec<FamilyPlan> {
        let doc = saves.nft_doc().unwrap_or(Value::Null);
        plan(&self.chain, &read_state(&doc, &self.chain), lists, ports)
    }

    fn commands(&self, plans: &[FamilyPlan]) -> Vec<String> {
        if plans.iter().any(|p| !p.is_empty()) {
            vec!["nft -f -".to_string()]
        } else {
            Vec::new()
        }
    }

    fn apply(
        &self,
        host: &dyn Host,
        plans: &[FamilyPlan],
        _before: &Saves,
        _lists: &[ProviderList],
        _ports: &[u16],
    ) -> Result<(), ApplyError> {
        let script: String = plans.iter().map(|p| p.script.as_str()).collect();
        run_ok(host, &nft_cmd(&script))
            .map(drop)
            .map_err(|source| ApplyError::NotApplied {
                source,
                what: "the transaction was not applied".into(),
            })
    }

    fn restore_to(&self, host: &dyn Host, before: &Saves) -> Restored {
        let current = match Saves::read(host) {
            Ok(s) => s,
            Err(e) => return Restored::failed("NOT restored", "nftables (cannot read)", e),
        };
        let Some((cur, old)) = self.states(&current, before) else {
            return Restored::failed(
                "NOT restored",
                "nftables",
                WhitelistError::Command {
                    command: "nft -j list ruleset".into(),
                    message: "no ruleset to compare".into(),
                },
            );
        };
        let Some(script) = restore_script(&self.chain, &cur, &old) else {
            return Restored::new("nothing had changed");
        };
        match run_ok(host, &nft_cmd(&script)) {
            Ok(_) => Restored::new("nftables restored"),
            Err(e) => Restored::failed("nftables NOT restored", "nftables", e),
        }
    }

    fn rollback_plans(&self, current: &Saves, before: &Saves) -> Vec<FamilyPlan> {
        let Some((cur, old)) = self.states(current, before) else {
            return Vec::new();
        };
        vec![restore_plan(
            Family::V4,
            "restore the agent's sets and rules as saved",
            restore_script(&self.chain, &cur, &old).unwrap_or_default(),
        )]
    }

    fn other_changes(&self, before: &Saves, after: &Saves) -> Vec<String> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            if let (Some(b), Some(a)) = (before.get(family), after.get(family)) {
                diff_lines(
                    &mut out,
                    family.label(),
                    lines(&ipt::normalized(b)),
                    lines(&ipt::normalized(a)),
                );
            }
        }
        if let (Some(b), Some(a)) = (before.nft_doc(), after.nft_doc()) {
            diff_lines(
                &mut out,
                "nftables",
                without_own(&b, &self.chain),
                without_own(&a, &self.chain),
            );
        }
        out
    }

    fn persist(&self, host: &dyn Host, req: &WhitelistRequest) -> Result<String, NotPersisted> {
        persist(host, &self.chain, &conf_of(req)).map_err(NotPersisted)
    }

    fn record(&self, state: &mut SavedState, req: &WhitelistRequest, persisted: bool) {
        state.nft_chain = Some(self.chain.clone());
        if persisted {
            state.nft_conf = Some(conf_of(req));
        }
    }
}

/// Writes the agent's include for the boot-time nftables configuration and makes `conf` include
/// it (once); `nft -c -f conf` must accept the result, or both files are put back.
fn persist(host: &dyn Host, chain: &NftChain, conf: &Path) -> Result<String, String> {
    let doc = Saves::read(host)
        .map_err(|e| e.to_string())?
        .nft_doc()
        .ok_or("cannot read the nftables ruleset")?;
    let text = persist_text(chain, &read_state(&doc, chain));
    let dir = conf
        .parent()
        .unwrap_or(Path::new("/etc"))
        .join("nftables.d");
    let include = dir.join("origin-agent-cdn.nft");
    let old_conf = host.read_text(conf).map_err(|e| e.to_string())?;
    let old_include = host.read(&include).ok();
    let line = format!("include \"{}\"", include.display());
    let new_conf = if old_conf.lines().any(|l| l.trim() == line) {
        None
    } else {
        let mut c = old_conf.clone();
        if !c.ends_with('\n') && !c.is_empty() {
            c.push('\n');
        }
        c.push_str(&format!(
            "# origin-agent CDN whitelist (origin-agent whitelist --persist)\n{line}\n"
        ));
        Some(c)
    };
    host.create_dir_all(&dir).map_err(|e| e.to_string())?;
    host.write_atomic(&include, text.as_bytes())
        .map_err(|e| e.to_string())?;
    if let Some(c) = &new_conf {
        host.write_atomic(conf, c.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let conf_s = conf.display().to_string();
    let check = run_ok(host, &Command::new("nft", &["-c", "-f", &conf_s]));
    if let Err(e) = check {
        let _ = host.write_atomic(conf, old_conf.as_bytes());
        let _ = match &old_include {
            Some(t) => host.write_atomic(&include, t),
            None => host.remove_file(&include),
        };
        return Err(format!(
            "`nft -c -f {conf_s}` rejected the include, both files put back: {e}"
        ));
    }
    Ok(format!(
        "nftables: {} (included from {}, checked with nft -c)",
        include.display(),
        conf.display()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DOC: &str = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
 {"table":{"family":"inet","name":"filter","handle":1}},
 {"set":{"family":"inet","name":"oa_cdn_cloudflare_v4","table":"filter","type":"ipv4_addr","handle":4,"flags":["interval"],
   "elem":[{"prefix":{"addr":"173.245.48.0","len":20}},{"prefix":{"addr":"199.27.128.0","len":21}},"1.2.3.4"]}},
 {"chain":{"family":"inet","table":"filter","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},
 {"chain":{"family":"ip","table":"filter","name":"INPUT","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},
 {"rule":{"family":"inet","table":"filter","chain":"input","handle":6,"comment":"origin-agent:cloudflare","expr":[
   {"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"@oa_cdn_cloudflare_v4"}},
   {"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":{"set":[80,443]}}},
   {"accept":null}]}},
 {"rule":{"family":"inet","table":"filter","chain":"input","handle":2,"expr":[{"match":{"op":"==","left":{"meta":{"key":"iif"}},"right":"lo"}},{"accept":null}]}},
 {"rule":{"family":"inet","table":"filter","chain":"input","handle":3,"expr":[{"counter":{"packets":5,"bytes":300}},{"drop":null}]}}
]}"#;

    fn doc() -> Value {
        serde_json::from_str(DOC).unwrap()
    }

    fn skip_ip_filter() -> HashSet<(String, String)> {
        [("ip".to_string(), "filter".to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn the_native_drop_policy_chain_decides_and_iptables_nft_tables_are_skipped() {
        let c = deciding_chain(&doc(), &skip_ip_filter()).unwrap();
        assert_eq!((c.family.as_str(), c.name.as_str()), ("inet", "input"));
        assert!(deciding_chain(&serde_json::json!({"nftables": []}), &HashSet::new()).is_none());
    }

    #[test]
    fn reads_sets_and_owned_rules() {
        let c = deciding_chain(&doc(), &skip_ip_filter()).unwrap();
        let st = read_state(&doc(), &c);
        assert_eq!(st.sets["oa_cdn_cloudflare_v4"].len(), 3);
        assert_eq!(st.rules.len(), 3);
        let o = st.rules[0].owned.clone().unwrap();
        assert_eq!(
            (o.provider, o.family, o.ports),
            (Provider::Cloudflare, Family::V4, vec![80, 443])
        );
        assert!(st.rules[1].owned.is_none());
    }

    #[test]
    fn plan_deletes_dropped_elements_adds_new_ones_and_keeps_the_rule() {
        let c = deciding_chain(&doc(), &skip_ip_filter()).unwrap();
        let st = read_state(&doc(), &c);
        let lists = vec![(
            Provider::Cloudflare,
            vec![
                "173.245.48.0/20".parse().unwrap(),
                "103.21.244.0/22".parse().unwrap(),
            ],
            vec!["2400:cb00::/32".parse().unwrap()],
        )];
        let plans = plan(&c, &st, &lists, &[80, 443]);
        let v4 = &plans[0];
        assert!(
            v4.script.contains(
                "delete element inet filter oa_cdn_cloudflare_v4 { 199.27.128.0/21, 1.2.3.4 }"
            ),
            "{}",
            v4.script
        );
        assert!(v4
            .script
            .contains("add element inet filter oa_cdn_cloudflare_v4 { 103.21.244.0/22 }"));
        assert!(!v4.script.contains("rule"), "{}", v4.script);
        assert_eq!(v4.unchanged, 1);
        let v6 = &plans[1];
        assert!(v6.script.contains(
            "add set inet filter oa_cdn_cloudflare_v6 { type ipv6_addr; flags interval; }"
        ));
        assert!(v6.script.contains("insert rule inet filter input ip6 saddr @oa_cdn_cloudflare_v6 tcp dport { 80, 443 } accept comment \"origin-agent:cloudflare\""));
    }

    #[test]
    fn restore_removes_what_was_not_there_and_anchors_saved_rules() {
        let c = deciding_chain(&doc(), &skip_ip_filter()).unwrap();
        let applied = read_state(&doc(), &c);
        let none = NftState {
            sets: BTreeMap::new(),
            rules: applied.rules[1..].to_vec(),
        };
        let back = restore_script(&c, &applied, &none).unwrap();
        assert!(back.contains("delete rule inet filter input handle 6"));
        assert!(back.contains("delete set inet filter oa_cdn_cloudflare_v4"));
        let forward = restore_script(&c, &none, &applied).unwrap();
        assert!(forward.contains("add set inet filter oa_cdn_cloudflare_v4"));
        assert!(forward.contains("insert rule inet filter input ip saddr @oa_cdn_cloudflare_v4"));
        let mut later = applied.clone();
        later.rules.swap(0, 1);
        let anchored = restore_script(&c, &none, &later).unwrap();
        assert!(
            anchored.contains("add rule inet filter input position 2 ip saddr"),
            "{anchored}"
        );
    }

    #[test]
    fn comparison_ignores_handles_counters_and_own_objects() {
        let c = deciding_chain(&doc(), &skip_ip_filter()).unwrap();
        let a = without_own(&doc(), &c);
        let b = without_own(
            &serde_json::from_str(&DOC.replace("\"packets\":5", "\"packets\":9")).unwrap(),
            &c,
        );
        assert_eq!(a, b);
        assert!(!a.iter().any(|l| l.contains("oa_cdn")));
        assert_eq!(a.len(), 5);
    }
}
