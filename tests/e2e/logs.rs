//! Log evidence from a real nginx + PHP-FPM: the test starts both from the Debian packages with
//! configs in a temp dir (nginx on a free loopback port, PHP-FPM on a unix socket in the temp
//! dir), causes failures for real (a fatal error in `wp-content/plugins/acme-slider`, PHP-FPM
//! stopped so its socket is gone), then reads the logs the servers wrote and checks that the
//! events come out of those real lines. Skips with a reason when nginx or php-fpm8.2 is missing.
//! Bounded in time; everything is stopped and removed on drop, also on failure.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use origin_agent::event::LogSource;
use origin_agent::host::live::LiveHost;
use origin_agent::logs::{builtin_rules, read_evidence, LogFile, Window};

use crate::util::services::{free_port, wait_for, Process};

const NGINX: &str = "/usr/sbin/nginx";
const FPM: &str = "/usr/sbin/php-fpm8.2";
const LAB_FORMAT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" ua="$upstream_addr" us="$upstream_status" urt="$upstream_response_time" rt=$request_time"#;

/// One HTTP/1.0 GET on loopback; the status code.
fn get(port: u16, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: origin-agent-e2e\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn line_of(path: &Path, n: u64) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .nth(n as usize - 1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn events_come_out_of_real_nginx_and_php_fpm_lines() {
    for bin in [NGINX, FPM] {
        if !Path::new(bin).exists() {
            crate::skip(format!("{bin} is not installed"));
            return;
        }
    }
    // Discovery in other tests looks at every nginx and PHP-FPM on the machine.
    let _lab = crate::lab::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    let www = t.join("www");
    let plugin = www.join("wp-content/plugins/acme-slider");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(www.join("index.php"), "<?php echo 'ok';\n").unwrap();
    std::fs::write(www.join("sleep.php"), "<?php sleep(5); echo 'late';\n").unwrap();
    std::fs::write(
        plugin.join("slider.php"),
        "<?php\n\nacme_slider_missing_function();\n",
    )
    .unwrap();
    let sock = t.join("php.sock");
    let fpm_log = t.join("php-fpm.log");
    let fpm_conf = t.join("php-fpm.conf");
    let root = nix::unistd::Uid::effective().is_root();
    std::fs::write(
        &fpm_conf,
        format!(
            "[global]\npid = {pid}\nerror_log = {log}\ndaemonize = no\n\n[www]\n{user}listen = {sock}\nlisten.mode = 0666\npm = static\npm.max_children = 2\ncatch_workers_output = yes\nphp_admin_flag[display_errors] = off\nphp_admin_flag[log_errors] = on\n",
            pid = t.join("fpm.pid").display(),
            log = fpm_log.display(),
            user = if root { "user = root\ngroup = root\n" } else { "" },
            sock = sock.display(),
        ),
    )
    .unwrap();
    let mut fpm_args = vec![
        "-y".to_string(),
        fpm_conf.display().to_string(),
        "-F".into(),
    ];
    if root {
        fpm_args.push("-R".into());
    }
    let mut fpm = Process::spawn(FPM, &fpm_args);
    wait_for("php-fpm socket", || sock.exists());

    let port = free_port();
    let error_log = t.join("error.log");
    let access_log = t.join("access.log");
    let nginx_conf = t.join("nginx.conf");
    std::fs::write(
        &nginx_conf,
        format!(
            r#"daemon off;
master_process on;
worker_processes 1;
{user}
pid {t}/nginx.pid;
error_log {error} info;
events {{ worker_connections 64; }}
http {{
    log_format lab '{fmt}';
    access_log {access} lab;
    client_body_temp_path {t}/client_body;
    fastcgi_temp_path {t}/fastcgi;
    proxy_temp_path {t}/proxy;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    server {{
        listen 127.0.0.1:{port};
        server_name example.com;
        root {www};
        location ~ \.php$ {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass unix:{sock};
        }}
    }}
}}
"#,
            user = if root { "user root root;" } else { "" },
            t = t.display(),
            error = error_log.display(),
            fmt = LAB_FORMAT,
            access = access_log.display(),
            port = port,
            www = www.display(),
            sock = sock.display(),
        ),
    )
    .unwrap();
    let mut nginx = Process::spawn(
        NGINX,
        &[
            "-c",
            &nginx_conf.display().to_string(),
            "-e",
            &error_log.display().to_string(),
        ],
    );
    wait_for("nginx", || TcpStream::connect(("127.0.0.1", port)).is_ok());

    let started = jiff::Timestamp::now();
    assert_eq!(get(port, "/index.php"), 200);
    // A fatal error in a WordPress plugin: PHP answers 500, nginx logs stderr over many lines.
    assert_eq!(get(port, "/wp-content/plugins/acme-slider/slider.php"), 500);
    // A worker crashes mid-request (SIGSEGV sent to every child while one is busy): nginx loses
    // the connection (502), PHP-FPM logs the signal and starts a new child.
    let fpm_pid = fpm.id().unwrap();
    let slow = std::thread::spawn(move || get(port, "/sleep.php"));
    std::thread::sleep(Duration::from_millis(700));
    let children = std::fs::read_to_string(format!("/proc/{fpm_pid}/task/{fpm_pid}/children"))
        .unwrap_or_default();
    for child in children.split_whitespace() {
        let pid = nix::unistd::Pid::from_raw(child.parse().unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSEGV);
    }
    assert_eq!(slow.join().unwrap(), 502);
    wait_for("php-fpm to restart its children", || {
        std::fs::read_to_string(&fpm_log)
            .is_ok_and(|l| l.matches("exited on signal 11").count() >= 1)
    });
    std::thread::sleep(Duration::from_millis(300));
    // PHP-FPM stopped: its socket is gone, nginx answers 502 (errno 2).
    fpm.stop(Signal::SIGQUIT);
    assert!(!sock.exists(), "php-fpm left its socket behind");
    assert_eq!(get(port, "/index.php"), 502);
    assert_eq!(get(port, "/index.php?again=1"), 502);
    nginx.stop(Signal::SIGQUIT);

    let files = vec![
        LogFile {
            path: access_log.clone(),
            source: Some(LogSource::NginxAccess),
            access_format: Some(LAB_FORMAT.to_string()),
        },
        LogFile {
            path: error_log.clone(),
            source: None,
            access_format: None,
        },
        LogFile {
            path: fpm_log.clone(),
            source: None,
            access_format: None,
        },
    ];
    let window = Window {
        since: Some(started - jiff::SignedDuration::from_secs(5)),
        until: None,
    };
    let tz = jiff::tz::TimeZone::system();
    let ev = read_evidence(&LiveHost, &files, &window, &tz, &builtin_rules().unwrap());

    for f in &ev.files {
        assert!(f.error.is_none(), "{f:?}");
    }
    assert_eq!(ev.files[1].source, Some(LogSource::NginxError));
    assert_eq!(ev.files[2].source, Some(LogSource::PhpFpm));

    // Responses: every access line, the 502s with the upstream fields nginx wrote.
    assert_eq!(ev.responses.total, 5, "{:?}", ev.responses);
    assert_eq!(ev.responses.by_status.get(&200), Some(&1));
    assert_eq!(ev.responses.by_status.get(&500), Some(&1));
    assert_eq!(ev.responses.by_status.get(&502), Some(&3));
    let r502: Vec<_> = ev
        .errors
        .iter()
        .filter(|r| r.status == 502 && r.request.starts_with("GET /index.php"))
        .collect();
    assert_eq!(r502.len(), 2);
    let crashed: Vec<_> = ev
        .errors
        .iter()
        .filter(|r| r.request.starts_with("GET /sleep.php"))
        .collect();
    assert_eq!(crashed.len(), 1);
    assert!(crashed[0].request_time.unwrap() > 0.3, "{:?}", crashed[0]);
    assert_eq!(r502[0].request, "GET /index.php HTTP/1.0");
    assert_eq!(r502[0].upstream_status.as_deref(), Some("502"));
    assert_eq!(r502[0].client, "127.0.0.1");
    let now = jiff::Timestamp::now();
    for r in &ev.errors {
        let t = r.time.unwrap();
        assert!(
            t >= started - jiff::SignedDuration::from_secs(2) && t <= now,
            "{r:?}"
        );
    }

    // Events, each tied to the real line it came from.
    let by_rule = |id: &str| {
        ev.events
            .iter()
            .filter(|e| e.rule == id)
            .collect::<Vec<_>>()
    };
    let enoent = by_rule("nginx.connect-enoent");
    assert_eq!(enoent.len(), 2, "{:#?}", ev.events);
    let e = enoent[0];
    assert_eq!(e.field("errno"), Some("2"));
    assert_eq!(e.field("socket"), Some(sock.to_str().unwrap()));
    assert_eq!(e.field("level"), Some("crit"));
    assert_eq!(e.field("request"), Some("GET /index.php HTTP/1.0"));
    assert_eq!(
        e.field("upstream"),
        Some(format!("fastcgi://unix:{}:", sock.display()).as_str())
    );
    assert_eq!(e.cause, origin_agent::cause::CauseId::UpstreamDown);
    assert_eq!(line_of(&error_log, e.line), e.text);
    let t = e.time.unwrap();
    assert!(t >= started - jiff::SignedDuration::from_secs(2) && t <= now);

    let fatal = by_rule("nginx.php-fatal-error");
    assert_eq!(fatal.len(), 1, "{:#?}", ev.events);
    let f = fatal[0];
    assert_eq!(f.field("plugin"), Some("acme-slider"));
    assert_eq!(f.field("php_line"), Some("3"));
    assert_eq!(f.cause, origin_agent::cause::CauseId::AppFatalError);
    assert!(f.text.contains("\nStack trace:"), "{}", f.text);
    assert!(line_of(&error_log, f.line).starts_with(f.text.lines().next().unwrap()));

    let stopped = by_rule("php-fpm.stopped");
    assert_eq!(stopped.len(), 1, "{:#?}", ev.events);
    assert_eq!(line_of(&fpm_log, stopped[0].line), stopped[0].text);
    assert_eq!(by_rule("php-fpm.started").len(), 1);
    // With catch_workers_output, PHP-FPM's own log repeats the fatal error.
    for e in by_rule("php-fpm.stderr-fatal-error") {
        assert_eq!(e.field("plugin"), Some("acme-slider"));
        assert_eq!(line_of(&fpm_log, e.line), e.text);
    }

    // The crash: PHP-FPM's signal line and nginx's lost connection.
    let signal = by_rule("php-fpm.child-signal");
    assert!(!signal.is_empty(), "{:#?}", ev.events);
    for e in &signal {
        assert_eq!(e.field("signal"), Some("11"));
        assert_eq!(e.field("signal_name"), Some("SIGSEGV"));
        assert_eq!(e.field("pool"), Some("www"));
        assert_eq!(line_of(&fpm_log, e.line), e.text);
    }
    let lost: Vec<_> = ev
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.rule.as_str(),
                "nginx.upstream-reset" | "nginx.upstream-closed"
            )
        })
        .collect();
    assert_eq!(lost.len(), 1, "{:#?}", ev.events);
    assert_eq!(lost[0].cause, origin_agent::cause::CauseId::UpstreamCrashed);
    assert_eq!(lost[0].field("request"), Some("GET /sleep.php HTTP/1.0"));
    assert_eq!(line_of(&error_log, lost[0].line), lost[0].text);

    // Nothing else: a 200 and a clean start/stop make no events.
    let other: Vec<_> = ev
        .events
        .iter()
        .filter(|e| {
            !matches!(
                e.rule.as_str(),
                "nginx.connect-enoent"
                    | "nginx.php-fatal-error"
                    | "php-fpm.stopped"
                    | "php-fpm.started"
                    | "php-fpm.stderr-fatal-error"
                    | "php-fpm.child-signal"
                    | "nginx.upstream-reset"
                    | "nginx.upstream-closed"
            )
        })
        .collect();
    assert!(other.is_empty(), "{other:#?}");
}

/// MariaDB's own error log: a real start (space-padded hour stamps, `mariadbd` program name), a
/// kill -9 and a restart, a clean stop; the events come from those lines.
#[test]
fn events_come_out_of_real_mariadb_lines() {
    const MARIADBD: &str = "/usr/sbin/mariadbd";
    const INSTALL: &str = "/usr/bin/mariadb-install-db";
    for bin in [MARIADBD, INSTALL] {
        if !Path::new(bin).exists() {
            crate::skip(format!("{bin} is not installed"));
            return;
        }
    }
    if !nix::unistd::Uid::effective().is_root() {
        crate::skip("needs root to run mariadbd with --user=root in a temp dir");
        return;
    }
    // Discovery in other tests looks at every mariadbd on the machine.
    let _lab = crate::lab::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    let data = t.join("data");
    let log = t.join("mariadb.err");
    let sock = t.join("mysqld.sock");
    let out = Command::new(INSTALL)
        .args([
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "skipped: mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let start = || {
        Process::spawn(
            MARIADBD,
            &[
                "--no-defaults".to_string(),
                format!("--datadir={}", data.display()),
                format!("--socket={}", sock.display()),
                format!("--pid-file={}", t.join("mariadb.pid").display()),
                format!("--log-error={}", log.display()),
                "--skip-networking".into(),
                "--user=root".into(),
                "--innodb-buffer-pool-size=16M".into(),
            ],
        )
    };
    let ready_count = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("ready for connections")
            .count()
    };
    let started = jiff::Timestamp::now();
    let mut db = start();
    wait_for("mariadbd", || ready_count() >= 1);
    db.stop(Signal::SIGKILL);
    let mut db = start();
    wait_for("mariadbd after kill -9", || ready_count() >= 2);
    db.stop(Signal::SIGTERM);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("Shutdown complete"),
        "no clean shutdown in the log"
    );

    let files = [LogFile {
        path: log.clone(),
        source: None,
        access_format: None,
    }];
    let window = Window {
        since: Some(started - jiff::SignedDuration::from_secs(5)),
        until: None,
    };
    let ev = read_evidence(
        &LiveHost,
        &files,
        &window,
        &jiff::tz::TimeZone::system(),
        &builtin_rules().unwrap(),
    );
    let f = &ev.files[0];
    assert_eq!(f.source, Some(LogSource::MysqlError), "{f:?}");
    assert_eq!(f.bad_lines, 0, "{f:?}");
    assert_eq!(f.outside_window, 0, "{f:?}");
    let by_rule = |id: &str| {
        ev.events
            .iter()
            .filter(|e| e.rule == id)
            .collect::<Vec<_>>()
    };
    let ready = by_rule("mysql.ready");
    assert_eq!(ready.len(), 2, "{:#?}", ev.events);
    let now = jiff::Timestamp::now();
    for e in &ready {
        assert!(e.field("program").unwrap().ends_with("mariadbd"), "{e:?}");
        assert_eq!(e.field("level"), Some("Note"));
        // The untimed `Version: …` line after it is joined to the entry.
        let mut lines = e.text.lines();
        assert_eq!(line_of(&log, e.line), lines.next().unwrap());
        assert!(lines.next().unwrap().starts_with("Version: "), "{}", e.text);
        let t = e.time.unwrap();
        assert!(
            t >= started - jiff::SignedDuration::from_secs(2) && t <= now,
            "{e:?}"
        );
    }
    let stopped = by_rule("mysql.shutdown");
    assert!(!stopped.is_empty(), "{:#?}", ev.events);
    assert_eq!(stopped[0].cause, origin_agent::cause::CauseId::DbDown);
}
