//! The CSF back end (ConfigServer Security & Firewall, `--backend csf`, or `auto` where CSF is
//! installed). CSF owns the rules: it rebuilds iptables from its files at every `csf -r`, so a
//! raw rule would be lost. The whitelist therefore lives in CSF's own files:
//!
//! - `csf.allow`: one advanced line per range, restricted to the web ports,
//!   `tcp|in|d=80,443|s=173.245.48.0/20 # origin-agent:cloudflare` (CSF turns it into
//!   `-A ALLOWIN -s NET ! -i lo -p tcp -m multiport --dports 80,443 -j ACCEPT`);
//! - `csf.ignore`: `173.245.48.0/20 # origin-agent:cloudflare`, so lfd never blocks a CDN edge;
//!
//! then `csf -r`. A line is the agent's when it ends in `# origin-agent:PROVIDER` and has exactly
//! the agent's shape; every other byte of both files stays as it was. IPv6 ranges go in only
//! when CSF manages IPv6 (`IPV6 = "1"` in `csf.conf`). The undo writes the files back exactly
//! (byte for byte when nothing else changed them meanwhile) and runs `csf -r` again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::backend::{
    diff_lines, restore_plan, ApplyError, FirewallBackend, NotPersisted, Restored,
};
use super::saves::{run_ok, Saves};
use super::{ipt, Backend, Change, FamilyPlan, ProviderList, WhitelistError, WhitelistRequest};
use crate::addrset::{parse_net, Family};
use crate::cdn::Provider;
use crate::firewall::csf::setting;
use crate::host::{Command, Host};

/// CSF's configuration directory.
pub const DIR: &str = "/etc/csf";
/// The comment that marks a line as the agent's.
pub const TAG: &str = "origin-agent";

pub fn allow_path() -> PathBuf {
    Path::new(DIR).join("csf.allow")
}
pub fn ignore_path() -> PathBuf {
    Path::new(DIR).join("csf.ignore")
}
pub fn conf_path() -> PathBuf {
    Path::new(DIR).join("csf.conf")
}

/// True when CSF is installed (its configuration exists).
pub fn installed(host: &dyn Host) -> bool {
    host.metadata(&conf_path()).is_ok()
}

/// One agent line of `csf.allow` or `csf.ignore`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnLine {
    pub provider: Provider,
    pub net: IpNet,
    /// `80,443` in `csf.allow`; empty in `csf.ignore`.
    pub ports: String,
}

fn tag(p: Provider) -> String {
    format!("# {TAG}:{p}")
}

/// The `csf.allow` line for a range.
pub fn allow_line(p: Provider, net: &IpNet, ports: &str) -> String {
    format!("tcp|in|d={ports}|s={net} {}", tag(p))
}

/// The `csf.ignore` line for a range.
pub fn ignore_line(p: Provider, net: &IpNet) -> String {
    format!("{net} {}", tag(p))
}

/// The agent's line this is, if it is one (its exact shape: anything else is someone's own).
pub fn own_line(line: &str) -> Option<OwnLine> {
    let (body, comment) = line.split_once(" # ")?;
    let provider = Provider::parse(comment.trim_end().strip_prefix(&format!("{TAG}:"))?)?;
    let parsed = if let Some(rest) = body.strip_prefix("tcp|in|d=") {
        let (ports, net) = rest.split_once("|s=")?;
        if ports.is_empty() || !ports.split(',').all(|p| p.parse::<u16>().is_ok()) {
            return None;
        }
        (parse_net(net)?, ports.to_string())
    } else {
        (parse_net(body)?, String::new())
    };
    let own = OwnLine {
        provider,
        net: parsed.0,
        ports: parsed.1,
    };
    let canonical = if own.ports.is_empty() {
        ignore_line(provider, &own.net)
    } else {
        allow_line(provider, &own.net, &own.ports)
    };
    (canonical == line.trim_end()).then_some(own)
}

/// The file without the agent's lines.
pub fn without_own(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| own_line(l).is_none())
        .map(str::to_string)
        .collect()
}

/// The new text of one file: `text` without the agent's lines of the requested providers that
/// are not wanted, plus the wanted lines it lacks appended; everything else byte for byte.
fn rewrite(text: &str, requested: &BTreeSet<Provider>, wanted: &[String]) -> String {
    let want: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    let mut out = String::new();
    for piece in text.split_inclusive('\n') {
        let line = piece.trim_end_matches('\n');
        if let Some(own) = own_line(line) {
            let keep = !requested.contains(&own.provider)
                || (want.contains(line.trim_end()) && seen.insert(line.trim_end().to_string()));
            if !keep {
                continue;
            }
        }
        out.push_str(piece);
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !seen.contains(*w)).collect();
    if !missing.is_empty() && !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for w in missing {
        out.push_str(w);
        out.push('\n');
    }
    out
}

/// The text that puts the agent's lines back as in `saved`: exactly `saved` when nothing else
/// changed in the file since; otherwise the current file with its agent lines replaced.
pub fn restore_text(current: &str, saved: &str) -> String {
    if without_own(current) == without_own(saved) {
        return saved.to_string();
    }
    let mut out: String = without_own(current).into_iter().map(|l| l + "\n").collect();
    for l in saved.lines().filter(|l| own_line(l).is_some()) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The CSF back end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Csf;

/// What a plan writes: the new `csf.allow` and `csf.ignore` texts.
struct Texts {
    allow: String,
    ignore: String,
}

impl Csf {
    fn v6(saves: &Saves) -> bool {
        saves
            .file(&conf_path())
            .and_then(|c| setting(c, "IPV6"))
            .is_some_and(|v| v == "1")
    }

    fn families(saves: &Saves) -> Vec<Family> {
        if Self::v6(saves) {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    fn texts(saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Texts {
        let ports = ipt::ports_text(ports);
        let requested: BTreeSet<Provider> = lists.iter().map(|(p, _, _)| *p).collect();
        let mut allow = Vec::new();
        let mut ignore = Vec::new();
        for family in Self::families(saves) {
            for (p, nets) in ipt::wanted_of(lists, family) {
                for n in &nets {
                    allow.push(allow_line(p, n, &ports));
                    ignore.push(ignore_line(p, n));
                }
            }
        }
        Texts {
            allow: rewrite(
                saves.file(&allow_path()).unwrap_or_default(),
                &requested,
                &allow,
            ),
            ignore: rewrite(
                saves.file(&ignore_path()).unwrap_or_default(),
                &requested,
                &ignore,
            ),
        }
    }
}

fn csf_restart() -> Command {
    Command::new("csf", &["-r"]).timeout(Duration::from_secs(120))
}

/// The own lines of a text, as a set.
fn owned(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| own_line(l).is_some())
        .map(str::to_string)
        .collect()
}

/// `--- path` / `+++` style lines of the agent's lines that change.
fn change_lines(label: &str, old: &str, new: &str) -> String {
    let (a, b) = (owned(old), owned(new));
    let mut s = String::new();
    for l in a.difference(&b) {
        s.push_str(&format!("{label}: - {l}\n"));
    }
    for l in b.difference(&a) {
        s.push_str(&format!("{label}: + {l}\n"));
    }
    s
}

impl FirewallBackend for Csf {
    fn kind(&self) -> Backend {
        Backend::Csf
    }

    fn describe(&self) -> String {
        format!(
            "back end: csf (CSF owns the rules and rebuilds them at every restart: tagged web-port lines in {} and {}, then `csf -r`)",
            allow_path().display(),
            ignore_path().display()
        )
    }

    fn read(&self, host: &dyn Host) -> Result<Saves, WhitelistError> {
        Saves::read(host)?.with_files(host, &[allow_path(), ignore_path(), conf_path()])
    }

    fn notes(&self, saves: &Saves) -> Vec<String> {
        if Self::v6(saves) {
            Vec::new()
        } else {
            vec![format!(
                "IPv6 left out: CSF does not manage IPv6 here (IPV6 = \"0\" in {})",
                conf_path().display()
            )]
        }
    }

    fn plan(&self, saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Vec<FamilyPlan> {
        let old_allow = saves.file(&allow_path()).unwrap_or_default();
        let old_ignore = saves.file(&ignore_path()).unwrap_or_default();
        let texts = Self::texts(saves, lists, ports);
        let now = owned(old_allow);
        let then = owned(&texts.allow);
        let mut plans = Vec::new();
        for family in Self::families(saves) {
            let of = |set: &BTreeSet<String>, other: &BTreeSet<String>| -> Vec<Change> {
                set.difference(other)
                    .filter_map(|l| own_line(l))
                    .filter(|o| Family::of(&o.net) == family)
                    .map(|o| Change {
                        provider: o.provider,
                        net: o.net,
                    })
                    .collect()
            };
            let add = of(&then, &now);
            let remove = of(&now, &then);
            let unchanged = now
                .intersection(&then)
                .filter_map(|l| own_line(l))
                .filter(|o| Family::of(&o.net) == family)
                .count();
            let script: String = [
                change_lines("csf.allow", old_allow, &texts.allow),
                change_lines("csf.ignore", old_ignore, &texts.ignore),
            ]
            .concat()
            .lines()
            .filter(|l| {
                l.split_once(": ")
                    .and_then(|(_, rest)| rest.get(2..))
                    .and_then(own_line)
                    .is_some_and(|o| Family::of(&o.net) == family)
            })
            .map(|l| format!("{l}\n"))
            .collect();
            plans.push(FamilyPlan {
                family,
                add,
                remove,
                unchanged,
                structure: Vec::new(),
                script,
                pre_script: String::new(),
            });
        }
        plans
    }

    fn commands(&self, plans: &[FamilyPlan]) -> Vec<String> {
        if plans.iter().all(FamilyPlan::is_empty) {
            return Vec::new();
        }
        vec![
            format!("write {}", allow_path().display()),
            format!("write {}", ignore_path().display()),
            csf_restart().key(),
        ]
    }

    fn apply(
        &self,
        host: &dyn Host,
        _plans: &[FamilyPlan],
        before: &Saves,
        lists: &[ProviderList],
        ports: &[u16],
    ) -> Result<(), ApplyError> {
        let texts = Self::texts(before, lists, ports);
        let (allow, ignore) = (allow_path(), ignore_path());
        if let Err(e) = host.write_atomic(&allow, texts.allow.as_bytes()) {
            return Err(ApplyError::NotApplied {
                source: e.into(),
                what: "csf.allow was not changed".into(),
            });
        }
        let partial = |source: WhitelistError, what: &str| ApplyError::Partial {
            source,
            what: what.to_string(),
        };
        if before.file(&ignore) != Some(texts.ignore.as_str()) {
            host.write_atomic(&ignore, texts.ignore.as_bytes())
                .map_err(|e| partial(e.into(), "csf.ignore was not changed"))?;
        }
        run_ok(host, &csf_restart())
            .map(drop)
            .map_err(|e| partial(e, "CSF did not restart with the new files"))
    }

    fn restore_to(&self, host: &dyn Host, before: &Saves) -> Restored {
        let mut written = Vec::new();
        for path in [allow_path(), ignore_path()] {
            let current = match host.read(&path) {
                Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                Err(e) if e.is_not_found() => None,
                Err(e) => {
                    return Restored::failed("CSF NOT restored", "csf (cannot read)", e.into())
                }
            };
            let target = match (before.files.get(&path).cloned().flatten(), &current) {
                (Some(saved), Some(cur)) => Some(restore_text(cur, &saved)),
                (saved, _) => saved,
            };
            if target == current {
                continue;
            }
            let done = match &target {
                Some(t) => host.write_atomic(&path, t.as_bytes()),
                None => host.remove_file(&path),
            };
            if let Err(e) = done {
                return Restored::failed("CSF NOT restored", path.display().to_string(), e.into());
            }
            written.push(path.display().to_string());
        }
        // Always rebuild: an apply that failed at `csf -r` may have left the rules half-built.
        match run_ok(host, &csf_restart()) {
            Ok(_) if written.is_empty() => Restored::new("nothing had changed (csf -r run)"),
            Ok(_) => Restored::new(format!("{} restored, csf -r", written.join(", "))),
            Err(e) => Restored::failed("CSF files restored, csf -r FAILED", "csf -r", e),
        }
    }

    fn rollback_plans(&self, current: &Saves, before: &Saves) -> Vec<FamilyPlan> {
        let mut script = String::new();
        for (label, path) in [("csf.allow", allow_path()), ("csf.ignore", ignore_path())] {
            let cur = current.file(&path).unwrap_or_default();
            let old = before.file(&path).unwrap_or_default();
            script.push_str(&change_lines(label, cur, &restore_text(cur, old)));
        }
        vec![restore_plan(
            Family::V4,
            "restore CSF's files as saved, then csf -r",
            script,
        )]
    }

    fn other_changes(&self, before: &Saves, after: &Saves) -> Vec<String> {
        let mut out = Vec::new();
        let mut nets: BTreeSet<IpNet> = BTreeSet::new();
        for s in [before, after] {
            if let Some(t) = s.file(&allow_path()) {
                nets.extend(t.lines().filter_map(own_line).map(|o| o.net));
            }
        }
        for family in [Family::V4, Family::V6] {
            if let (Some(b), Some(a)) = (before.get(family), after.get(family)) {
                diff_lines(
                    &mut out,
                    family.label(),
                    without_own_rules(b, &nets),
                    without_own_rules(a, &nets),
                );
            }
        }
        for (label, path) in [
            ("csf.allow", allow_path()),
            ("csf.ignore", ignore_path()),
            ("csf.conf", conf_path()),
        ] {
            let (b, a) = (before.file(&path), after.file(&path));
            let strip = |t: Option<&str>| t.map(without_own).unwrap_or_default();
            diff_lines(&mut out, label, strip(b), strip(a));
        }
        out
    }

    fn persist(&self, _host: &dyn Host, _req: &WhitelistRequest) -> Result<String, NotPersisted> {
        Ok(format!(
            "CSF's own files ({}, {}): csf rebuilds the rules from them at every start",
            allow_path().display(),
            ignore_path().display()
        ))
    }
}

/// `iptables-save` lines (counters stripped) without the ALLOWIN rules CSF built from the
/// agent's lines.
fn without_own_rules(save: &str, nets: &BTreeSet<IpNet>) -> Vec<String> {
    ipt::normalized(save)
        .lines()
        .filter(|l| {
            let words = crate::firewall::iptables::tokenize(l);
            let src = words
                .iter()
                .position(|w| w == "-s")
                .and_then(|i| words.get(i + 1))
                .and_then(|s| parse_net(s));
            !(words.get(1).is_some_and(|c| c == "ALLOWIN")
                && src.is_some_and(|n| nets.contains(&n)))
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn own_lines_are_recognised_only_in_the_agents_exact_shape() {
        let l = "tcp|in|d=80,443|s=173.245.48.0/20 # origin-agent:cloudflare";
        let o = own_line(l).unwrap();
        assert_eq!(
            (o.provider, o.ports.as_str()),
            (Provider::Cloudflare, "80,443")
        );
        assert!(own_line("173.245.48.0/20 # origin-agent:cloudflare").is_some());
        for foreign in [
            "173.245.48.0/20 # cloudflare",
            "tcp|in|d=22|s=173.245.48.0/20 # origin-agent:nobody",
            "tcp|in|d=80|s=173.245.48.0/20 # origin-agent:cloudflare extra",
            "tcp|out|d=80|s=173.245.48.0/20 # origin-agent:cloudflare",
            "1.2.3.4 # origin-agent:cloudflare - Mon Dec  1",
        ] {
            assert!(own_line(foreign).is_none(), "{foreign}");
        }
    }

    #[test]
    fn rewrite_keeps_foreign_bytes_removes_stale_ranges_and_is_idempotent() {
        let old = "# header  \n1.2.3.4 # admin\ntcp|in|d=80,443|s=10.0.0.0/8 # origin-agent:cloudflare\ntcp|in|d=80,443|s=151.101.0.0/16 # origin-agent:fastly\nno newline at end";
        let req: BTreeSet<Provider> = [Provider::Cloudflare].into();
        let want = vec![allow_line(
            Provider::Cloudflare,
            &"173.245.48.0/20".parse().unwrap(),
            "80,443",
        )];
        let new = rewrite(old, &req, &want);
        assert_eq!(
            new,
            "# header  \n1.2.3.4 # admin\ntcp|in|d=80,443|s=151.101.0.0/16 # origin-agent:fastly\nno newline at end\ntcp|in|d=80,443|s=173.245.48.0/20 # origin-agent:cloudflare\n"
        );
        assert_eq!(rewrite(&new, &req, &want), new);
        assert_eq!(restore_text(&new, old), old);
        // Someone else edited the file meanwhile: their line stays, the agent's go back.
        let edited = format!("{new}5.6.7.8 # later\n");
        let back = restore_text(&edited, old);
        assert!(back.contains("5.6.7.8 # later\n") && back.contains("s=10.0.0.0/8"));
        assert!(!back.contains("173.245.48.0/20"));
    }
}
