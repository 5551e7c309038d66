//! Snapshot tests of the reports: the human, JSON and Nagios renderings of every bundled example
//! snapshot (`examples/*.tar.gz`), audited offline, compared with the accepted text under
//! `tests/e2e/snapshots/`. They need no root and no service, so they run everywhere and make any
//! change of the report's output visible in review: after an intended change, run
//! `INSTA_UPDATE=always cargo test --test e2e report_snapshots` (or `cargo insta review`) and
//! commit the new `.snap` files with the change.
//!
//! The examples were captured in lab temp dirs (`/tmp/origin-agent-lab-XXXXXX`); those paths and
//! the binary's version are filtered so that re-capturing an example or releasing a version
//! does not churn every snapshot.

use std::path::Path;

use assert_cmd::Command;

const EXAMPLES: &[&str] = &["healthy", "php-fpm-saturated", "php-fpm-down"];
const FORMATS: &[&str] = &["human", "json", "nagios"];

fn audit(example: &str, format: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{example}.tar.gz"));
    let out = Command::cargo_bin("origin-agent")
        .expect("binary")
        .env("NO_COLOR", "1")
        .env("TZ", "UTC")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args([
            "audit",
            "--snapshot",
            &format!("examples/{example}.tar.gz"),
            "--format",
            format,
        ])
        .output()
        .expect("origin-agent runs");
    assert!(path.exists(), "{} is missing", path.display());
    assert!(
        matches!(out.status.code(), Some(0..=3)),
        "{example} {format}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("reports are UTF-8")
}

#[test]
fn reports_of_the_bundled_examples_match_their_snapshots() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(r"/tmp/origin-agent-lab-[A-Za-z0-9]{6}", "[LAB]");
    settings.add_filter(
        &regex_escape(&format!("origin-agent {}", env!("CARGO_PKG_VERSION"))),
        "origin-agent [VERSION]",
    );
    settings.bind(|| {
        for example in EXAMPLES {
            for format in FORMATS {
                let text = audit(example, format);
                assert!(!text.is_empty(), "{example} {format}: empty report");
                insta::assert_snapshot!(format!("{example}.{format}"), text);
            }
        }
    });
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ' ' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
