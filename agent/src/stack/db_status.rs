//! The database's live status (checklist step 8), over the local socket with the credentials
//! the host provides (see [`super::mysql`]): connections against `max_connections` and their
//! peak, connection errors, uptime (a recent restart), the longest running statements as
//! digests (literals replaced by `?` in the server, before anything leaves it), InnoDB row-lock
//! waits, and the tables the logs name as crashed, checked with `CHECK TABLE … QUICK` (never a
//! repair: the fix gives the exact statement).

use std::collections::BTreeMap;
use std::io::BufRead;

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::config::Config;
use crate::discover::Discovery;
use crate::event::LogSource;
use crate::host::exchange::{ExchangeError, MysqlAuth, QueryResult, Stage};
use crate::host::Host;

/// The statements, in order (`CHECK TABLE`s follow).
pub const STATUS: &str = "SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_connected','Threads_running','Max_used_connections','Connection_errors_max_connections','Aborted_connects','Uptime','Innodb_row_lock_current_waits')";
pub const VARIABLES: &str =
    "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('max_connections','extra_max_connections')";
/// Digest in the server: quoted strings and numbers become `?`.
pub const LONGEST: &str = "SELECT ID, TIME, COMMAND, REGEXP_REPLACE(REGEXP_REPLACE(LEFT(INFO, 300), '\\'[^\\']*(\\'|$)|\"[^\"]*(\"|$)', '?'), '[0-9]+', '?') FROM information_schema.PROCESSLIST WHERE COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump') AND ID <> CONNECTION_ID() AND INFO IS NOT NULL ORDER BY TIME DESC LIMIT 5";

/// The most crashed-table names checked.
const MAX_TABLES: usize = 8;
/// The most of each log read for crashed-table names.
const MAX_LOG_SCAN: u64 = 64 * 1024 * 1024;

/// `db`.`table` names the logs say are crashed (`./db/table` or `table` forms), validated.
pub fn crashed_tables_in(text: &mut dyn BufRead) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    while out.len() < MAX_TABLES {
        line.clear();
        match text.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(i) = memchr::memmem::find(&line, b"' is marked as crashed") else {
            continue;
        };
        let head = &line[..i];
        let Some(start) = memchr::memmem::rfind(head, b"Table '") else {
            continue;
        };
        let name = String::from_utf8_lossy(&head[start + 7..]).into_owned();
        let name = name.trim_start_matches("./");
        let (db, table) = match name.split_once('/') {
            Some((db, t)) => (Some(db.to_string()), t.to_string()),
            None => (None, name.to_string()),
        };
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-')
        };
        if ok(&table) && db.as_deref().is_none_or(ok) && !out.contains(&(db.clone(), table.clone()))
        {
            out.push((db, table));
        }
    }
    out
}

fn quoted(db: &Option<String>, table: &str) -> String {
    match db {
        Some(db) => format!("`{db}`.`{table}`"),
        None => format!("`{table}`"),
    }
}

fn logged_crashed_tables(
    host: &dyn Host,
    d: &Discovery,
    config: &Config,
) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for file in crate::discover::logs::log_files(host, d, config) {
        if !matches!(file.source, Some(LogSource::MysqlError | LogSource::Php)) {
            continue;
        }
        let Ok(reader) = host.open(&file.path) else {
            continue;
        };
        let mut reader = std::io::BufReader::new(std::io::Read::take(reader, MAX_LOG_SCAN));
        for t in crashed_tables_in(&mut reader) {
            if !out.contains(&t) && out.len() < MAX_TABLES {
                out.push(t);
            }
        }
    }
    out
}

fn pairs(r: Option<&QueryResult>) -> BTreeMap<String, String> {
    r.map(|r| {
        r.rows
            .iter()
            .filter_map(|row| match row.as_slice() {
                [Some(k), Some(v), ..] => Some((k.to_ascii_lowercase(), v.clone())),
                _ => None,
            })
            .collect()
    })
    .unwrap_or_default()
}

fn describe(auth: &MysqlAuth) -> String {
    match auth {
        MysqlAuth::UnixSocketRoot => "root by unix-socket authentication".to_string(),
        MysqlAuth::CredentialsFile(p) => format!("the credentials in {}", p.display()),
    }
}

/// The read-only account the docs suggest, with the grants the status needs.
pub const READ_ONLY_USER: &str = "CREATE USER 'origin_agent'@'localhost' IDENTIFIED BY '…'; GRANT PROCESS, SELECT ON *.* TO 'origin_agent'@'localhost';";

/// The database checks.
pub fn checks(host: &dyn Host, d: &Discovery, config: &Config) -> Vec<Check> {
    let Some(target) = super::mysql::Target::discover(host, d, config) else {
        return Vec::new();
    };
    let tables = logged_crashed_tables(host, d, config);
    let mut queries = vec![
        STATUS.to_string(),
        VARIABLES.to_string(),
        LONGEST.to_string(),
    ];
    for (db, t) in &tables {
        queries.push(format!("CHECK TABLE {} QUICK", quoted(db, t)));
    }
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let id = "database.live-status";
    let title = "the database answers and has connections to spare";
    let answer = super::mysql::query(host, &target, &refs, super::EXCHANGE_TIMEOUT);
    let (auth, version, results) = match answer {
        Ok(a) => a,
        Err(e) => return vec![unreachable(id, title, &target.endpoint, &e)],
    };
    let status = pairs(results.first());
    let vars = pairs(results.get(1));
    let num = |m: &BTreeMap<String, String>, k: &str| m.get(k).and_then(|v| v.parse::<u64>().ok());
    let connected = num(&status, "threads_connected").unwrap_or(0);
    let peak = num(&status, "max_used_connections").unwrap_or(0);
    let max = num(&vars, "max_connections").unwrap_or(0);
    let refused = num(&status, "connection_errors_max_connections").unwrap_or(0);
    let aborted = num(&status, "aborted_connects").unwrap_or(0);
    let uptime = num(&status, "uptime").unwrap_or(u64::MAX);
    let running = num(&status, "threads_running").unwrap_or(0);
    let lock_waits = num(&status, "innodb_row_lock_current_waits").unwrap_or(0);
    let longest: Vec<String> = results
        .get(2)
        .map(|r| {
            r.rows
                .iter()
                .map(|row| {
                    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                    format!("{} s {}: {}", get(1), get(2), digest(&get(3)))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut detail = format!(
        "{version}, logged in as {}: {connected} of {max} connections in use (peak {peak} since start), {running} running, {refused} connections refused for max_connections, {aborted} aborted connects, {lock_waits} InnoDB row-lock waits now, up {uptime} s",
        describe(&auth)
    );
    if !longest.is_empty() {
        detail.push_str(&format!(
            "\nlongest running statements:\n  {}",
            longest.join("\n  ")
        ));
    }
    let full = max > 0 && connected >= max;
    let mut out = vec![if full {
        Check::fail(id, Area::Services, "the database is out of connections now")
            .detail(detail)
            .cause(CauseId::DbTooManyConnections)
            .fix(format!(
                "Threads_connected {connected} has reached max_connections {max}: find what holds the connections (the statements above, SHOW PROCESSLIST), then raise max_connections in the [mysqld] section (e.g. {}) if the host's memory allows, and restart",
                max * 2
            ))
    } else {
        Check::ok(id, Area::Services, title)
            .detail(format!("not out of connections now: {detail}"))
            .cause(CauseId::DbTooManyConnections)
    }
    .metric("threads_connected", connected as f64, None)
    .metric("max_connections", max as f64, None)
    .metric("max_used_connections", peak as f64, None)];
    if uptime < 600 {
        out.push(
            Check::warn(
                "database.uptime",
                Area::Services,
                "the database restarted recently",
            )
            .detail(format!(
                "up for only {uptime} s: look at the database error log for a crash or an OOM kill"
            )),
        );
    }
    if !tables.is_empty() {
        out.push(table_check(&tables, &results[3.min(results.len())..]));
    }
    out
}

fn table_check(tables: &[(Option<String>, String)], results: &[QueryResult]) -> Check {
    let mut crashed = Vec::new();
    let mut fine = Vec::new();
    for ((db, t), r) in tables.iter().zip(results) {
        let name = quoted(db, t);
        let bad: Vec<String> = r
            .rows
            .iter()
            // An error row, or a final status other than OK (a table only *marked* crashed
            // that checks intact gets a warning, then `OK`, and its mark cleared).
            .filter(|row| {
                let kind = row.get(2).cloned().flatten().unwrap_or_default();
                let text = row.get(3).cloned().flatten().unwrap_or_default();
                kind.eq_ignore_ascii_case("error")
                    || (kind.eq_ignore_ascii_case("status") && !text.eq_ignore_ascii_case("ok"))
            })
            .map(|row| row.get(3).cloned().flatten().unwrap_or_default())
            .collect();
        match (&r.error, bad.is_empty()) {
            (Some(e), _) => crashed.push((name, e.clone())),
            (None, false) => crashed.push((name, bad.join("; "))),
            (None, true) => fine.push(name),
        }
    }
    let id = "database.crashed-tables";
    if crashed.is_empty() {
        return Check::ok(
            id,
            Area::Services,
            "the tables the logs named as crashed check out now",
        )
        .detail(format!("CHECK TABLE … QUICK is OK for {}", fine.join(", ")))
        .cause(CauseId::DbCrashedTable);
    }
    let names: Vec<String> = crashed.iter().map(|(n, _)| n.clone()).collect();
    Check::fail(id, Area::Services, "crashed tables, confirmed by CHECK TABLE now")
        .detail(
            crashed
                .iter()
                .map(|(n, m)| format!("{n}: {m}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .cause(CauseId::DbCrashedTable)
        .fix(format!(
            "Back up, then repair (the agent never repairs on its own): REPAIR TABLE {};  (or `mariadb-check --repair` on it); convert MyISAM/Aria tables to InnoDB so an unclean stop cannot do it again",
            names.join(", ")
        ))
}

/// Digits and quoted strings out of a statement, again (the server did it first).
pub fn digest(statement: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut last_q = false;
    for c in statement.chars().filter(|c| !c.is_control()) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                if !last_q {
                    out.push('?');
                }
                last_q = true;
                continue;
            }
            None if c.is_ascii_digit() => {
                if !last_q {
                    out.push('?');
                }
                last_q = true;
                continue;
            }
            None => {
                out.push(c);
            }
        }
        last_q = false;
    }
    out
}

fn unreachable(
    id: &str,
    title: &str,
    endpoint: &crate::host::Endpoint,
    e: &ExchangeError,
) -> Check {
    let label = super::errno_label(e.errno, &e.message);
    match e.stage {
        Stage::NotCaptured => Check::skip(id, Area::Services, title, e.message.clone()),
        Stage::Connect if e.message.contains("1040") || e.message.contains("Too many connections") => {
            Check::fail(id, Area::Services, "the database is out of connections now")
                .detail(format!("{endpoint}: {label}"))
                .cause(CauseId::DbTooManyConnections)
        }
        Stage::Connect if matches!(e.errno, Some(libc::ECONNREFUSED | libc::ENOENT)) => {
            Check::fail(id, Area::Services, "the database refuses connections now")
                .detail(format!("{endpoint}: connect() failed {label}"))
                .cause(CauseId::DbDown)
        }
        Stage::Credentials | Stage::Handshake => Check::skip(
            id,
            Area::Services,
            title,
            format!(
                "could not log in ({label}); give the agent a read-only account in database.credentials_file (root-owned, mode 0600, [client] user= password=): {READ_ONLY_USER}"
            ),
        ),
        _ => Check::warn(id, Area::Services, title).detail(format!(
            "{endpoint}: no answer within its deadline: {label} after {} ms",
            e.millis
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashed_table_names_come_from_log_lines() {
        let log = "2026-11-24  7:48:15 3 [ERROR] mariadbd: Table './wp/wp_options' is marked as crashed and should be repaired\n[10-Apr-2017 07:55:22 UTC] WordPress database error Table 'wp_posts' is marked as crashed and last (automatic?) repair failed for query\nx: Table './a/b`; DROP' is marked as crashed\n";
        let names = crashed_tables_in(&mut log.as_bytes());
        assert_eq!(
            names,
            vec![
                (Some("wp".to_string()), "wp_options".to_string()),
                (None, "wp_posts".to_string())
            ]
        );
    }

    #[test]
    fn digests_keep_no_literal() {
        assert_eq!(
            digest("SELECT * FROM users WHERE email = 'a@b.c' AND id = 42 AND x=\"y\""),
            "SELECT * FROM users WHERE email = ? AND id = ? AND x=?"
        );
    }
}
