//! Rule packs: YAML data (`rules/*.yaml` at the top of the repository, embedded at build time,
//! extendable from `/etc/origin-agent/rules.d/`) that map server-side log lines to events and
//! causes.
//!
//! A rule names its log source, a pattern with named captures, the event it yields, the cause id
//! it supports, a severity and the fix text, and carries sample lines that must match (with their
//! expected captures) and lines that must not. Patterns are matched against the *message* part of
//! an entry (after the log's own timestamp/level header, and for nginx error logs before the
//! structural `, client: …` tail) and must be anchored with `^`: a rule anchors on the structure
//! of the line, never on a substring a visitor could have written anywhere in it.
//!
//! Matching per source is one pass of one automaton: all of the source's patterns compiled
//! together (one lazy DFA, leftmost-first, see `automaton`), walked anchored at the start of
//! the message. It reports the first rule in priority (file) order that matches, and it stops as
//! soon as no pattern can match any more: a line that starts like no rule costs a few bytes of
//! DFA walk. A rule with an optional part that scans whole lines (a fatal error after up to 16
//! warning lines) would keep the automaton alive to the end of every line starting like that
//! part: it is left out of the automaton and tried on its own, only on lines holding the text it
//! needs (derived from its pattern, see `gate`), so the first matching rule still wins. Logs
//! repeat their messages: each parser remembers the answers to the last few distinct messages
//! (`memo`), compared byte for byte, and the prefixes after which its automaton died (any
//! message starting with one has its answer). Captures run afterwards, for the winning rule only, and
//! only for the entries kept as events.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::bytes::Regex;

use serde::{Deserialize, Serialize};

use crate::cause::CauseId;
use crate::event::{FieldMap, LogSource, Severity};

// `BUILTIN_PACKS`: every `rules/*.yaml` at the top of the repository, in name order, read and
// checked (YAML, pattern syntax) by `crates/origin-evidence/build.rs` and embedded as constants.
include!(concat!(env!("OUT_DIR"), "/builtin_packs.rs"));

/// One embedded pack as the build script wrote it: its document's fields as literals, so that
/// start-up reads the rules without parsing anything.
struct BuiltinPack {
    name: &'static str,
    version: Option<u32>,
    source: Option<&'static str>,
    rules: &'static [BuiltinRule],
    /// The samples of the pack's rules, in rule order, as JSON (read only when checked).
    samples: &'static str,
}

/// One rule of a [`BuiltinPack`]: the fields of [`RuleDoc`] but its samples.
struct BuiltinRule {
    id: &'static str,
    source: Option<&'static str>,
    pattern: &'static str,
    event: &'static str,
    cause: &'static str,
    severity: &'static str,
    fix: &'static str,
    responds: Option<u16>,
    reason: Option<&'static str>,
}

impl BuiltinPack {
    /// The pack as the document a YAML pack file reads as (samples empty).
    fn doc(&self) -> PackDoc {
        PackDoc {
            version: self.version,
            source: self.source.map(str::to_string),
            rules: self
                .rules
                .iter()
                .map(|r| RuleDoc {
                    id: r.id.to_string(),
                    source: r.source.map(str::to_string),
                    pattern: r.pattern.to_string(),
                    event: r.event.to_string(),
                    cause: r.cause.to_string(),
                    severity: r.severity.to_string(),
                    fix: r.fix.to_string(),
                    responds: r.responds,
                    reason: r.reason.map(str::to_string),
                    samples: SamplesDoc::default(),
                })
                .collect(),
        }
    }
}

/// Where the operator's own rules live.
pub const DEFAULT_RULES_DIR: &str = "/etc/origin-agent/rules.d";

/// Why a rule pack could not be loaded or tested.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A pack that is not valid YAML of the rule format.
    #[error("{file}: {error}")]
    Yaml {
        /// The pack file.
        file: String,
        /// The parse error.
        #[source]
        error: yaml_serde::Error,
    },
    /// A rule that breaks the format's rules (unanchored pattern, unknown cause, failing sample, ...).
    #[error("{file}: rule `{id}`: {message}")]
    Invalid {
        /// The pack file.
        file: String,
        /// The rule's id.
        id: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file or directory of rules could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The OS's error text.
        message: String,
    },
    /// A pack-level problem (an embedded pack that does not load, an unsupported `version:`).
    #[error("{file}: {message}")]
    Pack {
        /// The pack file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

include!("doc.rs");

mod automaton;
mod gate;
mod memo;

pub use memo::{CaptureMemo, Captures};

/// The rule format versions this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// A sample line a rule must match, with the captures it must produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// A whole log entry as the log writes it (continuation lines joined with `\n`).
    pub line: String,
    /// Expected values of named captures and parser fields (a subset of what the event carries).
    pub captures: BTreeMap<String, String>,
}

/// One rule: a log source, an anchored pattern, and what a match means.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable dotted id (`nginx.connect-enoent`).
    pub id: String,
    /// The log the rule reads.
    pub source: LogSource,
    /// The pattern, anchored with `^` at the start of the message.
    pub pattern: String,
    /// The event name a match yields (`upstream-socket-missing`).
    pub event: String,
    /// The catalog cause a match supports.
    pub cause: CauseId,
    /// How bad a match is on its own.
    pub severity: Severity,
    /// The fix to show (with `${field}` placeholders) where no more specific fix is known.
    pub fix: String,
    /// The status the server answered the request this entry ended (`responds: 502` for an
    /// nginx gateway error, 500 for a PHP fatal): a response implied by the error log, counted
    /// when no access-log line shows it. `None`: the entry does not end a request on its own.
    pub responds: Option<u16>,
    /// Why the cause happened, when the entry says it (an nginx that did not start because an
    /// upstream name does not resolve: `web.down` for the reason `upstream.unresolvable`).
    pub reason: Option<CauseId>,
    /// Lines the rule must match, with their expected captures.
    pub samples: Vec<Sample>,
    /// Lines the rule must not match.
    pub no_match: Vec<String>,
    /// The pack file the rule came from (`nginx.yaml`, `/etc/origin-agent/rules.d/site.yaml`).
    pub origin: String,
    /// Compiled on first use (the pattern's syntax is checked when the pack is loaded).
    regex: std::sync::OnceLock<Option<Regex>>,
}

impl Rule {
    /// The rule's `fix:` text with each `${name}` replaced by that field of `fields` (a capture
    /// or a parser field such as `upstream`); `None` when a named field is missing.
    pub fn fix_with(&self, fields: &FieldMap) -> Option<String> {
        fill_fix(&self.fix, fields)
    }

    /// The compiled pattern.
    /// `None` only if the pattern passed the syntax check but exceeds the regex size limit.
    pub fn regex(&self) -> Option<&Regex> {
        self.regex
            .get_or_init(|| {
                regex::bytes::RegexBuilder::new(&self.pattern)
                    .unicode(false)
                    .build()
                    .ok()
            })
            .as_ref()
    }
}

/// The compiled matcher for one log source.
#[derive(Debug)]
struct SourceMatcher {
    /// Indexes into `RuleSet::rules` of the automaton's patterns, in match priority order.
    rules: Vec<usize>,
    /// Those patterns as one leftmost-first automaton: anchored at the message's start, the
    /// pattern it reports is the first (in priority order) that matches. `None` when the
    /// patterns together pass the automaton size limit (hundreds of big site rules): every rule
    /// of the source is then tried on its own regex in order, slower but the same answer.
    first: Option<regex_automata::hybrid::dfa::DFA>,
    /// The source's rules left out of the automaton (see `gate`), in priority order, each with
    /// a search for the text every match of it contains.
    gated: Vec<(usize, gate::Needs)>,
    /// All of the source's rules in priority order (the fallback without an automaton).
    all: Vec<usize>,
}

/// A loaded, compiled set of rules.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// One lazily built matcher per source that has rules (a handful: looked up by a scan, which
    /// is cheaper per line than hashing).
    matchers: Vec<(LogSource, std::sync::OnceLock<Option<SourceMatcher>>)>,
}

/// Scratch space of one source's automaton, and the answers to its recent messages (see
/// [`RuleSet::match_index_with`]).
#[derive(Debug, Default)]
pub struct MatchCache {
    /// The source the memo's answers are for.
    source: Option<LogSource>,
    automaton: Option<(LogSource, regex_automata::hybrid::dfa::Cache)>,
    memo: memo::Memo,
    dead_ends: memo::DeadEnds,
}

/// A rule that matched a message, with its named captures (empty captures left out).
#[derive(Debug, Clone)]
pub struct RuleMatch<'a> {
    /// The rule that matched.
    pub rule: &'a Rule,
    /// Its named captures that matched something, by name.
    pub captures: Vec<(&'a str, String)>,
}

impl RuleSet {
    /// The embedded packs, with their samples (for [`check_samples`]).
    pub fn builtin() -> Result<RuleSet, RuleError> {
        RuleSet::from_rules(builtin_rules(true)?)
    }

    /// The embedded packs without their samples: what the readers need, at a third of the
    /// start-up cost.
    pub fn builtin_lean() -> Result<RuleSet, RuleError> {
        RuleSet::from_rules(builtin_rules(false)?)
    }

    /// The embedded packs plus every `*.yaml`/`*.yml` file in `extra_dir` (default
    /// `/etc/origin-agent/rules.d`), in name order; a rule with an existing id replaces it in
    /// place. A missing directory is not an error. The embedded rules come without their
    /// samples (see [`RuleSet::builtin`]).
    pub fn load(extra_dir: Option<&Path>) -> Result<RuleSet, RuleError> {
        let mut rules = builtin_rules(false)?;
        let dir = extra_dir.unwrap_or(Path::new(DEFAULT_RULES_DIR));
        for path in pack_files(dir)? {
            let text = std::fs::read_to_string(&path).map_err(|e| RuleError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            merge_rules(&mut rules, parse_pack(&path.display().to_string(), &text)?);
        }
        RuleSet::from_rules(rules)
    }

    /// One pack file alone (for `rules test`).
    pub fn from_file(path: &Path) -> Result<RuleSet, RuleError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuleError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        RuleSet::from_rules(parse_pack(&path.display().to_string(), &text)?)
    }

    /// Pack text (YAML) alone.
    pub fn from_yaml(name: &str, text: &str) -> Result<RuleSet, RuleError> {
        RuleSet::from_rules(parse_pack(name, text)?)
    }

    fn from_rules(rules: Vec<Rule>) -> Result<RuleSet, RuleError> {
        // Every pattern compiled on its own when the pack was parsed; the per-source matchers
        // (one automaton each) are built on first use, so reading one kind of log does not
        // pay for the others.
        let matchers = LogSource::ALL
            .iter()
            .filter(|s| rules.iter().any(|r| r.source == **s))
            .map(|s| (*s, std::sync::OnceLock::new()))
            .collect();
        Ok(RuleSet { rules, matchers })
    }

    fn matcher(&self, source: LogSource) -> Option<&SourceMatcher> {
        self.matchers
            .iter()
            .find(|(s, _)| *s == source)?
            .1
            .get_or_init(|| build_matcher(&self.rules, source))
            .as_ref()
    }

    /// The `fix:` texts of the rules named in `ids`, by id (see `Evidence::rule_fixes`).
    pub fn fixes_of<'a>(&self, ids: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for id in ids {
            if !out.contains_key(id) {
                if let Some(rule) = self.rules.iter().find(|r| r.id == id) {
                    out.insert(id.to_string(), rule.fix.clone());
                }
            }
        }
        out
    }

    /// A set without rules.
    pub fn empty() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            matchers: Vec::new(),
        }
    }

    /// Every rule, in priority order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True when some rule reads this source.
    pub fn has_source(&self, source: LogSource) -> bool {
        self.matchers.iter().any(|(s, _)| *s == source)
    }

    /// The index (into [`RuleSet::rules`]) of the first rule of `source` whose pattern
    /// matches `message`: one anchored pass of the source's multi-pattern DFA.
    pub fn match_index(&self, source: LogSource, message: &[u8]) -> Option<usize> {
        self.match_index_with(source, message, &mut MatchCache::default())
    }

    /// [`RuleSet::match_index`] with the caller's scratch space for the automaton (a parser
    /// keeps one per source: no shared pool taken and given back on every line), which also
    /// remembers the answers to recent messages (see `memo`): a repeated message is one byte
    /// compare. `cache` must only ever be used with this set.
    pub fn match_index_with(
        &self,
        source: LogSource,
        message: &[u8],
        cache: &mut MatchCache,
    ) -> Option<usize> {
        let matcher = self.matcher(source)?;
        if cache.source != Some(source) {
            cache.memo.clear();
            cache.dead_ends.clear();
            cache.source = Some(source);
        }
        if let Some(answer) = cache.memo.get(message) {
            return answer;
        }
        let is_match = |i: usize| self.rules[i].regex().is_some_and(|re| re.is_match(message));
        let Some(dfa) = &matcher.first else {
            let answer = matcher.all.iter().copied().find(|&i| is_match(i));
            cache.memo.put(message, answer);
            return answer;
        };
        // The automaton's answer: from a prefix it died after before, or from a walk.
        let known = cache.dead_ends.get(message);
        let walk_it = cache.dead_ends.walk_next_miss(known.is_some());
        let hit = match known {
            Some(hit) => hit,
            None => {
                let scratch = match &mut cache.automaton {
                    Some((s, c)) if *s == source => c,
                    slot => &mut slot.insert((source, dfa.create_cache())).1,
                };
                let found = if walk_it {
                    automaton::walk(dfa, scratch, message)
                } else {
                    automaton::search(dfa, scratch, message)
                };
                let Ok(walk) = found else {
                    // A byte the automaton cannot decide: every rule on its own, in order.
                    return matcher.all.iter().copied().find(|&i| is_match(i));
                };
                let hit = walk
                    .pattern
                    .and_then(|p| matcher.rules.get(p.as_usize()).copied());
                if let Some(n) = walk.decided_after {
                    cache.dead_ends.put(message, n, hit);
                }
                let answer = self.gated_answer(matcher, message, hit);
                // Kept whole too: a repeated message is then one compare, without the gates.
                cache.memo.put(message, answer);
                return answer;
            }
        };
        // Not kept whole: messages that share a dead end mostly differ after it.
        self.gated_answer(matcher, message, hit)
    }

    /// The first rule in priority order that matches `message`, given the automaton's answer
    /// `hit`: a gated rule before it wins when its text is there and its own pattern matches.
    fn gated_answer(
        &self,
        matcher: &SourceMatcher,
        message: &[u8],
        hit: Option<usize>,
    ) -> Option<usize> {
        let is_match = |i: usize| self.rules[i].regex().is_some_and(|re| re.is_match(message));
        for (i, needs) in &matcher.gated {
            if hit.is_some_and(|h| h < *i) {
                break;
            }
            if needs.found_in(message) && is_match(*i) {
                return Some(*i);
            }
        }
        hit
    }

    /// The captures of rule `index` over `message` (empty captures left out).
    pub fn captures(&self, index: usize, message: &[u8]) -> Option<RuleMatch<'_>> {
        let rule = self.rules.get(index)?;
        let regex = rule.regex()?;
        let caps = regex.captures(message)?;
        let mut captures = Vec::new();
        for (i, name) in regex.capture_names().enumerate() {
            let (Some(name), Some(m)) = (name, caps.get(i)) else {
                continue;
            };
            if !m.as_bytes().is_empty() {
                captures.push((name, String::from_utf8_lossy(m.as_bytes()).into_owned()));
            }
        }
        Some(RuleMatch { rule, captures })
    }

    /// [`RuleSet::captures`] as owned strings, through `memo`: a message equal to the last one
    /// this rule captured (in this memo) is not searched again. `memo` must only ever be used
    /// with this set.
    pub fn captures_with(
        &self,
        index: usize,
        message: &[u8],
        memo: &mut CaptureMemo,
    ) -> Option<(&Rule, Captures)> {
        let rule = self.rules.get(index)?;
        if let Some(c) = memo.get(index, message) {
            return Some((rule, c.clone()));
        }
        let m = self.captures(index, message)?;
        let captures: Captures = m
            .captures
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        memo.put(index, message, &captures);
        Some((rule, captures))
    }

    /// The first rule of `source` whose pattern matches `message`, with its captures.
    pub fn match_message(&self, source: LogSource, message: &[u8]) -> Option<RuleMatch<'_>> {
        let index = self.match_index(source, message)?;
        self.captures(index, message)
    }
}

/// A rule's `fix:` text with each `${name}` replaced by that field of `fields`; `None` when a
/// named field is missing.
pub fn fill_fix(template: &str, fields: &FieldMap) -> Option<String> {
    substitute(template, |name| fields.get(name))
}

/// `template` with each `${name}` replaced by `value(name)`; `None` when a value is missing or
/// a `${` is not closed. Text outside `${…}` (a lone `$`, `$var`) is kept as written.
fn substitute<'a>(template: &str, value: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}')?;
        out.push_str(value(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Patterns run over raw log bytes in ASCII mode: `\d`, `\s`, `[^)]`, `.` match bytes, so a
/// line with invalid UTF-8 still matches and the automata stay small.
fn build_matcher(rules: &[Rule], source: LogSource) -> Option<SourceMatcher> {
    let idx: Vec<usize> = (0..rules.len())
        .filter(|&i| rules[i].source == source)
        .collect();
    if idx.is_empty() {
        return None;
    }
    let mut gated = Vec::new();
    let mut ungated = Vec::new();
    // Each pattern is parsed once, for its gate and for the automaton. (Loaded rules all
    // parse; one that does not leaves the source without an automaton: every rule on its own.)
    let mut hirs = Vec::new();
    let mut parsed = true;
    for &i in &idx {
        let Some(hir) = gate::parse(&rules[i].pattern) else {
            parsed = false;
            ungated.push(i);
            continue;
        };
        match gate::gate_literals_of(&hir) {
            Some(lits) => gated.push((i, gate::Needs::new(gate::prefix_of(&hir), &lits))),
            None => {
                ungated.push(i);
                hirs.push(hir);
            }
        }
    }
    let first = parsed.then(|| automaton::build(&hirs)).flatten();
    Some(SourceMatcher {
        rules: ungated,
        first,
        gated,
        all: idx,
    })
}

/// The embedded packs' rules, in pack order; with their samples when `samples` (start-up does
/// without: they are most of the packs' text and only the checks read them).
fn builtin_rules(samples: bool) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    for pack in BUILTIN_PACKS {
        let mut doc = pack.doc();
        if samples {
            let all: Vec<SamplesDoc> =
                serde_json::from_str(pack.samples).map_err(|e| RuleError::Pack {
                    file: pack.name.to_string(),
                    message: e.to_string(),
                })?;
            for (rule, s) in doc.rules.iter_mut().zip(all) {
                rule.samples = s;
            }
        }
        merge_rules(&mut rules, pack_rules(pack.name, doc, false)?);
    }
    Ok(rules)
}

fn pack_files(dir: &Path) -> Result<Vec<PathBuf>, RuleError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RuleError::Io {
                path: dir.display().to_string(),
                message: e.to_string(),
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("yml")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

fn merge_rules(into: &mut Vec<Rule>, new: Vec<Rule>) {
    for rule in new {
        if let Some(old) = into.iter_mut().find(|r| r.id == rule.id) {
            *old = rule;
        } else {
            into.push(rule);
        }
    }
}

fn parse_pack(file: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let doc: PackDoc = yaml_serde::from_str(text).map_err(|error| RuleError::Yaml {
        file: file.to_string(),
        error,
    })?;
    pack_rules(file, doc, true)
}

/// The rules of a pack document, checked. `check_syntax`: parse each pattern (the build script
/// already did for the embedded packs; the automaton is built on first use either way).
fn pack_rules(file: &str, doc: PackDoc, check_syntax: bool) -> Result<Vec<Rule>, RuleError> {
    if let Some(v) = doc.version.filter(|v| *v != FORMAT_VERSION) {
        return Err(RuleError::Pack {
            file: file.to_string(),
            message: format!("rule format version {v}: this build reads version {FORMAT_VERSION}"),
        });
    }
    let mut seen = std::collections::HashSet::new();
    let mut rules = Vec::new();
    for d in doc.rules {
        let invalid = |message: String| RuleError::Invalid {
            file: file.to_string(),
            id: d.id.clone(),
            message,
        };
        if !seen.insert(d.id.clone()) {
            return Err(invalid("the id is used twice in this file".into()));
        }
        let Some(source_name) = d.source.as_deref().or(doc.source.as_deref()) else {
            return Err(invalid(
                "no `source`: name it in the rule or at the top of the file".into(),
            ));
        };
        let source = LogSource::parse(source_name)
            .ok_or_else(|| invalid(format!("unknown source `{source_name}`")))?;
        let cause = CauseId::parse(&d.cause)
            .ok_or_else(|| invalid(format!("unknown cause id `{}`", d.cause)))?;
        let severity = match d.severity.as_str() {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            "critical" => Severity::Critical,
            other => return Err(invalid(format!("unknown severity `{other}`"))),
        };
        if source == LogSource::NginxAccess {
            return Err(invalid(
                "access-log lines are written by visitors and never yield events".into(),
            ));
        }
        if !d.pattern.starts_with('^') {
            return Err(invalid(
                "the pattern must be anchored with `^` at the start of the message".into(),
            ));
        }
        let reason = match &d.reason {
            Some(r) => Some(
                CauseId::parse(r)
                    .ok_or_else(|| invalid(format!("unknown reason cause id `{r}`")))?,
            ),
            None => None,
        };
        if d.responds.is_some_and(|s| !(400..600).contains(&s)) {
            return Err(invalid(
                "`responds` must be an HTTP error status (400-599)".into(),
            ));
        }
        if d.event.trim().is_empty() || d.fix.trim().is_empty() {
            return Err(invalid("`event` and `fix` must not be empty".into()));
        }
        if substitute(&d.fix, |_| Some("")).is_none() {
            return Err(invalid("`fix`: a `${` is not closed by `}`".into()));
        }
        if check_syntax {
            regex_syntax::ParserBuilder::new()
                .unicode(false)
                .utf8(false)
                .build()
                .parse(&d.pattern)
                .map_err(|e| invalid(e.to_string()))?;
        }
        let regex = std::sync::OnceLock::new();
        rules.push(Rule {
            id: d.id.clone(),
            source,
            pattern: d.pattern,
            event: d.event,
            cause,
            severity,
            fix: d.fix.trim().to_string(),
            responds: d.responds,
            reason,
            samples: d
                .samples
                .matches
                .into_iter()
                .map(|s| Sample {
                    line: s.line,
                    captures: s.captures,
                })
                .collect(),
            no_match: d.samples.no_match,
            origin: file.to_string(),
            regex,
        });
    }
    Ok(rules)
}

/// `origin-agent rules list`: one line per rule (id, source, cause, severity, event, origin).
pub fn list_text(set: &RuleSet) -> String {
    let mut out = String::new();
    let w = set
        .rules
        .iter()
        .map(|r| r.id.len())
        .max()
        .unwrap_or(2)
        .max(2);
    out.push_str(&format!(
        "{:<w$}  {:<12}  {:<26}  {:<8}  {:<28}  {}\n",
        "ID", "SOURCE", "CAUSE", "SEVERITY", "EVENT", "FROM"
    ));
    for r in &set.rules {
        out.push_str(&format!(
            "{:<w$}  {:<12}  {:<26}  {:<8}  {:<28}  {}\n",
            r.id,
            r.source.as_str(),
            r.cause.id(),
            severity_str(r.severity),
            r.event,
            r.origin
        ));
    }
    out.push_str(&format!("{} rules\n", set.rules.len()));
    out
}

pub(crate) fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
        Severity::Critical => "critical",
    }
}

impl RuleSet {
    /// A copy with its matchers rebuilt (for a parser that must own its rule set).
    pub fn clone_compiled(&self) -> RuleSet {
        // Regexes are cheap to clone (shared internals); recompile the matchers.
        RuleSet::from_rules(self.rules.clone()).unwrap_or(RuleSet {
            rules: Vec::new(),
            matchers: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_kept_match_cache_answers_as_a_fresh_one_across_sources() {
        // A parser keeps its automaton's scratch space from line to line (and a reader's worker
        // from chunk to chunk): the answers must be those of a fresh search, also when one
        // cache meets several sources.
        let set = RuleSet::builtin().unwrap();
        let lean = RuleSet::builtin_lean().unwrap();
        assert_eq!(set.rules().len(), lean.rules().len());
        let mut cache = MatchCache::default();
        let mut hits = 0;
        for rule in set.rules() {
            for sample in sample_lines(rule) {
                // The message starts after one of the header's spaces: try the first dozen.
                let starts = std::iter::once(0)
                    .chain(sample.match_indices(' ').map(|(i, _)| i + 1).take(12));
                for at in starts {
                    let text = &sample.as_bytes()[at..];
                    for source in [rule.source, LogSource::NginxError] {
                        let fresh = set.match_index(source, text);
                        let kept = set.match_index_with(source, text, &mut cache);
                        assert_eq!(kept, fresh, "{source:?} {sample}");
                        assert_eq!(lean.match_index(source, text), fresh);
                        hits += usize::from(fresh.is_some());
                    }
                }
            }
        }
        assert!(hits >= set.rules().len(), "{hits} matches");
        // The lean set has the same rules, without their samples.
        assert!(lean
            .rules()
            .iter()
            .all(|r| r.samples.is_empty() && r.no_match.is_empty()));
    }

    #[test]
    fn remembered_answers_are_the_automatons_also_when_messages_repeat() {
        // The memo answers a message seen before, the dead ends one that starts like it: over
        // every sample of every rule (at several starts, so near-identical messages collide in
        // their slots), read twice per source, each answer must be a fresh search's, and the
        // second pass must be served by the memo or the dead ends.
        let set = RuleSet::builtin().unwrap();
        let mut texts: Vec<&[u8]> = Vec::new();
        for rule in set.rules() {
            for sample in sample_lines(rule) {
                let starts =
                    std::iter::once(0).chain(sample.match_indices(' ').map(|(i, _)| i + 1).take(6));
                texts.extend(starts.map(|at| &sample.as_bytes()[at..]));
            }
        }
        let mut cache = MatchCache::default();
        let mut remembered = 0;
        for &source in LogSource::ALL {
            for pass in 0..2 {
                for text in &texts {
                    let fresh = set.match_index(source, text);
                    if pass == 1 && set.has_source(source) {
                        remembered += usize::from(
                            cache.memo.get(text) == Some(fresh)
                                || cache.dead_ends.get(text).is_some(),
                        );
                    }
                    assert_eq!(set.match_index_with(source, text, &mut cache), fresh);
                    // Straight after, the memo holds this message's answer (when short enough),
                    // unless a dead end gave it.
                    if set.has_source(source) && text.len() <= memo::MAX_LEN {
                        let held = cache.memo.get(text);
                        assert!(
                            held == Some(fresh)
                                || (held.is_none() && cache.dead_ends.get(text).is_some()),
                            "{source:?}"
                        );
                    }
                }
            }
        }
        assert!(remembered > 0, "the second passes were served by the memo");
    }

    #[test]
    fn remembered_captures_are_those_of_the_message() {
        // Each rule's samples at several starts, captured through one memo, each twice in a row
        // (the second time from the memo), the memo also holding other rules' messages: the
        // same captures as a fresh search, for the message itself, never the one before it.
        let set = RuleSet::builtin().unwrap();
        let mut memo = CaptureMemo::default();
        let mut captured = 0;
        for _ in 0..2 {
            for (i, rule) in set.rules().iter().enumerate() {
                for sample in &rule.samples {
                    let text = sample.line.as_bytes();
                    for at in std::iter::once(0)
                        .chain(sample.line.match_indices(' ').map(|(k, _)| k + 1).take(8))
                    {
                        let fresh = set.captures(i, &text[at..]).map(|m| {
                            m.captures
                                .into_iter()
                                .map(|(n, v)| (n.to_string(), v))
                                .collect::<Captures>()
                        });
                        let kept = set.captures_with(i, &text[at..], &mut memo).map(|(_, c)| c);
                        assert_eq!(kept, fresh, "{}: {}", rule.id, sample.line);
                        if fresh.is_some() {
                            // Kept: asked again, the memo answers (and the same).
                            assert!(memo.get(i, &text[at..]).is_some());
                            let again = set.captures_with(i, &text[at..], &mut memo);
                            assert_eq!(again.map(|(_, c)| c), fresh);
                        }
                        captured += usize::from(fresh.is_some_and(|c| !c.is_empty()));
                    }
                }
            }
        }
        assert!(
            captured > set.rules().len(),
            "{captured} messages with captures"
        );
    }

    /// A rule's sample lines, those it must match and those it must not.
    fn sample_lines(rule: &Rule) -> impl Iterator<Item = &str> {
        rule.samples
            .iter()
            .map(|s| s.line.as_str())
            .chain(rule.no_match.iter().map(String::as_str))
    }

    /// The first rule of `source`, in priority order, whose own regex matches: the meaning of
    /// `match_index`, without the automaton or the gates.
    fn first_by_regex(set: &RuleSet, source: LogSource, text: &[u8]) -> Option<usize> {
        (0..set.rules().len()).find(|&i| {
            set.rules()[i].source == source && set.rules()[i].regex().unwrap().is_match(text)
        })
    }

    #[test]
    fn gated_matching_picks_the_rule_that_plain_matching_picks() {
        let set = RuleSet::builtin().unwrap();
        // The embedded packs have at least one gated rule (the PHP fatal error after warnings).
        assert!(LogSource::ALL.iter().any(|s| set
            .matcher(*s)
            .is_some_and(|m| !m.gated.is_empty() && m.first.is_some())));
        let mut texts: Vec<(LogSource, Vec<u8>)> = Vec::new();
        for rule in set.rules() {
            for line in sample_lines(rule) {
                // Every message start after one of the header's spaces, whole and cut short.
                let starts =
                    std::iter::once(0).chain(line.match_indices(' ').map(|(i, _)| i + 1).take(6));
                for at in starts {
                    let text = &line.as_bytes()[at..];
                    for cut in [text.len(), text.len() / 2] {
                        texts.push((rule.source, text[..cut].to_vec()));
                    }
                }
            }
        }
        // Messages made of two rules' texts: a warning before a fatal error, and the reverse.
        let msgs: Vec<Vec<u8>> = texts.iter().map(|(_, t)| t.clone()).collect();
        for (i, a) in msgs.iter().enumerate().step_by(41) {
            for b in msgs.iter().skip(i % 7).step_by(97) {
                for source in [LogSource::NginxError, LogSource::Php, LogSource::PhpFpm] {
                    let mut joined = a.clone();
                    joined.push(b'\n');
                    joined.extend_from_slice(b);
                    texts.push((source, joined));
                }
            }
        }
        let gated: Vec<&str> = LogSource::ALL
            .iter()
            .filter_map(|s| set.matcher(*s))
            .flat_map(|m| m.gated.iter().map(|g| set.rules()[g.0].id.as_str()))
            .collect();
        eprintln!("gated: {gated:?}, {} texts", texts.len());
        let mut cache = MatchCache::default();
        let mut hits = 0;
        for (source, text) in &texts {
            let want = first_by_regex(&set, *source, text);
            assert_eq!(
                set.match_index_with(*source, text, &mut cache),
                want,
                "{source:?} {}",
                String::from_utf8_lossy(text)
            );
            hits += usize::from(want.is_some());
        }
        assert!(hits > set.rules().len(), "{hits} of {}", texts.len());
    }

    #[test]
    fn messages_answered_by_a_dead_end_get_the_rules_answer() {
        // Each sample (at a few starts) with its end replaced, at every cut, by text that makes
        // or breaks a rule (a gated one's needed text included): through one cache, so most are
        // answered by a prefix an earlier message died after, every answer must be that of the
        // rules' own regexes in order.
        let set = RuleSet::builtin().unwrap();
        let tails: [&[u8]; 5] = [
            b"",
            b" on line 12",
            b"\nPHP message: PHP Fatal error:  Uncaught Error: x in /a.php:3",
            b" (2: No such file or directory) while connecting to upstream",
            b"\xff\n",
        ];
        let mut cache = MatchCache::default();
        let (mut answered_by_dead_ends, mut checked) = (0, 0);
        for rule in set.rules() {
            for line in sample_lines(rule) {
                let starts =
                    std::iter::once(0).chain(line.match_indices(' ').map(|(i, _)| i + 1).take(3));
                for at in starts {
                    let text = &line.as_bytes()[at..];
                    for cut in (0..=text.len()).step_by(3) {
                        for tail in tails {
                            let mut m = text[..cut].to_vec();
                            m.extend_from_slice(tail);
                            let known = cache.memo.get(&m).is_none()
                                && cache.source == Some(rule.source)
                                && cache.dead_ends.get(&m).is_some();
                            answered_by_dead_ends += usize::from(known);
                            assert_eq!(
                                set.match_index_with(rule.source, &m, &mut cache),
                                first_by_regex(&set, rule.source, &m),
                                "{:?} {}",
                                rule.source,
                                String::from_utf8_lossy(&m)
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(
            answered_by_dead_ends * 4 > checked,
            "{answered_by_dead_ends} of {checked} answered by a dead end"
        );
    }

    #[test]
    fn a_byte_the_automaton_cannot_decide_leaves_the_answer_to_the_rules_in_order() {
        // A Unicode word boundary next to a non-ASCII byte is beyond the lazy DFA: the rules
        // are then tried one by one; ASCII text is still the automaton's.
        let yaml = "rules:\n  - {id: a, source: kernel, pattern: '^café(?u:\\b)', event: a, cause: upstream.down, severity: info, fix: f}\n  - {id: b, source: kernel, pattern: '^caf', event: b, cause: upstream.down, severity: info, fix: f}\n";
        let set = RuleSet::from_yaml("t", yaml).unwrap();
        assert!(set.matcher(LogSource::Kernel).unwrap().first.is_some());
        let mut cache = MatchCache::default();
        for _ in 0..2 {
            assert_eq!(
                set.match_index_with(LogSource::Kernel, b"cafe", &mut cache),
                Some(1)
            );
            assert_eq!(
                set.match_index_with(LogSource::Kernel, "café ok".as_bytes(), &mut cache),
                Some(0)
            );
            assert_eq!(
                set.match_index_with(LogSource::Kernel, "caféx".as_bytes(), &mut cache),
                Some(1)
            );
            assert_eq!(
                set.match_index_with(LogSource::Kernel, b"tea", &mut cache),
                None
            );
        }
    }

    #[test]
    fn a_gated_rule_before_the_automatons_answer_still_wins() {
        // `a` may scan a line, then needs `needle here`: gated; `b` (after it) and `c` (before it) are not.
        let yaml = "rules:\n  - {id: c, source: php_fpm, pattern: '^c', event: c, cause: upstream.down, severity: info, fix: f}\n  - {id: a, source: php_fpm, pattern: '^x(?:[^\\n]*\\n)?needle here', event: a, cause: upstream.down, severity: info, fix: f}\n  - {id: b, source: php_fpm, pattern: '^x', event: b, cause: upstream.down, severity: info, fix: f}\n  - {id: d, source: php_fpm, pattern: '^y(?:.*\\n)*needle here', event: d, cause: upstream.down, severity: info, fix: f}\n";
        let set = RuleSet::from_yaml("t", yaml).unwrap();
        let m = set.matcher(LogSource::PhpFpm).unwrap();
        assert_eq!(m.gated.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1, 3]);
        let id = |t: &str| {
            set.match_index(LogSource::PhpFpm, t.as_bytes())
                .map(|i| set.rules()[i].id.as_str())
        };
        assert_eq!(id("x and a\nneedle here"), Some("a"));
        assert_eq!(id("xneedle here"), Some("a"));
        assert_eq!(id("x and no needle"), Some("b"));
        assert_eq!(id("x and a needle here"), Some("b"));
        assert_eq!(id("needle here x"), None);
        assert_eq!(id("y then\nneedle here"), Some("d"));
        assert_eq!(id("y then needle here"), None);
        assert_eq!(id("c\nneedle here"), Some("c"));
        // Only gated rules in a source: no automaton patterns at all.
        let yaml = "rules:\n  - {id: d, source: kernel, pattern: '^y(?:.*\\n)*needle here', event: d, cause: upstream.down, severity: info, fix: f}\n";
        let set = RuleSet::from_yaml("t", yaml).unwrap();
        assert_eq!(
            set.match_index(LogSource::Kernel, b"y\nneedle here"),
            Some(0)
        );
        assert_eq!(set.match_index(LogSource::Kernel, b"y needle"), None);
    }

    #[test]
    fn unanchored_patterns_and_access_rules_are_refused() {
        let base = |source: &str, pattern: &str| {
            format!("rules:\n  - id: t.x\n    source: {source}\n    pattern: '{pattern}'\n    event: e\n    cause: upstream.down\n    severity: error\n    fix: f\n")
        };
        assert!(RuleSet::from_yaml("t", &base("nginx_error", "connect")).is_err());
        assert!(RuleSet::from_yaml("t", &base("nginx_access", "^x")).is_err());
        assert!(RuleSet::from_yaml("t", &base("nginx_error", "^x")).is_ok());
        assert!(matches!(
            RuleSet::from_yaml("t", &base("nginx_error", "^(x")),
            Err(RuleError::Invalid { .. })
        ));
        assert!(RuleSet::from_yaml("t", &base("nowhere", "^x")).is_err());
        let unknown_key = "rules:\n  - id: a\n    bogus: 1\n";
        assert!(matches!(
            RuleSet::from_yaml("t", unknown_key),
            Err(RuleError::Yaml { .. })
        ));
    }

    #[test]
    fn the_busiest_log_tells_rules_with_one_prefix_apart_and_skips_the_rest() {
        let set = RuleSet::builtin().unwrap();
        let id = |msg: &str| {
            set.match_index(LogSource::NginxError, msg.as_bytes())
                .map(|i| set.rules()[i].id.as_str())
        };
        // Five rules start `connect() to`; the errno decides.
        let connect = |errno: &str| {
            format!("connect() to unix:/run/php/php8.2-fpm.sock failed ({errno}) while connecting to upstream")
        };
        assert_eq!(
            id(&connect("2: No such file or directory")),
            Some("nginx.connect-enoent")
        );
        assert_eq!(
            id(&connect("11: Resource temporarily unavailable")),
            Some("nginx.connect-eagain")
        );
        assert_eq!(
            id(&connect("111: Connection refused")),
            Some("nginx.connect-refused")
        );
        assert_eq!(id(&connect("99: Cannot assign requested address")), None);
        // A warning shares its first 50 bytes with the database rules and is none of them.
        assert_eq!(
            id(
                r#"FastCGI sent in stderr: "PHP message: PHP Warning:  Undefined array key "id" in /x.php on line 3"#
            ),
            None
        );
        // A rule that starts with a name (no literal prefix) still matches, and only at the start.
        assert_eq!(
            id("php-fpm could not be resolved (3: Host not found)"),
            Some("nginx.resolve-failed")
        );
        assert_eq!(
            id("x: php-fpm could not be resolved (3: Host not found)"),
            None
        );
        assert_eq!(id(""), None);
    }

    #[test]
    fn site_rules_too_big_for_one_automaton_still_match_in_order() {
        // 400 rules with long bounded repetitions: together past the automaton size limit.
        let mut yaml = String::from("rules:\n");
        for i in 0..400 {
            yaml.push_str(&format!(
                "  - {{id: r{i}, source: php_fpm, pattern: '^\\[pool (?P<pool>[^\\]]+)\\] child \\d+ said r{i}x (?P<what>[A-Za-z ]+[0-9]{{1,2000}})', event: e, cause: upstream.crashed, severity: error, fix: f}}\n"
            ));
        }
        let set = RuleSet::from_yaml("many.yaml", &yaml).unwrap();
        assert!(set.matcher(LogSource::PhpFpm).unwrap().first.is_none());
        let hit = set.match_index(
            LogSource::PhpFpm,
            b"[pool www] child 12 said r399x segfault at 42",
        );
        assert_eq!(hit.map(|i| set.rules()[i].id.as_str()), Some("r399"));
        assert_eq!(
            set.match_index(LogSource::PhpFpm, b"[pool www] child 12 said nothing"),
            None
        );
    }

    #[test]
    fn a_file_level_source_and_version_and_fix_placeholders() {
        let pack = |head: &str, rule_source: &str, fix: &str| {
            format!("{head}rules:\n  - {{id: a, {rule_source}pattern: '^x (?P<n>\\d+)', event: e, cause: upstream.down, severity: info, fix: '{fix}'}}\n")
        };
        // The file's source is the default; a rule's own source wins.
        let set = RuleSet::from_yaml("t", &pack("version: 1\nsource: php_fpm\n", "", "f")).unwrap();
        assert_eq!(set.rules()[0].source, LogSource::PhpFpm);
        let set =
            RuleSet::from_yaml("t", &pack("source: php_fpm\n", "source: kernel, ", "f")).unwrap();
        assert_eq!(set.rules()[0].source, LogSource::Kernel);
        // No source anywhere, a future format version, an unclosed placeholder: refused.
        let err = RuleSet::from_yaml("t", &pack("", "", "f")).unwrap_err();
        assert!(err.to_string().contains("no `source`"), "{err}");
        let err =
            RuleSet::from_yaml("t", &pack("version: 2\nsource: php_fpm\n", "", "f")).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(RuleSet::from_yaml("t", &pack("source: php_fpm\n", "", "raise ${n")).is_err());
        // Placeholders are filled from the event's fields; `$var` without braces stays.
        let set =
            RuleSet::from_yaml("t", &pack("source: php_fpm\n", "", "set ${n} in $conf")).unwrap();
        let fields: FieldMap = [("n", "7")].into_iter().collect();
        assert_eq!(
            set.rules()[0].fix_with(&fields).as_deref(),
            Some("set 7 in $conf")
        );
        assert_eq!(set.rules()[0].fix_with(&FieldMap::new()), None);
    }

    #[test]
    fn the_first_rule_in_file_order_wins() {
        let yaml = "rules:\n  - {id: a, source: php_fpm, pattern: '^x', event: a, cause: upstream.down, severity: info, fix: f}\n  - {id: b, source: php_fpm, pattern: '^xy', event: b, cause: upstream.down, severity: info, fix: f}\n  - {id: c, source: php_fpm, pattern: '^.*z', event: c, cause: upstream.down, severity: info, fix: f}\n";
        let set = RuleSet::from_yaml("t", yaml).unwrap();
        let id = |m: &[u8]| {
            set.match_message(LogSource::PhpFpm, m)
                .map(|m| m.rule.id.clone())
        };
        assert_eq!(id(b"xy").as_deref(), Some("a"));
        assert_eq!(id(b"qz").as_deref(), Some("c"));
        assert_eq!(id(b"q"), None);
    }

    #[test]
    fn extra_dir_overrides_by_id_and_adds() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = RuleSet::builtin().unwrap();
        let first = builtin.rules()[0].clone();
        let yaml = format!(
            "rules:\n  - id: {}\n    source: nginx_error\n    pattern: '^no live upstreams'\n    event: overridden\n    cause: upstream.no-live\n    severity: error\n    fix: f\n  - id: site.new\n    source: nginx_error\n    pattern: '^my own'\n    event: mine\n    cause: upstream.down\n    severity: error\n    fix: f\n",
            first.id
        );
        std::fs::write(dir.path().join("site.yaml"), yaml).unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "not yaml").unwrap();
        let set = RuleSet::load(Some(dir.path())).unwrap();
        assert_eq!(set.rules().len(), builtin.rules().len() + 1);
        assert_eq!(set.rules()[0].event, "overridden");
        assert!(set.rules().iter().any(|r| r.id == "site.new"));
        let text = list_text(&set);
        assert!(text.contains("site.new") && text.contains("site.yaml"));
        // A missing directory is just the builtin set.
        let set = RuleSet::load(Some(&dir.path().join("missing"))).unwrap();
        assert_eq!(set.rules().len(), builtin.rules().len());
    }
}
