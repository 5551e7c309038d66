//! Which file a command's program name runs, for the live host.
//!
//! The agent runs as root. A bare name (`iptables`, `nginx`, `firewall-cmd`) is looked up in a
//! fixed system search path, never in the `PATH` the agent was started with (an operator's shell
//! or a cron line may carry a user's directory), and the file found is only run when nobody but
//! root can change it: the file, every directory on the way to it, and every symbolic link hop
//! (`/usr/sbin/iptables` → `/etc/alternatives/iptables` → `/usr/sbin/xtables-nft-multi`) must be
//! owned by root and not writable by its group or others. Commands are started with that same
//! fixed `PATH`, so the tools that scripts such as `csf` or `firewall-cmd` start are found there
//! too. Names with a slash were already chosen by the caller (through the agent's `trust` module)
//! and are taken as given.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::HostError;

/// The directories a bare program name is looked for in, in order; also the `PATH` commands get.
pub const SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The most symbolic links followed from a program's name to its file.
const MAX_LINK_HOPS: usize = 16;

/// The file `program` names: itself when it holds a slash, else the first file of that name in
/// [`SEARCH_PATH`]. An untrusted file found first is refused, not skipped for a later one.
pub fn resolve(program: &str) -> Result<PathBuf, HostError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let missing = || HostError::CommandMissing {
        command: program.to_string(),
    };
    if program.is_empty() || program == "." || program == ".." {
        return Err(missing());
    }
    for dir in SEARCH_PATH.split(':') {
        let candidate = Path::new(dir).join(program);
        match fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.mode() & 0o111 != 0 => {
                return match trusted(&candidate) {
                    Ok(()) => Ok(candidate),
                    Err(reason) => Err(HostError::Io {
                        path: candidate.display().to_string(),
                        message: format!(
                            "not run: {reason} (a local user could change what root executes)"
                        ),
                    }),
                };
            }
            _ => continue,
        }
    }
    Err(missing())
}

/// Ok when root alone controls `path`: each directory leading to it, each link hop and the file.
fn trusted(path: &Path) -> Result<(), String> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        check_chain(&current)?;
        let meta =
            fs::symlink_metadata(&current).map_err(|e| format!("{}: {e}", current.display()))?;
        if !meta.file_type().is_symlink() {
            return Ok(());
        }
        let target = fs::read_link(&current).map_err(|e| format!("{}: {e}", current.display()))?;
        current = match current.parent() {
            Some(parent) if target.is_relative() => parent.join(target),
            _ => target,
        };
    }
    Err(format!(
        "{}: more than {MAX_LINK_HOPS} symbolic links",
        path.display()
    ))
}

/// Ok when every prefix of `path` (as written, without following its last component) is owned by
/// root and not writable by group or others. `..` components are refused rather than resolved.
fn check_chain(path: &Path) -> Result<(), String> {
    let mut prefix = PathBuf::new();
    for component in path.components() {
        if matches!(component, Component::ParentDir) {
            // Resolve what came before, so `..` is judged on the real directory.
            prefix = fs::canonicalize(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
            prefix.pop();
            continue;
        }
        prefix.push(component);
        let meta =
            fs::symlink_metadata(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
        if meta.file_type().is_symlink() {
            // A directory reached through a link (/sbin → usr/sbin): judge where it leads.
            if prefix != path {
                trusted(&prefix)?;
                prefix =
                    fs::canonicalize(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
            }
            continue;
        }
        if meta.uid() != 0 {
            return Err(format!(
                "{} is owned by uid {}",
                prefix.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            let who = if meta.mode() & 0o002 != 0 {
                "others"
            } else {
                "its group"
            };
            return Err(format!(
                "{} is writable by {who} (mode {:o})",
                prefix.display(),
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn system_tools_resolve_in_the_fixed_path() {
        let sh = resolve("sh").unwrap();
        assert!(
            sh.starts_with("/usr") || sh.starts_with("/bin"),
            "{}",
            sh.display()
        );
        assert!(matches!(
            resolve("origin-agent-no-such-tool"),
            Err(HostError::CommandMissing { .. })
        ));
        assert_eq!(
            resolve("/opt/x/tool").unwrap(),
            PathBuf::from("/opt/x/tool")
        );
    }

    #[test]
    fn a_link_hop_or_file_others_can_change_is_refused() {
        // Built in a temp dir (owned by whoever runs the test): never trusted unless that is root
        // with a safe mode, so both the link and the file are judged.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tool");
        fs::write(&file, "#!/bin/sh\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = trusted(&link).unwrap_err();
        assert!(
            err.contains("writable by others") || err.contains("owned by uid"),
            "{err}"
        );
        // A root-owned system binary reached through links (e.g. /bin/sh → dash) is trusted.
        trusted(Path::new("/bin/sh")).unwrap();
    }
}
