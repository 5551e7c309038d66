//! Reports: the audit's result as a typed value ([`Report`], the JSON contract of DESIGN.md) and
//! its renderings: [`human`] for a terminal, [`nagios`] for monitoring, JSON via serde;
//! [`explain`] renders `origin-agent explain`.

pub use origin_evidence::escape;
pub mod explain;
pub mod human;
pub mod nagios;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cause::CauseId;
use crate::check::Check;
use crate::diagnose::{CauseReport, Diagnosis, Implied, Timeline, Verdict};
use crate::event::{Evidence, FileSummary};

/// The version of the JSON contract.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub since: Option<jiff::Timestamp>,
    pub until: Option<jiff::Timestamp>,
}

/// Response counts over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Responses {
    pub total: u64,
    pub status_502: u64,
    pub status_504: u64,
    pub status_5xx: u64,
    /// Every status seen, with its count.
    pub by_status: BTreeMap<u16, u64>,
    /// 5xx seen in the access logs (the same as `status_5xx`, named for contrast with `implied`).
    #[serde(default)]
    pub seen_in_access_log: u64,
    /// Responses the error logs imply (an entry that ended a request with an error) that no
    /// access-log line shows: not counted in the fields above.
    #[serde(default)]
    pub implied: Implied,
}

impl Responses {
    pub fn from_evidence(evidence: &Evidence) -> Self {
        let by = &evidence.responses.by_status;
        Responses {
            total: evidence.responses.total,
            status_502: by.get(&502).copied().unwrap_or(0),
            status_504: by.get(&504).copied().unwrap_or(0),
            status_5xx: by.range(500..600).map(|(_, n)| n).sum(),
            by_status: by.clone(),
            seen_in_access_log: by.range(500..600).map(|(_, n)| n).sum(),
            implied: Implied::default(),
        }
    }
}

/// The audit's whole answer (`audit --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub host: String,
    pub generated_at: jiff::Timestamp,
    pub window: Window,
    pub responses: Responses,
    pub verdict: Verdict,
    pub causes: Vec<CauseReport>,
    pub checks: Vec<Check>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// 5xx that nothing explains.
    pub unexplained: u64,
    /// What was looked at (files read, checks run).
    pub checked: Vec<String>,
    /// What discovery found and from where.
    pub discovered: Vec<String>,
    /// Each log file read.
    pub logs: Vec<FileSummary>,
    /// The per-provider firewall table, as text, when the firewall was audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_table: Option<String>,
    /// Where the data came from: `live`, a snapshot path, or `scan`.
    pub source: String,
}

impl Report {
    pub fn cause(&self, id: CauseId) -> Option<&CauseReport> {
        self.causes.iter().find(|c| c.id == id)
    }

    /// The monitoring-plugin exit code.
    pub fn exit_code(&self) -> u8 {
        self.verdict.status.exit_code()
    }
}

/// Builds the report from its parts.
#[allow(clippy::too_many_arguments)]
pub fn build(
    host: String,
    generated_at: jiff::Timestamp,
    window: Window,
    evidence: &Evidence,
    diagnosis: Diagnosis,
    checks: Vec<Check>,
    discovered: Vec<String>,
    firewall_table: Option<String>,
    source: String,
) -> Report {
    Report {
        version: REPORT_VERSION,
        host,
        generated_at,
        window,
        responses: Responses {
            implied: diagnosis.implied.clone(),
            ..Responses::from_evidence(evidence)
        },
        verdict: diagnosis.verdict,
        causes: diagnosis.causes,
        checks,
        timeline: diagnosis.timeline,
        unexplained: diagnosis.unexplained,
        checked: diagnosis.checked,
        discovered,
        logs: evidence.files.clone(),
        firewall_table,
        source,
    }
}
