"""The metrics role with real exporters and real Prometheus: scraping cairn's
demo app and Debian's node exporter, a differential check against Prometheus
scraping the same targets, remote_write from Prometheus, durability of
acknowledged pushes across kill -9, a torn WAL, and restart time."""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import time

import pytest
import requests

from conftest import free_port, run_cairn, wait_for, write_stack
from promwrite import push, snappy, write_request  # noqa: F401

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def wait_prometheus_ready(port):
    """Prometheus answers 503 until its TSDB is open: wait for /-/ready."""
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).ok,
             timeout=30, what="prometheus ready")


def series(port, match):
    r = requests.get(f"http://127.0.0.1:{port}/api/v1/series", params={"match[]": match}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def federate(port, match):
    r = requests.get(f"http://127.0.0.1:{port}/federate", params={"match[]": match}, timeout=10)
    assert r.status_code == 200
    out = {}
    for ln in r.text.splitlines():
        if ln and not ln.startswith("#"):
            name_labels, value, _ts = ln.rsplit(" ", 2)
            out[name_labels] = float(value)
    return out


def metrics_stack(tmp_path, port, prom="", extra=""):
    return write_stack(tmp_path, f"""
data_dir: data
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:{port}"]
{prom}{extra}
""")


def start_metrics(start, stack, port, name="metrics"):
    p = start(["run", "metrics", "-c", stack], name=name)
    wait_for(lambda: p.p.poll() is not None or
             requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).ok, what="metrics ready")
    assert p.p.poll() is None, p.stderr()
    return p


@pytest.fixture
def node_exporter(tmp_path):
    if not os.path.exists(NODE_EXPORTER):
        pytest.fail("prometheus-node-exporter is not installed (scripts/deps.sh installs it)")
    port = free_port()
    p = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                          "--collector.disable-defaults", "--collector.loadavg",
                          "--collector.meminfo", "--collector.uname", "--collector.time"],
                         stdout=subprocess.DEVNULL, stderr=open(tmp_path / "ne.log", "wb"))
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1).ok,
             what="node exporter")
    yield port
    p.send_signal(signal.SIGTERM)
    p.wait(10)


def test_scrape_exporters_and_staleness(start, tmp_path, node_exporter):
    port, app = free_port(), free_port()
    app_stack = write_stack(tmp_path, f"""
services:
  app: {{role: demo-app, listen: ["127.0.0.1:{app}"]}}
""", name="app.yaml")
    a = start(["run", "app", "-c", app_stack], name="app")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{app}/healthz", timeout=1).ok, what="app")
    stack = metrics_stack(tmp_path, port, f"""    prometheus:
      global: {{scrape_interval: 500ms, scrape_timeout: 400ms}}
      scrape_configs:
        - job_name: app
          static_configs: [{{targets: ["127.0.0.1:{app}"], labels: {{env: test}}}}]
        - job_name: node
          static_configs: [{{targets: ["127.0.0.1:{node_exporter}"]}}]
""")
    m = start_metrics(start, stack, port)
    wait_for(lambda: len(series(port, "up")) == 2 and all(
        v == 1 for v in federate(port, "up").values()), what="both targets up")
    assert series(port, 'node_load1{job="node"}')[0]["instance"] == f"127.0.0.1:{node_exporter}"
    s = series(port, '{job="app",__name__="demo_http_requests_total"}')
    assert s and all(x["env"] == "test" for x in s)
    for name in ("scrape_duration_seconds", "scrape_samples_scraped",
                 "scrape_samples_post_metric_relabeling", "scrape_series_added"):
        assert len(series(port, name)) == 2, name
    t = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
    assert t["status"] == "success"
    assert sorted(x["health"] for x in t["data"]["activeTargets"]) == ["up", "up"]
    names = requests.get(f"http://127.0.0.1:{port}/api/v1/label/__name__/values", timeout=5).json()
    assert "node_memory_MemTotal_bytes" in names["data"]
    labels = requests.get(f"http://127.0.0.1:{port}/api/v1/labels", timeout=5).json()["data"]
    assert {"__name__", "instance", "job", "env"} <= set(labels)
    st = requests.get(f"http://127.0.0.1:{port}/api/v1/status/tsdb", timeout=5).json()["data"]
    assert st["headStats"]["numSeries"] > 50
    # the app goes away: up becomes 0 and its series go stale (absent from federate)
    a.signal(signal.SIGTERM)
    a.wait(10)
    wait_for(lambda: federate(port, f'up{{job="app"}}') == {
        f'up{{env="test",instance="127.0.0.1:{app}",job="app"}}': 0.0}, what="app down")
    wait_for(lambda: not federate(port, '{job="app",__name__=~"demo_.*"}'), what="stale series")
    t = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
    down = [x for x in t["data"]["activeTargets"] if x["labels"]["job"] == "app"][0]
    assert down["health"] == "down" and down["lastError"]
    # bad input to the API
    r = requests.get(f"http://127.0.0.1:{port}/api/v1/series", params={"match[]": "{a=~\"(\"}"},
                     timeout=5)
    assert r.status_code == 400 and r.json()["errorType"] == "bad_data"
    r = requests.get(f"http://127.0.0.1:{port}/api/v1/series", timeout=5)
    assert r.status_code == 400
    m.signal(signal.SIGTERM)
    assert m.wait(10) == 0, m.stderr()


def test_same_series_as_prometheus(start, tmp_path, node_exporter):
    """cairn and Debian's Prometheus scrape the same exporter: same series."""
    port, pport = free_port(), free_port()
    cfg = f"""global: {{scrape_interval: 500ms, scrape_timeout: 400ms}}
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:{node_exporter}"]
        labels: {{team: core, __meta_zone: eu-1}}
      - targets: ["127.0.0.1:1"]
        labels: {{team: gone}}
    relabel_configs:
      - {{source_labels: [team], regex: gone, action: drop}}
      - {{source_labels: [__address__], regex: "(.*):(.*)", target_label: port, replacement: "p$2"}}
      - {{regex: "__meta_(.*)", action: labelmap, replacement: "m_$1"}}
      - {{source_labels: [__address__], target_label: shard, modulus: 8, action: hashmod}}
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: "node_time_.*|node_load5", action: drop}}
      - {{source_labels: [__name__, mode], separator: "@", regex: "node_uname_info@.*", target_label: kind, replacement: uname}}
      - {{regex: machine, action: labeldrop}}
"""
    (tmp_path / "prometheus.yml").write_text(cfg)
    stack = metrics_stack(tmp_path, port, "    prometheus: prometheus.yml\n")
    m = start_metrics(start, stack, port)
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path}/prometheus.yml",
                             f"--storage.tsdb.path={tmp_path}/prom-data",
                             f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "wb"))
    try:
        wait_prometheus_ready(pport)

        def both():
            a = series(port, '{job="node"}')
            b = series(pport, '{job="node"}')
            return len(a) > 20 and len(b) > 20 and (a, b)
        wait_for(both, timeout=20, what="both scraped")
        time.sleep(1.5)     # a few scrapes each
        volatile = ("scrape_duration_seconds",)

        def key(x):
            return tuple(sorted(x.items()))
        a = {key(x) for x in series(port, '{job="node"}') if x["__name__"] not in volatile}
        b = {key(x) for x in series(pport, '{job="node"}') if x["__name__"] not in volatile}
        assert a == b, (sorted(a - b)[:5], sorted(b - a)[:5])
        # the rules did what they say, in both
        up = series(port, 'up{job="node"}')
        assert len(up) == 1 and up[0]["port"] == f"p{node_exporter}" and up[0]["m_zone"] == "eu-1"
        assert "shard" in up[0] and not series(port, "node_load5")
        assert series(port, "node_uname_info")[0]["kind"] == "uname"
        assert "machine" not in series(port, "node_uname_info")[0]
        t = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()["data"]
        assert len(t["droppedTargets"]) == 1
        assert t["activeTargets"][0]["discoveredLabels"]["__meta_zone"] == "eu-1"
        # and the latest values of stable series agree
        fa = federate(port, 'node_memory_MemTotal_bytes')
        fb = federate(pport, 'node_memory_MemTotal_bytes')
        assert fa and fa == fb
        # and so does the metadata from the # TYPE and # HELP lines
        for metric in ("node_load1", "node_memory_MemTotal_bytes", "up"):
            ma = requests.get(f"http://127.0.0.1:{port}/api/v1/metadata", params={"metric": metric},
                              timeout=5).json()
            mb = requests.get(f"http://127.0.0.1:{pport}/api/v1/metadata", params={"metric": metric},
                              timeout=5).json()
            assert ma == mb, (metric, ma, mb)
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(20)
    m.signal(signal.SIGTERM)
    assert m.wait(10) == 0


def test_remote_write_from_prometheus(start, tmp_path, node_exporter):
    port, pport = free_port(), free_port()
    stack = metrics_stack(tmp_path, port, "    prometheus: {}\n")
    m = start_metrics(start, stack, port)
    (tmp_path / "prometheus.yml").write_text(f"""global: {{scrape_interval: 500ms}}
scrape_configs:
  - job_name: pushed
    static_configs: [{{targets: ["127.0.0.1:{node_exporter}"]}}]
remote_write:
  - url: http://127.0.0.1:{port}/api/v1/write
    queue_config: {{batch_send_deadline: 200ms}}
""")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path}/prometheus.yml",
                             f"--storage.tsdb.path={tmp_path}/prom-data",
                             f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "wb"))
    try:
        wait_for(lambda: len(series(port, '{job="pushed"}')) > 20, timeout=30,
                 what="series pushed by Prometheus")
        assert federate(port, 'up{job="pushed"}') == {
            f'up{{instance="127.0.0.1:{node_exporter}",job="pushed"}}': 1.0}
        mt = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "cairn_metrics_remote_write_samples_total" in mt
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(20)
    # malformed pushes get a 400 that says why
    bad = requests.post(f"http://127.0.0.1:{port}/api/v1/write", data=b"not snappy at all", timeout=5)
    assert bad.status_code == 400 and "snappy" in bad.text
    bad = requests.post(f"http://127.0.0.1:{port}/api/v1/write", data=snappy(b"\x0a\x05\x0a\x03"),
                        timeout=5)
    assert bad.status_code == 400 and "protobuf" in bad.text
    r = push(port, [({"job": "x"}, [(1, 1.0)])])
    assert r.status_code == 400 and "__name__" in r.text
    m.signal(signal.SIGTERM)
    assert m.wait(10) == 0, m.stderr()


def test_kill9_loses_no_acknowledged_sample(start, tmp_path):
    port = free_port()
    stack = metrics_stack(tmp_path, port, "    prometheus: {}\n")
    m = start_metrics(start, stack, port)
    acked = []
    # in the past: batch b at base + b ms must not be ahead of the clock when
    # /federate (which looks back from now) reads it
    base = int(time.time() * 1000) - 60000
    killed = False
    for batch in range(400):
        if batch == 150:
            m.p.send_signal(signal.SIGKILL)     # mid-stream, no warning
            killed = True
        try:
            r = push(port, [({"__name__": "crash_test", "batch": str(batch)}, [(base + batch, batch)])],
                     timeout=2)
        except requests.RequestException:
            break
        if r.status_code == 204:
            acked.append(batch)
    assert killed and len(acked) >= 100
    m.p.wait(10)
    m2 = start_metrics(start, stack, port, name="metrics2")
    got = federate(port, "crash_test")
    for b in acked:
        assert got.get(f'crash_test{{batch="{b}"}}') == float(b), b
    m2.signal(signal.SIGTERM)
    assert m2.wait(10) == 0


def test_torn_wal_still_opens(start, tmp_path):
    port = free_port()
    stack = metrics_stack(tmp_path, port, "    prometheus: {}\n")
    m = start_metrics(start, stack, port)
    base = int(time.time() * 1000) - 60000     # in the past, as /federate reads it
    for b in range(50):
        assert push(port, [({"__name__": "torn", "b": str(b)}, [(base + b, b)])]).status_code == 204
    # a crash (a graceful stop would leave a snapshot and no WAL to tear)
    m.signal(signal.SIGKILL)
    m.wait(10)
    seg = tmp_path / "data" / "metrics" / "wal" / "00000001"
    size = seg.stat().st_size
    cut = random.Random(7).randrange(size // 2, size - 1)
    with open(seg, "r+b") as f:
        f.truncate(cut)
    m2 = start_metrics(start, stack, port, name="metrics2")
    assert "torn or corrupted record" in m2.stderr()
    got = federate(port, "torn")
    assert 10 <= len(got) < 50
    # still writable after the cut
    assert push(port, [({"__name__": "torn", "b": "new"}, [(base + 100, 1)])]).status_code == 204
    m2.signal(signal.SIGTERM)
    assert m2.wait(10) == 0


def test_restart_with_100k_series_is_fast(start, tmp_path):
    port = free_port()
    stack = metrics_stack(tmp_path, port, "    prometheus: {}\n")
    m = start_metrics(start, stack, port)
    base = int(time.time() * 1000) - 60000
    for chunk in range(10):
        batch = [({"__name__": "load", "i": str(chunk * 10000 + i), "job": "bench"},
                  [(base, 1.0), (base + 15000, 2.0)]) for i in range(10000)]
        assert push(port, batch, timeout=60).status_code == 204
    m.signal(signal.SIGTERM)
    assert m.wait(20) == 0
    # the graceful stop left a head snapshot, and the WAL it covers is gone
    data = tmp_path / "data" / "metrics"
    assert (data / "snapshot").exists()
    assert sum(f.stat().st_size for f in (data / "wal").iterdir()) == 0
    t0 = time.monotonic()
    m2 = start_metrics(start, stack, port, name="metrics2")
    took = time.monotonic() - t0
    st = requests.get(f"http://127.0.0.1:{port}/api/v1/status/tsdb", timeout=10).json()["data"]
    assert st["headStats"]["numSeries"] >= 100000
    assert 'msg="head snapshot loaded" series=100000 samples=200000' in m2.stderr()
    # the README states: a head of 100,000 series is ready again within 10 s
    assert took < 10, took
    # more samples, then kill -9: the snapshot plus the WAL written after it hold everything
    assert push(port, [({"__name__": "load", "i": "7", "job": "bench"}, [(base + 30000, 3.0)]),
                       ({"__name__": "after", "job": "bench"}, [(base + 30000, 9.0)])]).status_code == 204
    m2.signal(signal.SIGKILL)
    m2.wait(20)
    start_metrics(start, stack, port, name="metrics3")

    def q(expr):
        r = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                         params={"query": expr, "time": (base + 30000) / 1000}, timeout=10).json()
        return [float(x["value"][1]) for x in r["data"]["result"]]
    assert q('load{i="7"}') == [3.0] and q("after") == [9.0]
    assert q('count(count_over_time(load[1m]))') == [100000.0]
    assert q('sum(count_over_time(load[1m]))') == [200001.0]


def test_reload_swaps_targets(start, tmp_path, node_exporter):
    port, app = free_port(), free_port()
    app_stack = write_stack(tmp_path, f"""
services:
  app: {{role: demo-app, listen: ["127.0.0.1:{app}"]}}
""", name="app.yaml")
    start(["run", "app", "-c", app_stack], name="app")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{app}/healthz", timeout=1).ok, what="app")

    def cfg(jobs):
        text = "global: {scrape_interval: 500ms, scrape_timeout: 400ms}\nscrape_configs:\n"
        for name, target in jobs:
            text += f"  - job_name: {name}\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
        (tmp_path / "prometheus.yml").write_text(text)
    cfg([("node", f"127.0.0.1:{node_exporter}"), ("app", f"127.0.0.1:{app}")])
    stack = metrics_stack(tmp_path, port, "    prometheus: prometheus.yml\n")
    m = start_metrics(start, stack, port)
    wait_for(lambda: len(federate(port, "up")) == 2, what="two targets")
    # drop the app job: its series go stale at once; node keeps its series (no gap)
    cfg([("node", f"127.0.0.1:{node_exporter}")])
    m.signal(signal.SIGHUP)
    wait_for(lambda: set(federate(port, "up")) == {
        f'up{{instance="127.0.0.1:{node_exporter}",job="node"}}'}, what="app job gone")
    assert not federate(port, '{job="app"}')
    assert federate(port, '{job="node",__name__="node_load1"}')
    # a broken file is refused with its location; the running configuration stays
    (tmp_path / "prometheus.yml").write_text("scrape_configs:\n  - job_name: x\n    scrape_interval: soon\n")
    r = requests.post(f"http://127.0.0.1:{port}/-/reload", timeout=5)
    assert r.status_code == 500
    assert "prometheus.yml:3:22: prometheus.scrape_configs[0].scrape_interval" in r.text
    time.sleep(1)
    assert len(federate(port, '{job="node",__name__="node_load1"}')) == 1
    m.signal(signal.SIGTERM)
    assert m.wait(10) == 0, m.stderr()


def test_remote_read_by_prometheus(start, tmp_path):
    """Prometheus answers PromQL over cairn's samples through remote_read."""
    port, pport = free_port(), free_port()
    stack = metrics_stack(tmp_path, port, "    prometheus: {}\n")
    m = start_metrics(start, stack, port)
    now = int(time.time() * 1000)
    batch = [({"__name__": "rr_test", "i": str(i), "job": "rr"},
              [(now - 60000 + 15000 * k, float(i * 10 + k)) for k in range(5)]) for i in range(4)]
    assert push(port, batch).status_code == 204
    (tmp_path / "prometheus.yml").write_text(f"""remote_read:
  - url: http://127.0.0.1:{port}/api/v1/read
    read_recent: true
""")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path}/prometheus.yml",
                             f"--storage.tsdb.path={tmp_path}/prom-data",
                             f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "wb"))
    try:
        def q(expr, **kw):
            r = requests.get(f"http://127.0.0.1:{pport}/api/v1/query",
                             params={"query": expr, "time": now / 1000, **kw}, timeout=5)
            return r.json()["data"]["result"] if r.ok else None
        # at `now` the last samples are 4, 14, 24, 34
        res = wait_for(lambda: q("sum(rr_test)"), timeout=20, what="prometheus answers")
        assert float(res[0]["value"][1]) == 4 + 14 + 24 + 34
        res = q('count_over_time(rr_test{i="2"}[2m])')
        assert float(res[0]["value"][1]) == 5
        res = q('rr_test{i=~"1|3"}')
        assert sorted(float(x["value"][1]) for x in res) == [14, 34]
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(20)
    # malformed read requests get a 400
    r = requests.post(f"http://127.0.0.1:{port}/api/v1/read", data=b"garbage", timeout=5)
    assert r.status_code == 400
    m.signal(signal.SIGTERM)
    assert m.wait(10) == 0, m.stderr()


def targets(port):
    r = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5)
    assert r.status_code == 200, r.text
    return sorted(json.dumps(t["labels"], sort_keys=True) for t in r.json()["data"]["activeTargets"])


def test_file_sd_like_prometheus(start, tmp_path, node_exporter):
    """file_sd_configs: JSON and YAML files by glob, __meta_filepath, edits picked up,
    a broken file keeps its previous targets; the same targets as Debian's Prometheus."""
    port, pport = free_port(), free_port()
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "a.json").write_text(json.dumps([
        {"targets": [f"127.0.0.1:{node_exporter}"], "labels": {"env": "prod", "team": "core"}},
        {"targets": ["127.0.0.1:1", "127.0.0.1:2"], "labels": {"env": "dev"}}]))
    (sd / "b.yml").write_text("- targets: ['127.0.0.1:3']\n  labels: {rack: r1}\n")
    cfg = """global: {scrape_interval: 1s, scrape_timeout: 500ms}
scrape_configs:
  - job_name: sd
    file_sd_configs:
      - files: ["sd/*.json", "sd/*.yml"]
        refresh_interval: 1m
    relabel_configs:
      - {source_labels: [__meta_filepath], regex: ".*/(.*)", target_label: file}
"""
    (tmp_path / "prometheus.yml").write_text(cfg)
    stack = metrics_stack(tmp_path, port, "    prometheus: prometheus.yml\n")
    start_metrics(start, stack, port)
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path}/prometheus.yml",
                             f"--storage.tsdb.path={tmp_path}/prom-data", f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "wb"))
    try:
        wait_prometheus_ready(pport)
        wait_for(lambda: len(targets(pport)) == 4 and len(targets(port)) == 4, timeout=20, what="4 targets")
        assert targets(port) == targets(pport)
        assert any('"file": "a.json"' in t and '"team": "core"' in t for t in targets(port))
        # an edit: a target leaves, another arrives
        (sd / "b.yml").write_text("- targets: ['127.0.0.1:4']\n  labels: {rack: r2}\n")
        wait_for(lambda: any('"rack": "r2"' in t for t in targets(port)), timeout=10, what="the edit")
        wait_for(lambda: targets(pport) == targets(port), timeout=20, what="Prometheus to agree")
        assert not any('"rack": "r1"' in t for t in targets(port))
        # the scraped target is up, with the file's labels
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                                      params={"query": 'up{env="prod",team="core",file="a.json"} == 1'},
                                      timeout=5).json()["data"]["result"], timeout=15, what="up from file_sd")
        # a broken file keeps the targets it had; a removed file takes them away
        (sd / "a.json").write_text("[{\"targets\": [")
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.count(
            "prometheus_sd_file_read_errors_total 1") == 1, timeout=10, what="the read error counted")
        assert len(targets(port)) == 4
        (sd / "b.yml").unlink()
        wait_for(lambda: len(targets(port)) == 3, timeout=10, what="the removed file")
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(20)


def test_file_sd_config_errors(tmp_path):
    for bad, msg in [("files: ['x.txt']", "is not valid for file discovery"),
                     ("files: []", "at least one path name"),
                     ("files: ['sd/*/x.json']", "is not valid for file discovery")]:
        (tmp_path / "prometheus.yml").write_text(f"scrape_configs:\n  - job_name: j\n    file_sd_configs:\n      - {{{bad}}}\n")
        stack = metrics_stack(tmp_path, free_port(), "    prometheus: prometheus.yml\n")
        c = run_cairn(["check", "-c", stack])
        assert c.returncode == 2 and msg in c.stderr and "prometheus.yml:4:" in c.stderr, c.stderr


SD_ZONE = """$ORIGIN sd.test.
$TTL 5
@     SOA ns hostmaster {serial} 3600 600 86400 5
@     NS  ns
ns    A   127.0.0.1
web   A   127.0.0.1
{extra}
_metrics._tcp SRV 0 1 {port} localhost.
mail  MX  10 web.sd.test.
"""


def test_dns_sd(start, tmp_path, node_exporter):
    """dns_sd_configs against cairn's own DNS role: SRV, A and MX records become targets
    with Prometheus's __meta_dns_* labels; a zone change shows within the refresh."""
    dport, dadmin, port = free_port(), free_port(), free_port()
    (tmp_path / "sd.zone").write_text(SD_ZONE.format(serial=1, extra="", port=node_exporter))
    dstack = write_stack(tmp_path, f"""
services:
  dns:
    role: dns
    listen: ["127.0.0.1:{dport}"]
    admin: "127.0.0.1:{dadmin}"
    zones: [{{origin: sd.test, file: sd.zone}}]
""", name="dns.yaml")
    d = start(["run", "dns", "-c", dstack], name="dns")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{dadmin}/-/ready", timeout=1).ok, what="dns ready")
    (tmp_path / "prometheus.yml").write_text("""global: {scrape_interval: 1s, scrape_timeout: 500ms}
scrape_configs:
  - job_name: srv
    dns_sd_configs: [{names: ["_metrics._tcp.sd.test"], refresh_interval: 1s}]
  - job_name: web
    dns_sd_configs:
      - {names: ["web.sd.test", "nothing.sd.test"], type: A, port: 9, refresh_interval: 1s}
      - {names: ["mail.sd.test"], type: MX, port: 25}
""")
    stack = metrics_stack(tmp_path, port, "    prometheus: prometheus.yml\n", f"    resolver: 127.0.0.1:{dport}\n")
    start_metrics(start, stack, port)

    def active():
        r = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
        return {(t["labels"]["job"], t["labels"]["instance"]): t["discoveredLabels"]
                for t in r["data"]["activeTargets"]}
    wait_for(lambda: len(active()) == 3, timeout=10, what="3 targets")
    a = active()
    srv = a[("srv", f"localhost:{node_exporter}")]
    assert srv["__meta_dns_name"] == "_metrics._tcp.sd.test"
    assert srv["__meta_dns_srv_record_target"] == "localhost."
    assert srv["__meta_dns_srv_record_port"] == str(node_exporter)
    assert a[("web", "127.0.0.1:9")]["__meta_dns_name"] == "web.sd.test"
    assert a[("web", "web.sd.test:25")]["__meta_dns_mx_record_target"] == "web.sd.test."
    # a target whose name the system cannot resolve is listed and down, as in Prometheus
    wait_for(lambda: any(t["labels"]["instance"] == "web.sd.test:25" and t["health"] == "down" and
                         "no such host" in t["lastError"] for t in requests.get(
                             f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]),
             timeout=10, what="the unresolvable target down")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": 'up{job="srv"} == 1'},
                                  timeout=5).json()["data"]["result"], timeout=15, what="the SRV target scraped")
    # a second A record: a new target within the refresh interval
    (tmp_path / "sd.zone").write_text(SD_ZONE.format(serial=2, extra="web   A   127.0.0.2", port=node_exporter))
    d.signal(signal.SIGHUP)
    wait_for(lambda: ("web", "127.0.0.2:9") in active(), timeout=15, what="the new A record")
    # the DNS server goes away: lookups fail, the targets stay
    d.signal(signal.SIGTERM)
    d.wait(10)
    wait_for(lambda: "prometheus_sd_dns_lookup_failures_total 0" not in requests.get(
        f"http://127.0.0.1:{port}/metrics", timeout=5).text and "dns_sd: lookup failed" in open(
        tmp_path / "metrics.err").read(), timeout=20, what="a failed lookup")
    assert ("web", "127.0.0.2:9") in active()


def test_dns_sd_config_errors(tmp_path):
    for bad, msg in [("names: [a.test], type: A", "a port is required"),
                     ("names: [a.test], type: TXT", "invalid DNS-SD records type"),
                     ("names: []", "at least one SRV record name")]:
        (tmp_path / "prometheus.yml").write_text(f"scrape_configs:\n  - job_name: j\n    dns_sd_configs:\n      - {{{bad}}}\n")
        stack = metrics_stack(tmp_path, free_port(), "    prometheus: prometheus.yml\n")
        c = run_cairn(["check", "-c", stack])
        assert c.returncode == 2 and msg in c.stderr and "prometheus.yml:4:" in c.stderr, c.stderr


def test_out_of_order_window_like_prometheus(start, tmp_path):
    """storage.tsdb.out_of_order_time_window: samples older than the series' last one
    but inside the window are kept (and merged in time order), older ones refused;
    the same answers as Debian's Prometheus given the same pushes."""
    port, pport = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text("storage: {tsdb: {out_of_order_time_window: 10m}}\n"
                                             "scrape_configs: []\n")
    stack = metrics_stack(tmp_path, port, "    prometheus: prometheus.yml\n")
    m = start_metrics(start, stack, port)
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path}/prometheus.yml",
                             f"--storage.tsdb.path={tmp_path}/prom-data", f"--web.listen-address=127.0.0.1:{pport}",
                             "--web.enable-remote-write-receiver"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "wb"))
    try:
        wait_prometheus_ready(pport)
        base = (int(time.time()) // 60 - 30) * 60 * 1000
        in_order = [(base + i * 60000, float(i)) for i in range(0, 30, 2)]     # every 2 minutes
        late = [(base + 27 * 60000, 27.0), (base + 25 * 60000, 25.0)]         # within 10m of the last
        too_old = [(base + 1 * 60000, 1.0)]
        codes = {}
        for p in (port, pport):
            assert push(p, [({"__name__": "ooo", "job": "j"}, in_order)]).status_code in (200, 204)
            codes[p] = [push(p, [({"__name__": "ooo", "job": "j"}, [s])]).status_code for s in late + too_old]
        # both refuse the too-old sample: cairn with 400 (not worth a retry), Prometheus
        # 2.42 with 500 (it does not classify "too old" errors)
        assert [c // 100 for c in codes[port]] == [2, 2, 4], codes
        assert [c // 100 for c in codes[pport]][:2] == [2, 2] and codes[pport][2] >= 400, codes

        def rng(p):
            r = requests.get(f"http://127.0.0.1:{p}/api/v1/query_range",
                             params={"query": "ooo", "start": base / 1000, "end": (base + 30 * 60000) / 1000,
                                     "step": 60}, timeout=10).json()
            return r["data"]["result"]
        assert rng(port) == rng(pport)
        r = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                         params={"query": "count_over_time(ooo[31m])", "time": (base + 30 * 60000) / 1000}, timeout=10)
        assert r.json()["data"]["result"][0]["value"][1] == str(len(in_order) + len(late))
        assert "prometheus_tsdb_head_out_of_order_samples_appended_total 2" in requests.get(
            f"http://127.0.0.1:{port}/metrics", timeout=5).text
        # kept across a restart (WAL) and a graceful stop (snapshot)
        m.signal(signal.SIGTERM)
        assert m.wait(20) == 0
        start_metrics(start, stack, port, name="metrics2")
        assert rng(port) == rng(pport)
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(20)


def metric_value(port, name):
    for ln in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return None


def test_blocks_cut_compacted_and_read_like_prometheus(start, tmp_path):
    """Two hours pushed: cairn cuts 10-minute blocks from the head, compacts them, and
    answers range queries over blocks and head as Debian's Prometheus does over its
    own; the same after a restart; the admin snapshot links every block."""
    port, pport = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text("scrape_configs: []\n")
    stack = metrics_stack(tmp_path, port, "    prometheus: prometheus.yml\n",
                          "    block_duration: 10m\n    enable_admin_api: true\n")
    m = start_metrics(start, stack, port)
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path}/prometheus.yml",
                             f"--storage.tsdb.path={tmp_path}/prom-data",
                             f"--web.listen-address=127.0.0.1:{pport}",
                             "--web.enable-remote-write-receiver"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "wb"))
    try:
        wait_prometheus_ready(pport)
        now = int(time.time()) // 15 * 15 * 1000
        start_ms = now - 2 * 3600 * 1000
        steps = list(range(start_ms, now + 1, 15000))
        rnd = random.Random(3)
        vals = {i: 0.0 for i in range(20)}
        # time-major batches, as a scraper would send them; series 0-4 stop after 30
        # minutes (they end up only in blocks)
        for b in range(0, len(steps), 20):
            batch = []
            for i in range(20):
                if i < 5 and steps[b] > start_ms + 30 * 60000:
                    continue
                samples = []
                for t in steps[b:b + 20]:
                    vals[i] += rnd.choice([0, 1, 2.5, 100])
                    samples.append((t, vals[i]))
                batch.append(({"__name__": "blk_total", "i": str(i), "job": "blk"}, samples))
            for p in (port, pport):
                assert push(p, batch).status_code in (200, 204)
        wait_for(lambda: (metric_value(port, "prometheus_tsdb_compactions_total") or 0) >= 1,
                 timeout=30, what="blocks cut and compacted")
        assert metric_value(port, "prometheus_tsdb_blocks_loaded") >= 2
        # the five series that stopped left the head; the API still finds them in blocks
        assert metric_value(port, "prometheus_tsdb_head_series_removed_total") == 5
        st = requests.get(f"http://127.0.0.1:{port}/api/v1/status/tsdb", timeout=10).json()["data"]
        assert st["headStats"]["numSeries"] == 15
        blocks = [d for d in (tmp_path / "data" / "metrics" / "blocks").iterdir()]
        assert blocks and all((d / "index").exists() and (d / "chunks").exists() for d in blocks)
        meta = json.loads((blocks[0] / "meta.json").read_text())
        assert meta["stats"]["numSamples"] > 0 and meta["maxTime"] > meta["minTime"]

        def rng(p, q, step=60):
            r = requests.get(f"http://127.0.0.1:{p}/api/v1/query_range",
                             params={"query": q, "start": start_ms / 1000, "end": now / 1000,
                                     "step": step}, timeout=20).json()
            assert r["status"] == "success", r
            return r["data"]["result"]

        queries = ["blk_total", "rate(blk_total[5m])", "count_over_time(blk_total[10m])",
                   "sum by (job) (increase(blk_total[20m]))", 'blk_total{i=~"1|7"}']

        def same():
            for q in queries:
                a, b = rng(port, q), rng(pport, q)
                assert a == b, q
                assert len(a) == (1 if q.startswith("sum") else 2 if "{" in q else 20), (q, len(a))
                assert sum(len(s["values"]) for s in a) > 100, q
        same()
        # the series only in blocks are in the metadata endpoints
        r = requests.get(f"http://127.0.0.1:{port}/api/v1/series",
                         params={"match[]": 'blk_total{i="2"}', "start": start_ms / 1000,
                                 "end": now / 1000}, timeout=10).json()
        assert r["data"] == [{"__name__": "blk_total", "i": "2", "job": "blk"}]
        vals_api = requests.get(f"http://127.0.0.1:{port}/api/v1/label/i/values", timeout=10).json()
        assert len(vals_api["data"]) == 20
        # older than the newest block: refused like Prometheus refuses out-of-bounds
        r = push(port, [({"__name__": "blk_total", "i": "19", "job": "blk"}, [(start_ms, 1)])])
        assert r.status_code == 400
        assert metric_value(port, "prometheus_tsdb_out_of_bound_samples_total") == 1

        # the admin snapshot: every block linked, the head written as one more
        r = requests.post(f"http://127.0.0.1:{port}/api/v1/admin/tsdb/snapshot", timeout=30).json()
        snap = tmp_path / "data" / "metrics" / "snapshots" / r["data"]["name"]
        nblocks = metric_value(port, "prometheus_tsdb_blocks_loaded")
        assert len([d for d in snap.iterdir() if (d / "index").exists()]) == nblocks + 1

        # a restart reads the same from blocks, snapshot and WAL
        m.signal(signal.SIGTERM)
        assert m.wait(20) == 0, m.stderr()
        m2 = start_metrics(start, stack, port, name="metrics2")
        same()
        m2.signal(signal.SIGTERM)
        assert m2.wait(20) == 0, m2.stderr()
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(20)


def test_admin_api_disabled_by_default(start, tmp_path):
    port = free_port()
    stack = metrics_stack(tmp_path, port, "    prometheus: {}\n")
    m = start_metrics(start, stack, port)
    r = requests.post(f"http://127.0.0.1:{port}/api/v1/admin/tsdb/snapshot", timeout=10)
    assert r.status_code == 503 and r.json()["errorType"] == "unavailable"
    assert requests.get(f"http://127.0.0.1:{port}/api/v1/admin/tsdb/snapshot", timeout=10).status_code == 405
    m.signal(signal.SIGTERM)
    assert m.wait(10) == 0


def test_full_disk_clear_error_no_corruption(start, tmp_path):
    """A data directory that fills up: remote_write gets a 500 saying the WAL could
    not be written (never a 2xx for samples that are not on disk), the log names the
    cause, queries keep working, and after a crash every acknowledged sample is back."""
    data = tmp_path / "data"
    data.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(data)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        port = free_port()
        stack = metrics_stack(tmp_path, port, "    prometheus: {}\n")
        m = start_metrics(start, stack, port)
        base = int(time.time() * 1000) - 600000
        acked, refused = [], None
        for b in range(400):
            batch = [({"__name__": "full_test", "b": str(b), "i": str(i)},
                      [(base + 1000 * k, float(k)) for k in range(10)]) for i in range(200)]
            r = push(port, batch)
            if r.status_code == 204:
                acked.append(b)
            else:
                refused = r
                break
        assert refused is not None and acked, "the 3 MiB disk never filled"
        assert refused.status_code == 500 and "cannot write the WAL" in refused.text
        wait_for(lambda: "No space left on device" in m.stderr(), timeout=5, what="the cause logged")
        r = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "count(full_test)"},
                         timeout=10)
        assert r.status_code == 200
        m.signal(signal.SIGKILL)
        m.wait(10)
        # the same full disk: the WAL replays (a torn tail is cut), nothing acknowledged is lost
        m2 = start_metrics(start, stack, port, name="metrics2")
        for b in acked:
            r = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                             params={"query": f'count_over_time(full_test{{b="{b}"}}[20m])',
                                     "time": (base + 10000) / 1000}, timeout=10).json()
            assert len(r["data"]["result"]) == 200, b
            assert all(x["value"][1] == "10" for x in r["data"]["result"]), b
        m2.signal(signal.SIGKILL)
        m2.wait(10)
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)
