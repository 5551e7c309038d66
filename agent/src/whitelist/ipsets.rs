//! The ipsets behind the iptables back end (when `ipset` is installed): one `hash:net` set per
//! provider and family (`oa-cdn-cloudflare-v4`), matched by one rule per provider in the agent's
//! chain, so a list of a thousand ranges costs one hash lookup instead of a thousand rules.
//!
//! A set's content is never changed element by element in place: the new content is built in a
//! temporary set and `ipset swap`ped in, which is atomic; a failure before the swap leaves the
//! live set as it was.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::addrset::{parse_net, Family};
use crate::cdn::Provider;

/// The prefix of every set the agent owns.
pub const PREFIX: &str = "oa-cdn-";
const TMP_SUFFIX: &str = "-t";

/// The set of a provider and family.
pub fn set_name(p: Provider, family: Family) -> String {
    let f = match family {
        Family::V4 => "v4",
        Family::V6 => "v6",
    };
    format!("{PREFIX}{}-{f}", p.name())
}

fn family_of(name: &str) -> Option<Family> {
    if name.ends_with("-v4") {
        Some(Family::V4)
    } else if name.ends_with("-v6") {
        Some(Family::V6)
    } else {
        None
    }
}

/// The agent's sets (temporary ones included) and their elements, from `ipset save`.
pub fn read(save: &str) -> BTreeMap<String, Vec<IpNet>> {
    let mut out: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for line in save.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("create"), Some(name)) if name.starts_with(PREFIX) => {
                out.entry(name.to_string()).or_default();
            }
            (Some("add"), Some(name)) if name.starts_with(PREFIX) => {
                if let Some(net) = w.next().and_then(parse_net) {
                    out.entry(name.to_string()).or_default().push(net);
                }
            }
            _ => {}
        }
    }
    out
}

/// The `ipset restore` script that makes `name` hold exactly `nets` (created when missing).
pub fn fill_script(name: &str, nets: &[IpNet]) -> String {
    let fam = match family_of(name) {
        Some(Family::V6) => "inet6",
        _ => "inet",
    };
    let tmp = format!("{name}{TMP_SUFFIX}");
    let mut s = format!(
        "create {name} hash:net family {fam} -exist\ncreate {tmp} hash:net family {fam} -exist\nflush {tmp}\n"
    );
    for n in nets {
        s.push_str(&format!("add {tmp} {n}\n"));
    }
    s.push_str(&format!("swap {tmp} {name}\ndestroy {tmp}\n"));
    s
}

/// Before the chain is restored: the saved sets refilled as they were (created when missing).
pub fn restore_fill(saved: &BTreeMap<String, Vec<IpNet>>, family: Family) -> String {
    saved
        .iter()
        .filter(|(name, _)| !name.ends_with(TMP_SUFFIX) && family_of(name) == Some(family))
        .map(|(name, nets)| fill_script(name, nets))
        .collect()
}

/// After the chain is restored: the agent's sets that were not there before (and any temporary
/// set a failed run left) destroyed.
pub fn restore_destroy(
    current: &BTreeMap<String, Vec<IpNet>>,
    saved: &BTreeMap<String, Vec<IpNet>>,
) -> String {
    current
        .keys()
        .filter(|name| name.ends_with(TMP_SUFFIX) || !saved.contains_key(*name))
        .map(|name| format!("destroy {name}\n"))
        .collect()
}

/// `ipset save` without the agent's sets and without the random `initval`: what must be the same
/// before and after an apply.
pub fn without_own(save: &str) -> String {
    normalize(save, true)
}

/// `ipset save` without the random `initval`, for exact comparisons.
pub fn normalized(save: &str) -> String {
    normalize(save, false)
}

fn normalize(save: &str, drop_own: bool) -> String {
    let mut out = String::new();
    for line in save.lines() {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if drop_own && words.get(1).is_some_and(|n| n.starts_with(PREFIX)) {
            continue;
        }
        if let Some(i) = words.iter().position(|w| *w == "initval") {
            words.drain(i..(i + 2).min(words.len()));
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SAVE: &str = "create oa-cdn-cloudflare-v4 hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xd2f67931
add oa-cdn-cloudflare-v4 173.245.48.0/20
add oa-cdn-cloudflare-v4 103.21.244.0/22
create blocklist hash:ip family inet hashsize 1024 maxelem 65536 initval 0x11111111
add blocklist 192.0.2.1
create oa-cdn-cloudflare-v4-t hash:net family inet hashsize 1024 maxelem 65536 initval 0x1
";

    #[test]
    fn reads_own_sets_and_scripts_a_swap() {
        let sets = read(SAVE);
        assert_eq!(sets.len(), 2);
        assert_eq!(sets["oa-cdn-cloudflare-v4"].len(), 2);
        let s = fill_script("oa-cdn-cloudflare-v6", &["2400:cb00::/32".parse().unwrap()]);
        assert_eq!(
            s,
            "create oa-cdn-cloudflare-v6 hash:net family inet6 -exist\ncreate oa-cdn-cloudflare-v6-t hash:net family inet6 -exist\nflush oa-cdn-cloudflare-v6-t\nadd oa-cdn-cloudflare-v6-t 2400:cb00::/32\nswap oa-cdn-cloudflare-v6-t oa-cdn-cloudflare-v6\ndestroy oa-cdn-cloudflare-v6-t\n"
        );
        assert_eq!(
            set_name(Provider::AzureFrontdoor, Family::V4),
            "oa-cdn-azure-frontdoor-v4"
        );
        assert!(set_name(Provider::AzureFrontdoor, Family::V4).len() + 2 <= 31);
    }

    #[test]
    fn restore_refills_saved_sets_and_destroys_new_and_temporary_ones() {
        let current = read(SAVE);
        let saved = BTreeMap::new();
        assert_eq!(
            restore_destroy(&current, &saved),
            "destroy oa-cdn-cloudflare-v4\ndestroy oa-cdn-cloudflare-v4-t\n"
        );
        assert!(restore_fill(&current, Family::V4)
            .contains("swap oa-cdn-cloudflare-v4-t oa-cdn-cloudflare-v4"));
        assert!(!restore_fill(&current, Family::V4).contains("create oa-cdn-cloudflare-v4-t-t"));
        assert_eq!(
            without_own(SAVE),
            "create blocklist hash:ip family inet hashsize 1024 maxelem 65536\nadd blocklist 192.0.2.1\n"
        );
    }
}
