//! The firewalld back end (`--backend firewalld`, or `auto` where firewalld runs). firewalld owns
//! the `inet firewalld` nftables table and rebuilds it at every reload, so a raw rule there is
//! silently lost. The whitelist lives in firewalld's permanent configuration instead, and a
//! `--reload` makes it the runtime one too:
//!
//! - one `hash:net` ipset per provider and family, `oa-cdn-cloudflare-v4` (`family=inet6` for
//!   IPv6), filled and trimmed entry by entry (never deleted while a rule refers to it: the next
//!   reload would fail and leave the host with no firewall at all);
//! - rich rules in the default zone, one per set and port,
//!   `rule family="ipv4" source ipset="oa-cdn-cloudflare-v4" port port="80" protocol="tcp" accept`.
//!   Rich rules, not the set as a zone source: a source zone captures every packet from those
//!   addresses (SSH included) and judges it by its own services alone.
//!
//! The undo is exact at the file level: every file of `/etc/firewalld` is written back as it was,
//! files that were not there (the zone override firewalld copies from `/usr/lib/firewalld`, the
//! new ipsets, every `.xml.old` backup) are removed, then `firewall-cmd --reload`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::backend::{diff_lines, ApplyError, FirewallBackend, NotPersisted, Restored};
use super::saves::{run_ok, Saves};
use super::{ipt, Backend, Change, FamilyPlan, ProviderList, WhitelistError, WhitelistRequest};
use crate::addrset::Family;
use crate::cdn::Provider;
use crate::firewall::firewalld::conf_default_zone;
use crate::host::{Command, FileKind, Host};

/// firewalld's administrator configuration.
pub const ETC: &str = "/etc/firewalld";
/// The most files of `/etc/firewalld` saved for the undo.
const MAX_FILES: usize = 2000;
/// The prefix of the agent's ipsets.
pub const PREFIX: &str = "oa-cdn-";

/// The set of a provider and family.
pub fn set_name(p: Provider, family: Family) -> String {
    let f = if family == Family::V4 { "v4" } else { "v6" };
    format!("{PREFIX}{p}-{f}")
}

/// The rich rule for a set and port, in the form `--list-rich-rules` prints it.
pub fn rich_rule(family: Family, set: &str, port: u16) -> String {
    let fam = if family == Family::V4 { "ipv4" } else { "ipv6" };
    format!(
        "rule family=\"{fam}\" source ipset=\"{set}\" port port=\"{port}\" protocol=\"tcp\" accept"
    )
}

fn fwcmd(args: &[&str]) -> Command {
    Command::new("firewall-cmd", args).timeout(Duration::from_secs(60))
}

/// True when firewalld runs (`firewall-cmd --state` says `running`).
pub fn running(host: &dyn Host) -> bool {
    host.run(&fwcmd(&["--state"]))
        .is_ok_and(|o| o.success() && o.stdout_text().trim() == "running")
}

/// Every file under `/etc/firewalld` (bounded), for the exact undo.
fn tree(host: &dyn Host) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from(ETC)];
    while let Some(d) = dirs.pop() {
        for name in host.read_dir(&d).unwrap_or_default() {
            let p = d.join(&name);
            match host.metadata(&p).map(|m| m.kind) {
                Ok(FileKind::Dir) => dirs.push(p),
                Ok(FileKind::File) if out.len() < MAX_FILES => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// The `<entry>` values of an ipset XML (the auditor's reader; none when it does not parse).
fn entries(xml: &str) -> BTreeSet<IpNet> {
    crate::firewall::firewalld::parse_ipset("ipset", xml).unwrap_or_default()
}

/// The agent's rich rules in a zone XML, as `rich_rule` writes them.
fn own_rules(xml: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for block in xml.split("<rule").skip(1) {
        let block = block.split("</rule>").next().unwrap_or("");
        let attr = |tag: &str, name: &str| -> Option<String> {
            let at = block.find(tag)?;
            let rest = &block[at..];
            let key = format!("{name}=\"");
            let i = rest.find(&key)? + key.len();
            Some(rest[i..].split('"').next()?.to_string())
        };
        let Some(set) = attr("<source", "ipset").filter(|s| s.starts_with(PREFIX)) else {
            continue;
        };
        let fam = if block.contains("family=\"ipv6\"") {
            Family::V6
        } else {
            Family::V4
        };
        if let Some(port) = attr("<port", "port").and_then(|p| p.parse().ok()) {
            out.insert(rich_rule(fam, &set, port));
        }
    }
    out
}

/// A zone XML without the agent's rule blocks (what someone else owns), one trimmed line each.
fn foreign_lines(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<Vec<String>> = None;
    for l in xml.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if l.starts_with("<rule") {
            block = Some(vec![l.to_string()]);
        } else if let Some(b) = block.as_mut() {
            b.push(l.to_string());
        } else {
            out.push(l.to_string());
        }
        if l.starts_with("</rule>") {
            if let Some(b) = block.take() {
                if !b.iter().any(|x| x.contains(&format!("ipset=\"{PREFIX}"))) {
                    out.extend(b);
                }
            }
        }
    }
    out
}

/// The firewalld back end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Firewalld;

impl Firewalld {
    fn default_zone(saves: &Saves) -> String {
        saves
            .files
            .iter()
            .find(|(p, _)| p.as_path() == Path::new(ETC).join("firewalld.conf"))
            .and_then(|(_, c)| c.as_deref())
            .map_or_else(|| "public".to_string(), conf_default_zone)
    }

    fn zone_xml(saves: &Saves) -> String {
        let z = Self::default_zone(saves);
        saves
            .file(&Path::new(ETC).join(format!("zones/{z}.xml")))
            .or_else(|| saves.file(&PathBuf::from(format!("/usr/lib/firewalld/zones/{z}.xml"))))
            .unwrap_or_default()
            .to_string()
    }

    fn set_entries(saves: &Saves, set: &str) -> Option<BTreeSet<IpNet>> {
        saves
            .file(&Path::new(ETC).join(format!("ipsets/{set}.xml")))
            .map(entries)
    }
}

/// What an apply does, step by step.
struct Steps {
    new_sets: Vec<(String, Family)>,
    add: BTreeMap<String, Vec<IpNet>>,
    remove: BTreeMap<String, Vec<IpNet>>,
    add_rules: Vec<String>,
    remove_rules: Vec<String>,
    plans: Vec<FamilyPlan>,
}

fn steps(saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Steps {
    let current_rules = own_rules(&Firewalld::zone_xml(saves));
    let requested: BTreeSet<Provider> = lists.iter().map(|(p, _, _)| *p).collect();
    let mut s = Steps {
        new_sets: Vec::new(),
        add: BTreeMap::new(),
        remove: BTreeMap::new(),
        add_rules: Vec::new(),
        remove_rules: Vec::new(),
        plans: Vec::new(),
    };
    let mut wanted_rules = BTreeSet::new();
    for family in [Family::V4, Family::V6] {
        let mut plan = FamilyPlan {
            family,
            add: Vec::new(),
            remove: Vec::new(),
            unchanged: 0,
            structure: Vec::new(),
            script: String::new(),
            pre_script: String::new(),
        };
        for (p, nets) in ipt::wanted_of(lists, family) {
            let set = set_name(p, family);
            let have = Firewalld::set_entries(saves, &set);
            if have.is_none() && nets.is_empty() {
                continue;
            }
            let have = have.unwrap_or_else(|| {
                s.new_sets.push((set.clone(), family));
                plan.structure
                    .push(format!("new permanent ipset {set} (hash:net)"));
                BTreeSet::new()
            });
            let want: BTreeSet<IpNet> = nets.iter().map(IpNet::trunc).collect();
            let add: Vec<IpNet> = want.difference(&have).copied().collect();
            let remove: Vec<IpNet> = have.difference(&want).copied().collect();
            plan.unchanged += want.intersection(&have).count();
            plan.add.extend(add.iter().map(|n| Change {
                provider: p,
                net: *n,
            }));
            plan.remove.extend(remove.iter().map(|n| Change {
                provider: p,
                net: *n,
            }));
            if !add.is_empty() {
                s.add.insert(set.clone(), add);
            }
            if !remove.is_empty() {
                s.remove.insert(set.clone(), remove);
            }
            if !nets.is_empty() {
                for port in ports {
                    wanted_rules.insert(rich_rule(family, &set, *port));
                }
            }
        }
        s.plans.push(plan);
    }
    for r in wanted_rules.difference(&current_rules) {
        s.add_rules.push(r.clone());
    }
    for r in current_rules.difference(&wanted_rules) {
        let of_requested = requested
            .iter()
            .any(|p| r.contains(&format!("\"{PREFIX}{p}-")));
        if of_requested {
            s.remove_rules.push(r.clone());
        }
    }
    let zone = Firewalld::default_zone(saves);
    for plan in &mut s.plans {
        let fam = if plan.family == Family::V4 {
            "ipv4"
        } else {
            "ipv6"
        };
        let mut script = String::new();
        for (set, f) in &s.new_sets {
            if *f == plan.family {
                let opt = if *f == Family::V4 { "inet" } else { "inet6" };
                script.push_str(&format!("firewall-cmd --permanent --new-ipset={set} --type=hash:net --option=family={opt}\n"));
            }
        }
        for (set, nets) in s.add.iter().filter(|(k, _)| {
            k.ends_with(if plan.family == Family::V4 {
                "-v4"
            } else {
                "-v6"
            })
        }) {
            script.push_str(&format!("firewall-cmd --permanent --ipset={set} --add-entries-from-file=FILE   # {} entries\n", nets.len()));
        }
        for (set, nets) in s.remove.iter().filter(|(k, _)| {
            k.ends_with(if plan.family == Family::V4 {
                "-v4"
            } else {
                "-v6"
            })
        }) {
            script.push_str(&format!("firewall-cmd --permanent --ipset={set} --remove-entries-from-file=FILE   # {} entries\n", nets.len()));
        }
        for r in s
            .add_rules
            .iter()
            .filter(|r| r.contains(&format!("family=\"{fam}\"")))
        {
            script.push_str(&format!(
                "firewall-cmd --permanent --zone={zone} --add-rich-rule='{r}'\n"
            ));
        }
        for r in s
            .remove_rules
            .iter()
            .filter(|r| r.contains(&format!("family=\"{fam}\"")))
        {
            script.push_str(&format!(
                "firewall-cmd --permanent --zone={zone} --remove-rich-rule='{r}'\n"
            ));
        }
        plan.script = script;
    }
    s
}

impl FirewallBackend for Firewalld {
    fn kind(&self) -> Backend {
        Backend::Firewalld
    }

    fn describe(&self) -> String {
        "back end: firewalld (ipsets and rich rules in the default zone, in the permanent configuration, then firewall-cmd --reload: firewalld rebuilds its nftables table at every reload)".to_string()
    }

    fn read(&self, host: &dyn Host) -> Result<Saves, WhitelistError> {
        let mut files = tree(host);
        let zone_conf =
            Saves::default().with_files(host, &[Path::new(ETC).join("firewalld.conf")])?;
        let z = Firewalld::default_zone(&zone_conf);
        files.push(PathBuf::from(format!("/usr/lib/firewalld/zones/{z}.xml")));
        Saves::read(host)?.with_files(host, &files)
    }

    fn plan(&self, saves: &Saves, lists: &[ProviderList], ports: &[u16]) -> Vec<FamilyPlan> {
        steps(saves, lists, ports).plans
    }

    fn commands(&self, plans: &[FamilyPlan]) -> Vec<String> {
        let mut c: Vec<String> = plans
            .iter()
            .flat_map(|p| p.script.lines().map(str::to_string))
            .collect();
        if !c.is_empty() {
            c.push("firewall-cmd --reload".into());
        }
        c
    }

    fn apply(
        &self,
        host: &dyn Host,
        _plans: &[FamilyPlan],
        before: &Saves,
        lists: &[ProviderList],
        ports: &[u16],
    ) -> Result<(), ApplyError> {
        let s = steps(before, lists, ports);
        let zone = Firewalld::default_zone(before);
        let partial = |source: WhitelistError| ApplyError::Partial {
            source,
            what: "the permanent configuration was changed only in part".into(),
        };
        for (set, family) in &s.new_sets {
            let opt = if *family == Family::V4 {
                "family=inet"
            } else {
                "family=inet6"
            };
            let new = format!("--new-ipset={set}");
            let o = format!("--option={opt}");
            run_ok(host, &fwcmd(&["--permanent", &new, "--type=hash:net", &o])).map_err(partial)?;
        }
        for (verb, map) in [("add", &s.add), ("remove", &s.remove)] {
            for (set, nets) in map {
                let file = PathBuf::from(format!("/run/origin-agent-{set}.{verb}"));
                let text: String = nets.iter().map(|n| format!("{n}\n")).collect();
                host.write_atomic(&file, text.as_bytes())
                    .map_err(|e| partial(e.into()))?;
                let ipset = format!("--ipset={set}");
                let from = format!("--{verb}-entries-from-file={}", file.display());
                let done = run_ok(host, &fwcmd(&["--permanent", &ipset, &from]));
                let _ = host.remove_file(&file);
                done.map_err(partial)?;
            }
        }
        let z = format!("--zone={zone}");
        for (verb, rules) in [
            ("--add-rich-rule", &s.add_rules),
            ("--remove-rich-rule", &s.remove_rules),
        ] {
            for r in rules {
                let arg = format!("{verb}={r}");
                run_ok(host, &fwcmd(&["--permanent", &z, &arg])).map_err(partial)?;
            }
        }
        run_ok(host, &fwcmd(&["--reload"])).map_err(partial)?;
        Ok(())
    }

    fn restore_to(&self, host: &dyn Host, before: &Saves) -> Restored {
        let saved: BTreeMap<&PathBuf, &Option<String>> = before
            .files
            .iter()
            .filter(|(p, _)| p.starts_with(ETC))
            .collect();
        let mut changed = 0;
        for path in tree(host) {
            if saved.get(&path).is_none_or(|c| c.is_none()) {
                if let Err(e) = host.remove_file(&path) {
                    return Restored::failed(
                        "firewalld NOT restored",
                        path.display().to_string(),
                        e.into(),
                    );
                }
                changed += 1;
            }
        }
        for (path, content) in &saved {
            let Some(content) = content else { continue };
            let now = host.read(path).ok();
            if now.as_deref() != Some(content.as_bytes()) {
                if let Err(e) = host.write_atomic(path, content.as_bytes()) {
                    return Restored::failed(
                        "firewalld NOT restored",
                        path.display().to_string(),
                        e.into(),
                    );
                }
                changed += 1;
            }
        }
        if let Err(e) = run_ok(host, &fwcmd(&["--reload"])) {
            return Restored::failed(
                "firewalld files restored, --reload FAILED",
                "firewall-cmd --reload",
                e,
            );
        }
        if !running(host) {
            return Restored::failed(
                "firewalld files restored, but firewalld is not running",
                "firewall-cmd --state",
                WhitelistError::Command {
                    command: "firewall-cmd --state".into(),
                    message: "not running".into(),
                },
            );
        }
        if changed == 0 {
            Restored::new("nothing had changed (firewall-cmd --reload run)")
        } else {
            Restored::new(format!(
                "/etc/firewalld restored ({changed} files), firewall-cmd --reload"
            ))
        }
    }

    fn rollback_plans(&self, current: &Saves, before: &Saves) -> Vec<FamilyPlan> {
        let mut script = String::new();
        for (p, c) in &current.files {
            if !p.starts_with(ETC) {
                continue;
            }
            match before.files.get(p) {
                Some(b) if b == c => {}
                Some(Some(_)) => script.push_str(&format!("write back {}\n", p.display())),
                _ if c.is_some() => script.push_str(&format!("remove {}\n", p.display())),
                _ => {}
            }
        }
        script.push_str("firewall-cmd --reload\n");
        vec![super::backend::restore_plan(
            Family::V4,
            "restore /etc/firewalld as saved, then reload",
            script,
        )]
    }

    fn other_changes(&self, before: &Saves, after: &Saves) -> Vec<String> {
        let mut out = Vec::new();
        let zone = Path::new(ETC).join(format!("zones/{}.xml", Firewalld::default_zone(before)));
        let paths: BTreeSet<&PathBuf> = before.files.keys().chain(after.files.keys()).collect();
        for p in paths {
            let name = p.to_string_lossy();
            let own_file = name.ends_with(".old")
                || p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(PREFIX));
            if own_file || !p.starts_with(ETC) {
                continue;
            }
            let (b, a) = (before.file(p), after.file(p));
            if *p == zone && b.is_none() {
                continue; // the override firewalld made of the stock zone for the agent's rules
            }
            diff_lines(
                &mut out,
                &p.display().to_string(),
                b.map(foreign_lines).unwrap_or_default(),
                a.map(foreign_lines).unwrap_or_default(),
            );
        }
        out
    }

    fn persist(&self, _host: &dyn Host, _req: &WhitelistRequest) -> Result<String, NotPersisted> {
        Ok("firewalld's permanent configuration (/etc/firewalld): firewalld loads it at every start".into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn own_rules_and_entries_are_read_from_firewalds_xml() {
        let zone = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <short>Public</short>\n  <service name=\"ssh\"/>\n  <rule family=\"ipv4\">\n    <source ipset=\"oa-cdn-cloudflare-v4\"/>\n    <port port=\"80\" protocol=\"tcp\"/>\n    <accept/>\n  </rule>\n  <rule family=\"ipv4\">\n    <source address=\"192.0.2.1\"/>\n    <accept/>\n  </rule>\n</zone>\n";
        assert_eq!(
            own_rules(zone).into_iter().collect::<Vec<_>>(),
            vec![rich_rule(Family::V4, "oa-cdn-cloudflare-v4", 80)]
        );
        let f = foreign_lines(zone);
        assert!(
            f.iter().any(|l| l.contains("192.0.2.1")) && !f.iter().any(|l| l.contains("oa-cdn"))
        );
        let set = "<ipset type=\"hash:net\">\n  <option name=\"family\" value=\"inet\"/>\n  <entry>173.245.48.0/20</entry>\n  <entry>103.21.244.0/22</entry>\n</ipset>\n";
        assert_eq!(entries(set).len(), 2);
    }
}
