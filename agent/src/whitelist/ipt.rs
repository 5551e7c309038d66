//! The iptables / ip6tables back end of the whitelist: reads the agent's own objects out of
//! `iptables-save` text (the `ORIGIN-AGENT-CDN` chain in the filter table and the jumps to it from
//! `INPUT`), and writes `iptables-restore --noflush` fragments that move them to the desired state
//! (apply) or back to a saved one (rollback) in one atomic transaction per family.
//!
//! Ownership is by marking: a rule in the chain is the agent's when its comment is
//! `origin-agent:PROVIDER`; any other rule there (someone added it by hand) is left alone on apply.
//! A jump is recognised by its target. Deletions use the rule text exactly as `iptables-save`
//! printed it, so a rule that changed meanwhile makes the whole transaction fail instead of
//! deleting something else.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::backend::{
    diff_lines, lines, restore_plan, ApplyError, FirewallBackend, NotPersisted, RestoreFailure,
    Restored,
};
use super::ipsets;
use super::saves::{ipset_cmd, read_save, restore_cmd, run_ok, Saves};
use super::{Backend, Change, FamilyPlan, ProviderList, WhitelistRequest};
use crate::addrset::{parse_net, Family};
use crate::cdn::Provider;
use crate::firewall::iptables::tokenize;
use crate::host::{Command, Host};

/// The agent's chain, in the filter table of both families.
pub const CHAIN: &str = "ORIGIN-AGENT-CDN";
/// The comment prefix that marks a rule as the agent's.
pub const TAG: &str = "origin-agent";

/// One rule of the agent's chain as `iptables-save` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRule {
    /// The whole line, `-A ORIGIN-AGENT-CDN …`.
    pub line: String,
    /// Set when the rule carries the agent's comment and has the agent's shape.
    pub owned: Option<OwnedRule>,
    /// Set when it is the agent's rule matching one of its ipsets.
    pub set_owned: Option<SetRule>,
}

/// An agent-made rule that accepts the sources in one of the agent's ipsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRule {
    pub provider: Provider,
    pub set: String,
    pub ports: String,
}

/// What an agent-made rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRule {
    pub provider: Provider,
    pub net: IpNet,
    /// The `--dports` text (`80,443`).
    pub ports: String,
}

/// The agent's objects in one family's filter table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptState {
    pub chain_exists: bool,
    pub rules: Vec<ChainRule>,
    /// The jumps from INPUT to the chain: (1-based position in INPUT, the line).
    pub jumps: Vec<(usize, String)>,
}

/// Reads the agent's objects out of `iptables-save` (or `ip6tables-save`) text. Text it cannot
/// read is ignored: only lines of the filter table that name the chain matter.
pub fn read_state(save: &str) -> IptState {
    let mut st = IptState::default();
    let mut in_filter = false;
    let mut input_pos = 0usize;
    for line in save.lines() {
        let line = line.trim();
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table.trim() == "filter";
            continue;
        }
        if !in_filter {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            if decl.split_whitespace().next() == Some(CHAIN) {
                st.chain_exists = true;
            }
            continue;
        }
        let Some(body) = line.strip_prefix("-A ") else {
            continue;
        };
        let words = tokenize(body);
        let Some(chain) = words.first() else { continue };
        if chain == "INPUT" {
            input_pos += 1;
            if target(&words) == Some(CHAIN) {
                st.jumps.push((input_pos, line.to_string()));
            }
        } else if chain == CHAIN {
            st.rules.push(ChainRule {
                line: line.to_string(),
                owned: owned_rule(&words),
                set_owned: set_rule(&words),
            });
        }
    }
    st
}

fn option<'a>(words: &'a [String], name: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| w == name)
        .and_then(|i| words.get(i + 1))
        .map(String::as_str)
}

fn target(words: &[String]) -> Option<&str> {
    option(words, "-j")
}

fn owned_rule(words: &[String]) -> Option<OwnedRule> {
    let comment = option(words, "--comment")?;
    let provider = Provider::parse(comment.strip_prefix(TAG)?.strip_prefix(':')?)?;
    if target(words) != Some("ACCEPT") || words.iter().any(|w| w == "!") {
        return None;
    }
    let net = parse_net(option(words, "-s")?)?;
    let ports = option(words, "--dports")?.to_string();
    Some(OwnedRule {
        provider,
        net,
        ports,
    })
}

fn set_rule(words: &[String]) -> Option<SetRule> {
    let comment = option(words, "--comment")?;
    let provider = Provider::parse(comment.strip_prefix(TAG)?.strip_prefix(':')?)?;
    if target(words) != Some("ACCEPT")
        || words.iter().any(|w| w == "!")
        || option(words, "-s").is_some()
    {
        return None;
    }
    let i = words.iter().position(|w| w == "--match-set")?;
    let set = words.get(i + 1)?.clone();
    if words.get(i + 2).map(String::as_str) != Some("src")
        || !set.starts_with(super::ipsets::PREFIX)
    {
        return None;
    }
    let ports = option(words, "--dports")?.to_string();
    Some(SetRule {
        provider,
        set,
        ports,
    })
}

/// The rule the agent writes for a provider's ipset, in the form `iptables-save` prints it.
pub fn set_rule_line(provider: Provider, set: &str, ports: &str) -> String {
    format!(
        "-A {CHAIN} -p tcp -m multiport --dports {ports} -m set --match-set {set} src -m comment --comment \"{TAG}:{provider}\" -j ACCEPT"
    )
}

/// The rule the agent writes for one range, in the form `iptables-save` prints it back.
pub fn rule_line(provider: Provider, net: &IpNet, ports: &str) -> String {
    format!(
        "-A {CHAIN} -s {net} -p tcp -m multiport --dports {ports} -m comment --comment \"{TAG}:{provider}\" -j ACCEPT"
    )
}

fn jump_rule(op: &str) -> String {
    format!("{op} -m comment --comment {TAG} -j {CHAIN}")
}

/// The ports as `--dports` prints them.
pub fn ports_text(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Plans one family: `wanted` holds, for every requested provider, its ranges of this family.
/// Rules of providers not requested are kept; other rules in the chain are never touched.
pub fn plan(
    family: Family,
    current: &IptState,
    wanted: &[(Provider, Vec<IpNet>)],
    ports: &[u16],
) -> FamilyPlan {
    let ports = ports_text(ports);
    let requested: BTreeSet<Provider> = wanted.iter().map(|(p, _)| *p).collect();
    let mut want: BTreeSet<(Provider, IpNet)> = BTreeSet::new();
    for (p, nets) in wanted {
        for n in nets {
            want.insert((*p, n.trunc()));
        }
    }
    let mut kept: BTreeSet<(Provider, IpNet)> = BTreeSet::new();
    let mut remove: Vec<Change> = Vec::new();
    let mut lines_del: Vec<String> = Vec::new();
    let mut unchanged = 0usize;
    for rule in &current.rules {
        if let Some(sr) = &rule.set_owned {
            if requested.contains(&sr.provider) {
                lines_del.push(delete_line(&rule.line));
            }
            continue;
        }
        let Some(owned) = &rule.owned else {
            continue;
        };
        if !requested.contains(&owned.provider) {
            unchanged += 1;
            continue;
        }
        let key = (owned.provider, owned.net);
        if want.contains(&key) && owned.ports == ports && !kept.contains(&key) {
            kept.insert(key);
            unchanged += 1;
        } else {
            remove.push(Change {
                provider: owned.provider,
                net: owned.net,
            });
            lines_del.push(delete_line(&rule.line));
        }
    }
    let add: Vec<Change> = want
        .iter()
        .filter(|k| !kept.contains(k))
        .map(|(p, n)| Change {
            provider: *p,
            net: *n,
        })
        .collect();
    let adds: Vec<String> = add
        .iter()
        .map(|c| rule_line(c.provider, &c.net, &ports))
        .collect();
    let needed = !want.is_empty() || current.rules.iter().any(|r| r.owned.is_some());
    let (script, structure) = assemble(current, needed, lines_del, adds);
    FamilyPlan {
        family,
        add,
        remove,
        unchanged,
        structure,
        script,
        pre_script: String::new(),
    }
}

/// The fragment around the rule changes: the chain created when missing, the jump put first.
fn assemble(
    current: &IptState,
    needed: bool,
    deletes: Vec<String>,
    adds: Vec<String>,
) -> (String, Vec<String>) {
    let jump_ok = current.jumps.len() == 1 && current.jumps.first().map(|j| j.0) == Some(1);
    let fix_jump = needed && !jump_ok;
    let mut body = Vec::new();
    if needed && !current.chain_exists {
        body.push(format!(":{CHAIN} - [0:0]"));
    }
    body.extend(deletes);
    body.extend(adds);
    if fix_jump {
        for (_, line) in &current.jumps {
            body.push(delete_line(line));
        }
        body.push(jump_rule("-I INPUT 1"));
    }
    let jump_note = if !fix_jump {
        None
    } else if current.jumps.is_empty() {
        Some(format!("insert `-j {CHAIN}` as rule 1 of INPUT"))
    } else {
        Some(format!(
            "move the jump to {CHAIN} to rule 1 of INPUT (it is at {})",
            current
                .jumps
                .iter()
                .map(|j| j.0.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    (fragment(&body), jump_note.into_iter().collect())
}

/// Plans one family with ipsets: each requested provider's set refilled (by swap) when its
/// content differs, one rule per provider matching the set, the agent's per-range rules of those
/// providers (from a run without ipset) removed.
pub fn plan_sets(
    family: Family,
    current: &IptState,
    sets: &BTreeMap<String, Vec<IpNet>>,
    wanted: &[(Provider, Vec<IpNet>)],
    ports: &[u16],
) -> FamilyPlan {
    let ports = ports_text(ports);
    let mut add = Vec::new();
    let mut remove = Vec::new();
    let mut unchanged = 0;
    let mut pre = String::new();
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    let mut notes = Vec::new();
    let mut needed = current
        .rules
        .iter()
        .any(|r| r.owned.is_some() || r.set_owned.is_some());
    for (p, nets) in wanted {
        let name = super::ipsets::set_name(*p, family);
        let mut desired: Vec<IpNet> = nets.iter().map(IpNet::trunc).collect();
        desired.sort();
        desired.dedup();
        let have: Vec<IpNet> = sets.get(&name).cloned().unwrap_or_default();
        for n in &desired {
            if have.contains(n) {
                unchanged += 1;
            } else {
                add.push(Change {
                    provider: *p,
                    net: *n,
                });
            }
        }
        for n in &have {
            if !desired.contains(n) {
                remove.push(Change {
                    provider: *p,
                    net: *n,
                });
            }
        }
        let differs = !sets.contains_key(&name)
            || have.len() != desired.len()
            || add.iter().chain(remove.iter()).any(|c| c.provider == *p);
        if differs && (!desired.is_empty() || sets.contains_key(&name)) {
            pre.push_str(&super::ipsets::fill_script(&name, &desired));
        }
        let mut kept = false;
        let mut old_rules = 0;
        for rule in &current.rules {
            if let Some(sr) = &rule.set_owned {
                if sr.provider != *p {
                    continue;
                }
                if !kept && sr.set == name && sr.ports == ports && !desired.is_empty() {
                    kept = true;
                } else {
                    deletes.push(delete_line(&rule.line));
                }
            } else if rule.owned.as_ref().is_some_and(|o| o.provider == *p) {
                old_rules += 1;
                deletes.push(delete_line(&rule.line));
            }
        }
        if old_rules > 0 {
            notes.push(format!(
                "replace {old_rules} per-range rules of {p} by the set {name}"
            ));
        }
        if !kept && !desired.is_empty() {
            adds.push(set_rule_line(*p, &name, &ports));
            notes.push(format!("add the rule matching the set {name}"));
        }
        needed |= !desired.is_empty();
    }
    let (script, mut structure) = assemble(current, needed, deletes, adds);
    notes.append(&mut structure);
    FamilyPlan {
        family,
        add,
        remove,
        unchanged,
        structure: notes,
        script,
        pre_script: pre,
    }
}

/// The fragment that moves `current` back to `saved` exactly: the chain's rules as they were
/// (all of them, in order), the jumps at their old positions, or no chain at all.
pub fn restore_fragment(current: &IptState, saved: &IptState) -> Option<String> {
    if current == saved {
        return None;
    }
    let mut body = Vec::new();
    for (_, line) in &current.jumps {
        body.push(delete_line(line));
    }
    if saved.chain_exists {
        // Declaring an existing chain under --noflush empties it.
        body.push(format!(":{CHAIN} - [0:0]"));
        for rule in &saved.rules {
            body.push(rule.line.clone());
        }
    } else if current.chain_exists {
        body.push(format!(":{CHAIN} - [0:0]"));
        body.push(format!("-X {CHAIN}"));
    }
    let mut jumps = saved.jumps.clone();
    jumps.sort();
    for (pos, line) in &jumps {
        let rest = line.strip_prefix("-A INPUT").unwrap_or(line);
        body.push(format!("-I INPUT {pos}{rest}"));
    }
    Some(fragment(&body))
}

fn delete_line(line: &str) -> String {
    match line.strip_prefix("-A ") {
        Some(rest) => format!("-D {rest}"),
        None => line.to_string(),
    }
}

fn fragment(body: &[String]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let mut out = String::from("*filter\n");
    for line in body {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// `iptables-save` text with counters, comments and the agent's own objects removed: what must
/// be identical before and after an apply.
pub fn without_own(save: &str) -> String {
    let mut out = String::new();
    let mut in_filter = false;
    for line in save.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table.trim() == "filter";
        }
        if in_filter {
            if let Some(decl) = line.strip_prefix(':') {
                if decl.split_whitespace().next() == Some(CHAIN) {
                    continue;
                }
            }
            if let Some(body) = line.strip_prefix("-A ") {
                let words = tokenize(body);
                if words.first().map(String::as_str) == Some(CHAIN) || target(&words) == Some(CHAIN)
                {
                    continue;
                }
            }
        }
        out.push_str(strip_counters(line));
        out.push('\n');
    }
    drop_empty_tables(&out)
}

/// Leaves out tables that hold nothing but built-in chains with an ACCEPT policy: creating the
/// agent's chain on a host without any rule makes iptables-nft create an empty filter table,
/// which changes nothing for any packet.
fn drop_empty_tables(text: &str) -> String {
    let mut out = String::new();
    let mut block: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('*') {
            block.clear();
        }
        block.push(line);
        if line == "COMMIT" {
            let empty = block.iter().all(|l| {
                l.starts_with('*')
                    || *l == "COMMIT"
                    || (l.starts_with(':') && l.split_whitespace().nth(1) == Some("ACCEPT"))
            });
            if !empty {
                for l in &block {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            block.clear();
        }
    }
    for l in &block {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// `:INPUT DROP [12:345]` → `:INPUT DROP`; `[0:0] -A …` (save -c) → `-A …`.
pub fn strip_counters(line: &str) -> &str {
    let line = line.trim();
    let line = if line.starts_with('[') {
        line.split_once("] ").map(|(_, rest)| rest).unwrap_or(line)
    } else {
        line
    };
    if line.starts_with(':') {
        line.split(" [").next().unwrap_or(line)
    } else {
        line
    }
}

/// The whole save text with counters and comments removed, for exact comparisons.
pub fn normalized(save: &str) -> String {
    let mut out = String::new();
    for line in save.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push_str(strip_counters(line));
        out.push('\n');
    }
    out
}

/// The iptables back end: the agent's chain, jumped to first from INPUT, changed with one
/// `iptables-restore --noflush` transaction per family (and an `ipset restore` swap first when
/// ipset is installed).
#[derive(Debug, Clone, Copy, Default)]
pub struct Iptables;

impl FirewallBackend for Iptables {
    fn kind(&self) -> Backend {
        Backend::Iptables
    }

    fn describe(&self) -> String {
        format!("back end: iptables (the agent's chain {CHAIN}, jumped to first from INPUT)")
    }

    fn notes(&self, saves: &Saves) -> Vec<String> {
        if saves.v6.is_none() {
            vec!["IPv6 left out: ip6tables-save is missing or failed (IPv6 disabled?)".to_string()]
        } else {
            Vec::new()
        }
    }

    fn plan(&self, saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Vec<FamilyPlan> {
        let mut plans = Vec::new();
        for family in [Family::V4, Family::V6] {
            let Some(text) = saves.get(family) else {
                continue;
            };
            let wanted = wanted_of(lists, family);
            let st = read_state(text);
            plans.push(match &saves.ipset {
                Some(sets) => plan_sets(family, &st, &ipsets::read(sets), &wanted, ports),
                None => plan(family, &st, &wanted, ports),
            });
        }
        plans
    }

    fn commands(&self, plans: &[FamilyPlan]) -> Vec<String> {
        plans
            .iter()
            .flat_map(|p| {
                let mut c = Vec::new();
                if !p.pre_script.is_empty() {
                    c.push("ipset restore".to_string());
                }
                if !p.script.is_empty() {
                    c.push(restore_cmd(p.family, "").key());
                }
                c
            })
            .collect()
    }

    fn apply(
        &self,
        host: &dyn Host,
        plans: &[FamilyPlan],
        _before: &Saves,
        _lists: &[ProviderList],
        _ports: &[u16],
    ) -> Result<(), ApplyError> {
        let mut done = false;
        for plan in plans.iter().filter(|p| !p.is_empty()) {
            if !plan.pre_script.is_empty() {
                if let Err(source) = run_ok(host, &ipset_cmd(&plan.pre_script)) {
                    // A failed restore may leave a temporary set: the undo removes it.
                    return Err(ApplyError::Partial {
                        source,
                        what: format!(
                            "the {} set contents were not swapped in",
                            plan.family.label()
                        ),
                    });
                }
                done = true;
            }
            if plan.script.is_empty() {
                continue;
            }
            if let Err(source) = run_ok(host, &restore_cmd(plan.family, &plan.script)) {
                let what = format!("the {} transaction was not applied", plan.family.label());
                return Err(if done {
                    ApplyError::Partial { source, what }
                } else {
                    ApplyError::NotApplied { source, what }
                });
            }
            done = true;
        }
        Ok(())
    }

    fn restore_to(&self, host: &dyn Host, before: &Saves) -> Restored {
        let mut done = Vec::new();
        let mut failures = Vec::new();
        let saved_sets = ipsets::read(before.ipset.as_deref().unwrap_or_default());
        let current_sets = match host.run(&Command::new("ipset", &["save"])) {
            Ok(o) if o.success() => Some(ipsets::read(&o.stdout_text())),
            _ => None,
        };
        for family in [Family::V4, Family::V6] {
            // The saved sets first, refilled where they differ, so the restored rules find them.
            if let Some(current) = &current_sets {
                let differing: BTreeMap<String, Vec<IpNet>> = saved_sets
                    .iter()
                    .filter(|(name, nets)| current.get(*name) != Some(*nets))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let fill = ipsets::restore_fill(&differing, family);
                if !fill.is_empty() {
                    match run_ok(host, &ipset_cmd(&fill)) {
                        Ok(_) => done.push(format!("{} sets restored", family.label())),
                        Err(source) => failures.push(RestoreFailure {
                            what: format!("{} sets", family.label()),
                            source,
                        }),
                    }
                }
            }
            let Some(saved) = before.get(family) else {
                continue;
            };
            let current = match read_save(host, family) {
                Ok(Some(text)) => text,
                Ok(None) => continue,
                Err(source) => {
                    failures.push(RestoreFailure {
                        what: format!("{} (cannot read)", family.label()),
                        source,
                    });
                    continue;
                }
            };
            let Some(frag) = restore_fragment(&read_state(&current), &read_state(saved)) else {
                continue;
            };
            match run_ok(host, &restore_cmd(family, &frag)) {
                Ok(_) => done.push(format!("{} restored", family.label())),
                Err(source) => {
                    failures.push(RestoreFailure {
                        what: family.label().to_string(),
                        source,
                    });
                    done.push(format!("{} NOT restored", family.label()));
                }
            }
        }
        // Then the sets the apply created (no rule refers to them any more).
        if let Some(current) = &current_sets {
            let destroy = ipsets::restore_destroy(current, &saved_sets);
            if !destroy.is_empty() {
                match run_ok(host, &ipset_cmd(&destroy)) {
                    Ok(_) => done.push("new sets destroyed".to_string()),
                    Err(source) => failures.push(RestoreFailure {
                        what: "sets".to_string(),
                        source,
                    }),
                }
            }
        }
        Restored {
            summary: if done.is_empty() {
                "nothing had changed".to_string()
            } else {
                done.join(", ")
            },
            failures,
        }
    }

    fn rollback_plans(&self, current: &Saves, before: &Saves) -> Vec<FamilyPlan> {
        [Family::V4, Family::V6]
            .into_iter()
            .filter_map(|family| {
                let (cur, old) = (current.get(family)?, before.get(family)?);
                let frag = restore_fragment(&read_state(cur), &read_state(old)).unwrap_or_default();
                Some(restore_plan(
                    family,
                    "restore the agent's chain and jumps as saved",
                    frag,
                ))
            })
            .collect()
    }

    fn other_changes(&self, before: &Saves, after: &Saves) -> Vec<String> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            if let (Some(b), Some(a)) = (before.get(family), after.get(family)) {
                diff_lines(
                    &mut out,
                    family.label(),
                    lines(&without_own(b)),
                    lines(&without_own(a)),
                );
            }
        }
        if let (Some(b), Some(a)) = (&before.ipset, &after.ipset) {
            diff_lines(
                &mut out,
                "ipset",
                lines(&ipsets::without_own(b)),
                lines(&ipsets::without_own(a)),
            );
        }
        out
    }

    fn persist(&self, host: &dyn Host, _req: &WhitelistRequest) -> Result<String, NotPersisted> {
        persist(host)
    }
}

/// Each provider's networks of one family.
pub fn wanted_of(lists: &[ProviderList], family: Family) -> Vec<(Provider, Vec<IpNet>)> {
    lists
        .iter()
        .map(|(p, v4, v6)| (*p, if family == Family::V4 { v4 } else { v6 }.clone()))
        .collect()
}

/// netfilter-persistent's plugin that saves and restores ipsets (package `ipset-persistent`),
/// run before the iptables plugins at boot.
const IPSET_PLUGIN: &str = "/usr/share/netfilter-persistent/plugins.d/10-ipset";

/// Saves the iptables rule set with netfilter-persistent. When the whitelist matches its
/// `oa-cdn-*` ipsets, the sets must be saved and restored too: a `rules.v4` that names sets no
/// one creates fails to load at boot (`iptables-restore`: set does not exist), and the host
/// would come up with no firewall at all. Without the ipset plugin nothing is saved.
fn persist(host: &dyn Host) -> Result<String, NotPersisted> {
    let tool = "/usr/sbin/netfilter-persistent";
    if host.metadata(std::path::Path::new(tool)).is_err() {
        return Err(NotPersisted("netfilter-persistent is not installed (apt install iptables-persistent), the change lasts until reboot".to_string()));
    }
    let uses_sets = match host.run(&Command::new("ipset", &["list", "-n"])) {
        Ok(out) if out.success() => out
            .stdout_text()
            .lines()
            .any(|l| l.trim().starts_with(ipsets::PREFIX)),
        _ => false,
    };
    let sets_saved = host.metadata(std::path::Path::new(IPSET_PLUGIN)).is_ok();
    if uses_sets && !sets_saved {
        return Err(NotPersisted(format!(
            "the whitelist matches its {}* ipsets and netfilter-persistent has no ipset plugin ({IPSET_PLUGIN} missing: apt install ipset-persistent); rules saved without their sets fail to load at boot and would leave the host with no firewall. The change lasts until reboot",
            ipsets::PREFIX
        )));
    }
    match run_ok(host, &Command::new(tool, &["save"])) {
        Ok(_) if uses_sets => Ok("netfilter-persistent save: /etc/iptables/rules.v4, /etc/iptables/rules.v6 and the ipsets (/etc/iptables/ipsets, restored first at boot)".to_string()),
        Ok(_) => Ok("netfilter-persistent save: /etc/iptables/rules.v4, /etc/iptables/rules.v6".to_string()),
        Err(e) => Err(NotPersisted(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BEFORE: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT DROP [10:600]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
";

    const APPLIED: &str = "*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ORIGIN-AGENT-CDN - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A INPUT -m comment --comment origin-agent -j ORIGIN-AGENT-CDN
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A ORIGIN-AGENT-CDN -s 173.245.48.0/20 -p tcp -m multiport --dports 80,443 -m comment --comment \"origin-agent:cloudflare\" -j ACCEPT
-A ORIGIN-AGENT-CDN -s 10.9.9.0/24 -j ACCEPT
-A ORIGIN-AGENT-CDN -s 199.27.128.0/21 -p tcp -m multiport --dports 80,443 -m comment --comment \"origin-agent:cloudflare\" -j ACCEPT
-A ORIGIN-AGENT-CDN -s 151.101.0.0/16 -p tcp -m multiport --dports 80,443 -m comment --comment \"origin-agent:fastly\" -j ACCEPT
COMMIT
";

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn reads_owned_foreign_rules_and_jumps() {
        let st = read_state(APPLIED);
        assert!(st.chain_exists);
        assert_eq!(st.jumps.len(), 1);
        assert_eq!(st.jumps[0].0, 2);
        assert_eq!(st.rules.len(), 4);
        assert_eq!(st.rules.iter().filter(|r| r.owned.is_none()).count(), 1);
        let first = st.rules[0].owned.clone().unwrap();
        assert_eq!(first.provider, Provider::Cloudflare);
        assert_eq!(first.ports, "80,443");
        assert!(read_state(BEFORE) == IptState::default());
    }

    #[test]
    fn a_fresh_plan_creates_the_chain_adds_every_range_and_jumps_first() {
        let p = plan(
            Family::V4,
            &read_state(BEFORE),
            &[(
                Provider::Cloudflare,
                nets(&["173.245.48.0/20", "103.21.244.0/22"]),
            )],
            &[80, 443],
        );
        assert_eq!(p.add.len(), 2);
        assert!(p.remove.is_empty());
        let lines: Vec<&str> = p.script.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(lines[1], ":ORIGIN-AGENT-CDN - [0:0]");
        assert!(lines.contains(&"-I INPUT 1 -m comment --comment origin-agent -j ORIGIN-AGENT-CDN"));
        assert_eq!(*lines.last().unwrap(), "COMMIT");
        // What the agent writes is what iptables-save prints back, so it reads as its own.
        let added = read_state(&format!(
            "*filter\n{}\n",
            rule_line(
                Provider::Cloudflare,
                &nets(&["173.245.48.0/20"])[0],
                "80,443"
            )
        ));
        assert!(added.rules[0].owned.is_some());
    }

    #[test]
    fn only_dropped_ranges_of_requested_providers_go_and_foreign_rules_stay() {
        // Cloudflare no longer publishes 199.27.128.0/21; fastly is not part of this request.
        let p = plan(
            Family::V4,
            &read_state(APPLIED),
            &[(
                Provider::Cloudflare,
                nets(&["173.245.48.0/20", "103.21.244.0/22"]),
            )],
            &[80, 443],
        );
        assert_eq!(p.remove.len(), 1);
        assert_eq!(p.remove[0].net.to_string(), "199.27.128.0/21");
        assert_eq!(p.add.len(), 1);
        assert_eq!(p.add[0].net.to_string(), "103.21.244.0/22");
        assert!(!p.script.contains("10.9.9.0"));
        assert!(!p.script.contains("151.101"));
        assert!(p.script.contains("-D ORIGIN-AGENT-CDN -s 199.27.128.0/21 -p tcp -m multiport --dports 80,443 -m comment --comment \"origin-agent:cloudflare\" -j ACCEPT"));
        // The jump sits behind fail2ban's: it moves to the top.
        assert!(p
            .script
            .contains("-D INPUT -m comment --comment origin-agent -j ORIGIN-AGENT-CDN"));
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn the_plan_for_the_current_state_is_empty() {
        let st = read_state(
            "*filter\n:INPUT DROP [0:0]\n:ORIGIN-AGENT-CDN - [0:0]\n-A INPUT -m comment --comment origin-agent -j ORIGIN-AGENT-CDN\n-A ORIGIN-AGENT-CDN -s 173.245.48.0/20 -p tcp -m multiport --dports 80,443 -m comment --comment \"origin-agent:cloudflare\" -j ACCEPT\nCOMMIT\n",
        );
        let p = plan(
            Family::V4,
            &st,
            &[(Provider::Cloudflare, nets(&["173.245.48.0/20"]))],
            &[80, 443],
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(p.script.is_empty());
        // A change of ports replaces the rule.
        let p = plan(
            Family::V4,
            &st,
            &[(Provider::Cloudflare, nets(&["173.245.48.0/20"]))],
            &[443],
        );
        assert_eq!((p.add.len(), p.remove.len()), (1, 1));
    }

    #[test]
    fn plan_with_sets_refills_only_changed_sets_and_keeps_one_rule_per_provider() {
        let applied = read_state(
            "*filter\n:INPUT DROP [0:0]\n:ORIGIN-AGENT-CDN - [0:0]\n-A INPUT -m comment --comment origin-agent -j ORIGIN-AGENT-CDN\n-A ORIGIN-AGENT-CDN -p tcp -m multiport --dports 80,443 -m set --match-set oa-cdn-cloudflare-v4 src -m comment --comment \"origin-agent:cloudflare\" -j ACCEPT\nCOMMIT\n",
        );
        assert_eq!(
            applied.rules[0].set_owned.as_ref().unwrap().set,
            "oa-cdn-cloudflare-v4"
        );
        let mut sets = BTreeMap::new();
        sets.insert(
            "oa-cdn-cloudflare-v4".to_string(),
            nets(&["173.245.48.0/20", "199.27.128.0/21"]),
        );
        let wanted = [(
            Provider::Cloudflare,
            nets(&["173.245.48.0/20", "103.21.244.0/22"]),
        )];
        let p = plan_sets(Family::V4, &applied, &sets, &wanted, &[80, 443]);
        assert_eq!(p.add.len(), 1);
        assert_eq!(p.remove[0].net.to_string(), "199.27.128.0/21");
        assert!(p.script.is_empty(), "{}", p.script);
        assert!(p
            .pre_script
            .contains("add oa-cdn-cloudflare-v4-t 103.21.244.0/22\n"));
        assert!(p
            .pre_script
            .contains("swap oa-cdn-cloudflare-v4-t oa-cdn-cloudflare-v4\n"));
        sets.insert(
            "oa-cdn-cloudflare-v4".to_string(),
            nets(&["103.21.244.0/22", "173.245.48.0/20"]),
        );
        let p = plan_sets(Family::V4, &applied, &sets, &wanted, &[80, 443]);
        assert!(p.is_empty(), "{p:?}");
        // From nothing: the set, its rule and the jump.
        let p = plan_sets(
            Family::V4,
            &read_state(BEFORE),
            &BTreeMap::new(),
            &wanted,
            &[80, 443],
        );
        assert!(p
            .pre_script
            .contains("create oa-cdn-cloudflare-v4 hash:net family inet -exist"));
        assert!(p.script.contains("--match-set oa-cdn-cloudflare-v4 src"));
        assert!(p.script.contains("-I INPUT 1 "));
    }

    #[test]
    fn restore_puts_back_the_saved_chain_and_jump_positions_or_removes_them() {
        let saved = read_state(APPLIED);
        let current = read_state(BEFORE);
        let frag = restore_fragment(&current, &saved).unwrap();
        assert!(frag.contains(":ORIGIN-AGENT-CDN - [0:0]\n-A ORIGIN-AGENT-CDN -s 173.245.48.0/20"));
        assert!(frag.contains("-I INPUT 2 -m comment --comment origin-agent -j ORIGIN-AGENT-CDN"));
        let back = restore_fragment(&saved, &current).unwrap();
        assert!(back.contains("-X ORIGIN-AGENT-CDN"));
        assert!(back.contains("-D INPUT -m comment --comment origin-agent -j ORIGIN-AGENT-CDN"));
        assert_eq!(restore_fragment(&saved, &saved), None);
    }

    #[test]
    fn comparison_ignores_counters_comments_and_own_objects() {
        assert!(!without_own(APPLIED).contains("ORIGIN-AGENT"));
        assert!(without_own(APPLIED).contains("-j f2b-sshd"));
        assert_eq!(
            normalized(BEFORE),
            normalized(&BEFORE.replace("[10:600]", "[0:0]"))
        );
        assert_eq!(
            strip_counters("[3:180] -A INPUT -j DROP"),
            "-A INPUT -j DROP"
        );
        // An empty filter table created for the agent's chain is no change.
        let created = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ORIGIN-AGENT-CDN - [0:0]\n-A INPUT -m comment --comment origin-agent -j ORIGIN-AGENT-CDN\nCOMMIT\n";
        assert_eq!(without_own(created), without_own(""));
        assert_ne!(
            without_own(&created.replace(":INPUT ACCEPT", ":INPUT DROP")),
            without_own("")
        );
    }
}
