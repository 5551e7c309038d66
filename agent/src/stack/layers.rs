//! The layer map: CDN → web server → PHP-FPM → database, each with what asking it directly
//! said (only the checks that asked a layer directly: the self-test, the pools' live status,
//! the database's live status, the CDN status pages), and the failing layer marked (the deepest layer that fails: the ones above fail
//! because of it). Built from the checks alone, so it renders the same live or from a snapshot.

use crate::check::{Check, Status};

/// One layer of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub name: &'static str,
    /// The worst status of its checks; `Skip` when nothing asked it.
    pub status: Status,
    /// The first line of its most telling check.
    pub summary: String,
    pub failing: bool,
}

const LAYERS: [&str; 4] = ["CDN", "web server", "PHP-FPM", "database"];

fn layer_of(check: &Check) -> Option<usize> {
    let id = check.id.as_str();
    if id.starts_with("cdn.status.") {
        Some(0)
    } else if id.starts_with("self-test.http") {
        Some(1)
    } else if id.starts_with("self-test.php-fpm.")
        || id.starts_with("self-test.upstream.")
        || (id.starts_with("php-fpm.pool.") && id.ends_with(".live-status"))
    {
        Some(2)
    } else if id.starts_with("database.") {
        Some(3)
    } else {
        None
    }
}

fn rank(s: Status) -> u8 {
    match s {
        Status::Skip => 0,
        Status::Ok => 1,
        Status::Warn => 2,
        Status::Fail => 3,
    }
}

/// The layers, top to bottom.
pub fn map(checks: &[Check]) -> Vec<Layer> {
    let mut layers: Vec<Layer> = LAYERS
        .iter()
        .map(|name| Layer {
            name,
            status: Status::Skip,
            summary: String::new(),
            failing: false,
        })
        .collect();
    let mut best: [Option<&Check>; 4] = [None; 4];
    for check in checks {
        let Some(i) = layer_of(check) else { continue };
        if best[i].is_none_or(|b| rank(check.status) > rank(b.status)) {
            best[i] = Some(check);
        }
    }
    for (i, check) in best.iter().enumerate() {
        if let Some(c) = check {
            layers[i].status = c.status;
            let detail = c.detail.lines().next().unwrap_or_default();
            layers[i].summary = if detail.is_empty() || c.status == Status::Ok {
                c.title.clone()
            } else {
                detail.chars().take(200).collect()
            };
        }
    }
    if let Some(deepest) = layers.iter().rposition(|l| l.status == Status::Fail) {
        layers[deepest].failing = true;
    }
    layers
}

/// The map as report lines, or nothing when no layer was asked.
pub fn render(checks: &[Check]) -> String {
    let layers = map(checks);
    if layers.iter().all(|l| l.status == Status::Skip) {
        return String::new();
    }
    let mut out =
        String::from("\nLayers, asked directly now (CDN → web server → PHP-FPM → database)\n");
    for l in &layers {
        let mark = if l.failing { "  ◀ failing layer" } else { "" };
        let summary = if l.status == Status::Skip && l.summary.is_empty() {
            "not asked".to_string()
        } else {
            l.summary.clone()
        };
        out.push_str(&format!(
            "  {:<10} {:<4} {summary}{mark}\n",
            l.name,
            l.status.label()
        ));
    }
    out
}

/// Ok checks naming a cause rule it out now: (cause id, what was seen).
pub fn ruled_out(checks: &[Check], cause: crate::cause::CauseId) -> Option<String> {
    checks
        .iter()
        .find(|c| c.status == Status::Ok && c.cause == Some(cause))
        .map(|c| {
            c.detail
                .lines()
                .next()
                .unwrap_or(&c.title)
                .chars()
                .take(240)
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Area;

    #[test]
    fn the_deepest_failing_layer_is_marked() {
        let checks = vec![
            Check::fail("self-test.http.a.127.0.0.1:80", Area::Services, "t")
                .detail("nginx answers 502"),
            Check::fail("self-test.php-fpm.www", Area::Services, "t").detail("pool `www`: refused"),
            Check::ok("cdn.status.cloudflare", Area::Cdn, "cloudflare ok"),
        ];
        let layers = map(&checks);
        assert!(!layers[1].failing);
        assert!(layers[2].failing);
        assert_eq!(layers[3].status, Status::Skip);
        let text = render(&checks);
        assert!(
            text.contains("PHP-FPM    fail pool `www`: refused  ◀ failing layer"),
            "{text}"
        );
    }
}
