//! CDN providers and their published IP ranges: the lists bundled in the binary (the default that
//! works offline) and the provider names the config and the command line accept.

use serde::{Deserialize, Serialize};

/// A CDN or reverse-proxy provider whose edge addresses may connect to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Cloudflare,
    Fastly,
    Cloudfront,
    Akamai,
    Bunny,
    Gcore,
    Imperva,
    Sucuri,
    Stackpath,
    AzureFrontdoor,
    GoogleLb,
}

impl Provider {
    pub const ALL: &'static [Provider] = &[
        Provider::Cloudflare,
        Provider::Fastly,
        Provider::Cloudfront,
        Provider::Akamai,
        Provider::Bunny,
        Provider::Gcore,
        Provider::Imperva,
        Provider::Sucuri,
        Provider::Stackpath,
        Provider::AzureFrontdoor,
        Provider::GoogleLb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Cloudflare => "cloudflare",
            Provider::Fastly => "fastly",
            Provider::Cloudfront => "cloudfront",
            Provider::Akamai => "akamai",
            Provider::Bunny => "bunny",
            Provider::Gcore => "gcore",
            Provider::Imperva => "imperva",
            Provider::Sucuri => "sucuri",
            Provider::Stackpath => "stackpath",
            Provider::AzureFrontdoor => "azure-frontdoor",
            Provider::GoogleLb => "google-lb",
        }
    }

    pub fn parse(name: &str) -> Option<Provider> {
        let name = name.trim().to_ascii_lowercase();
        Provider::ALL.iter().copied().find(|p| p.name() == name)
    }

    pub fn names() -> Vec<&'static str> {
        Provider::ALL.iter().map(|p| p.name()).collect()
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
