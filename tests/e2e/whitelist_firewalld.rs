//! `whitelist` with the real firewalld (Debian 12 package) installed in a debootstrapped root
//! (built once, reused) and run inside the test's origin namespace, chrooted, on a private D-Bus
//! of its own (never the machine's bus, firewall or /etc). Real connections from a Cloudflare
//! address and a non-CDN address; `firewall-cmd --reload` keeps the whitelist; the rollback puts
//! `/etc/firewalld` back file for file and the ruleset rule for rule; a step failing midway leaves
//! runtime, permanent configuration and files as they were; the audit explains which zone the
//! CDN's traffic lands in and what decides it. Recipe and traps:
//! `../shared/research/labs/firewalld-lab.md`.

use super::*;
use crate::util::debian_root::{in_root, Chroot, Turn};
use crate::util::services::Killed;

const BUS_DIR: &str = "/run/oa-test-bus";

const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/oa-test-bus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
</busconfig>
"#;

/// The root with firewalld, its bus configuration, and the pristine /etc/firewalld kept.
fn firewalld_root() -> Result<PathBuf, String> {
    debian_root(
        "firewalld-root",
        "firewalld dbus nftables iproute2 procps ipset netbase",
        "",
        &|root| {
            std::fs::write(root.join("etc/oa-test-bus.conf"), BUS_CONF).unwrap();
            let keep = root.join("var/lib/origin-agent-test");
            std::fs::create_dir_all(&keep).unwrap();
            ok(&[
                "cp",
                "-a",
                root.join("etc/firewalld").to_str().unwrap(),
                keep.join("firewalld").to_str().unwrap(),
            ]);
            Ok(())
        },
    )
}

/// argv that runs `args` in `root` inside namespace `ns`, with /proc, /sys and /dev mounted and
/// the lab bus in the environment; every step execs, so a spawned child's pid is the daemon's.
fn in_root_argv(root: &Path, ns: &str, args: &[&str]) -> Vec<String> {
    let how = Chroot {
        devices: true,
        env: vec![format!(
            "DBUS_SYSTEM_BUS_ADDRESS=unix:path={BUS_DIR}/system_bus_socket"
        )],
        ..Chroot::default()
    };
    in_root(root, Some(ns), &how, args)
}

/// Every file under `dir`, with its bytes.
fn files_of(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn firewalld_apply_survives_reload_and_rolls_back_exactly() {
    need_root_and_tools!();
    let Some(fw) = Running::start() else { return };
    let started = Instant::now();
    let (lab, etc) = (&fw.lab, fw.root.join("etc/firewalld"));
    let ruleset = || lab.origin_exec(&["nft", "list", "ruleset"]);
    let (etc0, rules0) = (files_of(&etc), ruleset());
    assert!(
        !lab.reaches(CDN4) && !lab.reaches(OTHER4),
        "web open before"
    );

    let (code, text) = fw.whitelist(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("auto chose firewalld"), "{text}");
    assert!(text.contains("--add-rich-rule='rule family=\"ipv4\" source ipset=\"oa-cdn-cloudflare-v4\" port port=\"80\" protocol=\"tcp\" accept'"), "{text}");
    assert_eq!(files_of(&etc), etc0, "the dry run changed /etc/firewalld");

    let (code, text) = fw.whitelist(&["--apply"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("applied and verified"), "{text}");
    assert!(lab.reaches(CDN4) && lab.reaches(CDN6), "{text}");
    assert!(!lab.reaches(OTHER4) && !lab.reaches(OTHER6));

    let (code, text) = fw.run(&["firewall-cmd", "--reload"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(lab.reaches(CDN4), "a reload lost the whitelist");

    let (code, text) = fw.whitelist(&["--apply"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to change"), "{text}");

    let (code, text) = fw.whitelist(&["--rollback"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        files_of(&etc),
        etc0,
        "/etc/firewalld differs after the rollback: {text}"
    );
    assert_eq!(ruleset(), rules0);
    assert!(!lab.reaches(CDN4));
    eprintln!("firewalld: whole check in {:?}", started.elapsed());
}

/// A fresh firewalld (pristine `/etc/firewalld`, no agent state) running in a new lab's origin
/// namespace on the test bus, the agent's binary in the root: the first test's setup, shared by
/// the tests below. Fields drop in order: firewalld and the bus before the namespaces.
struct Running {
    /// firewalld, then the bus: the fields drop in order, and a vector from first to last.
    daemons: Vec<Killed>,
    lab: Lab,
    root: PathBuf,
    _turn: Turn,
}

impl Running {
    /// `None` (after saying why) where the root cannot be built.
    fn start() -> Option<Running> {
        let turn = Turn::root("firewalld-root");
        let root = match firewalld_root() {
            Ok(root) => root,
            Err(why) => {
                crate::skip(&why);
                return None;
            }
        };
        let etc = root.join("etc/firewalld");
        let _ = std::fs::remove_dir_all(&etc);
        let pristine = root.join("var/lib/origin-agent-test/firewalld");
        ok(&[
            "cp",
            "-a",
            pristine.to_str().unwrap(),
            etc.to_str().unwrap(),
        ]);
        let _ = std::fs::remove_dir_all(root.join("var/lib/origin-agent"));
        let _ = std::fs::remove_dir_all(root.join("etc/origin-agent"));
        let bus_dir = root.join(BUS_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&bus_dir).unwrap();
        let _ = std::fs::remove_file(bus_dir.join("system_bus_socket"));
        std::fs::copy(
            env!("CARGO_BIN_EXE_origin-agent"),
            root.join("usr/local/bin/origin-agent"),
        )
        .unwrap();
        let mut r = Running {
            daemons: Vec::new(),
            lab: Lab::new(),
            root,
            _turn: turn,
        };
        r.spawn(&[
            "dbus-daemon",
            "--config-file=/etc/oa-test-bus.conf",
            "--nofork",
            "--nopidfile",
        ]);
        let started = Instant::now();
        while !bus_dir.join("system_bus_socket").exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the test bus did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r.spawn(&["firewalld", "--nofork", "--nopid"]);
        while r.run(&["firewall-cmd", "--state"]).1.trim() != "running" {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "firewalld did not reach running"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(r)
    }

    fn spawn(&mut self, args: &[&str]) {
        let argv = in_root_argv(&self.root, &self.lab.origin, args);
        let child = Proc::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.daemons.insert(0, Killed(child));
    }

    /// Exit code, stdout and stderr of `args` in the root, in the origin namespace.
    fn exec(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let argv = in_root_argv(&self.root, &self.lab.origin, args);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = sh(&refs);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn run(&self, args: &[&str]) -> (Option<i32>, String) {
        let (code, out, err) = self.exec(args);
        (code, out + &err)
    }

    fn whitelist(&self, extra: &[&str]) -> (Option<i32>, String) {
        let mut args = vec!["origin-agent", "whitelist", "--provider", "cloudflare"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The audit's checks by id (the JSON report, cloudflare configured as the CDN).
    fn audit(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let conf = self.root.join("etc/origin-agent");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("config.yaml"),
            "cdn:\n  providers: [cloudflare]\n",
        )
        .unwrap();
        let (_, out, err) = self.exec(&["origin-agent", "audit", "--json"]);
        let report: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("audit printed no JSON ({e}): {out}{err}"));
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
            .collect()
    }

    /// firewalld as it stands, runtime and permanent, and every file of /etc/firewalld.
    fn everything(&self) -> (String, std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        let mut text = String::new();
        for args in [
            &["--list-all-zones"][..],
            &["--permanent", "--list-all-zones"],
            &["--get-ipsets"],
            &["--permanent", "--get-ipsets"],
        ] {
            let mut argv = vec!["firewall-cmd"];
            argv.extend_from_slice(args);
            let (code, out) = self.run(&argv);
            assert_eq!(code, Some(0), "{argv:?}: {out}");
            text.push_str(&format!("== {}\n{out}", args.join(" ")));
        }
        (text, files_of(&self.root.join("etc/firewalld")))
    }
}

fn check<'a>(
    checks: &'a std::collections::BTreeMap<String, serde_json::Value>,
    id: &str,
) -> (&'a str, &'a str, &'a str) {
    let c = checks
        .get(id)
        .unwrap_or_else(|| panic!("no {id} check in {:?}", checks.keys()));
    (
        c["status"].as_str().unwrap_or(""),
        c["detail"].as_str().unwrap_or(""),
        c["fix"].as_str().unwrap_or(""),
    )
}

#[test]
fn firewalld_audit_explains_the_zone_that_blocks_then_the_rich_rule_that_allows() {
    need_root_and_tools!();
    let Some(fw) = Running::start() else { return };
    let started = Instant::now();
    let checks = fw.audit();
    let (status, detail, fix) = check(&checks, "firewalld.cloudflare");
    assert_eq!(status, "fail", "{detail}");
    assert!(
        detail.starts_with("firewalld: traffic from the ")
            && detail.contains(" IPv4 ranges and the ")
            && detail.contains(" IPv6 ranges lands in zone public")
            && detail.contains("lands in zone public (default zone); public allows dhcpv6-client, ssh and no http/https service, port or rich rule: blocked (port 80 refused by target default: rejected; port 443 refused by target default: rejected)"),
        "{detail}"
    );
    assert!(
        fix.contains(
            "firewall-cmd --permanent --zone=public --add-service=http --add-service=https"
        ) && fix.contains("--backend firewalld --apply"),
        "{fix}"
    );
    // The raw nftables verdict names the zone too, and a fix that survives a reload.
    let (status, detail, fix) = check(&checks, "firewall.cloudflare");
    assert_eq!(status, "fail", "{detail}");
    assert!(
        detail.starts_with("firewalld: traffic from")
            && detail.contains(" — cloudflare is blocked"),
        "{detail}"
    );
    assert!(fix.contains("--backend firewalld"), "{fix}");
    assert_eq!(check(&checks, "firewalld.drift").0, "ok");

    let (code, text) = fw.whitelist(&["--apply", "--backend", "firewalld"]);
    assert_eq!(code, Some(0), "{text}");
    // Only the web ports: a server on 8080 stays out of reach of the CDN, until a runtime-only
    // change opens it (which the next reload would lose).
    let _alt = super::csf::web_server(&fw.lab, 8080);
    let listening = Instant::now();
    while !sh(&[
        "ip",
        "netns",
        "exec",
        &fw.lab.origin,
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-m",
        "1",
        "http://127.0.0.1:8080/",
    ])
    .status
    .success()
    {
        assert!(
            listening.elapsed() < Duration::from_secs(5),
            "no server on 8080"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(super::csf::connects(&fw.lab, CDN4, 80));
    assert!(!super::csf::connects(&fw.lab, CDN4, 8080));
    let (code, text) = fw.run(&["firewall-cmd", "--add-port=8080/tcp"]);
    assert_eq!(code, Some(0), "{text}");
    let opened = Instant::now();
    while !super::csf::connects(&fw.lab, CDN4, 8080) {
        assert!(
            opened.elapsed() < Duration::from_secs(5),
            "8080 did not open"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let checks = fw.audit();
    let (status, detail, _) = check(&checks, "firewalld.cloudflare");
    assert_eq!(status, "ok", "{detail}");
    assert!(
        detail.contains("lands in zone public (default zone); public allows dhcpv6-client, ssh, 8080/tcp, 4 rich rule(s): allowed (port 80 allowed by rich rule `rule family=\"ipv4\" source ipset=\"oa-cdn-cloudflare-v4\" port port=\"80\" protocol=\"tcp\" accept`"),
        "{detail}"
    );
    assert!(
        detail.contains("allowed by rich rule `rule family=\"ipv6\" source ipset=\"oa-cdn-cloudflare-v6\" port port=\"443\" protocol=\"tcp\" accept`"),
        "{detail}"
    );
    // The raw verdict: accepted (firewalld's own `ct status dnat` and rpfilter rules leave it
    // a doubt), with firewalld's reading beside it.
    let (status, detail, _) = check(&checks, "firewall.cloudflare");
    assert_ne!(status, "fail", "{detail}");
    assert!(
        status == "ok" || detail.starts_with("firewalld: traffic from"),
        "{detail}"
    );

    let (status, detail, fix) = check(&checks, "firewalld.drift");
    assert_eq!(status, "warn", "{detail}");
    assert_eq!(
        detail,
        "zone public: port 8080/tcp only at runtime (the next reload drops it)"
    );
    assert!(fix.contains("--runtime-to-permanent"), "{fix}");
    eprintln!("firewalld audit: whole check in {:?}", started.elapsed());
}

#[test]
fn firewalld_failing_midway_leaves_runtime_and_permanent_exactly_as_they_were() {
    need_root_and_tools!();
    let Some(fw) = Running::start() else { return };
    // Someone's ipset under the agent's IPv6 name, but of the IPv4 family: the agent fills its
    // new IPv4 set, then firewalld refuses the IPv6 entries.
    for args in [
        &[
            "--permanent",
            "--new-ipset=oa-cdn-cloudflare-v6",
            "--type=hash:net",
        ][..],
        &["--reload"],
    ] {
        let mut argv = vec!["firewall-cmd"];
        argv.extend_from_slice(args);
        let (code, text) = fw.run(&argv);
        assert_eq!(code, Some(0), "{text}");
    }
    let before = fw.everything();
    let started = Instant::now();
    let (code, text) = fw.whitelist(&["--apply", "--backend", "firewalld"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(
        text.contains("--ipset=oa-cdn-cloudflare-v6 --add-entries-from-file")
            && text.contains("the permanent configuration was changed only in part"),
        "{text}"
    );
    assert!(text.contains("/etc/firewalld restored ("), "{text}");
    let after = fw.everything();
    assert_eq!(
        after.0, before.0,
        "firewalld's runtime or permanent view changed"
    );
    assert_eq!(after.1, before.1, "/etc/firewalld changed: {text}");
    assert!(!fw.lab.reaches(CDN4));
    assert_eq!(fw.run(&["firewall-cmd", "--state"]).1.trim(), "running");
    eprintln!("firewalld failing midway: {:?}", started.elapsed());
}

#[test]
fn the_daemon_keeps_the_firewalld_whitelist_current_and_tells_the_exec_hook() {
    need_root_and_tools!();
    let Some(mut fw) = Running::start() else {
        return;
    };
    let (code, text) = fw.whitelist(&["--apply", "--backend", "firewalld"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(fw.lab.reaches(CDN4) && !fw.lab.reaches(OTHER4), "{text}");
    // The provider now publishes one range less and one more (the lab's non-CDN address), as a
    // `cdn update` would have saved it.
    let bundled = CdnCatalog::bundled();
    let cf = bundled.get(Provider::Cloudflare).unwrap();
    let mut v4: Vec<String> = cf.v4.iter().map(ToString::to_string).collect();
    v4.retain(|n| n != "103.21.244.0/22");
    v4.push("198.51.100.0/24".into());
    let v6: Vec<String> = cf.v6.iter().map(ToString::to_string).collect();
    let ranges = fw.root.join("var/lib/origin-agent/cdn-ranges");
    std::fs::create_dir_all(&ranges).unwrap();
    std::fs::write(
        ranges.join("cloudflare.json"),
        serde_json::json!({"provider": "cloudflare", "fetched_at": "2026-12-03T13:00:00Z",
            "url": "https://www.cloudflare.com/ips-v4", "v4": v4, "v6": v6})
        .to_string(),
    )
    .unwrap();
    // The daemon, every second, with an exec hook that keeps what it gets.
    let hook_out = fw.root.join("root/hook.out");
    let _ = std::fs::remove_file(&hook_out);
    std::fs::write(
        fw.root.join("usr/local/bin/oa-hook"),
        "#!/bin/sh\n{ echo \"$ORIGIN_AGENT_EVENT\"; cat; echo; } >> /root/hook.out\n",
    )
    .unwrap();
    ok(&[
        "chmod",
        "755",
        fw.root.join("usr/local/bin/oa-hook").to_str().unwrap(),
    ]);
    std::fs::write(fw.root.join("var/log/oa-test-access.log"), "").unwrap();
    std::fs::create_dir_all(fw.root.join("etc/origin-agent")).unwrap();
    std::fs::write(
        fw.root.join("etc/origin-agent/config.yaml"),
        "logs:\n  nginx_access: [/var/log/oa-test-access.log]\ncdn:\n  providers: [cloudflare]\ndaemon:\n  whitelist_every: 1s\nnotify:\n  exec: /usr/local/bin/oa-hook\n",
    )
    .unwrap();
    let started = Instant::now();
    fw.spawn(&["origin-agent", "run"]);
    let got = loop {
        let got = std::fs::read_to_string(&hook_out).unwrap_or_default();
        if got.lines().count() >= 2 {
            break got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no notification from the daemon: {got}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (event, json) = got.split_once('\n').unwrap();
    assert_eq!(event, "whitelist_changed", "{got}");
    let note: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(note["backend"], "firewalld", "{note}");
    assert_eq!(
        note["added"],
        serde_json::json!(["cloudflare 198.51.100.0/24"])
    );
    assert_eq!(
        note["removed"],
        serde_json::json!(["cloudflare 103.21.244.0/22"])
    );
    assert!(
        note["summary"]
            .as_str()
            .unwrap()
            .ends_with("1 ranges added, 1 removed, applied and verified"),
        "{note}"
    );
    // Real traffic: the newly published range passes, the CDN still does.
    assert!(fw.lab.reaches(OTHER4) && fw.lab.reaches(CDN4));
    eprintln!("kept current and notified in {:?}", started.elapsed());
    // Later passes find nothing to change: nothing more is sent.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(std::fs::read_to_string(&hook_out).unwrap(), got);
}
