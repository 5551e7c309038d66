//! The answers to recent messages: which rule (if any) each matched, so that a message seen a
//! moment ago is not walked through the automaton again.
//!
//! Server-side logs repeat themselves: an nginx error log under a failing upstream is thousands
//! of `upstream timed out (110: Connection timed out) while reading response header from
//! upstream`, differing only in the header and the `, client: …` tail that rules never see. The
//! rule a message matches is a function of its bytes alone (for one rule set and source), so a
//! small table of recent messages, compared byte for byte, returns the same answer the
//! automaton would, for the price of a `memcmp` instead of a DFA walk.
//!
//! The table is direct-mapped: a message's slot comes from its length and its first and last
//! eight bytes; a different message in that slot (or an empty slot) is a miss, and the answer
//! computed for it replaces the slot's. Messages longer than [`MAX_LEN`] are not kept (a PHP
//! stack trace is rarely repeated verbatim, and comparing it would cost more than it saves).
//! Memory: [`SLOTS`] × [`MAX_LEN`] bytes, allocated on the first store.
//!
//! Messages that differ only after the point where the automaton made up its mind are kept
//! apart by that table, but not by [`DeadEnds`]: it holds the prefixes after which the automaton
//! died (see `automaton`), each with the answer it had by then. Any message that starts with one
//! gets that answer without a walk: PHP warnings that differ only in their file and line, file
//! errors with a different path each time. The rules left out of the automaton (`gate`) are
//! still tried on the whole message.
//!
//! The same holds for the captures an event is built from: [`CaptureMemo`] keeps, per rule, the
//! last message captured and its captures. In an outage one fatal error (stack trace included)
//! repeats on every request; its captures are read once.

/// Slots in the table (a power of two).
const SLOTS: usize = 64;
/// The longest message kept.
pub(super) const MAX_LEN: usize = 256;
/// `answer` of a message that matched no rule.
const NO_MATCH: u32 = u32::MAX;

/// Recent messages of one source and the rule index each matched.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    /// `SLOTS` runs of `MAX_LEN` bytes: the message held by each slot.
    bytes: Vec<u8>,
    /// Each slot's message length; `None`: empty.
    len: Vec<Option<u16>>,
    /// Each slot's answer (a rule index, or [`NO_MATCH`]).
    answer: Vec<u32>,
}

/// An answer as stored: a rule index, or [`NO_MATCH`]; `None` for an index that would not fit
/// (or would read as "no match"), which is then not kept.
fn encode(answer: Option<usize>) -> Option<u32> {
    match answer {
        None => Some(NO_MATCH),
        Some(i) => u32::try_from(i).ok().filter(|&i| i != NO_MATCH),
    }
}

fn decode(answer: u32) -> Option<usize> {
    match answer {
        NO_MATCH => None,
        i => Some(i as usize),
    }
}

impl Memo {
    /// The answer stored for `message`, when the table holds exactly this message.
    #[inline]
    pub(crate) fn get(&self, message: &[u8]) -> Option<Option<usize>> {
        if message.len() > MAX_LEN || self.bytes.is_empty() {
            return None;
        }
        let s = slot(message);
        if self.len[s] != Some(message.len() as u16) {
            return None;
        }
        let at = s * MAX_LEN;
        if self.bytes[at..at + message.len()] != *message {
            return None;
        }
        Some(decode(self.answer[s]))
    }

    /// Remembers that `message` matched `answer` (replacing the slot's message).
    #[inline]
    pub(crate) fn put(&mut self, message: &[u8], answer: Option<usize>) {
        let Some(answer) = encode(answer) else { return };
        if message.len() > MAX_LEN {
            return;
        }
        if self.bytes.is_empty() {
            self.bytes = vec![0; SLOTS * MAX_LEN];
            self.len = vec![None; SLOTS];
            self.answer = vec![NO_MATCH; SLOTS];
        }
        let s = slot(message);
        let at = s * MAX_LEN;
        self.bytes[at..at + message.len()].copy_from_slice(message);
        self.len[s] = Some(message.len() as u16);
        self.answer[s] = answer;
    }

    /// Forgets every message (the cache is about to serve another source).
    pub(crate) fn clear(&mut self) {
        self.len.iter_mut().for_each(|l| *l = None);
    }
}

/// The slot of `message`: its length mixed with its first and last eight bytes.
#[inline]
fn slot(message: &[u8]) -> usize {
    let n = message.len();
    let (first, last) = match (message.first_chunk::<8>(), message.last_chunk::<8>()) {
        (Some(a), Some(b)) => (u64::from_le_bytes(*a), u64::from_le_bytes(*b)),
        // Shorter than eight bytes: one zero-padded word.
        _ => {
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(message);
            let w = u64::from_le_bytes(w);
            (w, w)
        }
    };
    let mixed = (first ^ last.rotate_left(29) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - SLOTS.trailing_zeros())) as usize
}

/// Sets of the dead-end table (a power of two), each of [`WAYS`] prefixes.
const SETS: usize = 16;
const WAYS: usize = 4;
/// How many of a message's first bytes pick its set.
const KEY_LEN: usize = 16;

/// Prefixes after which the source's automaton died, each with the answer it had by then: any
/// message that starts with one has that answer (see the module's doc).
#[derive(Debug, Default)]
pub(crate) struct DeadEnds {
    /// `SETS * WAYS` runs of `MAX_LEN` bytes: the prefix held by each entry.
    bytes: Vec<u8>,
    /// Each entry's prefix length; 0: empty (the automaton reads a byte before it dies).
    len: Vec<u16>,
    /// Each entry's answer (a rule index, or [`NO_MATCH`]).
    answer: Vec<u32>,
    /// Per set, the way the next store replaces.
    next: Vec<u8>,
    /// Misses that may still be walked (see [`DeadEnds::walk_next_miss`]); `None`: not
    /// started (the first [`FIRST_WALKS`] are).
    credit: Option<u32>,
    /// Misses searched since the last one walked.
    searched: u32,
}

/// Misses walked before any dead end has answered: enough to learn a log's usual prefixes.
const FIRST_WALKS: u32 = 32;
/// Each answer from a dead end pays for this many walks (a walk costs a search and half again;
/// an answer saves a search), up to [`MAX_CREDIT`].
const WALKS_PER_HIT: u32 = 2;
const MAX_CREDIT: u32 = 64;
/// Without credit, one miss in this many is still walked, to learn prefixes that appear later.
const RELEARN_EVERY: u32 = 16;

impl DeadEnds {
    /// The answer of a stored prefix that `message` starts with.
    #[inline]
    pub(crate) fn get(&self, message: &[u8]) -> Option<Option<usize>> {
        if self.bytes.is_empty() {
            return None;
        }
        let first = dead_set(message) * WAYS;
        (first..first + WAYS).find_map(|e| {
            let n = usize::from(self.len[e]);
            let at = e * MAX_LEN;
            (n != 0 && message.get(..n) == Some(&self.bytes[at..at + n]))
                .then(|| decode(self.answer[e]))
        })
    }

    /// Counts a lookup's outcome, and after a miss says whether to walk the message (to learn
    /// where it is decided) rather than search it. Some logs decide every message after a part
    /// that differs each time (`[pool www] child 20601 started`: the pid comes before the
    /// automaton dies): no dead end ever answers, and walking them all would cost more than the
    /// memo saves. Only which way the answer is found changes: it is the same answer.
    pub(crate) fn walk_next_miss(&mut self, hit: bool) -> bool {
        let credit = self.credit.get_or_insert(FIRST_WALKS);
        if hit {
            *credit = (*credit + WALKS_PER_HIT).min(MAX_CREDIT);
            return false;
        }
        if *credit > 0 {
            *credit -= 1;
            return true;
        }
        self.searched += 1;
        if self.searched >= RELEARN_EVERY {
            self.searched = 0;
            return true;
        }
        false
    }

    /// Remembers that every message starting with `message[..decided_after]` has `answer`.
    /// `message` is the whole message that was walked: its first bytes pick the set, as they
    /// will for the messages looked up.
    #[inline]
    pub(crate) fn put(&mut self, message: &[u8], decided_after: usize, answer: Option<usize>) {
        let Some(answer) = encode(answer) else { return };
        let Some(prefix) = message.get(..decided_after) else {
            return;
        };
        if prefix.is_empty() || prefix.len() > MAX_LEN {
            return;
        }
        if self.bytes.is_empty() {
            self.bytes = vec![0; SETS * WAYS * MAX_LEN];
            self.len = vec![0; SETS * WAYS];
            self.answer = vec![NO_MATCH; SETS * WAYS];
            self.next = vec![0; SETS];
        }
        let set = dead_set(message);
        let way = usize::from(self.next[set]);
        self.next[set] = ((way + 1) % WAYS) as u8;
        let e = set * WAYS + way;
        let at = e * MAX_LEN;
        self.bytes[at..at + prefix.len()].copy_from_slice(prefix);
        self.len[e] = prefix.len() as u16;
        self.answer[e] = answer;
    }

    /// Forgets every prefix (the cache is about to serve another source).
    pub(crate) fn clear(&mut self) {
        self.len.iter_mut().for_each(|l| *l = 0);
        self.credit = None;
        self.searched = 0;
    }
}

/// The dead-end set of `message`: its first [`KEY_LEN`] bytes (fewer when it is shorter).
#[inline]
fn dead_set(message: &[u8]) -> usize {
    let mut key = [0u8; KEY_LEN];
    let n = message.len().min(KEY_LEN);
    key[..n].copy_from_slice(&message[..n]);
    let a = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let b = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
    let mixed = (a ^ b.rotate_left(29) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - SETS.trailing_zeros())) as usize
}

/// The longest message whose captures are kept (per rule).
const MAX_CAPTURED_LEN: usize = 2048;

/// The named captures of one message, by name (see [`super::RuleSet::captures_with`]).
pub type Captures = Vec<(String, String)>;

/// Per rule, the last message captured and its captures.
#[derive(Debug, Default)]
pub struct CaptureMemo {
    last: Vec<Option<(Box<[u8]>, Captures)>>,
}

impl CaptureMemo {
    /// The captures kept for rule `index` when its last message was exactly `message`.
    pub(super) fn get(&self, index: usize, message: &[u8]) -> Option<&Captures> {
        match self.last.get(index) {
            Some(Some((m, c))) if **m == *message => Some(c),
            _ => None,
        }
    }

    /// Keeps `captures` as those of `message` for rule `index` (a message too long is not kept).
    pub(super) fn put(&mut self, index: usize, message: &[u8], captures: &Captures) {
        if message.len() > MAX_CAPTURED_LEN {
            return;
        }
        if self.last.len() <= index {
            self.last.resize_with(index + 1, || None);
        }
        self.last[index] = Some((message.into(), captures.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_only_what_was_stored_for_the_same_bytes() {
        let mut memo = Memo::default();
        assert_eq!(memo.get(b"upstream timed out"), None);
        memo.put(b"upstream timed out", Some(7));
        memo.put(b"no live upstreams", None);
        assert_eq!(memo.get(b"upstream timed out"), Some(Some(7)));
        assert_eq!(memo.get(b"no live upstreams"), Some(None));
        // Same length, same first and last eight bytes, one byte apart in the middle: the slot
        // is shared, the bytes are not.
        let a = b"connect() to unix:/run/php/a.sock failed (2)";
        let b = b"connect() to unix:/run/php/b.sock failed (2)";
        assert_eq!(slot(a), slot(b));
        memo.put(a, Some(1));
        assert_eq!(memo.get(b), None);
        memo.put(b, Some(2));
        assert_eq!(memo.get(a), None, "b replaced a in their slot");
        assert_eq!(memo.get(b), Some(Some(2)));
        // A prefix of a stored message is another message.
        assert_eq!(memo.get(&b[..b.len() - 1]), None);
        memo.clear();
        assert_eq!(memo.get(b), None);
    }

    #[test]
    fn a_dead_end_answers_every_message_that_starts_with_it() {
        let mut ends = DeadEnds::default();
        let warning = b"FastCGI sent in stderr: \"PHP message: PHP Warning:  Undefined x on line 3";
        assert_eq!(ends.get(warning), None);
        ends.put(warning, 50, None);
        ends.put(b"upstream sent too big header", 10, Some(4));
        assert_eq!(ends.get(warning), Some(None));
        let mut other = warning[..50].to_vec();
        other.extend_from_slice(b"Undefined y on line 999");
        assert_eq!(ends.get(&other), Some(None));
        assert_eq!(ends.get(&warning[..50]), Some(None));
        // Shorter than the prefix, or one byte of it different: not answered.
        assert_eq!(ends.get(&warning[..49]), None);
        let mut changed = warning.to_vec();
        changed[30] ^= 1;
        assert_eq!(ends.get(&changed), None);
        assert_eq!(ends.get(b"upstream sent too long a header"), Some(Some(4)));
        assert_eq!(ends.get(b"upstream timed out"), None);
        // A set keeps its last WAYS prefixes: same first KEY_LEN bytes, different prefixes.
        let make = |i: u8| {
            let mut m = b"0123456789abcdef-".to_vec();
            m.push(i);
            m.extend_from_slice(b" tail");
            m
        };
        for i in 0..WAYS as u8 + 1 {
            ends.put(&make(i), 18, Some(usize::from(i)));
        }
        assert_eq!(
            ends.get(&make(0)),
            None,
            "the oldest of the set was replaced"
        );
        for i in 1..WAYS as u8 + 1 {
            assert_eq!(ends.get(&make(i)), Some(Some(usize::from(i))));
        }
        // Bounds: an empty prefix, one past the message or longer than MAX_LEN is not kept.
        let long = vec![b'z'; MAX_LEN + 10];
        ends.put(&long, MAX_LEN + 1, Some(1));
        ends.put(b"zz", 0, Some(1));
        ends.put(b"zz", 3, Some(1));
        assert_eq!(ends.get(&long), None);
        ends.put(&long, MAX_LEN, Some(2));
        assert_eq!(ends.get(&long), Some(Some(2)));
        ends.clear();
        assert_eq!(ends.get(&long), None);
        assert_eq!(ends.get(warning), None);
    }

    #[test]
    fn misses_are_walked_while_dead_ends_pay_for_it() {
        let mut ends = DeadEnds::default();
        let walked =
            |ends: &mut DeadEnds, n: u32| (0..n).filter(|_| ends.walk_next_miss(false)).count();
        // The first misses are walked, to learn; then one in RELEARN_EVERY.
        assert_eq!(walked(&mut ends, FIRST_WALKS), FIRST_WALKS as usize);
        assert_eq!(walked(&mut ends, 10 * RELEARN_EVERY), 10);
        // Each answer from a dead end buys walks again.
        for _ in 0..3 {
            assert!(!ends.walk_next_miss(true));
        }
        assert_eq!(
            walked(&mut ends, 3 * WALKS_PER_HIT),
            (3 * WALKS_PER_HIT) as usize
        );
        assert!(!ends.walk_next_miss(false) || RELEARN_EVERY == 1);
        // Another source starts over.
        ends.clear();
        assert_eq!(walked(&mut ends, FIRST_WALKS), FIRST_WALKS as usize);
    }

    #[test]
    fn short_empty_and_long_messages() {
        let mut memo = Memo::default();
        memo.put(b"", Some(3));
        memo.put(b"x", Some(4));
        assert_eq!(memo.get(b""), Some(Some(3)));
        assert_eq!(memo.get(b"x"), Some(Some(4)));
        let long = vec![b'a'; MAX_LEN + 1];
        memo.put(&long, Some(5));
        assert_eq!(memo.get(&long), None, "longer than MAX_LEN: not kept");
        let edge = vec![b'b'; MAX_LEN];
        memo.put(&edge, Some(6));
        assert_eq!(memo.get(&edge), Some(Some(6)));
    }
}
