#!/usr/bin/env bash
# check-systemd.sh - lint systemd/sekisho.service with `systemd-analyze verify`.
#
# usage: scripts/check-systemd.sh [UNIT_FILE]     (default: systemd/sekisho.service)
#
# `systemd-analyze verify` exits 0 on unknown keys and bad values and only warns, so this fails
# when it exits non-zero OR prints any line that mentions the unit. It also complains when an
# Exec*= binary does not exist on this machine, and the sekisho binary (/usr/local/bin/sekisho)
# is usually not installed where this runs, so the unit is verified from a temporary copy in
# which a missing `.../sekisho` Exec*= binary is replaced by an existing one (`true`).
# Everything else is checked as written (a missing /bin/kill, say, still fails).
# Prints "skipped" and exits 0 when systemd-analyze is not installed.
set -euo pipefail

if [ $# -gt 0 ]; then UNIT=$(realpath -- "$1"); fi
cd "$(dirname "$0")/.."
UNIT=${UNIT:-systemd/sekisho.service}
[ -f "$UNIT" ] || { echo "check-systemd: no such file: $UNIT" >&2; exit 1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-systemd: systemd-analyze not found; skipped"
    exit 0
fi

NAME=$(basename "$UNIT")
TRUE_BIN=$(command -v true)
case "$TRUE_BIN" in /*) ;; *) TRUE_BIN=/bin/true ;; esac

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp "$UNIT" "$TMP/$NAME"

# Exec lines look like `ExecStart=[-@:+!]*/path/to/bin args`; swap a missing sekisho binary.
# systemd-analyze only checks the first command of each Exec*= list, so check the others here.
missing=0
while IFS= read -r bin; do
    if [ "$(basename "$bin")" = sekisho ] && [ ! -x "$bin" ]; then
        echo "check-systemd: $bin not on this machine; verifying with $TRUE_BIN in its place"
        esc=$(printf '%s' "$bin" | sed 's/[][\.*^$#]/\\&/g')
        sed -i -E "s#^(Exec[A-Za-z]+=[-@:+!]*)${esc}( |\$)#\\1${TRUE_BIN}\\2#" "$TMP/$NAME"
    elif [ ! -x "$bin" ]; then
        echo "check-systemd: $NAME: Exec*= command $bin is not executable on this machine" >&2
        missing=1
    fi
done < <(sed -nE 's#^Exec[A-Za-z]+=[-@:+!]*(/[^[:space:]]+).*#\1#p' "$UNIT" | sort -u)

echo "check-systemd: systemd-analyze verify $UNIT"
rc=0
out=$(cd "$TMP" && systemd-analyze verify "$NAME" 2>&1) || rc=$?
[ -z "$out" ] || printf '%s\n' "$out"
if [ "$rc" -ne 0 ]; then
    echo "check-systemd: FAIL: systemd-analyze verify exited $rc" >&2
    exit 1
fi
if printf '%s\n' "$out" | grep -qF "$NAME"; then
    echo "check-systemd: FAIL: systemd-analyze verify warned about $NAME (lines above)" >&2
    exit 1
fi
if [ "$missing" -ne 0 ]; then
    echo "check-systemd: FAIL: missing Exec*= commands (above)" >&2
    exit 1
fi
echo "check-systemd: ok"
