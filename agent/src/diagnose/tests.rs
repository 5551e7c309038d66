//! Diagnosis on constructed evidence: the correlation and ranking logic alone. The end-to-end
//! tests check the same verdicts on real logs from real nginx, PHP-FPM and MariaDB.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use super::*;
use crate::check::{Area, Check};
use crate::event::{Event, Evidence, LogSource, Response, Severity};

fn ts(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_795_000_000 + secs).unwrap()
}

fn event(source: LogSource, cause: CauseId, at: i64, fields: &[(&str, &str)]) -> Event {
    Event {
        source,
        file: PathBuf::from(match source {
            LogSource::NginxError => "/var/log/nginx/error.log",
            LogSource::PhpFpm => "/var/log/php8.2-fpm.log",
            LogSource::Kernel => "/var/log/kern.log",
            _ => "/var/log/other.log",
        }),
        line: at as u64 + 1,
        time: Some(ts(at)),
        rule: "test".into(),
        event: "test".into(),
        cause,
        severity: Severity::Error,
        text: format!("line at {at} {fields:?}"),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn response(status: u16, request: &str, at: i64, rt: f64) -> Response {
    Response {
        file: PathBuf::from("/var/log/nginx/access.log"),
        line: at as u64 + 1,
        time: Some(ts(at)),
        status,
        request: request.into(),
        client: "127.0.0.1".into(),
        upstream_addr: None,
        upstream_status: None,
        request_time: Some(rt),
        body_bytes: None,
        forwarded_for: None,
    }
}

fn evidence(events: Vec<Event>, errors: Vec<Response>, ok: u64) -> Evidence {
    let mut ev = Evidence {
        events,
        ..Evidence::default()
    };
    for r in &errors {
        *ev.responses.by_status.entry(r.status).or_default() += 1;
        let minute = r.time.unwrap().as_second() / 60 * 60;
        let m = ev.responses.per_minute.entry(minute).or_default();
        m.total += 1;
        m.errors += 1;
    }
    ev.responses.total = errors.len() as u64 + ok;
    ev.errors = errors;
    ev
}

fn run(ev: &Evidence, checks: &[Check]) -> Diagnosis {
    diagnose(
        ev,
        checks,
        &Discovery::default(),
        Scope { stack_found: true },
    )
}

const SOCK: &str = "fastcgi://unix:/run/php/php8.2-fpm.sock:";

#[test]
fn missing_socket_502s_are_upstream_down() {
    let events = (0..3)
        .map(|i| {
            event(
                LogSource::NginxError,
                CauseId::UpstreamDown,
                i,
                &[
                    ("request", "GET /index.php HTTP/1.1"),
                    ("errno", "2"),
                    ("upstream", SOCK),
                ],
            )
        })
        .collect();
    let errors = (0..3)
        .map(|i| response(502, "GET /index.php HTTP/1.1", i, 0.0))
        .collect();
    let d = run(&evidence(events, errors, 100), &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::UpstreamDown));
    assert_eq!(d.verdict.status, VerdictStatus::Critical);
    assert_eq!(d.causes[0].responses, 3);
    assert_eq!(d.unexplained, 0);
    assert!(
        d.verdict.summary.starts_with("3 of 3 5xx"),
        "{}",
        d.verdict.summary
    );
}

#[test]
fn a_reset_after_execution_timed_out_is_a_timeout_not_a_crash() {
    let events = vec![
        event(
            LogSource::PhpFpm,
            CauseId::UpstreamTimeout,
            10,
            &[("child", "24248"), ("pool", "www")],
        ),
        event(
            LogSource::PhpFpm,
            CauseId::UpstreamCrashed,
            10,
            &[("child", "24248"), ("signal", "15")],
        ),
        event(
            LogSource::NginxError,
            CauseId::UpstreamCrashed,
            10,
            &[("request", "GET /sleep.php?s=8 HTTP/1.1"), ("errno", "104")],
        ),
    ];
    let errors = vec![response(502, "GET /sleep.php?s=8 HTTP/1.1", 10, 5.242)];
    let d = run(&evidence(events, errors, 10), &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::UpstreamTimeout));
    assert!(
        d.causes.iter().all(|c| c.id != CauseId::UpstreamCrashed),
        "{:?}",
        d.causes
    );
}

#[test]
fn sigkill_is_an_oom_kill_only_when_the_kernel_agrees() {
    let nginx = |at| {
        event(
            LogSource::NginxError,
            CauseId::UpstreamCrashed,
            at,
            &[("request", "GET /sleep.php?s=3 HTTP/1.1"), ("errno", "104")],
        )
    };
    let fpm = |at| {
        event(
            LogSource::PhpFpm,
            CauseId::UpstreamCrashed,
            at,
            &[("child", "1"), ("signal", "9")],
        )
    };
    let kernel = |at| {
        event(
            LogSource::Kernel,
            CauseId::HostOomKill,
            at,
            &[("process", "php-fpm8.2")],
        )
    };
    let errors = || vec![response(502, "GET /sleep.php?s=3 HTTP/1.1", 20, 3.0)];

    let with_kernel = run(
        &evidence(vec![kernel(20), fpm(20), nginx(20)], errors(), 5),
        &[],
    );
    assert_eq!(with_kernel.verdict.cause, Some(CauseId::HostOomKill));

    let without = run(&evidence(vec![fpm(20), nginx(20)], errors(), 5), &[]);
    assert_eq!(without.verdict.cause, Some(CauseId::UpstreamCrashed));
}

#[test]
fn unexplained_5xx_give_no_cause_and_status_unknown() {
    let errors = vec![
        response(502, "GET / HTTP/1.1", 0, 0.0),
        response(502, "GET / HTTP/1.1", 1, 0.0),
    ];
    let d = run(&evidence(vec![], errors, 10), &[]);
    assert_eq!(d.verdict.cause, None);
    assert_eq!(d.verdict.status, VerdictStatus::Unknown);
    assert_eq!(d.unexplained, 2);
    assert!(d.causes.is_empty());
}

#[test]
fn a_healthy_host_says_so() {
    let d = run(
        &evidence(vec![], vec![], 500),
        &[Check::ok("nginx.running", Area::Services, "nginx runs")],
    );
    assert_eq!(d.verdict.status, VerdictStatus::Ok);
    assert_eq!(d.verdict.cause, None);
    assert!(d.timeline.is_none());
}

#[test]
fn nothing_found_is_unknown() {
    let d = diagnose(
        &Evidence::default(),
        &[],
        &Discovery::default(),
        Scope { stack_found: false },
    );
    assert_eq!(d.verdict.status, VerdictStatus::Unknown);
}

#[test]
fn state_only_causes_are_listed_without_any_5xx() {
    let check = Check::fail("firewall.cloudflare", Area::Firewall, "Cloudflare blocked")
        .cause(CauseId::FirewallCdnBlocked)
        .fix("allow it");
    let d = run(&evidence(vec![], vec![], 100), &[check]);
    assert_eq!(d.verdict.cause, Some(CauseId::FirewallCdnBlocked));
    assert_eq!(d.verdict.status, VerdictStatus::Critical);
    assert_eq!(d.causes[0].fix, "Allow it.", "a check's fix, as a sentence");
    assert!(d.causes[0].confirmed_now);
}

#[test]
fn max_children_alone_is_not_saturation() {
    let events = vec![event(
        LogSource::PhpFpm,
        CauseId::UpstreamSaturated,
        5,
        &[("pool", "www")],
    )];
    let d = run(&evidence(events, vec![], 100), &[]);
    assert!(d.causes.is_empty(), "{:?}", d.causes);
    assert_eq!(d.verdict.status, VerdictStatus::Ok);
}

#[test]
fn the_dominant_cause_comes_first_and_the_other_is_listed() {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for i in 0..8 {
        events.push(event(
            LogSource::NginxError,
            CauseId::UpstreamSaturated,
            i,
            &[("request", "GET /busy.php HTTP/1.1"), ("errno", "11")],
        ));
        errors.push(response(502, "GET /busy.php HTTP/1.1", i, 0.0));
    }
    for i in 0..2 {
        events.push(event(
            LogSource::NginxError,
            CauseId::UpstreamBadResponse,
            20 + i,
            &[("request", "GET /bigheader.php HTTP/1.1")],
        ));
        errors.push(response(502, "GET /bigheader.php HTTP/1.1", 20 + i, 0.0));
    }
    let d = run(&evidence(events, errors, 100), &[]);
    let ids: Vec<CauseId> = d.causes.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        vec![CauseId::UpstreamSaturated, CauseId::UpstreamBadResponse]
    );
    assert_eq!(d.causes[0].responses, 8);
    assert_eq!(d.causes[1].responses, 2);
}

#[test]
fn an_error_entry_explains_one_response_only() {
    // Two 502s for the same URL, one error entry: one response stays unexplained.
    let events = vec![event(
        LogSource::NginxError,
        CauseId::UpstreamDown,
        0,
        &[("request", "GET / HTTP/1.1")],
    )];
    let errors = vec![
        response(502, "GET / HTTP/1.1", 0, 0.0),
        response(502, "GET / HTTP/1.1", 30, 0.0),
    ];
    let d = run(&evidence(events, errors, 0), &[]);
    assert_eq!(d.causes[0].responses, 1);
    assert_eq!(d.unexplained, 1);
}

#[test]
fn a_php_fatal_error_names_the_plugin_in_the_fix() {
    let events = vec![event(
        LogSource::NginxError,
        CauseId::AppFatalError,
        3,
        &[
            (
                "request",
                "GET /wp-content/plugins/acme-slider/slider.php HTTP/1.1",
            ),
            ("plugin", "acme-slider"),
        ],
    )];
    let errors = vec![response(
        500,
        "GET /wp-content/plugins/acme-slider/slider.php HTTP/1.1",
        3,
        0.0,
    )];
    let d = run(&evidence(events, errors, 0), &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::AppFatalError));
    assert!(
        d.causes[0].fix.contains("acme-slider"),
        "{}",
        d.causes[0].fix
    );
}

#[test]
fn explain_finds_the_response_at_a_moment() {
    let events = vec![event(
        LogSource::NginxError,
        CauseId::UpstreamDown,
        0,
        &[("request", "GET /a HTTP/1.1"), ("connection", "17")],
    )];
    let errors = vec![
        response(502, "GET /a HTTP/1.1", 0, 0.0),
        response(502, "GET /b HTTP/1.1", 100, 0.0),
    ];
    let ev = evidence(events, errors, 0);
    let at = explain(&ev, &ExplainQuery::At(ts(1)));
    assert_eq!(at.len(), 1);
    assert_eq!(at[0].cause, Some(CauseId::UpstreamDown));
    let by_conn = explain(&ev, &ExplainQuery::Connection("*17".into()));
    assert_eq!(by_conn.len(), 1);
    let b = explain(&ev, &ExplainQuery::Request("/b".into()));
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].cause, None);
}

#[test]
fn timeouts_after_max_children_are_saturation_and_alone_are_slowness() {
    let timeout = |at| {
        event(
            LogSource::NginxError,
            CauseId::UpstreamTimeout,
            at,
            &[("request", "GET /busy.php HTTP/1.1"), ("errno", "110")],
        )
    };
    let warning = event(
        LogSource::PhpFpm,
        CauseId::UpstreamSaturated,
        0,
        &[("pool", "www")],
    );
    let errors = || {
        (0..3)
            .map(|i| response(504, "GET /busy.php HTTP/1.1", 3 + i, 3.0))
            .collect::<Vec<_>>()
    };
    let queued = run(
        &evidence(
            vec![warning, timeout(3), timeout(4), timeout(5)],
            errors(),
            1,
        ),
        &[],
    );
    assert_eq!(queued.verdict.cause, Some(CauseId::UpstreamSaturated));
    let slow = run(
        &evidence(vec![timeout(3), timeout(4), timeout(5)], errors(), 1),
        &[],
    );
    assert_eq!(slow.verdict.cause, Some(CauseId::UpstreamTimeout));
}

#[test]
fn refused_connects_before_no_live_upstreams_are_one_story() {
    let refused = |at| {
        event(
            LogSource::NginxError,
            CauseId::UpstreamDown,
            at,
            &[
                ("request", "GET /nolive/ HTTP/1.1"),
                ("errno", "111"),
                ("upstream", "fastcgi://127.0.0.1:19001"),
            ],
        )
    };
    let no_live = |at| {
        event(
            LogSource::NginxError,
            CauseId::UpstreamNoLive,
            at,
            &[
                ("request", "GET /nolive/ HTTP/1.1"),
                ("upstream", "fastcgi://php_backend"),
            ],
        )
    };
    let errors = (0..4)
        .map(|i| response(502, "GET /nolive/ HTTP/1.1", i, 0.0))
        .collect();
    let d = run(
        &evidence(
            vec![refused(0), refused(0), no_live(1), no_live(2), no_live(3)],
            errors,
            0,
        ),
        &[],
    );
    assert_eq!(d.verdict.cause, Some(CauseId::UpstreamNoLive));
    assert!(
        d.causes.iter().all(|c| c.id != CauseId::UpstreamDown),
        "{:?}",
        d.causes
    );
}

#[test]
fn a_failing_check_alone_is_a_cause_only_with_5xx_or_when_logs_cannot_show_it() {
    let down = Check::fail("upstream.127.0.0.1:9.connect", Area::Services, "refuses")
        .cause(CauseId::UpstreamDown);
    let idle = run(&evidence(vec![], vec![], 100), std::slice::from_ref(&down));
    assert_eq!(idle.verdict.cause, None);
    assert_eq!(idle.verdict.status, VerdictStatus::Warning);
    let busy = run(
        &evidence(vec![], vec![response(502, "GET / HTTP/1.1", 0, 0.0)], 100),
        &[down],
    );
    assert_eq!(busy.verdict.cause, Some(CauseId::UpstreamDown));
}

#[test]
fn events_over_the_logs_caps_are_counted_and_dated_from_the_tallies() {
    let kept: Vec<Event> = (10..12)
        .map(|i| {
            let mut e = event(
                LogSource::NginxError,
                CauseId::UpstreamDown,
                i,
                &[("request", "GET / HTTP/1.1")],
            );
            e.rule = "nginx.connect-enoent".into();
            e
        })
        .collect();
    let errors = vec![
        response(502, "GET / HTTP/1.1", 10, 0.0),
        response(502, "GET / HTTP/1.1", 11, 0.0),
    ];
    let mut ev = evidence(kept, errors, 0);
    ev.events_by_rule.insert(
        "nginx.connect-enoent".into(),
        crate::event::RuleTally {
            count: 5000,
            first: Some(ts(-3600)),
            last: Some(ts(11)),
        },
    );
    let d = run(&ev, &[]);
    assert_eq!(d.causes[0].events, 5000);
    assert_eq!(d.causes[0].first_seen, Some(ts(-3600)));
    assert_eq!(d.causes[0].responses, 2);
}

#[test]
fn a_rules_fix_with_its_captures_is_shown_where_no_specific_fix_exists() {
    // A crash has no fix built from the host's configs: the rule's own text, filled in.
    let events = (0..2)
        .map(|i| {
            event(
                LogSource::PhpFpm,
                CauseId::UpstreamCrashed,
                i,
                &[("pool", "shop"), ("signal", "11")],
            )
        })
        .collect();
    let errors = (0..2)
        .map(|i| response(502, "GET / HTTP/1.1", i, 0.0))
        .collect();
    let mut ev = evidence(events, errors, 10);
    ev.rule_fixes.insert(
        "test".into(),
        "Pool `${pool}` lost workers to signal ${signal}.".into(),
    );
    let d = run(&ev, &[]);
    assert_eq!(d.causes[0].id, CauseId::UpstreamCrashed);
    assert_eq!(d.causes[0].fix, "Pool `shop` lost workers to signal 11.");
    // A placeholder the events cannot fill: the cause's generic fix, never a half-filled text.
    ev.rule_fixes
        .insert("test".into(), "Pool `${pool}` in ${site}.".into());
    let d = run(&ev, &[]);
    assert!(
        d.causes[0].fix.starts_with("PHP-FPM workers die"),
        "{}",
        d.causes[0].fix
    );
}

#[test]
fn error_log_entries_alone_are_implied_responses_and_give_the_verdict() {
    let events = (0..3)
        .map(|i| {
            let mut e = event(
                LogSource::NginxError,
                CauseId::UpstreamSaturated,
                i,
                &[
                    ("connection", &i.to_string()),
                    ("request", "GET / HTTP/1.1"),
                    ("responds", "502"),
                ],
            );
            e.rule = "nginx.connect-eagain".into();
            e
        })
        .collect();
    let d = run(&evidence(events, vec![], 0), &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::UpstreamSaturated));
    assert_eq!(d.verdict.status, VerdictStatus::Critical);
    assert_eq!(d.implied.status_502, 3);
    assert_eq!(d.causes[0].responses, 3);
}

#[test]
fn entries_of_one_request_are_one_implied_response_with_the_gateway_status() {
    let fields = |status: &'static str| {
        [
            ("connection", "7"),
            ("request", "GET / HTTP/1.1"),
            ("responds", status),
        ]
    };
    let events = vec![
        event(
            LogSource::NginxError,
            CauseId::AppFatalError,
            1,
            &fields("500"),
        ),
        event(
            LogSource::NginxError,
            CauseId::UpstreamCrashed,
            1,
            &fields("502"),
        ),
    ];
    let d = run(&evidence(events, vec![], 0), &[]);
    assert_eq!(d.implied.total, 1);
    assert_eq!(d.implied.status_502, 1);
}

#[test]
fn access_log_responses_are_not_implied_twice() {
    let events = vec![event(
        LogSource::NginxError,
        CauseId::UpstreamDown,
        1,
        &[("request", "GET /a HTTP/1.1"), ("responds", "502")],
    )];
    let d = run(
        &evidence(events, vec![response(502, "GET /a HTTP/1.1", 1, 0.0)], 10),
        &[],
    );
    assert_eq!(d.implied.total, 0);
    assert_eq!(d.causes[0].responses, 1);
}

#[test]
fn php_logs_imply_nothing_when_the_front_servers_error_log_was_read() {
    let events = vec![
        event(
            LogSource::NginxError,
            CauseId::UpstreamTimeout,
            1,
            &[("responds", "504")],
        ),
        event(
            LogSource::PhpFpm,
            CauseId::AppFatalError,
            1,
            &[("responds", "500")],
        ),
    ];
    let d = run(&evidence(events, vec![], 0), &[]);
    assert_eq!(d.implied.total, 1);
    assert_eq!(d.implied.status_504, 1);
}

#[test]
fn a_php_fatal_that_is_the_database_out_of_connections_names_the_database() {
    let events = (0..2)
        .map(|i| {
            event(
                LogSource::NginxError,
                CauseId::AppFatalError,
                i,
                &[
                    ("connection", &i.to_string()),
                    (
                        "error",
                        "Uncaught mysqli_sql_exception: Too many connections",
                    ),
                    ("responds", "500"),
                ],
            )
        })
        .collect();
    let d = run(&evidence(events, vec![], 0), &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::DbTooManyConnections));
    let child = d
        .causes
        .iter()
        .find(|c| c.id == CauseId::AppFatalError)
        .unwrap();
    assert_eq!(child.explained_by, Some(CauseId::DbTooManyConnections));
    assert_eq!(
        chain_of(&d.causes, CauseId::AppFatalError),
        vec![CauseId::DbTooManyConnections, CauseId::AppFatalError]
    );
}

#[test]
fn a_plugin_fatal_error_stays_the_application() {
    let events = vec![event(
        LogSource::NginxError,
        CauseId::AppFatalError,
        1,
        &[
            ("error", "Uncaught Error: Call to undefined function foo()"),
            ("responds", "500"),
        ],
    )];
    let d = run(&evidence(events, vec![], 0), &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::AppFatalError));
    assert!(d.causes[0].explained_by.is_none());
}

#[test]
fn a_sigkilled_worker_the_kernel_named_is_the_oom_even_seconds_apart() {
    let mut oom = event(
        LogSource::Kernel,
        CauseId::HostOomKill,
        0,
        &[("victim_pid", "4242"), ("victim", "php-fpm8.2")],
    );
    oom.severity = Severity::Critical;
    let kill = event(
        LogSource::PhpFpm,
        CauseId::UpstreamCrashed,
        40,
        &[("child", "4242"), ("signal", "9"), ("responds", "502")],
    );
    let d = run(&evidence(vec![oom, kill], vec![], 0), &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::HostOomKill));
    assert!(d.causes.iter().all(|c| c.id != CauseId::UpstreamCrashed));
}

#[test]
fn a_crashed_table_after_the_disk_filled_is_the_full_disk() {
    let full = event(LogSource::MysqlError, CauseId::HostDiskFull, 0, &[]);
    let crashed = event(LogSource::MysqlError, CauseId::DbCrashedTable, 60, &[]);
    let d = run(&evidence(vec![full, crashed], vec![], 0), &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::HostDiskFull));
    let child = d
        .causes
        .iter()
        .find(|c| c.id == CauseId::DbCrashedTable)
        .unwrap();
    assert_eq!(child.explained_by, Some(CauseId::HostDiskFull));
}

#[test]
fn a_php_fpm_log_alone_with_max_children_and_slow_requests_is_saturation() {
    let max = event(
        LogSource::PhpFpm,
        CauseId::UpstreamSaturated,
        0,
        &[("pool", "www")],
    );
    let slow = event(
        LogSource::PhpFpm,
        CauseId::UpstreamTimeout,
        20,
        &[
            ("pool", "www"),
            ("child", "12"),
            ("script", "/var/www/index.php"),
            ("responds", "502"),
        ],
    );
    let d = run(&evidence(vec![max, slow], vec![], 0), &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::UpstreamSaturated));
}

#[test]
fn nginx_502s_of_workers_the_kernel_killed_are_the_oom_even_with_uptime_only_kernel_stamps() {
    let mut oom = event(
        LogSource::Kernel,
        CauseId::HostOomKill,
        0,
        &[("victim_pid", "4242"), ("victim", "php-fpm8.2")],
    );
    oom.time = None; // raw dmesg: `[ 1234.5678] Memory cgroup out of memory: Killed process 4242`
    let kill = event(
        LogSource::PhpFpm,
        CauseId::UpstreamCrashed,
        10,
        &[("child", "4242"), ("signal", "9")],
    );
    let reset = event(
        LogSource::NginxError,
        CauseId::UpstreamCrashed,
        10,
        &[("request", "GET /memory.php HTTP/1.1")],
    );
    let d = run(
        &evidence(
            vec![oom, kill, reset],
            vec![response(502, "GET /memory.php HTTP/1.1", 10, 0.5)],
            5,
        ),
        &[],
    );
    assert_eq!(
        d.verdict.cause,
        Some(CauseId::HostOomKill),
        "{:?}",
        d.causes
    );
    assert!(d.causes.iter().all(|c| c.id != CauseId::UpstreamCrashed));
}

#[test]
fn the_oom_check_names_the_pids_that_tie_sigkilled_workers_to_the_kernel() {
    let kill = event(
        LogSource::PhpFpm,
        CauseId::UpstreamCrashed,
        10,
        &[("child", "4242"), ("signal", "9")],
    );
    let other = event(
        LogSource::PhpFpm,
        CauseId::UpstreamCrashed,
        900,
        &[("child", "77"), ("signal", "9")],
    );
    let reset = event(
        LogSource::NginxError,
        CauseId::UpstreamCrashed,
        10,
        &[("request", "GET /memory.php HTTP/1.1")],
    );
    let check = Check::fail(
        "host.oom-kills",
        Area::Load,
        "the kernel killed processes for memory",
    )
    .detail("1 OOM kill(s) in the last 60 min (dmesg): php-fpm8.2; killed pids 4242")
    .cause(CauseId::HostOomKill);
    let d = run(
        &evidence(
            vec![kill, other, reset],
            vec![response(502, "GET /memory.php HTTP/1.1", 10, 0.5)],
            5,
        ),
        &[check],
    );
    assert_eq!(
        d.verdict.cause,
        Some(CauseId::HostOomKill),
        "{:?}",
        d.causes
    );
    // A SIGKILL of a pid the kernel did not name stays a crash.
    assert!(d.causes.iter().any(|c| c.id == CauseId::UpstreamCrashed));
}

#[test]
fn a_stray_gateway_error_among_many_lines_of_auth_failures_is_no_outage() {
    let events = vec![event(
        LogSource::NginxError,
        CauseId::UpstreamDown,
        1,
        &[("request", "GET /admin HTTP/2.0"), ("responds", "502")],
    )];
    let mut ev = evidence(events, vec![], 0);
    ev.files.push(crate::event::FileSummary {
        path: PathBuf::from("/var/log/nginx/error.log"),
        source: Some(LogSource::NginxError),
        lines: 40,
        events: 1,
        ..Default::default()
    });
    let d = run(&ev, &[]);
    assert_eq!(d.implied.total, 0);
    assert_eq!(d.verdict.cause, None);
    // The same line alone in its file is the outage.
    ev.files[0].lines = 1;
    let d = run(&ev, &[]);
    assert_eq!(d.verdict.cause, Some(CauseId::UpstreamDown));
}

fn apache_event(cause: CauseId, rule: &str, at: i64) -> Event {
    Event {
        rule: rule.into(),
        ..event(LogSource::ApacheError, cause, at, &[])
    }
}

/// nginx on 80 proxying to Apache on 8080.
fn stacked() -> Discovery {
    let mut d = Discovery::default();
    let mut nginx = crate::discover::Nginx {
        master: Some(crate::discover::ProcessInfo {
            pid: 1,
            exe: None,
            cmdline: "nginx: master process".into(),
            children: vec![2],
        }),
        ..Default::default()
    };
    nginx
        .upstream_targets
        .push(crate::discover::UpstreamTarget {
            kind: crate::discover::UpstreamKind::Proxy,
            address: Some(crate::discover::Address::Tcp("127.0.0.1:8080".into())),
            group: None,
            dynamic: false,
            raw: "http://127.0.0.1:8080".into(),
            origin: crate::discover::Origin::Default,
        });
    d.nginx = Some(nginx);
    d.apache = Some(crate::discover::Apache {
        listens: vec![crate::discover::ApacheListen {
            host: Some("127.0.0.1".into()),
            port: 8080,
            ssl: false,
            origin: crate::discover::Origin::Default,
        }],
        ..Default::default()
    });
    d
}

#[test]
fn apache_at_max_request_workers_behind_nginx_is_upstream_saturated() {
    let timeouts: Vec<Event> = (0..3)
        .map(|i| {
            event(
                LogSource::NginxError,
                CauseId::UpstreamTimeout,
                10 + i,
                &[
                    ("request", "GET /a HTTP/1.1"),
                    ("upstream", "http://127.0.0.1:8080/a"),
                ],
            )
        })
        .collect();
    let mut events = timeouts;
    events.push(apache_event(
        CauseId::WebSaturated,
        "apache.max-request-workers",
        5,
    ));
    let errors: Vec<Response> = (0..3)
        .map(|i| response(504, "GET /a HTTP/1.1", 10 + i, 3.0))
        .collect();
    let ev = evidence(events.clone(), errors.clone(), 5);
    let scope = Scope { stack_found: true };
    let dx = diagnose(&ev, &[], &stacked(), scope);
    assert_eq!(
        dx.verdict.cause,
        Some(CauseId::UpstreamSaturated),
        "{:?}",
        dx.verdict
    );
    assert!(
        dx.causes[0].fix.contains("MaxRequestWorkers"),
        "{}",
        dx.causes[0].fix
    );
    assert!(
        dx.causes[0].status_direct.contains("Apache"),
        "{}",
        dx.causes[0].status_direct
    );
    // Without Apache's saturation, the same timeouts stay a slow backend.
    let ev = evidence(events[..3].to_vec(), errors.clone(), 5);
    let dx = diagnose(&ev, &[], &stacked(), scope);
    assert_eq!(dx.verdict.cause, Some(CauseId::UpstreamTimeout));
    // Apache alone at its limit: the web server is saturated.
    let ev = evidence(events[3..].to_vec(), Vec::new(), 5);
    let dx = diagnose(&ev, &[], &Discovery::default(), scope);
    assert_eq!(dx.verdict.cause, Some(CauseId::WebSaturated));
}

#[test]
fn apache_unusable_headers_are_a_bad_response_not_a_crash() {
    let mut a = apache_event(CauseId::UpstreamCrashed, "apache.fcgi-no-headers", 10);
    a.severity = Severity::Warning;
    a.fields.insert("client", "127.0.0.1:5");
    let mut b = apache_event(CauseId::UpstreamBadResponse, "apache.fcgi-bad-headers", 10);
    b.fields.insert("client", "127.0.0.1:5");
    let ev = evidence(
        vec![a, b],
        vec![response(500, "GET /h HTTP/1.1", 10, 0.0)],
        1,
    );
    let dx = diagnose(&ev, &[], &Discovery::default(), Scope { stack_found: true });
    assert_eq!(
        dx.verdict.cause,
        Some(CauseId::UpstreamBadResponse),
        "{:?}",
        dx.causes
    );
    assert!(!dx.causes.iter().any(|c| c.id == CauseId::UpstreamCrashed));
    assert!(
        dx.causes[0].status_direct.starts_with("500"),
        "{}",
        dx.causes[0].status_direct
    );
}

#[test]
fn evidence_line_shapes_cut_the_prefix_and_the_client_tail() {
    // The string search this replaced, as the reference.
    fn reference(s: &str) -> &str {
        let body = if let Some(i) = s.find(": *") {
            let rest = &s[i + 3..];
            rest.find(' ').map_or(rest, |j| &rest[j + 1..])
        } else {
            s.find("] ").map_or(s, |i| &s[i + 2..])
        };
        body.split(", client:").next().unwrap_or(body)
    }
    let lines = [
        "2026/11/24 07:45:17 [crit] 1#1: *12 connect() to unix:/s failed (2: x) while connecting to upstream, client: 1.2.3.4, server: s",
        "2026/11/24 07:45:18 [crit] 1#1: *13 connect() to unix:/s failed (2: x) while connecting to upstream, client: 5.6.7.8, server: s",
        "[24-Nov-2026 07:45:35] WARNING: [pool www] server reached pm.max_children setting (5)",
        "2026/11/24 07:45:17 [error] 1#1: *",
        "2026/11/24 07:45:17 [error] 1#1: *7",
        "no prefix at all, client: x",
        "ünïcödé: *1 ü, client:ü] ü",
        "",
        "] ",
        ": * ",
    ];
    for l in lines {
        assert_eq!(super::shape(l), reference(l), "{l}");
    }
    assert_eq!(super::shape(lines[0]), super::shape(lines[1]));
    assert_ne!(super::shape(lines[0]), super::shape(lines[2]));
}
