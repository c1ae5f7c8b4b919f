#!/usr/bin/python3
"""make bench-traces: the traces role against its goals and the peers' published
figures (no Jaeger or Tempo is installable here).

bench/otlpgen.c sends traces shaped like a microservice fan-out (16 spans, 6
services, semantic-convention attributes, one trace in 20 an error) over
OTLP/HTTP protobuf, 4 connections, each waiting for its answer as an SDK's batch
processor does. Measured, each the median of RUNS (3) runs of SPANS (1M) spans
into a fresh store:
  - spans/s per server core while ingesting (the server's CPU time from /proc),
    and per core including the writing of every span into blocks (the stop that
    follows writes the head; the process's whole CPU time from wait4);
  - stored bytes (block files) per OTLP protobuf byte received;
then, in one store of BIG (10M) spans (stopped and started again, so that every
span is in a block):
  - trace-by-id latency (Tempo's API, 50 ids spread over the data), median and p90;
  - TraceQL search latency (median of 5) for a needle (an attribute value one trace
    has: the Bloom filters skip the other pages), a common match (stops at the
    limit), a full scan on a duration and an attribute (no token to test, nothing
    matches: the search columns answer it without the attributes), and a full scan
    on an attribute alone (every span's attribute read);
  - the server's peak RSS while ingesting.
The bench raises the tenant's ingestion rate limit (Tempo's default 15 MB/s, about
40k spans/s of these spans) so that the store, not the limit, is measured.
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAIRN = os.environ.get("CAIRN_BIN", os.path.join(ROOT, "build", "cairn"))   # another build, for before/after
GEN = os.path.join(ROOT, "build", "otlpgen")
SPANS = int(os.environ.get("SPANS", "1000000"))
BIG = int(os.environ.get("BIG", "10000000"))
RUNS = int(os.environ.get("RUNS", "3"))
CONNS = 4
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0


def get(url, timeout=60):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def metric(base, name):
    for line in get(base + "/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


class Store:
    def __init__(self, tmp, reuse=None):
        self.otlp, self.tempo = free_port(), free_port()
        self.dir = reuse or tempfile.mkdtemp(dir=tmp)
        stack = os.path.join(self.dir, "stack.yaml")
        with open(stack, "w") as f:
            f.write(f"""data_dir: {self.dir}/data
services:
  traces:
    role: traces
    listen: ["127.0.0.1:{self.otlp}"]
    tempo: ["127.0.0.1:{self.tempo}"]
    limits: {{ingestion_rate_limit_bytes: 100GB, ingestion_burst_size_bytes: 100GB}}
""")
        self.err = open(os.path.join(self.dir, "err.log"), "ab")
        self.p = subprocess.Popen([CAIRN, "run", "traces", "-c", stack], stdout=subprocess.DEVNULL, stderr=self.err)
        self.base = f"http://127.0.0.1:{self.tempo}"
        for _ in range(200):
            try:
                if get(self.base + "/ready", 1) == b"ready\n":
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("traces did not start")

    def send(self, spans, ids):
        out = subprocess.run([GEN, "127.0.0.1", str(self.otlp), str(spans), str(CONNS), ids],
                             capture_output=True, text=True, check=True)
        n, nbytes, secs = out.stdout.split()
        return int(n), int(nbytes), float(secs)

    def stop(self):
        """Stops (a stop writes the head into a block); returns the CPU seconds the
        process used in all."""
        self.p.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(self.p.pid, 0)
        self.p.returncode = os.waitstatus_to_exitcode(status)
        self.err.close()
        return ru.ru_utime + ru.ru_stime


def block_bytes(store):
    d = os.path.join(store.dir, "data", "traces", "blocks")
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".ctb"))


def ingest_run(tmp):
    s = Store(tmp)
    c0 = cpu_seconds(s.p.pid)
    n, nbytes, secs = s.send(SPANS, os.path.join(s.dir, "ids"))
    c1 = cpu_seconds(s.p.pid)
    c2 = s.stop()                               # every span into blocks
    stored = block_bytes(s)
    return {"spans_s": n / secs, "per_core": n / max(c1 - c0, 1e-9), "per_core_blocks": n / max(c2 - c0, 1e-9),
            "ratio": stored / nbytes, "bytes_per_span": stored / n, "otlp_bytes_per_span": nbytes / n}


def timed(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main():
    for path in (CAIRN,):
        if not os.path.exists(path):
            raise SystemExit(f"{path} missing: run make first")
    subprocess.run(["cc", "-O2", "-std=gnu11", "-D_GNU_SOURCE", "-I", os.path.join(ROOT, "src"), "-o", GEN,
                    os.path.join(ROOT, "bench", "otlpgen.c"), os.path.join(ROOT, "src", "core", "buf.c"),
                    os.path.join(ROOT, "src", "core", "pb.c"), os.path.join(ROOT, "src", "core", "common.c"),
                    "-lpthread", "-lm", "-lz", "-lcrypto"], check=True)
    tmp = tempfile.mkdtemp(prefix="bench-traces-")
    try:
        runs = [ingest_run(tmp) for _ in range(RUNS)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"ingest ({SPANS} spans, OTLP/HTTP protobuf, {CONNS} connections), median of {RUNS}:")
        print(f"  spans/s                         {med['spans_s']:>12,.0f}")
        print(f"  spans/s per server core         {med['per_core']:>12,.0f}   (goal 100,000)")
        print(f"  ... counting the block writes   {med['per_core_blocks']:>12,.0f}")
        print(f"  OTLP bytes per span             {med['otlp_bytes_per_span']:>12.1f}")
        print(f"  stored bytes per span           {med['bytes_per_span']:>12.1f}")
        print(f"  stored / received               {med['ratio']:>12.3f}   (goal <= 0.25)")

        s = Store(tmp)
        ids = os.path.join(tmp, "ids")
        n, nbytes, secs = s.send(BIG, ids)
        rss = peak_rss_mb(s.p.pid)
        s.stop()
        s = Store(tmp, s.dir)                   # the same data, all in blocks
        try:
            tids = [l.strip() for l in open(ids) if l.strip()]
            step = max(1, len(tids) // 50)
            pick = tids[::step][:50]
            lat = []
            for tid in pick:
                t0 = time.perf_counter()
                body = get(f"{s.base}/api/traces/{tid}")
                lat.append(time.perf_counter() - t0)
                assert len(json.loads(body)["batches"]) == 6, tid
            lat.sort()
            now = int(time.time())
            rng = f"&start={now - 3600}&end={now + 60}"

            def search(q):
                body = get(f"{s.base}/api/search?q={urllib.parse.quote(q)}{rng}", timeout=300)
                return json.loads(body)["traces"]

            # the needle: an order.id only one trace has (the Bloom filters skip the
            # other pages)
            needle = '{ span.order.id = "%s" }' % pick[len(pick) // 2]
            common = '{ resource.service.name = "payment" && status = error }'
            scan = '{ span.db.statement =~ ".*price.*" && duration > 10s }'
            ascan = '{ span.db.statement =~ ".*discount.*" }'
            found = search(common)
            assert found, "the common query found nothing"
            assert [t["traceID"] for t in search(needle)] == [pick[len(pick) // 2]]
            assert not search(scan)
            assert not search(ascan)
            res = {q: statistics.median(timed(lambda q=q: search(q), 5)) for q in (needle, common, scan, ascan)}
            blocks = metric(s.base, "cairn_traces_blocks")
        finally:
            s.stop()
        print(f"one store of {n:,} spans ({nbytes / 1e9:.2f} GB OTLP, {blocks:.0f} blocks):")
        print(f"  ingest spans/s                  {n / secs:>12,.0f}")
        print(f"  peak RSS while ingesting        {rss:>12.0f} MiB")
        print(f"  trace by id, median / p90       {statistics.median(lat) * 1000:>8.1f} / {lat[int(len(lat) * 0.9)] * 1000:.1f} ms")
        print(f"  TraceQL needle (Bloom skips)    {res[needle] * 1000:>12.1f} ms   {needle}")
        print(f"  TraceQL common match            {res[common] * 1000:>12.1f} ms   {common}")
        print(f"  TraceQL full scan, no match     {res[scan] * 1000:>12.1f} ms   {scan}")
        print(f"  TraceQL attribute scan          {res[ascan] * 1000:>12.1f} ms   {ascan}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
