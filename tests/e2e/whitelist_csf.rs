//! `whitelist` with the real CSF (ConfigServer Security & Firewall), installed from the vendored
//! tarball (`../shared/vendor/csf/csf-src.tar.gz` beside the repository) into a debootstrapped
//! Debian root built once and reused, and run inside the test's origin namespace, chrooted, in a
//! private mount and PID namespace (so CSF takes its SysV path, starts nothing that outlives the
//! command, and loads no kernel module: `MODPROBE` is `/bin/true`). Real connections from a
//! Cloudflare address and a non-CDN address; `csf -r` keeps the whitelist; the rollback puts
//! `csf.allow`, `csf.ignore` and the rules back exactly. Recipe and traps:
//! `../shared/research/labs/csf-lab.md`.

use super::*;
use crate::util::debian_root::{run_in_root, Chroot, Turn};
use crate::util::services::Killed;

/// Where the CSF source is, or why it is not there.
fn csf_tarball() -> Result<PathBuf, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tarball = repo.join("../shared/vendor/csf/csf-src.tar.gz");
    if tarball.exists() {
        Ok(tarball)
    } else {
        Err(format!(
            "the CSF source is not beside the repository ({} is absent)",
            tarball.display()
        ))
    }
}

const CSF_SETTINGS: &[(&str, &str)] = &[
    ("TESTING", "0"),
    ("TCP_IN", "22"),
    ("TCP6_IN", "22"),
    ("AUTO_UPDATES", "0"),
    ("LFDSTART", "0"),
    ("LF_IPSET", "0"),
    ("IPV6", "0"),
    ("MODPROBE", "/bin/true"),
    ("SENDMAIL", "/bin/true"),
    ("HOST", "/bin/true"),
];

/// How CSF's commands run in its root: a PID namespace of their own, /sys read-only.
fn csf_chroot() -> Chroot {
    Chroot {
        pid_namespace: true,
        ..Chroot::default()
    }
}

/// Runs `args` chrooted into the CSF root, in network namespace `ns` (a new empty one if `None`).
fn in_root(root: &Path, ns: Option<&str>, args: &[&str]) -> std::process::Output {
    run_in_root(root, ns, &csf_chroot(), args)
}

/// The Debian root with CSF installed by its own installer (in an empty network namespace: its
/// csget step would phone home), with the fixes the lab found (ServerCheck.pm, sshd_config,
/// crontab) and the installed files kept to reset from.
fn csf_root() -> Result<PathBuf, String> {
    let tarball = csf_tarball()?;
    debian_root(
        "csf-root",
        "perl libwww-perl iptables ipset iproute2 procps unzip e2fsprogs",
        "",
        &|root| {
            let src = root.join("root/csf-src");
            let _ = std::fs::remove_dir_all(&src);
            std::fs::create_dir_all(&src).unwrap();
            ok(&[
                "tar",
                "-xzf",
                tarball.to_str().unwrap(),
                "-C",
                src.to_str().unwrap(),
            ]);
            std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
            std::fs::write(root.join("etc/ssh/sshd_config"), "Port 22\n").unwrap();
            std::fs::write(root.join("etc/crontab"), "").unwrap();
            let out = in_root(
                root,
                None,
                &["sh", "-c", "cd /root/csf-src/csf && sh install.sh"],
            );
            if !root.join("usr/sbin/csf").exists() {
                return Err(format!(
                    "the CSF installer left no /usr/sbin/csf: {}",
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .rev()
                        .take(10)
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
            let sc = "/usr/local/csf/lib/ConfigServer/ServerCheck.pm";
            let check = in_root(
                root,
                None,
                &[
                    "perl",
                    "-I/usr/local/csf/lib",
                    "-e",
                    &format!("require '{sc}'"),
                ],
            );
            if !check.status.success() {
                // Upstream does not compile at this commit; it only backs `csf -m` and the UI.
                let p = root.join(sc.trim_start_matches('/'));
                std::fs::copy(&p, p.with_extension("pm.upstream")).unwrap();
                std::fs::write(
                    &p,
                    "package ConfigServer::ServerCheck;\nuse strict;\nsub report { return \"\" }\n1;\n",
                )
                .unwrap();
            }
            let keep = root.join("var/lib/origin-agent-test");
            std::fs::create_dir_all(&keep).unwrap();
            for f in ["csf.conf", "csf.allow", "csf.ignore"] {
                std::fs::copy(root.join("etc/csf").join(f), keep.join(f)).unwrap();
            }
            Ok(())
        },
    )
}

/// The root's CSF as installed, with the test settings: enforcing, web ports closed, nothing
/// that reaches out, loads modules or starts lfd.
fn reset_csf(root: &Path) {
    let keep = root.join("var/lib/origin-agent-test");
    for f in ["csf.allow", "csf.ignore"] {
        std::fs::copy(keep.join(f), root.join("etc/csf").join(f)).unwrap();
    }
    let mut conf = std::fs::read_to_string(keep.join("csf.conf")).unwrap();
    for (k, v) in CSF_SETTINGS {
        let mut found = false;
        conf = conf
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{k} =")) {
                    found = true;
                    format!("{k} = \"{v}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        assert!(found, "csf.conf has no {k}");
    }
    std::fs::write(root.join("etc/csf/csf.conf"), conf).unwrap();
    let _ = std::fs::remove_dir_all(root.join("var/lib/origin-agent"));
}

/// A connection from `from` to the origin's `port` (1 s to connect: CSF drops silently).
pub(super) fn connects(lab: &Lab, from: &str, port: u16) -> bool {
    sh(&[
        "ip",
        "netns",
        "exec",
        &lab.edge,
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--connect-timeout",
        "1",
        "-m",
        "3",
        "--interface",
        from,
        &format!("http://{ORIGIN4}:{port}/"),
    ])
    .status
    .success()
}

/// The root reset to the test settings with the agent's binary in it, and a new lab; `None`
/// (after saying why) where the root cannot be built.
fn prepared() -> Option<(PathBuf, Lab)> {
    let root = match csf_root() {
        Ok(root) => root,
        Err(why) => {
            crate::skip(&why);
            return None;
        }
    };
    reset_csf(&root);
    std::fs::copy(
        env!("CARGO_BIN_EXE_origin-agent"),
        root.join("usr/local/bin/origin-agent"),
    )
    .unwrap();
    Some((root, Lab::new()))
}

/// Exit code and output (stdout, then stderr) of `args` in the root, in the origin namespace.
fn run_in(root: &Path, lab: &Lab, args: &[&str]) -> (Option<i32>, String) {
    let out = in_root(root, Some(&lab.origin), args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The rules CSF built, without counters and comments.
fn rules_of(root: &Path, lab: &Lab) -> String {
    let (_, t) = run_in(root, lab, &["iptables-save"]);
    t.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| origin_agent::whitelist::ipt::strip_counters(l).to_string() + "\n")
        .collect()
}

/// A second web server in the origin namespace on `port` (one the whitelist must not open),
/// stopped on drop.
pub(super) fn web_server(lab: &Lab, port: u16) -> Killed {
    Killed(
        Proc::new("ip")
            .args([
                "netns",
                "exec",
                &lab.origin,
                "python3",
                "-m",
                "http.server",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn csf_apply_keeps_the_whitelist_across_csf_restarts_and_rolls_back_exactly() {
    need_root_and_tools!();
    let _turn = Turn::root("csf-root");
    let Some((root, lab)) = prepared() else {
        return;
    };
    let _alt = web_server(&lab, 8080);
    let run = |args: &[&str]| run_in(&root, &lab, args);
    let agent = |extra: &[&str]| {
        let mut args = vec!["origin-agent", "whitelist", "--provider", "cloudflare"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let rules = || rules_of(&root, &lab);
    let allow_path = root.join("etc/csf/csf.allow");
    let ignore_path = root.join("etc/csf/csf.ignore");
    // Someone's own line (8080 for the non-CDN address) and a stale agent line of a range the
    // provider no longer publishes (the lab's 203.0.113.9), left by an earlier version.
    let mut allow = std::fs::read_to_string(&allow_path).unwrap();
    allow.push_str("tcp|in|d=8080|s=198.51.100.7 # admin: monitoring\n");
    allow.push_str("tcp|in|d=80,443|s=203.0.113.0/24 # origin-agent:cloudflare\n");
    std::fs::write(&allow_path, &allow).unwrap();
    let (code, text) = run(&["csf", "-r"]);
    assert_eq!(code, Some(0), "{text}");
    let (allow0, ignore0, rules0) = (
        std::fs::read(&allow_path).unwrap(),
        std::fs::read(&ignore_path).unwrap(),
        rules(),
    );
    let started = Instant::now();
    assert!(!connects(&lab, CDN4, 80), "the CDN reaches :80 before");
    assert!(!connects(&lab, OTHER4, 80), "anyone reaches :80 before");
    assert!(
        connects(&lab, EXTRA4, 80),
        "the stale line does not open :80"
    );
    assert!(
        connects(&lab, OTHER4, 8080),
        "the admin's line does not open 8080"
    );

    // Dry run: the lines, nothing changed.
    let (code, text) = agent(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("back end: csf"), "{text}");
    assert!(
        text.contains("csf.allow: + tcp|in|d=80,443|s=173.245.48.0/20 # origin-agent:cloudflare"),
        "{text}"
    );
    assert!(
        text.contains("csf.allow: - tcp|in|d=80,443|s=203.0.113.0/24"),
        "{text}"
    );
    assert_eq!(std::fs::read(&allow_path).unwrap(), allow0);
    assert_eq!(rules(), rules0);

    // Apply (auto picks CSF): only the CDN, only on the web ports; the stale range closed; the
    // admin's line untouched.
    let (code, text) = agent(&["--apply"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("applied and verified"), "{text}");
    let allow1 = std::fs::read_to_string(&allow_path).unwrap();
    assert!(allow1.contains("tcp|in|d=8080|s=198.51.100.7 # admin: monitoring\n"));
    assert!(!allow1.contains("203.0.113.0/24"));
    assert!(std::fs::read_to_string(&ignore_path)
        .unwrap()
        .contains("173.245.48.0/20 # origin-agent:cloudflare\n"));
    assert!(connects(&lab, CDN4, 80));
    assert!(!connects(&lab, OTHER4, 80));
    assert!(!connects(&lab, CDN4, 8080));
    assert!(!connects(&lab, EXTRA4, 80));

    // CSF rebuilds its rules from its files: the whitelist stays.
    let (code, text) = run(&["csf", "-r"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(connects(&lab, CDN4, 80));

    // A second apply changes nothing.
    let (code, text) = agent(&["--apply"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to change"), "{text}");
    assert_eq!(std::fs::read_to_string(&allow_path).unwrap(), allow1);

    // The rollback: the files byte for byte, the rules rule for rule.
    let (code, text) = agent(&["--rollback"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(std::fs::read(&allow_path).unwrap(), allow0);
    assert_eq!(std::fs::read(&ignore_path).unwrap(), ignore0);
    assert_eq!(rules(), rules0);
    assert!(!connects(&lab, CDN4, 80));
    assert!(connects(&lab, EXTRA4, 80));
    eprintln!("csf: whole check in {:?}", started.elapsed());
}

/// Takes the immutable flag off on drop, whatever the test did (the root is reused).
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: PathBuf) -> Immutable {
        ok(&["chattr", "+i", path.to_str().unwrap()]);
        Immutable(path)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = sh(&["chattr", "-i", self.0.to_str().unwrap()]);
    }
}

#[test]
fn csf_failing_midway_puts_csf_allow_back_and_rebuilds_the_same_rules() {
    need_root_and_tools!();
    let _turn = Turn::root("csf-root");
    let Some((root, lab)) = prepared() else {
        return;
    };
    let run = |args: &[&str]| run_in(&root, &lab, args);
    let rules = || rules_of(&root, &lab);
    let (code, text) = run(&["csf", "-r"]);
    assert_eq!(code, Some(0), "{text}");
    let allow_path = root.join("etc/csf/csf.allow");
    let ignore_path = root.join("etc/csf/csf.ignore");
    let (allow0, ignore0, rules0) = (
        std::fs::read(&allow_path).unwrap(),
        std::fs::read(&ignore_path).unwrap(),
        rules(),
    );
    // csf.allow can be written, csf.ignore cannot (immutable: the rename over it fails).
    let started = Instant::now();
    let _flag = Immutable::set(ignore_path.clone());
    let (code, text) = run(&[
        "origin-agent",
        "whitelist",
        "--provider",
        "cloudflare",
        "--backend",
        "csf",
        "--apply",
    ]);
    assert_ne!(code, Some(0), "{text}");
    assert!(
        text.contains("csf.ignore was not changed")
            && text.contains("/etc/csf/csf.allow restored, csf -r"),
        "{text}"
    );
    assert_eq!(std::fs::read(&allow_path).unwrap(), allow0, "{text}");
    assert_eq!(std::fs::read(&ignore_path).unwrap(), ignore0);
    assert_eq!(rules(), rules0, "the rules differ after the undo: {text}");
    assert!(!connects(&lab, CDN4, 80));
    eprintln!("csf failing midway: {:?}", started.elapsed());
}
