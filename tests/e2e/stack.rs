//! Discovery and service probes against the real lab stack (`lab.rs`): nginx, PHP-FPM 8.2 and
//! MariaDB started on loopback from temp dirs. Discovery must find them from their processes
//! alone (matched by the lab's config paths, since other nginx/PHP-FPM instances may run), and
//! the health checks must follow the real state as PHP-FPM's socket loses its permissions, is
//! removed, goes stale after a crash, and PHP-FPM stops.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use origin_agent::cause::CauseId;
use origin_agent::check::{Check, Status};
use origin_agent::config::Config;
use origin_agent::discover::{self, Address, Discovery, UpstreamKind};
use origin_agent::event::LogSource;
use origin_agent::host::live::LiveHost;
use origin_agent::host::recorder::Recorder;
use origin_agent::host::snapshot::SnapshotHost;
use origin_agent::probes;

use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::lab::{start_or_skip, wait_until, Lab, LabOptions, Signal};

fn find<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    checks.iter().find(|c| c.id == id).unwrap_or_else(|| {
        panic!(
            "no check {id}; have: {:?}",
            checks.iter().map(|c| c.id.as_str()).collect::<Vec<_>>()
        )
    })
}

/// Discovery pinned to this lab (other helpers' labs may run on the same machine).
fn lab_config(lab: &Lab) -> Config {
    Config {
        nginx_config: Some(lab.nginx_conf()),
        php_fpm_configs: Some(vec![lab.php_fpm_conf()]),
        ..Config::default()
    }
}

fn probe(lab: &Lab) -> (Discovery, Vec<Check>) {
    let config = lab_config(lab);
    let d = discover::discover(&LiveHost, &config);
    let checks = probes::run_all(&LiveHost, &d, &config);
    (d, checks)
}

#[test]
fn stack_discovery_finds_the_lab_without_configuration() {
    let Some(lab) = start_or_skip(LabOptions {
        mariadb: true,
        ..LabOptions::default()
    }) else {
        return;
    };
    wait_for_workers(&lab);
    let d = discover::discover(&LiveHost, &Config::default());

    // nginx: found by its master's command line, among any others.
    let nginx = d
        .nginx
        .iter()
        .chain(&d.other_nginx)
        .find(|n| n.config_path.as_deref() == Some(lab.nginx_conf().as_path()))
        .unwrap_or_else(|| panic!("lab nginx not discovered; notes: {:#?}", d.notes));
    assert_eq!(nginx.master.as_ref().map(|m| m.pid), lab.nginx_pid());
    assert_eq!(nginx.workers.len(), 1, "worker_processes 1");
    assert_eq!(nginx.prefix.as_deref(), Some(lab.dir()));
    assert_eq!(nginx.user.as_ref().unwrap().value, "www-data");
    assert_eq!(nginx.worker_connections.as_ref().unwrap().value, 512);
    assert!(nginx.error_logs.iter().any(|l| l.value == lab.error_log()));
    let access = nginx
        .access_logs
        .iter()
        .find(|l| l.path == lab.access_log())
        .unwrap();
    assert_eq!(access.format_name, "lab");
    assert!(access
        .format
        .as_ref()
        .unwrap()
        .contains("urt=\"$upstream_response_time\""));
    assert!(
        nginx
            .upstream_targets
            .iter()
            .any(|t| t.kind == UpstreamKind::Fastcgi
                && t.address == Some(Address::Unix(lab.socket())))
    );
    assert!(nginx
        .upstream_targets
        .iter()
        .any(|t| t.group.as_deref() == Some("php_backend")));
    assert_eq!(
        nginx.fastcgi_read_timeout.as_ref().unwrap().value.as_secs(),
        30
    );
    assert!(nginx
        .servers
        .iter()
        .flat_map(|s| &s.listens)
        .any(|l| l.port == Some(lab.port())));

    // PHP-FPM: the master's title names its config; the pool's workers are its children.
    let fpm = d
        .php_fpm
        .iter()
        .find(|f| f.config_path == lab.php_fpm_conf())
        .unwrap_or_else(|| panic!("lab php-fpm not discovered; notes: {:#?}", d.notes));
    assert_eq!(fpm.master.as_ref().map(|m| m.pid), lab.php_fpm_pid());
    assert_eq!(fpm.error_log.as_ref().unwrap().value, lab.php_fpm_log());
    let www = fpm.pools.iter().find(|p| p.name == "www").unwrap();
    assert_eq!(www.workers.len(), 4, "pm static, max_children 4");
    assert_eq!(
        www.listen.as_ref().unwrap().value,
        Address::Unix(lab.socket())
    );
    assert_eq!(www.max_children.as_ref().unwrap().value, 4);

    // MariaDB: its options come from the command line (`--no-defaults`). Several servers may
    // run on this machine: name the lab's socket to pick it.
    let config = Config {
        mysql_socket: Some(lab.mariadb_socket()),
        ..Config::default()
    };
    let d2 = discover::discover(&LiveHost, &config);
    let db = d2.database.as_ref().unwrap();
    assert_eq!(db.process.as_ref().map(|p| p.pid), lab.mariadb_pid());
    assert_eq!(db.flavor, "mariadb");
    assert_eq!(db.port.as_ref().unwrap().value, lab.mariadb_port());
    assert_eq!(db.error_log.as_ref().unwrap().value, lab.mariadb_log());
    assert!(db.config_files.is_empty(), "--no-defaults reads no my.cnf");

    // The log files to read, with the access log's format.
    let config = lab_config(&lab);
    let d3 = discover::discover(&LiveHost, &config);
    let files = discover::log_files(&LiveHost, &d3, &config);
    let by_path = |p: &Path| files.iter().find(|f| f.path == p);
    let access = by_path(&lab.access_log()).unwrap();
    assert_eq!(access.source, Some(LogSource::NginxAccess));
    assert!(access
        .access_format
        .as_ref()
        .unwrap()
        .contains("rt=$request_time"));
    assert_eq!(
        by_path(&lab.error_log()).unwrap().source,
        Some(LogSource::NginxError)
    );
    assert_eq!(
        by_path(&lab.php_fpm_log()).unwrap().source,
        Some(LogSource::PhpFpm)
    );

    // The database checks on the live lab server.
    let checks = probes::run_all(&LiveHost, &d2, &config);
    assert_eq!(find(&checks, "db.running").status, Status::Ok);
    let c = find(&checks, "db.connect");
    assert_eq!(c.status, Status::Ok, "{}", c.detail);
    let c = find(&checks, "fd.mariadb");
    assert_ne!(c.status, Status::Skip, "{}", c.detail);

    // Stopped: its socket refuses (whatever other server may run on this machine).
    let mut lab = lab;
    lab.stop_mariadb().unwrap();
    let d4 = discover::discover(&LiveHost, &config_db(&lab));
    let checks = probes::run_all(&LiveHost, &d4, &config_db(&lab));
    let c = find(&checks, "db.connect");
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert_eq!(c.cause, Some(CauseId::DbDown));
    assert!(
        c.detail
            .contains(&lab.mariadb_socket().display().to_string()),
        "{}",
        c.detail
    );
    // Other servers may run on this machine; none uses the lab's socket now.
    let c = find(&checks, "db.running");
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert_eq!(c.cause, Some(CauseId::DbDown));
}

fn config_db(lab: &Lab) -> Config {
    Config {
        mysql_socket: Some(lab.mariadb_socket()),
        mysql_port: Some(lab.mariadb_port()),
        ..Config::default()
    }
}

#[test]
fn stack_health_checks_follow_the_real_state() {
    let Some(mut lab) = start_or_skip(LabOptions::default()) else {
        return;
    };
    let sock = lab.socket().display().to_string();
    let upstream_id = format!("upstream.unix:{sock}.connect");
    wait_for_workers(&lab);

    // Healthy.
    let (_, checks) = probe(&lab);
    for id in [
        "nginx.running",
        "nginx.listening",
        "php-fpm.pool.www.running",
        "php-fpm.pool.www.socket",
        "php-fpm.pool.www.socket-permission",
        upstream_id.as_str(),
    ] {
        let c = find(&checks, id);
        assert_eq!(c.status, Status::Ok, "{id}: {}", c.detail);
    }
    assert_eq!(find(&checks, "php-fpm.pool.www.queue").status, Status::Ok);
    assert!(find(&checks, "nginx.listening")
        .detail
        .contains(&format!("127.0.0.1:{}", lab.port())));
    // The lab's TCP upstream where nothing listens is really down.
    let refused = find(
        &checks,
        &format!("upstream.127.0.0.1:{}.connect", lab.refused_port()),
    );
    assert_eq!(refused.status, Status::Fail);
    assert_eq!(refused.cause, Some(CauseId::UpstreamDown));
    assert!(refused.detail.contains("(111:"), "{}", refused.detail);
    // Live /proc answers the load and limit probes (whatever their status on this machine).
    for id in [
        "load.cpu",
        "memory.available",
        "swap.activity",
        "net.listen-overflows",
    ] {
        assert_ne!(find(&checks, id).status, Status::Skip, "{id}");
    }
    let c = find(&checks, "php-fpm.pool.www.max-children");
    assert_ne!(c.status, Status::Skip, "{}", c.detail);
    assert!(c.detail.contains("pm.max_children = 4"), "{}", c.detail);
    // Real /proc/PID/limits and fd counts of the lab's nginx and PHP-FPM.
    for id in [
        "nginx.worker-connections",
        "nginx.open-files",
        "fd.nginx",
        "fd.php-fpm",
    ] {
        let c = find(&checks, id);
        assert_ne!(c.status, Status::Skip, "{id}: {}", c.detail);
    }
    assert!(find(&checks, "nginx.worker-connections")
        .detail
        .contains("worker_connections = 512"));
    // request_terminate_timeout = 0 in the lab: PHP outlives nginx's 30 s.
    let c = find(&checks, "php-fpm.pool.www.terminate-timeout");
    assert_eq!(c.status, Status::Warn, "{}", c.detail);
    assert!(c
        .fix
        .as_ref()
        .unwrap()
        .contains("request_terminate_timeout = 30s"));

    // chmod 600 root: nginx's www-data workers may not connect.
    lab.break_socket_permissions().unwrap();
    let (_, checks) = probe(&lab);
    let c = find(&checks, "php-fpm.pool.www.socket-permission");
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert_eq!(c.cause, Some(CauseId::UpstreamSocketPermission));
    assert!(
        c.detail.contains("root:root with mode 0600"),
        "{}",
        c.detail
    );
    let fix = c.fix.as_ref().unwrap();
    assert!(
        fix.contains(&lab.php_fpm_conf().display().to_string()),
        "{fix}"
    );
    assert!(fix.contains("listen.owner = www-data"), "{fix}");

    // The socket file removed while PHP-FPM runs.
    lab.start_php_fpm().unwrap();
    lab.remove_socket().unwrap();
    // A freshly started master may not have its workers yet (a warning): on a loaded machine
    // give it a bounded moment.
    let mut checks = probe(&lab).1;
    for _ in 0..20 {
        if find(&checks, "php-fpm.pool.www.running").status == Status::Ok {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        checks = probe(&lab).1;
    }
    let c = find(&checks, "php-fpm.pool.www.socket");
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert_eq!(c.cause, Some(CauseId::UpstreamDown));
    assert!(c.detail.contains("does not exist"), "{}", c.detail);
    assert_eq!(find(&checks, "php-fpm.pool.www.running").status, Status::Ok);
    assert_eq!(find(&checks, &upstream_id).status, Status::Fail);

    // A crash (SIGKILL of the whole group): the socket stays and refuses.
    lab.start_php_fpm().unwrap();
    lab.kill_php_fpm().unwrap();
    let (_, checks) = probe(&lab);
    let c = find(&checks, "php-fpm.pool.www.running");
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert_eq!(c.cause, Some(CauseId::UpstreamDown));
    let c = find(&checks, "php-fpm.pool.www.socket");
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert!(c.detail.contains("(111:"), "{}", c.detail);

    // A clean stop.
    lab.start_php_fpm().unwrap();
    lab.stop_php_fpm().unwrap();
    let (_, checks) = probe(&lab);
    let c = find(&checks, "php-fpm.pool.www.running");
    assert_eq!(c.status, Status::Fail, "{}", c.detail);
    assert!(c.fix.as_ref().unwrap().contains("systemctl start"));
    assert_eq!(
        find(&checks, "php-fpm.pool.www.socket").status,
        Status::Fail
    );
    assert_eq!(find(&checks, "nginx.running").status, Status::Ok);

    // nginx stopped (SIGTERM to the lab's own master; the lab reaps it on drop).
    let pid = lab.nginx_pid().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| c.is_empty())
    });
    assert!(gone, "nginx did not stop");
    let (d, checks) = probe(&lab);
    assert!(d.nginx.as_ref().unwrap().master.is_none());
    for id in ["nginx.running", "nginx.listening"] {
        let c = find(&checks, id);
        assert_eq!(c.status, Status::Fail, "{id}: {}", c.detail);
        assert_eq!(c.cause, Some(CauseId::WebDown));
    }
}

#[test]
fn stack_a_busy_pool_shows_waiting_connections() {
    let Some(lab) = start_or_skip(LabOptions {
        max_children: 1,
        ..LabOptions::default()
    }) else {
        return;
    };
    wait_for_workers(&lab);
    let config = lab_config(&lab);
    let d = discover::discover(&LiveHost, &config);
    let idle = probes::queues::checks(&LiveHost, &d, &config);
    assert_eq!(find(&idle, "php-fpm.pool.www.queue").status, Status::Ok);
    assert_eq!(find(&idle, "nginx.accept-queue").status, Status::Ok);
    // One worker, four slow requests at once: three wait in the socket's queue.
    std::thread::scope(|s| {
        let load = s.spawn(|| lab.get_many("/sleep.php?s=3", 4, 4));
        let mut busy = None;
        wait_until(Duration::from_secs(8), || {
            let checks = probes::queues::checks(&LiveHost, &d, &config);
            let c = find(&checks, "php-fpm.pool.www.queue").clone();
            let waiting = c.status == Status::Warn;
            busy = Some(c);
            waiting
        });
        let c = busy.unwrap();
        assert_eq!(c.status, Status::Warn, "{}", c.detail);
        assert!(c.detail.contains("pm.max_children = 1"), "{}", c.detail);
        let statuses = load.join().unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    });
}

/// Waits (bounded) until the lab's nginx has forked its worker: the lab is ready once the
/// master accepts, which can be just before the fork.
fn wait_for_workers(lab: &Lab) {
    let config = lab_config(lab);
    let ready = wait_until(Duration::from_secs(10), || {
        discover::discover(&LiveHost, &config)
            .nginx
            .is_some_and(|n| !n.workers.is_empty())
    });
    assert!(ready, "the lab's nginx has no worker");
}

#[test]
fn stack_snapshot_replays_the_same_discovery_and_checks() {
    let Some(mut lab) = start_or_skip(LabOptions::default()) else {
        return;
    };
    wait_for_workers(&lab);
    // A state worth capturing: the socket is gone while PHP-FPM runs.
    lab.remove_socket().unwrap();
    let config = lab_config(&lab);
    let recorder = Recorder::new(LiveHost);
    let live_d = discover::discover(&recorder, &config);
    let live_checks = probes::run_all(&recorder, &live_d, &config);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.tar.gz");
    recorder.write(&out, "lab").unwrap();
    // Stop everything: the snapshot alone must answer.
    lab.stop_php_fpm().unwrap();
    drop(lab);
    let snap = SnapshotHost::open(&out).unwrap();
    let d = discover::discover(&snap, &config);
    assert_eq!(d, live_d);
    let checks = probes::run_all(&snap, &d, &config);
    let summary = |cs: &[Check]| {
        cs.iter()
            .map(|c| (c.id.clone(), c.status, c.cause))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&checks), summary(&live_checks));
    let c = find(&checks, "php-fpm.pool.www.socket");
    assert_eq!(c.status, Status::Fail);
}

/// Prints what discovery and the probes see on this machine (run by hand:
/// `cargo test --test e2e stack_print_live -- --ignored --nocapture`).
#[test]
#[ignore]
fn stack_print_live() {
    let config = Config::default();
    let started = std::time::Instant::now();
    let d = discover::discover(&LiveHost, &config);
    let discovered = started.elapsed();
    let checks = probes::run_all(&LiveHost, &d, &config);
    println!(
        "discover: {discovered:?}; probes: {:?} (includes the 1 s counter sample)",
        started.elapsed() - discovered
    );
    println!("{}", serde_json::to_string_pretty(&d.notes).unwrap());
    for c in checks {
        println!(
            "{:5} {:45} {} | {}{}",
            c.status.label(),
            c.id,
            c.title,
            c.detail,
            c.fix.map(|f| format!(" | fix: {f}")).unwrap_or_default()
        );
    }
}
