# bench/lib.sh - what the bench scripts share. Sourced from the repository's root.

# bench_init NAME: a scratch directory in $W and the PIDS array; at exit every
# process in PIDS is stopped (TERM, then KILL) and $W removed (kept with KEEP=1).
bench_init() {
    W=$(mktemp -d "/tmp/cairn-bench-$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}

# cpu_ticks PID...: user + system clock ticks of those processes still running
# (the fields after the command name, which may hold spaces: "nsd: server 1").
cpu_ticks() {
    local t=0 v p
    for p in "$@"; do
        v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
        t=$((t + ${v:-0}))
    done
    echo $t
}

# median: of the numbers on stdin (any white space between them); the mean of the
# middle two for an even count, empty for none.
median() {
    awk '{for (i = 1; i <= NF; i++) print $i}' | sort -g |
        awk '{a[NR] = $1} END {if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'
}
