//! Benchmark driver: `cargo run --release --example scan -- [--since RFC3339] FILE…` runs the
//! library's `scan_paths` (what `origin-agent scan` calls) over the files and prints a one-line
//! summary per file and the totals, so the bench script can time it next to grep and cat.

use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut window = origin_agent::logs::Window::default();
    if args.first().map(String::as_str) == Some("--since") && args.len() > 1 {
        match args[1].parse() {
            Ok(t) => window.since = Some(t),
            Err(e) => {
                eprintln!("--since: {e}");
                return std::process::ExitCode::from(2);
            }
        }
        args.drain(..2);
    }
    let paths: Vec<PathBuf> = args.into_iter().map(PathBuf::from).collect();
    let tz = jiff::tz::TimeZone::system();
    let rules = match origin_agent::logs::builtin_rules() {
        Ok(rules) => rules,
        Err(e) => {
            eprintln!("rules: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let ev = origin_agent::logs::scan_paths(&paths, &window, &tz, &rules);
    for f in &ev.files {
        println!(
            "{}: source={} lines={} events={} bad={} outside={} truncated={} error={}",
            f.path.display(),
            f.source.map(|s| s.as_str()).unwrap_or("?"),
            f.lines,
            f.events,
            f.bad_lines,
            f.outside_window,
            f.truncated_lines,
            f.error.as_deref().unwrap_or("-")
        );
    }
    let s5xx: u64 = ev.responses.by_status.range(500..600).map(|(_, n)| n).sum();
    println!(
        "responses={} 502={} 5xx={} errors_kept={} minutes={} clients={} events_kept={} by_rule={:?}",
        ev.responses.total,
        ev.responses.by_status.get(&502).copied().unwrap_or(0),
        s5xx,
        ev.errors.len(),
        ev.responses.per_minute.len(),
        ev.responses.clients.len(),
        ev.events.len(),
        ev.events_by_rule
    );
    std::process::ExitCode::SUCCESS
}
