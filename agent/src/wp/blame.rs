//! Which WordPress plugin (or theme) the errors come from. For every fatal error, memory-limit
//! error, slowlog trace and timed-out request, the first plugin or theme frame on its stack
//! (not only the file that threw) names the component; events are counted per component with
//! their first and last time, the URLs of the 5xx responses they ended (from the access log,
//! at the same second), and whether the component's files changed just before the errors
//! began (an update). Paths are matched in the server's own text only: the part of an nginx
//! line that the visitor wrote (`request: "…"`, `referrer`) is cut off first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cause::CauseId;
use crate::event::{Event, Evidence};

use super::Site;

/// What kind of code a frame points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Plugin,
    MuPlugin,
    Theme,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Plugin => "plugin",
            Kind::MuPlugin => "must-use plugin",
            Kind::Theme => "theme",
        }
    }
}

/// Errors attributed to one plugin or theme.
#[derive(Debug, Clone, PartialEq)]
pub struct Blame {
    pub kind: Kind,
    pub slug: String,
    /// The site whose directory the frames are in, when known.
    pub site: Option<String>,
    pub version: Option<String>,
    /// The plugin's directory (`…/wp-content/plugins/NAME`).
    pub dir: Option<PathBuf>,
    pub fatal: u64,
    pub memory: u64,
    pub slow: u64,
    pub timeouts: u64,
    pub first: Option<jiff::Timestamp>,
    pub last: Option<jiff::Timestamp>,
    /// Request paths of the 5xx responses these errors ended, with counts, most first.
    pub urls: Vec<(String, u64)>,
    /// When its files changed, if that was within a day before the first error.
    pub changed: Option<jiff::Timestamp>,
    /// One event, for the evidence.
    pub sample: (PathBuf, u64),
}

impl Blame {
    pub fn total(&self) -> u64 {
        self.fatal + self.memory + self.slow + self.timeouts
    }

    /// The catalog cause most of its events support.
    pub fn cause(&self) -> CauseId {
        let max = self.fatal.max(self.memory).max(self.slow + self.timeouts);
        if max == self.fatal {
            CauseId::AppFatalError
        } else if max == self.memory {
            CauseId::AppMemoryLimit
        } else {
            CauseId::UpstreamTimeout
        }
    }
}

/// Markers of code directories: each site's own plugin/theme dirs, then the standard names.
fn markers(sites: &[Site]) -> Vec<(String, Kind, Option<usize>)> {
    let mut out = Vec::new();
    for (i, s) in sites.iter().enumerate() {
        let c = s.content_dir.display().to_string();
        out.push((format!("{c}/plugins/"), Kind::Plugin, Some(i)));
        out.push((format!("{c}/mu-plugins/"), Kind::MuPlugin, Some(i)));
        out.push((format!("{c}/themes/"), Kind::Theme, Some(i)));
    }
    out.push(("/wp-content/plugins/".into(), Kind::Plugin, None));
    out.push(("/wp-content/mu-plugins/".into(), Kind::MuPlugin, None));
    out.push(("/wp-content/themes/".into(), Kind::Theme, None));
    out
}

/// The server-written part of an event's text (nginx appends what the visitor sent).
fn server_text(text: &str) -> &str {
    let mut end = text.len();
    for cut in [", client: ", " request: \"", ", referrer: \""] {
        if let Some(at) = text.find(cut) {
            end = end.min(at);
        }
    }
    &text[..end]
}

/// The first plugin or theme frame in an event's text: (kind, slug, site index).
pub fn first_frame(text: &str, sites: &[Site]) -> Option<(Kind, String, Option<usize>)> {
    let text = server_text(text);
    let mut best: Option<(usize, Kind, String, Option<usize>)> = None;
    for (marker, kind, site) in markers(sites) {
        let Some(at) = text.find(&marker) else {
            continue;
        };
        // A path starts at `/` after a space, quote or the line start: not inside a URL.
        let start = text[..at]
            .rfind(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '(')
            .map_or(0, |p| p + 1);
        if text[start..].starts_with("http") {
            continue;
        }
        let rest = &text[at + marker.len()..];
        let slug: String = rest
            .chars()
            .take_while(|c| !matches!(c, '/' | ':' | '(' | ')' | '"' | '\'') && !c.is_whitespace())
            .take(100)
            .collect();
        if slug.is_empty() || slug == "." || slug == ".." {
            continue;
        }
        let slug = if kind != Kind::Theme && !rest[slug.len()..].starts_with('/') {
            slug.trim_end_matches(".php").to_string()
        } else {
            slug
        };
        // Earlier in the text wins; at the same place, a site's own (longer) marker.
        let pos = start;
        if best
            .as_ref()
            .is_none_or(|b| pos < b.0 || (pos == b.0 && site.is_some() && b.3.is_none()))
        {
            best = Some((pos, kind, slug, site));
        }
    }
    best.map(|(_, k, s, i)| (k, super::printable(&s, 64), i))
}

fn counts(ev: &Event) -> Option<(u64, u64, u64, u64)> {
    let slowlog = ev.source == crate::event::LogSource::PhpFpmSlow;
    match ev.cause {
        CauseId::AppFatalError => Some((1, 0, 0, 0)),
        CauseId::AppMemoryLimit => Some((0, 1, 0, 0)),
        CauseId::UpstreamTimeout if slowlog => Some((0, 0, 1, 0)),
        CauseId::UpstreamTimeout => Some((0, 0, 0, 1)),
        _ => None,
    }
}

/// The path of a request line (`GET /x?y HTTP/1.1` → `/x`).
fn request_path(request: &str) -> Option<String> {
    let path = request.split_whitespace().nth(1)?;
    let path = path.split('?').next()?;
    Some(super::printable(path, 120))
}

/// Attributes the evidence's application errors to plugins and themes, most errors first.
pub fn attribute(evidence: &Evidence, sites: &[Site]) -> Vec<Blame> {
    // Per component and log: one PHP error reaches up to three logs (nginx's `FastCGI sent in
    // stderr`, the PHP-FPM log, the PHP error log), so each log is counted apart and the log
    // that saw the most stands for the component.
    let mut by: BTreeMap<(Kind, String, Option<usize>, String), Blame> = BTreeMap::new();
    // 5xx responses per second, for the URLs.
    let mut by_second: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for r in &evidence.errors {
        if let (Some(t), Some(path)) = (r.time, request_path(&r.request)) {
            if r.status >= 500 {
                by_second.entry(t.as_second()).or_default().push(path);
            }
        }
    }
    for ev in &evidence.events {
        let Some((fatal, memory, slow, timeouts)) = counts(ev) else {
            continue;
        };
        let frame = first_frame(&ev.text, sites).or_else(|| {
            let (k, v) = ev
                .field("plugin")
                .map(|p| (Kind::Plugin, p))
                .or_else(|| ev.field("theme").map(|t| (Kind::Theme, t)))?;
            Some((k, super::printable(v, 64), None))
        });
        let Some((kind, slug, site)) = frame else {
            continue;
        };
        let b = by
            .entry((kind, slug.clone(), site, format!("{:?}", ev.source)))
            .or_insert_with(|| Blame {
                kind,
                slug: slug.clone(),
                site: site.map(|i| sites[i].name.clone()),
                version: None,
                dir: None,
                fatal: 0,
                memory: 0,
                slow: 0,
                timeouts: 0,
                first: None,
                last: None,
                urls: Vec::new(),
                changed: None,
                sample: (ev.file.clone(), ev.line),
            });
        b.fatal += fatal;
        b.memory += memory;
        b.slow += slow;
        b.timeouts += timeouts;
        if let Some(t) = ev.time {
            b.first = Some(b.first.map_or(t, |f| f.min(t)));
            b.last = Some(b.last.map_or(t, |l| l.max(t)));
            // The request a fatal ended is logged in the same second (or the next).
            let url = (0..=1).find_map(|d| {
                by_second
                    .get(&(t.as_second() + d))
                    .and_then(|v| v.first().cloned())
            });
            if let Some(url) = url.or_else(|| ev.field("request").and_then(request_path)) {
                if let Some((_, n)) = b.urls.iter_mut().find(|(u, _)| *u == url) {
                    *n += 1;
                } else if b.urls.len() < 20 {
                    b.urls.push((url, 1));
                }
            }
        } else if let Some(url) = ev.field("request").and_then(request_path) {
            if !b.urls.iter().any(|(u, _)| *u == url) && b.urls.len() < 20 {
                b.urls.push((url, 1));
            }
        }
    }
    let mut merged: BTreeMap<(Kind, String, Option<usize>), Blame> = BTreeMap::new();
    for ((kind, slug, site, _), b) in by {
        match merged.entry((kind, slug, site)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(b);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let keep = o.get_mut();
                let first = keep.first.into_iter().chain(b.first).min();
                let last = keep.last.into_iter().chain(b.last).max();
                if b.total() > keep.total() {
                    *keep = b;
                }
                keep.first = first;
                keep.last = last;
            }
        }
    }
    let mut out: Vec<Blame> = merged
        .into_values()
        .map(|mut b| {
            let site = b
                .site
                .as_ref()
                .and_then(|n| sites.iter().find(|s| &s.name == n))
                .or_else(|| sites.iter().find(|s| s.plugin(&b.slug).is_some()));
            if let Some(site) = site {
                b.site.get_or_insert_with(|| site.name.clone());
                let (dir, version, mtime) = match b.kind {
                    Kind::Theme => (
                        site.content_dir.join("themes").join(&b.slug),
                        site.theme_version
                            .clone()
                            .filter(|_| site.theme.as_deref() == Some(&b.slug)),
                        None,
                    ),
                    Kind::MuPlugin => {
                        let p = site.mu_plugins.iter().find(|p| p.slug == b.slug);
                        (
                            site.content_dir
                                .join("mu-plugins")
                                .join(format!("{}.php", b.slug)),
                            p.and_then(|p| p.version.clone()),
                            p.map(|p| p.mtime),
                        )
                    }
                    Kind::Plugin => {
                        let p = site.plugins.iter().find(|p| p.slug == b.slug);
                        let dir = match p {
                            Some(p) if !p.file.contains('/') => site.plugins_dir().join(&p.file),
                            _ => site.plugins_dir().join(&b.slug),
                        };
                        (dir, p.and_then(|p| p.version.clone()), p.map(|p| p.mtime))
                    }
                };
                b.dir = Some(dir);
                b.version = version;
                if let (Some(m), Some(first)) = (mtime, b.first) {
                    let lead = first.as_second() - m;
                    if (0..=86_400).contains(&lead) {
                        b.changed = jiff::Timestamp::from_second(m).ok();
                    }
                }
            }
            b.urls.sort_by(|a, c| c.1.cmp(&a.1).then(a.0.cmp(&c.0)));
            b
        })
        .collect();
    out.sort_by(|a, b| b.total().cmp(&a.total()).then(a.slug.cmp(&b.slug)));
    out
}

/// The one-line summary: "plugin `pay-gateway` 3.2.0: 41 fatal errors, all on /checkout/,
/// since 10:02, the time its files changed".
pub fn summary(b: &Blame) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (b.fatal, "fatal error"),
        (b.memory, "memory-limit error"),
        (b.slow, "slow request trace"),
        (b.timeouts, "timed-out request"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}{}", if n == 1 { "" } else { "s" }));
        }
    }
    let mut s = format!(
        "{} `{}`{}: {}",
        b.kind.label(),
        b.slug,
        b.version
            .as_ref()
            .map_or(String::new(), |v| format!(" {v}")),
        parts.join(", ")
    );
    match b.urls.as_slice() {
        [] => {}
        [(u, _)] => s.push_str(&format!(", all on {u}")),
        [first, rest @ ..] => s.push_str(&format!(
            ", most on {} ({} of them; {} other URLs)",
            first.0,
            first.1,
            rest.len()
        )),
    }
    if let Some(first) = b.first {
        s.push_str(&format!(", since {}", hhmm(first)));
    }
    if let Some(changed) = b.changed {
        s.push_str(&format!(
            ", its files changed at {} just before (an update?)",
            hhmm(changed)
        ));
    }
    s
}

fn hhmm(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_first_plugin_frame_not_the_file_that_threw() {
        let text = "PHP Fatal error:  Uncaught TypeError: x in /var/www/s/wp-includes/class-wp-hook.php:308\nStack trace:\n#0 /var/www/s/wp-includes/plugin.php(205): WP_Hook->apply_filters()\n#1 /var/www/s/wp-content/plugins/acme-slider/inc/render.php(41): apply_filters()\n#2 /var/www/s/wp-content/themes/shop/index.php(3): acme_render()";
        assert_eq!(
            first_frame(text, &[]),
            Some((Kind::Plugin, "acme-slider".into(), None))
        );
    }

    #[test]
    fn what_the_visitor_sent_is_not_a_frame() {
        let text = "FastCGI sent in stderr: \"PHP message: PHP Fatal error:  x in /var/www/s/index.php:3\" while reading response header from upstream, client: 1.2.3.4, server: s, request: \"GET /wp-content/plugins/evil/x.php HTTP/1.1\"";
        assert_eq!(first_frame(text, &[]), None);
        let url = "PHP Warning: fopen(http://x.test/wp-content/plugins/evil/a.php): failed";
        assert_eq!(first_frame(url, &[]), None);
    }

    #[test]
    fn a_custom_content_dir_and_a_single_file_plugin() {
        let site = Site {
            name: "s".into(),
            content_dir: "/srv/c".into(),
            ..Site::default()
        };
        assert_eq!(
            first_frame(
                "x in /srv/c/plugins/hello.php:3",
                std::slice::from_ref(&site)
            ),
            Some((Kind::Plugin, "hello".into(), Some(0)))
        );
    }
}
