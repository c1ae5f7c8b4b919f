#!/bin/bash
# make bench-registry: cairn's registry role against Distribution 2.8 (Debian's
# docker-registry, the registry Harbor is built on), side by side in one run.
#
#   small: SMALL images (default 5) of 20 layers of 64-640 KiB each, pushed with
#          skopeo from OCI layouts, then pulled to dir: layouts (seconds, MB/s);
#   big:   one image with a 500 MB layer (BIG_MB), pushed and pulled the same way,
#          and the layer alone with curl (upload, then GET to /dev/null), which
#          does not hash: the registries' own rates, not skopeo's;
#   manifests: GET of a manifest by tag with wrk (-t1 -c16, 5 s): requests/s and
#          requests per server CPU-second;
#   RSS of each server after all of it;
#   the client's floor: skopeo copying the same images between two local layouts.
#
# Both servers start empty for every round, with their defaults (cairn: 2 threads,
# Distribution: Debian's config.yml with the filesystem driver, no auth); skopeo's
# blob-info cache is removed before every copy so each push uploads every blob.
# cairn fsyncs every blob and manifest before it answers; Distribution does not
# sync. RUNS rounds (default 3), medians printed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SMALL=${SMALL:-5}
BIG_MB=${BIG_MB:-500}
. bench/lib.sh
for t in skopeo wrk docker-registry; do
    command -v $t >/dev/null || { echo "bench-registry: $t is missing (apt-get install skopeo wrk docker-registry)"; exit 1; }
done
bench_init registry
make -s build/cairn
P_CAIRN=19911; P_DIST=19912
HZ=$(getconf CLK_TCK)

echo "generating images ($SMALL x 20 small layers, one ${BIG_MB} MB layer)..." >&2
/usr/bin/python3 - "$W" "$SMALL" "$BIG_MB" <<'PY'
import sys
sys.path.insert(0, "tests/integration")
import ociimage
w, n, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    ociimage.make(f"{w}/img/small{i}", sizes=[65536 * (1 + (i * 7 + k) % 10) for k in range(20)])
ociimage.make(f"{w}/img/big", sizes=[big * 1000000])
PY
SMALL_BYTES=$(du -sb $W/img/small* | awk '{s += $1} END {print s}')
BIG_HEX=$(ls -S $W/img/big/blobs/sha256 | head -1)
BIG_LAYER=$W/img/big/blobs/sha256/$BIG_HEX
BIG_LAYER_BYTES=$(stat -c %s $BIG_LAYER)
BIG_BYTES=$(du -sb $W/img/big | awk '{print $1}')

start_servers() {
    rm -rf $W/cairn $W/dist && mkdir -p $W/dist
    cat > $W/stack.yaml <<CONF
data_dir: $W/cairn
services:
  registry:
    role: registry
    listen: ["127.0.0.1:$P_CAIRN"]
CONF
    ./build/cairn run registry -c $W/stack.yaml 2>>$W/cairn.log &
    PID_CAIRN=$!
    sed -e "s|rootdirectory: .*|rootdirectory: $W/dist|" -e "s|addr: :5000|addr: 127.0.0.1:$P_DIST|" \
        -e '/^auth:/,/^[^ ]/{/^auth:/d;/^  /d}' /etc/docker/registry/config.yml > $W/dist.yml
    docker-registry serve $W/dist.yml >>$W/dist.log 2>&1 &
    PID_DIST=$!
    PIDS+=($PID_CAIRN $PID_DIST)
    for port in $P_CAIRN $P_DIST; do
        for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$port/v2/ && break; sleep 0.1; done
    done
}
stop_servers() {
    kill $PID_CAIRN $PID_DIST 2>/dev/null || true
    wait $PID_CAIRN $PID_DIST 2>/dev/null || true
}
port() { [ "$1" = cairn ] && echo $P_CAIRN || echo $P_DIST; }
srvpid() { [ "$1" = cairn ] && echo $PID_CAIRN || echo $PID_DIST; }
nocache() { rm -f /var/lib/containers/cache/blob-info-cache-v1.* ~/.local/share/containers/cache/blob-info-cache-v1.*; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b - a) / 1e9}'; }
tsecs() { awk -v a="$1" -v b="$2" -v hz=$HZ 'BEGIN {printf "%.3f", (b - a) / hz}'; }

declare -A R
for round in $(seq $RUNS); do
    # the client alone: skopeo copying the same images from one local layout to
    # another (read, hash, write; no registry) - the floor a registry's rate meets
    rm -rf $W/out && mkdir -p $W/out
    t0=$(date +%s%N)
    for i in $(seq 0 $((SMALL - 1))); do
        skopeo copy -q oci:$W/img/small$i:latest dir:$W/out/small$i
    done
    t1=$(date +%s%N)
    skopeo copy -q oci:$W/img/big:latest dir:$W/out/big
    t2=$(date +%s%N)
    rm -rf $W/out
    R[floor,small]+=" $(secs $t0 $t1)"; R[floor,big]+=" $(secs $t1 $t2)"
    start_servers
    for s in cairn dist; do
        p=$(port $s)
        # push: the small images, then the big one (wall time and the server's CPU)
        sp=$(srvpid $s)
        c0=$(cpu_ticks $sp)
        t0=$(date +%s%N)
        for i in $(seq 0 $((SMALL - 1))); do
            nocache
            skopeo copy -q --dest-tls-verify=false oci:$W/img/small$i:latest docker://127.0.0.1:$p/bench/small$i:1
        done
        t1=$(date +%s%N); c1=$(cpu_ticks $sp)
        nocache
        skopeo copy -q --dest-tls-verify=false oci:$W/img/big:latest docker://127.0.0.1:$p/bench/big:1
        t2=$(date +%s%N); c2=$(cpu_ticks $sp)
        R[$s,push_small]+=" $(secs $t0 $t1)"; R[$s,push_big]+=" $(secs $t1 $t2)"
        R[$s,cpu_push_small]+=" $(tsecs $c0 $c1)"; R[$s,cpu_push_big]+=" $(tsecs $c1 $c2)"
        # pull
        rm -rf $W/out && mkdir -p $W/out
        c0=$(cpu_ticks $sp)
        t0=$(date +%s%N)
        for i in $(seq 0 $((SMALL - 1))); do
            nocache
            skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$p/bench/small$i:1 dir:$W/out/small$i
        done
        t1=$(date +%s%N); c1=$(cpu_ticks $sp)
        nocache
        skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$p/bench/big:1 dir:$W/out/big
        t2=$(date +%s%N); c2=$(cpu_ticks $sp)
        rm -rf $W/out
        R[$s,pull_small]+=" $(secs $t0 $t1)"; R[$s,pull_big]+=" $(secs $t1 $t2)"
        R[$s,cpu_pull_small]+=" $(tsecs $c0 $c1)"; R[$s,cpu_pull_big]+=" $(tsecs $c1 $c2)"
        # the 500 MB layer again with curl, which does not hash: the registry's own
        # rate (POST, then PUT of the body with its digest; GET to /dev/null)
        loc=$(curl -s -o /dev/null -w '%{redirect_url}' -X POST http://127.0.0.1:$p/v2/bench/raw/blobs/uploads/)
        [ -n "$loc" ] || loc=$(curl -s -D - -o /dev/null -X POST http://127.0.0.1:$p/v2/bench/raw/blobs/uploads/ |
            awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')
        case "$loc" in http*) ;; *) loc=http://127.0.0.1:$p$loc ;; esac
        sep='?'; case "$loc" in *\?*) sep='&' ;; esac
        t0=$(date +%s%N)
        code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
            -T $BIG_LAYER "$loc${sep}digest=sha256:$BIG_HEX")
        t1=$(date +%s%N)
        [ "$code" = 201 ] || { echo "bench-registry: $s answered $code to the curl upload" >&2; exit 1; }
        curl -s -o /dev/null http://127.0.0.1:$p/v2/bench/raw/blobs/sha256:$BIG_HEX
        t2=$(date +%s%N)
        R[$s,curl_push]+=" $(secs $t0 $t1)"; R[$s,curl_pull]+=" $(secs $t1 $t2)"
        # manifest GETs
        c0=$(cpu_ticks $(srvpid $s))
        wrk -t1 -c16 -d5s -H "Accept: application/vnd.oci.image.manifest.v1+json" \
            http://127.0.0.1:$p/v2/bench/small0/manifests/1 > $W/wrk.out 2>&1
        c1=$(cpu_ticks $(srvpid $s))
        rps=$(awk '/Requests\/sec/ {print $2}' $W/wrk.out)
        n=$(awk '/requests in/ {print $1}' $W/wrk.out)
        non2xx=$(awk '/Non-2xx/ {print $NF}' $W/wrk.out)
        [ -z "$non2xx" ] || { echo "bench-registry: $s answered $non2xx manifest GETs with errors" >&2; exit 1; }
        R[$s,rps]+=" $rps"
        R[$s,core]+=" $(awk -v n=$n -v t=$((c1 - c0)) -v hz=$HZ 'BEGIN {printf "%.0f", (t > 0 ? n / (t / hz) : 0)}')"
        R[$s,rss]+=" $(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' /proc/$(srvpid $s)/status)"
    done
    stop_servers
    echo "round $round done" >&2
done

med() { echo ${R[$1,$2]} | median; }
mbs() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / s / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
printf "%-28s %14s %14s %8s\n" "" cairn distribution ratio
for k in push_small pull_small; do
    c=$(med cairn $k); d=$(med dist $k)
    printf "%-28s %9s MB/s %9s MB/s %7sx\n" "$k ($SMALL images x 20 layers)" $(mbs $SMALL_BYTES $c) $(mbs $SMALL_BYTES $d) $(ratio $d $c)
done
for k in push_big pull_big; do
    c=$(med cairn $k); d=$(med dist $k)
    printf "%-28s %9s MB/s %9s MB/s %7sx\n" "$k (${BIG_MB} MB layer)" $(mbs $BIG_BYTES $c) $(mbs $BIG_BYTES $d) $(ratio $d $c)
done
for k in curl_push curl_pull; do
    c=$(med cairn $k); d=$(med dist $k)
    printf "%-28s %9s MB/s %9s MB/s %7sx\n" "$k (the layer, no hashing)" $(mbs $BIG_LAYER_BYTES $c) $(mbs $BIG_LAYER_BYTES $d) $(ratio $d $c)
done
# the same copies per server CPU-second: what the registry itself costs, apart from
# the client that shares the machine
for k in push_small pull_small push_big pull_big; do
    c=$(med cairn cpu_$k); d=$(med dist cpu_$k)
    printf "%-28s %11s s %12s s %7sx\n" "server CPU, $k" $c $d $(ratio $d $c)
done
# the most a registry that took no CPU at all could show against Distribution on
# this client and machine: Distribution's time over cairn's time less cairn's CPU
for k in push_small pull_small; do
    c=$(med cairn $k); cc=$(med cairn cpu_$k); d=$(med dist $k)
    printf "%-28s %38s %7sx\n" "ceiling, $k" "(a server of zero cost)" $(awk -v d=$d -v c=$c -v cc=$cc 'BEGIN {printf "%.2f", d / (c - cc)}')
done
printf "%-28s %9s MB/s %9s MB/s\n" "skopeo alone, small / big" $(mbs $SMALL_BYTES $(med floor small)) $(mbs $BIG_BYTES $(med floor big))
c=$(med cairn rps); d=$(med dist rps)
printf "%-28s %14s %14s %7sx\n" "manifest GET/s" $c $d $(ratio $c $d)
c=$(med cairn core); d=$(med dist core)
printf "%-28s %14s %14s %7sx\n" "manifest GET per server cpu-s" $c $d $(ratio $c $d)
c=$(med cairn rss); d=$(med dist rss)
printf "%-28s %11s MiB %11s MiB %7sx\n" "RSS after the load" $c $d $(ratio $c $d)
echo "(machine: $(nproc) cores, $(uname -r); $RUNS rounds, medians; ratio: cairn's rate over Distribution's, RSS cairn over Distribution)"
