#!/usr/bin/env bash
# npm run test:windows (CI runs it after the Linux tests): bmrt under the official Windows node.exe,
# run by Wine on this Linux machine. Sets up Wine and node.exe (../shared/tools/wine-windows.sh, or
# $BMRT_WINE_SETUP; about a minute the first time), cross-builds the addon with mingw-w64, then:
#   (a) the test files that need neither a browser, Python nor the addon, under win32 node;
#   (b) the addon's own tests under win32 node with the cross-built addon;
#   (c) a mixed swarm: a Windows bmrt-node on the cross-built addon serving blocks 2:4, Linux
#       servers for the rest, a Linux client whose greedy output equals EXPECTED.md.
# Wine is not Windows: see docs/user-guide.md, "Windows", for what this cannot check.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
setup=${BMRT_WINE_SETUP:-../shared/tools/wine-windows.sh}
if [ ! -f "$setup" ]; then
  echo "test:windows needs the Wine setup script: $setup is missing (set BMRT_WINE_SETUP)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== Wine and node.exe ($setup)"
bash "$setup" > "$work/setup.log" 2>&1 || { cat "$work/setup.log" >&2; exit 1; }
echo "ready after $((SECONDS - started)) s"
wine_node=${WT:-$HOME/.cache/bmrt-wine}/bin/wine-node
export WINE_NODE=$wine_node
"$wine_node" -e "console.log('win32 node: process.platform ' + process.platform + ', node ' + process.version + ', Windows ' + require('os').release())" | tee "$work/win32.txt"

[ -d dist ] || npm run build
echo "== the addon, cross-built for Windows with mingw-w64"
bash addon/cross-build-windows.sh
addon="Z:$(pwd)/addon/build-win32/bmrt.node"

log="$work/tests.log"
status=0
# Runs a test command, teeing its output into the log; a failure is remembered, not fatal.
run() {
  set +e
  "$@" 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  set -e
}
echo "== (a) tests under win32 node, JS backend"
# sybils.test is left to Linux: it starts 20 libp2p nodes in one process to test the client's
# routing (nothing platform-specific), which under Wine took 90 s of this stage and, on a busy
# machine, more than joinSwarm's 30 s to find DHT peers (the CI run of 8b6e95c). So is
# spot-check.test: the client's comparison of servers' outputs, 4 servers in one process, 36 s
# here (the CI run of fd4fc6c, whose whole run took 28.6 min against 23.8 for the one before).
# fuzz, bad-peers and peer-limits test how a server answers malformed frames and greedy peers:
# protocol logic in JS, 61 s here (the CI run of 5de92d0, 26 min in all).
files=$(ls dist/test/*.test.js | grep -v -E '/(native|referee|torch-backend|torch-swarm|web-pages|sybils|spot-check|fuzz|bad-peers|peer-limits)\.test\.js$')
# shellcheck disable=SC2086
BMRT_DISABLE_NATIVE=1 BMRT_REQUIRE_NATIVE=0 run "$wine_node" node_modules/mocha/bin/mocha.js --no-config --timeout 180000 --reporter dist/test/reporter.js $files
echo "== (b) the addon's tests under win32 node, with the cross-built addon (it must load)"
BMRT_ADDON="$addon" BMRT_REQUIRE_NATIVE=1 run "$wine_node" node_modules/mocha/bin/mocha.js --no-config --timeout 180000 --reporter dist/test/reporter.js dist/test/native.test.js
echo "== (c) a mixed Windows + Linux swarm"
run npx mocha --no-config --timeout 180000 --reporter dist/test/reporter.js dist/test/windows/mixed-swarm.js

echo
echo "test:windows: $(cat "$work/win32.txt")"
grep '^tests:' "$log" | sed 's/^/  /'
echo "test:windows: $((SECONDS - started)) s, $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
