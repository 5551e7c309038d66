//! The agent as root against what an unprivileged account sets up (issue 11): each test prepares
//! its trap as `nobody` (`setpriv --reuid nobody --regid nogroup --clear-groups`), runs the real
//! `origin-agent` binary as root, and asserts the agent holds: nothing of nobody's is executed, a
//! full listen queue is reported within the deadline as saturation, a FIFO log is a skipped check,
//! `collect` never writes through a planted symlink, `/metrics` answers beside slow clients and
//! the daemon stops in time, a hostile snapshot is refused within a memory bound, and log text
//! never puts a raw escape byte on the terminal.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::cmd::{agent, Cmd};
use crate::util::services::Killed;

const NOBODY: u32 = 65534;

/// Root, and the tools the traps need; otherwise the reason to skip.
fn ready() -> bool {
    if !nix::unistd::geteuid().is_root() {
        crate::skip("hostile tests need root (they set traps as nobody)");
        return false;
    }
    if !Path::new("/usr/bin/setpriv").exists() {
        crate::skip("setpriv (util-linux) is missing");
        return false;
    }
    true
}

/// A directory owned by nobody (where nobody sets traps).
fn nobody_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("origin-agent-hostile-")
        .tempdir()
        .unwrap();
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `sh -c SCRIPT` as nobody.
fn as_nobody(script: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "nobody",
        "--regid",
        "nogroup",
        "--clear-groups",
        "bash",
        "-c",
        script,
    ]);
    cmd
}

/// Runs `cmd` to its end, killed at `limit`; the output and how long it took.
fn run_bounded(cmd: Command, limit: Duration) -> (Output, Duration) {
    Cmd::from(cmd).deadline(limit).run_timed()
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("agent.yaml");
    std::fs::write(
        &path,
        format!("{body}state_dir: \"{}\"\n", dir.join("state").display()),
    )
    .unwrap();
    path
}

fn checks(stdout: &[u8]) -> Vec<serde_json::Value> {
    let report: serde_json::Value = serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(stdout)));
    report["checks"].as_array().cloned().unwrap_or_default()
}

/// `audit --json` under `config`, which must finish within `limit`; its checks.
fn audit_checks(config: &Path, limit: Duration) -> Vec<serde_json::Value> {
    let mut cmd = agent();
    cmd.args(["audit", "--json", "--since", "5m", "--config"])
        .arg(config);
    let (out, took) = run_bounded(cmd, Duration::from_secs(60));
    assert!(took < limit, "audit took {took:?}");
    checks(&out.stdout)
}

/// The check whose id ends with `suffix`.
fn check_ending(checks: &[serde_json::Value], suffix: &str) -> serde_json::Value {
    checks
        .iter()
        .find(|c| c["id"].as_str().unwrap().ends_with(suffix))
        .cloned()
        .unwrap_or_else(|| panic!("no check ending with {suffix}: {checks:#?}"))
}

#[test]
fn a_fake_nginx_master_owned_by_nobody_is_neither_executed_nor_believed() {
    if !ready() {
        return;
    }
    // The fake master is a stack process other labs' discovery would see: hold the lab lock.
    let _lock = crate::lab::exclusive();
    let trap = nobody_dir();
    let d = trap.path().display().to_string();
    // nobody's program (a copy of sleep: if the agent ran it, its file would be opened for exec)
    // and a config that would make root tail a file of nobody's choosing.
    let setup = format!(
        "cp /bin/sleep {d}/nginx && printf 'events {{}}\\nhttp {{ access_log {d}/evil-access.log; }}\\n' > {d}/evil.conf && echo ok"
    );
    let out = Cmd::from(as_nobody(&setup)).run();
    assert!(out.status.success(), "{out:?}");
    let fake = Killed(
        as_nobody(&format!(
            "exec -a 'nginx: master process {d}/nginx -c {d}/evil.conf' {d}/nginx 120"
        ))
        .spawn()
        .unwrap(),
    );
    let pid = fake.0.id();
    let shows = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.starts_with(b"nginx: master process"))
    };
    assert!(crate::lab::wait_until(Duration::from_secs(5), shows));
    // Every open of nobody's program from now on (an exec opens it) is seen.
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).unwrap();
    watcher
        .watch(
            &trap.path().join("nginx"),
            notify::RecursiveMode::NonRecursive,
        )
        .unwrap();
    // The detector works: running the program once is seen.
    let ran = Command::new(trap.path().join("nginx"))
        .arg("0")
        .status()
        .unwrap();
    assert!(ran.success());
    let seen = crate::lab::wait_until(Duration::from_secs(5), || {
        rx.try_iter()
            .filter_map(Result::ok)
            .any(|e| matches!(e.kind, notify::EventKind::Access(_)))
    });
    assert!(seen, "inotify did not see an exec of the program");
    std::thread::sleep(Duration::from_millis(200));
    rx.try_iter().for_each(drop);
    let state = tempfile::tempdir().unwrap();
    let config = write_config(state.path(), "");
    let checks = audit_checks(&config, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    let opens: Vec<_> = rx
        .try_iter()
        .filter_map(Result::ok)
        .filter(|e| matches!(e.kind, notify::EventKind::Access(_)))
        .collect();
    assert!(opens.is_empty(), "nobody's program was opened: {opens:?}");
    let untrusted = checks
        .iter()
        .find(|c| c["id"] == "discovery.untrusted")
        .unwrap_or_else(|| panic!("no discovery.untrusted check: {checks:#?}"));
    let detail = untrusted["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("process {pid}")) && detail.contains("owned by nobody"),
        "{detail}"
    );
    assert!(
        !checks
            .iter()
            .any(|c| c["id"].as_str().unwrap().contains("evil-access.log")),
        "a log named by nobody's config was read"
    );
    drop(fake);
}

/// A unix socket listening (backlog 0) whose queue nobody filled.
fn full_queue(dir: &Path) -> Killed {
    let sock = dir.join("php.sock");
    let script = format!(
        r#"exec perl -MSocket -MFcntl -e '
            my $p = "{sock}";
            socket(my $l, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
            bind($l, pack_sockaddr_un($p)) or die "bind: $!";
            listen($l, 0) or die "listen: $!";
            my @c;
            for (1..4) {{
                socket(my $c, PF_UNIX, SOCK_STREAM, 0) or die;
                fcntl($c, F_SETFL, fcntl($c, F_GETFL, 0) | O_NONBLOCK);
                connect($c, pack_sockaddr_un($p));
                push @c, $c;
            }}
            $| = 1; print "ready\n"; sleep 120;'"#,
        sock = sock.display()
    );
    let mut child = as_nobody(&script).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Killed(child)
}

#[test]
fn a_full_listen_queue_is_reported_as_saturation_within_the_deadline() {
    if !ready() {
        return;
    }
    let trap = nobody_dir();
    let _queue = full_queue(trap.path());
    let state = tempfile::tempdir().unwrap();
    let fpm_conf = state.path().join("php-fpm.conf");
    std::fs::write(
        &fpm_conf,
        format!(
            "[global]\nerror_log = {}\n[www]\nlisten = {}\npm = static\npm.max_children = 1\n",
            state.path().join("fpm.log").display(),
            trap.path().join("php.sock").display()
        ),
    )
    .unwrap();
    let config = write_config(
        state.path(),
        &format!("php_fpm:\n  configs: [\"{}\"]\n", fpm_conf.display()),
    );
    let checks = audit_checks(&config, Duration::from_secs(20));
    let socket = check_ending(&checks, "www.socket");
    assert_eq!(socket["cause"], "upstream.saturated", "{socket:#}");
}

#[test]
fn a_fifo_where_a_log_should_be_is_a_skipped_check_not_a_hang() {
    if !ready() {
        return;
    }
    let trap = nobody_dir();
    let fifo = trap.path().join("error.log");
    let out = Cmd::from(as_nobody(&format!("mkfifo {}", fifo.display()))).run();
    assert!(out.status.success(), "{out:?}");
    let state = tempfile::tempdir().unwrap();
    let config = write_config(
        state.path(),
        &format!("logs:\n  nginx_error: [\"{}\"]\n", fifo.display()),
    );
    let checks = audit_checks(&config, Duration::from_secs(20));
    let log = check_ending(&checks, "error.log");
    assert_eq!(log["status"], "skip", "{log:#}");
    assert!(
        log["detail"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{log:#}"
    );
}

#[test]
fn collect_never_writes_through_a_planted_symlink_and_writes_0600() {
    if !ready() {
        return;
    }
    // A world-writable sticky directory (like /tmp) where root runs collect.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let private = tempfile::tempdir().unwrap();
    let victim = private.path().join("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    let planted = shared.path().join("snap.tar.gz");
    let out = Cmd::from(as_nobody(&format!(
        "ln -s {} {}",
        victim.display(),
        planted.display()
    )))
    .run();
    assert!(out.status.success(), "{out:?}");
    let config = write_config(private.path(), "");
    let collect = |to: &Path| {
        let mut cmd = agent();
        cmd.args(["collect", "--since", "5m", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(to);
        run_bounded(cmd, Duration::from_secs(60)).0
    };
    let out = collect(&planted);
    assert!(!out.status.success(), "collect wrote through the link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file\n");
    let fresh = shared.path().join("fresh.tar.gz");
    let out = collect(&fresh);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::symlink_metadata(&fresh)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Redacted"));
}

#[test]
fn metrics_answer_beside_slow_clients_and_the_daemon_stops_in_time() {
    if !ready() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let access = state.path().join("access.log");
    std::fs::write(&access, "").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(
        state.path(),
        &format!(
            "logs:\n  nginx_access: [\"{}\"]\nmetrics:\n  listen: 127.0.0.1:{port}\n",
            access.display()
        ),
    );
    let mut cmd = agent();
    cmd.args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut daemon = Killed(cmd.spawn().unwrap());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let scrape = || -> Option<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.contains("origin_agent_up").then_some(text)
    };
    assert!(crate::lab::wait_until(Duration::from_secs(15), || scrape().is_some()));
    // Slow clients (as an attacker would: a header byte every 1.5 s, reconnecting when closed).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..12)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
                    while !stop.load(std::sync::atomic::Ordering::SeqCst)
                        && s.write_all(b"X").is_ok()
                    {
                        std::thread::sleep(Duration::from_millis(1500));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        let started = Instant::now();
        let answered = scrape();
        assert!(
            answered.is_some() && started.elapsed() < Duration::from_secs(3),
            "no answer within 3 s beside slow clients ({:?})",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A stop completes in time whatever the clients do.
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopped = crate::lab::wait_until(Duration::from_secs(15), || {
        daemon.0.try_wait().ok().flatten().is_some()
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(stopped, "the daemon did not stop within 15 s");
    assert!(started.elapsed() < Duration::from_secs(15));
    for t in slow {
        let _ = t.join();
    }
}

#[test]
fn a_hostile_snapshot_is_refused_within_a_memory_bound() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A GNU long-name header declaring 3 GiB, then 64 MiB of zeros: a small .tar.gz.
    let evil = dir.path().join("evil.tar.gz");
    {
        let file = std::fs::File::create(&evil).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
        gz.write_all(&origin_agent::host::snapshot::raw_header(
            "././@LongLink",
            b'L',
            3 << 30,
        ))
        .unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap();
    }
    assert!(std::fs::metadata(&evil).unwrap().len() < 4 << 20);
    // Run under a 512 MiB data limit: an allocation past it fails (and the agent would abort).
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--data={}", 512u64 << 20))
        .arg(assert_cmd::cargo::cargo_bin("origin-agent"))
        .args(["audit", "--snapshot"])
        .arg(&evil);
    let (out, took) = run_bounded(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        stderr.contains("refused") && stderr.contains("extension header"),
        "{:?}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("memory allocation"), "{stderr}");
    // A directory snapshot with a blob linked to /dev/zero is refused too.
    let snap = dir.path().join("snap");
    std::fs::create_dir_all(snap.join("blobs")).unwrap();
    std::fs::write(snap.join("snapshot.json"), "{}").unwrap();
    std::os::unix::fs::symlink("/dev/zero", snap.join("blobs/000000")).unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--data={}", 512u64 << 20))
        .arg(assert_cmd::cargo::cargo_bin("origin-agent"))
        .args(["audit", "--snapshot"])
        .arg(&snap);
    let (out, _) = run_bounded(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("symlink"), "{stderr}");
}

#[test]
fn hostile_log_text_never_puts_a_raw_escape_on_the_terminal() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    use origin_agent::host::HostExt;
    let tz = origin_agent::host::live::LiveHost.time_zone();
    let z = jiff::Timestamp::now().to_zoned_datetime(tz);
    let now = format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
        z.year(),
        z.month(),
        z.day(),
        z.hour(),
        z.minute(),
        z.second()
    );
    // A PHP exception message and a referrer carrying terminal escapes (clear the screen, move
    // the cursor, print a fake verdict, set the window title).
    let evil = "\x1b[2J\x1b[1;1H\x1b[1;32mOK nothing to see\x1b[0m\x1b]0;pwned\x07\u{9b}2J";
    std::fs::write(
        &log,
        format!(
            "{now} [error] 1234#1234: *7 FastCGI sent in stderr: \"PHP message: PHP Fatal error:  Uncaught Exception: {evil} in /var/www/html/wp-content/plugins/x/x.php:3\" while reading response header from upstream, client: 203.0.113.9, server: _, request: \"GET /?q={evil} HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"example.com\", referrer: \"{evil}\"\n\
             {now} [error] 1234#1234: *8 connect() to unix:/run/php/php8.2-fpm.sock failed (11: Resource temporarily unavailable) while connecting to upstream, client: 203.0.113.9, server: _, request: \"GET /{evil} HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"example.com\", referrer: \"{evil}\"\n"
        ),
    )
    .unwrap();
    let mut cmd = agent();
    cmd.args(["scan", "--since", "1h"]).arg(&log);
    let (out, _) = run_bounded(cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\\x1b[2J"),
        "the text is shown, escaped: {text}"
    );
    for raw in ['\x1b', '\x07', '\u{9b}'] {
        assert!(!text.contains(raw), "raw {raw:?} in: {text:?}");
    }
    // `rules test` prints the captured fields of each matching line: escaped too.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/nginx.yaml");
    let mut cmd = agent();
    cmd.args(["rules", "test"]).arg(&rules).arg(&log);
    let (out, _) = run_bounded(cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.is_empty(), "{out:?}");
    for raw in ['\x1b', '\x07', '\u{9b}'] {
        assert!(!text.contains(raw), "raw {raw:?} in: {text:?}");
    }
}

/// A pipeline whose probe pass never returns (a probe stuck on something a user controls).
struct StuckProbe(origin_agent::daemon::AccessStatusCounter);

impl origin_agent::daemon::LineProcessor for StuckProbe {
    fn line(
        &mut self,
        source: origin_agent::event::LogSource,
        path: &Path,
        n: u64,
        line: &[u8],
    ) -> origin_agent::daemon::LineOutcome {
        self.0.line(source, path, n, line)
    }
}

impl origin_agent::daemon::Diagnoser for StuckProbe {
    fn tick(&mut self, now: jiff::Timestamp) -> origin_agent::daemon::TickResult {
        self.0.tick(now)
    }
    fn probe_job(&mut self, _now: jiff::Timestamp) -> Option<origin_agent::daemon::ProbeJob> {
        Some(Box::new(|| {
            std::thread::sleep(Duration::from_secs(300));
            origin_agent::daemon::ProbeOutput(Box::new(()))
        }))
    }
}

#[test]
fn a_stuck_probe_never_stops_the_tailing_the_metrics_or_a_stop() {
    use origin_agent::daemon::{self, Control, RunOptions};
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    std::fs::write(&access, "").unwrap();
    let config_path = write_config(
        dir.path(),
        &format!(
            "logs:\n  nginx_access: [\"{}\"]\nmetrics:\n  listen: 127.0.0.1:0\n",
            access.display()
        ),
    );
    let config = origin_agent::config::Config::load(&config_path).unwrap();
    let options = RunOptions {
        poll_interval: Duration::from_millis(50),
        min_poll_gap: Duration::from_millis(10),
        tick_interval: Duration::from_millis(200),
        host: Some("test-host".to_string()),
        logger: Some(origin_agent::daemon::notify::Logger::stderr()),
        ..RunOptions::default()
    };
    let control = std::sync::Arc::new(Control::new());
    let c = control.clone();
    let mut pipeline = StuckProbe(daemon::AccessStatusCounter::new(Duration::from_secs(60)));
    let thread = std::thread::spawn(move || daemon::run_with(&config, &mut pipeline, options, &c));
    assert!(crate::lab::wait_until(Duration::from_secs(10), || control.is_ready()));
    let addr = control.metrics_addr().unwrap();
    // Lines written while the probe is stuck are counted and served.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&access)
        .unwrap();
    for _ in 0..3 {
        writeln!(
            log,
            "203.0.113.9 - - [01/Jan/2026:00:00:00 +0000] \"GET / HTTP/1.1\" 502 0 \"-\" \"ua\""
        )
        .unwrap();
    }
    let counted = crate::lab::wait_until(Duration::from_secs(10), || {
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .any(|l| l == "origin_agent_responses_total{status=\"502\"} 3")
    });
    assert!(counted, "lines were not counted while the probe was stuck");
    let started = Instant::now();
    control.stop();
    assert!(crate::lab::wait_until(Duration::from_secs(5), || thread.is_finished()));
    assert!(started.elapsed() < Duration::from_secs(5));
    thread.join().unwrap().unwrap();
}

#[test]
fn a_tool_planted_in_a_directory_nobody_owns_on_the_search_path_is_never_run_as_root() {
    if !ready() {
        return;
    }
    // nobody's programs under the names of the tools the audit runs (the firewall readers, ss,
    // dmesg, ip, getent, openssl): each would leave a mark if root ran it.
    let trap = nobody_dir();
    let d = trap.path().display().to_string();
    let tools = "iptables-save ip6tables-save iptables nft ipset ufw ss dmesg ip getent openssl \
                 firewall-cmd fail2ban-client csf";
    let setup = format!(
        "for t in {tools}; do printf '#!/bin/sh\\ntouch {d}/ran-%s\\n' $t > {d}/$t && chmod 755 {d}/$t; done && echo ok"
    );
    let out = as_nobody(&setup).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let state = tempfile::tempdir().unwrap();
    let config = write_config(state.path(), "");
    // Only inside a private mount namespace: nobody's directory stands where /usr/local/sbin
    // (first on root's usual PATH) is, as on a host where that directory was left writable.
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /usr/local/sbin && exec \"$2\" audit --json --since 5m --config \"$3\"")
        .arg("sh")
        .arg(trap.path())
        .arg(assert_cmd::cargo::cargo_bin("origin-agent"))
        .arg(&config)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    let (out, _) = run_bounded(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ran: Vec<String> = std::fs::read_dir(trap.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ran-"))
        .collect();
    assert!(ran.is_empty(), "root ran nobody's tools: {ran:?}");
    // And the report says why a tool was not run, naming the directory.
    assert!(
        stdout.contains("not run:") && stdout.contains("/usr/local/sbin"),
        "{stdout}"
    );
}
