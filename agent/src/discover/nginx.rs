//! nginx configuration: a small tokenizer and parser (quotes, escapes, comments, blocks) over the
//! bytes the host returned, `include` resolved (globs, relative to the main config's directory),
//! and the extraction of what the probes and log readers need into [`Nginx`]: user, workers,
//! logs and their formats, servers and listens, upstream targets and groups, timeouts, buffer
//! sizes, real-IP directives. Every value keeps its file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::{Host, HostExt};

use super::model::{
    AccessLog, Address, Listen, Nginx, Origin, Server, Sourced, UpstreamGroup, UpstreamKind,
    UpstreamTarget,
};

/// nginx's built-in `combined` format.
pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// The most files one config may pull in (include loops, huge globs).
const MAX_FILES: usize = 512;
const MAX_DEPTH: usize = 16;
/// The most bytes the main file and every include may hold together.
pub const MAX_TOTAL_BYTES: u64 = super::MAX_CONFIG_BYTES;

/// Why a config could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NginxConfigError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One directive, with its block when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub file: PathBuf,
    pub line: usize,
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    fn origin(&self) -> Origin {
        Origin::File {
            path: self.file.clone(),
            line: self.line,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String, usize),
    Semi(usize),
    Open(usize),
    Close(usize),
}

fn tokenize(text: &str, path: &Path) -> Result<Vec<Token>, NginxConfigError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut line = 1;
    let syntax = |line: usize, message: &str| NginxConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        message: message.to_string(),
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ';' => {
                tokens.push(Token::Semi(line));
                i += 1;
            }
            '{' => {
                tokens.push(Token::Open(line));
                i += 1;
            }
            '}' => {
                tokens.push(Token::Close(line));
                i += 1;
            }
            '"' | '\'' => {
                let quote = c;
                let start_line = line;
                let mut word = String::new();
                i += 1;
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err(syntax(start_line, "unterminated quoted string"));
                    };
                    if ch == '\\' {
                        match chars.get(i + 1) {
                            Some(&next) if next == quote || next == '\\' => {
                                word.push(next);
                                i += 2;
                                continue;
                            }
                            Some(&'n') => {
                                word.push('\n');
                                i += 2;
                                continue;
                            }
                            Some(&'t') => {
                                word.push('\t');
                                i += 2;
                                continue;
                            }
                            _ => {}
                        }
                    }
                    if ch == quote {
                        i += 1;
                        break;
                    }
                    if ch == '\n' {
                        line += 1;
                    }
                    word.push(ch);
                    i += 1;
                }
                tokens.push(Token::Word(word, start_line));
            }
            _ => {
                let mut word = String::new();
                let mut in_var = false;
                while let Some(&ch) = chars.get(i) {
                    if in_var && ch == '}' {
                        in_var = false;
                        word.push(ch);
                        i += 1;
                        continue;
                    }
                    if ch.is_whitespace() || ch == ';' || ch == '}' {
                        break;
                    }
                    if ch == '{' {
                        if !word.ends_with('$') {
                            break;
                        }
                        in_var = true;
                    }
                    if ch == '\\' {
                        if let Some(&next) = chars.get(i + 1) {
                            word.push(next);
                            i += 2;
                            continue;
                        }
                    }
                    word.push(ch);
                    i += 1;
                }
                tokens.push(Token::Word(word, line));
            }
        }
    }
    Ok(tokens)
}

/// Parses one file's text into directives (includes are not resolved here).
pub fn parse(text: &str, path: &Path) -> Result<Vec<Directive>, NginxConfigError> {
    let tokens = tokenize(text, path)?;
    let mut pos = 0;
    let directives = parse_block(&tokens, &mut pos, path, 0)?;
    if let Some(Token::Close(line)) = tokens.get(pos) {
        return Err(NginxConfigError::Syntax {
            path: path.to_path_buf(),
            line: *line,
            message: "unexpected \"}\"".to_string(),
        });
    }
    Ok(directives)
}

fn parse_block(
    tokens: &[Token],
    pos: &mut usize,
    path: &Path,
    depth: usize,
) -> Result<Vec<Directive>, NginxConfigError> {
    let syntax = |line: usize, message: &str| NginxConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        message: message.to_string(),
    };
    if depth > 64 {
        return Err(syntax(0, "blocks nested too deep"));
    }
    let mut out = Vec::new();
    while let Some(token) = tokens.get(*pos) {
        match token {
            Token::Close(line) => {
                if depth == 0 {
                    return Err(syntax(*line, "unexpected \"}\""));
                }
                *pos += 1;
                return Ok(out);
            }
            Token::Semi(line) | Token::Open(line) => {
                return Err(syntax(
                    *line,
                    "unexpected \";\" or \"{\" without a directive",
                ));
            }
            Token::Word(name, line) => {
                let line = *line;
                let name = name.clone();
                *pos += 1;
                let mut args = Vec::new();
                loop {
                    match tokens.get(*pos) {
                        Some(Token::Word(w, _)) => {
                            args.push(w.clone());
                            *pos += 1;
                        }
                        Some(Token::Semi(_)) => {
                            *pos += 1;
                            out.push(Directive {
                                name,
                                args,
                                file: path.to_path_buf(),
                                line,
                                block: None,
                            });
                            break;
                        }
                        Some(Token::Open(_)) => {
                            *pos += 1;
                            let block = parse_block(tokens, pos, path, depth + 1)?;
                            out.push(Directive {
                                name,
                                args,
                                file: path.to_path_buf(),
                                line,
                                block: Some(block),
                            });
                            break;
                        }
                        Some(Token::Close(l)) => {
                            return Err(syntax(*l, "unexpected \"}\" (missing \";\"?)"));
                        }
                        None => return Err(syntax(line, "unexpected end of file")),
                    }
                }
            }
        }
    }
    if depth > 0 {
        return Err(syntax(0, "unexpected end of file, expecting \"}\""));
    }
    Ok(out)
}

/// A loaded configuration: the directive tree with includes inlined, and every file read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    pub directives: Vec<Directive>,
    pub files: Vec<PathBuf>,
    /// Includes that matched nothing or could not be read (nginx itself would refuse a missing
    /// non-glob include; discovery notes it and goes on).
    pub warnings: Vec<String>,
    /// Bytes read over every file (bounded by [`MAX_TOTAL_BYTES`]).
    pub bytes: u64,
}

/// Where config files come from: the host's files, or the files of an `nginx -T` dump.
trait Source {
    fn read(&self, path: &Path) -> Result<String, String>;
    fn glob(&self, pattern: &str) -> Vec<PathBuf>;
}

struct HostSource<'a>(&'a dyn Host);

impl Source for HostSource<'_> {
    fn read(&self, path: &Path) -> Result<String, String> {
        self.0.read_text(path).map_err(|e| e.to_string())
    }
    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        self.0.glob(pattern)
    }
}

struct DumpSource(BTreeMap<PathBuf, String>);

impl Source for DumpSource {
    fn read(&self, path: &Path) -> Result<String, String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| format!("{}: not in the nginx -T output", path.display()))
    }
    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let Ok(p) = glob::Pattern::new(pattern) else {
            return Vec::new();
        };
        let opts = glob::MatchOptions {
            require_literal_separator: true,
            require_literal_leading_dot: true,
            ..Default::default()
        };
        self.0
            .keys()
            .filter(|k| p.matches_path_with(k, opts))
            .cloned()
            .collect()
    }
}

/// Splits `nginx -T` output into its files (`# configuration file PATH:` headers).
pub fn split_dump(text: &str) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut current: Option<(PathBuf, String)> = None;
    for line in text.lines() {
        if let Some(path) = line
            .strip_prefix("# configuration file ")
            .and_then(|r| r.strip_suffix(':'))
        {
            if let Some((p, t)) = current.take() {
                files.insert(p, t);
            }
            current = Some((PathBuf::from(path), String::new()));
            continue;
        }
        if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    if let Some((p, t)) = current {
        files.insert(p, t);
    }
    files
}

/// Reads `main` and every file it includes through the host.
pub fn load(host: &dyn Host, main: &Path) -> Result<Loaded, NginxConfigError> {
    load_from(&HostSource(host), main)
}

/// Loads the configuration from `nginx -T` output (for when the files cannot be read).
pub fn load_dump(dump: &str, main: &Path) -> Result<Loaded, NginxConfigError> {
    load_from(&DumpSource(split_dump(dump)), main)
}

fn load_from(source: &dyn Source, main: &Path) -> Result<Loaded, NginxConfigError> {
    let conf_dir = main.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut loaded = Loaded::default();
    let text = source
        .read(main)
        .map_err(|message| NginxConfigError::Read {
            path: main.to_path_buf(),
            message,
        })?;
    loaded.files.push(main.to_path_buf());
    loaded.bytes = text.len() as u64;
    let tree = parse(&text, main)?;
    loaded.directives = inline_includes(source, tree, &conf_dir, &mut loaded, 0);
    Ok(loaded)
}

fn inline_includes(
    host: &dyn Source,
    tree: Vec<Directive>,
    conf_dir: &Path,
    loaded: &mut Loaded,
    depth: usize,
) -> Vec<Directive> {
    let mut out = Vec::new();
    for mut directive in tree {
        if directive.name == "include" && directive.block.is_none() {
            let Some(pattern) = directive.args.first() else {
                continue;
            };
            let pattern = if pattern.starts_with('/') {
                pattern.clone()
            } else {
                conf_dir.join(pattern).display().to_string()
            };
            if depth >= MAX_DEPTH {
                loaded
                    .warnings
                    .push(format!("{}: includes nested too deep", directive.origin()));
                continue;
            }
            let files = if pattern.contains(['*', '?', '[']) {
                host.glob(&pattern)
            } else {
                vec![PathBuf::from(&pattern)]
            };
            if files.is_empty() {
                loaded.warnings.push(format!(
                    "{}: include {pattern} matched no file",
                    directive.origin()
                ));
            }
            for file in files {
                if loaded.files.len() >= MAX_FILES {
                    loaded
                        .warnings
                        .push(format!("more than {MAX_FILES} config files; rest ignored"));
                    break;
                }
                match host.read(&file) {
                    Ok(text) if loaded.bytes + text.len() as u64 > MAX_TOTAL_BYTES => {
                        loaded.warnings.push(format!(
                            "{}: include {}: the config passes {MAX_TOTAL_BYTES} bytes in all; rest ignored",
                            directive.origin(),
                            file.display()
                        ));
                        break;
                    }
                    Ok(text) => {
                        loaded.bytes += text.len() as u64;
                        loaded.files.push(file.clone());
                        match parse(&text, &file) {
                            Ok(tree) => {
                                let inner =
                                    inline_includes(host, tree, conf_dir, loaded, depth + 1);
                                out.extend(inner);
                            }
                            Err(err) => loaded.warnings.push(err.to_string()),
                        }
                    }
                    Err(err) => loaded
                        .warnings
                        .push(format!("{}: include: {err}", directive.origin())),
                }
            }
            continue;
        }
        if let Some(block) = directive.block.take() {
            directive.block = Some(inline_includes(host, block, conf_dir, loaded, depth));
        }
        out.push(directive);
    }
    out
}

/// An nginx time value (`60`, `60s`, `1m`, `1h30m`, `500ms`).
pub fn parse_time(value: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = value.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                Duration::from_millis(n)
            }
            's' => Duration::from_secs(n),
            'm' => Duration::from_secs(n.checked_mul(60)?),
            'h' => Duration::from_secs(n.checked_mul(3600)?),
            'd' => Duration::from_secs(n.checked_mul(86400)?),
            'w' => Duration::from_secs(n.checked_mul(7 * 86400)?),
            _ => return None,
        };
        total = total.checked_add(unit)?;
        any = true;
    }
    if !number.is_empty() {
        total = total.checked_add(Duration::from_secs(number.parse().ok()?))?;
        any = true;
    }
    any.then_some(total)
}

/// An nginx size value (`4k`, `8K`, `1m`, `512`).
pub fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let (digits, mult) = match value.chars().last()? {
        'k' | 'K' => (&value[..value.len() - 1], 1024),
        'm' | 'M' => (&value[..value.len() - 1], 1024 * 1024),
        'g' | 'G' => (&value[..value.len() - 1], 1024 * 1024 * 1024),
        _ => (value, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Parses a `listen` directive's arguments.
pub fn parse_listen(args: &[String]) -> Option<Listen> {
    let first = args.first()?;
    let (address, port) = if let Some(path) = first.strip_prefix("unix:") {
        (Address::Unix(PathBuf::from(path)), None)
    } else if let Ok(port) = first.parse::<u16>() {
        (Address::Tcp(format!("*:{port}")), Some(port))
    } else if first.starts_with('[') {
        match first.rsplit_once("]:") {
            Some((host, port)) => (Address::Tcp(format!("{host}]:{port}")), port.parse().ok()),
            None => (Address::Tcp(format!("{first}:80")), Some(80)),
        }
    } else {
        match first.rsplit_once(':') {
            Some((host, port)) => (Address::Tcp(format!("{host}:{port}")), port.parse().ok()),
            None => (Address::Tcp(format!("{first}:80")), Some(80)),
        }
    };
    let mut listen = Listen {
        address,
        port,
        ssl: false,
        default_server: false,
        backlog: None,
    };
    for arg in &args[1..] {
        match arg.as_str() {
            "ssl" => listen.ssl = true,
            "default_server" | "default" => listen.default_server = true,
            other => {
                if let Some(b) = other.strip_prefix("backlog=") {
                    listen.backlog = b.parse().ok();
                }
            }
        }
    }
    Some(listen)
}

/// Parses a `*_pass` / upstream `server` address.
pub fn parse_address(raw: &str, kind: UpstreamKind) -> Option<Address> {
    let mut s = raw;
    for scheme in [
        "http://",
        "https://",
        "grpc://",
        "grpcs://",
        "uwsgi://",
        "suwsgi://",
    ] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest;
        }
    }
    if let Some(path) = s.strip_prefix("unix:") {
        let path = path.split(':').next().unwrap_or(path);
        return Some(Address::Unix(PathBuf::from(path)));
    }
    let host_port = s.split('/').next().unwrap_or(s);
    if host_port.is_empty() {
        return None;
    }
    let has_port = if host_port.starts_with('[') {
        host_port.contains("]:")
    } else {
        host_port.contains(':')
    };
    if has_port {
        Some(Address::Tcp(host_port.to_string()))
    } else {
        let default = match (kind, raw.starts_with("https://")) {
            (UpstreamKind::Proxy, true) => 443,
            (UpstreamKind::Proxy, false) => 80,
            _ => return Some(Address::Tcp(host_port.to_string())),
        };
        Some(Address::Tcp(format!("{host_port}:{default}")))
    }
}

fn src<T>(value: T, d: &Directive) -> Sourced<T> {
    Sourced::new(value, d.origin())
}

/// Every `root` inside a server block (its own and its locations'), in order, deduplicated.
fn collect_roots(d: &Directive, prefix: &Path, out: &mut Vec<PathBuf>) {
    for inner in d.block.iter().flatten() {
        match inner.name.as_str() {
            "root" => {
                if let Some(arg) = inner.args.first().filter(|a| !a.contains('$')) {
                    let path = resolve_path(arg, prefix);
                    if !out.contains(&path) {
                        out.push(path);
                    }
                }
            }
            "location" | "if" => collect_roots(inner, prefix, out),
            _ => {}
        }
    }
}

fn resolve_path(value: &str, prefix: &Path) -> PathBuf {
    if value.starts_with('/') {
        PathBuf::from(value)
    } else {
        prefix.join(value)
    }
}

/// Fills an [`Nginx`] from a loaded tree. `prefix` resolves relative log paths; `cpus` stands
/// in for `worker_processes auto`.
pub fn extract(tree: &[Directive], prefix: &Path, cpus: u32) -> Nginx {
    let mut nginx = Nginx::default();
    let mut groups = Vec::new();
    walk(tree, &[], &mut nginx, &mut groups, prefix, cpus);
    nginx.upstream_groups = groups;
    // Servers without their own certificate use the one set in `http {}`.
    if let Some(cert) = nginx.ssl_certificate.clone() {
        for server in &mut nginx.servers {
            if server.ssl_certificate.is_none() && server.listens.iter().any(|l| l.ssl) {
                server.ssl_certificate = Some(cert.clone());
            }
        }
    }
    // Resolve access-log formats now that every log_format is known.
    for log in &mut nginx.access_logs {
        log.format = if log.format_name == "combined" {
            Some(COMBINED.to_string())
        } else {
            nginx.log_formats.get(&log.format_name).cloned()
        };
    }
    let names: Vec<String> = nginx
        .upstream_groups
        .iter()
        .map(|g| g.name.clone())
        .collect();
    for target in &mut nginx.upstream_targets {
        let bare = target
            .raw
            .split_once("://")
            .map_or(target.raw.as_str(), |(_, rest)| rest);
        let bare = bare.split('/').next().unwrap_or(bare);
        if !target.dynamic && names.iter().any(|n| n == bare) {
            target.group = Some(bare.to_string());
            target.address = None;
        }
    }
    nginx
}

fn walk(
    tree: &[Directive],
    ctx: &[&str],
    nginx: &mut Nginx,
    groups: &mut Vec<UpstreamGroup>,
    prefix: &Path,
    cpus: u32,
) {
    let top = ctx.last().copied().unwrap_or("main");
    for d in tree {
        let arg0 = d.args.first().map(String::as_str).unwrap_or("");
        match d.name.as_str() {
            "user" if top == "main" => nginx.user = Some(src(arg0.to_string(), d)),
            "worker_processes" if top == "main" => {
                let n = if arg0 == "auto" {
                    Some(cpus)
                } else {
                    arg0.parse().ok()
                };
                nginx.worker_processes = n.map(|v| src(v, d));
            }
            "worker_rlimit_nofile" if top == "main" => {
                nginx.worker_rlimit_nofile = arg0.parse().ok().map(|v| src(v, d))
            }
            "worker_connections" if top == "events" => {
                nginx.worker_connections = arg0.parse().ok().map(|v| src(v, d))
            }
            "error_log" => {
                #[allow(clippy::collapsible_match)]
                if !(arg0.is_empty()
                    || arg0 == "stderr"
                    || arg0.starts_with("syslog:")
                    || arg0.starts_with("memory:")
                    || arg0 == "/dev/null")
                {
                    let path = resolve_path(arg0, prefix);
                    if !nginx.error_logs.iter().any(|l| l.value == path) {
                        nginx.error_logs.push(src(path, d));
                    }
                }
            }
            "access_log" => {
                #[allow(clippy::collapsible_match)]
                if !(arg0.is_empty()
                    || arg0 == "off"
                    || arg0.starts_with("syslog:")
                    || arg0 == "/dev/null")
                {
                    let path = resolve_path(arg0, prefix);
                    let format_name = d
                        .args
                        .get(1)
                        .filter(|f| !f.contains('='))
                        .cloned()
                        .unwrap_or_else(|| "combined".to_string());
                    if !nginx
                        .access_logs
                        .iter()
                        .any(|l| l.path == path && l.format_name == format_name)
                    {
                        nginx.access_logs.push(AccessLog {
                            path,
                            format_name,
                            format: None,
                            origin: d.origin(),
                        });
                    }
                }
            }
            "log_format" => {
                if let Some(name) = d.args.first() {
                    let format: String = d
                        .args
                        .iter()
                        .skip(1)
                        .filter(|a| !a.starts_with("escape="))
                        .cloned()
                        .collect();
                    nginx.log_formats.insert(name.clone(), format);
                }
            }
            "fastcgi_pass" | "proxy_pass" | "uwsgi_pass" | "grpc_pass" => {
                let kind = match d.name.as_str() {
                    "fastcgi_pass" => UpstreamKind::Fastcgi,
                    "proxy_pass" => UpstreamKind::Proxy,
                    "uwsgi_pass" => UpstreamKind::Uwsgi,
                    _ => UpstreamKind::Grpc,
                };
                let dynamic = arg0.contains('$');
                nginx.upstream_targets.push(UpstreamTarget {
                    kind,
                    address: if dynamic {
                        None
                    } else {
                        parse_address(arg0, kind)
                    },
                    group: None,
                    dynamic,
                    raw: arg0.to_string(),
                    origin: d.origin(),
                });
            }
            "fastcgi_read_timeout" => {
                if let Some(t) = parse_time(arg0) {
                    if nginx
                        .fastcgi_read_timeout
                        .as_ref()
                        .is_none_or(|cur| t < cur.value)
                    {
                        nginx.fastcgi_read_timeout = Some(src(t, d));
                    }
                }
            }
            "proxy_read_timeout" => {
                if let Some(t) = parse_time(arg0) {
                    if nginx
                        .proxy_read_timeout
                        .as_ref()
                        .is_none_or(|cur| t < cur.value)
                    {
                        nginx.proxy_read_timeout = Some(src(t, d));
                    }
                }
            }
            "fastcgi_buffer_size" => {
                nginx.fastcgi_buffer_size = parse_size(arg0).map(|v| src(v, d))
            }
            "proxy_buffer_size" => nginx.proxy_buffer_size = parse_size(arg0).map(|v| src(v, d)),
            "set_real_ip_from" => nginx
                .real_ip
                .set_real_ip_from
                .push(src(arg0.to_string(), d)),
            "real_ip_header" => nginx.real_ip.real_ip_header = Some(src(arg0.to_string(), d)),
            "real_ip_recursive" => nginx.real_ip.real_ip_recursive = arg0 == "on",
            "ssl_certificate" if top == "http" => {
                nginx.ssl_certificate = Some(src(resolve_path(arg0, prefix), d))
            }
            "server" if top == "http" => {
                let mut server = Server {
                    names: Vec::new(),
                    listens: Vec::new(),
                    origin: d.origin(),
                    ssl_certificate: None,
                    roots: Vec::new(),
                };
                collect_roots(d, prefix, &mut server.roots);
                for inner in d.block.iter().flatten() {
                    match inner.name.as_str() {
                        "server_name" => server.names.extend(inner.args.iter().cloned()),
                        "listen" => server.listens.extend(parse_listen(&inner.args)),
                        "ssl_certificate" => {
                            if let Some(path) = inner.args.first() {
                                server.ssl_certificate =
                                    Some(src(resolve_path(path, prefix), inner));
                            }
                        }
                        _ => {}
                    }
                }
                if server.listens.is_empty() {
                    server.listens.push(Listen {
                        address: Address::Tcp("*:80".to_string()),
                        port: Some(80),
                        ssl: false,
                        default_server: false,
                        backlog: None,
                    });
                }
                nginx.servers.push(server);
            }
            "server" if top == "upstream" => {
                if let Some(group) = groups.last_mut() {
                    if let Some(addr) = parse_address(arg0, UpstreamKind::Proxy) {
                        group.servers.push(addr);
                    }
                }
            }
            "upstream" if top == "http" => groups.push(UpstreamGroup {
                name: arg0.to_string(),
                servers: Vec::new(),
                origin: d.origin(),
            }),
            _ => {}
        }
        if let Some(block) = &d.block {
            let mut inner = ctx.to_vec();
            inner.push(d.name.as_str());
            walk(block, &inner, nginx, groups, prefix, cpus);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::fixture::FixtureHost;

    const MAIN: &str = r#"
user www-data;
worker_processes 4;
worker_rlimit_nofile 2048;
error_log /var/log/nginx/error.log warn;   # the main one
events { worker_connections 768; }
http {
    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      "\"$http_user_agent\" $request_time";
    access_log /var/log/nginx/access.log main;
    set_real_ip_from 173.245.48.0/20;
    real_ip_header CF-Connecting-IP;
    fastcgi_read_timeout 2m;
    include conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;
}
"#;

    const SITE: &str = r#"
upstream backend { server 127.0.0.1:8080 weight=2; server unix:/run/app.sock; }
server {
    listen 80 default_server backlog=4096;
    listen [::]:443 ssl;
    server_name example.com www.example.com;
    error_log logs/site-error.log;
    location ~ \.php$ {
        fastcgi_pass unix:/run/php/php8.2-fpm.sock;
        fastcgi_read_timeout 30s;
        fastcgi_buffer_size 32k;
    }
    location /api/ { proxy_pass http://backend; }
    location /dyn/ { proxy_pass http://$host:9000; }
    location /x { proxy_pass http://10.0.0.5/; access_log off; }
}
"#;

    fn host() -> FixtureHost {
        FixtureHost::new()
            .file("/etc/nginx/nginx.conf", MAIN)
            .file("/etc/nginx/conf.d/a.conf", "gzip on;\n")
            .file("/etc/nginx/sites-enabled/default", SITE)
    }

    #[test]
    fn tokenizer_handles_quotes_escapes_and_comments() {
        let tree = parse(
            "a 'b c' \"d\\\"e\" f\\;g; # comment ; {\nh { i ${x}y; }",
            Path::new("/t"),
        )
        .unwrap();
        assert_eq!(tree[0].args, vec!["b c", "d\"e", "f;g"]);
        assert_eq!(tree[1].name, "h");
        assert_eq!(tree[1].line, 2);
        assert_eq!(tree[1].block.as_ref().unwrap()[0].args, vec!["${x}y"]);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        for (text, line) in [
            ("a {\n b;\n", 1),
            ("a;\n}\n", 2),
            ("a 'b;\n", 1),
            ("a b\n}", 2),
        ] {
            match parse(text, Path::new("/t.conf")) {
                Err(NginxConfigError::Syntax { line: l, .. }) => {
                    assert!(l == line || l == 0, "{text:?}: line {l}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn loads_includes_and_extracts_what_the_probes_need() {
        let host = host();
        let loaded = load(&host, Path::new("/etc/nginx/nginx.conf")).unwrap();
        assert_eq!(loaded.files.len(), 3);
        let nginx = extract(&loaded.directives, Path::new("/usr/share/nginx"), 2);
        assert_eq!(nginx.user.as_ref().unwrap().value, "www-data");
        assert_eq!(
            nginx.user.as_ref().unwrap().origin.to_string(),
            "/etc/nginx/nginx.conf:2"
        );
        assert_eq!(nginx.worker_processes.as_ref().unwrap().value, 4);
        assert_eq!(nginx.worker_connections.as_ref().unwrap().value, 768);
        assert_eq!(nginx.worker_rlimit_nofile.as_ref().unwrap().value, 2048);
        let errs: Vec<_> = nginx.error_logs.iter().map(|l| l.value.clone()).collect();
        assert_eq!(
            errs,
            vec![
                PathBuf::from("/var/log/nginx/error.log"),
                PathBuf::from("/usr/share/nginx/logs/site-error.log")
            ]
        );
        assert_eq!(nginx.access_logs.len(), 1);
        let format = nginx.access_logs[0].format.as_ref().unwrap();
        assert!(
            format.ends_with("\"$http_user_agent\" $request_time"),
            "{format}"
        );
        assert!(format.contains("$status $body_bytes_sent"));
        let timeout = nginx.fastcgi_read_timeout.as_ref().unwrap();
        assert_eq!(timeout.value, Duration::from_secs(30));
        assert_eq!(
            timeout.origin.to_string(),
            "/etc/nginx/sites-enabled/default:10"
        );
        assert_eq!(nginx.fastcgi_buffer_size.as_ref().unwrap().value, 32 * 1024);
        assert_eq!(nginx.real_ip.set_real_ip_from[0].value, "173.245.48.0/20");
        assert_eq!(
            nginx.real_ip.real_ip_header.as_ref().unwrap().value,
            "CF-Connecting-IP"
        );
        let server = &nginx.servers[0];
        assert_eq!(server.names, vec!["example.com", "www.example.com"]);
        assert_eq!(server.listens[0].port, Some(80));
        assert_eq!(server.listens[0].backlog, Some(4096));
        assert!(server.listens[1].ssl);
        assert_eq!(server.listens[1].address, Address::Tcp("[::]:443".into()));
        let targets = &nginx.upstream_targets;
        assert_eq!(targets.len(), 4);
        assert_eq!(
            targets[0].address,
            Some(Address::Unix("/run/php/php8.2-fpm.sock".into()))
        );
        assert_eq!(targets[1].group.as_deref(), Some("backend"));
        assert!(targets[2].dynamic);
        assert_eq!(targets[3].address, Some(Address::Tcp("10.0.0.5:80".into())));
        assert_eq!(
            nginx.upstream_groups[0].servers,
            vec![
                Address::Tcp("127.0.0.1:8080".into()),
                Address::Unix("/run/app.sock".into())
            ]
        );
    }

    #[test]
    fn include_expansion_is_bounded_in_total_bytes() {
        // One 4 MiB file included by twenty lines: 80 MiB if every include were inlined.
        let big = format!("# {}\n", "x".repeat(4 << 20));
        let host = FixtureHost::new()
            .file("/e/nginx.conf", "include /e/big.conf;\n".repeat(20))
            .file("/e/big.conf", big);
        let loaded = load(&host, Path::new("/e/nginx.conf")).unwrap();
        assert!(loaded.bytes <= MAX_TOTAL_BYTES);
        assert!(loaded.files.len() < 12, "{}", loaded.files.len());
        assert!(loaded.warnings.iter().any(|w| w.contains("in all")));
    }

    #[test]
    fn include_loops_and_missing_includes_do_not_hang_or_fail() {
        let host = FixtureHost::new()
            .file(
                "/e/nginx.conf",
                "include /e/loop.conf; include /e/missing.conf;",
            )
            .file("/e/loop.conf", "include /e/loop.conf;");
        let loaded = load(&host, Path::new("/e/nginx.conf")).unwrap();
        assert!(loaded.warnings.iter().any(|w| w.contains("missing.conf")));
        assert!(loaded.files.len() <= MAX_DEPTH + 2);
        let err = load(&host, Path::new("/e/none.conf")).unwrap_err();
        assert!(matches!(err, NginxConfigError::Read { .. }));
    }

    #[test]
    fn an_nginx_t_dump_loads_like_the_files() {
        let dump = format!(
            "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n# configuration file /etc/nginx/nginx.conf:\n{MAIN}\n# configuration file /etc/nginx/conf.d/a.conf:\ngzip on;\n\n# configuration file /etc/nginx/sites-enabled/default:\n{SITE}\n"
        );
        let from_dump = load_dump(&dump, Path::new("/etc/nginx/nginx.conf")).unwrap();
        let from_files = load(&host(), Path::new("/etc/nginx/nginx.conf")).unwrap();
        assert_eq!(from_dump.files, from_files.files);
        let a = extract(&from_dump.directives, Path::new("/p"), 1);
        let b = extract(&from_files.directives, Path::new("/p"), 1);
        assert_eq!(a.upstream_targets.len(), b.upstream_targets.len());
        assert_eq!(a.fastcgi_read_timeout, b.fastcgi_read_timeout);
        assert!(load_dump("garbage", Path::new("/etc/nginx/nginx.conf")).is_err());
    }

    #[test]
    fn times_and_sizes() {
        assert_eq!(parse_time("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_time("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_time("x"), None);
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_size("8k"), Some(8192));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("k"), None);
    }

    #[test]
    fn ssl_certificates_come_from_the_server_or_are_inherited_from_http() {
        let text = "http {\n  ssl_certificate certs/default.pem;\n  server { listen 443 ssl; server_name a.test; ssl_certificate /etc/ssl/a.pem; }\n  server { listen 443 ssl; server_name b.test; }\n  server { listen 80; server_name c.test; }\n}\n";
        let tree = parse(text, Path::new("/etc/nginx/nginx.conf")).unwrap();
        let nginx = extract(&tree, Path::new("/etc/nginx"), 1);
        let cert = |i: usize| {
            nginx.servers[i]
                .ssl_certificate
                .as_ref()
                .map(|c| c.value.clone())
        };
        assert_eq!(cert(0), Some(PathBuf::from("/etc/ssl/a.pem")));
        assert_eq!(cert(1), Some(PathBuf::from("/etc/nginx/certs/default.pem")));
        assert_eq!(cert(2), None, "a plain-http server has no certificate");
    }
}
