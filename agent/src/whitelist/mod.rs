//! Whitelisting CDN ranges in the host firewall: plan, apply atomically, verify, roll back.
//!
//! # Layout
//! - this file: the request and outcome types, the safety checks on the provider lists, the
//!   run (dry run, apply, rollback) and the human rendering;
//! - [`ipt`]: the iptables / ip6tables back end (a dedicated chain jumped to first from INPUT,
//!   changed with one `iptables-restore --noflush` transaction per family);
//! - [`ipsets`]: the per-provider `hash:net` sets the chain matches when `ipset` is installed,
//!   refilled by an atomic `ipset swap`;
//! - [`nft`]: the nftables back end (per-provider interval sets and an accept rule at the top
//!   of the input chain that decides, changed with one `nft -f` transaction);
//! - [`f2b`]: `--fail2ban`, the ranges in every jail's `ignoreip` and CDN bans lifted;
//! - [`realip`]: `--nginx-real-ip`, the `set_real_ip_from` include checked with `nginx -t`;
//! - [`ufw`]: `--backend ufw`, allows made through ufw itself with a comment tag;
//! - [`state`]: the apply lock and the saved "before" state in the state directory.
//!
//! Every command goes through [`Host::run`], so tests run the real tools inside a network
//! namespace with a host that prefixes `ip netns exec`.

pub mod f2b;
pub mod ipsets;
pub mod ipt;
pub mod nft;
pub mod realip;
pub mod state;
pub mod ufw;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cdn::{CdnCatalog, Provider};
use crate::firewall::addrset::{AddrSet, Family};
use crate::firewall::eval::{evaluate, Ruleset};
use crate::host::{Command, Host, HostError};

/// Which firewall front end to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Detect: nftables when native nftables chains decide, else iptables.
    #[default]
    Auto,
    Iptables,
    Nftables,
    Ufw,
    Csf,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
            Backend::Ufw => "ufw",
            Backend::Csf => "csf",
        }
    }

    pub fn parse(name: &str) -> Option<Backend> {
        match name.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Backend::Auto),
            "iptables" => Some(Backend::Iptables),
            "nftables" | "nft" => Some(Backend::Nftables),
            "ufw" => Some(Backend::Ufw),
            "csf" => Some(Backend::Csf),
            _ => None,
        }
    }
}

/// What `origin-agent whitelist …` asks for.
#[derive(Debug, Clone)]
pub struct WhitelistRequest {
    pub providers: Vec<Provider>,
    /// Destination ports to open to the providers; empty means 80 and 443.
    pub ports: Vec<u16>,
    pub backend: Backend,
    /// Change the firewall (otherwise a dry run that only prints the change).
    pub apply: bool,
    /// Restore the firewall saved before the last apply.
    pub rollback: bool,
    pub persist: bool,
    pub fail2ban: bool,
    pub nginx_real_ip: bool,
    /// Accept lists past the CDN size bounds ([`crate::cdn::size_check`]).
    pub force: bool,
    pub state_dir: PathBuf,
    /// The nginx main configuration for `nginx -c` (`None`: nginx's compiled-in default).
    pub nginx_conf: Option<PathBuf>,
    /// Where `--nginx-real-ip` writes its include (`None`: [`realip::DEFAULT_INCLUDE`]).
    pub nginx_include: Option<PathBuf>,
    /// fail2ban's configuration directory for `fail2ban-client -c` and its `jail.d`
    /// (`None`: [`f2b::DEFAULT_CONF`]).
    pub fail2ban_conf: Option<PathBuf>,
    /// The nftables configuration loaded at boot, for `--persist` with nftables (`None`:
    /// `/etc/nftables.conf`); the agent's include goes to `nftables.d/` beside it.
    pub nft_conf: Option<PathBuf>,
}

impl Default for WhitelistRequest {
    fn default() -> Self {
        WhitelistRequest {
            providers: Vec::new(),
            ports: Vec::new(),
            backend: Backend::Auto,
            apply: false,
            rollback: false,
            persist: false,
            fail2ban: false,
            nginx_real_ip: false,
            force: false,
            state_dir: PathBuf::from("/var/lib/origin-agent"),
            nginx_conf: None,
            nginx_include: None,
            fail2ban_conf: None,
            nft_conf: None,
        }
    }
}

/// One range added or removed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub provider: Provider,
    pub net: IpNet,
}

/// The change for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyPlan {
    pub family: Family,
    pub add: Vec<Change>,
    pub remove: Vec<Change>,
    /// Agent-made rules that stay as they are.
    pub unchanged: usize,
    /// Changes to the structure (chain, jump position), in words.
    pub structure: Vec<String>,
    /// The exact input of the one transaction (an `iptables-restore` fragment or an `nft -f`
    /// script); empty when nothing changes.
    pub script: String,
    /// Run before `script`: the `ipset restore` input that swaps in new set contents.
    pub pre_script: String,
}

impl FamilyPlan {
    pub fn is_empty(&self) -> bool {
        self.script.is_empty() && self.pre_script.is_empty()
    }
}

/// What the run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    DryRun,
    Apply,
    Rollback,
}

/// The firewall evaluated again after a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// CDN ranges still blocked: one line each (family, port, ranges, deciding rule).
    pub blocked: Vec<String>,
    /// Lines of the rule set outside the agent's own objects that differ from before.
    pub other_changes: Vec<String>,
    /// A plan computed on the new state that is not empty (the change did not take).
    pub left_to_do: Vec<String>,
    /// Rules the evaluator cannot decide (rate limits...): reported, not fatal.
    pub uncertain: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.blocked.is_empty() && self.other_changes.is_empty() && self.left_to_do.is_empty()
    }
}

/// The result of a run, rendered by [`render`].
#[derive(Debug, Clone)]
pub struct WhitelistOutcome {
    pub mode: Mode,
    pub backend: Backend,
    pub providers: Vec<Provider>,
    pub ports: Vec<u16>,
    pub plans: Vec<FamilyPlan>,
    /// The commands run (or, in a dry run, that would run), each with its stdin script in `plans`.
    pub commands: Vec<String>,
    /// True when the firewall was changed and the change kept.
    pub applied: bool,
    pub verification: Option<Verification>,
    /// Why the change was undone (verification failed, a command failed), when it was.
    pub rolled_back: Option<String>,
    /// A failure that left the firewall as it was before (or could not; then it says so).
    pub failure: Option<String>,
    /// Where the state before the change was saved (apply), or which one was restored (rollback).
    pub state_file: Option<PathBuf>,
    /// The persistence mechanism used (`--persist`).
    pub persisted: Option<String>,
    /// `--nginx-real-ip`: the include written (or planned), its test and reload.
    pub real_ip: Option<realip::RealIpOutcome>,
    /// `--fail2ban`: ignore lists extended, CDN bans lifted, the drop-in.
    pub fail2ban: Option<f2b::Fail2banOutcome>,
    pub notes: Vec<String>,
}

impl WhitelistOutcome {
    /// True when the run did what was asked (a dry run always does).
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
            && self.rolled_back.is_none()
            && self.real_ip.as_ref().is_none_or(|r| r.error.is_none())
            && self.fail2ban.as_ref().is_none_or(|r| r.error.is_none())
    }

    fn new(mode: Mode, backend: Backend, req: &WhitelistRequest, ports: &[u16]) -> Self {
        WhitelistOutcome {
            mode,
            backend,
            providers: req.providers.clone(),
            ports: ports.to_vec(),
            plans: Vec::new(),
            commands: Vec::new(),
            applied: false,
            verification: None,
            rolled_back: None,
            failure: None,
            state_file: None,
            persisted: None,
            real_ip: None,
            fail2ban: None,
            notes: Vec::new(),
        }
    }
}

/// Why a whitelist run refused to start or could not read the firewall. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum WhitelistError {
    #[error("no provider given (use --provider NAME; known: {known})")]
    NoProvider { known: String },
    #[error("no list of ranges for provider {0}")]
    NoList(Provider),
    #[error("the list of provider {0} is empty")]
    EmptyList(Provider),
    #[error("provider {provider}: {net} is broader than allowed (IPv4 shorter than /8, IPv6 shorter than /20)")]
    TooBroad { provider: Provider, net: IpNet },
    #[error("port {0} cannot be whitelisted (0 is invalid, 22 is the SSH path the whitelist never touches)")]
    BadPort(u16),
    #[error("at most 15 ports can be whitelisted at once")]
    TooManyPorts,
    #[error("provider {provider}: list refused: {reason}; use --force to whitelist it anyway")]
    TooLarge { provider: Provider, reason: String },
    #[error("--rollback and --apply exclude each other")]
    Conflicting,
    #[error("the {0} back end is not supported by this version of `whitelist` yet; `--backend auto` (iptables) puts the agent's chain before {0}'s chains, which works on {0} hosts")]
    Unsupported(&'static str),
    #[error("another whitelist apply is running (lock {lock} is held)")]
    Busy { lock: PathBuf },
    #[error("no native nftables input chain drops anything: there is nothing to whitelist in nftables (use --backend iptables)")]
    NoNftChain,
    #[error("nothing to roll back: no saved state in {0}")]
    NothingToRollBack(PathBuf),
    #[error("the saved state was taken with the {0} back end")]
    StateBackend(&'static str),
    #[error("{path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// One provider's checked ranges: (provider, IPv4 networks, IPv6 networks).
pub type ProviderList = (Provider, Vec<IpNet>, Vec<IpNet>);

/// The ports when none are given.
pub const DEFAULT_PORTS: &[u16] = &[80, 443];

/// Each requested provider's ranges, checked: a known provider, a non-empty list, nothing
/// broader than /8 (IPv4) or /20 (IPv6).
pub fn checked_lists(
    providers: &[Provider],
    catalog: &CdnCatalog,
) -> Result<Vec<ProviderList>, WhitelistError> {
    if providers.is_empty() {
        return Err(WhitelistError::NoProvider {
            known: Provider::names().join(", "),
        });
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for p in providers {
        if !seen.insert(*p) {
            continue;
        }
        let ranges = catalog.get(*p).ok_or(WhitelistError::NoList(*p))?;
        if ranges.is_empty() {
            return Err(WhitelistError::EmptyList(*p));
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in ranges.nets() {
            let net = net.trunc();
            let (min, family) = match net {
                IpNet::V4(_) => (8, Family::V4),
                IpNet::V6(_) => (20, Family::V6),
            };
            if net.prefix_len() < min {
                return Err(WhitelistError::TooBroad { provider: *p, net });
            }
            if family == Family::V4 {
                v4.push(net);
            } else {
                v6.push(net);
            }
        }
        out.push((*p, v4, v6));
    }
    Ok(out)
}

/// Each list within the CDN size bounds, and within their growth over the bundled list (what
/// the agent shipped with: a saved list cannot quietly grow the whitelist).
pub fn sized_lists(lists: &[ProviderList]) -> Result<(), WhitelistError> {
    for (p, v4, v6) in lists {
        let bundled = crate::cdn::ranges(*p);
        crate::cdn::size_check(v4, v6, Some((&bundled.v4, &bundled.v6))).map_err(|reason| {
            WhitelistError::TooLarge {
                provider: *p,
                reason,
            }
        })?;
    }
    Ok(())
}

fn checked_ports(ports: &[u16]) -> Result<Vec<u16>, WhitelistError> {
    let mut ports: Vec<u16> = if ports.is_empty() {
        DEFAULT_PORTS.to_vec()
    } else {
        ports.to_vec()
    };
    ports.sort_unstable();
    ports.dedup();
    if let Some(bad) = ports.iter().find(|p| **p == 0 || **p == 22) {
        return Err(WhitelistError::BadPort(*bad));
    }
    if ports.len() > 15 {
        return Err(WhitelistError::TooManyPorts);
    }
    Ok(ports)
}

/// How long `iptables-restore` waits for the xtables lock.
const XTABLES_WAIT_SECS: &str = "10";

fn save_cmd(family: Family) -> Command {
    let prog = match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    };
    Command::new(prog, &[]).timeout(Duration::from_secs(30))
}

fn restore_cmd(family: Family, script: &str) -> Command {
    let prog = match family {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    };
    Command::new(prog, &["-w", XTABLES_WAIT_SECS, "--noflush"])
        .timeout(Duration::from_secs(60))
        .stdin(script.as_bytes().to_vec())
}

fn run_ok(host: &dyn Host, cmd: &Command) -> Result<String, WhitelistError> {
    let out = host.run(cmd)?;
    if out.success() {
        Ok(out.stdout_text())
    } else {
        Err(WhitelistError::Command {
            command: cmd.key(),
            message: format!(
                "exit {}: {}",
                out.status
                    .map_or("by signal".to_string(), |s| s.to_string()),
                out.stderr.trim()
            ),
        })
    }
}

/// The save text of a family: `None` when the tool is not installed (no IPv6 tables).
fn read_save(host: &dyn Host, family: Family) -> Result<Option<String>, WhitelistError> {
    match run_ok(host, &save_cmd(family)) {
        Ok(text) => Ok(Some(text)),
        // No ip6tables, or IPv6 disabled in the kernel: the IPv6 family is left out.
        Err(_) if family == Family::V6 => Ok(None),
        // No iptables at all (a pure nftables host): the nftables back end may still apply.
        Err(WhitelistError::Host(HostError::CommandMissing { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs the request: a dry run, an apply (save, change, verify, undo on failure) or a rollback.
pub fn run(
    host: &dyn Host,
    req: &WhitelistRequest,
    catalog: &CdnCatalog,
) -> Result<WhitelistOutcome, WhitelistError> {
    if req.apply && req.rollback {
        return Err(WhitelistError::Conflicting);
    }
    if req.backend == Backend::Csf {
        return Err(WhitelistError::Unsupported("csf"));
    }
    if req.rollback {
        let mut out = rollback(host, req)?;
        if req.nginx_real_ip || req.fail2ban {
            out.notes.push(
                "--rollback restores the firewall only: the nginx include and fail2ban's ignore lists stay"
                    .to_string(),
            );
        }
        return Ok(out);
    }
    let ports = checked_ports(&req.ports)?;
    let lists = checked_lists(&req.providers, catalog)?;
    if !req.force {
        sized_lists(&lists)?;
    }
    let mut out = firewall(host, req, &lists, &ports)?;
    if req.fail2ban {
        let conf = req
            .fail2ban_conf
            .clone()
            .unwrap_or_else(|| PathBuf::from(f2b::DEFAULT_CONF));
        if out.succeeded() {
            out.fail2ban = Some(f2b::run(host, &lists, &conf, req.apply));
        } else {
            out.notes
                .push("fail2ban was left alone because the firewall change failed".to_string());
        }
    }
    if req.nginx_real_ip {
        let path = req
            .nginx_include
            .clone()
            .unwrap_or_else(|| PathBuf::from(realip::DEFAULT_INCLUDE));
        if out.succeeded() {
            out.real_ip = Some(realip::run(
                host,
                &lists,
                &path,
                req.nginx_conf.as_deref(),
                req.apply,
            ));
        } else {
            out.notes.push(
                "the nginx real-ip include was left alone because the firewall change failed"
                    .to_string(),
            );
        }
    }
    Ok(out)
}

/// The firewall part of a dry run or an apply.
fn firewall(
    host: &dyn Host,
    req: &WhitelistRequest,
    lists: &[ProviderList],
    ports: &[u16],
) -> Result<WhitelistOutcome, WhitelistError> {
    let (lists, ports) = (lists.to_vec(), ports.to_vec());
    let mode = if req.apply { Mode::Apply } else { Mode::DryRun };
    let _lock = if req.apply {
        Some(state::lock(&req.state_dir)?)
    } else {
        None
    };
    let mut notes = Vec::new();
    if req.apply {
        recover_interrupted(host, req, &mut notes)?;
    } else if let Ok(Some((path, saved))) = state::load(&req.state_dir) {
        if !saved.complete {
            notes.push(format!(
                "an interrupted apply was found ({}): the next --apply undoes it first",
                path.display()
            ));
        }
    }
    let mut before = Saves::read(host)?;
    if req.backend == Backend::Ufw {
        before = before.with_ufw(host)?;
    }
    let fw = resolve(req.backend, &before)?;
    let mut out = WhitelistOutcome::new(mode, fw.backend(), req, &ports);
    out.notes = notes;
    out.providers = lists.iter().map(|(p, _, _)| *p).collect();
    out.notes.push(match &fw {
        Fw::Ipt => format!(
            "back end: iptables (the agent's chain {}, jumped to first from INPUT)",
            ipt::CHAIN
        ),
        Fw::Nft(c) => format!(
            "back end: nftables (sets and rules in the deciding chain {} {} {})",
            c.family, c.table, c.name
        ),
        Fw::Ufw => "back end: ufw (rules through ufw itself, tagged `origin-agent:PROVIDER`; ufw has no transaction: one command at a time, undone in reverse on failure)".to_string(),
    });
    if matches!(fw, Fw::Ufw) && !before.ufw_v6 {
        out.notes.push(
            "IPv6 left out: ufw does not manage IPv6 here (IPV6=no in /etc/default/ufw)".into(),
        );
    }
    if matches!(fw, Fw::Ipt) && before.v6.is_none() {
        out.notes.push(
            "IPv6 left out: ip6tables-save is missing or failed (IPv6 disabled?)".to_string(),
        );
    }
    if let Fw::Nft(c) = &fw {
        if c.family == "ip" {
            out.notes.push(format!(
                "IPv6 left out: the deciding chain is in the ip (IPv4) table {}",
                c.table
            ));
        }
    }
    out.plans = fw.plan(&before, &lists, &ports);
    out.commands = fw.commands(&out.plans);
    if !req.apply {
        return Ok(out);
    }
    if out.plans.iter().all(FamilyPlan::is_empty) {
        out.notes
            .push("nothing to change: the firewall already has exactly this whitelist".into());
        out.verification = Some(verify(host, &fw, &before, &before, &lists, &ports));
        if req.persist && out.verification.as_ref().is_some_and(|v| v.ok()) {
            // Applied earlier without --persist: save it now, and mark that apply as saved so
            // that its rollback saves the firewall it restores too.
            let persisted = fw.persist(host, req);
            if persisted.is_ok() {
                if let Some((_, mut earlier)) = state::load(&req.state_dir)? {
                    earlier.persisted = true;
                    if let Fw::Nft(_) = &fw {
                        earlier.nft_conf = Some(nft_conf_of(req));
                    }
                    state::save(&req.state_dir, &earlier)?;
                }
            }
            out.persisted = Some(persisted.unwrap_or_else(|not| {
                out.notes.push(not.clone());
                not
            }));
        }
        return Ok(out);
    }
    let saved = state::SavedState {
        version: 1,
        taken_at: host.now().to_string(),
        backend: fw.backend(),
        providers: out.providers.clone(),
        ports: ports.clone(),
        complete: false,
        iptables: before.v4.clone(),
        ip6tables: before.v6.clone(),
        nft_json: before.nft.clone(),
        nft_chain: match &fw {
            Fw::Nft(c) => Some(c.clone()),
            _ => None,
        },
        ufw_added: before.ufw.clone(),
        ipset: before.ipset.clone(),
        persisted: false,
        nft_conf: None,
    };
    out.state_file = Some(state::save(&req.state_dir, &saved)?);

    if let Err((failure, partial)) = fw.apply(host, &out.plans, &before, &lists, &ports) {
        out.failure = Some(failure);
        if partial {
            out.rolled_back = Some(fw.restore_to(host, &before, &mut out.notes));
        }
        if let Err(e) = state::retire(&req.state_dir) {
            out.notes.push(e.to_string());
        }
        return Ok(out);
    }
    let after = match Saves::read(host).and_then(|a| {
        if matches!(fw, Fw::Ufw) {
            a.with_ufw(host)
        } else {
            Ok(a)
        }
    }) {
        Ok(a) => a,
        Err(e) => {
            out.failure = Some(format!("could not read the firewall after the change: {e}"));
            out.rolled_back = Some(fw.restore_to(host, &before, &mut out.notes));
            return Ok(out);
        }
    };
    let verification = verify(host, &fw, &before, &after, &lists, &ports);
    let ok = verification.ok();
    out.verification = Some(verification);
    if !ok {
        out.rolled_back = Some(fw.restore_to(host, &before, &mut out.notes));
        if let Err(e) = state::retire(&req.state_dir) {
            out.notes.push(e.to_string());
        }
        return Ok(out);
    }
    out.applied = true;
    let mut complete = saved;
    complete.complete = true;
    state::save(&req.state_dir, &complete)?;
    if req.persist {
        let persisted = fw.persist(host, req);
        // Only a change that was saved is saved again by its rollback.
        complete.persisted = persisted.is_ok();
        out.persisted = Some(persisted.unwrap_or_else(|not| {
            out.notes.push(not.clone());
            not
        }));
        complete.nft_conf = match &fw {
            Fw::Nft(_) => Some(nft_conf_of(req)),
            _ => None,
        };
        state::save(&req.state_dir, &complete)?;
    }
    Ok(out)
}

/// The firewall as the tools print it: both `iptables-save` texts and `nft -j list ruleset`.
#[derive(Debug, Clone, Default)]
struct Saves {
    v4: Option<String>,
    v6: Option<String>,
    nft: Option<String>,
    /// `ipset save` (`None`: ipset is not installed or not usable; per-range rules then).
    ipset: Option<String>,
    /// `ufw show added`, read for the ufw back end only.
    ufw: Option<String>,
    /// ufw manages IPv6 (`IPV6=yes` in /etc/default/ufw).
    ufw_v6: bool,
}

impl Saves {
    fn read(host: &dyn Host) -> Result<Saves, WhitelistError> {
        let nft = match host.run(&Command::new("nft", &["-j", "list", "ruleset"])) {
            Ok(o) if o.success() => Some(o.stdout_text()),
            Ok(o) => {
                return Err(WhitelistError::Command {
                    command: "nft -j list ruleset".into(),
                    message: o.stderr.trim().to_string(),
                })
            }
            Err(HostError::CommandMissing { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let ipset = host
            .run(&Command::new("ipset", &["save"]))
            .ok()
            .filter(|o| o.success())
            .map(|o| o.stdout_text());
        Ok(Saves {
            v4: read_save(host, Family::V4)?,
            v6: read_save(host, Family::V6)?,
            nft,
            ipset,
            ufw: None,
            ufw_v6: false,
        })
    }

    /// Adds `ufw show added` (the ufw back end's own view).
    fn with_ufw(mut self, host: &dyn Host) -> Result<Saves, WhitelistError> {
        self.ufw = Some(run_ok(host, &Command::new("ufw", &["show", "added"]))?);
        self.ufw_v6 = host
            .read(std::path::Path::new("/etc/default/ufw"))
            .map(|b| {
                String::from_utf8_lossy(&b).lines().any(|l| {
                    let l = l.trim().replace('"', "");
                    l.eq_ignore_ascii_case("IPV6=yes")
                })
            })
            .unwrap_or(false);
        Ok(self)
    }

    fn ufw_rules(&self) -> Vec<ufw::UfwRule> {
        self.ufw
            .as_deref()
            .map(ufw::parse_added)
            .unwrap_or_default()
    }

    fn from_state(s: &state::SavedState) -> Saves {
        Saves {
            v4: s.iptables.clone(),
            v6: s.ip6tables.clone(),
            nft: s.nft_json.clone(),
            ipset: s.ipset.clone(),
            ufw: s.ufw_added.clone(),
            ufw_v6: true,
        }
    }

    fn get(&self, family: Family) -> Option<&String> {
        match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
    }

    fn nft_doc(&self) -> Option<serde_json::Value> {
        self.nft
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
    }

    /// The nftables tables iptables-nft owns (they show in `iptables-save`).
    fn iptables_nft_tables(&self) -> HashSet<(String, String)> {
        let mut skip = HashSet::new();
        for (fam, nft_family) in [(Family::V4, "ip"), (Family::V6, "ip6")] {
            if let Some(text) = self.get(fam) {
                let summary = crate::firewall::iptables::summarize(text);
                if summary.backend.as_deref() != Some("legacy") {
                    for t in &summary.tables {
                        skip.insert((nft_family.to_string(), t.clone()));
                    }
                }
            }
        }
        skip
    }
}

/// The back end resolved, with what it needs.
#[derive(Debug, Clone)]
enum Fw {
    Ipt,
    Nft(nft::NftChain),
    Ufw,
}

fn resolve(backend: Backend, saves: &Saves) -> Result<Fw, WhitelistError> {
    let chain = saves
        .nft_doc()
        .and_then(|doc| nft::deciding_chain(&doc, &saves.iptables_nft_tables()));
    match (backend, chain) {
        (Backend::Ufw, _) => Ok(Fw::Ufw),
        (Backend::Nftables, Some(c)) | (Backend::Auto, Some(c)) => Ok(Fw::Nft(c)),
        (Backend::Nftables, None) => Err(WhitelistError::NoNftChain),
        _ if saves.v4.is_none() => Err(WhitelistError::Host(HostError::CommandMissing {
            command: "iptables-save".into(),
        })),
        _ => Ok(Fw::Ipt),
    }
}

impl Fw {
    fn backend(&self) -> Backend {
        match self {
            Fw::Ipt => Backend::Iptables,
            Fw::Nft(_) => Backend::Nftables,
            Fw::Ufw => Backend::Ufw,
        }
    }

    /// The ufw plans with their commands and undo commands.
    fn ufw_plans(saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Vec<ufw::UfwPlan> {
        let current = saves.ufw_rules();
        let ports = ipt::ports_text(ports);
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| *f == Family::V4 || saves.ufw_v6)
            .map(|family| {
                let wanted: Vec<(Provider, Vec<IpNet>)> = lists
                    .iter()
                    .map(|(p, v4, v6)| (*p, if family == Family::V4 { v4 } else { v6 }.clone()))
                    .collect();
                ufw::plan(family, &current, &wanted, &ports)
            })
            .collect()
    }

    fn plan(&self, saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Vec<FamilyPlan> {
        match self {
            Fw::Ipt => {
                let mut plans = Vec::new();
                for family in [Family::V4, Family::V6] {
                    let Some(text) = saves.get(family) else {
                        continue;
                    };
                    let wanted: Vec<(Provider, Vec<IpNet>)> = lists
                        .iter()
                        .map(|(p, v4, v6)| (*p, if family == Family::V4 { v4 } else { v6 }.clone()))
                        .collect();
                    let st = ipt::read_state(text);
                    plans.push(match &saves.ipset {
                        Some(sets) => {
                            ipt::plan_sets(family, &st, &ipsets::read(sets), &wanted, ports)
                        }
                        None => ipt::plan(family, &st, &wanted, ports),
                    });
                }
                plans
            }
            Fw::Nft(chain) => {
                let doc = saves.nft_doc().unwrap_or(serde_json::Value::Null);
                nft::plan(chain, &nft::read_state(&doc, chain), lists, ports)
            }
            Fw::Ufw => Self::ufw_plans(saves, lists, ports)
                .into_iter()
                .map(|(p, _, _)| p)
                .collect(),
        }
    }

    fn commands(&self, plans: &[FamilyPlan]) -> Vec<String> {
        match self {
            Fw::Ipt => plans
                .iter()
                .flat_map(|p| {
                    let mut c = Vec::new();
                    if !p.pre_script.is_empty() {
                        c.push("ipset restore".to_string());
                    }
                    if !p.script.is_empty() {
                        c.push(restore_cmd(p.family, "").key());
                    }
                    c
                })
                .collect(),
            Fw::Nft(_) if plans.iter().any(|p| !p.is_empty()) => vec!["nft -f -".to_string()],
            Fw::Nft(_) => Vec::new(),
            Fw::Ufw => plans
                .iter()
                .flat_map(|p| p.script.lines().map(str::to_string))
                .collect(),
        }
    }

    /// Applies the plans; on error, the failure and whether part of it was applied.
    fn apply(
        &self,
        host: &dyn Host,
        plans: &[FamilyPlan],
        before: &Saves,
        lists: &[ProviderList],
        ports: &[u16],
    ) -> Result<(), (String, bool)> {
        match self {
            Fw::Ufw => {
                let mut undo: Vec<Vec<String>> = Vec::new();
                for (_, ops, undos) in Self::ufw_plans(before, lists, ports) {
                    for (op, back) in ops.iter().zip(undos) {
                        let args: Vec<&str> = op.iter().map(String::as_str).collect();
                        if let Err(e) = run_ok(host, &Command::new("ufw", &args)) {
                            let mut undone = 0;
                            for b in undo.iter().rev() {
                                let args: Vec<&str> = b.iter().map(String::as_str).collect();
                                if run_ok(host, &Command::new("ufw", &args)).is_ok() {
                                    undone += 1;
                                }
                            }
                            return Err((
                                format!(
                                    "{e}; the {} ufw commands already run were undone ({undone} succeeded)",
                                    undo.len()
                                ),
                                false,
                            ));
                        }
                        undo.push(back);
                    }
                }
                Ok(())
            }
            Fw::Ipt => {
                let mut done = false;
                for plan in plans.iter().filter(|p| !p.is_empty()) {
                    if !plan.pre_script.is_empty() {
                        if let Err(e) = run_ok(host, &ipset_cmd(&plan.pre_script)) {
                            // A failed restore may leave a temporary set: the undo removes it.
                            return Err((
                                format!(
                                    "{e}; the {} set contents were not swapped in",
                                    plan.family.label()
                                ),
                                true,
                            ));
                        }
                        done = true;
                    }
                    if plan.script.is_empty() {
                        continue;
                    }
                    if let Err(e) = run_ok(host, &restore_cmd(plan.family, &plan.script)) {
                        return Err((
                            format!(
                                "{e}; the {} transaction was not applied",
                                plan.family.label()
                            ),
                            done,
                        ));
                    }
                    done = true;
                }
                Ok(())
            }
            Fw::Nft(_) => {
                let script: String = plans.iter().map(|p| p.script.as_str()).collect();
                run_ok(host, &nft_cmd(&script))
                    .map(drop)
                    .map_err(|e| (format!("{e}; the transaction was not applied"), false))
            }
        }
    }

    /// Puts the agent's objects back as they were in `before`; returns what was done, in words.
    fn restore_to(&self, host: &dyn Host, before: &Saves, notes: &mut Vec<String>) -> String {
        match self {
            Fw::Ipt => restore_ipt(host, before, notes),
            Fw::Ufw => {
                let current = match run_ok(host, &Command::new("ufw", &["show", "added"])) {
                    Ok(t) => ufw::parse_added(&t),
                    Err(e) => {
                        notes.push(format!("ufw: ROLLBACK FAILED: cannot read: {e}"));
                        return "ufw NOT restored".into();
                    }
                };
                let ops = ufw::restore_ops(&current, &before.ufw_rules());
                if ops.is_empty() {
                    return "nothing had changed".into();
                }
                for op in &ops {
                    let args: Vec<&str> = op.iter().map(String::as_str).collect();
                    if let Err(e) = run_ok(host, &Command::new("ufw", &args)) {
                        notes.push(format!("ufw: ROLLBACK FAILED: {e}"));
                        return "ufw NOT fully restored".into();
                    }
                }
                format!("ufw restored ({} commands)", ops.len())
            }
            Fw::Nft(chain) => {
                let current = match Saves::read(host) {
                    Ok(s) => s,
                    Err(e) => {
                        notes.push(format!("nftables: ROLLBACK FAILED: cannot read: {e}"));
                        return "NOT restored".into();
                    }
                };
                let (Some(cur), Some(old)) = (current.nft_doc(), before.nft_doc()) else {
                    notes.push("nftables: ROLLBACK FAILED: no ruleset to compare".into());
                    return "NOT restored".into();
                };
                let Some(script) = nft::restore_script(
                    chain,
                    &nft::read_state(&cur, chain),
                    &nft::read_state(&old, chain),
                ) else {
                    return "nothing had changed".into();
                };
                match run_ok(host, &nft_cmd(&script)) {
                    Ok(_) => "nftables restored".into(),
                    Err(e) => {
                        notes.push(format!("nftables: ROLLBACK FAILED: {e}"));
                        "nftables NOT restored".into()
                    }
                }
            }
        }
    }

    /// Rule-set lines outside the agent's objects that differ between two reads.
    fn other_changes(&self, before: &Saves, after: &Saves) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |label: &str, b: Vec<String>, a: Vec<String>| {
            if a == b {
                return;
            }
            let old: HashSet<&String> = b.iter().collect();
            let new: HashSet<&String> = a.iter().collect();
            let n = out.len();
            for l in b.iter().filter(|l| !new.contains(l)) {
                out.push(format!("{label}: - {l}"));
            }
            for l in a.iter().filter(|l| !old.contains(l)) {
                out.push(format!("{label}: + {l}"));
            }
            if out.len() == n {
                out.push(format!("{label}: rules reordered"));
            }
        };
        let lines = |t: String| t.lines().map(str::to_string).collect::<Vec<_>>();
        match self {
            Fw::Ipt => {
                for family in [Family::V4, Family::V6] {
                    if let (Some(b), Some(a)) = (before.get(family), after.get(family)) {
                        diff(
                            family.label(),
                            lines(ipt::without_own(b)),
                            lines(ipt::without_own(a)),
                        );
                    }
                }
                if let (Some(b), Some(a)) = (&before.ipset, &after.ipset) {
                    diff(
                        "ipset",
                        lines(ipsets::without_own(b)),
                        lines(ipsets::without_own(a)),
                    );
                }
            }
            Fw::Ufw => {
                let mut own = before.ufw_rules();
                own.extend(after.ufw_rules());
                for family in [Family::V4, Family::V6] {
                    if let (Some(b), Some(a)) = (before.get(family), after.get(family)) {
                        diff(
                            family.label(),
                            lines(ufw::without_own(&ipt::without_own(b), &own)),
                            lines(ufw::without_own(&ipt::without_own(a), &own)),
                        );
                    }
                }
                let (b, a) = (before.ufw.clone(), after.ufw.clone());
                let strip = |t: Option<String>| -> Vec<String> {
                    t.unwrap_or_default()
                        .lines()
                        .filter(|l| !l.contains("'origin-agent:"))
                        .map(str::to_string)
                        .collect()
                };
                diff("ufw", strip(b), strip(a));
            }
            Fw::Nft(chain) => {
                for family in [Family::V4, Family::V6] {
                    if let (Some(b), Some(a)) = (before.get(family), after.get(family)) {
                        diff(
                            family.label(),
                            lines(ipt::normalized(b)),
                            lines(ipt::normalized(a)),
                        );
                    }
                }
                if let (Some(b), Some(a)) = (before.nft_doc(), after.nft_doc()) {
                    diff(
                        "nftables",
                        nft::without_own(&b, chain),
                        nft::without_own(&a, chain),
                    );
                }
            }
        }
        out
    }

    /// Saves the rule set with the host's own mechanism: what was saved where, or why nothing
    /// was (`not persisted: …`).
    fn persist(&self, host: &dyn Host, req: &WhitelistRequest) -> Result<String, String> {
        match self {
            Fw::Ipt => persist_ipt(host),
            Fw::Ufw => Ok("ufw's own files (/etc/ufw/user.rules, /etc/ufw/user6.rules): ufw keeps its rules across reboots".to_string()),
            Fw::Nft(chain) => persist_nft(host, chain, &nft_conf_of(req)).map_err(|e| format!("not persisted: {e}")),
        }
    }
}

/// The boot-time nftables configuration `--persist` writes to.
fn nft_conf_of(req: &WhitelistRequest) -> PathBuf {
    req.nft_conf
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/nftables.conf"))
}

fn ipset_cmd(script: &str) -> Command {
    Command::new("ipset", &["restore"])
        .timeout(Duration::from_secs(60))
        .stdin(script.as_bytes().to_vec())
}

fn nft_cmd(script: &str) -> Command {
    Command::new("nft", &["-f", "-"])
        .timeout(Duration::from_secs(60))
        .stdin(script.as_bytes().to_vec())
}

fn restore_ipt(host: &dyn Host, before: &Saves, notes: &mut Vec<String>) -> String {
    let mut done = Vec::new();
    let saved_sets = ipsets::read(before.ipset.as_deref().unwrap_or_default());
    let current_sets = match host.run(&Command::new("ipset", &["save"])) {
        Ok(o) if o.success() => Some(ipsets::read(&o.stdout_text())),
        _ => None,
    };
    for family in [Family::V4, Family::V6] {
        // The saved sets first, refilled where they differ, so the restored rules find them.
        if let Some(current) = &current_sets {
            let differing: std::collections::BTreeMap<String, Vec<IpNet>> = saved_sets
                .iter()
                .filter(|(name, nets)| current.get(*name) != Some(*nets))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let fill = ipsets::restore_fill(&differing, family);
            if !fill.is_empty() {
                match run_ok(host, &ipset_cmd(&fill)) {
                    Ok(_) => done.push(format!("{} sets restored", family.label())),
                    Err(e) => notes.push(format!("{} sets: ROLLBACK FAILED: {e}", family.label())),
                }
            }
        }
        let Some(saved) = before.get(family) else {
            continue;
        };
        let current = match read_save(host, family) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(e) => {
                notes.push(format!(
                    "{}: ROLLBACK FAILED: cannot read: {e}",
                    family.label()
                ));
                continue;
            }
        };
        let Some(frag) = ipt::restore_fragment(&ipt::read_state(&current), &ipt::read_state(saved))
        else {
            continue;
        };
        match run_ok(host, &restore_cmd(family, &frag)) {
            Ok(_) => done.push(format!("{} restored", family.label())),
            Err(e) => {
                notes.push(format!("{}: ROLLBACK FAILED: {e}", family.label()));
                done.push(format!("{} NOT restored", family.label()));
            }
        }
    }
    // Then the sets the apply created (no rule refers to them any more).
    if let Some(current) = &current_sets {
        let destroy = ipsets::restore_destroy(current, &saved_sets);
        if !destroy.is_empty() {
            match run_ok(host, &ipset_cmd(&destroy)) {
                Ok(_) => done.push("new sets destroyed".to_string()),
                Err(e) => notes.push(format!("sets: ROLLBACK FAILED: {e}")),
            }
        }
    }
    if done.is_empty() {
        "nothing had changed".to_string()
    } else {
        done.join(", ")
    }
}

fn fw_of_state(saved: &state::SavedState) -> Result<Fw, WhitelistError> {
    match (saved.backend, &saved.nft_chain) {
        (Backend::Iptables, _) => Ok(Fw::Ipt),
        (Backend::Nftables, Some(c)) => Ok(Fw::Nft(c.clone())),
        (Backend::Ufw, _) => Ok(Fw::Ufw),
        (b, _) => Err(WhitelistError::StateBackend(b.name())),
    }
}

/// An apply that was interrupted (killed between saving the state and verifying) is undone
/// before anything else.
fn recover_interrupted(
    host: &dyn Host,
    req: &WhitelistRequest,
    notes: &mut Vec<String>,
) -> Result<(), WhitelistError> {
    let Some((path, saved)) = state::load(&req.state_dir)? else {
        return Ok(());
    };
    if saved.complete {
        return Ok(());
    }
    let fw = fw_of_state(&saved)?;
    let what = fw.restore_to(host, &Saves::from_state(&saved), notes);
    notes.push(format!(
        "an interrupted apply ({}) was found and undone first: {what}",
        path.display()
    ));
    state::retire(&req.state_dir)?;
    Ok(())
}

fn rollback(host: &dyn Host, req: &WhitelistRequest) -> Result<WhitelistOutcome, WhitelistError> {
    let _lock = state::lock(&req.state_dir)?;
    let Some((path, saved)) = state::load(&req.state_dir)? else {
        return Err(WhitelistError::NothingToRollBack(req.state_dir.clone()));
    };
    let fw = fw_of_state(&saved)?;
    let mut out = WhitelistOutcome::new(Mode::Rollback, saved.backend, req, &saved.ports);
    out.providers = saved.providers.clone();
    out.state_file = Some(path);
    let before = Saves::from_state(&saved);
    let mut current = Saves::read(host)?;
    if matches!(fw, Fw::Ufw) {
        current = current.with_ufw(host)?;
    }
    match &fw {
        Fw::Ufw => {
            let ops = ufw::restore_ops(&current.ufw_rules(), &before.ufw_rules());
            out.plans.push(FamilyPlan {
                family: Family::V4,
                add: Vec::new(),
                remove: Vec::new(),
                unchanged: 0,
                structure: vec!["restore the agent's ufw rules as saved".to_string()],
                script: ops
                    .iter()
                    .map(|o| format!("{}\n", ufw::command_text(o)))
                    .collect(),
                pre_script: String::new(),
            });
        }
        Fw::Ipt => {
            for family in [Family::V4, Family::V6] {
                let (Some(cur), Some(old)) = (current.get(family), before.get(family)) else {
                    continue;
                };
                let frag = ipt::restore_fragment(&ipt::read_state(cur), &ipt::read_state(old))
                    .unwrap_or_default();
                out.plans.push(FamilyPlan {
                    family,
                    add: Vec::new(),
                    remove: Vec::new(),
                    unchanged: 0,
                    structure: vec!["restore the agent's chain and jumps as saved".to_string()],
                    script: frag,
                    pre_script: String::new(),
                });
            }
        }
        Fw::Nft(chain) => {
            if let (Some(cur), Some(old)) = (current.nft_doc(), before.nft_doc()) {
                let script = nft::restore_script(
                    chain,
                    &nft::read_state(&cur, chain),
                    &nft::read_state(&old, chain),
                )
                .unwrap_or_default();
                out.plans.push(FamilyPlan {
                    family: Family::V4,
                    add: Vec::new(),
                    remove: Vec::new(),
                    unchanged: 0,
                    structure: vec!["restore the agent's sets and rules as saved".to_string()],
                    script,
                    pre_script: String::new(),
                });
            }
        }
    }
    out.commands = fw.commands(&out.plans);
    let what = fw.restore_to(host, &before, &mut out.notes);
    out.notes.push(format!("rollback: {what}"));
    let mut after = Saves::read(host)?;
    if matches!(fw, Fw::Ufw) {
        after = after.with_ufw(host)?;
    }
    let changed = fw.other_changes(&before, &after);
    if !changed.is_empty() {
        out.notes.push(format!(
            "the rule set differs from the saved one outside the agent's objects (changed by someone else since the apply; left as it is): {}",
            changed.join("; ")
        ));
    }
    if saved.persisted && !out.notes.iter().any(|n| n.contains("ROLLBACK FAILED")) {
        // Persist where the apply persisted, whatever this request says.
        let same_place = WhitelistRequest {
            nft_conf: saved.nft_conf.clone(),
            ..req.clone()
        };
        out.persisted = Some(fw.persist(host, &same_place).unwrap_or_else(|not| {
            out.notes.push(not.clone());
            not
        }));
    }
    if out.notes.iter().any(|n| n.contains("ROLLBACK FAILED")) {
        out.failure = Some("the rollback could not restore everything".to_string());
    } else {
        out.applied = true;
        state::retire(&req.state_dir)?;
    }
    Ok(out)
}

/// The rule sets the evaluator sees for one family: iptables (with ipsets) plus native nftables
/// tables.
fn ruleset(host: &dyn Host, family: Family, saves: &Saves, notes: &mut Vec<String>) -> Ruleset {
    let mut rs = Ruleset::new(family);
    let ipsets = host
        .run(&Command::new("ipset", &["save"]))
        .ok()
        .filter(|o| o.success())
        .map(|o| crate::firewall::ipset::parse(&o.stdout_text()))
        .unwrap_or_default();
    if let Some(text) = saves.get(family) {
        let label = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        crate::firewall::iptables::parse_into(&mut rs, text, label, &ipsets);
    }
    if let Some(text) = &saves.nft {
        match crate::firewall::nft::parse(text) {
            Ok(nft) => {
                crate::firewall::nft::compile_into(&mut rs, &nft, &saves.iptables_nft_tables())
            }
            Err(e) => notes.push(format!("nftables not evaluated: {e}")),
        }
    }
    rs
}

/// Evaluates the firewall after the change: every requested range must be accepted on every
/// port, nothing outside the agent's objects may have changed, and planning again must find
/// nothing to do.
fn verify(
    host: &dyn Host,
    fw: &Fw,
    before: &Saves,
    after: &Saves,
    lists: &[ProviderList],
    ports: &[u16],
) -> Verification {
    let mut v = Verification {
        other_changes: fw.other_changes(before, after),
        ..Verification::default()
    };
    let mut notes = Vec::new();
    for family in [Family::V4, Family::V6] {
        let targets = lists
            .iter()
            .fold(AddrSet::empty(family), |acc, (_, v4, v6)| {
                let nets = if family == Family::V4 { v4 } else { v6 };
                acc.union(&AddrSet::from_nets(family, nets))
            });
        if targets.is_empty() {
            continue;
        }
        let rs = ruleset(host, family, after, &mut notes);
        for port in ports {
            let eval = evaluate(&rs, &targets, *port);
            for d in eval.blocked_in(&targets) {
                v.blocked.push(format!(
                    "{} port {port}: {} {} by {}",
                    family.label(),
                    d.set.describe(4),
                    d.verdict.label(),
                    d.by.describe()
                ));
            }
            for u in eval.uncertain_in(&targets) {
                v.uncertain.push(format!(
                    "{} port {port}: {} may be decided by {} ({})",
                    family.label(),
                    u.set.describe(4),
                    u.at.describe(),
                    u.reason
                ));
            }
        }
    }
    for plan in fw.plan(after, lists, ports) {
        if !plan.is_empty() {
            v.left_to_do.push(format!(
                "{}: {} to add, {} to remove, {}",
                plan.family.label(),
                plan.add.len(),
                plan.remove.len(),
                plan.structure.join("; ")
            ));
        }
    }
    v.uncertain.extend(notes);
    v
}

/// Writes the agent's include for the boot-time nftables configuration and makes `conf` include
/// it (once); `nft -c -f conf` must accept the result, or both files are put back.
fn persist_nft(
    host: &dyn Host,
    chain: &nft::NftChain,
    conf: &std::path::Path,
) -> Result<String, String> {
    let doc = Saves::read(host)
        .map_err(|e| e.to_string())?
        .nft_doc()
        .ok_or("cannot read the nftables ruleset")?;
    let text = nft::persist_text(chain, &nft::read_state(&doc, chain));
    let dir = conf
        .parent()
        .unwrap_or(std::path::Path::new("/etc"))
        .join("nftables.d");
    let include = dir.join("origin-agent-cdn.nft");
    let old_conf = std::fs::read_to_string(conf).map_err(|e| format!("{}: {e}", conf.display()))?;
    let old_include = std::fs::read_to_string(&include).ok();
    let line = format!("include \"{}\"", include.display());
    let new_conf = if old_conf.lines().any(|l| l.trim() == line) {
        None
    } else {
        let mut c = old_conf.clone();
        if !c.ends_with('\n') && !c.is_empty() {
            c.push('\n');
        }
        c.push_str(&format!(
            "# origin-agent CDN whitelist (origin-agent whitelist --persist)\n{line}\n"
        ));
        Some(c)
    };
    let io = |p: &std::path::Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    std::fs::write(&include, &text).map_err(|e| io(&include, e))?;
    if let Some(c) = &new_conf {
        std::fs::write(conf, c).map_err(|e| io(conf, e))?;
    }
    let conf_s = conf.display().to_string();
    let check = run_ok(host, &Command::new("nft", &["-c", "-f", &conf_s]));
    if let Err(e) = check {
        let _ = std::fs::write(conf, &old_conf);
        let _ = match &old_include {
            Some(t) => std::fs::write(&include, t),
            None => std::fs::remove_file(&include),
        };
        return Err(format!(
            "`nft -c -f {conf_s}` rejected the include, both files put back: {e}"
        ));
    }
    Ok(format!(
        "nftables: {} (included from {}, checked with nft -c)",
        include.display(),
        conf.display()
    ))
}

/// netfilter-persistent's plugin that saves and restores ipsets (package `ipset-persistent`),
/// run before the iptables plugins at boot.
const IPSET_PLUGIN: &str = "/usr/share/netfilter-persistent/plugins.d/10-ipset";

/// Saves the iptables rule set with netfilter-persistent. When the whitelist matches its
/// `oa-cdn-*` ipsets, the sets must be saved and restored too: a `rules.v4` that names sets no
/// one creates fails to load at boot (`iptables-restore`: set does not exist), and the host
/// would come up with no firewall at all. Without the ipset plugin nothing is saved.
fn persist_ipt(host: &dyn Host) -> Result<String, String> {
    let tool = "/usr/sbin/netfilter-persistent";
    if host.metadata(std::path::Path::new(tool)).is_err() {
        return Err("not persisted: netfilter-persistent is not installed (apt install iptables-persistent), the change lasts until reboot".to_string());
    }
    let uses_sets = match host.run(&Command::new("ipset", &["list", "-n"])) {
        Ok(out) if out.success() => out
            .stdout_text()
            .lines()
            .any(|l| l.trim().starts_with(ipsets::PREFIX)),
        _ => false,
    };
    let sets_saved = host.metadata(std::path::Path::new(IPSET_PLUGIN)).is_ok();
    if uses_sets && !sets_saved {
        return Err(format!(
            "not persisted: the whitelist matches its {}* ipsets and netfilter-persistent has no ipset plugin ({IPSET_PLUGIN} missing: apt install ipset-persistent); rules saved without their sets fail to load at boot and would leave the host with no firewall. The change lasts until reboot",
            ipsets::PREFIX
        ));
    }
    match run_ok(host, &Command::new(tool, &["save"])) {
        Ok(_) if uses_sets => Ok("netfilter-persistent save: /etc/iptables/rules.v4, /etc/iptables/rules.v6 and the ipsets (/etc/iptables/ipsets, restored first at boot)".to_string()),
        Ok(_) => Ok("netfilter-persistent save: /etc/iptables/rules.v4, /etc/iptables/rules.v6".to_string()),
        Err(e) => Err(format!("not persisted: {e}")),
    }
}

fn outcome_jails(f: &f2b::Fail2banOutcome) -> Vec<String> {
    f.jails
        .iter()
        .map(|j| {
            let unbanned: Vec<String> = j.unbanned.iter().map(|a| a.to_string()).collect();
            format!(
                "jail {}: {} ranges added to ignoreip; CDN addresses unbanned: {}",
                j.jail,
                j.ignore_added,
                if unbanned.is_empty() {
                    "none".to_string()
                } else {
                    unbanned.join(", ")
                }
            )
        })
        .collect()
}

/// The human text: the plan per family (ranges to add and remove, the exact transaction), what
/// was applied, the verification and any rollback.
pub fn render(outcome: &WhitelistOutcome) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let title = match outcome.mode {
        Mode::DryRun => "Whitelist (dry run: nothing was changed; add --apply to apply)",
        Mode::Apply => "Whitelist apply",
        Mode::Rollback => "Whitelist rollback",
    };
    let providers: Vec<&str> = outcome.providers.iter().map(|p| p.name()).collect();
    let ports: Vec<String> = outcome.ports.iter().map(u16::to_string).collect();
    let _ = writeln!(s, "{title}");
    let _ = writeln!(
        s,
        "back end: {}   providers: {}   ports: {}",
        outcome.backend.name(),
        providers.join(", "),
        ports.join(",")
    );
    for plan in &outcome.plans {
        let label = match (outcome.mode, outcome.backend) {
            (Mode::Rollback, Backend::Nftables) => "nftables",
            (Mode::Rollback, Backend::Ufw) => "ufw",
            _ => plan.family.label(),
        };
        let _ = writeln!(
            s,
            "\n{}: {} to add, {} to remove, {} unchanged",
            label,
            plan.add.len(),
            plan.remove.len(),
            plan.unchanged
        );
        for c in &plan.add {
            let _ = writeln!(s, "  + {} ({})", c.net, c.provider);
        }
        for c in &plan.remove {
            let _ = writeln!(s, "  - {} ({}: no longer published)", c.net, c.provider);
        }
        for st in &plan.structure {
            let _ = writeln!(s, "  * {st}");
        }
        if !plan.pre_script.is_empty() {
            let _ = writeln!(
                s,
                "  set contents, swapped in atomically: ipset restore <<'EOF'"
            );
            for line in plan.pre_script.lines() {
                let _ = writeln!(s, "    {line}");
            }
            let _ = writeln!(s, "  EOF");
        }
        if plan.is_empty() {
            let _ = writeln!(s, "  nothing to change");
        } else if plan.script.is_empty() {
            let _ = writeln!(s, "  no rule changes");
        } else {
            let cmd = match (outcome.backend, plan.family) {
                (Backend::Ufw, _) => "ufw commands, in this order:".to_string(),
                (Backend::Nftables, _) => {
                    "part of one transaction for both families: nft -f - <<'EOF'".to_string()
                }
                (_, Family::V4) => format!(
                    "one transaction: iptables-restore -w {XTABLES_WAIT_SECS} --noflush <<'EOF'"
                ),
                (_, Family::V6) => format!(
                    "one transaction: ip6tables-restore -w {XTABLES_WAIT_SECS} --noflush <<'EOF'"
                ),
            };
            let _ = writeln!(s, "  {cmd}");
            for line in plan.script.lines() {
                let _ = writeln!(s, "    {line}");
            }
            if outcome.backend != Backend::Ufw {
                let _ = writeln!(s, "  EOF");
            }
        }
    }
    if let Some(path) = &outcome.state_file {
        let what = match outcome.mode {
            Mode::Rollback => "restored from",
            _ => "state before the change saved in",
        };
        let _ = writeln!(s, "\n{what} {}", path.display());
    }
    if let Some(v) = &outcome.verification {
        let _ = writeln!(
            s,
            "\nverification: {}",
            if v.ok() { "passed" } else { "FAILED" }
        );
        for l in &v.blocked {
            let _ = writeln!(s, "  still blocked: {l}");
        }
        for l in &v.other_changes {
            let _ = writeln!(s, "  changed outside the whitelist: {l}");
        }
        for l in &v.left_to_do {
            let _ = writeln!(s, "  not applied: {l}");
        }
        for l in &v.uncertain {
            let _ = writeln!(s, "  uncertain: {l}");
        }
    }
    if let Some(f) = &outcome.failure {
        let _ = writeln!(s, "\nFAILED: {f}");
    }
    if let Some(r) = &outcome.rolled_back {
        let _ = writeln!(s, "rolled back: {r}");
    }
    if outcome.applied {
        let _ = writeln!(
            s,
            "\n{}",
            match outcome.mode {
                Mode::Rollback => "the firewall is back to its state before the last apply",
                _ => "applied and verified; undo with `origin-agent whitelist --rollback`",
            }
        );
    }
    if let Some(p) = &outcome.persisted {
        let _ = writeln!(s, "persistence: {p}");
    }
    if let Some(f) = &outcome.fail2ban {
        let _ = writeln!(s, "\nfail2ban: drop-in {}", f.dropin.display());
        for j in &outcome_jails(f) {
            let _ = writeln!(s, "  {j}");
        }
        if outcome.mode == Mode::DryRun {
            for line in f.dropin_text.lines() {
                let _ = writeln!(s, "    {line}");
            }
        } else if f.written {
            let _ = writeln!(s, "  drop-in written, `fail2ban-client -t` passed");
        }
        if let Some(e) = &f.error {
            let _ = writeln!(s, "  error: {e}");
        }
        for n in &f.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }
    if let Some(r) = &outcome.real_ip {
        let _ = writeln!(s, "\nnginx real IP: {}", r.path.display());
        if r.unchanged {
            let _ = writeln!(s, "  already up to date");
        } else if outcome.mode == Mode::DryRun {
            let _ = writeln!(
                s,
                "  would write (then `nginx -t`, and reload only if it passes):"
            );
            for line in r.text.lines() {
                let _ = writeln!(s, "    {line}");
            }
        } else {
            let _ = writeln!(
                s,
                "  written; nginx -t {}; {}",
                if r.tested { "passed" } else { "FAILED" },
                if r.reloaded {
                    "nginx reloaded"
                } else {
                    "nginx NOT reloaded"
                }
            );
        }
        if let Some(e) = &r.error {
            let _ = writeln!(s, "  error: {e}");
        }
        for n in &r.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }
    for n in &outcome.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cdn::ProviderRanges;

    fn catalog_with(p: Provider, nets: &[&str]) -> CdnCatalog {
        let mut c = CdnCatalog::bundled();
        let entry = c.providers.get_mut(&p).unwrap();
        let parsed: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        entry.v4 = parsed
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .cloned()
            .collect();
        entry.v6 = parsed
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)))
            .cloned()
            .collect();
        c
    }

    #[test]
    fn refuses_broad_prefixes_empty_lists_unknown_providers_and_ssh() {
        let c = catalog_with(Provider::Cloudflare, &["173.245.48.0/20", "0.0.0.0/0"]);
        assert!(matches!(
            checked_lists(&[Provider::Cloudflare], &c),
            Err(WhitelistError::TooBroad { .. })
        ));
        let c = catalog_with(Provider::Cloudflare, &["173.245.48.0/20", "2400::/19"]);
        assert!(matches!(
            checked_lists(&[Provider::Cloudflare], &c),
            Err(WhitelistError::TooBroad { .. })
        ));
        let c = catalog_with(Provider::Cloudflare, &["10.0.0.0/7"]);
        assert!(checked_lists(&[Provider::Cloudflare], &c).is_err());
        let c = catalog_with(Provider::Cloudflare, &["10.0.0.0/8", "2400::/20"]);
        assert_eq!(checked_lists(&[Provider::Cloudflare], &c).unwrap().len(), 1);
        let c = catalog_with(Provider::Cloudflare, &[]);
        assert!(matches!(
            checked_lists(&[Provider::Cloudflare], &c),
            Err(WhitelistError::EmptyList(Provider::Cloudflare))
        ));
        let mut c = CdnCatalog::bundled();
        c.providers.remove(&Provider::Fastly);
        assert!(matches!(
            checked_lists(&[Provider::Fastly], &c),
            Err(WhitelistError::NoList(Provider::Fastly))
        ));
        assert!(matches!(
            checked_lists(&[], &c),
            Err(WhitelistError::NoProvider { .. })
        ));
        assert!(matches!(
            checked_ports(&[80, 22]),
            Err(WhitelistError::BadPort(22))
        ));
        assert_eq!(checked_ports(&[]).unwrap(), vec![80, 443]);
        let _unused: Option<ProviderRanges> = None;
    }

    #[test]
    fn every_bundled_list_passes_the_safety_checks() {
        let c = CdnCatalog::bundled();
        let lists = checked_lists(Provider::ALL, &c).unwrap();
        assert_eq!(lists.len(), Provider::ALL.len());
    }
}
