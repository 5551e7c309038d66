//! Firewall evaluation: what verdict a new TCP connection from each CDN range gets from the
//! host's iptables, nftables, ipset, ufw, CSF and fail2ban.

pub mod addrset;
pub mod eval;
pub mod ipset;
pub mod iptables;
pub mod nft;
