#!/usr/bin/python3
"""make bench-logs: the logs role and the log agent against the physical limits on
the same data (no Loki is installable here).

Generates realistic access and application logs (MB env var, default 150 MB raw),
then measures, each figure the median of RUNS (3) runs:
  - ingestion through the push API (protobuf + snappy, 1 MiB batches, 4 pushers):
    lines/s and MB/s, and per server core (the server's CPU time from /proc);
  - bytes stored per line (the block files after a flush) against zstd -3 of the
    same raw text;
  - a needle query, count_over_time({...} |= "NEEDLE"[2h]), against grep -F -c on
    the raw text (page-cached);
  - RSS with 10k active streams;
  - the agent's lines/s per core tailing a file into the store.
Prints a table; bench/RESULTS.md keeps the figures.
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import snappy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAIRN = os.path.join(ROOT, "build", "cairn")
MB = int(os.environ.get("MB", "150"))
RUNS = int(os.environ.get("RUNS", "3"))
NEEDLE = "c0ffee42-dead-beef-feed-0123456789ab"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


# ---- data ----

def generate(path, t0):
    """Lines as (stream key, ts, line); also written raw, one per line."""
    rnd = random.Random(42)
    paths = ["/", "/api/orders", "/api/users/%d", "/static/app.js", "/api/cart", "/login", "/api/search?q=%s"]
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    apps = ["shop", "auth", "search", "payments", "inventory"]
    hosts = ["web-%d" % i for i in range(8)]
    out, size, i = [], 0, 0
    target = MB * 1_000_000
    needle_every = max(1, (target // 200) // 10)    # about ten needles
    with open(path, "w") as f:
        while size < target:
            app, host = apps[i % 5], hosts[(i // 5) % 8]
            ts = t0 + i * 1000                      # 1 µs apart: the data covers seconds
            rid = "%08x-%04x-%04x-%04x-%012x" % (rnd.getrandbits(32), rnd.getrandbits(16), rnd.getrandbits(16),
                                                  rnd.getrandbits(16), rnd.getrandbits(48))
            if i % needle_every == needle_every // 2:
                rid = NEEDLE
            if i % 3:
                p = rnd.choice(paths)
                if "%d" in p:
                    p = p % rnd.randint(1, 99999)
                elif "%s" in p:
                    p = p % rnd.choice(words)
                st = rnd.choice([200] * 30 + [201, 204, 301, 304, 400, 404, 500, 503])
                line = ('10.%d.%d.%d - - [02/Dec/2026:10:00:00 +0000] "GET %s HTTP/1.1" %d %d "-" '
                        '"Mozilla/5.0 (X11; Linux x86_64)" rt=%.3f request_id=%s'
                        % (rnd.randint(0, 255), rnd.randint(0, 255), rnd.randint(1, 254), p, st,
                           rnd.randint(200, 90000), rnd.random(), rid))
                key = '{app="%s", host="%s", kind="access"}' % (app, host)
            else:
                lvl = rnd.choice(["info"] * 8 + ["warn", "error"])
                line = ('ts=2026-12-02T10:00:00.%06dZ level=%s msg="%s %s done" user=%d took=%dms trace_id=%s'
                        % (i % 1000000, lvl, rnd.choice(words), rnd.choice(words), rnd.randint(1, 50000),
                           rnd.randint(1, 900), rid))
                key = '{app="%s", host="%s", kind="app", level="%s"}' % (app, host, lvl)
            f.write(line + "\n")
            out.append((key, ts, line))
            size += len(line) + 1
            i += 1
    return out


def pb_varint(v):
    b = bytearray()
    while True:
        x = v & 0x7F
        v >>= 7
        b.append(x | (0x80 if v else 0))
        if not v:
            return bytes(b)


def pb_bytes(field, data):
    return pb_varint(field << 3 | 2) + pb_varint(len(data)) + data


def batches(entries, size=1 << 20):
    out, cur, cur_n, groups = [], 0, 0, {}

    def flush():
        body = b""
        for key, es in groups.items():
            body += pb_bytes(1, pb_bytes(1, key.encode()) + b"".join(es))
        out.append((snappy.compress(body), cur_n))
    for key, ts, line in entries:
        t = pb_varint(1 << 3) + pb_varint(ts // 10**9) + pb_varint(2 << 3) + pb_varint(ts % 10**9)
        e = pb_bytes(2, pb_bytes(1, t) + pb_bytes(2, line.encode()))
        groups.setdefault(key, []).append(e)
        cur += len(e)
        cur_n += 1
        if cur >= size:
            flush()
            groups, cur, cur_n = {}, 0, 0
    if groups:
        flush()
    return out


# ---- the server ----

LIMITS = """    limits:
      ingestion_rate_mb: 100000
      ingestion_burst_size_mb: 100000
      per_stream_rate_limit: 100GB
      per_stream_rate_limit_burst: 100GB
      max_global_streams_per_user: 0
"""


def start_logs(d, port):
    stack = os.path.join(d, "stack.yaml")
    with open(stack, "w") as f:
        f.write(f"data_dir: {d}/data\nservices:\n  logs:\n    role: logs\n    listen: [\"127.0.0.1:{port}\"]\n"
                + LIMITS)
    p = subprocess.Popen([CAIRN, "run", "logs", "-c", stack], stderr=open(os.path.join(d, "logs.err"), "ab"))
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                return p, stack
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("logs did not start")


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(60)


def push_all(port, bodies, workers=4):
    idx = [0]
    lock = threading.Lock()
    errors = []

    def run():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if idx[0] >= len(bodies):
                    return
                body, _ = bodies[idx[0]]
                idx[0] += 1
            c.request("POST", "/loki/api/v1/push", body=body, headers={"Content-Type": "application/x-protobuf"})
            r = c.getresponse()
            r.read()
            if r.status != 204:
                errors.append(r.status)
    ts = [threading.Thread(target=run) for _ in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise SystemExit(f"push errors: {errors[:5]}")


def query(port, q, t):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("GET", "/loki/api/v1/query?" + __import__("urllib.parse").parse.urlencode({"query": q, "time": str(t)}))
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, body[:300]
    return json.loads(body)


def main():
    if not os.path.exists(CAIRN):
        raise SystemExit("build/cairn missing: run make")
    work = tempfile.mkdtemp(prefix="bench-logs-")
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work):
    t0 = (time.time_ns() // 10**9 - 1800) * 10**9
    raw = os.path.join(work, "raw.log")
    print(f"# generating {MB} MB of access and application logs ...", flush=True)
    entries = generate(raw, t0)
    nlines, rawbytes = len(entries), os.path.getsize(raw)
    bodies = batches(entries)
    del entries
    print(f"# {nlines} lines, {rawbytes / 1e6:.0f} MB raw, {len(bodies)} pushes of ~1 MiB", flush=True)

    ing, needle_q, needle_g, stored = [], [], [], []
    for r in range(RUNS):
        d = os.path.join(work, f"run{r}")
        os.makedirs(d)
        port = free_port()
        p, stack = start_logs(d, port)
        c0, w0 = cpu_seconds(p.pid), time.monotonic()
        push_all(port, bodies)
        wall, cpu = time.monotonic() - w0, cpu_seconds(p.pid) - c0
        ing.append((nlines / wall, rawbytes / wall / 1e6, nlines / cpu, rawbytes / cpu / 1e6, cpu / wall))
        # flush into a block: what is stored
        stop(p)
        blocks = os.path.join(d, "data", "logs", "blocks")
        stored.append(sum(os.path.getsize(os.path.join(blocks, f)) for f in os.listdir(blocks)))
        p, _ = start_logs(d, port)
        q = 'sum(count_over_time({app=~".+"} |= "%s" [2h]))' % NEEDLE
        t = t0 + 3600 * 10**9
        times = []
        for _ in range(5):
            s = time.monotonic()
            doc = query(port, q, t)
            times.append(time.monotonic() - s)
        found = int(doc["data"]["result"][0]["value"][1])
        needle_q.append(statistics.median(times))
        gt = []
        for _ in range(5):
            s = time.monotonic()
            g = subprocess.run(["grep", "-F", "-c", NEEDLE, raw], capture_output=True, text=True)
            gt.append(time.monotonic() - s)
        assert int(g.stdout) == found, (g.stdout, found)
        needle_g.append(statistics.median(gt))
        stop(p)
        print(f"# run {r + 1}: ingest {ing[-1][0]:.0f} lines/s ({ing[-1][2]:.0f}/core), stored {stored[-1] / 1e6:.1f} MB, "
              f"needle {needle_q[-1] * 1000:.0f} ms vs grep {needle_g[-1] * 1000:.0f} ms ({found} hits)", flush=True)

    zs = subprocess.run(["zstd", "-3", "-c", "-q", raw], capture_output=True).stdout
    zbytes = len(zs)

    # RSS with 10k active streams
    d = os.path.join(work, "rss")
    os.makedirs(d)
    port = free_port()
    p, _ = start_logs(d, port)
    base_rss = rss_kib(p.pid)
    now = time.time_ns() - 60 * 10**9
    sbodies = []
    for b in range(10):
        body = b""
        for s in range(1000):
            sid = b * 1000 + s
            es = b"".join(pb_bytes(2, pb_bytes(1, pb_varint(8) + pb_varint((now + k) // 10**9) + pb_varint(16)
                                                   + pb_varint((now + k) % 10**9))
                                     + pb_bytes(2, b"stream %d line %d level=info msg=hello" % (sid, k)))
                           for k in range(10))
            body += pb_bytes(1, pb_bytes(1, ('{app="rss", pod="pod-%05d"}' % sid).encode()) + es)
        sbodies.append((snappy.compress(body), 10000))
    push_all(port, sbodies, workers=2)
    rss10k = rss_kib(p.pid)
    stop(p)

    # the agent tailing a file into the store
    d = os.path.join(work, "agent")
    os.makedirs(d)
    lport, aport = free_port(), free_port()
    stack = os.path.join(d, "stack.yaml")
    with open(stack, "w") as f:
        f.write(f"""data_dir: {d}/data
services:
  logs:
    role: logs
    listen: ["127.0.0.1:{lport}"]
{LIMITS}  agent:
    role: log-agent
    listen: ["127.0.0.1:{aport}"]
    promtail:
      clients: [{{url: "http://127.0.0.1:{lport}/loki/api/v1/push"}}]
      scrape_configs:
        - job_name: bench
          static_configs: [{{labels: {{job: bench, __path__: {d}/in/*.log}}}}]
""")
    os.makedirs(os.path.join(d, "in"))
    logs = subprocess.Popen([CAIRN, "run", "logs", "-c", stack], stderr=open(os.path.join(d, "logs.err"), "ab"))
    time.sleep(1)
    shutil.copy(raw, os.path.join(d, "in", "a.log"))
    agent = subprocess.Popen([CAIRN, "run", "agent", "-c", stack], stderr=open(os.path.join(d, "agent.err"), "ab"))
    w0 = time.monotonic()
    sent = 0
    while time.monotonic() - w0 < 600:
        try:
            c = http.client.HTTPConnection("127.0.0.1", aport, timeout=2)
            c.request("GET", "/metrics")
            for l in c.getresponse().read().decode().splitlines():
                if l.startswith("cairn_log_agent_sent_entries_total "):
                    sent = float(l.split()[1])
        except OSError:
            pass
        if sent >= nlines:
            break
        time.sleep(0.1)
    awall, acpu = time.monotonic() - w0, cpu_seconds(agent.pid)
    stop(agent)
    stop(logs)

    med = lambda xs: statistics.median(xs)
    print()
    print(f"| measure | figure |")
    print(f"|---|---|")
    print(f"| data | {nlines} lines, {rawbytes / 1e6:.0f} MB raw, 80 streams |")
    print(f"| ingestion, lines/s (wall) | {med([x[0] for x in ing]):.0f} |")
    print(f"| ingestion, MB/s (wall) | {med([x[1] for x in ing]):.1f} |")
    print(f"| ingestion, lines/s per server core | {med([x[2] for x in ing]):.0f} |")
    print(f"| ingestion, MB/s per server core | {med([x[3] for x in ing]):.1f} |")
    print(f"| server cores busy while ingesting | {med([x[4] for x in ing]):.2f} |")
    print(f"| stored bytes per line | {med(stored) / nlines:.1f} |")
    print(f"| zstd -3 bytes per line | {zbytes / nlines:.1f} |")
    print(f"| stored / zstd -3 (goal <= 1.2) | {med(stored) / zbytes:.2f} |")
    print(f"| needle query, ms | {med(needle_q) * 1000:.0f} |")
    print(f"| grep -F -c, ms | {med(needle_g) * 1000:.0f} |")
    print(f"| needle speed / grep's (goal >= 0.5) | {med(needle_g) / med(needle_q):.2f} |")
    print(f"| RSS idle / with 10k active streams (100k lines), MiB | {base_rss / 1024:.0f} / {rss10k / 1024:.0f} |")
    print(f"| agent: lines/s tailing a file (wall) | {sent / awall:.0f} |")
    print(f"| agent: lines/s per agent core | {sent / acpu if acpu else 0:.0f} |")


if __name__ == "__main__":
    main()
