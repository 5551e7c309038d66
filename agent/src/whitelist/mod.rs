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
//! - [`csf`]: `--backend csf` (or auto where CSF is installed), tagged lines in CSF's own files
//!   and `csf -r`;
//! - [`firewalld`]: `--backend firewalld` (or auto where firewalld runs), ipsets and rich rules
//!   in its permanent configuration, then a reload;
//! - [`current`]: keeping the last whitelist current (after `cdn update`, from the daemon);
//! - [`managers`]: FireHOL, Shorewall, APF recognised: refused, with the lines to add;
//! - [`state`]: the apply lock and the saved "before" state in the state directory;
//! - [`backend`]: the [`backend::FirewallBackend`] trait every firewall implements, with the
//!   typed apply and undo results;
//! - [`saves`]: the firewall as read before and after (tool printouts, managed files);
//! - [`render`]: the human text.
//!
//! This file keeps the transaction only: lock → save → plan → apply → verify → undo. Every
//! command and every file write goes through the [`Host`] seam, so tests run the real tools
//! inside a network namespace with a host that prefixes `ip netns exec`, and the fixture host
//! scripts a failure at any step and records the exact undo.

pub mod backend;
pub mod csf;
pub mod current;
pub mod f2b;
pub mod firewalld;
pub mod ipsets;
pub mod ipt;
pub mod managers;
pub mod nft;
pub mod realip;
mod render;
pub mod saves;
pub mod state;
pub mod ufw;

pub use render::render;

use std::collections::HashSet;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addrset::{AddrSet, Family};
use crate::cdn::{CdnCatalog, Provider};
use crate::firewall::eval::{evaluate, Ruleset};
use crate::host::{Command, Host, HostError};

use backend::{FirewallBackend, Restored};
use saves::Saves;

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
    Firewalld,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
            Backend::Ufw => "ufw",
            Backend::Csf => "csf",
            Backend::Firewalld => "firewalld",
        }
    }

    pub fn parse(name: &str) -> Option<Backend> {
        match name.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Backend::Auto),
            "iptables" => Some(Backend::Iptables),
            "nftables" | "nft" => Some(Backend::Nftables),
            "ufw" => Some(Backend::Ufw),
            "csf" => Some(Backend::Csf),
            "firewalld" => Some(Backend::Firewalld),
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
    #[error("{manager} owns this host's firewall ({evidence}) and rebuilds the rules at every start: a raw change would be wiped, so nothing was changed. Add these lines to {file}:\n{lines}")]
    ManagedBy {
        manager: &'static str,
        evidence: String,
        file: &'static str,
        lines: String,
    },
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

/// Runs the request: a dry run, an apply (save, change, verify, undo on failure) or a rollback.
pub fn run(
    host: &dyn Host,
    req: &WhitelistRequest,
    catalog: &CdnCatalog,
) -> Result<WhitelistOutcome, WhitelistError> {
    if req.apply && req.rollback {
        return Err(WhitelistError::Conflicting);
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
    if let Some(m) = managers::detect(host) {
        let lines = managers::lines(&m, &lists, &ports).join("\n");
        if req.apply {
            return Err(WhitelistError::ManagedBy {
                manager: m.name,
                evidence: m.evidence,
                file: m.file,
                lines,
            });
        }
        notes.push(format!(
            "{} owns this host's firewall ({}): --apply refuses to change raw rules it would wipe; add to {}:\n{lines}",
            m.name, m.evidence, m.file
        ));
    }
    let (fw, why) = resolve(host, req.backend)?;
    let before = fw.read(host)?;
    let mut out = WhitelistOutcome::new(mode, fw.kind(), req, &ports);
    out.notes = notes;
    out.providers = lists.iter().map(|(p, _, _)| *p).collect();
    out.notes.push(fw.describe());
    out.notes.extend(why);
    out.notes.extend(fw.notes(&before));
    out.plans = fw.plan(&before, &lists, &ports);
    out.commands = fw.commands(&out.plans);
    if !req.apply {
        return Ok(out);
    }
    if out.plans.iter().all(FamilyPlan::is_empty) {
        out.notes
            .push("nothing to change: the firewall already has exactly this whitelist".into());
        out.verification = Some(verify(host, fw.as_ref(), &before, &before, &lists, &ports));
        if req.persist && out.verification.as_ref().is_some_and(|v| v.ok()) {
            // Applied earlier without --persist: save it now, and mark that apply as saved so
            // that its rollback saves the firewall it restores too.
            let persisted = fw.persist(host, req);
            if persisted.is_ok() {
                if let Some((_, mut earlier)) = state::load(&req.state_dir)? {
                    earlier.persisted = true;
                    fw.record(&mut earlier, req, true);
                    state::save(&req.state_dir, &earlier)?;
                }
            }
            out.persisted = Some(persisted.unwrap_or_else(|not| {
                out.notes.push(not.to_string());
                not.to_string()
            }));
        }
        return Ok(out);
    }
    let mut saved = state::SavedState {
        version: 1,
        taken_at: host.now().to_string(),
        backend: fw.kind(),
        providers: out.providers.clone(),
        ports: ports.clone(),
        complete: false,
        iptables: before.v4.clone(),
        ip6tables: before.v6.clone(),
        nft_json: before.nft.clone(),
        nft_chain: None,
        ufw_added: before.ufw.clone(),
        ipset: before.ipset.clone(),
        persisted: false,
        nft_conf: None,
        files: before.files.clone(),
    };
    fw.record(&mut saved, req, false);
    out.state_file = Some(state::save(&req.state_dir, &saved)?);

    if let Err(e) = fw.apply(host, &out.plans, &before, &lists, &ports) {
        out.failure = Some(e.to_string());
        if e.partial() {
            out.rolled_back = Some(undo(fw.as_ref(), host, &before, &mut out.notes));
        }
        if let Err(e) = state::retire(&req.state_dir) {
            out.notes.push(e.to_string());
        }
        return Ok(out);
    }
    let after = match fw.read(host) {
        Ok(a) => a,
        Err(e) => {
            out.failure = Some(format!("could not read the firewall after the change: {e}"));
            out.rolled_back = Some(undo(fw.as_ref(), host, &before, &mut out.notes));
            return Ok(out);
        }
    };
    let verification = verify(host, fw.as_ref(), &before, &after, &lists, &ports);
    let ok = verification.ok();
    out.verification = Some(verification);
    if !ok {
        out.rolled_back = Some(undo(fw.as_ref(), host, &before, &mut out.notes));
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
        let persisted_ok = complete.persisted;
        fw.record(&mut complete, req, persisted_ok);
        out.persisted = Some(persisted.unwrap_or_else(|not| {
            out.notes.push(not.to_string());
            not.to_string()
        }));
        state::save(&req.state_dir, &complete)?;
    }
    Ok(out)
}

/// Runs a back end's undo; its failures become notes. Returns the summary.
fn undo(
    fw: &dyn FirewallBackend,
    host: &dyn Host,
    before: &Saves,
    notes: &mut Vec<String>,
) -> String {
    let Restored { summary, failures } = fw.restore_to(host, before);
    notes.extend(failures.iter().map(ToString::to_string));
    summary
}

/// The back end for a request, and (auto) why: the one asked for; or the firewall manager
/// that owns the rules (CSF); or nftables when a native nftables chain decides; else iptables.
fn resolve(
    host: &dyn Host,
    backend: Backend,
) -> Result<(Box<dyn FirewallBackend>, Option<String>), WhitelistError> {
    let (fw, why) = resolve_inner(host, backend)?;
    let why = (backend == Backend::Auto).then_some(why);
    Ok((fw, why))
}

fn resolve_inner(
    host: &dyn Host,
    backend: Backend,
) -> Result<(Box<dyn FirewallBackend>, String), WhitelistError> {
    match backend {
        Backend::Ufw => return Ok((Box::new(ufw::Ufw), String::new())),
        Backend::Csf => return Ok((Box::new(csf::Csf), String::new())),
        Backend::Firewalld => return Ok((Box::new(firewalld::Firewalld), String::new())),
        Backend::Auto if csf::installed(host) => {
            return Ok((
                Box::new(csf::Csf),
                format!(
                    "auto chose csf: {} exists, and CSF rebuilds the rules from its own files at every restart",
                    csf::conf_path().display()
                ),
            ))
        }
        Backend::Auto if firewalld::running(host) => {
            return Ok((
                Box::new(firewalld::Firewalld),
                "auto chose firewalld: it is running (firewall-cmd --state), and it rebuilds its nftables table at every reload".to_string(),
            ))
        }
        _ => {}
    }
    let saves = Saves::read(host)?;
    let chain = saves
        .nft_doc()
        .and_then(|doc| nft::deciding_chain(&doc, &saves.iptables_nft_tables()));
    match (backend, chain) {
        (Backend::Nftables | Backend::Auto, Some(chain)) => {
            let why = format!(
                "auto chose nftables: no firewall manager with a back end here, and the native chain {} {} {} decides",
                chain.family, chain.table, chain.name
            );
            Ok((Box::new(nft::Nftables { chain }), why))
        }
        (Backend::Nftables, None) => Err(WhitelistError::NoNftChain),
        _ if saves.v4.is_none() => Err(WhitelistError::Host(HostError::CommandMissing {
            command: "iptables-save".into(),
        })),
        _ => Ok((
            Box::new(ipt::Iptables),
            "auto chose iptables: no firewall manager with a back end here, and no native nftables chain decides".into(),
        )),
    }
}

/// The back end that made a saved state.
fn backend_of_state(saved: &state::SavedState) -> Result<Box<dyn FirewallBackend>, WhitelistError> {
    match (saved.backend, &saved.nft_chain) {
        (Backend::Iptables, _) => Ok(Box::new(ipt::Iptables)),
        (Backend::Nftables, Some(c)) => Ok(Box::new(nft::Nftables { chain: c.clone() })),
        (Backend::Ufw, _) => Ok(Box::new(ufw::Ufw)),
        (Backend::Csf, _) => Ok(Box::new(csf::Csf)),
        (Backend::Firewalld, _) => Ok(Box::new(firewalld::Firewalld)),
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
    let fw = backend_of_state(&saved)?;
    let what = undo(fw.as_ref(), host, &Saves::from_state(&saved), notes);
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
    let fw = backend_of_state(&saved)?;
    let mut out = WhitelistOutcome::new(Mode::Rollback, saved.backend, req, &saved.ports);
    out.providers = saved.providers.clone();
    out.state_file = Some(path);
    let before = Saves::from_state(&saved);
    let current = fw.read(host)?;
    out.plans = fw.rollback_plans(&current, &before);
    out.commands = fw.commands(&out.plans);
    let Restored { summary, failures } = fw.restore_to(host, &before);
    out.notes.extend(failures.iter().map(ToString::to_string));
    out.notes.push(format!("rollback: {summary}"));
    let after = fw.read(host)?;
    let changed = fw.other_changes(&before, &after);
    if !changed.is_empty() {
        out.notes.push(format!(
            "the rule set differs from the saved one outside the agent's objects (changed by someone else since the apply; left as it is): {}",
            changed.join("; ")
        ));
    }
    if saved.persisted && failures.is_empty() {
        // Persist where the apply persisted, whatever this request says.
        let same_place = WhitelistRequest {
            nft_conf: saved.nft_conf.clone(),
            ..req.clone()
        };
        out.persisted = Some(fw.persist(host, &same_place).unwrap_or_else(|not| {
            out.notes.push(not.to_string());
            not.to_string()
        }));
    }
    if failures.is_empty() {
        out.applied = true;
        state::retire(&req.state_dir)?;
    } else {
        out.failure = Some("the rollback could not restore everything".to_string());
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
    fw: &dyn FirewallBackend,
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

#[cfg(test)]
mod transaction_tests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cdn::ProviderRanges;

    pub(super) fn catalog_with(p: Provider, nets: &[&str]) -> CdnCatalog {
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
