//! The command line: every subcommand and flag, with clap's derive API. The man page and shell
//! completions are generated from these definitions (`origin-agent generate`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "origin-agent",
    version,
    about = "Explains the 502s behind a CDN: discovers the web stack, audits the host and its firewall, reads the logs, and names the one local cause with its fix.",
    after_help = "Exit codes (monitoring-plugin convention): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One-shot audit: discover, probe, read the log window, diagnose, report.
    Audit(AuditArgs),
    /// Log evidence and diagnosis over the given files alone (formats detected), no host probes.
    Scan(ScanArgs),
    /// Which cause explains one moment or one request.
    Explain(ExplainArgs),
    /// Capture what the audit reads into a snapshot, for `audit --snapshot` elsewhere.
    Collect(CollectArgs),
    /// The daemon: follow the logs, diagnose continuously, notify, serve Prometheus metrics.
    Run(RunArgs),
    /// Ask the running daemon for its current incident and last audit.
    Status(StatusArgs),
    /// The CDNs' published IP ranges: bundled, and refreshed from the official endpoints.
    #[command(subcommand)]
    Cdn(CdnCommand),
    /// Allow the CDNs' ranges through the firewall: a dry run unless --apply.
    Whitelist(WhitelistArgs),
    /// WordPress: find the plugin that breaks a page, on a throwaway copy of the site.
    #[command(subcommand)]
    Wp(WpCommand),
    /// Work with the agent's config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with the log rule packs.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Generate the man page and shell completions.
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Nagios,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print the JSON report (same as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl OutputArgs {
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.format.unwrap_or(Format::Human)
        }
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Config file (default: /etc/origin-agent/config.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How far back to read the logs, e.g. 30m, 1h, 2d (default: the config's audit.since, 1h).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Audit a snapshot (directory or .tar.gz written by `collect`) instead of this host.
    #[arg(long, value_name = "DIR|FILE")]
    pub snapshot: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Config file (only its `rules_dir` matters here).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only lines newer than this, e.g. 1h.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Log files (nginx access/error, PHP-FPM, PHP, MySQL/MariaDB, kernel; .gz too).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Config file (default: /etc/origin-agent/config.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Explain from a snapshot (directory or .tar.gz written by `collect`) instead of this host.
    #[arg(long, value_name = "DIR|FILE")]
    pub snapshot: Option<PathBuf>,
    /// How far back to read the logs, e.g. 30m, 1h, 2d (default: the config's audit.since, 1h).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// A moment: RFC 3339 (2026-11-24T07:45:17Z) or local "2026-11-24 07:45:17".
    #[arg(long, value_name = "TIME", group = "query")]
    pub at: Option<String>,
    /// Text of the request line, e.g. "/sleep.php".
    #[arg(long, value_name = "TEXT", group = "query")]
    pub request: Option<String>,
    /// An nginx connection id, e.g. 1234 or *1234.
    #[arg(long, value_name = "ID", group = "query")]
    pub connection: Option<String>,
    /// Print JSON (every matching response, ungrouped).
    #[arg(long)]
    pub json: bool,
    /// Print every response and every nearby line, not the first of each group.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Config file (default: /etc/origin-agent/config.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How far back the snapshot's logs reach, e.g. 30m, 1h, 2d (default: the config's
    /// audit.since, 1h).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Where to write the snapshot: a .tar.gz file, or a directory (default:
    /// origin-agent-HOST-TIME.tar.gz here). Created new, mode 0600; never over an existing
    /// file or through a symlink.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Keep secrets in the snapshot (by default my.cnf passwords, secret-looking PHP-FPM
    /// env[] values and DB_PASSWORD-style PHP defines are replaced by <redacted>).
    #[arg(long)]
    pub no_redact: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate a config file (default: /etc/origin-agent/config.yaml).
    Check {
        /// The config file to check.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// List every rule: id, source, cause.
    List,
    /// Run a rule file against a log: which lines match which rule, with captures.
    Test {
        /// A rule pack (YAML, the format of rules/*.yaml).
        #[arg(value_name = "RULE_FILE")]
        rules: PathBuf,
        /// A log file to run it against.
        #[arg(value_name = "LOG")]
        log: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// man, completions, or all.
    #[arg(value_name = "WHAT")]
    pub what: String,
    /// The output directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (default: /etc/origin-agent/config.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Config file, for metrics.listen (default: /etc/origin-agent/config.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The daemon's address (default: the config's metrics.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WpCommand {
    /// The WordPress sites found on this host, with their plugins.
    Sites {
        /// Config file (default: /etc/origin-agent/config.yaml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bisect the site's plugins on a throwaway copy (code, database, php -S on loopback)
    /// until the plugin, or the pair of plugins, that makes a page fail is found. The live
    /// site is never written; the copy and its database are removed afterwards.
    Isolate {
        /// The site: a server name (as `wp sites` lists it) or its directory.
        #[arg(long, value_name = "NAME")]
        site: String,
        /// The failing page, as a path on the site (e.g. /checkout/).
        #[arg(long, value_name = "PATH")]
        url: String,
        /// Use this existing staging document root (with its own database) instead of a
        /// throwaway copy; its active plugins are restored afterwards.
        #[arg(long, value_name = "DOCROOT")]
        staging: Option<PathBuf>,
        /// Where the throwaway copy is made.
        #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
        work_dir: PathBuf,
        /// Config file, for state_dir where the crash-cleanup journal is kept (default:
        /// /etc/origin-agent/config.yaml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CdnCommand {
    /// Every provider and how many ranges it publishes.
    List {
        /// Config file, for state_dir where `cdn update` keeps its lists (default:
        /// /etc/origin-agent/config.yaml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// One provider's ranges.
    Show {
        /// The provider, as `cdn list` names it (e.g. cloudflare).
        #[arg(value_name = "NAME")]
        name: String,
        /// Config file, for state_dir (default: /etc/origin-agent/config.yaml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// The providers' own status pages: current incidents and degraded components (exit 1 when
    /// one reports trouble).
    Status {
        /// Config file, for cdn.providers, cdn.status_urls and state_dir (default:
        /// /etc/origin-agent/config.yaml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only these providers (repeatable; default: cdn.providers, else every provider with
        /// a known status page).
        #[arg(long = "provider", value_name = "NAME")]
        providers: Vec<String>,
    },
    /// Fetch the lists from the providers' official endpoints, validate them and keep them.
    Update {
        /// Config file, for state_dir (default: /etc/origin-agent/config.yaml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only these providers (repeatable; default: all).
        #[arg(long = "provider", value_name = "NAME")]
        providers: Vec<String>,
        /// Accept a list that shrank by more than half, grew more than twofold or covers more
        /// addresses than a CDN list may.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct WhitelistArgs {
    /// Config file (default: /etc/origin-agent/config.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Provider to allow (repeatable; default: the config's cdn.providers).
    #[arg(long = "provider", value_name = "NAME")]
    pub providers: Vec<String>,
    /// Ports to open, comma-separated (default 80,443).
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// auto, iptables, nftables, ufw, csf or firewalld (auto picks the firewall manager that owns the rules, and says why).
    #[arg(long, value_name = "NAME", default_value = "auto")]
    pub backend: String,
    /// Change the firewall (otherwise only print the change).
    #[arg(long)]
    pub apply: bool,
    /// Restore the firewall saved before the last apply.
    #[arg(long, conflicts_with = "apply")]
    pub rollback: bool,
    /// Make the change survive a reboot with the host's own mechanism.
    #[arg(long)]
    pub persist: bool,
    /// Also add the ranges to fail2ban's ignoreip and unban CDN addresses.
    #[arg(long)]
    pub fail2ban: bool,
    /// Also write nginx `set_real_ip_from` for the providers (nginx -t, then reload).
    #[arg(long)]
    pub nginx_real_ip: bool,
    /// Whitelist a provider's list even when it covers more addresses than a CDN list may, or
    /// grew more than twofold over the bundled list.
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and argument of every subcommand says what it is for (`--help`, man pages).
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() {
                    continue;
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "origin-agent", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
