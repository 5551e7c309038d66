//! Compiles the embedded rule packs: every `rules/*.yaml` at the top of the repository (a new
//! pack is picked up by being there), in name order, read with the same document types as the
//! runtime (`src/rules/doc.rs`), each pattern's syntax checked, and written as Rust constants
//! into `$OUT_DIR/builtin_packs.rs`: `BUILTIN_PACKS: &[BuiltinPack]`, each rule's fields as
//! string literals, its samples apart as JSON. The binary then reads its own rules with no
//! parser at all at start-up — no YAML, no JSON, no regex parse (the meaning checks — sources,
//! causes, severities, anchors — still run when the set is loaded, and the unit tests run every
//! rule's samples).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

include!("src/rules/doc.rs");

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    let mut out = String::from("/// The embedded rule packs, in file name order.\nconst BUILTIN_PACKS: &[BuiltinPack] = &[\n");
    for name in &names {
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let doc: PackDoc =
            yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("rules/{name}: {e}"));
        for rule in &doc.rules {
            if let Err(e) = regex_syntax::ParserBuilder::new()
                .unicode(false)
                .utf8(false)
                .build()
                .parse(&rule.pattern)
            {
                panic!("rules/{name}: rule `{}`: {e}", rule.id);
            }
        }
        // The samples apart: start-up reads the rules alone; the samples are read only when
        // checked (`RuleSet::builtin`).
        let mut doc = doc;
        let samples: Vec<SamplesDoc> = doc
            .rules
            .iter_mut()
            .map(|r| std::mem::take(&mut r.samples))
            .collect();
        let samples = serde_json::to_string(&samples).unwrap_or_else(|e| panic!("{name}: {e}"));
        let _ = writeln!(
            out,
            "    BuiltinPack {{ name: {name:?}, version: {:?}, source: {:?}, samples: {samples:?}, rules: &[",
            doc.version,
            doc.source.as_deref()
        );
        for r in &doc.rules {
            let _ = writeln!(
                out,
                "        BuiltinRule {{ id: {:?}, source: {:?}, pattern: {:?}, event: {:?}, cause: {:?}, severity: {:?}, fix: {:?}, responds: {:?}, reason: {:?} }},",
                r.id,
                r.source.as_deref(),
                r.pattern,
                r.event,
                r.cause,
                r.severity,
                r.fix,
                r.responds,
                r.reason.as_deref()
            );
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_packs.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
