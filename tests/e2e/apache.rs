//! Apache httpd for real: Debian's apache2 (event MPM, mod_proxy_fcgi to a PHP-FPM pool) alone on
//! the lab port, and behind nginx (the cPanel/Plesk layout). Each fault is caused for real and
//! the real `origin-agent audit` must name it, with Apache's own status for the visitor, and
//! never call the host's web server down while Apache serves.

use crate::util::cmd::run_agent;
use serde_json::Value;

use crate::examples::collect;
use crate::lab::{start_or_skip, ApacheMode, Lab, LabOptions, Signal};
use crate::verdicts::{audit, causes};

fn check<'a>(report: &'a Value, id: &str) -> Option<&'a Value> {
    report["checks"]
        .as_array()?
        .iter()
        .find(|c| c["id"].as_str() == Some(id))
}

/// The verdict is `want`, with evidence from Apache's (or nginx's) log, and no false web.down.
fn assert_cause(lab: &Lab, report: &Value, want: &str) {
    let got = report["verdict"]["cause"].as_str().unwrap_or("null");
    assert_eq!(
        got,
        want,
        "verdict {}; causes {:?}\n--- apache error log ---\n{}\n--- nginx error log ---\n{}",
        report["verdict"],
        causes(report),
        crate::lab::tail(&lab.apache_error_log(), 3000),
        crate::lab::tail(&lab.error_log(), 3000),
    );
    assert!(
        !causes(report).iter().any(|c| c == "web.down"),
        "web.down while Apache serves: {:?}",
        causes(report)
    );
    let top = &report["causes"][0];
    assert!(!top["fix"].as_str().unwrap_or("").is_empty());
    let dir = lab.dir().display().to_string();
    assert!(
        top["evidence"].as_array().is_some_and(|e| e
            .iter()
            .any(|l| l["source"].as_str().unwrap_or("").starts_with(&dir))),
        "evidence from the lab's logs: {}",
        top["evidence"]
    );
}

fn alone(opts: LabOptions) -> Option<Lab> {
    start_or_skip(LabOptions {
        apache: Some(ApacheMode::Alone),
        ..opts
    })
}

#[test]
fn apache_alone_is_discovered_and_healthy_with_nginx_installed_but_stopped() {
    let Some(lab) = alone(LabOptions::default()) else {
        return;
    };
    assert_eq!(lab.get("/index.php"), 200);
    let report = audit(&lab);
    assert_eq!(
        report["verdict"]["cause"],
        Value::Null,
        "{}",
        report["verdict"]
    );
    let running = check(&report, "apache.running").expect("apache.running");
    assert_eq!(running["status"], "ok", "{running}");
    assert_eq!(check(&report, "apache.listening").unwrap()["status"], "ok");
    for id in ["nginx.running", "nginx.listening"] {
        if let Some(c) = check(&report, id) {
            assert_ne!(c["status"], "fail", "{c}");
        }
    }
    let front = check(&report, "web.front").expect("web.front");
    assert!(
        front["detail"]
            .as_str()
            .unwrap()
            .starts_with("Apache httpd alone"),
        "{front}"
    );
    let workers = check(&report, "apache.max-request-workers").unwrap();
    assert_eq!(workers["status"], "ok", "{workers}");
    assert!(
        workers["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{}:", lab.apache_conf().display())),
        "MaxRequestWorkers names its file and line: {workers}"
    );
    let score = check(&report, "apache.scoreboard").expect("mod_status is enabled in the lab");
    assert_eq!(score["status"], "ok", "{score}");
}

#[test]
fn apache_alone_php_fpm_down_is_upstream_down_with_503() {
    let Some(mut lab) = alone(LabOptions::default()) else {
        return;
    };
    lab.stop_php_fpm().unwrap();
    assert_eq!(lab.get("/index.php"), 503);
    let report = audit(&lab);
    assert_cause(&lab, &report, "upstream.down");
    let top = &report["causes"][0];
    assert!(
        top["status_direct"].as_str().unwrap().starts_with("503"),
        "{top}"
    );
    assert!(top["responses"].as_u64().unwrap() >= 1, "{top}");

    // A snapshot carries what Apache discovery read (config files, the master's environment,
    // its sockets): audited elsewhere, it says the same.
    let out = lab.dir().join("snapshot");
    collect(&lab, &out);
    let replay = run_agent(&["audit", "--snapshot", out.to_str().unwrap(), "--json"]);
    let offline: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(
        offline["verdict"]["cause"], "upstream.down",
        "{}",
        offline["verdict"]
    );
    for id in ["apache.running", "apache.listening", "web.front"] {
        assert_eq!(
            check(&offline, id).map(|c| (&c["status"], &c["detail"])),
            check(&report, id).map(|c| (&c["status"], &c["detail"])),
            "{id} from the snapshot"
        );
    }
}

#[test]
fn apache_alone_php_slower_than_proxy_timeout_is_upstream_timeout() {
    let Some(lab) = alone(LabOptions {
        apache_proxy_timeout: 2,
        ..LabOptions::default()
    }) else {
        return;
    };
    assert_eq!(lab.get("/sleep.php?s=4"), 504);
    let report = audit(&lab);
    assert_cause(&lab, &report, "upstream.timeout");
    let top = &report["causes"][0];
    assert!(
        top["status_direct"].as_str().unwrap().starts_with("504"),
        "{top}"
    );
    let fix = top["fix"].as_str().unwrap();
    assert!(
        fix.contains("ProxyTimeout") && fix.contains(&lab.apache_conf().display().to_string()),
        "{fix}"
    );
}

#[test]
fn apache_alone_too_big_header_is_bad_response() {
    let Some(lab) = alone(LabOptions::default()) else {
        return;
    };
    assert_eq!(lab.get("/hugeheader.php"), 500);
    let report = audit(&lab);
    assert_cause(&lab, &report, "upstream.bad-response");
}

#[test]
fn apache_alone_worker_killed_mid_request_is_upstream_crashed() {
    let Some(lab) = alone(LabOptions::default()) else {
        return;
    };
    let reply = lab.kill_worker(Signal::SIGKILL, 10).unwrap();
    assert!(reply.status >= 500, "status {}", reply.status);
    let report = audit(&lab);
    assert_cause(&lab, &report, "upstream.crashed");
}

#[test]
fn apache_behind_nginx_at_max_request_workers_is_upstream_saturated_named_as_apache() {
    let Some(lab) = start_or_skip(LabOptions {
        apache: Some(ApacheMode::BehindNginx),
        apache_max_workers: 2,
        max_children: 8,
        fastcgi_read_timeout: 3,
        ..LabOptions::default()
    }) else {
        return;
    };
    let statuses = lab.get_many("/sleep.php?s=5", 8, 8);
    assert!(statuses.contains(&504), "{statuses:?}");
    assert!(lab.wait_for_log(
        &lab.apache_error_log(),
        0,
        "AH00484",
        std::time::Duration::from_secs(5)
    ));
    let report = audit(&lab);
    assert_cause(&lab, &report, "upstream.saturated");
    let fix = report["causes"][0]["fix"].as_str().unwrap();
    assert!(
        fix.contains("Apache") && fix.contains("MaxRequestWorkers"),
        "{fix}"
    );
    let front = check(&report, "web.front").unwrap();
    assert!(
        front["detail"]
            .as_str()
            .unwrap()
            .starts_with("nginx (ports"),
        "{front}"
    );
}

#[test]
fn apache_stopped_behind_nginx_is_upstream_down_named_as_apache() {
    let Some(mut lab) = start_or_skip(LabOptions {
        apache: Some(ApacheMode::BehindNginx),
        ..LabOptions::default()
    }) else {
        return;
    };
    assert_eq!(lab.get("/index.php"), 200);
    lab.stop_apache().unwrap();
    assert_eq!(lab.get("/index.php"), 502);
    let report = audit(&lab);
    assert_cause(&lab, &report, "upstream.down");
    let running = check(&report, "apache.running").unwrap();
    assert_eq!(
        (running["status"].as_str(), running["cause"].as_str()),
        (Some("fail"), Some("upstream.down")),
        "{running}"
    );
    let fix = report["causes"][0]["fix"].as_str().unwrap();
    assert!(fix.contains("Apache"), "{fix}");
}
