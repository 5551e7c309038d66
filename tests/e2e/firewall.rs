//! Firewall and CDN auditor end to end: real iptables, ip6tables, ipset, nftables, ufw and
//! fail2ban rule sets built inside network namespaces each test creates and deletes, read by the
//! agent through a `Host` that runs every command inside the namespace (`ip netns exec NS …`).
//! Also the fixtures of typical hosts captured the same way (ufw + fail2ban + docker, CSF).
//! Never touches this machine's own tables.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use ipnet::IpNet;
use origin_agent::cdn::{CdnCatalog, Provider};
use origin_agent::check::Status;
use origin_agent::firewall::eval::Verdict;
use origin_agent::firewall::{
    audit, build_rulesets, evaluate_rules, table_text, FirewallInput, FirewallReport, Reach,
    RuleTexts,
};
use origin_agent::host::Host;

use crate::require;
use crate::util::cmd::ok;
use crate::util::netns::{Netns, NsHost};
use crate::util::or_skip;
use crate::util::services::Fail2ban;

/// A namespace of this test, or `None` (skipped, with the reason).
fn netns() -> Option<Netns> {
    or_skip(Netns::new("fw"))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn run_audit(host: &dyn Host, providers: &[Provider], ports: &[u16]) -> FirewallReport {
    let catalog = CdnCatalog::bundled();
    let clients = BTreeMap::new();
    let input = FirewallInput {
        providers: providers.to_vec(),
        ports: ports.to_vec(),
        real_ip: None,
        catalog: &catalog,
        access_clients: &clients,
    };
    audit(host, &input)
}

/// A blocked part as (ports, verdict, ranges, chain, rule position).
type BlockedRow = (Vec<u16>, Verdict, Vec<IpNet>, String, usize);

/// The blocked parts of one provider.
fn check_of<'r>(report: &'r FirewallReport, id: &str) -> &'r origin_agent::check::Check {
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id}"))
}

fn blocked(report: &FirewallReport, p: Provider) -> Vec<BlockedRow> {
    let v = report.providers.iter().find(|v| v.provider == p).unwrap();
    let mut out: Vec<_> = v
        .blocked
        .iter()
        .map(|b| {
            (
                b.ports.clone(),
                b.verdict,
                b.ranges.clone(),
                b.rule.chain.clone(),
                b.rule.position,
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn iptables_user_chains_ipset_and_ip6tables_in_a_namespace() {
    require!("ip", "iptables", "ip6tables", "ipset", "iptables-save");
    let Some(ns) = netns() else { return };
    ns.script(
        "ipset create bad hash:net family inet
         ipset add bad 162.158.5.0/24
         ipset add bad 198.41.200.7
         iptables -P INPUT DROP
         iptables -N WEB
         iptables -A INPUT -i lo -j ACCEPT
         iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
         iptables -A INPUT -p tcp -m multiport --dports 80,443 -m comment --comment \"web traffic\" -j WEB
         iptables -A WEB -m set --match-set bad src -j DROP
         iptables -A WEB -s 104.16.5.7/32 -j REJECT --reject-with tcp-reset -p tcp
         iptables -A WEB -s 103.21.244.0/22 -p tcp --dport 443 -j RETURN
         iptables -A WEB -j ACCEPT
         ip6tables -P INPUT DROP
         ip6tables -A INPUT -p tcp -m multiport --dports 80,443 ! -s 2400:cb00::/32 -j ACCEPT
         ip6tables -A INPUT -p tcp --dport 80 -s 2400:cb00:12::/48 -j ACCEPT",
    );
    let host = NsHost {
        ns: &ns,
        f2b_socket: None,
        remap: vec![],
    };
    let report = run_audit(&host, &[Provider::Cloudflare, Provider::Fastly], &[80, 443]);
    eprintln!("{}", table_text(&report));
    for c in &report.checks {
        eprintln!(
            "{:?} {} {}: {}\n  fix: {:?}",
            c.status, c.id, c.title, c.detail, c.fix
        );
    }
    let cf = blocked(&report, Provider::Cloudflare);
    let expected = vec![
        // IPv4: the ipset entries (exactly those addresses) on both ports.
        (
            vec![80, 443],
            Verdict::Drop,
            vec![net("162.158.5.0/24"), net("198.41.200.7/32")],
            "WEB".to_string(),
            1,
        ),
        (
            vec![80, 443],
            Verdict::Reject,
            vec![net("104.16.5.7/32")],
            "WEB".to_string(),
            2,
        ),
        // IPv6 2400:cb00::/32 falls to the policy except the /48 allowed on port 80.
        (
            vec![80],
            Verdict::Drop,
            AddrSetText::minus("2400:cb00::/32", "2400:cb00:12::/48"),
            "INPUT".to_string(),
            0,
        ),
        (
            vec![443],
            Verdict::Drop,
            vec![net("103.21.244.0/22")],
            "INPUT".to_string(),
            0,
        ),
        (
            vec![443],
            Verdict::Drop,
            vec![net("2400:cb00::/32")],
            "INPUT".to_string(),
            0,
        ),
    ];
    let mut expected = expected;
    expected.sort();
    assert_eq!(cf, expected, "{}", table_text(&report));
    let check = report
        .checks
        .iter()
        .find(|c| c.id == "firewall.cloudflare")
        .unwrap();
    assert_eq!(check.status, Status::Fail);
    assert_eq!(
        check.cause,
        Some(origin_agent::cause::CauseId::FirewallCdnBlocked)
    );
    let fix = check.fix.as_ref().unwrap();
    assert!(
        fix.contains("iptables -t filter -D WEB -s 104.16.5.7/32"),
        "{fix}"
    );
    assert!(
        fix.contains("ipset del bad 162.158.5.0/24; ipset del bad 198.41.200.7/32"),
        "{fix}"
    );
    // Fastly has no rule against it: allowed by WEB's last rule (IPv4) and INPUT (IPv6).
    let fastly = report
        .providers
        .iter()
        .find(|v| v.provider == Provider::Fastly)
        .unwrap();
    assert_eq!(fastly.reach, Reach::Allowed);
    let fc = report
        .checks
        .iter()
        .find(|c| c.id == "firewall.fastly")
        .unwrap();
    assert_eq!(fc.status, Status::Ok, "{}", fc.detail);
    let table = table_text(&report);
    assert!(table.contains("cloudflare: PARTLY BLOCKED"), "{table}");
    assert!(table.contains("fastly: ALLOWED"), "{table}");
}

/// The CIDR cover of `a − b`, computed independently of the agent's code (by splitting).
struct AddrSetText;
impl AddrSetText {
    fn minus(a: &str, b: &str) -> Vec<IpNet> {
        let a = net(a);
        let b = net(b);
        let mut out = Vec::new();
        let mut work = vec![a];
        while let Some(n) = work.pop() {
            if !n.contains(&b) {
                if !b.contains(&n) {
                    out.push(n);
                }
                continue;
            }
            if n == b {
                continue;
            }
            let halves: Vec<IpNet> = n.subnets(n.prefix_len() + 1).unwrap().collect();
            work.extend(halves);
        }
        out.sort();
        out
    }
}

#[test]
fn nftables_interval_sets_and_base_chain_priorities_in_a_namespace() {
    require!("ip", "nft");
    let Some(ns) = netns() else { return };
    ns.nft(
        r#"
table inet web {
  set banned4 {
    type ipv4_addr
    flags interval
    elements = { 173.245.48.16-173.245.48.31, 141.101.64.0/24 }
  }
  chain early {
    type filter hook input priority -10; policy accept;
    ip saddr 172.64.1.1 drop
  }
  chain input {
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
    tcp dport { 80, 443 } jump cdn
    ip6 saddr 2606:4700::/32 tcp dport 443 accept
  }
  chain cdn {
    ip saddr @banned4 counter drop
    ip saddr { 103.21.244.0/22, 103.22.200.0/22 } tcp dport 80 reject with tcp reset
    ip saddr != 198.41.128.0/17 accept
  }
}
"#,
    );
    let host = NsHost {
        ns: &ns,
        f2b_socket: None,
        remap: vec![],
    };
    let report = run_audit(&host, &[Provider::Cloudflare], &[80, 443]);
    let got = blocked(&report, Provider::Cloudflare);
    let mut expected = vec![
        (
            vec![80, 443],
            Verdict::Drop,
            vec![net("172.64.1.1/32")],
            "early".to_string(),
            1,
        ),
        (
            vec![80, 443],
            Verdict::Drop,
            vec![net("141.101.64.0/24"), net("173.245.48.16/28")],
            "cdn".to_string(),
            1,
        ),
        (
            vec![80],
            Verdict::Reject,
            vec![net("103.21.244.0/22"), net("103.22.200.0/22")],
            "cdn".to_string(),
            2,
        ),
        // 198.41.128.0/17 is not accepted by `cdn`, returns to `input`, falls to policy drop.
        (
            vec![80, 443],
            Verdict::Drop,
            vec![net("198.41.128.0/17")],
            "input".to_string(),
            0,
        ),
        // IPv6: only 2606:4700::/32 on 443 is accepted; everything else is dropped by policy.
        (
            vec![80],
            Verdict::Drop,
            CdnCatalog::bundled()
                .get(Provider::Cloudflare)
                .unwrap()
                .v6
                .clone(),
            "input".to_string(),
            0,
        ),
        (
            vec![443],
            Verdict::Drop,
            CdnCatalog::bundled()
                .get(Provider::Cloudflare)
                .unwrap()
                .v6
                .iter()
                .copied()
                .filter(|n| *n != net("2606:4700::/32"))
                .collect(),
            "input".to_string(),
            0,
        ),
    ];
    expected.sort();
    assert_eq!(got, expected, "{}", table_text(&report));
    let v = &report.providers[0];
    assert!(v.blocked.iter().all(|b| b.rule.table == "inet web"));
    assert!(v
        .blocked
        .iter()
        .any(|b| b.rule.text.contains("ip saddr @banned4")));
    let fix = report.checks[0].fix.clone().unwrap();
    assert!(fix.contains("nft delete rule inet web cdn handle"), "{fix}");
    assert!(
        fix.contains("nft delete element inet web banned4 { 141.101.64.0/24, 173.245.48.16/28 }"),
        "{fix}"
    );
    // The fix works on the real set: after it, rule 1 of `cdn` blocks nothing of Cloudflare.
    ns.exec(&[
        "nft",
        "delete element inet web banned4 { 141.101.64.0/24, 173.245.48.16/28 }",
    ]);
    let after = run_audit(&host, &[Provider::Cloudflare], &[80, 443]);
    assert!(blocked(&after, Provider::Cloudflare)
        .iter()
        .all(|b| !(b.3 == "cdn" && b.4 == 1)));
}

/// Copies the Debian ufw config into `dir` and runs ufw inside the namespace with that copy
/// bind-mounted over /etc/ufw (a private mount namespace): the machine's own ufw state is never
/// touched.
fn ufw(ns: &Netns, dir: &Path, cmds: &[&str]) {
    let etc = dir.join("etc-ufw");
    if !etc.exists() {
        ok(&["cp", "-a", "/etc/ufw", &etc.display().to_string()]);
        let default = std::fs::read_to_string("/etc/default/ufw").unwrap_or_default();
        let default: String = default
            .lines()
            .map(|l| {
                if l.starts_with("IPT_SYSCTL=") {
                    format!("IPT_SYSCTL={}/sysctl.conf", dir.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("default-ufw"), default).unwrap();
        std::fs::write(dir.join("sysctl.conf"), "").unwrap();
    }
    let mut script = format!(
        "mount --make-rprivate / && mount --bind {etc} /etc/ufw && mount --bind {def} /etc/default/ufw",
        etc = etc.display(),
        def = dir.join("default-ufw").display()
    );
    for c in cmds {
        script.push_str(" && ufw ");
        script.push_str(c);
    }
    ns.exec(&["unshare", "-m", "sh", "-ec", &script]);
}

#[test]
fn ufw_chains_in_a_namespace() {
    require!("ip", "ufw", "iptables", "unshare");
    let Some(ns) = netns() else { return };
    let dir = tempfile::tempdir().unwrap();
    ufw(
        &ns,
        dir.path(),
        &[
            "--force enable",
            "deny proto tcp from 173.245.48.0/24 to any port 80",
            "allow 80/tcp",
            "allow 443/tcp",
        ],
    );
    let etc = dir.path().join("etc-ufw");
    let host = NsHost {
        ns: &ns,
        f2b_socket: None,
        remap: vec![
            (
                "/etc/ufw/user.rules".into(),
                etc.join("user.rules").display().to_string(),
            ),
            (
                "/etc/ufw/user6.rules".into(),
                etc.join("user6.rules").display().to_string(),
            ),
            (
                "/etc/ufw/ufw.conf".into(),
                etc.join("ufw.conf").display().to_string(),
            ),
            (
                "/etc/default/ufw".into(),
                dir.path().join("default-ufw").display().to_string(),
            ),
        ],
    };
    let report = run_audit(&host, &[Provider::Cloudflare], &[80, 443]);
    let got = blocked(&report, Provider::Cloudflare);
    assert_eq!(got.len(), 1, "{}", table_text(&report));
    let fix = report.checks[0].fix.clone().unwrap();
    assert_eq!(
        fix,
        "remove the ufw rule: ufw delete deny proto tcp from 173.245.48.0/24 to any port 80"
    );
    assert!(report.checks.iter().all(|c| c.id != "ufw.inactive"));
    assert_eq!(got[0].0, vec![80]);
    assert_eq!(got[0].2, vec![net("173.245.48.0/24")]);
    assert_eq!(got[0].3, "ufw-user-input");
    let v = &report.providers[0];
    assert_eq!(v.reach, Reach::PartlyBlocked);
    assert!(v
        .allowed
        .iter()
        .all(|a| a.rule.chain.ends_with("-user-input") && !a.rule.is_policy()));

    // Disabled, ufw's chains are gone; its files say what enabling it would block.
    ufw(&ns, dir.path(), &["disable"]);
    let report = run_audit(&host, &[Provider::Cloudflare], &[80, 443]);
    assert!(blocked(&report, Provider::Cloudflare).is_empty());
    let c = report
        .checks
        .iter()
        .find(|c| c.id == "ufw.inactive")
        .unwrap();
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.detail.ends_with("would block: cloudflare on port 80: 173.245.48.0/24 (-A ufw-user-input -p tcp --dport 80 -s 173.245.48.0/24 -j DROP)"),
        "{}",
        c.detail
    );
}

/// The jails of the fail2ban tests: the web ports and SSH, both on the same test log.
pub(crate) const JAILS: &str = "[DEFAULT]\nbanaction = iptables-multiport\nbackend = polling\nignoreip = 127.0.0.1/8 ::1 192.0.2.0/24\n\n[nginx-test]\nenabled = true\nfilter = nginx-http-auth\nport = http,https\nlogpath = {dir}/error.log\nbantime = 3600\n\n[ssh-test]\nenabled = true\nfilter = sshd\nport = ssh\nlogpath = {dir}/error.log\nbantime = 3600\n";

#[test]
fn fail2ban_ban_of_a_cdn_address_from_the_server_and_from_its_database() {
    require!(
        "ip",
        "iptables",
        "fail2ban-server",
        "fail2ban-client",
        "sqlite3"
    );
    let Some(ns) = netns() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut f2b = Fail2ban::start(&ns, dir.path(), JAILS);
    f2b.client(&["set", "nginx-test", "banip", "173.245.48.9"])
        .unwrap();
    f2b.client(&["set", "nginx-test", "banip", "203.0.113.50"])
        .unwrap();
    let host = f2b.host();
    let report = run_audit(&host, &[Provider::Cloudflare], &[80, 443]);
    let check = check_of(&report, "fail2ban.cdn-banned");
    assert_eq!(check.status, Status::Fail, "{}", check.detail);
    assert_eq!(
        check.cause,
        Some(origin_agent::cause::CauseId::Fail2banCdnBanned)
    );
    assert!(check
        .detail
        .contains("jail nginx-test banned 173.245.48.9 (cloudflare)"));
    assert!(check.detail.contains("the running server"));
    assert!(!check.detail.contains("203.0.113.50"));
    let fix = check.fix.clone().unwrap();
    assert!(fix.contains("fail2ban-client set nginx-test unbanip 173.245.48.9"));
    // fail2ban normalises the list (`127.0.0.1/8` → `127.0.0.0/8`, addresses before `::1`).
    assert!(
        fix.contains("ignoreip = 127.0.0.0/8 192.0.2.0/24 ::1 103.21.244.0/22"),
        "{fix}"
    );
    // The ban is also an iptables rule: exactly that /32, in fail2ban's chain.
    let got = blocked(&report, Provider::Cloudflare);
    assert_eq!(got.len(), 1, "{}", table_text(&report));
    assert_eq!(got[0].2, vec![net("173.245.48.9/32")]);
    assert_eq!(got[0].3, "f2b-nginx-test");
    assert_eq!(got[0].1, Verdict::Reject);
    assert_eq!(report.providers[0].bans.len(), 1);

    // Server down: the bans come from its database.
    f2b.stop();
    let report = run_audit(&host, &[Provider::Cloudflare], &[80, 443]);
    let check = check_of(&report, "fail2ban.cdn-banned");
    assert_eq!(check.status, Status::Fail, "{}", check.detail);
    assert!(check.detail.contains("its database"), "{}", check.detail);
    assert!(check.detail.contains("173.245.48.9"));
    // fail2ban removed its rules on stop: nothing blocks in the firewall now.
    assert!(blocked(&report, Provider::Cloudflare).is_empty());
}

#[test]
fn a_cdn_address_banned_only_on_the_ssh_port_is_a_warning_not_the_cause() {
    require!(
        "ip",
        "iptables",
        "fail2ban-server",
        "fail2ban-client",
        "sqlite3"
    );
    let Some(ns) = netns() else { return };
    let dir = tempfile::tempdir().unwrap();
    let f2b = Fail2ban::start(&ns, dir.path(), JAILS);
    f2b.client(&["set", "ssh-test", "banip", "173.245.48.9"])
        .unwrap();
    let host = f2b.host();
    let report = run_audit(&host, &[Provider::Cloudflare], &[80, 443]);
    let check = check_of(&report, "fail2ban.cdn-banned");
    // fail2ban's real iptables-multiport action put the ban behind `--dports 22`.
    assert!(
        blocked(&report, Provider::Cloudflare).is_empty(),
        "{}",
        table_text(&report)
    );
    assert_eq!(check.status, Status::Warn, "{}", check.detail);
    assert_eq!(check.cause, None);
    assert!(
        check.detail.contains("jail ssh-test banned 173.245.48.9"),
        "{}",
        check.detail
    );
    assert!(
        check.detail.contains("not on ports 80,443"),
        "{}",
        check.detail
    );
    assert!(check
        .fix
        .as_deref()
        .unwrap_or_default()
        .contains("fail2ban-client set ssh-test unbanip 173.245.48.9"));
    // The same address banned by the web jail too: the cause again.
    f2b.client(&["set", "nginx-test", "banip", "173.245.48.9"])
        .unwrap();
    let report = run_audit(&host, &[Provider::Cloudflare], &[80, 443]);
    let check = check_of(&report, "fail2ban.cdn-banned");
    assert_eq!(check.status, Status::Fail, "{}", check.detail);
    assert_eq!(
        check.cause,
        Some(origin_agent::cause::CauseId::Fail2banCdnBanned)
    );
}

#[test]
fn no_fail2ban_and_no_tools_are_skips_not_failures() {
    require!("ip");
    let Some(ns) = netns() else { return };
    let host = NsHost {
        ns: &ns,
        f2b_socket: None,
        remap: vec![(
            "/var/lib/fail2ban/fail2ban.sqlite3".into(),
            "/nonexistent/f2b.sqlite3".into(),
        )],
    };
    let report = run_audit(&host, &[Provider::Cloudflare], &[80, 443]);
    let f = report
        .checks
        .iter()
        .find(|c| c.id == "fail2ban.cdn-banned")
        .unwrap();
    assert_eq!(f.status, Status::Skip);
    // An empty namespace: every table accepts.
    let fw = report
        .checks
        .iter()
        .find(|c| c.id == "firewall.cloudflare")
        .unwrap();
    assert_eq!(fw.status, Status::Ok, "{}", fw.detail);
}

fn fixture(name: &str) -> Option<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/firewall")
        .join(name);
    std::fs::read_to_string(p).ok()
}

#[test]
fn fixture_ufw_fail2ban_docker_host() {
    let texts = RuleTexts {
        iptables: fixture("ufw-f2b-docker/iptables-save.txt"),
        ip6tables: fixture("ufw-f2b-docker/ip6tables-save.txt"),
        nft_json: fixture("ufw-f2b-docker/nft.json"),
        ipset: fixture("ufw-f2b-docker/ipset-save.txt"),
        ..Default::default()
    };
    assert!(texts.iptables.is_some(), "fixture missing");
    let rs = build_rulesets(&texts);
    let cat = CdnCatalog::bundled();
    let v = evaluate_rules(&rs, &cat, &[Provider::Cloudflare], &[80, 443]);
    let b: Vec<(Vec<u16>, Vec<IpNet>, String)> = v[0]
        .blocked
        .iter()
        .map(|b| (b.ports.clone(), b.ranges.clone(), b.rule.chain.clone()))
        .collect();
    // fail2ban's nginx jail banned one Cloudflare edge; docker's chains are on FORWARD and do
    // not matter for the input path; ufw allows 80 and 443.
    assert_eq!(
        b,
        vec![(
            vec![80, 443],
            vec![net("162.158.100.23/32")],
            "f2b-nginx-limit-req".to_string()
        )],
        "{:#?}",
        v[0]
    );
    assert!(
        v[0].allowed
            .iter()
            .all(
                |a| (a.rule.chain == "ufw-user-input" || a.rule.chain == "ufw6-user-input")
                    && a.rule.position > 0
            ),
        "{:#?}",
        v[0].allowed
    );
}

#[test]
fn fixture_csf_host() {
    let texts = RuleTexts {
        iptables: fixture("csf/iptables-save.txt"),
        ip6tables: fixture("csf/ip6tables-save.txt"),
        ipset: fixture("csf/ipset-save.txt"),
        ..Default::default()
    };
    assert!(texts.iptables.is_some(), "fixture missing");
    let rs = build_rulesets(&texts);
    let cat = CdnCatalog::bundled();
    let v = evaluate_rules(&rs, &cat, &[Provider::Cloudflare], &[80, 443]);
    let b: Vec<(Vec<u16>, Vec<IpNet>, String, usize)> = v[0]
        .blocked
        .iter()
        .map(|b| {
            (
                b.ports.clone(),
                b.ranges.clone(),
                b.rule.chain.clone(),
                b.rule.position,
            )
        })
        .collect();
    // csf.deny holds one Cloudflare /24 (in the chain_DENY ipset) and one address (a DENYIN rule).
    assert_eq!(
        b,
        vec![
            (
                vec![80, 443],
                vec![net("104.16.77.0/24")],
                "DENYIN".to_string(),
                1
            ),
            (
                vec![80, 443],
                vec![net("108.162.210.5/32")],
                "DENYIN".to_string(),
                2
            ),
        ],
        "{:#?}",
        v[0]
    );
}

#[test]
fn a_recorded_snapshot_replays_to_the_same_verdicts() {
    require!("ip", "iptables", "ipset", "nft");
    let Some(ns) = netns() else { return };
    ns.script(
        "ipset create cdnban hash:net family inet
         ipset add cdnban 141.101.70.0/23
         iptables -A INPUT -p tcp --dport 443 -m set --match-set cdnban src -j DROP
         nft add table inet extra
         nft add chain inet extra input '{ type filter hook input priority 10; policy accept; }'
         nft add rule inet extra input ip saddr 190.93.240.0/24 tcp dport 80 drop",
    );
    let recorder = origin_agent::host::recorder::Recorder::new(NsHost {
        ns: &ns,
        f2b_socket: None,
        remap: vec![],
    });
    let live = run_audit(&recorder, &[Provider::Cloudflare], &[80, 443]);
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    recorder.write(&snap, "test-host").unwrap();
    let replay_host = origin_agent::host::snapshot::SnapshotHost::open(&snap).unwrap();
    let replay = run_audit(&replay_host, &[Provider::Cloudflare], &[80, 443]);
    assert_eq!(live.providers, replay.providers);
    let got = blocked(&replay, Provider::Cloudflare);
    assert_eq!(
        got,
        vec![
            (
                vec![80],
                Verdict::Drop,
                vec![net("190.93.240.0/24")],
                "input".to_string(),
                1
            ),
            (
                vec![443],
                Verdict::Drop,
                vec![net("141.101.70.0/23")],
                "INPUT".to_string(),
                1
            ),
        ]
    );
}

#[test]
fn docker_published_port_is_evaluated_on_the_forward_path() {
    require!("ip", "iptables", "iptables-save");
    let Some(ns) = netns() else { return };
    // Docker's chains for a container publishing 8080 → 172.17.0.2:80, and the common
    // "only Cloudflare may reach my containers" DOCKER-USER rule that forgot a range. The INPUT
    // rule must not count: forwarded connections never traverse INPUT.
    ns.script(
        "iptables -P FORWARD DROP
         iptables -N DOCKER
         iptables -N DOCKER-USER
         iptables -A FORWARD -j DOCKER-USER
         iptables -A FORWARD -o docker0 -j DOCKER
         iptables -A FORWARD -i docker0 ! -o docker0 -j ACCEPT
         iptables -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
         iptables -A DOCKER-USER -i eth0 -s 173.245.48.0/20 -j RETURN
         iptables -A DOCKER-USER -i eth0 -s 103.21.244.0/22 -j RETURN
         iptables -A DOCKER-USER -i eth0 -p tcp -m conntrack --ctorigdstport 8080 -j DROP
         iptables -A DOCKER-USER -i eth0 -j DROP
         iptables -A DOCKER-USER -j RETURN
         iptables -t nat -N DOCKER
         iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
         iptables -t nat -A DOCKER -i docker0 -j RETURN
         iptables -t nat -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
         iptables -A INPUT -p tcp --dport 8080 -s 173.245.48.0/20 -j DROP",
    );
    let host = NsHost {
        ns: &ns,
        f2b_socket: None,
        remap: vec![],
    };
    let report = run_audit(&host, &[Provider::Cloudflare], &[8080]);
    let v4: Vec<BlockedRow> = blocked(&report, Provider::Cloudflare)
        .into_iter()
        .filter(|b| b.2.iter().all(|n| matches!(n, IpNet::V4(_))))
        .collect();
    // Everything but the two allowed ranges is dropped by DOCKER-USER rule 4 (rule 3 is
    // uncertain: --ctorigdstport is not modelled).
    let allowed = [net("173.245.48.0/20"), net("103.21.244.0/22")];
    let cf = CdnCatalog::bundled()
        .get(Provider::Cloudflare)
        .unwrap()
        .v4
        .clone();
    let expected: Vec<IpNet> = cf.into_iter().filter(|n| !allowed.contains(n)).collect();
    assert_eq!(v4.len(), 1, "{}", table_text(&report));
    assert_eq!(v4[0].2, expected);
    assert_eq!((v4[0].3.as_str(), v4[0].4), ("DOCKER-USER", 4));
    let v = &report.providers[0];
    let accepted: Vec<&str> = v
        .allowed
        .iter()
        .filter(|a| a.family == origin_agent::addrset::Family::V4)
        .map(|a| a.rule.chain.as_str())
        .collect();
    assert_eq!(accepted, ["DOCKER"]);
    assert!(v
        .uncertain
        .iter()
        .any(|u| u.reason.contains("--ctorigdstport")));
    let check = report
        .checks
        .iter()
        .find(|c| c.id == "firewall.cloudflare")
        .unwrap();
    assert!(
        check
            .detail
            .contains("port 8080 is forwarded to 172.17.0.2:80 (DNAT)"),
        "{}",
        check.detail
    );
}

#[test]
fn an_nftables_dnat_of_a_web_port_is_evaluated_on_the_forward_path() {
    require!("ip", "nft");
    let Some(ns) = netns() else { return };
    // A native nftables host forwarding 443 to a backend, with a forward chain that lets only
    // one Cloudflare range through; the input chain (which forwarded traffic never sees) drops.
    ns.nft(
        r#"
table ip nat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "docker0" tcp dport 443 dnat to 172.17.0.9:8443
    tcp dport { 443, 8443 } dnat to 10.20.0.5:8443
  }
}
table inet filter {
  chain input {
    type filter hook input priority 0; policy drop;
  }
  chain forward {
    type filter hook forward priority 0; policy drop;
    ip saddr 173.245.48.0/20 tcp dport 8443 accept
  }
}
"#,
    );
    let host = NsHost {
        ns: &ns,
        f2b_socket: None,
        remap: vec![],
    };
    let report = run_audit(&host, &[Provider::Cloudflare], &[443]);
    let check = report
        .checks
        .iter()
        .find(|c| c.id == "firewall.cloudflare")
        .unwrap();
    assert!(
        check
            .detail
            .contains("port 443 is forwarded to 10.20.0.5:8443 (DNAT)"),
        "{}",
        check.detail
    );
    // On the forward path with the port after the DNAT: the one range passes, the rest of the
    // IPv4 list meets the forward chain's policy (not the input chain's).
    let v = &report.providers[0];
    let v4_allowed: Vec<(String, Vec<IpNet>)> = v
        .allowed
        .iter()
        .filter(|a| a.family == origin_agent::addrset::Family::V4)
        .map(|a| (a.rule.chain.clone(), a.ranges.clone()))
        .collect();
    assert_eq!(
        v4_allowed,
        [("forward".to_string(), vec![net("173.245.48.0/20")])],
        "{}",
        table_text(&report)
    );
    let v4_blocked: Vec<BlockedRow> = blocked(&report, Provider::Cloudflare)
        .into_iter()
        .filter(|b| b.2.iter().all(|n| matches!(n, IpNet::V4(_))))
        .collect();
    assert!(!v4_blocked.is_empty());
    assert!(
        v4_blocked.iter().all(|b| b.3 == "forward"),
        "{}",
        table_text(&report)
    );
}

#[test]
fn with_no_cdn_configured_a_rule_aimed_at_one_names_it_and_a_default_deny_is_reported() {
    require!("ip", "iptables", "ip6tables", "iptables-save");
    let Some(ns) = netns() else { return };
    // Cloudflare's edge dropped on the web ports by a rule that names its range (the access log
    // would show no Cloudflare client at all); an unrelated address dropped too.
    ns.script(
        "iptables -A INPUT -s 173.245.48.0/20 -p tcp -m multiport --dports 80,443 -j DROP
         iptables -A INPUT -s 203.0.113.50/32 -j DROP",
    );
    let host = NsHost {
        ns: &ns,
        f2b_socket: None,
        remap: vec![],
    };
    let report = run_audit(&host, &[], &[80, 443]);
    let check = check_of(&report, "firewall.cloudflare");
    assert_eq!(check.status, Status::Fail, "{}", check.detail);
    assert_eq!(
        check.cause,
        Some(origin_agent::cause::CauseId::FirewallCdnBlocked)
    );
    assert!(check.detail.contains("no CDN is configured or detected"));
    assert_eq!(
        blocked(&report, Provider::Cloudflare),
        vec![(
            vec![80, 443],
            Verdict::Drop,
            vec![net("173.245.48.0/20")],
            "INPUT".to_string(),
            1
        )]
    );
    assert_eq!(report.providers.len(), 1, "{}", table_text(&report));
    assert!(report.checks.iter().all(|c| c.id != "firewall.web-ports"));

    // A default deny that lets only SSH in closes the web ports to everyone: that, not a CDN.
    ns.script(
        "iptables -F INPUT
         iptables -A INPUT -p tcp --dport 22 -j ACCEPT
         iptables -P INPUT DROP",
    );
    let report = run_audit(&host, &[], &[80, 443]);
    let check = check_of(&report, "firewall.web-ports");
    assert_eq!(check.status, Status::Fail, "{}", check.detail);
    assert!(check.cause.is_none());
    assert!(report.providers.is_empty(), "{}", table_text(&report));
}

#[test]
fn with_no_cdn_configured_a_fail2ban_ban_of_a_cdn_edge_is_the_cause() {
    require!(
        "ip",
        "iptables",
        "fail2ban-server",
        "fail2ban-client",
        "sqlite3"
    );
    let Some(ns) = netns() else { return };
    let dir = tempfile::tempdir().unwrap();
    let f2b = Fail2ban::start(&ns, dir.path(), JAILS);
    f2b.client(&["set", "nginx-test", "banip", "173.245.48.9"])
        .unwrap();
    let host = f2b.host();
    let report = run_audit(&host, &[], &[80, 443]);
    let check = check_of(&report, "fail2ban.cdn-banned");
    assert_eq!(check.status, Status::Fail, "{}", check.detail);
    assert_eq!(
        check.cause,
        Some(origin_agent::cause::CauseId::Fail2banCdnBanned)
    );
    assert!(check.detail.contains("173.245.48.9 (cloudflare)"));
    // The ban's rule names an edge address: the firewall evaluation names Cloudflare too.
    let got = blocked(&report, Provider::Cloudflare);
    assert_eq!(got.len(), 1, "{}", table_text(&report));
    assert_eq!(got[0].2, vec![net("173.245.48.9/32")]);
}
