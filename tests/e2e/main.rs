//! End-to-end tests: the real `origin-agent` binary against real nginx, PHP-FPM, MariaDB and
//! firewalls, started by the tests on loopback and in network namespaces they create.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apache;
mod ask_stack;
mod cli;
mod corpus;
mod daemon;
mod dns;
mod examples;
mod firewall;
mod held_out;
mod hostile;
mod logs;
mod report_snapshots;
pub mod scenarios;
pub mod stack;
pub mod util;
pub use util::lab;
mod verdicts;
mod whitelist;
mod wordpress;

/// A test that cannot run here (not root, a package missing) says why and returns; with
/// `ORIGIN_AGENT_E2E=require` (set by `.ci/run`) it fails instead, so CI can never pass with the
/// end-to-end tests silently skipped.
pub fn skip(reason: impl std::fmt::Display) {
    if std::env::var("ORIGIN_AGENT_E2E").is_ok_and(|v| v == "require") {
        panic!("ORIGIN_AGENT_E2E=require, but this test would skip: {reason}");
    }
    eprintln!("skipped: {reason}");
}
