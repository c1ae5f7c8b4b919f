#!/bin/bash
# make bench-cdn: cairn's edge cache vs Varnish and nginx proxy_cache, all hits.
#
# An nginx origin serves two objects (1 KiB and 100 KiB, Cache-Control max-age=3600).
# Three caches with one worker thread or process each: cairn (`cache:` route),
# Varnish (malloc storage, one thread pool) and nginx (proxy_cache, one worker). Each
# cache is pinned to CPU 1, wrk and the origin to CPU 0; the caches are warmed, then
# wrk measures all-hit traffic. Rounds alternate; medians and ratios are printed.
# A fourth line, "floor", is bench/floor.c on the same CPU: one sendmsg of a fixed
# answer per request, the ceiling that the kernel and wrk leave to any cache.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4s}
CONNS=${CONNS:-50}
. bench/lib.sh
bench_init cdn
for t in wrk varnishd nginx; do
    command -v $t >/dev/null || { echo "bench-cdn: $t is missing (apt-get install wrk varnish nginx-light)"; exit 1; }
done
make -s build/cairn
ORIGIN=19380; P_CAIRN=19381; P_VARNISH=19382; P_NGX=19383; P_FLOOR1K=19384; P_FLOOR100K=19385; ADMIN=19389
LOADCPU=${LOADCPU:-0}; PROXYCPU=${PROXYCPU:-1}
mkdir -p $W/www $W/ngx-origin $W/ngx-cache $W/ngx-cache/cache $W/varnish
head -c 768 /dev/urandom | base64 -w0 > $W/www/1k.txt          # 1024 bytes of text
head -c 76800 /dev/urandom | base64 -w0 > $W/www/100k.txt      # 102400 (no head -c: SIGPIPE)
chmod -R a+rX $W      # nginx workers run as www-data
cat > $W/ngx-origin/nginx.conf <<CONF
worker_processes 1; daemon off; pid $W/ngx-origin/pid; error_log $W/ngx-origin/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN; root $W/www; location / { add_header Cache-Control "max-age=3600"; } } }
CONF
cat > $W/ngx-cache/nginx.conf <<CONF
worker_processes 1; daemon off; pid $W/ngx-cache/pid; error_log $W/ngx-cache/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  proxy_cache_path $W/ngx-cache/cache levels=1:2 keys_zone=z:10m max_size=256m inactive=1h use_temp_path=off;
  upstream o { server 127.0.0.1:$ORIGIN; keepalive 16; }
  server { listen 127.0.0.1:$P_NGX;
    location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_cache z; proxy_cache_valid 200 1h; add_header X-Cache \$upstream_cache_status; } } }
CONF
cat > $W/cairn.yaml <<CONF
log: {level: warn}
services:
  cdn:
    role: edge
    threads: 1
    listen: ["127.0.0.1:$P_CAIRN"]
    admin: "127.0.0.1:$ADMIN"
    access_log: false
    routes: [{path: /, backend: o, cache: {memory: 256MiB}}]
    backends: {o: {servers: ["127.0.0.1:$ORIGIN"]}}
CONF
taskset -c $LOADCPU nginx -c $W/ngx-origin/nginx.conf & PIDS+=($!)
taskset -c $PROXYCPU nginx -c $W/ngx-cache/nginx.conf & PIDS+=($!)
taskset -c $PROXYCPU varnishd -F -n $W/varnish -a 127.0.0.1:$P_VARNISH -b 127.0.0.1:$ORIGIN \
    -s malloc,256m -p thread_pools=1 -p thread_pool_min=50 >$W/varnish.log 2>&1 & PIDS+=($!)
taskset -c $PROXYCPU ./build/cairn run cdn -c $W/cairn.yaml 2>$W/cairn.log & PIDS+=($!)
CAIRN_PID=$!
# the yardstick: a server that does nothing per request but one sendmsg (bench/floor.c)
gcc -O2 -Wall -Wextra -Werror -o $W/floor bench/floor.c
taskset -c $PROXYCPU $W/floor $P_FLOOR1K 1024 & PIDS+=($!); FLOOR1K_PID=$!
taskset -c $PROXYCPU $W/floor $P_FLOOR100K 102400 & PIDS+=($!); FLOOR100K_PID=$!
for port in $ORIGIN $P_CAIRN $P_VARNISH $P_NGX $P_FLOOR1K $P_FLOOR100K; do
    for i in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$port/1k.txt && break; sleep 0.1; done
done
for port in $P_CAIRN $P_VARNISH $P_NGX; do       # warm: every object stored
    for f in 1k.txt 100k.txt; do curl -s -o /dev/null http://127.0.0.1:$port/$f; curl -s -o /dev/null http://127.0.0.1:$port/$f; done
done
echo "cache status on the second request: cairn $(curl -s -D- -o /dev/null http://127.0.0.1:$P_CAIRN/1k.txt | grep -i x-cache | tr -d '\r'), nginx $(curl -s -D- -o /dev/null http://127.0.0.1:$P_NGX/1k.txt | grep -i x-cache | tr -d '\r'), varnish $(curl -s -D- -o /dev/null http://127.0.0.1:$P_VARNISH/1k.txt | grep -i '^age' | tr -d '\r')" >&2

run_wrk() {  # url pids... -> "rps p99 non2xx req/cpu-s wrk-cpu%"
    local url=$1; shift
    local t0 t1 w0 w1 me=$BASHPID
    t0=$(cpu_ticks "$@")
    w0=$(awk '{print $16 + $17}' /proc/$me/stat)     # CPU of this shell's waited-for children
    taskset -c $LOADCPU wrk -t1 -c$CONNS -d$DURATION --latency "$url" > $W/wrk.out 2>&1
    w1=$(awk '{print $16 + $17}' /proc/$me/stat)
    t1=$(cpu_ticks "$@")
    awk -v ticks=$((t1 - t0)) -v wticks=$((w1 - w0)) -v hz=$(getconf CLK_TCK) '
        /requests in/ {n=$1; secs=$4; sub(/s,?$/, "", secs)}
        /Requests\/sec/ {rps=$2}
        /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v}
        /Non-2xx/ {bad=$NF}
        END {printf "%s %s %s %.0f %.0f\n", rps, p99, bad+0, (ticks > 0 ? n / (ticks / hz) : 0),
             (secs > 0 ? 100 * wticks / hz / secs : 0)}' $W/wrk.out
}
VARNISH_PIDS=$(pgrep -f "varnishd -F -n $W/varnish" | tr '\n' ' ')
NGX_PIDS="$(cat $W/ngx-cache/pid) $(pgrep -P "$(cat $W/ngx-cache/pid)" | tr '\n' ' ')"
declare -A RPS P99 CORE WCPU
for r in $(seq 1 $ROUNDS); do
    VARNISH_PIDS=$(pgrep -f "varnishd -F -n $W/varnish" | tr '\n' ' ')
    for f in 1k 100k; do
        for name in cairn varnish nginx floor; do
            case $name in cairn) p=$P_CAIRN; pids=$CAIRN_PID;; varnish) p=$P_VARNISH; pids=$VARNISH_PIDS;;
                          nginx) p=$P_NGX; pids=$NGX_PIDS;;
                          floor) if [ $f = 1k ]; then p=$P_FLOOR1K; pids=$FLOOR1K_PID;
                                 else p=$P_FLOOR100K; pids=$FLOOR100K_PID; fi;; esac
            read rps p99 bad core wcpu < <(run_wrk http://127.0.0.1:$p/$f.txt $pids)
            [ "$bad" = 0 ] || echo "warning: $name answered $bad non-2xx" >&2
            RPS[$name.$f]+="$rps "; P99[$name.$f]+="$p99 "; CORE[$name.$f]+="$core "; WCPU[$name.$f]+="$wcpu "
        done
    done
    echo "round $r done" >&2
done
printf "\n%-8s %10s %8s %11s %6s %11s %8s %11s %6s\n" cache "1KiB rps" "p99 ms" "req/cpu-s" "wrk %" \
    "100KiB rps" "p99 ms" "req/cpu-s" "wrk %"
for name in cairn varnish nginx floor; do
    printf "%-8s %10.0f %8.2f %11.0f %6.0f %11.0f %8.2f %11.0f %6.0f\n" $name $(echo ${RPS[$name.1k]} | median) \
        $(echo ${P99[$name.1k]} | median) $(echo ${CORE[$name.1k]} | median) $(echo ${WCPU[$name.1k]} | median) \
        $(echo ${RPS[$name.100k]} | median) $(echo ${P99[$name.100k]} | median) \
        $(echo ${CORE[$name.100k]} | median) $(echo ${WCPU[$name.100k]} | median)
done
echo "(floor: bench/floor.c, one sendmsg of a fixed answer per request - no cache can pass it;"
echo " wrk %: the load generator's share of its core; near 100 the client, not the cache, sets rps)"
echo
for peer in varnish nginx floor; do
    for f in 1k 100k; do
        awk -v a="$(echo ${RPS[cairn.$f]} | median)" -v b="$(echo ${RPS[$peer.$f]} | median)" \
            -v c="$(echo ${P99[cairn.$f]} | median)" -v d="$(echo ${P99[$peer.$f]} | median)" -v peer=$peer -v f=$f \
            -v e="$(echo ${CORE[cairn.$f]} | median)" -v g="$(echo ${CORE[$peer.$f]} | median)" \
            'BEGIN {printf "cairn/%s %s: rps %.2fx, p99 %.2fx, req/cpu-s %.2fx\n", peer, f, a/b, c/d, e/g}'
    done
done
echo "(machine: $(nproc) cores, $(uname -r); caches on cpu $PROXYCPU, wrk and origin on cpu $LOADCPU;"
echo " wrk -t1 -c$CONNS -d$DURATION, $ROUNDS rounds, medians)"
