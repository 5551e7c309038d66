//! Envelopes: log lines as container runtimes and log collectors hand them over, each server line
//! behind a prefix of their own. `docker compose logs` (`web_1  | `, with or without colour),
//! CRI files under /var/log/containers (`2024-03-01T10:00:01.123Z stderr F `), `kubectl logs
//! --prefix` (`[pod/web-0/nginx] `), and syslog or `journalctl` exports (short, short-iso,
//! short-precise: `Mar  1 10:00:01 host nginx[12]: `) of a server that logs its own format inside.
//!
//! A file whose first lines mostly carry one envelope around a line of a known format is read
//! through [`unwrap`], which strips the prefix from every line as it streams (one line in, one line
//! out, so line numbers stay those of the file). A syslog file whose lines are the kernel's own
//! is not an envelope: it is the kernel log.

use std::io::{BufRead, BufReader, Read};

use regex::bytes::Regex;

use crate::event::LogSource;

/// The most of a line's start looked at for its prefix.
const HEAD: usize = 512;
/// The most of a file's start read to tell its envelope.
const SAMPLE_BYTES: usize = 16 * 1024;
/// Lines of the sample looked at.
const SAMPLE_LINES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Compose,
    Cri,
    Kubectl,
    Syslog,
}

const KINDS: [Kind; 4] = [Kind::Compose, Kind::Cri, Kind::Kubectl, Kind::Syslog];

fn pattern(kind: Kind) -> Option<&'static Regex> {
    use std::sync::OnceLock;
    static RES: OnceLock<[Option<Regex>; 4]> = OnceLock::new();
    let res = RES.get_or_init(|| {
        let color = r"(?:\x1b\[[0-9;]*m)*";
        let stamp = r"(?:[A-Z][a-z]{2} [ 0-3]\d \d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)";
        let build = |p: String| Regex::new(&p).ok();
        [
            build(format!(
                r"^{color}[A-Za-z0-9][A-Za-z0-9_.-]*[ \t]*{color}\|{color} ?"
            )),
            build(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d) (?:stdout|stderr) [FP] ".to_string()),
            build(r"^\[pod/[^\]\s]{1,253}\] ".to_string()),
            build(format!(r"^{stamp} [^ ]{{1,255}} [^ \[:]{{1,64}}(?:\[\d{{1,10}}\])?: ")),
        ]
    });
    res[KINDS.iter().position(|k| *k == kind).unwrap_or(0)].as_ref()
}

/// How many bytes of `line` the envelope's prefix takes (0 when the line has none).
fn prefix_len(kind: Kind, line: &[u8]) -> usize {
    pattern(kind)
        .and_then(|re| re.find(line))
        .map_or(0, |m| m.end())
}

/// The envelope most of `sample`'s lines carry around a known server format, if any.
fn detect(sample: &[u8]) -> Option<Kind> {
    let lines: Vec<&[u8]> = sample
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .take(SAMPLE_LINES)
        .collect();
    // The last line of the sample may be cut: judge on the whole ones when there are several.
    let lines = if lines.len() > 2 {
        &lines[..lines.len() - 1]
    } else {
        &lines[..]
    };
    if lines.is_empty() {
        return None;
    }
    let mut best: Option<(usize, Kind)> = None;
    for kind in KINDS {
        let inner = lines
            .iter()
            .filter(|l| {
                let n = prefix_len(kind, &l[..l.len().min(HEAD)]);
                n > 0
                    && super::detect_source(&l[n..])
                        .is_some_and(|s| kind != Kind::Syslog || s != LogSource::Kernel)
            })
            .count();
        if 2 * inner >= lines.len() && best.is_none_or(|(n, _)| inner > n) {
            best = Some((inner, kind));
        }
    }
    best.map(|(_, k)| k)
}

/// `reader` with its envelope taken off every line, or as it is when it has none.
pub fn unwrap<'a>(mut reader: Box<dyn Read + Send + 'a>) -> Box<dyn Read + Send + 'a> {
    // A sample of the start (readers may hand it over in small pieces), then put back in front.
    let mut sample = vec![0u8; SAMPLE_BYTES];
    let mut got = 0;
    while got < SAMPLE_BYTES {
        match reader.read(&mut sample[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sample.truncate(got);
    let kind = detect(&sample);
    let joined = std::io::Cursor::new(sample).chain(reader);
    match kind {
        None => Box::new(joined),
        Some(kind) => Box::new(Unwrapped {
            inner: BufReader::with_capacity(64 * 1024, joined),
            kind,
            out: Vec::new(),
            pos: 0,
            mid_line: false,
        }),
    }
}

struct Unwrapped<R> {
    inner: R,
    kind: Kind,
    out: Vec<u8>,
    pos: usize,
    /// The line's start was handled; the rest passes through up to its newline.
    mid_line: bool,
}

impl<R: BufRead> Read for Unwrapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.pos);
                buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.out.clear();
            self.pos = 0;
            if self.mid_line {
                let data = self.inner.fill_buf()?;
                if data.is_empty() {
                    return Ok(0);
                }
                let take = match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        self.mid_line = false;
                        i + 1
                    }
                    None => data.len(),
                };
                self.out.extend_from_slice(&data[..take]);
                self.inner.consume(take);
                continue;
            }
            // A line's start: gather its first HEAD bytes (or the whole line), strip the prefix.
            let mut head: Vec<u8> = Vec::with_capacity(HEAD);
            while head.len() < HEAD && !head.ends_with(b"\n") {
                let data = self.inner.fill_buf()?;
                if data.is_empty() {
                    break;
                }
                let room = HEAD - head.len();
                let take = match memchr::memchr(b'\n', &data[..data.len().min(room)]) {
                    Some(i) => i + 1,
                    None => data.len().min(room),
                };
                head.extend_from_slice(&data[..take]);
                self.inner.consume(take);
            }
            if head.is_empty() {
                return Ok(0);
            }
            self.mid_line = !head.ends_with(b"\n");
            let cut = prefix_len(self.kind, &head);
            self.out.extend_from_slice(&head[cut..]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NGINX: &str = "2024/03/01 10:00:01 [error] 12#12: *3 connect() to unix:/run/php/php-fpm.sock failed (11: Resource temporarily unavailable) while connecting to upstream, client: 1.2.3.4, server: x, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php-fpm.sock:\", host: \"x\"";

    fn unwrapped(text: &str) -> String {
        let mut out = String::new();
        unwrap(Box::new(std::io::Cursor::new(text.as_bytes().to_vec())))
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn container_and_collector_prefixes_come_off_every_line() {
        for prefix in [
            "web_1  | ",
            "nginx-1  | ",
            "\x1b[36mweb_1  |\x1b[0m ",
            "2024-03-01T10:00:01.123456789Z stderr F ",
            "[pod/web-0/nginx] ",
            "Mar  1 10:00:01 web1 nginx[1234]: ",
            "2024-03-01T10:00:01+0000 web1 nginx[1234]: ",
            "Mar 01 10:00:01.123456 web1 nginx: ",
        ] {
            let text = format!("{prefix}{NGINX}\n{prefix}{NGINX}\n{prefix}{NGINX}\n");
            assert_eq!(
                unwrapped(&text),
                format!("{NGINX}\n{NGINX}\n{NGINX}\n"),
                "{prefix:?}"
            );
        }
    }

    #[test]
    fn plain_logs_and_the_kernel_log_pass_unchanged() {
        let plain = format!("{NGINX}\n{NGINX}\n");
        assert_eq!(unwrapped(&plain), plain);
        let kern = "Mar  1 10:00:01 web1 kernel: [ 12.345] Out of memory: Killed process 12 (php-fpm8.2)\nMar  1 10:00:02 web1 kernel: [ 12.346] oom_reaper: reaped process 12\n";
        assert_eq!(unwrapped(kern), kern);
    }

    #[test]
    fn long_lines_keep_their_tail_and_memory_stays_bounded() {
        let long = format!("web_1  | {NGINX}{}\n", "x".repeat(200_000));
        let text = format!("web_1  | {NGINX}\n{long}web_1  | {NGINX}\n");
        let out = unwrapped(&text);
        assert_eq!(out.lines().count(), 3);
        assert!(out.lines().nth(1).unwrap().ends_with("xxxx"));
        assert!(out.lines().all(|l| l.starts_with("2024/03/01")));
    }
}
