//! Escaping for terminals: no raw control byte that a visitor or a local user wrote (a log line,
//! an exception message, a referrer, a file name) reaches an operator's terminal.
//!
//! Every human output (the report, `explain`, `status`, `rules test`, notification text) goes
//! through [`controls`] (or [`sanitize`] for a whole value before it is rendered); the renderers'
//! own colours are added after, and [`terminal`] is the last guard before stdout, keeping only
//! plain SGR colour sequences. JSON output is left as serde writes it (it escapes controls).
//!
//! C0 controls (but the newline), DEL and the C1 controls (U+0080–U+009F, which some terminals
//! take as CSI and friends) are written as `\xNN` / `\u{NN}`.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::Serialize;

fn is_escaped(c: char) -> bool {
    (c.is_control() && c != '\n') || c == '\u{7f}'
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write;
    let code = c as u32;
    if code < 0x80 {
        let _ = write!(out, "\\x{code:02x}");
    } else {
        let _ = write!(out, "\\u{{{code:x}}}");
    }
}

/// `text` with every control character but the newline escaped.
pub fn controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_escaped(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`controls`], but keeps SGR colour sequences (`ESC [ digits;… m`), the only ones the
/// renderers write: the last guard on text bound for a terminal whose fields were escaped.
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\x1b' {
            if let Some(len) = sgr_len(rest) {
                out.push_str(&rest[..len]);
                rest = &rest[len..];
                continue;
            }
        }
        if is_escaped(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// The length of the SGR sequence at the start of `text` (`ESC [ [0-9;]{0,16} m`), if one is.
fn sgr_len(text: &str) -> Option<usize> {
    let body = text.strip_prefix("\x1b[")?;
    let params = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (params <= 16 && body.as_bytes().get(params) == Some(&b'm')).then_some(2 + params + 1)
}

/// Escapes every string (and object key) in a JSON value in place.
pub fn json_strings(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(escaped) = controls(s) {
                *s = escaped;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(json_strings),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut v) in entries {
                json_strings(&mut v);
                map.insert(controls(&key).into_owned(), v);
            }
        }
        _ => {}
    }
}

/// A copy of `value` with every string in it escaped (through its serde form), for rendering a
/// whole report at once; `None` if the value does not round-trip.
pub fn sanitize<T: Serialize + DeserializeOwned>(value: &T) -> Option<T> {
    let mut json = serde_json::to_value(value).ok()?;
    json_strings(&mut json);
    serde_json::from_value(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_text_is_kept() {
        assert_eq!(controls("plain text\nline two"), "plain text\nline two");
        assert_eq!(
            controls("a\x1b[2J\x1b[1;1Hb\rc\x07d\x7fe"),
            "a\\x1b[2J\\x1b[1;1Hb\\x0dc\\x07d\\x7fe"
        );
        assert_eq!(controls("csi\u{9b}2J é"), "csi\\u{9b}2J é");
    }

    #[test]
    fn the_terminal_guard_keeps_only_colour_sequences() {
        assert_eq!(terminal("\x1b[1;31mFAIL\x1b[0m"), "\x1b[1;31mFAIL\x1b[0m");
        assert_eq!(
            terminal("\x1b[2K\x1b]0;title\x07"),
            "\\x1b[2K\\x1b]0;title\\x07"
        );
        assert_eq!(terminal("\x1b"), "\\x1b");
    }

    #[test]
    fn json_values_are_escaped_keys_included() {
        let mut v = serde_json::json!({"a\x1bb": ["x\x1b[31m", 1, {"k": "\u{9b}"}]});
        json_strings(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a\\x1bb": ["x\\x1b[31m", 1, {"k": "\\u{9b}"}]})
        );
    }
}
