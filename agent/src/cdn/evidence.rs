//! CDN evidence that does not come from the traffic: a Cloudflare Origin CA certificate on the
//! origin (only Cloudflare's edge trusts it, so the origin is meant to sit behind Cloudflare).
//! Detection from access-log clients alone is circular: a firewall that blocks a CDN removes
//! its addresses from the log.

use std::path::{Path, PathBuf};

use crate::host::{Host, HostExt};

/// The most of a certificate file read.
const CERT_CAP: usize = 256 * 1024;

/// The first of the web server's certificates (`certificates`: the files it serves) issued by
/// Cloudflare's Origin CA, if any.
pub fn cloudflare_origin_cert<'a>(
    host: &dyn Host,
    certificates: impl IntoIterator<Item = &'a Path>,
) -> Option<PathBuf> {
    let mut paths: Vec<&Path> = certificates.into_iter().collect();
    paths.sort();
    paths.dedup();
    paths.into_iter().take(32).find_map(|p| {
        let text = host.read_text(p).ok()?;
        let text = &text[..floor_boundary(&text, CERT_CAP)];
        is_cloudflare_origin(text).then(|| p.to_path_buf())
    })
}

fn floor_boundary(s: &str, cap: usize) -> usize {
    let mut i = s.len().min(cap);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Whether the first PEM certificate of `pem` names Cloudflare's Origin CA (its issuer's name is
/// plain text in the DER).
pub fn is_cloudflare_origin(pem: &str) -> bool {
    let Some(start) = pem.find("-----BEGIN CERTIFICATE-----") else {
        return false;
    };
    let body = &pem[start + 27..];
    let body = body.split("-----END").next().unwrap_or("");
    let der = base64_decode(body);
    ["CloudFlare Origin", "Cloudflare Origin"]
        .iter()
        .any(|n| memchr::memmem::find(&der, n.as_bytes()).is_some())
}

/// Standard base64, whitespace ignored, stopping at the first byte that is neither.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => break,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(der: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in der.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
            for _ in chunk.len()..3 {
                s.push('=');
            }
        }
        format!("-----BEGIN CERTIFICATE-----\n{s}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn an_origin_ca_issuer_is_found_and_others_are_not() {
        let der = b"\x30\x82\x01\x00 ... O=CloudFlare, Inc. OU=CloudFlare Origin SSL Certificate Authority ...";
        assert!(is_cloudflare_origin(&pem(der)));
        assert!(!is_cloudflare_origin(&pem(b"\x30\x82 Let's Encrypt R3")));
        assert!(!is_cloudflare_origin("no pem here"));
    }
}
