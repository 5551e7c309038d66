//! fail2ban: the current bans (from the running server through `fail2ban-client`, or from its
//! database with the `sqlite3` CLI when the server is down) and each jail's `ignoreip`.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::{Command, Host, HostExt};

/// Where the bans were read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BanSource {
    Server,
    Database,
}

/// One jail's current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jail {
    pub name: String,
    pub banned: Vec<IpAddr>,
    /// `ignoreip` entries as written (addresses, CIDRs, host names).
    pub ignoreip: Vec<String>,
}

/// What fail2ban holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fail2banState {
    pub source: BanSource,
    pub jails: Vec<Jail>,
}

/// The default database path.
pub const DATABASE: &str = "/var/lib/fail2ban/fail2ban.sqlite3";

/// Reads `Jail list:` from `fail2ban-client status`.
pub fn parse_jail_list(text: &str) -> Vec<String> {
    for line in text.lines() {
        if let Some((_, list)) = line.split_once("Jail list:") {
            return list
                .split([',', ' ', '\t'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    Vec::new()
}

/// Reads `Banned IP list:` from `fail2ban-client status JAIL`.
pub fn parse_banned(text: &str) -> Vec<IpAddr> {
    for line in text.lines() {
        if let Some((_, list)) = line.split_once("Banned IP list:") {
            return list
                .split_whitespace()
                .filter_map(|s| s.trim_matches(',').parse().ok())
                .collect();
        }
    }
    Vec::new()
}

/// Reads `fail2ban-client get JAIL ignoreip`.
pub fn parse_ignoreip(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("|-")
                .or_else(|| l.strip_prefix("`-"))
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Reads `jail|ip|timeofban|bantime` rows from the database, keeping the bans still in force at
/// `now` (a `bantime` of -1 is permanent; rows without a `bantime` column count as current).
pub fn parse_db_rows(text: &str, now: i64) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').collect();
        let (Some(jail), Some(ip)) = (cols.first(), cols.get(1)) else {
            continue;
        };
        let Ok(ip) = ip.trim().parse::<IpAddr>() else {
            continue;
        };
        let time: Option<i64> = cols.get(2).and_then(|t| t.trim().parse().ok());
        let bantime: Option<i64> = cols.get(3).and_then(|t| t.trim().parse().ok());
        let current = match (time, bantime) {
            (_, Some(b)) if b < 0 => true,
            (Some(t), Some(b)) => t + b > now,
            _ => true,
        };
        if current && !out.iter().any(|(j, i)| j == jail && *i == ip) {
            out.push((jail.to_string(), ip));
        }
    }
    out
}

/// Asks the running server, else the database. `Err` says why neither answered.
pub fn read_state(host: &dyn Host) -> Result<Fail2banState, String> {
    let server_err = match host.run(&Command::new("fail2ban-client", &["status"])) {
        Ok(out) if out.success() => {
            let mut jails = Vec::new();
            for name in parse_jail_list(&out.stdout_text()) {
                let banned = host
                    .run(&Command::new("fail2ban-client", &["status", &name]))
                    .map(|o| parse_banned(&o.stdout_text()))
                    .unwrap_or_default();
                let ignoreip = host
                    .run(&Command::new(
                        "fail2ban-client",
                        &["get", &name, "ignoreip"],
                    ))
                    .map(|o| parse_ignoreip(&o.stdout_text()))
                    .unwrap_or_default();
                jails.push(Jail {
                    name,
                    banned,
                    ignoreip,
                });
            }
            return Ok(Fail2banState {
                source: BanSource::Server,
                jails,
            });
        }
        Ok(out) => {
            let last = out.stderr.lines().last().unwrap_or("no output");
            // Drop fail2ban's log prefix (`2026-… fail2ban [pid]: ERROR   `).
            let msg = last
                .split_once("ERROR")
                .map(|(_, m)| m.trim())
                .unwrap_or(last);
            format!("fail2ban-client status failed: {msg}")
        }
        Err(e) => e.to_string(),
    };
    if host.metadata(Path::new(DATABASE)).is_err() {
        return Err(format!("{server_err}; no database at {DATABASE}"));
    }
    let query = |sql: &str| {
        host.run(&Command::new(
            "sqlite3",
            &["-readonly", "-separator", "|", DATABASE, sql],
        ))
    };
    let out = match query("SELECT jail, ip, timeofban, bantime FROM bans;") {
        Ok(o) if o.success() => o,
        _ => match query("SELECT jail, ip, timeofban FROM bans;") {
            Ok(o) if o.success() => o,
            Ok(o) => return Err(format!("{server_err}; sqlite3: {}", o.stderr.trim())),
            Err(e) => return Err(format!("{server_err}; {e}")),
        },
    };
    let now = host.now().as_second();
    let rows = parse_db_rows(&out.stdout_text(), now);
    let mut jails: Vec<Jail> = Vec::new();
    for (jail, ip) in rows {
        match jails.iter_mut().find(|j| j.name == jail) {
            Some(j) => j.banned.push(ip),
            None => jails.push(Jail {
                name: jail,
                banned: vec![ip],
                ignoreip: Vec::new(),
            }),
        }
    }
    let ignore = config_ignoreip(host);
    for j in &mut jails {
        j.ignoreip = ignore.clone();
    }
    Ok(Fail2banState {
        source: BanSource::Database,
        jails,
    })
}

/// `ignoreip` of `[DEFAULT]` in jail.conf / jail.local / jail.d (the server is down, so the
/// files are all there is).
fn config_ignoreip(host: &dyn Host) -> Vec<String> {
    let mut files = vec![
        std::path::PathBuf::from("/etc/fail2ban/jail.conf"),
        std::path::PathBuf::from("/etc/fail2ban/jail.local"),
    ];
    files.extend(host.glob("/etc/fail2ban/jail.d/*.conf"));
    files.extend(host.glob("/etc/fail2ban/jail.d/*.local"));
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = host.read_text(&f) else {
            continue;
        };
        let mut section = String::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                section = t.trim_matches(['[', ']']).to_string();
            } else if section == "DEFAULT" {
                if let Some(v) = t.strip_prefix("ignoreip") {
                    if let Some(v) = v.trim_start().strip_prefix('=') {
                        out = v.split_whitespace().map(str::to_string).collect();
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_outputs() {
        let status = "Status\n|- Number of jail:\t2\n`- Jail list:\tnginx-limit-req, sshd\n";
        assert_eq!(parse_jail_list(status), ["nginx-limit-req", "sshd"]);
        let jail = "Status for the jail: sshd\n|- Filter\n|  |- Currently failed:\t0\n`- Actions\n   |- Currently banned:\t2\n   `- Banned IP list:\t173.245.48.9 2400:cb00::1\n";
        assert_eq!(parse_banned(jail).len(), 2);
        let ign = "These IP addresses/networks are ignored:\n|- 127.0.0.0/8\n`- ::1\n";
        assert_eq!(parse_ignoreip(ign), ["127.0.0.0/8", "::1"]);
        assert!(parse_ignoreip("No IP address/network is ignored\n").is_empty());
    }

    #[test]
    fn database_rows_keep_current_bans() {
        let rows = "sshd|1.2.3.4|1000|600\nnginx|173.245.48.9|1000|-1\nnginx|5.6.7.8|1000|10\nbad|row\nx|garbage|1|1\n";
        let cur = parse_db_rows(rows, 1500);
        assert_eq!(cur.len(), 2);
        assert_eq!(cur[1].0, "nginx");
    }
}
