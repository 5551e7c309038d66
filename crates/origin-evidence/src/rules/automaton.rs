//! A source's automaton: its patterns compiled together into one lazy DFA (leftmost-first,
//! anchored at the message's start), walked by hand so that a search also says where the
//! automaton stopped reading.
//!
//! That position is what makes a prefix memo possible (see `memo::DeadEnds`): once the DFA
//! reaches its dead state after `n` bytes, no byte after them can change the answer, so every
//! later message that starts with the same `n` bytes gets the same answer. PHP warnings that
//! differ only in their file and line, `open() "…" failed` with a different path each time: the
//! automaton decides them in their first few dozen bytes, and the memo answers the rest.
//!
//! The walk is the same as `regex-automata`'s own forward search (match states are delayed by
//! one byte; the last match seen before the dead state or the end wins), without a prefilter
//! (the search is anchored) and without giving up (a slow automaton is still a correct one).

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::{Anchored, Input, MatchError, MatchKind, PatternID};
use regex_syntax::hir::Hir;

/// The largest compiled automaton (as `regex-automata`'s meta regex allows by default): past
/// it, a source's rules are tried one by one.
const NFA_SIZE_LIMIT: usize = 10 << 20;

/// What a walk over one message found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Walk {
    /// The pattern the automaton reports (the first in priority order that matches).
    pub(super) pattern: Option<PatternID>,
    /// `Some(n)`: the automaton died after reading `n` bytes, so the answer is that of every
    /// message starting with them. `None`: it read the whole message.
    pub(super) decided_after: Option<usize>,
}

/// `hirs` as one leftmost-first lazy DFA; `None` when it passes the size limit.
pub(super) fn build(hirs: &[Hir]) -> Option<DFA> {
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .utf8(false)
                .which_captures(thompson::WhichCaptures::None)
                .nfa_size_limit(Some(NFA_SIZE_LIMIT)),
        )
        .build_many_from_hir(hirs)
        .ok()?;
    DFA::builder()
        .configure(
            DFA::config()
                .match_kind(MatchKind::LeftmostFirst)
                // A site rule's Unicode word boundary: decided on ASCII text, and a walk that
                // meets another byte stops with an error (the rules are then tried one by one).
                .unicode_word_boundary(true),
        )
        .build_from_nfa(nfa)
        .ok()
}

/// Walks `message` through `dfa` from its anchored start. An error (a non-ASCII byte where a
/// site rule's Unicode word boundary would need it) leaves the answer to the rules' own
/// regexes.
pub(super) fn walk(dfa: &DFA, cache: &mut Cache, message: &[u8]) -> Result<Walk, MatchError> {
    let input = Input::new(message).anchored(Anchored::Yes);
    let mut sid = dfa.start_state_forward(cache, &input)?;
    let mut pattern = None;
    let mut at = 0;
    loop {
        // The common step, between ordinary states along transitions already computed: one
        // table read per byte.
        if !sid.is_tagged() {
            while let Some(&byte) = message.get(at) {
                let next = dfa.next_state_untagged(cache, sid, byte);
                if next.is_tagged() {
                    break;
                }
                sid = next;
                at += 1;
            }
        }
        // Anything else takes the full step: a match state to leave, a transition not computed
        // yet, a match, the dead state.
        let Some(&byte) = message.get(at) else { break };
        sid = dfa
            .next_state(cache, sid, byte)
            .map_err(|_| MatchError::gave_up(at))?;
        at += 1;
        if sid.is_match() {
            pattern = Some(dfa.match_pattern(cache, sid, 0));
        } else if sid.is_dead() {
            return Ok(Walk {
                pattern,
                decided_after: Some(at),
            });
        } else if sid.is_quit() {
            return Err(MatchError::quit(byte, at - 1));
        }
    }
    sid = dfa
        .next_eoi_state(cache, sid)
        .map_err(|_| MatchError::gave_up(message.len()))?;
    if sid.is_match() {
        pattern = Some(dfa.match_pattern(cache, sid, 0));
    }
    Ok(Walk {
        pattern,
        decided_after: None,
    })
}

/// The automaton's answer for `message` by `regex-automata`'s own search (unrolled, a few
/// instructions per byte), without where it was decided: for logs whose messages share no
/// decided prefixes (a pid before the automaton dies), where the walk would find none to keep.
pub(super) fn search(dfa: &DFA, cache: &mut Cache, message: &[u8]) -> Result<Walk, MatchError> {
    let input = Input::new(message).anchored(Anchored::Yes);
    Ok(Walk {
        pattern: dfa.try_search_fwd(cache, &input)?.map(|m| m.pattern()),
        decided_after: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dfa(patterns: &[&str]) -> DFA {
        let hirs: Vec<Hir> = patterns
            .iter()
            .map(|p| super::super::gate::parse(p).unwrap())
            .collect();
        build(&hirs).unwrap()
    }

    /// The answer `regex-automata`'s own search gives (the pattern of its half match).
    fn searched(dfa: &DFA, cache: &mut Cache, message: &[u8]) -> Option<PatternID> {
        let input = Input::new(message).anchored(Anchored::Yes);
        dfa.try_search_fwd(cache, &input)
            .unwrap()
            .map(|m| m.pattern())
    }

    #[test]
    fn the_walk_answers_as_the_search_and_stops_where_the_answer_is_decided() {
        let d = dfa(&[
            r"^upstream timed out \((110): [^)]*\)",
            r"^upstream",
            r"^connect\(\) to (\S+) failed \((2|13)\)$",
            r"^x\b",
        ]);
        let mut cache = d.create_cache();
        let messages: &[&[u8]] = &[
            b"upstream timed out (110: Connection timed out) while reading",
            b"upstream sent too big header",
            b"upstrea",
            b"connect() to unix:/a.sock failed (2)",
            b"connect() to unix:/a.sock failed (2) and more",
            b"connect() to unix:/a.sock failed (3)",
            b"open() \"/var/www/x\" failed",
            b"x",
            b"x y",
            b"xy",
            b"",
            b"\xff\xfe upstream",
        ];
        for m in messages {
            let w = walk(&d, &mut cache, m).unwrap();
            assert_eq!(w.pattern, searched(&d, &mut cache, m), "{m:?}");
            assert_eq!(search(&d, &mut cache, m).unwrap().pattern, w.pattern);
            if let Some(n) = w.decided_after {
                // Anything after the first n bytes changes nothing.
                for tail in [&b""[..], b" (2)", b"\n", b"))))", b"\xff"] {
                    let mut other = m[..n].to_vec();
                    other.extend_from_slice(tail);
                    assert_eq!(
                        walk(&d, &mut cache, &other).unwrap().pattern,
                        w.pattern,
                        "{m:?} decided after {n}, then {tail:?}"
                    );
                    assert_eq!(searched(&d, &mut cache, &other), w.pattern);
                }
            }
        }
        // The second pattern matches at "upstream" and nothing more can win: decided there.
        let w = walk(&d, &mut cache, b"upstream sent too big header").unwrap();
        assert_eq!(w.pattern, Some(PatternID::must(1)));
        assert!(w.decided_after.unwrap() <= b"upstream s".len());
        // No pattern starts with 'o': decided after one byte.
        let w = walk(&d, &mut cache, b"open() failed").unwrap();
        assert_eq!((w.pattern, w.decided_after), (None, Some(1)));
        // `$` needs the end: never decided early.
        let w = walk(&d, &mut cache, b"connect() to unix:/a.sock failed (2)").unwrap();
        assert_eq!(w.pattern, Some(PatternID::must(2)));
        assert_eq!(w.decided_after, None);
    }
}
