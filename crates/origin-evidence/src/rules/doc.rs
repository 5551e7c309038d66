// The rule-pack document (`rules/*.yaml`) as serde reads it. Included by `rules/mod.rs` and by
// the build script (`crates/origin-evidence/build.rs`), which reads the embedded packs with these same types and
// writes them as Rust constants (their samples as JSON), so that the binary parses neither YAML
// nor JSON for its own rules at start-up.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackDoc {
    /// The rule format's version (1, the only one so far; absent means 1).
    #[serde(default)]
    version: Option<u32>,
    /// The source of every rule of the file that names none.
    #[serde(default)]
    source: Option<String>,
    rules: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    id: String,
    #[serde(default)]
    source: Option<String>,
    pattern: String,
    event: String,
    cause: String,
    severity: String,
    fix: String,
    #[serde(default)]
    responds: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    samples: SamplesDoc,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SamplesDoc {
    #[serde(default, rename = "match")]
    matches: Vec<SampleDoc>,
    #[serde(default)]
    no_match: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SampleDoc {
    line: String,
    #[serde(default)]
    captures: BTreeMap<String, String>,
}
