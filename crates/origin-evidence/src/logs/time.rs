//! Timestamp pieces of the log formats, parsed by hand from bytes (no allocation, no regex):
//! civil date-times with their zone meaning, converted to UTC [`jiff::Timestamp`]s.
//!
//! Each format's meaning: nginx error, PHP-FPM and MariaDB logs carry local time with no zone
//! (read in the system zone, explicitly passed in); the nginx access log carries its offset;
//! MySQL 5.7/8 stamps UTC with `Z`; PHP's error log names its zone; classic syslog has no year.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A civil date-time as written in a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub y: i32,
    pub mo: u8,
    pub d: u8,
    pub h: u8,
    pub mi: u8,
    pub s: u8,
    pub micros: u32,
}

/// What zone a parsed stamp is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stamp {
    /// No time in the line (or only an uptime).
    None,
    /// Local time of the host, no zone written.
    Local(Civil),
    /// Local time of the host in nginx's `YYYY/MM/DD HH:MM:SS` at the entry's start, whose shape
    /// is checked: its value is read only when the time is needed (and the stamp cache has not
    /// seen these bytes), not for every line.
    NginxLocal,
    /// A fixed offset from UTC, in seconds.
    Offset(Civil, i32),
    /// Local time without a year (classic syslog): the year is inferred.
    NoYear(Civil),
    /// A named zone (PHP error log): the bytes range of the name in the entry.
    Named(Civil, usize, usize),
}

pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

impl Civil {
    pub fn valid(&self) -> bool {
        (1970..=9999).contains(&self.y)
            && (1..=12).contains(&self.mo)
            && self.d >= 1
            && self.d <= days_in_month(self.y, self.mo)
            && self.h < 24
            && self.mi < 60
            && self.s < 61
            && self.micros < 1_000_000
    }

    /// Seconds since the epoch, reading the civil time as UTC.
    pub fn utc_seconds(&self) -> i64 {
        days_from_civil(self.y.into(), self.mo.into(), self.d.into()) * 86_400
            + i64::from(self.h) * 3600
            + i64::from(self.mi) * 60
            + i64::from(self.s.min(59))
    }

    pub fn with_offset(&self, offset: i32) -> Option<Timestamp> {
        if !self.valid() {
            return None;
        }
        let secs = self.utc_seconds() - i64::from(offset);
        Timestamp::new(secs, (self.micros * 1000) as i32).ok()
    }

    pub fn in_zone(&self, tz: &TimeZone) -> Option<Timestamp> {
        if !self.valid() {
            return None;
        }
        let dt = jiff::civil::DateTime::new(
            self.y as i16,
            self.mo as i8,
            self.d as i8,
            self.h as i8,
            self.mi as i8,
            self.s.min(59) as i8,
            (self.micros * 1000) as i32,
        )
        .ok()?;
        tz.to_ambiguous_timestamp(dt).compatible().ok()
    }
}

/// `Jan` .. `Dec` (case-sensitive, as every log writes them).
pub(crate) fn month(b: &[u8]) -> Option<u8> {
    // The three letters as one integer: twelve integer compares, not twelve slice compares.
    const fn key(m: &[u8; 3]) -> u32 {
        u32::from_le_bytes([m[0], m[1], m[2], 0])
    }
    const MONTHS: [u32; 12] = [
        key(b"Jan"),
        key(b"Feb"),
        key(b"Mar"),
        key(b"Apr"),
        key(b"May"),
        key(b"Jun"),
        key(b"Jul"),
        key(b"Aug"),
        key(b"Sep"),
        key(b"Oct"),
        key(b"Nov"),
        key(b"Dec"),
    ];
    let m = b.first_chunk::<3>()?;
    let k = key(m);
    MONTHS.iter().position(|&x| x == k).map(|i| i as u8 + 1)
}

/// Exactly the digits of `b` (non-empty, at most 9).
#[inline]
pub(crate) fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    let mut n = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

/// Digits with leading spaces allowed (space-padded fields: MariaDB hour, syslog day).
pub(crate) fn padded(b: &[u8]) -> Option<u32> {
    let start = b.iter().position(|&c| c != b' ')?;
    digits(&b[start..])
}

#[inline]
pub(crate) fn d2(b: &[u8], at: usize) -> Option<u8> {
    let x = *b.get(at)?;
    let y = *b.get(at + 1)?;
    if x.is_ascii_digit() && y.is_ascii_digit() {
        Some((x - b'0') * 10 + (y - b'0'))
    } else {
        None
    }
}

pub(crate) fn d4(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from(d2(b, at)?) * 100 + i32::from(d2(b, at + 2)?))
}

/// `HH:MM:SS` at `at`.
pub(crate) fn hms(b: &[u8], at: usize) -> Option<(u8, u8, u8)> {
    if b.get(at + 2) != Some(&b':') || b.get(at + 5) != Some(&b':') {
        return None;
    }
    Some((d2(b, at)?, d2(b, at + 3)?, d2(b, at + 6)?))
}

/// Optional `.ffffff` at `at`: (micros, bytes used).
pub(crate) fn fraction(b: &[u8], at: usize) -> (u32, usize) {
    if b.get(at) != Some(&b'.') {
        return (0, 0);
    }
    let mut n = 0u32;
    let mut used = 1;
    let mut scale = 100_000u32;
    while let Some(&c) = b.get(at + used) {
        if !c.is_ascii_digit() {
            break;
        }
        if scale > 0 {
            n += u32::from(c - b'0') * scale;
            scale /= 10;
        }
        used += 1;
    }
    (n, used)
}

/// An ISO 8601 stamp `YYYY-MM-DDTHH:MM:SS[.f](Z|+HH:MM|+HHMM)` at the start of `b`.
/// Returns the stamp and its length.
pub(crate) fn iso8601(b: &[u8]) -> Option<(Stamp, usize)> {
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || b.get(10) != Some(&b'T') {
        return None;
    }
    let (h, mi, s) = hms(b, 11)?;
    let (micros, used) = fraction(b, 19);
    let mut at = 19 + used;
    let civil = Civil {
        y: d4(b, 0)?,
        mo: d2(b, 5)?,
        d: d2(b, 8)?,
        h,
        mi,
        s,
        micros,
    };
    let offset = match b.get(at)? {
        b'Z' => {
            at += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let oh = i32::from(d2(b, at + 1)?);
            let (om, len) = if b.get(at + 3) == Some(&b':') {
                (i32::from(d2(b, at + 4)?), 6)
            } else {
                (i32::from(d2(b, at + 3)?), 5)
            };
            at += len;
            let off = oh * 3600 + om * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return Some((Stamp::Local(civil), at)),
    };
    Some((Stamp::Offset(civil, offset), at))
}

/// nginx `$time_local`: `24/Nov/2026:07:45:17 +0000` (exactly 26 bytes).
#[inline]
pub(crate) fn nginx_time_local(b: &[u8]) -> Option<Timestamp> {
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return None;
    }
    let (h, mi, s) = hms(b, 12)?;
    let civil = Civil {
        y: d4(b, 7)?,
        mo: month(&b[3..6])?,
        d: d2(b, 0)?,
        h,
        mi,
        s,
        micros: 0,
    };
    let oh = i32::from(d2(b, 22)?);
    let om = i32::from(d2(b, 24)?);
    let off = oh * 3600 + om * 60;
    let off = match b[21] {
        b'+' => off,
        b'-' => -off,
        _ => return None,
    };
    civil.with_offset(off)
}

/// A one-entry cache from a stamp's raw bytes to its timestamp: log lines of the same second
/// repeat their stamp, and converting local time through a zone is the costly part.
#[derive(Debug, Default)]
pub(crate) struct StampCache {
    key: Vec<u8>,
    value: Option<Timestamp>,
    /// nginx stamps: the last minute (`YYYY/MM/DD HH:MM`) and the time of its first second.
    minute: [u8; 16],
    minute_start: Option<Option<Timestamp>>,
}

impl StampCache {
    pub fn get_or(
        &mut self,
        raw: &[u8],
        f: impl FnOnce() -> Option<Timestamp>,
    ) -> Option<Timestamp> {
        if !self.key.is_empty() && self.key == raw {
            return self.value;
        }
        self.key.clear();
        self.key.extend_from_slice(raw);
        self.value = f();
        self.value
    }

    /// The time of nginx's `YYYY/MM/DD HH:MM:SS` (`raw`, its shape checked) in `tz`. A sparse
    /// log changes second on almost every line, but not minute: the minute's first second is
    /// converted once and the seconds added to it (zone offsets change on whole minutes), the
    /// same as [`Civil::in_zone`] of each stamp.
    pub fn nginx_local(&mut self, raw: &[u8], tz: &TimeZone) -> Option<Timestamp> {
        if !self.key.is_empty() && self.key == raw {
            return self.value;
        }
        let value = match (raw.first_chunk::<16>(), d2(raw, 17)) {
            (Some(minute), Some(s)) if raw.len() == 19 && raw[16] == b':' => {
                let start = match self.minute_start {
                    Some(start) if self.minute == *minute => start,
                    _ => {
                        let start = super::formats::nginx_civil(raw).and_then(|c| {
                            Civil {
                                s: 0,
                                micros: 0,
                                ..c
                            }
                            .in_zone(tz)
                        });
                        self.minute = *minute;
                        self.minute_start = Some(start);
                        start
                    }
                };
                // Seconds 0..=60 are valid (a leap second reads as :59), as in `Civil::valid`.
                if s < 61 {
                    start.and_then(|t| {
                        t.checked_add(jiff::SignedDuration::from_secs(i64::from(s.min(59))))
                            .ok()
                    })
                } else {
                    None
                }
            }
            _ => None,
        };
        self.key.clear();
        self.key.extend_from_slice(raw);
        self.value = value;
        value
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nginx_stamps_of_one_minute_read_as_each_on_its_own() {
        // Every second (and the invalid 60..=99) of the hours around 2026's offset changes, in
        // zones that change by an hour, by half an hour, and not at all; read in order through
        // one cache (the minute cache at work), then at random through another: each stamp's
        // time is its own conversion's.
        let zones = [
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "UTC",
        ];
        let days = [(3, 8), (3, 29), (4, 5), (10, 4), (10, 25), (11, 1)];
        let mut stamps: Vec<String> = Vec::new();
        for (mo, d) in days {
            for h in 0..4 {
                for mi in 0..60 {
                    for s in (0..62).chain([99]) {
                        stamps.push(format!("2026/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02}"));
                    }
                }
            }
        }
        stamps.push("2026/02/30 10:00:00".into());
        stamps.push("2026/02/30 10:00:01".into());
        stamps.push("2026/12/31 24:00:00".into());
        let mut shuffled = stamps.clone();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for zone in zones {
            let tz = TimeZone::get(zone).unwrap();
            for order in [&stamps, &shuffled] {
                let mut cache = StampCache::default();
                for raw in order.iter() {
                    let own = crate::logs::formats::nginx_civil(raw.as_bytes())
                        .and_then(|c| c.in_zone(&tz));
                    assert_eq!(cache.nginx_local(raw.as_bytes(), &tz), own, "{zone} {raw}");
                }
            }
        }
    }

    #[test]
    fn civil_days_match_jiff() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2026, 11, 24), (2100, 3, 1)] {
            let ts = jiff::civil::date(y as i16, m, d)
                .to_zoned_datetime(TimeZone::UTC)
                .unwrap()
                .timestamp();
            assert_eq!(
                days_from_civil(y, m.into(), d.into()) * 86400,
                ts.as_second()
            );
        }
    }

    #[test]
    fn access_time_with_offset() {
        let ts = nginx_time_local(b"24/Nov/2026:07:45:17 +0100").unwrap();
        assert_eq!(ts.to_string(), "2026-11-24T06:45:17Z");
        assert!(nginx_time_local(b"24/Nov/2026:07:45:17 +01").is_none());
        assert!(nginx_time_local(b"31/Feb/2026:07:45:17 +0000").is_none());
        assert!(nginx_time_local(b"24/Foo/2026:07:45:17 +0000").is_none());
    }

    #[test]
    fn iso_forms() {
        let (s, n) = iso8601(b"2019-01-03T08:50:04.634875Z 113 [Note]").unwrap();
        assert_eq!(n, 27);
        let Stamp::Offset(c, 0) = s else { panic!() };
        assert_eq!(
            c.with_offset(0).unwrap().to_string(),
            "2019-01-03T08:50:04.634875Z"
        );
        let (s, _) = iso8601(b"2026-02-08T00:40:07.136582+02:00 host").unwrap();
        let Stamp::Offset(c, off) = s else { panic!() };
        assert_eq!(
            c.with_offset(off).unwrap().to_string(),
            "2026-02-07T22:40:07.136582Z"
        );
        let (s, _) = iso8601(b"2026-11-24T07:45:17+0000 host kernel:").unwrap();
        assert!(matches!(s, Stamp::Offset(_, 0)));
    }

    #[test]
    fn local_time_uses_the_given_zone() {
        let c = Civil {
            y: 2026,
            mo: 7,
            d: 1,
            h: 12,
            mi: 0,
            s: 0,
            micros: 0,
        };
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(c.in_zone(&tz).unwrap().to_string(), "2026-07-01T10:00:00Z");
        assert_eq!(
            c.in_zone(&TimeZone::UTC).unwrap().to_string(),
            "2026-07-01T12:00:00Z"
        );
    }
}
