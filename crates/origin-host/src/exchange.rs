//! Exchanges: one bounded request to a service on this host (an HTTP request to a local
//! listener, a FastCGI request to a PHP-FPM pool, status queries to the database, a CDN's public
//! status page) and its
//! answer, as plain data. A request's [`Exchange::key`] is what a snapshot stores the answer
//! under; no request carries a secret (the database request names *where* the credentials are,
//! the live host reads them itself, outside the recorder), so snapshots never hold one.
//!
//! Every exchange has a deadline (`timeout_ms`) for the whole conversation, and every answer is
//! capped ([`MAX_BODY`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Endpoint;

/// The most of a response body an exchange keeps.
pub const MAX_BODY: usize = 256 * 1024;

/// A request to a local service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Exchange {
    /// `METHOD PATH HTTP/1.1` with `Host: host` to a local listener, over TLS with SNI `host`
    /// when `tls` (the certificate is not verified: the self-test asks the origin, not the CA).
    Http {
        /// The listener to connect to.
        endpoint: Endpoint,
        /// The `Host` header, and the SNI name over TLS.
        host: String,
        /// Whether to speak TLS.
        tls: bool,
        /// `GET` or `HEAD`.
        method: String,
        /// The request target (`/`, `/health`).
        path: String,
        /// Deadline for the whole conversation, in milliseconds.
        timeout_ms: u64,
    },
    /// A FastCGI `GET` (no body) with these CGI parameters.
    Fastcgi {
        /// The pool's listen socket or address.
        endpoint: Endpoint,
        /// The CGI parameters (`SCRIPT_FILENAME`, `REQUEST_URI`, ...).
        params: Vec<(String, String)>,
        /// Deadline for the whole conversation, in milliseconds.
        timeout_ms: u64,
    },
    /// A `GET` of a public URL (a CDN's status page), body capped at [`MAX_BODY`].
    Fetch {
        /// The URL (http or https).
        url: String,
        /// Deadline for the whole conversation, in milliseconds.
        timeout_ms: u64,
    },
    /// Read-only statements, run in order on one connection.
    Mysql {
        /// The database socket or address.
        endpoint: Endpoint,
        /// How to log in.
        auth: MysqlAuth,
        /// The read-only statements.
        queries: Vec<String>,
        /// Deadline for the whole conversation, in milliseconds.
        timeout_ms: u64,
    },
}

/// How the database connection authenticates (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "path", rename_all = "kebab-case")]
pub enum MysqlAuth {
    /// `root` over the unix socket, authenticated by the socket's peer credentials.
    UnixSocketRoot,
    /// A `my.cnf`-style file (`[client]` `user=`, `password=`), e.g. `/etc/mysql/debian.cnf`.
    CredentialsFile(PathBuf),
}

impl Exchange {
    /// What a snapshot stores the answer under.
    pub fn key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A short human description (no parameters beyond what identifies it).
    pub fn describe(&self) -> String {
        match self {
            Exchange::Http {
                endpoint,
                host,
                tls,
                method,
                path,
                ..
            } => format!(
                "{method} {}://{host}{path} on {endpoint}",
                if *tls { "https" } else { "http" }
            ),
            Exchange::Fastcgi {
                endpoint, params, ..
            } => {
                let uri = params
                    .iter()
                    .find(|(k, _)| k == "REQUEST_URI")
                    .map_or("", |(_, v)| v.as_str());
                format!("FastCGI {uri} on {endpoint}")
            }
            Exchange::Fetch { url, .. } => format!("GET {url}"),
            Exchange::Mysql { endpoint, .. } => format!("database status on {endpoint}"),
        }
    }

    /// The request's deadline as a duration.
    pub fn timeout(&self) -> std::time::Duration {
        let ms = match self {
            Exchange::Http { timeout_ms, .. }
            | Exchange::Fastcgi { timeout_ms, .. }
            | Exchange::Fetch { timeout_ms, .. }
            | Exchange::Mysql { timeout_ms, .. } => *timeout_ms,
        };
        std::time::Duration::from_millis(ms)
    }
}

/// A service's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Reply {
    /// An HTTP answer (from a local listener or a status page).
    Http {
        /// The status code.
        status: u16,
        /// Header names lowercased, in order.
        headers: Vec<(String, String)>,
        /// The body's first [`MAX_BODY`] bytes, lossy UTF-8.
        body: String,
        /// Time to the first byte of the answer.
        ttfb_ms: u64,
        /// Time for the whole exchange.
        millis: u64,
    },
    /// A PHP-FPM pool's answer.
    Fastcgi {
        /// `Status:` of the CGI headers (200 when absent).
        status: u16,
        /// The CGI headers, names lowercased, in order.
        headers: Vec<(String, String)>,
        /// The body, capped at [`MAX_BODY`], lossy UTF-8.
        body: String,
        /// What the application wrote to FastCGI stderr.
        stderr: String,
        /// Time for the whole exchange.
        millis: u64,
    },
    /// The database's answer.
    Mysql {
        /// `major.minor.patch` the server announced.
        server_version: String,
        /// One result per statement, in order.
        results: Vec<QueryResult>,
        /// Time for the whole exchange.
        millis: u64,
    },
}

/// One statement's rows (every value as text, `None` for NULL), or its error.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, at most a bounded number, each value at most a bounded length.
    pub rows: Vec<Vec<Option<String>>>,
    /// The server's error for this statement (the others still ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why an exchange got no answer. `errno` is the raw OS error of the connect or read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ExchangeError {
    /// Where it failed.
    pub stage: Stage,
    /// The OS error number, when the failure was one (`ECONNREFUSED`, `ETIMEDOUT`, ...).
    pub errno: Option<i32>,
    /// The failure in words (one line, bounded, never a secret).
    pub message: String,
    /// Time until the failure.
    pub millis: u64,
}

/// Where an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Connecting to the endpoint.
    Connect,
    /// TLS handshake or the service's own handshake (MySQL authentication).
    Handshake,
    /// Sending the request or reading the answer (a deadline passing is here with ETIMEDOUT).
    Exchange,
    /// The answer could not be parsed.
    Protocol,
    /// Credentials missing or unreadable.
    Credentials,
    /// A snapshot or fixture that never saw this request.
    NotCaptured,
}

impl ExchangeError {
    /// An error at `stage` with this message and no errno.
    pub fn new(stage: Stage, message: impl Into<String>) -> Self {
        ExchangeError {
            stage,
            errno: None,
            message: message.into(),
            millis: 0,
        }
    }

    /// An I/O error at `stage`; a read past its deadline becomes `ETIMEDOUT`.
    pub fn io(stage: Stage, err: &std::io::Error) -> Self {
        // A read or write past its socket timeout says EAGAIN: that is the deadline passing.
        // At connect, EAGAIN is a full unix-socket backlog and keeps its number.
        let timed_out = matches!(
            err.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        );
        let errno = if timed_out && stage != Stage::Connect {
            Some(libc::ETIMEDOUT)
        } else {
            err.raw_os_error().or(timed_out.then_some(libc::ETIMEDOUT))
        };
        ExchangeError {
            stage,
            errno,
            message: err.to_string(),
            millis: 0,
        }
    }

    /// The answer a snapshot or fixture gives to a request it never saw.
    pub fn not_captured(request: &Exchange) -> Self {
        ExchangeError::new(
            Stage::NotCaptured,
            format!("{}: not captured in this snapshot", request.describe()),
        )
    }

    /// Whether the deadline passed (`ETIMEDOUT`).
    pub fn timed_out(&self) -> bool {
        self.errno == Some(libc::ETIMEDOUT)
    }
}
