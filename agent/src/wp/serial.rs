//! WordPress options stored PHP-serialized (`active_plugins`, `active_sitewide_plugins`),
//! read with the `phpserz` parser (no regex). The value is untrusted (any plugin or admin can
//! write an option): lengths are checked by the parser, nesting and element counts are bounded
//! here, and a bad value is an error, never a panic.

use phpserz::{PhpParser, PhpToken};

/// The most entries read from one option (no site runs this many plugins).
pub const MAX_ENTRIES: usize = 10_000;
/// The deepest nesting skipped over in a value we do not need.
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SerialError {
    #[error("not a PHP-serialized array: {0}")]
    Syntax(String),
    #[error("more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error("nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

impl From<phpserz::Error> for SerialError {
    fn from(e: phpserz::Error) -> Self {
        SerialError::Syntax(e.to_string())
    }
}

/// A scalar key or value as text (`i:3` → `3`, strings lossily decoded).
fn scalar(tok: &PhpToken<'_>) -> Option<String> {
    match tok {
        PhpToken::String(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        PhpToken::Integer(i) => Some(i.to_string()),
        PhpToken::Boolean(b) => Some(u8::from(*b).to_string()),
        _ => None,
    }
}

/// Skips the rest of a compound value whose opening token was just read.
fn skip(parser: &mut PhpParser<'_>, tok: &PhpToken<'_>, depth: usize) -> Result<(), SerialError> {
    let pairs = match tok {
        PhpToken::Array { elements } => *elements as usize,
        PhpToken::Object { properties, .. } => *properties as usize,
        _ => return Ok(()),
    };
    if depth >= MAX_DEPTH {
        return Err(SerialError::TooDeep);
    }
    if pairs > MAX_ENTRIES {
        return Err(SerialError::TooMany);
    }
    for _ in 0..pairs * 2 {
        let t = parser.read_token()?;
        skip(parser, &t, depth + 1)?;
    }
    match parser.read_token()? {
        PhpToken::End => Ok(()),
        other => Err(SerialError::Syntax(format!(
            "expected the end of an array, found {other:?}"
        ))),
    }
}

/// The `(key, value)` pairs of a serialized array, scalars as text; nested values are `None`.
pub fn array_pairs(bytes: &[u8]) -> Result<Vec<(String, Option<String>)>, SerialError> {
    let mut parser = PhpParser::new(bytes);
    let elements = match parser.read_token()? {
        PhpToken::Array { elements } => elements as usize,
        other => {
            return Err(SerialError::Syntax(format!(
                "expected an array, found {other:?}"
            )))
        }
    };
    if elements > MAX_ENTRIES {
        return Err(SerialError::TooMany);
    }
    let mut out = Vec::with_capacity(elements.min(256));
    for _ in 0..elements {
        let key_tok = parser.read_token()?;
        let key = scalar(&key_tok)
            .ok_or_else(|| SerialError::Syntax(format!("array key {key_tok:?}")))?;
        let value_tok = parser.read_token()?;
        let value = scalar(&value_tok);
        skip(&mut parser, &value_tok, 1)?;
        out.push((key, value));
    }
    match parser.read_token()? {
        PhpToken::End => Ok(out),
        other => Err(SerialError::Syntax(format!(
            "expected the end of the array, found {other:?}"
        ))),
    }
}

/// `active_plugins`: the values (plugin files relative to the plugins directory).
pub fn plugin_list(bytes: &[u8]) -> Result<Vec<String>, SerialError> {
    Ok(array_pairs(bytes)?
        .into_iter()
        .filter_map(|(_, v)| v)
        .collect())
}

/// `active_sitewide_plugins` (multisite): the keys (plugin file => activation time).
pub fn plugin_keys(bytes: &[u8]) -> Result<Vec<String>, SerialError> {
    Ok(array_pairs(bytes)?.into_iter().map(|(k, _)| k).collect())
}

/// `serialize(array_values($files))`, as WordPress writes `active_plugins` (`s:N` counts bytes).
pub fn serialize_list(files: &[String]) -> String {
    let mut out = format!("a:{}:{{", files.len());
    for (i, f) in files.iter().enumerate() {
        out.push_str(&format!("i:{i};s:{}:\"{f}\";", f.len()));
    }
    out.push('}');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_wordpress_writes() {
        let v = br#"a:3:{i:0;s:21:"acme-seo/acme-seo.php";i:1;s:27:"cache-boost/cache-boost.php";i:2;s:9:"hello.php";}"#;
        assert_eq!(
            plugin_list(v).unwrap(),
            [
                "acme-seo/acme-seo.php",
                "cache-boost/cache-boost.php",
                "hello.php"
            ]
        );
        let sw = br#"a:1:{s:19:"akismet/akismet.php";i:1700000000;}"#;
        assert_eq!(plugin_keys(sw).unwrap(), ["akismet/akismet.php"]);
        assert_eq!(plugin_list(b"a:0:{}").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn round_trips_our_own_serialization() {
        let files = vec![
            "pay-gateway/pay-gateway.php".to_string(),
            "é/x.php".to_string(),
        ];
        assert_eq!(
            plugin_list(serialize_list(&files).as_bytes()).unwrap(),
            files
        );
    }

    #[test]
    fn hostile_values_are_errors() {
        for bad in [
            &b"a:2:{i:0;s:99:\"short\";}"[..],
            b"a:4294967295:{",
            b"s:5:\"hello\";",
            b"a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;a:1:{i:0;N;}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}",
            b"a:1:{i:0;s:-1:\"\";}",
            b"",
            b"a:1:{O:8:\"stdClass\":0:{}s:1:\"x\";}",
        ] {
            assert!(plugin_list(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = plugin_list(&bytes);
            let _ = plugin_keys(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_values(s in "a:[0-9]{1,3}:\\{(i:[0-9];s:[0-9]{1,2}:\"[a-z/.é]{0,12}\";){0,4}\\}?") {
            let _ = plugin_list(s.as_bytes());
        }
    }
}
