//! The live host's fetch of a public status page (a CDN's): ureq over rustls, no proxy from the
//! environment, at most two redirects, the body capped at [`MAX_BODY`].

use std::time::Duration;

use crate::exchange::{ExchangeError, Reply, Stage, MAX_BODY};

/// A status page's answer, on the live host (ureq, rustls, no proxy from the environment).
pub fn fetch_live(url: &str, timeout: Duration) -> Result<Reply, ExchangeError> {
    let started = std::time::Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(2)
        .user_agent(concat!("origin-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let fail = |stage, m: String| {
        let mut e = ExchangeError::new(stage, m);
        e.millis = started.elapsed().as_millis() as u64;
        e
    };
    let mut resp = agent.get(url).call().map_err(|e| {
        let timed_out = matches!(e, ureq::Error::Timeout(_));
        let mut err = fail(Stage::Exchange, format!("{url}: {e}"));
        if timed_out {
            err.errno = Some(libc::ETIMEDOUT);
        }
        err
    })?;
    let status = resp.status().as_u16();
    let ttfb_ms = started.elapsed().as_millis() as u64;
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY as u64)
        .read_to_string()
        .map_err(|e| fail(Stage::Exchange, format!("{url}: {e}")))?;
    Ok(Reply::Http {
        status,
        headers: Vec::new(),
        body,
        ttfb_ms,
        millis: started.elapsed().as_millis() as u64,
    })
}
