//! `ipset save` (or `ipset list -o save`) output: the sets iptables rules match with
//! `-m set --match-set NAME src`, as address sets.

use std::collections::BTreeMap;

use crate::addrset::{net_bounds, parse_net, AddrSet, Family};

/// One ipset.
#[derive(Debug, Clone)]
pub struct IpSet {
    pub name: String,
    /// `hash:net`, `hash:ip`, `list:set`, `hash:ip,port`, ...
    pub kind: String,
    pub family: Family,
    /// The addresses it holds (minus `nomatch` entries), for address-only set types.
    pub set: AddrSet,
    /// Member set names of a `list:set`.
    pub members: Vec<String>,
    pub entries: usize,
}

impl IpSet {
    /// True when a `src` match on this set is a pure source-address match.
    pub fn address_only(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "hash:ip" | "hash:net" | "bitmap:ip" | "list:set"
        )
    }
}

/// All ipsets by name.
#[derive(Debug, Clone, Default)]
pub struct IpSets {
    pub sets: BTreeMap<String, IpSet>,
    /// Lines that could not be read.
    pub bad_lines: usize,
}

impl IpSets {
    /// The addresses of set `name` (members of a `list:set` resolved), when it is address-only.
    pub fn addresses(&self, name: &str, family: Family) -> Option<AddrSet> {
        self.resolve(name, family, 0)
    }

    fn resolve(&self, name: &str, family: Family, depth: usize) -> Option<AddrSet> {
        let set = self.sets.get(name)?;
        if !set.address_only() || depth > 8 {
            return None;
        }
        if set.kind == "list:set" {
            let mut out = AddrSet::empty(family);
            for m in &set.members {
                if let Some(s) = self.resolve(m, family, depth + 1) {
                    out = out.union(&s);
                }
            }
            return Some(out);
        }
        if set.family != family {
            return Some(AddrSet::empty(family));
        }
        Some(set.set.clone())
    }
}

/// Entries of one set while reading: addresses, `nomatch` addresses, member sets.
type Pending = (Vec<(u128, u128)>, Vec<(u128, u128)>, Vec<String>);

/// Parses `ipset save` text. Unknown lines are counted, never fatal.
pub fn parse(text: &str) -> IpSets {
    let mut out = IpSets::default();
    let mut adds: BTreeMap<String, Pending> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("create") => {
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    out.bad_lines += 1;
                    continue;
                };
                let rest: Vec<&str> = words.collect();
                let family = match rest.iter().position(|w| *w == "family") {
                    Some(i) if rest.get(i + 1) == Some(&"inet6") => Family::V6,
                    _ => Family::V4,
                };
                out.sets.insert(
                    name.to_string(),
                    IpSet {
                        name: name.to_string(),
                        kind: kind.to_string(),
                        family,
                        set: AddrSet::empty(family),
                        members: Vec::new(),
                        entries: 0,
                    },
                );
            }
            Some("add") => {
                let (Some(name), Some(entry)) = (words.next(), words.next()) else {
                    out.bad_lines += 1;
                    continue;
                };
                let nomatch = words.any(|w| w == "nomatch");
                let Some(set) = out.sets.get(name) else {
                    out.bad_lines += 1;
                    continue;
                };
                let slot = adds.entry(name.to_string()).or_default();
                if set.kind == "list:set" {
                    slot.2.push(entry.to_string());
                    continue;
                }
                // hash:ip,port and friends: the address is the first element.
                let addr = entry.split(',').next().unwrap_or(entry);
                if let Some(net) = parse_net(addr) {
                    if nomatch {
                        slot.1.push(net_bounds(&net));
                    } else {
                        slot.0.push(net_bounds(&net));
                    }
                } else if let Some((a, b)) = addr.split_once('-') {
                    match (parse_net(a), parse_net(b)) {
                        (Some(a), Some(b)) => slot.0.push((net_bounds(&a).0, net_bounds(&b).1)),
                        _ => out.bad_lines += 1,
                    }
                } else {
                    out.bad_lines += 1;
                }
            }
            Some(w) if w.starts_with('#') => {}
            None => {}
            Some(_) => out.bad_lines += 1,
        }
    }
    for (name, (yes, no, members)) in adds {
        if let Some(set) = out.sets.get_mut(&name) {
            set.entries = yes.len() + no.len() + members.len();
            let family = set.family;
            set.set =
                AddrSet::from_intervals(family, yes).subtract(&AddrSet::from_intervals(family, no));
            set.members = members;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_nets_nomatch_lists_and_families() {
        let text = "create cdn hash:net family inet hashsize 1024 maxelem 65536\n\
                    add cdn 173.245.48.0/20\nadd cdn 173.245.50.0/24 nomatch\n\
                    create six hash:net family inet6 hashsize 1024 maxelem 65536\n\
                    add six 2400:cb00::/32\ncreate all list:set size 8\nadd all cdn\nadd all six\n\
                    create svc hash:ip,port family inet\nadd svc 1.2.3.4,tcp:80\ngarbage\n";
        let sets = parse(text);
        assert_eq!(sets.bad_lines, 1);
        let v4 = sets.addresses("all", Family::V4).unwrap();
        assert_eq!(
            v4.describe(5),
            "173.245.48.0/23, 173.245.51.0/24, 173.245.52.0/22, 173.245.56.0/21"
        );
        let v6 = sets.addresses("all", Family::V6).unwrap();
        assert_eq!(v6.describe(5), "2400:cb00::/32");
        assert!(sets.addresses("svc", Family::V4).is_none());
        assert!(sets.addresses("missing", Family::V4).is_none());
    }
}
