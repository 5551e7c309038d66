//! `whitelist` with the real firewalld (Debian 12 package) installed in a debootstrapped root
//! (built once, reused) and run inside the test's origin namespace, chrooted, on a private D-Bus
//! of its own (never the machine's bus, firewall or /etc). Real connections from a Cloudflare
//! address and a non-CDN address; `firewall-cmd --reload` keeps the whitelist; the rollback puts
//! `/etc/firewalld` back file for file and the ruleset rule for rule. Recipe and traps:
//! `../shared/research/labs/firewalld-lab.md`.

use super::*;

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

/// argv that runs `args` in `root` inside namespace `ns`, with /proc, /sys and /dev mounted in a
/// private mount namespace and the lab bus in the environment; every step execs, so a spawned
/// child's pid is the daemon's own.
fn in_root_argv(root: &Path, ns: &str, args: &[&str]) -> Vec<String> {
    let inner = format!(
        "mount -t proc proc \"$0/proc\" && {{ mount -t sysfs sysfs \"$0/sys\" 2>/dev/null || mount --rbind /sys \"$0/sys\"; }} && mount --rbind /dev \"$0/dev\" && exec chroot \"$0\" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DBUS_SYSTEM_BUS_ADDRESS=unix:path={BUS_DIR}/system_bus_socket \"$@\""
    );
    let mut v: Vec<String> = [
        "ip",
        "netns",
        "exec",
        ns,
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(inner);
    v.push(root.display().to_string());
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// The daemons started for the test, stopped (by their own pid) on drop: firewalld first.
struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
    let root = match firewalld_root() {
        Ok(root) => root,
        Err(why) => {
            crate::skip(&why);
            return;
        }
    };
    // A fresh /etc/firewalld and bus, the agent's state gone.
    let etc = root.join("etc/firewalld");
    let _ = std::fs::remove_dir_all(&etc);
    ok(&[
        "cp",
        "-a",
        root.join("var/lib/origin-agent-test/firewalld")
            .to_str()
            .unwrap(),
        etc.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(root.join("var/lib/origin-agent"));
    let bus_dir = root.join(BUS_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&bus_dir).unwrap();
    let _ = std::fs::remove_file(bus_dir.join("system_bus_socket"));
    std::fs::copy(
        env!("CARGO_BIN_EXE_origin-agent"),
        root.join("usr/local/bin/origin-agent"),
    )
    .unwrap();
    let lab = Lab::new();
    let spawn = |args: &[&str]| {
        let argv = in_root_argv(&root, &lab.origin, args);
        Proc::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let run = |args: &[&str]| {
        let argv = in_root_argv(&root, &lab.origin, args);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = sh(&refs);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let mut daemons = Daemons(vec![spawn(&[
        "dbus-daemon",
        "--config-file=/etc/oa-test-bus.conf",
        "--nofork",
        "--nopidfile",
    ])]);
    let started = Instant::now();
    while !bus_dir.join("system_bus_socket").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the test bus did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemons.0.push(spawn(&["firewalld", "--nofork", "--nopid"]));
    loop {
        if run(&["firewall-cmd", "--state"]).1.trim() == "running" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "firewalld did not reach running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let agent = |extra: &[&str]| {
        let mut args = vec!["origin-agent", "whitelist", "--provider", "cloudflare"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let ruleset = || lab.origin_exec(&["nft", "list", "ruleset"]);
    let (etc0, rules0) = (files_of(&etc), ruleset());
    assert!(
        !lab.reaches(CDN4) && !lab.reaches(OTHER4),
        "web open before"
    );

    let (code, text) = agent(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("auto chose firewalld"), "{text}");
    assert!(text.contains("--add-rich-rule='rule family=\"ipv4\" source ipset=\"oa-cdn-cloudflare-v4\" port port=\"80\" protocol=\"tcp\" accept'"), "{text}");
    assert_eq!(files_of(&etc), etc0, "the dry run changed /etc/firewalld");

    let (code, text) = agent(&["--apply"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("applied and verified"), "{text}");
    assert!(lab.reaches(CDN4) && lab.reaches(CDN6), "{text}");
    assert!(!lab.reaches(OTHER4) && !lab.reaches(OTHER6));

    let (code, text) = run(&["firewall-cmd", "--reload"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(lab.reaches(CDN4), "a reload lost the whitelist");

    let (code, text) = agent(&["--apply"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to change"), "{text}");

    let (code, text) = agent(&["--rollback"]);
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
