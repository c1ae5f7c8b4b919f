-- bench/wrk_pct.lua: wrk's figures on one line for the bench scripts:
-- "pct REQUESTS RPS P99_US P99.9_US", from wrk's latency histogram (microseconds).
done = function(summary, latency, requests)
    io.write(string.format("pct %d %.0f %d %d\n", summary.requests,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(99), latency:percentile(99.9)))
end
