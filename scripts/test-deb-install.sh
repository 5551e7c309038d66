#!/usr/bin/env bash
# Installs the built .deb on a clean Debian root made with debootstrap (a folder, entered with
# chroot: the machine's own packages and services are not touched), checks that the binary, the
# unit, the config (a conffile) and the man page land where they should, that the installed
# binary runs (config check, an audit of a bundled snapshot), then removes and purges it and
# checks that nothing is left.
#
#   scripts/test-deb-install.sh [DEB] [ROOT]
#
# DEB defaults to target/debian/origin-agent_*.deb (scripts/build-deb.sh); ROOT to a fresh
# debootstrap of bookworm (minbase) under target/deb-root (reused when it exists). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
deb="${1:-$(ls -t target/debian/origin-agent_*.deb | head -1)}"
root="${2:-$PWD/target/deb-root}"

if [ ! -x "$root/usr/bin/dpkg" ]; then
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian
fi

cp "$deb" "$root/tmp/origin-agent.deb"
cp examples/php-fpm-saturated.tar.gz "$root/tmp/"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo "== dpkg -i"
in_root dpkg -i /tmp/origin-agent.deb
for f in /usr/bin/origin-agent /usr/lib/systemd/system/origin-agent.service \
    /etc/origin-agent/config.yaml /usr/share/man/man1/origin-agent.1.gz /usr/share/man/man1/origin-agent-audit.1.gz \
    /usr/share/origin-agent/rules/nginx.yaml /usr/share/bash-completion/completions/origin-agent; do
    [ -e "$root$f" ] || { echo "missing after install: $f" >&2; exit 1; }
    echo "ok  $f"
done
in_root dpkg-query -W -f='${Conffiles}\n' origin-agent | grep -q /etc/origin-agent/config.yaml \
    || { echo "config.yaml is not a conffile" >&2; exit 1; }
if [ -L "$root/etc/systemd/system/multi-user.target.wants/origin-agent.service" ]; then
    echo "ok  the service is enabled"
else
    echo "the service was not enabled" >&2; exit 1
fi
in_root origin-agent --version
in_root origin-agent config check
set +e
in_root origin-agent audit --snapshot /tmp/php-fpm-saturated.tar.gz --format nagios
code=$?
set -e
[ "$code" = 2 ] || { echo "audit of the saturated snapshot: exit $code, expected 2 (CRITICAL)" >&2; exit 1; }

echo "== dpkg -r, dpkg -P"
in_root dpkg -r origin-agent
[ ! -e "$root/usr/bin/origin-agent" ] || { echo "binary left after dpkg -r" >&2; exit 1; }
[ -e "$root/etc/origin-agent/config.yaml" ] || { echo "conffile must stay until purge" >&2; exit 1; }
in_root dpkg -P origin-agent
for f in /etc/origin-agent/config.yaml /usr/lib/systemd/system/origin-agent.service \
    /etc/systemd/system/multi-user.target.wants/origin-agent.service /var/lib/origin-agent; do
    [ ! -e "$root$f" ] || { echo "left after purge: $f" >&2; exit 1; }
done
echo "the .deb installs, runs, removes and purges cleanly"
