//! Services a lab test starts for itself, each in a temp dir of its own and stopped on drop (also
//! when the test panics): [`Nginx`] (on loopback or inside a [`Netns`], holding the lab lock while
//! it runs), [`Fail2ban`] (a server inside a namespace with its own config, socket and database),
//! and [`Killed`], any child process killed on drop. The full nginx + PHP-FPM + MariaDB + Apache
//! lab of the scenario tests is [`crate::lab::Lab`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cmd::ok;
use super::netns::{Netns, NsHost};

/// How long a service may take to come up or to stop.
const READY: Duration = Duration::from_secs(20);

/// Polls `cond` every 20 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most 15 s) for `what` to happen; panics naming it when it does not.
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(15), cond),
        "timed out waiting for {what} (15 s)"
    );
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A service's process: stopped with a signal, waited for (bounded: then SIGKILL), and stopped
/// with SIGTERM when dropped.
#[derive(Debug)]
pub struct Process(Option<Child>);

impl Process {
    /// Starts `program` with `args`, stdio to /dev/null.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Process {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Process(Some(child))
    }

    /// Its pid, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// Whether it exited (and was reaped).
    pub fn exited(&mut self) -> bool {
        self.0
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Sends `signal`, waits up to 10 s for the exit, then kills it.
    pub fn stop(&mut self, signal: Signal) {
        if let Some(mut child) = self.0.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), signal);
            if !wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl From<Child> for Process {
    fn from(child: Child) -> Process {
        Process(Some(child))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Signal::SIGTERM);
    }
}

/// nginx from the Debian package, in the foreground (`daemon off`), configured in `dir`:
/// `dir/nginx.conf`, `dir/nginx.pid`, `dir/error.log`, temp paths under `dir/tmp`, `dir/logs`
/// for the caller's access logs. Discovery in other tests looks at every nginx on the machine:
/// the caller holds [`crate::lab::exclusive`] while it runs.
#[derive(Debug)]
pub struct Nginx {
    process: Process,
    dir: PathBuf,
}

impl Nginx {
    /// The binary the lab tests run.
    pub const BINARY: &'static str = "/usr/sbin/nginx";

    /// Starts nginx in `dir` (created) with `events` inside `events {}` and `http` inside
    /// `http {}`; inside `ns` when given. Waits (bounded) for its pid file, which nginx writes
    /// once it listens; panics with its error log when it does not come up. The caller checks
    /// [`Nginx::BINARY`] exists first (and skips otherwise).
    pub fn start(dir: &Path, ns: Option<&Netns>, events: &str, http: &str) -> Nginx {
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        let user = if nix::unistd::geteuid().is_root() {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            "{user}\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; {events} }}\n\
             http {{\n  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;\n\
               fastcgi_temp_path {d}/tmp/fastcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;\n\
               {http}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let conf = dir.join("nginx.conf").display().to_string();
        let error_log = dir.join("error.log").display().to_string();
        let prefix = dir.display().to_string();
        let args = [Self::BINARY, "-p", &prefix, "-c", &conf, "-e", &error_log];
        let process = match ns {
            Some(ns) => ns.spawn(&args).into(),
            None => Process::spawn(args[0], &args[1..]),
        };
        let mut nginx = Nginx {
            process,
            dir: dir.to_path_buf(),
        };
        let pid_file = dir.join("nginx.pid");
        let up = wait_until(READY, || pid_file.exists() || nginx.process.exited());
        assert!(
            up && pid_file.exists(),
            "nginx did not come up: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        nginx
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/nginx.conf`.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    /// What logrotate's postrotate does: `nginx -s reopen` (SIGUSR1 to the master).
    pub fn reopen(&self) {
        let pid = self.process.id().expect("nginx runs");
        kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).unwrap();
    }
}

/// A fail2ban server of this test inside a namespace, with its own config (a copy of
/// `/etc/fail2ban` without the package's jails), socket, pid file and database in `dir`; stopped
/// on drop.
#[derive(Debug)]
pub struct Fail2ban<'a> {
    ns: &'a Netns,
    dir: PathBuf,
    running: bool,
}

impl<'a> Fail2ban<'a> {
    /// Starts it with `jails` as its `jail.local` (`{dir}` in it stands for `dir`, where an empty
    /// `error.log` is ready to be a jail's log); panics with its log when it does not answer.
    pub fn start(ns: &'a Netns, dir: &Path, jails: &str) -> Fail2ban<'a> {
        let conf = dir.join("conf");
        ok(&["cp", "-a", "/etc/fail2ban", &conf.display().to_string()]);
        for sub in ["jail.d", "fail2ban.d"] {
            let d = conf.join(sub);
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
        }
        let d = dir.display();
        std::fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {d}/f2b.log\nsocket = {d}/f2b.sock\npidfile = {d}/f2b.pid\ndbfile = {d}/f2b.sqlite3\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("error.log"), "").unwrap();
        std::fs::write(
            conf.join("jail.local"),
            jails.replace("{dir}", &d.to_string()),
        )
        .unwrap();
        let f2b = Fail2ban {
            ns,
            dir: dir.to_path_buf(),
            running: true,
        };
        ns.exec(&[
            "fail2ban-server",
            "-c",
            &conf.display().to_string(),
            "-s",
            &f2b.socket().display().to_string(),
            "-p",
            &dir.join("f2b.pid").display().to_string(),
            "-x",
            "-b",
        ]);
        if wait_until(READY, || f2b.client(&["ping"]).is_ok()) {
            return f2b;
        }
        panic!(
            "fail2ban-server did not answer: {}",
            std::fs::read_to_string(dir.join("f2b.log")).unwrap_or_default()
        );
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("f2b.sock")
    }

    /// Its configuration directory (what `fail2ban-client -c` takes).
    pub fn conf(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// The namespace's host, with `fail2ban-client` on this server's socket and its database.
    pub fn host(&self) -> NsHost<'a> {
        NsHost {
            ns: self.ns,
            f2b_socket: Some(self.socket()),
            remap: vec![(
                "/var/lib/fail2ban/fail2ban.sqlite3".into(),
                self.dir.join("f2b.sqlite3").display().to_string(),
            )],
        }
    }

    /// `fail2ban-client ARGS` on this server, reading this server's config (`reload` sends what
    /// the client reads): its stdout, or its stderr as the error.
    pub fn client(&self, args: &[&str]) -> Result<String, String> {
        let conf = self.conf().display().to_string();
        let sock = self.socket().display().to_string();
        let mut full = vec!["fail2ban-client", "-c", &conf, "-s", &sock];
        full.extend_from_slice(args);
        let out = self.ns.run(&full);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `fail2ban-client ARGS` that must succeed: its stdout.
    pub fn must(&self, args: &[&str]) -> String {
        self.client(args)
            .unwrap_or_else(|e| panic!("fail2ban-client {args:?}: {e}"))
    }

    /// Stops the server (`fail2ban-client stop`, then SIGKILL after a bounded wait).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = self.client(&["stop"]);
        self.running = false;
        let pid_file = self.dir.join("f2b.pid");
        wait_until(Duration::from_secs(10), || !pid_file.exists());
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Fail2ban<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}
