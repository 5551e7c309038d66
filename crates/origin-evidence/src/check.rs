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
    /// The check ran and found nothing wrong.
    Ok,
    /// The check could not run (its detail says why).
    Skip,
    /// Something to look at, not (yet) failing visitors.
    Warn,
    /// A problem that fails or will fail requests.
    Fail,
}

impl Status {
    /// The lowercase word used in reports (`ok`, `warn`, `fail`, `skip`).
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
    /// What discovery found (servers, configs, versions).
    Discovery,
    /// Services running and answering (nginx, PHP-FPM, the database).
    Services,
    /// CPU, memory and pressure.
    Load,
    /// Limits: open files, pool sizes, connection caps.
    Limits,
    /// Disk space and inodes.
    Disk,
    /// Sockets, listeners and connection states.
    Network,
    /// The firewall against the CDN's ranges.
    Firewall,
    /// The CDN in front (detected providers, real-IP, status pages).
    Cdn,
    /// What the logs say.
    Logs,
    /// WordPress sites and plugins.
    WordPress,
}

impl Area {
    /// The section heading of the human report.
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
    /// Stable dotted id, e.g. `php-fpm.pool.www.socket`.
    pub id: String,
    /// The report section it belongs to.
    pub area: Area,
    /// Its outcome.
    pub status: Status,
    /// One line saying what was found.
    pub title: String,
    /// What an operator can act on (or why the check was skipped).
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
    /// Perfdata label (`[a-z0-9_]`).
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit (`%`, `B`, `ms`), if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit: Option<String>,
    /// Warning threshold, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warn: Option<f64>,
    /// Critical threshold, if any.
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

    /// A passing check.
    pub fn ok(id: impl Into<String>, area: Area, title: impl Into<String>) -> Self {
        Self::new(id, area, Status::Ok, title)
    }

    /// A warning.
    pub fn warn(id: impl Into<String>, area: Area, title: impl Into<String>) -> Self {
        Self::new(id, area, Status::Warn, title)
    }

    /// A failing check.
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

    /// Sets the detail line.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Names the catalog cause this check shows now.
    pub fn cause(mut self, cause: CauseId) -> Self {
        self.cause = Some(cause);
        self
    }

    /// Sets the concrete fix.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Adds a measured value (no thresholds).
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

    /// Replaces the status (e.g. a fail downgraded to a warning).
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }
}
