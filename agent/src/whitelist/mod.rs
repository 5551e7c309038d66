//! Whitelisting CDN ranges in the host firewall: plan, apply atomically, verify, roll back.
