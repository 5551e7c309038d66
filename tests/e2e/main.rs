//! End-to-end tests: the real `origin-agent` binary against real nginx, PHP-FPM, MariaDB and
//! firewalls, started by the tests on loopback and in network namespaces they create.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon;
