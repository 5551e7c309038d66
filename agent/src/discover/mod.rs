//! Zero-config discovery of the web stack: nginx (and Apache httpd), PHP-FPM masters and pools,
//! MySQL/MariaDB, from running processes and the configs they name, then distro defaults; the
//! agent's config overrides every path. The result is [`Discovery`] (see [`model`]).

pub mod model;

pub use model::*;

use crate::config::Config;
use crate::host::Host;

/// Finds the stack on `host`.
pub fn discover(_host: &dyn Host, _config: &Config) -> Discovery {
    Discovery::default()
}

/// Every log the audit reads (the stack helper's discovery fills this in).
pub fn log_files(
    _host: &dyn Host,
    _discovery: &Discovery,
    _config: &Config,
) -> Vec<crate::logs::LogFile> {
    Vec::new()
}
