//! The firewall as read before and after a change ([`Saves`]: the tools' own printouts and the
//! files a back end manages), and the few commands every back end runs through the host seam.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{state, ufw, WhitelistError};
use crate::addrset::Family;
use crate::host::{Command, Host, HostError};

/// How long `iptables-restore` waits for the xtables lock.
pub const XTABLES_WAIT_SECS: &str = "10";

pub fn save_cmd(family: Family) -> Command {
    let prog = match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    };
    Command::new(prog, &[]).timeout(Duration::from_secs(30))
}

pub fn restore_cmd(family: Family, script: &str) -> Command {
    let prog = match family {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    };
    Command::new(prog, &["-w", XTABLES_WAIT_SECS, "--noflush"])
        .timeout(Duration::from_secs(60))
        .stdin(script.as_bytes().to_vec())
}

pub fn run_ok(host: &dyn Host, cmd: &Command) -> Result<String, WhitelistError> {
    let out = host.run(cmd)?;
    if out.success() {
        Ok(out.stdout_text())
    } else {
        Err(WhitelistError::Command {
            command: cmd.key(),
            message: format!(
                "exit {}: {}",
                out.status
                    .map_or("by signal".to_string(), |s| s.to_string()),
                out.stderr.trim()
            ),
        })
    }
}

/// The save text of a family: `None` when the tool is not installed (no IPv6 tables).
pub fn read_save(host: &dyn Host, family: Family) -> Result<Option<String>, WhitelistError> {
    match run_ok(host, &save_cmd(family)) {
        Ok(text) => Ok(Some(text)),
        // No ip6tables, or IPv6 disabled in the kernel: the IPv6 family is left out.
        Err(_) if family == Family::V6 => Ok(None),
        // No iptables at all (a pure nftables host): the nftables back end may still apply.
        Err(WhitelistError::Host(HostError::CommandMissing { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn ipset_cmd(script: &str) -> Command {
    Command::new("ipset", &["restore"])
        .timeout(Duration::from_secs(60))
        .stdin(script.as_bytes().to_vec())
}

pub fn nft_cmd(script: &str) -> Command {
    Command::new("nft", &["-f", "-"])
        .timeout(Duration::from_secs(60))
        .stdin(script.as_bytes().to_vec())
}

/// The firewall as the tools print it: both `iptables-save` texts and `nft -j list ruleset`.
#[derive(Debug, Clone, Default)]
pub struct Saves {
    pub v4: Option<String>,
    pub v6: Option<String>,
    pub nft: Option<String>,
    /// `ipset save` (`None`: ipset is not installed or not usable; per-range rules then).
    pub ipset: Option<String>,
    /// `ufw show added`, read for the ufw back end only.
    pub ufw: Option<String>,
    /// ufw manages IPv6 (`IPV6=yes` in /etc/default/ufw).
    pub ufw_v6: bool,
    /// Files a back end changes (a firewall manager's configuration), each as it was read:
    /// `None` when it did not exist.
    pub files: BTreeMap<PathBuf, Option<String>>,
}

impl Saves {
    pub fn read(host: &dyn Host) -> Result<Saves, WhitelistError> {
        let nft = match host.run(&Command::new("nft", &["-j", "list", "ruleset"])) {
            Ok(o) if o.success() => Some(o.stdout_text()),
            Ok(o) => {
                return Err(WhitelistError::Command {
                    command: "nft -j list ruleset".into(),
                    message: o.stderr.trim().to_string(),
                })
            }
            Err(HostError::CommandMissing { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let ipset = host
            .run(&Command::new("ipset", &["save"]))
            .ok()
            .filter(|o| o.success())
            .map(|o| o.stdout_text());
        Ok(Saves {
            v4: read_save(host, Family::V4)?,
            v6: read_save(host, Family::V6)?,
            nft,
            ipset,
            ufw: None,
            ufw_v6: false,
            files: BTreeMap::new(),
        })
    }

    /// Adds `ufw show added` (the ufw back end's own view).
    pub fn with_ufw(mut self, host: &dyn Host) -> Result<Saves, WhitelistError> {
        self.ufw = Some(run_ok(host, &Command::new("ufw", &["show", "added"]))?);
        self.ufw_v6 = host
            .read(std::path::Path::new("/etc/default/ufw"))
            .map(|b| {
                String::from_utf8_lossy(&b).lines().any(|l| {
                    let l = l.trim().replace('"', "");
                    l.eq_ignore_ascii_case("IPV6=yes")
                })
            })
            .unwrap_or(false);
        Ok(self)
    }

    pub fn ufw_rules(&self) -> Vec<ufw::UfwRule> {
        self.ufw
            .as_deref()
            .map(ufw::parse_added)
            .unwrap_or_default()
    }

    pub fn from_state(s: &state::SavedState) -> Saves {
        Saves {
            v4: s.iptables.clone(),
            v6: s.ip6tables.clone(),
            nft: s.nft_json.clone(),
            ipset: s.ipset.clone(),
            ufw: s.ufw_added.clone(),
            ufw_v6: true,
            files: s.files.clone(),
        }
    }

    pub fn get(&self, family: Family) -> Option<&String> {
        match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
    }

    pub fn nft_doc(&self) -> Option<serde_json::Value> {
        self.nft
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
    }

    /// The nftables tables iptables-nft owns (they show in `iptables-save`).
    pub fn iptables_nft_tables(&self) -> HashSet<(String, String)> {
        let mut skip = HashSet::new();
        for (fam, nft_family) in [(Family::V4, "ip"), (Family::V6, "ip6")] {
            if let Some(text) = self.get(fam) {
                let summary = crate::firewall::iptables::summarize(text);
                if summary.backend.as_deref() != Some("legacy") {
                    for t in &summary.tables {
                        skip.insert((nft_family.to_string(), t.clone()));
                    }
                }
            }
        }
        skip
    }
}

impl Saves {
    /// Adds each of `paths` as it is now (`None`: absent).
    pub fn with_files(
        mut self,
        host: &dyn Host,
        paths: &[PathBuf],
    ) -> Result<Saves, WhitelistError> {
        for p in paths {
            let content = match host.read(p) {
                Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            self.files.insert(p.clone(), content);
        }
        Ok(self)
    }

    /// A managed file's content as read (`None`: absent or not read).
    pub fn file(&self, path: &Path) -> Option<&str> {
        self.files.get(path).and_then(|c| c.as_deref())
    }
}
