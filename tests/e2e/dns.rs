//! The DNS check with the real `getent` and `ip` inside a network namespace the test creates:
//! `ip netns exec` bind-mounts `/etc/netns/NS/hosts` over /etc/hosts, so the names resolve from a
//! file the test writes, and no DNS query leaves the machine.

use origin_agent::cause::CauseId;
use origin_agent::check::Status;
use origin_agent::config::Config;
use origin_agent::discover::{Address, Discovery, Listen, Nginx, Origin, Server};

use crate::util::cmd::unavailable;
use crate::util::netns::{Netns, NsHost};
use crate::util::or_skip;

/// A namespace whose `/etc/hosts` (bind-mounted by `ip netns exec`) names the test's sites, with
/// 10.99.0.1 on its loopback as this origin's own address; `None` (skipped) without root.
fn ns() -> Option<Netns> {
    if let Some(reason) = unavailable(&["ip"]) {
        crate::skip(reason);
        return None;
    }
    let mut ns = or_skip(Netns::new("dns"))?;
    std::fs::write(
        ns.etc().join("hosts"),
        "127.0.0.1 localhost\n104.16.0.1 cdn-shop.test\n10.99.0.1 here-shop.test\n203.0.113.9 away-shop.test\n",
    )
    .unwrap();
    ns.addr("lo", "10.99.0.1/32");
    Some(ns)
}

#[test]
fn names_are_judged_against_the_cdn_ranges_and_this_origin() {
    let Some(ns) = ns() else { return };
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
    let checks = origin_agent::probes::dns::checks(&NsHost::new(&ns), &discovery, &config);
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
