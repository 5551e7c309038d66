//! The cause catalog (DESIGN.md): stable ids that reports, metrics, rules and outside checks all
//! use, with what each means and the status a visitor sees directly and through a CDN.
//! Ids may be added; renaming one is a breaking change.

use serde::{Deserialize, Serialize};

macro_rules! catalog {
    ($( $variant:ident = $id:literal, $title:literal, direct: $direct:literal, cdn: $cdn:literal, state_only: $state:literal; )*) => {
        /// A cause from the catalog.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum CauseId {
            $( #[doc = $title] #[serde(rename = $id)] $variant, )*
        }

        impl CauseId {
            /// Every cause, in catalog order.
            pub const ALL: &'static [CauseId] = &[ $( CauseId::$variant, )* ];

            /// The stable id, e.g. `upstream.saturated`.
            pub fn id(self) -> &'static str {
                match self { $( CauseId::$variant => $id, )* }
            }

            /// What it means, in a few words.
            pub fn title(self) -> &'static str {
                match self { $( CauseId::$variant => $title, )* }
            }

            /// The status nginx (or the origin) answers with for this cause.
            pub fn status_direct(self) -> &'static str {
                match self { $( CauseId::$variant => $direct, )* }
            }

            /// What the visitor sees through a CDN.
            pub fn status_cdn(self) -> &'static str {
                match self { $( CauseId::$variant => $cdn, )* }
            }

            /// Causes whose errors never reach the origin's logs: listed whenever the state shows
            /// them, 5xx in the logs or not.
            pub fn state_only(self) -> bool {
                match self { $( CauseId::$variant => $state, )* }
            }

            /// Parses a stable id.
            pub fn parse(id: &str) -> Option<CauseId> {
                match id { $( $id => Some(CauseId::$variant), )* _ => None }
            }
        }
    };
}

catalog! {
    WebDown = "web.down", "the web server is not running or not listening", direct: "none", cdn: "521 / 502", state_only: true;
    WebSaturated = "web.saturated", "every worker of the web server is busy (Apache MaxRequestWorkers)", direct: "none (requests wait) / 503", cdn: "524 / 522", state_only: false;
    UpstreamDown = "upstream.down", "the app server (PHP-FPM, a proxied app) is not running", direct: "502", cdn: "502", state_only: false;
    UpstreamSocketPermission = "upstream.socket-permission", "nginx may not open the FastCGI unix socket", direct: "502", cdn: "502", state_only: false;
    UpstreamSaturated = "upstream.saturated", "all app workers are busy and the listen queue is full", direct: "502 / 504", cdn: "502 / 524", state_only: false;
    UpstreamTimeout = "upstream.timeout", "the app answered too slowly", direct: "504 / 502", cdn: "504 / 524", state_only: false;
    UpstreamCrashed = "upstream.crashed", "the app died mid-request", direct: "502", cdn: "502", state_only: false;
    UpstreamBadResponse = "upstream.bad-response", "the app's answer is unusable for nginx", direct: "502", cdn: "502", state_only: false;
    UpstreamUnresolvable = "upstream.unresolvable", "an upstream host name does not resolve", direct: "502", cdn: "502", state_only: false;
    UpstreamNoLive = "upstream.no-live", "every server of an upstream group is marked failed", direct: "502", cdn: "502", state_only: false;
    AppFatalError = "app.fatal-error", "the application throws fatal errors", direct: "500", cdn: "500 / 502", state_only: false;
    AppMemoryLimit = "app.memory-limit", "PHP memory_limit is exhausted", direct: "500", cdn: "500 / 502", state_only: false;
    DbDown = "db.down", "the database is not running or refuses connections", direct: "500 / 502", cdn: "500 / 502", state_only: false;
    DbTooManyConnections = "db.too-many-connections", "the database is out of connections", direct: "500 / 504", cdn: "500 / 504", state_only: false;
    DbCrashedTable = "db.crashed-table", "a database table is marked as crashed", direct: "500", cdn: "500 / 502", state_only: false;
    HostOomKill = "host.oom-kill", "the kernel killed a process for memory", direct: "502", cdn: "502", state_only: false;
    HostOverloaded = "host.overloaded", "CPU, memory or I/O pressure past what the host can serve", direct: "502 / 504", cdn: "502 / 504 / 522", state_only: false;
    HostDiskFull = "host.disk-full", "a file system or its inodes are full", direct: "500 / 502", cdn: "500 / 502", state_only: false;
    HostFdExhausted = "host.fd-exhausted", "a process ran out of file descriptors", direct: "500 / none", cdn: "502 / 522", state_only: false;
    HostCgroupLimit = "host.cgroup-limit", "the hosting plan's cgroup limit is hit", direct: "502 / 503", cdn: "502 / 503", state_only: false;
    NetListenOverflow = "net.listen-overflow", "accept queues overflow before nginx sees the connections", direct: "none", cdn: "522 / 502", state_only: false;
    NetConntrackFull = "net.conntrack-full", "the connection tracking table is full", direct: "none", cdn: "522", state_only: false;
    NetWorkerConnections = "net.worker-connections", "nginx ran out of worker connections", direct: "500 / none", cdn: "502 / 522", state_only: false;
    FirewallCdnBlocked = "firewall.cdn-blocked", "a firewall rule drops or rejects part of a CDN's ranges", direct: "none", cdn: "522 / 521", state_only: true;
    Fail2banCdnBanned = "fail2ban.cdn-banned", "fail2ban banned CDN edge addresses", direct: "none", cdn: "522 / 521", state_only: true;
    NginxRealIpMissing = "nginx.real-ip-missing", "nginx sees CDN edges instead of visitors", direct: "none", cdn: "(leads to bans of the CDN)", state_only: true;
    DnsMismatch = "dns.mismatch", "a served name does not resolve to the CDN or this origin", direct: "none", cdn: "523 / 1xxx", state_only: true;
    TlsOriginCert = "tls.origin-cert", "the origin certificate is expired or does not match", direct: "none", cdn: "525 / 526", state_only: true;
}

impl std::fmt::Display for CauseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl std::str::FromStr for CauseId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CauseId::parse(s).ok_or_else(|| format!("unknown cause id `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_json_and_text() {
        for cause in CauseId::ALL {
            let json = serde_json::to_string(cause).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", cause.id()));
            assert_eq!(CauseId::parse(cause.id()), Some(*cause));
        }
        assert_eq!(CauseId::ALL.len(), 28);
    }
}
