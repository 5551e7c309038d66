#!/bin/sh
# Installs the Debian packages the end-to-end tests start for real (nginx, Apache httpd, PHP-FPM 8.2 with
# mysqli, MariaDB, the firewalls, fail2ban, curl, the process/network tools, chattr (e2fsprogs) and debootstrap:
# the `whitelist --persist` test installs netfilter-persistent into a Debian root of its own,
# never on this machine, because it changes how a machine boots). Idempotent: it
# runs `apt-get update` and `apt-get install` only when something is missing, and only installs:
# it never starts, stops, enables or disables any service (Debian may auto-start a freshly
# installed service unless policy-rc.d forbids it, as in most containers; the tests start their
# own instances in temp dirs and do not use the system ones).
#
# Usage: scripts/install-test-deps.sh        (as root, or through sudo when not root)
set -eu

PACKAGES="nginx apache2 php-fpm php-mysql php-cli php wordpress mariadb-server mariadb-client iptables nftables ipset ufw fail2ban firehol sqlite3 openssl curl iproute2 procps psmisc ca-certificates debootstrap e2fsprogs util-linux systemd"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "install-test-deps: all packages already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-test-deps: need root (or sudo) to install:$missing" >&2
    exit 1
fi

echo "install-test-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $missing

# wordpress: the WordPress e2e serves Debian's package tree (named with `php`, so apt does not
# pick libapache2-mod-php for its `libapache2-mod-php | php` dependency); php-cli runs the
# throwaway copy of `wp isolate` and the test's install helper.
# The tests run php-fpm8.2; php-fpm is the Debian metapackage that pulls the default version.
if ! command -v php-fpm8.2 >/dev/null 2>&1 && [ ! -x /usr/sbin/php-fpm8.2 ]; then
    echo "install-test-deps: warning: php-fpm8.2 not found (this is not Debian 12?); lab tests will skip" >&2
fi
echo "install-test-deps: done"
