//! The origin certificate (`tls.origin-cert`): for every nginx server that listens with `ssl`,
//! its `ssl_certificate` is read with `openssl x509` through the host seam (so snapshots replay
//! it), and checked for expiry, a start date in the future, and a name that covers the server's
//! `server_name`s. A CDN in "full (strict)" mode refuses such an origin (525/526).

use std::collections::BTreeSet;

use crate::cause::CauseId;
use crate::check::{Area, Check};
use crate::discover::Discovery;
use crate::host::{Command, Host};

/// A certificate expiring sooner than this is a warning.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// What `openssl x509 -noout -startdate -enddate -subject -ext subjectAltName` said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertInfo {
    pub not_before: Option<jiff::Timestamp>,
    pub not_after: Option<jiff::Timestamp>,
    /// The DNS names it covers: subjectAltName DNS entries, else the subject's CN.
    pub names: Vec<String>,
}

/// Parses the text `openssl x509` prints.
pub fn parse_openssl(text: &str) -> CertInfo {
    let mut info = CertInfo::default();
    let mut cn = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some(date) = line.strip_prefix("notBefore=") {
            info.not_before = parse_date(date);
        } else if let Some(date) = line.strip_prefix("notAfter=") {
            info.not_after = parse_date(date);
        } else if let Some(subject) = line.strip_prefix("subject=") {
            cn = subject.split(',').map(str::trim).find_map(|part| {
                part.strip_prefix("CN")
                    .map(|v| v.trim_start_matches([' ', '=']).trim().to_string())
            });
        } else if line.starts_with("X509v3 Subject Alternative Name") {
            if let Some(next) = lines.next() {
                for entry in next.split(',') {
                    if let Some(name) = entry.trim().strip_prefix("DNS:") {
                        info.names.push(name.to_ascii_lowercase());
                    }
                }
            }
        }
    }
    if info.names.is_empty() {
        info.names.extend(cn.map(|c| c.to_ascii_lowercase()));
    }
    info
}

/// `Nov 24 10:00:00 2027 GMT` (openssl's form; the day may be space-padded).
fn parse_date(text: &str) -> Option<jiff::Timestamp> {
    let cleaned = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cleaned = cleaned.trim_end_matches(" GMT");
    let civil = jiff::civil::DateTime::strptime("%b %d %H:%M:%S %Y", cleaned).ok()?;
    jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()
}

/// Whether a certificate name (`*.example.com` or `example.com`) covers `host`.
pub fn covers(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, domain)| !label.is_empty() && domain == rest),
        None => pattern == host,
    }
}

pub fn checks(host: &dyn Host, discovery: &Discovery) -> Vec<Check> {
    let Some(nginx) = &discovery.nginx else {
        return Vec::new();
    };
    let now = host.now();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for server in &nginx.servers {
        if !server.listens.iter().any(|l| l.ssl) {
            continue;
        }
        let label = server
            .names
            .iter()
            .find(|n| !n.is_empty() && *n != "_")
            .cloned()
            .unwrap_or_else(|| "default".into());
        let id = format!("tls.{label}");
        if !seen.insert(id.clone()) {
            continue;
        }
        let title = format!("origin certificate of {label}");
        let Some(cert) = &server.ssl_certificate else {
            out.push(Check::skip(
                id,
                Area::Services,
                title,
                format!(
                    "the server at {} listens with ssl but has no ssl_certificate",
                    server.origin
                ),
            ));
            continue;
        };
        let path = cert.value.display().to_string();
        let command = Command::new(
            "openssl",
            &[
                "x509",
                "-in",
                &path,
                "-noout",
                "-startdate",
                "-enddate",
                "-subject",
                "-ext",
                "subjectAltName",
            ],
        );
        let text = match host.run(&command) {
            Ok(output) if output.success() => output.stdout_text(),
            Ok(output) => {
                out.push(Check::skip(
                    id,
                    Area::Services,
                    title,
                    format!(
                        "`openssl x509` could not read {path} ({}): {}",
                        cert.origin,
                        output.stderr.trim()
                    ),
                ));
                continue;
            }
            Err(err) => {
                out.push(Check::skip(
                    id,
                    Area::Services,
                    title,
                    format!("{path}: {err}"),
                ));
                continue;
            }
        };
        out.push(judge(
            id,
            title,
            &parse_openssl(&text),
            &server.host_names(),
            now,
            &path,
            &cert.origin.to_string(),
        ));
    }
    out
}

fn judge(
    id: String,
    title: String,
    info: &CertInfo,
    names: &[String],
    now: jiff::Timestamp,
    path: &str,
    origin: &str,
) -> Check {
    let renew = format!("renew or replace {path} (ssl_certificate at {origin}) and reload nginx");
    let date = |t: jiff::Timestamp| t.strftime("%Y-%m-%d %H:%M UTC").to_string();
    if let Some(after) = info.not_after {
        if after <= now {
            return Check::fail(id, Area::Services, title)
                .detail(format!("{path} expired on {}", date(after)))
                .cause(CauseId::TlsOriginCert)
                .fix(renew);
        }
    }
    if let Some(before) = info.not_before {
        if before > now {
            return Check::fail(id, Area::Services, title)
                .detail(format!("{path} is not valid before {}", date(before)))
                .cause(CauseId::TlsOriginCert)
                .fix(format!("check the host's clock, or {renew}"));
        }
    }
    let uncovered: Vec<&String> = names
        .iter()
        .filter(|n| !info.names.iter().any(|p| covers(p, n)))
        .collect();
    if !uncovered.is_empty() && !info.names.is_empty() {
        return Check::fail(id, Area::Services, title)
            .detail(format!(
                "{path} covers {} but not {}",
                info.names.join(", "),
                uncovered
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .cause(CauseId::TlsOriginCert)
            .fix(format!(
                "issue a certificate that names every server_name, then {renew}"
            ));
    }
    let days_left = info
        .not_after
        .map(|a| (a.as_second() - now.as_second()) / 86_400);
    let detail = format!(
        "{path}: valid until {}, covers {}",
        info.not_after.map_or("?".to_string(), date),
        if info.names.is_empty() {
            "?".to_string()
        } else {
            info.names.join(", ")
        }
    );
    match days_left {
        Some(days) if days < EXPIRY_WARNING_DAYS => Check::warn(id, Area::Services, title)
            .detail(format!("{detail}; expires in {days} day(s)"))
            .cause(CauseId::TlsOriginCert)
            .fix(renew),
        _ => Check::ok(id, Area::Services, title).detail(detail),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::discover::{Address, Listen, Nginx, Origin, Server, Sourced};
    use crate::host::live::LiveHost;
    use crate::host::Host;

    #[test]
    fn openssl_output_parses() {
        let text = "notBefore=Nov 24 10:00:00 2026 GMT\nnotAfter=Feb  1 09:05:07 2027 GMT\nsubject=CN = example.com\nX509v3 Subject Alternative Name: \n    DNS:example.com, DNS:*.example.com, IP Address:127.0.0.1\n";
        let info = parse_openssl(text);
        assert_eq!(info.names, vec!["example.com", "*.example.com"]);
        assert_eq!(info.not_after.unwrap().to_string(), "2027-02-01T09:05:07Z");
        assert!(covers("*.example.com", "www.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        let cn_only = parse_openssl("subject=C = DE, CN = origin.test\n");
        assert_eq!(cn_only.names, vec!["origin.test"]);
    }

    /// A real certificate made by the real openssl, read back through the live host.
    fn make_cert(dir: &std::path::Path, name: &str, days: &str) -> std::path::PathBuf {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        let out = LiveHost.run(&Command::new(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                days,
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                &format!("subjectAltName=DNS:{name}"),
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
        ));
        assert!(out.unwrap().success());
        cert
    }

    fn discovery(names: &[&str], cert: &std::path::Path) -> Discovery {
        Discovery {
            nginx: Some(Nginx {
                servers: vec![Server {
                    names: names.iter().map(|n| n.to_string()).collect(),
                    listens: vec![Listen {
                        address: Address::Tcp("*:443".into()),
                        port: Some(443),
                        ssl: true,
                        default_server: false,
                        backlog: None,
                    }],
                    origin: Origin::Default,
                    ssl_certificate: Some(Sourced::default_value(cert.to_path_buf())),
                    roots: Vec::new(),
                }],
                ..Nginx::default()
            }),
            ..Discovery::default()
        }
    }

    #[test]
    fn real_certificates_are_judged_by_date_and_name() {
        if LiveHost
            .run(&Command::new("openssl", &["version"]))
            .is_err()
        {
            eprintln!("skip: openssl is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let good = make_cert(dir.path(), "origin.test", "365");
        let checks = checks(&LiveHost, &discovery(&["origin.test"], &good));
        assert_eq!(
            checks[0].status,
            crate::check::Status::Ok,
            "{:?}",
            checks[0]
        );

        let wrong = checks_for(&LiveHost, &["www.shop.test"], &good);
        assert_eq!(wrong.status, crate::check::Status::Fail);
        assert_eq!(wrong.cause, Some(CauseId::TlsOriginCert));
        assert!(wrong.detail.contains("www.shop.test"), "{}", wrong.detail);

        let soon = make_cert(dir.path(), "soon.test", "3");
        let expiring = checks_for(&LiveHost, &["soon.test"], &soon);
        assert_eq!(
            expiring.status,
            crate::check::Status::Warn,
            "{:?}",
            expiring
        );

        let missing = checks_for(&LiveHost, &["gone.test"], &dir.path().join("gone.pem"));
        assert_eq!(missing.status, crate::check::Status::Skip);
    }

    fn checks_for(host: &dyn Host, names: &[&str], cert: &std::path::Path) -> Check {
        checks(host, &discovery(names, cert)).remove(0)
    }

    #[test]
    fn an_expired_certificate_fails_as_tls_origin_cert() {
        let info = CertInfo {
            not_before: Some(jiff::Timestamp::from_second(1_700_000_000).unwrap()),
            not_after: Some(jiff::Timestamp::from_second(1_760_000_000).unwrap()),
            names: vec!["origin.test".into()],
        };
        let now = jiff::Timestamp::from_second(1_790_000_000).unwrap();
        let check = judge(
            "tls.x".into(),
            "t".into(),
            &info,
            &["origin.test".into()],
            now,
            "/c.pem",
            "nginx.conf:3",
        );
        assert_eq!(check.status, crate::check::Status::Fail);
        assert!(
            check.detail.contains("expired on 2025-10-09"),
            "{}",
            check.detail
        );
    }
}
