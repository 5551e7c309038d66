#!/usr/bin/env bash
# Installs what the tests need (Debian packages: nginx, php-fpm, mariadb-server, iptables,
# nftables, ipset, ufw, fail2ban, ...) when missing, then runs every test: unit tests, rule
# samples, and the end-to-end tests that start real nginx, PHP-FPM and MariaDB on loopback and
# real firewalls inside network namespaces the tests create and delete.
# The machine's own services and firewall are never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain first (https://rustup.rs or 'apt-get install cargo')" >&2
  exit 1
fi

# The end-to-end tests share one machine-wide resource (the running processes discovery looks at),
# so they serialize themselves; unit tests run in parallel.
cargo test --workspace --all-targets "$@"
