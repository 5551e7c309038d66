//! The whitelist's own files in the state directory: the lock that keeps two applies apart, and
//! the firewall as it was before the last apply (the journal `--rollback` restores).
//!
//! These are the agent's own files, not the machine under audit, so they are written directly
//! (atomically: a temporary file, fsync, rename), not through the host seam.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{Backend, WhitelistError};
use crate::cdn::Provider;

const DIR: &str = "whitelist";
const LOCK: &str = "apply.lock";
const STATE: &str = "before-last-apply.json";
const RETIRED: &str = "rolled-back.json";

/// Held while an apply or rollback runs; released on drop.
#[derive(Debug)]
pub struct ApplyLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

fn dir(state_dir: &Path) -> Result<PathBuf, WhitelistError> {
    let dir = state_dir.join(DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| WhitelistError::State {
            path: dir.clone(),
            message: e.to_string(),
        })?;
    Ok(dir)
}

/// Takes the apply lock without waiting: a second apply while one runs is refused.
pub fn lock(state_dir: &Path) -> Result<ApplyLock, WhitelistError> {
    let path = dir(state_dir)?.join(LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| WhitelistError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(ApplyLock { _lock: lock, path }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(WhitelistError::Busy { lock: path }),
        Err((_, errno)) => Err(WhitelistError::State {
            path,
            message: errno.to_string(),
        }),
    }
}

/// The firewall before an apply, as the tools printed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub taken_at: String,
    pub backend: Backend,
    pub providers: Vec<Provider>,
    pub ports: Vec<u16>,
    /// False from just before the change until it was applied and verified: a state found with
    /// `complete: false` is an apply that was interrupted, and is restored first.
    pub complete: bool,
    /// `iptables-save` output (all tables), when that back end is used.
    pub iptables: Option<String>,
    pub ip6tables: Option<String>,
    /// `nft -j list ruleset`, when nftables is the back end.
    pub nft_json: Option<String>,
    /// The nftables chain the agent's rules went into.
    #[serde(default)]
    pub nft_chain: Option<super::nft::NftChain>,
    /// The apply was persisted (`--persist`): a rollback persists the restored state too.
    #[serde(default)]
    pub persisted: bool,
    /// The nftables boot configuration the apply persisted to; a rollback persists there too.
    #[serde(default)]
    pub nft_conf: Option<PathBuf>,
    /// `ufw show added` before the apply, for the ufw back end.
    #[serde(default)]
    pub ufw_added: Option<String>,
    /// `ipset save` before the apply (the iptables back end's sets).
    #[serde(default)]
    pub ipset: Option<String>,
    /// The files a firewall-manager back end (CSF, firewalld) changes, as they were: `None`
    /// when absent.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub files: std::collections::BTreeMap<PathBuf, Option<String>>,
}

/// Writes the state atomically; returns its path.
pub fn save(state_dir: &Path, state: &SavedState) -> Result<PathBuf, WhitelistError> {
    let dir = dir(state_dir)?;
    let path = dir.join(STATE);
    let tmp = dir.join(format!("{STATE}.tmp"));
    let err = |p: &Path, e: std::io::Error| WhitelistError::State {
        path: p.to_path_buf(),
        message: e.to_string(),
    };
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| WhitelistError::State {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(&tmp, e))?;
    f.write_all(&bytes).map_err(|e| err(&tmp, e))?;
    f.sync_all().map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// The saved state, if any.
pub fn load(state_dir: &Path) -> Result<Option<(PathBuf, SavedState)>, WhitelistError> {
    let path = state_dir.join(DIR).join(STATE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(WhitelistError::State {
                path,
                message: e.to_string(),
            })
        }
    };
    let state = serde_json::from_slice(&bytes).map_err(|e| WhitelistError::State {
        path: path.clone(),
        message: format!("unreadable saved state: {e}"),
    })?;
    Ok(Some((path, state)))
}

/// Moves the state aside once it has been restored, so a second `--rollback` finds nothing.
pub fn retire(state_dir: &Path) -> Result<PathBuf, WhitelistError> {
    let dir = state_dir.join(DIR);
    let to = dir.join(RETIRED);
    std::fs::rename(dir.join(STATE), &to).map_err(|e| WhitelistError::State {
        path: to.clone(),
        message: e.to_string(),
    })?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let second = lock(dir.path());
        assert!(
            matches!(second, Err(WhitelistError::Busy { .. })),
            "{second:?}"
        );
        drop(first);
        assert!(lock(dir.path()).is_ok());
    }

    #[test]
    fn state_round_trips_and_retires() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let st = SavedState {
            version: 1,
            taken_at: "2026-11-24T09:00:00Z".into(),
            backend: Backend::Iptables,
            providers: vec![Provider::Cloudflare],
            ports: vec![80, 443],
            complete: false,
            iptables: Some("*filter\nCOMMIT\n".into()),
            ip6tables: None,
            nft_json: None,
            nft_chain: None,
            persisted: false,
            nft_conf: None,
            ufw_added: None,
            ipset: None,
            files: Default::default(),
        };
        save(dir.path(), &st).unwrap();
        let (_, back) = load(dir.path()).unwrap().unwrap();
        assert_eq!(back, st);
        retire(dir.path()).unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join(DIR).join(STATE), b"{ not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(WhitelistError::State { .. })
        ));
    }
}
