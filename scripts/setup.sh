#!/usr/bin/env bash
# setup.sh - install the system packages needed to build sekisho (idempotent).
#
# usage: scripts/setup.sh [EXTRA_PACKAGE...]
#
# Installs `cmake` (needed by libz-ng-sys) with apt-get when the `cmake` command is missing,
# `libssl-dev` and `pkg-config` (Pingora's openssl TLS backend links the system OpenSSL), `curl`
# (the TLS tests speak HTTP/2 through it), `openssl` (a test certificate), `chromium` (headless,
# tests/replay_html.rs renders the replay's HTML report in it), `redis-server` (tests/cluster.rs starts
# its own on a free loopback port, never the system one; the package's own service is stopped
# and disabled if setup installed it), plus
# any extra Debian/Ubuntu package given as an argument that is not installed yet.
# Uses sudo only when not running as root and sudo exists. Does nothing when all is present.
set -euo pipefail

want=()
if command -v cmake >/dev/null 2>&1; then
    echo "setup: cmake found ($(command -v cmake))"
else
    echo "setup: cmake missing; will install it"
    want+=(cmake)
fi
for pkg in libssl-dev pkg-config curl openssl chromium redis-server "$@"; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        echo "setup: $pkg already installed"
    else
        echo "setup: $pkg missing; will install it"
        want+=("$pkg")
    fi
done

if [ "${#want[@]}" -eq 0 ]; then
    echo "setup: nothing to install"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || { echo "setup: apt-get not found; install these yourself: ${want[*]}" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "setup: not root and no sudo; install these yourself: ${want[*]}" >&2
        exit 1
    fi
fi

echo "setup: ${SUDO[*]:+${SUDO[*]} }apt-get update"
"${SUDO[@]}" apt-get update -q
echo "setup: ${SUDO[*]:+${SUDO[*]} }apt-get install -y --no-install-recommends ${want[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}"
# the tests start their own redis-server; the package's service is not wanted running
if printf '%s\n' "${want[@]}" | grep -qx redis-server \
    && [ -d /run/systemd/system ]; then
    echo "setup: stopping and disabling the packaged redis-server service (tests start their own)"
    "${SUDO[@]}" systemctl disable --now redis-server || true
fi
echo "setup: done"
