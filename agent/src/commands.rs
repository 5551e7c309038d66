//! One function per subcommand: the glue between the command line and the library. Errors here
//! carry context for a person (`anyhow`); the library's own errors are typed.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use origin_agent::audit::{self, AuditOptions};
use origin_agent::config::{self, Config};
use origin_agent::diagnose::{self, ExplainQuery};
use origin_agent::host::live::LiveHost;
use origin_agent::host::snapshot::SnapshotHost;
use origin_agent::host::{Host, HostExt};
use origin_agent::report::{human, nagios, Report};

use crate::cli::{
    AuditArgs, CollectArgs, ConfigCommand, ExplainArgs, Format, GenerateArgs, RulesCommand,
    ScanArgs,
};

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

fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(Config::load_or_default(path)?)
}

fn is_terminal_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> Result<()> {
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
    let since = since(args.since.as_deref())?;
    let report = with_host(args.snapshot.as_deref(), |host, source| {
        let opts = AuditOptions {
            since,
            progress: is_terminal_stderr() && args.output.format() == Format::Human,
            source,
        };
        audit::run(host, &config, &opts)
    })?;
    emit(&report, args.output.format())
}

pub fn scan(args: ScanArgs) -> Result<Exit> {
    for file in &args.files {
        if !file.exists() {
            bail!("{}: no such file", file.display());
        }
    }
    let report = audit::scan(&args.files, since(args.since.as_deref())?);
    emit(&report, args.output.format())
}

pub fn explain(args: ExplainArgs) -> Result<Exit> {
    let config = load_config(args.config.as_deref())?;
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
        };
        let data = audit::gather(host, &config, &opts);
        Ok(diagnose::explain(&data.evidence, &query))
    })??;
    if args.json {
        print(&(serde_json::to_string_pretty(&result)? + "\n"))?;
    } else if result.is_empty() {
        print("No 5xx response matches that in the log window.\n")?;
    } else {
        let mut text = String::new();
        for e in &result {
            let r = &e.response;
            text.push_str(&format!(
                "{}:{} {} \"{}\" {}\n",
                r.file.display(),
                r.line,
                r.time.map_or("-".to_string(), diagnose::short_time),
                r.request,
                r.status
            ));
            match (&e.cause, &e.event) {
                (Some(cause), Some(event)) => text.push_str(&format!(
                    "  cause: {cause} ({}){}\n  {}:{}: {}\n",
                    cause.title(),
                    if e.direct {
                        ""
                    } else {
                        ", linked by time only"
                    },
                    event.file.display(),
                    event.line,
                    event.text.lines().next().unwrap_or("")
                )),
                _ => text.push_str("  no log line explains it\n"),
            }
            for near in &e.nearby {
                text.push_str(&format!(
                    "  nearby {}:{}: {}\n",
                    near.file.display(),
                    near.line,
                    near.text.lines().next().unwrap_or("")
                ));
            }
        }
        print(&text)?;
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
    };
    let out = args
        .out
        .unwrap_or_else(|| audit::default_snapshot_name(&LiveHost.hostname(), LiveHost.now()));
    let report = audit::collect(&config, &opts, &out)
        .with_context(|| format!("cannot write the snapshot {}", out.display()))?;
    print(&format!(
        "Snapshot written to {} ({}). Audit it anywhere with: origin-agent audit --snapshot {}\n",
        out.display(),
        report.verdict.summary,
        out.display()
    ))?;
    Ok(0)
}

pub fn config(command: ConfigCommand) -> Result<Exit> {
    match command {
        ConfigCommand::Check { file } => {
            let path = file.unwrap_or_else(|| config::DEFAULT_PATH.into());
            let config = Config::load(&path)?;
            print(&format!(
                "{}: valid (state_dir {}, metrics on {})\n",
                path.display(),
                config.state_dir.display(),
                config.metrics_listen
            ))?;
            Ok(0)
        }
    }
}

pub fn rules(command: RulesCommand) -> Result<Exit> {
    match command {
        RulesCommand::List => {
            let set =
                origin_agent::rules::RuleSet::load(Some(Path::new("/etc/origin-agent/rules.d")))?;
            print(&origin_agent::rules::list_text(&set))?;
            Ok(0)
        }
        RulesCommand::Test { rules, log } => {
            print(&origin_agent::rules::test_file(&rules, &log)?)?;
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
        let mut buf = Vec::new();
        clap_mangen::Man::new(command.clone()).render(&mut buf)?;
        std::fs::write(args.dir.join("origin-agent.1"), buf)?;
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
