//! A rule pack run through the log parsers: each rule's own samples (every `match` line must
//! yield that rule's event with its expected captures, no `no_match` line may), and
//! `origin-agent rules test FILE LOG`. It lives on the log side because it needs the full
//! parser of each source; the rules module only loads and compiles packs (logs → rules, never
//! the other way).

use std::collections::BTreeMap;
use std::path::Path;

use super::{LineParser, Parsed};
use crate::event::LogSource;
use crate::rules::{RuleError, RuleSet};

/// The outcome of checking one rule's own samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleFailure {
    /// The rule whose sample failed.
    pub rule: String,
    /// The sample line (empty when the failure is about the rule itself).
    pub line: String,
    /// What went wrong, in words.
    pub problem: String,
}

/// Runs every rule's samples through the full parser of its source (header, structure split,
/// rules of the whole `set`, so a sample that an earlier rule steals fails too). Returns the
/// failures; a rule with no `match` sample is a failure.
pub fn check_samples(set: &RuleSet) -> Vec<SampleFailure> {
    let arc = std::sync::Arc::new(set.clone_compiled());
    let mut failures = Vec::new();
    let tz = jiff::tz::TimeZone::UTC;
    for rule in set.rules() {
        let fail = |line: &str, problem: String| SampleFailure {
            rule: rule.id.clone(),
            line: line.to_string(),
            problem,
        };
        if rule.samples.is_empty() {
            failures.push(fail("", "the rule has no `match` sample".into()));
        }
        if rule.no_match.is_empty() {
            failures.push(fail("", "the rule has no `no_match` sample".into()));
        }
        let Ok(mut parser) = LineParser::new(rule.source, None, tz.clone(), arc.clone()) else {
            failures.push(fail("", "no parser for this source".into()));
            continue;
        };
        for sample in &rule.samples {
            match parser.parse(Path::new("sample"), 1, sample.line.as_bytes()) {
                Parsed::Event(ev) if ev.rule == rule.id => {
                    for (k, v) in &sample.captures {
                        match ev.fields.get(k) {
                            Some(got) if got == v.as_str() => {}
                            got => failures.push(fail(
                                &sample.line,
                                format!("field `{k}`: expected {v:?}, got {got:?}"),
                            )),
                        }
                    }
                }
                Parsed::Event(ev) => failures.push(fail(
                    &sample.line,
                    format!("matched rule `{}` instead", ev.rule),
                )),
                Parsed::Bad => failures.push(fail(
                    &sample.line,
                    "the line does not parse as this source".into(),
                )),
                _ => failures.push(fail(&sample.line, "no rule matched".into())),
            }
        }
        for line in &rule.no_match {
            if let Parsed::Event(ev) = parser.parse(Path::new("sample"), 1, line.as_bytes()) {
                if ev.rule == rule.id {
                    failures.push(fail(line, "a `no_match` line matched".into()));
                }
            }
        }
    }
    failures
}

/// `origin-agent rules test FILE LOG`: loads the rule file alone, reports which entries of `log`
/// match which of its rules (with captures), then the file's own samples' results.
pub fn test_file(rule_file: &Path, log: &Path) -> Result<String, RuleError> {
    let set = std::sync::Arc::new(RuleSet::from_file(rule_file)?);
    let mut out = String::new();
    let sources: Vec<LogSource> = LogSource::ALL
        .iter()
        .copied()
        .filter(|s| set.has_source(*s))
        .collect();
    let file = std::fs::File::open(log).map_err(|e| RuleError::Io {
        path: log.display().to_string(),
        message: e.to_string(),
    })?;
    let mut parsers: Vec<LineParser> = sources
        .iter()
        .filter_map(|s| LineParser::new(*s, None, jiff::tz::TimeZone::UTC, set.clone()).ok())
        .collect();
    let mut matched = 0u64;
    let mut entries = 0u64;
    let mut per_rule: BTreeMap<String, u64> = BTreeMap::new();
    super::for_each_entry(
        std::io::BufReader::new(file),
        sources.first().copied(),
        |line_no, entry| {
            entries += 1;
            for p in parsers.iter_mut() {
                if let Parsed::Event(ev) = p.parse(log, line_no, entry) {
                    matched += 1;
                    *per_rule.entry(ev.rule.clone()).or_default() += 1;
                    out.push_str(&format!(
                        "{}:{}: {} ({})\n",
                        log.display(),
                        line_no,
                        ev.rule,
                        ev.event
                    ));
                    for (k, v) in &ev.fields {
                        out.push_str(&format!("    {k} = {v}\n"));
                    }
                    break;
                }
            }
        },
    )
    .map_err(|e| RuleError::Io {
        path: log.display().to_string(),
        message: e.to_string(),
    })?;
    out.push_str(&format!("{matched} of {entries} entries matched\n"));
    for (rule, n) in &per_rule {
        out.push_str(&format!("  {rule}: {n}\n"));
    }
    let failures = check_samples(&set);
    let samples: usize = set
        .rules()
        .iter()
        .map(|r| r.samples.len() + r.no_match.len())
        .sum();
    if failures.is_empty() {
        out.push_str(&format!("samples: all {samples} passed\n"));
    } else {
        out.push_str(&format!(
            "samples: {} of {samples} failed\n",
            failures.len()
        ));
        for f in &failures {
            out.push_str(&format!("  {}: {}: {}\n", f.rule, f.problem, f.line));
        }
    }
    // The log's text is shown: escaped (a log line may carry terminal escapes).
    Ok(crate::escape::controls(&out).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_builtin_rule_passes_its_samples_and_has_some() {
        let set = RuleSet::builtin().unwrap();
        assert!(set.rules().len() >= 40, "{} rules", set.rules().len());
        let failures = check_samples(&set);
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn a_rule_without_samples_fails_the_check() {
        let yaml = r#"
rules:
  - id: t.x
    source: nginx_error
    pattern: '^no live upstreams'
    event: e
    cause: upstream.no-live
    severity: error
    fix: f
"#;
        let set = RuleSet::from_yaml("t.yaml", yaml).unwrap();
        let failures = check_samples(&set);
        assert!(failures
            .iter()
            .any(|f| f.problem.contains("no `match` sample")));
    }

    #[test]
    fn test_file_reports_matches_and_samples() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("r.yaml");
        std::fs::write(
            &rules,
            r#"rules:
  - id: site.nolive
    source: nginx_error
    pattern: '^no live upstreams while (?P<action>connecting) to upstream'
    event: no-live
    cause: upstream.no-live
    severity: error
    fix: check the upstream group
    samples:
      match:
        - line: '2026/11/24 07:45:29 [error] 1#1: *9 no live upstreams while connecting to upstream, client: 127.0.0.1, server: example.com, request: "GET / HTTP/1.1", upstream: "fastcgi://php_backend", host: "x"'
          captures: {action: connecting, client: 127.0.0.1, upstream: "fastcgi://php_backend"}
      no_match:
        - '2026/11/24 07:45:29 [error] 1#1: *9 open() "/var/www/no live upstreams while connecting to upstream" failed (2: No such file or directory), client: 127.0.0.1, server: example.com, request: "GET / HTTP/1.1", host: "x"'
"#,
        )
        .unwrap();
        let log = dir.path().join("error.log");
        std::fs::write(&log, "2026/11/24 07:45:29 [error] 1#1: *9 no live upstreams while connecting to upstream, client: 127.0.0.1, server: example.com, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://php_backend\", host: \"x\"\n2026/11/24 07:45:30 [error] 1#1: *10 something else\n").unwrap();
        let out = test_file(&rules, &log).unwrap();
        assert!(out.contains("error.log:1: site.nolive"), "{out}");
        assert!(out.contains("1 of 2 entries matched"), "{out}");
        assert!(out.contains("samples: all 2 passed"), "{out}");
    }
}
