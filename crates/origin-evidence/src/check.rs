//! Checks: the unit every probe reports in. A check has a stable id (`php-fpm.pool.www.socket`),
//! a status (ok / warn / fail / skip with the reason), a one-line title and a detail an operator
//! can act on. A check that shows a cause from the catalog *now* names it, so the diagnosis can
//! confirm (or list on its own) what the logs say.

use serde::{Deserialize, Serialize};

use crate::cause::CauseId;

/// The outcome of one check. `Skip` means the check could not run; its detail says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// Which part of the checklist a check belongs to; the human report groups by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    Discovery,
    Services,
    Load,
    Limits,
    Disk,
    Network,
    Firewall,
    Cdn,
    Logs,
    WordPress,
}

impl Area {
    pub fn title(self) -> &'static str {
        match self {
            Area::Discovery => "Discovery",
            Area::Services => "Services",
            Area::Load => "Load",
            Area::Limits => "Limits",
            Area::Disk => "Disk",
            Area::Network => "Network",
            Area::Firewall => "Firewall",
            Area::Cdn => "CDN",
            Area::Logs => "Logs",
            Area::WordPress => "WordPress",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    pub area: Area,
    pub status: Status,
    pub title: String,
    pub detail: String,
    /// The catalog cause this check shows in the current state, when it fails or warns.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cause: Option<CauseId>,
    /// A concrete fix with the host's own numbers, when the check knows one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fix: Option<String>,
    /// Measured values (for perfdata and the daemon's metrics).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub metrics: Vec<Metric>,
}

/// A measured value: `name=value[unit];warn;crit` in Nagios perfdata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warn: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crit: Option<f64>,
}

impl Check {
    fn new(id: impl Into<String>, area: Area, status: Status, title: impl Into<String>) -> Self {
        Check {
            id: id.into(),
            area,
            status,
            title: title.into(),
            detail: String::new(),
            cause: None,
            fix: None,
            metrics: Vec::new(),
        }
    }

    pub fn ok(id: impl Into<String>, area: Area, title: impl Into<String>) -> Self {
        Self::new(id, area, Status::Ok, title)
    }

    pub fn warn(id: impl Into<String>, area: Area, title: impl Into<String>) -> Self {
        Self::new(id, area, Status::Warn, title)
    }

    pub fn fail(id: impl Into<String>, area: Area, title: impl Into<String>) -> Self {
        Self::new(id, area, Status::Fail, title)
    }

    /// A check that could not run; `reason` says why.
    pub fn skip(
        id: impl Into<String>,
        area: Area,
        title: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::new(id, area, Status::Skip, title).detail(reason)
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn cause(mut self, cause: CauseId) -> Self {
        self.cause = Some(cause);
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub fn metric(mut self, name: impl Into<String>, value: f64, unit: Option<&str>) -> Self {
        self.metrics.push(Metric {
            name: name.into(),
            value,
            unit: unit.map(str::to_string),
            warn: None,
            crit: None,
        });
        self
    }

    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }
}
