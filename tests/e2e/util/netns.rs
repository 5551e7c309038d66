//! Network namespaces of a test: [`Netns`] creates one (its name carries the test process's pid
//! and a counter, so parallel tests and other checkouts never collide), builds veth pairs,
//! addresses and routes in it, runs commands in it, and deletes it on drop (also when the test
//! panics), with its `/etc/netns/NAME` overlay. [`NsHost`] is the live host with every command the
//! agent runs sent into a namespace, for the agent under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use origin_agent::host::live::LiveHost;
use origin_agent::host::rewrite::{in_netns, CommandRewrite};
use origin_agent::host::{Command, CommandOutput, Host, HostError};

use super::cmd::{ok, sh, Cmd};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of this test, with loopback up; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// `oa-PREFIX-PID-N`.
    pub name: String,
    /// `/etc/netns/NAME`, once something was put there (removed on drop).
    etc: Option<PathBuf>,
}

impl Netns {
    /// A new namespace named after `prefix`; the reason when `ip netns add` fails.
    pub fn new(prefix: &str) -> Result<Netns, String> {
        let name = format!(
            "oa-{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let out = sh(&["ip", "netns", "add", &name]);
        if !out.status.success() {
            return Err(format!(
                "ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let ns = Netns { name, etc: None };
        ns.ip(&["link", "set", "lo", "up"]);
        Ok(ns)
    }

    /// The argv that runs `args` inside the namespace.
    pub fn argv<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        full
    }

    /// Runs a command inside the namespace; its output, whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        sh(&self.argv(args))
    }

    /// Runs a command inside the namespace; its stdout, or a panic with its stdout and stderr.
    pub fn exec(&self, args: &[&str]) -> String {
        ok(&self.argv(args))
    }

    /// `sh -ec SCRIPT` inside the namespace; panics when it fails.
    pub fn script(&self, script: &str) {
        self.exec(&["sh", "-ec", script]);
    }

    /// Loads an nftables ruleset (`nft -f -`) into the namespace; panics when nft refuses it.
    pub fn nft(&self, ruleset: &str) {
        Cmd::new(&self.argv(&["nft", "-f", "-"]))
            .stdin(ruleset)
            .ok();
    }

    /// `ip ARGS` on this namespace (`ip -n NAME ARGS`); panics when it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", self.name.as_str()];
        full.extend_from_slice(args);
        ok(&full);
    }

    /// A veth pair: `dev` here and `peer_dev` in `peer`, both up.
    pub fn veth(&self, dev: &str, peer: &Netns, peer_dev: &str) {
        self.ip(&[
            "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", &peer.name,
        ]);
        self.ip(&["link", "set", dev, "up"]);
        peer.ip(&["link", "set", peer_dev, "up"]);
    }

    /// Adds `cidr` (IPv4 or IPv6; IPv6 without duplicate address detection) to `dev`.
    pub fn addr(&self, dev: &str, cidr: &str) {
        if cidr.contains(':') {
            self.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"]);
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev]);
        }
    }

    /// A route to `net` out of `dev`.
    pub fn route(&self, net: &str, dev: &str) {
        if net.contains(':') {
            self.ip(&["-6", "route", "add", net, "dev", dev]);
        } else {
            self.ip(&["route", "add", net, "dev", dev]);
        }
    }

    /// `/etc/netns/NAME`, created: `ip netns exec` bind-mounts each entry over the same name in
    /// /etc (a `hosts` file, a copy of `/etc/ufw`), so the machine's own /etc is never touched.
    pub fn etc(&mut self) -> PathBuf {
        let etc = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&etc).unwrap();
        self.etc = Some(etc.clone());
        etc
    }

    /// Whether `curl` from address `from` in this namespace gets an answer from `url` within
    /// 2 s; `extra` goes before the URL (`-H`, header).
    pub fn curl(&self, from: &str, url: &str, extra: &[&str]) -> bool {
        let mut args = vec![
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "2",
            "--interface",
            from,
        ];
        args.extend_from_slice(extra);
        args.push(url);
        self.run(&args).status.success()
    }

    /// Starts a long-running command inside the namespace (stdio to /dev/null); the caller owns
    /// the child (see [`super::services::Killed`]).
    pub fn spawn(&self, args: &[&str]) -> Child {
        Proc::new("ip")
            .args(&self.argv(args)[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {}: {e}", self.name))
    }
}

/// A namespace stands for its name where a `&str` is expected (`ip netns exec` argv, a
/// function taking the name).
impl std::ops::Deref for Netns {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // ipsets and nftables tables are per namespace too: its deletion frees them.
        let _ = sh(&["ip", "netns", "del", &self.name]);
        if let Some(etc) = self.etc.take() {
            let _ = std::fs::remove_dir_all(etc);
            // /etc/netns itself only when empty (another test's namespace may still use it).
            let _ = std::fs::remove_dir("/etc/netns");
        }
    }
}

/// The live host, with every command run inside the namespace. `fail2ban-client` is pointed at
/// the test's server socket, and some paths (in file reads and in arguments) are mapped to the
/// test's temp files.
#[derive(Debug)]
pub struct NsHost<'a> {
    pub ns: &'a Netns,
    pub f2b_socket: Option<PathBuf>,
    pub remap: Vec<(String, String)>,
}

impl<'a> NsHost<'a> {
    /// Every command in `ns`, nothing remapped.
    pub fn new(ns: &'a Netns) -> NsHost<'a> {
        NsHost {
            ns,
            f2b_socket: None,
            remap: Vec::new(),
        }
    }

    fn map(&self, s: &str) -> String {
        self.remap
            .iter()
            .find(|(from, _)| from == s)
            .map_or_else(|| s.to_string(), |(_, to)| to.clone())
    }
}

impl CommandRewrite for NsHost<'_> {
    fn path(&self, p: &Path) -> PathBuf {
        PathBuf::from(self.map(&p.to_string_lossy()))
    }

    fn run(&self, command: &Command) -> Result<CommandOutput, HostError> {
        let mut inner = command.clone();
        if command.program == "fail2ban-client" {
            let sock = self
                .f2b_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from("/nonexistent/f2b.sock"));
            inner.args = vec!["-s".into(), sock.display().to_string()];
            inner.args.extend(command.args.iter().cloned());
        }
        inner.args = inner.args.iter().map(|a| self.map(a)).collect();
        LiveHost.run(&in_netns(&self.ns.name, &inner))
    }
}
