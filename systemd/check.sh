#!/usr/bin/env bash
# CI check of the systemd unit: `systemd-analyze verify` must pass and the offline security exposure
# must be <= 2.0. Both work without systemd running (a container, a CI runner).
#
# Usage: systemd/check.sh [UNIT_FILE] [MAX_EXPOSURE]
#   UNIT_FILE     default: systemd/edgetoken.service next to this script
#   MAX_EXPOSURE  default: 2.0 (0.0-10.0; systemd-analyze's --threshold is the same x10)
# Also checks systemd/install.sh with `bash -n` (and shellcheck, when installed) for the default unit.
#
# Exit: 0 ok, 1 a check failed, 77 systemd-analyze is not installed (the automake "skipped" code).
#
# Why a temporary copy: `verify` fails when ExecStart='s binary does not exist, and on a CI machine
# edgetoken is not installed at /usr/bin/edgetoken. The copy keeps the unit's name and every setting
# and only points ExecStart= at a stub executable in the temporary directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unit=${1:-$root/systemd/edgetoken.service}
max=${2:-2.0}

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-systemd: SKIP: systemd-analyze not found (Debian: apt-get install systemd)" >&2
  exit 77
fi
if [[ ! -f $unit ]]; then
  echo "check-systemd: no such unit file: $unit" >&2
  exit 1
fi
if ! [[ $max =~ ^[0-9]+(\.[0-9])?$ ]]; then
  echo "check-systemd: MAX_EXPOSURE must look like 2.0, got: $max" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/edgetoken"
chmod 0755 "$tmp/bin/edgetoken"

name=$(basename -- "$unit")
# ExecStart=[prefixes]/path/to/binary args -> ExecStart=[prefixes]$tmp/bin/edgetoken args.
# An empty ExecStart= (a reset in drop-ins) is left alone.
sed -E "s#^(ExecStart=[-@:+!]*)[^ ]+#\\1$tmp/bin/edgetoken#" "$unit" >"$tmp/$name"

status=0

echo "check-systemd: systemd-analyze verify --recursive-errors=yes $name"
if ! systemd-analyze verify --recursive-errors=yes "$tmp/$name"; then
  echo "check-systemd: FAIL: systemd-analyze verify reported errors" >&2
  status=1
fi

threshold=$(awk -v m="$max" 'BEGIN { printf "%d", m * 10 + 0.5 }')
if ! out=$(systemd-analyze security --offline=yes --threshold="$threshold" --no-pager "$tmp/$name" 2>&1); then
  security_failed=1
else
  security_failed=0
fi
# "→ Overall exposure level for edgetoken.service: 1.3 OK 🙂"
exposure=$(printf '%s\n' "$out" | sed -nE 's/.*Overall exposure level for [^:]+: ([0-9]+\.[0-9]+).*/\1/p' | tail -n 1)
if [[ -z $exposure ]]; then
  printf '%s\n' "$out" >&2
  echo "check-systemd: FAIL: could not read the exposure level from systemd-analyze security" >&2
  status=1
else
  echo "check-systemd: exposure $exposure (limit $max)"
  if [[ $security_failed -ne 0 ]] || awk -v e="$exposure" -v m="$max" 'BEGIN { exit !(e > m) }'; then
    # Show what costs exposure, so the fix is obvious from the CI log.
    printf '%s\n' "$out" | grep -E '^✗' >&2 || true
    echo "check-systemd: FAIL: exposure $exposure is above $max" >&2
    status=1
  fi
fi

if [[ $# -eq 0 ]]; then
  install_sh=$root/systemd/install.sh
  echo "check-systemd: bash -n systemd/install.sh"
  bash -n "$install_sh" || status=1
  if command -v shellcheck >/dev/null 2>&1; then
    echo "check-systemd: shellcheck systemd/install.sh systemd/check.sh"
    shellcheck "$install_sh" "$root/systemd/check.sh" || status=1
  else
    echo "check-systemd: shellcheck not installed; skipped"
  fi
fi

if [[ $status -eq 0 ]]; then
  echo "check-systemd: OK"
fi
exit "$status"
