//! `whitelist` against real iptables / ip6tables: an "edge" namespace holding a Cloudflare address
//! and a non-CDN address (IPv4 and IPv6), an "origin" namespace with a default-drop INPUT policy
//! serving HTTP, joined by a veth pair. Connections are real `curl`s bounded by `-m 2`; every
//! firewall command runs inside the origin namespace through a host that prefixes
//! `ip netns exec`. The namespaces are deleted on drop, also when a test fails.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use origin_agent::cdn::{CdnCatalog, Provider};
use origin_agent::host::live::LiveHost;
use origin_agent::host::rewrite::{in_netns, CommandRewrite};
use origin_agent::host::{Command, CommandOutput, Host, HostError};
use origin_agent::whitelist::{self, Backend, WhitelistError, WhitelistRequest};

use crate::util::cmd::{ok, private_mounts, sh, unavailable};
use crate::util::debian_root::debian_root;
use crate::util::netns::Netns;
use crate::util::or_skip;
use crate::util::services::{self, wait_until, Fail2ban, Killed};

const CDN4: &str = "173.245.48.10"; // inside Cloudflare's 173.245.48.0/20
const OTHER4: &str = "198.51.100.7"; // TEST-NET-2, no CDN
const EXTRA4: &str = "203.0.113.9"; // TEST-NET-3, put in a test list as a "dropped" range
const CDN6: &str = "2400:cb00::10"; // inside Cloudflare's 2400:cb00::/32
const OTHER6: &str = "2001:db8::7";
const ORIGIN4: &str = "10.77.0.2";
const ORIGIN6: &str = "fd77::2";

const NFT_DEFAULT_DROP: &str = "table inet filter {
  chain input {
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
    meta l4proto ipv6-icmp accept
    tcp dport 22 accept
  }
}
";

/// Why these tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    if let Some(why) = unavailable(&[
        "ip",
        "iptables",
        "ip6tables",
        "iptables-restore",
        "curl",
        "python3",
    ]) {
        return Some(why);
    }
    if !sh(&["ip", "netns", "list"]).status.success() {
        return Some("network namespaces unavailable".into());
    }
    None
}

macro_rules! need_root_and_tools {
    () => {
        if let Some(why) = missing() {
            crate::skip(&why);
            return;
        }
    };
}

/// The two namespaces, the veth pair and the HTTP server; all removed on drop (the server
/// first).
struct Lab {
    _server: Killed,
    edge: Netns,
    origin: Netns,
    state: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let edge = Netns::new("wl-edge").unwrap();
        let origin = Netns::new("wl-origin").unwrap();
        edge.veth("e0", &origin, "o0");
        edge.addr("e0", "10.77.0.1/24");
        for a in [CDN4, OTHER4, EXTRA4] {
            edge.addr("e0", &format!("{a}/32"));
        }
        edge.addr("e0", "fd77::1/64");
        for a in [CDN6, OTHER6] {
            edge.addr("e0", &format!("{a}/128"));
        }
        origin.addr("o0", &format!("{ORIGIN4}/24"));
        origin.addr("o0", &format!("{ORIGIN6}/64"));
        for net in [
            "173.245.48.0/20",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2400:cb00::/32",
            "2001:db8::/32",
        ] {
            origin.route(net, "o0");
        }
        let server = Killed(origin.spawn(&["python3", "-m", "http.server", "80", "--bind", "::"]));
        let lab = Lab {
            _server: server,
            edge,
            origin,
            state: tempfile::tempdir().unwrap(),
        };
        assert!(
            wait_until(Duration::from_secs(15), || lab.curl_in(
                &lab.origin,
                "::1",
                "[::1]"
            )),
            "server did not start"
        );
        lab
    }

    /// The origin's own firewall: default drop, loopback, established, ICMPv6, SSH allowed.
    fn default_drop(&self) {
        for tool in ["iptables", "ip6tables"] {
            let run = |args: &[&str]| {
                let mut full = vec![tool];
                full.extend_from_slice(args);
                self.origin.exec(&full);
            };
            run(&["-P", "INPUT", "DROP"]);
            run(&["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
            run(&[
                "-A",
                "INPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]);
            if tool == "ip6tables" {
                run(&["-A", "INPUT", "-p", "ipv6-icmp", "-j", "ACCEPT"]);
            }
            run(&["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"]);
        }
    }

    /// The same origin with a native nftables table instead: default drop in `inet filter`.
    fn default_drop_nft(&self) {
        self.nft_load(NFT_DEFAULT_DROP);
    }

    fn nft_load(&self, script: &str) {
        self.origin.nft(script);
    }

    /// The origin firewalled by ufw (default deny incoming, SSH allowed), with ufw's files
    /// copied to /etc/netns/ORIGIN/ufw so the machine's own /etc/ufw is never touched.
    fn ufw_enabled(&mut self) -> bool {
        if !Path::new("/usr/sbin/ufw").exists() || !Path::new("/etc/ufw").is_dir() {
            return false;
        }
        let etc = self.origin.etc();
        ok(&["cp", "-a", "/etc/ufw", etc.join("ufw").to_str().unwrap()]);
        self.origin_exec(&["ufw", "default", "deny", "incoming"]);
        self.origin_exec(&["ufw", "allow", "22/tcp"]);
        self.origin_exec(&["ufw", "--force", "enable"]);
        true
    }

    fn nft_text(&self) -> String {
        self.origin_exec(&["nft", "list", "ruleset"])
    }

    fn origin_exec(&self, args: &[&str]) -> String {
        self.origin.exec(args)
    }

    fn curl_in(&self, ns: &Netns, from: &str, to: &str) -> bool {
        ns.curl(from, &format!("http://{to}:80/"), &[])
    }

    /// Whether a connection from `from` (an edge address) reaches the origin's web server.
    fn reaches(&self, from: &str) -> bool {
        let to = if from.contains(':') {
            format!("[{ORIGIN6}]")
        } else {
            ORIGIN4.to_string()
        };
        self.curl_in(&self.edge, from, &to)
    }

    /// Both families' rule sets, counters and comments aside.
    fn rules(&self) -> String {
        let v4 = self.origin_exec(&["iptables-save"]);
        let v6 = self.origin_exec(&["ip6tables-save"]);
        let sets = self.origin_exec(&["ipset", "save"]);
        format!(
            "{}----\n{}----\n{}",
            whitelist::ipt::normalized(&v4),
            whitelist::ipt::normalized(&v6),
            whitelist::ipsets::normalized(&sets)
        )
    }

    fn host(&self) -> NetnsHost {
        NetnsHost {
            ns: self.origin.name.clone(),
            fail: None,
            panic_on: None,
            meddle: std::sync::Mutex::new(None),
            no_ipset: false,
        }
    }

    fn request(&self, apply: bool, rollback: bool) -> WhitelistRequest {
        self.request_for(Backend::Iptables, apply, rollback)
    }

    fn request_for(&self, backend: Backend, apply: bool, rollback: bool) -> WhitelistRequest {
        WhitelistRequest {
            providers: vec![Provider::Cloudflare],
            ports: vec![80, 443],
            backend,
            apply,
            rollback,
            persist: false,
            fail2ban: false,
            nginx_real_ip: false,
            state_dir: self.state.path().to_path_buf(),
            ..WhitelistRequest::default()
        }
    }
}

/// The live host, with every command run inside a namespace; optionally a command that fails
/// (a faulty `iptables-restore`) or that "kills" the run (a panic in the middle of the apply).
struct NetnsHost {
    ns: String,
    fail: Option<String>,
    panic_on: Option<String>,
    /// After a command whose key starts with `.0`, runs `.1` in the namespace once (someone
    /// else changing the firewall in the middle of the apply).
    meddle: std::sync::Mutex<Option<(String, Vec<String>)>>,
    /// Pretend `ipset` is not installed (the per-range rule mode).
    no_ipset: bool,
}

impl CommandRewrite for NetnsHost {
    fn run(&self, command: &Command) -> Result<CommandOutput, HostError> {
        let key = command.key();
        if self.no_ipset && command.program == "ipset" {
            return Err(HostError::CommandMissing {
                command: "ipset".into(),
            });
        }
        if self
            .panic_on
            .as_ref()
            .is_some_and(|p| key.starts_with(p.as_str()))
        {
            panic!("simulated kill before {key}");
        }
        let mut wrapped = if self
            .fail
            .as_ref()
            .is_some_and(|f| key.starts_with(f.as_str()))
        {
            Command::new("sh", &["-c", "echo 'injected failure' >&2; exit 4"])
        } else {
            in_netns(&self.ns, command)
        };
        wrapped.timeout = command.timeout;
        wrapped.stdin = command.stdin.clone();
        let result = LiveHost.run(&wrapped);
        let extra = {
            let mut m = self.meddle.lock().unwrap();
            match m.as_ref() {
                Some((after, _)) if key.starts_with(after.as_str()) => m.take(),
                _ => None,
            }
        };
        if let Some((_, mut cmd)) = extra {
            let program = cmd.remove(0);
            let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let _ = LiveHost.run(&in_netns(&self.ns, &Command::new(&program, &refs)));
        }
        result
    }
}

fn catalog_with_extra(extra: &str) -> CdnCatalog {
    let mut c = CdnCatalog::bundled();
    let cf = c.providers.get_mut(&Provider::Cloudflare).unwrap();
    cf.v4.push(extra.parse::<IpNet>().unwrap());
    c
}

#[test]
fn iptables_dry_run_apply_idempotence_and_rollback_with_real_traffic() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    let host = lab.host();
    let catalog = CdnCatalog::bundled();
    let pristine = lab.rules();
    assert!(!lab.reaches(CDN4) && !lab.reaches(OTHER4));
    assert!(!lab.reaches(CDN6) && !lab.reaches(OTHER6));

    // Dry run: prints the change for both families, changes nothing.
    let dry = whitelist::run(&host, &lab.request(false, false), &catalog).unwrap();
    let text = whitelist::render(&dry);
    eprintln!("{text}");
    assert!(text.contains("dry run"), "{text}");
    assert!(text.contains("+ 173.245.48.0/20 (cloudflare)"), "{text}");
    assert!(text.contains("+ 2400:cb00::/32 (cloudflare)"), "{text}");
    assert!(text.contains("ip6tables-restore -w 10 --noflush"), "{text}");
    assert_eq!(lab.rules(), pristine);
    assert!(!lab.reaches(CDN4));

    // Apply: the CDN connects, the other address still cannot.
    let applied = whitelist::run(&host, &lab.request(true, false), &catalog).unwrap();
    let text = whitelist::render(&applied);
    eprintln!("{text}");
    assert!(applied.succeeded() && applied.applied, "{text}");
    assert!(applied.verification.as_ref().unwrap().ok(), "{text}");
    assert!(lab.reaches(CDN4) && lab.reaches(CDN6), "{text}");
    assert!(!lab.reaches(OTHER4) && !lab.reaches(OTHER6));
    let after_first = lab.rules();
    assert!(after_first.contains("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"));

    // A second apply changes nothing.
    let again = whitelist::run(&host, &lab.request(true, false), &catalog).unwrap();
    assert!(
        again.plans.iter().all(|p| p.is_empty()),
        "{}",
        whitelist::render(&again)
    );
    assert!(!again.applied && again.succeeded());
    assert_eq!(lab.rules(), after_first);

    // Rollback restores the rule sets exactly.
    let back = whitelist::run(&host, &lab.request(false, true), &catalog).unwrap();
    assert!(back.succeeded(), "{}", whitelist::render(&back));
    assert_eq!(lab.rules(), pristine);
    assert!(!lab.reaches(CDN4) && !lab.reaches(CDN6));
    let nothing = whitelist::run(&host, &lab.request(false, true), &catalog);
    assert!(matches!(nothing, Err(WhitelistError::NothingToRollBack(_))));
}

#[test]
fn iptables_removes_only_ranges_the_provider_dropped_and_keeps_foreign_rules() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    let host = lab.host();
    let first = whitelist::run(
        &host,
        &lab.request(true, false),
        &catalog_with_extra("203.0.113.0/24"),
    )
    .unwrap();
    assert!(first.succeeded(), "{}", whitelist::render(&first));
    assert!(lab.reaches(EXTRA4) && lab.reaches(CDN4));
    // Someone adds a rule of their own to the agent's chain: it must survive.
    lab.origin_exec(&[
        "iptables",
        "-A",
        "ORIGIN-AGENT-CDN",
        "-s",
        "10.99.0.0/16",
        "-j",
        "ACCEPT",
    ]);

    let second = whitelist::run(&host, &lab.request(true, false), &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&second);
    assert!(second.succeeded(), "{text}");
    let v4 = &second.plans[0];
    assert_eq!(v4.remove.len(), 1, "{text}");
    assert_eq!(v4.remove[0].net.to_string(), "203.0.113.0/24");
    assert!(v4.add.is_empty(), "{text}");
    assert!(!lab.reaches(EXTRA4) && lab.reaches(CDN4));
    assert!(lab
        .rules()
        .contains("-A ORIGIN-AGENT-CDN -s 10.99.0.0/16 -j ACCEPT"));
}

#[test]
fn a_failing_restore_leaves_the_firewall_exactly_as_it_was() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    let pristine = lab.rules();
    let catalog = CdnCatalog::bundled();
    // The IPv6 transaction fails after the IPv4 one succeeded: IPv4 is undone.
    let mut host = lab.host();
    host.fail = Some("ip6tables-restore".into());
    let out = whitelist::run(&host, &lab.request(true, false), &catalog).unwrap();
    let text = whitelist::render(&out);
    assert!(!out.succeeded() && !out.applied, "{text}");
    assert!(
        out.failure.as_deref().unwrap().contains("injected failure"),
        "{text}"
    );
    assert_eq!(lab.rules(), pristine, "{text}");
    assert!(!lab.reaches(CDN4));
    // The first transaction fails: nothing was changed at all.
    host.fail = Some("iptables-restore".into());
    let out = whitelist::run(&host, &lab.request(true, false), &catalog).unwrap();
    assert!(!out.succeeded());
    assert_eq!(lab.rules(), pristine);
}

#[test]
fn an_apply_killed_midway_is_undone_by_the_next_run() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    let pristine = lab.rules();
    let catalog = CdnCatalog::bundled();
    let mut host = lab.host();
    host.panic_on = Some("ip6tables-restore".into());
    let req = lab.request(true, false);
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        whitelist::run(&host, &req, &catalog)
    }));
    assert!(killed.is_err());
    assert_ne!(
        lab.rules(),
        pristine,
        "the IPv4 half was applied before the kill"
    );
    // The next apply finds the interrupted journal, undoes it, then applies cleanly; rollback
    // then returns to the state before the interrupted apply.
    host.panic_on = None;
    let next = whitelist::run(&host, &req, &catalog).unwrap();
    let text = whitelist::render(&next);
    assert!(next.succeeded(), "{text}");
    assert!(text.contains("interrupted apply"), "{text}");
    let back = whitelist::run(&host, &lab.request(false, true), &catalog).unwrap();
    assert!(back.succeeded(), "{}", whitelist::render(&back));
    assert_eq!(lab.rules(), pristine);
}

#[test]
fn a_range_still_blocked_after_apply_rolls_the_change_back() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    // A drop earlier on the input path than INPUT: the whitelist cannot win there.
    lab.origin_exec(&[
        "iptables",
        "-t",
        "raw",
        "-A",
        "PREROUTING",
        "-s",
        "173.245.48.0/24",
        "-j",
        "DROP",
    ]);
    let pristine = lab.rules();
    let out = whitelist::run(
        &lab.host(),
        &lab.request(true, false),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    let text = whitelist::render(&out);
    assert!(out.rolled_back.is_some() && !out.applied, "{text}");
    let v = out.verification.as_ref().unwrap();
    assert!(
        v.blocked.iter().any(|b| b.contains("173.245.48.0/24")),
        "{text}"
    );
    assert!(text.contains("still blocked"), "{text}");
    assert_eq!(lab.rules(), pristine);
}

#[test]
fn nftables_auto_detected_apply_dropped_range_idempotence_and_exact_rollback() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop_nft();
    let host = lab.host();
    let pristine = lab.nft_text();
    assert!(!lab.reaches(CDN4) && !lab.reaches(CDN6));

    let dry = whitelist::run(
        &host,
        &lab.request_for(Backend::Auto, false, false),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    let text = whitelist::render(&dry);
    assert_eq!(dry.backend, Backend::Nftables, "{text}");
    assert!(
        text.contains("add element inet filter oa_cdn_cloudflare_v4"),
        "{text}"
    );
    assert!(
        text.contains("insert rule inet filter input ip6 saddr @oa_cdn_cloudflare_v6"),
        "{text}"
    );
    assert_eq!(lab.nft_text(), pristine);

    // First apply with an extra range the provider will "drop" later.
    let first = whitelist::run(
        &host,
        &lab.request_for(Backend::Auto, true, false),
        &catalog_with_extra("203.0.113.0/24"),
    )
    .unwrap();
    let text = whitelist::render(&first);
    assert!(first.succeeded() && first.applied, "{text}");
    assert!(
        lab.reaches(CDN4) && lab.reaches(CDN6) && lab.reaches(EXTRA4),
        "{text}"
    );
    assert!(!lab.reaches(OTHER4) && !lab.reaches(OTHER6));
    assert!(lab.nft_text().contains("tcp dport 22 accept"));

    // The list changes: only the dropped range goes, in place (no rule is touched).
    let second = whitelist::run(
        &host,
        &lab.request_for(Backend::Auto, true, false),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    let text = whitelist::render(&second);
    assert!(second.succeeded(), "{text}");
    assert_eq!(second.plans[0].remove.len(), 1, "{text}");
    assert!(
        second.plans[0]
            .script
            .starts_with("delete element inet filter oa_cdn_cloudflare_v4 { 203.0.113.0/24 }"),
        "{text}"
    );
    assert!(
        !second.plans.iter().any(|p| p.script.contains("rule")),
        "{text}"
    );
    assert!(!lab.reaches(EXTRA4) && lab.reaches(CDN4));
    let settled = lab.nft_text();

    // Idempotent.
    let third = whitelist::run(
        &host,
        &lab.request_for(Backend::Auto, true, false),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    assert!(
        third.plans.iter().all(|p| p.is_empty()),
        "{}",
        whitelist::render(&third)
    );
    assert_eq!(lab.nft_text(), settled);

    // Rollback undoes the last change (back to the first apply's state), then nothing is left.
    let back = whitelist::run(
        &host,
        &lab.request_for(Backend::Auto, false, true),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    assert!(back.succeeded(), "{}", whitelist::render(&back));
    assert!(lab.reaches(EXTRA4));
    assert!(matches!(
        whitelist::run(
            &host,
            &lab.request_for(Backend::Auto, false, true),
            &CdnCatalog::bundled()
        ),
        Err(WhitelistError::NothingToRollBack(_))
    ));
}

#[test]
fn nftables_rollback_restores_the_ruleset_text_exactly_and_failures_change_nothing() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop_nft();
    let pristine = lab.nft_text();
    let catalog = CdnCatalog::bundled();
    let mut host = lab.host();
    host.fail = Some("nft -f".into());
    let failed = whitelist::run(
        &host,
        &lab.request_for(Backend::Nftables, true, false),
        &catalog,
    )
    .unwrap();
    assert!(
        !failed.succeeded() && !failed.applied,
        "{}",
        whitelist::render(&failed)
    );
    assert_eq!(lab.nft_text(), pristine);

    host.fail = None;
    let applied = whitelist::run(
        &host,
        &lab.request_for(Backend::Nftables, true, false),
        &catalog,
    )
    .unwrap();
    assert!(applied.succeeded(), "{}", whitelist::render(&applied));
    assert_ne!(lab.nft_text(), pristine);
    assert!(lab.reaches(CDN4));
    let back = whitelist::run(
        &host,
        &lab.request_for(Backend::Nftables, false, true),
        &catalog,
    )
    .unwrap();
    assert!(back.succeeded(), "{}", whitelist::render(&back));
    assert_eq!(lab.nft_text(), pristine);
    assert!(!lab.reaches(CDN4));
}

#[test]
fn with_ufw_the_agent_chain_wins_and_survives_a_ufw_reload() {
    need_root_and_tools!();
    let mut lab = Lab::new();
    if !lab.ufw_enabled() {
        crate::skip("ufw is not installed");
        return;
    }
    let host = lab.host();
    let catalog = CdnCatalog::bundled();
    let pristine = lab.rules();
    let ufw_status = lab.origin_exec(&["ufw", "status", "verbose"]);
    assert!(!lab.reaches(CDN4) && !lab.reaches(CDN6));

    let out = whitelist::run(
        &host,
        &lab.request_for(Backend::Auto, true, false),
        &catalog,
    )
    .unwrap();
    let text = whitelist::render(&out);
    assert_eq!(out.backend, Backend::Iptables, "{text}");
    assert!(out.succeeded() && out.applied, "{text}");
    assert!(lab.reaches(CDN4) && lab.reaches(CDN6), "{text}");
    assert!(!lab.reaches(OTHER4) && !lab.reaches(OTHER6));
    // ufw's own rules and state are untouched.
    assert_eq!(lab.origin_exec(&["ufw", "status", "verbose"]), ufw_status);

    lab.origin_exec(&["ufw", "reload"]);
    assert!(lab.reaches(CDN4), "the allow is lost after `ufw reload`");
    let again = whitelist::run(
        &host,
        &lab.request_for(Backend::Auto, true, false),
        &catalog,
    )
    .unwrap();
    assert!(
        again.plans.iter().all(|p| p.is_empty()),
        "{}",
        whitelist::render(&again)
    );

    let back = whitelist::run(
        &host,
        &lab.request_for(Backend::Auto, false, true),
        &catalog,
    )
    .unwrap();
    assert!(back.succeeded(), "{}", whitelist::render(&back));
    assert_eq!(lab.rules(), pristine);
    assert!(!lab.reaches(CDN4));
}

/// nginx inside the origin namespace on 10.77.0.2:8080, configured in a temp dir, logging only
/// `$remote_addr`; `http_extra` goes into `http {}`, `events_include` puts the conf.d include in
/// `events {}` (where `set_real_ip_from` is not allowed) instead of `http {}`.
struct Nginx {
    nginx: services::Nginx,
    _dir: tempfile::TempDir,
    /// No lab runs while this nginx does (discovery in other tests looks at every process).
    _lock: crate::lab::Exclusive,
}

impl Nginx {
    fn start(lab: &Lab, http_extra: &str, events_include: bool) -> Option<Nginx> {
        if !Path::new(services::Nginx::BINARY).exists() {
            return None;
        }
        let lock = crate::lab::exclusive();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
        let include = format!("include {d}/conf.d/*.conf;");
        let (ev, ht) = if events_include {
            (include.as_str(), "")
        } else {
            ("", include.as_str())
        };
        let http = format!(
            "log_format ra '$remote_addr';\n  access_log {d}/access.log ra;\n  {http_extra}\n  {ht}\n  server {{ listen {ORIGIN4}:8080; location / {{ return 200 \"ok\\n\"; }} }}"
        );
        let nginx = services::Nginx::start(dir.path(), Some(&lab.origin), ev, &http);
        Some(Nginx {
            nginx,
            _dir: dir,
            _lock: lock,
        })
    }

    fn conf(&self) -> String {
        self.nginx.conf().display().to_string()
    }

    fn include(&self) -> PathBuf {
        self.nginx.dir().join("conf.d/origin-agent-real-ip.conf")
    }

    /// The client address nginx logs for a request from `from` claiming `visitor`.
    fn logged_client(&self, lab: &Lab, from: &str, visitor: &str) -> Option<String> {
        let log = self.nginx.dir().join("access.log");
        let before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        let header = format!("CF-Connecting-IP: {visitor}");
        if !lab
            .edge
            .curl(from, &format!("http://{ORIGIN4}:8080/"), &["-H", &header])
        {
            return None;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().nth(before).map(str::to_string)
    }
}

#[test]
fn nginx_real_ip_include_is_tested_then_reloaded_and_only_cdn_ranges_are_trusted() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    let Some(nginx) = Nginx::start(&lab, "", false) else {
        crate::skip("nginx is not installed");
        return;
    };
    // A rule of the operator's own lets the non-CDN address reach nginx too.
    lab.origin_exec(&[
        "iptables", "-A", "INPUT", "-s", OTHER4, "-p", "tcp", "--dport", "8080", "-j", "ACCEPT",
    ]);
    assert_eq!(
        nginx.logged_client(&lab, CDN4, "192.0.2.33"),
        None,
        "blocked before"
    );
    let mut req = lab.request(true, false);
    req.ports = vec![8080];
    req.nginx_real_ip = true;
    req.nginx_conf = Some(nginx.conf().into());
    req.nginx_include = Some(nginx.include());

    let dry = whitelist::run(
        &lab.host(),
        &WhitelistRequest {
            apply: false,
            ..req.clone()
        },
        &CdnCatalog::bundled(),
    )
    .unwrap();
    assert!(whitelist::render(&dry).contains("set_real_ip_from 173.245.48.0/20;"));
    assert!(!nginx.include().exists());

    let out = whitelist::run(&lab.host(), &req, &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&out);
    let r = out.real_ip.as_ref().expect(&text);
    assert!(out.succeeded() && r.tested && r.reloaded, "{text}");
    // nginx reloads asynchronously: give the new workers a moment (bounded).
    let started = Instant::now();
    let mut seen = None;
    while started.elapsed() < Duration::from_secs(5) {
        seen = nginx.logged_client(&lab, CDN4, "192.0.2.33");
        if seen.as_deref() == Some("192.0.2.33") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(seen.as_deref(), Some("192.0.2.33"), "{text}");
    // A visitor outside the CDN cannot claim another address.
    assert_eq!(
        nginx.logged_client(&lab, OTHER4, "192.0.2.33").as_deref(),
        Some(OTHER4)
    );
}

#[test]
fn nginx_real_ip_include_failing_nginx_t_is_put_back_and_nothing_reloads() {
    need_root_and_tools!();
    let lab = Lab::new();
    let Some(nginx) = Nginx::start(&lab, "", true) else {
        crate::skip("nginx is not installed");
        return;
    };
    let mut req = lab.request(true, false);
    req.nginx_real_ip = true;
    req.nginx_conf = Some(nginx.conf().into());
    req.nginx_include = Some(nginx.include());
    let out = whitelist::run(&lab.host(), &req, &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&out);
    let r = out.real_ip.as_ref().expect(&text);
    assert!(!out.succeeded() && !r.tested && !r.reloaded, "{text}");
    assert!(
        r.error.as_deref().unwrap().contains("nginx -t failed"),
        "{text}"
    );
    assert!(!nginx.include().exists(), "the include was not put back");
    assert_eq!(
        nginx.logged_client(&lab, CDN4, "192.0.2.33").as_deref(),
        Some(CDN4)
    );
}

#[test]
fn nginx_real_ip_keeps_an_existing_real_ip_header() {
    need_root_and_tools!();
    let lab = Lab::new();
    let Some(nginx) = Nginx::start(&lab, "real_ip_header X-Real-IP;", false) else {
        crate::skip("nginx is not installed");
        return;
    };
    let mut req = lab.request(true, false);
    req.nginx_real_ip = true;
    req.nginx_conf = Some(nginx.conf().into());
    req.nginx_include = Some(nginx.include());
    let out = whitelist::run(&lab.host(), &req, &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&out);
    let r = out.real_ip.as_ref().expect(&text);
    assert!(out.succeeded() && r.tested && r.reloaded, "{text}");
    let written = std::fs::read_to_string(nginx.include()).unwrap();
    assert!(
        written.contains("set_real_ip_from 173.245.48.0/20;")
            && !written.contains("real_ip_header")
    );
}

/// fail2ban's jail for the whitelist: one jail `web` on ports 80,443 using iptables-multiport.
const WEB_JAIL: &str = "[DEFAULT]\nbanaction = iptables-multiport\nignoreip = 127.0.0.1/8 10.1.2.3\n\n[web]\nenabled = true\nport = 80,443\nfilter = nginx-http-auth\nlogpath = {dir}/error.log\nbackend = polling\n";

#[test]
fn fail2ban_cdn_bans_are_lifted_ignoreip_extended_and_other_bans_kept() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    if !Path::new("/usr/bin/fail2ban-client").exists() || !Path::new("/etc/fail2ban").is_dir() {
        crate::skip("fail2ban is not installed");
        return;
    }
    let f2b_dir = tempfile::tempdir().unwrap();
    let f2b = Fail2ban::start(&lab.origin, f2b_dir.path(), WEB_JAIL);
    f2b.must(&["set", "web", "banip", CDN4, OTHER4]);
    assert!(!lab.reaches(CDN4));
    let mut req = lab.request(false, false);
    req.fail2ban = true;
    req.fail2ban_conf = Some(f2b.conf());

    let dry = whitelist::run(&lab.host(), &req, &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&dry);
    assert!(
        text.contains(&format!("CDN addresses unbanned: {CDN4}")),
        "{text}"
    );
    assert!(
        f2b.must(&["get", "web", "banip"]).contains(CDN4),
        "a dry run unbanned"
    );

    req.apply = true;
    let out = whitelist::run(&lab.host(), &req, &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&out);
    let f = out.fail2ban.as_ref().expect(&text);
    assert!(out.succeeded() && f.written, "{text}");
    let banned = f2b.must(&["get", "web", "banip"]);
    assert!(
        !banned.contains(CDN4) && banned.contains(OTHER4),
        "{banned}"
    );
    let ignore = f2b.must(&["get", "web", "ignoreip"]);
    assert!(
        ignore.contains("173.245.48.0/20") && ignore.contains("10.1.2.3"),
        "{ignore}"
    );
    let dropin = std::fs::read_to_string(&f.dropin).unwrap();
    assert!(
        dropin.contains("[web]")
            && dropin.contains("173.245.48.0/20")
            && dropin.contains("10.1.2.3")
    );
    assert!(lab.reaches(CDN4) && !lab.reaches(OTHER4));
    // After a reload fail2ban reads the drop-in: the ranges stay ignored.
    f2b.must(&["reload"]);
    let ignore = f2b.must(&["get", "web", "ignoreip"]);
    assert!(ignore.contains("173.245.48.0/20"), "{ignore}");
    // A second run finds nothing to add or unban.
    let again = whitelist::run(&lab.host(), &req, &CdnCatalog::bundled()).unwrap();
    let f = again.fail2ban.as_ref().unwrap();
    assert!(
        f.jails
            .iter()
            .all(|j| j.ignore_added == 0 && j.unbanned.is_empty()),
        "{}",
        whitelist::render(&again)
    );
}

#[test]
fn a_change_by_someone_else_during_the_apply_rolls_the_whitelist_back() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    let host = lab.host();
    *host.meddle.lock().unwrap() = Some((
        "iptables-restore".into(),
        ["iptables", "-A", "INPUT", "-s", "192.0.2.99", "-j", "DROP"]
            .map(String::from)
            .to_vec(),
    ));
    let out = whitelist::run(&host, &lab.request(true, false), &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&out);
    assert!(out.rolled_back.is_some() && !out.applied, "{text}");
    let v = out.verification.as_ref().unwrap();
    assert!(
        v.other_changes.iter().any(|c| c.contains("192.0.2.99")),
        "{text}"
    );
    // Only the agent's own objects were taken back: the other change stays.
    let rules = lab.rules();
    assert!(
        rules.contains("-A INPUT -s 192.0.2.99/32 -j DROP") && !rules.contains("ORIGIN-AGENT"),
        "{rules}"
    );
    assert!(!lab.reaches(CDN4));
}

#[test]
fn an_apply_while_another_holds_the_lock_is_refused_and_changes_nothing() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    let pristine = lab.rules();
    let held = whitelist::state::lock(lab.state.path()).unwrap();
    let out = whitelist::run(
        &lab.host(),
        &lab.request(true, false),
        &CdnCatalog::bundled(),
    );
    assert!(matches!(out, Err(WhitelistError::Busy { .. })), "{out:?}");
    assert_eq!(lab.rules(), pristine);
    drop(held);
    let out = whitelist::run(
        &lab.host(),
        &lab.request(true, false),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    assert!(out.succeeded());
}

#[test]
fn nftables_persist_writes_an_include_that_survives_a_simulated_boot() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop_nft();
    let etc = tempfile::tempdir().unwrap();
    let conf = etc.path().join("nftables.conf");
    std::fs::write(&conf, format!("flush ruleset\n{NFT_DEFAULT_DROP}")).unwrap();
    let mut req = lab.request_for(Backend::Nftables, true, false);
    req.persist = true;
    req.nft_conf = Some(conf.clone());
    let out = whitelist::run(&lab.host(), &req, &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&out);
    assert!(
        out.succeeded()
            && out
                .persisted
                .as_deref()
                .unwrap_or("")
                .starts_with("nftables:"),
        "{text}"
    );
    // A second apply does not include the file twice.
    whitelist::run(&lab.host(), &req, &CdnCatalog::bundled()).unwrap();
    let written = std::fs::read_to_string(&conf).unwrap();
    assert_eq!(written.matches("include").count(), 1, "{written}");

    // "Boot": the ruleset is gone, then the configuration is loaded as nftables.service does.
    lab.origin_exec(&["nft", "flush", "ruleset"]);
    lab.origin_exec(&["nft", "-f", conf.to_str().unwrap()]);
    assert!(lab.reaches(CDN4) && lab.reaches(CDN6), "{}", lab.nft_text());
    assert!(!lab.reaches(OTHER4));

    // Rollback persists the restored state too, where the apply persisted (never where the
    // rollback request points: a decoy path must stay untouched). The second apply was a no-op,
    // so the state restored is the one before the first apply: no whitelist after the next boot.
    let mut rb = lab.request_for(Backend::Nftables, false, true);
    let decoy = etc.path().join("decoy/nftables.conf");
    rb.nft_conf = Some(decoy.clone());
    let back = whitelist::run(&lab.host(), &rb, &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&back);
    assert!(back.succeeded(), "{text}");
    assert!(
        !decoy.exists() && !etc.path().join("decoy").exists(),
        "{text}"
    );
    lab.origin_exec(&["nft", "flush", "ruleset"]);
    lab.origin_exec(&["nft", "-f", conf.to_str().unwrap()]);
    assert!(!lab.reaches(CDN4), "{text}\n{}", lab.nft_text());
}

#[test]
fn ufw_backend_through_ufw_itself_apply_dropped_range_idempotence_and_rollback() {
    need_root_and_tools!();
    let mut lab = Lab::new();
    if !lab.ufw_enabled() {
        crate::skip("ufw is not installed");
        return;
    }
    let host = lab.host();
    let req = lab.request_for(Backend::Ufw, true, false);

    let first = whitelist::run(&host, &req, &catalog_with_extra("203.0.113.0/24")).unwrap();
    let text = whitelist::render(&first);
    assert!(first.succeeded() && first.applied, "{text}");
    assert!(
        lab.reaches(CDN4) && lab.reaches(CDN6) && lab.reaches(EXTRA4),
        "{text}"
    );
    assert!(!lab.reaches(OTHER4) && !lab.reaches(OTHER6));
    let status = lab.origin_exec(&["ufw", "status"]);
    assert!(
        status.contains("173.245.48.0/20") && status.contains("# origin-agent:cloudflare"),
        "{status}"
    );
    assert!(status.contains("22/tcp"), "{status}");

    let second = whitelist::run(&host, &req, &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&second);
    assert!(second.succeeded(), "{text}");
    assert_eq!(second.plans[0].remove.len(), 1, "{text}");
    assert!(second.plans.iter().all(|p| p.add.is_empty()), "{text}");
    assert!(!lab.reaches(EXTRA4) && lab.reaches(CDN4));

    let third = whitelist::run(&host, &req, &CdnCatalog::bundled()).unwrap();
    assert!(
        third.plans.iter().all(|p| p.is_empty()),
        "{}",
        whitelist::render(&third)
    );

    // Roll back twice: to the state before the second apply, then before the first.
    let back = whitelist::run(
        &host,
        &lab.request_for(Backend::Ufw, false, true),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    assert!(back.succeeded(), "{}", whitelist::render(&back));
    assert!(lab.reaches(EXTRA4));
    assert!(matches!(
        whitelist::run(
            &host,
            &lab.request_for(Backend::Ufw, false, true),
            &CdnCatalog::bundled()
        ),
        Err(WhitelistError::NothingToRollBack(_))
    ));
}

#[test]
fn ufw_backend_rollback_restores_ufw_and_the_rules_exactly() {
    need_root_and_tools!();
    let mut lab = Lab::new();
    if !lab.ufw_enabled() {
        crate::skip("ufw is not installed");
        return;
    }
    let host = lab.host();
    let pristine = lab.rules();
    let pristine_added = lab.origin_exec(&["ufw", "show", "added"]);
    let out = whitelist::run(
        &host,
        &lab.request_for(Backend::Ufw, true, false),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    assert!(out.succeeded(), "{}", whitelist::render(&out));
    assert!(lab.reaches(CDN4));
    let back = whitelist::run(
        &host,
        &lab.request_for(Backend::Ufw, false, true),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    assert!(back.succeeded(), "{}", whitelist::render(&back));
    assert_eq!(lab.origin_exec(&["ufw", "show", "added"]), pristine_added);
    assert_eq!(lab.rules(), pristine);
    assert!(!lab.reaches(CDN4));
}

#[test]
fn ufw_backend_a_failing_ufw_command_undoes_the_commands_already_run() {
    need_root_and_tools!();
    let mut lab = Lab::new();
    if !lab.ufw_enabled() {
        crate::skip("ufw is not installed");
        return;
    }
    let pristine = lab.rules();
    let pristine_added = lab.origin_exec(&["ufw", "show", "added"]);
    let mut host = lab.host();
    // The first IPv6 rule fails after every IPv4 rule went in.
    host.fail = Some("ufw prepend allow from 2400:cb00::/32".into());
    let out = whitelist::run(
        &host,
        &lab.request_for(Backend::Ufw, true, false),
        &CdnCatalog::bundled(),
    )
    .unwrap();
    let text = whitelist::render(&out);
    assert!(!out.succeeded() && !out.applied, "{text}");
    assert!(out.failure.as_deref().unwrap().contains("undone"), "{text}");
    assert_eq!(lab.origin_exec(&["ufw", "show", "added"]), pristine_added);
    assert_eq!(lab.rules(), pristine);
}

#[test]
fn without_ipset_per_range_rules_do_the_same_and_a_later_run_with_ipset_migrates_them() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    let pristine = lab.rules();
    let mut host = lab.host();
    host.no_ipset = true;
    let out = whitelist::run(&host, &lab.request(true, false), &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&out);
    assert!(out.succeeded(), "{text}");
    assert!(out.plans.iter().all(|p| p.pre_script.is_empty()), "{text}");
    let rules = lab.rules();
    assert!(
        rules.contains("-A ORIGIN-AGENT-CDN -s 173.245.48.0/20 -p tcp"),
        "{rules}"
    );
    assert!(lab.reaches(CDN4) && lab.reaches(CDN6) && !lab.reaches(OTHER4));

    // With ipset available the per-range rules are replaced by the set, in one transaction.
    host.no_ipset = false;
    let out = whitelist::run(&host, &lab.request(true, false), &CdnCatalog::bundled()).unwrap();
    let text = whitelist::render(&out);
    assert!(out.succeeded(), "{text}");
    assert!(
        text.contains("per-range rules of cloudflare by the set"),
        "{text}"
    );
    let rules = lab.rules();
    assert!(
        !rules.contains("-A ORIGIN-AGENT-CDN -s 173.245.48.0/20"),
        "{rules}"
    );
    assert!(
        rules.contains("--match-set oa-cdn-cloudflare-v4 src"),
        "{rules}"
    );
    assert!(lab.reaches(CDN4) && lab.reaches(CDN6) && !lab.reaches(OTHER4));

    // Rollback undoes the last change only: back to the per-range rules, the sets destroyed.
    let back = whitelist::run(&host, &lab.request(false, true), &CdnCatalog::bundled()).unwrap();
    assert!(back.succeeded(), "{}", whitelist::render(&back));
    let rules = lab.rules();
    assert!(
        rules.contains("-A ORIGIN-AGENT-CDN -s 173.245.48.0/20 -p tcp")
            && !rules.contains("oa-cdn-"),
        "{rules}"
    );
    assert_ne!(rules, pristine);
}

#[test]
fn several_providers_with_large_lists_apply_and_verify_in_bounded_time() {
    need_root_and_tools!();
    let lab = Lab::new();
    lab.default_drop();
    let catalog = CdnCatalog::bundled();
    let providers = vec![
        Provider::Cloudflare,
        Provider::Gcore,
        Provider::Bunny,
        Provider::Fastly,
    ];
    let total: usize = providers
        .iter()
        .map(|p| catalog.get(*p).unwrap().len())
        .sum();
    for no_ipset in [false, true] {
        let mut host = lab.host();
        host.no_ipset = no_ipset;
        let mut req = lab.request(true, false);
        req.providers = providers.clone();
        let started = Instant::now();
        let out = whitelist::run(&host, &req, &catalog).unwrap();
        let took = started.elapsed();
        assert!(out.succeeded(), "{}", whitelist::render(&out));
        assert!(lab.reaches(CDN4) && !lab.reaches(OTHER4));
        eprintln!(
            "apply of {total} ranges ({}): {took:?}",
            if no_ipset {
                "per-range rules"
            } else {
                "ipsets"
            }
        );
        assert!(took < Duration::from_secs(60), "{took:?}");
        let back = whitelist::run(&host, &lab.request(false, true), &catalog).unwrap();
        assert!(back.succeeded(), "{}", whitelist::render(&back));
    }
}

/// The root with netfilter-persistent and its iptables and ipset plugins (debconf says no to
/// autosave).
fn persistent_root() -> Result<PathBuf, String> {
    debian_root(
        "persist-root",
        "iptables ipset netfilter-persistent iptables-persistent ipset-persistent",
        "iptables-persistent iptables-persistent/autosave_v4 boolean false\\niptables-persistent iptables-persistent/autosave_v6 boolean false\\nipset-persistent ipset-persistent/autosave boolean false\\n",
        &|_| Ok(()),
    )
}

impl Lab {
    /// Runs `args` inside the origin namespace and chrooted into `root` (with its own /proc,
    /// mounted in the namespace's private mount table and gone with the command).
    fn in_root(&self, root: &Path, args: &[&str]) -> std::process::Output {
        crate::util::debian_root::run_in_root(root, Some(&self.origin), &Default::default(), args)
    }

    /// The origin as after a reboot: no rules, no sets, every policy ACCEPT.
    fn boot_empty(&self) {
        for tool in ["iptables", "ip6tables"] {
            self.origin_exec(&[tool, "-P", "INPUT", "ACCEPT"]);
            self.origin_exec(&[tool, "-F"]);
            self.origin_exec(&[tool, "-X"]);
        }
        self.origin_exec(&["ipset", "destroy"]);
    }
}

/// Puts a file aside for the test and back afterwards, also when the test fails.
struct Aside {
    path: PathBuf,
    moved: PathBuf,
}

impl Aside {
    fn new(path: PathBuf) -> Aside {
        let moved = path.with_extension("origin-agent-test-aside");
        std::fs::rename(&path, &moved).unwrap();
        Aside { path, moved }
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        let _ = std::fs::rename(&self.moved, &self.path);
    }
}

#[path = "whitelist_csf.rs"]
mod csf;

#[path = "whitelist_managers.rs"]
mod managers;

#[path = "whitelist_firewalld.rs"]
mod firewalld;

#[test]
fn iptables_persist_saves_rules_and_sets_that_a_reboot_restores() {
    need_root_and_tools!();
    let Some(root) = or_skip(persistent_root()) else {
        return;
    };
    let lab = Lab::new();
    lab.default_drop();
    std::fs::copy(
        env!("CARGO_BIN_EXE_origin-agent"),
        root.join("usr/local/bin/origin-agent"),
    )
    .unwrap();
    // What an earlier run left in the reused root.
    for f in [
        "etc/iptables/rules.v4",
        "etc/iptables/rules.v6",
        "etc/iptables/ipsets",
    ] {
        let _ = std::fs::remove_file(root.join(f));
    }
    let _ = std::fs::remove_dir_all(root.join("var/lib/origin-agent"));
    let agent = |extra: &[&str]| {
        let mut args = vec!["origin-agent", "whitelist", "--provider", "cloudflare"];
        args.extend_from_slice(extra);
        let out = lab.in_root(&root, &args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    // Without the ipset plugin, nothing is saved: rules naming sets nobody restores would fail
    // to load at boot. The change itself stands until reboot.
    let plugin = Aside::new(root.join("usr/share/netfilter-persistent/plugins.d/10-ipset"));
    let (code, text) = agent(&["--apply", "--persist"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("not persisted"), "{text}");
    assert!(text.contains("apt install ipset-persistent"), "{text}");
    assert!(!root.join("etc/iptables/rules.v4").exists(), "{text}");
    assert!(lab.reaches(CDN4) && !lab.reaches(OTHER4));
    drop(plugin);

    // With it: rules for both families and the sets are saved.
    let (code, text) = agent(&["--apply", "--persist"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("netfilter-persistent save"), "{text}");
    let v4 = std::fs::read_to_string(root.join("etc/iptables/rules.v4")).unwrap();
    let v6 = std::fs::read_to_string(root.join("etc/iptables/rules.v6")).unwrap();
    let sets = std::fs::read_to_string(root.join("etc/iptables/ipsets")).unwrap();
    assert!(
        v4.contains(":INPUT DROP") && v4.contains("-j ORIGIN-AGENT-CDN"),
        "{v4}"
    );
    assert!(v6.contains("-j ORIGIN-AGENT-CDN"), "{v6}");
    assert!(sets.contains("create oa-cdn-cloudflare-v4"), "{sets}");
    assert!(
        sets.contains("add oa-cdn-cloudflare-v4 173.245.48.0/20"),
        "{sets}"
    );

    // A reboot: the namespace loses every rule and set (everything connects), then
    // netfilter-persistent loads what was saved, sets first.
    lab.boot_empty();
    assert!(lab.reaches(OTHER4), "the firewall was not emptied");
    let out = lab.in_root(&root, &["netfilter-persistent", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lab.reaches(CDN4) && lab.reaches(CDN6));
    assert!(!lab.reaches(OTHER4) && !lab.reaches(OTHER6));

    // The rollback puts the firewall back and saves that too: after the next reboot the CDN is
    // blocked again, as before the apply.
    let (code, text) = agent(&["--rollback"]);
    assert_eq!(code, Some(0), "{text}");
    let v4 = std::fs::read_to_string(root.join("etc/iptables/rules.v4")).unwrap();
    assert!(!v4.contains("ORIGIN-AGENT-CDN"), "{v4}");
    lab.boot_empty();
    let out = lab.in_root(&root, &["netfilter-persistent", "start"]);
    assert!(out.status.success());
    assert!(!lab.reaches(CDN4) && !lab.reaches(OTHER4));
}
