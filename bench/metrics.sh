#!/bin/bash
# make bench-metrics: cairn's metrics role vs Prometheus and VictoriaMetrics on one
# scrape workload.
#
# A synthetic target (Python, pinned to CPU 0) serves SERIES series (counters
# and gauges, values changing every scrape) in the text format. Each TSDB, pinned
# to CPU 1 and run one at a time, scrapes it every INTERVAL for DURATION. Printed
# per TSDB: samples ingested per CPU-second, resident memory per active series at
# the end, bytes on disk per sample once the data is in blocks (Prometheus and
# cairn: the block their admin snapshot API writes from the head, divided by the
# samples ingested; VictoriaMetrics: its data directory after /internal/force_flush),
# and restart-to-ready
# time (SIGTERM, start again, until the HTTP API answers with the series loaded).
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES=${SERIES:-100000}
INTERVAL=${INTERVAL:-5}
DURATION=${DURATION:-60}
. bench/lib.sh
bench_init metrics
for t in prometheus victoria-metrics; do
    command -v $t >/dev/null || { echo "bench-metrics: $t is missing (apt-get install prometheus victoria-metrics)"; exit 1; }
done
make -s build/cairn
TARGET=19590; P_CAIRN=19591; P_PROM=19592; P_VM=19593
LOADCPU=${LOADCPU:-0}; SRVCPU=${SRVCPU:-1}
cat > $W/target.py <<'PY'
import http.server, sys, time
n = int(sys.argv[2])
def body(k):
    out = ["# TYPE bench_requests_total counter"]
    for i in range(n // 2):
        out.append(f'bench_requests_total{{path="/p{i % 100}",code="{200 + i % 5}",shard="{i // 500}",i="{i}"}} {i * 3 + k * (i % 7)}')
    out.append("# TYPE bench_temperature gauge")
    for i in range(n - n // 2):
        out.append(f'bench_temperature{{room="r{i % 50}",sensor="{i}"}} {20 + ((i * 7 + k) % 100) / 10}')
    return ("\n".join(out) + "\n").encode()
bodies = [body(k) for k in range(6)]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        b = bodies[int(time.time() / 5) % len(bodies)]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
taskset -c $LOADCPU /usr/bin/python3 $W/target.py $TARGET $SERIES & PIDS+=($!)
for i in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:$TARGET/metrics && break; sleep 0.2; done
cat > $W/prometheus.yml <<CONF
global: {scrape_interval: ${INTERVAL}s, scrape_timeout: ${INTERVAL}s}
scrape_configs:
  - job_name: bench
    static_configs: [{targets: ["127.0.0.1:$TARGET"]}]
CONF
cat > $W/cairn.yaml <<CONF
data_dir: $W/cairn-data
log: {level: warn}
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:$P_CAIRN"]
    prometheus: $W/prometheus.yml
    enable_admin_api: true
CONF

rss_kib() { awk '/VmRSS/ {print $2}' /proc/$1/status 2>/dev/null || echo 0; }
start_tsdb() {  # name -> sets PID (no command substitution: it would wait on the child)
    case $1 in
    cairn) taskset -c $SRVCPU ./build/cairn run metrics -c $W/cairn.yaml >>$W/cairn.log 2>&1 & ;;
    prometheus) taskset -c $SRVCPU prometheus --config.file=$W/prometheus.yml --storage.tsdb.path=$W/prom-data \
                    --web.listen-address=127.0.0.1:$P_PROM --web.enable-admin-api >>$W/prom.log 2>&1 & ;;
    vm) taskset -c $SRVCPU victoria-metrics -httpListenAddr=127.0.0.1:$P_VM -storageDataPath=$W/vm-data \
            -promscrape.config=$W/prometheus.yml -search.latencyOffset=0s >>$W/vm.log 2>&1 & ;;
    esac
    PID=$!
    PIDS+=($PID)
}
port_of() { case $1 in cairn) echo $P_CAIRN;; prometheus) echo $P_PROM;; vm) echo $P_VM;; esac; }
series_count() {  # name -> number of bench series the API reports
    local p; p=$(port_of $1)
    curl -sf -G "http://127.0.0.1:$p/api/v1/series" --data-urlencode 'match[]={job="bench"}' \
        --data-urlencode "start=$(( $(date +%s) - 3600 ))" 2>/dev/null |
        /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))' 2>/dev/null || echo 0
}
dir_bytes() { du -sb "$1" 2>/dev/null | awk '{print $1}' || echo 0; }

declare -A RATE RSSPS BPS RESTART
for name in cairn prometheus vm; do
    start_tsdb $name; pid=$PID
    p=$(port_of $name)
    for i in $(seq 1 150); do curl -sf -o /dev/null http://127.0.0.1:$p/-/healthy && break; sleep 0.2; done
    # warm up: the first scrape creates the series
    for i in $(seq 1 120); do [ "$(series_count $name)" -ge "$SERIES" ] && break; sleep 1; done
    t0=$(cpu_ticks $pid); s0=$(date +%s.%N)
    sleep $DURATION
    t1=$(cpu_ticks $pid); s1=$(date +%s.%N)
    rss=$(rss_kib $pid)
    scrapes=$(awk -v a=$s0 -v b=$s1 -v i=$INTERVAL 'BEGIN {printf "%d", (b - a) / i}')
    samples=$((scrapes * (SERIES + 5)))
    RATE[$name]=$(awk -v n=$samples -v t=$((t1 - t0)) -v hz=$(getconf CLK_TCK) 'BEGIN {printf "%.0f", (t > 0 ? n / (t / hz) : 0)}')
    RSSPS[$name]=$(awk -v r=$rss -v n=$SERIES 'BEGIN {printf "%.0f", r * 1024 / n}')
    # on-disk: the data as a block, where the tool can make one on demand
    case $name in
    prometheus|cairn)
        sname=$(curl -sf -XPOST http://127.0.0.1:$p/api/v1/admin/tsdb/snapshot |
                /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["name"])')
        d=$( [ $name = cairn ] && echo $W/cairn-data/metrics || echo $W/prom-data )/snapshots/$sname;;
    vm) curl -sf http://127.0.0.1:$P_VM/internal/force_flush >/dev/null || true; sleep 2; d=$W/vm-data;;
    esac
    total=$(dir_bytes $d)
    all_samples=$(( (scrapes + 2) * (SERIES + 5) ))
    BPS[$name]=$(awk -v b=$total -v n=$all_samples 'BEGIN {printf "%.2f", b / n}')
    # restart to ready with the data loaded
    kill -TERM $pid; wait $pid 2>/dev/null || true
    r0=$(date +%s.%N)
    start_tsdb $name; pid=$PID
    for i in $(seq 1 600); do [ "$(series_count $name)" -ge "$SERIES" ] && break; sleep 0.1; done
    r1=$(date +%s.%N)
    RESTART[$name]=$(awk -v a=$r0 -v b=$r1 'BEGIN {printf "%.2f", b - a}')
    kill -TERM $pid; wait $pid 2>/dev/null || true
    echo "$name done" >&2
done
printf "\n%-11s %18s %14s %14s %12s\n" tsdb "samples/cpu-s" "RSS B/series" "disk B/sample" "restart s"
for name in cairn prometheus vm; do
    printf "%-11s %18s %14s %14s %12s\n" $name ${RATE[$name]} ${RSSPS[$name]} ${BPS[$name]} ${RESTART[$name]}
done
echo
for peer in prometheus vm; do
    awk -v a=${RATE[cairn]} -v b=${RATE[$peer]} -v c=${RSSPS[cairn]} -v d=${RSSPS[$peer]} \
        -v e=${BPS[cairn]} -v f=${BPS[$peer]} -v g=${RESTART[cairn]} -v h=${RESTART[$peer]} -v peer=$peer \
        'BEGIN {printf "cairn/%s: ingestion %.2fx, RSS per series %.2fx, bytes per sample %.2fx, restart %.2fx\n", peer, a/b, c/d, e/f, g/h}'
done
echo "(machine: $(nproc) cores, $(uname -r); TSDBs on cpu $SRVCPU one at a time, target on cpu $LOADCPU;"
echo " $SERIES series scraped every ${INTERVAL}s for ${DURATION}s)"
