//! The whitelist transaction driven through the fixture host, without root: a failure scripted
//! at each step, and the exact sequence of commands of the change and of its undo.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::firewall::addrset::Family;
use crate::host::fixture::FixtureHost;
use crate::host::{CommandOutput, Host};

const BEFORE4: &str = "*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
";

const AFTER4: &str = "*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ORIGIN-AGENT-CDN - [0:0]
-A INPUT -m comment --comment origin-agent -j ORIGIN-AGENT-CDN
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A ORIGIN-AGENT-CDN -s 173.245.48.0/20 -p tcp -m multiport --dports 80,443 -m comment --comment \"origin-agent:cloudflare\" -j ACCEPT
COMMIT
";

const BEFORE6: &str = "*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
";

const RESTORE4: &str = "iptables-restore -w 10 --noflush";
const RESTORE6: &str = "ip6tables-restore -w 10 --noflush";

fn ok(stdout: &str) -> Result<CommandOutput, HostError> {
    Ok(CommandOutput {
        status: Some(0),
        stdout: stdout.as_bytes().to_vec(),
        stderr: String::new(),
    })
}

fn fails(stderr: &str) -> Result<CommandOutput, HostError> {
    Ok(CommandOutput {
        status: Some(1),
        stdout: Vec::new(),
        stderr: stderr.to_string(),
    })
}

fn catalog(nets: &[&str]) -> CdnCatalog {
    super::tests::catalog_with(Provider::Cloudflare, nets)
}

fn request(state: &std::path::Path, backend: Backend) -> WhitelistRequest {
    WhitelistRequest {
        providers: vec![Provider::Cloudflare],
        backend,
        apply: true,
        state_dir: state.to_path_buf(),
        ..WhitelistRequest::default()
    }
}

/// The commands that change something (everything but the reads), in order.
fn changes(host: &FixtureHost) -> Vec<String> {
    host.journal()
        .into_iter()
        .filter(|l| {
            !["-save", "ipset save", "nft -j", "ufw show", "ipset list"]
                .iter()
                .any(|r| l.contains(r))
        })
        .collect()
}

#[test]
fn a_failing_second_iptables_restore_undoes_the_first_family_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let host = FixtureHost::new()
        .command_seq("iptables-save", vec![ok(BEFORE4), ok(BEFORE4), ok(AFTER4)])
        .command_ok("ip6tables-save", BEFORE6)
        .command_ok(RESTORE4, "")
        .command(RESTORE6, fails("ip6tables-restore: line 2 failed"));
    let c = catalog(&["173.245.48.0/20", "2400:cb00::/32"]);
    let out = run(&host, &request(dir.path(), Backend::Iptables), &c).unwrap();
    assert!(!out.applied);
    let failure = out.failure.clone().unwrap();
    assert!(
        failure.contains("line 2 failed") && failure.contains("IPv6 transaction was not applied"),
        "{failure}"
    );
    assert_eq!(out.rolled_back.as_deref(), Some("IPv4 restored"));
    assert_eq!(
        changes(&host),
        vec![
            format!("run {RESTORE4} <<*filter"),
            format!("run {RESTORE6} <<*filter"),
            format!("run {RESTORE4} <<*filter"),
        ]
    );
    // The undo is the exact inverse: the jump deleted, the chain emptied and removed.
    let undo = crate::whitelist::ipt::restore_fragment(
        &ipt::read_state(AFTER4),
        &ipt::read_state(BEFORE4),
    )
    .unwrap();
    assert_eq!(
        undo,
        "*filter\n-D INPUT -m comment --comment origin-agent -j ORIGIN-AGENT-CDN\n:ORIGIN-AGENT-CDN - [0:0]\n-X ORIGIN-AGENT-CDN\nCOMMIT\n"
    );
    // No state is left to roll back, and the retired one records the attempt.
    assert!(state::load(dir.path()).unwrap().is_none());
}

#[test]
fn a_failing_first_restore_changes_nothing_and_runs_no_undo() {
    let dir = tempfile::tempdir().unwrap();
    let host = FixtureHost::new()
        .command_ok("iptables-save", BEFORE4)
        .command_ok("ip6tables-save", BEFORE6)
        .command(RESTORE4, fails("iptables-restore: line 3 failed"));
    let c = catalog(&["173.245.48.0/20", "2400:cb00::/32"]);
    let out = run(&host, &request(dir.path(), Backend::Iptables), &c).unwrap();
    assert!(out.failure.is_some());
    assert_eq!(out.rolled_back, None);
    assert_eq!(changes(&host), vec![format!("run {RESTORE4} <<*filter")]);
}

#[test]
fn a_foreign_change_seen_during_verify_rolls_the_whitelist_back() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = AFTER4.replace(
        "-A INPUT -i lo -j ACCEPT\n",
        "-A INPUT -i lo -j ACCEPT\n-A INPUT -s 192.0.2.1/32 -j DROP\n",
    );
    let host = FixtureHost::new()
        .command_seq(
            "iptables-save",
            vec![ok(BEFORE4), ok(BEFORE4), ok(&foreign)],
        )
        .command_ok(RESTORE4, "");
    let c = catalog(&["173.245.48.0/20"]);
    let out = run(&host, &request(dir.path(), Backend::Iptables), &c).unwrap();
    let v = out.verification.clone().unwrap();
    assert!(v.blocked.is_empty() && v.left_to_do.is_empty(), "{v:?}");
    assert_eq!(
        v.other_changes,
        vec!["IPv4: + -A INPUT -s 192.0.2.1/32 -j DROP"]
    );
    assert!(!out.applied);
    assert_eq!(out.rolled_back.as_deref(), Some("IPv4 restored"));
    assert_eq!(
        changes(&host),
        vec![
            format!("run {RESTORE4} <<*filter"),
            format!("run {RESTORE4} <<*filter")
        ]
    );
    assert!(render(&out)
        .contains("changed outside the whitelist: IPv4: + -A INPUT -s 192.0.2.1/32 -j DROP"));
}

#[test]
fn ufw_failing_halfway_undoes_the_commands_already_run_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |net: &str| ufw::UfwRule {
        provider: Provider::Cloudflare,
        net: net.parse().unwrap(),
        ports: "80,443".into(),
    };
    let key = |args: Vec<String>| format!("ufw {}", args.join(" "));
    let (a, b, c3) = (
        rule("103.21.244.0/22"),
        rule("103.22.200.0/22"),
        rule("173.245.48.0/20"),
    );
    let host = FixtureHost::new()
        .command_ok("iptables-save", BEFORE4)
        .command_ok(
            "ufw show added",
            "Added user rules (see 'ufw status' for running firewall):\n",
        )
        .file("/etc/default/ufw", "IPV6=no\n")
        .command_ok(&key(a.add_args()), "Rule inserted\n")
        .command_ok(&key(b.add_args()), "Rule inserted\n")
        .command(
            &key(c3.add_args()),
            fails("ERROR: Could not update running firewall"),
        )
        .command_ok(&key(a.delete_args()), "Rule deleted\n")
        .command_ok(&key(b.delete_args()), "Rule deleted\n");
    let cat = catalog(&["103.21.244.0/22", "103.22.200.0/22", "173.245.48.0/20"]);
    let out = run(&host, &request(dir.path(), Backend::Ufw), &cat).unwrap();
    let failure = out.failure.clone().unwrap();
    assert!(
        failure.contains("the 2 ufw commands already run were undone (2 succeeded)"),
        "{failure}"
    );
    assert_eq!(
        out.rolled_back, None,
        "ufw undoes its own steps, no second undo"
    );
    assert_eq!(
        changes(&host),
        vec![
            format!("run {}", key(a.add_args())),
            format!("run {}", key(b.add_args())),
            format!("run {}", key(c3.add_args())),
            format!("run {}", key(b.delete_args())),
            format!("run {}", key(a.delete_args())),
        ]
    );
}

#[test]
fn nftables_persist_writes_through_the_host_and_puts_both_files_back_when_nft_rejects_them() {
    let doc = r#"{"nftables":[{"metainfo":{"json_schema_version":1}},{"table":{"family":"inet","name":"filter","handle":1}},{"chain":{"family":"inet","table":"filter","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}}]}"#;
    let conf = PathBuf::from("/etc/nftables.conf");
    let include = PathBuf::from("/etc/nftables.d/origin-agent-cdn.nft");
    let host = FixtureHost::new()
        .command_ok("nft -j list ruleset", doc)
        .file(&conf, "flush ruleset\n")
        .command(
            "nft -c -f /etc/nftables.conf",
            fails("/etc/nftables.conf:3: Error: syntax error"),
        );
    let fw = nft::Nftables {
        chain: nft::NftChain {
            family: "inet".into(),
            table: "filter".into(),
            name: "input".into(),
        },
    };
    let req = WhitelistRequest::default();
    let err = fw.persist(&host, &req).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("not persisted: `nft -c -f /etc/nftables.conf` rejected"),
        "{err}"
    );
    assert_eq!(host.content(&conf).unwrap(), b"flush ruleset\n");
    assert!(host.content(&include).is_none());
    assert_eq!(
        host.journal_of("write")
            .into_iter()
            .chain(host.journal_of("remove"))
            .collect::<Vec<_>>(),
        vec![
            "write /etc/nftables.d/origin-agent-cdn.nft",
            "write /etc/nftables.conf",
            "write /etc/nftables.conf",
            "remove /etc/nftables.d/origin-agent-cdn.nft",
        ]
    );
}

const CSF_BEFORE: &str = "*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
:ALLOWIN - [0:0]
:LOCALINPUT - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT ! -i lo -j LOCALINPUT
-A INPUT ! -i lo -p tcp -m conntrack --ctstate NEW -m tcp --dport 22 -j ACCEPT
-A LOCALINPUT ! -i lo -j ALLOWIN
COMMIT
";

fn csf_host(after: &str, restart: Vec<Result<CommandOutput, HostError>>) -> FixtureHost {
    FixtureHost::new()
        .command_seq("iptables-save", vec![ok(CSF_BEFORE), ok(after)])
        .command_seq("csf -r", restart)
        .file("/etc/csf/csf.conf", "TESTING = \"0\"\nIPV6 = \"0\"\n")
        .file(
            "/etc/csf/csf.allow",
            "# allow  \n192.0.2.5 # admin office\n",
        )
        .file("/etc/csf/csf.ignore", "127.0.0.1\n")
}

#[test]
fn csf_apply_writes_tagged_web_port_lines_restarts_and_verifies_through_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let after = CSF_BEFORE.replace(
        "COMMIT",
        "-A ALLOWIN -s 173.245.48.0/20 ! -i lo -p tcp -m multiport --dports 80,443 -j ACCEPT\nCOMMIT",
    );
    let host = csf_host(&after, vec![ok("")]);
    let c = catalog(&["173.245.48.0/20", "2400:cb00::/32"]);
    // auto picks CSF because it is installed
    let out = run(&host, &request(dir.path(), Backend::Auto), &c).unwrap();
    assert_eq!(out.backend, Backend::Csf);
    assert!(out.applied, "{}", render(&out));
    assert_eq!(
        host.content("/etc/csf/csf.allow").unwrap(),
        b"# allow  \n192.0.2.5 # admin office\ntcp|in|d=80,443|s=173.245.48.0/20 # origin-agent:cloudflare\n"
    );
    assert_eq!(
        host.content("/etc/csf/csf.ignore").unwrap(),
        b"127.0.0.1\n173.245.48.0/20 # origin-agent:cloudflare\n"
    );
    assert_eq!(
        changes(&host),
        vec![
            "write /etc/csf/csf.allow",
            "write /etc/csf/csf.ignore",
            "run csf -r"
        ]
    );
    assert!(out
        .notes
        .iter()
        .any(|n| n.starts_with("IPv6 left out: CSF")));
    let text = render(&out);
    assert!(
        text.contains("csf.allow: + tcp|in|d=80,443|s=173.245.48.0/20 # origin-agent:cloudflare"),
        "{text}"
    );
}

#[test]
fn csf_restart_failing_puts_both_files_back_byte_for_byte_and_restarts_again() {
    let dir = tempfile::tempdir().unwrap();
    let host = csf_host(
        CSF_BEFORE,
        vec![fails("csf: Error: line 3 of csf.allow"), ok("")],
    );
    let c = catalog(&["173.245.48.0/20"]);
    let out = run(&host, &request(dir.path(), Backend::Csf), &c).unwrap();
    assert!(!out.applied);
    assert!(out.failure.unwrap().contains("CSF did not restart"));
    assert_eq!(
        out.rolled_back.as_deref(),
        Some("/etc/csf/csf.allow, /etc/csf/csf.ignore restored, csf -r")
    );
    assert_eq!(
        host.content("/etc/csf/csf.allow").unwrap(),
        b"# allow  \n192.0.2.5 # admin office\n"
    );
    assert_eq!(host.content("/etc/csf/csf.ignore").unwrap(), b"127.0.0.1\n");
    assert_eq!(
        changes(&host),
        vec![
            "write /etc/csf/csf.allow",
            "write /etc/csf/csf.ignore",
            "run csf -r",
            "write /etc/csf/csf.allow",
            "write /etc/csf/csf.ignore",
            "run csf -r",
        ]
    );
}

#[test]
fn csf_rules_still_blocking_after_the_restart_undo_the_files() {
    let dir = tempfile::tempdir().unwrap();
    // CSF restarted but built nothing for the line (e.g. an old CSF ignoring it).
    let host = csf_host(CSF_BEFORE, vec![ok("")]);
    let c = catalog(&["173.245.48.0/20"]);
    let out = run(&host, &request(dir.path(), Backend::Csf), &c).unwrap();
    let v = out.verification.clone().unwrap();
    assert!(!v.blocked.is_empty(), "{v:?}");
    assert!(out.rolled_back.is_some());
    assert_eq!(
        host.content("/etc/csf/csf.allow").unwrap(),
        b"# allow  \n192.0.2.5 # admin office\n"
    );
}

#[test]
fn keeping_current_reapplies_the_last_whitelist_with_the_new_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let both = AFTER4.replace(
        "COMMIT",
        "-A ORIGIN-AGENT-CDN -s 103.21.244.0/22 -p tcp -m multiport --dports 80,443 -m comment --comment \"origin-agent:cloudflare\" -j ACCEPT\nCOMMIT",
    );
    let host = FixtureHost::new()
        .command_seq(
            "iptables-save",
            vec![
                ok(BEFORE4),
                ok(BEFORE4),
                ok(AFTER4),
                ok(AFTER4),
                ok(AFTER4),
                ok(&both),
            ],
        )
        .command_ok(RESTORE4, "");
    let out = run(
        &host,
        &request(dir.path(), Backend::Iptables),
        &catalog(&["173.245.48.0/20"]),
    )
    .unwrap();
    assert!(out.applied, "{}", render(&out));
    let newer = catalog(&["173.245.48.0/20", "103.21.244.0/22"]);
    let again = current::keep_current(&host, dir.path(), &newer)
        .unwrap()
        .unwrap();
    assert!(again.applied, "{}", render(&again));
    assert_eq!(
        current::summary(&again).unwrap(),
        "CDN whitelist (iptables, cloudflare): 1 ranges added, 0 removed, applied and verified"
    );
    let restores = host.journal_of(&format!("run {RESTORE4}"));
    assert_eq!(restores.len(), 2);
}

/// The fixture host plus the files `firewall-cmd` itself writes in `/etc/firewalld` when a
/// scripted call succeeds (journalled as `write PATH` right after its `run` line), so the
/// firewalld back end's undo meets what firewalld really leaves behind: the new ipset, its
/// `.xml.old` backup, the copy of the stock zone (in directories the fixture declares).
struct FirewalldSim {
    inner: FixtureHost,
    effects: BTreeMap<String, Vec<(PathBuf, String)>>,
    created: std::sync::Mutex<std::collections::BTreeSet<PathBuf>>,
}

impl FirewalldSim {
    fn children(&self, dir: &std::path::Path) -> Vec<String> {
        let created = self.created.lock().unwrap();
        created
            .iter()
            .filter(|p| self.inner.read(p).is_ok())
            .filter_map(|p| p.strip_prefix(dir).ok()?.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect()
    }
}

impl Host for FirewalldSim {
    fn read(&self, path: &std::path::Path) -> Result<Vec<u8>, HostError> {
        self.inner.read(path)
    }
    fn open(&self, path: &std::path::Path) -> Result<Box<dyn std::io::Read + Send>, HostError> {
        self.inner.open(path)
    }
    fn read_dir(&self, path: &std::path::Path) -> Result<Vec<String>, HostError> {
        let mut names = self.inner.read_dir(path)?;
        names.extend(self.children(path));
        names.sort();
        names.dedup();
        Ok(names)
    }
    fn metadata(&self, path: &std::path::Path) -> Result<crate::host::FileMeta, HostError> {
        self.inner.metadata(path)
    }
    fn read_link(&self, path: &std::path::Path) -> Result<PathBuf, HostError> {
        self.inner.read_link(path)
    }
    fn run(&self, command: &crate::host::Command) -> Result<CommandOutput, HostError> {
        let out = self.inner.run(command)?;
        if out.success() {
            for (path, content) in self.effects.get(&command.key()).into_iter().flatten() {
                self.inner.write_atomic(path, content.as_bytes())?;
                self.created.lock().unwrap().insert(path.clone());
            }
        }
        Ok(out)
    }
    fn connect(
        &self,
        endpoint: &crate::host::Endpoint,
        timeout: std::time::Duration,
    ) -> crate::host::ConnectOutcome {
        self.inner.connect(endpoint, timeout)
    }
    fn statvfs(&self, path: &std::path::Path) -> Result<crate::host::FsStats, HostError> {
        self.inner.statvfs(path)
    }
    fn now(&self) -> jiff::Timestamp {
        self.inner.now()
    }
    fn pause(&self, duration: std::time::Duration) {
        self.inner.pause(duration)
    }
    fn is_live(&self) -> bool {
        false
    }
    fn write_atomic(&self, path: &std::path::Path, bytes: &[u8]) -> Result<(), HostError> {
        self.inner.write_atomic(path, bytes)
    }
    fn remove_file(&self, path: &std::path::Path) -> Result<(), HostError> {
        self.inner.remove_file(path)
    }
}

#[test]
fn firewalld_failing_at_the_second_rich_rule_removes_every_file_firewalld_wrote_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let conf = "DefaultZone=public\nCleanupOnExit=yes\n";
    let stock = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <short>Public</short>\n  <service name=\"ssh\"/>\n  <service name=\"dhcpv6-client\"/>\n  <forward/>\n</zone>\n";
    let set = "oa-cdn-cloudflare-v4";
    let set_xml = format!("/etc/firewalld/ipsets/{set}.xml");
    let empty = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ipset type=\"hash:net\">\n  <option name=\"family\" value=\"inet\"/>\n</ipset>\n";
    let filled = empty.replace("</ipset>", "  <entry>173.245.48.0/20</entry>\n</ipset>");
    let rule = |port: u16| firewalld::rich_rule(Family::V4, set, port);
    let zone_with_443 = stock.replace(
        "<forward/>",
        &format!("<forward/>\n  <rule family=\"ipv4\">\n    <source ipset=\"{set}\"/>\n    <port port=\"443\" protocol=\"tcp\"/>\n    <accept/>\n  </rule>"),
    );
    let new_set =
        format!("firewall-cmd --permanent --new-ipset={set} --type=hash:net --option=family=inet");
    let tmp = format!("/run/origin-agent-{set}.add");
    let add_entries =
        format!("firewall-cmd --permanent --ipset={set} --add-entries-from-file={tmp}");
    let add_rule = |port: u16| {
        format!(
            "firewall-cmd --permanent --zone=public --add-rich-rule={}",
            rule(port)
        )
    };
    let inner = FixtureHost::new()
        .file("/etc/firewalld/firewalld.conf", conf)
        .dir("/etc/firewalld/zones")
        .dir("/etc/firewalld/ipsets")
        .file("/usr/lib/firewalld/zones/public.xml", stock)
        .command_ok(&new_set, "success\n")
        .command_ok(&add_entries, "success\n")
        .command_ok(&add_rule(443), "success\n")
        .command(
            &add_rule(80),
            fails("Error: COMMAND_FAILED: 'python-nftables' failed: internal:0:0-0: Error: Could not process rule: No space left on device"),
        )
        .command_ok("firewall-cmd --reload", "success\n")
        .command_ok("firewall-cmd --state", "running\n");
    let mut effects = BTreeMap::new();
    effects.insert(
        new_set.clone(),
        vec![(PathBuf::from(&set_xml), empty.to_string())],
    );
    effects.insert(
        add_entries.clone(),
        vec![
            (PathBuf::from(format!("{set_xml}.old")), empty.to_string()),
            (PathBuf::from(&set_xml), filled.clone()),
        ],
    );
    effects.insert(
        add_rule(443),
        vec![(
            PathBuf::from("/etc/firewalld/zones/public.xml"),
            zone_with_443,
        )],
    );
    let host = FirewalldSim {
        inner,
        effects,
        created: Default::default(),
    };
    let c = catalog(&["173.245.48.0/20"]);
    let out = run(&host, &request(dir.path(), Backend::Firewalld), &c).unwrap();
    assert!(!out.applied);
    let failure = out.failure.clone().unwrap();
    assert!(
        failure.contains("No space left on device")
            && failure.ends_with("the permanent configuration was changed only in part"),
        "{failure}"
    );
    assert_eq!(
        changes(&host.inner),
        vec![
            format!("run {new_set}"),
            format!("write {set_xml}"),
            format!("write {tmp}"),
            format!("run {add_entries}"),
            format!("write {set_xml}.old"),
            format!("write {set_xml}"),
            format!("remove {tmp}"),
            // (firewall-cmd applies the rules in the order it is given them: 443 sorts first)
            format!("run {}", add_rule(443)),
            "write /etc/firewalld/zones/public.xml".to_string(),
            format!("run {}", add_rule(80)),
            // The undo: every file firewalld wrote removed (none existed before), then reload.
            format!("remove {set_xml}"),
            format!("remove {set_xml}.old"),
            "remove /etc/firewalld/zones/public.xml".to_string(),
            "run firewall-cmd --reload".to_string(),
            "run firewall-cmd --state".to_string(),
        ]
    );
    assert_eq!(
        out.rolled_back.as_deref(),
        Some("/etc/firewalld restored (3 files), firewall-cmd --reload")
    );
    for gone in [
        set_xml.clone(),
        format!("{set_xml}.old"),
        "/etc/firewalld/zones/public.xml".into(),
    ] {
        assert!(
            host.read(std::path::Path::new(&gone)).is_err(),
            "{gone} left behind"
        );
    }
    assert_eq!(
        host.read(std::path::Path::new("/etc/firewalld/firewalld.conf"))
            .unwrap(),
        conf.as_bytes()
    );
    assert!(state::load(dir.path()).unwrap().is_none());
}
