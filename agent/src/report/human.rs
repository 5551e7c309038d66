//! The report for a person at a terminal, in the order an operator needs it under pressure: the
//! verdict in one sentence, the timeline, the evidence and the fix for each cause, then the full
//! checklist grouped by area, then what was discovered and read. Colour only when writing to a
//! terminal and `NO_COLOR` is not set.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Report;
use crate::check::{Area, Check, Status};
use crate::diagnose::{chain_of, short_time, CauseReport, VerdictStatus};

/// Whether to colour the output.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn detect() -> Style {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    fn status(&self, status: Status) -> String {
        let (code, label) = match status {
            Status::Ok => ("32", "  ok"),
            Status::Warn => ("33", "warn"),
            Status::Fail => ("1;31", "FAIL"),
            Status::Skip => ("2", "skip"),
        };
        self.paint(code, label)
    }

    fn verdict(&self, status: VerdictStatus) -> String {
        let code = match status {
            VerdictStatus::Ok => "1;32",
            VerdictStatus::Warning => "1;33",
            VerdictStatus::Critical => "1;31",
            VerdictStatus::Unknown => "1;35",
        };
        self.paint(code, status.label())
    }
}

/// The human report. Every string of the report is escaped ([`super::escape`]) before it is
/// laid out, so log text cannot drive the terminal; only the colours added here remain.
pub fn render(report: &Report, style: Style) -> String {
    match super::escape::sanitize(report) {
        Some(safe) => super::escape::terminal(&render_escaped(&safe, style)).into_owned(),
        None => {
            super::escape::controls(&render_escaped(report, Style { color: false })).into_owned()
        }
    }
}

fn render_escaped(report: &Report, style: Style) -> String {
    let mut out = String::new();
    let s = &style;
    let _ = writeln!(
        out,
        "{} {}",
        s.verdict(report.verdict.status),
        s.bold(&report.verdict.summary)
    );
    let window = match (report.window.since, report.window.until) {
        (Some(a), Some(b)) => format!("{} → {}", short_time(a), short_time(b)),
        _ => "all lines".to_string(),
    };
    let _ = writeln!(
        out,
        "{}",
        s.dim(&format!(
            "host {} · {} · window {window} · {} responses, {} 5xx ({} × 502, {} × 504)",
            report.host,
            report.source,
            report.responses.total,
            report.responses.status_5xx,
            report.responses.status_502,
            report.responses.status_504
        ))
    );
    let implied = &report.responses.implied;
    if implied.total > 0 {
        let _ = writeln!(
            out,
            "{}",
            s.dim(&format!(
                "the error logs imply {} more 5xx that no access log shows ({} × 500, {} × 502, {} × 504)",
                implied.status_5xx, implied.status_500, implied.status_502, implied.status_504
            ))
        );
    }

    if let Some(t) = &report.timeline {
        let _ = writeln!(out, "\n{}", s.bold("Timeline"));
        let _ = writeln!(out, "  first 5xx  {}", short_time(t.first_error));
        let _ = writeln!(
            out,
            "  peak       {} ({} in that minute)",
            short_time(t.peak_minute),
            t.peak_errors
        );
        if t.ongoing {
            let _ = writeln!(
                out,
                "  last 5xx   {} (still happening)",
                short_time(t.last_error)
            );
        } else {
            let _ = writeln!(out, "  last 5xx   {} (stopped)", short_time(t.last_error));
        }
    }

    out.push_str(&crate::stack::layers::render(&report.checks));

    if !report.causes.is_empty() {
        let _ = writeln!(out, "\n{}", s.bold("Causes, most likely first"));
    }
    for (i, cause) in report.causes.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n{}. {} — {}  {}",
            i + 1,
            s.bold(cause.id.id()),
            cause.title,
            s.dim(&format!("score {:.2}", cause.score))
        );
        for chain in chain_lines(&report.causes, cause) {
            let _ = writeln!(out, "   {chain}");
        }
        let mut facts = Vec::new();
        if let Some(reason) = cause.reason {
            facts.push(format!("because: {} ({})", reason.title(), reason.id()));
        }
        if cause.responses > 0 {
            facts.push(format!("explains {} of the 5xx", cause.responses));
        }
        if cause.events > 0 {
            facts.push(format!("{} log events", cause.events));
        }
        if cause.confirmed_now {
            facts.push("confirmed by the current state".to_string());
        }
        if let Some(seen) = &cause.ruled_out_now {
            facts.push(format!("ruled out now: {seen}"));
        }
        if let (Some(a), Some(b)) = (cause.first_seen, cause.last_seen) {
            facts.push(format!("{} → {}", short_time(a), short_time(b)));
        }
        facts.push(format!(
            "visitors see {} (through a CDN: {})",
            cause.status_direct, cause.status_cdn
        ));
        let _ = writeln!(out, "   {}", facts.join(" · "));
        for line in &cause.evidence {
            let place = if line.line > 0 {
                format!("{}:{}", line.source, line.line)
            } else {
                line.source.clone()
            };
            let text = first_line(&line.text, 220);
            let _ = writeln!(out, "   {} {}", s.dim(&format!("{place}:")), text);
        }
        let _ = writeln!(out, "   {} {}", s.bold("Fix:"), cause.fix);
    }

    if let Some(table) = &report.firewall_table {
        let _ = writeln!(out, "\n{}", s.bold("CDN ranges against the firewall"));
        for line in table.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }

    let mut by_area: BTreeMap<Area, Vec<&Check>> = BTreeMap::new();
    for check in &report.checks {
        by_area.entry(check.area).or_default().push(check);
    }
    if !by_area.is_empty() {
        let _ = writeln!(out, "\n{}", s.bold("Checklist"));
    }
    for (area, checks) in by_area {
        let _ = writeln!(out, "  {}", s.bold(area.title()));
        for check in checks {
            let detail = if check.detail.is_empty() {
                String::new()
            } else {
                format!(
                    " {}",
                    s.dim(&format!("— {}", first_line(&check.detail, 160)))
                )
            };
            let _ = writeln!(
                out,
                "    {} {}{detail}",
                s.status(check.status),
                check.title
            );
            if matches!(check.status, Status::Fail | Status::Warn) {
                if let Some(fix) = &check.fix {
                    let _ = writeln!(out, "         fix: {fix}");
                }
            }
        }
    }

    if !report.discovered.is_empty() {
        let _ = writeln!(out, "\n{}", s.bold("Discovered"));
        for note in &report.discovered {
            let _ = writeln!(out, "  {note}");
        }
    }
    if !report.checked.is_empty() && (report.verdict.cause.is_none() || report.unexplained > 0) {
        let _ = writeln!(out, "\n{}", s.bold("Checked"));
        for item in &report.checked {
            let _ = writeln!(out, "  {item}");
        }
    }
    out
}

/// `db.too-many-connections → app.fatal-error → 500`: for a chain's root, one line per cause it
/// explains at the end of a chain; for an explained cause, its own chain.
fn chain_lines(causes: &[CauseReport], cause: &CauseReport) -> Vec<String> {
    let explains = |id| causes.iter().any(|c| c.explained_by == Some(id));
    let leaves: Vec<&CauseReport> = if cause.explained_by.is_some() && !explains(cause.id) {
        vec![cause]
    } else if cause.explained_by.is_none() && explains(cause.id) {
        causes
            .iter()
            .filter(|c| c.explained_by.is_some() && !explains(c.id))
            .filter(|c| chain_of(causes, c.id).first() == Some(&cause.id))
            .collect()
    } else {
        Vec::new()
    };
    leaves
        .iter()
        .map(|leaf| {
            let ids: Vec<&str> = chain_of(causes, leaf.id).iter().map(|c| c.id()).collect();
            let statuses: Vec<String> = if leaf.statuses.is_empty() {
                vec![leaf.status_direct.clone()]
            } else {
                leaf.statuses.keys().map(u16::to_string).collect()
            };
            format!("{} → {}", ids.join(" → "), statuses.join(" / "))
        })
        .collect()
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let more = text.lines().count() > 1;
    let mut cut: String = line.chars().take(max).collect();
    if line.chars().count() > max || more {
        cut.push_str(" …");
    }
    cut
}
