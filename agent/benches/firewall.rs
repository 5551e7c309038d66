//! Firewall evaluation benchmark: 50,000 iptables rules (user chains, jumps, multiport, bans
//! inside CDN ranges), an ipset of 200,000 entries, and every bundled provider list, evaluated
//! on ports 80 and 443 for IPv4 and IPv6. Prints the time of each step and the scaling with the
//! rule count (it must stay linear). Run: `cargo bench --bench firewall`.

use std::fmt::Write as _;
use std::time::Instant;

use origin_agent::cdn::{CdnCatalog, Provider};
use origin_agent::firewall::{build_rulesets, evaluate_rules, RuleTexts};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn addr(&mut self) -> String {
        let v = self.next() as u32;
        format!(
            "{}.{}.{}.{}",
            v >> 24,
            (v >> 16) & 255,
            (v >> 8) & 255,
            v & 255
        )
    }
}

/// `rules` rules across INPUT and 50 user chains; one rule in 50 bans an address inside a
/// Cloudflare or Fastly range.
fn ruleset(rules: usize, rng: &mut Rng) -> String {
    let mut s =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    let chains = 50;
    for c in 0..chains {
        let _ = writeln!(s, ":USER{c} - [0:0]");
    }
    s.push_str(
        "-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    s.push_str("-A INPUT -m set --match-set blocklist src -j DROP\n");
    for c in 0..chains {
        let _ = writeln!(
            s,
            "-A INPUT -p tcp -m multiport --dports 80,443,8080 -j USER{c}"
        );
    }
    let per_chain = rules / chains;
    for c in 0..chains {
        for i in 0..per_chain {
            let r = rng.next();
            if i % 50 == 7 {
                let _ = writeln!(
                    s,
                    "-A USER{c} -s 104.{}.{}.{}/32 -m comment --comment \"ban {i}\" -j DROP",
                    16 + (r % 8),
                    (r >> 8) % 256,
                    (r >> 16) % 256
                );
            } else if i % 10 == 3 {
                let _ = writeln!(
                    s,
                    "-A USER{c} -s {}/24 -p tcp --dport 22 -j REJECT",
                    rng.addr()
                );
            } else if i % 97 == 5 {
                let _ = writeln!(s, "-A USER{c} ! -s 10.0.0.0/8 -p udp -j RETURN");
            } else {
                let _ = writeln!(s, "-A USER{c} -s {}/32 -j DROP", rng.addr());
            }
        }
    }
    s.push_str("-A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT\nCOMMIT\n");
    s
}

fn ipset(entries: usize, rng: &mut Rng) -> String {
    let mut s =
        String::from("create blocklist hash:net family inet hashsize 65536 maxelem 1000000\n");
    for i in 0..entries {
        if i % 1000 == 0 {
            // a few inside CDN ranges
            let r = rng.next();
            let _ = writeln!(s, "add blocklist 162.158.{}.{}", (r >> 8) % 256, r % 256);
        } else if i % 5 == 0 {
            let a = rng.addr();
            let net = a.rsplit_once('.').map(|(n, _)| n).unwrap_or("1.2.3");
            let _ = writeln!(s, "add blocklist {net}.0/24");
        } else {
            let _ = writeln!(s, "add blocklist {}", rng.addr());
        }
    }
    s
}

fn run(rules: usize, entries: usize) -> (f64, f64, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let texts = RuleTexts {
        iptables: Some(ruleset(rules, &mut rng)),
        ip6tables: Some(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 2400:cb00::1/128 -j DROP\nCOMMIT\n".into(),
        ),
        ipset: Some(ipset(entries, &mut rng)),
        ..Default::default()
    };
    let catalog = CdnCatalog::bundled();
    let t0 = Instant::now();
    let rs = build_rulesets(&texts);
    let parse = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let verdicts = evaluate_rules(&rs, &catalog, Provider::ALL, &[80, 443]);
    let eval = t1.elapsed().as_secs_f64();
    let blocked: usize = verdicts.iter().map(|v| v.blocked.len()).sum();
    (parse, eval, blocked)
}

fn main() {
    println!("rules   ipset    parse+build  evaluate  total    blocked-parts");
    for (rules, entries) in [(12_500, 50_000), (25_000, 100_000), (50_000, 200_000)] {
        let (parse, eval, blocked) = run(rules, entries);
        println!(
            "{rules:<7} {entries:<8} {:>8.3} s  {:>7.3} s {:>6.3} s  {blocked}",
            parse,
            eval,
            parse + eval
        );
    }
}
