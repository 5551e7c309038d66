//! origin-agent: explains the 502s (and the rest of the gateway family) that visitors of a web
//! server behind a CDN or load balancer get, and names the one local cause with its fix.
//!
//! # Layout
//!
//! - [`host`] (crate `origin-host`): the seam every read of the machine goes through (live,
//!   snapshot, recorder).
//! - [`config`]: the agent's YAML config: parse, validate, resolve.
//! - [`discover`]: zero-config discovery of nginx, PHP-FPM and MySQL/MariaDB.
//! - [`probes`]: the state now (services, load, limits, disk), as [`check::Check`]s.
//! - [`logs`] and [`rules`] (crate `origin-evidence`, with [`cause`], [`event`], [`check`]): log
//!   lines into typed [`event::Event`]s by data-driven rules.
//! - [`cdn`] and [`firewall`]: the CDNs' ranges against the host's firewall and nginx real-IP,
//!   both on [`addrset`]'s interval arithmetic.
//! - [`stack`]: asking the stack directly: origin self-test, PHP-FPM and database live status,
//!   the CDNs' status pages.
//! - [`diagnose`]: correlation and ranking of causes from the [`cause`] catalog.
//! - [`report`]: the JSON contract and the human and Nagios renderings.
//! - [`wp`]: WordPress sites, plugins, error attribution and `wp isolate`.
//! - [`audit`]: the one-shot pipeline that ties them together.
//! - [`daemon`] and [`whitelist`]: continuous operation and firewall changes on request.
//! - [`trust`] (in `discover/`): what the root agent believes from whom, and which binaries it
//!   runs.

pub mod addrset;
pub mod audit;
pub mod cdn;
pub mod config;
pub mod daemon;
pub mod diagnose;
pub mod discover;
pub mod firewall;
pub mod probes;
pub mod report;
pub mod stack;
pub mod whitelist;
pub mod wp;

// The split crates, under the module names the agent has always used.
pub use origin_evidence::{cause, check, event, hash, logs, rules};
pub use origin_host as host;
// Trust is applied while discovering (it reads discovery's process model): it lives there, under
// the name it has always had.
pub use discover::trust;
