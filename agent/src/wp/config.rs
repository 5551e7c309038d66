//! `wp-config.php` as data: a small PHP tokenizer (strings, comments, identifiers, variables)
//! and the statements WordPress hosts care about, `define('NAME', value)` and
//! `$table_prefix = '…'`. Nothing is executed. Only the constants named in [`KEPT`] are kept:
//! the database password and the salts are never read into memory past the tokenizer.

use std::collections::BTreeMap;

/// The constants kept from a config file. Secrets (`DB_PASSWORD`, `AUTH_KEY`, the salts) are
/// deliberately absent.
pub const KEPT: &[&str] = &[
    "DB_NAME",
    "DB_USER",
    "DB_HOST",
    "DB_CHARSET",
    "WP_DEBUG",
    "WP_DEBUG_LOG",
    "WP_DEBUG_DISPLAY",
    "WP_MEMORY_LIMIT",
    "WP_MAX_MEMORY_LIMIT",
    "MULTISITE",
    "WP_ALLOW_MULTISITE",
    "SUBDOMAIN_INSTALL",
    "WP_CONTENT_DIR",
    "WP_PLUGIN_DIR",
    "WPMU_PLUGIN_DIR",
    "ABSPATH",
    "WP_HOME",
    "WP_SITEURL",
    "DISABLE_WP_CRON",
];

/// The secret keys and salts of a `wp-config.php` (never kept; a copy gets fresh ones).
pub const SALT_KEYS: [&str; 8] = [
    "AUTH_KEY",
    "SECURE_AUTH_KEY",
    "LOGGED_IN_KEY",
    "NONCE_KEY",
    "AUTH_SALT",
    "SECURE_AUTH_SALT",
    "LOGGED_IN_SALT",
    "NONCE_SALT",
];

/// A constant's value as written: a literal, or the raw tokens of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    /// Anything else (`__DIR__ . '/x'`, a function call), as the joined token text.
    Expr(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// PHP truthiness of a literal (`'false'` as a string is true in PHP, as here).
    pub fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty() && s != "0",
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Expr(_) => false,
        }
    }
}

/// What a config file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    pub constants: BTreeMap<String, Value>,
    pub table_prefix: Option<String>,
    /// The file requires `wp-settings.php` (a real site config, not a fragment).
    pub loads_settings: bool,
    /// Debian's package `wp-config.php`: it picks `/etc/wordpress/config-HOST.php`.
    pub debian_dispatcher: bool,
}

impl ConfigFile {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.constants.get(name).and_then(Value::as_str)
    }
    pub fn flag(&self, name: &str) -> bool {
        self.constants.get(name).is_some_and(Value::truthy)
    }
    /// Another file's constants fill the ones this file does not set (PHP's first `define` wins).
    pub fn fill_from(&mut self, other: &ConfigFile) {
        for (k, v) in &other.constants {
            self.constants.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if self.table_prefix.is_none() {
            self.table_prefix = other.table_prefix.clone();
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Ident(String),
    Var(String),
    Num(String),
    Punct(char),
}

/// The most tokens read from one file: a config is small, a hostile one must not cost more.
const MAX_TOKENS: usize = 200_000;

fn tokenize(text: &str) -> Vec<Tok> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Outside `<?php … ?>` is inline HTML.
    let mut in_php = false;
    while i < b.len() && out.len() < MAX_TOKENS {
        if !in_php {
            match text[i..].find("<?php").or_else(|| text[i..].find("<?")) {
                Some(at) => {
                    i += at
                        + if text[i + at..].starts_with("<?php") {
                            5
                        } else {
                            2
                        };
                    in_php = true;
                    continue;
                }
                None => break,
            }
        }
        let c = b[i];
        match c {
            b'?' if b.get(i + 1) == Some(&b'>') => {
                in_php = false;
                i += 2;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => i = skip_line(b, i),
            b'#' => i = skip_line(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = text[i + 2..]
                    .find("*/")
                    .map_or(b.len(), |at| i + 2 + at + 2);
            }
            b'\'' | b'"' => {
                let (s, next) = string(b, i);
                out.push(Tok::Str(s));
                i = next;
            }
            b'$' => {
                let end = word_end(b, i + 1);
                out.push(Tok::Var(text[i + 1..end].to_string()));
                i = end.max(i + 1);
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'\\' => {
                let end = word_end(b, i);
                out.push(Tok::Ident(text[i..end].to_string()));
                i = end.max(i + 1);
            }
            c if c.is_ascii_digit() => {
                let end = word_end(b, i);
                out.push(Tok::Num(text[i..end].to_string()));
                i = end.max(i + 1);
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                // One character of punctuation (multi-byte UTF-8 is skipped whole).
                let ch = text[i..].chars().next().unwrap_or(' ');
                out.push(Tok::Punct(ch));
                i += ch.len_utf8().max(1);
            }
        }
    }
    out
}

fn skip_line(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        // `?>` ends a one-line comment too.
        if b[i] == b'?' && b.get(i + 1) == Some(&b'>') {
            return i;
        }
        i += 1;
    }
    i
}

fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len()
        && (b[i].is_ascii_alphanumeric()
            || b[i] == b'_'
            || b[i] == b'\\'
            || b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
    {
        i += 1;
    }
    i
}

/// A quoted PHP string from `b[start]` (the quote): its value (single quotes: `\'` and `\\`;
/// double quotes: the common escapes, `$` kept as written) and the index after it.
fn string(b: &[u8], start: usize) -> (String, usize) {
    let quote = b[start];
    let mut out = Vec::new();
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        if c == quote {
            return (String::from_utf8_lossy(&out).into_owned(), i + 1);
        }
        if c == b'\\' && i + 1 < b.len() {
            let n = b[i + 1];
            let esc = match (quote, n) {
                (_, b'\\') => Some(b'\\'),
                (b'\'', b'\'') => Some(b'\''),
                (b'"', b'"') => Some(b'"'),
                (b'"', b'n') => Some(b'\n'),
                (b'"', b't') => Some(b'\t'),
                (b'"', b'$') => Some(b'$'),
                _ => None,
            };
            if let Some(e) = esc {
                out.push(e);
                i += 2;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    (String::from_utf8_lossy(&out).into_owned(), b.len())
}

/// Parses a config file's text. Never fails: what cannot be read is simply absent.
pub fn parse(text: &str) -> ConfigFile {
    let toks = tokenize(text);
    let mut cfg = ConfigFile {
        debian_dispatcher: text.contains("/etc/wordpress/config-"),
        ..ConfigFile::default()
    };
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(id) if id.eq_ignore_ascii_case("define") => {
                if let (Some(Tok::Punct('(')), Some(Tok::Str(name))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    if toks.get(i + 3) == Some(&Tok::Punct(',')) {
                        let (value, next) = value_until_close(&toks, i + 4);
                        if KEPT.contains(&name.as_str()) && !cfg.constants.contains_key(name) {
                            cfg.constants.insert(name.clone(), value);
                        }
                        i = next;
                        continue;
                    }
                }
            }
            Tok::Var(v) if v == "table_prefix" => {
                if let (Some(Tok::Punct('=')), Some(Tok::Str(p)), Some(Tok::Punct(';'))) =
                    (toks.get(i + 1), toks.get(i + 2), toks.get(i + 3))
                {
                    cfg.table_prefix.get_or_insert_with(|| p.clone());
                }
            }
            Tok::Str(s) if s.ends_with("wp-settings.php") => cfg.loads_settings = true,
            _ => {}
        }
        i += 1;
    }
    cfg
}

/// The value tokens of a `define(NAME, …)` up to its closing parenthesis.
fn value_until_close(toks: &[Tok], start: usize) -> (Value, usize) {
    let mut depth = 0usize;
    let mut i = start;
    let mut parts: Vec<&Tok> = Vec::new();
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') if depth == 0 => break,
            Tok::Punct(')') => depth -= 1,
            Tok::Punct(';') => break,
            _ => {}
        }
        parts.push(&toks[i]);
        i += 1;
    }
    let value = match parts.as_slice() {
        [Tok::Str(s)] => Value::Str(s.clone()),
        [Tok::Ident(b)] if b.eq_ignore_ascii_case("true") => Value::Bool(true),
        [Tok::Ident(b)] if b.eq_ignore_ascii_case("false") => Value::Bool(false),
        [Tok::Num(n)] => n
            .parse()
            .map_or_else(|_| Value::Expr(n.clone()), Value::Int),
        other => Value::Expr(
            other
                .iter()
                .map(|t| match t {
                    Tok::Str(s) => format!("'{s}'"),
                    Tok::Ident(s) | Tok::Num(s) => s.clone(),
                    Tok::Var(s) => format!("${s}"),
                    Tok::Punct(c) => c.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
    };
    (value, i + 1)
}

/// `DB_HOST` split the way WordPress does: `host`, `host:port` or `host:/path/to.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbHost {
    /// `localhost` (the default socket) or `localhost:/path` (that socket).
    Socket(Option<String>),
    Tcp {
        host: String,
        port: u16,
    },
}

impl DbHost {
    pub fn parse(raw: &str) -> DbHost {
        let raw = raw.trim();
        let (host, rest) = match raw.split_once(':') {
            Some((h, r)) if !raw.starts_with('[') => (h, Some(r)),
            _ => (raw, None),
        };
        match rest {
            Some(r) if r.starts_with('/') => DbHost::Socket(Some(r.to_string())),
            Some(r) => DbHost::Tcp {
                host: host.to_string(),
                port: r.parse().unwrap_or(3306),
            },
            None if host.is_empty() || host == "localhost" => DbHost::Socket(None),
            None => DbHost::Tcp {
                host: host.to_string(),
                port: 3306,
            },
        }
    }

    /// On this machine (a socket, or TCP to a loopback address).
    pub fn is_local(&self) -> bool {
        match self {
            DbHost::Socket(_) => true,
            DbHost::Tcp { host, .. } => host == "127.0.0.1" || host == "::1" || host == "[::1]",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const STANDARD: &str = r#"<?php
// ** Database settings ** //
define( 'DB_NAME', 'shop' );
define('DB_USER', "shop_user");
define('DB_PASSWORD', 'hunter2-secret');   # never kept
define('DB_HOST', 'localhost:/run/mysqld/mysqld.sock');
define('AUTH_KEY', 'put your unique phrase here');
/* define('WP_DEBUG', true); */
$table_prefix = 'wp7_';
define( 'WP_DEBUG', true );
define( 'WP_DEBUG_LOG', '/var/log/wp/debug.log' );
define('WP_MEMORY_LIMIT', '256M');
define('WP_CONTENT_DIR', __DIR__ . '/content');
define('MULTISITE', true);
define('WP_DEBUG', false); // a second define is ignored by PHP
if ( ! defined( 'ABSPATH' ) ) { define( 'ABSPATH', __DIR__ . '/' ); }
require_once ABSPATH . 'wp-settings.php';
"#;

    #[test]
    fn reads_the_constants_a_host_needs_and_no_secret() {
        let c = parse(STANDARD);
        assert_eq!(c.str("DB_NAME"), Some("shop"));
        assert_eq!(c.str("DB_USER"), Some("shop_user"));
        assert_eq!(c.table_prefix.as_deref(), Some("wp7_"));
        assert!(
            c.flag("WP_DEBUG"),
            "the first define wins, the comment is skipped"
        );
        assert_eq!(c.str("WP_DEBUG_LOG"), Some("/var/log/wp/debug.log"));
        assert_eq!(c.str("WP_MEMORY_LIMIT"), Some("256M"));
        assert!(c.flag("MULTISITE"));
        assert!(c.loads_settings);
        assert!(
            matches!(c.constants.get("WP_CONTENT_DIR"), Some(Value::Expr(e)) if e.contains("__DIR__"))
        );
        let dump = format!("{c:?}");
        assert!(
            !dump.contains("hunter2") && !dump.contains("unique phrase"),
            "{dump}"
        );
    }

    #[test]
    fn hostile_text_does_not_panic() {
        for t in [
            "<?php define(",
            "<?php define('DB_NAME'",
            "<?php $table_prefix = ",
            "<?php '\\",
            "<?php /* never closed",
            "plain html",
            "<?php define('DB_NAME', ((((((",
            "<?php é€ define('DB_NAME','x€');",
        ] {
            let _ = parse(t);
        }
        assert_eq!(
            parse("<?php define('DB_NAME','x€');").str("DB_NAME"),
            Some("x€")
        );
    }

    #[test]
    fn db_host_forms() {
        assert_eq!(DbHost::parse("localhost"), DbHost::Socket(None));
        assert_eq!(
            DbHost::parse("localhost:/tmp/db.sock"),
            DbHost::Socket(Some("/tmp/db.sock".into()))
        );
        assert_eq!(
            DbHost::parse("127.0.0.1:3307"),
            DbHost::Tcp {
                host: "127.0.0.1".into(),
                port: 3307
            }
        );
        assert!(!DbHost::parse("db.example.com").is_local());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse(&format!("<?php {s}"));
            let _ = DbHost::parse(&s);
        }
    }
}
