//! Asking the stack directly (issue 16) against the real lab: the origin self-test names the
//! failing layer, PHP-FPM's status over FastCGI shows a saturated pool and the script holding
//! it, MariaDB's live status at max_connections and a crashed MyISAM table, a CDN status page on
//! loopback; each recorded into a snapshot and replayed offline, and no credential anywhere.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use origin_agent::cause::CauseId;
use origin_agent::check::{Check, Status};
use origin_agent::config::Config;
use origin_agent::discover;
use origin_agent::host::live::LiveHost;
use origin_agent::host::recorder::Recorder;
use origin_agent::host::snapshot::SnapshotHost;
use origin_agent::host::Host;
use origin_agent::stack;

use crate::lab::{http_get, start_or_skip, wait_until, Lab, LabOptions};
use crate::util::cmd::run_agent;

fn find<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    checks.iter().find(|c| c.id == id).unwrap_or_else(|| {
        panic!(
            "no check {id}; have: {:#?}",
            checks
                .iter()
                .map(|c| (&c.id, &c.detail))
                .collect::<Vec<_>>()
        )
    })
}

/// The check `id`, asserted to have `status` and `cause` and to say `needle`.
fn expect<'a>(
    checks: &'a [Check],
    id: &str,
    status: Status,
    cause: Option<CauseId>,
    needle: &str,
) -> &'a Check {
    let c = find(checks, id);
    assert_eq!((c.status, c.cause), (status, cause), "{id}: {}", c.detail);
    assert!(
        c.detail.contains(needle),
        "{id} lacks {needle:?}: {}",
        c.detail
    );
    c
}

/// Asserts that a check's detail says each of `needles`.
fn says(c: &Check, needles: &[&str]) {
    for n in needles {
        assert!(c.detail.contains(n), "{} lacks {n:?}: {}", c.id, c.detail);
    }
}

fn lab_config(lab: &Lab) -> Config {
    let mut c = Config {
        nginx_config: Some(lab.nginx_conf()),
        php_fpm_configs: Some(vec![lab.php_fpm_conf()]),
        state_dir: lab.dir().join("agent-state"),
        ..Config::default()
    };
    if lab.options().mariadb {
        c.mysql_socket = Some(lab.mariadb_socket());
    }
    c
}

/// The stack probes on `host` (discovery included).
fn ask(host: &dyn Host, config: &Config) -> Vec<Check> {
    let d = discover::discover(host, config);
    stack::checks(host, &d, config)
}

/// Runs the probes through a recorder, writes the snapshot and replays it: the same checks.
fn ask_recorded(lab: &Lab, config: &Config) -> (Vec<Check>, PathBuf) {
    let rec = Recorder::new(LiveHost);
    let live = ask(&rec, config);
    let out = lab.dir().join("snapshot");
    rec.write(&out, "lab").unwrap();
    let snap = SnapshotHost::open(&out).unwrap();
    let replayed = ask(&snap, config);
    let key = |c: &[Check]| -> Vec<(String, Status, Option<CauseId>)> {
        c.iter()
            .map(|c| (c.id.clone(), c.status, c.cause))
            .collect()
    };
    assert_eq!(
        key(&live),
        key(&replayed),
        "the snapshot replays the same checks"
    );
    (live, out)
}

fn wait_for_workers(lab: &Lab, config: &Config) {
    let ready = wait_until(Duration::from_secs(10), || {
        discover::discover(&LiveHost, config)
            .nginx
            .is_some_and(|n| !n.workers.is_empty())
    });
    assert!(ready, "the lab's nginx has no worker");
    let _ = lab;
}

#[test]
fn self_test_finds_nginx_502_and_names_php_fpm_as_the_failing_layer() {
    let Some(mut lab) = start_or_skip(LabOptions::default()) else {
        return;
    };
    let config = lab_config(&lab);
    wait_for_workers(&lab, &config);
    let target = format!("self-test.http.example.com.127.0.0.1:{}", lab.port());

    // Healthy: the name is served, the pool has idle workers (saturation ruled out now).
    let checks = ask(&LiveHost, &config);
    let t = find(&checks, &target);
    assert_eq!(t.status, Status::Ok, "{}", t.detail);
    let status = find(&checks, "php-fpm.pool.www.live-status");
    assert_eq!(status.status, Status::Ok, "{}", status.detail);
    says(status, &["not saturated now"]);
    assert_eq!(status.cause, Some(CauseId::UpstreamSaturated));

    lab.stop_php_fpm().unwrap();
    let started = Instant::now();
    let (checks, _) = ask_recorded(&lab, &config);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "bounded: {:?}",
        started.elapsed()
    );
    let t = find(&checks, &target);
    assert_eq!(t.status, Status::Fail, "{}", t.detail);
    says(
        t,
        &[
            "nginx answers 502 for example.com/",
            "the failing layer is PHP-FPM pool `www`",
        ],
    );
    assert_eq!(t.cause, Some(CauseId::UpstreamDown));
    let pool = find(&checks, "self-test.php-fpm.www");
    assert_eq!(
        (pool.status, pool.cause),
        (Status::Fail, Some(CauseId::UpstreamDown)),
        "{}",
        pool.detail
    );
    let map = stack::layers::map(&checks);
    let failing: Vec<&str> = map.iter().filter(|l| l.failing).map(|l| l.name).collect();
    assert_eq!(failing, vec!["PHP-FPM"]);
    assert_eq!(map[1].status, Status::Fail, "nginx answers 502 too");
}

/// `n` requests held open on a slow script, each in its own thread.
fn hold_workers(port: u16, n: usize, secs: u32) -> Vec<std::thread::JoinHandle<u16>> {
    (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                http_get(
                    port,
                    &format!("/sleep.php?s={secs}"),
                    "lab-slow",
                    Duration::from_secs(30),
                )
                .status
            })
        })
        .collect()
}

#[test]
fn fpm_status_over_fastcgi_shows_the_saturated_pool_and_the_slow_script() {
    let Some(mut lab) = start_or_skip(LabOptions {
        max_children: 2,
        ..LabOptions::default()
    }) else {
        return;
    };
    // A status listener of its own (PHP 8.0+): it answers while every worker is busy.
    let status_sock = lab.dir().join("run/www-status.sock");
    let mut conf = std::fs::read_to_string(lab.php_fpm_conf()).unwrap();
    conf.push_str(&format!(
        "pm.status_listen = {}\nping.path = /fpm-ping\n",
        status_sock.display()
    ));
    std::fs::write(lab.php_fpm_conf(), conf).unwrap();
    lab.start_php_fpm().unwrap();
    let config = lab_config(&lab);
    wait_for_workers(&lab, &config);

    let held = hold_workers(lab.port(), 3, 6);
    let d = discover::discover(&LiveHost, &config);
    let busy = wait_until(Duration::from_secs(5), || {
        let c = stack::fpm_status::checks(&LiveHost, &d);
        c.first().is_some_and(|c| c.status == Status::Fail)
    });
    assert!(busy, "the pool never looked saturated");
    let (checks, _) = ask_recorded(&lab, &config);
    let status = expect(
        &checks,
        "php-fpm.pool.www.live-status",
        Status::Fail,
        Some(CauseId::UpstreamSaturated),
        "2 of 2 workers busy",
    );
    says(
        status,
        &["scripts holding workers right now", "GET /sleep.php?s=6"],
    );
    // The held requests end when the lab stops (no need to wait for them).
    drop(held);
}

#[test]
fn a_saturated_pool_without_a_status_listener_is_seen_by_its_silence() {
    let Some(lab) = start_or_skip(LabOptions {
        max_children: 1,
        ..LabOptions::default()
    }) else {
        return;
    };
    let config = lab_config(&lab);
    wait_for_workers(&lab, &config);
    let held = hold_workers(lab.port(), 2, 5);
    std::thread::sleep(Duration::from_millis(500));
    let d = discover::discover(&LiveHost, &config);
    let started = Instant::now();
    let checks = stack::fpm_status::checks(&LiveHost, &d);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by its deadline"
    );
    expect(
        &checks,
        "php-fpm.pool.www.live-status",
        Status::Fail,
        Some(CauseId::UpstreamSaturated),
        "no worker answered within",
    );
    // The held requests end when the lab stops (no need to wait for them).
    drop(held);
}

const SECRET: &str = "Sx9-origin-agent-pw-7f3a";

fn credentials_file(lab: &Lab) -> PathBuf {
    lab.mariadb_sql(&format!(
        "CREATE USER 'agent'@'localhost' IDENTIFIED BY '{SECRET}'; GRANT PROCESS, SELECT ON *.* TO 'agent'@'localhost';"
    ))
    .unwrap();
    let path = lab.dir().join("agent-db.cnf");
    std::fs::write(
        &path,
        format!("[client]\nuser = agent\npassword = {SECRET}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// Every file under `dir` (a snapshot), as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in walk(dir) {
        out.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap()));
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn mariadb_at_max_connections_is_confirmed_now_and_no_credential_leaks() {
    let Some(lab) = start_or_skip(LabOptions {
        mariadb: true,
        mariadb_max_connections: 10,
        ..LabOptions::default()
    }) else {
        return;
    };
    let mut config = lab_config(&lab);
    config.database_credentials_file = Some(credentials_file(&lab));

    // Healthy: spare connections, the cause ruled out now.
    let checks = ask(&LiveHost, &config);
    let db = find(&checks, "database.live-status");
    assert_eq!(db.status, Status::Ok, "{}", db.detail);
    says(db, &["the credentials in", "not out of connections now"]);

    // Fill every connection as the unprivileged lab user.
    let opts = mysql::OptsBuilder::new()
        .socket(Some(lab.mariadb_socket().to_string_lossy().into_owned()))
        .user(Some("lab"))
        .pass(Some("lab"));
    let mut held = Vec::new();
    while let Ok(conn) = mysql::Conn::new(opts.clone()) {
        held.push(conn);
        assert!(held.len() <= 12, "max_connections is not enforced");
    }
    assert!(held.len() >= 8, "only {} connections", held.len());

    // The agent's user holds PROCESS but no CONNECTION ADMIN: it is refused like the app.
    let checks = ask(&LiveHost, &config);
    let db = find(&checks, "database.live-status");
    assert_eq!(
        (db.status, db.cause),
        (Status::Fail, Some(CauseId::DbTooManyConnections)),
        "{}",
        db.detail
    );

    // Root by unix-socket authentication gets the one extra connection and the numbers.
    let root = Config {
        database_credentials_file: None,
        ..config.clone()
    };
    // (The server releases a refused connection's slot a moment after refusing it.)
    let mut checks = Vec::new();
    wait_until(Duration::from_secs(5), || {
        checks = ask(&LiveHost, &root);
        find(&checks, "database.live-status")
            .detail
            .contains("connections in use")
    });
    let db = find(&checks, "database.live-status");
    assert_eq!(
        (db.status, db.cause),
        (Status::Fail, Some(CauseId::DbTooManyConnections)),
        "{}",
        db.detail
    );
    assert!(
        db.detail.contains("10 of 10 connections in use")
            || db.detail.contains("11 of 10 connections in use"),
        "{}",
        db.detail
    );
    assert!(db
        .fix
        .as_deref()
        .unwrap_or_default()
        .contains("max_connections 10"));
    drop(held);

    // The whole audit, recorded, with the password-holding file configured: the secret is in
    // no snapshot, report or log line.
    let report = {
        let rec = Recorder::new(LiveHost);
        let opts = origin_agent::audit::AuditOptions::default();
        let report = origin_agent::audit::run(&rec, &config, &opts);
        rec.write(&lab.dir().join("snap-audit"), "lab").unwrap();
        report
    };
    let json = serde_json::to_string(&report).unwrap();
    let human = origin_agent::report::human::render(
        &report,
        origin_agent::report::human::Style { color: false },
    );
    let snapshot = all_text(&lab.dir().join("snap-audit"));
    assert!(
        snapshot.contains("agent-db.cnf"),
        "the snapshot names the credentials file"
    );
    for (what, text) in [("json", &json), ("human", &human), ("snapshot", &snapshot)] {
        assert!(
            !text.contains(SECRET),
            "the password leaked into the {what}"
        );
    }
    for log in walk(&lab.dir().join("logs")) {
        assert!(
            !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(SECRET),
            "{}",
            log.display()
        );
    }
}

#[test]
fn a_crashed_myisam_table_is_found_and_the_fix_names_it() {
    let Some(lab) = start_or_skip(LabOptions {
        mariadb: true,
        mariadb_args: vec![
            "--myisam-recover-options=OFF".into(),
            "--aria-recover-options=OFF".into(),
        ],
        ..LabOptions::default()
    }) else {
        return;
    };
    lab.mariadb_sql(
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(20)) ENGINE=MyISAM; INSERT INTO shop.orders VALUES (1,'a'),(2,'b'); FLUSH TABLES;",
    )
    .unwrap();
    // Break it on disk: the MYI state header gets STATE_CRASHED in its `changed` byte and a
    // record count (bytes 28..36) that the data file does not hold, so CHECK TABLE finds real
    // damage (a table only *marked* crashed is found intact and its mark cleared).
    let myi = lab.dir().join("mysql/shop/orders.MYI");
    let mut bytes = std::fs::read(&myi).unwrap();
    bytes[26] |= 2;
    bytes[28..36].copy_from_slice(&5u64.to_be_bytes());
    std::fs::write(&myi, &bytes).unwrap();
    let err = lab
        .mariadb_sql("SELECT * FROM shop.orders")
        .unwrap_err()
        .to_string();
    assert!(err.contains("marked as crashed"), "{err}");
    assert!(lab.wait_for_log(
        &lab.mariadb_log(),
        0,
        "is marked as crashed",
        Duration::from_secs(5)
    ));

    let mut config = lab_config(&lab);
    config.logs.mysql_error = Some(vec![lab.mariadb_log().display().to_string()]);
    let (checks, _) = ask_recorded(&lab, &config);
    let t = find(&checks, "database.crashed-tables");
    assert_eq!(
        (t.status, t.cause),
        (Status::Fail, Some(CauseId::DbCrashedTable)),
        "{}",
        t.detail
    );
    says(t, &["`shop`.`orders`"]);
    let fix = t.fix.as_deref().unwrap();
    assert!(fix.contains("REPAIR TABLE `shop`.`orders`"), "{fix}");
    // Checked, never repaired: still crashed.
    let err = lab
        .mariadb_sql("SELECT * FROM shop.orders")
        .unwrap_err()
        .to_string();
    assert!(err.contains("crashed"), "{err}");
}

/// A loopback status page: each connection gets the next canned answer (after its delay).
fn status_server(answers: Vec<(Duration, String)>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/api/v2/summary.json",
        listener.local_addr().unwrap()
    );
    let handle = std::thread::spawn(move || {
        let mut threads = Vec::new();
        for (delay, body) in answers {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                std::thread::sleep(delay);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }));
        }
        for t in threads {
            let _ = t.join();
        }
    });
    (url, handle)
}

/// A config (written to `dir/agent.yaml`) with Cloudflare's status page at `url`.
fn cdn_config(dir: &Path, url: &str) -> (PathBuf, Config) {
    let yaml = format!(
        "cdn:\n  providers: [cloudflare]\n  status_urls:\n    cloudflare: \"{url}\"\nstate_dir: \"{}\"\n",
        dir.join("state").display()
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let config = Config::from_yaml(&yaml, &path).unwrap();
    (path, config)
}

const INCIDENT: &str = r#"{"page":{"id":"yh6f0r4529hb","name":"Cloudflare"},"status":{"indicator":"major","description":"Partial System Outage"},"components":[{"name":"Frankfurt, Germany - (FRA)","status":"major_outage","group":false},{"name":"London, United Kingdom - (LHR)","status":"operational","group":false}],"incidents":[{"name":"Elevated 522 errors for origins in Europe","status":"identified","impact":"major","updated_at":"2026-12-03T08:40:00Z","shortlink":"https://stspg.io/abc"}],"scheduled_maintenances":[]}"#;
const HEALTHY: &str = r#"{"status":{"indicator":"none","description":"All Systems Operational"},"components":[],"incidents":[],"scheduled_maintenances":[]}"#;

#[test]
fn cdn_status_from_a_loopback_server_incident_malformed_slow_cached_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = status_server(vec![
        (Duration::ZERO, INCIDENT.to_string()),
        (Duration::ZERO, "<html>maintenance</html>".to_string()),
        (Duration::from_secs(5), HEALTHY.to_string()),
        (Duration::ZERO, HEALTHY.to_string()),
    ]);
    let (cfg_path, config) = cdn_config(dir.path(), &url);

    // 1. The incident, through the subcommand: exit 1 and the incident named.
    let out = run_agent(&["cdn", "status", "--config", cfg_path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Elevated 522 errors for origins in Europe"),
        "{text}"
    );
    assert!(
        text.contains("Frankfurt, Germany - (FRA) (major_outage)"),
        "{text}"
    );

    // 2. Malformed: the last good answer, cached in the state dir and marked so.
    let providers = [origin_agent::cdn::Provider::Cloudflare];
    let c = stack::cdn_status::checks_for(&LiveHost, &config, &providers);
    assert_eq!(c[0].status, Status::Warn, "{}", c[0].detail);
    assert!(
        c[0].detail.contains("cached answer from"),
        "{}",
        c[0].detail
    );

    // 3. Slow: given up at the deadline; without the cache it is a skip with the reason.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let started = Instant::now();
    let c = stack::cdn_status::checks_for(&LiveHost, &config, &providers);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c[0].status, Status::Skip, "{}", c[0].detail);
    assert!(
        c[0].detail.contains("status page unreachable"),
        "{}",
        c[0].detail
    );

    // 4. Healthy, recorded, replayed offline by `audit --snapshot`: the same answer.
    let rec = Recorder::new(LiveHost);
    let c = stack::cdn_status::checks_for(&rec, &config, &providers);
    assert_eq!(c[0].status, Status::Ok, "{}", c[0].detail);
    rec.write(&dir.path().join("snap"), "web1").unwrap();
    let snap = SnapshotHost::open(&dir.path().join("snap")).unwrap();
    let replayed = stack::cdn_status::checks_for(&snap, &config, &providers);
    assert_eq!(replayed, c);
    let _ = server.join();
}

#[test]
fn the_audit_report_says_the_cdn_has_an_incident() {
    // A snapshot whose only answer is the status page: the offline audit shows the incident
    // in its checks and on the layer map.
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = status_server(vec![(Duration::ZERO, INCIDENT.to_string())]);
    let (cfg_path, config) = cdn_config(dir.path(), &url);
    let rec = Recorder::new(LiveHost);
    stack::cdn_status::checks_for(&rec, &config, &[origin_agent::cdn::Provider::Cloudflare]);
    let _ = rec.now();
    rec.write(&dir.path().join("snap"), "web1").unwrap();
    let _ = server.join();
    let snap = dir.path().join("snap");
    let out = run_agent(&[
        "audit",
        "--format",
        "human",
        "--config",
        cfg_path.to_str().unwrap(),
        "--snapshot",
        snap.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cloudflare reports an incident or degraded service"),
        "{text}"
    );
    assert!(
        text.contains("CDN        warn Partial System Outage (major)"),
        "{text}"
    );
}
