//! The live host's MySQL/MariaDB connection: reads the credentials file a request names (only
//! here, never recorded), and runs the read-only statements on one connection.
//!
//! Credentials are never part of a request or an answer: a request names the *file* they are
//! in (`/etc/mysql/debian.cnf`, `database.credentials_file`) or root's unix-socket
//! authentication. The file must be owned by root and not writable by others, or it is not used.
//!
//! The crate is `mysql` (pure Rust, no TLS: the connection is the local socket). Its connect
//! and reads are bounded by socket timeouts; the whole conversation also runs under one
//! deadline, past which the caller gets `ETIMEDOUT` and the worker thread is left to its own
//! socket timeouts.

use std::path::Path;
use std::time::Duration;

use crate::exchange::{ExchangeError, MysqlAuth, QueryResult, Reply, Stage};
use crate::Endpoint;

/// The most rows kept per statement, and bytes per value (a serialized WordPress option fits).
const MAX_ROWS: usize = 200;
const MAX_VALUE: usize = 64 * 1024;

/// `user` and `password` of the `[client]` section of a my.cnf-style file.
pub fn parse_credentials(text: &str) -> (Option<String>, Option<String>) {
    let mut section = String::new();
    let (mut user, mut password) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).trim().to_string();
            continue;
        }
        if section != "client" {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches(['"', '\'']).to_string();
            match k.trim() {
                "user" => user = Some(v),
                "password" => password = Some(v),
                _ => {}
            }
        }
    }
    (user, password)
}

/// Reads a credentials file on the live host: root-owned, not writable by others, small.
fn read_credentials(path: &Path) -> Result<(String, Option<String>), ExchangeError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let fail =
        |m: String| ExchangeError::new(Stage::Credentials, format!("{}: {m}", path.display()));
    // O_NOFOLLOW: a link planted in place of the file is not followed.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(fail(
            "not used: it must be owned by root and writable by nobody else".to_string(),
        ));
    }
    let mut text = String::new();
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    match parse_credentials(&text) {
        (Some(user), password) => Ok((user, password)),
        (None, _) => Err(fail("no `user =` in its [client] section".to_string())),
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// A password is sent only to a socket owned by root or the `mysql` service account (a socket
/// another account planted would collect it).
fn socket_trusted(endpoint: &Endpoint) -> Result<(), ExchangeError> {
    use std::os::unix::fs::MetadataExt;
    let Endpoint::Unix(path) = endpoint else {
        return Ok(());
    };
    let meta = std::fs::metadata(path).map_err(|e| ExchangeError::io(Stage::Connect, &e))?;
    let mysql_uid = nix::unistd::User::from_name("mysql")
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    if meta.uid() == 0 || Some(meta.uid()) == mysql_uid {
        Ok(())
    } else {
        Err(ExchangeError::new(
            Stage::Credentials,
            format!(
                "{}: owned by uid {}, not root or mysql: no password is sent to it",
                path.display(),
                meta.uid()
            ),
        ))
    }
}

/// One exchange on the live host, under one deadline.
pub fn request(
    endpoint: &Endpoint,
    auth: &MysqlAuth,
    queries: &[String],
    timeout: Duration,
) -> Result<Reply, ExchangeError> {
    let started = std::time::Instant::now();
    let (user, password) = match auth {
        MysqlAuth::UnixSocketRoot => ("root".to_string(), None),
        MysqlAuth::CredentialsFile(path) => {
            socket_trusted(endpoint)?;
            read_credentials(path)?
        }
    };
    // A non-blocking connect first: a socket with a full backlog answers EAGAIN at once.
    drop(super::net::connect(endpoint, timeout)?);
    let (tx, rx) = std::sync::mpsc::channel();
    let endpoint = endpoint.clone();
    let queries = queries.to_vec();
    std::thread::Builder::new()
        .name("mysql-status".to_string())
        .spawn(move || {
            let _ = tx.send(run(&endpoint, user, password, &queries, timeout));
        })
        .map_err(|e| ExchangeError::io(Stage::Connect, &e))?;
    let left = timeout.saturating_sub(started.elapsed());
    let mut answer = match rx.recv_timeout(left) {
        Ok(answer) => answer,
        Err(_) => Err(ExchangeError::io(
            Stage::Exchange,
            &std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
        )),
    };
    let millis = started.elapsed().as_millis() as u64;
    match &mut answer {
        Ok(Reply::Mysql { millis: m, .. }) => *m = millis,
        Err(e) => e.millis = millis,
        Ok(_) => {}
    }
    answer
}

fn run(
    endpoint: &Endpoint,
    user: String,
    password: Option<String>,
    queries: &[String],
    timeout: Duration,
) -> Result<Reply, ExchangeError> {
    use mysql::prelude::Queryable;
    let mut opts = mysql::OptsBuilder::new()
        .user(Some(user))
        .pass(password)
        .read_timeout(Some(timeout))
        .write_timeout(Some(timeout))
        .tcp_connect_timeout(Some(timeout))
        .prefer_socket(false)
        .stmt_cache_size(Some(0));
    opts = match endpoint {
        Endpoint::Unix(path) => opts.socket(Some(path.to_string_lossy().into_owned())),
        Endpoint::Tcp(addr) => {
            let (h, p) = addr.rsplit_once(':').unwrap_or((addr, "3306"));
            opts.ip_or_hostname(Some(h.trim_matches(['[', ']'])))
                .tcp_port(p.parse().unwrap_or(3306))
        }
    };
    let mut conn = mysql::Conn::new(opts).map_err(|e| {
        let stage = match &e {
            mysql::Error::MySqlError(_) => Stage::Handshake,
            mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(_)) => Stage::Connect,
            mysql::Error::IoError(_) => Stage::Connect,
            _ => Stage::Handshake,
        };
        let mut err = ExchangeError::new(stage, scrub(&e.to_string()));
        if let mysql::Error::IoError(io) = &e {
            err.errno = io.raw_os_error();
        }
        if let mysql::Error::MySqlError(my) = &e {
            // 1040: Too many connections. Report it as such: it is the answer.
            if my.code == 1040 {
                err.stage = Stage::Connect;
            }
        }
        err
    })?;
    let (a, b, c) = conn.server_version();
    let server_version = format!("{a}.{b}.{c}");
    let mut results = Vec::new();
    for q in queries {
        let result = match conn.query::<mysql::Row, _>(q) {
            Ok(rows) => {
                let columns = rows
                    .first()
                    .map(|r| {
                        r.columns_ref()
                            .iter()
                            .map(|c| c.name_str().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                let rows = rows
                    .iter()
                    .take(MAX_ROWS)
                    .map(|row| (0..row.len()).map(|i| value(row.as_ref(i))).collect())
                    .collect();
                QueryResult {
                    columns,
                    rows,
                    error: None,
                }
            }
            Err(e) => QueryResult {
                error: Some(scrub(&e.to_string())),
                ..QueryResult::default()
            },
        };
        results.push(result);
    }
    Ok(Reply::Mysql {
        server_version,
        results,
        millis: 0,
    })
}

fn value(v: Option<&mysql::Value>) -> Option<String> {
    let text = match v? {
        mysql::Value::NULL => return None,
        mysql::Value::Bytes(b) => {
            String::from_utf8_lossy(&b[..b.len().min(MAX_VALUE)]).into_owned()
        }
        other => other.as_sql(true).trim_matches('\'').to_string(),
    };
    Some(text)
}

/// Server error texts can quote the user name; they never hold the password, but keep them to
/// one line and bounded.
fn scrub(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_section_credentials() {
        let text = "# Automatically generated\n[client]\nhost     = localhost\nuser     = root\npassword = \"s3cret\"\nsocket   = /run/mysqld/mysqld.sock\n[mysql_upgrade]\nuser = other\n";
        assert_eq!(
            parse_credentials(text),
            (Some("root".to_string()), Some("s3cret".to_string()))
        );
        assert_eq!(parse_credentials("[mysqld]\nuser=mysql\n"), (None, None));
    }
}
