//! The `origin-agent` binary: parses the command line, calls one library function per
//! subcommand, and turns the outcome into the monitoring-plugin exit codes (0 OK, 1 WARNING,
//! 2 CRITICAL, 3 UNKNOWN). A failure to run at all (bad config, unreadable snapshot) is 3.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Audit(args) => commands::audit(args),
        Command::Scan(args) => commands::scan(args),
        Command::Explain(args) => commands::explain(args),
        Command::Collect(args) => commands::collect(args),
        Command::Run(args) => commands::run(args),
        Command::Status(args) => commands::status(args),
        Command::Cdn(command) => commands::cdn(command),
        Command::Whitelist(args) => commands::whitelist(args),
        Command::Wp(command) => commands::wp(command),
        Command::Config(command) => commands::config(command),
        Command::Rules(command) => commands::rules(command),
        Command::Generate(args) => commands::generate(args, Cli::command()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("origin-agent: {err:#}");
            ExitCode::from(3)
        }
    }
}
