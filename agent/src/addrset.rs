//! Address-set arithmetic: sorted, disjoint, inclusive intervals of addresses of one family.
//! This is what makes the evaluator exact ("a `/32` ban inside a `/15` is that `/32`") and fast
//! (intersections by binary search, never a scan of rules × ranges × addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

/// A set of addresses of one family as sorted, disjoint, non-adjacent inclusive intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrSet {
    pub family: Family,
    ivs: Vec<(u128, u128)>,
}

/// The first and last address of a network, as integers.
pub fn net_bounds(net: &IpNet) -> (u128, u128) {
    match net.trunc() {
        IpNet::V4(n) => (
            u32::from(n.network()) as u128,
            u32::from(n.broadcast()) as u128,
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Parses `1.2.3.0/24`, `1.2.3.4`, `2001:db8::/32` into a truncated network.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Parses `a.b.c.d/255.255.255.0` (the mask form iptables-save never prints but CSF files use).
pub fn parse_net_or_mask(text: &str) -> Option<IpNet> {
    if let Some(net) = parse_net(text) {
        return Some(net);
    }
    let (addr, mask) = text.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let mask: Ipv4Addr = mask.parse().ok()?;
    let len = u32::from(mask).leading_ones() as u8;
    Ipv4Net::new(addr, len).ok().map(|n| IpNet::V4(n.trunc()))
}

impl AddrSet {
    pub fn empty(family: Family) -> Self {
        AddrSet {
            family,
            ivs: Vec::new(),
        }
    }

    pub fn full(family: Family) -> Self {
        AddrSet {
            family,
            ivs: vec![(0, family.max())],
        }
    }

    /// The union of these networks (those of the other family are ignored).
    pub fn from_nets<'a>(family: Family, nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        Self::from_intervals(
            family,
            nets.into_iter()
                .filter(|n| Family::of(n) == family)
                .map(net_bounds)
                .collect(),
        )
    }

    /// Builds a set from any intervals (sorted and merged here).
    pub fn from_intervals(family: Family, mut ivs: Vec<(u128, u128)>) -> Self {
        ivs.retain(|(a, b)| a <= b);
        ivs.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ivs.len());
        for (a, b) in ivs {
            if let Some(last) = merged.last_mut() {
                if a <= last.1.saturating_add(1) {
                    if b > last.1 {
                        last.1 = b;
                    }
                    continue;
                }
            }
            merged.push((a, b));
        }
        AddrSet {
            family,
            ivs: merged,
        }
    }

    pub fn intervals(&self) -> &[(u128, u128)] {
        &self.ivs
    }

    pub fn is_empty(&self) -> bool {
        self.ivs.is_empty()
    }

    /// The number of addresses (saturating for the whole IPv6 space).
    pub fn size(&self) -> u128 {
        self.ivs.iter().fold(0u128, |acc, (a, b)| {
            acc.saturating_add(b - a).saturating_add(1)
        })
    }

    pub fn contains(&self, addr: u128) -> bool {
        let i = self.ivs.partition_point(|iv| iv.1 < addr);
        self.ivs.get(i).is_some_and(|iv| iv.0 <= addr)
    }

    /// The intervals of `self` that overlap `[lo, hi]`: a range of indices.
    fn overlapping(&self, lo: u128, hi: u128) -> std::ops::Range<usize> {
        let start = self.ivs.partition_point(|iv| iv.1 < lo);
        let end = self.ivs.partition_point(|iv| iv.0 <= hi);
        start..end.max(start)
    }

    /// `self ∩ other`. Cost: for each interval of the smaller side, a binary search in the other.
    pub fn intersect(&self, other: &AddrSet) -> AddrSet {
        if self.family != other.family || self.is_empty() || other.is_empty() {
            return AddrSet::empty(self.family);
        }
        let (small, big) = if self.ivs.len() <= other.ivs.len() {
            (self, other)
        } else {
            (other, self)
        };
        let mut out = Vec::new();
        for &(a, b) in &small.ivs {
            for &(c, d) in &big.ivs[big.overlapping(a, b)] {
                out.push((a.max(c), b.min(d)));
            }
        }
        AddrSet {
            family: self.family,
            ivs: out,
        }
    }

    /// `self ∩ [lo, hi]`, cheap when nothing overlaps.
    pub fn intersect_interval(&self, lo: u128, hi: u128) -> AddrSet {
        let ivs = self.ivs[self.overlapping(lo, hi)]
            .iter()
            .map(|&(a, b)| (a.max(lo), b.min(hi)))
            .collect();
        AddrSet {
            family: self.family,
            ivs,
        }
    }

    /// `self − other`.
    pub fn subtract(&self, other: &AddrSet) -> AddrSet {
        if self.family != other.family || other.is_empty() || self.is_empty() {
            return self.clone();
        }
        let mut out = Vec::with_capacity(self.ivs.len());
        for &(a, b) in &self.ivs {
            let mut cur = a;
            let mut done = false;
            for &(c, d) in &other.ivs[other.overlapping(a, b)] {
                if c > cur {
                    out.push((cur, c - 1));
                }
                if d >= b {
                    done = true;
                    break;
                }
                cur = d + 1;
            }
            if !done {
                out.push((cur, b));
            }
        }
        AddrSet {
            family: self.family,
            ivs: out,
        }
    }

    /// `self ∪ other`.
    pub fn union(&self, other: &AddrSet) -> AddrSet {
        if other.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return other.clone();
        }
        let mut ivs = Vec::with_capacity(self.ivs.len() + other.ivs.len());
        ivs.extend_from_slice(&self.ivs);
        ivs.extend_from_slice(&other.ivs);
        AddrSet::from_intervals(self.family, ivs)
    }

    /// All addresses of the family not in `self`.
    pub fn complement(&self) -> AddrSet {
        AddrSet::full(self.family).subtract(self)
    }

    /// The smallest list of CIDR blocks that covers exactly this set.
    pub fn to_nets(&self) -> Vec<IpNet> {
        let bits = self.family.bits() as u32;
        let mut out = Vec::new();
        for &(a, b) in &self.ivs {
            let mut cur = a;
            loop {
                // Largest block aligned at `cur` that stays within `b`.
                let align = if cur == 0 {
                    bits
                } else {
                    cur.trailing_zeros().min(bits)
                };
                let mut size_bits = align;
                while size_bits > 0 {
                    let last = if size_bits >= 128 {
                        u128::MAX
                    } else {
                        cur + ((1u128 << size_bits) - 1)
                    };
                    if last <= b && last >= cur {
                        break;
                    }
                    size_bits -= 1;
                }
                let prefix = (bits - size_bits) as u8;
                out.push(make_net(self.family, cur, prefix));
                let last = if size_bits >= 128 {
                    u128::MAX
                } else {
                    cur + ((1u128 << size_bits) - 1)
                };
                if last >= b {
                    break;
                }
                cur = last + 1;
            }
        }
        out
    }

    /// The set as CIDR text, comma separated, shortened after `max` entries.
    pub fn describe(&self, max: usize) -> String {
        let nets = self.to_nets();
        let mut parts: Vec<String> = nets.iter().take(max).map(|n| n.to_string()).collect();
        if nets.len() > max {
            parts.push(format!("… {} more", nets.len() - max));
        }
        parts.join(", ")
    }
}

fn make_net(family: Family, addr: u128, prefix: u8) -> IpNet {
    match family {
        Family::V4 => {
            let a = Ipv4Addr::from(addr as u32);
            Ipv4Net::new(a, prefix)
                .map(IpNet::V4)
                .unwrap_or(IpNet::V4(Ipv4Net::from(a)))
        }
        Family::V6 => {
            let a = Ipv6Addr::from(addr);
            Ipv6Net::new(a, prefix)
                .map(IpNet::V6)
                .unwrap_or(IpNet::V6(Ipv6Net::from(a)))
        }
    }
}

/// Converts an address to its integer and family.
pub fn addr_value(addr: &IpAddr) -> (Family, u128) {
    match addr {
        IpAddr::V4(a) => (Family::V4, u32::from(*a) as u128),
        IpAddr::V6(a) => (Family::V6, u128::from(*a)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set(f: Family, nets: &[&str]) -> AddrSet {
        let nets: Vec<IpNet> = nets.iter().map(|n| parse_net(n).unwrap()).collect();
        AddrSet::from_nets(f, &nets)
    }

    #[test]
    fn a_slash32_ban_inside_a_slash15_is_that_slash32() {
        let range = set(Family::V4, &["104.16.0.0/13"]);
        let ban = set(Family::V4, &["104.16.5.7/32"]);
        assert_eq!(range.intersect(&ban).describe(10), "104.16.5.7/32");
        let rest = range.subtract(&ban);
        assert_eq!(rest.size(), (1u128 << 19) - 1);
        assert!(!rest.contains(u32::from(Ipv4Addr::new(104, 16, 5, 7)) as u128));
        assert_eq!(rest.union(&ban), range);
    }

    #[test]
    fn cidr_cover_is_minimal_and_exact() {
        let s = AddrSet::from_intervals(Family::V4, vec![(1, 6)]);
        let nets: Vec<String> = s.to_nets().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            ["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/31", "0.0.0.6/32"]
        );
        assert_eq!(AddrSet::full(Family::V6).describe(3), "::/0");
        assert_eq!(AddrSet::full(Family::V4).describe(3), "0.0.0.0/0");
    }

    #[test]
    fn complement_and_overlap_merge() {
        let s = set(Family::V4, &["10.0.0.0/8", "10.1.0.0/16", "11.0.0.0/8"]);
        assert_eq!(s.describe(5), "10.0.0.0/7");
        let c = s.complement();
        assert_eq!(c.intersect(&s), AddrSet::empty(Family::V4));
        assert_eq!(c.union(&s), AddrSet::full(Family::V4));
        let v6 = set(Family::V6, &["2400:cb00::/32"]);
        assert!(v6.intersect_interval(0, 5).is_empty());
    }

    use proptest::prelude::*;

    /// Intervals inside 0..=255 and the same set as a bitmap (the model).
    fn model(ivs: &[(u8, u8)]) -> (AddrSet, [bool; 256]) {
        let mut bits = [false; 256];
        let mut list = Vec::new();
        for &(a, b) in ivs {
            let (a, b) = (a.min(b), a.max(b));
            for x in a..=b {
                bits[x as usize] = true;
            }
            list.push((a as u128, b as u128));
        }
        (AddrSet::from_intervals(Family::V4, list), bits)
    }

    fn bits_of(s: &AddrSet) -> [bool; 256] {
        let mut bits = [false; 256];
        for x in 0..256u128 {
            bits[x as usize] = s.contains(x);
        }
        bits
    }

    proptest! {
        #[test]
        fn set_operations_match_a_bitmap_model(
            a in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..8),
            b in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..8),
        ) {
            let (sa, ma) = model(&a);
            let (sb, mb) = model(&b);
            let and: Vec<bool> = (0..256).map(|i| ma[i] && mb[i]).collect();
            let or: Vec<bool> = (0..256).map(|i| ma[i] || mb[i]).collect();
            let minus: Vec<bool> = (0..256).map(|i| ma[i] && !mb[i]).collect();
            prop_assert_eq!(bits_of(&sa.intersect(&sb)).to_vec(), and);
            prop_assert_eq!(bits_of(&sa.union(&sb)).to_vec(), or);
            prop_assert_eq!(bits_of(&sa.subtract(&sb)).to_vec(), minus);
            // The CIDR cover is exact: rebuilt from its blocks, it is the same set.
            let nets = sa.to_nets();
            prop_assert_eq!(AddrSet::from_nets(Family::V4, &nets), sa.clone());
            prop_assert_eq!(sa.size() as usize, ma.iter().filter(|x| **x).count());
        }
    }
}
