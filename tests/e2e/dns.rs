//! The DNS check with the real `getent` and `ip` inside a network namespace the test creates:
//! `ip netns exec` bind-mounts `/etc/netns/NS/hosts` over /etc/hosts, so the names resolve from a
//! file the test writes, and no DNS query leaves the machine.

use std::path::PathBuf;
use std::process::Command as Proc;

use origin_agent::cause::CauseId;
use origin_agent::check::Status;
use origin_agent::config::Config;
use origin_agent::discover::{Address, Discovery, Listen, Nginx, Origin, Server};
use origin_agent::host::live::LiveHost;
use origin_agent::host::rewrite::{in_netns, CommandRewrite};
use origin_agent::host::{Command, CommandOutput, Host, HostError};

struct Ns {
    name: String,
    etc: PathBuf,
}

impl Ns {
    fn new() -> Option<Ns> {
        if !nix::unistd::geteuid().is_root() || Proc::new("ip").arg("-V").output().is_err() {
            crate::skip("needs root and iproute2");
            return None;
        }
        let name = format!("oa-dns-{}", std::process::id());
        let etc = PathBuf::from("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("hosts"),
            "127.0.0.1 localhost\n104.16.0.1 cdn-shop.test\n10.99.0.1 here-shop.test\n203.0.113.9 away-shop.test\n",
        )
        .unwrap();
        let ns = Ns { name, etc };
        assert!(Proc::new("ip")
            .args(["netns", "add", &ns.name])
            .status()
            .unwrap()
            .success());
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", "10.99.0.1/32", "dev", "lo"],
        ] {
            let mut full = vec!["netns", "exec", ns.name.as_str(), "ip"];
            full.extend(args);
            assert!(Proc::new("ip").args(&full).status().unwrap().success());
        }
        Some(ns)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Proc::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::fs::remove_dir_all(&self.etc);
        // /etc/netns itself only when empty (another test's namespace may still use it).
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

struct InNs<'a>(&'a Ns);

impl CommandRewrite for InNs<'_> {
    fn run(&self, command: &Command) -> Result<CommandOutput, HostError> {
        LiveHost.run(&in_netns(&self.0.name, command))
    }
}

#[test]
fn names_are_judged_against_the_cdn_ranges_and_this_origin() {
    let Some(ns) = Ns::new() else { return };
    let server = |name: &str| Server {
        names: vec![name.to_string()],
        listens: vec![Listen {
            address: Address::Tcp("*:80".into()),
            port: Some(80),
            ssl: false,
            default_server: false,
            backlog: None,
        }],
        origin: Origin::Default,
        ssl_certificate: None,
        roots: Vec::new(),
    };
    let discovery = Discovery {
        nginx: Some(Nginx {
            servers: vec![
                server("cdn-shop.test"),
                server("here-shop.test"),
                server("away-shop.test"),
            ],
            ..Nginx::default()
        }),
        ..Discovery::default()
    };
    // The namespace has only a private address: the origin's public one must be configured.
    let state = tempfile::tempdir().unwrap();
    let config = Config {
        state_dir: state.path().to_path_buf(),
        origin_addresses: vec!["10.99.0.1".parse().unwrap()],
        ..Config::default()
    };
    let checks = origin_agent::probes::dns::checks(&InNs(&ns), &discovery, &config);
    let by = |name: &str| {
        checks
            .iter()
            .find(|c| c.id == format!("dns.{name}"))
            .unwrap()
    };
    assert_eq!(
        by("cdn-shop.test").status,
        Status::Ok,
        "{:?}",
        by("cdn-shop.test")
    );
    assert!(by("cdn-shop.test").detail.contains("cloudflare"));
    assert_eq!(
        by("here-shop.test").status,
        Status::Ok,
        "{:?}",
        by("here-shop.test")
    );
    let away = by("away-shop.test");
    assert_eq!(away.status, Status::Fail, "{away:?}");
    assert_eq!(away.cause, Some(CauseId::DnsMismatch));
}
