//! One function per subcommand: the glue between the command line and the library. Errors here
//! carry context for a person (`anyhow`); the library's own errors are typed.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use origin_agent::audit::{self, AuditOptions};
use origin_agent::config::{self, Config};
use origin_agent::diagnose::{self, ExplainQuery};
use origin_agent::host::live::LiveHost;
use origin_agent::host::snapshot::SnapshotHost;
use origin_agent::host::{Host, HostExt};
use origin_agent::report::{human, nagios, Report};
use origin_agent::rules::RuleSet;

use crate::cli::{
    AuditArgs, CdnCommand, CollectArgs, ConfigCommand, ExplainArgs, Format, GenerateArgs,
    RulesCommand, RunArgs, ScanArgs, StatusArgs, WhitelistArgs, WpCommand,
};
use origin_agent::cdn::Provider;

/// The exit code of a command that ran and reports a state.
pub type Exit = u8;

fn since(text: Option<&str>) -> Result<Option<Duration>> {
    match text {
        None => Ok(None),
        Some(text) => config::parse_duration(text)
            .filter(|d| !d.is_zero())
            .map(Some)
            .with_context(|| format!("--since {text}: not a duration such as 90s, 30m, 1h or 2d")),
    }
}

/// Loads the config.
fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(Config::load_or_default(path)?)
}

/// The rules the log readers get: the embedded packs plus the site's `rules_dir`. A broken site
/// pack is reported and the embedded rules are used: the audit still answers (`config check` is
/// where a broken pack fails).
fn load_rules(config: &Config) -> Result<Arc<RuleSet>> {
    match RuleSet::load(Some(&config.rules_dir)) {
        Ok(set) => Ok(Arc::new(set)),
        Err(err) => {
            eprintln!(
                "origin-agent: site rules in {} ignored, using the embedded rules: {err}",
                config.rules_dir.display()
            );
            Ok(origin_agent::logs::builtin_rules()?)
        }
    }
}

fn is_terminal_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> Result<()> {
    // The last guard: no raw control byte but the renderers' colours reaches the terminal
    // (JSON has none: serde escapes them).
    let text = origin_agent::report::escape::terminal(text);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn emit(report: &Report, format: Format) -> Result<Exit> {
    let text = match format {
        Format::Human => human::render(report, human::Style::detect()),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Nagios => nagios::render(report),
    };
    print(&text)?;
    Ok(report.exit_code())
}

fn with_host<T>(snapshot: Option<&Path>, f: impl FnOnce(&dyn Host, String) -> T) -> Result<T> {
    match snapshot {
        Some(path) => {
            let host = SnapshotHost::open(path)?;
            Ok(f(&host, format!("snapshot {}", path.display())))
        }
        None => Ok(f(&LiveHost, "live".to_string())),
    }
}

pub fn audit(args: AuditArgs) -> Result<Exit> {
    let config = load_config(args.config.as_deref())?;
    let rules = load_rules(&config)?;
    let since = since(args.since.as_deref())?;
    let report = with_host(args.snapshot.as_deref(), |host, source| {
        let opts = AuditOptions {
            since,
            progress: is_terminal_stderr() && args.output.format() == Format::Human,
            source,
            rules,
        };
        audit::run(host, &config, &opts)
    })?;
    emit(&report, args.output.format())
}

pub fn scan(args: ScanArgs) -> Result<Exit> {
    let rules = load_rules(&load_config(args.config.as_deref())?)?;
    for file in &args.files {
        if !file.exists() {
            bail!("{}: no such file", file.display());
        }
    }
    let report = audit::scan(&args.files, since(args.since.as_deref())?, &rules);
    emit(&report, args.output.format())
}

pub fn explain(args: ExplainArgs) -> Result<Exit> {
    let config = load_config(args.config.as_deref())?;
    let rules = load_rules(&config)?;
    let since = since(args.since.as_deref())?;
    let result = with_host(args.snapshot.as_deref(), |host, source| -> Result<_> {
        let query = if let Some(at) = &args.at {
            ExplainQuery::At(parse_time(at, &host.time_zone())?)
        } else if let Some(request) = &args.request {
            ExplainQuery::Request(request.clone())
        } else if let Some(connection) = &args.connection {
            ExplainQuery::Connection(connection.clone())
        } else {
            bail!("say what to explain: --at TIME, --request TEXT or --connection ID");
        };
        let opts = AuditOptions {
            since,
            progress: false,
            source,
            rules,
        };
        let data = audit::gather(host, &config, &opts);
        Ok(diagnose::explain(&data.evidence, &query))
    })??;
    if args.json {
        print(&(serde_json::to_string_pretty(&result)? + "\n"))?;
    } else {
        print(&origin_agent::report::explain::render(&result, args.all))?;
    }
    Ok(if result.iter().any(|e| e.cause.is_some()) {
        0
    } else {
        3
    })
}

fn parse_time(text: &str, tz: &jiff::tz::TimeZone) -> Result<jiff::Timestamp> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    let civil: jiff::civil::DateTime = text.replace(' ', "T").parse().with_context(|| {
        format!("--at {text}: not a time such as 2026-11-24T07:45:17Z or \"2026-11-24 07:45:17\"")
    })?;
    Ok(tz.to_timestamp(civil)?)
}

pub fn collect(args: CollectArgs) -> Result<Exit> {
    let config = load_config(args.config.as_deref())?;
    let opts = AuditOptions {
        since: since(args.since.as_deref())?,
        progress: is_terminal_stderr(),
        source: "live".to_string(),
        rules: load_rules(&config)?,
    };
    let out = args
        .out
        .unwrap_or_else(|| audit::default_snapshot_name(&LiveHost.hostname(), LiveHost.now()));
    let (report, redacted) = audit::collect_with(&config, &opts, &out, !args.no_redact)
        .with_context(|| format!("cannot write the snapshot {}", out.display()))?;
    print(&format!(
        "Snapshot written to {} ({}). Audit it anywhere with: origin-agent audit --snapshot {}\n",
        out.display(),
        report.verdict.summary,
        out.display()
    ))?;
    if args.no_redact {
        print("Secrets were kept (--no-redact): the snapshot holds passwords; share it accordingly.\n")?;
    } else if redacted.is_empty() {
        print("Redacted: nothing (no password or secret value was found in the files read).\n")?;
    } else {
        print(&format!(
            "Redacted (values replaced by <redacted>; --no-redact keeps them):\n  {}\n",
            redacted.join("\n  ")
        ))?;
    }
    Ok(0)
}

pub fn config(command: ConfigCommand) -> Result<Exit> {
    match command {
        ConfigCommand::Check { file } => {
            let path = file.unwrap_or_else(|| config::DEFAULT_PATH.into());
            let config = Config::load(&path)?;
            let rules = RuleSet::load(Some(&config.rules_dir))
                .with_context(|| format!("rules in {}", config.rules_dir.display()))?;
            print(&format!(
                "{}: valid (state_dir {}, metrics on {}, {} rules)\n",
                path.display(),
                config.state_dir.display(),
                config.metrics_listen,
                rules.rules().len()
            ))?;
            Ok(0)
        }
    }
}

pub fn rules(command: RulesCommand) -> Result<Exit> {
    match command {
        RulesCommand::List => {
            let set = RuleSet::load(Some(&Config::load_or_default(None)?.rules_dir))?;
            print(&origin_agent::rules::list_text(&set))?;
            Ok(0)
        }
        RulesCommand::Test { rules, log } => {
            print(&origin_agent::logs::samples::test_file(&rules, &log)?)?;
            Ok(0)
        }
    }
}

pub fn generate(args: GenerateArgs, command: clap::Command) -> Result<Exit> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let man = matches!(args.what.as_str(), "man" | "all");
    let completions = matches!(args.what.as_str(), "completions" | "all");
    if !man && !completions {
        bail!("generate: say man, completions or all");
    }
    if man {
        // One page per subcommand (origin-agent-audit.1, origin-agent-cdn-update.1, …) beside
        // origin-agent.1, which refers to them.
        let dir = args.dir.join("man");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(command.clone(), &dir)
            .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    }
    if completions {
        let dir = args.dir.join("completions");
        std::fs::create_dir_all(&dir)?;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut cmd = command.clone();
            clap_complete::generate_to(shell, &mut cmd, "origin-agent", &dir)?;
        }
    }
    Ok(0)
}

pub fn run(args: RunArgs) -> Result<Exit> {
    let config = load_config(args.config.as_deref())?;
    let mut pipeline = origin_agent::daemon::pipeline::AgentPipeline::new(
        std::sync::Arc::new(origin_agent::host::live::LiveHost),
        &config,
    );
    origin_agent::daemon::run(&config, &mut pipeline)?;
    Ok(0)
}

pub fn status(args: StatusArgs) -> Result<Exit> {
    let config = load_config(args.config.as_deref())?;
    let addr = args
        .listen
        .unwrap_or_else(|| config.metrics_listen.to_string());
    let url = format!("http://{addr}/status");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .proxy(None)
        .build()
        .into();
    let body = agent
        .get(&url)
        .call()
        .with_context(|| format!("no daemon answers at {url}: is `origin-agent run` (the origin-agent service) running?"))?
        .body_mut()
        .read_to_string()?;
    let status: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))?;
    if args.json {
        print(&(serde_json::to_string_pretty(&status)? + "\n"))?;
    } else {
        print(&status_text(&status))?;
    }
    let open = !status["incident"].is_null();
    Ok(if open { 2 } else { 0 })
}

fn status_text(status: &serde_json::Value) -> String {
    // The daemon's answer carries log-derived text: escaped before it is laid out.
    let mut safe = status.clone();
    origin_agent::report::escape::json_strings(&mut safe);
    let status = &safe;
    let mut text = String::new();
    match status.get("incident") {
        Some(incident) if !incident.is_null() => text.push_str(&format!(
            "INCIDENT {} open since {}: top cause {}\n",
            incident["id"].as_str().unwrap_or("?"),
            incident["opened_at"].as_str().unwrap_or("?"),
            incident["top_cause"].as_str().unwrap_or("not known yet")
        )),
        _ => text.push_str("No open incident.\n"),
    }
    text.push_str(&format!(
        "5xx per minute: {}\n",
        status["errors_per_minute"].as_u64().unwrap_or(0)
    ));
    let causes: Vec<String> = status["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .take(3)
                .map(|c| {
                    format!(
                        "{} ({:.2})",
                        c["id"].as_str().unwrap_or("?"),
                        c["score"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if !causes.is_empty() {
        text.push_str(&format!("causes now: {}\n", causes.join(", ")));
    }
    let checks = &status["checks"];
    text.push_str(&format!(
        "checks: {} ok, {} warn, {} fail, {} skip\n",
        checks["ok"], checks["warn"], checks["fail"], checks["skip"]
    ));
    for finding in status["findings"].as_array().into_iter().flatten().take(10) {
        text.push_str(&format!(
            "  {} {}: {}\n",
            finding["status"].as_str().unwrap_or("?"),
            finding["title"].as_str().unwrap_or("?"),
            finding["detail"].as_str().unwrap_or("")
        ));
    }
    let files = status["files"].as_array().map_or(0, Vec::len);
    text.push_str(&format!(
        "following {files} log file(s); up since {}\n",
        status["started_at"].as_str().unwrap_or("?")
    ));
    text
}

fn providers(names: &[String]) -> Result<Vec<Provider>> {
    names
        .iter()
        .map(|n| {
            Provider::parse(n).with_context(|| {
                format!(
                    "unknown provider `{n}`; known: {}",
                    Provider::names().join(", ")
                )
            })
        })
        .collect()
}

/// `wp sites` and `wp isolate` (live host only).
pub fn wp(command: WpCommand) -> Result<Exit> {
    use origin_agent::wp;
    let (config, json) = match &command {
        WpCommand::Sites { config, json } | WpCommand::Isolate { config, json, .. } => {
            (load_config(config.as_deref())?, *json)
        }
    };
    let discovery = origin_agent::discover::discover(&LiveHost, &config);
    let sites = wp::discover_sites(&LiveHost, &discovery, &[]);
    match command {
        WpCommand::Sites { .. } => {
            if json {
                print(&format!("{}\n", serde_json::to_string_pretty(&sites)?))?;
            } else {
                let checks = wp::checks::checks(&LiveHost, &sites, &Default::default(), &discovery);
                let mut out = String::new();
                for c in checks {
                    out.push_str(&format!(
                        "{:>4} {} — {}\n",
                        c.status.label(),
                        c.title,
                        c.detail
                    ));
                }
                if out.is_empty() {
                    out.push_str("no WordPress site found under the web server's document roots\n");
                }
                print(&out)?;
            }
            Ok(0)
        }
        WpCommand::Isolate {
            site,
            url,
            staging,
            work_dir,
            ..
        } => {
            let opts = wp::isolate::Options {
                site,
                url,
                staging,
                state_dir: config.state_dir.clone(),
                work_dir,
            };
            let socket = discovery
                .database
                .as_ref()
                .and_then(|d| d.socket.as_ref())
                .map(|s| s.value.clone());
            let start = std::time::Instant::now();
            let mut progress = |line: &str| {
                eprintln!(
                    "[{:5.1}s] {}",
                    start.elapsed().as_secs_f64(),
                    wp::printable(line, 400)
                )
            };
            let outcome = wp::isolate::run(&sites, socket.as_deref(), &opts, &mut progress)?;
            if json {
                print(&format!("{}\n", serde_json::to_string_pretty(&outcome)?))?;
            } else {
                print(&wp::printable_lines(&outcome.text()))?;
            }
            Ok(0)
        }
    }
}

pub fn cdn(command: CdnCommand) -> Result<Exit> {
    match command {
        CdnCommand::List { config } => {
            let config = load_config(config.as_deref())?;
            print(&origin_agent::cdn::list_text(&origin_agent::cdn::load(
                &config.state_dir,
            )))?;
            Ok(0)
        }
        CdnCommand::Status {
            config,
            providers: names,
        } => {
            let config = load_config(config.as_deref())?;
            let list = if !names.is_empty() {
                providers(&names)?
            } else if let Some(names) = &config.cdn_providers {
                providers(names)?
            } else {
                Provider::ALL
                    .iter()
                    .copied()
                    .filter(|p| {
                        origin_agent::stack::cdn_status::default_url(*p).is_some()
                            || config.cdn_status_urls.contains_key(p.name())
                    })
                    .collect()
            };
            let (text, worst) = origin_agent::stack::cdn_status::status_text(
                &origin_agent::host::live::LiveHost,
                &config,
                &list,
            );
            print(&text)?;
            Ok(u8::from(worst == origin_agent::check::Status::Warn))
        }
        CdnCommand::Show { name, config } => {
            let config = load_config(config.as_deref())?;
            let provider = providers(&[name])?[0];
            print(&origin_agent::cdn::show_text(
                &origin_agent::cdn::load(&config.state_dir),
                provider,
            ))?;
            Ok(0)
        }
        CdnCommand::Update {
            config,
            providers: names,
            force,
        } => {
            let config = load_config(config.as_deref())?;
            let wanted = providers(&names)?;
            let report = origin_agent::cdn::update::update(
                &config.state_dir,
                &wanted,
                force,
                &origin_agent::cdn::update::Endpoints::official(),
            )?;
            print(&report.text())?;
            if report.ok() && config.whitelist_every.is_some() {
                // The operator keeps the whitelist current (daemon.whitelist_every): the new
                // ranges go in now, through the same transaction as a manual --apply.
                let catalog = origin_agent::cdn::load(&config.state_dir);
                match origin_agent::whitelist::current::keep_current(
                    &LiveHost,
                    &config.state_dir,
                    &catalog,
                ) {
                    Ok(Some(out)) => {
                        let line = origin_agent::whitelist::current::summary(&out)
                            .unwrap_or_else(|| "CDN whitelist already current".to_string());
                        print(&format!("{line}\n"))?;
                        if let Some(note) = origin_agent::whitelist::current::note(&out) {
                            notify_whitelist(&config, &note)?;
                        }
                        if !out.succeeded() {
                            return Ok(1);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        print(&format!("CDN whitelist NOT kept current: {e}\n"))?;
                        notify_whitelist(
                            &config,
                            &origin_agent::whitelist::current::error_note(&e),
                        )?;
                        return Ok(1);
                    }
                }
            }
            Ok(if report.ok() { 0 } else { 1 })
        }
    }
}

/// Sends a keep-current note through the configured webhook and exec hook; their failures are
/// printed (the whitelist change itself stands).
fn notify_whitelist(
    config: &origin_agent::config::Config,
    note: &origin_agent::whitelist::current::WhitelistNote,
) -> Result<()> {
    for e in origin_agent::daemon::notify::send_whitelist_now(config, note) {
        print(&format!("{e}\n"))?;
    }
    Ok(())
}

pub fn whitelist(args: WhitelistArgs) -> Result<Exit> {
    use origin_agent::whitelist::{self, Backend, WhitelistRequest};
    let config = load_config(args.config.as_deref())?;
    let mut wanted = providers(&args.providers)?;
    if wanted.is_empty() {
        wanted = providers(config.cdn_providers.as_deref().unwrap_or_default())?;
    }
    if wanted.is_empty() && !args.rollback {
        bail!(
            "say which CDN to allow: --provider NAME (or cdn.providers in the config); known: {}",
            Provider::names().join(", ")
        );
    }
    let backend = Backend::parse(&args.backend).with_context(|| {
        format!(
            "--backend {}: one of auto, iptables, nftables, ufw, csf, firewalld",
            args.backend
        )
    })?;
    let request = WhitelistRequest {
        providers: wanted,
        ports: args.ports,
        backend,
        apply: args.apply,
        rollback: args.rollback,
        persist: args.persist,
        fail2ban: args.fail2ban,
        nginx_real_ip: args.nginx_real_ip,
        force: args.force,
        state_dir: config.state_dir.clone(),
        nginx_conf: config.nginx_config.clone(),
        ..WhitelistRequest::default()
    };
    let catalog = origin_agent::cdn::load(&config.state_dir);
    let outcome = whitelist::run(&LiveHost, &request, &catalog)?;
    print(&whitelist::render(&outcome))?;
    // A failed apply undid itself (the text says so): the firewall is as it was, but the
    // whitelist is not in place.
    Ok(if outcome.succeeded() { 0 } else { 2 })
}
