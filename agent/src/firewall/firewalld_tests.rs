//! firewalld's configuration read from fixtures in the shapes of the real files (the stock
//! zones and services of Debian's firewalld 1.3, `--list-all-zones` output).

#![allow(clippy::unwrap_used)]

use super::*;
use crate::cause::CauseId;
use crate::host::fixture::FixtureHost;

const PUBLIC: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<zone>
  <short>Public</short>
  <description>For use in public areas. You do not trust the other computers on networks to not harm your computer. Only selected incoming connections are accepted.</description>
  <service name="ssh"/>
  <service name="dhcpv6-client"/>
  <forward/>
</zone>
"#;

const TRUSTED: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<zone target="ACCEPT">
  <short>Trusted</short>
  <description>All network connections are accepted.</description>
  <forward/>
</zone>
"#;

const BLOCK: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<zone target="%%REJECT%%">
  <short>Block</short>
  <description>Unsolicited incoming network packets are rejected.</description>
  <forward/>
</zone>
"#;

const DROP: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<zone target="DROP">
  <short>Drop</short>
  <description>Unsolicited incoming network packets are dropped.</description>
  <forward/>
</zone>
"#;

/// The public zone after `whitelist --backend firewalld --apply` (as firewalld writes it).
const PUBLIC_WHITELISTED: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<zone>
  <short>Public</short>
  <description>For use in public areas.</description>
  <service name="ssh"/>
  <service name="dhcpv6-client"/>
  <forward/>
  <rule family="ipv4">
    <source ipset="oa-cdn-cloudflare-v4"/>
    <port port="80" protocol="tcp"/>
    <accept/>
  </rule>
  <rule family="ipv4">
    <source ipset="oa-cdn-cloudflare-v4"/>
    <port port="443" protocol="tcp"/>
    <accept/>
  </rule>
</zone>
"#;

const IPSET: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<ipset type="hash:net">
  <option name="family" value="inet"/>
  <entry>173.245.48.0/20</entry>
</ipset>
"#;

fn service(port: &str, proto: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<service>\n  <short>S</short>\n  <port protocol=\"{proto}\" port=\"{port}\"/>\n</service>\n")
}

fn catalog() -> CdnCatalog {
    let mut c = CdnCatalog::bundled();
    let e = c.providers.get_mut(&Provider::Cloudflare).unwrap();
    e.v4 = vec!["173.245.48.0/20".parse().unwrap()];
    e.v6 = Vec::new();
    c
}

/// A host with the stock zones and services and `/etc/firewalld/firewalld.conf`, no
/// firewall-cmd (firewalld not running).
fn stock() -> FixtureHost {
    FixtureHost::new()
        .file(
            "/etc/firewalld/firewalld.conf",
            "# comment\nDefaultZone=public\nCleanupOnExit=yes\n",
        )
        .file("/usr/lib/firewalld/zones/public.xml", PUBLIC)
        .file("/usr/lib/firewalld/zones/trusted.xml", TRUSTED)
        .file("/usr/lib/firewalld/zones/drop.xml", DROP)
        .file("/usr/lib/firewalld/zones/block.xml", BLOCK)
        .file("/usr/lib/firewalld/services/ssh.xml", service("22", "tcp"))
        .file(
            "/usr/lib/firewalld/services/dhcpv6-client.xml",
            service("546", "udp"),
        )
        .file("/usr/lib/firewalld/services/http.xml", service("80", "tcp"))
        .file(
            "/usr/lib/firewalld/services/https.xml",
            service("443", "tcp"),
        )
}

fn run_checks(host: &FixtureHost) -> Vec<Check> {
    checks(host, &catalog(), &[Provider::Cloudflare], &[80, 443]).checks
}

fn by<'a>(found: &'a [Check], id: &str) -> &'a Check {
    found
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id} in {found:?}"))
}

const FW: &str = "/usr/bin/firewall-cmd";

/// A host with firewalld running: its runtime as `firewall-cmd` prints it.
fn running(host: FixtureHost, list_all_zones: &str, ipsets: &[(&str, &str)]) -> FixtureHost {
    let names: Vec<&str> = ipsets.iter().map(|(n, _)| *n).collect();
    let mut host = host
        .file(FW, "")
        .command_ok(&format!("{FW} --state"), "running\n")
        .command_ok(&format!("{FW} --get-default-zone"), "public\n")
        .command_ok(&format!("{FW} --list-all-zones"), list_all_zones)
        .command_ok(&format!("{FW} --get-ipsets"), &names.join(" "));
    for (name, info) in ipsets {
        host = host.command_ok(&format!("{FW} --info-ipset={name}"), info);
    }
    host
}

/// What `firewall-cmd --list-all-zones` prints for the stock zones of [`stock`].
const STOCK_RUNTIME: &str = "block\n  target: %%REJECT%%\n  icmp-block-inversion: no\n  interfaces: \n  sources: \n  services: \n  ports: \n  protocols: \n  forward: yes\n  masquerade: no\n  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n\ndrop\n  target: DROP\n  icmp-block-inversion: no\n  interfaces: \n  sources: \n  services: \n  ports: \n  protocols: \n  forward: yes\n  masquerade: no\n  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n\npublic (active)\n  target: default\n  icmp-block-inversion: no\n  interfaces: \n  sources: \n  services: dhcpv6-client ssh\n  ports: \n  protocols: \n  forward: yes\n  masquerade: no\n  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n\ntrusted\n  target: ACCEPT\n  icmp-block-inversion: no\n  interfaces: \n  sources: \n  services: \n  ports: \n  protocols: \n  forward: yes\n  masquerade: no\n  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n";

#[test]
fn the_stock_public_zone_is_explained_as_blocking_the_cdn() {
    let host = running(stock(), STOCK_RUNTIME, &[]);
    let found = checks(&host, &catalog(), &[Provider::Cloudflare], &[80, 443]);
    assert!(found.running);
    let c = by(&found.checks, "firewalld.cloudflare");
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.detail.starts_with("firewalld: traffic from 173.245.48.0/20 lands in zone public (default zone); public allows dhcpv6-client, ssh and no http/https service, port or rich rule: blocked (port 80 refused by target default: rejected; port 443 refused by target default: rejected)"),
        "{}",
        c.detail
    );
    let fix = c.fix.clone().unwrap();
    assert!(
        fix.contains(
            "firewall-cmd --permanent --zone=public --add-service=http --add-service=https"
        ) && fix
            .contains("origin-agent whitelist --provider cloudflare --backend firewalld --apply"),
        "{fix}"
    );
    assert_eq!(by(&found.checks, "firewalld.drift").status, Status::Ok);
    // No raw firewall check to explain: this one carries the cause.
    let mut merged = Vec::new();
    merge(&mut merged, found.clone());
    assert_eq!(merged[0].cause, Some(CauseId::FirewallCdnBlocked));
    assert_eq!(merged[1].cause, None, "the drift check is no CDN block");
    // A failing raw check (the nftables firewalld generated) gets the zone named and a fix
    // that survives a reload; the firewalld check then carries no second cause.
    let raw = Check::fail(
        "firewall.cloudflare",
        Area::Firewall,
        "Firewall lets cloudflare in",
    )
    .detail("cloudflare is rejected by nftables inet firewalld/filter_INPUT policy")
    .cause(CauseId::FirewallCdnBlocked)
    .fix("nft insert rule inet firewalld filter_INPUT ...");
    let mut merged = vec![raw];
    merge(&mut merged, found);
    assert!(
        merged[0]
            .detail
            .starts_with("firewalld: traffic from 173.245.48.0/20 lands in zone public")
            && merged[0].detail.ends_with(
                " — cloudflare is rejected by nftables inet firewalld/filter_INPUT policy"
            ),
        "{}",
        merged[0].detail
    );
    assert!(merged[0]
        .fix
        .as_deref()
        .unwrap()
        .contains("--backend firewalld"));
    assert_eq!(merged[1].cause, None);

    // Stopped: what it would do once started, a warning without a cause.
    let found = checks(&stock(), &catalog(), &[Provider::Cloudflare], &[80, 443]);
    assert!(!found.running);
    let c = by(&found.checks, "firewalld.cloudflare");
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.title.contains("(stopped) would let cloudflare")
            && c.detail.contains("firewalld is not running"),
        "{c:?}"
    );
    let mut merged = Vec::new();
    merge(&mut merged, found);
    assert_eq!(merged[0].cause, None);
    // Not installed: nothing at all.
    assert!(run_checks(&FixtureHost::new()).is_empty());
}

#[test]
fn the_whitelists_rich_rules_and_ipset_are_explained_as_allowing_it() {
    let host = stock()
        .file("/etc/firewalld/zones/public.xml", PUBLIC_WHITELISTED)
        .file("/etc/firewalld/ipsets/oa-cdn-cloudflare-v4.xml", IPSET);
    let found = run_checks(&host);
    let c = by(&found, "firewalld.cloudflare");
    assert_eq!(c.status, Status::Ok, "{}", c.detail);
    assert!(c.detail.contains("lands in zone public (default zone); public allows dhcpv6-client, ssh, 2 rich rule(s): allowed (port 80 allowed by rich rule `rule family=\"ipv4\" source ipset=\"oa-cdn-cloudflare-v4\" port port=\"80\" protocol=\"tcp\" accept`; port 443 allowed by rich rule"), "{}", c.detail);
    // A range only partly in the ipset: partly blocked, the rest named.
    let mut cat = catalog();
    cat.providers.get_mut(&Provider::Cloudflare).unwrap().v4 = vec![
        "173.245.48.0/20".parse().unwrap(),
        "103.21.244.0/22".parse().unwrap(),
    ];
    let found = checks(&host, &cat, &[Provider::Cloudflare], &[80]).checks;
    let c = by(&found, "firewalld.cloudflare");
    assert_eq!(c.status, Status::Warn, "{}", c.detail);
    assert!(
        c.detail
            .contains("port 80 for 103.21.244.0/22 refused by target default: rejected"),
        "{}",
        c.detail
    );
}

#[test]
fn source_bindings_interfaces_targets_and_rule_order_decide_the_zone() {
    // The CDN's ipset bound as a source of the trusted zone: lands there, target ACCEPT.
    let trusted = TRUSTED.replace("<forward/>", "<source ipset=\"cdn\"/>\n  <forward/>");
    let host = stock()
        .file("/etc/firewalld/zones/trusted.xml", trusted)
        .file("/etc/firewalld/ipsets/cdn.xml", IPSET);
    let c = by(&run_checks(&host), "firewalld.cloudflare").clone();
    assert_eq!(c.status, Status::Ok, "{}", c.detail);
    assert!(
        c.detail
            .contains("lands in zone trusted (source ipset:cdn of zone trusted)"),
        "{}",
        c.detail
    );

    // The arrival interface bound to the drop zone (default route on eth0).
    let drop = DROP.replace("<forward/>", "<interface name=\"eth0\"/>\n  <forward/>");
    let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
    let host = stock()
        .file("/etc/firewalld/zones/drop.xml", drop)
        .file("/proc/net/route", route);
    let c = by(&run_checks(&host), "firewalld.cloudflare").clone();
    assert_eq!(c.status, Status::Warn, "stopped: a warning");
    assert!(c.detail.contains("lands in zone drop (interface eth0); drop allows nothing and no http/https service, port or rich rule: blocked (port 80 refused by target DROP: dropped"), "{}", c.detail);

    // A reject rich rule for part of the range comes before the http service.
    let public = PUBLIC.replace(
        "<forward/>",
        "<service name=\"http\"/>\n  <rule family=\"ipv4\">\n    <source address=\"173.245.48.0/24\"/>\n    <reject/>\n  </rule>\n  <rule priority=\"-5\" family=\"ipv4\">\n    <source address=\"173.245.48.0/28\"/>\n    <service name=\"http\"/>\n    <accept/>\n  </rule>",
    );
    let host = stock().file("/etc/firewalld/zones/public.xml", public);
    let found = checks(&host, &catalog(), &[Provider::Cloudflare], &[80]).checks;
    let c = by(&found, "firewalld.cloudflare");
    assert_eq!(c.status, Status::Warn, "{}", c.detail);
    assert!(c.detail.contains("port 80 for 173.245.48.0/28 allowed by rich rule `rule priority=\"-5\" family=\"ipv4\" source address=\"173.245.48.0/28\" service name=\"http\" accept`"), "{}", c.detail);
    assert!(
        c.detail.contains(
            "refused by rich rule `rule family=\"ipv4\" source address=\"173.245.48.0/24\" reject`"
        ),
        "{}",
        c.detail
    );
    assert!(c.detail.contains("allowed by service http"), "{}", c.detail);
}

#[test]
fn the_runtime_is_judged_and_its_drift_from_the_permanent_configuration_reported() {
    // At runtime someone added the whitelist's rule without --permanent.
    let list = "block\n  target: %%REJECT%%\n  icmp-block-inversion: no\n  interfaces: \n  sources: \n  services: \n  ports: \n  protocols: \n  forward: yes\n  masquerade: no\n  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n\ndrop\n  target: DROP\n  services: \n  rich rules: \n\npublic (active)\n  target: default\n  icmp-block-inversion: no\n  interfaces: \n  sources: \n  services: dhcpv6-client ssh\n  ports: 8080/tcp\n  protocols: \n  forward: yes\n  masquerade: no\n  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n\trule family=\"ipv4\" source ipset=\"oa-cdn-cloudflare-v4\" port port=\"80\" protocol=\"tcp\" accept\n\trule family=\"ipv4\" source ipset=\"oa-cdn-cloudflare-v4\" port port=\"443\" protocol=\"tcp\" accept\n\ntrusted\n  target: ACCEPT\n  services: \n  rich rules: \n";
    let host = running(
        stock().file("/etc/firewalld/ipsets/oa-cdn-cloudflare-v4.xml", IPSET),
        list,
        &[(
            "oa-cdn-cloudflare-v4",
            "oa-cdn-cloudflare-v4\n  type: hash:net\n  options: family=inet\n  entries: 173.245.48.0/20 198.51.100.0/24\n",
        )],
    );
    // A set no zone refers to is not asked about (each call is a Python start-up).
    let host = host.command_ok(
        &format!("{FW} --get-ipsets"),
        "country-cn oa-cdn-cloudflare-v4\n",
    );
    let found = run_checks(&host);
    assert!(
        !host
            .journal()
            .iter()
            .any(|l| l.contains("--info-ipset=country-cn")),
        "{:?}",
        host.journal()
    );
    let c = by(&found, "firewalld.cloudflare");
    assert_eq!(c.status, Status::Ok, "{}", c.detail);
    assert!(!c.detail.contains("could not be read"), "{}", c.detail);
    let d = by(&found, "firewalld.drift");
    assert_eq!(d.status, Status::Warn);
    assert!(d.detail.contains("zone public: rich rule `rule family=\"ipv4\" source ipset=\"oa-cdn-cloudflare-v4\" port port=\"80\" protocol=\"tcp\" accept` only at runtime (the next reload drops it)"), "{}", d.detail);
    assert!(
        d.detail
            .contains("zone public: port 8080/tcp only at runtime"),
        "{}",
        d.detail
    );
    assert!(d.detail.contains("ipset oa-cdn-cloudflare-v4: 1 entries only at runtime, 0 only in the permanent configuration"), "{}", d.detail);
    assert!(
        !d.detail.contains("zone block") && !d.detail.contains("zone trusted"),
        "{}",
        d.detail
    );
}

#[test]
fn garbled_hostile_or_huge_xml_is_a_check_that_could_not_run() {
    for bad in [
        "<zone><service name=\"ssh\"></zone>".to_string(),
        "<?xml version=\"1.0\"?>\n<!DOCTYPE z [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]>\n<zone><short>&b;</short></zone>".to_string(),
        "<ipset/>".to_string(),
        format!("<zone>{}</zone>", "<service name=\"x\"/>".repeat(60_000)),
        "\u{0}\u{1}\u{2}".to_string(),
    ] {
        let host = stock().file("/etc/firewalld/zones/public.xml", &bad);
        let found = run_checks(&host);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].status, Status::Skip);
        assert!(
            found[0].detail.starts_with("firewalld's configuration could not be read: /etc/firewalld/zones/public.xml"),
            "{}",
            found[0].detail
        );
    }
}

#[test]
fn rich_rules_read_the_same_from_xml_and_from_firewall_cmd() {
    let text = "rule family=\"ipv6\" source NOT address=\"2400:cb00::/32\" port port=\"8000-8080\" protocol=\"tcp\" log prefix=\"x y\" level=\"info\" drop";
    let r = parse_rule_text(text);
    assert_eq!(r.family, Some(Family::V6));
    assert!(r.invert);
    assert_eq!(r.action, Action::Drop);
    assert_eq!(
        r.matches,
        RuleMatch::Port(PortRange {
            lo: 8000,
            hi: 8080,
            proto: "tcp".into()
        })
    );
    let xml = "<zone><rule family=\"ipv6\"><source address=\"2400:cb00::/32\" invert=\"True\"/><port port=\"8000-8080\" protocol=\"tcp\"/><log prefix=\"x y\" level=\"info\"/><drop/></rule></zone>";
    let z = parse_zone("z", "z.xml", xml).unwrap();
    assert_eq!(z.rules[0], r);
    // Unterminated quotes and odd tokens: no panic, nothing invented.
    let odd = parse_rule_text("rule family=\"ipv4 source address= = accept");
    assert_eq!(odd.source, None);
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn no_reader_panics_on_any_text(text in "(<|>|/|=|\"|rule|zone|source|ipset|port|family|priority|not|accept|\\n|\\t| |[a-z0-9.:-])*") {
            let _ = parse_zone("z", "p", &text);
            let _ = parse_ipset("p", &text);
            let _ = parse_service("p", &text);
            let _ = parse_rule_text(&text);
            let _ = parse_list_all_zones(&text);
            let _ = parse_info_ipset(&text);
        }
    }
}
