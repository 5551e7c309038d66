//! The live host's protocol clients: how [`super::live::LiveHost`] answers an [`Exchange`] on
//! real sockets. Each is bounded by the request's deadline and caps what it keeps
//! ([`super::exchange::MAX_BODY`]).
//!
//! - [`net`]: deadline-bounded connections to a unix socket or a TCP address;
//! - [`http`]: one HTTP/1.1 request to a local listener (TLS without verification);
//! - [`fastcgi`]: one FastCGI `GET` to a PHP-FPM pool;
//! - [`mysql`]: read-only statements on one database connection (credentials read here only);
//! - [`fetch`]: a public status page (a CDN's).
//!
//! What an answer *means* (a pool saturated, a database out of connections, a CDN incident) is
//! the agent's `stack` module's business; these only carry bytes.

pub mod fastcgi;
pub mod fetch;
pub mod http;
pub mod mysql;
pub mod net;

use super::{Exchange, ExchangeError, Reply};

/// One exchange on the live host.
pub fn exchange(request: &Exchange) -> Result<Reply, ExchangeError> {
    let timeout = request.timeout();
    match request {
        Exchange::Http {
            endpoint,
            host,
            tls,
            method,
            path,
            ..
        } => http::request(endpoint, host, *tls, method, path, timeout),
        Exchange::Fastcgi {
            endpoint, params, ..
        } => fastcgi::request(endpoint, params, timeout),
        Exchange::Fetch { url, .. } => fetch::fetch_live(url, timeout),
        Exchange::Mysql {
            endpoint,
            auth,
            queries,
            ..
        } => mysql::request(endpoint, auth, queries, timeout),
    }
}
