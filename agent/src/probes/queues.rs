//! Accept queues now: how many connections wait on each listening socket of the stack and how
//! many may (`ss -Hlnxt`: Recv-Q is the queue, Send-Q the backlog, for unix and TCP listeners).
//! A PHP-FPM pool with connections waiting has every worker busy; a full queue refuses the next
//! ones (`(11: Resource temporarily unavailable)` in nginx's log): `upstream.saturated`. A full
//! nginx queue drops visitors before nginx sees them: `net.listen-overflow`.

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::config::Config;
use crate::discover::{Address, Discovery};
use crate::host::{Command, Host};

/// One listening socket as `ss` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// `u_str`, `tcp`, ...
    pub netid: String,
    /// The unix path, or `addr:port`.
    pub local: String,
    /// Connections waiting to be accepted.
    pub queued: u64,
    /// The backlog (the most that may wait).
    pub backlog: u64,
}

/// Parses `ss -Hlnxt` output. Bad lines are skipped.
pub fn parse_ss(text: &str) -> Vec<Queue> {
    let mut out = Vec::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 6 || t[1] != "LISTEN" {
            continue;
        }
        let (Ok(queued), Ok(backlog)) = (t[2].parse(), t[3].parse()) else {
            continue;
        };
        let local = if t[0].starts_with("u_") {
            // path [spaces...] inode peer peer-inode
            if t.len() < 8 {
                continue;
            }
            t[4..t.len() - 3].join(" ")
        } else {
            t[4].to_string()
        };
        out.push(Queue {
            netid: t[0].to_string(),
            local,
            queued,
            backlog,
        });
    }
    out
}

fn port_of(local: &str) -> Option<u16> {
    local.rsplit_once(':')?.1.parse().ok()
}

fn find<'a>(queues: &'a [Queue], address: &Address) -> Option<&'a Queue> {
    match address {
        Address::Unix(path) => {
            let path = path.display().to_string();
            queues
                .iter()
                .find(|q| q.netid.starts_with("u_") && q.local == path)
        }
        Address::Tcp(addr) => {
            let port = port_of(addr)?;
            queues
                .iter()
                .filter(|q| !q.netid.starts_with("u_") && port_of(&q.local) == Some(port))
                .max_by_key(|q| q.queued)
        }
    }
}

/// Every queue check.
pub fn checks(host: &dyn Host, d: &Discovery, config: &Config) -> Vec<Check> {
    let wanted = d.nginx.is_some() || !d.php_fpm.is_empty();
    if !wanted {
        return Vec::new();
    }
    let cmd = Command::new("ss", &["-Hlnxt"]).timeout(config.command_timeout);
    let queues = match host.run(&cmd) {
        Ok(out) if out.success() => parse_ss(&out.stdout_text()),
        Ok(out) => {
            return vec![skip_all(format!(
                "`ss -Hlnxt` exited with {:?}: {}",
                out.status,
                out.stderr.trim()
            ))]
        }
        Err(e) => return vec![skip_all(e.to_string())],
    };
    let mut out = Vec::new();
    for fpm in &d.php_fpm {
        if fpm.master.is_none() {
            continue;
        }
        for pool in &fpm.pools {
            let Some(listen) = &pool.listen else { continue };
            let id = format!("{}.queue", super::pool_id(d, fpm, pool));
            let title = format!("pool {} accept queue", pool.name);
            let Some(q) = find(&queues, &listen.value) else {
                out.push(Check::skip(
                    id,
                    Area::Limits,
                    title,
                    format!("no listening socket {} in `ss` output", listen.value),
                ));
                continue;
            };
            let detail = format!(
                "{} connection(s) waiting on {} (backlog {}); pm.max_children = {}",
                q.queued,
                listen.value,
                q.backlog,
                pool.max_children
                    .as_ref()
                    .map(|m| format!("{} at {}", m.value, m.origin))
                    .unwrap_or_else(|| "?".into())
            );
            let check = if q.backlog > 0 && q.queued * 10 >= q.backlog * 9 {
                Check::fail(id, Area::Limits, format!("pool {}'s queue is full", pool.name))
                    .cause(CauseId::UpstreamSaturated)
                    .fix(format!(
                        "every worker of pool {} is busy and new requests are refused: raise `pm.max_children` if memory allows (see the max-children check), and find the slow requests in the slowlog",
                        pool.name
                    ))
            } else if q.queued > 0 {
                Check::warn(
                    id,
                    Area::Limits,
                    format!("requests wait for a worker of pool {}", pool.name),
                )
            } else {
                Check::ok(id, Area::Limits, title)
            };
            out.push(
                check
                    .detail(detail)
                    .metric("queued", q.queued as f64, None)
                    .metric("backlog", q.backlog as f64, None),
            );
        }
    }
    if let Some(nginx) = d.nginx.as_ref().filter(|n| n.master.is_some()) {
        let mut ports: Vec<u16> = nginx
            .servers
            .iter()
            .flat_map(|s| &s.listens)
            .filter_map(|l| l.port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let mine: Vec<&Queue> = queues
            .iter()
            .filter(|q| !q.netid.starts_with("u_"))
            .filter(|q| port_of(&q.local).is_some_and(|p| ports.contains(&p)))
            .collect();
        let title = "nginx accept queues";
        match mine
            .iter()
            .max_by_key(|q| q.queued * 1000 / q.backlog.max(1))
        {
            None => out.push(Check::skip(
                "nginx.accept-queue",
                Area::Network,
                title,
                "no listening socket on nginx's ports in `ss` output",
            )),
            Some(q) => {
                let detail = format!(
                    "fullest: {} with {} of {} waiting",
                    q.local, q.queued, q.backlog
                );
                let check = if q.backlog > 0 && q.queued * 10 >= q.backlog * 9 {
                    Check::fail("nginx.accept-queue", Area::Network, "nginx's accept queue is full")
                        .cause(CauseId::NetListenOverflow)
                        .fix("nginx cannot accept as fast as connections arrive: raise `listen ... backlog=` and net.core.somaxconn, check worker_connections and the CPU")
                } else {
                    Check::ok("nginx.accept-queue", Area::Network, title)
                };
                out.push(check.detail(detail).metric("queued", q.queued as f64, None));
            }
        }
    }
    out
}

fn skip_all(reason: String) -> Check {
    Check::skip(
        "queues",
        Area::Limits,
        "accept queues",
        format!("socket queues unknown: {reason}"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::check::Status;
    use crate::discover::{discover, testdata};
    use crate::host::HostError;

    const SS: &str = "u_str LISTEN 0      4096   /run/mysqld/mysqld.sock 1234 * 0
u_str LISTEN 460    511    /run/php/php8.2-fpm.sock 414613 * 0
tcp   LISTEN 3      511          0.0.0.0:80       0.0.0.0:*
tcp   LISTEN 0      511             [::]:80          [::]:*
garbage
";

    #[test]
    fn parses_unix_and_tcp_listeners() {
        let q = parse_ss(SS);
        assert_eq!(q.len(), 4);
        assert_eq!(q[1].local, "/run/php/php8.2-fpm.sock");
        assert_eq!((q[1].queued, q[1].backlog), (460, 511));
        assert_eq!(q[3].local, "[::]:80");
    }

    #[test]
    fn a_full_pool_queue_is_saturation() {
        let host = testdata::stack().command_ok("ss -Hlnxt", SS);
        let d = discover(&host, &Config::default());
        let checks = checks(&host, &d, &Config::default());
        let c = checks
            .iter()
            .find(|c| c.id == "php-fpm.pool.www.queue")
            .unwrap();
        assert_eq!(
            (c.status, c.cause),
            (Status::Fail, Some(CauseId::UpstreamSaturated))
        );
        assert!(
            c.detail.starts_with("460 connection(s) waiting"),
            "{}",
            c.detail
        );
        let c = checks
            .iter()
            .find(|c| c.id == "nginx.accept-queue")
            .unwrap();
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
        assert!(c.detail.contains("3 of 511"));
    }

    #[test]
    fn no_ss_is_a_skip() {
        let host = testdata::stack().command(
            "ss -Hlnxt",
            Err(HostError::Timeout {
                command: "ss".into(),
                seconds: 10,
            }),
        );
        let d = discover(&host, &Config::default());
        let checks = checks(&host, &d, &Config::default());
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Skip);
    }
}
