//! The command runner of the lab tests: every command has a deadline (killed when it passes),
//! its stdout and stderr are captured, and [`ok`] / [`Cmd::ok`] panic with both (and the argv)
//! when it fails, so a failing setup step says what went wrong.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a command may run unless the caller says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// One command: a program with its arguments (and whatever environment the caller set), optional
/// stdin bytes, a deadline.
#[derive(Debug)]
pub struct Cmd {
    command: Command,
    stdin: Option<Vec<u8>>,
    deadline: Duration,
}

impl From<Command> for Cmd {
    fn from(command: Command) -> Cmd {
        Cmd {
            command,
            stdin: None,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

impl Cmd {
    /// `args[0]` with the rest as its arguments.
    pub fn new<S: AsRef<str>>(args: &[S]) -> Cmd {
        let mut command = Command::new(args[0].as_ref());
        command.args(args[1..].iter().map(AsRef::as_ref));
        Cmd::from(command)
    }

    /// Bytes written to the command's stdin (otherwise stdin is /dev/null).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// How long the command may run before it is killed.
    pub fn deadline(mut self, deadline: Duration) -> Cmd {
        self.deadline = deadline;
        self
    }

    /// Runs it to its end or its deadline (then it is killed and the output says so in stderr).
    /// Panics only when the program cannot be started at all.
    pub fn run(self) -> Output {
        self.run_timed().0
    }

    /// [`Cmd::run`], and how long it took.
    pub fn run_timed(mut self) -> (Output, Duration) {
        bounded(&mut self.command, self.stdin.take(), self.deadline)
    }

    /// Runs it; its stdout when it succeeds, otherwise a panic with the command, its status,
    /// stdout and stderr.
    pub fn ok(self) -> String {
        let shown = format!("{:?}", self.command);
        let out = self.run();
        assert!(out.status.success(), "{}", failure(&shown, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs `command` (stdout and stderr captured, `stdin` written to it or /dev/null) to its end or
/// until `deadline` passes, when it is killed and its stderr says so; the output and how long it
/// took. Panics only when the program cannot be started at all.
pub fn bounded(
    command: &mut Command,
    stdin: Option<Vec<u8>>,
    deadline: Duration,
) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            break status;
        }
        if started.elapsed() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for a killed child");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    // A daemon the command left behind may hold the pipes open: read what is there, bounded.
    let grace = Duration::from_secs(2);
    let stdout = out.recv_timeout(grace).unwrap_or_default();
    let mut stderr = err.recv_timeout(grace).unwrap_or_default();
    if timed_out {
        stderr
            .extend_from_slice(format!("\n[killed: still running after {deadline:?}]").as_bytes());
    }
    let output = Output {
        status,
        stdout,
        stderr,
    };
    (output, took)
}

/// Reads a pipe to its end on a thread; the bytes arrive on the channel.
fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            let _ = tx.send(v);
        });
    }
    rx
}

/// What a failed command said, for an assertion message.
pub fn failure(command: &str, out: &Output) -> String {
    format!(
        "{command} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// The `origin-agent` binary under test (`NO_COLOR=1`: plain text in assertion messages).
pub fn agent() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_origin-agent"));
    cmd.env("NO_COLOR", "1");
    cmd
}

/// `origin-agent ARGS` to its end (killed after [`DEFAULT_DEADLINE`]): its output, whatever the
/// exit status.
pub fn run_agent<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let mut cmd = agent();
    cmd.args(args);
    Cmd::from(cmd).run()
}

/// Runs `args` with the default deadline; its output, whatever the status.
pub fn sh(args: &[&str]) -> Output {
    Cmd::new(args).run()
}

/// Runs `args` with the default deadline; its stdout, or a panic that shows stdout and stderr.
pub fn ok(args: &[&str]) -> String {
    Cmd::new(args).ok()
}

/// argv of `sh -c SCRIPT ARGS…` in a private mount namespace of its own (`unshare --mount
/// --propagation private`): its mounts (a /proc for a chroot, a bind over a config file) end with
/// it and never reach this machine's mount table.
pub fn private_mounts<'a>(script: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec![
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
    ];
    argv.extend_from_slice(args);
    argv
}

/// Why a lab test that needs root and `tools` cannot run here, if it cannot.
pub fn unavailable(tools: &[&str]) -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (network namespaces, firewalls, lab services)".into());
    }
    tools
        .iter()
        .find(|t| !installed(t))
        .map(|t| format!("`{t}` is not installed (scripts/install-test-deps.sh installs it)"))
}

/// Whether `tool` is in one of the system's bin directories.
pub fn installed(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

/// Skips the test (through [`crate::skip`]) unless it runs as root with every tool named.
#[macro_export]
macro_rules! require {
    ($($tool:expr),* $(,)?) => {
        if let Some(reason) = $crate::util::cmd::unavailable(&[$($tool),*]) {
            $crate::skip(&reason);
            return;
        }
    };
}
