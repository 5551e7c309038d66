//! A minimal HTTP/1.1 client for the origin self-test: one `GET`/`HEAD` to a local listener with
//! a chosen `Host` header (and SNI over TLS), bounded by one deadline and a size cap. The
//! certificate is deliberately not verified: the self-test asks "does the origin serve this
//! name", the TLS check owns "is the certificate right".

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::exchange::{ExchangeError, Reply, Stage, MAX_BODY};
use crate::Endpoint;

/// The most header bytes accepted before the body.
const MAX_HEAD: usize = 64 * 1024;

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code of the status line.
    pub status: u16,
    /// Header names lowercased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// Where the body starts in the bytes parsed.
    pub body_at: usize,
}

/// Parses `HTTP/1.x NNN reason` and the headers, once the blank line has arrived.
pub fn parse_head(bytes: &[u8]) -> Option<Head> {
    let end = memchr::memmem::find(bytes, b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Head {
        status,
        headers,
        body_at: end + 4,
    })
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One request, on the live host.
pub fn request(
    endpoint: &Endpoint,
    host: &str,
    tls: bool,
    method: &str,
    path: &str,
    timeout: std::time::Duration,
) -> Result<Reply, ExchangeError> {
    let conn = super::net::connect(endpoint, timeout)?;
    let started = conn.started;
    let ms = move || started.elapsed().as_millis() as u64;
    let with_ms = |mut e: ExchangeError| {
        e.millis = ms();
        e
    };
    // Only printable ASCII reaches the request line and Host header.
    let clean = |s: &str| -> String { s.chars().filter(|c| c.is_ascii_graphic()).collect() };
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: origin-agent-self-test\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        clean(method),
        clean(path),
        clean(host)
    );
    let mut stream: Box<dyn ReadWrite> = if tls {
        let config = tls_config()
            .map_err(|e| with_ms(ExchangeError::new(Stage::Handshake, e.to_string())))?;
        let name = ServerName::try_from(clean(host))
            .map_err(|e| with_ms(ExchangeError::new(Stage::Handshake, e.to_string())))?;
        let client = rustls::ClientConnection::new(config, name)
            .map_err(|e| with_ms(ExchangeError::new(Stage::Handshake, e.to_string())))?;
        let mut tls = rustls::StreamOwned::new(client, conn);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| with_ms(ExchangeError::io(Stage::Handshake, &e)))?;
        }
        Box::new(tls)
    } else {
        Box::new(conn)
    };
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| with_ms(ExchangeError::io(Stage::Exchange, &e)))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut ttfb = None;
    let mut head: Option<Head> = None;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            // A TLS peer closing without close_notify after a complete answer is common.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && head.is_some() => 0,
            Err(e) => return Err(with_ms(ExchangeError::io(Stage::Exchange, &e))),
        };
        if n == 0 {
            break;
        }
        ttfb.get_or_insert_with(ms);
        raw.extend_from_slice(&buf[..n]);
        if head.is_none() {
            head = parse_head(&raw);
            if head.is_none() && raw.len() > MAX_HEAD {
                return Err(with_ms(ExchangeError::new(
                    Stage::Protocol,
                    "no end of the response head in 64 KiB",
                )));
            }
        }
        if let Some(h) = &head {
            let body_len = raw.len() - h.body_at;
            let declared = h
                .headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok());
            if body_len >= MAX_BODY
                || declared.is_some_and(|d| body_len >= d)
                || method.eq_ignore_ascii_case("HEAD")
                || h.status == 204
                || h.status == 304
            {
                break;
            }
        }
    }
    let Some(head) = head.or_else(|| parse_head(&raw)) else {
        return Err(with_ms(ExchangeError::new(
            Stage::Protocol,
            if raw.is_empty() {
                "the connection closed without an answer".to_string()
            } else {
                "the answer is not HTTP".to_string()
            },
        )));
    };
    let body = &raw[head.body_at..];
    Ok(Reply::Http {
        status: head.status,
        headers: head.headers,
        body: String::from_utf8_lossy(&body[..body.len().min(MAX_BODY)]).into_owned(),
        ttfb_ms: ttfb.unwrap_or_else(ms),
        millis: ms(),
    })
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn heads_parse_only_when_complete() {
        assert_eq!(parse_head(b"HTTP/1.1 502 Bad Gateway\r\nServer: ngi"), None);
        let h = parse_head(b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\n\r\n<html>").unwrap();
        assert_eq!(h.status, 502);
        assert_eq!(h.headers, vec![("server".to_string(), "nginx".to_string())]);
        assert_eq!(h.body_at, 43);
        assert_eq!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
    }
}
