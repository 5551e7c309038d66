//! Debian 12 roots for tests of software that must never be installed on this machine (firewall
//! managers, netfilter-persistent): one minbase root made with debootstrap under the target dir
//! ([`debian_base`], built once behind a lock), copied for each named root ([`debian_root`]) with
//! its packages installed in an empty network namespace. Both are reused while their marker
//! file exists.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::cmd::{ok, private_mounts, Cmd};

/// debootstrap and apt may take minutes on a cold cache.
const BUILD_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// The last lines of a failed build, for the panic.
fn tail(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A Debian 12 minbase root, made once with debootstrap under the target dir and copied for each
/// root built on it (see [`debian_root`]).
pub fn debian_base() -> Result<PathBuf, String> {
    // Tests that need a root run in parallel threads: one builds the base, the others wait for
    // it (two debootstraps into one directory fail each other).
    static BASE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BASE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-base");
    let ready = base.join(".origin-agent-ready");
    if ready.exists() {
        return Ok(base);
    }
    if !Path::new("/usr/sbin/debootstrap").exists() {
        return Err(
            "debootstrap is not installed (scripts/install-test-deps.sh installs it)".into(),
        );
    }
    let _ = std::fs::remove_dir_all(&base);
    let r = base.display();
    let build = format!(
        "set -e
         debootstrap --variant=minbase bookworm {r} http://deb.debian.org/debian
         printf '#!/bin/sh\\nexit 101\\n' > {r}/usr/sbin/policy-rc.d
         chmod 755 {r}/usr/sbin/policy-rc.d"
    );
    let out = Cmd::new(&["sh", "-c", &build])
        .deadline(BUILD_DEADLINE)
        .run();
    if !out.status.success() {
        let mut all = out.stdout.clone();
        all.extend_from_slice(&out.stderr);
        panic!("could not debootstrap a Debian root: {}", tail(&all));
    }
    std::fs::write(&ready, "").unwrap();
    Ok(base)
}

/// A Debian 12 root named `name` under the target dir: a copy of [`debian_base`] with
/// `packages` installed (after the debconf `selections`), then `prepare` run on it; reused while
/// its marker exists. Packages that change how a machine boots or owns its firewall are
/// installed here, never on this machine. Nothing runs at install (policy-rc.d denies service
/// starts); the mounts live in a private mount namespace that ends with the command.
pub fn debian_root(
    name: &str,
    packages: &str,
    selections: &str,
    prepare: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    // One build of a root at a time, whoever asks (two copies into one directory fail).
    let _building = Turn::take(&format!("{name}.build"));
    let ready = root.join(".origin-agent-ready");
    if ready.exists() {
        return Ok(root);
    }
    let base = debian_base()?;
    let _ = std::fs::remove_dir_all(&root);
    ok(&["cp", "-a", base.to_str().unwrap(), root.to_str().unwrap()]);
    let _ = std::fs::remove_file(&ready);
    let r = root.display();
    // Downloaded with this machine's network, installed with none at all (an empty network
    // namespace): no maintainer script can reach a firewall but its own empty one.
    let build = format!(
        "set -e
         mount -t proc proc {r}/proc
         printf '{selections}' | chroot {r} debconf-set-selections
         chroot {r} env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
             sh -c 'apt-get update -q && apt-get install -y -q --download-only --no-install-recommends {packages}'
         unshare -n chroot {r} env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q --no-download --no-install-recommends {packages}
         umount {r}/proc"
    );
    let out = Cmd::new(&private_mounts(&build, &[]))
        .deadline(BUILD_DEADLINE)
        .run();
    if !out.status.success() {
        panic!(
            "could not build the Debian root {name}: {}",
            tail(&out.stderr)
        );
    }
    prepare(&root)?;
    std::fs::write(&ready, "").unwrap();
    Ok(root)
}

/// What a command chrooted into a Debian root gets besides its fresh `/proc` (see [`in_root`]).
#[derive(Debug, Default, Clone)]
pub struct Chroot {
    /// A PID namespace of its own (`unshare -p -f`): the root's daemons see only themselves.
    pub pid_namespace: bool,
    /// `/sys` (read-write, this namespace's view) and `/dev` bound in: daemons such as firewalld
    /// and dbus need them. Without, `/sys` is mounted read-only where it can be.
    pub devices: bool,
    /// `NAME=value` pairs added to the clean environment (PATH, HOME, LANG).
    pub env: Vec<String>,
}

/// argv that runs `args` chrooted into `root`: inside network namespace `ns` (a new empty one
/// when `None`), with `/proc` (and what `how` asks for) mounted in a private mount namespace that
/// ends with the command, and a clean environment. Without a PID namespace every step execs, so
/// a spawned child's pid is the command's own.
pub fn in_root(root: &Path, ns: Option<&str>, how: &Chroot, args: &[&str]) -> Vec<String> {
    let sys = if how.devices {
        "{ mount -t sysfs sysfs \"$0/sys\" 2>/dev/null || mount --rbind /sys \"$0/sys\"; } && mount --rbind /dev \"$0/dev\""
    } else {
        "{ mount -t sysfs -o ro sysfs \"$0/sys\" 2>/dev/null || :; }"
    };
    let env = how.env.join(" ");
    let inner = format!(
        "mount -t proc proc \"$0/proc\" && {sys} && exec chroot \"$0\" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 {env} \"$@\""
    );
    let mut argv: Vec<String> = match ns {
        Some(ns) => vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            ns.into(),
            "unshare".into(),
        ],
        None => vec!["unshare".into(), "-n".into()],
    };
    if how.pid_namespace {
        argv.extend(["-p".into(), "-f".into()]);
    }
    for a in ["-m", "--propagation", "private", "sh", "-c"] {
        argv.push(a.into());
    }
    argv.push(inner);
    argv.push(root.display().to_string());
    argv.extend(args.iter().map(|s| s.to_string()));
    argv
}

/// [`in_root`] run to its end (bounded like every [`super::cmd::sh`]).
pub fn run_in_root(root: &Path, ns: Option<&str>, how: &Chroot, args: &[&str]) -> Output {
    let argv = in_root(root, ns, how, args);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    super::cmd::sh(&refs)
}

/// An exclusive `flock` on `{target tmp}/{name}`, held until dropped: across test threads and
/// test processes alike.
#[derive(Debug)]
pub struct Turn(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl Turn {
    /// Waits for the turn named `name`.
    fn take(name: &str) -> Turn {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Path::new(env!("CARGO_TARGET_TMPDIR")).join(name))
            .unwrap();
        Turn(
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .unwrap(),
        )
    }

    /// The tests that share the named root (its /etc, its daemons' sockets) take turns: take it
    /// before the root is built or used.
    pub fn root(name: &str) -> Turn {
        Turn::take(&format!("{name}.turn"))
    }
}
