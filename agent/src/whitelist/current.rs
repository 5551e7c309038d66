//! Keeping the whitelist current: after `cdn update` and on the daemon's
//! `daemon.whitelist_every`, the whitelist last applied (its providers, ports, back end and
//! persistence, from the saved state) is planned again against the ranges the providers publish
//! now and applied through the same transaction as a manual `--apply` (lock, save, verify, undo
//! on failure). Nothing happens where no whitelist was ever applied.

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
}
