//! A live host whose commands (and optionally paths) go through a rewrite: how the agent's real
//! code runs against the real tools inside a network namespace (`ip netns exec NS …`), as the
//! firewall and whitelist tests do, while files and /proc stay the machine's own.
//!
//! Implement [`CommandRewrite`] and the type is a [`Host`]: every other operation is the live
//! host's.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::live::LiveHost;
use super::{Command, CommandOutput, ConnectOutcome, Endpoint, FileMeta, FsStats, Host, HostError};

/// How commands (and paths) are rewritten.
pub trait CommandRewrite: Send + Sync {
    /// Runs `command` the rewritten way (typically `LiveHost.run(&in_netns(ns, command))`).
    fn run(&self, command: &Command) -> Result<CommandOutput, HostError>;

    /// The path actually read for `path` (default: itself).
    fn path(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}

/// `ip netns exec NS PROGRAM ARGS…`, keeping the command's timeout and standard input.
pub fn in_netns(ns: &str, command: &Command) -> Command {
    let mut args = vec![
        "netns".to_string(),
        "exec".to_string(),
        ns.to_string(),
        command.program.clone(),
    ];
    args.extend(command.args.iter().cloned());
    Command {
        program: "ip".to_string(),
        args,
        timeout: command.timeout,
        stdin: command.stdin.clone(),
    }
}

impl<T: CommandRewrite> Host for T {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        LiveHost.read(&self.path(path))
    }
    fn open(&self, path: &Path) -> Result<Box<dyn Read + Send>, HostError> {
        LiveHost.open(&self.path(path))
    }
    fn read_dir(&self, path: &Path) -> Result<Vec<String>, HostError> {
        LiveHost.read_dir(&self.path(path))
    }
    fn metadata(&self, path: &Path) -> Result<FileMeta, HostError> {
        LiveHost.metadata(&self.path(path))
    }
    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        LiveHost.read_link(&self.path(path))
    }
    fn run(&self, command: &Command) -> Result<CommandOutput, HostError> {
        CommandRewrite::run(self, command)
    }
    fn connect(&self, endpoint: &Endpoint, timeout: Duration) -> ConnectOutcome {
        LiveHost.connect(endpoint, timeout)
    }
    fn exchange(&self, request: &super::Exchange) -> Result<super::Reply, super::ExchangeError> {
        LiveHost.exchange(request)
    }
    fn statvfs(&self, path: &Path) -> Result<FsStats, HostError> {
        LiveHost.statvfs(&self.path(path))
    }
    fn now(&self) -> jiff::Timestamp {
        LiveHost.now()
    }
    fn pause(&self, duration: Duration) {
        LiveHost.pause(duration)
    }
    fn is_live(&self) -> bool {
        true
    }
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), HostError> {
        LiveHost.write_atomic(&self.path(path), bytes)
    }
    fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        LiveHost.remove_file(&self.path(path))
    }
    fn create_dir_all(&self, path: &Path) -> Result<(), HostError> {
        LiveHost.create_dir_all(&self.path(path))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Echo;
    impl CommandRewrite for Echo {
        fn run(&self, command: &Command) -> Result<CommandOutput, HostError> {
            let mut wrapped = Command::new("echo", &[]);
            wrapped.args = in_netns("ns1", command).args;
            LiveHost.run(&wrapped)
        }
    }

    #[test]
    fn commands_are_rewritten_and_the_rest_is_the_live_host() {
        let out = Host::run(&Echo, &Command::new("iptables-save", &["-t", "filter"])).unwrap();
        assert_eq!(
            out.stdout_text(),
            "netns exec ns1 iptables-save -t filter\n"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        assert_eq!(Echo.read(&dir.path().join("f")).unwrap(), b"x");
        assert!(Echo.is_live());
    }
}
