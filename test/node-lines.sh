#!/usr/bin/env bash
# The suite on the other Node.js lines users run (issue 16): 22 (maintenance), 24 and 26 (LTS),
# each fetched from the npm registry with `npx -y node@N` (npm's `node` package, the official
# binaries). Node 20, the machine's, runs the whole suite in `npm test` before this.
#
# To fit CI's time, these lines run what differs between Node versions and leave out the long
# end-to-end runs, which drive the same code through many cold processes and real-time waits and
# run on Node 20: the CLI and daemon end-to-end files (all but a set of CLI files that exercise
# the executable, its parser, the cached token, a device-flow login and status), the fault tests,
# the arm64 lane's files, the hygiene sweep and the demo. Everything else runs on every line: the
# protocol, store, spool, uploader, receiver, MQTT (the packet cap and ingest against mosquitto),
# display (the QR code decoded from tmux) and property tests.
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
files=()
if [[ $mode == quick ]]; then
  keep_cli=' cached-token.test.ts executable.test.ts main.test.ts command-line.test.ts login.test.ts status.test.ts '
  while IFS= read -r f; do
    case "$f" in
      test/cli/*) [[ $keep_cli == *" $(basename "$f") "* ]] || continue ;;
      # daemon-memory: a V8 flag (--liftoff-only) that each Node line's V8 must still know.
      test/agent/daemon/daemon-memory.test.ts) ;;
      test/faults/* | test/arm64/* | test/agent/daemon/* | test/hygiene/* | test/demo.test.ts) continue ;;
    esac
    files+=("$f")
  done < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
fi
for v in "${lines[@]}"; do
  start=$SECONDS
  echo "== Node $(npx -y "node@$v" --version) ($mode)"
  npx -y "node@$v" test/run.mjs "${files[@]}"
  echo "== Node $v: $((SECONDS - start)) s"
done
