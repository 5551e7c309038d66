//! Keeping the whitelist current: after `cdn update` and on the daemon's
//! `daemon.whitelist_every`, the whitelist last applied (its providers, ports, back end and
//! persistence, from the saved state) is planned again against the ranges the providers publish
//! now and applied through the same transaction as a manual `--apply` (lock, save, verify, undo
//! on failure). Nothing happens where no whitelist was ever applied. What a re-apply changed, or
//! why it failed, becomes a [`WhitelistNote`] for the daemon's notifiers; nothing is sent when
//! nothing changed.

use super::{run, state, Backend, Mode, WhitelistError, WhitelistOutcome, WhitelistRequest};
use crate::cdn::CdnCatalog;
use crate::host::Host;

/// The re-apply of the last whitelist; `None` when there is none to keep current.
pub fn keep_current(
    host: &dyn Host,
    state_dir: &std::path::Path,
    catalog: &CdnCatalog,
) -> Result<Option<WhitelistOutcome>, WhitelistError> {
    let Some((_, saved)) = state::load(state_dir)? else {
        return Ok(None);
    };
    if saved.providers.is_empty() {
        return Ok(None);
    }
    let req = WhitelistRequest {
        providers: saved.providers.clone(),
        ports: saved.ports.clone(),
        backend: if saved.backend == Backend::Auto {
            Backend::Auto
        } else {
            saved.backend
        },
        apply: true,
        persist: saved.persisted,
        state_dir: state_dir.to_path_buf(),
        nft_conf: saved.nft_conf.clone(),
        ..WhitelistRequest::default()
    };
    run(host, &req, catalog).map(Some)
}

/// The most ranges a note lists per direction (the counts are always whole).
const MAX_LISTED: usize = 200;

/// What a keep-current re-apply did, for the notifiers (webhook JSON, exec hook stdin).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WhitelistNote {
    /// `whitelist_changed` or `whitelist_failed`.
    pub kind: &'static str,
    /// One line for humans (the journal's MESSAGE, Slack's text).
    pub summary: String,
    pub backend: String,
    pub providers: Vec<String>,
    pub added_count: usize,
    pub removed_count: usize,
    /// The ranges added and removed (`PROVIDER RANGE`), at most 200 each.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
}

/// The note for a re-apply (`None`: nothing changed and nothing failed).
pub fn note(out: &WhitelistOutcome) -> Option<WhitelistNote> {
    let summary = summary(out)?;
    let list = |f: fn(&super::FamilyPlan) -> &Vec<super::Change>| -> Vec<String> {
        out.plans
            .iter()
            .flat_map(|p| f(p).iter())
            .take(MAX_LISTED)
            .map(|c| format!("{} {}", c.provider, c.net))
            .collect()
    };
    Some(WhitelistNote {
        kind: if out.succeeded() {
            "whitelist_changed"
        } else {
            "whitelist_failed"
        },
        summary,
        backend: out.backend.name().to_string(),
        providers: out.providers.iter().map(|p| p.name().to_string()).collect(),
        added_count: out.plans.iter().map(|p| p.add.len()).sum(),
        removed_count: out.plans.iter().map(|p| p.remove.len()).sum(),
        added: list(|p| &p.add),
        removed: list(|p| &p.remove),
        failure: out.failure.clone(),
        rolled_back: out.rolled_back.clone(),
    })
}

/// The note for a re-apply that could not even start (the state unreadable, the lock held).
pub fn error_note(error: &WhitelistError) -> WhitelistNote {
    WhitelistNote {
        kind: "whitelist_failed",
        summary: format!("CDN whitelist NOT kept current: {error}"),
        backend: String::new(),
        providers: Vec::new(),
        added_count: 0,
        removed_count: 0,
        added: Vec::new(),
        removed: Vec::new(),
        failure: Some(error.to_string()),
        rolled_back: None,
    }
}

/// One line saying what a re-apply changed (`None`: nothing changed and nothing failed).
pub fn summary(out: &WhitelistOutcome) -> Option<String> {
    if out.mode != Mode::Apply {
        return None;
    }
    let added: usize = out.plans.iter().map(|p| p.add.len()).sum();
    let removed: usize = out.plans.iter().map(|p| p.remove.len()).sum();
    let providers: Vec<&str> = out.providers.iter().map(|p| p.name()).collect();
    let what = format!(
        "CDN whitelist ({}, {}): {added} ranges added, {removed} removed",
        out.backend.name(),
        providers.join(", ")
    );
    if !out.succeeded() {
        let why = out
            .failure
            .clone()
            .or_else(|| {
                out.verification
                    .as_ref()
                    .filter(|v| !v.ok())
                    .map(|_| "verification failed".to_string())
            })
            .unwrap_or_else(|| "failed".to_string());
        return Some(format!(
            "{what} NOT kept current: {why}; rolled back: {}",
            out.rolled_back.as_deref().unwrap_or("nothing to undo")
        ));
    }
    (added + removed > 0).then(|| format!("{what}, applied and verified"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nothing_is_done_where_no_whitelist_was_applied() {
        let dir = tempfile::tempdir().unwrap();
        let host = crate::host::fixture::FixtureHost::new();
        let out = keep_current(&host, dir.path(), &CdnCatalog::bundled()).unwrap();
        assert!(out.is_none());
        assert!(host.journal().is_empty());
    }

    #[test]
    fn a_note_says_what_changed_and_nothing_is_noted_when_nothing_did() {
        use super::super::{Change, FamilyPlan, Mode, WhitelistOutcome};
        use crate::cdn::Provider;
        use crate::firewall::addrset::Family;
        let req = WhitelistRequest {
            providers: vec![Provider::Cloudflare],
            backend: Backend::Firewalld,
            apply: true,
            ..WhitelistRequest::default()
        };
        let mut out = WhitelistOutcome::new(Mode::Apply, Backend::Firewalld, &req, &[80, 443]);
        out.applied = true;
        let plan = |add: Vec<Change>, remove: Vec<Change>| FamilyPlan {
            family: Family::V4,
            add,
            remove,
            unchanged: 14,
            structure: Vec::new(),
            script: String::new(),
            pre_script: String::new(),
        };
        out.plans = vec![plan(Vec::new(), Vec::new())];
        assert_eq!(note(&out), None, "nothing changed: nothing to send");
        let change = |net: &str| Change {
            provider: Provider::Cloudflare,
            net: net.parse().unwrap(),
        };
        out.plans = vec![plan(
            vec![change("103.21.244.0/22")],
            vec![change("203.0.113.0/24")],
        )];
        let n = note(&out).unwrap();
        assert_eq!(n.kind, "whitelist_changed");
        assert_eq!(n.added, vec!["cloudflare 103.21.244.0/22"]);
        assert_eq!(n.removed, vec!["cloudflare 203.0.113.0/24"]);
        assert_eq!(
            n.summary,
            "CDN whitelist (firewalld, cloudflare): 1 ranges added, 1 removed, applied and verified"
        );
        out.failure = Some("firewall-cmd --reload: exit 1".into());
        out.rolled_back = Some("/etc/firewalld restored (2 files), firewall-cmd --reload".into());
        let n = note(&out).unwrap();
        assert_eq!(n.kind, "whitelist_failed");
        assert!(n.summary.contains("NOT kept current: firewall-cmd --reload: exit 1; rolled back: /etc/firewalld restored"), "{}", n.summary);
        // A failure with nothing planned is still sent.
        out.plans = vec![plan(Vec::new(), Vec::new())];
        assert_eq!(note(&out).unwrap().kind, "whitelist_failed");
    }
}
