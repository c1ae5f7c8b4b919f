"""PromQL conformance: every test file in tests/promql/ (Prometheus's test-file
format) runs against Debian's Prometheus 2.42, which proves the expectations, and
against cairn, which must give the same answers. Then the query API's shapes and
errors, compared with Prometheus on the same data."""
import glob
import os
import shutil
import subprocess

import pytest
import requests

from conftest import ROOT, free_port, wait_for, write_stack
from promql_tests import run_file
from promwrite import push_url

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
FILES = sorted(glob.glob(os.path.join(ROOT, "tests", "promql", "*.test")))


class Server:
    """A fresh Prometheus or cairn metrics server; reset() replaces it with an empty one."""

    def __init__(self, kind, tmp_path, start):
        self.kind, self.tmp, self.start_fn = kind, tmp_path, start
        self.n = 0
        self.proc = None
        self.url = None

    def reset(self):
        self.stop()
        self.n += 1
        port = free_port()
        d = self.tmp / f"{self.kind}{self.n}"
        d.mkdir()
        if self.kind == "prometheus":
            (d / "prometheus.yml").write_text("global: {}\n")
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"],
                stdout=subprocess.DEVNULL, stderr=open(d / "log", "wb"))
            popen = self.proc
        else:
            stack = write_stack(d, f"""
data_dir: data
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:{port}"]
    retention: 100000d
    prometheus:
      global: {{ evaluation_interval: 1m }}
      scrape_configs: []
""")
            self.proc = self.start_fn(["run", "metrics", "-c", stack], name=f"metrics{self.n}")
            popen = self.proc.p
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: popen.poll() is not None or requests.get(self.url + "/-/ready", timeout=1).ok,
                 timeout=20, what=f"{self.kind} ready")
        assert popen.poll() is None, f"{self.kind} exited"
        return self.url

    def stop(self):
        if self.proc is None:
            return
        if self.kind == "prometheus":
            self.proc.terminate()
            self.proc.wait(20)
        else:
            self.proc.cleanup()
        self.proc = None


@pytest.fixture(params=["prometheus", "cairn"])
def server(request, tmp_path, start):
    if request.param == "prometheus" and not os.path.exists(PROMETHEUS):
        pytest.fail("prometheus is not installed (scripts/deps.sh installs it)")
    s = Server(request.param, tmp_path, start)
    s.reset()
    yield s
    s.stop()


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_promql_file(server, path):
    passed, failures = run_file(server.url, path, reset=server.reset)
    assert not failures, f"{server.kind}: {len(failures)} failed, {passed} passed\n" + "\n".join(failures)
    assert passed > 0


COMPLIANCE = os.path.join(os.path.dirname(ROOT), "shared", "conformance", "promql", "compliance.py")


def test_compliance_suite(tmp_path, start):
    """The PromQL compliance suite (prometheus/compliance queries, 539 with their
    variants) as range queries against Prometheus and cairn on the same data."""
    if not os.path.exists(COMPLIANCE):
        pytest.skip("the shared conformance material is not next to this checkout")
    ref, cand = Server("prometheus", tmp_path, start), Server("cairn", tmp_path, start)
    try:
        ref.reset()
        cand.reset()
        r = subprocess.run(["/usr/bin/python3", COMPLIANCE, ref.url, cand.url], capture_output=True,
                           text=True, timeout=600)
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:]
        assert r.returncode == 0 and last.endswith(" 0 failed"), r.stdout[-4000:] + r.stderr[-2000:]
    finally:
        ref.stop()
        cand.stop()


@pytest.fixture
def both(tmp_path, start):
    """A Prometheus and a cairn with the same data: a counter, a gauge with tiny and
    huge values, and 300 series for the limits."""
    ref, cand = Server("prometheus", tmp_path, start), Server("cairn", tmp_path, start)
    ref.reset()
    cand.reset()
    t0 = 1_700_000_000_000
    data = []
    for i in range(3):
        data.append(({"__name__": "req_total", "job": "api", "instance": f"i{i}"},
                     [(t0 + k * 15000, float(k * (i + 1))) for k in range(241)]))
    data.append(({"__name__": "tiny", "job": "api"}, [(t0 + k * 15000, 1e-7 * (k + 1)) for k in range(241)]))
    data.append(({"__name__": "huge", "job": "api"}, [(t0 + k * 15000, 1.5e21) for k in range(241)]))
    for i in range(300):
        data.append(({"__name__": "many", "n": str(i)}, [(t0 + k * 15000, float(k)) for k in range(241)]))
    for s in (ref, cand):
        for lo in range(0, len(data), 50):
            r = push_url(s.url, data[lo:lo + 50])
            assert r.status_code // 100 == 2, r.text
    yield ref, cand, t0 / 1000
    ref.stop()
    cand.stop()


def norm(body):
    """A response body with the evaluation time of time-less instant queries removed."""
    if body.get("status") == "success" and isinstance(body.get("data"), dict):
        d = body["data"]
        if d.get("resultType") == "vector":
            d["result"] = sorted(d["result"], key=lambda s: sorted(s["metric"].items()))
        if d.get("resultType") == "matrix":
            d["result"] = sorted(d["result"], key=lambda s: sorted(s["metric"].items()))
    return body


def test_query_api_same_as_prometheus(both):
    ref, cand, t0 = both
    end = t0 + 3600
    iso = "2023-11-14T23:13:20Z"   # t0 + 0, RFC 3339
    reqs = [
        ("query", {"query": "req_total", "time": end}),
        ("query", {"query": "sum by (job) (rate(req_total[5m]))", "time": end}),
        ("query", {"query": "tiny", "time": end}),
        ("query", {"query": "huge * 10", "time": end}),
        ("query", {"query": "tiny / 1e12", "time": end}),
        ("query", {"query": "1 + 1", "time": end}),
        ("query", {"query": "scalar(tiny)", "time": end}),     # a scalar never in exponent form
        ("query", {"query": "scalar(huge)", "time": end}),
        ("query", {"query": "NaN", "time": end}),
        ("query", {"query": "-Inf", "time": end}),
        ("query", {"query": '"hello"', "time": end}),
        ("query", {"query": "req_total[1m]", "time": end}),
        ("query", {"query": "req_total[2m:30s]", "time": end}),
        ("query", {"query": "req_total", "time": iso}),
        ("query", {"query": "req_total", "time": end + 0.123}),
        ("query_range", {"query": "rate(req_total[1m])", "start": t0, "end": end, "step": 60}),
        ("query_range", {"query": "req_total", "start": iso, "end": end, "step": "5m"}),
        ("query_range", {"query": "time()", "start": t0, "end": t0 + 120, "step": "30s"}),
        ("query_range", {"query": "req_total * 0.1", "start": t0, "end": t0 + 60, "step": 0.5}),
        ("query_range", {"query": "absent(nothing)", "start": t0, "end": t0 + 60, "step": 30}),
        # errors: status code and errorType must match
        ("query", {"query": "sum(", "time": end}),
        ("query", {"query": "", "time": end}),
        ("query", {"query": "req_total", "time": "yesterday"}),
        ("query", {"query": "req_total + on(job) req_total", "time": end}),
        ("query_range", {"query": "req_total", "start": end, "end": t0, "step": 60}),
        ("query_range", {"query": "req_total", "start": t0, "end": end, "step": 0}),
        ("query_range", {"query": "req_total", "start": t0, "end": end, "step": "x"}),
        ("query_range", {"query": "req_total", "start": t0, "end": t0 + 100000, "step": 1}),
        ("query_range", {"query": "req_total[5m]", "start": t0, "end": end, "step": 60}),
        ("query_range", {"query": "req_total", "end": end, "step": 60}),
    ]
    for path, params in reqs:
        for method in ("GET", "POST"):
            got = []
            for s in (ref, cand):
                if method == "GET":
                    r = requests.get(f"{s.url}/api/v1/{path}", params=params, timeout=30)
                else:
                    r = requests.post(f"{s.url}/api/v1/{path}", data=params, timeout=30)
                got.append((r.status_code, r.headers.get("Content-Type", ""), r.json()))
            (sa, ca, ba), (sb, cb, bb) = got
            assert sa == sb, f"{method} {path} {params}: status {sa} vs cairn {sb}: {bb}"
            assert "application/json" in cb
            if ba["status"] == "error":
                assert bb["status"] == "error" and ba["errorType"] == bb["errorType"], (params, ba, bb)
                continue
            assert norm(ba) == norm(bb), f"{method} {path} {params}\n  prometheus: {ba}\n  cairn:      {bb}"


def test_parse_errors_name_the_position(both):
    _, cand, t0 = both
    r = requests.get(f"{cand.url}/api/v1/query", params={"query": "sum(rate(x[5m])", "time": t0})
    assert r.status_code == 400 and r.json()["errorType"] == "bad_data"
    assert "1:16: parse error" in r.json()["error"], r.json()
    r = requests.get(f"{cand.url}/api/v1/query", params={"query": "foo{a=\"b\"} +\n  bar{", "time": t0})
    assert "2:7: parse error" in r.json()["error"], r.json()
    # deep nesting is refused, not a stack overflow
    q = "(" * 5000 + "1" + ")" * 5000
    r = requests.post(f"{cand.url}/api/v1/query", data={"query": q, "time": t0})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    q = "-" * 100000 + "1"
    r = requests.post(f"{cand.url}/api/v1/query", data={"query": q, "time": t0})
    assert r.status_code == 400
    assert requests.get(f"{cand.url}/-/healthy", timeout=5).ok


def test_format_query_same_as_prometheus(both):
    ref, cand, _ = both
    for q in ['sum  by(job)(rate(req_total{job="api",instance=~"i.*"}[5m] offset 1m))',
              "a + on(x) group_left(y) b", "-1 ^ 2", "x[5m:] @ start()", "topk(3, x) > bool 0.5",
              'label_replace(x, "a", "$1", "b", "(.*)")', "1e6 + 0x10 + .5", "x unless ignoring(a) y",
              # long ones are split over lines (Prometheus's prettifier)
              'sum by (job, instance) (rate(http_requests_total{job="api-server",handler=~"/api/v1/.*",code=~"5.."}[5m])) '
              '/ on (job, instance) group_left (owner) sum by (job, instance) (rate(http_requests_total{job="api-server"}[5m]))',
              'histogram_quantile(0.99, sum without (pod, container, namespace) (rate(request_duration_seconds_bucket{service="checkout"}[5m])))',
              'topk(5, -(avg_over_time(some_really_long_metric_name_for_testing{label_one="value_one",label_two="value_two"}[1h:5m] offset 1d)))',
              '(max by (cluster) (node_memory_MemTotal_bytes{cluster=~"prod-.*"}) - max by (cluster) (node_memory_MemAvailable_bytes{cluster=~"prod-.*"})) > bool 1e9']:
        a = requests.get(f"{ref.url}/api/v1/format_query", params={"query": q}).json()
        b = requests.get(f"{cand.url}/api/v1/format_query", params={"query": q}).json()
        assert a == b, (q, a, b)
    b = requests.get(f"{cand.url}/api/v1/format_query", params={"query": "sum("})
    assert b.status_code == 400 and b.json()["errorType"] == "bad_data"


def test_query_limits(tmp_path, start):
    port = free_port()
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:{port}"]
    retention: 100000d
    query_max_samples: 1000
    prometheus:
      scrape_configs: []
""")
    p = start(["run", "metrics", "-c", stack])
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).ok, what="metrics ready")
    t0 = 1_700_000_000_000
    data = [({"__name__": "many", "n": str(i)}, [(t0 + k * 15000, float(k)) for k in range(100)])
            for i in range(200)]
    assert push_url(url, data).status_code == 204
    r = requests.get(url + "/api/v1/query_range", params={"query": "many", "start": t0 / 1000,
                                                          "end": t0 / 1000 + 1500, "step": 15})
    assert r.status_code == 422, r.text
    assert r.json()["errorType"] == "execution" and "too many samples" in r.json()["error"]
    r = requests.get(url + "/api/v1/query", params={"query": "sum(many)", "time": t0 / 1000 + 1500})
    assert r.status_code == 200 and r.json()["data"]["result"][0]["value"][1] == str(99 * 200)
    assert p.p.poll() is None


def test_query_timeout(tmp_path, start):
    port = free_port()
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:{port}"]
    retention: 100000d
    query_timeout: 1ms
    prometheus:
      scrape_configs: []
""")
    start(["run", "metrics", "-c", stack])
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).ok, what="metrics ready")
    t0 = 1_700_000_000_000
    for lo in range(0, 2000, 200):
        data = [({"__name__": "many", "n": str(i)}, [(t0 + k * 15000, float(k)) for k in range(240)])
                for i in range(lo, lo + 200)]
        assert push_url(url, data).status_code == 204
    r = requests.get(url + "/api/v1/query_range",
                     params={"query": "sum by (n) (rate(many[5m])) * 2 > 0", "start": t0 / 1000,
                             "end": t0 / 1000 + 3600, "step": 1})
    assert r.status_code == 503, r.text[:300]
    assert r.json()["errorType"] == "timeout"
    r = requests.get(url + "/api/v1/query", params={"query": "1 + 1"})
    assert r.status_code == 200 and r.json()["data"]["result"][1] == "2"


def test_graph_page_and_grafana_health_check(both):
    _, cand, _ = both
    r = requests.get(cand.url + "/graph", timeout=5)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    assert "api/v1/query_range" in r.text and "<textarea" in r.text
    # Grafana's data source test: 1+1, then buildinfo
    r = requests.post(cand.url + "/api/v1/query", data={"query": "1+1", "time": "1700000000"})
    assert r.json() == {"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "2"]}}
    r = requests.get(cand.url + "/api/v1/status/buildinfo", timeout=5)
    assert r.json()["data"]["version"].startswith("2.")
    r = requests.get(cand.url + "/api/v1/query_exemplars", params={"query": "req_total"})
    assert r.json() == {"status": "success", "data": []}


def near(q, a, b):
    """atan2 alone may differ in the last bit: Go's math.Atan2 is not correctly
    rounded, the C library's is (time() atan2 1: ...624 vs ...627). The answers'
    shapes and strings must still agree everywhere else."""
    if "atan2" not in q or a["data"]["resultType"] != "scalar" or b["data"]["resultType"] != "scalar":
        return False
    (ta, va), (tb, vb) = a["data"]["result"], b["data"]["result"]
    return ta == tb and len(va) == len(vb) and abs(float(va) - float(vb)) <= 1e-15 * abs(float(va))


def test_binary_expression_rules_same_as_prometheus(both):
    """Which operand types each binary operator accepts with which modifiers (bool,
    on/ignoring with and without labels, group_left/right): every combination is
    asked of Prometheus and of cairn, which must accept and refuse the same ones,
    and answer the accepted ones alike."""
    ref, cand, t0 = both
    end = t0 + 3600
    operands = ["1", "req_total", 'req_total{instance="i0"}', '"s"', "req_total[1m]", "time()"]
    ops = ["+", "^", "atan2", ">", "> bool", "==", "and", "or", "unless"]
    mods = ["", "on()", "on(job)", "ignoring()", "ignoring(instance)", "on(job) group_left",
            "on(job) group_left(instance)", "ignoring(instance) group_right", "on() group_right()",
            "ignoring(job) group_left(job)", "on(job) group_left(job)"]
    queries = [f"{a} {op} {m} {b}".replace("  ", " ") for a in operands for b in operands
               for op in ops for m in mods]
    queries += ["1 + bool 2", "1 > bool on() 2", "req_total > bool ignoring(instance) 1",
                "-req_total ^ 2", "1 and 2", "req_total and on() group_left 1"]
    disagree = []
    for q in queries:
        got = []
        for s in (ref, cand):
            r = requests.post(f"{s.url}/api/v1/query", data={"query": q, "time": end}, timeout=30)
            got.append((r.status_code, r.json()))
        (sa, ba), (sb, bb) = got
        if sa != sb or (ba["status"] == "error") != (bb["status"] == "error"):
            disagree.append(f"{q!r}: prometheus {sa} {ba.get('error', '')!r}, cairn {sb} {bb.get('error', '')!r}")
        elif ba["status"] == "success" and norm(ba) != norm(bb) and not near(q, ba, bb):
            disagree.append(f"{q!r}: answers differ\n  prometheus: {ba}\n  cairn:      {bb}")
    assert len(queries) > 500
    assert not disagree, f"{len(disagree)} of {len(queries)} differ:\n" + "\n".join(disagree[:40])
