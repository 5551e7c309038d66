//! The product's promise, end to end: each failure is caused for real on a real nginx + PHP-FPM
//! (+ MariaDB) lab, then the real `origin-agent` binary names the cause the scenario produced —
//! through `audit` (discovery, probes, logs; the agent config only pins the lab's config files
//! among whatever else runs on the machine) and through `scan` over the lab's log files alone.
//! The evidence must be lines of the lab's own logs, and healthy traffic or visitor-written error
//! texts must give no cause at all.

use std::path::Path;

use crate::util::cmd::run_agent;
use serde_json::Value;

use crate::lab::Lab;
use crate::scenarios::{by_name, run, ScenarioOutcome};

pub(crate) fn agent_json(args: &[&str]) -> Value {
    let out = run_agent(args);
    assert!(
        matches!(out.status.code(), Some(0..=3)),
        "origin-agent {args:?} exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "origin-agent {args:?} did not print JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `origin-agent audit --json` of the lab (its agent config, the last 15 minutes).
pub(crate) fn audit(lab: &Lab) -> Value {
    let config = lab.write_agent_config().expect("agent config");
    agent_json(&[
        "audit",
        "--config",
        config.to_str().unwrap(),
        "--since",
        "15m",
        "--json",
    ])
}

pub(crate) fn scan(lab: &Lab) -> Value {
    let mut files: Vec<String> = Vec::new();
    for path in [
        lab.error_log(),
        lab.access_log(),
        lab.php_fpm_log(),
        lab.php_fpm_slow_log(),
        lab.php_error_log(),
        lab.mariadb_log(),
    ] {
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            files.push(path.display().to_string());
        }
    }
    let mut args = vec!["scan", "--json"];
    args.extend(files.iter().map(String::as_str));
    agent_json(&args)
}

pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

pub(crate) fn failing(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["status"] == "fail")
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["id"].as_str().unwrap_or(""),
                        c["detail"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn causes(report: &Value) -> Vec<String> {
    report["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_verdict(what: &str, report: &Value, outcome: &ScenarioOutcome, lab_dir: &Path) {
    let want = outcome.cause.map(|c| c.id().to_string());
    let got = report["verdict"]["cause"].as_str().map(str::to_string);
    assert_eq!(
        got,
        want,
        "{what} of scenario {}: verdict {} (causes {:?}); statuses {:?}; failing checks {:#?}\n--- error log ---\n{}\n--- php error log ---\n{}\n--- mariadb log ---\n{}",
        outcome.name,
        report["verdict"],
        causes(report),
        outcome.statuses(),
        failing(report),
        tail(&outcome.logs.error),
        tail(&outcome.logs.php_error),
        tail(&outcome.logs.mariadb),
    );
    if let Some(top) = report["causes"].as_array().and_then(|c| c.first()) {
        assert!(
            !top["fix"].as_str().unwrap_or("").is_empty(),
            "a cause has a fix: {top}"
        );
        let lines = top["evidence"].as_array().cloned().unwrap_or_default();
        assert!(!lines.is_empty(), "a cause has evidence: {top}");
        // Log evidence comes from the lab's own files (checks are named `check …`).
        for line in &lines {
            let source = line["source"].as_str().unwrap_or("");
            assert!(
                source.starts_with("check ") || source.starts_with(&lab_dir.display().to_string()),
                "evidence from outside the lab: {line}"
            );
        }
    }
}

/// Runs one scenario and checks both the audit's and the scan's verdicts.
fn verdict_of(name: &str, scan_too: bool) {
    let scenario = by_name(name).unwrap_or_else(|| panic!("no scenario {name}"));
    let Some((lab, outcome)) = run(scenario) else {
        return;
    };
    let report = audit(&lab);
    assert_verdict("audit", &report, &outcome, lab.dir());
    if outcome.cause.is_some() {
        let five_xx = outcome.statuses().iter().filter(|s| **s >= 500).count() as u64;
        assert_eq!(
            report["responses"]["status_5xx"].as_u64(),
            Some(five_xx),
            "every 5xx the client saw is counted"
        );
    }
    if scan_too {
        let report = scan(&lab);
        assert_verdict("scan", &report, &outcome, lab.dir());
    }
}

macro_rules! verdict_tests {
    ($($name:ident: scan $scan:expr;)*) => {
        $( #[test] fn $name() { verdict_of(stringify!($name), $scan); } )*
    };
}

verdict_tests! {
    php_fpm_stopped: scan true;
    php_fpm_socket_removed: scan true;
    php_fpm_crashed_stale_socket: scan true;
    tcp_upstream_refused: scan true;
    no_live_upstreams: scan true;
    socket_permission_denied: scan true;
    pool_exhausted: scan true;
    pool_queue_timeout: scan true;
    read_timeout: scan true;
    request_terminate_timeout: scan true;
    worker_segfault: scan true;
    worker_sigkill: scan true;
    too_big_header: scan true;
    upstream_unresolvable: scan true;
    nginx_worker_connections: scan true;
    nginx_fd_exhausted: scan true;
    nginx_disk_full: scan true;
    plugin_fatal_error: scan true;
    memory_limit: scan true;
    db_too_many_connections: scan true;
    db_down: scan true;
    db_crashed: scan true;
    db_crashed_table: scan true;
    healthy_burst: scan true;
    visitor_error_texts: scan true;
}

/// Two causes at once on one lab: the pool saturates (6 × 502 with errno 11), and a page sends
/// headers bigger than the FastCGI buffer (2 × 502). The dominant cause comes first, the other is
/// listed with its own evidence and fix.
#[test]
fn two_causes_at_once_dominant_first_the_other_listed() {
    use crate::scenarios::{pool_exhausted, pool_exhausted_options, too_big_header};
    let Some(mut lab) = crate::lab::start_or_skip(pool_exhausted_options()) else {
        return;
    };
    let saturated = pool_exhausted(&mut lab).unwrap();
    let big = too_big_header(&mut lab).unwrap();
    assert!(saturated.statuses().iter().filter(|s| **s == 502).count() > big.statuses().len());
    for report in [audit(&lab), scan(&lab)] {
        let ids = causes(&report);
        assert_eq!(report["verdict"]["cause"], "upstream.saturated", "{ids:?}");
        let pos = |id: &str| ids.iter().position(|c| c == id);
        assert!(
            pos("upstream.bad-response").is_some(),
            "the second cause is listed: {ids:?}"
        );
        let bad = &report["causes"][pos("upstream.bad-response").unwrap()];
        assert_eq!(bad["responses"], 2, "{bad}");
        assert!(
            bad["fix"].as_str().unwrap().contains("fastcgi_buffer_size"),
            "{bad}"
        );
    }
}

/// `explain` answers for one request of a real failure, with the nginx line that explains it.
#[test]
fn explain_names_the_cause_of_one_request() {
    let Some((lab, outcome)) = run(by_name("php_fpm_stopped").unwrap()) else {
        return;
    };
    assert_eq!(outcome.statuses(), vec![502, 502, 502]);
    let config = lab.write_agent_config().unwrap();
    let explained = agent_json(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--since",
        "15m",
        "--request",
        "/index.php",
        "--json",
    ]);
    let list = explained.as_array().unwrap();
    assert_eq!(list.len(), 3, "{explained}");
    for e in list {
        assert_eq!(e["cause"], "upstream.down", "{e}");
        assert_eq!(e["direct"], true, "{e}");
        let text = e["event"]["text"].as_str().unwrap();
        assert!(text.contains("(2: No such file or directory)"), "{text}");
    }
}
