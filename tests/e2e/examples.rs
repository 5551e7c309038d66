//! The example snapshots under `examples/`: captured with the real `origin-agent collect` from
//! real lab runs (healthy, PHP-FPM saturated, PHP-FPM down), and audited offline by the test that
//! every user can run. `capture_examples` (ignored; run it as root with
//! `cargo test --test e2e capture_examples -- --ignored`) writes them again.

use std::path::{Path, PathBuf};

use crate::util::cmd::run_agent;
use serde_json::Value;

use crate::lab::Lab;
use crate::scenarios::{by_name, run};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// (file, scenario, the verdict's cause)
const EXAMPLES: &[(&str, &str, Option<&str>)] = &[
    ("healthy.tar.gz", "healthy_burst", None),
    (
        "php-fpm-saturated.tar.gz",
        "pool_exhausted",
        Some("upstream.saturated"),
    ),
    (
        "php-fpm-down.tar.gz",
        "php_fpm_stopped",
        Some("upstream.down"),
    ),
];

fn audit_snapshot(path: &Path, format: &str) -> std::process::Output {
    run_agent(&[
        "audit",
        "--snapshot",
        path.to_str().unwrap(),
        "--format",
        format,
    ])
}

#[test]
fn bundled_examples_give_their_verdicts_offline() {
    for (file, _, cause) in EXAMPLES {
        let path = examples_dir().join(file);
        assert!(path.exists(), "{} is missing", path.display());
        let out = audit_snapshot(&path, "json");
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{file}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(
            report["verdict"]["cause"].as_str(),
            *cause,
            "{file}: {}",
            report["verdict"]
        );
        assert!(
            report["source"]
                .as_str()
                .unwrap_or("")
                .starts_with("snapshot"),
            "{file}"
        );
        let expected_exit = match report["verdict"]["status"].as_str() {
            Some("ok") => 0,
            Some("warning") => 1,
            Some("critical") => 2,
            _ => 3,
        };
        assert_eq!(
            out.status.code(),
            Some(expected_exit),
            "{file}: exit code follows the verdict"
        );
        if cause.is_some() {
            assert!(
                report["responses"]["status_5xx"].as_u64().unwrap_or(0) > 0,
                "{file}"
            );
            let top = &report["causes"][0];
            assert!(
                !top["evidence"].as_array().unwrap().is_empty(),
                "{file}: evidence"
            );
        }
        // The human report leads with the verdict.
        let human = String::from_utf8_lossy(&audit_snapshot(&path, "human").stdout).into_owned();
        let first = human.lines().next().unwrap_or("");
        match cause {
            Some(c) => assert!(first.contains(c), "{file}: {first}"),
            None => assert!(!first.starts_with("CRITICAL"), "{file}: {first}"),
        }
    }
}

/// `origin-agent collect` of the lab into `out` (the last 15 minutes); panics when it fails.
pub(crate) fn collect(lab: &Lab, out: &Path) {
    let config = lab.write_agent_config().expect("config");
    let result = run_agent(&[
        "collect",
        "--config",
        config.to_str().unwrap(),
        "--since",
        "15m",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
#[ignore = "writes examples/; run by hand as root to refresh them"]
fn capture_examples() {
    for (file, scenario, _) in EXAMPLES {
        let s = by_name(scenario).unwrap();
        let Some((lab, _)) = run(s) else { return };
        collect(&lab, &examples_dir().join(file));
    }
}
