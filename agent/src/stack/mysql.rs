//! The agent's MySQL/MariaDB asks: where the database is and which logins to try, and a
//! read-only query through the host seam (so `collect` records the answers and a snapshot
//! replays them). The database live status and the WordPress helper both call [`query`].
//!
//! Credentials are never part of a request or an answer: a request names the *file* they are
//! in (`/etc/mysql/debian.cnf`, `database.credentials_file`) or root's unix-socket
//! authentication, and only the live host reads the file, when it connects
//! (`host::client::mysql`, which holds the connection code).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::exchange::{ExchangeError, MysqlAuth, QueryResult, Reply, Stage};
use crate::host::{Endpoint, Exchange, Host};

/// Debian's maintenance credentials.
pub const DEBIAN_CNF: &str = "/etc/mysql/debian.cnf";

/// How to reach the database: its socket (or `host:port`) and the ways to log in, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    pub auths: Vec<MysqlAuth>,
}

impl Target {
    /// The discovered database, with a configured credentials file first, then Debian's, then
    /// root's unix-socket login.
    pub fn discover(
        host: &dyn Host,
        discovery: &crate::discover::Discovery,
        config: &crate::config::Config,
    ) -> Option<Target> {
        let db = discovery.database.as_ref()?;
        // A database that is not running and that nobody pointed the agent at is not asked
        // (the service checks say whether one should run).
        if db.process.is_none() && config.mysql_socket.is_none() {
            return None;
        }
        let endpoint = match (&config.mysql_socket, &db.socket) {
            (Some(path), _) => Endpoint::Unix(path.clone()),
            (None, Some(sock)) => Endpoint::Unix(sock.value.clone()),
            (None, None) => {
                let port = config
                    .mysql_port
                    .or(db.port.as_ref().map(|p| p.value))
                    .unwrap_or(3306);
                Endpoint::Tcp(format!("127.0.0.1:{port}"))
            }
        };
        let mut auths = Vec::new();
        if let Some(file) = &config.database_credentials_file {
            auths.push(MysqlAuth::CredentialsFile(file.clone()));
        } else if matches!(endpoint, Endpoint::Unix(_))
            && host.metadata(Path::new(DEBIAN_CNF)).is_ok()
        {
            // Debian's maintenance password goes to the local socket only, never to a port
            // any local account could have bound.
            auths.push(MysqlAuth::CredentialsFile(PathBuf::from(DEBIAN_CNF)));
        }
        if matches!(endpoint, Endpoint::Unix(_)) {
            auths.push(MysqlAuth::UnixSocketRoot);
        }
        Some(Target { endpoint, auths })
    }
}

/// Runs read-only `queries` on one connection, trying each way to log in in turn until one
/// connects. The answer says which login worked.
pub fn query(
    host: &dyn Host,
    target: &Target,
    queries: &[&str],
    timeout: Duration,
) -> Result<(MysqlAuth, String, Vec<QueryResult>), ExchangeError> {
    let mut last = ExchangeError::new(Stage::Credentials, "no way to log in to the database");
    for auth in &target.auths {
        let request = Exchange::Mysql {
            endpoint: target.endpoint.clone(),
            auth: auth.clone(),
            queries: queries.iter().map(|q| q.to_string()).collect(),
            timeout_ms: timeout.as_millis() as u64,
        };
        match host.exchange(&request) {
            Ok(Reply::Mysql {
                server_version,
                results,
                ..
            }) => return Ok((auth.clone(), server_version, results)),
            Ok(_) => return Err(ExchangeError::new(Stage::Protocol, "not a database answer")),
            // Only a login failure is worth another login; a dead server is dead for all.
            Err(e) if matches!(e.stage, Stage::Handshake | Stage::Credentials) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}
