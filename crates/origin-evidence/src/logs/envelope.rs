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
    /// `nginx: [emerg] …`: nginx's own stderr at start-up, as `systemctl status` or `nginx -t`
    /// show it.
    NginxStderr,
}

const KINDS: [Kind; 5] = [
    Kind::Compose,
    Kind::Cri,
    Kind::Kubectl,
    Kind::Syslog,
    Kind::NginxStderr,
];

fn pattern(kind: Kind) -> Option<&'static Regex> {
    use std::sync::OnceLock;
    // One lazily built regex per kind: a file pays only for the kinds its lines may carry (see
    // `may_have`), and plain server logs for none. ASCII classes: the prefixes are ASCII, and a
    // Unicode-aware build costs milliseconds of start-up.
    static RES: [OnceLock<Option<Regex>>; 5] = [const { OnceLock::new() }; 5];
    let k = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    RES[k]
        .get_or_init(|| {
            let color = r"(?:\x1b\[[0-9;]*m)*";
            let stamp = r"(?:[A-Z][a-z]{2} [ 0-3]\d \d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)";
            let p = match kind {
                Kind::Compose => {
                    format!(r"^{color}[A-Za-z0-9][A-Za-z0-9_.-]*[ \t]*{color}\|{color} ?")
                }
                Kind::Cri => r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d) (?:stdout|stderr) [FP] ".to_string(),
                Kind::Kubectl => r"^\[pod/[^\]\s]{1,253}\] ".to_string(),
                Kind::Syslog => {
                    format!(r"^{stamp} [^ ]{{1,255}} [^ \[:]{{1,64}}(?:\[\d{{1,10}}\])?: ")
                }
                Kind::NginxStderr => r"^nginx: ".to_string(),
            };
            regex::bytes::RegexBuilder::new(&p)
                .unicode(false)
                .build()
                .ok()
        })
        .as_ref()
}

/// A necessary condition for `kind`'s prefix, checked before its regex runs (or is built).
fn may_have(kind: Kind, line: &[u8]) -> bool {
    match kind {
        Kind::Compose => memchr::memchr(b'|', line).is_some(),
        Kind::Cri => {
            line.len() > 20 && line[0].is_ascii_digit() && line[4] == b'-' && line[10] == b'T'
        }
        Kind::Kubectl => line.starts_with(b"[pod/"),
        Kind::Syslog => match line.first() {
            Some(b'A'..=b'Z') => line.get(3) == Some(&b' '),
            Some(b'0'..=b'9') => line.get(4) == Some(&b'-'),
            _ => false,
        },
        Kind::NginxStderr => line.starts_with(b"nginx: "),
    }
}

/// How many bytes of `line` the envelope's prefix takes (0 when the line has none).
fn prefix_len(kind: Kind, line: &[u8]) -> usize {
    if !may_have(kind, line) {
        return 0;
    }
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
        let mut wrapped = 0;
        let mut inner = 0;
        for l in lines {
            let n = prefix_len(kind, &l[..l.len().min(HEAD)]);
            if n == 0 {
                continue;
            }
            wrapped += 1;
            if super::detect_source(&l[n..])
                .is_some_and(|s| kind != Kind::Syslog || s != LogSource::Kernel)
            {
                inner += 1;
            }
        }
        // A container's prefix is its own proof: most lines carry it and some line inside is a
        // server's. A syslog prefix is any program's: most lines must be a server's inside.
        let enough = match kind {
            Kind::Syslog => 2 * inner >= lines.len(),
            _ => 2 * wrapped >= lines.len() && inner > 0,
        };
        if enough && best.is_none_or(|(n, _)| inner > n) {
            best = Some((inner, kind));
        }
    }
    best.map(|(_, k)| k)
}

/// Reads the start of `reader` (readers may hand it over in small pieces) and puts it back.
fn sample_of<'a>(mut reader: Box<dyn Read + Send + 'a>) -> (Vec<u8>, impl Read + Send + 'a) {
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
    (sample.clone(), std::io::Cursor::new(sample).chain(reader))
}

/// The sources of the sample's lines (envelope taken off) when there are several: a container's
/// output interleaves nginx's access lines (stdout) with its error lines (stderr), a supervisor
/// runs nginx and PHP-FPM in one container. Empty for a file of one source.
fn mixed_sources(sample: &[u8], kind: Option<Kind>) -> Vec<LogSource> {
    let mut counts: std::collections::BTreeMap<LogSource, usize> = Default::default();
    for l in sample
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(SAMPLE_LINES)
    {
        let n = kind.map_or(0, |k| prefix_len(k, &l[..l.len().min(HEAD)]));
        if let Some(s) = super::detect_source(&l[n..]) {
            *counts.entry(s).or_default() += 1;
        }
    }
    if counts.len() < 2 {
        return Vec::new();
    }
    counts.into_keys().collect()
}

/// The sources to read `sample`'s file as: several when its lines mix sources (each read keeps
/// its own lines, see [`unwrap`]), else none (detect the file's one source as usual).
pub fn split_sources(sample: &[u8]) -> Vec<LogSource> {
    mixed_sources(sample, detect(sample))
}

/// `reader` with its envelope taken off every line, or as it is when it has none. Reading a file
/// whose lines mix sources as `source`, lines that are plainly another source's are blanked
/// (line numbers stay), so each source's reader sees its own.
pub fn unwrap<'a>(
    reader: Box<dyn Read + Send + 'a>,
    source: Option<LogSource>,
) -> Box<dyn Read + Send + 'a> {
    let (sample, joined) = sample_of(reader);
    let kind = detect(&sample);
    let keep = source.filter(|_| !mixed_sources(&sample, kind).is_empty());
    if kind.is_none() && keep.is_none() {
        return Box::new(joined);
    }
    Box::new(Unwrapped {
        inner: BufReader::with_capacity(64 * 1024, joined),
        kind,
        keep,
        out: Vec::new(),
        pos: 0,
        mid_line: false,
    })
}

/// [`split_sources`] of a file's start (none for a file that cannot be read or is compressed).
pub fn split_file(host: &dyn origin_host::Host, path: &std::path::Path) -> Vec<LogSource> {
    let Ok(reader) = host.open(path) else {
        return Vec::new();
    };
    let (sample, _) = sample_of(reader);
    if sample.starts_with(&[0x1f, 0x8b]) {
        return Vec::new();
    }
    split_sources(&sample)
}

struct Unwrapped<R> {
    inner: R,
    kind: Option<Kind>,
    /// The source being read from a mixed file: other sources' lines are blanked.
    keep: Option<LogSource>,
    out: Vec<u8>,
    pos: usize,
    /// The line's start was handled; the rest passes through up to its newline.
    mid_line: bool,
}

impl<R: BufRead> Unwrapped<R> {
    /// Drops the rest of the current line, its newline included.
    fn skip_rest(&mut self) -> std::io::Result<()> {
        loop {
            let data = self.inner.fill_buf()?;
            if data.is_empty() {
                return Ok(());
            }
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    self.inner.consume(i + 1);
                    return Ok(());
                }
                None => {
                    let n = data.len();
                    self.inner.consume(n);
                }
            }
        }
    }
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
            let cut = self.kind.map_or(0, |k| prefix_len(k, &head));
            let line = &head[cut..];
            let other = self.keep.is_some_and(|keep| {
                super::detect_source(line).is_some_and(|s| s != keep)
                    && !super::formats::looks_like(keep, line)
            });
            if other {
                // Another source's line: keep only its newline (skip its tail if it is long).
                if self.mid_line {
                    self.skip_rest()?;
                    self.mid_line = false;
                }
                self.out.push(b'\n');
            } else {
                self.out.extend_from_slice(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NGINX: &str = "2024/03/01 10:00:01 [error] 12#12: *3 connect() to unix:/run/php/php-fpm.sock failed (11: Resource temporarily unavailable) while connecting to upstream, client: 1.2.3.4, server: x, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php-fpm.sock:\", host: \"x\"";

    fn unwrapped(text: &str) -> String {
        unwrapped_as(text, None)
    }

    fn unwrapped_as(text: &str, source: Option<LogSource>) -> String {
        let mut out = String::new();
        unwrap(
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            source,
        )
        .read_to_string(&mut out)
        .unwrap();
        out
    }

    #[test]
    fn the_cheap_precheck_never_hides_a_prefix_the_regex_finds() {
        // `may_have` runs before each kind's regex: on every line where the regex finds a
        // prefix, the precheck must say yes (else a wrapped file would be read as plain).
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for prefix in [
            "web_1  | ",
            "nginx-1  | ",
            "\x1b[36mweb_1  |\x1b[0m ",
            "a|",
            "2024-03-01T10:00:01.123456789Z stderr F ",
            "2024-03-01T10:00:01Z stdout P ",
            "[pod/web-0/nginx] ",
            "Mar  1 10:00:01 web1 nginx[1234]: ",
            "2024-03-01T10:00:01+0000 web1 nginx[1234]: ",
            "Mar 01 10:00:01.123456 web1 nginx: ",
            "nginx: ",
        ] {
            lines.push(format!("{prefix}{NGINX}").into_bytes());
            lines.push(prefix.as_bytes().to_vec());
        }
        lines.push(NGINX.as_bytes().to_vec());
        lines
            .push(b"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] \"GET /a|b HTTP/1.1\" 200 5".to_vec());
        lines.push(b"\xff\xfe|\x00 binary | line".to_vec());
        lines.push(Vec::new());
        // Every short prefix of every line, too (a cut line must not slip past the check).
        let cut: Vec<Vec<u8>> = lines
            .iter()
            .flat_map(|l| (0..l.len().min(48)).map(move |n| l[..n].to_vec()))
            .collect();
        for line in lines.iter().chain(&cut) {
            for kind in KINDS {
                let regex = pattern(kind).unwrap().find(line).map_or(0, |m| m.end());
                assert_eq!(prefix_len(kind, line), regex, "{kind:?} {line:?}");
            }
        }
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

    #[test]
    fn a_file_mixing_sources_is_read_once_per_source() {
        let access = "172.23.0.2 - - [11/Feb/2022:20:00:09 +0000] \"POST /api HTTP/1.1\" 502 150 \"-\" \"ok\"";
        let text = format!("server_1  | {access}\nserver_1  | {NGINX}\nserver_1  | {access}\n");
        assert_eq!(
            split_sources(text.as_bytes()),
            vec![LogSource::NginxAccess, LogSource::NginxError]
        );
        assert_eq!(
            unwrapped_as(&text, Some(LogSource::NginxError)),
            format!("\n{NGINX}\n\n")
        );
        assert_eq!(
            unwrapped_as(&text, Some(LogSource::NginxAccess)),
            format!("{access}\n\n{access}\n")
        );
        assert!(split_sources(format!("{NGINX}\n{NGINX}\n").as_bytes()).is_empty());
    }
}
