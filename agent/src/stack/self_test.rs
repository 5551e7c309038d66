//! The origin self-test, bypassing the proxy (checklist step 2): for each served name, a request
//! to the local listener with that `Host` header (and SNI over TLS), then the layer below: a
//! FastCGI request straight to each PHP-FPM pool (its `ping.path` when set, else a connect), and
//! a request to each proxied upstream. The check names the failing layer.
//!
//! Targets are a list of (listener, name, tls) built from the web servers' configs:
//! [`targets`] gathers nginx's `server_name`s and Apache's `ServerName`/`ServerAlias` per
//! `<VirtualHost>` (else its `Listen`s with the main `ServerName`). Bounded: at most [`MAX_TARGETS`] targets, a few paths each, `GET` with no body,
//! one short deadline per request; `self_test.enabled: false` turns it off.

use std::collections::BTreeSet;

use crate::cause::CauseId;
use crate::check::{Area, Check, Status};
use crate::config::Config;
use crate::discover::{Address, Discovery, Pool, UpstreamKind};
use crate::host::exchange::{ExchangeError, Stage};
use crate::host::{Endpoint, Exchange, Host, Reply};

/// The most (listener, name) pairs asked.
pub const MAX_TARGETS: usize = 16;

/// A name served on a local listener.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub endpoint: Endpoint,
    pub name: String,
    pub tls: bool,
    /// Which web server serves it (`nginx`, `apache`).
    pub server: &'static str,
}

/// Every (listener, name, tls) the web servers declare, deduplicated and bounded.
pub fn targets(d: &Discovery) -> Vec<Target> {
    let mut set = BTreeSet::new();
    // Only servers that run: one that is configured but stopped is the services probe's finding
    // (`nginx.running`, `apache.running`), and on a host that another server fronts (Apache alone
    // with nginx installed but stopped) its listeners are nobody's.
    if let Some(nginx) = d.nginx.as_ref().filter(|n| n.master.is_some()) {
        for server in &nginx.servers {
            let mut names = server.host_names();
            if names.is_empty() {
                names = server
                    .names
                    .iter()
                    .filter(|n| {
                        !n.is_empty() && *n != "_" && !n.starts_with('~') && !n.contains('*')
                    })
                    .take(1)
                    .cloned()
                    .collect();
            }
            if names.is_empty() {
                names.push("localhost".to_string());
            }
            for listen in &server.listens {
                let Address::Tcp(addr) = &listen.address else {
                    continue;
                };
                let endpoint = Address::Tcp(addr.clone()).endpoint();
                for name in names.iter().take(4) {
                    set.insert(Target {
                        endpoint: endpoint.clone(),
                        name: name.clone(),
                        tls: listen.ssl,
                        server: "nginx",
                    });
                }
            }
        }
    }
    if let Some(apache) = d.apache.as_ref().filter(|a| a.master.is_some()) {
        for (addr, tls, names) in apache_listeners(apache) {
            let endpoint = Address::Tcp(addr).endpoint();
            for name in names.iter().take(4) {
                set.insert(Target {
                    endpoint: endpoint.clone(),
                    name: name.clone(),
                    tls,
                    server: "apache",
                });
            }
        }
    }
    set.into_iter().take(MAX_TARGETS).collect()
}

/// Apache's (local address, TLS, names) triples: each `<VirtualHost>`'s addresses with its
/// `ServerName`/`ServerAlias`, else every `Listen` with the main `ServerName`. Wildcard
/// addresses (`*`, `_default_`, `[::]`) are asked on 127.0.0.1.
fn apache_listeners(apache: &crate::discover::model::Apache) -> Vec<(String, bool, Vec<String>)> {
    fn local(host: &str) -> &str {
        match host {
            "" | "*" | "_default_" | "0.0.0.0" | "[::]" => "127.0.0.1",
            other => other,
        }
    }
    let main_names: Vec<String> = apache
        .server_name
        .iter()
        .map(|n| n.value.split(':').next().unwrap_or("").to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    let or_localhost = |names: Vec<String>| {
        if names.is_empty() {
            vec!["localhost".to_string()]
        } else {
            names
        }
    };
    let mut out = Vec::new();
    for vhost in &apache.vhosts {
        for address in &vhost.addresses {
            let Some((host, port)) = address.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let names = or_localhost(vhost.host_names());
            out.push((
                format!("{}:{port}", local(host)),
                vhost.ssl || port == 443,
                names,
            ));
        }
    }
    if out.is_empty() {
        for listen in &apache.listens {
            let host = local(listen.host.as_deref().unwrap_or(""));
            out.push((
                format!("{host}:{}", listen.port),
                listen.ssl,
                or_localhost(main_names.clone()),
            ));
        }
    }
    out
}

fn http(endpoint: &Endpoint, name: &str, tls: bool, path: &str) -> Exchange {
    Exchange::Http {
        endpoint: endpoint.clone(),
        host: name.to_string(),
        tls,
        method: "GET".to_string(),
        path: path.to_string(),
        timeout_ms: super::EXCHANGE_TIMEOUT.as_millis() as u64,
    }
}

/// Whether a 5xx page is the web server's own (it got no good answer from below) rather than
/// the application's.
pub fn own_error_page(server_header: Option<&str>, body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    (body.contains("<center>nginx") || body.contains("<address>apache"))
        || (server_header.is_some_and(|s| s.to_ascii_lowercase().contains("nginx"))
            && body.contains("<title>50"))
        || body.contains("<h1>bad gateway</h1>")
        || body.contains("<h1>502 bad gateway</h1>")
}

/// The layer-below probe of one pool.
#[derive(Debug, Clone)]
struct PoolAnswer {
    check: Check,
    fails: Option<CauseId>,
}

fn pool_probe(host: &dyn Host, pool: &Pool) -> PoolAnswer {
    let id = format!("self-test.php-fpm.{}", pool.name);
    let title = format!("PHP-FPM pool `{}` answers directly", pool.name);
    let Some(listen) = &pool.listen else {
        return PoolAnswer {
            check: Check::skip(id, Area::Services, title, "the pool has no listen address"),
            fails: None,
        };
    };
    let endpoint = super::fpm_status::address_endpoint(&listen.value);
    if let Some(ping) = pool.other.get("ping.path") {
        let answer = host.exchange(&super::fpm_status::request(&endpoint, &ping.value));
        return match answer {
            Ok(Reply::Fastcgi {
                status: 200,
                millis,
                body,
                ..
            }) => PoolAnswer {
                check: Check::ok(id, Area::Services, title).detail(format!(
                    "pool `{}` answers its ping ({}) on {endpoint} in {millis} ms: `{}`",
                    pool.name,
                    ping.value,
                    body.trim().chars().take(40).collect::<String>()
                )),
                fails: None,
            },
            Ok(other) => PoolAnswer {
                check: Check::warn(id, Area::Services, title).detail(format!(
                    "pool `{}` answered its ping ({}) with {}",
                    pool.name,
                    ping.value,
                    match other {
                        Reply::Fastcgi { status, .. } => format!("status {status}"),
                        _ => "an unexpected answer".to_string(),
                    }
                )),
                fails: None,
            },
            Err(e) => failed_pool(id, title, pool, &endpoint, &e),
        };
    }
    let outcome = host.connect(&endpoint, super::EXCHANGE_TIMEOUT);
    if outcome.connected {
        let title = format!(
            "PHP-FPM pool `{}` accepts connections (no ping.path to ask it)",
            pool.name
        );
        PoolAnswer {
            check: Check::ok(id, Area::Services, title).detail(format!(
                "pool `{}` accepts connections on {endpoint} ({} ms); set ping.path to have it answer a request",
                pool.name, outcome.millis
            )),
            fails: None,
        }
    } else {
        let e = ExchangeError {
            stage: Stage::Connect,
            errno: outcome.errno,
            message: outcome.message,
            millis: outcome.millis,
        };
        failed_pool(id, title, pool, &endpoint, &e)
    }
}

fn failed_pool(
    id: String,
    title: String,
    pool: &Pool,
    endpoint: &Endpoint,
    e: &ExchangeError,
) -> PoolAnswer {
    let label = super::errno_label(e.errno, &e.message);
    let (cause, what) = match (e.stage, e.errno) {
        (Stage::NotCaptured, _) => {
            return PoolAnswer {
                check: Check::skip(id, Area::Services, title, e.message.clone()),
                fails: None,
            }
        }
        (Stage::Connect, Some(libc::EAGAIN)) => (
            CauseId::UpstreamSaturated,
            "its listen queue is full: every worker is busy",
        ),
        (Stage::Connect, Some(libc::EACCES)) => (
            CauseId::UpstreamSocketPermission,
            "the socket refuses this user",
        ),
        (Stage::Exchange, Some(libc::ETIMEDOUT)) => (
            CauseId::UpstreamSaturated,
            "it accepted the connection but no worker answered in time",
        ),
        _ => (CauseId::UpstreamDown, "it is not running"),
    };
    PoolAnswer {
        check: Check::fail(id, Area::Services, title)
            .detail(format!(
                "pool `{}` on {endpoint}: {label}: {what}",
                pool.name
            ))
            .cause(cause),
        fails: Some(cause),
    }
}

/// The self-test checks.
pub fn checks(host: &dyn Host, d: &Discovery, config: &Config) -> Vec<Check> {
    if !config.self_test_enabled {
        return Vec::new();
    }
    let targets = targets(d);
    if targets.is_empty() {
        return Vec::new();
    }
    // The layer below first: what each pool and proxied upstream says now.
    // Every request runs side by side (each bounded by its deadline, at most MAX_TARGETS of
    // each kind), so a hung host costs about one deadline per layer, not one per request.
    let (pools, upstreams): (Vec<(&Pool, PoolAnswer)>, Vec<Check>) = std::thread::scope(|s| {
        let upstreams = s.spawn(|| upstream_checks(host, d));
        let pools: Vec<_> = d
            .php_fpm
            .iter()
            .flat_map(|f| {
                f.pools
                    .iter()
                    .filter(move |p| super::fpm_status::in_use(d, f, p))
            })
            .take(MAX_TARGETS)
            .map(|p| (p, s.spawn(move || pool_probe(host, p))))
            .collect();
        let pools = pools
            .into_iter()
            .filter_map(|(p, h)| h.join().ok().map(|a| (p, a)))
            .collect();
        (pools, upstreams.join().unwrap_or_default())
    });
    let below_failing: Vec<String> = pools
        .iter()
        .filter(|(_, a)| a.fails.is_some())
        .map(|(p, _)| format!("PHP-FPM pool `{}`", p.name))
        .chain(
            upstreams
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.title.clone()),
        )
        .collect();
    let below_cause = pools.iter().find_map(|(_, a)| a.fails);
    let below_ok: Vec<String> = pools
        .iter()
        .filter(|(_, a)| a.check.status == Status::Ok)
        .map(|(_, a)| a.check.detail.clone())
        .collect();

    let mut out: Vec<Check> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|target| {
                let (failing, ok) = (&below_failing, &below_ok);
                s.spawn(move || {
                    target_check(
                        host,
                        target,
                        &config.self_test_paths,
                        failing,
                        below_cause,
                        ok,
                    )
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    out.extend(pools.into_iter().map(|(_, a)| a.check));
    out.extend(upstreams);
    out
}

fn target_check(
    host: &dyn Host,
    t: &Target,
    paths: &[String],
    below_failing: &[String],
    below_cause: Option<CauseId>,
    below_ok: &[String],
) -> Check {
    let scheme = if t.tls { "https" } else { "http" };
    let id = format!(
        "self-test.{scheme}.{}.{}",
        t.name,
        endpoint_label(&t.endpoint)
    );
    let title = format!(
        "{} serves {scheme}://{} on {} (bypassing the proxy)",
        t.server, t.name, t.endpoint
    );
    let mut lines = Vec::new();
    let mut worst: Option<Check> = None;
    for path in paths.iter().take(4) {
        let answer = host.exchange(&http(&t.endpoint, &t.name, t.tls, path));
        let (status, line, cause) = match answer {
            Ok(Reply::Http {
                status,
                headers,
                body,
                ttfb_ms,
                ..
            }) => {
                let server = headers
                    .iter()
                    .find(|(n, _)| n == "server")
                    .map(|(_, v)| v.as_str());
                if status >= 500 && own_error_page(server, &body) {
                    let layer = if below_failing.is_empty() {
                        "the layer below (no pool or upstream failed its direct test: look at the app's logs)".to_string()
                    } else {
                        below_failing.join(", ")
                    };
                    (
                        Status::Fail,
                        format!(
                            "{} answers {status} for {}{path} in {ttfb_ms} ms with its own error page: it got no good answer from below; the failing layer is {layer}",
                            t.server, t.name
                        ),
                        below_cause,
                    )
                } else if status >= 500 {
                    (
                        Status::Fail,
                        format!(
                            "the application answers {status} for {}{path} in {ttfb_ms} ms: the failing layer is the application itself (see the PHP error log)",
                            t.name
                        ),
                        None,
                    )
                } else {
                    (
                        Status::Ok,
                        format!("{status} for {}{path} in {ttfb_ms} ms", t.name),
                        None,
                    )
                }
            }
            Ok(_) => (Status::Warn, "not an HTTP answer".to_string(), None),
            Err(e) if e.stage == Stage::NotCaptured => {
                return Check::skip(id, Area::Services, title, e.message);
            }
            Err(e) => {
                let label = super::errno_label(e.errno, &e.message);
                match e.stage {
                    // Not a cause on its own: the agent may sit in another network namespace
                    // than the server (a container's nginx, a test namespace). Whether the
                    // server listens is the services probe's finding, from the sockets it holds.
                    Stage::Connect => (
                        Status::Warn,
                        format!(
                            "{}: connect() failed {label} from here: if the web server listens in this network namespace, the failing layer is the web server itself",
                            t.endpoint
                        ),
                        None,
                    ),
                    Stage::Handshake => (
                        Status::Fail,
                        format!("TLS handshake for {} failed: {label}", t.name),
                        Some(CauseId::TlsOriginCert),
                    ),
                    _ => (
                        Status::Fail,
                        format!(
                            "{}{path}: no answer: {label} after {} ms",
                            t.name, e.millis
                        ),
                        None,
                    ),
                }
            }
        };
        lines.push(line.clone());
        if worst.as_ref().is_none_or(|w| status > w.status) {
            let mut c = match status {
                Status::Fail => Check::fail(id.clone(), Area::Services, title.clone()),
                Status::Warn => Check::warn(id.clone(), Area::Services, title.clone()),
                _ => Check::ok(id.clone(), Area::Services, title.clone()),
            };
            if let Some(cause) = cause {
                c = c.cause(cause);
            }
            worst = Some(c);
        }
    }
    let mut check =
        worst.unwrap_or_else(|| Check::skip(id, Area::Services, title, "no path to ask"));
    if check.status == Status::Fail && !below_ok.is_empty() && below_failing.is_empty() {
        lines.push(format!("below it: {}", below_ok.join("; ")));
    }
    check.detail = lines.join("\n");
    check
}

fn endpoint_label(e: &Endpoint) -> String {
    match e {
        Endpoint::Tcp(a) => a.clone(),
        Endpoint::Unix(p) => p.display().to_string(),
    }
}

/// A connect-and-request to each fixed proxied (`proxy_pass`) upstream.
fn upstream_checks(host: &dyn Host, d: &Discovery) -> Vec<Check> {
    let Some(nginx) = &d.nginx else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for t in &nginx.upstream_targets {
        if t.kind != UpstreamKind::Proxy || t.dynamic {
            continue;
        }
        let mut addrs = Vec::new();
        if let Some(a @ Address::Tcp(_)) = &t.address {
            addrs.push(a.clone());
        }
        if let Some(g) = &t.group {
            if let Some(group) = nginx.upstream_groups.iter().find(|u| &u.name == g) {
                addrs.extend(
                    group
                        .servers
                        .iter()
                        .filter(|a| matches!(a, Address::Tcp(_)))
                        .cloned(),
                );
            }
        }
        let tls = t.raw.starts_with("https://");
        for addr in addrs {
            if !seen.insert(addr.clone()) || seen.len() > MAX_TARGETS {
                continue;
            }
            let endpoint = addr.endpoint();
            let host_name = endpoint_label(&endpoint);
            let id = format!("self-test.upstream.{host_name}");
            let title = format!("upstream {host_name} answers directly");
            let check = match host.exchange(&http(&endpoint, &host_name, tls, "/")) {
                Ok(Reply::Http {
                    status, ttfb_ms, ..
                }) if status < 500 => Check::ok(id, Area::Services, title)
                    .detail(format!("{host_name} answers {status} in {ttfb_ms} ms")),
                Ok(Reply::Http { status, .. }) => Check::fail(id, Area::Services, title)
                    .detail(format!("{host_name} answers {status} itself")),
                Ok(_) => Check::warn(id, Area::Services, title).detail("not an HTTP answer"),
                Err(e) if e.stage == Stage::NotCaptured => {
                    Check::skip(id, Area::Services, title, e.message)
                }
                Err(e) => Check::fail(id, Area::Services, title)
                    .detail(format!(
                        "{host_name}: {} after {} ms",
                        super::errno_label(e.errno, &e.message),
                        e.millis
                    ))
                    .cause(if e.stage == Stage::Connect {
                        CauseId::UpstreamDown
                    } else {
                        CauseId::UpstreamTimeout
                    }),
            };
            out.push(check);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_own_502_page_is_told_from_the_apps() {
        let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n";
        assert!(own_error_page(Some("nginx/1.22.1"), page));
        assert!(!own_error_page(
            Some("nginx/1.22.1"),
            "Fatal error: Uncaught Error in /srv/x.php"
        ));
    }

    #[test]
    fn apache_virtual_hosts_are_asked_on_their_local_listeners() {
        use crate::discover::model::{
            Apache, ApacheListen, Origin, ProcessInfo, Sourced, VirtualHost,
        };
        let master = || ProcessInfo {
            pid: 1,
            exe: None,
            cmdline: "apache2 -k start".into(),
            children: Vec::new(),
        };
        let vhost = |addresses: &[&str], name: &str, aliases: &[&str], ssl: bool| VirtualHost {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            server_name: Some(name.to_string()),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            document_root: None,
            error_log: None,
            ssl,
            origin: Origin::Default,
        };
        let discovery = Discovery {
            apache: Some(Apache {
                master: Some(master()),
                vhosts: vec![
                    vhost(
                        &["*:8080"],
                        "shop.example.com",
                        &["www.shop.example.com"],
                        false,
                    ),
                    vhost(&["_default_:443"], "shop.example.com", &[], true),
                ],
                ..Apache::default()
            }),
            ..Discovery::default()
        };
        let got: Vec<(String, String, bool, &str)> = targets(&discovery)
            .into_iter()
            .map(|t| (t.endpoint.key(), t.name, t.tls, t.server))
            .collect();
        assert!(got.contains(&(
            Endpoint::Tcp("127.0.0.1:8080".into()).key(),
            "www.shop.example.com".into(),
            false,
            "apache"
        )));
        assert!(got.contains(&(
            Endpoint::Tcp("127.0.0.1:443".into()).key(),
            "shop.example.com".into(),
            true,
            "apache"
        )));
        assert_eq!(got.len(), 3, "{got:?}");

        // No virtual host: every Listen, with the main ServerName.
        let discovery = Discovery {
            apache: Some(Apache {
                master: Some(master()),
                server_name: Some(Sourced::new("blog.example.org".into(), Origin::Default)),
                listens: vec![ApacheListen {
                    host: None,
                    port: 80,
                    ssl: false,
                    origin: Origin::Default,
                }],
                ..Apache::default()
            }),
            ..Discovery::default()
        };
        let got = targets(&discovery);
        assert_eq!(got.len(), 1);
        // A server that does not run is not asked.
        let mut stopped = discovery.clone();
        if let Some(a) = stopped.apache.as_mut() {
            a.master = None;
        }
        assert!(targets(&stopped).is_empty());
        assert_eq!(got[0].name, "blog.example.org");
        assert_eq!(got[0].endpoint, Endpoint::Tcp("127.0.0.1:80".into()));
    }
}
