//! The firewall evaluator: one intermediate form for iptables, ip6tables and nftables rule sets,
//! and a symbolic walk over *address sets* that computes the verdict a new TCP connection from
//! each address gets, with the deciding rule.
//!
//! The walk starts with the addresses of interest (every provider's ranges, merged) at the first
//! base chain of the input path. At each rule the current set splits into the part the rule's
//! source match covers and the rest: ACCEPT / DROP / REJECT decide their part, a jump recurses
//! (depth-limited, loop-guarded), RETURN hands its part back, the chain's end falls through to the
//! caller or to the base chain's policy. Conditions that cannot be decided for "a new TCP
//! connection to port P from outside" (a rate limit, an unknown module) make the rule
//! *uncertain*: its part is reported, and the walk goes on as if it did not match.
//!
//! Several base chains on the input path (raw, mangle, filter; nftables chains by priority; the
//! legacy and nf_tables iptables back ends side by side) are stages: a part accepted by one stage
//! goes on to the next, a drop anywhere is final.

use serde::{Deserialize, Serialize};

use crate::addrset::{AddrSet, Family};

/// What a rule or policy does to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Accept => "ACCEPT",
            Verdict::Drop => "DROP",
            Verdict::Reject => "REJECT",
        }
    }

    pub fn blocks(self) -> bool {
        !matches!(self, Verdict::Accept)
    }
}

/// Which rule (or policy) decided, and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRef {
    /// `iptables`, `ip6tables`, `iptables-legacy`, `ip6tables-legacy`, `nftables`.
    pub source: String,
    /// The table (`filter`, or `inet filter` for nftables).
    pub table: String,
    pub chain: String,
    /// 1-based position in the chain; 0 for the chain's policy.
    pub position: usize,
    /// The rule as the tool prints it (`-A INPUT -s 1.2.3.4/32 -j DROP`), or `policy DROP`.
    pub text: String,
}

impl RuleRef {
    pub fn is_policy(&self) -> bool {
        self.position == 0
    }

    /// `iptables filter/INPUT #3: -A INPUT …`.
    pub fn describe(&self) -> String {
        if self.is_policy() {
            format!(
                "{} {}/{} {}",
                self.source, self.table, self.chain, self.text
            )
        } else {
            format!(
                "{} {}/{} rule {}: {}",
                self.source, self.table, self.chain, self.position, self.text
            )
        }
    }
}

/// Whether a rule's conditions other than the source address hold for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    Yes,
    No,
    /// Cannot be decided statically (rate limit, unknown module...); the reason.
    Maybe(String),
}

impl Cond {
    /// Both conditions (No wins, then Maybe).
    pub fn and(self, other: Cond) -> Cond {
        match (self, other) {
            (Cond::No, _) | (_, Cond::No) => Cond::No,
            (Cond::Maybe(a), Cond::Maybe(b)) => Cond::Maybe(format!("{a}; {b}")),
            (Cond::Maybe(a), _) | (_, Cond::Maybe(a)) => Cond::Maybe(a),
            _ => Cond::Yes,
        }
    }
}

/// A destination-port condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMatch {
    pub negated: bool,
    /// Inclusive ranges.
    pub ranges: Vec<(u16, u16)>,
}

impl PortMatch {
    pub fn matches(&self, port: u16) -> bool {
        self.ranges.iter().any(|(a, b)| *a <= port && port <= *b) != self.negated
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Verdict(Verdict),
    Jump(usize),
    Goto(usize),
    Return,
    /// No effect on the verdict (LOG, counter, MARK, no target).
    Continue,
    /// A target that decides in a way the evaluator does not model (NFQUEUE...).
    Unknown(String),
}

/// One rule, compiled for one family.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The source addresses it matches (negation already applied); `None` = any.
    pub src: Option<AddrSet>,
    /// Destination ports, when the rule restricts them.
    pub dports: Vec<PortMatch>,
    /// Everything else.
    pub cond: Cond,
    pub action: Action,
    pub at: RuleRef,
}

impl Rule {
    fn cond_for(&self, port: u16) -> Cond {
        if self.dports.iter().all(|p| p.matches(port)) {
            self.cond.clone()
        } else {
            Cond::No
        }
    }
}

/// A chain; base chains have a policy.
#[derive(Debug, Clone)]
pub struct Chain {
    pub source: String,
    pub table: String,
    pub name: String,
    pub policy: Option<Verdict>,
    pub rules: Vec<Rule>,
}

/// Where on the input path a base chain sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Ingress,
    Prerouting,
    Input,
    /// Connections a DNAT (Docker's published ports) sends on to another address.
    Forward,
}

/// Which way a connection goes through the host, and its destination port before and after
/// destination NAT (nat prerouting runs at priority -100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    /// `Hook::Input` (served here) or `Hook::Forward` (DNAT to a container).
    pub hook: Hook,
    pub port: u16,
    pub port_after_dnat: u16,
}

impl Path {
    pub fn input(port: u16) -> Self {
        Path {
            hook: Hook::Input,
            port,
            port_after_dnat: port,
        }
    }
}

/// All the chains of one family and the order of the base chains on the input path.
#[derive(Debug, Clone)]
pub struct Ruleset {
    pub family: Family,
    pub chains: Vec<Chain>,
    /// (hook, priority, chain index), sorted before evaluation.
    pub stages: Vec<(Hook, i64, usize)>,
    /// Problems met while reading (a rule that could not be read); shown in the report.
    pub notes: Vec<String>,
}

impl Ruleset {
    pub fn new(family: Family) -> Self {
        Ruleset {
            family,
            chains: Vec::new(),
            stages: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

/// A part of the evaluated addresses and what decided it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub set: AddrSet,
    pub verdict: Verdict,
    pub by: RuleRef,
}

/// A part that an uncertain rule may decide.
#[derive(Debug, Clone)]
pub struct Uncertain {
    pub set: AddrSet,
    pub at: RuleRef,
    pub reason: String,
}

/// The outcome for one (family, port).
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub family: Family,
    pub port: u16,
    pub decisions: Vec<Decision>,
    pub uncertain: Vec<Uncertain>,
}

impl Evaluation {
    /// The parts of `targets` that are blocked, each with its rule.
    pub fn blocked_in(&self, targets: &AddrSet) -> Vec<Decision> {
        self.decisions
            .iter()
            .filter(|d| d.verdict.blocks())
            .filter_map(|d| {
                let set = d.set.intersect(targets);
                (!set.is_empty()).then(|| Decision {
                    set,
                    verdict: d.verdict,
                    by: d.by.clone(),
                })
            })
            .collect()
    }

    /// The parts of `targets` that are accepted, each with its rule.
    pub fn accepted_in(&self, targets: &AddrSet) -> Vec<Decision> {
        self.decisions
            .iter()
            .filter(|d| !d.verdict.blocks())
            .filter_map(|d| {
                let set = d.set.intersect(targets);
                (!set.is_empty()).then(|| Decision {
                    set,
                    verdict: d.verdict,
                    by: d.by.clone(),
                })
            })
            .collect()
    }

    pub fn uncertain_in(&self, targets: &AddrSet) -> Vec<Uncertain> {
        self.uncertain
            .iter()
            .filter_map(|u| {
                let set = u.set.intersect(targets);
                (!set.is_empty()).then(|| Uncertain {
                    set,
                    at: u.at.clone(),
                    reason: u.reason.clone(),
                })
            })
            .collect()
    }
}

const MAX_DEPTH: usize = 64;

struct Walker<'a> {
    rs: &'a Ruleset,
    port: u16,
    decisions: Vec<Decision>,
    uncertain: Vec<Uncertain>,
    stack: Vec<usize>,
}

impl Walker<'_> {
    /// Walks chain `ci` with `set`; pushes decided parts and returns the part that falls back to
    /// the caller (RETURN, chain end, or a goto'd chain's end).
    fn chain(&mut self, ci: usize, mut set: AddrSet) -> AddrSet {
        let family = set.family;
        let Some(chain) = self.rs.chains.get(ci) else {
            return set;
        };
        self.stack.push(ci);
        let mut returned = AddrSet::empty(family);
        for rule in &chain.rules {
            if set.is_empty() {
                break;
            }
            if matches!(rule.action, Action::Continue) {
                continue;
            }
            let cond = rule.cond_for(self.port);
            if cond == Cond::No {
                continue;
            }
            let matched = match &rule.src {
                None => set.clone(),
                Some(src) => set.intersect(src),
            };
            if matched.is_empty() {
                continue;
            }
            if let Cond::Maybe(reason) = cond {
                self.uncertain.push(Uncertain {
                    set: matched,
                    at: rule.at.clone(),
                    reason,
                });
                continue;
            }
            let rest = match &rule.src {
                None => AddrSet::empty(family),
                Some(_) => set.subtract(&matched),
            };
            match &rule.action {
                Action::Verdict(v) => {
                    self.decisions.push(Decision {
                        set: matched,
                        verdict: *v,
                        by: rule.at.clone(),
                    });
                    set = rest;
                }
                Action::Continue => {}
                Action::Unknown(what) => {
                    self.uncertain.push(Uncertain {
                        set: matched,
                        at: rule.at.clone(),
                        reason: format!("target {what} is not modelled"),
                    });
                }
                Action::Return => {
                    returned = returned.union(&matched);
                    set = rest;
                }
                Action::Jump(target) | Action::Goto(target) => {
                    if self.stack.contains(target) || self.stack.len() >= MAX_DEPTH {
                        self.uncertain.push(Uncertain {
                            set: matched,
                            at: rule.at.clone(),
                            reason: "jump loop or nesting too deep".to_string(),
                        });
                        continue;
                    }
                    let back = self.chain(*target, matched);
                    if matches!(rule.action, Action::Goto(_)) {
                        returned = returned.union(&back);
                        set = rest;
                    } else {
                        set = rest.union(&back);
                    }
                }
            }
        }
        self.stack.pop();
        returned.union(&set)
    }
}

/// Evaluates a new TCP connection to `port` from every address in `targets` (of the ruleset's
/// family) through the input path. Every address of `targets` ends in exactly one decision.
pub fn evaluate(rs: &Ruleset, targets: &AddrSet, port: u16) -> Evaluation {
    evaluate_path(rs, targets, Path::input(port))
}

/// Like [`evaluate`], along `path` (the FORWARD path for a port DNAT sends to a container).
pub fn evaluate_path(rs: &Ruleset, targets: &AddrSet, path: Path) -> Evaluation {
    let port = path.port;
    let mut stages: Vec<(Hook, i64, usize)> = rs
        .stages
        .iter()
        .copied()
        .filter(|(hook, _, _)| match hook {
            Hook::Ingress | Hook::Prerouting => true,
            h => *h == path.hook,
        })
        .collect();
    stages.sort_by_key(|(hook, prio, _)| (*hook, *prio));
    let mut walker = Walker {
        rs,
        port,
        decisions: Vec::new(),
        uncertain: Vec::new(),
        stack: Vec::new(),
    };
    let mut open = targets.clone();
    let mut accepted: Vec<Decision> = Vec::new();
    for (hook, prio, ci) in &stages {
        if open.is_empty() {
            break;
        }
        walker.port = if matches!(hook, Hook::Ingress | Hook::Prerouting) && *prio < -100 {
            path.port
        } else {
            path.port_after_dnat
        };
        let Some(chain) = rs.chains.get(*ci) else {
            continue;
        };
        let before = walker.decisions.len();
        let fallen = walker.chain(*ci, open.clone());
        let policy = chain.policy.unwrap_or(Verdict::Accept);
        if !fallen.is_empty() {
            walker.decisions.push(Decision {
                set: fallen,
                verdict: policy,
                by: RuleRef {
                    source: chain.source.clone(),
                    table: chain.table.clone(),
                    chain: chain.name.clone(),
                    position: 0,
                    text: format!("policy {}", policy.label()),
                },
            });
        }
        // Accepted parts go on to the next stage, blocked ones are final.
        let stage: Vec<Decision> = walker.decisions.drain(before..).collect();
        let mut next = AddrSet::empty(targets.family);
        let mut stage_accepts = Vec::new();
        for d in stage {
            if d.verdict.blocks() {
                walker.decisions.push(d);
            } else {
                next = next.union(&d.set);
                stage_accepts.push(d);
            }
        }
        // The stage re-decided every open address: its accepts replace the earlier ones.
        accepted = stage_accepts;
        open = next;
    }
    if stages.is_empty() && !targets.is_empty() {
        accepted.push(Decision {
            set: targets.clone(),
            verdict: Verdict::Accept,
            by: RuleRef {
                source: "none".to_string(),
                table: "-".to_string(),
                chain: "-".to_string(),
                position: 0,
                text: "no firewall rules on the input path".to_string(),
            },
        });
    }
    let mut decisions = walker.decisions;
    decisions.extend(accepted);
    Evaluation {
        family: targets.family,
        port,
        decisions,
        uncertain: walker.uncertain,
    }
}
