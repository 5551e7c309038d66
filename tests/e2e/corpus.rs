//! The corpus of real cases (`tests/corpus/`, issue 12): log excerpts people pasted in public
//! issue threads and Q&A pages, each with the cause the thread settled on. One test runs every
//! case through `origin-agent scan --json` and compares the verdict with the expected cause: at
//! least 90% named right, and no negative case (scanner noise, 404 floods, visitor text, auth
//! failures; `expected: none`) given a cause. Needs no root and no web stack.
//!
//! A case is a directory `NNN-short-name/` holding the files as they sat on the reporter's disk and
//! a `case.yaml`: `source` (the thread), `expected` (a cause id or `none`), `note` (how the thread
//! resolved it), optional `since` (the `--since` window when the default does not fit) and
//! `pending: REASON` for a case whose capability lands with another branch: it is run and
//! reported, not counted, until the mark is removed.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use origin_agent::cause::CauseId;
use serde::Deserialize;

/// Wide enough for every stamp in the corpus (the oldest excerpts are from 2012).
const DEFAULT_SINCE: &str = "36500d";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    source: String,
    expected: String,
    note: String,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    pending: Option<String>,
}

struct Outcome {
    name: String,
    expected: String,
    got: String,
    pending: Option<String>,
}

impl Outcome {
    fn right(&self) -> bool {
        self.expected == self.got
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

/// Every file of a case but its `case.yaml`, sorted, subdirectories included (`apache2/error.log`).
fn log_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            log_files(&path, out);
        } else if path.file_name().is_some_and(|n| n != "case.yaml") {
            out.push(path);
        }
    }
}

fn load(dir: &Path) -> CaseFile {
    let path = dir.join("case.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let case: CaseFile =
        yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        case.source.starts_with("https://"),
        "{}: source must be the thread's address",
        path.display()
    );
    assert!(
        !case.note.trim().is_empty(),
        "{}: note is empty",
        path.display()
    );
    assert!(
        case.expected == "none"
            || CauseId::parse(&case.expected).is_some()
            || case.pending.is_some(),
        "{}: expected `{}` is not a catalog id (or none)",
        path.display(),
        case.expected
    );
    case
}

/// `origin-agent scan --json --since WINDOW FILES…`: the verdict's cause, or `none`.
fn scan(name: &str, files: &[PathBuf], since: &str) -> String {
    let out = Command::cargo_bin("origin-agent")
        .expect("the origin-agent binary")
        .env("NO_COLOR", "1")
        .env("TZ", "UTC")
        .args(["scan", "--json", "--since", since])
        .args(files)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .expect("origin-agent runs");
    let report: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(report) => report,
        Err(_) => {
            return format!(
                "error: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("no JSON")
            )
        }
    };
    match &report["verdict"]["cause"] {
        serde_json::Value::String(cause) => cause.clone(),
        serde_json::Value::Null => "none".to_string(),
        other => panic!("{name}: verdict.cause is {other}"),
    }
}

#[test]
fn corpus_of_real_cases_names_the_cause_the_thread_found() {
    let root = corpus_dir();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no cases under {}", root.display());

    let mut outcomes = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let case = load(dir);
        let mut files = Vec::new();
        log_files(dir, &mut files);
        assert!(!files.is_empty(), "{name}: no log files");
        let got = scan(
            &name,
            &files,
            case.since.as_deref().unwrap_or(DEFAULT_SINCE),
        );
        outcomes.push(Outcome {
            name,
            expected: case.expected,
            got,
            pending: case.pending,
        });
    }

    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(4);
    println!("{:width$}  {:28}  {:28}  result", "case", "expected", "got");
    for o in &outcomes {
        let result = match (&o.pending, o.right()) {
            (Some(why), true) => format!("ok (pending: {why})"),
            (Some(why), false) => format!("MISS (pending: {why}, not counted)"),
            (None, true) => "ok".to_string(),
            (None, false) => "MISS".to_string(),
        };
        println!(
            "{:width$}  {:28}  {:28}  {result}",
            o.name, o.expected, o.got
        );
    }

    let counted: Vec<&Outcome> = outcomes.iter().filter(|o| o.pending.is_none()).collect();
    let right = counted.iter().filter(|o| o.right()).count();
    let pending = outcomes.len() - counted.len();
    let pending_right = outcomes
        .iter()
        .filter(|o| o.pending.is_some() && o.right())
        .count();
    println!(
        "{right} of {} counted cases right ({:.1}%); {pending_right} of {pending} pending cases right",
        counted.len(),
        100.0 * right as f64 / counted.len().max(1) as f64
    );

    let false_causes: Vec<String> = counted
        .iter()
        .filter(|o| o.expected == "none" && o.got != "none")
        .map(|o| format!("{} gave {}", o.name, o.got))
        .collect();
    assert!(
        false_causes.is_empty(),
        "negative cases given a cause: {}",
        false_causes.join(", ")
    );
    assert!(
        right * 10 >= counted.len() * 9,
        "only {right} of {} counted cases named right (90% needed); misses: {}",
        counted.len(),
        counted
            .iter()
            .filter(|o| !o.right())
            .map(|o| format!("{} (expected {}, got {})", o.name, o.expected, o.got))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
