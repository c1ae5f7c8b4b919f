#!/bin/bash
# make bench-edge: cairn edge vs HAProxy vs nginx as reverse proxies, side by side.
#
# One backend (nginx, one worker, `return 200`), three proxies with one worker
# thread each, keep-alive to the backend, access logs off. Two shapes:
#
# - pinned: every proxy on CPU 1, wrk (-t1 -c50) and the backend on CPU 0, 23-byte
#   answers; the proxy's core is saturated, so requests per CPU-second compare them.
# - unpinned, as a Kubernetes node runs them: nothing pinned, wrk (-t2 -c64), the
#   backend and the proxy share both cores, 1 KiB answers; the tail latency here
#   comes from how a proxy behaves when it does not own a core.
#
# wrk measures plain HTTP and HTTPS keep-alive (requests/s, p99, p99.9, from its
# latency histogram through bench/wrk_pct.lua); then 9,000 idle keep-alive client
# connections are opened against each proxy and the growth of its RSS is read.
# Rounds alternate between the proxies; the medians are reported with ratios.
# SHAPES (default "pinned unpinned idle tracing") picks the parts to run; CAIRN_BIN
# runs another cairn binary (an earlier build) as the proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4s}
CONNS=${CONNS:-50}
IDLE=${IDLE:-9000}   # HAProxy needs 2 fds per connection under the 20,000 fd limit
SHAPES=${SHAPES:-pinned unpinned idle tracing}
U_THREADS=${U_THREADS:-2}; U_CONNS=${U_CONNS:-64}
. bench/lib.sh
bench_init edge
ulimit -n 20000 2>/dev/null || true

for t in wrk haproxy nginx openssl; do
    command -v $t >/dev/null || { echo "bench-edge: $t is missing (apt-get install wrk haproxy nginx-light)"; exit 1; }
done
make -s build/cairn
CAIRN_BIN=${CAIRN_BIN:-./build/cairn}     # another build to compare with

BACKEND=19180; P_CAIRN=19181; P_HAP=19182; P_NGX=19183
S_CAIRN=19191; S_HAP=19192; S_NGX=19193; ADMIN=19199
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $W/key.pem \
    -out $W/cert.pem -days 2 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test 2>/dev/null
cat $W/cert.pem $W/key.pem > $W/both.pem

mkdir -p $W/ngx-backend $W/ngx-proxy
cat > $W/ngx-backend/nginx.conf <<CONF
worker_processes 1; daemon off; pid $W/ngx-backend/pid; error_log $W/ngx-backend/error.log;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from the backend\n"; }
    location /1k { return 200 "$(head -c 1023 /dev/zero | tr '\0' 'x')\n"; } } }
CONF
cat > $W/ngx-proxy/nginx.conf <<CONF
worker_processes 1; daemon off; pid $W/ngx-proxy/pid; error_log $W/ngx-proxy/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream b { server 127.0.0.1:$BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$P_NGX; listen 127.0.0.1:$S_NGX ssl;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > $W/haproxy.cfg <<CONF
global
  nbthread 1
  maxconn 9900
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$P_HAP
  bind 127.0.0.1:$S_HAP ssl crt $W/both.pem
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$BACKEND
CONF
cat > $W/cairn.yaml <<CONF
log: {level: warn}
services:
  edge:
    role: edge
    threads: 1
    listen:
      - {address: "127.0.0.1:$P_CAIRN"}
      - {address: "127.0.0.1:$S_CAIRN", tls: {certs: [{cert: cert.pem, key: key.pem}]}}
    admin: "127.0.0.1:$ADMIN"
    access_log: false
    timeouts: {idle: 300s}
    routes: [{path: /, backend: b}]
    backends:
      b: {servers: ["127.0.0.1:$BACKEND"]}
CONF

# CPU placement: every proxy gets core 1 to itself, the load generator and the
# backend share core 0, so that the proxies are compared on one core each.
LOADCPU=${LOADCPU:-0}; PROXYCPU=${PROXYCPU:-1}
taskset -c $LOADCPU nginx -c $W/ngx-backend/nginx.conf & PIDS+=($!)
taskset -c $PROXYCPU nginx -c $W/ngx-proxy/nginx.conf & PIDS+=($!)
taskset -c $PROXYCPU haproxy -f $W/haproxy.cfg -db & PIDS+=($!)
HAP_PID=$!
taskset -c $PROXYCPU $CAIRN_BIN run edge -c $W/cairn.yaml 2>$W/cairn.log & PIDS+=($!)
CAIRN_PID=$!
for port in $BACKEND $P_CAIRN $P_HAP $P_NGX; do
    for i in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$port/ && break; sleep 0.05; done
done
NGX_PID=$(pgrep -P "$(cat $W/ngx-proxy/pid)" | head -1)   # the worker process
[ -n "$NGX_PID" ] || NGX_PID=$(cat $W/ngx-proxy/pid)

rss_kb() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
# run_wrk URL PID THREADS CONNS -> "rps p99_ms p99.9_ms requests_per_cpu_second"
run_wrk() {
    local t0 t1
    t0=$(cpu_ticks $2)
    $WRK_PIN wrk -t$3 -c$4 -d$DURATION -s bench/wrk_pct.lua "$1" > $W/wrk.out 2>&1
    t1=$(cpu_ticks $2)
    awk -v ticks=$((t1 - t0)) -v hz=$(getconf CLK_TCK) '
        /^pct / {n=$2; rps=$3; p99=$4 / 1000; p999=$5 / 1000}
        END {if (!n) exit 1; printf "%s %.3f %.3f %.0f\n", rps, p99, p999, (ticks > 0 ? n / (ticks / hz) : 0)}' $W/wrk.out ||
        { echo "bench-edge: wrk gave no figures for $1:" >&2; cat $W/wrk.out >&2; exit 1; }
}
m() { echo $1 | tr ' ' '\n' | grep -v '^$' | median; }

# shape NAME THREADS CONNS PATH: ROUNDS alternating rounds of HTTP and HTTPS
# through each proxy, then the table of medians and the ratios.
shape() {
    local shape=$1 threads=$2 conns=$3 path=$4 name p s pid r rps p99 p999 core
    declare -A RPS P99 P999 CORE SRPS SP99 SP999 SCORE
    for r in $(seq 1 $ROUNDS); do
        for name in cairn haproxy nginx; do
            case $name in cairn) p=$P_CAIRN; s=$S_CAIRN; pid=$CAIRN_PID;; haproxy) p=$P_HAP; s=$S_HAP; pid=$HAP_PID;;
                          nginx) p=$P_NGX; s=$S_NGX; pid=$NGX_PID;; esac
            read rps p99 p999 core < <(run_wrk http://127.0.0.1:$p$path $pid $threads $conns)
            [ -n "$rps" ] || exit 1
            RPS[$name]+="$rps "; P99[$name]+="$p99 "; P999[$name]+="$p999 "; CORE[$name]+="$core "
            read rps p99 p999 core < <(run_wrk https://127.0.0.1:$s$path $pid $threads $conns)
            [ -n "$rps" ] || exit 1
            SRPS[$name]+="$rps "; SP99[$name]+="$p99 "; SP999[$name]+="$p999 "; SCORE[$name]+="$core "
            echo "$shape round $r $name: http $(echo ${RPS[$name]} | awk '{print $NF}') rps" >&2
        done
    done
    echo
    echo "$shape: wrk -t$threads -c$conns -d$DURATION on $path, $ROUNDS rounds, medians"
    printf "%-8s %9s %7s %7s %10s %9s %7s %7s %10s\n" proxy "http rps" "p99 ms" "p99.9" "req/cpu-s" \
        "https rps" "p99 ms" "p99.9" "req/cpu-s"
    for name in cairn haproxy nginx; do
        printf "%-8s %9.0f %7.2f %7.2f %10.0f %9.0f %7.2f %7.2f %10.0f\n" $name $(m "${RPS[$name]}") \
            $(m "${P99[$name]}") $(m "${P999[$name]}") $(m "${CORE[$name]}") $(m "${SRPS[$name]}") \
            $(m "${SP99[$name]}") $(m "${SP999[$name]}") $(m "${SCORE[$name]}")
    done
    for peer in haproxy nginx; do
        awk -v peer=$peer -v shape=$shape \
            -v a="$(m "${RPS[cairn]}")" -v b="$(m "${RPS[$peer]}")" -v c="$(m "${SRPS[cairn]}")" -v d="$(m "${SRPS[$peer]}")" \
            -v e="$(m "${P99[cairn]}")" -v f="$(m "${P99[$peer]}")" -v g="$(m "${SP99[cairn]}")" -v h="$(m "${SP99[$peer]}")" \
            -v i="$(m "${P999[cairn]}")" -v j="$(m "${P999[$peer]}")" -v k="$(m "${SP999[cairn]}")" -v l="$(m "${SP999[$peer]}")" \
            -v o="$(m "${CORE[cairn]}")" -v q="$(m "${CORE[$peer]}")" -v u="$(m "${SCORE[cairn]}")" -v v="$(m "${SCORE[$peer]}")" \
            'BEGIN {printf "%s cairn/%s: rps %.2fx / %.2fx, p99 %.2fx / %.2fx, p99.9 %.2fx / %.2fx, req/cpu-s %.2fx / %.2fx (http / https)\n",
                    shape, peer, a/b, c/d, e/f, g/h, i/j, k/l, o/q, u/v}'
    done
}

echo "(machine: $(nproc) cores, $(uname -r))"
if [[ " $SHAPES " == *" pinned "* ]]; then
    WRK_PIN="taskset -c $LOADCPU"
    shape pinned 1 $CONNS /
    echo "(pinned: proxies on cpu $PROXYCPU, wrk and backend on cpu $LOADCPU)"
fi
if [[ " $SHAPES " == *" unpinned "* ]]; then
    # every thread of every process free to run on every core, as on a shared node
    ALL=0-$(($(nproc) - 1))
    for pid in $(cat $W/ngx-backend/pid) $(pgrep -P "$(cat $W/ngx-backend/pid)") $(cat $W/ngx-proxy/pid) \
               $NGX_PID $HAP_PID $CAIRN_PID; do
        taskset -a -p -c $ALL $pid >/dev/null
    done
    WRK_PIN=""
    shape unpinned $U_THREADS $U_CONNS /1k
    echo "(unpinned: nothing pinned; wrk, backend and proxy share the $(nproc) cores)"
    for pid in $(cat $W/ngx-backend/pid) $(pgrep -P "$(cat $W/ngx-backend/pid)"); do
        taskset -a -p -c $LOADCPU $pid >/dev/null
    done
    for pid in $(cat $W/ngx-proxy/pid) $NGX_PID $HAP_PID $CAIRN_PID; do
        taskset -a -p -c $PROXYCPU $pid >/dev/null
    done
fi
WRK_PIN="taskset -c $LOADCPU"

declare -A IDLEKB
[[ " $SHAPES " == *" idle "* ]] && for name in cairn haproxy nginx; do
    case $name in cairn) p=$P_CAIRN; pid=$CAIRN_PID;; haproxy) p=$P_HAP; pid=$HAP_PID;; nginx) p=$P_NGX; pid=$NGX_PID;; esac
    before=$(rss_kb $pid)
    exec {fd}> >(/usr/bin/python3 bench/idle_conns.py 127.0.0.1 $p $IDLE > $W/idle.$name)
    for i in $(seq 1 600); do grep -q ready $W/idle.$name 2>/dev/null && break; sleep 0.1; done
    grep -q ready $W/idle.$name || { echo "idle connections to $name did not open"; exit 1; }
    sleep 3     # let every proxy settle (timers, trims) before reading its RSS
    after=$(rss_kb $pid)
    exec {fd}>&-
    IDLEKB[$name]=$((after - before))
    sleep 1
done
[[ " $SHAPES " == *" idle "* ]] && echo &&
printf "idle RSS per keep-alive connection (%d connections): cairn %.2f KiB, HAProxy %.2f KiB, nginx %.2f KiB\n" \
    $IDLE $(echo "${IDLEKB[cairn]} $IDLE" | awk '{print $1/$2}') $(echo "${IDLEKB[haproxy]} $IDLE" | awk '{print $1/$2}') \
    $(echo "${IDLEKB[nginx]} $IDLE" | awk '{print $1/$2}')
[[ " $SHAPES " == *" idle "* ]] && awk -v c="${IDLEKB[cairn]}" -v h="${IDLEKB[haproxy]}" -v n="${IDLEKB[nginx]}" \
    'BEGIN {printf "idle RSS cairn/haproxy %.2fx, cairn/nginx %.2fx\n", (h > 0 ? c/h : 0), (n > 0 ? c/n : 0)}'

[[ " $SHAPES " == *" tracing "* ]] || exit 0

# ---- the cost of tracing: the same cairn edge exporting spans (a server and a
# client span per request) to a trace store, at sampling 100% and 1%, against the
# untraced edge above. The store runs on the load core.
T_OTLP=19201; P_T100=19202; P_T1=19203; A_T100=19204; A_T1=19205
cat > $W/traced.yaml <<CONF
log: {level: warn}
data_dir: $W/traced-data
services:
  traces:
    role: traces
    listen: ["127.0.0.1:$T_OTLP"]
    limits: {ingestion_rate_limit_bytes: 1GB, ingestion_burst_size_bytes: 1GB}
  t100:
    role: edge
    threads: 1
    listen: [{address: "127.0.0.1:$P_T100"}]
    admin: "127.0.0.1:$A_T100"
    access_log: false
    timeouts: {idle: 300s}
    routes: [{path: /, backend: b}]
    backends: {b: {servers: ["127.0.0.1:$BACKEND"]}}
    tracing: {sampling: 1}
  t1:
    role: edge
    threads: 1
    listen: [{address: "127.0.0.1:$P_T1"}]
    admin: "127.0.0.1:$A_T1"
    access_log: false
    timeouts: {idle: 300s}
    routes: [{path: /, backend: b}]
    backends: {b: {servers: ["127.0.0.1:$BACKEND"]}}
    tracing: {sampling: 0.01}
CONF
taskset -c $LOADCPU ./build/cairn run traces -c $W/traced.yaml 2>$W/traces.log & PIDS+=($!)
taskset -c $PROXYCPU ./build/cairn run t100 -c $W/traced.yaml 2>$W/t100.log & PIDS+=($!)
T100_PID=$!
taskset -c $PROXYCPU ./build/cairn run t1 -c $W/traced.yaml 2>$W/t1.log & PIDS+=($!)
T1_PID=$!
for port in $P_T100 $P_T1 $T_OTLP; do
    for i in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$port/ && break; sleep 0.05; done
done
# the 1% rounds first, each with an untraced run beside it; then the 100% rounds
# (the store works on the spans of a 100% run for seconds after it: the 1% figures
# must not pay for that)
declare -A TRPS TP99
for pair in "u1 t1" "u100 t100"; do
    for r in $(seq 1 $ROUNDS); do
        for name in $pair; do
            case $name in u1|u100) p=$P_CAIRN; pid=$CAIRN_PID;; t100) p=$P_T100; pid=$T100_PID;; t1) p=$P_T1; pid=$T1_PID;; esac
            read rps p99 p999 core < <(run_wrk http://127.0.0.1:$p/ $pid 1 $CONNS)
            TRPS[$name]+="$rps "; TP99[$name]+="$p99 "
            echo "round $r $name: $rps rps" >&2
        done
    done
done
exported=$(curl -s http://127.0.0.1:$A_T100/metrics | awk '/^cairn_otlp_spans_exported_total/ {print $2}')
dropped=$(curl -s http://127.0.0.1:$A_T100/metrics | awk '/^cairn_otlp_spans_dropped_total/ {print $2}')
echo
printf "%-22s %10s %8s\n" "tracing" "http rps" "p99 ms"
for name in u1 t1 u100 t100; do
    printf "%-22s %10.0f %8.2f\n" $name $(m "${TRPS[$name]}") $(m "${TP99[$name]}")
done
awk -v u1="$(m "${TRPS[u1]}")" -v b="$(m "${TRPS[t1]}")" -v u100="$(m "${TRPS[u100]}")" -v a="$(m "${TRPS[t100]}")" \
    'BEGIN {printf "traced/untraced rps: sampling 1%% %.3fx (goal >= 0.95), sampling 100%% %.3fx\n", b/u1, a/u100}'
echo "(sampling 100%: $exported spans exported, $dropped dropped by the bounded queue)"
