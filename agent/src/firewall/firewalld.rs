//! firewalld as firewalld itself sees it, so a finding can speak its language: which zone the
//! traffic of each CDN range lands in (a source binding, an ipset source, the zone of the
//! interface it arrives on, else the default zone), what that zone allows (services and their
//! port definitions, ports, rich rules with their source, address or ipset, and the zone's
//! target), and whether the runtime differs from the permanent configuration (a rule the next
//! `firewall-cmd --reload` would drop, or one a reload would bring in).
//!
//! The permanent configuration is read from the XML files (`/etc/firewalld` over the stock
//! `/usr/lib/firewalld`), the runtime through `firewall-cmd` (a known root-owned binary, through
//! the host seam, with a deadline) where firewalld runs. Every file is bounded in size and
//! count; a file that does not parse makes the check one that could not run, never a panic.
//! The raw nftables table firewalld generates is evaluated elsewhere ([`super::nft`]); this
//! module explains it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::addrset::{parse_net, AddrSet, Family};
use crate::cdn::{CdnCatalog, Provider};
use crate::check::{Area, Check, Status};
use crate::host::{Command, Host};

/// The stock configuration.
pub const USR: &str = "/usr/lib/firewalld";
/// The administrator's configuration (overrides the stock one file by file).
pub const ETC: &str = "/etc/firewalld";
/// The largest XML file read.
const MAX_XML: usize = 1 << 20;
/// The most files read per directory, and ipsets asked about at runtime.
const MAX_FILES: usize = 256;
/// The most ipsets asked about at runtime (those zones refer to).
const MAX_IPSETS: usize = 32;
/// All `firewall-cmd` calls of one audit together.
const RUNTIME_BUDGET: Duration = Duration::from_secs(30);
/// The largest `firewall-cmd` output used.
const MAX_OUTPUT: usize = 8 << 20;
/// Where `firewall-cmd` is installed by the distributions.
const FIREWALL_CMD: &[&str] = &["/usr/bin/firewall-cmd", "/bin/firewall-cmd"];

/// Why firewalld's configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewalldError {
    #[error("{path}: not valid firewalld XML: {message}")]
    Xml { path: String, message: String },
    #[error("{path}: larger than {MAX_XML} bytes")]
    TooLarge { path: String },
    #[error("`firewall-cmd {args}`: {message}")]
    Command { args: String, message: String },
}

/// What a zone does with what nothing in it accepted or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `default`: rejected (firewalld 1.x, on the input path).
    Default,
    Accept,
    Drop,
    Reject,
}

impl Target {
    fn parse(s: &str) -> Target {
        match s.trim() {
            "ACCEPT" => Target::Accept,
            "DROP" => Target::Drop,
            "REJECT" | "%%REJECT%%" => Target::Reject,
            _ => Target::Default,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Target::Default => "target default: rejected",
            Target::Accept => "target ACCEPT: allowed",
            Target::Drop => "target DROP: dropped",
            Target::Reject => "target REJECT: rejected",
        }
    }
}

/// A zone source or a rich rule's source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Net(IpNet),
    Ipset(String),
    /// A MAC address or anything else no IP packet from the internet matches.
    Other(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Net(n) => write!(f, "{n}"),
            Source::Ipset(s) => write!(f, "ipset:{s}"),
            Source::Other(s) => f.write_str(s),
        }
    }
}

/// A TCP/UDP port range and its protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
    pub proto: String,
}

impl PortRange {
    fn parse(port: &str, proto: &str) -> Option<PortRange> {
        let (lo, hi) = match port.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let p = port.trim().parse().ok()?;
                (p, p)
            }
        };
        Some(PortRange {
            lo,
            hi,
            proto: proto.trim().to_string(),
        })
    }

    fn has_tcp(&self, port: u16) -> bool {
        self.proto == "tcp" && self.lo <= port && port <= self.hi
    }
}

/// What a rich rule matches besides its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleMatch {
    Service(String),
    Port(PortRange),
    /// No service, port or protocol element: every packet of the family.
    All,
    /// protocol, icmp, masquerade, forward-port, source-port: never a new TCP web connection.
    Other,
}

/// What a rich rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Reject,
    Drop,
    /// log, audit or mark only.
    None,
}

/// A rich rule, from the zone XML or `--list-all-zones`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RichRule {
    /// As `firewall-cmd --list-rich-rules` prints it (rebuilt the same way from either form).
    pub text: String,
    pub family: Option<Family>,
    pub priority: i32,
    pub source: Option<Source>,
    pub invert: bool,
    pub matches: RuleMatch,
    pub action: Action,
}

/// One zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    pub target: Target,
    pub services: Vec<String>,
    pub ports: Vec<PortRange>,
    pub sources: Vec<Source>,
    pub interfaces: Vec<String>,
    pub rules: Vec<RichRule>,
}

impl Zone {
    fn new(name: &str) -> Zone {
        Zone {
            name: name.to_string(),
            target: Target::Default,
            services: Vec::new(),
            ports: Vec::new(),
            sources: Vec::new(),
            interfaces: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// A firewalld configuration, permanent or runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub default_zone: String,
    pub zones: BTreeMap<String, Zone>,
    /// Entries per ipset.
    pub ipsets: BTreeMap<String, BTreeSet<IpNet>>,
}

/// Service definitions: name → ports.
pub type Services = BTreeMap<String, Vec<PortRange>>;

fn xml_doc<'a>(path: &str, text: &'a str) -> Result<roxmltree::Document<'a>, FirewalldError> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 200_000,
    };
    roxmltree::Document::parse_with_options(text, opts).map_err(|e| FirewalldError::Xml {
        path: path.to_string(),
        message: e.to_string(),
    })
}

fn children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    tag: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == tag)
}

fn source_of(node: roxmltree::Node) -> Option<Source> {
    if let Some(a) = node.attribute("address") {
        return Some(parse_net(a.trim()).map_or_else(|| Source::Other(a.to_string()), Source::Net));
    }
    if let Some(s) = node.attribute("ipset") {
        return Some(Source::Ipset(s.to_string()));
    }
    node.attribute("mac")
        .map(|m| Source::Other(format!("mac {m}")))
}

fn expect_root(doc: &roxmltree::Document, path: &str, tag: &str) -> Result<(), FirewalldError> {
    let root = doc.root_element();
    if root.tag_name().name() == tag {
        Ok(())
    } else {
        Err(FirewalldError::Xml {
            path: path.to_string(),
            message: format!(
                "the root element is <{}>, not <{tag}>",
                root.tag_name().name()
            ),
        })
    }
}

/// A zone file (`zones/NAME.xml`).
pub fn parse_zone(name: &str, path: &str, text: &str) -> Result<Zone, FirewalldError> {
    let doc = xml_doc(path, text)?;
    expect_root(&doc, path, "zone")?;
    let root = doc.root_element();
    let mut z = Zone::new(name);
    z.target = Target::parse(root.attribute("target").unwrap_or("default"));
    z.services = children(root, "service")
        .filter_map(|s| s.attribute("name").map(str::to_string))
        .collect();
    z.ports = children(root, "port")
        .filter_map(|p| PortRange::parse(p.attribute("port")?, p.attribute("protocol")?))
        .collect();
    z.sources = children(root, "source").filter_map(source_of).collect();
    z.interfaces = children(root, "interface")
        .filter_map(|i| i.attribute("name").map(str::to_string))
        .collect();
    z.rules = children(root, "rule").map(rule_of_xml).collect();
    Ok(z)
}

fn rule_of_xml(node: roxmltree::Node) -> RichRule {
    let family = match node.attribute("family") {
        Some("ipv4") => Some(Family::V4),
        Some("ipv6") => Some(Family::V6),
        _ => None,
    };
    let priority = node
        .attribute("priority")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let mut r = RichRule {
        text: String::new(),
        family,
        priority,
        source: None,
        invert: false,
        matches: RuleMatch::All,
        action: Action::None,
    };
    for c in node.children().filter(|c| c.is_element()) {
        match c.tag_name().name() {
            "source" => {
                r.source = source_of(c);
                r.invert = c
                    .attribute("invert")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "yes");
            }
            "service" => {
                r.matches = RuleMatch::Service(c.attribute("name").unwrap_or("").to_string())
            }
            "port" => {
                r.matches = c
                    .attribute("port")
                    .zip(c.attribute("protocol"))
                    .and_then(|(p, proto)| PortRange::parse(p, proto))
                    .map_or(RuleMatch::Other, RuleMatch::Port)
            }
            "protocol" | "icmp-block" | "icmp-type" | "masquerade" | "forward-port"
            | "source-port" | "tcp-mss-clamp" => r.matches = RuleMatch::Other,
            "accept" => r.action = Action::Accept,
            "reject" => r.action = Action::Reject,
            "drop" => r.action = Action::Drop,
            _ => {}
        }
    }
    r.text = rule_text(&r);
    r
}

/// The rule in `--list-rich-rules` form (the parts this module models).
fn rule_text(r: &RichRule) -> String {
    let mut t = String::from("rule");
    if r.priority != 0 {
        let _ = write!(t, " priority=\"{}\"", r.priority);
    }
    match r.family {
        Some(Family::V4) => t.push_str(" family=\"ipv4\""),
        Some(Family::V6) => t.push_str(" family=\"ipv6\""),
        None => {}
    }
    if let Some(s) = &r.source {
        t.push_str(" source");
        if r.invert {
            t.push_str(" NOT");
        }
        match s {
            Source::Net(n) => {
                let _ = write!(t, " address=\"{n}\"");
            }
            Source::Ipset(i) => {
                let _ = write!(t, " ipset=\"{i}\"");
            }
            Source::Other(o) => {
                let _ = write!(t, " {o}");
            }
        }
    }
    match &r.matches {
        RuleMatch::Service(s) => {
            let _ = write!(t, " service name=\"{s}\"");
        }
        RuleMatch::Port(p) if p.lo == p.hi => {
            let _ = write!(t, " port port=\"{}\" protocol=\"{}\"", p.lo, p.proto);
        }
        RuleMatch::Port(p) => {
            let _ = write!(
                t,
                " port port=\"{}-{}\" protocol=\"{}\"",
                p.lo, p.hi, p.proto
            );
        }
        RuleMatch::All | RuleMatch::Other => {}
    }
    t.push_str(match r.action {
        Action::Accept => " accept",
        Action::Reject => " reject",
        Action::Drop => " drop",
        Action::None => "",
    });
    t
}

/// Splits a rich rule's text into words and `key="value"` pairs.
fn rule_tokens(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            word.push(c);
        }
        if word.is_empty() && chars.peek().is_none() {
            break;
        }
        if chars.next_if_eq(&'=').is_some() {
            let quoted = chars.next_if_eq(&'"').is_some();
            let mut value = String::new();
            while let Some(c) = chars.next_if(|c| {
                if quoted {
                    *c != '"'
                } else {
                    !c.is_whitespace()
                }
            }) {
                value.push(c);
            }
            if quoted {
                chars.next();
            }
            out.push((word, Some(value)));
        } else if word.is_empty() {
            chars.next();
        } else {
            out.push((word, None));
        }
        if out.len() > 64 {
            break;
        }
    }
    out
}

/// A rich rule as `firewall-cmd` prints it.
pub fn parse_rule_text(text: &str) -> RichRule {
    let mut r = RichRule {
        text: String::new(),
        family: None,
        priority: 0,
        source: None,
        invert: false,
        matches: RuleMatch::All,
        action: Action::None,
    };
    let mut element = String::new();
    let mut port: Option<String> = None;
    let mut proto: Option<String> = None;
    for (word, value) in rule_tokens(text) {
        match (word.as_str(), value) {
            ("family", Some(v)) if element == "rule" => {
                r.family = match v.as_str() {
                    "ipv4" => Some(Family::V4),
                    "ipv6" => Some(Family::V6),
                    _ => None,
                }
            }
            ("priority", Some(v)) if element == "rule" => r.priority = v.parse().unwrap_or(0),
            ("address", Some(v)) if element == "source" => {
                r.source = Some(parse_net(&v).map_or(Source::Other(v), Source::Net))
            }
            ("ipset", Some(v)) if element == "source" => r.source = Some(Source::Ipset(v)),
            ("mac", Some(v)) if element == "source" => {
                r.source = Some(Source::Other(format!("mac {v}")))
            }
            ("name", Some(v)) if element == "service" => r.matches = RuleMatch::Service(v),
            ("port", Some(v)) if element == "port" => port = Some(v),
            ("protocol", Some(v)) if element == "port" => proto = Some(v),
            ("NOT" | "not", None) if element == "source" => r.invert = true,
            ("accept", None) => r.action = Action::Accept,
            ("reject", None) => {
                r.action = Action::Reject;
                element = word;
            }
            ("drop", None) => r.action = Action::Drop,
            (
                "protocol" | "icmp-block" | "icmp-type" | "masquerade" | "forward-port"
                | "source-port" | "tcp-mss-clamp",
                None,
            ) => {
                r.matches = RuleMatch::Other;
                element = word;
            }
            (_, None) => element = word,
            _ => {}
        }
    }
    if let (Some(p), Some(proto)) = (port, proto) {
        r.matches = PortRange::parse(&p, &proto).map_or(RuleMatch::Other, RuleMatch::Port);
    }
    r.text = rule_text(&r);
    r
}

/// An ipset file's family and entries (`None` for a set of MAC addresses or ports).
pub fn parse_ipset(path: &str, text: &str) -> Result<BTreeSet<IpNet>, FirewalldError> {
    let doc = xml_doc(path, text)?;
    expect_root(&doc, path, "ipset")?;
    Ok(children(doc.root_element(), "entry")
        .filter_map(|e| parse_net(e.text()?.trim()))
        .collect())
}

/// A service file's TCP/UDP ports and the services it includes.
pub fn parse_service(
    path: &str,
    text: &str,
) -> Result<(Vec<PortRange>, Vec<String>), FirewalldError> {
    let doc = xml_doc(path, text)?;
    expect_root(&doc, path, "service")?;
    let root = doc.root_element();
    let ports = children(root, "port")
        .filter_map(|p| PortRange::parse(p.attribute("port")?, p.attribute("protocol")?))
        .collect();
    let includes = children(root, "include")
        .filter_map(|i| i.attribute("service").map(str::to_string))
        .collect();
    Ok((ports, includes))
}

fn read_bounded(host: &dyn Host, path: &Path) -> Result<Option<String>, FirewalldError> {
    match host.read(path) {
        Ok(b) if b.len() > MAX_XML => Err(FirewalldError::TooLarge {
            path: path.display().to_string(),
        }),
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(_) => Ok(None),
    }
}

/// The `NAME.xml` files of a kind (`zones`, `ipsets`, `services`), `/etc` over `/usr/lib`.
fn xml_files(host: &dyn Host, kind: &str) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for base in [USR, ETC] {
        let dir = Path::new(base).join(kind);
        for name in host
            .read_dir(&dir)
            .unwrap_or_default()
            .into_iter()
            .take(MAX_FILES)
        {
            if let Some(stem) = name.strip_suffix(".xml") {
                out.insert(stem.to_string(), dir.join(&name));
            }
        }
    }
    out
}

/// The default zone named in `firewalld.conf` (`public` when unset).
pub fn conf_default_zone(text: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("DefaultZone=")
                .map(|z| z.trim().to_string())
        })
        .filter(|z| !z.is_empty())
        .unwrap_or_else(|| "public".to_string())
}

/// The permanent configuration, from the XML files.
pub fn read_permanent(host: &dyn Host) -> Result<Config, FirewalldError> {
    let conf = read_bounded(host, &Path::new(ETC).join("firewalld.conf"))?.unwrap_or_default();
    let mut c = Config {
        default_zone: conf_default_zone(&conf),
        ..Config::default()
    };
    for (name, path) in xml_files(host, "zones") {
        if let Some(text) = read_bounded(host, &path)? {
            c.zones.insert(
                name.clone(),
                parse_zone(&name, &path.display().to_string(), &text)?,
            );
        }
    }
    for (name, path) in xml_files(host, "ipsets") {
        if let Some(text) = read_bounded(host, &path)? {
            c.ipsets
                .insert(name, parse_ipset(&path.display().to_string(), &text)?);
        }
    }
    Ok(c)
}

/// The definitions of the services `wanted` names (and what they include), from the files.
pub fn read_services(
    host: &dyn Host,
    wanted: &BTreeSet<String>,
) -> Result<Services, FirewalldError> {
    let mut out = Services::new();
    let mut todo: Vec<String> = wanted.iter().cloned().collect();
    let mut includes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) || out.len() >= MAX_FILES || name.contains('/') {
            continue;
        }
        let file = format!("services/{name}.xml");
        let text = match read_bounded(host, &Path::new(ETC).join(&file))? {
            Some(t) => Some((Path::new(ETC).join(&file), t)),
            None => read_bounded(host, &Path::new(USR).join(&file))?
                .map(|t| (Path::new(USR).join(&file), t)),
        };
        let (ports, inc) = match text {
            Some((path, t)) => parse_service(&path.display().to_string(), &t)?,
            None => (Vec::new(), Vec::new()),
        };
        todo.extend(inc.iter().cloned());
        includes.insert(name.clone(), inc);
        out.insert(name, ports);
    }
    // Included services' ports belong to the including one (one level is what firewalld has).
    for (name, inc) in includes {
        let extra: Vec<PortRange> = inc
            .iter()
            .filter_map(|i| out.get(i))
            .flatten()
            .cloned()
            .collect();
        if let Some(p) = out.get_mut(&name) {
            p.extend(extra);
        }
    }
    Ok(out)
}

/// `firewall-cmd --list-all-zones` (runtime).
pub fn parse_list_all_zones(text: &str) -> BTreeMap<String, Zone> {
    let mut out = BTreeMap::new();
    let mut zone: Option<Zone> = None;
    let mut in_rules = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            if let Some(z) = zone.take() {
                out.insert(z.name.clone(), z);
            }
            let name = line.split_whitespace().next().unwrap_or("");
            zone = Some(Zone::new(name));
            in_rules = false;
            continue;
        }
        let Some(z) = zone.as_mut() else { continue };
        let t = line.trim();
        if in_rules && t.starts_with("rule") {
            if z.rules.len() < 10_000 {
                z.rules.push(parse_rule_text(t));
            }
            continue;
        }
        in_rules = false;
        let Some((key, value)) = t.split_once(':') else {
            continue;
        };
        let words = value.split_whitespace();
        match key {
            "target" => z.target = Target::parse(value),
            "services" => z.services = words.map(str::to_string).collect(),
            "interfaces" => z.interfaces = words.map(str::to_string).collect(),
            "ports" => {
                z.ports = words
                    .filter_map(|w| {
                        let (p, proto) = w.split_once('/')?;
                        PortRange::parse(p, proto)
                    })
                    .collect()
            }
            "sources" => {
                z.sources = words
                    .map(|w| match w.strip_prefix("ipset:") {
                        Some(s) => Source::Ipset(s.to_string()),
                        None => parse_net(w).map_or(Source::Other(w.to_string()), Source::Net),
                    })
                    .collect()
            }
            "rich rules" => in_rules = true,
            _ => {}
        }
    }
    if let Some(z) = zone.take() {
        out.insert(z.name.clone(), z);
    }
    out
}

/// The entries of `firewall-cmd --info-ipset=NAME`.
pub fn parse_info_ipset(text: &str) -> BTreeSet<IpNet> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("entries:"))
        .map(|e| e.split_whitespace().filter_map(parse_net).collect())
        .unwrap_or_default()
}

/// Asks the running firewalld through `firewall-cmd`.
struct FirewallCmd<'a> {
    host: &'a dyn Host,
    program: String,
    /// Every call together ends by then (each `firewall-cmd` is a Python start-up, a D-Bus
    /// round trip, and hangs with a stuck bus).
    deadline: Instant,
}

impl FirewallCmd<'_> {
    fn run(&self, args: &[&str]) -> Result<String, FirewalldError> {
        let err = |message: String| FirewalldError::Command {
            args: args.join(" "),
            message,
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(100) {
            return Err(err(format!(
                "not run: firewalld's {} s were spent",
                RUNTIME_BUDGET.as_secs()
            )));
        }
        let cmd = Command::new(&self.program, args).timeout(left.min(Duration::from_secs(15)));
        let o = self.host.run(&cmd).map_err(|e| err(e.to_string()))?;
        if !o.success() {
            return Err(err(
                crate::report::escape::controls(o.stderr.trim()).into_owned()
            ));
        }
        let mut out = o.stdout;
        out.truncate(MAX_OUTPUT);
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn running(&self) -> bool {
        self.run(&["--state"]).is_ok_and(|s| s.trim() == "running")
    }

    fn runtime(&self) -> Result<Config, FirewalldError> {
        let default_zone = self.run(&["--get-default-zone"])?.trim().to_string();
        let zones = parse_list_all_zones(&self.run(&["--list-all-zones"])?);
        // Only the sets a zone source or rich rule names decide anything (one call each).
        let named: BTreeSet<&str> = zones
            .values()
            .flat_map(|z| {
                z.sources
                    .iter()
                    .chain(z.rules.iter().filter_map(|r| r.source.as_ref()))
            })
            .filter_map(|s| match s {
                Source::Ipset(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        let mut ipsets = BTreeMap::new();
        for name in self
            .run(&["--get-ipsets"])?
            .split_whitespace()
            .filter(|n| named.contains(n))
            .take(MAX_IPSETS)
        {
            let info = self.run(&[&format!("--info-ipset={name}")])?;
            ipsets.insert(name.to_string(), parse_info_ipset(&info));
        }
        Ok(Config {
            default_zone,
            zones,
            ipsets,
        })
    }
}

/// How a part of a CDN range landed in its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing {
    /// A source binding of the zone (an address or an ipset).
    Source(Source),
    /// The zone of the interface the traffic arrives on.
    Interface(String),
    Default,
}

/// Where the internet's traffic arrives: the default route's interface per family.
pub fn default_route_interfaces(host: &dyn Host) -> (Option<String>, Option<String>) {
    let text = |p: &str| {
        host.read(Path::new(p))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let v4 = text("/proc/net/route").lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
    });
    let v6 = text("/proc/net/ipv6_route").lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 10 && f[0].chars().all(|c| c == '0') && f[1] == "00" && f[9] != "lo")
            .then(|| f[9].to_string())
    });
    (v4, v6)
}

/// The addresses a source stands for in one family.
fn source_set(c: &Config, s: &Source, family: Family) -> AddrSet {
    match s {
        Source::Net(n) if Family::of(n) == family => AddrSet::from_nets(family, [n]),
        Source::Ipset(name) => match c.ipsets.get(name) {
            Some(entries) => {
                AddrSet::from_nets(family, entries.iter().filter(|n| Family::of(n) == family))
            }
            None => AddrSet::empty(family),
        },
        _ => AddrSet::empty(family),
    }
}

/// A part of a CDN range and the zone it lands in.
#[derive(Debug, Clone)]
pub struct Placement {
    pub set: AddrSet,
    pub zone: String,
    pub landing: Landing,
}

/// Where the traffic of `set` lands: source zones first (in zone-name order, as firewalld
/// sorts zones of equal priority), then the arrival interface's zone, then the default zone.
pub fn place(c: &Config, set: &AddrSet, family: Family, iface: Option<&str>) -> Vec<Placement> {
    let mut rest = set.clone();
    let mut out = Vec::new();
    for z in c.zones.values() {
        for s in &z.sources {
            let hit = rest.intersect(&source_set(c, s, family));
            if !hit.is_empty() {
                rest = rest.subtract(&hit);
                out.push(Placement {
                    set: hit,
                    zone: z.name.clone(),
                    landing: Landing::Source(s.clone()),
                });
            }
        }
    }
    if !rest.is_empty() {
        let by_iface = iface.and_then(|i| {
            c.zones
                .values()
                .find(|z| z.interfaces.iter().any(|x| x == i))
                .map(|z| (z.name.clone(), Landing::Interface(i.to_string())))
        });
        let (zone, landing) = by_iface.unwrap_or((c.default_zone.clone(), Landing::Default));
        out.push(Placement {
            set: rest,
            zone,
            landing,
        });
    }
    out
}

/// What decided a port for part of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decider {
    Service(String),
    Port(PortRange),
    Rule(String, Action),
    Target(Target),
}

impl Decider {
    fn allows(&self) -> bool {
        match self {
            Decider::Service(_) | Decider::Port(_) => true,
            Decider::Rule(_, a) => *a == Action::Accept,
            Decider::Target(t) => *t == Target::Accept,
        }
    }

    fn words(&self) -> String {
        match self {
            Decider::Service(s) => format!("service {s}"),
            Decider::Port(p) => format!("port {}/{}", port_text(p), p.proto),
            Decider::Rule(t, _) => format!("rich rule `{t}`"),
            Decider::Target(t) => t.words().to_string(),
        }
    }
}

fn port_text(p: &PortRange) -> String {
    if p.lo == p.hi {
        p.lo.to_string()
    } else {
        format!("{}-{}", p.lo, p.hi)
    }
}

/// The verdict of a zone for `set` on a TCP `port`, part by part: rich rules with a negative
/// priority first (by priority), then reject/drop rich rules, then the services, ports and
/// accept rich rules, then rules with a positive priority, then the zone's target.
pub fn judge(
    c: &Config,
    services: &Services,
    zone: &Zone,
    set: &AddrSet,
    family: Family,
    port: u16,
) -> Vec<(AddrSet, Decider)> {
    let rule_hits = |r: &RichRule| -> Option<AddrSet> {
        if r.family.is_some_and(|f| f != family) || r.action == Action::None {
            return None;
        }
        let matches = match &r.matches {
            RuleMatch::All => true,
            RuleMatch::Port(p) => p.has_tcp(port),
            RuleMatch::Service(s) => services
                .get(s)
                .is_some_and(|ps| ps.iter().any(|p| p.has_tcp(port))),
            RuleMatch::Other => false,
        };
        if !matches {
            return None;
        }
        let src = match &r.source {
            None => AddrSet::full(family),
            Some(s) => source_set(c, s, family),
        };
        Some(if r.invert { src.complement() } else { src })
    };
    let mut steps: Vec<(AddrSet, Decider)> = Vec::new();
    let mut ordered: Vec<&RichRule> = zone.rules.iter().filter(|r| r.priority < 0).collect();
    ordered.sort_by_key(|r| r.priority);
    let push_rule = |steps: &mut Vec<(AddrSet, Decider)>, r: &RichRule| {
        if let Some(s) = rule_hits(r) {
            steps.push((s, Decider::Rule(r.text.clone(), r.action)));
        }
    };
    for r in &ordered {
        push_rule(&mut steps, r);
    }
    for r in zone
        .rules
        .iter()
        .filter(|r| r.priority == 0 && matches!(r.action, Action::Reject | Action::Drop))
    {
        push_rule(&mut steps, r);
    }
    for s in &zone.services {
        if services
            .get(s)
            .is_some_and(|ps| ps.iter().any(|p| p.has_tcp(port)))
        {
            steps.push((AddrSet::full(family), Decider::Service(s.clone())));
        }
    }
    for p in zone.ports.iter().filter(|p| p.has_tcp(port)) {
        steps.push((AddrSet::full(family), Decider::Port(p.clone())));
    }
    for r in zone
        .rules
        .iter()
        .filter(|r| r.priority == 0 && r.action == Action::Accept)
    {
        push_rule(&mut steps, r);
    }
    let mut later: Vec<&RichRule> = zone.rules.iter().filter(|r| r.priority > 0).collect();
    later.sort_by_key(|r| r.priority);
    for r in later {
        push_rule(&mut steps, r);
    }
    steps.push((AddrSet::full(family), Decider::Target(zone.target)));
    let mut rest = set.clone();
    let mut out: Vec<(AddrSet, Decider)> = Vec::new();
    for (s, d) in steps {
        let hit = rest.intersect(&s);
        if hit.is_empty() {
            continue;
        }
        rest = rest.subtract(&hit);
        match out.iter_mut().find(|(_, x)| *x == d) {
            Some((acc, _)) => *acc = acc.union(&hit),
            None => out.push((hit, d)),
        }
        if rest.is_empty() {
            break;
        }
    }
    out
}

/// `173.245.48.0/20`; `the 15 IPv4 ranges` (all the provider's, listed by `cdn show`); or the
/// part, listed (`103.21.244.0/22, 103.22.200.0/22, … 3 more`).
fn ranges_words(part: &AddrSet, all: &AddrSet, family: Family) -> String {
    let n = part.to_nets().len();
    if n > 1 && part == all {
        format!("the {n} {} ranges", family.label())
    } else {
        part.describe(3)
    }
}

/// The zone's content in a few words: `ssh, dhcpv6-client`, ports, rich rules.
fn zone_summary(zone: &Zone) -> String {
    let mut parts: Vec<String> = zone.services.clone();
    parts.sort();
    parts.extend(
        zone.ports
            .iter()
            .map(|p| format!("{}/{}", port_text(p), p.proto)),
    );
    if !zone.rules.is_empty() {
        parts.push(format!("{} rich rule(s)", zone.rules.len()));
    }
    if parts.is_empty() {
        "nothing".to_string()
    } else {
        parts.join(", ")
    }
}

fn landing_words(p: &Placement, c: &Config) -> String {
    match &p.landing {
        Landing::Source(s) => format!("source {s} of zone {}", p.zone),
        Landing::Interface(i) if p.zone == c.default_zone => {
            format!("interface {i}, also the default zone")
        }
        Landing::Interface(i) => format!("interface {i}"),
        Landing::Default => "default zone".to_string(),
    }
}

/// One provider's ranges as firewalld judges them.
#[derive(Debug, Clone)]
pub struct ProviderView {
    pub provider: Provider,
    /// False when some of the ranges are refused on a web port.
    pub allowed: bool,
    /// True when some are allowed.
    pub some_allowed: bool,
    /// The explanation, one sentence per zone the ranges land in.
    pub detail: String,
    pub blocked_zones: BTreeSet<String>,
}

/// Explains how firewalld treats each provider's ranges on `ports`.
pub fn explain(
    c: &Config,
    services: &Services,
    catalog: &CdnCatalog,
    providers: &[Provider],
    ports: &[u16],
    ifaces: (Option<&str>, Option<&str>),
) -> Vec<ProviderView> {
    let mut out = Vec::new();
    for p in providers {
        // (whose traffic, what happens to it): merged where both families fare the same.
        let mut sentences: Vec<(String, String)> = Vec::new();
        let mut allowed = true;
        let mut some_allowed = false;
        let mut blocked_zones = BTreeSet::new();
        for family in [Family::V4, Family::V6] {
            let set = catalog.set(*p, family);
            if set.is_empty() {
                continue;
            }
            let iface = if family == Family::V4 {
                ifaces.0
            } else {
                ifaces.1
            };
            for pl in place(c, &set, family, iface) {
                let Some(zone) = c.zones.get(&pl.zone) else {
                    allowed = false;
                    sentences.push((
                        ranges_words(&pl.set, &set, family),
                        format!(
                            "lands in zone {} ({}), which is not defined: firewalld cannot load it",
                            pl.zone,
                            landing_words(&pl, c)
                        ),
                    ));
                    continue;
                };
                let mut how: Vec<String> = Vec::new();
                let mut zone_ok = true;
                for port in ports {
                    for (part, d) in judge(c, services, zone, &pl.set, family, *port) {
                        let whole = part == pl.set;
                        let who = if whole {
                            String::new()
                        } else {
                            format!(" for {}", part.describe(3))
                        };
                        if d.allows() {
                            some_allowed = true;
                            how.push(format!("port {port}{who} allowed by {}", d.words()));
                        } else {
                            zone_ok = false;
                            how.push(format!("port {port}{who} refused by {}", d.words()));
                        }
                    }
                }
                if !zone_ok {
                    allowed = false;
                    blocked_zones.insert(zone.name.clone());
                }
                let verdict = if zone_ok { "allowed" } else { "blocked" };
                let web_allow = ports.iter().any(|port| {
                    zone.ports.iter().any(|r| r.has_tcp(*port))
                        || zone.services.iter().any(|s| {
                            services
                                .get(s)
                                .is_some_and(|ps| ps.iter().any(|r| r.has_tcp(*port)))
                        })
                        || zone.rules.iter().any(|r| {
                            r.action == Action::Accept
                                && match &r.matches {
                                    RuleMatch::Port(x) => x.has_tcp(*port),
                                    RuleMatch::Service(s) => services
                                        .get(s)
                                        .is_some_and(|ps| ps.iter().any(|x| x.has_tcp(*port))),
                                    RuleMatch::All => true,
                                    RuleMatch::Other => false,
                                }
                        })
                });
                let allows = if web_allow {
                    zone_summary(zone)
                } else {
                    format!(
                        "{} and no http/https service, port or rich rule",
                        zone_summary(zone)
                    )
                };
                sentences.push((
                    ranges_words(&pl.set, &set, family),
                    format!(
                        "lands in zone {} ({}); {} allows {allows}: {verdict} ({})",
                        zone.name,
                        landing_words(&pl, c),
                        zone.name,
                        how.join("; ")
                    ),
                ));
            }
        }
        let mut merged: Vec<(Vec<String>, String)> = Vec::new();
        for (who, what) in sentences {
            match merged.iter_mut().find(|(_, w)| *w == what) {
                Some((whos, _)) => whos.push(who),
                None => merged.push((vec![who], what)),
            }
        }
        let detail = merged
            .iter()
            .map(|(whos, what)| format!("traffic from {} {what}", whos.join(" and ")))
            .collect::<Vec<_>>()
            .join(". ");
        out.push(ProviderView {
            provider: *p,
            allowed,
            some_allowed,
            detail: format!("firewalld: {detail}"),
            blocked_zones,
        });
    }
    out
}

/// What differs between the runtime and the permanent configuration, in words.
pub fn drift(runtime: &Config, permanent: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if runtime.default_zone != permanent.default_zone {
        out.push(format!(
            "default zone {} at runtime, {} in the permanent configuration",
            runtime.default_zone, permanent.default_zone
        ));
    }
    let names: BTreeSet<&String> = runtime.zones.keys().chain(permanent.zones.keys()).collect();
    for name in names {
        let (r, p) = match (runtime.zones.get(name), permanent.zones.get(name)) {
            (Some(r), Some(p)) => (r, p),
            (Some(_), None) => {
                out.push(format!(
                    "zone {name} only at runtime (the next reload drops it)"
                ));
                continue;
            }
            _ => {
                out.push(format!(
                    "zone {name} only in the permanent configuration (not in force until a reload)"
                ));
                continue;
            }
        };
        let items = |z: &Zone| -> BTreeSet<String> {
            let mut s: BTreeSet<String> =
                z.services.iter().map(|x| format!("service {x}")).collect();
            s.extend(
                z.ports
                    .iter()
                    .map(|x| format!("port {}/{}", port_text(x), x.proto)),
            );
            s.extend(z.sources.iter().map(|x| format!("source {x}")));
            s.extend(z.rules.iter().map(|x| format!("rich rule `{}`", x.text)));
            s.insert(z.target.words().to_string());
            s
        };
        let (ri, pi) = (items(r), items(p));
        for only in ri.difference(&pi) {
            out.push(format!(
                "zone {name}: {only} only at runtime (the next reload drops it)"
            ));
        }
        for only in pi.difference(&ri) {
            out.push(format!(
                "zone {name}: {only} only in the permanent configuration (not in force until a reload)"
            ));
        }
    }
    for (name, entries) in &runtime.ipsets {
        if let Some(p) = permanent.ipsets.get(name) {
            let (a, b) = (entries.difference(p).count(), p.difference(entries).count());
            if a + b > 0 {
                out.push(format!(
                    "ipset {name}: {a} entries only at runtime, {b} only in the permanent configuration"
                ));
            }
        } else {
            out.push(format!(
                "ipset {name} only at runtime (the next reload drops it)"
            ));
        }
    }
    out
}

fn zones_of(c: &Config) -> BTreeSet<String> {
    c.zones
        .values()
        .flat_map(|z| {
            z.services
                .iter()
                .cloned()
                .chain(z.rules.iter().filter_map(|r| match &r.matches {
                    RuleMatch::Service(s) => Some(s.clone()),
                    _ => None,
                }))
        })
        .collect()
}

/// True when firewalld is installed (its configuration or its stock zones exist).
pub fn installed(host: &dyn Host) -> bool {
    host.metadata(&Path::new(ETC).join("firewalld.conf"))
        .is_ok()
        || host.metadata(&Path::new(USR).join("zones")).is_ok()
}

fn fix_for(provider: Provider, zones: &BTreeSet<String>) -> String {
    let open: Vec<String> = zones
        .iter()
        .map(|z| {
            format!("firewall-cmd --permanent --zone={z} --add-service=http --add-service=https")
        })
        .collect();
    format!(
        "only for the CDN: origin-agent whitelist --provider {provider} --backend firewalld --apply; or open the web ports to everyone: {} && firewall-cmd --reload",
        open.join(" && ")
    )
}

/// The firewalld checks and whether firewalld runs.
#[derive(Debug, Clone, Default)]
pub struct FirewalldChecks {
    pub checks: Vec<Check>,
    /// False: installed but stopped; its checks say what it would do once started (warnings at
    /// most, never a cause: another firewall is what decides now).
    pub running: bool,
}

/// The firewalld checks, where firewalld is installed: one per provider (its zone semantics),
/// and the runtime/permanent drift.
pub fn checks(
    host: &dyn Host,
    catalog: &CdnCatalog,
    providers: &[Provider],
    ports: &[u16],
) -> FirewalldChecks {
    if !installed(host) {
        return FirewalldChecks::default();
    }
    let cmd = crate::trust::known_binary(host, None, FIREWALL_CMD)
        .ok()
        .map(|p| FirewallCmd {
            host,
            program: p.display().to_string(),
            deadline: Instant::now() + RUNTIME_BUDGET,
        });
    let running = cmd.as_ref().is_some_and(FirewallCmd::running);
    FirewalldChecks {
        checks: checks_of(
            host,
            cmd.as_ref().filter(|_| running),
            catalog,
            providers,
            ports,
        ),
        running,
    }
}

fn checks_of(
    host: &dyn Host,
    cmd: Option<&FirewallCmd>,
    catalog: &CdnCatalog,
    providers: &[Provider],
    ports: &[u16],
) -> Vec<Check> {
    let running = cmd.is_some();
    let skip = |why: String| {
        vec![Check::skip(
            "firewalld.zones",
            Area::Firewall,
            "firewalld's zones let the CDN reach the web ports",
            why,
        )]
    };
    let permanent = match read_permanent(host) {
        Ok(c) => c,
        Err(e) => return skip(format!("firewalld's configuration could not be read: {e}")),
    };
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let runtime = match cmd.map(FirewallCmd::runtime) {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            notes.push(format!(
                "the runtime could not be read ({e}); judged from the permanent configuration"
            ));
            None
        }
        None => {
            notes.push(
                "firewalld is not running: this is what it would enforce when started".to_string(),
            );
            None
        }
    };
    let judged = runtime.as_ref().unwrap_or(&permanent);
    let services = match read_services(host, &zones_of(judged)) {
        Ok(s) => s,
        Err(e) => return skip(format!("firewalld's services could not be read: {e}")),
    };
    let ifaces = default_route_interfaces(host);
    let ifaces = (ifaces.0.as_deref(), ifaces.1.as_deref());
    let port_list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    for v in explain(judged, &services, catalog, providers, ports, ifaces) {
        let id = format!("firewalld.{}", v.provider);
        let title = if running {
            format!(
                "firewalld's zones let {} reach ports {port_list}",
                v.provider
            )
        } else {
            format!(
                "firewalld (stopped) would let {} reach ports {port_list} once started",
                v.provider
            )
        };
        let mut detail = v.detail.clone();
        for n in &notes {
            detail.push_str(&format!(" ({n})"));
        }
        let check = if v.allowed {
            Check::ok(id, Area::Firewall, title)
        } else if v.some_allowed || !running {
            Check::warn(id, Area::Firewall, title)
        } else {
            Check::fail(id, Area::Firewall, title)
        };
        let check = check.detail(detail);
        out.push(if v.allowed {
            check
        } else {
            check.fix(fix_for(v.provider, &v.blocked_zones))
        });
    }
    if let Some(r) = &runtime {
        let d = drift(r, &permanent);
        let title = "firewalld's runtime matches its permanent configuration";
        out.push(if d.is_empty() {
            Check::ok("firewalld.drift", Area::Firewall, title)
        } else {
            let shown: Vec<&String> = d.iter().take(12).collect();
            let more = d.len().saturating_sub(shown.len());
            let mut detail = shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            if more > 0 {
                detail.push_str(&format!("; … {more} more"));
            }
            Check::warn("firewalld.drift", Area::Firewall, title)
                .detail(detail)
                .fix("keep the runtime: firewall-cmd --runtime-to-permanent; or drop it: firewall-cmd --reload")
        });
    }
    out
}

/// Adds the firewalld checks to the audit's: a failing `firewall.PROVIDER` check (from the
/// nftables firewalld generated) gets the zone explanation first in its detail and the firewalld fix (a
/// raw nft rule would be lost at the next reload); where the raw rules could not be judged, the
/// firewalld check carries the cause itself.
pub fn merge(checks: &mut Vec<Check>, explained: FirewalldChecks) {
    if !explained.running {
        checks.extend(explained.checks);
        return;
    }
    for mut e in explained.checks {
        let provider =
            e.id.strip_prefix("firewalld.")
                .filter(|p| Provider::parse(p).is_some());
        if let Some(p) = provider {
            let raw = checks
                .iter_mut()
                .find(|c| c.id == format!("firewall.{p}") && c.status != Status::Skip);
            match raw {
                Some(c) if c.status != Status::Ok => {
                    c.detail = format!("{} — {}", e.detail, c.detail);
                    if e.fix.is_some() {
                        c.fix.clone_from(&e.fix);
                    }
                }
                None if matches!(e.status, Status::Fail | Status::Warn) => {
                    e = e.cause(crate::cause::CauseId::FirewallCdnBlocked);
                }
                _ => {}
            }
        }
        checks.push(e);
    }
}

#[cfg(test)]
#[path = "firewalld_tests.rs"]
mod tests;
