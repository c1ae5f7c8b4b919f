#!/bin/bash
# make bench-promql: PromQL latency and query memory, cairn vs Prometheus on the
# same data.
#
# bench/rwpush.c pushes 10,000 series (5,000 counters, 5,000 histogram buckets),
# one sample a minute over the last HOURS (default 24), by remote_write into a
# Prometheus and a cairn, both pinned to CPU SRVCPU. Then each dashboard query
# runs RUNS times on each server, alternating, as a range query over 1h and over
# 24h (step 15s and 60s, as Grafana would ask); each run is one curl that asks
# 1 + AGAIN times: the first answer's time is the latency on a new connection, the
# median of the others the latency on a kept connection (as Grafana's data source
# proxy keeps them). The medians over the runs are printed with the ratios
# cairn/Prometheus. Query memory: the peak resident set
# (VmHWM, reset through /proc/PID/clear_refs before the queries) minus the
# resident set before them. A last line times the same curl against bench/floor.c
# (a server that sends a fixed answer and does nothing else): the least any server
# answers a query in here, which bounds the ratio of the cheapest queries.
# CAIRN_BIN runs another cairn binary (an earlier build) in place of build/cairn.
set -euo pipefail
cd "$(dirname "$0")/.."
HOURS=${HOURS:-24}
RUNS=${RUNS:-5}
AGAIN=${AGAIN:-3}
SRVCPU=${SRVCPU:-1}
. bench/lib.sh
bench_init promql
command -v prometheus >/dev/null || { echo "bench-promql: prometheus is missing (apt-get install prometheus)"; exit 1; }
make -s build/cairn
CAIRN_BIN=${CAIRN_BIN:-build/cairn}     # another build to compare with
cc -O2 -o $W/rwpush bench/rwpush.c -lsnappy
P_CAIRN=19691; P_PROM=19692; P_FLOOR=19694
cc -O2 -Wall -Wextra -Werror -o $W/floor bench/floor.c
taskset -c $SRVCPU $W/floor $P_FLOOR 100 & PIDS+=($!)
echo 'global: {}' > $W/prometheus.yml
taskset -c $SRVCPU prometheus --config.file=$W/prometheus.yml --storage.tsdb.path=$W/prom \
    --web.listen-address=127.0.0.1:$P_PROM --web.enable-remote-write-receiver >$W/prom.log 2>&1 &
PIDS+=($!); PROM_PID=$!
cat > $W/stack.yaml <<CONF
data_dir: $W/cairn
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:$P_CAIRN"]
    prometheus: {scrape_configs: []}
CONF
taskset -c $SRVCPU $CAIRN_BIN run metrics -c $W/stack.yaml >$W/cairn.log 2>&1 &
PIDS+=($!); CAIRN_PID=$!
for p in $P_PROM $P_CAIRN; do
    for i in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:$p/-/ready && break; sleep 0.1; done
done
END=$(( $(date +%s) / 60 * 60 ))
echo "pushing 10,000 series x ${HOURS}h at 60s to both ..."
$W/rwpush $END $HOURS 60 $P_PROM $P_CAIRN
sleep 2
QUERIES=(
  'sum by (code) (rate(http_requests_total[5m]))'
  'histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket[5m])))'
  'histogram_quantile(0.9, sum by (le, handler) (rate(request_duration_seconds_bucket[5m])))'
  'topk(5, sum by (instance) (rate(http_requests_total{code=~"5.."}[5m])))'
  'rate(http_requests_total{instance="i7", handler="h3"}[5m])'
  'sum(rate(http_requests_total[5m])) / sum(rate(http_requests_total[5m] offset 1d))'
)
rss() { awk '/^VmRSS/ {print $2}' /proc/$1/status; }
hwm() { awk '/^VmHWM/ {print $2}' /proc/$1/status; }
one() { # port query start end step -> "fresh kept": seconds on a new connection, then the
       # median of AGAIN more on the same connection (as Grafana's data source proxy asks)
    local url="http://127.0.0.1:$1/api/v1/query_range?query=$(urlenc "$2")&start=$3&end=$4&step=$5" args=() i
    for i in $(seq $((AGAIN + 1))); do args+=(-o $W/out.json "$url"); done
    curl -s -w '%{time_total} %{num_connects}\n' "${args[@]}" > $W/times
    grep -q '"status":"success"' $W/out.json || { echo "query failed on $1: $(head -c 300 $W/out.json)" >&2; exit 1; }
    [ "$(awk 'NR > 1 && $2 != 0' $W/times | wc -l)" = 0 ] || { echo "curl did not keep the connection to $1" >&2; exit 1; }
    echo "$(head -1 $W/times | cut -d' ' -f1) $(tail -n +2 $W/times | cut -d' ' -f1 | median)"
}
urlenc() { /usr/bin/python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }
declare -A BASE
for who in prom cairn; do pid=PROM_PID; [ $who = cairn ] && pid=CAIRN_PID
    BASE[$who]=$(rss ${!pid}); echo 5 > /proc/${!pid}/clear_refs; done
printf '%-92s %6s | %10s %10s %10s %6s | %10s %10s %10s %6s\n' query range "new conn:" prometheus cairn ratio "kept:" prometheus cairn ratio
RATIOS=(); KRATIOS=()
ms() { awk -v x=$1 'BEGIN {printf "%.2f", x * 1000}'; }
for q in "${QUERIES[@]}"; do
    for span in 1h 24h; do
        if [ $span = 1h ]; then S=$((END - 3600)); STEP=15; else S=$((END - 86400)); STEP=60; fi
        [ $HOURS -lt 24 ] && [ $span = 24h ] && S=$((END - HOURS * 3600))
        tp=(); tc=(); kp=(); kc=()
        for r in $(seq $RUNS); do
            x=$(one $P_PROM "$q" $S $END $STEP); tp+=(${x% *}); kp+=(${x#* })
            x=$(one $P_CAIRN "$q" $S $END $STEP); tc+=(${x% *}); kc+=(${x#* })
        done
        mp=$(printf '%s\n' "${tp[@]}" | median); mc=$(printf '%s\n' "${tc[@]}" | median)
        mkp=$(printf '%s\n' "${kp[@]}" | median); mkc=$(printf '%s\n' "${kc[@]}" | median)
        ratio=$(awk -v a=$mc -v b=$mp 'BEGIN {printf "%.2f", a / b}')
        kratio=$(awk -v a=$mkc -v b=$mkp 'BEGIN {printf "%.2f", a / b}')
        RATIOS+=($ratio); KRATIOS+=($kratio)
        printf '%-92s %6s | %10s %8sms %8sms %5sx | %10s %8sms %8sms %5sx\n' "$q" $span "" $(ms $mp) $(ms $mc) $ratio "" \
            $(ms $mkp) $(ms $mkc) $kratio
    done
done
echo "median latency ratio cairn/prometheus: new connection $(printf '%s\n' "${RATIOS[@]}" | median)x, kept connection $(printf '%s\n' "${KRATIOS[@]}" | median)x"
tf=(); kf=()
for r in $(seq $((RUNS * 4))); do
    args=(); for i in $(seq $((AGAIN + 1))); do args+=(-o /dev/null "http://127.0.0.1:$P_FLOOR/api/v1/query_range?query=up&start=$S&end=$END&step=60"); done
    curl -s -w '%{time_total}\n' "${args[@]}" > $W/times
    tf+=($(head -1 $W/times)); kf+=($(tail -n +2 $W/times | median))
done
echo "floor (bench/floor.c, a fixed 100-byte answer): new connection $(printf '%s\n' "${tf[@]}" | median | awk '{printf "%.2f", $1 * 1000}')ms, kept connection $(printf '%s\n' "${kf[@]}" | median | awk '{printf "%.2f", $1 * 1000}')ms a request"
for who in prom cairn; do pid=PROM_PID; [ $who = cairn ] && pid=CAIRN_PID
    peak=$(hwm ${!pid}); echo "$who: resident before queries $((BASE[$who] / 1024)) MiB, peak during queries $((peak / 1024)) MiB, query memory $(( (peak - BASE[$who]) / 1024 )) MiB"
done
