//! Cause chains: a cause whose events another cause explains (refine marks them with
//! [`EXPLAINED_BY`]: PHP fatal errors that are the database refusing connections, a crashed table
//! after the disk filled up) carries `explained_by`, and the root ranks above it with at least its
//! share of the 5xx, so the verdict names the root. A root the logs or checks did not show on their
//! own is added, with the child's evidence.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::cause::CauseId;
use crate::check::Check;
use crate::discover::Discovery;
use crate::event::Event;

use super::refine::EXPLAINED_BY;
use super::{fix, CauseReport};

/// Marks explained causes and lifts their roots above them.
pub fn link_chains(
    causes: &mut Vec<CauseReport>,
    events: &[Cow<'_, Event>],
    fixing: &BTreeMap<CauseId, Vec<&Check>>,
    discovery: &Discovery,
) {
    // Per cause: how many of its events each root explains.
    let mut explained: BTreeMap<CauseId, (usize, BTreeMap<CauseId, usize>)> = BTreeMap::new();
    for event in events {
        let entry = explained.entry(event.cause).or_default();
        entry.0 += 1;
        if let Some(root) = event.field(EXPLAINED_BY).and_then(CauseId::parse) {
            *entry.1.entry(root).or_default() += 1;
        }
    }
    let mut roots: Vec<(usize, CauseId)> = Vec::new();
    for (i, cause) in causes.iter_mut().enumerate() {
        let Some((total, by_root)) = explained.get(&cause.id) else {
            continue;
        };
        let Some((root, n)) = by_root.iter().max_by_key(|(_, n)| **n) else {
            continue;
        };
        // Most of its events: the child is the root's consequence, not a story of its own.
        if *root != cause.id && 2 * n >= *total {
            cause.explained_by = Some(*root);
            roots.push((i, *root));
        }
    }
    for (child, root) in roots {
        let child = causes[child].clone();
        let lifted = ((child.score + 0.01) * 100.0).round() / 100.0;
        if let Some(existing) = causes.iter_mut().find(|c| c.id == root) {
            existing.score = existing.score.max(lifted).min(1.0);
            existing.responses = existing.responses.max(child.responses);
            existing.first_seen = earliest(existing.first_seen, child.first_seen);
            existing.last_seen = existing.last_seen.max(child.last_seen);
            continue;
        }
        let root_events: Vec<&Event> = events
            .iter()
            .filter(|e| e.cause == child.id && e.field(EXPLAINED_BY) == Some(root.id()))
            .map(|e| e.as_ref())
            .collect();
        let checks = fixing.get(&root).map_or(&[][..], Vec::as_slice);
        causes.push(CauseReport {
            id: root,
            title: root.title().to_string(),
            score: lifted.min(1.0),
            events: root_events.len() as u64,
            status_direct: root.status_direct().to_string(),
            status_cdn: root.status_cdn().to_string(),
            checks: Vec::new(),
            confirmed_now: false,
            // The events are the child's (its rules' fixes are for the child): no rule fix.
            fix: fix::fix_for(
                root,
                &root_events,
                checks,
                discovery,
                &std::collections::BTreeMap::new(),
            ),
            explained_by: None,
            reason: None,
            ..child
        });
    }
}

fn earliest(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Option<jiff::Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The chain that ends at `cause`, root first (`db.too-many-connections`, `app.fatal-error`),
/// bounded against loops.
pub fn chain_of(causes: &[CauseReport], cause: CauseId) -> Vec<CauseId> {
    let mut chain = vec![cause];
    let mut at = cause;
    while let Some(root) = causes
        .iter()
        .find(|c| c.id == at)
        .and_then(|c| c.explained_by)
    {
        if chain.contains(&root) || chain.len() > 8 {
            break;
        }
        chain.push(root);
        at = root;
    }
    chain.reverse();
    chain
}
