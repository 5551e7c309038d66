//! Apache httpd's configuration, read the way httpd reads it: `Include`/`IncludeOptional`
//! (globs and directories, relative to `ServerRoot`), `Define` and `${VAR}` (from the master's
//! environment: Debian's `envvars`), `<IfModule>`/`<IfDefine>`/`<IfFile>`/`<IfVersion>` resolved
//! in order against the `LoadModule`s seen so far. Every value keeps its file and line.
//!
//! [`load`] reads the files through the host seam (so a snapshot carries them); [`parse`] is a
//! pure parser of one file; [`extract`] fills the [`Apache`] model (virtual hosts, `Listen`,
//! logs and their `LogFormat`, proxy targets, the MPM and its limits, timeouts, mod_remoteip,
//! mod_status); [`nginx_format`] translates a `LogFormat` into the nginx `log_format` syntax the
//! access-log parser compiles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::{Host, HostExt};

use super::model::{
    AccessLog, Address, Apache, ApacheListen, ApacheProxyTarget, Origin, RemoteIp, Sourced,
    UpstreamKind, VirtualHost,
};

/// The most files one config may pull in (include loops, huge globs).
const MAX_FILES: usize = 512;
const MAX_DEPTH: usize = 16;
/// The most `${VAR}` expansions on one line (a self-referencing Define).
const MAX_EXPANSIONS: usize = 64;

/// Modules compiled into Debian's and RHEL's httpd (`apache2 -l`).
const BUILTIN_MODULES: &[&str] = &[
    "core",
    "so",
    "watchdog",
    "http",
    "log_config",
    "logio",
    "version",
    "unixd",
];

/// httpd's `combined` LogFormat as Debian and RHEL define it.
pub const COMBINED: &str = r#"%h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i""#;
/// httpd's `common` LogFormat (and the format when none is named).
pub const COMMON: &str = r#"%h %l %u %t "%r" %>s %b"#;

/// Why a config could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApacheConfigError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One directive (`Name args…`) or section (`<Name args>…</Name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub file: PathBuf,
    pub line: usize,
    /// The section's contents, for `<Name>` sections.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    fn origin(&self) -> Origin {
        Origin::File {
            path: self.file.clone(),
            line: self.line,
        }
    }

    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }
}

/// Splits a directive line into words: whitespace-separated, `"…"` and `'…'` quoted (a
/// backslash escapes a quote inside).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek().is_some_and(|n| *n == first || *n == '\\') {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                } else if c == first {
                    break;
                } else {
                    word.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

/// Parses one config file into a tree of directives and sections (nothing resolved yet).
pub fn parse(text: &str, path: &Path) -> Result<Vec<Directive>, ApacheConfigError> {
    let mut stack: Vec<Directive> = vec![Directive {
        name: String::new(),
        args: Vec::new(),
        file: path.to_path_buf(),
        line: 0,
        block: Some(Vec::new()),
    }];
    let mut logical = String::new();
    let mut start = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim_end_matches('\r');
        if logical.is_empty() {
            start = i + 1;
        }
        // A backslash at the end continues the line.
        if let Some(body) = raw.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(close) = line.strip_prefix("</") {
            let name = close.trim_end_matches('>').trim();
            let Some(open) = stack.pop().filter(|d| d.line > 0) else {
                return Err(ApacheConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: start,
                    message: format!("</{name}> without an opening section"),
                });
            };
            if !open.name.eq_ignore_ascii_case(name) {
                return Err(ApacheConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: start,
                    message: format!("</{name}> closes <{}>", open.name),
                });
            }
            push(&mut stack, open);
            continue;
        }
        if let Some(open) = line.strip_prefix('<') {
            let Some(inner) = open.strip_suffix('>') else {
                return Err(ApacheConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: start,
                    message: "section line without a closing `>`".into(),
                });
            };
            let mut w = words(inner);
            if w.is_empty() {
                return Err(ApacheConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: start,
                    message: "empty section name".into(),
                });
            }
            let name = w.remove(0);
            if stack.len() > 64 {
                return Err(ApacheConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: start,
                    message: "sections nested too deep".into(),
                });
            }
            stack.push(Directive {
                name,
                args: w,
                file: path.to_path_buf(),
                line: start,
                block: Some(Vec::new()),
            });
            continue;
        }
        let mut w = words(line);
        if w.is_empty() {
            continue;
        }
        let name = w.remove(0);
        push(
            &mut stack,
            Directive {
                name,
                args: w,
                file: path.to_path_buf(),
                line: start,
                block: None,
            },
        );
    }
    if stack.len() > 1 {
        let open = &stack[stack.len() - 1];
        return Err(ApacheConfigError::Syntax {
            path: path.to_path_buf(),
            line: open.line,
            message: format!("<{}> is never closed", open.name),
        });
    }
    Ok(stack.pop().and_then(|d| d.block).unwrap_or_default())
}

fn push(stack: &mut [Directive], d: Directive) {
    if let Some(block) = stack.last_mut().and_then(|top| top.block.as_mut()) {
        block.push(d);
    }
}

/// The config as httpd would load it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Directives with includes inlined and conditional sections resolved.
    pub directives: Vec<Directive>,
    pub files: Vec<PathBuf>,
    /// Loaded modules (`rewrite`, `proxy_fcgi`, `mpm_event`: the `_module` name without it).
    pub modules: BTreeSet<String>,
    pub server_root: PathBuf,
    /// Includes that matched nothing or could not be read, sections that did not parse.
    pub warnings: Vec<String>,
    /// Bytes read over every file (bounded by [`super::MAX_CONFIG_BYTES`]).
    pub bytes: u64,
}

/// `HTTPD_ROOT` and `SERVER_CONFIG_FILE` from `httpd -V` / `apache2 -V`
/// (` -D HTTPD_ROOT="/etc/httpd"`, ` -D SERVER_CONFIG_FILE="conf/httpd.conf"`).
pub fn compiled_paths(v: &str) -> Option<(PathBuf, PathBuf)> {
    let value = |name: &str| {
        v.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("-D")?.trim_start();
            let value = rest.strip_prefix(name)?.strip_prefix('=')?;
            let value = value.trim().trim_matches('"');
            (!value.is_empty() && !value.contains('\0')).then(|| PathBuf::from(value))
        })
    };
    let root = value("HTTPD_ROOT")?;
    let file = value("SERVER_CONFIG_FILE")?;
    root.is_absolute().then_some((root, file))
}

/// What the resolver carries from one directive to the next.
struct State<'a> {
    host: &'a dyn Host,
    env: &'a BTreeMap<String, String>,
    defines: BTreeMap<String, String>,
    loaded: Loaded,
}

impl State<'_> {
    fn expand(&self, s: &str) -> String {
        let mut out = s.to_string();
        for _ in 0..MAX_EXPANSIONS {
            let Some(start) = out.find("${") else { break };
            let Some(len) = out[start..].find('}') else {
                break;
            };
            let name = &out[start + 2..start + len];
            let value = self
                .defines
                .get(name)
                .or_else(|| self.env.get(name))
                .cloned()
                // httpd leaves an undefined variable as written (and warns): keep it visible
                // without looping on it.
                .unwrap_or_else(|| format!("$({name})"));
            out.replace_range(start..start + len + 1, &value);
        }
        out
    }

    fn module_loaded(&self, spec: &str) -> bool {
        let name = spec
            .trim_end_matches(".c")
            .trim_start_matches("mod_")
            .trim_end_matches("_module");
        let name = if name == "core" || name == "http_core" {
            "core"
        } else {
            name
        };
        // `<IfModule prefork.c>` names the MPM by its source file.
        BUILTIN_MODULES.contains(&name)
            || self.loaded.modules.contains(name)
            || self.loaded.modules.contains(&format!("mpm_{name}"))
    }
}

/// Reads `main` (and everything it includes) through the host. `server_root` resolves relative
/// paths (`-d`, else the distro's); `env` holds the master's environment (`APACHE_LOG_DIR`, …);
/// `defines` the `-D NAME`s of its command line.
pub fn load(
    host: &dyn Host,
    main: &Path,
    server_root: &Path,
    env: &BTreeMap<String, String>,
    defines: &[String],
) -> Result<Loaded, ApacheConfigError> {
    let text = host.read_text(main).map_err(|e| ApacheConfigError::Read {
        path: main.to_path_buf(),
        message: e.to_string(),
    })?;
    let tree = parse(&text, main)?;
    let mut state = State {
        host,
        env,
        defines: defines.iter().map(|d| (d.clone(), String::new())).collect(),
        loaded: Loaded {
            files: vec![main.to_path_buf()],
            bytes: text.len() as u64,
            server_root: server_root.to_path_buf(),
            ..Loaded::default()
        },
    };
    let directives = resolve(&mut state, tree, 0);
    let mut loaded = state.loaded;
    loaded.directives = directives;
    Ok(loaded)
}

fn resolve(state: &mut State<'_>, tree: Vec<Directive>, depth: usize) -> Vec<Directive> {
    let mut out = Vec::new();
    for mut d in tree {
        d.args = d.args.iter().map(|a| state.expand(a)).collect();
        if let Some(block) = d.block.take() {
            let lname = d.name.to_ascii_lowercase();
            let condition = match lname.as_str() {
                "ifmodule" => Some(negatable(d.arg(0), |m| state.module_loaded(m))),
                "ifdefine" => Some(negatable(d.arg(0), |n| state.defines.contains_key(n))),
                "iffile" => Some(negatable(d.arg(0), |f| {
                    let p = absolute(&state.loaded.server_root, f);
                    state.host.metadata(&p).is_ok()
                })),
                // httpd 2.4: version checks, directive and section checks hold.
                "ifversion" | "ifdirective" | "ifsection" => Some(true),
                _ => None,
            };
            match condition {
                Some(true) => out.extend(resolve(state, block, depth)),
                Some(false) => {}
                None => {
                    d.block = Some(resolve(state, block, depth));
                    out.push(d);
                }
            }
            continue;
        }
        if d.is("Define") {
            if let Some(name) = d.arg(0) {
                let value = d.arg(1).unwrap_or_default().to_string();
                state.defines.insert(name.to_string(), value);
            }
        } else if d.is("UnDefine") {
            if let Some(name) = d.arg(0) {
                state.defines.remove(name);
            }
        } else if d.is("ServerRoot") {
            if let Some(root) = d.arg(0) {
                state.loaded.server_root = PathBuf::from(root);
            }
        } else if d.is("LoadModule") {
            if let Some(name) = d.arg(0) {
                let name = name.trim_end_matches("_module");
                state.loaded.modules.insert(name.to_string());
            }
        } else if d.is("Include") || d.is("IncludeOptional") {
            include(state, &d, depth, &mut out);
            continue;
        }
        out.push(d);
    }
    out
}

/// `!name` negates a condition.
fn negatable(arg: Option<&str>, test: impl Fn(&str) -> bool) -> bool {
    match arg {
        Some(a) => match a.strip_prefix('!') {
            Some(rest) => !test(rest),
            None => test(a),
        },
        None => false,
    }
}

fn absolute(root: &Path, path: &str) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        root.join(path)
    }
}

fn include(state: &mut State<'_>, d: &Directive, depth: usize, out: &mut Vec<Directive>) {
    let optional = d.is("IncludeOptional");
    let Some(pattern) = d.arg(0) else { return };
    let pattern = absolute(&state.loaded.server_root, pattern)
        .display()
        .to_string();
    if depth >= MAX_DEPTH {
        state
            .loaded
            .warnings
            .push(format!("{}: includes nested too deep", d.origin()));
        return;
    }
    let host = state.host;
    let mut files = if pattern.contains(['*', '?', '[']) {
        host.glob(&pattern)
    } else {
        vec![PathBuf::from(&pattern)]
    };
    // A directory includes every file in it (and below), in name order.
    let mut expanded = Vec::new();
    for file in files.drain(..) {
        match host.metadata(&file) {
            Ok(meta) if meta.kind == crate::host::FileKind::Dir => {
                expanded.extend(host.glob(&format!("{}/*", file.display())));
            }
            _ => expanded.push(file),
        }
    }
    if expanded.is_empty() && !optional {
        state
            .loaded
            .warnings
            .push(format!("{}: Include {pattern} matched no file", d.origin()));
    }
    for file in expanded {
        if state.loaded.files.len() >= MAX_FILES {
            state
                .loaded
                .warnings
                .push(format!("more than {MAX_FILES} config files; rest ignored"));
            return;
        }
        if host
            .metadata(&file)
            .is_ok_and(|m| m.kind == crate::host::FileKind::Dir)
        {
            continue;
        }
        match host.read_text(&file) {
            Ok(text) if state.loaded.bytes + text.len() as u64 > super::MAX_CONFIG_BYTES => {
                state.loaded.warnings.push(format!(
                    "{}: Include {}: the config passes {} bytes in all; rest ignored",
                    d.origin(),
                    file.display(),
                    super::MAX_CONFIG_BYTES
                ));
                return;
            }
            Ok(text) => {
                state.loaded.bytes += text.len() as u64;
                state.loaded.files.push(file.clone());
                match parse(&text, &file) {
                    Ok(tree) => {
                        let inner = resolve(state, tree, depth + 1);
                        out.extend(inner);
                    }
                    Err(err) => state.loaded.warnings.push(err.to_string()),
                }
            }
            Err(err) if optional && err.is_not_found() => {}
            Err(err) => state
                .loaded
                .warnings
                .push(format!("{}: Include: {err}", d.origin())),
        }
    }
}

/// Parses Debian's `envvars` (`export NAME=value` lines; `$VAR`/`${VAR}` of earlier lines
/// expanded; shell logic ignored) into a map.
pub fn parse_envvars(text: &str) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = value.trim().trim_matches('"').trim_matches('\'');
        let mut out = String::new();
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '$' {
                out.push(c);
                continue;
            }
            let braced = chars.peek() == Some(&'{');
            if braced {
                chars.next();
            }
            let mut var = String::new();
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphanumeric() || n == '_' {
                    var.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            if braced && chars.peek() == Some(&'}') {
                chars.next();
            }
            out.push_str(env.get(&var).map(String::as_str).unwrap_or(""));
        }
        env.insert(name.to_string(), out);
    }
    env
}

/// Parses `/proc/PID/environ` (NUL-separated `NAME=value`).
pub fn parse_environ(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .take(4096)
        .collect()
}

/// A `Timeout`/`ProxyTimeout` value: seconds, or `NNNms`.
pub fn parse_seconds(value: &str) -> Option<Duration> {
    if let Some(ms) = value.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    value
        .trim_end_matches('s')
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// `Listen [ADDR:]PORT [PROTOCOL]`.
pub fn parse_listen(args: &[String], origin: Origin) -> Option<ApacheListen> {
    let first = args.first()?;
    let (host, port) = if let Ok(port) = first.parse::<u16>() {
        (None, port)
    } else if let Some(rest) = first.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (Some(format!("[{h}]")), p.parse().ok()?)
    } else {
        let (h, p) = first.rsplit_once(':')?;
        (Some(h.to_string()), p.parse().ok()?)
    };
    let protocol = args.get(1).map(|p| p.to_ascii_lowercase());
    Some(ApacheListen {
        host,
        port,
        ssl: protocol.as_deref() == Some("https") || (port == 443 && protocol.is_none()),
        origin,
    })
}

/// The backend of a `ProxyPass` URL or a `SetHandler "proxy:…"` value: `fcgi://host:port/…`,
/// `unix:/path.sock|fcgi://localhost/…`, `http://host[:port]/…`, `balancer://name`.
pub fn parse_proxy_url(raw: &str) -> Option<(UpstreamKind, Option<Address>)> {
    let s = raw.strip_prefix("proxy:").unwrap_or(raw);
    let kind_of = |scheme: &str| match scheme.to_ascii_lowercase().as_str() {
        "fcgi" => Some(UpstreamKind::Fastcgi),
        "http" | "https" | "ws" | "wss" | "h2" | "h2c" => Some(UpstreamKind::Proxy),
        "uwsgi" => Some(UpstreamKind::Uwsgi),
        "balancer" | "ajp" | "scgi" | "fdpass" => Some(UpstreamKind::Proxy),
        _ => None,
    };
    if let Some(rest) = s.strip_prefix("unix:") {
        let (path, url) = rest.split_once('|').unwrap_or((rest, "fcgi://localhost"));
        let scheme = url.split("://").next().unwrap_or("fcgi");
        return Some((
            kind_of(scheme).unwrap_or(UpstreamKind::Fastcgi),
            Some(Address::Unix(PathBuf::from(path))),
        ));
    }
    let (scheme, rest) = s.split_once("://")?;
    let kind = kind_of(scheme)?;
    if scheme.eq_ignore_ascii_case("balancer") {
        return Some((kind, None));
    }
    let host_port = rest.split('/').next().unwrap_or(rest);
    if host_port.is_empty() || host_port.contains('$') {
        return Some((kind, None));
    }
    let has_port = if host_port.starts_with('[') {
        host_port.contains("]:")
    } else {
        host_port.contains(':')
    };
    let address = if has_port {
        host_port.to_string()
    } else {
        let port = match scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => 443,
            "fcgi" => 8000,
            _ => 80,
        };
        format!("{host_port}:{port}")
    };
    Some((kind, Some(Address::Tcp(address))))
}

/// Translates an httpd `LogFormat` into the nginx `log_format` variables the access-log parser
/// reads (`%h` → `$remote_addr`, `%t` → `[$apache_time_start]`, `%>s` → `$status`, …); directives it
/// does not read become `$apache_…` placeholders that are skipped over.
pub fn nginx_format(format: &str) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut other = 0usize;
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(n) => out.push(n),
                None => {}
            }
            continue;
        }
        if c == '$' {
            // A literal dollar would start an nginx variable.
            out.push_str("${apache_dollar}");
            continue;
        }
        if c != '%' {
            out.push(c);
            continue;
        }
        // %[condition][<>]{arg}X
        while chars
            .peek()
            .is_some_and(|n| n.is_ascii_digit() || *n == ',' || *n == '!' || *n == '<' || *n == '>')
        {
            chars.next();
        }
        let mut arg = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            for n in chars.by_ref() {
                if n == '}' {
                    break;
                }
                arg.push(n);
            }
        }
        let Some(letter) = chars.next() else { break };
        let var = match letter {
            '%' => {
                out.push('%');
                continue;
            }
            'h' | 'a' => "remote_addr".to_string(),
            't' if arg.is_empty() => {
                out.push_str("[$apache_time_start]");
                continue;
            }
            'D' => "apache_request_us".to_string(),
            'r' => "request".to_string(),
            's' => "status".to_string(),
            'b' | 'B' | 'O' => "body_bytes_sent".to_string(),
            'T' if arg.is_empty() || arg == "s" => "request_time".to_string(),
            'i' => match arg.to_ascii_lowercase().as_str() {
                "referer" => "http_referer".into(),
                "user-agent" => "http_user_agent".into(),
                "x-forwarded-for" => "http_x_forwarded_for".into(),
                "cf-connecting-ip" => "http_cf_connecting_ip".into(),
                "x-real-ip" => "http_x_real_ip".into(),
                "true-client-ip" => "http_true_client_ip".into(),
                _ => {
                    other += 1;
                    format!("apache_{other}")
                }
            },
            _ => {
                other += 1;
                format!("apache_{other}")
            }
        };
        out.push('$');
        out.push_str(&var);
    }
    out
}

fn src<T>(value: T, d: &Directive) -> Sourced<T> {
    Sourced::new(value, d.origin())
}

/// A log path: piped (`|rotatelogs …`) and syslog logs have none.
fn log_path(root: &Path, value: &str) -> Option<PathBuf> {
    if value.starts_with('|') || value.starts_with("syslog") || value.is_empty() {
        return None;
    }
    Some(absolute(root, value))
}

/// Fills an [`Apache`] from a loaded config.
pub fn extract(loaded: &Loaded) -> Apache {
    let root = &loaded.server_root;
    let mut a = Apache {
        server_root: Some(root.clone()),
        modules: loaded.modules.iter().cloned().collect(),
        config_files: loaded.files.clone(),
        ..Apache::default()
    };
    a.mpm = loaded
        .modules
        .iter()
        .find_map(|m| m.strip_prefix("mpm_"))
        .map(str::to_string);
    // Named formats first (CustomLog may name one defined later in the file order).
    let mut formats: BTreeMap<String, String> = BTreeMap::new();
    formats.insert("combined".into(), COMBINED.into());
    formats.insert("common".into(), COMMON.into());
    collect_formats(&loaded.directives, &mut formats);
    a.log_formats = formats.clone();
    let mut pending_logs: Vec<(String, String, Origin)> = Vec::new();
    walk(&loaded.directives, root, None, &mut a, &mut pending_logs);
    for (path, format, origin) in pending_logs {
        let Some(path) = log_path(root, &path) else {
            continue;
        };
        let (name, raw) = if format.contains('%') {
            ("(inline)".to_string(), Some(format))
        } else {
            let raw = formats.get(&format).cloned();
            (format, raw)
        };
        if a.access_logs.iter().any(|l| l.path == path) {
            continue;
        }
        a.access_logs.push(AccessLog {
            path,
            format_name: name,
            format: raw.map(|f| nginx_format(&f)),
            origin,
        });
    }
    if a.error_logs.is_empty() {
        // httpd's compiled-in default, relative to ServerRoot.
        let default = if root.starts_with("/etc/httpd") {
            root.join("logs/error_log")
        } else {
            PathBuf::from("/var/log/apache2/error.log")
        };
        a.error_logs.push(Sourced::default_value(default));
    }
    a
}

fn collect_formats(tree: &[Directive], formats: &mut BTreeMap<String, String>) {
    for d in tree {
        if d.is("LogFormat") {
            if let (Some(fmt), Some(name)) = (d.arg(0), d.arg(1)) {
                formats.insert(name.to_string(), fmt.to_string());
            }
        }
        if let Some(block) = &d.block {
            collect_formats(block, formats);
        }
    }
}

/// Walks the tree; `vhost` is the index of the enclosing `<VirtualHost>`.
fn walk(
    tree: &[Directive],
    root: &Path,
    vhost: Option<usize>,
    a: &mut Apache,
    logs: &mut Vec<(String, String, Origin)>,
) {
    for d in tree {
        if let Some(block) = &d.block {
            if d.is("VirtualHost") {
                a.vhosts.push(VirtualHost {
                    addresses: d.args.clone(),
                    server_name: None,
                    aliases: Vec::new(),
                    document_root: None,
                    error_log: None,
                    ssl: false,
                    origin: d.origin(),
                });
                let i = a.vhosts.len() - 1;
                walk(block, root, Some(i), a, logs);
            } else if d.is("Location") || d.is("LocationMatch") {
                let status = block
                    .iter()
                    .any(|c| c.is("SetHandler") && c.arg(0).is_some_and(|h| h == "server-status"));
                if status && a.status_path.is_none() {
                    if let Some(p) = d.arg(0) {
                        a.status_path = Some(src(p.to_string(), d));
                    }
                }
                // `ProxyPass URL` inside `<Location /path>`.
                for c in block.iter().filter(|c| c.is("ProxyPass")) {
                    if let Some(url) = c.arg(0) {
                        proxy_target(a, vhost, "ProxyPass", url, c);
                    }
                }
                walk(block, root, vhost, a, logs);
            } else {
                walk(block, root, vhost, a, logs);
            }
            continue;
        }
        let name = d.name.to_ascii_lowercase();
        let first = d.arg(0).unwrap_or_default();
        match name.as_str() {
            "listen" => {
                if let Some(l) = parse_listen(&d.args, d.origin()) {
                    a.listens.push(l);
                }
            }
            "user" => a.user = Some(src(first.to_string(), d)),
            "group" => a.group = Some(src(first.to_string(), d)),
            "servername" => match vhost {
                Some(i) => a.vhosts[i].server_name = Some(first.to_string()),
                None => a.server_name = Some(src(first.to_string(), d)),
            },
            "serveralias" => {
                if let Some(i) = vhost {
                    a.vhosts[i].aliases.extend(d.args.iter().cloned());
                }
            }
            "documentroot" => {
                let v = src(absolute(root, first), d);
                match vhost {
                    Some(i) => a.vhosts[i].document_root = Some(v),
                    None => a.document_root = Some(v),
                }
            }
            "sslengine" => {
                if let Some(i) = vhost {
                    a.vhosts[i].ssl = first.eq_ignore_ascii_case("on");
                }
            }
            "errorlog" => {
                if let Some(p) = log_path(root, first) {
                    let v = src(p, d);
                    if let Some(i) = vhost {
                        a.vhosts[i].error_log = Some(v.clone());
                    }
                    if !a.error_logs.iter().any(|l| l.value == v.value) {
                        a.error_logs.push(v);
                    }
                }
            }
            "errorlogformat" => a.error_log_format = Some(src(first.to_string(), d)),
            "customlog" => {
                if let Some(fmt) = d.arg(1) {
                    logs.push((first.to_string(), fmt.to_string(), d.origin()));
                }
            }
            "transferlog" => logs.push((first.to_string(), "common".into(), d.origin())),
            "proxypass" | "proxypassmatch" if d.args.len() >= 2 && d.arg(1) != Some("!") => {
                let url = d.args[1].clone();
                proxy_target(a, vhost, &d.name, &url, d);
                // `timeout=N` on the ProxyPass line.
                for p in &d.args[2..] {
                    if let Some(t) = p.strip_prefix("timeout=").and_then(parse_seconds) {
                        a.proxy_timeout = tighter(a.proxy_timeout.take(), src(t, d));
                    }
                }
            }
            "sethandler" if first.starts_with("proxy:") => {
                proxy_target(a, vhost, "SetHandler", first, d);
            }
            "timeout" => {
                if let Some(t) = parse_seconds(first) {
                    a.timeout = Some(src(t, d));
                }
            }
            "proxytimeout" => {
                if let Some(t) = parse_seconds(first) {
                    a.proxy_timeout = tighter(a.proxy_timeout.take(), src(t, d));
                }
            }
            "maxrequestworkers" | "maxclients" => {
                if let Ok(n) = first.parse() {
                    a.max_request_workers = Some(src(n, d));
                }
            }
            "serverlimit" => {
                if let Ok(n) = first.parse() {
                    a.server_limit = Some(src(n, d));
                }
            }
            "threadsperchild" => {
                if let Ok(n) = first.parse() {
                    a.threads_per_child = Some(src(n, d));
                }
            }
            "listenbacklog" => {
                if let Ok(n) = first.parse() {
                    a.listen_backlog = Some(src(n, d));
                }
            }
            "remoteipheader" => a.remote_ip.header = Some(src(first.to_string(), d)),
            "remoteiptrustedproxy" | "remoteipinternalproxy" => {
                for v in &d.args {
                    a.remote_ip.trusted.push(src(v.clone(), d));
                }
            }
            "remoteiptrustedproxylist" | "remoteipinternalproxylist" => {
                a.remote_ip
                    .trusted_lists
                    .push(src(absolute(root, first), d));
            }
            _ => {}
        }
    }
}

fn tighter(old: Option<Sourced<Duration>>, new: Sourced<Duration>) -> Option<Sourced<Duration>> {
    match old {
        Some(o) if o.value <= new.value => Some(o),
        _ => Some(new),
    }
}

fn proxy_target(a: &mut Apache, vhost: Option<usize>, directive: &str, url: &str, d: &Directive) {
    let Some((kind, address)) = parse_proxy_url(url) else {
        return;
    };
    a.proxy_targets.push(ApacheProxyTarget {
        kind,
        address,
        directive: directive.to_string(),
        raw: url.to_string(),
        vhost,
        origin: d.origin(),
    });
}

impl Apache {
    /// The effective worker limit: `MaxRequestWorkers`, capped by `ServerLimit` ×
    /// `ThreadsPerChild` for the threaded MPMs; the MPM's default when unset.
    pub fn worker_limit(&self) -> Option<Sourced<u32>> {
        let prefork = self.mpm.as_deref() == Some("prefork");
        let threads = if prefork {
            1
        } else {
            self.threads_per_child.as_ref().map_or(25, |t| t.value)
        };
        let servers = self
            .server_limit
            .as_ref()
            .map_or(if prefork { 256 } else { 16 }, |s| s.value);
        let cap = servers.saturating_mul(threads);
        match &self.max_request_workers {
            Some(m) if m.value > cap => Some(Sourced::new(cap, m.origin.clone())),
            Some(m) => Some(m.clone()),
            None if self.mpm.is_some() => Some(Sourced::default_value(if prefork {
                256
            } else {
                cap.min(400)
            })),
            None => None,
        }
    }

    /// The timeout mod_proxy uses for its backends: `ProxyTimeout`, else `Timeout` (60 s).
    pub fn backend_timeout(&self) -> Sourced<Duration> {
        self.proxy_timeout
            .clone()
            .or_else(|| self.timeout.clone())
            .unwrap_or_else(|| Sourced::default_value(Duration::from_secs(60)))
    }

    /// Every TCP port it listens on.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.listens.iter().map(|l| l.port).collect()
    }
}

/// Reads the files named by `RemoteIPTrustedProxyList` (one address or range a line, `#`
/// comments) into the trusted list.
pub fn read_remoteip_lists(host: &dyn Host, a: &mut Apache) {
    let lists = a.remote_ip.trusted_lists.clone();
    for list in lists {
        let Ok(text) = host.read_text(&list.value) else {
            continue;
        };
        for (i, line) in text.lines().enumerate().take(100_000) {
            let v = line.split('#').next().unwrap_or("").trim();
            for word in v.split_whitespace() {
                a.remote_ip.trusted.push(Sourced::new(
                    word.to_string(),
                    Origin::File {
                        path: list.value.clone(),
                        line: i + 1,
                    },
                ));
            }
        }
    }
}

/// nginx's view of the same real-IP settings, for the CDN coverage checks.
pub fn as_real_ip(r: &RemoteIp) -> crate::discover::RealIp {
    crate::discover::RealIp {
        set_real_ip_from: r.trusted.clone(),
        real_ip_header: r.header.clone(),
        real_ip_recursive: true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::fixture::FixtureHost;

    const MAIN: &str = r#"# Debian layout
DefaultRuntimeDir ${APACHE_RUN_DIR}
PidFile ${APACHE_PID_FILE}
Timeout 300
User ${APACHE_RUN_USER}
Group ${APACHE_RUN_GROUP}
ErrorLog ${APACHE_LOG_DIR}/error.log
IncludeOptional mods-enabled/*.load
IncludeOptional mods-enabled/*.conf
Include ports.conf
LogFormat "%h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"" combined
LogFormat "%{X-Forwarded-For}i %h %t \"%r\" %>s %b %D" proxied
<IfModule mod_nothere.c>
  Timeout 5
</IfModule>
IncludeOptional sites-enabled/*.conf
"#;

    const SITE: &str = r#"<VirtualHost *:80>
    ServerName example.com
    ServerAlias www.example.com \
        shop.example.com
    DocumentRoot /var/www/example
    ErrorLog ${APACHE_LOG_DIR}/example-error.log
    CustomLog ${APACHE_LOG_DIR}/example-access.log proxied
    ProxyTimeout 30
    <FilesMatch "\.php$">
        SetHandler "proxy:unix:/run/php/php8.2-fpm.sock|fcgi://localhost"
    </FilesMatch>
    ProxyPass /api/ http://127.0.0.1:3000/ timeout=10
    ProxyPassMatch ^/(.*\.php)$ fcgi://127.0.0.1:9000/var/www/example/$1
    <Location "/server-status">
        SetHandler server-status
    </Location>
    RemoteIPHeader CF-Connecting-IP
    RemoteIPTrustedProxy 173.245.48.0/20 103.21.244.0/22
</VirtualHost>
"#;

    fn debian() -> FixtureHost {
        FixtureHost::new()
            .file("/etc/apache2/apache2.conf", MAIN)
            .file("/etc/apache2/ports.conf", "Listen 80\n<IfModule ssl_module>\n  Listen 443\n</IfModule>\n")
            .file(
                "/etc/apache2/mods-enabled/mpm_event.load",
                "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n",
            )
            .file(
                "/etc/apache2/mods-enabled/mpm_event.conf",
                "<IfModule mpm_event_module>\n\tStartServers 2\n\tThreadsPerChild 25\n\tMaxRequestWorkers 150\n</IfModule>\n",
            )
            .file(
                "/etc/apache2/mods-enabled/proxy_fcgi.load",
                "LoadModule proxy_fcgi_module /usr/lib/apache2/modules/mod_proxy_fcgi.so\n",
            )
            .file("/etc/apache2/sites-enabled/000-default.conf", SITE)
    }

    fn env() -> BTreeMap<String, String> {
        parse_envvars(
            "unset HOME\nexport APACHE_RUN_USER=www-data\nexport APACHE_RUN_GROUP=www-data\nSUFFIX=\nexport APACHE_LOG_DIR=/var/log/apache2$SUFFIX\nexport APACHE_PID_FILE=/var/run/apache2/apache2$SUFFIX.pid\n",
        )
    }

    #[test]
    fn debian_layout_with_includes_defines_and_sections() {
        let host = debian();
        let loaded = load(
            &host,
            Path::new("/etc/apache2/apache2.conf"),
            Path::new("/etc/apache2"),
            &env(),
            &[],
        )
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let a = extract(&loaded);
        assert_eq!(a.mpm.as_deref(), Some("event"));
        let limit = a.worker_limit().unwrap();
        assert_eq!(limit.value, 150);
        assert_eq!(
            limit.origin.to_string(),
            "/etc/apache2/mods-enabled/mpm_event.conf:4"
        );
        assert_eq!(a.user.as_ref().unwrap().value, "www-data");
        assert_eq!(a.timeout.as_ref().unwrap().value, Duration::from_secs(300));
        // ProxyTimeout 30, then the tighter timeout=10 of a ProxyPass.
        assert_eq!(a.backend_timeout().value, Duration::from_secs(10));
        assert_eq!(a.ports(), BTreeSet::from([80]));
        let errors: Vec<String> = a
            .error_logs
            .iter()
            .map(|l| l.value.display().to_string())
            .collect();
        assert_eq!(
            errors,
            vec![
                "/var/log/apache2/error.log",
                "/var/log/apache2/example-error.log"
            ]
        );
        let v = &a.vhosts[0];
        assert_eq!(v.server_name.as_deref(), Some("example.com"));
        assert_eq!(v.aliases, vec!["www.example.com", "shop.example.com"]);
        assert_eq!(v.addresses, vec!["*:80"]);
        assert_eq!(
            v.document_root.as_ref().unwrap().value,
            PathBuf::from("/var/www/example")
        );
        assert_eq!(
            v.origin.to_string(),
            "/etc/apache2/sites-enabled/000-default.conf:1"
        );
        let targets: Vec<String> = a
            .proxy_targets
            .iter()
            .map(|t| {
                format!(
                    "{} {:?}",
                    t.directive,
                    t.address.as_ref().map(|x| x.to_string())
                )
            })
            .collect();
        assert_eq!(
            targets,
            vec![
                "SetHandler Some(\"unix:/run/php/php8.2-fpm.sock\")",
                "ProxyPass Some(\"127.0.0.1:3000\")",
                "ProxyPassMatch Some(\"127.0.0.1:9000\")",
            ]
        );
        assert_eq!(a.proxy_targets[0].kind, UpstreamKind::Fastcgi);
        assert_eq!(a.status_path.as_ref().unwrap().value, "/server-status");
        assert_eq!(
            a.remote_ip.header.as_ref().unwrap().value,
            "CF-Connecting-IP"
        );
        assert_eq!(a.remote_ip.trusted.len(), 2);
        let log = &a.access_logs[0];
        assert_eq!(
            log.path,
            PathBuf::from("/var/log/apache2/example-access.log")
        );
        assert_eq!(log.format_name, "proxied");
        assert_eq!(
            log.format.as_deref(),
            Some(
                r#"$http_x_forwarded_for $remote_addr [$apache_time_start] "$request" $status $body_bytes_sent $apache_request_us"#
            )
        );
        assert!(loaded.modules.contains("proxy_fcgi"));
    }

    #[test]
    fn rhel_layout_relative_includes_and_ifdefine() {
        let host = FixtureHost::new()
            .file(
                "/etc/httpd/conf/httpd.conf",
                "ServerRoot \"/etc/httpd\"\nListen 8080\nInclude conf.modules.d/*.conf\n<IfDefine FOREGROUND>\nDefine fg yes\n</IfDefine>\n<IfDefine !FOREGROUND>\nListen 9999\n</IfDefine>\nIncludeOptional conf.d/*.conf\nCustomLog \"logs/access_log\" combined\n",
            )
            .file(
                "/etc/httpd/conf.modules.d/00-mpm.conf",
                "LoadModule mpm_prefork_module modules/mod_mpm_prefork.so\n",
            )
            .file("/etc/httpd/conf.d/php.conf", "<IfModule prefork.c>\nMaxRequestWorkers 50\n</IfModule>\n<IfModule mpm_prefork_module>\nServerLimit 40\n</IfModule>\n");
        let loaded = load(
            &host,
            Path::new("/etc/httpd/conf/httpd.conf"),
            Path::new("/etc/httpd"),
            &BTreeMap::new(),
            &["FOREGROUND".to_string()],
        )
        .unwrap();
        let a = extract(&loaded);
        assert_eq!(a.mpm.as_deref(), Some("prefork"));
        assert_eq!(a.ports(), BTreeSet::from([8080]));
        // ServerLimit 40 caps MaxRequestWorkers 50 under prefork.
        assert_eq!(a.worker_limit().unwrap().value, 40);
        assert_eq!(
            a.error_logs[0].value,
            PathBuf::from("/etc/httpd/logs/error_log")
        );
        assert_eq!(
            a.access_logs[0].path,
            PathBuf::from("/etc/httpd/logs/access_log")
        );
        assert!(a.access_logs[0].format.as_deref().unwrap().starts_with(
            "$remote_addr $apache_1 $apache_2 [$apache_time_start] \"$request\" $status"
        ));
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let err = parse("<VirtualHost *:80>\nServerName x\n", Path::new("/a.conf")).unwrap_err();
        assert_eq!(err.to_string(), "/a.conf:1: <VirtualHost> is never closed");
        let err = parse("ServerName x\n</Directory>\n", Path::new("/a.conf")).unwrap_err();
        assert!(err.to_string().starts_with("/a.conf:2:"), "{err}");
        let err = parse("<If x>\n</Else>\n", Path::new("/a.conf")).unwrap_err();
        assert!(err.to_string().contains("closes <If>"), "{err}");
    }

    #[test]
    fn compiled_paths_come_from_dash_v() {
        let v = "Server version: Apache/2.4.62 (cPanel)\nServer compiled with....\n -D APR_HAS_SENDFILE\n -D HTTPD_ROOT=\"/etc/apache2\"\n -D SUEXEC_BIN=\"/usr/sbin/suexec\"\n -D SERVER_CONFIG_FILE=\"conf/httpd.conf\"\n";
        assert_eq!(
            compiled_paths(v),
            Some((
                PathBuf::from("/etc/apache2"),
                PathBuf::from("conf/httpd.conf")
            ))
        );
        assert_eq!(
            compiled_paths(" -D HTTPD_ROOT=\"relative\"\n -D SERVER_CONFIG_FILE=\"x\"\n"),
            None
        );
        assert_eq!(compiled_paths(" -D HTTPD_ROOT=\"/etc/httpd\"\n"), None);
    }

    #[test]
    fn includes_are_bounded_in_total_bytes() {
        // Ten 4 MiB files (a panel's per-customer includes): 40 MiB if all were inlined.
        let big = format!("# {}\nServerName x\n", "x".repeat(4 << 20));
        let mut host = FixtureHost::new().file(
            "/etc/apache2/apache2.conf",
            "IncludeOptional /home/*/apache.conf\n",
        );
        for i in 0..10 {
            host = host.file(format!("/home/u{i}/apache.conf"), big.clone());
        }
        let loaded = load(
            &host,
            Path::new("/etc/apache2/apache2.conf"),
            Path::new("/etc/apache2"),
            &BTreeMap::new(),
            &[],
        )
        .unwrap();
        assert!(loaded.bytes <= crate::discover::MAX_CONFIG_BYTES);
        assert!(loaded.files.len() < 10, "{}", loaded.files.len());
        assert!(
            loaded.warnings.iter().any(|w| w.contains("in all")),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn include_loops_and_self_defines_stay_bounded() {
        let host = FixtureHost::new().file(
            "/etc/apache2/apache2.conf",
            "Define A ${A}${A}\nServerName ${A}\nInclude /etc/apache2/apache2.conf\n",
        );
        let loaded = load(
            &host,
            Path::new("/etc/apache2/apache2.conf"),
            Path::new("/etc/apache2"),
            &BTreeMap::new(),
            &[],
        )
        .unwrap();
        assert!(loaded.warnings.iter().any(|w| w.contains("too deep")));
    }

    #[test]
    fn proxy_urls() {
        assert_eq!(
            parse_proxy_url("proxy:fcgi://127.0.0.1:9000"),
            Some((
                UpstreamKind::Fastcgi,
                Some(Address::Tcp("127.0.0.1:9000".into()))
            ))
        );
        assert_eq!(
            parse_proxy_url("http://backend/"),
            Some((UpstreamKind::Proxy, Some(Address::Tcp("backend:80".into()))))
        );
        assert_eq!(
            parse_proxy_url("balancer://mycluster/"),
            Some((UpstreamKind::Proxy, None))
        );
        assert_eq!(parse_proxy_url("/local/path"), None);
    }

    #[test]
    fn log_formats_translate() {
        assert_eq!(
            nginx_format(COMBINED),
            r#"$remote_addr $apache_1 $apache_2 [$apache_time_start] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#
        );
        assert_eq!(
            nginx_format("%{%Y}t 100%% $x"),
            "$apache_1 100% ${apache_dollar}x"
        );
        crate::logs::access::AccessFormat::compile(&nginx_format(COMBINED)).unwrap();
    }
}
