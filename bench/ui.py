#!/usr/bin/python3
"""make bench-ui: the console in Debian's Chromium (headless, playwright-core).

No Grafana is installable here, so the figures stand against the issue's goals
(and Grafana's first load of several MB, as published):
  - the bytes transferred by a full load of the metrics explorer drawing a graph,
    cache disabled (goal: under 300 KB);
  - the time from navigation to the first drawn graph, on loopback;
  - a dashboard of 20 timeseries panels (5 series each) over 24 h of data, from
    navigation to every panel drawn, measured in the page with the Performance API
    (goal: under 1 s).
24 h of data are written first through remote_write (100 series, one sample every
15 s). Each figure is the median of 5 loads. Prints a table; bench/RESULTS.md keeps
the figures.
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests
import snappy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from promwrite import write_request  # noqa: E402

CAIRN = os.path.join(ROOT, "build", "cairn")
NODE = os.path.join(ROOT, "tests", "integration", "node")
PANELS, SERIES, STEP = 20, 5, 15


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard():
    panels = []
    for i in range(PANELS):
        panels.append({"type": "timeseries", "title": f"bench metric {i}", "datasource": {"type": "prometheus"},
                       "gridPos": {"x": (i % 3) * 8, "y": (i // 3) * 7, "w": 8, "h": 7},
                       "fieldConfig": {"defaults": {"unit": "reqps"}},
                       "targets": [{"refId": "A", "expr": f"rate(bench_metric_{i}_total[$__rate_interval])",
                                    "legendFormat": "{{instance}}"}]})
    return {"uid": "bench-20", "title": "20 panels over 24 h", "time": {"from": "now-24h", "to": "now"},
            "panels": panels}


def backfill(port, now_ms):
    start = now_ms - 24 * 3600 * 1000
    per = 3600 * 1000                      # one hour of every series per request
    t = start
    counters = [[0.0] * SERIES for _ in range(PANELS)]
    while t < now_ms:
        series = []
        for i in range(PANELS):
            for k in range(SERIES):
                samples = []
                for ts in range(t, min(t + per, now_ms), STEP * 1000):
                    counters[i][k] += 10 + (ts // 60000 + i * 7 + k) % 13
                    samples.append((ts, counters[i][k]))
                series.append(({"__name__": f"bench_metric_{i}_total", "job": "bench", "instance": f"host-{k}"},
                               samples))
        body = snappy.compress(write_request(series))
        r = requests.post(f"http://127.0.0.1:{port}/api/v1/write", data=body, timeout=60,
                          headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                                   "X-Prometheus-Remote-Write-Version": "0.1.0"})
        if r.status_code // 100 != 2:
            sys.exit(f"bench-ui: remote_write refused: {r.status_code} {r.text[:200]}")
        t += per


def main():
    with tempfile.TemporaryDirectory() as d:
        mp, cp = free_port(), free_port()
        with open(os.path.join(d, "bench-20.json"), "w") as f:
            json.dump(dashboard(), f)
        with open(os.path.join(d, "stack.yaml"), "w") as f:
            f.write(f"""data_dir: data
services:
  metrics: {{role: metrics, listen: ["127.0.0.1:{mp}"]}}
  console:
    role: ui
    listen: ["127.0.0.1:{cp}"]
    dashboards: [bench-20.json]
""")
        up = subprocess.Popen([CAIRN, "up", "-c", "stack.yaml"], cwd=d, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(d, "up.err"), "wb"), start_new_session=True)
        try:
            base = f"http://127.0.0.1:{cp}"
            for _ in range(200):
                try:
                    if requests.get(f"{base}/-/ready", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.05)
            t0 = time.monotonic()
            backfill(mp, int(time.time() * 1000))
            n = requests.get(f"http://127.0.0.1:{mp}/api/v1/query", timeout=60,
                             params={"query": "count({job=\"bench\"})"}).json()
            if n.get("status") != "success" or not n["data"]["result"]:
                sys.exit(f"bench-ui: the backfilled series are not readable: {n}")
            c = requests.get(f"http://127.0.0.1:{mp}/api/v1/query", timeout=60, params={
                "query": 'count_over_time(bench_metric_0_total{instance="host-0"}[1d])'}).json()
            samples = int(c["data"]["result"][0]["value"][1]) if c.get("data", {}).get("result") else 0
            if samples < 24 * 3600 // STEP - 10:
                sys.exit(f"bench-ui: only {samples} samples of one series over 24 h are readable")
            print(f"backfilled {PANELS * SERIES} series x 24 h in {time.monotonic() - t0:.1f} s "
                  f"({n['data']['result'][0]['value'][1]} series readable, {samples} samples each)")
            r = subprocess.run(["node", os.path.join(NODE, "ui_browser.js"), "bench", base, "-", "bench-20",
                                "sum by (instance) (rate(bench_metric_0_total[1m]))"],
                               cwd=NODE, capture_output=True, text=True, timeout=600)
            if r.returncode:
                sys.exit(f"bench-ui: the browser run failed:\n{r.stderr[-3000:]}")
            out = json.loads(r.stdout.strip().splitlines()[-1])
        finally:
            os.killpg(up.pid, signal.SIGTERM)
            up.wait(timeout=20)
    tb = statistics.median(out["transferBytes"])
    fg = statistics.median(out["firstGraphMs"])
    dm = statistics.median(out["dashboardMs"])
    print(f"{'figure':<52} {'cairn':>10} {'goal':>10} {'ratio':>7}")
    print(f"{'full page load, bytes transferred (compressed)':<52} {tb / 1024:>8.1f}KB {'300KB':>10} "
          f"{tb / (300 * 1024):>6.2f}x")
    print(f"{'navigation to the first drawn graph':<52} {fg:>8.0f}ms {'-':>10} {'':>7}")
    print(f"{'20-panel dashboard over 24 h, all drawn':<52} {dm:>8.0f}ms {'1000ms':>10} {dm / 1000:>6.2f}x")
    print(f"  runs: transfer {out['transferBytes']}, first graph {out['firstGraphMs']} ms, "
          f"dashboard {out['dashboardMs']} ms, {out['dashboardCanvases']} canvases")


if __name__ == "__main__":
    main()
