//! Secrets kept out of snapshots: what `collect` records is redacted by default (`--no-redact`
//! keeps it), and the snapshot and `collect`'s output say what was redacted.
//!
//! Redacted: `password` / `passwd` / `pass` values of MySQL option files (my.cnf, debian.cnf);
//! PHP-FPM `env[NAME]` values whose name looks secret (password, secret, token, key, salt, auth,
//! credential, private); and PHP `define('DB_PASSWORD', '…')`-style constants with such names
//! (wp-config.php). The value is replaced by `<redacted>`; the key and the line stay, so the
//! audit of the snapshot still parses every file.

use std::sync::LazyLock;

use regex::bytes::{Captures, Regex};

/// What replaces a secret value.
pub const REDACTED: &str = "<redacted>";

const SECRET_NAME: &str =
    r"[A-Za-z0-9_.\-]*(?i:pass|secret|token|key|salt|auth|credential|private)[A-Za-z0-9_.\-]*";

static OPTION_FILE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^([ \t]*(?i:password|passwd|pass)[ \t]*=[ \t]*)([^\r\n]*[^\s])")
        .unwrap_or_else(|e| unreachable!("{e}"))
});
static FPM_ENV: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?m)^([ \t]*env\[{SECRET_NAME}\][ \t]*=[ \t]*)([^\r\n]*[^\s])"
    ))
    .unwrap_or_else(|e| unreachable!("{e}"))
});
static PHP_DEFINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r#"(define\s*\(\s*['"]{SECRET_NAME}['"]\s*,\s*)('[^'\r\n]*'|"[^"\r\n]*")"#
    ))
    .unwrap_or_else(|e| unreachable!("{e}"))
});

/// `bytes` with secrets replaced, and what kinds were found (empty: nothing redacted).
pub fn redact(bytes: &[u8]) -> (Vec<u8>, Vec<&'static str>) {
    let mut kinds = Vec::new();
    let mut out = bytes.to_vec();
    let passes: [(&Regex, &'static str, bool); 3] = [
        (&OPTION_FILE, "option-file password", false),
        (&FPM_ENV, "PHP-FPM env[] secret", false),
        (&PHP_DEFINE, "PHP define() secret", true),
    ];
    for (re, kind, quoted) in passes {
        if !re.is_match(&out) {
            continue;
        }
        kinds.push(kind);
        out = re
            .replace_all(&out, |c: &Captures| {
                let mut v = c[1].to_vec();
                if quoted {
                    v.push(b'\'');
                    v.extend_from_slice(REDACTED.as_bytes());
                    v.push(b'\'');
                } else {
                    v.extend_from_slice(REDACTED.as_bytes());
                }
                v
            })
            .into_owned();
    }
    (out, kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> (String, Vec<&'static str>) {
        let (out, kinds) = redact(bytes);
        (String::from_utf8(out).unwrap_or_default(), kinds)
    }

    #[test]
    fn option_file_passwords_are_redacted_and_the_rest_kept() {
        let (out, kinds) =
            text(b"[client]\nhost = localhost\nuser = debian-sys-maint\npassword = s3cr3t!\nsocket = /run/mysqld/mysqld.sock\n");
        assert!(out.contains("password = <redacted>\n"), "{out}");
        assert!(out.contains("user = debian-sys-maint\npassword = <redacted>\nsocket = /run/"));
        assert!(!out.contains("s3cr3t"));
        assert_eq!(kinds, vec!["option-file password"]);
    }

    #[test]
    fn fpm_env_secrets_and_php_defines_are_redacted() {
        let (out, _) = text(
            b"env[PATH] = /usr/bin\nenv[DB_PASSWORD] = hunter2\nenv[API_TOKEN]=abc\ndefine( 'DB_PASSWORD', 'pw' );\ndefine('DB_NAME', 'wp');\ndefine(\"AUTH_KEY\", \"k\");\n",
        );
        assert!(out.contains("env[PATH] = /usr/bin"));
        assert!(out.contains("env[DB_PASSWORD] = <redacted>"));
        assert!(out.contains("env[API_TOKEN]=<redacted>"));
        assert!(
            out.contains("define( 'DB_PASSWORD', '<redacted>' );"),
            "{out}"
        );
        assert!(out.contains("define('DB_NAME', 'wp');"));
        assert!(out.contains("define(\"AUTH_KEY\", '<redacted>');"));
        for secret in ["hunter2", "abc\n", "'pw'", "\"k\""] {
            assert!(!out.contains(secret), "{secret} left in {out}");
        }
    }

    #[test]
    fn text_without_secrets_is_unchanged() {
        let (out, kinds) = text(b"pm.max_children = 5\nlisten = /run/php.sock\n");
        assert_eq!(out, "pm.max_children = 5\nlisten = /run/php.sock\n");
        assert!(kinds.is_empty());
    }
}
