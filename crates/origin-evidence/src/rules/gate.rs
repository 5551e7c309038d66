//! Required-text gates: which rules the source automaton leaves out, and the literals that let
//! a line skip them.
//!
//! A rule whose pattern can run over arbitrary text before the text it needs (the PHP fatal
//! error that may follow up to 16 warning lines: `PHP Warning[^\n]*\n…PHP Fatal error`) keeps
//! the source's automaton alive to the end of every line that starts like it (every PHP
//! warning). Such a rule is taken out of the automaton and tried on its own, only on lines that
//! contain one of the literals every match of it must contain. The literals are derived from
//! the pattern (never written by hand), so a new rule is gated, or not, by its shape alone, and
//! gating never changes which rule wins (see [`super::RuleSet::match_index_with`]).

use regex_syntax::hir::literal::Extractor;
use regex_syntax::hir::{Class, Hir, HirKind};

/// The shortest literal worth a search of the whole message.
const MIN_LITERAL: usize = 8;
/// The most literals one gate searches for.
const MAX_LITERALS: usize = 8;

/// The literals that one of must appear in every text `pattern` matches, when the pattern has
/// an optional part that scans arbitrary text (an unbounded repetition of a class holding every
/// printable ASCII byte) before them; `None` when it has none, or no good literal follows it.
///
/// Only an *optional* scanning part counts: the automaton tries it on every line that starts
/// like it, and that is often a common line of another kind (the warnings that may come before
/// a fatal error). A required scan (`(?P<request>.*)`) is only reached by lines that start like
/// the rule itself, near-matches that the automaton settles without help.
#[cfg(test)]
pub(super) fn gate_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    gate_literals_of(&parse(pattern)?)
}

/// A rule's pattern as the source automaton reads it (bytes, no Unicode classes): parsed once
/// for both the gate and the automaton.
pub(super) fn parse(pattern: &str) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()
}

/// [`gate_literals`] of a parsed pattern.
pub(super) fn gate_literals_of(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    let scan = parts.iter().position(optional_scan)?;
    let mut best: Option<Vec<Vec<u8>>> = None;
    for i in scan + 1..parts.len() {
        // Every match of the rest of the pattern starts with one of these.
        let seq = Extractor::new().extract(&Hir::concat(parts[i..].to_vec()));
        let Some(lits) = seq.literals() else { continue };
        let mut lits: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
        // A literal that contains another of the set adds nothing: the shorter one is there too.
        lits.sort_by_key(Vec::len);
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for l in lits {
            if !kept.iter().any(|k| memchr::memmem::find(&l, k).is_some()) {
                kept.push(l);
            }
        }
        // The start the literals share is in every line that starts like the rule's other
        // branches too (`PHP message: PHP ` before a warning): search for what tells them apart.
        if kept.len() > 1 {
            let common = kept.iter().skip(1).fold(kept[0].len(), |n, l| {
                n.min(l.iter().zip(&kept[0]).take_while(|(a, b)| a == b).count())
            });
            if kept.iter().all(|l| l.len() - common >= MIN_LITERAL) {
                for l in &mut kept {
                    l.drain(..common);
                }
            }
        }
        // Text all of them hold is one search instead of several.
        if let Some(common) = longest_common(&kept).filter(|c| c.len() >= MIN_LITERAL) {
            kept = vec![common];
        }
        let shortest = kept.iter().map(Vec::len).min().unwrap_or(0);
        if kept.is_empty() || kept.len() > MAX_LITERALS || shortest < MIN_LITERAL {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|b| b.iter().map(Vec::len).min().unwrap_or(0) < shortest)
        {
            best = Some(kept);
        }
    }
    best
}

/// The longest byte string that every one of `lits` (two or more) contains.
fn longest_common(lits: &[Vec<u8>]) -> Option<Vec<u8>> {
    let (first, rest) = lits.split_first()?;
    if rest.is_empty() {
        return None;
    }
    (1..=first.len()).rev().find_map(|n| {
        first
            .windows(n)
            .find(|w| rest.iter().all(|l| memchr::memmem::find(l, w).is_some()))
            .map(<[u8]>::to_vec)
    })
}

/// The text every match of `pattern` starts with (anchored patterns start at the message's
/// start): the start its prefix literals share; empty when there is none.
#[cfg(test)]
pub(super) fn prefix(pattern: &str) -> Vec<u8> {
    parse(pattern).map(|h| prefix_of(&h)).unwrap_or_default()
}

/// [`prefix`] of a parsed pattern.
pub(super) fn prefix_of(hir: &Hir) -> Vec<u8> {
    let seq = Extractor::new().extract(hir);
    let Some((first, rest)) = seq.literals().and_then(|l| l.split_first()) else {
        return Vec::new();
    };
    let n = rest.iter().fold(first.len(), |n, l| {
        n.min(
            l.as_bytes()
                .iter()
                .zip(first.as_bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        )
    });
    first.as_bytes()[..n].to_vec()
}

/// A search for any of a gate's literals: one `memmem` each (a handful of long, rare literals:
/// cheaper than one multi-literal search, which stops at every shared first bytes).
/// Checked first: a message that does not start with the rule's `prefix` is not searched.
#[derive(Debug)]
pub(super) struct Needs {
    starts: Vec<u8>,
    finders: Vec<memchr::memmem::Finder<'static>>,
}

impl Needs {
    pub(super) fn new(starts: Vec<u8>, literals: &[Vec<u8>]) -> Needs {
        Needs {
            starts,
            finders: literals
                .iter()
                .map(|l| memchr::memmem::Finder::new(l).into_owned())
                .collect(),
        }
    }

    /// True when `text` may match: it starts like the rule and contains one of the literals.
    pub(super) fn found_in(&self, text: &[u8]) -> bool {
        text.starts_with(&self.starts) && self.finders.iter().any(|f| f.find(text).is_some())
    }
}

/// True when `h` can run over arbitrary text: an unbounded repetition of a class that holds
/// every printable ASCII byte (`[^\n]*`, `.+`, `[\s\S]*`), anywhere inside it.
fn scans(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Repetition(r) => (r.max.is_none() && broad(&r.sub)) || scans(&r.sub),
        HirKind::Capture(c) => scans(&c.sub),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => hs.iter().any(scans),
        _ => false,
    }
}

/// True when `h` holds an optional group (`(?:…)?`, `{0,n}`) that scans.
fn optional_scan(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Repetition(r) => {
            (r.min == 0 && !matches!(r.sub.kind(), HirKind::Class(_)) && scans(&r.sub))
                || optional_scan(&r.sub)
        }
        HirKind::Capture(c) => optional_scan(&c.sub),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => hs.iter().any(optional_scan),
        _ => false,
    }
}

fn broad(h: &Hir) -> bool {
    let covers = |lo: u32, hi: u32| lo <= 0x20 && hi >= 0x7e;
    match h.kind() {
        HirKind::Class(Class::Bytes(c)) => c
            .ranges()
            .iter()
            .any(|r| covers(r.start().into(), r.end().into())),
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .any(|r| covers(r.start().into(), r.end().into())),
        HirKind::Capture(c) => broad(&c.sub),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_scanning_patterns_get_a_gate_and_its_literals_are_required() {
        // The warning-then-fatal shape: gated on the fatal or parse error text.
        let lits = gate_literals(
            r#"^FastCGI sent in stderr: "(?:PHP message: PHP (?:Warning|Notice)[^\n]*\n(?:[^\n]*\n){0,16}?)?PHP message: PHP (?:Fatal|Parse) error: {1,3}(?P<error>[^\n"]+)"#,
        )
        .unwrap();
        assert_eq!(lits, vec![b" error: ".to_vec()]);
        // No optional scan before the text it needs: the automaton settles such lines itself.
        assert_eq!(
            gate_literals(
                r"^connect\(\) to (?P<t>[^ ]+?) failed \((?P<errno>111): [^)]*\) while connecting to upstream"
            ),
            None
        );
        assert_eq!(gate_literals(r"^upstream timed out"), None);
        assert_eq!(
            gate_literals(
                r#"^\[pool (?P<pool>[^\]]+)\] child \d+, script '[^']*' \(request: "(?P<request>.*)"\) execution timed out \("#
            ),
            None
        );
        // An optional scan followed only by short or optional text: nothing worth a search.
        assert_eq!(gate_literals(r"^x(?:y[^\n]*\n)? in (?P<f>/\S+)"), None);
        assert_eq!(gate_literals(r"^x(?:y.*z)?(?: on line \d+)?"), None);
        // Alternatives each bring their own literal; a literal that contains another is dropped.
        let lits = gate_literals(
            r"^x(?:.*\n)*(?:Allowed memory size|Maximum execution time|Allowed memory size of)",
        )
        .unwrap();
        assert_eq!(
            lits,
            vec![
                b"Allowed memory size".to_vec(),
                b"Maximum execution time".to_vec()
            ]
        );
        assert_eq!(
            longest_common(&[b"abcdef".to_vec(), b"xcdey".to_vec(), b"cde".to_vec()]),
            Some(b"cde".to_vec())
        );
        assert_eq!(longest_common(&[b"ab".to_vec(), b"cd".to_vec()]), None);
        assert_eq!(longest_common(&[b"ab".to_vec()]), None);
        assert_eq!(
            prefix(r#"^FastCGI sent in stderr: "(?:x[^\n]*\n)?y"#),
            b"FastCGI sent in stderr: \"".to_vec()
        );
        assert_eq!(prefix(r"^(?:abc|abd)e"), b"ab".to_vec());
        assert!(prefix(r"^(?:ab|cd)e").is_empty());
        assert!(prefix(r"^.*x").is_empty());
        // Unparsable patterns are simply not gated.
        assert_eq!(gate_literals("^(x"), None);
    }
}
