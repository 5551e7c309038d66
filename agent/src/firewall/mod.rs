//! Firewall evaluation: what verdict a new TCP connection from each CDN range gets from the
//! host's iptables, nftables, ipset, ufw, CSF and fail2ban.

use crate::check::Check;
use crate::config::Config;
use crate::discover::Discovery;
use crate::event::Evidence;
use crate::host::Host;

/// The firewall and CDN checks of an audit, and the per-provider table for the human report.
pub fn audit_for(
    _host: &dyn Host,
    _config: &Config,
    _discovery: &Discovery,
    _evidence: &Evidence,
) -> (Vec<Check>, Option<String>) {
    (Vec::new(), None)
}
