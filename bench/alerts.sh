#!/bin/bash
# make bench-alerts: alert ingestion, cairn alerts vs Alertmanager 0.25 (Debian's).
#
# Both get the same config (group_by [alertname, cluster], a webhook receiver that
# answers 200 at once, an inhibit rule) and, one server at a time, the same
# ALERTS alerts (default 200,000; 500 distinct alertnames x 20 clusters = 10,000
# groups) POSTed in batches of 1,000 by curl, as Prometheus would send them.
# The receiver is nginx answering 200 (its access log counts the notifications).
# Both servers are pinned to CPU SRVCPU. Printed per server: wall time for the
# whole ingestion (alerts/s), the server's CPU seconds for it (utime+stime from
# /proc), its resident memory afterwards, the notifications its webhook got within
# 10 s; then the ratios. RUNS rounds (default 3); medians are reported.
set -euo pipefail
cd "$(dirname "$0")/.."
ALERTS=${ALERTS:-200000}
RUNS=${RUNS:-3}
SRVCPU=${SRVCPU:-1}
AM=$(command -v prometheus-alertmanager || true)
[ -n "$AM" ] || { echo "bench-alerts: prometheus-alertmanager is missing"; exit 1; }
. bench/lib.sh
bench_init alerts
make -s build/cairn
P_CAIRN=19793; P_AM=19794; P_HOOK=19795
command -v nginx >/dev/null || { echo "bench-alerts: nginx is missing (apt-get install nginx-light)"; exit 1; }
# the webhook receiver: nginx answering 200 to every POST, one access-log line each
mkdir -p $W/nginx
cat > $W/nginx.conf <<CONF
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log $W/nginx/access.log;
    client_body_temp_path $W/nginx;
    server { listen 127.0.0.1:$P_HOOK; location / { return 200; } }
}
CONF
nginx -c $W/nginx.conf -p $W/nginx -g 'daemon off;' &
PIDS+=($!)
cat > $W/am.yml <<CONF
route:
  receiver: hook
  group_by: [alertname, cluster]
  group_wait: 5s
  group_interval: 5m
  repeat_interval: 4h
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [alertname, cluster]
receivers:
  - name: hook
    webhook_configs: [{url: "http://127.0.0.1:$P_HOOK/hook"}]
CONF
cat > $W/stack.yaml <<CONF
data_dir: $W/cairn
services:
  alerts:
    role: alerts
    listen: ["127.0.0.1:$P_CAIRN"]
    alertmanager: am.yml
CONF
echo "generating $ALERTS alerts in batches of 1000 ..."
/usr/bin/python3 - "$ALERTS" "$W" <<'PY'
import json, sys
n, w = int(sys.argv[1]), sys.argv[2]
for b in range(0, n, 1000):
    batch = [{"labels": {"alertname": f"Alert{i % 500}", "cluster": f"c{(i // 500) % 20}",
                         "instance": f"10.0.{i // 250 % 250}.{i % 250}:9100", "job": "node",
                         "severity": "critical" if i % 50 == 0 else "warning"},
              "annotations": {"summary": f"instance {i} is unhappy", "runbook": "https://runbooks/x"},
              "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
              "generatorURL": f"http://prometheus:9090/graph?g0.expr=up%3D%3D0&i={i}"}
             for i in range(b, min(n, b + 1000))]
    open(f"{w}/batch{b // 1000:05d}.json", "w").write(json.dumps(batch))
PY
cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
rss() { awk '/^VmRSS/ {print $2}' /proc/$1/status; }
run_one() { # name -> "wall_s cpu_s rss_kib notifications"
    local name=$1 pid port
: > $W/nginx/access.log
    rm -rf $W/cairn $W/amdata
    if [ "$name" = cairn ]; then
        taskset -c $SRVCPU build/cairn run alerts -c $W/stack.yaml >$W/cairn.log 2>&1 &
        pid=$!; port=$P_CAIRN
    else
        taskset -c $SRVCPU "$AM" --config.file=$W/am.yml --storage.path=$W/amdata \
            --web.listen-address=127.0.0.1:$P_AM --cluster.listen-address= >$W/am.log 2>&1 &
        pid=$!; port=$P_AM
    fi
    PIDS+=($pid)
    for i in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:$port/-/ready && break; sleep 0.1; done
    local c0 t0 t1 c1
    c0=$(cpu $pid); t0=$(date +%s.%N)
    for f in $W/batch*.json; do
        curl -s -o /dev/null -H 'Content-Type: application/json' --data-binary @$f \
            http://127.0.0.1:$port/api/v2/alerts
    done
    t1=$(date +%s.%N); c1=$(cpu $pid)
    sleep 10    # group_wait 5s: every group notifies once
    local r n
    r=$(rss $pid); n=$(grep -c '"POST /hook' $W/nginx/access.log || true)
    kill $pid; wait $pid 2>/dev/null || true
    echo "$(echo "$t1 - $t0" | bc) $(echo "($c1 - $c0) / $(getconf CLK_TCK)" | bc -l) $r $n"
}
: > $W/cairn.res; : > $W/am.res
for r in $(seq 1 $RUNS); do
    run_one cairn >> $W/cairn.res
    run_one am >> $W/am.res
    echo "round $r: cairn $(tail -1 $W/cairn.res) | alertmanager $(tail -1 $W/am.res)  (wall_s cpu_s rss_kib notifications)"
done
for who in cairn am; do
    for col in 1 2 3 4; do awk -v c=$col '{print $c}' $W/$who.res | median > $W/$who.m$col; done
done
printf '%-13s %10s %12s %10s %10s %14s\n' server wall_s "alerts/s" cpu_s rss_MiB notifications
for who in cairn am; do
    w=$(cat $W/$who.m1); c=$(cat $W/$who.m2); m=$(cat $W/$who.m3); n=$(cat $W/$who.m4)
    printf '%-13s %10.2f %12.0f %10.2f %10.1f %14s\n' $([ $who = am ] && echo alertmanager || echo cairn) \
        $w $(echo "$ALERTS / $w" | bc -l) $c $(echo "$m / 1024" | bc -l) $n
done
printf 'ratios cairn/alertmanager: wall %.2f  cpu %.2f  rss %.2f\n' \
    $(echo "$(cat $W/cairn.m1) / $(cat $W/am.m1)" | bc -l) \
    $(echo "$(cat $W/cairn.m2) / $(cat $W/am.m2)" | bc -l) \
    $(echo "$(cat $W/cairn.m3) / $(cat $W/am.m3)" | bc -l)
