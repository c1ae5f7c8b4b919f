#!/bin/bash
# make conformance-cache: runs the independent HTTP cache test suite
# (https://cache-tests.fyi/, npm package http-cache-tests) against cairn's edge
# cache and compares with the results it publishes for nginx, Squid, Apache and
# Traffic Server. The suite is installed from npm into build/, not copied here.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=${CACHE_TESTS_VERSION:-0.4.5}
D=build/cache-tests
P_ORIGIN=${P_ORIGIN:-19600}; P_EDGE=${P_EDGE:-19601}
mkdir -p $D
if [ ! -d $D/node_modules/http-cache-tests ]; then
    (cd $D && npm install --no-audit --no-fund --silent http-cache-tests@$VERSION)
fi
make -s build/cairn
S=$D/node_modules/http-cache-tests
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
(cd $S && exec env npm_config_protocol=http npm_config_port=$P_ORIGIN npm_config_pidfile=$PWD/../../server.pid \
    node server/server.mjs) > $D/server.log 2>&1 & PIDS+=($!)
cat > $D/edge.yaml <<CONF
log: {level: warn}
services:
  cdn:
    role: edge
    listen: ["127.0.0.1:$P_EDGE"]
    access_log: false
    routes: [{path: /, backend: origin, cache: {memory: 64MiB}}]
    backends: {origin: {servers: ["127.0.0.1:$P_ORIGIN"]}}
CONF
./build/cairn run cdn -c $D/edge.yaml > $D/edge.log 2>&1 & PIDS+=($!)
for i in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$P_EDGE/ && break; sleep 0.1; done
(cd $S && env npm_config_base=http://127.0.0.1:$P_EDGE npm_config_id= npm_package_config_id= \
    node --no-warnings cli.mjs) > $D/cairn.json 2> $D/cli.err
/usr/bin/python3 - "$D/cairn.json" "$S/results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
peers = {n: json.load(open(f"{sys.argv[2]}/{n}.json")) for n in ("nginx", "squid", "trafficserver", "apache")}
print(f"cairn: {sum(v is True for v in r.values())} of {len(r)} tests pass")
for n, o in peers.items():
    print(f"{n}: {sum(v is True for v in o.values())} (published)")
lost = sorted(k for k, v in r.items() if v is not True and any(o.get(k) is True for o in peers.values()))
print(f"failing here but passed by a peer: {len(lost)}")
for k in lost:
    print("  " + k + "  (" + ", ".join(n for n, o in peers.items() if o.get(k) is True) + ")")
PY
