//! A small FastCGI client (the published FastCGI 1.0 specification, responder role), enough to
//! ask a PHP-FPM pool for its status or ping page without going through the web server: one
//! request per connection, no body, bounded in time (the connection's deadline) and in size.
//!
//! No well-kept synchronous FastCGI *client* crate with deadlines exists (the crates.io ones are
//! async or server-side), so this is ours; [`parse_records`] takes bytes and is fuzzed
//! (`fuzz/fuzz_targets/fastcgi_response.rs`).

use std::io::Write;

use crate::exchange::{ExchangeError, Reply, Stage, MAX_BODY};
use crate::Endpoint;

const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
const REQUEST_ID: u16 = 1;
/// The most raw bytes read from a pool (records, padding and all).
const MAX_RAW: usize = 4 * MAX_BODY;

/// What went wrong reading a FastCGI answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FastcgiError {
    /// A record header names a protocol version other than 1.
    #[error("record of unsupported version {0}")]
    Version(u8),
    /// The bytes stop in the middle of a record.
    #[error("the answer ended inside a record")]
    Truncated,
    /// The stream closed before the pool said the request was over.
    #[error("the answer ended without an END_REQUEST record")]
    NoEnd,
}

/// A parsed answer: the application's stdout and stderr and how the request ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// What the application wrote to FCGI_STDOUT (CGI headers, then the body), capped.
    pub stdout: Vec<u8>,
    /// What it wrote to FCGI_STDERR (PHP warnings, fatal errors), capped.
    pub stderr: Vec<u8>,
    /// The application status of END_REQUEST, when one came.
    pub app_status: Option<u32>,
    /// Protocol status of END_REQUEST (0 request complete, 1 cannot multiplex, 2 overloaded,
    /// 3 unknown role).
    pub protocol_status: Option<u8>,
}

impl Response {
    /// Whether an END_REQUEST record arrived (the pool finished the request).
    pub fn ended(&self) -> bool {
        self.app_status.is_some()
    }
}

/// Parses the records in `bytes` (a whole or partial answer). Stdout and stderr are kept up to
/// [`MAX_BODY`] bytes each; the rest is dropped. Records for other request ids are skipped.
/// A partial trailing record is [`FastcgiError::Truncated`] only when `complete` is true.
pub fn parse_records(bytes: &[u8], complete: bool) -> Result<Response, FastcgiError> {
    let mut response = Response::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 8) else {
            return if complete {
                Err(FastcgiError::Truncated)
            } else {
                Ok(response)
            };
        };
        if header[0] != VERSION {
            return Err(FastcgiError::Version(header[0]));
        }
        let kind = header[1];
        let id = u16::from_be_bytes([header[2], header[3]]);
        let len = u16::from_be_bytes([header[4], header[5]]) as usize;
        let padding = header[6] as usize;
        let body_start = at + 8;
        let Some(content) = bytes.get(body_start..body_start + len) else {
            return if complete {
                Err(FastcgiError::Truncated)
            } else {
                Ok(response)
            };
        };
        let next = body_start + len + padding;
        if next > bytes.len() && complete {
            return Err(FastcgiError::Truncated);
        }
        at = next;
        if id != REQUEST_ID {
            continue;
        }
        match kind {
            STDOUT => append_capped(&mut response.stdout, content),
            STDERR => append_capped(&mut response.stderr, content),
            END_REQUEST if content.len() >= 5 => {
                response.app_status = Some(u32::from_be_bytes([
                    content[0], content[1], content[2], content[3],
                ]));
                response.protocol_status = Some(content[4]);
                return Ok(response);
            }
            END_REQUEST => return Err(FastcgiError::Truncated),
            _ => {}
        }
    }
    if complete {
        Err(FastcgiError::NoEnd)
    } else {
        Ok(response)
    }
}

fn append_capped(out: &mut Vec<u8>, content: &[u8]) {
    let room = MAX_BODY.saturating_sub(out.len());
    out.extend_from_slice(&content[..content.len().min(room)]);
}

/// Splits CGI output into its `Status:` (200 when absent), headers and body.
pub fn split_cgi(stdout: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (head, body) = match memchr::memmem::find(stdout, b"\r\n\r\n") {
        Some(i) => (&stdout[..i], &stdout[i + 4..]),
        None => match memchr::memmem::find(stdout, b"\n\n") {
            Some(i) => (&stdout[..i], &stdout[i + 2..]),
            None => (&stdout[..0], stdout),
        },
    };
    let mut status = 200;
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        if name == "status" {
            status = value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse().ok())
                .unwrap_or(status);
        }
        headers.push((name, value));
    }
    (status, headers, body.to_vec())
}

fn record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
    // Callers keep content under 64 KiB (params are bounded below).
    let len = content.len().min(u16::MAX as usize);
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&REQUEST_ID.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&content[..len]);
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// The bytes of one request: BEGIN_REQUEST, the params, an empty PARAMS and an empty STDIN.
pub fn encode_request(params: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut begin = RESPONDER.to_be_bytes().to_vec();
    begin.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    record(&mut out, BEGIN_REQUEST, &begin);
    let mut body = Vec::new();
    for (name, value) in params {
        // Param names and values come from our own code and pool configs; cap them anyway.
        let (name, value) = (
            &name.as_bytes()[..name.len().min(4096)],
            &value.as_bytes()[..value.len().min(4096)],
        );
        push_len(&mut body, name.len());
        push_len(&mut body, value.len());
        body.extend_from_slice(name);
        body.extend_from_slice(value);
    }
    for chunk in body.chunks(60_000) {
        record(&mut out, PARAMS, chunk);
    }
    record(&mut out, PARAMS, &[]);
    record(&mut out, STDIN, &[]);
    out
}

/// The CGI parameters of a `GET` for `uri` (path and query) on a pool.
pub fn get_params(uri: &str) -> Vec<(String, String)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", path),
        ("SCRIPT_FILENAME", path),
        ("REQUEST_URI", uri),
        ("DOCUMENT_URI", path),
        ("QUERY_STRING", query),
        ("SERVER_SOFTWARE", "origin-agent"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// One request to a pool, on the live host.
pub fn request(
    endpoint: &Endpoint,
    params: &[(String, String)],
    timeout: std::time::Duration,
) -> Result<Reply, ExchangeError> {
    let mut conn = super::net::connect(endpoint, timeout)?;
    let fail = |stage, err: &std::io::Error, ms| {
        let mut e = ExchangeError::io(stage, err);
        e.millis = ms;
        e
    };
    conn.write_all(&encode_request(params))
        .map_err(|e| fail(Stage::Exchange, &e, conn.elapsed_ms()))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let response = loop {
        let n = std::io::Read::read(&mut conn, &mut buf)
            .map_err(|e| fail(Stage::Exchange, &e, conn.elapsed_ms()))?;
        raw.extend_from_slice(&buf[..n]);
        let complete = n == 0 || raw.len() >= MAX_RAW;
        match parse_records(&raw, complete) {
            Ok(r) if r.ended() || complete => break r,
            Ok(_) => {}
            Err(err) => {
                let mut e = ExchangeError::new(Stage::Protocol, err.to_string());
                e.millis = conn.elapsed_ms();
                return Err(e);
            }
        }
    };
    let (status, headers, body) = split_cgi(&response.stdout);
    Ok(Reply::Fastcgi {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        stderr: String::from_utf8_lossy(&response.stderr).into_owned(),
        millis: conn.elapsed_ms(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answer(records: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, content) in records {
            record(&mut out, *kind, content);
        }
        out
    }

    #[test]
    fn stdout_stderr_and_end_are_read() {
        let bytes = answer(&[
            (STDOUT, b"Content-type: text/plain\r\n\r\npo"),
            (STDERR, b"warn"),
            (STDOUT, b"ng"),
            (END_REQUEST, &[0, 0, 0, 0, 0, 0, 0, 0]),
        ]);
        let r = parse_records(&bytes, true).unwrap();
        assert!(r.ended());
        assert_eq!(r.stderr, b"warn");
        let (status, headers, body) = split_cgi(&r.stdout);
        assert_eq!((status, body.as_slice()), (200, &b"pong"[..]));
        assert_eq!(headers[0].0, "content-type");
    }

    #[test]
    fn status_header_and_broken_answers() {
        let (status, _, body) = split_cgi(b"Status: 404 Not Found\nX: y\n\nFile not found.\n");
        assert_eq!((status, body.as_slice()), (404, &b"File not found.\n"[..]));
        let bytes = answer(&[(STDOUT, b"abc")]);
        assert_eq!(parse_records(&bytes, true), Err(FastcgiError::NoEnd));
        assert_eq!(
            parse_records(&bytes[..bytes.len() - 1], true),
            Err(FastcgiError::Truncated)
        );
        assert!(parse_records(&bytes[..5], false).is_ok());
        assert_eq!(
            parse_records(b"\x02\x06\0\x01\0\0\0\0", true),
            Err(FastcgiError::Version(2))
        );
    }

    proptest::proptest! {
        /// The fuzz target's property, on every `cargo test`: no panic, bounded output.
        #[test]
        fn any_bytes_parse_without_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            for complete in [false, true] {
                if let Ok(r) = parse_records(&data, complete) {
                    proptest::prop_assert!(r.stdout.len() <= MAX_BODY);
                    let _ = split_cgi(&r.stdout);
                }
            }
        }
    }

    #[test]
    fn long_params_use_four_byte_lengths() {
        let long = "x".repeat(300);
        let bytes = encode_request(&[("A".to_string(), long.clone())]);
        // BEGIN_REQUEST record (8 + 8), then PARAMS header, then 1-byte and 4-byte lengths.
        let params = &bytes[16 + 8..];
        assert_eq!(params[0], 1);
        assert_eq!(&params[1..5], &(300u32 | 0x8000_0000).to_be_bytes());
    }
}
