//! End-to-end tests: the real `origin-agent` binary against real nginx, PHP-FPM, MariaDB and
//! firewalls, started by the tests on loopback and in network namespaces they create.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apache;
mod cli;
mod daemon;
mod dns;
mod examples;
mod firewall;
pub mod lab;
mod logs;
pub mod scenarios;
pub mod stack;
mod verdicts;
mod whitelist;
