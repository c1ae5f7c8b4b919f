#!/bin/bash
# make bench-dns: cairn's dns role vs NSD and Knot DNS, same zone, same queries.
#
# One zone (tests/integration/data/example.test.zone) served by cairn (threads: 1),
# NSD (server-count: 1, rrl off, minimal responses) and Knot (one UDP worker). Each
# server is pinned to CPU 1, dnsperf to CPU 0. The query file mixes existing names
# of several types, a CNAME chain, a wildcard, a referral and NXDOMAIN. A second
# run sends only the GSLB name to cairn (three healthy members in two regions,
# checked by TCP connect). Rounds alternate; medians and ratios are printed, and
# also queries per CPU-second of the server (dnsperf needs about as much CPU).
# A fifth line, "floor", is bench/floor_dns.c on the server's CPU: recvmmsg and a
# sendmmsg of each query turned into NXDOMAIN, nothing else - the kernel's UDP path
# per CPU-second, which no socket server passes.
#
# Knot pins its UDP worker to a CPU of its own choosing at start (here CPU 0, the
# one dnsperf runs on), whatever taskset said; its threads are moved back to the
# server CPU once it answers, or it would share dnsperf's core and its per-CPU
# figure would count the batching that sharing gives it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-8}
. bench/lib.sh
bench_init dns
for t in dnsperf nsd knotd; do
    command -v $t >/dev/null || { echo "bench-dns: $t is missing (apt-get install dnsperf nsd knot)"; exit 1; }
done
make -s build/cairn
P_CAIRN=19453; P_NSD=19454; P_KNOT=19455; ADMIN=19459; CHECK=19460; P_FLOOR=19461
LOADCPU=${LOADCPU:-0}; SRVCPU=${SRVCPU:-1}
cp tests/integration/data/example.test.zone tests/integration/data/example.test.inc $W/
mkdir -p $W/knot
cat > $W/cairn.yaml <<CONF
log: {level: warn}
services:
  dns:
    role: dns
    threads: 1
    listen: ["127.0.0.1:$P_CAIRN"]
    admin: "127.0.0.1:$ADMIN"
    zones: [{origin: example.test, file: example.test.zone}]
    gslb:
      - name: app.example.test
        policy: failover
        health: {tcp: {port: $CHECK}, interval: 1s, timeout: 500ms}
        pools:
          - {region: eu, members: [127.0.0.1, 127.0.0.2]}
          - {region: us, members: [127.0.0.3]}
CONF
cat > $W/nsd.conf <<CONF
server:
    ip-address: 127.0.0.1@$P_NSD
    port: $P_NSD
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$W"
    database: ""
    zonelistfile: "$W/zone.list"
    xfrdfile: "$W/xfrd.state"
    xfrdir: "$W"
    pidfile: "$W/nsd.pid"
    logfile: "$W/nsd.log"
    verbosity: 0
    minimal-responses: yes
    rrl-ratelimit: 0
    do-ip6: no
remote-control:
    control-enable: no
zone:
    name: example.test
    zonefile: example.test.zone
CONF
cat > $W/knot.conf <<CONF
server:
    listen: 127.0.0.1@$P_KNOT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    rundir: "$W/knot"
    user: root:root
database:
    storage: "$W/knot"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$W"
    semantic-checks: off
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: example.test
    file: example.test.zone
CONF
# a TCP listener the GSLB members' health checks connect to
/usr/bin/python3 -c "
import select,socket
ls=[]
for ip in ('127.0.0.1','127.0.0.2','127.0.0.3'):
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((ip,$CHECK)); s.listen(64); ls.append(s)
while True:
    for s in select.select(ls,[],[])[0]:
        c,_=s.accept(); c.close()" & PIDS+=($!)
taskset -c $SRVCPU ./build/cairn run dns -c $W/cairn.yaml 2>$W/cairn.log & PIDS+=($!); CAIRN_PID=$!
taskset -c $SRVCPU nsd -d -c $W/nsd.conf >$W/nsd.out 2>&1 & PIDS+=($!); NSD_PID=$!
taskset -c $SRVCPU knotd -c $W/knot.conf >$W/knot.log 2>&1 & PIDS+=($!); KNOT_PID=$!
gcc -O2 -Wall -Wextra -Werror -o $W/floor_dns bench/floor_dns.c
taskset -c $SRVCPU $W/floor_dns $P_FLOOR & PIDS+=($!); FLOOR_PID=$!
for port in $P_CAIRN $P_NSD $P_KNOT; do
    for i in $(seq 1 100); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p $port example.test SOA | grep -q . && break; sleep 0.1
    done
done
for i in $(seq 1 100); do
    dig +time=1 +tries=1 @127.0.0.1 -p $P_FLOOR example.test SOA | grep -q NXDOMAIN && break; sleep 0.1
done
# every thread of every server on the server CPU (Knot re-pins its UDP worker)
taskset -a -p -c $SRVCPU $KNOT_PID >/dev/null
for pid in $CAIRN_PID $NSD_PID $KNOT_PID $FLOOR_PID $(pgrep -f "nsd -d -c $W/nsd.conf"); do
    for t in /proc/$pid/task/*; do
        cpus=$(taskset -p -c "${t##*/}" | sed 's/.*: //')
        [ "$cpus" = "$SRVCPU" ] || { echo "bench-dns: thread ${t##*/} of $pid runs on CPUs $cpus, not $SRVCPU" >&2; exit 1; }
    done
done
# the query mix: names of several types, a chain, a wildcard, a referral, NXDOMAIN
cat > $W/static.q <<Q
example.test SOA
example.test NS
example.test MX
www.example.test A
web.example.test A
web.example.test AAAA
mail.example.test A
ns1.example.test AAAA
txt.example.test TXT
_sip._tcp.example.test SRV
chain1.example.test A
host1.wild.example.test A
x.child.example.test A
nope.example.test A
missing.example.test AAAA
web.example.test MX
Q
echo "app.example.test A" > $W/gslb.q
for f in static gslb; do
    for port in $P_CAIRN $P_NSD $P_KNOT; do
        [ $f = gslb ] && [ $port != $P_CAIRN ] && continue
        head -1 $W/$f.q | { read n t; dig +norec @127.0.0.1 -p $port $n $t | grep -E 'status|^[a-z].*IN' | head -3; } >&2
    done
done

run_perf() {  # file port pids -> "qps avg_latency_ms lost q/cpu-s"
    local f=$1 port=$2 t0 t1
    shift 2
    t0=$(cpu_ticks "$@")
    taskset -c $LOADCPU dnsperf -q 1000 -c $CLIENTS -T 1 -s 127.0.0.1 -p $port -d $W/$f.q -l $DURATION > $W/perf.out 2>&1
    t1=$(cpu_ticks "$@")
    awk -v ticks=$((t1 - t0)) -v hz=$(getconf CLK_TCK) '
        /Queries completed:/ {n=$3}
        /Queries lost:/ {lost=$3}
        /Queries per second:/ {qps=$4}
        /Average Latency/ {lat=$4 * 1000}
        END {printf "%s %.3f %s %.0f\n", qps, lat, lost, (ticks > 0 ? n / (ticks / hz) : 0)}' $W/perf.out
}
declare -A QPS LAT CORE
for r in $(seq 1 $ROUNDS); do
    NSD_PIDS=$(pgrep -f "nsd -d -c $W/nsd.conf" | tr '\n' ' ')
    for name in cairn nsd knot floor cairn-gslb; do
        case $name in cairn) p=$P_CAIRN; pid=$CAIRN_PID; f=static;; nsd) p=$P_NSD; pid=$NSD_PIDS; f=static;;
                      floor) p=$P_FLOOR; pid=$FLOOR_PID; f=static;;
                      knot) p=$P_KNOT; pid=$KNOT_PID; f=static;; cairn-gslb) p=$P_CAIRN; pid=$CAIRN_PID; f=gslb;; esac
        read qps lat lost core < <(run_perf $f $p $pid)
        [ "${lost%%[^0-9]*}" = 0 ] || echo "warning: $name lost $lost queries" >&2
        QPS[$name]+="$qps "; LAT[$name]+="$lat "; CORE[$name]+="$core "
    done
    echo "round $r done" >&2
done
printf "\n%-11s %12s %14s %12s\n" server "queries/s" "avg lat ms" "q/cpu-s"
for name in cairn nsd knot floor cairn-gslb; do
    printf "%-11s %12.0f %14.3f %12.0f\n" $name $(echo ${QPS[$name]} | median) $(echo ${LAT[$name]} | median) \
        $(echo ${CORE[$name]} | median)
done
echo
best=nsd
awk -v a="$(echo ${QPS[nsd]} | median)" -v b="$(echo ${QPS[knot]} | median)" 'BEGIN {exit !(b > a)}' && best=knot
for peer in nsd knot floor; do
    awk -v a="$(echo ${QPS[cairn]} | median)" -v b="$(echo ${QPS[$peer]} | median)" \
        -v c="$(echo ${CORE[cairn]} | median)" -v d="$(echo ${CORE[$peer]} | median)" -v peer=$peer \
        'BEGIN {printf "cairn/%s static: qps %.2fx, q/cpu-s %.2fx\n", peer, a/b, c/d}'
done
awk -v a="$(echo ${QPS[cairn-gslb]} | median)" -v b="$(echo ${QPS[$best]} | median)" \
    -v c="$(echo ${CORE[cairn-gslb]} | median)" -v d="$(echo ${CORE[$best]} | median)" -v peer=$best \
    'BEGIN {printf "cairn gslb / %s static: qps %.2fx, q/cpu-s %.2fx\n", peer, a/b, c/d}'
echo "(machine: $(nproc) cores, $(uname -r); servers on cpu $SRVCPU, dnsperf on cpu $LOADCPU;"
echo " dnsperf -c $CLIENTS -T 1 -q 1000 -l $DURATION, $ROUNDS rounds, medians)"
