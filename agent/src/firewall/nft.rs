//! `nft -j list ruleset` into the evaluator's [`Ruleset`]. Read tolerantly: an expression this
//! reader does not know makes that one rule *uncertain*; it never fails the whole parse.
//!
//! Base chains on the ingress, prerouting and input hooks become stages ordered by priority;
//! named and anonymous sets (interval sets included) become address sets; jump, goto, return and
//! verdict maps on `ct state` or `tcp dport` are followed.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::eval::{Action, Chain, Cond, Hook, PortMatch, Rule, RuleRef, Ruleset, Verdict};
use super::iptables::{dest_cond, iface_cond};
use crate::addrset::{net_bounds, parse_net, AddrSet, Family};

/// Why an nft JSON text could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("nft JSON: no `nftables` array")]
    Shape,
}

/// A named set's contents as values.
#[derive(Debug, Clone, Default)]
struct NamedSet {
    elems: Vec<Value>,
}

/// The parsed ruleset, kept as JSON objects until compiled per family.
#[derive(Debug, Clone, Default)]
pub struct NftRuleset {
    chains: Vec<Value>,
    rules: Vec<Value>,
    sets: HashMap<(String, String, String), NamedSet>,
    /// `(family, table)` pairs seen.
    pub tables: Vec<(String, String)>,
}

/// Parses the JSON document.
pub fn parse(text: &str) -> Result<NftRuleset, NftError> {
    let doc: Value = serde_json::from_str(text)?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or(NftError::Shape)?;
    let mut out = NftRuleset::default();
    for item in items {
        if let Some(t) = item.get("table") {
            out.tables.push((s(t, "family"), s(t, "name")));
        } else if let Some(c) = item.get("chain") {
            out.chains.push(c.clone());
        } else if let Some(r) = item.get("rule") {
            out.rules.push(r.clone());
        } else if let Some(set) = item.get("set").or_else(|| item.get("map")) {
            let key = (s(set, "family"), s(set, "table"), s(set, "name"));
            let elems = set
                .get("elem")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            out.sets.insert(key, NamedSet { elems });
        }
    }
    Ok(out)
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn applies(family_name: &str, family: Family) -> bool {
    match family_name {
        "ip" => family == Family::V4,
        "ip6" => family == Family::V6,
        "inet" | "netdev" => true,
        _ => false,
    }
}

/// The DNAT rules of `family`'s nat chains on the prerouting hook (a web port forwarded to a
/// container or another host), as the iptables reader reports them. Tables in `skip` are the
/// ones `iptables-save` already showed. Rules that only apply to traffic from an internal
/// interface (`iifname "docker0"`), negated port matches and non-TCP ports are left out.
pub fn dnat_rules(
    nft: &NftRuleset,
    family: Family,
    skip: &HashSet<(String, String)>,
) -> Vec<super::iptables::Dnat> {
    let nat_chains: HashSet<(String, String, String)> = nft
        .chains
        .iter()
        .filter(|c| s(c, "type") == "nat" && s(c, "hook") == "prerouting")
        .map(|c| (s(c, "family"), s(c, "table"), s(c, "name")))
        .filter(|(fam, table, _)| {
            applies(fam, family) && !skip.contains(&(fam.clone(), table.clone()))
        })
        .collect();
    let mut out = Vec::new();
    for r in &nft.rules {
        let key = (s(r, "family"), s(r, "table"), s(r, "chain"));
        if !nat_chains.contains(&key) {
            continue;
        }
        let exprs = r
            .get("expr")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut ports: Option<Vec<(u16, u16)>> = None;
        let mut to: Option<(String, Option<u16>)> = None;
        let mut internal_only = false;
        for e in &exprs {
            if let Some(m) = e.get("match") {
                let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
                let left = m.get("left").unwrap_or(&Value::Null);
                let right = m.get("right").unwrap_or(&Value::Null);
                if let Some(pl) = left.get("payload") {
                    let proto = s(pl, "protocol");
                    if s(pl, "field") == "dport" && (proto == "tcp" || proto == "th") && op == "=="
                    {
                        ports = port_ranges(right);
                    }
                } else if let Some(meta) = left.get("meta") {
                    if s(meta, "key") == "iifname" {
                        if let Some(name) = right.as_str() {
                            internal_only = super::iptables::iface_cond(name, op == "!=")
                                == super::eval::Cond::No;
                        }
                    }
                }
            } else if let Some(d) = e.get("dnat") {
                // Another family's dnat in an inet table (`dnat ip6 to …` while reading IPv4).
                let wrong_family = match d.get("family").and_then(Value::as_str) {
                    Some("ip") => family != Family::V4,
                    Some("ip6") => family != Family::V6,
                    _ => false,
                };
                if !wrong_family {
                    let addr = match d.get("addr") {
                        Some(Value::String(a)) => a.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    let port = d
                        .get("port")
                        .and_then(Value::as_u64)
                        .and_then(|p| u16::try_from(p).ok());
                    to = Some((addr, port));
                }
            }
        }
        let (Some(ports), Some((addr, to_port)), false) = (ports, to, internal_only) else {
            continue;
        };
        let to = match to_port {
            Some(p) if addr.contains(':') => format!("[{addr}]:{p}"),
            Some(p) => format!("{addr}:{p}"),
            None => addr,
        };
        out.push(super::iptables::Dnat {
            ports,
            to,
            to_port,
            rule: format!("nft {} {} {}: {}", key.0, key.1, key.2, render(&exprs)),
        });
    }
    out
}

/// A destination-port match's right side: a port, a range, or an anonymous set of either.
fn port_ranges(right: &Value) -> Option<Vec<(u16, u16)>> {
    let one = |v: &Value| -> Option<(u16, u16)> {
        if let Some(p) = v.as_u64() {
            let p = u16::try_from(p).ok()?;
            return Some((p, p));
        }
        let r = v.get("range")?.as_array()?;
        let a = u16::try_from(r.first()?.as_u64()?).ok()?;
        let b = u16::try_from(r.get(1)?.as_u64()?).ok()?;
        Some((a, b))
    };
    match right.get("set").and_then(Value::as_array) {
        Some(items) => items.iter().map(one).collect(),
        None => one(right).map(|r| vec![r]),
    }
}

/// Compiles the tables of `family` into `rs`. Tables in `skip` (`(family, name)`, the ones
/// iptables-nft owns and `iptables-save` already showed) are left out so no rule counts twice.
pub fn compile_into(rs: &mut Ruleset, nft: &NftRuleset, skip: &HashSet<(String, String)>) {
    let family = rs.family;
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    for c in &nft.chains {
        let (fam, table, name) = (s(c, "family"), s(c, "table"), s(c, "name"));
        if !applies(&fam, family) || skip.contains(&(fam.clone(), table.clone())) {
            continue;
        }
        let hook = match c.get("hook").and_then(Value::as_str) {
            Some("input") => Some(Hook::Input),
            Some("prerouting") => Some(Hook::Prerouting),
            Some("ingress") => Some(Hook::Ingress),
            Some("forward") => Some(Hook::Forward),
            _ => None,
        };
        let kind = s(c, "type");
        let policy = match c.get("policy").and_then(Value::as_str) {
            Some("drop") => Some(Verdict::Drop),
            _ => Some(Verdict::Accept),
        };
        let idx = rs.chains.len();
        rs.chains.push(Chain {
            source: "nftables".to_string(),
            table: format!("{fam} {table}"),
            name: name.clone(),
            policy: hook.and(policy),
            rules: Vec::new(),
        });
        if let Some(h) = hook {
            if kind != "nat" {
                let prio = c.get("prio").and_then(Value::as_i64).unwrap_or(0);
                rs.stages.push((h, prio, idx));
            }
        }
        index.insert((fam, table, name), idx);
    }
    let mut positions: HashMap<usize, usize> = HashMap::new();
    for r in &nft.rules {
        let (fam, table, chain) = (s(r, "family"), s(r, "table"), s(r, "chain"));
        let Some(&ci) = index.get(&(fam.clone(), table.clone(), chain.clone())) else {
            continue;
        };
        let pos = positions.entry(ci).or_insert(0);
        *pos += 1;
        let exprs = r
            .get("expr")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let handle = r.get("handle").and_then(Value::as_i64).unwrap_or(0);
        let at = RuleRef {
            source: "nftables".to_string(),
            table: format!("{fam} {table}"),
            chain: chain.clone(),
            position: *pos,
            text: format!("{} # handle {handle}", render(&exprs)),
        };
        let ctx = Ctx {
            family,
            fam: &fam,
            table: &table,
            nft,
            index: &index,
        };
        let rule = ctx.compile(&exprs, at);
        if let Some(c) = rs.chains.get_mut(ci) {
            c.rules.push(rule);
        }
    }
}

struct Ctx<'a> {
    family: Family,
    fam: &'a str,
    table: &'a str,
    nft: &'a NftRuleset,
    index: &'a HashMap<(String, String, String), usize>,
}

enum Field {
    Saddr(Family),
    Daddr,
    Dport,
    Sport,
    L4proto,
    Nfproto,
    Iif,
    CtState,
    OtherProto,
    Other(String),
}

impl Ctx<'_> {
    fn chain(&self, target: &str) -> Option<usize> {
        self.index
            .get(&(
                self.fam.to_string(),
                self.table.to_string(),
                target.to_string(),
            ))
            .copied()
    }

    fn compile(&self, exprs: &[Value], at: RuleRef) -> Rule {
        let mut src: Option<AddrSet> = None;
        let mut dports = Vec::new();
        let mut cond = Cond::Yes;
        let mut action = Action::Continue;
        for e in exprs {
            let Some((kind, body)) = e.as_object().and_then(|o| o.iter().next()) else {
                cond = cond.and(Cond::Maybe("unreadable expression".into()));
                continue;
            };
            match kind.as_str() {
                "match" => {
                    let op = body.get("op").and_then(Value::as_str).unwrap_or("==");
                    let neg = op == "!=";
                    let left = body.get("left").unwrap_or(&Value::Null);
                    let right = body.get("right").unwrap_or(&Value::Null);
                    match field(left) {
                        Field::Saddr(f) if f != self.family => cond = cond.and(Cond::No),
                        Field::Saddr(_) => match self.addr_set(right) {
                            Some(set) => {
                                let set = if neg { set.complement() } else { set };
                                src = Some(match src.take() {
                                    None => set,
                                    Some(cur) => cur.intersect(&set),
                                });
                            }
                            None => cond = cond.and(Cond::Maybe("source match".into())),
                        },
                        Field::Daddr => {
                            let nets: Vec<ipnet::IpNet> = self
                                .values(right)
                                .iter()
                                .filter_map(|v| v.as_str().and_then(parse_net))
                                .collect();
                            cond = cond.and(if nets.is_empty() {
                                if neg {
                                    Cond::No
                                } else {
                                    Cond::Yes
                                }
                            } else {
                                dest_cond(&nets, neg)
                            });
                        }
                        Field::Dport => match self.ports(right) {
                            Some(ranges) => dports.push(PortMatch {
                                negated: neg,
                                ranges,
                            }),
                            None => cond = cond.and(Cond::Maybe("port match".into())),
                        },
                        Field::Sport => cond = cond.and(Cond::Maybe("source port".into())),
                        Field::L4proto => {
                            let tcp = self
                                .values(right)
                                .iter()
                                .any(|v| v.as_str() == Some("tcp") || v.as_i64() == Some(6));
                            cond = cond.and(if tcp != neg { Cond::Yes } else { Cond::No });
                        }
                        Field::Nfproto => {
                            let want = match self.family {
                                Family::V4 => "ipv4",
                                Family::V6 => "ipv6",
                            };
                            let yes = self.values(right).iter().any(|v| v.as_str() == Some(want));
                            cond = cond.and(if yes != neg { Cond::Yes } else { Cond::No });
                        }
                        Field::Iif => {
                            let names = self.values(right);
                            let name = names.first().and_then(Value::as_str).unwrap_or("");
                            cond = cond.and(iface_cond(name, neg));
                        }
                        Field::CtState => {
                            let vals = self.values(right);
                            let new = vals.iter().any(|v| v.as_str() == Some("new"));
                            cond = cond.and(if new != neg { Cond::Yes } else { Cond::No });
                        }
                        Field::OtherProto => {
                            cond = cond.and(if neg { Cond::Yes } else { Cond::No })
                        }
                        Field::Other(what) => cond = cond.and(Cond::Maybe(what)),
                    }
                }
                "counter" | "log" | "comment" | "nftrace" | "notrack" => {}
                "accept" => action = Action::Verdict(Verdict::Accept),
                "drop" => action = Action::Verdict(Verdict::Drop),
                "reject" => action = Action::Verdict(Verdict::Reject),
                "return" => action = Action::Return,
                "continue" => action = Action::Continue,
                "jump" | "goto" => {
                    let target = body.get("target").and_then(Value::as_str).unwrap_or("");
                    action = match self.chain(target) {
                        Some(ci) if kind == "goto" => Action::Goto(ci),
                        Some(ci) => Action::Jump(ci),
                        None => Action::Unknown(format!("{kind} {target}")),
                    };
                }
                "vmap" => action = self.vmap(body, &mut cond, &mut dports),
                "limit" | "meter" | "quota" | "ct count" | "xt" | "fib" | "queue" | "synproxy" => {
                    cond = cond.and(Cond::Maybe(format!("`{kind}` expression")));
                }
                // Statements with no bearing on the verdict.
                "mangle" | "meta" | "set" | "ct" | "masquerade" | "snat" | "dnat" | "redirect"
                | "tproxy" | "dup" | "fwd" => {}
                other => cond = cond.and(Cond::Maybe(format!("unknown expression `{other}`"))),
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

    /// `ct state vmap { established : accept, new : jump x }` and `tcp dport vmap { 80 : ... }`.
    fn vmap(&self, body: &Value, cond: &mut Cond, dports: &mut Vec<PortMatch>) -> Action {
        let key = body.get("key").unwrap_or(&Value::Null);
        let entries = body.get("data").map(|d| self.values(d)).unwrap_or_default();
        let verdict_of = |v: &Value| -> Action {
            let Some((k, b)) = v.as_object().and_then(|o| o.iter().next()) else {
                return Action::Unknown("vmap".into());
            };
            match k.as_str() {
                "accept" => Action::Verdict(Verdict::Accept),
                "drop" => Action::Verdict(Verdict::Drop),
                "reject" => Action::Verdict(Verdict::Reject),
                "return" => Action::Return,
                "continue" => Action::Continue,
                "jump" | "goto" => {
                    let t = b.get("target").and_then(Value::as_str).unwrap_or("");
                    match self.chain(t) {
                        Some(ci) if k == "goto" => Action::Goto(ci),
                        Some(ci) => Action::Jump(ci),
                        None => Action::Unknown(format!("{k} {t}")),
                    }
                }
                other => Action::Unknown(other.to_string()),
            }
        };
        let pairs: Vec<(Value, Value)> = entries
            .iter()
            .filter_map(|e| {
                let arr = e.as_array()?;
                Some((arr.first()?.clone(), arr.get(1)?.clone()))
            })
            .collect();
        match field(key) {
            Field::CtState => {
                for (k, v) in &pairs {
                    if self.values(k).iter().any(|x| x.as_str() == Some("new")) {
                        return verdict_of(v);
                    }
                }
                *cond = cond.clone().and(Cond::No);
                Action::Continue
            }
            Field::Dport => {
                // One rule per port entry is not expressible here; only a single verdict for
                // all mapped ports is. Differing verdicts make the rule uncertain.
                let mut ranges = Vec::new();
                let mut actions = Vec::new();
                for (k, v) in &pairs {
                    if let Some(r) = self.ports(k) {
                        ranges.extend(r);
                    }
                    actions.push(verdict_of(v));
                }
                actions.dedup();
                dports.push(PortMatch {
                    negated: false,
                    ranges,
                });
                if actions.len() == 1 {
                    actions.remove(0)
                } else {
                    *cond = cond.clone().and(Cond::Maybe("port verdict map".into()));
                    Action::Continue
                }
            }
            _ => {
                *cond = cond.clone().and(Cond::Maybe("verdict map".into()));
                Action::Continue
            }
        }
    }

    /// The elements a right-hand side stands for: a value, a list, an anonymous set, `@name`.
    fn values(&self, v: &Value) -> Vec<Value> {
        match v {
            Value::String(name) if name.starts_with('@') => {
                let key = (
                    self.fam.to_string(),
                    self.table.to_string(),
                    name[1..].to_string(),
                );
                self.nft
                    .sets
                    .get(&key)
                    .map(|s| s.elems.iter().map(unwrap_elem).collect())
                    .unwrap_or_default()
            }
            Value::Array(items) => items.iter().map(unwrap_elem).collect(),
            Value::Object(o) if o.contains_key("set") => o
                .get("set")
                .map(|s| match s {
                    Value::Array(items) => items.iter().map(unwrap_elem).collect(),
                    other => vec![unwrap_elem(other)],
                })
                .unwrap_or_default(),
            other => vec![unwrap_elem(other)],
        }
    }

    fn addr_set(&self, right: &Value) -> Option<AddrSet> {
        if let Some(name) = right.as_str().and_then(|n| n.strip_prefix('@')) {
            let key = (
                self.fam.to_string(),
                self.table.to_string(),
                name.to_string(),
            );
            self.nft.sets.get(&key)?;
        }
        let mut ivs = Vec::new();
        for v in self.values(right) {
            ivs.push(addr_interval(&v)?);
        }
        Some(AddrSet::from_intervals(self.family, ivs))
    }

    fn ports(&self, right: &Value) -> Option<Vec<(u16, u16)>> {
        let mut out = Vec::new();
        for v in self.values(right) {
            if let Some(p) = v.as_u64() {
                let p = u16::try_from(p).ok()?;
                out.push((p, p));
            } else if let Some(r) = v.get("range").and_then(Value::as_array) {
                let a = u16::try_from(r.first()?.as_u64()?).ok()?;
                let b = u16::try_from(r.get(1)?.as_u64()?).ok()?;
                out.push((a, b));
            } else if let Some(name) = v.as_str() {
                let p = match name {
                    "http" => 80,
                    "https" => 443,
                    "ssh" => 22,
                    n => n.parse().ok()?,
                };
                out.push((p, p));
            } else {
                return None;
            }
        }
        Some(out)
    }
}

/// `{"elem": {"val": X, "timeout": ...}}` → X.
fn unwrap_elem(v: &Value) -> Value {
    v.get("elem")
        .and_then(|e| e.get("val"))
        .cloned()
        .unwrap_or_else(|| v.clone())
}

fn addr_interval(v: &Value) -> Option<(u128, u128)> {
    if let Some(text) = v.as_str() {
        return parse_net(text).map(|n| net_bounds(&n));
    }
    if let Some(p) = v.get("prefix") {
        let addr = p.get("addr")?.as_str()?;
        let len = p.get("len")?.as_u64()?;
        return parse_net(&format!("{addr}/{len}")).map(|n| net_bounds(&n));
    }
    if let Some(r) = v.get("range").and_then(Value::as_array) {
        let a = parse_net(r.first()?.as_str()?)?;
        let b = parse_net(r.get(1)?.as_str()?)?;
        return Some((net_bounds(&a).0, net_bounds(&b).1));
    }
    None
}

fn field(left: &Value) -> Field {
    if let Some(p) = left.get("payload") {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("");
        let f = p.get("field").and_then(Value::as_str).unwrap_or("");
        return match (proto, f) {
            ("ip", "saddr") => Field::Saddr(Family::V4),
            ("ip6", "saddr") => Field::Saddr(Family::V6),
            ("ip" | "ip6", "daddr") => Field::Daddr,
            ("tcp" | "th", "dport") => Field::Dport,
            ("tcp" | "th", "sport") => Field::Sport,
            ("ip", "protocol") | ("ip6", "nexthdr") => Field::L4proto,
            ("udp" | "udplite" | "sctp" | "dccp" | "icmp" | "icmpv6", _) => Field::OtherProto,
            ("tcp", "flags") => Field::Other("tcp flags".into()),
            _ => Field::Other(format!("{proto} {f}")),
        };
    }
    if let Some(m) = left.get("meta") {
        return match m.get("key").and_then(Value::as_str).unwrap_or("") {
            "l4proto" => Field::L4proto,
            "nfproto" => Field::Nfproto,
            "iif" | "iifname" => Field::Iif,
            "iiftype" => Field::Other("iiftype".into()),
            k => Field::Other(format!("meta {k}")),
        };
    }
    if let Some(c) = left.get("ct") {
        return match c.get("key").and_then(Value::as_str).unwrap_or("") {
            "state" => Field::CtState,
            k => Field::Other(format!("ct {k}")),
        };
    }
    Field::Other("match".into())
}

/// A short nft-like text of a rule's expressions, for the report.
pub fn render(exprs: &[Value]) -> String {
    let mut parts = Vec::new();
    for e in exprs {
        let Some((kind, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match kind.as_str() {
            "match" => {
                let op = body.get("op").and_then(Value::as_str).unwrap_or("==");
                let left = body.get("left").map(render_value).unwrap_or_default();
                let right = body.get("right").map(render_value).unwrap_or_default();
                if op == "==" || op == "in" {
                    parts.push(format!("{left} {right}"));
                } else {
                    parts.push(format!("{left} {op} {right}"));
                }
            }
            "accept" | "drop" | "return" | "continue" => parts.push(kind.clone()),
            "reject" => parts.push("reject".into()),
            "jump" | "goto" => parts.push(format!(
                "{kind} {}",
                body.get("target").and_then(Value::as_str).unwrap_or("?")
            )),
            "counter" => parts.push("counter".into()),
            other => parts.push(other.to_string()),
        }
    }
    parts.join(" ")
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "{{ {} }}",
            items
                .iter()
                .map(render_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(o) => {
            if let Some(p) = o.get("payload") {
                format!(
                    "{} {}",
                    p.get("protocol").and_then(Value::as_str).unwrap_or(""),
                    p.get("field").and_then(Value::as_str).unwrap_or("")
                )
            } else if let Some(m) = o.get("meta") {
                format!(
                    "meta {}",
                    m.get("key").and_then(Value::as_str).unwrap_or("")
                )
            } else if let Some(c) = o.get("ct") {
                format!("ct {}", c.get("key").and_then(Value::as_str).unwrap_or(""))
            } else if let Some(p) = o.get("prefix") {
                format!(
                    "{}/{}",
                    p.get("addr").and_then(Value::as_str).unwrap_or(""),
                    p.get("len").map(render_value).unwrap_or_default()
                )
            } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                format!(
                    "{}-{}",
                    r.first().map(render_value).unwrap_or_default(),
                    r.get(1).map(render_value).unwrap_or_default()
                )
            } else if let Some(s) = o.get("set") {
                render_value(s)
            } else {
                "…".to_string()
            }
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::firewall::eval::evaluate;

    const RULESET: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
    {"table": {"family": "inet", "name": "t", "handle": 1}},
    {"set": {"family": "inet", "name": "bad", "table": "t", "type": "ipv4_addr", "handle": 1, "flags": ["interval"], "elem": [{"range": ["173.245.48.10", "173.245.48.19"]}, {"prefix": {"addr": "103.21.244.0", "len": 24}}, {"elem": {"val": "198.41.128.7", "timeout": 600}}]}},
    {"chain": {"family": "inet", "table": "t", "name": "input", "handle": 2, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
    {"chain": {"family": "inet", "table": "t", "name": "web", "handle": 9}},
    {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 3, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, {"accept": null}]}},
    {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 4, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
    {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 5, "expr": [{"weird": {"x": 1}}, {"drop": null}]}},
    {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 6, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [80, 443]}}}, {"jump": {"target": "web"}}]}},
    {"rule": {"family": "inet", "table": "t", "chain": "web", "handle": 10, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@bad"}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}},
    {"rule": {"family": "inet", "table": "t", "chain": "web", "handle": 11, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "2400:cb00::", "len": 32}}}}, {"reject": {"type": "tcp reset"}}]}},
    {"rule": {"family": "inet", "table": "t", "chain": "web", "handle": 12, "expr": [{"accept": null}]}}
    ]}"#;

    #[test]
    fn interval_sets_jumps_and_unknown_expressions() {
        let nft = parse(RULESET).unwrap();
        let mut rs = Ruleset::new(Family::V4);
        compile_into(&mut rs, &nft, &HashSet::new());
        let nets: Vec<ipnet::IpNet> = ["173.245.48.0/20", "103.21.244.0/22", "198.41.128.0/17"]
            .iter()
            .map(|n| parse_net(n).unwrap())
            .collect();
        let t = AddrSet::from_nets(Family::V4, &nets);
        let e = evaluate(&rs, &t, 443);
        let b = e.blocked_in(&t);
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].set.describe(10),
            "103.21.244.0/24, 173.245.48.10/31, 173.245.48.12/30, 173.245.48.16/30, 198.41.128.7/32"
        );
        assert_eq!(b[0].by.chain, "web");
        assert_eq!(b[0].by.table, "inet t");
        assert!(b[0].by.text.contains("ip saddr @bad"), "{}", b[0].by.text);
        assert_eq!(e.uncertain_in(&t).len(), 1);
        assert!(e.uncertain_in(&t)[0].reason.contains("weird"));
        // Port 22 is not in the web set: policy drop.
        let e22 = evaluate(&rs, &t, 22);
        assert!(e22.blocked_in(&t).iter().all(|d| d.by.is_policy()));

        let mut rs6 = Ruleset::new(Family::V6);
        compile_into(&mut rs6, &nft, &HashSet::new());
        let t6 = AddrSet::from_nets(Family::V6, &[parse_net("2400:cb00::/31").unwrap()]);
        let e6 = evaluate(&rs6, &t6, 80);
        let b6 = e6.blocked_in(&t6);
        assert_eq!(b6.len(), 1);
        assert_eq!(b6[0].set.describe(3), "2400:cb00::/32");
        assert_eq!(b6[0].verdict, Verdict::Reject);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse("not json").is_err());
        assert!(parse("{\"x\":1}").is_err());
        let nft = parse("{\"nftables\":[{\"rule\":{\"expr\":5}},{\"chain\":null}]}").unwrap();
        let mut rs = Ruleset::new(Family::V4);
        compile_into(&mut rs, &nft, &HashSet::new());
        assert_eq!(rs.rule_count(), 0);
    }

    #[test]
    fn captured_vmaps_concatenations_limits_and_priorities() {
        // Captured from `nft -j list ruleset` after `nft -f ruleset.nft` in a namespace.
        let json = include_str!("../../../tests/fixtures/firewall/nft-vmap/nft.json");
        let nft = parse(json).unwrap();
        let cat = crate::cdn::CdnCatalog::bundled();
        let cf = crate::cdn::Provider::Cloudflare;
        let mut rs = Ruleset::new(Family::V4);
        compile_into(&mut rs, &nft, &HashSet::new());
        let t = cat.set(cf, Family::V4);
        let e80 = evaluate(&rs, &t, 80);
        let b80 = e80.blocked_in(&t);
        assert_eq!(b80.len(), 1);
        assert_eq!(b80[0].set, t);
        assert!(b80[0].by.is_policy());
        let reasons: Vec<String> = e80
            .uncertain_in(&t)
            .iter()
            .map(|u| u.reason.clone())
            .collect();
        assert!(reasons.iter().any(|r| r.contains("limit")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("match")), "{reasons:?}");
        let e443 = evaluate(&rs, &t, 443);
        let mut b443: Vec<(String, String, usize)> = e443
            .blocked_in(&t)
            .iter()
            .map(|d| (d.set.describe(4), d.by.chain.clone(), d.by.position))
            .collect();
        b443.sort();
        assert_eq!(
            b443,
            [
                ("104.16.0.0/13".to_string(), "web".to_string(), 1),
                ("172.64.0.0/16".to_string(), "pre".to_string(), 1)
            ]
        );
        let mut rs6 = Ruleset::new(Family::V6);
        compile_into(&mut rs6, &nft, &HashSet::new());
        let t6 = cat.set(cf, Family::V6);
        assert!(evaluate(&rs6, &t6, 443).blocked_in(&t6).is_empty());
        let a = evaluate(&rs6, &t6, 443);
        let by_input: Vec<String> = a
            .accepted_in(&t6)
            .iter()
            .filter(|d| d.by.chain == "input")
            .map(|d| d.set.describe(4))
            .collect();
        assert_eq!(by_input, ["2400:cb00::/32, 2606:4700::/32"]);
        assert_eq!(evaluate(&rs6, &t6, 80).blocked_in(&t6)[0].set, t6);
    }
}
