//! The human text of a whitelist run: the plan per family (ranges to add and remove, the exact
//! transaction), what was applied, the verification, any rollback, and the fail2ban and nginx
//! parts.

use super::saves::XTABLES_WAIT_SECS;
use super::{f2b, Backend, Mode, WhitelistOutcome};
use crate::addrset::Family;

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

/// The human text of a run.
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
            (Mode::Rollback, Backend::Csf) => "csf",
            (Mode::Rollback, Backend::Firewalld) => "firewalld",
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
                (Backend::Csf, _) => {
                    "lines of CSF's files (then `csf -r` rebuilds the rules):".to_string()
                }
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
            if !matches!(
                outcome.backend,
                Backend::Ufw | Backend::Csf | Backend::Firewalld
            ) {
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
