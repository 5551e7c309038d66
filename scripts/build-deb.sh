#!/bin/sh
# Builds the origin-agent .deb: release binary, man page and shell completions generated from
# the binary (nothing generated is committed), then cargo-deb with the metadata in
# agent/Cargo.toml [package.metadata.deb]. Installs cargo-deb first when it is missing.
#
#   scripts/build-deb.sh [extra cargo-deb flags, e.g. --deb-revision 2]
#
# The package lands in target/debian/.
set -eu

cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "cargo-deb not found: installing it from crates.io" >&2
    cargo install --locked cargo-deb
fi

cargo build --release --locked -p origin-agent

rm -rf target/assets
mkdir -p target/assets/completions
target/release/origin-agent generate all target/assets

for asset in man/origin-agent.1 man/origin-agent-audit.1 man/origin-agent-whitelist.1 completions/origin-agent.bash completions/_origin-agent \
    completions/origin-agent.fish; do
    if [ ! -s "target/assets/$asset" ]; then
        echo "build-deb: 'origin-agent generate all' did not write target/assets/$asset" >&2
        exit 1
    fi
done

cargo deb -p origin-agent --no-build "$@"
