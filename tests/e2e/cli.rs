//! The binary's contracts that need no web stack: config errors name the key and line, bad
//! snapshots are clear errors, an empty host answers UNKNOWN with every check skipped, the JSON
//! report keeps its contract, and the man page and completions generate.

use std::path::Path;
use std::process::Output;

use crate::util::cmd::run_agent;
use origin_agent::host::live::LiveHost;
use origin_agent::host::recorder::Recorder;
use origin_agent::host::Host;

fn run(args: &[&str]) -> Output {
    run_agent(args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_check_names_an_unknown_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "logs:\n  nginx_access: [/var/log/nginx/access.log]\nmetrics:\n  listne: 127.0.0.1:9502\n",
    )
    .unwrap();
    let out = run(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("listne"), "{err}");
    assert!(err.contains(":4:"), "{err}");

    std::fs::write(
        &file,
        "cdn:\n  providers: [cloudflare, fastly]\nstate_dir: /tmp/oa\n",
    )
    .unwrap();
    let out = run(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_missing_or_foreign_snapshot_is_a_clear_error() {
    let out = run(&["audit", "--snapshot", "/nonexistent/snapshot.tar.gz"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("/nonexistent/snapshot.tar.gz"),
        "{}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let out = run(&["audit", "--snapshot", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("snapshot.json"), "{}", stderr(&out));

    let junk = dir.path().join("junk.tar.gz");
    std::fs::write(&junk, b"\x1f\x8b\x08\x00 truncated").unwrap();
    let out = run(&["audit", "--snapshot", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
}

/// A snapshot of a host where nothing at all could be read: the audit still answers, every check
/// that cannot run says why, and nothing panics.
#[test]
fn an_empty_host_answers_unknown_with_the_json_contract() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("empty");
    let recorder = Recorder::new(LiveHost);
    let _ = recorder.now();
    recorder.write(&snap, "empty-host").unwrap();

    let out = run(&["audit", "--snapshot", snap.to_str().unwrap(), "--json"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{}",
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"], 1);
    assert_eq!(report["host"], "empty-host");
    assert!(report["generated_at"].is_string());
    assert!(report["window"]["since"].is_string() && report["window"]["until"].is_string());
    for key in ["total", "status_502", "status_504", "status_5xx"] {
        assert!(report["responses"][key].is_u64(), "responses.{key}");
    }
    assert!(report["verdict"]["status"].is_string());
    assert!(report["verdict"]["cause"].is_null());
    assert!(report["verdict"]["summary"].is_string());
    assert!(report["causes"].as_array().unwrap().is_empty());
    for check in report["checks"].as_array().unwrap() {
        assert_ne!(
            check["status"], "fail",
            "nothing can fail on an empty host: {check}"
        );
        if check["status"] == "skip" {
            assert!(
                !check["detail"].as_str().unwrap_or("").is_empty(),
                "a skip says why: {check}"
            );
        }
    }

    let out = run(&[
        "audit",
        "--snapshot",
        snap.to_str().unwrap(),
        "--format",
        "nagios",
    ]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("ORIGIN-AGENT "), "{line}");
    assert!(line.contains(" | responses=0"), "{line}");
}

#[test]
fn scan_refuses_a_missing_file() {
    let out = run(&["scan", "/nonexistent/access.log"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("/nonexistent/access.log"));
}

#[test]
fn man_page_and_completions_are_generated_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["generate", "all", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let man_dir = dir.path().join("man");
    let man = std::fs::read_to_string(man_dir.join("origin-agent.1")).unwrap();
    assert!(man.contains("audit"));
    // Every page the main page refers to (origin-agent-audit(1), …) is generated, and every
    // subcommand has one.
    let referred: Vec<&str> = man
        .split("origin\\-agent\\-")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .filter(|name| !name.is_empty() && name.len() < 40)
        .collect();
    assert!(
        !referred.is_empty(),
        "the main page refers to no subcommand page:\n{man}"
    );
    for name in referred {
        let page = man_dir.join(format!("origin-agent-{}.1", name.replace("\\-", "-")));
        assert!(
            page.exists(),
            "{} is referred to but not generated",
            page.display()
        );
    }
    for sub in [
        "audit",
        "scan",
        "explain",
        "collect",
        "run",
        "status",
        "whitelist",
        "cdn-update",
    ] {
        let page = man_dir.join(format!("origin-agent-{sub}.1"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".TH"), "{} is not a man page", page.display());
    }
    for file in ["origin-agent.bash", "_origin-agent", "origin-agent.fish"] {
        assert!(
            Path::new(&dir.path().join("completions").join(file)).exists(),
            "{file}"
        );
    }
}

const SITE_RULES: &str = r#"rules:
  - id: site.backend-exploded
    source: nginx_error
    pattern: '^backend exploded at (?P<node>\S+)'
    event: backend-exploded
    cause: upstream.crashed
    severity: error
    fix: 'Restart the exploding backend.'
    samples:
      match:
        - line: '2026/11/24 07:45:17 [error] 1#1: *1 backend exploded at node7, client: 127.0.0.1, server: x, request: "GET / HTTP/1.1", host: "x"'
          captures: {node: node7}
      no_match:
        - '2026/11/24 07:45:17 [error] 1#1: *1 open() "/var/www/backend exploded at x" failed (2: No such file or directory), client: 127.0.0.1, server: x, request: "GET /backend HTTP/1.1", host: "x"'
"#;

/// A site rule in `rules_dir` is used by `scan` (and so by `audit` and the daemon, which load
/// rules the same way); a broken pack fails `config check` (the unit's ExecStartPre) with the file.
#[test]
fn site_rules_extend_the_embedded_ones_and_broken_ones_fail_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.d");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("site.yaml"), SITE_RULES).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("rules_dir: {}\n", rules.display())).unwrap();
    let error_log = dir.path().join("error.log");
    std::fs::write(
        &error_log,
        "2026/11/24 07:45:17 [error] 10#10: *3 backend exploded at node7, client: 127.0.0.1, server: x, request: \"GET /a HTTP/1.1\", host: \"x\"\n",
    )
    .unwrap();
    let access_log = dir.path().join("access.log");
    std::fs::write(
        &access_log,
        "127.0.0.1 - - [24/Nov/2026:07:45:17 +0000] \"GET /a HTTP/1.1\" 502 157 \"-\" \"curl/8\"\n",
    )
    .unwrap();
    let paths = [
        config.to_str().unwrap(),
        error_log.to_str().unwrap(),
        access_log.to_str().unwrap(),
    ];

    let out = run(&["scan", "--config", paths[0], "--json", paths[1], paths[2]]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["verdict"]["cause"], "upstream.crashed",
        "{}",
        report["verdict"]
    );
    // Without the site rules the same line explains nothing.
    let out = run(&["scan", "--json", paths[1], paths[2]]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["verdict"]["cause"].is_null(),
        "{}",
        report["verdict"]
    );

    let out = run(&["config", "check", paths[0]]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(
        rules.join("broken.yaml"),
        "rules:\n  - id: x\n    source: nginx_error\n",
    )
    .unwrap();
    let out = run(&["config", "check", paths[0]]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("broken.yaml"), "{}", stderr(&out));
}
