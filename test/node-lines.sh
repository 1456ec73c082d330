#!/usr/bin/env bash
# The suite on the other Node.js lines users run (issue 16): 22 (maintenance), 24 and 26 (LTS),
# each fetched from the npm registry with `npx -y node@N` (npm's `node` package, the official
# binaries). Node 20, the machine's, runs the whole suite in `npm test` before this.
#
# To fit CI's time, these lines skip the slowest end-to-end files, which drive the same code as
# the rest through many cold processes or long real-time loops (kill loops, the 30-kill DPoP
# figure, the daemon's long runs, the demo, the flapping broker, the hygiene sweep); everything
# else runs, the property tests and the cached-token and executable checks included.
# `test/node-lines.sh full` runs the whole suite on each line; `test/node-lines.sh 26` one line.
set -euo pipefail
cd "$(dirname "$0")/.."
lines=(22 24 26)
mode=quick
for arg in "$@"; do
  case "$arg" in
    full) mode=full ;;
    [0-9]*) lines=("$arg") ;;
    *) echo "usage: test/node-lines.sh [full] [22|24|26]" >&2; exit 2 ;;
  esac
done
slow='dpop-kill.test.ts token.test.ts send-upload.test.ts daemon.test.ts login-resume.test.ts demo.test.ts broker-flap.test.ts secrets.test.ts'
files=()
if [[ $mode == quick ]]; then
  while IFS= read -r f; do
    skip=0
    for s in $slow; do
      # arm64/send-upload.test.ts stays: it is the quicker of the two send/upload files.
      [[ $(basename "$f") == "$s" && $f != test/arm64/send-upload.test.ts ]] && skip=1
    done
    [[ $skip == 0 ]] && files+=("$f")
  done < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
fi
for v in "${lines[@]}"; do
  start=$SECONDS
  echo "== Node $(npx -y "node@$v" --version) ($mode)"
  npx -y "node@$v" test/run.mjs "${files[@]}"
  echo "== Node $v: $((SECONDS - start)) s"
done
