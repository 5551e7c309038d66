//! `whitelist` under a firewall manager it has no back end for: the real FireHOL (Debian package)
//! started in a test namespace, with its configuration, its `/etc/default` switch, its spool and
//! the agent's state bind-mounted or on tmpfs in a private mount namespace (this machine's own
//! FireHOL stays disabled and untouched). `--apply` refuses, prints the lines to add to
//! `firehol.conf`, and leaves the rules FireHOL built exactly as they were.

use super::*;

const FIREHOL_CONF: &str = "version 6
interface any world
    policy drop
    protection strong
    server ssh accept
    client all accept
";

#[test]
fn under_firehol_apply_refuses_and_prints_the_lines_to_add() {
    need_root_and_tools!();
    if !Path::new("/usr/sbin/firehol").exists() {
        crate::skip("firehol is not installed (scripts/install-test-deps.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("firehol")).unwrap();
    std::fs::write(d.join("firehol/firehol.conf"), FIREHOL_CONF).unwrap();
    std::fs::write(d.join("default-firehol"), "START_FIREHOL=YES\n").unwrap();
    let ns = Netns::new("wl-fh").unwrap();
    let agent = env!("CARGO_BIN_EXE_origin-agent");
    let script = format!(
        "set -e
         mount -t tmpfs none /var/spool; mount -t tmpfs none /run; mount -t tmpfs none /var/lib
         mount --bind {d}/firehol /etc/firehol
         mount --bind {d}/default-firehol /etc/default/firehol
         firehol start >/dev/null 2>&1
         rules() {{ (iptables-legacy-save; iptables-save; ip6tables-legacy-save; ip6tables-save) 2>/dev/null | grep -v '^#' | sed -E 's/\\[[0-9]+:[0-9]+\\]//'; }}
         rules > {d}/before
         set +e
         {agent} whitelist --provider cloudflare > {d}/dry 2>&1; echo $? > {d}/dry.rc
         {agent} whitelist --provider cloudflare --apply > {d}/apply 2>&1; echo $? > {d}/apply.rc
         rules > {d}/after",
        d = d.display()
    );
    let out = ns.run(&private_mounts(&script, &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    let before = read("before");
    assert!(
        before.contains("-P INPUT DROP") || before.contains(":INPUT DROP"),
        "FireHOL built no firewall: {before}"
    );
    let line = "ipv4 server custom origin-agent-cdn \"tcp/80 tcp/443\" default accept src \"103.21.244.0/22 ";
    let dry = read("dry");
    assert_eq!(read("dry.rc").trim(), "0", "{dry}");
    assert!(
        dry.contains("FireHOL owns this host's firewall") && dry.contains(line),
        "{dry}"
    );
    let apply = read("apply");
    assert_ne!(read("apply.rc").trim(), "0", "{apply}");
    assert!(
        apply.contains("FireHOL owns this host's firewall"),
        "{apply}"
    );
    assert!(
        apply.contains("START_FIREHOL=YES") && apply.contains(line),
        "{apply}"
    );
    assert!(
        apply.contains("ipv6 server custom origin-agent-cdn"),
        "{apply}"
    );
    assert_eq!(read("after"), before, "the refused apply changed the rules");
}
