//! The structure of each server-side log line: its time stamp, level and ids (the *header*), the
//! message that rules match, and for nginx error lines the structural tail (`, client: …,
//! server: …, request: "…", upstream: "…", host: "…"`) split off into fields.
//!
//! Pure functions over bytes; no allocation on the hot path: fields are ranges into the entry.

use std::ops::Range;

use memchr::memmem;

use super::time::{d2, d4, fraction, hms, iso8601, month, padded, Civil, Stamp};
use crate::event::LogSource;

/// Structural fields of an entry, as ranges into it.
pub(crate) type Fields = Vec<(&'static str, Range<usize>)>;

/// The parsed header of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub stamp: Stamp,
    /// The raw bytes of the stamp (the key of the time cache).
    pub stamp_raw: Range<usize>,
    /// The message rules match.
    pub msg: Range<usize>,
    /// For kernel-source lines of a user-space program: the program name, which the message is
    /// prefixed with (`systemd: …`) so such lines cannot pass for the kernel's.
    pub prog: Option<Range<usize>>,
    /// nginx error lines: where the structural tail (`client: …`) starts, parsed on demand.
    pub tail: Option<(usize, usize)>,
}

/// Parses the header of `e` as `source`; `None` when the entry is not of that format.
pub(crate) fn head(source: LogSource, e: &[u8], f: &mut Fields) -> Option<Head> {
    f.clear();
    match source {
        LogSource::NginxError => nginx_error(e, Some(f)),
        LogSource::PhpFpm => php_fpm(e, f),
        LogSource::PhpFpmSlow => php_fpm_slow(e, f),
        LogSource::Php => php(e, f),
        LogSource::MysqlError => mysql(e, f),
        LogSource::Kernel => kernel(e, f),
        LogSource::ApacheError => apache_error(e, f),
        LogSource::NginxAccess => None,
    }
}

/// The header as matching needs it: [`head`], except that nginx error entries (the busiest
/// format) leave `f` empty instead of filling it with their level and ids (the event builder
/// reads the header again).
#[inline]
pub(crate) fn head_for_match(source: LogSource, e: &[u8], f: &mut Fields) -> Option<Head> {
    match source {
        LogSource::NginxError => nginx_error(e, None),
        _ => head(source, e, f),
    }
}

/// True when `line` begins a new entry of `source` (false for continuation lines: PHP stack
/// traces after `FastCGI sent in stderr`, MariaDB crash reports, slowlog frames).
pub fn starts_entry(source: LogSource, line: &[u8]) -> bool {
    match source {
        LogSource::NginxError => nginx_stamp_shape(line) || stampless_nginx(line),
        LogSource::PhpFpm | LogSource::PhpFpmSlow => fpm_stamp(line).is_some(),
        LogSource::Php => php_stamp(line).is_some(),
        LogSource::MysqlError => mysql_stamp(line).is_some(),
        // Apache escapes newlines in its messages: every line is an entry.
        LogSource::Kernel | LogSource::NginxAccess | LogSource::ApacheError => {
            !line.is_empty() && line != b"\r"
        }
    }
}

fn trim_end(e: &[u8], mut end: usize) -> usize {
    while end > 0 && matches!(e[end - 1], b'\r' | b'\n' | b' ') {
        end -= 1;
    }
    end
}

fn skip_spaces(e: &[u8], mut at: usize) -> usize {
    while e.get(at) == Some(&b' ') {
        at += 1;
    }
    at
}

/// How many ASCII digits start at `at`. Eight bytes at a time (a pid, a connection number and
/// a stamp's fields on every line): the first byte that is not a digit ends the run.
#[inline]
fn digit_run(e: &[u8], at: usize) -> usize {
    let mut i = at;
    while let Some(w) = e.get(i..).and_then(|r| r.first_chunk::<8>()) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        // A digit XORed with '0' is 0..=9: high nibble clear, and low nibble + 6 below 0x10.
        let x = u64::from_le_bytes(*w) ^ (0x30 * ONES);
        let low_over_nine = ((x & (0x0F * ONES)) + 0x06 * ONES) & (0x10 * ONES);
        // Non-zero in each byte that is not a digit (no carry crosses a byte above).
        let not_digit = (x & (0xF0 * ONES)) | (low_over_nine << 3);
        let any = (((not_digit & (0x7F * ONES)) + 0x7F * ONES) | not_digit) & (0x80 * ONES);
        if any != 0 {
            return i - at + (any.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < e.len() && e[i].is_ascii_digit() {
        i += 1;
    }
    i.saturating_sub(at)
}

// ---------------------------------------------------------------------------------------------
// nginx error log

/// The shape of `YYYY/MM/DD HH:MM:SS ` (digits and separators where they belong; the values are
/// checked when the header is parsed): what tells an entry's first line from a continuation.
/// Checked on every line, twice: three 8-byte words against masks instead of 20 byte compares.
#[inline]
fn nginx_stamp_shape(e: &[u8]) -> bool {
    let Some(e) = e.first_chunk::<21>() else {
        return false;
    };
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&e[at..at + 8]);
        u64::from_le_bytes(w)
    };
    // Bytes 0..8, 8..16 and 13..21 (byte 20 is free).
    const A: WordShape = WordShape::of(b"dddd/dd/");
    const B: WordShape = WordShape::of(b"dd dd:dd");
    const C: WordShape = WordShape::of(b":dd:dd ?");
    A.fits(word(0)) && B.fits(word(8)) && C.fits(word(13))
}

/// Masks that check 8 bytes at once against a template: `d` a digit, `?` any byte, anything
/// else that byte.
struct WordShape {
    /// 0x30 at the digits: a digit XORed with it is 0..=9.
    zero: u64,
    /// 0xF0 at the digits: that must be clear.
    high: u64,
    /// 0x06 at the digits: added to 0..=9 it stays below 0x10 (0x0A..=0x0F do not).
    six: u64,
    /// 0x10 at the digits.
    ten: u64,
    /// 0xFF at the fixed bytes, and their values.
    fixed: u64,
    value: u64,
}

impl WordShape {
    const fn of(t: &[u8; 8]) -> WordShape {
        let mut m = WordShape {
            zero: 0,
            high: 0,
            six: 0,
            ten: 0,
            fixed: 0,
            value: 0,
        };
        let mut i = 0;
        while i < 8 {
            let shift = 8 * i as u32;
            match t[i] {
                b'd' => {
                    m.zero |= 0x30 << shift;
                    m.high |= 0xF0 << shift;
                    m.six |= 0x06 << shift;
                    m.ten |= 0x10 << shift;
                }
                b'?' => {}
                c => {
                    m.fixed |= 0xFF << shift;
                    m.value |= (c as u64) << shift;
                }
            }
            i += 1;
        }
        m
    }

    #[inline]
    fn fits(&self, w: u64) -> bool {
        let x = w ^ self.zero;
        // With every digit byte at most 0x0F, adding 6 carries into no other byte.
        (w & self.fixed) == self.value
            && (x & self.high) == 0
            && (x.wrapping_add(self.six) & self.ten) == 0
    }
}

/// `YYYY/MM/DD HH:MM:SS` at the start of `e` (true exactly when [`nginx_stamp_shape`] is).
#[cfg(test)]
pub(crate) fn nginx_stamp(e: &[u8]) -> Option<Civil> {
    if e.len() < 21 || e[19] != b' ' {
        return None;
    }
    nginx_civil(e)
}

/// `YYYY/MM/DD HH:MM:SS` at the start of `e` (the stamp alone).
pub(crate) fn nginx_civil(e: &[u8]) -> Option<Civil> {
    if e.len() < 19 || e[4] != b'/' || e[7] != b'/' || e[10] != b' ' {
        return None;
    }
    let (h, mi, s) = hms(e, 11)?;
    Some(Civil {
        y: d4(e, 0)?,
        mo: d2(e, 5)?,
        d: d2(e, 8)?,
        h,
        mi,
        s,
        micros: 0,
    })
}

/// `[error] 1046#1046: …`: an nginx error entry pasted without its date (the level, then the
/// pid: a shape only nginx writes).
fn stampless_nginx(e: &[u8]) -> bool {
    const LEVELS: [&[u8]; 8] = [
        b"[emerg] ",
        b"[alert] ",
        b"[crit] ",
        b"[error] ",
        b"[warn] ",
        b"[notice] ",
        b"[info] ",
        b"[debug] ",
    ];
    // Every level starts with `[`: continuation lines (stack traces) stop here.
    e.first() == Some(&b'[')
        && LEVELS.iter().any(|l| {
            e.starts_with(l) && {
                // nginx's start-up messages on stderr (`[emerg] bind() … failed`) carry no pid.
                let n = digit_run(e, l.len());
                (n > 0 && e.get(l.len() + n) == Some(&b'#')) || matches!(&l[..3], b"[em" | b"[al")
            }
        })
}

/// `f`: where the header's fields go (`None`: not wanted).
fn nginx_error(e: &[u8], mut f: Option<&mut Fields>) -> Option<Head> {
    let mut push = |name: &'static str, r: Range<usize>| {
        if let Some(f) = f.as_deref_mut() {
            f.push((name, r));
        }
    };
    // The stamp's value is read only when the entry's time is needed (see `Stamp::NginxLocal`).
    let (stamp, stamp_raw, lb) = if nginx_stamp_shape(e) {
        (Stamp::NginxLocal, 0..19, 20)
    } else if stampless_nginx(e) {
        (Stamp::None, 0..0, 0)
    } else {
        return None;
    };
    // [level]
    if e.get(lb) != Some(&b'[') {
        return None;
    }
    // A level is a few letters: a byte loop is cheaper than `memchr`'s set-up.
    let close = e[lb + 1..e.len().min(lb + 20)]
        .iter()
        .position(|&c| c == b']')?
        + lb
        + 1;
    push("level", lb + 1..close);
    let mut at = close + 1;
    if e.get(at) != Some(&b' ') {
        return None;
    }
    at += 1;
    // PID#TID:
    let n = digit_run(e, at);
    if n > 0 && e.get(at + n) == Some(&b'#') {
        push("pid", at..at + n);
        let t = at + n + 1;
        let m = digit_run(e, t);
        push("tid", t..t + m);
        at = t + m;
        if e.get(at) == Some(&b':') {
            at += 1;
        }
        at = skip_spaces(e, at);
        // *CONN
        if e.get(at) == Some(&b'*') {
            let c = digit_run(e, at + 1);
            if c > 0 {
                push("connection", at + 1..at + 1 + c);
                at = skip_spaces(e, at + 1 + c);
            }
        }
    }
    let end = trim_end(e, e.len());
    let at = at.min(end);
    let (msg_end, tail) = match find_client(&e[at..end]) {
        Some(i) => (at + i, Some((at + i + 2, end))),
        None => (end, None),
    };
    Some(Head {
        stamp,
        stamp_raw,
        msg: at..msg_end.max(at),
        prog: None,
        tail,
    })
}

/// Where `, client: ` first occurs in `hay`: a `memchr` for the comma, then a compare (nginx
/// messages have few commas before their tail: cheaper than a substring search's set-up per line).
fn find_client(hay: &[u8]) -> Option<usize> {
    // A fixed-size compare: inline, no `memcmp` call per comma.
    memchr::memchr_iter(b',', hay).find(|&i| hay[i..].first_chunk::<10>() == Some(b", client: "))
}

/// `client: A, server: B, request: "C", upstream: "D", host: "E", referrer: "F"` from `at`.
pub(crate) fn nginx_tail(e: &[u8], at: usize, end: usize, f: &mut Fields) {
    let t = &e[..end];
    let Some(rest) = t.get(at..) else { return };
    let Some(client) = rest.strip_prefix(b"client: ") else {
        return;
    };
    let cstart = at + 8;
    let cend = memmem::find(client, b", server: ").map_or(end, |i| cstart + i);
    f.push(("client", cstart..cend));
    if cend >= end {
        return;
    }
    let sstart = cend + 10;
    // The server name runs to the next quoted field (or the end).
    type Key = (memmem::Finder<'static>, &'static str);
    static KEYS: std::sync::OnceLock<[Key; 5]> = std::sync::OnceLock::new();
    let quoted = KEYS.get_or_init(|| {
        [
            (&b", request: \""[..], "request"),
            (&b", subrequest: \""[..], "subrequest"),
            (&b", upstream: \""[..], "upstream"),
            (&b", host: \""[..], "host"),
            (&b", referrer: \""[..], "referrer"),
        ]
        .map(|(k, n)| (memmem::Finder::new(k), n))
    });
    // Where each key first occurs at or after `sstart`, searched once (was: every later key
    // searched again for every field). The next field is the earliest key, and no key can start
    // inside another's text, so a later key is never seen before where the next search starts;
    // were it ever, it is searched again from there.
    let mut seen = quoted.each_ref().map(|(key, _)| {
        t.get(sstart..)
            .and_then(|h| key.find(h))
            .map(|i| sstart + i)
    });
    // The first of keys `k..` that occurs at or after `from`: (position, key index).
    let mut next_field = |from: usize, k: usize| -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for j in k..quoted.len() {
            if seen[j].is_some_and(|at| at < from) {
                seen[j] = t
                    .get(from..)
                    .and_then(|h| quoted[j].0.find(h))
                    .map(|i| from + i);
            }
            if let Some(at) = seen[j] {
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, j));
                }
            }
        }
        best
    };
    let first = next_field(sstart, 0);
    let send = first.map_or(end, |(i, _)| i);
    f.push(("server", sstart..send.max(sstart)));
    let Some((mut i, mut k)) = first else { return };
    loop {
        let (key, name) = &quoted[k];
        let name = *name;
        let vstart = i + key.needle().len();
        // The value ends at the quote before the next known field, else at the last quote.
        let next = next_field(vstart, k + 1);
        let vend = match next {
            Some((n, _)) => n,
            None => end,
        };
        let vend_q = if vend > vstart && t[vend - 1] == b'"' {
            vend - 1
        } else {
            vend
        };
        f.push((name, vstart..vend_q.max(vstart)));
        match next {
            Some((n, nk)) => {
                i = n;
                k = nk;
            }
            None => break,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PHP-FPM master log, slowlog, PHP error log: `[DD-Mon-YYYY HH:MM:SS(.micro)?( Zone)?]`

/// Checked on every line (twice: for where entries start, then for the header): the fixed
/// 21 bytes read from one array, with no bounds check per field.
#[inline]
fn fpm_civil(e: &[u8]) -> Option<(Civil, usize)> {
    let b = e.first_chunk::<21>()?;
    if b[0] != b'['
        || b[3] != b'-'
        || b[7] != b'-'
        || b[12] != b' '
        || b[15] != b':'
        || b[18] != b':'
    {
        return None;
    }
    let d2 = |at: usize| {
        let (x, y) = (b[at].wrapping_sub(b'0'), b[at + 1].wrapping_sub(b'0'));
        (x < 10 && y < 10).then(|| x * 10 + y)
    };
    let (d, y_hi, y_lo, h, mi, s) = (d2(1)?, d2(8)?, d2(10)?, d2(13)?, d2(16)?, d2(19)?);
    let mo = month(&b[4..7])?;
    let (micros, used) = fraction(e, 21);
    Some((
        Civil {
            y: i32::from(y_hi) * 100 + i32::from(y_lo),
            mo,
            d,
            h,
            mi,
            s,
            micros,
        },
        21 + used,
    ))
}

/// `[DD-Mon-YYYY HH:MM:SS]` (PHP-FPM: no zone).
fn fpm_stamp(e: &[u8]) -> Option<(Civil, usize)> {
    let (c, at) = fpm_civil(e)?;
    (e.get(at) == Some(&b']')).then_some((c, at + 1))
}

/// `[DD-Mon-YYYY HH:MM:SS Zone]` (PHP error log).
fn php_stamp(e: &[u8]) -> Option<(Civil, Range<usize>, usize)> {
    let (c, at) = fpm_civil(e)?;
    if e.get(at) != Some(&b' ') {
        return None;
    }
    let zend = memchr::memchr(b']', &e[at + 1..e.len().min(at + 64)])? + at + 1;
    if zend == at + 1 || e[at + 1..zend].contains(&b' ') {
        return None;
    }
    Some((c, at + 1..zend, zend + 1))
}

const FPM_LEVELS: &[&[u8]] = &[b"DEBUG", b"NOTICE", b"WARNING", b"ERROR", b"ALERT"];

fn php_fpm(e: &[u8], f: &mut Fields) -> Option<Head> {
    let (civil, at) = fpm_stamp(e)?;
    let lstart = at + 1;
    let colon = memchr::memchr(b':', &e[lstart.min(e.len())..e.len().min(lstart + 10)])? + lstart;
    let level = &e[lstart..colon];
    if e.get(at) != Some(&b' ') || !FPM_LEVELS.contains(&level) {
        return None;
    }
    f.push(("level", lstart..colon));
    let msg = skip_spaces(e, colon + 1);
    Some(Head {
        stamp: Stamp::Local(civil),
        stamp_raw: 1..at - 1,
        msg: msg..trim_end(e, e.len()).max(msg),
        prog: None,
        tail: None,
    })
}

fn php_fpm_slow(e: &[u8], _f: &mut Fields) -> Option<Head> {
    let (civil, at) = fpm_stamp(e)?;
    let msg = skip_spaces(e, at);
    if !e[msg..].starts_with(b"[pool ") {
        return None;
    }
    Some(Head {
        stamp: Stamp::Local(civil),
        stamp_raw: 1..at - 1,
        msg: msg..trim_end(e, e.len()).max(msg),
        prog: None,
        tail: None,
    })
}

fn php(e: &[u8], f: &mut Fields) -> Option<Head> {
    let (civil, zone, at) = php_stamp(e)?;
    f.push(("zone", zone.clone()));
    let msg = skip_spaces(e, at);
    Some(Head {
        stamp: Stamp::Named(civil, zone.start, zone.end),
        stamp_raw: 1..zone.end,
        msg: msg..trim_end(e, e.len()).max(msg),
        prog: None,
        tail: None,
    })
}

// ---------------------------------------------------------------------------------------------
// MySQL / MariaDB

/// The stamp forms of MySQL and MariaDB error logs; returns the stamp, its raw range, and where
/// the rest starts.
fn mysql_stamp(e: &[u8]) -> Option<(Stamp, Range<usize>, usize)> {
    // MySQL 5.7/8: ISO 8601 with Z or offset.
    if let Some((stamp, n)) = iso8601(e) {
        return Some((stamp, 0..n, n));
    }
    // MySQL 5.6 / MariaDB 10+: `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD  H:MM:SS`.
    if e.get(4) == Some(&b'-') && e.get(7) == Some(&b'-') && e.get(10) == Some(&b' ') {
        let (civil, n) = padded_time(e, 11, d4(e, 0)?, d2(e, 5)?, d2(e, 8)?)?;
        return Some((Stamp::Local(civil), 0..n, n));
    }
    // MySQL 5.5 / MariaDB 5.5 and crash headers: `YYMMDD HH:MM:SS` / `YYMMDD  H:MM:SS`.
    if e.len() > 7 && e[..6].iter().all(u8::is_ascii_digit) && e[6] == b' ' {
        let (civil, n) = padded_time(e, 7, 2000 + i32::from(d2(e, 0)?), d2(e, 2)?, d2(e, 4)?)?;
        return Some((Stamp::Local(civil), 0..n, n));
    }
    // MySQL 5.7 crash header: `HH:MM:SS UTC - ` (no date).
    if hms(e, 0).is_some() && e[8..].starts_with(b" UTC - ") {
        return Some((Stamp::None, 0..8, 9));
    }
    None
}

/// `HH:MM:SS` where the hour may be space-padded (one or more spaces before it), at `at`.
fn padded_time(e: &[u8], at: usize, y: i32, mo: u8, d: u8) -> Option<(Civil, usize)> {
    let start = skip_spaces(e, at);
    // Three bytes at most: a loop, not a `memchr` call and its set-up.
    let colon = e[start..e.len().min(start + 3)]
        .iter()
        .position(|&c| c == b':')?
        + start;
    let h = padded(&e[start..colon])? as u8;
    let mi = d2(e, colon + 1)?;
    if e.get(colon + 3) != Some(&b':') {
        return None;
    }
    let s = d2(e, colon + 4)?;
    let (micros, used) = fraction(e, colon + 6);
    Some((
        Civil {
            y,
            mo,
            d,
            h,
            mi,
            s,
            micros,
        },
        colon + 6 + used,
    ))
}

fn mysql(e: &[u8], f: &mut Fields) -> Option<Head> {
    let (stamp, raw, mut at) = mysql_stamp(e)?;
    let end = trim_end(e, e.len());
    // Crash header: `... UTC - mysqld got signal 11 ;`
    let after = skip_spaces(e, at);
    if e[after..].starts_with(b"UTC - ") {
        let msg = after + 6;
        return Some(Head {
            stamp,
            stamp_raw: raw,
            msg: msg..end.max(msg),
            prog: None,
            tail: None,
        });
    }
    at = after;
    // Optional thread id.
    let n = digit_run(e, at);
    if n > 0 && e.get(at + n) == Some(&b' ') {
        f.push(("thread", at..at + n));
        at = skip_spaces(e, at + n);
    }
    if e.get(at) != Some(&b'[') {
        return None;
    }
    let close = memchr::memchr(b']', &e[at..e.len().min(at + 16)])? + at;
    let level = &e[at + 1..close];
    if level.is_empty() || !level.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    f.push(("level", at + 1..close));
    at = skip_spaces(e, close + 1);
    // MySQL 8: `[MY-010926] [Server] `
    if e[at..].starts_with(b"[MY-") {
        if let Some(c) = memchr::memchr(b']', &e[at..]) {
            f.push(("code", at + 1..at + c));
            at = skip_spaces(e, at + c + 1);
            if e.get(at) == Some(&b'[') {
                if let Some(c2) = memchr::memchr(b']', &e[at..e.len().min(at + 32)]) {
                    f.push(("subsystem", at + 1..at + c2));
                    at = skip_spaces(e, at + c2 + 1);
                }
            }
        }
    }
    Some(Head {
        stamp,
        stamp_raw: raw,
        msg: at..end.max(at),
        prog: None,
        tail: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Apache httpd error log: `[Www Mmm dd HH:MM:SS(.micros) YYYY] [module:level] [pid N:tid N]
// (errno)Text: [client A:P] AHnnnnn: message, referer: R` (2.4) or `[…] [level] [client A]
// message` (2.2).

/// `[Www Mmm dd HH:MM:SS(.micros) YYYY]`: the stamp and where the rest starts.
fn apache_stamp(e: &[u8]) -> Option<(Civil, usize)> {
    if e.len() < 26 || e[0] != b'[' || e[4] != b' ' || e[8] != b' ' || e[11] != b' ' {
        return None;
    }
    let (h, mi, s) = hms(e, 12)?;
    let (micros, used) = fraction(e, 20);
    let at = 20 + used;
    if e.get(at) != Some(&b' ') || e.get(at + 5) != Some(&b']') {
        return None;
    }
    Some((
        Civil {
            y: d4(e, at + 1)?,
            mo: month(&e[5..8])?,
            d: padded(&e[9..11])? as u8,
            h,
            mi,
            s,
            micros,
        },
        at + 6,
    ))
}

/// A `[name value]` bracket at `at` whose content starts with `name `: the value's range and
/// where the text after it (and its space) starts.
fn bracket(e: &[u8], at: usize, name: &[u8]) -> Option<(Range<usize>, usize)> {
    if e.get(at) != Some(&b'[') || !e[at + 1..].starts_with(name) {
        return None;
    }
    let close = memchr::memchr(b']', &e[at..e.len().min(at + 128)])? + at;
    let start = at + 1 + name.len();
    Some((start.min(close)..close, skip_spaces(e, close + 1)))
}

fn apache_error(e: &[u8], f: &mut Fields) -> Option<Head> {
    // A line without its stamp (a container log that strips it) must at least start with
    // 2.4's `[module:level] [pid N`.
    let (stamp, stamp_raw, mut at) = match apache_stamp(e) {
        Some((civil, n)) => (Stamp::Local(civil), 1..n - 1, n),
        None if e.first() == Some(&b'[') => (Stamp::None, 0..0, 0),
        None => return None,
    };
    let end = trim_end(e, e.len());
    at = skip_spaces(e, at);
    // [module:level] (2.4) or [level] (2.2).
    if e.get(at) != Some(&b'[') {
        return None;
    }
    let close = memchr::memchr(b']', &e[at..e.len().min(at + 48)])? + at;
    let inner = &e[at + 1..close];
    if inner.is_empty()
        || !inner
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b":_-".contains(c))
    {
        return None;
    }
    if stamp == Stamp::None
        && (!inner.contains(&b':') || bracket(e, skip_spaces(e, close + 1), b"pid ").is_none())
    {
        return None;
    }
    match memchr::memchr(b':', inner) {
        Some(c) => {
            f.push(("module", at + 1..at + 1 + c));
            f.push(("level", at + 2 + c..close));
        }
        None => f.push(("level", at + 1..close)),
    }
    at = skip_spaces(e, close + 1);
    // [pid N:tid N] / [pid N]
    if let Some((v, next)) = bracket(e, at, b"pid ") {
        let n = digit_run(e, v.start);
        f.push(("pid", v.start..v.start + n));
        if let Some(t) = memmem::find(&e[v.clone()], b":tid ") {
            let ts = v.start + t + 5;
            f.push(("tid", ts..ts + digit_run(e, ts)));
        }
        at = next;
    }
    // `(errno)Text: ` (the APR status of the failure) and `[client A:P]`/`[remote A:P]`, in
    // either order (2.4 writes the status first, 2.2 the client first).
    let mut prog = None;
    for _ in 0..3 {
        if prog.is_none() && e.get(at) == Some(&b'(') {
            let n = digit_run(e, at + 1);
            if n > 0 && e.get(at + 1 + n) == Some(&b')') {
                if let Some(colon) = memmem::find(&e[at..end.min(at + 96)], b": ") {
                    f.push(("errno", at + 1..at + 1 + n));
                    prog = Some(at..at + colon);
                    at = skip_spaces(e, at + colon + 2);
                    continue;
                }
            }
        }
        let mut found = false;
        for (name, field) in [(&b"client "[..], "client"), (b"remote ", "remote")] {
            if let Some((v, next)) = bracket(e, at, name) {
                f.push((field, v));
                at = next;
                found = true;
            }
        }
        if !found {
            break;
        }
    }
    // `, referer: …` closes the entry (visitor text).
    static REFERER: std::sync::OnceLock<memmem::FinderRev<'static>> = std::sync::OnceLock::new();
    let referer = REFERER.get_or_init(|| memmem::FinderRev::new(b", referer: "));
    let at = at.min(end);
    let msg_end = match referer.rfind(&e[at..end]) {
        Some(i) => {
            f.push(("referrer", at + i + 11..end));
            at + i
        }
        None => end,
    };
    Some(Head {
        stamp,
        stamp_raw,
        msg: at..msg_end,
        prog,
        tail: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Kernel: syslog, journalctl, ISO syslog, dmesg, dmesg -T

/// `Mmm dd HH:MM:SS` (day space- or zero-padded).
fn syslog_stamp(e: &[u8]) -> Option<(Civil, usize)> {
    if e.len() < 16 || e[3] != b' ' || e[6] != b' ' {
        return None;
    }
    let mo = month(e)?;
    let d = padded(&e[4..6])? as u8;
    let (h, mi, s) = hms(e, 7)?;
    let civil = Civil {
        y: 2000,
        mo,
        d,
        h,
        mi,
        s,
        micros: 0,
    };
    Some((civil, 15))
}

/// `M월 dd HH:MM:SS` / `M月 dd HH:MM:SS`: syslog's `%b %d` as journalctl and rsyslog write it
/// under a Korean, Japanese or Chinese locale (the month a number with its CJK suffix).
/// Leading spaces (a pasted or right-aligned line) are part of the stamp.
fn cjk_month_stamp(e: &[u8]) -> Option<(Civil, usize)> {
    const SUFFIXES: [&[u8]; 2] = ["월".as_bytes(), "月".as_bytes()];
    let start = skip_spaces(e, 0);
    let n = digit_run(e, start);
    if !(1..=2).contains(&n) {
        return None;
    }
    let mo = padded(&e[start..start + n])? as u8;
    let after = start + n;
    let suffix = SUFFIXES.iter().find(|s| e[after..].starts_with(s))?;
    if e.get(after + suffix.len()) != Some(&b' ') {
        return None;
    }
    let day_at = skip_spaces(e, after + suffix.len());
    let dn = digit_run(e, day_at);
    if !(1..=2).contains(&dn) || e.get(day_at + dn) != Some(&b' ') {
        return None;
    }
    let d = padded(&e[day_at..day_at + dn])? as u8;
    let time_at = skip_spaces(e, day_at + dn);
    let (h, mi, s) = hms(e, time_at)?;
    let civil = Civil {
        y: 2000,
        mo,
        d,
        h,
        mi,
        s,
        micros: 0,
    };
    (1..=12).contains(&mo).then_some((civil, time_at + 8))
}

/// `[Www Mmm dd HH:MM:SS YYYY]` (dmesg -T).
fn dmesg_t_stamp(e: &[u8]) -> Option<(Civil, usize)> {
    if e.len() < 26 || e[0] != b'[' || e[4] != b' ' || e[8] != b' ' || e[25] != b']' {
        return None;
    }
    let (h, mi, s) = hms(e, 12)?;
    Some((
        Civil {
            y: d4(e, 21)?,
            mo: month(&e[5..8])?,
            d: padded(&e[9..11])? as u8,
            h,
            mi,
            s,
            micros: 0,
        },
        26,
    ))
}

/// `[  123.456789]` / `[  +0.000082]` (uptime or relative): its length.
fn uptime(e: &[u8], at: usize, f: &mut Fields) -> Option<usize> {
    if e.get(at) != Some(&b'[') {
        return None;
    }
    let close = memchr::memchr(b']', &e[at..e.len().min(at + 24)])? + at;
    let inner = &e[at + 1..close];
    let t = inner.iter().position(|&c| c != b' ')?;
    let v = &inner[t..];
    let v = v.strip_prefix(b"+").unwrap_or(v);
    if v.is_empty() || !v.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return None;
    }
    f.push(("uptime", at + 1 + t..close));
    let mut n = close + 1 - at;
    // Caller id `[    C1]` / `[  T123]`.
    if e.get(at + n) == Some(&b'[') {
        if let Some(c) = memchr::memchr(b']', &e[at + n..e.len().min(at + n + 16)]) {
            let inner = &e[at + n + 1..at + n + c];
            let t = inner.iter().position(|&c| c != b' ').unwrap_or(inner.len());
            let id = &inner[t..];
            if id.len() >= 2
                && matches!(id[0], b'C' | b'T')
                && id[1..].iter().all(u8::is_ascii_digit)
            {
                n += c + 1;
            }
        }
    }
    Some(n)
}

/// The starts of the kernel messages the rules know, seen without a stamp.
fn bare_kernel_message(e: &[u8]) -> bool {
    const STARTS: [&[u8]; 8] = [
        b"TCP: ",
        b"nf_conntrack: ",
        b"ip_conntrack: ",
        b"Out of memory: ",
        b"Memory cgroup out of memory: ",
        b"oom-kill:",
        b"oom_reaper: ",
        b"Killed process ",
    ];
    STARTS.iter().any(|p| e.starts_with(p))
        || memchr::memmem::find(&e[..e.len().min(80)], b" invoked oom-killer: ").is_some()
}

fn kernel(e: &[u8], f: &mut Fields) -> Option<Head> {
    let end = trim_end(e, e.len());
    // Raw dmesg or dmesg --human relative stamps: `[ 123.456] msg`.
    if let Some(n) = uptime(e, 0, f) {
        let msg = skip_spaces(e, n);
        return Some(Head {
            stamp: Stamp::None,
            stamp_raw: 0..0,
            msg: msg..end.max(msg),
            prog: None,
            tail: None,
        });
    }
    // dmesg -T: `[Thu Sep 29 15:24:30 2016] msg`
    if let Some((civil, n)) = dmesg_t_stamp(e) {
        let msg = skip_spaces(e, n);
        return Some(Head {
            stamp: Stamp::Local(civil),
            stamp_raw: 0..n,
            msg: msg..end.max(msg),
            prog: None,
            tail: None,
        });
    }
    // syslog / journalctl short, or ISO syslog; then `host prog[pid]: msg`.
    let (stamp, raw, at) = if let Some((civil, n)) = syslog_stamp(e).or_else(|| cjk_month_stamp(e))
    {
        (Stamp::NoYear(civil), 0..n, n)
    } else if let Some((stamp, n)) = iso8601(e) {
        (stamp, 0..n, n)
    } else if e.starts_with(b"kernel: ") {
        (Stamp::None, 0..0, 0)
    } else if bare_kernel_message(e) {
        // A kernel message pasted without any stamp (`dmesg` copied by hand).
        return Some(Head {
            stamp: Stamp::None,
            stamp_raw: 0..0,
            msg: 0..end,
            prog: None,
            tail: None,
        });
    } else {
        return None;
    };
    let mut at = skip_spaces(e, at);
    if at >= end {
        return None;
    }
    if e[at] == b':' {
        // `STAMP: message`: a journal excerpt pasted without host and program.
        let msg = skip_spaces(e, at + 1);
        return Some(Head {
            stamp,
            stamp_raw: raw,
            msg: msg..end.max(msg),
            prog: None,
            tail: None,
        });
    }
    if !e[at..].starts_with(b"kernel:") {
        // The host name (absent in a few syslog flavours that start at the program).
        let sp = memchr::memchr(b' ', &e[at..end])? + at;
        f.push(("hostname", at..sp));
        at = skip_spaces(e, sp);
    }
    // Program: up to `:` or `[`.
    if at >= end {
        return None;
    }
    let pend = e[at..end]
        .iter()
        .position(|&c| c == b':' || c == b'[' || c == b' ')
        .map(|i| at + i)?;
    if pend == at {
        return None;
    }
    let prog = at..pend;
    f.push(("program", prog.clone()));
    let mut p = pend;
    if e.get(p) == Some(&b'[') {
        let c = memchr::memchr(b']', e.get(p..end)?)? + p;
        f.push(("program_pid", p + 1..c));
        p = c + 1;
    }
    if e.get(p) != Some(&b':') {
        return None;
    }
    let mut msg = skip_spaces(e, p + 1);
    let is_kernel = &e[prog.clone()] == b"kernel";
    if is_kernel {
        if let Some(n) = uptime(e, msg, f) {
            msg = skip_spaces(e, msg + n);
        }
    }
    Some(Head {
        stamp,
        stamp_raw: raw,
        msg: msg..end.max(msg),
        prog: (!is_kernel).then_some(prog),
        tail: None,
    })
}

/// Whether the entry starts like a header of `source` (for format detection).
pub(crate) fn looks_like(source: LogSource, line: &[u8]) -> bool {
    let mut f = Fields::new();
    match source {
        LogSource::NginxAccess => super::access::looks_like_access(line),
        _ => head(source, line, &mut f).is_some(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn field<'a>(e: &'a [u8], f: &Fields, name: &str) -> Option<&'a str> {
        f.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| std::str::from_utf8(&e[r.clone()]).unwrap())
    }

    #[test]
    fn the_client_tail_is_found_where_a_substring_search_finds_it() {
        let cases: [&[u8]; 8] = [
            b"connect() failed, client: 1.2.3.4, server: s",
            b"a, b, c,, client:, client: x",
            b", client: ",
            b", client:",
            b"no tail at all",
            b"",
            b",,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,, client: x",
            b"\xff, client: \xfe, client: y",
        ];
        for hay in cases {
            assert_eq!(
                find_client(hay),
                memmem::find(hay, b", client: "),
                "{}",
                String::from_utf8_lossy(hay)
            );
        }
    }

    #[test]
    fn the_nginx_stamp_shape_holds_exactly_when_the_stamp_parses() {
        // The header only checks the shape; the value is read when the time is needed: both must
        // agree on every line, or an entry would be Bad for one and dated for the other.
        let good = b"2026/11/24 07:45:17 [error] 1#1: x".to_vec();
        let mut lines = vec![good.clone(), good[..21].to_vec(), good[..20].to_vec()];
        for at in 0..22 {
            for b in 0..=255u8 {
                let mut l = good.clone();
                l[at] = b;
                lines.push(l);
            }
        }
        for l in &lines {
            assert_eq!(
                nginx_stamp_shape(l),
                nginx_stamp(l).is_some(),
                "{}",
                String::from_utf8_lossy(l)
            );
        }
        let mut f = Fields::new();
        let h = head(LogSource::NginxError, &good, &mut f).unwrap();
        assert_eq!((h.stamp, h.stamp_raw), (Stamp::NginxLocal, 0..19));
    }

    #[test]
    fn the_fixed_array_fpm_stamp_reads_what_the_field_by_field_reader_read() {
        // The reader as first written, field by field through the shared helpers.
        fn reference(e: &[u8]) -> Option<(Civil, usize)> {
            if e.first() != Some(&b'[') || e.get(3) != Some(&b'-') || e.get(7) != Some(&b'-') {
                return None;
            }
            if e.get(12) != Some(&b' ') {
                return None;
            }
            let (h, mi, s) = hms(e, 13)?;
            let (micros, used) = fraction(e, 21);
            let c = Civil {
                y: d4(e, 8)?,
                mo: month(&e[4..7])?,
                d: d2(e, 1)?,
                h,
                mi,
                s,
                micros,
            };
            Some((c, 21 + used))
        }
        let good = b"[23-Nov-2026 08:00:59.123456] WARNING: [pool www] x".to_vec();
        let every_byte: Vec<u8> = (0..=255u8).collect();
        let lines = crate::logs::mutants(&good, 0..30, &every_byte);
        let mut read = 0;
        for l in &lines {
            let (got, want) = (fpm_civil(l), reference(l));
            assert_eq!(
                got.map(|(c, n)| (c.y, c.mo, c.d, c.h, c.mi, c.s, c.micros, n)),
                want.map(|(c, n)| (c.y, c.mo, c.d, c.h, c.mi, c.s, c.micros, n)),
                "{}",
                String::from_utf8_lossy(l)
            );
            read += usize::from(want.is_some());
        }
        assert!(read > 1_000, "{read}");
    }

    #[test]
    fn apache_error_headers_24_and_22() {
        let e = b"[Thu Dec 03 09:15:37.595821 2026] [proxy_fcgi:error] [pid 22004:tid 22006] (70007)The timeout specified has expired: [client 127.0.0.1:59150] AH01075: Error dispatching request to :18931: (polling), referer: http://x/y";
        let mut f = Fields::new();
        let h = head(LogSource::ApacheError, e, &mut f).unwrap();
        assert_eq!(
            &e[h.msg.clone()],
            b"AH01075: Error dispatching request to :18931: (polling)"
        );
        assert_eq!(
            &e[h.prog.clone().unwrap()],
            b"(70007)The timeout specified has expired"
        );
        assert_eq!(field(e, &f, "module"), Some("proxy_fcgi"));
        assert_eq!(field(e, &f, "level"), Some("error"));
        assert_eq!(field(e, &f, "pid"), Some("22004"));
        assert_eq!(field(e, &f, "tid"), Some("22006"));
        assert_eq!(field(e, &f, "errno"), Some("70007"));
        assert_eq!(field(e, &f, "client"), Some("127.0.0.1:59150"));
        assert_eq!(field(e, &f, "referrer"), Some("http://x/y"));
        match h.stamp {
            Stamp::Local(c) => {
                assert_eq!((c.y, c.mo, c.d, c.h, c.micros), (2026, 12, 3, 9, 595821))
            }
            other => panic!("{other:?}"),
        }
        let e = b"[Wed Mar 12 10:01:02 2014] [error] [client 10.0.0.1] (70007)The timeout specified has expired: proxy: error reading status line from remote server 127.0.0.1:8080";
        let h = head(LogSource::ApacheError, e, &mut f).unwrap();
        assert!(e[h.msg.clone()].starts_with(b"proxy: error reading"));
        assert_eq!(field(e, &f, "client"), Some("10.0.0.1"));
        assert_eq!(field(e, &f, "errno"), Some("70007"));
        assert!(starts_entry(LogSource::ApacheError, e));
        // A container log without the stamp, 2.4 form only.
        let e = b"[mpm_prefork:error] [pid 1] AH00161: server reached MaxRequestWorkers setting";
        let h = head(LogSource::ApacheError, e, &mut f).unwrap();
        assert_eq!(h.stamp, Stamp::None);
        assert!(e[h.msg.clone()].starts_with(b"AH00161"));
        assert!(head(LogSource::ApacheError, b"[error] no pid", &mut f).is_none());
        assert!(head(
            LogSource::ApacheError,
            b"[Thu Dec 03 09:15:37 2026] no level",
            &mut f
        )
        .is_none());
    }

    #[test]
    fn digit_runs_are_counted_as_byte_by_byte() {
        fn plain(e: &[u8], at: usize) -> usize {
            e.iter().skip(at).take_while(|b| b.is_ascii_digit()).count()
        }
        // Every byte value planted at every offset of a run of digits, read from every start
        // and over every cut.
        let digits = b"0123456789012345678";
        for value in 0..=255u8 {
            for pos in 0..digits.len() {
                let mut e = digits.to_vec();
                e[pos] = value;
                for end in 0..=e.len() {
                    for at in 0..=end + 1 {
                        assert_eq!(
                            digit_run(&e[..end], at),
                            plain(&e[..end], at),
                            "{e:?} {at} {end}"
                        );
                    }
                }
            }
        }
    }

    /// `nginx_tail` as first written: every later key searched again for every field.
    fn tail_by_searching_each_time(e: &[u8], at: usize, end: usize, f: &mut Fields) {
        let t = &e[..end];
        let Some(client) = t.get(at..).and_then(|r| r.strip_prefix(b"client: ")) else {
            return;
        };
        let cstart = at + 8;
        let cend = memmem::find(client, b", server: ").map_or(end, |i| cstart + i);
        f.push(("client", cstart..cend));
        if cend >= end {
            return;
        }
        let sstart = cend + 10;
        let keys: [(&[u8], &str); 5] = [
            (b", request: \"", "request"),
            (b", subrequest: \"", "subrequest"),
            (b", upstream: \"", "upstream"),
            (b", host: \"", "host"),
            (b", referrer: \"", "referrer"),
        ];
        let next = |from: usize, k: usize| {
            (k..keys.len())
                .filter_map(|j| memmem::find(&t[from..], keys[j].0).map(|i| (from + i, j)))
                .min_by_key(|&(i, _)| i)
        };
        let first = next(sstart, 0);
        f.push(("server", sstart..first.map_or(end, |(i, _)| i).max(sstart)));
        let Some((mut i, mut k)) = first else { return };
        loop {
            let vstart = i + keys[k].0.len();
            let n = next(vstart, k + 1);
            let vend = n.map_or(end, |(n, _)| n);
            let q = if vend > vstart && t[vend - 1] == b'"' {
                vend - 1
            } else {
                vend
            };
            f.push((keys[k].1, vstart..q.max(vstart)));
            let Some((n, nk)) = n else { break };
            (i, k) = (n, nk);
        }
    }

    #[test]
    fn the_tail_is_read_as_searching_every_key_for_every_field_would() {
        // Tails with fields in and out of order, missing, and with other keys' text inside
        // values (a visitor's request or referrer): every cut, the same fields either way.
        let tails: [&[u8]; 6] = [
            br#"client: 1.2.3.4, server: a, request: "GET /, host: "x" HTTP/1.1", upstream: "fastcgi://u", host: "h", referrer: "r""#,
            br#"client: ::1, server: s, host: "h, request: "y"", request: "GET / HTTP/1.1", referrer: "https://x/, upstream: "z"""#,
            br#"client: 10.0.0.1, server: , subrequest: "/a", request: "POST /x, subrequest: "q" HTTP/2.0", upstream: "http://127.0.0.1:8080/", host: "e""#,
            br#"client: 5.6.7.8, server: example.com, referrer: "r", host: "h", upstream: "u", request: "GET""#,
            br#"client: 9.9.9.9, server: x, request: "GET /?a=, referrer: "1", upstream: "2", host: "3"", host: "real""#,
            br#"client: 1.1.1.1"#,
        ];
        for tail in tails {
            for end in 0..=tail.len() {
                let (mut ours, mut theirs) = (Fields::new(), Fields::new());
                nginx_tail(tail, 0, end, &mut ours);
                tail_by_searching_each_time(tail, 0, end, &mut theirs);
                assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&tail[..end]));
            }
        }
    }

    #[test]
    fn nginx_error_header_and_tail() {
        let e = br#"2026/11/24 07:45:17 [crit] 23673#23673: *1 connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: example.com, request: "GET /index.php HTTP/1.1", upstream: "fastcgi://unix:/run/php/php8.2-fpm.sock:", host: "127.0.0.1:18080", referrer: "https://x/, host: \"y\""
"#;
        let mut f = Fields::new();
        let h = head(LogSource::NginxError, e, &mut f).unwrap();
        let (a, b) = h.tail.unwrap();
        nginx_tail(e, a, b, &mut f);
        assert!(e[h.msg.clone()].starts_with(b"connect() to unix:"));
        assert!(e[h.msg.clone()].ends_with(b"while connecting to upstream"));
        assert_eq!(field(e, &f, "level"), Some("crit"));
        assert_eq!(field(e, &f, "pid"), Some("23673"));
        assert_eq!(field(e, &f, "connection"), Some("1"));
        assert_eq!(field(e, &f, "client"), Some("127.0.0.1"));
        assert_eq!(field(e, &f, "server"), Some("example.com"));
        assert_eq!(field(e, &f, "request"), Some("GET /index.php HTTP/1.1"));
        assert_eq!(
            field(e, &f, "upstream"),
            Some("fastcgi://unix:/run/php/php8.2-fpm.sock:")
        );
        assert_eq!(field(e, &f, "host"), Some("127.0.0.1:18080"));
        assert_eq!(field(e, &f, "referrer"), Some(r#"https://x/, host: \"y\""#));
        // No tail, no connection.
        let e =
            b"2026/11/24 07:48:33 [crit] 25110#25110: accept4() failed (24: Too many open files)";
        let h = head(LogSource::NginxError, e, &mut f).unwrap();
        assert_eq!(&e[h.msg], b"accept4() failed (24: Too many open files)");
    }

    #[test]
    fn the_header_read_for_matching_is_the_full_header() {
        // `head_for_match` skips the fields; the stamp, message and tail must be `head`'s, on
        // every cut of a few nginx lines (and of stamp-less ones).
        let lines: [&[u8]; 4] = [
            br#"2026/11/24 07:45:17 [crit] 23673#23673: *1 connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: example.com"#,
            b"2026/11/24 07:48:33 [crit] 25110#25110: accept4() failed (24: Too many open files)",
            b"[error] 1046#1046: *7 upstream timed out (110: Connection timed out), client: ::1",
            b"2026/11/24 07:45:17 [emerg] bind() to 0.0.0.0:80 failed (98: Address already in use)",
        ];
        let (mut full, mut none) = (Fields::new(), Fields::new());
        for line in lines {
            for n in 0..=line.len() {
                let e = &line[..n];
                let h = head(LogSource::NginxError, e, &mut full);
                assert_eq!(head_for_match(LogSource::NginxError, e, &mut none), h);
                assert!(none.is_empty());
                if n == line.len() {
                    assert!(h.is_some() && !full.is_empty());
                }
            }
        }
    }

    #[test]
    fn headers_followed_only_by_spaces_do_not_panic() {
        // Regressions found by the property tests.
        let mut f = Fields::new();
        let h = head(
            LogSource::NginxError,
            b"2026/11/24 07:45:17 [error] 1#1: *1   ",
            &mut f,
        )
        .unwrap();
        assert!(h.msg.is_empty());
        assert!(head(LogSource::Kernel, b"Nov 24 07:45:17    ", &mut f).is_none());
        assert!(head(LogSource::Kernel, b"Nov 24 07:45:17 host prog[", &mut f).is_none());
    }

    #[test]
    fn mysql_stamps() {
        let mut f = Fields::new();
        for (line, msg) in [
            (
                "2026-11-24  7:47:02 0 [Note] mariadbd: ready for connections.",
                "mariadbd: ready for connections.",
            ),
            (
                "2019-01-03T08:50:04.634875Z 113 [Note] [MY-010926] [Server] Access denied",
                "Access denied",
            ),
            ("130324  0:04:00 [Warning] Access denied", "Access denied"),
            (
                "261124  7:48:19 [ERROR] mariadbd got signal 11 ;",
                "mariadbd got signal 11 ;",
            ),
            (
                "2025-08-14T02:38:35Z UTC - mysqld got signal 11 ;",
                "mysqld got signal 11 ;",
            ),
            (
                "22:22:46 UTC - mysqld got signal 11 ;",
                "mysqld got signal 11 ;",
            ),
            (
                "2017-08-22 8:22:53 140295123512064 [Warning] mysqld: x",
                "mysqld: x",
            ),
        ] {
            let h = head(LogSource::MysqlError, line.as_bytes(), &mut f)
                .unwrap_or_else(|| panic!("{line}"));
            assert_eq!(&line[h.msg], msg, "{line}");
        }
        assert!(head(
            LogSource::MysqlError,
            b"Sorry, we probably made a mistake",
            &mut f
        )
        .is_none());
    }

    #[test]
    fn cjk_month_stamps_are_read_and_others_refused() {
        let (c, n) = cjk_month_stamp(" 4월 25 15:08:38: x".as_bytes()).unwrap();
        assert_eq!((c.mo, c.d, c.h, c.mi, c.s), (4, 25, 15, 8, 38));
        assert_eq!(n, " 4월 25 15:08:38".len());
        for bad in [
            "13월 25 15:08:38 x",
            "4월25 15:08:38 x",
            "4x 25 15:08:38 x",
            "4월 25 1:08:38 x",
            "월",
        ] {
            assert!(cjk_month_stamp(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn kernel_forms() {
        let mut f = Fields::new();
        for (line, msg, prog) in [
            (
                "Mar  2 17:35:10 server1 kernel: [2858609.598568] Killed process 1",
                "Killed process 1",
                None,
            ),
            (
                "Aug 08 13:25:07 localhost kernel: Out of memory",
                "Out of memory",
                None,
            ),
            ("[  601.749973][    C1] TCP: x", "TCP: x", None),
            ("[Thu Sep 29 15:24:30 2016] TCP: y", "TCP: y", None),
            (
                "2026-02-08T00:40:07.136582+00:00 web systemd[1]: a.service: b",
                "a.service: b",
                Some("systemd"),
            ),
            ("Feb 29 19:54:23 kernel: TCP: z", "TCP: z", None),
            // journalctl under ko_KR / ja_JP: the month is a number with its CJK suffix.
            (
                " 4월 25 15:08:38 ip-10 kernel: php-fpm invoked oom-killer: x",
                "php-fpm invoked oom-killer: x",
                None,
            ),
            ("12月  3 01:02:03 web php-fpm[9]: y", "y", Some("php-fpm")),
            // A journal excerpt pasted without host and program.
            (
                " 4월 25 15:08:38: Task in /docker/x killed",
                "Task in /docker/x killed",
                None,
            ),
        ] {
            let h = head(LogSource::Kernel, line.as_bytes(), &mut f)
                .unwrap_or_else(|| panic!("{line}"));
            assert_eq!(&line[h.msg.clone()], msg, "{line}");
            assert_eq!(h.prog.map(|p| &line[p]), prog, "{line}");
        }
    }

    #[test]
    fn fpm_and_php_headers() {
        let mut f = Fields::new();
        let l = b"[24-Nov-2026 07:46:04] WARNING: [pool www] server reached";
        let h = head(LogSource::PhpFpm, l, &mut f).unwrap();
        assert_eq!(&l[h.msg], b"[pool www] server reached");
        assert!(head(LogSource::Php, l, &mut f).is_none());
        let l = b"[14-Feb-2017 13:07:16 UTC] PHP Fatal error: x";
        let h = head(LogSource::Php, l, &mut f).unwrap();
        assert_eq!(&l[h.msg], b"PHP Fatal error: x");
        assert!(head(LogSource::PhpFpm, l, &mut f).is_none());
        let l = b"[24-Nov-2026 07:45:46]  [pool www] pid 1\nscript_filename = /x";
        assert!(head(LogSource::PhpFpmSlow, l, &mut f).is_some());
        assert!(head(LogSource::PhpFpm, l, &mut f).is_none());
        assert!(starts_entry(LogSource::PhpFpmSlow, l));
        assert!(!starts_entry(
            LogSource::PhpFpmSlow,
            b"[0x00007f0a3c813f20] x() /a.php:1"
        ));
    }
}
