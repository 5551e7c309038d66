//! nginx access log: a `log_format` string compiled into a parser (literals and variables), and
//! the allocation-free fast path that counts every line (status, minute, client) and builds a
//! [`Response`] only for 5xx and 499 lines.
//!
//! Every field of an access line is written or influenced by the visitor: the access log never
//! yields events, only responses.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use jiff::Timestamp;

use super::time::{digits, nginx_time_local};
use super::Window;
use crate::event::{MinuteCount, Response, ResponseStats};
use crate::hash::FastBuild;

/// nginx's built-in `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

/// The variables the parser reads; everything else is skipped over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    RemoteAddr,
    TimeLocal,
    TimeIso,
    Msec,
    Request,
    Status,
    BodyBytes,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamResponseTime,
    RequestTime,
    Forwarded,
    Other,
}

fn var_kind(name: &str) -> Var {
    match name {
        "remote_addr" => Var::RemoteAddr,
        "time_local" => Var::TimeLocal,
        "time_iso8601" => Var::TimeIso,
        "msec" => Var::Msec,
        "request" => Var::Request,
        "status" => Var::Status,
        "body_bytes_sent" | "bytes_sent" => Var::BodyBytes,
        "upstream_addr" => Var::UpstreamAddr,
        "upstream_status" => Var::UpstreamStatus,
        "upstream_response_time" => Var::UpstreamResponseTime,
        "request_time" => Var::RequestTime,
        "http_cf_connecting_ip"
        | "http_x_forwarded_for"
        | "http_x_real_ip"
        | "http_true_client_ip"
        | "proxy_add_x_forwarded_for" => Var::Forwarded,
        _ => Var::Other,
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Lit(Lit),
    Var(Var),
}

/// A literal of a format, with its first eight bytes as a word and mask: most literals (`" "`,
/// `" - "`, `] "`) are compared to a line with one load and one masked compare.
#[derive(Debug, Clone)]
struct Lit {
    bytes: Vec<u8>,
    word: u64,
    mask: u64,
}

impl Lit {
    fn new(bytes: Vec<u8>) -> Lit {
        let n = bytes.len().min(8);
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(&bytes[..n]);
        let mask = if n == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * n)) - 1
        };
        Lit {
            word: u64::from_le_bytes(w),
            mask,
            bytes,
        }
    }

    /// Whether `hay` starts with the literal.
    #[inline(always)]
    fn starts(&self, hay: &[u8]) -> bool {
        if self.bytes.len() <= 8 {
            if let Some(head) = hay.get(..8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(head);
                return (u64::from_le_bytes(w) ^ self.word) & self.mask == 0;
            }
        }
        starts_with_short(hay, &self.bytes)
    }
}

/// Why a `log_format` string cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A format that logs no `$status` cannot tell a 5xx.
    #[error("log_format has no $status variable")]
    NoStatus,
    /// Two variables with no literal text between them cannot be split.
    #[error("log_format variables ${0} and the one before it are not separated by text")]
    Adjacent(String),
    /// An empty format.
    #[error("log_format is empty")]
    Empty,
}

/// A compiled `log_format`.
#[derive(Debug, Clone)]
pub struct AccessFormat {
    segs: Vec<Seg>,
    /// The format is `combined` (possibly followed by more): look for `key=value` extras.
    combined_prefix: bool,
    name: String,
    /// Apache's `%t` stamps the request's start (`$apache_time_start`), not its end.
    start_stamp: bool,
    /// Apache's `%D`: the duration in microseconds (`$apache_request_us`).
    request_us: bool,
    /// How many of `segs` the counting path walks: up to the last of the client, the time and
    /// the status (the rest of a line — body, referer, user agent, extras — is read for the
    /// 5xx lines alone).
    count_segs: usize,
    /// When the format starts like `combined` up to the status and the space after it, its
    /// literals there (` - `, ` [`, `] "`, `" `, ` `): the counting path reads those fields in
    /// straight-line code (see [`AccessFormat::counted`]).
    combined_head: Option<[Lit; 5]>,
}

/// The fields a line is counted by, as byte ranges: what [`AccessFormat::counted`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted {
    pub remote_addr: Option<(usize, usize)>,
    pub time: Option<(usize, usize, Var)>,
    pub status: Option<(usize, usize)>,
}

impl From<&Slots> for Counted {
    fn from(s: &Slots) -> Counted {
        Counted {
            remote_addr: s.remote_addr,
            time: s.time,
            status: s.status,
        }
    }
}

/// The byte ranges of the fields the parser reads, for one line.
#[derive(Debug, Default, Clone)]
pub(crate) struct Slots {
    pub remote_addr: Option<(usize, usize)>,
    pub time: Option<(usize, usize, Var)>,
    pub request: Option<(usize, usize)>,
    pub status: Option<(usize, usize)>,
    pub body: Option<(usize, usize)>,
    pub upstream_addr: Option<(usize, usize)>,
    pub upstream_status: Option<(usize, usize)>,
    pub upstream_time: Option<(usize, usize)>,
    pub request_time: Option<(usize, usize)>,
    pub forwarded: Option<(usize, usize)>,
    pub end: usize,
    /// Every segment of the format was read (not only the counted ones): `end` is where the
    /// format ends and `key=value` extras may follow.
    pub complete: bool,
    pub start_stamp: bool,
    pub request_us: bool,
}

impl AccessFormat {
    /// Compiles a `log_format` string (the concatenated quoted parts, as nginx -T shows them).
    pub fn compile(format: &str) -> Result<AccessFormat, FormatError> {
        let b = format.as_bytes();
        let (mut start_stamp, mut request_us) = (false, false);
        let mut segs: Vec<Seg> = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' {
                let (name, next) = if b.get(i + 1) == Some(&b'{') {
                    let close = b[i..].iter().position(|&c| c == b'}').map(|p| i + p);
                    match close {
                        Some(c) => (&format[i + 2..c], c + 1),
                        None => ("", i + 1),
                    }
                } else {
                    let n = b[i + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                        .count();
                    (&format[i + 1..i + 1 + n], i + 1 + n)
                };
                if name.is_empty() {
                    lit.push(b'$');
                    i += 1;
                    continue;
                }
                if !lit.is_empty() {
                    segs.push(Seg::Lit(Lit::new(std::mem::take(&mut lit))));
                } else if matches!(segs.last(), Some(Seg::Var(_))) {
                    return Err(FormatError::Adjacent(name.to_string()));
                }
                let kind = match name {
                    "apache_time_start" => {
                        start_stamp = true;
                        Var::TimeLocal
                    }
                    "apache_request_us" => {
                        request_us = true;
                        Var::RequestTime
                    }
                    _ => var_kind(name),
                };
                segs.push(Seg::Var(kind));
                i = next;
            } else {
                lit.push(b[i]);
                i += 1;
            }
        }
        if !lit.is_empty() {
            segs.push(Seg::Lit(Lit::new(lit)));
        }
        if segs.is_empty() {
            return Err(FormatError::Empty);
        }
        if !segs.iter().any(|s| matches!(s, Seg::Var(Var::Status))) {
            return Err(FormatError::NoStatus);
        }
        let combined_prefix = format.trim() == COMBINED;
        let count_segs = segs
            .iter()
            .rposition(|s| {
                matches!(
                    s,
                    Seg::Var(
                        Var::RemoteAddr | Var::TimeLocal | Var::TimeIso | Var::Msec | Var::Status
                    )
                )
            })
            .map_or(segs.len(), |k| k + 1);
        let combined_head = starts_like_combined(&segs);
        Ok(AccessFormat {
            segs,
            count_segs,
            combined_head,
            combined_prefix,
            name: if combined_prefix {
                "combined".into()
            } else {
                "custom".into()
            },
            start_stamp,
            request_us,
        })
    }

    /// The built-in `combined` format (also used when the format is unknown: extras after it
    /// written as `key="value"` are picked up by name).
    pub fn combined() -> AccessFormat {
        // COMBINED always compiles.
        AccessFormat::compile(COMBINED).unwrap_or(AccessFormat {
            segs: Vec::new(),
            count_segs: 0,
            combined_head: None,
            combined_prefix: true,
            name: "combined".into(),
            start_stamp: false,
            request_us: false,
        })
    }

    /// The format's name (`combined`, or the `log_format` name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Infers the format of an access log whose lines are `combined` with extra fields in
    /// front (`$host $remote_addr - $remote_user [$time_local] "$request" …`, a common
    /// virtual-host format), from a sample line. `None` when the line is not of that shape.
    pub fn infer(line: &[u8]) -> Option<AccessFormat> {
        let bracket = memchr::memmem::find(line, b" - ")?;
        let lead = &line[..bracket];
        let extra = lead.iter().filter(|&&b| b == b' ').count();
        if extra == 0 || extra > 4 {
            return None;
        }
        let mut format = String::new();
        for i in 0..extra {
            format.push_str(&format!("$lead{i} "));
        }
        format.push_str(COMBINED);
        let mut f = AccessFormat::compile(&format).ok()?;
        f.combined_prefix = true;
        f.name = format!("combined with {extra} leading field(s)");
        let s = f.slots(line)?;
        let time_ok = s
            .time
            .is_some_and(|(a, b, _)| nginx_time_local(&line[a..b]).is_some());
        (time_ok && status_of(line, s.status).is_some()).then_some(f)
    }

    /// Locates the fields of one line (without its newline). `None` when the line does not
    /// follow the format.
    #[inline]
    pub(crate) fn slots(&self, line: &[u8]) -> Option<Slots> {
        self.slots_upto(line, self.segs.len())
    }

    /// The fields a line is counted by (client, time, status), read no further than the last
    /// of them: `None` when the line does not follow the format up to there. A line whose tail
    /// (referer, user agent) is broken — cut at the length cap, an unclosed quote — is still a
    /// response with a status.
    #[inline]
    pub(crate) fn count_slots(&self, line: &[u8]) -> Option<Slots> {
        self.slots_upto(line, self.count_segs)
    }

    /// What [`AccessFormat::count_slots`] reads, as the few ranges the counts need. For a
    /// format that starts like `combined` (nginx's default, and most custom formats), without
    /// walking the format: each field is found as the walk finds it (its end is the first
    /// occurrence of the literal after it), in straight-line code.
    #[inline]
    pub(crate) fn counted(&self, line: &[u8]) -> Option<Counted> {
        let Some([dash, open, close, quote, space]) = &self.combined_head else {
            return self.count_slots(line).as_ref().map(Counted::from);
        };
        // `$remote_addr - $remote_user [$time_local] "$request" $status `: each field ends at
        // the first occurrence of the literal after it, as in the walk. The usual shape of
        // each field is checked first (the first space of the line starts ` - `; the user is
        // `-`; the time is 26 bytes without `]`; the status is 3 bytes without a space): then
        // that position is the first occurrence, without a search; else the search.
        let addr_end = match find_byte(b' ', line) {
            Some(i) if dash.starts(&line[i..]) => i,
            _ => find_lit(line, dash)?,
        };
        let user = addr_end + dash.bytes.len();
        let time = if line[user..].starts_with(b"- [") {
            user + 3
        } else {
            user + find_lit(&line[user..], open)? + open.bytes.len()
        };
        let time_end = match line.get(time..time + TIME_LOCAL_LEN) {
            Some(t) if !t.contains(&b']') && close.starts(&line[time + TIME_LOCAL_LEN..]) => {
                time + TIME_LOCAL_LEN
            }
            _ => time + find_lit(&line[time..], close)?,
        };
        let request = time_end + close.bytes.len();
        let status = request + find_lit(&line[request..], quote)? + quote.bytes.len();
        let status_end = match line.get(status..status + 4) {
            Some(&[a, b, c, b' ']) if a != b' ' && b != b' ' && c != b' ' => status + 3,
            _ => status + find_lit(&line[status..], space)?,
        };
        Some(Counted {
            remote_addr: Some((0, addr_end)),
            time: Some((time, time_end, Var::TimeLocal)),
            status: Some((status, status_end)),
        })
    }

    /// The fields of a line wherever they can be read: all of them, or (when the tail is
    /// broken) those [`AccessFormat::count_slots`] reads.
    pub(crate) fn best_slots(&self, line: &[u8]) -> Option<Slots> {
        self.slots(line).or_else(|| self.count_slots(line))
    }

    #[inline]
    fn slots_upto(&self, line: &[u8], n: usize) -> Option<Slots> {
        let mut s = Slots {
            start_stamp: self.start_stamp,
            request_us: self.request_us,
            complete: n >= self.segs.len(),
            ..Slots::default()
        };
        let mut pos = 0usize;
        let n = n.min(self.segs.len());
        let mut k = 0;
        while k < n {
            match &self.segs[k] {
                Seg::Lit(l) => {
                    if !l.starts(&line[pos..]) {
                        return None;
                    }
                    pos += l.bytes.len();
                }
                Seg::Var(v) => {
                    let end = match self.segs.get(k + 1) {
                        Some(Seg::Lit(l)) => pos + find_lit(&line[pos..], l)?,
                        _ => line.len(),
                    };
                    let r = (pos, end);
                    match v {
                        Var::RemoteAddr => s.remote_addr = Some(r),
                        Var::TimeLocal | Var::TimeIso | Var::Msec => s.time = Some((r.0, r.1, *v)),
                        Var::Request => s.request = Some(r),
                        Var::Status => s.status = Some(r),
                        Var::BodyBytes => s.body = Some(r),
                        Var::UpstreamAddr => s.upstream_addr = Some(r),
                        Var::UpstreamStatus => s.upstream_status = Some(r),
                        Var::UpstreamResponseTime => s.upstream_time = Some(r),
                        Var::RequestTime => s.request_time = Some(r),
                        Var::Forwarded => s.forwarded = Some(r),
                        Var::Other => {}
                    }
                    pos = end;
                }
            }
            k += 1;
        }
        s.end = pos;
        Some(s)
    }

    /// Extras written after a `combined` prefix: `ua="…" us="…" urt="…" rt=…` and the long
    /// names (`upstream_addr=`, `upstream_status=`, `request_time=`, `cf_connecting_ip=`).
    fn extras(&self, line: &[u8], s: &mut Slots) {
        if !self.combined_prefix || !s.complete || s.end >= line.len() {
            return;
        }
        let mut pos = s.end;
        while pos < line.len() {
            while pos < line.len() && line[pos] == b' ' {
                pos += 1;
            }
            let Some(eq) = line[pos..]
                .iter()
                .position(|&c| c == b'=' || c == b' ')
                .map(|i| pos + i)
            else {
                break;
            };
            if line[eq] != b'=' {
                pos = eq;
                continue;
            }
            let key = &line[pos..eq];
            let (vs, ve, next) = if line.get(eq + 1) == Some(&b'"') {
                let close = line[eq + 2..]
                    .iter()
                    .position(|&c| c == b'"')
                    .map_or(line.len(), |i| eq + 2 + i);
                (eq + 2, close, close + 1)
            } else {
                let end = line[eq + 1..]
                    .iter()
                    .position(|&c| c == b' ')
                    .map_or(line.len(), |i| eq + 1 + i);
                (eq + 1, end, end)
            };
            let r = Some((vs, ve));
            match key {
                b"ua" | b"upstream_addr" | b"upstream" => s.upstream_addr = r,
                b"us" | b"upstream_status" => s.upstream_status = r,
                b"urt" | b"upstream_response_time" => s.upstream_time = r,
                b"rt" | b"request_time" => s.request_time = r,
                b"cf"
                | b"cf_connecting_ip"
                | b"http_cf_connecting_ip"
                | b"xff"
                | b"x_forwarded_for" => s.forwarded = r,
                _ => {}
            }
            pos = next;
        }
    }
}

/// The length of `$time_local` (`24/Nov/2026:07:45:17 +0000`).
const TIME_LOCAL_LEN: usize = 26;

/// The literals of `segs` when they begin `$remote_addr - $remote_user [$time_local] "$request"
/// $status ` (in `$remote_user`'s place any variable the parser does not read).
fn starts_like_combined(segs: &[Seg]) -> Option<[Lit; 5]> {
    let lit = |k: usize, text: &[u8]| matches!(segs.get(k), Some(Seg::Lit(l)) if l.bytes == text);
    let var = |k: usize, v: Var| matches!(segs.get(k), Some(Seg::Var(x)) if *x == v);
    let shaped = var(0, Var::RemoteAddr)
        && lit(1, b" - ")
        && matches!(segs.get(2), Some(Seg::Var(Var::Other)))
        && lit(3, b" [")
        && var(4, Var::TimeLocal)
        && lit(5, b"] \"")
        && var(6, Var::Request)
        && lit(7, b"\" ")
        && var(8, Var::Status)
        && lit(9, b" ");
    shaped.then(|| [" - ", " [", "] \"", "\" ", " "].map(|l| Lit::new(l.as_bytes().to_vec())))
}

#[inline]
fn find_lit(hay: &[u8], lit: &Lit) -> Option<usize> {
    let first = *lit.bytes.first()?;
    let mut from = 0;
    while let Some(i) = find_byte(first, &hay[from..]) {
        let at = from + i;
        if lit.starts(&hay[at..]) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The first `b` in `hay`. Most fields are a few bytes long: eight bytes at a time over the
/// first ones costs less than `memchr`'s set-up on every field of every line; longer fields go
/// to `memchr`.
#[inline]
fn find_byte(b: u8, hay: &[u8]) -> Option<usize> {
    const SHORT: usize = 32;
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO.wrapping_mul(u64::from(b));
    let mut i = 0;
    while i < SHORT {
        let Some(word) = hay.get(i..i + 8) else {
            // Fewer than eight bytes left.
            return hay[i..].iter().position(|&c| c == b).map(|k| i + k);
        };
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let x = u64::from_le_bytes(w) ^ pattern;
        // The lowest set bit marks the first zero byte of `x` (a borrow can only set bits
        // above a true zero byte).
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr::memchr(b, &hay[SHORT..]).map(|k| k + SHORT)
}

/// Whether a line looks like `combined` (for format detection).
pub(crate) fn looks_like_access(line: &[u8]) -> bool {
    let f = AccessFormat::combined();
    let Some(s) = f.slots(line) else {
        return false;
    };
    let status_ok = s
        .status
        .and_then(|(a, b)| digits(&line[a..b]))
        .is_some_and(|v| (100..600).contains(&v));
    let time_ok = s
        .time
        .is_some_and(|(a, b, _)| nginx_time_local(&line[a..b]).is_some());
    status_ok && time_ok
}

fn status_of(line: &[u8], status: Option<(usize, usize)>) -> Option<u16> {
    let (a, b) = status?;
    let v = digits(&line[a..b])?;
    (100..1000).contains(&v).then_some(v as u16)
}

fn text(line: &[u8], r: Option<(usize, usize)>) -> Option<String> {
    let (a, b) = r?;
    let v = &line[a..b];
    if v.is_empty() || v == b"-" {
        None
    } else {
        Some(String::from_utf8_lossy(v).into_owned())
    }
}

fn float(line: &[u8], r: Option<(usize, usize)>) -> Option<f64> {
    let (a, b) = r?;
    // `$request_time` is one number; `$upstream_response_time` may be a list: take the sum.
    let v = std::str::from_utf8(&line[a..b]).ok()?;
    v.split([',', ':'])
        .map(str::trim)
        .filter(|x| !x.is_empty() && *x != "-")
        .map(|x| x.parse::<f64>().ok())
        .sum::<Option<f64>>()
}

/// A time cache for access lines: the same stamp repeats for every line of a second.
#[derive(Debug, Default)]
pub(crate) struct TimeCache {
    key: [u8; 32],
    len: usize,
    value: Option<Timestamp>,
}

impl TimeCache {
    #[inline]
    pub(crate) fn get(&mut self, raw: &[u8], kind: Var) -> Option<Timestamp> {
        if raw.len() <= 32
            && self.len == raw.len()
            && self.len > 0
            && eq_short(&self.key[..self.len], raw)
        {
            return self.value;
        }
        let value = match kind {
            Var::TimeLocal => nginx_time_local(raw),
            Var::TimeIso => super::time::iso8601(raw).and_then(|(s, _)| match s {
                super::time::Stamp::Offset(c, off) => c.with_offset(off),
                _ => None,
            }),
            Var::Msec => {
                let v = std::str::from_utf8(raw).ok()?.parse::<f64>().ok()?;
                Timestamp::from_millisecond((v * 1000.0) as i64).ok()
            }
            _ => None,
        };
        if raw.len() <= 32 {
            self.key[..raw.len()].copy_from_slice(raw);
            self.len = raw.len();
            self.value = value;
        }
        value
    }
}

/// Builds the [`Response`] of a parsed line.
pub(crate) fn response(
    line: &[u8],
    s: &Slots,
    file: &Path,
    line_no: u64,
    time: Option<Timestamp>,
    status: u16,
) -> Response {
    let request_time = float(line, s.request_time).map(|t| if s.request_us { t / 1e6 } else { t });
    // An Apache stamp is the request's start: the response ends `request_time` later.
    let time = match (s.start_stamp, time, request_time) {
        (true, Some(t), Some(d)) => t
            .checked_add(jiff::SignedDuration::from_secs_f64(d.clamp(0.0, 86_400.0)))
            .ok()
            .or(Some(t)),
        _ => time,
    };
    Response {
        file: file.to_path_buf(),
        line: line_no,
        time,
        status,
        request: text(line, s.request).unwrap_or_default(),
        client: text(line, s.remote_addr).unwrap_or_default(),
        upstream_addr: text(line, s.upstream_addr),
        upstream_status: text(line, s.upstream_status),
        request_time,
        body_bytes: s.body.and_then(|(a, b)| digits(&line[a..b])).map(u64::from),
        forwarded_for: text(line, s.forwarded),
    }
}

/// Parses one access line into a [`Response`] (any status), for the streaming parser.
pub(crate) fn parse_line(
    fmt: &AccessFormat,
    cache: &mut TimeCache,
    file: &Path,
    line_no: u64,
    line: &[u8],
) -> Option<Response> {
    let mut s = fmt.best_slots(line)?;
    let status = status_of(line, s.status)?;
    fmt.extras(line, &mut s);
    let time = s.time.and_then(|(a, b, k)| cache.get(&line[a..b], k));
    Some(response(line, &s, file, line_no, time, status))
}

/// Most client addresses kept in the counts (the least frequent are pruned past it).
const MAX_CLIENTS: usize = 5_000;

/// Distinct clients counted per chunk of a file.
const CHUNK_CLIENTS: usize = 2_048;

/// A client address as a fixed-size key (no allocation per line); longer values are cut.
#[derive(Debug, Clone, Copy, Eq)]
pub(crate) struct ClientKey {
    len: u8,
    bytes: [u8; 47],
}

impl ClientKey {
    #[inline]
    fn new(s: &[u8]) -> Self {
        let n = s.len().min(47);
        let mut bytes = [0u8; 47];
        bytes[..n].copy_from_slice(&s[..n]);
        ClientKey {
            len: n as u8,
            bytes,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl ClientKey {
    /// The `k`th eight bytes of the key (zero past its end: `new` leaves the rest zero).
    #[inline(always)]
    fn word(&self, k: usize) -> u64 {
        let at = 8 * k;
        match self.bytes.get(at..at + 8) {
            Some(w) => u64::from_le_bytes(w.try_into().unwrap_or_default()),
            None => {
                let mut w = [0u8; 8];
                let rest = &self.bytes[at.min(self.bytes.len())..];
                w[..rest.len()].copy_from_slice(rest);
                u64::from_le_bytes(w)
            }
        }
    }

    /// How many words hold the key's bytes.
    #[inline(always)]
    fn words(&self) -> usize {
        usize::from(self.len).div_ceil(8)
    }
}

impl PartialEq for ClientKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        // Past the length both are zero: comparing whole words compares the bytes.
        self.len == other.len && (0..self.words()).all(|k| self.word(k) == other.word(k))
    }
}

/// Byte equality without a libc call (the values compared here are a few bytes long).
#[inline(always)]
fn eq_short(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i + 8 <= a.len() {
        let x = u64::from_ne_bytes([
            a[i],
            a[i + 1],
            a[i + 2],
            a[i + 3],
            a[i + 4],
            a[i + 5],
            a[i + 6],
            a[i + 7],
        ]);
        let y = u64::from_ne_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
            b[i + 4],
            b[i + 5],
            b[i + 6],
            b[i + 7],
        ]);
        if x != y {
            return false;
        }
        i += 8;
    }
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn starts_with_short(hay: &[u8], lit: &[u8]) -> bool {
    hay.len() >= lit.len() && eq_short(&hay[..lit.len()], lit)
}

impl std::hash::Hash for ClientKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for k in 0..self.words() {
            h.write_u64(self.word(k));
        }
        h.write_u8(self.len);
    }
}

/// Client address counts.
pub(crate) type ClientMap = HashMap<ClientKey, u64, FastBuild>;

/// Adds `other` into `into`, pruning the least frequent past a bound.
pub(crate) fn merge_clients(into: &mut ClientMap, other: ClientMap) {
    for (k, v) in other {
        *into.entry(k).or_default() += v;
    }
    if into.len() > MAX_CLIENTS * 4 {
        prune_map(into, MAX_CLIENTS * 2);
    }
}

fn prune_map(map: &mut ClientMap, keep: usize) {
    let mut counts: Vec<u64> = map.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let cut = counts.get(keep).copied().unwrap_or(0);
    map.retain(|_, n| *n > cut);
}

/// The most frequent clients, as text.
pub(crate) fn clients_text(mut map: ClientMap) -> BTreeMap<String, u64> {
    if map.len() > MAX_CLIENTS {
        prune_map(&mut map, MAX_CLIENTS);
    }
    map.into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(k.as_bytes()).into_owned(), v))
        .collect()
}

/// Counts for a run of access lines (one chunk of a file), built without allocating per line.
#[derive(Debug, Default)]
pub(crate) struct AccessAcc {
    pub lines: u64,
    pub bad: u64,
    pub outside: u64,
    pub total: u64,
    by_status: Vec<u64>,
    other_status: BTreeMap<u16, u64>,
    minute: i64,
    minute_count: MinuteCount,
    per_minute: BTreeMap<i64, MinuteCount>,
    clients: ClientMap,
    /// 5xx and 499 responses, line numbers local to the chunk.
    pub errors: Vec<Response>,
    pub errors_dropped: u64,
    cache: TimeCache,
}

impl AccessAcc {
    pub fn new() -> Self {
        AccessAcc {
            by_status: vec![0; 600],
            clients: ClientMap::with_capacity_and_hasher(CHUNK_CLIENTS, FastBuild::default()),
            minute: i64::MIN,
            ..Default::default()
        }
    }

    /// Counts one line (without its newline). `line_no` is local to the chunk.
    #[inline]
    pub fn line(
        &mut self,
        fmt: &AccessFormat,
        window: &Window,
        file: &Path,
        line_no: u64,
        line: &[u8],
        max_errors: usize,
    ) {
        self.lines += 1;
        let Some(s) = fmt.counted(line) else {
            self.bad += 1;
            return;
        };
        let Some(status) = status_of(line, s.status) else {
            self.bad += 1;
            return;
        };
        let time = s.time.and_then(|(a, b, k)| self.cache.get(&line[a..b], k));
        if let Some(t) = time {
            if window.since.is_some_and(|since| t < since)
                || window.until.is_some_and(|until| t > until)
            {
                self.outside += 1;
                return;
            }
        }
        self.total += 1;
        match self.by_status.get_mut(usize::from(status)) {
            Some(n) => *n += 1,
            None => *self.other_status.entry(status).or_default() += 1,
        }
        let error = status >= 500 || status == 499;
        if let Some(t) = time {
            let minute = t.as_second().div_euclid(60) * 60;
            if minute != self.minute {
                self.flush_minute();
                self.minute = minute;
            }
            self.minute_count.total += 1;
            if status >= 500 {
                self.minute_count.errors += 1;
            }
        }
        if let Some((a, b)) = s.remote_addr {
            let key = ClientKey::new(&line[a..b]);
            if let Some(n) = self.clients.get_mut(&key) {
                *n += 1;
            } else if self.clients.len() < CHUNK_CLIENTS {
                self.clients.insert(key, 1);
            }
            // Else a new client past the chunk's bound: not counted (the counts are for the
            // frequent clients, e.g. a CDN's edges, and stay exact for up to that many).
        }
        if error {
            if self.errors.len() < max_errors {
                // Every field of the line, or (its tail broken) those read to count it.
                if let Some(mut s) = fmt.best_slots(line) {
                    fmt.extras(line, &mut s);
                    self.errors
                        .push(response(line, &s, file, line_no, time, status));
                }
            } else {
                self.errors_dropped += 1;
            }
        }
    }

    fn flush_minute(&mut self) {
        if self.minute != i64::MIN && self.minute_count.total > 0 {
            let e = self.per_minute.entry(self.minute).or_default();
            e.total += self.minute_count.total;
            e.errors += self.minute_count.errors;
        }
        self.minute_count = MinuteCount::default();
    }

    /// The counts as [`ResponseStats`] (without clients), the raw client counts, the kept
    /// errors and how many were dropped.
    pub fn into_parts(mut self) -> (ResponseStats, ClientMap, Vec<Response>, u64) {
        self.flush_minute();
        let mut by_status = self.other_status;
        for (status, n) in self.by_status.iter().enumerate() {
            if *n > 0 {
                by_status.insert(status as u16, *n);
            }
        }
        (
            ResponseStats {
                total: self.total,
                by_status,
                per_minute: self.per_minute,
                clients: BTreeMap::new(),
            },
            self.clients,
            self.errors,
            self.errors_dropped,
        )
    }
}

/// Keeps the most frequent clients of merged stats under the cap.
pub(crate) fn cap_clients(clients: &mut BTreeMap<String, u64>) {
    if clients.len() <= MAX_CLIENTS {
        return;
    }
    let mut counts: Vec<u64> = clients.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let cut = counts.get(MAX_CLIENTS).copied().unwrap_or(0);
    clients.retain(|_, n| *n > cut);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::logs::LINE_CAP;

    const LAB: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" ua="$upstream_addr" us="$upstream_status" urt="$upstream_response_time" rt=$request_time"#;

    /// Access lines that trip parsers: escaped quotes in the request, a missing status, an IPv6
    /// client, a line past the length cap, binary bytes, fields longer and shorter than the
    /// short scan of `find_byte`.
    fn tricky_lines() -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = [
            &br#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET /a?q=\"x\" HTTP/1.1" 502 157 "-" "curl""#[..],
            br#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET /a\" 200 \"b HTTP/1.1" 504 0 "-" "-""#,
            br#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET / HTTP/1.1" - 157 "-" "curl""#,
            br#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET / HTTP/1.1"  157 "-" "curl""#,
            br#"2001:db8:85a3::8a2e:370:7334 - - [24/Nov/2026:07:45:17 +0000] "GET / HTTP/1.1" 502 157 "-" "curl""#,
            br#"::1 - - [24/Nov/2026:07:45:17 +0000] "-" 400 0 "-" "-""#,
            b"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] \"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\" 400 157 \"-\" \"-\"",
            b"\xff\xfe\x00\x01 binary",
            b"",
            b"\"",
            br#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET /b HTTP/1.1" 503 0 "-" "curl/8 (unclosed"#,
        ]
        .iter()
        .map(|l| l.to_vec())
        .collect();
        let mut long = br#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET /"#.to_vec();
        long.extend(std::iter::repeat_n(b'a', LINE_CAP + 10));
        long.extend_from_slice(br#" HTTP/1.1" 502 157 "-" "curl""#);
        lines.push(long[..LINE_CAP].to_vec());
        lines.push(long);
        lines
    }

    #[test]
    fn the_short_field_scan_finds_what_memchr_finds() {
        for line in tricky_lines() {
            let mut bytes: Vec<u8> = line.iter().copied().take(64).collect();
            bytes.extend_from_slice(b" \"][-\x00z");
            for from in (0..=line.len()).filter(|f| *f < 200 || f % 97 == 0) {
                for &b in &bytes {
                    assert_eq!(
                        find_byte(b, &line[from..]),
                        memchr::memchr(b, &line[from..]),
                        "{b} from {from}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_word_compare_of_literals_agrees_with_starts_with() {
        let lits: Vec<Lit> = [
            &b"\""[..],
            b"\" ",
            b" - ",
            b"] \"",
            b"\" 502 ",
            b" HTTP/1.1\" ",
        ]
        .iter()
        .map(|l| Lit::new(l.to_vec()))
        .collect();
        for line in tricky_lines() {
            for from in (0..=line.len()).filter(|f| *f < 200 || f % 97 == 0) {
                for l in &lits {
                    assert_eq!(
                        l.starts(&line[from..]),
                        line[from..].starts_with(&l.bytes),
                        "{:?} at {from}",
                        String::from_utf8_lossy(&l.bytes)
                    );
                }
            }
        }
    }

    #[test]
    fn the_straight_line_count_reads_what_the_format_walk_reads() {
        // `counted` skips the walk for formats that start like `combined`: at every cut and
        // with each separator byte planted at every offset of tricky lines, its fields must be
        // the walk's.
        let formats: Vec<AccessFormat> = [
            COMBINED,
            LAB,
            r#"$remote_addr - $remote_user [$time_local] "$request" $status $request_time"#,
        ]
        .iter()
        .map(|f| AccessFormat::compile(f).unwrap())
        .collect();
        assert!(formats.iter().all(|f| f.combined_head.is_some()));
        // Formats that do not start like it are walked.
        for other in [
            r#"$host $remote_addr - $remote_user [$time_local] "$request" $status"#,
            r#"$remote_addr - $remote_user [$time_local] "$request" $status"#,
            r#"$remote_addr - $remote_user [$time_iso8601] "$request" $status $body_bytes_sent"#,
        ] {
            assert!(
                AccessFormat::compile(other)
                    .unwrap()
                    .combined_head
                    .is_none(),
                "{other}"
            );
        }
        let mut checked = 0;
        for base in tricky_lines() {
            let base = &base[..base.len().min(300)];
            let variants = crate::logs::mutants(base, 0..base.len(), b" \"][-\n5");
            for line in &variants {
                for f in &formats {
                    let walked = f.count_slots(line).as_ref().map(Counted::from);
                    assert_eq!(
                        f.counted(line),
                        walked,
                        "{:?}",
                        String::from_utf8_lossy(line)
                    );
                    checked += usize::from(walked.is_some());
                }
            }
        }
        assert!(checked > 1000, "{checked} lines read");
    }

    #[test]
    fn client_keys_hold_their_bytes_and_tell_them_apart() {
        // Every length up to past the cap (47), zero bytes included (a zero byte inside a key
        // is not its padding): keys compare and count by their bytes (cut at the cap).
        let texts: Vec<Vec<u8>> = (0..60)
            .flat_map(|n| {
                [
                    (0..n).map(|i| b'0' + (i % 10) as u8).collect::<Vec<u8>>(),
                    (0..n).map(|i| if i % 3 == 0 { 0 } else { b'a' }).collect(),
                ]
            })
            .collect();
        let cut = |t: &Vec<u8>| t[..t.len().min(47)].to_vec();
        let mut counts = ClientMap::default();
        for t in &texts {
            let key = ClientKey::new(t);
            assert_eq!(key.as_bytes(), &cut(t)[..]);
            *counts.entry(key).or_default() += 1;
        }
        for a in &texts {
            for b in &texts {
                assert_eq!(ClientKey::new(a) == ClientKey::new(b), cut(a) == cut(b));
            }
        }
        let distinct: std::collections::BTreeSet<Vec<u8>> = texts.iter().map(cut).collect();
        assert_eq!(counts.len(), distinct.len());
        assert_eq!(counts.values().sum::<u64>(), texts.len() as u64);
    }

    #[test]
    fn tricky_lines_parse_as_they_should() {
        let f = AccessFormat::combined();
        let mut c = TimeCache::default();
        let got: Vec<Option<(u16, String, String)>> = tricky_lines()
            .iter()
            .map(|l| {
                parse_line(&f, &mut c, Path::new("a"), 1, l)
                    .map(|r| (r.status, r.client, r.request))
            })
            .collect();
        let want = |status: u16, client: &str, request: &str| {
            Some((status, client.to_string(), request.to_string()))
        };
        // The request ends at the first `" ` (nginx writes a quote inside as `\x22`; Apache's
        // `\"` cuts the request short): the line is bad, or read with a short request.
        assert_eq!(got[0], None);
        assert_eq!(got[1], want(200, "1.2.3.4", r"GET /a\"));
        assert_eq!(got[2], None);
        assert_eq!(got[3], None);
        assert_eq!(
            got[4],
            want(502, "2001:db8:85a3::8a2e:370:7334", "GET / HTTP/1.1")
        );
        assert_eq!(got[5], want(400, "::1", ""));
        assert_eq!(got[6].as_ref().map(|g| g.0), Some(400));
        assert_eq!(&got[7..10], &[None, None, None]);
        // A broken tail (the user agent's quote unclosed) after a good status: still a response.
        assert_eq!(got[10], want(503, "1.2.3.4", "GET /b HTTP/1.1"));
        // Cut at the cap (as the reader cuts it): the quote that ends the request is gone.
        assert_eq!(got[11], None);
        assert_eq!(
            got[12],
            want(
                502,
                "1.2.3.4",
                &format!("GET /{} HTTP/1.1", "a".repeat(LINE_CAP + 10))
            )
        );
        // The counting path agrees with the streaming parser on every line.
        let window = Window::default();
        let mut acc = AccessAcc::new();
        for (i, l) in tricky_lines().iter().enumerate() {
            acc.line(&f, &window, Path::new("a"), i as u64 + 1, l, 100);
        }
        let parsed = got.iter().filter(|g| g.is_some()).count() as u64;
        assert_eq!(acc.total, parsed);
        assert_eq!(acc.bad, tricky_lines().len() as u64 - parsed);
        let errors: Vec<u16> = acc.errors.iter().map(|r| r.status).collect();
        assert_eq!(errors, vec![502, 503, 502]);
    }

    #[test]
    fn custom_format_reads_upstream_fields() {
        let f = AccessFormat::compile(LAB).unwrap();
        let line = br#"127.0.0.1 - - [24/Nov/2026:07:45:29 +0000] "GET /nolive.php HTTP/1.1" 502 157 "-" "Mozilla/5.0 (lab)" ua="127.0.0.1:19001, 127.0.0.1:19002" us="502, 502" urt="0.000, 0.000" rt=0.000"#;
        let mut c = TimeCache::default();
        let r = parse_line(&f, &mut c, Path::new("a"), 3, line).unwrap();
        assert_eq!(r.status, 502);
        assert_eq!(r.client, "127.0.0.1");
        assert_eq!(r.request, "GET /nolive.php HTTP/1.1");
        assert_eq!(
            r.upstream_addr.as_deref(),
            Some("127.0.0.1:19001, 127.0.0.1:19002")
        );
        assert_eq!(r.upstream_status.as_deref(), Some("502, 502"));
        assert_eq!(r.request_time, Some(0.0));
        assert_eq!(r.body_bytes, Some(157));
        assert_eq!(r.time.unwrap().to_string(), "2026-11-24T07:45:29Z");
    }

    #[test]
    fn unknown_format_falls_back_to_combined_with_extras() {
        let f = AccessFormat::combined();
        let line = br#"127.0.0.1 - - [24/Nov/2026:07:45:48 +0000] "GET /sleep.php?s=8 HTTP/1.1" 502 157 "-" "Mozilla/5.0 (lab)" ua="unix:/run/php/php8.2-fpm.sock" us="502" urt="5.242" rt=5.241"#;
        let mut c = TimeCache::default();
        let r = parse_line(&f, &mut c, Path::new("a"), 1, line).unwrap();
        assert_eq!(
            r.upstream_addr.as_deref(),
            Some("unix:/run/php/php8.2-fpm.sock")
        );
        assert_eq!(r.upstream_status.as_deref(), Some("502"));
        assert_eq!(r.request_time, Some(5.241));
        assert!(looks_like_access(line));
        assert!(!looks_like_access(b"2026/11/24 07:45:17 [crit] 1#1: x"));
    }

    #[test]
    fn cf_connecting_ip_and_iso_time() {
        let f = AccessFormat::compile(
            r#"$http_cf_connecting_ip $remote_addr [$time_iso8601] "$request" $status rt=$request_time"#,
        )
        .unwrap();
        let line =
            br#"203.0.113.9 172.70.1.2 [2026-11-24T08:45:17+01:00] "GET / HTTP/2.0" 504 rt=60.001"#;
        let mut c = TimeCache::default();
        let r = parse_line(&f, &mut c, Path::new("a"), 1, line).unwrap();
        assert_eq!(r.forwarded_for.as_deref(), Some("203.0.113.9"));
        assert_eq!(r.client, "172.70.1.2");
        assert_eq!(r.status, 504);
        assert_eq!(r.time.unwrap().to_string(), "2026-11-24T07:45:17Z");
    }

    #[test]
    fn leading_fields_are_inferred() {
        let line = br#"origin.rxivist.org 54.87.212.77 - - [19/Oct/2018:16:05:32 +0000] "GET / HTTP/1.1" 500 193 "-" "loader.io;d947546b8d2817a9163c339aaa202026" rt=0.001"#;
        let f = AccessFormat::infer(line).unwrap();
        let mut c = TimeCache::default();
        let r = parse_line(&f, &mut c, Path::new("a"), 1, line).unwrap();
        assert_eq!(r.client, "54.87.212.77");
        assert_eq!(r.status, 500);
        assert_eq!(r.request_time, Some(0.001));
        assert!(AccessFormat::infer(b"2026/11/24 07:45:17 [crit] 1#1: x - y").is_none());
        // Plain combined has no leading field: nothing to infer.
        assert!(AccessFormat::infer(
            br#"1.2.3.4 - - [24/Nov/2026:07:45:17 +0000] "GET / HTTP/1.1" 200 5 "-" "x""#
        )
        .is_none());
    }

    #[test]
    fn bad_formats() {
        assert_eq!(
            AccessFormat::compile("$remote_addr $request").unwrap_err(),
            FormatError::NoStatus
        );
        assert!(matches!(
            AccessFormat::compile("$status$request"),
            Err(FormatError::Adjacent(_))
        ));
        assert_eq!(AccessFormat::compile("").unwrap_err(), FormatError::Empty);
    }

    #[test]
    fn accumulator_counts_and_window() {
        let f = AccessFormat::combined();
        let mut acc = AccessAcc::new();
        let since = "2026-11-24T07:45:00Z".parse().unwrap();
        let w = Window {
            since: Some(since),
            until: None,
        };
        let lines = [
            r#"1.1.1.1 - - [24/Nov/2026:07:44:59 +0000] "GET / HTTP/1.1" 502 157 "-" "x""#,
            r#"1.1.1.1 - - [24/Nov/2026:07:45:01 +0000] "GET / HTTP/1.1" 200 1 "-" "x""#,
            r#"2.2.2.2 - - [24/Nov/2026:07:45:02 +0000] "GET / HTTP/1.1" 502 157 "-" "x""#,
            r#"2.2.2.2 - - [24/Nov/2026:07:46:02 +0000] "GET / HTTP/1.1" 499 0 "-" "x""#,
            "garbage",
        ];
        for (i, l) in lines.iter().enumerate() {
            acc.line(&f, &w, Path::new("a"), i as u64 + 1, l.as_bytes(), 10);
        }
        assert_eq!((acc.lines, acc.bad, acc.outside), (5, 1, 1));
        let (mut stats, clients, errors, _) = acc.into_parts();
        stats.clients = clients_text(clients);
        assert_eq!(stats.total, 3);
        assert_eq!(stats.by_status.get(&502), Some(&1));
        assert_eq!(stats.by_status.get(&499), Some(&1));
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, 3);
        let m = stats.per_minute.values().copied().collect::<Vec<_>>();
        assert_eq!(
            m,
            vec![
                MinuteCount {
                    total: 2,
                    errors: 1
                },
                MinuteCount {
                    total: 1,
                    errors: 0
                }
            ]
        );
        assert_eq!(stats.clients.get("2.2.2.2"), Some(&2));
    }
}
