//! The human rendering of `origin-agent explain`: the responses a query selected, grouped by what
//! explains them. Responses of one burst share their cause, their log line and the lines around
//! them, so each group prints its evidence once and a bounded list of its responses; `all` lifts
//! the bounds.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::cause::CauseId;
use crate::diagnose::{self, Explanation};
use crate::event::Event;

/// Responses listed per group unless `all`.
const RESPONSES_PER_GROUP: usize = 3;
/// Nearby lines per group unless `all`.
const NEARBY_PER_GROUP: usize = 5;
/// Groups listed unless `all`.
const GROUPS: usize = 10;

/// Responses that share what explains them.
struct Group<'a> {
    cause: Option<CauseId>,
    direct: bool,
    event: Option<&'a Event>,
    responses: Vec<&'a Explanation>,
    nearby: Vec<&'a Event>,
}

fn event_key(event: Option<&Event>) -> Option<(PathBuf, u64)> {
    event.map(|e| (e.file.clone(), e.line))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Groups the explanations by (cause, log line that explains them), in order of first
/// appearance; nearby lines are merged per group without repeats.
fn group(result: &[Explanation]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for e in result {
        let key = (e.cause, e.direct, event_key(e.event.as_ref()));
        let found = groups
            .iter_mut()
            .find(|g| (g.cause, g.direct, event_key(g.event)) == key);
        let g = match found {
            Some(g) => g,
            None => {
                groups.push(Group {
                    cause: e.cause,
                    direct: e.direct,
                    event: e.event.as_ref(),
                    responses: Vec::new(),
                    nearby: Vec::new(),
                });
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        g.responses.push(e);
        for near in &e.nearby {
            if !g
                .nearby
                .iter()
                .any(|n| n.file == near.file && n.line == near.line)
            {
                g.nearby.push(near);
            }
        }
    }
    groups
}

/// The text `explain` prints (without `--json`); `all` prints every response and nearby line.
pub fn render(result: &[Explanation], all: bool) -> String {
    // No colours here: every control byte of the log text is escaped.
    super::escape::controls(&render_raw(result, all)).into_owned()
}

fn render_raw(result: &[Explanation], all: bool) -> String {
    if result.is_empty() {
        return "No 5xx response matches that in the log window.\n".to_string();
    }
    let groups = group(result);
    let mut text = String::new();
    let shown_groups = if all { groups.len() } else { GROUPS };
    for g in groups.iter().take(shown_groups) {
        let n = g.responses.len();
        let plural = if n == 1 { "" } else { "s" };
        match (g.cause, g.event) {
            (Some(cause), Some(event)) => {
                let _ = writeln!(
                    text,
                    "{n} response{plural}: {cause} ({}){}",
                    cause.title(),
                    if g.direct {
                        ""
                    } else {
                        ", linked by time only"
                    }
                );
                let _ = writeln!(
                    text,
                    "  evidence {}:{}: {}",
                    event.file.display(),
                    event.line,
                    first_line(&event.text)
                );
            }
            _ => {
                let _ = writeln!(text, "{n} response{plural}: no log line explains it");
            }
        }
        let shown = if all { n } else { RESPONSES_PER_GROUP };
        for e in g.responses.iter().take(shown) {
            let r = &e.response;
            let _ = writeln!(
                text,
                "  {}:{} {} \"{}\" {}",
                r.file.display(),
                r.line,
                r.time.map_or("-".to_string(), diagnose::short_time),
                r.request,
                r.status
            );
        }
        if n > shown {
            let _ = writeln!(text, "  … and {} more (--all lists them)", n - shown);
        }
        let shown_nearby = if all {
            g.nearby.len()
        } else {
            NEARBY_PER_GROUP
        };
        for near in g.nearby.iter().take(shown_nearby) {
            let _ = writeln!(
                text,
                "  nearby {}:{}: {}",
                near.file.display(),
                near.line,
                first_line(&near.text)
            );
        }
        if g.nearby.len() > shown_nearby {
            let _ = writeln!(
                text,
                "  … and {} more nearby lines (--all lists them)",
                g.nearby.len() - shown_nearby
            );
        }
    }
    if groups.len() > shown_groups {
        let _ = writeln!(
            text,
            "… and {} more groups of responses (--all lists them)",
            groups.len() - shown_groups
        );
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::event::Response;

    fn event(line: u64, text: &str) -> Event {
        Event {
            source: crate::event::LogSource::NginxError,
            file: "/var/log/nginx/error.log".into(),
            line,
            time: None,
            rule: "nginx.connect-eagain".into(),
            event: "upstream-queue-full".into(),
            cause: CauseId::UpstreamSaturated,
            severity: crate::event::Severity::Error,
            text: text.to_string(),
            fields: Default::default(),
        }
    }

    fn explanation(line: u64, cause_line: u64, nearby: &[u64]) -> Explanation {
        Explanation {
            response: Response {
                file: "/var/log/nginx/access.log".into(),
                line,
                time: None,
                status: 502,
                request: format!("GET /r{line} HTTP/1.1"),
                client: "198.51.100.7".into(),
                upstream_addr: None,
                upstream_status: None,
                request_time: None,
                body_bytes: None,
                forwarded_for: None,
            },
            cause: Some(CauseId::UpstreamSaturated),
            direct: true,
            event: Some(event(
                cause_line,
                "connect() failed (11: Resource temporarily unavailable)",
            )),
            nearby: nearby
                .iter()
                .map(|l| event(*l, &format!("nearby line {l}")))
                .collect(),
        }
    }

    #[test]
    fn responses_of_one_burst_print_their_evidence_once_and_a_bounded_list() {
        let result: Vec<Explanation> = (1..=12)
            .map(|i| explanation(i, 40, &[41, 42, 43, 44, 45]))
            .collect();
        let text = render(&result, false);
        assert_eq!(text.matches("evidence ").count(), 1, "{text}");
        assert!(
            text.starts_with("12 responses: upstream.saturated"),
            "{text}"
        );
        assert_eq!(
            text.matches("\" 502").count(),
            RESPONSES_PER_GROUP,
            "{text}"
        );
        assert!(text.contains("… and 9 more (--all lists them)"), "{text}");
        // The five nearby lines shared by all twelve responses appear once each.
        for l in 41..=45 {
            assert_eq!(
                text.matches(&format!("nearby line {l}\n")).count(),
                1,
                "{text}"
            );
        }
        assert!(text.lines().count() <= 12, "bounded output:\n{text}");

        let all = render(&result, true);
        assert_eq!(all.matches("\" 502").count(), 12, "{all}");
        assert!(!all.contains("more (--all"), "{all}");
    }

    #[test]
    fn different_explaining_lines_are_different_groups_and_groups_are_bounded() {
        let result: Vec<Explanation> = (1..=30).map(|i| explanation(i, 100 + i, &[])).collect();
        let text = render(&result, false);
        assert_eq!(text.matches("evidence ").count(), GROUPS, "{text}");
        assert!(text.contains("… and 20 more groups of responses"), "{text}");
        assert_eq!(render(&result, true).matches("evidence ").count(), 30);
    }

    #[test]
    fn nothing_selected_says_so() {
        assert_eq!(
            render(&[], false),
            "No 5xx response matches that in the log window.\n"
        );
    }
}
