#!/bin/bash
# make bench-s3: cairn's s3 role against the disk it writes to and against s3rver
# (npm; the S3 server from Node that runs here - MinIO and Ceph RGW are not in
# Debian). Same client for both: bench/s3load.c, SigV4 with UNSIGNED-PAYLOAD on
# keep-alive connections.
#
#   big:   64 MiB objects, PUT then GET, one connection (MB/s); the disk's own rate
#          for the same bytes: dd writing 64 MiB with fdatasync (what a PUT must do
#          before it answers) and O_DIRECT, and reading it back from the page cache
#          and with O_DIRECT.
#   small: 4 KiB PUTs (SMALL, default 2000, 8 connections) and GETs (20,000 over
#          1000 keys, 16 connections): requests/s and requests per server CPU-second.
#   list:  ListObjectsV2 over LIST keys (default 20,000; LIST=100000 for the issue's
#          figure), pages of 1000: seconds per full listing; server RSS afterwards.
#
# cairn fsyncs every object (file, directory, SQLite commit) before it answers;
# s3rver does not sync at all, so its PUT figures are the page cache's. RUNS rounds
# (default 3), medians printed; the cairn server runs with its defaults (2 threads).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SMALL=${SMALL:-2000}
LIST=${LIST:-20000}
. bench/lib.sh
bench_init s3
make -s build/cairn
cc -O2 -Wall -o $W/s3load bench/s3load.c -lcrypto -lpthread
L=$W/s3load
P_CAIRN=19901; P_S3RVER=19902
NPM=build/bench-npm/s3rver
if [ ! -x $NPM/node_modules/.bin/s3rver ]; then
    command -v npm >/dev/null || { echo "bench-s3: npm is missing (apt-get install npm)"; exit 1; }
    mkdir -p $NPM && (cd $NPM && npm install --no-audit --no-fund --silent s3rver@3.7.1 >/dev/null)
fi
cat > $W/stack.yaml <<CONF
data_dir: $W/cairn
services:
  s3:
    role: s3
    listen: ["127.0.0.1:$P_CAIRN"]
    keys: [{access_key: bench, secret_key: benchsecretkey, grants: [{bucket: "*", actions: [read, write]}]}]
CONF
./build/cairn run s3 -c $W/stack.yaml 2>$W/cairn.log &
PIDS+=($!); PID_CAIRN=$!
mkdir -p $W/s3rver
# its continuation tokens use a cipher OpenSSL 3 keeps in the legacy provider
NODE_OPTIONS=--openssl-legacy-provider $NPM/node_modules/.bin/s3rver -d $W/s3rver -a 127.0.0.1 -p $P_S3RVER -s &
PIDS+=($!); PID_S3RVER=$!
for port in $P_CAIRN $P_S3RVER; do
    for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$port/ && break; sleep 0.1; done
done
# s3rver's node process (npm may have started a wrapper)
PID_S3RVER=$(pgrep -f "s3rver -d $W/s3rver" | tail -1)
key() { [ "$1" = cairn ] && echo "$P_CAIRN bench benchsecretkey" || echo "$P_S3RVER S3RVER S3RVER"; }
srvpid() { [ "$1" = cairn ] && echo $PID_CAIRN || echo $PID_S3RVER; }
for s in cairn s3rver; do $L $(key $s) bench mb 0 1 1 1 >/dev/null; done

mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / s / 1048576}'; }
declare -A R
run() {  # run SERVER NAME OP SIZE COUNT THREADS CONNS PREFIX: "ops/s MB/s ops-per-cpu-s"
    local s=$1 name=$2 pid; pid=$(srvpid $s)
    local c0; c0=$(cpu_ticks $pid)
    local out; out=$($L $(key $s) bench $3 $4 $5 $6 $7 $8)
    local c1; c1=$(cpu_ticks $pid)
    local ops secs bytes; read -r ops secs bytes <<<"$out"
    local hz; hz=$(getconf CLK_TCK)
    R[$s.$name]+="$(awk -v o=$ops -v t=$secs 'BEGIN {printf "%.1f", o / t}') "
    R[$s.$name.mb]+="$(mbps $bytes $secs) "
    R[$s.$name.cpu]+="$(awk -v o=$ops -v c=$((c1 - c0)) -v hz=$hz 'BEGIN {printf "%.0f", c ? o / (c / hz) : 0}') "
}
BIG=$((64 << 20))
for r in $(seq $RUNS); do
    # the disk's own rate for 64 MiB
    t0=$(date +%s.%N); dd if=/dev/zero of=$W/dd.bin bs=1M count=64 conv=fdatasync status=none; t1=$(date +%s.%N)
    R[disk.write]+="$(awk -v a=$t0 -v b=$t1 'BEGIN {printf "%.0f", 64 / (b - a)}') "
    t0=$(date +%s.%N); dd if=/dev/zero of=$W/dd.bin bs=1M count=64 oflag=direct conv=fdatasync status=none; t1=$(date +%s.%N)
    R[disk.direct]+="$(awk -v a=$t0 -v b=$t1 'BEGIN {printf "%.0f", 64 / (b - a)}') "
    t0=$(date +%s.%N); dd if=$W/dd.bin of=/dev/null bs=1M status=none; t1=$(date +%s.%N)
    R[disk.read]+="$(awk -v a=$t0 -v b=$t1 'BEGIN {printf "%.0f", 64 / (b - a)}') "
    t0=$(date +%s.%N); dd if=$W/dd.bin of=/dev/null bs=1M iflag=direct status=none; t1=$(date +%s.%N)
    R[disk.rdirect]+="$(awk -v a=$t0 -v b=$t1 'BEGIN {printf "%.0f", 64 / (b - a)}') "
    for s in cairn s3rver; do
        run $s bigput put $BIG 4 1 1 big$r-
        run $s bigget get 0 4 1 1 big$r-
        run $s smallput put 4096 $SMALL 2 4 small$r-
        run $s smallget get 0 20000 2 8 small$r-
    done
done
# listing: LIST keys, written once (16 connections), then listed RUNS times
for s in cairn s3rver; do
    $L $(key $s) bench put 64 $LIST 4 4 list/ >/dev/null
    for r in $(seq $RUNS); do
        out=$($L $(key $s) bench list 0 1 1 1 list/)
        R[$s.list]+="$(awk '{print $2}' <<<"$out") "
    done
    R[$s.rss]=$(awk '/VmRSS/ {print $2}' /proc/$(srvpid $s)/status)
done
med() { echo "${R[$1]}" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b ? a / b : 0}'; }
echo "== bench-s3 ($(date -u +%F), $RUNS runs, medians) =="
printf "disk, 64 MiB: write+fdatasync %s MB/s, O_DIRECT %s MB/s; read page cache %s MB/s, O_DIRECT %s MB/s\n" \
    "$(med disk.write)" "$(med disk.direct)" "$(med disk.read)" "$(med disk.rdirect)"
printf "%-28s %12s %12s %8s\n" "" cairn s3rver ratio
line() { printf "%-28s %12s %12s %8s\n" "$1" "$2" "$3" "$(ratio $2 $3)"; }
line "PUT 64 MiB (MB/s)" "$(med cairn.bigput.mb)" "$(med s3rver.bigput.mb)"
line "GET 64 MiB (MB/s)" "$(med cairn.bigget.mb)" "$(med s3rver.bigget.mb)"
line "PUT 4 KiB (req/s)" "$(med cairn.smallput)" "$(med s3rver.smallput)"
line "PUT 4 KiB (req/CPU-s)" "$(med cairn.smallput.cpu)" "$(med s3rver.smallput.cpu)"
line "GET 4 KiB (req/s)" "$(med cairn.smallget)" "$(med s3rver.smallget)"
line "GET 4 KiB (req/CPU-s)" "$(med cairn.smallget.cpu)" "$(med s3rver.smallget.cpu)"
line "LIST $LIST keys (s)" "$(med cairn.list)" "$(med s3rver.list)"
line "RSS after (KiB)" "${R[cairn.rss]}" "${R[s3rver.rss]}"
# what one core can hash: a PUT computes the MD5 (the ETag) of every byte it stores
MD5=$(openssl speed -seconds 1 -evp md5 2>/dev/null | awk '/^md5/ {sub("k", "", $NF); printf "%.0f", $NF / 1024}')
printf "one core's MD5 rate (openssl speed, 16 KiB blocks): %s MB/s\n" "$MD5"
printf "cairn PUT 64 MiB / disk write+fdatasync: %s; GET / page-cache read: %s\n" \
    "$(ratio $(med cairn.bigput.mb) $(med disk.write))" "$(ratio $(med cairn.bigget.mb) $(med disk.read))"
