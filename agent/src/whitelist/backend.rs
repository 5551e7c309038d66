//! The seam between the whitelist transaction (in `mod.rs`: lock → save → plan → apply → verify
//! → undo) and each firewall it can change. A back end reads what it needs, plans the change per
//! address family, applies it in as few steps as its tool allows, puts its own objects back as
//! they were, names what changed outside them, and persists the result.
//!
//! Implementations: [`super::ipt::Iptables`], [`super::nft::Nftables`], [`super::ufw::Ufw`].

use super::saves::Saves;
use super::state::SavedState;
use super::{Backend, FamilyPlan, ProviderList, WhitelistError, WhitelistRequest};
use crate::host::Host;

/// Why an apply stopped. The transaction undoes a [`ApplyError::Partial`] change; the other
/// two leave nothing to undo.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The step failed before anything changed.
    #[error("{source}; {what}")]
    NotApplied {
        source: WhitelistError,
        what: String,
    },
    /// Part of the change is in place: the transaction restores the state before.
    #[error("{source}; {what}")]
    Partial {
        source: WhitelistError,
        what: String,
    },
    /// A back end without transactions (ufw) undid its own steps, in reverse, at once.
    #[error("{source}; the {run} {tool} commands already run were undone ({undone} succeeded)")]
    UndoneInPlace {
        source: WhitelistError,
        tool: &'static str,
        run: usize,
        undone: usize,
    },
}

impl ApplyError {
    /// True when part of the change is in place and must be undone.
    pub fn partial(&self) -> bool {
        matches!(self, ApplyError::Partial { .. })
    }
}

/// One step of an undo that failed: the firewall is not fully back.
#[derive(Debug, thiserror::Error)]
#[error("{what}: ROLLBACK FAILED: {source}")]
pub struct RestoreFailure {
    pub what: String,
    pub source: WhitelistError,
}

/// What an undo did.
#[derive(Debug, Default)]
pub struct Restored {
    /// In words: "IPv4 restored", "nothing had changed", "ufw NOT fully restored".
    pub summary: String,
    pub failures: Vec<RestoreFailure>,
}

impl Restored {
    pub fn new(summary: impl Into<String>) -> Self {
        Restored {
            summary: summary.into(),
            failures: Vec::new(),
        }
    }

    pub fn failed(
        summary: impl Into<String>,
        what: impl Into<String>,
        source: WhitelistError,
    ) -> Self {
        Restored {
            summary: summary.into(),
            failures: vec![RestoreFailure {
                what: what.into(),
                source,
            }],
        }
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Why `--persist` saved nothing (the change itself stands).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not persisted: {0}")]
pub struct NotPersisted(pub String);

/// One firewall the whitelist can change.
pub trait FirewallBackend: Send + Sync {
    /// Which back end this is (recorded in the saved state).
    fn kind(&self) -> Backend;

    /// One line for the report: what it changes, and how.
    fn describe(&self) -> String;

    /// The firewall as this back end needs it read.
    fn read(&self, host: &dyn Host) -> Result<Saves, WhitelistError> {
        Saves::read(host)
    }

    /// Notes about what is left out (an address family the tool does not manage).
    fn notes(&self, _saves: &Saves) -> Vec<String> {
        Vec::new()
    }

    /// The change that makes the firewall allow exactly `lists` on `ports`.
    fn plan(&self, saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Vec<FamilyPlan>;

    /// The commands the plans run, in order, for the report.
    fn commands(&self, plans: &[FamilyPlan]) -> Vec<String>;

    /// Applies the plans.
    fn apply(
        &self,
        host: &dyn Host,
        plans: &[FamilyPlan],
        before: &Saves,
        lists: &[ProviderList],
        ports: &[u16],
    ) -> Result<(), ApplyError>;

    /// Puts the back end's own objects back as they were in `before`.
    fn restore_to(&self, host: &dyn Host, before: &Saves) -> Restored;

    /// What [`FirewallBackend::restore_to`] would do from `current`, as plans for the report.
    fn rollback_plans(&self, current: &Saves, before: &Saves) -> Vec<FamilyPlan>;

    /// Lines of the firewall outside the back end's own objects that differ between two reads.
    fn other_changes(&self, before: &Saves, after: &Saves) -> Vec<String>;

    /// Saves the result with the host's own mechanism: what was saved where.
    fn persist(&self, host: &dyn Host, req: &WhitelistRequest) -> Result<String, NotPersisted>;

    /// Records what a later rollback needs beyond [`Saves`] (the nftables chain, where it was
    /// persisted).
    fn record(&self, _state: &mut SavedState, _req: &WhitelistRequest, _persisted: bool) {}
}

/// A rollback plan that is only a script, for the report.
pub fn restore_plan(family: crate::addrset::Family, structure: &str, script: String) -> FamilyPlan {
    FamilyPlan {
        family,
        add: Vec::new(),
        remove: Vec::new(),
        unchanged: 0,
        structure: vec![structure.to_string()],
        script,
        pre_script: String::new(),
    }
}

/// Line differences between two reads of one part of the firewall, labelled (`IPv4: - LINE`,
/// `IPv4: + LINE`, or `rules reordered`).
pub fn diff_lines(out: &mut Vec<String>, label: &str, before: Vec<String>, after: Vec<String>) {
    use std::collections::HashSet;
    if after == before {
        return;
    }
    let old: HashSet<&String> = before.iter().collect();
    let new: HashSet<&String> = after.iter().collect();
    let n = out.len();
    for l in before.iter().filter(|l| !new.contains(l)) {
        out.push(format!("{label}: - {l}"));
    }
    for l in after.iter().filter(|l| !old.contains(l)) {
        out.push(format!("{label}: + {l}"));
    }
    if out.len() == n {
        out.push(format!("{label}: rules reordered"));
    }
}

/// A text's lines, owned.
pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}
